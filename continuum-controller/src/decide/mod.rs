//! PURE decision core: `decide(&Observed, now) -> Plan`. No async, no I/O, no clock.
//!
//! Level-triggered: every tick the controller observes, decides and executes the plan; a
//! crashed executor is resumed simply by deciding again from what is observed plus the
//! persisted operation. The rules, in priority order:
//!
//! 1. **Self-fence.** A region whose database is a writable primary but which no longer has
//!    write authority (no successful renew within `deadline = ttl − renew − margin` of the
//!    renew's SEND time, or the witness names another holder) drains its route, makes the
//!    database read-only and audits — before the witness can grant the lease elsewhere.
//! 2. **Renew.** The holder renews every `renew` interval while its database answers (a holder
//!    whose database is down lets the lease lapse, so the peer can take over).
//! 3. **Operation in progress** (switchover/failback source): drain → demote → wait replayed
//!    → release.
//! 4. **Holder that is a standby promotes** (it only holds the lease after acquiring it, which
//!    the witness grants only after expiry or release): promote → (sync suspended in default
//!    durability after an unplanned failover) → undrain → flip DNS → audit. Promotion comes
//!    before the DNS flip, so DNS never points at a read-only replica.
//! 5. **Authoritative primary converges**: un-fence (after hold-down), undrain, restore or
//!    suspend sync, start a requested switchover/approved failback.
//! 6. **Standby**: rebuild when diverged; acquire for a switchover that targets it; acquire for
//!    an automatic failover only with `autoFailover`, peer failing from ≥ 2 vantages for the
//!    hold-down, the lease free, replication inside the RPO bound.
//!
//! Write authority (what the property test checks): the database is writable AND the route is
//! undrained (its dead-man switch, re-armed on every successful renew to `sent + deadline`,
//! has not run out) AND the region is not fenced.

mod model;

pub use model::*;

use crate::audit::{AuditEvent, AuditType};
#[cfg(test)]
use mutation::{Mutation, on as mutation_on};

/// Without the test-only mutation switches every mechanism is on.
#[cfg(not(test))]
fn mutation_on(_: Mutation) -> bool {
    false
}
#[cfg(not(test))]
#[derive(Clone, Copy)]
enum Mutation {
    RetakeAnyFreeLease,
    TargetForgetsOwnGrant,
    RestartedHolderKeepsServing,
}

#[cfg(test)]
mod mc;
#[cfg(test)]
pub mod mutation;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

