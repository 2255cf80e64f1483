//! Readings → the decision core's inputs. PURE: the standalone runner (and the kube glue) read
//! the database, the route and the witness, and these functions turn the readings into
//! [`Local`], [`Replication`], [`Probe`]s and the holder's [`HolderReport`].
//!
//! The durability rule lives here. A standby never trusts its OWN view of whether its commits
//! were synchronous: after the primary is gone, that view is stale (the primary may have
//! suspended synchronous replication and acknowledged commits the standby never received). It
//! uses the report the primary stored with its last renew at the witness instead:
//! - `synchronous: true` — every commit acknowledged under that epoch was applied here: inside
//!   any RPO bound;
//! - `synchronous: false` — commits may have been acknowledged without this standby up to the
//!   primary's self-fence deadline after that report: the lag is at least `flushedLsn − own
//!   replayed LSN` bytes, and, while not streaming, at least the deadline in seconds.
//! - no report (a witness or holder that does not report): treated as `false`.
//!
//! A primary reports `synchronous: true` only while `synchronous_standby_names` names the peer
//! AND the peer streams with `sync_state = sync` (it caught up: every earlier commit is on it),
//! and the executor renews with `false` before it suspends synchronous replication.

use std::collections::BTreeMap;

use contract::lease::HolderReport;

use crate::adapters::postgres::DbObservation;
use crate::decide::{
    DbRole, LeaseObs, Local, Lsn, Mono, Observed, OpKind, Probe, Replication, Spec, Timing,
};
use crate::exec::Memory;
use crate::ports::Persisted;

/// What the local primary reports with its acquire/renew. `None` when the database could not
/// be read (the renew then carries no report, which a standby treats as not synchronous).
pub fn holder_report(db: Option<&DbObservation>) -> Option<HolderReport> {
    let db = db?;
    let synchronous = db.role == DbRole::Primary
        && !db.sync_names.trim().is_empty()
        && db.streaming
        && db.peer_sync_state.as_deref() == Some("sync");
    Some(HolderReport {
        synchronous,
        flushed_lsn: db.local_lsn.map(|l| l.to_string()),
    })
}

/// The local data plane. An unreadable database is [`DbRole::Down`]; `drained` is the route's
/// own state (`None`: the route could not be read, counted as drained — it serves nothing this
/// controller can vouch for).
pub fn local(db: Option<&DbObservation>, route_drained: Option<bool>) -> Local {
    Local {
        db: db.map_or(DbRole::Down, |d| d.role),
        read_only: db.is_some_and(|d| d.read_only),
        drained: route_drained.unwrap_or(true),
        sync_suspended: db
            .is_some_and(|d| d.role == DbRole::Primary && d.sync_names.trim().is_empty()),
    }
}

/// Replication as the decision core needs it. `me` is this region; `lease` the last witness
/// answer; `needs_rebuild` whether a rebuild of this database is pending.
pub fn replication(
    me: &str,
    db: Option<&DbObservation>,
    lease: Option<&LeaseObs>,
    timing: &Timing,
    needs_rebuild: bool,
) -> Replication {
    let Some(db) = db else {
        return Replication {
            streaming: false,
            sync: false,
            lag_bytes: u64::MAX,
            lag_seconds: u64::MAX,
            needs_rebuild,
        };
    };
    if db.role == DbRole::Primary {
        return Replication {
            streaming: db.streaming,
            sync: db.streaming && db.peer_sync_state.as_deref() == Some("sync"),
            lag_bytes: db.lag_bytes,
            lag_seconds: db.lag_seconds,
            needs_rebuild,
        };
    }
    // Standby: the holder's report, never our own view.
    let report = lease
        .filter(|l| !l.state.holder.is_empty() && l.state.holder != me)
        .and_then(|l| l.state.report.as_ref());
    let sync = report.is_some_and(|r| r.synchronous);
    let reported = report
        .and_then(|r| r.flushed_lsn.as_deref())
        .and_then(crate::adapters::postgres::parse_lsn);
    let mut lag_bytes = db.lag_bytes;
    if let (Some(theirs), Some(ours)) = (reported, db.local_lsn) {
        lag_bytes = lag_bytes.max(theirs.0.saturating_sub(ours.0));
    }
    let mut lag_seconds = db.lag_seconds;
    if !sync && !db.streaming {
        // Up to the primary's self-fence deadline of unreported asynchronous commits.
        let deadline_s = u64::try_from((timing.deadline_ms() + 999) / 1000).unwrap_or(u64::MAX);
        lag_seconds = lag_seconds.max(deadline_s);
    }
    Replication {
        streaming: db.streaming,
        sync,
        lag_bytes,
        lag_seconds,
        needs_rebuild,
    }
}

