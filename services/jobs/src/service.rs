//! The job API's logic behind the gRPC handlers: submit (validation, quotas, idempotency,
//! insert, enqueue), read, list, cancel, and rendering a [`Job`] as the public `v1::Job`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use easel_proto::bridge::v1::InterruptRequest;
use easel_proto::jobs::v1::{self, JobEvent, JobOutput, JobStatus, SubmitJobRequest};
use sea_orm::DatabaseConnection;

use crate::clients::Clients;
use crate::db;
use crate::error::{JobsError, Result};
use crate::events::EventHub;
use crate::job::Job;
use crate::lifecycle::{self, Transition, final_progress, status_event};
use crate::model::{Caller, Clock, JobId, millis, proto_duration, timestamp_ms};
use crate::queue::{JobQueue, priority_class};
use crate::submit::{Accepted, GroupCommit, Submission};
use crate::validate::{check_policy, validate_submit};
use easel_runtime::error::Internal;
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

/// The jobs service's shared state: the API's operations, and what the worker, the
/// reconciler and the watches of this crate share.
#[derive(Debug)]
pub struct Jobs {
    pub(crate) db: DatabaseConnection,
    pub(crate) queue: Arc<dyn JobQueue>,
    pub(crate) hub: Arc<EventHub>,
    pub(crate) clients: Clients,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: ApiSettings,
    group_commit: GroupCommit,
    eta: Mutex<Option<(Instant, Option<Duration>)>>,
    snapshots: Mutex<HashMap<String, CachedSnapshot>>,
}

/// A rendered job shared by the watches that open on it at about the same time.
#[derive(Debug)]
struct CachedSnapshot {
    seq: i64,
    at: Instant,
    job: Arc<v1::Job>,
}

/// How long a rendered snapshot serves new watches of an unchanged job (its queue position
/// may be this old; position events correct it).
const SNAPSHOT_TTL: Duration = Duration::from_secs(1);
/// Jobs whose snapshots are kept at most.
const SNAPSHOT_CACHE: usize = 1024;

