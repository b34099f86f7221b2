//! File and model inputs: what a value naming something on the backend may be.

use serde_json::Value;

use crate::Caller;

/// The scheme of a reference to a caller's uploaded input: `easel-input://inp_…`.
pub const INPUT_SCHEME: &str = "easel-input://";

/// Longest value quoted back in a message.
const QUOTE_LIMIT: usize = 80;

/// Where uploaded inputs are looked up. The image-inputs feature implements this over its
/// store; until then [`NoInputs`] answers for every caller.
pub trait InputStore: Send + Sync + std::fmt::Debug {
    /// Whether input `input_id` (`inp_…`) exists and belongs to `owner`. An input of another
    /// owner must answer false, exactly like one that does not exist: callers are never told
    /// whether someone else's input exists.
    fn owns(&self, owner: &str, input_id: &str) -> bool;
}

/// No uploaded inputs exist (uploads are not built yet): every reference is unknown.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoInputs;

impl InputStore for NoInputs {
    fn owns(&self, _owner: &str, _input_id: &str) -> bool {
        false
    }
}

fn quoted(value: &str) -> String {
    let mut shown: String = value.chars().take(QUOTE_LIMIT).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("{shown:?}")
}

fn is_absolute(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.starts_with('/')
        || value.starts_with('\\')
        || value.starts_with('~')
        || (bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':')
}

fn has_parent_component(value: &str) -> bool {
    value.split(['/', '\\']).any(|part| part.trim() == "..")
}

const ONLY_REFERENCES: &str =
    "file inputs take only easel-input://<input id> references to your own uploaded inputs";

/// Checks a file input's value: only a reference to one of the caller's own inputs passes.
pub(crate) fn check_reference(value: &Value, caller: Caller<'_>) -> Result<(), String> {
    let Some(text) = value.as_str() else {
        return Err(format!("{ONLY_REFERENCES}, not {value}"));
    };
    if let Some(input_id) = text.strip_prefix(INPUT_SCHEME) {
        let well_formed = input_id.strip_prefix("inp_").is_some_and(|rest| {
            !rest.is_empty()
                && rest.len() <= 64
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        if !well_formed {
            return Err(format!(
                "{} is not a valid input reference (easel-input://inp_…)",
                quoted(text)
            ));
        }
        let known = caller
            .owner
            .is_some_and(|owner| caller.inputs.owns(owner, input_id));
        if known {
            return Ok(());
        }
        return Err(format!(
            "unknown input {}: it is not one of your uploaded inputs",
            quoted(input_id)
        ));
    }
    let trimmed = text.trim_end();
    let why = if trimmed.ends_with("[output]")
        || trimmed.ends_with("[temp]")
        || trimmed.ends_with("[input]")
    {
        "names a file in a folder of the backend"
    } else if has_parent_component(text) {
        "is a path leaving its folder"
    } else if is_absolute(text) {
        "is an absolute path"
    } else if text.contains("://") {
        "is not an easel input reference"
    } else {
        "names a file on the backend"
    };
    Err(format!("{} {why}; {ONLY_REFERENCES}", quoted(text)))
}

/// Checks a model name: a name from the backend's model lists (ComfyUI checks membership), so
/// never a path out of the model folders.
pub(crate) fn check_model_name(value: &Value) -> Result<(), String> {
    let Some(text) = value.as_str() else {
        return Ok(());
    };
    if text.contains('\0') || is_absolute(text) || has_parent_component(text) {
        return Err(format!(
            "{} must be a model name from the backend's list, not a path",
            quoted(text)
        ));
    }
    Ok(())
}
