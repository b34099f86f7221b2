//! The storage service's metrics, on the shared Prometheus registry.

/// Counter: bytes written to the store by uploads.
pub const BYTES_WRITTEN: &str = "storage_bytes_written_total";
/// Counter: bytes sent by downloads (gRPC and signed links).
pub const BYTES_SERVED: &str = "storage_bytes_served_total";
/// Gauge: bytes of live artifacts (refreshed by the sweeper).
pub const STORED_BYTES: &str = "storage_stored_bytes";
/// Gauge: live artifacts (refreshed by the sweeper).
pub const STORED_ARTIFACTS: &str = "storage_stored_artifacts";
/// Counter: operations by `op` (put, get, stat, sign, delete, list, download).
pub const OPERATIONS: &str = "storage_operations_total";
/// Histogram: upload latency, from the header to the stored row.
pub const PUT_DURATION: &str = "storage_put_duration_seconds";
/// Counter: artifacts deleted by the sweeper.
pub const SWEEPER_DELETED: &str = "storage_sweeper_deleted_total";
/// Counter: failures by `reason`.
pub const ERRORS: &str = "storage_errors_total";

/// Describes the series once (the registry keeps the first description).
pub fn describe() {
    metrics::describe_counter!(
        BYTES_WRITTEN,
        metrics::Unit::Bytes,
        "bytes stored by uploads"
    );
    metrics::describe_counter!(
        BYTES_SERVED,
        metrics::Unit::Bytes,
        "bytes sent by downloads"
    );
    metrics::describe_gauge!(
        STORED_BYTES,
        metrics::Unit::Bytes,
        "bytes of live artifacts"
    );
    metrics::describe_gauge!(STORED_ARTIFACTS, "live artifacts");
    metrics::describe_counter!(OPERATIONS, "storage operations by kind");
    metrics::describe_histogram!(
        PUT_DURATION,
        metrics::Unit::Seconds,
        "upload latency until the row is stored"
    );
    metrics::describe_counter!(SWEEPER_DELETED, "expired artifacts deleted by the sweeper");
    metrics::describe_counter!(ERRORS, "storage failures by reason");
}

/// Counts one successful operation.
pub fn operation(op: &'static str) {
    metrics::counter!(OPERATIONS, "op" => op).increment(1);
}

/// Counts one failure.
pub fn error(reason: &'static str) {
    metrics::counter!(ERRORS, "reason" => reason).increment(1);
}
