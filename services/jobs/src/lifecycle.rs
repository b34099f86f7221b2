//! Every move of a job's life, by name. A [`Transition`] says which states it starts from (its
//! guard: expected statuses, lease owner, attempt), which columns it writes and which events
//! it records; [`apply`] writes it in one guarded transaction ([`db::transition_with_events`])
//! and publishes the stored events. The API (cancel), the worker (take, wait, start, progress,
//! renew, lose a run, retry, hand back, succeed, fail, expire) and the reconciler (expire)
//! all move jobs through here.
//!
//! ```text
//!   submit ──► PENDING ──take──► PENDING (leased) ──start──► RUNNING ──succeed/fail──► end
//!                ▲                  │  ▲ wait_for_backend      │ │ progress, renew_lease
//!                │                  │  └──────lose_run─────────┘ │
//!                └──retry / hand_back / take (lease lapsed)──────┘
//!   PENDING/RUNNING ──cancel──► CANCELLED;  PENDING ──expire──► EXPIRED, ──give_up──► FAILED
//! ```

use std::mem::discriminant;

use easel_proto::bridge::v1::Queued;
use easel_proto::jobs::v1::{
    JobError, JobEvent, JobMetadata, JobOutput, JobStatus, Progress, StatusChange, job_event,
};
use sea_orm::Value;
use sea_orm::sea_query::{Expr, SimpleExpr};

use crate::db::{self, Guard, JobColumn, JobRow};
use crate::error::Result;
use crate::job::{Job, encode};
use crate::model::{millis, status_to_db};
use crate::service::Jobs;

/// One named move of a job: its guard, its columns and its events.
#[derive(Debug)]
#[must_use = "a transition does nothing until applied"]
pub struct Transition {
    name: &'static str,
    guard: Guard,
    changes: Vec<(JobColumn, SimpleExpr)>,
    /// The column set to the time the transition is applied.
    stamp: Option<JobColumn>,
    events: Vec<job_event::Kind>,
    /// Whose signed links the output events carry when published.
    signed_for: Option<String>,
    /// The terminal status the transition ends the job in, if it does.
    ends: Option<JobStatus>,
}

/// A transition that was applied: the job as it is now, and the events it recorded.
#[derive(Debug)]
pub struct Moved {
    /// The job after the move.
    pub job: Job,
    /// The stored events, as published.
    pub events: Vec<JobEvent>,
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

/// The progress of a SUCCEEDED job: complete.
pub fn final_progress() -> Progress {
    Progress {
        percent: 100.0,
        ..Progress::default()
    }
}

/// The error of a job whose start deadline passed; `why` says more when there is more to say.
pub fn deadline_exceeded(why: Option<&str>) -> JobError {
    let mut message = "the job did not start before its start timeout".to_string();
    if let Some(why) = why {
        message = format!("{message} ({why})");
    }
    JobError {
        code: "DEADLINE_EXCEEDED".into(),
        message,
        ..JobError::default()
    }
}

/// `excluded` with `backend` added (once).
fn excluding(excluded: &[String], backend: &str) -> Vec<String> {
    let mut excluded = excluded.to_vec();
    if !backend.is_empty() && !excluded.iter().any(|name| name == backend) {
        excluded.push(backend.to_string());
    }
    excluded
}

impl Transition {
    fn new(name: &'static str, guard: Guard) -> Transition {
        Transition {
            name,
            guard,
            changes: Vec::new(),
            stamp: None,
            events: Vec::new(),
            signed_for: None,
            ends: None,
        }
    }

    /// Sets a column (a later value for the same column replaces an earlier one).
    fn set(mut self, column: JobColumn, value: impl Into<Value>) -> Transition {
        self.changes
            .retain(|(set, _)| discriminant(set) != discriminant(&column));
        self.changes.push((column, Expr::value(value)));
        self
    }

    fn status(self, status: JobStatus) -> Transition {
        self.set(JobColumn::Status, status_to_db(status))
    }

    fn event(mut self, kind: job_event::Kind) -> Transition {
        self.events.push(kind);
        self
    }

    /// The job leaves its worker: no lease, and neither progress nor a pending reason (a job
    /// nobody runs has no progress, and whether it waits for a backend is for the next worker
    /// to find out).
    fn release(self) -> Transition {
        self.set(JobColumn::LeaseOwner, Option::<String>::None)
            .set(JobColumn::LeaseExpiresMs, Option::<i64>::None)
            .set(JobColumn::Progress, Option::<String>::None)
            .set(JobColumn::PendingReason, Option::<String>::None)
    }

