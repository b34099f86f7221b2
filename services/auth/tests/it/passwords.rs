//! Passwords: the same answer for a wrong password and an unknown email; brute force limited
//! per email and per client IP with RetryInfo.

use easel_auth_client::{RateQuota, reason};
use easel_proto::account::v1::{DisableUserRequest, LoginRequest, Tier};
use easel_runtime::error::Error;
use tonic::{Code, Request};

use crate::support::{Harness, PASSWORD, assert_refused, with_key};

fn login(email: &str, password: &str, ip: &str) -> Request<LoginRequest> {
    let mut request = Request::new(LoginRequest {
        email: email.into(),
        password: password.into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", ip.parse().unwrap());
    request
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let wrong = h
        .account
        .login(login(
            &user.email,
            "not the password at all",
            "198.51.100.1",
        ))
        .await
        .unwrap_err();
    let unknown = h
        .account
        .login(login("nobody@example.test", PASSWORD, "198.51.100.2"))
        .await
        .unwrap_err();
    assert_refused(&wrong, Code::Unauthenticated, Some(reason::INVALID_LOGIN));
    assert_eq!(wrong.code(), unknown.code());
    assert_eq!(wrong.message(), unknown.message());
    assert_eq!(
        Error::from_status(&wrong).reason(),
        Error::from_status(&unknown).reason()
    );
    // Emails are case-insensitive; the right password works.
    let upper = user.email.to_uppercase();
    assert!(
        h.account
            .login(login(&upper, PASSWORD, "198.51.100.3"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn brute_force_is_limited_per_email_with_retry_info() {
    let mut h = Harness::start_with(|config| {
        config.login_per_email = RateQuota {
            per_minute: 1,
            burst: 3,
        };
    })
    .await;
    let user = h.user(Tier::Free).await;
    // `user()` logged in once already: two wrong attempts fill the burst.
    for attempt in 0..2 {
        let status = h
            .account
            .login(login(
                &user.email,
                "wrong password!",
                &format!("198.51.100.{attempt}"),
            ))
            .await
            .unwrap_err();
        assert_refused(&status, Code::Unauthenticated, Some(reason::INVALID_LOGIN));
    }
    // Even the right password, from another address, waits now.
    let limited = h
        .account
        .login(login(&user.email, PASSWORD, "203.0.113.50"))
        .await
        .unwrap_err();
    assert_refused(
        &limited,
        Code::ResourceExhausted,
        Some(easel_runtime::error::reason::RATE_LIMITED),
    );
    let retry = Error::from_status(&limited)
        .retry_after()
        .expect("RetryInfo");
    assert!(retry.as_secs() <= 60, "{retry:?}");
    // Another account is not affected.
    let other = h.user(Tier::Free).await;
    assert!(
        h.account
            .login(login(&other.email, PASSWORD, "203.0.113.51"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn brute_force_is_limited_per_client_ip() {
    let mut h = Harness::start_with(|config| {
        config.login_per_ip = RateQuota {
            per_minute: 1,
            burst: 4,
        };
    })
    .await;
    for index in 0..4 {
        let status = h
            .account
            .login(login(
                &format!("guess{index}@example.test"),
                "password guess!",
                "192.0.2.7",
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
    }
    let limited = h
        .account
        .login(login("guess9@example.test", "password guess!", "192.0.2.7"))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    assert!(Error::from_status(&limited).retry_after().is_some());
    // Another address still gets an answer.
    let status = h
        .account
        .login(login("guess9@example.test", "password guess!", "192.0.2.8"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_disabled_user_cannot_log_in_or_use_keys() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Free).await;
    let token = h.login(&user.email).await;
    h.account
        .disable_user(with_key(
            DisableUserRequest {
                user_id: user.id.clone(),
            },
            &h.admin_key.clone(),
        ))
        .await
        .unwrap();
    let status = h
        .account
        .login(login(&user.email, PASSWORD, "198.51.100.9"))
        .await
        .unwrap_err();
    assert_refused(&status, Code::Unauthenticated, Some(reason::USER_DISABLED));
    for credential in [
        easel_auth_client::Credential::ApiKey(user.key.clone()),
        easel_auth_client::Credential::Bearer(token),
    ] {
        let status = h
            .internal
            .authenticate(easel_proto::auth::v1::AuthenticateRequest {
                credential: Some(credential.to_proto()),
            })
            .await
            .unwrap_err();
        assert_refused(&status, Code::Unauthenticated, Some(reason::USER_DISABLED));
    }
}
