//! The life of a service process, the same for all five: read the configuration (all problems
//! at once, exit 2), start telemetry, bind the gRPC and admin ports, run until SIGTERM/SIGINT,
//! drain within the grace period, flush telemetry, exit.

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;

use crate::admin::{self, Readiness};
use crate::config::{Env, ServerConfig, TelemetryConfig};
use crate::grpc::GrpcServer;
use crate::grpc::server::serve_router;
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::transport::{self, Listener, ServeOptions};

/// A service's two bound ports. Binding happens before `run`, so tests can pass port-0
/// listeners and read the real addresses.
#[derive(Debug)]
pub struct Listeners {
    /// The gRPC port (a TCP port, or a Unix socket under `easel up`).
    pub grpc: Listener,
    /// The HTTP admin port.
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds both addresses of the configuration.
    pub async fn bind(config: &ServerConfig) -> std::io::Result<Listeners> {
        Ok(Listeners {
            grpc: TcpListener::bind(config.grpc_listen).await?.into(),
            admin: TcpListener::bind(config.admin_listen).await?,
        })
    }

    /// Binds both on loopback, ephemeral ports (tests, embedding).
    pub async fn ephemeral() -> std::io::Result<Listeners> {
        Listeners::bind(&ServerConfig::ephemeral()).await
    }

    /// The gRPC port's address.
    pub fn grpc_addr(&self) -> std::io::Result<SocketAddr> {
        self.grpc.local_addr()
    }

    /// The admin port's address.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// A service's main port when it serves routes of its own beside its gRPC services (the
/// gateway: gRPC, gRPC-web and REST on one port), already behind its stack.
#[derive(Debug)]
pub struct StackedApp {
    /// Every route, behind the stack.
    pub router: axum::Router,
    /// The gRPC health reporter: SERVING while the port runs, NOT_SERVING once it drains.
    pub health: HealthReporter,
    /// The gRPC services it reports on.
    pub service_names: Vec<&'static str>,
}

/// Serves a service's gRPC server and admin port until `shutdown`, then drains both.
pub async fn serve(
    grpc: GrpcServer,
    readiness: Readiness,
    admin_routes: axum::Router,
    listeners: Listeners,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let admin_options = grpc.serve_options("admin");
    let main = grpc.serve(listeners.grpc, shutdown.clone());
    let admin = admin::serve(
        listeners.admin,
        readiness,
        admin_routes,
        admin_options,
        shutdown,
    );
    tokio::try_join!(main, admin).map(|_| ())
}

/// Serves a stacked main port under `options` and the admin port (same service and
/// connection settings, no TLS: it is for probes and metrics) until `shutdown`, then drains
/// both the way [`serve`] does.
pub async fn serve_stacked(
    app: StackedApp,
    options: ServeOptions,
    readiness: Readiness,
    admin_routes: axum::Router,
    listeners: Listeners,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let admin_options = ServeOptions {
        server: "admin",
        tls: None,
        ..options.clone()
    };
    let main = serve_router(
        listeners.grpc,
        app.router,
        app.health,
        app.service_names,
        options,
        shutdown.clone(),
    );
    let admin = admin::serve(
        listeners.admin,
        readiness,
        admin_routes,
        admin_options,
        shutdown,
    );
    tokio::try_join!(main, admin).map(|_| ())
}

/// Runs a service process. `load` reads the service's configuration from `env`; `parts` picks
/// its telemetry and server settings; `run` is the service's library entry point.
pub fn main<C, L, P, R, Fut, E>(service_name: &'static str, load: L, parts: P, run: R) -> ExitCode
where
    L: FnOnce(&mut Env) -> C,
    P: Fn(&C) -> (TelemetryConfig, ServerConfig),
    R: FnOnce(C, Listeners, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    crate::install_crypto_provider();
    let mut env = Env::from_process();
    let config = load(&mut env);
    let config = crate::config::exit_on_error(env.finish().map(|()| config), service_name);
    let (telemetry_config, server_config) = parts(&config);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(service_name)
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(service_name, "cannot start the async runtime", &error),
    };
    runtime.block_on(async move {
        let guard = match telemetry::init(&telemetry_config) {
            Ok(guard) => guard,
            Err(error) => return fail(service_name, "cannot start telemetry", &error),
        };
        match transport::raise_descriptor_limit() {
            Ok(limit) => tracing::debug!(limit, "open descriptor limit"),
            Err(error) => tracing::warn!(%error, "could not raise the open descriptor limit"),
        }
        let shutdown = Shutdown::on_signals(server_config.shutdown_grace);
        let listeners = match Listeners::bind(&server_config).await {
            Ok(listeners) => listeners,
            Err(error) => return fail(service_name, "cannot bind its ports", &error),
        };
        if let Ok(admin) = listeners.admin_addr() {
            // A TCP gRPC port logs as `host:port`, which test harnesses parse.
            let grpc = match listeners.grpc_addr() {
                Ok(address) => address.to_string(),
                Err(_) => listeners.grpc.describe(),
            };
            tracing::info!(service = service_name, grpc = %grpc, admin = %admin, "listening");
        }
        let outcome = run_with_grace(run(config, listeners, shutdown.clone()), &shutdown).await;
        let code = match outcome {
            RunOutcome::Finished(Ok(())) => {
                tracing::info!(service = service_name, "stopped");
                ExitCode::SUCCESS
            }
            RunOutcome::Finished(Err(error)) => {
                tracing::error!(service = service_name, error = %error, "failed");
                ExitCode::FAILURE
            }
            RunOutcome::GraceExpired => {
                tracing::warn!(
                    service = service_name,
                    "grace period over; abandoning the drain"
                );
                ExitCode::SUCCESS
            }
        };
        guard.shutdown().await;
        code
    })
}

enum RunOutcome<E> {
    Finished(Result<(), E>),
    GraceExpired,
}

async fn run_with_grace<Fut, E>(run: Fut, shutdown: &Shutdown) -> RunOutcome<E>
where
    Fut: Future<Output = Result<(), E>>,
{
    tokio::pin!(run);
    tokio::select! {
        result = &mut run => RunOutcome::Finished(result),
        () = async {
            shutdown.triggered().await;
            tokio::time::sleep(shutdown.grace()).await;
        } => RunOutcome::GraceExpired,
    }
}

fn fail(service_name: &str, what: &str, error: &dyn std::fmt::Display) -> ExitCode {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("{service_name}: {what}: {error}");
    }
    ExitCode::FAILURE
}
