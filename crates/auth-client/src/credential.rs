//! The caller's credential, as read from `X-API-Key` or `Authorization: Bearer`.

use std::fmt;

use easel_runtime::error::Error;
use http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::reason;

/// The longest credential accepted, in bytes; anything longer is refused before any lookup.
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;

/// The header (and gRPC metadata key) carrying an API key.
const API_KEY_HEADER: &str = "x-api-key";

/// What a caller presented. Its `Debug` shows only the kind, never the secret.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credential {
    /// An API key, `easel_<prefix>_<secret>`, from `X-API-Key`.
    ApiKey(String),
    /// A JWT access token, from `Authorization: Bearer …`.
    Bearer(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey(_) => f.write_str("ApiKey(<redacted>)"),
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

fn malformed(message: &'static str) -> Error {
    Error::unauthenticated(message).with_reason(reason::CREDENTIAL_MALFORMED)
}

/// The one value of `name`, trimmed: `None` when absent, why not when repeated, not visible
/// ASCII, empty or too long.
fn single_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<Result<&'a str, &'static str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return Some(Err("the credential header is repeated"));
    }
    let Ok(value) = first.to_str() else {
        return Some(Err(
            "the credential header has characters outside visible ASCII",
        ));
    };
    let value = value.trim();
    if value.is_empty() {
        return Some(Err("the credential header is empty"));
    }
    if value.len() > MAX_CREDENTIAL_BYTES {
        return Some(Err("the credential is too long"));
    }
    Some(Ok(value))
}

impl Credential {
    /// Reads the credential of a request: `x-api-key: <key>` or `authorization: Bearer <jwt>`.
    ///
    /// `None` when neither is present; an `UNAUTHENTICATED` error (reason
    /// `CREDENTIAL_MALFORMED`) when a header is repeated, empty, not visible ASCII, too long,
    /// uses another scheme than Bearer, or when both are sent. Works on HTTP headers and on
    /// tonic's `MetadataMap::into_headers()`.
    pub fn from_headers(headers: &HeaderMap) -> Option<Result<Credential, Error>> {
        let api_key = single_value(headers, API_KEY_HEADER);
        let authorization = single_value(headers, http::header::AUTHORIZATION.as_str());
        let parsed = match (api_key, authorization) {
            (None, None) => return None,
            (Some(_), Some(_)) => Err("send either X-API-Key or Authorization: Bearer, not both"),
            (Some(key), None) => key.and_then(|key| {
                if key.contains(char::is_whitespace) {
                    Err("an API key has no spaces")
                } else {
                    Ok(Credential::ApiKey(key.to_string()))
                }
            }),
            (None, Some(value)) => value.and_then(parse_bearer),
        };
        Some(parsed.map_err(malformed))
    }

    /// The secret as sent (an API key or a JWT). Never log it.
    pub fn secret(&self) -> &str {
        match self {
            Credential::ApiKey(secret) | Credential::Bearer(secret) => secret,
        }
    }

    /// `"api_key"` or `"bearer"`, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Credential::ApiKey(_) => "api_key",
            Credential::Bearer(_) => "bearer",
        }
    }

    /// SHA-256 of the kind and the secret: what caches key by, so the secret itself is never
    /// kept in memory longer than a request.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.kind().as_bytes());
        hasher.update([0]);
        hasher.update(self.secret().as_bytes());
        hasher.finalize().into()
    }

    /// The credential as auth's `Authenticate` request expects it.
    pub fn to_proto(&self) -> easel_proto::auth::v1::Credential {
        use easel_proto::auth::v1::credential::Kind;
        let kind = match self {
            Credential::ApiKey(key) => Kind::ApiKey(key.clone()),
            Credential::Bearer(token) => Kind::BearerToken(token.clone()),
        };
        easel_proto::auth::v1::Credential { kind: Some(kind) }
    }

    /// The credential of an `Authenticate` request; `None` when it carries none.
    pub fn from_proto(credential: &easel_proto::auth::v1::Credential) -> Option<Credential> {
        use easel_proto::auth::v1::credential::Kind;
        match credential.kind.as_ref()? {
            Kind::ApiKey(key) => Some(Credential::ApiKey(key.clone())),
            Kind::BearerToken(token) => Some(Credential::Bearer(token.clone())),
        }
    }
}

