//! One trace: a job's spans from every service it crosses share the job's trace id.

use std::collections::BTreeSet;

use easel_e2e::{DEADLINE, Platform, PlatformOptions, event_status};
use easel_test_support::OtlpReceiver;
use serde_json::json;

#[tokio::test]
async fn a_job_is_one_trace_across_gateway_auth_jobs_bridge_and_storage() {
    let receiver = OtlpReceiver::start().await;
    let platform = Platform::start_with(PlatformOptions {
        otlp_endpoint: Some(receiver.endpoint()),
        ..Default::default()
    })
    .await;
    let key = platform.admin.api_key.clone();

    // The client starts the trace; every hop continues it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = platform
        .http
        .post(format!("{}/api/v1/jobs", platform.url()))
        .header("x-api-key", &key)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"prompt": "A traced sunset", "width": 128, "height": 128}))
        .send()
        .await
        .unwrap_or_else(|error| panic!("submit failed: {error}"));
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let job = &body;
    let job_id = job["job_id"].as_str().unwrap_or_default().to_string();
    assert_eq!(job["trace_id"], trace_id, "the job records its trace");

    let events = platform.watch_ws(&key, &job_id).await;
    assert_eq!(
        events.iter().rev().find_map(event_status),
        Some("completed")
    );

    let wanted = ["gateway", "auth", "jobs", "comfy-bridge", "storage"];
    let spans = receiver
        .wait_for(DEADLINE, |spans| {
            let services: BTreeSet<&str> = spans
                .iter()
                .filter(|span| span.trace_id() == trace_id)
                .map(|span| span.service_name.as_str())
                .collect();
            let jobs_spans = spans
                .iter()
                .filter(|span| span.trace_id() == trace_id && span.service_name == "jobs")
                .count();
            wanted.iter().all(|service| services.contains(service)) && jobs_spans >= 2
        })
        .await;
    let in_trace: BTreeSet<String> = spans
        .iter()
        .filter(|span| span.trace_id() == trace_id)
        .map(|span| format!("{}:{}", span.service_name, span.span.name))
        .collect();
    for service in wanted {
        assert!(
            in_trace
                .iter()
                .any(|name| name.starts_with(&format!("{service}:"))),
            "{service} has no span in the trace: {in_trace:?}"
        );
    }
}
