//! `/healthz`, `/readyz` and `/metrics` of the controller (Kubernetes and standalone modes).
//!
//! Metrics (prefix `continuum_`): `reconciles_total`, `failures_total{error}` (labels from
//! [`crate::exec::ExecError::metric_label`], plus `spec`, `kube`), `step_duration_seconds{step}`
//! (histogram, one observation per executed plan step), `lease_renew_seconds` (histogram of
//! the renew steps), `replication_lag_seconds{continuum}` and `epoch{continuum}` (gauges).
//! `/readyz` answers 200 while the process serves (leading, or standing by for the leader
//! Lease) and 503 once leadership was lost or the controller stopped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `error` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    /// The error class.
    pub error: String,
}

/// `step` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabel {
    /// The step name ([`crate::decide::Step::name`]).
    pub step: String,
}

/// `continuum` label (`namespace/name`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabel {
    /// `namespace/name`.
    pub continuum: String,
}

fn step_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The controller's metrics and readiness.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Failures by error label.
    pub failures: Family<ErrorLabel, Counter>,
    /// Step durations.
    pub steps: Family<StepLabel, Histogram, fn() -> Histogram>,
    /// Lease renew latency.
    pub lease_renew: Histogram,
    /// Replication lag per Continuum (absent until measured).
    pub lag: Family<ObjectLabel, Gauge>,
    /// Epoch per Continuum.
    pub epoch: Family<ObjectLabel, Gauge<i64, AtomicI64>>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("continuum");
        let reconciles = Counter::default();
        let failures = Family::<ErrorLabel, Counter>::default();
        let steps: Family<StepLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(step_histogram);
        let lease_renew = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let lag = Family::<ObjectLabel, Gauge>::default();
        let epoch = Family::<ObjectLabel, Gauge<i64, AtomicI64>>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "failures",
            "Failed reconciles and steps by error",
            failures.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Duration of executed plan steps",
            steps.clone(),
        );
        registry.register(
            "lease_renew_seconds",
            "Latency of lease renewals at the witness",
            lease_renew.clone(),
        );
        registry.register(
            "replication_lag_seconds",
            "Measured replication lag",
            lag.clone(),
        );
        registry.register("epoch", "Current lease epoch", epoch.clone());
        Metrics {
            registry,
            reconciles,
            failures,
            steps,
            lease_renew,
            lag,
            epoch,
            ready: AtomicBool::new(false),
        }
    }

    /// Counts a failure.
    pub fn failure(&self, label: &str) {
        self.failures
            .get_or_create(&ErrorLabel {
                error: label.to_owned(),
            })
            .inc();
    }

    /// Records one executed step.
    pub fn step(&self, name: &str, seconds: f64) {
        self.steps
            .get_or_create(&StepLabel {
                step: name.to_owned(),
            })
            .observe(seconds);
        if name == "renew-lease" {
            self.lease_renew.observe(seconds);
        }
    }

    /// Marks the controller ready (leading and running) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The router: `/healthz` (process alive), `/readyz` (serving: leading or standing by),
/// `/metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(metrics)
}

async fn readyz(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "stopped")
    }
}

async fn metrics_text(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
}

/// Serves [`router`] on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(metrics))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_prefixed_and_labelled() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.failure("witness");
        m.step("renew-lease", 0.01);
        m.epoch
            .get_or_create(&ObjectLabel {
                continuum: "shop/app".into(),
            })
            .set(4);
        let t = m.encode();
        assert!(t.contains("continuum_reconciles_total 1"), "{t}");
        assert!(
            t.contains("continuum_failures_total{error=\"witness\"} 1"),
            "{t}"
        );
        assert!(t.contains("continuum_step_duration_seconds_count{step=\"renew-lease\"} 1"));
        assert!(t.contains("continuum_lease_renew_seconds_count 1"));
        assert!(t.contains("continuum_epoch{continuum=\"shop/app\"} 4"));
        assert!(!m.is_ready());
    }
}
