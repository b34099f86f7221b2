//! Configuration from environment variables, validated once at start.
//!
//! An [`Env`] reads variables with defaults and collects every problem instead of stopping at
//! the first, so an operator sees all bad values at once, each named by its variable. Tests
//! build an [`Env`] from pairs; nothing here reads or writes the process environment except
//! [`Env::from_process`].

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use crate::transport::ConnectionSettings;
use crate::transport::tls::{ServiceIdentity, TlsError};

/// One invalid or missing variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The variable's name, e.g. `EASEL_GRPC_LISTEN`.
    pub variable: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Every problem found in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in the order they were found.
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({} problem", self.problems.len())?;
        if self.problems.len() != 1 {
            f.write_str("s")?;
        }
        f.write_str("):")?;
        for problem in &self.problems {
            write!(f, "\n  {}: {}", problem.variable, problem.reason)?;
        }
        Ok(())
    }
}

/// A reader of configuration variables that remembers every problem.
#[derive(Clone, Debug, Default)]
pub struct Env {
    variables: HashMap<String, String>,
    problems: Vec<ConfigProblem>,
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Env::from_pairs(std::env::vars())
    }

    /// Explicit variables, for tests and embedding.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env {
            variables: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            problems: Vec::new(),
        }
    }

    /// The raw value, if the variable is set and not empty.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
    }

    /// Records a problem with a variable (for checks that span several variables).
    pub fn problem(&mut self, name: &str, reason: impl Into<String>) {
        self.problems.push(ConfigProblem {
            variable: name.to_string(),
            reason: reason.into(),
        });
    }

    /// A string with a default.
    pub fn string(&mut self, name: &str, default: &str) -> String {
        self.raw(name).unwrap_or(default).to_string()
    }

    /// A string that may be absent.
    pub fn optional_string(&mut self, name: &str) -> Option<String> {
        self.raw(name).map(str::to_string)
    }

    /// A string that must be set; a missing one is a problem.
    pub fn required_string(&mut self, name: &str) -> String {
        match self.raw(name) {
            Some(value) => value.to_string(),
            None => {
                self.problem(name, "is required but not set");
                String::new()
            }
        }
    }

    /// Any `FromStr` value with a default.
    pub fn parse<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self
            .raw(name)
            .map(|raw| (raw.to_string(), raw.trim().parse::<T>()))
        {
            None => default,
            Some((_, Ok(value))) => value,
            Some((raw, Err(error))) => {
                self.problem(name, format!("{raw:?} is not valid: {error}"));
                default
            }
        }
    }

    /// An optional `FromStr` value.
    pub fn optional<T>(&mut self, name: &str) -> Option<T>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.raw(name)?.to_string();
        match raw.trim().parse::<T>() {
            Ok(value) => Some(value),
            Err(error) => {
                self.problem(name, format!("{raw:?} is not valid: {error}"));
                None
            }
        }
    }

    /// A whole number within `min..=max`.
    pub fn number_in<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: FromStr + PartialOrd + Copy + fmt::Display,
        T::Err: fmt::Display,
    {
        let value = self.parse(name, default);
        if value < min || value > max {
            self.problem(name, format!("{value} is outside {min}..={max}"));
            return default;
        }
        value
    }

    /// A boolean: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn boolean(&mut self, name: &str, default: bool) -> bool {
        let Some(raw) = self.raw(name).map(str::to_ascii_lowercase) else {
            return default;
        };
        match raw.trim() {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => {
                self.problem(name, format!("{other:?} is not a boolean (true or false)"));
                default
            }
        }
    }

    /// A duration like `30s`, `250ms` or `5m`.
    pub fn duration(&mut self, name: &str, default: Duration) -> Duration {
        let Some(raw) = self.raw(name).map(str::to_string) else {
            return default;
        };
        match humantime::parse_duration(raw.trim()) {
            Ok(value) => value,
            Err(error) => {
                self.problem(
                    name,
                    format!("{raw:?} is not a duration like \"30s\" or \"250ms\": {error}"),
                );
                default
            }
        }
    }

    /// A socket address like `127.0.0.1:8080`.
    pub fn socket_addr(&mut self, name: &str, default: SocketAddr) -> SocketAddr {
        self.parse(name, default)
    }

    /// A comma-separated list; empty items are dropped.
    pub fn list(&mut self, name: &str, default: &[&str]) -> Vec<String> {
        match self.raw(name) {
            None => default.iter().map(|item| item.to_string()).collect(),
            Some(raw) => raw
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(str::to_string)
                .collect(),
        }
    }

    /// A URL; `None` (and a problem) when the value does not parse.
    pub fn url(&mut self, name: &str, default: &str) -> Option<url::Url> {
        let raw = self.string(name, default);
        match url::Url::parse(&raw) {
            Ok(url) => Some(url),
            Err(error) => {
                self.problem(name, format!("is not a valid URL: {error}"));
                None
            }
        }
    }

    /// Ends reading: `Ok` when every variable was valid, otherwise all problems at once.
    pub fn finish(self) -> Result<(), ConfigError> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError {
                problems: self.problems,
            })
        }
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable, colored when a terminal (development).
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            other => Err(format!("unknown log format {other:?} (json or pretty)")),
        }
    }
}

