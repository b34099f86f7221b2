//! Load generator for easel-gateway, run in release:
//!
//! - `GetJob` over REST and over gRPC through the gateway, against calling the jobs service
//!   directly (the gateway's overhead: authentication from its cache, a Redis rate-limit check,
//!   the extra hop);
//! - submit throughput over REST with authentication and Redis rate limits on, closed-loop
//!   (fixed concurrency) and open-loop at a target rate (default 3,600 jobs/s), beside the
//!   door alone (authentication and rate limit, no upstream call), the rate-limit check alone
//!   and the same submits sent to jobs directly, to show where the time goes. Every submit
//!   run starts on fresh databases (jobs' submit cost grows with the PENDING jobs it counts).
//!
//! Everything runs in this process on the local PostgreSQL and Redis: the load generator
//! shares the machine's cores with the services. Prints numbers; asserts nothing.
//!
//! `easel-bench-gateway redis-outage` instead measures GET and submit with Redis up, then
//! killed (SIGKILL), then restarted, on a `redis-server` of its own (see [`outage`]), and
//! prints the p99 the outage adds; `EASEL_BENCH_ROUNDS` (3) and `EASEL_BENCH_TIMELINE` set it.
//! Settings: `EASEL_BENCH_REQUESTS` (20000), `EASEL_BENCH_CONCURRENCY` (32),
//! `EASEL_BENCH_USERS` (32), `EASEL_BENCH_RATE` (3600), `EASEL_BENCH_SECONDS` (5).

#![allow(clippy::print_stdout)]

mod load;
mod outage;
mod platform;

use std::sync::Arc;
use std::time::Duration;

use easel_auth_client::{RateLimiter, RateQuota};
use easel_proto::jobs::internal::v1 as internal;
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_proto::jobs::v1::job_service_client::JobServiceClient;
use easel_proto::jobs::v1::{GetJobRequest, JobSpec, SubmitJobRequest, TextToImage, job_spec};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use load::{Report, closed_loop, open_loop};
use platform::Platform;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn text(index: usize) -> SubmitJobRequest {
    SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(TextToImage {
                prompt: format!("bench {index}"),
                width: 512,
                height: 512,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A few channels, so gRPC load is not one TCP connection.
async fn channels(url: &str, count: usize) -> anyhow::Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(count);
    for _ in 0..count {
        channels.push(Channel::from_shared(url.to_string())?.connect().await?);
    }
    Ok(channels)
}

async fn direct_clients(
    platform: &Platform,
) -> anyhow::Result<Vec<InternalJobServiceClient<Channel>>> {
    Ok(channels(&platform.jobs_url, 4)
        .await?
        .into_iter()
        .map(InternalJobServiceClient::new)
        .collect())
}

fn http_client(concurrency: usize) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .tcp_nodelay(true)
        .build()?)
}

