//! The connection layer under every server (gRPC, the gateway's mixed port, admin): one
//! accept loop over hyper-util's HTTP/1.1 + HTTP/2 builder with a timer, so slow or idle
//! clients are cut off and one address cannot take every socket.
//!
//! - A connection must deliver a complete request head within the header-read timeout of
//!   opening (TLS handshake included) and, on HTTP/1.1, of becoming idle; otherwise it is
//!   closed. On HTTP/1.1 that timeout is therefore also the keep-alive idle timeout.
//! - HTTP/2 connections are pinged; a peer that does not answer within the keep-alive timeout
//!   is dropped. Streams per HTTP/2 connection are capped.
//! - Open connections are capped overall and per client IP; a connection over a cap is closed
//!   at once and counted in `server_connections_refused_total`.
//! - On shutdown the listener closes, HTTP/2 peers get GOAWAY, idle HTTP/1.1 connections
//!   close, and calls in flight finish (the caller bounds this with the grace period).

pub mod limits;
pub mod listener;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tower::ServiceExt;

use crate::metrics::names;

pub use limits::{ConnectionLimits, Refusal};
pub use listener::Listener;
pub use tls::{PeerService, ServiceIdentity};

use listener::{Accepted, Admitted};

/// How long the accept loop pauses after an error such as running out of descriptors, so it
/// does not spin while nothing can be accepted.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Connection-level limits of a server, from `EASEL_*` variables (see
/// [`crate::config::ServerConfig`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// `EASEL_HEADER_READ_TIMEOUT`: how long a connection may take to deliver a complete
    /// request head after opening or, on HTTP/1.1, after its previous response (default 10s).
    pub header_read_timeout: Duration,
    /// `EASEL_HTTP2_KEEPALIVE_INTERVAL`: how often HTTP/2 peers are pinged (default 20s).
    pub http2_keepalive_interval: Duration,
    /// `EASEL_HTTP2_KEEPALIVE_TIMEOUT`: how long a ping may go unanswered (default 10s).
    pub http2_keepalive_timeout: Duration,
    /// `EASEL_HTTP2_MAX_CONCURRENT_STREAMS`: streams at once on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
    /// `EASEL_MAX_CONNECTIONS`: open connections at once (default 10,000).
    pub max_connections: usize,
    /// `EASEL_MAX_CONNECTIONS_PER_ADDRESS`: open connections at once from one client IP
    /// (default 512). Behind a proxy every client shares the proxy's address: size for it.
    pub max_connections_per_address: usize,
}

impl ConnectionSettings {
    /// The defaults, with `max_streams` streams per HTTP/2 connection.
    pub fn with_max_streams(max_streams: u32) -> Self {
        ConnectionSettings {
            header_read_timeout: Duration::from_secs(10),
            http2_keepalive_interval: Duration::from_secs(20),
            http2_keepalive_timeout: Duration::from_secs(10),
            http2_max_concurrent_streams: max_streams,
            max_connections: 10_000,
            max_connections_per_address: 512,
        }
    }
}

/// What a server is, for logs and metrics, and its connection settings.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The service (`jobs`, `gateway`, …): the `service` label.
    pub service: String,
    /// Which of its servers (`grpc`, `public`, `admin`): the `server` label.
    pub server: &'static str,
    /// Timeouts and caps.
    pub settings: ConnectionSettings,
    /// Mutual TLS: when set, every connection must present a certificate from the service CA,
    /// and its service name reaches handlers as a [`PeerService`] extension.
    pub tls: Option<Arc<ServiceIdentity>>,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and waits for
/// the open connections to finish their calls (bounded by the caller).
pub async fn serve(
    listener: Listener,
    app: axum::Router,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let builder = Arc::new(http_builder(&options.settings));
    let limits = Arc::new(ConnectionLimits::new(
        options.settings.max_connections,
        options.settings.max_connections_per_address,
        &options.service,
        options.server,
    ));
    let graceful = GracefulShutdown::new();
    let tls = options.tls.as_ref().map(|identity| identity.acceptor());
    let labels = Arc::new([
        ("service", options.service.clone()),
        ("server", options.server.to_string()),
    ]);
    tracing::debug!(
        service = %options.service,
        server = options.server,
        address = %listener.describe(),
        "accepting connections"
    );
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let accepted = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Per-connection errors (reset before accept) are the peer's; resource errors
                // (EMFILE) pass once connections close.
                tracing::warn!(%error, server = options.server, "accepting a connection failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let connection = Connection {
            builder: builder.clone(),
            labels: labels.clone(),
            app: app.clone(),
            watcher: graceful.watcher(),
            tls: tls.clone(),
            header_read_timeout: options.settings.header_read_timeout,
        };
        match accepted {
            Accepted::Tcp(stream, peer) => {
                // Over a cap: dropping the socket closes it at once, before any byte is read.
                let Ok(permit) = limits.admit(Some(peer.ip())) else {
                    continue;
                };
                let local = stream.local_addr().ok().map(LocalAddr);
                tokio::spawn(connection.run(Admitted::new(stream, permit), Some(peer), local));
            }
            Accepted::Unix(stream) => {
                let Ok(permit) = limits.admit(None) else {
                    continue;
                };
                tokio::spawn(connection.run(Admitted::new(stream, permit), None, None));
            }
        }
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// The HTTP/1.1 + HTTP/2 connection builder with the timer and limits.
fn http_builder(settings: &ConnectionSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keepalive_interval)
        .keep_alive_timeout(settings.http2_keepalive_timeout)
        .max_concurrent_streams(settings.http2_max_concurrent_streams)
        // WebSockets over HTTP/2 (RFC 8441), as axum's own server allows.
        .enable_connect_protocol();
    builder
}

