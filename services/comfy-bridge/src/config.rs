//! The bridge's own settings (`EASEL_COMFYUI_*`), read once at start.

use std::time::Duration;

use easel_runtime::config::Env;
use url::Url;

/// One ComfyUI backend as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// A short name (host:port, plus the path when there is one), unique in the pool.
    pub name: String,
    /// The base URL, e.g. `http://10.0.0.5:8188/`.
    pub url: Url,
}

impl BackendConfig {
    /// A backend named after its URL.
    pub fn from_url(url: Url) -> BackendConfig {
        let mut name = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_string(),
            _ => url.to_string(),
        };
        let path = url.path().trim_end_matches('/');
        if !path.is_empty() {
            name.push_str(path);
        }
        BackendConfig { name, url }
    }
}

/// How the pool talks to its backends.
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// `EASEL_COMFYUI_URLS`: the backends (comma-separated base URLs).
    pub backends: Vec<BackendConfig>,
    /// `EASEL_COMFYUI_HEALTH_INTERVAL`: time between `/system_stats` checks (default 5s).
    pub health_interval: Duration,
    /// `EASEL_COMFYUI_MAX_IN_FLIGHT`: runs sent to one backend and not finished (default 2, so
    /// the next prompt waits in ComfyUI's queue when the current one ends).
    pub max_in_flight: u32,
    /// `EASEL_COMFYUI_QUEUE_TIMEOUT`: how long a run waits for a backend with capacity before
    /// RESOURCE_EXHAUSTED / UNAVAILABLE (default 20s; keep it below `EASEL_REQUEST_TIMEOUT`).
    pub queue_timeout: Duration,
    /// `EASEL_COMFYUI_RUN_TIMEOUT`: a run's deadline when the request sets none (default 10m).
    pub run_timeout: Duration,
    /// `EASEL_COMFYUI_REQUEST_TIMEOUT`: one HTTP call to ComfyUI (default 10s).
    pub request_timeout: Duration,
    /// `EASEL_COMFYUI_SILENCE_TIMEOUT`: with no message for a run this long, reconcile it from
    /// `/queue` and `/history` (default 10s).
    pub silence_timeout: Duration,
    /// `EASEL_COMFYUI_BREAKER_FAILURES`: consecutive failures that open a breaker (default 3).
    pub breaker_failures: u32,
    /// `EASEL_COMFYUI_BREAKER_COOLDOWN`: how long an open breaker refuses calls before a
    /// half-open probe (default 15s).
    pub breaker_cooldown: Duration,
    /// `EASEL_COMFYUI_MODELS_TTL`: how long the checkpoint lists are cached (default 30s).
    pub models_ttl: Duration,
    /// `EASEL_DEFAULT_CHECKPOINT`: the template's checkpoint when a request names none
    /// (default: the first checkpoint the backends list).
    pub default_checkpoint: Option<String>,
    /// `EASEL_WORKFLOW_NODE_ALLOWLIST` / `EASEL_WORKFLOW_NODE_DENYLIST`: the node classes a
    /// graph may use (the same policy jobs applies at submit time; checked again here right
    /// before `POST /prompt`).
    pub workflow_policy: easel_workflow_policy::WorkflowPolicy,
}

