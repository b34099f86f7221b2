//! The storage service's logic, behind plain methods the gRPC handlers and tests call:
//! uploads, downloads, stat, links, deletes and listing, each scoped to its owner.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use sea_orm::DatabaseConnection;
use url::Url;

use crate::backend::Backend;
use crate::config::{SigningKey, StorageConfig};
use crate::db;
use crate::error::{Result, StorageError};
use crate::model::{ArtifactId, ArtifactRecord, Owner, parse_job_id};
use easel_runtime::error::Internal;
use easel_runtime::page;

/// Largest chunk a download sends in one message.
pub const DOWNLOAD_CHUNK_BYTES: usize = 1024 * 1024;

/// Default and largest page of `ListArtifacts`.
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;

/// Size and lifetime limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
    /// Multipart threshold and part size.
    pub part_bytes: usize,
    /// Artifact life when unset.
    pub default_ttl: Duration,
    /// Longest artifact life.
    pub max_ttl: Duration,
    /// Link life when unset.
    pub signed_url_default_ttl: Duration,
    /// Longest link life.
    pub signed_url_max_ttl: Duration,
}

/// The service's state: the database, the store, the limits and the link signer.
#[derive(Clone, Debug)]
pub struct Storage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: DatabaseConnection,
    backend: Backend,
    limits: Limits,
    signing_key: Option<SigningKey>,
    public_url: Option<Url>,
}

/// A signed link and when it stops working.
#[derive(Clone, Debug)]
pub struct SignedUrl {
    /// The link (a secret: never log it).
    pub url: Url,
    /// Its expiry.
    pub expires_at: DateTime<Utc>,
}

/// One page of artifacts.
#[derive(Clone, Debug)]
pub struct Page {
    /// The artifacts, oldest first.
    pub artifacts: Vec<ArtifactRecord>,
    /// The next page's token; empty on the last page.
    pub next_page_token: String,
}

impl Storage {
    /// Opens the database (migrating it) and the store. `public_url` is where local links
    /// point (the admin port when the configuration names none).
    pub async fn open(config: &StorageConfig, public_url: Option<Url>) -> Result<Storage> {
        let db = db::connect(&config.database_url).await?;
        let backend = Backend::open(&config.backend).await?;
        Ok(Storage::new(db, backend, config, public_url))
    }

    /// Assembles the state from an open database and store.
    pub fn new(
        db: DatabaseConnection,
        backend: Backend,
        config: &StorageConfig,
        public_url: Option<Url>,
    ) -> Storage {
        Storage {
            inner: Arc::new(Inner {
                db,
                backend,
                limits: Limits {
                    max_upload_bytes: config.max_upload_bytes,
                    part_bytes: config.part_bytes,
                    default_ttl: config.default_ttl,
                    max_ttl: config.max_ttl,
                    signed_url_default_ttl: config.signed_url_default_ttl,
                    signed_url_max_ttl: config.signed_url_max_ttl,
                },
                signing_key: config.signing_key.clone(),
                public_url: config.public_url.clone().or(public_url),
            }),
        }
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.inner.db
    }

