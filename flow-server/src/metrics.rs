//! Prometheus metrics (`prometheus-client`, prefix `flow_server_`), served on `GET /metrics`.
//!
//! Label values are static strings (message types, error codes), so cardinality stays fixed: no
//! flow id is ever a label.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = [(&'static str, &'static str); 1];

/// Every metric of the server, registered once in [`Metrics::new`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Events accepted, by message type.
    pub ingested: Family<Labels, Counter>,
    /// Events refused, by error code.
    pub rejected: Family<Labels, Counter>,
    /// Event frames written to subscribers (snapshot frames included).
    pub deliveries: Counter,
    /// Streams opened, by how they started: `snapshot` or `replay` (Last-Event-ID honoured).
    pub streams_opened: Family<Labels, Counter>,
    /// Subscribers that fell behind and were resynchronised with a fresh snapshot.
    pub resyncs: Counter,
    /// Subscribers closed after falling behind repeatedly.
    pub slow_closed: Counter,
    /// Open SSE streams.
    pub subscribers: Gauge,
    /// Flows held in memory.
    pub flows: Gauge,
    /// Flows removed for being idle past the TTL (or to make room).
    pub evicted: Counter,
    /// Snapshots encoded (cache misses).
    pub snapshots_encoded: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under `flow_server_`.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flow_server");
        let m = Self {
            ingested: Family::default(),
            rejected: Family::default(),
            deliveries: Counter::default(),
            streams_opened: Family::default(),
            resyncs: Counter::default(),
            slow_closed: Counter::default(),
            subscribers: Gauge::default(),
            flows: Gauge::default(),
            evicted: Counter::default(),
            snapshots_encoded: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ingested_events",
            "Events accepted, by type",
            m.ingested.clone(),
        );
        registry.register(
            "rejected_events",
            "Events refused, by error code",
            m.rejected.clone(),
        );
        registry.register(
            "deliveries",
            "Event frames written to SSE subscribers",
            m.deliveries.clone(),
        );
        registry.register(
            "streams_opened",
            "SSE streams opened, by start (snapshot or replay)",
            m.streams_opened.clone(),
        );
        registry.register(
            "resyncs",
            "Slow subscribers resynchronised with a snapshot",
            m.resyncs.clone(),
        );
        registry.register(
            "slow_subscribers_closed",
            "Subscribers closed after falling behind repeatedly",
            m.slow_closed.clone(),
        );
        registry.register("subscribers", "Open SSE streams", m.subscribers.clone());
        registry.register("flows", "Flows held in memory", m.flows.clone());
        registry.register("evicted_flows", "Idle flows evicted", m.evicted.clone());
        registry.register(
            "snapshots_encoded",
            "Snapshots encoded (snapshot cache misses)",
            m.snapshots_encoded.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts an accepted event of `kind`.
    pub fn ingested(&self, kind: &'static str) {
        self.ingested.get_or_create(&[("type", kind)]).inc();
    }

    /// Counts a refused event with error `code`.
    pub fn rejected(&self, code: &'static str) {
        self.rejected.get_or_create(&[("code", code)]).inc();
    }

    /// Counts an opened stream.
    pub fn stream_opened(&self, start: &'static str) {
        self.streams_opened.get_or_create(&[("start", start)]).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_carries_the_prefix_and_labels() {
        let m = Metrics::new();
        m.ingested("upsert-nodes");
        m.rejected("invalid_json");
        m.subscribers.inc();
        let text = m.encode();
        assert!(
            text.contains(r#"flow_server_ingested_events_total{type="upsert-nodes"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"flow_server_rejected_events_total{code="invalid_json"} 1"#));
        assert!(text.contains("flow_server_subscribers 1"));
    }
}
