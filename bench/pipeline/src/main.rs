//! End-to-end benchmarks of the job path (jobs → comfy-bridge → ComfyUI simulator, outputs to
//! storage) against posting the same graphs straight to the simulator; prints numbers.
//!
//! 1. `latency`: one job at a time, SubmitJob → WatchJob until SUCCEEDED (image stored), next to
//!    POST /prompt → WebSocket completion → GET /view; medians, p99 and the difference.
//! 2. `drain`: 200 trivial jobs on one backend against the backend's own rate (the same 200
//!    prompts posted straight to it with the same delays).
//! 3. `utilization`: 4 backends at 200 ms per prompt; each backend's busy fraction.
//!
//! `cargo run --release -p easel-bench-pipeline [-- [all|latency|drain|utilization] [RUNS]]`

#![allow(clippy::print_stdout)]

mod direct;
mod stack;

use std::time::{Duration, Instant};

use anyhow::bail;
use easel_comfy_sim::SimConfig;
use serde_json::Value;

use crate::direct::Direct;
use crate::stack::{
    Stack, now_ms, store, submit, text_to_image, through_bridge, times, until_succeeded,
};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Latency: fixed simulated work per prompt, one job at a time, both paths alternating.
async fn latency(runs: usize) -> anyhow::Result<()> {
    const STEPS: u32 = 4;
    const STEP_DELAY: Duration = Duration::from_millis(5);
    let stack = Stack::start(vec![SimConfig {
        step_delay: STEP_DELAY,
        ..SimConfig::default()
    }])
    .await?;
    let sim = &stack.sims[0];
    let mut direct = Direct::connect(sim.base_url(), |id| sim.ws_url(id)).await?;
    let mut client = stack.jobs.clone();
    let mut bridge = stack.bridge.clone();
    let mut through_jobs = Vec::with_capacity(runs);
    let mut straight = Vec::with_capacity(runs);
    let mut bridge_only = Vec::with_capacity(runs);
    let mut storage = stack.storage.clone();
    let mut store_only = Vec::with_capacity(runs);
    // Where the time goes: submit → accepted, → started by a worker, → ended, → seen ended.
    let mut phases: [Vec<i64>; 4] = Default::default();
    let warm_up = 20;
    for index in 0..runs + warm_up {
        let request = text_to_image(format!("latency {index}"), STEPS);
        let started = Instant::now();
        let submitted_at = now_ms();
        let job_id = submit(&mut client, request.clone()).await?;
        until_succeeded(&mut client, job_id.clone()).await?;
        let jobs_time = started.elapsed();
        let seen_at = now_ms();
        if index >= warm_up {
            let [created, begun, ended] = times(&mut client, job_id).await?;
            for (phase, value) in phases.iter_mut().zip([
                created - submitted_at,
                begun - created,
                ended - begun,
                seen_at - ended,
            ]) {
                phase.push(value);
            }
        }
        let request = text_to_image(format!("latency {index} direct"), STEPS);
        let started = Instant::now();
        let image = direct.run_one(&request).await?;
        let direct_time = started.elapsed();
        let started = Instant::now();
        store(&mut storage, image).await?;
        let store_time = started.elapsed();
        let request = text_to_image(format!("latency {index} bridge"), STEPS);
        let started = Instant::now();
        through_bridge(&mut bridge, request).await?;
        let bridge_time = started.elapsed();
        if index >= warm_up {
            through_jobs.push(jobs_time);
            straight.push(direct_time);
            bridge_only.push(bridge_time);
            store_only.push(store_time);
        }
    }
    through_jobs.sort();
    straight.sort();
    bridge_only.sort();
    store_only.sort();
    let (jobs_median, jobs_p99) = (
        percentile(&through_jobs, 0.5),
        percentile(&through_jobs, 0.99),
    );
    let (direct_median, direct_p99) = (percentile(&straight, 0.5), percentile(&straight, 0.99));
    println!(
        "== latency per job ({runs} runs, one at a time, 64x64, {STEPS} steps x {} ms simulated)",
        STEP_DELAY.as_millis()
    );
    println!(
        "jobs (submit -> SUCCEEDED, stored): median {:7.2} ms   p99 {:7.2} ms",
        ms(jobs_median),
        ms(jobs_p99)
    );
    println!(
        "direct to ComfyUI (post, ws, view) : median {:7.2} ms   p99 {:7.2} ms",
        ms(direct_median),
        ms(direct_p99)
    );
    println!(
        "comfy-bridge alone (RunWorkflow)   : median {:7.2} ms   p99 {:7.2} ms",
        ms(percentile(&bridge_only, 0.5)),
        ms(percentile(&bridge_only, 0.99))
    );
    println!(
        "storage alone (PutArtifact, 1 img) : median {:7.2} ms   p99 {:7.2} ms",
        ms(percentile(&store_only, 0.5)),
        ms(percentile(&store_only, 0.99))
    );
    println!(
        "added by easel                     : median {:7.2} ms   p99 {:7.2} ms",
        ms(jobs_median) - ms(direct_median),
        ms(jobs_p99) - ms(direct_p99)
    );
    let medians: Vec<i64> = phases
        .iter_mut()
        .map(|phase| {
            phase.sort_unstable();
            phase.get(phase.len() / 2).copied().unwrap_or_default()
        })
        .collect();
    println!(
        "jobs phases (median ms, clock ms-grained): accepted {} -> started {} -> ended {} -> seen {}",
        medians[0], medians[1], medians[2], medians[3]
    );
    Ok(())
}

