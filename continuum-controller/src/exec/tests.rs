//! Executor tests against in-memory FAKES of every port (not real services): each fake
//! records its calls in one shared log and can be told to fail or hang on a named call.

use super::*;
use crate::decide::{self, DbRole, Observed, OpKind, SwitchoverRequest};
use contract::lease::{HolderReport, LeaseRecord, LeaseRequest};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Shared {
    /// Every port call in order; `save:<step>` for status writes.
    calls: Vec<String>,
    hang: Option<&'static str>,
    fail: Option<&'static str>,
    lease: LeaseRecord,
    witness_now: i64,
    replayed: Lsn,
    stored: Persisted,
}

/// FAKE of all ports at once (shared state behind one lock, never held across an await).
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Shared>>);

enum Act {
    Go,
    Hang,
    Fail,
}

impl Fake {
    fn with_lease_held_by_a() -> Fake {
        let f = Fake::default();
        {
            let mut s = f.0.lock().unwrap();
            s.witness_now = 1_000;
            let a = contract::apply(&s.lease, &LeaseRequest::acquire("a", 30_000), Millis(1_000))
                .unwrap();
            s.lease = a.record;
        }
        f
    }

    fn act(&self, name: &str) -> Act {
        let mut s = self.0.lock().unwrap();
        s.calls.push(name.to_owned());
        if s.hang == Some(name) {
            Act::Hang
        } else if s.fail == Some(name) {
            Act::Fail
        } else {
            Act::Go
        }
    }

    async fn gate(&self, name: &str) -> Result<(), PlaneError> {
        match self.act(name) {
            Act::Go => Ok(()),
            Act::Fail => Err(PlaneError::Failed(format!("{name} told to fail"))),
            Act::Hang => std::future::pending().await,
        }
    }

    fn calls(&self) -> Vec<String> {
        self.0.lock().unwrap().calls.clone()
    }

    fn set(&self, f: impl FnOnce(&mut Shared)) {
        f(&mut self.0.lock().unwrap());
    }

    fn lease(&self, req: LeaseRequest) -> Result<LeaseView, WitnessPortError> {
        let mut s = self.0.lock().unwrap();
        s.witness_now += 10;
        let now = Millis(s.witness_now);
        let a = contract::apply(&s.lease, &req, now)
            .map_err(|e| WitnessPortError::Refused(e.to_string()))?;
        s.lease = a.record;
        match a.outcome {
            Ok(state) => Ok(LeaseView {
                state,
                witness_now: now,
            }),
            Err(c) => Err(WitnessPortError::LeaseLost(Box::new(LeaseView {
                state: c.current,
                witness_now: now,
            }))),
        }
    }
}

impl Witness for Fake {
    async fn read(&self) -> Result<LeaseView, WitnessPortError> {
        let s = self.0.lock().unwrap();
        Ok(LeaseView {
            state: s.lease.state.clone(),
            witness_now: Millis(s.witness_now),
        })
    }
    async fn acquire(
        &self,
        holder: &str,
        ttl: Duration,
        report: Option<&HolderReport>,
    ) -> Result<LeaseView, WitnessPortError> {
        let _ = self.gate("witness.acquire").await;
        let mut req = LeaseRequest::acquire(holder, ttl.as_millis() as i64);
        req.report = report.cloned();
        self.lease(req)
    }
    async fn renew(
        &self,
        holder: &str,
        ttl: Duration,
        _epoch: u64,
        report: Option<&HolderReport>,
    ) -> Result<LeaseView, WitnessPortError> {
        let name = match report {
            Some(r) => format!("witness.renew:sync={}", r.synchronous),
            None => "witness.renew".to_owned(),
        };
        if let Err(e) = self.gate(&name).await {
            return Err(WitnessPortError::Unavailable(e.to_string()));
        }
        let mut req = LeaseRequest::renew(holder, ttl.as_millis() as i64);
        req.report = report.cloned();
        self.lease(req)
    }
    async fn release(&self, holder: &str, _epoch: u64) -> Result<(), WitnessPortError> {
        let _ = self.gate("witness.release").await;
        self.lease(LeaseRequest::release(holder)).map(|_| ())
    }
}

impl Dns for Fake {
    async fn flip(&self, _primary: &str, _epoch: u64) -> Result<(), PlaneError> {
        self.gate("dns.flip").await
    }
}

