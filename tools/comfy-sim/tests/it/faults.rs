//! Failure injection, kill mid-run, refusing connections, slow responses, the binary.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use easel_comfy_sim::{FaultKind, SimConfig};
use serde_json::json;

use crate::support::*;

fn error_of(messages: &[serde_json::Value]) -> &serde_json::Value {
    messages
        .iter()
        .find(|message| message["type"] == "execution_error")
        .expect("execution_error")
}

/// Markers sit in user text: a simulator that did not opt in (`easel up`) runs them as plain
/// prompts, and `extra_data.easel_sim` is ignored too.
#[tokio::test]
async fn request_faults_are_ignored_unless_turned_on() {
    let sim = sim_with(SimConfig::default()).await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    for body in [
        json!({"prompt": txt2img(1, "a cat [[sim:die]]", 64, 64, 3), "client_id": client}),
        json!({"prompt": txt2img(2, "a cat [[sim:error]] [[sim:oom]]", 64, 64, 3), "client_id": client}),
        json!({"prompt": txt2img(3, "a dog", 64, 64, 3), "client_id": client,
               "extra_data": {"easel_sim": {"fault": "die", "refuse_connections_ms": 5000}}}),
    ] {
        let prompt_id = queue_prompt(&sim, &body).await;
        let messages = ws.until_done(&prompt_id).await;
        assert!(
            messages
                .iter()
                .any(|message| message["type"] == "execution_success"),
            "{:?}",
            kinds(&messages)
        );
    }
    assert!(!sim.is_finished(), "the simulator is still running");
    assert_eq!(get(&sim, "/prompt").await.status, 200);
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn injected_errors_per_request_and_by_config() {
    let recording = fixture("04_errors.json");
    let expected_error = recorded(&recording["runtime_error_ws"])
        .into_iter()
        .find(|message| message["type"] == "execution_error")
        .expect("error");
    let sim = sim().await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;

    // A marker in the prompt text: a runtime error at the sampler.
    let prompt_id = queue_prompt(
        &sim,
        &json!({"prompt": txt2img(1, "a cat [[sim:error]]", 64, 64, 3), "client_id": client}),
    )
    .await;
    let messages = ws.until_done(&prompt_id).await;
    let kinds_seen = kinds(&messages);
    assert_eq!(
        &kinds_seen[kinds_seen.len() - 3..],
        ["execution_error", "status 0", "executing null"]
    );
    let mut error = error_of(&messages).clone();
    let mut expected_error = expected_error.clone();
    // current_inputs names the failing node's own inputs.
    error["data"]["current_inputs"] = json!({});
    expected_error["data"]["current_inputs"] = json!({});
    assert_same_shape(&error, &expected_error, "execution_error");
    let error = error_of(&messages);
    assert_eq!(error["data"]["node_type"], "KSampler");
    assert_eq!(error["data"]["exception_type"], "RuntimeError");

    // extra_data: out of memory at step 2 of the sampler.
    let body = json!({"prompt": txt2img(2, "a dog", 64, 64, 3), "client_id": client, "extra_data": {"easel_sim": {"fault": "oom", "step": 2}}});
    let prompt_id = queue_prompt(&sim, &body).await;
    let messages = ws.until_done(&prompt_id).await;
    let progress = messages
        .iter()
        .filter(|message| message["type"] == "progress")
        .count();
    assert_eq!(progress, 2);
    let error = error_of(&messages);
    assert_eq!(error["data"]["exception_type"], "torch.OutOfMemoryError");
    assert!(
        error["data"]["exception_message"]
            .as_str()
            .is_some_and(|text| text.starts_with("Allocation on device"))
    );
    let history = get(&sim, &format!("/history/{prompt_id}")).await.json();
    assert_eq!(history[&prompt_id]["status"]["status_str"], "error");
    assert_eq!(
        history[&prompt_id]["status"]["messages"][2][0],
        "execution_error"
    );

    // A targeted node on a weight-free graph.
    let body = json!({"prompt": simple_graph(7, "fault_node"), "client_id": client, "extra_data": {"easel_sim": {"fault": "error", "node": "9"}}});
    let prompt_id = queue_prompt(&sim, &body).await;
    let messages = ws.until_done(&prompt_id).await;
    assert_eq!(error_of(&messages)["data"]["node_id"], "9");
    assert_eq!(error_of(&messages)["data"]["executed"], json!(["1"]));
    sim.shutdown().await.expect("shutdown");

    // By configuration: every prompt fails with OOM.
    let sim = sim_with(SimConfig {
        fault: Some(FaultKind::Oom),
        ..SimConfig::with_request_faults()
    })
    .await;
    let mut ws = Ws::connect(&sim, &client).await;
    let prompt_id = queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(8, "cfg_oom"), "client_id": client}),
    )
    .await;
    let messages = ws.until_done(&prompt_id).await;
    assert_eq!(
        error_of(&messages)["data"]["exception_type"],
        "torch.OutOfMemoryError"
    );
    sim.shutdown().await.expect("shutdown");
}

