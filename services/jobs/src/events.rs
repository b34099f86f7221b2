//! Live fan-out of job events to watchers.
//!
//! Every stored event is published once: over Redis pub/sub (one channel for the whole
//! deployment) when Redis is configured, in process otherwise. Each jobs process holds ONE
//! subscription on its own connection and hands events to a per-job in-process broadcast
//! channel that exists only while someone watches that job, so thousands of watchers cost a
//! map entry and a channel receiver each — no Redis connection and no polling per watcher.
//!
//! Live delivery is a fast path, not the record: watchers number events and read any gap from
//! the `job_events` table. When the subscription drops (and so may have missed events), every
//! watcher is told to [`HubMessage::Resync`] from the table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easel_proto::jobs::v1::{JobEvent, job_event};
use easel_runtime::redis::{Redis, RedisError};
use futures::StreamExt;
use prost::Message;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

/// Messages per job a slow watcher may fall behind before it resyncs from the table.
const CHANNEL_CAPACITY: usize = 64;

/// What a watcher receives.
#[derive(Clone, Debug)]
pub enum HubMessage {
    /// A new event of the job.
    Event(Arc<JobEvent>),
    /// Events may have been missed: read the table from the last seen sequence number.
    Resync,
}

#[derive(Debug)]
enum Publisher {
    Local,
    Redis { redis: Redis, channel: String },
}

/// The process's event hub.
#[derive(Debug)]
pub struct EventHub {
    channels: Mutex<HashMap<String, broadcast::Sender<HubMessage>>>,
    publisher: Publisher,
    /// Signalled when a job anywhere in the deployment changes status (the queue may have moved).
    queue_moved: Notify,
}

/// A watcher's live feed of one job; leaving drops the job's channel when it was the last.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<EventHub>,
    job_id: String,
    receiver: Option<broadcast::Receiver<HubMessage>>,
}

impl Subscription {
    /// The job followed.
    pub fn job_id(&self) -> &str {
        &self.job_id
    }

    /// The next message; a watcher that fell behind gets [`HubMessage::Resync`]. `None` when
    /// the hub is gone.
    pub async fn recv(&mut self) -> Option<HubMessage> {
        let receiver = self.receiver.as_mut()?;
        match receiver.recv().await {
            Ok(message) => Some(message),
            Err(broadcast::error::RecvError::Lagged(_)) => Some(HubMessage::Resync),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut channels = self.hub.lock();
        if channels
            .get(&self.job_id)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.job_id);
        }
    }
}

impl EventHub {
    /// A hub for one process (embedded mode, no Redis).
    pub fn local() -> Arc<EventHub> {
        Arc::new(EventHub {
            channels: Mutex::new(HashMap::new()),
            publisher: Publisher::Local,
            queue_moved: Notify::new(),
        })
    }

    /// A hub fed by the deployment-wide Redis channel `<prefix>job-events`; the subscription
    /// runs until `stop` fires and reconnects when it drops. Publishing goes through `redis`
    /// (deadline and circuit breaker): while Redis is down it fails at once and watchers read
    /// the events from the table.
    pub async fn redis(redis: Redis, prefix: &str, stop: CancellationToken) -> Arc<EventHub> {
        let client = redis.client().clone();
        let channel = format!("{prefix}job-events");
        let hub = Arc::new(EventHub {
            channels: Mutex::new(HashMap::new()),
            publisher: Publisher::Redis {
                redis,
                channel: channel.clone(),
            },
            queue_moved: Notify::new(),
        });
        // Subscribe before returning so no event published after this is missed; if Redis is
        // down, the loop keeps trying (nobody watches yet, so nothing is missed).
        let first = match connect_pubsub(&client, &channel).await {
            Ok(pubsub) => Some(pubsub),
            Err(error) => {
                tracing::warn!(error = %error, "job event subscription failed at start, retrying");
                None
            }
        };
        tokio::spawn(hub.clone().subscribe_loop(client, channel, first, stop));
        hub
    }

