//! Closed-loop (fixed concurrency) and open-loop (fixed arrival rate) load, and the numbers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;

/// What one run measured.
#[derive(Debug)]
pub struct Report {
    pub name: String,
    pub requests: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// Each call's start (from the run's start) and latency, in start order.
    pub timeline: Vec<(Duration, Duration)>,
}

impl Report {
    fn percentile(&self, fraction: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() as f64 - 1.0) * fraction).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }

    /// Requests answered per second.
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    /// The median latency.
    pub fn p50(&self) -> Duration {
        self.percentile(0.50)
    }

    /// The 99th percentile latency.
    pub fn p99(&self) -> Duration {
        self.percentile(0.99)
    }

    /// The run cut into windows of `width` by start time: calls started in each window,
    /// their p99 and their slowest, to tell a transient from a steady cost.
    pub fn windows(&self, width: Duration) -> String {
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let mut lines = Vec::new();
        let mut rest = self.timeline.as_slice();
        let mut from = Duration::ZERO;
        while !rest.is_empty() {
            let to = from + width;
            let split = rest.partition_point(|(start, _)| *start < to);
            let mut window: Vec<Duration> = rest[..split].iter().map(|(_, l)| *l).collect();
            rest = &rest[split..];
            if !window.is_empty() {
                window.sort_unstable();
                let p99 = window[((window.len() - 1) as f64 * 0.99).round() as usize];
                lines.push(format!(
                    "      {:>6.0}–{:<6.0} ms {:>6} calls   p99 {:>7.2} ms   max {:>7.2} ms",
                    ms(from),
                    ms(to),
                    window.len(),
                    ms(p99),
                    ms(*window.last().unwrap_or(&Duration::ZERO)),
                ));
            }
            from = to;
        }
        lines.join("\n")
    }

    /// One line of the results table.
    pub fn line(&self) -> String {
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        let mut line = format!(
            "{:<44} {:>7} req {:>9.0} req/s   p50 {:>7.2} ms   p90 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
            self.name,
            self.requests,
            self.rate(),
            ms(self.p50()),
            ms(self.percentile(0.90)),
            ms(self.p99()),
            ms(self.latencies.last().copied().unwrap_or_default()),
        );
        if self.errors > 0 {
            line.push_str(&format!(
                "   errors {} (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        line
    }
}

fn report(
    name: &str,
    elapsed: Duration,
    results: Vec<(Duration, Duration, Result<(), String>)>,
) -> Report {
    let requests = results.len();
    let mut errors = 0;
    let mut first_error = None;
    let mut latencies = Vec::with_capacity(requests);
    let mut timeline = Vec::with_capacity(requests);
    for (start, latency, result) in results {
        latencies.push(latency);
        timeline.push((start, latency));
        if let Err(error) = result {
            errors += 1;
            first_error.get_or_insert(error);
        }
    }
    latencies.sort_unstable();
    timeline.sort_unstable();
    Report {
        name: name.to_string(),
        requests,
        errors,
        first_error,
        elapsed,
        latencies,
        timeline,
    }
}

/// `total` calls of `call`, `concurrency` at a time.
pub async fn closed_loop<F, Fut>(name: &str, total: usize, concurrency: usize, call: F) -> Report
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let results: Vec<_> = futures::stream::iter(0..total)
        .map(|index| {
            let call = call(index);
            async move {
                let began = Instant::now();
                let result = call.await;
                (began - started, began.elapsed(), result)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    report(name, started.elapsed(), results)
}

/// Calls started at `rate` per second for `duration`, whatever the answers' pace; each
/// latency counts from when the call was due, so queueing shows.
pub async fn open_loop<F, Fut>(name: &str, rate: u32, duration: Duration, call: F) -> Report
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let started = Instant::now();
    let results = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0;
    while sent < total {
        ticker.tick().await;
        let due_now =
            ((started.elapsed().as_secs_f64() / interval.as_secs_f64()) as usize).min(total);
        while sent < due_now {
            let due = started + interval * u32::try_from(sent).unwrap_or(u32::MAX);
            let call = call(sent);
            let results = results.clone();
            tasks.spawn(async move {
                let result = call.await;
                let latency = due.elapsed();
                if let Ok(mut results) = results.lock() {
                    results.push((due - started, latency, result));
                }
            });
            sent += 1;
        }
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed();
    let results = results
        .lock()
        .map(|mut guard| std::mem::take(&mut *guard))
        .unwrap_or_default();
    report(name, elapsed, results)
}
