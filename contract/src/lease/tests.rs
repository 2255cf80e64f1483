//! Table-style tests of the lease transition: upstream's witness contract suite
//! (`spec/upstream-continuum.md` §6.1) at the pure level, plus epoch, replay and CAS rules.

use super::*;

const TTL: i64 = 30_000;

fn t(ms: i64) -> Millis {
    Millis(1_000_000 + ms)
}

/// Applies and returns the new record and outcome; panics on a malformed request.
fn run(rec: &LeaseRecord, req: LeaseRequest, now: Millis) -> (LeaseRecord, LeaseOutcome) {
    let a = apply(rec, &req, now).expect("well-formed request");
    (a.record, a.outcome)
}

fn granted(rec: &LeaseRecord, req: LeaseRequest, now: Millis) -> LeaseRecord {
    let (r, o) = run(rec, req, now);
    o.expect("granted");
    r
}

#[test]
fn acquire_on_empty_slot_grants_generation_one_and_epoch_one() {
    let (rec, out) = run(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let s = out.unwrap();
    assert_eq!(s.holder, "a");
    assert_eq!(s.generation, 1);
    assert_eq!(s.epoch, 1);
    assert_eq!(s.acquired_at, Some(t(0)));
    assert!(s.expires_at.unwrap() > s.acquired_at.unwrap());
    assert_eq!(rec.state, s);
}

#[test]
fn acquire_blocked_by_another_unexpired_holder() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (after, out) = run(&rec, LeaseRequest::acquire("b", TTL), t(TTL - 1));
    let c = out.unwrap_err();
    assert_eq!(c.reason, ConflictReason::HeldByAnother);
    assert_eq!(c.current.holder, "a");
    assert_eq!(after, rec, "a refused request changes nothing");
}

#[test]
fn acquire_after_expiry_hands_over_with_a_new_epoch() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    // expiresAt <= now is expired: exactly at the deadline the slot is free.
    let (_, out) = run(&rec, LeaseRequest::acquire("b", TTL), t(TTL));
    let s = out.unwrap();
    assert_eq!(s.holder, "b");
    assert_eq!(s.epoch, 2);
    assert_eq!(s.generation, 2);
    assert_eq!(s.acquired_at, Some(t(TTL)));
}

#[test]
fn acquire_same_holder_extends_and_keeps_acquired_at_and_epoch() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (_, out) = run(&rec, LeaseRequest::acquire("a", TTL), t(5_000));
    let s = out.unwrap();
    assert_eq!(s.acquired_at, Some(t(0)));
    assert_eq!(s.expires_at, Some(t(5_000 + TTL)));
    assert_eq!(s.epoch, 1);
    assert_eq!(s.generation, 2);
}

#[test]
fn renew_extends_ttl_and_bumps_generation() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (_, out) = run(&rec, LeaseRequest::renew("a", TTL), t(10_000));
    let s = out.unwrap();
    assert_eq!(s.expires_at, Some(t(10_000 + TTL)));
    assert_eq!(s.generation, 2);
    assert_eq!(s.epoch, 1);
}

#[test]
fn renew_never_shortens_the_lease() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (_, out) = run(&rec, LeaseRequest::renew("a", 1_000), t(1_000));
    assert_eq!(out.unwrap().expires_at, Some(t(TTL)));
}

#[test]
fn renew_after_expiry_is_lost() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (after, out) = run(&rec, LeaseRequest::renew("a", TTL), t(TTL));
    assert_eq!(out.unwrap_err().reason, ConflictReason::Expired);
    assert_eq!(after, rec);
}

#[test]
fn renew_by_non_holder_is_lost() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (_, out) = run(&rec, LeaseRequest::renew("b", TTL), t(1));
    assert_eq!(out.unwrap_err().reason, ConflictReason::NotHolder);
}

#[test]
fn release_is_idempotent_and_keeps_the_epoch() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (rec, out) = run(&rec, LeaseRequest::release("a"), t(1));
    let s = out.unwrap();
    assert_eq!(s.holder, "");
    assert_eq!(s.expires_at, None);
    assert_eq!(s.generation, 2);
    assert_eq!(s.epoch, 1);
    let a = apply(&rec, &LeaseRequest::release("a"), t(2)).unwrap();
    assert!(!a.changed);
    assert_eq!(a.outcome.unwrap(), s);
}

#[test]
fn release_by_non_holder_is_a_no_op() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let a = apply(&rec, &LeaseRequest::release("b"), t(1)).unwrap();
    assert!(!a.changed);
    assert_eq!(a.record, rec);
    assert_eq!(a.outcome.unwrap().holder, "a");
}

