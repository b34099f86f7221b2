//! easel's attack suite: each test is an attack from a security review, run against the real
//! platform (the service binaries as separate processes through `easel_e2e::Platform`, or
//! `easel up`), that must be refused or survived. One module per area; the next endpoint adds
//! its attacks here.

// A failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

mod backend_isolation;
mod host_header;
mod scopes;
mod service_identity;
