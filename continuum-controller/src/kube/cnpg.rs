//! The [`Database`] port over a CloudNativePG `postgresql.cnpg.io/v1 Cluster`.
//!
//! One CNPG `Cluster` per region, in CNPG's *distributed topology*: every Cluster names itself
//! (`spec.replica.self`), the cluster that is primary (`spec.replica.primary`) and its
//! replication origin (`spec.replica.source`, an `externalClusters` entry = the peer region's
//! Cluster). A Cluster without `spec.replica.self` is driven through `spec.replica.enabled`
//! (CNPG's older replica-cluster switch) instead.
//!
//! | port call  | patch                                                            | done when |
//! |------------|------------------------------------------------------------------|-----------|
//! | `demote`   | `spec.replica.primary = <peer>` (or `enabled: true`)             | `status.demotionToken` is set; its `latestCheckpointREDOLocation` is the demotion LSN |
//! | `promote`  | `spec.replica.primary = <self>` + `promotionToken` (planned) / without token (unplanned), or `enabled: false` | `status.currentPrimary == status.targetPrimary`, no switch in progress (and `lastPromotionToken` = the token) |
//! | `fence`    | annotation `cnpg.io/fencedInstances: ["*"]`                      | CNPG reports every instance stopped: `status.readyInstances` present and `0`, no pod under `status.instancesStatus.healthy` (the stored annotation alone is NOT a fence) |
//! | `unfence`  | annotation removed                                               | patch stored (see below) |
//! | `set_sync` | annotation `dr.openova.io/sync-suspended`, and `spec.postgresql.synchronous.dataDurability` `preferred`/`required` when the Cluster configures synchronous replication | patch stored |
//! | `rebuild`  | `spec.replica.primary = <source's Cluster>` (or `enabled: true`) | the Cluster settled as a replica |
//!
//! Every patch also writes the epoch annotation, in one compare-and-swap with the epoch check
//! (see [`super`]). The one exception to the refusal is `fence`: it only takes authority away,
//! and a restarted controller (epoch unknown until it holds the lease again) must be able to
//! fence itself.
//!
//! **A fence is observed, not assumed.** Storing `cnpg.io/fencedInstances` only asks CNPG to
//! fence; with a slow or absent CNPG nothing stops. So `fence` stores the annotation and then
//! polls the Cluster until CNPG reports every instance stopped, bounded by the executor's step
//! timeout (`FenceStuck`) or the settle timeout (`CnpgFenceNotObserved`), whichever is shorter
//! (with the derived timings, the step timeout); until then it is not done and
//! [`ClusterView::observation`] does not report the database read-only, so the next round
//! fences again. What CloudNativePG does, and why this is the signal:
//! - CNPG docs, *Fencing* (`docs/src/fencing.md`, cloudnative-pg.io/documentation/current/fencing):
//!   a fenced instance's postmaster is shut down (fast shutdown bounded by
//!   `.spec.switchoverDelay`, then immediate); "the pod is kept alive" and "the pod isn't
//!   marked as Ready". A fenced primary gets no failover: `currentPrimary` stays.
//! - The shutdown is done by the instance manager inside each pod: its reconciler reads the
//!   annotation (`InstanceReconciler.reconcileFencing` → `RequestFencingOn` →
//!   `TryShuttingDownFastImmediate`, `internal/management/controller/instance_controller.go`),
//!   and the pod's readiness probe then fails.
//! - The operator rewrites `status.readyInstances` (the ready active pods:
//!   `CountReadyPods(FilterActivePods(..))`; CRD: "equal to the number of ready instance pods")
//!   and `status.instancesStatus` (`ListStatusPods`: `healthy` = Ready, `replicating` = active
//!   but not Ready — where a fenced pod lands —, `failed`) on every reconcile
//!   (`pkg/reconciler/persistentvolumeclaim` `EnrichStatus`). CNPG's own e2e fencing test
//!   (`tests/e2e/fencing_test.go`) checks exactly that readiness: the `postgres` container
//!   not Ready, and no `SELECT 1` possible.
//! - Not used: `status.phase`/`conditions` (no fencing-specific phase or condition),
//!   `status.instancesReportedState` (`isPrimary`, timeline, IP of the last reconcile: no
//!   running flag), the Pods themselves (the controller's RBAC covers `clusters` only; the
//!   Cluster status is CNPG's own aggregate of their readiness).
//! - A status without `readyInstances` (CNPG never reconciled the Cluster) is not "0 ready".
//!   The status is CNPG's snapshot: with an absent operator it keeps showing the instances
//!   Ready, the fence is never observed and stays stuck (the safe side, even when the pods'
//!   instance managers did stop PostgreSQL). A status that already showed 0 ready before the
//!   annotation (nothing Ready at the last reconcile) completes the fence at once; a pod coming
//!   back reads the annotation first ("if a fenced instance is deleted, the pod is re-created
//!   normally, but the postmaster isn't started").
//! - Latency: the pod turns un-Ready only after its readiness probe fails (`.spec.probes.readiness`,
//!   period × failure threshold, seconds) and the operator's next reconcile: on a real cluster
//!   this can exceed a fence step timeout derived from a short lease. Tune the probe, or accept
//!   `FenceStuck` rounds until CNPG reports it (each round re-fences, idempotently).
//!
//! `unfence` is done once the annotation is removed: lifting a fence only gives availability
//! back, and CNPG's restart plus readiness period would not fit the un-fence step timeout. The
//! next round reads the result: the Cluster is writable again once CNPG reports the primary
//! Ready (`role` is `Down` until then).
//!
//! **The demotion token crosses regions through peer access.** CNPG promotes a replica cluster
//! that was given the old primary's demotion token only after it replayed WAL past the
//! demotion checkpoint (and checks system id and timeline): that is how a planned switchover
//! loses nothing. The token sits in the OLD primary's `status.demotionToken`, in the other
//! region's cluster, so this adapter reads the peer Cluster through an optional second client
//! ([`PeerCluster`], a kubeconfig for the peer region). `peer_replayed` answers with the
//! demotion LSN only when that peer access exists (the wait is then CNPG's, at promotion);
//! without it, a planned switchover stops at `wait-replayed` with `CnpgPeerAccessMissing`
//! rather than letting the target promote without the token. An unplanned promotion never
//! uses a token (the decision core's RPO gate decided it).
//!
//! **Replication numbers.** A CNPG Cluster's status carries no LSNs, lag or WAL-receiver state.
//! They come from a [`LagSource`] (SQL through the Cluster's read-write service, see
//! [`PgLag`]); without one they are UNKNOWN: lag `u64::MAX`, not streaming — automatic failover
//! then only passes the RPO gate when the primary reported synchronous replication.
//!
//! Named stuck states (in the error text, and as [`CnpgStuck`] for conditions):
//! `CnpgDemotionTokenMissing` (spec says replica, no token after the settle timeout),
//! `CnpgWalReceiverActive` (promotion with a token waiting because the WAL receiver still
//! streams from the old primary), `CnpgPromotionNotSettled`, `CnpgPeerAccessMissing`,
//! `CnpgFenceNotObserved` (fence annotation stored, CNPG has not reported the instances
//! stopped after the settle timeout).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use super::{EPOCH_ANNOTATION, applied_epoch, check_epoch, is_conflict, plane_error};
use crate::adapters::postgres::{DbObservation, PgDatabase, parse_lsn};
use crate::decide::{DbRole, Lsn};
use crate::ports::{Database, PlaneError};