impl Database for Fake {
    async fn promote(&self, _epoch: u64) -> Result<Lsn, PlaneError> {
        self.gate("db.promote").await.map(|()| Lsn(200))
    }
    async fn fence(&self, _epoch: u64) -> Result<(), PlaneError> {
        self.gate("db.fence").await
    }
    async fn unfence(&self, _epoch: u64) -> Result<(), PlaneError> {
        self.gate("db.unfence").await
    }
    async fn demote(&self, _epoch: u64, _target: &str) -> Result<Lsn, PlaneError> {
        self.gate("db.demote").await.map(|()| Lsn(100))
    }
    async fn peer_replayed(&self) -> Result<Lsn, PlaneError> {
        self.gate("db.peer_replayed").await?;
        Ok(self.0.lock().unwrap().replayed)
    }
    async fn set_sync(&self, _epoch: u64, on: bool) -> Result<(), PlaneError> {
        self.gate(if on { "db.sync_on" } else { "db.sync_off" })
            .await
    }
    async fn rebuild(&self, _source: &str, _epoch: u64) -> Result<(), PlaneError> {
        self.gate("db.rebuild").await
    }
    async fn arm(&self, epoch: u64, _until_host_ms: i64) -> Result<(), PlaneError> {
        self.gate(&format!("db.arm:{epoch}")).await
    }
    async fn disarm(&self, epoch: u64) -> Result<(), PlaneError> {
        self.gate(&format!("db.disarm:{epoch}")).await
    }
}

impl Routes for Fake {
    async fn drain(&self, _epoch: u64) -> Result<(), PlaneError> {
        self.gate("routes.drain").await
    }
    async fn undrain(&self, _epoch: u64) -> Result<(), PlaneError> {
        self.gate("routes.undrain").await
    }
    async fn arm(&self, epoch: u64, valid_for: Duration) -> Result<(), PlaneError> {
        self.gate(&format!("routes.arm:{epoch}:{}", valid_for.as_millis()))
            .await
    }
}

impl Audit for Fake {
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        match self.act(&format!("audit.{}", event.kind.as_str())) {
            Act::Go => Ok(()),
            Act::Fail | Act::Hang => Err(AuditError::Publish("told to fail".into())),
        }
    }
}

impl StateStore for Fake {
    async fn load(&self) -> Result<Persisted, StoreError> {
        let s = self.0.lock().unwrap();
        if s.fail == Some("store.load") || s.fail == Some("store") {
            return Err(StoreError::Io(std::io::Error::other("store told to fail")));
        }
        Ok(s.stored.clone())
    }
    async fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let mut s = self.0.lock().unwrap();
        if s.fail == Some("store.save") || s.fail == Some("store") {
            return Err(StoreError::Io(std::io::Error::other("store told to fail")));
        }
        let step = state.operation.as_ref().map_or("-", |o| o.step.as_str());
        let epoch = state.operation.as_ref().map_or(0, |o| o.epoch);
        s.calls.push(format!("save:{step}@{epoch}"));
        s.stored = state.clone();
        Ok(())
    }
}

type FakeExecutor = Executor<Fake, Fake, Fake, Fake, Fake, Fake, SystemClock>;

fn executor(f: &Fake) -> FakeExecutor {
    let timing = decide::sample().spec.timing;
    let ports = Ports {
        witness: f.clone(),
        db: f.clone(),
        dns: f.clone(),
        routes: f.clone(),
        audit: f.clone(),
        store: f.clone(),
    };
    Executor::new(
        ports,
        "a",
        timing,
        Timeouts::for_timing(&timing),
        SystemClock::new(),
    )
}

fn switchover_source() -> Observed {
    let mut o = decide::sample();
    o.spec.switchover = Some(SwitchoverRequest {
        id: "sw-1".into(),
        target: "b".into(),
    });
    o
}

