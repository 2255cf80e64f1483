//! FlowMessage schema version 1.
//!
//! The wire shape is upstream's flat Go envelope: `{"type": …, "flow", "nodes",
//! "relationships", "ids", "pairs"}` with every payload key omitted when empty. In Rust the
//! envelope is the enum [`FlowMessage`], so a message can only carry the payload of its type.
//!
//! Decoding ([`FlowMessage::decode`]) is strict where upstream is lax (upstream's
//! `DecodeFlowMessage` checks only that the payload list is non-empty):
//! unknown `type`, missing or empty required fields, unknown enum values (`type`, `condition`,
//! `when`), negative `lag` or times, payload keys of another message type, and duplicate
//! natural keys inside one envelope are all errors that name the field. Unknown object keys are
//! ignored so that additive schema changes stay compatible. [`FlowMessage::check_flow_id`]
//! checks the message against the flow of the URL it was posted to.

use crate::error::ContractError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Free-form, adapter-defined metadata (`meta`). Keys are kept sorted, as Go writes maps.
pub type Meta = Map<String, Value>;

/// Deserialize `null` as the type's default, as Go's `omitempty` producers may send either.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A flow run: the canvas's top-level object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowInstance {
    /// Unique runtime id (the deployment id in Catalyst). Required.
    pub id: String,
    /// Template id, when the flow is a run of a definition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_id: Option<String>,
    /// Parent flow of a child workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_flow_id: Option<String>,
    /// Flows whose outcome triggered this one.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub triggered_by: Vec<Triggerer>,
    /// Open vocabulary (`running`, `succeeded`, …). Required.
    pub status: String,
    /// Unix ms. Always on the wire (upstream's Go field has no `omitempty`); 0 when unknown.
    #[serde(default)]
    pub started_at: i64,
    /// Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Adapter-defined (`emittedBy`, `region`, `sovereignFQDN`, …).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub meta: Meta,
}

/// One edge of "flow X triggered this flow when it ended with `when`".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Triggerer {
    /// The triggering flow. Required.
    pub flow_id: String,
    /// On which outcome.
    pub when: When,
}

/// Outcome a [`Triggerer`] fires on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum When {
    /// The triggering flow succeeded.
    Success,
    /// The triggering flow failed.
    Failure,
    /// Either.
    Always,
}

/// A node of the graph. Natural key `(flowId, id)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowNode {
    /// Unique within `flowId`. Required.
    pub id: String,
    /// The flow the node belongs to. Required; must equal the flow of the URL.
    pub flow_id: String,
    /// Plain-text label. Required.
    pub label: String,
    /// Open vocabulary; the console's palette is `pending | running | succeeded | failed`.
    pub status: String,
    /// Colour band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    /// Swimlane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<i64>,
    /// Unix ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
    /// Adapter-defined (`layout`, `isGroup`, `namespace`, …).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Map::is_empty"
    )]
    pub meta: Meta,
}

/// Relationship types. `contains` is structural (child `fromId` inside parent `toId`); the
/// others are blocking edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelationshipType {
    /// `toId` (parent) contains `fromId` (child).
    Contains,
    /// `toId` starts after `fromId` finishes.
    FinishToStart,
    /// `toId` starts after `fromId` starts.
    StartToStart,
    /// `toId` finishes after `fromId` finishes.
    FinishToFinish,
    /// `toId` finishes after `fromId` starts.
    StartToFinish,
    /// `fromId` triggers `toId`.
    Triggers,
}

impl RelationshipType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            RelationshipType::Contains => "contains",
            RelationshipType::FinishToStart => "finish-to-start",
            RelationshipType::StartToStart => "start-to-start",
            RelationshipType::FinishToFinish => "finish-to-finish",
            RelationshipType::StartToFinish => "start-to-finish",
            RelationshipType::Triggers => "triggers",
        }
    }
}

/// When a blocking edge applies. Absent means `on-success` for layout purposes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// After success of `fromId`.
    OnSuccess,
    /// After failure of `fromId`.
    OnFailure,
    /// In either case.
    Always,
}