/// Decides what this region does now. `now` is the local monotonic clock.
pub fn decide(o: &Observed, now: Mono) -> Plan {
    let mut plan = Plan::default();
    let t = o.spec.timing;
    let me = o.region.as_str();
    let peer = peer_of(o);
    let authority = authority(o, now);

    if let Some(l) = &o.lease
        && now.since(l.received_at) > 2 * t.renew_ms
    {
        cond(
            &mut plan,
            ConditionKind::WitnessUnreachable,
            format!("no witness answer for {} ms", now.since(l.received_at)),
        );
    }
    let peer_holds = o.lease.as_ref().is_some_and(|l| l.held_by_other(me, now));
    if peer_holds {
        cond(
            &mut plan,
            ConditionKind::LeaseHeldByPeer,
            format!(
                "lease held by {:?}",
                o.lease
                    .as_ref()
                    .map(|l| l.state.holder.clone())
                    .unwrap_or_default()
            ),
        );
    }

    // 1. Self-fence: a writable surface without authority.
    let exposed = o.local.db == DbRole::Primary && (!o.local.read_only || !o.local.drained);
    let in_switchover_as_source = o.operation.as_ref().is_some_and(|op| {
        matches!(op.kind, OpKind::Switchover | OpKind::Failback) && op.target.as_deref() != Some(me)
    });
    // A restarted controller has no grant of its own yet. While the witness still names it, it
    // takes its own lease back (same holder, same epoch; the witness client's If-Match makes
    // that conditional on nothing having changed since the read). A writable primary is FENCED
    // first: nothing vouches for the previous process's grant (a route's dead-man switch is no
    // fence and direct database clients bypass it), so the unfence waits for the new grant.
    let restarted_holder =
        o.renewed.is_none() && o.lease.as_ref().is_some_and(|l| l.held_by(me, now));
    if exposed && authority.is_none() && !in_switchover_as_source && restarted_holder {
        if mutation_on(Mutation::RestartedHolderKeepsServing) {
            plan.steps.push(Step::AcquireLease);
            return plan;
        }
        let epoch = o.lease.as_ref().map_or(0, |l| l.state.epoch);
        cond(
            &mut plan,
            ConditionKind::SelfFenced,
            "restarted: fenced until the lease is re-acquired".to_owned(),
        );
        plan.steps.push(Step::Drain { epoch });
        plan.steps.push(Step::Fence { epoch });
        plan.steps.push(Step::AcquireLease);
        plan.steps.push(Step::Unfence { epoch });
        plan.steps.push(Step::Undrain { epoch });
        return plan;
    }
    if exposed && authority.is_none() && !in_switchover_as_source {
        let epoch = o.renewed.map_or(0, |r| r.epoch);
        let why = if peer_holds {
            "lease held by another region"
        } else {
            "renew deadline passed"
        };
        cond(&mut plan, ConditionKind::SelfFenced, why.to_owned());
        plan.steps.push(Step::Drain { epoch });
        plan.steps.push(Step::Fence { epoch });
        let mut e = audit(o, AuditType::LeaseLost, "lease-lost", why);
        e.from_primary = me.to_owned();
        e.epoch = Some(epoch);
        plan.steps.push(Step::Audit(Box::new(e)));
        plan.steps.push(Step::FinishOperation);
        plan.start = Some(op(OpKind::SelfFence, format!("fence-{epoch}"), epoch, None));
        return plan;
    }

    // 2. Renew — only while the local database answers: a holder whose database is down must
    // let the lease lapse (its route's dead-man switch drains it by the deadline), or a
    // database crash under a live controller would block the failover forever.
    if let Some(r) = authority
        && now.since(r.sent_at) >= t.renew_ms
    {
        if o.local.db == DbRole::Down {
            cond(
                &mut plan,
                ConditionKind::DatabaseDown,
                "local database unreachable: not renewing; the lease lapses at the deadline"
                    .to_owned(),
            );
        } else {
            plan.steps.push(Step::RenewLease { epoch: r.epoch });
        }
    }

    // 3. Switchover/failback as the source.
    if let Some(opn) = &o.operation
        && matches!(opn.kind, OpKind::Switchover | OpKind::Failback)
        && let Some(target) = opn.target.clone()
        && target != me
    {
        source_steps(o, opn, &target, authority, now, &mut plan);
        return plan;
    }

    // 4. Holder that is still a standby: promote.
    if let Some(r) = authority
        && o.local.db == DbRole::Standby
        && !o.replication.needs_rebuild
    {
        promote_steps(o, r.epoch, &peer, &mut plan);
        return plan;
    }

    // 5. Authoritative primary converges (a fenced, stopped one is un-fenced: started).
    if let Some(r) = authority
        && (o.local.db == DbRole::Primary || fenced_down(o))
    {
        primary_steps(o, r.epoch, &peer, now, &mut plan);
        return plan;
    }

    // 6. Without authority.
    no_authority_steps(o, &peer, peer_holds, now, &mut plan);
    plan
}

/// How long a runner may wait before deciding again, at most `max_ms` (and at least 5 ms): the
/// holder wakes when its renew falls due, a region without authority when the lease it last
/// saw runs out (+5 ms), so neither a renew nor an acquisition waits for a whole tick.
pub fn wake_in_ms(o: &Observed, now: Mono, max_ms: i64) -> i64 {
    let mut ms = max_ms;
    let exposed = o.local.db == DbRole::Primary && (!o.local.read_only || !o.local.drained);
    if let Some(r) = authority(o, now) {
        // The renew, and at the latest the deadline (a renew that failed must not leave the
        // fence waiting for a whole tick).
        let t = o.spec.timing;
        ms = ms
            .min(t.renew_ms - now.since(r.sent_at))
            .min(t.deadline_ms() - now.since(r.sent_at));
    } else if exposed {
        // A writable surface without authority: decide again at once (it fences). Found by
        // the model checker: after a renew capped at the deadline failed, the runner slept a
        // whole tick before fencing, beyond the fence budget's slack.
        return 5;
    } else if let Some(l) = &o.lease {
        let left = l.remaining_ms(now);
        if left > 0 {
            ms = ms.min(left + 5);
        }
    }
    ms.max(5)
}

/// How many completed request ids a region remembers.
pub const COMPLETED_MEMORY: usize = 16;

