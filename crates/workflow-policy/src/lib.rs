//! The backend policy for ComfyUI graphs, in one place.
//!
//! Tenants share ComfyUI backends, and a raw workflow is code that runs there: a `LoadImage`
//! of `easel_00294_.png [output]` reads another tenant's image, a `SaveLatent` writes where the
//! next prompt can read it, a `CheckpointSave` fills the disk. So every graph is checked before
//! anything reaches ComfyUI, twice: by jobs at submit time (the caller gets INVALID_ARGUMENT
//! with a field violation naming the node and input) and by comfy-bridge right before
//! `POST /prompt` (defense in depth, for callers other than jobs and for graphs built later).
//!
//! The rules:
//! - **Node classes**: an optional allow-list (`EASEL_WORKFLOW_NODE_ALLOWLIST`; when set, only
//!   those classes run) and a deny-list (`EASEL_WORKFLOW_NODE_DENYLIST`, default
//!   [`DEFAULT_DENYLIST`]: nodes that read or write arbitrary files on the backend or load
//!   models by arbitrary path).
//! - **File inputs** ([`FILE_INPUTS`], the inputs ComfyUI's `/object_info` marks as file
//!   pickers: `image_upload`, `audio_upload`, `video_upload`, `file_upload`) take only
//!   `easel-input://inp_…` references to the caller's own uploaded inputs, resolved through an
//!   [`InputStore`]. Never an annotated name (`x.png [output]`, `x.png [temp]`), a path
//!   (`../x.png`, `/etc/passwd`) or a bare file name on the backend.
//! - **Model names** ([`MODEL_NAME_INPUTS`]: `ckpt_name`, `lora_name`, …) are names from the
//!   backend's model lists, which ComfyUI checks itself; here they may not be paths that leave
//!   the model folders (absolute, or with `..`).

mod files;

use std::collections::{BTreeMap, BTreeSet};

use easel_runtime::config::Env;
use serde_json::Value;

pub use crate::files::{INPUT_SCHEME, InputStore, NoInputs};

/// The node classes denied unless the operator says otherwise, each with the reason a caller
/// is told. Decided from ComfyUI 0.3.64's `/object_info`:
/// - readers of backend files by name, outside the input-reference rule: they would read other
///   tenants' outputs or the server's files;
/// - writers of files other than images (the bridge controls image outputs: it turns
///   `SaveImage`/`PreviewImage` into `SaveImageWebsocket`, or gives them a per-run prefix); their
///   files would stay on the shared backend, readable by name and never cleaned up;
/// - loaders by free path rather than by a name from a model list.
///
/// Allowed on purpose: `SaveImage`, `PreviewImage` (rewritten by the bridge),
/// `SaveImageWebsocket` (writes nothing), `ImageStitch`/`AudioConcat` (they only combine
/// tensors), `PreviewAny` (shows a value in the UI, writes nothing), model loaders whose input
/// is a name from a list (checked by ComfyUI against the list; paths refused here).
pub const DEFAULT_DENYLIST: &[(&str, &str)] = &[
    // Readers of backend files by name.
    (
        "LoadImageOutput",
        "it reads any file of the backend's output folder",
    ),
    (
        "LoadLatent",
        "it reads latent files from the backend's disk",
    ),
    (
        "LoadImageSetFromFolderNode",
        "it reads whole folders of the backend's disk",
    ),
    (
        "LoadImageTextSetFromFolderNode",
        "it reads whole folders of the backend's disk",
    ),
    (
        "LoadAudio",
        "it reads audio files on the backend (uploads are images only)",
    ),
    (
        "LoadVideo",
        "it reads video files on the backend (uploads are images only)",
    ),
    ("Load3D", "it reads 3D model files on the backend"),
    ("Load3DAnimation", "it reads 3D model files on the backend"),
    (
        "Preview3D",
        "it reads a 3D model file of the backend's output folder by path",
    ),
    (
        "Preview3DAnimation",
        "it reads a 3D model file of the backend's output folder by path",
    ),
    (
        "OpenAIInputFiles",
        "it reads files of the backend's input folder",
    ),
    (
        "GeminiInputFiles",
        "it reads files of the backend's input folder",
    ),
    // Writers of files that would stay on the shared backend.
    (
        "SaveLatent",
        "it writes latent files that stay on the backend",
    ),
    (
        "CheckpointSave",
        "it writes model files to the backend's disk",
    ),
    (
        "ImageOnlyCheckpointSave",
        "it writes model files to the backend's disk",
    ),
    ("CLIPSave", "it writes model files to the backend's disk"),
    ("VAESave", "it writes model files to the backend's disk"),
    ("ModelSave", "it writes model files to the backend's disk"),
    ("LoraSave", "it writes model files to the backend's disk"),
    (
        "SaveLoRANode",
        "it writes model files to the backend's disk",
    ),
    (
        "SaveAnimatedWEBP",
        "it writes files that stay on the backend",
    ),
    (
        "SaveAnimatedPNG",
        "it writes files that stay on the backend",
    ),
    ("SaveSVGNode", "it writes files that stay on the backend"),
    ("SaveAudio", "it writes files that stay on the backend"),
    ("SaveAudioMP3", "it writes files that stay on the backend"),
    ("SaveAudioOpus", "it writes files that stay on the backend"),
    ("PreviewAudio", "it writes files that stay on the backend"),
    ("SaveWEBM", "it writes files that stay on the backend"),
    ("SaveVideo", "it writes files that stay on the backend"),
    ("SaveGLB", "it writes files that stay on the backend"),
    ("LossGraphNode", "it writes files that stay on the backend"),
    (
        "MaskPreview",
        "it writes to the backend's temp folder; convert the mask with MaskToImage and use SaveImage",
    ),
    // Loaders by free path.
    ("DiffusersLoader", "it loads a model by path"),
    (
        "CheckpointLoader",
        "it loads a model with a config file by path (use CheckpointLoaderSimple)",
    ),
];

