//! The principal cache behind [`crate::Authenticator`]: answers keyed by the credential's
//! SHA-256, each kept until the earlier of the cache TTL and the credential's own expiry, and
//! evicted by key id or user id when a revocation arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Whether a refresh ahead of its unheard expiry was handed out (one per entry).
    refreshing: AtomicBool,
}

/// How long positive answers are trusted while revocations cannot be heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Unheard {
    /// When revocations were last heard (the listener's disconnection), if ever: every
    /// revocation up to then was applied, so an answer cached earlier was as good as new then.
    pub(crate) heard_until: Option<Instant>,
    /// How long an answer is trusted past the later of its caching and `heard_until`. Past
    /// half of it, the lookup that finds it is asked to refresh it ahead (in the background).
    pub(crate) max_age: Duration,
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
    /// A hit that is past half its unheard lifetime: serve it, and refresh it ahead of its
    /// expiry (this lookup alone is told, until the refresh ends).
    RefreshAhead(Principal),
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

    /// The cached answer, if any is still valid. While revocations cannot be heard,
    /// `unheard` bounds how old a positive answer may be.
    pub(crate) async fn lookup(&self, fingerprint: &[u8; 32], unheard: Option<Unheard>) -> Lookup {
        self.lookup_at(fingerprint, unheard, Instant::now()).await
    }

    async fn lookup_at(
        &self,
        fingerprint: &[u8; 32],
        unheard: Option<Unheard>,
        now: Instant,
    ) -> Lookup {
        if let Some(refused) = self.refused.get(fingerprint).await
            && refused.valid_until > now
        {
            let mut error = Error::new(ErrorCode::Unauthenticated, refused.message.clone());
            if let Some(reason) = &refused.reason {
                error = error.with_reason(reason.clone());
            }
            return Lookup::Refused(error);
        }
        let Some(accepted) = self.accepted.get(fingerprint).await else {
            return Lookup::Miss;
        };
        if accepted.valid_until <= now {
            return Lookup::Miss;
        }
        let Some(unheard) = unheard else {
            return Lookup::Hit(accepted.principal.clone());
        };
        let checked = unheard
            .heard_until
            .map_or(accepted.cached_at, |heard| heard.max(accepted.cached_at));
        let age = now.saturating_duration_since(checked);
        if age > unheard.max_age {
            return Lookup::Miss;
        }
        if age > unheard.max_age / 2 && !accepted.refreshing.swap(true, Ordering::SeqCst) {
            return Lookup::RefreshAhead(accepted.principal.clone());
        }
        Lookup::Hit(accepted.principal.clone())
    }

    /// A refresh ahead ended (its answer cached or not): the next lookup that finds the entry
    /// past half its unheard lifetime may start another.
    pub(crate) async fn refresh_ended(&self, fingerprint: &[u8; 32]) {
        if let Some(accepted) = self.accepted.get(fingerprint).await {
            accepted.refreshing.store(false, Ordering::SeqCst);
        }
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
            refreshing: AtomicBool::new(false),
        });
        self.accepted.insert(fingerprint, entry).await;
        // A revocation that landed between the check above and the insert may have missed
        // this entry: drop it rather than serve it.
        if self.epoch() != epoch {
            self.accepted.invalidate(&fingerprint).await;
        }
    }

    /// Caches a refusal for the negative TTL, and forgets any earlier acceptance (a refresh
    /// ahead finds the credential revoked).
    pub(crate) async fn refuse(&self, fingerprint: [u8; 32], error: &Error) {
        if error.code() != ErrorCode::Unauthenticated {
            return;
        }
        self.accepted.invalidate(&fingerprint).await;
        if self.negative_ttl.is_zero() {
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
        let unheard = |max_age| {
            Some(Unheard {
                heard_until: None,
                max_age,
            })
        };
        assert!(matches!(
            cache.lookup(&[2; 32], unheard(Duration::ZERO)).await,
            Lookup::Miss
        ));
        assert!(matches!(
            cache
                .lookup(&[2; 32], unheard(Duration::from_secs(60)))
                .await,
            Lookup::Hit(_)
        ));
    }

    #[tokio::test]
    async fn unheard_answers_age_from_the_disconnection_and_are_refreshed_ahead_once() {
        let cache = cache();
        let start = Instant::now();
        cache
            .accept([1; 32], principal("usr_a", ""), None, cache.epoch())
            .await;
        let cached = Instant::now();
        let second = Duration::from_secs(1);

        // Never heard: the answer's own age counts.
        let never = Some(Unheard {
            heard_until: None,
            max_age: second,
        });
        assert!(matches!(
            cache.lookup_at(&[1; 32], never, start).await,
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.lookup_at(&[1; 32], never, cached + 2 * second).await,
            Lookup::Miss
        ));

        // Heard until 10 s after it was cached: it is as good as new then.
        let heard_until = start + 10 * second;
        let unheard = Some(Unheard {
            heard_until: Some(heard_until),
            max_age: second,
        });
        let at = |millis| heard_until + Duration::from_millis(millis);
        assert!(matches!(
            cache.lookup_at(&[1; 32], unheard, at(400)).await,
            Lookup::Hit(_)
        ));
        // Past half its unheard lifetime: one lookup is told to refresh, the others are hits.
        assert!(matches!(
            cache.lookup_at(&[1; 32], unheard, at(600)).await,
            Lookup::RefreshAhead(_)
        ));
        assert!(matches!(
            cache.lookup_at(&[1; 32], unheard, at(700)).await,
            Lookup::Hit(_)
        ));
        // The refresh ended without replacing the answer: the next lookup refreshes again.
        cache.refresh_ended(&[1; 32]).await;
        assert!(matches!(
            cache.lookup_at(&[1; 32], unheard, at(800)).await,
            Lookup::RefreshAhead(_)
        ));
        // Past the unheard lifetime: asked again, whoever refreshes.
        assert!(matches!(
            cache.lookup_at(&[1; 32], unheard, at(1001)).await,
            Lookup::Miss
        ));
        // Heard normally: the full TTL.
        assert!(matches!(
            cache.lookup_at(&[1; 32], None, at(1001)).await,
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
