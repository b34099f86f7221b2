//! The operations behind the public API. gRPC, gRPC-web and REST handlers are thin adapters
//! over [`Gateway`], so every protocol answers the same data with the same errors.

use std::pin::Pin;
use std::sync::Arc;

use easel_proto::account::v1 as account;
use easel_proto::bridge::v1::ListModelsRequest as BridgeListModelsRequest;
use easel_proto::jobs::internal::v1 as internal;
use easel_proto::jobs::v1 as jobs;
use easel_proto::models::v1::{ListModelsRequest, ListModelsResponse, Model};
use easel_runtime::Shutdown;
use easel_runtime::error::Error;
use easel_runtime::page;
use futures::{Stream, StreamExt};

use crate::config::GatewayConfig;
use crate::context::CallContext;
use crate::upstream::Upstreams;

/// The default page size of the model list.
const DEFAULT_MODEL_PAGE: u32 = 100;
/// The largest page size of the model list.
const MAX_MODEL_PAGE: u32 = 1000;

/// A job's events: the snapshot (or the events after a resume point), then every event in
/// order. It ends after the event that makes the job terminal, or with UNAVAILABLE when the
/// gateway shuts down (resume with the last sequence number seen).
pub type JobEvents = Pin<Box<dyn Stream<Item = Result<jobs::JobEvent, Error>> + Send + 'static>>;

/// The public API's operations.
#[derive(Clone, Debug)]
pub struct Gateway {
    upstreams: Upstreams,
    config: Arc<GatewayConfig>,
    shutdown: Shutdown,
}

impl Gateway {
    /// The operations over `upstreams`; streams end when `shutdown` fires.
    pub fn new(upstreams: Upstreams, config: Arc<GatewayConfig>, shutdown: Shutdown) -> Gateway {
        Gateway {
            upstreams,
            config,
            shutdown,
        }
    }

    /// The gateway's settings.
    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The shutdown signal (streams close when it fires).
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// The upstream clients.
    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// Submits a job as the caller.
    pub async fn submit_job(
        &self,
        context: &CallContext,
        request: jobs::SubmitJobRequest,
    ) -> Result<jobs::SubmitJobResponse, Error> {
        // The nesting limit at the door, the same for REST, gRPC and gRPC-web (jobs checks it
        // again for its other callers).
        if let Some(field) = easel_proto::limits::too_deep_workflow_field(&request) {
            return Err(Error::invalid_field(
                field,
                easel_proto::limits::too_deep_description(),
            ));
        }
        let message = internal::SubmitJobRequest {
            caller: Some(context.principal()?),
            request: Some(request),
        };
        let answer = self
            .upstreams
            .jobs
            .clone()
            .submit_job(context.request(message))
            .await?;
        Ok(answer.into_inner())
    }

    /// One of the caller's jobs.
    pub async fn get_job(
        &self,
        context: &CallContext,
        request: jobs::GetJobRequest,
    ) -> Result<jobs::GetJobResponse, Error> {
        let message = internal::GetJobRequest {
            caller: Some(context.principal()?),
            request: Some(request),
        };
        let answer = self
            .upstreams
            .jobs
            .clone()
            .get_job(context.request(message))
            .await?;
        Ok(answer.into_inner())
    }

    /// A page of the caller's jobs.
    pub async fn list_jobs(
        &self,
        context: &CallContext,
        request: jobs::ListJobsRequest,
    ) -> Result<jobs::ListJobsResponse, Error> {
        let message = internal::ListJobsRequest {
            caller: Some(context.principal()?),
            request: Some(request),
        };
        let answer = self
            .upstreams
            .jobs
            .clone()
            .list_jobs(context.request(message))
            .await?;
        Ok(answer.into_inner())
    }

    /// Cancels one of the caller's jobs.
    pub async fn cancel_job(
        &self,
        context: &CallContext,
        request: jobs::CancelJobRequest,
    ) -> Result<jobs::CancelJobResponse, Error> {
        let message = internal::CancelJobRequest {
            caller: Some(context.principal()?),
            request: Some(request),
        };
        let answer = self
            .upstreams
            .jobs
            .clone()
            .cancel_job(context.request(message))
            .await?;
        Ok(answer.into_inner())
    }

