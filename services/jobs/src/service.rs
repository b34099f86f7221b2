//! The job API's logic behind the gRPC handlers: submit (validation, quotas, idempotency,
//! insert, enqueue), read, list, cancel, and rendering a record as the public `Job`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use easel_proto::bridge::v1::InterruptRequest;
use easel_proto::jobs::v1::{
    Job, JobError, JobEvent, JobMetadata, JobOutput, JobSpec, JobStatus, Progress, StatusChange,
    SubmitJobRequest, job_event,
};
use sea_orm::DatabaseConnection;
use sea_orm::sea_query::Expr;

use crate::clients::Clients;
use crate::db::{self, Guard, JobColumn, JobRow};
use crate::error::{JobsError, Result};
use crate::events::EventHub;
use crate::model::{
    Caller, Clock, JobId, is_terminal, millis, proto_duration, status_from_db, status_to_db,
    timestamp_ms,
};
use crate::queue::{JobQueue, QueueMessage, priority_class};
use crate::submit::{Accepted, Submission, Submitter};
use crate::validate::{check_policy, validate_submit};
use easel_runtime::error::{Internal, InternalContext};
use easel_workflow_policy::WorkflowPolicy;

pub use crate::submit::IDEMPOTENCY_TTL;

/// Settings of the API side.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Runs allowed per job.
    pub max_attempts: u32,
    /// Lifetime of signed output links in answers.
    pub output_url_ttl: Duration,
    /// Jobs the deployment runs at once, for ETAs.
    pub parallelism: u32,
    /// What raw workflows may do on the backends.
    pub workflow_policy: WorkflowPolicy,
}

/// The jobs service's shared state.
#[derive(Debug)]
pub struct Jobs {
    /// Records.
    pub db: DatabaseConnection,
    /// The queue.
    pub queue: Arc<dyn JobQueue>,
    /// Live events.
    pub hub: Arc<EventHub>,
    /// Other services.
    pub clients: Clients,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub settings: ApiSettings,
    submitter: Submitter,
    eta: Mutex<Option<(Instant, Option<Duration>)>>,
    snapshots: Mutex<HashMap<String, CachedSnapshot>>,
}

/// A rendered job shared by the watches that open on it at about the same time.
#[derive(Debug)]
struct CachedSnapshot {
    seq: i64,
    at: Instant,
    job: Arc<Job>,
}

/// How long a rendered snapshot serves new watches of an unchanged job (its queue position
/// may be this old; position events correct it).
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// Jobs whose snapshots are kept at most.
const SNAPSHOT_CACHE: usize = 1024;

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    Ok(serde_json::to_string(value).internal("encoding a stored document")?)
}

