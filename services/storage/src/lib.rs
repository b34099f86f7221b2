//! `easel-storage`: artifacts in object storage: streamed uploads and downloads, signed URLs, metadata and TTL cleanup.
//!
//! A library with one entry point, [`run`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

use std::net::SocketAddr;

use easel_proto::storage::v1::storage_service_server::{StorageService, StorageServiceServer};
use easel_runtime::Shutdown;
use easel_runtime::admin::Readiness;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::grpc::GrpcServer;
use easel_runtime::service::Listeners;

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "storage";

/// Default gRPC address.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053);

/// Default admin (HTTP) address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9093);

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
        .add_service(StorageServiceServer::new(StorageApi));
    easel_runtime::service::serve(
        grpc,
        Readiness::new(),
        axum::Router::new(),
        listeners,
        shutdown,
    )
    .await
}

/// `easel.storage.v1.StorageService`; its RPCs answer UNIMPLEMENTED until the service's issue lands.
#[derive(Clone, Copy, Debug)]
struct StorageApi;

#[tonic::async_trait]
impl StorageService for StorageApi {}
