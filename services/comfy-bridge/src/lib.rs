//! `easel-comfy-bridge`: the only part of easel that talks to ComfyUI: runs workflows on a pool of backends with health checks, circuit breakers and scheduling.
//!
//! A library with one entry point, [`run`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

use std::net::SocketAddr;

use easel_proto::bridge::v1::bridge_service_server::{BridgeService, BridgeServiceServer};
use easel_runtime::Shutdown;
use easel_runtime::admin::Readiness;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::grpc::GrpcServer;
use easel_runtime::service::Listeners;

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "comfy-bridge";

/// Default gRPC address.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50054);

/// Default admin (HTTP) address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9094);

/// The service's configuration, from `EASEL_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports, timeouts and limits.
    pub server: ServerConfig,
    /// Logs, traces and error reports.
    pub telemetry: TelemetryConfig,
}

impl Config {
    /// Reads the configuration; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Config {
        Config {
            server: ServerConfig::from_env(env, DEFAULT_GRPC_LISTEN, DEFAULT_ADMIN_LISTEN),
            telemetry: TelemetryConfig::from_env(env, SERVICE_NAME),
        }
    }
}

/// Serves the service on `listeners` until `shutdown` fires, then drains.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> std::io::Result<()> {
    let grpc = GrpcServer::new(SERVICE_NAME, &config.server)
        .add_service(BridgeServiceServer::new(BridgeApi));
    easel_runtime::service::serve(
        grpc,
        Readiness::new(),
        axum::Router::new(),
        listeners,
        shutdown,
    )
    .await
}

/// `easel.bridge.v1.BridgeService`; its RPCs answer UNIMPLEMENTED until the service's issue lands.
#[derive(Clone, Copy, Debug)]
struct BridgeApi;

#[tonic::async_trait]
impl BridgeService for BridgeApi {}
