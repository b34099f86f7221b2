//! The platform's dependencies going away and coming back: Redis (restarted empty),
//! PostgreSQL, and the only ComfyUI backend. Redis and PostgreSQL are private servers the
//! suite starts; the shared ones are never touched.

use easel_chaos::{Chaos, Expect, Fault, Setup, assert_promises};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_under_load() {
    let setup = Setup {
        private_redis: true,
        ..Setup::default()
    };
    let mut chaos = Chaos::start(setup).await;
    let rows = vec![chaos.run(Fault::RedisRestart).await];
    assert_promises(&rows, Expect::SUCCEED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_under_load() {
    let setup = Setup {
        private_postgres: true,
        ..Setup::default()
    };
    let mut chaos = Chaos::start(setup).await;
    let rows = vec![chaos.run(Fault::PostgresRestart).await];
    assert_promises(&rows, Expect::SUCCEED);
}

/// Issue 11: with the only backend down and back, every in-flight and queued job succeeds
/// with attempts 1 — waiting for a backend costs no attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dies_and_returns_under_load() {
    let mut chaos = Chaos::start(Setup::default()).await;
    let rows = vec![chaos.run(Fault::BackendDeath).await];
    assert_promises(&rows, Expect::FIRST_ATTEMPT);
}