/// This server's own address on a TCP connection (a request extension): what the client
/// reached, e.g. for links when no public URL is configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalAddr(pub SocketAddr);

/// One accepted connection, served on its own task.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    labels: Arc<[(&'static str, String); 2]>,
    app: axum::Router,
    watcher: Watcher,
    tls: Option<tokio_rustls::TlsAcceptor>,
    header_read_timeout: Duration,
}

impl Connection {
    async fn run<S>(self, stream: S, peer: Option<SocketAddr>, local: Option<LocalAddr>)
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let first_request = Arc::new(Notify::new());
        let deadline = self.header_read_timeout;
        let labels = self.labels.clone();
        let served = self.handshake(stream, peer, local, first_request.clone());
        // hyper times out request heads on HTTP/1.1 once it knows the protocol; this bounds
        // what comes before: a silent socket, a partial HTTP/2 preface, the first HEADERS.
        let silent = async {
            if tokio::time::timeout(deadline, first_request.notified())
                .await
                .is_err()
            {
                return;
            }
            std::future::pending::<()>().await;
        };
        let timed_out = tokio::select! {
            timed_out = served => timed_out,
            () = silent => true,
        };
        if timed_out {
            metrics::counter!(names::SERVER_CONNECTIONS_TIMED_OUT, labels.as_slice()).increment(1);
            tracing::debug!(
                ?peer,
                "closed a connection that sent no request head in time"
            );
        }
    }

    /// Completes the TLS handshake when the server requires one (on this connection's task,
    /// never the accept loop's), then serves.
    async fn handshake<S>(
        self,
        stream: S,
        peer: Option<SocketAddr>,
        local: Option<LocalAddr>,
        first: Arc<Notify>,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let Some(acceptor) = self.tls.clone() else {
            return self.serve(stream, peer, local, None, first).await;
        };
        match acceptor.accept(stream).await {
            Ok(stream) => {
                let caller = tls::peer_service(stream.get_ref().1);
                self.serve(stream, peer, local, caller, first).await
            }
            Err(error) => {
                metrics::counter!(names::SERVER_TLS_HANDSHAKE_FAILURES, self.labels.as_slice())
                    .increment(1);
                tracing::debug!(%error, ?peer, "tls handshake refused");
                false
            }
        }
    }

    /// Serves the connection to its end; `true` when hyper closed it for a slow request head.
    async fn serve<S>(
        self,
        stream: S,
        peer: Option<SocketAddr>,
        local: Option<LocalAddr>,
        caller: Option<PeerService>,
        first_request: Arc<Notify>,
    ) -> bool
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let app = self.app;
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            first_request.notify_one();
            if let Some(peer) = peer {
                // What `into_make_service_with_connect_info` would insert, so handlers can
                // extract `ConnectInfo<SocketAddr>`.
                request.extensions_mut().insert(ConnectInfo(peer));
            }
            if let Some(local) = local {
                request.extensions_mut().insert(local);
            }
            if let Some(caller) = &caller {
                request.extensions_mut().insert(caller.clone());
            }
            let app = app.clone();
            async move {
                let response = app.oneshot(request.map(axum::body::Body::new)).await;
                Ok::<_, Infallible>(match response {
                    Ok(response) => response,
                    Err(never) => match never {},
                })
            }
        });
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        match self.watcher.watch(connection).await {
            Ok(()) => false,
            Err(error) => {
                let timed_out = error
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_timeout);
                if !timed_out {
                    tracing::debug!(error = %error, ?peer, "connection ended with an error");
                }
                timed_out
            }
        }
    }
}

/// Raises the soft limit of open descriptors to the hard limit, so the connection caps (not
/// the process's descriptor table) decide how many clients are served. Returns the new limit.
pub fn raise_descriptor_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        // Unlimited hard limit: the kernel's nr_open still caps it; leave the soft one.
        return Ok(limit.current.unwrap_or(u64::MAX));
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return Ok(hard);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_descriptor_limit_is_raised_to_the_hard_limit() {
        raise_descriptor_limit().unwrap();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        if limit.maximum.is_some() {
            assert_eq!(limit.current, limit.maximum);
        }
    }
}
