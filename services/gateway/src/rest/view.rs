//! The REST shape of jobs and their events: the seed plan's contract. A job is the body of
//! its answer (no wrapper), names are snake_case, statuses are the words `pending`,
//! `processing`, `completed`, `failed`, `cancelled` and `expired`, samplers and schedulers are
//! ComfyUI's names, seeds and sizes are JSON numbers, and the job carries the links to
//! follow it. gRPC and gRPC-web keep the proto messages; the values are the same.

use easel_proto::jobs::v1::{
    Job, JobError, JobEvent, JobMetadata, JobOutput, JobStatus, NodeError, Progress, StatusChange,
    TextToImage, job_event,
};
use easel_proto::names::ShortName;
use pbjson_types::{Duration, Timestamp};
use serde::Serialize;

/// A job's REST status word.
pub fn status_word(status: JobStatus) -> &'static str {
    match status {
        JobStatus::Pending | JobStatus::Unspecified => "pending",
        JobStatus::Running => "processing",
        JobStatus::Succeeded => "completed",
        JobStatus::Failed => "failed",
        JobStatus::Cancelled => "cancelled",
        JobStatus::Expired => "expired",
    }
}

/// Every status word, in lifecycle order.
pub const STATUS_WORDS: [&str; 6] = [
    "pending",
    "processing",
    "completed",
    "failed",
    "cancelled",
    "expired",
];

/// The status a REST word names, or a proto name in any spelling `ShortName` takes
/// (`running`, `JOB_STATUS_RUNNING`).
pub fn parse_status_word(word: &str) -> Option<JobStatus> {
    (1..)
        .map_while(|value| JobStatus::try_from(value).ok())
        .find(|status| status_word(*status).eq_ignore_ascii_case(word))
        .or_else(|| JobStatus::parse(word))
}

/// Where a job can be followed and acted on.
#[derive(Clone, Debug, Serialize)]
pub struct JobLinks {
    /// `GET` the job.
    pub status_url: String,
    /// Its WebSocket.
    pub websocket_url: String,
    /// `GET` its Server-Sent Events.
    pub events_url: String,
    /// `POST` to cancel it.
    pub cancel_url: String,
}

impl JobLinks {
    /// The links of `job_id` under `base` (empty: relative links).
    pub fn new(base: &str, job_id: &str) -> JobLinks {
        let status_url = format!("{base}/api/v1/jobs/{job_id}");
        let websocket_base = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            base.to_string()
        };
        JobLinks {
            events_url: format!("{status_url}/events"),
            cancel_url: format!("{status_url}:cancel"),
            websocket_url: format!("{websocket_base}/ws/jobs/{job_id}"),
            status_url,
        }
    }
}

