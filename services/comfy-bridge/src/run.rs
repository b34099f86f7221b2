//! One run, from scheduling to its last event.
//!
//! Before ComfyUI accepts the graph, failures end the call with a gRPC status; after `queued`
//! the stream ends with exactly one `completed` or `failed` event. The run is registered under
//! its id (which is ComfyUI's `prompt_id`) so `Interrupt` can find it.

mod outputs;
mod watch;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use easel_proto::bridge::v1::run_workflow_response::Event;
use easel_proto::bridge::v1::{Failed, Queued, RunWorkflowResponse, WaitReason, Waiting};
use tokio::sync::{Notify, mpsc};

use crate::backend::Backend;
use crate::comfy::ComfyError;
use crate::config::BridgeConfig;
use crate::error::BridgeError;
use crate::isolation;
use crate::pool::{Pool, Wait};
use crate::template::BuiltGraph;

/// What a run's stream carries: events, or a status that ends the call before `queued`.
pub type StreamItem = Result<RunWorkflowResponse, tonic::Status>;

/// The longest run id accepted.
pub const MAX_RUN_ID_LEN: usize = 128;

/// Checks a run id: it becomes ComfyUI's `prompt_id` and a URL path segment.
pub fn validate_run_id(run_id: &str) -> Result<(), BridgeError> {
    let invalid = |reason: &str| BridgeError::InvalidField {
        field: "run_id".to_string(),
        reason: reason.to_string(),
    };
    if run_id.is_empty() {
        return Err(invalid("is required"));
    }
    if run_id.len() > MAX_RUN_ID_LEN {
        return Err(invalid("is longer than 128 characters"));
    }
    if !run_id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
    {
        return Err(invalid(
            "may hold only letters, digits, '-', '_', '.' and ':'",
        ));
    }
    Ok(())
}

/// A run's handle for `Interrupt`.
#[derive(Debug, Default)]
pub struct RunControl {
    interrupted: AtomicBool,
    wake: Notify,
    backend: Mutex<Option<Arc<Backend>>>,
}

impl RunControl {
    /// Asks the run to stop.
    pub fn interrupt(&self) {
        self.interrupted.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Whether an interrupt was asked for.
    pub fn is_interrupted(&self) -> bool {
        self.interrupted.load(Ordering::SeqCst)
    }

    /// Resolves once an interrupt is asked for (at once if it was already).
    pub async fn interrupted(&self) {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_interrupted() {
                return;
            }
            notified.await;
        }
    }

    fn set_backend(&self, backend: Option<Arc<Backend>>) {
        *self.backend.lock().unwrap_or_else(|p| p.into_inner()) = backend;
    }
}

/// The runs in progress, by id.
#[derive(Debug, Default)]
pub struct Runs {
    map: Mutex<HashMap<String, Arc<RunControl>>>,
}

/// Removes a run from the registry when its task ends, however it ends.
struct Registration<'a> {
    runs: &'a Runs,
    run_id: String,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.runs.lock().remove(&self.run_id);
    }
}

impl Runs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<RunControl>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a new run; a run with the same id in progress is an error.
    pub fn register(&self, run_id: &str) -> Result<Arc<RunControl>, BridgeError> {
        let mut map = self.lock();
        if map.contains_key(run_id) {
            return Err(BridgeError::AlreadyRunning(run_id.to_string()));
        }
        let control = Arc::new(RunControl::default());
        map.insert(run_id.to_string(), control.clone());
        Ok(control)
    }

    /// The run's control, if it is in progress here.
    pub fn get(&self, run_id: &str) -> Option<Arc<RunControl>> {
        self.lock().get(run_id).cloned()
    }

    /// The backend a run in progress was sent to.
    pub fn backend_of(&self, run_id: &str) -> Option<Arc<Backend>> {
        let control = self.get(run_id)?;
        control
            .backend
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Everything a run needs.
#[derive(Debug)]
pub struct RunRequest {
    /// The run id (ComfyUI's prompt id).
    pub run_id: String,
    /// The graph.
    pub graph: BuiltGraph,
    /// Its deadline.
    pub timeout: Duration,
    /// Backends not to use.
    pub exclude: HashSet<String>,
    /// Keep the PNG text chunks (the prompt graph) in the output images.
    pub keep_workflow_metadata: bool,
}

/// A timestamp for an event.
pub fn now_timestamp() -> pbjson_types::Timestamp {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(elapsed.subsec_nanos()).unwrap_or(0),
    }
}

