//! Private Redis and PostgreSQL servers, started by the suite on free loopback ports so it can
//! kill and restart them. The shared servers (127.0.0.1:6379 and :5432) serve every other test
//! on the machine and are never touched.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a server may take to start on a busy machine.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
        .port()
}

/// Waits until `address` accepts connections, or panics with `what` after the deadline.
async fn wait_listening(address: SocketAddr, what: &str) {
    let until = tokio::time::Instant::now() + START_DEADLINE;
    while tokio::net::TcpStream::connect(address).await.is_err() {
        assert!(
            tokio::time::Instant::now() < until,
            "{what} did not listen on {address} within {START_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A `redis-server` of the suite's own, without persistence: a restart comes back empty, like
/// a Redis whose pod was replaced.
#[derive(Debug)]
pub struct RedisServer {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl RedisServer {
    /// Starts `redis-server` (`EASEL_CHAOS_REDIS_SERVER` names another binary) on a free port.
    pub async fn start() -> RedisServer {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let port = free_port();
        let child = RedisServer::spawn(dir.path(), port);
        let server = RedisServer { child, dir, port };
        wait_listening(server.address(), "redis-server").await;
        server
    }

    fn spawn(dir: &Path, port: u16) -> tokio::process::Child {
        let binary =
            std::env::var("EASEL_CHAOS_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        tokio::process::Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {binary}: {error}"))
    }

    /// Its address.
    pub fn address(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://{}", self.address())
    }

    /// Kills the server (SIGKILL): every connection breaks, every key is gone.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// Starts it again, empty, on the same port.
    pub async fn start_again(&mut self) {
        let _ = self.child.kill().await;
        self.child = RedisServer::spawn(self.dir.path(), self.port);
        wait_listening(self.address(), "redis-server").await;
    }
}

/// A PostgreSQL cluster of the suite's own: `initdb` into a temporary directory and `pg_ctl`
/// on a free port, run as the `postgres` OS user (PostgreSQL refuses to run as root).
#[derive(Debug)]
pub struct PostgresCluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl PostgresCluster {
    /// The newest `/usr/lib/postgresql/*/bin`, or `EASEL_CHAOS_PG_BIN`.
    fn bin_dir() -> PathBuf {
        if let Ok(dir) = std::env::var("EASEL_CHAOS_PG_BIN") {
            return dir.into();
        }
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.path().join("bin"))
                    .filter(|bin| bin.join("pg_ctl").exists())
                    .collect()
            })
            .unwrap_or_default();
        versions.sort();
        versions.pop().unwrap_or_else(|| {
            panic!("no PostgreSQL binaries under /usr/lib/postgresql (set EASEL_CHAOS_PG_BIN)")
        })
    }

    /// Runs a PostgreSQL tool as the `postgres` user when this process is root.
    fn command(&self, tool: &str) -> std::process::Command {
        let tool = self.bin.join(tool);
        if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(tool);
            command
        } else {
            std::process::Command::new(tool)
        }
    }

    fn run(&self, what: &str, command: &mut std::process::Command) {
        let output = command
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap_or_else(|error| panic!("cannot run {what}: {error}"));
        assert!(
            output.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Creates and starts the cluster (trust authentication, loopback only, no fsync).
    pub async fn start() -> PostgresCluster {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap_or_else(|error| panic!("cannot run chown: {error}"));
            assert!(status.success(), "chown of the cluster directory failed");
        }
        let cluster = PostgresCluster {
            bin: PostgresCluster::bin_dir(),
            dir,
            port: free_port(),
        };
        let data = cluster.data_dir();
        let cluster = tokio::task::spawn_blocking(move || {
            cluster.run(
                "initdb",
                cluster
                    .command("initdb")
                    .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                    .arg(&data),
            );
            cluster
        })
        .await
        .unwrap_or_else(|error| panic!("initdb task: {error}"));
        cluster.start_again().await;
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The admin URL (database `postgres`).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) on its port and waits until it accepts connections.
    pub async fn start_again(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &options, "-w", "-t", "120", "start"]);
        tokio::task::spawn_blocking(move || {
            let output = command
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .output()
                .unwrap_or_else(|error| panic!("cannot run pg_ctl: {error}"));
            assert!(
                output.status.success(),
                "pg_ctl start failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        })
        .await
        .unwrap_or_else(|error| panic!("pg_ctl task: {error}"));
        wait_listening(SocketAddr::from(([127, 0, 0, 1], self.port)), "PostgreSQL").await;
    }

    /// Stops the server the hard way (`-m immediate`: every backend killed, crash recovery on
    /// the next start), as when its host goes away.
    pub async fn stop_immediately(&self) {
        self.stop("immediate").await;
    }

    async fn stop(&self, mode: &str) {
        let mut command = self.command("pg_ctl");
        command
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = tokio::task::spawn_blocking(move || command.status()).await;
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "60", "stop"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Whether this process runs as root (`id -u` is 0).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).trim() == "0")
}
