//! Idle memory of the platform, measured on the release binaries:
//!
//! 1. each service binary started on its production-like configuration (PostgreSQL, Redis,
//!    the simulator as its ComfyUI), left idle, its resident set read from `/proc/<pid>/status`
//!    (target ≤ 30 MB each);
//! 2. `easel up`, all five services and the simulator in one process on the embedded defaults
//!    (target ≤ 80 MB).
//!
//! `cargo run --release -p easel-bench-platform`. Builds the binaries it measures first.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use easel_test_support::{ServiceProcess, TestDatabase, TestRedis};
use tokio::io::AsyncBufReadExt;

/// How long a process idles before it is measured: long enough for start-up work (migrations,
/// first health checks, pool warm-up) to settle.
const IDLE: Duration = Duration::from_secs(3);

/// The release binaries sit next to this one.
fn binary(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no binary directory")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build.args(["build", "--quiet", "-p", package, "--bin", name]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    if !build.status()?.success() {
        bail!("building {name} failed");
    }
    Ok(dir.join(name))
}

/// Resident and peak resident memory of `pid`, in KiB.
fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|value| value.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("VmRSS:"), field("VmHWM:")))
}

fn report(name: &str, pid: u32, target_mib: u64) -> anyhow::Result<bool> {
    let (rss, peak) = memory_kib(pid)?;
    let ok = rss <= target_mib * 1024;
    println!(
        "{name:<14} idle RSS {:>6.1} MiB (peak {:>6.1} MiB)  target ≤ {target_mib} MiB  {}",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0,
        if ok { "ok" } else { "OVER" }
    );
    Ok(ok)
}

/// Starts the simulator binary and returns it with its URL.
async fn simulator(dir: &Path) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(binary("easel-comfy-sim", "easel-comfy-sim")?)
        .args(["--listen", "127.0.0.1:0", "--output-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    while let Some(line) = lines.next_line().await? {
        if let Some(address) = line.strip_prefix("listening on ") {
            let url = format!("http://{}", address.trim());
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return Ok((child, url));
        }
    }
    bail!("the simulator did not report its address")
}

async fn services() -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let (_sim, sim_url) = simulator(dir.path()).await?;
    let (auth_db, jobs_db, storage_db) = tokio::join!(
        TestDatabase::postgres(),
        TestDatabase::postgres(),
        TestDatabase::postgres()
    );
    let redis = TestRedis::new();
    let artifacts = dir.path().join("artifacts");
    let artifacts_url = format!("file://{}", artifacts.display());
    let quiet = [("EASEL_ENVIRONMENT", "test")];
    let with = |extra: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        quiet
            .iter()
            .map(|(name, value)| (*name, (*value).to_string()))
            .chain(extra.iter().cloned())
            .collect()
    };
    let spawn = |package: &'static str, variables: Vec<(&'static str, String)>| async move {
        let path = binary(package, package)?;
        let borrowed: Vec<(&str, &str)> = variables
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        anyhow::Ok(ServiceProcess::spawn(&path, &borrowed).await)
    };
    let auth = spawn(
        "easel-auth",
        with(&[
            ("EASEL_DATABASE_URL", auth_db.url.clone()),
            ("EASEL_REDIS_URL", redis.url.clone()),
            ("EASEL_REDIS_PREFIX", redis.prefix.clone()),
        ]),
    )
    .await?;
    let storage = spawn(
        "easel-storage",
        with(&[
            ("EASEL_DATABASE_URL", storage_db.url.clone()),
            ("EASEL_STORAGE_URL", artifacts_url),
            (
                "EASEL_SIGNING_KEY",
                "bench-signing-key-0123456789abcdef0123".into(),
            ),
        ]),
    )
    .await?;
    let bridge = spawn(
        "easel-comfy-bridge",
        with(&[("EASEL_COMFYUI_URLS", sim_url)]),
    )
    .await?;
    let jobs = spawn(
        "easel-jobs",
        with(&[
            ("EASEL_DATABASE_URL", jobs_db.url.clone()),
            ("EASEL_REDIS_URL", redis.url.clone()),
            ("EASEL_REDIS_PREFIX", redis.prefix.clone()),
            ("EASEL_BRIDGE_URL", bridge.grpc_url()),
            ("EASEL_STORAGE_URL", storage.grpc_url()),
            ("EASEL_AUTH_URL", auth.grpc_url()),
        ]),
    )
    .await?;
    let gateway = spawn(
        "easel-gateway",
        with(&[
            ("EASEL_AUTH_URL", auth.grpc_url()),
            ("EASEL_JOBS_URL", jobs.grpc_url()),
            ("EASEL_BRIDGE_URL", bridge.grpc_url()),
            ("EASEL_STORAGE_HTTP_URL", storage.admin_url()),
            ("EASEL_REDIS_URL", redis.url.clone()),
            ("EASEL_REDIS_PREFIX", redis.prefix.clone()),
        ]),
    )
    .await?;
    tokio::time::sleep(IDLE).await;
    let mut all_ok = true;
    for (name, process) in [
        ("gateway", &gateway),
        ("auth", &auth),
        ("jobs", &jobs),
        ("storage", &storage),
        ("comfy-bridge", &bridge),
    ] {
        all_ok &= report(name, process.pid(), 30)?;
    }
    Ok(all_ok)
}

async fn easel_up() -> anyhow::Result<bool> {
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(binary("easel", "easel")?)
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env_remove("EASEL_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("EASEL_COMFYUI_URLS")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut up = false;
    while let Some(line) = lines.next_line().await? {
        if line.contains("Ctrl-C stops everything") {
            up = true;
            break;
        }
    }
    if !up {
        bail!("easel up did not start");
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::time::sleep(IDLE).await;
    let ok = report("easel up", child.id().context("no pid")?, 80)?;
    child.start_kill()?;
    Ok(ok)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    println!("idle memory, release binaries, after {IDLE:?} idle");
    let services_ok = Box::pin(services()).await?;
    let up_ok = easel_up().await?;
    println!(
        "summary: services {}, easel up {}",
        if services_ok {
            "within target"
        } else {
            "over target"
        },
        if up_ok {
            "within target"
        } else {
            "over target"
        }
    );
    Ok(())
}