/// Settings of telemetry, common to every service.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// The service's name in logs, spans and metrics (`service.name`).
    pub service_name: String,
    /// `EASEL_LOG_FORMAT`: `json` or `pretty` (default `json`).
    pub log_format: LogFormat,
    /// `EASEL_LOG` (or `RUST_LOG`): a tracing filter (default `info`).
    pub log_filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: OTLP/gRPC collector; spans are exported only when set.
    pub otlp_endpoint: Option<String>,
    /// `SENTRY_DSN`: errors and panics go to Sentry only when set.
    pub sentry_dsn: Option<String>,
    /// `EASEL_ENVIRONMENT`: the deployment's name in Sentry (default `development`).
    pub environment: String,
}

impl TelemetryConfig {
    /// Reads the telemetry variables.
    pub fn from_env(env: &mut Env, service_name: &str) -> Self {
        let log_filter = env
            .optional_string("EASEL_LOG")
            .or_else(|| env.optional_string("RUST_LOG"))
            .unwrap_or_else(|| "info".to_string());
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
            env.problem(
                "EASEL_LOG",
                format!("is not a valid tracing filter: {error}"),
            );
        }
        let otlp_endpoint = env.optional_string("OTEL_EXPORTER_OTLP_ENDPOINT");
        if let Some(endpoint) = &otlp_endpoint
            && url::Url::parse(endpoint).is_err()
        {
            env.problem("OTEL_EXPORTER_OTLP_ENDPOINT", "is not a valid URL");
        }
        let sentry_dsn = env.optional_string("SENTRY_DSN");
        if let Some(dsn) = &sentry_dsn
            && let Err(error) = dsn.parse::<sentry::types::Dsn>()
        {
            env.problem("SENTRY_DSN", format!("is not a valid DSN: {error}"));
        }
        TelemetryConfig {
            service_name: service_name.to_string(),
            log_format: env.parse("EASEL_LOG_FORMAT", LogFormat::Json),
            log_filter,
            otlp_endpoint,
            sentry_dsn,
            environment: env.string("EASEL_ENVIRONMENT", "development"),
        }
    }

    /// Settings for a test or an embedded service: pretty logs at `warn`, no export.
    pub fn quiet(service_name: &str) -> Self {
        TelemetryConfig {
            service_name: service_name.to_string(),
            log_format: LogFormat::Pretty,
            log_filter: "warn".to_string(),
            otlp_endpoint: None,
            sentry_dsn: None,
            environment: "test".to_string(),
        }
    }
}

