//! Error-level events reach Sentry when `SENTRY_DSN` is set: a local HTTP receiver stands in
//! for Sentry's ingest endpoint and must receive the event's envelope.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use easel_runtime::config::{LogFormat, TelemetryConfig};
use easel_runtime::telemetry;
use tokio::sync::Notify;

#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<String>>>,
    arrived: Arc<Notify>,
}

async fn ingest(State(received): State<Received>, body: Bytes) -> &'static str {
    if let Ok(mut bodies) = received.bodies.lock() {
        bodies.push(String::from_utf8_lossy(&body).into_owned());
    }
    received.arrived.notify_waiters();
    "{}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_events_are_sent_to_the_configured_dsn() {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/api/{project}/envelope/", post(ingest))
        .route("/api/{project}/store/", post(ingest))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let guard = telemetry::init(&TelemetryConfig {
        service_name: "sentry-test".to_string(),
        log_format: LogFormat::Pretty,
        log_filter: "error".to_string(),
        otlp_endpoint: None,
        sentry_dsn: Some(format!("http://public@{address}/42")),
        environment: "test".to_string(),
    })
    .expect("telemetry starts");

    tracing::error!(job_id = "job_1", "a marker error for the sentry test");
    let arrived = received.arrived.notified();
    guard.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), arrived).await;

    let bodies = received.bodies.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .any(|body| body.contains("a marker error for the sentry test")),
        "no event with the marker reached the receiver: {bodies:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|body| body.contains("\"environment\":\"test\""))
    );
}
