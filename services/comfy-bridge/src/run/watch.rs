//! Following a queued run: WebSocket messages become events; after a reconnect, a silence or
//! an interrupt, the run is reconciled from `/queue` and `/history` before any verdict.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{Completed, Failed, NodeProgress, Queued, Started};
use tokio::sync::mpsc;

use super::{RunControl, RunRequest, StreamItem, event, failed, outputs, stop_on_backend};
use crate::backend::{Backend, RunSignal, Subscription};
use crate::comfy::ComfyError;
use crate::comfy::protocol::{ExecutionError, HistoryEntry, HistoryOutcome, ImageRef, WsMessage};
use crate::config::BridgeConfig;
use crate::metrics;
use crate::pool::Slot;

/// How often a disconnected run looks at `/history` while the socket is down.
const DISCONNECTED_POLL: Duration = Duration::from_millis(250);
/// Consecutive failed reconciliations (backend not answering HTTP) before giving up.
const MAX_RECONCILE_FAILURES: u32 = 3;
/// How long a stopped run keeps its slot while ComfyUI winds it down.
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// The run's verdict.
enum Verdict {
    Success {
        outputs: Vec<(String, Vec<ImageRef>)>,
    },
    Error(ExecutionError),
    Interrupted,
    /// The backend died, lost the prompt or stopped answering.
    Lost(&'static str),
}

/// What reconciliation found.
enum Found {
    Finished(HistoryEntry),
    Waiting,
    Gone,
}

async fn reconcile(backend: &Backend, prompt_id: &str) -> Result<Found, ComfyError> {
    if let Some(entry) = backend.client.history(prompt_id).await? {
        return Ok(Found::Finished(entry));
    }
    if backend.client.queue().await?.contains(prompt_id) {
        return Ok(Found::Waiting);
    }
    // ComfyUI writes history before it drops the prompt from the queue: look once more.
    Ok(match backend.client.history(prompt_id).await? {
        Some(entry) => Found::Finished(entry),
        None => Found::Gone,
    })
}

fn reconciled(backend: &str, result: &str) {
    ::metrics::counter!(metrics::RECONCILIATIONS, "backend" => backend.to_string(), "result" => result.to_string()).increment(1);
}

/// The state of one queued run.
pub struct Watcher<'a> {
    pub config: &'a BridgeConfig,
    pub control: &'a RunControl,
    pub request: &'a RunRequest,
    pub events: &'a mpsc::Sender<StreamItem>,
    pub deadline: tokio::time::Instant,
    pub started: Instant,
    /// Nodes whose images arrive as WebSocket frames.
    pub streamed_nodes: &'a HashSet<String>,
}

#[derive(Default)]
struct Seen {
    started_sent: bool,
    cached: Vec<String>,
    done: HashSet<String>,
    current: Option<String>,
    outputs: Vec<(String, Vec<ImageRef>)>,
    /// Images from binary frames, by node, in arrival order.
    streamed: Vec<(String, bytes::Bytes)>,
    success: bool,
    error: Option<ExecutionError>,
    interrupted: bool,
    /// Messages may have been lost (the socket dropped): trust history over what was seen.
    gap: bool,
}

