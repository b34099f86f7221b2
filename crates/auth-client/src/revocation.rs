//! The revocation broadcast: auth publishes one of these on `{prefix}auth:revocations` when a
//! key is revoked, a user disabled or a tier changed, and every [`crate::Authenticator`]
//! listening evicts what it cached for that key or user.

use serde::{Deserialize, Serialize};

/// One revocation, as JSON: `{"keyId":"key_…"}` or `{"userId":"usr_…"}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Revocation {
    /// An API key was revoked: principals authenticated by it (or by tokens exchanged from it)
    /// must go.
    #[serde(rename = "keyId")]
    KeyId(String),
    /// A user was disabled or changed tier: all their principals must go.
    #[serde(rename = "userId")]
    UserId(String),
}

impl Revocation {
    /// The JSON message.
    pub fn to_json(&self) -> String {
        // Serializing a one-field enum of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a message; `None` for anything else (logged by the caller).
    pub fn from_json(payload: &[u8]) -> Option<Revocation> {
        serde_json::from_slice(payload).ok()
    }

    /// Whether a principal is affected.
    pub fn matches(&self, principal: &easel_proto::auth::v1::Principal) -> bool {
        match self {
            Revocation::KeyId(key_id) => !key_id.is_empty() && principal.key_id == *key_id,
            Revocation::UserId(user_id) => principal.user_id == *user_id,
        }
    }
}

/// The Redis channel of revocations for a key prefix (e.g. `easel:` → `easel:auth:revocations`).
pub fn revocation_channel(prefix: &str) -> String {
    format!("{prefix}auth:revocations")
}

#[cfg(test)]
mod tests {
    use easel_proto::auth::v1::Principal;

    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        assert_eq!(
            Revocation::KeyId("key_1".into()).to_json(),
            r#"{"keyId":"key_1"}"#
        );
        assert_eq!(
            Revocation::UserId("usr_1".into()).to_json(),
            r#"{"userId":"usr_1"}"#
        );
        assert_eq!(
            Revocation::from_json(br#"{"userId":"usr_2"}"#),
            Some(Revocation::UserId("usr_2".into()))
        );
        assert_eq!(Revocation::from_json(b"{}"), None);
        assert_eq!(Revocation::from_json(b"not json"), None);
        assert_eq!(revocation_channel("easel:"), "easel:auth:revocations");
    }

    #[test]
    fn revocations_match_by_key_or_user() {
        let principal = Principal {
            user_id: "usr_a".into(),
            key_id: "key_a".into(),
            ..Default::default()
        };
        assert!(Revocation::KeyId("key_a".into()).matches(&principal));
        assert!(!Revocation::KeyId("key_b".into()).matches(&principal));
        assert!(Revocation::UserId("usr_a".into()).matches(&principal));
        let login = Principal {
            user_id: "usr_a".into(),
            ..Default::default()
        };
        assert!(!Revocation::KeyId(String::new()).matches(&login));
    }
}
