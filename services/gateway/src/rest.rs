//! The REST/JSON API: the proto3 JSON mapping of the public messages, plus the job streams
//! (WebSocket and Server-Sent Events), signed downloads, the JWKS and the OpenAPI document.
//!
//! [`router`] registers the records of [`crate::routes::ROUTES`], the one route table.

pub(crate) mod account;
mod actions;
pub(crate) mod artifacts;
pub(crate) mod jobs;
pub mod json;
pub(crate) mod models;
pub(crate) mod public;
pub mod query;
pub(crate) mod streams;
pub mod submit;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use easel_runtime::admin::Readiness;
use easel_runtime::error::{Error, reason};
use easel_runtime::transport::LocalAddr;
use http::request::Parts;
use http::{Method, header};

use crate::api::Gateway;
use crate::context::CallContext;
use crate::jwks::JwksCache;
use crate::routes::ROUTES;
use json::ApiError;

/// Why the REST router could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    /// The HTTP client of storage could not be built.
    #[error("cannot build the storage HTTP client: {0}")]
    StorageClient(#[source] reqwest::Error),
    /// The OpenAPI document could not be generated.
    #[error("cannot generate the OpenAPI document: {0}")]
    OpenApi(String),
}

/// What the REST handlers share.
#[derive(Clone, Debug)]
pub struct RestState {
    gateway: Gateway,
    readiness: Readiness,
    openapi: Bytes,
    jwks: Arc<JwksCache>,
    storage: reqwest::Client,
}

impl RestState {
    /// The handlers' state over `gateway`.
    pub fn new(gateway: Gateway, readiness: Readiness) -> Result<RestState, RestError> {
        let openapi = crate::openapi::document()
            .map_err(RestError::OpenApi)
            .and_then(|document| {
                serde_json::to_vec(&document)
                    .map(Bytes::from)
                    .map_err(|error| RestError::OpenApi(error.to_string()))
            })?;
        let storage = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .build()
            .map_err(RestError::StorageClient)?;
        let jwks = Arc::new(JwksCache::new(
            gateway.upstreams().auth.clone(),
            gateway.config().jwks_cache_ttl,
        ));
        Ok(RestState {
            gateway,
            readiness,
            openapi,
            jwks,
            storage,
        })
    }
}

/// The REST router: every route, the body limit, and errors (404, 405, rejections) in the
/// envelope.
pub fn router(state: RestState) -> Router {
    let max_body_bytes = state.gateway.config().max_body_bytes;
    actions::register(Router::new(), ROUTES, &state)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
        // Bodies over the limit: 413 before reading when Content-Length says so, else when
        // the extractor reaches the limit.
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            max_body_bytes,
            refuse_oversize,
        ))
        // Every error answered by a handler, an extractor or a fallback gets its envelope here.
        .layer(axum::middleware::from_fn(json::finish_errors))
}

async fn not_found() -> ApiError {
    ApiError(Error::not_found("no such route; see /openapi.json"))
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError(
        Error::invalid_argument(format!(
            "{method} is not allowed on this route; see /openapi.json"
        ))
        .with_reason(reason::METHOD_NOT_ALLOWED),
    )
}

/// 413 at once when the declared length is over the limit.
async fn refuse_oversize(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let Some(length) = declared.filter(|length| *length > limit as u64) else {
        return next.run(request).await;
    };
    let mut response = ApiError(json::payload_too_large()).into_response();
    // Closing a connection with unread bytes in it resets it, and the client, still sending,
    // loses our answer. So read (and drop) a moderately oversize body first, for a bounded
    // time; past that, answer and close.
    let drained = length <= DRAIN_MAX_BYTES
        && tokio::time::timeout(DRAIN_MAX_TIME, drain(request.into_body()))
            .await
            .unwrap_or(false);
    if !drained {
        response
            .headers_mut()
            .insert(header::CONNECTION, http::HeaderValue::from_static("close"));
    }
    response
}

/// The most of a refused body read so the client can see the 413.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// How long reading a refused body may take.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Reads `body` to its end; false when it broke off.
async fn drain(body: axum::body::Body) -> bool {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        if chunk.is_err() {
            return false;
        }
    }
    true
}

impl FromRequestParts<RestState> for CallContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RestState,
    ) -> Result<Self, Self::Rejection> {
        Ok(CallContext::from_parts(
            &parts.headers,
            &parts.extensions,
            state.gateway.config().upstream_timeout,
        ))
    }
}

/// The base URL of the request's links (see [`base_url`]).
#[derive(Debug)]
pub struct BaseUrl(pub String);

impl FromRequestParts<RestState> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &RestState,
    ) -> Result<Self, Self::Rejection> {
        Ok(BaseUrl(base_url(state, &parts.extensions)))
    }
}

/// The base URL of links in answers (`Location`, `links`): `EASEL_PUBLIC_URL`, else the
/// gateway's own address on the request's connection (the listen address, or the interface
/// reached when listening on all of them). Never the request's `Host` or `X-Forwarded-*`
/// headers: the caller chooses those, and a link built from them would send clients (or a
/// shared cache's readers) to whatever host an attacker named. Empty (relative links) only
/// when the connection's address is unknown.
pub fn base_url(state: &RestState, extensions: &http::Extensions) -> String {
    if let Some(url) = &state.gateway.config().public_url {
        return url.as_str().trim_end_matches('/').to_string();
    }
    extensions
        .get::<LocalAddr>()
        .map(|local| format!("http://{}", local.0))
        .unwrap_or_default()
}
