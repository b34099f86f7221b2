//! The first accounts: `easel-auth bootstrap` makes the first admin and key of an empty
//! database; [`bootstrap_dev_account`] makes (idempotently) the development account of the
//! embedded `easel up`.

use std::sync::Arc;

use easel_proto::account::v1::{Role, Tier};

use crate::Config;
use crate::account::normalize_email;
use crate::config::AuthConfig;
use crate::db;
use crate::error::AuthError;
use crate::model::{SystemClock, UserId, scope};
use crate::password::Password;
use crate::secret::{ApiKeySecret, KeyFormatError};
use crate::service::Auth;
use easel_runtime::error::Internal;

/// The development account of `easel up`.
#[derive(Clone, PartialEq, Eq)]
pub struct DevAccount {
    /// Its email.
    pub email: String,
    /// Its API key, when made now or fixed by the caller; `None` when the account existed.
    pub api_key: Option<String>,
}

impl std::fmt::Debug for DevAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevAccount")
            .field("email", &self.email)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Why a bootstrap failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The email is not an email address.
    #[error("{0:?} is not an email address")]
    InvalidEmail(String),
    /// The password breaks the rules.
    #[error("the password must be 12 to 1024 characters")]
    InvalidPassword,
    /// The fixed API key is not `easel_<prefix>_<secret>`.
    #[error("the fixed API key is malformed: {0}")]
    MalformedKey(#[source] KeyFormatError),
    /// The fixed API key's prefix belongs to another key (another user's, or another secret).
    #[error("the fixed API key clashes with an existing key; choose another")]
    KeyConflict,
    /// The fixed API key exists but was revoked or has expired.
    #[error("the fixed API key was revoked or has expired; choose another")]
    KeyUnusable,
    /// `bootstrap` runs only until the first admin exists.
    #[error("an admin exists already; bootstrap only sets up an empty database")]
    AdminExists,
    /// The database, Redis or the key store failed.
    #[error("auth: {0}")]
    Auth(#[from] AuthError),
}

/// A new API key in the `easel_<prefix>_<secret>` format (32 random bytes of secret).
pub fn generate_api_key() -> String {
    ApiKeySecret::generate().expose()
}

fn admin_scopes() -> Vec<String> {
    scope::for_role(Role::Admin)
}

/// Makes sure the development account exists: on first use an admin (tier enterprise) with a
/// key (`fixed_api_key` if given, else a random one), returned; later `api_key` is `None`,
/// unless `fixed_api_key` is given, in which case that key is made sure to exist and returned.
pub async fn bootstrap_dev_account(
    config: &Config,
    email: &str,
    fixed_api_key: Option<&str>,
) -> Result<DevAccount, BootstrapError> {
    let email =
        normalize_email(email).map_err(|_| BootstrapError::InvalidEmail(email.to_string()))?;
    let fixed = fixed_api_key
        .map(|key| ApiKeySecret::parse(key.trim()).map_err(BootstrapError::MalformedKey))
        .transpose()?;
    let auth = Auth::open(&config.auth, Arc::new(SystemClock)).await?;

    let existing = db::find_user_by_email(auth.db(), &email).await?;
    let user_id = match existing {
        Some(user) => {
            let user_id = UserId::parse(&user.id).ok_or_else(|| {
                AuthError::from(Internal::new(format!("malformed user id {:?}", user.id)))
            })?;
            let Some(fixed) = fixed else {
                return Ok(DevAccount {
                    email,
                    api_key: None,
                });
            };
            if let Some(key) = db::find_key_by_prefix(auth.db(), fixed.prefix()).await? {
                if key.owner != user.id || !fixed.matches(&key.secret_hash) {
                    return Err(BootstrapError::KeyConflict);
                }
                let expired = key
                    .expires_at_ms
                    .is_some_and(|expires| expires <= chrono::Utc::now().timestamp_millis());
                if key.revoked_at_ms.is_some() || expired {
                    return Err(BootstrapError::KeyUnusable);
                }
                return Ok(DevAccount {
                    email,
                    api_key: Some(fixed.expose()),
                });
            }
            return insert_dev_key(&auth, &user_id, email, fixed).await;
        }
        None => {
            let user = auth
                .insert_user(&email, None, Tier::Enterprise, Role::Admin)
                .await?;
            tracing::info!(user_id = %user.id, "development account created");
            UserId::parse(&user.id).ok_or_else(|| {
                AuthError::from(Internal::new(format!("malformed user id {:?}", user.id)))
            })?
        }
    };
    let secret = fixed.unwrap_or_else(ApiKeySecret::generate);
    insert_dev_key(&auth, &user_id, email, secret).await
}

async fn insert_dev_key(
    auth: &Auth,
    user_id: &UserId,
    email: String,
    secret: ApiKeySecret,
) -> Result<DevAccount, BootstrapError> {
    match auth
        .insert_key(user_id, "development", &admin_scopes(), None, Some(secret))
        .await
    {
        Ok((_, key)) => Ok(DevAccount {
            email,
            api_key: Some(key),
        }),
        Err(AuthError::AlreadyExists(_)) => Err(BootstrapError::KeyConflict),
        Err(error) => Err(error.into()),
    }
}

/// What `easel-auth bootstrap` made.
#[derive(Clone)]
pub struct Bootstrapped {
    /// The admin's id.
    pub user_id: String,
    /// The admin's email.
    pub email: String,
    /// The admin's API key, to show once.
    pub api_key: String,
}

impl std::fmt::Debug for Bootstrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bootstrapped")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .finish_non_exhaustive()
    }
}

/// Makes the first admin (tier enterprise) and an API key; refuses once an admin exists.
pub async fn bootstrap_admin(
    config: &AuthConfig,
    email: &str,
    password: Option<&str>,
) -> Result<Bootstrapped, BootstrapError> {
    let email =
        normalize_email(email).map_err(|_| BootstrapError::InvalidEmail(email.to_string()))?;
    let password = password.map(Password::new);
    if let Some(password) = &password {
        password
            .validate_new("password")
            .map_err(|_| BootstrapError::InvalidPassword)?;
    }
    let auth = Auth::open(config, Arc::new(SystemClock)).await?;
    if db::any_admin(auth.db(), Role::Admin as i32).await? {
        return Err(BootstrapError::AdminExists);
    }
    let user = auth
        .insert_user(&email, password.as_ref(), Tier::Enterprise, Role::Admin)
        .await?;
    let user_id = UserId::parse(&user.id).ok_or_else(|| {
        AuthError::from(Internal::new(format!("malformed user id {:?}", user.id)))
    })?;
    let (_, api_key) = auth
        .insert_key(&user_id, "bootstrap", &admin_scopes(), None, None)
        .await?;
    tracing::info!(user_id = %user.id, "first admin created");
    Ok(Bootstrapped {
        user_id: user.id,
        email,
        api_key,
    })
}
