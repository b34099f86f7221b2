//! The first accounts: the development account of `easel up` (idempotent) and the
//! `bootstrap` of an empty database.

use easel_auth::{BootstrapError, Config, bootstrap_admin, bootstrap_dev_account};
use easel_auth_client::Credential;
use easel_proto::account::v1::{Role, Tier};
use easel_runtime::Env;

fn config(database_url: &str) -> Config {
    let mut env = Env::from_pairs([
        ("EASEL_DATABASE_URL", database_url),
        ("EASEL_PASSWORD_HASH_MEMORY_KIB", "64"),
        ("EASEL_PASSWORD_HASH_ITERATIONS", "1"),
    ]);
    let config = Config::from_env(&mut env);
    env.finish().unwrap();
    config
}

async fn principal(config: &Config, key: &str) -> easel_auth::service::Caller {
    let auth = easel_auth::Auth::open(&config.auth, std::sync::Arc::new(easel_auth::SystemClock))
        .await
        .unwrap();
    auth.authenticate(&Credential::ApiKey(key.to_string()))
        .await
        .unwrap()
}

#[tokio::test]
async fn the_dev_account_is_made_once_and_a_fixed_key_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(&easel_test_support::TestDatabase::sqlite(dir.path()));

    let first = bootstrap_dev_account(&config, "dev@easel.local", None)
        .await
        .unwrap();
    assert_eq!(first.email, "dev@easel.local");
    let key = first.api_key.clone().expect("a key on first start");
    let caller = principal(&config, &key).await;
    assert_eq!(caller.role, Role::Admin);
    assert_eq!(caller.tier, Tier::Enterprise);
    assert!(!format!("{first:?}").contains(&key));

    // Idempotent: the second start makes nothing and shows no key.
    let second = bootstrap_dev_account(&config, "dev@easel.local", None)
        .await
        .unwrap();
    assert_eq!(second.api_key, None);

    // A fixed key is made to exist, and returned on every start.
    let fixed = easel_auth::generate_api_key();
    for _ in 0..2 {
        let account = bootstrap_dev_account(&config, "dev@easel.local", Some(&fixed))
            .await
            .unwrap();
        assert_eq!(account.api_key.as_deref(), Some(fixed.as_str()));
    }
    assert_eq!(principal(&config, &fixed).await.role, Role::Admin);
    assert_eq!(principal(&config, &key).await.user_id, caller.user_id);

    // A malformed fixed key is a clear error.
    let error = bootstrap_dev_account(&config, "dev@easel.local", Some("letmein"))
        .await
        .unwrap_err();
    assert!(matches!(error, BootstrapError::MalformedKey(_)), "{error}");
    assert!(
        error.to_string().contains("easel_<prefix>_<secret>"),
        "{error}"
    );
    // The same prefix with another secret clashes.
    let prefix = fixed.split('_').nth(1).unwrap();
    let clash = format!("easel_{prefix}_{}", "Z".repeat(43));
    let error = bootstrap_dev_account(&config, "dev@easel.local", Some(&clash))
        .await
        .unwrap_err();
    assert!(matches!(error, BootstrapError::KeyConflict), "{error}");
}

#[tokio::test]
async fn a_fixed_key_on_an_empty_database_is_the_first_key() {
    let database = easel_test_support::TestDatabase::postgres().await;
    let config = config(&database.url);
    let fixed = easel_auth::generate_api_key();
    let account = bootstrap_dev_account(&config, "dev@easel.local", Some(&fixed))
        .await
        .unwrap();
    assert_eq!(account.api_key.as_deref(), Some(fixed.as_str()));
    assert_eq!(principal(&config, &fixed).await.tier, Tier::Enterprise);
}

#[tokio::test]
async fn bootstrap_sets_up_an_empty_database_only() {
    let database = easel_test_support::TestDatabase::postgres().await;
    let config = config(&database.url);
    let made = bootstrap_admin(
        &config.auth,
        "root@example.test",
        Some("a long enough password"),
    )
    .await
    .unwrap();
    assert!(made.api_key.starts_with("easel_"));
    assert_eq!(principal(&config, &made.api_key).await.role, Role::Admin);
    let error = bootstrap_admin(&config.auth, "second@example.test", None)
        .await
        .unwrap_err();
    assert!(matches!(error, BootstrapError::AdminExists), "{error}");
    let error = bootstrap_admin(&config.auth, "x@example.test", Some("short"))
        .await
        .unwrap_err();
    assert!(matches!(error, BootstrapError::InvalidPassword), "{error}");
}
