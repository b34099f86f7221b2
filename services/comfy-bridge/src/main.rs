//! The `easel-comfy-bridge` binary: configuration from the environment, then [`easel_comfy_bridge::run`].

fn main() -> std::process::ExitCode {
    easel_runtime::service::main(
        easel_comfy_bridge::SERVICE_NAME,
        easel_comfy_bridge::Config::from_env,
        |config| (config.telemetry.clone(), config.server.clone()),
        easel_comfy_bridge::run,
    )
}
