//! Several backends: breakers, affinity, spreading, and the listings.

use easel_comfy_sim::SimConfig;
use easel_proto::bridge::v1::run_workflow_request::Workflow;
use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{
    BreakerState, InterruptRequest, ListBackendsRequest, ListModelsRequest,
};
use tokio_util::sync::CancellationToken;

use crate::support::{self, Client, failed, fast_config, next, next_any, run, start, text};

async fn breaker_of(client: &mut Client) -> (bool, BreakerState) {
    let backend = client
        .list_backends(ListBackendsRequest {})
        .await
        .expect("list")
        .into_inner()
        .backends
        .remove(0);
    (backend.healthy, backend.breaker_state())
}

/// A backend that comes back takes runs at once: its first passing health check ends the
/// breaker's cool-down (here far longer than the test may take), and a run waiting meanwhile
/// said why it waited.
#[tokio::test]
async fn a_backend_that_comes_back_takes_runs_long_before_the_cooldown_ends() {
    let sim = easel_comfy_sim::spawn(SimConfig::default())
        .await
        .expect("sim");
    let addr = sim.addr;
    let mut config = fast_config(&[sim.base_url()]);
    config.breaker_failures = 1;
    config.breaker_cooldown = std::time::Duration::from_secs(3600);
    config.queue_timeout = std::time::Duration::from_secs(120);
    let bridge = start(config).await;
    let mut client = bridge.client.clone();
    // A run before the outage (which also lists the checkpoints, as a warm bridge has them).
    let events = run(&mut client, text("before", "x", 2))
        .await
        .expect("runs");
    assert!(
        matches!(events.last(), Some(Event::Completed(_))),
        "{events:?}"
    );
    sim.kill().await.expect("the simulator stops");
    support::wait_for("the breaker to open", || {
        let mut client = client.clone();
        async move { (breaker_of(&mut client).await == (false, BreakerState::Open)).then_some(()) }
    })
    .await;
    let mut stream = client
        .run_workflow(text("waits", "x", 2))
        .await
        .expect("the call waits")
        .into_inner();
    let first = next_any(&mut stream).await;
    let Some(Event::Waiting(waiting)) = first else {
        panic!("expected waiting, got {first:?}");
    };
    assert_eq!(
        waiting.reason(),
        easel_proto::bridge::v1::WaitReason::NoBackend
    );
    // The backend comes back on the same address.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let stop = CancellationToken::new();
    tokio::spawn(easel_comfy_sim::run(
        SimConfig::default(),
        listener,
        stop.clone(),
    ));
    let mut events = Vec::new();
    while let Some(event) = next(&mut stream).await {
        events.push(event);
    }
    assert!(
        matches!(events.first(), Some(Event::Queued(_))),
        "{events:?}"
    );
    assert!(
        matches!(events.last(), Some(Event::Completed(_))),
        "{events:?}"
    );
    assert_eq!(breaker_of(&mut client).await, (true, BreakerState::Closed));
    stop.cancel();
}

#[tokio::test]
async fn a_backend_killed_mid_run_fails_retryable_and_its_breaker_recovers() {
    let sim = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim");
    let addr = sim.addr;
    let mut config = fast_config(&[sim.base_url()]);
    config.breaker_failures = 2;
    let mut bridge = start(config).await;
    let events = run(
        &mut bridge.client,
        text(
            "killed",
            "doomed [[sim:die]] [[sim:step=2]] [[sim:slow=20]]",
            10,
        ),
    )
    .await
    .expect("queued");
    let failed = failed(&events);
    assert_eq!(failed.code, "UNAVAILABLE", "{failed:?}");
    assert!(failed.retryable);
    assert_eq!(failed.backend, addr.to_string());
    sim.join().await.expect("the simulator died");
    let mut client = bridge.client.clone();
    support::wait_for("the breaker to open", || {
        let mut client = client.clone();
        async move { (breaker_of(&mut client).await == (false, BreakerState::Open)).then_some(()) }
    })
    .await;
    // While it is down, runs are refused before queueing.
    let mut request = text("while-down", "x", 2);
    request.timeout = Some(std::time::Duration::from_millis(300).into());
    assert!(run(&mut client, request).await.is_err());
    // The backend comes back on the same address.
    let listener = tokio::net::TcpListener::bind(addr).await.expect("rebind");
    let stop = CancellationToken::new();
    tokio::spawn(easel_comfy_sim::run(
        SimConfig::with_request_faults(),
        listener,
        stop.clone(),
    ));
    support::wait_for("the breaker to close", || {
        let mut client = client.clone();
        async move { (breaker_of(&mut client).await == (true, BreakerState::Closed)).then_some(()) }
    })
    .await;
    let page = support::metrics(&bridge).await;
    assert!(page.contains("to=\"open\""), "opened");
    assert!(page.contains("to=\"half_open\""), "half-opened");
    assert!(page.contains("to=\"closed\""), "closed");
    let events = run(&mut client, text("after", "back again", 2))
        .await
        .expect("queued");
    assert!(matches!(events.last(), Some(Event::Completed(_))));
    stop.cancel();
}

