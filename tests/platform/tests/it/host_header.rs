//! Links in answers (`Location`, `links`) come from `EASEL_PUBLIC_URL` or the gateway's own
//! address, never from the `Host`, `:authority` or `X-Forwarded-*` a caller sends.

use std::net::SocketAddr;

use easel_proto::account::v1::Tier;
use serde_json::Value;

use crate::support::{Options, Platform, small_job};

/// Every link of a submit's answer: `Location` and the job's four URLs.
async fn links_of(response: reqwest::Response) -> Vec<String> {
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let mut links = vec![location];
    for name in ["status_url", "events_url", "websocket_url", "cancel_url"] {
        links.push(body[name].as_str().unwrap().to_string());
    }
    links
}

/// Submits a job with spoofed host headers, over HTTP/1.1 (`Host`) and HTTP/2
/// (`:authority`, by naming the gateway `evil.example` in the URL); the links of both answers.
async fn spoofed_links(platform: &Platform, api_key: &str) -> Vec<String> {
    let gateway: SocketAddr = platform.url.trim_start_matches("http://").parse().unwrap();
    let mut links = Vec::new();
    // HTTP/1.1 with a forged Host and every forwarding header.
    let response = platform
        .http
        .post(format!("{}/api/v1/jobs", platform.url))
        .header("host", "evil.example")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "host=evil.example;proto=https")
        .header("x-api-key", api_key)
        .json(&small_job("spoofed host"))
        .send()
        .await
        .unwrap();
    links.extend(links_of(response).await);
    // HTTP/2 whose :authority names another host (resolved to the gateway).
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .resolve("evil.example", gateway)
        .build()
        .unwrap();
    let response = h2
        .post(format!(
            "http://evil.example:{}/api/v1/jobs",
            gateway.port()
        ))
        .header("x-forwarded-host", "evil.example")
        .header("x-api-key", api_key)
        .json(&small_job("spoofed authority"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    links.extend(links_of(response).await);
    links
}

#[track_caller]
fn assert_all_under(links: &[String], base: &str) {
    let websocket_base = base.replacen("http", "ws", 1);
    for link in links {
        assert!(!link.contains("evil"), "{link} reflects the caller's host");
        assert!(
            link.starts_with(&format!("{base}/"))
                || link.starts_with(&format!("{websocket_base}/")),
            "{link} is not under {base}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_url_links_name_the_gateways_own_address() {
    // Even behind a "trusted" proxy, the host is not taken from headers.
    let platform = Platform::start_with(Options {
        gateway_env: vec![("EASEL_TRUST_FORWARDED_FOR", "true".into())],
        ..Options::default()
    })
    .await;
    let user = platform.user(Tier::Pro).await;
    let links = spoofed_links(&platform, &user.api_key).await;
    assert_eq!(links.len(), 10);
    assert_all_under(&links, &platform.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_public_url_links_use_it_whatever_the_host() {
    let public = "https://images.easel.test/base";
    let platform = Platform::start_with(Options {
        gateway_env: vec![("EASEL_PUBLIC_URL", format!("{public}/"))],
        ..Options::default()
    })
    .await;
    let user = platform.user(Tier::Pro).await;
    let links = spoofed_links(&platform, &user.api_key).await;
    assert_all_under(&links, public);
    assert!(
        links
            .iter()
            .any(|link| link.starts_with("wss://images.easel.test/base/ws/jobs/"))
    );
}
