//! Bad input to every RPC: unauthenticated, malformed, forged, oversize, wrong-typed and
//! other tenants' requests get a clear error and change nothing.

use easel_auth_client::{Credential, reason};
use easel_proto::account::v1::{
    CreateApiKeyRequest, CreateUserRequest, DisableUserRequest, ExchangeTokenRequest,
    GetUsageRequest, ListApiKeysRequest, LoginRequest, RevokeApiKeyRequest, SetUserTierRequest,
    Tier,
};
use easel_proto::auth::v1::{AuthenticateRequest, RecordUsageRequest, credential};
use tonic::{Code, Request, Status};

use crate::support::{Harness, PASSWORD, TestUser, assert_refused, with_key};

/// Every AccountService RPC that needs a credential.
#[derive(Clone, Copy, Debug)]
enum Rpc {
    CreateApiKey,
    ListApiKeys,
    RevokeApiKey,
    ExchangeToken,
    GetUsage,
    CreateUser,
    SetUserTier,
    DisableUser,
}

const RPCS: [Rpc; 8] = [
    Rpc::CreateApiKey,
    Rpc::ListApiKeys,
    Rpc::RevokeApiKey,
    Rpc::ExchangeToken,
    Rpc::GetUsage,
    Rpc::CreateUser,
    Rpc::SetUserTier,
    Rpc::DisableUser,
];

