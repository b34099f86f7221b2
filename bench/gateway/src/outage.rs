//! GET and submit through the gateway with Redis up, killed, and back: the latency a Redis
//! outage adds (the target is at most 5 ms at p99 over normal) and whether anything fails.
//!
//! Runs on a `redis-server` of its own (started here on a free port, killed with SIGKILL and
//! restarted empty), never on the shared one.

use std::sync::Arc;

use easel_test_support::{RedisServer, TestRedis};

use crate::load::{Report, closed_loop};
use crate::platform::Platform;
use crate::{http_client, rest_submit};

/// GETs (`total`) and submits (`total / 2`) through the gateway over REST.
async fn measure(
    phase: &str,
    http: &reqwest::Client,
    platform: &Platform,
    job_url: &Arc<str>,
    total: usize,
    concurrency: usize,
) -> (Report, Report) {
    let api_key: Arc<str> = Arc::from(platform.api_keys[0].as_str());
    let get = |_: usize| {
        let request = http.get(&**job_url).header("x-api-key", &*api_key);
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
    let submit_url = format!("{}/api/v1/jobs", platform.gateway_url);
    let gets = closed_loop(
        &format!("  {phase}: GET /api/v1/jobs/{{id}}"),
        total,
        concurrency,
        get,
    )
    .await;
    let submits = closed_loop(
        &format!("  {phase}: POST /api/v1/jobs"),
        total / 2,
        concurrency,
        |index| rest_submit(http, &submit_url, &platform.api_keys, index),
    )
    .await;
    println!("{}", gets.line());
    println!("{}", submits.line());
    (gets, submits)
}

/// The scenario: up, down, back.
pub async fn run(total: usize, concurrency: usize, users: usize) -> anyhow::Result<()> {
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
    let job_url: Arc<str> = Arc::from(format!("{}/api/v1/jobs/{job_id}", platform.gateway_url));

    println!();
    println!(
        "Redis outage: {total} GETs and {} submits per phase, {concurrency} at a time",
        total / 2
    );
    closed_loop("warm-up", 500.min(total), concurrency, |_| {
        let request = http
            .get(&*job_url)
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
    let (up_get, up_submit) =
        measure("Redis up", &http, &platform, &job_url, total, concurrency).await;
    server.kill().await;
    let (down_get, down_submit) =
        measure("Redis down", &http, &platform, &job_url, total, concurrency).await;
    server.restart().await;
    let (_back_get, _back_submit) =
        measure("Redis back", &http, &platform, &job_url, total, concurrency).await;

    let ms = |report: &Report| report.p99().as_secs_f64() * 1000.0;
    println!(
        "  p99 added by the outage: GET {:+.2} ms ({:.2} → {:.2}), submit {:+.2} ms ({:.2} → {:.2}); target ≤ +5 ms",
        ms(&down_get) - ms(&up_get),
        ms(&up_get),
        ms(&down_get),
        ms(&down_submit) - ms(&up_submit),
        ms(&up_submit),
        ms(&down_submit),
    );
    Ok(())
}
