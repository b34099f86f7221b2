//! Bad input, bad credentials and other tenants: every one gets a clear answer in the error
//! envelope (or a gRPC status) and nothing is lost.

use std::time::Duration;

use easel_e2e::{DEADLINE, Platform, PlatformOptions, with_key};
use easel_proto::account::v1::{RevokeApiKeyRequest, Tier};
use easel_proto::jobs::v1::GetJobRequest;
use serde_json::json;

/// Checks the envelope's shape and returns its `code`.
fn envelope_code(body: &serde_json::Value, request_id: Option<&str>) -> String {
    let error = &body["error"];
    assert!(error.is_object(), "not an error envelope: {body}");
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    if let Some(request_id) = request_id {
        assert_eq!(error["requestId"], request_id, "{body}");
    }
    error["code"].as_str().unwrap_or_default().to_string()
}

async fn send(
    request: reqwest::RequestBuilder,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let response = request
        .send()
        .await
        .unwrap_or_else(|error| panic!("request failed: {error}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, headers, body)
}

#[tokio::test]
async fn bad_requests_credentials_and_other_tenants_get_clear_errors() {
    let platform = Platform::start().await;
    let jobs_url = format!("{}/api/v1/jobs", platform.url());
    let http = &platform.http;
    let key = platform.admin.api_key.as_str();

    // No credential, an unknown key, a forged bearer token.
    let (status, headers, body) =
        send(http.get(&jobs_url).header("x-request-id", "e2e-req-1")).await;
    assert_eq!(status, 401);
    assert_eq!(envelope_code(&body, Some("e2e-req-1")), "UNAUTHENTICATED");
    assert_eq!(
        headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some("e2e-req-1")
    );
    let (status, _, _) = send(
        http.get(&jobs_url)
            .header("x-api-key", "easel_nope_notakey"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = send(http.get(&jobs_url).header(
        "authorization",
        "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1c3JfMSJ9.",
    ))
    .await;
    assert_eq!(status, 401, "alg none");

    // Malformed JSON, wrong content type, oversize body, unknown sampler, unknown route and
    // method: all in the envelope, with the right status.
    let (status, _, body) = send(
        http.post(&jobs_url)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body("{\"prompt\": "),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(envelope_code(&body, None), "INVALID_ARGUMENT");
    let (status, _, body) = send(
        http.post(&jobs_url)
            .header("x-api-key", key)
            .header("content-type", "text/plain")
            .body("a sunset"),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    envelope_code(&body, None);
    let huge = format!("{{\"prompt\": \"{}\"}}", "a".repeat(11 * 1024 * 1024));
    let (status, _, body) = send(
        http.post(&jobs_url)
            .header("x-api-key", key)
            .header("content-type", "application/json")
            .body(huge),
    )
    .await;
    assert_eq!(status, 413, "11 MiB body");
    envelope_code(&body, None);
    let (status, _, body) = send(
        http.post(&jobs_url)
            .header("x-api-key", key)
            .json(&json!({"prompt": "A sunset", "sampler": "SAMPLER_WARP_DRIVE"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("sampler"),
        "the error names the field: {body}"
    );
    let (status, _, body) = send(
        http.post(&jobs_url)
            .header("x-api-key", key)
            .json(&json!({"prompt": "A sunset", "width": "wide"})),
    )
    .await;
    assert_eq!(status, 400, "wrong type: {body}");
    let (status, _, body) = send(
        http.get(format!("{}/api/v1/nope", platform.url()))
            .header("x-api-key", key),
    )
    .await;
    assert_eq!(status, 404);
    envelope_code(&body, None);
    let (status, _, body) = send(http.delete(&jobs_url).header("x-api-key", key)).await;
    assert_eq!(status, 405);
    envelope_code(&body, None);

    // Nothing above made a job.
    let (status, list) = platform.get_json(key, "/api/v1/jobs").await;
    assert_eq!(status, 200);
    assert!(list["jobs"].as_array().is_none_or(Vec::is_empty), "{list}");

    // Another tenant's job is not found, over REST and gRPC.
    let other = platform.create_user(Tier::Free).await;
    let submitted = platform
        .submit_rest(
            key,
            &json!({"prompt": "Mine", "width": 64, "height": 64}),
            None,
        )
        .await;
    assert_eq!(submitted.status(), 202);
    let submitted: serde_json::Value = submitted.json().await.unwrap_or_default();
    let job_id = submitted["job_id"]
        .as_str()
        .or_else(|| submitted["id"].as_str())
        .unwrap_or_default()
        .to_string();
    let (status, body) = platform
        .get_json(&other.api_key, &format!("/api/v1/jobs/{job_id}"))
        .await;
    assert_eq!(status, 404, "{body}");
    let mut jobs = platform.jobs_client().await;
    let status = jobs
        .get_job(with_key(
            GetJobRequest {
                job_id: job_id.clone(),
            },
            &other.api_key,
        ))
        .await
        .expect_err("another tenant's job");
    assert_eq!(status.code(), tonic::Code::NotFound);
    let (status, _, _) = send(
        http.post(format!("{jobs_url}/{job_id}:cancel"))
            .header("x-api-key", &other.api_key),
    )
    .await;
    assert_eq!(status, 404, "cancel of another tenant's job");

    // A revoked key stops working (revocation reaches the gateway within a second).
    let (status, keys) = platform.get_json(&other.api_key, "/api/v1/keys").await;
    assert_eq!(status, 200, "{keys}");
    let key_id = keys["api_keys"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut account = platform.account_client().await;
    account
        .revoke_api_key(with_key(RevokeApiKeyRequest { key_id }, &other.api_key))
        .await
        .unwrap_or_else(|status| panic!("revoke failed: {status:?}"));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (status, _) = platform.get_json(&other.api_key, "/api/v1/jobs").await;
        if status == 401 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn over_the_rate_limit_answers_429_with_headers() {
    let platform = Platform::start_with(PlatformOptions {
        auth_env: vec![
            ("EASEL_TIER_FREE_REQUESTS_PER_MINUTE".into(), "5".into()),
            ("EASEL_TIER_FREE_BURST".into(), "5".into()),
        ],
        ..Default::default()
    })
    .await;
    let user = platform.create_user(Tier::Free).await;
    let url = format!("{}/api/v1/jobs", platform.url());
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..12 {
        let response = platform
            .http
            .get(&url)
            .header("x-api-key", &user.api_key)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET failed: {error}"));
        let status = response.status().as_u16();
        assert!(
            response.headers().contains_key("ratelimit-limit"),
            "RateLimit-Limit missing"
        );
        assert!(response.headers().contains_key("ratelimit-remaining"));
        assert!(response.headers().contains_key("ratelimit-reset"));
        statuses.push(status);
        if status == 429 && refused.is_none() {
            let headers = response.headers().clone();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            refused = Some((headers, body));
        }
    }
    // The user's quota is 5 a minute and making their key (CreateApiKey, as them) took one.
    let accepted = statuses.iter().filter(|status| **status == 200).count();
    assert!(
        (4..=5).contains(&accepted),
        "accepted {accepted}: {statuses:?}"
    );
    assert!(
        statuses.iter().skip(accepted).all(|status| *status == 429),
        "once limited, every later call is refused: {statuses:?}"
    );
    let (headers, body) = refused.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    let retry_after: u64 = headers
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After"));
    assert!(retry_after >= 1);
    assert_eq!(envelope_code(&body, None), "RESOURCE_EXHAUSTED");
}
