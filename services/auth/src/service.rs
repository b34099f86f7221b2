//! [`Auth`]: the logic behind the RPCs, callable directly by tests and by the bootstrap.
//!
//! This module opens the service's parts and authenticates credentials; the account and admin
//! operations live in [`crate::account`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use easel_auth_client::{Credential, MAX_CREDENTIAL_BYTES, RateLimiter, Scope, reason};
use easel_proto::account::v1::{Role, Tier};
use easel_proto::auth::v1::Principal;
use easel_runtime::redis::Redis;
use sea_orm::DatabaseConnection;

use crate::broadcast::Broadcaster;
use crate::config::AuthConfig;
use crate::db::{self, KeyRow, UserRow};
use crate::error::{AuthError, Result};
use crate::jwt::Tokens;
use crate::model::{Clock, UserId, from_millis, millis, role_from_db, scope, tier_from_db};
use crate::password::PasswordHasherPool;
use crate::secret::ApiKeySecret;
use easel_runtime::error::Internal;

/// A key's last use is written at most this often.
pub const LAST_USED_INTERVAL: Duration = Duration::from_secs(60);

/// How the caller authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    /// With an API key.
    ApiKey,
    /// With an access token.
    Bearer,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The user.
    pub user_id: UserId,
    /// Their tier.
    pub tier: Tier,
    /// Their role.
    pub role: Role,
    /// What the credential may do.
    pub scopes: Vec<String>,
    /// The API key behind the credential (the key itself, or the key a token came from).
    pub key_id: Option<String>,
    /// When that key expires, if it does.
    pub key_expires_at: Option<DateTime<Utc>>,
    /// When the credential stops working (a key's expiry or a token's `exp`).
    pub expires_at: Option<DateTime<Utc>>,
    /// How the caller authenticated.
    pub kind: CredentialKind,
}

impl Caller {
    /// Whether the credential carries `scope`.
    pub fn has_scope(&self, scope: Scope) -> bool {
        self.scopes.iter().any(|held| held == scope.as_str())
    }

    /// PERMISSION_DENIED (`MISSING_SCOPE`) unless the credential carries `scope`.
    pub fn require_scope(&self, scope: Scope) -> Result<()> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(AuthError::MissingScope(scope))
        }
    }

    /// PERMISSION_DENIED unless the caller is an admin with the admin scope. A credential
    /// keeps `admin` only while its user has the admin role ([`allowed_scopes`]); the role is
    /// checked again all the same.
    pub fn require_admin(&self) -> Result<()> {
        self.require_scope(Scope::Admin)?;
        if self.role == Role::Admin {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied(
                "this call needs the admin role".into(),
            ))
        }
    }
}

/// The service's logic and state; cheap to clone.
#[derive(Clone)]
pub struct Auth {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) db: DatabaseConnection,
    pub(crate) config: AuthConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) tokens: Tokens,
    pub(crate) passwords: PasswordHasherPool,
    pub(crate) limiter: RateLimiter,
    pub(crate) broadcaster: Broadcaster,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.inner.tokens)
            .field("limiter", &self.inner.limiter)
            .field("broadcaster", &self.inner.broadcaster)
            .finish_non_exhaustive()
    }
}

/// Opens Redis behind per-call deadlines and a circuit breaker. Redis need not answer now:
/// until it does, login limits are per process and revocations are not broadcast.
pub(crate) async fn connect_redis(config: &AuthConfig, url: &str) -> Result<Redis> {
    Redis::connect("auth", url, config.redis)
        .await
        .map_err(|error| AuthError::Unavailable(format!("invalid Redis URL: {error}")))
}

fn refused(message: &'static str, why: &'static str) -> AuthError {
    AuthError::unauthenticated(message, why)
}

/// Scopes as stored (a JSON array).
pub(crate) fn scopes_from_db(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_default()
}

