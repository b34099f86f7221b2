//! The jobs service's settings, read once from `EASEL_*` variables.

use std::str::FromStr;
use std::time::Duration;

use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::redis::RedisConfig;
use easel_workflow_policy::WorkflowPolicy;

use crate::{DEFAULT_ADMIN_LISTEN, DEFAULT_GRPC_LISTEN, SERVICE_NAME};

/// What this process does: serve the API, run jobs, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Only the gRPC API (submit, read, cancel, watch).
    Api,
    /// Only the worker pool and the reconciler (the gRPC port still serves health).
    Worker,
    /// Both (the default, and the embedded mode).
    All,
}

impl Role {
    /// Whether this process runs workers and the reconciler.
    pub fn runs_workers(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            "all" => Ok(Role::All),
            other => Err(format!("unknown role {other:?} (api, worker or all)")),
        }
    }
}

/// Settings of the queue, the workers and the reconciler.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// `EASEL_JOBS_ROLE`: `api`, `worker` or `all` (default `all`).
    pub role: Role,
    /// `EASEL_VISIBILITY_TIMEOUT`: how long a claimed entry may stay silent (no heartbeat)
    /// before another worker reclaims it; also the lease of a job a worker holds, running or
    /// waiting for a backend (default 60s).
    pub visibility_timeout: Duration,
    /// `EASEL_MAX_ATTEMPTS`: runs of a job before it fails (default 3).
    pub max_attempts: u32,
    /// `EASEL_WORKER_CONCURRENCY`: jobs run at once by this process; unset means the bridge's
    /// total capacity (ListBackends), or 4 when the bridge cannot be asked.
    pub concurrency: Option<usize>,
    /// `EASEL_RETRY_BACKOFF`: the first retry's delay, doubled per attempt, with jitter (default 2s).
    pub retry_backoff: Duration,
    /// `EASEL_RETRY_BACKOFF_MAX`: the longest retry delay (default 60s).
    pub retry_backoff_max: Duration,
    /// `EASEL_RUN_TIMEOUT`: the longest one run may take on a backend (default 15m).
    pub run_timeout: Duration,
    /// `EASEL_RECONCILE_INTERVAL`: how often the reconciler looks for lost jobs (default 15s).
    pub reconcile_interval: Duration,
    /// `EASEL_RECONCILE_GRACE`: how old a PENDING job must be before the reconciler re-enqueues
    /// it when the queue does not know it (default 30s).
    pub reconcile_grace: Duration,
    /// `EASEL_CLAIM_BLOCK`: how long one blocking queue read waits (default 2s).
    pub claim_block: Duration,
}

/// The service's configuration, from `EASEL_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports, timeouts and limits.
    pub server: ServerConfig,
    /// Logs, traces and error reports.
    pub telemetry: TelemetryConfig,
    /// `EASEL_DATABASE_URL`: PostgreSQL or SQLite (default `sqlite://./.easel/jobs.db?mode=rwc`).
    pub database_url: String,
    /// `EASEL_REDIS_URL` (or `REDIS_URL`): the queue and event fan-out; in-process when unset.
    pub redis_url: Option<String>,
    /// `EASEL_REDIS_PREFIX`: the prefix of every Redis key (default `easel:`).
    pub redis_prefix: String,
    /// `EASEL_REDIS_*`: the deadline of a Redis call (default 250ms) and the circuit
    /// breaker's settings. While Redis is down, submits are stored and answered, and the
    /// reconciler enqueues them when it is back.
    pub redis: RedisConfig,
    /// `EASEL_BRIDGE_URL`: comfy-bridge (default `http://127.0.0.1:50054`).
    pub bridge_url: String,
    /// `EASEL_STORAGE_URL`: storage (default `http://127.0.0.1:50053`).
    pub storage_url: String,
    /// `EASEL_AUTH_URL`: auth, for usage records; usage is not recorded when unset.
    pub auth_url: Option<String>,
    /// `EASEL_OUTPUT_URL_TTL`: lifetime of the signed output links in job answers (default 1h).
    pub output_url_ttl: Duration,
    /// Queue, worker and reconciler settings.
    pub worker: WorkerConfig,
    /// `EASEL_WORKFLOW_NODE_ALLOWLIST` / `EASEL_WORKFLOW_NODE_DENYLIST`: which node classes a
    /// raw workflow may use (default: every class but the deny-list of
    /// `easel_workflow_policy::DEFAULT_DENYLIST`).
    pub workflow_policy: WorkflowPolicy,
}

