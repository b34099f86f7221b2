//! Artifact metadata in the database. Every query that serves a request takes the owner, so
//! no handler can forget tenant scoping; only the sweeper and signed links (whose signature
//! is the authorization) look rows up by id alone.

pub mod entity;
pub mod migration;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use easel_runtime::db::DatabaseConfig;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

use self::entity::{Column, Entity, Model};
use crate::error::{Result, StorageError};
use crate::model::{ArtifactId, ArtifactRecord, Owner};
use easel_runtime::error::{Internal, InternalContext};

/// Connects and brings the schema up to date (see [`easel_runtime::db::connect_and_migrate`]).
pub async fn connect(url: &str) -> Result<DatabaseConnection> {
    let connection = easel_runtime::db::connect_and_migrate::<migration::Migrator>(
        &DatabaseConfig::new(url),
        "storage",
    )
    .await?;
    Ok(connection)
}

fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

fn from_millis(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value).unwrap_or_default()
}

fn to_record(row: Model) -> Result<ArtifactRecord> {
    let id = ArtifactId::parse(&row.id)
        .ok_or_else(|| Internal::new(format!("malformed id in row {:?}", row.id)))?;
    let metadata: BTreeMap<String, String> = serde_json::from_str(&row.metadata)
        .internal(format!("decoding the metadata of {}", row.id))?;
    Ok(ArtifactRecord {
        id,
        owner: row.owner,
        job_id: (!row.job_id.is_empty()).then_some(row.job_id),
        object_key: row.object_key,
        content_type: row.content_type,
        size_bytes: u64::try_from(row.size_bytes).unwrap_or_default(),
        sha256: row.sha256,
        metadata,
        width: row.width.and_then(|w| u32::try_from(w).ok()),
        height: row.height.and_then(|h| u32::try_from(h).ok()),
        created_at: from_millis(row.created_at_ms),
        expires_at: from_millis(row.expires_at_ms),
    })
}

/// Inserts a new artifact's row.
pub async fn insert(db: &DatabaseConnection, record: &ArtifactRecord) -> Result<()> {
    let metadata = serde_json::to_string(&record.metadata).internal("encoding metadata")?;
    let row = Model {
        id: record.id.to_string(),
        owner: record.owner.clone(),
        job_id: record.job_id.clone().unwrap_or_default(),
        object_key: record.object_key.clone(),
        content_type: record.content_type.clone(),
        size_bytes: i64::try_from(record.size_bytes).unwrap_or(i64::MAX),
        sha256: record.sha256.clone(),
        metadata,
        width: record.width.and_then(|w| i32::try_from(w).ok()),
        height: record.height.and_then(|h| i32::try_from(h).ok()),
        created_at_ms: millis(record.created_at),
        expires_at_ms: millis(record.expires_at),
        claimed_by: None,
        claimed_until_ms: None,
    };
    row.into_active_model().insert(db).await?;
    Ok(())
}

/// The owner's live (unexpired) artifact.
pub async fn find_for_owner(
    db: &DatabaseConnection,
    owner: &Owner,
    id: &ArtifactId,
    now: DateTime<Utc>,
) -> Result<ArtifactRecord> {
    Entity::find_by_id(id.to_string())
        .filter(Column::Owner.eq(owner.as_str()))
        .filter(Column::ExpiresAtMs.gt(millis(now)))
        .one(db)
        .await?
        .ok_or(StorageError::NotFound)
        .and_then(to_record)
}

/// A live artifact by id alone, for a signed link (the signature is the authorization).
pub async fn find_live(
    db: &DatabaseConnection,
    id: &ArtifactId,
    now: DateTime<Utc>,
) -> Result<ArtifactRecord> {
    Entity::find_by_id(id.to_string())
        .filter(Column::ExpiresAtMs.gt(millis(now)))
        .one(db)
        .await?
        .ok_or(StorageError::NotFound)
        .and_then(to_record)
}

/// Up to `limit` of the owner's live artifacts after `after`, oldest first (ids are UUIDv7,
/// so id order is creation order and the keyset is the id alone).
pub async fn list_for_owner(
    db: &DatabaseConnection,
    owner: &Owner,
    job_id: Option<&str>,
    after: Option<&ArtifactId>,
    limit: u64,
    now: DateTime<Utc>,
) -> Result<Vec<ArtifactRecord>> {
    let mut query = Entity::find()
        .filter(Column::Owner.eq(owner.as_str()))
        .filter(Column::ExpiresAtMs.gt(millis(now)));
    if let Some(job_id) = job_id {
        query = query.filter(Column::JobId.eq(job_id));
    }
    if let Some(after) = after {
        query = query.filter(Column::Id.gt(after.as_str()));
    }
    query
        .order_by_asc(Column::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_record)
        .collect()
}

