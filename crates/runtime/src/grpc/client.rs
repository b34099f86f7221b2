//! The gRPC client side: a channel with a connect timeout and a default per-call deadline that
//! opens a client span per call, sends the W3C trace context and records metrics.
//!
//! ```ignore
//! let channel = easel_runtime::grpc::connect_lazy(&ClientConfig::new("http://127.0.0.1:50053"), "jobs")?;
//! let mut storage = StorageServiceClient::new(channel);
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::Service;
use tracing::Instrument;

use crate::metrics::names;
use crate::telemetry::propagation;
use crate::transport::ServiceIdentity;

use super::layers::format_grpc_timeout;
use super::split_path;

/// Settings of a client of another service.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The server's URL: `http://HOST:PORT`, `https://HOST:PORT`, or `unix:///PATH` for a
    /// Unix domain socket.
    pub url: String,
    /// This process's service identity and the service the server must prove to be: set,
    /// every connection is mutual TLS (whatever the URL's scheme) and the server's certificate
    /// must name that service.
    pub tls: Option<(Arc<ServiceIdentity>, String)>,
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
            tls: None,
            connect_timeout: Duration::from_secs(2),
            default_deadline: Duration::from_secs(30),
        }
    }
}

impl ClientConfig {
    /// Calls `server_service` with mutual TLS when `identity` is set (plain otherwise).
    #[must_use]
    pub fn with_identity(
        mut self,
        identity: Option<Arc<ServiceIdentity>>,
        server_service: &str,
    ) -> Self {
        self.tls = identity.map(|identity| (identity, server_service.to_string()));
        self
    }
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
#[error("invalid gRPC endpoint {url:?}: {source}")]
pub struct ClientError {
    url: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
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
    let error = |source: Box<dyn std::error::Error + Send + Sync>| ClientError {
        url: config.url.clone(),
        source,
    };
    let target = Target::parse(&config.url).map_err(|reason| error(reason.into()))?;
    if matches!(&target, Target::Tcp { https: true, .. }) && config.tls.is_none() {
        return Err(error(
            "https:// needs a service certificate (EASEL_TLS_CA, EASEL_TLS_CERT, EASEL_TLS_KEY)"
                .into(),
        ));
    }
    // The connectors below dial the real target; the endpoint's URI only names the authority.
    let endpoint = Endpoint::from_shared(target.endpoint_uri())
        .map_err(|source| error(source.into()))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let channel = match (target, &config.tls) {
        (Target::Unix(path), _) => {
            // A Unix socket is protected by its file permissions; no TLS on it.
            let path = Arc::new(path);
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path.as_path()).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
        }
        (Target::Tcp { host, port, .. }, Some((identity, server_service))) => {
            let server_name = ServiceIdentity::server_name(server_service)
                .map_err(|source| error(source.into()))?;
            let connector = identity.connector();
            let host = Arc::new(host);
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
                let (connector, server_name, host) =
                    (connector.clone(), server_name.clone(), host.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                    // Small frames must not wait behind the peer's delayed ACK.
                    tcp.set_nodelay(true)?;
                    let tls = connector.connect(server_name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
        }
        (Target::Tcp { .. }, None) => endpoint.connect_lazy(),
    };
    Ok(GrpcChannel {
        channel,
        caller: Arc::from(caller),
        default_deadline: config.default_deadline,
    })
}

/// Where a client connects.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Tcp {
        host: String,
        port: u16,
        https: bool,
    },
    Unix(PathBuf),
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err("a unix:// URL needs an absolute path (unix:///run/jobs.sock)".into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let parsed = url::Url::parse(url).map_err(|error| error.to_string())?;
        let https = match parsed.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?} (http, https or unix)"
                ));
            }
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| "the URL has no host".to_string())?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed
            .port_or_known_default()
            .ok_or_else(|| "the URL has no port".to_string())?;
        Ok(Target::Tcp { host, port, https })
    }

    /// The URI the channel puts on requests (`:authority`), always `http` so tonic leaves the
    /// connection to our connectors.
    fn endpoint_uri(&self) -> String {
        match self {
            Target::Tcp { host, port, .. } if host.contains(':') => {
                format!("http://[{host}]:{port}")
            }
            Target::Tcp { host, port, .. } => format!("http://{host}:{port}"),
            Target::Unix(_) => "http://localhost".to_string(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_tcp_or_unix_targets() {
        assert_eq!(
            Target::parse("http://127.0.0.1:50052").unwrap(),
            Target::Tcp {
                host: "127.0.0.1".into(),
                port: 50052,
                https: false
            }
        );
        assert_eq!(
            Target::parse("https://jobs:50052").unwrap().endpoint_uri(),
            "http://jobs:50052"
        );
        assert_eq!(
            Target::parse("unix:///run/easel/jobs.sock").unwrap(),
            Target::Unix(PathBuf::from("/run/easel/jobs.sock"))
        );
        assert!(Target::parse("unix://relative.sock").is_err());
        assert!(Target::parse("ftp://x:1").is_err());
        assert_eq!(
            Target::parse("http://[::1]:5").unwrap().endpoint_uri(),
            "http://[::1]:5"
        );
    }

    #[tokio::test]
    async fn https_without_a_certificate_is_refused() {
        let error = connect_lazy(&ClientConfig::new("https://jobs:1"), "test").unwrap_err();
        assert!(error.to_string().contains("EASEL_TLS_CERT"), "{error}");
    }
}
