//! The platform's tests live in `tests/it`: the gateway in front of the real auth, jobs,
//! storage and comfy-bridge, assembled in process by `easel-platform` (`tests/it/support.rs`),
//! one module per area (`door`, `rest`, `scopes`, `streams`, …).
