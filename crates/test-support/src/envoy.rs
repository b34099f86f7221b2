//! The real Envoy with the repository's configuration, in front of a gateway.

use std::net::SocketAddr;
use std::time::Duration;

/// The real Envoy in front of a gateway, configured with the repository's
/// `deploy/envoy/envoy.yaml` (each line tagged `# placeholder NAME` gets its test value);
/// killed on drop. `EASEL_TEST_ENVOY` names the binary; otherwise the one `scripts/setup.sh`
/// installs, then `envoy` on the `PATH`.
#[derive(Debug)]
pub struct Envoy {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    /// Envoy's listening URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
}

impl Envoy {
    fn binary() -> std::path::PathBuf {
        if let Ok(path) = std::env::var("EASEL_TEST_ENVOY") {
            return path.into();
        }
        if let Ok(home) = std::env::var("HOME") {
            let path = std::path::Path::new(&home).join(".cache/easel-tools/envoy-venv/bin/envoy");
            if path.exists() {
                return path;
            }
        }
        "envoy".into()
    }

    /// `deploy/envoy/envoy.yaml` with each `# placeholder NAME` line's value replaced; panics
    /// when a name is not in the file.
    pub fn render_config(values: &[(&str, String)]) -> String {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/envoy/envoy.yaml");
        let template = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
        let mut replaced = 0;
        let lines: Vec<String> = template
            .lines()
            .map(|line| {
                for (name, value) in values {
                    if line.trim_end().ends_with(&format!("# placeholder {name}"))
                        && let Some((key, _)) = line.split_once(':')
                    {
                        replaced += 1;
                        return format!("{key}: {value}");
                    }
                }
                line.to_string()
            })
            .collect();
        assert_eq!(
            replaced,
            values.len(),
            "a placeholder is missing from {}",
            path.display()
        );
        lines.join("\n")
    }

    /// Starts Envoy in front of `gateway` and waits, up to 60 s, until it reports ready.
    pub async fn start(gateway: SocketAddr) -> Envoy {
        let free_port = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .unwrap_or_else(|error| panic!("no free port: {error}"))
                .port()
        };
        let (listen, admin) = (free_port(), free_port());
        let config = Envoy::render_config(&[
            ("LISTEN_PORT", listen.to_string()),
            ("ADMIN_PORT", admin.to_string()),
            ("GATEWAY_ADDRESS", gateway.ip().to_string()),
            ("GATEWAY_PORT", gateway.port().to_string()),
        ]);
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let path = dir.path().join("envoy.yaml");
        std::fs::write(&path, config).unwrap_or_else(|error| panic!("write config: {error}"));
        let binary = Envoy::binary();
        let child = tokio::process::Command::new(&binary)
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "--log-level", "warn"])
            .args(["--concurrency", "1"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start {} (run scripts/setup.sh or set EASEL_TEST_ENVOY): {error}",
                    binary.display()
                )
            });
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let ready = http
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
        Envoy {
            child,
            _dir: dir,
            url: format!("http://127.0.0.1:{listen}"),
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