/// A job id a client sent: malformed ids are INVALID_ARGUMENT.
pub fn parse_job_id(value: &str) -> Result<JobId> {
    JobId::parse(value).ok_or_else(|| JobsError::field("job_id", "is not a job id (job_…)"))
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
            group_commit: GroupCommit::start(db.clone(), queue.clone(), clients.clone()),
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

    /// The records, for tools and tests that read them directly.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The queue, for tests that play a worker.
    pub fn queue(&self) -> &Arc<dyn JobQueue> {
        &self.queue
    }

    /// The live event hub, for tests that watch its subscriptions.
    pub fn hub(&self) -> &Arc<EventHub> {
        &self.hub
    }

    /// One of the caller's jobs; another owner's (or no) job is NOT_FOUND.
    async fn find_owned(&self, caller: &Caller, id: &JobId) -> Result<Job> {
        Job::try_from(db::find_for_owner(&self.db, &caller.user_id, id.as_str()).await?)
    }

    /// The job as a watch's first message: rendered once for the watches that open on an
    /// unchanged job within a second (thousands of watchers of one job cost one render).
    pub async fn snapshot(&self, job: &Job) -> Result<v1::Job> {
        let cached = {
            let snapshots = self
                .snapshots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            snapshots
                .get(job.id.as_str())
                .filter(|cached| cached.seq == job.seq && cached.at.elapsed() < SNAPSHOT_TTL)
                .map(|cached| cached.job.clone())
        };
        if let Some(rendered) = cached {
            return Ok(rendered.as_ref().clone());
        }
        let rendered = self.render(job).await?;
        let mut snapshots = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if snapshots.len() >= SNAPSHOT_CACHE {
            snapshots.retain(|_, cached| cached.at.elapsed() < SNAPSHOT_TTL);
        }
        if snapshots.len() < SNAPSHOT_CACHE {
            snapshots.insert(
                job.id.to_string(),
                CachedSnapshot {
                    seq: job.seq,
                    at: Instant::now(),
                    job: Arc::new(rendered.clone()),
                },
            );
        }
        Ok(rendered)
    }

    /// Accepts a job, or returns the one an earlier request with the same idempotency key made
    /// (`true` = replayed). The write is grouped with concurrent requests ([`crate::submit`]).
    pub async fn submit(
        &self,
        caller: &Caller,
        request: &SubmitJobRequest,
    ) -> Result<(v1::Job, bool)> {
        let validated = validate_submit(request, &caller.limits, rand::random::<u64>)?;
        check_policy(&self.settings.workflow_policy, &caller.user_id, &validated)?;
        let submission = self.submission(caller, &validated, self.clock.now())?;
        match self.group_commit.write(submission).await? {
            Accepted::Created { job, position } => {
                tracing::info!(job_id = %job.id, owner = %job.owner, priority = job.priority, "job accepted");
                Ok((self.render_at(&job, position).await?, false))
            }
            Accepted::Replayed { job_id } => {
                let job = self.find_owned(caller, &job_id).await?;
                Ok((self.render(&job).await?, true))
            }
        }
    }

    /// The job a submit makes, ready to be written.
    fn submission(
        &self,
        caller: &Caller,
        validated: &crate::validate::Validated,
        now: chrono::DateTime<Utc>,
    ) -> Result<Submission> {
        let now_ms = millis(now);
        let job = Job {
            id: JobId::new(),
            owner: caller.user_id.clone(),
            status: JobStatus::Pending,
            priority: priority_class(caller.limits.queue_priority),
            spec: validated.spec.clone(),
            metadata: validated.metadata.clone(),
            attempts: 0,
            max_attempts: i32::try_from(self.settings.max_attempts).unwrap_or(3),
            backend: String::new(),
            progress: None,
            error: None,
            outputs: Vec::new(),
            excluded_backends: Vec::new(),
            idempotency_key: validated.idempotency_key.clone(),
            request_hash: validated.request_hash.clone(),
            trace: easel_runtime::telemetry::propagation::current_context_map(),
            trace_id: easel_runtime::telemetry::propagation::current_trace_id().unwrap_or_default(),
            retention_days: i32::try_from(caller.limits.artifact_retention_days).unwrap_or(0),
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            started_at_ms: None,
            finished_at_ms: None,
            start_deadline_ms: validated
                .start_timeout
                .map(|timeout| now_ms + i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX / 2)),
            lease_owner: None,
            lease_expires_ms: None,
            seq: 1,
            queue_position: None,
            pending_reason: None,
            lost_runs: 0,
        };
        let first = JobEvent {
            job_id: job.id.to_string(),
            seq: 1,
            time: Some(timestamp_ms(now_ms)),
            kind: Some(status_event(JobStatus::Pending, None, 0, "")),
        };
        Ok(Submission {
            first_event: db::event_row(&first, now_ms)?,
            message: job.queue_message(now_ms),
            row: job.to_row()?,
            job,
            limits: caller.limits,
            now,
        })
    }

    /// One of the caller's jobs.
    pub async fn get(&self, caller: &Caller, job_id: &str) -> Result<v1::Job> {
        let job = self.find_owned(caller, &parse_job_id(job_id)?).await?;
        self.render(&job).await
    }

    /// A page of the caller's jobs, newest first.
    pub async fn list(
        &self,
        caller: &Caller,
        statuses: &[JobStatus],
        before: Option<&str>,
        limit: u64,
    ) -> Result<(Vec<v1::Job>, Option<String>)> {
        let rows =
            db::list_for_owner(&self.db, &caller.user_id, statuses, before, limit + 1).await?;
        let more = rows.len() as u64 > limit;
        let jobs = rows
            .into_iter()
            .take(usize::try_from(limit).unwrap_or(0))
            .map(Job::try_from)
            .collect::<Result<Vec<_>>>()?;
        let next = if more {
            jobs.last().map(|job| job.id.to_string())
        } else {
            None
        };
        let rendered =
            futures::future::try_join_all(jobs.iter().map(|job| self.render(job))).await?;
        Ok((rendered, next))
    }

    /// Cancels a pending or running job; a finished one is FAILED_PRECONDITION.
    pub async fn cancel(&self, caller: &Caller, job_id: &str) -> Result<v1::Job> {
        let id = parse_job_id(job_id)?;
        // A job may move (PENDING → RUNNING) between our read and our update: read again.
        for _ in 0..5 {
            let job = self.find_owned(caller, &id).await?;
            if job.is_terminal() {
                return Err(JobsError::FailedPrecondition(format!(
                    "the job is already {}",
                    job.status.as_str_name().trim_start_matches("JOB_STATUS_")
                )));
            }
            let Some(moved) =
                lifecycle::apply(self, id.as_str(), Transition::cancel(&job)?).await?
            else {
                continue;
            };
            metrics::counter!(crate::metrics::FINISHED, "status" => "cancelled").increment(1);
            if job.status == JobStatus::Running {
                self.interrupt(&job.run_id(job.attempts)).await;
            }
            tracing::info!(job_id = %id, from = ?job.status, "job cancelled");
            return self.render(&moved.job).await;
        }
        Err(Internal::new(format!("cancelling {id} kept racing")).into())
    }

    /// Asks the bridge to stop a run (best effort: the worker's own guard discards whatever
    /// the run still produces).
    pub async fn interrupt(&self, run_id: &str) {
        let mut bridge = self.clients.bridge.clone();
        let request = InterruptRequest {
            run_id: run_id.to_string(),
        };
        if let Err(status) = bridge.interrupt(request).await {
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

    /// The job as the public `Job`: queue position and ETA while pending, signed links.
    pub async fn render(&self, job: &Job) -> Result<v1::Job> {
        self.render_at(job, None).await
    }

    /// [`Jobs::render`] with the queue position when it is known already.
    pub async fn render_at(&self, job: &Job, position: Option<u64>) -> Result<v1::Job> {
        let status = job.status;
        let mut rendered = v1::Job {
            id: job.id.to_string(),
            owner: job.owner.clone(),
            status: status as i32,
            spec: Some(job.spec.clone()),
            queue_position: 0,
            eta: None,
            progress: job.progress.clone(),
            attempts: u32::try_from(job.attempts).unwrap_or_default(),
            max_attempts: u32::try_from(job.max_attempts).unwrap_or_default(),
            backend: job.backend.clone(),
            // A retried job's last error is history once it succeeded.
            error: job.error.clone().filter(|_| status != JobStatus::Succeeded),
            outputs: job.outputs.clone(),
            metadata: Some(job.metadata.clone()),
            create_time: Some(timestamp_ms(job.created_at_ms)),
            start_time: job.started_at_ms.map(timestamp_ms),
            end_time: job.finished_at_ms.map(timestamp_ms),
            start_deadline: job.start_deadline_ms.map(timestamp_ms),
            trace_id: job.trace_id.clone(),
            seq: u64::try_from(job.seq).unwrap_or_default(),
            pending_reason: String::new(),
        };
        // A terminal job's progress is final whatever the row holds (rows finished before
        // this rule kept their last value): 100 % when it succeeded, none otherwise.
        if job.is_terminal() {
            rendered.progress = (status == JobStatus::Succeeded).then(final_progress);
        }
        match status {
            JobStatus::Pending => {
                rendered.pending_reason = job.pending_reason.clone().unwrap_or_default();
                let position = match position {
                    Some(position) => position,
                    None => db::queue_position(&self.db, job.priority, job.id.as_str()).await?,
                };
                rendered.queue_position = u32::try_from(position).unwrap_or(u32::MAX);
                rendered.eta = self.pending_eta(position).await;
            }
            JobStatus::Running => rendered.eta = self.running_eta(job).await,
            _ => {}
        }
        self.sign_outputs(&job.owner, &mut rendered.outputs).await;
        Ok(rendered)
    }

    /// How long a RUNNING job should still take, at the recent average run time.
    async fn running_eta(&self, job: &Job) -> Option<pbjson_types::Duration> {
        let (average, started) = (self.average_run_time().await?, job.started_at_ms?);
        let elapsed = Duration::from_millis(
            u64::try_from(millis(self.clock.now()) - started).unwrap_or_default(),
        );
        Some(proto_duration(average.saturating_sub(elapsed)))
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
