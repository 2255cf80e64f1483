//! The router: upstream's routes and status codes, our JSON error shape everywhere.
//!
//! | route | handler |
//! |---|---|
//! | `GET /` | descriptor |
//! | `/healthz`, `/readyz`, `GET /metrics` | [`health`] |
//! | `POST /v1/flows/{flowId}/events` | [`ingest`] (ingest token) |
//! | `GET /v1/flows/{flowId}/snapshot` | [`snapshot`] (read token) |
//! | `GET /v1/flows/{flowId}/stream` | [`stream`] (read token) |
//! | `DELETE /v1/flows/{flowId}` (also with a trailing `/`) | [`ingest::delete`] (ingest token) |
//!
//! Other paths are 404 and other methods on these paths 405, both as JSON errors. Layers: panics
//! become 500 (nothing a client sends may take the server down), a request-body limit of 1 MiB
//! (413) and a timeout for producing a response (streams are not cut: the timeout ends when the
//! response head is sent).

pub mod health;
pub mod ingest;
pub mod snapshot;
pub mod stream;

use axum::Router;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

use crate::AppState;
use crate::auth::{Access, bearer};
use crate::error::{ApiError, MAX_BODY};

/// Longest accepted flow id, in bytes.
pub const MAX_FLOW_ID: usize = 512;

/// The router for `state`.
pub fn app(state: AppState) -> Router {
    let timeout = state.request_timeout();
    Router::new()
        .route("/", get(health::descriptor))
        .route("/healthz", any(health::healthz))
        .route("/readyz", any(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/v1/flows/{flow_id}/events", post(ingest::ingest))
        .route("/v1/flows/{flow_id}/snapshot", get(snapshot::snapshot))
        .route("/v1/flows/{flow_id}/stream", get(stream::stream))
        .route("/v1/flows/{flow_id}", delete(ingest::delete))
        .route("/v1/flows/{flow_id}/", delete(ingest::delete))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(RequestBodyLimitLayer::new(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        .layer(middleware::from_fn(json_errors))
        .layer(CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal("a handler panicked").into_response()
            },
        ))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed",
    )
}

/// Gives the responses of tower layers (413 from the body limit, 408 from the timeout) and of
/// axum's own rejections our JSON error shape.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return resp;
    }
    let (code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => return ApiError::too_large().into_response(),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed"),
        StatusCode::NOT_FOUND => ("not_found", "not found"),
        s if s.is_server_error() => ("internal", "internal error"),
        _ => ("bad_request", "bad request"),
    };
    ApiError::new(status, code, message).into_response()
}

/// The `{flowId}` of the path, checked: non-empty, at most [`MAX_FLOW_ID`] bytes.
pub fn flow_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let bad = |m: &str| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_flow_id", m.to_owned()).with_field("flowId")
    };
    let Path(id) = path.map_err(|e| bad(&e.body_text()))?;
    if id.is_empty() {
        return Err(bad("the flow id is empty"));
    }
    if id.len() > MAX_FLOW_ID {
        return Err(bad(&format!(
            "the flow id is longer than {MAX_FLOW_ID} bytes"
        )));
    }
    Ok(id)
}

/// Checks the token for `access`: `Authorization: Bearer`, or for reads also `?access_token=`.
pub fn authorize(
    state: &AppState,
    access: Access,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<(), ApiError> {
    let auth = state.auth();
    if auth.is_open_for(access) {
        return Ok(());
    }
    let header_token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer);
    let token = match access {
        Access::Read => header_token.or(query_token),
        Access::Ingest => header_token,
    };
    if auth.allows(access, token) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

/// The flow of a read route (snapshot, stream), after checking the read token from the
/// `Authorization` header or `?access_token=` (EventSource cannot set headers).
pub fn readable_flow(
    state: &AppState,
    path: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<String, ApiError> {
    let flow = flow_id(path)?;
    let token = query_param(query, "access_token");
    authorize(state, Access::Read, headers, token.as_deref())?;
    Ok(flow)
}

/// The value of `key` in a query string, percent-decoded (`+` is a space).
pub fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == key)
            .then(|| percent_decode(v))
            .flatten()
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_params_are_found_and_decoded() {
        let q = Some("a=1&access_token=t%2Bk+x&lastEventId=42");
        assert_eq!(query_param(q, "access_token").as_deref(), Some("t+k x"));
        assert_eq!(query_param(q, "lastEventId").as_deref(), Some("42"));
        assert_eq!(query_param(q, "nope"), None);
        assert_eq!(query_param(Some("x=%zz"), "x"), None);
        assert_eq!(query_param(None, "x"), None);
    }
}
