//! The chaos suite's short form: each test starts the platform as processes, runs a few
//! seconds of steady load per fault, and asserts that no accepted job was lost or duplicated,
//! that watchers saw no event twice, that SIGTERM exits cleanly and that every accepted job
//! succeeded. Each prints its table row(s); `EASEL_CHAOS_REPORT=FILE` collects them all.

mod dependencies;
mod network;
mod processes;
