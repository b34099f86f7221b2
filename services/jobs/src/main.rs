//! The `easel-jobs` binary: configuration from the environment, then [`easel_jobs::run`].

fn main() -> std::process::ExitCode {
    easel_runtime::service::main(
        easel_jobs::SERVICE_NAME,
        easel_jobs::Config::from_env,
        |config| (config.telemetry.clone(), config.server.clone()),
        easel_jobs::run,
    )
}
