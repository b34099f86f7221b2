//! The `storage_artifacts` table.

use sea_orm::entity::prelude::*;

/// One artifact's row. Times are Unix milliseconds, compared the same way on PostgreSQL and
/// SQLite.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "storage_artifacts")]
pub struct Model {
    /// `art_…`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The owning user's id.
    pub owner: String,
    /// The producing job's id; empty for uploads.
    pub job_id: String,
    /// The object's key in the store.
    pub object_key: String,
    /// The sniffed MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: i64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Caller metadata as a JSON object of strings.
    pub metadata: String,
    /// Pixel width, when known.
    pub width: Option<i32>,
    /// Pixel height, when known.
    pub height: Option<i32>,
    /// When it was stored.
    pub created_at_ms: i64,
    /// When it expires; the sweeper deletes it after.
    pub expires_at_ms: i64,
    /// The sweeper claim holding this row, if any.
    pub claimed_by: Option<String>,
    /// When that claim lapses.
    pub claimed_until_ms: Option<i64>,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
