//! The binary as an operator runs it.

use std::path::Path;

#[tokio::test]
async fn the_binary_reports_serving_serves_metrics_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let database = easel_test_support::TestDatabase::sqlite(dir.path());
    easel_test_support::check_service_process(
        Path::new(env!("CARGO_BIN_EXE_easel-auth")),
        &[
            "easel.auth.v1.AuthService",
            "easel.account.v1.AccountService",
        ],
        &[("EASEL_DATABASE_URL", &database)],
    )
    .await;
}

async fn run(args: &[&str], database: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_easel-auth"))
        .args(args)
        .env("EASEL_DATABASE_URL", database)
        .env("EASEL_PASSWORD_HASH_MEMORY_KIB", "64")
        .env("EASEL_LOG", "warn")
        .env_remove("EASEL_REDIS_URL")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn bootstrap_prints_the_key_once_and_refuses_a_second_time() {
    let database = easel_test_support::TestDatabase::postgres().await;
    let first = run(
        &["bootstrap", "--email", "root@example.test"],
        &database.url,
    )
    .await;
    assert!(first.status.success(), "{first:?}");
    let stdout = String::from_utf8(first.stdout).unwrap();
    let key = stdout
        .split_whitespace()
        .find(|word| word.starts_with("easel_"))
        .expect("the key is printed");
    assert!(key.len() > 50);

    let second = run(
        &["bootstrap", "--email", "other@example.test"],
        &database.url,
    )
    .await;
    assert!(!second.status.success());
    let stderr = String::from_utf8(second.stderr).unwrap();
    assert!(stderr.contains("admin exists"), "{stderr}");
    assert!(!String::from_utf8(second.stdout).unwrap().contains("easel_"));

    let rotated = run(&["rotate-keys"], &database.url).await;
    assert!(rotated.status.success(), "{rotated:?}");
    assert!(
        String::from_utf8(rotated.stdout)
            .unwrap()
            .contains("new signing key")
    );

    let bad = run(&["bootstrap", "--email", "not-an-email"], &database.url).await;
    assert!(!bad.status.success());
}