/// An edge. Natural key `(fromId, toId, type)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Relationship {
    /// Source (the child for `contains`). Required.
    pub from_id: String,
    /// Target (the parent for `contains`). Required.
    pub to_id: String,
    /// Flow of `fromId` when it is not the posted flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_flow_id: Option<String>,
    /// Flow of `toId` when it is not the posted flow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_flow_id: Option<String>,
    /// Relationship type. Required.
    #[serde(rename = "type")]
    pub kind: RelationshipType,
    /// Optional condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
    /// Seconds, ≥ 0; 0 is omitted on the wire as upstream's `int64,omitempty`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub lag: i64,
}

impl Relationship {
    /// The natural key `(fromId, toId, type)`.
    pub fn key(&self) -> RelPair {
        RelPair {
            from_id: self.from_id.clone(),
            to_id: self.to_id.clone(),
            kind: self.kind,
        }
    }
}

/// The natural key of a [`Relationship`], used by `delete-rels`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelPair {
    /// Source id.
    pub from_id: String,
    /// Target id.
    pub to_id: String,
    /// Relationship type.
    #[serde(rename = "type")]
    pub kind: RelationshipType,
}

/// The six message types, in the order of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Replace all state of the flow.
    Snapshot,
    /// Replace the flow metadata.
    UpsertFlow,
    /// Merge nodes by `(flowId, id)`.
    UpsertNodes,
    /// Merge relationships by `(fromId, toId, type)`.
    UpsertRels,
    /// Remove nodes (consumers prune their edges).
    DeleteNodes,
    /// Remove relationships by natural key.
    DeleteRels,
}

impl MessageKind {
    /// All kinds, in contract order.
    pub const ALL: [MessageKind; 6] = [
        MessageKind::Snapshot,
        MessageKind::UpsertFlow,
        MessageKind::UpsertNodes,
        MessageKind::UpsertRels,
        MessageKind::DeleteNodes,
        MessageKind::DeleteRels,
    ];

    /// The wire name (also the SSE `event:` name).
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Snapshot => "snapshot",
            MessageKind::UpsertFlow => "upsert-flow",
            MessageKind::UpsertNodes => "upsert-nodes",
            MessageKind::UpsertRels => "upsert-rels",
            MessageKind::DeleteNodes => "delete-nodes",
            MessageKind::DeleteRels => "delete-rels",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A FlowMessage v1 envelope. Construct freely; [`FlowMessage::validate`] checks the rules, and
/// [`FlowMessage::decode`] decodes and validates in one go.
#[derive(Debug, Clone, PartialEq)]
pub enum FlowMessage {
    /// Full state of one flow.
    Snapshot {
        /// The flow.
        flow: FlowInstance,
        /// Every node.
        nodes: Vec<FlowNode>,
        /// Every relationship.
        relationships: Vec<Relationship>,
    },
    /// Flow metadata.
    UpsertFlow {
        /// The flow.
        flow: FlowInstance,
    },
    /// New or changed nodes.
    UpsertNodes {
        /// Non-empty.
        nodes: Vec<FlowNode>,
    },
    /// New or changed relationships.
    UpsertRels {
        /// Non-empty.
        relationships: Vec<Relationship>,
    },
    /// Removed nodes.
    DeleteNodes {
        /// Non-empty node ids.
        ids: Vec<String>,
    },
    /// Removed relationships.
    DeleteRels {
        /// Non-empty natural keys.
        pairs: Vec<RelPair>,
    },
}

/// The flat wire envelope as upstream's Go struct decodes it.
#[derive(Deserialize)]
struct WireIn {
    #[serde(rename = "type")]
    kind: Option<String>,
    flow: Option<FlowInstance>,
    nodes: Option<Vec<FlowNode>>,
    relationships: Option<Vec<Relationship>>,
    ids: Option<Vec<String>>,
    pairs: Option<Vec<RelPair>>,
}

/// The flat wire envelope as it is written: payload keys omitted when empty.
#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    flow: Option<&'a FlowInstance>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    nodes: &'a [FlowNode],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    relationships: &'a [Relationship],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    ids: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    pairs: &'a [RelPair],
}

