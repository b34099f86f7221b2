//! What the door learned about a request (who calls, from where, until when) and how it
//! travels to the upstream calls made on its behalf.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use easel_proto::auth::v1::Principal;
use easel_runtime::error::Error;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

/// The request id header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The API key header.
pub const API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// The client address header sent to auth.
pub const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The caller's address, as the door determined it (request extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// When the work for this request must be done (request extension): the server's request
/// timeout, or the caller's shorter `grpc-timeout`.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

/// The authenticated caller (request extension, set by the door).
#[derive(Clone, Debug)]
pub struct Authenticated(pub Arc<Principal>);

/// Everything an upstream call needs from the request that caused it.
#[derive(Clone, Debug, Default)]
pub struct CallContext {
    /// The request id, forwarded so every service logs the same one.
    pub request_id: Option<String>,
    /// The caller's address (forwarded to auth as `x-forwarded-for`).
    pub client_ip: Option<IpAddr>,
    /// The deadline of upstream calls.
    pub deadline: Option<Instant>,
    /// The default timeout when there is no deadline.
    pub default_timeout: Duration,
    /// `x-api-key` and `authorization` as the caller sent them, for auth's account API,
    /// which authenticates callers itself.
    pub credentials: Vec<(HeaderName, HeaderValue)>,
    /// The authenticated caller, when the door authenticated one.
    pub principal: Option<Arc<Principal>>,
}

impl CallContext {
    /// The context of a request from its headers and extensions.
    pub fn from_parts(
        headers: &HeaderMap,
        extensions: &http::Extensions,
        default_timeout: Duration,
    ) -> CallContext {
        let credentials = [API_KEY, http::header::AUTHORIZATION]
            .into_iter()
            .filter_map(|name| {
                headers.get(&name).map(|value| {
                    let mut value = value.clone();
                    value.set_sensitive(true);
                    (name, value)
                })
            })
            .collect();
        CallContext {
            request_id: headers
                .get(REQUEST_ID)
                .and_then(|value| value.to_str().ok())
                .map(str::to_string),
            client_ip: extensions.get::<ClientIp>().map(|ip| ip.0),
            deadline: extensions.get::<Deadline>().map(|deadline| deadline.0),
            default_timeout,
            credentials,
            principal: extensions
                .get::<Authenticated>()
                .map(|caller| caller.0.clone()),
        }
    }

    /// The context of a gRPC call.
    pub fn from_grpc<T>(request: &tonic::Request<T>, default_timeout: Duration) -> CallContext {
        CallContext::from_parts(
            request.metadata().as_ref(),
            request.extensions(),
            default_timeout,
        )
    }

    /// The authenticated caller; the door lets no request without one reach a handler that
    /// needs one, so a missing caller is a wiring error reported as UNAUTHENTICATED.
    pub fn principal(&self) -> Result<Principal, Error> {
        self.principal
            .as_deref()
            .cloned()
            .ok_or_else(|| Error::unauthenticated("no authenticated caller"))
    }

    /// The time left for an upstream call.
    pub fn timeout(&self) -> Duration {
        match self.deadline {
            Some(deadline) => deadline
                .saturating_duration_since(Instant::now())
                .min(self.default_timeout)
                .max(Duration::from_millis(1)),
            None => self.default_timeout,
        }
    }

    /// An upstream request carrying the request id and the deadline.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout());
        if let Some(id) = &self.request_id
            && let Ok(value) = id.parse()
        {
            request.metadata_mut().insert("x-request-id", value);
        }
        request
    }

    /// An upstream request for a stream: the request id, no deadline beyond the stream's own
    /// life (the server bounds only the time to its first answer).
    pub fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.request(message);
        // A day: streams end at a terminal status or when either side shuts down.
        request.set_timeout(Duration::from_secs(24 * 3600));
        request
    }

    /// An upstream request to auth's account API, which authenticates the caller itself: the
    /// caller's credentials and address travel with it.
    pub fn forwarded_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = self.request(message);
        let headers = request.metadata_mut();
        for (name, value) in &self.credentials {
            if let (Ok(key), Ok(value)) = (
                AsciiMetadataKey::from_bytes(name.as_str().as_bytes()),
                AsciiMetadataValue::try_from(value.as_bytes()),
            ) {
                headers.insert(key, value);
            }
        }
        if let Some(ip) = self.client_ip
            && let Ok(value) = ip.to_string().parse()
        {
            headers.insert("x-forwarded-for", value);
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_the_client_address_are_forwarded_to_auth_only() {
        let mut headers = HeaderMap::new();
        headers.insert(API_KEY, HeaderValue::from_static("easel_abc_secret"));
        headers.insert(REQUEST_ID, HeaderValue::from_static("req-7"));
        let mut extensions = http::Extensions::new();
        extensions.insert(ClientIp("203.0.113.9".parse().unwrap()));
        let context = CallContext::from_parts(&headers, &extensions, Duration::from_secs(5));

        let plain = context.request(());
        assert!(plain.metadata().get("x-api-key").is_none());
        assert_eq!(plain.metadata().get("x-request-id").unwrap(), "req-7");

        let forwarded = context.forwarded_request(());
        assert_eq!(
            forwarded.metadata().get("x-api-key").unwrap(),
            "easel_abc_secret"
        );
        assert_eq!(
            forwarded.metadata().get("x-forwarded-for").unwrap(),
            "203.0.113.9"
        );
        assert!(context.principal().is_err());
    }

    #[test]
    fn the_timeout_is_the_shorter_of_the_deadline_and_the_default() {
        let context = CallContext {
            deadline: Some(Instant::now() + Duration::from_secs(60)),
            default_timeout: Duration::from_secs(5),
            ..CallContext::default()
        };
        assert!(context.timeout() <= Duration::from_secs(5));
        let short = CallContext {
            deadline: Some(Instant::now() + Duration::from_millis(200)),
            default_timeout: Duration::from_secs(5),
            ..CallContext::default()
        };
        assert!(short.timeout() <= Duration::from_millis(200));
    }
}
