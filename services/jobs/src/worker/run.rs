//! One attempt of a job on the bridge: wait (PENDING) until a backend accepts the run, then
//! stream its events, store its outputs, and say how it ended.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use std::ops::ControlFlow;

use easel_proto::bridge::v1::{
    Failed as RunFailed, NodeProgress, OutputImage, Queued, RunWorkflowRequest,
    RunWorkflowResponse, WaitReason, run_workflow_request, run_workflow_response,
};
use easel_proto::jobs::v1::{JobError, JobOutput, Progress};
use easel_proto::storage::v1::{ArtifactHeader, PutArtifactRequest, put_artifact_request};
use easel_runtime::ErrorCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Attempt;
use crate::db::Guard;
use crate::lifecycle::{self, Transition};
use crate::model::{WAITING_FOR_BACKEND, millis, proto_duration};
use crate::service::Jobs;

/// Bytes per upload message.
const CHUNK: usize = 256 * 1024;

/// How a run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Every output is stored.
    Succeeded {
        /// The stored outputs, in order.
        outputs: Vec<JobOutput>,
    },
    /// The run failed.
    Failed {
        /// Why.
        error: JobError,
        /// The backend it failed on, if known.
        backend: String,
    },
    /// The job left our hands (cancelled, or its lease was lost).
    Lost,
    /// The job's start deadline passed while it waited for a backend.
    Expired,
}

/// What one call of the bridge came to.
enum Step {
    /// The attempt is over.
    Done(Outcome),
    /// No backend took the run: ask again after this pause.
    Wait(Duration),
}

/// How long to wait before asking the bridge again when it answered at once that no backend
/// can take the run (the bridge itself may be down), so waiting never spins.
const WAIT_PAUSE: Duration = Duration::from_secs(1);

fn failure(code: ErrorCode, message: impl Into<String>, retryable: bool) -> JobError {
    JobError {
        code: code.as_str().to_string(),
        message: message.into(),
        retryable,
        ..JobError::default()
    }
}

/// Whether a gRPC failure of the bridge or storage is worth another attempt.
fn retryable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable
            | tonic::Code::ResourceExhausted
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Aborted
            | tonic::Code::Internal
            | tonic::Code::Unknown
            | tonic::Code::Cancelled
    )
}

/// Whether the bridge's answer before `queued` means "no backend could take the run yet"
/// (none available, all busy for the bridge's whole queue timeout, or the bridge unreachable):
/// the job waits, spending nothing.
fn is_waiting(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::ResourceExhausted | tonic::Code::DeadlineExceeded
    )
}

fn from_status(status: &tonic::Status) -> JobError {
    let error = easel_runtime::Error::from_status(status);
    failure(
        error.code(),
        error.message().to_string(),
        retryable(status.code()),
    )
}

/// Runs the attempt on the bridge: asks until a backend accepts the run (the job waits,
/// PENDING, meanwhile), follows it, and goes back to waiting when the run is lost with its
/// backend while the job may still lose runs for free.
pub async fn run(attempt: &mut Attempt) -> Outcome {
    let keep_workflow_metadata = attempt.job.spec.keep_workflow_metadata;
    let workflow = match attempt.job.spec.kind.clone() {
        Some(easel_proto::jobs::v1::job_spec::Kind::TextToImage(t2i)) => {
            run_workflow_request::Workflow::TextToImage(t2i)
        }
        Some(easel_proto::jobs::v1::job_spec::Kind::Workflow(raw)) => {
            run_workflow_request::Workflow::Raw(raw)
        }
        None => {
            return Outcome::Failed {
                error: failure(ErrorCode::InvalidArgument, "the job has no spec", false),
                backend: String::new(),
            };
        }
    };
    loop {
        match run_once(attempt, workflow.clone(), keep_workflow_metadata).await {
            Step::Done(outcome) => return outcome,
            Step::Wait(pause) => {
                let pause = tokio::time::sleep(pause);
                tokio::select! {
                    () = pause => {}
                    () = start_deadline(attempt) => return Outcome::Expired,
                }
            }
        }
    }
}