/// CNPG's fencing annotation.
pub const FENCED_ANNOTATION: &str = "cnpg.io/fencedInstances";
/// This adapter's record that synchronous replication is suspended.
pub const SYNC_SUSPENDED_ANNOTATION: &str = "dr.openova.io/sync-suspended";
/// The LSN of the demotion token present when this adapter asked for a demotion (`0/0`:
/// none): only a token past it belongs to that demotion (CNPG may leave an older token in the
/// status after a later promotion).
pub const PRE_DEMOTION_ANNOTATION: &str = "dr.openova.io/pre-demotion-token-lsn";

/// The `postgresql.cnpg.io/v1` `clusters` resource.
pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

/// CNPG's known stuck states.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CnpgStuck {
    /// Demotion requested, no `status.demotionToken`.
    DemotionTokenMissing,
    /// Promotion with a token waits: the WAL receiver still streams from the old primary.
    WalReceiverActive,
    /// Promotion requested, the Cluster has not settled as primary.
    PromotionNotSettled,
    /// A planned switchover needs the peer's demotion token and there is no peer access.
    PeerAccessMissing,
    /// Fence requested, CNPG has not reported the instances stopped.
    FenceNotObserved,
}

impl CnpgStuck {
    /// Every named state (for matching error texts, see [`CnpgStuck::name`]).
    pub const ALL: [CnpgStuck; 5] = [
        CnpgStuck::DemotionTokenMissing,
        CnpgStuck::WalReceiverActive,
        CnpgStuck::PromotionNotSettled,
        CnpgStuck::PeerAccessMissing,
        CnpgStuck::FenceNotObserved,
    ];

    /// The condition name.
    pub fn name(self) -> &'static str {
        match self {
            CnpgStuck::DemotionTokenMissing => "CnpgDemotionTokenMissing",
            CnpgStuck::WalReceiverActive => "CnpgWalReceiverActive",
            CnpgStuck::PromotionNotSettled => "CnpgPromotionNotSettled",
            CnpgStuck::PeerAccessMissing => "CnpgPeerAccessMissing",
            CnpgStuck::FenceNotObserved => "CnpgFenceNotObserved",
        }
    }

    fn error(self, detail: &str) -> PlaneError {
        PlaneError::Failed(format!("{}: {detail}", self.name()))
    }
}

