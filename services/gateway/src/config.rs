//! The gateway's settings, read once from `EASEL_*` variables.

use std::time::Duration;

use easel_proto::account::v1::Tier;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::redis::RedisConfig;
use url::Url;

use crate::{DEFAULT_ADMIN_LISTEN, DEFAULT_GRPC_LISTEN, SERVICE_NAME};

/// The largest request body accepted by default: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

/// The service's configuration, from `EASEL_*` variables.
#[derive(Clone, Debug)]
pub struct Config {
    /// Ports, timeouts and limits. The gRPC address (`EASEL_GRPC_LISTEN`, default
    /// `127.0.0.1:8080`) is the one public port: gRPC, gRPC-web and REST.
    pub server: ServerConfig,
    /// Logs, traces and error reports.
    pub telemetry: TelemetryConfig,
    /// Upstreams, limits and the door's settings.
    pub gateway: GatewayConfig,
}

impl Config {
    /// Reads the configuration; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Config {
        Config {
            server: ServerConfig::public_from_env(env, DEFAULT_GRPC_LISTEN, DEFAULT_ADMIN_LISTEN),
            telemetry: TelemetryConfig::from_env(env, SERVICE_NAME),
            gateway: GatewayConfig::from_env(env),
        }
    }
}

/// Requests per minute and burst of one limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateSetting {
    /// Sustained requests per minute.
    pub per_minute: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

/// Settings of the gateway beyond the common server and telemetry ones.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `EASEL_AUTH_URL`: the auth service (default `http://127.0.0.1:50051`).
    pub auth_url: String,
    /// `EASEL_JOBS_URL`: the jobs service's API (default `http://127.0.0.1:50052`).
    pub jobs_url: String,
    /// `EASEL_BRIDGE_URL`: comfy-bridge, for the model list (default `http://127.0.0.1:50054`).
    pub bridge_url: String,
    /// `EASEL_STORAGE_HTTP_URL`: storage's HTTP port, where signed download links are served
    /// (default `http://127.0.0.1:9093`). `GET /v1/artifacts/{id}` is proxied there, so one
    /// public origin serves downloads.
    pub storage_http_url: Url,
    /// `EASEL_PUBLIC_URL`: the gateway's public base URL for links in answers (`Location`,
    /// event and WebSocket URLs). Unset: the gateway's own address on the connection (right
    /// for direct local use; set this behind a proxy or load balancer). Never the request's
    /// `Host` or `X-Forwarded-Host`.
    pub public_url: Option<Url>,
    /// `EASEL_REDIS_URL` (or `REDIS_URL`): shared rate limits and key revocation broadcasts.
    /// Unset: rate limits per process and a one-second credential cache.
    pub redis_url: Option<String>,
    /// `EASEL_REDIS_PREFIX`: the prefix of every Redis key and channel (default `easel:`).
    pub redis_prefix: String,
    /// `EASEL_REDIS_*`: the deadline of a Redis call (default 100ms: every request makes one)
    /// and the circuit breaker's settings.
    pub redis: RedisConfig,
    /// `EASEL_RATE_LIMIT_FAIL_CLOSED`: while Redis is down, requests of these tiers (`free`,
    /// `pro`, `enterprise`) are refused with 503 instead of limited by this replica alone;
    /// `login` does the same for the per-address login limit. Default: none (fail open).
    pub rate_limit_fail_closed: Vec<String>,
    /// `EASEL_CORS_ORIGINS`: browser origins allowed to call cross-origin (gRPC-web and
    /// REST), comma-separated, e.g. `https://app.example.com`. Empty: none.
    pub cors_origins: Vec<String>,
    /// `EASEL_MAX_BODY_BYTES`: the largest request body (default 10 MiB); larger is 413.
    pub max_body_bytes: usize,
    /// `EASEL_UPSTREAM_TIMEOUT`: the deadline of a call to auth, jobs or the bridge when the
    /// caller sets no shorter one (default 10s).
    pub upstream_timeout: Duration,
    /// `EASEL_AUTH_CACHE_TTL`: how long an authenticated credential is remembered (default
    /// 30s with Redis, whose broadcasts evict revoked keys at once; 1s without).
    pub auth_cache_ttl: Duration,
    /// `EASEL_AUTH_CACHE_TTL_UNHEARD`: while revocation broadcasts cannot be heard (Redis
    /// down), how long an authenticated credential is remembered (default 1s, at most
    /// `EASEL_AUTH_CACHE_TTL`): the delay within which a revocation still takes effect.
    pub auth_cache_unheard_ttl: Duration,
    /// `EASEL_LOGIN_RATE_PER_MINUTE` / `EASEL_LOGIN_BURST`: logins per client IP (default
    /// 10 per minute, burst 5), on top of the per-user limits.
    pub login_rate: RateSetting,
    /// `EASEL_TRUST_FORWARDED_FOR`: take the client IP from the last `X-Forwarded-For` entry
    /// (set it behind Envoy or another proxy that appends it; default false).
    pub trust_forwarded_for: bool,
    /// `EASEL_JWKS_CACHE_TTL`: how long `/.well-known/jwks.json` is cached (default 5m).
    pub jwks_cache_ttl: Duration,
    /// `EASEL_STREAM_KEEPALIVE`: interval of SSE comments and WebSocket pings on idle job
    /// streams, so proxies keep them open (default 15s).
    pub stream_keepalive: Duration,
}

