//! [`Routes`] for the lab: a tiny loopback HTTP front per region ([`RouteFront`]) and the client
//! side ([`HttpRoutes`]) the controller uses.
//!
//! The front's `GET /healthz` is what PowerDNS's `ifurlup` probe checks: `200 ok` only while the
//! front is undrained AND its dead-man switch is armed (the deadline set by the last
//! `POST /arm` has not passed on the front's own monotonic clock); `503` otherwise. A new front
//! starts drained and unarmed, so a region that restarts takes no traffic until its controller
//! holds the lease again.
//!
//! Control endpoints (JSON): `POST /drain {"epoch"}`, `POST /undrain {"epoch"}`,
//! `POST /arm {"epoch", "validForMs"}`, `GET /state`. A write with an epoch lower than the highest
//! applied one answers `409 {"applied": n}` ([`PlaneError::StaleEpoch`] on the client).
//!
//! `validForMs` is measured from when the front RECEIVES the arm, so the switch may outlive the
//! controller's deadline by the one-way request latency (loopback: microseconds); the
//! controller's margin covers it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::ports::{PlaneError, Routes};

#[derive(Debug)]
struct FrontState {
    drained: bool,
    armed_until: Option<Instant>,
    epoch: u64,
}

impl FrontState {
    fn healthy(&self, now: Instant) -> bool {
        !self.drained && self.armed_until.is_some_and(|t| now < t)
    }
}

/// What `GET /state` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrontView {
    /// Drained (no traffic).
    pub drained: bool,
    /// Milliseconds left on the dead-man switch (0 = run out or never armed).
    pub armed_ms: u64,
    /// Highest epoch applied.
    pub epoch: u64,
    /// What `/healthz` answers now.
    pub healthy: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EpochBody {
    epoch: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArmBody {
    epoch: u64,
    valid_for_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Stale {
    applied: u64,
}

type Shared = Arc<Mutex<FrontState>>;

fn with_state<T>(s: &Shared, f: impl FnOnce(&mut FrontState) -> T) -> T {
    // The state stays consistent even if a holder panicked: every change is one assignment.
    let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    f(&mut g)
}

/// Applies `change` at `epoch` unless a higher epoch was applied.
fn write(s: &Shared, epoch: u64, change: impl FnOnce(&mut FrontState)) -> Response {
    let r = with_state(s, |st| {
        if epoch < st.epoch {
            return Err(st.epoch);
        }
        st.epoch = epoch;
        change(st);
        Ok(())
    });
    match r {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(applied) => (StatusCode::CONFLICT, Json(Stale { applied })).into_response(),
    }
}

async fn healthz(State(s): State<Shared>) -> Response {
    if with_state(&s, |st| st.healthy(Instant::now())) {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "drained").into_response()
    }
}

async fn state(State(s): State<Shared>) -> Response {
    let now = Instant::now();
    Json(with_state(&s, |st| FrontView {
        drained: st.drained,
        armed_ms: st.armed_until.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
        }),
        epoch: st.epoch,
        healthy: st.healthy(now),
    }))
    .into_response()
}

async fn drain(State(s): State<Shared>, Json(b): Json<EpochBody>) -> Response {
    write(&s, b.epoch, |st| st.drained = true)
}

async fn undrain(State(s): State<Shared>, Json(b): Json<EpochBody>) -> Response {
    write(&s, b.epoch, |st| st.drained = false)
}

async fn arm(State(s): State<Shared>, Json(b): Json<ArmBody>) -> Response {
    let until = Instant::now() + Duration::from_millis(b.valid_for_ms);
    write(&s, b.epoch, |st| st.armed_until = Some(until))
}

/// The front's router (drained, unarmed, epoch 0).
pub fn front_router() -> Router {
    let shared: Shared = Arc::new(Mutex::new(FrontState {
        drained: true,
        armed_until: None,
        epoch: 0,
    }));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/state", get(state))
        .route("/drain", post(drain))
        .route("/undrain", post(undrain))
        .route("/arm", post(arm))
        .with_state(shared)
}

/// A running front; dropping it stops it.
#[derive(Debug)]
pub struct RouteFront {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RouteFront {
    /// Binds `addr` (e.g. `127.0.0.2:8001`, port 0 for any) and serves the front.
    pub async fn start(addr: SocketAddr) -> std::io::Result<RouteFront> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, front_router())
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(RouteFront {
            addr,
            stop: Some(tx),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RouteFront {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The controller's side: [`Routes`] over a front's HTTP control endpoints.
#[derive(Debug, Clone)]
pub struct HttpRoutes {
    base_url: String,
    http: reqwest::Client,
}

impl HttpRoutes {
    /// A client of the front at `base_url`, each request bounded by `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<HttpRoutes, PlaneError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| PlaneError::Failed(format!("HTTP client: {e}")))?;
        Ok(HttpRoutes {
            base_url: base_url.trim_end_matches('/').to_owned(),
            http,
        })
    }

    /// Reads `GET /state`.
    pub async fn state(&self) -> Result<FrontView, PlaneError> {
        let r = self
            .http
            .get(format!("{}/state", self.base_url))
            .send()
            .await
            .map_err(|e| PlaneError::Unavailable(e.to_string()))?;
        if !r.status().is_success() {
            return Err(PlaneError::Failed(format!("state: HTTP {}", r.status())));
        }
        r.json()
            .await
            .map_err(|e| PlaneError::Failed(format!("state: {e}")))
    }

    async fn post(
        &self,
        path: &str,
        body: serde_json::Value,
        epoch: u64,
    ) -> Result<(), PlaneError> {
        let r = self
            .http
            .post(format!("{}/{path}", self.base_url))
            .json(&body)
            .send()
            .await
            .map_err(|e| PlaneError::Unavailable(format!("{path}: {e}")))?;
        match r.status() {
            s if s.is_success() => Ok(()),
            StatusCode::CONFLICT => {
                let applied = r.json::<Stale>().await.map_or(0, |s| s.applied);
                Err(PlaneError::StaleEpoch {
                    given: epoch,
                    applied,
                })
            }
            s if s.is_server_error() => Err(PlaneError::Unavailable(format!("{path}: HTTP {s}"))),
            s => Err(PlaneError::Failed(format!("{path}: HTTP {s}"))),
        }
    }
}

impl Routes for HttpRoutes {
    async fn drain(&self, epoch: u64) -> Result<(), PlaneError> {
        self.post("drain", serde_json::json!({ "epoch": epoch }), epoch)
            .await
    }

    async fn undrain(&self, epoch: u64) -> Result<(), PlaneError> {
        self.post("undrain", serde_json::json!({ "epoch": epoch }), epoch)
            .await
    }

    async fn arm(&self, epoch: u64, valid_for: Duration) -> Result<(), PlaneError> {
        let ms = u64::try_from(valid_for.as_millis()).unwrap_or(u64::MAX);
        self.post(
            "arm",
            serde_json::json!({ "epoch": epoch, "validForMs": ms }),
            epoch,
        )
        .await
    }
}
