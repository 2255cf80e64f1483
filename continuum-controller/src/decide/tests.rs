//! Table-driven tests: each row is an observed state, a local `now` and the plan it must give.

use super::*;
use contract::{LeaseState, Millis};

const T: Timing = Timing {
    ttl_ms: 30_000,
    renew_ms: 10_000,
    margin_ms: 2_000,
    hold_down_ms: 5_000,
    max_drift: 0.05,
};

/// Region `a`, primary, holding epoch 1, renewed at local 0 (lease answer at local 0).
fn primary() -> Observed {
    sample()
}

fn lease(holder: &str, epoch: u64, remaining_ms: i64, received_at: i64) -> LeaseObs {
    LeaseObs {
        state: LeaseState {
            holder: holder.into(),
            acquired_at: Some(Millis(0)),
            expires_at: Some(Millis(100_000 + remaining_ms)),
            generation: epoch,
            epoch,
            report: None,
        },
        witness_now: Millis(100_000),
        received_at: Mono(received_at),
    }
}

fn probe(v: &str, failing_since: Option<i64>) -> Probe {
    Probe {
        vantage: v.into(),
        healthy: failing_since.is_none(),
        failing_since: failing_since.map(Mono),
    }
}

/// Region `b`, standby, sees `a` holding epoch 1; peer probes healthy.
fn standby() -> Observed {
    let mut o = sample();
    o.region = "b".into();
    o.local = Local {
        db: DbRole::Standby,
        read_only: false,
        drained: true,
        sync_suspended: false,
    };
    o.lease = Some(lease("a", 1, 25_000, 0));
    o.renewed = None;
    o.probes = vec![probe("v1", None), probe("v2", None)];
    o
}

/// Standby `b` at local 40 000: lease expired, `a` failing from two vantages since 0.
fn standby_peer_dead() -> Observed {
    let mut o = standby();
    o.lease = Some(lease("a", 1, 25_000, 0));
    o.probes = vec![probe("v1", Some(0)), probe("v2", Some(0))];
    o
}

/// Standby `b` that acquired epoch 2 at local 40 000.
fn standby_holding() -> Observed {
    let mut o = standby_peer_dead();
    o.lease = Some(lease("b", 2, 30_000, 40_000));
    o.renewed = Some(Renewed {
        sent_at: Mono(40_000),
        epoch: 2,
    });
    o
}

struct Row {
    name: &'static str,
    observed: fn() -> Observed,
    now: i64,
    steps: &'static [&'static str],
    conditions: &'static [ConditionKind],
}

use ConditionKind as C;

/// Defines the table and one test per row, named after the rule.
macro_rules! rules {
    ($($id:ident: $row:expr,)*) => {
        $(
            #[test]
            fn $id() {
                check(&$row);
            }
        )*
    };
}

fn check(row: &Row) {
    let o = (row.observed)();
    let plan = decide(&o, Mono(row.now));
    let got: Vec<_> = plan.conditions.iter().map(|c| c.kind).collect();
    assert_eq!(plan.names(), row.steps, "steps: {}", row.name);
    assert_eq!(got, row.conditions, "conditions: {}", row.name);
}

