//! The bridge's errors before a run is queued, mapped once to the error vocabulary. After
//! `queued`, failures travel as `failed` events instead (see [`crate::run`]).

use std::time::Duration;

use easel_runtime::{Error, ErrorCode};

use crate::comfy::ComfyError;
use crate::comfy::protocol::{NodeValidationError, PromptRejection};

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A request field is missing or out of range.
    #[error("{field}: {reason}")]
    InvalidField {
        /// The field's path, e.g. `text_to_image.width`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The graph breaks the backend policy (node classes, file and model inputs); `prefix`
    /// is where its nodes sit in the request (`raw.graph`, `text_to_image`).
    #[error("{}", easel_workflow_policy::summary(.violations, .prefix))]
    Refused {
        /// The request path of the graph's nodes.
        prefix: &'static str,
        /// The problems.
        violations: Vec<easel_workflow_policy::Violation>,
    },
    /// ComfyUI rejected the graph.
    #[error("ComfyUI rejected the graph: {}", .0.message)]
    Rejected(PromptRejection),
    /// Every eligible backend stayed busy for the whole bounded wait.
    #[error("every backend is busy")]
    NoCapacity {
        /// How long the call waited.
        waited: Duration,
    },
    /// No backend is healthy (or all are excluded, or their breakers are open).
    #[error("no ComfyUI backend is available")]
    NoBackend,
    /// A run with this id is in progress already.
    #[error("run {0} is in progress already")]
    AlreadyRunning(String),
    /// The run was interrupted before ComfyUI accepted it.
    #[error("the run was interrupted before it was queued")]
    Cancelled,
    /// The run's deadline passed before ComfyUI accepted it.
    #[error("the run's deadline passed before it was queued")]
    DeadlineExceeded,
    /// Talking to ComfyUI failed.
    #[error(transparent)]
    Comfy(ComfyError),
}

impl From<ComfyError> for BridgeError {
    fn from(error: ComfyError) -> Self {
        match error {
            ComfyError::Rejected(rejection) => BridgeError::Rejected(rejection),
            other => BridgeError::Comfy(other),
        }
    }
}

/// `node 3 (KSampler).steps`: the field a node error is about.
pub fn node_error_field(error: &NodeValidationError) -> String {
    let mut field = format!("node {}", error.node_id);
    if !error.class_type.is_empty() {
        field.push_str(&format!(" ({})", error.class_type));
    }
    if !error.input_name.is_empty() {
        field.push('.');
        field.push_str(&error.input_name);
    }
    field
}

/// A node error's description: ComfyUI's message, with its details when they add something.
pub fn node_error_description(error: &NodeValidationError) -> String {
    if error.details.is_empty() || error.details == error.input_name {
        error.message.clone()
    } else {
        format!("{} ({})", error.message, error.details)
    }
}

/// The rejection as one line for people.
pub fn rejection_message(rejection: &PromptRejection) -> String {
    let mut message = if rejection.message.is_empty() {
        "ComfyUI rejected the graph".to_string()
    } else {
        rejection.message.clone()
    };
    if !rejection.details.is_empty() {
        message.push_str(": ");
        message.push_str(&rejection.details);
    }
    for error in &rejection.node_errors {
        message.push_str(&format!(
            "; {}: {}",
            node_error_field(error),
            node_error_description(error)
        ));
    }
    message
}

impl From<BridgeError> for Error {
    fn from(error: BridgeError) -> Self {
        match error {
            BridgeError::InvalidField { field, reason } => Error::invalid_field(field, reason),
            BridgeError::Refused { prefix, violations } => {
                easel_workflow_policy::to_error(&violations, prefix)
            }
            BridgeError::Rejected(rejection) => {
                let mut error = Error::invalid_argument(rejection_message(&rejection));
                if rejection.node_errors.is_empty() {
                    error = error.with_field_violation("workflow", rejection_message(&rejection));
                }
                for node_error in &rejection.node_errors {
                    error = error.with_field_violation(
                        node_error_field(node_error),
                        node_error_description(node_error),
                    );
                }
                error
            }
            BridgeError::NoCapacity { waited } => Error::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "every ComfyUI backend stayed busy for {} ms",
                    waited.as_millis()
                ),
            )
            .with_retry_after(Duration::from_secs(1)),
            BridgeError::NoBackend => Error::unavailable("no ComfyUI backend is available")
                .with_retry_after(Duration::from_secs(5)),
            BridgeError::AlreadyRunning(run_id) => Error::new(
                ErrorCode::AlreadyExists,
                format!("run {run_id} is in progress already"),
            ),
            BridgeError::Cancelled => Error::new(
                ErrorCode::Cancelled,
                "the run was interrupted before it was queued",
            ),
            BridgeError::DeadlineExceeded => Error::new(
                ErrorCode::DeadlineExceeded,
                "the run's deadline passed before it was queued",
            ),
            BridgeError::Comfy(source) => {
                Error::unavailable("ComfyUI backend unavailable").with_source(source)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection() -> PromptRejection {
        PromptRejection {
            kind: "prompt_outputs_failed_validation".to_string(),
            message: "Prompt outputs failed validation".to_string(),
            details: String::new(),
            node_errors: vec![NodeValidationError {
                node_id: "3".to_string(),
                class_type: "KSampler".to_string(),
                kind: "value_smaller_than_min".to_string(),
                message: "Value 0 smaller than min of 1".to_string(),
                details: "steps".to_string(),
                input_name: "steps".to_string(),
            }],
        }
    }

    #[test]
    fn a_rejection_names_each_node_input() {
        let error = Error::from(BridgeError::Rejected(rejection()));
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let violation = &error.field_violations()[0];
        assert_eq!(violation.field, "node 3 (KSampler).steps");
        assert_eq!(violation.description, "Value 0 smaller than min of 1");
        assert!(
            error
                .message()
                .contains("node 3 (KSampler).steps: Value 0 smaller than min of 1")
        );
    }

    #[test]
    fn capacity_and_availability_map_to_retryable_codes() {
        let busy = Error::from(BridgeError::NoCapacity {
            waited: Duration::from_secs(1),
        });
        assert_eq!(busy.code(), ErrorCode::ResourceExhausted);
        assert!(busy.retry_after().is_some());
        assert_eq!(
            Error::from(BridgeError::NoBackend).code(),
            ErrorCode::Unavailable
        );
    }
}
