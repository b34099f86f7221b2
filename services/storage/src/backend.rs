//! The object store behind the service: a local directory or an S3-compatible bucket, both
//! through `object_store`, so one code path serves AWS, MinIO and the embedded default.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{Attribute, AttributeValue, Attributes, ObjectStore, ObjectStoreExt};

use crate::config::{BackendConfig, S3Config};
use crate::error::{Result, StorageError};
use easel_runtime::error::InternalContext;

/// The configured object store.
#[derive(Clone, Debug)]
pub struct Backend {
    store: Arc<dyn ObjectStore>,
    s3: Option<Arc<AmazonS3>>,
}

impl Backend {
    /// Opens the store, creating the directory or bucket if missing.
    pub async fn open(config: &BackendConfig) -> Result<Backend> {
        match config {
            BackendConfig::Local { root } => {
                std::fs::create_dir_all(root).internal(format!("creating {}", root.display()))?;
                let store = LocalFileSystem::new_with_prefix(root)?.with_automatic_cleanup(true);
                Ok(Backend {
                    store: Arc::new(store),
                    s3: None,
                })
            }
            BackendConfig::S3(s3) => {
                let store = Arc::new(s3_builder(s3).build()?);
                ensure_bucket(&store, s3).await?;
                Ok(Backend {
                    store: store.clone(),
                    s3: Some(store),
                })
            }
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Whether this is S3 (links are presigned by the store, and objects carry user metadata).
    pub fn is_s3(&self) -> bool {
        self.s3.is_some()
    }

    /// The attributes stored on the object: its content type, and on S3 our metadata as user
    /// metadata (the local filesystem keeps no attributes; the database has them all).
    pub fn attributes(&self, content_type: &str, entries: &[(String, String)]) -> Attributes {
        let mut attributes = Attributes::new();
        if !self.is_s3() {
            return attributes;
        }
        attributes.insert(
            Attribute::ContentType,
            AttributeValue::from(content_type.to_string()),
        );
        for (key, value) in entries {
            attributes.insert(
                Attribute::Metadata(key.clone().into()),
                AttributeValue::from(header_safe(value)),
            );
        }
        attributes
    }

    /// A SigV4 presigned GET link, on S3; `None` on the local backend.
    pub async fn presign_get(&self, key: &str, ttl: Duration) -> Option<Result<url::Url>> {
        let s3 = self.s3.as_ref()?;
        Some(
            s3.signed_url(http::Method::GET, &Path::from(key), ttl)
                .await
                .map_err(StorageError::from),
        )
    }

    /// Deletes an object; one that is already gone is fine.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    /// The readiness check: the store answers (a missing probe object is an answer).
    pub async fn check(&self) -> std::result::Result<(), String> {
        match self.store.head(&Path::from("easel-readiness-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.to_string()),
        }
    }
}

fn s3_builder(config: &S3Config) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_virtual_hosted_style_request(!config.path_style);
    if let Some(endpoint) = &config.endpoint {
        // Plain HTTP only when the operator named an http:// endpoint (MinIO, tests).
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"));
    }
    if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
        builder = builder
            .with_access_key_id(id)
            .with_secret_access_key(secret);
    }
    builder
}

/// Creates the bucket when listing it fails, with a presigned `PUT /bucket` (object_store has
/// no bucket API); listing again tells whether it worked.
async fn ensure_bucket(store: &Arc<AmazonS3>, config: &S3Config) -> Result<()> {
    let probe = Path::from("easel-bucket-probe");
    if store.list_with_delimiter(Some(&probe)).await.is_ok() {
        return Ok(());
    }
    let url = store
        .signed_url(http::Method::PUT, &Path::from(""), Duration::from_secs(60))
        .await?;
    let body = if config.region == "us-east-1" {
        String::new()
    } else {
        format!(
            "<CreateBucketConfiguration><LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
            config.region
        )
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .internal("building the http client")?;
    match client.put(url).body(body).send().await {
        Ok(response) if response.status().is_success() => {
            tracing::info!(bucket = %config.bucket, "created the bucket");
        }
        Ok(response) => {
            tracing::warn!(bucket = %config.bucket, status = %response.status(), "cannot create the bucket");
        }
        Err(error) => {
            tracing::warn!(bucket = %config.bucket, error = %error, "cannot create the bucket");
        }
    }
    store.list_with_delimiter(Some(&probe)).await?;
    Ok(())
}

/// Makes a value safe for an HTTP header (S3 user metadata): printable ASCII stays, anything
/// else is percent-encoded.
fn header_safe(value: &str) -> String {
    let mut safe = String::with_capacity(value.len());
    for byte in value.bytes() {
        if (0x20..0x7F).contains(&byte) && byte != b'%' {
            safe.push(char::from(byte));
        } else {
            safe.push_str(&format!("%{byte:02X}"));
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_become_header_safe() {
        assert_eq!(header_safe("seed 42"), "seed 42");
        assert_eq!(header_safe("café\n%"), "caf%C3%A9%0A%25");
    }
}