    /// The transition's name, for logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A worker takes the job under a lease, still PENDING: it becomes RUNNING (and spends its
    /// attempt) when a backend accepts the run. A RUNNING job whose worker stopped renewing
    /// its lease goes back to PENDING (its attempt stays spent), which watchers are told.
    pub fn take(job: &Job, worker: &str, lease_until: i64, now_ms: i64) -> Transition {
        let was_running = job.status == JobStatus::Running;
        let guard = Guard {
            statuses: if was_running {
                Vec::new()
            } else {
                vec![JobStatus::Pending]
            },
            or_lease_lapsed_before: Some(now_ms),
            ..Guard::default()
        };
        let mut take = Transition::new("take", guard)
            .status(JobStatus::Pending)
            .set(JobColumn::LeaseOwner, worker.to_string())
            .set(JobColumn::LeaseExpiresMs, lease_until)
            .set(JobColumn::Progress, Option::<String>::None);
        if was_running {
            take = take.event(status_event(
                JobStatus::Pending,
                None,
                job.attempts,
                &job.backend,
            ));
        }
        take
    }

    /// Records why the held, PENDING job is not running (`None`: it is just waiting its turn).
    pub fn wait_for_backend(guard: Guard, job: &Job, reason: Option<&str>) -> Transition {
        Transition::new("wait_for_backend", guard)
            .set(JobColumn::PendingReason, reason.map(str::to_string))
            .event(job_event::Kind::StatusChange(StatusChange {
                status: JobStatus::Pending as i32,
                attempt: u32::try_from(job.attempts).unwrap_or_default(),
                pending_reason: reason.unwrap_or_default().to_string(),
                ..StatusChange::default()
            }))
    }

    /// A backend accepted attempt `number`: the job is RUNNING there and the attempt spent; the
    /// seed and checkpoint the backend resolved join the metadata.
    pub fn start(guard: Guard, job: &Job, number: i32, queued: &Queued) -> Result<Transition> {
        let mut metadata: JobMetadata = job.metadata.clone();
        metadata.seed = queued.seed;
        if !queued.checkpoint.is_empty() {
            metadata.checkpoint = queued.checkpoint.clone();
        }
        let mut start = Transition::new("start", guard)
            .status(JobStatus::Running)
            .set(JobColumn::Attempts, number)
            .set(JobColumn::Backend, queued.backend.clone())
            .set(JobColumn::Metadata, encode(&metadata)?)
            .set(JobColumn::PendingReason, Option::<String>::None)
            .set(JobColumn::Progress, Option::<String>::None)
            .event(status_event(
                JobStatus::Running,
                None,
                number,
                &queued.backend,
            ));
        start.stamp = Some(JobColumn::StartedAtMs);
        Ok(start)
    }

    /// The run's latest progress.
    pub fn progress(guard: Guard, progress: Progress) -> Result<Transition> {
        Ok(Transition::new("progress", guard)
            .set(JobColumn::Progress, encode(&progress)?)
            .event(job_event::Kind::Progress(progress)))
    }

    /// The worker still holds the job: its lease now lapses at `until`.
    pub fn renew_lease(guard: Guard, until: i64) -> Transition {
        Transition::new("renew_lease", guard).set(JobColumn::LeaseExpiresMs, until)
    }

    /// Attempt `number`'s run was lost with its backend: back to PENDING (still leased, the
    /// worker waits for a backend again) without spending the attempt; the loss is counted
    /// and the backend avoided next time.
    pub fn lose_run(
        guard: Guard,
        job: &Job,
        number: i32,
        error: JobError,
        backend: &str,
    ) -> Result<Transition> {
        Ok(Transition::new("lose_run", guard)
            .status(JobStatus::Pending)
            .set(JobColumn::Attempts, number - 1)
            .set(JobColumn::LostRuns, job.lost_runs + 1)
            .set(JobColumn::Error, encode(&error)?)
            .set(
                JobColumn::ExcludedBackends,
                encode(&excluding(&job.excluded_backends, backend))?,
            )
            .set(JobColumn::Progress, Option::<String>::None)
            .event(status_event(
                JobStatus::Pending,
                Some(error),
                number - 1,
                backend,
            )))
    }

