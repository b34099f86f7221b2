//! `WatchJob`: the snapshot, then every event in sequence (queue positions while PENDING
//! included, see [`crate::positions`]), ending after a terminal status.
//!
//! The watcher subscribes to the live feed before it reads anything, so nothing published
//! after the read is missed; it numbers what it sent and reads any gap (or a resync after a
//! lost subscription) from the `job_events` table, so it never skips or repeats an event.
//!
//! A watch is a stream, not a task: a parked watcher is one small state machine waiting on its
//! job's shared channel (a few hundred bytes), and the database is only touched to catch up.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use easel_proto::jobs::v1::{JobEvent, JobStatus, WatchJobResponse, job_event};
use futures::Stream;

use crate::db;
use crate::error::{JobsError, Result};
use crate::events::{HubMessage, Subscription};
use crate::job::Job;
use crate::model::{Caller, is_terminal, timestamp};
use crate::service::{Jobs, parse_job_id};

/// The stream a watch answers with.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = std::result::Result<WatchJobResponse, tonic::Status>> + Send>>;

/// Events read from the table per query.
const PAGE: u64 = 500;

fn status_of(event: &JobEvent) -> Option<JobStatus> {
    match &event.kind {
        Some(job_event::Kind::StatusChange(change)) => {
            Some(JobStatus::try_from(change.status).unwrap_or(JobStatus::Unspecified))
        }
        Some(job_event::Kind::Snapshot(job)) => {
            Some(JobStatus::try_from(job.status).unwrap_or(JobStatus::Unspecified))
        }
        _ => None,
    }
}

/// Starts watching one of the caller's jobs after `after_seq` (0 = snapshot first).
pub async fn watch(
    jobs: Arc<Jobs>,
    caller: &Caller,
    job_id: &str,
    after_seq: u64,
) -> Result<WatchStream> {
    let id = parse_job_id(job_id)?;
    let subscription = jobs.hub.subscribe(id.as_str());
    let row = db::find_for_owner(&jobs.db, &caller.user_id, id.as_str()).await?;
    let job = Job::try_from(row)?;
    let last_seq = u64::try_from(job.seq).unwrap_or_default();
    if after_seq > last_seq {
        return Err(JobsError::field(
            "after_seq",
            format!("the job's last event is {last_seq}"),
        ));
    }
    let mut watcher = Watcher {
        subscription,
        owner: job.owner.clone(),
        last: after_seq,
        queue: VecDeque::new(),
        more: after_seq < last_seq,
        done: false,
        jobs,
    };
    if after_seq == 0 {
        let snapshot = watcher.jobs.snapshot(&job).await?;
        let time = Some(timestamp(watcher.jobs.clock.now()));
        watcher.push(Box::new(JobEvent {
            job_id: job.id.to_string(),
            seq: last_seq,
            time,
            kind: Some(job_event::Kind::Snapshot(snapshot)),
        }));
    }
    Ok(Box::pin(futures::stream::unfold(watcher, Watcher::next)))
}

struct Watcher {
    jobs: Arc<Jobs>,
    subscription: Subscription,
    owner: String,
    /// The last event queued or sent.
    last: u64,
    /// Events to send, in order; boxed, so the queue's slots (kept between events) are small
    /// whatever the events' size.
    queue: VecDeque<Box<JobEvent>>,
    /// The table may hold events after `last` that are not queued yet.
    more: bool,
    /// The terminal status is queued or sent: nothing follows.
    done: bool,
}

type Item = std::result::Result<WatchJobResponse, tonic::Status>;

impl Watcher {
    /// The next message, or `None` at the end of the stream (or when the hub is gone).
    async fn next(mut self) -> Option<(Item, Watcher)> {
        loop {
            if let Some(mut event) = self.queue.pop_front() {
                if self.queue.is_empty() {
                    // Most of a watch is spent parked: keep no empty buffer meanwhile.
                    self.queue = VecDeque::new();
                }
                // Boxed: only an output waits here, and the parked state machine stays small.
                if let Some(job_event::Kind::Output(output)) = &mut event.kind
                    && output.url.is_empty()
                {
                    Box::pin(
                        self.jobs
                            .sign_outputs(&self.owner, std::slice::from_mut(output)),
                    )
                    .await;
                }
                return Some((
                    Ok(WatchJobResponse {
                        event: Some(*event),
                    }),
                    self,
                ));
            }
            if self.done {
                return None;
            }
            if self.more {
                // Boxed: the parked state machine stays small; the query's is rarely alive.
                if let Err(error) = Box::pin(self.catch_up()).await {
                    self.done = true;
                    return Some((Err(easel_runtime::Error::from(error).into_status()), self));
                }
                continue;
            }
            match self.subscription.recv().await? {
                HubMessage::Resync => self.more = true,
                HubMessage::Event(event) => {
                    if event.seq == self.last + 1 {
                        self.push(Box::new(event.as_ref().clone()));
                    } else if event.seq > self.last {
                        self.more = true;
                    }
                }
            }
        }
    }

    /// Queues a stored event (in sequence) and follows the job's status.
    fn push(&mut self, event: Box<JobEvent>) {
        self.last = self.last.max(event.seq);
        if let Some(status) = status_of(&event) {
            self.done |= is_terminal(status);
        }
        self.queue.push_back(event);
    }

    /// Queues the next page of stored events after the last one queued.
    async fn catch_up(&mut self) -> Result<()> {
        let events =
            db::events_after(&self.jobs.db, self.subscription.job_id(), self.last, PAGE).await?;
        self.more = events.len() as u64 == PAGE;
        for event in events {
            if self.done {
                break;
            }
            if event.seq == self.last + 1 {
                self.push(Box::new(event));
            }
        }
        Ok(())
    }
}
