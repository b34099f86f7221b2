//! The single worker: takes prompts off the heap in order, runs them node by node with
//! ComfyUI's message sequence, caches node results between prompts, and records history.

mod nodes;
mod plan;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::config::FaultKind;
use crate::image::Image;
use crate::state::{QueueItem, Shared};
use crate::ws::message;

use self::plan::ExecutionList;

/// Milliseconds since the epoch, as ComfyUI's `timestamp` fields.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A value flowing along a link.
#[derive(Debug, Clone)]
pub enum Data {
    /// MODEL, CLIP or VAE: only the checkpoint name matters here.
    Model(String),
    /// CONDITIONING: the encoded text.
    Conditioning(String),
    /// LATENT: size, batch and, once sampled, the generation key that decoding turns into pixels.
    Latent {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Batch size.
        batch: u32,
        /// Hash of everything that determines the sampled image.
        generation: Option<String>,
    },
    /// IMAGE: a batch.
    Images(Arc<Vec<Image>>),
    /// MASK: a batch of (width, height, values). No simulated node reads masks yet, but a
    /// MASK link still carries real data.
    #[allow(dead_code)]
    Mask(Arc<Vec<(u32, u32, Vec<f32>)>>),
}

/// A node's result: its outputs and its UI output (what `executed` carries).
#[derive(Debug, Clone)]
pub struct NodeOutput {
    /// One value per return type.
    pub values: Vec<Data>,
    /// `{"images": [...]}` for nodes with a UI output.
    pub ui: Option<Value>,
}

/// Why a node stopped.
#[derive(Debug)]
pub enum Failure {
    /// A Python exception: becomes `execution_error`.
    Error {
        /// e.g. `RuntimeError`.
        exception_type: String,
        /// `str(exception)`.
        message: String,
    },
    /// `/interrupt` took effect.
    Interrupted,
    /// The server is dying (injected) or was killed.
    Died,
}

impl Failure {
    /// A `RuntimeError` with the given message.
    pub fn runtime(message: impl Into<String>) -> Self {
        Self::Error {
            exception_type: "RuntimeError".to_owned(),
            message: message.into(),
        }
    }
}

const OOM_TIPS: &str = "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you might have accidentally set the batch_size to a large number.";
const TRACEBACK: [&str; 3] = [
    "  File \"/opt/ComfyUI/execution.py\", line 496, in execute\n    output_data, output_ui, has_subgraph, has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    "  File \"/opt/ComfyUI/execution.py\", line 315, in get_output_data\n    return_values = await _async_map_node_over_list(prompt_id, unique_id, obj, input_data_all, obj.FUNCTION, allow_interrupt=True, execution_block_cb=execution_block_cb, pre_execute_cb=pre_execute_cb, hidden_inputs=hidden_inputs)\n",
    "  File \"/opt/ComfyUI/execution.py\", line 277, in process_inputs\n    result = f(**inputs)\n             ^^^^^^^^^^^\n",
];

struct CacheEntry {
    output: NodeOutput,
}

/// The worker loop; returns when the server stops or dies.
pub async fn worker(shared: Arc<Shared>) {
    let mut cache: HashMap<String, CacheEntry> = HashMap::new();
    let mut prompts_started: u64 = 0;
    loop {
        let item = loop {
            tokio::select! {
                () = shared.hold.released() => {}
                () = shared.kill.cancelled() => return,
                () = shared.shutdown.cancelled() => return,
            }
            {
                let mut queue = shared.lock_queue();
                if let Some(item) = queue.pop() {
                    queue.running = Some(item.clone());
                    // Reset under the queue lock: /interrupt checks `running` under it too.
                    shared.interrupt.store(false, Ordering::SeqCst);
                    shared.publish_status(&queue);
                    break item;
                }
            }
            tokio::select! {
                () = shared.queue_changed.notified() => {}
                () = shared.kill.cancelled() => return,
                () = shared.shutdown.cancelled() => return,
            }
        };
        let die_now = shared
            .config
            .die_after_prompts
            .is_some_and(|limit| prompts_started >= limit);
        prompts_started += 1;
        tracing::info!(prompt_id = %item.prompt_id, "prompt started");
        let mut run = Run::new(&shared, &item, die_now);
        let outcome = run.execute(&mut cache).await;
        if matches!(outcome, Outcome::Died) {
            die(&shared);
            return;
        }
        run.finish(outcome);
    }
}