fn with_checkpoint(
    run_id: &str,
    checkpoint: &str,
    prompt: &str,
) -> easel_proto::bridge::v1::RunWorkflowRequest {
    let mut request = text(run_id, prompt, 2);
    if let Some(Workflow::TextToImage(t)) = &mut request.workflow {
        t.checkpoint = checkpoint.to_string();
    }
    request
}

fn backend_of(events: &[Event]) -> String {
    match &events[0] {
        Event::Queued(queued) => queued.backend.clone(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn two_backends_spread_concurrent_runs_and_keep_model_affinity() {
    let a = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim a");
    let b = easel_comfy_sim::spawn(SimConfig::with_request_faults())
        .await
        .expect("sim b");
    let mut config = fast_config(&[a.base_url(), b.base_url()]);
    config.max_in_flight = 1;
    let mut bridge = start(config).await;
    // Spreading: two concurrent runs go to different backends.
    let mut first = bridge
        .client
        .run_workflow(with_checkpoint(
            "spread-1",
            "sd_xl_base_1.0.safetensors",
            "slow [[sim:slow=30]]",
        ))
        .await
        .expect("queued")
        .into_inner();
    let mut second = bridge
        .client
        .run_workflow(with_checkpoint(
            "spread-2",
            "sd_xl_base_1.0.safetensors",
            "slow too [[sim:slow=30]]",
        ))
        .await
        .expect("queued")
        .into_inner();
    let (Some(Event::Queued(q1)), Some(Event::Queued(q2))) =
        (next(&mut first).await, next(&mut second).await)
    else {
        panic!("not queued");
    };
    assert_ne!(q1.backend, q2.backend);
    support::rest(&mut first).await;
    support::rest(&mut second).await;
    // Affinity: one backend loads the other checkpoint; its runs keep going there.
    let v15 = "v1-5-pruned-emaonly.safetensors";
    let events = run(&mut bridge.client, with_checkpoint("aff-1", v15, "one"))
        .await
        .expect("queued");
    let v15_home = backend_of(&events);
    for index in 0..4 {
        let events = run(
            &mut bridge.client,
            with_checkpoint(&format!("aff-v15-{index}"), v15, &format!("v15 {index}")),
        )
        .await
        .expect("queued");
        assert_eq!(
            backend_of(&events),
            v15_home,
            "v1.5 stays where it is loaded"
        );
        let events = run(
            &mut bridge.client,
            with_checkpoint(
                &format!("aff-xl-{index}"),
                "sd_xl_base_1.0.safetensors",
                &format!("xl {index}"),
            ),
        )
        .await
        .expect("queued");
        assert_ne!(
            backend_of(&events),
            v15_home,
            "sdxl stays on the other backend"
        );
    }
    let backends = bridge
        .client
        .list_backends(ListBackendsRequest {})
        .await
        .expect("list")
        .into_inner()
        .backends;
    assert_eq!(backends.len(), 2);
    for backend in &backends {
        assert!(backend.healthy);
        assert_eq!(backend.capacity, 1);
        assert_eq!(backend.in_flight, 0);
        assert!(backend.last_check_time.is_some());
        let expected = if backend.name == v15_home {
            v15
        } else {
            "sd_xl_base_1.0.safetensors"
        };
        assert_eq!(backend.last_checkpoint, expected);
    }
    let _ = bridge
        .client
        .interrupt(InterruptRequest {
            run_id: "none".to_string(),
        })
        .await;
}

#[tokio::test]
async fn models_are_listed_with_their_backends() {
    let a = easel_comfy_sim::spawn(SimConfig {
        checkpoints: vec![
            "shared.safetensors".to_string(),
            "only-a.safetensors".to_string(),
        ],
        vram: Some((8 << 30, 6 << 30)),
        ..SimConfig::with_request_faults()
    })
    .await
    .expect("sim a");
    let b = easel_comfy_sim::spawn(SimConfig {
        checkpoints: vec!["shared.safetensors".to_string()],
        ..SimConfig::with_request_faults()
    })
    .await
    .expect("sim b");
    let mut bridge = start(fast_config(&[a.base_url(), b.base_url()])).await;
    let models = bridge
        .client
        .list_models(ListModelsRequest {})
        .await
        .expect("models")
        .into_inner();
    assert_eq!(models.default_checkpoint, "shared.safetensors");
    let names: Vec<_> = models
        .checkpoints
        .iter()
        .map(|c| (c.name.as_str(), c.backends.len()))
        .collect();
    assert_eq!(
        names,
        [("shared.safetensors", 2), ("only-a.safetensors", 1)]
    );
    let backends = bridge
        .client
        .list_backends(ListBackendsRequest {})
        .await
        .expect("list")
        .into_inner()
        .backends;
    assert_eq!(backends[0].vram_total_bytes, 8 << 30);
    assert_eq!(backends[0].vram_free_bytes, 6 << 30);
    assert_eq!(backends[0].breaker_state(), BreakerState::Closed);
    let page = support::metrics(&bridge).await;
    assert!(page.contains("comfyui_vram_total_bytes"), "vram exported");
}
