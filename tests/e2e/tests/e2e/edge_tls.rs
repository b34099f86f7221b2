//! TLS at the edge: the multi-process platform (its services on mutual TLS) behind the real
//! Envoy running the production edge configuration with a certificate from a test CA. REST,
//! Server-Sent Events, gRPC (unary and a stream), gRPC-web and a WebSocket all work over HTTPS;
//! plain HTTP is redirected; every HTTPS answer carries HSTS; the edge's span is the root of
//! the job's trace whatever trace context the client sent; the access log is JSON and holds no
//! credential.

use std::path::Path;
use std::sync::Arc;

use easel_e2e::edge::{EDGE_NAME, EdgeEnvoy, EdgeUpstreams};
use easel_e2e::grpc_web::{decode_body, frame};
use easel_e2e::{DEADLINE, Platform, PlatformOptions, event_status, is_terminal, with_key};
use easel_proto::jobs::v1::job_service_client::JobServiceClient;
use easel_proto::jobs::v1::{GetJobRequest, GetJobResponse, JobStatus, WatchJobRequest, job_event};
use easel_runtime::grpc::{ClientConfig, connect_lazy};
use easel_runtime::transport::ServiceIdentity;
use easel_runtime::transport::tls::dev;
use easel_test_support::OtlpReceiver;
use futures::StreamExt;
use rustls_pki_types::pem::PemObject;
use serde_json::json;

/// The services' certificates, and the edge's (`edge.easel.internal`), from one test CA.
const NAMES: &[&str] = &["gateway", "auth", "jobs", "storage", "comfy-bridge", "edge"];

/// A trace context a client might send; the edge must not continue it.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// An HTTPS client trusting only the test CA, reaching the edge by its certificate's name.
fn https_client(certs: &Path, edge: &EdgeEnvoy) -> reqwest::Client {
    let ca = std::fs::read(certs.join("ca.pem")).unwrap_or_else(|error| panic!("ca: {error}"));
    let ca = reqwest::Certificate::from_pem(&ca).unwrap_or_else(|error| panic!("ca: {error}"));
    reqwest::Client::builder()
        .tls_certs_only([ca])
        .resolve(EDGE_NAME, edge.https)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|error| panic!("client: {error}"))
}

/// Follows the job's WebSocket over TLS (HTTP/1.1 by ALPN, as browsers upgrade) until the
/// server closes it; returns every event.
async fn watch_wss(certs: &Path, edge: &EdgeEnvoy, key: &str, job: &str) -> Vec<serde_json::Value> {
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_file(certs.join("ca.pem"))
        .unwrap_or_else(|error| panic!("ca: {error}"));
    roots.add(ca).unwrap_or_else(|error| panic!("ca: {error}"));
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(edge.https)
        .await
        .unwrap_or_else(|error| panic!("connect: {error}"));
    let name = rustls_pki_types::ServerName::try_from(EDGE_NAME)
        .unwrap_or_else(|error| panic!("name: {error}"));
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap_or_else(|error| panic!("TLS handshake with the edge failed: {error}"));
    let mut request = format!("wss://{EDGE_NAME}:{}/ws/jobs/{job}", edge.https.port())
        .into_client_request()
        .unwrap_or_else(|error| panic!("bad ws url: {error}"));
    request.headers_mut().insert(
        "x-api-key",
        key.parse()
            .unwrap_or_else(|error| panic!("bad key header: {error}")),
    );
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls)
        .await
        .unwrap_or_else(|error| panic!("WebSocket over TLS failed: {error}"));
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

/// Reads the job's Server-Sent Events over HTTPS to the end, the credential in the query as a
/// browser's EventSource sends it; returns each event's data.
async fn watch_sse(
    https: &reqwest::Client,
    edge: &EdgeEnvoy,
    key: &str,
    job: &str,
) -> Vec<serde_json::Value> {
    let response = https
        .get(format!(
            "{}/api/v1/jobs/{job}/events?access_token={key}",
            edge.url()
        ))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap_or_else(|error| panic!("SSE over HTTPS failed: {error}"));
    assert_eq!(response.status(), 200, "SSE answer");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(chunk)) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the event stream did not end at a terminal status"));
    text.lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|data| {
            serde_json::from_str(data.trim())
                .unwrap_or_else(|error| panic!("bad SSE data {data}: {error}"))
        })
        .collect()
}

