//! Starting the platform, and its life until the shutdown.

use std::collections::HashMap;
use std::io;

use easel_runtime::config::Env;
use easel_runtime::service::Listeners;
use easel_runtime::transport::Listener;
use easel_runtime::{Shutdown, transport};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::error::PlatformError;
use crate::settings::{Comfyui, InternalPorts, Service, Settings};
use crate::simulator;

/// Variables that mean something else in each service, or that the platform decides, so a
/// shared value never reaches a service: each comes from [`Settings::service_env`] or from the
/// platform.
const NOT_SHARED: [&str; 7] = [
    "EASEL_DATABASE_URL",
    "EASEL_STORAGE_URL",
    "EASEL_GRPC_LISTEN",
    "EASEL_ADMIN_LISTEN",
    // One process has no use for per-service certificates: its sockets are private.
    "EASEL_TLS_CA",
    "EASEL_TLS_CERT",
    "EASEL_TLS_KEY",
];

/// A running platform. Dropping it starts the shutdown of everything it runs.
pub struct Platform {
    shutdown: Shutdown,
    endpoints: HashMap<Service, Endpoints>,
    comfyui_urls: String,
    dev_account: Option<easel_auth::DevAccount>,
    tasks: Vec<Task>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("endpoints", &self.endpoints)
            .field("comfyui_urls", &self.comfyui_urls)
            .finish_non_exhaustive()
    }
}

/// How a running service is reached.
#[derive(Clone, Debug)]
struct Endpoints {
    /// `http://ADDRESS` or `unix://PATH`.
    grpc: String,
    /// `http://ADDRESS` of the admin port (and storage's download links).
    admin: String,
}

/// A service (or the simulator) running as a task of its own.
struct Task {
    name: &'static str,
    service: Option<Service>,
    shutdown: Shutdown,
    handle: Option<JoinHandle<io::Result<()>>>,
}

/// A service's configuration, read from its variables.
enum ServiceConfig {
    Auth(easel_auth::Config),
    Storage(easel_storage::Config),
    ComfyBridge(easel_comfy_bridge::Config),
    Jobs(easel_jobs::Config),
    Gateway(easel_gateway::Config),
}

impl ServiceConfig {
    fn read(service: Service, env: &mut Env) -> ServiceConfig {
        match service {
            Service::Auth => ServiceConfig::Auth(easel_auth::Config::from_env(env)),
            Service::Storage => ServiceConfig::Storage(easel_storage::Config::from_env(env)),
            Service::ComfyBridge => {
                ServiceConfig::ComfyBridge(easel_comfy_bridge::Config::from_env(env))
            }
            Service::Jobs => ServiceConfig::Jobs(easel_jobs::Config::from_env(env)),
            Service::Gateway => ServiceConfig::Gateway(easel_gateway::Config::from_env(env)),
        }
    }

    /// The service's `run`, boxed: five services' futures differ in type and are large.
    fn run(self, listeners: Listeners, shutdown: Shutdown) -> BoxFuture<'static, io::Result<()>> {
        match self {
            ServiceConfig::Auth(config) => Box::pin(easel_auth::run(config, listeners, shutdown)),
            ServiceConfig::Storage(config) => {
                Box::pin(easel_storage::run(config, listeners, shutdown))
            }
            ServiceConfig::ComfyBridge(config) => {
                Box::pin(easel_comfy_bridge::run(config, listeners, shutdown))
            }
            ServiceConfig::Jobs(config) => Box::pin(easel_jobs::run(config, listeners, shutdown)),
            ServiceConfig::Gateway(config) => {
                Box::pin(easel_gateway::run(config, listeners, shutdown))
            }
        }
    }
}

