//! The executor: runs a [`Plan`] step by step through the [`ports`](crate::ports).
//!
//! - The plan stops at the first failed or stuck step, except that a failed `Drain` or
//!   `Fence` does not stop the remaining fencing steps (safety first).
//! - Before every step that writes outside the controller, the operation (if one is in
//!   progress) is saved with that step's name and epoch, so a restart knows how far it got.
//! - Every step runs under a timeout; a step that does not finish in time stops the plan with
//!   a named condition (e.g. `DemotionStuck`), never a silent hang.
//! - Steps are idempotent, so resuming after a crash is: load the persisted operation, observe,
//!   [`decide`](crate::decide::decide) again (the core resumes from `operation`), run.
//! - Audit failures never undo or stop a data-plane step (upstream rolled back a finished
//!   promotion because the audit publish failed); they are counted in the outcome.
//! - After a successful acquire/renew the route's dead-man switch is armed for what is left of
//!   the self-fence deadline, measured from the request's SEND time.
//! - Every acquire/renew carries the holder's durability report ([`Executor::set_report`]), and
//!   `SuspendSync` first renews reporting `synchronous: false` and only suspends once the
//!   witness stored that: a standby that later finds `synchronous: true` in an expired lease
//!   knows every commit acknowledged under that epoch reached it.

use crate::audit::AuditEvent;
use crate::decide::{LeaseObs, Lsn, Mono, OpKind, Plan, Renewed, Step, Timing};
use crate::ports::{
    Audit, AuditError, Database, Dns, Persisted, PlaneError, Routes, StateStore, StoreError,
    Witness, WitnessPortError,
};
use contract::Millis;
use contract::lease::{HolderReport, LeaseView};
use std::sync::Mutex;
use std::time::Duration;

/// Local clocks the executor reads (the decision core never does).
pub trait Clock: Send + Sync {
    /// Local monotonic time.
    fn mono(&self) -> Mono;
    /// Wall time, only for status and audit timestamps.
    fn wall(&self) -> Millis;
    /// The HOST's boot-time clock in ms (`CLOCK_BOOTTIME`: shared by every process on this
    /// host, and it keeps counting through a suspend), for deadlines handed to another process
    /// such as the database watchdog.
    fn host_ms(&self) -> i64 {
        crate::watchdog::host_ms()
    }
}

/// The process clocks: tokio's monotonic `Instant` (so tests can pause time) and the system
/// wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    base: tokio::time::Instant,
}

impl SystemClock {
    /// Monotonic zero is now.
    pub fn new() -> SystemClock {
        SystemClock {
            base: tokio::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn mono(&self) -> Mono {
        Mono(i64::try_from(self.base.elapsed().as_millis()).unwrap_or(i64::MAX))
    }

    fn wall(&self) -> Millis {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Millis(i64::try_from(ms).unwrap_or(i64::MAX))
    }
}

/// Per-step timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Witness calls.
    pub lease: Duration,
    /// Drain, fence (together they must fit in `renew + margin`, the gap between the
    /// self-fence deadline and the TTL).
    pub fence: Duration,
    /// Demote.
    pub demote: Duration,
    /// Waiting for the target to replay the demotion LSN.
    pub replay: Duration,
    /// Promote.
    pub promote: Duration,
    /// DNS flip.
    pub dns: Duration,
    /// Rebuild (re-clone can be long).
    pub rebuild: Duration,
    /// Anything else (undrain, un-fence, sync, audit).
    pub other: Duration,
}

impl Timeouts {
    /// Timeouts derived from the lease timing (`SAFETY.md`, the fence budget):
    /// - a witness call gets `renew / 2`, and a renew is further capped at run time so it never
    ///   runs past the self-fence deadline ([`Executor::run`]);
    /// - drain and fence get half of [`Timing::fence_budget_ms`] each, so a fence that starts at
    ///   the deadline ends before the witness may grant the lease elsewhere, at the worst drift;
    /// - waiting for a switchover target to replay gets `renew / 2` per plan, so the source's
    ///   renewals never starve (the next tick renews, then waits again).
    pub fn for_timing(t: &Timing) -> Timeouts {
        let ms = |v: i64| Duration::from_millis(u64::try_from(v.max(1)).unwrap_or(1));
        Timeouts {
            lease: ms(t.renew_ms / 2),
            fence: ms(t.fence_budget_ms() / 2),
            demote: Duration::from_secs(30),
            replay: ms(t.renew_ms / 2),
            promote: Duration::from_secs(30),
            dns: Duration::from_secs(5),
            rebuild: Duration::from_secs(600),
            other: Duration::from_secs(5),
        }
    }

