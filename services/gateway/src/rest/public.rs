//! The routes open to anyone: the JWKS, the OpenAPI document and the probes.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use easel_runtime::error::Error;
use http::{HeaderValue, StatusCode, header};

use super::RestState;
use super::json::{ApiError, json_response};
use crate::context::CallContext;

/// `GET /.well-known/jwks.json`: the keys that verify easel's access tokens, from auth.
pub async fn jwks(
    State(state): State<RestState>,
    context: CallContext,
) -> Result<Response, ApiError> {
    let (body, max_age) = state.jwks.get(&context).await?;
    let cache = HeaderValue::from_str(&format!("public, max-age={}", max_age.as_secs()))
        .unwrap_or(HeaderValue::from_static("no-cache"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}

/// `GET /openapi.json`.
pub async fn openapi(State(state): State<RestState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.clone(),
    )
        .into_response()
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    json_response(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 while auth and jobs answer, else 503 naming what is down.
pub async fn readyz(State(state): State<RestState>) -> Result<Response, ApiError> {
    let failures = state.readiness.failures().await;
    if failures.is_empty() {
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({"status": "ready"}),
        ));
    }
    let mut error = Error::unavailable("not ready: a dependency is down");
    for (name, reason) in failures {
        error = error.with_metadata(name, reason);
    }
    Err(ApiError(error.with_reason(
        easel_runtime::error::reason::DEPENDENCY_UNAVAILABLE,
    )))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        easel_runtime::metrics::render(),
    )
        .into_response()
}
