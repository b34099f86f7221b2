//! The one error vocabulary of easel, mapped in one place to gRPC codes and HTTP statuses.
//!
//! Every service turns its own `thiserror` enums into [`Error`] at the edge of a handler. An
//! [`Error`] carries a message that is safe to show to a client, optional field violations
//! (sent as `google.rpc.BadRequest`), an optional machine-readable reason (`google.rpc.ErrorInfo`),
//! an optional retry delay (`google.rpc.RetryInfo`) and the underlying cause, which is logged but
//! never sent.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use tonic_types::{ErrorDetails, StatusExt};

/// The domain of easel's `google.rpc.ErrorInfo` reasons.
pub const ERROR_DOMAIN: &str = "easel.dev";

/// What kind of failure an [`Error`] is; each maps to one gRPC code and one HTTP status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The request is malformed or a value is out of range. gRPC `INVALID_ARGUMENT`, HTTP 400.
    InvalidArgument,
    /// The resource does not exist, or belongs to someone else. gRPC `NOT_FOUND`, HTTP 404.
    NotFound,
    /// The resource exists already. gRPC `ALREADY_EXISTS`, HTTP 409.
    AlreadyExists,
    /// The resource is not in a state that allows the call. gRPC `FAILED_PRECONDITION`, HTTP 400.
    FailedPrecondition,
    /// A concurrent request conflicts with this one; retry later. gRPC `ABORTED`, HTTP 409.
    Aborted,
    /// No valid credential. gRPC `UNAUTHENTICATED`, HTTP 401.
    Unauthenticated,
    /// The credential may not do this. gRPC `PERMISSION_DENIED`, HTTP 403.
    PermissionDenied,
    /// A rate limit or quota is exhausted. gRPC `RESOURCE_EXHAUSTED`, HTTP 429.
    ResourceExhausted,
    /// The caller cancelled the call. gRPC `CANCELLED`, HTTP 499.
    Cancelled,
    /// A dependency is down or the server is overloaded; retry. gRPC `UNAVAILABLE`, HTTP 503.
    Unavailable,
    /// The deadline passed before the work finished. gRPC `DEADLINE_EXCEEDED`, HTTP 504.
    DeadlineExceeded,
    /// The call is not implemented. gRPC `UNIMPLEMENTED`, HTTP 501.
    Unimplemented,
    /// A bug or an unexpected failure; details are logged, not returned. gRPC `INTERNAL`, HTTP 500.
    Internal,
}

