//! One ComfyUI backend: its client, health, breaker, in-flight count and the runs waiting for
//! its WebSocket messages.

mod health;
mod ws;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use tokio::sync::{Notify, mpsc};
use tokio_util::task::TaskTracker;
use url::Url;

use crate::breaker::{Breaker, BreakerState};
use crate::comfy::ComfyClient;
use crate::comfy::protocol::WsMessage;
use crate::config::{BackendConfig, BridgeConfig};
use crate::metrics;

/// What a run hears from its backend's WebSocket.
#[derive(Clone, Debug, PartialEq)]
pub enum RunSignal {
    /// A message about this run.
    Message(WsMessage),
    /// The WebSocket dropped; messages may be lost until it is back.
    Disconnected,
    /// The WebSocket is (re)connected; reconcile from history.
    Reconnected,
}

/// A run's subscription to its backend's messages.
#[derive(Debug)]
pub struct Subscription {
    prompt_id: String,
    id: u64,
    /// The messages.
    pub receiver: mpsc::UnboundedReceiver<RunSignal>,
}

/// A point-in-time view of a backend, for ListBackends and the scheduler's tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendStatus {
    /// The backend's name.
    pub name: String,
    /// Its base URL.
    pub url: String,
    /// Whether the last health check passed.
    pub healthy: bool,
    /// The breaker state.
    pub breaker: BreakerState,
    /// Runs in flight.
    pub in_flight: u32,
    /// The in-flight limit.
    pub capacity: u32,
    /// ComfyUI's `queue_remaining`.
    pub queue_remaining: u32,
    /// Total VRAM bytes.
    pub vram_total: u64,
    /// Free VRAM bytes.
    pub vram_free: u64,
    /// The checkpoint it loaded last.
    pub last_checkpoint: Option<String>,
    /// When the last health check ran.
    pub last_check_time: Option<SystemTime>,
    /// Whether the WebSocket is connected.
    pub websocket_connected: bool,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) healthy: bool,
    pub(crate) breaker: Breaker,
    pub(crate) in_flight: u32,
    pub(crate) last_checkpoint: Option<String>,
    pub(crate) queue_remaining: u32,
    pub(crate) vram: (u64, u64),
    pub(crate) last_check_time: Option<SystemTime>,
    pub(crate) ws_connected: bool,
    /// The prompt ComfyUI is executing, for messages that carry no prompt id.
    pub(crate) running_prompt: Option<String>,
    /// The breaker state last published (the breaker turns half-open lazily, with time).
    pub(crate) published: BreakerState,
    /// Whether `/object_info` lists `SaveImageWebsocket` (unknown until asked; forgotten when
    /// the WebSocket drops, as the server may come back as another version).
    pub(crate) save_websocket: Option<bool>,
}

/// One backend of the pool.
#[derive(Debug)]
pub struct Backend {
    /// The backend's name (metrics label, `exclude_backends` value).
    pub name: String,
    /// Its base URL.
    pub url: Url,
    /// The HTTP client.
    pub client: ComfyClient,
    /// This bridge process's `client_id` on this backend.
    pub client_id: String,
    capacity: u32,
    state: Mutex<State>,
    runs: Mutex<HashMap<String, (u64, mpsc::UnboundedSender<RunSignal>)>>,
    next_subscription: std::sync::atomic::AtomicU64,
    /// Wakes the scheduler's waiters when capacity or eligibility may have changed.
    changed: Arc<Notify>,
}

