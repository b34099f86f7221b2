//! API keys, login, token exchange, usage and user administration, forwarded to auth.

use axum::extract::{Request, State};
use axum::response::Response;
use easel_proto::account::v1::{
    CreateApiKeyRequest, CreateUserRequest, DisableUserRequest, ExchangeTokenRequest,
    GetUsageRequest, ListApiKeysRequest, LoginRequest, RevokeApiKeyRequest, SetUserTierRequest,
};
use easel_runtime::error::Error;
use http::{HeaderValue, StatusCode, header};
use serde::Serialize;

use super::RestState;
use super::actions::Target;
use super::json::{ApiError, OptionalProtoJson, ProtoJson, json_body, parse_json, snake_response};
use super::query::Query;
use crate::context::CallContext;

/// An answer that holds a secret (a key, a token): never cached.
fn secret_response<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = snake_response(status, value);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /api/v1/keys`: 201 with the key and, this once, its secret.
pub async fn create_key(
    State(state): State<RestState>,
    context: CallContext,
    ProtoJson(request): ProtoJson<CreateApiKeyRequest>,
) -> Result<Response, ApiError> {
    let answer = state.gateway.create_api_key(&context, request).await?;
    Ok(secret_response(StatusCode::CREATED, &answer))
}

/// `GET /api/v1/keys?page_size&page_token`.
pub async fn list_keys(
    State(state): State<RestState>,
    context: CallContext,
    mut query: Query,
) -> Result<Response, ApiError> {
    let request = ListApiKeysRequest {
        page_size: query.take_u32(&["page_size", "pageSize"])?.unwrap_or(0),
        page_token: query
            .take_string(&["page_token", "pageToken"])?
            .unwrap_or_default(),
    };
    query.finish()?;
    let answer = state.gateway.list_api_keys(&context, request).await?;
    Ok(snake_response(StatusCode::OK, &answer))
}

/// `POST /api/v1/keys/{id}:revoke`.
pub async fn revoke_key(
    State(state): State<RestState>,
    context: CallContext,
    Target(key_id): Target,
) -> Result<Response, ApiError> {
    let answer = state
        .gateway
        .revoke_api_key(&context, RevokeApiKeyRequest { key_id })
        .await?;
    Ok(snake_response(StatusCode::OK, &answer))
}

/// `POST /api/v1/auth/login`: an access token for an email and password.
pub async fn login(
    State(state): State<RestState>,
    context: CallContext,
    ProtoJson(request): ProtoJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let answer = state.gateway.login(&context, request).await?;
    Ok(secret_response(StatusCode::OK, &answer))
}

/// `POST /api/v1/auth/token`: an access token for the calling API key (body optional).
pub async fn exchange_token(
    State(state): State<RestState>,
    context: CallContext,
    OptionalProtoJson(request): OptionalProtoJson<ExchangeTokenRequest>,
) -> Result<Response, ApiError> {
    let answer = state.gateway.exchange_token(&context, request).await?;
    Ok(secret_response(StatusCode::OK, &answer))
}

/// `GET /api/v1/usage?days`.
pub async fn usage(
    State(state): State<RestState>,
    context: CallContext,
    mut query: Query,
) -> Result<Response, ApiError> {
    let request = GetUsageRequest {
        days: query.take_u32(&["days"])?.unwrap_or(0),
    };
    query.finish()?;
    let answer = state.gateway.get_usage(&context, request).await?;
    Ok(snake_response(StatusCode::OK, &answer))
}

/// `POST /api/v1/admin/users` (admin): 201 with the user.
pub async fn create_user(
    State(state): State<RestState>,
    context: CallContext,
    ProtoJson(request): ProtoJson<CreateUserRequest>,
) -> Result<Response, ApiError> {
    let answer = state.gateway.create_user(&context, request).await?;
    Ok(snake_response(StatusCode::CREATED, &answer))
}

/// `POST /api/v1/admin/users/{id}:setTier` (admin), body `{"tier": "TIER_PRO"}`.
pub async fn set_user_tier(
    State(state): State<RestState>,
    context: CallContext,
    Target(user_id): Target,
    request: Request,
) -> Result<Response, ApiError> {
    let body = json_body(request, &state, false).await?;
    let mut request: SetUserTierRequest = parse_json(&body)?;
    if !request.user_id.is_empty() && request.user_id != user_id {
        return Err(ApiError(Error::invalid_field(
            "userId",
            "differs from the user in the path",
        )));
    }
    request.user_id = user_id;
    let answer = state.gateway.set_user_tier(&context, request).await?;
    Ok(snake_response(StatusCode::OK, &answer))
}

/// `POST /api/v1/admin/users/{id}:disable` (admin).
pub async fn disable_user(
    State(state): State<RestState>,
    context: CallContext,
    Target(user_id): Target,
) -> Result<Response, ApiError> {
    let answer = state
        .gateway
        .disable_user(&context, DisableUserRequest { user_id })
        .await?;
    Ok(snake_response(StatusCode::OK, &answer))
}
