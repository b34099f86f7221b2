//! Benchmarks of the `easel-jobs` binary as a process, against the real PostgreSQL and Redis;
//! they print numbers and assert nothing.
//!
//! 1. `submit`: SubmitJob throughput and latency over gRPC (validation, quotas, idempotency,
//!    the PostgreSQL insert and the Redis enqueue).
//! 2. `watchers`: the resident memory of 10,000 concurrent WatchJob streams, and the time until
//!    all of them see their job cancelled.
//! 3. `idle`: the resident memory of an idle process, per role.
//!
//! `cargo build --release -p easel-jobs -p easel-bench-jobs && cargo run --release -p
//! easel-bench-jobs [-- [all|submit|watchers|idle] [--requests N] [--concurrency C]
//! [--connections K] [--watchers W]]` (the benchmark runs the `easel-jobs` binary built beside
//! it, and builds it only when it is missing).

#![allow(clippy::print_stdout)]

mod process;
mod submit;
mod watchers;

use anyhow::{Context, bail};

struct Args {
    which: String,
    load: submit::Load,
    watchers: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        which: "all".to_string(),
        load: submit::Load {
            requests: 40_000,
            concurrency: 256,
            connections: 4,
        },
        watchers: 10_000,
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut number = || -> anyhow::Result<usize> {
            iter.next()
                .with_context(|| format!("{arg} needs a value"))?
                .parse()
                .with_context(|| format!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--requests" => args.load.requests = number()?,
            "--concurrency" => args.load.concurrency = number()?.max(1),
            "--connections" => args.load.connections = number()?.max(1),
            "--watchers" => args.watchers = number()?.max(1),
            "all" | "submit" | "watchers" | "idle" => args.which = arg,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let args = parse_args()?;
    let all = args.which == "all";
    if all || args.which == "idle" {
        watchers::idle().await?;
    }
    if all || args.which == "submit" {
        submit::run(args.load, &[]).await?;
    }
    if all || args.which == "watchers" {
        watchers::run(args.watchers).await?;
    }
    Ok(())
}
