//! Test helpers that use the real infrastructure, isolated per test: a throwaway PostgreSQL
//! database, a Redis key prefix (or a private `redis-server` for tests that kill it), and an
//! in-process OTLP trace receiver.
//!
//! Tests run in parallel, so every helper hands out something no other test touches.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use sea_orm::{ConnectionTrait, Database};
use tokio::sync::Notify;

/// The server the tests' databases live on; `EASEL_TEST_POSTGRES_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("EASEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// The tests' Redis; `EASEL_TEST_REDIS_URL` overrides it.
pub fn redis_url() -> String {
    std::env::var("EASEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A PostgreSQL database of its own, dropped when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
    /// The server's admin URL, to drop the database on.
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the tests' server.
    pub async fn postgres() -> TestDatabase {
        TestDatabase::postgres_on(&postgres_admin_url()).await
    }

    /// Creates a fresh, empty database on the server of `admin_url` (a private server that a
    /// test stops and starts, for example).
    pub async fn postgres_on(admin_url: &str) -> TestDatabase {
        let admin_url = admin_url.to_string();
        let name = format!("easel_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("cannot reach PostgreSQL at {admin_url}: {error}"));
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        }
    }

    /// A SQLite database in a temporary file (the embedded mode's kind).
    pub fn sqlite(dir: &std::path::Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{}.db", uuid::Uuid::new_v4().simple()))
                .display()
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop may run inside or outside a runtime; a thread with its own runtime works in both.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// A Redis key prefix of its own; its keys are deleted when this value is dropped.
#[derive(Debug)]
pub struct TestRedis {
    /// The Redis URL.
    pub url: String,
    /// Every key the test makes must start with this, e.g. `easel-test-3f2a…:`.
    pub prefix: String,
}

impl TestRedis {
    /// A fresh prefix on the tests' Redis.
    pub fn new() -> TestRedis {
        TestRedis::on(&redis_url())
    }

    /// A fresh prefix on the Redis of `url` (a private server that a test restarts, for example).
    pub fn on(url: &str) -> TestRedis {
        TestRedis {
            url: url.to_string(),
            prefix: format!("easel-test-{}:", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        TestRedis::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut connection)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut connection);
        }
    }
}

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

/// An OTLP/gRPC trace collector in the test process: point `OTEL_EXPORTER_OTLP_ENDPOINT` (or a
/// [`crate::TelemetryConfig`]) at [`OtlpReceiver::endpoint`] and assert on what arrives.
#[derive(Clone, Debug)]
pub struct OtlpReceiver {
    address: SocketAddr,
    collected: Arc<Collected>,
}

#[derive(Debug, Default)]
struct Collected {
    spans: Mutex<Vec<ReceivedSpan>>,
    arrived: Notify,
}

/// A span as received, with its service's name.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service_name: String,
    /// The span.
    pub span: Span,
}

impl ReceivedSpan {
    /// The trace id in lowercase hex.
    pub fn trace_id(&self) -> String {
        hex_string(&self.span.trace_id)
    }

    /// The span id in lowercase hex.
    pub fn span_id(&self) -> String {
        hex_string(&self.span.span_id)
    }

    /// The parent span id in lowercase hex (empty for a root).
    pub fn parent_span_id(&self) -> String {
        hex_string(&self.span.parent_span_id)
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[derive(Clone)]
struct ReceiverService {
    collected: Arc<Collected>,
}

#[tonic::async_trait]
impl TraceService for ReceiverService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .iter()
                .flat_map(|resource| resource.attributes.iter())
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref())
                .and_then(|value| match &value.value {
                    Some(
                        opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(name),
                    ) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    received.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        span,
                    });
                }
            }
        }
        if let Ok(mut spans) = self.collected.spans.lock() {
            spans.extend(received);
        }
        self.collected.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    /// Starts the receiver on a loopback port; it runs until the test's runtime ends.
    pub async fn start() -> OtlpReceiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|error| panic!("cannot bind the OTLP receiver: {error}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|error| panic!("no local address: {error}"));
        let collected = Arc::new(Collected::default());
        let service = TraceServiceServer::new(ReceiverService {
            collected: collected.clone(),
        });
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
        });
        OtlpReceiver { address, collected }
    }

    /// The endpoint URL for the exporter.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.collected
            .spans
            .lock()
            .map(|spans| spans.clone())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the spans received, or the deadline passes; returns the
    /// spans either way so the test can assert and show them.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let arrived = self.collected.arrived.notified();
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= until {
                return spans;
            }
            let _ = tokio::time::timeout_at(until, arrived).await;
        }
    }
}

