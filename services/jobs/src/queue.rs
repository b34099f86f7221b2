//! The durable job queue: a trait with two backends that pass one contract suite.
//!
//! - [`redis::RedisQueue`] (production): one Redis stream per priority class read by a consumer
//!   group (`XADD`, `XREADGROUP`, `XACK`), entries idle past the visibility timeout reclaimed
//!   with `XAUTOCLAIM`, a dead-letter stream, a sorted set of delayed retries and an index of
//!   queued jobs so the reconciler can tell which jobs the queue lost.
//! - [`memory::MemoryQueue`] (embedded mode): the same semantics in process.
//!
//! Delivery is at least once: a worker that dies leaves its entry pending, and another worker
//! reclaims it after the visibility timeout. The job record's conditional updates make a job
//! run once at a time whatever the queue delivers.

pub mod memory;
pub mod redis;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Priority classes: 0 (lowest) to `PRIORITY_CLASSES - 1` (highest).
pub const PRIORITY_CLASSES: usize = 4;

/// The class of a tier's `queue_priority` (higher runs first; values above the top class
/// share it).
pub fn priority_class(queue_priority: u32) -> u8 {
    u8::try_from(queue_priority.min(PRIORITY_CLASSES as u32 - 1)).unwrap_or_default()
}

/// Reading weight of each class: a class is read 4× as often as the one below it when both
/// have work, so lower classes slow down under load but are never starved.
const WEIGHTS: [i64; PRIORITY_CLASSES] = [1, 4, 16, 64];

/// One queued job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// The job.
    pub job_id: String,
    /// Its priority class.
    pub priority: u8,
    /// W3C trace context of the submit, so the worker's spans continue its trace.
    pub trace: HashMap<String, String>,
    /// When it was (re-)enqueued, Unix ms (for the time-in-queue metric).
    pub enqueued_at_ms: i64,
}

/// A claimed entry; ack it when the job needs the queue no more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The backend's entry id.
    pub id: String,
    /// The message.
    pub message: QueueMessage,
    /// How many times this entry was delivered (1 = first).
    pub deliveries: u32,
}

/// Settings shared by both backends.
#[derive(Clone, Copy, Debug)]
pub struct QueueSettings {
    /// How long a claimed entry may go without a touch before another consumer reclaims it.
    pub visibility_timeout: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream instead.
    pub max_deliveries: u32,
}

/// A queue failure (the backend is unreachable or answered nonsense).
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis did not answer in time, or its circuit breaker is open: nothing was queued.
    #[error("{0}")]
    Unavailable(#[from] easel_runtime::redis::RedisError),
    /// A message could not be encoded or decoded.
    #[error("malformed queue message: {0}")]
    Malformed(String),
}

impl QueueError {
    /// Whether nothing was tried because Redis is known down (its circuit breaker is open):
    /// the breaker logs the outage once, so callers need not log each refusal.
    pub fn is_circuit_open(&self) -> bool {
        matches!(
            self,
            QueueError::Unavailable(easel_runtime::redis::RedisError::Open)
        )
    }
}

/// The queue, as the service uses it.
#[async_trait::async_trait]
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Adds a message, visible after `delay`.
    async fn enqueue(&self, message: &QueueMessage, delay: Duration) -> Result<(), QueueError>;

    /// Adds messages visible now, in order (backends do it in one round trip), and answers
    /// how many entries then wait for a worker per priority class (index = class), for the
    /// new jobs' queue positions.
    async fn enqueue_many(&self, messages: &[QueueMessage]) -> Result<Vec<u64>, QueueError> {
        for message in messages {
            self.enqueue(message, Duration::ZERO).await?;
        }
        self.depth().await
    }

    /// Claims the next entry for `consumer`: a reclaimed one idle past the visibility timeout
    /// first, else a new one chosen by weighted priority; waits up to `block` for one.
    async fn claim(&self, consumer: &str, block: Duration) -> Result<Option<Delivery>, QueueError>;

    /// Tells the queue the consumer still works on the entry (resets its idle time).
    async fn touch(&self, consumer: &str, delivery: &Delivery) -> Result<(), QueueError>;

    /// Removes a handled entry.
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Moves an entry to the dead-letter stream with a reason.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str) -> Result<(), QueueError>;

    /// For each job, whether the queue holds an entry of it (ready, delayed or claimed).
    async fn contains(&self, job_ids: &[String]) -> Result<Vec<bool>, QueueError>;

    /// Entries not yet delivered, per priority class (index = class).
    async fn depth(&self) -> Result<Vec<u64>, QueueError>;

    /// The dead-lettered messages with their reasons, oldest first (operators and tests).
    async fn dead_letters(&self) -> Result<Vec<(QueueMessage, String)>, QueueError>;

    /// Whether the backend answers (readiness).
    async fn ping(&self) -> Result<(), QueueError>;

    /// Resolves when the backend answers again after an outage (the reconciler then runs at
    /// once, to enqueue what was submitted meanwhile). Backends without outages never resolve.
    async fn recovered(&self) {
        std::future::pending::<()>().await;
    }
}

/// Smooth weighted round-robin over the classes: which class to read first on each claim.
#[derive(Debug, Default)]
pub(crate) struct WeightedOrder {
    current: Mutex<[i64; PRIORITY_CLASSES]>,
}

impl WeightedOrder {
    /// The classes in the order to try: the class whose turn it is, then the rest from the
    /// highest down.
    pub(crate) fn next(&self) -> Vec<usize> {
        let total: i64 = WEIGHTS.iter().sum();
        let first = {
            let mut current = self
                .current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (value, weight) in current.iter_mut().zip(WEIGHTS) {
                *value += weight;
            }
            let (first, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(class, value)| (**value, *class))
                .unwrap_or((PRIORITY_CLASSES - 1, &0));
            current[first] -= total;
            first
        };
        let mut order = vec![first];
        order.extend((0..PRIORITY_CLASSES).rev().filter(|class| *class != first));
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_order_serves_every_class_in_proportion() {
        let order = WeightedOrder::default();
        let mut firsts = [0; PRIORITY_CLASSES];
        for _ in 0..85 {
            let next = order.next();
            assert_eq!(next.len(), PRIORITY_CLASSES);
            firsts[next[0]] += 1;
        }
        assert_eq!(firsts, [1, 4, 16, 64]);
    }

    #[test]
    fn tiers_map_to_classes() {
        assert_eq!(priority_class(0), 0);
        assert_eq!(priority_class(2), 2);
        assert_eq!(priority_class(99), 3);
    }
}
