//! Access tokens: login and exchange, the JWKS, rotation, and every attack refused.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use easel_auth_client::{Credential, REQUIRED_SCOPE, reason};
use easel_proto::account::v1::{
    CreateApiKeyRequest, ExchangeTokenRequest, RevokeApiKeyRequest, Tier,
};
use easel_proto::auth::v1::{AuthenticateRequest, GetJwksRequest};
use easel_runtime::error::Error;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tonic::Code;

use crate::support::{Harness, assert_refused, with_bearer, with_key};

fn bearer(token: &str) -> AuthenticateRequest {
    AuthenticateRequest {
        credential: Some(Credential::Bearer(token.to_string()).to_proto()),
    }
}

/// The newest signing key's kid and private key.
async fn signing_key(h: &Harness) -> (String, EncodingKey, Vec<u8>) {
    let rows = easel_auth::db::signing_keys(h.auth.db()).await.unwrap();
    let row = rows
        .into_iter()
        .find(|row| row.retired_at_ms.is_none())
        .unwrap();
    let pkcs8 = STANDARD.decode(&row.private_key).unwrap();
    let public = URL_SAFE_NO_PAD.decode(&row.public_key).unwrap();
    (row.kid, EncodingKey::from_ed_der(&pkcs8), public)
}

fn claims(h: &Harness, sub: &str) -> Value {
    let now = h.clock.now_seconds();
    json!({
        "iss": h.config.jwt_issuer,
        "aud": h.config.jwt_audience,
        "sub": sub,
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": "test",
        "scope": "jobs:read"
    })
}

fn sign(kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(kid.to_string());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

trait Seconds {
    fn now_seconds(&self) -> i64;
}

impl Seconds for easel_auth::ManualClock {
    fn now_seconds(&self) -> i64 {
        use easel_auth::Clock;
        self.now().timestamp()
    }
}

async fn refused(h: &mut Harness, token: &str) -> tonic::Status {
    h.internal.authenticate(bearer(token)).await.unwrap_err()
}

#[tokio::test]
async fn login_and_exchanged_tokens_authenticate_until_their_key_is_revoked() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Pro).await;
    let token = h.login(&user.email).await;
    let principal = h
        .internal
        .authenticate(bearer(&token))
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(principal.user_id, user.id);
    assert!(principal.key_id.is_empty());
    assert!(principal.scopes.contains(&"keys:write".to_string()));

    // ExchangeToken: an API key for a short-lived token, capped by the server.
    let exchanged = h
        .account
        .exchange_token(with_key(
            ExchangeTokenRequest {
                ttl: Some(pbjson_types::Duration {
                    seconds: 10 * 3600,
                    nanos: 0,
                }),
                ..Default::default()
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner()
        .access_token
        .unwrap();
    assert_eq!(exchanged.token_type, "Bearer");
    let expires = exchanged.expire_time.unwrap().seconds;
    let max = h.clock.now_seconds() + h.config.access_token_max_ttl.as_secs() as i64;
    assert!(expires <= max, "{expires} > {max}");
    let answer = h
        .internal
        .authenticate(bearer(&exchanged.token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.principal.unwrap().key_id, user.key_id);
    assert_eq!(answer.expire_time.unwrap().seconds, expires);

    // A token cannot be exchanged for another.
    let status = h
        .account
        .exchange_token(with_bearer(ExchangeTokenRequest::default(), &token))
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, None);

    // Revoking the key kills the tokens exchanged from it, not the login token.
    h.account
        .revoke_api_key(with_key(
            RevokeApiKeyRequest {
                key_id: user.key_id.clone(),
            },
            &user.key,
        ))
        .await
        .unwrap();
    let status = refused(&mut h, &exchanged.token).await;
    assert_refused(
        &status,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_REVOKED),
    );
    assert!(h.internal.authenticate(bearer(&token)).await.is_ok());
}

/// The scopes the principal of `token` carries.
async fn token_scopes(h: &mut Harness, token: &str) -> Vec<String> {
    h.internal
        .authenticate(bearer(token))
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap()
        .scopes
}

/// ExchangeToken as the holder of `key`, asking for `scopes`.
async fn exchange(h: &mut Harness, key: &str, scopes: &[&str]) -> Result<String, tonic::Status> {
    let request = ExchangeTokenRequest {
        scopes: scopes.iter().map(|scope| (*scope).to_string()).collect(),
        ..Default::default()
    };
    h.account
        .exchange_token(with_key(request, key))
        .await
        .map(|answer| answer.into_inner().access_token.unwrap().token)
}

#[tokio::test]
async fn exchanged_tokens_carry_at_most_their_keys_scopes() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Pro).await;
    let reader = h
        .account
        .create_api_key(with_key(
            CreateApiKeyRequest {
                name: "reader".into(),
                scopes: vec!["jobs:read".into()],
                ttl: None,
            },
            &user.key,
        ))
        .await
        .unwrap()
        .into_inner();
    let reader_key = reader.secret;
    let reader_id = reader.api_key.unwrap().id;

    // No scopes asked: the key's, exactly.
    let token = exchange(&mut h, &reader_key, &[]).await.unwrap();
    assert_eq!(token_scopes(&mut h, &token).await, ["jobs:read"]);

    // Asking for more than the key has is refused, naming the scope.
    let status = exchange(&mut h, &reader_key, &["jobs:read", "jobs:write"])
        .await
        .unwrap_err();
    assert_refused(&status, Code::PermissionDenied, Some(reason::MISSING_SCOPE));
    let error = Error::from_status(&status);
    assert_eq!(
        error.metadata().get(REQUIRED_SCOPE).map(String::as_str),
        Some("jobs:write")
    );
    let status = exchange(&mut h, &reader_key, &["admin"]).await.unwrap_err();
    assert_refused(&status, Code::PermissionDenied, Some(reason::MISSING_SCOPE));
    // An unknown name is a bad argument.
    let status = exchange(&mut h, &reader_key, &["jobs:*"])
        .await
        .unwrap_err();
    assert_refused(&status, Code::InvalidArgument, None);

    // A key with every user scope may narrow its token.
    let token = exchange(&mut h, &user.key, &["usage:read", "jobs:read"])
        .await
        .unwrap();
    assert_eq!(
        token_scopes(&mut h, &token).await,
        ["jobs:read", "usage:read"]
    );

    // A token signed with more scopes than its key (as a stolen signing key could) still gets
    // only the key's.
    let (kid, signing, _) = signing_key(&h).await;
    let mut forged = claims(&h, &user.id);
    forged["key_id"] = json!(reader_id);
    forged["scope"] = json!("jobs:read jobs:write keys:write");
    let token = sign(&kid, &signing, &forged);
    assert_eq!(token_scopes(&mut h, &token).await, ["jobs:read"]);
}