/// Settings of a service's servers, common to every service.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// `EASEL_GRPC_LISTEN`: the gRPC port's address.
    pub grpc_listen: SocketAddr,
    /// `EASEL_ADMIN_LISTEN`: the HTTP admin port (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// `EASEL_SHUTDOWN_GRACE`: how long a drain may take after SIGTERM (default 20s).
    pub shutdown_grace: Duration,
    /// `EASEL_REQUEST_TIMEOUT`: the longest a unary call may take (default 30s); a shorter
    /// client `grpc-timeout` wins.
    pub request_timeout: Duration,
    /// `EASEL_MAX_CONCURRENT_REQUESTS`: calls served at once before load is shed (default 1024).
    pub max_concurrent_requests: usize,
    /// Timeouts and caps of connections, on every port of the service.
    pub connections: ConnectionSettings,
    /// `EASEL_TLS_CA`, `EASEL_TLS_CERT`, `EASEL_TLS_KEY` (PEM files, all three or none): this
    /// service's identity. When set, the gRPC port requires mutual TLS from the other services
    /// and this service's clients use it towards them.
    pub tls: Option<Arc<ServiceIdentity>>,
    /// `EASEL_TRUSTED_NETWORK`: serve internal gRPC without certificates on a non-loopback
    /// address (default false: such a service refuses to start).
    pub trusted_network: bool,
}

impl ServerConfig {
    /// Reads the server variables of an internal service with its default ports. Without
    /// certificates, a gRPC address other than loopback is refused unless the network is
    /// declared trusted.
    pub fn from_env(env: &mut Env, default_grpc: SocketAddr, default_admin: SocketAddr) -> Self {
        let config = ServerConfig::read(env, default_grpc, default_admin, INTERNAL_MAX_STREAMS);
        if let Err(reason) = config.check_exposure(config.grpc_listen.ip().is_loopback()) {
            env.problem("EASEL_GRPC_LISTEN", reason);
        }
        config
    }

    /// Whether the internal gRPC port may serve as configured: with certificates, on a local
    /// listener, or on a network declared trusted.
    pub fn check_exposure(&self, local: bool) -> Result<(), String> {
        if self.tls.is_some() || self.trusted_network || local {
            return Ok(());
        }
        Err(format!(
            "{} is not a loopback address, and internal services do not serve other hosts \
             without authenticating them: set EASEL_TLS_CA, EASEL_TLS_CERT and EASEL_TLS_KEY \
             (mutual TLS with service certificates; `easel certs generate` makes a development \
             set), or EASEL_TRUSTED_NETWORK=true if the network itself keeps other callers out",
            self.grpc_listen
        ))
    }

    /// Reads the server variables of a public port (the gateway): fewer streams per HTTP/2
    /// connection by default.
    pub fn public_from_env(
        env: &mut Env,
        default_grpc: SocketAddr,
        default_admin: SocketAddr,
    ) -> Self {
        ServerConfig::read(env, default_grpc, default_admin, PUBLIC_MAX_STREAMS)
    }

    fn read(
        env: &mut Env,
        default_grpc: SocketAddr,
        default_admin: SocketAddr,
        max_streams: u32,
    ) -> Self {
        ServerConfig {
            grpc_listen: env.socket_addr("EASEL_GRPC_LISTEN", default_grpc),
            admin_listen: env.socket_addr("EASEL_ADMIN_LISTEN", default_admin),
            shutdown_grace: env.duration("EASEL_SHUTDOWN_GRACE", Duration::from_secs(20)),
            request_timeout: env.duration("EASEL_REQUEST_TIMEOUT", Duration::from_secs(30)),
            max_concurrent_requests: env.number_in(
                "EASEL_MAX_CONCURRENT_REQUESTS",
                1024,
                1,
                1_000_000,
            ),
            connections: ConnectionSettings::from_env(env, max_streams),
            tls: read_identity(env),
            trusted_network: env.boolean("EASEL_TRUSTED_NETWORK", false),
        }
    }

    /// Loopback on ephemeral ports with short timeouts, for tests and embedding.
    pub fn ephemeral() -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        ServerConfig {
            grpc_listen: loopback,
            admin_listen: loopback,
            shutdown_grace: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            connections: ConnectionSettings::with_max_streams(INTERNAL_MAX_STREAMS),
            tls: None,
            trusted_network: false,
        }
    }
}

