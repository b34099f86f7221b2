//! A real S3-compatible server (`s3s-fs`) per test.

use std::net::SocketAddr;
use std::time::Duration;

/// A real S3-compatible server for tests: `s3s-fs` as a child process on a free port over a
/// temporary directory, killed on drop. `EASEL_TEST_S3S_FS` names the binary; otherwise the
/// one `scripts/setup.sh` installs, then `s3s-fs` on the `PATH`.
#[derive(Debug)]
pub struct S3Server {
    child: tokio::process::Child,
    /// Its URL, e.g. `http://127.0.0.1:41234`.
    pub endpoint: String,
    /// The directory it keeps objects in.
    pub root: tempfile::TempDir,
}

impl S3Server {
    /// The access key id the server accepts.
    pub const ACCESS_KEY: &'static str = "easel-test-access";
    /// The secret access key the server accepts.
    pub const SECRET_KEY: &'static str = "easel-test-secret-key-0123456789";

    fn binary() -> std::path::PathBuf {
        if let Ok(path) = std::env::var("EASEL_TEST_S3S_FS") {
            return path.into();
        }
        if let Ok(home) = std::env::var("HOME") {
            let path = std::path::Path::new(&home).join(".cache/easel-tools/bin/s3s-fs");
            if path.exists() {
                return path;
            }
        }
        "s3s-fs".into()
    }

    /// Starts a server and waits until it accepts connections. The port is picked free and
    /// released for s3s-fs, so another process can take it in between: a server that exits
    /// (the bind failed) is started again on a new port. A busy machine can take long to
    /// start a process, so the wait is generous (`EASEL_TEST_S3_START_SECS`, default 120 s).
    pub async fn start() -> S3Server {
        let root = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let patience = std::env::var("EASEL_TEST_S3_START_SECS")
            .ok()
            .and_then(|secs| secs.parse().ok())
            .map_or(Duration::from_secs(120), Duration::from_secs);
        let deadline = tokio::time::Instant::now() + patience;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (mut child, address, log) = Self::spawn(root.path());
            loop {
                if tokio::net::TcpStream::connect(address).await.is_ok() {
                    return S3Server {
                        child,
                        endpoint: format!("http://{address}"),
                        root,
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
                    assert!(
                        attempts < 5 && tokio::time::Instant::now() < deadline,
                        "s3s-fs exited ({status}) {attempts} times; last output: {output}"
                    );
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "s3s-fs did not answer on {address} within {patience:?}"
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    /// Starts s3s-fs on a free port; its output goes to a temporary file, read if it exits.
    fn spawn(
        root: &std::path::Path,
    ) -> (tokio::process::Child, SocketAddr, tempfile::NamedTempFile) {
        // A free port: bind, read it, release it for s3s-fs.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap_or_else(|error| panic!("no free port: {error}"))
            .port();
        let log = tempfile::NamedTempFile::new().unwrap_or_else(|error| panic!("log: {error}"));
        let output = |log: &tempfile::NamedTempFile| {
            log.reopen()
                .map(std::process::Stdio::from)
                .unwrap_or_else(|error| panic!("log: {error}"))
        };
        let binary = Self::binary();
        let child = tokio::process::Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY])
            .args(["--secret-key", Self::SECRET_KEY])
            .arg(root)
            .stdin(std::process::Stdio::null())
            .stdout(output(&log))
            .stderr(output(&log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {} (run scripts/setup.sh or set EASEL_TEST_S3S_FS): {error}",
                    binary.display()
                )
            });
        (child, SocketAddr::from(([127, 0, 0, 1], port)), log)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
