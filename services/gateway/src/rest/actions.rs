//! Registers the route table on the router. Every record gets its own method router, labelled
//! with its documented path for the metrics. Custom methods (`POST /api/v1/jobs/{id}:cancel`)
//! need one more step: matchit routes whole segments, so the actions of one resource share a
//! router path (`/api/v1/jobs/{id}`) and sit behind [`Actions`], which picks the record by the
//! action the path ends with.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, on_service};
use easel_runtime::error::Error;
use futures::future::BoxFuture;
use http::request::Parts;
use tower::{Service, ServiceExt};

use super::RestState;
use super::json::{ApiError, PathParam};
use crate::routes::{Route, Verb};

/// Adds every route of `routes` to `router`.
pub fn register(
    mut router: Router<RestState>,
    routes: &[Route],
    state: &RestState,
) -> Router<RestState> {
    let mut groups: Vec<((&'static str, Verb), Vec<Action>)> = Vec::new();
    for route in routes {
        let served = route
            .method_router()
            .route_layer(axum::middleware::from_fn_with_state(
                route.path,
                crate::metrics::label_route,
            ));
        let Some(action) = route.action() else {
            router = router.route(route.router_path(), served);
            continue;
        };
        let key = (route.router_path(), route.method);
        let served = (action, served.with_state(state.clone()));
        match groups.iter_mut().find(|(group, _)| *group == key) {
            Some((_, members)) => members.push(served),
            None => groups.push((key, vec![served])),
        }
    }
    for ((path, verb), members) in groups {
        router = router.route(path, on_service(verb.filter(), Actions(members.into())));
    }
    router
}

/// A custom method: its action name and what serves it.
type Action = (&'static str, MethodRouter);

/// The custom methods of one resource and HTTP method.
#[derive(Clone)]
struct Actions(Arc<[Action]>);

impl Service<Request> for Actions {
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let found = split_action(request.uri().path()).and_then(|(_, action)| {
            self.0
                .iter()
                .find(|(name, _)| *name == action)
                .map(|(_, served)| served.clone())
        });
        Box::pin(async move {
            match found {
                Some(served) => served.oneshot(request).await,
                None => Ok(no_such_action().into_response()),
            }
        })
    }
}

fn no_such_action() -> ApiError {
    ApiError(Error::not_found(
        "no such route; custom methods are POST …/{id}:action, see /openapi.json",
    ))
}

/// `(id, action)` of a path whose last segment is `{id}:{action}`, both non-empty.
fn split_action(path: &str) -> Option<(&str, &str)> {
    let last = path.rsplit('/').next()?;
    let (id, action) = last.rsplit_once(':')?;
    (!id.is_empty() && !action.is_empty()).then_some((id, action))
}

/// The resource id of a custom method's path (`job_1` of `/api/v1/jobs/job_1:cancel`).
#[derive(Debug)]
pub struct Target(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Target {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let PathParam(segment) = PathParam::from_request_parts(parts, state).await?;
        match split_action(&segment) {
            Some((id, _)) => Ok(Target(id.to_string())),
            None => Err(no_such_action()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_split_off_their_id() {
        assert_eq!(
            split_action("/api/v1/jobs/job_1:cancel"),
            Some(("job_1", "cancel"))
        );
        assert_eq!(split_action("job_1:cancel"), Some(("job_1", "cancel")));
        assert_eq!(split_action("/api/v1/jobs/job_1"), None);
        assert_eq!(split_action("/api/v1/jobs/:cancel"), None);
        assert_eq!(split_action("/api/v1/jobs/job_1:"), None);
    }
}