#[tokio::test]
async fn fencing_order_is_drain_then_read_only_then_audit_each_after_saving_the_step() {
    let f = Fake::with_lease_held_by_a();
    let plan = decide::decide(&decide::sample(), Mono(18_000));
    let out = executor(&f).run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert_eq!(
        f.calls(),
        [
            "save:drain@1",
            "routes.drain",
            "save:fence@1",
            "db.fence",
            "save:audit@1",
            "audit.continuum-lease-lost",
            "save:-@0",
        ]
    );
    // The self-fence operation was the record while fencing; it is closed at the end.
    assert_eq!(out.persisted.operation, None);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_step_stops_the_plan_with_its_named_condition() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.hang = Some("db.demote"));
    let plan = decide::decide(&switchover_source(), Mono(1_000));
    assert_eq!(plan.names(), ["audit", "drain", "demote"]);
    let out = executor(&f).run(&plan).await;
    match out.stopped {
        Some(Stopped::Stuck {
            step, condition, ..
        }) => assert_eq!((step, condition), ("demote", "DemotionStuck")),
        other => panic!("expected a stuck demote, got {other:?}"),
    }
    assert_eq!(out.done, ["audit", "drain"]);
    assert_eq!(
        out.persisted.operation.map(|o| o.step),
        Some("demote".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_crash_between_steps_resumes_from_the_persisted_operation_and_completes() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.hang = Some("db.demote"));
    let o = switchover_source();
    let plan = decide::decide(&o, Mono(1_000));
    // The process dies while the demotion is in flight.
    let crashed = tokio::time::timeout(Duration::from_secs(1), executor(&f).run(&plan)).await;
    assert!(crashed.is_err(), "the run should have been cut off");

    // Restart: a new executor loads the operation and the core resumes from it.
    f.set(|s| {
        s.hang = None;
        s.replayed = Lsn(100);
    });
    let ex = executor(&f);
    let persisted = ex.load().await.unwrap();
    let op = persisted
        .operation
        .clone()
        .expect("operation survived the crash");
    assert_eq!(
        (op.kind, op.step.as_str(), op.epoch),
        (OpKind::Switchover, "demote", 1)
    );

    let mut o = o.clone();
    o.operation = Some(op);
    let plan = decide::decide(&o, Mono(1_100));
    assert_eq!(plan.names(), ["drain", "demote"], "idempotent re-run");
    let out = ex.run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert_eq!(
        out.persisted.operation.as_ref().and_then(|o| o.lsn),
        Some(Lsn(100))
    );

    // Demoted: wait for the target's replay, then release.
    o.local.db = DbRole::Standby;
    o.operation = out.persisted.operation.clone();
    let plan = decide::decide(&o, Mono(1_200));
    assert_eq!(plan.names(), ["wait-replayed", "release-lease"]);
    let out = ex.run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);

    // The lease left us: finish; the request is remembered as done.
    o.lease = Some(crate::decide::LeaseObs {
        state: f.0.lock().unwrap().lease.state.clone(),
        witness_now: Millis(2_000),
        received_at: Mono(1_300),
    });
    o.operation = out.persisted.operation.clone();
    let plan = decide::decide(&o, Mono(1_300));
    assert_eq!(plan.names(), ["finish-operation"]);
    let out = ex.run(&plan).await;
    assert_eq!(out.persisted.operation, None);
    assert_eq!(out.persisted.completed, ["sw-1"]);
    let calls = f.calls();
    let released = calls.iter().position(|c| c == "witness.release");
    let replay_checked = calls.iter().position(|c| c == "db.peer_replayed");
    assert!(
        replay_checked < released,
        "release only after the replay check: {calls:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn wait_replayed_keeps_polling_until_the_target_reaches_the_lsn() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.replayed = Lsn(10));
    let plan = Plan {
        steps: vec![Step::WaitReplayed { lsn: Lsn(100) }],
        ..Plan::default()
    };
    let ex = executor(&f);
    let run = ex.run(&plan);
    let bump = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        f.set(|s| s.replayed = Lsn(100));
    };
    let (out, ()) = tokio::join!(run, bump);
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert!(
        f.calls()
            .iter()
            .filter(|c| *c == "db.peer_replayed")
            .count()
            > 2
    );
}

#[tokio::test]
async fn renew_arms_the_dead_man_switch_with_what_is_left_of_the_deadline() {
    let f = Fake::with_lease_held_by_a();
    let plan = decide::decide(&decide::sample(), Mono(10_000));
    assert_eq!(plan.names(), ["renew-lease"]);
    let out = executor(&f).run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    let calls = f.calls();
    assert_eq!(calls[0], "witness.renew");
    // The database watchdog first (the real fence), then the route's dead-man switch.
    assert_eq!(calls[1], "db.arm:1");
    let arm = calls[2]
        .strip_prefix("routes.arm:1:")
        .expect("armed with epoch 1");
    let ms: u64 = arm.parse().unwrap();
    assert!(ms <= 18_000 && ms > 17_000, "armed for {ms} ms");
    assert_eq!(out.renewed.map(|r| r.epoch), Some(1));
}

