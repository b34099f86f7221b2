//! The worker pool: claim a queue entry, take the job (a conditional update that gives this
//! worker its lease, so it never runs twice at once), ask the bridge to run it with a
//! heartbeat, store its outputs, finish it, ack.
//!
//! The job stays PENDING until a backend accepts the run (the bridge's `queued`); only then
//! is it RUNNING and an attempt spent. While no backend can take it, it is PENDING with the
//! reason `waiting_for_backend` (an event tells watchers) and the worker keeps asking, until a
//! backend comes back or the job's start deadline passes. A run lost with its backend (the
//! backend died or lost the prompt) is not the run's failure: the job goes back to waiting
//! without spending the attempt, up to `max_attempts` such losses (a job that keeps losing
//! its backend may be what brings it down, so beyond that losses count). Other retryable
//! failures go back to the queue with backoff and jitter; a shutdown lets running jobs finish
//! within the grace period and hands back the rest.

pub mod run;

use std::sync::Arc;
use std::time::Duration;

use easel_proto::jobs::v1::{JobError, JobOutput, JobStatus, job_event};
use easel_runtime::Shutdown;
use easel_runtime::telemetry::propagation;
use sea_orm::sea_query::{Expr, SimpleExpr};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::run::Outcome;
use crate::db::{self, Guard, JobColumn, JobRow};
use crate::events::HubMessage;
use crate::model::{is_terminal, millis, status_from_db};
use crate::queue::{Delivery, QueueMessage};
use crate::service::{Jobs, status_event};

/// Settings of the workers.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Lease of a RUNNING job and idle limit of its queue entry.
    pub visibility_timeout: Duration,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Longest retry delay.
    pub retry_backoff_max: Duration,
    /// Longest run.
    pub run_timeout: Duration,
    /// Longest blocking queue read.
    pub claim_block: Duration,
    /// Jobs run at once.
    pub concurrency: usize,
}

/// One attempt at one job, owned by one worker: PENDING under its lease until a backend
/// accepts the run, then RUNNING.
#[derive(Debug)]
pub struct Attempt {
    jobs: Arc<Jobs>,
    settings: WorkerSettings,
    consumer: String,
    row: JobRow,
    /// The attempt's number (the row's `attempts` once RUNNING, one less before).
    number: i32,
    /// Whether a backend accepted the run (the job is RUNNING).
    running: bool,
    /// Artifacts this attempt stored.
    stored: Vec<String>,
}

impl Attempt {
    fn run_id(&self) -> String {
        crate::model::run_id(&self.row.id, self.number, self.row.lost_runs)
    }

