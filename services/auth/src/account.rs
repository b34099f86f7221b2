//! The account operations behind `AccountService` and `RecordUsage`: keys, tokens, usage and
//! the admin calls. Each takes the authenticated [`Caller`] and scopes its queries to them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use easel_auth_client::{Revocation, Scope, reason};
use easel_proto::account::v1::{DailyUsage, Role, Tier, TierLimits};
use sha2::{Digest, Sha256};

use crate::db::{self, KeyRow, UserRow};
use crate::error::{AuthError, Result};
use crate::model::{KeyId, UserId, duration_millis, millis, scope};
use crate::password::{MAX_PASSWORD_BYTES, Password};
use crate::secret::ApiKeySecret;
use crate::service::{Auth, Caller, CredentialKind};
use easel_runtime::error::InternalContext;
use easel_runtime::page;

/// The longest an API key may live.
pub const MAX_KEY_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The longest email accepted (RFC 5321).
const MAX_EMAIL_BYTES: usize = 254;
/// Scopes a key may list at most.
const MAX_SCOPES: usize = 16;

/// One page of keys.
#[derive(Debug)]
pub struct KeyPage {
    /// The keys, newest first.
    pub keys: Vec<KeyRow>,
    /// The next page's token; empty on the last page.
    pub next_page_token: String,
}

/// A signed access token.
#[derive(Debug)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

/// Lowercases and checks an email.
pub fn normalize_email(email: &str) -> Result<String> {
    let email = email.trim().to_lowercase();
    let valid = email.len() <= MAX_EMAIL_BYTES
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty());
    if valid {
        Ok(email)
    } else {
        Err(AuthError::field("email", "is not an email address"))
    }
}

fn encode_page_token(last: &KeyRow) -> String {
    page::encode(&last.id, "")
}

fn parse_page_token(token: &str) -> Result<Option<KeyId>> {
    page::decode(token, "", KeyId::parse)
        .map_err(|invalid| AuthError::field(page::FIELD, invalid.to_string()))
}

fn parse_user_id(value: &str) -> Result<UserId> {
    UserId::parse(value).ok_or_else(|| AuthError::field("user_id", "is not a user id (usr_…)"))
}

/// A tier a client sent: unspecified is `default`, unknown values are refused.
fn parse_tier(value: i32, default: Option<Tier>) -> Result<Tier> {
    match Tier::try_from(value) {
        Ok(Tier::Unspecified) => {
            default.ok_or_else(|| AuthError::field("tier", "must be FREE, PRO or ENTERPRISE"))
        }
        Ok(tier) => Ok(tier),
        Err(_) => Err(AuthError::field("tier", format!("unknown tier {value}"))),
    }
}

fn parse_role(value: i32) -> Result<Role> {
    match Role::try_from(value) {
        Ok(Role::Unspecified) => Ok(Role::User),
        Ok(role) => Ok(role),
        Err(_) => Err(AuthError::field("role", format!("unknown role {value}"))),
    }
}

/// `requested` scopes checked against the caller's: every name known, none the caller lacks,
/// at most [`MAX_SCOPES`]; sorted and deduplicated. Empty means all of the caller's.
fn subset_of_caller(caller: &Caller, requested: &[String]) -> Result<Vec<String>> {
    if requested.len() > MAX_SCOPES {
        return Err(AuthError::field(
            "scopes",
            format!("at most {MAX_SCOPES} scopes"),
        ));
    }
    let mut granted = BTreeSet::new();
    for name in requested {
        let Some(wanted) = Scope::parse(name) else {
            return Err(AuthError::field(
                "scopes",
                format!("unknown scope {name:?} (known: {})", scope::known()),
            ));
        };
        caller.require_scope(wanted)?;
        granted.insert(wanted);
    }
    Ok(if granted.is_empty() {
        caller.scopes.clone()
    } else {
        granted
            .into_iter()
            .map(|scope| scope.as_str().to_string())
            .collect()
    })
}

/// Hex SHA-256, to key rate limits by email without keeping emails in Redis.
fn digest(value: &str) -> String {
    hex::encode(Sha256::digest(value.as_bytes()))
}

