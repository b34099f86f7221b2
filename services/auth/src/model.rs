//! Domain types: ids, the injectable clock, scopes, and time conversions.

use chrono::{DateTime, Utc};
use easel_proto::account::v1::{Role, Tier};

easel_runtime::typed_id!(
    /// A user's id, `usr_…`.
    UserId,
    "usr"
);

easel_runtime::typed_id!(
    /// An API key's id, `key_…`.
    KeyId,
    "key"
);

/// What a credential may do. Keys carry a subset of their owner's; tokens carry their key's
/// (or, from Login, all of the user's). The names are [`Scope`]'s, shared with the gateway.
pub mod scope {
    use easel_auth_client::Scope;
    use easel_proto::account::v1::Role;

    /// The scopes a role grants: all of them for admins, all but `admin` for users.
    pub fn for_role(role: Role) -> Vec<String> {
        let scopes: &[Scope] = if role == Role::Admin {
            &Scope::ALL
        } else {
            &Scope::USER
        };
        scopes
            .iter()
            .map(|scope| scope.as_str().to_string())
            .collect()
    }

    /// Every scope's name, for error messages.
    pub fn known() -> String {
        Scope::ALL.map(Scope::as_str).join(", ")
    }
}

pub use easel_runtime::clock::{Clock, ManualClock, SystemClock};

/// A time as stored: Unix milliseconds.
pub fn millis(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// A stored time back.
pub fn from_millis(value: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(value).unwrap_or_default()
}

/// A duration in milliseconds, saturating.
pub fn duration_millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A time as a protobuf timestamp.
pub fn timestamp(time: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

/// A stored time as a protobuf timestamp.
pub fn timestamp_ms(value: i64) -> pbjson_types::Timestamp {
    timestamp(from_millis(value))
}

/// A tier as stored; unknown stored values read as free.
pub fn tier_from_db(value: i32) -> Tier {
    match Tier::try_from(value) {
        Ok(Tier::Unspecified) | Err(_) => Tier::Free,
        Ok(tier) => tier,
    }
}

/// A role as stored; unknown stored values read as user (never admin by accident).
pub fn role_from_db(value: i32) -> Role {
    match Role::try_from(value) {
        Ok(Role::Admin) => Role::Admin,
        _ => Role::User,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_their_scopes() {
        let admin = easel_auth_client::Scope::Admin.as_str().to_string();
        assert!(!scope::for_role(Role::User).contains(&admin));
        assert!(scope::for_role(Role::Admin).contains(&admin));
        assert_eq!(
            scope::for_role(Role::Unspecified),
            scope::for_role(Role::User)
        );
        assert_eq!(scope::for_role(Role::Admin).len(), 6);
    }

    #[test]
    fn stored_enums_fall_back_safely() {
        assert_eq!(tier_from_db(99), Tier::Free);
        assert_eq!(tier_from_db(Tier::Pro as i32), Tier::Pro);
        assert_eq!(role_from_db(99), Role::User);
        assert_eq!(role_from_db(Role::Admin as i32), Role::Admin);
    }

    #[test]
    fn the_manual_clock_moves_only_when_told() {
        let clock = ManualClock::new();
        let before = clock.now();
        clock.advance(std::time::Duration::from_secs(60));
        assert_eq!((clock.now() - before).num_seconds(), 60);
        assert_eq!(from_millis(millis(before)), before);
    }
}
