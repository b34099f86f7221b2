//! The binary as an operator runs it.

#[tokio::test]
async fn the_binary_reports_serving_serves_metrics_and_drains_on_sigterm() {
    easel_runtime::testing::check_service_process(
        std::path::Path::new(env!("CARGO_BIN_EXE_easel-gateway")),
        &[
            "easel.jobs.v1.JobService",
            "easel.models.v1.ModelService",
            "easel.account.v1.AccountService",
        ],
        &[],
    )
    .await;
}