/// One REST submit as user `index % users`; `Ok` only on 202.
fn rest_submit(
    http: &reqwest::Client,
    url: &str,
    api_keys: &[String],
    index: usize,
) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
    let request = http
        .post(url)
        .header("x-api-key", &api_keys[index % api_keys.len()])
        .json(&serde_json::json!({"prompt": format!("bench rest {index}"), "width": 512, "height": 512}));
    async move {
        let response = request.send().await.map_err(|error| error.to_string())?;
        let status = response.status();
        response.bytes().await.map_err(|error| error.to_string())?;
        if status.as_u16() == 202 {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let total = setting("EASEL_BENCH_REQUESTS", 20_000) as usize;
    let concurrency = setting("EASEL_BENCH_CONCURRENCY", 32) as usize;
    let users = setting("EASEL_BENCH_USERS", 32).max(1) as usize;
    let rate = setting("EASEL_BENCH_RATE", 3_600) as u32;
    let seconds = setting("EASEL_BENCH_SECONDS", 5);
    if std::env::args().nth(1).as_deref() == Some("redis-outage") {
        return outage::run(total, concurrency, users).await;
    }
    println!(
        "easel-bench-gateway: {total} requests per run, {concurrency} at a time, {users} users; services, PostgreSQL, Redis and the load share this machine's {} cores",
        std::thread::available_parallelism().map_or(0, usize::from)
    );

    // GetJob: gateway overhead.
    {
        let platform = Platform::start(1).await?;
        let api_key: Arc<str> = Arc::from(platform.api_keys[0].as_str());
        let key_value = MetadataValue::try_from(platform.api_keys[0].as_str())?;
        let principal = platform.principals[0].clone();
        let http = http_client(concurrency)?;
        let direct = direct_clients(&platform).await?;
        let gateway: Vec<_> = channels(&platform.gateway_url, 4)
            .await?
            .into_iter()
            .map(JobServiceClient::new)
            .collect();
        let job_id = direct[0]
            .clone()
            .submit_job(internal::SubmitJobRequest {
                caller: Some(principal.clone()),
                request: Some(text(0)),
            })
            .await?
            .into_inner()
            .job
            .map(|job| job.id)
            .unwrap_or_default();
        let job_url: Arc<str> = Arc::from(format!("{}/api/v1/jobs/{job_id}", platform.gateway_url));
        let door_url: Arc<str> = Arc::from(format!(
            "{}/api/v1/models?pageSize=many",
            platform.gateway_url
        ));

        let get_direct = |index: usize| {
            let mut client = direct[index % direct.len()].clone();
            let request = internal::GetJobRequest {
                caller: Some(principal.clone()),
                request: Some(GetJobRequest {
                    job_id: job_id.clone(),
                }),
            };
            async move {
                client
                    .get_job(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| status.to_string())
            }
        };
        let get_grpc = |index: usize| {
            let mut client = gateway[index % gateway.len()].clone();
            let mut request = tonic::Request::new(GetJobRequest {
                job_id: job_id.clone(),
            });
            request
                .metadata_mut()
                .insert("x-api-key", key_value.clone());
            async move {
                client
                    .get_job(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| status.to_string())
            }
        };
        let get_url = |url: Arc<str>, expected: u16| {
            let http = http.clone();
            let api_key = api_key.clone();
            move |_: usize| {
                let request = http.get(&*url).header("x-api-key", &*api_key);
                async move {
                    let response = request.send().await.map_err(|error| error.to_string())?;
                    let status = response.status();
                    response.bytes().await.map_err(|error| error.to_string())?;
                    if status.as_u16() == expected {
                        Ok(())
                    } else {
                        Err(format!("HTTP {status}"))
                    }
                }
            }
        };
        let get_rest = get_url(job_url, 200);
        let door_only = get_url(door_url, 400);
        let warm = 500.min(total);
        closed_loop("warm-up", warm, concurrency, get_direct).await;
        closed_loop("warm-up", warm, concurrency, get_grpc).await;
        closed_loop("warm-up", warm, concurrency, &get_rest).await;

        println!();
        println!("GetJob");
        let reports: Vec<Report> = vec![
            closed_loop("  jobs directly (gRPC)", total, concurrency, get_direct).await,
            closed_loop("  through the gateway, gRPC", total, concurrency, get_grpc).await,
            closed_loop("  through the gateway, REST", total, concurrency, &get_rest).await,
            closed_loop(
                "  the door alone (auth + rate limit, 400)",
                total,
                concurrency,
                &door_only,
            )
            .await,
        ];
        for report in &reports {
            println!("{}", report.line());
        }
        let direct_p50 = reports[0].p50().as_secs_f64();
        println!(
            "  gateway overhead at p50: gRPC +{:.2} ms, REST +{:.2} ms",
            (reports[1].p50().as_secs_f64() - direct_p50) * 1000.0,
            (reports[2].p50().as_secs_f64() - direct_p50) * 1000.0
        );

        let connection = easel_runtime::redis::Redis::connect(
            "bench",
            &platform.redis.url,
            easel_runtime::redis::RedisConfig::new(Duration::from_millis(100)),
        )
        .await?;
        let limiter = RateLimiter::redis(connection, platform.redis.prefix.clone());
        let quota = RateQuota {
            per_minute: 6_000_000,
            burst: 1_000_000,
        };
        let rate_limit = |index: usize| {
            let limiter = limiter.clone();
            async move {
                limiter
                    .check(&format!("bench:{}", index % 64), quota)
                    .await
                    .map(|_| ())
                    .map_err(|error| error.to_string())
            }
        };
        println!(
            "{}",
            closed_loop(
                "  Redis rate-limit check alone",
                total,
                concurrency,
                rate_limit
            )
            .await
            .line()
        );
    }

    // Submits, each run on fresh databases.
    println!();
    println!("Submit (each run on fresh databases, {users} users)");
    {
        let platform = Platform::start(users).await?;
        let direct = direct_clients(&platform).await?;
        let principals = platform.principals.clone();
        let submit_direct = |index: usize| {
            let mut client = direct[index % direct.len()].clone();
            let request = internal::SubmitJobRequest {
                caller: Some(principals[index % principals.len()].clone()),
                request: Some(text(index)),
            };
            async move {
                client
                    .submit_job(request)
                    .await
                    .map(|_| ())
                    .map_err(|status| status.to_string())
            }
        };
        println!(
            "{}",
            closed_loop(
                "  jobs SubmitJob directly (gRPC)",
                total / 2,
                concurrency,
                submit_direct
            )
            .await
            .line()
        );
    }
    {
        let platform = Platform::start(users).await?;
        let http = http_client(concurrency)?;
        let url = format!("{}/api/v1/jobs", platform.gateway_url);
        let keys = platform.api_keys.clone();
        let report = closed_loop(
            "  REST through the gateway, closed loop",
            total / 2,
            concurrency,
            |index| rest_submit(&http, &url, &keys, index),
        )
        .await;
        println!("{}", report.line());
    }
    {
        let platform = Platform::start(users).await?;
        let http = http_client(concurrency)?;
        let url = format!("{}/api/v1/jobs", platform.gateway_url);
        let keys = platform.api_keys.clone();
        let open = open_loop(
            &format!("  REST, open loop at {rate} jobs/s for {seconds} s"),
            rate,
            Duration::from_secs(seconds),
            |index| rest_submit(&http, &url, &keys, index),
        )
        .await;
        println!("{}", open.line());
        let met = open.errors == 0
            && open.rate() >= f64::from(rate) * 0.98
            && open.p99() <= Duration::from_millis(20);
        println!(
            "  target >= {rate} jobs/s with p99 <= 20 ms: {}",
            if met { "met" } else { "not met" }
        );
    }
    Ok(())
}
