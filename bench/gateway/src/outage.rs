//! GET and submit through the gateway with Redis up, killed, and back: the latency a Redis
//! outage adds (the target is at most 5 ms at p99 over normal) and whether anything fails.
//!
//! Runs on a `redis-server` of its own (started here on a free port, killed with SIGKILL and
//! restarted empty), never on the shared one. The machine is shared, so the cycle (up, down,
//! back) runs `EASEL_BENCH_ROUNDS` times (default 3) and the summary compares all the "up"
//! calls with all the "down" calls: each outage is measured within seconds of its baseline.
//! `EASEL_BENCH_TIMELINE=1` also prints each phase cut into 200 ms windows (a transient at the
//! start of an outage shows there).

use std::sync::Arc;
use std::time::Duration;

use easel_test_support::{RedisServer, TestRedis};

use crate::load::{Report, closed_loop};
use crate::platform::Platform;
use crate::{http_client, rest_submit, setting};

/// The width of the windows `EASEL_BENCH_TIMELINE` prints.
const WINDOW: Duration = Duration::from_millis(200);
/// The target: p99 added by an outage.
const TARGET_MS: f64 = 5.0;

/// What one phase measured.
struct Phase {
    gets: Report,
    submits: Report,
}

/// The load of one phase: GETs of one job (`total`), then submits (`total / 2`), over REST.
struct Load<'a> {
    http: reqwest::Client,
    platform: &'a Platform,
    job_url: Arc<str>,
    total: usize,
    concurrency: usize,
    timeline: bool,
}

impl Load<'_> {
    async fn measure(&self, phase: &str) -> Phase {
        let api_key: Arc<str> = Arc::from(self.platform.api_keys[0].as_str());
        let get = |_: usize| {
            let request = self.http.get(&*self.job_url).header("x-api-key", &*api_key);
            async move {
                let response = request.send().await.map_err(|error| error.to_string())?;
                let status = response.status();
                response.bytes().await.map_err(|error| error.to_string())?;
                if status.as_u16() == 200 {
                    Ok(())
                } else {
                    Err(format!("HTTP {status}"))
                }
            }
        };
        let submit_url = format!("{}/api/v1/jobs", self.platform.gateway_url);
        let gets = closed_loop(
            &format!("  {phase}: GET /api/v1/jobs/{{id}}"),
            self.total,
            self.concurrency,
            get,
        )
        .await;
        let submits = closed_loop(
            &format!("  {phase}: POST /api/v1/jobs"),
            self.total / 2,
            self.concurrency,
            |index| rest_submit(&self.http, &submit_url, &self.platform.api_keys, index),
        )
        .await;
        for report in [&gets, &submits] {
            println!("{}", report.line());
            if self.timeline {
                println!("{}", report.windows(WINDOW));
            }
        }
        Phase { gets, submits }
    }
}

/// All the calls of several runs as one report.
fn merged<'a>(name: &str, reports: impl Iterator<Item = &'a Report>) -> Report {
    let mut all = Report {
        name: name.to_string(),
        requests: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        timeline: Vec::new(),
    };
    for report in reports {
        all.requests += report.requests;
        all.errors += report.errors;
        if all.first_error.is_none() {
            all.first_error.clone_from(&report.first_error);
        }
        all.elapsed += report.elapsed;
        all.latencies.extend_from_slice(&report.latencies);
    }
    all.latencies.sort_unstable();
    all
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// One row of the summary: normal against down.
fn row(what: &str, up: &Report, down: &Report) -> String {
    let added = ms(down.p99()) - ms(up.p99());
    format!(
        "  {what:<8} {:>8.2} {:>8.2} {:>8.0}   {:>8.2} {:>8.2} {:>8.0}   {:>+9.2} ms   {}{}",
        ms(up.p50()),
        ms(up.p99()),
        up.rate(),
        ms(down.p50()),
        ms(down.p99()),
        down.rate(),
        added,
        if added <= TARGET_MS { "met" } else { "NOT met" },
        if down.errors > 0 {
            format!(
                "   ({} errors while down, first: {})",
                down.errors,
                down.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        },
    )
}

/// The scenario: up, down, back, `EASEL_BENCH_ROUNDS` times.
pub async fn run(total: usize, concurrency: usize, users: usize) -> anyhow::Result<()> {
    let rounds = setting("EASEL_BENCH_ROUNDS", 3).max(1);
    let mut server = RedisServer::start().await;
    let redis = TestRedis {
        url: server.url.clone(),
        prefix: "bench:".to_string(),
    };
    let platform = Platform::start_on(users, redis).await?;
    let http = http_client(concurrency)?;
    let created = http
        .post(format!("{}/api/v1/jobs", platform.gateway_url))
        .header("x-api-key", &platform.api_keys[0])
        .json(&serde_json::json!({"prompt": "outage bench", "width": 512, "height": 512}))
        .send()
        .await?
        .json::<serde_json::Value>()
        .await?;
    let job = if created["job"].is_object() {
        &created["job"]
    } else {
        &created
    };
    let job_id = job["id"].as_str().unwrap_or_default().to_string();
    let load = Load {
        http: http.clone(),
        platform: &platform,
        job_url: Arc::from(format!("{}/api/v1/jobs/{job_id}", platform.gateway_url)),
        total,
        concurrency,
        timeline: std::env::var_os("EASEL_BENCH_TIMELINE").is_some(),
    };

    println!();
    println!(
        "Redis outage: {total} GETs and {} submits per phase, {concurrency} at a time, {users} users, {rounds} rounds of up / down (SIGKILL) / back (restarted empty)",
        total / 2
    );
    closed_loop("warm-up", 500.min(total), concurrency, |_| {
        let request = http
            .get(&*load.job_url)
            .header("x-api-key", &platform.api_keys[0]);
        async move {
            request
                .send()
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        }
    })
    .await;
    let mut up = Vec::new();
    let mut down = Vec::new();
    for round in 1..=rounds {
        println!(" round {round}");
        up.push(load.measure("Redis up  ").await);
        server.kill().await;
        down.push(load.measure("Redis down").await);
        server.restart().await;
        load.measure("Redis back").await;
    }

    let up_gets = merged("up", up.iter().map(|phase| &phase.gets));
    let down_gets = merged("down", down.iter().map(|phase| &phase.gets));
    let up_submits = merged("up", up.iter().map(|phase| &phase.submits));
    let down_submits = merged("down", down.iter().map(|phase| &phase.submits));
    println!();
    println!("Redis outage, all rounds (ms; rate in req/s)");
    println!(
        "  {:<8} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}   {:>12}   target +{TARGET_MS} ms",
        "", "up p50", "up p99", "up rate", "down p50", "down p99", "down rate", "added p99"
    );
    println!("{}", row("GET", &up_gets, &down_gets));
    println!("{}", row("submit", &up_submits, &down_submits));
    Ok(())
}
