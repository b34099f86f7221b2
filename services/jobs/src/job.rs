//! The stored job as a type: the `jobs` row's JSON columns decoded into their proto messages,
//! its status an enum, its id a [`JobId`]. A row becomes a [`Job`] and a [`Job`] a row here and
//! nowhere else; a column that does not decode is an error naming the job and the column,
//! never a default.

use std::collections::HashMap;

use easel_proto::jobs::v1::{JobError, JobMetadata, JobOutput, JobSpec, JobStatus, Progress};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::db::JobRow;
use crate::error::{JobsError, Result};
use crate::model::{JobId, is_terminal, status_to_db};
use crate::queue::QueueMessage;
use easel_runtime::error::Internal;

/// One job as the service reasons about it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// `job_…`.
    pub id: JobId,
    /// The owning user's id.
    pub owner: String,
    /// Where the job is in its life.
    pub status: JobStatus,
    /// Queue priority class (higher runs first).
    pub priority: u8,
    /// What to run, resolved at submit (defaults and seed filled in).
    pub spec: JobSpec,
    /// What the run reported about itself (seed, checkpoint).
    pub metadata: JobMetadata,
    /// Runs started so far.
    pub attempts: i32,
    /// Runs allowed.
    pub max_attempts: i32,
    /// Backend of the latest attempt.
    pub backend: String,
    /// While running: how far.
    pub progress: Option<Progress>,
    /// When failed (or the last retried failure).
    pub error: Option<JobError>,
    /// The stored outputs, without signed links.
    pub outputs: Vec<JobOutput>,
    /// Backends earlier attempts failed on or were lost with.
    pub excluded_backends: Vec<String>,
    /// The idempotency key of the submit, if any.
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request.
    pub request_hash: String,
    /// W3C trace context of the submit, so every run continues its trace.
    pub trace: HashMap<String, String>,
    /// Trace id of the submit.
    pub trace_id: String,
    /// Days the outputs are kept.
    pub retention_days: i32,
    /// When accepted (Unix ms).
    pub created_at_ms: i64,
    /// Last change.
    pub updated_at_ms: i64,
    /// When the latest attempt started.
    pub started_at_ms: Option<i64>,
    /// When terminal.
    pub finished_at_ms: Option<i64>,
    /// Latest start; after it a PENDING job expires.
    pub start_deadline_ms: Option<i64>,
    /// The worker holding the job (RUNNING, or PENDING while it waits for a backend).
    pub lease_owner: Option<String>,
    /// When that lease lapses unless renewed.
    pub lease_expires_ms: Option<i64>,
    /// The last event's sequence number.
    pub seq: i64,
    /// The queue position last recorded as an event, while PENDING.
    pub queue_position: Option<i32>,
    /// Why a PENDING job is not running (`waiting_for_backend`), if not its turn.
    pub pending_reason: Option<String>,
    /// Runs lost with their backend that spent no attempt.
    pub lost_runs: i32,
}

/// A column that holds something else than its type.
fn corrupt(
    job_id: &str,
    column: &'static str,
    source: impl std::error::Error + Send + Sync + 'static,
) -> JobsError {
    JobsError::CorruptRecord {
        job_id: job_id.to_string(),
        column,
        source: Box::new(source),
    }
}

fn decode<T: DeserializeOwned>(job_id: &str, column: &'static str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|error| corrupt(job_id, column, error))
}

fn decode_optional<T: DeserializeOwned>(
    job_id: &str,
    column: &'static str,
    text: Option<&str>,
) -> Result<Option<T>> {
    text.map(|text| decode(job_id, column, text)).transpose()
}

/// A value as its column's JSON text.
pub fn encode<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|error| JobsError::from(Internal::caused("encoding a job column", error)))
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Invalid(String);

impl TryFrom<JobRow> for Job {
    type Error = JobsError;

    fn try_from(row: JobRow) -> Result<Job> {
        let id = row.id.as_str();
        let job_id = JobId::parse(id)
            .ok_or_else(|| corrupt(id, "id", Invalid(format!("{id:?} is not a job id"))))?;
        let status = JobStatus::try_from(row.status).map_err(|_| {
            corrupt(
                id,
                "status",
                Invalid(format!("{} is no status", row.status)),
            )
        })?;
        let priority =
            u8::try_from(row.priority).map_err(|error| corrupt(id, "priority", error))?;
        Ok(Job {
            status,
            priority,
            spec: decode(id, "spec", &row.spec)?,
            metadata: decode(id, "metadata", &row.metadata)?,
            progress: decode_optional(id, "progress", row.progress.as_deref())?,
            error: decode_optional(id, "error", row.error.as_deref())?,
            outputs: decode(id, "outputs", &row.outputs)?,
            excluded_backends: decode(id, "excluded_backends", &row.excluded_backends)?,
            trace: decode(id, "trace_context", &row.trace_context)?,
            id: job_id,
            owner: row.owner,
            attempts: row.attempts,
            max_attempts: row.max_attempts,
            backend: row.backend,
            idempotency_key: row.idempotency_key,
            request_hash: row.request_hash,
            trace_id: row.trace_id,
            retention_days: row.retention_days,
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
            started_at_ms: row.started_at_ms,
            finished_at_ms: row.finished_at_ms,
            start_deadline_ms: row.start_deadline_ms,
            lease_owner: row.lease_owner,
            lease_expires_ms: row.lease_expires_ms,
            seq: row.seq,
            queue_position: row.queue_position,
            pending_reason: row.pending_reason,
            lost_runs: row.lost_runs,
        })
    }
}

