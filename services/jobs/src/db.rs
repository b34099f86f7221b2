//! Job records in the database. Every query that serves a request takes the owner, so no
//! handler can forget tenant scoping; only the worker and the reconciler (which act for the
//! platform, not a caller) look jobs up by id alone.
//!
//! State changes go through [`transition`]: one conditional update that also bumps the job's
//! event sequence and appends the event, in one transaction, so the event log has no gap and
//! no duplicate and a job is never moved twice from the same state. Which changes and guards
//! make up each move of a job is [`crate::lifecycle`]'s; rows become typed jobs in
//! [`crate::job`].

pub mod batch;
pub mod entity;
pub mod idempotency;
pub mod migration;

use easel_proto::jobs::v1::{JobEvent, JobStatus, QueuePosition, job_event};
use easel_runtime::db::DatabaseConfig;
use sea_orm::sea_query::{Expr, ExprTrait, SimpleExpr};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};

pub use self::entity::job::{Column as JobColumn, Model as JobRow};
use self::entity::{event, job};
use crate::error::{JobsError, Result};
use crate::model::{is_terminal, status_from_db, status_to_db, timestamp_ms};
use easel_runtime::error::InternalContext;

/// Connects and brings the schema up to date (see [`easel_runtime::db::connect_and_migrate`]).
pub async fn connect(url: &str) -> Result<DatabaseConnection> {
    let mut config = DatabaseConfig::new(url);
    config.max_connections = 32;
    let connection =
        easel_runtime::db::connect_and_migrate::<migration::Migrator>(&config, "jobs").await?;
    Ok(connection)
}

fn event_kind_name(kind: &job_event::Kind) -> &'static str {
    match kind {
        job_event::Kind::Snapshot(_) => "snapshot",
        job_event::Kind::StatusChange(_) => "status_change",
        job_event::Kind::Progress(_) => "progress",
        job_event::Kind::QueuePosition(_) => "queue_position",
        job_event::Kind::Output(_) => "output",
    }
}

/// An event as its table row.
pub fn event_row(event: &JobEvent, time_ms: i64) -> Result<event::Model> {
    let kind = event
        .kind
        .as_ref()
        .map(event_kind_name)
        .unwrap_or("unknown");
    Ok(event::Model {
        job_id: event.job_id.clone(),
        seq: i64::try_from(event.seq).unwrap_or(i64::MAX),
        kind: kind.to_string(),
        payload: serde_json::to_string(event).internal("encoding an event")?,
        time_ms,
    })
}

/// The owner's job; another owner's (or no) job is NOT_FOUND.
pub async fn find_for_owner(db: &DatabaseConnection, owner: &str, id: &str) -> Result<JobRow> {
    job::Entity::find_by_id(id.to_string())
        .filter(job::Column::Owner.eq(owner))
        .one(db)
        .await?
        .ok_or(JobsError::NotFound)
}

/// A job by id alone, for the worker and the reconciler.
pub async fn find(db: &DatabaseConnection, id: &str) -> Result<Option<JobRow>> {
    Ok(job::Entity::find_by_id(id.to_string()).one(db).await?)
}

