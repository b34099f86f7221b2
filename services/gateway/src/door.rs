//! The door: the one tower stack every request passes, gRPC, gRPC-web and REST alike, built
//! in [`Door::stack`]. Outermost first: sensitive headers, request id, trace span, metrics,
//! CORS, client address and deadline, timeout, load shedding, then authentication,
//! authorization (the scope each route needs, from the table in [`access`]) and rate limits.

pub mod access;
mod auth;
mod facts;
mod respond;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use easel_auth_client::{
    Authenticator, AuthenticatorConfig, RateLimiter, RateQuota, WhenUnavailable,
};
use easel_proto::account::v1::Tier;
use easel_runtime::Shutdown;
use easel_runtime::config::ServerConfig;
use easel_runtime::grpc::layers::{GrpcDeadlineLayer, GrpcMetricsLayer, ServerSpan, overloaded};
use easel_runtime::redis::Redis;
use http::{HeaderName, HeaderValue, Method, header};
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::{
    SetSensitiveRequestHeadersLayer, SetSensitiveResponseHeadersLayer,
};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

pub use access::{Access, Rule};
pub use respond::{error_response, grpc_error_response};

use crate::SERVICE_NAME;
use crate::config::GatewayConfig;
use crate::context::API_KEY;
use crate::upstream::Upstreams;

/// How long CORS preflight answers may be cached by browsers.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// Why the door could not open.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    /// The Redis URL does not parse.
    #[error("invalid EASEL_REDIS_URL: {0}")]
    RedisUrl(#[source] redis::RedisError),
}

/// The door's state: who may come in, and how often.
#[derive(Clone, Debug)]
pub struct Door {
    authenticator: Authenticator,
    limiter: RateLimiter,
    login_quota: RateQuota,
    /// Tiers refused rather than limited locally while Redis is down.
    fail_closed: Vec<Tier>,
    login_fails_closed: bool,
    trust_forwarded_for: bool,
    cors_origins: Vec<HeaderValue>,
}

impl Door {
    /// Opens the door: the credential cache (evicted by auth's revocation broadcasts when
    /// Redis is configured) and the rate limiter (shared through Redis, or in-process). Redis
    /// need not answer at start: until it does, limits are per replica (or refused, for the
    /// tiers configured to fail closed).
    pub async fn start(
        config: &GatewayConfig,
        upstreams: &Upstreams,
        shutdown: &Shutdown,
    ) -> Result<Door, DoorError> {
        let authenticator = Authenticator::new(
            upstreams.auth.clone(),
            AuthenticatorConfig {
                cache_ttl: config.auth_cache_ttl,
                unheard_ttl: config.auth_cache_unheard_ttl,
                ..AuthenticatorConfig::default()
            },
        );
        let limiter = match &config.redis_url {
            Some(url) => {
                let connection = Redis::connect(crate::SERVICE_NAME, url, config.redis)
                    .await
                    .map_err(DoorError::RedisUrl)?;
                authenticator.spawn_revocation_listener(
                    url,
                    &config.redis_prefix,
                    shutdown.clone(),
                );
                RateLimiter::redis(connection, config.redis_prefix.clone())
            }
            None => RateLimiter::in_process(),
        };
        Ok(Door::new(config, authenticator, limiter))
    }

    /// A door with the given authenticator and limiter.
    pub fn new(config: &GatewayConfig, authenticator: Authenticator, limiter: RateLimiter) -> Door {
        Door {
            authenticator,
            limiter,
            login_quota: RateQuota {
                per_minute: config.login_rate.per_minute,
                burst: config.login_rate.burst,
            },
            fail_closed: [Tier::Free, Tier::Pro, Tier::Enterprise]
                .into_iter()
                .filter(|tier| config.fails_closed(*tier))
                .collect(),
            login_fails_closed: config.login_fails_closed(),
            trust_forwarded_for: config.trust_forwarded_for,
            cors_origins: config
                .cors_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect(),
        }
    }

