//! The Cloudflare Worker: HTTP front (auth + protocol parse) and one `LeaseObject` Durable
//! Object per slot that applies the transition inside a storage transaction.
//!
//! The front authenticates and validates with [`crate::api::parse`], then forwards the parsed
//! request to the slot's object (`id_from_name(slot)`). The object reads its record, runs
//! [`contract::apply`] with its own clock as `now`, writes the new record in the same
//! transaction, and answers with [`crate::api::respond`]; the runtime's output gate holds
//! the answer until the write is durable. Expiry is evaluated on every request; no alarm or
//! Workers KV is involved.

use crate::api::{self, ApiResponse, Incoming, Method, Route};
use crate::auth::Tokens;
use contract::{LeaseRecord, LeaseRequest, Millis};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::rc::Rc;
use worker::{
    Context, Date, DurableObject, Env, Request, RequestInit, Response, Result, State, Storage,
    durable_object, event, wasm_bindgen::JsValue,
};

/// Storage key of the slot's record (JSON text).
const RECORD: &str = "record";

/// What the front asks of a slot's object.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "call")]
enum Call {
    Read,
    RaiseFloor { epoch: u64 },
    Change { req: LeaseRequest },
}

fn to_response(r: ApiResponse) -> Result<Response> {
    let mut resp = if r.body.is_empty() {
        Response::empty()?
    } else {
        let mut x = Response::from_bytes(r.body)?;
        x.headers_mut().set("Content-Type", "application/json")?;
        x
    };
    for (k, v) in &r.headers {
        resp.headers_mut().set(k, v)?;
    }
    Ok(resp.with_status(r.status))
}

fn tokens(env: &Env) -> Tokens {
    let raw = env
        .secret("WITNESS_TOKENS")
        .map(|s| s.to_string())
        .or_else(|_| env.var("WITNESS_TOKENS").map(|v| v.to_string()));
    match raw {
        Ok(s) => Tokens::from_json(&s).unwrap_or_else(|e| {
            worker::console_error!("WITNESS_TOKENS is invalid, refusing every request: {e}");
            Tokens::default()
        }),
        Err(_) => {
            worker::console_error!("WITNESS_TOKENS is not set, refusing every request");
            Tokens::default()
        }
    }
}

/// The Worker's fetch handler.
#[event(fetch)]
pub async fn main(mut req: Request, env: Env, _ctx: Context) -> Result<Response> {
    let h = |name: &str| req.headers().get(name).ok().flatten();
    let mut inc = Incoming {
        method: Some(Method::parse(&req.method().to_string())),
        path: req.path(),
        authorization: h("authorization"),
        if_match: h("if-match"),
        x_holder: h("x-holder"),
        request_id: h("x-request-id"),
        body: Vec::new(),
    };
    // Always drain the body, whatever the method: an unread body left on a kept-alive
    // connection makes the runtime reset the next request on it.
    inc.body = req.bytes().await.unwrap_or_default();
    let route = match api::parse(&inc, &tokens(&env)) {
        Ok(r) => r,
        Err(resp) => return to_response(resp),
    };
    let call = match &route {
        Route::Read { .. } => Call::Read,
        Route::RaiseFloor { epoch, .. } => Call::RaiseFloor { epoch: *epoch },
        Route::Change { req, .. } => Call::Change { req: req.clone() },
    };
    let body = serde_json::to_string(&call).map_err(|e| worker::Error::RustError(e.to_string()))?;
    let mut init = RequestInit::new();
    init.with_method(worker::Method::Post)
        .with_body(Some(JsValue::from_str(&body)));
    let inner = Request::new_with_init("https://lease-object/apply", &init)?;
    let stub = env
        .durable_object("LEASES")?
        .id_from_name(route.slot())?
        .get_stub()?;
    stub.fetch_with_request(inner).await
}

/// One lease slot.
#[durable_object]
pub struct LeaseObject {
    state: State,
}

fn rust_err(e: impl std::fmt::Display) -> worker::Error {
    worker::Error::RustError(e.to_string())
}

/// Runs `f` on the slot's record inside one storage transaction and writes the record it
/// returns when it differs. `f` also gets whether a record existed, and its second result is
/// handed back.
async fn transact<T: 'static>(
    storage: &Storage,
    f: impl FnOnce(&LeaseRecord, bool) -> (LeaseRecord, T) + 'static,
) -> Result<T> {
    let out = Rc::new(RefCell::new(None));
    let slot = out.clone();
    storage
        .transaction(move |txn| async move {
            // Transaction::get errors on a missing key; probe with get_multiple.
            let found = txn.get_multiple(vec![RECORD]).await?;
            let existed = found.has(&JsValue::from_str(RECORD));
            let rec: LeaseRecord = if existed {
                let s: String = txn.get(RECORD).await?;
                serde_json::from_str(&s).map_err(rust_err)?
            } else {
                LeaseRecord::default()
            };
            let (next, t) = f(&rec, existed);
            if next != rec {
                txn.put(RECORD, serde_json::to_string(&next).map_err(rust_err)?)
                    .await?;
            }
            *slot.borrow_mut() = Some(t);
            Ok(())
        })
        .await?;
    let taken = out.borrow_mut().take();
    taken.ok_or_else(|| rust_err("transaction produced no result"))
}

impl DurableObject for LeaseObject {
    fn new(state: State, _env: Env) -> Self {
        Self { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        // serde_json on the text, not `req.json()`: that goes through JavaScript numbers, which
        // lose u64 precision above 2^53 (an epoch floor or generation would come out wrong).
        let call: Call = serde_json::from_str(&req.text().await?).map_err(rust_err)?;
        let storage = self.state.storage();
        let now = Millis(Date::now().as_millis() as i64);
        match call {
            Call::Read => {
                let rec: Option<String> = storage.get(RECORD).await?;
                let rec: Option<LeaseRecord> = match rec {
                    Some(s) => Some(serde_json::from_str(&s).map_err(rust_err)?),
                    None => None,
                };
                to_response(api::respond_read(rec.as_ref().map(|r| &r.state), now))
            }
            Call::RaiseFloor { epoch } => {
                let raised = transact(&storage, move |rec, _| {
                    let raised = contract::lease::raise_epoch_floor(rec, epoch);
                    // A refused floor writes nothing.
                    let next = raised.clone().unwrap_or_else(|_| rec.clone());
                    (next, raised)
                })
                .await?;
                to_response(api::respond_floor(&raised, now))
            }
            Call::Change { req } => {
                let lreq = req.clone();
                let (applied, existed) = transact(&storage, move |rec, existed| {
                    let applied = contract::apply(rec, &lreq, now);
                    let next = match &applied {
                        Ok(a) => a.record.clone(),
                        Err(_) => rec.clone(),
                    };
                    (next, (applied, existed))
                })
                .await?;
                to_response(api::respond(&req, &applied, existed))
            }
        }
    }
}