impl ErrorCode {
    /// Every code, for exhaustive tests and documentation.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::InvalidArgument,
        ErrorCode::NotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::FailedPrecondition,
        ErrorCode::Aborted,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::ResourceExhausted,
        ErrorCode::Cancelled,
        ErrorCode::Unavailable,
        ErrorCode::DeadlineExceeded,
        ErrorCode::Unimplemented,
        ErrorCode::Internal,
    ];

    /// The gRPC status code.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorCode::Aborted => tonic::Code::Aborted,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Cancelled => tonic::Code::Cancelled,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorCode::Unimplemented => tonic::Code::Unimplemented,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status, following the mapping of `google.rpc.Code`.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::FailedPrecondition => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists | ErrorCode::Aborted => StatusCode::CONFLICT,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            // 499 "client closed request" is not in `http`'s table, but it is a valid code.
            ErrorCode::Cancelled => {
                StatusCode::from_u16(499).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The canonical name, as in gRPC (`"INVALID_ARGUMENT"`); used in the REST envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "INVALID_ARGUMENT",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::AlreadyExists => "ALREADY_EXISTS",
            ErrorCode::FailedPrecondition => "FAILED_PRECONDITION",
            ErrorCode::Aborted => "ABORTED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::PermissionDenied => "PERMISSION_DENIED",
            ErrorCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            ErrorCode::Cancelled => "CANCELLED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            ErrorCode::Unimplemented => "UNIMPLEMENTED",
            ErrorCode::Internal => "INTERNAL",
        }
    }

    /// Parses a canonical name back (the inverse of [`ErrorCode::as_str`]).
    pub fn from_name(name: &str) -> Option<ErrorCode> {
        ErrorCode::ALL
            .into_iter()
            .find(|code| code.as_str() == name)
    }

    /// The vocabulary entry for a gRPC code received from another service.
    pub fn from_grpc(code: tonic::Code) -> ErrorCode {
        match code {
            tonic::Code::InvalidArgument | tonic::Code::OutOfRange => ErrorCode::InvalidArgument,
            tonic::Code::NotFound => ErrorCode::NotFound,
            tonic::Code::AlreadyExists => ErrorCode::AlreadyExists,
            tonic::Code::FailedPrecondition => ErrorCode::FailedPrecondition,
            tonic::Code::Aborted => ErrorCode::Aborted,
            tonic::Code::Unauthenticated => ErrorCode::Unauthenticated,
            tonic::Code::PermissionDenied => ErrorCode::PermissionDenied,
            tonic::Code::ResourceExhausted => ErrorCode::ResourceExhausted,
            tonic::Code::Cancelled => ErrorCode::Cancelled,
            tonic::Code::Unavailable => ErrorCode::Unavailable,
            tonic::Code::DeadlineExceeded => ErrorCode::DeadlineExceeded,
            tonic::Code::Unimplemented => ErrorCode::Unimplemented,
            tonic::Code::Ok
            | tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::DataLoss => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every machine-readable reason of easel (`google.rpc.ErrorInfo.reason`, domain
/// [`ERROR_DOMAIN`]), in one list: a client can tell failures of the same code apart without
/// parsing messages, and the gateway answers the same HTTP status whichever service decided
/// (see [`Error::http_status`] for the reasons that refine it).
pub mod reason {
    /// An idempotency key was reused with a different request (HTTP 422).
    pub const IDEMPOTENCY_KEY_REUSED: &str = "IDEMPOTENCY_KEY_REUSED";
    /// The first request with this idempotency key is still in flight (HTTP 409).
    pub const IDEMPOTENCY_KEY_IN_FLIGHT: &str = "IDEMPOTENCY_KEY_IN_FLIGHT";
    /// The request body is larger than allowed (HTTP 413).
    pub const PAYLOAD_TOO_LARGE: &str = "PAYLOAD_TOO_LARGE";
    /// The request's content type is not accepted (HTTP 415).
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "UNSUPPORTED_MEDIA_TYPE";
    /// The route exists but not for this method (HTTP 405).
    pub const METHOD_NOT_ALLOWED: &str = "METHOD_NOT_ALLOWED";
    /// A per-user rate limit was hit (HTTP 429).
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// The server sheds load (HTTP 503).
    pub const OVERLOADED: &str = "OVERLOADED";
    /// A request exceeds a limit of the caller's tier (resolution, steps, batch size); the
    /// `limit` metadata names it.
    pub const TIER_LIMIT_EXCEEDED: &str = "TIER_LIMIT_EXCEEDED";
    /// A quota of the caller (jobs per day, concurrent jobs) is used up; the `limit` metadata
    /// names it and `value` gives its value.
    pub const QUOTA_EXHAUSTED: &str = "QUOTA_EXHAUSTED";
    /// A raw workflow breaks the backend policy (node classes, file and model inputs).
    pub const WORKFLOW_POLICY: &str = "WORKFLOW_POLICY";
    /// An internal call came from a service the callee's allow-list does not name.
    pub const CALLER_NOT_ALLOWED: &str = "CALLER_NOT_ALLOWED";
    /// A service the call needs is down (the gateway's public endpoints).
    pub const DEPENDENCY_UNAVAILABLE: &str = "DEPENDENCY_UNAVAILABLE";
    /// Auth's key set could not be read (the gateway's JWKS endpoint).
    pub const INVALID_JWKS: &str = "INVALID_JWKS";
    /// No credential was sent.
    pub const CREDENTIAL_MISSING: &str = "CREDENTIAL_MISSING";
    /// The credential is not in a format easel issues (or the header is malformed).
    pub const CREDENTIAL_MALFORMED: &str = "CREDENTIAL_MALFORMED";
    /// No such API key, or a token whose signature or signing key is not recognized.
    pub const CREDENTIAL_UNKNOWN: &str = "CREDENTIAL_UNKNOWN";
    /// The API key was revoked (or the token was exchanged from a revoked key).
    pub const CREDENTIAL_REVOKED: &str = "CREDENTIAL_REVOKED";
    /// The API key or token has expired.
    pub const CREDENTIAL_EXPIRED: &str = "CREDENTIAL_EXPIRED";
    /// The user behind the credential is disabled.
    pub const USER_DISABLED: &str = "USER_DISABLED";
    /// Email and password do not match an enabled account (which of the two is not said).
    pub const INVALID_LOGIN: &str = "INVALID_LOGIN";
    /// The credential is valid but lacks the scope the call needs (PERMISSION_DENIED); the
    /// `required_scope` metadata names it.
    pub const MISSING_SCOPE: &str = "MISSING_SCOPE";

    /// Every reason above, for documentation and the uniqueness test.
    pub const ALL: [&str; 21] = [
        IDEMPOTENCY_KEY_REUSED,
        IDEMPOTENCY_KEY_IN_FLIGHT,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        METHOD_NOT_ALLOWED,
        RATE_LIMITED,
        OVERLOADED,
        TIER_LIMIT_EXCEEDED,
        QUOTA_EXHAUSTED,
        WORKFLOW_POLICY,
        CALLER_NOT_ALLOWED,
        DEPENDENCY_UNAVAILABLE,
        INVALID_JWKS,
        CREDENTIAL_MISSING,
        CREDENTIAL_MALFORMED,
        CREDENTIAL_UNKNOWN,
        CREDENTIAL_REVOKED,
        CREDENTIAL_EXPIRED,
        USER_DISABLED,
        INVALID_LOGIN,
        MISSING_SCOPE,
    ];
}

/// One invalid field of a request, sent as a `google.rpc.BadRequest.FieldViolation`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    /// The field's path in the request, e.g. `spec.text_to_image.width`.
    pub field: String,
    /// Why it is invalid.
    pub description: String,
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An unexpected failure of our own (a broken invariant, a failed encoding, a task that died),
/// with what was being done and the cause chain. The services' error enums wrap it in their
/// `Internal` variant instead of flattening causes into text: it maps to INTERNAL, and its
/// chain is logged where the error leaves the service, never sent to a client.
#[derive(Debug)]
pub struct Internal {
    context: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Internal {
    /// A failure without an underlying error (a broken invariant).
    pub fn new(context: impl Into<Cow<'static, str>>) -> Self {
        Internal {
            context: context.into(),
            source: None,
        }
    }

    /// A failure caused by `source` while doing `context`.
    pub fn caused(context: impl Into<Cow<'static, str>>, source: impl Into<BoxError>) -> Self {
        Internal {
            context: context.into(),
            source: Some(source.into()),
        }
    }
}

impl fmt::Display for Internal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for Internal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Internal> for Error {
    fn from(internal: Internal) -> Self {
        Error::internal(internal)
    }
}

/// Turns a failure that can only be our fault into an [`Internal`] naming what was being done,
/// keeping the failure as its source: `serde_json::to_string(&event).internal("encoding an
/// event")?`.
pub trait InternalContext<T> {
    /// The value, or an [`Internal`] error caused by the failure.
    fn internal(self, context: impl Into<Cow<'static, str>>) -> Result<T, Internal>;
}

impl<T, E: Into<BoxError>> InternalContext<T> for Result<T, E> {
    fn internal(self, context: impl Into<Cow<'static, str>>) -> Result<T, Internal> {
        self.map_err(|source| Internal::caused(context, source))
    }
}

/// An error of the vocabulary, with what a client may see and the cause it may not.
pub struct Error {
    code: ErrorCode,
    message: Cow<'static, str>,
    reason: Option<Cow<'static, str>>,
    metadata: HashMap<String, String>,
    field_violations: Vec<FieldViolation>,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl Error {
    /// An error with a client-visible message.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            code,
            message: message.into(),
            reason: None,
            metadata: HashMap::new(),
            field_violations: Vec::new(),
            retry_after: None,
            source: None,
        }
    }

    /// `INVALID_ARGUMENT` with a message.
    pub fn invalid_argument(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::InvalidArgument, message)
    }

    /// `INVALID_ARGUMENT` naming one field.
    pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Self {
        let field = field.into();
        let description = description.into();
        Error::new(
            ErrorCode::InvalidArgument,
            format!("{field}: {description}"),
        )
        .with_field_violation(field, description)
    }

    /// `NOT_FOUND` with a message.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::NotFound, message)
    }

    /// `UNAUTHENTICATED` with a message.
    pub fn unauthenticated(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::Unauthenticated, message)
    }

    /// `PERMISSION_DENIED` with a message.
    pub fn permission_denied(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::PermissionDenied, message)
    }

    /// `FAILED_PRECONDITION` with a message.
    pub fn failed_precondition(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::FailedPrecondition, message)
    }

    /// `UNAVAILABLE` with a message.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorCode::Unavailable, message)
    }

    /// `INTERNAL`: the cause is logged where the error leaves the service, never sent.
    pub fn internal(source: impl Into<BoxError>) -> Self {
        Error::new(ErrorCode::Internal, "internal error").with_source(source)
    }

    /// Adds a field violation.
    #[must_use]
    pub fn with_field_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        self.field_violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
        self
    }

    /// Sets the machine-readable reason (see [`reason`]).
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<Cow<'static, str>>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Adds a key/value to the `ErrorInfo` metadata (e.g. the limit that was hit).
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Tells the client when to retry (`RetryInfo`, `Retry-After`).
    #[must_use]
    pub fn with_retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }

    /// Attaches the cause, logged but never sent.
    #[must_use]
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The vocabulary entry.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The client-visible message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The machine-readable reason, if any.
    pub fn reason(&self) -> Option<&str> {
        self.reason.as_deref()
    }

    /// The `ErrorInfo` metadata.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// The field violations.
    pub fn field_violations(&self) -> &[FieldViolation] {
        &self.field_violations
    }

    /// When to retry, if the server said.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The HTTP status: the code's, unless the reason names a more precise one.
    pub fn http_status(&self) -> StatusCode {
        match self.reason.as_deref() {
            Some(reason::IDEMPOTENCY_KEY_REUSED) => StatusCode::UNPROCESSABLE_ENTITY,
            Some(reason::PAYLOAD_TOO_LARGE) => StatusCode::PAYLOAD_TOO_LARGE,
            Some(reason::UNSUPPORTED_MEDIA_TYPE) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Some(reason::METHOD_NOT_ALLOWED) => StatusCode::METHOD_NOT_ALLOWED,
            _ => self.code.http_status(),
        }
    }

    /// The cause and its chain, for logs.
    pub fn source_chain(&self) -> String {
        let mut chain = String::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = self
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static));
        while let Some(error) = next {
            if !chain.is_empty() {
                chain.push_str(": ");
            }
            chain.push_str(&error.to_string());
            next = error.source();
        }
        chain
    }

    /// Logs the error once, where it leaves the service: internal errors at error level with
    /// their chain, the rest at debug level (they are the client's business).
    pub fn log(&self) {
        if self.code == ErrorCode::Internal {
            tracing::error!(code = %self.code, cause = %self.source_chain(), "internal error");
        } else {
            tracing::debug!(code = %self.code, message = %self.message, "request failed");
        }
    }

    /// Converts into a gRPC status with `google.rpc` details.
    pub fn into_status(self) -> tonic::Status {
        self.log();
        let mut details = ErrorDetails::new();
        if !self.field_violations.is_empty() {
            details.set_bad_request(
                self.field_violations
                    .iter()
                    .map(|v| {
                        tonic_types::FieldViolation::new(v.field.clone(), v.description.clone())
                    })
                    .collect::<Vec<_>>(),
            );
        }
        if let Some(reason) = &self.reason {
            details.set_error_info(reason.to_string(), ERROR_DOMAIN, self.metadata.clone());
        }
        if let Some(delay) = self.retry_after {
            details.set_retry_info(Some(delay));
        }
        tonic::Status::with_error_details(self.code.grpc_code(), self.message, details)
    }

    /// Rebuilds an error received from another service, keeping its details.
    ///
    /// An INTERNAL status with tonic's decode message is our client failing to decode the
    /// answer (a server's own request-decoding failures arrive as INVALID_ARGUMENT): it is
    /// renamed, so relaying it never looks like a caller's undecodable request (see
    /// [`crate::grpc::layers::DecodeFailureLayer`]).
    pub fn from_status(status: &tonic::Status) -> Self {
        let message = if status.code() == tonic::Code::Internal
            && crate::grpc::layers::is_decode_failure(status.message())
        {
            format!(
                "an answer of another service could not be decoded ({})",
                status.message()
            )
        } else {
            status.message().to_string()
        };
        let mut error = Error::new(ErrorCode::from_grpc(status.code()), message);
        if let Ok(details) = status.check_error_details() {
            if let Some(bad_request) = details.bad_request() {
                for violation in &bad_request.field_violations {
                    error = error.with_field_violation(
                        violation.field.clone(),
                        violation.description.clone(),
                    );
                }
            }
            if let Some(info) = details.error_info() {
                error.reason = Some(Cow::Owned(info.reason.clone()));
                error.metadata = info.metadata.clone();
            }
            if let Some(retry) = details.retry_info() {
                error.retry_after = retry.retry_delay;
            }
        }
        error
    }

    /// The REST envelope for this error.
    pub fn to_envelope(&self, request_id: Option<&str>) -> ErrorEnvelope {
        let mut details = Vec::new();
        if !self.field_violations.is_empty() {
            details.push(ErrorDetail::BadRequest {
                field_violations: self.field_violations.clone(),
            });
        }
        if let Some(reason) = &self.reason {
            details.push(ErrorDetail::ErrorInfo {
                reason: reason.to_string(),
                domain: ERROR_DOMAIN.to_string(),
                metadata: self.metadata.clone(),
            });
        }
        if let Some(delay) = self.retry_after {
            details.push(ErrorDetail::RetryInfo {
                retry_delay: format!("{}s", delay.as_secs_f64()),
            });
        }
        ErrorEnvelope {
            error: ErrorBody {
                code: self.code.as_str().to_string(),
                message: self.message.to_string(),
                details,
                request_id: request_id.map(str::to_string),
            },
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("code", &self.code)
            .field("message", &self.message)
            .field("reason", &self.reason)
            .field("field_violations", &self.field_violations)
            .field("source", &self.source_chain())
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        error.into_status()
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::from_status(&status)
    }
}

