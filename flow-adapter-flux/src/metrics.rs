//! Prometheus metrics (`prometheus-client`, prefix `flow_adapter_`), served on `GET /metrics`.
//!
//! Label values are static strings, so cardinality stays fixed: no node id is ever a label.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// Every metric of the adapter, registered once in [`Metrics::new`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Changes produced by the mapper (node, relationship and flow upserts/deletes).
    pub events_mapped: Counter,
    /// Items delivered with a 2xx.
    pub events_sent: Counter,
    /// Items dropped after a non-retryable answer, by reason (`rejected`).
    pub events_failed: Family<Labels, Counter>,
    /// POSTs that failed and will be retried (network, 5xx, 408, 429).
    pub post_retries: Counter,
    /// Keys waiting in the coalescing queue.
    pub queue_depth: Gauge,
    /// Unix seconds of the last 2xx from flow-server (0 before the first).
    pub last_success_seconds: Gauge,
    /// 1 while this pod holds the Lease (or leader election is off), else 0.
    pub leader: Gauge,
    /// Full re-sends of the delivered state (after a reconnect, a re-list, or periodically).
    pub resyncs: Counter,
    /// Objects that could not be read (no name or namespace).
    pub unreadable_objects: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under `flow_adapter_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flow_adapter");
        let m = Self {
            events_mapped: Counter::default(),
            events_sent: Counter::default(),
            events_failed: Family::default(),
            post_retries: Counter::default(),
            queue_depth: Gauge::default(),
            last_success_seconds: Gauge::default(),
            leader: Gauge::default(),
            resyncs: Counter::default(),
            unreadable_objects: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "events_mapped",
            "Changes produced by the mapper",
            m.events_mapped.clone(),
        );
        registry.register(
            "events_sent",
            "Items delivered to flow-server with a 2xx",
            m.events_sent.clone(),
        );
        registry.register(
            "events_failed",
            "Items dropped after a non-retryable answer, by reason",
            m.events_failed.clone(),
        );
        registry.register(
            "post_retries",
            "POSTs that failed and are retried",
            m.post_retries.clone(),
        );
        registry.register(
            "queue_depth",
            "Keys waiting in the coalescing queue",
            m.queue_depth.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last 2xx from flow-server",
            m.last_success_seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this pod holds the Lease",
            m.leader.clone(),
        );
        registry.register(
            "resyncs",
            "Full re-sends of the delivered state",
            m.resyncs.clone(),
        );
        registry.register(
            "unreadable_objects",
            "Watched objects that could not be read",
            m.unreadable_objects.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts `n` items dropped for `reason`.
    pub fn failed(&self, reason: &'static str, n: u64) {
        self.events_failed
            .get_or_create(&[("reason", reason)])
            .inc_by(n);
    }

    /// Items dropped for `reason` so far.
    pub fn failed_count(&self, reason: &'static str) -> u64 {
        self.events_failed
            .get_or_create(&[("reason", reason)])
            .get()
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