    /// The timeout of `step`.
    pub fn of(&self, step: &Step) -> Duration {
        match step {
            Step::RenewLease { .. } | Step::AcquireLease | Step::ReleaseLease { .. } => self.lease,
            Step::Drain { .. } | Step::Fence { .. } => self.fence,
            Step::Demote { .. } => self.demote,
            Step::WaitReplayed { .. } => self.replay,
            Step::Promote { .. } => self.promote,
            Step::FlipDns { .. } => self.dns,
            Step::Rebuild { .. } => self.rebuild,
            _ => self.other,
        }
    }
}

/// The named condition set when `step` is stuck past its timeout.
pub fn stuck_condition(step: &Step) -> &'static str {
    match step {
        Step::RenewLease { .. } => "LeaseRenewStuck",
        Step::AcquireLease => "LeaseAcquireStuck",
        Step::ReleaseLease { .. } => "LeaseReleaseStuck",
        Step::Drain { .. } => "DrainStuck",
        Step::Undrain { .. } => "UndrainStuck",
        Step::Fence { .. } => "FenceStuck",
        Step::Unfence { .. } => "UnfenceStuck",
        Step::Demote { .. } => "DemotionStuck",
        Step::WaitReplayed { .. } => "TargetNotReplaying",
        Step::Promote { .. } => "PromotionStuck",
        Step::FlipDns { .. } => "DnsFlipStuck",
        Step::SuspendSync { .. } | Step::RestoreSync { .. } => "SyncReconfigureStuck",
        Step::Rebuild { .. } => "RebuildStuck",
        Step::Audit(_) => "AuditStuck",
        Step::FinishOperation => "StatusWriteStuck",
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Witness call failed.
    #[error("witness: {0}")]
    Witness(#[source] WitnessPortError),
    /// Data-plane call failed.
    #[error("data plane: {0}")]
    Plane(#[source] PlaneError),
    /// Operation state could not be persisted (no external write is attempted then).
    #[error("status store: {0}")]
    Store(#[source] StoreError),
}

impl ExecError {
    /// Label for the `failures{error}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ExecError::Witness(_) => "witness",
            ExecError::Plane(_) => "plane",
            ExecError::Store(_) => "store",
        }
    }
}

/// Why a plan stopped before its end.
#[derive(Debug)]
pub enum Stopped {
    /// A step exceeded its timeout.
    Stuck {
        /// Step name.
        step: &'static str,
        /// Named condition to set.
        condition: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// A step failed.
    Failed {
        /// Step name.
        step: &'static str,
        /// Why.
        error: ExecError,
    },
}

/// What running a plan did.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Names of the steps that completed, in order.
    pub done: Vec<&'static str>,
    /// A successful acquire/renew (feed into the next [`crate::decide::Observed`]).
    pub renewed: Option<Renewed>,
    /// The last witness answer seen.
    pub lease: Option<LeaseObs>,
    /// The persisted state after the run.
    pub persisted: Persisted,
    /// Audit events that could not be published.
    pub audit_failures: Vec<AuditError>,
    /// Where and why the plan stopped early, if it did.
    pub stopped: Option<Stopped>,
}

/// The ports an executor drives.
#[derive(Debug, Clone)]
pub struct Ports<W, D, N, R, A, S> {
    /// Lease witness.
    pub witness: W,
    /// Local database.
    pub db: D,
    /// DNS control.
    pub dns: N,
    /// Local route.
    pub routes: R,
    /// Audit sink.
    pub audit: A,
    /// Operation state store.
    pub store: S,
}

/// Runs plans for one region.
#[derive(Debug)]
pub struct Executor<W, D, N, R, A, S, C> {
    ports: Ports<W, D, N, R, A, S>,
    region: String,
    timing: Timing,
    timeouts: Timeouts,
    clock: C,
    report: Mutex<Option<HolderReport>>,
    /// This process's last grant: a renew never runs past `sent_at + deadline`.
    last_grant: Mutex<Option<Renewed>>,
}

impl<W, D, N, R, A, S, C> Executor<W, D, N, R, A, S, C>
where
    W: Witness,
    D: Database,
    N: Dns,
    R: Routes,
    A: Audit,
    S: StateStore,
    C: Clock,
{
    /// An executor for `region`.
    pub fn new(
        ports: Ports<W, D, N, R, A, S>,
        region: impl Into<String>,
        timing: Timing,
        timeouts: Timeouts,
        clock: C,
    ) -> Self {
        Executor {
            ports,
            region: region.into(),
            timing,
            timeouts,
            clock,
            report: Mutex::new(None),
            last_grant: Mutex::new(None),
        }
    }

    /// The durability report sent with every following acquire/renew (the runner sets it from
    /// each observation of the local database).
    pub fn set_report(&self, report: Option<HolderReport>) {
        *self
            .report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = report;
    }

    /// The report the next acquire/renew carries.
    pub fn report(&self) -> Option<HolderReport> {
        self.report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// The ports (tests inspect their fakes).
    pub fn ports(&self) -> &Ports<W, D, N, R, A, S> {
        &self.ports
    }

    /// Loads the persisted state (what a restarted controller resumes from).
    pub async fn load(&self) -> Result<Persisted, StoreError> {
        self.ports.store.load().await
    }

    /// How long `step` may take now: its timeout, and for a renew no longer than what is left
    /// of this process's authority (a renew that outlives the deadline would delay the fence).
    fn limit(&self, step: &Step) -> Option<Duration> {
        let limit = self.timeouts.of(step);
        if !matches!(step, Step::RenewLease { .. }) {
            return Some(limit);
        }
        let grant = *self
            .last_grant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(g) = grant else {
            return Some(limit);
        };
        let left = self.timing.deadline_ms() - self.clock.mono().since(g.sent_at);
        let left = u64::try_from(left).ok().filter(|l| *l > 0)?;
        Some(limit.min(Duration::from_millis(left)))
    }

    /// Runs `plan`, stopping at the first failed or stuck step.
    ///
    /// Fencing never depends on persisting anything: when the operation store cannot be loaded
    /// or saved (full disk, status API down), Drain and Fence still run, and only the steps
    /// that need a persisted operation before they write are skipped.
    pub async fn run(&self, plan: &Plan) -> Outcome {
        let mut out = Outcome::default();
        let mut store_ok = true;
        let mut state = match self.ports.store.load().await {
            Ok(s) => s,
            Err(e) => {
                store_ok = false;
                out.stopped = Some(Stopped::Failed {
                    step: "load",
                    error: ExecError::Store(e),
                });
                Persisted::default()
            }
        };
        if let Some(start) = &plan.start
            && state.operation.as_ref().is_none_or(|o| o.id != start.id)
        {
            let mut op = start.clone();
            op.started_at = self.clock.wall();
            state.operation = Some(op);
        }
        for step in &plan.steps {
            let fencing = matches!(step, Step::Drain { .. } | Step::Fence { .. });
            let needs_store = !fencing && !matches!(step, Step::RenewLease { .. } | Step::Audit(_));
            if !store_ok && needs_store {
                // Without the store only fencing and renewing run; the rest waits for a tick
                // that can persist its operation.
                continue;
            }
            if step.writes()
                && let Some(op) = state.operation.as_mut()
            {
                op.step = step.name().to_owned();
                if let Some(e) = epoch_of(step) {
                    op.epoch = op.epoch.max(e);
                }
                if let Err(e) = self.ports.store.save(&state).await {
                    out.stopped.get_or_insert(Stopped::Failed {
                        step: step.name(),
                        error: ExecError::Store(e),
                    });
                    store_ok = false;
                    if needs_store {
                        continue;
                    }
                }
            }
            let Some(limit) = self.limit(step) else {
                // The deadline has passed: no renew now; the next decision fences.
                out.stopped.get_or_insert(Stopped::Stuck {
                    step: step.name(),
                    condition: stuck_condition(step),
                    after: Duration::ZERO,
                });
                break;
            };
            let stop =
                match tokio::time::timeout(limit, self.step(step, &mut state, &mut out)).await {
                    Ok(Ok(())) => {
                        out.done.push(step.name());
                        continue;
                    }
                    Ok(Err(error)) => Stopped::Failed {
                        step: step.name(),
                        error,
                    },
                    Err(_) => Stopped::Stuck {
                        step: step.name(),
                        condition: stuck_condition(step),
                        after: limit,
                    },
                };
            out.stopped.get_or_insert(stop);
            // Fencing is best effort per step: a failed drain must not keep the database
            // writable, nor a failed read-only the route open.
            if !matches!(step, Step::Drain { .. } | Step::Fence { .. }) {
                break;
            }
        }
        out.persisted = state;
        out
    }

    fn observe(&self, view: &LeaseView) -> LeaseObs {
        LeaseObs {
            state: view.state.clone(),
            witness_now: view.witness_now,
            received_at: self.clock.mono(),
        }
    }

    /// After a granted acquire/renew sent at `sent` (`sent_host` on the host clock): record
    /// it, arm the database watchdog (a real fence at `sent + deadline`, run by another
    /// process) and the route's dead-man switch.
    async fn granted(
        &self,
        view: &LeaseView,
        sent: Mono,
        sent_host: i64,
        out: &mut Outcome,
    ) -> Result<(), ExecError> {
        out.lease = Some(self.observe(view));
        let epoch = view.state.epoch;
        let grant = Renewed {
            sent_at: sent,
            epoch,
        };
        out.renewed = Some(grant);
        *self
            .last_grant
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(grant);
        let armed = self
            .ports
            .db
            .arm(epoch, sent_host + self.timing.deadline_ms())
            .await;
        let left = self.timing.deadline_ms() - self.clock.mono().since(sent);
        let left = Duration::from_millis(u64::try_from(left).unwrap_or(0));
        let routed = self.ports.routes.arm(epoch, left).await;
        armed.and(routed).map_err(ExecError::Plane)
    }

    fn lease_err(&self, e: WitnessPortError, out: &mut Outcome) -> ExecError {
        if let WitnessPortError::LeaseLost(v) | WitnessPortError::HeldByAnother(v) = &e {
            out.lease = Some(self.observe(v));
        }
        ExecError::Witness(e)
    }

    async fn step(
        &self,
        step: &Step,
        state: &mut Persisted,
        out: &mut Outcome,
    ) -> Result<(), ExecError> {
        let p = &self.ports;
        let ttl = Duration::from_millis(u64::try_from(self.timing.ttl_ms).unwrap_or(0));
        let plane = ExecError::Plane;
        match step {
            Step::RenewLease { epoch } => {
                let sent = self.clock.mono();
                let sent_host = self.clock.host_ms();
                let report = self.report();
                match p
                    .witness
                    .renew(&self.region, ttl, *epoch, report.as_ref())
                    .await
                {
                    Ok(v) => self.granted(&v, sent, sent_host, out).await,
                    Err(e) => Err(self.lease_err(e, out)),
                }
            }
            Step::AcquireLease => {
                let sent = self.clock.mono();
                let sent_host = self.clock.host_ms();
                let report = self.report();
                match p.witness.acquire(&self.region, ttl, report.as_ref()).await {
                    Ok(v) => self.granted(&v, sent, sent_host, out).await,
                    Err(e) => Err(self.lease_err(e, out)),
                }
            }
            Step::ReleaseLease { epoch } => {
                p.witness
                    .release(&self.region, *epoch)
                    .await
                    .map_err(ExecError::Witness)?;
                // Found by the drill: a released grant left the watchdog armed, and it fenced
                // the demoted source (a standby) at the old deadline.
                p.db.disarm(*epoch).await.map_err(plane)
            }
            Step::Drain { epoch } => p.routes.drain(*epoch).await.map_err(plane),
            Step::Undrain { epoch } => p.routes.undrain(*epoch).await.map_err(plane),
            Step::Fence { epoch } => p.db.fence(*epoch).await.map_err(plane),
            Step::Unfence { epoch } => p.db.unfence(*epoch).await.map_err(plane),
            Step::Demote { epoch, target } => {
                let lsn = p.db.demote(*epoch, target).await.map_err(plane)?;
                if let Some(op) = state.operation.as_mut() {
                    op.lsn = Some(lsn);
                }
                p.store.save(state).await.map_err(ExecError::Store)
            }
            Step::WaitReplayed { lsn } => self.wait_replayed(*lsn).await,
            Step::Promote { epoch } => p.db.promote(*epoch).await.map(|_| ()).map_err(plane),
            Step::FlipDns { primary, epoch } => p.dns.flip(primary, *epoch).await.map_err(plane),
            Step::SuspendSync { epoch } => {
                // The witness must know commits stop waiting for the peer BEFORE they do.
                let report = HolderReport {
                    synchronous: false,
                    flushed_lsn: self.report().and_then(|r| r.flushed_lsn),
                };
                let sent = self.clock.mono();
                let sent_host = self.clock.host_ms();
                match p
                    .witness
                    .renew(&self.region, ttl, *epoch, Some(&report))
                    .await
                {
                    Ok(v) => self.granted(&v, sent, sent_host, out).await?,
                    Err(e) => return Err(self.lease_err(e, out)),
                }
                self.set_report(Some(report));
                p.db.set_sync(*epoch, false).await.map_err(plane)
            }
            Step::RestoreSync { epoch } => p.db.set_sync(*epoch, true).await.map_err(plane),
            Step::Rebuild { source, epoch } => p.db.rebuild(source, *epoch).await.map_err(plane),
            Step::Audit(event) => {
                let e = self.stamp(event, state);
                if let Err(err) = p.audit.publish(&e).await {
                    out.audit_failures.push(err);
                }
                Ok(())
            }
            Step::FinishOperation => {
                if let Some(op) = state.operation.take()
                    && matches!(op.kind, OpKind::Switchover | OpKind::Failback)
                {
                    crate::decide::remember_completed(&mut state.completed, op.id);
                }
                p.store.save(state).await.map_err(ExecError::Store)
            }
        }
    }

    async fn wait_replayed(&self, lsn: Lsn) -> Result<(), ExecError> {
        loop {
            match self.ports.db.peer_replayed().await {
                Ok(r) if r >= lsn => return Ok(()),
                Ok(_) | Err(PlaneError::Unavailable(_)) => {}
                Err(e) => return Err(ExecError::Plane(e)),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stamp(&self, event: &AuditEvent, state: &Persisted) -> AuditEvent {
        let mut e = event.clone();
        let now = self.clock.wall();
        e.timestamp = now.to_rfc3339();
        if let Some(op) = &state.operation {
            if e.duration_ms.is_none() && op.started_at.0 > 0 {
                e.duration_ms = u64::try_from(now.since(op.started_at)).ok();
            }
            if e.lsn.is_none() {
                e.lsn = op.lsn.map(|l| l.to_string());
            }
        }
        e
    }
}

/// What a runner (standalone or kube) remembers between ticks about its lease and its last
/// state change, as [`crate::decide::Observed`] needs it.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// The last witness answer.
    pub lease: Option<LeaseObs>,
    /// This region's last successful acquire/renew.
    pub renewed: Option<Renewed>,
    /// Local instant of the last state change (hold-down).
    pub last_change: Option<Mono>,
}

impl Memory {
    /// Folds what running `plan` did into the memory at local `now`; true when the plan did
    /// more than renew (the runner then goes again at once).
    pub fn absorb(&mut self, plan: &Plan, out: &Outcome, now: Mono) -> bool {
        if let Some(l) = &out.lease {
            self.lease = Some(l.clone());
        }
        if let Some(r) = out.renewed {
            self.renewed = Some(r);
        }
        // A lost lease ends this region's authority at once; after a release the grant is
        // gone too, so the next tick reads the witness instead of trusting the last renew.
        let lost = matches!(
            &out.stopped,
            Some(Stopped::Failed {
                error: ExecError::Witness(WitnessPortError::LeaseLost(_)),
                ..
            })
        );
        if lost || out.done.contains(&"release-lease") {
            self.renewed = None;
        }
        let changed = out.done.iter().any(|s| {
            matches!(
                *s,
                "acquire-lease" | "promote" | "demote" | "fence" | "unfence" | "rebuild"
            )
        });
        if changed {
            self.last_change = Some(now);
        }
        let only_renew = plan
            .steps
            .iter()
            .all(|s| matches!(s, Step::RenewLease { .. }));
        !only_renew && !out.done.is_empty()
    }
}

fn epoch_of(step: &Step) -> Option<u64> {
    match step {
        Step::RenewLease { epoch }
        | Step::ReleaseLease { epoch }
        | Step::Drain { epoch }
        | Step::Undrain { epoch }
        | Step::Fence { epoch }
        | Step::Unfence { epoch }
        | Step::Demote { epoch, .. }
        | Step::Promote { epoch }
        | Step::FlipDns { epoch, .. }
        | Step::SuspendSync { epoch }
        | Step::RestoreSync { epoch }
        | Step::Rebuild { epoch, .. } => Some(*epoch),
        Step::AcquireLease | Step::WaitReplayed { .. } | Step::Audit(_) | Step::FinishOperation => {
            None
        }
    }
}

#[cfg(test)]
mod tests;
