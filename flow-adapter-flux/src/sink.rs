//! Delivery to flow-server: batches from the coalescing queue become FlowMessage envelopes
//! POSTed to `{FLOW_SERVER_URL}/v1/flows/{FLOW_ID}/events` with a bearer token.
//!
//! - **Batching**: one batch is at most `batch_max` items; it becomes at most five envelopes, in
//!   this order: `upsert-flow`, `upsert-nodes`, `upsert-rels`, `delete-rels`, `delete-nodes`.
//! - **Delivered only after a 2xx**: the sink remembers the last value delivered per key and
//!   skips an item equal to it (dedup after success, never before).
//! - **Retry**: network errors, 5xx, 408 and 429 give the envelope's items (and the rest of the
//!   batch) back to the queue, where newer values win, then wait an exponential backoff with
//!   equal jitter (`Retry-After` is honoured, capped). Other 4xx are not retried: the items are
//!   dropped, logged and counted (`flow_adapter_events_failed{reason="rejected"}`).
//! - **Re-sync**: after a failure the first 2xx re-queues everything delivered so far (a
//!   flow-server that restarted lost its state); so does a resync request from the watch (a
//!   re-list) and, optionally, a periodic timer.
//!
//! The classification ([`classify`]), envelope building ([`envelopes`]) and backoff
//! ([`Backoff::delay`]) are pure and unit-tested here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use contract::{FlowMessage, FlowNode, RelPair};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{StatusCode, Url};

use crate::graph::{Change, Key, Op};
use crate::metrics::Metrics;
use crate::queue::CoalescingQueue;

/// The queue the watch fills and the sink drains.
pub type Queue = CoalescingQueue<Key, Op>;

/// A failed request to flow-server.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// `FLOW_SERVER_URL` is not an absolute http(s) URL.
    #[error("FLOW_SERVER_URL {0:?} is not an absolute http(s) URL")]
    BadUrl(String),
    /// Connection, TLS or timeout.
    #[error("request to flow-server failed: {0}")]
    Transport(#[source] reqwest::Error),
    /// A non-2xx answer.
    #[error("flow-server answered {code}: {body}")]
    Status {
        /// HTTP status.
        code: u16,
        /// The body, truncated.
        body: String,
        /// `Retry-After` in seconds, when sent.
        retry_after: Option<u64>,
    },
    /// A snapshot that is not JSON of the expected shape.
    #[error("flow-server sent an unreadable snapshot: {0}")]
    Snapshot(#[source] serde_json::Error),
    /// A snapshot whose nodes break the contract.
    #[error("flow-server sent invalid nodes: {0}")]
    Contract(#[source] contract::ContractError),
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: delivered.
    Delivered,
    /// Network error, 5xx, 408, 429: try again later.
    Retry,
    /// Any other status: drop, log and count.
    Reject,
}

/// Classifies an HTTP status (`None` = no answer: a network error).
pub fn classify(status: Option<u16>) -> Outcome {
    match status {
        None => Outcome::Retry,
        Some(s) if (200..300).contains(&s) => Outcome::Delivered,
        Some(408 | 429) => Outcome::Retry,
        Some(s) if (400..500).contains(&s) => Outcome::Reject,
        Some(_) => Outcome::Retry,
    }
}

/// Exponential backoff with equal jitter: attempt `n` (0-based) waits between half and all of
/// `min(initial · 2ⁿ, max)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Cap.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay after failed attempt `attempt`, with `unit` ∈ [0, 1) drawn at random.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let factor = 2u32.saturating_pow(attempt.min(30));
        let base = self.initial.saturating_mul(factor).min(self.max);
        let half = base / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// A small xorshift generator for jitter (no cryptographic use), seeded per process.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from the process's random hasher keys and the clock.
    pub fn new() -> Self {
        use std::hash::BuildHasher;
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now());
        Self(seed | 1)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        // 53 random bits → [0, 1); the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let u = (x >> 11) as f64 / (1u64 << 53) as f64;
        u
    }
}

impl Default for Jitter {
    fn default() -> Self {
        Self::new()
    }
}

/// One envelope and the queue items it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The message.
    pub message: FlowMessage,
    /// Its items, for bookkeeping after the answer.
    pub items: Vec<Change>,
}