fn die(shared: &Shared) {
    if shared.config.exit_process_on_die {
        tracing::error!("injected death: exiting the process");
        std::process::exit(137);
    }
    tracing::warn!("injected death: dropping every connection");
    shared.kill.cancel();
    shared.hub.disconnect_all();
}

enum Outcome {
    Success,
    Error(Value),
    Interrupted(Value),
    Died,
}

/// One prompt's execution.
pub struct Run<'a> {
    shared: &'a Arc<Shared>,
    item: &'a QueueItem,
    client: Option<String>,
    progress: Map<String, Value>,
    messages: Vec<Value>,
    executed: Vec<String>,
    ui_outputs: Map<String, Value>,
    step_delay: Duration,
    node_delay: Duration,
    fault: Option<FaultKind>,
    fault_node: Option<String>,
    fault_step: Option<u32>,
    die_now: bool,
    first_node_started: bool,
    has_sampler: bool,
}

impl<'a> Run<'a> {
    fn new(shared: &'a Arc<Shared>, item: &'a QueueItem, die_now: bool) -> Self {
        let control = &item.control;
        let config = &shared.config;
        Self {
            shared,
            item,
            client: item.client_id(),
            progress: Map::new(),
            messages: Vec::new(),
            executed: Vec::new(),
            ui_outputs: Map::new(),
            step_delay: control.step_delay.unwrap_or(config.step_delay),
            node_delay: control.node_delay.unwrap_or(config.node_delay),
            fault: control.fault.or(config.fault),
            fault_node: control.node.clone(),
            fault_step: control.step.or(config.fault_at_step),
            die_now,
            first_node_started: false,
            has_sampler: item
                .graph
                .values()
                .any(|node| node.get("class_type").and_then(Value::as_str) == Some("KSampler")),
        }
    }

    fn prompt_id(&self) -> &str {
        &self.item.prompt_id
    }

    /// Sends a prompt message to the prompt's client.
    fn send(&self, kind: &str, data: Value) {
        self.shared
            .hub
            .send_to(self.client.as_deref(), message(kind, data));
    }

    fn record(&mut self, kind: &str, data: Value) {
        self.send(kind, data.clone());
        self.messages.push(json!([kind, data]));
    }

    fn publish_progress(&self) {
        let text = message(
            "progress_state",
            json!({"prompt_id": self.prompt_id(), "nodes": self.progress}),
        );
        match &self.client {
            Some(client) => self.shared.hub.send_to(Some(client), text),
            // Without a client id, progress_state goes to everyone (as recorded).
            None => self.shared.hub.broadcast(&text),
        }
    }

    fn set_progress(&mut self, node_id: &str, value: Value, max: Value, state: &str) {
        let entry = json!({
            "value": value, "max": max, "state": state, "node_id": node_id,
            "prompt_id": self.prompt_id(), "display_node_id": node_id,
            "parent_node_id": null, "real_node_id": node_id,
        });
        self.progress.insert(node_id.to_owned(), entry);
        self.publish_progress();
    }