/// What the controller reads from a `Cluster` (pure: [`ClusterView::from_value`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// `metadata.name`.
    pub name: String,
    /// `spec.replica.self` (distributed topology).
    pub self_name: Option<String>,
    /// `spec.replica.primary`.
    pub primary: Option<String>,
    /// `spec.replica.source` (the peer's Cluster in the distributed topology).
    pub source: Option<String>,
    /// `spec.replica.enabled`.
    pub enabled: Option<bool>,
    /// `spec.replica.promotionToken`.
    pub promotion_token: Option<String>,
    /// `cnpg.io/fencedInstances` names any instance.
    pub fenced: bool,
    /// `status.currentPrimary`.
    pub current_primary: Option<String>,
    /// `status.targetPrimary`.
    pub target_primary: Option<String>,
    /// `status.readyInstances` (0 when absent).
    pub ready_instances: i64,
    /// `status.readyInstances` is present (CNPG reported readiness at all).
    pub ready_reported: bool,
    /// `status.instancesStatus.healthy`: the pods CNPG last saw Ready.
    pub healthy_instances: Vec<String>,
    /// `status.demotionToken`.
    pub demotion_token: Option<String>,
    /// `status.lastPromotionToken`.
    pub last_promotion_token: Option<String>,
    /// `status.switchReplicaClusterStatus.inProgress`.
    pub switching: bool,
    /// `status.phase`.
    pub phase: Option<String>,
    /// `status.phaseReason`.
    pub phase_reason: Option<String>,
    /// `spec.postgresql.synchronous` is configured.
    pub sync_configured: bool,
    /// Synchronous replication suspended (annotation, or `dataDurability: preferred`).
    pub sync_suspended: bool,
    /// [`EPOCH_ANNOTATION`].
    pub epoch: u64,
    /// [`PRE_DEMOTION_ANNOTATION`].
    pub pre_demotion_lsn: Option<Lsn>,
}

fn s(v: &Value, ptr: &str) -> Option<String> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

impl ClusterView {
    /// Reads a Cluster object (JSON).
    pub fn from_value(v: &Value) -> ClusterView {
        let annotations = v.pointer("/metadata/annotations");
        let fenced = annotations
            .and_then(|a| a.get(FENCED_ANNOTATION))
            .and_then(Value::as_str)
            .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
            .is_some_and(|l| !l.is_empty());
        let durability = s(v, "/spec/postgresql/synchronous/dataDurability");
        let suspended_annotation = annotations
            .and_then(|a| a.get(SYNC_SUSPENDED_ANNOTATION))
            .and_then(Value::as_str)
            == Some("true");
        ClusterView {
            name: s(v, "/metadata/name").unwrap_or_default(),
            self_name: s(v, "/spec/replica/self"),
            primary: s(v, "/spec/replica/primary"),
            source: s(v, "/spec/replica/source"),
            enabled: v.pointer("/spec/replica/enabled").and_then(Value::as_bool),
            promotion_token: s(v, "/spec/replica/promotionToken"),
            fenced,
            current_primary: s(v, "/status/currentPrimary"),
            target_primary: s(v, "/status/targetPrimary"),
            ready_instances: v
                .pointer("/status/readyInstances")
                .and_then(Value::as_i64)
                .unwrap_or(0),
            ready_reported: v
                .pointer("/status/readyInstances")
                .and_then(Value::as_i64)
                .is_some(),
            healthy_instances: v
                .pointer("/status/instancesStatus/healthy")
                .and_then(Value::as_array)
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            demotion_token: s(v, "/status/demotionToken"),
            last_promotion_token: s(v, "/status/lastPromotionToken"),
            switching: v
                .pointer("/status/switchReplicaClusterStatus/inProgress")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            phase: s(v, "/status/phase"),
            phase_reason: s(v, "/status/phaseReason"),
            sync_configured: v.pointer("/spec/postgresql/synchronous").is_some(),
            sync_suspended: suspended_annotation || durability.as_deref() == Some("preferred"),
            epoch: applied_epoch(v),
            pre_demotion_lsn: annotations
                .and_then(|a| a.get(PRE_DEMOTION_ANNOTATION))
                .and_then(Value::as_str)
                .and_then(parse_lsn),
        }
    }

    /// The LSN of the demotion token of the CURRENT demotion: present, readable and past the
    /// token that was there when the demotion was asked for.
    pub fn fresh_token_lsn(&self) -> Option<Lsn> {
        let lsn = self.demotion_token.as_deref().and_then(token_lsn)?;
        (lsn > self.pre_demotion_lsn.unwrap_or_default()).then_some(lsn)
    }

    /// The name this Cluster calls itself in the distributed topology.
    pub fn me(&self) -> &str {
        self.self_name.as_deref().unwrap_or(&self.name)
    }

    /// Distributed topology (`spec.replica.self` + `primary`), else the `enabled` switch.
    pub fn distributed(&self) -> bool {
        self.self_name.is_some() && self.primary.is_some()
    }

    /// The spec makes this Cluster a replica cluster.
    pub fn spec_replica(&self) -> bool {
        if self.distributed() {
            self.primary.as_deref() != Some(self.me())
        } else {
            self.enabled.unwrap_or(false)
        }
    }

    /// The spec makes it primary and CNPG settled there.
    pub fn settled_primary(&self) -> bool {
        !self.spec_replica()
            && !self.switching
            && self.current_primary.is_some()
            && self.current_primary == self.target_primary
    }

    /// CNPG reports no instance Ready: `status.readyInstances` present and 0, and no pod under
    /// `status.instancesStatus.healthy` (module docs: what a fenced instance looks like).
    pub fn instances_stopped(&self) -> bool {
        self.ready_reported && self.ready_instances == 0 && self.healthy_instances.is_empty()
    }

    /// The fence is in place: the annotation is stored AND CNPG reports the instances stopped.
    pub fn fence_observed(&self) -> bool {
        self.fenced && self.instances_stopped()
    }

