//! Rate limiting by the generic cell rate algorithm (GCRA): in Redis, atomic in one Lua script
//! so a limit holds across any number of replicas, or in-process with `governor` for the
//! embedded mode.
//!
//! A [`RateQuota`] of `per_minute` and `burst` lets `burst` requests through at once, then one
//! every `60 s / per_minute`: a caller that waited long enough has `burst` requests again.
//!
//! When Redis cannot answer (down, hung, or its circuit breaker open, see
//! [`easel_runtime::redis`]), a check takes at most the Redis call's deadline — nothing while
//! the breaker is open — and then does what the caller asked for ([`WhenUnavailable`]):
//! count the request against the same quota in this process (`governor`), so one replica still
//! limits, or refuse it with `UNAVAILABLE`.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use easel_proto::account::v1::TierLimits;
use easel_runtime::error::{Error, ErrorCode, reason};
use easel_runtime::redis::Redis;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use http::{HeaderMap, HeaderValue};

/// GCRA in microseconds of Redis server time, so every replica shares one clock.
///
/// KEYS[1]: the limiter's key. ARGV[1]: emission interval (µs between two requests at the
/// sustained rate). ARGV[2]: burst (requests allowed at once).
/// Returns `{allowed (0/1), remaining, retry_after_us, reset_after_us}`.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local tolerance = interval * burst
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local reset_after = new_tat - now
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(reset_after / 1000) + 1)
local remaining = math.floor((tolerance - reset_after) / interval)
return {1, remaining, 0, reset_after}
";

/// How often the in-process limiter forgets keys that are back to full capacity.
const HOUSEKEEPING_EVERY: u64 = 4096;

/// A rate: `per_minute` sustained, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateQuota {
    /// Requests per minute at the sustained rate (at least 1 is used).
    pub per_minute: u32,
    /// Requests allowed at once, the bucket's size (at least 1 is used).
    pub burst: u32,
}

impl RateQuota {
    /// The request rate of a tier.
    pub fn from_limits(limits: &TierLimits) -> RateQuota {
        RateQuota {
            per_minute: limits.requests_per_minute,
            burst: limits.burst,
        }
    }

    fn normalized(self) -> RateQuota {
        RateQuota {
            per_minute: self.per_minute.max(1),
            burst: self.burst.max(1),
        }
    }

    /// Microseconds between two requests at the sustained rate.
    fn interval_micros(self) -> u64 {
        (60_000_000 / u64::from(self.per_minute.max(1))).max(1)
    }
}

/// The answer of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateDecision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The quota's burst: requests allowed at once.
    pub limit: u32,
    /// Requests still allowed at once after this one.
    pub remaining: u32,
    /// When the caller is back to its full burst.
    pub reset_after: Duration,
    /// When refused: how long until a request would be allowed.
    pub retry_after: Option<Duration>,
}

fn ceil_seconds(duration: Duration) -> u64 {
    let seconds = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        seconds + 1
    } else {
        seconds
    }
}

impl RateDecision {
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds), and `Retry-After`
    /// (seconds, at least 1) when refused.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert(
            "ratelimit-reset",
            HeaderValue::from(ceil_seconds(self.reset_after)),
        );
        if let Some(retry_after) = self.retry_after.filter(|_| !self.allowed) {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(ceil_seconds(retry_after).max(1)),
            );
        }
        headers
    }

    /// `RESOURCE_EXHAUSTED` with reason `RATE_LIMITED` and the retry delay (`RetryInfo` over
    /// gRPC, 429 with `Retry-After` over REST).
    pub fn to_error(&self) -> Error {
        let retry_after = self.retry_after.unwrap_or(self.reset_after);
        Error::new(
            ErrorCode::ResourceExhausted,
            format!(
                "rate limit exceeded ({} requests at once); retry in {} s",
                self.limit,
                ceil_seconds(retry_after).max(1)
            ),
        )
        .with_reason(reason::RATE_LIMITED)
        .with_metadata("limit", self.limit.to_string())
        .with_retry_after(retry_after)
    }
}

/// What a check does when the shared limiter (Redis) cannot answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum WhenUnavailable {
    /// Fail open to this process's own limiter with the same quota: the API stays available
    /// and one replica still limits (N replicas let up to N× the quota through).
    #[default]
    LimitLocally,
    /// Fail closed: refuse with `UNAVAILABLE` (and `Retry-After`).
    Refuse,
}

