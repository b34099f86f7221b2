//! `easel-gateway`: the public edge of easel. One port serves gRPC (tonic), gRPC-web
//! (tonic-web, HTTP/1.1 and h2) and REST/JSON (axum, the proto3 JSON mapping of the same
//! messages), with WebSocket and Server-Sent Events job streams.
//!
//! - [`config`]: `EASEL_*` settings;
//! - [`door`]: the one tower stack every request passes (request id, trace, metrics, CORS,
//!   deadline, load shedding, authentication and rate limits);
//! - [`api`]: the operations behind both protocols, so REST and gRPC answer the same data;
//! - [`grpc`]: the public gRPC services; [`rest`]: the REST routes, WebSocket and SSE;
//! - [`routes`]: the REST route table, one record per endpoint (handler, access rule, docs),
//!   from which the router, the door's access check and `/openapi.json` are derived;
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
pub mod routes;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use easel_runtime::Shutdown;
use easel_runtime::service::{Listeners, StackedApp, serve_stacked};
use easel_runtime::transport::ServeOptions;

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
    let upstreams = upstream::Upstreams::connect(&config.gateway, config.server.tls.clone())
        .map_err(std::io::Error::other)?;
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

    let app = StackedApp {
        router: app.router,
        health: app.health,
        service_names: app.service_names,
    };
    let options = ServeOptions {
        service: SERVICE_NAME.to_string(),
        server: "public",
        settings: config.server.connections.clone(),
        // The public port stays plain: TLS ends at the edge proxy.
        tls: None,
    };
    // The public port: the door sees each client's address (`ConnectInfo<SocketAddr>`).
    serve_stacked(
        app,
        options,
        readiness,
        axum::Router::new(),
        listeners,
        shutdown,
    )
    .await
}
