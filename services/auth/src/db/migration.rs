//! Schema migrations, the same on PostgreSQL and SQLite.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, boolean, double, integer, string, text,
};

/// The auth service's migrations, tracked in their own table so services that share one
/// embedded SQLite file don't see each other's history.
#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateAuthTables)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("auth_migrations").into_iden()
    }
}

#[derive(DeriveIden)]
enum AuthUsers {
    Table,
    Id,
    Email,
    PasswordHash,
    Tier,
    Role,
    Disabled,
    CreatedAtMs,
    UpdatedAtMs,
}

#[derive(DeriveIden)]
enum AuthApiKeys {
    Table,
    Id,
    Owner,
    Name,
    Prefix,
    SecretHash,
    Scopes,
    CreatedAtMs,
    LastUsedAtMs,
    ExpiresAtMs,
    RevokedAtMs,
}

#[derive(DeriveIden)]
enum AuthUsage {
    Table,
    UserId,
    Day,
    JobsSubmitted,
    GpuSeconds,
    BytesStored,
}

#[derive(DeriveIden)]
enum AuthSigningKeys {
    Table,
    Kid,
    PrivateKey,
    PublicKey,
    CreatedAtMs,
    RetiredAtMs,
    VerifyUntilMs,
}

#[derive(DeriveMigrationName)]
struct CreateAuthTables;

#[async_trait::async_trait]
impl MigrationTrait for CreateAuthTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuthUsers::Table)
                    .if_not_exists()
                    .col(string(AuthUsers::Id).primary_key())
                    .col(string(AuthUsers::Email))
                    .col(text(AuthUsers::PasswordHash).null())
                    .col(integer(AuthUsers::Tier))
                    .col(integer(AuthUsers::Role))
                    .col(boolean(AuthUsers::Disabled))
                    .col(big_integer(AuthUsers::CreatedAtMs))
                    .col(big_integer(AuthUsers::UpdatedAtMs))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("auth_users_email")
                    .table(AuthUsers::Table)
                    .col(AuthUsers::Email)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuthApiKeys::Table)
                    .if_not_exists()
                    .col(string(AuthApiKeys::Id).primary_key())
                    .col(string(AuthApiKeys::Owner))
                    .col(string(AuthApiKeys::Name))
                    .col(string(AuthApiKeys::Prefix))
                    .col(string(AuthApiKeys::SecretHash))
                    .col(text(AuthApiKeys::Scopes))
                    .col(big_integer(AuthApiKeys::CreatedAtMs))
                    .col(big_integer_null(AuthApiKeys::LastUsedAtMs))
                    .col(big_integer_null(AuthApiKeys::ExpiresAtMs))
                    .col(big_integer_null(AuthApiKeys::RevokedAtMs))
                    .to_owned(),
            )
            .await?;
        // Authentication finds a key by its public prefix.
        manager
            .create_index(
                Index::create()
                    .name("auth_api_keys_prefix")
                    .table(AuthApiKeys::Table)
                    .col(AuthApiKeys::Prefix)
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        // Listing: an owner's keys in id (= creation) order.
        manager
            .create_index(
                Index::create()
                    .name("auth_api_keys_owner_id")
                    .table(AuthApiKeys::Table)
                    .col(AuthApiKeys::Owner)
                    .col(AuthApiKeys::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuthUsage::Table)
                    .if_not_exists()
                    .col(string(AuthUsage::UserId))
                    .col(string(AuthUsage::Day))
                    .col(big_integer(AuthUsage::JobsSubmitted))
                    .col(double(AuthUsage::GpuSeconds))
                    .col(big_integer(AuthUsage::BytesStored))
                    .primary_key(Index::create().col(AuthUsage::UserId).col(AuthUsage::Day))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuthSigningKeys::Table)
                    .if_not_exists()
                    .col(string(AuthSigningKeys::Kid).primary_key())
                    .col(text(AuthSigningKeys::PrivateKey))
                    .col(string(AuthSigningKeys::PublicKey))
                    .col(big_integer(AuthSigningKeys::CreatedAtMs))
                    .col(big_integer_null(AuthSigningKeys::RetiredAtMs))
                    .col(big_integer_null(AuthSigningKeys::VerifyUntilMs))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuthSigningKeys::Table.into_iden(),
            AuthUsage::Table.into_iden(),
            AuthApiKeys::Table.into_iden(),
            AuthUsers::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
