//! A service binary as a child process, and the operator's checks of one.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
