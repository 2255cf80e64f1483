//! The Kubernetes mode: the SAME decision core and executor as the standalone mode, driven by
//! `Continuum.dr.openova.io/v1` objects in each region's cluster.
//!
//! ```text
//!  Continuum (watch) ──▶ reconcile ──▶ observe.rs ──▶ decide ──▶ Executor ──▶ status (SSA)
//!                          │  CNPG Cluster ─┐                    │ ports:
//!                          │  HTTPRoute ────┤ readings           ├─ cnpg::CnpgDatabase   (Cluster)
//!                          │  witness ──────┘                    ├─ httproute::HttpRouteRoutes
//!                          │                                     ├─ status::StatusStore  (status)
//!                          └─ requeue at the next renew / expiry ├─ witness, DNS, NATS audit
//! ```
//!
//! - [`cnpg`]: the `Database` port over a CNPG `Cluster` (distributed topology:
//!   `spec.replica.primary/self/source`, demotion/promotion tokens, `cnpg.io/fencedInstances`).
//! - [`httproute`]: the `Routes` port over a Gateway API `HTTPRoute` (backend weights).
//! - [`status`]: the `StateStore` port and the upstream status fields, written with server-side
//!   apply (field manager [`FIELD_MANAGER`]).
//! - [`dns`]: the `Dns` port from `spec.dns` + `spec.luaRecord` (PDM or PowerDNS via
//!   `pdm-client`).
//! - [`reconcile`]: the kube-rs `Controller` glue (finalizer [`FINALIZER`], events, backoff).
//! - [`leader`]: in-region leader election with a `coordination.k8s.io/v1` Lease.
//! - [`crate::metrics`]: `/healthz`, `/readyz`, `/metrics` (`continuum_*`), shared with the
//!   standalone mode.
//! - [`cli`]: `continuum-controller k status|plan|switchover|approve-failback`.
//!
//! Every data-plane write carries the fencing epoch in the annotation [`EPOCH_ANNOTATION`] of
//! the object it changes; a write with a lower epoch than the stored one is refused with
//! [`PlaneError::StaleEpoch`], and the epoch check and the write are one compare-and-swap on
//! `metadata.resourceVersion`. Fencing writes (CNPG fence, route drain) are the exception: they
//! only take authority away and are never refused, so a restarted controller — which knows no
//! epoch until it holds the lease again — can always fence itself (found by the rebuild
//! scenario: a persisted epoch annotation otherwise locks a restarted old primary open).
//!
//! Tests run against testkit's in-memory Kubernetes API (no CNPG operator, no Gateway
//! controller: the CNPG status transitions are simulated by the tests).

pub mod cli;
pub mod cnpg;
pub mod dns;
pub mod httproute;
pub mod leader;

pub mod reconcile;
pub mod status;

use crate::ports::PlaneError;
use serde_json::Value;

/// Annotation holding the highest fencing epoch applied to an object.
pub const EPOCH_ANNOTATION: &str = "dr.openova.io/epoch";
/// Server-side apply field manager of the controller.
pub const FIELD_MANAGER: &str = "continuum-controller";
/// Finalizer on Continuum objects (`<plural>.<group>`).
pub const FINALIZER: &str = crate::crd::CRD_NAME;

/// The epoch stored in `obj`'s [`EPOCH_ANNOTATION`] (0 when absent or unreadable).
pub fn applied_epoch(obj: &Value) -> u64 {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(EPOCH_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Refuses `given` when a higher epoch was applied already.
pub fn check_epoch(applied: u64, given: u64) -> Result<(), PlaneError> {
    if given < applied {
        return Err(PlaneError::StaleEpoch { given, applied });
    }
    Ok(())
}

/// A kube client error in the data-plane terms: no answer / server-side trouble is
/// `Unavailable`, a refusal is `Failed`.
pub fn plane_error(context: &str, e: &kube::Error) -> PlaneError {
    match e {
        kube::Error::Api(s) if s.code >= 500 || s.code == 429 => {
            PlaneError::Unavailable(format!("{context}: {e}"))
        }
        kube::Error::Api(_) => PlaneError::Failed(format!("{context}: {e}")),
        _ => PlaneError::Unavailable(format!("{context}: {e}")),
    }
}

/// True when `e` is a 409 Conflict (a stale resourceVersion in a compare-and-swap).
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// True when `e` is a 404 Not Found.
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_epoch_annotation_reads_as_zero_when_absent_and_lower_epochs_are_refused() {
        assert_eq!(applied_epoch(&json!({})), 0);
        let o = json!({"metadata": {"annotations": {EPOCH_ANNOTATION: "7"}}});
        assert_eq!(applied_epoch(&o), 7);
        assert!(check_epoch(7, 7).is_ok());
        assert!(check_epoch(7, 8).is_ok());
        assert!(matches!(
            check_epoch(7, 6),
            Err(PlaneError::StaleEpoch {
                given: 6,
                applied: 7
            })
        ));
    }
}
