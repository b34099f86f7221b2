//! API key lifecycle: create → authenticate → revoke → refused; expiry; tenants; pages.

use std::time::Duration;

use easel_auth_client::{Credential, reason};
use easel_proto::account::v1::{
    CreateApiKeyRequest, ListApiKeysRequest, RevokeApiKeyRequest, Tier,
};
use easel_proto::auth::v1::AuthenticateRequest;
use tonic::Code;

use crate::support::{Harness, assert_refused, with_key};

fn authenticate(key: &str) -> AuthenticateRequest {
    AuthenticateRequest {
        credential: Some(Credential::ApiKey(key.to_string()).to_proto()),
    }
}

async fn lifecycle(mut h: Harness) {
    let user = h.user(Tier::Pro).await;
    let created = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "ci".into(),
                scopes: vec!["jobs:read".into(), "jobs:write".into()],
                ttl: None,
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner();
    let key = created.secret.clone();
    assert!(key.starts_with("easel_"));
    let described = created.api_key.unwrap();
    assert!(key.contains(&described.prefix));
    assert_eq!(described.owner, user.id);
    assert_eq!(described.scopes, ["jobs:read", "jobs:write"]);

    // Authenticate: the principal has the user, tier, scopes, key id and full limits.
    let answer = h
        .internal
        .authenticate(authenticate(&key))
        .await
        .unwrap()
        .into_inner();
    let principal = answer.principal.unwrap();
    assert_eq!(principal.user_id, user.id);
    assert_eq!(principal.tier, Tier::Pro as i32);
    assert_eq!(principal.key_id, described.id);
    assert_eq!(principal.scopes, ["jobs:read", "jobs:write"]);
    assert_eq!(principal.limits.unwrap(), h.config.tiers.pro);
    assert!(answer.expire_time.is_none());

    // The list shows the key without its secret.
    let listed = h
        .account
        .list_api_keys(with_key(ListApiKeysRequest::default(), &user.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 2);
    let shown = format!("{listed:?}");
    let secret_part = &key[format!("easel_{}_", described.prefix).len()..];
    assert!(!shown.contains(secret_part));

    // Revoke, then the key is refused with its reason.
    let revoked = h
        .account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest {
                key_id: described.id.clone(),
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert!(revoked.revoke_time.is_some());
    let refused = h
        .internal
        .authenticate(authenticate(&key))
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_REVOKED),
    );
    assert!(refused.message().contains("revoked"));
    // Revoking again is harmless and keeps the first time.
    let again = h
        .account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest {
                key_id: described.id.clone(),
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert_eq!(again.revoke_time, revoked.revoke_time);
    // The other key still works.
    assert!(
        h.internal
            .authenticate(authenticate(&user.key))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_key_lives_until_it_is_revoked_on_postgres() {
    lifecycle(Harness::start().await).await;
}

#[tokio::test]
async fn a_key_lives_until_it_is_revoked_on_sqlite() {
    lifecycle(Harness::start_sqlite().await).await;
}

#[tokio::test]
async fn an_expired_key_is_refused_and_unknown_keys_say_so() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let created = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "short".into(),
                scopes: vec![],
                ttl: Some(pbjson_types::Duration {
                    seconds: 60,
                    nanos: 0,
                }),
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner();
    let answer = h
        .internal
        .authenticate(authenticate(&created.secret))
        .await
        .unwrap()
        .into_inner();
    assert!(answer.expire_time.is_some(), "a cache must know the expiry");
    h.clock.advance(Duration::from_secs(61));
    let refused = h
        .internal
        .authenticate(authenticate(&created.secret))
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_EXPIRED),
    );

    // A well-formed key nobody made, and a real prefix with a wrong secret: the same answer.
    let forged = easel_auth::generate_api_key();
    let unknown = h
        .internal
        .authenticate(authenticate(&forged))
        .await
        .unwrap_err();
    assert_refused(
        &unknown,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_UNKNOWN),
    );
    let prefix = user.key.split('_').nth(1).unwrap();
    let wrong_secret = format!("easel_{prefix}_{}", "A".repeat(43));
    let wrong = h
        .internal
        .authenticate(authenticate(&wrong_secret))
        .await
        .unwrap_err();
    assert_refused(
        &wrong,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_UNKNOWN),
    );
    assert_eq!(wrong.message(), unknown.message());
    let malformed = h
        .internal
        .authenticate(authenticate("easel_nope"))
        .await
        .unwrap_err();
    assert_refused(
        &malformed,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_MALFORMED),
    );
}

#[tokio::test]
async fn a_key_of_user_a_cannot_list_or_revoke_user_b_keys() {
    let mut h = Harness::start().await;
    let alice = h.user(Tier::Free).await;
    let bob = h.user(Tier::Free).await;
    let bobs = h
        .account
        .list_api_keys(with_key(ListApiKeysRequest::default(), &bob.key))
        .await
        .unwrap()
        .into_inner();
    assert!(bobs.api_keys.iter().all(|key| key.owner == bob.id));
    let alices = h
        .account
        .list_api_keys(with_key(ListApiKeysRequest::default(), &alice.key))
        .await
        .unwrap()
        .into_inner();
    assert!(alices.api_keys.iter().all(|key| key.owner == alice.id));
    assert!(!alices.api_keys.iter().any(|key| key.id == bob.key_id));

    let refused = h
        .account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest {
                key_id: bob.key_id.clone(),
            },
            &alice.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::NotFound, None);
    // Bob's key still works.
    assert!(
        h.internal
            .authenticate(authenticate(&bob.key))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn keys_page_newest_first_and_scopes_cannot_grow() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    for index in 0..4 {
        h.account
            .create_api_key(with_key(
                CreateApiKeyRequest {
                    name: format!("key {index}"),
                    ..Default::default()
                },
                &user.key,
            ))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = h
            .account
            .list_api_keys(with_key(
                ListApiKeysRequest {
                    page_size: 2,
                    page_token: token.clone(),
                },
                &user.key,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.api_keys.len() <= 2);
        seen.extend(page.api_keys.into_iter().map(|key| key.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5);
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted, "newest first");

    // A jobs-only key cannot mint a key with more scopes, nor any key at all.
    let limited = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "jobs only".into(),
                scopes: vec!["jobs:write".into()],
                ttl: None,
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let refused = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "escalate".into(),
                ..Default::default()
            },
            &limited,
        ))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, None);
    let refused = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "admin please".into(),
                scopes: vec!["admin".into()],
                ttl: None,
            },
            &user.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&refused, Code::PermissionDenied, None);
}

#[tokio::test]
async fn last_use_is_written_at_most_once_a_minute() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let last_used = |h: &Harness| {
        let auth = h.auth.clone();
        let key_id = user.key_id.clone();
        async move {
            easel_auth::db::find_key(auth.db(), &key_id)
                .await
                .unwrap()
                .unwrap()
                .last_used_at_ms
        }
    };
    h.internal
        .authenticate(authenticate(&user.key))
        .await
        .unwrap();
    let first = last_used(&h).await.expect("recorded");
    h.clock.advance(Duration::from_secs(30));
    h.internal
        .authenticate(authenticate(&user.key))
        .await
        .unwrap();
    assert_eq!(last_used(&h).await, Some(first));
    h.clock.advance(Duration::from_secs(31));
    h.internal
        .authenticate(authenticate(&user.key))
        .await
        .unwrap();
    assert_eq!(last_used(&h).await, Some(first + 61_000));
}