    /// The store.
    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// The key of local links.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.inner.signing_key.as_ref()
    }

    /// Stores an upload: see [`crate::upload`].
    pub async fn put<S>(
        &self,
        header: easel_proto::storage::v1::ArtifactHeader,
        chunks: S,
    ) -> Result<ArtifactRecord>
    where
        S: futures::Stream<Item = std::result::Result<Bytes, tonic::Status>>
            + Send
            + Unpin
            + 'static,
    {
        crate::upload::put(self.clone(), header, chunks).await
    }

    /// The owner's artifact.
    pub async fn stat(&self, owner: &str, id: &str) -> Result<ArtifactRecord> {
        let owner = Owner::parse(owner)?;
        let id = crate::model::parse_artifact_id(id)?;
        db::find_for_owner(self.db(), &owner, &id, Utc::now()).await
    }

    /// The owner's artifact and a stream of its bytes in chunks of at most 1 MiB.
    pub async fn get(
        &self,
        owner: &str,
        id: &str,
    ) -> Result<(ArtifactRecord, BoxStream<'static, Result<Bytes>>)> {
        let record = self.stat(owner, id).await?;
        let result = self
            .backend()
            .store()
            .get(&Path::from(record.object_key.as_str()))
            .await
            .map_err(|error| match error {
                // A row whose object vanished is our inconsistency, not the caller's mistake.
                object_store::Error::NotFound { .. } => StorageError::from(Internal::caused(
                    format!("the object of {} is missing", record.id),
                    error,
                )),
                other => other.into(),
            })?;
        let chunks = result
            .into_stream()
            .map_err(StorageError::from)
            .map_ok(|chunk| {
                let mut pieces = Vec::with_capacity(chunk.len() / DOWNLOAD_CHUNK_BYTES + 1);
                let mut rest = chunk;
                while rest.len() > DOWNLOAD_CHUNK_BYTES {
                    pieces.push(Ok(rest.split_to(DOWNLOAD_CHUNK_BYTES)));
                }
                pieces.push(Ok(rest));
                futures::stream::iter(pieces)
            })
            .try_flatten()
            .boxed();
        Ok((record, chunks))
    }

    /// A time-limited link: the requested life (or the default), capped by the maximum and
    /// by the artifact's own expiry.
    pub async fn sign_url(
        &self,
        owner: &str,
        id: &str,
        ttl: Option<Duration>,
    ) -> Result<SignedUrl> {
        let record = self.stat(owner, id).await?;
        let limits = self.limits();
        let now = Utc::now();
        let wanted = ttl
            .unwrap_or(limits.signed_url_default_ttl)
            .min(limits.signed_url_max_ttl);
        let until_expiry = (record.expires_at - now).to_std().unwrap_or_default();
        let ttl = wanted.min(until_expiry).max(Duration::from_secs(1));
        // Whole seconds: both link kinds carry their expiry in seconds.
        let ttl = Duration::from_secs(ttl.as_secs().max(1));
        let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
        let url = match self.backend().presign_get(&record.object_key, ttl).await {
            Some(presigned) => presigned?,
            None => {
                let (Some(key), Some(base)) = (self.signing_key(), &self.inner.public_url) else {
                    return Err(
                        Internal::new("local links need a signing key and a public URL").into(),
                    );
                };
                crate::signed::link(base, key, &record.id, expires_at)
            }
        };
        Ok(SignedUrl { url, expires_at })
    }

    /// Deletes the owner's artifact: it disappears at once (its row is expired), then its
    /// object and row are removed; what fails here the sweeper finishes.
    pub async fn delete(&self, owner: &str, id: &str) -> Result<()> {
        let owner = Owner::parse(owner)?;
        let id = crate::model::parse_artifact_id(id)?;
        let record = db::expire_for_owner(self.db(), &owner, &id, Utc::now()).await?;
        if let Err(error) = self.backend().delete(&record.object_key).await {
            tracing::warn!(artifact_id = %id, error = %error, "object delete failed; the sweeper retries");
            return Ok(());
        }
        if let Err(error) = db::delete(self.db(), &id).await {
            tracing::warn!(artifact_id = %id, error = %error, "row delete failed; the sweeper retries");
        }
        Ok(())
    }

    /// A page of the owner's artifacts, optionally of one job.
    pub async fn list(
        &self,
        owner: &str,
        job_id: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page> {
        let owner = Owner::parse(owner)?;
        let job_id = parse_job_id("job_id", job_id)?;
        if page_size > MAX_PAGE_SIZE {
            return Err(StorageError::field(
                "page_size",
                format!("must be at most {MAX_PAGE_SIZE}"),
            ));
        }
        let page_size = if page_size == 0 {
            DEFAULT_PAGE_SIZE
        } else {
            page_size
        };
        let after = decode_token(page_token, job_id.as_deref())?;
        let mut artifacts = db::list_for_owner(
            self.db(),
            &owner,
            job_id.as_deref(),
            after.as_ref(),
            u64::from(page_size) + 1,
            Utc::now(),
        )
        .await?;
        let next_page_token = if artifacts.len() > page_size as usize {
            artifacts.truncate(page_size as usize);
            artifacts
                .last()
                .map(|last| encode_token(&last.id, job_id.as_deref()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Page {
            artifacts,
            next_page_token,
        })
    }

    /// A live artifact by id alone, for a verified signed link.
    pub async fn find_for_link(
        &self,
        id: &ArtifactId,
        now: DateTime<Utc>,
    ) -> Result<ArtifactRecord> {
        db::find_live(self.db(), id, now).await
    }
}

fn encode_token(after: &ArtifactId, job_id: Option<&str>) -> String {
    page::encode(after.as_str(), job_id.unwrap_or_default())
}

fn decode_token(raw: &str, job_id: Option<&str>) -> Result<Option<ArtifactId>> {
    page::decode(raw, job_id.unwrap_or_default(), ArtifactId::parse)
        .map_err(|invalid| StorageError::field(page::FIELD, invalid.to_string()))
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn page_tokens_round_trip_and_stay_bound_to_their_filter() {
        let id = ArtifactId::new();
        let token = encode_token(&id, Some("job_1"));
        assert_eq!(decode_token(&token, Some("job_1")).ok(), Some(Some(id)));
        assert_eq!(decode_token("", None).ok(), Some(None));
        assert!(decode_token(&token, None).is_err());
        assert!(decode_token("not a token", None).is_err());
        let forged = URL_SAFE_NO_PAD.encode(br#"{"after":"../x","job":""}"#);
        assert!(decode_token(&forged, None).is_err());
    }
}
