//! A jobs service in process on port 0, on its own PostgreSQL database and Redis prefix.

use std::sync::Arc;
use std::time::Duration;

use easel_jobs::config::Config;
use easel_jobs::model::{Clock, OffsetClock};
use easel_jobs::service::Jobs;
use easel_proto::account::v1::TierLimits;
use easel_proto::auth::v1::Principal;
use easel_proto::jobs::internal::v1::SubmitJobRequest;
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_proto::jobs::v1::{self, JobSpec, TextToImage, job_spec};
use easel_runtime::{Env, Shutdown};
use easel_test_support::{TestDatabase, TestRedis};
use tonic::transport::Channel;

/// A running service and what a test needs to poke it.
pub struct Harness {
    pub client: InternalJobServiceClient<Channel>,
    pub jobs: Arc<Jobs>,
    pub clock: OffsetClock,
    pub shutdown: Shutdown,
    pub redis: Option<TestRedis>,
    _database: TestDatabase,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// The settings tests share; `extra` overrides.
pub fn config(database_url: &str, redis: Option<&TestRedis>, extra: &[(&str, &str)]) -> Config {
    let mut pairs: Vec<(String, String)> = vec![
        ("EASEL_DATABASE_URL".into(), database_url.into()),
        ("EASEL_JOBS_ROLE".into(), "api".into()),
        ("EASEL_BRIDGE_URL".into(), "http://127.0.0.1:9".into()),
        ("EASEL_STORAGE_URL".into(), "http://127.0.0.1:9".into()),
        ("EASEL_WORKER_CONCURRENCY".into(), "2".into()),
        ("EASEL_VISIBILITY_TIMEOUT".into(), "2s".into()),
        ("EASEL_CLAIM_BLOCK".into(), "200ms".into()),
    ];
    if let Some(redis) = redis {
        pairs.push(("EASEL_REDIS_URL".into(), redis.url.clone()));
        pairs.push(("EASEL_REDIS_PREFIX".into(), redis.prefix.clone()));
    }
    for (name, value) in extra {
        pairs.push(((*name).into(), (*value).into()));
    }
    let mut env = Env::from_pairs(pairs);
    let mut config = Config::from_env(&mut env);
    env.finish().expect("valid test configuration");
    config.server = easel_runtime::ServerConfig::ephemeral();
    config.telemetry = easel_runtime::TelemetryConfig::quiet("jobs");
    config
}

impl Harness {
    /// API role with Redis.
    pub async fn start() -> Harness {
        Harness::start_with(true, &[]).await
    }

    /// A service with or without Redis and extra settings.
    pub async fn start_with(with_redis: bool, extra: &[(&str, &str)]) -> Harness {
        let database = TestDatabase::postgres().await;
        let redis = with_redis.then(TestRedis::new);
        let config = config(&database.url, redis.as_ref(), extra);
        let clock = OffsetClock::new();
        let shutdown = Shutdown::new(Duration::from_secs(3));
        let parts = easel_jobs::build(
            &config,
            Arc::new(clock.clone()) as Arc<dyn Clock>,
            &shutdown,
        )
        .await
        .expect("service builds");
        let listeners = easel_runtime::service::Listeners::ephemeral()
            .await
            .unwrap();
        let address = listeners.grpc_addr().unwrap();
        let grpc = easel_runtime::grpc::GrpcServer::new("jobs", &config.server)
            .add_service(easel_jobs::grpc::service(parts.jobs.clone()));
        let serve_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = easel_runtime::service::serve(
                grpc,
                easel_runtime::admin::Readiness::new(),
                axum::Router::new(),
                listeners,
                serve_shutdown,
            )
            .await;
        });
        tokio::spawn(easel_jobs::positions::run(
            parts.jobs.clone(),
            shutdown.clone(),
        ));
        if config.worker.role.runs_workers() {
            let worker = Arc::new(easel_jobs::worker::Worker::new(
                parts.jobs.clone(),
                parts.worker.clone(),
            ));
            tokio::spawn(worker.run(shutdown.clone()));
        }
        let client = InternalJobServiceClient::connect(format!("http://{address}"))
            .await
            .expect("connects");
        Harness {
            client,
            jobs: parts.jobs,
            clock,
            shutdown,
            redis,
            _database: database,
        }
    }
}

/// A caller with generous limits.
pub fn caller(user_id: &str) -> Principal {
    Principal {
        user_id: user_id.into(),
        limits: Some(TierLimits {
            concurrent_jobs: 1000,
            jobs_per_day: 100_000,
            max_pixels: 2048 * 2048,
            max_steps: 100,
            max_batch_size: 4,
            queue_priority: 1,
            artifact_retention_days: 7,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A text-to-image request.
pub fn t2i(prompt: &str) -> v1::SubmitJobRequest {
    v1::SubmitJobRequest {
        spec: Some(JobSpec {
            kind: Some(job_spec::Kind::TextToImage(TextToImage {
                prompt: prompt.into(),
                width: 512,
                height: 512,
                steps: 4,
                ..Default::default()
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The internal request of a caller.
pub fn submit(user: &str, request: v1::SubmitJobRequest) -> SubmitJobRequest {
    SubmitJobRequest {
        caller: Some(caller(user)),
        request: Some(request),
    }
}

/// Polls `check` until it is true or the deadline passes.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < until {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}
