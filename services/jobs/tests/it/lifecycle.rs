//! End to end with the real comfy-bridge and storage binaries in front of the ComfyUI
//! simulator: a job runs, its outputs are stored once, failures fail or retry as they should,
//! and a worker process killed mid-job does not lose (or duplicate) it.

use std::time::Duration;

use easel_proto::jobs::internal::v1 as internal;
use easel_proto::jobs::v1::{self, JobStatus};
use easel_proto::storage::v1::ListArtifactsRequest;
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_runtime::testing::{ServiceProcess, TestDatabase, TestRedis, workspace_binary};
use futures::StreamExt;

use crate::support::{Harness, caller, submit, t2i};

/// The simulator, storage and the bridge as processes.
struct Stack {
    _sims: Vec<tokio::process::Child>,
    storage: ServiceProcess,
    bridge: ServiceProcess,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_sim(extra: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let binary = workspace_binary("easel-comfy-sim", "easel-comfy-sim");
    let port = free_port();
    let child = tokio::process::Command::new(binary)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let ready = crate::support::eventually(Duration::from_secs(30), || async move {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
    assert!(ready, "the simulator listens");
    (child, url)
}

async fn start_stack(sims: &[&[(&str, &str)]]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut urls = Vec::new();
    for extra in sims {
        let (child, url) = start_sim(extra).await;
        children.push(child);
        urls.push(url);
    }
    let storage_dir = format!("file://{}", dir.path().join("artifacts").display());
    let storage_db = TestDatabase::sqlite(dir.path());
    let storage = ServiceProcess::spawn(
        &workspace_binary("easel-storage", "easel-storage"),
        &[
            ("EASEL_STORAGE_URL", &storage_dir),
            ("EASEL_DATABASE_URL", &storage_db),
        ],
    )
    .await;
    let urls = urls.join(",");
    let bridge = ServiceProcess::spawn(
        &workspace_binary("easel-comfy-bridge", "easel-comfy-bridge"),
        &[
            ("EASEL_COMFYUI_URLS", &urls),
            ("EASEL_COMFYUI_HEALTH_INTERVAL", "500ms"),
        ],
    )
    .await;
    Stack {
        _sims: children,
        storage,
        bridge,
        _dir: dir,
    }
}

async fn until_terminal(harness: &Harness, job_id: &str) -> v1::Job {
    let mut client = harness.client.clone();
    let mut stream = client
        .watch_job(internal::WatchJobRequest {
            caller: Some(caller("usr_a")),
            request: Some(v1::WatchJobRequest {
                job_id: job_id.into(),
                after_seq: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    let mut last_seq = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, stream.next()).await {
        let event = message.unwrap().event.unwrap();
        assert!(event.seq > last_seq || last_seq == 0, "events in order");
        last_seq = event.seq;
    }
    client
        .get_job(internal::GetJobRequest {
            caller: Some(caller("usr_a")),
            request: Some(v1::GetJobRequest {
                job_id: job_id.into(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap()
}

async fn stored_artifacts(stack: &Stack, job_id: &str) -> usize {
    let mut storage = StorageServiceClient::connect(stack.storage.grpc_url())
        .await
        .unwrap();
    storage
        .list_artifacts(ListArtifactsRequest {
            owner: "usr_a".into(),
            job_id: job_id.into(),
            page_size: 100,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .artifacts
        .len()
}

async fn jobs_with(stack: &Stack) -> Harness {
    let bridge = stack.bridge.grpc_url();
    let storage = stack.storage.grpc_url();
    Harness::start_with(
        true,
        &[
            ("EASEL_JOBS_ROLE", "all"),
            ("EASEL_BRIDGE_URL", &bridge),
            ("EASEL_STORAGE_URL", &storage),
            ("EASEL_RETRY_BACKOFF", "100ms"),
        ],
    )
    .await
}

#[tokio::test]
async fn a_job_succeeds_with_its_outputs_stored() {
    let stack = start_stack(&[&[]]).await;
    let harness = jobs_with(&stack).await;
    let mut client = harness.client.clone();
    let mut request = t2i("a red bicycle");
    if let Some(v1::JobSpec {
        kind: Some(v1::job_spec::Kind::TextToImage(t)),
        ..
    }) = request.spec.as_mut()
    {
        t.batch_size = 2;
    }
    let job = client
        .submit_job(submit("usr_a", request))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let done = until_terminal(&harness, &job.id).await;
    assert_eq!(done.status, JobStatus::Succeeded as i32, "{done:?}");
    assert_eq!(done.outputs.len(), 2);
    assert!(
        done.outputs
            .iter()
            .all(|o| o.artifact_id.starts_with("art_") && !o.url.is_empty())
    );
    assert_eq!(done.attempts, 1);
    assert_eq!(stored_artifacts(&stack, &job.id).await, 2);
}

#[tokio::test]
async fn a_graph_comfyui_rejects_fails_without_a_retry() {
    let stack = start_stack(&[&[]]).await;
    let harness = jobs_with(&stack).await;
    let mut client = harness.client.clone();
    let mut request = t2i("a cat");
    if let Some(v1::JobSpec {
        kind: Some(v1::job_spec::Kind::TextToImage(t)),
        ..
    }) = request.spec.as_mut()
    {
        t.checkpoint = "no-such-model.safetensors".into();
    }
    let job = client
        .submit_job(submit("usr_a", request))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let done = until_terminal(&harness, &job.id).await;
    assert_eq!(done.status, JobStatus::Failed as i32, "{done:?}");
    assert_eq!(done.attempts, 1, "not retried");
    let error = done.error.unwrap();
    assert_eq!(error.code, "INVALID_ARGUMENT");
    assert!(!error.retryable);
}

#[tokio::test]
async fn a_backend_dying_mid_run_is_retried_elsewhere() {
    let stack = start_stack(&[
        &[
            ("EASEL_SIM_DIE_AT_STEP", "2"),
            ("EASEL_SIM_STEP_DELAY_MS", "20"),
        ],
        &[("EASEL_SIM_STEP_DELAY_MS", "20")],
    ])
    .await;
    let harness = jobs_with(&stack).await;
    let mut client = harness.client.clone();
    let mut ids = Vec::new();
    for index in 0..3 {
        ids.push(
            client
                .submit_job(submit("usr_a", t2i(&format!("retry {index}"))))
                .await
                .unwrap()
                .into_inner()
                .job
                .unwrap()
                .id,
        );
    }
    for id in ids {
        let done = until_terminal(&harness, &id).await;
        assert_eq!(done.status, JobStatus::Succeeded as i32, "{done:?}");
        assert_eq!(stored_artifacts(&stack, &id).await, 1);
    }
}

#[tokio::test]
async fn a_worker_killed_mid_job_does_not_lose_or_duplicate_it() {
    let stack = start_stack(&[&[("EASEL_SIM_STEP_DELAY_MS", "300")]]).await;
    let database = TestDatabase::postgres().await;
    let redis = TestRedis::new();
    let bridge = stack.bridge.grpc_url();
    let storage = stack.storage.grpc_url();
    let worker_env = [
        ("EASEL_DATABASE_URL", database.url.as_str()),
        ("EASEL_REDIS_URL", redis.url.as_str()),
        ("EASEL_REDIS_PREFIX", redis.prefix.as_str()),
        ("EASEL_JOBS_ROLE", "worker"),
        ("EASEL_BRIDGE_URL", bridge.as_str()),
        ("EASEL_STORAGE_URL", storage.as_str()),
        ("EASEL_VISIBILITY_TIMEOUT", "2s"),
        ("EASEL_WORKER_CONCURRENCY", "1"),
        ("EASEL_RECONCILE_INTERVAL", "1s"),
        ("EASEL_RECONCILE_GRACE", "3s"),
    ];
    // The API in process, on the same database and Redis.
    let config = crate::support::config(&database.url, Some(&redis), &[]);
    let shutdown = easel_runtime::Shutdown::new(Duration::from_secs(2));
    let parts = easel_jobs::build(
        &config,
        std::sync::Arc::new(easel_jobs::model::SystemClock),
        &shutdown,
    )
    .await
    .unwrap();
    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_easel-jobs"));
    let mut first = ServiceProcess::spawn(&binary, &worker_env).await;
    let job = parts
        .jobs
        .submit(
            &easel_jobs::model::Caller::from_principal(Some(caller("usr_a"))).unwrap(),
            &t2i("survive"),
        )
        .await
        .unwrap()
        .0;
    let running = crate::support::eventually(Duration::from_secs(30), || {
        let jobs = parts.jobs.clone();
        let id = job.id.clone();
        async move {
            let row = easel_jobs::db::find(&jobs.db, &id).await.unwrap().unwrap();
            row.status == JobStatus::Running as i32 && row.progress.is_some()
        }
    })
    .await;
    assert!(running, "the job runs on the first worker");
    first.signal("KILL").await;
    let _ = first.wait_exit(Duration::from_secs(5)).await;
    let _second = ServiceProcess::spawn(&binary, &worker_env).await;
    let finished = crate::support::eventually(Duration::from_secs(90), || {
        let jobs = parts.jobs.clone();
        let id = job.id.clone();
        async move {
            let row = easel_jobs::db::find(&jobs.db, &id).await.unwrap().unwrap();
            row.status == JobStatus::Succeeded as i32
        }
    })
    .await;
    assert!(finished, "the job succeeds on the second worker");
    let row = easel_jobs::db::find(&parts.jobs.db, &job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.attempts, 2);
    let events = easel_jobs::db::events_after(&parts.jobs.db, &job.id, 0, 1000)
        .await
        .unwrap();
    let succeeded = events
        .iter()
        .filter(|e| matches!(&e.kind, Some(v1::job_event::Kind::StatusChange(c)) if c.status == JobStatus::Succeeded as i32))
        .count();
    assert_eq!(succeeded, 1, "succeeded exactly once");
    assert_eq!(
        stored_artifacts(&stack, &job.id).await,
        1,
        "outputs stored once"
    );
    shutdown.trigger();
}
