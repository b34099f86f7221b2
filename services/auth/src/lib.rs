//! `easel-auth`: users, tiers, API keys, JWT issue and JWKS, quotas and usage.
//!
//! - [`config`]: `EASEL_*` settings (database, Redis, JWT, login limits, password hashing);
//!   [`tiers`]: the tiers' limits;
//! - [`db`]: users, API keys, daily usage and signing keys (sea-orm, PostgreSQL or SQLite);
//! - [`service`]: authentication of API keys and tokens; [`account`]: keys, login, token
//!   exchange, usage and the admin calls; [`grpc`]: the RPCs themselves;
//! - [`jwt`]: EdDSA access tokens, key rotation and the JWKS; [`secret`]: API key material;
//!   [`password`]: Argon2id;
//! - [`broadcast`]: revocations published on Redis for every gateway replica;
//! - [`bootstrap`]: the first admin and the development account; [`cli`]: the subcommands.
//!
//! A library with one entry point, [`run`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

pub mod account;
pub mod bootstrap;
pub mod broadcast;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod grpc;
pub mod jwt;
pub mod model;
pub mod password;
pub mod secret;
pub mod service;
pub mod tiers;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use easel_proto::account::v1::account_service_server::AccountServiceServer;
use easel_proto::auth::v1::auth_service_server::AuthServiceServer;
use easel_runtime::Shutdown;
use easel_runtime::admin::Readiness;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::grpc::{CallerPolicy, GrpcServer};
use easel_runtime::service::Listeners;

pub use crate::bootstrap::{
    BootstrapError, Bootstrapped, DevAccount, bootstrap_admin, bootstrap_dev_account,
    generate_api_key,
};
pub use crate::config::{AuthConfig, PasswordHashing};
pub use crate::model::{Clock, ManualClock, SystemClock};
pub use crate::service::Auth;

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "auth";

/// Which services may call auth, by their mutual-TLS identity: the gateway authenticates
/// requests, serves the JWKS and proxies the account API; jobs meters usage.
pub const CALLERS: CallerPolicy = CallerPolicy::new(&[
    ("easel.auth.v1.AuthService/Authenticate", &["gateway"]),
    ("easel.auth.v1.AuthService/GetJwks", &["gateway"]),
    ("easel.auth.v1.AuthService/RecordUsage", &["jobs"]),
    ("easel.account.v1.AccountService/*", &["gateway"]),
]);

/// Default gRPC address.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051);

/// Default admin (HTTP) address; it also serves `/.well-known/jwks.json`.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9091);

/// The largest request accepted: every auth request is small, so anything bigger is refused
/// before it is decoded.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The path of the JSON Web Key Set on the admin port.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The service's configuration, from `EASEL_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports, timeouts and limits.
    pub server: ServerConfig,
    /// Logs, traces and error reports.
    pub telemetry: TelemetryConfig,
    /// Database, Redis, tokens, tiers and login limits.
    pub auth: AuthConfig,
}

impl Config {
    /// Reads the configuration; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Config {
        Config {
            server: ServerConfig::from_env(env, DEFAULT_GRPC_LISTEN, DEFAULT_ADMIN_LISTEN),
            telemetry: TelemetryConfig::from_env(env, SERVICE_NAME),
            auth: AuthConfig::from_env(env),
        }
    }
}

/// Serves the service on `listeners` until `shutdown` fires, then drains.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> std::io::Result<()> {
    let auth = Auth::open(&config.auth, Arc::new(SystemClock))
        .await
        .map_err(|error| std::io::Error::other(format!("auth cannot start: {error}")))?;
    serve(auth, &config.server, listeners, shutdown).await
}

/// Serves an opened [`Auth`] (tests open it with their own clock).
pub async fn serve(
    auth: Auth,
    server: &ServerConfig,
    listeners: Listeners,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let maintenance = tokio::spawn(maintain_keys(auth.clone(), shutdown.clone()));
    let readiness = Readiness::new().with_check("database", {
        let auth = auth.clone();
        move || {
            let auth = auth.clone();
            async move { easel_runtime::db::ping(auth.db()).await }
        }
    });
    let admin_routes = axum::Router::new()
        .route(JWKS_PATH, axum::routing::get(jwks))
        .with_state(auth.clone());
    let api = grpc::AuthApi::new(auth);
    let grpc = GrpcServer::new(SERVICE_NAME, server)
        .add_service(
            AuthServiceServer::new(api.clone()).max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(AccountServiceServer::new(api).max_decoding_message_size(MAX_REQUEST_BYTES))
        .allow_callers(CALLERS);
    let served =
        easel_runtime::service::serve(grpc, readiness, admin_routes, listeners, shutdown).await;
    let _ = maintenance.await;
    served
}

async fn jwks(State(auth): State<Auth>) -> axum::response::Response {
    (
        [
            (http::header::CONTENT_TYPE, "application/jwk-set+json"),
            (http::header::CACHE_CONTROL, "public, max-age=60"),
        ],
        auth.tokens().jwks_json(),
    )
        .into_response()
}

/// Reloads the signing keys (another replica may have rotated) and rotates them when due,
/// every `EASEL_JWT_KEY_REFRESH`, until shutdown.
async fn maintain_keys(auth: Auth, shutdown: Shutdown) {
    let mut every = tokio::time::interval(auth.config().jwt_key_refresh);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            _ = every.tick() => {
                if let Err(error) = auth.tokens().rotate_if_due().await {
                    tracing::warn!(%error, "signing key maintenance failed");
                }
            }
        }
    }
}
