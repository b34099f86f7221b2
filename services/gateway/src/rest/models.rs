//! `GET /api/v1/models`: the checkpoints the backends have.

use axum::extract::State;
use axum::response::Response;
use easel_proto::models::v1::ListModelsRequest;
use http::StatusCode;

use super::RestState;
use super::json::{ApiError, snake_response};
use super::query::Query;
use crate::context::CallContext;

/// `GET /api/v1/models?page_size&page_token`.
pub async fn list(
    State(state): State<RestState>,
    context: CallContext,
    mut query: Query,
) -> Result<Response, ApiError> {
    let request = ListModelsRequest {
        page_size: query.take_u32(&["page_size", "pageSize"])?.unwrap_or(0),
        page_token: query
            .take_string(&["page_token", "pageToken"])?
            .unwrap_or_default(),
    };
    query.finish()?;
    let answer = state.gateway.list_models(&context, request).await?;
    Ok(snake_response(StatusCode::OK, &answer))
}