impl WhenUnavailable {
    /// `open` (the default) or `closed`.
    pub fn from_name(name: &str) -> Option<WhenUnavailable> {
        match name.trim().to_ascii_lowercase().as_str() {
            "open" => Some(WhenUnavailable::LimitLocally),
            "closed" => Some(WhenUnavailable::Refuse),
            _ => None,
        }
    }
}

/// A rate limiter keyed by any string (a user id, `login:ip:…`); cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    backend: Arc<Backend>,
}

enum Backend {
    Redis {
        redis: Redis,
        prefix: String,
        script: redis::Script,
        /// Counts requests while Redis cannot answer.
        fallback: InProcess,
    },
    InProcess(InProcess),
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.backend.as_ref() {
            Backend::Redis { prefix, .. } => f
                .debug_struct("RateLimiter::Redis")
                .field("prefix", prefix)
                .finish(),
            Backend::InProcess(_) => f.write_str("RateLimiter::InProcess"),
        }
    }
}

type KeyedLimiter = governor::RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    DefaultClock,
    StateInformationMiddleware,
>;

struct InProcess {
    /// One governor limiter per distinct quota (there are as many as tiers).
    limiters: Mutex<HashMap<RateQuota, Arc<KeyedLimiter>>>,
    checks: AtomicU64,
}

impl InProcess {
    fn limiter(&self, quota: RateQuota) -> Arc<KeyedLimiter> {
        let mut limiters = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiters
            .entry(quota)
            .or_insert_with(|| {
                let burst = NonZeroU32::new(quota.burst).unwrap_or(NonZeroU32::MIN);
                let governor_quota =
                    governor::Quota::with_period(Duration::from_micros(quota.interval_micros()))
                        .unwrap_or_else(|| governor::Quota::per_minute(NonZeroU32::MIN))
                        .allow_burst(burst);
                Arc::new(governor::RateLimiter::keyed(governor_quota).with_middleware())
            })
            .clone()
    }

    fn housekeeping(&self) {
        let limiters: Vec<_> = self
            .limiters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for limiter in limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    fn check(&self, key: &str, quota: RateQuota) -> RateDecision {
        if self.checks.fetch_add(1, Ordering::Relaxed) % HOUSEKEEPING_EVERY
            == HOUSEKEEPING_EVERY - 1
        {
            self.housekeeping();
        }
        let limiter = self.limiter(quota);
        let interval = Duration::from_micros(quota.interval_micros());
        match limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity().min(quota.burst);
                RateDecision {
                    allowed: true,
                    limit: quota.burst,
                    remaining,
                    reset_after: interval * (quota.burst - remaining),
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                RateDecision {
                    allowed: false,
                    limit: quota.burst,
                    remaining: 0,
                    reset_after: wait + interval * (quota.burst - 1),
                    retry_after: Some(wait),
                }
            }
        }
    }
}

fn micros(value: i64) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

impl InProcess {
    fn new() -> InProcess {
        InProcess {
            limiters: Mutex::new(HashMap::new()),
            checks: AtomicU64::new(0),
        }
    }
}

impl RateLimiter {
    /// A limiter shared by every process using the same Redis and `prefix`: keys are
    /// `{prefix}ratelimit:{key}`, updated atomically by one Lua script on Redis' clock.
    pub fn redis(redis: Redis, prefix: impl Into<String>) -> Self {
        RateLimiter {
            backend: Arc::new(Backend::Redis {
                redis,
                prefix: prefix.into(),
                script: redis::Script::new(GCRA_SCRIPT),
                fallback: InProcess::new(),
            }),
        }
    }

    /// A limiter in this process only (embedded mode): N replicas would let N× through.
    pub fn in_process() -> Self {
        RateLimiter {
            backend: Arc::new(Backend::InProcess(InProcess::new())),
        }
    }

    /// Counts one request for `key` against `quota`; while Redis cannot answer, counts it in
    /// this process instead ([`WhenUnavailable::LimitLocally`]).
    pub async fn check(&self, key: &str, quota: RateQuota) -> Result<RateDecision, Error> {
        self.check_or(key, quota, WhenUnavailable::LimitLocally)
            .await
    }