/// Records a completed request id, forgetting the oldest beyond [`COMPLETED_MEMORY`].
pub fn remember_completed(completed: &mut Vec<String>, id: String) {
    if !completed.contains(&id) {
        completed.push(id);
    }
    if completed.len() > COMPLETED_MEMORY {
        completed.remove(0);
    }
}

/// This region's write authority at `now`: its last acquire/renew was sent less than the
/// deadline ago and the witness's last answer still names it (same epoch).
pub fn authority(o: &Observed, now: Mono) -> Option<Renewed> {
    let r = o.renewed?;
    let l = o.lease.as_ref()?;
    let fresh = now.since(r.sent_at) < o.spec.timing.deadline_ms();
    (fresh && l.state.holder == o.region && l.state.epoch == r.epoch).then_some(r)
}

fn peer_of(o: &Observed) -> String {
    o.spec
        .regions
        .iter()
        .find(|r| **r != o.region)
        .cloned()
        .unwrap_or_default()
}

fn cond(plan: &mut Plan, kind: ConditionKind, message: String) {
    plan.conditions.push(Condition { kind, message });
}

fn audit(o: &Observed, kind: AuditType, reason: &str, message: &str) -> AuditEvent {
    let mut e = AuditEvent::new(kind, &o.spec.name, &o.spec.application);
    e.reason = reason.to_owned();
    e.message = message.to_owned();
    e
}

fn op(kind: OpKind, id: String, epoch: u64, target: Option<String>) -> Operation {
    Operation {
        id,
        kind,
        step: String::new(),
        epoch,
        started_at: contract::Millis(0),
        lsn: None,
        target,
    }
}

/// The local database is held fenced and is not running (fence marker, server stopped).
fn fenced_down(o: &Observed) -> bool {
    o.local.db == DbRole::Down && o.local.read_only
}

fn held_down(o: &Observed, now: Mono) -> bool {
    o.last_change
        .is_some_and(|c| now.since(c) < o.spec.timing.hold_down_ms)
}

/// Replication inside the RPO bound: synchronous, or lag within both bounds.
pub fn within_rpo(o: &Observed) -> bool {
    let r = o.replication;
    r.sync
        || (r.lag_bytes <= o.spec.rpo.max_lag_bytes && r.lag_seconds <= o.spec.rpo.max_lag_seconds)
}

/// The peer fails probes from at least two distinct vantages, each for at least the
/// hold-down.
pub fn peer_down(o: &Observed, now: Mono) -> bool {
    let mut failing: Vec<&str> = o
        .probes
        .iter()
        .filter(|p| {
            !p.healthy
                && p.failing_since
                    .is_some_and(|s| now.since(s) >= o.spec.timing.hold_down_ms)
        })
        .map(|p| p.vantage.as_str())
        .collect();
    failing.sort_unstable();
    failing.dedup();
    failing.len() >= 2
}

fn source_steps(
    o: &Observed,
    opn: &Operation,
    target: &str,
    authority: Option<Renewed>,
    now: Mono,
    plan: &mut Plan,
) {
    let e = opn.epoch;
    let holds = o.lease.as_ref().is_some_and(|l| l.held_by(&o.region, now));
    match (o.local.db, opn.lsn) {
        (DbRole::Primary, _) => {
            let abort = |plan: &mut Plan, why: &str| {
                let mut ev = audit(o, AuditType::Error, "switchover-aborted", why);
                ev.from_primary = o.region.clone();
                ev.to_primary = target.to_owned();
                ev.epoch = Some(e);
                plan.steps.push(Step::Audit(Box::new(ev)));
                plan.steps.push(Step::FinishOperation);
            };
            if authority.is_none() {
                // Lost authority before demoting: fence and abandon the operation; the peer
                // may take over after expiry through the failover rules.
                plan.steps.push(Step::Drain { epoch: e });
                plan.steps.push(Step::Fence { epoch: e });
                abort(plan, "lease lost before demotion");
                return;
            }
            if !o.replication.streaming || o.replication.needs_rebuild || !within_rpo(o) {
                // Compensate: the target can no longer take over without loss; undo the drain
                // and give the request up (a new request id retries it).
                cond(
                    plan,
                    ConditionKind::SwitchoverBlocked,
                    format!("{target} stopped streaming before demotion; switchover aborted"),
                );
                plan.steps.push(Step::Undrain { epoch: e });
                abort(plan, "target stopped streaming before demotion");
                return;
            }
            plan.steps.push(Step::Drain { epoch: e });
            plan.steps.push(Step::Demote {
                epoch: e,
                target: target.to_owned(),
            });
        }
        (DbRole::Standby, Some(lsn)) if holds => {
            plan.steps.push(Step::WaitReplayed { lsn });
            plan.steps.push(Step::ReleaseLease { epoch: e });
        }
        (DbRole::Standby, _) if holds => {
            // Demoted but the LSN was not recorded (crash inside Demote): demote again, which
            // is idempotent and yields the end of the replayed WAL.
            plan.steps.push(Step::Demote {
                epoch: e,
                target: target.to_owned(),
            });
        }
        _ => {
            plan.steps.push(Step::FinishOperation);
        }
    }
}

