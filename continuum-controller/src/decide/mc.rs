//! Exhaustive model check of the decision core with `stateright`.
//!
//! Two regions (`a` primary, `b` standby), the witness and a data plane per region. Every
//! controller decision is the REAL [`decide`], fed an [`Observed`] built by the REAL
//! [`observe::observed`] from what that region's own readings would be (its database, its
//! route, its last witness answer, its probes of the peer); every witness transition is the
//! REAL [`contract::apply`]; the executor's bookkeeping goes through the REAL
//! [`Memory::absorb`]. Plans run ONE STEP PER MODEL ACTION (so crashes land on every step
//! boundary), and steps take time: a witness call is applied and answered whenever the network
//! lets it within its timeout, a drain or fence completes a time unit later.
//!
//! World (what no controller decides):
//! - time in units of [`U`] ms of witness time, each region's host clock running at its own
//!   rate (per mille, chosen at init) from its own offset; a bounded horizon;
//! - database per region: writable primary, fenced (stopped, with a marker the observe path
//!   reads as a read-only primary; no client can undo it), standby, or down with its region;
//!   a timeline history (`Pos`) so that "is this write in that database" is exact;
//! - clients write continuously: at every time unit the writable primary acknowledges one
//!   write if it can (synchronous replication to a standby that confirms, or sync suspended);
//!   a hostile client can always commit locally (`SET synchronous_commit = local`), so
//!   invariant 1 counts any writable primary, sync or not;
//! - replication: a standby streams from the peer primary while both run, the link is up and
//!   its history is a prefix of the primary's; asynchronous WAL arrives one unit late;
//! - the route with its dead-man switch (traffic only: NOT a fence, not counted as one);
//! - the DATABASE WATCHDOG per region, a process apart from the controller, armed on every
//!   granted acquire/renew to `sent + deadline` on the host clock, which fences the database
//!   once the clock passes that without a re-arm (a fresh watchdog is disarmed: it fences any
//!   writable primary at once); it can crash;
//! - a rebooted region starts its database fenced if it was a primary (fail-closed boot).
//!
//! Faults (each costs one unit of the run's budget): controller crash (memory lost, persisted
//! operation kept, restarted at once), controller pause (SIGSTOP, longer than the TTL; only
//! while its watchdog runs), whole-region crash (and restart, free), watchdog crash, lost
//! request or reply (the witness may have applied it), a duplicated request delivered again
//! later, region↔witness cut, region↔region link cut, operation-store outage. Healing is free.
//!
//! Invariants: see [`Mc::properties`]. Mutations: [`Knob`] (world-level paths 2, 3, 4, 5, 9)
//! and [`Mutation`] (core paths 1, 6, 7, switched on inside `next_state` so it holds on every
//! checker thread).

use super::mutation::{self, Mutation};
use super::*;
use crate::adapters::postgres::DbObservation;
use crate::exec::{ExecError, Memory, Outcome, Stopped, Timeouts};
use crate::observe::{self, ProbeTracker};
use crate::ports::{Persisted, WitnessPortError};
use contract::Millis;
use contract::lease::{HolderReport, LeaseOp, LeaseRecord, LeaseRequest, LeaseView};
use stateright::{Checker, Model, Property};
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// One model time unit, in ms of witness time.
const U: i64 = 500;
/// The witness clock at t = 0.
const W0: i64 = 1_700_000_000_000;
/// Each region's host clock at t = 0 (far apart, so a local/witness mix-up shows at once).
const OFFSET: [i64; 2] = [7_000_000, 13_000_000];
/// Bytes of WAL per client write.
const MIB: u64 = 1 << 20;
/// The runner's longest pause between two ticks.
const TICK_MS: i64 = 1_000;
/// A pause (SIGSTOP, GC, VM) longer than the TTL, in units.
const PAUSE_UNITS: i64 = 14;
/// Physical drain and fence duration, in units (the measured immediate stop is well under it).
const FENCE_UNITS: i64 = 1;
/// Path 5: drain and fence each taking 4 s, a timing the validation must reject.
const SLOW_FENCE_UNITS: i64 = 8;
/// Path 3: how long after the fence annotation a slow operator stops the instance.
const OPERATOR_UNITS: i64 = 8;
/// Liveness bound beyond the TTL (units): see [`Mc::properties`].
const LIVE_BOUND: i64 = 8;

const TIMING: Timing = Timing {
    ttl_ms: 6_000,
    renew_ms: 2_000,
    margin_ms: 1_000,
    hold_down_ms: 1_000,
    max_drift: 0.05,
};

const NAMES: [&str; 2] = ["a", "b"];

/// A removed world-level mechanism (the core's are [`Mutation`]s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Knob {
    /// Path 2: the fence is a session default (`default_transaction_read_only`) that any
    /// client undoes.
    SessionFence,
    /// Path 3: the fence step is done once requested; the instance stops only later.
    FenceBeforeStop,
    /// Path 4: the executor gives up (no drain, no fence) when the store cannot be used.
    FenceNeedsStore,
    /// Path 5: timeouts not derived from the lease timing: a renew may run past the deadline,
    /// drain and fence take 4 s each.
    UnboundedSteps,
}

/// Which faults a configuration explores, each as a region mask ([`A`], [`B`], [`BOTH`]; the
/// link cut and the switchover request: any bit).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Faults {
    crash_ctl: u8,
    pause: u8,
    crash_region: u8,
    crash_wd: u8,
    lose: u8,
    dup: u8,
    cut_witness: u8,
    isolate: u8,
    cut_link: u8,
    store: u8,
    switchover: u8,
}

const A: u8 = 1;
const B: u8 = 2;
const BOTH: u8 = 3;

fn on(mask: u8, r: usize) -> bool {
    mask & (1 << r) != 0
}

/// One model configuration.
#[derive(Clone, Debug)]
pub(crate) struct Cfg {
    name: &'static str,
    horizon: i64,
    /// Last time unit at which a fault may start (heals may come later).
    window: i64,
    budget: u8,
    faults: Faults,
    /// Clock rates per mille, one init state per pair.
    rates: Vec<[i64; 2]>,
    durability: Durability,
    rpo_seconds: u64,
    knob: Option<Knob>,
    mutation: Option<Mutation>,
    /// The database watchdog runs (path 9 removes it).
    watchdog: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Role {
    Primary,
    Fenced,
    Standby,
}

/// A database's history: its timeline and the number of writes in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Pos {
    tl: u8,
    lsn: u8,
}

/// A timeline: where it branched off its parent, and what was acknowledged on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Tl {
    parent: u8,
    start: u8,
    /// Highest write acknowledged on it.
    acked: u8,
    /// Highest write acknowledged while the witness did NOT hold a `synchronous:false` report
    /// of the acknowledging holder.
    unreported: u8,
    /// Highest write covered by a `flushedLsn` the holder reported to the witness.
    covered: u8,
}

/// One region's data plane.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Plane {
    up: bool,
    role: Role,
    /// Path 2's session-level "fence".
    ro: bool,
    pos: Pos,
    sync_on: bool,
    drained: bool,
    /// Route dead-man switch (host mono ms): traffic only.
    route_until: Option<i64>,
    /// Database watchdog: `None` = disarmed.
    wd_alive: bool,
    wd_epoch: u64,
    wd_until: Option<i64>,
    /// Fenced while a standby: an unfence ends its recovery (a new timeline).
    was_standby: bool,
    /// Physical fence / drain in progress: completes at this t.
    fence_at: Option<i64>,
    drain_at: Option<i64>,
}

/// A step in progress.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
enum Cur {
    /// Waits until `until` (a drain, a fence, a demote).
    Busy { until: i64 },
    /// A witness call in flight.
    Call {
        req: LeaseRequest,
        sent: Mono,
        timeout_t: i64,
        answer: Option<Result<LeaseView, LeaseView>>,
        lost: bool,
    },
    /// Waiting for the peer to replay `lsn`.
    Wait { lsn: Lsn, timeout_t: i64 },
}

/// The executor running one plan.
#[derive(Clone, Debug, PartialEq)]
struct Run {
    steps: Vec<Step>,
    next: usize,
    state: Persisted,
    store_ok: bool,
    cur: Option<Cur>,
    done: Vec<&'static str>,
    lease: Option<LeaseObs>,
    renewed: Option<Renewed>,
    /// First stop: (step name, lease lost?).
    stopped: Option<(&'static str, bool)>,
    plan_only_renew: bool,
}

/// One region's controller process.
#[derive(Clone, Debug, PartialEq)]
struct Ctl {
    paused_until: i64,
    lease: Option<LeaseObs>,
    renewed: Option<Renewed>,
    last_change: Option<Mono>,
    failing: [Option<Mono>; 2],
    report: Option<HolderReport>,
    last_grant: Option<Renewed>,
    db_epoch: u64,
    route_epoch: u64,
    run: Option<Run>,
    wake: i64,
    /// Requests sent this time unit (request ids).
    sent_now: u8,
}

/// The whole world.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct State {
    t: i64,
    rate: [i64; 2],
    witness: LeaseRecord,
    plane: [Plane; 2],
    ctl: [Ctl; 2],
    store: [Persisted; 2],
    store_up: [bool; 2],
    cut_w: [bool; 2],
    /// Region cut off from everything: the witness, the vantages and the peer.
    iso: [bool; 2],
    cut_link: bool,
    /// The last request of each region still in the network (may be delivered again).
    net: [Option<LeaseRequest>; 2],
    tls: Vec<Tl>,
    switchover: bool,
    budget: u8,
    /// Since when `a` is dead (crashed, not restarted) with `b` a synced standby and nothing
    /// else wrong; cleared by any later fault.
    a_dead: Option<i64>,
    /// Since when no fault is active (every region up, nothing cut, paused or down).
    quiet: Option<i64>,
}