rules! {
    primary_renews_when_the_renew_interval_has_passed: Row {
        name: "primary renews when the renew interval has passed",
        observed: primary,
        now: 10_000,
        steps: &["renew-lease"],
        conditions: &[],
    },
    holder_whose_database_is_down_stops_renewing_so_the_lease_lapses: Row {
        name: "holder whose database is down stops renewing so the lease lapses",
        observed: || {
            let mut o = primary();
            o.local.db = DbRole::Down;
            o
        },
        now: 10_000,
        steps: &[],
        conditions: &[C::DatabaseDown],
    },
    primary_does_nothing_before_the_renew_interval: Row {
        name: "primary does nothing before the renew interval",
        observed: primary,
        now: 9_999,
        steps: &[],
        conditions: &[],
    },
    primary_that_cannot_renew_before_its_deadline_self_fences_drain_read_only_audit: Row {
        name: "primary that cannot renew before its deadline self-fences: drain, read-only, audit",
        observed: primary,
        now: 18_000,
        steps: &["drain", "fence", "audit", "finish-operation"],
        conditions: &[C::SelfFenced],
    },
    primary_one_millisecond_before_its_deadline_keeps_serving_and_keeps_renewing: Row {
        name: "primary one millisecond before its deadline keeps serving and keeps renewing",
        observed: primary,
        now: 17_999,
        steps: &["renew-lease"],
        conditions: &[],
    },
    restarted_primary_controller_fences_then_re_acquires_its_unexpired_lease: Row {
        name: "restarted primary controller fences, then re-acquires its unexpired lease",
        observed: || {
            let mut o = primary();
            o.renewed = None;
            o.lease = Some(lease("a", 1, 20_000, 5_000));
            o
        },
        now: 5_000,
        steps: &["drain", "fence", "acquire-lease", "unfence", "undrain"],
        conditions: &[C::SelfFenced],
    },
    restarted_primary_controller_fences_when_the_witness_no_longer_names_it: Row {
        name: "restarted primary controller fences when the witness no longer names it",
        observed: || {
            let mut o = primary();
            o.renewed = None;
            o.lease = Some(lease("a", 1, 0, 5_000));
            o
        },
        now: 5_000,
        steps: &["drain", "fence", "audit", "finish-operation"],
        conditions: &[C::SelfFenced],
    },
    primary_self_fences_at_once_when_the_witness_names_another_holder: Row {
        name: "primary self-fences at once when the witness names another holder",
        observed: || {
            let mut o = primary();
            o.lease = Some(lease("b", 2, 30_000, 1_000));
            o
        },
        now: 1_000,
        steps: &["drain", "fence", "audit", "finish-operation"],
        conditions: &[C::LeaseHeldByPeer, C::SelfFenced],
    },
    standby_acquires_when_the_lease_expired_and_the_peer_fails_from_two_vantages: Row {
        name: "standby acquires when the lease expired and the peer fails from two vantages",
        observed: standby_peer_dead,
        now: 40_000,
        steps: &["acquire-lease"],
        conditions: &[C::WitnessUnreachable],
    },
    standby_does_not_acquire_while_the_lease_is_unexpired_even_if_the_peer_looks_dead: Row {
        name: "standby does not acquire while the lease is unexpired even if the peer looks dead",
        observed: standby_peer_dead,
        now: 24_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable, C::LeaseHeldByPeer],
    },
    standby_does_not_acquire_with_only_one_failing_vantage: Row {
        name: "standby does not acquire with only one failing vantage",
        observed: || {
            let mut o = standby_peer_dead();
            o.probes = vec![probe("v1", Some(0)), probe("v2", None)];
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable],
    },
    two_failing_probes_from_the_same_vantage_count_once: Row {
        name: "two failing probes from the same vantage count once",
        observed: || {
            let mut o = standby_peer_dead();
            o.probes = vec![probe("v1", Some(0)), probe("v1", Some(0))];
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable],
    },
    flapping_probes_shorter_than_the_hold_down_cause_no_failover: Row {
        name: "flapping probes shorter than the hold-down cause no failover",
        observed: || {
            let mut o = standby_peer_dead();
            o.probes = vec![probe("v1", Some(36_000)), probe("v2", Some(36_000))];
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable],
    },
    standby_does_not_fail_over_with_autofailover_off_and_says_so: Row {
        name: "standby does not fail over with autoFailover off and says so",
        observed: || {
            let mut o = standby_peer_dead();
            o.spec.auto_failover = false;
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable, C::AutoFailoverDisabled],
    },
    high_lag_blocks_promotion_and_raises_a_condition_instead_of_triggering_one: Row {
        name: "high lag blocks promotion and raises a condition instead of triggering one",
        observed: || {
            let mut o = standby_peer_dead();
            o.replication.sync = false;
            o.replication.lag_bytes = 64 << 20;
            o.replication.lag_seconds = 30;
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable, C::ReplicationLagAboveRpo],
    },
    async_standby_inside_the_rpo_bound_may_fail_over: Row {
        name: "async standby inside the RPO bound may fail over",
        observed: || {
            let mut o = standby_peer_dead();
            o.replication.sync = false;
            o.replication.lag_bytes = 1024;
            o.replication.lag_seconds = 1;
            o
        },
        now: 40_000,
        steps: &["acquire-lease"],
        conditions: &[C::WitnessUnreachable],
    },
    a_state_change_inside_the_hold_down_holds_the_failover_back: Row {
        name: "a state change inside the hold-down holds the failover back",
        observed: || {
            let mut o = standby_peer_dead();
            o.last_change = Some(Mono(38_000));
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable, C::HoldDown],
    },
    standby_holding_the_lease_promotes_before_the_dns_flip_default_mode_suspends_sync: Row {
        name: "standby holding the lease promotes before the DNS flip, default mode suspends sync",
        observed: standby_holding,
        now: 40_100,
        steps: &[
            "promote",
            "suspend-sync",
            "unfence",
            "undrain",
            "flip-dns",
            "audit",
            "finish-operation",
        ],
        conditions: &[C::DurabilityDegraded],
    },
    strict_durability_promotes_with_sync_required_and_says_writes_are_blocked: Row {
        name: "strict durability promotes with sync required and says writes are blocked",
        observed: || {
            let mut o = standby_holding();
            o.spec.durability = Durability::Strict;
            o
        },
        now: 40_100,
        steps: &[
            "promote",
            "restore-sync",
            "unfence",
            "undrain",
            "flip-dns",
            "audit",
            "finish-operation",
        ],
        conditions: &[C::WritesBlockedAwaitingSyncStandby],
    },
    promoted_primary_in_default_mode_restores_sync_once_the_rebuilt_peer_streams: Row {
        name: "promoted primary in default mode restores sync once the rebuilt peer streams",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Primary,
                read_only: false,
                drained: false,
                sync_suspended: true,
            };
            o
        },
        now: 41_000,
        steps: &["restore-sync", "audit"],
        conditions: &[],
    },
    promoted_primary_keeps_sync_suspended_while_the_peer_does_not_stream: Row {
        name: "promoted primary keeps sync suspended while the peer does not stream",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Primary,
                read_only: false,
                drained: false,
                sync_suspended: true,
            };
            o.replication.streaming = false;
            o
        },
        now: 41_000,
        steps: &[],
        conditions: &[C::DurabilityDegraded],
    },
    strict_primary_with_sync_suspended_requires_it_again_even_without_a_peer: Row {
        name: "strict primary with sync suspended requires it again even without a peer",
        observed: || {
            let mut o = standby_holding();
            o.spec.durability = Durability::Strict;
            o.local = Local {
                db: DbRole::Primary,
                read_only: false,
                drained: false,
                sync_suspended: true,
            };
            o.replication.streaming = false;
            o
        },
        now: 41_000,
        steps: &["restore-sync"],
        conditions: &[C::WritesBlockedAwaitingSyncStandby],
    },
    switchover_source_drains_then_demotes_after_announcing_the_switchover: Row {
        name: "switchover source drains then demotes after announcing the switchover",
        observed: || {
            let mut o = primary();
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o
        },
        now: 1_000,
        steps: &["audit", "drain", "demote"],
        conditions: &[],
    },
    switchover_is_blocked_when_the_target_does_not_stream: Row {
        name: "switchover is blocked when the target does not stream",
        observed: || {
            let mut o = primary();
            o.replication.streaming = false;
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o
        },
        now: 1_000,
        steps: &["suspend-sync"],
        conditions: &[C::DurabilityDegraded, C::SwitchoverBlocked],
    },
    a_completed_switchover_is_not_run_again: Row {
        name: "a completed switchover is not run again",
        observed: || {
            let mut o = primary();
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o.completed = vec!["sw-1".into()];
            o
        },
        now: 1_000,
        steps: &[],
        conditions: &[],
    },
    switchover_source_whose_target_stopped_streaming_before_demotion_undrains_and_aborts: Row {
        name: "switchover source whose target stopped streaming before demotion undrains and aborts",
        observed: || {
            let mut o = primary();
            o.local.drained = true;
            o.replication.streaming = false;
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o.operation = Some(Operation {
                id: "sw-1".into(),
                kind: OpKind::Switchover,
                step: "drain".into(),
                epoch: 1,
                started_at: Millis(0),
                lsn: None,
                target: Some("b".into()),
            });
            o
        },
        now: 1_000,
        steps: &["undrain", "audit", "finish-operation"],
        conditions: &[C::SwitchoverBlocked],
    },
    switchover_source_that_lost_its_lease_before_demotion_fences_and_aborts: Row {
        name: "switchover source that lost its lease before demotion fences and aborts",
        observed: || {
            let mut o = primary();
            o.local.drained = true;
            o.operation = Some(Operation {
                id: "sw-1".into(),
                kind: OpKind::Switchover,
                step: "drain".into(),
                epoch: 1,
                started_at: Millis(0),
                lsn: None,
                target: Some("b".into()),
            });
            o
        },
        now: 18_000,
        steps: &["drain", "fence", "audit", "finish-operation"],
        conditions: &[],
    },
    demoted_switchover_source_waits_for_the_target_to_replay_the_lsn_then_releases: Row {
        name: "demoted switchover source waits for the target to replay the LSN then releases",
        observed: || {
            let mut o = primary();
            o.local.db = DbRole::Standby;
            o.local.drained = true;
            o.operation = Some(Operation {
                id: "sw-1".into(),
                kind: OpKind::Switchover,
                step: "demote".into(),
                epoch: 1,
                started_at: Millis(0),
                lsn: Some(Lsn(42)),
                target: Some("b".into()),
            });
            o
        },
        now: 1_000,
        steps: &["wait-replayed", "release-lease"],
        conditions: &[],
    },
    switchover_source_finishes_once_the_lease_has_left_it: Row {
        name: "switchover source finishes once the lease has left it",
        observed: || {
            let mut o = primary();
            o.local.db = DbRole::Standby;
            o.lease = Some(lease("", 1, 0, 1_000));
            o.renewed = None;
            o.operation = Some(Operation {
                id: "sw-1".into(),
                kind: OpKind::Switchover,
                step: "release-lease".into(),
                epoch: 1,
                started_at: Millis(0),
                lsn: Some(Lsn(42)),
                target: Some("b".into()),
            });
            o
        },
        now: 1_000,
        steps: &["finish-operation"],
        conditions: &[],
    },
    switchover_target_acquires_a_released_lease_without_waiting_for_expiry: Row {
        name: "switchover target acquires a released lease without waiting for expiry",
        observed: || {
            let mut o = standby();
            o.lease = Some(lease("", 1, 0, 1_000));
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o
        },
        now: 1_000,
        steps: &["acquire-lease"],
        conditions: &[],
    },
    switchover_target_facing_an_expired_not_released_lease_keeps_the_rpo_gate: Row {
        name: "switchover target facing an expired (not released) lease keeps the RPO gate",
        observed: || {
            let mut o = standby_peer_dead();
            o.lease = Some(lease("a", 1, 0, 1_000));
            o.replication.sync = false;
            o.replication.lag_seconds = 60;
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable, C::ReplicationLagAboveRpo],
    },
    switchover_target_holding_the_lease_promotes_and_requires_sync_before_any_write: Row {
        name: "switchover target holding the lease promotes and requires sync before any write",
        observed: || {
            let mut o = standby_holding();
            o.spec.switchover = Some(SwitchoverRequest {
                id: "sw-1".into(),
                target: "b".into(),
            });
            o
        },
        now: 40_100,
        steps: &[
            "promote",
            "restore-sync",
            "unfence",
            "undrain",
            "flip-dns",
            "audit",
            "finish-operation",
        ],
        conditions: &[],
    },
    failback_without_approval_waits_and_says_so: Row {
        name: "failback without approval waits and says so",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Primary,
                read_only: false,
                drained: false,
                sync_suspended: false,
            };
            o.spec.failback = Some(FailbackRequest {
                id: "fb-1".into(),
                approved: false,
            });
            o
        },
        now: 41_000,
        steps: &[],
        conditions: &[C::FailbackAwaitingApproval],
    },
    approved_failback_runs_the_switchover_sequence_back_to_the_home_primary: Row {
        name: "approved failback runs the switchover sequence back to the home primary",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Primary,
                read_only: false,
                drained: false,
                sync_suspended: false,
            };
            o.spec.failback = Some(FailbackRequest {
                id: "fb-1".into(),
                approved: true,
            });
            o
        },
        now: 41_000,
        steps: &["audit", "drain", "demote"],
        conditions: &[],
    },
    approved_failback_is_blocked_until_the_old_primary_is_rebuilt_and_streams: Row {
        name: "approved failback is blocked until the old primary is rebuilt and streams",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Primary,
                read_only: false,
                drained: false,
                sync_suspended: true,
            };
            o.replication.streaming = false;
            o.spec.failback = Some(FailbackRequest {
                id: "fb-1".into(),
                approved: true,
            });
            o
        },
        now: 41_000,
        steps: &[],
        conditions: &[C::DurabilityDegraded, C::SwitchoverBlocked],
    },
    old_primary_fenced_while_the_peer_holds_the_lease_is_rebuilt_before_it_may_rejoin: Row {
        name: "old primary fenced while the peer holds the lease is rebuilt before it may rejoin",
        observed: || {
            let mut o = primary();
            o.local.read_only = true;
            o.local.drained = true;
            o.lease = Some(lease("b", 2, 30_000, 50_000));
            o
        },
        now: 50_000,
        steps: &["rebuild", "audit", "finish-operation"],
        conditions: &[C::LeaseHeldByPeer, C::NeedsRebuild],
    },
    a_diverged_standby_never_acquires_a_free_lease: Row {
        name: "a diverged standby never acquires a free lease",
        observed: || {
            let mut o = standby_peer_dead();
            o.replication.needs_rebuild = true;
            o
        },
        now: 40_000,
        steps: &[],
        conditions: &[C::WitnessUnreachable, C::NeedsRebuild],
    },
    self_fenced_primary_whose_renew_succeeded_again_un_fences_after_the_hold_down: Row {
        name: "self-fenced primary whose renew succeeded again un-fences after the hold-down",
        observed: || {
            let mut o = primary();
            o.local.read_only = true;
            o.local.drained = true;
            o.renewed = Some(Renewed {
                sent_at: Mono(20_000),
                epoch: 1,
            });
            o.lease = Some(lease("a", 1, 30_000, 20_000));
            o.last_change = Some(Mono(18_000));
            o
        },
        now: 23_000,
        steps: &["unfence", "undrain"],
        conditions: &[],
    },
    self_fenced_primary_stays_fenced_inside_the_hold_down: Row {
        name: "self-fenced primary stays fenced inside the hold-down",
        observed: || {
            let mut o = primary();
            o.local.read_only = true;
            o.local.drained = true;
            o.renewed = Some(Renewed {
                sent_at: Mono(20_000),
                epoch: 1,
            });
            o.lease = Some(lease("a", 1, 30_000, 20_000));
            o.last_change = Some(Mono(18_000));
            o
        },
        now: 21_000,
        steps: &[],
        conditions: &[C::HoldDown],
    },
    fenced_old_primary_re_takes_a_lease_nobody_took_as_it_has_the_newest_data: Row {
        name: "fenced old primary re-takes a lease nobody took, as it has the newest data",
        observed: || {
            let mut o = primary();
            o.local.read_only = true;
            o.local.drained = true;
            o
        },
        now: 40_000,
        steps: &["acquire-lease"],
        conditions: &[C::WitnessUnreachable],
    },
    restarted_promotion_resumes_after_promote_without_promoting_twice: Row {
        name: "restarted promotion resumes after promote without promoting twice",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Primary,
                read_only: true,
                drained: true,
                sync_suspended: true,
            };
            o.operation = Some(Operation {
                id: "failover-2".into(),
                kind: OpKind::Failover,
                step: "promote".into(),
                epoch: 2,
                started_at: Millis(0),
                lsn: None,
                target: Some("b".into()),
            });
            o
        },
        now: 40_200,
        steps: &[
            "suspend-sync",
            "unfence",
            "undrain",
            "flip-dns",
            "audit",
            "finish-operation",
        ],
        conditions: &[C::DurabilityDegraded],
    },
    resumed_promotion_on_a_fenced_stopped_server_starts_it_first: Row {
        name: "a resumed promotion whose server the watchdog fenced and stopped starts it first",
        observed: || {
            let mut o = standby_holding();
            o.local = Local {
                db: DbRole::Down,
                read_only: true,
                drained: true,
                sync_suspended: false,
            };
            o.operation = Some(Operation {
                id: "failover-2".into(),
                kind: OpKind::Failover,
                step: "suspend-sync".into(),
                epoch: 2,
                started_at: Millis(0),
                lsn: None,
                target: Some("b".into()),
            });
            o
        },
        now: 40_200,
        steps: &[
            "unfence",
            "suspend-sync",
            "undrain",
            "flip-dns",
            "audit",
            "finish-operation",
        ],
        conditions: &[C::DurabilityDegraded],
    },
}