fn promote_steps(o: &Observed, epoch: u64, peer: &str, plan: &mut Plan) {
    let me = o.region.clone();
    let done = |id: &str| o.completed.iter().any(|c| c == id);
    let planned = o
        .spec
        .switchover
        .as_ref()
        .filter(|s| s.target == me && !done(&s.id))
        .map(|s| s.id.clone());
    let failback = o
        .spec
        .failback
        .as_ref()
        .filter(|f| f.approved && o.spec.primary == me && !done(&f.id))
        .map(|f| f.id.clone());
    let (kind, id, reason) = match (planned, failback) {
        (Some(id), _) => (OpKind::Switchover, id, "operator-requested"),
        (None, Some(id)) => (OpKind::Failback, id, "failback"),
        (None, None) => (OpKind::Failover, format!("failover-{epoch}"), "lease-loss"),
    };
    if o.operation.is_none() {
        plan.start = Some(op(kind, id, epoch, Some(me.clone())));
    }
    plan.steps.push(Step::Promote { epoch });
    // Before the first write: commits wait for the peer (planned: the demoted source follows
    // us; strict: whenever it returns), or, after an unplanned failover in default mode, sync
    // is suspended (the executor reports that to the witness first).
    match (kind, o.spec.durability) {
        (OpKind::Failover, Durability::Default) => {
            plan.steps.push(Step::SuspendSync { epoch });
            cond(
                plan,
                ConditionKind::DurabilityDegraded,
                "no synchronous standby after failover; sync suspended".to_owned(),
            );
        }
        (OpKind::Failover, Durability::Strict) => {
            plan.steps.push(Step::RestoreSync { epoch });
            cond(
                plan,
                ConditionKind::WritesBlockedAwaitingSyncStandby,
                "strict durability: writes wait for a synchronous standby".to_owned(),
            );
        }
        _ => plan.steps.push(Step::RestoreSync { epoch }),
    }
    plan.steps.push(Step::Unfence { epoch });
    plan.steps.push(Step::Undrain { epoch });
    plan.steps.push(Step::FlipDns {
        primary: me.clone(),
        epoch,
    });
    let (t, msg) = match kind {
        OpKind::Failback => (AuditType::FailbackCompleted, "failback completed"),
        _ => (AuditType::Switchover, "promoted"),
    };
    let mut e = audit(o, t, reason, &format!("{peer} → {me} {msg}"));
    e.from_primary = peer.to_owned();
    e.to_primary = me;
    e.epoch = Some(epoch);
    e.step = "promote".to_owned();
    e.lag_seconds = o.replication.lag_seconds;
    plan.steps.push(Step::Audit(Box::new(e)));
    plan.steps.push(Step::FinishOperation);
}

