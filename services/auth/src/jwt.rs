//! Access tokens: EdDSA (Ed25519) JWTs with a `kid`, signed by the newest key in the database.
//!
//! Keys are made on first start and rotated by age (or by `easel-auth rotate-keys`); a retired
//! key keeps verifying until the last token it can have signed has expired, then leaves the
//! JWKS. Validation pins the algorithm to EdDSA, requires `exp`, `iss`, `aud` and `sub`, and
//! checks times against the service's clock with a small leeway.

use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use easel_auth_client::reason;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use sea_orm::DatabaseConnection;
use serde::{Deserialize, Serialize};

use crate::config::AuthConfig;
use crate::db::{self, SigningKeyRow};
use crate::error::{AuthError, Result};
use crate::model::{Clock, duration_millis, from_millis, millis};
use easel_runtime::error::{Internal, InternalContext};

/// An unknown `kid` reloads the keys from the database at most this often (a replica may have
/// rotated), so garbage tokens cannot hammer the database.
const UNKNOWN_KID_RELOAD_EVERY: Duration = Duration::from_secs(5);

/// The claims of an access token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The user's id.
    pub sub: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Not before, Unix seconds.
    pub nbf: i64,
    /// Token id.
    pub jti: String,
    /// The API key the token was exchanged from; empty for a login.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_id: String,
    /// Space-separated scopes.
    #[serde(default)]
    pub scope: String,
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("sub", &self.sub)
            .field("exp", &self.exp)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// One key, ready to sign or verify.
struct LoadedKey {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    public_key: String,
    retired: bool,
    verify_until_ms: Option<i64>,
}

impl LoadedKey {
    fn from_row(row: &SigningKeyRow) -> Result<LoadedKey> {
        let pkcs8 = STANDARD
            .decode(&row.private_key)
            .internal(format!("signing key {}", row.kid))?;
        let public = URL_SAFE_NO_PAD
            .decode(&row.public_key)
            .internal(format!("signing key {}", row.kid))?;
        Ok(LoadedKey {
            kid: row.kid.clone(),
            encoding: EncodingKey::from_ed_der(&pkcs8),
            decoding: DecodingKey::from_ed_der(&public),
            public_key: row.public_key.clone(),
            retired: row.retired_at_ms.is_some(),
            verify_until_ms: row.verify_until_ms,
        })
    }

    /// Whether tokens it signed are still accepted at `now_ms`.
    fn verifies_at(&self, now_ms: i64) -> bool {
        !self.retired || self.verify_until_ms.is_some_and(|until| now_ms < until)
    }
}

/// The loaded keys, newest first.
struct KeySet {
    keys: Vec<LoadedKey>,
}

impl KeySet {
    fn signing(&self) -> Option<&LoadedKey> {
        self.keys.iter().find(|key| !key.retired)
    }

    fn verifying(&self, kid: &str, now_ms: i64) -> Option<&LoadedKey> {
        self.keys
            .iter()
            .find(|key| key.kid == kid && key.verifies_at(now_ms))
    }
}

/// A new Ed25519 private key as a PKCS#8 document.
pub fn generate_pkcs8() -> Result<Vec<u8>> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map(|document| document.as_ref().to_vec())
        .map_err(|_| Internal::new("cannot generate an Ed25519 key").into())
}

/// A new Ed25519 key as a row.
fn generate_row(now_ms: i64) -> Result<SigningKeyRow> {
    let document = generate_pkcs8()?;
    let pair =
        Ed25519KeyPair::from_pkcs8(&document).internal("reading the generated Ed25519 key")?;
    Ok(SigningKeyRow {
        kid: uuid::Uuid::now_v7().simple().to_string(),
        private_key: STANDARD.encode(&document),
        public_key: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        created_at_ms: now_ms,
        retired_at_ms: None,
        verify_until_ms: None,
    })
}

/// The JWK of an Ed25519 public key (RFC 8037).
#[derive(Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    crv: &'static str,
    x: &'a str,
    kid: &'a str,
    alg: &'static str,
    #[serde(rename = "use")]
    usage: &'static str,
}

/// Issues and verifies access tokens; cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    db: DatabaseConnection,
    clock: Arc<dyn Clock>,
    issuer: String,
    audience: String,
    leeway: Duration,
    rotation: Duration,
    retired_grace: Duration,
    keys: Arc<RwLock<Arc<KeySet>>>,
    last_reload: Arc<std::sync::Mutex<Instant>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

fn refused(message: &'static str, why: &'static str) -> AuthError {
    AuthError::unauthenticated(message, why)
}