/// A job over REST.
#[derive(Clone, Debug, Serialize)]
pub struct RestJob {
    /// The job's id, `job_…` (the seed's name).
    pub job_id: String,
    /// The same id.
    pub id: String,
    /// `pending`, `processing`, `completed`, `failed`, `cancelled` or `expired`.
    pub status: &'static str,
    /// The owning user's id.
    pub owner: String,
    #[serde(flatten)]
    links: JobLinks,
    /// The first result's signed URL, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    result_url: Option<String>,
    /// Every stored image.
    results: Vec<RestResult>,
    /// Seed and the resolved parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<RestMetadata>,
    /// Progress while processing; 100 once completed; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<RestProgress>,
    /// Position in the queue while pending (1 = next).
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_position: Option<u32>,
    /// Why a pending job is not running (`waiting_for_backend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_reason: Option<String>,
    /// Estimated seconds until the job finishes, while it is pending or processing.
    #[serde(skip_serializing_if = "Option::is_none")]
    eta_seconds: Option<f64>,
    /// Runs started so far.
    attempts: u32,
    /// Runs allowed.
    max_attempts: u32,
    /// The ComfyUI backend of the latest attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    /// Why the job failed or expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RestError>,
    /// When the job was accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
    /// When its latest attempt started.
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<Timestamp>,
    /// When it reached a terminal status.
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<Timestamp>,
    /// The latest start; a job not started by then expires.
    #[serde(skip_serializing_if = "Option::is_none")]
    start_deadline: Option<Timestamp>,
    /// The W3C trace id of the submit.
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    /// The last event's sequence number (resume a stream after it).
    seq: u64,
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

impl RestJob {
    /// The REST shape of `job`, its links under `base`.
    pub fn new(job: &Job, base: &str) -> RestJob {
        let status = job.status();
        let results: Vec<RestResult> = job.outputs.iter().map(RestResult::from).collect();
        RestJob {
            job_id: job.id.clone(),
            id: job.id.clone(),
            status: status_word(status),
            owner: job.owner.clone(),
            links: JobLinks::new(base, &job.id),
            result_url: results.first().map(|result| result.url.clone()),
            results,
            metadata: job.metadata.as_ref().map(RestMetadata::from),
            progress: final_progress(status, job.progress.as_ref()),
            queue_position: (job.queue_position > 0).then_some(job.queue_position),
            pending_reason: non_empty(&job.pending_reason),
            eta_seconds: job.eta.as_ref().map(seconds),
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            backend: non_empty(&job.backend),
            error: job.error.as_ref().map(RestError::from),
            created_at: job.create_time,
            started_at: job.start_time,
            completed_at: job.end_time,
            start_deadline: job.start_deadline,
            trace_id: non_empty(&job.trace_id),
            seq: job.seq,
        }
    }
}

/// A job's progress as REST shows it: as is while it runs, 100% once completed, absent in
/// every other status (a failed job is not "85% done").
fn final_progress(status: JobStatus, progress: Option<&Progress>) -> Option<RestProgress> {
    match status {
        JobStatus::Running => progress.map(RestProgress::from),
        JobStatus::Succeeded => {
            let mut done = progress.map(RestProgress::from).unwrap_or_default();
            done.percent = 100.0;
            if done.max_steps > 0 {
                done.step = done.max_steps;
            }
            Some(done)
        }
        _ => None,
    }
}

fn seconds(duration: &Duration) -> f64 {
    duration.seconds as f64 + f64::from(duration.nanos) / 1e9
}

/// One stored image.
#[derive(Clone, Debug, Serialize)]
pub struct RestResult {
    /// The storage artifact id, `art_…`.
    artifact_id: String,
    /// A signed, time-limited download link.
    url: String,
    /// When `url` stops working.
    #[serde(skip_serializing_if = "Option::is_none")]
    url_expires_at: Option<Timestamp>,
    /// MIME type.
    content_type: String,
    /// Size in bytes.
    size_bytes: u64,
    /// Lowercase hex SHA-256 of the bytes.
    sha256: String,
    /// Width in pixels.
    width: u32,
    /// Height in pixels.
    height: u32,
    /// The graph node that made it.
    node_id: String,
    /// The file name ComfyUI gave it.
    filename: String,
}

impl From<&JobOutput> for RestResult {
    fn from(output: &JobOutput) -> RestResult {
        RestResult {
            artifact_id: output.artifact_id.clone(),
            url: output.url.clone(),
            url_expires_at: output.url_expire_time,
            content_type: output.content_type.clone(),
            size_bytes: output.size_bytes,
            sha256: output.sha256.clone(),
            width: output.width,
            height: output.height,
            node_id: output.node_id.clone(),
            filename: output.filename.clone(),
        }
    }
}

/// What easel resolved to run the job.
#[derive(Clone, Debug, Serialize)]
pub struct RestMetadata {
    /// The seed used.
    seed: u64,
    /// The checkpoint used.
    checkpoint: String,
    /// The text-to-image parameters with every default filled in.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolved: Option<RestParameters>,
}

impl From<&JobMetadata> for RestMetadata {
    fn from(metadata: &JobMetadata) -> RestMetadata {
        RestMetadata {
            seed: metadata.seed,
            checkpoint: metadata.checkpoint.clone(),
            resolved: metadata.resolved.as_ref().map(RestParameters::from),
        }
    }
}

/// Text-to-image parameters, samplers and schedulers by ComfyUI's names.
#[derive(Clone, Debug, Serialize)]
pub struct RestParameters {
    prompt: String,
    negative_prompt: String,
    width: u32,
    height: u32,
    steps: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    cfg_scale: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sampler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scheduler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    checkpoint: String,
    batch_size: u32,
}

/// ComfyUI's name of an enum value: its proto name without `prefix`, lowercased; none for
/// the unspecified value.
fn comfy_name(name: &str, prefix: &str) -> Option<String> {
    name.strip_prefix(prefix)
        .filter(|rest| *rest != "UNSPECIFIED")
        .map(str::to_ascii_lowercase)
}

impl From<&TextToImage> for RestParameters {
    fn from(text: &TextToImage) -> RestParameters {
        RestParameters {
            prompt: text.prompt.clone(),
            negative_prompt: text.negative_prompt.clone(),
            width: text.width,
            height: text.height,
            steps: text.steps,
            cfg_scale: text.cfg_scale,
            sampler: comfy_name(text.sampler().as_str_name(), "SAMPLER_"),
            scheduler: comfy_name(text.scheduler().as_str_name(), "SCHEDULER_"),
            seed: text.seed,
            checkpoint: text.checkpoint.clone(),
            batch_size: text.batch_size,
        }
    }
}

/// How far a running job is.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RestProgress {
    node_id: String,
    node_class: String,
    step: u32,
    max_steps: u32,
    percent: f32,
}

