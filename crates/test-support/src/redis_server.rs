//! A private `redis-server` for tests that kill or restart Redis.

use std::time::Duration;

/// A `redis-server` of the test's own on a free loopback port, with no persistence, for tests
/// that kill Redis: the shared one at 6379 serves every other test. Killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<tokio::process::Child>,
    /// Its port.
    pub port: u16,
    /// Its URL.
    pub url: String,
}

impl RedisServer {
    /// Starts one on a free port and waits (up to 60 s) until it answers `PING`.
    pub async fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let mut server = RedisServer {
            child: None,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        server.restart().await;
        server
    }

    /// Whether it answers `PING` now.
    pub async fn answers(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return false;
        };
        let ping = async {
            let mut connection = client.get_multiplexed_async_connection().await.ok()?;
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Some(_))
        )
    }

    /// Kills it with SIGKILL (a crash: no shutdown, its data gone) and waits for the exit.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill() sends SIGKILL and waits for the exit.
            let _ = child.kill().await;
        }
    }

    /// Starts it again, empty, on the same port, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let child = tokio::process::Command::new("redis-server")
                .args(["--port", &self.port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start redis-server: {error}"));
            self.child = Some(child);
            while tokio::time::Instant::now() < deadline {
                if self.answers().await {
                    return;
                }
                // The port may still be held by the killed server's socket: start again.
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|child| child.try_wait().ok().flatten())
                    .is_some();
                if exited {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "redis-server on port {} did not answer within 60 s",
                self.port
            );
        }
    }
}