impl Watcher<'_> {
    async fn send(&self, item: Event) -> bool {
        self.events.send(Ok(event(item))).await.is_ok()
    }

    fn backend_name<'b>(&self, backend: &'b Backend) -> &'b str {
        &backend.name
    }

    /// Follows the run to its end and sends the last event.
    pub async fn run(self, mut slot: Slot, mut subscription: Subscription, queued: Queued) {
        let backend = slot.backend().clone();
        let run_id = self.request.run_id.clone();
        if !self.send(Event::Queued(queued)).await {
            self.abandon(slot, subscription, "caller gone");
            return;
        }
        let mut seen = Seen::default();
        let mut reconcile_failures = 0u32;
        let mut stop_sent = false;
        let verdict = loop {
            let silence = if backend.ws_connected() {
                self.config.silence_timeout
            } else {
                self.config.silence_timeout.min(DISCONNECTED_POLL)
            };
            let mut check_now = false;
            tokio::select! {
                biased;
                () = self.events.closed() => {
                    self.abandon(slot, subscription, "caller gone");
                    return;
                }
                () = tokio::time::sleep_until(self.deadline) => {
                    if let Err(error) = stop_on_backend(&backend, &run_id).await {
                        tracing::warn!(run_id = %run_id, error = %error, "interrupt after the deadline failed");
                    }
                    tracing::warn!(run_id = %run_id, backend = %backend.name, "run past its deadline; interrupted");
                    let message = format!(
                        "the run did not finish within {:.3} s and was interrupted",
                        self.request.timeout.as_secs_f64()
                    );
                    self.finish(failed("DEADLINE_EXCEEDED", message, false, &backend.name), &backend.name).await;
                    self.abandon(slot, subscription, "deadline");
                    return;
                }
                () = self.control.interrupted(), if !stop_sent => {
                    stop_sent = true;
                    if let Err(error) = stop_on_backend(&backend, &run_id).await {
                        tracing::warn!(run_id = %run_id, error = %error, "interrupt failed");
                    }
                    check_now = true;
                }
                signal = subscription.receiver.recv() => match signal {
                    Some(RunSignal::Message(message)) => {
                        reconcile_failures = 0;
                        if self.on_message(&backend, &mut seen, message).await {
                            match verdict_of(&mut seen) {
                                Some(verdict) if !seen.gap => break verdict,
                                // Messages may be missing: history decides.
                                _ => check_now = true,
                            }
                        }
                    }
                    Some(RunSignal::Disconnected | RunSignal::Reconnected) | None => {
                        seen.gap = true;
                        check_now = true;
                    }
                },
                () = tokio::time::sleep(silence) => check_now = true,
            }
            if !check_now {
                continue;
            }
            match reconcile(&backend, &run_id).await {
                Ok(Found::Finished(entry)) => {
                    reconciled(&backend.name, "finished");
                    break verdict_of_history(&mut seen, entry);
                }
                Ok(Found::Waiting) => {
                    reconciled(&backend.name, "waiting");
                    reconcile_failures = 0;
                }
                Ok(Found::Gone) if stop_sent => {
                    reconciled(&backend.name, "deleted");
                    break Verdict::Interrupted;
                }
                Ok(Found::Gone) => {
                    reconciled(&backend.name, "lost");
                    break Verdict::Lost("lost");
                }
                Err(error) => {
                    reconciled(&backend.name, "error");
                    reconcile_failures += 1;
                    tracing::warn!(run_id = %run_id, backend = %backend.name, error = %error, "reconciliation failed");
                    if !backend.ws_connected() || reconcile_failures >= MAX_RECONCILE_FAILURES {
                        break Verdict::Lost("died");
                    }
                }
            }
        };
        backend.unsubscribe(&subscription);
        self.conclude(&mut slot, &backend, &mut seen, verdict).await;
    }

    /// Sends the verdict's events and settles the slot.
    async fn conclude(
        &self,
        slot: &mut Slot,
        backend: &Arc<Backend>,
        seen: &mut Seen,
        verdict: Verdict,
    ) {
        let name = backend.name.clone();
        match verdict {
            Verdict::Success { mut outputs } => {
                self.started(backend, seen).await;
                if outputs.is_empty() {
                    // A cached re-run may report its outputs only in history.
                    if let Ok(Some(entry)) = backend.client.history(&self.request.run_id).await {
                        outputs = entry.outputs;
                    }
                }
                // Streamed images exist only in the frames: with messages possibly lost, the
                // run cannot vouch for them and is retried.
                if !self.streamed_nodes.is_empty() && seen.gap {
                    slot.failed("ws");
                    let message = "the WebSocket dropped while the images were streamed";
                    // The connection failed, not the job: the retry spends no attempt.
                    let mut event = failed("UNAVAILABLE", message, true, &name);
                    event.backend_lost = true;
                    self.finish(event, &name).await;
                    return;
                }
                let keep = self.request.keep_workflow_metadata;
                let kept_prompt = keep.then(|| self.request.graph.graph.to_string());
                let mut index = 0u32;
                for (node_id, png) in std::mem::take(&mut seen.streamed) {
                    match outputs::streamed(&node_id, &png, index, kept_prompt.as_deref()) {
                        Ok(output) => {
                            if !self.send(Event::Output(output)).await {
                                return;
                            }
                        }
                        Err(error) => {
                            tracing::warn!(run_id = %self.request.run_id, backend = %name, error = %error, "streamed output refused");
                            let message = format!("output {index} could not be taken: {error}");
                            self.finish(failed("INTERNAL", message, false, &name), &name)
                                .await;
                            return;
                        }
                    }
                    index += 1;
                }
                for (node_id, images) in &outputs {
                    for image in images {
                        match outputs::fetch(backend, node_id, image, index, keep).await {
                            Ok(output) => {
                                if !self.send(Event::Output(output)).await {
                                    return;
                                }
                            }
                            Err(error) => {
                                tracing::warn!(run_id = %self.request.run_id, backend = %name, error = %error, "output fetch failed");
                                let message =
                                    format!("could not fetch output {}: {error}", image.filename);
                                let event = if matches!(error, outputs::OutputError::Comfy(_)) {
                                    slot.failed("view");
                                    // The backend could not hand the image over: the run is
                                    // lost with it, not the job's fault.
                                    let mut event = failed("UNAVAILABLE", message, true, &name);
                                    event.backend_lost = true;
                                    event
                                } else {
                                    failed("INTERNAL", message, false, &name)
                                };
                                self.finish(event, &name).await;
                                return;
                            }
                        }
                        index += 1;
                    }
                }
                slot.succeeded();
                let node_count = self.request.graph.node_count() as usize;
                let completed = Completed {
                    backend: name.clone(),
                    cached: node_count > 0 && seen.cached.len() >= node_count,
                    execution_time: Some(self.started.elapsed().into()),
                };
                metrics::run_finished(&name, "completed", self.started.elapsed());
                tracing::info!(run_id = %self.request.run_id, backend = %name, outputs = index, "run completed");
                self.send(Event::Completed(completed)).await;
            }
            Verdict::Error(error) => {
                // ComfyUI answered with a verdict: the backend itself works.
                slot.succeeded();
                let message = format!(
                    "node {} ({}) raised {}: {}",
                    error.node_id, error.node_type, error.exception_type, error.exception_message
                );
                let mut event = if error.is_out_of_memory() {
                    if let Err(free) = backend.client.free().await {
                        tracing::warn!(backend = %name, error = %free, "freeing memory failed");
                    }
                    failed("RESOURCE_EXHAUSTED", message, true, &name)
                } else {
                    failed("INTERNAL", message, false, &name)
                };
                event.exception_type = error.exception_type;
                event.node_id = error.node_id;
                self.finish(event, &name).await;
            }
            Verdict::Interrupted => {
                slot.succeeded();
                let ours = self.control.is_interrupted();
                let message = if ours {
                    "the run was interrupted"
                } else {
                    "the run was interrupted on the ComfyUI backend"
                };
                self.finish(failed("CANCELLED", message, !ours, &name), &name)
                    .await;
            }
            Verdict::Lost(reason) => {
                slot.failed(reason);
                tracing::warn!(run_id = %self.request.run_id, backend = %name, reason, "run lost");
                let message = format!(
                    "the ComfyUI backend {name} stopped answering or lost the run ({reason})"
                );
                let mut event = failed("UNAVAILABLE", message, true, &name);
                event.backend_lost = true;
                self.finish(event, &name).await;
            }
        }
    }

    async fn finish(&self, event: Failed, backend: &str) {
        metrics::run_finished(backend, &event.code, self.started.elapsed());
        tracing::info!(run_id = %self.request.run_id, backend, code = %event.code, retryable = event.retryable, "run failed");
        self.send(Event::Failed(event)).await;
    }

    /// Stops the run on ComfyUI and keeps its slot until ComfyUI is done with it, in the
    /// background, so the GPU is not overbooked by the next run.
    fn abandon(&self, slot: Slot, subscription: Subscription, why: &'static str) {
        let run_id = self.request.run_id.clone();
        let silence = self.config.silence_timeout;
        tokio::spawn(async move {
            let backend = slot.backend().clone();
            tracing::info!(run_id = %run_id, backend = %backend.name, why, "stopping the run");
            let _ = stop_on_backend(&backend, &run_id).await;
            let _ =
                tokio::time::timeout(DRAIN_LIMIT, drain(&backend, &run_id, subscription, silence))
                    .await;
            drop(slot);
        });
    }
    async fn on_message(&self, backend: &Backend, seen: &mut Seen, message: WsMessage) -> bool {
        let node_count = self.request.graph.node_count();
        match message {
            WsMessage::ExecutionStart { .. } => {}
            WsMessage::ExecutionCached { nodes, .. } => {
                seen.done.extend(nodes.iter().cloned());
                seen.cached = nodes;
                self.started(backend, seen).await;
            }
            WsMessage::Executing {
                node: Some(node), ..
            } => {
                self.started(backend, seen).await;
                if let Some(previous) = seen.current.replace(node.clone()) {
                    seen.done.insert(previous);
                }
                let progress = NodeProgress {
                    node_class: self.request.graph.class_of(&node),
                    node_id: node,
                    step: 0,
                    max_steps: 0,
                    nodes_done: count(&seen.done),
                    node_count,
                };
                self.send(Event::Progress(progress)).await;
            }
            WsMessage::Executing { node: None, .. } => return true,
            WsMessage::Progress {
                node, value, max, ..
            } => {
                self.started(backend, seen).await;
                let node = node.or_else(|| seen.current.clone()).unwrap_or_default();
                let progress = NodeProgress {
                    node_class: self.request.graph.class_of(&node),
                    node_id: node,
                    step: u32::try_from(value).unwrap_or(u32::MAX),
                    max_steps: u32::try_from(max).unwrap_or(u32::MAX),
                    nodes_done: count(&seen.done),
                    node_count,
                };
                self.send(Event::Progress(progress)).await;
            }
            WsMessage::ProgressState { finished, .. } => seen.done.extend(finished),
            WsMessage::Executed { node, images, .. } => {
                seen.done.insert(node.clone());
                if !images.is_empty() {
                    seen.outputs.push((node, images));
                }
            }
            WsMessage::Image { node, png, .. } => {
                // Frames name no node (type 1): they belong to the node executing. Latent
                // previews of other nodes are not outputs.
                if let Some(node) = node.or_else(|| seen.current.clone())
                    && self.streamed_nodes.contains(&node)
                {
                    seen.streamed.push((node, png));
                }
            }
            WsMessage::Success { .. } => seen.success = true,
            WsMessage::Error { error, .. } => seen.error = Some(error),
            WsMessage::Interrupted { .. } => seen.interrupted = true,
            WsMessage::Status { .. } | WsMessage::Other => {}
        }
        false
    }

    async fn started(&self, backend: &Backend, seen: &mut Seen) {
        if seen.started_sent {
            return;
        }
        seen.started_sent = true;
        let started = Started {
            backend: self.backend_name(backend).to_string(),
            cached_nodes: seen.cached.clone(),
        };
        self.send(Event::Started(started)).await;
    }
}

