//! The whole platform in one process: auth, jobs, storage, comfy-bridge and the gateway (or
//! the subset a caller names), still talking gRPC to each other so the paths are production's,
//! plus, when asked, the ComfyUI simulator under supervision.
//!
//! One assembly for every caller: `easel up` ([`Settings::embedded`]: Unix sockets under the
//! data directory, SQLite, the simulator), the benches and the platform tests
//! ([`Settings::loopback`]: TCP on loopback, PostgreSQL and Redis of their own). Each service
//! reads its configuration with the same [`easel_runtime::Env`] reader as its own binary, from
//! three layers: the variables every service shares ([`Settings::env`]), the wiring the
//! platform decides (the URLs between the services, the grace period), then the caller's
//! variables for that one service ([`Settings::service_env`]).
//!
//! Only this crate (above the services) imports more than one service; services never import
//! each other, in tests neither.

mod embedded;
mod error;
mod platform;
mod settings;
mod simulator;

pub use easel_auth::DevAccount;
pub use easel_comfy_sim::SimConfig;
pub use error::PlatformError;
pub use platform::Platform;
pub use settings::{Comfyui, DevAccountSettings, InternalPorts, Service, Settings};
