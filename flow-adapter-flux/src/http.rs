//! `/healthz`, `/readyz` and `/metrics` on `HEALTH_LISTEN_ADDR`.
//!
//! `/readyz` is 200 for a follower, and for the leader once its first list of HelmReleases is
//! complete (upstream's always answered `ok`).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::watch::Health;

/// What the handlers read.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Metrics to encode.
    pub metrics: Arc<Metrics>,
    /// Readiness flags.
    pub health: Arc<Health>,
}

/// The router.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<HttpState>) -> impl IntoResponse {
    if s.health.ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "initial list not complete\n",
        )
    }
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn readyz_waits_for_the_leaders_first_list_and_metrics_carry_the_prefix() {
        let health = Arc::new(Health::default());
        let metrics = Arc::new(Metrics::new());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
        };
        tokio::spawn(serve(listener, state, std::future::pending()));
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |p: &str| c.get(format!("{base}{p}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(
            get("/readyz").await.unwrap().status(),
            200,
            "a follower is ready"
        );
        health.leader.store(true, Ordering::Release);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        health.synced.store(true, Ordering::Release);
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        metrics.events_sent.inc();
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        for name in [
            "flow_adapter_events_mapped_total",
            "flow_adapter_events_sent_total 1",
            "flow_adapter_queue_depth",
            "flow_adapter_last_success_timestamp_seconds",
        ] {
            assert!(text.contains(name), "{name} missing in {text}");
        }
    }
}
