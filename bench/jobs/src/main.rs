//! Load generator for easel-jobs: jobs accepted per second on the submit path (PostgreSQL +
//! Redis Streams) and the resident memory of 10,000 concurrent watchers of running jobs.
//! Prints numbers; asserts nothing.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use easel_jobs::model::{Caller, SystemClock};
use easel_proto::account::v1::TierLimits;
use easel_proto::jobs::v1::{JobSpec, SubmitJobRequest, TextToImage, job_spec};
use easel_runtime::testing::{TestDatabase, TestRedis};
use easel_runtime::{Env, Shutdown};
use futures::StreamExt;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn request(index: usize) -> SubmitJobRequest {
    SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(TextToImage {
                prompt: format!("bench {index}"),
                width: 512,
                height: 512,
                ..Default::default()
            })),
        }),
        idempotency_key: format!("bench-{index}"),
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let database = TestDatabase::postgres().await;
    let redis = TestRedis::new();
    let mut env = Env::from_pairs([
        ("EASEL_DATABASE_URL", database.url.as_str()),
        ("EASEL_REDIS_URL", redis.url.as_str()),
        ("EASEL_REDIS_PREFIX", redis.prefix.as_str()),
        ("EASEL_JOBS_ROLE", "api"),
        ("EASEL_WORKER_CONCURRENCY", "8"),
    ]);
    let config = easel_jobs::Config::from_env(&mut env);
    env.finish()?;
    let shutdown = Shutdown::new(Duration::from_secs(2));
    let parts = easel_jobs::build(&config, Arc::new(SystemClock), &shutdown).await?;
    let jobs = parts.jobs;
    let caller = Caller {
        user_id: "usr_bench".into(),
        limits: TierLimits {
            queue_priority: 1,
            ..Default::default()
        },
    };

    // Submit throughput: 64 concurrent clients, each request with an idempotency key.
    let total = 4000;
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..total)
        .map(|index| {
            let jobs = jobs.clone();
            let caller = caller.clone();
            async move {
                jobs.submit(&caller, &request(index))
                    .await
                    .map(|(job, _)| job.id)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let ids: Vec<String> = results
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "submit: {total} jobs in {:.2}s = {:.0} jobs/s accepted (PostgreSQL + Redis, 64 concurrent, idempotency keys)",
        elapsed.as_secs_f64(),
        f64::from(u32::try_from(total)?) / elapsed.as_secs_f64()
    );

    // Watchers: 10,000 watches spread over 100 jobs, each past its snapshot.
    let before = rss_kib();
    let mut streams = Vec::with_capacity(10_000);
    let started = Instant::now();
    for index in 0..10_000 {
        let id = &ids[index % 100];
        let mut stream = easel_jobs::watch::watch(jobs.clone(), &caller, id, 1)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Nothing after seq 1 yet: the watcher is parked on the live feed.
        let _ = tokio::time::timeout(Duration::from_millis(0), stream.next()).await;
        streams.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "watchers: 10000 open in {:.2}s; RSS {} KiB -> {} KiB = {:.1} KiB per watcher; {} job channels, 1 Redis subscription",
        started.elapsed().as_secs_f64(),
        before,
        after,
        (after.saturating_sub(before)) as f64 / 10_000.0,
        jobs.hub.watched_jobs()
    );
    drop(streams);
    shutdown.trigger();
    Ok(())
}
