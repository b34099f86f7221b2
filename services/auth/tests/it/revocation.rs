//! Revocation reaches every replica's cache within a second, through Redis pub/sub.

use std::time::{Duration, Instant};

use easel_auth_client::{Authenticator, AuthenticatorConfig, Credential, Revocation, reason};
use easel_proto::account::v1::{RevokeApiKeyRequest, SetUserTierRequest, Tier};
use easel_runtime::{ErrorCode, Shutdown};

use crate::support::{Harness, with_key};

/// Two gateway replicas' authenticators, listening.
async fn replicas(h: &Harness, shutdown: &Shutdown) -> [Authenticator; 2] {
    let replicas = [
        h.authenticator(AuthenticatorConfig::default()),
        h.authenticator(AuthenticatorConfig::default()),
    ];
    for replica in &replicas {
        replica.spawn_revocation_listener(&h.redis.url, &h.redis.prefix, shutdown.clone());
        assert!(replica.wait_listening(Duration::from_secs(10)).await);
    }
    replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_by_every_replica_before_its_cache_expires() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let shutdown = Shutdown::new(Duration::from_secs(1));
    let replicas = replicas(&h, &shutdown).await;
    let credential = Credential::ApiKey(user.key.clone());
    for replica in &replicas {
        // Cached for 30 s from here on.
        assert_eq!(
            replica.authenticate(&credential).await.unwrap().user_id,
            user.id
        );
        assert_eq!(
            replica.authenticate(&credential).await.unwrap().user_id,
            user.id
        );
    }
    let mut applied: Vec<_> = replicas.iter().map(Authenticator::revocations).collect();

    let started = Instant::now();
    h.account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest {
                key_id: user.key_id.clone(),
            },
            &user.key,
        ))
        .await
        .unwrap();
    for events in &mut applied {
        // Well inside the 30 s cache: only the broadcast can have revoked it. How fast it
        // travels is measured by bench/auth, not asserted here.
        let left = Duration::from_secs(20).saturating_sub(started.elapsed());
        let revocation = tokio::time::timeout(left, events.recv())
            .await
            .expect("the revocation reached every replica before the cache expired")
            .unwrap();
        assert_eq!(revocation, Revocation::KeyId(user.key_id.clone()));
    }
    for replica in &replicas {
        let error = replica.authenticate(&credential).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unauthenticated);
        assert_eq!(error.reason(), Some(reason::CREDENTIAL_REVOKED));
    }
    shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tier_change_reaches_cached_principals() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let shutdown = Shutdown::new(Duration::from_secs(1));
    let replicas = replicas(&h, &shutdown).await;
    let credential = Credential::ApiKey(user.key.clone());
    for replica in &replicas {
        let principal = replica.authenticate(&credential).await.unwrap();
        assert_eq!(principal.limits.unwrap(), h.config.tiers.free);
    }
    let mut applied: Vec<_> = replicas.iter().map(Authenticator::revocations).collect();
    h.account
        .set_user_tier(with_key(
            SetUserTierRequest {
                user_id: user.id.clone(),
                tier: Tier::Enterprise as i32,
            },
            &h.admin_key.clone(),
        ))
        .await
        .unwrap();
    for events in &mut applied {
        let revocation = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("no revocation")
            .unwrap();
        assert_eq!(revocation, Revocation::UserId(user.id.clone()));
    }
    for replica in &replicas {
        let principal = replica.authenticate(&credential).await.unwrap();
        assert_eq!(principal.tier, Tier::Enterprise as i32);
        assert_eq!(principal.limits.unwrap(), h.config.tiers.enterprise);
    }
    shutdown.trigger();
}

#[tokio::test]
async fn refusals_are_cached_briefly_and_expired_credentials_not_past_their_expiry() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let authenticator = h.authenticator(AuthenticatorConfig::default());
    let forged = Credential::ApiKey(easel_auth::generate_api_key());
    let first = authenticator.authenticate(&forged).await.unwrap_err();
    assert_eq!(first.reason(), Some(reason::CREDENTIAL_UNKNOWN));
    let cached = authenticator.authenticate(&forged).await.unwrap_err();
    assert_eq!(cached.reason(), Some(reason::CREDENTIAL_UNKNOWN));
    assert_eq!(cached.message(), first.message());
    // A token's principal is accepted and carries its limits.
    let token = h.login(&user.email).await;
    let principal = authenticator
        .authenticate(&Credential::Bearer(token))
        .await
        .unwrap();
    assert_eq!(principal.user_id, user.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_of_one_credential_share_one_call() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let authenticator = h.authenticator(AuthenticatorConfig::default());
    let calls = || authenticate_calls(&easel_runtime::metrics::render());
    let before = calls();
    let credential = Credential::ApiKey(user.key.clone());
    let answers =
        futures::future::join_all((0..64).map(|_| authenticator.authenticate(&credential))).await;
    for answer in answers {
        assert_eq!(answer.unwrap().user_id, user.id);
    }
    // The first miss calls auth; the others wait on its answer (or hit the cache it filled).
    assert_eq!(
        calls() - before,
        1.0,
        "one Authenticate call for 64 requests"
    );
}

/// `Authenticate` calls this process made, from its Prometheus metrics.
fn authenticate_calls(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("grpc_client_requests_total{") && line.contains("Authenticate")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
