//! The scope matrix: every route and method the door guards × every scope, over REST, gRPC
//! and gRPC-web. A key with exactly one scope gets through exactly the routes that need it
//! and is refused (403 / PERMISSION_DENIED, `MISSING_SCOPE`, naming the scope) everywhere
//! else; a login token has its user's scopes; a token exchanged from a key has the key's.

use easel_auth_client::{REQUIRED_SCOPE, Scope, reason};
use easel_gateway::door::access::{Access, GRPC_METHODS, Rule, rule_of};
use easel_gateway::routes::ROUTES;
use easel_proto::account::v1::{CreateApiKeyRequest, LoginRequest, Tier};
use easel_runtime::error::Error;
use futures::StreamExt;
use http::Method;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;

use crate::grpc_web;
use crate::support::{Options, Platform, small_job, with_key};

/// The credentials of the matrix: one key per scope, and a login token.
struct Credentials {
    /// `(scope, key)`: a key with exactly that scope.
    keys: Vec<(Scope, String)>,
    /// A user's login token (every user scope, not `admin`).
    login_token: String,
    /// A key with every user scope.
    full_key: String,
}

/// A platform whose tiers allow the matrix's few hundred requests a minute.
async fn platform() -> Platform {
    let mut auth_env = Vec::new();
    for name in [
        "EASEL_TIER_PRO_REQUESTS_PER_MINUTE",
        "EASEL_TIER_ENTERPRISE_REQUESTS_PER_MINUTE",
    ] {
        auth_env.push((name, "60000".to_string()));
    }
    for name in ["EASEL_TIER_PRO_BURST", "EASEL_TIER_ENTERPRISE_BURST"] {
        auth_env.push((name, "10000".to_string()));
    }
    Platform::start_with(Options {
        auth_env,
        ..Options::default()
    })
    .await
}

/// A key with exactly `scopes`, made with `creator`.
async fn key_with(platform: &Platform, creator: &str, scopes: &[Scope]) -> String {
    platform
        .account()
        .await
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: format!("only {scopes:?}"),
                scopes: scopes.iter().map(|scope| scope.to_string()).collect(),
                ttl: None,
            },
            creator,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret
}