fn primary_steps(o: &Observed, epoch: u64, peer: &str, now: Mono, plan: &mut Plan) {
    let l = o.local;
    // Resume a promotion that crashed after `Promote`: the remaining steps are idempotent.
    if let Some(opn) = &o.operation
        && matches!(
            opn.kind,
            OpKind::Switchover | OpKind::Failback | OpKind::Failover
        )
        && opn.target.as_deref() == Some(o.region.as_str())
    {
        promote_steps(o, epoch, peer, plan);
        plan.steps.retain(|s| !matches!(s, Step::Promote { .. }));
        // The server was fenced and stopped while the operation ran (its controller died and
        // the watchdog fenced it at the deadline): start it first, the durability steps need a
        // running server (found by the drill's double failure: the resumed failover retried
        // SuspendSync against a stopped server forever). Safe: the grant that brought us here
        // carried a report taken from the stopped server (`synchronous: false`), and with the
        // peer's name still set, commits wait until SuspendSync has reported again.
        if fenced_down(o)
            && let Some(i) = plan
                .steps
                .iter()
                .position(|s| matches!(s, Step::Unfence { .. }))
        {
            let unfence = plan.steps.remove(i);
            plan.steps.insert(0, unfence);
        }
        return;
    }
    if l.read_only {
        if held_down(o, now) {
            cond(
                plan,
                ConditionKind::HoldDown,
                "un-fence held down".to_owned(),
            );
            return;
        }
        plan.steps.push(Step::Unfence { epoch });
    }
    if l.drained {
        plan.steps.push(Step::Undrain { epoch });
    }
    if l.read_only || l.drained {
        return;
    }
    // Durability.
    let streaming = o.replication.streaming && !o.replication.needs_rebuild;
    match (o.spec.durability, l.sync_suspended, streaming) {
        (_, true, true) => {
            plan.steps.push(Step::RestoreSync { epoch });
            let mut e = audit(
                o,
                AuditType::RejoinRepair,
                "sync-restored",
                "peer streams again",
            );
            e.epoch = Some(epoch);
            plan.steps.push(Step::Audit(Box::new(e)));
        }
        (Durability::Default, true, false) => cond(
            plan,
            ConditionKind::DurabilityDegraded,
            "synchronous replication suspended".to_owned(),
        ),
        (Durability::Default, false, false) => {
            plan.steps.push(Step::SuspendSync { epoch });
            cond(
                plan,
                ConditionKind::DurabilityDegraded,
                "no synchronous standby; sync suspended".to_owned(),
            );
        }
        (Durability::Strict, suspended, false) => {
            // Strict never acknowledges a commit without the peer: names set, writes wait.
            if suspended {
                plan.steps.push(Step::RestoreSync { epoch });
            }
            cond(
                plan,
                ConditionKind::WritesBlockedAwaitingSyncStandby,
                "strict durability: writes wait for a synchronous standby".to_owned(),
            );
        }
        _ => {}
    }
    // Switchover / failback requests.
    let me = o.region.as_str();
    let done = |id: &str| o.completed.iter().any(|c| c == id);
    let request = if let Some(s) = o.spec.switchover.as_ref().filter(|s| !done(&s.id)) {
        (s.target != me).then(|| (OpKind::Switchover, s.id.clone(), s.target.clone()))
    } else if let Some(f) = o.spec.failback.as_ref().filter(|f| !done(&f.id)) {
        if me == o.spec.primary {
            None
        } else if !f.approved {
            cond(
                plan,
                ConditionKind::FailbackAwaitingApproval,
                format!("failback to {} awaits approval", o.spec.primary),
            );
            None
        } else {
            Some((OpKind::Failback, f.id.clone(), o.spec.primary.clone()))
        }
    } else {
        None
    };
    let Some((kind, id, target)) = request else {
        return;
    };
    let blocked = if target != peer {
        Some(format!("target {target:?} is not the peer region"))
    } else if !o.replication.streaming || o.replication.needs_rebuild {
        Some(format!("{target} is not streaming (rebuild it first)"))
    } else if !within_rpo(o) {
        Some(format!("{target} lags beyond the RPO bound"))
    } else if held_down(o, now) {
        Some("hold-down".to_owned())
    } else {
        None
    };
    if let Some(why) = blocked {
        cond(plan, ConditionKind::SwitchoverBlocked, why);
        return;
    }
    plan.start = Some(op(kind, id, epoch, Some(target.clone())));
    let mut e = audit(
        o,
        AuditType::CnpgPromotable,
        "promotable",
        "switchover starting",
    );
    e.from_primary = me.to_owned();
    e.to_primary = target.clone();
    e.epoch = Some(epoch);
    e.lag_seconds = o.replication.lag_seconds;
    plan.steps.push(Step::Audit(Box::new(e)));
    plan.steps.push(Step::Drain { epoch });
    plan.steps.push(Step::Demote { epoch, target });
}

