//! `flow-adapter-flux emit`: leader election gating the watch + delivery pipeline.
//!
//! While this pod leads, one pipeline ([`crate::watch::run_pipeline`]) runs; when leadership is
//! lost the pipeline future is dropped at once (watch streams closed, in-flight POST
//! abandoned), and a fresh one starts (with an empty delivered-state, so it re-sends
//! everything) when leadership comes back. Without a Lease configuration the pod always leads.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use tokio::sync::watch;

use crate::leader::{self, LeaseConfig};
use crate::metrics::Metrics;
use crate::sink::SinkError;
use crate::watch::{EmitConfig, Health, run_pipeline};

/// Runs the emitter until an unrecoverable configuration error. Cancel by dropping the future.
pub async fn run(
    client: kube::Client,
    cfg: EmitConfig,
    lease: Option<LeaseConfig>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), SinkError> {
    let (tx, mut rx) = watch::channel(lease.is_none());
    let elector = async {
        match lease {
            Some(l) => {
                let api: Api<Lease> = Api::namespaced(client.clone(), &l.namespace);
                leader::run(api, l, tx).await;
            }
            None => {
                // Keep the sender alive: the pod leads for ever.
                let _tx = tx;
                std::future::pending::<()>().await;
            }
        }
    };
    let driver = async {
        loop {
            if rx.wait_for(|leading| *leading).await.is_err() {
                return Ok(());
            }
            metrics.leader.set(1);
            health.leader.store(true, Ordering::Release);
            tracing::info!("leading: emission started");
            let outcome = tokio::select! {
                r = run_pipeline(client.clone(), &cfg, metrics.clone(), health.clone()) => Some(r),
                _ = rx.wait_for(|leading| !*leading) => None,
            };
            metrics.leader.set(0);
            health.leader.store(false, Ordering::Release);
            health.synced.store(false, Ordering::Release);
            match outcome {
                None => tracing::warn!("lease lost: emission stopped"),
                Some(Err(e)) => return Err(e),
                Some(Ok(())) => {
                    tracing::warn!("pipeline ended; restarting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    };
    tokio::select! {
        () = elector => Ok(()),
        r = driver => r,
    }
}