/// An event stamped now.
pub fn event(event: Event) -> RunWorkflowResponse {
    RunWorkflowResponse {
        time: Some(now_timestamp()),
        event: Some(event),
    }
}

/// A `failed` event.
pub fn failed(code: &str, message: impl Into<String>, retryable: bool, backend: &str) -> Failed {
    Failed {
        code: code.to_string(),
        message: message.into(),
        retryable,
        backend: backend.to_string(),
        ..Failed::default()
    }
}

/// The `failed` event of a graph ComfyUI refused: INVALID_ARGUMENT, not retryable, with
/// ComfyUI's per-node validation errors.
pub fn rejected(rejection: &crate::comfy::protocol::PromptRejection) -> Failed {
    Failed {
        code: "INVALID_ARGUMENT".to_string(),
        message: crate::error::rejection_message(rejection),
        retryable: false,
        node_errors: rejection
            .node_errors
            .iter()
            .map(|error| easel_proto::jobs::v1::NodeError {
                node_id: error.node_id.clone(),
                class_type: error.class_type.clone(),
                r#type: error.kind.clone(),
                message: error.message.clone(),
                details: error.details.clone(),
                input_name: error.input_name.clone(),
            })
            .collect(),
        ..Failed::default()
    }
}

/// Best effort: take a prompt off a backend (delete if pending, interrupt if running).
/// Delete first: a prompt that starts running between the two calls is then interrupted.
pub async fn stop_on_backend(backend: &Backend, prompt_id: &str) -> Result<(), ComfyError> {
    backend.client.delete_from_queue(prompt_id).await?;
    backend.client.interrupt(prompt_id).await
}

/// Runs `request` to its end, sending items on `events`.
pub async fn drive(
    config: Arc<BridgeConfig>,
    pool: Arc<Pool>,
    runs: Arc<Runs>,
    control: Arc<RunControl>,
    request: RunRequest,
    events: mpsc::Sender<StreamItem>,
) {
    let _registration = Registration {
        runs: &runs,
        run_id: request.run_id.clone(),
    };
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + request.timeout;
    let (slot, subscription, accepted, streamed_nodes) =
        match submit(&config, &pool, &control, &request, deadline, &events).await {
            Ok(submitted) => submitted,
            // ComfyUI judged the graph: that is the run's outcome, told as a `failed` event
            // with each node's error, so callers keep the structure (not just a message).
            Err(BridgeError::Rejected(rejection)) => {
                let _ = events
                    .send(Ok(event(Event::Failed(rejected(&rejection)))))
                    .await;
                return;
            }
            Err(error) => {
                let status = easel_runtime::Error::from(error).into_status();
                let _ = events.send(Err(status)).await;
                return;
            }
        };
    let backend = slot.backend().clone();
    if let Some(checkpoint) = &request.graph.checkpoint {
        backend.set_last_checkpoint(checkpoint);
    }
    let queued = Queued {
        backend: backend.name.clone(),
        number: accepted.number,
        seed: request.graph.seed,
        checkpoint: request.graph.checkpoint.clone().unwrap_or_default(),
        node_count: request.graph.node_count(),
    };
    tracing::info!(run_id = %request.run_id, backend = %backend.name, number = accepted.number, "run queued");
    let watcher = watch::Watcher {
        config: &config,
        control: &control,
        request: &request,
        events: &events,
        deadline,
        started,
        streamed_nodes: &streamed_nodes,
    };
    watcher.run(slot, subscription, queued).await;
}

/// Schedules and posts the graph, moving on to another backend when one cannot be reached.
async fn submit(
    config: &BridgeConfig,
    pool: &Pool,
    control: &RunControl,
    request: &RunRequest,
    deadline: tokio::time::Instant,
    events: &mpsc::Sender<StreamItem>,
) -> Result<
    (
        crate::pool::Slot,
        crate::backend::Subscription,
        crate::comfy::Accepted,
        HashSet<String>,
    ),
    BridgeError,
