//! Benchmarks of `easel-comfy-bridge` against in-process ComfyUI simulators; prints numbers.
//!
//! 1. Overhead: the same text-to-image graph run through the bridge (RunWorkflow until
//!    `completed`, image bytes included) and posted to the simulator directly (POST /prompt,
//!    wait for the final `executing` on the WebSocket, GET /view), with zero simulated delay.
//! 2. Utilization: 4 simulators at 200 ms per prompt, 400 prompts through the bridge; each
//!    backend's busy fraction from its own history timestamps, and the total throughput against
//!    the 20 prompts/s that 4 × 200 ms allows.
//!
//! `cargo run --release -p easel-bench-bridge [-- RUNS]` (RUNS for part 1, default 300).

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use easel_comfy_bridge::{BridgeConfig, Config};
use easel_comfy_sim::SimConfig;
use easel_proto::bridge::v1::bridge_service_client::BridgeServiceClient;
use easel_proto::bridge::v1::run_workflow_request::Workflow;
use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{ListBackendsRequest, RunWorkflowRequest};
use easel_proto::jobs::v1::TextToImage;
use easel_runtime::Shutdown;
use easel_runtime::config::{ServerConfig, TelemetryConfig};
use easel_runtime::service::Listeners;
use futures::StreamExt;
use serde_json::{Value, json};
use tonic::transport::Channel;

type Client = BridgeServiceClient<Channel>;

fn request(run_id: String, prompt: String, steps: u32) -> RunWorkflowRequest {
    RunWorkflowRequest {
        run_id,
        workflow: Some(Workflow::TextToImage(TextToImage {
            prompt,
            width: 64,
            height: 64,
            steps,
            checkpoint: "sd_xl_base_1.0.safetensors".to_string(),
            ..TextToImage::default()
        })),
        timeout: None,
        exclude_backends: vec![],
        ..Default::default()
    }
}

