//! `GET /api/v1/models`: the checkpoints the backends have.

use axum::extract::State;
use axum::response::Response;
use easel_proto::models::v1::ListModelsRequest;
use http::StatusCode;

use super::RestState;
use super::json::{ApiError, json_response};
use super::query::Query;
use crate::context::CallContext;

/// `GET /api/v1/models?pageSize&pageToken`.
pub async fn list(
    State(state): State<RestState>,
    context: CallContext,
    mut query: Query,
) -> Result<Response, ApiError> {
    let request = ListModelsRequest {
        page_size: query.take_u32(&["pageSize", "page_size"])?.unwrap_or(0),
        page_token: query
            .take_string(&["pageToken", "page_token"])?
            .unwrap_or_default(),
    };
    query.finish()?;
    let answer = state.gateway.list_models(&context, request).await?;
    Ok(json_response(StatusCode::OK, &answer))
}