/// Marks the owner's live artifact expired now, so it disappears at once and the sweeper
/// finishes the job if the caller cannot. Returns the record, or NOT_FOUND.
pub async fn expire_for_owner(
    db: &DatabaseConnection,
    owner: &Owner,
    id: &ArtifactId,
    now: DateTime<Utc>,
) -> Result<ArtifactRecord> {
    let record = find_for_owner(db, owner, id, now).await?;
    let updated = Entity::update_many()
        .col_expr(Column::ExpiresAtMs, Expr::value(millis(now)))
        .filter(Column::Id.eq(id.as_str()))
        .filter(Column::Owner.eq(owner.as_str()))
        .filter(Column::ExpiresAtMs.gt(millis(now)))
        .exec(db)
        .await?;
    if updated.rows_affected == 0 {
        // A concurrent delete (or the clock) won the race.
        return Err(StorageError::NotFound);
    }
    Ok(record)
}

/// Deletes a row by id.
pub async fn delete(db: &DatabaseConnection, id: &ArtifactId) -> Result<()> {
    Entity::delete_by_id(id.to_string()).exec(db).await?;
    Ok(())
}

/// Claims up to `limit` expired rows no live claim holds, for `lease`, under `token`; returns
/// the claimed `(id, object key)`s. The claim is one conditional update per row, so two
/// sweepers never hold the same row (PostgreSQL re-checks the condition after a row lock;
/// SQLite serializes writers).
pub async fn claim_expired(
    db: &DatabaseConnection,
    token: &str,
    now: DateTime<Utc>,
    lease: Duration,
    limit: u64,
) -> Result<Vec<(ArtifactId, String)>> {
    let now_ms = millis(now);
    let unclaimed = Condition::any()
        .add(Column::ClaimedUntilMs.is_null())
        .add(Column::ClaimedUntilMs.lte(now_ms));
    let candidates: Vec<String> = Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::ExpiresAtMs.lte(now_ms))
        .filter(unclaimed.clone())
        .order_by_asc(Column::ExpiresAtMs)
        .limit(limit)
        .into_tuple()
        .all(db)
        .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let until = now_ms.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
    Entity::update_many()
        .col_expr(Column::ClaimedBy, Expr::value(token))
        .col_expr(Column::ClaimedUntilMs, Expr::value(until))
        .filter(Column::Id.is_in(candidates))
        .filter(Column::ExpiresAtMs.lte(now_ms))
        .filter(unclaimed)
        .exec(db)
        .await?;
    let claimed: Vec<(String, String)> = Entity::find()
        .select_only()
        .column(Column::Id)
        .column(Column::ObjectKey)
        .filter(Column::ClaimedBy.eq(token))
        .into_tuple()
        .all(db)
        .await?;
    Ok(claimed
        .into_iter()
        .filter_map(|(id, key)| ArtifactId::parse(&id).map(|id| (id, key)))
        .collect())
}

/// Deletes a claimed row, if the claim still holds it.
pub async fn delete_claimed(db: &DatabaseConnection, id: &ArtifactId, token: &str) -> Result<bool> {
    let deleted = Entity::delete_many()
        .filter(Column::Id.eq(id.as_str()))
        .filter(Column::ClaimedBy.eq(token))
        .exec(db)
        .await?;
    Ok(deleted.rows_affected > 0)
}

/// Live artifacts and their bytes in all, for the stored-bytes gauges.
pub async fn totals(db: &DatabaseConnection, now: DateTime<Utc>) -> Result<(u64, u64)> {
    let live = Entity::find().filter(Column::ExpiresAtMs.gt(millis(now)));
    let count = live.clone().count(db).await?;
    let bytes: Option<Option<i64>> = live
        .select_only()
        .column_as(
            Expr::expr(sea_orm::sea_query::Func::sum(Expr::col(Column::SizeBytes)))
                .cast_as(sea_orm::sea_query::Alias::new("bigint")),
            "total",
        )
        .into_tuple()
        .one(db)
        .await?;
    Ok((
        count,
        bytes
            .flatten()
            .and_then(|b| u64::try_from(b).ok())
            .unwrap_or(0),
    ))
}
