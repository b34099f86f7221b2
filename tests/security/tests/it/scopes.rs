//! Broken function-level authorization (OWASP API5; issue 10, item 3): a key created with
//! `{"scopes": ["jobs:read"]}` used to submit and cancel, a `usage:read` key to list jobs. Now
//! a key's scopes bound what it does over every protocol, and a token exchanged from a key
//! carries no more than the key. The full matrix (every route × every scope, REST, gRPC and
//! gRPC-web) is in the gateway's integration tests; this suite attacks the real binaries with
//! one route per scope.

use easel_e2e::{Platform, with_key};
use easel_proto::account::v1::{CreateApiKeyRequest, Tier};
use easel_runtime::error::Error;
use serde_json::{Value, json};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

/// A job id of the right shape that nobody owns.
const SOME_JOB: &str = "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b";

/// What REST routes need, as the documentation states it (one or two routes per scope).
const REST: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/jobs", "jobs:write"),
    (
        "POST",
        "/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b:cancel",
        "jobs:write",
    ),
    ("GET", "/api/v1/jobs", "jobs:read"),
    (
        "GET",
        "/api/v1/jobs/job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b/events",
        "jobs:read",
    ),
    ("GET", "/api/v1/models", "jobs:read"),
    ("GET", "/api/v1/keys", "keys:read"),
    ("POST", "/api/v1/keys", "keys:write"),
    ("GET", "/api/v1/usage", "usage:read"),
    ("POST", "/api/v1/admin/users", "admin"),
];

/// What gRPC methods need.
const GRPC: &[(&str, &str)] = &[
    ("/easel.jobs.v1.JobService/SubmitJob", "jobs:write"),
    ("/easel.jobs.v1.JobService/CancelJob", "jobs:write"),
    ("/easel.jobs.v1.JobService/ListJobs", "jobs:read"),
    ("/easel.jobs.v1.JobService/WatchJob", "jobs:read"),
    ("/easel.account.v1.AccountService/ListApiKeys", "keys:read"),
    (
        "/easel.account.v1.AccountService/RevokeApiKey",
        "keys:write",
    ),
    ("/easel.account.v1.AccountService/GetUsage", "usage:read"),
    ("/easel.account.v1.AccountService/DisableUser", "admin"),
];

/// Every scope; users' keys get the first five, admins' the last.
const SCOPES: [&str; 6] = [
    "jobs:read",
    "jobs:write",
    "keys:read",
    "keys:write",
    "usage:read",
    "admin",
];

/// A key with exactly `scopes`, made with `creator`.
async fn key_with(platform: &Platform, creator: &str, scopes: &[&str]) -> String {
    platform
        .account_client()
        .await
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: format!("only {scopes:?}"),
                scopes: scopes.iter().map(|scope| (*scope).to_string()).collect(),
                ttl: None,
            },
            creator,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret
}

