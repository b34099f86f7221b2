//! The admin calls: only admins, with clear errors.

use easel_proto::account::v1::{
    CreateUserRequest, DisableUserRequest, Role, SetUserTierRequest, Tier,
};
use tonic::Code;

use crate::support::{Harness, PASSWORD, assert_refused, with_key};

#[tokio::test]
async fn only_admins_administer_users() {
    let mut h = Harness::start().await;
    let user = h.user(Tier::Enterprise).await;
    let victim = h.user(Tier::Free).await;
    let create = h
        .account
        .create_user(with_key(
            CreateUserRequest {
                email: "new@example.test".into(),
                password: PASSWORD.into(),
                tier: Tier::Enterprise as i32,
                role: Role::Admin as i32,
            },
            &user.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&create, Code::PermissionDenied, None);
    let tier = h
        .account
        .set_user_tier(with_key(
            SetUserTierRequest {
                user_id: user.id.clone(),
                tier: Tier::Enterprise as i32,
            },
            &user.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&tier, Code::PermissionDenied, None);
    let disable = h
        .account
        .disable_user(with_key(
            DisableUserRequest {
                user_id: victim.id.clone(),
            },
            &user.key,
        ))
        .await
        .unwrap_err();
    assert_refused(&disable, Code::PermissionDenied, None);
}

#[tokio::test]
async fn admins_create_users_set_tiers_and_disable() {
    let mut h = Harness::start().await;
    let admin = h.admin_key.clone();
    let created = h
        .account
        .create_user(with_key(
            CreateUserRequest {
                email: "Grace@Example.test".into(),
                password: PASSWORD.into(),
                tier: 0,
                role: 0,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(created.email, "grace@example.test");
    assert_eq!(created.tier, Tier::Free as i32);
    assert_eq!(created.role, Role::User as i32);
    assert!(created.id.starts_with("usr_"));
    assert!(!format!("{created:?}").contains("argon2"));

    let duplicate = h
        .account
        .create_user(with_key(
            CreateUserRequest {
                email: "GRACE@example.test".into(),
                password: PASSWORD.into(),
                tier: 0,
                role: 0,
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_refused(&duplicate, Code::AlreadyExists, None);

    let updated = h
        .account
        .set_user_tier(with_key(
            SetUserTierRequest {
                user_id: created.id.clone(),
                tier: Tier::Pro as i32,
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(updated.tier, Tier::Pro as i32);

    let disabled = h
        .account
        .disable_user(with_key(
            DisableUserRequest {
                user_id: created.id.clone(),
            },
            &admin,
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(disabled.disabled);

    let missing = easel_runtime::ids::new_id("usr");
    for status in [
        h.account
            .set_user_tier(with_key(
                SetUserTierRequest {
                    user_id: missing.clone(),
                    tier: Tier::Pro as i32,
                },
                &admin,
            ))
            .await
            .unwrap_err(),
        h.account
            .disable_user(with_key(
                DisableUserRequest {
                    user_id: missing.clone(),
                },
                &admin,
            ))
            .await
            .unwrap_err(),
    ] {
        assert_refused(&status, Code::NotFound, None);
    }

    // An admin cannot lock themselves out.
    let me = h
        .auth
        .authenticate(&easel_auth_client::Credential::ApiKey(admin.clone()))
        .await
        .unwrap()
        .user_id;
    let status = h
        .account
        .disable_user(with_key(
            DisableUserRequest {
                user_id: me.to_string(),
            },
            &admin,
        ))
        .await
        .unwrap_err();
    assert_refused(&status, Code::FailedPrecondition, None);
}
