//! Idempotency keys: one row per (owner, key), taken before the job is made and completed
//! after, so a concurrent duplicate sees "in flight" and a later one the job.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, IntoActiveModel, QueryFilter,
    SqlErr,
};

use super::entity::idempotency::{Column, Entity, Model};
use crate::error::Result;

pub use super::entity::idempotency::Model as KeyRow;

/// What taking a key found.
#[derive(Debug)]
pub enum Taken {
    /// The key is ours: make the job.
    Fresh,
    /// Someone has it already.
    Existing(KeyRow),
}

/// Takes the key by inserting its row; an existing row is returned instead.
pub async fn take(db: &DatabaseConnection, row: KeyRow) -> Result<Taken> {
    let owner = row.owner.clone();
    let key = row.key.clone();
    match row.into_active_model().insert(db).await {
        Ok(_) => Ok(Taken::Fresh),
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            match Entity::find_by_id((owner, key)).one(db).await? {
                Some(existing) => Ok(Taken::Existing(existing)),
                // Deleted between our insert and our read: report in flight; a retry wins.
                None => Err(crate::error::JobsError::IdempotencyKeyInFlight),
            }
        }
        Err(error) => Err(error.into()),
    }
}

/// Replaces an expired or abandoned row with ours, if nobody replaced it first.
pub async fn replace(db: &DatabaseConnection, old: &KeyRow, new: KeyRow) -> Result<bool> {
    let updated = Entity::update_many()
        .col_expr(Column::RequestHash, Expr::value(new.request_hash))
        .col_expr(Column::JobId, Expr::value(new.job_id))
        .col_expr(Column::Completed, Expr::value(false))
        .col_expr(Column::CreatedAtMs, Expr::value(new.created_at_ms))
        .col_expr(Column::ExpiresAtMs, Expr::value(new.expires_at_ms))
        .filter(Column::Owner.eq(old.owner.as_str()))
        .filter(Column::Key.eq(old.key.as_str()))
        .filter(Column::JobId.eq(old.job_id.as_str()))
        .filter(Column::CreatedAtMs.eq(old.created_at_ms))
        .exec(db)
        .await?;
    Ok(updated.rows_affected == 1)
}

/// Marks the key's job as made.
pub async fn complete(db: &DatabaseConnection, owner: &str, key: &str, job_id: &str) -> Result<()> {
    Entity::update_many()
        .col_expr(Column::Completed, Expr::value(true))
        .filter(Column::Owner.eq(owner))
        .filter(Column::Key.eq(key))
        .filter(Column::JobId.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Gives the key back after the job could not be made.
pub async fn release(db: &DatabaseConnection, owner: &str, key: &str, job_id: &str) -> Result<()> {
    Entity::delete_many()
        .filter(Column::Owner.eq(owner))
        .filter(Column::Key.eq(key))
        .filter(Column::JobId.eq(job_id))
        .exec(db)
        .await?;
    Ok(())
}

/// Deletes keys that expired before `now_ms` (housekeeping).
pub async fn delete_expired(db: &DatabaseConnection, now_ms: i64) -> Result<u64> {
    Ok(Entity::delete_many()
        .filter(Column::ExpiresAtMs.lt(now_ms))
        .exec(db)
        .await?
        .rows_affected)
}

/// A fresh row.
pub fn new_row(
    owner: &str,
    key: &str,
    request_hash: &str,
    job_id: &str,
    now_ms: i64,
    ttl_ms: i64,
) -> Model {
    Model {
        owner: owner.to_string(),
        key: key.to_string(),
        request_hash: request_hash.to_string(),
        job_id: job_id.to_string(),
        completed: false,
        created_at_ms: now_ms,
        expires_at_ms: now_ms + ttl_ms,
    }
}
