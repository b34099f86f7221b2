//! The authorization table: what the door requires of each request before it reaches a
//! handler, for every protocol.
//!
//! - gRPC and gRPC-web: [`GRPC_METHODS`], every public method by its path.
//! - REST, the WebSocket and the Server-Sent Events: the route records of
//!   [`crate::routes::ROUTES`], each carrying its [`Access`] beside its handler and its
//!   documentation (so `/openapi.json` documents the same scopes the door checks, and the
//!   router serves exactly the routes the door knows). A REST route and the gRPC method it
//!   maps need the same (a test holds them together).
//!
//! A request that matches nothing in the table never reaches a handler: the door still asks
//! for a credential (401 without one), then answers 404 (405 for a known path with another
//! method, UNIMPLEMENTED over gRPC) itself. A route added to a router but not to the table is
//! therefore refused, not open.

use easel_auth_client::Scope;
use http::Method;

use crate::routes::ROUTES;

/// What the door requires of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, metrics, the JWKS, the OpenAPI document, signed downloads (the link's
    /// signature is the credential, checked by storage), gRPC health and reflection.
    Public,
    /// Anyone, limited per client address: password login.
    PerAddress,
    /// Any valid credential, whatever its scopes: token exchange, whose token never carries
    /// more than the key it came from.
    Credential,
    /// A credential carrying this scope, limited per user by tier.
    Scope(Scope),
}

impl Access {
    /// Whether a credential is needed.
    pub fn needs_credential(self) -> bool {
        matches!(self, Access::Credential | Access::Scope(_))
    }

    /// The scope needed, if any.
    pub fn scope(self) -> Option<Scope> {
        match self {
            Access::Scope(scope) => Some(scope),
            _ => None,
        }
    }
}

/// One public gRPC method and what it needs.
#[derive(Clone, Copy, Debug)]
pub struct GrpcMethod {
    /// `/package.Service/Method`.
    pub path: &'static str,
    /// What the door requires.
    pub access: Access,
}

const fn method(path: &'static str, access: Access) -> GrpcMethod {
    GrpcMethod { path, access }
}

/// Every gRPC method the public port serves.
pub const GRPC_METHODS: &[GrpcMethod] = &[
    method(
        "/easel.jobs.v1.JobService/SubmitJob",
        Access::Scope(Scope::JobsWrite),
    ),
    method(
        "/easel.jobs.v1.JobService/GetJob",
        Access::Scope(Scope::JobsRead),
    ),
    method(
        "/easel.jobs.v1.JobService/ListJobs",
        Access::Scope(Scope::JobsRead),
    ),
    method(
        "/easel.jobs.v1.JobService/CancelJob",
        Access::Scope(Scope::JobsWrite),
    ),
    method(
        "/easel.jobs.v1.JobService/WatchJob",
        Access::Scope(Scope::JobsRead),
    ),
    method(
        "/easel.models.v1.ModelService/ListModels",
        Access::Scope(Scope::JobsRead),
    ),
    method(
        "/easel.account.v1.AccountService/CreateApiKey",
        Access::Scope(Scope::KeysWrite),
    ),
    method(
        "/easel.account.v1.AccountService/ListApiKeys",
        Access::Scope(Scope::KeysRead),
    ),
    method(
        "/easel.account.v1.AccountService/RevokeApiKey",
        Access::Scope(Scope::KeysWrite),
    ),
    method(LOGIN_GRPC_PATH, Access::PerAddress),
    method(
        "/easel.account.v1.AccountService/ExchangeToken",
        Access::Credential,
    ),
    method(
        "/easel.account.v1.AccountService/GetUsage",
        Access::Scope(Scope::UsageRead),
    ),
    method(
        "/easel.account.v1.AccountService/CreateUser",
        Access::Scope(Scope::Admin),
    ),
    method(
        "/easel.account.v1.AccountService/SetUserTier",
        Access::Scope(Scope::Admin),
    ),
    method(
        "/easel.account.v1.AccountService/DisableUser",
        Access::Scope(Scope::Admin),
    ),
    method("/grpc.health.v1.Health/Check", Access::Public),
    method("/grpc.health.v1.Health/Watch", Access::Public),
    method(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        Access::Public,
    ),
    method(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        Access::Public,
    ),
];

/// The login RPC's path.
pub const LOGIN_GRPC_PATH: &str = "/easel.account.v1.AccountService/Login";

