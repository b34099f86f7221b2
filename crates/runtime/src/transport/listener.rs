//! Where a server accepts connections: a TCP port, or a Unix domain socket (the internal
//! services of `easel up`, reachable only by the process's own user).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener, UnixStream};

use super::limits::ConnectionPermit;

/// A bound listening socket.
#[derive(Debug)]
pub enum Listener {
    /// A TCP port.
    Tcp(TcpListener),
    /// A Unix domain socket at `path`; the file is removed when the listener is dropped.
    Unix {
        /// The socket.
        listener: UnixListener,
        /// Its path.
        path: PathBuf,
    },
}

impl From<TcpListener> for Listener {
    fn from(listener: TcpListener) -> Self {
        Listener::Tcp(listener)
    }
}

impl Listener {
    /// Binds a Unix socket at `path` (replacing a stale file left by a crash) and makes it
    /// readable and writable by the owner only.
    pub fn bind_unix(path: &Path) -> io::Result<Listener> {
        if path.exists() {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        restrict(path, 0o600)?;
        Ok(Listener::Unix {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// The TCP address, when this is a TCP listener.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(listener) => listener.local_addr(),
            Listener::Unix { path, .. } => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{} is a Unix socket, not a TCP port", path.display()),
            )),
        }
    }

    /// How clients reach this listener: `http://ADDRESS` or `unix://PATH`.
    pub fn url(&self) -> io::Result<String> {
        match self {
            Listener::Tcp(listener) => Ok(format!("http://{}", listener.local_addr()?)),
            Listener::Unix { path, .. } => Ok(format!("unix://{}", path.display())),
        }
    }

    /// Whether only this host can reach the listener (loopback or a Unix socket).
    pub fn is_local(&self) -> bool {
        match self {
            Listener::Tcp(listener) => listener
                .local_addr()
                .is_ok_and(|address| address.ip().is_loopback()),
            Listener::Unix { .. } => true,
        }
    }

    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                // Small gRPC frames must not wait on Nagle's algorithm: without TCP_NODELAY a
                // unary call can sit ~40 ms behind the peer's delayed ACK.
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
                Ok(Accepted::Tcp(stream, peer))
            }
            Listener::Unix { listener, .. } => {
                let (stream, _) = listener.accept().await?;
                Ok(Accepted::Unix(stream))
            }
        }
    }

    /// The URL, or a placeholder, for logs.
    pub fn describe(&self) -> String {
        self.url()
            .unwrap_or_else(|_| "an unknown address".to_string())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A freshly accepted connection.
pub(crate) enum Accepted {
    Tcp(tokio::net::TcpStream, SocketAddr),
    Unix(UnixStream),
}

/// Sets a file's or directory's permission bits.
pub fn restrict(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

pin_project_lite::pin_project! {
    /// A socket with its place under the connection caps: the place is freed when the socket
    /// is dropped, whoever holds it by then (hyper, or a WebSocket after an upgrade).
    pub(crate) struct Admitted<S> {
        #[pin]
        inner: S,
        _permit: ConnectionPermit,
    }
}

impl<S> Admitted<S> {
    pub(crate) fn new(inner: S, permit: ConnectionPermit) -> Self {
        Admitted {
            inner,
            _permit: permit,
        }
    }
}

impl<S: AsyncRead> AsyncRead for Admitted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for Admitted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}
