//! The gateway's own Prometheus series (the gRPC ones come from the runtime's layers).

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::SERVICE_NAME;

/// Series names.
pub mod names {
    /// Counter: REST requests answered, by `method`, `route` and `status`.
    pub const HTTP_REQUESTS: &str = "http_server_requests_total";
    /// Histogram: REST latency until the answer's headers, by `method`, `route`, `status`.
    pub const HTTP_DURATION: &str = "http_server_request_duration_seconds";
    /// Counter: requests refused by a rate limit.
    pub const RATE_LIMITED: &str = "gateway_rate_limited_total";
    /// Counter: requests refused because the credential lacks the route's `scope`.
    pub const SCOPE_REFUSED: &str = "gateway_scope_refused_total";
    /// Counter: requests admitted because the rate limiter could not answer.
    pub const RATE_LIMITER_ERRORS: &str = "gateway_rate_limiter_errors_total";
    /// Gauge: open job streams (WebSocket and SSE).
    pub const OPEN_STREAMS: &str = "gateway_open_streams";
}

/// Describes the series once.
pub fn describe() {
    let _ = easel_runtime::metrics::handle();
    metrics::describe_counter!(names::HTTP_REQUESTS, "REST requests answered");
    metrics::describe_histogram!(
        names::HTTP_DURATION,
        metrics::Unit::Seconds,
        "REST latency until the answer's headers"
    );
    metrics::describe_counter!(names::RATE_LIMITED, "requests refused by a rate limit");
    metrics::describe_counter!(
        names::RATE_LIMITER_ERRORS,
        "requests admitted because the rate limiter could not answer"
    );
    metrics::describe_counter!(
        names::SCOPE_REFUSED,
        "requests refused because the credential lacks the route's scope"
    );
    metrics::describe_gauge!(names::OPEN_STREAMS, "open WebSocket and SSE job streams");
}

/// The route template that served a request (response extension), for the `route` label.
#[derive(Clone, Debug)]
pub struct RouteLabel(pub Arc<str>);

/// Puts the documented path of the route that served a request into its response (a route
/// layer of every REST route).
pub async fn label_route(
    State(route): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    response
        .extensions_mut()
        .insert(RouteLabel(Arc::from(route)));
    response
}

/// Counts REST requests and measures their latency by route (gRPC has its own layer).
pub async fn record_http(request: Request, next: Next) -> Response {
    if easel_runtime::grpc::is_grpc_request(request.headers()) {
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or_else(|| "unmatched".to_string(), |route| route.0.to_string());
    let labels = [
        ("service", SERVICE_NAME.to_string()),
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!(names::HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(names::HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}
