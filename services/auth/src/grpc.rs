//! `easel.auth.v1.AuthService` and `easel.account.v1.AccountService` over gRPC: thin handlers
//! from proto to [`Auth`] and back, errors mapped once.
//!
//! AccountService calls arrive from the gateway unchanged, with the caller's credential in the
//! metadata (`x-api-key` or `authorization: Bearer`) and the client's address in
//! `x-forwarded-for`: auth authenticates the caller itself on every call.

use std::net::IpAddr;
use std::time::Duration;

use easel_auth_client::Credential;
use easel_proto::account::v1::account_service_server::AccountService;
use easel_proto::account::v1::{
    AccessToken, ApiKey, CreateApiKeyRequest, CreateApiKeyResponse, CreateUserRequest,
    CreateUserResponse, DisableUserRequest, DisableUserResponse, ExchangeTokenRequest,
    ExchangeTokenResponse, GetUsageRequest, GetUsageResponse, ListApiKeysRequest,
    ListApiKeysResponse, LoginRequest, LoginResponse, RevokeApiKeyRequest, RevokeApiKeyResponse,
    SetUserTierRequest, SetUserTierResponse, User,
};
use easel_proto::auth::v1::auth_service_server::AuthService;
use easel_proto::auth::v1::{
    AuthenticateRequest, AuthenticateResponse, GetJwksRequest, GetJwksResponse, RecordUsageRequest,
    RecordUsageResponse,
};
use tonic::{Request, Response, Status};

use crate::account::IssuedToken;
use crate::db::{KeyRow, UserRow};
use crate::error::AuthError;
use crate::model::{role_from_db, tier_from_db, timestamp, timestamp_ms};
use crate::service::{Auth, Caller, scopes_from_db};

/// A key as the API shows it: never its secret or hash.
pub fn key_to_proto(row: &KeyRow) -> ApiKey {
    ApiKey {
        id: row.id.clone(),
        owner: row.owner.clone(),
        name: row.name.clone(),
        prefix: row.prefix.clone(),
        scopes: scopes_from_db(&row.scopes),
        create_time: Some(timestamp_ms(row.created_at_ms)),
        last_used_time: row.last_used_at_ms.map(timestamp_ms),
        expire_time: row.expires_at_ms.map(timestamp_ms),
        revoke_time: row.revoked_at_ms.map(timestamp_ms),
    }
}

/// A user as the API shows it: never the password hash.
pub fn user_to_proto(row: &UserRow) -> User {
    User {
        id: row.id.clone(),
        email: row.email.clone(),
        tier: tier_from_db(row.tier) as i32,
        role: role_from_db(row.role) as i32,
        disabled: row.disabled,
        create_time: Some(timestamp_ms(row.created_at_ms)),
        update_time: Some(timestamp_ms(row.updated_at_ms)),
    }
}

fn access_token(issued: IssuedToken) -> AccessToken {
    AccessToken {
        token: issued.token,
        token_type: "Bearer".to_string(),
        expire_time: Some(timestamp(issued.expires_at)),
    }
}

/// A proto duration a client sent; `None` when unset, INVALID_ARGUMENT when negative or out of
/// range.
fn duration(
    field: &'static str,
    value: Option<&pbjson_types::Duration>,
) -> Result<Option<Duration>, AuthError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let seconds = u64::try_from(value.seconds).ok();
    let nanos = u32::try_from(value.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000);
    match (seconds, nanos) {
        (Some(seconds), Some(nanos)) => Ok(Some(Duration::new(seconds, nanos))),
        _ => Err(AuthError::field(field, "must be a non-negative duration")),
    }
}

/// The client's address: the last `x-forwarded-for` entry (the one the gateway appended), else
/// the connection's peer.
fn client_ip<T>(request: &Request<T>) -> Option<IpAddr> {
    let forwarded = request
        .metadata()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .next_back();
    forwarded.or_else(|| request.remote_addr().map(|address| address.ip()))
}

/// The gRPC face of [`Auth`]: both services share it.
#[derive(Clone, Debug)]
pub struct AuthApi {
    auth: Auth,
}

impl AuthApi {
    /// Serves `auth`.
    pub fn new(auth: Auth) -> Self {
        AuthApi { auth }
    }

