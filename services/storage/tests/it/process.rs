//! The binary as an operator runs it.

#[tokio::test]
async fn the_binary_reports_serving_serves_metrics_and_drains_on_sigterm() {
    // Its data goes to a temporary directory, not the working directory.
    let dir = tempfile::tempdir().expect("temp dir");
    let storage_url = format!("file://{}", dir.path().join("artifacts").display());
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("storage.db").display()
    );
    easel_test_support::check_service_process(
        std::path::Path::new(env!("CARGO_BIN_EXE_easel-storage")),
        &["easel.storage.v1.StorageService"],
        &[
            ("EASEL_STORAGE_URL", storage_url.as_str()),
            ("EASEL_DATABASE_URL", database_url.as_str()),
        ],
    )
    .await;
    assert!(
        dir.path().join("artifacts").is_dir(),
        "the directory was not created"
    );
}