impl FlowMessage {
    /// Decodes a JSON body and validates it. The error names the field.
    pub fn decode(body: &[u8]) -> Result<FlowMessage, ContractError> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let wire: WireIn = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            ContractError::Decode {
                path,
                message: e.into_inner().to_string(),
            }
        })?;
        de.end().map_err(|e| ContractError::Decode {
            path: ".".into(),
            message: e.to_string(),
        })?;
        let msg = FlowMessage::from_wire(wire)?;
        msg.validate()?;
        Ok(msg)
    }

    /// Encodes to compact JSON in upstream's field order.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain structs of strings, numbers and JSON maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn from_wire(w: WireIn) -> Result<FlowMessage, ContractError> {
        let Some(type_name) = w.kind else {
            return Err(ContractError::Decode {
                path: "type".into(),
                message: "missing field `type`".into(),
            });
        };
        let kind = MessageKind::parse(&type_name).ok_or(ContractError::UnknownType(type_name))?;
        let k = kind.as_str();
        let misplaced = |present: bool, field: &'static str| -> Result<(), ContractError> {
            if present {
                Err(ContractError::Misplaced { kind: k, field })
            } else {
                Ok(())
            }
        };
        // Which payload keys each type may carry; any other present key is an error.
        let allowed: &[&str] = match kind {
            MessageKind::Snapshot => &["flow", "nodes", "relationships"],
            MessageKind::UpsertFlow => &["flow"],
            MessageKind::UpsertNodes => &["nodes"],
            MessageKind::UpsertRels => &["relationships"],
            MessageKind::DeleteNodes => &["ids"],
            MessageKind::DeleteRels => &["pairs"],
        };
        let has = |f: &str| allowed.contains(&f);
        misplaced(w.flow.is_some() && !has("flow"), "flow")?;
        misplaced(w.nodes.is_some() && !has("nodes"), "nodes")?;
        misplaced(
            w.relationships.is_some() && !has("relationships"),
            "relationships",
        )?;
        misplaced(w.ids.is_some() && !has("ids"), "ids")?;
        misplaced(w.pairs.is_some() && !has("pairs"), "pairs")?;

        let required = |field: &str| ContractError::Required {
            kind: k,
            field: field.into(),
        };
        Ok(match kind {
            MessageKind::Snapshot => FlowMessage::Snapshot {
                flow: w.flow.ok_or_else(|| required("flow"))?,
                nodes: w.nodes.unwrap_or_default(),
                relationships: w.relationships.unwrap_or_default(),
            },
            MessageKind::UpsertFlow => FlowMessage::UpsertFlow {
                flow: w.flow.ok_or_else(|| required("flow"))?,
            },
            MessageKind::UpsertNodes => FlowMessage::UpsertNodes {
                nodes: w.nodes.unwrap_or_default(),
            },
            MessageKind::UpsertRels => FlowMessage::UpsertRels {
                relationships: w.relationships.unwrap_or_default(),
            },
            MessageKind::DeleteNodes => FlowMessage::DeleteNodes {
                ids: w.ids.unwrap_or_default(),
            },
            MessageKind::DeleteRels => FlowMessage::DeleteRels {
                pairs: w.pairs.unwrap_or_default(),
            },
        })
    }

    /// The message type.
    pub fn kind(&self) -> MessageKind {
        match self {
            FlowMessage::Snapshot { .. } => MessageKind::Snapshot,
            FlowMessage::UpsertFlow { .. } => MessageKind::UpsertFlow,
            FlowMessage::UpsertNodes { .. } => MessageKind::UpsertNodes,
            FlowMessage::UpsertRels { .. } => MessageKind::UpsertRels,
            FlowMessage::DeleteNodes { .. } => MessageKind::DeleteNodes,
            FlowMessage::DeleteRels { .. } => MessageKind::DeleteRels,
        }
    }

    /// Checks every rule of the contract except the URL's flow id (see
    /// [`FlowMessage::check_flow_id`]).
    pub fn validate(&self) -> Result<(), ContractError> {
        let k = self.kind().as_str();
        let v = Validator { kind: k };
        match self {
            FlowMessage::Snapshot {
                flow,
                nodes,
                relationships,
            } => {
                v.flow(flow)?;
                v.nodes(nodes)?;
                v.rels(relationships)
            }
            FlowMessage::UpsertFlow { flow } => v.flow(flow),
            FlowMessage::UpsertNodes { nodes } => {
                v.non_empty_list(nodes.is_empty(), "nodes")?;
                v.nodes(nodes)
            }
            FlowMessage::UpsertRels { relationships } => {
                v.non_empty_list(relationships.is_empty(), "relationships")?;
                v.rels(relationships)
            }
            FlowMessage::DeleteNodes { ids } => {
                v.non_empty_list(ids.is_empty(), "ids")?;
                let mut seen = HashMap::with_capacity(ids.len());
                for (i, id) in ids.iter().enumerate() {
                    v.non_empty(id, || format!("ids[{i}]"))?;
                    v.unique(&mut seen, id.as_str(), i, "ids", id)?;
                }
                Ok(())
            }
            FlowMessage::DeleteRels { pairs } => {
                v.non_empty_list(pairs.is_empty(), "pairs")?;
                let mut seen = HashMap::with_capacity(pairs.len());
                for (i, p) in pairs.iter().enumerate() {
                    v.non_empty(&p.from_id, || format!("pairs[{i}].fromId"))?;
                    v.non_empty(&p.to_id, || format!("pairs[{i}].toId"))?;
                    v.unique(&mut seen, p, i, "pairs", &render_pair(p))?;
                }
                Ok(())
            }
        }
    }

    /// Checks that the message belongs to `flow_id` (the flow of the URL it was posted to):
    /// `flow.id` and every `nodes[i].flowId` must equal it.
    pub fn check_flow_id(&self, flow_id: &str) -> Result<(), ContractError> {
        let k = self.kind().as_str();
        let mismatch = |field: String, got: &str| ContractError::FlowMismatch {
            kind: k,
            field,
            expected: flow_id.to_owned(),
            got: got.to_owned(),
        };
        let (flow, nodes): (Option<&FlowInstance>, &[FlowNode]) = match self {
            FlowMessage::Snapshot { flow, nodes, .. } => (Some(flow), nodes),
            FlowMessage::UpsertFlow { flow } => (Some(flow), &[]),
            FlowMessage::UpsertNodes { nodes } => (None, nodes),
            _ => (None, &[]),
        };
        if let Some(f) = flow
            && f.id != flow_id
        {
            return Err(mismatch("flow.id".into(), &f.id));
        }
        for (i, n) in nodes.iter().enumerate() {
            if n.flow_id != flow_id {
                return Err(mismatch(format!("nodes[{i}].flowId"), &n.flow_id));
            }
        }
        Ok(())
    }
}

