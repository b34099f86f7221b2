//! Group commit of submits. Concurrent submits queue here and one task writes them: whatever
//! arrived while the previous batch was being written becomes the next batch (no timer, so a
//! lone submit waits for nothing). A batch is one transaction (idempotency keys, quota counts,
//! a multi-row insert of the jobs and of their first events), then one enqueue of all its
//! messages. Each caller gets its own answer: a new job, a replay, or its own error.
//!
//! The database stays the source of truth: a key and its job are committed together, quotas
//! are counted in the same transaction (and across the batch), and a job the queue missed is
//! enqueued later by the reconciler.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Utc};
use easel_proto::account::v1::TierLimits;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use crate::clients::Clients;
use crate::db::batch::{self, KeyId};
use crate::db::entity::event;
use crate::db::{JobRow, idempotency};
use crate::error::{JobsError, Result};
use crate::job::Job;
use crate::model::{JobId, millis};
use crate::queue::{JobQueue, PRIORITY_CLASSES, QueueMessage};
use easel_runtime::error::Internal;

/// How long an idempotency key protects a request.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
/// A key whose first request has not finished after this long was abandoned (crash).
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// Most submits in one transaction (26 columns each stay far below the bind limits).
const MAX_BATCH: usize = 256;
/// Submits waiting for a batch before callers wait for room.
const BACKLOG: usize = 4096;

/// One accepted-for-writing submit: the job as it will be stored.
#[derive(Debug)]
pub struct Submission {
    /// The new job (PENDING, seq 1).
    pub job: Job,
    /// Its record, encoded.
    pub row: JobRow,
    /// Its first event, encoded.
    pub first_event: event::Model,
    /// The caller's tier (its quotas).
    pub limits: TierLimits,
    /// When the submit arrived.
    pub now: DateTime<Utc>,
    /// What goes on the queue once the job is stored.
    pub message: QueueMessage,
}

/// What became of a submit.
#[derive(Debug)]
pub enum Accepted {
    /// A new job, with its place in the queue (1 = next) as the queue saw it when it was
    /// enqueued (`None` when the enqueue failed).
    Created {
        /// The stored job.
        job: Box<Job>,
        /// Its queue position.
        position: Option<u64>,
    },
    /// An earlier submit with the same key and request made this job.
    Replayed {
        /// The job's id.
        job_id: JobId,
    },
}

struct Waiting {
    submission: Submission,
    reply: oneshot::Sender<Result<Accepted>>,
}

/// The handle submits are written through; the writer stops when the last handle is dropped.
#[derive(Debug)]
pub struct GroupCommit {
    sender: mpsc::Sender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting")
            .field("job_id", &self.submission.row.id)
            .finish()
    }
}

impl GroupCommit {
    /// Starts the writer task.
    pub fn start(
        db: DatabaseConnection,
        queue: Arc<dyn JobQueue>,
        clients: Clients,
    ) -> GroupCommit {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        tokio::spawn(write_batches(db, queue, clients, receiver));
        GroupCommit { sender }
    }

    /// Writes one submit with whatever else is waiting.
    pub async fn write(&self, submission: Submission) -> Result<Accepted> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Waiting { submission, reply })
            .await
            .map_err(|_| Internal::new("the submit writer stopped"))?;
        answer
            .await
            .map_err(|_| Internal::new("the submit writer dropped a submit"))?
    }
}

async fn write_batches(
    db: DatabaseConnection,
    queue: Arc<dyn JobQueue>,
    clients: Clients,
    mut receiver: mpsc::Receiver<Waiting>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let waiting = std::mem::take(&mut batch);
        write(&db, queue.as_ref(), &clients, waiting).await;
    }
}

