//! The storage service's own settings, read from `EASEL_*` variables once at start.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use easel_runtime::config::Env;
use url::Url;

/// The longest presigned S3 link AWS accepts (SigV4 caps `X-Amz-Expires` at 7 days).
pub const S3_PRESIGN_LIMIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The smallest part S3 accepts in a multipart upload (except the last one).
pub const S3_MIN_PART_BYTES: usize = 5 * 1024 * 1024;

/// Where the bytes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackendConfig {
    /// A local directory (`file:///path`), the embedded default.
    Local {
        /// The directory; created if missing.
        root: PathBuf,
    },
    /// An S3-compatible bucket (`s3://bucket`): AWS, MinIO, s3s-fs…
    S3(S3Config),
}

/// How to reach an S3-compatible store.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket; created if missing.
    pub bucket: String,
    /// `EASEL_S3_ENDPOINT`: e.g. `http://minio:9000`; AWS when unset.
    pub endpoint: Option<String>,
    /// `EASEL_S3_REGION` (default `us-east-1`).
    pub region: String,
    /// `EASEL_S3_ACCESS_KEY_ID`; the default credential chain when unset.
    pub access_key_id: Option<String>,
    /// `EASEL_S3_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// `EASEL_S3_PATH_STYLE`: `http://host/bucket/key` instead of `http://bucket.host/key`
    /// (default true when an endpoint is set, as MinIO expects).
    pub path_style: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// The HMAC key of local signed links; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_BYTES: usize = 32;

    /// A key from raw bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        SigningKey(bytes.into())
    }

    /// A fresh random key (development only: links die with the process).
    pub fn random() -> Self {
        let mut bytes = vec![0_u8; 32];
        rand::fill(&mut bytes[..]);
        SigningKey(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

/// Settings of the storage service beyond the common server and telemetry ones.
#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// `EASEL_STORAGE_URL`: `s3://bucket` or `file:///path` (default `file://./.easel/artifacts`).
    pub backend: BackendConfig,
    /// `EASEL_DATABASE_URL` (default `sqlite://./.easel/storage.db?mode=rwc`).
    pub database_url: String,
    /// `EASEL_STORAGE_MAX_UPLOAD_BYTES`: the largest artifact (default 50 MiB).
    pub max_upload_bytes: u64,
    /// `EASEL_STORAGE_PART_BYTES`: uploads larger than this go multipart, in parts of this
    /// size (default and minimum 5 MiB, S3's smallest part).
    pub part_bytes: usize,
    /// `EASEL_STORAGE_DEFAULT_TTL`: how long an artifact lives when the caller says nothing
    /// (default 7 days).
    pub default_ttl: Duration,
    /// `EASEL_STORAGE_MAX_TTL`: the longest an artifact may live (default 365 days).
    pub max_ttl: Duration,
    /// `EASEL_SIGNED_URL_DEFAULT_TTL`: a link's life when the caller says nothing (default 15 min).
    pub signed_url_default_ttl: Duration,
    /// `EASEL_SIGNED_URL_MAX_TTL`: the longest a link may work (default and at most 7 days).
    pub signed_url_max_ttl: Duration,
    /// `EASEL_SIGNING_KEY`: HMAC key of local links (at least 32 bytes). Required outside
    /// development; in development a random key is made at start, with a warning.
    pub signing_key: Option<SigningKey>,
    /// `EASEL_PUBLIC_URL`: the base URL of local links (default: the admin port's address).
    pub public_url: Option<Url>,
    /// `EASEL_SWEEP_INTERVAL`: how often expired artifacts are swept (default 60s).
    pub sweep_interval: Duration,
    /// `EASEL_SWEEP_BATCH`: artifacts claimed per sweep batch (default 500).
    pub sweep_batch: u64,
    /// `EASEL_SWEEP_LEASE`: how long a claim lasts before another replica may take the batch
    /// over (default 5m).
    pub sweep_lease: Duration,
}

impl StorageConfig {
    /// Reads the storage variables; problems are collected in `env`. `environment` is
    /// `EASEL_ENVIRONMENT` (a signing key is required unless it is `development`).
    pub fn from_env(env: &mut Env, environment: &str) -> Self {
        let backend = parse_backend(env);
        let day = Duration::from_secs(24 * 3600);
        let default_ttl = positive(env, "EASEL_STORAGE_DEFAULT_TTL", 7 * day);
        let max_ttl = positive(env, "EASEL_STORAGE_MAX_TTL", 365 * day);
        if default_ttl > max_ttl {
            env.problem(
                "EASEL_STORAGE_DEFAULT_TTL",
                "is longer than EASEL_STORAGE_MAX_TTL",
            );
        }
        let signed_url_default_ttl = positive(
            env,
            "EASEL_SIGNED_URL_DEFAULT_TTL",
            Duration::from_secs(900),
        );
        let signed_url_max_ttl = positive(env, "EASEL_SIGNED_URL_MAX_TTL", S3_PRESIGN_LIMIT);
        if signed_url_max_ttl > S3_PRESIGN_LIMIT {
            env.problem(
                "EASEL_SIGNED_URL_MAX_TTL",
                "is longer than 7 days, the most S3 presigned links allow",
            );
        }
        if signed_url_default_ttl > signed_url_max_ttl {
            env.problem(
                "EASEL_SIGNED_URL_DEFAULT_TTL",
                "is longer than EASEL_SIGNED_URL_MAX_TTL",
            );
        }
        let signing_key = match env.optional_string("EASEL_SIGNING_KEY") {
            Some(key) if key.len() >= SigningKey::MIN_BYTES => Some(SigningKey::new(key)),
            Some(_) => {
                env.problem(
                    "EASEL_SIGNING_KEY",
                    format!("must be at least {} bytes", SigningKey::MIN_BYTES),
                );
                None
            }
            None if environment != "development" => {
                env.problem(
                    "EASEL_SIGNING_KEY",
                    "is required outside development (EASEL_ENVIRONMENT)",
                );
                None
            }
            None => None,
        };
        let public_url =
            env.optional_string("EASEL_PUBLIC_URL")
                .and_then(|raw| match Url::parse(&raw) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
                    _ => {
                        env.problem("EASEL_PUBLIC_URL", "is not an http(s) URL");
                        None
                    }
                });
        StorageConfig {
            backend,
            database_url: env.string(
                "EASEL_DATABASE_URL",
                "sqlite://./.easel/storage.db?mode=rwc",
            ),
            max_upload_bytes: env.number_in(
                "EASEL_STORAGE_MAX_UPLOAD_BYTES",
                50 * 1024 * 1024,
                1,
                5 * 1024 * 1024 * 1024,
            ),
            part_bytes: env.number_in(
                "EASEL_STORAGE_PART_BYTES",
                S3_MIN_PART_BYTES,
                S3_MIN_PART_BYTES,
                1024 * 1024 * 1024,
            ),
            default_ttl,
            max_ttl,
            signed_url_default_ttl,
            signed_url_max_ttl,
            signing_key,
            public_url,
            sweep_interval: positive(env, "EASEL_SWEEP_INTERVAL", Duration::from_secs(60)),
            sweep_batch: env.number_in("EASEL_SWEEP_BATCH", 500, 1, 10_000),
            sweep_lease: positive(env, "EASEL_SWEEP_LEASE", Duration::from_secs(300)),
        }
    }

    /// Settings for tests and embedding: the given backend and database, defaults elsewhere,
    /// a random signing key.
    pub fn new(backend: BackendConfig, database_url: impl Into<String>) -> Self {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let mut config = StorageConfig::from_env(&mut env, "development");
        config.backend = backend;
        config.database_url = database_url.into();
        config.signing_key = Some(SigningKey::random());
        config
    }
}

