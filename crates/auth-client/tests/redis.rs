//! The Redis parts against the real Redis, each test under its own key prefix.

use std::time::Duration;

use easel_auth_client::{
    Authenticator, AuthenticatorConfig, RateLimiter, RateQuota, Revocation, WhenUnavailable,
    revocation_channel,
};
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_runtime::grpc::{ClientConfig, connect_lazy};
use easel_runtime::redis::{BreakerState, Redis, RedisConfig};
use easel_runtime::{ErrorCode, Shutdown};
use easel_test_support::{RedisServer, TestRedis};
use futures::future::join_all;

/// A generous deadline per call: the test machine is busy, and nothing here measures time.
const CALL_DEADLINE: Duration = Duration::from_secs(2);

async fn connection(redis: &TestRedis) -> Redis {
    Redis::connect("test", &redis.url, RedisConfig::new(CALL_DEADLINE))
        .await
        .expect("a valid Redis URL")
}

async fn connection_manager(redis: &TestRedis) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(redis.url.as_str()).expect("a valid Redis URL");
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("the tests' Redis answers")
}

/// A handle on a private server whose breaker opens at the first failure and probes often.
fn private(server: &RedisServer) -> Redis {
    let mut config = RedisConfig::new(CALL_DEADLINE);
    config.breaker_failures = 1;
    config.breaker_cooldown = Duration::from_millis(100);
    Redis::open("test", &server.url, config).expect("a valid Redis URL")
}