fn parse<T: serde::de::DeserializeOwned + Default>(text: Option<&str>) -> T {
    text.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// A job id a client sent: malformed ids are INVALID_ARGUMENT.
pub fn parse_job_id(value: &str) -> Result<JobId> {
    JobId::parse(value).ok_or_else(|| JobsError::field("job_id", "is not a job id (job_…)"))
}

/// The progress of a SUCCEEDED job: complete.
pub fn final_progress() -> Progress {
    Progress {
        percent: 100.0,
        ..Progress::default()
    }
}

/// The status-change event kind.
pub fn status_event(
    status: JobStatus,
    error: Option<JobError>,
    attempt: i32,
    backend: &str,
) -> job_event::Kind {
    job_event::Kind::StatusChange(StatusChange {
        status: status as i32,
        error,
        attempt: u32::try_from(attempt).unwrap_or_default(),
        backend: backend.to_string(),
        pending_reason: String::new(),
    })
}

impl Jobs {
    /// Assembles the service.
    pub fn new(
        db: DatabaseConnection,
        queue: Arc<dyn JobQueue>,
        hub: Arc<EventHub>,
        clients: Clients,
        clock: Arc<dyn Clock>,
        settings: ApiSettings,
    ) -> Jobs {
        Jobs {
            submitter: Submitter::start(db.clone(), queue.clone(), clients.clone()),
            db,
            queue,
            hub,
            clients,
            clock,
            settings,
            eta: Mutex::new(None),
            snapshots: Mutex::new(HashMap::new()),
        }
    }

    /// The job as a watch's first message: rendered once for the watches that open on an
    /// unchanged job within a second (thousands of watchers of one job cost one render).
    pub async fn snapshot(&self, row: &JobRow) -> Result<Job> {
        let cached = {
            let snapshots = self
                .snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snapshots
                .get(&row.id)
                .filter(|cached| cached.seq == row.seq && cached.at.elapsed() < SNAPSHOT_TTL)
                .map(|cached| cached.job.clone())
        };
        if let Some(job) = cached {
            return Ok(job.as_ref().clone());
        }
        let job = self.render(row).await?;
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshots.len() >= SNAPSHOT_CACHE {
            snapshots.retain(|_, cached| cached.at.elapsed() < SNAPSHOT_TTL);
        }
        if snapshots.len() < SNAPSHOT_CACHE {
            snapshots.insert(
                row.id.clone(),
                CachedSnapshot {
                    seq: row.seq,
                    at: Instant::now(),
                    job: Arc::new(job.clone()),
                },
            );
        }
        Ok(job)
    }

    /// Accepts a job, or returns the one an earlier request with the same idempotency key made
    /// (`true` = replayed). The write is grouped with concurrent submits ([`crate::submit`]).
    pub async fn submit(&self, caller: &Caller, request: &SubmitJobRequest) -> Result<(Job, bool)> {
        let validated = validate_submit(request, &caller.limits, rand::random::<u64>)?;
        check_policy(&self.settings.workflow_policy, &caller.user_id, &validated)?;
        let now = self.clock.now();
        let submission = self.submission(caller, &validated, &JobId::new(), now)?;
        match self.submitter.submit(submission).await? {
            Accepted::Created { row, position } => {
                tracing::info!(job_id = %row.id, owner = %row.owner, priority = row.priority, "job accepted");
                Ok((self.render_at(&row, position).await?, false))
            }
            Accepted::Replayed { job_id } => {
                let row = db::find_for_owner(&self.db, &caller.user_id, &job_id).await?;
                Ok((self.render(&row).await?, true))
            }
        }
    }

    /// The job a submit makes, ready to be written.
    fn submission(
        &self,
        caller: &Caller,
        validated: &crate::validate::Validated,
        job_id: &JobId,
        now: chrono::DateTime<Utc>,
    ) -> Result<Submission> {
        let trace = easel_runtime::telemetry::propagation::current_context_map();
        let trace_id =
            easel_runtime::telemetry::propagation::current_trace_id().unwrap_or_default();
        let priority = priority_class(caller.limits.queue_priority);
        let row = JobRow {
            id: job_id.to_string(),
            owner: caller.user_id.clone(),
            status: status_to_db(JobStatus::Pending),
            priority: i32::from(priority),
            spec: json(&validated.spec)?,
            metadata: json(&validated.metadata)?,
            attempts: 0,
            max_attempts: i32::try_from(self.settings.max_attempts).unwrap_or(3),
            backend: String::new(),
            progress: None,
            error: None,
            outputs: "[]".to_string(),
            excluded_backends: "[]".to_string(),
            idempotency_key: validated.idempotency_key.clone(),
            request_hash: validated.request_hash.clone(),
            trace_context: json(&trace)?,
            trace_id,
            retention_days: i32::try_from(caller.limits.artifact_retention_days).unwrap_or(0),
            created_at_ms: millis(now),
            updated_at_ms: millis(now),
            started_at_ms: None,
            finished_at_ms: None,
            start_deadline_ms: validated.start_timeout.map(|timeout| {
                millis(now) + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2)
            }),
            lease_owner: None,
            lease_expires_ms: None,
            seq: 1,
            queue_position: None,
            pending_reason: None,
            lost_runs: 0,
        };
        let first = JobEvent {
            job_id: row.id.clone(),
            seq: 1,
            time: Some(timestamp_ms(row.created_at_ms)),
            kind: Some(status_event(JobStatus::Pending, None, 0, "")),
        };
        Ok(Submission {
            first_event: db::event_row(&first, row.created_at_ms)?,
            message: QueueMessage {
                job_id: row.id.clone(),
                priority,
                trace,
                enqueued_at_ms: millis(now),
            },
            row,
            limits: caller.limits,
            now,
        })
    }

    /// One of the caller's jobs.
    pub async fn get(&self, caller: &Caller, job_id: &str) -> Result<Job> {
        let id = parse_job_id(job_id)?;
        let row = db::find_for_owner(&self.db, &caller.user_id, id.as_str()).await?;
        self.render(&row).await
    }

    /// A page of the caller's jobs, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        statuses: &[JobStatus],
        before: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<Job>, Option<String>)> {
        let rows =
            db::list_for_owner(&self.db, &caller.user_id, statuses, before, limit + 1).await?;
        let more = rows.len() as u64 > limit;
        let rows: Vec<JobRow> = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .collect();
        let next = if more {
            rows.last().map(|row| row.id.clone())
        } else {
            None
        };
        let jobs = futures::future::try_join_all(rows.iter().map(|row| self.render(row))).await?;
        Ok((jobs, next))
    }

    /// Cancels a pending or running job; a finished one is FAILED_PRECONDITION.
    pub async fn cancel(&self, caller: &Caller, job_id: &str) -> Result<Job> {
        let id = parse_job_id(job_id)?;
        // A job may move (PENDING → RUNNING) between our read and our update: read again.
        for _ in 0..5 {
            let row = db::find_for_owner(&self.db, &caller.user_id, id.as_str()).await?;
            let status = status_from_db(row.status);
            if is_terminal(status) {
                return Err(JobsError::FailedPrecondition(format!(
                    "the job is already {}",
                    status.as_str_name().trim_start_matches("JOB_STATUS_")
                )));
            }
            let now = millis(self.clock.now());
            let changes = vec![
                (
                    JobColumn::Status,
                    Expr::value(status_to_db(JobStatus::Cancelled)),
                ),
                (JobColumn::FinishedAtMs, Expr::value(now)),
                (JobColumn::LeaseOwner, Expr::value(Option::<String>::None)),
                (JobColumn::LeaseExpiresMs, Expr::value(Option::<i64>::None)),
                // A terminal job's progress is final: no stale value survives a cancel.
                (JobColumn::Progress, Expr::value(Option::<String>::None)),
                (
                    JobColumn::PendingReason,
                    Expr::value(Option::<String>::None),
                ),
            ];
            let event = status_event(JobStatus::Cancelled, None, row.attempts, &row.backend);
            let Some((updated, stored)) = db::transition(
                &self.db,
                &row.id,
                &Guard::from(&[status]),
                changes,
                Some(event),
                now,
            )
            .await?
            else {
                continue;
            };
            if let Some(event) = &stored {
                self.hub.publish(event).await;
            }
            metrics::counter!(crate::metrics::FINISHED, "status" => "cancelled").increment(1);
            if status == JobStatus::Running {
                self.interrupt(&row).await;
            }
            tracing::info!(job_id = %row.id, from = ?status, "job cancelled");
            return self.render(&updated).await;
        }
        Err(Internal::new(format!("cancelling {id} kept racing")).into())
    }

    /// Asks the bridge to stop the job's current run (best effort: the worker's own guard
    /// discards whatever the run still produces).
    pub async fn interrupt(&self, row: &JobRow) {
        let mut bridge = self.clients.bridge.clone();
        let run_id = crate::model::run_id(&row.id, row.attempts, row.lost_runs);
        if let Err(status) = bridge
            .interrupt(InterruptRequest {
                run_id: run_id.clone(),
            })
            .await
        {
            tracing::warn!(run_id, code = ?status.code(), "interrupting a run failed");
        }
    }

    /// The average recent run time, refreshed at most every 10 s.
    async fn average_run_time(&self) -> Option<Duration> {
        {
            let mut eta = self
                .eta
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match *eta {
                Some((at, value)) if at.elapsed() < Duration::from_secs(10) => return value,
                // One caller refreshes; the others answer with the old value meanwhile.
                Some((_, value)) => *eta = Some((Instant::now(), value)),
                None => {}
            }
        }
        let times = db::recent_run_times(&self.db, 50).await.unwrap_or_default();
        let value = (!times.is_empty()).then(|| {
            let sum: i64 = times.iter().sum();
            Duration::from_millis(u64::try_from(sum / times.len() as i64).unwrap_or_default())
        });
        *self
            .eta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), value));
        value
    }

    /// When a PENDING job at `position` should be done: the rounds of the deployment's
    /// parallelism ahead of it, plus its own, at the recent average run time.
    pub async fn pending_eta(&self, position: u64) -> Option<pbjson_types::Duration> {
        let average = self.average_run_time().await?;
        let rounds = (position.saturating_sub(1)) / u64::from(self.settings.parallelism.max(1)) + 1;
        Some(proto_duration(
            average * u32::try_from(rounds).unwrap_or(u32::MAX),
        ))
    }

    /// The record as the public `Job`: queue position and ETA while pending, signed links.
    pub async fn render(&self, row: &JobRow) -> Result<Job> {
        self.render_at(row, None).await
    }

    /// [`Jobs::render`] with the queue position when it is known already.
    pub async fn render_at(&self, row: &JobRow, position: Option<u64>) -> Result<Job> {
        let status = status_from_db(row.status);
        let mut job = Job {
            id: row.id.clone(),
            owner: row.owner.clone(),
            status: status as i32,
            spec: Some(parse::<JobSpec>(Some(&row.spec))),
            queue_position: 0,
            eta: None,
            progress: row.progress.as_deref().map(|p| parse::<Progress>(Some(p))),
            attempts: u32::try_from(row.attempts).unwrap_or_default(),
            max_attempts: u32::try_from(row.max_attempts).unwrap_or_default(),
            backend: row.backend.clone(),
            error: row.error.as_deref().map(|e| parse::<JobError>(Some(e))),
            outputs: parse::<Vec<JobOutput>>(Some(&row.outputs)),
            metadata: Some(parse::<JobMetadata>(Some(&row.metadata))),
            create_time: Some(timestamp_ms(row.created_at_ms)),
            start_time: row.started_at_ms.map(timestamp_ms),
            end_time: row.finished_at_ms.map(timestamp_ms),
            start_deadline: row.start_deadline_ms.map(timestamp_ms),
            trace_id: row.trace_id.clone(),
            seq: u64::try_from(row.seq).unwrap_or_default(),
            pending_reason: String::new(),
        };
        if status == JobStatus::Succeeded {
            // A retried job's last error is history once it succeeded.
            job.error = None;
        }
        // A terminal job's progress is final whatever the row holds (rows finished before
        // this rule kept their last value): 100 % when it succeeded, none otherwise.
        if is_terminal(status) {
            job.progress = (status == JobStatus::Succeeded).then(final_progress);
        }
        if status == JobStatus::Pending {
            job.pending_reason = row.pending_reason.clone().unwrap_or_default();
        }
        match status {
            JobStatus::Pending => {
                let position = match position {
                    Some(position) => position,
                    None => db::queue_position(&self.db, row).await?,
                };
                job.queue_position = u32::try_from(position).unwrap_or(u32::MAX);
                job.eta = self.pending_eta(position).await;
            }
            JobStatus::Running => {
                if let (Some(average), Some(started)) =
                    (self.average_run_time().await, row.started_at_ms)
                {
                    let elapsed = Duration::from_millis(
                        u64::try_from(millis(self.clock.now()) - started).unwrap_or_default(),
                    );
                    job.eta = Some(proto_duration(average.saturating_sub(elapsed)));
                }
            }
            _ => {}
        }
        self.sign_outputs(&row.owner, &mut job.outputs).await;
        Ok(job)
    }

    /// Fills the outputs' signed links.
    pub async fn sign_outputs(&self, owner: &str, outputs: &mut [JobOutput]) {
        let signed = futures::future::join_all(outputs.iter().map(|output| {
            self.clients
                .sign(owner, &output.artifact_id, self.settings.output_url_ttl)
        }))
        .await;
        for (output, signed) in outputs.iter_mut().zip(signed) {
            if let Some((url, expire)) = signed {
                output.url = url;
                output.url_expire_time = Some(expire);
            }
        }
    }

    /// Publishes a stored event, signing output links for live watchers is their job.
    pub async fn publish(&self, event: &JobEvent) {
        self.hub.publish(event).await;
    }
}
