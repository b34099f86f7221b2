//! A ComfyUI simulator for easel's tests, benchmarks and the embedded default (`easel up`).
//!
//! It speaks the protocol recorded from ComfyUI 0.3.64 message by message: `POST /prompt` with
//! ComfyUI's validation errors, the WebSocket message sequence and routing, history, queue,
//! interrupt, uploads and `/view`. Graphs run for real where no weights are needed (EmptyImage,
//! ImageBlur, ImageInvert, ImageScale, LoadImage, SaveImage, …) and deterministically simulated
//! for the text-to-image chain (CheckpointLoaderSimple → CLIPTextEncode → EmptyLatentImage →
//! KSampler → VAEDecode), producing PNGs that depend on the seed and the prompt text.
//!
//! Failures can be injected by configuration ([`SimConfig`]) or, only when
//! [`SimConfig::honour_request_faults`] is on (binary: `--request-faults` /
//! `EASEL_SIM_REQUEST_FAULTS=true`; in process: [`SimConfig::with_request_faults`]), per
//! request. It is off by default because the markers travel in user text: a simulator serving
//! real users (`easel up`) never acts on them.
//! - `extra_data.easel_sim`: `{"fault": "error"|"oom"|"die", "node": "<id>", "step": K,
//!   "step_delay_ms": N, "node_delay_ms": N, "refuse_connections_ms": N}`;
//! - markers in any string input of the graph (e.g. a prompt text): `[[sim:error]]`,
//!   `[[sim:oom]]`, `[[sim:die]]`, `[[sim:step=K]]`, `[[sim:slow=MS]]` (per-step delay);
//! - the HTTP header `x-easel-sim-delay-ms: N` delays that one response.
//!
//! Embed it with [`run`] on a bound listener, or [`spawn`] it on `127.0.0.1:0` in tests.

mod config;
mod exec;
mod files;
mod image;
mod nodes;
pub mod png;
mod pyjson;
mod server;
mod state;
mod validate;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::config::{FaultKind, RequestControl, SimConfig, default_checkpoints};
pub use crate::server::DELAY_HEADER;

use crate::files::Dirs;
use crate::state::{History, Hold, Queue, Shared};

/// Errors that stop the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Binding, accepting or preparing directories failed.
    #[error("i/o error: {0}")]
    Io(#[source] std::io::Error),
    /// The embedded node catalog could not be read.
    #[error("node catalog: {0}")]
    Catalog(String),
}

/// Creates the configured directories, or a temporary directory for the missing ones.
fn prepare_dirs(config: &SimConfig) -> Result<(Dirs, Option<tempfile::TempDir>), SimError> {
    let needs_temp =
        config.output_dir.is_none() || config.input_dir.is_none() || config.temp_dir.is_none();
    let temp = if needs_temp {
        Some(
            tempfile::Builder::new()
                .prefix("easel-comfy-sim-")
                .tempdir()
                .map_err(SimError::Io)?,
        )
    } else {
        None
    };
    let pick = |configured: &Option<PathBuf>, name: &str| -> Result<PathBuf, SimError> {
        let path = match (configured, &temp) {
            (Some(path), _) => path.clone(),
            (None, Some(temp)) => temp.path().join(name),
            (None, None) => PathBuf::from(name),
        };
        std::fs::create_dir_all(&path).map_err(SimError::Io)?;
        let absolute = std::fs::canonicalize(&path).map_err(SimError::Io)?;
        Ok(files::normalize(&absolute))
    };
    let dirs = Dirs {
        output: pick(&config.output_dir, "output")?,
        input: pick(&config.input_dir, "input")?,
        temp: pick(&config.temp_dir, "temp")?,
    };
    Ok((dirs, temp))
}

fn preview_prefix() -> String {
    let letters: String = uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(5)
        .map(|byte| char::from(b'a' + byte % 26))
        .collect();
    format!("ComfyUI_temp_{letters}")
}

/// Runs the simulator on `listener` until `shutdown` is cancelled (or an injected death).
pub async fn run(
    config: SimConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), SimError> {
    let address = listener.local_addr().map_err(SimError::Io)?;
    // Refusing from the start: close the listening socket before anything can connect.
    let listener = (!config.refuse_connections).then_some(listener);
    run_with_kill(
        config,
        listener,
        address,
        shutdown,
        CancellationToken::new(),
        Arc::new(Hold::default()),
    )
    .await
}

