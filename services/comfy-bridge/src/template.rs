//! Graphs: the parameterized text-to-image template and raw workflows with overrides.
//!
//! The text-to-image rules (defaults, the product's caps, tier limits) are the jobs service's:
//! it resolves every parameter at submit and the bridge trusts what it gets. The bridge checks
//! only what ComfyUI itself needs: its nodes' input ranges, and what the bridge must carry (a
//! batch's images travel whole in events). A parameter a direct caller left unset (proto3
//! zero) still needs a value in the graph, so it gets ComfyUI's usual one.

use easel_proto::jobs::v1::{Sampler, Scheduler, TextToImage, Workflow};
use easel_proto::names::ShortName;
use serde_json::{Map, Value, json};

use crate::error::BridgeError;

/// Most images in one run (each travels whole in one event).
pub const MAX_BATCH: u32 = 64;
/// Most nodes in a raw graph.
pub const MAX_NODES: usize = 10_000;
/// `KSampler.steps`' maximum in ComfyUI.
const COMFY_MAX_STEPS: u32 = 10_000;
/// `KSampler.cfg`'s range in ComfyUI.
const COMFY_CFG: std::ops::RangeInclusive<f64> = 0.0..=100.0;
/// `EmptyLatentImage` sides in ComfyUI: a multiple of 8 in this range (`MAX_RESOLUTION`).
const COMFY_SIDE: std::ops::RangeInclusive<u32> = 16..=16384;

/// A graph ready for `POST /prompt`, with what the events report about it.
#[derive(Clone, Debug, PartialEq)]
pub struct BuiltGraph {
    /// The API-format graph.
    pub graph: Value,
    /// The seed the graph uses (resolved for the template; read from the graph otherwise).
    pub seed: u64,
    /// The checkpoint it loads, if any.
    pub checkpoint: Option<String>,
    /// Class of each node, for progress events.
    pub node_classes: Map<String, Value>,
}

impl BuiltGraph {
    fn new(graph: Value, seed: u64, checkpoint: Option<String>) -> BuiltGraph {
        let node_classes = graph
            .as_object()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|(id, node)| {
                        let class = node.get("class_type").cloned().unwrap_or(Value::Null);
                        (id.clone(), class)
                    })
                    .collect()
            })
            .unwrap_or_default();
        BuiltGraph {
            graph,
            seed,
            checkpoint,
            node_classes,
        }
    }

    /// The node's class, or "".
    pub fn class_of(&self, node_id: &str) -> String {
        self.node_classes
            .get(node_id)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    /// Nodes in the graph.
    pub fn node_count(&self) -> u32 {
        u32::try_from(self.node_classes.len()).unwrap_or(u32::MAX)
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> BridgeError {
    BridgeError::InvalidField {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// ComfyUI's name of a sampler: the enum name without its prefix, lowercased.
pub fn sampler_name(value: i32) -> Result<String, BridgeError> {
    match Sampler::try_from(value) {
        Ok(Sampler::Unspecified) => Ok("euler".to_string()),
        Ok(sampler) => Ok(sampler.short_name()),
        Err(_) => Err(invalid(
            "text_to_image.sampler",
            format!("{value} is not a known sampler"),
        )),
    }
}

/// ComfyUI's name of a scheduler.
pub fn scheduler_name(value: i32) -> Result<String, BridgeError> {
    match Scheduler::try_from(value) {
        Ok(Scheduler::Unspecified) => Ok("normal".to_string()),
        Ok(scheduler) => Ok(scheduler.short_name()),
        Err(_) => Err(invalid(
            "text_to_image.scheduler",
            format!("{value} is not a known scheduler"),
        )),
    }
}

fn dimension(field: &str, value: u32) -> Result<u32, BridgeError> {
    let value = if value == 0 { 1024 } else { value };
    if !COMFY_SIDE.contains(&value) || value % 8 != 0 {
        return Err(invalid(
            field,
            format!("{value} is not a multiple of 8 between 16 and 16384"),
        ));
    }
    Ok(value)
}

/// Builds the text-to-image graph. `default_checkpoint` is used when the request names none;
/// `random_seed` when it has no seed.
pub fn text_to_image(
    request: &TextToImage,
    default_checkpoint: Option<&str>,
    random_seed: impl FnOnce() -> u64,
) -> Result<BuiltGraph, BridgeError> {
    if request.prompt.trim().is_empty() {
        return Err(invalid("text_to_image.prompt", "is required"));
    }
    let width = dimension("text_to_image.width", request.width)?;
    let height = dimension("text_to_image.height", request.height)?;
    let steps = if request.steps == 0 {
        20
    } else {
        request.steps
    };
    if steps > COMFY_MAX_STEPS {
        return Err(invalid(
            "text_to_image.steps",
            format!("must be at most {COMFY_MAX_STEPS}"),
        ));
    }
    let cfg = request.cfg_scale.unwrap_or(7.0);
    if !cfg.is_finite() || !COMFY_CFG.contains(&cfg) {
        return Err(invalid(
            "text_to_image.cfg_scale",
            "must be between 0 and 100",
        ));
    }
    let batch = if request.batch_size == 0 {
        1
    } else {
        request.batch_size
    };
    if batch > MAX_BATCH {
        return Err(invalid(
            "text_to_image.batch_size",
            format!("must be at most {MAX_BATCH}"),
        ));
    }
    let sampler = sampler_name(request.sampler)?;
    let scheduler = scheduler_name(request.scheduler)?;
    let checkpoint = if request.checkpoint.is_empty() {
        default_checkpoint
            .map(str::to_string)
            .ok_or_else(|| invalid("text_to_image.checkpoint", "no default checkpoint is known"))?
    } else {
        request.checkpoint.clone()
    };
    let seed = request.seed.unwrap_or_else(random_seed);
    // Node ids as in ComfyUI's default workflow, so errors read the way ComfyUI users expect.
    let graph = json!({
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": request.prompt, "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": request.negative_prompt, "clip": ["4", 1]}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "KSampler", "inputs": {
            "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0],
            "seed": seed, "steps": steps, "cfg": cfg, "sampler_name": sampler,
            "scheduler": scheduler, "denoise": 1.0,
        }},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "easel"}},
    });
    Ok(BuiltGraph::new(graph, seed, Some(checkpoint)))
}