    /// Attempt `number` failed and may be retried: back to the queue (PENDING, released) with
    /// the attempt spent and the backend avoided next time.
    pub fn retry(
        guard: Guard,
        job: &Job,
        number: i32,
        error: &JobError,
        backend: &str,
    ) -> Result<Transition> {
        Ok(Transition::new("retry", guard)
            .release()
            .status(JobStatus::Pending)
            .set(JobColumn::Attempts, number)
            .set(JobColumn::Error, encode(error)?)
            .set(
                JobColumn::ExcludedBackends,
                encode(&excluding(&job.excluded_backends, backend))?,
            )
            .event(status_event(
                JobStatus::Pending,
                Some(error.clone()),
                number,
                backend,
            )))
    }

    /// The worker shuts down: the job goes back to the queue without using up attempt
    /// `number`. `visible` when watchers saw something that changes (it ran, or waited for a
    /// backend), so they are told.
    pub fn hand_back(guard: Guard, number: i32, visible: bool) -> Transition {
        let hand_back = Transition::new("hand_back", guard)
            .release()
            .status(JobStatus::Pending)
            .set(JobColumn::Attempts, number - 1);
        if visible {
            hand_back.event(status_event(JobStatus::Pending, None, number - 1, ""))
        } else {
            hand_back
        }
    }

    /// The job ends in `status` (with its outputs, each an event before the status change). A
    /// terminal job's progress is final: 100 % when it succeeded, none otherwise (a stale value
    /// of the last step would read as a job stuck short of done).
    fn end(
        name: &'static str,
        guard: Guard,
        job: &Job,
        status: JobStatus,
        error: Option<JobError>,
        attempt: i32,
    ) -> Result<Transition> {
        let progress = (status == JobStatus::Succeeded)
            .then(|| encode(&final_progress()))
            .transpose()?;
        let mut end = Transition::new(name, guard)
            .release()
            .status(status)
            .set(JobColumn::Progress, progress);
        end.stamp = Some(JobColumn::FinishedAtMs);
        end.ends = Some(status);
        if let Some(error) = &error {
            end = end.set(JobColumn::Error, encode(error)?);
        }
        Ok(end.event(status_event(status, error, attempt, &job.backend)))
    }

    /// The caller cancels the job, from the status it was read in.
    pub fn cancel(job: &Job) -> Result<Transition> {
        let guard = Guard::from(&[job.status]);
        Transition::end(
            "cancel",
            guard,
            job,
            JobStatus::Cancelled,
            None,
            job.attempts,
        )
    }

    /// The run succeeded: its outputs and SUCCEEDED in one commit, so watchers get every
    /// output event, then the status, from one transaction.
    pub fn succeed(guard: Guard, job: &Job, outputs: Vec<JobOutput>) -> Result<Transition> {
        let mut succeed = Transition::end(
            "succeed",
            guard,
            job,
            JobStatus::Succeeded,
            None,
            job.attempts,
        )?
        .set(JobColumn::Outputs, encode(&outputs)?);
        let status = succeed.events.pop();
        succeed
            .events
            .extend(outputs.into_iter().map(job_event::Kind::Output));
        succeed.events.extend(status);
        succeed.signed_for = Some(job.owner.clone());
        Ok(succeed)
    }

    /// Attempt `number` failed for good (not retryable, or the last attempt); it is spent
    /// whether or not a backend accepted the run.
    pub fn fail(guard: Guard, job: &Job, number: i32, error: JobError) -> Result<Transition> {
        Ok(
            Transition::end("fail", guard, job, JobStatus::Failed, Some(error), number)?
                .set(JobColumn::Attempts, number),
        )
    }

    /// The job's start deadline passed before any backend accepted it.
    pub fn expire(guard: Guard, job: &Job, error: JobError) -> Result<Transition> {
        Transition::end(
            "expire",
            guard,
            job,
            JobStatus::Expired,
            Some(error),
            job.attempts,
        )
    }

