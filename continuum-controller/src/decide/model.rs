//! The values [`super::decide`] reads ([`Observed`]) and writes ([`Plan`]).

use crate::audit::AuditEvent;
use contract::{LeaseState, Millis};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A region id, e.g. `eu-1`. Also the lease holder name of that region's controller.
pub type RegionId = String;

/// An instant on this process's LOCAL MONOTONIC clock, in milliseconds. Only durations between
/// two `Mono` values of the same region are ever computed; a `Mono` is never compared with a
/// wall-clock or witness time.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Mono(pub i64);

impl Mono {
    /// Milliseconds from `earlier` to `self`.
    pub fn since(self, earlier: Mono) -> i64 {
        self.0.saturating_sub(earlier.0)
    }

    /// `self + ms`.
    pub fn plus(self, ms: i64) -> Mono {
        Mono(self.0.saturating_add(ms))
    }
}

/// A PostgreSQL log sequence number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// What acknowledged commits wait for after an unplanned failover, when the promoted primary
/// has no synchronous standby left.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Accept writes with synchronous replication suspended, raise `DurabilityDegraded`, and
    /// restore synchronous replication as soon as the rebuilt peer streams.
    #[default]
    Default,
    /// Keep writes blocked until a synchronous standby exists (Patroni
    /// `synchronous_mode_strict`, CNPG `dataDurability: required`).
    Strict,
}

/// What drain + fence must be allowed at least (see `SAFETY.md`: the measured PostgreSQL
/// fence, immediate stop, takes well under 200 ms; the route drain a few ms; the rest is room
/// for a loaded host). Timings that leave less are refused at validation.
pub const MIN_FENCE_BUDGET_MS: i64 = 1_000;

/// How late after the deadline a runner may notice it (its tick wakes at the deadline).
pub const TICK_SLACK_MS: i64 = 100;

/// Lease timing. All durations in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timing {
    /// Lease TTL granted by the witness.
    pub ttl_ms: i64,
    /// How often the holder renews.
    pub renew_ms: i64,
    /// Safety margin: the holder self-fences `renew + margin` before the TTL runs out, which
    /// is the time the fence itself (drain, read-only) may take plus clock-rate error.
    pub margin_ms: i64,
    /// Minimum time between two state changes (and how long peer probes must fail) before an
    /// automatic failover or an un-fence; flapping shorter than this changes nothing.
    pub hold_down_ms: i64,
    /// Worst relative clock-rate error between a region and the witness (e.g. 0.05 = 5 %).
    pub max_drift: f64,
}

/// A timing that would let a region keep write authority after the witness may grant the
/// lease to another one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TimingError {
    /// A duration is not positive.
    #[error("{0} must be > 0 ms")]
    NotPositive(&'static str),
    /// The self-fence deadline leaves less than one renew interval to retry.
    #[error("deadline {deadline_ms} ms (ttl - renew - margin) must exceed renew {renew_ms} ms")]
    NoRetry {
        /// The computed deadline.
        deadline_ms: i64,
        /// The renew interval.
        renew_ms: i64,
    },
    /// The worst-case fence (a renew attempt that ends at the deadline, the tick that notices,
    /// then drain and fence) could still be running when the witness may grant the lease
    /// elsewhere.
    #[error(
        "fence budget {budget_ms} ms (ttl·(1−drift)/(1+drift) − deadline − {TICK_SLACK_MS} ms) \
         is below the {MIN_FENCE_BUDGET_MS} ms that drain + fence need: raise renew or margin"
    )]
    NoFenceBudget {
        /// The computed budget.
        budget_ms: i64,
    },
    /// With the worst drift, the deadline could end after the witness TTL.
    #[error("deadline {deadline_ms} ms is not strictly inside ttl {ttl_ms} ms at drift {drift}")]
    NotInsideTtl {
        /// The computed deadline.
        deadline_ms: i64,
        /// The TTL.
        ttl_ms: i64,
        /// The drift bound.
        drift: f64,
    },
}

impl Timing {
    /// TTL 30 s, renew 10 s, margin 2 s, hold-down 5 s, drift 5 %.
    pub fn standard() -> Timing {
        Timing {
            ttl_ms: 30_000,
            renew_ms: 10_000,
            margin_ms: 2_000,
            hold_down_ms: 5_000,
            max_drift: 0.05,
        }
    }

    /// The self-fence deadline, measured from the local instant the last successful renew was
    /// SENT: `ttl - renew - margin`.
    pub fn deadline_ms(&self) -> i64 {
        self.ttl_ms - self.renew_ms - self.margin_ms
    }

