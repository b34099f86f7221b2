//! Users, API keys, usage and signing keys in the database. Queries that serve a caller take
//! the owner, so no handler can forget tenant scoping; only authentication (which finds the
//! owner) and the admin RPCs look rows up by id alone.

pub mod entity;
pub mod migration;

use easel_runtime::db::DatabaseConfig;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, DatabaseConnection, EntityTrait, IntoActiveModel,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
};

pub use self::entity::api_key::Model as KeyRow;
pub use self::entity::signing_key::Model as SigningKeyRow;
pub use self::entity::usage::Model as UsageRow;
pub use self::entity::user::Model as UserRow;
use self::entity::{api_key, signing_key, usage, user};
use crate::error::{AuthError, Result};
use crate::model::{KeyId, UserId};

/// Connects and brings the schema up to date (see [`easel_runtime::db::connect_and_migrate`]).
pub async fn connect(url: &str) -> Result<DatabaseConnection> {
    let connection = easel_runtime::db::connect_and_migrate::<migration::Migrator>(
        &DatabaseConfig::new(url),
        "auth",
    )
    .await?;
    Ok(connection)
}

/// A unique violation becomes `AlreadyExists(message)`; anything else stays a database error.
fn unique_as(error: sea_orm::DbErr, message: &'static str) -> AuthError {
    if let Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
        AuthError::AlreadyExists(message)
    } else {
        AuthError::Database(error)
    }
}

// ---- users ----

/// Inserts a user; a taken email is ALREADY_EXISTS.
pub async fn insert_user(db: &DatabaseConnection, row: UserRow) -> Result<UserRow> {
    row.into_active_model()
        .insert(db)
        .await
        .map_err(|error| unique_as(error, "a user with this email exists"))
}

/// A user by id.
pub async fn find_user(db: &DatabaseConnection, id: &UserId) -> Result<Option<UserRow>> {
    Ok(user::Entity::find_by_id(id.as_str()).one(db).await?)
}

/// A user by (lowercased) email.
pub async fn find_user_by_email(db: &DatabaseConnection, email: &str) -> Result<Option<UserRow>> {
    Ok(user::Entity::find()
        .filter(user::Column::Email.eq(email))
        .one(db)
        .await?)
}

/// Whether any user has the admin role.
pub async fn any_admin(db: &DatabaseConnection, admin_role: i32) -> Result<bool> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(admin_role))
        .count(db)
        .await?
        > 0)
}

/// Sets a user's tier; the updated user, or `None` if there is none.
pub async fn set_user_tier(
    db: &DatabaseConnection,
    id: &UserId,
    tier: i32,
    now_ms: i64,
) -> Result<Option<UserRow>> {
    user::Entity::update_many()
        .col_expr(user::Column::Tier, Expr::value(tier))
        .col_expr(user::Column::UpdatedAtMs, Expr::value(now_ms))
        .filter(user::Column::Id.eq(id.as_str()))
        .exec(db)
        .await?;
    find_user(db, id).await
}

/// Disables a user; the updated user, or `None` if there is none.
pub async fn disable_user(
    db: &DatabaseConnection,
    id: &UserId,
    now_ms: i64,
) -> Result<Option<UserRow>> {
    user::Entity::update_many()
        .col_expr(user::Column::Disabled, Expr::value(true))
        .col_expr(user::Column::UpdatedAtMs, Expr::value(now_ms))
        .filter(user::Column::Id.eq(id.as_str()))
        .filter(user::Column::Disabled.eq(false))
        .exec(db)
        .await?;
    find_user(db, id).await
}

// ---- API keys ----

/// Inserts a key; a taken prefix is ALREADY_EXISTS (the caller retries with another).
pub async fn insert_key(db: &DatabaseConnection, row: KeyRow) -> Result<KeyRow> {
    row.into_active_model()
        .insert(db)
        .await
        .map_err(|error| unique_as(error, "an API key with this prefix exists"))
}

/// A key by its public prefix (authentication).
pub async fn find_key_by_prefix(db: &DatabaseConnection, prefix: &str) -> Result<Option<KeyRow>> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::Prefix.eq(prefix))
        .one(db)
        .await?)
}

/// A key by id alone (checking the key a token was exchanged from).
pub async fn find_key(db: &DatabaseConnection, id: &str) -> Result<Option<KeyRow>> {
    Ok(api_key::Entity::find_by_id(id).one(db).await?)
}

/// The owner's key, or `None` (also when it is someone else's).
pub async fn find_key_for_owner(
    db: &DatabaseConnection,
    owner: &UserId,
    id: &KeyId,
) -> Result<Option<KeyRow>> {
    Ok(api_key::Entity::find_by_id(id.as_str())
        .filter(api_key::Column::Owner.eq(owner.as_str()))
        .one(db)
        .await?)
}

