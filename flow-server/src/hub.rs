//! The hub: flow id → flow (materialised state + replay ring + wake-up channel), and the
//! subscription cursor that turns them into an SSE stream.
//!
//! # Concurrency
//! Each flow has one `RwLock` over its state and ring. An append takes it for writing just long
//! enough to apply the message, assign the seq and push the pre-encoded frame; it then bumps a
//! `watch` version. Nothing on the ingest path waits for a subscriber.
//!
//! A subscriber holds no queue of its own: it holds a **cursor** (the seq of the last frame it was
//! given) and reads the ring after that cursor whenever the version moves. Frames are encoded
//! once per event and shared (`Bytes`), so fan-out costs a copy of the new frames per subscriber
//! per wake-up, and a burst is delivered as one chunk. The ring is the bounded queue: a
//! subscriber whose cursor falls out of it (or more than `lag_limit` behind) is resynchronised
//! with a fresh `snapshot` frame and continues from that snapshot's seq; one that has to be
//! resynchronised `max_resyncs` times in a row without catching up is closed.
//!
//! # Snapshot-then-tail
//! A new subscriber gets a snapshot stamped with seq S (encoded under the flow's read lock, so
//! it is exactly the state after event S) and its cursor starts at S: the first live frame is
//! S+1, with no gap and no duplicate. With a `Last-Event-ID` c inside the ring the cursor starts
//! at c and no snapshot is sent.
//!
//! # Seqs and incarnations
//! Seqs are contiguous inside one incarnation of a flow and incarnations occupy disjoint ranges:
//! a new incarnation (after DELETE or eviction, or after a restart of the memory backend) starts
//! above every seq issued before. The memory backend takes the origin from a clock in
//! microseconds (`max(now_us, highest seq issued + 1)`); the JetStream backend uses the stream
//! sequence of the incarnation's first message minus one. A `Last-Event-ID` from another
//! incarnation therefore falls outside the ring and gets a snapshot; the SSE id stays a plain
//! integer, as upstream clients expect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use contract::FlowMessage;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::ring::Ring;
use crate::sse;
use crate::state::{FlowState, LimitExceeded, StateLimits};

/// Most bytes one delivery chunk carries; a longer backlog is sent as several chunks.
const MAX_CHUNK: usize = 256 * 1024;

/// Bounds and policies of the hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events kept per flow for replay.
    pub ring_capacity: usize,
    /// Bytes kept per flow for replay.
    pub ring_max_bytes: usize,
    /// Node and relationship bounds per flow.
    pub limits: StateLimits,
    /// Flows held at once.
    pub max_flows: usize,
    /// A subscriber further behind than this many events is resynchronised (≤ ring capacity).
    pub lag_limit: u64,
    /// Consecutive resynchronisations after which a subscriber is closed.
    pub max_resyncs: u32,
    /// Seq origins come from the event log (JetStream), not from the clock: a flow created by
    /// a subscriber has no incarnation until its first event.
    pub log_origin: bool,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ring_capacity: 4096,
            ring_max_bytes: 64 << 20,
            limits: StateLimits::default(),
            max_flows: 10_000,
            lag_limit: 4096,
            max_resyncs: 3,
            log_origin: false,
        }
    }
}

/// Why an append was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The flow would exceed a per-flow bound.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// The hub holds `max_flows` flows and none of them is idle.
    #[error("the server holds {0} flows, its limit, and none is idle")]
    TooManyFlows(usize),
}

/// A snapshot of one flow at one seq, encoded once and shared.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The seq the snapshot reflects (0 for a flow that never had an event on a log backend).
    pub seq: u64,
    /// True when the flow has no instance, node or relationship.
    pub empty: bool,
    /// The snapshot FlowMessage as JSON.
    pub json: Bytes,
    /// The SSE frame `event: snapshot\nid: <seq>\ndata: <json>\n\n`.
    pub frame: Bytes,
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    // A poisoned lock means a panic elsewhere; the data is still consistent per operation
    // (every mutation is checked before it starts), so keep serving.
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

// === impl SeqClock ===

/// Origins for new incarnations on the memory backend: above every seq issued before, and
/// (through the clock) above what a previous process issued, as long as it averaged fewer
/// than a million events per second.
#[derive(Debug, Default)]
struct SeqClock {
    high: AtomicU64,
}