    /// The time from the self-fence deadline to the earliest instant the witness may grant the
    /// lease elsewhere, on this region's clock at the worst drift, less [`TICK_SLACK_MS`] for
    /// the tick that notices the deadline: what drain + fence may take at most. A renew attempt
    /// never runs past the deadline (the executor caps it), so the fence starts by then.
    ///
    /// The witness grants elsewhere no earlier than `ttl` of ITS time after it granted us,
    /// which was no earlier than our send: `ttl·(1−d)` true time, at most `ttl·(1−d)/(1+d)` of
    /// ours.
    pub fn fence_budget_ms(&self) -> i64 {
        let d = self.max_drift;
        let earliest_grant = ((self.ttl_ms as f64) * (1.0 - d) / (1.0 + d)).floor() as i64;
        earliest_grant - self.deadline_ms() - TICK_SLACK_MS
    }

    /// Checks the deadline lies strictly inside the TTL even with the worst clock-rate error:
    /// `deadline · (1 + drift) < ttl · (1 − drift)`, and leaves at least one retry.
    pub fn validate(&self) -> Result<(), TimingError> {
        for (name, v) in [
            ("ttl", self.ttl_ms),
            ("renew", self.renew_ms),
            ("margin", self.margin_ms),
            ("holdDown", self.hold_down_ms),
        ] {
            if v <= 0 {
                return Err(TimingError::NotPositive(name));
            }
        }
        let deadline_ms = self.deadline_ms();
        if deadline_ms <= self.renew_ms {
            return Err(TimingError::NoRetry {
                deadline_ms,
                renew_ms: self.renew_ms,
            });
        }
        let d = self.max_drift;
        let inside = (0.0..0.5).contains(&d)
            && (deadline_ms as f64) * (1.0 + d) < (self.ttl_ms as f64) * (1.0 - d);
        if !inside {
            return Err(TimingError::NotInsideTtl {
                deadline_ms,
                ttl_ms: self.ttl_ms,
                drift: d,
            });
        }
        let budget_ms = self.fence_budget_ms();
        if budget_ms < MIN_FENCE_BUDGET_MS {
            return Err(TimingError::NoFenceBudget { budget_ms });
        }
        Ok(())
    }
}

/// The RPO bound a standby must be inside to be promoted automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RpoBound {
    /// Most bytes of WAL the standby may be behind.
    pub max_lag_bytes: u64,
    /// Most seconds the standby may be behind.
    pub max_lag_seconds: u64,
}

/// An operator's request for a planned switchover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchoverRequest {
    /// Unique id; a request whose id has completed is not run again.
    pub id: String,
    /// The region that becomes primary.
    pub target: RegionId,
}

/// An operator's failback request (move back to the home primary `spec.primary`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailbackRequest {
    /// Unique id.
    pub id: String,
    /// Explicit approval; without it the failback waits (condition `FailbackAwaitingApproval`).
    pub approved: bool,
}

/// The Continuum spec as the decision core needs it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    /// `ns/name` of the Continuum (audit `continuumName`).
    pub name: String,
    /// `ns/app` (audit `applicationName`).
    pub application: String,
    /// The regions (exactly two in this version).
    pub regions: Vec<RegionId>,
    /// The home primary (failback target).
    pub primary: RegionId,
    /// Whether a standby may fail over without an operator.
    pub auto_failover: bool,
    /// Lease timing.
    pub timing: Timing,
    /// RPO bound for automatic promotion.
    pub rpo: RpoBound,
    /// Durability mode after an unplanned failover.
    pub durability: Durability,
    /// Planned switchover request, if any.
    pub switchover: Option<SwitchoverRequest>,
    /// Failback request, if any.
    pub failback: Option<FailbackRequest>,
}

/// The local database's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DbRole {
    /// Not in recovery.
    Primary,
    /// In recovery (replica).
    Standby,
    /// Unreachable or stopped.
    Down,
}

/// The local data plane as observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Local {
    /// Database role.
    pub db: DbRole,
    /// `default_transaction_read_only` is on and writers were terminated (fenced).
    pub read_only: bool,
    /// The route sends no traffic here.
    pub drained: bool,
    /// Synchronous replication is suspended on this (primary) database.
    pub sync_suspended: bool,
}

/// The last answer the witness gave this region (read, acquire or renew).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseObs {
    /// The lease state.
    pub state: LeaseState,
    /// The witness's clock when it answered.
    pub witness_now: Millis,
    /// LOCAL monotonic instant the answer arrived.
    pub received_at: Mono,
}

