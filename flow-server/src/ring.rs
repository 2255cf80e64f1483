//! The per-flow replay ring: the last N events of one flow incarnation, indexed by seq.
//!
//! PURE: no async, no clock, no I/O. Seqs are assigned here and are contiguous inside one
//! incarnation: the ring starts at an `origin` (the seq a snapshot of the empty incarnation
//! carries) and the k-th pushed event gets `origin + k`. Because seqs are contiguous, looking a
//! cursor up is O(1) (`cursor - first_seq` indexes the deque); nothing is ever scanned
//! (spec/peers.md §3.3, Mercure #1382).
//!
//! Invariants:
//! - `floor <= last`; every seq in `(floor, last]` is retained, nothing at or below `floor` is.
//! - `replay_after(c)` is complete (no gap, no duplicate) exactly when `floor <= c <= last`;
//!   otherwise it is [`None`] and the caller must resynchronise the client with a snapshot.
//! - The ring is bounded twice: by event count (`capacity`) and by total weight in bytes
//!   (`max_bytes`), so a flow's memory is bounded whatever the event sizes are. The newest event
//!   is always kept, even when it alone is heavier than `max_bytes`.

use std::collections::VecDeque;

/// A bounded ring of `(seq, item)` with contiguous seqs.
#[derive(Debug, Clone)]
pub struct Ring<T> {
    /// Retained events, oldest first; `items[i]` has seq `floor + 1 + i`.
    items: VecDeque<(T, usize)>,
    /// Highest seq that is no longer (or never was) retained: the smallest valid cursor.
    floor: u64,
    /// Seq of the newest event (== `floor` when empty).
    last: u64,
    /// Most events kept.
    capacity: usize,
    /// Most bytes kept (sum of the weights given to `push`).
    max_bytes: usize,
    /// Sum of the weights of `items`.
    bytes: usize,
}

impl<T> Ring<T> {
    /// An empty ring whose first event will get `origin + 1`. `capacity` is at least 1.
    pub fn new(origin: u64, capacity: usize, max_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            items: VecDeque::with_capacity(capacity.min(64)),
            floor: origin,
            last: origin,
            capacity,
            max_bytes,
            bytes: 0,
        }
    }

    /// Appends an event of `weight` bytes and returns its seq (`last + 1`). Evicts the oldest
    /// events while the ring is over its count or byte bound (never the event just pushed).
    pub fn push(&mut self, item: T, weight: usize) -> u64 {
        self.last += 1;
        self.items.push_back((item, weight));
        self.bytes += weight;
        while self.items.len() > self.capacity
            || (self.bytes > self.max_bytes && self.items.len() > 1)
        {
            if let Some((_, w)) = self.items.pop_front() {
                self.bytes -= w;
                self.floor += 1;
            }
        }
        self.last
    }

    /// Seq of the newest event, or the origin when nothing was pushed.
    pub fn last_seq(&self) -> u64 {
        self.last
    }

    /// The smallest cursor that [`Ring::replay_after`] can serve.
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// Events retained.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when no event is retained.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Bytes retained.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Every event after `cursor`, oldest first, with its seq; [`None`] when the ring cannot
    /// serve the cursor without a gap (older than `floor`) or the cursor is unknown (newer than
    /// `last`, e.g. from another incarnation or another server).
    pub fn replay_after(&self, cursor: u64) -> Option<impl Iterator<Item = (u64, &T)> + '_> {
        if cursor < self.floor || cursor > self.last {
            return None;
        }
        // In range by the check above, and at most `items.len()`.
        let start = usize::try_from(cursor - self.floor).ok()?;
        let first = cursor + 1;
        Some(
            self.items
                .range(start..)
                .zip(first..)
                .map(|((item, _), seq)| (seq, item)),
        )
    }

    /// How many events are after `cursor` (0 when the cursor is at or past `last`).
    pub fn lag(&self, cursor: u64) -> u64 {
        self.last.saturating_sub(cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seqs<T>(r: &Ring<T>, c: u64) -> Option<Vec<u64>> {
        r.replay_after(c).map(|it| it.map(|(s, _)| s).collect())
    }

    #[test]
    fn seqs_start_after_the_origin_and_are_contiguous() {
        let mut r = Ring::new(100, 4, usize::MAX);
        assert_eq!(r.push("a", 1), 101);
        assert_eq!(r.push("b", 1), 102);
        assert_eq!(r.last_seq(), 102);
        assert_eq!(seqs(&r, 100), Some(vec![101, 102]));
        assert_eq!(seqs(&r, 101), Some(vec![102]));
        assert_eq!(seqs(&r, 102), Some(vec![]));
    }

    #[test]
    fn a_cursor_outside_the_ring_is_a_gap_not_a_silent_catch_up() {
        let mut r = Ring::new(0, 3, usize::MAX);
        for i in 0..10 {
            r.push(i, 1);
        }
        assert_eq!(r.floor(), 7);
        assert_eq!(seqs(&r, 6), None, "older than the ring");
        assert_eq!(seqs(&r, 7), Some(vec![8, 9, 10]));
        assert_eq!(seqs(&r, 11), None, "newer than anything issued");
    }

    #[test]
    fn the_byte_bound_evicts_but_keeps_the_newest_event() {
        let mut r = Ring::new(0, 100, 10);
        r.push("a", 4);
        r.push("b", 4);
        assert_eq!(r.len(), 2);
        r.push("c", 4);
        assert_eq!((r.len(), r.bytes(), r.floor()), (2, 8, 1));
        r.push("huge", 50);
        assert_eq!((r.len(), r.bytes(), r.floor()), (1, 50, 3));
        assert_eq!(seqs(&r, 3), Some(vec![4]));
    }

    #[test]
    fn a_cursor_from_an_older_incarnation_is_refused() {
        // Incarnations occupy disjoint seq ranges: a new one starts above every old seq.
        let mut old = Ring::new(1_000, 8, usize::MAX);
        let old_cursor = old.push((), 1);
        let new = Ring::<()>::new(5_000, 8, usize::MAX);
        assert_eq!(seqs(&new, old_cursor), None);
        assert_eq!(seqs(&new, 5_000), Some(vec![]));
    }

    proptest! {
        /// Whatever is pushed, every cursor in [floor, last] replays exactly (cursor, last] in
        /// order, and every other cursor is refused.
        #[test]
        fn replay_is_exact_or_refused(
            origin in 0u64..1_000_000,
            cap in 1usize..40,
            max_bytes in 1usize..400,
            weights in proptest::collection::vec(1usize..50, 0..200),
            probe in 0u64..300,
        ) {
            let mut r = Ring::new(origin, cap, max_bytes);
            for (i, w) in weights.iter().enumerate() {
                let seq = r.push(i, *w);
                prop_assert_eq!(seq, origin + i as u64 + 1);
            }
            prop_assert!(r.len() <= cap);
            prop_assert!(r.bytes() <= max_bytes || r.len() == 1);
            let cursor = origin.saturating_sub(10) + probe;
            match seqs(&r, cursor) {
                Some(s) => {
                    prop_assert!(cursor >= r.floor() && cursor <= r.last_seq());
                    let want: Vec<u64> = (cursor + 1..=r.last_seq()).collect();
                    prop_assert_eq!(s, want);
                }
                None => prop_assert!(cursor < r.floor() || cursor > r.last_seq()),
            }
            // Items match their seqs.
            if let Some(it) = r.replay_after(r.floor()) {
                for (seq, item) in it {
                    prop_assert_eq!(seq, origin + *item as u64 + 1);
                }
            }
        }
    }
}