impl Auth {
    /// Makes a key for the caller; the row and the whole key (shown once).
    pub async fn create_api_key(
        &self,
        caller: &Caller,
        name: &str,
        scopes: &[String],
        ttl: Option<Duration>,
    ) -> Result<(KeyRow, String)> {
        caller.require_scope(Scope::KeysWrite)?;
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AuthError::field("name", "must be 1 to 100 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(AuthError::field(
                "name",
                "must not contain control characters",
            ));
        }
        // Empty means all of the creating credential's scopes, written out on the key, so a
        // stored key always lists what it may do (a key listing none may do nothing).
        let granted = subset_of_caller(caller, scopes)?;
        let now = self.now();
        let mut expires_at = match ttl {
            Some(ttl) if ttl.is_zero() || ttl > MAX_KEY_TTL => {
                return Err(AuthError::field(
                    "ttl",
                    "must be longer than zero and at most 10 years",
                ));
            }
            Some(ttl) => Some(now + chrono::Duration::milliseconds(duration_millis(ttl))),
            None => None,
        };
        // A key made with a key that expires may not outlive it.
        if let Some(limit) = caller.key_expires_at {
            expires_at = Some(expires_at.map_or(limit, |expires| expires.min(limit)));
        }
        let owner = caller.user_id.clone();
        self.insert_key(&owner, name, &granted, expires_at, None)
            .await
    }

    /// Stores a key for `owner`: `secret` if given, else a new one (another on a prefix clash).
    pub(crate) async fn insert_key(
        &self,
        owner: &UserId,
        name: &str,
        scopes: &[String],
        expires_at: Option<DateTime<Utc>>,
        secret: Option<ApiKeySecret>,
    ) -> Result<(KeyRow, String)> {
        let fixed = secret.is_some();
        let mut secret = secret.unwrap_or_else(ApiKeySecret::generate);
        let scopes = serde_json::to_string(scopes).internal("encoding scopes")?;
        let mut tries = 0;
        loop {
            let row = KeyRow {
                id: KeyId::new().into_string(),
                owner: owner.to_string(),
                name: name.to_string(),
                prefix: secret.prefix().to_string(),
                secret_hash: secret.hash(),
                scopes: scopes.clone(),
                created_at_ms: millis(self.now()),
                last_used_at_ms: None,
                expires_at_ms: expires_at.map(millis),
                revoked_at_ms: None,
            };
            match db::insert_key(&self.inner.db, row).await {
                Ok(row) => {
                    tracing::info!(key_id = %row.id, owner = %owner, "api key created");
                    return Ok((row, secret.expose()));
                }
                Err(AuthError::AlreadyExists(_)) if !fixed && tries < 3 => {
                    tries += 1;
                    secret = ApiKeySecret::generate();
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// A page of the caller's keys, newest first, never with secrets.
    pub async fn list_api_keys(
        &self,
        caller: &Caller,
        page_size: u32,
        page_token: &str,
    ) -> Result<KeyPage> {
        caller.require_scope(Scope::KeysRead)?;
        let page_size = match page_size {
            0 => 50,
            1..=100 => page_size,
            _ => return Err(AuthError::field("page_size", "must be 1 to 100")),
        };
        let after = parse_page_token(page_token)?;
        let mut keys = db::list_keys_for_owner(
            &self.inner.db,
            &caller.user_id,
            after.as_ref(),
            u64::from(page_size) + 1,
        )
        .await?;
        let more = keys.len() > page_size as usize;
        keys.truncate(page_size as usize);
        let next_page_token = match keys.last() {
            Some(last) if more => encode_page_token(last),
            _ => String::new(),
        };
        Ok(KeyPage {
            keys,
            next_page_token,
        })
    }

    /// Revokes one of the caller's keys and tells every replica; NOT_FOUND for anyone else's.
    pub async fn revoke_api_key(&self, caller: &Caller, key_id: &str) -> Result<KeyRow> {
        caller.require_scope(Scope::KeysWrite)?;
        let id = KeyId::parse(key_id)
            .ok_or_else(|| AuthError::field("key_id", "is not an API key id (key_…)"))?;
        let key =
            db::revoke_key_for_owner(&self.inner.db, &caller.user_id, &id, millis(self.now()))
                .await?
                .ok_or(AuthError::NotFound("API key"))?;
        tracing::info!(key_id = %key.id, owner = %caller.user_id, "api key revoked");
        self.inner
            .broadcaster
            .publish(&Revocation::KeyId(key.id.clone()))
            .await;
        Ok(key)
    }

    /// Email and password for an access token, limited per email and per client IP. A wrong
    /// password and an unknown email get the same answer, after the same work.
    pub async fn login(
        &self,
        email: &str,
        password: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<IssuedToken> {
        if email.trim().is_empty() || email.len() > MAX_EMAIL_BYTES {
            return Err(AuthError::field("email", "is required (at most 254 bytes)"));
        }
        if password.is_empty() || password.len() > MAX_PASSWORD_BYTES {
            return Err(AuthError::field(
                "password",
                format!("is required (at most {MAX_PASSWORD_BYTES} bytes)"),
            ));
        }
        let email = email.trim().to_lowercase();
        let config = &self.inner.config;
        let by_email = self
            .inner
            .limiter
            .check(
                &format!("login:email:{}", digest(&email)),
                config.login_per_email,
            )
            .await?;
        if !by_email.allowed {
            metrics::counter!("easel_auth_logins_total", "result" => "rate_limited").increment(1);
            return Err(AuthError::RateLimited(by_email));
        }
        if let Some(ip) = client_ip {
            let by_ip = self
                .inner
                .limiter
                .check(&format!("login:ip:{ip}"), config.login_per_ip)
                .await?;
            if !by_ip.allowed {
                metrics::counter!("easel_auth_logins_total", "result" => "rate_limited")
                    .increment(1);
                return Err(AuthError::RateLimited(by_ip));
            }
        }
        let user = db::find_user_by_email(&self.inner.db, &email).await?;
        let hash = user.as_ref().and_then(|user| user.password_hash.as_deref());
        let matched = self
            .inner
            .passwords
            .verify(&Password::new(password), hash)
            .await?;
        let user = match user {
            Some(user) if matched => user,
            _ => {
                metrics::counter!("easel_auth_logins_total", "result" => "refused").increment(1);
                return Err(AuthError::unauthenticated(
                    "the email or password is incorrect",
                    reason::INVALID_LOGIN,
                ));
            }
        };
        if user.disabled {
            return Err(AuthError::unauthenticated(
                "the user is disabled",
                reason::USER_DISABLED,
            ));
        }
        let role = crate::model::role_from_db(user.role);
        let (token, expires_at) = self.inner.tokens.issue(
            &user.id,
            "",
            &scope::for_role(role),
            config.access_token_ttl,
        )?;
        metrics::counter!("easel_auth_logins_total", "result" => "accepted").increment(1);
        Ok(IssuedToken { token, expires_at })
    }

    /// The calling API key for a short-lived token (never past the key's expiry) carrying
    /// `scopes`, or all of the key's when empty. A token never carries more than its key: a
    /// scope the key lacks is refused (PERMISSION_DENIED, `MISSING_SCOPE`), not dropped, so a
    /// client never holds a token that silently does less than it asked for.
    pub async fn exchange_token(
        &self,
        caller: &Caller,
        ttl: Option<Duration>,
        scopes: &[String],
    ) -> Result<IssuedToken> {
        let key_id = match (&caller.key_id, caller.kind) {
            (Some(key_id), CredentialKind::ApiKey) => key_id.clone(),
            _ => {
                return Err(AuthError::PermissionDenied(
                    "ExchangeToken takes an API key (X-API-Key), not a token".into(),
                ));
            }
        };
        let config = &self.inner.config;
        let mut ttl = match ttl {
            None => config.access_token_ttl,
            Some(ttl) if ttl < Duration::from_secs(1) => {
                return Err(AuthError::field("ttl", "must be at least one second"));
            }
            Some(ttl) => ttl.min(config.access_token_max_ttl),
        };
        if let Some(expires) = caller.key_expires_at {
            let left = (expires - self.now()).to_std().unwrap_or(Duration::ZERO);
            ttl = ttl.min(left);
        }
        if ttl < Duration::from_secs(1) {
            return Err(AuthError::unauthenticated(
                "the API key has expired",
                reason::CREDENTIAL_EXPIRED,
            ));
        }
        let scopes = subset_of_caller(caller, scopes)?;
        let (token, expires_at) =
            self.inner
                .tokens
                .issue(caller.user_id.as_str(), &key_id, &scopes, ttl)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// The caller's usage over the last `days` UTC days (1 to 90, default 30), newest first,
    /// and their tier's limits.
    pub async fn get_usage(
        &self,
        caller: &Caller,
        days: u32,
    ) -> Result<(Vec<DailyUsage>, TierLimits)> {
        caller.require_scope(Scope::UsageRead)?;
        let days = match days {
            0 => 30,
            1..=90 => days,
            _ => return Err(AuthError::field("days", "must be 1 to 90")),
        };
        let since = (self.now() - chrono::Duration::days(i64::from(days) - 1))
            .format("%Y-%m-%d")
            .to_string();
        let rows = db::usage_for_user(&self.inner.db, &caller.user_id, &since).await?;
        let usage = rows
            .into_iter()
            .map(|row| DailyUsage {
                date: row.day,
                jobs_submitted: u64::try_from(row.jobs_submitted).unwrap_or(0),
                gpu_seconds: row.gpu_seconds.max(0.0),
                bytes_stored: u64::try_from(row.bytes_stored).unwrap_or(0),
            })
            .collect();
        Ok((usage, *self.inner.config.tiers.limits(caller.tier)))
    }

    /// Adds to a user's usage of the current UTC day (called by jobs and storage).
    pub async fn record_usage(
        &self,
        user_id: &str,
        jobs_submitted: u64,
        gpu_seconds: f64,
        bytes_stored: i64,
    ) -> Result<()> {
        let user_id = parse_user_id(user_id)?;
        let jobs = i64::try_from(jobs_submitted)
            .ok()
            .filter(|jobs| *jobs <= 1_000_000)
            .ok_or_else(|| AuthError::field("jobs_submitted", "must be at most 1000000"))?;
        if !gpu_seconds.is_finite() || !(0.0..=1.0e9).contains(&gpu_seconds) {
            return Err(AuthError::field("gpu_seconds", "must be 0 to 1e9"));
        }
        let day = self.now().format("%Y-%m-%d").to_string();
        db::add_usage(
            &self.inner.db,
            &user_id,
            &day,
            jobs,
            gpu_seconds,
            bytes_stored,
        )
        .await
    }

    /// Makes a user (admin).
    pub async fn create_user(
        &self,
        caller: &Caller,
        email: &str,
        password: &str,
        tier: i32,
        role: i32,
    ) -> Result<UserRow> {
        caller.require_admin()?;
        let email = normalize_email(email)?;
        let password = Password::new(password);
        password.validate_new("password")?;
        let tier = parse_tier(tier, Some(Tier::Free))?;
        let role = parse_role(role)?;
        let user = self
            .insert_user(&email, Some(&password), tier, role)
            .await?;
        tracing::info!(user_id = %user.id, by = %caller.user_id, "user created");
        Ok(user)
    }

    /// Stores a user; `password` `None` makes one that cannot log in with a password.
    pub(crate) async fn insert_user(
        &self,
        email: &str,
        password: Option<&Password>,
        tier: Tier,
        role: Role,
    ) -> Result<UserRow> {
        let password_hash = match password {
            Some(password) => Some(self.inner.passwords.hash(password).await?),
            None => None,
        };
        let now = millis(self.now());
        db::insert_user(
            &self.inner.db,
            UserRow {
                id: UserId::new().into_string(),
                email: email.to_string(),
                password_hash,
                tier: tier as i32,
                role: role as i32,
                disabled: false,
                created_at_ms: now,
                updated_at_ms: now,
            },
        )
        .await
    }

    /// Changes a user's tier (admin); replicas drop the user's cached principals.
    pub async fn set_user_tier(
        &self,
        caller: &Caller,
        user_id: &str,
        tier: i32,
    ) -> Result<UserRow> {
        caller.require_admin()?;
        let id = parse_user_id(user_id)?;
        let tier = parse_tier(tier, None)?;
        let user = db::set_user_tier(&self.inner.db, &id, tier as i32, millis(self.now()))
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        tracing::info!(user_id = %id, tier = crate::tiers::tier_name(tier), by = %caller.user_id, "user tier set");
        self.inner
            .broadcaster
            .publish(&Revocation::UserId(id.to_string()))
            .await;
        Ok(user)
    }

    /// Disables a user (admin): their keys and tokens stop working on every replica.
    pub async fn disable_user(&self, caller: &Caller, user_id: &str) -> Result<UserRow> {
        caller.require_admin()?;
        let id = parse_user_id(user_id)?;
        if id == caller.user_id {
            return Err(AuthError::FailedPrecondition(
                "an admin cannot disable themselves".into(),
            ));
        }
        let user = db::disable_user(&self.inner.db, &id, millis(self.now()))
            .await?
            .ok_or(AuthError::NotFound("user"))?;
        tracing::info!(user_id = %id, by = %caller.user_id, "user disabled");
        self.inner
            .broadcaster
            .publish(&Revocation::UserId(id.to_string()))
            .await;
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn emails_are_normalized_and_checked() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in ["", "no-at-sign", "@example.com", "ada@", "a da@x.y"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(normalize_email(&format!("{}@x.y", "a".repeat(300))).is_err());
    }

    #[test]
    fn page_tokens_round_trip_and_reject_forgeries() {
        let id = KeyId::new();
        let row = KeyRow {
            id: id.to_string(),
            owner: String::new(),
            name: String::new(),
            prefix: String::new(),
            secret_hash: String::new(),
            scopes: String::new(),
            created_at_ms: 0,
            last_used_at_ms: None,
            expires_at_ms: None,
            revoked_at_ms: None,
        };
        assert_eq!(
            parse_page_token(&encode_page_token(&row)).unwrap(),
            Some(id)
        );
        assert_eq!(parse_page_token("").unwrap(), None);
        for bad in ["!!!", "a2V5X18uLi8", &URL_SAFE_NO_PAD.encode("usr_x")] {
            assert!(parse_page_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn enums_from_clients_are_checked() {
        assert_eq!(parse_tier(0, Some(Tier::Free)).unwrap(), Tier::Free);
        assert!(parse_tier(0, None).is_err());
        assert!(parse_tier(42, None).is_err());
        assert_eq!(parse_tier(Tier::Pro as i32, None).unwrap(), Tier::Pro);
        assert_eq!(parse_role(0).unwrap(), Role::User);
        assert!(parse_role(7).is_err());
    }
}