/// What can happen next.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Action {
    Advance,
    Tick(usize),
    Step(usize),
    /// The next step is a witness call whose network fate is a fault.
    Net(usize, Fate),
    /// A delayed request reaches the witness (and its answer comes back).
    Apply(usize),
    /// A delayed answer reaches the controller.
    Reply(usize),
    Duplicate(usize),
    CrashCtl(usize),
    Pause(usize),
    CrashRegion(usize),
    RestartRegion(usize),
    CrashWatchdog(usize),
    CutWitness(usize, bool),
    Isolate(usize, bool),
    CutLink(bool),
    StoreDown(usize, bool),
    Switchover,
}

/// What the network does with one witness call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Fate {
    /// Applied and answered at once (not a fault).
    Normal,
    /// Never reaches the witness.
    LoseRequest,
    /// Applied; the answer is lost.
    LoseReply,
    /// Reaches the witness later (before the timeout, or never).
    DelayRequest,
    /// Applied now; the answer arrives later (before the timeout, or never).
    DelayReply,
}

/// The model.
pub(crate) struct Mc {
    cfg: Cfg,
    spec: Spec,
    timeouts: Timeouts,
}

fn h_lease_state(s: &contract::LeaseState, h: &mut impl Hasher) {
    s.holder.hash(h);
    s.acquired_at.hash(h);
    s.expires_at.hash(h);
    s.generation.hash(h);
    s.epoch.hash(h);
    h_report(s.report.as_ref(), h);
}

fn h_report(r: Option<&HolderReport>, h: &mut impl Hasher) {
    r.map(|r| (r.synchronous, r.flushed_lsn.clone())).hash(h);
}

fn h_obs(o: Option<&LeaseObs>, h: &mut impl Hasher) {
    o.is_some().hash(h);
    if let Some(o) = o {
        h_lease_state(&o.state, h);
        o.witness_now.hash(h);
        o.received_at.hash(h);
    }
}

fn h_req(r: &LeaseRequest, h: &mut impl Hasher) {
    (r.op as u8).hash(h);
    r.holder.hash(h);
    r.ttl_ms.hash(h);
    r.request_id.hash(h);
    h_report(r.report.as_ref(), h);
}

fn h_op(o: Option<&Operation>, h: &mut impl Hasher) {
    o.map(|o| {
        (
            o.id.clone(),
            o.kind as u8,
            o.step.clone(),
            o.epoch,
            o.lsn,
            o.target.clone(),
        )
    })
    .hash(h);
}

fn h_persisted(p: &Persisted, h: &mut impl Hasher) {
    h_op(p.operation.as_ref(), h);
    p.completed.hash(h);
}

fn h_step(s: &Step, h: &mut impl Hasher) {
    s.name().hash(h);
    epoch_of(s).hash(h);
    match s {
        Step::Demote { target, .. } => target.hash(h),
        Step::WaitReplayed { lsn } => lsn.hash(h),
        Step::FlipDns { primary, .. } => primary.hash(h),
        Step::Rebuild { source, .. } => source.hash(h),
        _ => {}
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.t.hash(h);
        self.rate.hash(h);
        h_lease_state(&self.witness.state, h);
        self.witness.epoch_floor.hash(h);
        for a in &self.witness.answered {
            (&a.holder, &a.request_id, a.op as u8, a.at).hash(h);
            match &a.outcome {
                Ok(s) => h_lease_state(s, h),
                Err(c) => {
                    (c.reason as u8).hash(h);
                    h_lease_state(&c.current, h);
                }
            }
        }
        self.plane.hash(h);
        for c in &self.ctl {
            c.paused_until.hash(h);
            h_obs(c.lease.as_ref(), h);
            c.renewed.map(|r| (r.sent_at, r.epoch)).hash(h);
            c.last_change.hash(h);
            c.failing.hash(h);
            h_report(c.report.as_ref(), h);
            c.last_grant.map(|r| (r.sent_at, r.epoch)).hash(h);
            (c.db_epoch, c.route_epoch, c.wake, c.sent_now).hash(h);
            c.run.is_some().hash(h);
            if let Some(r) = &c.run {
                r.steps.len().hash(h);
                for s in &r.steps {
                    h_step(s, h);
                }
                r.next.hash(h);
                h_persisted(&r.state, h);
                (r.store_ok, &r.done, r.stopped, r.plan_only_renew).hash(h);
                h_obs(r.lease.as_ref(), h);
                r.renewed.map(|r| (r.sent_at, r.epoch)).hash(h);
                match &r.cur {
                    None => 0u8.hash(h),
                    Some(Cur::Busy { until }) => (1u8, until).hash(h),
                    Some(Cur::Wait { lsn, timeout_t }) => (2u8, lsn, timeout_t).hash(h),
                    Some(Cur::Call {
                        req,
                        sent,
                        timeout_t,
                        answer,
                        lost,
                    }) => {
                        (3u8, sent, timeout_t, lost).hash(h);
                        h_req(req, h);
                        match answer {
                            None => 0u8.hash(h),
                            Some(Ok(v)) | Some(Err(v)) => {
                                answer.as_ref().map(Result::is_ok).hash(h);
                                h_lease_state(&v.state, h);
                                v.witness_now.hash(h);
                            }
                        }
                    }
                }
            }
        }
        for p in &self.store {
            h_persisted(p, h);
        }
        (self.store_up, self.cut_w, self.iso, self.cut_link).hash(h);
        for n in &self.net {
            n.is_some().hash(h);
            if let Some(r) = n {
                h_req(r, h);
            }
        }
        (
            &self.tls,
            self.switchover,
            self.budget,
            self.a_dead,
            self.quiet,
        )
            .hash(h);
    }
}

