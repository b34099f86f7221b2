//! End to end with the real comfy-bridge and storage binaries in front of the ComfyUI
//! simulator: a job runs, its outputs are stored once, failures fail or retry as they should,
//! and a worker process killed mid-job does not lose (or duplicate) it.

use std::time::Duration;

use easel_proto::jobs::internal::v1 as internal;
use easel_proto::jobs::v1::{self, JobStatus};
use easel_proto::storage::v1::ListArtifactsRequest;
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_test_support::{ServiceProcess, TestDatabase, TestRedis, workspace_binary};
use futures::StreamExt;

use crate::support::{Harness, caller, submit, t2i};

/// The simulator, storage and the bridge as processes.
struct Stack {
    sims: Vec<tokio::process::Child>,
    /// The simulators' ports, to start one again where it was.
    ports: Vec<u16>,
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

async fn start_sim_on(port: u16, extra: &[(&str, &str)]) -> (tokio::process::Child, String) {
    let binary = workspace_binary("easel-comfy-sim", "easel-comfy-sim");
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
    start_stack_with(sims, &[]).await
}

async fn start_stack_with(sims: &[&[(&str, &str)]], bridge_extra: &[(&str, &str)]) -> Stack {
    let dir = tempfile::tempdir().unwrap();
    let mut children = Vec::new();
    let mut urls = Vec::new();
    let mut ports = Vec::new();
    for extra in sims {
        let port = free_port();
        let (child, url) = start_sim_on(port, extra).await;
        children.push(child);
        urls.push(url);
        ports.push(port);
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
    let mut bridge_env = vec![
        ("EASEL_COMFYUI_URLS", urls.as_str()),
        ("EASEL_COMFYUI_HEALTH_INTERVAL", "500ms"),
    ];
    bridge_env.extend_from_slice(bridge_extra);
    let bridge = ServiceProcess::spawn(
        &workspace_binary("easel-comfy-bridge", "easel-comfy-bridge"),
        &bridge_env,
    )
    .await;
    Stack {
        sims: children,
        ports,
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
    let progress = done.progress.expect("a succeeded job's progress");
    assert_eq!(progress.percent, 100.0, "a succeeded job is complete");
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
            let row = easel_jobs::db::find(jobs.db(), &id).await.unwrap().unwrap();
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
            let row = easel_jobs::db::find(jobs.db(), &id).await.unwrap().unwrap();
            row.status == JobStatus::Succeeded as i32
        }
    })
    .await;
    assert!(finished, "the job succeeds on the second worker");
    let row = easel_jobs::db::find(parts.jobs.db(), &job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.attempts, 2);
    let events = easel_jobs::db::events_after(parts.jobs.db(), &job.id, 0, 1000)
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

/// A text-to-image request of `steps` sampler steps (the simulator's step delay sets its time).
fn slow_t2i(prompt: &str, steps: u32) -> v1::SubmitJobRequest {
    let mut request = t2i(prompt);
    if let Some(v1::JobSpec {
        kind: Some(v1::job_spec::Kind::TextToImage(t)),
        ..
    }) = request.spec.as_mut()
    {
        t.steps = steps;
    }
    request
}

async fn row(harness: &Harness, id: &str) -> easel_jobs::db::JobRow {
    easel_jobs::db::find(harness.jobs.db(), id)
        .await
        .unwrap()
        .unwrap()
}

/// The job's status changes, from its stored event log, after checking the log numbers its
/// events 1, 2, 3… with no gap and no duplicate.
async fn status_changes(harness: &Harness, id: &str) -> Vec<v1::StatusChange> {
    let events = easel_jobs::db::events_after(harness.jobs.db(), id, 0, 10_000)
        .await
        .unwrap();
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    let expected: Vec<u64> = (1..=events.len() as u64).collect();
    assert_eq!(seqs, expected, "{id}: no gap, no duplicate");
    events
        .into_iter()
        .filter_map(|event| match event.kind {
            Some(v1::job_event::Kind::StatusChange(change)) => Some(change),
            _ => None,
        })
        .collect()
}

/// The measured failure of issue 11: with the only backend down for 20 s, jobs failed after
/// spending their attempts waiting. Now the jobs that were running and those queued all
/// succeed with one attempt; while the backend is down none shows RUNNING and the ones
/// workers hold say they wait for a backend.
#[tokio::test]
async fn the_only_backend_down_for_20s_fails_no_job_and_spends_no_attempt() {
    let sim_env: &[(&str, &str)] = &[("EASEL_SIM_STEP_DELAY_MS", "100")];
    // A short queue timeout: the bridge gives up on each wait several times during the
    // outage, and the worker must keep asking without spending attempts.
    let mut stack = start_stack_with(&[sim_env], &[("EASEL_COMFYUI_QUEUE_TIMEOUT", "2s")]).await;
    let harness = jobs_with(&stack).await;
    let mut client = harness.client.clone();
    let mut ids = Vec::new();
    for index in 0..6 {
        let job = client
            .submit_job(submit("usr_a", slow_t2i(&format!("outage {index}"), 30)))
            .await
            .unwrap()
            .into_inner()
            .job
            .unwrap();
        ids.push(job.id);
    }
    let in_flight = crate::support::eventually(Duration::from_secs(60), || {
        let harness = &harness;
        let ids = &ids;
        async move {
            for id in ids {
                let row = row(harness, id).await;
                if row.status == JobStatus::Running as i32 && row.progress.is_some() {
                    return true;
                }
            }
            false
        }
    })
    .await;
    assert!(in_flight, "a job runs on the backend before it goes down");

    // The fault: the only backend dies, and stays down 20 s.
    let outage = tokio::time::Instant::now();
    let mut sim = stack.sims.remove(0);
    sim.kill().await.unwrap();
    let waiting = crate::support::eventually(Duration::from_secs(60), || {
        let harness = &harness;
        let ids = &ids;
        async move {
            let mut waiting = 0;
            for id in ids {
                let row = row(harness, id).await;
                assert_ne!(row.status, JobStatus::Failed as i32, "{row:?}");
                if row.status == JobStatus::Running as i32 {
                    return false;
                }
                if row.pending_reason.as_deref() == Some("waiting_for_backend") {
                    waiting += 1;
                }
            }
            waiting > 0
        }
    })
    .await;
    assert!(
        waiting,
        "while the backend is down no job is RUNNING and the held ones wait for a backend"
    );
    let left = Duration::from_secs(20).saturating_sub(outage.elapsed());
    tokio::time::sleep(left).await;
    for id in &ids {
        let row = row(&harness, id).await;
        assert_eq!(row.status, JobStatus::Pending as i32, "{row:?}");
    }
    let (_sim, _) = start_sim_on(stack.ports[0], sim_env).await;

    let mut told_waiting = 0;
    for id in &ids {
        let done = until_terminal(&harness, id).await;
        assert_eq!(done.status, JobStatus::Succeeded as i32, "{done:?}");
        assert_eq!(done.attempts, 1, "{done:?}");
        assert_eq!(done.outputs.len(), 1);
        assert_eq!(stored_artifacts(&stack, id).await, 1, "outputs stored once");
        let changes = status_changes(&harness, id).await;
        assert!(
            changes
                .iter()
                .all(|change| change.status != JobStatus::Running as i32 || change.attempt == 1),
            "every run started as attempt 1: {changes:?}"
        );
        let succeeded = changes
            .iter()
            .filter(|change| change.status == JobStatus::Succeeded as i32)
            .count();
        assert_eq!(succeeded, 1, "succeeded exactly once");
        if changes.iter().any(|change| {
            change.status == JobStatus::Pending as i32
                && change.pending_reason == "waiting_for_backend"
        }) {
            told_waiting += 1;
        }
    }
    assert!(
        told_waiting > 0,
        "watchers were told jobs wait for a backend"
    );
}

/// A terminal job's progress is final: a job cancelled mid-run keeps no stale percentage.
#[tokio::test]
async fn a_job_cancelled_mid_run_keeps_no_progress() {
    let stack = start_stack(&[&[("EASEL_SIM_STEP_DELAY_MS", "200")]]).await;
    let harness = jobs_with(&stack).await;
    let mut client = harness.client.clone();
    let job = client
        .submit_job(submit("usr_a", slow_t2i("cancel me", 100)))
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    let progressing = crate::support::eventually(Duration::from_secs(60), || {
        let harness = &harness;
        let id = job.id.clone();
        async move { row(harness, &id).await.progress.is_some() }
    })
    .await;
    assert!(progressing, "the job makes progress");
    let cancelled = client
        .cancel_job(internal::CancelJobRequest {
            caller: Some(caller("usr_a")),
            request: Some(v1::CancelJobRequest {
                job_id: job.id.clone(),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled as i32);
    assert_eq!(cancelled.progress, None, "{cancelled:?}");
    let done = until_terminal(&harness, &job.id).await;
    assert_eq!(done.progress, None, "{done:?}");
    assert_eq!(row(&harness, &job.id).await.progress, None);
}
