//! `/.well-known/jwks.json`, fetched from auth's `GetJwks` and cached: one upstream call per
//! cache period however many clients ask, and the last good answer served while auth is down.

use std::time::Duration;

use bytes::Bytes;
use easel_proto::auth::v1::GetJwksRequest;
use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_runtime::error::Error;
use easel_runtime::grpc::GrpcChannel;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::context::CallContext;

/// The JWKS cache.
#[derive(Debug)]
pub struct JwksCache {
    auth: AuthServiceClient<GrpcChannel>,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Bytes)>>,
}

impl JwksCache {
    /// A cache over `auth` keeping answers for `ttl`.
    pub fn new(auth: AuthServiceClient<GrpcChannel>, ttl: Duration) -> JwksCache {
        JwksCache {
            auth,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The key set and how long clients may cache it. Callers arriving while one fetch is in
    /// flight wait for it rather than fetching again.
    pub async fn get(&self, context: &CallContext) -> Result<(Bytes, Duration), Error> {
        let mut cached = self.cached.lock().await;
        if let Some((fetched, body)) = cached.as_ref()
            && fetched.elapsed() < self.ttl
        {
            return Ok((body.clone(), self.ttl.saturating_sub(fetched.elapsed())));
        }
        match self.fetch(context).await {
            Ok(body) => {
                *cached = Some((Instant::now(), body.clone()));
                Ok((body, self.ttl))
            }
            Err(error) => match cached.as_ref() {
                Some((_, stale)) => {
                    tracing::warn!(cause = %error, "auth did not answer GetJwks; serving the cached key set");
                    Ok((stale.clone(), Duration::ZERO))
                }
                None => Err(error),
            },
        }
    }

    async fn fetch(&self, context: &CallContext) -> Result<Bytes, Error> {
        let answer = self
            .auth
            .clone()
            .get_jwks(context.request(GetJwksRequest {}))
            .await?
            .into_inner();
        // Check it is JSON before serving it as such.
        serde_json::from_str::<serde_json::Value>(&answer.jwks_json).map_err(|error| {
            Error::internal(error).with_reason(easel_runtime::error::reason::INVALID_JWKS)
        })?;
        Ok(Bytes::from(answer.jwks_json))
    }
}
