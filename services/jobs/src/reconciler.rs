//! The reconciler: the database is the truth, the queue a copy that can be lost. Periodically
//! it re-enqueues PENDING jobs the queue does not know (e.g. Redis restarted empty), hands
//! RUNNING jobs whose worker stopped renewing its lease back to the queue, expires PENDING
//! jobs past their start deadline, refreshes the queue-depth gauges and drops old
//! idempotency keys. Several reconcilers may run at once: every action is idempotent.

use std::sync::Arc;
use std::time::Duration;

use easel_proto::jobs::v1::JobStatus;
use easel_runtime::Shutdown;

use crate::db::{self, Guard, JobRow, idempotency};
use crate::error::Result;
use crate::job::Job;
use crate::lifecycle::{self, Transition, deadline_exceeded};
use crate::model::millis;
use crate::queue::{PRIORITY_CLASSES, QueueMessage};
use crate::service::Jobs;

/// Jobs examined per pass and kind.
const BATCH: u64 = 500;

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pass {
    /// PENDING jobs re-enqueued.
    pub requeued_pending: usize,
    /// RUNNING jobs with a lapsed lease returned to the queue.
    pub requeued_running: usize,
    /// PENDING jobs expired.
    pub expired: usize,
}

/// Runs passes every `interval`, and at once when the queue comes back after an outage, until
/// `shutdown`.
pub async fn run(jobs: Arc<Jobs>, interval: Duration, grace: Duration, shutdown: Shutdown) {
    loop {
        match reconcile(&jobs, grace).await {
            Ok(pass) if pass != Pass::default() => {
                tracing::info!(
                    requeued_pending = pass.requeued_pending,
                    requeued_running = pass.requeued_running,
                    expired = pass.expired,
                    "reconciler pass"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "reconciler pass failed"),
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = tokio::time::sleep(interval) => {}
            () = jobs.queue.recovered() => {
                tracing::info!("the queue is back; reconciling now");
            }
        }
    }
}

/// The queue entry of a row the reconciler found; a corrupt row is enqueued without its trace
/// (the worker that claims it fails it, naming why).
fn queue_message(row: JobRow, enqueued_at_ms: i64) -> QueueMessage {
    let id = row.id.clone();
    let priority = u8::try_from(row.priority).unwrap_or_default();
    match Job::try_from(row) {
        Ok(job) => job.queue_message(enqueued_at_ms),
        Err(error) => {
            tracing::warn!(job_id = %id, error = %error, "requeueing a job whose record is corrupt");
            QueueMessage {
                job_id: id,
                priority,
                trace: Default::default(),
                enqueued_at_ms,
            }
        }
    }
}

async fn requeue_missing(jobs: &Jobs, rows: Vec<JobRow>) -> Result<usize> {
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = rows.iter().map(|row| row.id.clone()).collect();
    let known = jobs.queue.contains(&ids).await?;
    let mut requeued = 0;
    for (row, known) in rows.into_iter().zip(known) {
        if known {
            continue;
        }
        let message = queue_message(row, millis(jobs.clock.now()));
        jobs.queue.enqueue(&message, Duration::ZERO).await?;
        requeued += 1;
    }
    Ok(requeued)
}

/// One pass; jobs must have been quiet for `grace` before they count as lost.
pub async fn reconcile(jobs: &Arc<Jobs>, grace: Duration) -> Result<Pass> {
    let now = millis(jobs.clock.now());
    let quiet_since = now - i64::try_from(grace.as_millis()).unwrap_or(i64::MAX / 2);
    let mut pass = Pass::default();

    for row in db::pending_past_deadline(&jobs.db, now, BATCH).await? {
        let id = row.id.clone();
        let guard = Guard::from(&[JobStatus::Pending]);
        let expire = match Job::try_from(row) {
            Ok(job) => Transition::expire(guard, &job, deadline_exceeded(None)),
            Err(error) => Err(error),
        };
        let expired = match expire {
            Ok(expire) => lifecycle::finish(jobs, &id, expire).await,
            Err(error) => {
                // The worker that claims it fails it, naming why.
                tracing::warn!(job_id = %id, error = %error, "cannot expire a job");
                false
            }
        };
        if expired {
            pass.expired += 1;
            metrics::counter!(crate::metrics::RECONCILER_ACTIONS, "action" => "expire")
                .increment(1);
        }
    }

    let pending = db::pending_changed_before(&jobs.db, quiet_since, BATCH).await?;
    pass.requeued_pending = requeue_missing(jobs, pending).await?;
    metrics::counter!(crate::metrics::RECONCILER_ACTIONS, "action" => "requeue_pending")
        .increment(pass.requeued_pending as u64);

    let lapsed = db::running_lease_lapsed(&jobs.db, quiet_since, BATCH).await?;
    pass.requeued_running = requeue_missing(jobs, lapsed).await?;
    metrics::counter!(crate::metrics::RECONCILER_ACTIONS, "action" => "requeue_running")
        .increment(pass.requeued_running as u64);

    let mut depth = [0i64; PRIORITY_CLASSES];
    for (priority, count) in db::pending_by_priority(&jobs.db).await? {
        if let Some(slot) = usize::try_from(priority)
            .ok()
            .and_then(|p| depth.get_mut(p))
        {
            *slot = count;
        }
    }
    for (class, count) in depth.iter().enumerate() {
        metrics::gauge!(crate::metrics::QUEUE_DEPTH, "priority" => class.to_string())
            .set(*count as f64);
    }
    idempotency::delete_expired(&jobs.db, now).await?;
    Ok(pass)
}
