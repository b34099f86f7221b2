//! `/view` and `/upload/image`, with ComfyUI's path checks and status codes.

use std::path::Path as FsPath;
use std::sync::Arc;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::{empty, json_response, server_error};
use crate::files::{content_type_for, normalize, split_annotation};
use crate::state::Shared;

/// GET /view?filename=…&subfolder=…&type=…
pub async fn view(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let mut filename = None;
    let mut kind = "output".to_owned();
    let mut subfolder = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "filename" => filename = Some(value.into_owned()),
            "type" => kind = value.into_owned(),
            "subfolder" => subfolder = Some(value.into_owned()),
            _ => {}
        }
    }
    let Some(filename) = filename else {
        return empty(StatusCode::NOT_FOUND);
    };
    let (name, annotation) = split_annotation(&filename);
    if name.is_empty() || name.starts_with('/') || name.contains("..") {
        return empty(StatusCode::BAD_REQUEST);
    }
    let Some(mut directory) = shared
        .dirs
        .by_type(annotation.unwrap_or(&kind))
        .map(FsPath::to_path_buf)
    else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if let Some(subfolder) = subfolder {
        let full = normalize(&directory.join(&subfolder));
        if !full.starts_with(&directory) {
            return empty(StatusCode::FORBIDDEN);
        }
        directory = full;
    }
    let base_name = name.rsplit('/').next().unwrap_or(name);
    let path = directory.join(base_name);
    let Ok(metadata) = tokio::fs::metadata(&path).await else {
        return empty(StatusCode::NOT_FOUND);
    };
    if !metadata.is_file() {
        return empty(StatusCode::NOT_FOUND);
    }
    let Ok(bytes) = tokio::fs::read(&path).await else {
        return empty(StatusCode::NOT_FOUND);
    };
    let modified: chrono::DateTime<chrono::Utc> = metadata
        .modified()
        .map_or_else(|_| chrono::Utc::now(), chrono::DateTime::from);
    let etag = format!(
        "\"{:x}-{:x}\"",
        modified.timestamp_nanos_opt().unwrap_or(0),
        bytes.len()
    );
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    let mut set = |name: header::HeaderName, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, content_type_for(base_name).to_owned());
    set(
        header::CONTENT_DISPOSITION,
        format!("filename=\"{base_name}\""),
    );
    set(header::ETAG, etag);
    set(
        header::LAST_MODIFIED,
        modified.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
    );
    set(header::ACCEPT_RANGES, "bytes".to_owned());
    response
}

/// POST /upload/image (multipart: `image`, `overwrite`, `type`, `subfolder`).
pub async fn upload_image(
    State(shared): State<Arc<Shared>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let Ok(mut multipart) = multipart else {
        return empty(StatusCode::BAD_REQUEST);
    };
    let mut image: Option<(String, Vec<u8>)> = None;
    let (mut overwrite, mut kind, mut subfolder) = (None, None, String::new());
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return empty(StatusCode::BAD_REQUEST),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let Ok(bytes) = field.bytes().await else {
            return empty(StatusCode::BAD_REQUEST);
        };
        let text = || String::from_utf8_lossy(&bytes).into_owned();
        match name.as_str() {
            "image" => {
                if let Some(file_name) = file_name {
                    image = Some((file_name, bytes.to_vec()));
                }
            }
            "overwrite" => overwrite = Some(text()),
            "type" => kind = Some(text()),
            "subfolder" => subfolder = text(),
            _ => {}
        }
    }
    let Some((mut filename, bytes)) = image else {
        return empty(StatusCode::BAD_REQUEST);
    };
    if filename.is_empty() {
        return empty(StatusCode::BAD_REQUEST);
    }
    let kind = kind.unwrap_or_else(|| "input".to_owned());
    let Some(directory) = shared.dirs.by_type(&kind).map(FsPath::to_path_buf) else {
        // ComfyUI crashes on an unknown type.
        return server_error();
    };
    let folder = normalize(&directory.join(&subfolder));
    let mut path = normalize(&folder.join(&filename));
    if !path.starts_with(&directory) || !folder.starts_with(&directory) {
        return empty(StatusCode::BAD_REQUEST);
    }
    if tokio::fs::create_dir_all(&folder).await.is_err() {
        return server_error();
    }
    let overwrite = matches!(overwrite.as_deref(), Some("true" | "1"));
    let mut duplicate = false;
    if !overwrite {
        let (stem, extension) = split_extension(&filename);
        let digest = Sha256::digest(&bytes);
        let mut index = 1;
        while path.exists() {
            if tokio::fs::read(&path)
                .await
                .is_ok_and(|existing| Sha256::digest(&existing) == digest)
            {
                duplicate = true;
                break;
            }
            filename = format!("{stem} ({index}){extension}");
            path = folder.join(&filename);
            index += 1;
        }
    }
    if !duplicate && tokio::fs::write(&path, &bytes).await.is_err() {
        return server_error();
    }
    tracing::info!(name = %filename, subfolder = %subfolder, kind = %kind, duplicate, "image uploaded");
    json_response(
        StatusCode::OK,
        &json!({"name": filename, "subfolder": subfolder, "type": kind}),
    )
}

/// Python's `os.path.splitext` for a file name.
fn split_extension(name: &str) -> (String, String) {
    let base_start = name.rfind('/').map_or(0, |index| index + 1);
    match name[base_start..].rfind('.') {
        Some(dot) if dot > 0 => {
            let split = base_start + dot;
            (name[..split].to_owned(), name[split..].to_owned())
        }
        _ => (name.to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitext_like_python() {
        assert_eq!(
            split_extension("a.png"),
            ("a".to_owned(), ".png".to_owned())
        );
        assert_eq!(
            split_extension(".hidden"),
            (".hidden".to_owned(), String::new())
        );
        assert_eq!(
            split_extension("a.tar.gz"),
            ("a.tar".to_owned(), ".gz".to_owned())
        );
    }
}