#[test]
fn deadline_lies_strictly_inside_the_ttl_and_bad_timings_are_rejected_at_config_load() {
    assert_eq!(T.validate(), Ok(()));
    assert_eq!(T.deadline_ms(), 18_000);
    let fast = Timing {
        ttl_ms: 6_000,
        renew_ms: 2_000,
        margin_ms: 1_000,
        hold_down_ms: 1_000,
        max_drift: 0.05,
    };
    assert_eq!(fast.validate(), Ok(()));
    let no_retry = Timing {
        margin_ms: 15_000,
        ..T
    };
    assert!(matches!(
        no_retry.validate(),
        Err(TimingError::NoRetry { .. })
    ));
    let drifty = Timing {
        margin_ms: 100,
        max_drift: 0.3,
        ..T
    };
    assert!(matches!(
        drifty.validate(),
        Err(TimingError::NotInsideTtl { .. })
    ));
    let zero = Timing { renew_ms: 0, ..T };
    assert!(matches!(
        zero.validate(),
        Err(TimingError::NotPositive("renew"))
    ));
}

#[test]
fn every_data_plane_step_of_a_promotion_carries_the_acquired_epoch() {
    let plan = decide(&standby_holding(), Mono(40_100));
    for s in &plan.steps {
        let epoch = match s {
            Step::Promote { epoch }
            | Step::SuspendSync { epoch }
            | Step::Unfence { epoch }
            | Step::Undrain { epoch } => *epoch,
            Step::FlipDns { primary, epoch } => {
                assert_eq!(primary, "b");
                *epoch
            }
            Step::Audit(e) => e.epoch.unwrap_or_default(),
            Step::FinishOperation => continue,
            other => panic!("unexpected step {other:?}"),
        };
        assert_eq!(epoch, 2, "{s:?}");
    }
    let start = plan.start.expect("failover operation started");
    assert_eq!((start.kind, start.epoch), (OpKind::Failover, 2));
}

