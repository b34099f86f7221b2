//! A throwaway PostgreSQL database per test (or a SQLite file for the embedded mode).

use sea_orm::{ConnectionTrait, Database};

/// The server the tests' databases live on; `EASEL_TEST_POSTGRES_URL` overrides it.
pub fn postgres_admin_url() -> String {
    std::env::var("EASEL_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A PostgreSQL database of its own, dropped when this value is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    /// The database's name.
    pub name: String,
    /// Its connection URL.
    pub url: String,
    /// The server's admin URL, to drop the database on.
    admin_url: String,
}

impl TestDatabase {
    /// Creates a fresh, empty database on the tests' server.
    pub async fn postgres() -> TestDatabase {
        TestDatabase::postgres_on(&postgres_admin_url()).await
    }

    /// Creates a fresh, empty database on the server of `admin_url` (a private server that a
    /// test stops and starts, for example).
    pub async fn postgres_on(admin_url: &str) -> TestDatabase {
        let admin_url = admin_url.to_string();
        let name = format!("easel_test_{}", uuid::Uuid::new_v4().simple());
        let admin = Database::connect(&admin_url)
            .await
            .unwrap_or_else(|error| panic!("cannot reach PostgreSQL at {admin_url}: {error}"));
        admin
            .execute_unprepared(&format!("CREATE DATABASE \"{name}\""))
            .await
            .unwrap_or_else(|error| panic!("cannot create database {name}: {error}"));
        let _ = admin.close().await;
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(base, _)| base);
        TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url,
        }
    }

    /// A SQLite database in a temporary file (the embedded mode's kind).
    pub fn sqlite(dir: &std::path::Path) -> String {
        format!(
            "sqlite://{}?mode=rwc",
            dir.join(format!("{}.db", uuid::Uuid::new_v4().simple()))
                .display()
        )
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        // Drop may run inside or outside a runtime; a thread with its own runtime works in both.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = Database::connect(&admin_url).await {
                    let _ = admin
                        .execute_unprepared(&format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        ))
                        .await;
                    let _ = admin.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}