impl LeaseObs {
    /// Estimated remaining validity at local `now`: validity at the answer minus the local
    /// time since it arrived. Optimistic (the answer was produced before it arrived), so it is
    /// only used to decide when TRYING to acquire makes sense; the witness decides.
    pub fn remaining_ms(&self, now: Mono) -> i64 {
        (self.state.remaining_ms(self.witness_now) - now.since(self.received_at)).max(0)
    }

    /// True when `who` holds the lease as far as this answer says at `now`.
    pub fn held_by(&self, who: &str, now: Mono) -> bool {
        self.state.holder == who && self.remaining_ms(now) > 0
    }

    /// True when someone other than `who` holds the lease as far as this answer says.
    pub fn held_by_other(&self, who: &str, now: Mono) -> bool {
        !self.state.holder.is_empty() && self.state.holder != who && self.remaining_ms(now) > 0
    }
}

/// This region's last successful acquire or renew.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Renewed {
    /// LOCAL monotonic instant the request was SENT (the witness granted it no earlier).
    pub sent_at: Mono,
    /// The epoch it was granted with.
    pub epoch: u64,
}

/// Replication as this region sees it (standby: its own WAL receiver; primary: its peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Replication {
    /// WAL is streaming between the regions.
    pub streaming: bool,
    /// The standby is (or last was) a synchronous standby whose commits the primary waited for.
    pub sync: bool,
    /// Replay lag in bytes.
    pub lag_bytes: u64,
    /// Replay lag in seconds.
    pub lag_seconds: u64,
    /// This region's database diverged (old primary after an unplanned failover) and must be
    /// rebuilt (pg_rewind / re-clone) before it may stream or serve.
    pub needs_rebuild: bool,
}

/// One vantage point's probe of the peer region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Vantage name (distinct vantages count once each).
    pub vantage: String,
    /// Healthy at the last probe.
    pub healthy: bool,
    /// LOCAL instant since which it has failed without interruption.
    pub failing_since: Option<Mono>,
}

/// What a persisted operation does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OpKind {
    /// Planned switchover.
    Switchover,
    /// Approved failback to the home primary.
    Failback,
    /// Unplanned failover (this region promotes).
    Failover,
    /// This region fenced itself.
    SelfFence,
    /// This region's database is being rebuilt as a standby.
    Rebuild,
}

/// The persisted operation (`status.operation`). Written before each external write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Id (the request id for switchover/failback).
    pub id: String,
    /// Kind.
    pub kind: OpKind,
    /// Name of the step started last ([`super::Step::name`]).
    pub step: String,
    /// Epoch the operation acts under.
    pub epoch: u64,
    /// Wall-clock start, informational only (status).
    pub started_at: Millis,
    /// The demotion LSN once the source demoted (switchover/failback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<Lsn>,
    /// Target region (switchover/failback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RegionId>,
}

/// Everything [`super::decide`] looks at.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// This region.
    pub region: RegionId,
    /// The spec.
    pub spec: Spec,
    /// Local data plane.
    pub local: Local,
    /// Last witness answer, if any since start.
    pub lease: Option<LeaseObs>,
    /// Last successful acquire/renew since start.
    pub renewed: Option<Renewed>,
    /// Replication.
    pub replication: Replication,
    /// Probes of the peer region.
    pub probes: Vec<Probe>,
    /// The persisted operation.
    pub operation: Option<Operation>,
    /// Request ids of the switchovers/failbacks this region completed recently (not re-run).
    pub completed: Vec<String>,
    /// LOCAL instant of the last state change (hold-down).
    pub last_change: Option<Mono>,
}

/// A condition to set on the status (Kubernetes-style type + message).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionKind {
    /// This region fenced itself (renew deadline passed or lease lost).
    SelfFenced,
    /// Another region holds the lease.
    LeaseHeldByPeer,
    /// No witness answer within two renew intervals.
    WitnessUnreachable,
    /// Replication lag above the RPO bound: promotion blocked.
    ReplicationLagAboveRpo,
    /// The peer is down but `autoFailover` is off.
    AutoFailoverDisabled,
    /// Synchronous replication suspended (default durability, no sync standby).
    DurabilityDegraded,
    /// Strict durability: writes wait for a synchronous standby.
    WritesBlockedAwaitingSyncStandby,
    /// A failback was requested but is not approved.
    FailbackAwaitingApproval,
    /// This region must be rebuilt before it may rejoin.
    NeedsRebuild,
    /// A switchover/failback cannot start (reason in the message).
    SwitchoverBlocked,
    /// A change is held back by the hold-down timer.
    HoldDown,
    /// The local database does not answer; a holder stops renewing.
    DatabaseDown,
}