/// Builds the envelopes of a batch (see the module docs for the order). Items of one kind that
/// exceed `max` per envelope are split.
pub fn envelopes(batch: Vec<Change>, max: usize) -> Vec<Envelope> {
    let max = max.max(1);
    let mut flow = None;
    let mut nodes = Vec::new();
    let mut rels = Vec::new();
    let mut del_rels = Vec::new();
    let mut del_nodes = Vec::new();
    for (k, op) in batch {
        match op {
            Op::Flow(f) => flow = Some(((k, Op::Flow(f.clone())), f)),
            Op::UpsertNode(n) => nodes.push((k, Op::UpsertNode(n))),
            Op::UpsertRel(r) => rels.push((k, Op::UpsertRel(r))),
            Op::DeleteRel if matches!(k, Key::Rel(_)) => del_rels.push((k, Op::DeleteRel)),
            Op::DeleteNode if matches!(k, Key::Node(_)) => del_nodes.push((k, Op::DeleteNode)),
            // A delete under a key of another kind cannot be built by the graph.
            Op::DeleteRel | Op::DeleteNode => {}
        }
    }
    let mut out = Vec::new();
    if let Some((item, f)) = flow {
        out.push(Envelope {
            message: FlowMessage::UpsertFlow { flow: f },
            items: vec![item],
        });
    }
    for chunk in chunks(nodes, max) {
        let list: Vec<FlowNode> = chunk
            .iter()
            .filter_map(|(_, op)| match op {
                Op::UpsertNode(n) => Some(n.clone()),
                _ => None,
            })
            .collect();
        out.push(Envelope {
            message: FlowMessage::UpsertNodes { nodes: list },
            items: chunk,
        });
    }
    for chunk in chunks(rels, max) {
        let list = chunk
            .iter()
            .filter_map(|(_, op)| match op {
                Op::UpsertRel(r) => Some(r.clone()),
                _ => None,
            })
            .collect();
        out.push(Envelope {
            message: FlowMessage::UpsertRels {
                relationships: list,
            },
            items: chunk,
        });
    }
    for chunk in chunks(del_rels, max) {
        let pairs: Vec<RelPair> = chunk
            .iter()
            .filter_map(|(k, _)| match k {
                Key::Rel(p) => Some(p.clone()),
                _ => None,
            })
            .collect();
        out.push(Envelope {
            message: FlowMessage::DeleteRels { pairs },
            items: chunk,
        });
    }
    for chunk in chunks(del_nodes, max) {
        let ids: Vec<String> = chunk
            .iter()
            .filter_map(|(k, _)| match k {
                Key::Node(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        out.push(Envelope {
            message: FlowMessage::DeleteNodes { ids },
            items: chunk,
        });
    }
    out
}

fn chunks(mut items: Vec<Change>, max: usize) -> Vec<Vec<Change>> {
    let mut out = Vec::new();
    while items.len() > max {
        let rest = items.split_off(max);
        out.push(std::mem::replace(&mut items, rest));
    }
    if !items.is_empty() {
        out.push(items);
    }
    out
}

/// Where and how to reach flow-server.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// `FLOW_SERVER_URL` (a trailing `/` is fine).
    pub base_url: String,
    /// `FLOW_ID`.
    pub flow_id: String,
    /// Bearer token for ingest (and the snapshot read at start), if any.
    pub token: Option<String>,
    /// Items per batch (and per envelope).
    pub batch_max: usize,
    /// Retry backoff.
    pub backoff: Backoff,
    /// Timeout of one request.
    pub post_timeout: Duration,
    /// Re-send everything this often (None = only after reconnects and re-lists).
    pub resync_interval: Option<Duration>,
}

/// A flow-server client for one flow.
#[derive(Debug, Clone)]
pub struct FlowClient {
    http: reqwest::Client,
    events: Url,
    snapshot: Url,
    token: Option<String>,
}

impl FlowClient {
    /// A client; fails when the base URL is not an absolute http(s) URL.
    pub fn new(cfg: &SinkConfig) -> Result<Self, SinkError> {
        let bad = || SinkError::BadUrl(cfg.base_url.clone());
        let base = Url::parse(cfg.base_url.trim()).map_err(|_| bad())?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad());
        }
        let url = |last: &str| -> Result<Url, SinkError> {
            let mut u = base.clone();
            u.path_segments_mut()
                .map_err(|()| bad())?
                .pop_if_empty()
                .extend(["v1", "flows", cfg.flow_id.as_str(), last]);
            Ok(u)
        };
        let http = reqwest::Client::builder()
            .timeout(cfg.post_timeout)
            .no_proxy()
            .build()
            .map_err(SinkError::Transport)?;
        Ok(Self {
            http,
            events: url("events")?,
            snapshot: url("snapshot")?,
            token: cfg.token.clone().filter(|t| !t.is_empty()),
        })
    }

    fn auth(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.header(AUTHORIZATION, format!("Bearer {t}")),
            None => rb,
        }
    }

    /// POSTs one message; Ok only on a 2xx.
    pub async fn post(&self, msg: &FlowMessage) -> Result<(), SinkError> {
        let resp = self
            .auth(self.http.post(self.events.clone()))
            .header(CONTENT_TYPE, "application/json")
            .body(msg.encode())
            .send()
            .await
            .map_err(SinkError::Transport)?;
        if resp.status().is_success() {
            return Ok(());
        }
        Err(status_error(resp).await)
    }

    /// The flow's nodes as flow-server holds them (None when it does not know the flow).
    pub async fn nodes(&self) -> Result<Option<Vec<FlowNode>>, SinkError> {
        let resp = self
            .auth(self.http.get(self.snapshot.clone()))
            .send()
            .await
            .map_err(SinkError::Transport)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(resp).await);
        }
        let body = resp.bytes().await.map_err(SinkError::Transport)?;
        // Only `nodes` is read: flow-server encodes a flow that has nodes but no flow instance
        // (an emitter that has not sent its `upsert-flow` yet) as a snapshot without `flow`,
        // which the strict contract decoder refuses as a whole.
        #[derive(serde::Deserialize)]
        struct Nodes {
            #[serde(default)]
            nodes: Vec<FlowNode>,
        }
        let parsed: Nodes = serde_json::from_slice(&body).map_err(SinkError::Snapshot)?;
        if !parsed.nodes.is_empty() {
            FlowMessage::UpsertNodes {
                nodes: parsed.nodes.clone(),
            }
            .validate()
            .map_err(SinkError::Contract)?;
        }
        Ok(Some(parsed.nodes))
    }
}