async fn assert_dies_abruptly(sim: easel_comfy_sim::SimHandle, mut ws: Ws, mut passive: Ws) {
    let address = sim.addr;
    loop {
        match ws.next().await {
            Incoming::Text(_) | Incoming::Binary(_) => continue,
            Incoming::Abrupt => break,
            Incoming::Closed => panic!("a dying server sends no close frame"),
        }
    }
    loop {
        match passive.next().await {
            Incoming::Text(_) | Incoming::Binary(_) => continue,
            Incoming::Abrupt => break,
            Incoming::Closed => panic!("a dying server sends no close frame"),
        }
    }
    sim.join().await.expect("stopped");
    assert_refused(address).await;
    let error = http()
        .get(format!("http://{address}/queue"))
        .send()
        .await
        .expect_err("refused");
    assert!(error.is_connect(), "{error}");
}

#[tokio::test]
async fn die_marker_drops_sockets_then_refuses() {
    let sim = sim().await;
    let client = client_id();
    let ws = Ws::connect(&sim, &client).await;
    let passive = Ws::connect(&sim, &client_id()).await;
    queue_prompt(&sim, &json!({"prompt": txt2img(5, "[[sim:die]] [[sim:step=2]]", 64, 64, 5), "client_id": client})).await;
    assert_dies_abruptly(sim, ws, passive).await;
}

#[tokio::test]
async fn die_after_prompts_and_at_step() {
    let sim = sim_with(SimConfig {
        die_after_prompts: Some(1),
        ..SimConfig::with_request_faults()
    })
    .await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let passive = Ws::connect(&sim, &client_id()).await;
    let first = queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(1, "survives"), "client_id": client}),
    )
    .await;
    ws.until_done(&first).await;
    queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(2, "dies"), "client_id": client}),
    )
    .await;
    assert_dies_abruptly(sim, ws, passive).await;

    let sim = sim_with(SimConfig {
        die_at_step: Some(3),
        ..SimConfig::with_request_faults()
    })
    .await;
    let mut ws = Ws::connect(&sim, &client).await;
    let passive = Ws::connect(&sim, &client_id()).await;
    queue_prompt(
        &sim,
        &json!({"prompt": txt2img(9, "x", 64, 64, 10), "client_id": client}),
    )
    .await;
    let seen = ws
        .until(|message| message["type"] == "progress" && message["data"]["value"] == 3)
        .await;
    assert!(
        seen.iter()
            .any(|message| message["type"] == "execution_start")
    );
    assert_dies_abruptly(sim, ws, passive).await;
}