fn no_authority_steps(o: &Observed, peer: &str, peer_holds: bool, now: Mono, plan: &mut Plan) {
    let me = o.region.as_str();
    let peer_epoch = o.lease.as_ref().map_or(0, |l| l.state.epoch);
    // Rebuild: a diverged database, or an old primary (fenced, running or stopped) while the
    // peer holds the lease.
    let diverged = o.replication.needs_rebuild || o.local.db == DbRole::Primary || fenced_down(o);
    if diverged && peer_holds {
        cond(
            plan,
            ConditionKind::NeedsRebuild,
            format!("rejoin {peer} as a standby (rewind / re-clone)"),
        );
        // Any stale operation of ours is moot: the peer holds the lease.
        if !held_down(o, now) {
            plan.start = Some(op(
                OpKind::Rebuild,
                format!("rebuild-{peer_epoch}"),
                peer_epoch,
                None,
            ));
            plan.steps.push(Step::Rebuild {
                source: peer.to_owned(),
                epoch: peer_epoch,
            });
            let mut e = audit(
                o,
                AuditType::RejoinRepair,
                "rejoin-divergence",
                "rebuilding as standby",
            );
            e.to_primary = peer.to_owned();
            e.epoch = Some(peer_epoch);
            plan.steps.push(Step::Audit(Box::new(e)));
            plan.steps.push(Step::FinishOperation);
        }
        return;
    }
    if let Some(opn) = &o.operation
        && opn.kind == OpKind::Rebuild
        && !o.replication.needs_rebuild
    {
        plan.steps.push(Step::FinishOperation);
    }
    let free = o.lease.as_ref().is_some_and(|l| l.remaining_ms(now) == 0);
    // A restarted controller (no grant of its own yet) may take back its own unexpired lease.
    let own_unexpired = o.renewed.is_none() && o.lease.as_ref().is_some_and(|l| l.held_by(me, now));
    // A fenced, stopped database (its server crashed, or our fence stopped it) re-takes only
    // its own lease, and an expired one only a hold-down after expiry: the peer, if it can
    // take over, goes first (found by the drill: a database crash under a live controller
    // otherwise raced the peer's failover and restarted the crashed server).
    if fenced_down(o) && !o.replication.needs_rebuild {
        let own = o.lease.as_ref().is_some_and(|l| l.state.holder == me);
        // How long ago it expired: at the reading (witness time; negative while still valid),
        // plus the local time since. The reading is refreshed every tick while this region
        // has no authority, so "time since the reading" alone restarts at 0 each time and a
        // lease that had already expired never looked expired long enough (found by the
        // model's long run: a fenced home primary that the peer could not replace within the
        // RPO never re-took its own lease).
        let expired_for = o.lease.as_ref().map_or(0, |l| {
            let at_reading = l.state.expires_at.map_or(0, |e| l.witness_now.since(e));
            at_reading + now.since(l.received_at)
        });
        // A lease never granted (epoch 0): the home primary takes it first (bootstrap).
        let bootstrap = o.lease.as_ref().is_some_and(|l| {
            l.state.epoch == 0 && l.state.holder.is_empty() && o.spec.primary == me
        });
        let after_peer = own_unexpired || expired_for >= o.spec.timing.hold_down_ms;
        let retake_any = mutation_on(Mutation::RetakeAnyFreeLease) && free;
        if bootstrap || (own && after_peer) || retake_any {
            plan.steps.push(Step::AcquireLease);
        }
        return;
    }
    if !(free || own_unexpired) || o.local.db == DbRole::Down {
        return;
    }
    if o.replication.needs_rebuild {
        cond(
            plan,
            ConditionKind::NeedsRebuild,
            "diverged; cannot take over".to_owned(),
        );
        return;
    }
    // A free lease is re-taken only with this region's own last grant: the witness's last
    // holder is this region, so no other region was granted an epoch since (epochs change only
    // with the holder). A fenced old primary has the newest data then; a standby holder is a
    // switchover target that crashed between acquiring and promoting (no persisted operation),
    // which promotes now instead of leaving two standbys. A region whose peer was granted the
    // lease after it (superseded) never re-takes it: it waits to be rebuilt from that peer.
    let own_last = o
        .lease
        .as_ref()
        .is_some_and(|l| l.state.holder == me && !me.is_empty());
    // A lease never granted to anyone (epoch 0): nobody can have been superseded; the home
    // primary takes it first (bootstrap).
    let never_granted = o
        .lease
        .as_ref()
        .is_some_and(|l| l.state.epoch == 0 && l.state.holder.is_empty());
    if o.local.db == DbRole::Primary {
        let bootstrap = never_granted && o.spec.primary == me;
        if own_last || bootstrap || mutation_on(Mutation::RetakeAnyFreeLease) {
            plan.steps.push(Step::AcquireLease);
        } else {
            let (holder, epoch) = o.lease.as_ref().map_or((String::new(), 0), |l| {
                (l.state.holder.clone(), l.state.epoch)
            });
            cond(
                plan,
                ConditionKind::NeedsRebuild,
                format!(
                    "superseded: the lease was last granted to {holder:?} at epoch {epoch}; \
                     staying fenced until rebuilt from it"
                ),
            );
        }
        return;
    }
    if own_last && !mutation_on(Mutation::TargetForgetsOwnGrant) {
        plan.steps.push(Step::AcquireLease);
        return;
    }
    if !free {
        return;
    }
    // Planned switchover / approved failback targeting this standby, once the source has
    // RELEASED the lease (holder cleared). The source released only after this region replayed
    // its demotion LSN, so no replication gate here (the WAL receiver lost its primary with the
    // demotion). An EXPIRED lease (holder still named) goes through the failover gates below.
    let released = o.lease.as_ref().is_some_and(|l| l.state.holder.is_empty());
    let targeted = o.spec.switchover.as_ref().is_some_and(|s| s.target == me)
        || o.spec
            .failback
            .as_ref()
            .is_some_and(|f| f.approved && o.spec.primary == me);
    if targeted && released {
        plan.steps.push(Step::AcquireLease);
        return;
    }
    // Automatic failover.
    if !peer_down(o, now) {
        return;
    }
    if !o.spec.auto_failover {
        cond(
            plan,
            ConditionKind::AutoFailoverDisabled,
            format!("{peer} is down but autoFailover is off"),
        );
        return;
    }
    if !within_rpo(o) {
        cond(
            plan,
            ConditionKind::ReplicationLagAboveRpo,
            format!(
                "lag {} B / {} s exceeds the RPO bound; not promoting",
                o.replication.lag_bytes, o.replication.lag_seconds
            ),
        );
        return;
    }
    if held_down(o, now) {
        cond(
            plan,
            ConditionKind::HoldDown,
            "failover held down".to_owned(),
        );
        return;
    }
    plan.steps.push(Step::AcquireLease);
}