async fn status_error(resp: reqwest::Response) -> SinkError {
    let code = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut body = resp.text().await.unwrap_or_default();
    body.truncate(300);
    SinkError::Status {
        code,
        body,
        retry_after,
    }
}

/// The delivery loop's state. See the module docs.
#[derive(Debug)]
pub struct Sink {
    client: FlowClient,
    cfg: SinkConfig,
    metrics: Arc<Metrics>,
    /// Last value delivered (2xx) per key; deletes remove their key.
    delivered: HashMap<Key, Op>,
    /// Consecutive failed attempts (the backoff exponent).
    failures: u32,
    /// A failure happened since the last full re-send.
    resync_after_success: bool,
    /// Keys delivered since the last failure: a re-send after reconnecting skips them (they
    /// reached the server as it is now).
    since_failure: HashSet<Key>,
    jitter: Jitter,
}

impl Sink {
    /// A sink; fails on a bad URL.
    pub fn new(cfg: SinkConfig, metrics: Arc<Metrics>) -> Result<Self, SinkError> {
        Ok(Self {
            client: FlowClient::new(&cfg)?,
            cfg,
            metrics,
            delivered: HashMap::new(),
            failures: 0,
            resync_after_success: false,
            since_failure: HashSet::new(),
            jitter: Jitter::new(),
        })
    }

    /// The client (the watch uses it once to read the flow's nodes for pruning).
    pub fn client(&self) -> &FlowClient {
        &self.client
    }