#[test]
fn released_slot_is_granted_immediately_with_a_higher_epoch() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let rec = granted(&rec, LeaseRequest::release("a"), t(1));
    let (_, out) = run(&rec, LeaseRequest::acquire("b", TTL), t(2));
    let s = out.unwrap();
    assert_eq!((s.holder.as_str(), s.epoch), ("b", 2));
}

#[test]
fn same_holder_reacquiring_after_expiry_gets_a_new_epoch() {
    // A grant after expiry is a new grant: writes fenced with the old epoch must be refused.
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let (_, out) = run(&rec, LeaseRequest::acquire("a", TTL), t(TTL + 1));
    let s = out.unwrap();
    assert_eq!(s.epoch, 2);
    assert_eq!(s.acquired_at, Some(t(TTL + 1)));
}

#[test]
fn generation_is_monotonic_across_every_write() {
    let mut rec = LeaseRecord::default();
    let mut last = 0;
    let steps = [
        LeaseRequest::acquire("a", TTL),
        LeaseRequest::renew("a", TTL),
        LeaseRequest::acquire("a", TTL),
        LeaseRequest::release("a"),
        LeaseRequest::acquire("b", TTL),
    ];
    for (i, req) in steps.into_iter().enumerate() {
        rec = granted(&rec, req, t(i as i64));
        assert!(rec.state.generation > last);
        last = rec.state.generation;
    }
    assert_eq!(last, 5);
}

#[test]
fn if_match_mismatch_conflicts_with_the_current_state() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    for req in [
        LeaseRequest::acquire("a", TTL).if_match(0),
        LeaseRequest::renew("a", TTL).if_match(7),
        LeaseRequest::release("a").if_match(0),
    ] {
        let (after, out) = run(&rec, req, t(1));
        let c = out.unwrap_err();
        assert_eq!(c.reason, ConflictReason::GenerationMismatch);
        assert_eq!(c.current, rec.state);
        assert_eq!(after, rec);
    }
    let (_, out) = run(&rec, LeaseRequest::renew("a", TTL).if_match(1), t(1));
    assert!(out.is_ok());
}

#[test]
fn two_acquires_with_the_same_if_match_cannot_both_win() {
    // The race upstream's KV witness loses: both read generation 0.
    let rec = LeaseRecord::default();
    let rec = granted(&rec, LeaseRequest::acquire("a", TTL).if_match(0), t(0));
    let (_, out) = run(&rec, LeaseRequest::acquire("b", TTL).if_match(0), t(0));
    assert_eq!(out.unwrap_err().reason, ConflictReason::GenerationMismatch);
}

#[test]
fn replayed_request_id_returns_the_first_answer_and_burns_no_epoch() {
    let req = LeaseRequest::acquire("a", TTL).request_id("r1");
    let first = apply(&LeaseRecord::default(), &req, t(0)).unwrap();
    let again = apply(&first.record, &req, t(5)).unwrap();
    assert!(again.replayed && !again.changed);
    assert_eq!(again.outcome, first.outcome);
    assert_eq!(again.record, first.record);
    // A conflict is replayed as a conflict, too.
    let b = LeaseRequest::acquire("b", TTL).request_id("r1");
    let c1 = apply(&first.record, &b, t(6)).unwrap();
    let c2 = apply(&c1.record, &b, t(TTL + 10)).unwrap();
    assert!(c1.outcome.is_err());
    assert_eq!(c1.outcome, c2.outcome, "same request id, same answer");
}

#[test]
fn request_id_reused_for_another_operation_is_rejected() {
    let a = apply(
        &LeaseRecord::default(),
        &LeaseRequest::acquire("a", TTL).request_id("r"),
        t(0),
    )
    .unwrap();
    let err = apply(
        &a.record,
        &LeaseRequest::renew("a", TTL).request_id("r"),
        t(1),
    )
    .unwrap_err();
    assert_eq!(err, LeaseRequestError::RequestIdReused("r".into()));
}

#[test]
fn replay_memory_is_bounded() {
    let mut rec = LeaseRecord::default();
    for i in 0..(REPLAY_MEMORY + 10) {
        let req = LeaseRequest::acquire("a", TTL).request_id(format!("r{i}"));
        rec = apply(&rec, &req, t(i as i64)).unwrap().record;
    }
    assert_eq!(rec.answered.len(), REPLAY_MEMORY);
    assert_eq!(rec.answered.front().unwrap().request_id, "r10");
}