#[test]
fn witness_outage_shorter_than_the_deadline_causes_no_fence_and_no_failover() {
    // The witness is unreachable from 0 on; both regions run until just before the deadline.
    for now in (0..T.deadline_ms()).step_by(500) {
        let p = decide(&primary(), Mono(now));
        assert!(
            !p.has("fence") && !p.has("drain"),
            "primary fenced at {now}"
        );
        let s = decide(&standby_peer_dead(), Mono(now));
        assert!(!s.has("acquire-lease"), "standby acquired at {now}");
    }
}

#[test]
fn self_fence_audit_is_a_lease_lost_event_with_the_epoch() {
    let plan = decide(&primary(), Mono(18_000));
    let Some(Step::Audit(e)) = plan.steps.iter().rev().nth(1) else {
        panic!("last step is not an audit: {:?}", plan.names());
    };
    assert_eq!(e.kind, crate::audit::AuditType::LeaseLost);
    assert_eq!(e.epoch, Some(1));
    assert_eq!(plan.start.map(|o| o.kind), Some(OpKind::SelfFence));
}

#[test]
fn observed_and_plan_round_trip_through_json() {
    let o = standby_holding();
    let back: Observed = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
    assert_eq!(back, o);
    let plan = decide(&o, Mono(40_100));
    let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
    assert_eq!(back, plan);
}

