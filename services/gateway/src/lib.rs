//! `easel-gateway`: the public edge of easel. One port serves gRPC (tonic), gRPC-web
//! (tonic-web, HTTP/1.1 and h2) and REST/JSON (axum, the proto3 JSON mapping of the same
//! messages), with WebSocket and Server-Sent Events job streams.
//!
//! - [`config`]: `EASEL_*` settings;
//! - [`door`]: the one tower stack every request passes (request id, trace, metrics, CORS,
//!   deadline, load shedding, authentication and rate limits);
//! - [`api`]: the operations behind both protocols, so REST and gRPC answer the same data;
//! - [`grpc`]: the public gRPC services; [`rest`]: the REST routes, WebSocket and SSE;
//! - [`openapi`]: `/openapi.json`, generated from the protos' descriptors and the route table;
//! - [`upstream`]: the clients of auth, jobs and comfy-bridge;
//! - [`context`]: what the door learned about a request, carried to the upstream calls.
//!
//! A library with one entry point, [`run`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

// Handlers and helpers fail with the runtime's vocabulary `Error` (160 bytes, with its
// details); errors are the cold path, and boxing the shared type at every signature would only
// add noise.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod config;
pub mod context;
pub mod door;
pub mod grpc;
pub mod jwks;
pub mod metrics;
pub mod openapi;
pub mod protocol;
pub mod rest;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use easel_runtime::Shutdown;
use easel_runtime::service::Listeners;
use tokio::net::TcpListener;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

pub use crate::config::{Config, GatewayConfig};

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "gateway";

/// Default public address: gRPC, gRPC-web and REST.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);

/// Default admin (HTTP) address: `/metrics`, `/healthz`, `/readyz` for probes.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9080);

/// Serves the gateway on `listeners` until `shutdown` fires, then drains: open WebSockets
/// are closed with 1001 (going away), SSE and gRPC streams end, calls in flight finish.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> std::io::Result<()> {
    crate::metrics::describe();
    if config.gateway.public_url.is_none()
        && let Ok(address) = listeners.grpc.local_addr()
        && !address.ip().is_loopback()
    {
        // Links then name the address each client connected to, which behind a proxy or a
        // port mapping is not the one clients know.
        tracing::warn!(
            %address,
            "EASEL_PUBLIC_URL is unset: links in answers use the gateway's own address"
        );
    }
    let upstreams = upstream::Upstreams::connect(&config.gateway).map_err(std::io::Error::other)?;
    let door = door::Door::start(&config.gateway, &upstreams, &shutdown)
        .await
        .map_err(std::io::Error::other)?;
    let gateway = api::Gateway::new(
        upstreams.clone(),
        Arc::new(config.gateway.clone()),
        shutdown.clone(),
    );
    let readiness = upstreams.readiness();
    let app =
        protocol::app(&config, gateway, door, readiness.clone()).map_err(std::io::Error::other)?;

    let public = serve_public(
        listeners.grpc,
        app.router,
        app.health,
        app.service_names,
        shutdown.clone(),
    );
    let admin =
        easel_runtime::admin::serve(listeners.admin, readiness, axum::Router::new(), shutdown);
    tokio::try_join!(public, admin).map(|_| ())
}

/// Serves the public port (HTTP/1.1 and h2c) with the peer address known to the door, until
/// `shutdown`; then reports NOT_SERVING and lets calls and streams in flight end.
async fn serve_public(
    listener: TcpListener,
    app: axum::Router,
    health: HealthReporter,
    service_names: Vec<&'static str>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    for name in &service_names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let drain_signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.triggered().await;
            // Tell load balancers first, so new calls go elsewhere while these drain.
            health
                .set_service_status("", ServingStatus::NotServing)
                .await;
            for name in &service_names {
                health
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
        }
    };
    let address = listener.local_addr().ok();
    tracing::info!(address = ?address, "gateway listening");
    axum::serve(
        context::PublicListener(listener),
        app.into_make_service_with_connect_info::<context::Connection>(),
    )
    .with_graceful_shutdown(drain_signal)
    .await
}
