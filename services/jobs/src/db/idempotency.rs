//! Idempotency keys: one row per (owner, key). A submit takes its key in the transaction that
//! inserts the job (see [`super::batch`]), so a committed key always names an existing job; rows
//! still marked not completed come from an older version that took keys first, and count as in
//! flight until they are abandoned.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};

use super::entity::idempotency::{Column, Entity, Model};
use crate::error::Result;

pub use super::entity::idempotency::Model as KeyRow;

/// Replaces an expired or abandoned row with ours, if nobody replaced it first.
pub async fn replace<C: ConnectionTrait>(db: &C, old: &KeyRow, new: KeyRow) -> Result<bool> {
    let updated = Entity::update_many()
        .col_expr(Column::RequestHash, Expr::value(new.request_hash))
        .col_expr(Column::JobId, Expr::value(new.job_id))
        .col_expr(Column::Completed, Expr::value(new.completed))
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

/// Deletes keys that expired before `now_ms` (housekeeping).
pub async fn delete_expired(db: &DatabaseConnection, now_ms: i64) -> Result<u64> {
    Ok(Entity::delete_many()
        .filter(Column::ExpiresAtMs.lt(now_ms))
        .exec(db)
        .await?
        .rows_affected)
}

/// A fresh row; `completed` because it is written with its job.
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
        completed: true,
        created_at_ms: now_ms,
        expires_at_ms: now_ms + ttl_ms,
    }
}
