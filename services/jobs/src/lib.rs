//! `easel-jobs`: job records and lifecycle, the durable queue, workers, idempotency, job event
//! streams and cancellation.
//!
//! A job is a typed [`job::Job`], decoded from its row in one place; every move of its life is
//! a named [`lifecycle::Transition`] (guard, columns, events) that the API, the worker and the
//! reconciler apply. The database is the source of truth of every job and of its numbered
//! events; the queue ([`queue`]: Redis Streams, or in process) carries work to the
//! [`worker`]s, and the [`reconciler`] repairs the queue from the database. The API ([`grpc`], [`service`],
//! [`watch`]) is `easel.jobs.internal.v1.InternalJobService`, called by the gateway with the
//! authenticated caller. One binary plays the `api`, `worker` or `all` role.
//!
//! A library with one entry point, [`run`], so tests start the real service in-process on
//! port 0 and `main.rs` stays a page.

pub mod clients;
pub mod config;
pub mod db;
pub mod error;
pub mod events;
pub mod grpc;
pub mod job;
pub mod lifecycle;
pub mod metrics;
pub mod model;
pub mod positions;
pub mod queue;
pub mod reconciler;
pub mod service;
pub mod submit;
pub mod validate;
pub mod watch;
pub mod worker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use easel_proto::bridge::v1::ListBackendsRequest;
use easel_runtime::Shutdown;
use easel_runtime::admin::Readiness;
use easel_runtime::grpc::{CallerPolicy, GrpcServer};
use easel_runtime::redis::Redis;
use easel_runtime::service::Listeners;

use crate::clients::Clients;
pub use crate::config::{Config, Role, WorkerConfig};
use crate::events::EventHub;
use crate::model::{Clock, SystemClock};
use crate::queue::memory::MemoryQueue;
use crate::queue::redis::RedisQueue;
use crate::queue::{JobQueue, QueueSettings};
use crate::service::{ApiSettings, Jobs};
use crate::worker::{Worker, WorkerSettings};

/// The service's name in logs, metrics and traces.
pub const SERVICE_NAME: &str = "jobs";

/// Which services may call jobs, by their mutual-TLS identity: only the gateway passes a
/// caller (the authenticated principal) to the job API.
pub const CALLERS: CallerPolicy =
    CallerPolicy::new(&[("easel.jobs.internal.v1.InternalJobService/*", &["gateway"])]);

/// Default gRPC address.
pub const DEFAULT_GRPC_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50052);

/// Default admin (HTTP) address.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9092);

/// The parts of a running jobs service, built from a [`Config`].
#[derive(Debug)]
pub struct Parts {
    /// The shared state behind the API and the workers.
    pub jobs: Arc<Jobs>,
    /// The worker pool's settings.
    pub worker: WorkerSettings,
}

/// The bridge's total capacity, if it answers within a second.
async fn bridge_capacity(clients: &Clients) -> Option<usize> {
    let mut bridge = clients.bridge.clone();
    let mut request = tonic::Request::new(ListBackendsRequest {});
    request.set_timeout(Duration::from_secs(1));
    let answer = tokio::time::timeout(Duration::from_secs(2), bridge.list_backends(request))
        .await
        .ok()?
        .ok()?;
    let total: u32 = answer
        .into_inner()
        .backends
        .iter()
        .map(|b| b.capacity)
        .sum();
    (total > 0).then(|| usize::try_from(total).unwrap_or(4))
}

