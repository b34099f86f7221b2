//! Shared server state: the prompt queue (a Python-`heapq`-ordered heap, like ComfyUI's) and the
//! in-memory history.

use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Map, Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::config::{RequestControl, SimConfig};
use crate::files::Dirs;
use crate::nodes::{DynamicLists, NodeCatalog};
use crate::ws::Hub;

/// A prompt's priority: the server's counter (an int) or the client's explicit float.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PromptNumber {
    /// Assigned from the counter (negative for `front`).
    Counter(i64),
    /// Given by the client as `number`.
    Explicit(f64),
}

impl PromptNumber {
    fn key(self) -> f64 {
        match self {
            Self::Counter(number) => number as f64,
            Self::Explicit(number) => number,
        }
    }

    /// As JSON: an int, or a float like Python's `float(number)`.
    pub fn to_json(self) -> Value {
        match self {
            Self::Counter(number) => json!(number),
            Self::Explicit(number) => {
                serde_json::Number::from_f64(number).map_or(Value::Null, Value::Number)
            }
        }
    }
}

/// One queued prompt.
#[derive(Debug)]
pub struct QueueItem {
    /// Priority.
    pub number: PromptNumber,
    /// The prompt id.
    pub prompt_id: String,
    /// The validated (coerced) graph.
    pub graph: Map<String, Value>,
    /// `extra_data` without the secret keys, `client_id` added.
    pub extra_data: Map<String, Value>,
    /// The output nodes to execute.
    pub outputs: Vec<String>,
    /// Per-request simulator controls.
    pub control: RequestControl,
}

impl QueueItem {
    /// `[number, prompt_id, graph, extra_data, outputs]`, as `/queue` and history show it.
    pub fn to_json(&self) -> Value {
        json!([
            self.number.to_json(),
            self.prompt_id,
            self.graph,
            self.extra_data,
            self.outputs
        ])
    }

    /// The client that receives this prompt's messages.
    pub fn client_id(&self) -> Option<String> {
        self.extra_data
            .get("client_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn compare(&self, other: &Self) -> Ordering {
        self.number
            .key()
            .total_cmp(&other.number.key())
            .then_with(|| self.prompt_id.cmp(&other.prompt_id))
    }
}

/// The executor queue: a binary min-heap in a `Vec`, in heap (not sorted) order like
/// Python's `heapq`, plus the running item.
#[derive(Debug, Default)]
pub struct Queue {
    /// Next counter value.
    pub counter: i64,
    heap: Vec<Arc<QueueItem>>,
    /// The prompt being executed.
    pub running: Option<Arc<QueueItem>>,
}

impl Queue {
    /// running + pending.
    pub fn remaining(&self) -> usize {
        self.heap.len() + usize::from(self.running.is_some())
    }

    /// The pending items in heap order.
    pub fn pending(&self) -> &[Arc<QueueItem>] {
        &self.heap
    }

    /// `heapq.heappush`.
    pub fn push(&mut self, item: Arc<QueueItem>) {
        self.heap.push(item);
        let mut index = self.heap.len() - 1;
        while index > 0 {
            let parent = (index - 1) / 2;
            if self.heap[index].compare(&self.heap[parent]) == Ordering::Less {
                self.heap.swap(index, parent);
                index = parent;
            } else {
                break;
            }
        }
    }

    /// `heapq.heappop`.
    pub fn pop(&mut self) -> Option<Arc<QueueItem>> {
        if self.heap.is_empty() {
            return None;
        }
        let last = self.heap.len() - 1;
        self.heap.swap(0, last);
        let item = self.heap.pop();
        self.sift_down(0);
        item
    }

    fn sift_down(&mut self, mut index: usize) {
        loop {
            let (left, right) = (2 * index + 1, 2 * index + 2);
            let mut smallest = index;
            for child in [left, right] {
                if child < self.heap.len()
                    && self.heap[child].compare(&self.heap[smallest]) == Ordering::Less
                {
                    smallest = child;
                }
            }
            if smallest == index {
                return;
            }
            self.heap.swap(index, smallest);
            index = smallest;
        }
    }

    /// Removes pending items whose id is listed; true if any was removed.
    pub fn delete(&mut self, ids: &[String]) -> bool {
        let before = self.heap.len();
        self.heap.retain(|item| !ids.contains(&item.prompt_id));
        if self.heap.len() == before {
            return false;
        }
        for index in (0..self.heap.len() / 2).rev() {
            self.sift_down(index);
        }
        true
    }

    /// Drops every pending item.
    pub fn clear(&mut self) {
        self.heap.clear();
    }
}

/// The history: insertion-ordered, capped, in memory only.
#[derive(Debug, Default)]
pub struct History {
    entries: Vec<(String, Value)>,
}

impl History {
    /// Stores an entry; a re-used prompt id keeps its original position.
    pub fn insert(&mut self, prompt_id: &str, entry: Value, cap: usize) {
        if let Some(slot) = self.entries.iter_mut().find(|(id, _)| id == prompt_id) {
            slot.1 = entry;
            return;
        }
        self.entries.push((prompt_id.to_owned(), entry));
        if self.entries.len() > cap {
            let excess = self.entries.len() - cap;
            self.entries.drain(..excess);
        }
    }