/// A condition with its message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    /// Type.
    pub kind: ConditionKind,
    /// Human message.
    pub message: String,
}

/// One step of a plan. Every step that writes to the data plane carries the epoch it acts
/// under; ports refuse an epoch lower than the last one they applied.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "action")]
pub enum Step {
    /// Renew this region's lease (and re-arm the route's dead-man switch on success).
    RenewLease {
        /// Epoch held.
        epoch: u64,
    },
    /// Acquire the lease (succeeds only when free or expired; never forced).
    AcquireLease,
    /// Release the lease (planned switchover).
    ReleaseLease {
        /// Epoch held.
        epoch: u64,
    },
    /// Drain this region's route (weight 0).
    Drain {
        /// Epoch.
        epoch: u64,
    },
    /// Undrain this region's route.
    Undrain {
        /// Epoch.
        epoch: u64,
    },
    /// Database read-only + terminate writers.
    Fence {
        /// Epoch.
        epoch: u64,
    },
    /// Database read-write again (this region holds the lease at `epoch`).
    Unfence {
        /// Epoch.
        epoch: u64,
    },
    /// Demote the primary to a standby of the target; yields the demotion LSN.
    Demote {
        /// Epoch.
        epoch: u64,
        /// The new primary to follow.
        target: RegionId,
    },
    /// Wait until the target has replayed `lsn`.
    WaitReplayed {
        /// Demotion LSN.
        lsn: Lsn,
    },
    /// Promote the local standby.
    Promote {
        /// The epoch acquired for it.
        epoch: u64,
    },
    /// Point DNS at `primary`.
    FlipDns {
        /// New primary.
        primary: RegionId,
        /// Epoch (record comment; lower epochs refused).
        epoch: u64,
    },
    /// Suspend synchronous replication (default durability).
    SuspendSync {
        /// Epoch.
        epoch: u64,
    },
    /// Restore synchronous replication.
    RestoreSync {
        /// Epoch.
        epoch: u64,
    },
    /// Rebuild the local database as a standby of `source` (pg_rewind / re-clone).
    Rebuild {
        /// The primary to follow.
        source: RegionId,
        /// The source's epoch.
        epoch: u64,
    },
    /// Publish an audit event.
    Audit(Box<AuditEvent>),
    /// Clear the current operation; a finished switchover/failback records its request id as
    /// `completed` so the request is not run again.
    FinishOperation,
}

impl Step {
    /// Stable step name (status `operation.step`, condition names, metrics).
    pub fn name(&self) -> &'static str {
        match self {
            Step::RenewLease { .. } => "renew-lease",
            Step::AcquireLease => "acquire-lease",
            Step::ReleaseLease { .. } => "release-lease",
            Step::Drain { .. } => "drain",
            Step::Undrain { .. } => "undrain",
            Step::Fence { .. } => "fence",
            Step::Unfence { .. } => "unfence",
            Step::Demote { .. } => "demote",
            Step::WaitReplayed { .. } => "wait-replayed",
            Step::Promote { .. } => "promote",
            Step::FlipDns { .. } => "flip-dns",
            Step::SuspendSync { .. } => "suspend-sync",
            Step::RestoreSync { .. } => "restore-sync",
            Step::Rebuild { .. } => "rebuild",
            Step::Audit(_) => "audit",
            Step::FinishOperation => "finish-operation",
        }
    }

    /// True when the step changes something outside the controller (the operation state is
    /// persisted before it runs).
    pub fn writes(&self) -> bool {
        !matches!(self, Step::WaitReplayed { .. } | Step::FinishOperation)
    }
}

/// What to do now: ordered steps, conditions, and the operation to persist.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Steps in order; the executor stops at the first failure.
    pub steps: Vec<Step>,
    /// Conditions that hold now.
    pub conditions: Vec<Condition>,
    /// A new operation to start (persisted before the first step), if any.
    pub start: Option<Operation>,
}

impl Plan {
    /// True when some step is of `name`.
    pub fn has(&self, name: &str) -> bool {
        self.steps.iter().any(|s| s.name() == name)
    }

    /// Step names in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.steps.iter().map(Step::name).collect()
    }

    /// True when a condition of `kind` is set.
    pub fn has_condition(&self, kind: ConditionKind) -> bool {
        self.conditions.iter().any(|c| c.kind == kind)
    }
}
