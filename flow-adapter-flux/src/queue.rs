//! A bounded, coalescing work queue between the watch and the delivery.
//!
//! One entry per key (a node id, a relationship key, the flow): pushing a key that is already
//! queued replaces its value in place (latest state wins, the position is kept), so a burst of
//! changes to one release costs one POST. A new key waits for room when the queue holds
//! `capacity` keys (backpressure on the watch instead of unbounded memory). The single consumer
//! takes batches in FIFO order of first insertion.
//!
//! [`CoalescingQueue::requeue`] gives back items whose delivery failed, without overwriting a
//! newer value pushed meanwhile; it may take the queue over `capacity` by at most one batch.
//! [`CoalescingQueue::request_resync`] asks the consumer to send its whole delivered state
//! again (after a re-list of the API server, or periodically).

use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indexmap::IndexMap;
use indexmap::map::Entry;
use tokio::sync::Notify;

/// See the module docs.
#[derive(Debug)]
pub struct CoalescingQueue<K, V> {
    items: Mutex<IndexMap<K, V>>,
    capacity: usize,
    /// Wakes the consumer (one permit is stored when nobody waits).
    filled: Notify,
    /// Wakes producers waiting for room.
    drained: Notify,
    /// Set by [`CoalescingQueue::request_resync`], taken by the consumer.
    resync: AtomicBool,
}

impl<K: Hash + Eq + Clone, V> CoalescingQueue<K, V> {
    /// An empty queue holding at most `capacity` keys (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(IndexMap::new()),
            capacity: capacity.max(1),
            filled: Notify::new(),
            drained: Notify::new(),
            resync: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, IndexMap<K, V>> {
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queued keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues `value` under `key`: replaces a queued value at once, or waits for room.
    pub async fn push(&self, key: K, value: V) {
        let mut pending = Some((key, value));
        loop {
            let room = self.drained.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Some((k, v)) = pending.take() {
                match self.try_push(k, v) {
                    Ok(()) => return,
                    Err(back) => pending = Some(back),
                }
            }
            room.await;
        }
    }

    /// Queues without waiting; gives the item back when the key is new and the queue is full.
    pub fn try_push(&self, key: K, value: V) -> Result<(), (K, V)> {
        {
            let mut items = self.lock();
            let len = items.len();
            match items.entry(key) {
                Entry::Occupied(mut e) => {
                    e.insert(value);
                }
                Entry::Vacant(e) => {
                    if len >= self.capacity {
                        return Err((e.into_key(), value));
                    }
                    e.insert(value);
                }
            }
        }
        self.filled.notify_one();
        Ok(())
    }

    /// Gives back items that could not be delivered; a key queued meanwhile keeps its newer
    /// value. Never waits.
    pub fn requeue(&self, back: impl IntoIterator<Item = (K, V)>) {
        let mut any = false;
        {
            let mut items = self.lock();
            for (k, v) in back {
                if let Entry::Vacant(e) = items.entry(k) {
                    e.insert(v);
                    any = true;
                }
            }
        }
        if any {
            self.filled.notify_one();
        }
    }

    /// Waits until something is queued, then takes up to `max` items in FIFO order. Returns an
    /// empty batch when a resync was requested (see [`CoalescingQueue::take_resync`]).
    pub async fn next_batch(&self, max: usize) -> Vec<(K, V)> {
        loop {
            let filled = self.filled.notified();
            let batch = self.try_batch(max);
            if !batch.is_empty() || self.resync.load(Ordering::Acquire) {
                return batch;
            }
            filled.await;
        }
    }

    /// Takes up to `max` items without waiting.
    pub fn try_batch(&self, max: usize) -> Vec<(K, V)> {
        let batch: Vec<(K, V)> = {
            let mut items = self.lock();
            let n = max.max(1).min(items.len());
            items.drain(..n).collect()
        };
        if !batch.is_empty() {
            self.drained.notify_waiters();
        }
        batch
    }

    /// Asks the consumer to re-send everything it delivered.
    pub fn request_resync(&self) {
        self.resync.store(true, Ordering::Release);
        self.filled.notify_one();
    }

    /// Takes the resync request (consumer side).
    pub fn take_resync(&self) -> bool {
        self.resync.swap(false, Ordering::AcqRel)
    }

    /// Wakes the consumer without queueing anything (it then checks the resync flag).
    pub fn wake(&self) {
        self.filled.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_on_one_key_coalesces_to_its_latest_value() {
        let q = CoalescingQueue::new(4);
        for i in 0..1000 {
            q.push("a", i).await;
        }
        q.push("b", 1).await;
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_batch(10).await, vec![("a", 999), ("b", 1)]);
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_new_keys_but_replaces_queued_ones() {
        let q = CoalescingQueue::new(2);
        q.push(1, "x").await;
        q.push(2, "x").await;
        assert_eq!(q.try_push(3, "x"), Err((3, "x")));
        assert_eq!(q.try_push(1, "y"), Ok(()));
        assert_eq!(q.try_batch(1), vec![(1, "y")]);
        assert_eq!(q.try_push(3, "x"), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_producer_gets_in_once_the_consumer_takes_a_batch() {
        let q = std::sync::Arc::new(CoalescingQueue::new(1));
        q.push(1, ()).await;
        let q2 = q.clone();
        let producer = tokio::spawn(async move { q2.push(2, ()).await });
        tokio::task::yield_now().await;
        assert!(!producer.is_finished());
        assert_eq!(q.next_batch(5).await, vec![(1, ())]);
        producer.await.unwrap();
        assert_eq!(q.next_batch(5).await, vec![(2, ())]);
    }

    #[tokio::test]
    async fn requeue_never_overwrites_a_newer_value() {
        let q = CoalescingQueue::new(8);
        q.push("a", 2).await;
        q.requeue([("a", 1), ("b", 1)]);
        assert_eq!(q.try_batch(10), vec![("a", 2), ("b", 1)]);
    }

    #[tokio::test]
    async fn a_resync_request_wakes_the_consumer_once() {
        let q: CoalescingQueue<u8, u8> = CoalescingQueue::new(1);
        q.request_resync();
        assert!(q.take_resync());
        assert!(!q.take_resync());
    }
}