impl SeqClock {
    fn origin(&self) -> u64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2))
            .unwrap_or(0);
        let mut cur = self.high.load(Ordering::Acquire);
        loop {
            let origin = now.max(cur + 1);
            match self
                .high
                .compare_exchange(cur, origin, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return origin,
                Err(seen) => cur = seen,
            }
        }
    }

    fn observe(&self, seq: u64) {
        self.high.fetch_max(seq, Ordering::AcqRel);
    }
}

// === impl Flow ===

/// One flow incarnation.
#[derive(Debug)]
pub struct Flow {
    id: Arc<str>,
    inner: RwLock<FlowInner>,
    /// Bumped after every append and on close; subscribers wait on it.
    version: watch::Sender<u64>,
    /// The last encoded snapshot; reused while the seq has not moved (reconnect storms and
    /// resyncs at the same seq encode once).
    snapshot: Mutex<Option<Snapshot>>,
    /// Open subscriptions. Changed only while the hub's map lock is held for reading, so the
    /// idle sweeper (which holds it for writing) never evicts a flow someone is attaching to.
    subscribers: AtomicUsize,
    /// Milliseconds since the hub started, at the last append or detach.
    touched: AtomicU64,
}

#[derive(Debug)]
struct FlowInner {
    state: FlowState,
    ring: Ring<Bytes>,
    /// None until the first event on a log backend.
    origin: Option<u64>,
    /// Set by DELETE or eviction; every subscriber ends.
    closed: bool,
    /// Log position (JetStream stream sequence) of the flow's last message, for guarded eviction.
    log_seq: u64,
}

impl Flow {
    fn new(id: Arc<str>, origin: Option<u64>, cfg: &HubConfig, now_ms: u64) -> Self {
        Self {
            id,
            inner: RwLock::new(FlowInner {
                state: FlowState::default(),
                ring: Ring::new(origin.unwrap_or(0), cfg.ring_capacity, cfg.ring_max_bytes),
                origin,
                closed: false,
                log_seq: 0,
            }),
            version: watch::Sender::new(0),
            snapshot: Mutex::new(None),
            subscribers: AtomicUsize::new(0),
            touched: AtomicU64::new(now_ms),
        }
    }

    /// The flow id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The seq of the last event (the origin when none; 0 before the first event on a log
    /// backend).
    pub fn seq(&self) -> u64 {
        read(&self.inner).ring.last_seq()
    }

    /// The current snapshot, from the cache when the seq has not moved.
    pub fn snapshot(&self, metrics: &Metrics) -> Snapshot {
        let inner = read(&self.inner);
        let seq = inner.ring.last_seq();
        {
            let cache = lock(&self.snapshot);
            if let Some(s) = cache.as_ref()
                && s.seq == seq
            {
                return s.clone();
            }
        }
        let json = Bytes::from(inner.state.encode_snapshot(&self.id));
        let snap = Snapshot {
            seq,
            empty: inner.state.is_empty(),
            frame: sse::frame("snapshot", seq, &json),
            json,
        };
        drop(inner);
        metrics.snapshots_encoded.inc();
        let mut cache = lock(&self.snapshot);
        if cache.as_ref().is_none_or(|c| c.seq < snap.seq) {
            *cache = Some(snap.clone());
        }
        snap
    }

    fn close(&self) {
        write(&self.inner).closed = true;
        self.version.send_modify(|v| *v += 1);
    }
}

// === impl Hub ===

