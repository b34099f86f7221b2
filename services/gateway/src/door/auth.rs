//! Authentication, authorization and rate limits at the door.
//!
//! The authorization table ([`super::access`]) says what a request needs. A caller presents
//! `X-API-Key` or `Authorization: Bearer` (job streams also accept `?access_token=`, for
//! browsers); auth resolves it to a principal (cached), whose scopes must include the one the
//! route needs (else 403 / PERMISSION_DENIED, reason `MISSING_SCOPE`, naming it), and whose
//! tier sets its rate. Every answer to an authenticated request carries the `RateLimit-*`
//! headers (gRPC: as metadata); over the limit it is 429 with `Retry-After` (gRPC:
//! RESOURCE_EXHAUSTED with `RetryInfo`). A request the table does not list never reaches a
//! handler.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use easel_auth_client::{Credential, RateDecision, RateQuota, WhenUnavailable, reason};
use easel_proto::account::v1::{Tier, TierLimits};
use easel_runtime::error::{Error, ErrorCode};
use http::{HeaderMap, HeaderValue, Method, Uri, header};

use super::Door;
use super::access::{Access, Rule, allows_query_token, rule_of};
use super::respond::respond;
use crate::context::{Authenticated, ClientIp};

/// The query parameter carrying a credential on job streams.
const ACCESS_TOKEN: &str = "access_token";

/// The door's authentication, authorization and rate-limit middleware.
pub async fn authenticate(
    State(door): State<Arc<Door>>,
    mut request: Request,
    next: Next,
) -> Response {
    let grpc = easel_runtime::grpc::is_grpc_request(request.headers());
    let rule = rule_of(request.method(), request.uri().path(), grpc);
    let then = match rule {
        Rule::Listed(Access::Public) => return next.run(request).await,
        Rule::Listed(Access::PerAddress) => {
            let address = request
                .extensions()
                .get::<ClientIp>()
                .map_or_else(|| "unknown".to_string(), |ip| ip.0.to_string());
            let decision =
                match limit(&door, &format!("login:{address}"), door.login_quota, None).await {
                    Ok(decision) => decision,
                    Err(error) => return respond(error, request.headers()),
                };
            return admit(decision, request, next, None).await;
        }
        Rule::Listed(Access::Credential) => Then::Handler(None),
        Rule::Listed(Access::Scope(scope)) => Then::Handler(Some(scope)),
        // Not in the table: whoever asks must still say who they are (as for any route
        // that is not public), then hears that there is nothing here.
        Rule::OtherMethods(methods) => Then::Refuse(Refusal::OtherMethods(methods)),
        Rule::Unlisted if grpc => Then::Refuse(Refusal::NoSuchMethod),
        Rule::Unlisted => Then::Refuse(Refusal::NoSuchRoute),
    };
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
    let quota = RateQuota::from_limits(principal.limits.as_ref().unwrap_or(&TierLimits::default()));
    let tier = Tier::try_from(principal.tier).ok();
    let decision = match limit(&door, &format!("user:{}", principal.user_id), quota, tier).await {
        Ok(decision) => decision,
        Err(error) => return respond(error, request.headers()),
    };
    let refusal = match then {
        Then::Handler(Some(scope)) if !scope.is_held_by(&principal) => {
            metrics::counter!(crate::metrics::names::SCOPE_REFUSED, "scope" => scope.as_str())
                .increment(1);
            Some(respond(scope.missing(), request.headers()))
        }
        Then::Handler(_) => None,
        Then::Refuse(refusal) => Some(refusal.respond(request.headers())),
    };
    request
        .extensions_mut()
        .insert(Authenticated(Arc::new(principal)));
    admit(decision, request, next, refusal).await
}

/// What happens to an authenticated request.
enum Then {
    /// On to its handler, if the credential has the scope (when one is needed).
    Handler(Option<easel_auth_client::Scope>),
    /// Refused at the door: the table does not list it.
    Refuse(Refusal),
}

/// Why the table has nothing for a request.
enum Refusal {
    /// A REST path served under other methods (405 with `Allow`).
    OtherMethods(Vec<Method>),
    /// No such REST route (404).
    NoSuchRoute,
    /// No such gRPC method (UNIMPLEMENTED).
    NoSuchMethod,
}

impl Refusal {
    fn respond(self, headers: &HeaderMap) -> Response {
        match self {
            Refusal::OtherMethods(methods) => {
                let error = Error::invalid_argument(
                    "this route does not take this method; see /openapi.json",
                )
                .with_reason(easel_runtime::error::reason::METHOD_NOT_ALLOWED);
                let mut allowed: Vec<&str> = methods.iter().map(Method::as_str).collect();
                if methods.contains(&Method::GET) {
                    allowed.push(Method::HEAD.as_str());
                }
                let mut response = respond(error, headers);
                if let Ok(value) = HeaderValue::from_str(&allowed.join(",")) {
                    response.headers_mut().insert(header::ALLOW, value);
                }
                response
            }
            Refusal::NoSuchRoute => respond(
                Error::not_found("no such route; see /openapi.json"),
                headers,
            ),
            Refusal::NoSuchMethod => respond(
                Error::new(ErrorCode::Unimplemented, "no such method on this server"),
                headers,
            ),
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

/// Lets the request in (with the rate-limit headers on its answer), or answers `refusal`
/// instead, or refuses it for its rate.
async fn admit(
    decision: Option<RateDecision>,
    request: Request,
    next: Next,
    refusal: Option<Response>,
) -> Response {
    let pass = |request: Request| async move {
        match refusal {
            Some(refusal) => refusal,
            None => next.run(request).await,
        }
    };
    let Some(decision) = decision else {
        return pass(request).await;
    };
    let headers = decision.headers();
    let mut response = if decision.allowed {
        pass(request).await
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
