//! The services the benchmark needs, in this process: auth, the jobs API (PostgreSQL + Redis
//! Streams) and the gateway (Redis rate limits), each on its own loopback port, plus an
//! enterprise user whose limits the load stays within (the limiter still runs every time).

use std::time::Duration;

use anyhow::Context;
use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::account::v1::{CreateApiKeyRequest, CreateUserRequest, LoginRequest, Role, Tier};
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_proto::auth::v1::{AuthenticateRequest, Credential, Principal, credential};
use easel_runtime::Shutdown;
use easel_runtime::config::{Env, ServerConfig, TelemetryConfig};
use easel_runtime::service::Listeners;
use easel_runtime::testing::{TestDatabase, TestRedis};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// The running services.
pub struct Platform {
    pub gateway_url: String,
    pub jobs_url: String,
    /// One API key per user.
    pub api_keys: Vec<String>,
    /// Each user's principal, for calls to jobs directly.
    pub principals: Vec<Principal>,
    pub redis: TestRedis,
    shutdown: Shutdown,
    _databases: (TestDatabase, TestDatabase),
}

impl Drop for Platform {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

fn env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(
        pairs
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_string())),
    )
}

impl Platform {
    /// Starts the services with `users` enterprise users, on the shared Redis.
    pub async fn start(users: usize) -> anyhow::Result<Platform> {
        Platform::start_on(users, TestRedis::new()).await
    }

    /// Starts the services with `users` enterprise users, on `redis`.
    pub async fn start_on(users: usize, redis: TestRedis) -> anyhow::Result<Platform> {
        let (auth_db, jobs_db) = tokio::join!(TestDatabase::postgres(), TestDatabase::postgres());
        let shutdown = Shutdown::new(Duration::from_secs(3));
        let auth = Listeners::ephemeral().await?;
        let jobs = Listeners::ephemeral().await?;
        let gateway = Listeners::ephemeral().await?;
        let auth_url = format!("http://{}", auth.grpc_addr()?);
        let jobs_url = format!("http://{}", jobs.grpc_addr()?);
        let gateway_url = format!("http://{}", gateway.grpc_addr()?);

        let mut auth_env = env(&[
            ("EASEL_DATABASE_URL", &auth_db.url),
            ("EASEL_REDIS_URL", &redis.url),
            ("EASEL_REDIS_PREFIX", &redis.prefix),
            ("EASEL_TIER_ENTERPRISE_REQUESTS_PER_MINUTE", "6000000"),
            ("EASEL_TIER_ENTERPRISE_BURST", "1000000"),
            ("EASEL_TIER_ENTERPRISE_CONCURRENT_JOBS", "100000"),
            ("EASEL_TIER_ENTERPRISE_JOBS_PER_DAY", "100000000"),
            ("EASEL_LOGIN_IP_ATTEMPTS_PER_MINUTE", "60000"),
            ("EASEL_LOGIN_IP_ATTEMPTS_BURST", "10000"),
        ]);
        let mut auth_config = easel_auth::Config::from_env(&mut auth_env);
        auth_env.finish()?;
        auth_config.server = ServerConfig::ephemeral();
        auth_config.telemetry = TelemetryConfig::quiet("auth");
        auth_config.auth.password_hashing = easel_auth::PasswordHashing::fast_for_tests();
        let admin_key = easel_auth::generate_api_key();
        easel_auth::bootstrap_dev_account(&auth_config, "bench-admin@easel.test", Some(&admin_key))
            .await
            .context("the admin account")?;
        tokio::spawn(easel_auth::run(auth_config, auth, shutdown.clone()));

        let mut jobs_env = env(&[
            ("EASEL_DATABASE_URL", &jobs_db.url),
            ("EASEL_REDIS_URL", &redis.url),
            ("EASEL_REDIS_PREFIX", &redis.prefix),
            ("EASEL_JOBS_ROLE", "api"),
            ("EASEL_BRIDGE_URL", "http://127.0.0.1:9"),
            ("EASEL_STORAGE_URL", "http://127.0.0.1:9"),
            ("EASEL_WORKER_CONCURRENCY", "4"),
        ]);
        let mut jobs_config = easel_jobs::Config::from_env(&mut jobs_env);
        jobs_env.finish()?;
        jobs_config.server = ServerConfig::ephemeral();
        jobs_config.telemetry = TelemetryConfig::quiet("jobs");
        tokio::spawn(easel_jobs::run(jobs_config, jobs, shutdown.clone()));

        let mut gateway_env = env(&[
            ("EASEL_AUTH_URL", &auth_url),
            ("EASEL_JOBS_URL", &jobs_url),
            ("EASEL_BRIDGE_URL", "http://127.0.0.1:9"),
            ("EASEL_REDIS_URL", &redis.url),
            ("EASEL_REDIS_PREFIX", &redis.prefix),
            // Making the bench's users logs in once each from this address.
            ("EASEL_LOGIN_RATE_PER_MINUTE", "60000"),
            ("EASEL_LOGIN_BURST", "10000"),
        ]);
        let mut gateway_config = easel_gateway::Config::from_env(&mut gateway_env);
        gateway_env.finish()?;
        gateway_config.server = ServerConfig::ephemeral();
        gateway_config.server.max_concurrent_requests = 4096;
        gateway_config.telemetry = TelemetryConfig::quiet("gateway");
        tokio::spawn(easel_gateway::run(
            gateway_config,
            gateway,
            shutdown.clone(),
        ));

        wait_ready(&gateway_url).await?;
        let channel = Channel::from_shared(gateway_url.clone())?.connect().await?;
        let mut auth = AuthServiceClient::new(Channel::from_shared(auth_url)?.connect().await?);
        let mut api_keys = Vec::with_capacity(users);
        let mut principals = Vec::with_capacity(users);
        for index in 0..users {
            let api_key = make_user(channel.clone(), &admin_key, index).await?;
            let principal = auth
                .authenticate(AuthenticateRequest {
                    credential: Some(Credential {
                        kind: Some(credential::Kind::ApiKey(api_key.clone())),
                    }),
                })
                .await?
                .into_inner()
                .principal
                .context("a principal")?;
            api_keys.push(api_key);
            principals.push(principal);
        }
        Ok(Platform {
            gateway_url,
            jobs_url,
            api_keys,
            principals,
            redis,
            shutdown,
            _databases: (auth_db, jobs_db),
        })
    }
}

async fn wait_ready(gateway_url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if let Ok(response) = http.get(format!("{gateway_url}/readyz")).send().await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("the gateway did not become ready")
}

/// An enterprise user with an API key, made through the gateway.
async fn make_user(channel: Channel, admin_key: &str, index: usize) -> anyhow::Result<String> {
    let mut account = AccountServiceClient::new(channel);
    let email = format!("bench-user-{index}@easel.test");
    let password = "bench password 0123456789".to_string();
    let mut request = tonic::Request::new(CreateUserRequest {
        email: email.clone(),
        password: password.clone(),
        tier: Tier::Enterprise as i32,
        role: Role::User as i32,
    });
    request
        .metadata_mut()
        .insert("x-api-key", MetadataValue::try_from(admin_key)?);
    account.create_user(request).await?;
    let token = account
        .login(LoginRequest { email, password })
        .await?
        .into_inner()
        .access_token
        .context("a token")?
        .token;
    let mut request = tonic::Request::new(CreateApiKeyRequest {
        name: "bench".into(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}"))?,
    );
    Ok(account.create_api_key(request).await?.into_inner().secret)
}
