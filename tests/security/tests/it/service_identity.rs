//! Attack tests for service identity (issue 10, "internal ports trust whatever caller they are
//! told"): the platform's binaries as separate processes with mutual TLS between them.
//!
//! On every internal port: a client without a service certificate never gets an answer,
//! whatever caller it claims; a verified service calling a method its allow-list does not
//! name is PERMISSION_DENIED; the allowed service is served. And the platform still runs a
//! job end to end over mutual TLS.

use std::path::Path;
use std::sync::Arc;

use easel_e2e::{DEADLINE, Platform, PlatformOptions, event_status};
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_proto::auth::v1::{Principal, RecordUsageRequest};
use easel_proto::bridge::v1::bridge_service_client::BridgeServiceClient;
use easel_proto::bridge::v1::{ListBackendsRequest, ListModelsRequest};
use easel_proto::jobs::internal::v1::GetJobRequest;
use easel_proto::jobs::internal::v1::internal_job_service_client::InternalJobServiceClient;
use easel_proto::storage::v1::ListArtifactsRequest;
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_runtime::grpc::{ClientConfig, GrpcChannel, connect_lazy};
use easel_runtime::transport::ServiceIdentity;
use easel_runtime::transport::tls::dev;
use serde_json::json;

const SERVICES: &[&str] = &["gateway", "auth", "jobs", "storage", "comfy-bridge"];

/// A channel to `url` (a server that must prove to be `server`), as `caller` when given
/// (with its certificate), or as a plain client.
fn channel(url: &str, certificates: &Path, caller: Option<&str>, server: &str) -> GrpcChannel {
    let identity = caller.map(|caller| {
        Arc::new(
            ServiceIdentity::load(
                &certificates.join("ca.pem"),
                &certificates.join(format!("{caller}.pem")),
                &certificates.join(format!("{caller}.key")),
            )
            .unwrap_or_else(|error| panic!("{caller}'s identity: {error}")),
        )
    });
    let mut config = ClientConfig::new(url).with_identity(identity, server);
    config.default_deadline = DEADLINE;
    connect_lazy(&config, caller.unwrap_or("attacker")).expect("channel")
}

/// One internal method, called with a forged principal where it takes one.
#[derive(Clone, Copy, Debug)]
enum Probe {
    JobsGetJob,
    StorageListArtifacts,
    AuthRecordUsage,
    BridgeListBackends,
    BridgeListModels,
}

impl Probe {
    const ALL: [(Probe, &'static str, &'static str); 5] = [
        // (probe, server, the one service allowed)
        (Probe::JobsGetJob, "jobs", "gateway"),
        (Probe::StorageListArtifacts, "storage", "jobs"),
        (Probe::AuthRecordUsage, "auth", "jobs"),
        (Probe::BridgeListBackends, "comfy-bridge", "jobs"),
        (Probe::BridgeListModels, "comfy-bridge", "gateway"),
    ];

    async fn call(self, channel: GrpcChannel, victim: &str) -> Result<(), tonic::Status> {
        let forged = Principal {
            user_id: victim.to_string(),
            ..Principal::default()
        };
        match self {
            Probe::JobsGetJob => InternalJobServiceClient::new(channel)
                .get_job(GetJobRequest {
                    caller: Some(forged),
                    request: Some(easel_proto::jobs::v1::GetJobRequest {
                        job_id: "job_00000000000000000000000000".to_string(),
                    }),
                })
                .await
                .map(|_| ()),
            Probe::StorageListArtifacts => StorageServiceClient::new(channel)
                .list_artifacts(ListArtifactsRequest {
                    owner: victim.to_string(),
                    ..ListArtifactsRequest::default()
                })
                .await
                .map(|_| ()),
            Probe::AuthRecordUsage => AuthServiceClient::new(channel)
                .record_usage(RecordUsageRequest {
                    user_id: victim.to_string(),
                    jobs_submitted: 0,
                    gpu_seconds: 0.0,
                    bytes_stored: 0,
                })
                .await
                .map(|_| ()),
            Probe::BridgeListBackends => BridgeServiceClient::new(channel)
                .list_backends(ListBackendsRequest {})
                .await
                .map(|_| ()),
            Probe::BridgeListModels => BridgeServiceClient::new(channel)
                .list_models(ListModelsRequest {})
                .await
                .map(|_| ()),
        }
    }
}

/// The answer came from the method itself (success or its own verdict on the forged
/// request), not from a refusal at the connection or the allow-list.
fn served(result: &Result<(), tonic::Status>) -> bool {
    match result {
        Ok(()) => true,
        Err(status) => matches!(
            status.code(),
            tonic::Code::NotFound
                | tonic::Code::InvalidArgument
                | tonic::Code::Unauthenticated
                | tonic::Code::FailedPrecondition
        ),
    }
}

#[tokio::test]
async fn internal_ports_refuse_forged_callers_and_services_outside_their_allow_list() {
    easel_runtime::install_crypto_provider();
    let certificates = tempfile::tempdir().expect("tempdir");
    dev::generate(certificates.path(), SERVICES, 1).expect("certificates");
    let platform = Platform::start_with(PlatformOptions {
        tls_dir: Some(certificates.path().to_path_buf()),
        ..PlatformOptions::default()
    })
    .await;
    let victim = platform.admin.id.clone();
    let url_of = |server: &str| match server {
        "jobs" => platform.jobs.grpc_url(),
        "storage" => platform.storage.grpc_url(),
        "auth" => platform.auth.grpc_url(),
        _ => platform.bridge.grpc_url(),
    };

    // The platform works over mutual TLS: a job runs from the gateway through every service.
    let response = platform
        .submit_rest(
            &platform.admin.api_key,
            &json!({"prompt": "A lighthouse", "width": 64, "height": 64}),
            None,
        )
        .await;
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    let job = if body["job"].is_object() {
        &body["job"]
    } else {
        &body
    };
    let job_id = job["id"].as_str().unwrap_or_default().to_string();
    let events = platform.watch_ws(&platform.admin.api_key, &job_id).await;
    let last = events
        .iter()
        .rev()
        .find_map(event_status)
        .unwrap_or_default();
    assert_eq!(last, "completed", "events: {events:?}");

    for (probe, server, allowed) in Probe::ALL {
        let url = url_of(server);
        // No certificate: whatever caller it claims, it never reaches the method.
        let plain = probe
            .call(channel(&url, certificates.path(), None, server), &victim)
            .await;
        assert!(
            !served(&plain)
                && plain
                    .as_ref()
                    .err()
                    .is_some_and(|status| status.code() != tonic::Code::PermissionDenied),
            "{probe:?} on {server} without a certificate: {plain:?}"
        );
        for caller in SERVICES {
            let result = probe
                .call(
                    channel(&url, certificates.path(), Some(caller), server),
                    &victim,
                )
                .await;
            if *caller == allowed {
                assert!(served(&result), "{probe:?} as {caller}: {result:?}");
            } else {
                let status = result.expect_err("refused");
                assert_eq!(
                    status.code(),
                    tonic::Code::PermissionDenied,
                    "{probe:?} as {caller}: {status:?}"
                );
                assert!(
                    status
                        .message()
                        .contains(&format!("{caller:?} may not call")),
                    "{}",
                    status.message()
                );
            }
        }
    }
}