/// Drain: 200 trivial jobs on one backend, against the same prompts posted straight to it.
async fn drain() -> anyhow::Result<()> {
    const JOBS: usize = 200;
    const STEPS: u32 = 2;
    const STEP_DELAY: Duration = Duration::from_millis(10);
    let stack = Stack::start(vec![SimConfig {
        step_delay: STEP_DELAY,
        ..SimConfig::default()
    }])
    .await?;
    let sim = &stack.sims[0];
    let mut direct = Direct::connect(sim.base_url(), |id| sim.ws_url(id)).await?;
    let requests: Vec<_> = (0..JOBS)
        .map(|index| text_to_image(format!("drain {index} direct"), STEPS))
        .collect();
    let direct_time = direct.drain(&requests).await?;

    let started = Instant::now();
    let mut submitted = Vec::with_capacity(JOBS);
    for index in 0..JOBS {
        let mut client = stack.jobs.clone();
        let request = text_to_image(format!("drain {index}"), STEPS);
        submitted.push(tokio::spawn(async move {
            let job_id = submit(&mut client, request).await?;
            until_succeeded(&mut client, job_id).await
        }));
    }
    for task in submitted {
        task.await??;
    }
    let jobs_time = started.elapsed();
    let direct_rate = JOBS as f64 / direct_time.as_secs_f64();
    let jobs_rate = JOBS as f64 / jobs_time.as_secs_f64();
    println!(
        "== drain: {JOBS} trivial jobs on one backend (64x64, {STEPS} steps x {} ms simulated)",
        STEP_DELAY.as_millis()
    );
    println!(
        "backend's own rate (posted straight): {direct_rate:6.1} prompts/s ({:.2} s)",
        direct_time.as_secs_f64()
    );
    println!(
        "through jobs (submit -> all SUCCEEDED): {jobs_rate:6.1} jobs/s ({:.2} s) = {:.1}% of the backend's rate",
        jobs_time.as_secs_f64(),
        jobs_rate / direct_rate * 100.0
    );
    Ok(())
}

/// Busy time over the window from the first start to the last end, from a simulator's history.
async fn busy_fraction(http: &reqwest::Client, base: &str) -> anyhow::Result<(usize, u64, u64)> {
    let history: Value = http
        .get(format!("{base}/history?max_items=10000"))
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
                .find(|message| message[0] == kind)
                .and_then(|message| message[1]["timestamp"].as_u64())
        };
        if let (Some(start), Some(end)) = (at("execution_start"), at("execution_success")) {
            spans.push((start, end));
        }
    }
    let first = spans.iter().map(|span| span.0).min().unwrap_or(0);
    let last = spans.iter().map(|span| span.1).max().unwrap_or(0);
    let busy = spans.iter().map(|span| span.1 - span.0).sum();
    Ok((spans.len(), busy, (last - first).max(1)))
}

/// Utilization: 4 backends at 200 ms per prompt, jobs submitted all at once.
async fn utilization() -> anyhow::Result<()> {
    const BACKENDS: usize = 4;
    const JOBS: usize = 400;
    const STEPS: u32 = 10;
    let mut sims = Vec::new();
    for _ in 0..BACKENDS {
        sims.push(SimConfig {
            // 10 steps x 20 ms = 200 ms per prompt.
            step_delay: Duration::from_millis(20),
            ..SimConfig::default()
        });
    }
    let stack = Stack::start(sims).await?;
    let started = Instant::now();
    let mut submitted = Vec::with_capacity(JOBS);
    for index in 0..JOBS {
        let mut client = stack.jobs.clone();
        let request = text_to_image(format!("utilization {index}"), STEPS);
        submitted.push(tokio::spawn(async move {
            let job_id = submit(&mut client, request).await?;
            until_succeeded(&mut client, job_id).await
        }));
    }
    for task in submitted {
        task.await??;
    }
    let wall = started.elapsed();
    println!("== utilization: {BACKENDS} backends x 200 ms per prompt, {JOBS} jobs through jobs");
    let http = reqwest::Client::new();
    let mut lowest = f64::MAX;
    for sim in &stack.sims {
        let (prompts, busy, window) = busy_fraction(&http, &sim.base_url()).await?;
        let fraction = busy as f64 / window as f64;
        lowest = lowest.min(fraction);
        println!(
            "{}: {prompts:3} prompts, busy {busy:6} ms of {window:6} ms = {:.1}%",
            sim.addr,
            fraction * 100.0
        );
    }
    println!(
        "least busy backend {:.1}%; throughput {:.2} jobs/s in {:.2} s (limit {:.0}/s)",
        lowest * 100.0,
        JOBS as f64 / wall.as_secs_f64(),
        wall.as_secs_f64(),
        BACKENDS as f64 * 5.0
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let mut which = "all".to_string();
    let mut runs = 200;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "all" | "latency" | "drain" | "utilization" => which = arg,
            number => match number.parse() {
                Ok(value) => runs = value,
                Err(_) => bail!("unknown argument {number}"),
            },
        }
    }
    let all = which == "all";
    if all || which == "latency" {
        latency(runs).await?;
    }
    if all || which == "drain" {
        drain().await?;
    }
    if all || which == "utilization" {
        utilization().await?;
    }
    Ok(())
}
