//! The test harness: the service in-process on port 0 with a manual clock, its own PostgreSQL
//! database (or SQLite file) and Redis prefix, gRPC clients, and helpers to make users.

use std::time::Duration;

use easel_auth::{Auth, AuthConfig, ManualClock};
use easel_auth_client::{Authenticator, AuthenticatorConfig};
use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::account::v1::{CreateApiKeyRequest, CreateUserRequest, LoginRequest, Tier};
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_runtime::Shutdown;
use easel_runtime::config::ServerConfig;
use easel_runtime::error::Error;
use easel_runtime::grpc::{ClientConfig, connect_lazy};
use easel_runtime::service::Listeners;
use easel_test_support::{TestDatabase, TestRedis};
use tonic::transport::Channel;
use tonic::{Request, Status};

pub const PASSWORD: &str = "correct horse battery staple";

/// The service running in-process.
pub struct Harness {
    pub auth: Auth,
    pub clock: ManualClock,
    pub config: AuthConfig,
    pub grpc_url: String,
    pub admin_url: String,
    pub account: AccountServiceClient<Channel>,
    pub internal: AuthServiceClient<Channel>,
    /// The bootstrapped admin's API key.
    pub admin_key: String,
    pub redis: TestRedis,
    pub shutdown: Shutdown,
    _db: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

/// A user made through the API.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub key: String,
    pub key_id: String,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut AuthConfig)) -> Harness {
        let db = TestDatabase::postgres().await;
        let mut harness = Harness::start_on(db.url.clone(), tweak).await;
        harness._db = Some(db);
        harness
    }

    pub async fn start_sqlite() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let url = TestDatabase::sqlite(dir.path());
        let mut harness = Harness::start_on(url, |_| {}).await;
        harness._dir = Some(dir);
        harness
    }

    async fn start_on(database_url: String, tweak: impl FnOnce(&mut AuthConfig)) -> Harness {
        easel_runtime::install_crypto_provider();
        let redis = TestRedis::new();
        let mut config = AuthConfig::new(database_url);
        config.redis_url = Some(redis.url.clone());
        config.redis_prefix = redis.prefix.clone();
        tweak(&mut config);
        let clock = ManualClock::new();
        let auth = Auth::open(&config, std::sync::Arc::new(clock.clone()))
            .await
            .unwrap();
        let listeners = Listeners::ephemeral().await.unwrap();
        let grpc_url = format!("http://{}", listeners.grpc_addr().unwrap());
        let admin_url = format!("http://{}", listeners.admin_addr().unwrap());
        let shutdown = Shutdown::new(Duration::from_secs(2));
        tokio::spawn({
            let auth = auth.clone();
            let shutdown = shutdown.clone();
            async move {
                easel_auth::serve(auth, &ServerConfig::ephemeral(), listeners, shutdown)
                    .await
                    .unwrap();
            }
        });
        let channel = Channel::from_shared(grpc_url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let made = easel_auth::bootstrap_admin(&config, "admin@example.test", Some(PASSWORD))
            .await
            .unwrap();
        Harness {
            auth,
            clock,
            config,
            grpc_url,
            admin_url,
            account: AccountServiceClient::new(channel.clone()),
            internal: AuthServiceClient::new(channel),
            admin_key: made.api_key,
            redis,
            shutdown,
            _db: None,
            _dir: None,
        }
    }

    /// A new user of `tier`, with a password (`PASSWORD`) and an API key made through the API.
    pub async fn user(&mut self, tier: Tier) -> TestUser {
        let email = format!("{}@example.test", uuid::Uuid::new_v4().simple());
        let user = self
            .account
            .create_user(with_key(
                CreateUserRequest {
                    email: email.clone(),
                    password: PASSWORD.into(),
                    tier: tier as i32,
                    role: 0,
                },
                &self.admin_key,
            ))
            .await
            .unwrap()
            .into_inner()
            .user
            .unwrap();
        let token = self.login(&email).await;
        let created = self
            .account
            .create_api_key(with_bearer(
                CreateApiKeyRequest {
                    name: "test".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .unwrap()
            .into_inner();
        TestUser {
            id: user.id,
            email,
            key: created.secret,
            key_id: created.api_key.unwrap().id,
        }
    }

    /// An access token for `email` with `PASSWORD`.
    pub async fn login(&mut self, email: &str) -> String {
        self.account
            .login(LoginRequest {
                email: email.into(),
                password: PASSWORD.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .access_token
            .unwrap()
            .token
    }

    /// An auth-client authenticator of this service.
    pub fn authenticator(&self, config: AuthenticatorConfig) -> Authenticator {
        let channel = connect_lazy(&ClientConfig::new(self.grpc_url.clone()), "test").unwrap();
        Authenticator::new(AuthServiceClient::new(channel), config)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

pub fn with_key<T>(message: T, key: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("x-api-key", key.parse().unwrap());
    request
}

pub fn with_bearer<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &Status) -> Option<String> {
    Error::from_status(status).reason().map(str::to_string)
}

/// Asserts a status's code and reason.
#[track_caller]
pub fn assert_refused(status: &Status, code: tonic::Code, expected_reason: Option<&str>) {
    assert_eq!(status.code(), code, "{status:?}");
    if let Some(expected) = expected_reason {
        assert_eq!(reason(status).as_deref(), Some(expected), "{status:?}");
    }
}
