//! `easel-auth-client`: what callers of easel-auth share.
//!
//! - [`Credential`]: the caller's API key (`X-API-Key`) or bearer JWT (`Authorization: Bearer`),
//!   read from HTTP headers or gRPC metadata; its `Debug` never shows the secret;
//! - [`Authenticator`]: resolves a credential to its [`Principal`] through auth's
//!   `Authenticate` RPC, caching answers by the credential's SHA-256 (never the secret itself)
//!   and evicting them when auth broadcasts a revocation over Redis pub/sub;
//! - [`RateLimiter`]: a GCRA limiter, atomic in one Lua script on Redis so a limit holds across
//!   every replica, or in-process (`governor`) for the embedded mode; its [`RateDecision`]
//!   turns into `RateLimit-*` headers or a `RESOURCE_EXHAUSTED` error with `RetryInfo`; while
//!   Redis is down it limits in-process or refuses, as the caller chooses ([`WhenUnavailable`]);
//! - [`Revocation`]: the message auth publishes on `{prefix}auth:revocations`;
//! - [`Scope`]: what a credential may do, and the refusal of one that lacks a scope;
//! - [`reason`]: the machine-readable reasons of auth's `UNAUTHENTICATED` answers.
//!
//! [`Principal`]: easel_proto::auth::v1::Principal

mod authenticator;
mod cache;
mod credential;
mod rate_limit;
mod revocation;
mod scope;

pub use authenticator::{Authenticator, AuthenticatorConfig};
pub use credential::{Credential, MAX_CREDENTIAL_BYTES};
pub use rate_limit::{RateDecision, RateLimiter, RateQuota, WhenUnavailable};
pub use revocation::{Revocation, revocation_channel};
pub use scope::{REQUIRED_SCOPE, Scope};

/// Machine-readable reasons (`google.rpc.ErrorInfo.reason`) of auth's refusals (and the door's
/// scope check), so a client can tell a revoked key from a typo without parsing messages.
pub mod reason {
    /// No credential was sent.
    pub const CREDENTIAL_MISSING: &str = "CREDENTIAL_MISSING";
    /// The credential is not in a format easel issues (or the header is malformed).
    pub const CREDENTIAL_MALFORMED: &str = "CREDENTIAL_MALFORMED";
    /// No such API key, or a token whose signature or signing key is not recognized.
    pub const CREDENTIAL_UNKNOWN: &str = "CREDENTIAL_UNKNOWN";
    /// The API key was revoked (or the token was exchanged from a revoked key).
    pub const CREDENTIAL_REVOKED: &str = "CREDENTIAL_REVOKED";
    /// The API key or token has expired.
    pub const CREDENTIAL_EXPIRED: &str = "CREDENTIAL_EXPIRED";
    /// The user behind the credential is disabled.
    pub const USER_DISABLED: &str = "USER_DISABLED";
    /// Email and password do not match an enabled account (which of the two is not said).
    pub const INVALID_LOGIN: &str = "INVALID_LOGIN";
    /// The credential is valid but lacks the scope the call needs (PERMISSION_DENIED); the
    /// `required_scope` metadata names it.
    pub const MISSING_SCOPE: &str = "MISSING_SCOPE";
}
