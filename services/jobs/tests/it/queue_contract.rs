//! One contract suite, run against both queue backends.

use std::collections::HashMap;
use std::time::Duration;

use easel_jobs::queue::memory::MemoryQueue;
use easel_jobs::queue::redis::RedisQueue;
use easel_jobs::queue::{JobQueue, QueueMessage, QueueSettings};
use easel_test_support::TestRedis;

// Long enough that a busy machine's pauses between two calls stay well inside it: the touch
// test below keeps 800 ms of margin on each side.
const SETTINGS: QueueSettings = QueueSettings {
    visibility_timeout: Duration::from_millis(2000),
    max_deliveries: 2,
};

fn message(job: &str, priority: u8) -> QueueMessage {
    let mut trace = HashMap::new();
    trace.insert(
        "traceparent".to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_string(),
    );
    QueueMessage {
        job_id: job.to_string(),
        priority,
        trace,
        enqueued_at_ms: 1,
    }
}

async fn enqueue_claim_ack(queue: &dyn JobQueue) {
    assert_eq!(
        queue.claim("a", Duration::from_millis(50)).await.unwrap(),
        None
    );
    queue
        .enqueue(&message("job_1", 0), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(
        queue
            .contains(&["job_1".into(), "job_2".into()])
            .await
            .unwrap(),
        [true, false]
    );
    let delivery = queue
        .claim("a", Duration::from_secs(1))
        .await
        .unwrap()
        .expect("a delivery");
    assert_eq!(
        delivery.message,
        message("job_1", 0),
        "the trace context travels"
    );
    assert_eq!(delivery.deliveries, 1);
    // Claimed by "a": nobody else gets it while it is visible-timeout fresh.
    assert_eq!(
        queue.claim("b", Duration::from_millis(50)).await.unwrap(),
        None
    );
    queue.ack(&delivery).await.unwrap();
    assert_eq!(queue.contains(&["job_1".into()]).await.unwrap(), [false]);
    assert_eq!(
        queue.claim("b", Duration::from_millis(500)).await.unwrap(),
        None
    );
}

async fn a_blocked_claim_wakes_on_enqueue(queue: std::sync::Arc<dyn JobQueue>) {
    // Blocks far longer than the test waits: only a wake-up by the enqueue can deliver the
    // entry in time, however slow the machine.
    let waiter = {
        let queue = queue.clone();
        tokio::spawn(async move { queue.claim("a", Duration::from_secs(300)).await })
    };
    // Give the claim a chance to block first; if it has not yet, it finds the entry at once
    // and the test still holds.
    tokio::task::yield_now().await;
    queue
        .enqueue(&message("job_w", 1), Duration::ZERO)
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("woken by the enqueue, long before the block ends")
        .unwrap()
        .unwrap()
        .expect("woken with the entry");
    assert_eq!(delivery.message.job_id, "job_w");
}

async fn visibility_timeout_reclaim_then_dead_letter(queue: &dyn JobQueue) {
    queue
        .enqueue(&message("job_v", 2), Duration::ZERO)
        .await
        .unwrap();
    let first = queue
        .claim("a", Duration::from_secs(1))
        .await
        .unwrap()
        .unwrap();
    // A touch keeps it ours past one timeout: untouched, it would be free again by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    queue.touch("a", &first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        queue.claim("b", Duration::ZERO).await.unwrap(),
        None,
        "touched entries stay"
    );
    // "a" dies: after the visibility timeout "b" reclaims it.
    let second = queue
        .claim("b", Duration::from_secs(10))
        .await
        .unwrap()
        .expect("reclaimed");
    assert_eq!(second.message.job_id, "job_v");
    assert_eq!(second.deliveries, 2);
    // "b" dies too: past max deliveries it goes to the dead letters, not to "c".
    // (It idles past the visibility timeout during this claim's wait.)
    assert_eq!(
        queue.claim("c", Duration::from_secs(5)).await.unwrap(),
        None
    );
    let dead = queue.dead_letters().await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].0.job_id, "job_v");
    assert_eq!(queue.contains(&["job_v".into()]).await.unwrap(), [false]);
}

