//! The `easel-auth` binary: configuration from the environment, then [`easel_auth::run`].

fn main() -> std::process::ExitCode {
    easel_runtime::service::main(
        easel_auth::SERVICE_NAME,
        easel_auth::Config::from_env,
        |config| (config.telemetry.clone(), config.server.clone()),
        easel_auth::run,
    )
}
