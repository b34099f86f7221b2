//! Errors as answers: the REST envelope, or a trailers-only gRPC (gRPC-web) answer.

use axum::response::{IntoResponse, Response};
use easel_runtime::error::Error;
use http::{HeaderMap, HeaderValue, header};

use crate::context::REQUEST_ID;

/// An error as the request's protocol expects it: gRPC status for gRPC and gRPC-web
/// requests, the REST envelope for everything else.
pub fn respond(error: Error, request_headers: &HeaderMap) -> Response {
    if easel_runtime::grpc::is_grpc_request(request_headers) {
        grpc_error_response(error, request_headers.get(header::CONTENT_TYPE))
    } else {
        let request_id = request_headers
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok());
        error_response(&error, request_id)
    }
}

/// The REST envelope with the error's HTTP status, `Retry-After` when it says when to retry,
/// and `Cache-Control: no-store`.
pub fn error_response(error: &Error, request_id: Option<&str>) -> Response {
    error.log();
    let mut response = easel_runtime::grpc::layers::error_response(error, request_id);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A trailers-only gRPC answer (status and details in the headers), with the content type of
/// the request, so gRPC-web clients read it as theirs.
pub fn grpc_error_response(error: Error, content_type: Option<&HeaderValue>) -> Response {
    let mut response = error.into_status().into_http::<axum::body::Body>();
    let content_type = content_type
        .filter(|value| value.as_bytes().starts_with(b"application/grpc"))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("application/grpc"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, content_type);
    response.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_web_callers_get_their_content_type_and_rest_callers_the_envelope() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
        let response = respond(Error::unauthenticated("no"), &headers);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "16");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/grpc-web+proto"
        );

        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("r-1"));
        let response = respond(Error::unauthenticated("no"), &headers);
        assert_eq!(response.status(), 401);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    }
}
