//! The simulator's settings and the failures it can inject.

use std::path::PathBuf;
use std::time::Duration;

/// A failure the simulator can inject into a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FaultKind {
    /// A runtime `execution_error` (`exception_type` `RuntimeError`).
    Error,
    /// An out-of-memory `execution_error` (`exception_type` `torch.OutOfMemoryError`).
    Oom,
    /// The server dies mid-run: every socket dropped without a close frame and the listener
    /// closed (the binary exits the process instead).
    Die,
}

impl FaultKind {
    /// Parses the names used in `extra_data.easel_sim.fault` and `[[sim:…]]` markers.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "error" => Some(Self::Error),
            "oom" => Some(Self::Oom),
            "die" => Some(Self::Die),
            _ => None,
        }
    }
}

/// The simulator's configuration. `Default` is a zero-delay, failure-free CPU server with
/// two checkpoints and directories in a fresh temporary directory.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// SaveImage's directory (`type=output`); `None` → a temporary directory.
    pub output_dir: Option<PathBuf>,
    /// Uploads and LoadImage (`type=input`); `None` → a temporary directory.
    pub input_dir: Option<PathBuf>,
    /// PreviewImage's directory (`type=temp`); `None` → a temporary directory.
    pub temp_dir: Option<PathBuf>,
    /// What `/models/checkpoints` and `CheckpointLoaderSimple.ckpt_name` list.
    pub checkpoints: Vec<String>,
    /// Delay per sampler step (KSampler `steps` drives the `progress` messages).
    pub step_delay: Duration,
    /// Delay for every other executed node.
    pub node_delay: Duration,
    /// Delay before every HTTP response (the header `x-easel-sim-delay-ms` adds per request).
    pub http_delay: Duration,
    /// A simulated GPU: `Some((total, free))` bytes of VRAM makes `/system_stats` report a CUDA
    /// device; `None` reports the CPU like the recording.
    pub vram: Option<(u64, u64)>,
    /// A failure injected into every prompt.
    pub fault: Option<FaultKind>,
    /// The sampler step at which `fault` fires (`None`: when the target node starts).
    pub fault_at_step: Option<u32>,
    /// Die at this sampler step of every prompt.
    pub die_at_step: Option<u32>,
    /// Die mid-run in the prompt that follows this many executed prompts.
    pub die_after_prompts: Option<u64>,
    /// Never accept connections: the listener is closed at start (connections are refused).
    pub refuse_connections: bool,
    /// Dying exits the process (the binary) instead of dropping sockets (in-process use).
    pub exit_process_on_die: bool,
    /// How many history entries are kept (ComfyUI: 10000).
    pub history_cap: usize,
    /// Honour per-request fault controls (`extra_data.easel_sim` and `[[sim:…]]` markers).
    /// Off by default: the markers sit in user text (a prompt), so a simulator serving real
    /// users (`easel up`) must never act on them. Only tests turn this on.
    pub honour_request_faults: bool,
    /// Node classes this server does not have (e.g. `SaveImageWebsocket`, a custom node that
    /// not every ComfyUI installs): absent from `/object_info`, refused in prompts.
    pub without_nodes: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            output_dir: None,
            input_dir: None,
            temp_dir: None,
            checkpoints: default_checkpoints(),
            step_delay: Duration::ZERO,
            node_delay: Duration::ZERO,
            http_delay: Duration::ZERO,
            vram: None,
            fault: None,
            fault_at_step: None,
            die_at_step: None,
            die_after_prompts: None,
            refuse_connections: false,
            exit_process_on_die: false,
            history_cap: 10_000,
            honour_request_faults: false,
            without_nodes: Vec::new(),
        }
    }
}

impl SimConfig {
    /// The default configuration with per-request fault controls honoured: for tests that
    /// inject failures with `[[sim:…]]` markers or `extra_data.easel_sim`.
    pub fn with_request_faults() -> Self {
        Self {
            honour_request_faults: true,
            ..Self::default()
        }
    }
}

