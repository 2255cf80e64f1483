//! The NATS JetStream backend: one stream is the event log of every flow.
//!
//! - Subjects: `<prefix>.<hex(flowId)>` (hex keeps any flow id a single valid subject token).
//! - An event is the FlowMessage's compact JSON. A DELETE is an empty message with header
//!   `Flow-Server-Op: drop`; the replica that publishes it then purges the subject's older
//!   messages, so the log of a deleted flow does not grow forever.
//! - Every replica runs one ordered consumer over the whole stream from its first message and
//!   applies each message to its hub in stream order. Seqs are therefore identical on every
//!   replica: an incarnation's origin is the stream sequence of its first message minus one,
//!   and each later event of it takes the next seq (see `hub`). A replica restarting rebuilds
//!   exactly the same state and seqs, so `Last-Event-ID` works across replicas and restarts.
//! - POST publishes with a unique `Nats-Msg-Id` (JetStream de-duplicates retries) and answers
//!   once **this** replica has applied the message, with the seq it got: a client that posts and
//!   then reads from the same replica sees its event. Limit checks run in the applier, so every
//!   replica accepts or refuses the same messages.
//! - Idle eviction publishes a drop guarded by `Nats-Expected-Last-Subject-Sequence`, so it never
//!   deletes a flow that received an event meanwhile, and two replicas evicting at once drop it
//!   once.
//! - Ready (`/readyz`) = connected and caught up with the stream as it was at start.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use contract::FlowMessage;
use futures_util::StreamExt;
use tokio::sync::{Notify, oneshot};

use crate::error::ApiError;
use crate::hub::{AppendError, Hub};

/// Header marking a DELETE in the log.
pub const OP_HEADER: &str = "Flow-Server-Op";
/// How long a POST waits for its own message to come back through the consumer.
const APPLY_TIMEOUT: Duration = Duration::from_secs(10);

type Waiter = oneshot::Sender<Result<u64, AppendError>>;

/// One replica's connection to the shared log.
pub struct JetStreamLog {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: stream::Stream,
    prefix: String,
    /// Unique per process: prefix of this replica's message ids.
    replica: String,
    next_id: AtomicU64,
    /// POSTs and DELETEs of this replica waiting for their message to be applied.
    waiters: Mutex<HashMap<String, Waiter>>,
    caught_up: AtomicBool,
}

impl std::fmt::Debug for JetStreamLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamLog")
            .field("prefix", &self.prefix)
            .field("replica", &self.replica)
            .finish_non_exhaustive()
    }
}

