//! Redis with a deadline on every call and a circuit breaker in front, so a Redis that is down
//! or hung costs callers a bounded wait instead of the connection manager's reconnect backoff.
//!
//! [`Redis`] wraps one `redis::aio::ConnectionManager` (a multiplexed connection that
//! reconnects by itself). Every call made through [`Redis::run`]:
//!
//! - fails at once while the breaker is open (Redis known down), so the caller can take its
//!   degraded path without waiting;
//! - otherwise has [`RedisConfig::command_timeout`] as its deadline, waiting for a reconnect
//!   included;
//! - is tried a second time, within the same deadline, when it failed on a connection Redis had
//!   already dropped (Redis restarted since the last call): the manager has started a fresh
//!   connection by then, so the first call after a restart does not fail;
//! - counts as a failure for the breaker only when Redis did not answer (I/O errors, timeouts,
//!   `LOADING`); an error answer (a script error, a wrong type) is an answer.
//!
//! While the breaker is open, a background task probes Redis (`PING`) once per cool-down; its
//! first answer closes the breaker, with or without traffic. No caller ever waits on a probe.
//!
//! A breaker written here rather than `tower-resilience`'s layer: the calls are of many shapes
//! (Lua scripts, pipelines, single commands with typed replies), not one request/response
//! service, and the probe must not be a caller's request.

mod breaker;

use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, ServerErrorKind};

use tokio::sync::watch;

pub use self::breaker::{Breaker, BreakerState};
use crate::config::Env;
use crate::error::Error;

/// Deadlines and breaker settings of a process's Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// `EASEL_REDIS_COMMAND_TIMEOUT`: the deadline of one call (waiting for a connection
    /// included).
    pub command_timeout: Duration,
    /// `EASEL_REDIS_CONNECT_TIMEOUT` (default 1s): the deadline of opening a connection.
    pub connect_timeout: Duration,
    /// `EASEL_REDIS_BREAKER_FAILURES` (default 3): consecutive failures that open the breaker.
    pub breaker_failures: u32,
    /// `EASEL_REDIS_BREAKER_COOLDOWN` (default 1s): how often an open breaker probes Redis.
    pub breaker_cooldown: Duration,
}

impl RedisConfig {
    /// Defaults with the given per-call deadline.
    pub fn new(command_timeout: Duration) -> RedisConfig {
        RedisConfig {
            command_timeout,
            connect_timeout: Duration::from_secs(1),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
        }
    }

    /// Reads `EASEL_REDIS_COMMAND_TIMEOUT` (default `default_command_timeout`, which each
    /// service picks for its hot path), `EASEL_REDIS_CONNECT_TIMEOUT`,
    /// `EASEL_REDIS_BREAKER_FAILURES` and `EASEL_REDIS_BREAKER_COOLDOWN`.
    pub fn from_env(env: &mut Env, default_command_timeout: Duration) -> RedisConfig {
        let defaults = RedisConfig::new(default_command_timeout);
        let bounded = |env: &mut Env, name: &str, default: Duration| {
            let value = env.duration(name, default);
            if value < Duration::from_millis(1) || value > Duration::from_secs(60) {
                env.problem(name, "must be between 1ms and 60s");
                return default;
            }
            value
        };
        let command_timeout = bounded(env, "EASEL_REDIS_COMMAND_TIMEOUT", defaults.command_timeout);
        let connect_timeout = bounded(env, "EASEL_REDIS_CONNECT_TIMEOUT", defaults.connect_timeout);
        let breaker_cooldown = bounded(
            env,
            "EASEL_REDIS_BREAKER_COOLDOWN",
            defaults.breaker_cooldown,
        );
        RedisConfig {
            command_timeout,
            connect_timeout,
            breaker_failures: env.number_in(
                "EASEL_REDIS_BREAKER_FAILURES",
                defaults.breaker_failures,
                1,
                1000,
            ),
            breaker_cooldown,
        }
    }
}

/// Why a call through [`Redis`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The breaker is open: Redis is known to be down, nothing was sent.
    #[error("redis is unavailable (circuit open)")]
    Open,
    /// No answer within the deadline.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis (or the connection to it) failed.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
}

impl RedisError {
    /// Whether Redis could not be reached (as opposed to an error answer from it).
    pub fn is_unavailable(&self) -> bool {
        match self {
            RedisError::Open | RedisError::Timeout(_) => true,
            RedisError::Redis(error) => unreachable(error),
        }
    }
}

impl From<RedisError> for Error {
    fn from(error: RedisError) -> Error {
        Error::unavailable("a backing store is unavailable, retry later")
            .with_retry_after(Duration::from_secs(1))
            .with_source(error)
    }
}

/// Whether an error means Redis did not answer (counts against the breaker).
fn unreachable(error: &::redis::RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
            )
        )
}

/// Whether a call failed on a connection that was already gone, so a second try on the
/// manager's fresh connection may work.
fn dropped(error: &::redis::RedisError) -> bool {
    !error.is_timeout() && (error.is_connection_dropped() || error.is_unrecoverable_error())
}

