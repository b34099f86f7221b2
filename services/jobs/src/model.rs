//! Domain types: job ids, statuses, the caller, and the injectable clock.

use chrono::{DateTime, Utc};
use easel_proto::auth::v1::Principal;
use easel_proto::jobs::v1::JobStatus;

use crate::error::{JobsError, Result};

easel_runtime::typed_id!(
    /// A job's id, `job_…`.
    JobId,
    "job"
);

/// The authenticated caller of a request, as the gateway passed it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user's id: every read and write is scoped to it.
    pub user_id: String,
    /// The tier's limits.
    pub limits: easel_proto::account::v1::TierLimits,
}

impl Caller {
    /// The caller of a request; a missing principal or user id is UNAUTHENTICATED.
    pub fn from_principal(principal: Option<Principal>) -> Result<Caller> {
        let principal = principal.ok_or(JobsError::Unauthenticated)?;
        if principal.user_id.trim().is_empty() || principal.user_id.len() > 128 {
            return Err(JobsError::Unauthenticated);
        }
        Ok(Caller {
            user_id: principal.user_id,
            limits: principal.limits.unwrap_or_default(),
        })
    }
}

/// The id of a job's run on the bridge (ComfyUI's `prompt_id`): the attempt number, and once
/// runs were lost with their backend (which spend no attempt) their count, so no two runs of a
/// job share an id and a late interrupt of a lost run cannot stop the next one.
pub fn run_id(job_id: &str, attempt: i32, lost_runs: i32) -> String {
    if lost_runs > 0 {
        format!("{job_id}-{attempt}.{lost_runs}")
    } else {
        format!("{job_id}-{attempt}")
    }
}

/// `Job.pending_reason` while no ComfyUI backend can take the job.
pub const WAITING_FOR_BACKEND: &str = "waiting_for_backend";

/// Whether a status is final.
pub fn is_terminal(status: JobStatus) -> bool {
    matches!(
        status,
        JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired
    )
}

/// A status as stored in the database.
pub fn status_to_db(status: JobStatus) -> i32 {
    status as i32
}

/// A stored status back; unknown values read as UNSPECIFIED.
pub fn status_from_db(value: i32) -> JobStatus {
    JobStatus::try_from(value).unwrap_or(JobStatus::Unspecified)
}

pub use easel_runtime::clock::{Clock, OffsetClock, SystemClock};

/// Unix milliseconds, as the tables store times.
pub fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// A stored time back.
pub fn from_millis(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value).unwrap_or_default()
}

/// A time as a protobuf timestamp.
pub fn timestamp(time: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

/// A stored time as a protobuf timestamp.
pub fn timestamp_ms(value: i64) -> pbjson_types::Timestamp {
    timestamp(from_millis(value))
}

/// A duration as a protobuf duration.
pub fn proto_duration(duration: std::time::Duration) -> pbjson_types::Duration {
    pbjson_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_moves_forward() {
        let clock = OffsetClock::new();
        let before = clock.now();
        clock.advance(std::time::Duration::from_secs(25 * 3600));
        assert!(clock.now() - before >= chrono::Duration::hours(25));
    }

    #[test]
    fn a_caller_needs_a_user() {
        assert!(Caller::from_principal(None).is_err());
        assert!(Caller::from_principal(Some(Principal::default())).is_err());
        let caller = Caller::from_principal(Some(Principal {
            user_id: "usr_1".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(caller.user_id, "usr_1");
    }

    #[test]
    fn statuses_round_trip() {
        for status in [JobStatus::Pending, JobStatus::Running, JobStatus::Expired] {
            assert_eq!(status_from_db(status_to_db(status)), status);
        }
        assert!(is_terminal(JobStatus::Cancelled));
        assert!(!is_terminal(JobStatus::Running));
    }
}