impl GatewayConfig {
    /// Reads the gateway variables; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> GatewayConfig {
        let auth_url = grpc_url(env, "EASEL_AUTH_URL", "http://127.0.0.1:50051");
        let jobs_url = grpc_url(env, "EASEL_JOBS_URL", "http://127.0.0.1:50052");
        let bridge_url = grpc_url(env, "EASEL_BRIDGE_URL", "http://127.0.0.1:50054");
        let storage_http_url = env
            .url("EASEL_STORAGE_HTTP_URL", "http://127.0.0.1:9093")
            .unwrap_or_else(|| Url::parse("http://127.0.0.1:9093").expect("a valid default URL"));
        if !matches!(storage_http_url.scheme(), "http" | "https") {
            env.problem(
                "EASEL_STORAGE_HTTP_URL",
                "must be an http:// or https:// URL",
            );
        }
        let public_url =
            env.optional_string("EASEL_PUBLIC_URL")
                .and_then(|raw| match Url::parse(&raw) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                    Ok(_) => {
                        env.problem("EASEL_PUBLIC_URL", "must be an http:// or https:// URL");
                        None
                    }
                    Err(error) => {
                        env.problem("EASEL_PUBLIC_URL", format!("is not a valid URL: {error}"));
                        None
                    }
                });
        let redis_url = env
            .optional_string("EASEL_REDIS_URL")
            .or_else(|| env.optional_string("REDIS_URL"));
        if let Some(url) = &redis_url
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            env.problem("EASEL_REDIS_URL", "must start with redis:// or rediss://");
        }
        let cors_origins = env.list("EASEL_CORS_ORIGINS", &[]);
        for origin in &cors_origins {
            if let Err(reason) = check_origin(origin) {
                env.problem("EASEL_CORS_ORIGINS", format!("{origin:?} {reason}"));
            }
        }
        let default_cache = if redis_url.is_some() {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(1)
        };
        let auth_cache_ttl = env.duration("EASEL_AUTH_CACHE_TTL", default_cache);
        if redis_url.is_none() && auth_cache_ttl > Duration::from_secs(1) {
            env.problem(
                "EASEL_AUTH_CACHE_TTL",
                "must be at most 1s without EASEL_REDIS_URL: nothing would evict a revoked key",
            );
        }
        let auth_cache_unheard_ttl = env.duration(
            "EASEL_AUTH_CACHE_TTL_UNHEARD",
            Duration::from_secs(1).min(auth_cache_ttl),
        );
        if auth_cache_unheard_ttl > auth_cache_ttl {
            env.problem(
                "EASEL_AUTH_CACHE_TTL_UNHEARD",
                "must be at most EASEL_AUTH_CACHE_TTL",
            );
        }
        let rate_limit_fail_closed: Vec<String> = env
            .list("EASEL_RATE_LIMIT_FAIL_CLOSED", &[])
            .into_iter()
            .map(|name| name.trim().to_ascii_lowercase())
            .collect();
        for name in &rate_limit_fail_closed {
            if !matches!(name.as_str(), "free" | "pro" | "enterprise" | "login") {
                env.problem(
                    "EASEL_RATE_LIMIT_FAIL_CLOSED",
                    format!("{name:?} is not one of free, pro, enterprise, login"),
                );
            }
        }
        let redis = RedisConfig::from_env(env, Duration::from_millis(100));
        let upstream_timeout = env.duration("EASEL_UPSTREAM_TIMEOUT", Duration::from_secs(10));
        if upstream_timeout.is_zero() {
            env.problem("EASEL_UPSTREAM_TIMEOUT", "must be longer than zero");
        }
        let stream_keepalive = env.duration("EASEL_STREAM_KEEPALIVE", Duration::from_secs(15));
        if stream_keepalive < Duration::from_millis(100) {
            env.problem("EASEL_STREAM_KEEPALIVE", "must be at least 100ms");
        }
        GatewayConfig {
            auth_url,
            jobs_url,
            bridge_url,
            storage_http_url,
            public_url,
            redis_url,
            redis_prefix: env.string("EASEL_REDIS_PREFIX", "easel:"),
            redis,
            rate_limit_fail_closed,
            cors_origins,
            max_body_bytes: env.number_in(
                "EASEL_MAX_BODY_BYTES",
                DEFAULT_MAX_BODY_BYTES,
                1024,
                1024 * 1024 * 1024,
            ),
            upstream_timeout,
            auth_cache_ttl,
            auth_cache_unheard_ttl,
            login_rate: RateSetting {
                per_minute: env.number_in("EASEL_LOGIN_RATE_PER_MINUTE", 10, 1, 1_000_000),
                burst: env.number_in("EASEL_LOGIN_BURST", 5, 1, 1_000_000),
            },
            trust_forwarded_for: env.boolean("EASEL_TRUST_FORWARDED_FOR", false),
            jwks_cache_ttl: env.duration("EASEL_JWKS_CACHE_TTL", Duration::from_secs(300)),
            stream_keepalive,
        }
    }
}

