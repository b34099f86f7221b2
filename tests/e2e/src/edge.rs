//! The production edge in a test: the real Envoy running the Kubernetes edge configuration
//! itself (`deploy/k8s/base/envoy-config.yaml`: HTTPS with a certificate, HTTP redirecting to
//! HTTPS, HSTS, OTLP tracing, JSON access logs), its addresses, files and upstreams swapped
//! for the test's on the lines tagged `# placeholder NAME`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{DEADLINE, repository_file};

/// The name the edge's certificate carries (`easel certs generate`'s naming for `edge`).
pub const EDGE_NAME: &str = "edge.easel.internal";

/// What the edge sends its traffic to.
#[derive(Clone, Copy, Debug)]
pub struct EdgeUpstreams {
    /// The gateway's public port.
    pub gateway: SocketAddr,
    /// Storage's HTTP port (signed downloads).
    pub storage_http: SocketAddr,
    /// The OTLP/gRPC collector.
    pub collector: SocketAddr,
}

/// Envoy at the edge; killed on drop.
#[derive(Debug)]
pub struct EdgeEnvoy {
    child: tokio::process::Child,
    dir: tempfile::TempDir,
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// The plain HTTP listener (redirects only).
    pub http: SocketAddr,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
        .port()
}

fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("EASEL_TEST_ENVOY") {
        return path.into();
    }
    let tools = std::env::var("EASEL_TOOLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/easel-tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let path = Path::new(&tools).join("envoy-venv/bin/envoy");
    if path.exists() { path } else { "envoy".into() }
}

/// The edge configuration with each `# placeholder NAME` line's value replaced; panics when a
/// name is missing from the file, so the test and the file cannot drift apart silently.
pub fn render_edge_config(values: &[(&str, String)]) -> String {
    let path = repository_file("deploy/k8s/base/envoy-config.yaml");
    let template = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    let mut replaced = Vec::new();
    let lines: Vec<String> = template
        .lines()
        .map(|line| {
            for (name, value) in values {
                if line.trim_end().ends_with(&format!("# placeholder {name}"))
                    && let Some((key, _)) = line.split_once(':')
                {
                    replaced.push(*name);
                    return format!("{key}: {value}");
                }
            }
            line.to_string()
        })
        .collect();
    for (name, _) in values {
        assert!(
            replaced.contains(name),
            "placeholder {name} is missing from {}",
            path.display()
        );
    }
    lines.join("\n")
}

impl EdgeEnvoy {
    /// Starts Envoy with `cert_dir`'s `edge.pem`/`edge.key` in front of `upstreams` and waits
    /// until it reports ready.
    pub async fn start(cert_dir: &Path, upstreams: EdgeUpstreams) -> EdgeEnvoy {
        let (https, http, admin) = (free_port(), free_port(), free_port());
        let loopback = "127.0.0.1".to_string();
        let config = render_edge_config(&[
            ("ADMIN_ADDRESS", loopback.clone()),
            ("ADMIN_PORT", admin.to_string()),
            ("HTTPS_ADDRESS", loopback.clone()),
            ("HTTPS_PORT", https.to_string()),
            ("HTTP_ADDRESS", loopback.clone()),
            ("HTTP_PORT", http.to_string()),
            ("CERT_FILE", cert_dir.join("edge.pem").display().to_string()),
            ("KEY_FILE", cert_dir.join("edge.key").display().to_string()),
            ("GATEWAY_ADDRESS", upstreams.gateway.ip().to_string()),
            ("GATEWAY_PORT", upstreams.gateway.port().to_string()),
            ("STORAGE_ADDRESS", upstreams.storage_http.ip().to_string()),
            ("STORAGE_PORT", upstreams.storage_http.port().to_string()),
            ("OTLP_ADDRESS", upstreams.collector.ip().to_string()),
            ("OTLP_PORT", upstreams.collector.port().to_string()),
        ]);
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap_or_else(|error| panic!("write: {error}"));
        // The access log goes to stdout: keep it in a file the test reads.
        let log = std::fs::File::create(dir.path().join("access.log"))
            .unwrap_or_else(|error| panic!("access log file: {error}"));
        let binary = envoy_binary();
        let child = tokio::process::Command::new(&binary)
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .args(["--concurrency", "1"])
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {} (run scripts/setup.sh or set EASEL_TEST_ENVOY): {error}",
                    binary.display()
                )
            });
        let probe = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let ready = probe
                .get(format!("http://127.0.0.1:{admin}/ready"))
                .send()
                .await
                .is_ok_and(|response| response.status() == 200);
            if ready {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "Envoy did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let address = |port| SocketAddr::from(([127, 0, 0, 1], port));
        EdgeEnvoy {
            child,
            dir,
            https: address(https),
            http: address(http),
        }
    }

    /// The base URL clients use: the certificate's name, resolved to the listener.
    pub fn url(&self) -> String {
        format!("https://{EDGE_NAME}:{}", self.https.port())
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits until the access log holds a line containing every one of `needles` (Envoy
    /// flushes it about every second), or the deadline passes; returns the log either way.
    pub async fn wait_for_log_line(&self, needles: &[&str]) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let log = self.access_log();
            let found = log
                .lines()
                .any(|line| needles.iter().all(|needle| line.contains(needle)));
            if found || tokio::time::Instant::now() >= deadline {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EdgeEnvoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
