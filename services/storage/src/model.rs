//! The domain: artifact ids, owners, object keys and the artifact record, checked once where
//! requests enter so nothing a client sends becomes a path segment unchecked.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::error::{Result, StorageError};
use crate::sniff::ImageKind;

easel_runtime::typed_id!(
    /// An artifact's id: `art_` and a UUIDv7 in hex.
    ArtifactId,
    "art"
);

/// Most caller metadata entries per artifact.
pub const MAX_METADATA_ENTRIES: usize = 32;
/// Most bytes of caller metadata (keys and values) per artifact.
pub const MAX_METADATA_BYTES: usize = 2048;
/// Longest owner or job id accepted.
const MAX_ID_LEN: usize = 64;

/// Parses an artifact id a client sent; anything but a well-formed `art_…` is NOT_FOUND,
/// so probing with paths learns nothing and never reaches the store.
pub fn parse_artifact_id(raw: &str) -> Result<ArtifactId> {
    if raw.is_empty() {
        return Err(StorageError::field("artifact_id", "is required"));
    }
    ArtifactId::parse(raw).ok_or(StorageError::NotFound)
}

/// A server-made principal id (`usr_…`, `job_…`): only `[a-z0-9_]`, so it is safe as a key
/// segment even though the caller is trusted.
fn check_server_id(field: &'static str, raw: &str) -> Result<()> {
    if raw.is_empty() {
        return Err(StorageError::field(field, "is required"));
    }
    if raw.len() > MAX_ID_LEN
        || !raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(StorageError::field(
            field,
            "must be a server-made id of a-z, 0-9 and '_' (at most 64)",
        ));
    }
    Ok(())
}

/// The owning user's id, checked.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner(String);

impl Owner {
    /// Checks an owner id from a request.
    pub fn parse(raw: &str) -> Result<Owner> {
        check_server_id("owner", raw)?;
        Ok(Owner(raw.to_string()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The producing job's id, checked; `None` for uploads.
pub fn parse_job_id(field: &'static str, raw: &str) -> Result<Option<String>> {
    if raw.is_empty() {
        return Ok(None);
    }
    check_server_id(field, raw)?;
    Ok(Some(raw.to_string()))
}

/// Checks caller metadata: at most 32 entries and 2 KiB; keys of `a-z`, `0-9`, `_`, `-`, `.`
/// (they become S3 user-metadata names, which are case-insensitive).
pub fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    const FIELD: &str = "header.metadata";
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(StorageError::field(
            FIELD,
            format!("has more than {MAX_METADATA_ENTRIES} entries"),
        ));
    }
    let total: usize = metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_METADATA_BYTES {
        return Err(StorageError::field(
            FIELD,
            format!("is larger than {MAX_METADATA_BYTES} bytes"),
        ));
    }
    for key in metadata.keys() {
        let valid = !key.is_empty()
            && key.len() <= 64
            && key.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.')
            });
        if !valid || key.starts_with("easel-") {
            return Err(StorageError::field(
                FIELD,
                format!(
                    "key {key:?} must be 1-64 of a-z, 0-9, '_', '-', '.' and not start with \"easel-\""
                ),
            ));
        }
    }
    Ok(())
}

/// The object key: `<owner>/<job or "uploads">/<artifact id>.<ext>`, from checked,
/// server-made values only.
pub fn object_key(owner: &Owner, job_id: Option<&str>, id: &ArtifactId, kind: ImageKind) -> String {
    format!(
        "{}/{}/{}.{}",
        owner.as_str(),
        job_id.unwrap_or("uploads"),
        id.as_str(),
        kind.extension()
    )
}

/// One stored artifact, as the database keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRecord {
    /// Its id.
    pub id: ArtifactId,
    /// The owning user.
    pub owner: String,
    /// The producing job; `None` for uploads.
    pub job_id: Option<String>,
    /// Where the bytes are.
    pub object_key: String,
    /// The sniffed MIME type.
    pub content_type: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Caller metadata.
    pub metadata: BTreeMap<String, String>,
    /// Pixel width, when known.
    pub width: Option<u32>,
    /// Pixel height, when known.
    pub height: Option<u32>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
}

