//! The connection to a running platform: gRPC to the gateway, the API key on every call.

use std::time::Duration;

use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::jobs::v1::job_service_client::JobServiceClient;
use easel_proto::models::v1::model_service_client::ModelServiceClient;
use easel_runtime::grpc::{ClientConfig, GrpcChannel, connect_lazy};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

/// Adds the API key to every call.
#[derive(Clone, Debug)]
pub struct ApiKey(Option<MetadataValue<tonic::metadata::Ascii>>);

impl Interceptor for ApiKey {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(key) = &self.0 {
            request.metadata_mut().insert("x-api-key", key.clone());
        }
        Ok(request)
    }
}

type Channel = InterceptedService<GrpcChannel, ApiKey>;

/// Clients of the public services.
#[derive(Clone, Debug)]
pub struct Clients {
    /// The job API.
    pub jobs: JobServiceClient<Channel>,
    /// The model list.
    pub models: ModelServiceClient<Channel>,
    /// Keys, tokens and usage.
    pub account: AccountServiceClient<Channel>,
}

impl Clients {
    /// Connects (lazily) to the gateway at `url` with `api_key`.
    pub fn connect(url: &str, api_key: Option<&str>) -> anyhow::Result<Clients> {
        let mut config = ClientConfig::new(url);
        config.connect_timeout = Duration::from_secs(5);
        // Watches and generations run as long as the job does; each command sets its own limit.
        config.default_deadline = Duration::from_secs(24 * 3600);
        let channel = connect_lazy(&config, "easel-cli")?;
        let key = match api_key {
            Some(key) => Some(MetadataValue::try_from(key).map_err(|_| {
                anyhow::anyhow!("EASEL_API_KEY contains characters a header cannot carry")
            })?),
            None => None,
        };
        let channel = InterceptedService::new(channel, ApiKey(key));
        Ok(Clients {
            jobs: JobServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            models: ModelServiceClient::new(channel.clone()),
            account: AccountServiceClient::new(channel),
        })
    }
}
