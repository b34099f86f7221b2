//! What every easel service shares, so each one starts, logs, traces, measures, serves and
//! stops the same way:
//!
//! - [`config`]: environment variables with defaults, every problem reported at once;
//! - [`telemetry`]: `tracing` logs (JSON or pretty), OTLP span export, Sentry, and W3C trace
//!   context carried through gRPC metadata, HTTP headers and any string map;
//! - [`metrics`]: the Prometheus registry behind `/metrics`;
//! - [`page`]: the page tokens of list calls;
//! - [`grpc`]: the gRPC server (health, reflection, the standard tower stack, graceful
//!   shutdown) and client (connect timeout, deadlines, trace propagation);
//! - [`transport`]: the accept loop under every server: connection timeouts and caps;
//! - [`admin`]: the HTTP admin port (`/metrics`, `/healthz`, `/readyz`);
//! - [`clock`]: the injectable time source;
//! - `redis` (feature `redis`): Redis behind a per-call deadline and a circuit breaker;
//! - [`service`]: a service process's life, from configuration to drained exit;
//! - [`shutdown`]: the shutdown signal and its grace period;
//! - [`error`]: the error vocabulary (codes, the one list of reasons, internal errors that keep
//!   their cause), mapped once to gRPC codes and HTTP statuses.

pub mod admin;
pub mod clock;
pub mod config;
#[cfg(feature = "db")]
pub mod db;
pub mod error;
pub mod grpc;
pub mod ids;
pub mod metrics;
pub mod page;
#[cfg(feature = "redis")]
pub mod redis;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod transport;

pub use config::{Env, ServerConfig, TelemetryConfig};
pub use error::{Error, ErrorCode};
pub use shutdown::Shutdown;

/// Installs the process-wide rustls crypto provider (aws-lc-rs). Call first thing in `main`:
/// when two providers are compiled in, rustls cannot pick one by itself and panics.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