async fn run_with_kill(
    config: SimConfig,
    listener: Option<TcpListener>,
    address: SocketAddr,
    shutdown: CancellationToken,
    kill: CancellationToken,
    hold: Arc<Hold>,
) -> Result<(), SimError> {
    let (dirs, temp) = prepare_dirs(&config)?;
    let mut catalog = nodes::NodeCatalog::load()?;
    for class in &config.without_nodes {
        catalog.remove(class);
    }
    let (refuse_sender, refuse_receiver) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        config,
        catalog,
        dirs,
        queue: std::sync::Mutex::new(Queue::default()),
        remaining: AtomicUsize::new(0),
        queue_changed: Notify::new(),
        history: std::sync::Mutex::new(History::default()),
        hub: ws::Hub::default(),
        interrupt: AtomicBool::new(false),
        kill,
        shutdown,
        refuse: refuse_sender,
        preview_prefix: preview_prefix(),
        hold,
    });
    tracing::info!(
        output_dir = %shared.dirs.output.display(),
        input_dir = %shared.dirs.input.display(),
        "comfy simulator started"
    );
    let worker = tokio::spawn(exec::worker(shared.clone()));
    let result = server::serve(shared.clone(), listener, address, refuse_receiver).await;
    worker.abort();
    let _ = worker.await;
    tracing::info!(
        killed = shared.kill.is_cancelled(),
        "comfy simulator stopped"
    );
    drop(temp);
    result
}

/// A simulator running in-process on `127.0.0.1:<random port>`.
#[derive(Debug)]
pub struct SimHandle {
    /// The bound address.
    pub addr: SocketAddr,
    output_dir: PathBuf,
    input_dir: PathBuf,
    shutdown: CancellationToken,
    kill: CancellationToken,
    hold: Arc<Hold>,
    task: JoinHandle<Result<(), SimError>>,
    _temp: Option<tempfile::TempDir>,
}

impl SimHandle {
    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:PORT/ws?clientId=…`.
    pub fn ws_url(&self, client_id: &str) -> String {
        format!("ws://{}/ws?clientId={client_id}", self.addr)
    }

    /// Where SaveImage writes.
    pub fn output_dir(&self) -> &Path {
        &self.output_dir
    }

    /// Where uploads land.
    pub fn input_dir(&self) -> &Path {
        &self.input_dir
    }

    /// Holds the queue: prompts are still accepted, validated and queued, but none starts
    /// until the guard is dropped, as on a ComfyUI busy with a long prompt. Tests use it to
    /// act on a job while it is certainly not finished, without racing the backend.
    pub fn hold_queue(&self) -> QueueHold {
        self.hold.set(true);
        QueueHold {
            hold: self.hold.clone(),
        }
    }

    /// Whether the simulator has stopped (shut down, killed or died by injection).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops gracefully (WebSockets get a close frame) and waits for it.
    pub async fn shutdown(self) -> Result<(), SimError> {
        self.shutdown.cancel();
        self.join().await
    }

    /// Simulates a dying server: every socket dropped without a WebSocket close frame and the
    /// listener closed, so new connections are refused. Returns once that is done.
    pub async fn kill(self) -> Result<(), SimError> {
        self.kill.cancel();
        self.join().await
    }

    /// Waits until the simulator stops on its own (e.g. an injected death).
    pub async fn join(self) -> Result<(), SimError> {
        self.task
            .await
            .map_err(|error| SimError::Io(std::io::Error::other(error)))?
    }
}

/// Starts a simulator on `127.0.0.1:0` in the background.
pub async fn spawn(mut config: SimConfig) -> Result<SimHandle, SimError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(SimError::Io)?;
    let addr = listener.local_addr().map_err(SimError::Io)?;
    // Resolve directories here so the handle can report them and keep the temp dir alive
    // after a kill (a restarted simulator can then reuse it, like files left on disk).
    let (dirs, temp) = prepare_dirs(&config)?;
    config.output_dir = Some(dirs.output.clone());
    config.input_dir = Some(dirs.input.clone());
    config.temp_dir = Some(dirs.temp.clone());
    let shutdown = CancellationToken::new();
    let kill = CancellationToken::new();
    let listener = (!config.refuse_connections).then_some(listener);
    let hold = Arc::new(Hold::default());
    let task = tokio::spawn(run_with_kill(
        config,
        listener,
        addr,
        shutdown.clone(),
        kill.clone(),
        hold.clone(),
    ));
    Ok(SimHandle {
        addr,
        output_dir: dirs.output,
        input_dir: dirs.input,
        shutdown,
        kill,
        hold,
        task,
        _temp: temp,
    })
}

/// Keeps the simulator's queue held (see [`SimHandle::hold_queue`]) until dropped.
#[derive(Debug)]
pub struct QueueHold {
    hold: Arc<Hold>,
}

impl Drop for QueueHold {
    fn drop(&mut self) {
        self.hold.set(false);
    }
}