/// Writes a batch and answers its callers. A batch that fails as a whole for a reason other
/// than the database being unreachable is written again one submit at a time, so one bad
/// submit cannot fail the others.
async fn write(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    clients: &Clients,
    waiting: Vec<Waiting>,
) {
    let submissions: Vec<&Submission> = waiting.iter().map(|w| &w.submission).collect();
    match commit(db, &submissions).await {
        Ok(mut outcomes) => {
            let created: Vec<usize> = (0..outcomes.len())
                .filter(|&i| matches!(outcomes[i], Ok(Accepted::Created { .. })))
                .collect();
            if !created.is_empty() {
                let messages: Vec<QueueMessage> = created
                    .iter()
                    .map(|&i| waiting[i].submission.message.clone())
                    .collect();
                if let Some(waiting_per_class) = enqueue(db, queue, &messages).await {
                    for (&index, place) in
                        created.iter().zip(positions(&waiting_per_class, &messages))
                    {
                        if let Ok(Accepted::Created { position, .. }) = &mut outcomes[index] {
                            *position = Some(place);
                        }
                    }
                }
                metrics::counter!(crate::metrics::SUBMITTED).increment(messages.len() as u64);
                let mut per_owner: HashMap<&str, u64> = HashMap::new();
                for &index in &created {
                    *per_owner
                        .entry(waiting[index].submission.row.owner.as_str())
                        .or_default() += 1;
                }
                for (owner, count) in per_owner {
                    clients.record_usage(owner, count, 0.0);
                }
            }
            for (w, outcome) in waiting.into_iter().zip(outcomes) {
                let _ = w.reply.send(outcome);
            }
        }
        Err(error) if waiting.len() > 1 && !unreachable(&error) => {
            tracing::warn!(submits = waiting.len(), error = %error, "a submit batch failed; writing its submits one by one");
            for one in waiting {
                Box::pin(write(db, queue, clients, vec![one])).await;
            }
        }
        Err(error) => fail_all(waiting, error),
    }
}

/// Answers every submit of a batch that failed as a whole: a database error (it clones) as
/// itself, so an unreachable database stays UNAVAILABLE; anything else as the shared cause of
/// an internal error, so no answer loses the chain (it used to travel as text).
fn fail_all(waiting: Vec<Waiting>, error: JobsError) {
    let error = match error {
        JobsError::Database(error) => {
            for w in waiting {
                let _ = w.reply.send(Err(JobsError::Database(error.clone())));
            }
            return;
        }
        other => Arc::new(other),
    };
    for w in waiting {
        let cause = Internal::caused("the submit batch failed", Arc::clone(&error));
        let _ = w.reply.send(Err(cause.into()));
    }
}

fn unreachable(error: &JobsError) -> bool {
    matches!(
        error,
        JobsError::Database(DbErr::ConnectionAcquire(_) | DbErr::Conn(_))
    )
}

/// Enqueues a stored batch; answers how many jobs wait per priority class for the batch's
/// queue positions. The records are durable: if the queue is down, the reconciler enqueues
/// them, and the database's PENDING counts stand in for the queue's, in one query for the
/// batch (not one per job).
async fn enqueue(
    db: &DatabaseConnection,
    queue: &dyn JobQueue,
    messages: &[QueueMessage],
) -> Option<Vec<u64>> {
    let error = match queue.enqueue_many(messages).await {
        Ok(waiting_per_class) => return Some(waiting_per_class),
        Err(error) => error,
    };
    if error.is_circuit_open() {
        // Redis is known down (its breaker logged the outage once): nothing was sent.
        tracing::debug!(
            jobs = messages.len(),
            "queue unavailable; the reconciler will enqueue"
        );
    } else {
        tracing::warn!(jobs = messages.len(), error = %error, "enqueue failed; the reconciler will retry");
    }
    let counts = crate::db::pending_by_priority(db).await.ok()?;
    let mut waiting = vec![0; PRIORITY_CLASSES];
    for (priority, count) in counts {
        if let Some(slot) = usize::try_from(priority)
            .ok()
            .and_then(|class| waiting.get_mut(class))
        {
            *slot = u64::try_from(count).unwrap_or_default();
        }
    }
    Some(waiting)
}

fn key_of(submission: &Submission) -> Option<KeyId> {
    let row = &submission.row;
    row.idempotency_key
        .as_ref()
        .map(|key| (row.owner.clone(), key.clone()))
}

fn key_row(submission: &Submission) -> Option<idempotency::KeyRow> {
    let row = &submission.row;
    row.idempotency_key.as_ref().map(|key| {
        idempotency::new_row(
            &row.owner,
            key,
            &row.request_hash,
            &row.id,
            row.created_at_ms,
            i64::try_from(IDEMPOTENCY_TTL.as_millis()).unwrap_or(i64::MAX),
        )
    })
}