    /// Authenticates the caller of an AccountService call from its metadata.
    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let headers = request.metadata().clone().into_headers();
        match Credential::from_headers(&headers) {
            None => Err(AuthError::missing_credential().into()),
            Some(Err(error)) => Err(error.into_status()),
            Some(Ok(credential)) => Ok(self.auth.authenticate(&credential).await?),
        }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn authenticate(
        &self,
        request: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let credential = request
            .credential
            .as_ref()
            .and_then(Credential::from_proto)
            .ok_or_else(AuthError::missing_credential)?;
        let caller = self.auth.authenticate(&credential).await?;
        Ok(Response::new(AuthenticateResponse {
            principal: Some(self.auth.principal(&caller)),
            expire_time: caller.expires_at.map(timestamp),
        }))
    }

    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        Ok(Response::new(GetJwksResponse {
            jwks_json: self.auth.tokens().jwks_json(),
        }))
    }

    async fn record_usage(
        &self,
        request: Request<RecordUsageRequest>,
    ) -> Result<Response<RecordUsageResponse>, Status> {
        let request = request.into_inner();
        self.auth
            .record_usage(
                &request.user_id,
                request.jobs_submitted,
                request.gpu_seconds,
                request.bytes_stored,
            )
            .await?;
        Ok(Response::new(RecordUsageResponse {}))
    }
}

#[tonic::async_trait]
impl AccountService for AuthApi {
    async fn create_api_key(
        &self,
        request: Request<CreateApiKeyRequest>,
    ) -> Result<Response<CreateApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let ttl = duration("ttl", request.ttl.as_ref())?;
        let (row, secret) = self
            .auth
            .create_api_key(&caller, &request.name, &request.scopes, ttl)
            .await?;
        Ok(Response::new(CreateApiKeyResponse {
            api_key: Some(key_to_proto(&row)),
            secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<ListApiKeysRequest>,
    ) -> Result<Response<ListApiKeysResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let page = self
            .auth
            .list_api_keys(&caller, request.page_size, &request.page_token)
            .await?;
        Ok(Response::new(ListApiKeysResponse {
            api_keys: page.keys.iter().map(key_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<RevokeApiKeyRequest>,
    ) -> Result<Response<RevokeApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let row = self.auth.revoke_api_key(&caller, &request.key_id).await?;
        Ok(Response::new(RevokeApiKeyResponse {
            api_key: Some(key_to_proto(&row)),
        }))
    }

    async fn login(
        &self,
        request: Request<LoginRequest>,
    ) -> Result<Response<LoginResponse>, Status> {
        let ip = client_ip(&request);
        let request = request.into_inner();
        let issued = self
            .auth
            .login(&request.email, &request.password, ip)
            .await?;
        Ok(Response::new(LoginResponse {
            access_token: Some(access_token(issued)),
        }))
    }

    async fn exchange_token(
        &self,
        request: Request<ExchangeTokenRequest>,
    ) -> Result<Response<ExchangeTokenResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let ttl = duration("ttl", request.ttl.as_ref())?;
        let issued = self
            .auth
            .exchange_token(&caller, ttl, &request.scopes)
            .await?;
        Ok(Response::new(ExchangeTokenResponse {
            access_token: Some(access_token(issued)),
        }))
    }

    async fn get_usage(
        &self,
        request: Request<GetUsageRequest>,
    ) -> Result<Response<GetUsageResponse>, Status> {
        let caller = self.caller(&request).await?;
        let (days, limits) = self.auth.get_usage(&caller, request.get_ref().days).await?;
        Ok(Response::new(GetUsageResponse {
            days,
            limits: Some(limits),
        }))
    }

    async fn create_user(
        &self,
        request: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let user = self
            .auth
            .create_user(
                &caller,
                &request.email,
                &request.password,
                request.tier,
                request.role,
            )
            .await?;
        Ok(Response::new(CreateUserResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn set_user_tier(
        &self,
        request: Request<SetUserTierRequest>,
    ) -> Result<Response<SetUserTierResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let user = self
            .auth
            .set_user_tier(&caller, &request.user_id, request.tier)
            .await?;
        Ok(Response::new(SetUserTierResponse {
            user: Some(user_to_proto(&user)),
        }))
    }

    async fn disable_user(
        &self,
        request: Request<DisableUserRequest>,
    ) -> Result<Response<DisableUserResponse>, Status> {
        let caller = self.caller(&request).await?;
        let user = self
            .auth
            .disable_user(&caller, &request.get_ref().user_id)
            .await?;
        Ok(Response::new(DisableUserResponse {
            user: Some(user_to_proto(&user)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_ip_is_the_last_forwarded_entry() {
        let mut request = Request::new(());
        request.metadata_mut().insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        assert_eq!(client_ip(&request), "198.51.100.7".parse().ok());
        let mut garbage = Request::new(());
        garbage
            .metadata_mut()
            .insert("x-forwarded-for", "not-an-ip".parse().unwrap());
        assert_eq!(client_ip(&garbage), None);
    }

    #[test]
    fn negative_durations_are_refused() {
        let negative = pbjson_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert!(duration("ttl", Some(&negative)).is_err());
        let fine = pbjson_types::Duration {
            seconds: 60,
            nanos: 5,
        };
        assert_eq!(
            duration("ttl", Some(&fine)).unwrap(),
            Some(Duration::new(60, 5))
        );
        assert_eq!(duration("ttl", None).unwrap(), None);
    }
}