/// A controller process just started: no memory, ticks at once.
fn fresh_ctl(t: i64) -> Ctl {
    Ctl {
        paused_until: 0,
        lease: None,
        renewed: None,
        last_change: None,
        failing: [None, None],
        report: None,
        last_grant: None,
        db_epoch: 0,
        route_epoch: 0,
        run: None,
        wake: t,
        sent_now: 0,
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

impl State {
    fn mono(&self, r: usize) -> Mono {
        Mono(OFFSET[r] + self.t * U * self.rate[r] / 1000)
    }

    fn mono_at(&self, r: usize, t: i64) -> Mono {
        Mono(OFFSET[r] + t * U * self.rate[r] / 1000)
    }

    /// The first t > now at which region r's clock reads at least `now + ms`.
    fn t_after(&self, r: usize, ms: i64) -> i64 {
        let target = self.mono(r).plus(ms);
        let mut t = self.t + 1;
        while self.mono_at(r, t) < target {
            t += 1;
        }
        t
    }

    fn wnow(&self) -> Millis {
        Millis(W0 + self.t * U)
    }

    fn reachable(&self, r: usize) -> bool {
        self.plane[r].up && !self.cut_w[r] && !self.iso[r]
    }

    fn link(&self) -> bool {
        !self.cut_link && !self.iso[0] && !self.iso[1]
    }

    /// Is `w` (timeline, lsn) in the history of a database at `p`?
    fn limit_in(&self, p: Pos, tl: u8) -> u8 {
        // Highest lsn of timeline `tl` contained in p's history.
        let mut cur = p.tl;
        let mut lim = p.lsn;
        loop {
            if cur == tl {
                return lim;
            }
            if cur == 0 {
                // tl is not an ancestor: none of its own writes.
                return self.tls[usize::from(tl)].start;
            }
            let t = self.tls[usize::from(cur)];
            lim = lim.min(t.start);
            cur = t.parent;
        }
    }

    /// Is the history of a database at `q` a prefix of the history at `p`?
    fn contains(&self, p: Pos, q: Pos) -> bool {
        if q.lsn == 0 {
            return true;
        }
        // The timeline that owns q's last write.
        let mut owner = q.tl;
        while owner != 0 && q.lsn <= self.tls[usize::from(owner)].start {
            owner = self.tls[usize::from(owner)].parent;
        }
        q.lsn <= self.limit_in(p, owner)
    }

    /// The primary `p` streams to the standby `s`.
    fn streaming(&self, p: usize, s: usize) -> bool {
        let (pp, sp) = (&self.plane[p], &self.plane[s]);
        pp.up
            && sp.up
            && self.link()
            && pp.role == Role::Primary
            && sp.role == Role::Standby
            && self.contains(pp.pos, sp.pos)
    }

    /// The synchronous standby confirms commits of `p`.
    fn confirms(&self, p: usize) -> bool {
        let s = 1 - p;
        self.streaming(p, s) && self.plane[s].pos == self.plane[p].pos
    }

    /// Any client (even `synchronous_commit = local`) can get a commit acknowledged.
    fn writable(&self, r: usize) -> bool {
        self.plane[r].up && self.plane[r].role == Role::Primary
    }

    /// An ordinary client gets a commit acknowledged.
    fn acks(&self, r: usize) -> bool {
        let p = &self.plane[r];
        self.writable(r) && !p.ro && (!p.sync_on || self.confirms(r))
    }

    /// The peer of `r` has replayed r's demotion LSN.
    fn replayed(&self, r: usize, lsn: Lsn) -> bool {
        let peer = &self.plane[1 - r];
        peer.up
            && self.link()
            && u64::from(peer.pos.lsn) * MIB >= lsn.0
            && self.contains(peer.pos, self.plane[r].pos)
    }

    fn route_drained(&self, r: usize) -> bool {
        let p = &self.plane[r];
        p.drained || p.route_until.is_none_or(|u| self.mono(r).0 >= u)
    }

    fn active_fault(&self) -> bool {
        !self.plane.iter().all(|p| p.up)
            || self.cut_w.iter().any(|c| *c)
            || self.iso.iter().any(|c| *c)
            || self.cut_link
            || self.store_up.iter().any(|u| !u)
            || self.ctl.iter().any(|c| c.paused_until > self.t)
    }
}

impl Mc {
    pub(crate) fn new(cfg: Cfg) -> Mc {
        let mut spec = sample().spec;
        spec.timing = TIMING;
        spec.durability = cfg.durability;
        spec.rpo = RpoBound {
            max_lag_bytes: MIB,
            max_lag_seconds: cfg.rpo_seconds,
        };
        let mut timeouts = Timeouts::for_timing(&TIMING);
        if cfg.knob == Some(Knob::UnboundedSteps) {
            timeouts.fence = std::time::Duration::from_secs(4);
        }
        Mc {
            cfg,
            spec,
            timeouts,
        }
    }

    fn knob(&self, k: Knob) -> bool {
        self.cfg.knob == Some(k)
    }

    fn fence_units(&self) -> i64 {
        if self.knob(Knob::UnboundedSteps) {
            SLOW_FENCE_UNITS
        } else {
            FENCE_UNITS
        }
    }

    fn spec(&self, s: &State) -> Spec {
        let mut spec = self.spec.clone();
        if s.switchover {
            spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
        }
        spec
    }

    fn db_obs(&self, s: &State, r: usize) -> Option<DbObservation> {
        let p = &s.plane[r];
        if !p.up {
            return None;
        }
        let peer = 1 - r;
        let lsn = Some(Lsn(u64::from(p.pos.lsn) * MIB));
        Some(match p.role {
            Role::Primary | Role::Fenced => {
                let live = p.role == Role::Primary;
                let streaming = live && s.streaming(r, peer);
                let caught_up = streaming && s.plane[peer].pos == p.pos;
                DbObservation {
                    // The real observe path: a fenced (stopped) server reads as `Down` +
                    // `read_only` (adapters::postgres::PgDatabase::observe).
                    role: if live { DbRole::Primary } else { DbRole::Down },
                    read_only: !live || p.ro,
                    sync_names: if p.sync_on {
                        "FIRST 1 (\"peer\")".into()
                    } else {
                        String::new()
                    },
                    peer_sync_state: streaming.then(|| {
                        if p.sync_on && caught_up {
                            "sync".into()
                        } else {
                            "async".into()
                        }
                    }),
                    flush_lsn: lsn,
                    replay_lsn: streaming.then(|| Lsn(u64::from(s.plane[peer].pos.lsn) * MIB)),
                    local_lsn: lsn,
                    lag_bytes: if streaming {
                        u64::from(p.pos.lsn.saturating_sub(s.plane[peer].pos.lsn)) * MIB
                    } else {
                        0
                    },
                    lag_seconds: 0,
                    streaming,
                }
            }
            Role::Standby => DbObservation {
                role: DbRole::Standby,
                read_only: false,
                sync_names: String::new(),
                peer_sync_state: None,
                flush_lsn: lsn,
                replay_lsn: lsn,
                local_lsn: lsn,
                lag_bytes: 0,
                lag_seconds: 0,
                streaming: s.streaming(peer, r),
            },
        })
    }

    /// Probes of region `r` from the two vantages: (route healthy, database serving).
    fn probe(&self, s: &State, r: usize) -> [bool; 2] {
        let p = &s.plane[r];
        let seen = p.up && !s.iso[r];
        [
            seen && !s.route_drained(r),
            seen && p.role == Role::Primary && !p.ro,
        ]
    }

    fn init(&self, rate: [i64; 2]) -> State {
        let ttl = TIMING.ttl_ms;
        let plane = |primary: bool| Plane {
            up: true,
            role: if primary {
                Role::Primary
            } else {
                Role::Standby
            },
            ro: false,
            pos: Pos { tl: 0, lsn: 0 },
            sync_on: primary,
            drained: !primary,
            route_until: None,
            wd_alive: self.cfg.watchdog,
            wd_epoch: 0,
            wd_until: None,
            was_standby: false,
            fence_at: None,
            drain_at: None,
        };
        let ctl = fresh_ctl(0);
        let mut s = State {
            t: 0,
            rate,
            witness: LeaseRecord::default(),
            plane: [plane(true), plane(false)],
            ctl: [ctl.clone(), ctl],
            store: Default::default(),
            store_up: [true, true],
            cut_w: [false, false],
            iso: [false, false],
            cut_link: false,
            net: [None, None],
            tls: vec![Tl {
                parent: 0,
                start: 0,
                acked: 0,
                unreported: 0,
                covered: 0,
            }],
            switchover: false,
            budget: self.cfg.budget,
            a_dead: None,
            quiet: Some(0),
        };
        // `a` holds epoch 1, granted at t = 0, reporting synchronous replication.
        let report = HolderReport {
            synchronous: true,
            flushed_lsn: Some(Lsn(0).to_string()),
        };
        let req = LeaseRequest::acquire("a", ttl).report(report.clone());
        let applied = contract::apply(&s.witness, &req, s.wnow()).expect("valid acquire");
        s.witness = applied.record;
        let now = s.mono(0);
        let grant = Renewed {
            sent_at: now,
            epoch: 1,
        };
        let until = now.0 + TIMING.deadline_ms();
        let lease = Some(LeaseObs {
            state: s.witness.state.clone(),
            witness_now: s.wnow(),
            received_at: now,
        });
        let a = &mut s.ctl[0];
        a.lease = lease;
        a.renewed = Some(grant);
        a.last_grant = Some(grant);
        a.report = Some(report);
        a.db_epoch = 1;
        a.route_epoch = 1;
        s.plane[0].route_until = Some(until);
        if s.plane[0].wd_alive {
            s.plane[0].wd_until = Some(until);
            s.plane[0].wd_epoch = 1;
        }
        s
    }

    // ---- controller: observe, decide, execute ----

    fn tick(&self, s: &mut State, r: usize) {
        let now = s.mono(r);
        let spec = self.spec(s);
        let dbo = self.db_obs(s, r);
        let drained = if s.plane[r].up {
            Some(s.route_drained(r))
        } else {
            None
        };
        let persisted = if s.store_up[r] {
            s.store[r].clone()
        } else {
            Persisted::default()
        };
        let c = &s.ctl[r];
        let mut mem = Memory {
            lease: c.lease.clone(),
            renewed: c.renewed,
            last_change: c.last_change,
        };
        let vantages = ["route", "database"];
        let mut probes = ProbeTracker::default();
        for (v, since) in vantages.iter().zip(c.failing) {
            match since {
                Some(since) => probes.record(v, false, since),
                None => probes.record(v, true, now),
            }
        }
        let o = observe::observed(
            NAMES[r],
            &spec,
            dbo.as_ref(),
            drained,
            &persisted,
            &mem,
            &probes,
        );
        if authority(&o, now).is_none() && s.reachable(r) {
            mem.lease = Some(LeaseObs {
                state: s.witness.state.clone(),
                witness_now: s.wnow(),
                received_at: now,
            });
        }
        for (v, healthy) in vantages.iter().zip(self.probe(s, 1 - r)) {
            probes.record(v, healthy, now);
        }
        let o = observe::observed(
            NAMES[r],
            &spec,
            dbo.as_ref(),
            drained,
            &persisted,
            &mem,
            &probes,
        );
        let plan = decide(&o, now);
        let c = &mut s.ctl[r];
        c.lease = mem.lease;
        let listed = probes.probes();
        for (i, v) in vantages.iter().enumerate() {
            c.failing[i] = listed
                .iter()
                .find(|p| p.vantage == *v)
                .and_then(|p| p.failing_since);
        }
        c.report = observe::holder_report(dbo.as_ref());
        let steps: Vec<Step> = plan
            .steps
            .iter()
            .filter(|s| !matches!(s, Step::Audit(_)))
            .cloned()
            .collect();
        if plan.steps.is_empty() {
            let wake = s.t_after(r, wake_in_ms(&o, now, TICK_MS));
            s.ctl[r].wake = wake;
            return;
        }
        let c = &mut s.ctl[r];
        // Executor::run: load, start the operation.
        let (mut state, store_ok) = if s.store_up[r] {
            (s.store[r].clone(), true)
        } else {
            (Persisted::default(), false)
        };
        let mut stopped = None;
        if !store_ok {
            stopped = Some(("load", false));
        }
        if let Some(start) = &plan.start
            && state.operation.as_ref().is_none_or(|o| o.id != start.id)
        {
            state.operation = Some(start.clone());
        }
        let only_renew = plan
            .steps
            .iter()
            .all(|s| matches!(s, Step::RenewLease { .. }));
        let give_up = !store_ok && self.knob(Knob::FenceNeedsStore);
        c.run = Some(Run {
            next: if give_up { steps.len() } else { 0 },
            steps,
            state,
            store_ok,
            cur: None,
            done: Vec::new(),
            lease: None,
            renewed: None,
            stopped,
            plan_only_renew: only_renew,
        });
    }

    /// Ends the run: [`Memory::absorb`] and the next wake-up.
    fn finish_run(&self, s: &mut State, r: usize) {
        let now = s.mono(r);
        let Some(run) = s.ctl[r].run.take() else {
            return;
        };
        let stopped = run.stopped.map(|(step, lost)| Stopped::Failed {
            step,
            error: if lost {
                ExecError::Witness(WitnessPortError::LeaseLost(Box::new(LeaseView {
                    state: Default::default(),
                    witness_now: Millis(0),
                })))
            } else {
                ExecError::Witness(WitnessPortError::Unavailable("model".into()))
            },
        });
        let out = Outcome {
            done: run.done.clone(),
            renewed: run.renewed,
            lease: run.lease.clone(),
            persisted: run.state.clone(),
            audit_failures: Vec::new(),
            stopped,
        };
        let c = &mut s.ctl[r];
        let mut mem = Memory {
            lease: c.lease.clone(),
            renewed: c.renewed,
            last_change: c.last_change,
        };
        let plan = Plan {
            steps: if run.plan_only_renew {
                vec![Step::RenewLease { epoch: 0 }]
            } else {
                vec![Step::FinishOperation]
            },
            ..Plan::default()
        };
        // The runner's pause: from the observation the plan was decided on (its lease and grant
        // are still the memory's), at the end of the run.
        let mut o = sample();
        o.region = NAMES[r].to_owned();
        o.spec.timing = TIMING;
        o.lease = mem.lease.clone();
        o.renewed = mem.renewed;
        let pause_ms = wake_in_ms(&o, now, TICK_MS);
        let acted = mem.absorb(&plan, &out, now);
        c.lease = mem.lease;
        c.renewed = mem.renewed;
        c.last_change = mem.last_change;
        let wake = if acted { s.t } else { s.t_after(r, pause_ms) };
        s.ctl[r].wake = wake;
    }

    /// Saves the executor's state to the store; false when the store is down.
    fn save(&self, s: &mut State, r: usize) -> bool {
        if !s.store_up[r] {
            return false;
        }
        if let Some(run) = &s.ctl[r].run {
            s.store[r] = run.state.clone();
        }
        true
    }

    fn stop(s: &mut State, r: usize, step: &'static str, lost: bool, fencing: bool) {
        let run = s.ctl[r].run.as_mut().expect("run");
        run.stopped.get_or_insert((step, lost));
        run.cur = None;
        if fencing {
            run.next += 1;
        } else {
            run.next = run.steps.len();
        }
    }

    fn done(s: &mut State, r: usize, name: &'static str) {
        let run = s.ctl[r].run.as_mut().expect("run");
        run.done.push(name);
        run.cur = None;
        run.next += 1;
    }

    /// The controller's next move within its plan: start the next step, or finish the one in
    /// progress when it can.
    fn step(&self, s: &mut State, r: usize, fate: Fate) {
        let run = s.ctl[r].run.as_ref().expect("run");
        if let Some(cur) = run.cur.clone() {
            let step = run.steps[run.next].clone();
            self.progress(s, r, &step, cur);
            return;
        }
        if run.next >= run.steps.len() {
            self.finish_run(s, r);
            return;
        }
        let step = run.steps[run.next].clone();
        let fencing = matches!(step, Step::Drain { .. } | Step::Fence { .. });
        let needs_store = !fencing && !matches!(step, Step::RenewLease { .. });
        let old_exec = self.knob(Knob::FenceNeedsStore);
        if !run.store_ok && needs_store && !old_exec {
            s.ctl[r].run.as_mut().expect("run").next += 1;
            return;
        }
        if step.writes() && run.state.operation.is_some() {
            let run = s.ctl[r].run.as_mut().expect("run");
            let op = run.state.operation.as_mut().expect("op");
            op.step = step.name().to_owned();
            if let Some(e) = epoch_of(&step) {
                op.epoch = op.epoch.max(e);
            }
            if !self.save(s, r) {
                let run = s.ctl[r].run.as_mut().expect("run");
                run.stopped.get_or_insert((step.name(), false));
                run.store_ok = false;
                if old_exec {
                    run.next = run.steps.len();
                    return;
                }
                if needs_store {
                    run.next += 1;
                    return;
                }
            }
        }
        self.start(s, r, &step, fate);
    }

    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        s: &mut State,
        r: usize,
        step: &Step,
        req: LeaseRequest,
        limit_ms: i64,
        fate: Fate,
    ) {
        let id = format!("{}-{}-{}", NAMES[r], s.t, s.ctl[r].sent_now);
        s.ctl[r].sent_now += 1;
        let req = req.request_id(id);
        if self.cfg.faults.dup != 0 {
            s.net[r] = Some(req.clone());
        }
        let sent = s.mono(r);
        let timeout_t = s.t_after(r, limit_ms);
        let reachable = s.reachable(r);
        let applied = match fate {
            Fate::Normal | Fate::LoseReply | Fate::DelayReply if reachable => {
                Self::witness_apply(s, &req)
            }
            _ => None,
        };
        if fate == Fate::Normal
            && let Some(answer) = applied.clone()
        {
            s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Call {
                req: req.clone(),
                sent,
                timeout_t,
                answer: None,
                lost: true,
            });
            self.reply(s, r, step, &req, sent, answer);
            return;
        }
        let lost = match fate {
            Fate::DelayRequest => !reachable,
            Fate::DelayReply => applied.is_none(),
            _ => true,
        };
        s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Call {
            req,
            sent,
            timeout_t,
            answer: applied,
            lost,
        });
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.timeouts.lease.as_millis()).unwrap_or(i64::MAX)
    }

    fn admit_db(s: &mut State, r: usize, epoch: u64) -> bool {
        let c = &mut s.ctl[r];
        if epoch < c.db_epoch {
            return false;
        }
        c.db_epoch = epoch;
        true
    }

    fn admit_route(s: &mut State, r: usize, epoch: u64) -> bool {
        let c = &mut s.ctl[r];
        if epoch < c.route_epoch {
            return false;
        }
        c.route_epoch = epoch;
        true
    }

    fn start(&self, s: &mut State, r: usize, step: &Step, fate: Fate) {
        let ttl = TIMING.ttl_ms;
        let me = NAMES[r];
        let now = s.mono(r);
        let name = step.name();
        let fencing = matches!(step, Step::Drain { .. } | Step::Fence { .. });
        let up = s.plane[r].up;
        match step {
            Step::RenewLease { .. } => {
                let mut limit = self.lease_ms();
                if !self.knob(Knob::UnboundedSteps)
                    && let Some(g) = s.ctl[r].last_grant
                {
                    let left = TIMING.deadline_ms() - now.since(g.sent_at);
                    if left <= 0 {
                        Self::stop(s, r, name, false, false);
                        return;
                    }
                    limit = limit.min(left);
                }
                let mut req = LeaseRequest::renew(me, ttl);
                req.report = s.ctl[r].report.clone();
                self.call(s, r, step, req, limit, fate);
            }
            Step::SuspendSync { .. } => {
                let report = HolderReport {
                    synchronous: false,
                    flushed_lsn: s.ctl[r].report.as_ref().and_then(|r| r.flushed_lsn.clone()),
                };
                let req = LeaseRequest::renew(me, ttl).report(report);
                self.call(s, r, step, req, self.lease_ms(), fate);
            }
            Step::AcquireLease => {
                let mut req = LeaseRequest::acquire(me, ttl);
                req.report = s.ctl[r].report.clone();
                self.call(s, r, step, req, self.lease_ms(), fate);
            }
            Step::ReleaseLease { epoch } => {
                // The adapter reads first: not ours (any more) is a successful no-op.
                let cur = &s.witness.state;
                if !s.reachable(r) {
                    let timeout_t = s.t_after(r, self.lease_ms());
                    s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Busy { until: timeout_t });
                    // Fails at the timeout (see `progress`).
                    s.ctl[r]
                        .run
                        .as_mut()
                        .expect("run")
                        .stopped
                        .get_or_insert((name, false));
                    return;
                }
                if cur.holder != me || cur.epoch != *epoch {
                    Self::done(s, r, name);
                    return;
                }
                self.call(s, r, step, LeaseRequest::release(me), self.lease_ms(), fate);
            }
            Step::Drain { epoch } => {
                if !up || !Self::admit_route(s, r, *epoch) {
                    Self::stop(s, r, name, false, fencing);
                    return;
                }
                if s.plane[r].drained {
                    // Already drained: nothing to wait for.
                    Self::done(s, r, name);
                    return;
                }
                let until = s.t + self.fence_units();
                let p = &mut s.plane[r];
                p.drain_at = Some(p.drain_at.map_or(until, |d| d.min(until)));
                let until = p.drain_at.expect("drain");
                s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Busy { until });
            }
            Step::Fence { epoch } => {
                if !up || !Self::admit_db(s, r, *epoch) {
                    Self::stop(s, r, name, false, fencing);
                    return;
                }
                let until = self.begin_fence(s, r);
                if self.knob(Knob::FenceBeforeStop) {
                    Self::done(s, r, name);
                } else {
                    s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Busy { until });
                }
            }
            Step::Undrain { epoch } => {
                if !up || !Self::admit_route(s, r, *epoch) {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                s.plane[r].drained = false;
                s.plane[r].drain_at = None;
                Self::done(s, r, name);
            }
            Step::Unfence { epoch } => {
                if !up || !Self::admit_db(s, r, *epoch) || s.plane[r].role == Role::Standby {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                if s.plane[r].was_standby {
                    let pos = s.plane[r].pos;
                    let tl = u8::try_from(s.tls.len()).expect("few timelines");
                    s.tls.push(Tl {
                        parent: pos.tl,
                        start: pos.lsn,
                        acked: pos.lsn,
                        unreported: pos.lsn,
                        covered: pos.lsn,
                    });
                    s.plane[r].pos = Pos { tl, lsn: pos.lsn };
                }
                let p = &mut s.plane[r];
                p.role = Role::Primary;
                p.ro = false;
                p.was_standby = false;
                p.fence_at = None;
                Self::done(s, r, name);
            }
            Step::Promote { epoch } => {
                if !up || !Self::admit_db(s, r, *epoch) {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                if s.plane[r].role == Role::Standby {
                    let pos = s.plane[r].pos;
                    let tl = u8::try_from(s.tls.len()).expect("few timelines");
                    s.tls.push(Tl {
                        parent: pos.tl,
                        start: pos.lsn,
                        acked: pos.lsn,
                        unreported: pos.lsn,
                        covered: pos.lsn,
                    });
                    let p = &mut s.plane[r];
                    p.role = Role::Primary;
                    p.pos = Pos { tl, lsn: pos.lsn };
                    p.sync_on = true;
                }
                Self::done(s, r, name);
            }
            Step::Demote { epoch, .. } => {
                if !up || !Self::admit_db(s, r, *epoch) || s.plane[r].role == Role::Fenced {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                let until = s.t + 1;
                s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Busy { until });
            }
            Step::WaitReplayed { lsn } => {
                let timeout_t = s.t_after(
                    r,
                    i64::try_from(self.timeouts.replay.as_millis()).unwrap_or(i64::MAX),
                );
                s.ctl[r].run.as_mut().expect("run").cur = Some(Cur::Wait {
                    lsn: *lsn,
                    timeout_t,
                });
                self.progress(
                    s,
                    r,
                    step,
                    Cur::Wait {
                        lsn: *lsn,
                        timeout_t,
                    },
                );
            }
            Step::FlipDns { .. } | Step::Audit(_) => Self::done(s, r, name),
            Step::RestoreSync { epoch } => {
                if !up || !Self::admit_db(s, r, *epoch) {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                s.plane[r].sync_on = true;
                Self::done(s, r, name);
            }
            Step::Rebuild { epoch, .. } => {
                let peer = 1 - r;
                let source_ok = s.plane[peer].up && s.plane[peer].role != Role::Standby;
                if !up || !s.link() || !source_ok || !Self::admit_db(s, r, *epoch) {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                let pos = s.plane[peer].pos;
                let p = &mut s.plane[r];
                p.role = Role::Standby;
                p.ro = false;
                p.was_standby = false;
                p.pos = pos;
                p.sync_on = false;
                p.fence_at = None;
                Self::done(s, r, name);
            }
            Step::FinishOperation => {
                let run = s.ctl[r].run.as_mut().expect("run");
                if let Some(op) = run.state.operation.take()
                    && matches!(op.kind, OpKind::Switchover | OpKind::Failback)
                {
                    remember_completed(&mut run.state.completed, op.id);
                }
                if self.save(s, r) {
                    Self::done(s, r, name);
                } else {
                    Self::stop(s, r, name, false, false);
                }
            }
        }
    }

    /// Starts a fence of r's database (or joins one in progress); returns when it completes.
    fn begin_fence(&self, s: &mut State, r: usize) -> i64 {
        let units = if self.knob(Knob::FenceBeforeStop) {
            OPERATOR_UNITS
        } else {
            self.fence_units()
        };
        let until = s.t + units;
        let p = &mut s.plane[r];
        p.fence_at = Some(p.fence_at.map_or(until, |f| f.min(until)));
        p.fence_at.expect("fence")
    }

    fn progress(&self, s: &mut State, r: usize, step: &Step, cur: Cur) {
        let name = step.name();
        let fencing = matches!(step, Step::Drain { .. } | Step::Fence { .. });
        match cur {
            Cur::Busy { until } => {
                if s.t < until {
                    return;
                }
                match step {
                    Step::ReleaseLease { .. } => {
                        Self::stop(s, r, name, false, false);
                    }
                    Step::Demote { target, .. } => {
                        let _ = target;
                        if !s.plane[r].up || s.plane[r].role != Role::Primary {
                            Self::stop(s, r, name, false, false);
                            return;
                        }
                        // A clean stop ships all WAL to a streaming standby first.
                        let peer = 1 - r;
                        if s.streaming(r, peer) {
                            s.plane[peer].pos = s.plane[r].pos;
                        }
                        let p = &mut s.plane[r];
                        p.role = Role::Standby;
                        p.sync_on = false;
                        let lsn = Lsn(u64::from(p.pos.lsn) * MIB);
                        let run = s.ctl[r].run.as_mut().expect("run");
                        if let Some(op) = run.state.operation.as_mut() {
                            op.lsn = Some(lsn);
                        }
                        if self.save(s, r) {
                            Self::done(s, r, name);
                        } else {
                            Self::stop(s, r, name, false, false);
                        }
                    }
                    Step::Fence { .. } => {
                        let p = &s.plane[r];
                        let ok = p.role != Role::Primary || (p.ro && p.fence_at.is_none());
                        if ok || !p.up {
                            Self::done(s, r, name);
                        } else {
                            Self::stop(s, r, name, false, fencing);
                        }
                    }
                    _ => Self::done(s, r, name),
                }
            }
            Cur::Wait { lsn, timeout_t } => {
                if s.replayed(r, lsn) {
                    Self::done(s, r, name);
                } else if s.t >= timeout_t {
                    Self::stop(s, r, name, false, false);
                }
            }
            Cur::Call { timeout_t, .. } => {
                // No reply in time (the Reply action delivers one that arrives).
                if s.t >= timeout_t {
                    Self::stop(s, r, name, false, false);
                }
            }
        }
    }

    fn reply(
        &self,
        s: &mut State,
        r: usize,
        step: &Step,
        req: &LeaseRequest,
        sent: Mono,
        answer: Result<LeaseView, LeaseView>,
    ) {
        let name = step.name();
        let now = s.mono(r);
        let obs = |v: &LeaseView| LeaseObs {
            state: v.state.clone(),
            witness_now: v.witness_now,
            received_at: now,
        };
        if req.op == LeaseOp::Release {
            let epoch = epoch_of(step).unwrap_or(0);
            let p = &mut s.plane[r];
            let disarmed = !self.cfg.watchdog || (p.wd_alive && p.up && epoch >= p.wd_epoch);
            if disarmed && p.wd_alive {
                p.wd_until = None;
                p.wd_epoch = epoch;
            }
            match answer {
                Ok(_) if disarmed => Self::done(s, r, name),
                _ => Self::stop(s, r, name, false, false),
            }
            return;
        }
        let expected = match step {
            Step::RenewLease { epoch } | Step::SuspendSync { epoch } => Some(*epoch),
            _ => None,
        };
        match answer {
            Ok(v) if expected.is_none_or(|e| e == v.state.epoch) => {
                // granted(): memory, the executor's grant, the route's dead-man switch and the
                // database watchdog, all from the SEND time.
                let grant = Renewed {
                    sent_at: sent,
                    epoch: v.state.epoch,
                };
                let until = sent.0 + TIMING.deadline_ms();
                {
                    let c = &mut s.ctl[r];
                    c.last_grant = Some(grant);
                    let run = c.run.as_mut().expect("run");
                    run.lease = Some(obs(&v));
                    run.renewed = Some(grant);
                }
                let p = &mut s.plane[r];
                let epoch = grant.epoch;
                if p.up {
                    p.route_until = Some(until);
                }
                // The watchdog's arm: a lower epoch is refused, the same one never moves back;
                // a crashed watchdog fails the step (the grant is recorded all the same).
                let armed = if !self.cfg.watchdog {
                    true
                } else if p.wd_alive && p.up && epoch >= p.wd_epoch {
                    let keep = p.wd_until.filter(|_| epoch == p.wd_epoch);
                    p.wd_until = Some(keep.map_or(until, |u| u.max(until)));
                    p.wd_epoch = epoch;
                    true
                } else {
                    false
                };
                if !armed {
                    Self::stop(s, r, name, false, false);
                    return;
                }
                if matches!(step, Step::SuspendSync { .. }) {
                    s.ctl[r].report = req.report.clone();
                    if !Self::admit_db(s, r, expected.unwrap_or(0)) || !s.plane[r].up {
                        Self::stop(s, r, name, false, false);
                        return;
                    }
                    s.plane[r].sync_on = false;
                }
                Self::done(s, r, name);
            }
            Ok(v) | Err(v) => {
                let run = s.ctl[r].run.as_mut().expect("run");
                run.lease = Some(obs(&v));
                // Renew conflicts are LeaseLost; acquire conflicts HeldByAnother.
                let lost = req.op == LeaseOp::Renew;
                Self::stop(s, r, name, lost, false);
            }
        }
    }

    /// The witness applies `req` now.
    fn witness_apply(s: &mut State, req: &LeaseRequest) -> Option<Result<LeaseView, LeaseView>> {
        let now = s.wnow();
        let applied = contract::apply(&s.witness, req, now).ok()?;
        s.witness = applied.record;
        let view = |state| LeaseView {
            state,
            witness_now: applied.at,
        };
        if let Ok(st) = &applied.outcome
            && let Some(rep) = &st.report
            && let Some(lsn) = rep.flushed_lsn.as_deref()
            && let Some(lsn) = crate::adapters::postgres::parse_lsn(lsn)
        {
            // Mark acknowledged writes the report covers (invariant 3's byte bound).
            let holder = NAMES.iter().position(|n| *n == st.holder);
            if let Some(h) = holder {
                let tl = s.plane[h].pos.tl;
                let n = u8::try_from(lsn.0 / MIB).unwrap_or(u8::MAX);
                let t = &mut s.tls[usize::from(tl)];
                t.covered = t.covered.max(n.min(t.acked));
            }
        }
        Some(match applied.outcome {
            Ok(st) => Ok(view(st)),
            Err(c) => Err(view(c.current)),
        })
    }

    /// Keeps only the witness's remembered answers that a request still in the network can
    /// replay: the others can never matter again.
    fn prune(s: &mut State) {
        let live: Vec<(String, String)> = s
            .net
            .iter()
            .flatten()
            .chain(
                s.ctl
                    .iter()
                    .filter_map(|c| match c.run.as_ref()?.cur.as_ref()? {
                        Cur::Call { req, .. } => Some(req),
                        _ => None,
                    }),
            )
            .filter_map(|r| Some((r.holder.clone(), r.request_id.clone()?)))
            .collect();
        s.witness
            .answered
            .retain(|a| live.contains(&(a.holder.clone(), a.request_id.clone())));
    }

    // ---- time ----

    fn advance(&self, s: &mut State) {
        // Clients: asynchronous WAL of the last unit arrives, then this unit's write.
        for p in 0..2 {
            let sb = 1 - p;
            if s.streaming(p, sb) {
                s.plane[sb].pos = s.plane[p].pos;
            }
        }
        for (p, name) in NAMES.iter().enumerate() {
            if !s.acks(p) {
                continue;
            }
            let sync = s.plane[p].sync_on;
            let pos = &mut s.plane[p].pos;
            if pos.lsn == u8::MAX {
                continue;
            }
            pos.lsn += 1;
            let pos = *pos;
            if sync {
                s.plane[1 - p].pos = pos;
            }
            let reported_async = s.witness.state.holder == *name
                && s.witness
                    .state
                    .report
                    .as_ref()
                    .is_some_and(|r| !r.synchronous);
            let t = &mut s.tls[usize::from(pos.tl)];
            t.acked = pos.lsn;
            if !reported_async {
                t.unreported = pos.lsn;
            }
        }
        s.t += 1;
        for c in &mut s.ctl {
            c.sent_now = 0;
        }
        for r in 0..2 {
            let mono = s.mono(r).0;
            let p = &mut s.plane[r];
            if !p.up {
                continue;
            }
            if p.drain_at.is_some_and(|d| d <= s.t) {
                p.drain_at = None;
                p.drained = true;
            }
            if p.fence_at.is_some_and(|f| f <= s.t) {
                p.fence_at = None;
                match p.role {
                    Role::Primary if self.knob(Knob::SessionFence) => p.ro = true,
                    Role::Primary => p.role = Role::Fenced,
                    // The same fence stops a standby (marker + standby.signal).
                    Role::Standby if !self.knob(Knob::SessionFence) => {
                        p.role = Role::Fenced;
                        p.was_standby = true;
                    }
                    _ => {}
                }
            }
            // The database watchdog: fences once its armed deadline passed.
            let fire = p.wd_alive
                && p.role != Role::Fenced
                && !p.ro
                && p.fence_at.is_none()
                && p.wd_until.is_some_and(|u| mono >= u);
            if fire {
                let _ = self.begin_fence(s, r);
            }
        }
    }

    /// Time may pass only when no running controller has something to do now.
    fn urgent(&self, s: &State) -> bool {
        (0..2).any(|r| {
            let c = &s.ctl[r];
            if !s.plane[r].up || c.paused_until > s.t {
                return false;
            }
            match &c.run {
                None => c.wake <= s.t,
                Some(run) => match &run.cur {
                    None => true,
                    Some(Cur::Busy { until }) => *until <= s.t,
                    Some(Cur::Wait { timeout_t, .. }) => *timeout_t <= s.t,
                    Some(Cur::Call { timeout_t, .. }) => *timeout_t <= s.t,
                },
            }
        })
    }

    /// The next step of r's plan is a witness call not started yet.
    fn next_is_call(s: &State, r: usize) -> bool {
        s.ctl[r].run.as_ref().is_some_and(|run| {
            run.cur.is_none()
                && run.steps.get(run.next).is_some_and(|st| {
                    matches!(
                        st,
                        Step::RenewLease { .. }
                            | Step::AcquireLease
                            | Step::ReleaseLease { .. }
                            | Step::SuspendSync { .. }
                    )
                })
        })
    }

    fn can_step(s: &State, r: usize) -> bool {
        let c = &s.ctl[r];
        let Some(run) = &c.run else {
            return false;
        };
        match &run.cur {
            None => true,
            Some(Cur::Busy { until }) => *until <= s.t,
            Some(Cur::Wait { lsn, timeout_t }) => *timeout_t <= s.t || s.replayed(r, *lsn),
            Some(Cur::Call { timeout_t, .. }) => *timeout_t <= s.t,
        }
    }

    fn fault(&self, s: &mut State) {
        s.budget -= 1;
        s.a_dead = None;
        s.quiet = None;
    }
}

impl Model for Mc {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        self.cfg.rates.iter().map(|r| self.init(*r)).collect()
    }

    fn actions(&self, s: &State, out: &mut Vec<Action>) {
        let f = self.cfg.faults;
        for r in 0..2 {
            let c = &s.ctl[r];
            let running = s.plane[r].up && c.paused_until <= s.t;
            if running {
                if c.run.is_none() && c.wake <= s.t {
                    out.push(Action::Tick(r));
                }
                if Self::can_step(s, r) {
                    out.push(Action::Step(r));
                }
            }
            if let Some(Cur::Call {
                answer,
                lost,
                timeout_t,
                ..
            }) = c.run.as_ref().and_then(|r| r.cur.as_ref())
                && !lost
                && *timeout_t > s.t
                && running
            {
                if answer.is_none() && s.reachable(r) {
                    out.push(Action::Apply(r));
                }
                if answer.is_some() && s.reachable(r) {
                    out.push(Action::Reply(r));
                }
            }
            let budget = s.budget > 0 && s.t <= self.cfg.window;
            if running && on(f.lose, r) && budget && Self::next_is_call(s, r) {
                for fate in [
                    Fate::LoseRequest,
                    Fate::LoseReply,
                    Fate::DelayRequest,
                    Fate::DelayReply,
                ] {
                    out.push(Action::Net(r, fate));
                }
            }
        }
        if !self.urgent(s) && s.t < self.cfg.horizon {
            out.push(Action::Advance);
        }
        // Faults: a controller or region crash or a pause lands on any step boundary of a
        // busy controller; the other faults (and every heal) between time units.
        let budget = s.budget > 0 && s.t <= self.cfg.window;
        let quiet = !self.urgent(s);
        for r in 0..2 {
            let p = &s.plane[r];
            let c = &s.ctl[r];
            let busy = p.up && c.paused_until <= s.t && (c.run.is_some() || c.wake <= s.t);
            if budget && on(f.crash_ctl, r) && busy {
                out.push(Action::CrashCtl(r));
            }
            let wd_ok = p.wd_alive || !self.cfg.watchdog;
            if budget && on(f.pause, r) && busy && wd_ok {
                out.push(Action::Pause(r));
            }
            if budget && on(f.crash_region, r) && p.up && (busy || quiet) {
                out.push(Action::CrashRegion(r));
            }
            if !quiet {
                continue;
            }
            if budget && on(f.dup, r) && s.net[r].is_some() && s.reachable(r) {
                out.push(Action::Duplicate(r));
            }
            if !p.up {
                out.push(Action::RestartRegion(r));
            }
            if budget && on(f.crash_wd, r) && p.up && p.wd_alive && c.paused_until <= s.t {
                out.push(Action::CrashWatchdog(r));
            }
            if on(f.cut_witness, r) && (s.cut_w[r] || budget) {
                out.push(Action::CutWitness(r, !s.cut_w[r]));
            }
            if on(f.isolate, r) && (s.iso[r] || budget) && !s.iso[1 - r] {
                out.push(Action::Isolate(r, !s.iso[r]));
            }
            if on(f.store, r) && (!s.store_up[r] || budget) {
                out.push(Action::StoreDown(r, s.store_up[r]));
            }
        }
        if quiet && f.cut_link != 0 && (s.cut_link || budget) {
            out.push(Action::CutLink(!s.cut_link));
        }
        if quiet && f.switchover != 0 && !s.switchover {
            out.push(Action::Switchover);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        mutation::set(self.cfg.mutation);
        let mut s = last.clone();
        match action {
            Action::Advance => self.advance(&mut s),
            Action::Tick(r) => self.tick(&mut s, r),
            Action::Step(r) => self.step(&mut s, r, Fate::Normal),
            Action::Net(r, fate) => {
                self.fault(&mut s);
                self.step(&mut s, r, fate);
            }
            Action::Apply(r) => {
                let run = s.ctl[r].run.as_ref()?;
                let step = run.steps[run.next].clone();
                let Some(Cur::Call { req, sent, .. }) = run.cur.clone() else {
                    return None;
                };
                match Self::witness_apply(&mut s, &req) {
                    Some(answer) => self.reply(&mut s, r, &step, &req, sent, answer),
                    None => {
                        if let Some(Cur::Call { lost, .. }) = s.ctl[r].run.as_mut()?.cur.as_mut() {
                            *lost = true;
                        }
                    }
                }
            }
            Action::Reply(r) => {
                let run = s.ctl[r].run.as_ref()?;
                let step = run.steps[run.next].clone();
                let Some(Cur::Call {
                    req, sent, answer, ..
                }) = run.cur.clone()
                else {
                    return None;
                };
                self.reply(&mut s, r, &step, &req, sent, answer?);
            }
            Action::Duplicate(r) => {
                self.fault(&mut s);
                let req = s.net[r].take()?;
                let _ = Self::witness_apply(&mut s, &req);
            }
            Action::CrashCtl(r) => {
                self.fault(&mut s);
                s.ctl[r] = fresh_ctl(s.t);
            }
            Action::Pause(r) => {
                self.fault(&mut s);
                s.ctl[r].paused_until = s.t + PAUSE_UNITS;
            }
            Action::CrashRegion(r) => {
                self.fault(&mut s);
                let ok_b = r == 0
                    && s.plane[1].role == Role::Standby
                    && s.plane[1].pos == s.plane[0].pos
                    && s.witness.state.holder == "a"
                    && s.witness
                        .state
                        .report
                        .as_ref()
                        .is_some_and(|r| r.synchronous)
                    && !s.active_fault()
                    && s.ctl[1].paused_until <= s.t;
                s.ctl[r] = fresh_ctl(s.t);
                let p = &mut s.plane[r];
                p.up = false;
                p.fence_at = None;
                p.drain_at = None;
                if ok_b {
                    s.a_dead = Some(s.t);
                }
            }
            Action::RestartRegion(r) => {
                s.a_dead = None;
                let wd = self.cfg.watchdog;
                let p = &mut s.plane[r];
                p.up = true;
                if p.role == Role::Primary {
                    p.role = Role::Fenced;
                }
                p.drained = true;
                p.route_until = None;
                p.wd_alive = wd;
                p.wd_until = None;
                p.wd_epoch = 0;
                s.ctl[r].wake = s.t;
            }
            Action::CrashWatchdog(r) => {
                self.fault(&mut s);
                s.plane[r].wd_alive = false;
                s.plane[r].wd_until = None;
            }
            Action::CutWitness(r, cut) => {
                if cut {
                    self.fault(&mut s);
                }
                s.cut_w[r] = cut;
            }
            Action::Isolate(r, cut) => {
                if cut {
                    self.fault(&mut s);
                }
                s.iso[r] = cut;
            }
            Action::CutLink(cut) => {
                if cut {
                    self.fault(&mut s);
                }
                s.cut_link = cut;
            }
            Action::StoreDown(r, down) => {
                if down {
                    self.fault(&mut s);
                }
                s.store_up[r] = !down;
            }
            Action::Switchover => {
                // A switchover has a short window with no writer by design: liveness counts
                // from the request.
                s.switchover = true;
                s.quiet = None;
            }
        }
        Self::prune(&mut s);
        if s.active_fault() {
            s.quiet = None;
        } else if s.quiet.is_none() {
            s.quiet = Some(s.t);
        }
        Some(s)
    }

    fn within_boundary(&self, s: &State) -> bool {
        s.t <= self.cfg.horizon
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            // 1. At most one region can acknowledge a write (any client, sync or not).
            Property::always("one writer", |_, s: &State| {
                !(s.writable(0) && s.writable(1))
            }),
            // 2. Strict durability: every acknowledged write is in every writable primary.
            Property::always(
                "no acknowledged write lost (strict)",
                |m: &Mc, s: &State| {
                    m.cfg.durability != Durability::Strict
                        || (0..2).filter(|r| s.writable(*r)).all(|r| {
                            (0..s.tls.len()).all(|tl| {
                                let tl = u8::try_from(tl).expect("few");
                                s.tls[usize::from(tl)].acked <= s.limit_in(s.plane[r].pos, tl)
                            })
                        })
                },
            ),
            // 3. Default durability: writes a writable primary lacks were acknowledged only
            //    after the holder reported `synchronous:false`, and those the report covered
            //    stay within the RPO byte bound.
            Property::always("loss only reported and within rpo", |m: &Mc, s: &State| {
                (0..2).filter(|r| s.writable(*r)).all(|r| {
                    (0..s.tls.len()).all(|tl| {
                        let tl = u8::try_from(tl).expect("few");
                        let t = s.tls[usize::from(tl)];
                        let lim = s.limit_in(s.plane[r].pos, tl);
                        let covered_lost = u64::from(t.covered.saturating_sub(lim)) * MIB;
                        t.unreported <= lim && covered_lost <= m.spec.rpo.max_lag_bytes
                    })
                })
            }),
            // 4. Liveness: `a` really dead, nothing else wrong: `b` acknowledges writes
            //    (default durability) or is a writable primary (strict) within TTL + bound.
            Property::always("b takes over within ttl + bound", |m: &Mc, s: &State| {
                let Some(d) = s.a_dead else {
                    return true;
                };
                let due = d + TIMING.ttl_ms / U + LIVE_BOUND;
                s.t < due || s.writable(1) && (m.cfg.durability == Durability::Strict || s.acks(1))
            }),
            // 5. Liveness: once every fault healed, some region is a writable primary within
            //    TTL + hold-down + bound.
            Property::always("a writer after healing", |_, s: &State| {
                let Some(q) = s.quiet else {
                    return true;
                };
                let due = q + (TIMING.ttl_ms + TIMING.hold_down_ms) / U + LIVE_BOUND;
                s.t < due || s.writable(0) || s.writable(1)
            }),
            // 6. Planned switchover (its configuration: only the request and controller
            //    crashes, on either side, at any step boundary): a writer within one TTL of
            //    the request or of the last crash.
            Property::always(
                "a writer within one ttl of a switchover",
                |m: &Mc, s: &State| {
                    let Some(q) = s.quiet else {
                        return true;
                    };
                    m.cfg.faults.switchover == 0
                        || s.t < q + TIMING.ttl_ms / U
                        || s.writable(0)
                        || s.writable(1)
                },
            ),
            // Coverage: the explored runs do fail over, fence and switch over.
            Property::sometimes("b serves", |_, s: &State| s.acks(1)),
            Property::sometimes("a fenced", |_, s: &State| {
                s.plane[0].up && s.plane[0].role == Role::Fenced
            }),
            Property::sometimes("b rebuilt a", |_, s: &State| {
                s.writable(1) && s.plane[0].role == Role::Standby && s.confirms(1)
            }),
        ]
    }
}

/// Result of one checker run.
pub(crate) struct Report {
    pub(crate) states: usize,
    pub(crate) unique: usize,
    pub(crate) secs: f64,
    /// (property, readable trace) per counterexample.
    pub(crate) found: Vec<(&'static str, String)>,
    /// Coverage properties an explored run reached.
    pub(crate) examples: Vec<&'static str>,
}

fn summary(s: &State) -> String {
    let w = &s.witness.state;
    let mut out = format!(
        "t={:>2} lease={}@{} exp={} rep={}",
        s.t,
        if w.holder.is_empty() { "-" } else { &w.holder },
        w.epoch,
        w.expires_at.map_or(-1, |e| (e.0 - W0) / U),
        w.report
            .as_ref()
            .map_or("-", |r| if r.synchronous { "sync" } else { "async" }),
    );
    for r in 0..2 {
        let p = &s.plane[r];
        let c = &s.ctl[r];
        out += &format!(
            " | {}:{}{:?}{}{} tl{}/{}{}{} wd={}",
            NAMES[r],
            if p.up { "" } else { "DOWN " },
            p.role,
            if p.ro { "(ro)" } else { "" },
            if p.sync_on { "+sync" } else { "" },
            p.pos.tl,
            p.pos.lsn,
            if s.route_drained(r) { " drained" } else { "" },
            if p.fence_at.is_some() { " fencing" } else { "" },
            if !p.wd_alive {
                "dead".to_owned()
            } else {
                p.wd_until
                    .map_or("off".to_owned(), |u| format!("{}", (u - OFFSET[r]) / U))
            },
        );
        if let Some(run) = &c.run {
            let names: Vec<&str> = run.steps.iter().map(Step::name).collect();
            out += &format!(" plan={}@{}", names.join(","), run.next);
        }
    }
    out
}

fn trace(path: stateright::Path<State, Action>) -> String {
    let mut out = String::new();
    let mut prev: Option<Action> = None;
    for (st, act) in path.into_vec() {
        let label = prev.take().map_or("init".to_owned(), |a| format!("{a:?}"));
        out += &format!("  {label:<24} → {}\n", summary(&st));
        prev = act;
    }
    out
}

/// Runs the checker on `cfg` (BFS on one thread: shortest counterexamples). `first`: stop at
/// the first counterexample.
pub(crate) fn check(mut cfg: Cfg, first: bool) -> Report {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<i64>().ok());
    if let Some(h) = env("MC_HORIZON") {
        cfg.horizon = h;
    }
    if let Some(b) = env("MC_BUDGET") {
        cfg.budget = u8::try_from(b).unwrap_or(0);
    }
    let name = cfg.name;
    let started = Instant::now();
    let model = Mc::new(cfg);
    let mut builder = model
        .checker()
        .threads(1)
        .target_state_count(env("MC_MAX_STATES").map_or(30_000_000, |v| v as usize));
    if first {
        builder = builder.finish_when(stateright::HasDiscoveries::AnyFailures);
    }
    let checker = builder.spawn_bfs().join();
    let secs = started.elapsed().as_secs_f64();
    let mut found = Vec::new();
    let mut examples = Vec::new();
    for p in checker.model().properties() {
        let Some(path) = checker.discovery(p.name) else {
            continue;
        };
        if p.expectation == stateright::Expectation::Sometimes {
            examples.push(p.name);
        } else {
            found.push((p.name, trace(path)));
        }
    }
    let r = Report {
        states: checker.state_count(),
        unique: checker.unique_state_count(),
        secs,
        found,
        examples,
    };
    eprintln!(
        "mc[{name}]: states={} unique={} secs={:.1} counterexamples={} reached={:?}",
        r.states,
        r.unique,
        r.secs,
        r.found.len(),
        r.examples
    );
    for (p, t) in &r.found {
        eprintln!("mc[{name}]: property {p:?} violated:\n{t}");
    }
    r
}

fn all_rates() -> Vec<[i64; 2]> {
    let mut v = Vec::new();
    for a in [950, 1000, 1050] {
        for b in [950, 1000, 1050] {
            v.push([a, b]);
        }
    }
    v
}

/// The slowest primary against the fastest standby, and the reverse.
fn extreme_rates() -> Vec<[i64; 2]> {
    vec![[950, 1050], [1050, 950]]
}

fn cfg(name: &'static str, faults: Faults) -> Cfg {
    Cfg {
        name,
        horizon: 30,
        window: 30,
        budget: 1,
        faults,
        rates: extreme_rates(),
        durability: Durability::Default,
        rpo_seconds: 5,
        knob: None,
        mutation: None,
        watchdog: true,
    }
}

/// Region crashes, restarts, every network fate of witness calls, duplicated requests.
fn crash_and_net() -> Cfg {
    cfg(
        "crash+net",
        Faults {
            crash_region: BOTH,
            lose: BOTH,
            dup: BOTH,
            ..Faults::default()
        },
    )
}

/// Gray failures: a region isolated or cut from the witness, controller crashes.
fn isolation() -> Cfg {
    cfg(
        "isolation",
        Faults {
            isolate: BOTH,
            cut_witness: BOTH,
            crash_ctl: BOTH,
            crash_wd: BOTH,
            ..Faults::default()
        },
    )
}

/// The controller's own fencing with no database watchdog at all (the controller is never
/// paused): a crash-restart, an outage of its operation store, its isolation, two at a time.
fn controller_only() -> Cfg {
    Cfg {
        watchdog: false,
        budget: 2,
        horizon: 24,
        window: 8,
        ..cfg(
            "controller-only",
            Faults {
                isolate: A,
                crash_ctl: A,
                store: A,
                ..Faults::default()
            },
        )
    }
}

/// A planned switchover with controller crashes at every step, `rpo: 0s`, strict durability.
fn switchover() -> Cfg {
    Cfg {
        durability: Durability::Strict,
        rpo_seconds: 0,
        ..cfg(
            "switchover",
            Faults {
                switchover: BOTH,
                crash_ctl: BOTH,
                ..Faults::default()
            },
        )
    }
}

/// A paused controller (SIGSTOP past the TTL) on an isolated primary.
fn pause() -> Cfg {
    Cfg {
        budget: 2,
        horizon: 24,
        window: 8,
        ..cfg(
            "pause",
            Faults {
                pause: A,
                isolate: A,
                ..Faults::default()
            },
        )
    }
}

/// Asynchronous loss: the link cut, then the primary's region lost.
fn async_loss() -> Cfg {
    Cfg {
        budget: 2,
        horizon: 24,
        window: 8,
        ..cfg(
            "async-loss",
            Faults {
                cut_link: BOTH,
                crash_region: A,
                ..Faults::default()
            },
        )
    }
}

/// The old primary dies, the peer takes over and is then isolated: the superseded old
/// primary comes back while the new one's lease lapses.
fn superseded(durability: Durability) -> Cfg {
    Cfg {
        durability,
        budget: 2,
        horizon: 44,
        window: 24,
        ..cfg(
            if durability == Durability::Strict {
                "superseded-strict"
            } else {
                "superseded"
            },
            Faults {
                crash_region: A,
                isolate: B,
                ..Faults::default()
            },
        )
    }
}

/// The bounded configurations (CI): each explores one family of faults exhaustively.
fn bounded() -> Vec<Cfg> {
    vec![
        crash_and_net(),
        isolation(),
        controller_only(),
        switchover(),
        pause(),
    ]
}

/// The long configurations (on demand): the bounded ones with every clock-rate pair, and the
/// families whose runs are long (asynchronous loss, a superseded old primary coming back).
fn long() -> Vec<Cfg> {
    let mut v: Vec<Cfg> = bounded()
        .into_iter()
        .map(|c| Cfg {
            rates: all_rates(),
            ..c
        })
        .collect();
    v.push(async_loss());
    v.push(superseded(Durability::Default));
    v.push(superseded(Durability::Strict));
    v
}

#[test]
fn timing_is_valid() {
    assert_eq!(TIMING.validate(), Ok(()));
}

fn run_all(cfgs: Vec<Cfg>) {
    let mut failed = Vec::new();
    let (mut states, started) = (0, Instant::now());
    // `MC_ONLY=name,name`: run only those configurations (on-demand runs).
    let only = std::env::var("MC_ONLY").ok();
    for cfg in cfgs {
        let name = cfg.name;
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|n| n == name))
        {
            continue;
        }
        let r = check(cfg, false);
        states += r.unique;
        if !r.found.is_empty() {
            failed.push((name, r.found.iter().map(|f| f.0).collect::<Vec<_>>()));
        }
    }
    eprintln!(
        "mc: total unique states={states} secs={:.1}",
        started.elapsed().as_secs_f64()
    );
    assert!(failed.is_empty(), "counterexamples: {failed:?}");
}