    /// The role: `Down` without a current primary, or without ready instances unless they are
    /// stopped by our fence (a fenced primary stays the primary: CNPG keeps `currentPrimary`
    /// and does not fail over); `Standby` when the spec says replica, `Primary` once settled
    /// as primary (a promotion in flight is still `Standby`).
    pub fn role(&self) -> DbRole {
        if self.current_primary.is_none() || (self.ready_instances < 1 && !self.fence_observed()) {
            DbRole::Down
        } else if !self.spec_replica() && self.settled_primary() {
            DbRole::Primary
        } else {
            DbRole::Standby
        }
    }

    /// A known stuck state visible in the status now.
    pub fn stuck(&self) -> Option<CnpgStuck> {
        let reason = format!(
            "{} {}",
            self.phase.as_deref().unwrap_or(""),
            self.phase_reason.as_deref().unwrap_or("")
        )
        .to_ascii_lowercase();
        (reason.contains("wal receiver") || reason.contains("walreceiver"))
            .then_some(CnpgStuck::WalReceiverActive)
    }

    /// The reading [`crate::observe`] turns into `Local` / `Replication` (lag unknown unless
    /// `lag` has it).
    pub fn observation(&self, lag: Option<&LagReading>) -> DbObservation {
        let role = match self.role() {
            DbRole::Down => DbRole::Standby,
            r => r,
        };
        DbObservation {
            role,
            read_only: self.fence_observed(),
            sync_names: if self.sync_suspended {
                String::new()
            } else {
                "cnpg".to_owned()
            },
            peer_sync_state: lag.and_then(|l| l.peer_sync_state.clone()),
            flush_lsn: lag.and_then(|l| l.local_lsn),
            replay_lsn: lag.and_then(|l| l.replay_lsn),
            local_lsn: lag.and_then(|l| l.local_lsn),
            lag_bytes: lag.map_or(u64::MAX, |l| l.lag_bytes),
            lag_seconds: lag.map_or(u64::MAX, |l| l.lag_seconds),
            streaming: lag.is_some_and(|l| l.streaming),
        }
    }
}

/// Decodes the LSN of a CNPG demotion token (base64 JSON of `pg_controldata` values:
/// `latestCheckpointREDOLocation`).
pub fn token_lsn(token: &str) -> Option<Lsn> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let v: Value = serde_json::from_slice(&raw).ok()?;
    parse_lsn(v.get("latestCheckpointREDOLocation")?.as_str()?)
}

/// Builds a demotion token like CNPG's (tests and the lab's CNPG simulation).
pub fn make_token(lsn: Lsn, system_id: &str, timeline: u32) -> String {
    let body = json!({
        "latestCheckpointTimelineID": timeline.to_string(),
        "redoWALFile": format!("{timeline:08X}{:08X}{:08X}", lsn.0 >> 32, (lsn.0 & 0xFFFF_FFFF) >> 24),
        "databaseSystemIdentifier": system_id,
        "latestCheckpointREDOLocation": lsn.to_string(),
        "timeOfLatestCheckpoint": "",
        "operatorVersion": "continuum-controller",
    });
    base64::engine::general_purpose::STANDARD.encode(body.to_string())
}

fn with_epoch(mut patch: Value, epoch: u64, applied: u64) -> Value {
    patch["metadata"]["annotations"][EPOCH_ANNOTATION] = json!(epoch.max(applied).to_string());
    patch
}

/// Patch: fence every instance.
pub fn fence_patch(epoch: u64, applied: u64) -> Value {
    with_epoch(
        json!({"metadata": {"annotations": {FENCED_ANNOTATION: "[\"*\"]"}}}),
        epoch,
        applied,
    )
}

/// Patch: lift the fence.
pub fn unfence_patch(epoch: u64, applied: u64) -> Value {
    with_epoch(
        json!({"metadata": {"annotations": {FENCED_ANNOTATION: null}}}),
        epoch,
        applied,
    )
}

/// Patch: become a replica cluster of `primary` (demotion, rebuild). When the spec changes
/// from primary to replica, the LSN of any token already in the status is recorded
/// ([`PRE_DEMOTION_ANNOTATION`]) so that token is never taken for this demotion's.
pub fn replica_patch(view: &ClusterView, primary: &str, epoch: u64) -> Value {
    let replica = if view.distributed() {
        json!({"primary": primary, "promotionToken": null})
    } else {
        json!({"enabled": true})
    };
    let mut p = json!({"spec": {"replica": replica}});
    if !view.spec_replica() {
        let stale = view
            .demotion_token
            .as_deref()
            .and_then(token_lsn)
            .unwrap_or_default();
        p["metadata"]["annotations"][PRE_DEMOTION_ANNOTATION] = json!(stale.to_string());
    }
    with_epoch(p, epoch, view.epoch)
}

/// Patch: become the primary, with the old primary's demotion token for a planned switchover.
pub fn promote_patch(view: &ClusterView, token: Option<&str>, epoch: u64) -> Value {
    let replica = if view.distributed() {
        json!({"primary": view.me(), "promotionToken": token})
    } else {
        json!({"enabled": false})
    };
    with_epoch(json!({"spec": {"replica": replica}}), epoch, view.epoch)
}