async fn stored_tat(server: &RedisServer, key: &str) -> Option<String> {
    let client = redis::Client::open(server.url.as_str()).expect("a valid Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("the private Redis answers");
    redis::cmd("GET")
        .arg(format!("t:ratelimit:{key}"))
        .query_async(&mut connection)
        .await
        .expect("GET answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_the_limiter_limits_locally_or_refuses_then_recovers() {
    let mut server = RedisServer::start().await;
    let redis = private(&server);
    let limiter = RateLimiter::redis(redis.clone(), "t:");
    let quota = RateQuota {
        per_minute: 1,
        burst: 3,
    };
    assert!(limiter.check("shared", quota).await.unwrap().allowed);
    assert!(stored_tat(&server, "shared").await.is_some());

    server.kill().await;
    // Failing open to the local limiter: the burst passes, then this process refuses; every
    // call answers within the deadline (the breaker opens at the first failure).
    let mut decisions = Vec::new();
    for _ in 0..4 {
        let decision = tokio::time::timeout(CALL_DEADLINE * 2, limiter.check("local", quota))
            .await
            .expect("a check while Redis is down did not answer")
            .expect("fails open");
        decisions.push(decision.allowed);
    }
    assert_eq!(decisions, [true, true, true, false]);
    assert_ne!(redis.state(), BreakerState::Closed);
    // Failing closed: UNAVAILABLE with a retry delay.
    let refused = limiter
        .check_or("closed", quota, WhenUnavailable::Refuse)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Unavailable);
    assert!(refused.retry_after().is_some());

    server.restart().await;
    // The breaker's probe closes it by itself, without traffic; calls go to Redis again.
    let mut state = redis.watch_state();
    tokio::time::timeout(
        Duration::from_secs(60),
        state.wait_for(|state| *state == BreakerState::Closed),
    )
    .await
    .expect("the breaker did not close after Redis came back")
    .unwrap();
    assert!(
        limiter
            .check_or("back", quota, WhenUnavailable::Refuse)
            .await
            .unwrap()
            .allowed
    );
    assert!(stored_tat(&server, "back").await.is_some());
}

#[tokio::test]
async fn the_first_call_after_a_redis_restart_succeeds() {
    let mut server = RedisServer::start().await;
    let redis = private(&server);
    let limiter = RateLimiter::redis(redis.clone(), "t:");
    let quota = RateQuota {
        per_minute: 60,
        burst: 10,
    };
    assert!(limiter.check("before", quota).await.unwrap().allowed);
    // Redis restarts between two calls: the manager's connection is stale.
    server.restart().await;
    let decision = limiter
        .check_or("after", quota, WhenUnavailable::Refuse)
        .await
        .expect("the first call after the restart failed");
    assert!(decision.allowed);
    assert!(stored_tat(&server, "after").await.is_some());
    assert_eq!(redis.state(), BreakerState::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_limiters_sharing_redis_let_exactly_the_burst_through() {
    let redis = TestRedis::new();
    let first = RateLimiter::redis(connection(&redis).await, redis.prefix.clone());
    let second = RateLimiter::redis(connection(&redis).await, redis.prefix.clone());
    let quota = RateQuota {
        per_minute: 100,
        burst: 100,
    };
    let checks = (0..200).map(|index| {
        let limiter = if index % 2 == 0 { &first } else { &second };
        let limiter = limiter.clone();
        tokio::spawn(async move { limiter.check("user:usr_one", quota).await.unwrap() })
    });
    let decisions: Vec<_> = join_all(checks)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let accepted = decisions.iter().filter(|d| d.allowed).count();
    // One more may slip in if 0.6 s passed during the run (one request's emission interval).
    assert!((100..=101).contains(&accepted), "{accepted} accepted");
    for refused in decisions.iter().filter(|d| !d.allowed) {
        let headers = refused.headers();
        assert_eq!(headers["ratelimit-limit"], "100");
        assert_eq!(headers["ratelimit-remaining"], "0");
        assert!(headers.contains_key("ratelimit-reset"));
        let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        let error = refused.to_error();
        assert_eq!(error.http_status().as_u16(), 429);
        assert!(error.retry_after().is_some());
    }
    // Remaining counts down without gaps among the accepted.
    let mut remaining: Vec<_> = decisions
        .iter()
        .filter(|d| d.allowed)
        .map(|d| d.remaining)
        .collect();
    remaining.sort_unstable();
    assert_eq!(remaining[0], 0);
    // Another user is not affected.
    assert!(first.check("user:usr_two", quota).await.unwrap().allowed);
}

#[tokio::test]
async fn the_redis_limiter_refills_at_the_sustained_rate() {
    let redis = TestRedis::new();
    let limiter = RateLimiter::redis(connection(&redis).await, redis.prefix.clone());
    // 6000 per minute: one request every 10 ms, burst of 2.
    let quota = RateQuota {
        per_minute: 6000,
        burst: 2,
    };
    assert!(limiter.check("k", quota).await.unwrap().allowed);
    assert!(limiter.check("k", quota).await.unwrap().allowed);
    let refused = limiter.check("k", quota).await.unwrap();
    assert!(!refused.allowed);
    let wait = refused.retry_after.unwrap();
    assert!(wait <= Duration::from_millis(10), "{wait:?}");
    tokio::time::sleep(wait + Duration::from_millis(2)).await;
    assert!(limiter.check("k", quota).await.unwrap().allowed);
}

#[tokio::test]
async fn the_listener_subscribes_and_applies_published_revocations() {
    let redis = TestRedis::new();
    let channel = connect_lazy(&ClientConfig::new("http://127.0.0.1:9"), "test").unwrap();
    let authenticator = Authenticator::new(
        AuthServiceClient::new(channel),
        AuthenticatorConfig::default(),
    );
    let shutdown = Shutdown::new(Duration::from_secs(1));
    let mut applied = authenticator.revocations();
    let listener =
        authenticator.spawn_revocation_listener(&redis.url, &redis.prefix, shutdown.clone());
    assert!(authenticator.wait_listening(Duration::from_secs(10)).await);

    let mut publisher = connection_manager(&redis).await;
    for payload in ["not json", r#"{"keyId":"key_42"}"#] {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(revocation_channel(&redis.prefix))
            .arg(payload)
            .query_async(&mut publisher)
            .await
            .unwrap();
    }
    let revocation = tokio::time::timeout(Duration::from_secs(5), applied.recv())
        .await
        .expect("no revocation within 5 s")
        .unwrap();
    assert_eq!(revocation, Revocation::KeyId("key_42".into()));

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), listener)
        .await
        .expect("the listener did not stop")
        .unwrap();
    assert!(!authenticator.is_listening());
}
