//! The chaos suite: the platform as separate processes (the harness of `tests/e2e`) under a
//! steady, bounded load on loopback, with one fault at a time injected and healed — kill -9
//! and SIGTERM of each service and of a worker, a Redis restart, a PostgreSQL restart, the
//! backend's death, and a partition or delay on the link between jobs and comfy-bridge. For
//! each fault it counts the jobs accepted, succeeded, failed, lost and duplicated and the
//! latency of submits and GETs during the fault ([`report::Row`]).
//!
//! The short form runs in the test command (`tests/it`); `EASEL_CHAOS_SECONDS` makes each
//! outage longer for the benchmark form (see `docs/chaos.md`).

pub mod chaos;
pub mod infra;
pub mod link;
pub mod load;
pub mod relay;
pub mod report;

pub use chaos::{Chaos, Fault, Setup, Target, Timing};
pub use report::{Expect, Row};

/// Prints `rows` and panics naming every broken promise: nothing lost or duplicated, no event
/// seen twice, clean SIGTERM exits, and what `expect` adds.
pub fn assert_promises(rows: &[Row], expect: Expect) {
    report::publish(rows);
    let broken: Vec<String> = rows
        .iter()
        .flat_map(|row| {
            row.violations(expect)
                .into_iter()
                .map(move |violation| format!("{}: {violation}", row.fault))
        })
        .collect();
    assert!(broken.is_empty(), "broken promises:\n{}", broken.join("\n"));
}
