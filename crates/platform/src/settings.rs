//! What a platform runs, where, and on which variables.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// One of the five services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// Users, tiers, API keys, tokens.
    Auth,
    /// Artifacts and their signed links.
    Storage,
    /// The pool of ComfyUI backends.
    ComfyBridge,
    /// The job API, queue and workers.
    Jobs,
    /// The public port.
    Gateway,
}

impl Service {
    /// Every service, in the order they are started.
    pub const ALL: [Service; 5] = [
        Service::Auth,
        Service::Storage,
        Service::ComfyBridge,
        Service::Jobs,
        Service::Gateway,
    ];

    /// Its name in logs and errors (and its Unix socket's file name).
    pub fn name(self) -> &'static str {
        match self {
            Service::Auth => easel_auth::SERVICE_NAME,
            Service::Storage => easel_storage::SERVICE_NAME,
            Service::ComfyBridge => easel_comfy_bridge::SERVICE_NAME,
            Service::Jobs => easel_jobs::SERVICE_NAME,
            Service::Gateway => easel_gateway::SERVICE_NAME,
        }
    }
}

/// Where the internal services (all but the gateway) listen for gRPC.
#[derive(Clone, Debug)]
pub enum InternalPorts {
    /// Unix sockets in this directory, made owner-only (0700): no other local user can reach
    /// them and pass a forged caller.
    UnixSockets(PathBuf),
    /// Ephemeral TCP ports on loopback.
    Loopback,
}

/// The ComfyUI backends comfy-bridge uses.
#[derive(Clone, Debug)]
pub enum Comfyui {
    /// These backends, as `EASEL_COMFYUI_URLS` lists them (comma-separated base URLs).
    Backends(String),
    /// The simulator on a loopback port, supervised: if it stops while the platform runs it
    /// is restarted on the same address.
    Simulator(Box<easel_comfy_sim::SimConfig>),
}

/// The development account made before auth starts (an admin, kept across restarts). Its
/// `Debug` hides the key.
#[derive(Clone)]
pub struct DevAccountSettings {
    /// Its email.
    pub email: String,
    /// Its API key, when the caller fixes one; otherwise one is made on first start.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for DevAccountSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAccountSettings")
            .field("email", &self.email)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// What a platform runs, where, and on which variables. Its `Debug` names the variables but
/// shows no value (they hold database passwords and keys).
#[derive(Clone)]
pub struct Settings {
    /// The services to run. A service's URL reaches the others only when it runs; variables
    /// in [`Settings::service_env`] stand in for the missing ones.
    pub services: BTreeSet<Service>,
    /// The gateway's address: gRPC, gRPC-web and REST on one port.
    pub listen: SocketAddr,
    /// Where the internal services listen.
    pub internal: InternalPorts,
    /// comfy-bridge's backends.
    pub comfyui: Comfyui,
    /// Variables every service reads (for `easel up`, the process environment). The ones whose
    /// meaning differs per service or that the platform decides (listen addresses, databases,
    /// certificates) are dropped: see [`Settings::service_env`] for those.
    pub env: HashMap<String, String>,
    /// Each service's own variables, read over the shared ones and the platform's wiring.
    pub service_env: HashMap<Service, Vec<(String, String)>>,
    /// How long a drain may take (`EASEL_SHUTDOWN_GRACE` of every service).
    pub grace: Duration,
    /// Whether the gateway's links name its bound address (`EASEL_PUBLIC_URL`) rather than the
    /// address each client connected to.
    pub pin_public_url: bool,
    /// The development account, made when auth runs.
    pub dev_account: Option<DevAccountSettings>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let service_env: Vec<(Service, Vec<&str>)> = self
            .service_env
            .iter()
            .map(|(service, variables)| (*service, names(variables.iter().map(|(name, _)| name))))
            .collect();
        f.debug_struct("Settings")
            .field("services", &self.services)
            .field("listen", &self.listen)
            .field("internal", &self.internal)
            .field("comfyui", &self.comfyui)
            .field("env", &names(self.env.keys()))
            .field("service_env", &service_env)
            .field("grace", &self.grace)
            .field("pin_public_url", &self.pin_public_url)
            .field("dev_account", &self.dev_account)
            .finish()
    }
}

/// The distinct names, sorted.
fn names<'a>(variables: impl Iterator<Item = &'a String>) -> Vec<&'a str> {
    let mut names: Vec<&str> = variables.map(String::as_str).collect();
    names.sort_unstable();
    names.dedup();
    names
}

impl Settings {
    /// Every service on ephemeral loopback ports with a short grace period, for tests and
    /// benches: databases, Redis and tuning come from [`Settings::set`].
    pub fn loopback(comfyui: Comfyui) -> Settings {
        Settings {
            services: Service::ALL.into_iter().collect(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            internal: InternalPorts::Loopback,
            comfyui,
            env: HashMap::new(),
            service_env: HashMap::new(),
            grace: Duration::from_secs(3),
            pin_public_url: false,
            dev_account: None,
        }
    }

    /// Runs only `services`.
    #[must_use]
    pub fn only(mut self, services: impl IntoIterator<Item = Service>) -> Settings {
        self.services = services.into_iter().collect();
        self
    }

    /// Sets a variable every service reads.
    #[must_use]
    pub fn share(mut self, name: &str, value: impl Into<String>) -> Settings {
        self.env.insert(name.to_string(), value.into());
        self
    }

    /// Sets variables of `service`; a later value of the same name wins.
    #[must_use]
    pub fn set<N, V>(
        mut self,
        service: Service,
        variables: impl IntoIterator<Item = (N, V)>,
    ) -> Settings
    where
        N: Into<String>,
        V: Into<String>,
    {
        self.service_env.entry(service).or_default().extend(
            variables
                .into_iter()
                .map(|(name, value)| (name.into(), value.into())),
        );
        self
    }

    /// Makes the development account `email`, with `api_key` when given.
    #[must_use]
    pub fn dev_account(mut self, email: &str, api_key: Option<String>) -> Settings {
        self.dev_account = Some(DevAccountSettings {
            email: email.to_string(),
            api_key,
        });
        self
    }

    /// Whether `service` runs.
    pub fn runs(&self, service: Service) -> bool {
        self.services.contains(&service)
    }
}
