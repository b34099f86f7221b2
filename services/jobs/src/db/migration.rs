//! Schema migrations, the same on PostgreSQL and SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, boolean, integer, string, string_null, text, text_null,
};

/// The jobs service's migrations, tracked in their own table so services that share one
/// embedded SQLite file don't see each other's history.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateTables)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("jobs_migrations").into_iden()
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Jobs {
    Table,
    Id,
    Owner,
    Status,
    Priority,
    Spec,
    Metadata,
    Attempts,
    MaxAttempts,
    Backend,
    Progress,
    Error,
    Outputs,
    ExcludedBackends,
    IdempotencyKey,
    RequestHash,
    TraceContext,
    TraceId,
    RetentionDays,
    CreatedAtMs,
    UpdatedAtMs,
    StartedAtMs,
    FinishedAtMs,
    StartDeadlineMs,
    LeaseOwner,
    LeaseExpiresMs,
    Seq,
}

#[derive(DeriveIden)]
enum JobEvents {
    Table,
    JobId,
    Seq,
    Kind,
    Payload,
    TimeMs,
}

#[derive(DeriveIden)]
enum JobIdempotencyKeys {
    Table,
    Owner,
    Key,
    RequestHash,
    JobId,
    Completed,
    CreatedAtMs,
    ExpiresAtMs,
}

#[derive(DeriveMigrationName)]
struct CreateTables;

fn index(name: &str, table: impl IntoIden, columns: &[Jobs]) -> IndexCreateStatement {
    let mut statement = Index::create();
    statement.name(name).table(table).if_not_exists();
    for column in columns {
        statement.col(*column);
    }
    statement.to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Jobs::Table)
                    .if_not_exists()
                    .col(string(Jobs::Id).primary_key())
                    .col(string(Jobs::Owner))
                    .col(integer(Jobs::Status))
                    .col(integer(Jobs::Priority))
                    .col(text(Jobs::Spec))
                    .col(text(Jobs::Metadata))
                    .col(integer(Jobs::Attempts))
                    .col(integer(Jobs::MaxAttempts))
                    .col(string(Jobs::Backend))
                    .col(text_null(Jobs::Progress))
                    .col(text_null(Jobs::Error))
                    .col(text(Jobs::Outputs))
                    .col(text(Jobs::ExcludedBackends))
                    .col(string_null(Jobs::IdempotencyKey))
                    .col(string(Jobs::RequestHash))
                    .col(text(Jobs::TraceContext))
                    .col(string(Jobs::TraceId))
                    .col(integer(Jobs::RetentionDays))
                    .col(big_integer(Jobs::CreatedAtMs))
                    .col(big_integer(Jobs::UpdatedAtMs))
                    .col(big_integer_null(Jobs::StartedAtMs))
                    .col(big_integer_null(Jobs::FinishedAtMs))
                    .col(big_integer_null(Jobs::StartDeadlineMs))
                    .col(string_null(Jobs::LeaseOwner))
                    .col(big_integer_null(Jobs::LeaseExpiresMs))
                    .col(big_integer(Jobs::Seq))
                    .to_owned(),
            )
            .await?;
        // Listing (newest first) and the per-owner quotas.
        manager
            .create_index(index(
                "jobs_owner_id",
                Jobs::Table,
                &[Jobs::Owner, Jobs::Id],
            ))
            .await?;
        manager
            .create_index(index(
                "jobs_owner_status",
                Jobs::Table,
                &[Jobs::Owner, Jobs::Status],
            ))
            .await?;
        // Queue positions and the reconciler's scans.
        manager
            .create_index(index(
                "jobs_status_priority_created",
                Jobs::Table,
                &[Jobs::Status, Jobs::Priority, Jobs::CreatedAtMs],
            ))
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobEvents::Table)
                    .if_not_exists()
                    .col(string(JobEvents::JobId))
                    .col(big_integer(JobEvents::Seq))
                    .col(string(JobEvents::Kind))
                    .col(text(JobEvents::Payload))
                    .col(big_integer(JobEvents::TimeMs))
                    .primary_key(Index::create().col(JobEvents::JobId).col(JobEvents::Seq))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(JobIdempotencyKeys::Table)
                    .if_not_exists()
                    .col(string(JobIdempotencyKeys::Owner))
                    .col(string(JobIdempotencyKeys::Key))
                    .col(string(JobIdempotencyKeys::RequestHash))
                    .col(string(JobIdempotencyKeys::JobId))
                    .col(boolean(JobIdempotencyKeys::Completed))
                    .col(big_integer(JobIdempotencyKeys::CreatedAtMs))
                    .col(big_integer(JobIdempotencyKeys::ExpiresAtMs))
                    .primary_key(
                        Index::create()
                            .col(JobIdempotencyKeys::Owner)
                            .col(JobIdempotencyKeys::Key),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Jobs::Table.into_iden(),
            JobEvents::Table.into_iden(),
            JobIdempotencyKeys::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
