//! `easel.bridge.v1.BridgeService`: thin handlers over the pool, the runs and the model cache.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use easel_proto::bridge::v1::bridge_service_server::BridgeService;
use easel_proto::bridge::v1::run_workflow_request::Workflow as RequestWorkflow;
use easel_proto::bridge::v1::{
    Backend as BackendProto, BreakerState as BreakerProto, CheckpointModel, InterruptRequest,
    InterruptResponse, ListBackendsRequest, ListBackendsResponse, ListModelsRequest,
    ListModelsResponse, RunWorkflowRequest, RunWorkflowResponse,
};
use easel_runtime::Error;
use easel_workflow_policy::Caller;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::backend::BackendStatus;
use crate::breaker::BreakerState;
use crate::config::BridgeConfig;
use crate::error::BridgeError;
use crate::models::Models;
use crate::pool::Pool;
use crate::run::{self, RunRequest, Runs};
use crate::template;

/// The longest run deadline accepted.
pub const MAX_RUN_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The bridge's shared state.
#[derive(Debug)]
pub struct Bridge {
    /// Settings.
    pub config: Arc<BridgeConfig>,
    /// The backends.
    pub pool: Arc<Pool>,
    /// Runs in progress.
    pub runs: Arc<Runs>,
    /// Checkpoint lists.
    pub models: Models,
}

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct BridgeApi {
    bridge: Arc<Bridge>,
}

impl BridgeApi {
    /// The service over `bridge`.
    pub fn new(bridge: Arc<Bridge>) -> BridgeApi {
        BridgeApi { bridge }
    }
}

fn status(error: BridgeError) -> Status {
    Error::from(error).into_status()
}

impl Bridge {
    async fn default_checkpoint(&self) -> Result<Option<String>, BridgeError> {
        if let Some(checkpoint) = &self.config.default_checkpoint {
            return Ok(Some(checkpoint.clone()));
        }
        let list = self.models.list(&self.pool).await?;
        Ok(list.first().map(|checkpoint| checkpoint.name.clone()))
    }

    async fn build(&self, request: &RunWorkflowRequest) -> Result<RunRequest, BridgeError> {
        run::validate_run_id(&request.run_id)?;
        let graph = match &request.workflow {
            Some(RequestWorkflow::TextToImage(text)) => {
                let default = if text.checkpoint.is_empty() {
                    self.default_checkpoint().await?
                } else {
                    None
                };
                template::text_to_image(text, default.as_deref(), rand::random::<u64>)?
            }
            Some(RequestWorkflow::Raw(workflow)) => template::raw_workflow(workflow)?,
            None => {
                return Err(BridgeError::InvalidField {
                    field: "workflow".to_string(),
                    reason: "one of text_to_image or raw is required".to_string(),
                });
            }
        };
        // Defense in depth: jobs checked raw workflows at submit time; every graph, ours
        // included, is checked again right before it can reach ComfyUI. The bridge resolves no
        // uploaded inputs yet, so every `easel-input://` reference is refused here.
        let prefix = match &request.workflow {
            Some(RequestWorkflow::TextToImage(_)) => "text_to_image.graph",
            _ => "raw.graph",
        };
        self.config
            .workflow_policy
            .check(&graph.graph, Caller::without_inputs())
            .map_err(|violations| BridgeError::Refused { prefix, violations })?;
        let timeout = match &request.timeout {
            None => self.config.run_timeout,
            Some(timeout) => {
                let timeout =
                    Duration::try_from(*timeout).map_err(|_| BridgeError::InvalidField {
                        field: "timeout".to_string(),
                        reason: "must be positive".to_string(),
                    })?;
                if timeout.is_zero() || timeout > MAX_RUN_TIMEOUT {
                    return Err(BridgeError::InvalidField {
                        field: "timeout".to_string(),
                        reason: "must be between 1 ns and 24 h".to_string(),
                    });
                }
                timeout
            }
        };
        Ok(RunRequest {
            run_id: request.run_id.clone(),
            graph,
            timeout,
            exclude: request
                .exclude_backends
                .iter()
                .cloned()
                .collect::<HashSet<_>>(),
            keep_workflow_metadata: request.keep_workflow_metadata,
        })
    }
}

