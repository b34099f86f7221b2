//! Every REST route's happy path, through the gateway to the real services.

use std::time::Duration;

use easel_gateway::routes::Verb;
use easel_proto::account::v1::Tier;
use serde_json::{Value, json};
use sha2::Digest;

use crate::support::{Platform, WAIT};

fn job_id(body: &Value) -> String {
    body["job_id"].as_str().expect("a job id").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_are_submitted_listed_read_cancelled_and_downloaded() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;

    // The seed's text shape: 202, Location and links.
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": "A sunset", "width": 64, "height": 64, "steps": 2}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body: Value = response.json().await.unwrap();
    let id = job_id(&body);
    assert!(id.starts_with("job_"));
    assert_eq!(location, format!("{}/api/v1/jobs/{id}", platform.url));
    assert_eq!(body["replayed"], false, "{body}");
    assert_eq!(body["id"], id);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["status_url"], location);
    assert_eq!(body["events_url"], format!("{location}/events"));
    assert_eq!(body["cancel_url"], format!("{location}:cancel"));
    assert_eq!(
        body["websocket_url"],
        format!("{}/ws/jobs/{id}", platform.url.replacen("http", "ws", 1))
    );
    assert_eq!(body["metadata"]["resolved"]["prompt"], "A sunset");
    assert!(body["metadata"]["seed"].is_u64(), "{body}");
    assert_eq!(body["owner"], user.id);

    // It runs; its output is a signed link through the gateway, downloadable as the PNG.
    let job = platform.wait_terminal(&user.api_key, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["progress"]["percent"], 100.0, "{job}");
    assert!(job["completed_at"].is_string() && job["created_at"].is_string());
    let output = &job["results"][0];
    assert_eq!(job["result_url"], output["url"]);
    assert!(output["size_bytes"].as_u64().unwrap() > 0, "{output}");
    let url = output["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/v1/artifacts/art_", platform.url)),
        "{url}"
    );
    let download = platform.http.get(url).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-type"], "image/png");
    let bytes = download.bytes().await.unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), output["sha256"]);
    // A tampered link is refused by storage, in the envelope.
    let tampered = url.replace("sig=", "sig=00");
    let refused = platform.http.get(&tampered).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    let envelope: Value = refused.json().await.unwrap();
    assert_eq!(envelope["error"]["code"], "PERMISSION_DENIED");

    // Read it back.
    let (status, read) = platform
        .get_json(&user.api_key, &format!("/api/v1/jobs/{id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(read["job_id"], id);
    assert_eq!(read["status"], "completed");

    // A raw ComfyUI graph works too.
    let graph = json!({
        "1": {"class_type": "EmptyImage", "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "easel"}}
    });
    let response = platform
        .submit(
            &user.api_key,
            &json!({"workflow": graph, "overrides": [{"node_id": "1", "input": "color", "value": 255}]}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let workflow_id = job_id(&response.json().await.unwrap());
    let job = platform.wait_terminal(&user.api_key, &workflow_id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert_eq!(job["results"][0]["width"], 32);

    // Cancel a slow one.
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": "slow [[sim:slow=300]]", "width": 64, "height": 64, "steps": 50}),
        )
        .await;
    let slow_id = job_id(&response.json().await.unwrap());
    let cancelled = platform
        .http
        .post(format!("{}/api/v1/jobs/{slow_id}:cancel", platform.url))
        .header("x-api-key", &user.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    let body: Value = cancelled.json().await.unwrap();
    assert_eq!(body["job_id"], slow_id);
    let job = platform.wait_terminal(&user.api_key, &slow_id).await;
    assert_eq!(job["status"], "cancelled");
    assert!(job.get("progress").is_none(), "{job}");

    // List: newest first, paged, filtered by status.
    let (status, page) = platform
        .get_json(&user.api_key, "/api/v1/jobs?page_size=2")
        .await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [slow_id.as_str(), workflow_id.as_str()]);
    let token = page["next_page_token"].as_str().unwrap();
    let (_, next) = platform
        .get_json(
            &user.api_key,
            &format!("/api/v1/jobs?page_size=2&page_token={token}"),
        )
        .await;
    assert_eq!(next["jobs"][0]["id"], id);
    let (_, succeeded) = platform
        .get_json(&user.api_key, "/api/v1/jobs?status=completed")
        .await;
    assert_eq!(succeeded["jobs"].as_array().unwrap().len(), 2);
    let (_, cancelled) = platform
        .get_json(
            &user.api_key,
            "/api/v1/jobs?status=JOB_STATUS_CANCELLED,FAILED",
        )
        .await;
    assert_eq!(cancelled["jobs"].as_array().unwrap().len(), 1);

    // Models, from the bridge, paged.
    let (status, models) = platform.get_json(&user.api_key, "/api/v1/models").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|model| model["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"sd_xl_base_1.0.safetensors"), "{models}");
    let (_, first) = platform
        .get_json(&user.api_key, "/api/v1/models?page_size=1")
        .await;
    assert_eq!(first["models"].as_array().unwrap().len(), 1);
    assert!(!first["next_page_token"].as_str().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_login_tokens_usage_and_admin_routes_reach_auth() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Free).await;
    let http = &platform.http;

    // A second key: 201 with its secret, not cacheable.
    let created = http
        .post(format!("{}/api/v1/keys", platform.url))
        .header("x-api-key", &user.api_key)
        .json(&json!({"name": "second"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.headers()["cache-control"], "no-store");
    let created: Value = created.json().await.unwrap();
    let second = created["secret"].as_str().unwrap().to_string();
    let key_id = created["api_key"]["id"].as_str().unwrap().to_string();
    assert!(second.starts_with("easel_"));

    let (status, keys) = platform.get_json(&second, "/api/v1/keys").await;
    assert_eq!(status, 200);
    assert!(
        keys["api_keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|key| key["id"] == key_id)
    );
    assert!(
        !keys.to_string().contains(&second),
        "secrets are never listed"
    );

    // Revoke it: it stops working at once (auth broadcasts the revocation).
    let revoked = http
        .post(format!("{}/api/v1/keys/{key_id}:revoke", platform.url))
        .header("x-api-key", &user.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await.unwrap();
    assert!(revoked["api_key"]["revoke_time"].is_string());
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = platform.get_json(&second, "/api/v1/jobs").await;
        if status == 401 {
            assert_eq!(body["error"]["code"], "UNAUTHENTICATED");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the revoked key still works"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Login: a bearer token that works on the API.
    let login = http
        .post(format!("{}/api/v1/auth/login", platform.url))
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let login: Value = login.json().await.unwrap();
    let token = login["access_token"]["token"].as_str().unwrap();
    let listed = http
        .get(format!("{}/api/v1/jobs", platform.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let wrong = http
        .post(format!("{}/api/v1/auth/login", platform.url))
        .json(&json!({"email": user.email, "password": "not the password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Token exchange with no body at all.
    let exchanged = http
        .post(format!("{}/api/v1/auth/token", platform.url))
        .header("x-api-key", &user.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(exchanged.status(), 200);
    let exchanged: Value = exchanged.json().await.unwrap();
    assert_eq!(exchanged["access_token"]["token_type"], "Bearer");

    // Usage and limits.
    let (status, usage) = platform
        .get_json(&user.api_key, "/api/v1/usage?days=7")
        .await;
    assert_eq!(status, 200);
    assert_eq!(usage["limits"]["tier"], "TIER_FREE");

    // Admin: create, change tier, disable; a plain user may not.
    let created = http
        .post(format!("{}/api/v1/admin/users", platform.url))
        .header("x-api-key", &platform.admin.api_key)
        .json(&json!({"email": "new-user@gateway.test", "password": "a long enough password", "tier": "TIER_FREE"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let new_id = created.json::<Value>().await.unwrap()["user"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let tiered = http
        .post(format!(
            "{}/api/v1/admin/users/{new_id}:setTier",
            platform.url
        ))
        .header("x-api-key", &platform.admin.api_key)
        .json(&json!({"tier": "TIER_PRO"}))
        .send()
        .await
        .unwrap();
    assert_eq!(tiered.status(), 200);
    assert_eq!(
        tiered.json::<Value>().await.unwrap()["user"]["tier"],
        "TIER_PRO"
    );
    let disabled = http
        .post(format!(
            "{}/api/v1/admin/users/{new_id}:disable",
            platform.url
        ))
        .header("x-api-key", &platform.admin.api_key)
        .send()
        .await
        .unwrap();
    assert_eq!(disabled.status(), 200);
    assert_eq!(
        disabled.json::<Value>().await.unwrap()["user"]["disabled"],
        true
    );
    let forbidden = http
        .post(format!("{}/api/v1/admin/users", platform.url))
        .header("x-api-key", &user.api_key)
        .json(&json!({"email": "x@gateway.test", "password": "a long enough password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_jwks_and_the_openapi_document_are_public() {
    let platform = Platform::start().await;
    let http = &platform.http;
    for path in ["/healthz", "/readyz"] {
        let response = http
            .get(format!("{}{path}", platform.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let admin = http
        .get(format!("{}/readyz", platform.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200);

    let jwks = http
        .get(format!("{}/.well-known/jwks.json", platform.url))
        .send()
        .await
        .unwrap();
    assert_eq!(jwks.status(), 200);
    assert!(
        jwks.headers()["cache-control"]
            .to_str()
            .unwrap()
            .starts_with("public")
    );
    let jwks: Value = jwks.json().await.unwrap();
    assert!(!jwks["keys"].as_array().unwrap().is_empty(), "{jwks}");

    let document: Value = http
        .get(format!("{}/openapi.json", platform.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}/events",
        "/ws/jobs/{id}",
        "/api/v1/keys/{id}:revoke",
    ] {
        assert!(document["paths"][path].is_object(), "{path} is documented");
    }
    assert!(document["components"]["schemas"]["Job"].is_object());

    // Serve a request first, then it shows in the metrics.
    let user = platform.user(Tier::Pro).await;
    let (status, _) = platform.get_json(&user.api_key, "/api/v1/jobs").await;
    assert_eq!(status, 200);
    let metrics = http
        .get(format!("{}/metrics", platform.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("http_server_requests_total"), "{metrics}");
    assert!(metrics.contains("route=\"/api/v1/jobs\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_is_served() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    for route in easel_gateway::routes::ROUTES {
        let path = route
            .path
            .replace("{id}", "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b");
        let request = match route.method {
            Verb::Get => platform.http.get(format!("{}{path}", platform.url)),
            Verb::Post => platform
                .http
                .post(format!("{}{path}", platform.url))
                .json(&json!({})),
        };
        let response = request
            .header("x-api-key", &user.api_key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_ne!(status, 405, "{} {path}: {body}", route.method);
        assert!(
            !body.contains("no such route"),
            "{} {path} is not routed: {body}",
            route.method
        );
    }
}

/// The seed plan's `test_job_submission`, as it is written there:
/// `POST /api/v1/jobs {"prompt": "Test image", "width": 512, "height": 512}` answers 202 and
/// `assert "job_id" in response.json()`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_test_job_submission() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": "Test image", "width": 512, "height": 512}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert!(body.get("job_id").is_some(), "{body}");
    assert_eq!(body["status"], "pending");
    assert!(body["status_url"].as_str().unwrap().ends_with(&format!(
        "/api/v1/jobs/{}",
        body["job_id"].as_str().unwrap()
    )));
    assert!(body["websocket_url"].as_str().unwrap().starts_with("ws://"));
}

/// The seed plan's `test_job_status`: `GET /api/v1/jobs/{id}` answers
/// `response.json()["status"] in ["pending", "processing", "completed", "failed"]`, and a
/// completed job has its `result_url`, `metadata` and timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_test_job_status() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": "Test image", "width": 64, "height": 64, "steps": 2}),
        )
        .await;
    let id = job_id(&response.json().await.unwrap());
    let (status, body) = platform
        .get_json(&user.api_key, &format!("/api/v1/jobs/{id}"))
        .await;
    assert_eq!(status, 200);
    assert!(
        ["pending", "processing", "completed", "failed"]
            .contains(&body["status"].as_str().unwrap()),
        "{body}"
    );
    let job = platform.wait_terminal(&user.api_key, &id).await;
    assert_eq!(job["status"], "completed", "{job}");
    assert!(job["result_url"].as_str().unwrap().contains("sig="));
    assert!(job["metadata"]["seed"].is_u64());
    assert!(job["created_at"].is_string() && job["completed_at"].is_string());
}

/// The seed plan's idempotency design: a replay of the same request with the same
/// `Idempotency-Key` answers 200 with the same `job_id`; camelCase and snake_case requests
/// are the same request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_idempotent_replay_answers_200_with_the_same_job_id() {
    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let send = |body: Value| {
        platform
            .http
            .post(format!("{}/api/v1/jobs", platform.url))
            .header("x-api-key", &user.api_key)
            .header("idempotency-key", "seed-replay-1")
            .json(&body)
            .send()
    };
    let first = send(json!({"prompt": "Test image", "negative_prompt": "blur", "seed": 42}))
        .await
        .unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let replay = send(json!({"prompt": "Test image", "negativePrompt": "blur", "seed": 42}))
        .await
        .unwrap();
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotency-replayed"], "true");
    let replay: Value = replay.json().await.unwrap();
    assert_eq!(replay["job_id"], first["job_id"]);
    assert_eq!(replay["replayed"], true);
    assert_eq!(replay["metadata"]["seed"], 42);
}
