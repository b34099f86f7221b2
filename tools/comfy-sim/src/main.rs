//! `easel-comfy-sim`: parse flags → init logging → bind → print the address → run.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use easel_comfy_sim::{FaultKind, SimConfig, default_checkpoints};
use tokio_util::sync::CancellationToken;

/// A ComfyUI 0.3.64 simulator.
#[derive(Debug, Parser)]
#[command(name = "easel-comfy-sim", version, about)]
struct Cli {
    /// Address to listen on (port 0 picks a free port; the bound address is printed).
    #[arg(long, env = "EASEL_SIM_LISTEN", default_value = "127.0.0.1:8188")]
    listen: SocketAddr,
    /// Delay per sampler step, in milliseconds.
    #[arg(long, env = "EASEL_SIM_STEP_DELAY_MS", default_value_t = 0)]
    step_delay_ms: u64,
    /// Delay per executed non-sampler node, in milliseconds.
    #[arg(long, env = "EASEL_SIM_NODE_DELAY_MS", default_value_t = 0)]
    node_delay_ms: u64,
    /// Delay before every HTTP response, in milliseconds.
    #[arg(long, env = "EASEL_SIM_HTTP_DELAY_MS", default_value_t = 0)]
    http_delay_ms: u64,
    /// Checkpoint names (comma-separated).
    #[arg(long, env = "EASEL_SIM_CHECKPOINTS", value_delimiter = ',')]
    checkpoints: Option<Vec<String>>,
    /// SaveImage's directory (default: a temporary directory).
    #[arg(long, env = "EASEL_SIM_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
    /// Upload / LoadImage directory (default: a temporary directory).
    #[arg(long, env = "EASEL_SIM_INPUT_DIR")]
    input_dir: Option<PathBuf>,
    /// PreviewImage's directory (default: a temporary directory).
    #[arg(long, env = "EASEL_SIM_TEMP_DIR")]
    temp_dir: Option<PathBuf>,
    /// Simulated GPU VRAM total in bytes (reports a CUDA device).
    #[arg(long, env = "EASEL_SIM_VRAM_TOTAL")]
    vram_total: Option<u64>,
    /// Simulated free VRAM in bytes (defaults to the total).
    #[arg(long, env = "EASEL_SIM_VRAM_FREE")]
    vram_free: Option<u64>,
    /// Inject this failure into every prompt.
    #[arg(long, env = "EASEL_SIM_FAULT", value_enum)]
    fault: Option<FaultKind>,
    /// The sampler step at which --fault fires (default: when the node starts).
    #[arg(long, env = "EASEL_SIM_FAULT_AT_STEP")]
    fault_at_step: Option<u32>,
    /// Exit the process at this sampler step.
    #[arg(long, env = "EASEL_SIM_DIE_AT_STEP")]
    die_at_step: Option<u32>,
    /// Exit the process mid-run in the prompt after this many prompts.
    #[arg(long, env = "EASEL_SIM_DIE_AFTER_PROMPTS")]
    die_after_prompts: Option<u64>,
    /// Close the listener at start so every connection is refused.
    #[arg(long, env = "EASEL_SIM_REFUSE_CONNECTIONS")]
    refuse_connections: bool,
    /// Honour per-request fault controls (`[[sim:…]]` markers in graph strings and
    /// `extra_data.easel_sim`). Off by default: only for tests, never for a simulator that
    /// serves users' prompts.
    #[arg(long, env = "EASEL_SIM_REQUEST_FAULTS")]
    request_faults: bool,
    /// Node classes this server does not have (comma-separated), e.g. `SaveImageWebsocket`.
    #[arg(long, env = "EASEL_SIM_WITHOUT_NODES", value_delimiter = ',')]
    without_nodes: Vec<String>,
    /// History entries kept.
    #[arg(long, env = "EASEL_SIM_HISTORY_CAP", default_value_t = 10_000)]
    history_cap: usize,
}

impl Cli {
    fn into_config(self) -> SimConfig {
        SimConfig {
            output_dir: self.output_dir,
            input_dir: self.input_dir,
            temp_dir: self.temp_dir,
            checkpoints: self.checkpoints.unwrap_or_else(default_checkpoints),
            step_delay: Duration::from_millis(self.step_delay_ms),
            node_delay: Duration::from_millis(self.node_delay_ms),
            http_delay: Duration::from_millis(self.http_delay_ms),
            vram: self
                .vram_total
                .map(|total| (total, self.vram_free.unwrap_or(total))),
            fault: self.fault,
            fault_at_step: self.fault_at_step,
            die_at_step: self.die_at_step,
            die_after_prompts: self.die_after_prompts,
            refuse_connections: self.refuse_connections,
            exit_process_on_die: true,
            history_cap: self.history_cap,
            honour_request_faults: self.request_faults,
            without_nodes: self.without_nodes,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let listen = cli.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let address = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%address, "listening");
    // Tests that spawn the binary read the port from this line.
    #[allow(clippy::print_stdout)]
    {
        println!("listening on {address}");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    easel_comfy_sim::run(cli.into_config(), listener, shutdown)
        .await
        .context("running the simulator")
}

async fn watch_signals(shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot watch SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("signal received, shutting down");
    shutdown.cancel();
}
