//! [`Audit`] over async-nats JetStream (`spec/upstream-continuum.md` §7): one subject,
//! [`SUBJECT`](crate::audit::SUBJECT), upstream's headers and JSON, and a wait for the PubAck.
//!
//! Unlike upstream (which leaves the stream to another component and fails with "no
//! responders" without it), [`NatsAudit::connect`] ensures the stream: created when missing
//! (file storage, limits retention, 7 days, 1 GiB), an existing stream is left as it is.
//!
//! Like upstream's `Publish`, an empty `timestamp` is stamped (UTC RFC 3339) and an event
//! without `continuumName` is refused.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::audit::{AuditEvent, SUBJECT};
use crate::ports::{Audit, AuditError};

/// Stream settings used when the stream is missing.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Maximum message age.
    pub max_age: Duration,
    /// Maximum stream size in bytes.
    pub max_bytes: i64,
}

impl Default for StreamSettings {
    /// `CATALYST_AUDIT`, 7 days, 1 GiB.
    fn default() -> StreamSettings {
        StreamSettings {
            name: "CATALYST_AUDIT".to_owned(),
            max_age: Duration::from_secs(7 * 24 * 3600),
            max_bytes: 1 << 30,
        }
    }
}

/// The JetStream [`Audit`] adapter.
#[derive(Debug, Clone)]
pub struct NatsAudit {
    js: jetstream::Context,
    ack_timeout: Duration,
}

impl NatsAudit {
    /// Connects to `url`, ensures the stream bound to [`SUBJECT`] and returns the adapter.
    /// Publishes that get no PubAck within `ack_timeout` fail.
    pub async fn connect(
        url: &str,
        settings: &StreamSettings,
        ack_timeout: Duration,
    ) -> Result<NatsAudit, AuditError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(ack_timeout)
            .connect(url)
            .await
            .map_err(|e| AuditError::Publish(format!("connecting to {url}: {e}")))?;
        let mut js = jetstream::new(client);
        js.set_timeout(ack_timeout);
        let audit = NatsAudit { js, ack_timeout };
        audit.ensure_stream(settings).await?;
        Ok(audit)
    }

    /// Creates the stream when missing; an existing stream of that name is left alone.
    pub async fn ensure_stream(&self, settings: &StreamSettings) -> Result<(), AuditError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: settings.name.clone(),
                subjects: vec![SUBJECT.to_owned()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                max_age: settings.max_age,
                max_bytes: settings.max_bytes,
                ..Default::default()
            })
            .await
            .map_err(|e| AuditError::Publish(format!("ensuring stream {}: {e}", settings.name)))?;
        Ok(())
    }

    async fn publish_inner(&self, event: &AuditEvent) -> Result<(), AuditError> {
        if event.continuum_name.is_empty() {
            return Err(AuditError::Publish("event without continuumName".into()));
        }
        let mut event = event.clone();
        if event.timestamp.is_empty() {
            event.timestamp = time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .map_err(|e| AuditError::Publish(format!("timestamp: {e}")))?;
        }
        let body = serde_json::to_vec(&event)
            .map_err(|e| AuditError::Publish(format!("encoding: {e}")))?;
        let mut headers = async_nats::HeaderMap::new();
        for (k, v) in event.headers() {
            headers.insert(k, v.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(SUBJECT, headers, body.into())
            .await
            .map_err(|e| AuditError::Publish(e.to_string()))?;
        ack.await
            .map_err(|e| AuditError::Publish(format!("no PubAck: {e}")))?;
        Ok(())
    }
}

impl Audit for NatsAudit {
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        match tokio::time::timeout(self.ack_timeout, self.publish_inner(event)).await {
            Ok(r) => r,
            Err(_) => Err(AuditError::Publish(format!(
                "no PubAck within {:?}",
                self.ack_timeout
            ))),
        }
    }
}