#[test]
fn mc_bounded() {
    run_all(bounded());
}

/// On demand (`cargo test -p continuum-controller --release -- --ignored mc_long`).
#[test]
#[ignore]
fn mc_long() {
    run_all(long());
}

/// The checker must find a counterexample once `cfg`'s mechanism is removed.
fn must_fail(cfg: Cfg, what: &str) {
    let r = check(cfg, true);
    assert!(
        !r.found.is_empty(),
        "{what}: the checker found no counterexample with the mechanism removed"
    );
}

#[test]
fn mc_path1_retaking_any_free_lease_loses_writes() {
    let c = Cfg {
        mutation: Some(Mutation::RetakeAnyFreeLease),
        ..superseded(Durability::Default)
    };
    must_fail(c, "path 1");
}

#[test]
fn mc_path2_a_session_setting_is_no_fence() {
    let c = Cfg {
        knob: Some(Knob::SessionFence),
        ..isolation()
    };
    must_fail(c, "path 2");
}

/// Path 3 runs without the database watchdog, as on Kubernetes today: there the CNPG fence is
/// the only fence, so the step must wait until the instance has stopped.
#[test]
fn mc_path3_a_fence_is_done_only_when_the_instance_stopped() {
    let c = Cfg {
        knob: Some(Knob::FenceBeforeStop),
        ..controller_only()
    };
    must_fail(c, "path 3");
}