#[test]
fn malformed_requests_are_rejected_without_change() {
    let rec = LeaseRecord::default();
    assert_eq!(
        apply(&rec, &LeaseRequest::acquire("", TTL), t(0)).unwrap_err(),
        LeaseRequestError::InvalidHolder
    );
    for ttl in [0, -1, MAX_TTL_MS + 1] {
        assert_eq!(
            apply(&rec, &LeaseRequest::acquire("a", ttl), t(0)).unwrap_err(),
            LeaseRequestError::InvalidTtl(ttl)
        );
    }
    // Release ignores the TTL.
    assert!(apply(&rec, &LeaseRequest::release("a"), t(0)).is_ok());
}

#[test]
fn epoch_floor_is_respected_by_the_next_grant() {
    let rec = LeaseRecord {
        epoch_floor: 41,
        ..LeaseRecord::default()
    };
    let (_, out) = run(&rec, LeaseRequest::acquire("a", TTL), t(0));
    assert_eq!(out.unwrap().epoch, 42);
}

#[test]
fn slots_are_isolated_because_records_are_values() {
    let a = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let b = LeaseRecord::default();
    let (_, out) = run(&b, LeaseRequest::acquire("b", TTL), t(0));
    assert_eq!(out.unwrap().holder, "b");
    assert_eq!(a.state.holder, "a");
}

#[test]
fn if_match_header_forms_parse_as_upstream() {
    assert_eq!(parse_if_match("7"), Some(7));
    assert_eq!(parse_if_match("\"7\""), Some(7));
    assert_eq!(parse_if_match("W/\"7\""), Some(7));
    assert_eq!(parse_if_match(" 0 "), Some(0));
    for bad in [
        "",
        "x",
        "-1",
        "\"7",
        "W/7x",
        "1.5",
        "99999999999999999999999",
    ] {
        assert_eq!(parse_if_match(bad), None, "{bad:?}");
    }
}

#[test]
fn put_body_ttl_validation() {
    let body = |s: f64| PutBody {
        holder: "a".into(),
        ttl_seconds: s,
        op: LeaseOp::Acquire,
    };
    assert_eq!(body(30.0).ttl_ms(), Ok(30_000));
    assert_eq!(body(0.5).ttl_ms(), Ok(500));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 3601.0] {
        assert!(body(bad).ttl_ms().is_err(), "{bad}");
    }
}

#[test]
fn wire_state_is_upstream_shaped_with_epoch() {
    let s = LeaseState {
        holder: "region-a".into(),
        acquired_at: Some(Millis(1_778_493_600_000)),
        expires_at: Some(Millis(1_778_493_630_000)),
        generation: 3,
        epoch: 2,
        report: None,
    };
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(
        json,
        r#"{"holder":"region-a","acquiredAt":"2026-05-11T10:00:00.000Z","expiresAt":"2026-05-11T10:00:30.000Z","generation":3,"epoch":2}"#
    );
    assert_eq!(serde_json::from_str::<LeaseState>(&json).unwrap(), s);
    // Upstream's released shell decodes; a missing epoch is 0.
    let shell: LeaseState =
        serde_json::from_str(r#"{"holder":"","acquiredAt":"","expiresAt":"","generation":4}"#)
            .unwrap();
    assert_eq!(shell.generation, 4);
    assert!(shell.is_free_at(Millis(0)));
}

#[test]
fn replay_of_a_superseded_grant_is_a_conflict_not_authority() {
    let req = LeaseRequest::acquire("a", TTL).request_id("r1");
    let rec = apply(&LeaseRecord::default(), &req, t(0)).unwrap().record;
    let rec = granted(&rec, LeaseRequest::release("a"), t(1));
    let rec = granted(&rec, LeaseRequest::acquire("b", TTL), t(2));
    let a = apply(&rec, &req, t(3)).unwrap();
    assert!(a.replayed && !a.changed);
    let c = a.outcome.unwrap_err();
    assert_eq!(c.reason, ConflictReason::Superseded);
    assert_eq!(c.current.holder, "b");
}

#[test]
fn raised_epoch_floor_is_honoured_and_never_lowered() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let rec = raise_epoch_floor(&rec, 9).unwrap();
    assert_eq!(raise_epoch_floor(&rec, 3).unwrap().epoch_floor, 9);
    assert_eq!(rec.state.epoch, 1, "the current grant is untouched");
    let (_, out) = run(&rec, LeaseRequest::acquire("b", TTL), t(TTL));
    assert_eq!(out.unwrap().epoch, 10);
}

