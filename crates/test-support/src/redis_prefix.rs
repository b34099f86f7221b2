//! A Redis key prefix per test on the shared Redis.

use std::time::Duration;

/// The tests' Redis; `EASEL_TEST_REDIS_URL` overrides it.
pub fn redis_url() -> String {
    std::env::var("EASEL_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_string())
}

/// A Redis key prefix of its own; its keys are deleted when this value is dropped.
#[derive(Debug)]
pub struct TestRedis {
    /// The Redis URL.
    pub url: String,
    /// Every key the test makes must start with this, e.g. `easel-test-3f2a…:`.
    pub prefix: String,
}

impl TestRedis {
    /// A fresh prefix on the tests' Redis.
    pub fn new() -> TestRedis {
        TestRedis::on(&redis_url())
    }

    /// A fresh prefix on the Redis of `url` (a private server that a test restarts, for example).
    pub fn on(url: &str) -> TestRedis {
        TestRedis {
            url: url.to_string(),
            prefix: format!("easel-test-{}:", uuid::Uuid::new_v4().simple()),
        }
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        TestRedis::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query(&mut connection)
            .unwrap_or_default();
        for chunk in keys.chunks(500) {
            let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query(&mut connection);
        }
    }
}