/// All flows of this server.
#[derive(Debug)]
pub struct Hub {
    cfg: HubConfig,
    flows: RwLock<HashMap<Arc<str>, Arc<Flow>>>,
    clock: SeqClock,
    started: Instant,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub.
    pub fn new(cfg: HubConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            cfg,
            flows: RwLock::new(HashMap::new()),
            clock: SeqClock::default(),
            started: Instant::now(),
            metrics,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.cfg
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The flow, if held.
    pub fn get(&self, id: &str) -> Option<Arc<Flow>> {
        read(&self.flows).get(id).cloned()
    }

    /// Flows held.
    pub fn len(&self) -> usize {
        read(&self.flows).len()
    }

    /// True when no flow is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when a new flow could be created now (memory: room, or an idle flow to evict).
    pub fn has_room_for(&self, id: &str) -> bool {
        let flows = read(&self.flows);
        flows.contains_key(id)
            || flows.len() < self.cfg.max_flows
            || flows
                .values()
                .any(|f| f.subscribers.load(Ordering::Acquire) == 0)
    }

    /// Gets or creates the flow. `subscribe` counts a subscriber before the map lock is
    /// released. `force` creates even at the flow bound (log backends must apply every event).
    fn get_or_create(
        &self,
        id: &str,
        subscribe: bool,
        force: bool,
    ) -> Result<Arc<Flow>, AppendError> {
        {
            let flows = read(&self.flows);
            if let Some(f) = flows.get(id) {
                if subscribe {
                    f.subscribers.fetch_add(1, Ordering::AcqRel);
                }
                return Ok(f.clone());
            }
        }
        let mut flows = write(&self.flows);
        if let Some(f) = flows.get(id) {
            if subscribe {
                f.subscribers.fetch_add(1, Ordering::AcqRel);
            }
            return Ok(f.clone());
        }
        if flows.len() >= self.cfg.max_flows {
            // Make room: the least recently touched flow nobody watches.
            let victim = flows
                .iter()
                .filter(|(_, f)| f.subscribers.load(Ordering::Acquire) == 0)
                .min_by_key(|(_, f)| f.touched.load(Ordering::Acquire))
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    if let Some(f) = flows.remove(&k) {
                        f.close();
                        self.metrics.evicted.inc();
                        tracing::info!(flow = %k, "flow evicted to make room");
                    }
                }
                None if force => {}
                None => return Err(AppendError::TooManyFlows(self.cfg.max_flows)),
            }
        }
        let origin = (!self.cfg.log_origin).then(|| self.clock.origin());
        let id: Arc<str> = Arc::from(id);
        let flow = Arc::new(Flow::new(id.clone(), origin, &self.cfg, self.now_ms()));
        if subscribe {
            flow.subscribers.fetch_add(1, Ordering::AcqRel);
        }
        flows.insert(id, flow.clone());
        self.metrics
            .flows
            .set(i64::try_from(flows.len()).unwrap_or(i64::MAX));
        Ok(flow)
    }

    /// Applies an event to the flow (created if needed) and returns its seq. `json` is the
    /// message as compact JSON (the SSE `data:`). `log_seq` is the event's position in the
    /// shared log (JetStream); it fixes the origin of a new incarnation.
    pub fn append(
        &self,
        id: &str,
        msg: FlowMessage,
        json: &[u8],
        log_seq: Option<u64>,
    ) -> Result<u64, AppendError> {
        let kind = msg.kind().as_str();
        // A DELETE may close the flow between lookup and lock; then start a new incarnation.
        let mut msg = Some(msg);
        for _ in 0..3 {
            let flow = self.get_or_create(id, false, log_seq.is_some())?;
            let mut inner = write(&flow.inner);
            if inner.closed {
                continue;
            }
            let Some(m) = msg.take() else { break };
            if inner.origin.is_none() {
                let origin = log_seq.map_or_else(|| self.clock.origin(), |s| s.saturating_sub(1));
                inner.origin = Some(origin);
                inner.ring = Ring::new(origin, self.cfg.ring_capacity, self.cfg.ring_max_bytes);
            }
            inner.state.apply(m, self.cfg.limits)?;
            let seq = inner.ring.last_seq() + 1;
            let frame = sse::frame(kind, seq, json);
            let weight = frame.len();
            let pushed = inner.ring.push(frame, weight);
            debug_assert_eq!(pushed, seq);
            if let Some(l) = log_seq {
                inner.log_seq = l;
            }
            drop(inner);
            self.clock.observe(seq);
            flow.touched.store(self.now_ms(), Ordering::Release);
            flow.version.send_replace(seq);
            self.metrics.ingested(kind);
            return Ok(seq);
        }
        Err(AppendError::TooManyFlows(self.cfg.max_flows))
    }

    /// Removes the flow and ends every stream on it. Returns whether it was held.
    pub fn remove(&self, id: &str) -> bool {
        let removed = {
            let mut flows = write(&self.flows);
            let f = flows.remove(id);
            self.metrics
                .flows
                .set(i64::try_from(flows.len()).unwrap_or(i64::MAX));
            f
        };
        match removed {
            Some(f) => {
                f.close();
                true
            }
            None => false,
        }
    }

    /// Flows idle for longer than `ttl` (no subscriber, no event, no detach). Flows without an
    /// incarnation, and every idle flow when `remove_all` is set, are removed here; the others
    /// are returned with their log position, for a log backend to delete cluster-wide.
    pub fn evict_idle(&self, ttl: Duration, remove_all: bool) -> Vec<(Arc<str>, u64)> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let now = self.now_ms();
        let mut flows = write(&self.flows);
        let idle: Vec<Arc<str>> = flows
            .iter()
            .filter(|(_, f)| {
                f.subscribers.load(Ordering::Acquire) == 0
                    && now.saturating_sub(f.touched.load(Ordering::Acquire)) >= ttl_ms
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut left = Vec::new();
        for k in idle {
            let Some(f) = flows.get(&k) else { continue };
            let (incarnated, log_seq) = {
                let inner = read(&f.inner);
                (inner.origin.is_some(), inner.log_seq)
            };
            if remove_all || !incarnated {
                if let Some(f) = flows.remove(&k) {
                    f.close();
                    self.metrics.evicted.inc();
                    tracing::info!(flow = %k, "idle flow evicted");
                }
            } else {
                left.push((k, log_seq));
            }
        }
        self.metrics
            .flows
            .set(i64::try_from(flows.len()).unwrap_or(i64::MAX));
        left
    }

    /// Opens a subscription: a snapshot (or, with a usable `last_event_id`, the replay after
    /// it) followed by every later event. The flow is created empty if unknown, so a client
    /// may watch a flow before its first event.
    pub fn subscribe(
        &self,
        id: &str,
        last_event_id: Option<u64>,
    ) -> Result<Subscription, AppendError> {
        let flow = self.get_or_create(id, true, false)?;
        self.metrics.subscribers.inc();
        let mut sub = Subscription {
            rx: flow.version.subscribe(),
            flow,
            metrics: self.metrics.clone(),
            cursor: 0,
            pre_incarnation: false,
            pending_snapshot: None,
            resyncs_in_row: 0,
            lag_limit: self.cfg.lag_limit.max(1),
            max_resyncs: self.cfg.max_resyncs,
            replayed: false,
            hub_started: self.started,
        };
        let resume = {
            let inner = read(&sub.flow.inner);
            match (inner.origin, last_event_id) {
                // Nothing happened yet and the client saw nothing: nothing to send.
                (None, Some(0)) => Some(0),
                (Some(_), Some(c))
                    if inner.ring.lag(c) <= sub.lag_limit
                        && inner.ring.replay_after(c).is_some() =>
                {
                    Some(c)
                }
                _ => None,
            }
        };
        match resume {
            Some(c) => {
                sub.cursor = c;
                sub.pre_incarnation = c == 0;
                sub.replayed = true;
                self.metrics.stream_opened("replay");
            }
            None => {
                let snap = sub.flow.snapshot(&self.metrics);
                sub.cursor = snap.seq;
                sub.pre_incarnation = read(&sub.flow.inner).origin.is_none() && snap.seq == 0;
                sub.pending_snapshot = Some(snap.frame);
                self.metrics.stream_opened("snapshot");
            }
        }
        Ok(sub)
    }
}

