//! The `easel-gateway` binary: configuration from the environment, then [`easel_gateway::run`].

fn main() -> std::process::ExitCode {
    easel_runtime::service::main(
        easel_gateway::SERVICE_NAME,
        easel_gateway::Config::from_env,
        |config| (config.telemetry.clone(), config.server.clone()),
        easel_gateway::run,
    )
}
