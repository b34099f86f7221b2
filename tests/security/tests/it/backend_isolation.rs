//! Tenants share the ComfyUI backends: nothing of one may reach another there, and nothing a
//! user writes may stop them.
//!
//! - the simulator's fault markers in a prompt (`[[sim:die]]`) stopped `easel up`;
//! - `LoadImage` of `easel_00294_.png [output]` (or `[temp]`, `../`, an absolute path, another
//!   user's input) read other tenants' images;
//! - outputs stayed on the backend, under guessable names;
//! - artifacts carried the whole prompt graph in PNG text chunks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use easel_e2e::{DEADLINE, Platform, find_api_key};
use easel_proto::jobs::v1::{JobSpec, SubmitJobRequest, Workflow, job_spec};
use easel_test_support::workspace_binary;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tonic_types::StatusExt;

/// The job inside a submit answer (`{"job": …}`) or a job body.
fn job_of(body: &Value) -> &Value {
    if body["job"].is_object() {
        &body["job"]
    } else {
        body
    }
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "completed" | "failed" | "cancelled" | "expired")
}

/// Polls `GET /api/v1/jobs/{id}` at `base` until the job is terminal; returns the job.
async fn wait_terminal(http: &reqwest::Client, base: &str, api_key: &str, job_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let response = http
            .get(format!("{base}/api/v1/jobs/{job_id}"))
            .header("x-api-key", api_key)
            .send()
            .await
            .unwrap_or_else(|error| panic!("GET job failed (is the platform down?): {error}"));
        let body: Value = response.json().await.unwrap_or_default();
        let job = job_of(&body).clone();
        if job["status"].as_str().is_some_and(is_terminal) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} not terminal: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn submit(http: &reqwest::Client, base: &str, api_key: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/jobs"))
        .header("x-api-key", api_key)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|error| panic!("POST /api/v1/jobs failed: {error}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn job_id(body: &Value) -> String {
    job_of(body)["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job id in {body}"))
        .to_string()
}

/// `easel up` as a child process, its banner read.
struct Up {
    child: tokio::process::Child,
    url: String,
    api_key: String,
}

