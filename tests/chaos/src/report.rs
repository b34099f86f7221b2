//! One fault's outcome and the table of outcomes.

use std::fmt::Write;
use std::time::Duration;

/// Latency percentiles of one kind of request in one window.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    /// Requests in the window.
    pub count: usize,
    /// Of which failed (not 202/200, or no answer in time).
    pub errors: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Latency {
    /// Percentiles over `latencies` (every request, failed ones too: a client waits for those
    /// as well), with `errors` of them failed.
    pub fn of(mut latencies: Vec<Duration>, errors: usize) -> Latency {
        latencies.sort_unstable();
        let at = |quantile: f64| {
            if latencies.is_empty() {
                return Duration::ZERO;
            }
            // Nearest rank.
            let rank = (quantile * latencies.len() as f64).ceil() as usize;
            latencies[rank.clamp(1, latencies.len()) - 1]
        };
        Latency {
            count: latencies.len(),
            errors,
            p50: at(0.50),
            p99: at(0.99),
        }
    }

    fn cell(&self) -> String {
        format!("{}/{}", self.p50.as_millis(), self.p99.as_millis())
    }
}

/// What happened to the jobs and requests of one fault.
#[derive(Clone, Debug, Default)]
pub struct Row {
    /// The fault's name, e.g. `kill -9 jobs`.
    pub fault: String,
    /// Why it was not run, when it was not.
    pub skipped: Option<String>,
    /// Jobs accepted (202).
    pub accepted: usize,
    /// Of which SUCCEEDED.
    pub succeeded: usize,
    /// Of which FAILED, CANCELLED or EXPIRED.
    pub failed: usize,
    /// Of which not terminal by the deadline after the fault healed.
    pub lost: usize,
    /// Jobs whose result was produced more than once: more than one successful execution on
    /// the backend, or more than one stored artifact.
    pub duplicated: usize,
    /// Of `duplicated`: jobs executed to success more than once on the backend.
    pub executed_twice: usize,
    /// Of `duplicated`: jobs with more than one stored artifact.
    pub stored_twice: usize,
    /// Jobs that succeeded after more than one attempt.
    pub retried: usize,
    /// Succeeded jobs whose execution the simulator's history showed: the duplicate count
    /// is only as good as this (it must not be 0 when jobs succeeded).
    pub observed: usize,
    /// Succeeded jobs whose stored artifacts storage listed (likewise).
    pub listed: usize,
    /// Submit latency from the fault's start until it healed.
    pub submit: Latency,
    /// GET latency in the same window.
    pub get: Latency,
    /// Submit latency before the fault.
    pub submit_before: Latency,
    /// GET latency before the fault.
    pub get_before: Latency,
    /// Watcher streams resumed, events repeated, jobs with two terminal events.
    pub watch: crate::load::WatchStats,
    /// How long the fault lasted (injection to healed).
    pub outage: Duration,
    /// From the load's end until the last accepted job was terminal (or the deadline).
    pub settled: Duration,
    /// A SIGTERM that did not end in exit 0 within the deadline: what happened instead.
    pub unclean_exit: Option<String>,
    /// Failed jobs' error codes, for the reader.
    pub failures: Vec<String>,
}

impl Row {
    /// A fault that could not run here, with the reason.
    pub fn skipped(fault: &str, reason: &str) -> Row {
        Row {
            fault: fault.to_string(),
            skipped: Some(reason.to_string()),
            ..Row::default()
        }
    }

    /// What the suite asserts: nothing lost, nothing duplicated, and (where `all_succeed`)
    /// every accepted job succeeded. Returns the broken promises.
    pub fn violations(&self, expect: Expect) -> Vec<String> {
        let mut broken = Vec::new();
        if self.skipped.is_some() {
            return broken;
        }
        if self.lost > 0 {
            broken.push(format!("{} of {} jobs lost", self.lost, self.accepted));
        }
        // Executed twice is a duplicate unless the fault killed the process that held the
        // first execution's streamed images: then that result died unstored, and the rerun is
        // the retry that keeps the job from being lost. Stored twice is always a duplicate.
        let duplicated = if expect.rerun_after_outputs_died {
            self.stored_twice
        } else {
            self.duplicated
        };
        if duplicated > 0 {
            broken.push(format!(
                "{} jobs duplicated ({} executed twice, {} stored twice)",
                self.duplicated, self.executed_twice, self.stored_twice
            ));
        }
        if self.watch.repeated > 0 || self.watch.terminal_twice > 0 {
            broken.push(format!(
                "watchers saw {} repeated events and {} jobs ending twice",
                self.watch.repeated, self.watch.terminal_twice
            ));
        }
        if let Some(exit) = &self.unclean_exit {
            broken.push(exit.clone());
        }
        if self.succeeded > 0 && (self.observed == 0 || self.listed == 0) {
            broken.push(format!(
                "duplicates cannot be counted: {} of {} succeeded jobs seen on the backend, {} in storage",
                self.observed, self.succeeded, self.listed
            ));
        }
        if expect.first_attempt && self.retried > 0 {
            broken.push(format!(
                "{} of {} jobs needed more than one attempt",
                self.retried, self.succeeded
            ));
        }
        if expect.all_succeed && self.succeeded != self.accepted {
            broken.push(format!(
                "{} of {} accepted jobs succeeded ({} failed: {:?})",
                self.succeeded, self.accepted, self.failed, self.failures
            ));
        }
        if self.accepted == 0 {
            broken.push("no job was accepted: the load did not run".into());
        }
        broken
    }
}

