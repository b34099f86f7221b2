//! One port, three protocols: requests whose content type is `application/grpc*` go to the
//! gRPC services (gRPC-web translated by tonic-web), everything else to the REST router;
//! the door's stack wraps both.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use easel_runtime::admin::Readiness;
use easel_runtime::grpc::GrpcServer;
use futures::future::BoxFuture;
use http::Request;
use tonic_health::server::HealthReporter;
use tonic_web::{GrpcWebLayer, GrpcWebService};
use tower::{Layer, Service, ServiceExt};

use crate::api::Gateway;
use crate::config::Config;
use crate::door::Door;
use crate::{SERVICE_NAME, grpc, rest};

/// The public port's router and what serving it needs.
#[derive(Debug)]
pub struct App {
    /// Every route behind the door's stack.
    pub router: Router,
    /// The gRPC health reporter.
    pub health: HealthReporter,
    /// The public gRPC services' names (reported SERVING while the gateway runs).
    pub service_names: Vec<&'static str>,
}

/// Builds the public port's router.
pub fn app(
    config: &Config,
    gateway: Gateway,
    door: Door,
    readiness: Readiness,
) -> Result<App, rest::RestError> {
    let (jobs, models, account) = grpc::services(&gateway, config.gateway.max_body_bytes);
    let (grpc_routes, health, service_names) = GrpcServer::new(SERVICE_NAME, &config.server)
        .add_service(jobs)
        .add_service(models)
        .add_service(account)
        .into_routes();
    let rest = rest::router(rest::RestState::new(gateway, readiness)?);
    let split = ProtocolRouter {
        grpc: GrpcWebLayer::new().layer(grpc_routes),
        rest,
    };
    let router = door.stack(Router::new().fallback_service(split), &config.server);
    Ok(App {
        router,
        health,
        service_names,
    })
}

/// Sends gRPC and gRPC-web requests to the gRPC services and the rest to REST.
#[derive(Clone, Debug)]
pub struct ProtocolRouter {
    grpc: GrpcWebService<Router>,
    rest: Router,
}

impl Service<Request<Body>> for ProtocolRouter {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both routers are always ready; each call uses a clone.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if easel_runtime::grpc::is_grpc_request(request.headers()) {
            let grpc = self.grpc.clone();
            Box::pin(async move {
                let response = grpc.oneshot(request).await?;
                Ok(response.map(Body::new))
            })
        } else {
            let rest = self.rest.clone();
            Box::pin(rest.oneshot(request))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use easel_auth_client::{Authenticator, AuthenticatorConfig, RateLimiter};
    use easel_runtime::Shutdown;
    use easel_runtime::config::Env;
    use http::Method;
    use prost::Message;
    use prost_types::FileDescriptorSet;

    use super::*;
    use crate::door::access::{GRPC_METHODS, Rule, rule_of};
    use crate::upstream::Upstreams;

    /// Every method of `services` in the descriptor sets, as `/package.Service/Method`.
    fn methods_of(services: &[String]) -> BTreeSet<String> {
        let sets = [
            easel_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut found = BTreeSet::new();
        let mut described = BTreeSet::new();
        for bytes in sets {
            let set = FileDescriptorSet::decode(bytes).unwrap();
            for file in set.file {
                for service in &file.service {
                    let name = format!("{}.{}", file.package(), service.name());
                    if services.contains(&name) {
                        described.insert(name.clone());
                        for method in &service.method {
                            found.insert(format!("/{name}/{}", method.name()));
                        }
                    }
                }
            }
        }
        assert_eq!(
            described.len(),
            services.len(),
            "undescribed services among {services:?}"
        );
        found
    }

    #[tokio::test]
    async fn every_grpc_method_served_is_in_the_authorization_table() {
        let mut env = Env::from_pairs(Vec::<(String, String)>::new());
        let config = Config::from_env(&mut env);
        env.finish().unwrap();
        let upstreams = Upstreams::connect(&config.gateway, None).unwrap();
        let authenticator =
            Authenticator::new(upstreams.auth.clone(), AuthenticatorConfig::default());
        let door = Door::new(&config.gateway, authenticator, RateLimiter::in_process());
        let gateway = Gateway::new(
            upstreams.clone(),
            Arc::new(config.gateway.clone()),
            Shutdown::new(std::time::Duration::from_secs(1)),
        );
        let app = app(&config, gateway, door, upstreams.readiness()).unwrap();

        // The public services, plus what every gRPC server of the runtime serves.
        let mut services: Vec<String> = app
            .service_names
            .iter()
            .map(|name| (*name).to_string())
            .collect();
        assert_eq!(services.len(), 3, "{services:?}");
        services.extend(
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
            .map(str::to_string),
        );
        let served = methods_of(&services);
        for path in &served {
            assert!(
                matches!(rule_of(&Method::POST, path, true), Rule::Listed(_)),
                "{path} is served but not in the authorization table"
            );
        }
        let listed: BTreeSet<String> = GRPC_METHODS
            .iter()
            .map(|entry| entry.path.to_string())
            .collect();
        assert_eq!(listed, served, "the table lists exactly what is served");
    }
}
