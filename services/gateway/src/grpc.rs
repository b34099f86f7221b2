//! The public gRPC services (also reached over gRPC-web): thin adapters over [`Gateway`].

use std::pin::Pin;

use easel_proto::account::v1 as account;
use easel_proto::account::v1::account_service_server::{AccountService, AccountServiceServer};
use easel_proto::jobs::v1 as jobs;
use easel_proto::jobs::v1::job_service_server::{JobService, JobServiceServer};
use easel_proto::models::v1::model_service_server::{ModelService, ModelServiceServer};
use easel_proto::models::v1::{ListModelsRequest, ListModelsResponse};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::api::Gateway;
use crate::context::CallContext;

/// The three public services, limited to `max_message_bytes` per request message.
pub fn services(
    gateway: &Gateway,
    max_message_bytes: usize,
) -> (
    JobServiceServer<JobApi>,
    ModelServiceServer<ModelApi>,
    AccountServiceServer<AccountApi>,
) {
    (
        JobServiceServer::new(JobApi {
            gateway: gateway.clone(),
        })
        .max_decoding_message_size(max_message_bytes),
        ModelServiceServer::new(ModelApi {
            gateway: gateway.clone(),
        })
        .max_decoding_message_size(max_message_bytes),
        AccountServiceServer::new(AccountApi {
            gateway: gateway.clone(),
        })
        .max_decoding_message_size(max_message_bytes),
    )
}

fn context<T>(gateway: &Gateway, request: &Request<T>) -> CallContext {
    CallContext::from_grpc(request, gateway.config().upstream_timeout)
}

/// `easel.jobs.v1.JobService`.
#[derive(Clone, Debug)]
pub struct JobApi {
    gateway: Gateway,
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<jobs::WatchJobResponse, Status>> + Send>>;

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<jobs::SubmitJobRequest>,
    ) -> Result<Response<jobs::SubmitJobResponse>, Status> {
        let context = context(&self.gateway, &request);
        let answer = self
            .gateway
            .submit_job(&context, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn get_job(
        &self,
        request: Request<jobs::GetJobRequest>,
    ) -> Result<Response<jobs::GetJobResponse>, Status> {
        let context = context(&self.gateway, &request);
        let answer = self.gateway.get_job(&context, request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_jobs(
        &self,
        request: Request<jobs::ListJobsRequest>,
    ) -> Result<Response<jobs::ListJobsResponse>, Status> {
        let context = context(&self.gateway, &request);
        let answer = self
            .gateway
            .list_jobs(&context, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn cancel_job(
        &self,
        request: Request<jobs::CancelJobRequest>,
    ) -> Result<Response<jobs::CancelJobResponse>, Status> {
        let context = context(&self.gateway, &request);
        let answer = self
            .gateway
            .cancel_job(&context, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }

    async fn watch_job(
        &self,
        request: Request<jobs::WatchJobRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let context = context(&self.gateway, &request);
        let events = self
            .gateway
            .watch_job(&context, request.into_inner())
            .await?;
        let stream = events.map(|item| {
            item.map(|event| jobs::WatchJobResponse { event: Some(event) })
                .map_err(|error| error.into_status())
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// `easel.models.v1.ModelService`.
#[derive(Clone, Debug)]
pub struct ModelApi {
    gateway: Gateway,
}

#[tonic::async_trait]
impl ModelService for ModelApi {
    async fn list_models(
        &self,
        request: Request<ListModelsRequest>,
    ) -> Result<Response<ListModelsResponse>, Status> {
        let context = context(&self.gateway, &request);
        let answer = self
            .gateway
            .list_models(&context, request.into_inner())
            .await?;
        Ok(Response::new(answer))
    }
}

/// `easel.account.v1.AccountService`, forwarded to auth.
#[derive(Clone, Debug)]
pub struct AccountApi {
    gateway: Gateway,
}

macro_rules! account_rpcs {
    ($($method:ident($request:ty) -> $response:ty;)*) => {
        #[tonic::async_trait]
        impl AccountService for AccountApi {
            $(
                async fn $method(
                    &self,
                    request: Request<$request>,
                ) -> Result<Response<$response>, Status> {
                    let context = context(&self.gateway, &request);
                    let answer = self.gateway.$method(&context, request.into_inner()).await?;
                    Ok(Response::new(answer))
                }
            )*
        }
    };
}

account_rpcs! {
    create_api_key(account::CreateApiKeyRequest) -> account::CreateApiKeyResponse;
    list_api_keys(account::ListApiKeysRequest) -> account::ListApiKeysResponse;
    revoke_api_key(account::RevokeApiKeyRequest) -> account::RevokeApiKeyResponse;
    login(account::LoginRequest) -> account::LoginResponse;
    exchange_token(account::ExchangeTokenRequest) -> account::ExchangeTokenResponse;
    get_usage(account::GetUsageRequest) -> account::GetUsageResponse;
    create_user(account::CreateUserRequest) -> account::CreateUserResponse;
    set_user_tier(account::SetUserTierRequest) -> account::SetUserTierResponse;
    disable_user(account::DisableUserRequest) -> account::DisableUserResponse;
}
