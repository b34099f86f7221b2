//! The door: credentials, rate limits, body limits, the error envelope for every refusal,
//! tenant isolation, idempotency, request ids and readiness.

use std::time::Duration;

use bytes::Bytes;
use easel_proto::account::v1::Tier;
use easel_proto::jobs::v1::GetJobRequest;
use futures::SinkExt;
use serde_json::{Value, json};
use tonic_types::StatusExt;

use crate::grpc_web;
use crate::support::{Options, Platform, small_job, with_key};

/// Checks the envelope's shape and returns its `error`.
fn envelope(body: &Value) -> &Value {
    let error = &body["error"];
    assert!(error["code"].is_string(), "not an envelope: {body}");
    assert!(error["message"].is_string(), "not an envelope: {body}");
    assert!(error["details"].is_array(), "not an envelope: {body}");
    assert!(error["requestId"].is_string(), "no request id: {body}");
    error
}

fn violation_field(error: &Value) -> String {
    error["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .map(|detail| {
            detail["fieldViolations"][0]["field"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_credential_are_refused() {
    let platform = Platform::start().await;
    let http = &platform.http;

    let anonymous = http
        .get(format!("{}/api/v1/jobs", platform.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(envelope(&body)["code"], "UNAUTHENTICATED");

    let forged = http
        .get(format!("{}/api/v1/jobs", platform.url))
        .header(
            "x-api-key",
            "easel_abcdefgh_not-a-real-secret-0123456789abcdef",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(envelope(&body)["code"], "UNAUTHENTICATED");

    let garbage_token = http
        .get(format!("{}/api/v1/jobs", platform.url))
        .header("authorization", "Bearer not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage_token.status(), 401);

    // gRPC: UNAUTHENTICATED; gRPC-web: the same status in the headers.
    let status = platform
        .jobs()
        .await
        .get_job(GetJobRequest {
            job_id: "job_x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let answer = grpc_web::call(
        &platform.url,
        "/easel.jobs.v1.JobService/GetJob",
        &GetJobRequest {
            job_id: "job_x".into(),
        },
        &[],
    )
    .await;
    assert_eq!(
        answer.grpc_status(),
        Some(tonic::Code::Unauthenticated as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_limit_is_429_with_headers_and_resource_exhausted_over_grpc() {
    // Free users: 4 requests at once, then one a minute. Making the user's key uses one.
    let platform = Platform::start_with(Options {
        auth_env: vec![
            ("EASEL_TIER_FREE_BURST", "4".into()),
            ("EASEL_TIER_FREE_REQUESTS_PER_MINUTE", "1".into()),
        ],
        ..Options::default()
    })
    .await;
    let user = platform.user(Tier::Free).await;

    let mut last = None;
    for _ in 0..4 {
        let response = platform
            .http
            .get(format!("{}/api/v1/jobs", platform.url))
            .header("x-api-key", &user.api_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["ratelimit-limit"], "4");
        assert!(response.headers().contains_key("ratelimit-remaining"));
        assert!(response.headers().contains_key("ratelimit-reset"));
        let status = response.status().as_u16();
        last = Some((status, response));
        if status == 429 {
            break;
        }
    }
    let (status, response) = last.unwrap();
    assert_eq!(status, 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(response.headers()["ratelimit-remaining"], "0");
    let body: Value = response.json().await.unwrap();
    let error = envelope(&body);
    assert_eq!(error["code"], "RESOURCE_EXHAUSTED");
    assert!(body.to_string().contains("RATE_LIMITED"));
    assert!(body.to_string().contains("RetryInfo"));

    // gRPC: RESOURCE_EXHAUSTED with RetryInfo, the headers as metadata.
    let status = platform
        .jobs()
        .await
        .get_job(with_key(
            GetJobRequest {
                job_id: "job_x".into(),
            },
            &user.api_key,
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(status.metadata().get("ratelimit-limit").is_some());
    let details = status.check_error_details().unwrap();
    assert!(
        details
            .retry_info()
            .and_then(|info| info.retry_delay)
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_routes_and_methods_answer_the_envelope() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let http = &platform.http;
    let jobs_url = format!("{}/api/v1/jobs", platform.url);

    // 11 MiB: 413 before anything reads it.
    let huge = vec![b' '; 11 * 1024 * 1024];
    let response = http
        .post(&jobs_url)
        .header("x-api-key", &user.api_key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(envelope(&body)["code"], "INVALID_ARGUMENT");
    assert!(body.to_string().contains("PAYLOAD_TOO_LARGE"));

    // Malformed JSON.
    let response = http
        .post(&jobs_url)
        .header("x-api-key", &user.api_key)
        .header("content-type", "application/json")
        .body("{\"prompt\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(
        envelope(&body)["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    // Not JSON at all.
    let response = http
        .post(&jobs_url)
        .header("x-api-key", &user.api_key)
        .header("content-type", "text/plain")
        .body("a sunset please")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
    envelope(&response.json().await.unwrap());

    // An unknown sampler names the field.
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": "A sunset", "sampler": "turbo_magic"}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(violation_field(envelope(&body)), "sampler");
    // So does a bad value the jobs service finds (a width that is not a multiple of 8).
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": "A sunset", "width": 1001, "height": 64}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert!(violation_field(envelope(&body)).contains("width"), "{body}");

    // Unknown route, wrong method.
    let (status, body) = platform
        .get_json(&user.api_key, "/api/v1/nothing-here")
        .await;
    assert_eq!(status, 404);
    assert_eq!(envelope(&body)["code"], "NOT_FOUND");
    let response = http
        .delete(&jobs_url)
        .header("x-api-key", &user.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let allow = response.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    envelope(&response.json().await.unwrap());

    // A bad query parameter.
    let (status, body) = platform
        .get_json(&user.api_key, "/api/v1/jobs?page_size=many")
        .await;
    assert_eq!(status, 400);
    assert_eq!(violation_field(envelope(&body)), "page_size");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_job_is_not_found_and_idempotent_replays_answer_200() {
    let platform = Platform::start().await;
    let alice = platform.user(Tier::Pro).await;
    let bob = platform.user(Tier::Pro).await;

    let submit = |key: &str, body: Value, idempotency: &'static str| {
        platform
            .http
            .post(format!("{}/api/v1/jobs", platform.url))
            .header("x-api-key", key.to_string())
            .header("idempotency-key", idempotency)
            .json(&body)
            .send()
    };
    let first = submit(&alice.api_key, small_job("idempotent"), "order-1")
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    assert!(first.headers().get("idempotency-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let id = first["job_id"].as_str().unwrap().to_string();

    let replay = submit(&alice.api_key, small_job("idempotent"), "order-1")
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["job_id"], id);
    assert_eq!(replay["replayed"], true);

    let reused = submit(&alice.api_key, small_job("something else"), "order-1")
        .await
        .unwrap();
    assert_eq!(reused.status(), 422);
    assert!(
        reused
            .text()
            .await
            .unwrap()
            .contains("IDEMPOTENCY_KEY_REUSED")
    );

    // Bob cannot see, cancel or watch Alice's job.
    let (status, body) = platform
        .get_json(&bob.api_key, &format!("/api/v1/jobs/{id}"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(envelope(&body)["code"], "NOT_FOUND");
    let cancel = platform
        .http
        .post(format!("{}/api/v1/jobs/{id}:cancel", platform.url))
        .header("x-api-key", &bob.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 404);
    let events = platform
        .http
        .get(format!("{}/api/v1/jobs/{id}/events", platform.url))
        .header("x-api-key", &bob.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 404);
    let status = platform
        .jobs()
        .await
        .get_job(with_key(GetJobRequest { job_id: id }, &bob.api_key))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_echoed_and_put_in_errors() {
    let platform = Platform::start().await;
    let response = platform
        .http
        .get(format!("{}/api/v1/jobs", platform.url))
        .header("x-request-id", "test-request-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "test-request-42");
    let body: Value = response.json().await.unwrap();
    assert_eq!(envelope(&body)["requestId"], "test-request-42");

    // One is made when none (or an unsafe one) is sent.
    let response = platform
        .http
        .get(format!("{}/healthz", platform.url))
        .header("x-request-id", "has spaces and\ttabs")
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap();
    assert!(!made.contains(' ') && !made.is_empty());

    // gRPC answers carry it too.
    let mut request = tonic::Request::new(GetJobRequest {
        job_id: "job_x".into(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "grpc-request-7".parse().unwrap());
    let status = platform.jobs().await.get_job(request).await.unwrap_err();
    assert_eq!(
        status.metadata().get("x-request-id").unwrap(),
        "grpc-request-7"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_is_not_ready_while_jobs_is_down() {
    let mut platform = Platform::start().await;
    let ready = platform
        .http
        .get(format!("{}/readyz", platform.url))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);

    platform.stop_jobs().await;
    let response = platform
        .http
        .get(format!("{}/readyz", platform.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(envelope(&body)["code"], "UNAVAILABLE");
    assert!(body.to_string().contains("jobs"), "{body}");
    let admin = platform
        .http
        .get(format!("{}/readyz", platform.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_concurrency_limit_requests_are_shed_with_503_and_retry_after() {
    let platform = Platform::start_with(Options {
        gateway_env: vec![("EASEL_MAX_CONCURRENT_REQUESTS", "1".into())],
        ..Options::default()
    })
    .await;
    let user = platform.user(Tier::Pro).await;

    // A submit whose body is still arriving holds the only slot.
    let (mut body, chunks) = futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    body.send(Ok(Bytes::from_static(b"{\"prompt\": \"held\", ")))
        .await
        .unwrap();
    let held = tokio::spawn(
        platform
            .http
            .post(format!("{}/api/v1/jobs", platform.url))
            .header("x-api-key", &user.api_key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(chunks))
            .send(),
    );

    // Until it is in, other requests may still pass; once it is, they are shed.
    let deadline = tokio::time::Instant::now() + crate::support::WAIT;
    let shed = loop {
        let response = platform
            .http
            .get(format!("{}/healthz", platform.url))
            .send()
            .await
            .unwrap();
        if response.status() == 503 {
            break response;
        }
        assert!(tokio::time::Instant::now() < deadline, "nothing was shed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        shed.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let body_json: Value = shed.json().await.unwrap();
    assert_eq!(envelope(&body_json)["code"], "UNAVAILABLE");
    assert!(body_json.to_string().contains("OVERLOADED"));

    // The held request completes; then the slot is free again.
    body.send(Ok(Bytes::from_static(b"\"width\": 64, \"height\": 64}")))
        .await
        .unwrap();
    drop(body);
    let held = held.await.unwrap().unwrap();
    assert_eq!(held.status(), 202);
    let after = platform
        .http
        .get(format!("{}/healthz", platform.url))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 200);
}