/// The REST error body: `{"error": {"code", "message", "details", "requestId"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The vocabulary's name, e.g. `"INVALID_ARGUMENT"`.
    pub code: String,
    /// A message for people.
    pub message: String,
    /// Structured details, in the shapes of `google.rpc`.
    pub details: Vec<ErrorDetail>,
    /// The request id, to quote when reporting a problem.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// One structured detail of an [`ErrorEnvelope`], tagged like the proto3 JSON of `Any`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "@type")]
pub enum ErrorDetail {
    /// `google.rpc.BadRequest`.
    #[serde(
        rename = "type.googleapis.com/google.rpc.BadRequest",
        rename_all = "camelCase"
    )]
    BadRequest {
        /// The invalid fields.
        field_violations: Vec<FieldViolation>,
    },
    /// `google.rpc.ErrorInfo`.
    #[serde(rename = "type.googleapis.com/google.rpc.ErrorInfo")]
    ErrorInfo {
        /// The reason, e.g. `"IDEMPOTENCY_KEY_REUSED"`.
        reason: String,
        /// Always `easel.dev`.
        domain: String,
        /// Extra facts, e.g. the limit that was hit.
        metadata: HashMap<String, String>,
    },
    /// `google.rpc.RetryInfo`.
    #[serde(
        rename = "type.googleapis.com/google.rpc.RetryInfo",
        rename_all = "camelCase"
    )]
    RetryInfo {
        /// A proto3 JSON duration, e.g. `"1.5s"`.
        retry_delay: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_the_expected_grpc_code_and_http_status() {
        let expected = [
            (
                ErrorCode::InvalidArgument,
                tonic::Code::InvalidArgument,
                400,
            ),
            (ErrorCode::NotFound, tonic::Code::NotFound, 404),
            (ErrorCode::AlreadyExists, tonic::Code::AlreadyExists, 409),
            (
                ErrorCode::FailedPrecondition,
                tonic::Code::FailedPrecondition,
                400,
            ),
            (ErrorCode::Aborted, tonic::Code::Aborted, 409),
            (
                ErrorCode::Unauthenticated,
                tonic::Code::Unauthenticated,
                401,
            ),
            (
                ErrorCode::PermissionDenied,
                tonic::Code::PermissionDenied,
                403,
            ),
            (
                ErrorCode::ResourceExhausted,
                tonic::Code::ResourceExhausted,
                429,
            ),
            (ErrorCode::Cancelled, tonic::Code::Cancelled, 499),
            (ErrorCode::Unavailable, tonic::Code::Unavailable, 503),
            (
                ErrorCode::DeadlineExceeded,
                tonic::Code::DeadlineExceeded,
                504,
            ),
            (ErrorCode::Unimplemented, tonic::Code::Unimplemented, 501),
            (ErrorCode::Internal, tonic::Code::Internal, 500),
        ];
        assert_eq!(expected.len(), ErrorCode::ALL.len());
        for (code, grpc, http) in expected {
            assert_eq!(code.grpc_code(), grpc, "{code}");
            assert_eq!(code.http_status().as_u16(), http, "{code}");
            assert_eq!(ErrorCode::from_grpc(grpc), code, "{code}");
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
        }
    }

    #[test]
    fn reasons_refine_the_http_status() {
        let cases = [
            (
                reason::IDEMPOTENCY_KEY_REUSED,
                ErrorCode::InvalidArgument,
                422,
            ),
            (reason::IDEMPOTENCY_KEY_IN_FLIGHT, ErrorCode::Aborted, 409),
            (reason::PAYLOAD_TOO_LARGE, ErrorCode::InvalidArgument, 413),
            (
                reason::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidArgument,
                415,
            ),
            (reason::METHOD_NOT_ALLOWED, ErrorCode::InvalidArgument, 405),
            (reason::RATE_LIMITED, ErrorCode::ResourceExhausted, 429),
            (reason::OVERLOADED, ErrorCode::Unavailable, 503),
        ];
        for (reason, code, http) in cases {
            let error = Error::new(code, "x").with_reason(reason);
            assert_eq!(error.http_status().as_u16(), http, "{reason}");
        }
    }

    #[test]
    fn reasons_are_unique_screaming_snake_case_names() {
        let mut seen = std::collections::HashSet::new();
        for reason in reason::ALL {
            assert!(seen.insert(reason), "{reason} is listed twice");
            assert!(
                !reason.is_empty()
                    && reason
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'),
                "{reason}"
            );
        }
    }

    #[test]
    fn details_survive_a_round_trip_through_a_grpc_status() {
        let error = Error::invalid_field("spec.text_to_image.width", "must be a multiple of 8")
            .with_reason(reason::IDEMPOTENCY_KEY_REUSED)
            .with_metadata("limit", "max_pixels")
            .with_retry_after(Duration::from_millis(1500));
        let status = error.into_status();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);

        let back = Error::from_status(&status);
        assert_eq!(back.code(), ErrorCode::InvalidArgument);
        assert_eq!(back.field_violations()[0].field, "spec.text_to_image.width");
        assert_eq!(back.reason(), Some(reason::IDEMPOTENCY_KEY_REUSED));
        assert_eq!(
            back.metadata().get("limit").map(String::as_str),
            Some("max_pixels")
        );
        assert_eq!(back.retry_after(), Some(Duration::from_millis(1500)));
        assert_eq!(back.http_status().as_u16(), 422);
    }

    #[test]
    fn internal_errors_hide_their_cause_from_clients() {
        let cause = std::io::Error::other("password=hunter2 in a database error");
        let status = Error::internal(cause).into_status();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(!status.message().contains("hunter2"));
    }

    #[test]
    fn internal_errors_keep_their_chain_for_the_log_only() {
        let cause = std::io::Error::other("disk full at /var/lib/secret");
        let error: Error = Err::<(), _>(cause)
            .internal("writing an event")
            .unwrap_err()
            .into();
        assert_eq!(error.code(), ErrorCode::Internal);
        assert_eq!(
            error.source_chain(),
            "writing an event: disk full at /var/lib/secret"
        );
        let status = error.into_status();
        assert_eq!(status.message(), "internal error");
        let invariant = Error::from(Internal::new("no signing key"));
        assert_eq!(invariant.source_chain(), "no signing key");
    }

    #[test]
    fn the_envelope_has_the_documented_shape() {
        let error = Error::invalid_field("sampler", "unknown value \"foo\"");
        let json = serde_json::to_value(error.to_envelope(Some("req-1"))).unwrap();
        assert_eq!(json["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(json["error"]["requestId"], "req-1");
        assert_eq!(
            json["error"]["details"][0]["@type"],
            "type.googleapis.com/google.rpc.BadRequest"
        );
        assert_eq!(
            json["error"]["details"][0]["fieldViolations"][0]["field"],
            "sampler"
        );
    }
}