/// Up to `limit` of the owner's keys older than `before`, newest first (ids are UUIDv7, so id
/// order is creation order and the keyset is the id alone).
pub async fn list_keys_for_owner(
    db: &DatabaseConnection,
    owner: &UserId,
    before: Option<&KeyId>,
    limit: u64,
) -> Result<Vec<KeyRow>> {
    let mut query = api_key::Entity::find().filter(api_key::Column::Owner.eq(owner.as_str()));
    if let Some(before) = before {
        query = query.filter(api_key::Column::Id.lt(before.as_str()));
    }
    Ok(query
        .order_by_desc(api_key::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Revokes the owner's key (idempotent: a revoked key stays revoked at its first time).
/// `None` when the owner has no such key.
pub async fn revoke_key_for_owner(
    db: &DatabaseConnection,
    owner: &UserId,
    id: &KeyId,
    now_ms: i64,
) -> Result<Option<KeyRow>> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAtMs, Expr::value(now_ms))
        .filter(api_key::Column::Id.eq(id.as_str()))
        .filter(api_key::Column::Owner.eq(owner.as_str()))
        .filter(api_key::Column::RevokedAtMs.is_null())
        .exec(db)
        .await?;
    find_key_for_owner(db, owner, id).await
}

/// Records a use of the key, at most once per `interval_ms`: one conditional update, so
/// replicas don't write on every request.
pub async fn touch_key(
    db: &DatabaseConnection,
    id: &str,
    now_ms: i64,
    interval_ms: i64,
) -> Result<()> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::LastUsedAtMs, Expr::value(now_ms))
        .filter(api_key::Column::Id.eq(id))
        .filter(
            Condition::any()
                .add(api_key::Column::LastUsedAtMs.is_null())
                .add(api_key::Column::LastUsedAtMs.lte(now_ms.saturating_sub(interval_ms))),
        )
        .exec(db)
        .await?;
    Ok(())
}

// ---- usage ----

/// Adds to a user's usage of `day`, creating the row if needed, in one statement.
pub async fn add_usage(
    db: &DatabaseConnection,
    user_id: &UserId,
    day: &str,
    jobs_submitted: i64,
    gpu_seconds: f64,
    bytes_stored: i64,
) -> Result<()> {
    let row = usage::ActiveModel {
        user_id: sea_orm::Set(user_id.to_string()),
        day: sea_orm::Set(day.to_string()),
        jobs_submitted: sea_orm::Set(jobs_submitted),
        gpu_seconds: sea_orm::Set(gpu_seconds),
        bytes_stored: sea_orm::Set(bytes_stored),
    };
    let add = |column: usage::Column| {
        Expr::col((usage::Entity, column)).add(Expr::col((
            sea_orm::sea_query::Alias::new("excluded"),
            column,
        )))
    };
    usage::Entity::insert(row)
        .on_conflict(
            OnConflict::columns([usage::Column::UserId, usage::Column::Day])
                .value(
                    usage::Column::JobsSubmitted,
                    add(usage::Column::JobsSubmitted),
                )
                .value(usage::Column::GpuSeconds, add(usage::Column::GpuSeconds))
                .value(usage::Column::BytesStored, add(usage::Column::BytesStored))
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// The user's usage from `since_day` (inclusive, `YYYY-MM-DD`) on, newest first.
pub async fn usage_for_user(
    db: &DatabaseConnection,
    user_id: &UserId,
    since_day: &str,
) -> Result<Vec<UsageRow>> {
    Ok(usage::Entity::find()
        .filter(usage::Column::UserId.eq(user_id.as_str()))
        .filter(usage::Column::Day.gte(since_day))
        .order_by_desc(usage::Column::Day)
        .all(db)
        .await?)
}

// ---- signing keys ----

/// Every signing key, newest first.
pub async fn signing_keys(db: &DatabaseConnection) -> Result<Vec<SigningKeyRow>> {
    Ok(signing_key::Entity::find()
        .order_by_desc(signing_key::Column::CreatedAtMs)
        .order_by_desc(signing_key::Column::Kid)
        .all(db)
        .await?)
}

/// Stores a new signing key.
pub async fn insert_signing_key(db: &DatabaseConnection, row: SigningKeyRow) -> Result<()> {
    row.into_active_model().insert(db).await?;
    Ok(())
}

/// Retires every active key older than `newest` (by creation time, then kid: the order that
/// picks the signing key, so replicas rotating at once agree on the survivor); they verify
/// until `verify_until_ms`.
pub async fn retire_signing_keys(
    db: &DatabaseConnection,
    newest: &SigningKeyRow,
    now_ms: i64,
    verify_until_ms: i64,
) -> Result<u64> {
    let older = Condition::any()
        .add(signing_key::Column::CreatedAtMs.lt(newest.created_at_ms))
        .add(
            Condition::all()
                .add(signing_key::Column::CreatedAtMs.eq(newest.created_at_ms))
                .add(signing_key::Column::Kid.lt(newest.kid.as_str())),
        );
    let result = signing_key::Entity::update_many()
        .col_expr(signing_key::Column::RetiredAtMs, Expr::value(now_ms))
        .col_expr(
            signing_key::Column::VerifyUntilMs,
            Expr::value(verify_until_ms),
        )
        .filter(signing_key::Column::RetiredAtMs.is_null())
        .filter(older)
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}

/// Deletes retired keys that stopped verifying before `before_ms`.
pub async fn delete_dead_signing_keys(db: &DatabaseConnection, before_ms: i64) -> Result<u64> {
    let result = signing_key::Entity::delete_many()
        .filter(signing_key::Column::VerifyUntilMs.lt(before_ms))
        .exec(db)
        .await?;
    Ok(result.rows_affected)
}
