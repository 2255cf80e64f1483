//! `/`, `/healthz`, `/readyz`, `/metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::AppState;

/// `GET /`: what this service is and where its endpoints are (upstream's descriptor).
pub async fn descriptor() -> impl IntoResponse {
    Json(json!({
        "service": "openova-flow-server",
        "description": "openova-flow event router: POST FlowMessages, read snapshots, follow SSE streams with Last-Event-ID resume",
        "implementation": "flow-server (Rust)",
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "https://docs.openova.io/openova-flow",
        "endpoints": {
            "ingest": "POST /v1/flows/{flowId}/events",
            "snapshot": "GET /v1/flows/{flowId}/snapshot",
            "stream": "GET /v1/flows/{flowId}/stream",
            "delete": "DELETE /v1/flows/{flowId}",
            "healthz": "GET /healthz",
            "readyz": "GET /readyz",
            "metrics": "GET /metrics"
        }
    }))
}

/// `/healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `/readyz`: 503 while draining or while the backend is unavailable.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    if state.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !state.backend().ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "backend unavailable\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}

/// `GET /metrics`: OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
}
