//! HelmRelease (+ its HelmChart) → FlowNode and relationships.
//!
//! PURE and table-driven: [`RULES`] is the status table, first match wins. It is the seed table
//! of upstream's mapper (`spec/upstream-flow.md` §3.4) with the fixes of §8.5 / peers §4.3:
//!
//! | rule                  | when                                                       | status      |
//! |-----------------------|------------------------------------------------------------|-------------|
//! | `stalled`             | `Stalled=True`                                             | `failed`    |
//! | `generation-behind`   | `0 ≤ status.observedGeneration < metadata.generation`      | `running`   |
//! | `ready-true`          | `Ready=True`                                               | `succeeded` |
//! | `ready-false-failure` | `Ready=False`, reason InstallFailed/UpgradeFailed/RetriesExhausted | `failed` |
//! | `ready-false-other`   | `Ready=False`, any other reason                            | `running`   |
//! | `ready-unknown`       | `Ready=Unknown` (or any other value)                       | `running`   |
//! | `no-ready`            | no `Ready` condition                                       | `pending`   |
//!
//! On top of the status: `spec.suspend` → `meta.suspended: true`; the last failure message
//! (Ready/Stalled/Released/TestSuccess failing) is kept in `meta.lastFailure` after remediation
//! (the previous node carries it over); the HelmChart's readiness is folded into `meta.chart`.
//!
//! Ids: `{REGION_KEY}/{name}`, or `{REGION_KEY}/{namespace}/{name}` when more than one namespace
//! is watched. A `dependsOn` entry in another namespace than the watched one always carries its
//! namespace, so it never collides with a same-named release of the watched namespace.
//! Relationships: each release `contains` → region (child `fromId`, parent `toId`); each
//! `dependsOn` → `finish-to-start`, `on-success`, from the dependency to the release.

use std::collections::BTreeSet;

use contract::{
    Condition as EdgeCondition, FlowInstance, FlowNode, Relationship, RelationshipType,
};
use serde_json::{Map, Value, json};

use crate::flux::{Chart, ObjectRef, Release};

/// `meta.emittedBy` of everything this adapter writes; the pruning after a restart only touches
/// nodes carrying it.
pub const EMITTED_BY: &str = "flow-adapter-flux";

/// Label that overrides the family.
pub const FAMILY_LABEL: &str = "catalyst.openova.io/family";

/// Ready=False reasons that are terminal failures.
pub const FAILURE_REASONS: [&str; 3] = ["InstallFailed", "UpgradeFailed", "RetriesExhausted"];

/// The console's palette.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Nothing reported yet.
    Pending,
    /// In flight or retrying.
    Running,
    /// Installed and ready.
    Succeeded,
    /// Terminally failed.
    Failed,
}

impl Status {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
        }
    }

    /// Parses a wire value; unknown values count as running (upstream's rollup rule).
    pub fn parse(s: &str) -> Status {
        match s {
            "pending" => Status::Pending,
            "succeeded" => Status::Succeeded,
            "failed" => Status::Failed,
            _ => Status::Running,
        }
    }
}

/// One row of the status table.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Name, also written to `meta.rule`.
    pub name: &'static str,
    /// Whether the row matches.
    pub matches: fn(&Release) -> bool,
    /// The status it gives.
    pub status: Status,
}

fn ready_status(r: &Release) -> Option<&str> {
    r.condition("Ready").map(|c| c.status.as_str())
}

/// The status table; first match wins. The last row always matches.
pub const RULES: [Rule; 7] = [
    Rule {
        name: "stalled",
        matches: |r| r.condition("Stalled").is_some_and(|c| c.is_true()),
        status: Status::Failed,
    },
    Rule {
        name: "generation-behind",
        // Flux's CRD defaults `status.observedGeneration` to -1: a release helm-controller has
        // never looked at is not "behind", it has not started (found on a real kube-apiserver,
        // which applies that default; the in-memory API did not).
        matches: |r| matches!((r.observed_generation, r.generation), (Some(o), Some(g)) if o >= 0 && o < g),
        status: Status::Running,
    },
    Rule {
        name: "ready-true",
        matches: |r| ready_status(r) == Some("True"),
        status: Status::Succeeded,
    },
    Rule {
        name: "ready-false-failure",
        matches: |r| {
            r.condition("Ready")
                .is_some_and(|c| c.is_false() && FAILURE_REASONS.contains(&c.reason.as_str()))
        },
        status: Status::Failed,
    },
    Rule {
        name: "ready-false-other",
        matches: |r| ready_status(r) == Some("False"),
        status: Status::Running,
    },
    Rule {
        name: "ready-unknown",
        matches: |r| ready_status(r).is_some(),
        status: Status::Running,
    },
    Rule {
        name: "no-ready",
        matches: |_| true,
        status: Status::Pending,
    },
];

