//! The principal cache behind [`crate::Authenticator`]: answers keyed by the credential's
//! SHA-256, each kept until the earlier of the cache TTL and the credential's own expiry, and
//! evicted by key id or user id when a revocation arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use easel_proto::auth::v1::Principal;
use easel_runtime::error::{Error, ErrorCode};
use moka::future::Cache;

use crate::Revocation;

/// A cached answer of `Authenticate`.
#[derive(Debug)]
struct Accepted {
    principal: Principal,
    cached_at: Instant,
    valid_until: Instant,
}

/// A cached `UNAUTHENTICATED` answer.
#[derive(Debug)]
struct Refused {
    message: String,
    reason: Option<String>,
    valid_until: Instant,
}

/// Positive and negative answers, by credential fingerprint.
pub(crate) struct PrincipalCache {
    accepted: Cache<[u8; 32], Arc<Accepted>>,
    refused: Cache<[u8; 32], Arc<Refused>>,
    ttl: Duration,
    negative_ttl: Duration,
    /// Bumped by every revocation, so an answer fetched across one is not cached stale.
    epoch: AtomicU64,
}

/// Where a lookup ended.
#[derive(Debug)]
pub(crate) enum Lookup {
    Hit(Principal),
    Refused(Error),
    Miss,
}

impl PrincipalCache {
    pub(crate) fn new(ttl: Duration, negative_ttl: Duration, max_entries: u64) -> Self {
        let accepted = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(ttl.max(Duration::from_millis(1)))
            .support_invalidation_closures()
            .build();
        let refused = Cache::builder()
            .max_capacity(max_entries)
            .time_to_live(negative_ttl.max(Duration::from_millis(1)))
            .build();
        PrincipalCache {
            accepted,
            refused,
            ttl,
            negative_ttl,
            epoch: AtomicU64::new(0),
        }
    }

    /// The cached answer, if any is still valid. `max_age` bounds how old a positive answer may
    /// be (used while revocations cannot be heard).
    pub(crate) async fn lookup(&self, fingerprint: &[u8; 32], max_age: Option<Duration>) -> Lookup {
        let now = Instant::now();
        if let Some(refused) = self.refused.get(fingerprint).await
            && refused.valid_until > now
        {
            let mut error = Error::new(ErrorCode::Unauthenticated, refused.message.clone());
            if let Some(reason) = &refused.reason {
                error = error.with_reason(reason.clone());
            }
            return Lookup::Refused(error);
        }
        if let Some(accepted) = self.accepted.get(fingerprint).await {
            let young_enough =
                max_age.is_none_or(|max_age| now.duration_since(accepted.cached_at) <= max_age);
            if accepted.valid_until > now && young_enough {
                return Lookup::Hit(accepted.principal.clone());
            }
        }
        Lookup::Miss
    }

    /// The revocation epoch, read before asking auth.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Caches a principal until `credential_expiry` or the TTL, whichever is first, unless a
    /// revocation arrived since `epoch` was read.
    pub(crate) async fn accept(
        &self,
        fingerprint: [u8; 32],
        principal: Principal,
        credential_expiry: Option<Duration>,
        epoch: u64,
    ) {
        let now = Instant::now();
        let lifetime = credential_expiry.map_or(self.ttl, |left| left.min(self.ttl));
        if lifetime.is_zero() || self.epoch() != epoch {
            return;
        }
        let entry = Arc::new(Accepted {
            principal,
            cached_at: now,
            valid_until: now + lifetime,
        });
        self.accepted.insert(fingerprint, entry).await;
        // A revocation that landed between the check above and the insert may have missed
        // this entry: drop it rather than serve it.
        if self.epoch() != epoch {
            self.accepted.invalidate(&fingerprint).await;
        }
    }

    /// Caches a refusal for the negative TTL.
    pub(crate) async fn refuse(&self, fingerprint: [u8; 32], error: &Error) {
        if self.negative_ttl.is_zero() || error.code() != ErrorCode::Unauthenticated {
            return;
        }
        let entry = Arc::new(Refused {
            message: error.message().to_string(),
            reason: error.reason().map(str::to_string),
            valid_until: Instant::now() + self.negative_ttl,
        });
        self.refused.insert(fingerprint, entry).await;
    }

