//! `GET /v1/flows/{flowId}/snapshot`: the materialised state as a `snapshot` FlowMessage.
//!
//! 404 when the flow has no instance, node or relationship (upstream's rule). The seq the
//! snapshot reflects is in the `X-Flow-Seq` header: opening the stream with
//! `?lastEventId=<that seq>` then yields exactly the events after the snapshot.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::ApiError;
use crate::routes::readable_flow;

/// Header carrying the snapshot's seq.
pub const SEQ_HEADER: &str = "x-flow-seq";

/// The handler.
pub async fn snapshot(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let flow = readable_flow(&state, path, query.as_deref(), &headers)?;
    let Some(f) = state.hub().get(&flow) else {
        return Err(ApiError::not_found(format!("flow {flow:?} not found")));
    };
    let snap = f.snapshot(state.metrics());
    if snap.empty {
        return Err(ApiError::not_found(format!("flow {flow:?} not found")));
    }
    let mut resp = snap.json.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(SEQ_HEADER, HeaderValue::from(snap.seq));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
