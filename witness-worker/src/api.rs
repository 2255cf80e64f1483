//! The witness HTTP protocol, runtime-neutral and pure.
//!
//! Both runtimes (the Durable Object Worker and the native `witness-server`) turn their HTTP
//! request into an [`Incoming`], call [`parse`], run [`contract::apply`] against the slot's
//! stored record, persist, and turn the result into an [`ApiResponse`] with [`respond`] (or
//! [`respond_read`] for GET). So the wire behaviour cannot differ between them.
//!
//! Compatible with upstream's Worker (`spec/upstream-continuum.md` §6.4): `GET|PUT|DELETE
//! /lease/<slot>` (slot URL-decoded, may contain `/`), bearer auth first on every method (401
//! `{"error":"unauthorized"}`), `If-Match` required on PUT/DELETE (`N`, `"N"`, `W/"N"`), PUT
//! body `{holder, ttlSeconds, op}`, DELETE with `X-Holder`, 412 with the current state on a
//! conflict, 400 with upstream's error codes, 404/405/OPTIONS as upstream. Additions: `epoch`
//! and `witnessNow` in every state, `conflict` (the reason) on 412, `X-Request-Id`
//! idempotency, per-token holder and slot binding (403 `forbidden_holder`, `forbidden_slot`;
//! see [`crate::auth`]), and DELETE answers 200 with
//! the state (204 when the slot never existed) — upstream's client accepts both.

use crate::auth::Tokens;
use contract::lease::{Applied, LeaseRequestError, LeaseView, PutBody, parse_if_match};
use contract::{LeaseOp, LeaseRequest, LeaseState, Millis};
use serde::Serialize;

/// Longest slot name accepted, in bytes.
pub const MAX_SLOT_LEN: usize = 256;
/// Largest PUT body accepted, in bytes (a lease request is well under 1 KiB).
pub const MAX_BODY: usize = 16 * 1024;
/// Longest `X-Request-Id` accepted.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// HTTP methods the witness distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Read the slot.
    Get,
    /// Acquire or renew.
    Put,
    /// Release.
    Delete,
    /// CORS pre-flight.
    Options,
    /// Anything else (405).
    Other,
}

