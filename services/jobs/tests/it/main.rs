//! Integration tests of `easel-jobs`, against the real service, PostgreSQL and Redis.

// Helpers outside `#[test]` functions panic on purpose: a failed setup fails the test.
#![allow(clippy::unwrap_used)]

mod api;
mod idempotency;
mod lifecycle;
mod process;
mod queue_contract;
mod reconciler;
mod submit;
mod support;
mod watch;