#[tokio::test]
async fn the_jwks_is_served_over_http_and_grpc_and_verifies_tokens() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let token = h.login(&user.email).await;
    let response = reqwest::get(format!("{}/.well-known/jwks.json", h.admin_url))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/jwk-set+json"
    );
    let over_http: jsonwebtoken::jwk::JwkSet = response.json().await.unwrap();
    let over_grpc = h
        .internal
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .jwks_json;
    let over_grpc: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&over_grpc).unwrap();
    assert_eq!(over_http, over_grpc);

    // A third party (the gateway) verifies the token with the JWKS alone.
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let jwk = over_http.find(&kid).unwrap();
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
    validation.set_audience(&[&h.config.jwt_audience]);
    validation.set_issuer(&[&h.config.jwt_issuer]);
    let data = jsonwebtoken::decode::<Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], user.id);
}

#[tokio::test]
async fn every_jwt_attack_is_refused() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let (kid, key, public) = signing_key(&h).await;
    // The honest token works.
    let honest = sign(&kid, &key, &claims(&h, &user.id));
    assert!(h.internal.authenticate(bearer(&honest)).await.is_ok());

    // alg: none, without a signature.
    let header =
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims(&h, &user.id).to_string());
    let status = refused(&mut h, &format!("{header}.{payload}.")).await;
    assert_eq!(status.code(), Code::Unauthenticated);

    // HS256 signed with the public key (raw and as the JWK's x), the classic confusion.
    for secret in [public.clone(), URL_SAFE_NO_PAD.encode(&public).into_bytes()] {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(kid.clone());
        let forged = jsonwebtoken::encode(
            &header,
            &claims(&h, &user.id),
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap();
        let status = refused(&mut h, &forged).await;
        assert_refused(
            &status,
            Code::Unauthenticated,
            Some(reason::CREDENTIAL_UNKNOWN),
        );
    }

    // Expired (beyond the leeway).
    let mut expired = claims(&h, &user.id);
    expired["exp"] = json!(h.clock.now_seconds() - 60);
    let status = refused(&mut h, &sign(&kid, &key, &expired)).await;
    assert_refused(
        &status,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_EXPIRED),
    );

    // Wrong audience, wrong issuer.
    for (claim, value) in [("aud", "someone-else"), ("iss", "evil")] {
        let mut wrong = claims(&h, &user.id);
        wrong[claim] = json!(value);
        let status = refused(&mut h, &sign(&kid, &key, &wrong)).await;
        assert_refused(
            &status,
            Code::Unauthenticated,
            Some(reason::CREDENTIAL_UNKNOWN),
        );
    }

    // Missing exp, iss or aud.
    for claim in ["exp", "iss", "aud"] {
        let mut missing = claims(&h, &user.id);
        missing.as_object_mut().unwrap().remove(claim);
        let status = refused(&mut h, &sign(&kid, &key, &missing)).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{claim}");
    }

    // Unknown kid: a key easel never made; and easel's kid with that foreign key.
    let foreign = aws_lc_rs_key();
    let unknown = sign("not-a-known-kid", &foreign, &claims(&h, &user.id));
    let status = refused(&mut h, &unknown).await;
    assert_refused(
        &status,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_UNKNOWN),
    );
    assert!(status.message().contains("unknown key"), "{status:?}");
    let impostor = sign(&kid, &foreign, &claims(&h, &user.id));
    let status = refused(&mut h, &impostor).await;
    assert_refused(
        &status,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_UNKNOWN),
    );

    // Payload changed after signing: another subject and more scopes, same signature.
    let mut parts: Vec<String> = honest.split('.').map(str::to_string).collect();
    let mut tampered = claims(&h, &user.id);
    tampered["scope"] = json!("jobs:read admin");
    parts[1] = URL_SAFE_NO_PAD.encode(tampered.to_string());
    let status = refused(&mut h, &parts.join(".")).await;
    assert_refused(
        &status,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_UNKNOWN),
    );

    // Garbage.
    for garbage in ["", "a.b", "a.b.c", "....", &"x".repeat(9000)] {
        let status = refused(&mut h, garbage).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{garbage}");
    }
}

