//! The statements of a group commit: many submits written by one transaction with multi-row
//! inserts, so the cost of a round trip and of a commit is shared by the whole batch. Every
//! function takes any connection, so the caller decides the transaction.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QuerySelect,
};

use super::entity::{counter, event, idempotency, job};
use super::{JobRow, idempotency::KeyRow};
use crate::error::Result;
use easel_runtime::error::InternalContext;

/// An owner's idempotency key.
pub type KeyId = (String, String);

fn key_condition<'a>(keys: impl IntoIterator<Item = &'a KeyId>) -> Condition {
    keys.into_iter()
        .fold(Condition::any(), |condition, (owner, key)| {
            condition.add(
                Condition::all()
                    .add(idempotency::Column::Owner.eq(owner.as_str()))
                    .add(idempotency::Column::Key.eq(key.as_str())),
            )
        })
}

/// Inserts the key rows that nobody holds yet, in one statement; returns the keys taken.
pub async fn take_keys<C: ConnectionTrait>(db: &C, rows: &[KeyRow]) -> Result<HashSet<KeyId>> {
    use idempotency::Column;
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let mut insert = Query::insert();
    insert.into_table(idempotency::Entity).columns([
        Column::Owner,
        Column::Key,
        Column::RequestHash,
        Column::JobId,
        Column::Completed,
        Column::CreatedAtMs,
        Column::ExpiresAtMs,
    ]);
    for row in rows {
        insert
            .values([
                row.owner.clone().into(),
                row.key.clone().into(),
                row.request_hash.clone().into(),
                row.job_id.clone().into(),
                row.completed.into(),
                row.created_at_ms.into(),
                row.expires_at_ms.into(),
            ])
            .internal("building the key insert")?;
    }
    insert
        .on_conflict(
            OnConflict::columns([Column::Owner, Column::Key])
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().columns([Column::Owner, Column::Key]));
    let taken = db.query_all(&insert).await?;
    taken
        .iter()
        .map(|row| Ok((row.try_get("", "owner")?, row.try_get("", "key")?)))
        .collect()
}

/// The rows of these keys.
pub async fn find_keys<C: ConnectionTrait>(db: &C, keys: &[KeyId]) -> Result<Vec<KeyRow>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    Ok(idempotency::Entity::find()
        .filter(key_condition(keys))
        .all(db)
        .await?)
}

/// Deletes the rows of these keys that still name these jobs (submits that did not make them).
pub async fn release_keys<C: ConnectionTrait>(db: &C, keys: &[(KeyId, String)]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let condition = keys
        .iter()
        .fold(Condition::any(), |condition, ((owner, key), job_id)| {
            condition.add(
                Condition::all()
                    .add(idempotency::Column::Owner.eq(owner.as_str()))
                    .add(idempotency::Column::Key.eq(key.as_str()))
                    .add(idempotency::Column::JobId.eq(job_id.as_str())),
            )
        });
    idempotency::Entity::delete_many()
        .filter(condition)
        .exec(db)
        .await?;
    Ok(())
}

/// The counters of these owners, locked until the transaction ends (PostgreSQL; SQLite has
/// one writer at a time anyway), so replicas admitting jobs of one owner take turns.
pub async fn lock_counters<C: ConnectionTrait>(
    db: &C,
    owners: &[String],
) -> Result<HashMap<String, counter::Model>> {
    if owners.is_empty() {
        return Ok(HashMap::new());
    }
    Ok(counter::Entity::find()
        .filter(counter::Column::Owner.is_in(owners.iter().map(String::as_str)))
        .lock_exclusive()
        .all(db)
        .await?
        .into_iter()
        .map(|row| (row.owner.clone(), row))
        .collect())
}

/// Adds `jobs` new jobs per owner, accepted on `day`, in one statement.
pub async fn add_to_counters<C: ConnectionTrait>(
    db: &C,
    added: &HashMap<String, i64>,
    day: i64,
) -> Result<()> {
    use counter::Column;
    if added.is_empty() {
        return Ok(());
    }
    let mut insert = Query::insert();
    insert.into_table(counter::Entity).columns([
        Column::Owner,
        Column::Active,
        Column::Day,
        Column::DayJobs,
    ]);
    for (owner, jobs) in added {
        insert
            .values([
                owner.clone().into(),
                (*jobs).into(),
                day.into(),
                (*jobs).into(),
            ])
            .internal("building the counter upsert")?;
    }
    let old = |column: Column| Expr::col((counter::Entity, column));
    let new = |column: Column| Expr::col((Alias::new("excluded"), column));
    insert.on_conflict(
        OnConflict::column(Column::Owner)
            .values([
                (Column::Active, old(Column::Active).add(new(Column::Active))),
                (
                    Column::DayJobs,
                    Expr::case(
                        old(Column::Day).eq(new(Column::Day)),
                        old(Column::DayJobs).add(new(Column::DayJobs)),
                    )
                    .finally(new(Column::DayJobs))
                    .into(),
                ),
                (Column::Day, new(Column::Day)),
            ])
            .to_owned(),
    );
    db.execute(&insert).await?;
    Ok(())
}

/// One of the owner's jobs reached a terminal status.
pub async fn job_ended<C: ConnectionTrait>(db: &C, owner: &str) -> Result<()> {
    counter::Entity::update_many()
        .col_expr(
            counter::Column::Active,
            Expr::col(counter::Column::Active).sub(1),
        )
        .filter(counter::Column::Owner.eq(owner))
        .filter(counter::Column::Active.gt(0))
        .exec(db)
        .await?;
    Ok(())
}

/// Inserts new jobs and their first events, each with one statement.
pub async fn insert_jobs<C: ConnectionTrait>(
    db: &C,
    rows: Vec<JobRow>,
    events: Vec<event::Model>,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    job::Entity::insert_many(rows.into_iter().map(IntoActiveModel::into_active_model))
        .exec_without_returning(db)
        .await?;
    event::Entity::insert_many(events.into_iter().map(IntoActiveModel::into_active_model))
        .exec_without_returning(db)
        .await?;
    Ok(())
}
