//! The gRPC client side: a channel with a connect timeout and a default per-call deadline that
//! opens a client span per call, sends the W3C trace context and records metrics.
//!
//! ```ignore
//! let channel = easel_runtime::grpc::connect_lazy(&ClientConfig::new("http://127.0.0.1:50053"), "jobs")?;
//! let mut storage = StorageServiceClient::new(channel);
//! ```

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument;

use crate::metrics::names;
use crate::telemetry::propagation;

use super::layers::format_grpc_timeout;
use super::split_path;

/// Settings of a client of another service.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's URL, e.g. `http://127.0.0.1:50053`.
    pub url: String,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// The deadline sent with calls that set none themselves.
    pub default_deadline: Duration,
}

impl ClientConfig {
    /// A client of `url` with a 2 s connect timeout and a 30 s default deadline.
    pub fn new(url: impl Into<String>) -> Self {
        ClientConfig {
            url: url.into(),
            connect_timeout: Duration::from_secs(2),
            default_deadline: Duration::from_secs(30),
        }
    }
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("invalid gRPC endpoint {url:?}: {source}")]
pub struct ClientError {
    url: String,
    #[source]
    source: tonic::transport::Error,
}

/// A traced, deadline-carrying channel to another service; cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcChannel {
    channel: Channel,
    caller: Arc<str>,
    default_deadline: Duration,
}

/// Makes a channel that connects on first use and reconnects as needed. `caller` names this
/// process in the client metrics.
pub fn connect_lazy(config: &ClientConfig, caller: &str) -> Result<GrpcChannel, ClientError> {
    let endpoint = Endpoint::from_shared(config.url.clone())
        .map_err(|source| ClientError {
            url: config.url.clone(),
            source,
        })?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    Ok(GrpcChannel {
        channel: endpoint.connect_lazy(),
        caller: Arc::from(caller),
        default_deadline: config.default_deadline,
    })
}

impl Service<http::Request<Body>> for GrpcChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path().to_string();
        let (rpc_service, rpc_method) = split_path(&path);
        let span = tracing::info_span!(
            "grpc.client",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "client",
            rpc.system = "grpc",
            rpc.service = %rpc_service,
            rpc.method = %rpc_method,
        );
        propagation::inject_span(
            &span,
            &mut opentelemetry_http::HeaderInjector(request.headers_mut()),
        );
        if !request.headers().contains_key("grpc-timeout")
            && let Ok(value) =
                http::HeaderValue::from_str(&format_grpc_timeout(self.default_deadline))
        {
            request.headers_mut().insert("grpc-timeout", value);
        }
        let labels = [
            ("service", self.caller.to_string()),
            ("rpc_service", rpc_service.to_string()),
            ("method", rpc_method.to_string()),
        ];
        // The channel is ready (poll_ready was called on this clone); swap in a fresh clone so
        // this one's readiness is consumed by this call, as tower requires.
        let fresh = self.channel.clone();
        let mut ready = std::mem::replace(&mut self.channel, fresh);
        let started = Instant::now();
        Box::pin(
            async move {
                let result = ready.call(request).await;
                let code = match &result {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse::<i32>().ok())
                        .map_or("Ok".to_string(), |code| {
                            format!("{:?}", tonic::Code::from_i32(code))
                        }),
                    Err(_) => "Unavailable".to_string(),
                };
                let mut labels = labels.to_vec();
                labels.push(("code", code));
                metrics::counter!(names::GRPC_CLIENT_REQUESTS, &labels).increment(1);
                metrics::histogram!(names::GRPC_CLIENT_DURATION, &labels)
                    .record(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}