    /// One entry.
    pub fn get(&self, prompt_id: &str) -> Option<&Value> {
        self.entries
            .iter()
            .find(|(id, _)| id == prompt_id)
            .map(|(_, entry)| entry)
    }

    /// `get_history(max_items, offset)`: a negative offset with `max_items` means "the last N".
    pub fn page(&self, max_items: Option<usize>, offset: i64) -> Map<String, Value> {
        let offset = match (offset < 0, max_items) {
            (true, Some(max)) => self.entries.len().saturating_sub(max),
            (true, None) => 0,
            (false, _) => usize::try_from(offset).unwrap_or(usize::MAX),
        };
        self.entries
            .iter()
            .skip(offset)
            .take(max_items.unwrap_or(usize::MAX))
            .map(|(id, entry)| (id.clone(), entry.clone()))
            .collect()
    }

    /// Deletes the listed ids.
    pub fn delete(&mut self, ids: &[String]) {
        self.entries.retain(|(id, _)| !ids.contains(id));
    }

    /// Deletes everything.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// Everything the handlers and the worker share.
pub struct Shared {
    /// The configuration.
    pub config: SimConfig,
    /// Node classes.
    pub catalog: NodeCatalog,
    /// Directories.
    pub dirs: Dirs,
    /// The queue.
    pub queue: Mutex<Queue>,
    /// Mirrors `queue.remaining()` for readers that must not take the queue lock.
    pub remaining: AtomicUsize,
    /// Wakes the worker.
    pub queue_changed: Notify,
    /// The history.
    pub history: Mutex<History>,
    /// WebSocket clients.
    pub hub: Hub,
    /// Set by `/interrupt` while a prompt runs; checked between nodes and sampler steps.
    pub interrupt: AtomicBool,
    /// Abrupt death: sockets dropped without close frames, listener closed.
    pub kill: CancellationToken,
    /// Graceful stop.
    pub shutdown: CancellationToken,
    /// Asks the accept loop to stop listening for a while.
    pub refuse: mpsc::UnboundedSender<std::time::Duration>,
    /// PreviewImage's file prefix (`ComfyUI_temp_xxxxx`), fixed per server start.
    pub preview_prefix: String,
    /// A test's hold on the queue: while set, no queued prompt starts.
    pub hold: Arc<Hold>,
}

/// Whether a test holds the queue, and a wake-up for the executor when that changes.
#[derive(Debug, Default)]
pub struct Hold {
    held: std::sync::atomic::AtomicBool,
    changed: Notify,
}

impl Hold {
    /// Holds (`true`) or releases (`false`) the queue.
    pub fn set(&self, held: bool) {
        self.held.store(held, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits until the queue is not held.
    pub async fn released(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the check, so a release between the two is not missed.
            changed.as_mut().enable();
            if !self.held.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            changed.await;
        }
    }
}

impl Shared {
    /// Locks the queue (a poisoned lock is still usable: the data is plain).
    pub fn lock_queue(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Locks the history.
    pub fn lock_history(&self) -> MutexGuard<'_, History> {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Broadcasts `status` with the queue's current size; call with the queue lock held so
    /// the counts go out in order.
    pub fn publish_status(&self, queue: &Queue) {
        let remaining = queue.remaining();
        self.remaining
            .store(remaining, std::sync::atomic::Ordering::SeqCst);
        self.hub.broadcast_status(remaining);
    }

    /// The dynamic combo lists right now.
    pub fn dynamic_lists(&self) -> DynamicLists {
        DynamicLists {
            checkpoints: self.config.checkpoints.clone(),
            input_images: DynamicLists::scan_input_images(&self.dirs.input),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(number: PromptNumber, id: &str) -> Arc<QueueItem> {
        Arc::new(QueueItem {
            number,
            prompt_id: id.to_owned(),
            graph: Map::new(),
            extra_data: Map::new(),
            outputs: Vec::new(),
            control: RequestControl::default(),
        })
    }

    #[test]
    fn heap_order_like_heapq() {
        let mut queue = Queue::default();
        queue.push(item(PromptNumber::Counter(44), "a"));
        queue.push(item(PromptNumber::Counter(45), "b"));
        queue.push(item(PromptNumber::Counter(-46), "c"));
        let numbers: Vec<f64> = queue
            .pending()
            .iter()
            .map(|item| item.number.key())
            .collect();
        assert_eq!(numbers, vec![-46.0, 45.0, 44.0]);
        assert_eq!(
            queue.pop().map(|item| item.prompt_id.clone()),
            Some("c".to_owned())
        );
        assert_eq!(
            queue.pop().map(|item| item.prompt_id.clone()),
            Some("a".to_owned())
        );
    }

    #[test]
    fn history_pages() {
        let mut history = History::default();
        for id in ["a", "b", "c"] {
            history.insert(id, json!({}), 2);
        }
        assert_eq!(
            history.page(None, -1).keys().collect::<Vec<_>>(),
            ["b", "c"]
        );
        history.insert("b", json!({"x": 1}), 2);
        assert_eq!(history.page(Some(1), -1).keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(history.page(Some(1), 0).keys().collect::<Vec<_>>(), ["b"]);
    }
}