impl Job {
    /// The job as its row.
    pub fn to_row(&self) -> Result<JobRow> {
        Ok(JobRow {
            id: self.id.to_string(),
            owner: self.owner.clone(),
            status: status_to_db(self.status),
            priority: i32::from(self.priority),
            spec: encode(&self.spec)?,
            metadata: encode(&self.metadata)?,
            attempts: self.attempts,
            max_attempts: self.max_attempts,
            backend: self.backend.clone(),
            progress: self.progress.as_ref().map(encode).transpose()?,
            error: self.error.as_ref().map(encode).transpose()?,
            outputs: encode(&self.outputs)?,
            excluded_backends: encode(&self.excluded_backends)?,
            idempotency_key: self.idempotency_key.clone(),
            request_hash: self.request_hash.clone(),
            trace_context: encode(&self.trace)?,
            trace_id: self.trace_id.clone(),
            retention_days: self.retention_days,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            start_deadline_ms: self.start_deadline_ms,
            lease_owner: self.lease_owner.clone(),
            lease_expires_ms: self.lease_expires_ms,
            seq: self.seq,
            queue_position: self.queue_position,
            pending_reason: self.pending_reason.clone(),
            lost_runs: self.lost_runs,
        })
    }

    /// Whether the job is over.
    pub fn is_terminal(&self) -> bool {
        is_terminal(self.status)
    }

    /// The id of the run at `attempt` on the bridge (see [`crate::model::run_id`]).
    pub fn run_id(&self, attempt: i32) -> String {
        crate::model::run_id(self.id.as_str(), attempt, self.lost_runs)
    }

    /// Whether a worker's lease on the job is live at `now_ms`.
    pub fn is_leased_at(&self, now_ms: i64) -> bool {
        self.lease_expires_ms.is_some_and(|until| until >= now_ms)
    }

    /// The job's queue entry, enqueued at `enqueued_at_ms`.
    pub fn queue_message(&self, enqueued_at_ms: i64) -> QueueMessage {
        QueueMessage {
            job_id: self.id.to_string(),
            priority: self.priority,
            trace: self.trace.clone(),
            enqueued_at_ms,
        }
    }

    /// Whether the job's start deadline passed before `now_ms`.
    pub fn start_deadline_passed(&self, now_ms: i64) -> bool {
        self.start_deadline_ms
            .is_some_and(|deadline| deadline < now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        Job {
            id: JobId::new(),
            owner: "usr_1".into(),
            status: JobStatus::Running,
            priority: 2,
            spec: JobSpec::default(),
            metadata: JobMetadata {
                seed: 42,
                ..JobMetadata::default()
            },
            attempts: 1,
            max_attempts: 3,
            backend: "b1".into(),
            progress: Some(Progress {
                percent: 50.0,
                ..Progress::default()
            }),
            error: None,
            outputs: Vec::new(),
            excluded_backends: vec!["b0".into()],
            idempotency_key: None,
            request_hash: "h".into(),
            trace: HashMap::from([("traceparent".into(), "00-x".into())]),
            trace_id: "t".into(),
            retention_days: 7,
            created_at_ms: 1,
            updated_at_ms: 2,
            started_at_ms: Some(3),
            finished_at_ms: None,
            start_deadline_ms: None,
            lease_owner: Some("worker-1".into()),
            lease_expires_ms: Some(4),
            seq: 5,
            queue_position: None,
            pending_reason: None,
            lost_runs: 0,
        }
    }

    #[test]
    fn a_job_round_trips_through_its_row() {
        let job = job();
        assert_eq!(Job::try_from(job.to_row().unwrap()).unwrap(), job);
    }

    #[test]
    fn a_corrupt_column_is_an_error_naming_the_job_and_the_column() {
        let mut row = job().to_row().unwrap();
        row.metadata = "{not json".into();
        let error = Job::try_from(row.clone()).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&row.id) && text.contains("metadata"),
            "{text}"
        );
        assert!(std::error::Error::source(&error).is_some());

        let mut row = job().to_row().unwrap();
        row.spec = String::new();
        assert!(Job::try_from(row).unwrap_err().to_string().contains("spec"));

        let mut row = job().to_row().unwrap();
        row.status = 99;
        assert!(
            Job::try_from(row)
                .unwrap_err()
                .to_string()
                .contains("status")
        );
    }
}
