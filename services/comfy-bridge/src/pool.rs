//! The pool of backends and its scheduler: among healthy backends with capacity whose breaker
//! lets a call through, prefer the one that last loaded the requested checkpoint, then the
//! least loaded. When none can take the run, wait (bounded) on a notification.
//!
//! Backends a caller asks to avoid (those an earlier attempt failed on) are a preference, not a
//! ban: when no other backend is available at all they are used, so a pool of one backend can
//! still run a job whose earlier run that backend lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use crate::backend::Backend;
use crate::config::BridgeConfig;
use crate::error::BridgeError;
use crate::metrics;

/// The backends.
#[derive(Debug)]
pub struct Pool {
    backends: Vec<Arc<Backend>>,
    changed: Arc<Notify>,
    /// Rotates ties so equal backends share the load.
    next: AtomicUsize,
}

/// A reserved place on a backend; dropping it gives the place back.
#[derive(Debug)]
pub struct Slot {
    backend: Arc<Backend>,
    probe: bool,
    settled: bool,
}

impl Slot {
    /// The backend.
    pub fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }

    /// The backend worked: its breaker closes (a half-open probe succeeded).
    pub fn succeeded(&mut self) {
        self.settled = true;
        self.backend.record_success();
    }

    /// ComfyUI accepted the prompt. For a half-open breaker's probe that is proof enough that
    /// the backend works again: the breaker closes now, not after the whole run, so the runs
    /// waiting behind the probe go at once.
    pub fn accepted(&mut self) {
        if self.probe && !self.settled {
            self.succeeded();
        }
    }

    /// The backend failed: counts against its breaker.
    pub fn failed(&mut self, reason: &'static str) {
        self.settled = true;
        self.backend.record_failure(reason);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let in_flight = {
            let mut state = self.backend.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.in_flight
        };
        if self.probe && !self.settled {
            self.backend
                .with_breaker(|breaker, _| breaker.release_probe());
        }
        metrics::in_flight(&self.backend.name, in_flight);
        self.backend.notify();
    }
}

enum Pick {
    Slot(Slot),
    /// Some backend could take the run if it had capacity.
    Busy,
    /// No backend can take the run at all now.
    Unavailable,
}

/// Why [`Pool::acquire`] is waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// No backend is available (unhealthy, breaker open, or excluded).
    NoBackend,
    /// Every available backend is at its in-flight limit.
    Busy,
}

impl Pool {
    /// A pool of the configured backends (not started).
    pub fn new(config: &BridgeConfig, http: reqwest::Client) -> Pool {
        let changed = Arc::new(Notify::new());
        let backends = config
            .backends
            .iter()
            .map(|backend| Arc::new(Backend::new(backend, config, http.clone(), changed.clone())))
            .collect();
        Pool {
            backends,
            changed,
            next: AtomicUsize::new(0),
        }
    }

    /// Starts every backend's health checks and WebSocket.
    pub fn start(
        &self,
        config: &BridgeConfig,
        tracker: &TaskTracker,
        shutdown: &easel_runtime::Shutdown,
    ) {
        for backend in &self.backends {
            backend.start(config, tracker, shutdown);
        }
    }

    /// Every backend.
    pub fn backends(&self) -> &[Arc<Backend>] {
        &self.backends
    }

    /// The backend of that name.
    pub fn get(&self, name: &str) -> Option<&Arc<Backend>> {
        self.backends.iter().find(|backend| backend.name == name)
    }

    /// Picks among the backends not in `exclude`, preferring those not in `avoid`.
    fn try_pick_avoiding(
        &self,
        checkpoint: Option<&str>,
        avoid: &HashSet<String>,
        exclude: &HashSet<String>,
    ) -> Pick {
        if avoid.is_empty() {
            return self.try_pick(checkpoint, exclude);
        }
        let both: HashSet<String> = avoid.union(exclude).cloned().collect();
        match self.try_pick(checkpoint, &both) {
            Pick::Unavailable => self.try_pick(checkpoint, exclude),
            other => other,
        }
    }

    fn try_pick(&self, checkpoint: Option<&str>, exclude: &HashSet<String>) -> Pick {
        let now = Instant::now();
        let count = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, (bool, u32, u32))> = None;
        let mut busy = false;
        for offset in 0..count {
            let index = (start + offset) % count;
            let backend = &self.backends[index];
            if exclude.contains(&backend.name) {
                continue;
            }
            let mut state = backend.lock();
            if !state.healthy || !state.breaker.would_allow(now) {
                continue;
            }
            if state.in_flight >= backend.capacity() {
                busy = true;
                continue;
            }
            let affinity = checkpoint.is_some() && state.last_checkpoint.as_deref() == checkpoint;
            // Lower is better: affinity first, then fewer runs in flight, then a shorter queue.
            let key = (!affinity, state.in_flight, state.queue_remaining);
            if best.as_ref().is_none_or(|(_, best_key)| key < *best_key) {
                best = Some((index, key));
            }
        }
        let Some((index, _)) = best else {
            return if busy { Pick::Busy } else { Pick::Unavailable };
        };
        let backend = &self.backends[index];
        let (probe, in_flight) = {
            let mut state = backend.lock();
            let was_half_open = state.breaker.state(now) == crate::breaker::BreakerState::HalfOpen;
            if state.in_flight >= backend.capacity() || !state.breaker.try_acquire(now) {
                // Lost a race with another caller between the scan and here: scan again.
                drop(state);
                return self.try_pick(checkpoint, exclude);
            }
            state.in_flight += 1;
            (was_half_open, state.in_flight)
        };
        metrics::in_flight(&backend.name, in_flight);
        Pick::Slot(Slot {
            backend: backend.clone(),
            probe,
            settled: false,
        })
    }

    /// Reserves a place on the best backend not in `exclude` (preferring those not in
    /// `avoid`), waiting up to `wait` for one; `on_wait` hears why it waits, each time that
    /// changes.
    pub async fn acquire(
        &self,
        checkpoint: Option<&str>,
        avoid: &HashSet<String>,
        exclude: &HashSet<String>,
        wait: Duration,
        on_wait: &mut (dyn FnMut(Wait) + Send),
    ) -> Result<Slot, BridgeError> {
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen_busy = false;
        let mut told = None;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before looking, so a change between the look and the wait is not lost.
            notified.as_mut().enable();
            let why = match self.try_pick_avoiding(checkpoint, avoid, exclude) {
                Pick::Slot(slot) => return Ok(slot),
                Pick::Busy => {
                    seen_busy = true;
                    Wait::Busy
                }
                Pick::Unavailable => Wait::NoBackend,
            };
            if told != Some(why) {
                told = Some(why);
                on_wait(why);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(if seen_busy {
                        BridgeError::NoCapacity { waited: started.elapsed() }
                    } else {
                        BridgeError::NoBackend
                    });
                }
            }
        }
    }
}
