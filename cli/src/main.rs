//! `easel`: run the whole platform in one process (`easel up`), or talk to a running one
//! (`easel generate`, `easel jobs`, `easel models`, `easel keys`) over gRPC; `easel certs`
//! makes the services' mutual-TLS certificates.

mod client;
mod commands;
mod output;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// easel: image generation in front of ComfyUI.
#[derive(Debug, Parser)]
#[command(name = "easel", version, about)]
struct Cli {
    /// The gateway's URL.
    #[arg(
        long,
        env = "EASEL_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Your API key.
    #[arg(long, env = "EASEL_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print proto3 JSON for scripts instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole platform in this process on its embedded defaults.
    Up(up::UpArgs),
    /// Generates an image and writes it to a file.
    Generate(commands::generate::GenerateArgs),
    /// Lists, shows, cancels and watches jobs.
    #[command(subcommand)]
    Jobs(commands::jobs::JobsCommand),
    /// Lists the models the platform can run.
    Models,
    /// Creates, lists and revokes API keys.
    #[command(subcommand)]
    Keys(commands::keys::KeysCommand),
    /// Makes the certificates services authenticate each other with (mutual TLS).
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
}

fn main() -> ExitCode {
    easel_runtime::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error.into()),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let connect = || client::Clients::connect(&cli.url, cli.api_key.as_deref());
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Generate(args) => commands::generate::run(&mut connect()?, args, cli.json).await,
        Command::Jobs(command) => commands::jobs::run(&mut connect()?, command, cli.json).await,
        Command::Models => commands::models::run(&mut connect()?, cli.json).await,
        Command::Keys(command) => commands::keys::run(&mut connect()?, command, cli.json).await,
        Command::Certs(command) => commands::certs::run(command),
    }
}

fn fail(error: &anyhow::Error) -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("easel: {}", output::error_line(error));
    }
    ExitCode::FAILURE
}