/// What an existing key means for a submit with the same key.
fn resolve_existing(
    submission: &Submission,
    existing: &idempotency::KeyRow,
) -> Result<Option<Accepted>> {
    let now = submission.row.created_at_ms;
    let expired = existing.expires_at_ms <= now;
    let abandoned = !existing.completed
        && now - existing.created_at_ms
            > i64::try_from(ABANDONED_AFTER.as_millis()).unwrap_or(i64::MAX);
    if !expired && existing.request_hash != submission.row.request_hash {
        return Err(JobsError::IdempotencyKeyReused);
    }
    if !expired && existing.completed {
        let job_id = JobId::parse(&existing.job_id).ok_or_else(|| JobsError::CorruptRecord {
            job_id: existing.job_id.clone(),
            column: "job_idempotency_keys.job_id",
            source: format!("{:?} is not a job id", existing.job_id).into(),
        })?;
        return Ok(Some(Accepted::Replayed { job_id }));
    }
    if !(expired || abandoned) {
        return Err(JobsError::IdempotencyKeyInFlight);
    }
    // Expired or abandoned: ours to replace.
    Ok(None)
}

fn midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0)
        .single()
        .unwrap_or(now)
}

/// Milliseconds per day.
pub const DAY_MS: i64 = 24 * 3600 * 1000;

/// The UTC day of a time, in days since the Unix epoch.
fn day_of(time: DateTime<Utc>) -> i64 {
    millis(time).div_euclid(DAY_MS)
}

fn as_count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or_default()
}

/// The quota counters of the owners in a batch, kept up to date as its jobs are admitted.
struct Usage {
    /// Owner → (active jobs, jobs accepted today).
    counters: HashMap<String, (u64, u64)>,
    /// Owner → jobs this batch admitted.
    added: HashMap<String, i64>,
}

impl Usage {
    /// Admits one submit or says which quota it would exceed.
    fn admit(&mut self, submission: &Submission) -> Result<()> {
        let limits = &submission.limits;
        let owner = &submission.row.owner;
        let (active, today) = self.counters.get(owner).copied().unwrap_or_default();
        if limits.concurrent_jobs > 0 && active >= u64::from(limits.concurrent_jobs) {
            return Err(JobsError::QuotaExhausted {
                limit: "concurrent_jobs",
                value: limits.concurrent_jobs,
                retry_after: Some(Duration::from_secs(5)),
            });
        }
        if limits.jobs_per_day > 0 && today >= u64::from(limits.jobs_per_day) {
            let next = midnight(submission.now) + chrono::Duration::days(1);
            return Err(JobsError::QuotaExhausted {
                limit: "jobs_per_day",
                value: limits.jobs_per_day,
                retry_after: (next - submission.now).to_std().ok(),
            });
        }
        self.counters.insert(owner.clone(), (active + 1, today + 1));
        *self.added.entry(owner.clone()).or_default() += 1;
        Ok(())
    }
}

/// One transaction for the batch; the answers line up with `submissions`.
async fn commit(
    db: &DatabaseConnection,
    submissions: &[&Submission],
) -> Result<Vec<Result<Accepted>>> {
    let mut commit = Commit {
        submissions,
        outcomes: std::iter::repeat_with(|| None)
            .take(submissions.len())
            .collect(),
        existing: HashMap::new(),
        followers: Vec::new(),
    };
    let txn = db.begin().await?;
    let keyed = commit.lead_keys();
    commit.take_keys(&txn, &keyed).await?;
    let admitted = commit.admit(&txn).await?;
    commit.insert(&txn, &admitted).await?;
    commit.answer_followers();
    txn.commit().await?;
    Ok(commit
        .outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or(Err(Internal::new("a submit got no answer").into())))
        .collect())
}

/// A batch being written: each submit's answer once it is decided.
struct Commit<'a> {
    submissions: &'a [&'a Submission],
    outcomes: Vec<Option<Result<Accepted>>>,
    /// Keys someone held before this batch, as they were.
    existing: HashMap<KeyId, idempotency::KeyRow>,
    /// Submits that follow an earlier submit of the same key in the batch: (follower, leader).
    followers: Vec<(usize, usize)>,
}