/// What a fault must leave behind beyond "nothing lost, nothing duplicated".
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    /// Every accepted job succeeded.
    pub all_succeed: bool,
    /// Every job succeeded on its first attempt (the fault cost no attempt).
    pub first_attempt: bool,
    /// The fault kills a process that holds a finished run's images in memory (they stream
    /// from the backend and are never written there), so that run may execute again; its
    /// result is still stored once.
    pub rerun_after_outputs_died: bool,
}

impl Expect {
    /// Every accepted job succeeded, retries allowed.
    pub const SUCCEED: Expect = Expect {
        all_succeed: true,
        first_attempt: false,
        rerun_after_outputs_died: false,
    };
    /// Every accepted job succeeded at its first attempt.
    pub const FIRST_ATTEMPT: Expect = Expect {
        all_succeed: true,
        first_attempt: true,
        rerun_after_outputs_died: false,
    };
    /// Every accepted job succeeded, each stored once; a run whose images died with a killed
    /// process may have executed again.
    pub const SUCCEED_AFTER_RERUN: Expect = Expect {
        all_succeed: true,
        first_attempt: false,
        rerun_after_outputs_died: true,
    };
}

/// The table header, in Markdown.
pub const HEADER: &str = "| fault | outage s | accepted | succeeded | failed | lost | duplicated | retried | submit p50/p99 ms (before) | GET p50/p99 ms (before) | submit err | GET err | watch resumed | settled s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";

/// One row of the table.
pub fn line(row: &Row) -> String {
    if let Some(reason) = &row.skipped {
        return format!("| {} | skipped: {reason} ||||||||||||| \n", row.fault);
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "| {} | {:.1} | {} | {} | {} | {} | {} | {} | {} ({}) | {} ({}) | {}/{} | {}/{} | {} | {:.1} |",
        row.fault,
        row.outage.as_secs_f64(),
        row.accepted,
        row.succeeded,
        row.failed,
        row.lost,
        row.duplicated,
        row.retried,
        row.submit.cell(),
        row.submit_before.cell(),
        row.get.cell(),
        row.get_before.cell(),
        row.submit.errors,
        row.submit.count,
        row.get.errors,
        row.get.count,
        row.watch.resumed,
        row.settled.as_secs_f64(),
    );
    text
}

/// The table of `rows`.
pub fn table(rows: &[Row]) -> String {
    let mut text = HEADER.to_string();
    for row in rows {
        text.push_str(&line(row));
    }
    text
}

/// Prints the rows (the table is what the suite is for) and appends them to the file named by
/// `EASEL_CHAOS_REPORT`, so a run of every test leaves one table behind.
#[allow(clippy::print_stdout)]
pub fn publish(rows: &[Row]) {
    println!("\n{}", table(rows));
    for row in rows {
        if !row.failures.is_empty() {
            println!("{}: failed jobs: {:?}", row.fault, row.failures);
        }
    }
    if let Ok(path) = std::env::var("EASEL_CHAOS_REPORT") {
        use std::io::Write as _;
        let fresh = !std::path::Path::new(&path).exists();
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            if fresh {
                let _ = file.write_all(HEADER.as_bytes());
            }
            for row in rows {
                let _ = file.write_all(line(row).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let latencies = (1..=100).map(Duration::from_millis).collect();
        let latency = Latency::of(latencies, 3);
        assert_eq!(latency.p50, Duration::from_millis(50));
        assert_eq!(latency.p99, Duration::from_millis(99));
        assert_eq!(latency.count, 100);
        assert_eq!(Latency::of(Vec::new(), 0).p99, Duration::ZERO);
    }

    #[test]
    fn a_lost_or_duplicated_job_breaks_the_promise() {
        let row = Row {
            fault: "x".into(),
            accepted: 4,
            succeeded: 3,
            lost: 1,
            duplicated: 1,
            ..Row::default()
        };
        let broken = row.violations(Expect::SUCCEED);
        // Lost, duplicated, not all succeeded, and nothing observed to count duplicates by.
        assert_eq!(broken.len(), 4, "{broken:?}");
        assert!(
            Row::skipped("y", "no netem")
                .violations(Expect::FIRST_ATTEMPT)
                .is_empty()
        );
        let retried = Row {
            fault: "z".into(),
            accepted: 2,
            succeeded: 2,
            retried: 1,
            observed: 2,
            listed: 2,
            ..Row::default()
        };
        assert!(retried.violations(Expect::SUCCEED).is_empty());
        assert_eq!(retried.violations(Expect::FIRST_ATTEMPT).len(), 1);
    }
}
