//! What keeps tenants apart on a shared ComfyUI: the policy check before `POST /prompt`, image
//! outputs that never persist on the backend (or at least cannot be guessed), and images
//! stored without the prompt text ComfyUI embeds in them.
//!
//! - Where the backend has `SaveImageWebsocket` (listed by `/object_info`), every `SaveImage`
//!   and `PreviewImage` node becomes one: the images arrive as binary WebSocket frames and
//!   nothing is written to the backend's disk.
//! - Elsewhere, `SaveImage` writes under a fresh per-run prefix (`easel/<128-bit hex>/img`,
//!   whatever the caller asked) and `PreviewImage` becomes such a `SaveImage` (its own temp
//!   names are a 5-letter prefix and a counter: guessable). The files stay (ComfyUI has no
//!   route to delete them) but no other prompt can name them, and the policy refuses
//!   `[output]`/`[temp]` names anyway.

pub mod png_text;

use std::collections::HashSet;

use serde_json::{Value, json};

/// The node that sends its images over the WebSocket and writes nothing.
pub const SAVE_IMAGE_WEBSOCKET: &str = "SaveImageWebsocket";

/// Classes whose images become run outputs.
const IMAGE_OUTPUTS: &[&str] = &["SaveImage", "PreviewImage"];

/// A graph ready for one backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The graph to post.
    pub graph: Value,
    /// Nodes whose images arrive as WebSocket frames (rewritten ones and the caller's own
    /// `SaveImageWebsocket` nodes).
    pub streamed_nodes: HashSet<String>,
}

/// An unguessable prefix for one run's files: 128 random bits.
pub fn run_prefix() -> String {
    format!("easel/{:032x}/img", rand::random::<u128>())
}

/// Rewrites the image outputs of `graph` for a backend that has (`websocket`) or lacks
/// `SaveImageWebsocket`; `prefix` is the run's file prefix for the latter.
pub fn prepare(graph: &Value, websocket: bool, prefix: &str) -> Prepared {
    let mut graph = graph.clone();
    let mut streamed_nodes = HashSet::new();
    if let Some(nodes) = graph.as_object_mut() {
        for (node_id, node) in nodes.iter_mut() {
            let class = node
                .get("class_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if class == SAVE_IMAGE_WEBSOCKET {
                streamed_nodes.insert(node_id.clone());
                continue;
            }
            if !IMAGE_OUTPUTS.contains(&class.as_str()) {
                continue;
            }
            let images = node
                .get("inputs")
                .and_then(|inputs| inputs.get("images"))
                .cloned()
                .unwrap_or(Value::Null);
            *node = if websocket {
                streamed_nodes.insert(node_id.clone());
                json!({"class_type": SAVE_IMAGE_WEBSOCKET, "inputs": {"images": images}})
            } else {
                json!({"class_type": "SaveImage", "inputs": {"images": images, "filename_prefix": prefix}})
            };
        }
    }
    Prepared {
        graph,
        streamed_nodes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph() -> Value {
        json!({
            "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mine"}},
            "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
            "4": {"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}},
        })
    }

    #[test]
    fn outputs_stream_where_the_backend_can() {
        let prepared = prepare(&graph(), true, "unused");
        assert_eq!(
            prepared.graph["2"],
            json!({"class_type": "SaveImageWebsocket", "inputs": {"images": ["1", 0]}})
        );
        assert_eq!(prepared.graph["3"]["class_type"], "SaveImageWebsocket");
        let mut streamed: Vec<&String> = prepared.streamed_nodes.iter().collect();
        streamed.sort();
        assert_eq!(streamed, ["2", "3", "4"]);
        assert_eq!(prepared.graph["1"], graph()["1"]);
    }

    #[test]
    fn elsewhere_every_image_gets_the_runs_prefix() {
        let prefix = run_prefix();
        assert_eq!(prefix.len(), "easel//img".len() + 32);
        assert_ne!(prefix, run_prefix());
        let prepared = prepare(&graph(), false, &prefix);
        for node in ["2", "3"] {
            assert_eq!(prepared.graph[node]["class_type"], "SaveImage");
            assert_eq!(
                prepared.graph[node]["inputs"]["filename_prefix"],
                prefix.as_str()
            );
        }
        assert_eq!(prepared.streamed_nodes.len(), 1);
    }
}
