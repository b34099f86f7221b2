//! `easel up`: the whole platform in one process, on its embedded defaults.
//!
//! All five services run here, still talking gRPC to each other (so the embedded platform
//! exercises the same paths as production): the internal ones over Unix sockets in an
//! owner-only directory under the data directory, the gateway on its public TCP port, with SQLite
//! databases and a local artifact directory under the data directory, the in-process queue
//! unless `REDIS_URL` is set, and the ComfyUI simulator unless `EASEL_COMFYUI_URLS` is set.
//!
//! The assembly is `easel_platform`'s ([`Settings::embedded`]): each service reads its
//! configuration with the same [`Env`] reader as its own binary, from the process environment
//! overlaid with the embedded values. So every `EASEL_*` variable a service documents also
//! works under `easel up`, except the ones `up` decides (ports, data paths, the URLs between
//! the services).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use easel_platform::{Platform, Settings};
use easel_runtime::config::{Env, LogFormat, TelemetryConfig};
use easel_runtime::{Shutdown, telemetry};

use crate::output;

/// Options of `easel up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The gateway's address: gRPC, gRPC-web and REST on one port.
    #[arg(long, env = "EASEL_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where databases, artifacts and the simulator's files live.
    #[arg(long, env = "EASEL_DATA_DIR", default_value = "./.easel")]
    pub data_dir: PathBuf,
    /// How long Ctrl-C waits for running work to finish.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
}

/// Runs the platform until Ctrl-C / SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let process_env: HashMap<String, String> = std::env::vars().collect();
    let (settings, data_dir) =
        Settings::embedded(&args.data_dir, args.listen, args.grace, process_env.clone())?;
    let telemetry_guard = telemetry::init(&telemetry_config(process_env)?)?;
    if let Err(error) = easel_runtime::transport::raise_descriptor_limit() {
        tracing::warn!(%error, "could not raise the open descriptor limit");
    }
    let redis = settings.env.contains_key("EASEL_REDIS_URL");
    let platform = Platform::start(settings, Shutdown::on_signals(args.grace)).await?;
    print_banner(&platform, &data_dir, redis);
    let result = platform.wait().await;
    telemetry_guard.shutdown().await;
    result?;
    output::line("easel stopped");
    Ok(())
}

/// `up` is for people at a terminal unless they asked for JSON.
fn telemetry_config(process_env: HashMap<String, String>) -> anyhow::Result<TelemetryConfig> {
    let mut config = {
        let mut env = Env::from_pairs(process_env.clone());
        let config = TelemetryConfig::from_env(&mut env, "easel");
        env.finish()?;
        config
    };
    if !process_env.contains_key("EASEL_LOG_FORMAT") {
        config.log_format = LogFormat::Pretty;
    }
    if !process_env.contains_key("EASEL_LOG") && !process_env.contains_key("RUST_LOG") {
        config.log_filter = "warn,easel=info".to_string();
    }
    Ok(config)
}

fn print_banner(platform: &Platform, data_dir: &Path, redis: bool) {
    let gateway_url = platform
        .grpc_url(easel_platform::Service::Gateway)
        .unwrap_or_default();
    let comfyui_urls = platform.comfyui_urls();
    output::line("easel is up");
    output::line(format!(
        "  gateway     {gateway_url}  (gRPC, gRPC-web and REST)"
    ));
    output::line(format!("  REST        {gateway_url}/api/v1/jobs"));
    output::line(format!("  OpenAPI     {gateway_url}/openapi.json"));
    output::line(format!("  ComfyUI     {comfyui_urls}"));
    output::line(format!(
        "  queue       {}",
        if redis { "Redis" } else { "in-process" }
    ));
    output::line(format!("  data        {}", data_dir.display()));
    let account = platform.dev_account();
    if let Some(account) = account {
        output::line(format!("  user        {}", account.email));
    }
    match account.and_then(|account| account.api_key.as_ref()) {
        Some(key) => output::line(format!("  API key     {key}")),
        None => {
            output::line("  API key     (created on first start; set EASEL_DEV_API_KEY to fix one)")
        }
    }
    output::line("");
    output::line(format!(
        "  try: curl -s -H 'X-API-Key: <key>' -H 'Content-Type: application/json' \\\n         -d '{{\"prompt\": \"A sunset\", \"width\": 512, \"height\": 512}}' {gateway_url}/api/v1/jobs"
    ));
    output::line("  Ctrl-C stops everything; a restart keeps jobs and artifacts.");
}
