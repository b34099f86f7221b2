//! What the door establishes about a request before anything else looks at it: a clean
//! request id, the client's address and the request's deadline.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use easel_runtime::grpc::layers::parse_grpc_timeout;
use tokio::time::Instant;

use super::Door;
use crate::context::{ClientIp, Deadline, FORWARDED_FOR, REQUEST_ID};

/// The longest request id accepted from a caller.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Drops a caller's `X-Request-ID` unless it is a plain token (letters, digits, `-_.:`, at
/// most 128 characters), so ids are safe to log and to echo; the next layer makes a new one.
pub async fn sanitize_request_id(mut request: Request) -> Request {
    let acceptable = request
        .headers()
        .get(REQUEST_ID)
        .map(|value| is_plain_token(value.as_bytes()));
    if acceptable == Some(false) {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

fn is_plain_token(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:".contains(byte))
}

/// Records the client's address ([`ClientIp`]) and the request's deadline ([`Deadline`]: the
/// server's request timeout, or the caller's shorter `grpc-timeout`).
pub async fn request_facts(
    State(door): State<Arc<Door>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let forwarded = door
        .trust_forwarded_for
        .then(|| last_forwarded_for(request.headers()))
        .flatten();
    if let Some(ip) = forwarded.or(peer) {
        request.extensions_mut().insert(ClientIp(ip));
    }
    if let Some(timeout) = request
        .headers()
        .get("grpc-timeout")
        .and_then(|value| value.to_str().ok())
        .and_then(parse_grpc_timeout)
    {
        request
            .extensions_mut()
            .insert(Deadline(Instant::now() + timeout));
    }
    next.run(request).await
}

/// The last `X-Forwarded-For` entry: the address the nearest (trusted) proxy saw.
fn last_forwarded_for(headers: &http::HeaderMap) -> Option<IpAddr> {
    headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .next_back()
        .and_then(|entry| entry.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_must_be_plain_tokens() {
        assert!(is_plain_token(b"req-123_abc.def:9"));
        assert!(!is_plain_token(b""));
        assert!(!is_plain_token(b"has space"));
        assert!(!is_plain_token(b"new\nline"));
        assert!(!is_plain_token(&[b'a'; 129]));
    }

    #[test]
    fn the_last_forwarded_address_is_the_proxys_view() {
        let mut headers = http::HeaderMap::new();
        headers.append(FORWARDED_FOR, "198.51.100.1, 203.0.113.7".parse().unwrap());
        assert_eq!(
            last_forwarded_for(&headers),
            Some("203.0.113.7".parse().unwrap())
        );
        headers.append(FORWARDED_FOR, "192.0.2.4".parse().unwrap());
        assert_eq!(
            last_forwarded_for(&headers),
            Some("192.0.2.4".parse().unwrap())
        );
    }
}
