//! The tower layers of the standard server stack that tower and tower-http do not provide:
//! gRPC deadlines answered as `DEADLINE_EXCEEDED`, gRPC metrics by status code, requests tonic
//! cannot decode answered as `INVALID_ARGUMENT`, the server span continuing the caller's trace,
//! and the overload answer for shed requests.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, Request};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::error::{Error, ErrorCode, reason};
use crate::metrics::names;
use crate::telemetry::propagation;

use super::{is_grpc_request, split_path, status_response};

/// How long clients are told to wait after a shed request.
const OVERLOAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H M S m u n`).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Formats a duration as a `grpc-timeout` header value.
pub fn format_grpc_timeout(timeout: Duration) -> String {
    // Eight digits of milliseconds cover 27 hours; beyond that, seconds.
    let millis = timeout.as_millis();
    if millis < 100_000_000 {
        format!("{}m", millis.max(1))
    } else {
        format!("{}S", timeout.as_secs().min(99_999_999))
    }
}

/// Bounds each call by the shorter of the server's limit and the client's `grpc-timeout`, and
/// answers `DEADLINE_EXCEEDED` when it passes. Only the time until response headers counts, so
/// server streams may run on.
#[derive(Clone, Debug)]
pub struct GrpcDeadlineLayer {
    limit: Duration,
}

impl GrpcDeadlineLayer {
    /// A layer with the server's own limit.
    pub fn new(limit: Duration) -> Self {
        GrpcDeadlineLayer { limit }
    }
}

impl<S> Layer<S> for GrpcDeadlineLayer {
    type Service = GrpcDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcDeadline {
            inner,
            limit: self.limit,
        }
    }
}

/// The service of [`GrpcDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct GrpcDeadline<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> Service<Request<B>> for GrpcDeadline<S>
where
    S: Service<Request<B>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let client_deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|value| value.to_str().ok())
            .and_then(parse_grpc_timeout);
        let deadline = client_deadline.map_or(self.limit, |client| client.min(self.limit));
        let grpc = is_grpc_request(request.headers());
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let future = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(deadline, future).await {
                Ok(result) => result,
                Err(_) => {
                    let error = Error::new(ErrorCode::DeadlineExceeded, "deadline exceeded");
                    Ok(if grpc {
                        status_response(error.into_status())
                    } else {
                        error_response(&error, request_id.as_deref())
                    })
                }
            }
        })
    }
}

/// Counts calls and measures their latency by service, method and gRPC status code. The
/// code comes from the headers of a trailers-only answer or from the trailers at the end of
/// the body, so streams are measured until they end.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    service_label: Arc<str>,
}

impl GrpcMetricsLayer {
    /// A layer labelling its series with `service` = the serving process's name.
    pub fn new(service_label: &str) -> Self {
        GrpcMetricsLayer {
            service_label: Arc::from(service_label),
        }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            service_label: self.service_label.clone(),
        }
    }
}

/// The service of [`GrpcMetricsLayer`].
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    service_label: Arc<str>,
}

impl<S, B> Service<Request<B>> for GrpcMetrics<S>
where
    S: Service<Request<B>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_grpc_request(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let (rpc_service, rpc_method) = split_path(request.uri().path());
        let record = CallRecord {
            service: self.service_label.clone(),
            rpc: Arc::from(format!("{rpc_service}/{rpc_method}")),
            started: Instant::now(),
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            if let Some(code) = grpc_status(response.headers()) {
                record.finish(code);
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = MeteredBody {
                inner: body,
                record: Some(record),
            };
            Ok(Response::from_parts(parts, axum::body::Body::new(body)))
        })
    }
}

/// The starts of the messages tonic answers INTERNAL with when it cannot decode a request:
/// prost's `DecodeError` (bad bytes, nesting past prost's recursion limit) and tonic's framing
/// errors (a truncated frame, a bad compression flag, a compressed frame without an encoding).
const DECODE_FAILURES: &[&str] = &[
    "failed to decode Protobuf message",
    "Unexpected EOF decoding stream",
    "protocol error: received message with",
];

/// Whether `message` is one of tonic's messages for a message it could not decode.
pub fn is_decode_failure(message: &str) -> bool {
    DECODE_FAILURES
        .iter()
        .any(|prefix| message.starts_with(prefix))
}

/// Answers `INVALID_ARGUMENT` instead of `INTERNAL` when tonic could not decode the request.
///
/// tonic maps every protobuf decode error to INTERNAL (after the gRPC status-code guide), and
/// its framing errors too; for a server those are the client's mistakes, and counted as server
/// errors they page the operator. A custom codec would not do: it sees only the protobuf
/// errors, not the framing ones, and the generated code uses one codec for clients (where a
/// decode failure *is* ours) and servers alike. So this layer rewrites the answer: a response
/// whose `grpc-status` header is 13 with one of tonic's decode messages becomes 3, same message.
/// Request decoding fails before any handler runs, so tonic answers trailers-only: the status
/// is in the headers (for gRPC-web too), never in a body's trailers. A handler that relays an
/// upstream's status cannot be mistaken for it: [`crate::error::Error::from_status`] renames an
/// upstream answer our client could not decode.
#[derive(Clone, Copy, Debug, Default)]
pub struct DecodeFailureLayer;

impl<S> Layer<S> for DecodeFailureLayer {
    type Service = DecodeFailure<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DecodeFailure { inner }
    }
}

