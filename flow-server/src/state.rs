//! The materialised view of one flow: the flow instance, nodes by id and relationships by
//! natural key, updated on every accepted event.
//!
//! PURE. Snapshots are encoded from this view, never by folding the ring (upstream's memory
//! backend folds its ring and silently loses upserts once more than N events arrived).
//!
//! Merge rules (one set for every backend):
//! - `snapshot` replaces everything; `upsert-flow` replaces the flow instance;
//! - `upsert-nodes` replaces each node by id, `upsert-rels` each relationship by
//!   `(fromId, toId, type)` (whole-object replace, no field-level merge);
//! - `delete-nodes` removes the nodes **and every relationship touching them** (`fromId` or
//!   `toId`), as the console's reducer prunes them, so a snapshot never resurrects dangling edges;
//! - `delete-rels` removes by natural key; unknown ids and keys are ignored (idempotent).
//!
//! Order: nodes and relationships keep their first-insert order (an upsert of an existing key
//! keeps its place), so snapshots are stable.

use contract::{FlowInstance, FlowMessage, FlowNode, RelPair, Relationship};
use indexmap::IndexMap;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use std::collections::HashSet;

/// Per-flow size bounds, checked before a message changes anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateLimits {
    /// Most nodes one flow may hold.
    pub max_nodes: usize,
    /// Most relationships one flow may hold.
    pub max_rels: usize,
}

impl Default for StateLimits {
    fn default() -> Self {
        Self {
            max_nodes: 10_000,
            max_rels: 50_000,
        }
    }
}

/// A message that would take the flow over a bound. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("flow would hold {would} {field}, more than the limit of {limit}")]
pub struct LimitExceeded {
    /// `nodes` or `relationships`.
    pub field: &'static str,
    /// The configured bound.
    pub limit: usize,
    /// The count after the message.
    pub would: usize,
}

/// The current state of one flow.
#[derive(Debug, Clone, Default)]
pub struct FlowState {
    flow: Option<FlowInstance>,
    nodes: IndexMap<String, FlowNode>,
    rels: IndexMap<RelPair, Relationship>,
}

impl FlowState {
    /// True when the flow has no instance, no node and no relationship (upstream's 404 rule).
    pub fn is_empty(&self) -> bool {
        self.flow.is_none() && self.nodes.is_empty() && self.rels.is_empty()
    }

    /// The flow instance, if one was sent.
    pub fn flow(&self) -> Option<&FlowInstance> {
        self.flow.as_ref()
    }

    /// Nodes in first-insert order.
    pub fn nodes(&self) -> impl Iterator<Item = &FlowNode> {
        self.nodes.values()
    }

    /// Relationships in first-insert order.
    pub fn relationships(&self) -> impl Iterator<Item = &Relationship> {
        self.rels.values()
    }

    /// Node count.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Relationship count.
    pub fn rel_count(&self) -> usize {
        self.rels.len()
    }

    /// Checks the bounds for `msg` without changing anything.
    pub fn check(&self, msg: &FlowMessage, limits: StateLimits) -> Result<(), LimitExceeded> {
        let (nodes, rels) = match msg {
            FlowMessage::Snapshot {
                nodes,
                relationships,
                ..
            } => (nodes.len(), relationships.len()),
            FlowMessage::UpsertNodes { nodes } => {
                let new = nodes
                    .iter()
                    .filter(|n| !self.nodes.contains_key(&n.id))
                    .count();
                (self.nodes.len() + new, self.rels.len())
            }
            FlowMessage::UpsertRels { relationships } => {
                let new = relationships
                    .iter()
                    .filter(|r| !self.rels.contains_key(&r.key()))
                    .count();
                (self.nodes.len(), self.rels.len() + new)
            }
            _ => return Ok(()),
        };
        if nodes > limits.max_nodes {
            return Err(LimitExceeded {
                field: "nodes",
                limit: limits.max_nodes,
                would: nodes,
            });
        }
        if rels > limits.max_rels {
            return Err(LimitExceeded {
                field: "relationships",
                limit: limits.max_rels,
                would: rels,
            });
        }
        Ok(())
    }