/// Metadata of a call: header names and values.
type Metadata = Vec<(&'static str, String)>;

fn request<T>(message: T, metadata: &[(&'static str, String)]) -> Request<T> {
    let mut request = Request::new(message);
    for (name, value) in metadata {
        request.metadata_mut().insert(*name, value.parse().unwrap());
    }
    request
}

/// Calls `rpc` with otherwise valid arguments and the given metadata.
async fn call(
    h: &mut Harness,
    rpc: Rpc,
    victim: &TestUser,
    metadata: &[(&'static str, String)],
) -> Status {
    let account = &mut h.account;
    let result = match rpc {
        Rpc::CreateApiKey => account
            .create_api_key(request(
                CreateApiKeyRequest {
                    name: "x".into(),
                    ..Default::default()
                },
                metadata,
            ))
            .await
            .map(|_| ()),
        Rpc::ListApiKeys => account
            .list_api_keys(request(ListApiKeysRequest::default(), metadata))
            .await
            .map(|_| ()),
        Rpc::RevokeApiKey => account
            .revoke_api_key(request(
                RevokeApiKeyRequest {
                    key_id: victim.key_id.clone(),
                },
                metadata,
            ))
            .await
            .map(|_| ()),
        Rpc::ExchangeToken => account
            .exchange_token(request(ExchangeTokenRequest::default(), metadata))
            .await
            .map(|_| ()),
        Rpc::GetUsage => account
            .get_usage(request(GetUsageRequest::default(), metadata))
            .await
            .map(|_| ()),
        Rpc::CreateUser => account
            .create_user(request(
                CreateUserRequest {
                    email: format!("{}@example.test", uuid::Uuid::new_v4().simple()),
                    password: PASSWORD.into(),
                    tier: 0,
                    role: 0,
                },
                metadata,
            ))
            .await
            .map(|_| ()),
        Rpc::SetUserTier => account
            .set_user_tier(request(
                SetUserTierRequest {
                    user_id: victim.id.clone(),
                    tier: Tier::Enterprise as i32,
                },
                metadata,
            ))
            .await
            .map(|_| ()),
        Rpc::DisableUser => account
            .disable_user(request(
                DisableUserRequest {
                    user_id: victim.id.clone(),
                },
                metadata,
            ))
            .await
            .map(|_| ()),
    };
    result.expect_err(&format!("{rpc:?} accepted a bad request"))
}

#[tokio::test]
async fn every_rpc_refuses_missing_malformed_and_forged_credentials() {
    let mut h = Harness::start().await;
    let victim = h.user(Tier::Free).await;
    let forged_token = {
        let parts = [
            "eyJhbGciOiJFZERTQSIsImtpZCI6Im5vIn0",
            "eyJzdWIiOiJ4In0",
            "c2ln",
        ];
        parts.join(".")
    };
    let cases: Vec<(&str, Metadata, &str)> = vec![
        ("none", vec![], reason::CREDENTIAL_MISSING),
        (
            "basic auth",
            vec![("authorization", "Basic dXNlcjpwYXNz".into())],
            reason::CREDENTIAL_MALFORMED,
        ),
        (
            "both headers",
            vec![
                ("x-api-key", victim.key.clone()),
                ("authorization", "Bearer a.b.c".into()),
            ],
            reason::CREDENTIAL_MALFORMED,
        ),
        (
            "not a key",
            vec![("x-api-key", "hunter2".into())],
            reason::CREDENTIAL_MALFORMED,
        ),
        (
            "forged key",
            vec![("x-api-key", easel_auth::generate_api_key())],
            reason::CREDENTIAL_UNKNOWN,
        ),
        (
            "forged token",
            vec![("authorization", format!("Bearer {forged_token}"))],
            reason::CREDENTIAL_UNKNOWN,
        ),
        (
            "oversize key",
            vec![("x-api-key", format!("easel_abcd_{}", "a".repeat(9000)))],
            reason::CREDENTIAL_MALFORMED,
        ),
    ];
    for rpc in RPCS {
        for (name, metadata, expected) in &cases {
            let status = call(&mut h, rpc, &victim, metadata).await;
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "{rpc:?} / {name}: {status:?}"
            );
            assert_eq!(
                crate::support::reason(&status).as_deref(),
                Some(*expected),
                "{rpc:?} / {name}: {status:?}"
            );
        }
    }
    // Nothing changed for the victim.
    let principal = h
        .internal
        .authenticate(AuthenticateRequest {
            credential: Some(Credential::ApiKey(victim.key.clone()).to_proto()),
        })
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(principal.tier, Tier::Free as i32);
}

#[tokio::test]
async fn invalid_fields_are_named() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let admin = h.admin_key.clone();
    let key = user.key.clone();
    let negative = pbjson_types::Duration {
        seconds: -5,
        nanos: 0,
    };
    let mut refusals: Vec<(&str, Status)> = Vec::new();
    let account = &mut h.account;
    for (name, ttl) in [
        ("", None),
        ("   ", None),
        (&*"n".repeat(101), None),
        ("tab\tname", None),
        ("ok", Some(negative)),
        (
            "ok",
            Some(pbjson_types::Duration {
                seconds: 20 * 365 * 24 * 3600,
                nanos: 0,
            }),
        ),
    ] {
        let status = account
            .create_api_key(with_key(
                CreateApiKeyRequest {
                    name: name.to_string(),
                    scopes: vec![],
                    ttl,
                },
                &key,
            ))
            .await
            .unwrap_err();
        refusals.push(("create_api_key", status));
    }
    let status = account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "x".into(),
                scopes: vec!["jobs:everything".into()],
                ttl: None,
            },
            &key,
        ))
        .await
        .unwrap_err();
    refusals.push(("create_api_key scopes", status));
    for (page_size, page_token) in [(101, String::new()), (10, "garbage!".to_string())] {
        let status = account
            .list_api_keys(with_key(
                ListApiKeysRequest {
                    page_size,
                    page_token,
                },
                &key,
            ))
            .await
            .unwrap_err();
        refusals.push(("list_api_keys", status));
    }
    for key_id in ["", "usr_0190a5b2c3d47e8f9a0b1c2d3e4f5a6b", "key_../../etc"] {
        let status = account
            .revoke_api_key(with_key(
                RevokeApiKeyRequest {
                    key_id: key_id.into(),
                },
                &key,
            ))
            .await
            .unwrap_err();
        refusals.push(("revoke_api_key", status));
    }
    for ttl in [
        negative,
        pbjson_types::Duration {
            seconds: 0,
            nanos: 0,
        },
    ] {
        let status = account
            .exchange_token(with_key(
                ExchangeTokenRequest {
                    ttl: Some(ttl),
                    ..Default::default()
                },
                &key,
            ))
            .await
            .unwrap_err();
        refusals.push(("exchange_token", status));
    }
    for (email, password) in [
        ("", PASSWORD.to_string()),
        ("a@b.c", String::new()),
        ("a@b.c", "p".repeat(2000)),
    ] {
        let status = account
            .login(LoginRequest {
                email: email.into(),
                password,
            })
            .await
            .unwrap_err();
        refusals.push(("login", status));
    }
    for (email, password, tier, role) in [
        ("not-an-email", PASSWORD, 0, 0),
        ("short@example.test", "short", 0, 0),
        ("tier@example.test", PASSWORD, 42, 0),
        ("role@example.test", PASSWORD, 0, 9),
    ] {
        let status = account
            .create_user(with_key(
                CreateUserRequest {
                    email: email.into(),
                    password: password.into(),
                    tier,
                    role,
                },
                &admin,
            ))
            .await
            .unwrap_err();
        refusals.push(("create_user", status));
    }
    for (user_id, tier) in [
        ("bob", Tier::Pro as i32),
        (user.id.as_str(), 0),
        (user.id.as_str(), 42),
    ] {
        let status = account
            .set_user_tier(with_key(
                SetUserTierRequest {
                    user_id: user_id.into(),
                    tier,
                },
                &admin,
            ))
            .await
            .unwrap_err();
        refusals.push(("set_user_tier", status));
    }
    let status = account
        .disable_user(with_key(
            DisableUserRequest {
                user_id: "usr_; DROP TABLE auth_users".into(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    refusals.push(("disable_user", status));
    for (user_id, gpu_seconds) in [
        ("nobody", 1.0),
        (user.id.as_str(), f64::NAN),
        (user.id.as_str(), -1.0),
    ] {
        let status = h
            .internal
            .record_usage(RecordUsageRequest {
                user_id: user_id.into(),
                jobs_submitted: 1,
                gpu_seconds,
                bytes_stored: 0,
            })
            .await
            .unwrap_err();
        refusals.push(("record_usage", status));
    }
    for (rpc, status) in &refusals {
        assert_eq!(status.code(), Code::InvalidArgument, "{rpc}: {status:?}");
        assert!(!status.message().is_empty(), "{rpc}");
        let error = easel_runtime::error::Error::from_status(status);
        assert!(
            !error.field_violations().is_empty(),
            "{rpc}: no field named: {status:?}"
        );
    }

    // Authenticate itself: no credential, an empty one, an oversize one.
    for credential in [
        None,
        Some(easel_proto::auth::v1::Credential { kind: None }),
        Some(easel_proto::auth::v1::Credential {
            kind: Some(credential::Kind::ApiKey(String::new())),
        }),
        Some(easel_proto::auth::v1::Credential {
            kind: Some(credential::Kind::BearerToken("t".repeat(20_000))),
        }),
    ] {
        let status = h
            .internal
            .authenticate(AuthenticateRequest { credential })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(crate::support::reason(&status).is_some());
    }
}

#[tokio::test]
async fn other_tenants_resources_are_not_found() {
    let mut h = Harness::start().await;
    let alice = h.user(Tier::Free).await;
    let bob = h.user(Tier::Free).await;
    // A page token made from Bob's key id lists Alice's keys only.
    let page_token = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("key_{}", "f".repeat(32)))
    };
    let page = h
        .account
        .list_api_keys(with_key(
            ListApiKeysRequest {
                page_size: 100,
                page_token,
            },
            &alice.key,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(page.api_keys.iter().all(|key| key.owner == alice.id));
    assert!(!page.api_keys.iter().any(|key| key.id == bob.key_id));
    let status = h
        .account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest {
                key_id: bob.key_id.clone(),
            },
            &alice.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, None);
    let missing = easel_runtime::ids::new_id("key");
    let status = h
        .account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest { key_id: missing },
            &alice.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::NotFound, None);
}

/// A message whose field 1 is a number where every request has a string.
#[derive(Clone, PartialEq, prost::Message)]
struct WrongTyped {
    #[prost(uint64, tag = "1")]
    number: u64,
}

#[tokio::test]
async fn oversize_and_wrong_typed_messages_are_refused_before_any_work() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let status = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "n".repeat(100 * 1024),
                ..Default::default()
            },
            &user.key,
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{status:?}"
    );

    let channel = tonic::transport::Channel::from_shared(h.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for path in [
        "/easel.account.v1.AccountService/CreateApiKey",
        "/easel.account.v1.AccountService/Login",
        "/easel.auth.v1.AuthService/Authenticate",
        "/easel.auth.v1.AuthService/RecordUsage",
    ] {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<WrongTyped, WrongTyped>::default();
        let status = grpc
            .unary(
                with_key(WrongTyped { number: 7 }, &user.key),
                http::uri::PathAndQuery::from_static(path),
                codec,
            )
            .await
            .unwrap_err();
        assert_ne!(status.code(), Code::Ok, "{path}");
        assert!(status.message().contains("decode"), "{path}: {status:?}");
    }
    // Nothing was made: still the one key.
    let listed = h
        .account
        .list_api_keys(with_key(ListApiKeysRequest::default(), &user.key))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys.len(), 1);
}
