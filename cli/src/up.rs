//! `easel up`: the whole platform in one process, on its embedded defaults.
//!
//! All five services run here, still talking gRPC to each other (so the embedded platform
//! exercises the same paths as production): the internal ones over Unix sockets in an
//! owner-only directory under the data directory, the gateway on its public TCP port, with SQLite
//! databases and a local artifact directory under the data directory, the in-process queue
//! unless `REDIS_URL` is set, and the ComfyUI simulator unless `EASEL_COMFYUI_URLS` is set.
//!
//! Each service reads its configuration with the same [`Env`] reader as its own binary: the
//! process environment, overlaid with the embedded values below. So every `EASEL_*` variable a
//! service documents also works under `easel up`, except the ones `up` decides (ports, data
//! paths, the URLs between the services).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use easel_runtime::config::{Env, LogFormat, TelemetryConfig};
use easel_runtime::service::Listeners;
use easel_runtime::transport::Listener;
use easel_runtime::{Shutdown, telemetry};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::output;

mod simulator;

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

/// The development account `up` creates on first start.
const DEV_EMAIL: &str = "dev@easel.local";

/// Runs the platform until Ctrl-C / SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(&args.data_dir)?;
    let process_env: HashMap<String, String> = std::env::vars().collect();
    let telemetry_config = {
        let mut env = Env::from_pairs(process_env.clone());
        let mut config = TelemetryConfig::from_env(&mut env, "easel");
        // `up` is for people at a terminal unless they asked for JSON.
        if !process_env.contains_key("EASEL_LOG_FORMAT") {
            config.log_format = LogFormat::Pretty;
        }
        if !process_env.contains_key("EASEL_LOG") && !process_env.contains_key("RUST_LOG") {
            config.log_filter = "warn,easel=info".to_string();
        }
        env.finish()?;
        config
    };
    let telemetry_guard = telemetry::init(&telemetry_config)?;
    if let Err(error) = easel_runtime::transport::raise_descriptor_limit() {
        tracing::warn!(%error, "could not raise the open descriptor limit");
    }
    let shutdown = Shutdown::on_signals(args.grace);

    let redis_url = process_env
        .get("EASEL_REDIS_URL")
        .or_else(|| process_env.get("REDIS_URL"))
        .cloned();
    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();

    // ComfyUI: the user's, or the simulator.
    let comfyui_urls = match process_env.get("EASEL_COMFYUI_URLS") {
        Some(urls) if !urls.trim().is_empty() => urls.clone(),
        _ => {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let address = listener.local_addr()?;
            let sim_config = easel_comfy_sim::SimConfig {
                output_dir: Some(data_dir.join("comfyui")),
                ..easel_comfy_sim::SimConfig::default()
            };
            let token = shutdown.token().clone();
            // Supervised: a simulator that stops is restarted on the same address rather than
            // taking the platform down with it. Request fault markers stay off (the default):
            // they travel in users' prompts.
            tasks.spawn(async move {
                let result = simulator::supervise(sim_config, listener, token).await;
                ("comfyui simulator", result)
            });
            format!("http://{address}")
        }
    };

    // Bind every socket first, so each service knows where the others are. The internal
    // services listen on Unix sockets in an owner-only directory: no other local user can
    // reach them and pass a forged caller.
    let sockets = prepare_socket_dir(&data_dir)?;
    let internal = |name: &str| -> anyhow::Result<Listeners> {
        let path = sockets.join(format!("{name}.sock"));
        Ok(Listeners {
            grpc: Listener::bind_unix(&path)
                .with_context(|| format!("cannot listen on {}", path.display()))?,
            admin: std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| {
                    listener.set_nonblocking(true)?;
                    TcpListener::from_std(listener)
                })
                .context("cannot bind an admin port")?,
        })
    };
    let auth = internal("auth")?;
    let jobs = internal("jobs")?;
    let storage = internal("storage")?;
    let bridge = internal("comfy-bridge")?;
    let gateway = Listeners {
        grpc: TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?
            .into(),
        admin: TcpListener::bind("127.0.0.1:0").await?,
    };
    let url = |listeners: &Listeners| -> anyhow::Result<String> { Ok(listeners.grpc.url()?) };
    let (auth_url, jobs_url, storage_url, bridge_url) =
        (url(&auth)?, url(&jobs)?, url(&storage)?, url(&bridge)?);
    let gateway_url = format!("http://{}", gateway.grpc_addr()?);
    let storage_http = format!("http://{}", storage.admin_addr()?);
    let sqlite = |name: &str| format!("sqlite://{}?mode=rwc", data_dir.join(name).display());

    let mut common = vec![(
        "EASEL_SHUTDOWN_GRACE",
        humantime::format_duration(args.grace).to_string(),
    )];
    if let Some(redis) = &redis_url {
        common.push(("EASEL_REDIS_URL", redis.clone()));
    }
    let env_for = |overrides: Vec<(&str, String)>| {
        let mut variables = process_env.clone();
        // Variables `up` decides must not leak in from the shell for the wrong service.
        for name in [
            "EASEL_DATABASE_URL",
            "EASEL_STORAGE_URL",
            "EASEL_GRPC_LISTEN",
            "EASEL_ADMIN_LISTEN",
            // One process has no use for per-service certificates: its sockets are private.
            "EASEL_TLS_CA",
            "EASEL_TLS_CERT",
            "EASEL_TLS_KEY",
        ] {
            variables.remove(name);
        }
        variables.extend(common.iter().map(|(k, v)| (k.to_string(), v.clone())));
        variables.extend(overrides.into_iter().map(|(k, v)| (k.to_string(), v)));
        Env::from_pairs(variables)
    };

    let signing_key = storage_signing_key(&data_dir)?;
    let mut auth_env = env_for(vec![("EASEL_DATABASE_URL", sqlite("auth.db"))]);
    let mut storage_env = env_for(vec![
        ("EASEL_DATABASE_URL", sqlite("storage.db")),
        (
            "EASEL_STORAGE_URL",
            format!("file://{}", data_dir.join("artifacts").display()),
        ),
        ("EASEL_SIGNING_KEY", signing_key),
        // Downloads come through the gateway, so every link shares the platform's one origin.
        ("EASEL_PUBLIC_URL", gateway_url.clone()),
    ]);
    let mut bridge_env = env_for(vec![("EASEL_COMFYUI_URLS", comfyui_urls.clone())]);
    let mut jobs_env = env_for(vec![
        ("EASEL_DATABASE_URL", sqlite("jobs.db")),
        ("EASEL_JOBS_ROLE", "all".to_string()),
        ("EASEL_BRIDGE_URL", bridge_url.clone()),
        ("EASEL_STORAGE_URL", storage_url.clone()),
        ("EASEL_AUTH_URL", auth_url.clone()),
    ]);
    let mut gateway_env = env_for(vec![
        ("EASEL_AUTH_URL", auth_url.clone()),
        ("EASEL_JOBS_URL", jobs_url.clone()),
        ("EASEL_BRIDGE_URL", bridge_url.clone()),
        ("EASEL_STORAGE_HTTP_URL", storage_http.clone()),
        ("EASEL_PUBLIC_URL", gateway_url.clone()),
    ]);

    let auth_config = easel_auth::Config::from_env(&mut auth_env);
    let storage_config = easel_storage::Config::from_env(&mut storage_env);
    let bridge_config = easel_comfy_bridge::Config::from_env(&mut bridge_env);
    let jobs_config = easel_jobs::Config::from_env(&mut jobs_env);
    let gateway_config = easel_gateway::Config::from_env(&mut gateway_env);
    for (service, env) in [
        ("auth", auth_env),
        ("storage", storage_env),
        ("comfy-bridge", bridge_env),
        ("jobs", jobs_env),
        ("gateway", gateway_env),
    ] {
        env.finish()
            .with_context(|| format!("{service} configuration"))?;
    }

    // The development account: made once, kept across restarts.
    let dev_key = std::env::var("EASEL_DEV_API_KEY").ok();
    let bootstrap = easel_auth::bootstrap_dev_account(&auth_config, DEV_EMAIL, dev_key.as_deref())
        .await
        .context("cannot create the development account")?;

    macro_rules! service {
        ($name:literal, $run:path, $config:expr, $listeners:expr) => {{
            let shutdown = shutdown.clone();
            let config = $config;
            let listeners = $listeners;
            tasks.spawn(async move {
                let result = $run(config, listeners, shutdown).await;
                ($name, result.map_err(anyhow::Error::from))
            });
        }};
    }
    service!("auth", easel_auth::run, auth_config, auth);
    service!("storage", easel_storage::run, storage_config, storage);
    service!(
        "comfy-bridge",
        easel_comfy_bridge::run,
        bridge_config,
        bridge
    );
    service!("jobs", easel_jobs::run, jobs_config, jobs);
    service!("gateway", easel_gateway::run, gateway_config, gateway);

    print_banner(
        &gateway_url,
        &data_dir,
        &comfyui_urls,
        redis_url.is_some(),
        &bootstrap,
    );

    // Any service ending before shutdown is a failure of the platform: stop the rest.
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.unwrap_or(("a service", Err(anyhow::anyhow!("task panicked"))));
        if let Err(error) = result {
            tracing::error!(service = name, error = %format!("{error:#}"), "service failed");
            failure.get_or_insert_with(|| anyhow::anyhow!("{name} failed: {error:#}"));
        } else if !shutdown.is_triggered() {
            failure.get_or_insert_with(|| anyhow::anyhow!("{name} stopped unexpectedly"));
        }
        shutdown.trigger();
    }
    telemetry_guard.shutdown().await;
    match failure {
        None => {
            output::line("easel stopped");
            Ok(())
        }
        Some(error) => Err(error),
    }
}