    /// Checks the bounds, then applies `msg`. On error nothing changed.
    pub fn apply(&mut self, msg: FlowMessage, limits: StateLimits) -> Result<(), LimitExceeded> {
        self.check(&msg, limits)?;
        match msg {
            FlowMessage::Snapshot {
                flow,
                nodes,
                relationships,
            } => {
                self.flow = Some(flow);
                self.nodes = nodes.into_iter().map(|n| (n.id.clone(), n)).collect();
                self.rels = relationships.into_iter().map(|r| (r.key(), r)).collect();
            }
            FlowMessage::UpsertFlow { flow } => self.flow = Some(flow),
            FlowMessage::UpsertNodes { nodes } => {
                for n in nodes {
                    self.nodes.insert(n.id.clone(), n);
                }
            }
            FlowMessage::UpsertRels { relationships } => {
                for r in relationships {
                    self.rels.insert(r.key(), r);
                }
            }
            FlowMessage::DeleteNodes { ids } => {
                let gone: HashSet<&str> = ids.iter().map(String::as_str).collect();
                let before = self.nodes.len();
                self.nodes.retain(|id, _| !gone.contains(id.as_str()));
                let removed_any = self.nodes.len() != before;
                if removed_any || !self.rels.is_empty() {
                    self.rels.retain(|k, _| {
                        !gone.contains(k.from_id.as_str()) && !gone.contains(k.to_id.as_str())
                    });
                }
            }
            FlowMessage::DeleteRels { pairs } => {
                for p in &pairs {
                    self.rels.shift_remove(p);
                }
            }
        }
        Ok(())
    }

    /// The snapshot envelope as upstream writes it: `{"type":"snapshot"}` plus `flow`, `nodes`
    /// and `relationships`, each omitted when absent or empty. A flow that holds nodes or
    /// relationships but was never given an instance gets upstream's placeholder instance
    /// (`{"id":<flow id>,"status":"open","startedAt":0}`, as its PostgreSQL backend creates on
    /// the first ingest), so the snapshot passes the contract's own rule that a snapshot
    /// carries a flow; only a flow with nothing at all stays `{"type":"snapshot"}`.
    pub fn encode_snapshot(&self, flow_id: &str) -> Vec<u8> {
        // Serializing strings, numbers and JSON maps into a Vec cannot fail.
        serde_json::to_vec(&SnapshotOut(self, flow_id)).unwrap_or_default()
    }
}

/// Serializes a [`FlowState`] as a `snapshot` FlowMessage without copying it.
struct SnapshotOut<'a>(&'a FlowState, &'a str);

impl Serialize for SnapshotOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let st = self.0;
        let mut out = s.serialize_struct("FlowMessage", 4)?;
        out.serialize_field("type", "snapshot")?;
        if let Some(flow) = &st.flow {
            out.serialize_field("flow", flow)?;
        } else if !st.nodes.is_empty() || !st.rels.is_empty() {
            out.serialize_field("flow", &placeholder_instance(self.1))?;
        }
        if !st.nodes.is_empty() {
            out.serialize_field("nodes", &Values(&st.nodes))?;
        }
        if !st.rels.is_empty() {
            out.serialize_field("relationships", &Values(&st.rels))?;
        }
        out.end()
    }
}

/// Upstream's instance for a flow that received events but no `upsert-flow`.
fn placeholder_instance(flow_id: &str) -> FlowInstance {
    FlowInstance {
        id: flow_id.to_owned(),
        definition_id: None,
        parent_flow_id: None,
        triggered_by: Vec::new(),
        status: "open".to_owned(),
        started_at: 0,
        ended_at: None,
        meta: Default::default(),
    }
}

/// Serializes the values of a map as a JSON array, in map order.
struct Values<'a, K, V>(&'a IndexMap<K, V>);