#[tokio::test]
async fn every_protocol_works_over_https_at_the_edge_and_http_is_redirected() {
    easel_runtime::install_crypto_provider();
    let certs = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
    dev::generate(certs.path(), NAMES, 1).unwrap_or_else(|error| panic!("certificates: {error}"));
    let receiver = OtlpReceiver::start().await;
    let platform = Platform::start_with(PlatformOptions {
        tls_dir: Some(certs.path().to_path_buf()),
        otlp_endpoint: Some(receiver.endpoint()),
        gateway_env: vec![("EASEL_TRUST_FORWARDED_FOR".into(), "true".into())],
        ..Default::default()
    })
    .await;
    let collector = receiver
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap_or_else(|error| panic!("collector address: {error}"));
    let edge = EdgeEnvoy::start(
        certs.path(),
        EdgeUpstreams {
            gateway: platform.gateway.grpc,
            storage_http: platform.storage.admin,
            collector,
        },
    )
    .await;
    let https = https_client(certs.path(), &edge);
    let key = platform.admin.api_key.clone();

    // REST over HTTPS, with a trace context of the client's own.
    let response = https
        .post(format!("{}/api/v1/jobs", edge.url()))
        .header("x-api-key", &key)
        .header(
            "traceparent",
            format!("00-{CLIENT_TRACE}-00f067aa0ba902b7-01"),
        )
        .json(&json!({"prompt": "A sunset over TLS", "width": 128, "height": 128}))
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST over HTTPS failed: {error}"));
    assert_eq!(response.status(), 202);
    assert_eq!(
        response
            .headers()
            .get("strict-transport-security")
            .and_then(|value| value.to_str().ok()),
        Some("max-age=31536000; includeSubDomains"),
        "HSTS on HTTPS answers"
    );
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let job_id = body["job_id"].as_str().unwrap_or_default().to_string();
    let trace_id = body["trace_id"].as_str().unwrap_or_default().to_string();
    assert!(job_id.starts_with("job_"), "{body}");
    assert!(!trace_id.is_empty(), "the job records its trace: {body}");
    assert_ne!(
        trace_id, CLIENT_TRACE,
        "the edge continued the client's trace"
    );

    // Server-Sent Events over HTTPS, to the terminal status.
    let events = watch_sse(&https, &edge, &key, &job_id).await;
    assert_eq!(
        events.iter().rev().find_map(event_status),
        Some("completed"),
        "{events:?}"
    );

    // A WebSocket over TLS.
    let events = watch_wss(certs.path(), &edge, &key, &job_id).await;
    let last = events.iter().rev().find_map(event_status);
    assert!(last.is_some_and(is_terminal), "{events:?}");

    // gRPC over TLS (HTTP/2 by ALPN): a unary call and a stream.
    let client_identity = ServiceIdentity::load(
        &certs.path().join("ca.pem"),
        &certs.path().join("gateway.pem"),
        &certs.path().join("gateway.key"),
    )
    .unwrap_or_else(|error| panic!("identity: {error}"));
    let mut config = ClientConfig::new(format!("https://127.0.0.1:{}", edge.https.port()))
        .with_identity(Some(Arc::new(client_identity)), "edge");
    config.default_deadline = DEADLINE;
    let channel = connect_lazy(&config, "e2e").unwrap_or_else(|error| panic!("{error}"));
    let mut jobs = JobServiceClient::new(channel);
    let job = jobs
        .get_job(with_key(
            GetJobRequest {
                job_id: job_id.clone(),
            },
            &key,
        ))
        .await
        .unwrap_or_else(|status| panic!("GetJob over TLS: {status:?}"))
        .into_inner()
        .job
        .unwrap_or_default();
    assert_eq!(job.status(), JobStatus::Succeeded);
    let mut stream = jobs
        .watch_job(with_key(
            WatchJobRequest {
                job_id: job_id.clone(),
                after_seq: 0,
            },
            &key,
        ))
        .await
        .unwrap_or_else(|status| panic!("WatchJob over TLS: {status:?}"))
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, stream.next())
        .await
        .unwrap_or_else(|_| panic!("WatchJob sent nothing"))
        .unwrap_or_else(|| panic!("WatchJob ended at once"))
        .unwrap_or_else(|status| panic!("WatchJob over TLS: {status:?}"));
    assert!(matches!(
        first.event.and_then(|event| event.kind),
        Some(job_event::Kind::Snapshot(_))
    ));

    // gRPC-web over HTTPS.
    let response = https
        .post(format!("{}/easel.jobs.v1.JobService/GetJob", edge.url()))
        .header("content-type", "application/grpc-web+proto")
        .header("x-grpc-web", "1")
        .header("x-api-key", &key)
        .body(frame(&GetJobRequest {
            job_id: job_id.clone(),
        }))
        .send()
        .await
        .unwrap_or_else(|error| panic!("gRPC-web over HTTPS failed: {error}"));
    assert_eq!(response.status(), 200);
    let grpc_status_header = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let (messages, trailers) = decode_body(response.bytes().await.unwrap_or_default());
    let grpc_status = trailers
        .iter()
        .find(|(name, _)| name == "grpc-status")
        .map(|(_, value)| value.clone())
        .or(grpc_status_header);
    assert_eq!(grpc_status.as_deref(), Some("0"));
    let answer: GetJobResponse = prost::Message::decode(
        messages
            .first()
            .cloned()
            .unwrap_or_else(|| panic!("no gRPC-web message")),
    )
    .unwrap_or_else(|error| panic!("bad GetJobResponse: {error}"));
    assert_eq!(answer.job.unwrap_or_default().id, job_id);

    // Plain HTTP: a permanent redirect to the same host and path over HTTPS, nothing served.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_else(|error| panic!("client: {error}"));
    let path = format!("/api/v1/jobs/{job_id}?view=full");
    let response = plain
        .get(format!("http://{}{path}", edge.http))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap_or_else(|error| panic!("plain HTTP failed: {error}"));
    assert_eq!(response.status(), 301);
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(location, format!("https://{}{path}", edge.http));
    assert!(response.text().await.unwrap_or_default().is_empty());

    // The edge's span is the root of the job's trace, and the gateway continues it.
    let spans = receiver
        .wait_for(DEADLINE, |spans| {
            let edge_root = spans.iter().find(|span| {
                span.service_name == "easel-edge"
                    && span.trace_id() == trace_id
                    && span.parent_span_id().is_empty()
            });
            edge_root.is_some_and(|root| {
                spans.iter().any(|span| {
                    span.service_name == "gateway" && span.parent_span_id() == root.span_id()
                })
            })
        })
        .await;
    let root = spans
        .iter()
        .find(|span| span.service_name == "easel-edge" && span.trace_id() == trace_id)
        .unwrap_or_else(|| panic!("no edge span in the job's trace {trace_id}"));
    assert!(
        root.parent_span_id().is_empty(),
        "the edge span has a parent"
    );
    assert!(
        spans
            .iter()
            .any(|span| span.service_name == "gateway" && span.parent_span_id() == root.span_id()),
        "no gateway span is a child of the edge span"
    );
    assert!(
        !spans.iter().any(|span| span.trace_id() == CLIENT_TRACE),
        "a span continued the client's trace context"
    );

    // The access log: one JSON object a line, none holding a credential.
    let log = edge
        .wait_for_log_line(&["/api/v1/jobs/", "/events", "\"status\":200"])
        .await;
    assert!(
        log.lines().any(|line| line.contains("/events")),
        "the SSE request is not in the access log:\n{log}"
    );
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("an access log line is not JSON ({error}): {line}"));
        assert!(entry["path"].is_string(), "{line}");
        assert!(
            !line.contains(&key),
            "the access log holds the API key: {line}"
        );
        assert!(
            !line.contains("access_token"),
            "the access log holds a query: {line}"
        );
    }
}
