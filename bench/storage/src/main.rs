//! Benchmark of `easel-storage`: put and get of 1 MiB images through the service (gRPC, the
//! real server in-process, SQLite metadata) against an `s3s-fs` S3 server, next to the same
//! operations done directly with `object_store`, and the service's overhead as a ratio.
//!
//! `cargo run --release -p easel-bench-storage -- [iterations]` (default 100). The s3s-fs
//! binary is found like the tests find it: `EASEL_TEST_S3S_FS`, then
//! `~/.cache/easel-tools/bin/s3s-fs`, then `PATH`.

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use easel_proto::storage::v1::storage_service_client::StorageServiceClient;
use easel_proto::storage::v1::{
    ArtifactHeader, GetArtifactRequest, PutArtifactRequest, put_artifact_request,
};
use easel_runtime::Shutdown;
use easel_runtime::config::{ServerConfig, TelemetryConfig};
use easel_runtime::service::Listeners;
use easel_storage::{BackendConfig, Config, S3Config, StorageConfig};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

const IMAGE_BYTES: usize = 1024 * 1024;
const CHUNK_BYTES: usize = 256 * 1024;

fn s3s_fs() -> PathBuf {
    if let Ok(path) = std::env::var("EASEL_TEST_S3S_FS") {
        return PathBuf::from(path);
    }
    if let Ok(home) = std::env::var("HOME") {
        let path = PathBuf::from(home).join(".cache/easel-tools/bin/s3s-fs");
        if path.exists() {
            return path;
        }
    }
    PathBuf::from("s3s-fs")
}

struct Stats {
    name: &'static str,
    latencies: Vec<Duration>,
    total: Duration,
}

impl Stats {
    fn mib_per_second(&self) -> f64 {
        (self.latencies.len() * IMAGE_BYTES) as f64 / (1024.0 * 1024.0) / self.total.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted.get(index).copied().unwrap_or_default()
    }

    fn print(&self) {
        println!(
            "{:<22} {:>9.1} MiB/s   p50 {:>8.2} ms   p99 {:>8.2} ms",
            self.name,
            self.mib_per_second(),
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
        );
    }
}

async fn measure<F, Fut>(name: &'static str, iterations: usize, mut op: F) -> anyhow::Result<Stats>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(iterations);
    let started = Instant::now();
    for i in 0..iterations {
        let one = Instant::now();
        op(i).await?;
        latencies.push(one.elapsed());
    }
    Ok(Stats {
        name,
        latencies,
        total: started.elapsed(),
    })
}

fn image() -> Vec<u8> {
    easel_storage::sniff::samples::png(1024, 1024, IMAGE_BYTES - 33)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    easel_runtime::install_crypto_provider();
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|raw| raw.parse())
        .transpose()
        .context("iterations must be a number")?
        .unwrap_or(100);

    let root = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _server = tokio::process::Command::new(s3s_fs())
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--access-key",
            "bench",
            "--secret-key",
            "bench-secret-0123456789",
        ])
        .arg(root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start s3s-fs")?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if Instant::now() > deadline {
            bail!("s3s-fs did not start");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let s3 = S3Config {
        bucket: "easel-bench".to_string(),
        endpoint: Some(format!("http://{address}")),
        region: "us-east-1".to_string(),
        access_key_id: Some("bench".to_string()),
        secret_access_key: Some("bench-secret-0123456789".to_string()),
        path_style: true,
    };

    let db_dir = tempfile::tempdir()?;
    let database_url = format!(
        "sqlite://{}?mode=rwc",
        db_dir.path().join("bench.db").display()
    );
    let config = Config {
        server: ServerConfig::ephemeral(),
        telemetry: TelemetryConfig::quiet(easel_storage::SERVICE_NAME),
        storage: StorageConfig::new(BackendConfig::S3(s3.clone()), database_url),
    };
    let listeners = Listeners::ephemeral().await?;
    let grpc = listeners.grpc_addr()?;
    let shutdown = Shutdown::new(Duration::from_secs(5));
    let service = tokio::spawn(easel_storage::run(config, listeners, shutdown.clone()));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?.connect_lazy();
    let client = StorageServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);

    let bytes = image();
    let owner = "usr_bench";
    let ids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let service_put = measure("service put", iterations, |_| {
        let mut client = client.clone();
        let mut messages = vec![PutArtifactRequest {
            part: Some(put_artifact_request::Part::Header(ArtifactHeader {
                owner: owner.to_string(),
                job_id: "job_bench".to_string(),
                content_type: "image/png".to_string(),
                ..ArtifactHeader::default()
            })),
        }];
        messages.extend(bytes.chunks(CHUNK_BYTES).map(|chunk| PutArtifactRequest {
            part: Some(put_artifact_request::Part::Chunk(chunk.to_vec())),
        }));
        let ids = ids.clone();
        async move {
            let artifact = client
                .put_artifact(tokio_stream::iter(messages))
                .await?
                .into_inner()
                .artifact
                .context("no artifact")?;
            ids.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .push(artifact.id);
            Ok(())
        }
    })
    .await?;
    let ids = ids.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    let service_get = measure("service get", iterations, |i| {
        let request = GetArtifactRequest {
            owner: owner.to_string(),
            artifact_id: ids[i].clone(),
        };
        let mut client = client.clone();
        async move {
            let mut stream = client.get_artifact(request).await?.into_inner();
            let mut received = 0;
            while let Some(message) = stream.message().await? {
                if let Some(easel_proto::storage::v1::get_artifact_response::Part::Chunk(c)) =
                    message.part
                {
                    received += c.len();
                }
            }
            anyhow::ensure!(received == IMAGE_BYTES, "short read {received}");
            Ok(())
        }
    })
    .await?;

    let direct = easel_storage::backend::Backend::open(&BackendConfig::S3(s3)).await?;
    let store = direct.store().clone();
    let payload = bytes::Bytes::from(bytes.clone());
    let direct_put = measure("object_store put", iterations, |i| {
        let store = store.clone();
        let payload = payload.clone();
        async move {
            store
                .put(
                    &Path::from(format!("direct/{i}.png")),
                    PutPayload::from(payload),
                )
                .await?;
            Ok(())
        }
    })
    .await?;
    let direct_get = measure("object_store get", iterations, |i| {
        let store = store.clone();
        async move {
            let data = store
                .get(&Path::from(format!("direct/{i}.png")))
                .await?
                .bytes()
                .await?;
            anyhow::ensure!(data.len() == IMAGE_BYTES, "short read");
            Ok(())
        }
    })
    .await?;

    println!("1 MiB images, {iterations} sequential operations each, s3s-fs on loopback");
    for stats in [&service_put, &direct_put, &service_get, &direct_get] {
        stats.print();
    }
    println!(
        "overhead (service / direct, by p50 latency): put {:.2}x, get {:.2}x",
        service_put.percentile(0.5).as_secs_f64() / direct_put.percentile(0.5).as_secs_f64(),
        service_get.percentile(0.5).as_secs_f64() / direct_get.percentile(0.5).as_secs_f64(),
    );
    println!(
        "overhead (direct / service, by throughput): put {:.2}x, get {:.2}x",
        direct_put.mib_per_second() / service_put.mib_per_second(),
        direct_get.mib_per_second() / service_get.mib_per_second(),
    );
    shutdown.trigger();
    let _ = service.await;
    Ok(())
}