async fn start_bridge(urls: &[String], max_in_flight: u32) -> anyhow::Result<(Client, Shutdown)> {
    let mut bridge = BridgeConfig::for_urls(urls).map_err(anyhow::Error::msg)?;
    bridge.max_in_flight = max_in_flight;
    bridge.queue_timeout = Duration::from_secs(120);
    bridge.health_interval = Duration::from_millis(200);
    let listeners = Listeners::ephemeral().await?;
    let grpc = listeners.grpc_addr()?;
    let shutdown = Shutdown::new(Duration::from_secs(2));
    let mut server = ServerConfig::ephemeral();
    server.request_timeout = Duration::from_secs(300);
    let config = Config {
        server,
        telemetry: TelemetryConfig::quiet(easel_comfy_bridge::SERVICE_NAME),
        bridge,
    };
    tokio::spawn(easel_comfy_bridge::run(config, listeners, shutdown.clone()));
    let channel = Channel::from_shared(format!("http://{grpc}"))?.connect_lazy();
    let mut client = BridgeServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let started = Instant::now();
    loop {
        if let Ok(list) = client.list_backends(ListBackendsRequest {}).await
            && list.get_ref().backends.iter().all(|b| b.healthy)
        {
            return Ok((client, shutdown));
        }
        if started.elapsed() > Duration::from_secs(10) {
            bail!("backends never became healthy");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn through_bridge(client: &mut Client, request: RunWorkflowRequest) -> anyhow::Result<()> {
    let mut stream = client.run_workflow(request).await?.into_inner();
    while let Some(response) = stream.message().await? {
        match response.event {
            Some(Event::Completed(_)) => return Ok(()),
            Some(Event::Failed(failed)) => bail!("run failed: {failed:?}"),
            _ => {}
        }
    }
    bail!("stream ended without a verdict")
}

/// The same graph the bridge's template builds, posted straight to ComfyUI.
async fn direct(
    http: &reqwest::Client,
    ws: &mut (
             impl futures::Stream<
        Item = Result<
            tokio_tungstenite::tungstenite::Message,
            tokio_tungstenite::tungstenite::Error,
        >,
    > + Unpin
         ),
    base: &str,
    client_id: &str,
    graph: &Value,
) -> anyhow::Result<()> {
    let prompt_id = uuid::Uuid::new_v4().to_string();
    let body = json!({"prompt": graph, "client_id": client_id, "prompt_id": prompt_id});
    let response = http
        .post(format!("{base}/prompt"))
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        bail!("POST /prompt: {}", response.status());
    }
    let mut filename = None;
    while let Some(message) = ws.next().await {
        let text = match message? {
            tokio_tungstenite::tungstenite::Message::Text(text) => text,
            _ => continue,
        };
        let value: Value = serde_json::from_str(text.as_str())?;
        let data = &value["data"];
        if data["prompt_id"] != prompt_id.as_str() {
            continue;
        }
        match value["type"].as_str() {
            Some("executed") => {
                filename = data["output"]["images"][0]["filename"]
                    .as_str()
                    .map(str::to_string);
            }
            Some("executing") if data["node"].is_null() => break,
            _ => {}
        }
    }
    let filename = filename.context("no output")?;
    let bytes = http
        .get(format!(
            "{base}/view?filename={filename}&subfolder=&type=output"
        ))
        .send()
        .await?
        .bytes()
        .await?;
    if bytes.is_empty() {
        bail!("empty image");
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

async fn overhead(runs: usize) -> anyhow::Result<()> {
    let sim = easel_comfy_sim::spawn(SimConfig::default()).await?;
    let (mut client, shutdown) = start_bridge(&[sim.base_url()], 2).await?;
    let http = reqwest::Client::new();
    let client_id = uuid::Uuid::new_v4().to_string();
    let (mut ws, _) = tokio_tungstenite::connect_async(sim.ws_url(&client_id)).await?;
    let mut bridged = Vec::with_capacity(runs);
    let mut posted = Vec::with_capacity(runs);
    // Warm up both paths, then alternate so drift affects both alike.
    for index in 0..runs + 10 {
        let prompt = format!("overhead {index}");
        let started = Instant::now();
        through_bridge(
            &mut client,
            request(format!("bench-{index}"), prompt.clone(), 1),
        )
        .await?;
        let bridge_time = started.elapsed();
        let graph = easel_comfy_bridge::template::text_to_image(
            &TextToImage {
                prompt: format!("{prompt} direct"),
                width: 64,
                height: 64,
                steps: 1,
                ..TextToImage::default()
            },
            Some("sd_xl_base_1.0.safetensors"),
            rand_seed,
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .graph;
        let started = Instant::now();
        direct(&http, &mut ws, &sim.base_url(), &client_id, &graph).await?;
        let direct_time = started.elapsed();
        if index >= 10 {
            bridged.push(bridge_time);
            posted.push(direct_time);
        }
    }
    bridged.sort();
    posted.sort();
    let (bm, bp) = (percentile(&bridged, 0.5), percentile(&bridged, 0.99));
    let (dm, dp) = (percentile(&posted, 0.5), percentile(&posted, 0.99));
    println!("== bridge overhead per run ({runs} runs, 64x64, 1 step, zero simulated delay)");
    println!(
        "through the bridge : median {:7.3} ms   p99 {:7.3} ms",
        ms(bm),
        ms(bp)
    );
    println!(
        "direct to ComfyUI  : median {:7.3} ms   p99 {:7.3} ms",
        ms(dm),
        ms(dp)
    );
    println!(
        "added by the bridge: median {:7.3} ms   p99 {:7.3} ms",
        ms(bm) - ms(dm),
        ms(bp) - ms(dp)
    );
    shutdown.trigger();
    Ok(())
}

fn rand_seed() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32)
}

async fn utilization() -> anyhow::Result<()> {
    const BACKENDS: usize = 4;
    const PROMPTS: usize = 400;
    const STEPS: u32 = 10;
    const CALLERS: usize = 24;
    let mut sims = Vec::new();
    for _ in 0..BACKENDS {
        sims.push(
            easel_comfy_sim::spawn(SimConfig {
                // 10 steps × 20 ms = 200 ms per prompt.
                step_delay: Duration::from_millis(20),
                ..SimConfig::default()
            })
            .await?,
        );
    }
    let urls: Vec<String> = sims.iter().map(|sim| sim.base_url()).collect();
    let (client, shutdown) = start_bridge(&urls, 2).await?;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut callers = Vec::new();
    for _ in 0..CALLERS {
        let mut client = client.clone();
        let next = next.clone();
        callers.push(tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if index >= PROMPTS {
                    return Ok::<(), anyhow::Error>(());
                }
                let request = request(
                    format!("util-{index}"),
                    format!("utilization {index}"),
                    STEPS,
                );
                through_bridge(&mut client, request).await?;
            }
        }));
    }
    for caller in callers {
        caller.await??;
    }
    let wall = started.elapsed();
    println!(
        "== utilization: {BACKENDS} backends x 200 ms per prompt, {PROMPTS} prompts, {CALLERS} callers"
    );
    let http = reqwest::Client::new();
    for sim in &sims {
        let history: Value = http
            .get(format!("{}/history?max_items=10000", sim.base_url()))
            .send()
            .await?
            .json()
            .await?;
        let mut spans = Vec::new();
        for entry in history.as_object().into_iter().flat_map(|map| map.values()) {
            let messages = entry["status"]["messages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let at = |kind: &str| {
                messages
                    .iter()
                    .find(|m| m[0] == kind)
                    .and_then(|m| m[1]["timestamp"].as_u64())
            };
            if let (Some(start), Some(end)) = (at("execution_start"), at("execution_success")) {
                spans.push((start, end));
            }
        }
        let first = spans.iter().map(|s| s.0).min().unwrap_or(0);
        let last = spans.iter().map(|s| s.1).max().unwrap_or(0);
        let busy: u64 = spans.iter().map(|s| s.1 - s.0).sum();
        let window = (last - first).max(1);
        println!(
            "{}: {:3} prompts, busy {:6} ms of {:6} ms = {:.3}",
            sim.addr,
            spans.len(),
            busy,
            window,
            busy as f64 / window as f64
        );
    }
    println!(
        "throughput: {:.2} prompts/s in {:.2} s (limit {:.0} prompts/s)",
        PROMPTS as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        BACKENDS as f64 * 5.0
    );
    shutdown.trigger();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let runs = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(300);
    overhead(runs).await?;
    utilization().await?;
    Ok(())
}
