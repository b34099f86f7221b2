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
//! within the grace period and hands back the rest. Every one of those moves is a named
//! [`Transition`] of [`crate::lifecycle`].

pub mod run;

use std::sync::Arc;
use std::time::Duration;

use easel_proto::jobs::v1::{JobError, JobStatus, job_event};
use easel_runtime::Shutdown;
use easel_runtime::telemetry::propagation;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::run::Outcome;
use crate::db::{self, Guard};
use crate::error::Result;
use crate::events::HubMessage;
use crate::job::Job;
use crate::lifecycle::{self, Transition, deadline_exceeded};
use crate::model::millis;
use crate::queue::Delivery;
use crate::service::Jobs;

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
    job: Job,
    /// The attempt's number (the job's `attempts` once RUNNING, one less before).
    number: i32,
    /// Whether a backend accepted the run (the job is RUNNING).
    running: bool,
    /// Artifacts this attempt stored.
    stored: Vec<String>,
}

impl Attempt {
    fn run_id(&self) -> String {
        self.job.run_id(self.number)
    }

    /// The guard of this attempt's writes: RUNNING at its number once a backend accepted the
    /// run, PENDING under its lease before.
    fn guard(&self) -> Guard {
        if self.running {
            Guard::held(&self.consumer, self.number)
        } else {
            Guard::waiting(&self.consumer)
        }
    }

