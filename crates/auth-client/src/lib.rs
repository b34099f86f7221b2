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

/// The reasons of auth's refusals (and the door's scope check) are in the one list of
/// [`easel_runtime::error::reason`]; re-exported for the crates that refuse credentials.
pub use easel_runtime::error::reason;
