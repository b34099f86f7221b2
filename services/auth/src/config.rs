//! The auth service's own settings, read from `EASEL_*` variables once at start.

use std::time::Duration;

use easel_auth_client::RateQuota;
use easel_runtime::config::Env;
use easel_runtime::redis::RedisConfig;

use crate::tiers::Tiers;

/// How passwords are hashed (Argon2id). Verification reads the parameters of each stored hash,
/// so changing them only affects new hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordHashing {
    /// `EASEL_PASSWORD_HASH_MEMORY_KIB` (default 19456, OWASP's minimum for Argon2id).
    pub memory_kib: u32,
    /// `EASEL_PASSWORD_HASH_ITERATIONS` (default 2).
    pub iterations: u32,
    /// `EASEL_PASSWORD_HASH_PARALLELISM` (default 1).
    pub parallelism: u32,
}

impl Default for PasswordHashing {
    fn default() -> Self {
        PasswordHashing {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl PasswordHashing {
    /// Cheap parameters for tests (never for production).
    pub fn fast_for_tests() -> Self {
        PasswordHashing {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        }
    }
}

/// Settings of the auth service beyond the common server and telemetry ones. Its `Debug`
/// hides the passwords of the database and Redis URLs.
#[derive(Clone)]
pub struct AuthConfig {
    /// `EASEL_DATABASE_URL` (default `sqlite://./.easel/auth.db?mode=rwc`).
    pub database_url: String,
    /// `EASEL_REDIS_URL`: revocations are broadcast and login attempts limited through Redis
    /// when set; otherwise nothing is broadcast and login limits are per process.
    pub redis_url: Option<String>,
    /// `EASEL_REDIS_PREFIX` (default `easel:`): the prefix of every Redis key and channel.
    pub redis_prefix: String,
    /// `EASEL_REDIS_*`: the deadline of a Redis call (default 100ms; a login makes one or two)
    /// and the circuit breaker's settings.
    pub redis: RedisConfig,
    /// `EASEL_JWT_ISSUER` (default `easel`).
    pub jwt_issuer: String,
    /// `EASEL_JWT_AUDIENCE` (default `easel-api`).
    pub jwt_audience: String,
    /// `EASEL_ACCESS_TOKEN_TTL` (default 15m): the life of a token from Login, and of one from
    /// ExchangeToken unless the caller asks for less.
    pub access_token_ttl: Duration,
    /// `EASEL_ACCESS_TOKEN_MAX_TTL` (default 1h): the longest ExchangeToken grants.
    pub access_token_max_ttl: Duration,
    /// `EASEL_JWT_LEEWAY` (default 5s): clock skew tolerated on `exp` and `nbf`.
    pub jwt_leeway: Duration,
    /// `EASEL_JWT_KEY_ROTATION` (default 30 days): a signing key older than this is replaced.
    pub jwt_key_rotation: Duration,
    /// `EASEL_JWT_KEY_REFRESH` (default 60s): how often replicas reload the signing keys.
    pub jwt_key_refresh: Duration,
    /// The tiers' limits (`EASEL_TIER_<TIER>_<LIMIT>`).
    pub tiers: Tiers,
    /// `EASEL_LOGIN_ATTEMPTS_PER_MINUTE` / `EASEL_LOGIN_ATTEMPTS_BURST` (default 5 and 10):
    /// login attempts per email.
    pub login_per_email: RateQuota,
    /// `EASEL_LOGIN_IP_ATTEMPTS_PER_MINUTE` / `EASEL_LOGIN_IP_ATTEMPTS_BURST` (default 30 and
    /// 60): login attempts per client IP.
    pub login_per_ip: RateQuota,
    /// `EASEL_PASSWORD_HASH_*`.
    pub password_hashing: PasswordHashing,
}

/// A URL with its password (if any) replaced, for logs.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("<redacted>"));
            url.to_string()
        }
        Ok(_) => raw.to_string(),
        Err(_) => "<unparsable URL>".to_string(),
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("database_url", &redact_url(&self.database_url))
            .field("redis_url", &self.redis_url.as_deref().map(redact_url))
            .field("redis_prefix", &self.redis_prefix)
            .field("redis", &self.redis)
            .field("jwt_issuer", &self.jwt_issuer)
            .field("jwt_audience", &self.jwt_audience)
            .field("access_token_ttl", &self.access_token_ttl)
            .field("access_token_max_ttl", &self.access_token_max_ttl)
            .field("jwt_leeway", &self.jwt_leeway)
            .field("jwt_key_rotation", &self.jwt_key_rotation)
            .field("jwt_key_refresh", &self.jwt_key_refresh)
            .field("tiers", &self.tiers)
            .field("login_per_email", &self.login_per_email)
            .field("login_per_ip", &self.login_per_ip)
            .field("password_hashing", &self.password_hashing)
            .finish()
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

fn non_empty(env: &mut Env, name: &str, default: &str) -> String {
    let value = env.string(name, default).trim().to_string();
    if value.len() > 256 {
        env.problem(name, "must be at most 256 characters");
        return default.to_string();
    }
    value
}

impl AuthConfig {
    /// Reads the auth variables; problems are collected in `env`.
    pub fn from_env(env: &mut Env) -> Self {
        let redis_url = env.optional_string("EASEL_REDIS_URL");
        if let Some(url) = &redis_url
            && redis::Client::open(url.as_str()).is_err()
        {
            env.problem("EASEL_REDIS_URL", "is not a valid Redis URL");
        }
        let access_token_ttl = positive(env, "EASEL_ACCESS_TOKEN_TTL", Duration::from_secs(900));
        let access_token_max_ttl =
            positive(env, "EASEL_ACCESS_TOKEN_MAX_TTL", Duration::from_secs(3600));
        if access_token_ttl > access_token_max_ttl {
            env.problem(
                "EASEL_ACCESS_TOKEN_TTL",
                "is longer than EASEL_ACCESS_TOKEN_MAX_TTL",
            );
        }
        if access_token_max_ttl > Duration::from_secs(24 * 3600) {
            env.problem(
                "EASEL_ACCESS_TOKEN_MAX_TTL",
                "must be at most 24h: access tokens are short-lived",
            );
        }
        let jwt_leeway = env.duration("EASEL_JWT_LEEWAY", Duration::from_secs(5));
        if jwt_leeway > Duration::from_secs(60) {
            env.problem("EASEL_JWT_LEEWAY", "must be at most 60s");
        }
        let jwt_key_rotation = positive(
            env,
            "EASEL_JWT_KEY_ROTATION",
            Duration::from_secs(30 * 24 * 3600),
        );
        if jwt_key_rotation < access_token_max_ttl {
            env.problem(
                "EASEL_JWT_KEY_ROTATION",
                "is shorter than EASEL_ACCESS_TOKEN_MAX_TTL",
            );
        }
        let mut quota = |rate: &str, burst: &str, default: (u32, u32)| RateQuota {
            per_minute: env.number_in(rate, default.0, 1, 1_000_000),
            burst: env.number_in(burst, default.1, 1, 1_000_000),
        };
        let login_per_email = quota(
            "EASEL_LOGIN_ATTEMPTS_PER_MINUTE",
            "EASEL_LOGIN_ATTEMPTS_BURST",
            (5, 10),
        );
        let login_per_ip = quota(
            "EASEL_LOGIN_IP_ATTEMPTS_PER_MINUTE",
            "EASEL_LOGIN_IP_ATTEMPTS_BURST",
            (30, 60),
        );
        let defaults = PasswordHashing::default();
        let password_hashing = PasswordHashing {
            memory_kib: env.number_in(
                "EASEL_PASSWORD_HASH_MEMORY_KIB",
                defaults.memory_kib,
                8,
                4 * 1024 * 1024,
            ),
            iterations: env.number_in(
                "EASEL_PASSWORD_HASH_ITERATIONS",
                defaults.iterations,
                1,
                100,
            ),
            parallelism: env.number_in(
                "EASEL_PASSWORD_HASH_PARALLELISM",
                defaults.parallelism,
                1,
                16,
            ),
        };
        if password_hashing.memory_kib < 8 * password_hashing.parallelism {
            env.problem(
                "EASEL_PASSWORD_HASH_MEMORY_KIB",
                "must be at least 8 × EASEL_PASSWORD_HASH_PARALLELISM",
            );
        }
        AuthConfig {
            database_url: env.string("EASEL_DATABASE_URL", "sqlite://./.easel/auth.db?mode=rwc"),
            redis_url,
            redis_prefix: env.string("EASEL_REDIS_PREFIX", "easel:"),
            redis: RedisConfig::from_env(env, Duration::from_millis(100)),
            jwt_issuer: non_empty(env, "EASEL_JWT_ISSUER", "easel"),
            jwt_audience: non_empty(env, "EASEL_JWT_AUDIENCE", "easel-api"),
            access_token_ttl,
            access_token_max_ttl,
            jwt_leeway,
            jwt_key_rotation,
            jwt_key_refresh: positive(env, "EASEL_JWT_KEY_REFRESH", Duration::from_secs(60)),
            tiers: Tiers::from_env(env),
            login_per_email,
            login_per_ip,
            password_hashing,
        }
    }

    /// Settings for tests and embedding: the given database, defaults elsewhere, cheap password
    /// hashing.
    pub fn new(database_url: impl Into<String>) -> Self {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let mut config = AuthConfig::from_env(&mut env);
        config.database_url = database_url.into();
        config.password_hashing = PasswordHashing::fast_for_tests();
        config
    }

    /// How long a retired signing key keeps verifying: the longest token it can have signed,
    /// plus the time replicas may take to notice the rotation, plus the leeway.
    pub fn retired_key_grace(&self) -> Duration {
        self.access_token_max_ttl + self.jwt_key_refresh + self.jwt_leeway
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> (AuthConfig, Vec<String>) {
        let mut env = Env::from_pairs(pairs.iter().copied());
        let config = AuthConfig::from_env(&mut env);
        let problems = match env.finish() {
            Ok(()) => Vec::new(),
            Err(error) => error.problems.into_iter().map(|p| p.variable).collect(),
        };
        (config, problems)
    }

    #[test]
    fn defaults_run_locally() {
        let (config, problems) = read(&[]);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.database_url, "sqlite://./.easel/auth.db?mode=rwc");
        assert_eq!(config.jwt_issuer, "easel");
        assert_eq!(config.jwt_audience, "easel-api");
        assert_eq!(config.access_token_ttl, Duration::from_secs(900));
        assert_eq!(config.redis_prefix, "easel:");
        assert!(config.redis_url.is_none());
        assert_eq!(config.password_hashing, PasswordHashing::default());
    }

    #[test]
    fn debug_hides_the_passwords_of_urls() {
        let (config, problems) = read(&[
            (
                "EASEL_DATABASE_URL",
                "postgres://easel:s3cret-db@db:5432/auth",
            ),
            ("EASEL_REDIS_URL", "redis://:s3cret-redis@redis:6379"),
        ]);
        assert!(problems.is_empty(), "{problems:?}");
        let printed = format!("{config:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("db:5432"));
    }

    #[test]
    fn bad_values_are_all_reported() {
        let (_, problems) = read(&[
            ("EASEL_REDIS_URL", "ftp://nowhere"),
            ("EASEL_ACCESS_TOKEN_TTL", "2h"),
            ("EASEL_JWT_LEEWAY", "5m"),
            ("EASEL_LOGIN_ATTEMPTS_PER_MINUTE", "0"),
            ("EASEL_PASSWORD_HASH_ITERATIONS", "lots"),
            ("EASEL_TIER_FREE_BURST", "-1"),
        ]);
        for variable in [
            "EASEL_REDIS_URL",
            "EASEL_ACCESS_TOKEN_TTL",
            "EASEL_JWT_LEEWAY",
            "EASEL_LOGIN_ATTEMPTS_PER_MINUTE",
            "EASEL_PASSWORD_HASH_ITERATIONS",
            "EASEL_TIER_FREE_BURST",
        ] {
            assert!(
                problems.iter().any(|p| p == variable),
                "{variable}: {problems:?}"
            );
        }
    }
}
