//! The job API's logic behind the gRPC handlers: submit (validation, quotas, idempotency,
//! insert, enqueue), read, list, cancel, and rendering a record as the public `Job`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{Datelike, TimeZone, Utc};
use easel_proto::bridge::v1::InterruptRequest;
use easel_proto::jobs::v1::{
    Job, JobError, JobEvent, JobMetadata, JobOutput, JobSpec, JobStatus, Progress, StatusChange,
    SubmitJobRequest, job_event,
};
use sea_orm::DatabaseConnection;
use sea_orm::sea_query::Expr;

use crate::clients::Clients;
use crate::db::{self, Guard, JobColumn, JobRow, idempotency};
use crate::error::{JobsError, Result};
use crate::events::EventHub;
use crate::model::{
    Caller, Clock, JobId, is_terminal, millis, proto_duration, status_from_db, status_to_db,
    timestamp_ms,
};
use crate::queue::{JobQueue, QueueMessage, priority_class};
use crate::validate::validate_submit;

/// How long an idempotency key protects a request.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// A key whose first request has not finished after this long was abandoned (crash).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);

/// Settings of the API side.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Runs allowed per job.
    pub max_attempts: u32,
    /// Lifetime of signed output links in answers.
    pub output_url_ttl: Duration,
    /// Jobs the deployment runs at once, for ETAs.
    pub parallelism: u32,
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
    eta: Mutex<Option<(Instant, Option<Duration>)>>,
}

fn json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|error| JobsError::Internal(error.to_string()))
}

fn parse<T: serde::de::DeserializeOwned + Default>(text: Option<&str>) -> T {
    text.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// A job id a client sent: malformed ids are INVALID_ARGUMENT.
pub fn parse_job_id(value: &str) -> Result<JobId> {
    JobId::parse(value).ok_or_else(|| JobsError::field("job_id", "is not a job id (job_…)"))
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
            db,
            queue,
            hub,
            clients,
            clock,
            settings,
            eta: Mutex::new(None),
        }
    }

    /// Accepts a job, or returns the one an earlier request with the same idempotency key made
    /// (`true` = replayed).
    pub async fn submit(&self, caller: &Caller, request: &SubmitJobRequest) -> Result<(Job, bool)> {
        let validated = validate_submit(request, &caller.limits, rand::random::<u64>)?;
        let now = self.clock.now();
        let job_id = JobId::new();
        if let Some(key) = &validated.idempotency_key {
            let row = idempotency::new_row(
                &caller.user_id,
                key,
                &validated.request_hash,
                job_id.as_str(),
                millis(now),
                i64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(i64::MAX),
            );
            match idempotency::take(&self.db, row.clone()).await? {
                idempotency::Taken::Fresh => {}
                idempotency::Taken::Existing(existing) => {
                    let expired = existing.expires_at_ms <= millis(now);
                    let abandoned = !existing.completed
                        && millis(now) - existing.created_at_ms
                            > i64::try_from(ABANDONED_AFTER.as_millis()).unwrap_or(i64::MAX);
                    if !expired && existing.request_hash != validated.request_hash {
                        return Err(JobsError::IdempotencyKeyReused);
                    }
                    if !expired && existing.completed {
                        let row =
                            db::find_for_owner(&self.db, &caller.user_id, &existing.job_id).await?;
                        return Ok((self.render(&row).await?, true));
                    }
                    if !(expired || abandoned)
                        || !idempotency::replace(&self.db, &existing, row).await?
                    {
                        return Err(JobsError::IdempotencyKeyInFlight);
                    }
                }
            }
        }
        let created = self.create(caller, &validated, &job_id, now).await;
        if let Some(key) = &validated.idempotency_key {
            match &created {
                Ok(_) => {
                    idempotency::complete(&self.db, &caller.user_id, key, job_id.as_str()).await?
                }
                Err(_) => {
                    idempotency::release(&self.db, &caller.user_id, key, job_id.as_str()).await?;
                }
            }
        }
        let row = created?;
        metrics::counter!(crate::metrics::SUBMITTED).increment(1);
        self.clients.record_usage(&caller.user_id, 1, 0.0);
        tracing::info!(job_id = %row.id, owner = %row.owner, priority = row.priority, "job accepted");
        Ok((self.render(&row).await?, false))
    }

    async fn check_quotas(&self, caller: &Caller, now: chrono::DateTime<Utc>) -> Result<()> {
        let limits = &caller.limits;
        if limits.concurrent_jobs > 0
            && db::count_active(&self.db, &caller.user_id).await?
                >= u64::from(limits.concurrent_jobs)
        {
            return Err(JobsError::QuotaExhausted {
                limit: "concurrent_jobs",
                value: limits.concurrent_jobs,
                retry_after: Some(Duration::from_secs(5)),
            });
        }
        if limits.jobs_per_day > 0 {
            let midnight = Utc
                .with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
                .single()
                .unwrap_or(now);
            if db::count_created_since(&self.db, &caller.user_id, millis(midnight)).await?
                >= u64::from(limits.jobs_per_day)
            {
                let next = midnight + chrono::Duration::days(1);
                return Err(JobsError::QuotaExhausted {
                    limit: "jobs_per_day",
                    value: limits.jobs_per_day,
                    retry_after: (next - now).to_std().ok(),
                });
            }
        }
        Ok(())
    }

    async fn create(
        &self,
        caller: &Caller,
        validated: &crate::validate::Validated,
        job_id: &JobId,
        now: chrono::DateTime<Utc>,
    ) -> Result<JobRow> {
        self.check_quotas(caller, now).await?;
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
        };
        db::insert_job(
            &self.db,
            row.clone(),
            status_event(JobStatus::Pending, None, 0, ""),
        )
        .await?;
        let message = QueueMessage {
            job_id: row.id.clone(),
            priority,
            trace,
            enqueued_at_ms: millis(now),
        };
        // The record is durable: if the queue is down, the reconciler enqueues the job later.
        if let Err(error) = self.queue.enqueue(&message, Duration::ZERO).await {
            tracing::warn!(job_id = %row.id, error = %error, "enqueue failed; the reconciler will retry");
        }
        Ok(row)
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
        Err(JobsError::Internal(format!("cancelling {id} kept racing")))
    }

    /// Asks the bridge to stop the job's current run (best effort: the worker's own guard
    /// discards whatever the run still produces).
    pub async fn interrupt(&self, row: &JobRow) {
        let mut bridge = self.clients.bridge.clone();
        let run_id = format!("{}-{}", row.id, row.attempts);
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
        if let Some((at, value)) = *self
            .eta
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            && at.elapsed() < Duration::from_secs(10)
        {
            return value;
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

    /// The record as the public `Job`: queue position and ETA while pending, signed links.
    pub async fn render(&self, row: &JobRow) -> Result<Job> {
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
        };
        if matches!(status, JobStatus::Succeeded | JobStatus::Failed) {
            // A retried job's last error is history once it succeeded.
            if status == JobStatus::Succeeded {
                job.error = None;
            }
        }
        match status {
            JobStatus::Pending => {
                let position = db::queue_position(&self.db, row).await?;
                job.queue_position = u32::try_from(position).unwrap_or(u32::MAX);
                if let Some(average) = self.average_run_time().await {
                    let rounds = (position.saturating_sub(1))
                        / u64::from(self.settings.parallelism.max(1))
                        + 1;
                    job.eta = Some(proto_duration(
                        average * u32::try_from(rounds).unwrap_or(u32::MAX),
                    ));
                }
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
