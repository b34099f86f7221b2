//! The command line: `easel-auth` (or `easel-auth serve`) runs the service;
//! `easel-auth bootstrap --email E [--password P]` makes the first admin and prints their API
//! key once; `easel-auth rotate-keys` replaces the JWT signing key now.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use easel_runtime::config::Env;

use crate::{Auth, Config, SERVICE_NAME, SystemClock};

/// easel's auth service.
#[derive(Debug, Parser)]
#[command(name = "easel-auth", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the gRPC API and the admin port (the default).
    Serve,
    /// Create the first admin user and an API key on an empty database; prints the key once.
    Bootstrap {
        /// The admin's email.
        #[arg(long)]
        email: String,
        /// A password for Login (at least 12 characters); without one the admin uses the key.
        #[arg(long, env = "EASEL_BOOTSTRAP_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Make a new JWT signing key now; the old one verifies until its tokens have expired.
    RotateKeys,
}

/// Parses the arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => easel_runtime::service::main(
            SERVICE_NAME,
            Config::from_env,
            |config| (config.telemetry.clone(), config.server.clone()),
            crate::run,
        ),
        Command::Bootstrap { email, password } => one_shot(|config| async move {
            let made = crate::bootstrap::bootstrap_admin(&config.auth, &email, password.as_deref())
                .await
                .map_err(|error| error.to_string())?;
            println!("admin    {} ({})", made.email, made.user_id);
            println!("API key  {}", made.api_key);
            println!("This key is shown once: store it now.");
            Ok(())
        }),
        Command::RotateKeys => one_shot(|config| async move {
            let auth = Auth::open(&config.auth, Arc::new(SystemClock))
                .await
                .map_err(|error| error.to_string())?;
            let kid = auth
                .tokens()
                .rotate()
                .await
                .map_err(|error| error.to_string())?;
            println!("new signing key {kid}; older keys verify until their tokens expire");
            Ok(())
        }),
    }
}

/// Runs a command that needs the configuration and a runtime, then exits.
fn one_shot<F, Fut>(command: F) -> ExitCode
where
    F: FnOnce(Config) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    easel_runtime::install_crypto_provider();
    let mut env = Env::from_process();
    let config = Config::from_env(&mut env);
    let config = easel_runtime::config::exit_on_error(env.finish().map(|()| config), SERVICE_NAME);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(command(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{SERVICE_NAME}: {error}");
            ExitCode::FAILURE
        }
    }
}