    /// Evicts every principal the revocation concerns.
    pub(crate) fn revoke(&self, revocation: &Revocation) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let revocation = revocation.clone();
        if self
            .accepted
            .invalidate_entries_if(move |_, entry| revocation.matches(&entry.principal))
            .is_err()
        {
            self.accepted.invalidate_all();
        }
    }

    /// Forgets every positive answer (e.g. after revocations may have been missed).
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.accepted.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(user_id: &str, key_id: &str) -> Principal {
        Principal {
            user_id: user_id.into(),
            key_id: key_id.into(),
            ..Default::default()
        }
    }

    fn cache() -> PrincipalCache {
        PrincipalCache::new(Duration::from_secs(30), Duration::from_secs(2), 100)
    }

    #[tokio::test]
    async fn revocations_evict_by_key_and_by_user() {
        let cache = cache();
        let epoch = cache.epoch();
        cache
            .accept([1; 32], principal("usr_a", "key_a"), None, epoch)
            .await;
        cache
            .accept([2; 32], principal("usr_a", "key_b"), None, epoch)
            .await;
        cache
            .accept([3; 32], principal("usr_b", "key_c"), None, epoch)
            .await;
        assert!(matches!(cache.lookup(&[1; 32], None).await, Lookup::Hit(_)));

        cache.revoke(&Revocation::KeyId("key_a".into()));
        assert!(matches!(cache.lookup(&[1; 32], None).await, Lookup::Miss));
        assert!(matches!(cache.lookup(&[2; 32], None).await, Lookup::Hit(_)));

        cache.revoke(&Revocation::UserId("usr_a".into()));
        assert!(matches!(cache.lookup(&[2; 32], None).await, Lookup::Miss));
        assert!(matches!(cache.lookup(&[3; 32], None).await, Lookup::Hit(_)));

        cache.clear();
        assert!(matches!(cache.lookup(&[3; 32], None).await, Lookup::Miss));
    }

    #[tokio::test]
    async fn an_answer_fetched_across_a_revocation_is_not_cached() {
        let cache = cache();
        let epoch = cache.epoch();
        cache.revoke(&Revocation::KeyId("key_z".into()));
        cache
            .accept([1; 32], principal("usr_a", "key_a"), None, epoch)
            .await;
        assert!(matches!(cache.lookup(&[1; 32], None).await, Lookup::Miss));
    }

    #[tokio::test]
    async fn expired_credentials_and_old_answers_are_not_served() {
        let cache = cache();
        let epoch = cache.epoch();
        cache
            .accept([1; 32], principal("usr_a", ""), Some(Duration::ZERO), epoch)
            .await;
        assert!(matches!(cache.lookup(&[1; 32], None).await, Lookup::Miss));
        cache
            .accept([2; 32], principal("usr_a", ""), None, epoch)
            .await;
        assert!(matches!(
            cache.lookup(&[2; 32], Some(Duration::ZERO)).await,
            Lookup::Miss
        ));
        assert!(matches!(
            cache.lookup(&[2; 32], Some(Duration::from_secs(60))).await,
            Lookup::Hit(_)
        ));
    }

    #[tokio::test]
    async fn only_unauthenticated_answers_are_cached_as_refusals() {
        let cache = cache();
        cache
            .refuse([1; 32], &Error::unavailable("auth is down"))
            .await;
        assert!(matches!(cache.lookup(&[1; 32], None).await, Lookup::Miss));
        cache
            .refuse(
                [1; 32],
                &Error::unauthenticated("unknown API key").with_reason("CREDENTIAL_UNKNOWN"),
            )
            .await;
        let Lookup::Refused(error) = cache.lookup(&[1; 32], None).await else {
            panic!("not refused");
        };
        assert_eq!(error.code(), ErrorCode::Unauthenticated);
        assert_eq!(error.reason(), Some("CREDENTIAL_UNKNOWN"));
    }
}