// === impl Subscription ===

/// What [`Subscription::take`] found.
#[derive(Debug)]
pub enum Take {
    /// Frames to write, and how many events they carry.
    Frames(Bytes, u64),
    /// Nothing new; wait for [`Subscription::changed`].
    Idle,
    /// The flow was deleted or evicted: end the stream.
    Closed,
    /// The subscriber fell behind too often: end the stream (the client reconnects).
    TooSlow,
}

/// One subscriber's position on one flow.
#[derive(Debug)]
pub struct Subscription {
    flow: Arc<Flow>,
    rx: watch::Receiver<u64>,
    metrics: Arc<Metrics>,
    /// Seq of the last event given to the client.
    cursor: u64,
    /// The client's cursor is the "nothing yet" 0 of a flow without incarnation: once the
    /// first event fixes the origin, that 0 means "just before the first event".
    pre_incarnation: bool,
    /// The opening snapshot frame, not yet taken.
    pending_snapshot: Option<Bytes>,
    resyncs_in_row: u32,
    lag_limit: u64,
    max_resyncs: u32,
    replayed: bool,
    /// The hub's start, the zero of `Flow::touched`.
    hub_started: Instant,
}

impl Subscription {
    /// True when the stream resumed from the client's `Last-Event-ID` (no opening snapshot).
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// Seq of the last event given to the client.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next frames after the cursor, without waiting. Marks the wake-up channel as seen
    /// first, so an event appended after this call always makes [`Subscription::changed`]
    /// return.
    pub fn take(&mut self) -> Take {
        self.rx.borrow_and_update();
        if let Some(frame) = self.pending_snapshot.take() {
            self.metrics.deliveries.inc();
            return Take::Frames(frame, 1);
        }
        let flow = self.flow.clone();
        let inner = read(&flow.inner);
        if inner.closed {
            return Take::Closed;
        }
        if self.pre_incarnation
            && let Some(origin) = inner.origin
        {
            self.cursor = origin;
            self.pre_incarnation = false;
        }
        let ring = &inner.ring;
        if self.cursor == ring.last_seq() {
            self.resyncs_in_row = 0;
            return Take::Idle;
        }
        let servable =
            ring.lag(self.cursor) <= self.lag_limit && ring.replay_after(self.cursor).is_some();
        if !servable {
            drop(inner);
            return self.resync();
        }
        // One new frame (the live case) is shared as is; a backlog is copied into one chunk.
        let mut single: Option<Bytes> = None;
        let mut out = BytesMut::new();
        let mut n = 0;
        let mut last = self.cursor;
        for (seq, frame) in ring.replay_after(self.cursor).into_iter().flatten() {
            if n == 0 {
                single = Some(frame.clone());
            } else {
                if n == 1
                    && let Some(first) = &single
                {
                    out.extend_from_slice(first);
                }
                if out.len() + frame.len() > MAX_CHUNK {
                    break;
                }
                out.extend_from_slice(frame);
            }
            last = seq;
            n += 1;
        }
        drop(inner);
        self.cursor = last;
        self.metrics.deliveries.inc_by(n);
        match (n, single) {
            (1, Some(frame)) => Take::Frames(frame, 1),
            _ => Take::Frames(out.freeze(), n),
        }
    }