/// Up to `limit` of the owner's jobs older than `before` (ids sort by creation), newest first.
pub async fn list_for_owner(
    db: &DatabaseConnection,
    owner: &str,
    statuses: &[JobStatus],
    before: Option<&str>,
    limit: u64,
) -> Result<Vec<JobRow>> {
    let mut query = job::Entity::find().filter(job::Column::Owner.eq(owner));
    if !statuses.is_empty() {
        query = query.filter(job::Column::Status.is_in(statuses.iter().map(|s| status_to_db(*s))));
    }
    if let Some(before) = before {
        query = query.filter(job::Column::Id.lt(before));
    }
    Ok(query
        .order_by_desc(job::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// A PENDING job's place in the queue (1 = next): PENDING jobs of a higher priority, or of the
/// same priority and accepted earlier, go first.
pub async fn queue_position(db: &DatabaseConnection, priority: u8, id: &str) -> Result<u64> {
    let priority = i32::from(priority);
    let ahead = job::Entity::find()
        .filter(job::Column::Status.eq(status_to_db(JobStatus::Pending)))
        .filter(
            Condition::any()
                .add(job::Column::Priority.gt(priority))
                .add(
                    Condition::all()
                        .add(job::Column::Priority.eq(priority))
                        .add(job::Column::Id.lt(id)),
                ),
        )
        .count(db)
        .await?;
    Ok(ahead + 1)
}

/// The queue positions (1 = next) of those of `ids` that are PENDING, in one pass over the
/// PENDING jobs ranked as [`queue_position`] counts them.
pub async fn queue_positions(
    db: &DatabaseConnection,
    ids: &[String],
) -> Result<std::collections::HashMap<String, u64>> {
    if ids.is_empty() {
        return Ok(std::collections::HashMap::new());
    }
    let backend = db.get_database_backend();
    let placeholder = |index: usize| match backend {
        sea_orm::DbBackend::Postgres => format!("${index}"),
        _ => "?".to_string(),
    };
    let list: Vec<String> = (2..ids.len() + 2).map(placeholder).collect();
    let sql = format!(
        "SELECT id, position FROM (SELECT id, ROW_NUMBER() OVER (ORDER BY priority DESC, id) \
         AS position FROM jobs WHERE status = {}) ranked WHERE id IN ({})",
        placeholder(1),
        list.join(", ")
    );
    let mut values: Vec<sea_orm::Value> = vec![status_to_db(JobStatus::Pending).into()];
    values.extend(ids.iter().map(|id| id.clone().into()));
    let rows = db
        .query_all_raw(sea_orm::Statement::from_sql_and_values(
            backend, sql, values,
        ))
        .await?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("", "id")?;
            let position: i64 = row.try_get("", "position")?;
            Ok((id, u64::try_from(position).unwrap_or_default()))
        })
        .collect()
}

/// Records new queue positions of PENDING jobs as events, in one transaction: each job whose
/// recorded position differs (another replica may have recorded it already) gets its next
/// sequence number and a `queue_position` event. Returns the stored events.
pub async fn record_positions(
    db: &DatabaseConnection,
    positions: &[(String, QueuePosition)],
    now_ms: i64,
) -> Result<Vec<JobEvent>> {
    use sea_orm::sea_query::{CaseStatement, Query};
    if positions.is_empty() {
        return Ok(Vec::new());
    }
    let new_position = || {
        positions
            .iter()
            .fold(CaseStatement::new(), |case, (id, position)| {
                case.case(
                    Expr::col(job::Column::Id).eq(id.as_str()),
                    i32::try_from(position.position).unwrap_or(i32::MAX),
                )
            })
            .finally(Expr::col(job::Column::QueuePosition))
    };
    let mut update = Query::update();
    update
        .table(job::Entity)
        .value(job::Column::Seq, Expr::col(job::Column::Seq).add(1))
        .value(job::Column::QueuePosition, new_position())
        .and_where(job::Column::Id.is_in(positions.iter().map(|(id, _)| id.as_str())))
        .and_where(job::Column::Status.eq(status_to_db(JobStatus::Pending)))
        .cond_where(
            Condition::any()
                .add(job::Column::QueuePosition.is_null())
                .add(Expr::col(job::Column::QueuePosition).ne(new_position())),
        )
        .returning(Query::returning().columns([job::Column::Id, job::Column::Seq]));
    let txn = db.begin().await?;
    let updated = txn.query_all(&update).await?;
    let by_id: std::collections::HashMap<&str, &QueuePosition> = positions
        .iter()
        .map(|(id, position)| (id.as_str(), position))
        .collect();
    let mut stored = Vec::with_capacity(updated.len());
    for row in updated {
        let id: String = row.try_get("", "id")?;
        let seq: i64 = row.try_get("", "seq")?;
        if let Some(position) = by_id.get(id.as_str()) {
            stored.push(JobEvent {
                job_id: id,
                seq: u64::try_from(seq).unwrap_or_default(),
                time: Some(timestamp_ms(now_ms)),
                kind: Some(job_event::Kind::QueuePosition(**position)),
            });
        }
    }
    if !stored.is_empty() {
        let rows = stored
            .iter()
            .map(|event| event_row(event, now_ms).map(IntoActiveModel::into_active_model))
            .collect::<Result<Vec<_>>>()?;
        event::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    txn.commit().await?;
    Ok(stored)
}

/// Run times (ms) of the latest `limit` SUCCEEDED jobs, for ETAs.
pub async fn recent_run_times(db: &DatabaseConnection, limit: u64) -> Result<Vec<i64>> {
    let rows: Vec<(Option<i64>, Option<i64>)> = job::Entity::find()
        .select_only()
        .column(job::Column::StartedAtMs)
        .column(job::Column::FinishedAtMs)
        .filter(job::Column::Status.eq(status_to_db(JobStatus::Succeeded)))
        .order_by_desc(job::Column::FinishedAtMs)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(start, end)| Some(end? - start?))
        .filter(|ms| *ms >= 0)
        .collect())
}