fn positive(env: &mut Env, name: &str, default: Duration) -> Duration {
    let value = env.duration(name, default);
    if value.is_zero() {
        env.problem(name, "must be longer than zero");
        return default;
    }
    value
}

fn parse_backend(env: &mut Env) -> BackendConfig {
    let fallback = BackendConfig::Local {
        root: PathBuf::from("./.easel/artifacts"),
    };
    let raw = env.string("EASEL_STORAGE_URL", "file://./.easel/artifacts");
    if let Some(path) = raw.strip_prefix("file://") {
        if path.is_empty() {
            env.problem("EASEL_STORAGE_URL", "names no directory");
            return fallback;
        }
        BackendConfig::Local {
            root: PathBuf::from(path),
        }
    } else if let Some(bucket) = raw.strip_prefix("s3://") {
        let bucket = bucket.trim_end_matches('/');
        if !valid_bucket(bucket) {
            env.problem(
                "EASEL_STORAGE_URL",
                "names no valid bucket (s3://bucket: 3-63 of a-z, 0-9, '.', '-')",
            );
            return fallback;
        }
        let endpoint = env.optional_string("EASEL_S3_ENDPOINT");
        if let Some(endpoint) = &endpoint
            && Url::parse(endpoint).is_err()
        {
            env.problem("EASEL_S3_ENDPOINT", "is not a valid URL");
        }
        let access_key_id = env.optional_string("EASEL_S3_ACCESS_KEY_ID");
        let secret_access_key = env.optional_string("EASEL_S3_SECRET_ACCESS_KEY");
        if access_key_id.is_some() != secret_access_key.is_some() {
            env.problem(
                "EASEL_S3_SECRET_ACCESS_KEY",
                "EASEL_S3_ACCESS_KEY_ID and EASEL_S3_SECRET_ACCESS_KEY go together",
            );
        }
        BackendConfig::S3(S3Config {
            bucket: bucket.to_string(),
            path_style: env.boolean("EASEL_S3_PATH_STYLE", endpoint.is_some()),
            endpoint,
            region: env.string("EASEL_S3_REGION", "us-east-1"),
            access_key_id,
            secret_access_key,
        })
    } else {
        env.problem("EASEL_STORAGE_URL", "must be s3://bucket or file:///path");
        fallback
    }
}

