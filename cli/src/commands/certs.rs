//! `easel certs generate`: a development CA and one mutual-TLS certificate per service.

use std::path::PathBuf;

use anyhow::Context;

use crate::output;

/// The services that talk to each other: each gets a certificate naming it.
pub const SERVICES: &[&str] = &["gateway", "auth", "jobs", "storage", "comfy-bridge"];

/// `easel certs …`.
#[derive(Debug, clap::Subcommand)]
pub enum CertsCommand {
    /// Writes ca.pem, ca.key and <service>.pem / <service>.key for every service into a
    /// directory. For development and tests; production uses the deployment's own CA.
    Generate(GenerateArgs),
}

/// Options of `easel certs generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The directory to write into (created if missing; existing files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// How long the certificates are valid, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

/// Runs a `certs` command.
pub fn run(command: CertsCommand) -> anyhow::Result<()> {
    match command {
        CertsCommand::Generate(args) => {
            let files =
                easel_runtime::transport::tls::dev::generate(&args.out, SERVICES, args.days)
                    .map_err(anyhow::Error::msg)
                    .with_context(|| {
                        format!("cannot write certificates to {}", args.out.display())
                    })?;
            output::line(format!(
                "CA            {}",
                args.out.join("ca.pem").display()
            ));
            for (service, files) in files {
                output::line(format!(
                    "{service:<13} {}  {}  ({})",
                    files.cert.display(),
                    files.key.display(),
                    easel_runtime::transport::tls::identity_name(&service)
                ));
            }
            output::line("");
            output::line(
                "Give each service EASEL_TLS_CA=ca.pem, EASEL_TLS_CERT=<service>.pem and EASEL_TLS_KEY=<service>.key.",
            );
            Ok(())
        }
    }
}