> {
    // One unguessable prefix per run, for backends without `SaveImageWebsocket`.
    let prefix = isolation::run_prefix();
    // The caller's exclusions (backends earlier attempts failed on) are avoided when another
    // backend can take the run; backends that failed this call's POST are not tried again.
    let avoid = &request.exclude;
    let mut exclude = HashSet::new();
    // Tell the caller why the run waits, so a job can say it waits for a backend. Best effort:
    // with the stream's buffer full the caller is behind anyway, and the next change is told.
    let mut on_wait = |why: Wait| {
        let reason = match why {
            Wait::NoBackend => WaitReason::NoBackend,
            Wait::Busy => WaitReason::Busy,
        };
        let waiting = Waiting {
            reason: reason as i32,
        };
        let _ = events.try_send(Ok(event(Event::Waiting(waiting))));
    };
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let wait = config.queue_timeout.min(left);
        let checkpoint = request.graph.checkpoint.as_deref();
        let mut slot = tokio::select! {
            slot = pool.acquire(checkpoint, avoid, &exclude, wait, &mut on_wait) => match slot {
                Ok(slot) => slot,
                Err(error) => {
                    let past_deadline = tokio::time::Instant::now() >= deadline;
                    return Err(if past_deadline && left < config.queue_timeout {
                        BridgeError::DeadlineExceeded
                    } else {
                        error
                    });
                }
            },
            () = control.interrupted() => return Err(BridgeError::Cancelled),
            () = events.closed() => return Err(BridgeError::Cancelled),
        };
        let backend = slot.backend().clone();
        // Outputs never persist on the backend where it can stream them; elsewhere they are
        // written under the run's unguessable prefix.
        // Streamed images exist only in the frames: stream only over a socket that is up.
        let websocket = backend.ws_connected() && backend.supports_save_websocket().await;
        let prepared = isolation::prepare(&request.graph.graph, websocket, &prefix);
        let subscription = backend.subscribe(&request.run_id);
        control.set_backend(Some(backend.clone()));
        let posted = backend
            .client
            .post_prompt(&request.run_id, &backend.client_id, &prepared.graph, None)
            .await;
        match posted {
            Ok(accepted) => {
                slot.accepted();
                return Ok((slot, subscription, accepted, prepared.streamed_nodes));
            }
            Err(ComfyError::Rejected(rejection)) => {
                backend.unsubscribe(&subscription);
                // The backend answered: it works, whatever the graph's problems.
                slot.succeeded();
                return Err(BridgeError::Rejected(rejection));
            }
            Err(error) => {
                backend.unsubscribe(&subscription);
                control.set_backend(None);
                tracing::warn!(run_id = %request.run_id, backend = %backend.name, error = %error, "submission failed; trying another backend");
                slot.failed("submit");
                // A timed-out POST may still have queued the prompt: take it back.
                let orphan = backend.clone();
                let run_id = request.run_id.clone();
                tokio::spawn(async move {
                    let _ = stop_on_backend(&orphan, &run_id).await;
                });
                exclude.insert(backend.name.clone());
                if tokio::time::Instant::now() >= deadline {
                    return Err(BridgeError::Comfy(error));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_checked() {
        assert!(validate_run_id("job_01JX-1").is_ok());
        assert!(validate_run_id("").is_err());
        assert!(validate_run_id("a/b").is_err());
        assert!(validate_run_id("with space").is_err());
        assert!(validate_run_id(&"x".repeat(129)).is_err());
    }

    #[tokio::test]
    async fn a_run_id_is_registered_once_at_a_time() {
        let runs = Runs::default();
        let control = runs.register("run-1").expect("first");
        assert!(matches!(
            runs.register("run-1"),
            Err(BridgeError::AlreadyRunning(_))
        ));
        {
            let _registration = Registration {
                runs: &runs,
                run_id: "run-1".to_string(),
            };
        }
        assert!(runs.get("run-1").is_none());
        control.interrupt();
        control.interrupted().await;
        assert!(control.is_interrupted());
    }
}
