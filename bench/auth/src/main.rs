//! Load generator for easel-auth: `Authenticate` calls per second through the gateway's
//! [`Authenticator`] with a warm cache and a cold one (every call reaches the service and its
//! PostgreSQL), and rate-limit checks per second against Redis (and in-process, for scale).
//! Prints numbers; asserts nothing.

#![allow(clippy::print_stdout)]

use std::future::Future;
use std::time::{Duration, Instant};

use easel_auth_client::{Authenticator, AuthenticatorConfig, Credential, RateLimiter, RateQuota};
use easel_proto::account::v1::CreateApiKeyRequest;
use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_runtime::Shutdown;
use easel_runtime::config::{ServerConfig, TelemetryConfig};
use easel_runtime::grpc::{ClientConfig, connect_lazy};
use easel_runtime::service::Listeners;
use easel_test_support::{TestDatabase, TestRedis};
use futures::StreamExt;

/// Concurrent callers, like a busy gateway replica.
const CONCURRENCY: usize = 64;
/// Distinct API keys the callers use.
const KEYS: usize = 500;

/// Runs `total` calls of `call(index)` with `CONCURRENCY` in flight; prints calls/s and
/// latency percentiles.
async fn measure<F, Fut>(label: &str, total: usize, call: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..total)
        .map(|index| {
            let call = call(index);
            async move {
                let begun = Instant::now();
                call.await.map(|()| begun.elapsed())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies.get(index).copied().unwrap_or_default()
    };
    println!(
        "{label:<44} {total:>7} calls in {:>6.2} s = {:>9.0} /s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1e3,
        percentile(0.99).as_secs_f64() * 1e3,
    );
    Ok(())
}

fn authenticator(url: &str, config: AuthenticatorConfig) -> anyhow::Result<Authenticator> {
    let channel = connect_lazy(&ClientConfig::new(url), "bench")?;
    Ok(Authenticator::new(AuthServiceClient::new(channel), config))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let database = TestDatabase::postgres().await;
    let redis = TestRedis::new();

    // The service, in-process on loopback, with the real PostgreSQL and Redis.
    let mut auth_config = easel_auth::AuthConfig::new(database.url.clone());
    auth_config.redis_url = Some(redis.url.clone());
    auth_config.redis_prefix = redis.prefix.clone();
    let config = easel_auth::Config {
        server: ServerConfig::ephemeral(),
        telemetry: TelemetryConfig::quiet(easel_auth::SERVICE_NAME),
        auth: auth_config.clone(),
    };
    let listeners = Listeners::ephemeral().await?;
    let url = format!("http://{}", listeners.grpc_addr()?);
    let shutdown = Shutdown::new(Duration::from_secs(2));
    let server = tokio::spawn(easel_auth::run(config, listeners, shutdown.clone()));

    let admin = easel_auth::bootstrap_admin(&auth_config, "bench@example.test", None).await?;
    let mut account = AccountServiceClient::new(connect_lazy(&ClientConfig::new(&url), "bench")?);
    let mut keys = Vec::with_capacity(KEYS);
    for index in 0..KEYS {
        let mut request = tonic::Request::new(CreateApiKeyRequest {
            name: format!("bench {index}"),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("x-api-key", admin.api_key.parse()?);
        keys.push(Credential::ApiKey(
            account.create_api_key(request).await?.into_inner().secret,
        ));
    }
    let mut exchange =
        tonic::Request::new(easel_proto::account::v1::ExchangeTokenRequest::default());
    exchange
        .metadata_mut()
        .insert("x-api-key", admin.api_key.parse()?);
    let token = account
        .exchange_token(exchange)
        .await?
        .into_inner()
        .access_token
        .map(|token| token.token)
        .unwrap_or_default();
    let bearer = Credential::Bearer(token);
    println!(
        "easel-auth bench: {KEYS} API keys, {CONCURRENCY} concurrent callers, PostgreSQL + Redis on loopback"
    );

    // Warm: every key cached after its first use.
    let warm = authenticator(&url, AuthenticatorConfig::default())?;
    for key in &keys {
        warm.authenticate(key).await?;
    }
    measure("Authenticate, warm cache (API keys)", 500_000, |index| {
        let warm = warm.clone();
        let key = keys[index % KEYS].clone();
        async move {
            warm.authenticate(&key).await?;
            Ok(())
        }
    })
    .await?;

    // Cold: nothing cached, every call is an RPC and database lookups.
    let cold = authenticator(
        &url,
        AuthenticatorConfig {
            cache_ttl: Duration::ZERO,
            negative_cache_ttl: Duration::ZERO,
            max_entries: 1,
            unheard_ttl: Duration::ZERO,
        },
    )?;
    measure("Authenticate, cold cache (API keys)", 20_000, |index| {
        let cold = cold.clone();
        let key = keys[index % KEYS].clone();
        async move {
            cold.authenticate(&key).await?;
            Ok(())
        }
    })
    .await?;
    measure(
        "Authenticate, cold cache (EdDSA bearer JWT)",
        20_000,
        |_| {
            let cold = cold.clone();
            let bearer = bearer.clone();
            async move {
                cold.authenticate(&bearer).await?;
                Ok(())
            }
        },
    )
    .await?;

    // Rate limits: one GCRA script per check on Redis, spread over many users.
    let connection = easel_runtime::redis::Redis::connect(
        "bench",
        &redis.url,
        easel_runtime::redis::RedisConfig::new(Duration::from_millis(100)),
    )
    .await?;
    let distributed = RateLimiter::redis(connection, redis.prefix.clone());
    let quota = RateQuota {
        per_minute: 6_000_000,
        burst: 1_000_000,
    };
    measure(
        "RateLimiter::check, Redis (GCRA Lua script)",
        200_000,
        |index| {
            let limiter = distributed.clone();
            async move {
                limiter
                    .check(&format!("user:{}", index % 1000), quota)
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    let local = RateLimiter::in_process();
    measure(
        "RateLimiter::check, in-process (governor)",
        1_000_000,
        |index| {
            let limiter = local.clone();
            async move {
                limiter
                    .check(&format!("user:{}", index % 1000), quota)
                    .await?;
                Ok(())
            }
        },
    )
    .await?;

    shutdown.trigger();
    let _ = server.await;
    Ok(())
}
