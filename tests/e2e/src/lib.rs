//! The end-to-end harness: the whole platform as separate processes, the way it runs in
//! production. Each test starts its own [`Platform`]: databases of its own on the local
//! PostgreSQL, its own Redis key prefix, its own S3 server (`s3s-fs`), the ComfyUI simulator,
//! and the five service binaries wired to each other over loopback gRPC. Nothing of ours is
//! mocked; the simulator stands in for ComfyUI only.

pub mod edge;
pub mod grpc_web;
pub mod image;

use std::path::PathBuf;
use std::time::Duration;

use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::account::v1::{CreateApiKeyRequest, CreateUserRequest, LoginRequest, Role, Tier};
use easel_proto::jobs::v1::job_service_client::JobServiceClient;
use easel_test_support::{S3Server, ServiceProcess, TestDatabase, TestRedis, workspace_binary};
use tokio::io::AsyncBufReadExt;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// How long a test waits for something the platform should do in well under a second.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The storage service's download-link key in the tests (≥ 32 bytes).
const SIGNING_KEY: &str = "e2e-signing-key-0123456789abcdef0123456789";

/// What a test changes about the platform it starts.
#[derive(Clone, Debug, Default)]
pub struct PlatformOptions {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` of every service.
    pub otlp_endpoint: Option<String>,
    /// Extra variables of the auth service (tier limits, …).
    pub auth_env: Vec<(String, String)>,
    /// Extra variables of the gateway (CORS origins, body limit, …).
    pub gateway_env: Vec<(String, String)>,
    /// Extra flags of the simulator (delays, checkpoints, …).
    pub sim_args: Vec<String>,
    /// A directory of `easel certs generate` output: every service then authenticates the
    /// others with mutual TLS (`EASEL_TLS_*`).
    pub tls_dir: Option<PathBuf>,
    /// Extra variables of the jobs service, applied last (they override the wiring).
    pub jobs_env: Vec<(String, String)>,
    /// A Redis of the test's own instead of the shared one (a server it restarts).
    pub redis_url: Option<String>,
    /// A PostgreSQL server of the test's own for every database (a server it restarts).
    pub postgres_admin_url: Option<String>,
}

/// A user the test acts as.
#[derive(Clone, Debug)]
pub struct User {
    /// `usr_…`.
    pub id: String,
    /// Their email.
    pub email: String,
    /// An API key of theirs.
    pub api_key: String,
}

/// The ComfyUI simulator as a process of its own.
#[derive(Debug)]
pub struct Simulator {
    child: tokio::process::Child,
    args: Vec<String>,
    /// Its base URL.
    pub url: String,
    /// Where it writes images.
    pub dir: tempfile::TempDir,
}

impl Simulator {
    /// Starts `easel-comfy-sim` on a free port with `args` and waits for its address.
    pub async fn start(args: &[String]) -> Simulator {
        let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
        let (child, url) = Simulator::spawn("127.0.0.1:0", dir.path(), args).await;
        Simulator {
            child,
            args: args.to_vec(),
            url,
            dir,
        }
    }

    /// Starts the simulator again on the same address, directory and flags (a GPU host coming
    /// back after [`Simulator::kill`]).
    pub async fn restart(&mut self) {
        let _ = self.child.kill().await;
        let listen = self.url.trim_start_matches("http://").to_string();
        let (child, url) = Simulator::spawn(&listen, self.dir.path(), &self.args).await;
        assert_eq!(url, self.url, "the simulator came back elsewhere");
        self.child = child;
    }

    async fn spawn(
        listen: &str,
        dir: &std::path::Path,
        args: &[String],
    ) -> (tokio::process::Child, String) {
        let binary = workspace_binary("easel-comfy-sim", "easel-comfy-sim");
        let mut child = tokio::process::Command::new(binary)
            .args(["--listen", listen, "--output-dir"])
            .arg(dir)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start the simulator: {error}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("no simulator stdout"));
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let address = tokio::time::timeout(DEADLINE, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(address) = line.strip_prefix("listening on ") {
                    return Some(address.trim().to_string());
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("the simulator did not report its address"));
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        (child, format!("http://{address}"))
    }

    /// Kills the simulator (a GPU host going away).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// The whole platform, every service a process of its own.
pub struct Platform {
    /// The public port: gRPC, gRPC-web and REST.
    pub gateway: ServiceProcess,
    /// Users, keys, tokens.
    pub auth: ServiceProcess,
    /// Jobs API and workers.
    pub jobs: ServiceProcess,
    /// Artifacts.
    pub storage: ServiceProcess,
    /// The ComfyUI pool.
    pub bridge: ServiceProcess,
    /// The simulator standing in for ComfyUI.
    pub simulator: Simulator,
    /// The first admin, made by `easel-auth bootstrap`.
    pub admin: User,
    /// A plain HTTP client for REST calls.
    pub http: reqwest::Client,
    /// The Redis prefix every service of this platform uses.
    pub redis: TestRedis,
    _s3: S3Server,
    _databases: Vec<TestDatabase>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("gateway", &self.gateway.grpc)
            .finish_non_exhaustive()
    }
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
        .collect()
}

async fn start_service(
    package: &str,
    variables: Vec<(String, String)>,
    options: &PlatformOptions,
) -> ServiceProcess {
    let binary = workspace_binary(package, package);
    let mut variables = variables;
    if let Some(dir) = &options.tls_dir {
        let service = package.trim_start_matches("easel-");
        let path = |file: String| dir.join(file).display().to_string();
        variables.push(("EASEL_TLS_CA".into(), path("ca.pem".into())));
        variables.push(("EASEL_TLS_CERT".into(), path(format!("{service}.pem"))));
        variables.push(("EASEL_TLS_KEY".into(), path(format!("{service}.key"))));
    }
    if let Some(endpoint) = &options.otlp_endpoint {
        variables.push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()));
        // Export spans promptly instead of every few seconds.
        variables.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()));
    }
    variables.push(("EASEL_ENVIRONMENT".into(), "test".into()));
    variables.push(("EASEL_SHUTDOWN_GRACE".into(), "3s".into()));
    let borrowed: Vec<(&str, &str)> = variables
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    ServiceProcess::spawn(&binary, &borrowed).await
}

/// Runs `easel-auth bootstrap` on the (empty) database and returns the first admin.
async fn bootstrap_admin(database_url: &str, email: &str) -> User {
    let binary = workspace_binary("easel-auth", "easel-auth");
    let output = tokio::process::Command::new(binary)
        .args(["bootstrap", "--email", email])
        .env("EASEL_DATABASE_URL", database_url)
        .env("EASEL_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|error| panic!("cannot run easel-auth bootstrap: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "bootstrap failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let api_key = find_api_key(&stdout)
        .unwrap_or_else(|| panic!("no API key in the bootstrap output:\n{stdout}"));
    let id = stdout
        .split_whitespace()
        .find(|word| word.starts_with("usr_"))
        .map(|word| word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_'))
        .unwrap_or_default()
        .to_string();
    User {
        id,
        email: email.to_string(),
        api_key,
    }
}

/// The first `easel_<prefix>_<secret>` API key in `text` (an alphanumeric prefix, then a secret
/// of at least 32 characters), skipping words that only start like one (`easel_comfy_sim:`).
pub fn find_api_key(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .find(|word| {
            let Some((prefix, secret)) = word
                .strip_prefix("easel_")
                .and_then(|rest| rest.split_once('_'))
            else {
                return false;
            };
            !prefix.is_empty()
                && prefix.chars().all(|c| c.is_ascii_alphanumeric())
                && secret.len() >= 32
                && secret
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
        .map(str::to_string)
}

impl Platform {
    /// Starts a platform with the default options.
    pub async fn start() -> Platform {
        Platform::start_with(PlatformOptions::default()).await
    }

    /// Starts a platform: databases, Redis prefix, S3 server, simulator, then the services in
    /// dependency order, each waited for until it reports its ports.
    pub async fn start_with(options: PlatformOptions) -> Platform {
        // Boxed: starting six processes is a large future.
        Box::pin(Platform::launch(options)).await
    }

    async fn launch(options: PlatformOptions) -> Platform {
        let postgres = options
            .postgres_admin_url
            .clone()
            .unwrap_or_else(easel_test_support::postgres_admin_url);
        let (auth_db, jobs_db, storage_db) = tokio::join!(
            TestDatabase::postgres_on(&postgres),
            TestDatabase::postgres_on(&postgres),
            TestDatabase::postgres_on(&postgres)
        );
        let redis = options
            .redis_url
            .as_deref()
            .map_or_else(TestRedis::new, TestRedis::on);
        let (s3, simulator) = tokio::join!(S3Server::start(), Simulator::start(&options.sim_args));
        let admin = bootstrap_admin(&auth_db.url, "admin@e2e.easel.test").await;

        let redis_vars = [
            ("EASEL_REDIS_URL", redis.url.as_str()),
            ("EASEL_REDIS_PREFIX", redis.prefix.as_str()),
        ];
        let mut auth_vars = owned(&[("EASEL_DATABASE_URL", auth_db.url.as_str())]);
        auth_vars.extend(owned(&redis_vars));
        auth_vars.extend(options.auth_env.iter().cloned());
        let storage_vars = owned(&[
            ("EASEL_DATABASE_URL", storage_db.url.as_str()),
            ("EASEL_STORAGE_URL", "s3://easel-e2e"),
            ("EASEL_S3_ENDPOINT", s3.endpoint.as_str()),
            ("EASEL_S3_REGION", "us-east-1"),
            ("EASEL_S3_ACCESS_KEY_ID", S3Server::ACCESS_KEY),
            ("EASEL_S3_SECRET_ACCESS_KEY", S3Server::SECRET_KEY),
            ("EASEL_S3_PATH_STYLE", "true"),
            ("EASEL_SIGNING_KEY", SIGNING_KEY),
        ]);
        let bridge_vars = owned(&[("EASEL_COMFYUI_URLS", simulator.url.as_str())]);
        let (auth, storage, bridge) = tokio::join!(
            start_service("easel-auth", auth_vars, &options),
            start_service("easel-storage", storage_vars, &options),
            start_service("easel-comfy-bridge", bridge_vars, &options),
        );

        let mut jobs_vars = owned(&[
            ("EASEL_DATABASE_URL", jobs_db.url.as_str()),
            ("EASEL_JOBS_ROLE", "all"),
        ]);
        jobs_vars.extend(owned(&redis_vars));
        jobs_vars.push(("EASEL_BRIDGE_URL".into(), bridge.grpc_url()));
        jobs_vars.push(("EASEL_STORAGE_URL".into(), storage.grpc_url()));
        jobs_vars.push(("EASEL_AUTH_URL".into(), auth.grpc_url()));
        jobs_vars.extend(options.jobs_env.iter().cloned());
        let jobs = start_service("easel-jobs", jobs_vars, &options).await;

        let mut gateway_vars = owned(&redis_vars);
        gateway_vars.push(("EASEL_AUTH_URL".into(), auth.grpc_url()));
        gateway_vars.push(("EASEL_JOBS_URL".into(), jobs.grpc_url()));
        gateway_vars.push(("EASEL_BRIDGE_URL".into(), bridge.grpc_url()));
        gateway_vars.push(("EASEL_STORAGE_HTTP_URL".into(), storage.admin_url()));
        gateway_vars.extend(options.gateway_env.iter().cloned());
        let gateway = start_service("easel-gateway", gateway_vars, &options).await;

        Platform {
            gateway,
            auth,
            jobs,
            storage,
            bridge,
            simulator,
            admin,
            http: reqwest::Client::new(),
            redis,
            _s3: s3,
            _databases: vec![auth_db, jobs_db, storage_db],
        }
    }

    /// The gateway's base URL (every protocol).
    pub fn url(&self) -> String {
        self.gateway.grpc_url()
    }

    /// A gRPC channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .unwrap_or_else(|error| panic!("bad gateway url: {error}"))
            .connect()
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the gateway: {error}"))
    }

    /// The public job API as `user`, over gRPC.
    pub async fn jobs_client(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    /// The account API, over gRPC.
    pub async fn account_client(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel().await)
    }

    /// A new user of `tier`, with a password and an API key of their own.
    pub async fn create_user(&self, tier: Tier) -> User {
        let email = format!("user-{}@e2e.easel.test", uuid::Uuid::new_v4().simple());
        let password = format!("pw-{}", uuid::Uuid::new_v4());
        let mut account = self.account_client().await;
        let created = account
            .create_user(with_key(
                CreateUserRequest {
                    email: email.clone(),
                    password: password.clone(),
                    tier: tier as i32,
                    role: Role::User as i32,
                },
                &self.admin.api_key,
            ))
            .await
            .unwrap_or_else(|status| panic!("CreateUser failed: {status:?}"))
            .into_inner();
        let token = account
            .login(tonic::Request::new(LoginRequest {
                email: email.clone(),
                password,
            }))
            .await
            .unwrap_or_else(|status| panic!("Login failed: {status:?}"))
            .into_inner()
            .access_token
            .unwrap_or_else(|| panic!("Login returned no token"))
            .token;
        let mut request = tonic::Request::new(CreateApiKeyRequest {
            name: "e2e".into(),
            scopes: Vec::new(),
            ttl: None,
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}"))
                .unwrap_or_else(|error| panic!("bad token: {error}")),
        );
        let key = account
            .create_api_key(request)
            .await
            .unwrap_or_else(|status| panic!("CreateApiKey failed: {status:?}"))
            .into_inner();
        User {
            id: created.user.map(|user| user.id).unwrap_or_default(),
            email,
            api_key: key.secret,
        }
    }

    /// `POST /api/v1/jobs` as the holder of `api_key`.
    pub async fn submit_rest(
        &self,
        api_key: &str,
        body: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(format!("{}/api/v1/jobs", self.url()))
            .header("x-api-key", api_key)
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        request
            .send()
            .await
            .unwrap_or_else(|error| panic!("POST /api/v1/jobs failed: {error}"))
    }

    /// `GET {path}` on the gateway as the holder of `api_key`, as JSON.
    pub async fn get_json(&self, api_key: &str, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url()))
            .header("x-api-key", api_key)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} failed: {error}"));
        let status = response.status().as_u16();
        let body = response.json().await.unwrap_or(serde_json::Value::Null);
        (status, body)
    }

    /// Follows the job's WebSocket until the server closes it, returning every event.
    pub async fn watch_ws(&self, api_key: &str, job_id: &str) -> Vec<serde_json::Value> {
        use futures::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;

        let url = format!("{}/ws/jobs/{job_id}", self.url().replacen("http", "ws", 1));
        let mut request = url
            .into_client_request()
            .unwrap_or_else(|error| panic!("bad ws url: {error}"));
        request.headers_mut().insert(
            "x-api-key",
            api_key
                .parse()
                .unwrap_or_else(|error| panic!("bad key header: {error}")),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .unwrap_or_else(|error| panic!("WebSocket connect failed: {error}"));
        let mut events = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while let Some(message) = socket.next().await {
                match message {
                    Ok(Message::Text(text)) => events.push(
                        serde_json::from_str(text.as_str())
                            .unwrap_or_else(|error| panic!("bad event {text}: {error}")),
                    ),
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the WebSocket did not close at a terminal status"));
        events
    }

    /// Reads the job's Server-Sent Events until the server ends the stream, starting after
    /// `last_event_id` when given. Returns `(id, data)` of every event.
    pub async fn watch_sse(
        &self,
        api_key: &str,
        job_id: &str,
        last_event_id: Option<&str>,
    ) -> Vec<(String, serde_json::Value)> {
        use futures::StreamExt;

        let mut request = self
            .http
            .get(format!("{}/api/v1/jobs/{job_id}/events", self.url()))
            .header("x-api-key", api_key)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET events failed: {error}"));
        assert_eq!(response.status(), 200, "SSE answer");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content type {content_type}"
        );
        let mut body = response.bytes_stream();
        let mut buffer = String::new();
        let mut events = Vec::new();
        tokio::time::timeout(DEADLINE, async {
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut id = String::new();
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(value) = line.strip_prefix("id:") {
                            id = value.trim().to_string();
                        } else if let Some(value) = line.strip_prefix("data:") {
                            data.push_str(value.trim_start());
                        }
                    }
                    if !data.is_empty() {
                        let data = serde_json::from_str(&data)
                            .unwrap_or_else(|error| panic!("bad SSE data {data}: {error}"));
                        events.push((id, data));
                    }
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the event stream did not end at a terminal status"));
        events
    }

    /// Downloads `url` (a signed output link) and returns its bytes.
    pub async fn download(&self, url: &str) -> (u16, Vec<u8>) {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .unwrap_or_else(|error| panic!("download failed: {error}"));
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default().to_vec();
        (status, bytes)
    }
}

/// `message` as a request carrying `api_key` in `x-api-key`.
pub fn with_key<T>(message: T, api_key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "x-api-key",
        MetadataValue::try_from(api_key).unwrap_or_else(|error| panic!("bad key: {error}")),
    );
    request
}

/// The path of a file of this repository.
pub fn repository_file(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A proto3-JSON integer (64-bit ones travel as strings) as `u64`.
pub fn json_u64(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::Number(number) => number.as_u64(),
        serde_json::Value::String(text) => text.parse().ok(),
        _ => None,
    }
}

/// The status a job event reports: a snapshot's status or a status change's.
pub fn event_status(event: &serde_json::Value) -> Option<&str> {
    event["status"].as_str()
}

/// Whether `status` (a REST status word) is terminal.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled" | "expired")
}

/// A raw ComfyUI API-format graph of weight-free nodes: a solid image, saved.
pub fn solid_image_graph(width: i64, height: i64) -> serde_json::Value {
    serde_json::json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": width, "height": height, "batch_size": 1, "color": 3_355_443}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "e2e"}}
    })
}
