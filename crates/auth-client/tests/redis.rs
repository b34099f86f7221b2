//! The Redis parts against the real Redis, each test under its own key prefix.

use std::time::Duration;

use easel_auth_client::{
    Authenticator, AuthenticatorConfig, RateLimiter, RateQuota, Revocation, revocation_channel,
};
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_runtime::Shutdown;
use easel_runtime::grpc::{ClientConfig, connect_lazy};
use easel_runtime::testing::TestRedis;
use futures::future::join_all;

async fn connection(redis: &TestRedis) -> redis::aio::ConnectionManager {
    let client = redis::Client::open(redis.url.as_str()).expect("a valid Redis URL");
    redis::aio::ConnectionManager::new(client)
        .await
        .expect("the tests' Redis answers")
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

    let mut publisher = connection(&redis).await;
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
