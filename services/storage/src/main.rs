//! The `easel-storage` binary: configuration from the environment, then [`easel_storage::run`].

fn main() -> std::process::ExitCode {
    easel_runtime::service::main(
        easel_storage::SERVICE_NAME,
        easel_storage::Config::from_env,
        |config| (config.telemetry.clone(), config.server.clone()),
        easel_storage::run,
    )
}