/// The service of [`DecodeFailureLayer`].
#[derive(Clone, Debug)]
pub struct DecodeFailure<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for DecodeFailure<S>
where
    S: Service<Request<B>, Response = Response> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if !is_grpc_request(request.headers()) {
            return Box::pin(self.inner.call(request));
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            rewrite_decode_failure(response.headers_mut());
            Ok(response)
        })
    }
}

/// Turns a trailers-only INTERNAL answer about an undecodable request into INVALID_ARGUMENT.
fn rewrite_decode_failure(headers: &mut HeaderMap) {
    if grpc_status(headers) != Some(tonic::Code::Internal) {
        return;
    }
    let Some(status) = tonic::Status::from_header_map(headers) else {
        return;
    };
    if is_decode_failure(status.message()) {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::InvalidArgument as i32),
        );
    }
}

struct CallRecord {
    service: Arc<str>,
    rpc: Arc<str>,
    started: Instant,
}

impl CallRecord {
    fn finish(self, code: tonic::Code) {
        let code = format!("{code:?}");
        let (rpc_service, rpc_method) = self.rpc.split_once('/').unwrap_or((&self.rpc, ""));
        let labels = [
            ("service", self.service.to_string()),
            ("rpc_service", rpc_service.to_string()),
            ("method", rpc_method.to_string()),
            ("code", code),
        ];
        metrics::counter!(names::GRPC_SERVER_REQUESTS, &labels).increment(1);
        metrics::histogram!(names::GRPC_SERVER_DURATION, &labels)
            .record(self.started.elapsed().as_secs_f64());
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
}

pin_project! {
    struct MeteredBody<B> {
        #[pin]
        inner: B,
        record: Option<CallRecord>,
    }

    impl<B> PinnedDrop for MeteredBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // A body dropped before its trailers means the client went away.
            if let Some(record) = this.project().record.take() {
                record.finish(tonic::Code::Cancelled);
            }
        }
    }
}

impl<B> Body for MeteredBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(record) = this.record.take()
                {
                    record.finish(grpc_status(trailers).unwrap_or(tonic::Code::Unknown));
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(record) = this.record.take() {
                    record.finish(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(record) = this.record.take() {
                    record.finish(tonic::Code::Ok);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Makes the server span of a request: named after the RPC, child of the caller's trace
/// context (W3C `traceparent`), carrying the request id.
#[derive(Clone, Debug)]
pub struct ServerSpan {
    service_label: Arc<str>,
}

impl ServerSpan {
    /// A span maker for this service.
    pub fn new(service_label: &str) -> Self {
        ServerSpan {
            service_label: Arc::from(service_label),
        }
    }
}

impl<B> tower_http::trace::MakeSpan<B> for ServerSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        let path = request.uri().path();
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let span = if is_grpc_request(request.headers()) {
            let (rpc_service, rpc_method) = split_path(path);
            tracing::info_span!(
                "grpc.server",
                otel.name = %path.trim_start_matches('/'),
                otel.kind = "server",
                rpc.system = "grpc",
                rpc.service = %rpc_service,
                rpc.method = %rpc_method,
                service = %self.service_label,
                request_id = %request_id,
                otel.status_code = tracing::field::Empty,
            )
        } else {
            tracing::info_span!(
                "http.server",
                otel.name = %format!("{} {}", request.method(), path),
                otel.kind = "server",
                http.request.method = %request.method(),
                url.path = %path,
                service = %self.service_label,
                request_id = %request_id,
                otel.status_code = tracing::field::Empty,
            )
        };
        propagation::set_parent_from_headers(&span, request.headers());
        span
    }
}

/// The answer to a request shed at the concurrency limit: gRPC `UNAVAILABLE` for gRPC callers,
/// HTTP 503 with `Retry-After` and the error envelope for everyone else.
pub async fn overloaded(headers: HeaderMap, error: tower::BoxError) -> Response {
    let shed = error.is::<tower::load_shed::error::Overloaded>();
    if shed {
        metrics::counter!(names::LOAD_SHED).increment(1);
    }
    let error = if shed {
        Error::unavailable("server overloaded, retry later")
            .with_reason(reason::OVERLOADED)
            .with_retry_after(OVERLOAD_RETRY_AFTER)
    } else if error.is::<tower::timeout::error::Elapsed>() {
        Error::new(ErrorCode::DeadlineExceeded, "request timed out")
    } else {
        Error::internal(error)
    };
    if is_grpc_request(&headers) {
        return status_response(error.into_status());
    }
    let request_id = headers
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    error_response(&error, request_id.as_deref())
}

/// An error as an HTTP response: the status, the REST envelope and `Retry-After` when the
/// error says when to retry.
pub fn error_response(error: &Error, request_id: Option<&str>) -> Response {
    let mut response = (
        error.http_status(),
        axum::Json(error.to_envelope(request_id)),
    )
        .into_response();
    if let Some(delay) = error.retry_after()
        && let Ok(value) = http::HeaderValue::from_str(&delay.as_secs().max(1).to_string())
    {
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_and_format() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5"), None);
        assert_eq!(parse_grpc_timeout("123456789m"), None);
        assert_eq!(parse_grpc_timeout("10x"), None);
        assert_eq!(format_grpc_timeout(Duration::from_millis(1500)), "1500m");
        assert_eq!(
            parse_grpc_timeout(&format_grpc_timeout(Duration::from_secs(30))),
            Some(Duration::from_secs(30))
        );
    }
}