    /// Every attempt is spent: the job fails with its last error (PENDING, or RUNNING under a
    /// lease that lapsed before `now_ms`).
    pub fn give_up(job: &Job, now_ms: i64) -> Result<Transition> {
        let mut error = job.error.clone().unwrap_or_default();
        error.message = format!("gave up after {} attempts: {}", job.attempts, error.message);
        if error.code.is_empty() {
            error.code = "UNAVAILABLE".into();
        }
        let mut guard = Guard::from(&[JobStatus::Pending]);
        guard.or_lease_lapsed_before = Some(now_ms);
        Transition::end(
            "give_up",
            guard,
            job,
            JobStatus::Failed,
            Some(error),
            job.attempts,
        )
    }
}

/// Applies `transition` to the job if its guard holds, and publishes the events it stored
/// (output links signed while the transaction runs, for live watchers; the stored events stay
/// unsigned since links expire). `None` when the guard did not hold.
pub async fn apply(jobs: &Jobs, job_id: &str, transition: Transition) -> Result<Option<Moved>> {
    let Some((row, events)) = write(jobs, job_id, transition).await? else {
        return Ok(None);
    };
    Ok(Some(Moved {
        job: Job::try_from(row)?,
        events,
    }))
}

/// [`apply`] without decoding the row it leaves.
async fn write(
    jobs: &Jobs,
    job_id: &str,
    transition: Transition,
) -> Result<Option<(JobRow, Vec<JobEvent>)>> {
    let now = millis(jobs.clock.now());
    let Transition {
        guard,
        mut changes,
        stamp,
        events,
        signed_for,
        ..
    } = transition;
    if let Some(column) = stamp {
        changes.push((column, Expr::value(now)));
    }
    let mut signed: Vec<JobOutput> = events
        .iter()
        .filter_map(|event| match event {
            job_event::Kind::Output(output) => Some(output.clone()),
            _ => None,
        })
        .collect();
    let sign = async {
        if let Some(owner) = &signed_for {
            jobs.sign_outputs(owner, &mut signed).await;
        }
    };
    let (stored, ()) = tokio::join!(
        db::transition_with_events(&jobs.db, job_id, &guard, changes, events, now),
        sign,
    );
    let Some((row, mut events)) = stored? else {
        return Ok(None);
    };
    let mut signed = signed.into_iter();
    for event in &mut events {
        if let Some(job_event::Kind::Output(output)) = &mut event.kind
            && let Some(with_link) = signed.next()
        {
            *output = with_link;
        }
    }
    jobs.hub.publish_all(&events).await;
    Ok(Some((row, events)))
}

/// Applies a transition that ends the job (see [`Transition::end`]) and records it: the
/// finished-jobs counter, and for a job that ran, its duration and usage. Whether the guard
/// held; a failed write is logged (the lease decides what happens to the job next).
pub async fn finish(jobs: &Jobs, job_id: &str, transition: Transition) -> bool {
    let status = transition.ends.unwrap_or(JobStatus::Unspecified);
    let name = transition.name();
    match apply(jobs, job_id, transition).await {
        Ok(Some(Moved { job, .. })) => {
            let label = status
                .as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_ascii_lowercase();
            metrics::counter!(crate::metrics::FINISHED, "status" => label.clone()).increment(1);
            if let (Some(started), Some(finished)) = (job.started_at_ms, job.finished_at_ms) {
                let seconds = (finished - started).max(0) as f64 / 1000.0;
                metrics::histogram!(crate::metrics::JOB_DURATION, "status" => label)
                    .record(seconds);
                jobs.clients.record_usage(&job.owner, 0, seconds);
            }
            tracing::info!(job_id, status = ?status, "job finished");
            true
        }
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(job_id, transition = name, error = %error, "finishing a job failed");
            false
        }
    }
}

/// Fails a job whose stored record cannot be decoded (see [`crate::job`]), naming why, rather
/// than leaving it to wait forever for a worker that cannot run it. Whether it was live.
pub async fn fail_corrupt(jobs: &Jobs, row: &JobRow, why: &str) -> bool {
    let error = JobError {
        code: "INTERNAL".into(),
        message: format!("the job's stored record is corrupt: {why}"),
        ..JobError::default()
    };
    let guard = Guard::from(&[JobStatus::Pending, JobStatus::Running]);
    let mut fail = Transition::new("fail_corrupt", guard)
        .release()
        .status(JobStatus::Failed)
        .set(
            JobColumn::Error,
            serde_json::to_string(&error).unwrap_or_default(),
        );
    fail.stamp = Some(JobColumn::FinishedAtMs);
    fail = fail.event(status_event(
        JobStatus::Failed,
        Some(error),
        row.attempts,
        &row.backend,
    ));
    match write(jobs, &row.id, fail).await {
        Ok(failed) => {
            if failed.is_some() {
                metrics::counter!(crate::metrics::FINISHED, "status" => "failed").increment(1);
            }
            failed.is_some()
        }
        Err(error) => {
            tracing::warn!(job_id = %row.id, error = %error, "failing a corrupt job failed");
            false
        }
    }
}