/// Waits until ComfyUI no longer runs or queues the prompt.
async fn drain(backend: &Backend, run_id: &str, mut subscription: Subscription, silence: Duration) {
    loop {
        tokio::select! {
            signal = subscription.receiver.recv() => match signal {
                Some(RunSignal::Message(WsMessage::Executing { node: None, .. })) => break,
                Some(_) => continue,
                None => {}
            },
            () = tokio::time::sleep(silence.min(DISCONNECTED_POLL * 4)) => {}
        }
        match reconcile(backend, run_id).await {
            Ok(Found::Waiting) => {}
            Ok(Found::Finished(_) | Found::Gone) => break,
            Err(_) if !backend.ws_connected() => break,
            Err(_) => {}
        }
    }
    backend.unsubscribe(&subscription);
}

fn verdict_of(seen: &mut Seen) -> Option<Verdict> {
    if seen.success {
        Some(Verdict::Success {
            outputs: std::mem::take(&mut seen.outputs),
        })
    } else if let Some(error) = seen.error.take() {
        Some(Verdict::Error(error))
    } else if seen.interrupted {
        Some(Verdict::Interrupted)
    } else {
        None
    }
}

fn verdict_of_history(seen: &mut Seen, entry: HistoryEntry) -> Verdict {
    if seen.cached.is_empty() {
        seen.cached = entry.cached_nodes;
    }
    match entry.outcome {
        HistoryOutcome::Success => Verdict::Success {
            outputs: entry.outputs,
        },
        HistoryOutcome::Error(error) => Verdict::Error(error),
        HistoryOutcome::Interrupted => Verdict::Interrupted,
    }
}

fn count(set: &HashSet<String>) -> u32 {
    u32::try_from(set.len()).unwrap_or(u32::MAX)
}
