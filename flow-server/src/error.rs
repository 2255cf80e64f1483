//! The one error type of the HTTP API, and the body extractor that produces it.
//!
//! Every error response is JSON: `{"error": <code>, "field": <path or null>, "message": <text>}`.
//! Contract errors keep the contract's code and field path (`nodes[3].label`); the message is
//! the contract's text, identical to upstream's where upstream has one. Bad client input is not
//! logged above debug; internal errors are logged and never detailed to the client.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use contract::{ContractError, FlowMessage};
use serde::Serialize;

use crate::hub::AppendError;

/// Largest accepted request body (upstream's `MaxIngestBody`, 1 MiB).
pub const MAX_BODY: usize = 1 << 20;

/// An HTTP error with a stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Status code.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// The field the error is about.
    pub field: Option<String>,
    /// Human-readable text.
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    field: Option<&'a str>,
    message: &'a str,
}

impl ApiError {
    /// Any error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            field: None,
            message: message.into(),
        }
    }

    /// Names the field.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 400 from a contract rule.
    pub fn contract(e: &ContractError) -> Self {
        let mut err = Self::new(StatusCode::BAD_REQUEST, e.code(), e.to_string());
        err.field = e.field().map(str::to_owned);
        err
    }

    /// 401.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 413.
    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("payload too large: the limit is {MAX_BODY} bytes"),
        )
    }

    /// 503.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500; `detail` is logged, not sent.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match &e {
            AppendError::Limit(l) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "limit_exceeded",
                e.to_string(),
            )
            .with_field(l.field),
            AppendError::TooManyFlows(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_flows",
                e.to_string(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            field: self.field.as_deref(),
            message: &self.message,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Our JSON body extractor for FlowMessages: 415 unless the content type is JSON, 413 above
/// [`MAX_BODY`], 400 with the contract's code and field for anything the contract refuses.
/// Carries the decoded message and its compact re-encoding (the SSE `data:` line).
#[derive(Debug)]
pub struct FlowJson {
    /// The validated message.
    pub message: FlowMessage,
    /// Compact JSON of the message (one line).
    pub json: Bytes,
}

/// True for `application/json`, `application/json; charset=utf-8` and `application/*+json`.
pub fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<S: Send + Sync> FromRequest<S> for FlowJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be a FlowMessage with Content-Type: application/json",
            )
            .with_field("Content-Type"));
        }
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(ApiError::too_large());
        }
        let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
            .await
            .map_err(|e| {
                if is_length_limit(&e) {
                    ApiError::too_large()
                } else {
                    ApiError::new(StatusCode::BAD_REQUEST, "body_unreadable", e.to_string())
                }
            })?;
        let message = FlowMessage::decode(&body).map_err(|e| ApiError::contract(&e))?;
        let json = Bytes::from(message.encode());
        Ok(Self { message, json })
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json"))));
        assert!(is_json(Some(&v("Application/JSON; charset=utf-8"))));
        assert!(is_json(Some(&v("application/merge-patch+json"))));
        assert!(!is_json(Some(&v("text/plain"))));
        assert!(!is_json(Some(&v("application/x-www-form-urlencoded"))));
        assert!(!is_json(None));
    }
}
