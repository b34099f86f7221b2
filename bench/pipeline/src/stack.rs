//! The platform's job path in this process, as `easel-platform` assembles it: ComfyUI
//! simulators, comfy-bridge, storage (a local directory, metadata in PostgreSQL) and jobs
//! (PostgreSQL + Redis, role `all`), each on its own loopback ports and talking gRPC to the
//! others as in production.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use easel_comfy_sim::{SimConfig, SimHandle};
use easel_platform::{Comfyui, Platform, Service, Settings};
use easel_proto::account::v1::TierLimits;
use easel_proto::auth::v1::Principal;
use easel_proto::bridge::v1::bridge_service_client::BridgeServiceClient;
use easel_proto::bridge::v1::{
    ListBackendsRequest, RunWorkflowRequest, run_workflow_request, run_workflow_response,
};
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_proto::jobs::internal::v1::{GetJobRequest, SubmitJobRequest, WatchJobRequest};
use easel_proto::jobs::v1::{self, JobSpec, JobStatus, TextToImage, job_event, job_spec};
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_proto::storage::v1::{ArtifactHeader, PutArtifactRequest, put_artifact_request};
use easel_runtime::Shutdown;
use easel_test_support::{TestDatabase, TestRedis};
use tonic::transport::{Channel, Endpoint};

/// The checkpoint every prompt names.
pub const CHECKPOINT: &str = "sd_xl_base_1.0.safetensors";

/// A running stack.
pub struct Stack {
    /// The simulators.
    pub sims: Vec<SimHandle>,
    /// A client of the jobs service.
    pub jobs: InternalJobServiceClient<Channel>,
    /// A client of comfy-bridge.
    pub bridge: BridgeServiceClient<Channel>,
    /// A client of storage.
    pub storage: StorageServiceClient<Channel>,
    /// Dropped first: the services stop before their databases go.
    _services: Platform,
    _dir: tempfile::TempDir,
    _databases: Vec<TestDatabase>,
    _redis: TestRedis,
}

async fn channel(platform: &Platform, service: Service) -> anyhow::Result<Channel> {
    let url = platform.grpc_url(service).context("a service that runs")?;
    Ok(Endpoint::from_shared(url.to_string())?
        .tcp_nodelay(true)
        .connect_lazy())
}

