//! Authentication and rate limits at the door.
//!
//! A caller presents `X-API-Key` or `Authorization: Bearer` (job streams also accept
//! `?access_token=`, for browsers); auth resolves it to a principal (cached), and the
//! principal's tier sets its rate. Every answer to an authenticated request carries the
//! `RateLimit-*` headers (gRPC: as metadata); over the limit it is 429 with `Retry-After`
//! (gRPC: RESOURCE_EXHAUSTED with `RetryInfo`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use easel_auth_client::{Credential, RateDecision, RateQuota, WhenUnavailable, reason};
use easel_proto::account::v1::{Tier, TierLimits};
use easel_runtime::error::Error;
use http::{HeaderMap, Uri};

use super::Door;
use super::access::{Access, allows_query_token};
use super::respond::respond;
use crate::context::{Authenticated, ClientIp};

/// The query parameter carrying a credential on job streams.
const ACCESS_TOKEN: &str = "access_token";

/// The door's authentication and rate-limit middleware.
pub async fn authenticate(
    State(door): State<Arc<Door>>,
    mut request: Request,
    next: Next,
) -> Response {
    let grpc = easel_runtime::grpc::is_grpc_request(request.headers());
    match Access::of(request.method(), request.uri().path(), grpc) {
        Access::Public => next.run(request).await,
        Access::PerAddress => {
            let address = request
                .extensions()
                .get::<ClientIp>()
                .map_or_else(|| "unknown".to_string(), |ip| ip.0.to_string());
            let decision =
                match limit(&door, &format!("login:{address}"), door.login_quota, None).await {
                    Ok(decision) => decision,
                    Err(error) => return respond(error, request.headers()),
                };
            admit(decision, request, next).await
        }
        Access::User => {
            let credential = match credential_of(&mut request) {
                Some(Ok(credential)) => credential,
                Some(Err(error)) => return respond(error, request.headers()),
                None => {
                    let error = Error::unauthenticated(
                        "a credential is required: send X-API-Key or Authorization: Bearer",
                    )
                    .with_reason(reason::CREDENTIAL_MISSING);
                    return respond(error, request.headers());
                }
            };
            let principal = match door.authenticator.authenticate(&credential).await {
                Ok(principal) => principal,
                Err(error) => return respond(error, request.headers()),
            };
            let quota =
                RateQuota::from_limits(principal.limits.as_ref().unwrap_or(&TierLimits::default()));
            let tier = Tier::try_from(principal.tier).ok();
            let decision =
                match limit(&door, &format!("user:{}", principal.user_id), quota, tier).await {
                    Ok(decision) => decision,
                    Err(error) => return respond(error, request.headers()),
                };
            request
                .extensions_mut()
                .insert(Authenticated(Arc::new(principal)));
            admit(decision, request, next).await
        }
    }
}

/// Checks one request against a quota (`tier` `None`: the per-address login limit). While
/// Redis is down the limiter counts in this replica, or refuses for the tiers configured to
/// fail closed (503). A limiter answering nonsense lets the request through without headers:
/// availability of the API outweighs a few requests over the limit; that is logged and counted.
async fn limit(
    door: &Door,
    key: &str,
    quota: RateQuota,
    tier: Option<Tier>,
) -> Result<Option<RateDecision>, Error> {
    let when_unavailable = door.when_unavailable(tier);
    match door.limiter.check_or(key, quota, when_unavailable).await {
        Ok(decision) => Ok(Some(decision)),
        Err(error) => {
            metrics::counter!(crate::metrics::names::RATE_LIMITER_ERRORS).increment(1);
            if when_unavailable == WhenUnavailable::Refuse {
                return Err(error);
            }
            tracing::warn!(cause = %error.source_chain(), "rate limiter failed; admitting the request");
            Ok(None)
        }
    }
}

/// Lets the request in (with the rate-limit headers on its answer) or refuses it.
async fn admit(decision: Option<RateDecision>, request: Request, next: Next) -> Response {
    let Some(decision) = decision else {
        return next.run(request).await;
    };
    let headers = decision.headers();
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        metrics::counter!(crate::metrics::names::RATE_LIMITED).increment(1);
        respond(decision.to_error(), request.headers())
    };
    merge_headers(response.headers_mut(), headers);
    response
}

fn merge_headers(target: &mut HeaderMap, source: HeaderMap) {
    for (name, value) in source {
        if let Some(name) = name {
            target.insert(name, value);
        }
    }
}

/// The request's credential: from its headers, or on job streams from `?access_token=`,
/// which is then removed from the URI so nothing further down sees it.
fn credential_of(request: &mut Request) -> Option<Result<Credential, Error>> {
    if let Some(found) = Credential::from_headers(request.headers()) {
        return Some(found);
    }
    if !allows_query_token(request.method(), request.uri().path()) {
        return None;
    }
    let (token, uri) = take_query_token(request.uri())?;
    *request.uri_mut() = uri;
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Some(Err(Error::unauthenticated(
            "the access_token parameter is malformed",
        )
        .with_reason(reason::CREDENTIAL_MALFORMED)));
    }
    Some(Ok(if token.starts_with("easel_") {
        Credential::ApiKey(token)
    } else {
        Credential::Bearer(token)
    }))
}

/// Splits `?access_token=` off a URI: the token and the URI without it.
fn take_query_token(uri: &Uri) -> Option<(String, Uri)> {
    let query = uri.query()?;
    let mut token = None;
    let mut kept = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if name == ACCESS_TOKEN {
            token.get_or_insert_with(|| value.into_owned());
        } else {
            kept.append_pair(&name, &value);
        }
    }
    let token = token?;
    let kept = kept.finish();
    let path_and_query = if kept.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{kept}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    let uri = Uri::from_parts(parts).ok()?;
    Some((token, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_token_is_taken_out_of_the_uri() {
        let uri: Uri = "/ws/jobs/job_1?access_token=easel_abc_def&x=1"
            .parse()
            .unwrap();
        let (token, rest) = take_query_token(&uri).unwrap();
        assert_eq!(token, "easel_abc_def");
        assert_eq!(rest, "/ws/jobs/job_1?x=1");
        let uri: Uri = "/ws/jobs/job_1?access_token=eyJ.x.y".parse().unwrap();
        let (token, rest) = take_query_token(&uri).unwrap();
        assert_eq!(token, "eyJ.x.y");
        assert_eq!(rest, "/ws/jobs/job_1");
        assert!(take_query_token(&"/ws/jobs/job_1?x=1".parse().unwrap()).is_none());
    }

    #[test]
    fn a_query_token_becomes_a_key_or_a_bearer_token() {
        let mut request = Request::builder()
            .uri("/api/v1/jobs/job_1/events?access_token=easel_p_s")
            .body(axum::body::Body::empty())
            .unwrap();
        let credential = credential_of(&mut request).unwrap().unwrap();
        assert!(matches!(credential, Credential::ApiKey(_)));
        assert_eq!(request.uri(), "/api/v1/jobs/job_1/events");

        let mut request = Request::builder()
            .uri("/api/v1/jobs?access_token=easel_p_s")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(credential_of(&mut request).is_none());
    }
}