#[test]
fn the_holder_wakes_for_its_renew_and_a_standby_when_the_lease_runs_out() {
    // Primary renewed at 0, renew every 10 s: at 4 s it may sleep 6 s, not more than the max.
    let p = primary();
    assert_eq!(wake_in_ms(&p, Mono(4_000), 60_000), 6_000);
    assert_eq!(wake_in_ms(&p, Mono(4_000), 100), 100);
    // Standby seeing 25 s left at local 0: at 20 s it wakes 5 s (+5 ms) later.
    let s = standby();
    assert_eq!(wake_in_ms(&s, Mono(20_000), 60_000), 5_005);
    // Expired or unknown lease: the tick; never below 5 ms.
    assert_eq!(wake_in_ms(&s, Mono(40_000), 100), 100);
    assert_eq!(wake_in_ms(&p, Mono(9_999), 60_000), 5);
}

// Issue 13, paths 1, 6 and 7: each test asserts the fixed behaviour (it failed before the fix)
// and that the test-only mutation switch puts the old path back.

fn with_mutation<T>(m: super::mutation::Mutation, f: impl FnOnce() -> T) -> T {
    super::mutation::set(Some(m));
    let r = f();
    super::mutation::set(None);
    r
}

/// `a`: an old primary, fenced and drained, after a restart; the lease has expired.
fn fenced_old_primary(last_holder: &str, epoch: u64) -> Observed {
    let mut o = sample();
    o.local.read_only = true;
    o.local.drained = true;
    o.renewed = None;
    if let Some(l) = o.lease.as_mut() {
        l.state.holder = last_holder.into();
        l.state.epoch = epoch;
    }
    o
}