/// Tracks, per vantage, since when probes of the peer have failed without interruption.
#[derive(Debug, Default, Clone)]
pub struct ProbeTracker {
    failing_since: BTreeMap<String, Option<Mono>>,
}

impl ProbeTracker {
    /// Records one probe result of `vantage` at `now`.
    pub fn record(&mut self, vantage: &str, healthy: bool, now: Mono) {
        let slot = self.failing_since.entry(vantage.to_owned()).or_default();
        *slot = match (healthy, *slot) {
            (true, _) => None,
            (false, Some(since)) => Some(since),
            (false, None) => Some(now),
        };
    }

    /// The probes for [`crate::decide::Observed::probes`].
    pub fn probes(&self) -> Vec<Probe> {
        self.failing_since
            .iter()
            .map(|(vantage, since)| Probe {
                vantage: vantage.clone(),
                healthy: since.is_none(),
                failing_since: *since,
            })
            .collect()
    }
}

/// Everything a runner feeds [`crate::decide::decide`]: this tick's readings (database, route)
/// and what it remembers (lease, grant, probes, the persisted operation). Shared by the
/// standalone and Kubernetes runners.
pub fn observed(
    region: &str,
    spec: &Spec,
    db: Option<&DbObservation>,
    route_drained: Option<bool>,
    persisted: &Persisted,
    mem: &Memory,
    probes: &ProbeTracker,
) -> Observed {
    let needs_rebuild = persisted
        .operation
        .as_ref()
        .is_some_and(|o| o.kind == OpKind::Rebuild);
    Observed {
        region: region.to_owned(),
        spec: spec.clone(),
        local: local(db, route_drained),
        lease: mem.lease.clone(),
        renewed: mem.renewed,
        replication: replication(region, db, mem.lease.as_ref(), &spec.timing, needs_rebuild),
        probes: probes.probes(),
        operation: persisted.operation.clone(),
        completed: persisted.completed.clone(),
        last_change: mem.last_change,
    }
}

