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