#[test]
fn path1_a_superseded_old_primary_never_retakes_a_free_lease() {
    // a died, b promoted at epoch 2, b's lease lapsed, a is back: a must not re-take it.
    let o = fenced_old_primary("b", 2);
    let now = Mono(40_000);
    let plan = decide(&o, now);
    assert!(!plan.has("acquire-lease"), "{:?}", plan.names());
    assert!(
        plan.conditions
            .iter()
            .any(|c| c.kind == ConditionKind::NeedsRebuild && c.message.contains("superseded")),
        "{:?}",
        plan.conditions
    );
    // Its own last grant: it re-takes (same holder, same epoch).
    let own = decide(&fenced_old_primary("a", 1), now);
    assert_eq!(own.names(), ["acquire-lease"]);
    // The old rule (any primary takes a free lease) is the path to lost writes.
    let mutated = with_mutation(super::mutation::Mutation::RetakeAnyFreeLease, || {
        decide(&o, now)
    });
    assert_eq!(mutated.names(), ["acquire-lease"]);
}

/// `b`: a switchover target that acquired the lease and crashed before promoting.
fn crashed_target() -> Observed {
    let mut o = sample();
    o.region = "b".into();
    o.local = Local {
        db: DbRole::Standby,
        read_only: false,
        drained: true,
        sync_suspended: false,
    };
    o.renewed = None;
    o.replication.streaming = false;
    o.replication.sync = false;
    o.replication.lag_seconds = 600;
    if let Some(l) = o.lease.as_mut() {
        l.state.holder = "b".into();
        l.state.epoch = 2;
    }
    o
}