#[tokio::test]
async fn kill_mid_run_then_restart_keeps_files() {
    let data = tempfile::tempdir().expect("tempdir");
    let (output, input) = (data.path().join("output"), data.path().join("input"));
    let config = SimConfig {
        output_dir: Some(output.clone()),
        input_dir: Some(input.clone()),
        ..SimConfig::with_request_faults()
    };
    let sim = sim_with(config.clone()).await;
    let client = client_id();
    let mut ws = Ws::connect(&sim, &client).await;
    let done = queue_prompt(
        &sim,
        &json!({"prompt": simple_graph(1, "proto_success"), "client_id": client}),
    )
    .await;
    ws.until_done(&done).await;
    let body = json!({"prompt": txt2img(1, "slow", 64, 64, 50), "client_id": client, "extra_data": {"easel_sim": {"step_delay_ms": 50}}});
    let killed = queue_prompt(&sim, &body).await;
    ws.until(|message| message["type"] == "progress").await;
    let address = sim.addr;
    let temp_holder = tokio::spawn(async move {
        sim.kill().await.expect("kill");
    });
    loop {
        match ws.next().await {
            Incoming::Abrupt => break,
            Incoming::Closed => panic!("close frame on kill"),
            _ => {}
        }
    }
    temp_holder.await.expect("killed");
    assert_refused(address).await;
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{address}/ws"))
            .await
            .is_err()
    );

    // Restart on the same directories: history is gone, files and counters remain.
    assert!(output.join("proto_success_00001_.png").is_file());
    let sim = sim_with(config).await;
    assert_eq!(get(&sim, "/history").await.json(), json!({}));
    assert_eq!(
        get(&sim, &format!("/history/{killed}")).await.json(),
        json!({})
    );
    let mut ws = Ws::connect(&sim, &client).await;
    let reply = post_json(
        &sim,
        "/prompt",
        &json!({"prompt": simple_graph(2, "proto_success"), "client_id": client}),
    )
    .await;
    assert_eq!(reply.json()["number"], 0, "numbers restart at 0");
    let prompt_id = reply.json()["prompt_id"].as_str().expect("id").to_owned();
    let messages = ws.until_done(&prompt_id).await;
    let executed = messages
        .iter()
        .find(|message| message["type"] == "executed")
        .expect("executed");
    assert_eq!(
        executed["data"]["output"]["images"][0]["filename"],
        "proto_success_00002_.png"
    );
    assert_eq!(
        view_output(&sim, "proto_success_00001_.png").await.status,
        200
    );
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn refusing_connections_and_slow_responses() {
    let sim = sim().await;
    let started = Instant::now();
    let reply = send(
        http()
            .get(format!("{}/queue", sim.base_url()))
            .header(easel_comfy_sim::DELAY_HEADER, "300"),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));

    let body = json!({"prompt": simple_graph(1, "refuse"), "extra_data": {"easel_sim": {"refuse_connections_ms": 400}}});
    let reply = post_json(&sim, "/prompt", &body).await;
    assert_eq!(reply.status, 200);
    // The listener closes shortly after the response: wait for the refusal, then for recovery.
    let deadline = Instant::now() + DEADLINE;
    let mut refused = false;
    while Instant::now() < deadline {
        match tokio::net::TcpStream::connect(sim.addr).await {
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::task::yield_now().await,
        }
    }
    assert!(refused, "connections were never refused");
    let mut recovered = false;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(sim.addr).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(recovered, "the simulator listens again");
    assert_eq!(get(&sim, "/prompt").await.status, 200);
    sim.shutdown().await.expect("shutdown");

    let sim = sim_with(SimConfig {
        refuse_connections: true,
        ..SimConfig::with_request_faults()
    })
    .await;
    assert_refused(sim.addr).await;
    sim.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn binary_prints_its_address_and_exits_when_dying() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_easel-comfy-sim"))
        .args(["--listen", "127.0.0.1:0", "--die-after-prompts", "0"])
        .env("EASEL_SIM_STEP_DELAY_MS", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn binary");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        line
    })
    .await
    .expect("line");
    let address = line
        .trim()
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    let reply = send(http().get(format!("http://{address}/system_stats"))).await;
    assert_eq!(reply.json()["system"]["comfyui_version"], "0.3.64");
    let reply = send(
        http()
            .post(format!("http://{address}/prompt"))
            .json(&json!({"prompt": simple_graph(1, "bin")})),
    )
    .await;
    assert_eq!(reply.status, 200);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(!status.success(), "dying exits the process");
}