fn parse_bearer(value: &str) -> Result<Credential, &'static str> {
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("the Authorization header must use the Bearer scheme");
    }
    let token = token.trim();
    if token.is_empty() {
        return Err("the Bearer token is empty");
    }
    if token.contains(char::is_whitespace) {
        return Err("a Bearer token has no spaces");
    }
    Ok(Credential::Bearer(token.to_string()))
}

#[cfg(test)]
mod tests {
    use easel_runtime::ErrorCode;
    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn refused(pairs: &[(&'static str, &str)]) -> Error {
        match Credential::from_headers(&headers(pairs)) {
            Some(Err(error)) => error,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn api_keys_and_bearer_tokens_are_read() {
        assert_eq!(
            Credential::from_headers(&headers(&[("x-api-key", " easel_abc_def ")]))
                .unwrap()
                .unwrap(),
            Credential::ApiKey("easel_abc_def".into())
        );
        for value in ["Bearer a.b.c", "bearer a.b.c", "BEARER   a.b.c"] {
            assert_eq!(
                Credential::from_headers(&headers(&[("authorization", value)]))
                    .unwrap()
                    .unwrap(),
                Credential::Bearer("a.b.c".into()),
                "{value}"
            );
        }
        assert!(Credential::from_headers(&HeaderMap::new()).is_none());
    }

    #[test]
    fn malformed_headers_are_refused_with_a_reason() {
        let cases: Vec<Vec<(&'static str, &str)>> = vec![
            vec![("authorization", "Basic dXNlcjpwYXNz")],
            vec![("authorization", "Bearer")],
            vec![("authorization", "Bearer  ")],
            vec![("authorization", "Bearer a b")],
            vec![("x-api-key", "")],
            vec![("x-api-key", "a b")],
            vec![("x-api-key", "a"), ("x-api-key", "b")],
            vec![("x-api-key", "easel_a_b"), ("authorization", "Bearer x")],
        ];
        for case in cases {
            let error = refused(&case);
            assert_eq!(error.code(), ErrorCode::Unauthenticated, "{case:?}");
            assert_eq!(
                error.reason(),
                Some(reason::CREDENTIAL_MALFORMED),
                "{case:?}"
            );
        }
        let long = "x".repeat(MAX_CREDENTIAL_BYTES + 1);
        assert_eq!(
            refused(&[("x-api-key", &long)]).reason(),
            Some(reason::CREDENTIAL_MALFORMED)
        );
        let mut map = HeaderMap::new();
        map.insert(
            "x-api-key",
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert!(matches!(Credential::from_headers(&map), Some(Err(_))));
    }

    #[test]
    fn tonic_metadata_works_too() {
        let mut metadata = tonic::metadata::MetadataMap::new();
        metadata.insert("authorization", "Bearer t.o.k".parse().unwrap());
        let credential = Credential::from_headers(&metadata.into_headers())
            .unwrap()
            .unwrap();
        assert_eq!(credential, Credential::Bearer("t.o.k".into()));
    }

    #[test]
    fn debug_never_shows_the_secret_and_fingerprints_differ_by_kind() {
        let key = Credential::ApiKey("easel_pfx_supersecret".into());
        let bearer = Credential::Bearer("easel_pfx_supersecret".into());
        assert!(!format!("{key:?} {bearer:?}").contains("supersecret"));
        assert_ne!(key.fingerprint(), bearer.fingerprint());
        assert_eq!(key.fingerprint(), key.clone().fingerprint());
        assert_eq!(Credential::from_proto(&key.to_proto()), Some(key));
    }
}
