//! Who may call what: the routes open to anyone, login (limited per client address), and the
//! rest (an authenticated caller, limited per user by tier).

use http::Method;

use crate::grpc;

/// What the door requires of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone: probes, metrics, the JWKS, the OpenAPI document, signed downloads (the link's
    /// signature is the credential, checked by storage), gRPC health and reflection.
    Public,
    /// Anyone, limited per client address: password login.
    PerAddress,
    /// An authenticated caller, limited per user by tier.
    User,
}

/// The REST path of password login.
pub const LOGIN_PATH: &str = "/api/v1/auth/login";

impl Access {
    /// The access rule of a request.
    pub fn of(method: &Method, path: &str, grpc: bool) -> Access {
        if grpc {
            return if grpc::is_public_path(path) {
                Access::Public
            } else if path == grpc::LOGIN_PATH {
                Access::PerAddress
            } else {
                Access::User
            };
        }
        match path {
            "/healthz" | "/readyz" | "/metrics" | "/openapi.json" | "/.well-known/jwks.json" => {
                Access::Public
            }
            LOGIN_PATH if method == Method::POST => Access::PerAddress,
            _ if path.starts_with("/v1/artifacts/") => Access::Public,
            _ => Access::User,
        }
    }
}

/// Whether a request may carry its credential as `?access_token=`: the job streams, which
/// browsers open with `WebSocket` and `EventSource`, neither of which can set headers.
pub fn allows_query_token(method: &Method, path: &str) -> bool {
    method == Method::GET
        && ((path.starts_with("/ws/jobs/") && path.len() > "/ws/jobs/".len())
            || (path.starts_with("/api/v1/jobs/") && path.ends_with("/events")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_get_their_access_rule() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(Access::of(&get, "/healthz", false), Access::Public);
        assert_eq!(
            Access::of(&get, "/v1/artifacts/art_1", false),
            Access::Public
        );
        assert_eq!(Access::of(&post, LOGIN_PATH, false), Access::PerAddress);
        assert_eq!(Access::of(&get, LOGIN_PATH, false), Access::User);
        assert_eq!(Access::of(&get, "/api/v1/jobs", false), Access::User);
        assert_eq!(Access::of(&get, "/nowhere", false), Access::User);
        assert_eq!(
            Access::of(&post, "/grpc.health.v1.Health/Check", true),
            Access::Public
        );
        assert_eq!(
            Access::of(&post, grpc::LOGIN_PATH, true),
            Access::PerAddress
        );
        assert_eq!(
            Access::of(&post, "/easel.jobs.v1.JobService/GetJob", true),
            Access::User
        );
        // A REST path sent as gRPC is not public.
        assert_eq!(Access::of(&post, "/healthz", true), Access::User);
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
    }
}
