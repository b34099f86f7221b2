//! Secrets and prompts never reach the logs: API keys (in headers and in `?access_token=`),
//! bearer tokens, passwords, prompts and signed links, through every protocol and on errors.
//!
//! The test runs on a current-thread runtime with a thread-local subscriber at DEBUG, so it
//! captures every service's logs of this test only, whatever else runs in the process.

use std::io::Write;
use std::sync::{Arc, Mutex};

use easel_proto::account::v1::Tier;
use easel_proto::jobs::v1::{JobSpec, SubmitJobRequest, TextToImage, job_spec};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::support::{Platform, WAIT, uuid_like, with_key};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn keys_tokens_passwords_prompts_and_signed_links_never_reach_the_logs() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(captured.clone())
        // Everything of ours and of the HTTP/gRPC stack; not the ComfyUI simulator, which
        // stands in for ComfyUI (a third party that sees prompts by design).
        .with_env_filter(EnvFilter::new("debug,easel_comfy_sim=off"))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let platform = Platform::start().await;
    let user = platform.user(Tier::Pro).await;
    let prompt = format!("canary prompt {}", uuid_like());
    let grpc_prompt = format!("canary grpc prompt {}", uuid_like());
    let bad_value = format!("canary bad value {}", uuid_like());

    // REST submit with the key in a header, then the job's streams with the key in the query.
    let response = platform
        .submit(
            &user.api_key,
            &json!({"prompt": prompt, "width": 64, "height": 64, "steps": 2}),
        )
        .await;
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ws = format!(
        "{}/ws/jobs/{id}?access_token={}",
        platform.url.replacen("http", "ws", 1),
        user.api_key
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(ws).await.unwrap();
    tokio::time::timeout(WAIT, async {
        while let Some(message) = socket.next().await {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                break;
            }
        }
    })
    .await
    .unwrap();
    let sse = platform
        .http
        .get(format!(
            "{}/api/v1/jobs/{id}/events?access_token={}",
            platform.url, user.api_key
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let _ = sse.bytes().await;

    // The signed output link, downloaded through the gateway.
    let job = platform.wait_terminal(&user.api_key, &id).await;
    let url = job["result_url"].as_str().unwrap().to_string();
    let signature = url.split("sig=").nth(1).unwrap().to_string();
    let download = platform.http.get(&url).send().await.unwrap();
    assert_eq!(download.status(), 200);

    // Login (password), token exchange and a bearer call.
    let login = platform
        .http
        .post(format!("{}/api/v1/auth/login", platform.url))
        .json(&json!({"email": user.email, "password": user.password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let token = login.json::<Value>().await.unwrap()["access_token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = platform
        .http
        .get(format!("{}/api/v1/jobs", platform.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    // gRPC submit.
    let submitted = platform
        .jobs()
        .await
        .submit_job(with_key(
            SubmitJobRequest {
                spec: Some(JobSpec {
                    kind: Some(job_spec::Kind::TextToImage(TextToImage {
                        prompt: grpc_prompt.clone(),
                        width: 64,
                        height: 64,
                        steps: 2,
                        ..Default::default()
                    })),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &user.api_key,
        ))
        .await
        .unwrap()
        .into_inner();
    platform
        .wait_terminal(&user.api_key, &submitted.job.unwrap().id)
        .await;

    // Errors: a wrong type (the value is not echoed), a bad key.
    let response = platform
        .submit(&user.api_key, &json!({"prompt": "x", "width": bad_value}))
        .await;
    assert_eq!(response.status(), 400);
    assert!(!response.text().await.unwrap().contains(&bad_value));
    let bad_key = format!("easel_badprefx_{}", uuid_like());
    let (status, _) = platform.get_json(&bad_key, "/api/v1/jobs").await;
    assert_eq!(status, 401);

    let logs = captured.text();
    assert!(
        logs.contains("\"request_id\""),
        "the capture works and logs carry request ids"
    );
    let key_secret = user
        .api_key
        .strip_prefix("easel_")
        .and_then(|rest| rest.split_once('_'))
        .map(|(_, secret)| secret.to_string())
        .unwrap();
    assert!(key_secret.len() >= 16, "the key has a secret part");
    for (what, secret) in [
        ("API key", user.api_key.as_str()),
        ("API key's secret", key_secret.as_str()),
        ("admin API key", platform.admin.api_key.as_str()),
        ("unknown API key", bad_key.as_str()),
        ("bearer token", token.as_str()),
        ("password", user.password.as_str()),
        ("REST prompt", prompt.as_str()),
        ("gRPC prompt", grpc_prompt.as_str()),
        ("rejected value", bad_value.as_str()),
        ("link signature", signature.as_str()),
    ] {
        if let Some(at) = logs.find(secret) {
            let line_start = logs[..at].rfind('\n').map_or(0, |index| index + 1);
            let line_end = logs[at..].find('\n').map_or(logs.len(), |index| at + index);
            panic!(
                "the {what} is in the logs:\n{}",
                &logs[line_start..line_end]
            );
        }
    }
}
