//! Scopes: what a credential may do. Auth issues them (a key carries a subset of its owner's,
//! a token carries its key's or, from login, all of the user's); the gateway's door checks
//! them against its authorization table before a request reaches a handler.

use std::fmt;

use easel_proto::auth::v1::Principal;
use easel_runtime::error::Error;

use crate::reason;

/// The `ErrorInfo` metadata key naming the scope a refused request needed.
pub const REQUIRED_SCOPE: &str = "required_scope";

/// One scope. The wire form ([`Scope::as_str`]) is what keys, tokens and principals carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// `jobs:read`: read jobs, follow their events, list models.
    JobsRead,
    /// `jobs:write`: submit and cancel jobs.
    JobsWrite,
    /// `keys:read`: list API keys.
    KeysRead,
    /// `keys:write`: create and revoke API keys.
    KeysWrite,
    /// `usage:read`: read usage and limits.
    UsageRead,
    /// `admin`: administer users (only an admin's credentials carry it).
    Admin,
}

impl Scope {
    /// Every scope there is.
    pub const ALL: [Scope; 6] = [
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::UsageRead,
        Scope::Admin,
    ];

    /// Every scope the user role grants (all but `admin`).
    pub const USER: [Scope; 5] = [
        Scope::JobsRead,
        Scope::JobsWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::UsageRead,
    ];

    /// The wire name, e.g. `jobs:read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::JobsRead => "jobs:read",
            Scope::JobsWrite => "jobs:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::UsageRead => "usage:read",
            Scope::Admin => "admin",
        }
    }

    /// The scope of a wire name; `None` for names easel does not know.
    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name)
    }

    /// Whether `principal` carries this scope.
    pub fn is_held_by(self, principal: &Principal) -> bool {
        principal.scopes.iter().any(|held| held == self.as_str())
    }

    /// The refusal of a credential without this scope: PERMISSION_DENIED (HTTP 403) with
    /// `ErrorInfo{reason: MISSING_SCOPE, metadata: {required_scope}}`.
    pub fn missing(self) -> Error {
        Error::permission_denied(format!(
            "this credential lacks the {:?} scope this call needs",
            self.as_str()
        ))
        .with_reason(reason::MISSING_SCOPE)
        .with_metadata(REQUIRED_SCOPE, self.as_str())
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use easel_runtime::ErrorCode;

    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_none() {
        for scope in Scope::ALL {
            assert_eq!(Scope::parse(scope.as_str()), Some(scope));
        }
        assert_eq!(Scope::parse("jobs:*"), None);
        assert_eq!(Scope::parse("JOBS:READ"), None);
        assert!(!Scope::USER.contains(&Scope::Admin));
    }

    #[test]
    fn a_missing_scope_is_permission_denied_naming_it() {
        let principal = Principal {
            scopes: vec!["jobs:read".into()],
            ..Principal::default()
        };
        assert!(Scope::JobsRead.is_held_by(&principal));
        assert!(!Scope::JobsWrite.is_held_by(&principal));
        let error = Scope::JobsWrite.missing();
        assert_eq!(error.code(), ErrorCode::PermissionDenied);
        assert_eq!(error.reason(), Some(reason::MISSING_SCOPE));
        assert_eq!(
            error.metadata().get(REQUIRED_SCOPE).map(String::as_str),
            Some("jobs:write")
        );
        assert_eq!(error.http_status(), 403);
    }
}
