//! The services the benchmark needs, in this process as `easel-platform` assembles them: auth,
//! the jobs API (PostgreSQL + Redis Streams) and the gateway (Redis rate limits), each on its
//! own loopback port, plus an enterprise user whose limits the load stays within (the limiter
//! still runs every time).

use std::time::Duration;

use anyhow::Context;
use easel_platform::{Comfyui, Service, Settings};
use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::account::v1::{CreateApiKeyRequest, CreateUserRequest, LoginRequest, Role, Tier};
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_proto::auth::v1::{AuthenticateRequest, Credential, Principal, credential};
use easel_runtime::Shutdown;
use easel_test_support::{TestDatabase, TestRedis};
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
    /// Dropped first: the services stop before their databases go.
    _services: easel_platform::Platform,
    _databases: (TestDatabase, TestDatabase),
}

/// An address where nothing listens: the bridge and storage, which this benchmark does not run.
const NOWHERE: &str = "http://127.0.0.1:9";

impl Platform {
    /// Starts the services with `users` enterprise users, on the shared Redis.
    pub async fn start(users: usize) -> anyhow::Result<Platform> {
        Platform::start_on(users, TestRedis::new()).await
    }

    /// Starts the services with `users` enterprise users, on `redis`.
    pub async fn start_on(users: usize, redis: TestRedis) -> anyhow::Result<Platform> {
        let (auth_db, jobs_db) = tokio::join!(TestDatabase::postgres(), TestDatabase::postgres());
        let settings = Settings::loopback(Comfyui::Backends(String::new()))
            .only([Service::Auth, Service::Jobs, Service::Gateway])
            .share("EASEL_REDIS_URL", redis.url.as_str())
            .share("EASEL_REDIS_PREFIX", redis.prefix.as_str())
            .dev_account("bench-admin@easel.test", None)
            .set(
                Service::Auth,
                [
                    ("EASEL_DATABASE_URL", auth_db.url.as_str()),
                    ("EASEL_TIER_ENTERPRISE_REQUESTS_PER_MINUTE", "6000000"),
                    ("EASEL_TIER_ENTERPRISE_BURST", "1000000"),
                    ("EASEL_TIER_ENTERPRISE_CONCURRENT_JOBS", "100000"),
                    ("EASEL_TIER_ENTERPRISE_JOBS_PER_DAY", "100000000"),
                    ("EASEL_LOGIN_IP_ATTEMPTS_PER_MINUTE", "60000"),
                    ("EASEL_LOGIN_IP_ATTEMPTS_BURST", "10000"),
                    ("EASEL_PASSWORD_HASH_MEMORY_KIB", "64"),
                    ("EASEL_PASSWORD_HASH_ITERATIONS", "1"),
                ],
            )
            .set(
                Service::Jobs,
                [
                    ("EASEL_DATABASE_URL", jobs_db.url.as_str()),
                    ("EASEL_JOBS_ROLE", "api"),
                    ("EASEL_BRIDGE_URL", NOWHERE),
                    ("EASEL_STORAGE_URL", NOWHERE),
                    // No usage records: the benchmark measures the submit path alone.
                    ("EASEL_AUTH_URL", ""),
                    ("EASEL_WORKER_CONCURRENCY", "4"),
                ],
            )
            .set(
                Service::Gateway,
                [
                    ("EASEL_BRIDGE_URL", NOWHERE),
                    // Making the bench's users logs in once each from this address.
                    ("EASEL_LOGIN_RATE_PER_MINUTE", "60000"),
                    ("EASEL_LOGIN_BURST", "10000"),
                    ("EASEL_MAX_CONCURRENT_REQUESTS", "4096"),
                    // The load shares a few connections.
                    ("EASEL_HTTP2_MAX_CONCURRENT_STREAMS", "16384"),
                ],
            );
        let services =
            easel_platform::Platform::start(settings, Shutdown::new(Duration::from_secs(3)))
                .await?;
        let url = |service| {
            services
                .grpc_url(service)
                .map(str::to_string)
                .context("a service that runs")
        };
        let (auth_url, jobs_url, gateway_url) = (
            url(Service::Auth)?,
            url(Service::Jobs)?,
            url(Service::Gateway)?,
        );
        let admin_key = services
            .dev_account()
            .and_then(|account| account.api_key.clone())
            .context("the admin account")?;

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
            _services: services,
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
