//! Runs from queued to their last event against a simulator.

use std::time::Duration;

use easel_comfy_sim::SimConfig;
use easel_proto::bridge::v1::InterruptRequest;
use easel_proto::bridge::v1::run_workflow_response::Event;
use sha2::{Digest, Sha256};

use crate::support::{self, failed, fast_config, last, next, rest, run, start, text};

#[tokio::test]
async fn a_run_streams_progress_and_the_image_bytes() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let events = run(&mut bridge.client, text("run-success-1", "a red fox", 3))
        .await
        .expect("queued");
    let Event::Queued(queued) = &events[0] else {
        panic!("{:?}", events[0])
    };
    assert_eq!(queued.backend, sim.addr.to_string());
    assert_eq!(queued.node_count, 7);
    assert_eq!(queued.checkpoint, "sd_xl_base_1.0.safetensors");
    assert!(matches!(&events[1], Event::Started(started) if started.cached_nodes.is_empty()));
    let steps: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            Event::Progress(p) if p.node_class == "KSampler" && p.max_steps > 0 => {
                Some((p.step, p.max_steps))
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, [(1, 3), (2, 3), (3, 3)]);
    let outputs: Vec<_> = events
        .iter()
        .filter_map(|event| match event {
            Event::Output(output) => Some(output.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 1);
    let output = &outputs[0];
    assert_eq!((output.width, output.height), (64, 48));
    assert_eq!(output.content_type, "image/png");
    assert_eq!(output.node_id, "9");
    assert_eq!(output.size_bytes, output.data.len() as u64);
    // The image came over the WebSocket (SaveImageWebsocket): nothing on the backend's disk.
    assert!(output.data.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(output.sha256, hex::encode(Sha256::digest(&output.data)));
    assert_eq!(
        std::fs::read_dir(sim.output_dir())
            .expect("output dir")
            .count(),
        0
    );
    let Event::Completed(completed) = last(&events) else {
        panic!("not completed")
    };
    assert!(!completed.cached);
    assert_eq!(completed.backend, sim.addr.to_string());
    // The seed was resolved and used: the same seed gives the same bytes.
    let mut again = text("run-success-2", "a red fox", 3);
    if let Some(easel_proto::bridge::v1::run_workflow_request::Workflow::TextToImage(t)) =
        &mut again.workflow
    {
        t.seed = Some(queued.seed);
        t.negative_prompt = "blurry".to_string();
    }
    let events = run(&mut bridge.client, again).await.expect("queued");
    assert!(matches!(last(&events), Event::Completed(_)));
}

#[tokio::test]
async fn a_cached_rerun_still_returns_its_outputs() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let request = |run_id: &str| {
        let mut request = text(run_id, "the same lighthouse", 2);
        if let Some(easel_proto::bridge::v1::run_workflow_request::Workflow::TextToImage(t)) =
            &mut request.workflow
        {
            t.seed = Some(1234);
        }
        request
    };
    let first = run(&mut bridge.client, request("cached-1"))
        .await
        .expect("queued");
    let second = run(&mut bridge.client, request("cached-2"))
        .await
        .expect("queued");
    let output = |events: &[Event]| {
        events
            .iter()
            .find_map(|event| match event {
                Event::Output(output) => Some(output.clone()),
                _ => None,
            })
            .expect("an output")
    };
    assert_eq!(output(&first).sha256, output(&second).sha256);
    assert_eq!(output(&first).filename, output(&second).filename);
    let Event::Completed(completed) = last(&second) else {
        panic!("not completed")
    };
    // SaveImageWebsocket is never cached (ComfyUI's IS_CHANGED is the time): it streams the
    // cached image again; everything upstream came from the cache.
    assert!(!completed.cached);
    assert!(matches!(&second[1], Event::Started(started) if started.cached_nodes.len() == 6));
}

#[tokio::test]
async fn a_runtime_error_fails_with_the_exception() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let events = run(
        &mut bridge.client,
        text("run-error", "boom [[sim:error]]", 2),
    )
    .await
    .expect("queued");
    let failed = failed(&events);
    assert_eq!(failed.code, "INTERNAL");
    assert!(!failed.retryable);
    assert_eq!(failed.exception_type, "RuntimeError");
    assert_eq!(failed.node_id, "3");
    assert!(
        failed.message.contains("injected execution error"),
        "{}",
        failed.message
    );
}

#[tokio::test]
async fn out_of_memory_frees_the_backend_and_is_retryable() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let events = run(&mut bridge.client, text("run-oom", "huge [[sim:oom]]", 2))
        .await
        .expect("queued");
    let failed = failed(&events);
    assert_eq!(failed.code, "RESOURCE_EXHAUSTED");
    assert!(failed.retryable);
    assert_eq!(failed.exception_type, "torch.OutOfMemoryError");
    let page = support::metrics(&bridge).await;
    assert!(page.contains("endpoint=\"/free\""), "POST /free was called");
}