/// Patch: synchronous replication on/off.
pub fn sync_patch(view: &ClusterView, on: bool, epoch: u64) -> Value {
    let mut p = json!({"metadata": {"annotations": {
        SYNC_SUSPENDED_ANNOTATION: if on { Value::Null } else { json!("true") }
    }}});
    if view.sync_configured {
        p["spec"] = json!({"postgresql": {"synchronous": {
            "dataDurability": if on { "required" } else { "preferred" }
        }}});
    }
    with_epoch(p, epoch, view.epoch)
}

/// Replication numbers the Cluster status does not carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LagReading {
    /// WAL streams between the regions.
    pub streaming: bool,
    /// Replay lag in bytes.
    pub lag_bytes: u64,
    /// Replay lag in seconds.
    pub lag_seconds: u64,
    /// The local position (primary: flushed; standby: replayed).
    pub local_lsn: Option<Lsn>,
    /// Primary: the peer's replayed LSN; standby: its own.
    pub replay_lsn: Option<Lsn>,
    /// Primary: the peer's `sync_state`.
    pub peer_sync_state: Option<String>,
}

/// A boxed future (object-safe async trait methods).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where replication numbers come from.
pub trait LagSource: Send + Sync + std::fmt::Debug {
    /// The current reading, `None` when unknown.
    fn read(&self) -> BoxFuture<'_, Option<LagReading>>;
}

/// No replication numbers (all unknown).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoLag;

impl LagSource for NoLag {
    fn read(&self) -> BoxFuture<'_, Option<LagReading>> {
        Box::pin(async { None })
    }
}

/// A reading set from outside (tests, a sidecar).
#[derive(Debug, Default)]
pub struct StaticLag(Mutex<Option<LagReading>>);

impl StaticLag {
    /// A source answering `reading`.
    pub fn new(reading: Option<LagReading>) -> StaticLag {
        StaticLag(Mutex::new(reading))
    }

    /// Replaces the reading.
    pub fn set(&self, reading: Option<LagReading>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = reading;
    }
}

impl LagSource for StaticLag {
    fn read(&self) -> BoxFuture<'_, Option<LagReading>> {
        let r = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Box::pin(async move { r })
    }
}

/// Replication numbers by SQL through the Cluster's read-write service (the standalone mode's
/// `PgDatabase::observe`).
#[derive(Debug)]
pub struct PgLag(pub PgDatabase);

impl LagSource for PgLag {
    fn read(&self) -> BoxFuture<'_, Option<LagReading>> {
        Box::pin(async move {
            let o = self.0.observe().await.ok()?;
            Some(LagReading {
                streaming: o.streaming,
                lag_bytes: o.lag_bytes,
                lag_seconds: o.lag_seconds,
                local_lsn: o.local_lsn,
                replay_lsn: o.replay_lsn,
                peer_sync_state: o.peer_sync_state,
            })
        })
    }
}

/// Read access to the peer region's Cluster (its cluster's API).
#[derive(Clone)]
pub struct PeerCluster {
    /// Clusters in the peer's namespace.
    pub api: Api<DynamicObject>,
    /// The peer Cluster's name.
    pub name: String,
}

impl std::fmt::Debug for PeerCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PeerCluster({})", self.name)
    }
}

/// The CNPG [`Database`] adapter.
#[derive(Debug, Clone)]
pub struct CnpgDatabase {
    api: Api<DynamicObject>,
    name: String,
    peer: Option<PeerCluster>,
    lag: Arc<dyn LagSource>,
    settle: Duration,
    poll: Duration,
}

