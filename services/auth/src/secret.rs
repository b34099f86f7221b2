//! API key material: `easel_<prefix>_<secret>`, where the prefix is public (it finds the row)
//! and only the SHA-256 of the secret is stored, compared in constant time.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every API key starts with this.
pub const KEY_PREFIX: &str = "easel_";
/// Random bytes in a generated secret.
pub const SECRET_BYTES: usize = 32;
/// Random bytes in a generated public prefix (hex-encoded, so twice as many characters).
const PREFIX_BYTES: usize = 6;
/// The shortest secret accepted (a generated one is 43 characters).
const MIN_SECRET_CHARS: usize = 32;
/// The longest secret accepted.
const MAX_SECRET_CHARS: usize = 128;

/// A parsed API key; its `Debug` shows the public prefix only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeySecret {
    prefix: String,
    secret: String,
}

impl fmt::Debug for ApiKeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeySecret(easel_{}_<redacted>)", self.prefix)
    }
}

/// Why a string is not an API key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// Not `easel_<prefix>_<secret>`.
    #[error("an API key looks like easel_<prefix>_<secret>")]
    Shape,
    /// The prefix is not 4 to 32 of `[a-z0-9]`.
    #[error("the prefix of an API key is 4 to 32 lowercase letters or digits")]
    Prefix,
    /// The secret is not 32 to 128 of `[A-Za-z0-9_-]`.
    #[error("the secret of an API key is 32 to 128 letters, digits, '-' or '_'")]
    Secret,
}

impl ApiKeySecret {
    /// A new key: a random public prefix and 32 random bytes of secret.
    pub fn generate() -> Self {
        let mut prefix = [0_u8; PREFIX_BYTES];
        rand::fill(&mut prefix[..]);
        let mut secret = [0_u8; SECRET_BYTES];
        rand::fill(&mut secret[..]);
        ApiKeySecret {
            prefix: hex::encode(prefix),
            secret: URL_SAFE_NO_PAD.encode(secret),
        }
    }

    /// Parses `easel_<prefix>_<secret>`.
    pub fn parse(value: &str) -> Result<Self, KeyFormatError> {
        let rest = value
            .strip_prefix(KEY_PREFIX)
            .ok_or(KeyFormatError::Shape)?;
        let (prefix, secret) = rest.split_once('_').ok_or(KeyFormatError::Shape)?;
        if !(4..=32).contains(&prefix.len())
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(KeyFormatError::Prefix);
        }
        if !(MIN_SECRET_CHARS..=MAX_SECRET_CHARS).contains(&secret.len())
            || !secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(KeyFormatError::Secret);
        }
        Ok(ApiKeySecret {
            prefix: prefix.to_string(),
            secret: secret.to_string(),
        })
    }

    /// The public prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The whole key, to show once to its owner.
    pub fn expose(&self) -> String {
        format!("{KEY_PREFIX}{}_{}", self.prefix, self.secret)
    }

    /// The stored form: hex SHA-256 of the secret.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }

    /// Whether the secret matches a stored hash, in constant time.
    pub fn matches(&self, stored_hash: &str) -> bool {
        let Ok(stored) = hex::decode(stored_hash) else {
            return false;
        };
        let actual: [u8; 32] = Sha256::digest(self.secret.as_bytes()).into();
        actual.as_slice().ct_eq(&stored).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_match_their_hash_only() {
        let key = ApiKeySecret::generate();
        let exposed = key.expose();
        assert!(exposed.starts_with("easel_"));
        let parsed = ApiKeySecret::parse(&exposed).unwrap();
        assert_eq!(parsed, key);
        assert_eq!(parsed.prefix().len(), 12);
        assert!(parsed.matches(&key.hash()));
        assert!(!ApiKeySecret::generate().matches(&key.hash()));
        assert!(!parsed.matches("not hex"));
        assert!(!format!("{parsed:?}").contains(&key.secret));
        // 32 random bytes, unpadded base64url.
        assert_eq!(key.secret.len(), 43);
    }

    #[test]
    fn secrets_may_contain_underscores() {
        let value = format!("easel_abcd1234_{}", "a_b-".repeat(10));
        let parsed = ApiKeySecret::parse(&value).unwrap();
        assert_eq!(parsed.prefix(), "abcd1234");
        assert_eq!(parsed.expose(), value);
    }

    #[test]
    fn malformed_keys_say_why() {
        let secret = "s".repeat(40);
        for (value, error) in [
            ("".to_string(), KeyFormatError::Shape),
            ("sk_live_x".to_string(), KeyFormatError::Shape),
            ("easel_abcd".to_string(), KeyFormatError::Shape),
            (format!("easel_AB12_{secret}"), KeyFormatError::Prefix),
            (format!("easel_ab_{secret}"), KeyFormatError::Prefix),
            ("easel_abcd1234_short".to_string(), KeyFormatError::Secret),
            (format!("easel_abcd1234_{secret}!"), KeyFormatError::Secret),
        ] {
            assert_eq!(ApiKeySecret::parse(&value), Err(error), "{value}");
        }
    }
}
