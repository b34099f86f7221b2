//! Trace propagation across a real gRPC hop: a client call made through the runtime's channel
//! and the server span of the runtime's server share one trace id, with the server span a child
//! of the client span, as an OTLP collector receives them.

use std::time::Duration;

use easel_runtime::config::{LogFormat, ServerConfig, TelemetryConfig};
use easel_runtime::grpc::{ClientConfig, GrpcServer, connect_lazy};
use easel_runtime::service::Listeners;
use easel_runtime::{Shutdown, telemetry};
use easel_test_support::{OtlpReceiver, ReceivedSpan};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

/// OTLP span kinds (`opentelemetry.proto.trace.v1.Span.SpanKind`).
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

fn span_named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|span| span.span.name == name)
}

fn span_of_kind(spans: &[ReceivedSpan], kind: i32) -> Option<&ReceivedSpan> {
    spans
        .iter()
        .find(|span| span.span.kind == kind && span.span.name == "grpc.health.v1.Health/Check")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_spans_share_one_trace_with_the_right_parent() {
    let receiver = OtlpReceiver::start().await;
    let guard = telemetry::init(&TelemetryConfig {
        service_name: "trace-test".to_string(),
        log_format: LogFormat::Pretty,
        log_filter: "warn".to_string(),
        otlp_endpoint: Some(receiver.endpoint()),
        sentry_dsn: None,
        environment: "test".to_string(),
    })
    .expect("telemetry starts");

    let shutdown = Shutdown::new(Duration::from_secs(2));
    let listeners = Listeners::ephemeral().await.expect("ports");
    let grpc_addr = listeners.grpc_addr().expect("address");
    let server = GrpcServer::new("trace-server", &ServerConfig::ephemeral());
    let serving = tokio::spawn(server.serve(listeners.grpc, shutdown.clone()));

    let channel = connect_lazy(
        &ClientConfig::new(format!("http://{grpc_addr}")),
        "trace-client",
    )
    .expect("channel");
    let mut health = HealthClient::new(channel);
    let root = tracing::info_span!("test.root");
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .instrument(root.clone())
        .await
        .expect("health check answers");
    drop(root);

    let spans = receiver
        .wait_for(Duration::from_secs(20), |spans| {
            span_named(spans, "test.root").is_some()
                && span_of_kind(spans, KIND_CLIENT).is_some()
                && span_of_kind(spans, KIND_SERVER).is_some()
        })
        .await;
    // Export happens in batches; force it so the test does not wait for the batch interval.
    guard.shutdown().await;
    let spans = if spans.len() < 3 {
        receiver
            .wait_for(Duration::from_secs(10), |spans| spans.len() >= 3)
            .await
    } else {
        spans
    };

    let names: Vec<_> = spans.iter().map(|s| s.span.name.clone()).collect();
    let root =
        span_named(&spans, "test.root").unwrap_or_else(|| panic!("root span missing: {names:?}"));
    let client = span_of_kind(&spans, KIND_CLIENT)
        .unwrap_or_else(|| panic!("client span missing: {names:?}"));
    let server = span_of_kind(&spans, KIND_SERVER)
        .unwrap_or_else(|| panic!("server span missing: {names:?}"));
    assert_eq!(
        client.trace_id(),
        root.trace_id(),
        "client continues the caller's trace"
    );
    assert_eq!(
        server.trace_id(),
        client.trace_id(),
        "server continues the client's trace"
    );
    assert_eq!(client.parent_span_id(), root.span_id());
    assert_eq!(
        server.parent_span_id(),
        client.span_id(),
        "server span is the client span's child"
    );
    assert_eq!(client.service_name, "trace-test");

    shutdown.trigger();
    serving
        .await
        .expect("server task")
        .expect("server stops cleanly");
}
