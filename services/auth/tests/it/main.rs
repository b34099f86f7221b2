//! Integration tests of `easel-auth`, against the real service, PostgreSQL and Redis.

// Helpers outside `#[test]` functions panic on purpose: a failed setup fails the test.
#![allow(clippy::unwrap_used)]

mod admin;
mod bad_input;
mod bootstrap;
mod jwt;
mod keys;
mod passwords;
mod process;
mod revocation;
mod support;
mod usage;
