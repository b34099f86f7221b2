//! Bad requests, rejected graphs and no capacity: errors before `queued` end the call.

use std::time::Duration;

use easel_comfy_sim::SimConfig;
use easel_proto::bridge::v1::run_workflow_request::Workflow;
use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{InterruptRequest, RunWorkflowRequest};
use easel_proto::jobs::v1::{InputOverride, Workflow as RawWorkflow};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::{failed, fast_config, next, run, start, text};

fn raw(
    run_id: &str,
    graph: serde_json::Value,
    overrides: Vec<InputOverride>,
) -> RunWorkflowRequest {
    RunWorkflowRequest {
        run_id: run_id.to_string(),
        workflow: Some(Workflow::Raw(RawWorkflow {
            graph: Some(serde_json::from_value(graph).expect("struct")),
            overrides,
        })),
        timeout: None,
        exclude_backends: vec![],
        ..Default::default()
    }
}

fn template_graph() -> serde_json::Value {
    easel_comfy_bridge::template::text_to_image(
        &easel_proto::jobs::v1::TextToImage {
            prompt: "a cat".to_string(),
            width: 64,
            height: 64,
            steps: 2,
            ..Default::default()
        },
        Some("sd_xl_base_1.0.safetensors"),
        || 5,
    )
    .expect("valid")
    .graph
}

fn set(node_id: &str, input: &str, value: serde_json::Value) -> InputOverride {
    InputOverride {
        node_id: node_id.to_string(),
        input: input.to_string(),
        value: Some(serde_json::from_value(value).expect("value")),
    }
}

fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    status
        .check_error_details()
        .expect("details")
        .bad_request()
        .map(|bad| {
            bad.field_violations
                .iter()
                .map(|v| (v.field.clone(), v.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_graph_comfyui_rejects_fails_the_run_with_each_nodes_error() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let request = raw(
        "rejected",
        template_graph(),
        vec![set("3", "steps", serde_json::json!(0))],
    );
    let events = run(&mut bridge.client, request).await.expect("a stream");
    let rejected = failed(&events);
    assert_eq!(rejected.code, "INVALID_ARGUMENT", "{rejected:?}");
    assert!(!rejected.retryable, "the graph's fault: not retried");
    assert!(
        rejected
            .message
            .contains("node 3 (KSampler).steps: Value 0 smaller than min of 1"),
        "{}",
        rejected.message
    );
    let node_error = rejected.node_errors.first().cloned().unwrap_or_default();
    assert_eq!(rejected.node_errors.len(), 1, "{rejected:?}");
    assert_eq!(node_error.node_id, "3");
    assert_eq!(node_error.class_type, "KSampler");
    assert_eq!(node_error.input_name, "steps");
    assert_eq!(node_error.r#type, "value_smaller_than_min");
    assert_eq!(node_error.message, "Value 0 smaller than min of 1");
    // An unknown class is a graph-level error: no node to name.
    let request = raw(
        "rejected-2",
        serde_json::json!({"1": {"class_type": "NoSuchNode", "inputs": {}}}),
        vec![],
    );
    let events = run(&mut bridge.client, request).await.expect("a stream");
    let rejected = failed(&events);
    assert_eq!(rejected.code, "INVALID_ARGUMENT");
    assert!(rejected.node_errors.is_empty());
    assert!(
        rejected.message.contains("NoSuchNode"),
        "{}",
        rejected.message
    );
    // The run id is free again after a rejection.
    let events = run(
        &mut bridge.client,
        raw("rejected", template_graph(), vec![]),
    )
    .await
    .expect("valid now");
    assert!(matches!(events.last(), Some(Event::Completed(_))));
}

#[tokio::test]
async fn malformed_requests_are_refused_before_any_backend_is_used() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let cases: Vec<(RunWorkflowRequest, &str)> = vec![
        (text("", "x", 2), "run_id"),
        (text("has/slash", "x", 2), "run_id"),
        (
            RunWorkflowRequest {
                run_id: "no-workflow".to_string(),
                ..Default::default()
            },
            "workflow",
        ),
        (text("no-prompt", "", 2), "text_to_image.prompt"),
        (
            {
                let mut r = text("bad-width", "x", 2);
                if let Some(Workflow::TextToImage(t)) = &mut r.workflow {
                    t.width = 65;
                }
                r
            },
            "text_to_image.width",
        ),
        (
            {
                let mut r = text("bad-sampler", "x", 2);
                if let Some(Workflow::TextToImage(t)) = &mut r.workflow {
                    t.sampler = 999;
                }
                r
            },
            "text_to_image.sampler",
        ),
        (
            {
                let mut r = text("bad-timeout", "x", 2);
                r.timeout = Some(pbjson_types::Duration {
                    seconds: -1,
                    nanos: 0,
                });
                r
            },
            "timeout",
        ),
        (
            raw(
                "bad-override",
                template_graph(),
                vec![set("77", "seed", serde_json::json!(1))],
            ),
            "raw.overrides[0].node_id",
        ),
        (
            raw("empty-graph", serde_json::json!({}), vec![]),
            "raw.graph",
        ),
    ];
    for (request, field) in cases {
        let status = run(&mut bridge.client, request).await.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
        assert_eq!(violations(&status)[0].0, field);
    }
    let status = bridge
        .client
        .interrupt(InterruptRequest {
            run_id: "bad id".to_string(),
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn a_run_id_in_progress_cannot_be_started_twice() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let mut first = bridge
        .client
        .run_workflow(text("dup", "slow [[sim:slow=50]]", 200))
        .await
        .expect("queued")
        .into_inner();
    assert!(matches!(next(&mut first).await, Some(Event::Queued(_))));
    let status = run(&mut bridge.client, text("dup", "again", 2))
        .await
        .expect_err("duplicate");
    assert_eq!(status.code(), Code::AlreadyExists);
    let _ = bridge
        .client
        .interrupt(InterruptRequest {
            run_id: "dup".to_string(),
        })
        .await;
}

#[tokio::test]
async fn without_capacity_the_call_waits_then_gives_up() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut config = fast_config(&[sim.base_url()]);
    config.max_in_flight = 1;
    config.queue_timeout = Duration::from_millis(300);
    let mut bridge = start(config).await;
    let mut busy = bridge
        .client
        .run_workflow(text("busy", "slow [[sim:slow=50]]", 400))
        .await
        .expect("queued")
        .into_inner();
    assert!(matches!(next(&mut busy).await, Some(Event::Queued(_))));
    let status = run(&mut bridge.client, text("waits", "x", 2))
        .await
        .expect_err("no capacity");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    // Excluding the only backend is a preference: with no other one, the run waits for it.
    let mut request = text("excluded", "x", 2);
    request.exclude_backends = vec![sim.addr.to_string()];
    let status = run(&mut bridge.client, request)
        .await
        .expect_err("no capacity");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let _ = bridge
        .client
        .interrupt(InterruptRequest {
            run_id: "busy".to_string(),
        })
        .await;
}

#[tokio::test]
async fn an_excluded_backend_runs_the_job_when_it_is_the_only_one() {
    let sim = easel_comfy_sim::spawn(SimConfig::default())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let mut request = text("only-one", "x", 2);
    request.exclude_backends = vec![sim.addr.to_string()];
    let events = run(&mut bridge.client, request).await.expect("runs");
    assert!(
        matches!(events.last(), Some(Event::Completed(_))),
        "{events:?}"
    );
}
