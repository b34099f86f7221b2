//! gRPC plumbing: the server every service runs and the client it calls others with.
//!
//! Both sides carry the W3C trace context and record Prometheus metrics by service, method and
//! status code; the server adds health, reflection, request ids, deadlines and load shedding.

pub mod callers;
pub mod client;
pub mod layers;
pub mod server;

pub use callers::{CallerPolicy, CallerRule};
pub use client::{ClientConfig, GrpcChannel, connect_lazy};
pub use server::GrpcServer;

/// Splits a gRPC path `/package.Service/Method` into service and method.
pub(crate) fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

/// Whether a request is gRPC (or gRPC-web) by its content type.
pub fn is_grpc_request(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/grpc"))
}

/// A trailers-only gRPC response carrying an error status, for layers that answer before the
/// service does (deadline, overload).
pub fn status_response(status: tonic::Status) -> axum::response::Response {
    let mut response = status.into_http::<axum::body::Body>();
    // tonic's `into_http` leaves the body empty: a trailers-only response, as the spec wants.
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/easel.jobs.v1.JobService/GetJob"),
            ("easel.jobs.v1.JobService", "GetJob")
        );
        assert_eq!(split_path("/weird"), ("weird", ""));
    }
}