/// Connects the database, the queue and the event hub; `clock` is the time source (tests
/// inject one). The event hub's subscription stops with `shutdown`.
pub async fn build(
    config: &Config,
    clock: Arc<dyn Clock>,
    shutdown: &Shutdown,
) -> Result<Parts, error::JobsError> {
    crate::metrics::describe();
    let db = db::connect(&config.database_url).await?;
    let settings = QueueSettings {
        visibility_timeout: config.worker.visibility_timeout,
        max_deliveries: config.worker.max_attempts + 2,
    };
    let (queue, hub): (Arc<dyn JobQueue>, Arc<EventHub>) = match &config.redis_url {
        Some(url) => {
            // One Redis (one breaker) for the queue and the events: both see the same outage.
            let redis = Redis::connect(SERVICE_NAME, url, config.redis)
                .await
                .map_err(|error| error::JobsError::Queue(error.into()))?;
            (
                Arc::new(RedisQueue::new(
                    redis.clone(),
                    &config.redis_prefix,
                    settings,
                )),
                EventHub::redis(redis, &config.redis_prefix, shutdown.token().clone()).await,
            )
        }
        None => (Arc::new(MemoryQueue::new(settings)), EventHub::local()),
    };
    let clients = Clients::new(
        &config.bridge_url,
        &config.storage_url,
        config.auth_url.as_deref(),
        config.server.tls.clone(),
    )?;
    let concurrency = match config.worker.concurrency {
        Some(concurrency) => concurrency,
        None if config.worker.role.runs_workers() => bridge_capacity(&clients).await.unwrap_or(4),
        None => 4,
    };
    let jobs = Arc::new(Jobs::new(
        db,
        queue,
        hub,
        clients,
        clock,
        ApiSettings {
            max_attempts: config.worker.max_attempts,
            output_url_ttl: config.output_url_ttl,
            parallelism: u32::try_from(concurrency).unwrap_or(1),
            workflow_policy: config.workflow_policy.clone(),
        },
    ));
    let worker = WorkerSettings {
        visibility_timeout: config.worker.visibility_timeout,
        retry_backoff: config.worker.retry_backoff,
        retry_backoff_max: config.worker.retry_backoff_max,
        run_timeout: config.worker.run_timeout,
        claim_block: config.worker.claim_block,
        concurrency,
    };
    Ok(Parts { jobs, worker })
}

/// Serves the service on `listeners` until `shutdown` fires, then drains.
pub async fn run(config: Config, listeners: Listeners, shutdown: Shutdown) -> std::io::Result<()> {
    run_with_clock(config, Arc::new(SystemClock), listeners, shutdown).await
}

/// [`run`] with an injected clock.
pub async fn run_with_clock(
    config: Config,
    clock: Arc<dyn Clock>,
    listeners: Listeners,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let parts = build(&config, clock, &shutdown)
        .await
        .map_err(|error| std::io::Error::other(error.to_string()))?;
    let jobs = parts.jobs.clone();
    let readiness_jobs = jobs.clone();
    let queue_jobs = jobs.clone();
    let readiness = Readiness::new()
        .with_check("database", move || {
            let jobs = readiness_jobs.clone();
            async move { easel_runtime::db::ping(&jobs.db).await }
        })
        .with_check("queue", move || {
            let jobs = queue_jobs.clone();
            async move { jobs.queue.ping().await.map_err(|error| error.to_string()) }
        });
    let mut background = Vec::new();
    if config.worker.role.runs_workers() {
        let worker = Arc::new(Worker::new(jobs.clone(), parts.worker.clone()));
        background.push(tokio::spawn(worker.run(shutdown.clone())));
        background.push(tokio::spawn(reconciler::run(
            jobs.clone(),
            config.worker.reconcile_interval,
            config.worker.reconcile_grace,
            shutdown.clone(),
        )));
    }
    // Watchers of PENDING jobs are served by every role that serves the API.
    background.push(tokio::spawn(positions::run(jobs.clone(), shutdown.clone())));
    let grpc = GrpcServer::new(SERVICE_NAME, &config.server)
        .add_service(grpc::service(jobs))
        .allow_callers(CALLERS);
    let served =
        easel_runtime::service::serve(grpc, readiness, axum::Router::new(), listeners, shutdown)
            .await;
    for task in background {
        let _ = task.await;
    }
    served
}
