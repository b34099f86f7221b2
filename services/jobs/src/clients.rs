//! gRPC clients of the services jobs talks to: comfy-bridge, storage and (optionally) auth.

use std::sync::Arc;
use std::time::Duration;

use easel_proto::auth::v1::RecordUsageRequest;
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_proto::bridge::v1::bridge_service_client::BridgeServiceClient;
use easel_proto::storage::v1::SignUrlRequest;
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_runtime::grpc::{ClientConfig, GrpcChannel, connect_lazy};
use easel_runtime::transport::ServiceIdentity;

use crate::SERVICE_NAME;
use crate::error::{JobsError, Result};
use crate::model::proto_duration;
use easel_runtime::error::InternalContext;

/// Images cross these channels whole.
const MAX_MESSAGE: usize = 64 << 20;

/// The clients, cheap to clone.
#[derive(Clone, Debug)]
pub struct Clients {
    /// comfy-bridge.
    pub bridge: BridgeServiceClient<GrpcChannel>,
    /// storage.
    pub storage: StorageServiceClient<GrpcChannel>,
    /// auth, when usage is recorded.
    pub auth: Option<AuthServiceClient<GrpcChannel>>,
}

impl Clients {
    /// Lazily connected clients (nothing is dialled until the first call); with `identity`,
    /// over mutual TLS.
    pub fn new(
        bridge_url: &str,
        storage_url: &str,
        auth_url: Option<&str>,
        identity: Option<Arc<ServiceIdentity>>,
    ) -> Result<Clients> {
        let channel = |url: &str, service: &str| {
            let config = ClientConfig::new(url).with_identity(identity.clone(), service);
            connect_lazy(&config, SERVICE_NAME)
                .internal(format!("the {service} channel"))
                .map_err(JobsError::from)
        };
        Ok(Clients {
            bridge: BridgeServiceClient::new(channel(bridge_url, "comfy-bridge")?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            storage: StorageServiceClient::new(channel(storage_url, "storage")?)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            auth: auth_url
                .map(|url| channel(url, "auth"))
                .transpose()?
                .map(AuthServiceClient::new),
        })
    }

    /// A signed link to an output, or `None` (logged) when storage cannot make one.
    pub async fn sign(
        &self,
        owner: &str,
        artifact_id: &str,
        ttl: Duration,
    ) -> Option<(String, pbjson_types::Timestamp)> {
        let mut storage = self.storage.clone();
        let answer = storage
            .sign_url(SignUrlRequest {
                owner: owner.to_string(),
                artifact_id: artifact_id.to_string(),
                ttl: Some(proto_duration(ttl)),
            })
            .await;
        match answer {
            Ok(response) => {
                let response = response.into_inner();
                Some((response.url, response.expire_time.unwrap_or_default()))
            }
            Err(status) => {
                tracing::warn!(artifact_id, code = ?status.code(), "signing an output link failed");
                None
            }
        }
    }

    /// Adds usage in the background, best effort (the job is the record; usage is metering).
    pub fn record_usage(&self, user_id: &str, jobs_submitted: u64, gpu_seconds: f64) {
        let Some(mut auth) = self.auth.clone() else {
            return;
        };
        let request = RecordUsageRequest {
            user_id: user_id.to_string(),
            jobs_submitted,
            gpu_seconds,
            bytes_stored: 0,
        };
        tokio::spawn(async move {
            if let Err(status) = auth.record_usage(request).await {
                tracing::warn!(code = ?status.code(), "recording usage failed");
            }
        });
    }
}