    fn resync(&mut self) -> Take {
        self.resyncs_in_row += 1;
        if self.resyncs_in_row > self.max_resyncs {
            self.metrics.slow_closed.inc();
            tracing::info!(flow = %self.flow.id, cursor = self.cursor, "slow subscriber closed");
            return Take::TooSlow;
        }
        let snap = self.flow.snapshot(&self.metrics);
        tracing::debug!(flow = %self.flow.id, from = self.cursor, to = snap.seq, "subscriber resynchronised");
        self.cursor = snap.seq;
        self.metrics.resyncs.inc();
        self.metrics.deliveries.inc();
        Take::Frames(snap.frame, 1)
    }

    /// Waits until the flow changed (an event, or a close) since the last [`Subscription::take`].
    pub async fn changed(&mut self) {
        // The sender lives in the flow, which this subscription keeps alive: never an error.
        let _ = self.rx.changed().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.flow.subscribers.fetch_sub(1, Ordering::AcqRel);
        let ms = u64::try_from(self.hub_started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.flow.touched.fetch_max(ms, Ordering::AcqRel);
        self.metrics.subscribers.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(cfg: HubConfig) -> Hub {
        Hub::new(cfg, Arc::new(Metrics::new()))
    }

    fn upsert(flow: &str, node: &str) -> (FlowMessage, Vec<u8>) {
        let json = format!(
            r#"{{"type":"upsert-nodes","nodes":[{{"id":"{node}","flowId":"{flow}","label":"l","status":"running"}}]}}"#
        );
        (
            FlowMessage::decode(json.as_bytes()).unwrap(),
            json.into_bytes(),
        )
    }

    fn push(h: &Hub, flow: &str, node: &str) -> u64 {
        let (m, j) = upsert(flow, node);
        h.append(flow, m, &j, None).unwrap()
    }

    fn events(t: Take) -> Vec<sse::Event> {
        match t {
            Take::Frames(b, _) => sse::Parser::new().feed(&b),
            other => panic!("expected frames, got {other:?}"),
        }
    }

    #[test]
    fn seqs_are_strictly_increasing_and_contiguous_per_flow() {
        let h = hub(HubConfig::default());
        let a = push(&h, "f", "n1");
        let b = push(&h, "f", "n2");
        assert_eq!(b, a + 1);
    }

    #[test]
    fn subscribe_gives_a_snapshot_then_exactly_the_later_events() {
        let h = hub(HubConfig::default());
        let s1 = push(&h, "f", "n1");
        let mut sub = h.subscribe("f", None).unwrap();
        let s2 = push(&h, "f", "n2");
        let first = events(sub.take());
        assert_eq!(first[0].event, "snapshot");
        assert_eq!(first[0].seq(), Some(s1));
        let next = events(sub.take());
        assert_eq!(
            next.iter().map(|e| e.seq()).collect::<Vec<_>>(),
            vec![Some(s2)]
        );
        assert!(matches!(sub.take(), Take::Idle));
    }

    #[test]
    fn last_event_id_inside_the_ring_replays_without_snapshot() {
        let h = hub(HubConfig::default());
        let s1 = push(&h, "f", "n1");
        let s2 = push(&h, "f", "n2");
        let s3 = push(&h, "f", "n3");
        let mut sub = h.subscribe("f", Some(s1)).unwrap();
        assert!(sub.replayed());
        let ev = events(sub.take());
        assert_eq!(
            ev.iter().map(|e| e.seq()).collect::<Vec<_>>(),
            vec![Some(s2), Some(s3)]
        );
    }

    #[test]
    fn last_event_id_of_a_deleted_incarnation_gets_a_snapshot() {
        let h = hub(HubConfig::default());
        let old = push(&h, "f", "n1");
        assert!(h.remove("f"));
        let new = push(&h, "f", "n2");
        assert!(new > old + 1);
        let mut sub = h.subscribe("f", Some(old)).unwrap();
        assert!(!sub.replayed());
        let ev = events(sub.take());
        assert_eq!((ev[0].event.as_str(), ev[0].seq()), ("snapshot", Some(new)));
    }

    #[test]
    fn a_subscriber_that_fell_out_of_the_ring_is_resynchronised() {
        let h = hub(HubConfig {
            ring_capacity: 4,
            lag_limit: 4,
            ..HubConfig::default()
        });
        push(&h, "f", "n0");
        let mut sub = h.subscribe("f", None).unwrap();
        let _ = sub.take();
        let mut last = 0;
        for i in 0..10 {
            last = push(&h, "f", &format!("n{i}"));
        }
        let ev = events(sub.take());
        assert_eq!(
            (ev[0].event.as_str(), ev[0].seq()),
            ("snapshot", Some(last))
        );
        assert_eq!(h.metrics().resyncs.get(), 1);
        assert!(matches!(sub.take(), Take::Idle));
    }

    #[test]
    fn repeated_overflow_closes_the_subscriber() {
        let h = hub(HubConfig {
            ring_capacity: 2,
            lag_limit: 2,
            max_resyncs: 1,
            ..HubConfig::default()
        });
        let mut sub = h.subscribe("f", None).unwrap();
        let _ = sub.take();
        for round in 0..2 {
            for i in 0..5 {
                push(&h, "f", &format!("n{round}-{i}"));
            }
            let t = sub.take();
            if round == 0 {
                assert!(matches!(t, Take::Frames(..)));
            } else {
                assert!(matches!(t, Take::TooSlow), "{t:?}");
            }
        }
    }

    #[test]
    fn delete_closes_subscriptions() {
        let h = hub(HubConfig::default());
        push(&h, "f", "n");
        let mut sub = h.subscribe("f", None).unwrap();
        let _ = sub.take();
        h.remove("f");
        assert!(matches!(sub.take(), Take::Closed));
    }

    #[test]
    fn log_origin_flows_start_at_the_log_position_and_keep_early_subscribers() {
        let h = hub(HubConfig {
            log_origin: true,
            ..HubConfig::default()
        });
        let mut sub = h.subscribe("f", None).unwrap();
        let ev = events(sub.take());
        assert_eq!((ev[0].event.as_str(), ev[0].seq()), ("snapshot", Some(0)));
        let (m, j) = upsert("f", "n");
        assert_eq!(h.append("f", m, &j, Some(41)).unwrap(), 41);
        let ev = events(sub.take());
        assert_eq!(
            (ev[0].event.as_str(), ev[0].seq()),
            ("upsert-nodes", Some(41))
        );
    }

    #[test]
    fn the_flow_bound_evicts_an_idle_flow_but_never_a_watched_one() {
        let h = hub(HubConfig {
            max_flows: 2,
            ..HubConfig::default()
        });
        let _watch = h.subscribe("a", None).unwrap();
        push(&h, "b", "n");
        push(&h, "c", "n");
        assert!(h.get("a").is_some() && h.get("b").is_none() && h.get("c").is_some());
        let _watch_c = h.subscribe("c", None).unwrap();
        let (m, j) = upsert("d", "n");
        assert_eq!(
            h.append("d", m, &j, None).unwrap_err(),
            AppendError::TooManyFlows(2)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_flows_are_evicted_after_the_ttl() {
        let h = hub(HubConfig::default());
        push(&h, "f", "n");
        assert!(h.evict_idle(Duration::from_secs(60), true).is_empty());
        assert!(h.get("f").is_some());
        tokio::time::advance(Duration::from_secs(61)).await;
        h.evict_idle(Duration::from_secs(60), true);
        assert!(h.get("f").is_none());
    }
}