#[tokio::test]
async fn a_lost_lease_on_renew_reports_the_witness_view_so_the_next_decision_fences() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| {
        let gone = contract::apply(&s.lease, &LeaseRequest::release("a"), Millis(1_001)).unwrap();
        let b = contract::apply(
            &gone.record,
            &LeaseRequest::acquire("b", 30_000),
            Millis(1_002),
        )
        .unwrap();
        s.lease = b.record;
    });
    let plan = decide::decide(&decide::sample(), Mono(10_000));
    let out = executor(&f).run(&plan).await;
    assert!(matches!(
        out.stopped,
        Some(Stopped::Failed {
            step: "renew-lease",
            error: ExecError::Witness(WitnessPortError::LeaseLost(_))
        })
    ));
    let mut o = decide::sample();
    o.lease = out.lease;
    let next = decide::decide(&o, Mono(10_001));
    assert_eq!(
        next.names(),
        ["drain", "fence", "audit", "finish-operation"]
    );
}

#[tokio::test]
async fn an_audit_failure_never_stops_or_undoes_the_fence() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.fail = Some("audit.continuum-lease-lost"));
    let plan = decide::decide(&decide::sample(), Mono(18_000));
    let out = executor(&f).run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert_eq!(out.done, ["drain", "fence", "audit", "finish-operation"]);
    assert_eq!(out.audit_failures.len(), 1);
}

#[tokio::test]
async fn a_failed_drain_still_makes_the_database_read_only() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.fail = Some("routes.drain"));
    let plan = decide::decide(&decide::sample(), Mono(18_000));
    let out = executor(&f).run(&plan).await;
    assert!(matches!(
        out.stopped,
        Some(Stopped::Failed { step: "drain", .. })
    ));
    assert_eq!(out.done, ["fence", "audit", "finish-operation"]);
}

#[tokio::test]
async fn a_failed_promotion_stops_the_plan_so_dns_never_points_at_a_replica() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.fail = Some("db.promote"));
    let plan = Plan {
        steps: vec![
            Step::Promote { epoch: 2 },
            Step::Unfence { epoch: 2 },
            Step::Undrain { epoch: 2 },
            Step::FlipDns {
                primary: "a".into(),
                epoch: 2,
            },
        ],
        ..Plan::default()
    };
    let out = executor(&f).run(&plan).await;
    assert!(matches!(
        out.stopped,
        Some(Stopped::Failed {
            step: "promote",
            ..
        })
    ));
    assert_eq!(f.calls(), ["db.promote"]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_after_the_drain_compensates_when_the_target_stopped_streaming() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.hang = Some("db.demote"));
    let mut o = switchover_source();
    let plan = decide::decide(&o, Mono(1_000));
    let crashed = tokio::time::timeout(Duration::from_secs(1), executor(&f).run(&plan)).await;
    assert!(crashed.is_err(), "the run should have been cut off");

    // Restart: the target has gone away meanwhile; the drain is undone, nothing demoted.
    f.set(|s| s.hang = None);
    let ex = executor(&f);
    o.operation = ex.load().await.unwrap().operation;
    o.local.drained = true;
    o.replication.streaming = false;
    let plan = decide::decide(&o, Mono(1_100));
    assert_eq!(plan.names(), ["undrain", "audit", "finish-operation"]);
    let out = ex.run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert_eq!(out.persisted.operation, None);
    assert_eq!(out.persisted.completed, ["sw-1"]);
    let calls = f.calls();
    assert!(calls.iter().any(|c| c == "routes.undrain"));
    assert!(calls.iter().any(|c| c == "audit.continuum-error"));
    assert_eq!(
        calls.iter().filter(|c| *c == "db.demote").count(),
        1,
        "{calls:?}"
    );
}

