//! Logs, traces and error reports.
//!
//! [`init`] installs one `tracing` subscriber per process: a JSON or pretty log layer, an
//! OpenTelemetry layer exporting spans over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set,
//! and a Sentry layer (error events, panics) when `SENTRY_DSN` is set. The [`TelemetryGuard`] it
//! returns flushes spans on shutdown within a bound.
//!
//! [`propagation`] carries the W3C trace context across hops: gRPC metadata and HTTP headers
//! (the gRPC layers use it on every call), and any string map such as a queue message.

pub mod propagation;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogFormat, TelemetryConfig};

/// How long flushing spans may hold up a shutdown.
pub const FLUSH_BOUND: Duration = Duration::from_secs(5);

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("invalid log filter: {0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The OTLP exporter could not be built.
    #[error("cannot build the OTLP span exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// A subscriber is installed already.
    #[error("a tracing subscriber is already installed: {0}")]
    AlreadyInstalled(#[from] tracing_subscriber::util::TryInitError),
}

/// Keeps telemetry alive; flushes and stops it when shut down or dropped.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
    sentry: Option<sentry::ClientInitGuard>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.tracer_provider.is_some())
            .field("sentry", &self.sentry.is_some())
            .finish()
    }
}

impl TelemetryGuard {
    /// Flushes pending spans and Sentry events, waiting at most [`FLUSH_BOUND`]. Call it from
    /// async code before the runtime stops: the exporter needs the runtime to send.
    pub async fn shutdown(mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let flushed =
                tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_BOUND))
                    .await;
            if !matches!(flushed, Ok(Ok(()))) {
                tracing::warn!("spans were not all flushed before shutdown");
            }
        }
        if let Some(sentry) = self.sentry.take() {
            let _ = tokio::task::spawn_blocking(move || sentry.flush(Some(FLUSH_BOUND))).await;
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            let _ = provider.shutdown_with_timeout(FLUSH_BOUND);
        }
    }
}

/// Installs the process's `tracing` subscriber, span export and error reporting.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let filter = EnvFilter::try_new(&config.log_filter)?;

    let fmt_layer = match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };

    let tracer_provider = match &config.otlp_endpoint {
        Some(endpoint) => Some(tracer_provider(&config.service_name, endpoint)?),
        None => None,
    };
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(config.service_name.clone()))
            .with_tracked_inactivity(false)
            .with_filter(span_export_filter())
    });

    let sentry = config.sentry_dsn.as_ref().map(|dsn| {
        sentry::init((
            dsn.as_str(),
            sentry::ClientOptions::new()
                .release(format!(
                    "{}@{}",
                    config.service_name,
                    env!("CARGO_PKG_VERSION")
                ))
                .environment(config.environment.clone())
                // Prompts and keys travel in requests: never attach them to reports.
                .send_default_pii(false),
        ))
    });
    // Error-level events become Sentry events; warnings and info become breadcrumbs that
    // travel with the next error. Panics are reported by the client's panic integration.
    let sentry_layers = sentry.as_ref().map(|_| {
        use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
        use tracing_subscriber::filter::{LevelFilter, filter_fn};
        ErrorLayer::new().with_filter(LevelFilter::ERROR).and_then(
            BreadcrumbLayer::new().with_filter(filter_fn(|metadata| {
                matches!(
                    *metadata.level(),
                    tracing::Level::WARN | tracing::Level::INFO
                )
            })),
        )
    });

    tracing_subscriber::registry()
        .with(fmt_layer.with_filter(filter))
        .with(otel_layer)
        .with(sentry_layers)
        .try_init()?;

    Ok(TelemetryGuard {
        tracer_provider,
        sentry,
    })
}

/// Installs a quiet subscriber for tests (`warn` and above, to the test's output), ignoring a
/// subscriber that is already installed.
pub fn init_for_tests() {
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::new("warn")),
        )
        .try_init();
}

/// Spans worth exporting: ours and our libraries' at INFO and above, but never the transport
/// crates' internals, whose spans would include the exporter's own sends and feed back into it.
fn span_export_filter() -> EnvFilter {
    EnvFilter::new("info,h2=off,hyper=off,hyper_util=off,tonic=off,tower=off,opentelemetry=off")
}

fn tracer_provider(
    service_name: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(3))
        .build()?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service_name.to_string())
                .build(),
        )
        .build())
}