fn render_pair(p: &RelPair) -> String {
    format!("({}, {}, {})", p.from_id, p.to_id, p.kind.as_str())
}

impl Serialize for FlowMessage {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut w = WireOut {
            kind: self.kind().as_str(),
            flow: None,
            nodes: &[],
            relationships: &[],
            ids: &[],
            pairs: &[],
        };
        match self {
            FlowMessage::Snapshot {
                flow,
                nodes,
                relationships,
            } => {
                w.flow = Some(flow);
                w.nodes = nodes;
                w.relationships = relationships;
            }
            FlowMessage::UpsertFlow { flow } => w.flow = Some(flow),
            FlowMessage::UpsertNodes { nodes } => w.nodes = nodes,
            FlowMessage::UpsertRels { relationships } => w.relationships = relationships,
            FlowMessage::DeleteNodes { ids } => w.ids = ids,
            FlowMessage::DeleteRels { pairs } => w.pairs = pairs,
        }
        w.serialize(s)
    }
}

impl<'de> Deserialize<'de> for FlowMessage {
    /// Decodes and validates, like [`FlowMessage::decode`] (without its field paths for
    /// serde-level errors).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let msg =
            FlowMessage::from_wire(WireIn::deserialize(d)?).map_err(serde::de::Error::custom)?;
        msg.validate().map_err(serde::de::Error::custom)?;
        Ok(msg)
    }
}