#[tokio::test]
async fn suspend_sync_reports_asynchronous_to_the_witness_before_suspending() {
    let f = Fake::with_lease_held_by_a();
    let exec = executor(&f);
    exec.set_report(Some(HolderReport {
        synchronous: true,
        flushed_lsn: Some("0/3000060".into()),
    }));
    let plan = Plan {
        steps: vec![Step::SuspendSync { epoch: 1 }],
        ..Plan::default()
    };
    let out = exec.run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    let calls = f.calls();
    let renew = calls.iter().position(|c| c == "witness.renew:sync=false");
    let off = calls.iter().position(|c| c == "db.sync_off");
    assert!(renew.is_some() && renew < off, "{calls:?}");
    let stored = f.0.lock().unwrap().lease.state.report.clone().unwrap();
    assert!(!stored.synchronous);
    assert_eq!(stored.flushed_lsn.as_deref(), Some("0/3000060"));
    assert_eq!(exec.report().map(|r| r.synchronous), Some(false));
}

#[tokio::test]
async fn suspend_sync_keeps_commits_synchronous_when_the_witness_did_not_take_the_report() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.fail = Some("witness.renew:sync=false"));
    let exec = executor(&f);
    let plan = Plan {
        steps: vec![Step::SuspendSync { epoch: 1 }],
        ..Plan::default()
    };
    let out = exec.run(&plan).await;
    assert!(matches!(
        out.stopped,
        Some(Stopped::Failed {
            step: "suspend-sync",
            ..
        })
    ));
    assert!(
        !f.calls().iter().any(|c| c == "db.sync_off"),
        "{:?}",
        f.calls()
    );
}

#[test]
fn memory_forgets_the_grant_on_loss_or_release_and_marks_state_changes() {
    let renewed = Renewed {
        sent_at: Mono(5),
        epoch: 3,
    };
    let renew_only = Plan {
        steps: vec![Step::RenewLease { epoch: 3 }],
        ..Plan::default()
    };
    let mut m = Memory::default();
    let out = Outcome {
        done: vec!["renew-lease"],
        renewed: Some(renewed),
        ..Outcome::default()
    };
    assert!(
        !m.absorb(&renew_only, &out, Mono(10)),
        "a renew alone is no change"
    );
    assert_eq!(m.renewed, Some(renewed));
    assert_eq!(m.last_change, None);

    let release = Plan {
        steps: vec![Step::ReleaseLease { epoch: 3 }],
        ..Plan::default()
    };
    let out = Outcome {
        done: vec!["release-lease"],
        ..Outcome::default()
    };
    assert!(m.absorb(&release, &out, Mono(20)));
    assert_eq!(m.renewed, None);

    m.renewed = Some(renewed);
    let lost = Outcome {
        stopped: Some(Stopped::Failed {
            step: "renew-lease",
            error: ExecError::Witness(WitnessPortError::LeaseLost(Box::new(LeaseView {
                state: contract::LeaseState::default(),
                witness_now: Millis(0),
            }))),
        }),
        ..Outcome::default()
    };
    assert!(!m.absorb(&renew_only, &lost, Mono(30)));
    assert_eq!(m.renewed, None);

    let promote = Plan {
        steps: vec![Step::Promote { epoch: 4 }],
        ..Plan::default()
    };
    let out = Outcome {
        done: vec!["promote"],
        ..Outcome::default()
    };
    assert!(m.absorb(&promote, &out, Mono(40)));
    assert_eq!(m.last_change, Some(Mono(40)));
}

/// Path 4 of issue 13: fencing never depends on persisting anything. Before the fix a store
/// that could not be loaded (or saved) stopped the plan before Drain and Fence.
#[tokio::test]
async fn a_store_that_cannot_load_or_save_never_stops_the_fence() {
    for broken in ["store.load", "store.save", "store"] {
        let f = Fake::with_lease_held_by_a();
        f.set(|s| s.fail = Some(broken));
        let plan = decide::decide(&decide::sample(), Mono(18_000));
        assert_eq!(plan.names()[..2], ["drain", "fence"]);
        let out = executor(&f).run(&plan).await;
        let calls = f.calls();
        assert!(
            calls.contains(&"routes.drain".to_owned()) && calls.contains(&"db.fence".to_owned()),
            "{broken}: {calls:?}"
        );
        assert!(
            matches!(
                out.stopped,
                Some(Stopped::Failed {
                    error: ExecError::Store(_),
                    ..
                })
            ),
            "{broken}: the store failure is still reported: {:?}",
            out.stopped
        );
    }
}

