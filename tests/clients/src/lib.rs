//! The harness of the client tests: a whole [`Platform`] as processes, plus a small control
//! port the client test suites (pytest, Node's test runner) call for what only the harness can
//! do — make users of a tier, kill and restart the gateway. Each suite runs as a child
//! process with the platform's coordinates in its environment:
//!
//! | variable | what |
//! | --- | --- |
//! | `EASEL_URL` | the gateway (gRPC, gRPC-web, REST) |
//! | `EASEL_TEST_CONTROL` | the control port: `POST /users {"tier"}`, `POST /gateway/restart` |
//! | `EASEL_TEST_ENVOY_URL` | Envoy in front of the gateway, when started |

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use easel_e2e::{Platform, PlatformOptions};
use easel_proto::account::v1::Tier;
use tokio::sync::Mutex;

/// How long one client suite may run before it is taken as hung.
pub const SUITE_DEADLINE: Duration = Duration::from_secs(300);

/// The platform the client suites run against, and its control port.
pub struct Testbed {
    /// The platform (behind a lock: the control port restarts its gateway).
    pub platform: Arc<Mutex<Platform>>,
    /// The gateway's base URL.
    pub url: String,
    /// The control port's base URL.
    pub control_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The platform of the client suites: a slow-enough simulator that a watch can be interrupted
/// mid-job, a free tier whose rate limit a test reaches in a few calls, and an enterprise tier
/// that takes 50 jobs at once. The harness logs in each user it makes, many within a minute
/// from one address, so the login limit (a brute-force guard, not under test here) is raised.
pub fn client_suite_options() -> PlatformOptions {
    let pairs = [
        ("EASEL_TIER_FREE_REQUESTS_PER_MINUTE", "30"),
        ("EASEL_TIER_FREE_BURST", "4"),
        ("EASEL_TIER_ENTERPRISE_CONCURRENT_JOBS", "200"),
    ];
    PlatformOptions {
        auth_env: pairs
            .iter()
            .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
            .collect(),
        gateway_env: vec![
            ("EASEL_LOGIN_RATE_PER_MINUTE".into(), "100000".into()),
            ("EASEL_LOGIN_BURST".into(), "1000".into()),
        ],
        sim_args: vec!["--step-delay-ms".into(), "50".into()],
        ..Default::default()
    }
}

impl Testbed {
    /// Starts the platform with `options` and the control port.
    pub async fn start(options: PlatformOptions) -> Testbed {
        build_binaries();
        let platform = Platform::start_with(options).await;
        let url = platform.url();
        let platform = Arc::new(Mutex::new(platform));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the control port: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("no control address: {error}"));
        let app = Router::new()
            .route("/users", post(create_user))
            .route("/gateway/restart", post(restart_gateway))
            .with_state(platform.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Testbed {
            platform,
            url,
            control_url: format!("http://{address}"),
            server,
        }
    }

    /// The variables a client suite gets (see the module docs).
    pub fn environment(&self) -> Vec<(String, String)> {
        vec![
            ("EASEL_URL".into(), self.url.clone()),
            ("EASEL_TEST_CONTROL".into(), self.control_url.clone()),
        ]
    }
}

/// Builds (or finds built) every binary the platform runs, before any of them is started: a
/// build that waits for cargo's lock would otherwise stall the start of the others and eat
/// into their deadlines.
pub fn build_binaries() {
    for package in [
        "easel-comfy-sim",
        "easel-auth",
        "easel-storage",
        "easel-comfy-bridge",
        "easel-jobs",
        "easel-gateway",
        "easel",
    ] {
        easel_test_support::workspace_binary(package, package);
    }
}

/// `POST /users {"tier": "free" | "pro" | "enterprise"}`: a new user with an API key.
async fn create_user(
    State(platform): State<Arc<Mutex<Platform>>>,
    Json(body): Json<HashMap<String, String>>,
) -> Json<serde_json::Value> {
    let tier = match body.get("tier").map(String::as_str) {
        Some("free") => Tier::Free,
        Some("enterprise") => Tier::Enterprise,
        _ => Tier::Pro,
    };
    let user = platform.lock().await.create_user(tier).await;
    Json(serde_json::json!({"id": user.id, "email": user.email, "api_key": user.api_key}))
}

/// `POST /gateway/restart`: kills the gateway (SIGKILL, every stream on it dropped) and starts
/// it again on the same port; answers once it listens.
async fn restart_gateway(State(platform): State<Arc<Mutex<Platform>>>) -> Json<serde_json::Value> {
    let mut platform = platform.lock().await;
    platform.gateway.restart().await;
    Json(serde_json::json!({"restarted": true}))
}

/// Where `scripts/setup.sh` installs the tools (`EASEL_TOOLS_DIR`, else
/// `~/.cache/easel-tools`).
pub fn tools_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("EASEL_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/easel-tools")
}

/// Runs a client suite to its end and fails the test, showing its output, unless it exits 0.
pub async fn run_suite(
    program: &std::path::Path,
    args: &[&str],
    dir: &std::path::Path,
    environment: &[(String, String)],
) -> String {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .current_dir(dir)
        .env_remove("EASEL_API_KEY")
        .env_remove("EASEL_URL")
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SUITE_DEADLINE, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} did not finish", program.display()))
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", program.display()));
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{text}",
        program.display(),
        output.status
    );
    text
}

/// `easel up` as a user runs it, on a port and data directory of its own.
pub struct EaselUp {
    child: tokio::process::Child,
    /// The gateway's base URL.
    pub url: String,
    /// The development API key the banner printed.
    pub api_key: String,
    _data: tempfile::TempDir,
}

impl std::fmt::Debug for EaselUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EaselUp")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl EaselUp {
    /// Starts `easel up` with ComfyUI at `comfyui_url` and waits for its banner.
    pub async fn start(comfyui_url: &str) -> EaselUp {
        use tokio::io::AsyncBufReadExt;

        let data = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .unwrap_or_else(|error| panic!("no free port: {error}"))
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let mut child =
            tokio::process::Command::new(easel_test_support::workspace_binary("easel", "easel"))
                .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
                .arg(data.path())
                .env_remove("EASEL_REDIS_URL")
                .env_remove("REDIS_URL")
                .env_remove("EASEL_DEV_API_KEY")
                .env("EASEL_COMFYUI_URLS", comfyui_url)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .unwrap_or_else(|error| panic!("cannot start easel up: {error}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut banner = Vec::new();
        let ready = tokio::time::timeout(easel_e2e::DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                let done = line.contains("Ctrl-C stops everything");
                banner.push(line);
                if done {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let banner = banner.join("\n");
        assert!(ready, "easel up did not come up:\n{banner}");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let api_key = easel_e2e::find_api_key(&banner)
            .unwrap_or_else(|| panic!("no API key in the banner:\n{banner}"));
        EaselUp {
            child,
            url,
            api_key,
            _data: data,
        }
    }
}

impl Drop for EaselUp {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
