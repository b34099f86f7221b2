//! Schema migrations, the same on PostgreSQL and SQLite.

use easel_proto::jobs::v1::JobStatus;
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, boolean, integer, integer_null, string, string_null, text,
    text_null,
};

/// The jobs service's migrations, tracked in their own table so services that share one
/// embedded SQLite file don't see each other's history.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateTables),
            Box::new(OwnerCounters),
            Box::new(BackendWaits),
        ]
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
    QueuePosition,
    PendingReason,
    LostRuns,
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

#[derive(DeriveIden)]
enum JobOwnerCounters {
    Table,
    Owner,
    Active,
    Day,
    DayJobs,
}

/// Per-owner quota counters (seeded from the jobs already there), the index the queue
/// positions of watched jobs are ranked with, and the position last recorded per job.
struct OwnerCounters;

// Named by hand: the derive names a migration after its file, which this one shares. Applied
// migrations are checked in name order against this list's order, so the name sorts after the
// first one's (`migration`).
impl MigrationName for OwnerCounters {
    fn name(&self) -> &str {
        "migration_0002_owner_counters"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for OwnerCounters {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(JobOwnerCounters::Table)
                    .if_not_exists()
                    .col(string(JobOwnerCounters::Owner).primary_key())
                    .col(big_integer(JobOwnerCounters::Active))
                    .col(big_integer(JobOwnerCounters::Day))
                    .col(big_integer(JobOwnerCounters::DayJobs))
                    .to_owned(),
            )
            .await?;
        let now = chrono::Utc::now().timestamp_millis();
        let day = now.div_euclid(crate::submit::DAY_MS);
        let midnight = day * crate::submit::DAY_MS;
        let (pending, running) = (JobStatus::Pending as i32, JobStatus::Running as i32);
        manager
            .get_connection()
            .execute_unprepared(&format!(
                "INSERT INTO job_owner_counters (owner, active, day, day_jobs) \
                 SELECT owner, \
                 SUM(CASE WHEN status IN ({pending}, {running}) THEN 1 ELSE 0 END), \
                 {day}, \
                 SUM(CASE WHEN created_at_ms >= {midnight} THEN 1 ELSE 0 END) \
                 FROM jobs GROUP BY owner"
            ))
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(integer_null(Jobs::QueuePosition))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "jobs_status_priority_id",
                Jobs::Table,
                &[Jobs::Status, Jobs::Priority, Jobs::Id],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("jobs_status_priority_id")
                    .table(Jobs::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .drop_column(Jobs::QueuePosition)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(JobOwnerCounters::Table).to_owned())
            .await
    }
}

/// Why a PENDING job waits (`waiting_for_backend`), and the runs a job lost with their backend
/// (which spend no attempt, up to `max_attempts` of them).
struct BackendWaits;

impl MigrationName for BackendWaits {
    fn name(&self) -> &str {
        "migration_0003_backend_waits"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for BackendWaits {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(string_null(Jobs::PendingReason))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Jobs::Table)
                    .add_column(integer(Jobs::LostRuns).default(0))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Jobs::PendingReason, Jobs::LostRuns] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Jobs::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