#[test]
fn mc_path4_fencing_must_not_need_the_store() {
    let c = Cfg {
        knob: Some(Knob::FenceNeedsStore),
        ..controller_only()
    };
    must_fail(c, "path 4");
}

#[test]
fn mc_path5_step_timeouts_must_fit_the_lease() {
    let c = Cfg {
        knob: Some(Knob::UnboundedSteps),
        ..isolation()
    };
    must_fail(c, "path 5");
}

#[test]
fn mc_path6_a_target_must_retake_its_own_grant() {
    let c = Cfg {
        mutation: Some(Mutation::TargetForgetsOwnGrant),
        ..switchover()
    };
    must_fail(c, "path 6");
}

/// Path 7 needs the restarted controller to read the lease and then fail to re-acquire it for
/// the rest of its term: its first acquire is lost, then its region is isolated (three faults).
/// Without the watchdog, as on Kubernetes.
#[test]
fn mc_path7_a_restarted_holder_must_fence_first() {
    let base = controller_only();
    let c = Cfg {
        mutation: Some(Mutation::RestartedHolderKeepsServing),
        budget: 3,
        faults: Faults {
            isolate: A,
            crash_ctl: A,
            lose: A,
            ..Faults::default()
        },
        ..base
    };
    must_fail(c, "path 7");
}

#[test]
fn mc_path9_a_paused_controller_needs_the_watchdog() {
    let c = Cfg {
        watchdog: false,
        ..pause()
    };
    must_fail(c, "path 9");
}