    /// Follows one of the caller's jobs. The upstream stream is opened before this returns,
    /// so an unknown job is an error here, not in the stream.
    pub async fn watch_job(
        &self,
        context: &CallContext,
        request: jobs::WatchJobRequest,
    ) -> Result<JobEvents, Error> {
        let message = internal::WatchJobRequest {
            caller: Some(context.principal()?),
            request: Some(request),
        };
        let upstream = self
            .upstreams
            .jobs
            .clone()
            .watch_job(context.stream_request(message))
            .await?
            .into_inner();
        let events = upstream.filter_map(|item| async move {
            match item {
                Ok(jobs::WatchJobResponse { event: Some(event) }) => Some(Ok(event)),
                Ok(jobs::WatchJobResponse { event: None }) => None,
                Err(status) => Some(Err(Error::from_status(&status))),
            }
        });
        Ok(until_shutdown(events, &self.shutdown))
    }

    /// A page of the checkpoints the backends have, by name.
    pub async fn list_models(
        &self,
        context: &CallContext,
        request: ListModelsRequest,
    ) -> Result<ListModelsResponse, Error> {
        let page_size = match request.page_size {
            0 => DEFAULT_MODEL_PAGE,
            size if size <= MAX_MODEL_PAGE => size,
            _ => {
                return Err(Error::invalid_field(
                    "page_size",
                    format!("must be from 1 to {MAX_MODEL_PAGE}"),
                ));
            }
        };
        let after = decode_model_token(&request.page_token)?;
        let answer = self
            .upstreams
            .bridge
            .clone()
            .list_models(context.request(BridgeListModelsRequest {}))
            .await?
            .into_inner();
        Ok(page_models(answer, after.as_deref(), page_size as usize))
    }
}