    /// Applies a transition while the attempt holds the job, keeping the job as it is now.
    /// `Ok(false)` once the job is not the attempt's any more.
    async fn transition(&mut self, transition: Result<Transition>) -> Result<bool> {
        match lifecycle::apply(&self.jobs, self.job.id.as_str(), transition?).await? {
            Some(moved) => {
                self.job = moved.job;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// [`Attempt::transition`] where a failed write is only logged: the lease, not this
    /// write, decides whether the job is still ours. False once it is not.
    async fn change(&mut self, transition: Result<Transition>) -> bool {
        self.transition(transition).await.unwrap_or_else(|error| {
            tracing::warn!(job_id = %self.job.id, error = %error, "updating a running job failed");
            true
        })
    }

    /// Ends the job with a transition of [`lifecycle::finish`]; whether the guard held.
    async fn finish(&self, transition: Result<Transition>) -> bool {
        finish_logged(&self.jobs, self.job.id.as_str(), transition).await
    }

    /// Stops this attempt's run on its backend; only a run a backend accepted is stopped by
    /// id: before that, the dropped bridge call ends it, and the id may already be the next
    /// holder's.
    async fn interrupt(&self) {
        if self.running {
            self.jobs.interrupt(&self.run_id()).await;
        }
    }

    /// Deletes what this attempt stored.
    async fn discard_outputs(&mut self) {
        let stored = std::mem::take(&mut self.stored);
        run::delete_artifacts(self, Some(&stored)).await;
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
        if delivery.deliveries > 1 {
            metrics::counter!(crate::metrics::RECLAIMS).increment(1);
        }
        let now = millis(self.jobs.clock.now());
        let waited = (now - delivery.message.enqueued_at_ms).max(0);
        metrics::histogram!(crate::metrics::QUEUE_WAIT).record(waited as f64 / 1000.0);
        let Some(job) = self.read_claimed(&delivery).await else {
            return;
        };
        if self.settle(&job, now).await {
            self.ack(&delivery).await;
            return;
        }
        // Taking can only fail when the job was cancelled, or taken by another worker, between
        // our read and our update (or the write failed: then the entry is reclaimed later).
        match self.take(&job, now).await {
            Ok(Some(attempt)) => self.run_attempt(attempt, delivery, abort).await,
            Ok(None) => self.ack(&delivery).await,
            Err(error) => tracing::warn!(error = %error, "taking a job failed"),
        }
    }

    /// The job a delivery names; `None` when there is nothing to run (the delivery is acked
    /// unless a retry may find it). A record that does not decode fails the job, naming why.
    async fn read_claimed(&self, delivery: &Delivery) -> Option<Job> {
        let row = match db::find(&self.jobs.db, &delivery.message.job_id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                tracing::warn!("a queued job has no record; dropping the entry");
                self.ack(delivery).await;
                return None;
            }
            Err(error) => {
                // Leave the entry: it is reclaimed after the visibility timeout.
                tracing::warn!(error = %error, "reading a claimed job failed");
                return None;
            }
        };
        match Job::try_from(row.clone()) {
            Ok(job) => Some(job),
            Err(error) => {
                tracing::error!(error = %error, "a claimed job's record is corrupt; failing it");
                lifecycle::fail_corrupt(&self.jobs, &row, &error.to_string()).await;
                self.ack(delivery).await;
                None
            }
        }
    }

    /// Settles a claimed job that must not run: over, held by another worker, past its start
    /// deadline, or out of attempts. True when it was one of those.
    async fn settle(&self, job: &Job, now_ms: i64) -> bool {
        if job.is_terminal() {
            return true;
        }
        if job.is_leased_at(now_ms) {
            // Another worker holds it (running, or waiting for a backend); its lease (and the
            // reconciler) cover its failure.
            return true;
        }
        let id = job.id.as_str();
        if job.status == JobStatus::Pending && job.start_deadline_passed(now_ms) {
            let expire = Transition::expire(
                Guard::from(&[JobStatus::Pending]),
                job,
                deadline_exceeded(None),
            );
            finish_logged(&self.jobs, id, expire).await;
            return true;
        }
        if job.attempts >= job.max_attempts {
            finish_logged(&self.jobs, id, Transition::give_up(job, now_ms)).await;
            return true;
        }
        false
    }

    /// Takes the job under this worker's lease (see [`Transition::take`]) for its next attempt,
    /// stopping what an earlier attempt left behind; `None` when another took it first.
    async fn take(&self, job: &Job, now_ms: i64) -> Result<Option<Attempt>> {
        // A RUNNING job whose worker stopped: its run may still be on a backend.
        let orphan = (job.status == JobStatus::Running).then(|| job.run_id(job.attempts));
        let lease_until = now_ms + lease_ms(&self.settings);
        let take = Transition::take(job, &self.consumer, lease_until, now_ms);
        let Some(moved) = lifecycle::apply(&self.jobs, job.id.as_str(), take).await? else {
            return Ok(None);
        };
        let attempt = Attempt {
            jobs: self.jobs.clone(),
            settings: self.settings.clone(),
            consumer: self.consumer.clone(),
            number: moved.job.attempts + 1,
            job: moved.job,
            running: false,
            stored: Vec::new(),
        };
        tracing::debug!(attempt = attempt.number, "job taken");
        if let Some(orphan) = orphan {
            run::stop_orphaned_run(&attempt, &orphan).await;
        }
        if attempt.job.attempts > 0 || attempt.job.lost_runs > 0 {
            // Outputs of an earlier run that died before finishing must not survive it.
            run::delete_artifacts(&attempt, None).await;
        }
        Ok(Some(attempt))
    }

    /// Runs a taken attempt with its heartbeat, and concludes it.
    async fn run_attempt(
        &self,
        mut attempt: Attempt,
        delivery: Delivery,
        abort: CancellationToken,
    ) {
        metrics::gauge!(crate::metrics::IN_PROGRESS).increment(1.0);
        let lost = CancellationToken::new();
        let heartbeat = tokio::spawn(heartbeat(
            self.jobs.clone(),
            self.settings.clone(),
            self.consumer.clone(),
            attempt.job.id.to_string(),
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
        match outcome {
            None => self.hand_back(attempt).await,
            Some(Outcome::Lost) => {
                attempt.interrupt().await;
                attempt.discard_outputs().await;
                tracing::info!("job left this worker (cancelled or taken over)");
            }
            Some(Outcome::Expired) => {
                let error = deadline_exceeded(Some("no backend could take it"));
                attempt
                    .finish(Transition::expire(attempt.guard(), &attempt.job, error))
                    .await;
            }
            Some(Outcome::Succeeded { outputs }) => {
                let succeed = Transition::succeed(attempt.guard(), &attempt.job, outputs);
                if !attempt.finish(succeed).await {
                    attempt.discard_outputs().await;
                }
            }
            Some(Outcome::Failed { error, backend }) => {
                self.failed(attempt, error, backend).await;
            }
        }
        self.ack(&delivery).await;
    }

    /// Shutting down: stops the run and hands the job back without using up an attempt.
    async fn hand_back(&self, mut attempt: Attempt) {
        attempt.interrupt().await;
        attempt.discard_outputs().await;
        // Watchers hear of it when something they saw changes.
        let visible = attempt.running || attempt.job.pending_reason.is_some();
        let hand_back = Transition::hand_back(attempt.guard(), attempt.number, visible);
        if attempt.change(Ok(hand_back)).await {
            self.requeue(&attempt.job, Duration::ZERO).await;
        }
        tracing::info!("job returned to the queue at shutdown");
    }

    /// The attempt failed: back to the queue with backoff while it is retryable and attempts
    /// are left, else the job fails. A failure before a backend accepted the run (e.g. the
    /// graph was refused) spends the attempt too.
    async fn failed(&self, mut attempt: Attempt, error: JobError, backend: String) {
        metrics::counter!(crate::metrics::FAILURES, "reason" => error.code.clone(), "retryable" => error.retryable.to_string()).increment(1);
        attempt.discard_outputs().await;
        let (guard, number) = (attempt.guard(), attempt.number);
        if !(error.retryable && number < attempt.job.max_attempts) {
            tracing::info!(code = %error.code, backend = %backend, retryable = error.retryable, "job failed");
            attempt
                .finish(Transition::fail(guard, &attempt.job, number, error))
                .await;
            return;
        }
        let retry = Transition::retry(guard, &attempt.job, number, &error, &backend);
        if attempt.change(retry).await {
            let delay = backoff(&self.settings, u32::try_from(number).unwrap_or(1));
            metrics::counter!(crate::metrics::RETRIES).increment(1);
            tracing::info!(code = %error.code, backend = %backend, delay_ms = delay.as_millis() as u64, "run failed, retrying");
            self.requeue(&attempt.job, delay).await;
        }
    }

    async fn requeue(&self, job: &Job, delay: Duration) {
        let enqueued_at_ms =
            millis(self.jobs.clock.now()) + i64::try_from(delay.as_millis()).unwrap_or(0);
        let message = job.queue_message(enqueued_at_ms);
        if let Err(error) = self.jobs.queue.enqueue(&message, delay).await {
            tracing::warn!(job_id = %job.id, error = %error, "re-enqueue failed; the reconciler will retry");
        }
    }
}

/// A lease's length in milliseconds.
fn lease_ms(settings: &WorkerSettings) -> i64 {
    i64::try_from(settings.visibility_timeout.as_millis()).unwrap_or(60_000)
}

/// [`lifecycle::finish`] of a transition that could not be built is logged.
async fn finish_logged(jobs: &Jobs, job_id: &str, transition: Result<Transition>) -> bool {
    match transition {
        Ok(transition) => lifecycle::finish(jobs, job_id, transition).await,
        Err(error) => {
            tracing::warn!(job_id, error = %error, "finishing a job failed");
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
                let until = millis(jobs.clock.now()) + lease_ms(&settings);
                // Lease first, then the entry: the entry never goes idle before the lease lapses.
                let renew = Transition::renew_lease(Guard::leased(&consumer), until);
                match lifecycle::apply(&jobs, &job_id, renew).await {
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