/// Field checks with the message kind for error texts.
struct Validator {
    kind: &'static str,
}

impl Validator {
    fn non_empty_list(&self, empty: bool, field: &str) -> Result<(), ContractError> {
        if empty {
            Err(ContractError::Empty {
                kind: self.kind,
                field: field.into(),
            })
        } else {
            Ok(())
        }
    }

    fn non_empty(&self, s: &str, field: impl FnOnce() -> String) -> Result<(), ContractError> {
        if s.is_empty() {
            Err(ContractError::Empty {
                kind: self.kind,
                field: field(),
            })
        } else {
            Ok(())
        }
    }

    fn non_negative(&self, v: i64, field: impl FnOnce() -> String) -> Result<(), ContractError> {
        if v < 0 {
            Err(ContractError::Negative {
                kind: self.kind,
                field: field(),
                value: v,
            })
        } else {
            Ok(())
        }
    }

    fn unique<K: std::hash::Hash + Eq>(
        &self,
        seen: &mut HashMap<K, usize>,
        key: K,
        index: usize,
        list: &str,
        rendered: &str,
    ) -> Result<(), ContractError> {
        if let Some(first) = seen.insert(key, index) {
            return Err(ContractError::Duplicate {
                kind: self.kind,
                field: format!("{list}[{index}]"),
                key: rendered.to_owned(),
                first: format!("{list}[{first}]"),
            });
        }
        Ok(())
    }

    fn flow(&self, f: &FlowInstance) -> Result<(), ContractError> {
        self.non_empty(&f.id, || "flow.id".into())?;
        self.non_empty(&f.status, || "flow.status".into())?;
        self.non_negative(f.started_at, || "flow.startedAt".into())?;
        if let Some(e) = f.ended_at {
            self.non_negative(e, || "flow.endedAt".into())?;
        }
        for (i, t) in f.triggered_by.iter().enumerate() {
            self.non_empty(&t.flow_id, || format!("flow.triggeredBy[{i}].flowId"))?;
        }
        Ok(())
    }

    fn nodes(&self, nodes: &[FlowNode]) -> Result<(), ContractError> {
        let mut seen = HashMap::with_capacity(nodes.len());
        for (i, n) in nodes.iter().enumerate() {
            self.non_empty(&n.id, || format!("nodes[{i}].id"))?;
            self.non_empty(&n.flow_id, || format!("nodes[{i}].flowId"))?;
            self.non_empty(&n.label, || format!("nodes[{i}].label"))?;
            self.non_empty(&n.status, || format!("nodes[{i}].status"))?;
            if let Some(t) = n.started_at {
                self.non_negative(t, || format!("nodes[{i}].startedAt"))?;
            }
            if let Some(t) = n.ended_at {
                self.non_negative(t, || format!("nodes[{i}].endedAt"))?;
            }
            self.unique(
                &mut seen,
                (n.flow_id.as_str(), n.id.as_str()),
                i,
                "nodes",
                &n.id,
            )?;
        }
        Ok(())
    }

    fn rels(&self, rels: &[Relationship]) -> Result<(), ContractError> {
        let mut seen = HashMap::with_capacity(rels.len());
        for (i, r) in rels.iter().enumerate() {
            self.non_empty(&r.from_id, || format!("relationships[{i}].fromId"))?;
            self.non_empty(&r.to_id, || format!("relationships[{i}].toId"))?;
            if let Some(f) = &r.from_flow_id {
                self.non_empty(f, || format!("relationships[{i}].fromFlowId"))?;
            }
            if let Some(f) = &r.to_flow_id {
                self.non_empty(f, || format!("relationships[{i}].toFlowId"))?;
            }
            self.non_negative(r.lag, || format!("relationships[{i}].lag"))?;
            let key = (r.from_id.as_str(), r.to_id.as_str(), r.kind);
            self.unique(&mut seen, key, i, "relationships", &render_pair(&r.key()))?;
        }
        Ok(())
    }
}