    /// Drains `queue` forever. Cancel by dropping the future.
    pub async fn run(mut self, queue: Arc<Queue>) {
        let mut tick = self.cfg.resync_interval.map(|every| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        loop {
            if queue.take_resync() {
                self.resync(&queue);
            }
            let batch = tokio::select! {
                b = queue.next_batch(self.cfg.batch_max) => b,
                _ = async {
                    match tick.as_mut() {
                        Some(t) => { t.tick().await; }
                        None => std::future::pending::<()>().await,
                    }
                } => {
                    queue.request_resync();
                    continue;
                }
            };
            self.metrics.queue_depth.set(gauge(queue.len()));
            if batch.is_empty() {
                continue;
            }
            self.deliver(batch, &queue).await;
            self.metrics.queue_depth.set(gauge(queue.len()));
        }
    }

    /// Moves everything delivered back into the queue (newer queued values win), except the
    /// keys in `keep`.
    fn resync_except(&mut self, queue: &Queue, keep: &HashSet<Key>) {
        if self.delivered.is_empty() {
            return;
        }
        self.metrics.resyncs.inc();
        let all = std::mem::take(&mut self.delivered);
        let (stay, again): (HashMap<Key, Op>, HashMap<Key, Op>) =
            all.into_iter().partition(|(k, _)| keep.contains(k));
        tracing::info!(items = again.len(), "re-sending the full state");
        self.delivered = stay;
        queue.requeue(again);
    }

    fn resync(&mut self, queue: &Queue) {
        self.resync_except(queue, &HashSet::new());
    }

    async fn deliver(&mut self, batch: Vec<Change>, queue: &Queue) {
        let fresh: Vec<Change> = batch
            .into_iter()
            .filter(|(k, op)| op.is_delete() || self.delivered.get(k) != Some(op))
            .collect();
        let mut pending = envelopes(fresh, self.cfg.batch_max).into_iter();
        while let Some(env) = pending.next() {
            let result = self.client.post(&env.message).await;
            let (outcome, retry_after) = match &result {
                Ok(()) => (Outcome::Delivered, None),
                Err(SinkError::Status {
                    code, retry_after, ..
                }) => (classify(Some(*code)), *retry_after),
                Err(_) => (classify(None), None),
            };
            let n = u64::try_from(env.items.len()).unwrap_or(u64::MAX);
            match outcome {
                Outcome::Delivered => {
                    self.metrics.events_sent.inc_by(n);
                    self.metrics.last_success_seconds.set(unix_seconds());
                    self.failures = 0;
                    for (k, op) in env.items {
                        if self.resync_after_success {
                            self.since_failure.insert(k.clone());
                        }
                        if op.is_delete() {
                            self.delivered.remove(&k);
                        } else {
                            self.delivered.insert(k, op);
                        }
                    }
                }
                Outcome::Reject => {
                    self.metrics.failed("rejected", n);
                    tracing::warn!(
                        kind = env.message.kind().as_str(),
                        items = n,
                        error = %result.err().map(|e| e.to_string()).unwrap_or_default(),
                        "flow-server refused an envelope; not retried"
                    );
                }
                Outcome::Retry => {
                    self.metrics.post_retries.inc();
                    self.resync_after_success = true;
                    self.since_failure.clear();
                    queue.requeue(env.items);
                    queue.requeue(pending.flat_map(|e| e.items));
                    let mut wait = self.cfg.backoff.delay(self.failures, self.jitter.unit());
                    if let Some(s) = retry_after {
                        wait = wait.max(Duration::from_secs(s)).min(self.cfg.backoff.max);
                    }
                    self.failures = self.failures.saturating_add(1);
                    tracing::warn!(
                        attempt = self.failures,
                        wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        error = %result.err().map(|e| e.to_string()).unwrap_or_default(),
                        "delivery failed; retrying"
                    );
                    tokio::time::sleep(wait).await;
                    return;
                }
            }
        }
        if self.failures == 0 && self.resync_after_success {
            self.resync_after_success = false;
            let keep = std::mem::take(&mut self.since_failure);
            self.resync_except(queue, &keep);
        }
    }
}

fn gauge(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn unix_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{Relationship, RelationshipType};

    #[test]
    fn only_network_errors_5xx_408_and_429_are_retried() {
        assert_eq!(classify(None), Outcome::Retry);
        assert_eq!(classify(Some(200)), Outcome::Delivered);
        assert_eq!(classify(Some(204)), Outcome::Delivered);
        for c in [408, 429, 500, 502, 503, 504] {
            assert_eq!(classify(Some(c)), Outcome::Retry, "{c}");
        }
        for c in [400, 401, 403, 404, 409, 413, 415, 422] {
            assert_eq!(classify(Some(c)), Outcome::Reject, "{c}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_within_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.delay(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(b.delay(10, 0.999_999), b.delay(40, 0.999_999));
        assert!(b.delay(10, 0.999_999) <= Duration::from_secs(1));
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    fn node(id: &str) -> Change {
        (
            Key::Node(id.into()),
            Op::UpsertNode(FlowNode {
                id: id.into(),
                flow_id: "f".into(),
                label: id.into(),
                status: "pending".into(),
                family: None,
                region: None,
                started_at: None,
                ended_at: None,
                meta: Default::default(),
            }),
        )
    }

    #[test]
    fn a_batch_becomes_ordered_valid_envelopes_split_at_the_max() {
        let rel = Relationship {
            from_id: "a".into(),
            to_id: "b".into(),
            from_flow_id: None,
            to_flow_id: None,
            kind: RelationshipType::FinishToStart,
            condition: None,
            lag: 0,
        };
        let batch = vec![
            (Key::Node("gone".into()), Op::DeleteNode),
            (Key::Rel(rel.key()), Op::UpsertRel(rel.clone())),
            node("a"),
            node("b"),
            node("c"),
        ];
        let envs = envelopes(batch, 2);
        let kinds: Vec<&str> = envs.iter().map(|e| e.message.kind().as_str()).collect();
        assert_eq!(
            kinds,
            [
                "upsert-nodes",
                "upsert-nodes",
                "upsert-rels",
                "delete-nodes"
            ]
        );
        for e in &envs {
            e.message.validate().unwrap();
            e.message.check_flow_id("f").unwrap();
        }
        assert_eq!(envs.iter().map(|e| e.items.len()).sum::<usize>(), 5);
    }
}