    /// Reports sampler-style progress (`progress_state`, optional preview, `progress`).
    pub fn report_progress(&mut self, node_id: &str, value: u64, max: u64, preview: Option<&[u8]>) {
        self.set_progress(node_id, json!(value), json!(max), "running");
        let metadata = self.shared.hub.wants_metadata(self.client.as_deref());
        if let Some(png) = preview
            && metadata
        {
            let meta = crate::pyjson::to_string(&json!({
                "node_id": node_id, "prompt_id": self.prompt_id(), "display_node_id": node_id,
                "parent_node_id": null, "real_node_id": node_id, "image_type": "image/png",
            }));
            let mut frame = 4u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(0).to_be_bytes());
            frame.extend_from_slice(meta.as_bytes());
            frame.extend_from_slice(png);
            self.shared
                .hub
                .send_binary_to(self.client.as_deref(), |_| frame);
        }
        self.send(
            "progress",
            json!({"value": value, "max": max, "prompt_id": self.prompt_id(), "node": node_id}),
        );
        if let Some(png) = preview
            && !metadata
        {
            let mut frame = 1u32.to_be_bytes().to_vec();
            frame.extend_from_slice(&2u32.to_be_bytes());
            frame.extend_from_slice(png);
            self.shared
                .hub
                .send_binary_to(self.client.as_deref(), |_| frame);
        }
    }

    /// Sleeps, unless the server dies first.
    pub async fn pause(&self, delay: Duration) -> Result<(), Failure> {
        if delay.is_zero() {
            return Ok(());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => Ok(()),
            () = self.shared.kill.cancelled() => Err(Failure::Died),
        }
    }

    /// The per-step delay.
    pub fn step_delay(&self) -> Duration {
        self.step_delay
    }

    /// The per-node delay.
    pub fn node_delay(&self) -> Duration {
        self.node_delay
    }

    /// Whether `/interrupt` asked this prompt to stop.
    pub fn interrupted(&self) -> bool {
        self.shared.interrupt.load(Ordering::SeqCst)
    }

    fn is_fault_target(&self, node_id: &str, class_type: &str) -> bool {
        match &self.fault_node {
            Some(target) => target == node_id,
            None if self.has_sampler => class_type == "KSampler",
            None => !self.first_node_started,
        }
    }

    /// The failure an injected fault produces.
    fn fault_failure(kind: FaultKind) -> Failure {
        match kind {
            FaultKind::Error => Failure::runtime("easel-comfy-sim: injected execution error"),
            FaultKind::Oom => Failure::Error {
                exception_type: "torch.OutOfMemoryError".to_owned(),
                message: "Allocation on device ".to_owned(),
            },
            FaultKind::Die => Failure::Died,
        }
    }

    /// Checks for injected faults and interrupts at a sampler step (after its progress).
    pub fn check_step(&self, node_id: &str, class_type: &str, step: u32) -> Result<(), Failure> {
        if self.shared.config.die_at_step == Some(step) {
            return Err(Failure::Died);
        }
        if let (Some(kind), Some(at)) = (self.fault, self.fault_step)
            && at == step
            && self.is_fault_target(node_id, class_type)
        {
            return Err(Self::fault_failure(kind));
        }
        if self.interrupted() {
            return Err(Failure::Interrupted);
        }
        Ok(())
    }

    /// The shared state.
    pub fn shared(&self) -> &Arc<Shared> {
        self.shared
    }

    /// The queued prompt.
    pub fn item(&self) -> &QueueItem {
        self.item
    }

    async fn execute(&mut self, cache: &mut HashMap<String, CacheEntry>) -> Outcome {
        let graph = &self.item.graph;
        let signatures = plan::signatures(graph, &self.shared.dirs);
        let use_cache = self.fault.is_none();
        let cached_set: std::collections::HashSet<String> = graph
            .keys()
            .filter(|id| {
                use_cache
                    && signatures
                        .get(*id)
                        .is_some_and(|key| cache.contains_key(key))
            })
            .cloned()
            .collect();
        let cached = |node_id: &str| cached_set.contains(node_id);
        let cached_nodes: Vec<&String> = graph.keys().filter(|id| cached(id)).collect();
        self.record(
            "execution_start",
            json!({"prompt_id": self.prompt_id(), "timestamp": now_ms()}),
        );
        self.record(
            "execution_cached",
            json!({"nodes": cached_nodes, "prompt_id": self.prompt_id(), "timestamp": now_ms()}),
        );
        let mut list = ExecutionList::new(graph, &self.item.outputs, &self.shared.catalog, cached);
        let current_outputs: Vec<String> = list.remaining().iter().rev().cloned().collect();
        let mut results: HashMap<String, Vec<Data>> = HashMap::new();
        let outcome = loop {
            let Some(node_id) = list.next() else {
                break Outcome::Success;
            };
            let node = &graph[&node_id];
            let class_type = node
                .get("class_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let key = signatures.get(&node_id).cloned().unwrap_or_default();
            if cached(&node_id)
                && let Some(entry) = cache.get(&key)
            {
                let output = entry.output.ui.clone();
                self.send("executed", json!({"node": node_id, "display_node": node_id, "output": output, "prompt_id": self.prompt_id()}));
                if let Some(ui) = output {
                    self.ui_outputs.insert(node_id.clone(), ui);
                }
                self.set_progress(&node_id, json!(1), json!(1), "finished");
                results.insert(node_id.clone(), entry.output.values.clone());
                list.complete(&node_id);
                continue;
            }
            match self
                .run_node(&node_id, &class_type, node, &results, cache, &signatures)
                .await
            {
                Ok(output) => {
                    if let Some(ui) = &output.ui {
                        self.send("executed", json!({"node": node_id, "display_node": node_id, "output": ui, "prompt_id": self.prompt_id()}));
                        self.ui_outputs.insert(node_id.clone(), ui.clone());
                    }
                    let (value, max) = match self
                        .progress
                        .get(&node_id)
                        .and_then(|entry| entry.get("max"))
                    {
                        Some(max) if !max.is_f64() => (max.clone(), max.clone()),
                        _ => (json!(1.0), json!(1.0)),
                    };
                    self.set_progress(&node_id, value, max, "finished");
                    results.insert(node_id.clone(), output.values.clone());
                    cache.insert(key, CacheEntry { output });
                    self.executed.push(node_id.clone());
                    list.complete(&node_id);
                }
                Err(Failure::Died) => break Outcome::Died,
                Err(Failure::Interrupted) => {
                    let executed: Vec<&String> = self.executed.iter().rev().collect();
                    break Outcome::Interrupted(json!({
                        "prompt_id": self.prompt_id(), "node_id": node_id, "node_type": class_type,
                        "executed": executed, "timestamp": now_ms(),
                    }));
                }
                Err(Failure::Error {
                    exception_type,
                    message,
                }) => {
                    let tips = if exception_type == "torch.OutOfMemoryError" {
                        OOM_TIPS
                    } else {
                        ""
                    };
                    let executed: Vec<&String> = self.executed.iter().rev().collect();
                    let current_inputs = current_inputs(node);
                    break Outcome::Error(json!({
                        "prompt_id": self.prompt_id(), "node_id": node_id, "node_type": class_type,
                        "executed": executed, "exception_message": format!("{message}\n{tips}"),
                        "exception_type": exception_type, "traceback": TRACEBACK,
                        "current_inputs": current_inputs, "current_outputs": current_outputs,
                        "timestamp": now_ms(),
                    }));
                }
            }
        };
        let keep: std::collections::HashSet<&String> = signatures.values().collect();
        cache.retain(|key, _| keep.contains(key));
        outcome
    }

    async fn run_node(
        &mut self,
        node_id: &str,
        class_type: &str,
        node: &Value,
        results: &HashMap<String, Vec<Data>>,
        cache: &HashMap<String, CacheEntry>,
        signatures: &HashMap<String, String>,
    ) -> Result<NodeOutput, Failure> {
        self.set_progress(node_id, json!(0.0), json!(1.0), "running");
        self.send(
            "executing",
            json!({"node": node_id, "display_node": node_id, "prompt_id": self.prompt_id()}),
        );
        self.shared
            .hub
            .set_running(Some((self.client.clone(), Some(node_id.to_owned()))));
        if self.interrupted() {
            return Err(Failure::Interrupted);
        }
        let die_now = std::mem::take(&mut self.die_now);
        let target = self.is_fault_target(node_id, class_type);
        self.first_node_started = true;
        if die_now {
            return Err(Failure::Died);
        }
        if let Some(kind) = self.fault
            && target
            && (self.fault_step.is_none() || class_type != "KSampler")
        {
            return Err(Self::fault_failure(kind));
        }
        let mut linked = HashMap::new();
        if let Some(inputs) = node.get("inputs").and_then(Value::as_object) {
            for (name, value) in inputs {
                let Some(link) = value.as_array().filter(|link| link.len() == 2) else {
                    continue;
                };
                let source = crate::pyjson::py_str(&link[0]);
                let index = link[1]
                    .as_u64()
                    .and_then(|index| usize::try_from(index).ok())
                    .unwrap_or(0);
                let values = results.get(&source).or_else(|| {
                    signatures
                        .get(&source)
                        .and_then(|key| cache.get(key))
                        .map(|entry| &entry.output.values)
                });
                if let Some(data) = values.and_then(|values| values.get(index)) {
                    linked.insert(name.clone(), data.clone());
                }
            }
        }
        let inputs = nodes::Inputs::new(node, linked);
        nodes::run(self, node_id, class_type, &inputs).await
    }

    fn finish(self, outcome: Outcome) {
        let (kind, data) = match outcome {
            Outcome::Success => (
                "execution_success",
                json!({"prompt_id": self.prompt_id(), "timestamp": now_ms()}),
            ),
            Outcome::Error(data) => ("execution_error", data),
            Outcome::Interrupted(data) => ("execution_interrupted", data),
            Outcome::Died => return,
        };
        let success = kind == "execution_success";
        self.send(kind, data.clone());
        let mut messages = self.messages.clone();
        messages.push(json!([kind, data]));
        let meta: Map<String, Value> = self
            .ui_outputs
            .keys()
            .map(|id| {
                let meta = json!({"node_id": id, "display_node": id, "parent_node": null, "real_node_id": id});
                (id.clone(), meta)
            })
            .collect();
        let (status_str, outputs, meta) = if success {
            (
                "success",
                Value::Object(self.ui_outputs.clone()),
                Value::Object(meta),
            )
        } else {
            ("error", json!({}), json!({}))
        };
        let entry = json!({
            "prompt": self.item.to_json(),
            "outputs": outputs,
            "status": {"status_str": status_str, "completed": success, "messages": messages},
            "meta": meta,
        });
        self.shared
            .lock_history()
            .insert(self.prompt_id(), entry, self.shared.config.history_cap);
        {
            let mut queue = self.shared.lock_queue();
            queue.running = None;
            self.shared.publish_status(&queue);
        }
        self.shared.hub.set_running(None);
        self.send(
            "executing",
            json!({"node": null, "prompt_id": self.prompt_id()}),
        );
        tracing::info!(prompt_id = %self.prompt_id(), status = status_str, "prompt finished");
    }
}

/// `current_inputs` of an error: each literal input as a one-element list, links as their
/// Python-ish string form.
fn current_inputs(node: &Value) -> Value {
    let mut out = Map::new();
    if let Some(inputs) = node.get("inputs").and_then(Value::as_object) {
        for (name, value) in inputs {
            let formatted = if value.is_array() {
                Value::String(format!("<linked {}>", crate::pyjson::py_repr(value)))
            } else {
                value.clone()
            };
            out.insert(name.clone(), json!([formatted]));
        }
    }
    Value::Object(out)
}
