//! gRPC-web from a real browser through a real Envoy: a page on its own origin calls the
//! platform cross-origin with `fetch`, so the browser itself runs the CORS preflight and the
//! gRPC-web framing, and Envoy sits at the edge as in production.

use std::process::Stdio;

use base64::Engine;
use easel_e2e::grpc_web::decode_body;
use easel_e2e::{DEADLINE, Platform, PlatformOptions, repository_file};
use easel_proto::jobs::v1::{
    JobSpec, JobStatus, SubmitJobRequest, SubmitJobResponse, TextToImage, job_spec,
};
use easel_test_support::Envoy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves one small HTML page on a loopback origin of its own.
async fn page_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|error| panic!("cannot bind the page server: {error}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|error| panic!("no address: {error}"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = vec![0_u8; 4096];
                let _ = socket.read(&mut request).await;
                let page = "<!doctype html><title>easel</title><p>gRPC-web test page</p>";
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                    page.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    format!("http://{address}")
}

/// Where `scripts/setup.sh` installs playwright-core (`NODE_PATH` when set).
fn node_modules() -> String {
    if let Ok(path) = std::env::var("NODE_PATH") {
        return path;
    }
    let tools = std::env::var("EASEL_TOOLS_DIR").unwrap_or_else(|_| {
        format!(
            "{}/.cache/easel-tools",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    format!("{tools}/node_modules")
}

/// Runs the Playwright script once and returns its JSON answer.
async fn browser_call(
    page: &str,
    target: &str,
    path: &str,
    request: &[u8],
    key: &str,
) -> serde_json::Value {
    let script = repository_file("tests/e2e/browser/grpc-web.mjs");
    let request = base64::engine::general_purpose::STANDARD.encode(request);
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new("node")
            .arg(script)
            .env("NODE_PATH", node_modules())
            .args([page, target, path, &request, key])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("the browser did not finish"))
    .unwrap_or_else(|error| panic!("cannot run node: {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the browser script failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|error| panic!("bad script output {stdout}: {error}"))
}

#[tokio::test]
async fn chromium_submits_a_job_over_grpc_web_through_envoy() {
    let page = page_server().await;
    let platform = Platform::start_with(PlatformOptions {
        gateway_env: vec![
            ("EASEL_CORS_ORIGINS".into(), page.clone()),
            ("EASEL_TRUST_FORWARDED_FOR".into(), "true".into()),
        ],
        ..Default::default()
    })
    .await;
    let envoy = Envoy::start(platform.gateway.grpc).await;
    let key = platform.admin.api_key.clone();

    let request = prost::Message::encode_to_vec(&SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(TextToImage {
                prompt: "A browser-made sunset".into(),
                width: 128,
                height: 128,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    });
    let answer = browser_call(
        &page,
        &envoy.url,
        "/easel.jobs.v1.JobService/SubmitJob",
        &request,
        &key,
    )
    .await;
    assert!(
        answer["error"].is_null(),
        "the browser's fetch failed: {answer}"
    );
    assert_eq!(answer["status"], 200, "{answer}");
    let body = base64::engine::general_purpose::STANDARD
        .decode(answer["bodyBase64"].as_str().unwrap_or_default())
        .unwrap_or_else(|error| panic!("bad body: {error}"));
    let (messages, trailers) = decode_body(body.into());
    let grpc_status = trailers
        .iter()
        .find(|(name, _)| name == "grpc-status")
        .map(|(_, value)| value.clone())
        .or_else(|| {
            answer["headers"]["grpc-status"]
                .as_str()
                .map(str::to_string)
        });
    assert_eq!(grpc_status.as_deref(), Some("0"), "{answer}");
    let response: SubmitJobResponse = prost::Message::decode(messages[0].clone())
        .unwrap_or_else(|error| panic!("bad SubmitJobResponse: {error}"));
    let job = response.job.unwrap_or_default();
    assert!(job.id.starts_with("job_"), "{job:?}");
    assert_eq!(job.status(), JobStatus::Pending);

    // The job is visible over REST, through the same edge.
    let response = platform
        .http
        .get(format!("{}/api/v1/jobs/{}", envoy.url, job.id))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap_or_else(|error| panic!("GET through envoy failed: {error}"));
    assert_eq!(response.status(), 200);

    // A page on an origin not in the allowlist is stopped by the browser's CORS check.
    let stranger = page_server().await;
    let refused = browser_call(
        &stranger,
        &envoy.url,
        "/easel.jobs.v1.JobService/SubmitJob",
        &request,
        &key,
    )
    .await;
    assert!(
        refused["error"].is_string(),
        "a foreign origin got through: {refused}"
    );
}