/// A service binary running as a child process on ephemeral loopback ports.
#[derive(Debug)]
pub struct ServiceProcess {
    child: tokio::process::Child,
    /// The binary and the variables it was started with, for [`ServiceProcess::restart`].
    binary: std::path::PathBuf,
    variables: Vec<(String, String)>,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its admin address.
    pub admin: SocketAddr,
    output: Arc<Mutex<Vec<String>>>,
    /// Reads stdout to its end; finished once the process and its children closed it.
    collector: Option<tokio::task::JoinHandle<()>>,
}

impl ServiceProcess {
    /// Starts `binary` with `variables` (plus ephemeral ports and JSON logs) and waits, up to
    /// 60 s, for its `listening` log line.
    pub async fn spawn(binary: &std::path::Path, variables: &[(&str, &str)]) -> ServiceProcess {
        use tokio::io::AsyncBufReadExt;

        let mut command = tokio::process::Command::new(binary);
        command
            .env("EASEL_GRPC_LISTEN", "127.0.0.1:0")
            .env("EASEL_ADMIN_LISTEN", "127.0.0.1:0")
            .env("EASEL_LOG_FORMAT", "json")
            .env("EASEL_LOG", "info")
            .envs(variables.iter().copied())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let output = Arc::new(Mutex::new(Vec::new()));

        let addresses = tokio::time::timeout(Duration::from_secs(60), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut seen) = output.lock() {
                    seen.push(line.clone());
                }
                let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if event["message"] == "listening" {
                    let grpc = event["grpc"].as_str().and_then(|a| a.parse().ok());
                    let admin = event["admin"].as_str().and_then(|a| a.parse().ok());
                    if let (Some(grpc), Some(admin)) = (grpc, admin) {
                        return Some((grpc, admin));
                    }
                }
            }
            None
        })
        .await
        .ok()
        .flatten();
        let Some((grpc, admin)) = addresses else {
            let seen = output
                .lock()
                .map(|lines| lines.join("\n"))
                .unwrap_or_default();
            panic!(
                "{} did not report its ports; output:\n{seen}",
                binary.display()
            );
        };

        let seen = output.clone();
        let collector = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(mut seen) = seen.lock() {
                    seen.push(line);
                }
            }
        });
        ServiceProcess {
            child,
            binary: binary.to_path_buf(),
            variables: variables
                .iter()
                .map(|(name, value)| ((*name).to_string(), (*value).to_string()))
                .collect(),
            grpc,
            admin,
            output,
            collector: Some(collector),
        }
    }

    /// The variables the process was started with (without the ports and log settings).
    pub fn variables(&self) -> &[(String, String)] {
        &self.variables
    }

    /// Starts the process again (after it exited, or it is killed first) with the same binary,
    /// variables and ports, the way a supervisor restarts a crashed service: clients find it
    /// where it was. Waits for its `listening` line like [`ServiceProcess::spawn`].
    pub async fn restart(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill().await;
        }
        let grpc = self.grpc.to_string();
        let admin = self.admin.to_string();
        let mut variables: Vec<(&str, &str)> = self
            .variables
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        variables.push(("EASEL_GRPC_LISTEN", &grpc));
        variables.push(("EASEL_ADMIN_LISTEN", &admin));
        let mut fresh = ServiceProcess::spawn(&self.binary, &variables).await;
        // Keep the original variables (without the pinned ports) for the next restart.
        fresh.variables = std::mem::take(&mut self.variables);
        *self = fresh;
    }

    /// The gRPC base URL.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The admin base URL.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// Everything the process logged so far.
    pub fn output(&self) -> Vec<String> {
        self.output
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with the system's `kill`.
    pub async fn signal(&self, name: &str) {
        let status = tokio::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .await
            .unwrap_or_else(|error| panic!("cannot run kill: {error}"));
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, up to `deadline`; `None` if it is still running.
    ///
    /// After the exit it also waits (within the same deadline) until everything the process
    /// wrote is read, so [`ServiceProcess::output`] holds its last lines.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let until = tokio::time::Instant::now() + deadline;
        let status = tokio::time::timeout_at(until, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)?;
        if let Some(collector) = self.collector.take() {
            let _ = tokio::time::timeout_at(until, collector).await;
        }
        Some(status)
    }
}