impl Platform {
    /// Binds every port first (so each service knows where the others are), reads every
    /// service's configuration (the first invalid one is the error), makes the development
    /// account, then starts the services, each stopping with `shutdown` or on its own
    /// [`Platform::stop`]. Returns once they are started, not ready.
    pub async fn start(settings: Settings, shutdown: Shutdown) -> Result<Platform, PlatformError> {
        // Anything started before an error stops when this value drops.
        let mut platform = Platform {
            shutdown,
            endpoints: HashMap::new(),
            comfyui_urls: String::new(),
            dev_account: None,
            tasks: Vec::new(),
        };
        platform.comfyui_urls = platform.start_comfyui(&settings).await?;
        let mut listeners = bind(&settings).await?;
        for (service, bound) in &listeners {
            platform
                .endpoints
                .insert(*service, endpoints(*service, bound)?);
        }
        let mut configs = Vec::new();
        for service in &settings.services {
            let mut env = platform.env_for(&settings, *service);
            let config = ServiceConfig::read(*service, &mut env);
            env.finish().map_err(|source| PlatformError::Config {
                service: service.name(),
                source,
            })?;
            configs.push((*service, config));
        }
        if let (Some(request), Some((_, ServiceConfig::Auth(auth)))) = (
            &settings.dev_account,
            configs
                .iter()
                .find(|(service, _)| *service == Service::Auth),
        ) {
            let account =
                easel_auth::bootstrap_dev_account(auth, &request.email, request.api_key.as_deref())
                    .await
                    .map_err(|source| PlatformError::DevAccount { source })?;
            platform.dev_account = Some(account);
        }
        for (service, config) in configs {
            let Some(bound) = listeners.remove(&service) else {
                continue;
            };
            let shutdown = platform.shutdown.child();
            let handle = tokio::spawn(config.run(bound, shutdown.clone()));
            platform.tasks.push(Task {
                name: service.name(),
                service: Some(service),
                shutdown,
                handle: Some(handle),
            });
        }
        Ok(platform)
    }

    /// The backends' URLs: the given ones, or the supervised simulator's (when the bridge
    /// runs).
    async fn start_comfyui(&mut self, settings: &Settings) -> Result<String, PlatformError> {
        let config = match &settings.comfyui {
            Comfyui::Backends(urls) => return Ok(urls.clone()),
            Comfyui::Simulator(_) if !settings.runs(Service::ComfyBridge) => {
                return Ok(String::new());
            }
            Comfyui::Simulator(config) => (**config).clone(),
        };
        let loopback = "127.0.0.1:0";
        let listening = |source| PlatformError::Listen {
            what: format!("{loopback} (the ComfyUI simulator)"),
            source,
        };
        let listener = TcpListener::bind(loopback).await.map_err(listening)?;
        let address = listener.local_addr().map_err(listening)?;
        let token = self.shutdown.token().clone();
        // Supervised: a simulator that stops is restarted on the same address rather than
        // taking the platform down with it.
        let handle = tokio::spawn(simulator::supervise(config, listener, token));
        self.tasks.push(Task {
            name: "comfyui simulator",
            service: None,
            shutdown: self.shutdown.clone(),
            handle: Some(handle),
        });
        Ok(format!("http://{address}"))
    }