impl Commit<'_> {
    /// Idempotency keys: the first submit of each key in the batch leads (its key is inserted
    /// in one statement with the others, or looked at when someone holds it already); a later
    /// submit of the same key follows its leader once the leader's fate is known. Returns the
    /// leaders.
    fn lead_keys(&mut self) -> Vec<usize> {
        let mut leaders: HashMap<KeyId, usize> = HashMap::new();
        let mut keyed = Vec::new();
        for (index, submission) in self.submissions.iter().enumerate() {
            let Some(key) = key_of(submission) else {
                continue;
            };
            if let Some(&leader) = leaders.get(&key) {
                self.followers.push((index, leader));
                // Decided later; set now so it is not admitted as a job of its own.
                self.outcomes[index] = Some(Err(JobsError::IdempotencyKeyInFlight));
            } else {
                leaders.insert(key, index);
                keyed.push(index);
            }
        }
        keyed
    }

    /// Takes the leaders' keys; a key someone holds already decides its submit (a replay, a
    /// conflict, or ours to replace when it expired or was abandoned).
    async fn take_keys<C: ConnectionTrait>(&mut self, txn: &C, keyed: &[usize]) -> Result<()> {
        let submissions = self.submissions;
        let rows: Vec<_> = keyed
            .iter()
            .filter_map(|&i| key_row(submissions[i]))
            .collect();
        let taken = batch::take_keys(txn, &rows).await?;
        let held: Vec<usize> = keyed
            .iter()
            .copied()
            .filter(|&i| key_of(submissions[i]).is_some_and(|key| !taken.contains(&key)))
            .collect();
        if held.is_empty() {
            return Ok(());
        }
        let keys: Vec<KeyId> = held
            .iter()
            .filter_map(|&i| key_of(submissions[i]))
            .collect();
        self.existing = batch::find_keys(txn, &keys)
            .await?
            .into_iter()
            .map(|row| ((row.owner.clone(), row.key.clone()), row))
            .collect();
        for index in held {
            self.outcomes[index] = self.held_key(txn, submissions[index]).await?;
        }
        Ok(())
    }

    /// The answer to a submit whose key was held before this batch (`None`: it makes a job).
    async fn held_key<C: ConnectionTrait>(
        &self,
        txn: &C,
        submission: &Submission,
    ) -> Result<Option<Result<Accepted>>> {
        let Some(row) = key_of(submission).and_then(|key| self.existing.get(&key)) else {
            // Deleted between our insert and our read: in flight; a retry wins.
            return Ok(Some(Err(JobsError::IdempotencyKeyInFlight)));
        };
        Ok(match resolve_existing(submission, row) {
            Ok(None) => {
                let ours = key_row(submission).ok_or_else(|| DbErr::Custom("no key".into()))?;
                if idempotency::replace(txn, row, ours).await? {
                    None
                } else {
                    Some(Err(JobsError::IdempotencyKeyInFlight))
                }
            }
            Ok(Some(replayed)) => Some(Ok(replayed)),
            Err(error) => Some(Err(error)),
        })
    }

    /// Counts the quotas of the submits still making a job, from their owners' counters (and
    /// the batch itself); returns the admitted ones.
    async fn admit<C: ConnectionTrait>(&mut self, txn: &C) -> Result<Vec<usize>> {
        let submissions = self.submissions;
        let creating: Vec<usize> = (0..submissions.len())
            .filter(|&i| self.outcomes[i].is_none())
            .collect();
        let day = creating
            .iter()
            .map(|&i| day_of(submissions[i].now))
            .max()
            .unwrap_or_default();
        let owners: Vec<String> = creating
            .iter()
            .map(|&i| submissions[i].row.owner.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut usage = Usage {
            counters: batch::lock_counters(txn, &owners)
                .await?
                .into_iter()
                .map(|(owner, row)| {
                    let today = if row.day == day { row.day_jobs } else { 0 };
                    (owner, (as_count(row.active), as_count(today)))
                })
                .collect(),
            added: HashMap::new(),
        };
        let mut released = Vec::new();
        let mut admitted = Vec::new();
        for index in creating {
            let submission = submissions[index];
            match usage.admit(submission) {
                Ok(()) => admitted.push(index),
                Err(error) => {
                    if let Some(key) = key_of(submission) {
                        released.push((key, submission.row.id.clone()));
                    }
                    self.outcomes[index] = Some(Err(error));
                }
            }
        }
        batch::release_keys(txn, &released).await?;
        batch::add_to_counters(txn, &usage.added, day).await?;
        Ok(admitted)
    }

    /// Inserts the admitted jobs and their first events.
    async fn insert<C: ConnectionTrait>(&mut self, txn: &C, admitted: &[usize]) -> Result<()> {
        let submissions = self.submissions;
        let rows = admitted
            .iter()
            .map(|&i| submissions[i].row.clone())
            .collect();
        let events = admitted
            .iter()
            .map(|&i| submissions[i].first_event.clone())
            .collect();
        batch::insert_jobs(txn, rows, events).await?;
        for &index in admitted {
            self.outcomes[index] = Some(Ok(Accepted::Created {
                job: Box::new(submissions[index].job.clone()),
                position: None,
            }));
        }
        Ok(())
    }

    /// Followers: the leader's new job is theirs too (same request) once this commits; a key
    /// held before answers them as it answered the leader.
    fn answer_followers(&mut self) {
        for (index, leader) in std::mem::take(&mut self.followers) {
            let submission = self.submissions[index];
            let leads = self.submissions[leader];
            let made = matches!(self.outcomes[leader], Some(Ok(Accepted::Created { .. })));
            let held_row = key_of(submission).and_then(|key| self.existing.get(&key));
            self.outcomes[index] = Some(if made {
                if leads.row.request_hash == submission.row.request_hash {
                    Ok(Accepted::Replayed {
                        job_id: leads.job.id.clone(),
                    })
                } else {
                    Err(JobsError::IdempotencyKeyReused)
                }
            } else if let Some(row) = held_row {
                match resolve_existing(submission, row) {
                    Ok(Some(replayed)) => Ok(replayed),
                    Ok(None) => Err(JobsError::IdempotencyKeyInFlight),
                    Err(error) => Err(error),
                }
            } else {
                Err(JobsError::IdempotencyKeyInFlight)
            });
        }
    }
}

