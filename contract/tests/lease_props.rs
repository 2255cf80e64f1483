//! Property test of the lease transition over random interleavings of acquire, renew, release,
//! retries with reused request ids, stale and fresh `If-Match` generations, and clock advances.
//!
//! Checked after every operation:
//! - at most one holder believes it holds an unexpired lease (a holder's belief is the expiry of
//!   the last grant it was answered, cleared by its own release);
//! - a holder change happens only after the previous lease expired or was released;
//! - every new grant's epoch is greater than every earlier epoch; renewals keep it;
//! - a lease is never shortened; the generation bumps on every change and only then;
//! - a replayed request id gets the first answer (or `superseded` when that grant is gone).

use contract::lease::{ConflictReason, LeaseOutcome, REPLAY_MEMORY};
use contract::{LeaseOp, LeaseRecord, LeaseRequest, Millis, apply};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use std::collections::HashMap;

const HOLDERS: [&str; 3] = ["region-a", "region-b", "region-c"];
const CASES: u32 = 200;
const STEPS: usize = 600;

#[derive(Debug, Clone)]
struct Step {
    holder: usize,
    op: u8,
    ttl: i64,
    advance: i64,
    if_match: u8,
    replay: Option<usize>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0..HOLDERS.len(),
        0u8..3,
        1i64..=40,
        prop_oneof![3 => 0i64..=3, 1 => 4i64..=45],
        0u8..3,
        prop::option::weighted(0.15, 0usize..64),
    )
        .prop_map(|(holder, op, ttl, advance, if_match, replay)| Step {
            holder,
            op,
            ttl,
            advance,
            if_match,
            replay,
        })
}

/// Runs one interleaving; returns the number of operations applied.
fn run(steps: &[Step]) -> Result<u64, TestCaseError> {
    let mut rec = LeaseRecord::default();
    let mut now = Millis(0);
    let mut belief: HashMap<usize, Millis> = HashMap::new();
    let mut seen_gen: HashMap<usize, u64> = HashMap::new();
    // Every fresh request with its first answer, in order; replays pick from the last
    // REPLAY_MEMORY (the witness remembers that many request ids per slot).
    let mut sent: Vec<(usize, LeaseRequest, LeaseOutcome)> = Vec::new();
    let mut max_epoch = 0u64;
    let mut ops = 0u64;

    for (i, s) in steps.iter().enumerate() {
        now = now.plus(s.advance);
        let h = HOLDERS[s.holder];
        let window = &sent[sent.len().saturating_sub(REPLAY_MEMORY)..];
        let mine: Vec<_> = window.iter().filter(|(who, ..)| *who == s.holder).collect();
        let replay = s
            .replay
            .and_then(|k| mine.get(k % mine.len().max(1)))
            .map(|(_, r, o)| (r.clone(), o.clone()));
        let req = match &replay {
            Some((r, _)) => r.clone(),
            None => {
                let op = [LeaseOp::Acquire, LeaseOp::Renew, LeaseOp::Release][s.op as usize];
                let mut r = match op {
                    LeaseOp::Acquire => LeaseRequest::acquire(h, s.ttl),
                    LeaseOp::Renew => LeaseRequest::renew(h, s.ttl),
                    LeaseOp::Release => LeaseRequest::release(h),
                };
                r = r.request_id(format!("{h}-{i}"));
                match s.if_match {
                    0 => r,
                    1 => r.if_match(rec.state.generation),
                    _ => r.if_match(seen_gen.get(&s.holder).copied().unwrap_or(0)),
                }
            }
        };
        let prev = rec.state.clone();
        let a = apply(&rec, &req, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
        ops += 1;

        if let Some((_, first)) = &replay {
            prop_assert!(a.replayed && !a.changed, "step {i}: replay changed state");
            match (&a.outcome, first) {
                (Err(c), Ok(g)) if c.reason == ConflictReason::Superseded => {
                    prop_assert!(g.holder != prev.holder || g.epoch != prev.epoch);
                }
                (got, want) => prop_assert_eq!(got, want, "step {}: replay answer differs", i),
            }
        } else {
            sent.push((s.holder, req.clone(), a.outcome.clone()));
            if a.changed {
                prop_assert!(a.record.state.generation > prev.generation, "step {i}: gen");
            } else {
                prop_assert_eq!(a.record.state.generation, prev.generation);
            }
        }

        let cur = &a.record.state;
        match &a.outcome {
            Ok(st) => {
                seen_gen.insert(s.holder, st.generation);
                if !a.replayed && st.holder == h {
                    let new_grant = st.epoch != prev.epoch;
                    if new_grant {
                        prop_assert!(st.epoch > max_epoch, "step {i}: epoch reused");
                        prop_assert!(prev.is_free_at(now), "step {i}: granted before expiry");
                        prop_assert_eq!(st.acquired_at, Some(now));
                    } else {
                        prop_assert_eq!(&prev.holder, h, "step {}: epoch kept on handover", i);
                        prop_assert!(st.expires_at >= prev.expires_at, "step {i}: shortened");
                    }
                }
                if st.holder == h {
                    let e = st.expires_at.expect("held lease has an expiry");
                    let b = belief.entry(s.holder).or_insert(e);
                    *b = (*b).max(e);
                } else if req.op == LeaseOp::Release && prev.holder == h {
                    belief.remove(&s.holder);
                }
            }
            Err(c) => {
                seen_gen.insert(s.holder, c.current.generation);
            }
        }
        max_epoch = max_epoch.max(cur.epoch);

        let believers = belief.values().filter(|e| **e > now).count();
        prop_assert!(
            believers <= 1,
            "step {i}: {believers} holders believe they hold at {now:?}"
        );
        rec = a.record;
    }
    Ok(ops)
}

#[test]
fn lease_safety_over_random_interleavings() {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let total = std::cell::Cell::new(0u64);
    runner
        .run(&prop::collection::vec(step(), STEPS), |steps| {
            total.set(total.get() + run(&steps)?);
            Ok(())
        })
        .expect("lease invariants hold");
    let total = total.get();
    println!("lease property test: {total} operations over {CASES} interleavings, 0 violations");
    assert!(total >= 100_000, "only {total} operations generated");
}