fn report(sync: bool, lsn: &str) -> HolderReport {
    HolderReport {
        synchronous: sync,
        flushed_lsn: Some(lsn.into()),
    }
}

#[test]
fn holder_report_is_kept_across_renewals_and_dropped_on_handover() {
    let rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL).report(report(true, "0/10")),
        t(0),
    );
    assert_eq!(rec.state.report, Some(report(true, "0/10")));
    // A renew without a report keeps the last one; with one, replaces it.
    let rec = granted(&rec, LeaseRequest::renew("a", TTL), t(1));
    assert_eq!(rec.state.report, Some(report(true, "0/10")));
    let rec = granted(
        &rec,
        LeaseRequest::renew("a", TTL).report(report(false, "0/20")),
        t(2),
    );
    assert_eq!(rec.state.report, Some(report(false, "0/20")));
    // The next holder starts without the old holder's report.
    let rec = granted(&rec, LeaseRequest::acquire("b", TTL), t(2 + TTL));
    assert_eq!(rec.state.report, None);
    let rec = granted(&rec, LeaseRequest::release("b"), t(3 + TTL));
    assert_eq!(rec.state.report, None);
}

#[test]
fn malformed_reports_are_rejected_without_change() {
    for bad in ["", "0", "0/", "/1", "G/1", "0/123456789", "0/1/2"] {
        let req = LeaseRequest::acquire("a", TTL).report(report(true, bad));
        assert_eq!(
            apply(&LeaseRecord::default(), &req, t(0)).unwrap_err(),
            LeaseRequestError::InvalidReport,
            "{bad:?}"
        );
    }
    let ok = LeaseRequest::acquire("a", TTL).report(report(true, "16/B374D848"));
    assert!(apply(&LeaseRecord::default(), &ok, t(0)).is_ok());
}

/// A free slot whose last grant was `epoch` (released), with `floor` as its epoch floor.
fn released_at(epoch: u64, floor: u64) -> LeaseRecord {
    LeaseRecord {
        state: LeaseState {
            generation: 7,
            epoch,
            ..LeaseState::default()
        },
        epoch_floor: floor,
        ..LeaseRecord::default()
    }
}