impl From<&Progress> for RestProgress {
    fn from(progress: &Progress) -> RestProgress {
        RestProgress {
            node_id: progress.node_id.clone(),
            node_class: progress.node_class.clone(),
            step: progress.step,
            max_steps: progress.max_steps,
            percent: progress.percent,
        }
    }
}

/// Why a job failed.
#[derive(Clone, Debug, Serialize)]
pub struct RestError {
    code: String,
    message: String,
    retryable: bool,
    node_errors: Vec<RestNodeError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exception_type: Option<String>,
}

impl From<&JobError> for RestError {
    fn from(error: &JobError) -> RestError {
        RestError {
            code: error.code.clone(),
            message: error.message.clone(),
            retryable: error.retryable,
            node_errors: error.node_errors.iter().map(RestNodeError::from).collect(),
            exception_type: non_empty(&error.exception_type),
        }
    }
}

/// One problem ComfyUI found with one node.
#[derive(Clone, Debug, Serialize)]
pub struct RestNodeError {
    node_id: String,
    class_type: String,
    #[serde(rename = "type")]
    kind: String,
    message: String,
    details: String,
    input_name: String,
}

impl From<&NodeError> for RestNodeError {
    fn from(error: &NodeError) -> RestNodeError {
        RestNodeError {
            node_id: error.node_id.clone(),
            class_type: error.class_type.clone(),
            kind: error.r#type.clone(),
            message: error.message.clone(),
            details: error.details.clone(),
            input_name: error.input_name.clone(),
        }
    }
}

/// A job event over WebSocket and SSE: `type` says which one of the optional members is set.
#[derive(Clone, Debug, Serialize)]
pub struct RestEvent {
    /// The job's id.
    job_id: String,
    /// The event's sequence number.
    seq: u64,
    /// When it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<Timestamp>,
    /// `snapshot`, `status`, `progress`, `queue_position` or `output`.
    #[serde(rename = "type")]
    kind: &'static str,
    /// The whole job (`snapshot`).
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<RestJob>,
    /// The new status (`status`; also on a snapshot, the job's).
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    /// Why the job failed, expired or is retried (`status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<RestError>,
    /// The attempt number (`status` processing).
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    /// The backend (`status` processing).
    #[serde(skip_serializing_if = "Option::is_none")]
    backend: Option<String>,
    /// Why a pending job is not running (`status` pending).
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_reason: Option<String>,
    /// How far the job is (`progress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<RestProgress>,
    /// The place in the queue (`queue_position`).
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_position: Option<u32>,
    /// Estimated seconds until the job finishes (`queue_position`).
    #[serde(skip_serializing_if = "Option::is_none")]
    eta_seconds: Option<f64>,
    /// The stored image (`output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<RestResult>,
}

impl RestEvent {
    /// The REST shape of `event`, links of a snapshot under `base`.
    pub fn new(event: &JobEvent, base: &str) -> RestEvent {
        let mut rest = RestEvent {
            job_id: event.job_id.clone(),
            seq: event.seq,
            time: event.time,
            kind: event_kind(event),
            job: None,
            status: None,
            error: None,
            attempt: None,
            backend: None,
            pending_reason: None,
            progress: None,
            queue_position: None,
            eta_seconds: None,
            result: None,
        };
        match &event.kind {
            Some(job_event::Kind::Snapshot(job)) => {
                let job = RestJob::new(job, base);
                rest.status = Some(job.status);
                rest.job = Some(job);
            }
            Some(job_event::Kind::StatusChange(change)) => rest.set_status(change),
            Some(job_event::Kind::Progress(progress)) => {
                rest.progress = Some(RestProgress::from(progress));
            }
            Some(job_event::Kind::QueuePosition(position)) => {
                rest.queue_position = Some(position.position);
                rest.eta_seconds = position.eta.as_ref().map(seconds);
            }
            Some(job_event::Kind::Output(output)) => rest.result = Some(RestResult::from(output)),
            None => {}
        }
        rest
    }