/// `<data dir>/sockets`, mode 0700: the internal services' Unix sockets (each 0600).
fn prepare_socket_dir(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("sockets");
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    easel_runtime::transport::listener::restrict(&path, 0o700)
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    Ok(path)
}

fn prepare_data_dir(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(path.join("artifacts"))
        .with_context(|| format!("cannot create the data directory {}", path.display()))?;
    std::fs::create_dir_all(path.join("comfyui"))?;
    path.canonicalize()
        .with_context(|| format!("cannot resolve {}", path.display()))
}

/// The local download links' HMAC key: random on first start, then kept, so links survive a
/// restart.
fn storage_signing_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("signing.key");
    if let Ok(key) = std::fs::read_to_string(&path)
        && key.trim().len() >= 32
    {
        return Ok(key.trim().to_string());
    }
    let key = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, &key).with_context(|| format!("cannot write {}", path.display()))?;
    restrict_permissions(&path)?;
    Ok(key)
}

#[cfg(unix)]
fn restrict_permissions(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

#[cfg(not(unix))]
fn restrict_permissions(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

fn print_banner(
    gateway_url: &str,
    data_dir: &Path,
    comfyui_urls: &str,
    redis: bool,
    bootstrap: &easel_auth::DevAccount,
) {
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
    output::line(format!("  user        {}", bootstrap.email));
    match &bootstrap.api_key {
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
