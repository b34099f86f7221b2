//! A byte relay between TCP and Unix sockets. A Unix socket is a file, seen from every network
//! namespace, so relays on both sides of a namespace boundary carry a connection across it.

use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite};

/// One side of a relay.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A TCP address, `tcp:127.0.0.1:8000`.
    Tcp(String),
    /// A Unix socket path, `unix:/tmp/x.sock`.
    Unix(PathBuf),
}

impl std::str::FromStr for Endpoint {
    type Err = String;

    fn from_str(text: &str) -> Result<Endpoint, String> {
        if let Some(address) = text.strip_prefix("tcp:") {
            Ok(Endpoint::Tcp(address.to_string()))
        } else if let Some(path) = text.strip_prefix("unix:") {
            Ok(Endpoint::Unix(path.into()))
        } else {
            Err(format!("{text:?} is neither tcp:ADDRESS nor unix:PATH"))
        }
    }
}

/// A connected stream of either kind.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A bound listener of either kind.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix.
    Unix(tokio::net::UnixListener),
}

impl Listener {
    /// Binds `endpoint` (a stale Unix socket file is replaced).
    pub async fn bind(endpoint: &Endpoint) -> std::io::Result<Listener> {
        match endpoint {
            Endpoint::Tcp(address) => Ok(Listener::Tcp(
                tokio::net::TcpListener::bind(address.as_str()).await?,
            )),
            Endpoint::Unix(path) => {
                let _ = std::fs::remove_file(path);
                Ok(Listener::Unix(tokio::net::UnixListener::bind(path)?))
            }
        }
    }

    async fn accept(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Box::new(stream)
            }
            Listener::Unix(listener) => Box::new(listener.accept().await?.0),
        })
    }
}

async fn connect(endpoint: &Endpoint) -> std::io::Result<Box<dyn Stream>> {
    Ok(match endpoint {
        Endpoint::Tcp(address) => {
            let stream = tokio::net::TcpStream::connect(address.as_str()).await?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
        Endpoint::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
    })
}

/// Accepts on `listener` forever and carries every connection to `target()` (asked per
/// connection, so the target can be set after the relay starts).
pub async fn serve(listener: Listener, target: impl Fn() -> Option<Endpoint>) {
    loop {
        let Ok(mut inbound) = listener.accept().await else {
            continue;
        };
        let Some(target) = target() else {
            // No target yet: refuse by closing.
            continue;
        };
        tokio::spawn(async move {
            if let Ok(mut outbound) = connect(&target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