/// The first matching row of [`RULES`].
pub fn classify(r: &Release) -> &'static Rule {
    // The last rule matches everything, so the fallback is never used.
    RULES
        .iter()
        .find(|rule| (rule.matches)(r))
        .unwrap_or(&RULES[RULES.len() - 1])
}

/// What the mapper needs besides the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapContext {
    /// `REGION_KEY`, trimmed (`default` when empty, as upstream).
    pub region: String,
    /// `FLOW_ID`.
    pub flow_id: String,
    /// The watched namespace, or None when all namespaces are watched (ids then carry the
    /// namespace).
    pub namespace: Option<String>,
}

impl MapContext {
    /// A context; an empty region becomes `default`.
    pub fn new(region: &str, flow_id: &str, namespace: Option<&str>) -> Self {
        let region = region.trim();
        Self {
            region: if region.is_empty() {
                "default".into()
            } else {
                region.into()
            },
            flow_id: flow_id.into(),
            namespace: namespace
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
        }
    }

    /// The id of a release's node.
    pub fn node_id(&self, r: &ObjectRef) -> String {
        match &self.namespace {
            Some(ns) if *ns == r.namespace => format!("{}/{}", self.region, r.name),
            _ => format!("{}/{}/{}", self.region, r.namespace, r.name),
        }
    }

    /// The id of the synthetic region node.
    pub fn region_id(&self) -> String {
        self.region.clone()
    }
}

/// A release's node and the relationships it owns (its `contains` and its incoming
/// `dependsOn` edges).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The node.
    pub node: FlowNode,
    /// Its relationships, sorted by natural key.
    pub rels: Vec<Relationship>,
}

/// The family: label `catalyst.openova.io/family` (trimmed) else the name without `bp-`.
pub fn family(r: &Release) -> String {
    match r.labels.get(FAMILY_LABEL).map(|f| f.trim()) {
        Some(f) if !f.is_empty() => f.to_owned(),
        _ => {
            r.id.name
                .strip_prefix("bp-")
                .unwrap_or(&r.id.name)
                .to_owned()
        }
    }
}

/// The message of a condition that reports a failure right now, if any.
fn current_failure(r: &Release) -> Option<(&str, &str)> {
    let failing = |kind: &str| {
        r.condition(kind)
            .filter(|c| match kind {
                "Stalled" => c.is_true(),
                "Ready" => c.is_false() && FAILURE_REASONS.contains(&c.reason.as_str()),
                _ => c.is_false(),
            })
            .map(|c| (c.reason.as_str(), c.message.as_str()))
    };
    ["Ready", "Stalled", "Released", "TestSuccess"]
        .into_iter()
        .find_map(failing)
}

