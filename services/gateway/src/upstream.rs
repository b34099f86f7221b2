//! The gateway's clients of the services behind it: auth (authentication, JWKS, the account
//! API), jobs (the job API with the caller attached) and comfy-bridge (the model list).
//!
//! Every channel is lazy (the gateway starts before its upstreams and reconnects after they
//! restart), carries the W3C trace context and records client metrics (the runtime's
//! [`GrpcChannel`]).

use std::sync::Arc;
use std::time::Duration;

use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_proto::bridge::v1::bridge_service_client::BridgeServiceClient;
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_runtime::admin::Readiness;
use easel_runtime::grpc::client::ClientError;
use easel_runtime::grpc::{ClientConfig, GrpcChannel, connect_lazy};
use easel_runtime::transport::ServiceIdentity;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::SERVICE_NAME;
use crate::config::GatewayConfig;

/// The largest message the gateway accepts from an upstream (job answers with many outputs).
const MAX_UPSTREAM_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long a readiness probe waits for an upstream's health answer.
const HEALTH_TIMEOUT: Duration = Duration::from_millis(1500);

/// The clients of every upstream; cheap to clone.
#[derive(Clone, Debug)]
pub struct Upstreams {
    /// `easel.auth.v1.AuthService`.
    pub auth: AuthServiceClient<GrpcChannel>,
    /// `easel.account.v1.AccountService`, served by auth.
    pub account: AccountServiceClient<GrpcChannel>,
    /// `easel.jobs.internal.v1.InternalJobService`.
    pub jobs: InternalJobServiceClient<GrpcChannel>,
    /// `easel.bridge.v1.BridgeService`.
    pub bridge: BridgeServiceClient<GrpcChannel>,
    auth_channel: GrpcChannel,
    jobs_channel: GrpcChannel,
}

impl Upstreams {
    /// Makes lazy channels to every upstream, over mutual TLS with `identity` when set; fails
    /// only on a malformed URL.
    pub fn connect(
        config: &GatewayConfig,
        identity: Option<Arc<ServiceIdentity>>,
    ) -> Result<Upstreams, ClientError> {
        let channel = |url: &str, service: &str| {
            let mut client = ClientConfig::new(url).with_identity(identity.clone(), service);
            client.default_deadline = config.upstream_timeout;
            connect_lazy(&client, SERVICE_NAME)
        };
        let auth_channel = channel(&config.auth_url, "auth")?;
        let jobs_channel = channel(&config.jobs_url, "jobs")?;
        let bridge_channel = channel(&config.bridge_url, "comfy-bridge")?;
        Ok(Upstreams {
            auth: AuthServiceClient::new(auth_channel.clone()),
            account: AccountServiceClient::new(auth_channel.clone())
                .max_decoding_message_size(MAX_UPSTREAM_MESSAGE_BYTES),
            jobs: InternalJobServiceClient::new(jobs_channel.clone())
                .max_decoding_message_size(MAX_UPSTREAM_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_UPSTREAM_MESSAGE_BYTES),
            bridge: BridgeServiceClient::new(bridge_channel)
                .max_decoding_message_size(MAX_UPSTREAM_MESSAGE_BYTES),
            auth_channel,
            jobs_channel,
        })
    }

    /// The gateway is ready while auth and jobs answer their health checks: without them
    /// no call can succeed. (The bridge only serves the model list.)
    pub fn readiness(&self) -> Readiness {
        let auth = self.auth_channel.clone();
        let jobs = self.jobs_channel.clone();
        Readiness::new()
            .with_check("auth", move || serving(auth.clone()))
            .with_check("jobs", move || serving(jobs.clone()))
    }
}

/// Whether the upstream behind `channel` reports SERVING over `grpc.health.v1`.
async fn serving(channel: GrpcChannel) -> Result<(), String> {
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.set_timeout(HEALTH_TIMEOUT);
    let answer = tokio::time::timeout(HEALTH_TIMEOUT, client.check(request))
        .await
        .map_err(|_| "health check timed out".to_string())?
        .map_err(|status| format!("unreachable: {}", status.code()))?;
    let status = answer.into_inner().status;
    if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
        Ok(())
    } else {
        Err("not serving".to_string())
    }
}
