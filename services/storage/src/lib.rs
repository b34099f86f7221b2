//! `easel-storage`: artifacts in object storage: streamed uploads and downloads, signed URLs,
//! metadata and TTL cleanup.
//!
//! - [`config`]: `EASEL_STORAGE_*`, `EASEL_S3_*`, signing and sweeper settings;
//! - [`backend`]: the object store (local directory or S3-compatible bucket);
//! - [`db`]: artifact rows (sea-orm, PostgreSQL or SQLite), queries scoped by owner;
//! - [`upload`]: streamed, sniffed, size-capped uploads that leave nothing behind on failure;
//! - [`service`]: the logic behind the RPCs; [`grpc`]: the RPCs themselves;
//! - [`signed`]: HMAC-signed download links of the local backend (Range, ETag);
//! - [`sweeper`]: deletes expired artifacts, safely from several replicas.
//!
//! A library with one entry point, [`run`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

pub mod backend;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod service;
pub mod signed;
pub mod sniff;
pub mod sweeper;
pub mod upload;

use std::net::SocketAddr;

use easel_proto::storage::v1::storage_service_server::StorageServiceServer;
use easel_runtime::Shutdown;
use easel_runtime::admin::Readiness;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::grpc::server::MAX_MESSAGE_BYTES;
use easel_runtime::grpc::{CallerPolicy, GrpcServer};
use easel_runtime::service::Listeners;

pub use crate::config::{BackendConfig, S3Config, SigningKey, StorageConfig};
pub use crate::service::Storage;

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "storage";

/// Which services may call storage, by their mutual-TLS identity: only jobs writes, lists,
/// signs and deletes artifacts (the gateway serves downloads through the signed HTTP links).
pub const CALLERS: CallerPolicy =
    CallerPolicy::new(&[("easel.storage.v1.StorageService/*", &["jobs"])]);

/// Default gRPC address.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50053);

/// Default admin (HTTP) address; it also serves local signed links.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9093);

/// The service's configuration, from `EASEL_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports, timeouts and limits.
    pub server: ServerConfig,
    /// Logs, traces and error reports.
    pub telemetry: TelemetryConfig,
    /// Store, database, limits, links and sweeper.
    pub storage: StorageConfig,
}

impl Config {
    /// Reads the configuration; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Config {
        let telemetry = TelemetryConfig::from_env(env, SERVICE_NAME);
        let storage = StorageConfig::from_env(env, &telemetry.environment);
        Config {
            server: ServerConfig::from_env(env, DEFAULT_GRPC_LISTEN, DEFAULT_ADMIN_LISTEN),
            telemetry,
            storage,
        }
    }
}

/// Serves the service on `listeners` until `shutdown` fires, then drains.
pub async fn run(
    mut config: Config,
    listeners: Listeners,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    crate::metrics::describe();
    if config.storage.signing_key.is_none() {
        tracing::warn!(
            "EASEL_SIGNING_KEY is not set: using a random key, so local signed links break on restart and differ between replicas; set it outside development"
        );
        config.storage.signing_key = Some(SigningKey::random());
    }
    let admin_url = url::Url::parse(&format!("http://{}", listeners.admin_addr()?)).ok();
    let storage = Storage::open(&config.storage, admin_url)
        .await
        .map_err(|error| std::io::Error::other(format!("storage cannot start: {error}")))?;

    let sweeper = sweeper::Sweeper::new(
        storage.clone(),
        config.storage.sweep_batch,
        config.storage.sweep_lease,
    );
    let sweeping = tokio::spawn(sweeper.run(config.storage.sweep_interval, shutdown.clone()));

    let readiness = Readiness::new()
        .with_check("database", {
            let storage = storage.clone();
            move || {
                let storage = storage.clone();
                async move { easel_runtime::db::ping(storage.db()).await }
            }
        })
        .with_check("object_store", {
            let storage = storage.clone();
            move || {
                let storage = storage.clone();
                async move { storage.backend().check().await }
            }
        });
    let admin_routes = if storage.backend().is_s3() {
        axum::Router::new()
    } else {
        signed::routes(storage.clone())
    };
    let api = StorageServiceServer::new(grpc::StorageApi::new(storage))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = GrpcServer::new(SERVICE_NAME, &config.server)
        .add_service(api)
        .allow_callers(CALLERS);
    let served =
        easel_runtime::service::serve(grpc, readiness, admin_routes, listeners, shutdown).await;
    let _ = sweeping.await;
    served
}