/// Without the store, steps that need a persisted operation do not run (a promotion would
/// leave no record to resume from); renewing does.
#[tokio::test]
async fn without_the_store_only_fencing_and_renewing_run() {
    let f = Fake::with_lease_held_by_a();
    f.set(|s| s.fail = Some("store.load"));
    let plan = Plan {
        steps: vec![
            Step::RenewLease { epoch: 1 },
            Step::Promote { epoch: 1 },
            Step::Fence { epoch: 1 },
        ],
        ..Plan::default()
    };
    executor(&f).run(&plan).await;
    let calls = f.calls();
    assert!(calls.contains(&"witness.renew".to_owned()), "{calls:?}");
    assert!(
        !calls.iter().any(|c| c.starts_with("db.promote")),
        "{calls:?}"
    );
    assert!(calls.contains(&"db.fence".to_owned()), "{calls:?}");
}

/// Path 5 of issue 13: a renew attempt never runs past the self-fence deadline. Before the
/// fix a renew started just before the deadline could take `renew / 2` more, delaying the
/// fence past the budget.
#[tokio::test(start_paused = true)]
async fn a_renew_never_runs_past_the_deadline() {
    let f = Fake::with_lease_held_by_a();
    let ex = executor(&f);
    // A first grant at local 0 (deadline 18 s for ttl 30 / renew 10 / margin 2).
    let out = ex
        .run(&Plan {
            steps: vec![Step::RenewLease { epoch: 1 }],
            ..Plan::default()
        })
        .await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    // The witness stops answering; 17.9 s after the grant a renew starts.
    f.set(|s| s.hang = Some("witness.renew"));
    tokio::time::sleep(Duration::from_millis(17_900)).await;
    let started = tokio::time::Instant::now();
    let out = ex
        .run(&Plan {
            steps: vec![Step::RenewLease { epoch: 1 }],
            ..Plan::default()
        })
        .await;
    let took = started.elapsed();
    assert!(
        took <= Duration::from_millis(100),
        "the renew ran {took:?} past the deadline's 100 ms"
    );
    assert!(matches!(out.stopped, Some(Stopped::Stuck { .. })));
    // Past the deadline no renew is even tried.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = f.calls().len();
    ex.run(&Plan {
        steps: vec![Step::RenewLease { epoch: 1 }],
        ..Plan::default()
    })
    .await;
    assert_eq!(
        f.calls().len(),
        before,
        "no witness call after the deadline"
    );
}

/// Path 5: the step timeouts are derived from the lease timing so that a fence that starts at
/// the deadline ends inside the budget.
#[test]
fn drain_and_fence_timeouts_fit_the_fence_budget() {
    for t in [
        decide::Timing::standard(),
        decide::Timing {
            ttl_ms: 6_000,
            renew_ms: 2_000,
            margin_ms: 1_000,
            hold_down_ms: 1_000,
            max_drift: 0.05,
        },
    ] {
        t.validate().unwrap();
        let to = Timeouts::for_timing(&t);
        let fence = to.of(&Step::Drain { epoch: 1 }) + to.of(&Step::Fence { epoch: 1 });
        assert!(
            fence.as_millis() as i64 <= t.fence_budget_ms(),
            "{t:?}: drain + fence {fence:?} > budget {} ms",
            t.fence_budget_ms()
        );
        assert!(to.of(&Step::WaitReplayed { lsn: Lsn(1) }).as_millis() as i64 <= t.renew_ms / 2);
    }
}

/// Found by the drill: a released grant must disarm the database watchdog, or it fences the
/// demoted source (a standby by then) at the old deadline. And every grant arms it.
#[tokio::test]
async fn a_grant_arms_the_database_watchdog_and_a_release_disarms_it() {
    let f = Fake::with_lease_held_by_a();
    let ex = executor(&f);
    let out = ex
        .run(&Plan {
            steps: vec![
                Step::RenewLease { epoch: 1 },
                Step::ReleaseLease { epoch: 1 },
            ],
            ..Plan::default()
        })
        .await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    let calls = f.calls();
    let pos = |c: &str| calls.iter().position(|x| x == c);
    assert!(pos("db.arm:1").is_some(), "{calls:?}");
    assert!(
        pos("db.disarm:1") > pos("db.arm:1"),
        "disarmed after the release: {calls:?}"
    );
}