/// The queue positions of a batch's messages (enqueued in order) from what the queue holds
/// per class after the enqueue: every waiting entry of a higher class, and every entry of the
/// same class but those of the batch enqueued after it, go first. Weighted reads let lower
/// classes through now and then, and other replicas enqueue too: the position is an estimate,
/// and watchers see it corrected as the queue moves.
fn positions(waiting: &[u64], messages: &[QueueMessage]) -> Vec<u64> {
    let class = |message: &QueueMessage| usize::from(message.priority).min(PRIORITY_CLASSES - 1);
    messages
        .iter()
        .enumerate()
        .map(|(index, message)| {
            let own = class(message);
            let higher: u64 = waiting.iter().skip(own + 1).sum();
            let later = messages[index + 1..]
                .iter()
                .filter(|other| class(other) == own)
                .count() as u64;
            let same = waiting.get(own).copied().unwrap_or_default();
            (higher + same.saturating_sub(later)).max(1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> Job {
        let row = JobRow {
            id: JobId::new().into_string(),
            owner: "usr".into(),
            status: 1,
            priority: 1,
            spec: "{}".into(),
            metadata: "{}".into(),
            attempts: 0,
            max_attempts: 3,
            backend: String::new(),
            progress: None,
            error: None,
            outputs: "[]".into(),
            excluded_backends: "[]".into(),
            idempotency_key: None,
            request_hash: String::new(),
            trace_context: "{}".into(),
            trace_id: String::new(),
            retention_days: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            start_deadline_ms: None,
            lease_owner: None,
            lease_expires_ms: None,
            seq: 1,
            queue_position: None,
            pending_reason: None,
            lost_runs: 0,
        };
        Job::try_from(row).unwrap()
    }

    fn message(id: &str, priority: u8) -> QueueMessage {
        QueueMessage {
            job_id: id.into(),
            priority,
            trace: HashMap::new(),
            enqueued_at_ms: 0,
        }
    }

    #[test]
    fn positions_count_higher_classes_and_earlier_entries_of_the_class() {
        // Waiting after the enqueue: 2 in class 3, 5 in class 1 (3 of them this batch).
        let waiting = [0, 5, 0, 2];
        let batch = [
            message("a", 1),
            message("b", 3),
            message("c", 1),
            message("d", 1),
        ];
        assert_eq!(positions(&waiting, &batch), [5, 2, 6, 7]);
    }

    #[test]
    fn quotas_count_the_batch_itself() {
        let mut usage = Usage {
            counters: HashMap::from([("usr".to_string(), (1, 0))]),
            added: HashMap::new(),
        };
        let submission = |id: &str| Submission {
            row: job().to_row().unwrap(),
            job: job(),
            first_event: event::Model {
                job_id: id.into(),
                seq: 1,
                kind: "status_change".into(),
                payload: "{}".into(),
                time_ms: 0,
            },
            limits: TierLimits {
                concurrent_jobs: 2,
                jobs_per_day: 10,
                ..TierLimits::default()
            },
            now: Utc::now(),
            message: message(id, 1),
        };
        assert!(usage.admit(&submission("job_a")).is_ok());
        assert_eq!(usage.added.get("usr"), Some(&1));
        assert!(matches!(
            usage.admit(&submission("job_b")),
            Err(JobsError::QuotaExhausted {
                limit: "concurrent_jobs",
                ..
            })
        ));
    }
}
