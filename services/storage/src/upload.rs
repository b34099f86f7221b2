//! Uploads: the header is checked, the bytes stream through a SHA-256, a size counter and a
//! type sniffer into the store (multipart once they outgrow one part), and only a complete,
//! valid upload gets its row. A failed or abandoned upload leaves no object and no row.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use chrono::Utc;
use easel_proto::storage::v1::ArtifactHeader;
use futures::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{PutMultipartOptions, PutOptions, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::error::{Result, StorageError};
use crate::model::{
    ArtifactId, ArtifactRecord, Owner, check_metadata, duration, object_key, parse_job_id,
};
use crate::service::Storage;
use crate::sniff::{HEADER_BYTES, ImageKind, SNIFF_BYTES};
use easel_runtime::error::InternalContext;

/// How long an upload may go without a message before it is abandoned (and aborted).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Parts uploaded at once per multipart upload.
const PART_CONCURRENCY: usize = 4;

/// Stores the upload described by `header` with the bytes of `chunks`. The work runs in a
/// task of its own, so a caller that goes away mid-upload (a cut connection drops the
/// handler) still gets its multipart upload aborted.
pub async fn put<S>(storage: Storage, header: ArtifactHeader, chunks: S) -> Result<ArtifactRecord>
where
    S: Stream<Item = std::result::Result<Bytes, tonic::Status>> + Send + Unpin + 'static,
{
    let started = Instant::now();
    let task = tokio::spawn(async move { put_inner(storage, header, chunks).await });
    let outcome = task.await.internal("the upload task")?;
    match &outcome {
        Ok(record) => {
            crate::metrics::operation("put");
            metrics::counter!(crate::metrics::BYTES_WRITTEN).increment(record.size_bytes);
            metrics::histogram!(crate::metrics::PUT_DURATION)
                .record(started.elapsed().as_secs_f64());
        }
        Err(error) => {
            tracing::debug!(reason = error.metric_reason(), "upload refused or failed");
        }
    }
    outcome
}

struct Prepared {
    owner: Owner,
    job_id: Option<String>,
    declared: ImageKind,
    metadata: BTreeMap<String, String>,
    ttl: std::time::Duration,
}

fn prepare(storage: &Storage, header: &ArtifactHeader) -> Result<Prepared> {
    let owner = Owner::parse(&header.owner)
        .map_err(|_| StorageError::field("header.owner", "must be a server-made user id"))?;
    let job_id = parse_job_id("header.job_id", &header.job_id)?;
    let declared = ImageKind::from_mime(&header.content_type).ok_or_else(|| {
        StorageError::ContentMismatch(format!(
            "{:?} is not accepted (image/png, image/jpeg, image/webp, image/gif)",
            header.content_type
        ))
    })?;
    let metadata: BTreeMap<String, String> = header
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    check_metadata(&metadata)?;
    let limits = storage.limits();
    let ttl = duration("header.ttl", header.ttl.as_ref())?
        .unwrap_or(limits.default_ttl)
        .min(limits.max_ttl);
    Ok(Prepared {
        owner,
        job_id,
        declared,
        metadata,
        ttl,
    })
}

/// Where the bytes go: memory until they outgrow one part, then a multipart upload.
enum Sink {
    Buffer(Vec<Bytes>, usize),
    Multipart(WriteMultipart),
}

impl Sink {
    async fn write(
        &mut self,
        storage: &Storage,
        path: &Path,
        attributes: &object_store::Attributes,
        chunk: Bytes,
    ) -> Result<()> {
        match self {
            Sink::Buffer(parts, len) => {
                *len += chunk.len();
                parts.push(chunk);
                if *len > storage.limits().part_bytes {
                    let upload = storage
                        .backend()
                        .store()
                        .put_multipart_opts(
                            path,
                            PutMultipartOptions {
                                attributes: attributes.clone(),
                                ..PutMultipartOptions::default()
                            },
                        )
                        .await?;
                    let mut writer =
                        WriteMultipart::new_with_chunk_size(upload, storage.limits().part_bytes);
                    for part in parts.drain(..) {
                        writer.put(part);
                    }
                    *self = Sink::Multipart(writer);
                }
                Ok(())
            }
            Sink::Multipart(writer) => {
                writer.wait_for_capacity(PART_CONCURRENCY).await?;
                writer.put(chunk);
                Ok(())
            }
        }
    }

    async fn abort(self) {
        if let Sink::Multipart(writer) = self
            && let Err(error) = writer.abort().await
        {
            tracing::warn!(error = %error, "aborting a multipart upload failed");
        }
    }

    async fn finish(
        self,
        storage: &Storage,
        path: &Path,
        attributes: object_store::Attributes,
    ) -> Result<()> {
        match self {
            Sink::Buffer(parts, _) => {
                storage
                    .backend()
                    .store()
                    .put_opts(
                        path,
                        PutPayload::from_iter(parts),
                        PutOptions {
                            attributes,
                            ..PutOptions::default()
                        },
                    )
                    .await?;
            }
            // `finish` aborts the upload itself when a part or the completion fails.
            Sink::Multipart(writer) => {
                writer.finish().await?;
            }
        }
        Ok(())
    }
}

/// What the stream told us about the bytes.
struct Digested {
    size: u64,
    sha256: String,
    head: Vec<u8>,
}

async fn put_inner<S>(
    storage: Storage,
    header: ArtifactHeader,
    mut chunks: S,
) -> Result<ArtifactRecord>
where
    S: Stream<Item = std::result::Result<Bytes, tonic::Status>> + Send + Unpin,
{
    let prepared = prepare(&storage, &header)?;
    let id = ArtifactId::new();
    let key = object_key(
        &prepared.owner,
        prepared.job_id.as_deref(),
        &id,
        prepared.declared,
    );
    let path = Path::from(key.as_str());
    // Milliseconds: what the database keeps, so the answer equals later reads.
    let created_at =
        chrono::DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default();
    let expires_at = created_at + chrono::Duration::from_std(prepared.ttl).unwrap_or_default();
    let mut entries = vec![
        ("easel-artifact-id".to_string(), id.to_string()),
        (
            "easel-owner".to_string(),
            prepared.owner.as_str().to_string(),
        ),
        (
            "easel-job-id".to_string(),
            prepared.job_id.clone().unwrap_or_default(),
        ),
        ("easel-expire-time".to_string(), expires_at.to_rfc3339()),
    ];
    entries.extend(
        prepared
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    let attributes = storage
        .backend()
        .attributes(prepared.declared.mime(), &entries);

    let mut sink = Sink::Buffer(Vec::new(), 0);
    let digested = match stream_into(
        &storage,
        &prepared,
        &path,
        &attributes,
        &mut chunks,
        &mut sink,
    )
    .await
    {
        Ok(digested) => digested,
        Err(error) => {
            sink.abort().await;
            return Err(error);
        }
    };
    sink.finish(&storage, &path, attributes).await?;

    let (width, height) = prepared
        .declared
        .dimensions(&digested.head)
        .map_or((None, None), |(w, h)| (Some(w), Some(h)));
    let record = ArtifactRecord {
        id,
        owner: prepared.owner.as_str().to_string(),
        job_id: prepared.job_id,
        object_key: key,
        content_type: prepared.declared.mime().to_string(),
        size_bytes: digested.size,
        sha256: digested.sha256,
        metadata: prepared.metadata,
        width,
        height,
        created_at,
        expires_at,
    };
    if let Err(error) = crate::db::insert(storage.db(), &record).await {
        // No row, so no object either.
        if let Err(cleanup) = storage.backend().delete(&record.object_key).await {
            tracing::error!(artifact_id = %record.id, error = %cleanup, "cannot delete the object of a failed upload");
        }
        return Err(error);
    }
    tracing::info!(
        artifact_id = %record.id,
        owner = %record.owner,
        size_bytes = record.size_bytes,
        content_type = %record.content_type,
        "artifact stored"
    );
    Ok(record)
}

async fn stream_into<S>(
    storage: &Storage,
    prepared: &Prepared,
    path: &Path,
    attributes: &object_store::Attributes,
    chunks: &mut S,
    sink: &mut Sink,
) -> Result<Digested>
where
    S: Stream<Item = std::result::Result<Bytes, tonic::Status>> + Send + Unpin,
{
    let limit = storage.limits().max_upload_bytes;
    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let mut head: Vec<u8> = Vec::new();
    let mut sniffed = false;
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, chunks.next())
            .await
            .map_err(|_| {
                StorageError::Stream(tonic::Status::deadline_exceeded("the upload stalled"))
            })?;
        let Some(chunk) = next else {
            break;
        };
        let chunk = chunk.map_err(StorageError::Stream)?;
        if chunk.is_empty() {
            continue;
        }
        size += chunk.len() as u64;
        if size > limit {
            return Err(StorageError::TooLarge { limit });
        }
        hasher.update(&chunk);
        if head.len() < HEADER_BYTES {
            let take = chunk.len().min(HEADER_BYTES - head.len());
            head.extend_from_slice(&chunk[..take]);
        }
        // Nothing reaches the store before the type is known.
        if !sniffed && head.len() >= SNIFF_BYTES {
            check_type(prepared.declared, &head)?;
            sniffed = true;
        }
        sink.write(storage, path, attributes, chunk).await?;
    }
    if size == 0 {
        return Err(StorageError::field("chunk", "the upload is empty"));
    }
    if !sniffed {
        check_type(prepared.declared, &head)?;
    }
    Ok(Digested {
        size,
        sha256: hex::encode(hasher.finalize()),
        head,
    })
}

fn check_type(declared: ImageKind, head: &[u8]) -> Result<()> {
    match ImageKind::sniff(head) {
        Some(sniffed) if sniffed == declared => Ok(()),
        Some(sniffed) => Err(StorageError::ContentMismatch(format!(
            "declared {} but the bytes are {}",
            declared.mime(),
            sniffed.mime()
        ))),
        None => Err(StorageError::ContentMismatch(format!(
            "declared {} but the bytes are no accepted image",
            declared.mime()
        ))),
    }
}