async fn credentials(platform: &Platform) -> Credentials {
    let user = platform.user(Tier::Pro).await;
    let mut keys = Vec::new();
    for scope in Scope::USER {
        keys.push((scope, key_with(platform, &user.api_key, &[scope]).await));
    }
    keys.push((
        Scope::Admin,
        key_with(platform, &platform.admin.api_key, &[Scope::Admin]).await,
    ));
    let login_token = platform
        .account()
        .await
        .login(LoginRequest {
            email: user.email.clone(),
            password: user.password.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
        .unwrap()
        .token;
    Credentials {
        keys,
        login_token,
        full_key: user.api_key,
    }
}

/// A REST route's path with a plausible id of its kind.
fn concrete(path: &str) -> String {
    let id = if path.starts_with("/api/v1/keys") {
        "key_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b"
    } else if path.starts_with("/api/v1/admin") {
        "usr_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b"
    } else {
        "job_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b"
    };
    path.replace("{id}", id)
}

/// The routes and methods the matrix covers: everything that needs a credential.
fn guarded_rest() -> Vec<(Method, String, Access)> {
    ROUTES
        .iter()
        .filter(|route| route.access.needs_credential())
        .map(|route| (route.method.method(), concrete(route.path), route.access))
        .collect()
}

fn guarded_grpc() -> Vec<(&'static str, Access)> {
    GRPC_METHODS
        .iter()
        .filter(|entry| entry.access.needs_credential())
        .map(|entry| (entry.path, entry.access))
        .collect()
}

/// Asserts a refusal for lacking `scope`: reason and metadata naming it.
#[track_caller]
fn assert_missing_scope(error: &Error, scope: Scope, what: &str) {
    assert_eq!(
        error.code(),
        easel_runtime::ErrorCode::PermissionDenied,
        "{what}: {error:?}"
    );
    assert_eq!(error.reason(), Some(reason::MISSING_SCOPE), "{what}");
    assert_eq!(
        error.metadata().get(REQUIRED_SCOPE).map(String::as_str),
        Some(scope.as_str()),
        "{what}"
    );
}

/// Whether a credential holding `held` may call a route needing `access`.
fn allowed(access: Access, held: &[Scope]) -> bool {
    match access {
        Access::Scope(scope) => held.contains(&scope),
        Access::Public | Access::PerAddress | Access::Credential => true,
    }
}

/// A REST call; status and body.
async fn rest(
    platform: &Platform,
    method: &Method,
    path: &str,
    header: (&str, &str),
) -> (u16, Value) {
    let url = format!("{}{path}", platform.url);
    let request = platform
        .http
        .request(method.clone(), url)
        .header(header.0, header.1);
    let request = if method == Method::POST {
        request.json(&json!({}))
    } else {
        request
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The error of a REST envelope.
fn envelope_error(body: &Value) -> Error {
    let error = &body["error"];
    let info = error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|detail| detail["@type"] == "type.googleapis.com/google.rpc.ErrorInfo");
    let code = easel_runtime::ErrorCode::from_name(error["code"].as_str().unwrap_or_default())
        .unwrap_or(easel_runtime::ErrorCode::Internal);
    let mut parsed = Error::new(
        code,
        error["message"].as_str().unwrap_or_default().to_string(),
    );
    if let Some(info) = info {
        parsed = parsed.with_reason(info["reason"].as_str().unwrap_or_default().to_string());
        for (name, value) in info["metadata"].as_object().into_iter().flatten() {
            parsed = parsed.with_metadata(name.clone(), value.as_str().unwrap_or_default());
        }
    }
    parsed
}

/// Checks one REST answer against the matrix.
#[track_caller]
fn check_rest(access: Access, held: &[Scope], what: &str, status: u16, body: &Value) {
    if allowed(access, held) {
        assert!(
            ![401, 403, 405].contains(&status),
            "{what}: refused with {status}: {body}"
        );
        assert!(
            !body.to_string().contains("no such route"),
            "{what}: not routed: {body}"
        );
    } else {
        let scope = access.scope().unwrap();
        assert_eq!(status, 403, "{what}: {body}");
        assert_missing_scope(&envelope_error(body), scope, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_rest_each_scope_opens_exactly_its_routes() {
    let platform = platform().await;
    let credentials = credentials(&platform).await;
    let routes = guarded_rest();
    assert!(routes.len() >= 15, "{routes:?}");
    for (scope, key) in &credentials.keys {
        for (method, path, access) in &routes {
            let (status, body) = rest(&platform, method, path, ("x-api-key", key)).await;
            let what = format!("{scope} key: {method} {path}");
            check_rest(*access, &[*scope], &what, status, &body);
        }
    }
    // A login token: every user scope, never admin. (Token exchange takes an API key; auth
    // refuses tokens, so it is left out here.)
    let bearer = format!("Bearer {}", credentials.login_token);
    for (method, path, access) in routes
        .iter()
        .filter(|(_, _, access)| *access != Access::Credential)
    {
        let (status, body) = rest(&platform, method, path, ("authorization", &bearer)).await;
        let what = format!("login token: {method} {path}");
        check_rest(*access, &Scope::USER, &what, status, &body);
    }
}

/// A gRPC call of `path` with an empty message (every request message decodes from it); the
/// status it ends with (OK when it succeeds).
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

#[track_caller]
fn check_status(access: Access, held: &[Scope], what: &str, status: &tonic::Status) {
    if allowed(access, held) {
        assert!(
            ![
                tonic::Code::PermissionDenied,
                tonic::Code::Unauthenticated,
                tonic::Code::Unimplemented
            ]
            .contains(&status.code()),
            "{what}: {status:?}"
        );
    } else {
        assert_missing_scope(&Error::from_status(status), access.scope().unwrap(), what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_each_scope_opens_exactly_its_methods() {
    let platform = platform().await;
    let credentials = credentials(&platform).await;
    let methods = guarded_grpc();
    assert!(methods.len() >= 14, "{methods:?}");
    let channel = platform.channel().await;
    for (scope, key) in &credentials.keys {
        for (path, access) in &methods {
            let status = grpc(&channel, path, ("x-api-key", key)).await;
            check_status(*access, &[*scope], &format!("{scope} key: {path}"), &status);
        }
    }
    // ExchangeToken takes an API key (auth refuses tokens), so it is left out here.
    let bearer = format!("Bearer {}", credentials.login_token);
    for (path, access) in methods
        .iter()
        .filter(|(_, access)| *access != Access::Credential)
    {
        let status = grpc(&channel, path, ("authorization", &bearer)).await;
        check_status(
            *access,
            &Scope::USER,
            &format!("login token: {path}"),
            &status,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_web_each_scope_opens_exactly_its_methods() {
    let platform = platform().await;
    let credentials = credentials(&platform).await;
    for (scope, key) in &credentials.keys {
        for (path, access) in guarded_grpc() {
            let answer = grpc_web::call(&platform.url, path, &(), &[("x-api-key", key)]).await;
            assert_eq!(answer.status, 200, "{scope} key: {path}");
            let status = answer.grpc();
            check_status(access, &[*scope], &format!("{scope} key: {path}"), &status);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrow_keys_cannot_act_beyond_their_scope_on_any_protocol() {
    let platform = platform().await;
    let credentials = credentials(&platform).await;
    let key_of = |wanted: Scope| {
        credentials
            .keys
            .iter()
            .find(|(scope, _)| *scope == wanted)
            .map(|(_, key)| key.clone())
            .unwrap()
    };
    let (reader, usage) = (key_of(Scope::JobsRead), key_of(Scope::UsageRead));

    // A real job of the user's, made with the full key.
    let submitted = platform
        .submit(&credentials.full_key, &small_job("scoped"))
        .await;
    assert_eq!(submitted.status(), 202);
    let job: Value = submitted.json().await.unwrap();
    let job_id = job["job_id"].as_str().unwrap().to_string();

    // jobs:read cannot submit or cancel the job, but reads it.
    let refused = platform.submit(&reader, &small_job("not allowed")).await;
    assert_eq!(refused.status(), 403);
    assert_missing_scope(
        &envelope_error(&refused.json().await.unwrap()),
        Scope::JobsWrite,
        "submit",
    );
    let (status, body) = rest(
        &platform,
        &Method::POST,
        &format!("/api/v1/jobs/{job_id}:cancel"),
        ("x-api-key", &reader),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = platform
        .get_json(&reader, &format!("/api/v1/jobs/{job_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, listed) = platform.get_json(&reader, "/api/v1/jobs").await;
    assert_eq!(listed["jobs"].as_array().map(Vec::len), Some(1));

    // usage:read cannot list jobs, nor follow one over SSE or WebSocket (header or query).
    let (status, body) = platform.get_json(&usage, "/api/v1/jobs").await;
    assert_eq!(status, 403, "{body}");
    let events = platform
        .http
        .get(format!(
            "{}/api/v1/jobs/{job_id}/events?access_token={usage}",
            platform.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 403);
    let ws = platform.url.replacen("http", "ws", 1);
    let mut request = format!("{ws}/ws/jobs/{job_id}")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-api-key", usage.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("the WebSocket opened for a usage:read key: {other:?}"),
    }
    let request = format!("{ws}/ws/jobs/{job_id}?access_token={usage}")
        .into_client_request()
        .unwrap();
    assert!(matches!(
        tokio_tungstenite::connect_async(request).await,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) if response.status() == 403
    ));
    // …while jobs:read follows it to its end.
    let request = format!("{ws}/ws/jobs/{job_id}?access_token={reader}")
        .into_client_request()
        .unwrap();
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let first = tokio::time::timeout(crate::support::WAIT, socket.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(_))), "{first:?}");

    // A token exchanged from the jobs:read key cannot submit either, on any protocol.
    let token = platform
        .http
        .post(format!("{}/api/v1/auth/token", platform.url))
        .header("x-api-key", &reader)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let token: Value = token.json().await.unwrap();
    let bearer = format!(
        "Bearer {}",
        token["access_token"]["token"].as_str().unwrap()
    );
    let (status, body) = rest(
        &platform,
        &Method::POST,
        "/api/v1/jobs",
        ("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let status = grpc(
        &platform.channel().await,
        "/easel.jobs.v1.JobService/SubmitJob",
        ("authorization", &bearer),
    )
    .await;
    assert_missing_scope(
        &Error::from_status(&status),
        Scope::JobsWrite,
        "gRPC submit",
    );
    let (status, _) = rest(
        &platform,
        &Method::GET,
        "/api/v1/jobs",
        ("authorization", &bearer),
    )
    .await;
    assert_eq!(status, 200);
    // Nor can it be swapped for a wider token.
    let wider = platform
        .http
        .post(format!("{}/api/v1/auth/token", platform.url))
        .header("x-api-key", &reader)
        .json(&json!({"scopes": ["jobs:read", "jobs:write"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(wider.status(), 403);
    assert_missing_scope(
        &envelope_error(&wider.json().await.unwrap()),
        Scope::JobsWrite,
        "exchange",
    );

    // The job was never cancelled.
    let (_, body) = platform
        .get_json(&credentials.full_key, &format!("/api/v1/jobs/{job_id}"))
        .await;
    assert_ne!(body["status"], "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_the_gateway_documents_is_in_the_authorization_table() {
    let platform = Platform::start().await;
    let document: Value = platform
        .http
        .get(format!("{}/openapi.json", platform.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 15);
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
            let rule = rule_of(&method, &concrete(path), false);
            let Rule::Listed(access) = rule else {
                panic!("{method} {path} is not in the authorization table: {rule:?}");
            };
            // The document states what the door checks.
            let documented = operation["x-required-scope"].as_str();
            assert_eq!(
                documented,
                access.scope().map(Scope::as_str),
                "{method} {path}"
            );
        }
    }
    // The unknown is refused at the door, after authentication, on every protocol.
    let user = platform.user(Tier::Pro).await;
    let (status, _) = platform.get_json(&user.api_key, "/api/v1/secret").await;
    assert_eq!(status, 404);
    let channel = platform.channel().await;
    let status = grpc(
        &channel,
        "/easel.jobs.v1.JobService/DeleteEverything",
        ("x-api-key", &user.api_key),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Unimplemented);
    let status = grpc(
        &channel,
        "/easel.jobs.internal.v1.InternalJobService/ListJobs",
        ("x-api-key", &user.api_key),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}