/// The inputs that name a file on the backend, by node class (ComfyUI's `/object_info`
/// marks them `image_upload`, `audio_upload`, `video_upload` or `file_upload`, or they take a
/// path into the output folder).
pub const FILE_INPUTS: &[(&str, &str)] = &[
    ("LoadImage", "image"),
    ("LoadImageMask", "image"),
    ("LoadImageOutput", "image"),
    ("LoadAudio", "audio"),
    ("LoadVideo", "file"),
    ("Load3D", "model_file"),
    ("Load3DAnimation", "model_file"),
    ("Preview3D", "model_file"),
    ("Preview3DAnimation", "model_file"),
];

/// Inputs that name a model from one of the backend's model folders.
pub const MODEL_NAME_INPUTS: &[&str] = &[
    "ckpt_name",
    "config_name",
    "vae_name",
    "lora_name",
    "clip_name",
    "clip_name1",
    "clip_name2",
    "clip_name3",
    "clip_name4",
    "unet_name",
    "control_net_name",
    "style_model_name",
    "gligen_name",
    "hypernetwork_name",
    "model_name",
    "photomaker_model_name",
    "audio_encoder_name",
    "model_path",
];

/// The variable of the allow-list (comma-separated classes; unset or empty: every class not
/// denied).
pub const ALLOWLIST_VAR: &str = "EASEL_WORKFLOW_NODE_ALLOWLIST";
/// The variable of the deny-list (comma-separated classes; the word `default` stands for
/// [`DEFAULT_DENYLIST`]; unset: the default; `none`: nothing denied).
pub const DENYLIST_VAR: &str = "EASEL_WORKFLOW_NODE_DENYLIST";

/// One problem with one node of a graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The node id in the graph.
    pub node_id: String,
    /// The path inside the node: `class_type` or `inputs.<name>`.
    pub field: String,
    /// What is wrong, for the caller.
    pub description: String,
}

impl Violation {
    /// The field path under `prefix` (e.g. `spec.workflow.graph` → `spec.workflow.graph.1.inputs.image`).
    pub fn path(&self, prefix: &str) -> String {
        if prefix.is_empty() {
            format!("{}.{}", self.node_id, self.field)
        } else {
            format!("{prefix}.{}.{}", self.node_id, self.field)
        }
    }
}

/// Who submits the graph, for resolving their input references.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The owner (`usr_…`), when known; references of an unknown caller resolve to nothing.
    pub owner: Option<&'a str>,
    /// Where uploaded inputs are looked up.
    pub inputs: &'a dyn InputStore,
}

impl Caller<'static> {
    /// A caller without uploaded inputs (every reference is refused).
    pub fn without_inputs() -> Caller<'static> {
        Caller {
            owner: None,
            inputs: &NoInputs,
        }
    }
}

/// Which node classes may run, and the rules for file and model inputs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowPolicy {
    allow: Option<BTreeSet<String>>,
    deny: BTreeMap<String, String>,
}

impl Default for WorkflowPolicy {
    /// No allow-list, the default deny-list.
    fn default() -> Self {
        WorkflowPolicy {
            allow: None,
            deny: default_denylist(),
        }
    }
}

fn default_denylist() -> BTreeMap<String, String> {
    DEFAULT_DENYLIST
        .iter()
        .map(|(class, reason)| ((*class).to_string(), (*reason).to_string()))
        .collect()
}

fn is_class_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '+' | '|'))
}