/// The subject token of a flow id.
pub fn encode_flow(flow: &str) -> String {
    flow.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The flow id of a subject token.
pub fn decode_flow(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

impl JetStreamLog {
    /// Connects, ensures the stream exists, and starts applying it to `hub` from its first
    /// message (the rebuild). Returns once subscribed; readiness follows when caught up.
    pub async fn start(
        url: &str,
        stream_name: &str,
        prefix: &str,
        hub: Arc<Hub>,
    ) -> anyhow::Result<Arc<Self>> {
        // A reconnect may mean a restarted server that forgot our (ephemeral) consumer: the
        // apply loop then recreates it at once instead of waiting for missed heartbeats.
        let reconnected = Arc::new(Notify::new());
        let on_event = reconnected.clone();
        let client = async_nats::ConnectOptions::new()
            .event_callback(move |event| {
                let on_event = on_event.clone();
                async move {
                    if matches!(event, async_nats::Event::Connected) {
                        on_event.notify_one();
                    }
                }
            })
            .connection_timeout(Duration::from_secs(5))
            .retry_on_initial_connect()
            .connect(url)
            .await
            .with_context(|| format!("connecting to NATS at {url}"))?;
        let js = jetstream::new(client.clone());
        let all = format!("{prefix}.>");
        let mut stream = tokio::time::timeout(
            Duration::from_secs(30),
            js.get_or_create_stream(stream::Config {
                name: stream_name.to_owned(),
                subjects: vec![all.clone()],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            }),
        )
        .await
        .context("timed out creating the JetStream stream")?
        .with_context(|| format!("creating JetStream stream {stream_name}"))?;
        let messages_at_start = stream
            .info()
            .await
            .context("reading the stream info")?
            .state
            .messages;
        let replica = format!(
            "{}-{:x}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let log = Arc::new(Self {
            client,
            js,
            stream,
            prefix: prefix.to_owned(),
            replica,
            next_id: AtomicU64::new(0),
            waiters: Mutex::new(HashMap::new()),
            caught_up: AtomicBool::new(messages_at_start == 0),
        });
        tracing::info!(
            stream = stream_name,
            messages = messages_at_start,
            "rebuilding flows from JetStream"
        );
        tokio::spawn(apply_loop(Arc::downgrade(&log), hub, all, reconnected));
        Ok(log)
    }

    /// Connected and caught up.
    pub fn ready(&self) -> bool {
        self.caught_up.load(Ordering::Acquire)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn subject(&self, flow: &str) -> String {
        format!("{}.{}", self.prefix, encode_flow(flow))
    }

    fn register(&self) -> (String, oneshot::Receiver<Result<u64, AppendError>>) {
        let id = format!(
            "{}-{}",
            self.replica,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        );
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.clone(), tx);
        (id, rx)
    }

    fn unregister(&self, id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Publishes and waits until this replica applied the message.
    async fn publish_and_wait(
        &self,
        flow: &str,
        msg: PublishMessage,
    ) -> Result<(u64, u64), ApiError> {
        let (id, rx) = self.register();
        let result = async {
            let ack = self
                .js
                .send_publish(self.subject(flow), msg.message_id(&id))
                .await
                .map_err(|e| ApiError::unavailable(format!("event log unavailable: {e}")))?
                .await
                .map_err(|e| ApiError::unavailable(format!("event log unavailable: {e}")))?;
            let applied = tokio::time::timeout(APPLY_TIMEOUT, rx)
                .await
                .map_err(|_| ApiError::unavailable("the event was stored but not applied in time"))?
                .map_err(|_| ApiError::unavailable("the event log consumer stopped"))??;
            Ok((ack.sequence, applied))
        }
        .await;
        self.unregister(&id);
        result
    }

    /// Appends an event; returns its seq.
    pub async fn append(&self, flow: &str, json: Bytes) -> Result<u64, ApiError> {
        let (_, seq) = self
            .publish_and_wait(flow, PublishMessage::build().payload(json))
            .await?;
        Ok(seq)
    }

    /// Appends a drop marker, purges the older messages of the flow, waits for the local apply.
    pub async fn delete(&self, flow: &str) -> Result<(), ApiError> {
        let (marker, _) = self
            .publish_and_wait(flow, PublishMessage::build().header(OP_HEADER, "drop"))
            .await?;
        self.purge_before(flow, marker).await;
        Ok(())
    }

    /// Drops an idle flow cluster-wide unless it received a message after `log_seq`.
    pub async fn evict(&self, flow: &str, log_seq: u64) {
        let msg = PublishMessage::build()
            .header(OP_HEADER, "drop")
            .expected_last_subject_sequence(log_seq);
        let ack = match self.js.send_publish(self.subject(flow), msg).await {
            Ok(fut) => fut.await,
            Err(e) => {
                tracing::warn!(flow, error = %e, "idle eviction not published");
                return;
            }
        };
        match ack {
            Ok(ack) => {
                tracing::info!(flow, "idle flow dropped from the event log");
                self.purge_before(flow, ack.sequence).await;
            }
            // Another replica evicted it first, or it received an event: keep it.
            Err(e) => tracing::debug!(flow, error = %e, "idle eviction skipped"),
        }
    }

    async fn purge_before(&self, flow: &str, seq: u64) {
        if let Err(e) = self
            .stream
            .purge()
            .filter(self.subject(flow))
            .sequence(seq)
            .await
        {
            tracing::warn!(flow, error = %e, "purging a dropped flow's messages failed");
        }
    }

    fn resolve(&self, msg_id: Option<&str>, result: Result<u64, AppendError>) {
        let Some(id) = msg_id else { return };
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(tx) = waiter {
            let _ = tx.send(result);
        }
    }
}

/// Creates an ordered consumer from `next_seq` on.
async fn subscribe(
    stream: &stream::Stream,
    filter: &str,
    next_seq: u64,
) -> anyhow::Result<consumer::pull::Ordered> {
    let deliver_policy = if next_seq <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence {
            start_sequence: next_seq,
        }
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("creating the ordered consumer")?;
    consumer
        .messages()
        .await
        .context("subscribing to the ordered consumer")
}

/// Applies the log to the hub in stream order, forever. The ordered consumer recreates itself
/// after gaps; if it ends or keeps failing (e.g. the server restarted and forgot it), a new one
/// starts right after the last applied message, so nothing is applied twice or skipped.
async fn apply_loop(
    log: std::sync::Weak<JetStreamLog>,
    hub: Arc<Hub>,
    filter: String,
    reconnected: Arc<Notify>,
) {
    let mut next_seq = 1u64;
    // The initial connect's notification is not a reconnect.
    let _ = tokio::time::timeout(Duration::from_millis(10), reconnected.notified()).await;
    loop {
        let Some(l) = log.upgrade() else { return };
        let messages = subscribe(&l.stream, &filter, next_seq).await;
        drop(l);
        match messages {
            Ok(mut messages) => {
                let mut errors = 0;
                loop {
                    let next = tokio::select! {
                        next = messages.next() => next,
                        _ = reconnected.notified() => {
                            tracing::info!(next_seq, "reconnected to NATS; resubscribing to the event log");
                            break;
                        }
                    };
                    let Some(next) = next else { break };
                    let Some(log) = log.upgrade() else { return };
                    match next {
                        Ok(msg) => {
                            errors = 0;
                            if let Some(seq) = apply(&log, &hub, &msg, next_seq) {
                                next_seq = seq + 1;
                            }
                        }
                        Err(e) => {
                            errors += 1;
                            tracing::warn!(error = %e, errors, "event log consumer error");
                            if errors >= 5 {
                                break;
                            }
                        }
                    }
                }
                tracing::debug!(next_seq, "event log consumer replaced");
            }
            Err(e) => {
                tracing::warn!(error = %e, next_seq, "cannot subscribe to the event log; retrying")
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Applies one log message; returns its stream sequence when it was new.
fn apply(log: &JetStreamLog, hub: &Hub, msg: &jetstream::Message, next_seq: u64) -> Option<u64> {
    let (stream_seq, pending) = match msg.info() {
        Ok(i) => (i.stream_sequence, i.pending),
        Err(e) => {
            tracing::warn!(error = %e, "event log message without metadata");
            return None;
        }
    };
    if stream_seq < next_seq {
        return None;
    }
    let headers = msg.headers.as_ref();
    let msg_id = headers
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    let is_drop = headers
        .and_then(|h| h.get(OP_HEADER))
        .is_some_and(|v| v.as_str() == "drop");
    let flow = msg
        .subject
        .as_str()
        .strip_prefix(log.prefix.as_str())
        .and_then(|s| s.strip_prefix('.'))
        .and_then(decode_flow);
    let result = match flow {
        None => {
            tracing::warn!(subject = %msg.subject, "event log message on an unknown subject");
            None
        }
        Some(flow) if is_drop => {
            hub.remove(&flow);
            Some(Ok(0))
        }
        Some(flow) => match FlowMessage::decode(&msg.payload) {
            Ok(m) => Some(hub.append(&flow, m, &msg.payload, Some(stream_seq))),
            Err(e) => {
                tracing::warn!(flow, stream_seq, error = %e, "invalid event in the log skipped");
                None
            }
        },
    };
    if let Some(result) = result {
        if let Err(e) = &result {
            tracing::debug!(stream_seq, error = %e, "event refused by the applier");
        }
        log.resolve(msg_id.as_deref(), result);
    }
    if pending == 0 && !log.caught_up.swap(true, Ordering::AcqRel) {
        tracing::info!(
            stream_seq,
            flows = hub.len(),
            "caught up with the event log"
        );
    }
    Some(stream_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_ids_round_trip_through_subject_tokens() {
        for id in ["sovereign-omantel", "a.b c/*>", "ü", ""] {
            let t = encode_flow(id);
            assert!(t.bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(decode_flow(&t).as_deref(), Some(id));
        }
        assert_eq!(decode_flow("abc"), None);
        assert_eq!(decode_flow("zz"), None);
    }
}