impl Backend {
    /// A backend in its initial state: not yet checked (not eligible), breaker closed.
    pub fn new(
        config: &BackendConfig,
        bridge: &BridgeConfig,
        http: reqwest::Client,
        changed: Arc<Notify>,
    ) -> Backend {
        metrics::breaker(&config.name, BreakerState::Closed, false);
        metrics::in_flight(&config.name, 0);
        Backend {
            name: config.name.clone(),
            url: config.url.clone(),
            client: ComfyClient::new(http, config.url.clone(), &config.name),
            client_id: uuid::Uuid::new_v4().to_string(),
            capacity: bridge.max_in_flight,
            state: Mutex::new(State {
                healthy: false,
                breaker: Breaker::new(bridge.breaker_failures, bridge.breaker_cooldown),
                in_flight: 0,
                last_checkpoint: None,
                queue_remaining: 0,
                vram: (0, 0),
                last_check_time: None,
                ws_connected: false,
                running_prompt: None,
                published: BreakerState::Closed,
                save_websocket: None,
            }),
            runs: Mutex::new(HashMap::new()),
            next_subscription: std::sync::atomic::AtomicU64::new(1),
            changed,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while updating plain counters: the data is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn lock_runs(
        &self,
    ) -> MutexGuard<'_, HashMap<String, (u64, mpsc::UnboundedSender<RunSignal>)>> {
        self.runs
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Starts the health checks and the WebSocket of this backend.
    pub fn start(
        self: &Arc<Self>,
        config: &BridgeConfig,
        tracker: &TaskTracker,
        shutdown: &easel_runtime::Shutdown,
    ) {
        tracker.spawn(health::run(
            self.clone(),
            config.health_interval,
            shutdown.clone(),
        ));
        tracker.spawn(ws::run(self.clone(), shutdown.clone()));
    }

    /// Publishes the breaker's state when it differs from the last one published.
    fn publish(&self, state: &mut State, current: BreakerState) -> bool {
        if state.published == current {
            return false;
        }
        tracing::info!(backend = %self.name, from = state.published.as_str(), to = current.as_str(), "breaker changed");
        state.published = current;
        metrics::breaker(&self.name, current, true);
        true
    }

    /// Applies `change` to the breaker, publishing every state it goes through and waking
    /// waiters on a change.
    pub(crate) fn with_breaker<T>(&self, change: impl FnOnce(&mut Breaker, Instant) -> T) -> T {
        let now = Instant::now();
        let (result, changed) = {
            let mut state = self.lock();
            let before = state.breaker.state(now);
            let mut changed = self.publish(&mut state, before);
            let result = change(&mut state.breaker, now);
            let after = state.breaker.state(now);
            changed |= self.publish(&mut state, after);
            (result, changed)
        };
        if changed {
            self.changed.notify_waiters();
        }
        result
    }

    /// Records a failure of this backend (unreachable, died mid-run, lost a prompt).
    pub fn record_failure(&self, reason: &'static str) {
        metrics::comfy_failure(&self.name, reason);
        self.with_breaker(|breaker, now| breaker.on_failure(now));
    }

    /// Records a call that proves the backend works.
    pub fn record_success(&self) {
        self.with_breaker(|breaker, _| breaker.on_success());
    }

    /// Wakes the scheduler's waiters.
    pub(crate) fn notify(&self) {
        self.changed.notify_waiters();
    }

    /// The in-flight limit.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Whether the WebSocket is connected now.
    pub fn ws_connected(&self) -> bool {
        self.lock().ws_connected
    }

    /// A snapshot for ListBackends.
    pub fn status(&self) -> BackendStatus {
        let mut state = self.lock();
        let breaker = state.breaker.state(Instant::now());
        self.publish(&mut state, breaker);
        BackendStatus {
            name: self.name.clone(),
            url: self.url.to_string(),
            healthy: state.healthy,
            breaker,
            in_flight: state.in_flight,
            capacity: self.capacity,
            queue_remaining: state.queue_remaining,
            vram_total: state.vram.0,
            vram_free: state.vram.1,
            last_checkpoint: state.last_checkpoint.clone(),
            last_check_time: state.last_check_time,
            websocket_connected: state.ws_connected,
        }
    }

    /// Registers a run before its prompt is posted, so no message can be missed.
    pub fn subscribe(&self, prompt_id: &str) -> Subscription {
        let (sender, receiver) = mpsc::unbounded_channel();
        let id = self
            .next_subscription
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lock_runs().insert(prompt_id.to_string(), (id, sender));
        Subscription {
            prompt_id: prompt_id.to_string(),
            id,
            receiver,
        }
    }

    /// Forgets a run's subscription (not a newer one under the same id).
    pub fn unsubscribe(&self, subscription: &Subscription) {
        let mut runs = self.lock_runs();
        if runs
            .get(&subscription.prompt_id)
            .is_some_and(|(id, _)| *id == subscription.id)
        {
            runs.remove(&subscription.prompt_id);
        }
    }

    /// Whether the backend can send images over the WebSocket (`SaveImageWebsocket`), asked
    /// once and remembered. When asking fails the answer is "no" for this run only: the
    /// fallback (an unguessable per-run prefix) is safe too.
    pub async fn supports_save_websocket(&self) -> bool {
        if let Some(known) = self.lock().save_websocket {
            return known;
        }
        match self
            .client
            .has_node(crate::isolation::SAVE_IMAGE_WEBSOCKET)
            .await
        {
            Ok(known) => {
                self.lock().save_websocket = Some(known);
                known
            }
            Err(error) => {
                tracing::warn!(backend = %self.name, error = %error, "cannot read /object_info");
                false
            }
        }
    }

    /// Remembers the checkpoint a run loads, for model affinity.
    pub fn set_last_checkpoint(&self, checkpoint: &str) {
        self.lock().last_checkpoint = Some(checkpoint.to_string());
    }

    /// Routes a WebSocket message to its run.
    pub(crate) fn dispatch(&self, message: WsMessage) {
        let prompt_id = {
            let mut state = self.lock();
            match &message {
                WsMessage::Status { queue_remaining } => {
                    if let Some(remaining) = queue_remaining {
                        state.queue_remaining = *remaining;
                        metrics::queue_remaining(&self.name, *remaining);
                    }
                    return;
                }
                WsMessage::ExecutionStart { prompt_id } => {
                    state.running_prompt = Some(prompt_id.clone());
                }
                WsMessage::Executing {
                    prompt_id: Some(prompt_id),
                    node: None,
                } if state.running_prompt.as_deref() == Some(prompt_id.as_str()) => {
                    state.running_prompt = None;
                }
                _ => {}
            }
            // The replay after a reconnect has no prompt id: it is about the running prompt.
            match message.prompt_id() {
                Some(id) => id.to_string(),
                None => match &state.running_prompt {
                    Some(running) => running.clone(),
                    None => return,
                },
            }
        };
        if let Some((_, sender)) = self.lock_runs().get(&prompt_id) {
            let _ = sender.send(RunSignal::Message(message));
        }
    }

    /// Tells every run of this backend about the WebSocket's state.
    pub(crate) fn broadcast(&self, signal: RunSignal) {
        for (_, sender) in self.lock_runs().values() {
            let _ = sender.send(signal.clone());
        }
    }
}