/// A sample observed state: region `a` is the primary holding epoch 1, last renewed at 0.
pub fn sample() -> Observed {
    use contract::{LeaseState, Millis};
    let timing = Timing::standard();
    Observed {
        region: "a".into(),
        spec: Spec {
            name: "ns/dr-app".into(),
            application: "ns/app".into(),
            regions: vec!["a".into(), "b".into()],
            primary: "a".into(),
            auto_failover: true,
            timing,
            rpo: RpoBound {
                max_lag_bytes: 16 << 20,
                max_lag_seconds: 5,
            },
            durability: Durability::Default,
            switchover: None,
            failback: None,
        },
        local: Local {
            db: DbRole::Primary,
            read_only: false,
            drained: false,
            sync_suspended: false,
        },
        lease: Some(LeaseObs {
            state: LeaseState {
                holder: "a".into(),
                acquired_at: Some(Millis(1_000)),
                expires_at: Some(Millis(1_000 + timing.ttl_ms)),
                generation: 1,
                epoch: 1,
                report: None,
            },
            witness_now: Millis(1_000),
            received_at: Mono(0),
        }),
        renewed: Some(Renewed {
            sent_at: Mono(0),
            epoch: 1,
        }),
        replication: Replication {
            streaming: true,
            sync: true,
            lag_bytes: 0,
            lag_seconds: 0,
            needs_rebuild: false,
        },
        probes: vec![],
        operation: None,
        completed: Vec::new(),
        last_change: None,
    }
}

#[cfg(test)]
mod wake_tests {
    use super::*;

    #[test]
    fn an_exposed_primary_without_authority_decides_again_at_once() {
        let o = sample();
        // Past the deadline (18 s after the renew at 0): no authority, still writable.
        assert_eq!(wake_in_ms(&o, Mono(18_001), 1_000), 5);
        // With authority: the renew (10 s) comes first; the deadline bounds it anyway.
        assert_eq!(wake_in_ms(&o, Mono(9_000), 100_000), 1_000);
        assert_eq!(
            wake_in_ms(&o, Mono(17_500), 100_000),
            5,
            "renew overdue: at once"
        );
    }
}