#[tokio::test]
async fn a_queued_and_a_running_prompt_can_be_interrupted() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let mut running = bridge
        .client
        .run_workflow(text("int-running", "slow [[sim:slow=50]]", 400))
        .await
        .expect("queued")
        .into_inner();
    assert!(matches!(next(&mut running).await, Some(Event::Queued(_))));
    // Wait until it really runs (a sampler step), so the second one waits in ComfyUI's queue.
    loop {
        match next(&mut running).await {
            Some(Event::Progress(p)) if p.step > 0 => break,
            Some(_) => {}
            None => panic!("ended early"),
        }
    }
    let mut queued = bridge
        .client
        .run_workflow(text("int-queued", "next in line", 2))
        .await
        .expect("queued")
        .into_inner();
    assert!(matches!(next(&mut queued).await, Some(Event::Queued(_))));
    let answer = bridge
        .client
        .interrupt(InterruptRequest {
            run_id: "int-queued".to_string(),
        })
        .await
        .expect("interrupt")
        .into_inner();
    assert!(answer.interrupted);
    let events = rest(&mut queued).await;
    let failed_queued = failed(&events);
    assert_eq!(failed_queued.code, "CANCELLED");
    assert!(
        !events.iter().any(|e| matches!(e, Event::Started(_))),
        "never ran"
    );
    let answer = bridge
        .client
        .interrupt(InterruptRequest {
            run_id: "int-running".to_string(),
        })
        .await
        .expect("interrupt")
        .into_inner();
    assert!(answer.interrupted);
    let events = rest(&mut running).await;
    assert_eq!(failed(&events).code, "CANCELLED");
    // Idempotent: interrupting a finished or unknown run succeeds and says so.
    for run_id in ["int-running", "never-existed"] {
        let answer = bridge
            .client
            .interrupt(InterruptRequest {
                run_id: run_id.to_string(),
            })
            .await
            .expect("interrupt")
            .into_inner();
        assert!(!answer.interrupted);
    }
    let history: serde_json::Value = reqwest::get(format!("{}/history/int-queued", sim.base_url()))
        .await
        .expect("history")
        .json()
        .await
        .expect("json");
    assert_eq!(
        history,
        serde_json::json!({}),
        "a deleted prompt never runs"
    );
}

#[tokio::test]
async fn a_run_past_its_deadline_is_interrupted_on_comfyui() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let mut bridge = start(fast_config(&[sim.base_url()])).await;
    let mut request = text("run-deadline", "slow [[sim:slow=50]]", 400);
    request.timeout = Some(Duration::from_millis(400).into());
    let events = run(&mut bridge.client, request).await.expect("queued");
    let failed = failed(&events);
    assert_eq!(failed.code, "DEADLINE_EXCEEDED");
    let url = format!("{}/history/run-deadline", sim.base_url());
    let status = support::wait_for("the interrupted prompt in history", || {
        let url = url.clone();
        async move {
            let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
            body.get("run-deadline")
                .map(|entry| entry["status"].clone())
        }
    })
    .await;
    assert_eq!(status["status_str"], "error");
    let messages = status["messages"].to_string();
    assert!(messages.contains("execution_interrupted"), "{messages}");
}

/// A run whose images stream over the WebSocket cannot vouch for them once the socket dropped:
/// it fails retryable (jobs runs it again) rather than completing without its images.
#[tokio::test]
async fn a_dropped_websocket_fails_a_streamed_run_retryable() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let proxy = support::Proxy::start(sim.addr).await;
    let mut bridge = start(fast_config(&[format!("http://{}", proxy.addr)])).await;
    let mut stream = bridge
        .client
        .run_workflow(text(
            "run-ws-drop-streamed",
            "through a flaky network [[sim:slow=20]]",
            30,
        ))
        .await
        .expect("queued")
        .into_inner();
    loop {
        match next(&mut stream).await {
            Some(Event::Progress(p)) if p.step > 0 => break,
            Some(_) => {}
            None => panic!("ended early"),
        }
    }
    proxy.sever();
    let events = rest(&mut stream).await;
    let failed = failed(&events);
    assert_eq!(failed.code, "UNAVAILABLE", "{failed:?}");
    assert!(failed.retryable);
    assert!(failed.message.contains("WebSocket"), "{failed:?}");
}

/// Without `SaveImageWebsocket` the images are files on the backend: history still finds them
/// after the socket dropped.
#[tokio::test]
async fn a_dropped_websocket_is_reconciled_from_history() {
    let sim = easel_comfy_sim::spawn(SimConfig {
        without_nodes: vec!["SaveImageWebsocket".to_string()],
        ..SimConfig::with_request_faults()
    })
    .await
    .expect("sim");
    let proxy = support::Proxy::start(sim.addr).await;
    let mut bridge = start(fast_config(&[format!("http://{}", proxy.addr)])).await;
    let mut stream = bridge
        .client
        .run_workflow(text(
            "run-ws-drop",
            "through a flaky network [[sim:slow=20]]",
            30,
        ))
        .await
        .expect("queued")
        .into_inner();
    loop {
        match next(&mut stream).await {
            Some(Event::Progress(p)) if p.step > 0 => break,
            Some(_) => {}
            None => panic!("ended early"),
        }
    }
    proxy.sever();
    let events = rest(&mut stream).await;
    assert!(
        matches!(last(&events), Event::Completed(_)),
        "{:?}",
        last(&events)
    );
    assert!(
        events
            .iter()
            .any(|event| matches!(event, Event::Output(o) if o.size_bytes > 0))
    );
    let page = support::metrics(&bridge).await;
    assert!(
        page.contains("bridge_reconciliations_total"),
        "reconciled after the drop"
    );
}