/// Applies a raw workflow's overrides; seeds stay as given.
pub fn raw_workflow(workflow: &Workflow) -> Result<BuiltGraph, BridgeError> {
    let graph = workflow
        .graph
        .as_ref()
        .ok_or_else(|| invalid("raw.graph", "is required"))?;
    let mut graph = serde_json::to_value(graph)
        .map(integral_deep)
        .map_err(|error| invalid("raw.graph", format!("is not a JSON object: {error}")))?;
    let nodes = graph
        .as_object_mut()
        .ok_or_else(|| invalid("raw.graph", "is not a JSON object"))?;
    if nodes.is_empty() {
        return Err(invalid("raw.graph", "has no nodes"));
    }
    if nodes.len() > MAX_NODES {
        return Err(invalid(
            "raw.graph",
            format!("has more than {MAX_NODES} nodes"),
        ));
    }
    for (index, over) in workflow.overrides.iter().enumerate() {
        let field = format!("raw.overrides[{index}]");
        if over.input.is_empty() {
            return Err(invalid(&format!("{field}.input"), "is required"));
        }
        let node = nodes.get_mut(&over.node_id).ok_or_else(|| {
            invalid(
                &format!("{field}.node_id"),
                format!("node {:?} is not in the graph", over.node_id),
            )
        })?;
        let inputs = node
            .as_object_mut()
            .map(|node| node.entry("inputs").or_insert_with(|| json!({})))
            .and_then(Value::as_object_mut)
            .ok_or_else(|| {
                invalid(
                    &format!("{field}.node_id"),
                    format!("node {:?} has no inputs object", over.node_id),
                )
            })?;
        let value = match &over.value {
            Some(value) => serde_json::to_value(value)
                .map_err(|error| invalid(&format!("{field}.value"), error.to_string()))?,
            None => return Err(invalid(&format!("{field}.value"), "is required")),
        };
        inputs.insert(over.input.clone(), integral(value));
    }
    let checkpoint = find_input(&graph, "CheckpointLoaderSimple", "ckpt_name")
        .and_then(|value| value.as_str().map(str::to_string));
    let seed = find_input(&graph, "KSampler", "seed")
        .or_else(|| find_input(&graph, "KSamplerAdvanced", "noise_seed"))
        .and_then(|value| value.as_u64())
        .unwrap_or(0);
    Ok(BuiltGraph::new(graph, seed, checkpoint))
}

/// protobuf's `Value` has only doubles: `20.0` from an override becomes `20` when whole, as a
/// client writing JSON would have sent it (ComfyUI coerces either way, but seeds above 2^53
/// cannot travel as doubles at all; those belong in the graph itself).
fn integral(value: Value) -> Value {
    match value.as_f64() {
        Some(float) if value.is_f64() && float.fract() == 0.0 && float.abs() < 9.0e15 => {
            json!(float as i64)
        }
        _ => value,
    }
}

/// [`integral`] through a whole graph: `google.protobuf.Struct` carries every number as a
/// double, and ComfyUI's INT inputs (links' output indexes too) read best as integers.
fn integral_deep(value: Value) -> Value {
    match value {
        Value::Array(items) => Value::Array(items.into_iter().map(integral_deep).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| (key, integral_deep(value)))
                .collect(),
        ),
        other => integral(other),
    }
}

fn find_input<'a>(graph: &'a Value, class_type: &str, input: &str) -> Option<&'a Value> {
    graph.as_object()?.values().find_map(|node| {
        (node.get("class_type")?.as_str()? == class_type)
            .then(|| node.get("inputs")?.get(input))
            .flatten()
    })
}

#[cfg(test)]
#[path = "template_tests.rs"]
mod tests;