/// A process's Redis: one self-reconnecting multiplexed connection behind deadlines and a
/// circuit breaker; cheap to clone.
#[derive(Clone)]
pub struct Redis {
    inner: Arc<Inner>,
}

struct Inner {
    /// Who uses it, for logs and metrics (`gateway`, `auth`, `jobs`).
    name: &'static str,
    client: ::redis::Client,
    manager: ConnectionManager,
    config: RedisConfig,
    breaker: Mutex<Breaker>,
    /// The breaker's state, for those who wait for Redis to come back.
    state: watch::Sender<BreakerState>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("name", &self.inner.name)
            .field("config", &self.inner.config)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A handle on `url`; connects on first use, so a process starts while Redis is down.
    /// Fails only on an invalid URL. Call within a Tokio runtime.
    pub fn open(
        name: &'static str,
        url: &str,
        config: RedisConfig,
    ) -> Result<Redis, ::redis::RedisError> {
        let client = ::redis::Client::open(url)?;
        // One connection attempt per reconnect, no backoff: every call waiting for the
        // connection waits for that attempt, so a backoff between attempts would be added to
        // each of them (20-40 ms for all the calls in flight when Redis dies, while a refused
        // connection answers in microseconds). Our deadline and breaker decide how long
        // callers wait; the next call (or the breaker's probe) tries again.
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.connect_timeout))
            .set_response_timeout(Some(config.command_timeout))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), manager_config)?;
        metrics::gauge!("easel_redis_breaker_state", "client" => name)
            .set(BreakerState::Closed.gauge());
        Ok(Redis {
            inner: Arc::new(Inner {
                name,
                client,
                manager,
                config,
                breaker: Mutex::new(Breaker::new(
                    config.breaker_failures,
                    config.breaker_cooldown,
                )),
                state: watch::channel(BreakerState::Closed).0,
            }),
        })
    }

    /// [`Redis::open`], then one `PING` so a misconfigured address shows in the logs at start;
    /// an unreachable Redis is logged, not fatal (the process runs degraded until it answers).
    pub async fn connect(
        name: &'static str,
        url: &str,
        config: RedisConfig,
    ) -> Result<Redis, ::redis::RedisError> {
        let redis = Redis::open(name, url, config)?;
        let deadline = config.connect_timeout + config.command_timeout;
        match redis.ping_within(deadline).await {
            Ok(()) => tracing::info!(client = name, "redis connected"),
            Err(error) => {
                tracing::warn!(client = name, %error, "redis unreachable at start; running degraded until it answers");
            }
        }
        Ok(redis)
    }

    /// The settings.
    pub fn config(&self) -> &RedisConfig {
        &self.inner.config
    }

    /// The client, for connections the manager cannot serve (pub/sub, blocking reads).
    pub fn client(&self) -> &::redis::Client {
        &self.inner.client
    }

    /// The breaker's state now.
    pub fn state(&self) -> BreakerState {
        self.lock().state()
    }

    /// Whether calls go out (the breaker is closed).
    pub fn is_available(&self) -> bool {
        self.state() == BreakerState::Closed
    }

    /// The breaker's state as it changes (to wait until Redis is back).
    pub fn watch_state(&self) -> watch::Receiver<BreakerState> {
        self.inner.state.subscribe()
    }

    /// Runs `op` on the shared connection with the configured deadline; see the module docs.
    pub async fn run<T, F, Fut>(&self, op: F) -> Result<T, RedisError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        self.run_within(self.inner.config.command_timeout, op).await
    }

    /// [`Redis::run`] with another deadline (for calls known to take longer).
    pub async fn run_within<T, F, Fut>(&self, deadline: Duration, op: F) -> Result<T, RedisError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        self.admit()?;
        let outcome = self.attempt(deadline, op).await;
        match &outcome {
            Ok(_) => self.succeeded(),
            Err(error) if error.is_unavailable() => self.failed(error),
            // An error answer: Redis is up.
            Err(_) => self.succeeded(),
        }
        outcome
    }

    /// Fails at once unless the breaker is closed (for connections made outside
    /// [`Redis::run`], such as blocking reads).
    pub fn admit(&self) -> Result<(), RedisError> {
        if self.lock().admits() {
            return Ok(());
        }
        metrics::counter!("easel_redis_calls_rejected_total", "client" => self.inner.name)
            .increment(1);
        Err(RedisError::Open)
    }

    /// Whether Redis answers a `PING` within the connect and command deadlines (readiness).
    /// Goes around the breaker and feeds it.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let deadline = self.inner.config.connect_timeout + self.inner.config.command_timeout;
        let outcome = self.ping_within(deadline).await;
        match &outcome {
            Ok(()) => self.succeeded(),
            Err(error) => self.failed(error),
        }
        outcome
    }

    async fn ping_within(&self, deadline: Duration) -> Result<(), RedisError> {
        self.attempt(deadline, |mut connection| async move {
            ::redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Probes Redis once per cool-down while the breaker is open, until it closes (or every
    /// handle is gone).
    async fn probe_until_closed(inner: Weak<Inner>, cooldown: Duration) {
        loop {
            tokio::time::sleep(cooldown).await;
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let redis = Redis { inner };
            let probing = redis.lock().begin_probe(Instant::now());
            if probing {
                redis.record_state(BreakerState::HalfOpen);
                let deadline =
                    redis.inner.config.connect_timeout + redis.inner.config.command_timeout;
                match redis.ping_within(deadline).await {
                    Ok(()) => redis.succeeded(),
                    Err(error) => {
                        tracing::debug!(client = redis.inner.name, %error, "redis probe failed");
                        redis.failed(&error);
                    }
                }
            }
            if redis.state() == BreakerState::Closed {
                return;
            }
        }
    }

    /// One call with a deadline, tried again on a connection that was already dropped.
    async fn attempt<T, F, Fut>(&self, deadline: Duration, mut op: F) -> Result<T, RedisError>
    where
        F: FnMut(ConnectionManager) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        let manager = &self.inner.manager;
        let call = async {
            match op(manager.clone()).await {
                Err(error) if dropped(&error) => {
                    tracing::debug!(client = self.inner.name, %error, "redis connection was dropped; trying once more");
                    op(manager.clone()).await
                }
                outcome => outcome,
            }
        };
        match tokio::time::timeout(deadline, call).await {
            Ok(outcome) => outcome.map_err(RedisError::from),
            Err(_) => Err(RedisError::Timeout(deadline)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.inner
            .breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn succeeded(&self) {
        let changed = self.lock().success();
        if let Some(state) = changed {
            tracing::info!(
                client = self.inner.name,
                "redis answers again; circuit closed"
            );
            self.record_state(state);
        }
    }

    fn failed(&self, error: &RedisError) {
        metrics::counter!("easel_redis_call_failures_total", "client" => self.inner.name)
            .increment(1);
        let changed = self.lock().failure(Instant::now());
        if let Some(state) = changed {
            let was_closed = *self.inner.state.borrow() == BreakerState::Closed;
            if state == BreakerState::Open && was_closed {
                tracing::warn!(
                    client = self.inner.name,
                    %error,
                    cooldown = ?self.inner.config.breaker_cooldown,
                    "redis unreachable; circuit open, calls fail fast"
                );
                tokio::spawn(Redis::probe_until_closed(
                    Arc::downgrade(&self.inner),
                    self.inner.config.breaker_cooldown,
                ));
            }
            self.record_state(state);
        }
    }

    fn record_state(&self, state: BreakerState) {
        self.inner.state.send_replace(state);
        metrics::gauge!("easel_redis_breaker_state", "client" => self.inner.name)
            .set(state.gauge());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_and_bad_values_are_reported() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let config = RedisConfig::from_env(&mut env, Duration::from_millis(100));
        assert!(env.finish().is_ok());
        assert_eq!(config, RedisConfig::new(Duration::from_millis(100)));
        assert_eq!(config.breaker_failures, 3);

        let mut env = Env::from_pairs([
            ("EASEL_REDIS_COMMAND_TIMEOUT", "0s"),
            ("EASEL_REDIS_BREAKER_FAILURES", "0"),
            ("EASEL_REDIS_BREAKER_COOLDOWN", "2m"),
        ]);
        let _ = RedisConfig::from_env(&mut env, Duration::from_millis(100));
        let message = env.finish().unwrap_err().to_string();
        for name in [
            "EASEL_REDIS_COMMAND_TIMEOUT",
            "EASEL_REDIS_BREAKER_FAILURES",
            "EASEL_REDIS_BREAKER_COOLDOWN",
        ] {
            assert!(message.contains(name), "{name} missing from {message}");
        }
    }

    fn closed_port() -> u16 {
        // Bound then dropped: nothing listens there for the test's short life.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    }

    #[tokio::test]
    async fn an_unreachable_redis_fails_fast_once_the_breaker_opens() {
        let mut config = RedisConfig::new(Duration::from_millis(200));
        config.breaker_cooldown = Duration::from_secs(3600);
        let redis = Redis::open(
            "test",
            &format!("redis://127.0.0.1:{}", closed_port()),
            config,
        )
        .unwrap();
        let ping = |redis: Redis| async move {
            redis
                .run(|mut connection| async move {
                    ::redis::cmd("PING")
                        .query_async::<String>(&mut connection)
                        .await
                })
                .await
        };
        for _ in 0..3 {
            let error = ping(redis.clone()).await.unwrap_err();
            assert!(error.is_unavailable(), "{error}");
            assert!(!matches!(error, RedisError::Open));
        }
        assert_eq!(redis.state(), BreakerState::Open);
        let error = ping(redis.clone()).await.unwrap_err();
        assert!(matches!(error, RedisError::Open), "{error}");
        let error: Error = error.into();
        assert_eq!(error.code(), crate::ErrorCode::Unavailable);
    }

    #[test]
    fn error_answers_are_not_outages() {
        let answer = ::redis::RedisError::from((ErrorKind::UnexpectedReturnType, "wrong type"));
        assert!(!RedisError::Redis(answer).is_unavailable());
        let io =
            ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(dropped(&io));
        assert!(RedisError::Redis(io).is_unavailable());
        assert!(RedisError::Timeout(Duration::from_millis(1)).is_unavailable());
    }
}
