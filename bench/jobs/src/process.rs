//! The `easel-jobs` binary as a child process on its own PostgreSQL database and Redis prefix,
//! with what the benchmarks read from outside: readiness, resident memory, gRPC channels.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use easel_proto::account::v1::TierLimits;
use easel_proto::auth::v1::Principal;
use easel_test_support::{ServiceProcess, TestDatabase, TestRedis};
use tonic::transport::{Channel, Endpoint};

/// A running jobs process and the database and Redis prefix it owns.
pub struct JobsProcess {
    /// The process.
    pub process: ServiceProcess,
    _database: TestDatabase,
    _redis: TestRedis,
}

/// The `easel-jobs` binary next to this benchmark (same profile), built first if missing. Build
/// both together (`cargo build --release -p easel-jobs -p easel-bench-jobs`) so it is current.
fn binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("the benchmark has no directory")?;
    let path = dir.join("easel-jobs");
    if path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = std::process::Command::new(cargo);
    command.args([
        "build",
        "--quiet",
        "-p",
        "easel-jobs",
        "--bin",
        "easel-jobs",
    ]);
    if dir.file_name().is_some_and(|name| name == "release") {
        command.arg("--release");
    }
    if !command.status()?.success() {
        bail!("building easel-jobs failed");
    }
    Ok(path)
}

impl JobsProcess {
    /// Starts the binary with `role` and `extra` settings and waits until `/readyz` answers.
    pub async fn start(role: &str, extra: &[(&str, &str)]) -> anyhow::Result<JobsProcess> {
        let database = TestDatabase::postgres().await;
        let redis = TestRedis::new();
        let mut variables = vec![
            ("EASEL_DATABASE_URL", database.url.as_str()),
            ("EASEL_REDIS_URL", redis.url.as_str()),
            ("EASEL_REDIS_PREFIX", redis.prefix.as_str()),
            ("EASEL_JOBS_ROLE", role),
            // Nothing listens there: the API never calls them, workers wait on an empty queue.
            ("EASEL_BRIDGE_URL", "http://127.0.0.1:9"),
            ("EASEL_STORAGE_URL", "http://127.0.0.1:9"),
            ("EASEL_WORKER_CONCURRENCY", "4"),
        ];
        variables.extend_from_slice(extra);
        let process = ServiceProcess::spawn(&binary()?, &variables).await;
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let ready = http
                .get(format!("{}/readyz", process.admin_url()))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the jobs process never became ready");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(JobsProcess {
            process,
            _database: database,
            _redis: redis,
        })
    }

    /// The process's resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.process.pid())
    }

    /// A channel on a connection of its own (HTTP/2 caps streams per connection).
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        Ok(Endpoint::from_shared(self.process.grpc_url())?
            .tcp_nodelay(true)
            .connect()
            .await?)
    }
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A caller as the gateway passes it: a user of a paid tier whose quotas are checked but not
/// reached.
pub fn principal(user_id: String) -> Principal {
    Principal {
        user_id,
        limits: Some(TierLimits {
            concurrent_jobs: 1_000_000,
            jobs_per_day: 10_000_000,
            max_pixels: 1024 * 1024,
            max_steps: 50,
            max_batch_size: 4,
            queue_priority: 1,
            artifact_retention_days: 7,
            ..TierLimits::default()
        }),
        ..Principal::default()
    }
}

/// The `p` quantile of sorted values.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Milliseconds, for printing.
pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}