/// The default checkpoint names.
pub fn default_checkpoints() -> Vec<String> {
    vec![
        "sd_xl_base_1.0.safetensors".to_owned(),
        "v1-5-pruned-emaonly.safetensors".to_owned(),
    ]
}

/// Per-request controls, read from `extra_data.easel_sim` and from `[[sim:…]]` markers in any
/// string input of the graph, only when [`SimConfig::honour_request_faults`] is on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestControl {
    /// The failure to inject.
    pub fault: Option<FaultKind>,
    /// The node at which it fires (default: the first sampler, else the first node run).
    pub node: Option<String>,
    /// The sampler step at which it fires.
    pub step: Option<u32>,
    /// Overrides the per-step delay for this prompt.
    pub step_delay: Option<Duration>,
    /// Overrides the per-node delay for this prompt.
    pub node_delay: Option<Duration>,
    /// Stop listening for this long when the prompt is accepted (connections are refused).
    pub refuse_connections: Option<Duration>,
}

impl RequestControl {
    /// Reads `extra_data.easel_sim` and the markers in the graph's string inputs.
    pub fn from_request(
        extra_data: &serde_json::Map<String, serde_json::Value>,
        graph: &serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        let mut control = Self::default();
        if let Some(sim) = extra_data.get("easel_sim").and_then(|sim| sim.as_object()) {
            let millis = |key: &str| {
                sim.get(key)
                    .and_then(serde_json::Value::as_u64)
                    .map(Duration::from_millis)
            };
            control.fault = sim
                .get("fault")
                .and_then(|fault| fault.as_str())
                .and_then(FaultKind::parse);
            control.node = sim
                .get("node")
                .and_then(|node| node.as_str())
                .map(str::to_owned);
            control.step = sim
                .get("step")
                .and_then(serde_json::Value::as_u64)
                .and_then(|step| u32::try_from(step).ok());
            control.step_delay = millis("step_delay_ms");
            control.node_delay = millis("node_delay_ms");
            control.refuse_connections = millis("refuse_connections_ms");
        }
        for node in graph.values() {
            let Some(inputs) = node.get("inputs").and_then(|inputs| inputs.as_object()) else {
                continue;
            };
            for text in inputs.values().filter_map(serde_json::Value::as_str) {
                control.apply_markers(text);
            }
        }
        control
    }

    fn apply_markers(&mut self, text: &str) {
        let mut rest = text;
        while let Some(start) = rest.find("[[sim:") {
            let after = &rest[start + 6..];
            let Some(end) = after.find("]]") else { break };
            let marker = &after[..end];
            rest = &after[end + 2..];
            let (name, argument) = marker.split_once('=').unwrap_or((marker, ""));
            let number = argument.parse::<u64>().ok();
            match name {
                "step" => self.step = number.and_then(|step| u32::try_from(step).ok()),
                "slow" => self.step_delay = number.map(Duration::from_millis),
                other => {
                    if let Some(fault) = FaultKind::parse(other) {
                        self.fault = Some(fault);
                    }
                }
            }
        }
    }

    /// Whether anything in this control asks for a failure.
    pub fn has_fault(&self) -> bool {
        self.fault.is_some()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn markers_and_extra_data() {
        let graph = json!({"6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat [[sim:oom]] [[sim:step=3]]"}}});
        let control = RequestControl::from_request(
            &serde_json::Map::new(),
            graph.as_object().expect("object"),
        );
        assert_eq!(control.fault, Some(FaultKind::Oom));
        assert_eq!(control.step, Some(3));
        let extra = json!({"easel_sim": {"fault": "die", "node": "5", "step_delay_ms": 20}});
        let control = RequestControl::from_request(
            extra.as_object().expect("object"),
            &serde_json::Map::new(),
        );
        assert_eq!(control.fault, Some(FaultKind::Die));
        assert_eq!(control.node.as_deref(), Some("5"));
        assert_eq!(control.step_delay, Some(Duration::from_millis(20)));
    }
}
