//! Test-only switches that put back, one at a time, a path to two writers or to a lost
//! acknowledged write that the core used to have. The model checker (`mc.rs`) and the
//! per-path tests turn one on and must then FAIL: that is the evidence that the fix is what
//! keeps the invariant. Compiled only for tests; the product has no such switches.

use std::cell::Cell;

/// A removed safety mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// Path 1: any fenced old primary acquires a free lease, whoever held it last.
    RetakeAnyFreeLease,
    /// Path 6: a switchover target that crashed after acquiring the lease and before promoting
    /// does not re-take its own lease (the system ends with two standbys).
    TargetForgetsOwnGrant,
    /// Path 7: a restarted controller keeps a writable primary unfenced while it re-acquires.
    RestartedHolderKeepsServing,
}

thread_local! {
    static ON: Cell<Option<Mutation>> = const { Cell::new(None) };
}

/// Turns `m` on for this thread (`None`: the real core).
pub fn set(m: Option<Mutation>) {
    ON.with(|c| c.set(m));
}

/// Whether `m` is on for this thread.
pub fn on(m: Mutation) -> bool {
    ON.with(|c| c.get() == Some(m))
}
