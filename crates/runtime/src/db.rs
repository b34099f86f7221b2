//! Database plumbing shared by the services that keep records (auth, jobs, storage): connect to
//! PostgreSQL (production) or SQLite (embedded) through sea-orm, and map driver errors to the
//! vocabulary once.

use std::time::Duration;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, SqlErr, TransactionTrait,
};

use crate::error::{Error, ErrorCode};

/// Settings of a service's database.
#[derive(Clone, Debug)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite://path?mode=rwc`.
    pub url: String,
    /// Pool size on PostgreSQL (SQLite always uses one connection).
    pub max_connections: u32,
    /// How long to wait for a pooled connection before answering UNAVAILABLE.
    pub acquire_timeout: Duration,
    /// PostgreSQL's `statement_timeout` on every pooled connection: a statement running longer
    /// is cancelled by the server (and the call fails) instead of holding a connection.
    pub statement_timeout: Duration,
    /// How long opening a connection may take.
    pub connect_timeout: Duration,
}

impl DatabaseConfig {
    /// A database at `url` with a pool of 16, a 5 s acquire and connect timeout and a 30 s
    /// statement timeout.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseConfig {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Whether this is SQLite.
    pub fn is_sqlite(&self) -> bool {
        self.url.starts_with("sqlite:")
    }
}

/// Connects, tuned for the database kind: SQLite gets WAL and a busy timeout so the embedded
/// services can share one file-backed database safely.
pub async fn connect(config: &DatabaseConfig) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(config.url.clone());
    let statement_ms = config.statement_timeout.as_millis().max(1);
    // SQLite allows one writer; a pool of several connections turns concurrent transactions
    // that read then write into immediate "database is locked" errors (a deferred transaction
    // cannot wait to upgrade its lock). One connection serializes them instead.
    let max_connections = if config.is_sqlite() {
        1
    } else {
        config.max_connections
    };
    options
        .max_connections(max_connections)
        .min_connections(1)
        .connect_timeout(config.connect_timeout)
        .acquire_timeout(config.acquire_timeout)
        // Statements are traced by our own spans; sqlx's per-statement logs would leak values.
        .sqlx_logging(false)
        // Sent at connection start, so it holds on every pooled connection.
        .map_sqlx_postgres_opts(move |postgres| {
            postgres.options([("statement_timeout", format!("{}ms", statement_ms))])
        })
        // Every connection the pool opens gets these, not just the first.
        .map_sqlx_sqlite_opts(|sqlite| {
            sqlite
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    let connection = Database::connect(options).await?;
    Ok(connection)
}

/// Connects and brings the schema up to date with `M`'s migrations. For SQLite the file's
/// directory is created first. On PostgreSQL the migrations run under a transaction-scoped
/// advisory lock named after `lock_name`, so replicas starting together migrate one at a time
/// (the others then find the work done) instead of racing on the same DDL.
pub async fn connect_and_migrate<M: sea_orm_migration::MigratorTrait>(
    config: &DatabaseConfig,
    lock_name: &str,
) -> Result<DatabaseConnection, DbErr> {
    if let Some(path) = config.url.strip_prefix("sqlite://") {
        let file = path.split('?').next().unwrap_or_default();
        if let Some(dir) = std::path::Path::new(file).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|error| {
                DbErr::Custom(format!("cannot create {}: {error}", dir.display()))
            })?;
        }
    }
    let connection = connect(config).await?;
    if config.is_sqlite() {
        // One writer at a time is SQLite's own rule; nothing to coordinate.
        M::up(&connection, None).await?;
        return Ok(connection);
    }
    let lock = connection.begin().await?;
    lock.execute_unprepared(&format!(
        "SELECT pg_advisory_xact_lock({})",
        advisory_lock_key(lock_name)
    ))
    .await?;
    let migrated = M::up(&connection, None).await;
    lock.commit().await?;
    migrated?;
    Ok(connection)
}

/// A stable 63-bit key for `name` (FNV-1a), for PostgreSQL advisory locks.
fn advisory_lock_key(name: &str) -> i64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::try_from(hash >> 1).unwrap_or(i64::MAX)
}

/// Maps a database error to the vocabulary: unique violations are ALREADY_EXISTS, pool and
/// connection failures UNAVAILABLE, anything else INTERNAL (its text is logged, never sent).
pub fn map_db_err(error: DbErr) -> Error {
    if let Some(SqlErr::UniqueConstraintViolation(_)) = error.sql_err() {
        return Error::new(ErrorCode::AlreadyExists, "already exists").with_source(error);
    }
    match &error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => {
            Error::unavailable("database unavailable, retry later").with_source(error)
        }
        _ => Error::internal(error),
    }
}

/// A readiness check that pings the database.
pub async fn ping(connection: &DatabaseConnection) -> Result<(), String> {
    connection.ping().await.map_err(|error| error.to_string())
}
