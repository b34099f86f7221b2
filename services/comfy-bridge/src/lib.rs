//! `easel-comfy-bridge`: the only part of easel that talks to ComfyUI. It runs workflows on a
//! pool of backends with health checks, circuit breakers, model-affinity scheduling, deadlines,
//! interrupts and reconciliation from ComfyUI's history.
//!
//! - [`config`]: `EASEL_COMFYUI_*` settings;
//! - [`comfy`]: ComfyUI's HTTP protocol and message shapes;
//! - [`backend`]: one backend (health, breaker, the shared WebSocket);
//! - [`breaker`], [`pool`]: the circuit breaker and the scheduler;
//! - [`template`]: the text-to-image template and raw workflows;
//! - [`isolation`]: the workflow policy before `POST /prompt`, outputs that never persist on
//!   the backend, images stored without their prompt text;
//! - [`run`]: one run from scheduling to its last event;
//! - [`api`]: the gRPC handlers.
//!
//! A library with one entry point, [`run()`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

pub mod api;
pub mod backend;
pub mod breaker;
pub mod comfy;
pub mod config;
pub mod error;
pub mod isolation;
pub mod metrics;
pub mod models;
pub mod pool;
pub mod run;
pub mod template;

use std::net::SocketAddr;
use std::sync::Arc;

use easel_proto::bridge::v1::bridge_service_server::BridgeServiceServer;
use easel_runtime::Shutdown;
use easel_runtime::admin::Readiness;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::grpc::{CallerPolicy, GrpcServer};
use easel_runtime::service::Listeners;
use tokio_util::task::TaskTracker;

pub use crate::config::BridgeConfig;

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "comfy-bridge";

/// Which services may call the bridge, by their mutual-TLS identity: only jobs runs and
/// interrupts workflows and sizes its workers from the backends; the gateway lists models.
pub const CALLERS: CallerPolicy = CallerPolicy::new(&[
    ("easel.bridge.v1.BridgeService/RunWorkflow", &["jobs"]),
    ("easel.bridge.v1.BridgeService/Interrupt", &["jobs"]),
    ("easel.bridge.v1.BridgeService/ListBackends", &["jobs"]),
    ("easel.bridge.v1.BridgeService/ListModels", &["gateway"]),
]);

/// Default gRPC address.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50054);

/// Default admin (HTTP) address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9094);

/// Largest gRPC message in either direction: output images travel whole.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The service's configuration, from `EASEL_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports, timeouts and limits.
    pub server: ServerConfig,
    /// Logs, traces and error reports.
    pub telemetry: TelemetryConfig,
    /// The backends and how to use them.
    pub bridge: BridgeConfig,
}

impl Config {
    /// Reads the configuration; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Config {
        Config {
            server: ServerConfig::from_env(env, DEFAULT_GRPC_LISTEN, DEFAULT_ADMIN_LISTEN),
            telemetry: TelemetryConfig::from_env(env, SERVICE_NAME),
            bridge: BridgeConfig::from_env(env),
        }
    }
}

/// Serves the service on `listeners` until `shutdown` fires, then drains.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> std::io::Result<()> {
    // Install the recorder before describing the series.
    let _ = easel_runtime::metrics::handle();
    metrics::describe();
    let http = comfy::http_client(config.bridge.request_timeout).map_err(std::io::Error::other)?;
    let bridge_config = Arc::new(config.bridge.clone());
    let pool = Arc::new(pool::Pool::new(&bridge_config, http));
    let tracker = TaskTracker::new();
    pool.start(&bridge_config, &tracker, &shutdown);
    let bridge = Arc::new(api::Bridge {
        config: bridge_config.clone(),
        pool,
        runs: Arc::new(run::Runs::default()),
        models: models::Models::new(bridge_config.models_ttl),
    });
    let service = BridgeServiceServer::new(api::BridgeApi::new(bridge))
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = GrpcServer::new(SERVICE_NAME, &config.server)
        .add_service(service)
        .allow_callers(CALLERS);
    let served = easel_runtime::service::serve(
        grpc,
        Readiness::new(),
        axum::Router::new(),
        listeners,
        shutdown,
    )
    .await;
    tracker.close();
    tracker.wait().await;
    served
}