impl Stack {
    /// Starts one simulator per configuration and the three services in front of them.
    pub async fn start(sims: Vec<SimConfig>) -> anyhow::Result<Stack> {
        let mut handles = Vec::new();
        for config in sims {
            handles.push(easel_comfy_sim::spawn(config).await?);
        }
        let urls: Vec<String> = handles.iter().map(SimHandle::base_url).collect();
        let dir = tempfile::tempdir()?;
        let (storage_database, jobs_database) =
            tokio::join!(TestDatabase::postgres(), TestDatabase::postgres());
        let redis = TestRedis::new();
        let settings = Settings::loopback(Comfyui::Backends(urls.join(",")))
            .only([Service::ComfyBridge, Service::Storage, Service::Jobs])
            .share("EASEL_REQUEST_TIMEOUT", "300s")
            // comfy-bridge, two prompts in flight per backend (its default).
            .set(
                Service::ComfyBridge,
                [
                    ("EASEL_COMFYUI_QUEUE_TIMEOUT", "120s"),
                    ("EASEL_COMFYUI_HEALTH_INTERVAL", "200ms"),
                ],
            )
            // storage on a local directory.
            .set(
                Service::Storage,
                [
                    (
                        "EASEL_STORAGE_URL",
                        format!("file://{}", dir.path().join("artifacts").display()),
                    ),
                    ("EASEL_DATABASE_URL", storage_database.url.clone()),
                    ("EASEL_ENVIRONMENT", "development".to_string()),
                    (
                        "EASEL_SIGNING_KEY",
                        "a-benchmark-signing-key-of-32-bytes-or-more".to_string(),
                    ),
                ],
            )
            // jobs, API and workers in one process.
            .set(
                Service::Jobs,
                [
                    ("EASEL_DATABASE_URL", jobs_database.url.as_str()),
                    ("EASEL_REDIS_URL", redis.url.as_str()),
                    ("EASEL_REDIS_PREFIX", redis.prefix.as_str()),
                ],
            );
        let services = Platform::start(settings, Shutdown::new(Duration::from_secs(2))).await?;

        let mut bridge_client =
            BridgeServiceClient::new(channel(&services, Service::ComfyBridge).await?);
        let started = Instant::now();
        loop {
            if let Ok(list) = bridge_client.list_backends(ListBackendsRequest {}).await
                && list
                    .get_ref()
                    .backends
                    .iter()
                    .all(|backend| backend.healthy)
            {
                break;
            }
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the backends never became healthy");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let jobs = InternalJobServiceClient::new(channel(&services, Service::Jobs).await?);
        let storage = StorageServiceClient::new(channel(&services, Service::Storage).await?);
        Ok(Stack {
            sims: handles,
            jobs,
            bridge: bridge_client.max_decoding_message_size(64 << 20),
            storage,
            _services: services,
            _dir: dir,
            _databases: vec![storage_database, jobs_database],
            _redis: redis,
        })
    }
}

/// The benchmark's caller, as the gateway would pass it.
pub fn principal() -> Principal {
    Principal {
        user_id: "usr_pipeline".to_string(),
        limits: Some(TierLimits {
            concurrent_jobs: 100_000,
            jobs_per_day: 1_000_000,
            max_pixels: 1024 * 1024,
            max_steps: 50,
            max_batch_size: 4,
            queue_priority: 1,
            artifact_retention_days: 7,
            ..TierLimits::default()
        }),
        ..Principal::default()
    }
}

/// A small text-to-image request.
pub fn text_to_image(prompt: String, steps: u32) -> TextToImage {
    TextToImage {
        prompt,
        width: 64,
        height: 64,
        steps,
        checkpoint: CHECKPOINT.to_string(),
        ..TextToImage::default()
    }
}

/// Submits a job and returns its id.
pub async fn submit(
    client: &mut InternalJobServiceClient<Channel>,
    request: TextToImage,
) -> anyhow::Result<String> {
    let response = client
        .submit_job(SubmitJobRequest {
            caller: Some(principal()),
            request: Some(v1::SubmitJobRequest {
                spec: Some(JobSpec {
                    kind: Some(job_spec::Kind::TextToImage(request)),
                    ..Default::default()
                }),
                ..v1::SubmitJobRequest::default()
            }),
        })
        .await?;
    response
        .into_inner()
        .job
        .map(|job| job.id)
        .context("no job")
}

/// A job's create, start and end times, Unix milliseconds.
pub async fn times(
    client: &mut InternalJobServiceClient<Channel>,
    job_id: String,
) -> anyhow::Result<[i64; 3]> {
    let job = client
        .get_job(GetJobRequest {
            caller: Some(principal()),
            request: Some(v1::GetJobRequest { job_id }),
        })
        .await?
        .into_inner()
        .job
        .context("no job")?;
    let ms = |time: Option<pbjson_types::Timestamp>| {
        time.map(|t| t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
            .unwrap_or_default()
    };
    Ok([ms(job.create_time), ms(job.start_time), ms(job.end_time)])
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or_default())
        .unwrap_or_default()
}

/// Stores one image in storage alone, as a worker does with an output.
pub async fn store(
    storage: &mut StorageServiceClient<Channel>,
    image: Vec<u8>,
) -> anyhow::Result<()> {
    let messages = vec![
        PutArtifactRequest {
            part: Some(put_artifact_request::Part::Header(ArtifactHeader {
                owner: principal().user_id,
                job_id: String::new(),
                content_type: "image/png".to_string(),
                metadata: Default::default(),
                ttl: None,
            })),
        },
        PutArtifactRequest {
            part: Some(put_artifact_request::Part::Chunk(image)),
        },
    ];
    storage
        .put_artifact(futures::stream::iter(messages))
        .await?;
    Ok(())
}

/// Runs a request on comfy-bridge alone until it completes (outputs included).
pub async fn through_bridge(
    bridge: &mut BridgeServiceClient<Channel>,
    request: TextToImage,
) -> anyhow::Result<()> {
    let mut stream = bridge
        .run_workflow(RunWorkflowRequest {
            run_id: uuid::Uuid::new_v4().to_string(),
            workflow: Some(run_workflow_request::Workflow::TextToImage(request)),
            timeout: None,
            exclude_backends: vec![],
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(response) = stream.message().await? {
        match response.event {
            Some(run_workflow_response::Event::Completed(_)) => return Ok(()),
            Some(run_workflow_response::Event::Failed(failed)) => bail!("run failed: {failed:?}"),
            _ => {}
        }
    }
    bail!("the run ended without a verdict")
}

/// Watches a job until its terminal status, which must be SUCCEEDED.
pub async fn until_succeeded(
    client: &mut InternalJobServiceClient<Channel>,
    job_id: String,
) -> anyhow::Result<()> {
    let mut stream = client
        .watch_job(WatchJobRequest {
            caller: Some(principal()),
            request: Some(v1::WatchJobRequest {
                job_id: job_id.clone(),
                after_seq: 0,
            }),
        })
        .await?
        .into_inner();
    while let Some(message) = stream.message().await? {
        let status = match message.event.and_then(|event| event.kind) {
            Some(job_event::Kind::Snapshot(job)) => job.status,
            Some(job_event::Kind::StatusChange(change)) => change.status,
            _ => continue,
        };
        match JobStatus::try_from(status) {
            Ok(JobStatus::Succeeded) => return Ok(()),
            Ok(JobStatus::Failed | JobStatus::Cancelled | JobStatus::Expired) => {
                bail!("job {job_id} ended {status}")
            }
            _ => {}
        }
    }
    bail!("the watch of {job_id} ended before the job did")
}
