//! Publishes revocations on `{prefix}auth:revocations`, so every gateway replica evicts its
//! cached principals at once.

use std::time::Duration;

use easel_auth_client::{Revocation, revocation_channel};
use easel_runtime::redis::Redis;

/// How many times a publish is tried before giving up (the caches' TTL still bounds the
/// damage of a lost message).
const ATTEMPTS: u32 = 3;

/// The publisher; without Redis it only logs (embedded mode has no other replica).
#[derive(Clone)]
pub struct Broadcaster {
    redis: Option<Redis>,
    channel: String,
}

impl std::fmt::Debug for Broadcaster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broadcaster")
            .field("redis", &self.redis.is_some())
            .field("channel", &self.channel)
            .finish()
    }
}

impl Broadcaster {
    /// A publisher on Redis (or none) for the key prefix.
    pub fn new(redis: Option<Redis>, prefix: &str) -> Self {
        Broadcaster {
            redis,
            channel: revocation_channel(prefix),
        }
    }

    /// Publishes a revocation; failures are logged (the change itself is committed).
    pub async fn publish(&self, revocation: &Revocation) {
        let Some(redis) = &self.redis else {
            tracing::debug!(?revocation, "no Redis: revocation not broadcast");
            return;
        };
        let payload = revocation.to_json();
        for attempt in 1..=ATTEMPTS {
            let (channel, payload) = (&self.channel, &payload);
            let sent = redis
                .run(|mut connection| async move {
                    redis::cmd("PUBLISH")
                        .arg(channel)
                        .arg(payload)
                        .query_async::<i64>(&mut connection)
                        .await
                })
                .await;
            match sent {
                Ok(receivers) => {
                    tracing::info!(?revocation, receivers, "revocation broadcast");
                    metrics::counter!("easel_auth_revocations_published_total").increment(1);
                    return;
                }
                Err(error) if attempt < ATTEMPTS => {
                    tracing::warn!(%error, attempt, "publishing a revocation failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                }
                Err(error) => {
                    tracing::error!(
                        %error,
                        ?revocation,
                        "publishing a revocation failed; caches keep the principal until their TTL"
                    );
                    metrics::counter!("easel_auth_revocations_lost_total").increment(1);
                }
            }
        }
    }
}
