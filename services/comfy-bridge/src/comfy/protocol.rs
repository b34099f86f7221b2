//! ComfyUI's messages as the recordings show them: WebSocket events, history entries,
//! `/queue` snapshots and `POST /prompt` rejections. Parsing is tolerant (unknown fields and
//! message types are ignored) because ComfyUI adds fields between versions.

use serde_json::{Map, Value};

/// An image a node wrote, as `executed` and history outputs list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The file name, e.g. `easel_00001_.png`.
    pub filename: String,
    /// The subfolder under the type's directory ("" for none).
    pub subfolder: String,
    /// `output`, `temp` or `input`.
    pub kind: String,
}

/// A runtime error (`execution_error`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionError {
    /// The failing node.
    pub node_id: String,
    /// Its class.
    pub node_type: String,
    /// Python's exception type, e.g. `torch.OutOfMemoryError`.
    pub exception_type: String,
    /// `str(exception)`.
    pub exception_message: String,
}

impl ExecutionError {
    /// Whether ComfyUI ran out of GPU memory.
    pub fn is_out_of_memory(&self) -> bool {
        let message = self.exception_message.to_ascii_lowercase();
        self.exception_type.contains("OutOfMemoryError")
            || message.contains("out of memory")
            || message.contains("allocation on device")
    }
}

/// One WebSocket text message, reduced to what the bridge uses.
#[derive(Clone, Debug, PartialEq)]
pub enum WsMessage {
    /// `status`: the queue length (broadcast; no prompt id).
    Status {
        /// `exec_info.queue_remaining`.
        queue_remaining: Option<u32>,
    },
    /// `execution_start`.
    ExecutionStart {
        /// The prompt.
        prompt_id: String,
    },
    /// `execution_cached`: nodes taken from the cache.
    ExecutionCached {
        /// The prompt.
        prompt_id: String,
        /// The cached node ids.
        nodes: Vec<String>,
    },
    /// `executing`: a node starts; `node: None` is the prompt's true end. The replay after a
    /// reconnect carries no prompt id.
    Executing {
        /// The prompt, when given.
        prompt_id: Option<String>,
        /// The node, or `None` at the end.
        node: Option<String>,
    },
    /// `progress`: a step of a node.
    Progress {
        /// The prompt, when given.
        prompt_id: Option<String>,
        /// The node, when given.
        node: Option<String>,
        /// The current step.
        value: u64,
        /// The node's steps.
        max: u64,
    },
    /// `progress_state`: cumulative node states.
    ProgressState {
        /// The prompt.
        prompt_id: String,
        /// Nodes in state `finished`.
        finished: Vec<String>,
    },
    /// `executed`: a node's UI output.
    Executed {
        /// The prompt.
        prompt_id: String,
        /// The node.
        node: String,
        /// Its images (`output.images`).
        images: Vec<ImageRef>,
    },
    /// `execution_success`.
    Success {
        /// The prompt.
        prompt_id: String,
    },
    /// `execution_error`.
    Error {
        /// The prompt.
        prompt_id: String,
        /// What failed.
        error: ExecutionError,
    },
    /// `execution_interrupted`.
    Interrupted {
        /// The prompt.
        prompt_id: String,
    },
    /// A PNG from a binary frame (`SaveImageWebsocket`): type 1 (PREVIEW_IMAGE) with image
    /// format 2 (PNG), which names neither prompt nor node (they are the last `executing`
    /// one's), or type 4 (PREVIEW_IMAGE_WITH_METADATA) whose metadata names both.
    Image {
        /// The prompt, when the frame says.
        prompt_id: Option<String>,
        /// The node, when the frame says.
        node: Option<String>,
        /// The PNG.
        png: bytes::Bytes,
    },
    /// A message type the bridge does not use.
    Other,
}

fn string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        _ => None,
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(|item| string(Some(item))).collect())
        .unwrap_or_default()
}