/// The REST path of password login.
pub const LOGIN_PATH: &str = "/api/v1/auth/login";

/// What the table says about a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// A route or method of the table.
    Listed(Access),
    /// A REST path the table has, but not for this method; the methods it takes.
    OtherMethods(Vec<Method>),
    /// Nothing the gateway serves.
    Unlisted,
}

/// The table's rule for a request.
pub fn rule_of(method: &Method, path: &str, grpc: bool) -> Rule {
    if grpc {
        return GRPC_METHODS
            .iter()
            .find(|entry| entry.path == path)
            .map_or(Rule::Unlisted, |entry| Rule::Listed(entry.access));
    }
    // HEAD is answered by the GET handler.
    let wanted = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let mut others = Vec::new();
    for route in ROUTES.iter().filter(|route| path_matches(route.path, path)) {
        let route_method = route.method.method();
        if route_method == *wanted {
            return Rule::Listed(route.access);
        }
        if !others.contains(&route_method) {
            others.push(route_method);
        }
    }
    if others.is_empty() {
        Rule::Unlisted
    } else {
        Rule::OtherMethods(others)
    }
}

/// Whether `path` is an instance of the documented `template`: literal segments are equal,
/// `{name}` stands for one non-empty segment, `{name}:action` for one that ends in `:action`
/// after a non-empty id.
fn path_matches(template: &str, path: &str) -> bool {
    let mut wanted = template.split('/');
    let mut given = path.split('/');
    loop {
        match (wanted.next(), given.next()) {
            (None, None) => return true,
            (Some(pattern), Some(segment)) if segment_matches(pattern, segment) => {}
            _ => return false,
        }
    }
}

fn segment_matches(pattern: &str, segment: &str) -> bool {
    let Some(rest) = pattern.strip_prefix('{') else {
        return pattern == segment;
    };
    match rest.split_once('}') {
        Some((_, "")) => !segment.is_empty(),
        Some((_, suffix)) => segment
            .strip_suffix(suffix)
            .is_some_and(|id| !id.is_empty()),
        None => false,
    }
}