/// Bytes between two LSNs (0 when `b` is ahead).
pub fn lsn_gap(a: Lsn, b: Lsn) -> u64 {
    a.0.saturating_sub(b.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{LeaseState, Millis};

    fn standby(streaming: bool, replayed: u64) -> DbObservation {
        DbObservation {
            role: DbRole::Standby,
            read_only: false,
            sync_names: String::new(),
            peer_sync_state: None,
            flush_lsn: Some(Lsn(replayed)),
            replay_lsn: Some(Lsn(replayed)),
            local_lsn: Some(Lsn(replayed)),
            lag_bytes: 0,
            lag_seconds: 0,
            streaming,
        }
    }

    fn primary(names: &str, sync_state: Option<&str>, streaming: bool) -> DbObservation {
        DbObservation {
            role: DbRole::Primary,
            read_only: false,
            sync_names: names.into(),
            peer_sync_state: sync_state.map(str::to_owned),
            flush_lsn: Some(Lsn(0x100)),
            replay_lsn: Some(Lsn(0x100)),
            local_lsn: Some(Lsn(0x100)),
            lag_bytes: 0,
            lag_seconds: 0,
            streaming,
        }
    }

    fn lease_of(holder: &str, report: Option<HolderReport>) -> LeaseObs {
        LeaseObs {
            state: LeaseState {
                holder: holder.into(),
                acquired_at: Some(Millis(0)),
                expires_at: Some(Millis(30_000)),
                generation: 3,
                epoch: 2,
                report,
            },
            witness_now: Millis(40_000),
            received_at: Mono(0),
        }
    }

    fn report(synchronous: bool, lsn: &str) -> Option<HolderReport> {
        Some(HolderReport {
            synchronous,
            flushed_lsn: Some(lsn.into()),
        })
    }

    #[test]
    fn a_primary_reports_synchronous_only_with_names_set_and_the_peer_in_sync() {
        let r = |o: DbObservation| holder_report(Some(&o)).map(|r| r.synchronous);
        assert_eq!(r(primary("FIRST 1 (b)", Some("sync"), true)), Some(true));
        assert_eq!(r(primary("", Some("sync"), true)), Some(false));
        assert_eq!(r(primary("FIRST 1 (b)", Some("async"), true)), Some(false));
        assert_eq!(r(primary("FIRST 1 (b)", Some("sync"), false)), Some(false));
        assert_eq!(r(primary("FIRST 1 (b)", None, false)), Some(false));
        assert_eq!(r(standby(true, 5)), Some(false));
        assert_eq!(holder_report(None), None);
        assert_eq!(
            holder_report(Some(&primary("x", None, false))).and_then(|r| r.flushed_lsn),
            Some("0/100".to_owned())
        );
    }

    #[test]
    fn a_standby_takes_sync_from_the_holders_report_not_its_own_view() {
        let t = Timing::standard();
        let db = standby(false, 0x100);
        // Stale own view would say nothing; the report decides.
        let l = lease_of("a", report(true, "0/100"));
        let r = replication("b", Some(&db), Some(&l), &t, false);
        assert!(r.sync && r.lag_bytes == 0);
        // The primary reported asynchronous: lag at least the deadline, bytes from the LSN.
        let l = lease_of("a", report(false, "0/180"));
        let r = replication("b", Some(&db), Some(&l), &t, false);
        assert!(!r.sync);
        assert_eq!(r.lag_bytes, 0x80);
        assert_eq!(r.lag_seconds, 18);
        // No report at all: not synchronous.
        let l = lease_of("a", None);
        assert!(!replication("b", Some(&db), Some(&l), &t, false).sync);
        // Our own report (we hold the lease) is never used as the peer's.
        let l = lease_of("b", report(true, "0/100"));
        assert!(!replication("b", Some(&db), Some(&l), &t, false).sync);
    }

    #[test]
    fn a_streaming_standby_keeps_its_measured_lag_seconds() {
        let t = Timing::standard();
        let mut db = standby(true, 0x100);
        db.lag_seconds = 2;
        let l = lease_of("a", report(false, "0/100"));
        assert_eq!(
            replication("b", Some(&db), Some(&l), &t, false).lag_seconds,
            2
        );
    }

    #[test]
    fn a_primary_measures_its_peer() {
        let t = Timing::standard();
        let r = replication(
            "a",
            Some(&primary("FIRST 1 (b)", Some("sync"), true)),
            None,
            &t,
            false,
        );
        assert!(r.sync && r.streaming);
        let r = replication("a", Some(&primary("", Some("async"), true)), None, &t, true);
        assert!(!r.sync && r.needs_rebuild);
    }

    #[test]
    fn an_unreadable_database_is_down_with_unbounded_lag() {
        let t = Timing::standard();
        let l = local(None, Some(false));
        assert_eq!(l.db, DbRole::Down);
        let r = replication("b", None, None, &t, false);
        assert!(!r.sync && r.lag_bytes == u64::MAX);
        assert!(local(Some(&primary("", None, false)), None).drained);
        assert!(local(Some(&primary("", None, false)), Some(false)).sync_suspended);
        assert!(!local(Some(&standby(true, 1)), Some(false)).sync_suspended);
    }

    #[test]
    fn probe_tracker_keeps_the_start_of_an_uninterrupted_failure() {
        let mut p = ProbeTracker::default();
        p.record("front", false, Mono(10));
        p.record("front", false, Mono(20));
        p.record("db", true, Mono(20));
        let v = p.probes();
        assert_eq!(v.len(), 2);
        let front = v.iter().find(|p| p.vantage == "front").unwrap();
        assert_eq!(front.failing_since, Some(Mono(10)));
        p.record("front", true, Mono(30));
        p.record("front", false, Mono(40));
        let v = p.probes();
        let front = v.iter().find(|p| p.vantage == "front").unwrap();
        assert_eq!(front.failing_since, Some(Mono(40)));
        assert_eq!(lsn_gap(Lsn(5), Lsn(7)), 0);
    }
}