impl CnpgDatabase {
    /// The adapter for Cluster `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> CnpgDatabase {
        CnpgDatabase {
            api: Api::namespaced_with(client, namespace, &cluster_resource()),
            name: name.to_owned(),
            peer: None,
            lag: Arc::new(NoLag),
            settle: Duration::from_secs(20),
            poll: Duration::from_millis(100),
        }
    }

    /// With read access to the peer region's Cluster (demotion token hand-over).
    pub fn with_peer(mut self, peer: Option<PeerCluster>) -> CnpgDatabase {
        self.peer = peer;
        self
    }

    /// With a source of replication numbers.
    pub fn with_lag(mut self, lag: Arc<dyn LagSource>) -> CnpgDatabase {
        self.lag = lag;
        self
    }

    /// How long demote/promote/rebuild wait for CNPG to settle (keep it under the executor's
    /// step timeouts so the named stuck state, not a bare timeout, is reported).
    pub fn with_settle(mut self, settle: Duration, poll: Duration) -> CnpgDatabase {
        self.settle = settle;
        self.poll = poll;
        self
    }

    /// The Cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self) -> Result<Value, PlaneError> {
        let o = self
            .api
            .get(&self.name)
            .await
            .map_err(|e| plane_error(&format!("reading Cluster {}", self.name), &e))?;
        serde_json::to_value(&o).map_err(|e| PlaneError::Failed(e.to_string()))
    }

    /// Reads the Cluster.
    pub async fn view(&self) -> Result<ClusterView, PlaneError> {
        Ok(ClusterView::from_value(&self.get().await?))
    }

    /// The Cluster view and the observation for [`crate::observe`].
    pub async fn observe(&self) -> Result<(ClusterView, DbObservation), PlaneError> {
        let view = self.view().await?;
        if view.role() == DbRole::Down {
            return Err(PlaneError::Unavailable(format!(
                "Cluster {} has no ready primary instance",
                self.name
            )));
        }
        let lag = self.lag.read().await;
        let obs = view.observation(lag.as_ref());
        Ok((view, obs))
    }

    /// Epoch check + patch in one compare-and-swap (retried on a 409).
    async fn write(
        &self,
        epoch: u64,
        what: &str,
        body: impl Fn(&ClusterView) -> Value,
    ) -> Result<ClusterView, PlaneError> {
        self.write_checked(epoch, true, what, body).await
    }

    /// `write`, with the epoch check only when `enforce` (fencing is never refused: see
    /// [`Database::fence`] below).
    async fn write_checked(
        &self,
        epoch: u64,
        enforce: bool,
        what: &str,
        body: impl Fn(&ClusterView) -> Value,
    ) -> Result<ClusterView, PlaneError> {
        let mut last = None;
        for _ in 0..5 {
            let v = self.get().await?;
            let view = ClusterView::from_value(&v);
            if enforce {
                check_epoch(view.epoch, epoch)?;
            }
            let mut patch = body(&view);
            patch["metadata"]["resourceVersion"] = v
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            match self
                .api
                .patch(&self.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(o) => {
                    let v =
                        serde_json::to_value(&o).map_err(|e| PlaneError::Failed(e.to_string()))?;
                    return Ok(ClusterView::from_value(&v));
                }
                Err(e) if is_conflict(&e) => last = Some(e),
                Err(e) => return Err(plane_error(&format!("{what} Cluster {}", self.name), &e)),
            }
        }
        Err(PlaneError::Unavailable(format!(
            "{what} Cluster {}: kept conflicting: {last:?}",
            self.name
        )))
    }

    /// Polls until `done` holds (or a stuck state shows) for at most the settle timeout.
    async fn settle(
        &self,
        done: impl Fn(&ClusterView) -> bool,
        stuck: CnpgStuck,
    ) -> Result<ClusterView, PlaneError> {
        self.wait_for(done, |view| {
            view.stuck().unwrap_or(stuck).error(&format!(
                "Cluster {} not settled after {:?} (phase {:?}, reason {:?})",
                self.name, self.settle, view.phase, view.phase_reason
            ))
        })
        .await
    }

    /// Polls the Cluster until `done` holds; after the settle timeout, `stuck` names why not.
    async fn wait_for(
        &self,
        done: impl Fn(&ClusterView) -> bool,
        stuck: impl Fn(&ClusterView) -> PlaneError,
    ) -> Result<ClusterView, PlaneError> {
        let until = tokio::time::Instant::now() + self.settle;
        loop {
            let view = self.view().await?;
            if done(&view) {
                return Ok(view);
            }
            if tokio::time::Instant::now() >= until {
                return Err(stuck(&view));
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// The peer Cluster's demotion token when it demoted towards this Cluster.
    async fn peer_token(&self, me: &str) -> Option<String> {
        let peer = self.peer.as_ref()?;
        let o = peer.api.get(&peer.name).await.ok()?;
        let v = serde_json::to_value(&o).ok()?;
        let pv = ClusterView::from_value(&v);
        (pv.spec_replica() && pv.primary.as_deref() == Some(me) && pv.fresh_token_lsn().is_some())
            .then_some(pv.demotion_token)
            .flatten()
    }

    fn peer_name(&self, view: &ClusterView, target: &str) -> String {
        view.source
            .clone()
            .or_else(|| self.peer.as_ref().map(|p| p.name.clone()))
            .unwrap_or_else(|| target.to_owned())
    }
}

impl Database for CnpgDatabase {
    async fn promote(&self, epoch: u64) -> Result<Lsn, PlaneError> {
        let view = self.view().await?;
        check_epoch(view.epoch, epoch)?;
        // A planned switchover: the old primary demoted towards us and left its token.
        let token = if view.settled_primary() {
            view.promotion_token.clone()
        } else {
            self.peer_token(view.me()).await
        };
        let t = token.clone();
        self.write(epoch, "promoting", move |v| {
            promote_patch(v, t.as_deref(), epoch)
        })
        .await?;
        let t = token.clone();
        let settled = self
            .settle(
                move |v| {
                    v.settled_primary()
                        && (t.is_none() || !v.distributed() || v.last_promotion_token == t)
                },
                CnpgStuck::PromotionNotSettled,
            )
            .await?;
        let _ = settled;
        Ok(token.as_deref().and_then(token_lsn).unwrap_or_default())
    }

    /// Fencing only takes write authority away, so a lower epoch does not refuse it: a
    /// restarted controller knows no epoch until it holds the lease again and must still be
    /// able to fence itself (the stored epoch annotation never goes down). Done only once CNPG
    /// reports every instance stopped (module docs), never on the stored annotation alone.
    async fn fence(&self, epoch: u64) -> Result<(), PlaneError> {
        self.write_checked(epoch, false, "fencing", |v| fence_patch(epoch, v.epoch))
            .await?;
        self.wait_for(ClusterView::fence_observed, |view| {
            CnpgStuck::FenceNotObserved.error(&format!(
                "Cluster {}: fence annotation stored, CNPG has not reported the instances \
                 stopped after {:?} (readyInstances {}, healthy {:?}; CNPG operator absent or \
                 slow?)",
                self.name,
                self.settle,
                if view.ready_reported {
                    view.ready_instances.to_string()
                } else {
                    "not reported".to_owned()
                },
                view.healthy_instances
            ))
        })
        .await
        .map(|_| ())
    }

    async fn unfence(&self, epoch: u64) -> Result<(), PlaneError> {
        self.write(epoch, "un-fencing", |v| unfence_patch(epoch, v.epoch))
            .await
            .map(|_| ())
    }

    async fn demote(&self, epoch: u64, target: &str) -> Result<Lsn, PlaneError> {
        let view = self.view().await?;
        let peer = self.peer_name(&view, target);
        self.write(epoch, "demoting", |v| replica_patch(v, &peer, epoch))
            .await?;
        let v = self
            .settle(
                |v| v.fresh_token_lsn().is_some(),
                CnpgStuck::DemotionTokenMissing,
            )
            .await?;
        v.fresh_token_lsn()
            .ok_or_else(|| CnpgStuck::DemotionTokenMissing.error("unreadable token"))
    }

    async fn peer_replayed(&self) -> Result<Lsn, PlaneError> {
        if self.peer.is_none() {
            return Err(CnpgStuck::PeerAccessMissing.error(
                "no access to the peer region's Cluster: the demotion token cannot be handed over",
            ));
        }
        // CNPG's promotion with the token waits for the replay itself (module docs).
        let view = self.view().await?;
        view.fresh_token_lsn()
            .ok_or_else(|| CnpgStuck::DemotionTokenMissing.error("no demotion token"))
    }

    async fn set_sync(&self, epoch: u64, on: bool) -> Result<(), PlaneError> {
        self.write(epoch, "reconfiguring sync on", |v| sync_patch(v, on, epoch))
            .await
            .map(|_| ())
    }

    async fn rebuild(&self, source: &str, epoch: u64) -> Result<(), PlaneError> {
        let view = self.view().await?;
        let peer = self.peer_name(&view, source);
        self.write(epoch, "rebuilding", |v| replica_patch(v, &peer, epoch))
            .await?;
        self.settle(
            |v| v.spec_replica() && !v.switching && v.current_primary.is_some(),
            CnpgStuck::PromotionNotSettled,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(primary: &str, self_name: &str) -> Value {
        json!({
            "metadata": {"name": self_name, "annotations": {EPOCH_ANNOTATION: "3"}},
            "spec": {"instances": 1, "replica": {"self": self_name, "primary": primary, "source": "pg-b"}},
            "status": {"currentPrimary": format!("{self_name}-1"), "targetPrimary": format!("{self_name}-1"), "readyInstances": 1}
        })
    }

    #[test]
    fn a_distributed_cluster_is_primary_when_it_names_itself_and_settled() {
        let v = ClusterView::from_value(&cluster("pg-a", "pg-a"));
        assert!(v.distributed() && !v.spec_replica());
        assert_eq!(v.role(), DbRole::Primary);
        assert_eq!(v.epoch, 3);
        let v = ClusterView::from_value(&cluster("pg-b", "pg-a"));
        assert_eq!(v.role(), DbRole::Standby);
        let mut c = cluster("pg-a", "pg-a");
        c["status"]["targetPrimary"] = json!("pg-a-2");
        assert_eq!(ClusterView::from_value(&c).role(), DbRole::Standby);
        c["status"]["readyInstances"] = json!(0);
        assert_eq!(ClusterView::from_value(&c).role(), DbRole::Down);
    }

    #[test]
    fn the_legacy_replica_switch_drives_a_cluster_without_self() {
        let c = json!({"metadata": {"name": "x"}, "spec": {"replica": {"enabled": true, "source": "y"}},
            "status": {"currentPrimary": "x-1", "targetPrimary": "x-1", "readyInstances": 2}});
        let v = ClusterView::from_value(&c);
        assert!(!v.distributed() && v.spec_replica());
        assert_eq!(
            promote_patch(&v, None, 4)["spec"]["replica"],
            json!({"enabled": false})
        );
        assert_eq!(
            replica_patch(&v, "y", 4)["spec"]["replica"],
            json!({"enabled": true})
        );
    }

    #[test]
    fn patches_carry_the_epoch_and_the_cnpg_fields() {
        let v = ClusterView::from_value(&cluster("pg-a", "pg-a"));
        let p = replica_patch(&v, "pg-b", 5);
        assert_eq!(p["spec"]["replica"]["primary"], "pg-b");
        assert_eq!(p["spec"]["replica"]["promotionToken"], Value::Null);
        assert_eq!(p["metadata"]["annotations"][EPOCH_ANNOTATION], "5");
        let p = promote_patch(&v, Some("tok"), 6);
        assert_eq!(
            p["spec"]["replica"],
            json!({"primary": "pg-a", "promotionToken": "tok"})
        );
        let p = fence_patch(2, 9);
        assert_eq!(p["metadata"]["annotations"][FENCED_ANNOTATION], "[\"*\"]");
        // The annotation never goes down.
        assert_eq!(p["metadata"]["annotations"][EPOCH_ANNOTATION], "9");
        assert_eq!(
            unfence_patch(9, 9)["metadata"]["annotations"][FENCED_ANNOTATION],
            Value::Null
        );
    }

    #[test]
    fn fencing_and_sync_are_read_back_from_annotations_and_durability() {
        let mut c = cluster("pg-a", "pg-a");
        c["metadata"]["annotations"][FENCED_ANNOTATION] = json!("[\"*\"]");
        let v = ClusterView::from_value(&c);
        assert!(v.fenced && !v.sync_suspended);
        // The annotation alone is no fence: CNPG still reports the instance Ready.
        assert!(!v.fence_observed() && !v.observation(None).read_only);
        c["metadata"]["annotations"][FENCED_ANNOTATION] = json!("[]");
        assert!(!ClusterView::from_value(&c).fenced);
        c["spec"]["postgresql"] =
            json!({"synchronous": {"method": "any", "number": 1, "dataDurability": "preferred"}});
        let v = ClusterView::from_value(&c);
        assert!(v.sync_configured && v.sync_suspended);
        assert_eq!(
            sync_patch(&v, true, 3)["spec"]["postgresql"]["synchronous"]["dataDurability"],
            "required"
        );
        let plain = ClusterView::from_value(&cluster("pg-a", "pg-a"));
        let p = sync_patch(&plain, false, 3);
        assert!(p.get("spec").is_none());
        assert_eq!(
            p["metadata"]["annotations"][SYNC_SUSPENDED_ANNOTATION],
            "true"
        );
    }

    #[test]
    fn a_fence_is_observed_only_when_cnpg_reports_no_instance_ready() {
        let mut c = cluster("pg-a", "pg-a");
        c["metadata"]["annotations"][FENCED_ANNOTATION] = json!("[\"*\"]");
        c["status"]["instancesStatus"] = json!({"healthy": ["pg-a-1"]});
        assert!(!ClusterView::from_value(&c).fence_observed());
        // Ready count down, but the pod still listed as healthy: not yet.
        c["status"]["readyInstances"] = json!(0);
        assert!(!ClusterView::from_value(&c).fence_observed());
        // What CNPG writes for a fenced instance: not Ready, active (`replicating`).
        c["status"]["instancesStatus"] = json!({"replicating": ["pg-a-1"]});
        let v = ClusterView::from_value(&c);
        assert!(v.fence_observed());
        // A fenced primary is still the primary (CNPG keeps currentPrimary), read-only.
        assert_eq!(v.role(), DbRole::Primary);
        assert!(v.observation(None).read_only);
        // Not fenced by us and nothing Ready: the database is down, not fenced.
        c["metadata"]["annotations"][FENCED_ANNOTATION] = json!("[]");
        assert_eq!(ClusterView::from_value(&c).role(), DbRole::Down);
        // No status at all (CNPG never reconciled the Cluster) is not "0 ready".
        let mut c = json!({"metadata": {"name": "pg-a", "annotations": {FENCED_ANNOTATION: "[\"*\"]"}},
            "spec": {"replica": {"self": "pg-a", "primary": "pg-a"}}});
        assert!(!ClusterView::from_value(&c).fence_observed());
        c["status"] = json!({});
        assert!(!ClusterView::from_value(&c).instances_stopped());
    }

    #[test]
    fn a_token_left_from_an_earlier_demotion_is_not_taken_for_the_current_one() {
        let mut c = cluster("pg-a", "pg-a");
        let old = make_token(Lsn(0x100), "1", 1);
        c["status"]["demotionToken"] = json!(old);
        let v = ClusterView::from_value(&c);
        let p = replica_patch(&v, "pg-b", 4);
        assert_eq!(
            p["metadata"]["annotations"][PRE_DEMOTION_ANNOTATION],
            "0/100"
        );
        // After the patch, with the old token still there: not fresh.
        c["spec"]["replica"]["primary"] = json!("pg-b");
        c["metadata"]["annotations"][PRE_DEMOTION_ANNOTATION] = json!("0/100");
        assert_eq!(ClusterView::from_value(&c).fresh_token_lsn(), None);
        c["status"]["demotionToken"] = json!(make_token(Lsn(0x200), "1", 1));
        assert_eq!(
            ClusterView::from_value(&c).fresh_token_lsn(),
            Some(Lsn(0x200))
        );
        // A re-run on the replica does not move the record.
        let v = ClusterView::from_value(&c);
        assert!(
            replica_patch(&v, "pg-b", 4)["metadata"]["annotations"]
                .get(PRE_DEMOTION_ANNOTATION)
                .is_none()
        );
    }

    #[test]
    fn the_demotion_token_yields_its_redo_lsn() {
        let t = make_token(Lsn(0x3_0000_0028), "7300000000000000001", 2);
        assert_eq!(token_lsn(&t), Some(Lsn(0x3_0000_0028)));
        assert_eq!(token_lsn("not base64!"), None);
    }

    #[test]
    fn unknown_lag_is_never_reported_as_zero_and_wal_receiver_stuck_is_named() {
        let v = ClusterView::from_value(&cluster("pg-b", "pg-a"));
        let o = v.observation(None);
        assert_eq!(o.lag_bytes, u64::MAX);
        assert!(!o.streaming);
        let mut c = cluster("pg-a", "pg-a");
        c["status"]["phaseReason"] = json!("waiting for the WAL receiver to stop");
        assert_eq!(
            ClusterView::from_value(&c).stuck(),
            Some(CnpgStuck::WalReceiverActive)
        );
    }
}