impl GatewayConfig {
    /// Whether requests of `tier` are refused (rather than limited locally) while Redis is down.
    pub fn fails_closed(&self, tier: Tier) -> bool {
        let name = match tier {
            Tier::Free => "free",
            Tier::Pro => "pro",
            Tier::Enterprise => "enterprise",
            Tier::Unspecified => return false,
        };
        self.rate_limit_fail_closed
            .iter()
            .any(|closed| closed == name)
    }

    /// Whether logins are refused (rather than limited locally) while Redis is down.
    pub fn login_fails_closed(&self) -> bool {
        self.rate_limit_fail_closed
            .iter()
            .any(|closed| closed == "login")
    }
}

/// An upstream gRPC URL: `http://`, `https://` or `unix:///path`.
fn grpc_url(env: &mut Env, name: &str, default: &str) -> String {
    let url = env.string(name, default);
    match Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
        _ if url.starts_with("unix:///") => {}
        _ => env.problem(name, "must be an http://, https:// or unix:/// URL"),
    }
    url
}

/// Whether `origin` is a browser origin: scheme, host and optional port, nothing else.
fn check_origin(origin: &str) -> Result<(), &'static str> {
    if origin == "*" {
        return Err("is not allowed: list the origins explicitly");
    }
    let url = Url::parse(origin).map_err(|_| "is not an origin like https://app.example.com")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("is not an origin like https://app.example.com");
    }
    if url.path() != "/" || url.query().is_some() || origin.ends_with('/') {
        return Err("must not have a path (an origin is scheme://host[:port])");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_locally() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let config = Config::from_env(&mut env);
        assert!(env.finish().is_ok());
        assert_eq!(config.server.grpc_listen.port(), 8080);
        assert_eq!(config.gateway.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(config.gateway.auth_cache_ttl, Duration::from_secs(1));
        assert!(config.gateway.cors_origins.is_empty());
        assert_eq!(
            config.gateway.redis.command_timeout,
            Duration::from_millis(100)
        );
        assert_eq!(
            config.gateway.auth_cache_unheard_ttl,
            Duration::from_secs(1)
        );
        assert!(!config.gateway.fails_closed(Tier::Free));
        assert!(!config.gateway.login_fails_closed());
    }

    #[test]
    fn tiers_can_fail_closed_while_redis_is_down() {
        let mut env = Env::from_pairs([
            ("EASEL_RATE_LIMIT_FAIL_CLOSED", "Free, login"),
            ("EASEL_REDIS_URL", "redis://127.0.0.1:6379"),
            ("EASEL_AUTH_CACHE_TTL", "30s"),
            ("EASEL_AUTH_CACHE_TTL_UNHEARD", "5s"),
        ]);
        let config = Config::from_env(&mut env);
        assert!(env.finish().is_ok());
        assert!(config.gateway.fails_closed(Tier::Free));
        assert!(!config.gateway.fails_closed(Tier::Pro));
        assert!(config.gateway.login_fails_closed());
        assert_eq!(
            config.gateway.auth_cache_unheard_ttl,
            Duration::from_secs(5)
        );

        let mut env = Env::from_pairs([
            ("EASEL_RATE_LIMIT_FAIL_CLOSED", "gold"),
            ("EASEL_AUTH_CACHE_TTL_UNHEARD", "2s"),
            ("EASEL_REDIS_COMMAND_TIMEOUT", "0ms"),
        ]);
        let _ = Config::from_env(&mut env);
        let message = env.finish().unwrap_err().to_string();
        for name in [
            "EASEL_RATE_LIMIT_FAIL_CLOSED",
            "EASEL_AUTH_CACHE_TTL_UNHEARD",
            "EASEL_REDIS_COMMAND_TIMEOUT",
        ] {
            assert!(message.contains(name), "{name} missing from {message}");
        }
    }

    #[test]
    fn every_bad_value_is_named() {
        let mut env = Env::from_pairs([
            ("EASEL_JOBS_URL", "ftp://jobs"),
            (
                "EASEL_CORS_ORIGINS",
                "https://ok.example.com,*,https://x.example.com/path",
            ),
            ("EASEL_MAX_BODY_BYTES", "12"),
            ("EASEL_REDIS_URL", "http://redis"),
            ("EASEL_PUBLIC_URL", "not a url"),
        ]);
        let _ = Config::from_env(&mut env);
        let message = env.finish().unwrap_err().to_string();
        for name in [
            "EASEL_JOBS_URL",
            "EASEL_CORS_ORIGINS: \"*\"",
            "EASEL_CORS_ORIGINS: \"https://x.example.com/path\"",
            "EASEL_MAX_BODY_BYTES",
            "EASEL_REDIS_URL",
            "EASEL_PUBLIC_URL",
        ] {
            assert!(message.contains(name), "{name} missing from {message}");
        }
        assert!(!message.contains("ok.example.com"));
    }

    #[test]
    fn a_long_credential_cache_needs_redis() {
        let mut env = Env::from_pairs([("EASEL_AUTH_CACHE_TTL", "30s")]);
        let _ = Config::from_env(&mut env);
        assert!(
            env.finish()
                .unwrap_err()
                .to_string()
                .contains("EASEL_AUTH_CACHE_TTL")
        );

        let mut env = Env::from_pairs([
            ("EASEL_AUTH_CACHE_TTL", "30s"),
            ("EASEL_REDIS_URL", "redis://127.0.0.1:6379"),
        ]);
        let config = Config::from_env(&mut env);
        assert!(env.finish().is_ok());
        assert_eq!(config.gateway.auth_cache_ttl, Duration::from_secs(30));
    }
}