/// The job's events after `after_seq`, in order, at most `limit`.
pub async fn events_after(
    db: &DatabaseConnection,
    job_id: &str,
    after_seq: u64,
    limit: u64,
) -> Result<Vec<JobEvent>> {
    let rows = event::Entity::find()
        .filter(event::Column::JobId.eq(job_id))
        .filter(event::Column::Seq.gt(i64::try_from(after_seq).unwrap_or(i64::MAX)))
        .order_by_asc(event::Column::Seq)
        .limit(limit)
        .all(db)
        .await?;
    rows.into_iter()
        .map(|row| {
            let mut event = serde_json::from_str::<JobEvent>(&row.payload)
                .internal(format!("decoding event {} of {}", row.seq, row.job_id))?;
            // The column is the number's record.
            event.seq = u64::try_from(row.seq).unwrap_or_default();
            Ok(event)
        })
        .collect()
}

/// Which states a [`transition`] may start from.
#[derive(Clone, Debug, Default)]
pub struct Guard {
    /// The job must be in one of these statuses…
    pub statuses: Vec<JobStatus>,
    /// …or RUNNING with a lease that lapsed before this time (ms). When set, a job in one of
    /// `statuses` must hold no lease that is live at this time either (a PENDING job a worker
    /// holds while it waits for a backend is that worker's).
    pub or_lease_lapsed_before: Option<i64>,
    /// The job's lease must be held by this worker.
    pub lease_owner: Option<String>,
    /// The job must be at this attempt.
    pub attempt: Option<i32>,
}

impl Guard {
    /// From any of `statuses`.
    pub fn from(statuses: &[JobStatus]) -> Guard {
        Guard {
            statuses: statuses.to_vec(),
            ..Guard::default()
        }
    }

    /// RUNNING under this worker's lease, at this attempt.
    pub fn held(worker: &str, attempt: i32) -> Guard {
        Guard {
            statuses: vec![JobStatus::Running],
            lease_owner: Some(worker.to_string()),
            attempt: Some(attempt),
            ..Guard::default()
        }
    }

    /// PENDING under this worker's lease: the job waits for a backend on that worker.
    pub fn waiting(worker: &str) -> Guard {
        Guard {
            statuses: vec![JobStatus::Pending],
            lease_owner: Some(worker.to_string()),
            ..Guard::default()
        }
    }

    /// PENDING or RUNNING under this worker's lease (the heartbeat's guard).
    pub fn leased(worker: &str) -> Guard {
        Guard {
            statuses: vec![JobStatus::Pending, JobStatus::Running],
            lease_owner: Some(worker.to_string()),
            ..Guard::default()
        }
    }

    /// Whether a job this guard admits is live (PENDING or RUNNING), so that a terminal
    /// status written under it ends a live job.
    fn may_end_a_live_job(&self) -> bool {
        !self.statuses.iter().any(|status| is_terminal(*status))
    }

    fn condition(&self) -> Condition {
        let mut in_statuses = Condition::all().add(
            job::Column::Status.is_in(self.statuses.iter().map(|status| status_to_db(*status))),
        );
        if let Some(before) = self.or_lease_lapsed_before {
            in_statuses = in_statuses.add(
                Condition::any()
                    .add(job::Column::LeaseExpiresMs.is_null())
                    .add(job::Column::LeaseExpiresMs.lt(before)),
            );
        }
        let mut states = Condition::any().add(in_statuses);
        if let Some(before) = self.or_lease_lapsed_before {
            states = states.add(
                Condition::all()
                    .add(job::Column::Status.eq(status_to_db(JobStatus::Running)))
                    .add(job::Column::LeaseExpiresMs.lt(before)),
            );
        }
        let mut condition = Condition::all().add(states);
        if let Some(owner) = &self.lease_owner {
            condition = condition.add(job::Column::LeaseOwner.eq(owner.as_str()));
        }
        if let Some(attempt) = self.attempt {
            condition = condition.add(job::Column::Attempts.eq(attempt));
        }
        condition
    }
}

/// Applies `changes` to the job if `guard` holds; with an `event`, also bumps the job's
/// sequence and appends the event under the new number, in the same transaction. Returns the
/// updated row and the stored event, or `None` when the guard did not hold.
pub async fn transition(
    db: &DatabaseConnection,
    job_id: &str,
    guard: &Guard,
    changes: Vec<(job::Column, SimpleExpr)>,
    event: Option<job_event::Kind>,
    now_ms: i64,
) -> Result<Option<(JobRow, Option<JobEvent>)>> {
    let events = event.into_iter().collect();
    Ok(
        transition_with_events(db, job_id, guard, changes, events, now_ms)
            .await?
            .map(|(row, events)| (row, events.into_iter().next())),
    )
}

/// The updated row of a guarded update, with `RETURNING` where the backend has it.
async fn update_returning<C: ConnectionTrait>(
    db: &C,
    job_id: &str,
    update: sea_orm::UpdateMany<job::Entity>,
) -> Result<Option<JobRow>> {
    if db.support_returning() {
        return Ok(update.exec_with_returning(db).await?.into_iter().next());
    }
    if update.exec(db).await?.rows_affected == 0 {
        return Ok(None);
    }
    Ok(job::Entity::find_by_id(job_id.to_string()).one(db).await?)
}

