//! Every pooled PostgreSQL connection carries the statement timeout: a statement that runs past
//! it is cancelled by the server instead of holding the connection.

use std::time::Duration;

use easel_runtime::db::{DatabaseConfig, connect};
use easel_test_support::TestDatabase;
use sea_orm::{ConnectionTrait, Statement};

#[tokio::test]
async fn a_statement_past_the_timeout_is_cancelled_on_every_connection() {
    let database = TestDatabase::postgres().await;
    let mut config = DatabaseConfig::new(database.url.clone());
    config.statement_timeout = Duration::from_millis(200);
    config.max_connections = 2;
    let connection = connect(&config).await.unwrap();
    let backend = connection.get_database_backend();
    // Both connections of the pool, at once.
    let (first, second) = tokio::join!(
        connection.execute_raw(Statement::from_string(backend, "SELECT pg_sleep(5)")),
        connection.execute_raw(Statement::from_string(backend, "SELECT pg_sleep(5)")),
    );
    for outcome in [first, second] {
        let error = outcome.expect_err("a 5 s statement outlived a 200 ms timeout");
        assert!(
            error.to_string().contains("statement timeout"),
            "unexpected error: {error}"
        );
    }
    // The pool is usable afterwards.
    connection
        .execute_raw(Statement::from_string(backend, "SELECT 1"))
        .await
        .unwrap();
}