impl BridgeConfig {
    /// Reads the `EASEL_COMFYUI_*` variables; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> BridgeConfig {
        let mut backends = Vec::new();
        for raw in env.list("EASEL_COMFYUI_URLS", &["http://127.0.0.1:8188"]) {
            match parse_backend_url(&raw) {
                Ok(url) => backends.push(BackendConfig::from_url(url)),
                Err(reason) => env.problem("EASEL_COMFYUI_URLS", format!("{raw:?}: {reason}")),
            }
        }
        if backends.is_empty() {
            env.problem("EASEL_COMFYUI_URLS", "lists no backend");
        }
        let backends = unique_names(backends);
        BridgeConfig {
            backends,
            health_interval: env
                .duration("EASEL_COMFYUI_HEALTH_INTERVAL", Duration::from_secs(5))
                .max(Duration::from_millis(10)),
            max_in_flight: env.number_in("EASEL_COMFYUI_MAX_IN_FLIGHT", 2, 1, 64),
            queue_timeout: env.duration("EASEL_COMFYUI_QUEUE_TIMEOUT", Duration::from_secs(20)),
            run_timeout: env.duration("EASEL_COMFYUI_RUN_TIMEOUT", Duration::from_secs(600)),
            request_timeout: env.duration("EASEL_COMFYUI_REQUEST_TIMEOUT", Duration::from_secs(10)),
            silence_timeout: env
                .duration("EASEL_COMFYUI_SILENCE_TIMEOUT", Duration::from_secs(10))
                .max(Duration::from_millis(10)),
            breaker_failures: env.number_in("EASEL_COMFYUI_BREAKER_FAILURES", 3, 1, 1000),
            breaker_cooldown: env
                .duration("EASEL_COMFYUI_BREAKER_COOLDOWN", Duration::from_secs(15)),
            models_ttl: env.duration("EASEL_COMFYUI_MODELS_TTL", Duration::from_secs(30)),
            default_checkpoint: env.optional_string("EASEL_DEFAULT_CHECKPOINT"),
            workflow_policy: easel_workflow_policy::WorkflowPolicy::from_env(env),
        }
    }

    /// A configuration for the given backend URLs with the defaults (for tests and embedding).
    pub fn for_urls(urls: &[String]) -> Result<BridgeConfig, String> {
        let pairs = [("EASEL_COMFYUI_URLS".to_string(), urls.join(","))];
        let mut env = Env::from_pairs(pairs);
        let config = BridgeConfig::from_env(&mut env);
        env.finish().map_err(|error| error.to_string())?;
        Ok(config)
    }
}

fn parse_backend_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|error| format!("not a URL: {error}"))?;
    if url.scheme() != "http" {
        // The WebSocket client is built without TLS: ComfyUI is reached over the cluster
        // network (put a sidecar in front of it for TLS).
        return Err("only http:// backends are supported".to_string());
    }
    if url.host_str().is_none() {
        return Err("has no host".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in backend URLs are not supported".to_string());
    }
    Ok(url)
}

/// Suffixes duplicate names (`host:port#2`) so metrics and exclusions stay unambiguous.
fn unique_names(backends: Vec<BackendConfig>) -> Vec<BackendConfig> {
    let mut seen = std::collections::HashMap::<String, u32>::new();
    backends
        .into_iter()
        .map(|mut backend| {
            let count = seen.entry(backend.name.clone()).or_insert(0);
            *count += 1;
            if *count > 1 {
                backend.name = format!("{}#{count}", backend.name);
            }
            backend
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_are_named_after_their_urls() {
        let config = BridgeConfig::for_urls(&[
            "http://10.0.0.5:8188".to_string(),
            "http://gpu-1/comfy/".to_string(),
            "http://10.0.0.5:8188/".to_string(),
        ])
        .expect("valid");
        let names: Vec<_> = config.backends.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["10.0.0.5:8188", "gpu-1:80/comfy", "10.0.0.5:8188#2"]
        );
    }

    #[test]
    fn bad_urls_are_all_reported() {
        let mut env = Env::from_pairs([
            (
                "EASEL_COMFYUI_URLS",
                "nope,https://gpu:8188,http://u:p@gpu:1",
            ),
            ("EASEL_COMFYUI_MAX_IN_FLIGHT", "0"),
        ]);
        let _ = BridgeConfig::from_env(&mut env);
        let error = env.finish().expect_err("invalid");
        let text = error.to_string();
        assert!(text.contains("not a URL"), "{text}");
        assert!(text.contains("only http://"), "{text}");
        assert!(text.contains("credentials"), "{text}");
        assert!(text.contains("EASEL_COMFYUI_MAX_IN_FLIGHT"), "{text}");
    }
}