    /// Counts one request for `key` against `quota`; `when_unavailable` says what happens
    /// while Redis cannot answer. `UNAVAILABLE` only when refusing then, or when Redis answers
    /// nonsense.
    pub async fn check_or(
        &self,
        key: &str,
        quota: RateQuota,
        when_unavailable: WhenUnavailable,
    ) -> Result<RateDecision, Error> {
        let quota = quota.normalized();
        match self.backend.as_ref() {
            Backend::InProcess(limiter) => Ok(limiter.check(key, quota)),
            Backend::Redis {
                redis,
                prefix,
                script,
                fallback,
            } => {
                let redis_key = &format!("{prefix}ratelimit:{key}");
                let answer = redis
                    .run(|mut connection| async move {
                        script
                            .key(redis_key)
                            .arg(quota.interval_micros())
                            .arg(quota.burst)
                            .invoke_async::<(i64, i64, i64, i64)>(&mut connection)
                            .await
                    })
                    .await;
                match answer {
                    Ok((allowed, remaining, retry_after, reset_after)) => {
                        let allowed = allowed == 1;
                        Ok(RateDecision {
                            allowed,
                            limit: quota.burst,
                            remaining: u32::try_from(remaining.max(0))
                                .unwrap_or(u32::MAX)
                                .min(quota.burst),
                            reset_after: micros(reset_after),
                            retry_after: (!allowed).then(|| micros(retry_after)),
                        })
                    }
                    Err(error) if error.is_unavailable() => {
                        metrics::counter!(
                            "easel_rate_limit_degraded_total",
                            "fallback" => match when_unavailable {
                                WhenUnavailable::LimitLocally => "local",
                                WhenUnavailable::Refuse => "refuse",
                            }
                        )
                        .increment(1);
                        match when_unavailable {
                            WhenUnavailable::LimitLocally => Ok(fallback.check(key, quota)),
                            WhenUnavailable::Refuse => Err(Error::unavailable(
                                "the rate limiter is unavailable, retry later",
                            )
                            .with_retry_after(Duration::from_secs(1))
                            .with_source(error)),
                        }
                    }
                    Err(error) => Err(Error::unavailable(
                        "the rate limiter is unavailable, retry later",
                    )
                    .with_source(error)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(per_minute: u32, burst: u32) -> RateQuota {
        RateQuota { per_minute, burst }
    }

    #[tokio::test]
    async fn the_in_process_limiter_lets_the_burst_through_then_refuses() {
        let limiter = RateLimiter::in_process();
        let quota = quota(60, 5);
        for expected_remaining in (0..5).rev() {
            let decision = limiter.check("user", quota).await.unwrap();
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
            assert_eq!(decision.limit, 5);
        }
        let refused = limiter.check("user", quota).await.unwrap();
        assert!(!refused.allowed);
        let retry = refused.retry_after.unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(1),
            "{retry:?}"
        );
        // Other keys and other quotas are independent.
        assert!(limiter.check("other", quota).await.unwrap().allowed);
        assert!(
            limiter
                .check("user", self::quota(60, 6))
                .await
                .unwrap()
                .allowed
        );
    }

    #[test]
    fn headers_and_errors_carry_the_numbers() {
        let refused = RateDecision {
            allowed: false,
            limit: 100,
            remaining: 0,
            reset_after: Duration::from_millis(59_400),
            retry_after: Some(Duration::from_millis(600)),
        };
        let headers = refused.headers();
        assert_eq!(headers["ratelimit-limit"], "100");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert_eq!(headers["ratelimit-reset"], "60");
        assert_eq!(headers["retry-after"], "1");
        let error = refused.to_error();
        assert_eq!(error.code(), ErrorCode::ResourceExhausted);
        assert_eq!(error.reason(), Some(reason::RATE_LIMITED));
        assert_eq!(error.retry_after(), Some(Duration::from_millis(600)));
        assert_eq!(error.http_status().as_u16(), 429);
        let status = error.into_status();
        assert_eq!(
            Error::from_status(&status).retry_after(),
            Some(Duration::from_millis(600))
        );

        let allowed = RateDecision {
            allowed: true,
            retry_after: None,
            remaining: 7,
            ..refused
        };
        assert!(!allowed.headers().contains_key("retry-after"));
    }

    #[test]
    fn quotas_come_from_tier_limits_and_never_divide_by_zero() {
        let limits = TierLimits {
            requests_per_minute: 600,
            burst: 50,
            ..Default::default()
        };
        assert_eq!(RateQuota::from_limits(&limits), quota(600, 50));
        assert_eq!(quota(600, 50).interval_micros(), 100_000);
        assert_eq!(quota(0, 0).normalized(), quota(1, 1));
        assert_eq!(quota(u32::MAX, 1).interval_micros(), 1);
    }
}
