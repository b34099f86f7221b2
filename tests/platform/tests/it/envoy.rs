//! The gateway behind the real Envoy with deploy/envoy/envoy.yaml: REST, gRPC (h2c), gRPC-web
//! (HTTP/1.1) and WebSocket pass through, streams are not cut, metrics stay inside.
//!
//! Envoy comes from `EASEL_TEST_ENVOY`, else the one `scripts/setup.sh` installs, else `envoy`
//! on the PATH.

use std::net::SocketAddr;

use easel_proto::account::v1::Tier;
use easel_proto::jobs::v1::GetJobRequest;
use easel_proto::jobs::v1::job_service_client::JobServiceClient;
use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use easel_test_support::Envoy;

use crate::grpc_web;
use crate::support::{Options, Platform, WAIT, small_job, with_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_protocol_passes_through_envoy() {
    let platform = Platform::start_with(Options {
        gateway_env: vec![("EASEL_TRUST_FORWARDED_FOR", "true".into())],
        ..Options::default()
    })
    .await;
    let user = platform.user(Tier::Pro).await;
    let gateway: SocketAddr = platform.url.trim_start_matches("http://").parse().unwrap();
    let envoy = Envoy::start(gateway).await;
    let http = reqwest::Client::new();

    // REST over HTTP/1.1. Links never follow a request's Host: without EASEL_PUBLIC_URL they
    // name the gateway's own address (behind a proxy, set EASEL_PUBLIC_URL to the edge's).
    let response = http
        .post(format!("{}/api/v1/jobs", envoy.url))
        .header("x-api-key", &user.api_key)
        .header("x-request-id", "through-envoy-1")
        .json(&small_job("through envoy"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-request-id"], "through-envoy-1");
    let body: Value = response.json().await.unwrap();
    let id = body["job_id"].as_str().unwrap().to_string();
    assert!(
        body["status_url"]
            .as_str()
            .unwrap()
            .starts_with(&platform.url)
    );

    // WebSocket: every event, a normal close, no cut by a route timeout.
    let mut request = format!("{}/ws/jobs/{id}", envoy.url.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", user.api_key.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let mut events = 0;
    let close = tokio::time::timeout(WAIT, async {
        while let Some(message) = socket.next().await {
            match message.unwrap() {
                Message::Text(_) => events += 1,
                Message::Close(frame) => return frame.map(|frame| frame.code),
                _ => {}
            }
        }
        None
    })
    .await
    .unwrap();
    assert!(events > 1);
    assert_eq!(close, Some(CloseCode::Normal));

    // gRPC over h2c.
    let channel = tonic::transport::Channel::from_shared(envoy.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let job = JobServiceClient::new(channel)
        .get_job(with_key(
            GetJobRequest { job_id: id.clone() },
            &user.api_key,
        ))
        .await
        .expect("GetJob through Envoy")
        .into_inner()
        .job
        .unwrap();
    assert_eq!(job.id, id);

    // gRPC-web over HTTP/1.1.
    let answer = grpc_web::call(
        &envoy.url,
        "/easel.jobs.v1.JobService/GetJob",
        &GetJobRequest { job_id: id },
        &[("x-api-key", &user.api_key)],
    )
    .await;
    assert_eq!(answer.grpc_status(), Some(0), "{answer:?}");
    assert_eq!(answer.messages.len(), 1);

    // Metrics stay inside.
    let metrics = http
        .get(format!("{}/metrics", envoy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 404);
}