impl ArtifactRecord {
    /// The proto shape.
    pub fn to_proto(&self) -> easel_proto::storage::v1::Artifact {
        easel_proto::storage::v1::Artifact {
            id: self.id.to_string(),
            owner: self.owner.clone(),
            job_id: self.job_id.clone().unwrap_or_default(),
            content_type: self.content_type.clone(),
            size_bytes: self.size_bytes,
            sha256: self.sha256.clone(),
            metadata: self
                .metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            create_time: Some(timestamp(self.created_at)),
            expire_time: Some(timestamp(self.expires_at)),
            width: self.width.unwrap_or_default(),
            height: self.height.unwrap_or_default(),
        }
    }

    /// The ETag of its bytes (their SHA-256, quoted).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.sha256)
    }
}

/// A proto timestamp.
pub fn timestamp(time: DateTime<Utc>) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or_default(),
    }
}

/// A proto duration as a std one; `None` when unset, an error when negative or malformed.
pub fn duration(
    field: &'static str,
    value: Option<&pbjson_types::Duration>,
) -> Result<Option<std::time::Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return Err(StorageError::field(field, "must be a positive duration"));
    }
    let duration = std::time::Duration::new(value.seconds as u64, value.nanos as u32);
    if duration.is_zero() {
        return Err(StorageError::field(field, "must be longer than zero"));
    }
    Ok(Some(duration))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_path_characters_are_not_found() {
        for raw in [
            "../x",
            "art_../../etc/passwd",
            "art_0190A5B2C3D47E8F9A0B1C2D3E4F5A6B",
            "usr_1",
        ] {
            assert!(
                matches!(parse_artifact_id(raw), Err(StorageError::NotFound)),
                "{raw}"
            );
        }
        assert!(matches!(
            parse_artifact_id(""),
            Err(StorageError::InvalidField { .. })
        ));
        let id = ArtifactId::new();
        assert_eq!(parse_artifact_id(id.as_str()).ok(), Some(id));
    }

    #[test]
    fn owners_and_jobs_are_plain_ids() {
        assert!(Owner::parse("usr_0190a5b2c3d47e8f").is_ok());
        for bad in ["", "usr/1", "..", "USR_1", "usr 1", &"a".repeat(65)] {
            assert!(Owner::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_job_id("job_id", "").ok(), Some(None));
        assert!(parse_job_id("job_id", "job_1/..").is_err());
    }

    #[test]
    fn keys_are_built_from_checked_values() {
        let owner = Owner::parse("usr_1").unwrap_or_else(|e| panic!("{e}"));
        let id = ArtifactId::new();
        assert_eq!(
            object_key(&owner, None, &id, ImageKind::Png),
            format!("usr_1/uploads/{id}.png")
        );
        assert_eq!(
            object_key(&owner, Some("job_2"), &id, ImageKind::Jpeg),
            format!("usr_1/job_2/{id}.jpg")
        );
    }

    #[test]
    fn metadata_limits_hold() {
        let mut metadata = BTreeMap::from([("seed".to_string(), "42".to_string())]);
        assert!(check_metadata(&metadata).is_ok());
        metadata.insert("Bad Key".into(), "x".into());
        assert!(check_metadata(&metadata).is_err());
        let many = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_metadata(&many).is_err());
        let big = BTreeMap::from([("k".to_string(), "x".repeat(2048))]);
        assert!(check_metadata(&big).is_err());
        let reserved = BTreeMap::from([("easel-owner".to_string(), "x".to_string())]);
        assert!(check_metadata(&reserved).is_err());
    }

    #[test]
    fn durations_must_be_positive() {
        let d = |seconds, nanos| pbjson_types::Duration { seconds, nanos };
        assert!(duration("ttl", Some(&d(-1, 0))).is_err());
        assert!(duration("ttl", Some(&d(0, 0))).is_err());
        assert_eq!(duration("ttl", None).ok(), Some(None));
        assert_eq!(
            duration("ttl", Some(&d(2, 5))).ok(),
            Some(Some(std::time::Duration::new(2, 5)))
        );
    }
}