impl<K, V: Serialize> Serialize for Values<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(json: &str) -> FlowMessage {
        FlowMessage::decode(json.as_bytes()).unwrap()
    }

    fn node(id: &str, status: &str) -> String {
        format!(r#"{{"id":"{id}","flowId":"f","label":"{id}","status":"{status}"}}"#)
    }

    fn upsert_nodes(nodes: &[(&str, &str)]) -> FlowMessage {
        let list: Vec<String> = nodes.iter().map(|(i, s)| node(i, s)).collect();
        msg(&format!(
            r#"{{"type":"upsert-nodes","nodes":[{}]}}"#,
            list.join(",")
        ))
    }

    fn rel(from: &str, to: &str) -> String {
        format!(r#"{{"fromId":"{from}","toId":"{to}","type":"finish-to-start"}}"#)
    }

    #[test]
    fn empty_state_encodes_as_a_bare_snapshot() {
        let st = FlowState::default();
        assert!(st.is_empty());
        assert_eq!(st.encode_snapshot("f"), br#"{"type":"snapshot"}"#);
    }

    #[test]
    fn upserts_merge_by_key_and_keep_first_insert_order() {
        let mut st = FlowState::default();
        let lim = StateLimits::default();
        st.apply(upsert_nodes(&[("b", "pending"), ("a", "pending")]), lim)
            .unwrap();
        st.apply(upsert_nodes(&[("b", "succeeded")]), lim).unwrap();
        let got: Vec<(&str, &str)> = st
            .nodes()
            .map(|n| (n.id.as_str(), n.status.as_str()))
            .collect();
        assert_eq!(got, vec![("b", "succeeded"), ("a", "pending")]);
    }

    #[test]
    fn many_more_events_than_a_ring_holds_lose_nothing() {
        // Upstream folds a 4096-event ring; the materialised view keeps every node.
        let mut st = FlowState::default();
        for i in 0..10_000 {
            st.apply(
                upsert_nodes(&[(&format!("n{i}"), "running")]),
                StateLimits {
                    max_nodes: 20_000,
                    max_rels: 10,
                },
            )
            .unwrap();
        }
        assert_eq!(st.node_count(), 10_000);
    }

    #[test]
    fn delete_nodes_cascades_to_touching_relationships() {
        let mut st = FlowState::default();
        let lim = StateLimits::default();
        st.apply(upsert_nodes(&[("a", "x"), ("b", "x"), ("c", "x")]), lim)
            .unwrap();
        st.apply(
            msg(&format!(
                r#"{{"type":"upsert-rels","relationships":[{},{}]}}"#,
                rel("a", "b"),
                rel("b", "c")
            )),
            lim,
        )
        .unwrap();
        st.apply(msg(r#"{"type":"delete-nodes","ids":["a","zz"]}"#), lim)
            .unwrap();
        assert_eq!(st.node_count(), 2);
        let keys: Vec<(&str, &str)> = st
            .relationships()
            .map(|r| (r.from_id.as_str(), r.to_id.as_str()))
            .collect();
        assert_eq!(keys, vec![("b", "c")]);
        st.apply(
            msg(r#"{"type":"delete-rels","pairs":[{"fromId":"b","toId":"c","type":"finish-to-start"}]}"#),
            lim,
        )
        .unwrap();
        assert_eq!(st.rel_count(), 0);
    }

    #[test]
    fn a_flow_with_nodes_but_no_instance_snapshots_upstreams_placeholder_and_decodes() {
        let mut st = FlowState::default();
        st.apply(upsert_nodes(&[("n1", "running")]), StateLimits::default())
            .unwrap();
        let body = st.encode_snapshot("f");
        let decoded = FlowMessage::decode(&body).unwrap();
        let FlowMessage::Snapshot { flow, nodes, .. } = decoded else {
            panic!("not a snapshot");
        };
        assert_eq!((flow.id.as_str(), flow.status.as_str()), ("f", "open"));
        assert_eq!(flow.started_at, 0);
        assert_eq!(nodes.len(), 1);
        // The placeholder is only on the wire: the state still has no instance.
        assert!(st.flow().is_none());
    }

    #[test]
    fn snapshot_replaces_everything_and_round_trips() {
        let mut st = FlowState::default();
        let lim = StateLimits::default();
        st.apply(upsert_nodes(&[("old", "x")]), lim).unwrap();
        let body = format!(
            r#"{{"type":"snapshot","flow":{{"id":"f","status":"running","startedAt":5}},"nodes":[{}],"relationships":[{}]}}"#,
            node("n", "running"),
            rel("n", "n2")
        );
        st.apply(msg(&body), lim).unwrap();
        assert_eq!(st.encode_snapshot("f"), body.as_bytes());
    }

    #[test]
    fn limits_refuse_without_changing_anything() {
        let mut st = FlowState::default();
        let lim = StateLimits {
            max_nodes: 2,
            max_rels: 1,
        };
        st.apply(upsert_nodes(&[("a", "x"), ("b", "x")]), lim)
            .unwrap();
        // Re-upserting existing nodes is fine at the limit.
        st.apply(upsert_nodes(&[("a", "y")]), lim).unwrap();
        let err = st.apply(upsert_nodes(&[("c", "x")]), lim).unwrap_err();
        assert_eq!((err.field, err.limit, err.would), ("nodes", 2, 3));
        assert_eq!(st.node_count(), 2);
        let two = msg(&format!(
            r#"{{"type":"upsert-rels","relationships":[{},{}]}}"#,
            rel("a", "b"),
            rel("b", "a")
        ));
        assert_eq!(st.apply(two, lim).unwrap_err().field, "relationships");
        assert_eq!(st.rel_count(), 0);
    }
}