fn valid_bucket(bucket: &str) -> bool {
    (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)], environment: &str) -> (StorageConfig, Vec<String>) {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let config = StorageConfig::from_env(&mut env, environment);
        let problems = match env.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.problems.into_iter().map(|p| p.variable).collect(),
        };
        (config, problems)
    }

    #[test]
    fn defaults_run_locally_in_development() {
        let (config, problems) = read(&[], "development");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.backend,
            BackendConfig::Local {
                root: PathBuf::from("./.easel/artifacts")
            }
        );
        assert_eq!(config.max_upload_bytes, 50 * 1024 * 1024);
        assert!(config.signing_key.is_none());
    }

    #[test]
    fn s3_settings_are_read_and_secrets_are_not_printed() {
        let (config, problems) = read(
            &[
                ("EASEL_STORAGE_URL", "s3://easel-artifacts"),
                ("EASEL_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("EASEL_S3_ACCESS_KEY_ID", "AK"),
                ("EASEL_S3_SECRET_ACCESS_KEY", "very-secret"),
                ("EASEL_SIGNING_KEY", "0123456789abcdef0123456789abcdef"),
            ],
            "production",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let BackendConfig::S3(s3) = &config.backend else {
            panic!("not s3: {:?}", config.backend);
        };
        assert!(s3.path_style);
        assert_eq!(s3.bucket, "easel-artifacts");
        let printed = format!("{config:?}");
        assert!(!printed.contains("very-secret") && !printed.contains("0123456789abcdef"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let (_, problems) = read(
            &[
                ("EASEL_STORAGE_URL", "ftp://x"),
                ("EASEL_STORAGE_MAX_UPLOAD_BYTES", "0"),
                ("EASEL_SIGNED_URL_MAX_TTL", "30d"),
                ("EASEL_SWEEP_INTERVAL", "0s"),
            ],
            "production",
        );
        for variable in [
            "EASEL_STORAGE_URL",
            "EASEL_STORAGE_MAX_UPLOAD_BYTES",
            "EASEL_SIGNED_URL_MAX_TTL",
            "EASEL_SWEEP_INTERVAL",
            "EASEL_SIGNING_KEY",
        ] {
            assert!(
                problems.iter().any(|p| p == variable),
                "{variable}: {problems:?}"
            );
        }
    }

    #[test]
    fn bucket_names_with_path_characters_are_refused() {
        let (_, problems) = read(&[("EASEL_STORAGE_URL", "s3://../etc")], "development");
        assert_eq!(problems, vec!["EASEL_STORAGE_URL".to_string()]);
    }
}
