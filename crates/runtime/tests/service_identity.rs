//! Service identity on a real port: an internal server with mutual TLS refuses callers without
//! a certificate from the service CA, refuses a verified service the allow-list does not name
//! for the method (PERMISSION_DENIED), serves the right one, and keeps health open.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use easel_runtime::Shutdown;
use easel_runtime::config::ServerConfig;
use easel_runtime::grpc::{CallerPolicy, ClientConfig, GrpcChannel, GrpcServer, connect_lazy};
use easel_runtime::transport::ServiceIdentity;
use easel_runtime::transport::tls::dev;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const GET_JOB: &str = "/easel.jobs.internal.v1.InternalJobService/GetJob";
const POLICY: CallerPolicy =
    CallerPolicy::new(&[("easel.jobs.internal.v1.InternalJobService/*", &["gateway"])]);

fn identity(dir: &Path, service: &str) -> Arc<ServiceIdentity> {
    Arc::new(
        ServiceIdentity::load(
            &dir.join("ca.pem"),
            &dir.join(format!("{service}.pem")),
            &dir.join(format!("{service}.key")),
        )
        .expect("identity loads"),
    )
}

/// Calls `path` with a health request as the body: past the allow-list an unknown method
/// answers UNIMPLEMENTED, which proves the call got through.
async fn call(channel: GrpcChannel, path: &'static str) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.to_string()))?;
    let codec = tonic_prost::ProstCodec::<HealthCheckRequest, HealthCheckResponse>::default();
    grpc.unary(
        tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        }),
        http::uri::PathAndQuery::from_static(path),
        codec,
    )
    .await
    .map(|_| ())
}

/// The call failed at the connection: it reached neither the allow-list nor a method. (The
/// client's error code varies with how far its bytes got before the TLS refusal.)
fn assert_never_served(status: &tonic::Status) {
    assert!(
        !matches!(
            status.code(),
            tonic::Code::Unimplemented | tonic::Code::PermissionDenied | tonic::Code::Ok
        ),
        "{status:?}"
    );
}

struct Server {
    url: String,
    shutdown: Shutdown,
}

async fn jobs_server(certificates: &Path) -> Server {
    let mut config = ServerConfig::ephemeral();
    config.tls = Some(identity(certificates, "jobs"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = Shutdown::new(Duration::from_secs(2));
    let server = GrpcServer::new("jobs", &config).allow_callers(POLICY);
    tokio::spawn(server.serve(listener, shutdown.clone()));
    Server { url, shutdown }
}

fn client(server: &Server, certificates: &Path, as_service: &str, expect: &str) -> GrpcChannel {
    let config = ClientConfig::new(&server.url)
        .with_identity(Some(identity(certificates, as_service)), expect);
    connect_lazy(&config, as_service).expect("channel")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_services_with_the_cas_certificates_get_through() {
    easel_runtime::install_crypto_provider();
    let pki = tempfile::tempdir().expect("tempdir");
    let other_pki = tempfile::tempdir().expect("tempdir");
    dev::generate(pki.path(), &["jobs", "gateway", "storage"], 1).expect("certificates");
    dev::generate(other_pki.path(), &["gateway"], 1).expect("other CA");
    let server = jobs_server(pki.path()).await;

    // The gateway may call the job API: the call passes the allow-list (UNIMPLEMENTED here,
    // as this test server mounts no job service).
    let gateway = client(&server, pki.path(), "gateway", "jobs");
    let status = call(gateway.clone(), GET_JOB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    // Storage is a verified service, but not allowed the job API.
    let storage = client(&server, pki.path(), "storage", "jobs");
    let status = call(storage.clone(), GET_JOB).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("\"storage\" may not call")
            && status.message().contains("InternalJobService/GetJob"),
        "{}",
        status.message()
    );
    // Health stays open to every verified service.
    let health = HealthClient::new(storage)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health is open");
    assert_eq!(health.into_inner().status, 1);

    // No certificate at all: a plain client never gets a connection (it reads the server's
    // TLS alert as a broken HTTP/2 stream).
    let plain = connect_lazy(&ClientConfig::new(&server.url), "attacker").expect("channel");
    let status = call(plain, GET_JOB).await.unwrap_err();
    assert_never_served(&status);

    // A certificate naming the gateway but signed by another CA: the handshake is refused.
    let forged = ClientConfig::new(&server.url).with_identity(
        Some(Arc::new(
            ServiceIdentity::load(
                &pki.path().join("ca.pem"),
                &other_pki.path().join("gateway.pem"),
                &other_pki.path().join("gateway.key"),
            )
            .expect("identity loads"),
        )),
        "jobs",
    );
    let status = call(connect_lazy(&forged, "attacker").expect("channel"), GET_JOB)
        .await
        .unwrap_err();
    assert_never_served(&status);

    // The client checks the server too: jobs cannot pass for storage.
    let misdirected = client(&server, pki.path(), "gateway", "storage");
    let status = call(misdirected, GET_JOB).await.unwrap_err();
    assert_never_served(&status);

    server.shutdown.trigger();
}

#[tokio::test]
async fn a_certificate_for_another_service_does_not_start_the_server() {
    easel_runtime::install_crypto_provider();
    let pki = tempfile::tempdir().expect("tempdir");
    dev::generate(pki.path(), &["storage"], 1).expect("certificates");
    let mut config = ServerConfig::ephemeral();
    config.tls = Some(identity(pki.path(), "storage"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = GrpcServer::new("jobs", &config)
        .serve(listener, Shutdown::new(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("EASEL_TLS_CERT"), "{error}");
}

#[test]
fn without_certificates_a_non_loopback_address_needs_a_trusted_network() {
    let env_for = |pairs: Vec<(&str, &str)>| easel_runtime::Env::from_pairs(pairs);
    let defaults = (
        "127.0.0.1:50052".parse().expect("address"),
        "127.0.0.1:9082".parse().expect("address"),
    );
    let mut env = env_for(vec![("EASEL_GRPC_LISTEN", "0.0.0.0:50052")]);
    let _ = ServerConfig::from_env(&mut env, defaults.0, defaults.1);
    let message = env.finish().unwrap_err().to_string();
    assert!(
        message.contains("EASEL_GRPC_LISTEN")
            && message.contains("EASEL_TLS_CERT")
            && message.contains("EASEL_TRUSTED_NETWORK"),
        "{message}"
    );

    let mut env = env_for(vec![
        ("EASEL_GRPC_LISTEN", "0.0.0.0:50052"),
        ("EASEL_TRUSTED_NETWORK", "true"),
    ]);
    let _ = ServerConfig::from_env(&mut env, defaults.0, defaults.1);
    assert!(env.finish().is_ok());

    let mut env = env_for(vec![("EASEL_TLS_CERT", "/nowhere/jobs.pem")]);
    let _ = ServerConfig::from_env(&mut env, defaults.0, defaults.1);
    let message = env.finish().unwrap_err().to_string();
    assert!(
        message.contains("EASEL_TLS_CA") && message.contains("EASEL_TLS_KEY"),
        "{message}"
    );
}