impl Config {
    /// Reads the configuration; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Config {
        let redis_url = env
            .optional_string("EASEL_REDIS_URL")
            .or_else(|| env.optional_string("REDIS_URL"));
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            env.problem("EASEL_REDIS_URL", "must start with redis:// or rediss://");
        }
        let bridge_url = env.string("EASEL_BRIDGE_URL", "http://127.0.0.1:50054");
        let storage_url = env.string("EASEL_STORAGE_URL", "http://127.0.0.1:50053");
        for (name, url) in [
            ("EASEL_BRIDGE_URL", &bridge_url),
            ("EASEL_STORAGE_URL", &storage_url),
        ] {
            if !(url.starts_with("http://")
                || url.starts_with("https://")
                || url.starts_with("unix:///"))
            {
                env.problem(name, "must be an http://, https:// or unix:/// URL");
            }
        }
        let visibility_timeout = env.duration("EASEL_VISIBILITY_TIMEOUT", Duration::from_secs(60));
        if visibility_timeout < Duration::from_millis(300) {
            env.problem("EASEL_VISIBILITY_TIMEOUT", "must be at least 300ms");
        }
        let concurrency = env.optional::<usize>("EASEL_WORKER_CONCURRENCY");
        if concurrency == Some(0) {
            env.problem("EASEL_WORKER_CONCURRENCY", "must be at least 1");
        }
        Config {
            server: ServerConfig::from_env(env, DEFAULT_GRPC_LISTEN, DEFAULT_ADMIN_LISTEN),
            telemetry: TelemetryConfig::from_env(env, SERVICE_NAME),
            database_url: env.string("EASEL_DATABASE_URL", "sqlite://./.easel/jobs.db?mode=rwc"),
            redis_url,
            redis_prefix: env.string("EASEL_REDIS_PREFIX", "easel:"),
            redis: RedisConfig::from_env(env, Duration::from_millis(250)),
            bridge_url,
            storage_url,
            auth_url: env.optional_string("EASEL_AUTH_URL"),
            output_url_ttl: env.duration("EASEL_OUTPUT_URL_TTL", Duration::from_secs(3600)),
            workflow_policy: WorkflowPolicy::from_env(env),
            worker: WorkerConfig {
                role: env.parse("EASEL_JOBS_ROLE", Role::All),
                visibility_timeout,
                max_attempts: env.number_in("EASEL_MAX_ATTEMPTS", 3, 1, 100),
                concurrency,
                retry_backoff: env.duration("EASEL_RETRY_BACKOFF", Duration::from_secs(2)),
                retry_backoff_max: env.duration("EASEL_RETRY_BACKOFF_MAX", Duration::from_secs(60)),
                run_timeout: env.duration("EASEL_RUN_TIMEOUT", Duration::from_secs(900)),
                reconcile_interval: env
                    .duration("EASEL_RECONCILE_INTERVAL", Duration::from_secs(15)),
                reconcile_grace: env.duration("EASEL_RECONCILE_GRACE", Duration::from_secs(30)),
                claim_block: env.duration("EASEL_CLAIM_BLOCK", Duration::from_secs(2)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_locally() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let config = Config::from_env(&mut env);
        assert!(env.finish().is_ok());
        assert_eq!(config.worker.role, Role::All);
        assert_eq!(config.redis_url, None);
        assert_eq!(config.worker.max_attempts, 3);
    }

    #[test]
    fn bad_values_are_named() {
        let mut env = Env::from_pairs([
            ("EASEL_JOBS_ROLE", "boss"),
            ("EASEL_REDIS_URL", "http://x"),
            ("EASEL_WORKER_CONCURRENCY", "0"),
            ("EASEL_MAX_ATTEMPTS", "0"),
        ]);
        let _ = Config::from_env(&mut env);
        let error = env.finish().unwrap_err().to_string();
        for name in [
            "EASEL_JOBS_ROLE",
            "EASEL_REDIS_URL",
            "EASEL_WORKER_CONCURRENCY",
            "EASEL_MAX_ATTEMPTS",
        ] {
            assert!(error.contains(name), "{error}");
        }
    }

    #[test]
    fn redis_url_falls_back_to_the_conventional_variable() {
        let mut env = Env::from_pairs([("REDIS_URL", "redis://127.0.0.1:6379")]);
        let config = Config::from_env(&mut env);
        assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
    }
}
