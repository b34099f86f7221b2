//! The auth service's failures, mapped once to the shared error vocabulary.

use easel_auth_client::{RateDecision, Scope, reason};
use easel_runtime::error::{Error, ErrorCode, Internal};

/// What can go wrong in the auth service.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A request field is invalid.
    #[error("{field}: {description}")]
    InvalidField {
        /// The field's path in the request.
        field: &'static str,
        /// Why it is invalid.
        description: String,
    },
    /// The credential was refused; `reason` is one of [`easel_auth_client::reason`].
    #[error("{message}")]
    Unauthenticated {
        /// For the client.
        message: &'static str,
        /// Machine-readable.
        reason: &'static str,
    },
    /// The caller may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// The credential lacks the scope the call needs (PERMISSION_DENIED, `MISSING_SCOPE`).
    #[error("the credential lacks the {0} scope")]
    MissingScope(Scope),
    /// No such thing for this caller.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists already.
    #[error("{0}")]
    AlreadyExists(&'static str),
    /// The state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Too many attempts.
    #[error("rate limited")]
    RateLimited(RateDecision),
    /// A dependency failed.
    #[error("{0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// Anything else that is our fault, with its cause.
    #[error(transparent)]
    Internal(#[from] Internal),
}

impl AuthError {
    /// A field problem.
    pub fn field(field: &'static str, description: impl Into<String>) -> Self {
        AuthError::InvalidField {
            field,
            description: description.into(),
        }
    }

    /// A refused credential.
    pub fn unauthenticated(message: &'static str, reason: &'static str) -> Self {
        AuthError::Unauthenticated { message, reason }
    }

    /// No credential at all.
    pub fn missing_credential() -> Self {
        AuthError::unauthenticated(
            "no credential: send X-API-Key or Authorization: Bearer",
            reason::CREDENTIAL_MISSING,
        )
    }

    /// The `reason` label of the error metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            AuthError::InvalidField { .. } => "invalid_argument",
            AuthError::Unauthenticated { .. } => "unauthenticated",
            AuthError::PermissionDenied(_) | AuthError::MissingScope(_) => "permission_denied",
            AuthError::NotFound(_) => "not_found",
            AuthError::AlreadyExists(_) => "already_exists",
            AuthError::FailedPrecondition(_) => "failed_precondition",
            AuthError::RateLimited(_) => "rate_limited",
            AuthError::Unavailable(_) => "unavailable",
            AuthError::Database(_) => "database",
            AuthError::Internal(_) => "internal",
        }
    }
}

impl From<AuthError> for Error {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidField { field, description } => {
                Error::invalid_field(field, description)
            }
            AuthError::Unauthenticated { message, reason } => {
                Error::unauthenticated(message).with_reason(reason)
            }
            AuthError::PermissionDenied(message) => Error::permission_denied(message),
            AuthError::MissingScope(scope) => scope.missing(),
            AuthError::NotFound(what) => Error::not_found(format!("{what} not found")),
            AuthError::AlreadyExists(message) => Error::new(ErrorCode::AlreadyExists, message),
            AuthError::FailedPrecondition(message) => Error::failed_precondition(message),
            AuthError::RateLimited(decision) => decision.to_error(),
            AuthError::Unavailable(message) => Error::unavailable(message),
            AuthError::Database(error) => easel_runtime::db::map_db_err(error),
            AuthError::Internal(internal) => internal.into(),
        }
    }
}

impl From<Error> for AuthError {
    /// Errors of shared parts (the rate limiter): only unavailability is expected.
    fn from(error: Error) -> Self {
        match error.code() {
            ErrorCode::Unavailable => AuthError::Unavailable(error.message().to_string()),
            _ => Internal::caused("a shared component failed", error).into(),
        }
    }
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> Self {
        metrics::counter!("easel_auth_errors_total", "reason" => error.metric_reason())
            .increment(1);
        Error::from(error).into_status()
    }
}

/// Results of the auth service.
pub type Result<T, E = AuthError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn errors_map_to_the_vocabulary() {
        let cases = [
            (
                AuthError::field("name", "empty"),
                ErrorCode::InvalidArgument,
                400,
            ),
            (
                AuthError::unauthenticated("API key revoked", reason::CREDENTIAL_REVOKED),
                ErrorCode::Unauthenticated,
                401,
            ),
            (
                AuthError::PermissionDenied("admins only".into()),
                ErrorCode::PermissionDenied,
                403,
            ),
            (AuthError::NotFound("API key"), ErrorCode::NotFound, 404),
            (
                AuthError::AlreadyExists("a user with this email exists"),
                ErrorCode::AlreadyExists,
                409,
            ),
            (
                AuthError::RateLimited(RateDecision {
                    allowed: false,
                    limit: 5,
                    remaining: 0,
                    reset_after: Duration::from_secs(60),
                    retry_after: Some(Duration::from_secs(12)),
                }),
                ErrorCode::ResourceExhausted,
                429,
            ),
            (
                AuthError::Internal(Internal::new("password=hunter2")),
                ErrorCode::Internal,
                500,
            ),
        ];
        for (error, code, http) in cases {
            let error = Error::from(error);
            assert_eq!(error.code(), code);
            assert_eq!(error.http_status().as_u16(), http);
            assert!(!error.message().contains("hunter2"));
        }
        let revoked = Error::from(AuthError::unauthenticated(
            "API key revoked",
            reason::CREDENTIAL_REVOKED,
        ));
        assert_eq!(revoked.reason(), Some(reason::CREDENTIAL_REVOKED));
    }
}
