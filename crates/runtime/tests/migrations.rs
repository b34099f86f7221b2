//! Replicas starting together on one fresh database all come up: the advisory lock lets one
//! migrate while the others wait and then find the work done.

use easel_runtime::db::{DatabaseConfig, connect_and_migrate};
use easel_test_support::TestDatabase;
use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;

struct CreateWidgets;

impl MigrationName for CreateWidgets {
    fn name(&self) -> &str {
        "m0001_create_widgets"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateWidgets {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Alias::new("widgets"))
                    .col(ColumnDef::new(Alias::new("id")).integer().primary_key())
                    .to_owned(),
            )
            .await
    }
}

struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateWidgets)]
    }

    fn migration_table_name() -> DynIden {
        Alias::new("widgets_migrations").into_iden()
    }
}

#[tokio::test]
async fn four_replicas_migrating_one_fresh_postgres_database_all_succeed() {
    let database = TestDatabase::postgres().await;
    let config = DatabaseConfig::new(database.url.clone());
    let starts = (0..4).map(|_| connect_and_migrate::<Migrator>(&config, "widgets"));
    let connections = futures::future::join_all(starts).await;
    for connection in &connections {
        assert!(connection.is_ok(), "{connection:?}");
    }
    let Some(Ok(connection)) = connections.first() else {
        panic!("no connection");
    };
    let applied = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            "SELECT COUNT(*) AS n FROM widgets_migrations",
        ))
        .await
        .ok()
        .flatten()
        .and_then(|row| row.try_get::<i64>("", "n").ok());
    assert_eq!(applied, Some(1), "the migration ran exactly once");
}

#[tokio::test]
async fn sqlite_files_get_their_directory_and_schema() {
    let dir = tempfile::tempdir().unwrap_or_else(|error| panic!("temp dir: {error}"));
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("nested/deeper/app.db").display()
    );
    let connection = connect_and_migrate::<Migrator>(&DatabaseConfig::new(url), "widgets").await;
    let connection = connection.unwrap_or_else(|error| panic!("sqlite: {error}"));
    connection
        .execute_unprepared("INSERT INTO widgets (id) VALUES (1)")
        .await
        .unwrap_or_else(|error| panic!("the table exists: {error}"));
}
