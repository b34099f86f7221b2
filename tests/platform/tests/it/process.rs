//! The binary as an operator runs it, in front of the real (in-process) upstreams.

use crate::support::Platform;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_reports_serving_serves_metrics_and_drains_on_sigterm() {
    let platform = Platform::start().await;
    let variables: Vec<(&str, &str)> = platform
        .upstream_env
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    easel_test_support::check_service_process(
        &easel_test_support::workspace_binary("easel-gateway", "easel-gateway"),
        &[
            "easel.jobs.v1.JobService",
            "easel.models.v1.ModelService",
            "easel.account.v1.AccountService",
        ],
        &variables,
    )
    .await;
}
