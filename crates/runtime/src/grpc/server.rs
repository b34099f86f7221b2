//! The gRPC server every service runs: its services plus `grpc.health.v1` and reflection (v1
//! and v1alpha), behind the standard tower stack, served until the shutdown signal and then
//! drained.

use axum::error_handling::HandleErrorLayer;
use axum::response::IntoResponse;
use std::convert::Infallible;

use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::{Service, ServiceBuilder};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::ServerConfig;
use crate::shutdown::Shutdown;
use crate::transport::{self, Listener, ServeOptions};

use super::callers::{CallerLayer, CallerPolicy};
use super::layers::{GrpcDeadlineLayer, GrpcMetricsLayer, ServerSpan, overloaded};

/// Largest message a server decodes or encodes; image outputs travel whole.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A gRPC server under construction.
pub struct GrpcServer {
    service_label: String,
    config: ServerConfig,
    routes: Routes,
    health_reporter: HealthReporter,
    service_names: Vec<&'static str>,
    callers: CallerPolicy,
}

impl std::fmt::Debug for GrpcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcServer")
            .field("service_label", &self.service_label)
            .field("service_names", &self.service_names)
            .finish()
    }
}

impl GrpcServer {
    /// A server for the named service (the `service` label of its metrics and spans).
    pub fn new(service_label: &str, config: &ServerConfig) -> Self {
        // The recorder must exist before the first call is served, or that call's series is
        // recorded into nothing (a connection task can run before the admin server starts).
        let _ = crate::metrics::handle();
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(easel_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let mut routes = Routes::new(health_service);
        // Both versions: grpcurl 1.8 only speaks v1alpha, newer tools v1.
        match (reflection().build_v1(), reflection().build_v1alpha()) {
            (Ok(v1), Ok(v1alpha)) => {
                routes = routes.add_service(v1).add_service(v1alpha);
            }
            (Err(error), _) | (_, Err(error)) => {
                // The descriptors are compiled in; this only fails if they are corrupt.
                tracing::error!(%error, "reflection is unavailable");
            }
        }
        GrpcServer {
            service_label: service_label.to_string(),
            config: config.clone(),
            routes,
            health_reporter,
            service_names: Vec::new(),
            callers: CallerPolicy::deny_all(),
        }
    }

    /// Adds a tonic service; it reports SERVING on health once the server runs.
    #[must_use]
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: Service<http::Request<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: IntoResponse,
        S::Future: Send + 'static,
    {
        self.service_names.push(S::NAME);
        self.routes = self.routes.add_service(service);
        self
    }

    /// Connection options for another server of this service (e.g. `admin`), with the same
    /// limits as the gRPC port.
    pub fn serve_options(&self, server: &'static str) -> ServeOptions {
        ServeOptions {
            service: self.service_label.clone(),
            server,
            settings: self.config.connections.clone(),
            tls: None,
        }
    }

    /// Which services may call which methods once callers are verified by mutual TLS (the
    /// default refuses every method but health and reflection).
    #[must_use]
    pub fn allow_callers(mut self, policy: CallerPolicy) -> Self {
        self.callers = policy;
        self
    }

    /// The health reporter, for services that change their status while running.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health_reporter.clone()
    }

    /// The services as an axum router without the stack, for a server that adds routes of its
    /// own (the gateway) and applies [`standard_stack`] itself.
    pub fn into_routes(self) -> (axum::Router, HealthReporter, Vec<&'static str>) {
        (
            self.routes.prepare().into_axum_router(),
            self.health_reporter,
            self.service_names,
        )
    }

    /// Serves on `listener` until `shutdown` fires, then stops accepting, reports NOT_SERVING
    /// and lets calls in flight finish (the caller bounds this with the grace period).
    pub async fn serve(
        self,
        listener: impl Into<Listener>,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let listener = listener.into();
        let label = self.service_label.clone();
        let config = self.config.clone();
        config
            .check_exposure(listener.is_local())
            .map_err(std::io::Error::other)?;
        if let Some(identity) = &config.tls
            && identity.name() != label
        {
            return Err(std::io::Error::other(format!(
                "the service certificate (EASEL_TLS_CERT) names {:?}, not {label:?}",
                identity.name()
            )));
        }
        let callers = self.callers;
        let (mut router, health, names) = self.into_routes();
        if config.tls.is_some() {
            // Inside the standard stack, so refusals are traced and counted like other calls.
            router = router.layer(CallerLayer::new(callers, &label, true));
        }
        let app = standard_stack(router, &label, &config);
        let options = ServeOptions {
            service: label,
            server: "grpc",
            settings: config.connections.clone(),
            tls: config.tls.clone(),
        };
        serve_router(listener, app, health, names, options, shutdown).await
    }
}

/// Serves an already stacked router (gRPC and anything else) with HTTP/1.1 and h2c, under
/// the connection limits of `options`; on shutdown, reports NOT_SERVING first and then drains.
pub async fn serve_router(
    listener: impl Into<Listener>,
    app: axum::Router,
    health: HealthReporter,
    service_names: Vec<&'static str>,
    options: ServeOptions,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = listener.into();
    for name in &service_names {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }
    let drain_signal = {
        let shutdown = shutdown.clone();
        let health = health.clone();
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
    tracing::info!(
        service = %options.service,
        address = %listener.describe(),
        "grpc server listening"
    );
    transport::serve(listener, app, options, drain_signal).await
}

/// The standard stack, outermost first. Every server (gRPC-only or the gateway's mixed one)
/// gets these layers, in this order, from here.
pub fn standard_stack(
    router: axum::Router,
    service_label: &str,
    config: &ServerConfig,
) -> axum::Router {
    let stack = ServiceBuilder::new()
        // Request id first, so the span and every log line carry it: accept the caller's
        // `x-request-id` or make one.
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        // Trace: a server span per call, continuing the caller's W3C trace context.
        .layer(
            TraceLayer::new_for_grpc()
                .make_span_with(ServerSpan::new(service_label))
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
        )
        // Echo the request id to the caller.
        .layer(PropagateRequestIdLayer::x_request_id())
        // Metrics: count and latency by service, method and code.
        .layer(GrpcMetricsLayer::new(service_label))
        // Requests tonic cannot decode are the caller's mistake: INVALID_ARGUMENT, not INTERNAL.
        .layer(super::layers::DecodeFailureLayer)
        // Deadline: the shorter of the server's limit and the client's grpc-timeout.
        .layer(GrpcDeadlineLayer::new(config.request_timeout))
        // Shed load beyond the concurrency limit instead of queueing without bound.
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .concurrency_limit(config.max_concurrent_requests);
    router.layer(stack)
}