impl WorkflowPolicy {
    /// A policy from the two lists' text (see [`ALLOWLIST_VAR`], [`DENYLIST_VAR`]); an error
    /// names the bad entry.
    pub fn parse(allow: Option<&str>, deny: Option<&str>) -> Result<WorkflowPolicy, String> {
        let entries = |text: &str| -> Vec<String> {
            text.split(',')
                .map(str::trim)
                .filter(|entry| !entry.is_empty())
                .map(str::to_string)
                .collect()
        };
        let allow = match allow.map(entries) {
            None => None,
            Some(list) if list.is_empty() => None,
            Some(list) => {
                if let Some(bad) = list.iter().find(|class| !is_class_name(class)) {
                    return Err(format!("{bad:?} is not a node class name"));
                }
                Some(list.into_iter().collect())
            }
        };
        let deny = match deny.map(entries) {
            None => default_denylist(),
            Some(list) => {
                let mut deny = BTreeMap::new();
                for entry in list {
                    match entry.as_str() {
                        "default" => deny.extend(default_denylist()),
                        "none" => {}
                        class if is_class_name(class) => {
                            deny.insert(class.to_string(), "the operator denied it".to_string());
                        }
                        bad => return Err(format!("{bad:?} is not a node class name")),
                    }
                }
                deny
            }
        };
        Ok(WorkflowPolicy { allow, deny })
    }

    /// Reads [`ALLOWLIST_VAR`] and [`DENYLIST_VAR`]; a bad value is reported on `env`.
    pub fn from_env(env: &mut Env) -> WorkflowPolicy {
        let allow = env.optional_string(ALLOWLIST_VAR);
        let deny = env.optional_string(DENYLIST_VAR);
        match WorkflowPolicy::parse(allow.as_deref(), None) {
            Ok(_) => {}
            Err(reason) => env.problem(ALLOWLIST_VAR, reason),
        }
        match WorkflowPolicy::parse(None, deny.as_deref()) {
            Ok(_) => {}
            Err(reason) => env.problem(DENYLIST_VAR, reason),
        }
        WorkflowPolicy::parse(allow.as_deref(), deny.as_deref()).unwrap_or_default()
    }

    /// Whether `class_type` may run, and if not, why.
    pub fn class_verdict(&self, class_type: &str) -> Result<(), String> {
        if let Some(reason) = self.deny.get(class_type) {
            return Err(format!(
                "node class {class_type} is not allowed on this platform: {reason}"
            ));
        }
        if let Some(allow) = &self.allow
            && !allow.contains(class_type)
        {
            return Err(format!(
                "node class {class_type} is not on this platform's list of allowed nodes"
            ));
        }
        Ok(())
    }

    /// Checks an API-format graph (`{node_id: {class_type, inputs}}`). Every problem is
    /// reported, ordered by node id then field. Shapes this does not understand (a node that
    /// is not an object, a missing class) are left to the graph's own validation.
    pub fn check(&self, graph: &Value, caller: Caller<'_>) -> Result<(), Vec<Violation>> {
        let Some(nodes) = graph.as_object() else {
            return Ok(());
        };
        let mut violations = Vec::new();
        for (node_id, node) in nodes {
            let Some(class_type) = node.get("class_type").and_then(Value::as_str) else {
                continue;
            };
            if let Err(description) = self.class_verdict(class_type) {
                violations.push(Violation {
                    node_id: node_id.clone(),
                    field: "class_type".to_string(),
                    description,
                });
            }
            let Some(inputs) = node.get("inputs").and_then(Value::as_object) else {
                continue;
            };
            for (name, value) in inputs {
                // Links (`[node_id, index]`) carry another node's output: that node is checked.
                if value.is_array() {
                    continue;
                }
                let problem = if is_file_input(class_type, name) {
                    files::check_reference(value, caller).err()
                } else if MODEL_NAME_INPUTS.contains(&name.as_str()) {
                    files::check_model_name(value).err()
                } else {
                    None
                };
                if let Some(description) = problem {
                    violations.push(Violation {
                        node_id: node_id.clone(),
                        field: format!("inputs.{name}"),
                        description,
                    });
                }
            }
        }
        if violations.is_empty() {
            return Ok(());
        }
        violations.sort_by(|a, b| (&a.node_id, &a.field).cmp(&(&b.node_id, &b.field)));
        Err(violations)
    }
}

/// Whether `input` of `class_type` names a file on the backend.
pub fn is_file_input(class_type: &str, input: &str) -> bool {
    FILE_INPUTS
        .iter()
        .any(|(class, name)| *class == class_type && *name == input)
}

/// The caller-facing message of a refused graph: the first problem, and how many more.
pub fn summary(violations: &[Violation], prefix: &str) -> String {
    match violations {
        [] => "the workflow was refused by the platform's policy".to_string(),
        [only] => format!("{}: {}", only.path(prefix), only.description),
        [first, rest @ ..] => format!(
            "{}: {} (and {} more problem{})",
            first.path(prefix),
            first.description,
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

/// An `INVALID_ARGUMENT` error with one `google.rpc.BadRequest` field violation per problem,
/// the fields under `prefix`.
pub fn to_error(violations: &[Violation], prefix: &str) -> easel_runtime::Error {
    violations.iter().fold(
        easel_runtime::Error::invalid_argument(summary(violations, prefix))
            .with_reason(easel_runtime::error::reason::WORKFLOW_POLICY),
        |error, violation| {
            error.with_field_violation(violation.path(prefix), violation.description.clone())
        },
    )
}

#[cfg(test)]
mod tests;
