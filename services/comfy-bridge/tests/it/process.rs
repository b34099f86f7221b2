//! The binary as an operator runs it.

#[tokio::test]
async fn the_binary_reports_serving_serves_metrics_and_drains_on_sigterm() {
    easel_test_support::check_service_process(
        std::path::Path::new(env!("CARGO_BIN_EXE_easel-comfy-bridge")),
        &["easel.bridge.v1.BridgeService"],
        &[],
    )
    .await;
}