/// Checks a service binary the way an operator's probes would: it reports SERVING over
/// `grpc.health.v1` for each of `services`, lists them over reflection, serves `/metrics` with
/// the gRPC series, `/healthz` and `/readyz`, and after SIGTERM exits 0 within its grace period.
pub async fn check_service_process(
    binary: &std::path::Path,
    services: &[&str],
    variables: &[(&str, &str)],
) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    let grace = "3s";
    let mut all_variables = vec![("EASEL_SHUTDOWN_GRACE", grace)];
    all_variables.extend_from_slice(variables);
    let mut process = ServiceProcess::spawn(binary, &all_variables).await;

    let channel = tonic::transport::Endpoint::from_shared(process.grpc_url())
        .unwrap_or_else(|error| panic!("bad url: {error}"))
        .connect()
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {}: {error}", process.grpc_url()));
    let mut health = HealthClient::new(channel.clone());
    for service in services.iter().copied().chain([""]) {
        let status = health
            .check(HealthCheckRequest {
                service: service.to_string(),
            })
            .await
            .unwrap_or_else(|error| panic!("health check of {service:?} failed: {error}"))
            .into_inner()
            .status;
        assert_eq!(
            status,
            ServingStatus::Serving as i32,
            "{service:?} is not SERVING"
        );
    }

    let listed = reflection_services(channel).await;
    for service in services {
        assert!(
            listed.iter().any(|name| name == service),
            "{service} not in {listed:?}"
        );
    }

    let http = reqwest::Client::new();
    // A call is counted once its response has been sent, which can be a moment after the
    // client read it: look again until the series shows up or the deadline passes.
    let metrics_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = http
            .get(format!("{}/metrics", process.admin_url()))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET /metrics failed: {error}"));
        assert_eq!(metrics.status(), 200);
        let body = metrics.text().await.unwrap_or_default();
        if body.contains("grpc_server_requests_total")
            && body.contains("method=\"Check\"")
            && body.contains("code=\"Ok\"")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < metrics_deadline,
            "the health checks are not in /metrics:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{}{path}", process.admin_url()))
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET {path} failed: {error}"));
        assert_eq!(response.status(), 200, "{path}");
    }

    process.signal("TERM").await;
    // The grace period plus the time a loaded CI machine needs to flush and exit.
    let status = process.wait_exit(Duration::from_secs(3 + 10)).await;
    let Some(status) = status else {
        panic!(
            "still running after the grace period:\n{}",
            process.output().join("\n")
        );
    };
    assert!(
        status.success(),
        "exit status {status}:\n{}",
        process.output().join("\n")
    );
    assert!(
        process
            .output()
            .iter()
            .any(|line| line.contains("\"stopped\"")),
        "no drained stop was logged:\n{}",
        process.output().join("\n")
    );
}

async fn reflection_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap_or_else(|error| panic!("reflection failed: {error}"))
        .into_inner();
    let Ok(Some(response)) = responses.message().await else {
        panic!("no reflection answer");
    };
    match response.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

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

/// The path of a workspace binary (e.g. `easel-storage`, `easel-comfy-sim`), built first if
/// needed, for tests that run another service as a real process. Services never depend on
/// each other's crates; their tests meet them as processes, the way production does.
///
/// The test command builds every binary before the tests start and says so with
/// `EASEL_TEST_BINARIES_BUILT=1`; then nothing is built here, so no test spends its time budget
/// compiling. Otherwise (a targeted `cargo nextest run -p …`) the whole workspace's binaries
/// are built once per test process, with the same feature set as the test build (`--tests`
/// turns on dev-dependency features): building one package alone would resolve other
/// features and recompile half the dependency tree next to the test build's copy.
pub fn workspace_binary(package: &str, binary: &str) -> std::path::PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);

    let exe = std::env::current_exe().unwrap_or_else(|error| panic!("no current exe: {error}"));
    // Test binaries live in target/<profile>/deps/.
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap_or_else(|| panic!("unexpected test binary location {}", exe.display()))
        .to_path_buf();
    let path = profile_dir.join(binary);

    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let prebuilt = std::env::var_os("EASEL_TEST_BINARIES_BUILT").is_some();
    if !prebuilt && !*built {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
        let mut command = std::process::Command::new(cargo);
        command.args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
        if profile_dir
            .file_name()
            .is_some_and(|name| name == "release")
        {
            command.arg("--release");
        }
        let status = command
            .status()
            .unwrap_or_else(|error| panic!("cannot run cargo to build {binary}: {error}"));
        assert!(status.success(), "building the workspace's binaries failed");
        *built = true;
    }
    assert!(
        path.exists(),
        "{} (package {package}) does not exist after building",
        path.display()
    );
    path
}