    async fn subscribe_loop(
        self: Arc<Self>,
        client: redis::Client,
        channel: String,
        first: Option<redis::aio::PubSub>,
        stop: CancellationToken,
    ) {
        let mut pubsub = first;
        let mut delay = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let mut current = match pubsub.take() {
                Some(current) => current,
                None => match connect_pubsub(&client, &channel).await {
                    Ok(current) => {
                        delay = Duration::from_millis(100);
                        // Anything published while we were away is in the table.
                        self.resync_all();
                        current
                    }
                    Err(error) => {
                        tracing::warn!(error = %error, "job event subscription failed, retrying");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(delay) => {}
                        }
                        delay = (delay * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            let mut messages = current.on_message();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    message = messages.next() => match message {
                        Some(message) => match JobEvent::decode(message.get_payload_bytes()) {
                            Ok(event) => self.dispatch(Arc::new(event)),
                            Err(error) => tracing::warn!(error = %error, "undecodable job event"),
                        },
                        None => {
                            tracing::warn!("job event subscription dropped, reconnecting");
                            break;
                        }
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<HubMessage>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows one job's live events.
    pub fn subscribe(self: &Arc<Self>, job_id: &str) -> Subscription {
        let receiver = self
            .lock()
            .entry(job_id.to_string())
            .or_insert_with(|| broadcast::channel(CHANNEL_CAPACITY).0)
            .subscribe();
        Subscription {
            hub: self.clone(),
            job_id: job_id.to_string(),
            receiver: Some(receiver),
        }
    }

    /// Publishes a stored event to every watcher of its job, in every jobs process. A failure
    /// is logged, not returned: the event is in the table and watchers resync from it.
    pub async fn publish(&self, event: &JobEvent) {
        match &self.publisher {
            Publisher::Local => self.dispatch(Arc::new(event.clone())),
            Publisher::Redis { redis, channel } => {
                let payload = &event.encode_to_vec();
                let sent = redis
                    .run(|mut connection| async move {
                        redis::cmd("PUBLISH")
                            .arg(channel)
                            .arg(payload)
                            .query_async::<i64>(&mut connection)
                            .await
                    })
                    .await;
                if let Err(error) = sent {
                    publish_failed(&error);
                    // Local watchers at least can resync now.
                    self.resync_job(&event.job_id);
                }
            }
        }
    }

    /// Publishes stored events in order, in one round trip to Redis.
    pub async fn publish_all(&self, events: &[JobEvent]) {
        match (&self.publisher, events) {
            (_, []) => {}
            (_, [event]) => self.publish(event).await,
            (Publisher::Local, _) => {
                for event in events {
                    self.dispatch(Arc::new(event.clone()));
                }
            }
            (Publisher::Redis { redis, channel }, _) => {
                let mut pipe = redis::pipe();
                for event in events {
                    pipe.cmd("PUBLISH")
                        .arg(channel)
                        .arg(event.encode_to_vec())
                        .ignore();
                }
                let pipe = &pipe;
                let sent =
                    redis
                        .run(|mut connection| async move {
                            pipe.query_async::<()>(&mut connection).await
                        })
                        .await;
                if let Err(error) = sent {
                    publish_failed(&error);
                    for event in events {
                        self.resync_job(&event.job_id);
                    }
                }
            }
        }
    }

    /// Jobs watched in this process right now.
    pub fn watched_jobs(&self) -> usize {
        self.lock().len()
    }

    /// The ids of the jobs watched in this process right now.
    pub fn watched_job_ids(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Waits until a job changes status somewhere in the deployment (at once if one did since
    /// the last wait).
    pub async fn queue_moved(&self) {
        self.queue_moved.notified().await;
    }

    fn dispatch(&self, event: Arc<JobEvent>) {
        // Any status change can move the queue: a job starting or ending, or one coming back.
        if let Some(job_event::Kind::StatusChange(_)) = &event.kind {
            self.queue_moved.notify_one();
        }
        if let Some(sender) = self.lock().get(&event.job_id) {
            let _ = sender.send(HubMessage::Event(event));
        }
    }

    fn resync_job(&self, job_id: &str) {
        if let Some(sender) = self.lock().get(job_id) {
            let _ = sender.send(HubMessage::Resync);
        }
    }

    fn resync_all(&self) {
        for sender in self.lock().values() {
            let _ = sender.send(HubMessage::Resync);
        }
    }
}

/// Logs a failed publish: at warn when Redis failed it, at debug when its breaker refused
/// it (the breaker logs the outage once, not once per event).
fn publish_failed(error: &RedisError) {
    if matches!(error, RedisError::Open) {
        tracing::debug!("redis unavailable; job events not published, watchers resync");
    } else {
        tracing::warn!(error = %error, "publishing job events failed; watchers resync");
    }
}

async fn connect_pubsub(
    client: &redis::Client,
    channel: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