/// Resolves when the job's start deadline passes (never without one).
async fn start_deadline(attempt: &Attempt) {
    match attempt.job.start_deadline_ms {
        Some(deadline) => {
            let left = deadline - millis(attempt.jobs.clock.now());
            let left = Duration::from_millis(u64::try_from(left).unwrap_or_default());
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// Records why the waiting job is not running (with an event when that changes); false once
/// the job is not the attempt's any more.
async fn mark_waiting(attempt: &mut Attempt, reason: Option<&str>) -> bool {
    if attempt.running || attempt.job.pending_reason.as_deref() == reason {
        return true;
    }
    let wait = Transition::wait_for_backend(attempt.guard(), &attempt.job, reason);
    // A failed write loses only the reason; the lease decides whether the job is still ours.
    let ours = attempt.change(Ok(wait)).await;
    if ours && reason.is_some() {
        tracing::info!(reason, "job waiting for a backend");
    }
    ours
}

/// A backend accepted the run: the job is RUNNING and the attempt spent. False once the job is
/// not the attempt's any more.
async fn start(attempt: &mut Attempt, queued: &Queued) -> bool {
    let start = Transition::start(attempt.guard(), &attempt.job, attempt.number, queued);
    match attempt.transition(start).await {
        Ok(true) => {
            attempt.running = true;
            tracing::info!(attempt = attempt.number, backend = %queued.backend, "job started");
            true
        }
        Ok(false) => false,
        Err(error) => {
            tracing::warn!(job_id = %attempt.job.id, error = %error, "starting a job failed");
            false
        }
    }
}

/// The run was lost with its backend: back to PENDING without spending the attempt (the loss
/// is counted, and the backend avoided next time). False once the job is not the attempt's.
async fn lose_run(attempt: &mut Attempt, error: JobError, backend: &str) -> bool {
    let lose = Transition::lose_run(
        attempt.guard(),
        &attempt.job,
        attempt.number,
        error,
        backend,
    );
    match attempt.transition(lose).await {
        Ok(true) => {
            attempt.running = false;
            attempt.discard_outputs().await;
            metrics::counter!(crate::metrics::RETRIES).increment(1);
            tracing::info!(
                backend,
                lost_runs = attempt.job.lost_runs,
                "run lost with its backend; waiting again without spending the attempt"
            );
            true
        }
        Ok(false) => false,
        Err(error) => {
            tracing::warn!(job_id = %attempt.job.id, error = %error, "returning a lost run failed");
            false
        }
    }
}

/// The bridge refused the run before a backend accepted it.
async fn refused(attempt: &mut Attempt, status: &tonic::Status) -> Step {
    if !is_waiting(status.code()) {
        return Step::Done(Outcome::Failed {
            error: from_status(status),
            backend: String::new(),
        });
    }
    // Busy backends (RESOURCE_EXHAUSTED) leave the job waiting its turn without a reason; the
    // bridge already waited its queue timeout, so the pause only keeps a failing bridge (one
    // that answers at once) from being asked in a loop.
    if status.code() != tonic::Code::ResourceExhausted
        && !mark_waiting(attempt, Some(WAITING_FOR_BACKEND)).await
    {
        return Step::Done(Outcome::Lost);
    }
    Step::Wait(WAIT_PAUSE)
}

/// One call of the bridge.
async fn run_once(
    attempt: &mut Attempt,
    workflow: run_workflow_request::Workflow,
    keep_workflow_metadata: bool,
) -> Step {
    let mut request = tonic::Request::new(RunWorkflowRequest {
        run_id: attempt.run_id(),
        workflow: Some(workflow),
        timeout: Some(proto_duration(attempt.settings.run_timeout)),
        exclude_backends: attempt.job.excluded_backends.clone(),
        keep_workflow_metadata,
    });
    request.set_timeout(attempt.settings.run_timeout + Duration::from_secs(30));
    let mut bridge = attempt.jobs.clients.bridge.clone();
    let called = tokio::select! {
        called = bridge.run_workflow(request) => called,
        () = start_deadline(attempt) => return Step::Done(Outcome::Expired),
    };
    match called {
        Ok(response) => follow(attempt, response.into_inner()).await,
        Err(status) => refused(attempt, &status).await,
    }
}

/// Follows the run's events until it ends, or the job stops being the attempt's.
async fn follow(attempt: &mut Attempt, mut stream: tonic::Streaming<RunWorkflowResponse>) -> Step {
    let mut run = Run::default();
    loop {
        let message = tokio::select! {
            biased;
            () = run.lost.cancelled() => return Step::Done(Outcome::Lost),
            () = start_deadline(attempt), if !attempt.running => return Step::Done(Outcome::Expired),
            message = stream.message() => message,
        };
        let event = match message {
            Ok(Some(message)) => message.event,
            Ok(None) => {
                stop_orphaned_run(attempt, &attempt.run_id()).await;
                let error = failure(
                    ErrorCode::Unavailable,
                    "the bridge ended the run without a result",
                    true,
                );
                return run.failed(error);
            }
            Err(status) if !attempt.running => return refused(attempt, &status).await,
            Err(status) => {
                // The bridge went away mid-run; the prompt may still run on ComfyUI. Stop it
                // before the retry, or the GPU runs the job twice.
                stop_orphaned_run(attempt, &attempt.run_id()).await;
                return run.failed(from_status(&status));
            }
        };
        if let Some(event) = event
            && let ControlFlow::Break(step) = run.on(attempt, event).await
        {
            return step;
        }
    }
}

/// What a run on the bridge reported so far.
#[derive(Default)]
struct Run {
    /// The backend it runs on, once known.
    backend: String,
    /// The outputs stored so far.
    outputs: Vec<JobOutput>,
    /// The last progress step seen (node, step), so repeats are skipped.
    last_progress: Option<(String, u32)>,
    /// Progress is written (and published) beside the stream, latest first: reading the run
    /// never waits on the database, and a slow database skips steps rather than delaying the
    /// outputs. The writer starts with the run and ends with it, after the write it may be
    /// doing.
    progress: Option<watch::Sender<Option<Progress>>>,
    /// Fired by the progress writer when the job is no longer the attempt's.
    lost: CancellationToken,
}

impl Run {
    fn failed(self, error: JobError) -> Step {
        Step::Done(Outcome::Failed {
            error,
            backend: self.backend,
        })
    }

    /// One event of the run; `Break` when it ends the call.
    async fn on(
        &mut self,
        attempt: &mut Attempt,
        event: run_workflow_response::Event,
    ) -> ControlFlow<Step> {
        match event {
            run_workflow_response::Event::Waiting(waiting) => {
                let reason =
                    (waiting.reason() == WaitReason::NoBackend).then_some(WAITING_FOR_BACKEND);
                if !mark_waiting(attempt, reason).await {
                    return ControlFlow::Break(Step::Done(Outcome::Lost));
                }
            }
            run_workflow_response::Event::Queued(queued) => {
                self.backend = queued.backend.clone();
                if !start(attempt, &queued).await {
                    return ControlFlow::Break(Step::Done(Outcome::Lost));
                }
                let (sender, receiver) = watch::channel(None);
                tokio::spawn(write_progress(
                    attempt.jobs.clone(),
                    attempt.job.id.to_string(),
                    attempt.guard(),
                    receiver,
                    self.lost.clone(),
                ));
                self.progress = Some(sender);
            }
            run_workflow_response::Event::Started(started) => {
                if !started.backend.is_empty() {
                    self.backend = started.backend;
                }
            }
            run_workflow_response::Event::Progress(progress) => self.progress(progress),
            run_workflow_response::Event::Output(image) => match put_output(attempt, image).await {
                Ok(output) => self.outputs.push(output),
                Err(status) => {
                    let error = from_status(&status);
                    return ControlFlow::Break(std::mem::take(self).failed(error));
                }
            },
            run_workflow_response::Event::Completed(_) => {
                let outputs = std::mem::take(&mut self.outputs);
                return ControlFlow::Break(Step::Done(Outcome::Succeeded { outputs }));
            }
            run_workflow_response::Event::Failed(failed) => {
                return ControlFlow::Break(self.on_failed(attempt, failed).await);
            }
        }
        ControlFlow::Continue(())
    }

    /// Hands the run's latest progress to the writer (a repeated step is skipped).
    fn progress(&mut self, progress: NodeProgress) {
        let step = (progress.node_id.clone(), progress.step);
        if self.last_progress.as_ref() == Some(&step) {
            return;
        }
        self.last_progress = Some(step);
        let node_share = if progress.max_steps > 0 {
            f64::from(progress.step) / f64::from(progress.max_steps)
        } else {
            0.0
        };
        let percent = if progress.node_count > 0 {
            ((f64::from(progress.nodes_done) + node_share) / f64::from(progress.node_count) * 100.0)
                .min(100.0)
        } else {
            0.0
        };
        if let Some(sender) = &self.progress {
            sender.send_replace(Some(Progress {
                node_id: progress.node_id,
                node_class: progress.node_class,
                step: progress.step,
                max_steps: progress.max_steps,
                percent: percent as f32,
            }));
        }
    }

    /// The run failed. A run lost with its backend is not the run's failure: the job waits for
    /// a backend again without spending the attempt, while it may still lose runs.
    async fn on_failed(&mut self, attempt: &mut Attempt, failed: RunFailed) -> Step {
        let code = ErrorCode::from_name(&failed.code).unwrap_or(ErrorCode::Internal);
        if !failed.backend.is_empty() {
            self.backend = failed.backend;
        }
        let error = JobError {
            code: code.as_str().to_string(),
            message: failed.message,
            retryable: failed.retryable,
            node_errors: failed.node_errors,
            exception_type: failed.exception_type,
        };
        if failed.backend_lost
            && attempt.running
            && attempt.job.lost_runs < attempt.job.max_attempts
        {
            drop(self.progress.take());
            if !lose_run(attempt, error, &self.backend).await {
                return Step::Done(Outcome::Lost);
            }
            return Step::Wait(Duration::ZERO);
        }
        std::mem::take(self).failed(error)
    }
}

/// Writes the latest progress of a run until the run ends (its sender is dropped); fires `lost`
/// when the job is no longer the attempt's.
async fn write_progress(
    jobs: Arc<Jobs>,
    job_id: String,
    guard: Guard,
    mut latest: watch::Receiver<Option<Progress>>,
    lost: CancellationToken,
) {
    while latest.changed().await.is_ok() {
        let Some(progress) = latest.borrow_and_update().clone() else {
            continue;
        };
        let written = match Transition::progress(guard.clone(), progress) {
            Ok(transition) => lifecycle::apply(&jobs, &job_id, transition).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(Some(_)) => {}
            Ok(None) => {
                lost.cancel();
                return;
            }
            // The lease decides whether the job is still ours; keep running.
            Err(error) => tracing::warn!(job_id, error = %error, "writing progress failed"),
        }
    }
}

/// How long stopping an orphaned run waits for the bridge to come back.
const ORPHAN_PATIENCE: Duration = Duration::from_secs(30);

/// Stops `run_id` wherever it still runs or waits on a backend, once the bridge that drove it
/// is gone (it died, or the worker did): the bridge's `Interrupt` finds a run it does not know
/// on the backends' queues. Waits for the bridge up to [`ORPHAN_PATIENCE`]; best effort past
/// that, since the next run's outputs replace the orphan's anyway.
pub async fn stop_orphaned_run(attempt: &Attempt, run_id: &str) {
    let interrupt = || {
        let mut bridge = attempt.jobs.clients.bridge.clone();
        let request = easel_proto::bridge::v1::InterruptRequest {
            run_id: run_id.to_string(),
        };
        async move { bridge.interrupt(request).await }
    };
    let stopped = interrupt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(2))
                .without_max_times()
                .with_total_delay(Some(ORPHAN_PATIENCE)),
        )
        .when(|status| unreachable(status.code()) || status.code() == tonic::Code::Unknown)
        .await;
    match stopped {
        Ok(answer) => {
            tracing::info!(
                run_id,
                interrupted = answer.into_inner().interrupted,
                "orphaned run stopped"
            );
        }
        Err(status) => {
            tracing::warn!(run_id, code = ?status.code(), "could not stop an orphaned run");
        }
    }
}

/// How long an output waits for storage to come back before the attempt fails.
const STORAGE_OUTAGE_PATIENCE: Duration = Duration::from_secs(60);

/// Whether a service's answer means it could not be reached or was overloaded (worth waiting
/// for), not that it refused the request.
fn unreachable(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

/// The messages that store one image: its header (owner, job, what made it, how long it is
/// kept), then its bytes in chunks.
fn upload(attempt: &Attempt, image: &OutputImage) -> Vec<PutArtifactRequest> {
    let fields = [
        ("job_id", attempt.job.id.to_string()),
        ("attempt", attempt.number.to_string()),
        ("index", image.index.to_string()),
        ("node_id", image.node_id.clone()),
        ("filename", image.filename.clone()),
        ("seed", attempt.job.metadata.seed.to_string()),
    ];
    let days = u64::try_from(attempt.job.retention_days).unwrap_or_default();
    let header = ArtifactHeader {
        owner: attempt.job.owner.clone(),
        job_id: attempt.job.id.to_string(),
        content_type: image.content_type.clone(),
        metadata: fields
            .into_iter()
            .map(|(name, value)| (name.to_string(), value))
            .collect(),
        ttl: (days > 0).then(|| proto_duration(Duration::from_secs(days * 24 * 3600))),
    };
    let mut messages = vec![PutArtifactRequest {
        part: Some(put_artifact_request::Part::Header(header)),
    }];
    for chunk in image.data.chunks(CHUNK) {
        messages.push(PutArtifactRequest {
            part: Some(put_artifact_request::Part::Chunk(chunk.to_vec())),
        });
    }
    messages
}

/// Streams one image to storage (waiting out a storage outage) and describes it as an output.
async fn put_output(attempt: &mut Attempt, image: OutputImage) -> Result<JobOutput, tonic::Status> {
    let messages = upload(attempt, &image);
    // The image exists only here (streamed from the backend, never written there): a storage
    // outage is waited out rather than failing the run, which would run it again on a GPU.
    let put = || {
        let mut storage = attempt.jobs.clients.storage.clone();
        let messages = messages.clone();
        async move { storage.put_artifact(tokio_stream::iter(messages)).await }
    };
    let job_id = attempt.job.id.to_string();
    let artifact = put
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_jitter()
                .without_max_times()
                .with_total_delay(Some(STORAGE_OUTAGE_PATIENCE)),
        )
        .when(|status| unreachable(status.code()))
        .notify(|status, pause| {
            tracing::warn!(job_id, code = ?status.code(), ?pause, "storing an output failed; retrying");
        })
        .await?
        .into_inner()
        .artifact
        .ok_or_else(|| tonic::Status::internal("storage answered without an artifact"))?;
    attempt.stored.push(artifact.id.clone());
    Ok(JobOutput {
        artifact_id: artifact.id,
        url: String::new(),
        url_expire_time: None,
        content_type: artifact.content_type,
        size_bytes: artifact.size_bytes,
        sha256: artifact.sha256,
        width: if artifact.width > 0 {
            artifact.width
        } else {
            image.width
        },
        height: if artifact.height > 0 {
            artifact.height
        } else {
            image.height
        },
        node_id: image.node_id,
        filename: image.filename,
    })
}

/// Removes artifacts of the job that no winning attempt owns: every artifact of the job when
/// `only` is `None` (a new attempt after a crash), else just those ids.
pub async fn delete_artifacts(attempt: &Attempt, only: Option<&[String]>) {
    let mut storage = attempt.jobs.clients.storage.clone();
    let owner = attempt.job.owner.clone();
    let ids: Vec<String> = match only {
        Some(ids) => ids.to_vec(),
        None => {
            let mut ids = Vec::new();
            let mut page_token = String::new();
            loop {
                let listed = storage
                    .list_artifacts(easel_proto::storage::v1::ListArtifactsRequest {
                        owner: owner.clone(),
                        job_id: attempt.job.id.to_string(),
                        page_size: 1000,
                        page_token: page_token.clone(),
                    })
                    .await;
                match listed {
                    Ok(response) => {
                        let response = response.into_inner();
                        ids.extend(response.artifacts.into_iter().map(|a| a.id));
                        if response.next_page_token.is_empty() {
                            break;
                        }
                        page_token = response.next_page_token;
                    }
                    Err(status) => {
                        tracing::warn!(job_id = %attempt.job.id, code = ?status.code(), "listing earlier outputs failed");
                        break;
                    }
                }
            }
            ids
        }
    };
    for id in ids {
        let deleted = storage
            .delete_artifact(easel_proto::storage::v1::DeleteArtifactRequest {
                owner: owner.clone(),
                artifact_id: id.clone(),
            })
            .await;
        if let Err(status) = deleted
            && status.code() != tonic::Code::NotFound
        {
            tracing::warn!(job_id = %attempt.job.id, artifact_id = %id, code = ?status.code(), "deleting a stale output failed");
        }
    }
}
