//! `GET /v1/artifacts/{id}`: signed downloads, proxied to storage's HTTP port so one public
//! origin serves the API and its images. Storage checks the signature; the gateway streams
//! the bytes and never logs the link (its query is the signature).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use easel_runtime::error::{Error, ErrorCode};
use http::{HeaderName, StatusCode, header};

use super::RestState;
use super::json::{ApiError, PathParam};
use crate::context::REQUEST_ID;

/// Request headers passed on to storage.
const FORWARDED_REQUEST: [HeaderName; 5] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    REQUEST_ID,
];

/// Response headers passed back from storage.
const FORWARDED_RESPONSE: [HeaderName; 9] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CONTENT_RANGE,
    header::ACCEPT_RANGES,
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::CONTENT_DISPOSITION,
    header::EXPIRES,
];

/// Streams a signed download from storage.
pub async fn download(
    State(state): State<RestState>,
    PathParam(artifact_id): PathParam,
    request: Request,
) -> Result<Response, ApiError> {
    if !artifact_id
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
    {
        return Err(ApiError(Error::not_found("no such artifact")));
    }
    let mut url = state.gateway.config().storage_http_url.clone();
    let base_path = url.path().trim_end_matches('/').to_string();
    url.set_path(&format!("{base_path}/v1/artifacts/{artifact_id}"));
    url.set_query(request.uri().query());

    let mut upstream = state.storage.get(url);
    for name in FORWARDED_REQUEST {
        for value in request.headers().get_all(&name) {
            upstream = upstream.header(name.clone(), value.clone());
        }
    }
    let mut trace = http::HeaderMap::new();
    easel_runtime::telemetry::propagation::inject_current_into_headers(&mut trace);
    upstream = upstream.headers(trace);

    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(error) => {
            // The URL carries the signature: log the error without it.
            tracing::warn!(error = %error.without_url(), "storage did not answer a download");
            return Err(ApiError(Error::unavailable(
                "artifact storage is unavailable, retry later",
            )));
        }
    };
    let status = answer.status();
    match status {
        StatusCode::FORBIDDEN => {
            return Err(ApiError(Error::new(
                ErrorCode::PermissionDenied,
                "the download link is invalid or has expired",
            )));
        }
        StatusCode::NOT_FOUND => return Err(ApiError(Error::not_found("no such artifact"))),
        // A link whose `expires` or `sig` does not parse: answered in our envelope, not
        // storage's words.
        StatusCode::BAD_REQUEST => {
            return Err(ApiError(Error::invalid_argument(
                "the download link is malformed: expires and sig must be the link's own",
            )));
        }
        status if status.is_server_error() => {
            return Err(ApiError(Error::unavailable(
                "artifact storage is unavailable, retry later",
            )));
        }
        _ => {}
    }
    let mut headers = http::HeaderMap::new();
    for name in FORWARDED_RESPONSE {
        for value in answer.headers().get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = Body::from_stream(answer.bytes_stream());
    let mut response = (status, body).into_response();
    response.headers_mut().extend(headers);
    Ok(response)
}