#[test]
fn path6_a_target_that_crashed_before_promoting_retakes_its_own_grant() {
    // The lease expired (30 s after the grant), no operation was persisted, the source is a
    // demoted standby (probes fail) and the target's lag is unknown: before the fix nothing
    // moved (two standbys, no writer).
    let o = crashed_target();
    let now = Mono(31_000);
    assert_eq!(decide(&o, now).names(), ["acquire-lease"]);
    // A restarted target whose own grant has not expired takes it back at once.
    assert_eq!(decide(&o, Mono(5_000)).names(), ["acquire-lease"]);
    let mutated = with_mutation(super::mutation::Mutation::TargetForgetsOwnGrant, || {
        decide(&o, now)
    });
    assert!(!mutated.has("acquire-lease"), "{:?}", mutated.names());
}

#[test]
fn path7_a_restarted_holder_fences_before_it_reacquires() {
    // A restarted controller: its database is a writable primary, the witness still names it,
    // it has no grant of its own.
    let mut o = sample();
    o.renewed = None;
    let plan = decide(&o, Mono(1_000));
    assert_eq!(
        plan.names(),
        ["drain", "fence", "acquire-lease", "unfence", "undrain"],
        "fenced first; un-fenced only after the lease is back"
    );
    let mutated = with_mutation(
        super::mutation::Mutation::RestartedHolderKeepsServing,
        || decide(&o, Mono(1_000)),
    );
    assert_eq!(mutated.names(), ["acquire-lease"]);
}

