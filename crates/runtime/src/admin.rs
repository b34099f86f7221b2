//! The HTTP admin port of every service: `/metrics` (Prometheus), `/healthz` (the process is
//! alive) and `/readyz` (its dependencies answer), plus any routes the service adds (JWKS,
//! signed downloads).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::future::BoxFuture;

use crate::shutdown::Shutdown;
use crate::transport::{self, Listener, ServeOptions};

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// The dependencies a service needs to be ready, each as a named async check.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, Arc<CheckFn>)>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.checks.iter().map(|(name, _)| *name).collect();
        f.debug_struct("Readiness").field("checks", &names).finish()
    }
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Readiness::default()
    }

    /// Adds a check, e.g. a database ping.
    #[must_use]
    pub fn with_check<F, Fut>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        self.checks.push((
            name,
            Arc::new(move || Box::pin(check()) as BoxFuture<'static, _>),
        ));
        self
    }

    /// Runs every check concurrently; the failures by name.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        let runs = self.checks.iter().map(|(name, check)| async move {
            match tokio::time::timeout(CHECK_TIMEOUT, check()).await {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some((*name, reason)),
                Err(_) => Some((*name, "timed out".to_string())),
            }
        });
        futures::future::join_all(runs)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// The admin routes with the service's own `extra` routes merged in.
pub fn router(readiness: Readiness, extra: Router) -> Router {
    // Install the recorder now, so /metrics answers even before the first request.
    let _ = crate::metrics::handle();
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Arc::new(readiness))
        .merge(extra)
}

/// Serves the admin routes until `shutdown` fires, under the connection limits of `options`
/// (its `server` label should be `admin`).
pub async fn serve(
    listener: impl Into<Listener>,
    readiness: Readiness,
    extra: Router,
    options: ServeOptions,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = listener.into();
    tracing::info!(address = %listener.describe(), "admin server listening");
    transport::serve(
        listener,
        router(readiness, extra),
        options,
        shutdown.triggered(),
    )
    .await
}

async fn metrics() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(readiness): State<Arc<Readiness>>) -> Response {
    let failures = readiness.failures().await;
    if failures.is_empty() {
        return (StatusCode::OK, "ready").into_response();
    }
    let body = failures
        .iter()
        .map(|(name, reason)| format!("{name}: {reason}"))
        .collect::<Vec<_>>()
        .join("\n");
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}
