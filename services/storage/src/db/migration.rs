//! Schema migrations, the same on PostgreSQL and SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, integer_null, string, string_null, text,
};

/// The storage service's migrations, tracked in their own table so services that share one
/// embedded SQLite file don't see each other's history.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateArtifacts)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("storage_migrations").into_iden()
    }
}

#[derive(DeriveIden)]
enum StorageArtifacts {
    Table,
    Id,
    Owner,
    JobId,
    ObjectKey,
    ContentType,
    SizeBytes,
    Sha256,
    Metadata,
    Width,
    Height,
    CreatedAtMs,
    ExpiresAtMs,
    ClaimedBy,
    ClaimedUntilMs,
}

#[derive(DeriveMigrationName)]
struct CreateArtifacts;

#[async_trait::async_trait]
impl MigrationTrait for CreateArtifacts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(StorageArtifacts::Table)
                    .if_not_exists()
                    .col(string(StorageArtifacts::Id).primary_key())
                    .col(string(StorageArtifacts::Owner))
                    .col(string(StorageArtifacts::JobId))
                    .col(string(StorageArtifacts::ObjectKey))
                    .col(string(StorageArtifacts::ContentType))
                    .col(big_integer(StorageArtifacts::SizeBytes))
                    .col(string(StorageArtifacts::Sha256))
                    .col(text(StorageArtifacts::Metadata))
                    .col(integer_null(StorageArtifacts::Width))
                    .col(integer_null(StorageArtifacts::Height))
                    .col(big_integer(StorageArtifacts::CreatedAtMs))
                    .col(big_integer(StorageArtifacts::ExpiresAtMs))
                    .col(string_null(StorageArtifacts::ClaimedBy))
                    .col(big_integer_null(StorageArtifacts::ClaimedUntilMs))
                    .to_owned(),
            )
            .await?;
        // Listing: an owner's artifacts (optionally of one job) in id (= creation) order.
        manager
            .create_index(
                Index::create()
                    .name("storage_artifacts_owner_id")
                    .table(StorageArtifacts::Table)
                    .col(StorageArtifacts::Owner)
                    .col(StorageArtifacts::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("storage_artifacts_owner_job_id")
                    .table(StorageArtifacts::Table)
                    .col(StorageArtifacts::Owner)
                    .col(StorageArtifacts::JobId)
                    .col(StorageArtifacts::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // The sweeper's scan.
        manager
            .create_index(
                Index::create()
                    .name("storage_artifacts_expires")
                    .table(StorageArtifacts::Table)
                    .col(StorageArtifacts::ExpiresAtMs)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StorageArtifacts::Table).to_owned())
            .await
    }
}
