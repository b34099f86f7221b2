//! SubmitJob throughput and latency: many concurrent callers over a few HTTP/2 connections,
//! every request with its own idempotency key and a tier whose quotas are checked.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use easel_proto::jobs::internal::v1::SubmitJobRequest;
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_proto::jobs::v1::{self, JobSpec, TextToImage, job_spec};
use tonic::transport::Channel;

use crate::process::{JobsProcess, ms, percentile, principal};

/// Distinct users the requests come from.
const USERS: usize = 500;

/// One load run's settings.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Requests measured (after a warm-up of a tenth as many).
    pub requests: usize,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections they share.
    pub connections: usize,
}

fn request(run: &str, index: usize) -> SubmitJobRequest {
    SubmitJobRequest {
        caller: Some(principal(format!("usr_bench_{}", index % USERS))),
        request: Some(v1::SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::TextToImage(TextToImage {
                    prompt: format!("a lighthouse at dusk, variation {index}"),
                    width: 512,
                    height: 512,
                    steps: 20,
                    ..TextToImage::default()
                })),
                ..Default::default()
            }),
            idempotency_key: format!("{run}-{index}"),
            ..v1::SubmitJobRequest::default()
        }),
    }
}

struct Outcome {
    latencies: Vec<Duration>,
    errors: BTreeMap<String, usize>,
    elapsed: Duration,
}

async fn drive(clients: &[InternalJobServiceClient<Channel>], run: &str, load: Load) -> Outcome {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.concurrency);
    for worker in 0..load.concurrency {
        let mut client = clients[worker % clients.len()].clone();
        let next = next.clone();
        let run = run.to_string();
        let total = load.requests;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors: BTreeMap<String, usize> = BTreeMap::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return (latencies, errors);
                }
                let request = request(&run, index);
                let one = Instant::now();
                match client.submit_job(request).await {
                    Ok(_) => latencies.push(one.elapsed()),
                    Err(status) => *errors.entry(format!("{:?}", status.code())).or_default() += 1,
                }
            }
        }));
    }
    let mut latencies = Vec::with_capacity(load.requests);
    let mut errors = BTreeMap::new();
    for task in tasks {
        if let Ok((mine, failed)) = task.await {
            latencies.extend(mine);
            for (code, count) in failed {
                *errors.entry(code).or_default() += count;
            }
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Outcome {
        latencies,
        errors,
        elapsed,
    }
}

/// Runs the load against a fresh jobs process (API role) and prints the numbers.
pub async fn run(load: Load, extra: &[(&str, &str)]) -> anyhow::Result<()> {
    let jobs = JobsProcess::start("api", extra).await?;
    let mut clients = Vec::new();
    for _ in 0..load.connections {
        clients.push(InternalJobServiceClient::new(jobs.channel().await?));
    }
    let warm_up = Load {
        requests: (load.requests / 10).max(100),
        ..load
    };
    drive(&clients, "warm-up", warm_up).await;
    let outcome = drive(&clients, "measured", load).await;
    let accepted = outcome.latencies.len();
    println!(
        "== SubmitJob over gRPC: {} requests, {} in flight on {} connections, {USERS} users, idempotency keys, quotas checked",
        load.requests, load.concurrency, load.connections
    );
    println!(
        "accepted {accepted} in {:.2} s = {:.0} jobs/s   latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms   errors {:?}",
        outcome.elapsed.as_secs_f64(),
        accepted as f64 / outcome.elapsed.as_secs_f64(),
        ms(percentile(&outcome.latencies, 0.5)),
        ms(percentile(&outcome.latencies, 0.99)),
        ms(outcome.latencies.last().copied().unwrap_or_default()),
        outcome.errors,
    );
    println!(
        "jobs process RSS after the run: {:.1} MiB",
        jobs.rss_kib() as f64 / 1024.0
    );
    Ok(())
}