/// The account API, forwarded to auth with the caller's credentials and address: auth
/// authenticates and authorizes these calls itself.
macro_rules! forward_account {
    ($($(#[$doc:meta])* $method:ident($request:ty) -> $response:ty;)*) => {
        impl Gateway {
            $(
                $(#[$doc])*
                pub async fn $method(
                    &self,
                    context: &CallContext,
                    request: $request,
                ) -> Result<$response, Error> {
                    let answer = self
                        .upstreams
                        .account
                        .clone()
                        .$method(context.forwarded_request(request))
                        .await?;
                    Ok(answer.into_inner())
                }
            )*
        }
    };
}

forward_account! {
    /// Creates an API key for the caller.
    create_api_key(account::CreateApiKeyRequest) -> account::CreateApiKeyResponse;
    /// Lists the caller's API keys.
    list_api_keys(account::ListApiKeysRequest) -> account::ListApiKeysResponse;
    /// Revokes one of the caller's API keys.
    revoke_api_key(account::RevokeApiKeyRequest) -> account::RevokeApiKeyResponse;
    /// Exchanges an email and password for an access token.
    login(account::LoginRequest) -> account::LoginResponse;
    /// Exchanges the calling API key for an access token.
    exchange_token(account::ExchangeTokenRequest) -> account::ExchangeTokenResponse;
    /// The caller's usage and limits.
    get_usage(account::GetUsageRequest) -> account::GetUsageResponse;
    /// Creates a user (admin).
    create_user(account::CreateUserRequest) -> account::CreateUserResponse;
    /// Changes a user's tier (admin).
    set_user_tier(account::SetUserTierRequest) -> account::SetUserTierResponse;
    /// Disables a user (admin).
    disable_user(account::DisableUserRequest) -> account::DisableUserResponse;
}

/// `events` until `shutdown` fires; then one UNAVAILABLE error telling the client to resume.
pub fn until_shutdown<S>(events: S, shutdown: &Shutdown) -> JobEvents
where
    S: Stream<Item = Result<jobs::JobEvent, Error>> + Send + 'static,
{
    let stopped = shutdown.triggered();
    let ended = futures::stream::once(async {
        Err(Error::unavailable(
            "the server is shutting down; resume after the last sequence number received",
        ))
    });
    // `take_until` ends the events when the signal fires; the error follows only then.
    let events = events.take_until(stopped);
    let shutdown = shutdown.clone();
    Box::pin(events.chain(ended.filter(move |_| {
        let triggered = shutdown.is_triggered();
        async move { triggered }
    })))
}

/// The model list's page token: the last name of the previous page.
fn decode_model_token(token: &str) -> Result<Option<String>, Error> {
    Ok(page::decode(token, "", |name| Some(name.to_string()))?)
}

/// One page of the bridge's checkpoints, sorted by name, after `after`.
fn page_models(
    answer: easel_proto::bridge::v1::ListModelsResponse,
    after: Option<&str>,
    page_size: usize,
) -> ListModelsResponse {
    let mut checkpoints = answer.checkpoints;
    checkpoints.sort_by(|a, b| a.name.cmp(&b.name));
    checkpoints.dedup_by(|a, b| a.name == b.name);
    let remaining: Vec<_> = checkpoints
        .into_iter()
        .filter(|checkpoint| after.is_none_or(|after| checkpoint.name.as_str() > after))
        .collect();
    let has_more = remaining.len() > page_size;
    let models: Vec<Model> = remaining
        .into_iter()
        .take(page_size)
        .map(|checkpoint| Model {
            is_default: checkpoint.name == answer.default_checkpoint,
            backend_count: u32::try_from(checkpoint.backends.len()).unwrap_or(u32::MAX),
            kind: "checkpoints".to_string(),
            name: checkpoint.name,
        })
        .collect();
    let next_page_token = match (has_more, models.last()) {
        (true, Some(last)) => page::encode(&last.name, ""),
        _ => String::new(),
    };
    ListModelsResponse {
        models,
        next_page_token,
    }
}

#[cfg(test)]
mod tests {
    use easel_proto::bridge::v1::{CheckpointModel, ListModelsResponse as BridgeModels};

    use super::*;

    fn bridge_models(names: &[&str]) -> BridgeModels {
        BridgeModels {
            checkpoints: names
                .iter()
                .map(|name| CheckpointModel {
                    name: (*name).to_string(),
                    backends: vec!["a".into(), "b".into()],
                })
                .collect(),
            default_checkpoint: "b.safetensors".into(),
        }
    }

    #[test]
    fn models_page_by_name_with_tokens() {
        let all = bridge_models(&["c.safetensors", "a.safetensors", "b.safetensors"]);
        let first = page_models(all.clone(), None, 2);
        let names: Vec<_> = first.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["a.safetensors", "b.safetensors"]);
        assert!(first.models[1].is_default);
        assert_eq!(first.models[0].backend_count, 2);
        let after = decode_model_token(&first.next_page_token).unwrap();
        let second = page_models(all, after.as_deref(), 2);
        let names: Vec<_> = second.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c.safetensors"]);
        assert!(second.next_page_token.is_empty());
    }

    #[test]
    fn a_forged_model_token_is_invalid() {
        let error = decode_model_token("***").unwrap_err();
        assert_eq!(error.field_violations()[0].field, "page_token");
    }

    #[tokio::test]
    async fn streams_end_with_unavailable_only_on_shutdown() {
        let shutdown = Shutdown::new(std::time::Duration::from_secs(1));
        let finished = until_shutdown(
            futures::stream::iter([Ok(jobs::JobEvent::default())]),
            &shutdown,
        );
        let items: Vec<_> = finished.collect().await;
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());

        let open = until_shutdown(futures::stream::pending(), &shutdown);
        shutdown.trigger();
        let items: Vec<_> = open.collect().await;
        assert_eq!(items.len(), 1);
        assert_eq!(
            items[0].as_ref().unwrap_err().code(),
            easel_runtime::ErrorCode::Unavailable
        );
    }
}
