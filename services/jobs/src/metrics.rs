//! The jobs service's metric names (Prometheus, via the `metrics` facade).

/// Gauge: jobs waiting in the queue, by `priority` class.
pub const QUEUE_DEPTH: &str = "easel_jobs_queue_depth";
/// Histogram: time from (re-)enqueue to claim, seconds.
pub const QUEUE_WAIT: &str = "easel_jobs_queue_wait_seconds";
/// Histogram: time from start to a terminal status, by `status`.
pub const JOB_DURATION: &str = "easel_jobs_duration_seconds";
/// Gauge: jobs this process is running.
pub const IN_PROGRESS: &str = "easel_jobs_in_progress";
/// Counter: jobs accepted.
pub const SUBMITTED: &str = "easel_jobs_submitted_total";
/// Counter: jobs that ended, by `status`.
pub const FINISHED: &str = "easel_jobs_finished_total";
/// Counter: failed runs, by `reason` (the error code) and `retryable`.
pub const FAILURES: &str = "easel_jobs_failures_total";
/// Counter: runs sent back to the queue for another attempt.
pub const RETRIES: &str = "easel_jobs_retries_total";
/// Counter: queue entries reclaimed from a silent worker.
pub const RECLAIMS: &str = "easel_jobs_reclaims_total";
/// Counter: reconciler actions, by `action`.
pub const RECONCILER_ACTIONS: &str = "easel_jobs_reconciler_actions_total";

/// Registers descriptions once.
pub fn describe() {
    metrics::describe_gauge!(QUEUE_DEPTH, "jobs waiting in the queue, by priority class");
    metrics::describe_histogram!(
        QUEUE_WAIT,
        metrics::Unit::Seconds,
        "time from enqueue to claim"
    );
    metrics::describe_histogram!(
        JOB_DURATION,
        metrics::Unit::Seconds,
        "time from start to end"
    );
    metrics::describe_gauge!(IN_PROGRESS, "jobs running in this process");
    metrics::describe_counter!(SUBMITTED, "jobs accepted");
    metrics::describe_counter!(FINISHED, "jobs that reached a terminal status");
    metrics::describe_counter!(FAILURES, "failed runs by reason");
    metrics::describe_counter!(RETRIES, "runs sent back for another attempt");
    metrics::describe_counter!(
        RECLAIMS,
        "queue entries reclaimed after the visibility timeout"
    );
    metrics::describe_counter!(RECONCILER_ACTIONS, "reconciler actions by kind");
}