impl Tokens {
    /// Loads the keys, making the first one if there is none.
    pub async fn open(
        db: DatabaseConnection,
        clock: Arc<dyn Clock>,
        config: &AuthConfig,
    ) -> Result<Tokens> {
        let tokens = Tokens {
            db,
            clock,
            issuer: config.jwt_issuer.clone(),
            audience: config.jwt_audience.clone(),
            leeway: config.jwt_leeway,
            rotation: config.jwt_key_rotation,
            retired_grace: config.retired_key_grace(),
            keys: Arc::new(RwLock::new(Arc::new(KeySet { keys: Vec::new() }))),
            last_reload: Arc::new(std::sync::Mutex::new(Instant::now())),
        };
        tokens.reload().await?;
        if tokens.current().signing().is_none() {
            tracing::info!("no signing key yet; making the first one");
            let row = generate_row(millis(tokens.clock.now()))?;
            db::insert_signing_key(&tokens.db, row).await?;
            tokens.reload().await?;
        }
        Ok(tokens)
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the keys from the database again.
    pub async fn reload(&self) -> Result<()> {
        let rows = db::signing_keys(&self.db).await?;
        let keys = rows
            .iter()
            .map(LoadedKey::from_row)
            .collect::<Result<Vec<_>>>()?;
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(KeySet { keys });
        *self
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
        Ok(())
    }

    /// Makes a new signing key now and retires the older ones; returns the new `kid`.
    pub async fn rotate(&self) -> Result<String> {
        let now = self.clock.now();
        let row = generate_row(millis(now))?;
        let kid = row.kid.clone();
        db::insert_signing_key(&self.db, row.clone()).await?;
        let verify_until = millis(now) + duration_millis(self.retired_grace);
        let retired = db::retire_signing_keys(&self.db, &row, millis(now), verify_until).await?;
        // Keys that stopped verifying a day ago are of no use to anyone.
        let dead = db::delete_dead_signing_keys(&self.db, millis(now) - 24 * 3600 * 1000).await?;
        self.reload().await?;
        tracing::info!(kid, retired, dead, "signing key rotated");
        Ok(kid)
    }

    /// Rotates when the signing key is older than the rotation period; whether it did.
    pub async fn rotate_if_due(&self) -> Result<bool> {
        self.reload().await?;
        let now_ms = millis(self.clock.now());
        let newest = db::signing_keys(&self.db)
            .await?
            .into_iter()
            .find(|row| row.retired_at_ms.is_none());
        let due = newest.is_none_or(|row| {
            now_ms.saturating_sub(row.created_at_ms) >= duration_millis(self.rotation)
        });
        if due {
            self.rotate().await?;
        }
        Ok(due)
    }

    /// Signs a token for `sub` valid for `ttl`; the token and its expiry.
    pub fn issue(
        &self,
        sub: &str,
        key_id: &str,
        scopes: &[String],
        ttl: Duration,
    ) -> Result<(String, DateTime<Utc>)> {
        let now = self.clock.now();
        let expires = now + chrono::Duration::milliseconds(duration_millis(ttl));
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: sub.to_string(),
            exp: expires.timestamp(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
            key_id: key_id.to_string(),
            scope: scopes.join(" "),
        };
        let keys = self.current();
        let key = keys
            .signing()
            .ok_or_else(|| Internal::new("no signing key"))?;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        header.typ = Some("JWT".to_string());
        let token =
            jsonwebtoken::encode(&header, &claims, &key.encoding).internal("signing a token")?;
        Ok((token, from_millis(claims.exp * 1000)))
    }

    /// Verifies a token: signature by a known key, algorithm, issuer, audience and times.
    pub async fn verify(&self, token: &str) -> Result<Claims> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            refused(
                "the access token is malformed",
                reason::CREDENTIAL_MALFORMED,
            )
        })?;
        if header.alg != Algorithm::EdDSA {
            return Err(refused(
                "the access token's algorithm is not accepted",
                reason::CREDENTIAL_UNKNOWN,
            ));
        }
        let Some(kid) = header.kid else {
            return Err(refused(
                "the access token names no signing key",
                reason::CREDENTIAL_UNKNOWN,
            ));
        };
        let now = self.clock.now();
        let now_ms = millis(now);
        let mut keys = self.current();
        if keys.verifying(&kid, now_ms).is_none() && self.may_reload() {
            self.reload().await?;
            keys = self.current();
        }
        let Some(key) = keys.verifying(&kid, now_ms) else {
            return Err(refused(
                "the access token was signed by an unknown key",
                reason::CREDENTIAL_UNKNOWN,
            ));
        };

        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        // Times are checked below against the service's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.decoding, &validation)
            .map_err(|error| match error.kind() {
                ErrorKind::InvalidSignature => refused(
                    "the access token's signature is invalid",
                    reason::CREDENTIAL_UNKNOWN,
                ),
                ErrorKind::InvalidIssuer => refused(
                    "the access token was issued by someone else",
                    reason::CREDENTIAL_UNKNOWN,
                ),
                ErrorKind::InvalidAudience => refused(
                    "the access token is for another audience",
                    reason::CREDENTIAL_UNKNOWN,
                ),
                ErrorKind::InvalidAlgorithm => refused(
                    "the access token's algorithm is not accepted",
                    reason::CREDENTIAL_UNKNOWN,
                ),
                _ => refused(
                    "the access token is malformed",
                    reason::CREDENTIAL_MALFORMED,
                ),
            })?
            .claims;
        let now_seconds = now.timestamp();
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(0);
        if claims.exp.saturating_add(leeway) <= now_seconds {
            return Err(refused(
                "the access token has expired",
                reason::CREDENTIAL_EXPIRED,
            ));
        }
        if claims.nbf > now_seconds.saturating_add(leeway) {
            return Err(refused(
                "the access token is not valid yet",
                reason::CREDENTIAL_UNKNOWN,
            ));
        }
        Ok(claims)
    }

    fn may_reload(&self) -> bool {
        self.last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
            >= UNKNOWN_KID_RELOAD_EVERY
    }

    /// The JSON Web Key Set of every key that still verifies (RFC 7517).
    pub fn jwks_json(&self) -> String {
        let now_ms = millis(self.clock.now());
        let keys = self.current();
        let jwks: Vec<Jwk<'_>> = keys
            .keys
            .iter()
            .filter(|key| key.verifies_at(now_ms))
            .map(|key| Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x: &key.public_key,
                kid: &key.kid,
                alg: "EdDSA",
                usage: "sig",
            })
            .collect();
        serde_json::json!({ "keys": jwks }).to_string()
    }

    /// The `kid` that signs new tokens.
    pub fn signing_kid(&self) -> Option<String> {
        self.current().signing().map(|key| key.kid.clone())
    }
}