impl Auth {
    /// Opens the database (migrating it), the signing keys, Redis when configured, and the
    /// password hasher.
    pub async fn open(config: &AuthConfig, clock: Arc<dyn Clock>) -> Result<Auth> {
        let db = db::connect(&config.database_url).await?;
        let tokens = Tokens::open(db.clone(), clock.clone(), config).await?;
        let passwords = PasswordHasherPool::new(config.password_hashing)?;
        let (limiter, redis) = match &config.redis_url {
            Some(url) => {
                let connection = connect_redis(config, url).await?;
                (
                    RateLimiter::redis(connection.clone(), config.redis_prefix.clone()),
                    Some(connection),
                )
            }
            None => (RateLimiter::in_process(), None),
        };
        Ok(Auth {
            inner: Arc::new(Inner {
                db,
                config: config.clone(),
                clock,
                tokens,
                passwords,
                limiter,
                broadcaster: Broadcaster::new(redis, &config.redis_prefix),
            }),
        })
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// The token issuer and verifier.
    pub fn tokens(&self) -> &Tokens {
        &self.inner.tokens
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.inner.config
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    /// The principal of an authenticated caller, with their tier's limits.
    pub fn principal(&self, caller: &Caller) -> Principal {
        Principal {
            user_id: caller.user_id.to_string(),
            tier: caller.tier as i32,
            role: caller.role as i32,
            scopes: caller.scopes.clone(),
            key_id: caller.key_id.clone().unwrap_or_default(),
            limits: Some(*self.inner.config.tiers.limits(caller.tier)),
        }
    }

    /// Who the credential belongs to, or UNAUTHENTICATED with the reason.
    pub async fn authenticate(&self, credential: &Credential) -> Result<Caller> {
        if credential.secret().len() > MAX_CREDENTIAL_BYTES {
            return Err(refused(
                "the credential is too long",
                reason::CREDENTIAL_MALFORMED,
            ));
        }
        let result = match credential {
            Credential::ApiKey(key) => self.authenticate_key(key).await,
            Credential::Bearer(token) => self.authenticate_token(token).await,
        };
        let outcome = match &result {
            Ok(_) => "accepted",
            Err(AuthError::Unauthenticated { reason, .. }) => reason,
            Err(_) => "error",
        };
        metrics::counter!(
            "easel_auth_authentications_total",
            "kind" => credential.kind(),
            "result" => outcome,
        )
        .increment(1);
        result
    }

    async fn active_user(&self, id: &str) -> Result<UserRow> {
        let user = match UserId::parse(id) {
            Some(id) => db::find_user(&self.inner.db, &id).await?,
            None => None,
        };
        let Some(user) = user else {
            return Err(refused(
                "the credential's user does not exist",
                reason::CREDENTIAL_UNKNOWN,
            ));
        };
        if user.disabled {
            return Err(refused("the user is disabled", reason::USER_DISABLED));
        }
        Ok(user)
    }

    fn check_key(&self, key: &KeyRow) -> Result<()> {
        if key.revoked_at_ms.is_some() {
            return Err(refused(
                "the API key has been revoked",
                reason::CREDENTIAL_REVOKED,
            ));
        }
        if key
            .expires_at_ms
            .is_some_and(|expires| expires <= millis(self.now()))
        {
            return Err(refused(
                "the API key has expired",
                reason::CREDENTIAL_EXPIRED,
            ));
        }
        Ok(())
    }

    async fn authenticate_key(&self, value: &str) -> Result<Caller> {
        let secret = ApiKeySecret::parse(value)
            .map_err(|_| refused("the API key is malformed", reason::CREDENTIAL_MALFORMED))?;
        let key = db::find_key_by_prefix(&self.inner.db, secret.prefix()).await?;
        // A wrong secret and a missing prefix get the same answer.
        let Some(key) = key.filter(|key| secret.matches(&key.secret_hash)) else {
            return Err(refused("unknown API key", reason::CREDENTIAL_UNKNOWN));
        };
        self.check_key(&key)?;
        let user = self.active_user(&key.owner).await?;
        let now_ms = millis(self.now());
        let interval = i64::try_from(LAST_USED_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if key
            .last_used_at_ms
            .is_none_or(|last| last <= now_ms - interval)
            && let Err(error) = db::touch_key(&self.inner.db, &key.id, now_ms, interval).await
        {
            // Bookkeeping only: the caller is authenticated all the same.
            tracing::warn!(error = %error, key_id = %key.id, "cannot record the key's last use");
        }
        let role = role_from_db(user.role);
        let expires_at = key.expires_at_ms.map(from_millis);
        Ok(Caller {
            user_id: UserId::parse(&user.id)
                .ok_or_else(|| Internal::new(format!("malformed user id {:?}", user.id)))?,
            tier: tier_from_db(user.tier),
            role,
            scopes: allowed_scopes(scopes_from_db(&key.scopes), role),
            key_id: Some(key.id),
            key_expires_at: expires_at,
            expires_at,
            kind: CredentialKind::ApiKey,
        })
    }

    async fn authenticate_token(&self, token: &str) -> Result<Caller> {
        let claims = self.inner.tokens.verify(token).await?;
        let user = self.active_user(&claims.sub).await?;
        let mut key_expires_at = None;
        let mut scopes: Vec<String> = claims
            .scope
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if !claims.key_id.is_empty() {
            let key = db::find_key(&self.inner.db, &claims.key_id)
                .await?
                .filter(|key| key.owner == user.id)
                .ok_or_else(|| {
                    refused(
                        "the access token's API key does not exist",
                        reason::CREDENTIAL_UNKNOWN,
                    )
                })?;
            self.check_key(&key)?;
            key_expires_at = key.expires_at_ms.map(from_millis);
            // A token never does more than the key it came from.
            let key_scopes = scopes_from_db(&key.scopes);
            scopes.retain(|scope| key_scopes.contains(scope));
        }
        let role = role_from_db(user.role);
        let token_expiry = from_millis(claims.exp.saturating_mul(1000));
        Ok(Caller {
            user_id: UserId::parse(&user.id)
                .ok_or_else(|| Internal::new(format!("malformed user id {:?}", user.id)))?,
            tier: tier_from_db(user.tier),
            role,
            scopes: allowed_scopes(scopes, role),
            key_id: (!claims.key_id.is_empty()).then_some(claims.key_id),
            key_expires_at,
            expires_at: Some(key_expires_at.map_or(token_expiry, |key| key.min(token_expiry))),
            kind: CredentialKind::Bearer,
        })
    }
}

/// The credential's scopes that the role still grants (a demoted admin loses `admin`).
fn allowed_scopes(scopes: Vec<String>, role: Role) -> Vec<String> {
    let granted = scope::for_role(role);
    scopes
        .into_iter()
        .filter(|scope| granted.contains(scope))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_bound_the_scopes_a_credential_keeps() {
        let scopes = vec![
            "jobs:read".to_string(),
            "admin".to_string(),
            "x".to_string(),
        ];
        assert_eq!(allowed_scopes(scopes.clone(), Role::User), ["jobs:read"]);
        assert_eq!(allowed_scopes(scopes, Role::Admin), ["jobs:read", "admin"]);
        assert_eq!(scopes_from_db("not json"), Vec::<String>::new());
    }
}
