//! The storage service's failures, mapped once to the shared error vocabulary.

use easel_runtime::error::{Error, ErrorCode, Internal, reason};

/// What can go wrong in the storage service.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A request field is invalid.
    #[error("{field}: {description}")]
    InvalidField {
        /// The field's path in the request.
        field: &'static str,
        /// Why it is invalid.
        description: String,
    },
    /// The upload's bytes are not the declared (or any accepted) image type.
    #[error("content does not match: {0}")]
    ContentMismatch(String),
    /// The upload is larger than allowed.
    #[error("upload exceeds {limit} bytes")]
    TooLarge {
        /// The cap in bytes.
        limit: u64,
    },
    /// No such artifact for this owner (or it expired).
    #[error("artifact not found")]
    NotFound,
    /// The client ended or broke the upload stream.
    #[error("upload stream failed: {0}")]
    Stream(#[source] tonic::Status),
    /// The object store failed.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// Anything else that is our fault, with its cause.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl StorageError {
    /// A field problem.
    pub fn field(field: &'static str, description: impl Into<String>) -> Self {
        StorageError::InvalidField {
            field,
            description: description.into(),
        }
    }

    /// The `reason` label of the error metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            StorageError::InvalidField { .. } => "invalid_argument",
            StorageError::ContentMismatch(_) => "content_mismatch",
            StorageError::TooLarge { .. } => "too_large",
            StorageError::NotFound => "not_found",
            StorageError::Stream(_) => "client_stream",
            StorageError::ObjectStore(_) => "object_store",
            StorageError::Database(_) => "database",
            StorageError::Internal(_) => "internal",
        }
    }
}

impl From<StorageError> for Error {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::InvalidField { field, description } => {
                Error::invalid_field(field, description)
            }
            StorageError::ContentMismatch(why) => Error::invalid_field("header.content_type", why)
                .with_reason(reason::UNSUPPORTED_MEDIA_TYPE),
            StorageError::TooLarge { limit } => Error::new(
                ErrorCode::InvalidArgument,
                format!("the artifact is larger than {limit} bytes"),
            )
            .with_reason(reason::PAYLOAD_TOO_LARGE)
            .with_metadata("limit_bytes", limit.to_string()),
            StorageError::NotFound => Error::new(ErrorCode::NotFound, "artifact not found"),
            StorageError::Stream(status) => {
                let code = match status.code() {
                    tonic::Code::Cancelled => ErrorCode::Cancelled,
                    tonic::Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
                    _ => ErrorCode::InvalidArgument,
                };
                Error::new(code, "the upload stream broke off").with_source(status)
            }
            StorageError::ObjectStore(error) => match error {
                object_store::Error::NotFound { .. } => {
                    Error::new(ErrorCode::NotFound, "artifact not found").with_source(error)
                }
                other => {
                    Error::unavailable("object store unavailable, retry later").with_source(other)
                }
            },
            StorageError::Database(error) => easel_runtime::db::map_db_err(error),
            StorageError::Internal(internal) => internal.into(),
        }
    }
}

impl From<StorageError> for tonic::Status {
    fn from(error: StorageError) -> Self {
        crate::metrics::error(error.metric_reason());
        Error::from(error).into_status()
    }
}

/// Results of the storage service.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_vocabulary() {
        let cases = [
            (
                StorageError::field("owner", "empty"),
                ErrorCode::InvalidArgument,
                400,
            ),
            (
                StorageError::ContentMismatch("x".into()),
                ErrorCode::InvalidArgument,
                415,
            ),
            (
                StorageError::TooLarge { limit: 5 },
                ErrorCode::InvalidArgument,
                413,
            ),
            (StorageError::NotFound, ErrorCode::NotFound, 404),
            (
                StorageError::Internal(Internal::new("db password=x")),
                ErrorCode::Internal,
                500,
            ),
        ];
        for (error, code, http) in cases {
            let error = Error::from(error);
            assert_eq!(error.code(), code);
            assert_eq!(error.http_status().as_u16(), http);
            assert!(!error.message().contains("password"));
        }
    }
}