/// Whether a request may carry its credential as `?access_token=`: it goes to a route that
/// documents the parameter (see [`crate::routes::Route::takes_query_token`]).
pub fn allows_query_token(method: &Method, path: &str) -> bool {
    ROUTES.iter().any(|route| {
        route.takes_query_token()
            && route.method.method() == method
            && path_matches(route.path, path)
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn listed(method: &Method, path: &str, grpc: bool) -> Access {
        match rule_of(method, path, grpc) {
            Rule::Listed(access) => access,
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn routes_get_their_access_rule() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(listed(&get, "/healthz", false), Access::Public);
        assert_eq!(listed(&get, "/v1/artifacts/art_1", false), Access::Public);
        assert_eq!(listed(&post, LOGIN_PATH, false), Access::PerAddress);
        assert_eq!(
            listed(&post, "/api/v1/jobs", false),
            Access::Scope(Scope::JobsWrite)
        );
        assert_eq!(
            listed(&get, "/api/v1/jobs", false),
            Access::Scope(Scope::JobsRead)
        );
        assert_eq!(
            listed(&Method::HEAD, "/api/v1/jobs/job_1", false),
            Access::Scope(Scope::JobsRead)
        );
        assert_eq!(
            listed(&post, "/api/v1/jobs/job_1:cancel", false),
            Access::Scope(Scope::JobsWrite)
        );
        assert_eq!(
            listed(&get, "/api/v1/jobs/job_1/events", false),
            Access::Scope(Scope::JobsRead)
        );
        assert_eq!(
            listed(&get, "/ws/jobs/job_1", false),
            Access::Scope(Scope::JobsRead)
        );
        assert_eq!(
            listed(&post, "/api/v1/admin/users/usr_1:disable", false),
            Access::Scope(Scope::Admin)
        );
        assert_eq!(
            listed(&post, "/api/v1/auth/token", false),
            Access::Credential
        );
        assert_eq!(
            listed(&post, "/grpc.health.v1.Health/Check", true),
            Access::Public
        );
        assert_eq!(listed(&post, LOGIN_GRPC_PATH, true), Access::PerAddress);
        assert_eq!(
            listed(&post, "/easel.jobs.v1.JobService/GetJob", true),
            Access::Scope(Scope::JobsRead)
        );
    }

    #[test]
    fn what_the_table_lacks_is_not_listed() {
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(rule_of(&get, "/nowhere", false), Rule::Unlisted);
        assert_eq!(rule_of(&get, "/api/v1/jobs/", false), Rule::Unlisted);
        assert_eq!(rule_of(&get, "//api/v1/jobs", false), Rule::Unlisted);
        assert_eq!(rule_of(&get, "/api/v1/jobs/a/b", false), Rule::Unlisted);
        // An action that does not exist, or has no id.
        assert_eq!(
            rule_of(&post, "/api/v1/jobs/job_1:delete", false),
            Rule::OtherMethods(vec![Method::GET])
        );
        assert_eq!(
            rule_of(&post, "/api/v1/jobs/:cancel", false),
            Rule::OtherMethods(vec![Method::GET])
        );
        assert_eq!(
            rule_of(&Method::DELETE, "/api/v1/jobs", false),
            Rule::OtherMethods(vec![Method::POST, Method::GET])
        );
        // A REST path sent as gRPC, and an unknown method of a known service.
        assert_eq!(rule_of(&post, "/healthz", true), Rule::Unlisted);
        assert_eq!(
            rule_of(&post, "/easel.jobs.v1.JobService/DeleteJob", true),
            Rule::Unlisted
        );
        assert_eq!(
            rule_of(&post, "/easel.jobs.v1.JobService/SubmitJob/", true),
            Rule::Unlisted
        );
    }

    #[test]
    fn every_documented_route_resolves_to_its_own_rule() {
        for route in ROUTES {
            let path = route.path.replace("{id}", "x_1");
            assert_eq!(
                rule_of(&route.method.method(), &path, false),
                Rule::Listed(route.access),
                "{} {}",
                route.method,
                route.path
            );
        }
    }

    #[test]
    fn routes_sharing_a_router_path_and_method_need_the_same() {
        // The REST router dispatches `{id}:action` routes by router path; the door matches the
        // documented path. Both must reach the same rule whichever way a request is read.
        for route in ROUTES {
            for other in ROUTES {
                if route.router_path() == other.router_path() && route.method == other.method {
                    assert_eq!(
                        route.access, other.access,
                        "{} {}",
                        route.method, route.path
                    );
                }
            }
        }
    }

    #[test]
    fn rest_routes_need_what_their_grpc_methods_need() {
        // REST operation ids that name a gRPC method (submitJob ↔ SubmitJob), and the streams.
        let twin_of = |operation_id: &str| -> Option<String> {
            let name = match operation_id {
                "streamJobEvents" | "watchJobWebSocket" => "watchJob",
                other => other,
            };
            let mut chars = name.chars();
            let first = chars.next()?.to_ascii_uppercase();
            let method = format!("{first}{}", chars.as_str());
            GRPC_METHODS
                .iter()
                .find(|entry| entry.path.ends_with(&format!("/{method}")))
                .map(|entry| entry.path.to_string())
        };
        let mut twins = BTreeSet::new();
        for route in ROUTES {
            if let Some(path) = twin_of(route.operation_id) {
                assert_eq!(
                    listed(&Method::POST, &path, true),
                    route.access,
                    "{} vs {path}",
                    route.operation_id
                );
                twins.insert(path);
            }
        }
        // Every easel method has a REST twin.
        for entry in GRPC_METHODS {
            if entry.path.starts_with("/easel.") {
                assert!(
                    twins.contains(entry.path),
                    "{} has no REST route",
                    entry.path
                );
            }
        }
    }

    #[test]
    fn every_scope_guards_something() {
        for scope in Scope::ALL {
            assert!(
                GRPC_METHODS
                    .iter()
                    .any(|entry| entry.access == Access::Scope(scope)),
                "{scope}"
            );
        }
    }

    #[test]
    fn only_job_streams_take_a_query_token() {
        assert!(allows_query_token(&Method::GET, "/ws/jobs/job_1"));
        assert!(allows_query_token(
            &Method::GET,
            "/api/v1/jobs/job_1/events"
        ));
        assert!(!allows_query_token(&Method::GET, "/api/v1/jobs/job_1"));
        assert!(!allows_query_token(&Method::POST, "/ws/jobs/job_1"));
        assert!(!allows_query_token(&Method::GET, "/ws/jobs/"));
        assert!(!allows_query_token(&Method::GET, "/ws/jobs/a/b"));
    }
}