fn number(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(number)) => number
            .as_u64()
            .or_else(|| number.as_f64().map(|float| float.max(0.0) as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

/// The images of a node's UI output (`{"images": [...]}`).
pub fn images_of(output: &Value) -> Vec<ImageRef> {
    output
        .get("images")
        .and_then(Value::as_array)
        .map(|images| {
            images
                .iter()
                .filter_map(|image| {
                    Some(ImageRef {
                        filename: string(image.get("filename"))?,
                        subfolder: string(image.get("subfolder")).unwrap_or_default(),
                        kind: string(image.get("type")).unwrap_or_else(|| "output".to_string()),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn execution_error(data: &Value) -> ExecutionError {
    ExecutionError {
        node_id: string(data.get("node_id")).unwrap_or_default(),
        node_type: string(data.get("node_type")).unwrap_or_default(),
        exception_type: string(data.get("exception_type")).unwrap_or_default(),
        exception_message: string(data.get("exception_message"))
            .unwrap_or_default()
            .trim_end()
            .to_string(),
    }
}

impl WsMessage {
    /// Parses a text frame; `None` when it is not ComfyUI's `{"type", "data"}` shape.
    pub fn parse(text: &str) -> Option<WsMessage> {
        let value: Value = serde_json::from_str(text).ok()?;
        let kind = value.get("type")?.as_str()?;
        let data = value.get("data").cloned().unwrap_or(Value::Null);
        Some(WsMessage::from_parts(kind, &data))
    }

    /// Parses a binary frame (`03_extras.json`, `14_masks_ws_images_history.json`): PNG images
    /// only; JPEG latent previews and text frames are `None`.
    pub fn parse_binary(frame: &[u8]) -> Option<WsMessage> {
        const PREVIEW_IMAGE: u32 = 1;
        const PREVIEW_IMAGE_WITH_METADATA: u32 = 4;
        const PNG: u32 = 2;
        let word = |at: usize| -> Option<u32> {
            Some(u32::from_be_bytes(frame.get(at..at + 4)?.try_into().ok()?))
        };
        match word(0)? {
            PREVIEW_IMAGE if word(4)? == PNG => Some(WsMessage::Image {
                prompt_id: None,
                node: None,
                png: bytes::Bytes::copy_from_slice(frame.get(8..)?),
            }),
            PREVIEW_IMAGE_WITH_METADATA => {
                let length = usize::try_from(word(4)?).ok()?;
                let meta: Value = serde_json::from_slice(frame.get(8..8 + length)?).ok()?;
                if meta.get("image_type").and_then(Value::as_str) != Some("image/png") {
                    return None;
                }
                Some(WsMessage::Image {
                    prompt_id: string(meta.get("prompt_id")),
                    node: string(meta.get("node_id")),
                    png: bytes::Bytes::copy_from_slice(frame.get(8 + length..)?),
                })
            }
            _ => None,
        }
    }

    /// Builds a message from its type and data (history `status.messages` use the same pairs).
    pub fn from_parts(kind: &str, data: &Value) -> WsMessage {
        let prompt_id = || string(data.get("prompt_id"));
        let required = |message: fn(String) -> WsMessage| match prompt_id() {
            Some(id) => message(id),
            None => WsMessage::Other,
        };
        match kind {
            "status" => WsMessage::Status {
                queue_remaining: data
                    .pointer("/status/exec_info/queue_remaining")
                    .and_then(Value::as_u64)
                    .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            },
            "execution_start" => required(|prompt_id| WsMessage::ExecutionStart { prompt_id }),
            "execution_cached" => match prompt_id() {
                Some(prompt_id) => WsMessage::ExecutionCached {
                    prompt_id,
                    nodes: strings(data.get("nodes")),
                },
                None => WsMessage::Other,
            },
            "executing" => WsMessage::Executing {
                prompt_id: prompt_id(),
                node: string(data.get("node")),
            },
            "progress" => WsMessage::Progress {
                prompt_id: prompt_id(),
                node: string(data.get("node")),
                value: number(data.get("value")),
                max: number(data.get("max")),
            },
            "progress_state" => match prompt_id() {
                Some(prompt_id) => WsMessage::ProgressState {
                    prompt_id,
                    finished: data
                        .get("nodes")
                        .and_then(Value::as_object)
                        .map(|nodes| {
                            nodes
                                .iter()
                                .filter(|(_, node)| {
                                    node.get("state").and_then(Value::as_str) == Some("finished")
                                })
                                .map(|(id, _)| id.clone())
                                .collect()
                        })
                        .unwrap_or_default(),
                },
                None => WsMessage::Other,
            },
            "executed" => match (prompt_id(), string(data.get("node"))) {
                (Some(prompt_id), Some(node)) => WsMessage::Executed {
                    prompt_id,
                    node,
                    images: data.get("output").map(images_of).unwrap_or_default(),
                },
                _ => WsMessage::Other,
            },
            "execution_success" => required(|prompt_id| WsMessage::Success { prompt_id }),
            "execution_error" => match prompt_id() {
                Some(prompt_id) => WsMessage::Error {
                    prompt_id,
                    error: execution_error(data),
                },
                None => WsMessage::Other,
            },
            "execution_interrupted" => required(|prompt_id| WsMessage::Interrupted { prompt_id }),
            _ => WsMessage::Other,
        }
    }

    /// The prompt the message is about, when it says.
    pub fn prompt_id(&self) -> Option<&str> {
        match self {
            WsMessage::ExecutionStart { prompt_id }
            | WsMessage::ExecutionCached { prompt_id, .. }
            | WsMessage::ProgressState { prompt_id, .. }
            | WsMessage::Executed { prompt_id, .. }
            | WsMessage::Success { prompt_id }
            | WsMessage::Error { prompt_id, .. }
            | WsMessage::Interrupted { prompt_id } => Some(prompt_id),
            WsMessage::Executing { prompt_id, .. }
            | WsMessage::Progress { prompt_id, .. }
            | WsMessage::Image { prompt_id, .. } => prompt_id.as_deref(),
            WsMessage::Status { .. } | WsMessage::Other => None,
        }
    }
}

/// How a prompt ended, according to its history entry.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryOutcome {
    /// `status_str` success.
    Success,
    /// Ended by `execution_error`.
    Error(ExecutionError),
    /// Ended by `execution_interrupted`.
    Interrupted,
}

/// A prompt's history entry (`GET /history/{id}`).
#[derive(Clone, Debug, PartialEq)]
pub struct HistoryEntry {
    /// How it ended.
    pub outcome: HistoryOutcome,
    /// Output images by node, in ComfyUI's order.
    pub outputs: Vec<(String, Vec<ImageRef>)>,
    /// Nodes served from the cache.
    pub cached_nodes: Vec<String>,
}

impl HistoryEntry {
    /// Reads the entry for `prompt_id` from a `/history/{id}` body (`{}` when unknown).
    pub fn from_body(body: &Value, prompt_id: &str) -> Option<HistoryEntry> {
        let entry = body.get(prompt_id)?;
        let status = entry.get("status");
        let messages: Vec<WsMessage> = status
            .and_then(|status| status.get("messages"))
            .and_then(Value::as_array)
            .map(|messages| {
                messages
                    .iter()
                    .filter_map(|pair| {
                        let kind = pair.get(0)?.as_str()?;
                        Some(WsMessage::from_parts(kind, pair.get(1)?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cached_nodes = messages
            .iter()
            .find_map(|message| match message {
                WsMessage::ExecutionCached { nodes, .. } => Some(nodes.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let status_str = status
            .and_then(|status| status.get("status_str"))
            .and_then(Value::as_str);
        let outcome = match status_str {
            Some("success") => HistoryOutcome::Success,
            _ => messages
                .iter()
                .rev()
                .find_map(|message| match message {
                    WsMessage::Error { error, .. } => Some(HistoryOutcome::Error(error.clone())),
                    WsMessage::Interrupted { .. } => Some(HistoryOutcome::Interrupted),
                    _ => None,
                })
                .unwrap_or_else(|| {
                    HistoryOutcome::Error(ExecutionError {
                        exception_message: format!(
                            "ComfyUI reported status {:?}",
                            status_str.unwrap_or("unknown")
                        ),
                        ..ExecutionError::default()
                    })
                }),
        };
        let outputs = entry
            .get("outputs")
            .and_then(Value::as_object)
            .map(|outputs| {
                outputs
                    .iter()
                    .map(|(node, output)| (node.clone(), images_of(output)))
                    .filter(|(_, images)| !images.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Some(HistoryEntry {
            outcome,
            outputs,
            cached_nodes,
        })
    }
}

/// The prompt ids in ComfyUI's queue (`GET /queue`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// Running prompt ids.
    pub running: Vec<String>,
    /// Pending prompt ids (heap order, as ComfyUI sends them).
    pub pending: Vec<String>,
}

impl QueueSnapshot {
    /// Reads a `/queue` body; items are `[number, prompt_id, graph, extra_data, outputs]`.
    pub fn from_body(body: &Value) -> QueueSnapshot {
        let ids = |key: &str| -> Vec<String> {
            body.get(key)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|item| string(item.get(1)))
                        .collect()
                })
                .unwrap_or_default()
        };
        QueueSnapshot {
            running: ids("queue_running"),
            pending: ids("queue_pending"),
        }
    }

    /// Whether the prompt is running or waiting.
    pub fn contains(&self, prompt_id: &str) -> bool {
        self.running
            .iter()
            .chain(&self.pending)
            .any(|id| id == prompt_id)
    }

    /// Whether the prompt is running.
    pub fn is_running(&self, prompt_id: &str) -> bool {
        self.running.iter().any(|id| id == prompt_id)
    }
}

/// One validation error of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeValidationError {
    /// The node id.
    pub node_id: String,
    /// Its class.
    pub class_type: String,
    /// ComfyUI's error type, e.g. `value_smaller_than_min`.
    pub kind: String,
    /// ComfyUI's message.
    pub message: String,
    /// ComfyUI's details.
    pub details: String,
    /// `extra_info.input_name`, when given.
    pub input_name: String,
}

/// A `POST /prompt` 400 body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptRejection {
    /// `error.type`, e.g. `prompt_outputs_failed_validation`.
    pub kind: String,
    /// `error.message`.
    pub message: String,
    /// `error.details`.
    pub details: String,
    /// Per-node errors.
    pub node_errors: Vec<NodeValidationError>,
}

impl PromptRejection {
    /// Reads a 400 body; unknown shapes keep their text as the message.
    pub fn from_body(text: &str) -> PromptRejection {
        let Ok(body) = serde_json::from_str::<Value>(text) else {
            return PromptRejection {
                kind: "unknown".to_string(),
                message: text.chars().take(500).collect(),
                details: String::new(),
                node_errors: Vec::new(),
            };
        };
        let error = body.get("error");
        let field = |key: &str| {
            error
                .and_then(|error| string(error.get(key)))
                .unwrap_or_default()
        };
        PromptRejection {
            kind: field("type"),
            message: field("message"),
            details: field("details"),
            node_errors: body
                .get("node_errors")
                .and_then(Value::as_object)
                .map(node_errors)
                .unwrap_or_default(),
        }
    }
}

/// Flattens `node_errors` (`{id: {errors: [...], class_type}}`) into one entry per error.
pub fn node_errors(map: &Map<String, Value>) -> Vec<NodeValidationError> {
    let mut out = Vec::new();
    for (node_id, node) in map {
        let class_type = string(node.get("class_type")).unwrap_or_default();
        for error in node
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push(NodeValidationError {
                node_id: node_id.clone(),
                class_type: class_type.clone(),
                kind: string(error.get("type")).unwrap_or_default(),
                message: string(error.get("message")).unwrap_or_default(),
                details: string(error.get("details")).unwrap_or_default(),
                input_name: error
                    .pointer("/extra_info/input_name")
                    .and_then(|name| string(Some(name)))
                    .unwrap_or_default(),
            });
        }
    }
    out
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
