//! Which service may call which internal method: one table per service, enforced by one tower
//! layer from the caller's verified certificate ([`PeerService`]).
//!
//! Health and reflection stay open to every caller. A method the table does not list is
//! refused (deny by default). Without mutual TLS no caller is known and the layer lets every
//! call through: that is only allowed on loopback, a Unix socket, or a network declared
//! trusted with `EASEL_TRUSTED_NETWORK=true` (see [`crate::config::ServerConfig`]).

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either};
use tower::{Layer, Service};

use crate::error::Error;
use crate::metrics::names;
use crate::transport::PeerService;

use super::split_path;

/// Services every caller may use: health checks and reflection.
const OPEN_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// One row: a method (`package.Service/Method`, or `package.Service/*` for all of its
/// methods) and the services allowed to call it.
pub type CallerRule = (&'static str, &'static [&'static str]);

/// A service's table of allowed callers.
#[derive(Clone, Copy, Debug)]
pub struct CallerPolicy {
    rules: &'static [CallerRule],
}

impl CallerPolicy {
    /// A table; rows are matched in order, the first matching one decides.
    pub const fn new(rules: &'static [CallerRule]) -> Self {
        CallerPolicy { rules }
    }

    /// No method allowed to anyone (beyond health and reflection).
    pub const fn deny_all() -> Self {
        CallerPolicy { rules: &[] }
    }

    /// Whether `caller` may call the gRPC `path` (`/package.Service/Method`).
    pub fn allows(&self, caller: &str, path: &str) -> bool {
        let (service, method) = split_path(path);
        if OPEN_SERVICES.contains(&service) {
            return true;
        }
        self.rules
            .iter()
            .find(|(pattern, _)| match pattern.split_once('/') {
                Some((rule_service, "*")) => rule_service == service,
                Some((rule_service, rule_method)) => {
                    rule_service == service && rule_method == method
                }
                None => false,
            })
            .is_some_and(|(_, callers)| callers.contains(&caller))
    }

    /// The rows, for documentation and tests.
    pub fn rules(&self) -> &'static [CallerRule] {
        self.rules
    }
}

/// Enforces a [`CallerPolicy`] on requests that carry a verified [`PeerService`].
#[derive(Clone, Debug)]
pub struct CallerLayer {
    policy: CallerPolicy,
    service_label: Arc<str>,
    /// Whether a request without a verified caller is refused (mutual TLS is on, so one
    /// without could only come from a bug in the wiring).
    require_caller: bool,
}

impl CallerLayer {
    /// The layer for the service `service_label`.
    pub fn new(policy: CallerPolicy, service_label: &str, require_caller: bool) -> Self {
        CallerLayer {
            policy,
            service_label: Arc::from(service_label),
            require_caller,
        }
    }
}

impl<S> Layer<S> for CallerLayer {
    type Service = CallerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`CallerLayer`].
#[derive(Clone, Debug)]
pub struct CallerService<S> {
    inner: S,
    layer: CallerLayer,
}

impl<S, B> Service<http::Request<B>> for CallerService<S>
where
    S: Service<http::Request<B>, Response = axum::response::Response>,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<Self::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let caller = request.extensions().get::<PeerService>();
        let refusal = match caller {
            Some(PeerService(caller)) if self.layer.policy.allows(caller, path) => None,
            Some(PeerService(caller)) => Some((caller.to_string(), path.to_string())),
            None if self.layer.require_caller && !open(path) => {
                Some(("an unidentified caller".to_string(), path.to_string()))
            }
            None => None,
        };
        let Some((caller, path)) = refusal else {
            return Either::Left(self.inner.call(request));
        };
        let method = path.trim_start_matches('/').to_string();
        metrics::counter!(
            names::GRPC_CALLER_DENIED,
            "service" => self.layer.service_label.to_string(),
            "caller" => caller.clone(),
            "method" => method.clone(),
        )
        .increment(1);
        tracing::warn!(caller = %caller, method = %method, "internal call refused by the caller allow-list");
        let error = Error::permission_denied(format!(
            "service {caller:?} may not call {method} on {}",
            self.layer.service_label
        ))
        .with_reason(crate::error::reason::CALLER_NOT_ALLOWED)
        .with_metadata("caller", caller)
        .with_metadata("method", method);
        let response = super::status_response(error.into_status());
        Either::Right(Box::pin(async move { Ok(response) }))
    }
}

fn open(path: &str) -> bool {
    OPEN_SERVICES.contains(&split_path(path).0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CallerPolicy = CallerPolicy::new(&[
        ("easel.storage.v1.StorageService/PutArtifact", &["jobs"]),
        ("easel.jobs.internal.v1.InternalJobService/*", &["gateway"]),
    ]);

    #[test]
    fn the_table_allows_only_listed_callers_and_keeps_health_open() {
        assert!(POLICY.allows("jobs", "/easel.storage.v1.StorageService/PutArtifact"));
        assert!(!POLICY.allows("gateway", "/easel.storage.v1.StorageService/PutArtifact"));
        assert!(POLICY.allows(
            "gateway",
            "/easel.jobs.internal.v1.InternalJobService/SubmitJob"
        ));
        assert!(!POLICY.allows(
            "jobs",
            "/easel.jobs.internal.v1.InternalJobService/SubmitJob"
        ));
        // Unlisted: denied.
        assert!(!POLICY.allows("jobs", "/easel.storage.v1.StorageService/DeleteArtifact"));
        assert!(POLICY.allows("anyone", "/grpc.health.v1.Health/Check"));
        assert!(POLICY.allows(
            "anyone",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
        ));
    }
}
