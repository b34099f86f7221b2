//! The jobs service's failures, mapped once to the shared error vocabulary.

use std::time::Duration;

use easel_runtime::error::{Error, ErrorCode, Internal, reason};

/// Where a raw workflow's nodes sit in a submit request, for field violations.
const WORKFLOW_FIELD: &str = "spec.workflow.graph";

/// What can go wrong in the jobs service.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A request field is invalid.
    #[error("{field}: {description}")]
    InvalidField {
        /// The field's path in the request.
        field: String,
        /// Why it is invalid.
        description: String,
    },
    /// A request exceeds one of the caller's tier limits.
    #[error("{field}: {description}")]
    OverLimit {
        /// The field's path in the request.
        field: String,
        /// Why it is over.
        description: String,
        /// The limit's name, e.g. `max_pixels`.
        limit: &'static str,
    },
    /// A raw workflow breaks the backend policy (node classes, file and model inputs).
    #[error("{}", easel_workflow_policy::summary(.0, WORKFLOW_FIELD))]
    WorkflowRefused(Vec<easel_workflow_policy::Violation>),
    /// A quota of the caller (jobs per day, concurrent jobs) is used up.
    #[error("{limit} of {value} reached")]
    QuotaExhausted {
        /// The limit's name.
        limit: &'static str,
        /// Its value.
        value: u32,
        /// When trying again may succeed.
        retry_after: Option<Duration>,
    },
    /// The request came without a usable caller.
    #[error("no authenticated caller")]
    Unauthenticated,
    /// No such job for this owner.
    #[error("job not found")]
    NotFound,
    /// The job's state does not allow the call.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The idempotency key was used with another request.
    #[error("idempotency key reused with a different request")]
    IdempotencyKeyReused,
    /// The first request with this idempotency key has not finished.
    #[error("a request with this idempotency key is in flight")]
    IdempotencyKeyInFlight,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// The queue failed.
    #[error("queue: {0}")]
    Queue(#[from] crate::queue::QueueError),
    /// A stored job's column does not hold what its type says.
    #[error("job {job_id}: the stored {column} is corrupt: {source}")]
    CorruptRecord {
        /// The job.
        job_id: String,
        /// The column.
        column: &'static str,
        /// What decoding it said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Anything else that is our fault, with its cause.
    #[error(transparent)]
    Internal(#[from] Internal),
}

/// The crate's result.
pub type Result<T, E = JobsError> = std::result::Result<T, E>;

impl JobsError {
    /// A field problem.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Self {
        JobsError::InvalidField {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl From<JobsError> for Error {
    fn from(error: JobsError) -> Self {
        match error {
            JobsError::InvalidField { field, description } => {
                Error::invalid_field(field, description)
            }
            JobsError::OverLimit {
                field,
                description,
                limit,
            } => Error::invalid_field(field, description)
                .with_reason(reason::TIER_LIMIT_EXCEEDED)
                .with_metadata("limit", limit),
            JobsError::WorkflowRefused(violations) => {
                easel_workflow_policy::to_error(&violations, WORKFLOW_FIELD)
            }
            JobsError::QuotaExhausted {
                limit,
                value,
                retry_after,
            } => {
                let error = Error::new(
                    ErrorCode::ResourceExhausted,
                    format!("your tier allows {value} ({limit}); try again later"),
                )
                .with_reason(reason::QUOTA_EXHAUSTED)
                .with_metadata("limit", limit)
                .with_metadata("value", value.to_string());
                match retry_after {
                    Some(delay) => error.with_retry_after(delay),
                    None => error,
                }
            }
            JobsError::Unauthenticated => Error::unauthenticated("no authenticated caller"),
            JobsError::NotFound => Error::not_found("job not found"),
            JobsError::FailedPrecondition(message) => Error::failed_precondition(message),
            JobsError::IdempotencyKeyReused => Error::new(
                ErrorCode::InvalidArgument,
                "the idempotency key was already used with a different request",
            )
            .with_reason(reason::IDEMPOTENCY_KEY_REUSED)
            .with_field_violation(
                "idempotency_key",
                "already used with a different request in the last 24 hours",
            ),
            JobsError::IdempotencyKeyInFlight => Error::new(
                ErrorCode::Aborted,
                "a request with this idempotency key is still in flight; retry shortly",
            )
            .with_reason(reason::IDEMPOTENCY_KEY_IN_FLIGHT)
            .with_retry_after(Duration::from_secs(1)),
            JobsError::Database(error) => easel_runtime::db::map_db_err(error),
            JobsError::Queue(error) => {
                Error::unavailable("the job queue is unavailable, retry later").with_source(error)
            }
            error @ JobsError::CorruptRecord { .. } => Error::internal(error),
            JobsError::Internal(internal) => internal.into(),
        }
    }
}

impl From<JobsError> for tonic::Status {
    fn from(error: JobsError) -> Self {
        Error::from(error).into_status()
    }
}