    /// What a rate-limit check of `tier` does while Redis cannot answer.
    fn when_unavailable(&self, tier: Option<Tier>) -> WhenUnavailable {
        let closed = match tier {
            Some(tier) => self.fail_closed.contains(&tier),
            None => self.login_fails_closed,
        };
        if closed {
            WhenUnavailable::Refuse
        } else {
            WhenUnavailable::LimitLocally
        }
    }

    /// The credential cache, for tests that wait for the revocation listener.
    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// Wraps `inner` (the protocol router) in the door's stack, outermost first.
    pub fn stack(self, inner: Router, server: &ServerConfig) -> Router {
        let door = Arc::new(self);
        let cors = door.cors();
        let stack = ServiceBuilder::new()
            // Credentials are marked sensitive before anything could print a header.
            .layer(SetSensitiveRequestHeadersLayer::new([
                header::AUTHORIZATION,
                header::COOKIE,
                header::PROXY_AUTHORIZATION,
                API_KEY,
            ]))
            .layer(SetSensitiveResponseHeadersLayer::new([header::SET_COOKIE]))
            // A caller's X-Request-ID is kept only if it is a plain token; otherwise one is made.
            .layer(axum::middleware::map_request(facts::sanitize_request_id))
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            // Trace: a server span per request with the request id, continuing the caller's
            // W3C trace context; it records the path only, never the query (tokens, signatures).
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(ServerSpan::new(SERVICE_NAME))
                    .on_request(())
                    .on_response(DefaultOnResponse::new().level(Level::INFO))
                    .on_failure(DefaultOnFailure::new().level(Level::DEBUG)),
            )
            // Echo the request id on every answer.
            .layer(PropagateRequestIdLayer::x_request_id())
            // Metrics: gRPC by service, method and code; REST by route and status.
            .layer(GrpcMetricsLayer::new(SERVICE_NAME))
            .layer(axum::middleware::from_fn(crate::metrics::record_http))
            // Requests tonic cannot decode (gRPC, gRPC-web) are the caller's: INVALID_ARGUMENT.
            .layer(easel_runtime::grpc::layers::DecodeFailureLayer)
            // CORS from the origin allowlist; preflights are answered here.
            .layer(cors)
            // The client's address and the request's deadline, for the layers and calls below.
            .layer(axum::middleware::from_fn_with_state(
                door.clone(),
                facts::request_facts,
            ))
            // Deadline: the shorter of the server's limit and the client's grpc-timeout
            // (gRPC DEADLINE_EXCEEDED, or 504 in the envelope); streams run on once started.
            .layer(GrpcDeadlineLayer::new(server.request_timeout))
            // Shed load beyond the concurrency limit (503 + Retry-After, or UNAVAILABLE).
            .layer(HandleErrorLayer::new(overloaded))
            .load_shed()
            .concurrency_limit(server.max_concurrent_requests)
            // Authentication, the route's scope, and per-user (or, for login, per-address)
            // rate limits; what the authorization table does not list stops here.
            .layer(axum::middleware::from_fn_with_state(
                door,
                auth::authenticate,
            ));
        inner.layer(stack)
    }

    fn cors(&self) -> CorsLayer {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(self.cors_origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                header::ACCEPT,
                API_KEY,
                HeaderName::from_static("x-grpc-web"),
                HeaderName::from_static("x-user-agent"),
                HeaderName::from_static("grpc-timeout"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-key"),
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("traceparent"),
                HeaderName::from_static("tracestate"),
            ])
            .expose_headers([
                HeaderName::from_static("grpc-status"),
                HeaderName::from_static("grpc-message"),
                HeaderName::from_static("grpc-status-details-bin"),
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
                HeaderName::from_static("x-request-id"),
                HeaderName::from_static("idempotency-replayed"),
                header::RETRY_AFTER,
                header::LOCATION,
            ])
            .max_age(PREFLIGHT_MAX_AGE)
    }
}
