//! `POST /v1/flows/{flowId}/events` → 200 `{"seq":N}`; `DELETE /v1/flows/{flowId}` → 204.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use crate::AppState;
use crate::auth::Access;
use crate::error::{ApiError, FlowJson};
use crate::routes::{authorize, flow_id};

/// Validates the FlowMessage (our extractor: 415, 413, 400 with the field), checks it belongs to
/// the URL's flow, appends it and answers its seq.
pub async fn ingest(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<FlowJson, ApiError>,
) -> Result<Json<Value>, ApiError> {
    let result: Result<Json<Value>, ApiError> = async {
        let flow = flow_id(path)?;
        authorize(&state, Access::Ingest, &headers, None)?;
        let FlowJson { message, json } = body?;
        message
            .check_flow_id(&flow)
            .map_err(|e| ApiError::contract(&e))?;
        let seq = state
            .backend()
            .append(state.hub(), &flow, message, json)
            .await?;
        Ok(Json(json!({ "seq": seq })))
    }
    .await;
    if let Err(e) = &result {
        state.metrics().rejected(e.code);
        tracing::debug!(code = e.code, field = ?e.field, "event refused");
    }
    result
}

/// Deletes the flow (idempotent) and ends every stream on it.
pub async fn delete(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let flow = flow_id(path)?;
    authorize(&state, Access::Ingest, &headers, None)?;
    state.backend().delete(state.hub(), &flow).await?;
    tracing::info!(flow, "flow deleted");
    Ok(StatusCode::NO_CONTENT)
}