/// A REST call with one credential header and, for POST, an empty JSON body.
async fn rest(platform: &Platform, method: &str, path: &str, header: (&str, &str)) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = platform
        .http
        .request(method.clone(), format!("{}{path}", platform.url()))
        .header(header.0, header.1);
    if method == reqwest::Method::POST {
        request = request.json(&json!({}));
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A gRPC call of `path` with an empty message; the status it ends with (OK on success).
async fn grpc(channel: &Channel, path: &'static str, header: (&str, &str)) -> tonic::Status {
    let mut client = tonic::client::Grpc::new(channel.clone());
    client.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    request.metadata_mut().insert(
        tonic::metadata::MetadataKey::from_bytes(header.0.as_bytes()).unwrap(),
        header.1.parse().unwrap(),
    );
    let codec: ProstCodec<(), ()> = ProstCodec::default();
    let path = PathAndQuery::from_static(path);
    let result = if path.path().ends_with("/WatchJob") {
        client
            .server_streaming(request, path, codec)
            .await
            .map(|_| ())
    } else {
        client.unary(request, path, codec).await.map(|_| ())
    };
    result.err().unwrap_or_else(|| tonic::Status::ok(""))
}

/// The `ErrorInfo` of a REST envelope: reason and `required_scope`.
fn envelope_info(body: &Value) -> (String, String) {
    let info = body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        .cloned()
        .unwrap_or(Value::Null);
    (
        info["reason"].as_str().unwrap_or_default().to_string(),
        info["metadata"]["required_scope"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[track_caller]
fn assert_rest_refused(status: u16, body: &Value, scope: &str, what: &str) {
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["error"]["code"], "PERMISSION_DENIED", "{what}: {body}");
    assert_eq!(
        envelope_info(body),
        ("MISSING_SCOPE".to_string(), scope.to_string()),
        "{what}: {body}"
    );
}

#[track_caller]
fn assert_grpc_refused(status: &tonic::Status, scope: &str, what: &str) {
    assert_eq!(
        status.code(),
        tonic::Code::PermissionDenied,
        "{what}: {status:?}"
    );
    let error = Error::from_status(status);
    assert_eq!(error.reason(), Some("MISSING_SCOPE"), "{what}");
    assert_eq!(
        error.metadata().get("required_scope").map(String::as_str),
        Some(scope),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scope_opens_only_its_routes_over_rest_and_grpc() {
    let platform = Platform::start().await;
    let user = platform.create_user(Tier::Enterprise).await;
    let mut keys = Vec::new();
    for scope in SCOPES {
        let creator = if scope == "admin" {
            &platform.admin.api_key
        } else {
            &user.api_key
        };
        keys.push((scope, key_with(&platform, creator, &[scope]).await));
    }
    let channel = platform.channel().await;
    for (held, key) in &keys {
        for (method, path, needed) in REST {
            let (status, body) = rest(&platform, method, path, ("x-api-key", key)).await;
            let what = format!("{held} key: {method} {path}");
            if held == needed {
                // Through the door: the handler answers (404 only for the job nobody owns).
                let unowned_job = path.contains(SOME_JOB) && status == 404;
                assert!(
                    unowned_job || ![401, 403, 404, 405].contains(&status),
                    "{what}: {status} {body}"
                );
            } else {
                assert_rest_refused(status, &body, needed, &what);
            }
        }
        for (path, needed) in GRPC {
            let status = grpc(&channel, path, ("x-api-key", key)).await;
            let what = format!("{held} key: {path}");
            if held == needed {
                assert_ne!(
                    status.code(),
                    tonic::Code::PermissionDenied,
                    "{what}: {status:?}"
                );
                assert_ne!(
                    status.code(),
                    tonic::Code::Unauthenticated,
                    "{what}: {status:?}"
                );
            } else {
                assert_grpc_refused(&status, needed, &what);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_scope_attacks_are_refused() {
    let platform = Platform::start().await;
    let user = platform.create_user(Tier::Enterprise).await;
    let reader = key_with(&platform, &user.api_key, &["jobs:read"]).await;
    let usage = key_with(&platform, &user.api_key, &["usage:read"]).await;
    let submitted = platform
        .submit_rest(
            &user.api_key,
            &json!({"prompt": "a cat", "width": 64, "height": 64, "steps": 2}),
            None,
        )
        .await;
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();

    // A jobs:read key submits (was 202) and cancels (was 200).
    let (status, body) = rest(&platform, "POST", "/api/v1/jobs", ("x-api-key", &reader)).await;
    assert_rest_refused(status, &body, "jobs:write", "jobs:read key submits");
    let cancel = format!("/api/v1/jobs/{job_id}:cancel");
    let (status, body) = rest(&platform, "POST", &cancel, ("x-api-key", &reader)).await;
    assert_rest_refused(status, &body, "jobs:write", "jobs:read key cancels");
    // A usage:read key lists jobs.
    let (status, body) = rest(&platform, "GET", "/api/v1/jobs", ("x-api-key", &usage)).await;
    assert_rest_refused(status, &body, "jobs:read", "usage:read key lists jobs");

    // A token exchanged from the jobs:read key submits, over REST and gRPC.
    let (status, body) = rest(
        &platform,
        "POST",
        "/api/v1/auth/token",
        ("x-api-key", &reader),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", body["access_token"]["token"].as_str().unwrap());
    let (status, body) = rest(
        &platform,
        "POST",
        "/api/v1/jobs",
        ("authorization", &bearer),
    )
    .await;
    assert_rest_refused(status, &body, "jobs:write", "exchanged token submits");
    let channel = platform.channel().await;
    let status = grpc(
        &channel,
        "/easel.jobs.v1.JobService/SubmitJob",
        ("authorization", &bearer),
    )
    .await;
    assert_grpc_refused(&status, "jobs:write", "exchanged token submits over gRPC");
    // …or asks for a wider token.
    let wider = platform
        .http
        .post(format!("{}/api/v1/auth/token", platform.url()))
        .header("x-api-key", &reader)
        .json(&json!({"scopes": ["jobs:write"]}))
        .send()
        .await
        .unwrap();
    let status = wider.status().as_u16();
    assert_rest_refused(
        status,
        &wider.json().await.unwrap(),
        "jobs:write",
        "wider token",
    );

    // The job was left alone and the reader still reads it.
    let (status, body) = platform
        .get_json(&reader, &format!("/api/v1/jobs/{job_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["status"], "cancelled");
}