/// Reads `EASEL_TLS_CA`, `EASEL_TLS_CERT` and `EASEL_TLS_KEY`: all three or none.
fn read_identity(env: &mut Env) -> Option<Arc<ServiceIdentity>> {
    const NAMES: [&str; 3] = ["EASEL_TLS_CA", "EASEL_TLS_CERT", "EASEL_TLS_KEY"];
    let paths = NAMES.map(|name| env.optional_string(name));
    if paths.iter().all(Option::is_none) {
        return None;
    }
    let [Some(ca), Some(cert), Some(key)] = &paths else {
        for (name, path) in NAMES.iter().zip(&paths) {
            if path.is_none() {
                env.problem(
                    name,
                    "is required when any of EASEL_TLS_CA, EASEL_TLS_CERT, EASEL_TLS_KEY is set",
                );
            }
        }
        return None;
    };
    match ServiceIdentity::load(Path::new(ca), Path::new(cert), Path::new(key)) {
        Ok(identity) => Some(Arc::new(identity)),
        Err(error) => {
            let variable = match &error {
                TlsError::File { what, .. } if *what == "CA certificate" => "EASEL_TLS_CA",
                TlsError::File { what, .. } if *what == "certificate" => "EASEL_TLS_CERT",
                TlsError::NoServiceName => "EASEL_TLS_CERT",
                _ => "EASEL_TLS_KEY",
            };
            env.problem(variable, error.to_string());
            None
        }
    }
}

/// Streams per HTTP/2 connection on internal services: one gateway channel carries every
/// client's job watch, so this is high; the public port's default is lower.
pub const INTERNAL_MAX_STREAMS: u32 = 16_384;

/// Streams per HTTP/2 connection on a public port: one client's share.
pub const PUBLIC_MAX_STREAMS: u32 = 256;

impl ConnectionSettings {
    /// Reads the connection variables; `max_streams` is the default of
    /// `EASEL_HTTP2_MAX_CONCURRENT_STREAMS`.
    pub fn from_env(env: &mut Env, max_streams: u32) -> Self {
        let defaults = ConnectionSettings::with_max_streams(max_streams);
        let header_read_timeout =
            env.duration("EASEL_HEADER_READ_TIMEOUT", defaults.header_read_timeout);
        if header_read_timeout < Duration::from_millis(100)
            || header_read_timeout > Duration::from_secs(600)
        {
            env.problem("EASEL_HEADER_READ_TIMEOUT", "must be between 100ms and 10m");
        }
        let http2_keepalive_interval = env.duration(
            "EASEL_HTTP2_KEEPALIVE_INTERVAL",
            defaults.http2_keepalive_interval,
        );
        if http2_keepalive_interval < Duration::from_secs(1) {
            env.problem("EASEL_HTTP2_KEEPALIVE_INTERVAL", "must be at least 1s");
        }
        let http2_keepalive_timeout = env.duration(
            "EASEL_HTTP2_KEEPALIVE_TIMEOUT",
            defaults.http2_keepalive_timeout,
        );
        if http2_keepalive_timeout < Duration::from_millis(100) {
            env.problem("EASEL_HTTP2_KEEPALIVE_TIMEOUT", "must be at least 100ms");
        }
        let max_connections = env.number_in(
            "EASEL_MAX_CONNECTIONS",
            defaults.max_connections,
            1,
            10_000_000,
        );
        let max_connections_per_address = env.number_in(
            "EASEL_MAX_CONNECTIONS_PER_ADDRESS",
            defaults.max_connections_per_address,
            1,
            10_000_000,
        );
        if max_connections_per_address > max_connections {
            env.problem(
                "EASEL_MAX_CONNECTIONS_PER_ADDRESS",
                format!("{max_connections_per_address} is above EASEL_MAX_CONNECTIONS ({max_connections})"),
            );
        }
        ConnectionSettings {
            header_read_timeout,
            http2_keepalive_interval,
            http2_keepalive_timeout,
            http2_max_concurrent_streams: env.number_in(
                "EASEL_HTTP2_MAX_CONCURRENT_STREAMS",
                max_streams,
                1,
                1_000_000,
            ),
            max_connections,
            max_connections_per_address,
        }
    }
}