    /// A service's variables: the shared ones, then the platform's wiring, then its own.
    fn env_for(&self, settings: &Settings, service: Service) -> Env {
        let mut variables: HashMap<String, String> = settings
            .env
            .iter()
            .filter(|(name, _)| !NOT_SHARED.contains(&name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        variables.extend(
            self.wiring(settings, service)
                .into_iter()
                .map(|(name, value)| (name.to_string(), value)),
        );
        if let Some(own) = settings.service_env.get(&service) {
            variables.extend(own.iter().cloned());
        }
        Env::from_pairs(variables)
    }

    /// What the platform decides for `service`: the grace period and the URLs of the others.
    fn wiring(&self, settings: &Settings, service: Service) -> Vec<(&'static str, String)> {
        let grpc = |other: Service| self.grpc_url(other).map(str::to_string);
        let admin = |other: Service| self.admin_url(other).map(str::to_string);
        let grace = humantime::format_duration(settings.grace).to_string();
        let mut wiring = vec![("EASEL_SHUTDOWN_GRACE", Some(grace))];
        match service {
            Service::Auth => {}
            // Downloads come through the gateway, so every link shares the platform's origin.
            Service::Storage => wiring.push(("EASEL_PUBLIC_URL", grpc(Service::Gateway))),
            Service::ComfyBridge => {
                wiring.push(("EASEL_COMFYUI_URLS", Some(self.comfyui_urls.clone())));
            }
            Service::Jobs => wiring.extend([
                ("EASEL_JOBS_ROLE", Some("all".to_string())),
                ("EASEL_BRIDGE_URL", grpc(Service::ComfyBridge)),
                ("EASEL_STORAGE_URL", grpc(Service::Storage)),
                ("EASEL_AUTH_URL", grpc(Service::Auth)),
            ]),
            Service::Gateway => {
                wiring.extend([
                    ("EASEL_AUTH_URL", grpc(Service::Auth)),
                    ("EASEL_JOBS_URL", grpc(Service::Jobs)),
                    ("EASEL_BRIDGE_URL", grpc(Service::ComfyBridge)),
                    ("EASEL_STORAGE_HTTP_URL", admin(Service::Storage)),
                ]);
                if settings.pin_public_url {
                    wiring.push(("EASEL_PUBLIC_URL", grpc(Service::Gateway)));
                }
            }
        }
        wiring
            .into_iter()
            .filter_map(|(name, value)| Some((name, value?)))
            .collect()
    }

    /// How `service`'s gRPC port is reached (`http://…` or `unix://…`), when it runs.
    pub fn grpc_url(&self, service: Service) -> Option<&str> {
        self.endpoints
            .get(&service)
            .map(|endpoints| endpoints.grpc.as_str())
    }

    /// `service`'s admin port (`http://…`; storage serves its local links there), when it runs.
    pub fn admin_url(&self, service: Service) -> Option<&str> {
        self.endpoints
            .get(&service)
            .map(|endpoints| endpoints.admin.as_str())
    }

    /// The ComfyUI backends comfy-bridge uses (the simulator's URL when it runs).
    pub fn comfyui_urls(&self) -> &str {
        &self.comfyui_urls
    }

    /// The development account, when one was asked for.
    pub fn dev_account(&self) -> Option<&easel_auth::DevAccount> {
        self.dev_account.as_ref()
    }

    /// Starts `service`'s drain, leaving the others running.
    pub fn stop(&self, service: Service) {
        if let Some(task) = self.task(service) {
            task.shutdown.trigger();
        }
    }

    /// Starts the drain of everything.
    pub fn stop_all(&self) {
        self.shutdown.trigger();
    }

    /// Waits until `service` has stopped; its result (an error if it was not running, was
    /// waited for already, or panicked).
    pub async fn stopped(&mut self, service: Service) -> io::Result<()> {
        let handle = self
            .tasks
            .iter_mut()
            .find(|task| task.service == Some(service))
            .and_then(|task| task.handle.take())
            .ok_or_else(|| io::Error::other(format!("{} is not running", service.name())))?;
        handle
            .await
            .unwrap_or_else(|error| Err(io::Error::other(error)))
    }

    /// Runs until the shutdown, then waits for every service to drain. Any service ending
    /// before the shutdown is a failure of the platform: it stops the rest, and is the error.
    pub async fn wait(mut self) -> Result<(), PlatformError> {
        let mut running: FuturesUnordered<_> = self
            .tasks
            .iter_mut()
            .filter_map(|task| {
                let handle = task.handle.take()?;
                let name = task.name;
                Some(async move { (name, handle.await) })
            })
            .collect();
        let mut failure = None;
        while let Some((name, joined)) = running.next().await {
            match joined.unwrap_or_else(|error| Err(io::Error::other(error))) {
                Err(source) => {
                    tracing::error!(service = name, error = %source, "service failed");
                    if failure.is_none() {
                        failure = Some(PlatformError::Failed { name, source });
                    }
                }
                Ok(()) if !self.shutdown.is_triggered() && failure.is_none() => {
                    failure = Some(PlatformError::Stopped { name });
                }
                Ok(()) => {}
            }
            self.shutdown.trigger();
        }
        failure.map_or(Ok(()), Err)
    }

    fn task(&self, service: Service) -> Option<&Task> {
        self.tasks.iter().find(|task| task.service == Some(service))
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Binds every service's ports: the gateway on its address, the others on Unix sockets or
/// loopback, each with an admin port on loopback.
async fn bind(settings: &Settings) -> Result<HashMap<Service, Listeners>, PlatformError> {
    if let InternalPorts::UnixSockets(directory) = &settings.internal {
        prepare_socket_dir(directory)?;
    }
    let mut bound = HashMap::new();
    for service in &settings.services {
        let grpc = match (service, &settings.internal) {
            (Service::Gateway, _) => TcpListener::bind(settings.listen)
                .await
                .map(Listener::from)
                .map_err(|source| PlatformError::Listen {
                    what: settings.listen.to_string(),
                    source,
                })?,
            (_, InternalPorts::UnixSockets(directory)) => {
                let path = directory.join(format!("{}.sock", service.name()));
                Listener::bind_unix(&path).map_err(|source| PlatformError::Listen {
                    what: path.display().to_string(),
                    source,
                })?
            }
            (_, InternalPorts::Loopback) => loopback_port().await?.into(),
        };
        let admin = loopback_port().await?;
        bound.insert(*service, Listeners { grpc, admin });
    }
    Ok(bound)
}

async fn loopback_port() -> Result<TcpListener, PlatformError> {
    TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| PlatformError::Listen {
            what: "a loopback port".to_string(),
            source,
        })
}

/// The sockets' directory, mode 0700 (each socket is 0600).
fn prepare_socket_dir(path: &std::path::Path) -> Result<(), PlatformError> {
    std::fs::create_dir_all(path)
        .and_then(|()| transport::listener::restrict(path, 0o700))
        .map_err(|source| PlatformError::Directory {
            path: path.to_path_buf(),
            source,
        })
}

fn endpoints(service: Service, listeners: &Listeners) -> Result<Endpoints, PlatformError> {
    let unknown = |source| PlatformError::Listen {
        what: format!("{}'s ports", service.name()),
        source,
    };
    Ok(Endpoints {
        grpc: listeners.grpc.url().map_err(unknown)?,
        admin: format!("http://{}", listeners.admin_addr().map_err(unknown)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> Platform {
        let endpoints = |grpc: &str| Endpoints {
            grpc: grpc.to_string(),
            admin: "http://127.0.0.1:1".to_string(),
        };
        Platform {
            shutdown: Shutdown::new(std::time::Duration::from_secs(1)),
            endpoints: HashMap::from([
                (Service::Auth, endpoints("unix:///sockets/auth.sock")),
                (Service::Gateway, endpoints("http://127.0.0.1:8080")),
            ]),
            comfyui_urls: "http://127.0.0.1:8188".to_string(),
            dev_account: None,
            tasks: Vec::new(),
        }
    }

    #[test]
    fn a_service_reads_the_shared_variables_under_the_wiring_under_its_own() {
        let platform = platform();
        let settings = Settings::loopback(Comfyui::Backends(platform.comfyui_urls.clone()))
            .share("EASEL_LOG", "debug")
            .share("EASEL_DATABASE_URL", "postgres://shared")
            .share("EASEL_TLS_CERT", "/cert.pem")
            .share("EASEL_AUTH_URL", "http://stale")
            .set(Service::Jobs, [("EASEL_JOBS_ROLE", "api")]);
        let jobs = platform.env_for(&settings, Service::Jobs);
        assert_eq!(jobs.raw("EASEL_LOG"), Some("debug"));
        assert_eq!(jobs.raw("EASEL_DATABASE_URL"), None, "never shared");
        assert_eq!(jobs.raw("EASEL_TLS_CERT"), None, "never shared");
        assert_eq!(
            jobs.raw("EASEL_AUTH_URL"),
            Some("unix:///sockets/auth.sock")
        );
        assert_eq!(jobs.raw("EASEL_JOBS_ROLE"), Some("api"), "its own wins");
        assert_eq!(
            jobs.raw("EASEL_BRIDGE_URL"),
            None,
            "the bridge does not run"
        );
        assert_eq!(jobs.raw("EASEL_SHUTDOWN_GRACE"), Some("3s"));

        let gateway = platform.env_for(&settings, Service::Gateway);
        assert_eq!(gateway.raw("EASEL_PUBLIC_URL"), None);
        let pinned = Settings {
            pin_public_url: true,
            ..settings
        };
        let gateway = platform.env_for(&pinned, Service::Gateway);
        assert_eq!(
            gateway.raw("EASEL_PUBLIC_URL"),
            Some("http://127.0.0.1:8080")
        );
        let storage = platform.env_for(&pinned, Service::Storage);
        assert_eq!(
            storage.raw("EASEL_PUBLIC_URL"),
            Some("http://127.0.0.1:8080")
        );
    }
}