fn breaker_proto(state: BreakerState) -> BreakerProto {
    match state {
        BreakerState::Closed => BreakerProto::Closed,
        BreakerState::Open => BreakerProto::Open,
        BreakerState::HalfOpen => BreakerProto::HalfOpen,
    }
}

fn backend_proto(status: BackendStatus) -> BackendProto {
    BackendProto {
        name: status.name,
        url: status.url,
        healthy: status.healthy,
        breaker_state: breaker_proto(status.breaker) as i32,
        in_flight: status.in_flight,
        capacity: status.capacity,
        queue_remaining: status.queue_remaining,
        vram_total_bytes: status.vram_total,
        vram_free_bytes: status.vram_free,
        last_checkpoint: status.last_checkpoint.unwrap_or_default(),
        websocket_connected: status.websocket_connected,
        last_check_time: status.last_check_time.map(|time| {
            let elapsed = time.duration_since(UNIX_EPOCH).unwrap_or_default();
            pbjson_types::Timestamp {
                seconds: i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(elapsed.subsec_nanos()).unwrap_or(0),
            }
        }),
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<RunWorkflowResponse, Status>> + Send>>;

#[tonic::async_trait]
impl BridgeService for BridgeApi {
    async fn run_workflow(
        &self,
        request: Request<RunWorkflowRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = request.into_inner();
        let run = self.bridge.build(&request).await.map_err(status)?;
        let control = self.bridge.runs.register(&run.run_id).map_err(status)?;
        let (sender, mut receiver) = mpsc::channel(16);
        tokio::spawn(run::drive(
            self.bridge.config.clone(),
            self.bridge.pool.clone(),
            self.bridge.runs.clone(),
            control,
            run,
            sender,
        ));
        // Errors before `queued` end the call itself; after it, the stream carries everything.
        match receiver.recv().await {
            Some(Ok(first)) => {
                let rest = ReceiverStream::new(receiver);
                let stream = futures::stream::once(async move { Ok(first) }).chain(rest);
                Ok(Response::new(Box::pin(stream)))
            }
            Some(Err(status)) => Err(status),
            None => Err(Error::internal("the run ended without an event").into_status()),
        }
    }

    async fn interrupt(
        &self,
        request: Request<InterruptRequest>,
    ) -> Result<Response<InterruptResponse>, Status> {
        let run_id = request.into_inner().run_id;
        run::validate_run_id(&run_id).map_err(status)?;
        if let Some(control) = self.bridge.runs.get(&run_id) {
            control.interrupt();
            return Ok(Response::new(InterruptResponse { interrupted: true }));
        }
        // Not ours (another replica, or this one restarted): look for it on every backend.
        let mut interrupted = false;
        for backend in self.bridge.pool.backends() {
            let Ok(queue) = backend.client.queue().await else {
                continue;
            };
            if queue.contains(&run_id) {
                interrupted = run::stop_on_backend(backend, &run_id).await.is_ok() || interrupted;
            }
        }
        Ok(Response::new(InterruptResponse { interrupted }))
    }

    async fn list_models(
        &self,
        _request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let list = self
            .bridge
            .models
            .list(&self.bridge.pool)
            .await
            .map_err(status)?;
        let default_checkpoint = self
            .bridge
            .config
            .default_checkpoint
            .clone()
            .or_else(|| list.first().map(|checkpoint| checkpoint.name.clone()))
            .unwrap_or_default();
        Ok(Response::new(ListModelsResponse {
            checkpoints: list
                .into_iter()
                .map(|checkpoint| CheckpointModel {
                    name: checkpoint.name,
                    backends: checkpoint.backends,
                })
                .collect(),
            default_checkpoint,
        }))
    }

    async fn list_backends(
        &self,
        _request: Request<ListBackendsRequest>,
    ) -> Result<Response<ListBackendsResponse>, Status> {
        Ok(Response::new(ListBackendsResponse {
            backends: self
                .bridge
                .pool
                .backends()
                .iter()
                .map(|backend| backend_proto(backend.status()))
                .collect(),
        }))
    }
}
