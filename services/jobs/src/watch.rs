//! `WatchJob`: the snapshot, then every event in sequence, ending after a terminal status.
//!
//! The watcher subscribes to the live feed before it reads anything, so nothing published
//! after the read is missed; it numbers what it sent and reads any gap (or a resync after a
//! lost subscription) from the `job_events` table, so it never skips or repeats an event.

use std::sync::Arc;

use easel_proto::jobs::v1::{JobEvent, JobStatus, WatchJobResponse, job_event};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::db;
use crate::error::{JobsError, Result};
use crate::events::HubMessage;
use crate::model::{Caller, is_terminal, status_from_db, timestamp};
use crate::service::{Jobs, parse_job_id};

/// The stream a watch answers with.
pub type WatchStream = ReceiverStream<std::result::Result<WatchJobResponse, tonic::Status>>;

/// Events read from the table per query.
const PAGE: u64 = 500;

fn ends_the_stream(event: &JobEvent) -> bool {
    matches!(
        &event.kind,
        Some(job_event::Kind::StatusChange(change))
            if is_terminal(JobStatus::try_from(change.status).unwrap_or(JobStatus::Unspecified))
    )
}

/// Starts watching one of the caller's jobs after `after_seq` (0 = snapshot first).
pub async fn watch(
    jobs: Arc<Jobs>,
    caller: &Caller,
    job_id: &str,
    after_seq: u64,
) -> Result<WatchStream> {
    let id = parse_job_id(job_id)?;
    let mut subscription = jobs.hub.subscribe(id.as_str());
    let row = db::find_for_owner(&jobs.db, &caller.user_id, id.as_str()).await?;
    let last_seq = u64::try_from(row.seq).unwrap_or_default();
    if after_seq > last_seq {
        return Err(JobsError::field(
            "after_seq",
            format!("the job's last event is {last_seq}"),
        ));
    }
    let (sender, receiver) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut watcher = Watcher {
            jobs,
            sender,
            owner: row.owner.clone(),
            job_id: row.id.clone(),
            last: after_seq,
        };
        let result: Result<bool> = async {
            if after_seq == 0 {
                let snapshot = watcher.jobs.render(&row).await?;
                let done = is_terminal(status_from_db(row.status));
                let event = JobEvent {
                    job_id: row.id.clone(),
                    seq: last_seq,
                    time: Some(timestamp(watcher.jobs.clock.now())),
                    kind: Some(job_event::Kind::Snapshot(snapshot)),
                };
                if !watcher.send(event).await || done {
                    return Ok(true);
                }
                watcher.last = last_seq;
            } else if watcher.catch_up().await? {
                return Ok(true);
            }
            loop {
                let message = tokio::select! {
                    () = watcher.sender.closed() => return Ok(true),
                    message = subscription.recv() => message,
                };
                match message {
                    None => return Ok(true),
                    Some(HubMessage::Resync) => {
                        if watcher.catch_up().await? {
                            return Ok(true);
                        }
                    }
                    Some(HubMessage::Event(event)) => {
                        if event.seq <= watcher.last {
                            continue;
                        }
                        if event.seq == watcher.last + 1 {
                            let done = ends_the_stream(&event);
                            if !watcher.send(event.as_ref().clone()).await || done {
                                return Ok(true);
                            }
                        } else if watcher.catch_up().await? {
                            return Ok(true);
                        }
                    }
                }
            }
        }
        .await;
        if let Err(error) = result {
            let status = easel_runtime::Error::from(error).into_status();
            let _ = watcher.sender.send(Err(status)).await;
        }
    });
    Ok(ReceiverStream::new(receiver))
}

struct Watcher {
    jobs: Arc<Jobs>,
    sender: mpsc::Sender<std::result::Result<WatchJobResponse, tonic::Status>>,
    owner: String,
    job_id: String,
    last: u64,
}

impl Watcher {
    /// Sends one event (signing an output's link); false when the client left.
    async fn send(&mut self, mut event: JobEvent) -> bool {
        if let Some(job_event::Kind::Output(output)) = &mut event.kind {
            self.jobs
                .sign_outputs(&self.owner, std::slice::from_mut(output))
                .await;
        }
        let seq = event.seq;
        let sent = self
            .sender
            .send(Ok(WatchJobResponse { event: Some(event) }))
            .await
            .is_ok();
        self.last = self.last.max(seq);
        sent
    }

    /// Sends every stored event after the last one sent; true when the stream is over.
    async fn catch_up(&mut self) -> Result<bool> {
        loop {
            let events = db::events_after(&self.jobs.db, &self.job_id, self.last, PAGE).await?;
            let full = events.len() as u64 == PAGE;
            for event in events {
                let done = ends_the_stream(&event);
                if !self.send(event).await || done {
                    return Ok(true);
                }
            }
            if !full {
                return Ok(false);
            }
        }
    }
}