#[test]
fn the_last_epoch_is_granted_once_and_then_grants_are_refused_not_reused() {
    // One below the top: the grant gets u64::MAX, exactly once.
    let rec = granted(
        &released_at(u64::MAX - 1, 0),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    assert_eq!(rec.state.epoch, u64::MAX);
    let rec = granted(&rec, LeaseRequest::release("a"), t(1));
    // No strictly larger epoch exists: the next grant is refused and changes nothing.
    for holder in ["a", "b"] {
        let r = apply(&rec, &LeaseRequest::acquire(holder, TTL), t(2));
        assert!(r.is_err(), "a grant that would reuse epoch u64::MAX: {r:?}");
        let e = r.unwrap_err();
        assert_eq!(e, LeaseRequestError::EpochExhausted { highest: u64::MAX });
        assert_eq!(e.code(), "epoch_exhausted");
        assert!(e.is_exhausted() && e.to_string().contains("epoch"), "{e}");
    }
    // With a request id: nothing is remembered, so nothing is replayed as a grant later.
    let r = apply(
        &rec,
        &LeaseRequest::acquire("b", TTL).request_id("r1"),
        t(2),
    );
    assert!(r.is_err());
    // After expiry, too (a new grant to the same holder needs a new epoch).
    let held = granted(
        &released_at(u64::MAX - 1, 0),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    let r = apply(&held, &LeaseRequest::acquire("a", TTL), t(TTL));
    assert!(
        matches!(r, Err(LeaseRequestError::EpochExhausted { .. })),
        "re-grant after expiry at the top: {r:?}"
    );
    // The holder of the last epoch can still renew, re-acquire and release it.
    let held = granted(&held, LeaseRequest::renew("a", TTL), t(1));
    let held = granted(&held, LeaseRequest::acquire("a", TTL), t(2));
    assert_eq!(held.state.epoch, u64::MAX);
    granted(&held, LeaseRequest::release("a"), t(3));
}

#[test]
fn a_floor_at_the_top_refuses_the_grant_instead_of_saturating() {
    for (epoch, floor) in [(0, u64::MAX), (u64::MAX, 0), (5, u64::MAX)] {
        let rec = released_at(epoch, floor);
        let r = apply(&rec, &LeaseRequest::acquire("a", TTL), t(0));
        assert_eq!(
            r,
            Err(LeaseRequestError::EpochExhausted { highest: u64::MAX }),
            "epoch {epoch} floor {floor}"
        );
    }
    // Just below: granted, strictly above both.
    let (_, out) = run(
        &released_at(3, u64::MAX - 1),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    assert_eq!(out.unwrap().epoch, u64::MAX);
}

#[test]
fn an_exhausted_generation_refuses_the_write_instead_of_repeating_a_version() {
    let mut rec = granted(
        &LeaseRecord::default(),
        LeaseRequest::acquire("a", TTL),
        t(0),
    );
    rec.state.generation = u64::MAX;
    for req in [
        LeaseRequest::renew("a", TTL),
        LeaseRequest::acquire("a", TTL),
        LeaseRequest::release("a"),
    ] {
        let r = apply(&rec, &req, t(1));
        assert_eq!(
            r,
            Err(LeaseRequestError::GenerationExhausted),
            "{:?} at generation u64::MAX",
            req.op
        );
    }
    // A read-only answer (release by a non-holder) needs no new generation.
    assert!(apply(&rec, &LeaseRequest::release("b"), t(1)).is_ok());
}

#[test]
fn the_floor_moves_at_most_max_floor_jump_above_the_highest_epoch() {
    // Highest epoch is max(epoch, floor).
    let rec = released_at(10, 40);
    assert_eq!(
        raise_epoch_floor(&rec, 40 + MAX_FLOOR_JUMP)
            .unwrap()
            .epoch_floor,
        40 + MAX_FLOOR_JUMP
    );
    assert_eq!(
        raise_epoch_floor(&rec, 40 + MAX_FLOOR_JUMP + 1),
        Err(FloorError::TooFar {
            requested: 40 + MAX_FLOOR_JUMP + 1,
            highest: 40,
        })
    );
    let rec = released_at(50, 40);
    assert_eq!(
        raise_epoch_floor(&rec, 50 + MAX_FLOOR_JUMP)
            .unwrap()
            .epoch_floor,
        50 + MAX_FLOOR_JUMP
    );
    for far in [50 + MAX_FLOOR_JUMP + 1, u64::MAX - 1, u64::MAX] {
        let e = raise_epoch_floor(&rec, far).unwrap_err();
        assert_eq!(e.code(), "epoch_floor_too_far", "{far}");
        assert!(e.to_string().contains("more than"), "{e}");
    }
    // At or below the highest epoch: a no-op, never an error, never lowered.
    for low in [0, 40, 49, 50] {
        assert_eq!(raise_epoch_floor(&rec, low), Ok(rec.clone()), "{low}");
    }
}

#[test]
fn a_floor_that_would_leave_no_room_is_refused_at_the_boundary() {
    let near = released_at(MAX_EPOCH_FLOOR - 5, 0);
    assert_eq!(
        raise_epoch_floor(&near, MAX_EPOCH_FLOOR)
            .unwrap()
            .epoch_floor,
        MAX_EPOCH_FLOOR
    );
    assert_eq!(
        raise_epoch_floor(&near, MAX_EPOCH_FLOOR + 1),
        Err(FloorError::NoRoom {
            requested: MAX_EPOCH_FLOOR + 1
        })
    );
    // Above the limit already (epochs granted there one by one): any raise is refused, the
    // grants go on until the last epoch and then stop.
    let top = released_at(u64::MAX - 2, 0);
    for f in [u64::MAX - 1, u64::MAX] {
        assert_eq!(
            raise_epoch_floor(&top, f).unwrap_err().code(),
            "epoch_floor_no_room"
        );
    }
    let rec = granted(&top, LeaseRequest::acquire("a", TTL), t(0));
    assert_eq!(rec.state.epoch, u64::MAX - 1);
}

#[test]
fn epochs_strictly_increase_up_to_the_last_one_and_never_repeat() {
    let mut rec = released_at(u64::MAX - 4, 0);
    let mut seen = vec![rec.state.epoch];
    for i in 0..10 {
        let holder = if i % 2 == 0 { "a" } else { "b" };
        match apply(&rec, &LeaseRequest::acquire(holder, TTL), t(i)) {
            Ok(a) => {
                let e = a.outcome.unwrap().epoch;
                assert!(e > *seen.last().unwrap());
                seen.push(e);
                rec = granted(&a.record, LeaseRequest::release(holder), t(i));
            }
            Err(e) => assert!(e.is_exhausted()),
        }
    }
    assert_eq!(seen.last(), Some(&u64::MAX));
    assert_eq!(seen.len(), 5, "{seen:?}");
}
