//! Event stores behind the HTTP routes.
//!
//! - [`Backend::Memory`]: the hub is the store. Embedded, no external service, one replica.
//! - [`Backend::JetStream`]: every event and every DELETE is appended to one JetStream stream;
//!   each replica applies the stream in order to its own hub, so every replica assigns the same
//!   seqs and holds the same snapshots (see [`jetstream`]).

pub mod jetstream;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use contract::FlowMessage;

use crate::error::ApiError;
use crate::hub::{AppendError, Hub};

/// The configured event store.
#[derive(Debug, Clone)]
pub enum Backend {
    /// In-process only.
    Memory,
    /// NATS JetStream shared log.
    JetStream(Arc<jetstream::JetStreamLog>),
}

impl Backend {
    /// Appends a validated event and returns its seq.
    pub async fn append(
        &self,
        hub: &Hub,
        flow: &str,
        msg: FlowMessage,
        json: Bytes,
    ) -> Result<u64, ApiError> {
        match self {
            Backend::Memory => Ok(hub.append(flow, msg, &json, None)?),
            Backend::JetStream(log) => {
                if !hub.has_room_for(flow) {
                    return Err(AppendError::TooManyFlows(hub.config().max_flows).into());
                }
                log.append(flow, json).await
            }
        }
    }

    /// Deletes the flow (idempotent) and ends its streams, on every replica.
    pub async fn delete(&self, hub: &Hub, flow: &str) -> Result<(), ApiError> {
        match self {
            Backend::Memory => {
                hub.remove(flow);
                Ok(())
            }
            Backend::JetStream(log) => log.delete(flow).await,
        }
    }

    /// Whether the store can serve (JetStream: connected and caught up with the stream).
    pub fn ready(&self) -> bool {
        match self {
            Backend::Memory => true,
            Backend::JetStream(log) => log.ready(),
        }
    }

    /// Evicts flows idle for `ttl`.
    pub async fn evict_idle(&self, hub: &Hub, ttl: Duration) {
        match self {
            Backend::Memory => {
                hub.evict_idle(ttl, true);
            }
            Backend::JetStream(log) => {
                for (flow, log_seq) in hub.evict_idle(ttl, false) {
                    log.evict(&flow, log_seq).await;
                }
            }
        }
    }
}