/// Prints the configuration error and exits with status 2: for `main` only.
pub fn exit_on_error<T>(result: Result<T, ConfigError>, service_name: &str) -> T {
    match result {
        Ok(value) => value,
        Err(error) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("{service_name}: {error}");
            }
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_when_nothing_is_set() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let server = ServerConfig::from_env(
            &mut env,
            "127.0.0.1:50051".parse().unwrap(),
            "127.0.0.1:9081".parse().unwrap(),
        );
        assert!(env.finish().is_ok());
        assert_eq!(server.grpc_listen.port(), 50051);
        assert_eq!(server.shutdown_grace, Duration::from_secs(20));
    }

    #[test]
    fn every_bad_value_is_reported_at_once_with_its_variable() {
        let mut env = Env::from_pairs([
            ("EASEL_GRPC_LISTEN", "not-an-address"),
            ("EASEL_SHUTDOWN_GRACE", "soon"),
            ("EASEL_MAX_CONCURRENT_REQUESTS", "0"),
            ("EASEL_LOG_FORMAT", "xml"),
        ]);
        let _ = ServerConfig::from_env(
            &mut env,
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
        );
        let _ = TelemetryConfig::from_env(&mut env, "test");
        let error = env.finish().unwrap_err();
        let variables: Vec<_> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(
            variables,
            [
                "EASEL_GRPC_LISTEN",
                "EASEL_SHUTDOWN_GRACE",
                "EASEL_MAX_CONCURRENT_REQUESTS",
                "EASEL_LOG_FORMAT"
            ]
        );
        let message = error.to_string();
        assert!(message.contains("EASEL_GRPC_LISTEN: \"not-an-address\" is not valid"));
        assert!(message.contains("4 problems"));
    }

    #[test]
    fn connection_limits_are_validated_and_the_public_port_gets_fewer_streams() {
        let loopback: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut env = Env::from_pairs([
            ("EASEL_HEADER_READ_TIMEOUT", "1ms"),
            ("EASEL_MAX_CONNECTIONS", "10"),
            ("EASEL_MAX_CONNECTIONS_PER_ADDRESS", "20"),
            ("EASEL_HTTP2_MAX_CONCURRENT_STREAMS", "0"),
        ]);
        let _ = ServerConfig::from_env(&mut env, loopback, loopback);
        let variables: Vec<_> = env
            .finish()
            .unwrap_err()
            .problems
            .into_iter()
            .map(|problem| problem.variable)
            .collect();
        assert_eq!(
            variables,
            [
                "EASEL_HEADER_READ_TIMEOUT",
                "EASEL_MAX_CONNECTIONS_PER_ADDRESS",
                "EASEL_HTTP2_MAX_CONCURRENT_STREAMS"
            ]
        );

        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let internal = ServerConfig::from_env(&mut env, loopback, loopback);
        let public = ServerConfig::public_from_env(&mut env, loopback, loopback);
        assert!(env.finish().is_ok());
        assert_eq!(
            internal.connections.http2_max_concurrent_streams,
            INTERNAL_MAX_STREAMS
        );
        assert_eq!(
            public.connections.http2_max_concurrent_streams,
            PUBLIC_MAX_STREAMS
        );
        assert!(internal.tls.is_none() && !internal.trusted_network);
    }

    #[test]
    fn a_missing_required_value_is_reported_with_its_variable() {
        let mut env = Env::from_pairs([("EASEL_OTHER", "x")]);
        let value = env.required_string("EASEL_DATABASE_URL");
        assert_eq!(value, "");
        let error = env.finish().unwrap_err();
        assert_eq!(error.problems[0].variable, "EASEL_DATABASE_URL");
        assert!(
            error
                .to_string()
                .contains("EASEL_DATABASE_URL: is required but not set")
        );
    }

    #[test]
    fn lists_booleans_and_ranges_parse() {
        let mut env = Env::from_pairs([("LIST", " a, b ,,c "), ("FLAG", "yes"), ("RANGE", "7")]);
        assert_eq!(env.list("LIST", &[]), ["a", "b", "c"]);
        assert!(env.boolean("FLAG", false));
        assert_eq!(env.number_in("RANGE", 1u32, 1, 10), 7);
        assert!(env.finish().is_ok());
    }
}