/// [`transition`] with any number of events, numbered in order under consecutive sequence
/// numbers and stored in the same transaction (one commit for a job's outputs and its final
/// status). An update without events or a status change is a single statement. A move from a
/// live status to a terminal one also releases the owner's concurrent-job count.
pub async fn transition_with_events(
    db: &DatabaseConnection,
    job_id: &str,
    guard: &Guard,
    changes: Vec<(job::Column, SimpleExpr)>,
    events: Vec<job_event::Kind>,
    now_ms: i64,
) -> Result<Option<(JobRow, Vec<JobEvent>)>> {
    let mut update = job::Entity::update_many()
        .col_expr(job::Column::UpdatedAtMs, Expr::value(now_ms))
        .filter(job::Column::Id.eq(job_id))
        .filter(guard.condition());
    if !events.is_empty() {
        let count = i64::try_from(events.len()).unwrap_or(i64::MAX);
        update = update.col_expr(job::Column::Seq, Expr::col(job::Column::Seq).add(count));
    }
    let sets_status = changes
        .iter()
        .any(|(column, _)| matches!(column, job::Column::Status));
    for (column, value) in changes {
        update = update.col_expr(column, value);
    }
    if events.is_empty() && !sets_status {
        return Ok(update_returning(db, job_id, update)
            .await?
            .map(|row| (row, Vec::new())));
    }
    let releases_owner = guard.may_end_a_live_job();
    let txn = db.begin().await?;
    let Some(row) = update_returning(&txn, job_id, update).await? else {
        txn.rollback().await?;
        return Ok(None);
    };
    let first_seq = u64::try_from(row.seq).unwrap_or_default() + 1 - events.len() as u64;
    let stored: Vec<JobEvent> = events
        .into_iter()
        .enumerate()
        .map(|(index, kind)| JobEvent {
            job_id: job_id.to_string(),
            seq: first_seq + index as u64,
            time: Some(timestamp_ms(now_ms)),
            kind: Some(kind),
        })
        .collect();
    if !stored.is_empty() {
        let rows = stored
            .iter()
            .map(|event| event_row(event, now_ms).map(IntoActiveModel::into_active_model))
            .collect::<Result<Vec<_>>>()?;
        event::Entity::insert_many(rows)
            .exec_without_returning(&txn)
            .await?;
    }
    if releases_owner && is_terminal(status_from_db(row.status)) {
        batch::job_ended(&txn, &row.owner).await?;
    }
    txn.commit().await?;
    Ok(Some((row, stored)))
}

/// PENDING jobs last changed before `before_ms` (reconciler: lost queue entries).
pub async fn pending_changed_before(
    db: &DatabaseConnection,
    before_ms: i64,
    limit: u64,
) -> Result<Vec<JobRow>> {
    Ok(job::Entity::find()
        .filter(job::Column::Status.eq(status_to_db(JobStatus::Pending)))
        .filter(job::Column::UpdatedAtMs.lt(before_ms))
        .order_by_asc(job::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// RUNNING jobs whose lease lapsed before `before_ms` (reconciler: dead workers).
pub async fn running_lease_lapsed(
    db: &DatabaseConnection,
    before_ms: i64,
    limit: u64,
) -> Result<Vec<JobRow>> {
    Ok(job::Entity::find()
        .filter(job::Column::Status.eq(status_to_db(JobStatus::Running)))
        .filter(job::Column::LeaseExpiresMs.lt(before_ms))
        .order_by_asc(job::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// PENDING jobs whose start deadline passed (reconciler: expire them without a worker).
pub async fn pending_past_deadline(
    db: &DatabaseConnection,
    now_ms: i64,
    limit: u64,
) -> Result<Vec<JobRow>> {
    Ok(job::Entity::find()
        .filter(job::Column::Status.eq(status_to_db(JobStatus::Pending)))
        .filter(job::Column::StartDeadlineMs.lt(now_ms))
        .limit(limit)
        .all(db)
        .await?)
}

/// PENDING jobs per priority class, for the queue-depth gauge.
pub async fn pending_by_priority(db: &DatabaseConnection) -> Result<Vec<(i32, i64)>> {
    Ok(job::Entity::find()
        .select_only()
        .column(job::Column::Priority)
        .column_as(job::Column::Id.count(), "count")
        .filter(job::Column::Status.eq(status_to_db(JobStatus::Pending)))
        .group_by(job::Column::Priority)
        .into_tuple()
        .all(db)
        .await?)
}
