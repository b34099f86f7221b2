//! Host header injection (issue 10, "Lower"): without `EASEL_PUBLIC_URL`, `Location` and the
//! job's links used to reflect any `Host` sent. Now they come from `EASEL_PUBLIC_URL`, or the
//! gateway's own address, whatever `Host`, `X-Forwarded-Host` or `Forwarded` say.

use easel_e2e::{Platform, PlatformOptions};
use easel_proto::account::v1::Tier;
use serde_json::{Value, json};

/// Submits a job with every host header an attacker controls pointing at `evil.example`;
/// the answer's `Location` and links.
async fn links_with_spoofed_host(platform: &Platform) -> Vec<String> {
    let user = platform.create_user(Tier::Pro).await;
    let response = platform
        .http
        .post(format!("{}/api/v1/jobs", platform.url()))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "host=evil.example;proto=https")
        .header("x-api-key", &user.api_key)
        .json(&json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let mut links = vec![response.headers()["location"].to_str().unwrap().to_string()];
    let body: Value = response.json().await.unwrap();
    for name in ["status_url", "events_url", "websocket_url", "cancel_url"] {
        links.push(body[name].as_str().unwrap().to_string());
    }
    links
}

#[track_caller]
fn assert_all_under(links: &[String], base: &str) {
    let websocket = base.replacen("http", "ws", 1);
    for link in links {
        assert!(
            !link.contains("evil"),
            "{link} reflects the attacker's host"
        );
        assert!(
            link.starts_with(&format!("{base}/")) || link.starts_with(&format!("{websocket}/")),
            "{link} is not under {base}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_never_follow_a_spoofed_host() {
    // Behind a proxy the gateway is told to trust, too.
    let platform = Platform::start_with(PlatformOptions {
        gateway_env: vec![("EASEL_TRUST_FORWARDED_FOR".into(), "true".into())],
        ..PlatformOptions::default()
    })
    .await;
    let links = links_with_spoofed_host(&platform).await;
    assert_eq!(links.len(), 5);
    assert_all_under(&links, &platform.url());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_follow_the_public_url() {
    let platform = Platform::start_with(PlatformOptions {
        gateway_env: vec![("EASEL_PUBLIC_URL".into(), "https://api.easel.test".into())],
        ..PlatformOptions::default()
    })
    .await;
    let links = links_with_spoofed_host(&platform).await;
    assert_all_under(&links, "https://api.easel.test");
}
