//! The Prometheus registry behind every service's `/metrics`.
//!
//! The `metrics` facade has one recorder per process; [`handle`] installs it on first use and
//! returns the same handle afterwards, so several services embedded in one process (`easel up`)
//! share one registry and tell their series apart by the `service` label.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 0.5 ms to 60 s, dense where RPCs usually land.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Gauges and counters' names shared by the gRPC layers.
pub mod names {
    /// Counter: gRPC calls served, by `service`, `method`, `code`.
    pub const GRPC_SERVER_REQUESTS: &str = "grpc_server_requests_total";
    /// Histogram: gRPC call latency (until the response ends), by `service`, `method`, `code`.
    pub const GRPC_SERVER_DURATION: &str = "grpc_server_request_duration_seconds";
    /// Counter: gRPC calls made, by `service`, `method`, `code`.
    pub const GRPC_CLIENT_REQUESTS: &str = "grpc_client_requests_total";
    /// Histogram: gRPC calls made, latency until response headers.
    pub const GRPC_CLIENT_DURATION: &str = "grpc_client_request_duration_seconds";
    /// Counter: requests refused because the server was at its concurrency limit.
    pub const LOAD_SHED: &str = "server_load_shed_total";
    /// Gauge: connections open, by `service` and `server` (`grpc`, `public`, `admin`).
    pub const SERVER_CONNECTIONS_OPEN: &str = "server_connections_open";
    /// Counter: connections closed at accept because a cap was reached, by `service`,
    /// `server` and `reason` (`max_connections`, `max_connections_per_address`).
    pub const SERVER_CONNECTIONS_REFUSED: &str = "server_connections_refused_total";
    /// Counter: connections closed because no request arrived within the header timeout.
    pub const SERVER_CONNECTIONS_TIMED_OUT: &str = "server_connections_timed_out_total";
    /// Counter: TLS handshakes refused (no or untrusted client certificate), by `service`.
    pub const SERVER_TLS_HANDSHAKE_FAILURES: &str = "server_tls_handshake_failures_total";
    /// Counter: internal calls refused by the caller allow-list, by `service`, `caller`,
    /// `method`.
    pub const GRPC_CALLER_DENIED: &str = "grpc_server_caller_denied_total";
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first call.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was installed elsewhere; /metrics stays empty");
            }
            describe();
            handle
        })
        .clone()
}

/// Renders the registry in the Prometheus text format.
pub fn render() -> String {
    let handle = handle();
    handle.run_upkeep();
    handle.render()
}

fn describe() {
    metrics::describe_counter!(names::GRPC_SERVER_REQUESTS, "gRPC calls served");
    metrics::describe_histogram!(
        names::GRPC_SERVER_DURATION,
        metrics::Unit::Seconds,
        "gRPC call latency, until the response ends"
    );
    metrics::describe_counter!(names::GRPC_CLIENT_REQUESTS, "gRPC calls made");
    metrics::describe_histogram!(
        names::GRPC_CLIENT_DURATION,
        metrics::Unit::Seconds,
        "gRPC client latency, until response headers"
    );
    metrics::describe_gauge!(names::SERVER_CONNECTIONS_OPEN, "connections open");
    metrics::describe_counter!(
        names::SERVER_CONNECTIONS_REFUSED,
        "connections closed at accept because a connection cap was reached"
    );
    metrics::describe_counter!(
        names::SERVER_CONNECTIONS_TIMED_OUT,
        "connections closed because no request arrived within the header-read timeout"
    );
    metrics::describe_counter!(
        names::SERVER_TLS_HANDSHAKE_FAILURES,
        "TLS handshakes refused, e.g. a caller without a service certificate"
    );
    metrics::describe_counter!(
        names::GRPC_CALLER_DENIED,
        "internal calls refused because the calling service is not allowed the method"
    );
    metrics::describe_counter!(
        names::LOAD_SHED,
        "requests refused at the concurrency limit"
    );
}