fn aws_lc_rs_key() -> EncodingKey {
    // A fresh Ed25519 key through the service's own generator path: rotate-free, via PKCS#8.
    let pkcs8 = easel_auth::jwt::generate_pkcs8().unwrap();
    EncodingKey::from_ed_der(&pkcs8)
}

#[tokio::test]
async fn a_rotated_out_key_verifies_until_its_tokens_expire_then_never() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let (old_kid, old_key, _) = signing_key(&h).await;
    let before = h.login(&user.email).await;
    // A token the old key signs far into the future, as a thief of the old key would.
    let mut long = claims(&h, &user.id);
    long["exp"] = json!(h.clock.now_seconds() + 30 * 24 * 3600);
    let stolen = sign(&old_kid, &old_key, &long);

    let new_kid = h.auth.tokens().rotate().await.unwrap();
    assert_ne!(new_kid, old_kid);
    let after = h.login(&user.email).await;
    assert_eq!(
        jsonwebtoken::decode_header(&after).unwrap().kid.unwrap(),
        new_kid
    );
    // Both keys are in the JWKS; both tokens work.
    let jwks = h.auth.tokens().jwks_json();
    assert!(jwks.contains(&old_kid) && jwks.contains(&new_kid));
    assert!(h.internal.authenticate(bearer(&before)).await.is_ok());
    assert!(h.internal.authenticate(bearer(&stolen)).await.is_ok());

    // Once every token the old key signed has expired, it verifies nothing and leaves the JWKS.
    h.clock
        .advance(h.config.retired_key_grace() + Duration::from_secs(1));
    let status = refused(&mut h, &stolen).await;
    assert_refused(
        &status,
        Code::Unauthenticated,
        Some(reason::CREDENTIAL_UNKNOWN),
    );
    let status = refused(&mut h, &before).await;
    assert_eq!(status.code(), Code::Unauthenticated);
    let jwks = h.auth.tokens().jwks_json();
    assert!(!jwks.contains(&old_kid) && jwks.contains(&new_kid));
    // The new key's tokens are unaffected (a fresh login at the new time).
    let fresh = h.login(&user.email).await;
    assert!(h.internal.authenticate(bearer(&fresh)).await.is_ok());
}

#[tokio::test]
async fn keys_rotate_by_age() {
    let h = Harness::start().await;
    let first = h.auth.tokens().signing_kid().unwrap();
    assert!(!h.auth.tokens().rotate_if_due().await.unwrap());
    h.clock
        .advance(h.config.jwt_key_rotation + Duration::from_secs(1));
    assert!(h.auth.tokens().rotate_if_due().await.unwrap());
    assert_ne!(h.auth.tokens().signing_kid().unwrap(), first);
}
