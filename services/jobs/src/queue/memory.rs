//! The in-process queue of the embedded mode: the Redis backend's semantics (visibility-timeout
//! reclaim, dead letters, delayed retries, weighted priority) without Redis. Entries live as
//! long as the process; the reconciler re-enqueues PENDING jobs after a restart.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Delivery, JobQueue, PRIORITY_CLASSES, QueueError, QueueMessage, QueueSettings, WeightedOrder,
};

#[derive(Debug)]
struct Claimed {
    message: QueueMessage,
    touched: Instant,
    deliveries: u32,
}

#[derive(Debug, Default)]
struct State {
    ready: [VecDeque<(u64, QueueMessage)>; PRIORITY_CLASSES],
    claimed: HashMap<u64, Claimed>,
    delayed: Vec<(Instant, u64, QueueMessage)>,
    dead: Vec<(QueueMessage, String)>,
    /// job id → its newest entry id.
    index: HashMap<String, u64>,
    next_id: u64,
}

/// The in-process queue.
#[derive(Debug)]
pub struct MemoryQueue {
    settings: QueueSettings,
    state: Mutex<State>,
    order: WeightedOrder,
    notify: Notify,
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(settings: QueueSettings) -> Self {
        MemoryQueue {
            settings,
            state: Mutex::new(State::default()),
            order: WeightedOrder::default(),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn try_claim(&self) -> Option<Delivery> {
        let now = Instant::now();
        let mut state = self.lock();
        // Due retries become ready.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut state.delayed)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        state.delayed = later;
        for (_, id, message) in due {
            let class = usize::from(message.priority).min(PRIORITY_CLASSES - 1);
            state.ready[class].push_back((id, message));
        }
        // Entries idle past the visibility timeout are reclaimed first, oldest first.
        loop {
            let idle = state
                .claimed
                .iter()
                .filter(|(_, claimed)| now - claimed.touched >= self.settings.visibility_timeout)
                .min_by_key(|(id, _)| **id)
                .map(|(id, _)| *id);
            let Some(id) = idle else { break };
            let Some(mut claimed) = state.claimed.remove(&id) else {
                break;
            };
            claimed.deliveries += 1;
            if claimed.deliveries > self.settings.max_deliveries {
                if state.index.get(&claimed.message.job_id) == Some(&id) {
                    state.index.remove(&claimed.message.job_id);
                }
                state
                    .dead
                    .push((claimed.message, "max deliveries exceeded".to_string()));
                continue;
            }
            claimed.touched = now;
            let delivery = Delivery {
                id: id.to_string(),
                message: claimed.message.clone(),
                deliveries: claimed.deliveries,
            };
            state.claimed.insert(id, claimed);
            return Some(delivery);
        }
        for class in self.order.next() {
            if let Some((id, message)) = state.ready[class].pop_front() {
                state.claimed.insert(
                    id,
                    Claimed {
                        message: message.clone(),
                        touched: now,
                        deliveries: 1,
                    },
                );
                return Some(Delivery {
                    id: id.to_string(),
                    message,
                    deliveries: 1,
                });
            }
        }
        None
    }
}

fn entry_id(delivery: &Delivery) -> Result<u64, QueueError> {
    delivery
        .id
        .parse()
        .map_err(|_| QueueError::Malformed(format!("entry id {:?}", delivery.id)))
}

#[async_trait::async_trait]
impl JobQueue for MemoryQueue {
    async fn enqueue(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            state.next_id += 1;
            let id = state.next_id;
            state.index.insert(message.job_id.clone(), id);
            if delay.is_zero() {
                let class = usize::from(message.priority).min(PRIORITY_CLASSES - 1);
                state.ready[class].push_back((id, message.clone()));
            } else {
                state
                    .delayed
                    .push((Instant::now() + delay, id, message.clone()));
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn claim(
        &self,
        _consumer: &str,
        block: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + block;
        loop {
            let notified = self.notify.notified();
            if let Some(delivery) = self.try_claim() {
                return Ok(Some(delivery));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            // Wake on an enqueue, or soon enough to see due retries and idle entries.
            let nap = (deadline - now).min(Duration::from_millis(50));
            let _ = tokio::time::timeout(nap, notified).await;
        }
    }

    async fn touch(&self, _consumer: &str, delivery: &Delivery) -> Result<(), QueueError> {
        let id = entry_id(delivery)?;
        if let Some(claimed) = self.lock().claimed.get_mut(&id) {
            claimed.touched = Instant::now();
        }
        Ok(())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let id = entry_id(delivery)?;
        let mut state = self.lock();
        state.claimed.remove(&id);
        if state.index.get(&delivery.message.job_id) == Some(&id) {
            state.index.remove(&delivery.message.job_id);
        }
        Ok(())
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError> {
        self.ack(delivery).await?;
        self.lock()
            .dead
            .push((delivery.message.clone(), reason.to_string()));
        Ok(())
    }

    async fn contains(&self, job_ids: &[String]) -> Result<Vec<bool>, QueueError> {
        let state = self.lock();
        Ok(job_ids
            .iter()
            .map(|id| state.index.contains_key(id))
            .collect())
    }

    async fn depth(&self) -> Result<Vec<u64>, QueueError> {
        let state = self.lock();
        let mut depth: Vec<u64> = state.ready.iter().map(|ready| ready.len() as u64).collect();
        for (_, _, message) in &state.delayed {
            depth[usize::from(message.priority).min(PRIORITY_CLASSES - 1)] += 1;
        }
        Ok(depth)
    }

    async fn dead_letters(&self) -> Result<Vec<(QueueMessage, String)>, QueueError> {
        Ok(self.lock().dead.clone())
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }
}
