//! `witness-server`: the witness protocol over axum, slots persisted in a [`FileStore`].
//!
//! Every request takes the store lock, so requests to the witness are linearised; a change is
//! fsynced before the answer leaves (the Durable Object's output-gate guarantee, natively).

use crate::api::{self, ApiResponse, Incoming, Method, Route};
use crate::auth::Tokens;
use crate::store::FileStore;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use contract::{Millis, apply};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// The witness clock: wall-clock unix milliseconds. Expiry is only ever compared against this
/// one clock, so clients' clocks never matter.
pub type Clock = Arc<dyn Fn() -> Millis + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        Millis(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
        )
    })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReqLabels {
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlotLabels {
    slot: String,
}

/// Shared state of the server.
pub struct Witness {
    store: Mutex<FileStore>,
    tokens: Tokens,
    clock: Clock,
    registry: Registry,
    requests: Family<ReqLabels, Counter>,
    epoch: Family<SlotLabels, Gauge>,
    latency: Histogram,
}

impl Witness {
    /// A witness over `store`, authenticating with `tokens`, timing with `clock`.
    pub fn new(store: FileStore, tokens: Tokens, clock: Clock) -> Arc<Witness> {
        let mut registry = Registry::with_prefix("witness");
        let requests = Family::<ReqLabels, Counter>::default();
        let epoch = Family::<SlotLabels, Gauge>::default();
        let latency = Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5]);
        registry.register(
            "requests",
            "Lease requests by method and HTTP status",
            requests.clone(),
        );
        registry.register(
            "lease_epoch",
            "Current fencing epoch per slot",
            epoch.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time to answer a lease request, fsync included",
            latency.clone(),
        );
        for (slot, rec) in store.slots() {
            epoch
                .get_or_create(&SlotLabels { slot: slot.clone() })
                .set(rec.state.epoch as i64);
        }
        Arc::new(Witness {
            store: Mutex::new(store),
            tokens,
            clock,
            registry,
            requests,
            epoch,
            latency,
        })
    }

    /// Runs one protocol request to its response.
    pub async fn handle(&self, inc: Incoming) -> ApiResponse {
        let route = match api::parse(&inc, &self.tokens) {
            Ok(r) => r,
            Err(resp) => return resp,
        };
        let mut store = self.store.lock().await;
        let now = (self.clock)();
        match route {
            Route::Read { slot } => api::respond_read(store.get(&slot).map(|r| &r.state), now),
            Route::RaiseFloor { slot, epoch } => {
                let was = store.get(&slot).cloned().unwrap_or_default();
                let raised = contract::lease::raise_epoch_floor(&was, epoch);
                match &raised {
                    Ok(next) if *next != was => {
                        if let Err(e) = store.put(&slot, next.clone()) {
                            return ApiResponse::error(503, "storage_unavailable", e.to_string());
                        }
                        tracing::warn!(%slot, floor = next.epoch_floor, "epoch floor raised (DNS-quorum takeover)");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%slot, error = %e, "epoch floor refused"),
                }
                api::respond_floor(&raised, now)
            }
            Route::Change { slot, req } => {
                let existed = store.get(&slot).is_some();
                let was = store.get(&slot).cloned().unwrap_or_default();
                let applied = apply(&was, &req, now);
                if let Err(e) = &applied
                    && e.is_exhausted()
                {
                    tracing::error!(%slot, error = %e, "lease request refused: counter used up");
                }
                if let Ok(a) = &applied
                    && a.record != was
                {
                    if let Err(e) = store.put(&slot, a.record.clone()) {
                        tracing::error!(%slot, error = %e, "lease state not persisted; request refused");
                        return ApiResponse::error(503, "storage_unavailable", e.to_string());
                    }
                    if a.changed {
                        log_change(&slot, &was.state, &a.record.state);
                        self.epoch
                            .get_or_create(&SlotLabels { slot: slot.clone() })
                            .set(a.record.state.epoch as i64);
                    }
                }
                api::respond(&req, &applied, existed)
            }
        }
    }
}

fn log_change(slot: &str, was: &contract::LeaseState, now: &contract::LeaseState) {
    if was.holder != now.holder || was.epoch != now.epoch {
        tracing::info!(
            %slot,
            from = %was.holder,
            to = %now.holder,
            epoch = now.epoch,
            generation = now.generation,
            "lease holder changed"
        );
    } else {
        tracing::debug!(%slot, holder = %now.holder, generation = now.generation, "lease renewed");
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Options => "OPTIONS",
        Method::Other => "OTHER",
    }
}

async fn lease(State(w): State<Arc<Witness>>, req: Request<Body>) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let hdr = |h: &HeaderMap, name: &str| -> Option<String> {
        h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    let method = Method::parse(parts.method.as_str());
    let body: Bytes = match axum::body::to_bytes(body, api::MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return to_response(ApiResponse::error(
                413,
                "body_too_large",
                "body over 16 KiB",
            ));
        }
    };
    let inc = Incoming {
        method: Some(method),
        path: parts.uri.path().to_owned(),
        authorization: hdr(&parts.headers, "authorization"),
        if_match: hdr(&parts.headers, "if-match"),
        x_holder: hdr(&parts.headers, "x-holder"),
        request_id: hdr(&parts.headers, "x-request-id"),
        body: body.to_vec(),
    };
    let resp = w.handle(inc).await;
    w.requests
        .get_or_create(&ReqLabels {
            method: method_name(method),
            status: resp.status,
        })
        .inc();
    w.latency.observe(started.elapsed().as_secs_f64());
    to_response(resp)
}

/// Converts a protocol response to an HTTP response.
pub fn to_response(r: ApiResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if r.body.is_empty() {
        status.into_response()
    } else {
        (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            r.body,
        )
            .into_response()
    };
    for (k, v) in r.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

async fn metrics(State(w): State<Arc<Witness>>) -> Response {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, &w.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            out,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The router: `/healthz`, `/metrics`, and the lease protocol on every other path.
pub fn app(w: Arc<Witness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .fallback(lease)
        .layer(DefaultBodyLimit::max(api::MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(10),
        ))
        .with_state(w)
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    w: Arc<Witness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(w))
        .with_graceful_shutdown(shutdown)
        .await
}