    fn set_status(&mut self, change: &StatusChange) {
        self.status = Some(status_word(change.status()));
        self.error = change.error.as_ref().map(RestError::from);
        self.attempt = (change.attempt > 0).then_some(change.attempt);
        self.backend = non_empty(&change.backend);
        self.pending_reason = non_empty(&change.pending_reason);
    }

    /// The event's type, also the SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        self.kind
    }
}

/// The type word of an event.
pub fn event_kind(event: &JobEvent) -> &'static str {
    match &event.kind {
        Some(job_event::Kind::Snapshot(_)) => "snapshot",
        Some(job_event::Kind::StatusChange(_)) => "status",
        Some(job_event::Kind::Progress(_)) => "progress",
        Some(job_event::Kind::QueuePosition(_)) => "queue_position",
        Some(job_event::Kind::Output(_)) => "output",
        None => "message",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn finished_job() -> Job {
        Job {
            id: "job_1".into(),
            status: JobStatus::Succeeded as i32,
            progress: Some(Progress {
                percent: 85.0,
                step: 17,
                max_steps: 20,
                ..Default::default()
            }),
            outputs: vec![JobOutput {
                artifact_id: "art_1".into(),
                url: "https://x/v1/artifacts/art_1?sig=s".into(),
                size_bytes: 5_000_000_000,
                ..Default::default()
            }],
            metadata: Some(JobMetadata {
                seed: 9_007_199_254_740_993,
                resolved: Some(TextToImage {
                    sampler: easel_proto::jobs::v1::Sampler::Dpmpp2m as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_job_speaks_the_seed_contract() {
        let job = serde_json::to_value(RestJob::new(&finished_job(), "http://h:1")).unwrap();
        assert_eq!(job["job_id"], "job_1");
        assert_eq!(job["id"], "job_1");
        assert_eq!(job["status"], "completed");
        assert_eq!(job["status_url"], "http://h:1/api/v1/jobs/job_1");
        assert_eq!(job["websocket_url"], "ws://h:1/ws/jobs/job_1");
        assert_eq!(job["events_url"], "http://h:1/api/v1/jobs/job_1/events");
        assert_eq!(job["cancel_url"], "http://h:1/api/v1/jobs/job_1:cancel");
        assert_eq!(job["result_url"], "https://x/v1/artifacts/art_1?sig=s");
        assert_eq!(job["results"][0]["size_bytes"], json!(5_000_000_000u64));
        assert_eq!(job["metadata"]["seed"], json!(9_007_199_254_740_993u64));
        assert_eq!(job["metadata"]["resolved"]["sampler"], "dpmpp_2m");
        assert!(job["metadata"]["resolved"].get("scheduler").is_none());
        assert_eq!(job["progress"]["percent"], json!(100.0));
        assert_eq!(job["progress"]["step"], 20);
    }

    #[test]
    fn a_failed_job_has_no_progress() {
        let mut job = finished_job();
        job.status = JobStatus::Failed as i32;
        job.outputs.clear();
        let job = serde_json::to_value(RestJob::new(&job, "")).unwrap();
        assert!(job.get("progress").is_none());
        assert!(job.get("result_url").is_none());
        assert_eq!(job["status_url"], "/api/v1/jobs/job_1");
    }

    #[test]
    fn every_status_has_a_word_that_parses_back() {
        for value in 1..=6 {
            let status = JobStatus::try_from(value).unwrap();
            let word = status_word(status);
            assert!(STATUS_WORDS.contains(&word));
            assert_eq!(parse_status_word(word), Some(status));
        }
        assert_eq!(
            parse_status_word("JOB_STATUS_RUNNING"),
            Some(JobStatus::Running)
        );
        assert_eq!(parse_status_word("unspecified"), None);
    }

    #[test]
    fn events_carry_their_type_and_status_word() {
        let event = JobEvent {
            job_id: "job_1".into(),
            seq: 3,
            kind: Some(job_event::Kind::StatusChange(StatusChange {
                status: JobStatus::Running as i32,
                attempt: 1,
                backend: "b".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        let event = serde_json::to_value(RestEvent::new(&event, "")).unwrap();
        assert_eq!(event["type"], "status");
        assert_eq!(event["status"], "processing");
        assert_eq!(event["seq"], 3);
        assert_eq!(event["attempt"], 1);
    }
}