async fn start_up(data_dir: &Path) -> Up {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|error| panic!("no free port: {error}"))
        .port();
    let mut child = tokio::process::Command::new(workspace_binary("easel", "easel"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data_dir)
        .env_remove("EASEL_REDIS_URL")
        .env_remove("REDIS_URL")
        .env_remove("EASEL_COMFYUI_URLS")
        .env_remove("EASEL_DEV_API_KEY")
        .env_remove("EASEL_SIM_REQUEST_FAULTS")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start easel up: {error}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut banner = Vec::new();
    let ready = tokio::time::timeout(DEADLINE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let done = line.contains("Ctrl-C stops everything");
            banner.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    let banner = banner.join("\n");
    assert!(ready, "easel up did not come up:\n{banner}");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let api_key = find_api_key(&banner).unwrap_or_else(|| panic!("no API key:\n{banner}"));
    Up {
        child,
        url: format!("http://127.0.0.1:{port}"),
        api_key,
    }
}

/// A prompt carrying the simulator's fault markers is a prompt like any other: the job ends
/// (it succeeds: the embedded simulator ignores markers) and the platform keeps serving.
#[tokio::test]
async fn simulator_markers_in_a_prompt_never_stop_easel_up() {
    let data = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
    let mut up = start_up(data.path()).await;
    let http = reqwest::Client::new();
    for prompt in [
        "a cat [[sim:die]]",
        "a cat [[sim:die]] [[sim:step=1]]",
        "a dog [[sim:oom]] [[sim:error]]",
    ] {
        let (status, body) = submit(
            &http,
            &up.url,
            &up.api_key,
            &json!({"prompt": prompt, "width": 64, "height": 64, "steps": 2}),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let job = wait_terminal(&http, &up.url, &up.api_key, &job_id(&body)).await;
        let status = job["status"].as_str().unwrap_or_default();
        assert!(matches!(status, "completed" | "failed"), "{job}");
        assert!(
            up.child.try_wait().ok().flatten().is_none(),
            "easel up exited after {prompt:?}"
        );
    }
    // Still serving: a plain job succeeds.
    let (status, body) = submit(
        &http,
        &up.url,
        &up.api_key,
        &json!({"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let job = wait_terminal(&http, &up.url, &up.api_key, &job_id(&body)).await;
    assert_eq!(job["status"], "completed", "{job}");
    // Nothing of the jobs stayed in the simulator's output folder.
    assert!(files_under(&data.path().join("comfyui")).is_empty());
    let _ = up.child.start_kill();
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn load_image_graph(image: &str) -> Value {
    json!({
        "1": {"class_type": "LoadImage", "inputs": {"image": image}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    })
}

/// The field violations of a REST error envelope.
fn rest_violations(body: &Value) -> Vec<String> {
    body["error"]["details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|detail| {
            detail["fieldViolations"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|violation| violation["field"].as_str().map(str::to_string))
        .collect()
}

/// User B tries to read user A's image (and the backend's files) through `LoadImage`: refused
/// at submit time, naming the node and input, over REST and gRPC; nothing reaches ComfyUI.
#[tokio::test]
async fn cross_tenant_load_image_is_refused_over_rest_and_grpc() {
    let platform = Platform::start().await;
    let alice = platform
        .create_user(easel_proto::account::v1::Tier::Pro)
        .await;
    let bob = platform
        .create_user(easel_proto::account::v1::Tier::Pro)
        .await;

    // Alice makes an image; its ComfyUI name is what Bob would guess.
    let response = platform
        .submit_rest(
            &alice.api_key,
            &json!({"prompt": "alice's private lighthouse", "width": 64, "height": 64, "steps": 2}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap_or_default();
    let job = wait_terminal(
        &platform.http,
        &platform.url(),
        &alice.api_key,
        &job_id(&body),
    )
    .await;
    assert_eq!(job["status"], "completed", "{job}");
    let filename = job["results"][0]["filename"]
        .as_str()
        .unwrap_or("easel_00001_.png")
        .to_string();

    let attacks = [
        format!("{filename} [output]"),
        "easel_00294_.png [output]".to_string(),
        "x.png [temp]".to_string(),
        "../x.png".to_string(),
        "../output/easel_00001_.png".to_string(),
        "/etc/passwd".to_string(),
        format!("easel-input://inp_{}", alice.id.trim_start_matches("usr_")),
        "easel-input://inp_01JX0000000000000000000000".to_string(),
    ];
    let mut grpc = platform.jobs_client().await;
    for image in &attacks {
        // REST.
        let response = platform
            .submit_rest(
                &bob.api_key,
                &json!({"workflow": load_image_graph(image)}),
                None,
            )
            .await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 400, "{image}: {body}");
        assert_eq!(body["error"]["code"], "INVALID_ARGUMENT", "{body}");
        let fields = rest_violations(&body);
        assert!(
            fields.iter().any(|field| field.ends_with("1.inputs.image")),
            "{image}: {body}"
        );
        // gRPC.
        let request = SubmitJobRequest {
            spec: Some(JobSpec {
                kind: Some(job_spec::Kind::Workflow(Workflow {
                    graph: Some(
                        serde_json::from_value(load_image_graph(image))
                            .unwrap_or_else(|error| panic!("struct: {error}")),
                    ),
                    overrides: vec![],
                })),
                ..Default::default()
            }),
            ..Default::default()
        };
        let status = grpc
            .submit_job(easel_e2e::with_key(request, &bob.api_key))
            .await
            .expect_err(image);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{image}: {status:?}"
        );
        let fields: Vec<String> = status
            .check_error_details()
            .ok()
            .and_then(|details| details.bad_request().cloned())
            .map(|bad| bad.field_violations.into_iter().map(|v| v.field).collect())
            .unwrap_or_default();
        assert_eq!(fields, ["spec.workflow.graph.1.inputs.image"], "{image}");
    }
    // An override cannot smuggle the path in either.
    let response = platform
        .submit_rest(
            &bob.api_key,
            &json!({
                "workflow": load_image_graph("easel-input://inp_mine"),
                "overrides": [{"node_id": "1", "input": "image", "value": format!("{filename} [output]")}],
            }),
            None,
        )
        .await;
    assert_eq!(response.status(), 400);
    // Bob has no jobs at all: nothing was queued, nothing reached the backend.
    let (status, listed) = platform.get_json(&bob.api_key, "/api/v1/jobs").await;
    assert_eq!(status, 200);
    assert!(
        listed["jobs"].as_array().is_none_or(Vec::is_empty),
        "{listed}"
    );
}

/// After a job, the backend holds nothing of it: the images came over the WebSocket.
#[tokio::test]
async fn after_a_job_the_backend_output_folder_holds_nothing_of_it() {
    let platform = Platform::start().await;
    let key = platform.admin.api_key.clone();
    for body in [
        json!({"prompt": "a lighthouse", "width": 64, "height": 64, "steps": 2, "batch_size": 2}),
        json!({"workflow": easel_e2e::solid_image_graph(64, 32)}),
        json!({"workflow": {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
        }}),
    ] {
        let response = platform.submit_rest(&key, &body, None).await;
        assert_eq!(response.status(), 202);
        let submitted: Value = response.json().await.unwrap_or_default();
        let job = wait_terminal(&platform.http, &platform.url(), &key, &job_id(&submitted)).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert!(
            job["results"]
                .as_array()
                .is_some_and(|outputs| !outputs.is_empty()),
            "{job}"
        );
        let left = files_under(platform.simulator.dir.path());
        assert!(left.is_empty(), "left on the backend: {left:?}");
    }
}

fn has_text_chunk(png: &[u8]) -> bool {
    png.windows(4)
        .any(|window| matches!(window, b"tEXt" | b"iTXt" | b"zTXt"))
}

/// A stored artifact carries no prompt text (a shared link does not share the prompt) unless
/// the job asked to keep it; the parameters stay in the job's metadata either way.
#[tokio::test]
async fn artifacts_carry_no_prompt_text_unless_kept() {
    let platform = Platform::start().await;
    let key = platform.admin.api_key.clone();
    let secret = "the secret ingredient is saffron";
    for keep in [false, true] {
        let mut body = json!({"prompt": secret, "width": 64, "height": 64, "steps": 2, "seed": 11});
        if keep {
            body["keep_workflow_metadata"] = json!(true);
        }
        let response = platform.submit_rest(&key, &body, None).await;
        assert_eq!(response.status(), 202);
        let submitted: Value = response.json().await.unwrap_or_default();
        let job = wait_terminal(&platform.http, &platform.url(), &key, &job_id(&submitted)).await;
        assert_eq!(job["status"], "completed", "{job}");
        assert_eq!(job["metadata"]["resolved"]["prompt"], secret, "{job}");
        let url = job["results"][0]["url"]
            .as_str()
            .unwrap_or_else(|| panic!("no url: {job}"));
        let (status, bytes) = platform.download(url).await;
        assert_eq!(status, 200);
        assert!(bytes.starts_with(b"\x89PNG"));
        let text = String::from_utf8_lossy(&bytes);
        if keep {
            assert!(has_text_chunk(&bytes), "kept metadata");
            assert!(text.contains(secret), "the kept prompt");
        } else {
            assert!(!has_text_chunk(&bytes), "text chunks in a stored artifact");
            assert!(!text.contains(secret), "the prompt in a stored artifact");
        }
    }
    // Over gRPC too: the option is a field of the spec.
    let mut grpc = platform.jobs_client().await;
    let request = SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(
                easel_proto::jobs::v1::TextToImage {
                    prompt: secret.to_string(),
                    width: 64,
                    height: 64,
                    steps: 2,
                    ..Default::default()
                },
            )),
            keep_workflow_metadata: false,
        }),
        ..Default::default()
    };
    let job = grpc
        .submit_job(easel_e2e::with_key(request, &key))
        .await
        .unwrap_or_else(|status| panic!("submit: {status:?}"))
        .into_inner()
        .job
        .unwrap_or_default();
    let job = wait_terminal(&platform.http, &platform.url(), &key, &job.id).await;
    let url = job["results"][0]["url"].as_str().unwrap_or_default();
    let (_, bytes) = platform.download(url).await;
    assert!(!has_text_chunk(&bytes));
}