#[test]
fn path5_timings_whose_worst_case_fence_misses_the_ttl_are_refused() {
    // ttl 30 / renew 10 / margin 2: budget = floor(30 000·0.95/1.05) − 18 000 − 100 ms.
    let t = Timing::standard();
    assert_eq!(t.fence_budget_ms(), 27_142 - 18_000 - 100);
    assert_eq!(t.validate(), Ok(()));
    // ttl 10 / renew 1 / margin 1: deadline 8 s, earliest grant elsewhere 9.047 s: 947 ms
    // left for drain + fence, under the 1 s minimum.
    let tight = Timing {
        ttl_ms: 10_000,
        renew_ms: 1_000,
        margin_ms: 1_000,
        hold_down_ms: 1_000,
        max_drift: 0.05,
    };
    assert!(matches!(
        tight.validate(),
        Err(TimingError::NoFenceBudget { budget_ms: 947 })
    ));
}

#[test]
fn a_fenced_stopped_database_retakes_its_own_expired_lease_from_a_fresh_reading() {
    // The reading is re-taken every tick (received just now), and it says the lease expired
    // 2 s ago at the witness: longer than the hold-down (1 s). Before the fix, the expiry was
    // measured from the reading only, so it never looked expired for long enough.
    let mut o = sample();
    o.local.db = DbRole::Down;
    o.local.read_only = true;
    o.local.drained = true;
    o.renewed = None;
    o.spec.timing.hold_down_ms = 1_000;
    let now = Mono(50_000);
    if let Some(l) = o.lease.as_mut() {
        let expired = l.state.expires_at.expect("granted");
        l.witness_now = Millis(expired.0 + 2_000);
        l.received_at = now;
    }
    assert_eq!(decide(&o, now).names(), ["acquire-lease"]);
    // Expired only 500 ms ago at the witness: the peer still goes first.
    if let Some(l) = o.lease.as_mut() {
        let expired = l.state.expires_at.expect("granted");
        l.witness_now = Millis(expired.0 + 500);
    }
    assert!(!decide(&o, now).has("acquire-lease"));
}

#[test]
fn a_fenced_stopped_database_does_not_renew_and_retakes_only_its_own_lease_after_the_peer() {
    // The home primary's server is fenced and stopped (Down + read_only).
    let mut o = sample();
    o.local.db = DbRole::Down;
    o.local.read_only = true;
    o.local.drained = true;
    // With authority: no renew on a stopped server; it is un-fenced (started).
    let plan = decide(&o, Mono(10_000));
    assert!(!plan.has("renew-lease"), "{:?}", plan.names());
    assert!(plan.has("unfence"), "{:?}", plan.names());
    // Its own lease expired (at 30 s): the peer goes first for a hold-down (5 s).
    o.renewed = None;
    assert!(!decide(&o, Mono(32_000)).has("acquire-lease"));
    assert_eq!(decide(&o, Mono(35_100)).names(), ["acquire-lease"]);
    // Someone else's last grant: never.
    if let Some(l) = o.lease.as_mut() {
        l.state.holder = "b".into();
        l.state.epoch = 2;
    }
    assert!(!decide(&o, Mono(60_000)).has("acquire-lease"));
    // A never-granted lease: the home primary bootstraps.
    if let Some(l) = o.lease.as_mut() {
        l.state.holder = String::new();
        l.state.epoch = 0;
    }
    assert_eq!(decide(&o, Mono(60_000)).names(), ["acquire-lease"]);
}
