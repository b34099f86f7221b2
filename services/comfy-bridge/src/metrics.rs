//! The bridge's Prometheus series (served on the admin port's `/metrics`).

use std::time::Duration;

use crate::breaker::BreakerState;

/// Counter: HTTP calls to ComfyUI, by `backend`, `endpoint`, `status` ("error" when no answer).
pub const COMFY_REQUESTS: &str = "comfyui_requests_total";
/// Histogram: HTTP call latency to ComfyUI, by `backend`, `endpoint`.
pub const COMFY_DURATION: &str = "comfyui_request_duration_seconds";
/// Counter: ComfyUI failures, by `backend`, `reason`.
pub const COMFY_FAILURES: &str = "comfyui_failures_total";
/// Gauge: breaker state per `backend` (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "comfyui_breaker_state";
/// Counter: breaker transitions, by `backend`, `to`.
pub const BREAKER_TRANSITIONS: &str = "comfyui_breaker_transitions_total";
/// Gauge: total VRAM per `backend`, in bytes.
pub const VRAM_TOTAL: &str = "comfyui_vram_total_bytes";
/// Gauge: free VRAM per `backend`, in bytes.
pub const VRAM_FREE: &str = "comfyui_vram_free_bytes";
/// Gauge: runs in flight per `backend`.
pub const IN_FLIGHT: &str = "comfyui_in_flight";
/// Gauge: ComfyUI's own `queue_remaining` per `backend`.
pub const QUEUE_REMAINING: &str = "comfyui_queue_remaining";
/// Gauge: 1 when the last health check of `backend` passed.
pub const HEALTHY: &str = "comfyui_healthy";
/// Counter: finished runs, by `backend`, `outcome` (completed or the failure code).
pub const RUNS: &str = "bridge_runs_total";
/// Counter: reconciliations from `/queue` + `/history`, by `backend`, `result`.
pub const RECONCILIATIONS: &str = "bridge_reconciliations_total";
/// Histogram: a run's time from queued to its last event, by `outcome`.
pub const RUN_DURATION: &str = "bridge_run_duration_seconds";

/// Describes the series once at start.
pub fn describe() {
    metrics::describe_counter!(COMFY_REQUESTS, "HTTP calls to ComfyUI");
    metrics::describe_histogram!(
        COMFY_DURATION,
        metrics::Unit::Seconds,
        "HTTP call latency to ComfyUI"
    );
    metrics::describe_counter!(COMFY_FAILURES, "ComfyUI failures by reason");
    metrics::describe_gauge!(
        BREAKER_STATE,
        "circuit breaker: 0 closed, 1 open, 2 half-open"
    );
    metrics::describe_counter!(BREAKER_TRANSITIONS, "circuit breaker transitions");
    metrics::describe_gauge!(VRAM_TOTAL, metrics::Unit::Bytes, "total VRAM");
    metrics::describe_gauge!(VRAM_FREE, metrics::Unit::Bytes, "free VRAM");
    metrics::describe_gauge!(IN_FLIGHT, "runs sent to the backend and not finished");
    metrics::describe_gauge!(QUEUE_REMAINING, "ComfyUI's queue_remaining");
    metrics::describe_gauge!(HEALTHY, "1 when the last health check passed");
    metrics::describe_counter!(RUNS, "finished runs by outcome");
    metrics::describe_counter!(RECONCILIATIONS, "reconciliations from queue and history");
    metrics::describe_histogram!(
        RUN_DURATION,
        metrics::Unit::Seconds,
        "run time from queued to the last event"
    );
}

/// Records one HTTP call.
pub fn comfy_request(backend: &str, endpoint: &'static str, status: &str, elapsed: Duration) {
    metrics::counter!(COMFY_REQUESTS, "backend" => backend.to_string(), "endpoint" => endpoint, "status" => status.to_string())
        .increment(1);
    metrics::histogram!(COMFY_DURATION, "backend" => backend.to_string(), "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
}

/// Records a failure.
pub fn comfy_failure(backend: &str, reason: &'static str) {
    metrics::counter!(COMFY_FAILURES, "backend" => backend.to_string(), "reason" => reason)
        .increment(1);
}

/// Publishes a breaker state and, when it changed, the transition.
pub fn breaker(backend: &str, state: BreakerState, changed: bool) {
    metrics::gauge!(BREAKER_STATE, "backend" => backend.to_string()).set(state.gauge());
    if changed {
        metrics::counter!(BREAKER_TRANSITIONS, "backend" => backend.to_string(), "to" => state.as_str())
            .increment(1);
    }
}

/// Publishes a health check's figures.
pub fn health(backend: &str, healthy: bool, vram: Option<(u64, u64)>) {
    metrics::gauge!(HEALTHY, "backend" => backend.to_string()).set(if healthy { 1.0 } else { 0.0 });
    if let Some((total, free)) = vram {
        metrics::gauge!(VRAM_TOTAL, "backend" => backend.to_string()).set(total as f64);
        metrics::gauge!(VRAM_FREE, "backend" => backend.to_string()).set(free as f64);
    }
}

/// Publishes a backend's in-flight count.
pub fn in_flight(backend: &str, count: u32) {
    metrics::gauge!(IN_FLIGHT, "backend" => backend.to_string()).set(f64::from(count));
}

/// Publishes a backend's queue length.
pub fn queue_remaining(backend: &str, count: u32) {
    metrics::gauge!(QUEUE_REMAINING, "backend" => backend.to_string()).set(f64::from(count));
}

/// Records a finished run.
pub fn run_finished(backend: &str, outcome: &str, elapsed: Duration) {
    metrics::counter!(RUNS, "backend" => backend.to_string(), "outcome" => outcome.to_string())
        .increment(1);
    metrics::histogram!(RUN_DURATION, "outcome" => outcome.to_string())
        .record(elapsed.as_secs_f64());
}