impl Method {
    /// From the method name.
    pub fn parse(m: &str) -> Method {
        match m.to_ascii_uppercase().as_str() {
            "GET" | "HEAD" => Method::Get,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// What the protocol needs from an HTTP request.
#[derive(Debug, Clone, Default)]
pub struct Incoming {
    /// Method.
    pub method: Option<Method>,
    /// Raw (still percent-encoded) path.
    pub path: String,
    /// `Authorization` header.
    pub authorization: Option<String>,
    /// `If-Match` header.
    pub if_match: Option<String>,
    /// `X-Holder` header (DELETE).
    pub x_holder: Option<String>,
    /// `X-Request-Id` header.
    pub request_id: Option<String>,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A parsed, authorised request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// GET: read the slot.
    Read {
        /// Slot name.
        slot: String,
    },
    /// PUT with `op: raise-floor`: the next grant's epoch must exceed `epoch` (an epoch issued
    /// by an opt-in DNS-quorum takeover while the witness was unreachable).
    RaiseFloor {
        /// Slot name.
        slot: String,
        /// The epoch issued elsewhere.
        epoch: u64,
    },
    /// PUT/DELETE: apply a lease request to the slot.
    Change {
        /// Slot name.
        slot: String,
        /// The request for [`contract::apply`].
        req: LeaseRequest,
    },
}

impl Route {
    /// The slot the request is about.
    pub fn slot(&self) -> &str {
        match self {
            Route::Read { slot } | Route::Change { slot, .. } | Route::RaiseFloor { slot, .. } => {
                slot
            }
        }
    }
}

/// An HTTP response to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// Status code.
    pub status: u16,
    /// Extra headers (content type is set by the runtime when `body` is non-empty).
    pub headers: Vec<(&'static str, String)>,
    /// JSON body, or empty.
    pub body: Vec<u8>,
}

impl ApiResponse {
    fn json<T: Serialize>(status: u16, body: &T) -> ApiResponse {
        ApiResponse {
            status,
            headers: Vec::new(),
            // Plain structs of strings and numbers always serialize.
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// An error body `{"error": code, "reason": text}`.
    pub fn error(status: u16, code: &str, reason: impl Into<String>) -> ApiResponse {
        #[derive(Serialize)]
        struct E<'a> {
            error: &'a str,
            reason: String,
        }
        ApiResponse::json(
            status,
            &E {
                error: code,
                reason: reason.into(),
            },
        )
    }

    fn empty(status: u16) -> ApiResponse {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// The `error` code of an error body, if this is one (for metrics and logs).
    pub fn error_code(&self) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(&self.body).ok()?;
        v.get("error")?.as_str().map(str::to_owned)
    }
}

/// A state answer with the reason of a conflict, when there was one.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateBody<'a> {
    #[serde(flatten)]
    view: &'a LeaseView,
    #[serde(skip_serializing_if = "Option::is_none")]
    conflict: Option<contract::lease::ConflictReason>,
}

fn slot_of(path: &str) -> Result<String, ApiResponse> {
    let Some(tail) = path.strip_prefix("/lease/") else {
        return Err(ApiResponse::error(
            404,
            "not_found",
            "only /lease/<slot> exists",
        ));
    };
    let slot = percent_encoding::percent_decode_str(tail)
        .decode_utf8()
        .map_err(|_| ApiResponse::error(400, "invalid_slot", "slot is not valid UTF-8"))?;
    if slot.is_empty() {
        return Err(ApiResponse::error(
            404,
            "not_found",
            "only /lease/<slot> exists",
        ));
    }
    if slot.len() > MAX_SLOT_LEN || slot.chars().any(char::is_control) {
        return Err(ApiResponse::error(
            400,
            "invalid_slot",
            format!("slot must be 1..={MAX_SLOT_LEN} bytes without control characters"),
        ));
    }
    Ok(slot.into_owned())
}

fn if_match(inc: &Incoming) -> Result<u64, ApiResponse> {
    let raw = inc
        .if_match
        .as_deref()
        .ok_or_else(|| ApiResponse::error(400, "missing_if_match", "If-Match is required"))?;
    parse_if_match(raw).ok_or_else(|| {
        ApiResponse::error(
            400,
            "invalid_if_match",
            "If-Match must be a generation: N, \"N\" or W/\"N\"",
        )
    })
}

fn request_id(inc: &Incoming) -> Result<Option<String>, ApiResponse> {
    match inc.request_id.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(id) if id.len() > MAX_REQUEST_ID_LEN || id.chars().any(char::is_control) => {
            Err(ApiResponse::error(
                400,
                "invalid_request_id",
                "X-Request-Id too long or not text",
            ))
        }
        Some(id) => Ok(Some(id.to_owned())),
    }
}

/// Parses and authorises a request. `Err` is the response to send at once (nothing changes).
pub fn parse(inc: &Incoming, tokens: &Tokens) -> Result<Route, ApiResponse> {
    let method = inc.method.unwrap_or(Method::Other);
    let slot = slot_of(&inc.path)?;
    if method == Method::Options {
        let mut r = ApiResponse::empty(204);
        r.headers
            .push(("Allow", "GET, PUT, DELETE, OPTIONS".into()));
        return Err(r);
    }
    let grant = tokens
        .authenticate(inc.authorization.as_deref())
        .ok_or_else(|| {
            ApiResponse::error(401, "unauthorized", "missing or unknown bearer token")
        })?;
    // Before anything else about the request: a token bound to other slots has no business
    // with this one, whatever the method (so it can neither take, release nor read it).
    if !grant.may_use_slot(&slot) {
        return Err(ApiResponse::error(
            403,
            "forbidden_slot",
            format!("this token is not bound to slot {slot:?}"),
        ));
    }
    let forbid = |holder: &str| {
        ApiResponse::error(
            403,
            "forbidden_holder",
            format!("this token may not act as holder {holder:?}"),
        )
    };
    match method {
        Method::Get => Ok(Route::Read { slot }),
        Method::Put => {
            if inc.body.len() > MAX_BODY {
                return Err(ApiResponse::error(
                    413,
                    "body_too_large",
                    "body over 16 KiB",
                ));
            }
            let v: serde_json::Value = serde_json::from_slice(&inc.body)
                .map_err(|e| ApiResponse::error(400, "invalid_json", e.to_string()))?;
            let obj = v
                .as_object()
                .ok_or_else(|| ApiResponse::error(400, "invalid_body", "body must be an object"))?;
            let holder = obj
                .get("holder")
                .and_then(|h| h.as_str())
                .filter(|h| !h.is_empty())
                .ok_or_else(|| {
                    ApiResponse::error(400, "invalid_holder", "holder must be a non-empty string")
                })?;
            if obj.get("op").and_then(|o| o.as_str()) == Some("raise-floor") {
                let epoch = obj.get("epoch").and_then(|e| e.as_u64()).ok_or_else(|| {
                    ApiResponse::error(400, "invalid_epoch", "epoch must be an integer >= 0")
                })?;
                if !grant.may_act_as(holder) {
                    return Err(forbid(holder));
                }
                return Ok(Route::RaiseFloor { slot, epoch });
            }
            let ttl_seconds = obj
                .get("ttlSeconds")
                .and_then(|t| t.as_f64())
                .ok_or_else(|| {
                    ApiResponse::error(400, "invalid_ttl", "ttlSeconds must be a number > 0")
                })?;
            let op = match obj.get("op").and_then(|o| o.as_str()) {
                Some("acquire") => LeaseOp::Acquire,
                Some("renew") => LeaseOp::Renew,
                _ => {
                    return Err(ApiResponse::error(
                        400,
                        "invalid_op",
                        "op must be \"acquire\" or \"renew\"",
                    ));
                }
            };
            let body = PutBody {
                holder: holder.to_owned(),
                ttl_seconds,
                op,
            };
            let ttl_ms = body
                .ttl_ms()
                .map_err(|e| ApiResponse::error(400, e.code(), e.to_string()))?;
            let generation = if_match(inc)?;
            let report = match obj.get("report") {
                None | Some(serde_json::Value::Null) => None,
                Some(r) => {
                    let r: contract::HolderReport =
                        serde_json::from_value(r.clone()).map_err(|e| {
                            ApiResponse::error(400, "invalid_report", format!("report: {e}"))
                        })?;
                    r.validate()
                        .map_err(|e| ApiResponse::error(400, e.code(), e.to_string()))?;
                    Some(r)
                }
            };
            if !grant.may_act_as(holder) {
                return Err(forbid(holder));
            }
            Ok(Route::Change {
                slot,
                req: LeaseRequest {
                    op,
                    holder: body.holder,
                    ttl_ms,
                    if_match: Some(generation),
                    request_id: request_id(inc)?,
                    report,
                },
            })
        }
        Method::Delete => {
            let generation = if_match(inc)?;
            let holder = inc
                .x_holder
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .ok_or_else(|| ApiResponse::error(400, "missing_holder", "X-Holder is required"))?;
            if !grant.may_act_as(holder) {
                return Err(forbid(holder));
            }
            Ok(Route::Change {
                slot,
                req: LeaseRequest::release(holder)
                    .if_match(generation)
                    .request_id_opt(request_id(inc)?),
            })
        }
        Method::Options | Method::Other => {
            let mut r = ApiResponse::error(405, "method_not_allowed", "use GET, PUT or DELETE");
            r.headers
                .push(("Allow", "GET, PUT, DELETE, OPTIONS".into()));
            Err(r)
        }
    }
}

trait RequestIdOpt {
    fn request_id_opt(self, id: Option<String>) -> Self;
}

impl RequestIdOpt for LeaseRequest {
    fn request_id_opt(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }
}

/// The answer to a GET: 200 with the stored state (even when expired, as upstream), 404 when
/// the slot has never been written.
pub fn respond_read(state: Option<&LeaseState>, now: Millis) -> ApiResponse {
    match state {
        None => ApiResponse::error(404, "not_found", "no lease has been written for this slot"),
        Some(s) => ApiResponse::json(
            200,
            &StateBody {
                view: &LeaseView {
                    state: s.clone(),
                    witness_now: now,
                },
                conflict: None,
            },
        ),
    }
}

/// The answer to a raise-floor request: the state and the floor now in force, or why the
/// floor was refused (400 `epoch_floor_too_far`, 409 `epoch_floor_no_room`; nothing changed).
pub fn respond_floor(
    raised: &Result<contract::LeaseRecord, contract::FloorError>,
    now: Millis,
) -> ApiResponse {
    let record = match raised {
        Ok(r) => r,
        Err(e @ contract::FloorError::TooFar { .. }) => {
            return ApiResponse::error(400, e.code(), e.to_string());
        }
        Err(e @ contract::FloorError::NoRoom { .. }) => {
            return ApiResponse::error(409, e.code(), e.to_string());
        }
    };
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Floor<'a> {
        #[serde(flatten)]
        view: &'a LeaseView,
        epoch_floor: u64,
    }
    ApiResponse::json(
        200,
        &Floor {
            view: &LeaseView {
                state: record.state.clone(),
                witness_now: now,
            },
            epoch_floor: record.epoch_floor,
        },
    )
}

/// The answer to a PUT/DELETE after [`contract::apply`]. `existed` tells whether the slot had
/// a stored record before (DELETE of a never-written slot answers 204 as upstream).
pub fn respond(
    req: &LeaseRequest,
    applied: &Result<Applied, LeaseRequestError>,
    existed: bool,
) -> ApiResponse {
    let a = match applied {
        Ok(a) => a,
        // Well-formed, but the slot's epochs (or generations) are used up: 409, not 400.
        Err(e) if e.is_exhausted() => return ApiResponse::error(409, e.code(), e.to_string()),
        Err(e) => return ApiResponse::error(400, e.code(), e.to_string()),
    };
    if req.op == LeaseOp::Release && !existed {
        return ApiResponse::empty(204);
    }
    let (status, state, conflict) = match &a.outcome {
        Ok(s) => (200, s, None),
        Err(c) => (412, &c.current, Some(c.reason)),
    };
    let mut r = ApiResponse::json(
        status,
        &StateBody {
            view: &LeaseView {
                state: state.clone(),
                witness_now: a.at,
            },
            conflict,
        },
    );
    r.headers
        .push(("ETag", format!("\"{}\"", state.generation)));
    if a.replayed {
        r.headers.push(("X-Replayed", "true".into()));
    }
    r
}

#[cfg(test)]
mod tests;
