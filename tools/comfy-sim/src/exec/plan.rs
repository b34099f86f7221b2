//! Execution order and cache keys, after ComfyUI's `ExecutionList` (depth-first discovery,
//! cached inputs not scheduled, output nodes picked first) and input-signature caching.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::files::Dirs;
use crate::nodes::NodeCatalog;
use crate::pyjson;

fn links(node: &Value) -> Vec<(String, String)> {
    node.get("inputs")
        .and_then(Value::as_object)
        .map(|inputs| {
            inputs
                .iter()
                .filter_map(|(name, value)| {
                    let link = value.as_array().filter(|link| link.len() == 2)?;
                    Some((name.clone(), pyjson::py_str(&link[0])))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Cache keys for every node of a graph: the class, the literal inputs and the keys of linked
/// nodes, recursively; LoadImage also hashes its file (ComfyUI's `IS_CHANGED`).
pub fn signatures(graph: &Map<String, Value>, dirs: &Dirs) -> HashMap<String, String> {
    let mut memo = HashMap::new();
    for node_id in graph.keys() {
        signature(graph, node_id, dirs, &mut memo, &mut HashSet::new());
    }
    memo
}

fn signature(
    graph: &Map<String, Value>,
    node_id: &str,
    dirs: &Dirs,
    memo: &mut HashMap<String, String>,
    visiting: &mut HashSet<String>,
) -> String {
    if let Some(known) = memo.get(node_id) {
        return known.clone();
    }
    if !visiting.insert(node_id.to_owned()) {
        return format!("cycle:{node_id}");
    }
    let Some(node) = graph.get(node_id) else {
        return format!("missing:{node_id}");
    };
    let class_type = node
        .get("class_type")
        .map(pyjson::py_str)
        .unwrap_or_default();
    let mut hasher = Sha256::new();
    hasher.update(class_type.as_bytes());
    // SaveImageWebsocket's `IS_CHANGED` returns `time.time()`: it is never cached, so every
    // run sends its images again (the bridge relies on that).
    if class_type == "SaveImageWebsocket" {
        hasher.update(uuid::Uuid::new_v4().as_bytes());
    }
    if let Some(inputs) = node.get("inputs").and_then(Value::as_object) {
        let mut names: Vec<&String> = inputs.keys().collect();
        names.sort();
        for name in names {
            hasher.update(b"\0");
            hasher.update(name.as_bytes());
            hasher.update(b"=");
            match inputs.get(name.as_str()) {
                Some(Value::Array(link)) if link.len() == 2 => {
                    let source = pyjson::py_str(&link[0]);
                    let source_key = signature(graph, &source, dirs, memo, visiting);
                    hasher.update(source_key.as_bytes());
                    hasher.update(pyjson::to_string(&link[1]).as_bytes());
                }
                Some(value) => hasher.update(pyjson::to_string(value).as_bytes()),
                None => {}
            }
        }
        if class_type == "LoadImage"
            && let Some(path) = inputs
                .get("image")
                .and_then(Value::as_str)
                .and_then(|name| dirs.resolve_annotated(name))
            && let Ok(bytes) = std::fs::read(path)
        {
            hasher.update(Sha256::digest(&bytes));
        }
    }
    visiting.remove(node_id);
    let key = hex::encode(hasher.finalize());
    memo.insert(node_id.to_owned(), key.clone());
    key
}

/// The scheduling state of one run.
pub struct ExecutionList {
    pending: Vec<String>,
    blocked_by: HashMap<String, HashSet<String>>,
    blocking: HashMap<String, Vec<String>>,
    outputs: HashSet<String>,
}

impl ExecutionList {
    /// Schedules `outputs` and their uncached ancestors.
    pub fn new(
        graph: &Map<String, Value>,
        outputs: &[String],
        catalog: &NodeCatalog,
        is_cached: impl Fn(&str) -> bool,
    ) -> Self {
        let mut list = Self {
            pending: Vec::new(),
            blocked_by: HashMap::new(),
            blocking: HashMap::new(),
            outputs: graph
                .iter()
                .filter(|(_, node)| {
                    node.get("class_type")
                        .and_then(Value::as_str)
                        .is_some_and(|class_type| catalog.is_output(class_type))
                })
                .map(|(id, _)| id.clone())
                .collect(),
        };
        for output in outputs {
            let mut stack = vec![output.clone()];
            let mut edges = Vec::new();
            while let Some(node_id) = stack.pop() {
                if list.pending.contains(&node_id) || !graph.contains_key(&node_id) {
                    continue;
                }
                list.pending.push(node_id.clone());
                list.blocked_by.entry(node_id.clone()).or_default();
                for (_, source) in links(&graph[&node_id]) {
                    if !is_cached(&source) {
                        stack.push(source.clone());
                        edges.push((source, node_id.clone()));
                    }
                }
            }
            for (source, target) in edges {
                let blockers = list.blocked_by.entry(target.clone()).or_default();
                if blockers.insert(source.clone()) {
                    list.blocking.entry(source).or_default().push(target);
                }
            }
        }
        list
    }

    /// Every node still scheduled.
    pub fn remaining(&self) -> &[String] {
        &self.pending
    }

    /// The next node to run (ComfyUI's `ux_friendly_pick_node`), or `None` when done.
    pub fn next(&self) -> Option<String> {
        let available: Vec<&String> = self
            .pending
            .iter()
            .filter(|id| self.blocked_by.get(*id).is_none_or(HashSet::is_empty))
            .collect();
        let blocks_output = |id: &str, depth: usize| -> bool {
            let direct = self.blocking.get(id).cloned().unwrap_or_default();
            if depth == 1 {
                return direct.iter().any(|target| self.outputs.contains(target));
            }
            direct.iter().any(|target| {
                self.blocking
                    .get(target)
                    .is_some_and(|next| next.iter().any(|node| self.outputs.contains(node)))
            })
        };
        available
            .iter()
            .find(|id| self.outputs.contains(**id))
            .or_else(|| available.iter().find(|id| blocks_output(id, 1)))
            .or_else(|| available.iter().find(|id| blocks_output(id, 2)))
            .or_else(|| available.first())
            .map(|id| (*id).clone())
    }

    /// Marks a node done, unblocking its dependents.
    pub fn complete(&mut self, node_id: &str) {
        self.pending.retain(|id| id != node_id);
        if let Some(targets) = self.blocking.get(node_id) {
            for target in targets {
                if let Some(blockers) = self.blocked_by.get_mut(target) {
                    blockers.remove(node_id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn chain_runs_in_dependency_order() {
        let catalog = NodeCatalog::load().expect("catalog");
        let graph = json!({
            "1": {"class_type": "EmptyImage", "inputs": {}},
            "2": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0]}},
            "9": {"class_type": "SaveImage", "inputs": {"images": ["2", 0]}},
        });
        let graph = graph.as_object().expect("object");
        let mut list = ExecutionList::new(graph, &["9".to_owned()], &catalog, |_| false);
        let mut order = Vec::new();
        while let Some(next) = list.next() {
            list.complete(&next);
            order.push(next);
        }
        assert_eq!(order, ["1", "2", "9"]);
        let cached = ExecutionList::new(graph, &["9".to_owned()], &catalog, |id| id != "9");
        assert_eq!(cached.remaining(), ["9"]);
    }
}
