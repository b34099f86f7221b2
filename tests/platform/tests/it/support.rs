//! The platform in-process, as `easel-platform` assembles it: the real auth, jobs,
//! comfy-bridge and storage services (each on port 0 with its own PostgreSQL database), the
//! ComfyUI simulator, and the gateway in front, sharing one Redis key prefix of their own.
//! Nothing of ours is mocked.

use std::time::Duration;

use easel_platform::{Comfyui, Service, Settings};
use easel_proto::account::v1::account_service_client::AccountServiceClient;
use easel_proto::account::v1::{CreateApiKeyRequest, CreateUserRequest, LoginRequest, Role, Tier};
use easel_proto::jobs::v1::job_service_client::JobServiceClient;
use easel_runtime::Shutdown;
use easel_test_support::{TestDatabase, TestRedis};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

/// How long a test waits for something that takes well under a second.
pub const WAIT: Duration = Duration::from_secs(30);

/// What a test changes about its platform.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra gateway variables (e.g. `EASEL_CORS_ORIGINS`).
    pub gateway_env: Vec<(&'static str, String)>,
    /// Extra auth variables (e.g. tier limits).
    pub auth_env: Vec<(&'static str, String)>,
    /// Whether the gateway uses Redis (shared limits, revocation broadcasts).
    pub gateway_without_redis: bool,
}

/// A user of the platform.
#[derive(Clone, Debug)]
pub struct User {
    /// `usr_…`.
    pub id: String,
    /// An API key of theirs.
    pub api_key: String,
    /// Their email.
    pub email: String,
    /// Their password.
    pub password: String,
}

/// The running platform.
pub struct Platform {
    /// The gateway's base URL: gRPC, gRPC-web and REST.
    pub url: String,
    /// The gateway's admin port.
    pub admin_url: String,
    /// An admin's API key (the development account).
    pub admin: User,
    /// A plain HTTP client.
    pub http: reqwest::Client,
    /// The gateway's variables naming its upstreams.
    pub upstream_env: Vec<(&'static str, String)>,
    /// Dropped first: the services stop before their databases go.
    platform: easel_platform::Platform,
    sim: easel_comfy_sim::SimHandle,
    _artifacts: tempfile::TempDir,
    _redis: TestRedis,
    _databases: Vec<TestDatabase>,
}

impl Platform {
    /// Holds the simulator's queue until the guard drops: jobs are accepted and reach the
    /// backend but none finishes, so a test can attach to a job that is certainly live.
    pub fn hold_backend(&self) -> easel_comfy_sim::QueueHold {
        self.sim.hold_queue()
    }

    /// The platform with default settings.
    pub async fn start() -> Platform {
        Platform::start_with(Options::default()).await
    }

    /// The platform with `options`.
    pub async fn start_with(options: Options) -> Platform {
        // Boxed: starting five services is a large future.
        Box::pin(Platform::start_boxed(options)).await
    }

    async fn start_boxed(options: Options) -> Platform {
        easel_runtime::install_crypto_provider();
        let redis = TestRedis::new();
        let (auth_db, jobs_db, storage_db) = tokio::join!(
            TestDatabase::postgres(),
            TestDatabase::postgres(),
            TestDatabase::postgres()
        );
        let sim = easel_comfy_sim::spawn(easel_comfy_sim::SimConfig::with_request_faults())
            .await
            .expect("the simulator starts");
        let artifacts = tempfile::tempdir().expect("temp dir");
        let mut settings = Settings::loopback(Comfyui::Backends(sim.base_url()))
            .share("EASEL_REDIS_URL", redis.url.as_str())
            .share("EASEL_REDIS_PREFIX", redis.prefix.as_str())
            // The development account is an admin.
            .dev_account("admin@gateway.test", None)
            .set(
                Service::Auth,
                [
                    ("EASEL_DATABASE_URL", auth_db.url.as_str()),
                    ("EASEL_LOGIN_IP_ATTEMPTS_PER_MINUTE", "6000"),
                    ("EASEL_LOGIN_IP_ATTEMPTS_BURST", "1000"),
                    // Cheap password hashes: tests make many users.
                    ("EASEL_PASSWORD_HASH_MEMORY_KIB", "64"),
                    ("EASEL_PASSWORD_HASH_ITERATIONS", "1"),
                ],
            )
            .set(Service::Auth, options.auth_env.iter().cloned())
            // Storage on a local directory; its signed links point at the gateway.
            .set(
                Service::Storage,
                [
                    ("EASEL_DATABASE_URL", storage_db.url.clone()),
                    (
                        "EASEL_STORAGE_URL",
                        format!("file://{}", artifacts.path().join("artifacts").display()),
                    ),
                ],
            )
            // comfy-bridge in front of the simulator, with quick health checks.
            .set(
                Service::ComfyBridge,
                [("EASEL_COMFYUI_HEALTH_INTERVAL", "100ms")],
            )
            // Jobs: API and workers.
            .set(
                Service::Jobs,
                [
                    ("EASEL_DATABASE_URL", jobs_db.url.as_str()),
                    ("EASEL_WORKER_CONCURRENCY", "2"),
                    ("EASEL_CLAIM_BLOCK", "200ms"),
                ],
            )
            .set(
                Service::Gateway,
                [
                    ("EASEL_STREAM_KEEPALIVE", "1s"),
                    ("EASEL_LOGIN_RATE_PER_MINUTE", "6000"),
                    ("EASEL_LOGIN_BURST", "1000"),
                ],
            );
        if options.gateway_without_redis {
            // An empty variable is an unset one.
            settings = settings.set(Service::Gateway, [("EASEL_REDIS_URL", "")]);
        }
        let settings = settings.set(Service::Gateway, options.gateway_env.iter().cloned());
        let platform =
            easel_platform::Platform::start(settings, Shutdown::new(Duration::from_secs(3)))
                .await
                .expect("the platform starts");
        let url = |service| platform.grpc_url(service).expect("runs").to_string();
        let admin_key = platform
            .dev_account()
            .and_then(|account| account.api_key.clone())
            .expect("the admin account is made with a key");

        let platform = Platform {
            url: url(Service::Gateway),
            admin_url: platform
                .admin_url(Service::Gateway)
                .expect("runs")
                .to_string(),
            admin: User {
                id: String::new(),
                api_key: admin_key,
                email: "admin@gateway.test".into(),
                password: String::new(),
            },
            upstream_env: vec![
                ("EASEL_AUTH_URL", url(Service::Auth)),
                ("EASEL_JOBS_URL", url(Service::Jobs)),
                ("EASEL_BRIDGE_URL", url(Service::ComfyBridge)),
                (
                    "EASEL_STORAGE_HTTP_URL",
                    platform
                        .admin_url(Service::Storage)
                        .expect("runs")
                        .to_string(),
                ),
            ],
            http: reqwest::Client::new(),
            platform,
            sim,
            _artifacts: artifacts,
            _redis: redis,
            _databases: vec![auth_db, jobs_db, storage_db],
        };
        platform.wait_ready().await;
        platform
    }

    /// Waits until the gateway reports ready (auth and jobs answer).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let ready = self
                .http
                .get(format!("{}/readyz", self.url))
                .send()
                .await
                .is_ok_and(|response| response.status() == 200);
            if ready {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the platform did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A gRPC channel to the gateway.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("gateway URL")
            .connect()
            .await
            .expect("connects to the gateway")
    }

    /// The job API over gRPC.
    pub async fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel().await)
    }

    /// The account API over gRPC.
    pub async fn account(&self) -> AccountServiceClient<Channel> {
        AccountServiceClient::new(self.channel().await)
    }

    /// A new user of `tier` with an API key, made through the gateway: the admin creates
    /// the user, who logs in and creates a key.
    pub async fn user(&self, tier: Tier) -> User {
        let email = format!("user-{}@gateway.test", uuid_like());
        let password = format!("password-{}", uuid_like());
        let mut account = self.account().await;
        let created = account
            .create_user(with_key(
                CreateUserRequest {
                    email: email.clone(),
                    password: password.clone(),
                    tier: tier as i32,
                    role: Role::User as i32,
                },
                &self.admin.api_key,
            ))
            .await
            .expect("CreateUser")
            .into_inner();
        let token = account
            .login(LoginRequest {
                email: email.clone(),
                password: password.clone(),
            })
            .await
            .expect("Login")
            .into_inner()
            .access_token
            .expect("a token")
            .token;
        let mut request = tonic::Request::new(CreateApiKeyRequest {
            name: "test".into(),
            ..Default::default()
        });
        request.metadata_mut().insert(
            "authorization",
            MetadataValue::try_from(format!("Bearer {token}")).expect("token metadata"),
        );
        let key = account
            .create_api_key(request)
            .await
            .expect("CreateApiKey")
            .into_inner();
        User {
            id: created.user.expect("a user").id,
            api_key: key.secret,
            email,
            password,
        }
    }

    /// Stops the jobs service and waits until it is down.
    pub async fn stop_jobs(&mut self) {
        self.platform.stop(Service::Jobs);
        let _ = tokio::time::timeout(WAIT, self.platform.stopped(Service::Jobs)).await;
    }

    /// Starts the gateway's graceful shutdown.
    pub fn shut_down_gateway(&self) {
        self.platform.stop(Service::Gateway);
    }

    /// Waits until the gateway has drained and stopped.
    pub async fn gateway_stopped(&mut self) -> std::io::Result<()> {
        tokio::time::timeout(WAIT, self.platform.stopped(Service::Gateway))
            .await
            .expect("the gateway stops within the wait")
    }

    /// `POST /api/v1/jobs` with `body` as `api_key`.
    pub async fn submit(&self, api_key: &str, body: &serde_json::Value) -> reqwest::Response {
        self.http
            .post(format!("{}/api/v1/jobs", self.url))
            .header("x-api-key", api_key)
            .json(body)
            .send()
            .await
            .expect("POST /api/v1/jobs")
    }

    /// `GET path` as `api_key`: status and JSON body.
    pub async fn get_json(&self, api_key: &str, path: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .header("x-api-key", api_key)
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (
            status,
            response.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    /// Polls the job until it is terminal; returns it.
    pub async fn wait_terminal(&self, api_key: &str, job_id: &str) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (status, body) = self
                .get_json(api_key, &format!("/api/v1/jobs/{job_id}"))
                .await;
            assert_eq!(status, 200, "{body}");
            let job = body.clone();
            let state = job["status"].as_str().unwrap_or_default().to_string();
            if ["completed", "failed", "cancelled", "expired"].contains(&state.as_str()) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {job_id} is still {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `message` carrying `api_key` in `x-api-key`.
pub fn with_key<T>(message: T, api_key: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "x-api-key",
        MetadataValue::try_from(api_key).expect("key metadata"),
    );
    request
}

/// A unique token for names.
pub fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    format!(
        "{nanos:x}{:x}{:x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A small, fast text-to-image request body.
pub fn small_job(prompt: &str) -> serde_json::Value {
    serde_json::json!({"prompt": prompt, "width": 64, "height": 64, "steps": 3})
}