    /// Applies changes (and an event) while the attempt holds the job: publishes the event and
    /// keeps the updated row. `Ok(false)` once the job is not the attempt's any more.
    async fn transition(
        &mut self,
        changes: Vec<(JobColumn, SimpleExpr)>,
        event: Option<job_event::Kind>,
    ) -> Result<bool, crate::error::JobsError> {
        let now = millis(self.jobs.clock.now());
        let held = run::held(self);
        match db::transition(&self.jobs.db, &self.row.id, &held, changes, event, now).await? {
            Some((row, event)) => {
                if let Some(event) = event {
                    self.jobs.publish(&event).await;
                }
                self.row = row;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Attempt::transition`] where a failed write is only logged: the lease, not this
    /// write, decides whether the job is still ours. False once it is not.
    async fn change(
        &mut self,
        changes: Vec<(JobColumn, SimpleExpr)>,
        event: Option<job_event::Kind>,
    ) -> bool {
        self.transition(changes, event).await.unwrap_or_else(|error| {
            tracing::warn!(job_id = %self.row.id, error = %error, "updating a running job failed");
            true
        })
    }
}

/// A worker process's pool.
#[derive(Debug)]
pub struct Worker {
    jobs: Arc<Jobs>,
    settings: WorkerSettings,
    consumer: String,
}

/// The retry delay before attempt `attempt + 1`: exponential, capped, with "equal jitter"
/// (half fixed, half random) so retries of many jobs spread out.
pub fn backoff(settings: &WorkerSettings, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(20);
    let full = settings
        .retry_backoff
        .saturating_mul(1 << exponent)
        .min(settings.retry_backoff_max);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

impl Worker {
    /// A pool with a fresh consumer name.
    pub fn new(jobs: Arc<Jobs>, settings: WorkerSettings) -> Worker {
        let consumer = format!(
            "worker-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Worker {
            jobs,
            settings,
            consumer,
        }
    }

    /// Claims and runs jobs until `shutdown`, then drains within its grace period.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let semaphore = Arc::new(Semaphore::new(self.settings.concurrency));
        let tracker = TaskTracker::new();
        let abort = CancellationToken::new();
        tracing::info!(consumer = %self.consumer, concurrency = self.settings.concurrency, "worker started");
        loop {
            let permit = tokio::select! {
                () = shutdown.triggered() => break,
                permit = semaphore.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let claimed = tokio::select! {
                () = shutdown.triggered() => break,
                claimed = self.jobs.queue.claim(&self.consumer, self.settings.claim_block) => claimed,
            };
            match claimed {
                Ok(Some(delivery)) => {
                    let worker = self.clone();
                    let abort = abort.child_token();
                    tracker.spawn(async move {
                        let _permit = permit;
                        worker.handle(delivery, abort).await;
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "claiming from the queue failed");
                    tokio::select! {
                        () = shutdown.triggered() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
        tracker.close();
        // Running jobs get most of the grace period; the rest goes back to the queue.
        let finish = shutdown.grace().mul_f64(0.6);
        if tokio::time::timeout(finish, tracker.wait()).await.is_err() {
            tracing::info!(
                running = tracker.len(),
                "grace period over, returning jobs to the queue"
            );
            abort.cancel();
            let _ = tokio::time::timeout(shutdown.grace().mul_f64(0.3), tracker.wait()).await;
        }
        tracing::info!(consumer = %self.consumer, "worker stopped");
    }

    async fn ack(&self, delivery: &Delivery) {
        if let Err(error) = self.jobs.queue.ack(delivery).await {
            tracing::warn!(job_id = %delivery.message.job_id, error = %error, "ack failed; the entry will be redelivered");
        }
    }

    /// Handles one delivery, inside a span that continues the submit's trace.
    pub async fn handle(&self, delivery: Delivery, abort: CancellationToken) {
        let span = tracing::info_span!(
            "job.run",
            otel.name = "job.run",
            job_id = %delivery.message.job_id,
            delivery = delivery.deliveries,
        );
        propagation::set_parent_from(&span, &delivery.message.trace);
        self.handle_inner(delivery, abort).instrument(span).await;
    }

    async fn handle_inner(&self, delivery: Delivery, abort: CancellationToken) {
        let jobs = &self.jobs;
        if delivery.deliveries > 1 {
            metrics::counter!(crate::metrics::RECLAIMS).increment(1);
        }
        let now = jobs.clock.now();
        let waited = (millis(now) - delivery.message.enqueued_at_ms).max(0);
        metrics::histogram!(crate::metrics::QUEUE_WAIT).record(waited as f64 / 1000.0);
        let row = match db::find(&jobs.db, &delivery.message.job_id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                tracing::warn!("a queued job has no record; dropping the entry");
                self.ack(&delivery).await;
                return;
            }
            Err(error) => {
                // Leave the entry: it is reclaimed after the visibility timeout.
                tracing::warn!(error = %error, "reading a claimed job failed");
                return;
            }
        };
        let status = status_from_db(row.status);
        let now_ms = millis(now);
        if is_terminal(status) {
            self.ack(&delivery).await;
            return;
        }
        if row.lease_expires_ms.is_some_and(|until| until >= now_ms) {
            // Another worker holds it (running, or waiting for a backend); its lease (and the
            // reconciler) cover its failure.
            self.ack(&delivery).await;
            return;
        }
        if status == JobStatus::Pending
            && row
                .start_deadline_ms
                .is_some_and(|deadline| deadline < now_ms)
        {
            let error = JobError {
                code: "DEADLINE_EXCEEDED".into(),
                message: "the job did not start before its start timeout".into(),
                ..JobError::default()
            };
            finish(
                jobs,
                &row,
                Guard::from(&[JobStatus::Pending]),
                JobStatus::Expired,
                Some(error),
                None,
                Vec::new(),
            )
            .await;
            self.ack(&delivery).await;
            return;
        }
        if row.attempts >= row.max_attempts {
            let mut error: JobError = row
                .error
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default();
            error.message = format!("gave up after {} attempts: {}", row.attempts, error.message);
            if error.code.is_empty() {
                error.code = "UNAVAILABLE".into();
            }
            let mut guard = Guard::from(&[JobStatus::Pending]);
            guard.or_lease_lapsed_before = Some(now_ms);
            finish(
                jobs,
                &row,
                guard,
                JobStatus::Failed,
                Some(error),
                None,
                Vec::new(),
            )
            .await;
            self.ack(&delivery).await;
            return;
        }
        let number = row.attempts + 1;
        // A RUNNING job whose worker stopped: its run may still be on a backend.
        let orphan = (status == JobStatus::Running)
            .then(|| crate::model::run_id(&row.id, row.attempts, row.lost_runs));
        let lease_until =
            now_ms + i64::try_from(self.settings.visibility_timeout.as_millis()).unwrap_or(60_000);
        // Take the job under a lease, still PENDING: it becomes RUNNING (and spends its attempt)
        // when a backend accepts the run. A RUNNING job whose worker stopped renewing its lease
        // goes back to PENDING (its attempt stays spent), which watchers are told.
        let (guard, event) = if status == JobStatus::Running {
            let guard = Guard {
                or_lease_lapsed_before: Some(now_ms),
                ..Guard::default()
            };
            let event = status_event(JobStatus::Pending, None, row.attempts, &row.backend);
            (guard, Some(event))
        } else {
            let guard = Guard {
                statuses: vec![JobStatus::Pending],
                or_lease_lapsed_before: Some(now_ms),
                ..Guard::default()
            };
            (guard, None)
        };
        let changes = vec![
            (
                JobColumn::Status,
                Expr::value(crate::model::status_to_db(JobStatus::Pending)),
            ),
            (JobColumn::LeaseOwner, Expr::value(self.consumer.clone())),
            (JobColumn::LeaseExpiresMs, Expr::value(lease_until)),
            (JobColumn::Progress, Expr::value(Option::<String>::None)),
        ];
        let taken = db::transition(&jobs.db, &row.id, &guard, changes, event, now_ms).await;
        let row = match taken {
            Ok(Some((row, event))) => {
                if let Some(event) = event {
                    jobs.publish(&event).await;
                }
                row
            }
            Ok(None) => {
                // Cancelled, or taken by another worker, between our read and our update.
                self.ack(&delivery).await;
                return;
            }
            Err(error) => {
                tracing::warn!(error = %error, "taking a job failed");
                return;
            }
        };
        tracing::debug!(attempt = number, "job taken");
        let mut attempt = Attempt {
            jobs: jobs.clone(),
            settings: self.settings.clone(),
            consumer: self.consumer.clone(),
            row,
            number,
            running: false,
            stored: Vec::new(),
        };
        if let Some(orphan) = orphan {
            run::stop_orphaned_run(&attempt, &orphan).await;
        }
        if attempt.row.attempts > 0 || attempt.row.lost_runs > 0 {
            // Outputs of an earlier run that died before finishing must not survive it.
            run::delete_artifacts(&attempt, None).await;
        }
        metrics::gauge!(crate::metrics::IN_PROGRESS).increment(1.0);
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            jobs.clone(),
            self.settings.clone(),
            self.consumer.clone(),
            attempt.row.id.clone(),
            delivery.clone(),
            lost.clone(),
        ));
        let outcome = tokio::select! {
            outcome = run::run(&mut attempt) => Some(outcome),
            () = lost.cancelled() => Some(Outcome::Lost),
            () = abort.cancelled() => None,
        };
        heartbeat.abort();
        metrics::gauge!(crate::metrics::IN_PROGRESS).decrement(1.0);
        self.conclude(attempt, outcome, &delivery).await;
    }

    async fn conclude(&self, mut attempt: Attempt, outcome: Option<Outcome>, delivery: &Delivery) {
        let jobs = &self.jobs;
        let held = run::held(&attempt);
        match outcome {
            None => {
                // Shutting down: stop the run, hand the job back without using up an attempt.
                // (A run no backend accepted yet ends with its dropped bridge call.)
                if attempt.running {
                    jobs.interrupt(&attempt.row_at_attempt()).await;
                }
                run::delete_artifacts(&attempt, Some(&attempt.stored)).await;
                let changes = vec![
                    (
                        JobColumn::Status,
                        Expr::value(crate::model::status_to_db(JobStatus::Pending)),
                    ),
                    (JobColumn::Attempts, Expr::value(attempt.number - 1)),
                    (JobColumn::LeaseOwner, Expr::value(Option::<String>::None)),
                    (JobColumn::LeaseExpiresMs, Expr::value(Option::<i64>::None)),
                    (JobColumn::Progress, Expr::value(Option::<String>::None)),
                    (
                        JobColumn::PendingReason,
                        Expr::value(Option::<String>::None),
                    ),
                ];
                // Watchers hear of it when something they saw changes.
                let visible = attempt.running || attempt.row.pending_reason.is_some();
                let event =
                    visible.then(|| status_event(JobStatus::Pending, None, attempt.number - 1, ""));
                if attempt.change(changes, event).await {
                    self.requeue(&attempt.row, Duration::ZERO).await;
                }
                self.ack(delivery).await;
                tracing::info!("job returned to the queue at shutdown");
            }
            Some(Outcome::Lost) => {
                // Only a run a backend accepted is stopped by id: before that, the dropped
                // bridge call ends it, and the id may already be the next holder's.
                if attempt.running {
                    jobs.interrupt(&attempt.row_at_attempt()).await;
                }
                run::delete_artifacts(&attempt, Some(&attempt.stored)).await;
                self.ack(delivery).await;
                tracing::info!("job left this worker (cancelled or taken over)");
            }
            Some(Outcome::Expired) => {
                let error = JobError {
                    code: "DEADLINE_EXCEEDED".into(),
                    message: "the job did not start before its start timeout (no backend \
                              could take it)"
                        .into(),
                    ..JobError::default()
                };
                finish(
                    jobs,
                    &attempt.row,
                    held,
                    JobStatus::Expired,
                    Some(error),
                    None,
                    Vec::new(),
                )
                .await;
                self.ack(delivery).await;
            }
            Some(Outcome::Succeeded { outputs }) => {
                // The outputs and the final status in one transaction: watchers get every
                // output event, then SUCCEEDED, from one commit.
                let finished = finish(
                    jobs,
                    &attempt.row,
                    held,
                    JobStatus::Succeeded,
                    None,
                    Some(outputs),
                    Vec::new(),
                )
                .await;
                if !finished {
                    run::delete_artifacts(&attempt, Some(&attempt.stored)).await;
                }
                self.ack(delivery).await;
            }
            Some(Outcome::Failed { error, backend }) => {
                metrics::counter!(crate::metrics::FAILURES, "reason" => error.code.clone(), "retryable" => error.retryable.to_string()).increment(1);
                run::delete_artifacts(&attempt, Some(&attempt.stored)).await;
                let more = attempt.number < attempt.row.max_attempts;
                // A failure before a backend accepted the run (e.g. the graph was refused)
                // spends the attempt too: the row is brought to it either way.
                let spent = (JobColumn::Attempts, Expr::value(attempt.number));
                if error.retryable && more {
                    let mut excluded: Vec<String> =
                        serde_json::from_str(&attempt.row.excluded_backends).unwrap_or_default();
                    if !backend.is_empty() && !excluded.contains(&backend) {
                        excluded.push(backend.clone());
                    }
                    let changes = vec![
                        (
                            JobColumn::Status,
                            Expr::value(crate::model::status_to_db(JobStatus::Pending)),
                        ),
                        spent,
                        (
                            JobColumn::Error,
                            Expr::value(serde_json::to_string(&error).ok()),
                        ),
                        (
                            JobColumn::ExcludedBackends,
                            Expr::value(serde_json::to_string(&excluded).unwrap_or_default()),
                        ),
                        (JobColumn::LeaseOwner, Expr::value(Option::<String>::None)),
                        (JobColumn::LeaseExpiresMs, Expr::value(Option::<i64>::None)),
                        (JobColumn::Progress, Expr::value(Option::<String>::None)),
                        (
                            JobColumn::PendingReason,
                            Expr::value(Option::<String>::None),
                        ),
                    ];
                    let event = status_event(
                        JobStatus::Pending,
                        Some(error.clone()),
                        attempt.number,
                        &backend,
                    );
                    if attempt.change(changes, Some(event)).await {
                        let delay =
                            backoff(&self.settings, u32::try_from(attempt.number).unwrap_or(1));
                        metrics::counter!(crate::metrics::RETRIES).increment(1);
                        tracing::info!(code = %error.code, backend = %backend, delay_ms = delay.as_millis() as u64, "run failed, retrying");
                        self.requeue(&attempt.row, delay).await;
                    }
                } else {
                    tracing::info!(code = %error.code, backend = %backend, retryable = error.retryable, "job failed");
                    finish(
                        jobs,
                        &attempt.row_at_attempt(),
                        held,
                        JobStatus::Failed,
                        Some(error),
                        None,
                        vec![spent],
                    )
                    .await;
                }
                self.ack(delivery).await;
            }
        }
    }

    async fn requeue(&self, row: &JobRow, delay: Duration) {
        let message = QueueMessage {
            job_id: row.id.clone(),
            priority: u8::try_from(row.priority).unwrap_or_default(),
            trace: serde_json::from_str(&row.trace_context).unwrap_or_default(),
            enqueued_at_ms: millis(self.jobs.clock.now())
                + i64::try_from(delay.as_millis()).unwrap_or(0),
        };
        if let Err(error) = self.jobs.queue.enqueue(&message, delay).await {
            tracing::warn!(job_id = %row.id, error = %error, "re-enqueue failed; the reconciler will retry");
        }
    }
}

impl Attempt {
    /// The row as of this attempt (its run id, its attempt number in events).
    fn row_at_attempt(&self) -> JobRow {
        let mut row = self.row.clone();
        row.attempts = self.number;
        row
    }
}

/// Moves a job to a terminal status under `guard` (with its outputs, each an event before the
/// status change, and any `extra` changes), publishes it, records metrics and usage. Returns
/// whether the guard held.
///
/// A terminal job's progress is final: 100 % when it succeeded, none otherwise (a stale value
/// of the last step would read as a job stuck short of done).
pub async fn finish(
    jobs: &Arc<Jobs>,
    row: &JobRow,
    guard: Guard,
    status: JobStatus,
    error: Option<JobError>,
    outputs: Option<Vec<JobOutput>>,
    extra: Vec<(JobColumn, SimpleExpr)>,
) -> bool {
    let now = millis(jobs.clock.now());
    let progress = (status == JobStatus::Succeeded)
        .then(|| serde_json::to_string(&crate::service::final_progress()).ok())
        .flatten();
    let mut changes = vec![
        (
            JobColumn::Status,
            Expr::value(crate::model::status_to_db(status)),
        ),
        (JobColumn::FinishedAtMs, Expr::value(now)),
        (JobColumn::LeaseOwner, Expr::value(Option::<String>::None)),
        (JobColumn::LeaseExpiresMs, Expr::value(Option::<i64>::None)),
        (JobColumn::Progress, Expr::value(progress)),
        (
            JobColumn::PendingReason,
            Expr::value(Option::<String>::None),
        ),
    ];
    changes.extend(extra);
    if let Some(error) = &error {
        changes.push((
            JobColumn::Error,
            Expr::value(serde_json::to_string(error).ok()),
        ));
    }
    let mut events = Vec::new();
    if let Some(outputs) = outputs {
        changes.push((
            JobColumn::Outputs,
            Expr::value(serde_json::to_string(&outputs).unwrap_or_else(|_| "[]".into())),
        ));
        events.extend(outputs.into_iter().map(job_event::Kind::Output));
    }
    events.push(status_event(status, error, row.attempts, &row.backend));
    // Output links are signed once, while the transaction runs, for every live watcher; the
    // stored events stay unsigned (links expire) and watchers reading the table sign their own.
    let mut signed: Vec<JobOutput> = events
        .iter()
        .filter_map(|event| match event {
            job_event::Kind::Output(output) => Some(output.clone()),
            _ => None,
        })
        .collect();
    let (stored, ()) = tokio::join!(
        db::transition_with_events(&jobs.db, &row.id, &guard, changes, events, now),
        jobs.sign_outputs(&row.owner, &mut signed),
    );
    match stored {
        Ok(Some((row, mut events))) => {
            let mut signed = signed.into_iter();
            for event in &mut events {
                if let Some(job_event::Kind::Output(output)) = &mut event.kind
                    && let Some(with_link) = signed.next()
                {
                    *output = with_link;
                }
            }
            jobs.hub.publish_all(&events).await;
            let label = status
                .as_str_name()
                .trim_start_matches("JOB_STATUS_")
                .to_ascii_lowercase();
            metrics::counter!(crate::metrics::FINISHED, "status" => label.clone()).increment(1);
            if let Some(started) = row.started_at_ms {
                let seconds = (now - started).max(0) as f64 / 1000.0;
                metrics::histogram!(crate::metrics::JOB_DURATION, "status" => label)
                    .record(seconds);
                jobs.clients.record_usage(&row.owner, 0, seconds);
            }
            tracing::info!(job_id = %row.id, status = ?status, "job finished");
            true
        }
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(job_id = %row.id, error = %error, "finishing a job failed");
            false
        }
    }
}

/// Keeps the attempt's lease and queue entry alive; fires `lost` when the job stops being
/// ours (cancelled, or the lease could not be renewed).
async fn heartbeat(
    jobs: Arc<Jobs>,
    settings: WorkerSettings,
    consumer: String,
    job_id: String,
    delivery: Delivery,
    lost: CancellationToken,
) {
    let mut subscription = jobs.hub.subscribe(&job_id);
    let mut interval = tokio::time::interval(settings.visibility_timeout / 3);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = millis(jobs.clock.now());
                let until = now + i64::try_from(settings.visibility_timeout.as_millis()).unwrap_or(60_000);
                // Lease first, then the entry: the entry never goes idle before the lease lapses.
                let renewed = db::transition(
                    &jobs.db,
                    &job_id,
                    &Guard::leased(&consumer),
                    vec![(JobColumn::LeaseExpiresMs, Expr::value(until))],
                    None,
                    now,
                )
                .await;
                match renewed {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        lost.cancel();
                        return;
                    }
                    Err(error) => tracing::warn!(job_id, error = %error, "renewing a lease failed"),
                }
                if let Err(error) = jobs.queue.touch(&consumer, &delivery).await {
                    tracing::warn!(job_id, error = %error, "touching a queue entry failed");
                }
            }
            message = subscription.recv() => match message {
                Some(HubMessage::Event(event)) => {
                    if let Some(job_event::Kind::StatusChange(change)) = &event.kind
                        && (change.status == JobStatus::Cancelled as i32
                            || change.status == JobStatus::Expired as i32)
                    {
                        lost.cancel();
                        return;
                    }
                }
                Some(HubMessage::Resync) => {}
                None => return,
            }
        }
    }
}
