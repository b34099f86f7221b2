//! The test harness: an `s3s-fs` child process, the service in-process, a gRPC client, and
//! helpers to upload, download and look at what the store holds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_proto::storage::v1::{
    Artifact, ArtifactHeader, GetArtifactRequest, PutArtifactRequest, get_artifact_response,
    put_artifact_request,
};
use easel_runtime::Shutdown;
use easel_runtime::config::{ServerConfig, TelemetryConfig};
use easel_runtime::service::Listeners;
use easel_storage::{BackendConfig, Config, S3Config, StorageConfig};
use easel_test_support::{S3Server, TestDatabase};
use tonic::transport::Channel;

pub const BUCKET: &str = "easel-artifacts";

/// Which store a harness uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3,
}

/// The tests' S3 server with the bucket settings the harness uses.
pub fn s3_config(server: &S3Server) -> S3Config {
    S3Config {
        bucket: BUCKET.to_string(),
        endpoint: Some(server.endpoint.clone()),
        region: "us-east-1".to_string(),
        access_key_id: Some(S3Server::ACCESS_KEY.to_string()),
        secret_access_key: Some(S3Server::SECRET_KEY.to_string()),
        path_style: true,
    }
}

/// The service running in-process with its store and database.
pub struct Harness {
    pub client: StorageServiceClient<Channel>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    pub config: StorageConfig,
    pub shutdown: Shutdown,
    /// The local store's directory (local backend).
    pub local_root: Option<tempfile::TempDir>,
    pub s3: Option<S3Server>,
    _db: Option<TestDatabase>,
}

impl Harness {
    pub async fn start(kind: Kind) -> Harness {
        Harness::start_with(kind, |_| {}).await
    }

    pub async fn start_with(kind: Kind, tweak: impl FnOnce(&mut StorageConfig)) -> Harness {
        let db = TestDatabase::postgres().await;
        let mut harness = Harness::start_on(kind, db.url.clone(), tweak).await;
        harness._db = Some(db);
        harness
    }

    pub async fn start_on(
        kind: Kind,
        database_url: String,
        tweak: impl FnOnce(&mut StorageConfig),
    ) -> Harness {
        let (backend, local_root, s3) = match kind {
            Kind::Local => {
                let root = tempfile::tempdir().expect("temp dir");
                let backend = BackendConfig::Local {
                    root: root.path().join("artifacts"),
                };
                (backend, Some(root), None)
            }
            Kind::S3 => {
                let server = S3Server::start().await;
                (BackendConfig::S3(s3_config(&server)), None, Some(server))
            }
        };
        let mut storage = StorageConfig::new(backend, database_url);
        tweak(&mut storage);
        let config = Config {
            server: ServerConfig::ephemeral(),
            telemetry: TelemetryConfig::quiet(easel_storage::SERVICE_NAME),
            storage: storage.clone(),
        };
        let listeners = Listeners::ephemeral().await.expect("listeners");
        let grpc = listeners.grpc_addr().expect("grpc addr");
        let admin = listeners.admin_addr().expect("admin addr");
        let shutdown = Shutdown::new(Duration::from_secs(5));
        let task_shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = easel_storage::run(config, listeners, task_shutdown).await {
                panic!("the service failed: {error}");
            }
        });
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .expect("endpoint")
            .connect_lazy();
        let client = StorageServiceClient::new(channel)
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        Harness {
            client,
            grpc,
            admin,
            config: storage,
            shutdown,
            local_root,
            s3,
            _db: None,
        }
    }

    /// Every file the store holds on disk, objects and in-progress uploads alike (s3s-fs
    /// keeps multipart parts and metadata as dot files beside the bucket).
    pub fn stored_files(&self) -> Vec<PathBuf> {
        let root = match (&self.local_root, &self.s3) {
            (Some(root), _) => root.path().to_path_buf(),
            (_, Some(s3)) => s3.root.path().to_path_buf(),
            _ => unreachable!(),
        };
        let mut files = Vec::new();
        walk(&root, &mut files);
        files
    }

    /// Stored objects (data files, not s3s-fs's metadata).
    pub fn stored_objects(&self) -> Vec<PathBuf> {
        self.stored_files()
            .into_iter()
            .filter(|path| {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                !(name.starts_with(".bucket-") && name.ends_with(".json"))
            })
            .collect()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else {
            files.push(path);
        }
    }
}

pub fn header(owner: &str, job_id: &str, content_type: &str) -> ArtifactHeader {
    ArtifactHeader {
        owner: owner.to_string(),
        job_id: job_id.to_string(),
        content_type: content_type.to_string(),
        metadata: Default::default(),
        ttl: None,
    }
}

/// The request messages of an upload: the header, then `bytes` in chunks.
pub fn messages(header: ArtifactHeader, bytes: &[u8], chunk: usize) -> Vec<PutArtifactRequest> {
    let mut messages = vec![PutArtifactRequest {
        part: Some(put_artifact_request::Part::Header(header)),
    }];
    messages.extend(bytes.chunks(chunk.max(1)).map(|piece| PutArtifactRequest {
        part: Some(put_artifact_request::Part::Chunk(piece.to_vec())),
    }));
    messages
}

pub async fn put(
    client: &mut StorageServiceClient<Channel>,
    header: ArtifactHeader,
    bytes: &[u8],
) -> Result<Artifact, tonic::Status> {
    let response = client
        .put_artifact(tokio_stream::iter(messages(header, bytes, 64 * 1024)))
        .await?;
    Ok(response.into_inner().artifact.expect("an artifact"))
}

pub async fn put_png(h: &mut Harness, owner: &str, job_id: &str, size: usize) -> Artifact {
    let bytes = easel_storage::sniff::samples::png(64, 32, size);
    put(&mut h.client, header(owner, job_id, "image/png"), &bytes)
        .await
        .expect("upload")
}

pub async fn get(
    client: &mut StorageServiceClient<Channel>,
    owner: &str,
    id: &str,
) -> Result<(Artifact, Vec<u8>), tonic::Status> {
    let mut stream = client
        .get_artifact(GetArtifactRequest {
            owner: owner.to_string(),
            artifact_id: id.to_string(),
        })
        .await?
        .into_inner();
    let mut artifact = None;
    let mut bytes = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(get_artifact_response::Part::Artifact(a)) => artifact = Some(a),
            Some(get_artifact_response::Part::Chunk(c)) => bytes.extend_from_slice(&c),
            None => {}
        }
    }
    Ok((artifact.expect("the artifact first"), bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A fresh owner id.
pub fn owner() -> String {
    easel_runtime::ids::new_id("usr")
}