/// Maps a release. `chart` is its HelmChart when known; `previous` is the node last mapped for
/// it (carries `meta.lastFailure` over a remediation).
pub fn map_release(
    ctx: &MapContext,
    r: &Release,
    chart: Option<&Chart>,
    previous: Option<&FlowNode>,
) -> Mapped {
    let rule = classify(r);
    let id = ctx.node_id(&r.id);
    let mut meta = Map::new();
    meta.insert("kind".into(), json!("HelmRelease"));
    meta.insert("namespace".into(), json!(r.id.namespace));
    meta.insert("emittedBy".into(), json!(EMITTED_BY));
    meta.insert("rule".into(), json!(rule.name));
    if let Some(ready) = r.condition("Ready") {
        meta.insert("reason".into(), json!(ready.reason));
        if !ready.message.is_empty() {
            meta.insert("message".into(), json!(ready.message));
        }
    }
    if r.suspend {
        meta.insert("suspended".into(), json!(true));
    }
    if let Some(stalled) = r.condition("Stalled").filter(|c| c.is_true()) {
        meta.insert("stalledReason".into(), json!(stalled.reason));
    }
    if let (Some(o), Some(g)) = (r.observed_generation, r.generation) {
        meta.insert("observedGeneration".into(), json!(o));
        meta.insert("generation".into(), json!(g));
    }
    if let Some(h) = &r.history_head {
        meta.insert("releaseStatus".into(), json!(h.status));
        if !h.chart_version.is_empty() {
            meta.insert("chartVersion".into(), json!(h.chart_version));
        }
    }
    match current_failure(r) {
        Some((reason, message)) => {
            meta.insert("lastFailure".into(), json!(message));
            meta.insert("lastFailureReason".into(), json!(reason));
        }
        None => {
            if let Some(p) = previous {
                for k in ["lastFailure", "lastFailureReason"] {
                    if let Some(v) = p.meta.get(k) {
                        meta.insert(k.into(), v.clone());
                    }
                }
            }
        }
    }
    if let Some(c) = chart {
        let mut cm = Map::new();
        cm.insert("name".into(), json!(c.id.to_string()));
        match c.ready() {
            Some(ready) => {
                cm.insert("ready".into(), json!(ready.status));
                cm.insert("reason".into(), json!(ready.reason));
                if !ready.message.is_empty() {
                    cm.insert("message".into(), json!(ready.message));
                }
            }
            None => {
                cm.insert("ready".into(), json!("Unknown"));
            }
        }
        meta.insert("chart".into(), Value::Object(cm));
    }
    let ended_at = match rule.status {
        Status::Succeeded | Status::Failed => r
            .condition("Ready")
            .or_else(|| r.condition("Stalled"))
            .and_then(|c| c.last_transition_ms)
            .filter(|t| *t >= 0),
        _ => None,
    };
    let node = FlowNode {
        id: id.clone(),
        flow_id: ctx.flow_id.clone(),
        label: r.id.name.clone(),
        status: rule.status.as_str().into(),
        family: Some(family(r)),
        region: Some(ctx.region.clone()),
        started_at: r.created_ms.filter(|t| *t >= 0),
        ended_at,
        meta,
    };
    let mut rels = vec![Relationship {
        from_id: id.clone(),
        to_id: ctx.region_id(),
        from_flow_id: None,
        to_flow_id: None,
        kind: RelationshipType::Contains,
        condition: None,
        lag: 0,
    }];
    let deps: BTreeSet<String> = r.depends_on.iter().map(|d| ctx.node_id(d)).collect();
    rels.extend(
        deps.into_iter()
            .filter(|d| *d != id)
            .map(|dep| Relationship {
                from_id: dep,
                to_id: id.clone(),
                from_flow_id: None,
                to_flow_id: None,
                kind: RelationshipType::FinishToStart,
                condition: Some(EdgeCondition::OnSuccess),
                lag: 0,
            }),
    );
    rels.sort_by_key(Relationship::key);
    Mapped { node, rels }
}

/// Worst-of rollup: `failed > running > pending > succeeded`; empty → `pending`.
pub fn rollup(statuses: impl IntoIterator<Item = Status>) -> Status {
    let mut any = false;
    let mut worst = Status::Succeeded;
    let rank = |s: Status| match s {
        Status::Succeeded => 0,
        Status::Pending => 1,
        Status::Running => 2,
        Status::Failed => 3,
    };
    for s in statuses {
        any = true;
        if rank(s) > rank(worst) {
            worst = s;
        }
    }
    if any { worst } else { Status::Pending }
}

/// The synthetic region node (a group on the canvas).
pub fn region_node(ctx: &MapContext, status: Status) -> FlowNode {
    let mut meta = Map::new();
    meta.insert("kind".into(), json!("Region"));
    meta.insert("isGroup".into(), json!(true));
    meta.insert("layout".into(), json!("lane-vertical"));
    meta.insert("emittedBy".into(), json!(EMITTED_BY));
    FlowNode {
        id: ctx.region_id(),
        flow_id: ctx.flow_id.clone(),
        label: ctx.region.clone(),
        status: status.as_str().into(),
        family: Some("region".into()),
        region: Some(ctx.region.clone()),
        started_at: None,
        ended_at: None,
        meta,
    }
}

/// The `upsert-flow` sent at start.
pub fn flow_instance(ctx: &MapContext, started_at_ms: i64) -> FlowInstance {
    let mut meta = Map::new();
    meta.insert("emittedBy".into(), json!(EMITTED_BY));
    meta.insert("region".into(), json!(ctx.region));
    FlowInstance {
        id: ctx.flow_id.clone(),
        definition_id: None,
        parent_flow_id: None,
        triggered_by: Vec::new(),
        status: "running".into(),
        started_at: started_at_ms.max(0),
        ended_at: None,
        meta,
    }
}