async fn delayed_entries_wait(queue: &dyn JobQueue) {
    queue
        .enqueue(&message("job_d", 1), Duration::from_millis(600))
        .await
        .unwrap();
    assert_eq!(queue.contains(&["job_d".into()]).await.unwrap(), [true]);
    assert_eq!(
        queue.claim("a", Duration::from_millis(100)).await.unwrap(),
        None
    );
    let delivery = queue
        .claim("a", Duration::from_secs(3))
        .await
        .unwrap()
        .expect("due");
    assert_eq!(delivery.message.job_id, "job_d");
    queue.ack(&delivery).await.unwrap();
}

async fn priority_without_starvation(queue: &dyn JobQueue) {
    for index in 0..40 {
        queue
            .enqueue(&message(&format!("high_{index}"), 3), Duration::ZERO)
            .await
            .unwrap();
    }
    for index in 0..3 {
        queue
            .enqueue(&message(&format!("low_{index}"), 0), Duration::ZERO)
            .await
            .unwrap();
    }
    let mut claimed = Vec::new();
    for _ in 0..43 {
        let delivery = queue
            .claim("a", Duration::from_millis(200))
            .await
            .unwrap()
            .expect("entry");
        queue.ack(&delivery).await.unwrap();
        claimed.push(delivery.message.job_id);
    }
    // High first overall…
    let first_ten_high = claimed[..10]
        .iter()
        .filter(|id| id.starts_with("high"))
        .count();
    assert!(first_ten_high >= 8, "{claimed:?}");
    // …but a low entry is served well before the high ones run out.
    let first_low = claimed
        .iter()
        .position(|id| id.starts_with("low"))
        .expect("low served");
    assert!(first_low < 40, "low starved: {claimed:?}");
    // FIFO within a class.
    let highs: Vec<_> = claimed.iter().filter(|id| id.starts_with("high")).collect();
    let expected: Vec<String> = (0..40).map(|i| format!("high_{i}")).collect();
    assert_eq!(highs, expected.iter().collect::<Vec<_>>());
}

macro_rules! contract_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn enqueue_claim_and_ack() {
                let (_guard, queue) = $make.await;
                enqueue_claim_ack(queue.as_ref()).await;
            }

            #[tokio::test]
            async fn a_blocked_claim_wakes_when_work_arrives() {
                let (_guard, queue) = $make.await;
                a_blocked_claim_wakes_on_enqueue(queue).await;
            }

            #[tokio::test]
            async fn idle_entries_are_reclaimed_then_dead_lettered() {
                let (_guard, queue) = $make.await;
                visibility_timeout_reclaim_then_dead_letter(queue.as_ref()).await;
            }

            #[tokio::test]
            async fn delayed_entries_wait_their_turn() {
                let (_guard, queue) = $make.await;
                delayed_entries_wait(queue.as_ref()).await;
            }

            #[tokio::test]
            async fn priority_classes_run_in_order_without_starvation() {
                let (_guard, queue) = $make.await;
                priority_without_starvation(queue.as_ref()).await;
            }
        }
    };
}

async fn memory() -> (Option<TestRedis>, std::sync::Arc<dyn JobQueue>) {
    (None, std::sync::Arc::new(MemoryQueue::new(SETTINGS)))
}

async fn redis() -> (Option<TestRedis>, std::sync::Arc<dyn JobQueue>) {
    let test = TestRedis::new();
    let queue = RedisQueue::connect(&test.url, &test.prefix, SETTINGS)
        .await
        .unwrap();
    (Some(test), std::sync::Arc::new(queue))
}

contract_suite!(in_process, memory());
contract_suite!(redis_streams, redis());
