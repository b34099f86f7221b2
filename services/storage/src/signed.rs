//! Signed download links of the local backend: `GET /v1/artifacts/{id}?expires=…&sig=…` on
//! the admin port, where `sig` is HMAC-SHA256 over the id and the expiry, checked in constant
//! time. Expired or tampered links get a bare 403. (On S3 the store presigns links itself.)

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hmac::{Hmac, Mac};
use object_store::{GetOptions, GetRange, ObjectStore};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use url::Url;

use crate::config::SigningKey;
use crate::model::ArtifactId;
use crate::service::Storage;

mod range;

use range::ByteRange;

/// The route's path.
pub const ROUTE: &str = "/v1/artifacts/{id}";

fn mac(key: &SigningKey, id: &str, expires: i64) -> Vec<u8> {
    // An HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return Vec::new(),
    };
    // The separator cannot occur in an id, so (id, expires) pairs never collide.
    mac.update(id.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The hex signature of a link to `id` that works until `expires` (Unix seconds).
pub fn signature(key: &SigningKey, id: &str, expires: i64) -> String {
    hex::encode(mac(key, id, expires))
}

/// Whether `sig` is the signature of (`id`, `expires`), compared in constant time.
pub fn verify(key: &SigningKey, id: &str, expires: i64, sig: &str) -> bool {
    let Ok(given) = hex::decode(sig) else {
        return false;
    };
    let expected = mac(key, id, expires);
    !expected.is_empty() && bool::from(expected.ct_eq(&given))
}

/// The link to `id` under `base`, working until `expires`.
pub fn link(base: &Url, key: &SigningKey, id: &ArtifactId, expires: DateTime<Utc>) -> Url {
    let expires = expires.timestamp();
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}/v1/artifacts/{id}"));
    url.query_pairs_mut()
        .clear()
        .append_pair("expires", &expires.to_string())
        .append_pair("sig", &signature(key, id.as_str(), expires));
    url
}

/// The admin routes serving signed links.
pub fn routes(storage: Storage) -> Router {
    Router::new()
        .route(ROUTE, get(download))
        .with_state(storage)
}

#[derive(serde::Deserialize)]
struct LinkQuery {
    expires: Option<String>,
    sig: Option<String>,
}

fn bare(status: StatusCode) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")]).into_response()
}

async fn download(
    State(storage): State<Storage>,
    UrlPath(id): UrlPath<String>,
    Query(query): Query<LinkQuery>,
    headers: HeaderMap,
) -> Response {
    let now = Utc::now();
    let (Some(key), Some(expires), Some(sig)) = (
        storage.signing_key(),
        query.expires.and_then(|e| e.parse::<i64>().ok()),
        query.sig,
    ) else {
        crate::metrics::error("link_forbidden");
        return bare(StatusCode::FORBIDDEN);
    };
    // Verify before anything else looks at the id: a forged link learns nothing.
    if !verify(key, &id, expires, &sig) || expires <= now.timestamp() {
        crate::metrics::error("link_forbidden");
        return bare(StatusCode::FORBIDDEN);
    }
    let Some(id) = ArtifactId::parse(&id) else {
        return bare(StatusCode::FORBIDDEN);
    };
    let record = match storage.find_for_link(&id, now).await {
        Ok(record) => record,
        Err(crate::error::StorageError::NotFound) => return bare(StatusCode::NOT_FOUND),
        Err(error) => {
            tracing::error!(error = %error, "signed download failed");
            crate::metrics::error(error.metric_reason());
            return bare(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let etag = record.etag();
    let size = record.size_bytes;
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|tag| tag.trim() == etag || tag.trim() == "*")
        })
    {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => None,
        Some(raw) => match ByteRange::parse(raw, size) {
            Ok(range) => range,
            Err(()) => {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                )
                    .into_response();
            }
        },
    };
    let options = GetOptions {
        range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)),
        ..GetOptions::default()
    };
    let object_path = object_store::path::Path::from(record.object_key.as_str());
    let result = match storage
        .backend()
        .store()
        .get_opts(&object_path, options)
        .await
    {
        Ok(result) => result,
        Err(object_store::Error::NotFound { .. }) => return bare(StatusCode::NOT_FOUND),
        Err(error) => {
            tracing::error!(error = %error, artifact_id = %id, "signed download failed");
            crate::metrics::error("object_store");
            return bare(StatusCode::SERVICE_UNAVAILABLE);
        }
    };
    let length = result.range.end - result.range.start;
    crate::metrics::operation("download");
    let body = Body::from_stream(result.into_stream().inspect_ok(|chunk| {
        metrics::counter!(crate::metrics::BYTES_SERVED).increment(chunk.len() as u64);
    }));
    let mut response = Response::new(body);
    let response_headers = response.headers_mut();
    let mut set = |name, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, record.content_type.clone());
    set(header::CONTENT_LENGTH, length.to_string());
    set(header::ETAG, etag);
    set(header::ACCEPT_RANGES, "bytes".to_string());
    let remaining = (expires - now.timestamp()).max(0);
    set(
        header::CACHE_CONTROL,
        format!("private, max-age={remaining}"),
    );
    if let Some(range) = range {
        set(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{size}", range.start, range.end),
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_for_their_id_and_expiry() {
        let key = SigningKey::new(vec![7; 32]);
        let other = SigningKey::new(vec![8; 32]);
        let sig = signature(&key, "art_1", 100);
        assert!(verify(&key, "art_1", 100, &sig));
        assert!(!verify(&key, "art_2", 100, &sig));
        assert!(!verify(&key, "art_1", 101, &sig));
        assert!(!verify(&other, "art_1", 100, &sig));
        assert!(!verify(&key, "art_1", 100, "zz"));
        assert!(!verify(&key, "art_1", 100, &sig[..10]));
    }

    #[test]
    fn links_keep_the_base_path() {
        let key = SigningKey::new(vec![7; 32]);
        let id = ArtifactId::new();
        let base = Url::parse("https://cdn.example.com/storage/").unwrap_or_else(|e| panic!("{e}"));
        let expires = DateTime::from_timestamp(1_900_000_000, 0).unwrap_or_default();
        let url = link(&base, &key, &id, expires);
        assert_eq!(url.path(), format!("/storage/v1/artifacts/{id}"));
        assert!(
            url.query()
                .is_some_and(|q| q.starts_with("expires=1900000000&sig="))
        );
    }
}
