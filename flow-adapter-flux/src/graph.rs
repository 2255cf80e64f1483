//! The emitter's view of the cluster: every watched HelmRelease and HelmChart, the node and
//! relationships last mapped for each release, and the region rollup. Each watch event goes in,
//! the resulting [`Change`]s (keyed for the coalescing queue) come out.
//!
//! PURE: no client, no clock (the start time is an argument). It is the reflector store of the
//! watch glue: the glue converts objects and forwards watch events, nothing else.
//!
//! - A release change re-maps it; its node is emitted when it differs, its relationships are
//!   diffed (new/changed → upsert, gone → delete). Removed `dependsOn` entries become
//!   `delete-rels` (upstream never removed them).
//! - A HelmChart change re-maps the releases whose chart it is.
//! - A deleted release → `delete-nodes` plus `delete-rels` for the edges it owned.
//! - A re-list (`Init` … `InitDone`) deletes whatever was known before and not listed again.
//! - The region node's status is the worst-of rollup of the release nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use contract::{FlowInstance, FlowNode, RelPair, Relationship};

use crate::flux::{Chart, ObjectRef, Release};
use crate::mapper::{self, MapContext, Mapped, Status};

/// A queue key: one per node, per relationship, and one for the flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The flow instance.
    Flow,
    /// A node id.
    Node(String),
    /// A relationship's natural key.
    Rel(RelPair),
}

/// The latest desired state of a key.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `upsert-flow`.
    Flow(FlowInstance),
    /// `upsert-nodes`.
    UpsertNode(FlowNode),
    /// `delete-nodes`.
    DeleteNode,
    /// `upsert-rels`.
    UpsertRel(Relationship),
    /// `delete-rels`.
    DeleteRel,
}

impl Op {
    /// True for the two delete kinds.
    pub fn is_delete(&self) -> bool {
        matches!(self, Op::DeleteNode | Op::DeleteRel)
    }
}

/// One change for the queue.
pub type Change = (Key, Op);

/// Which watch a re-list belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Watched {
    /// HelmReleases.
    Releases,
    /// HelmCharts.
    Charts,
}

/// See the module docs.
#[derive(Debug)]
pub struct Graph {
    ctx: MapContext,
    releases: BTreeMap<ObjectRef, Release>,
    charts: HashMap<ObjectRef, Chart>,
    mapped: HashMap<ObjectRef, Mapped>,
    region_status: Option<Status>,
    flow: Option<FlowInstance>,
    /// Keys seen since `Init`, per watch, while a re-list is under way.
    relisting: HashMap<Watched, HashSet<ObjectRef>>,
}

impl Graph {
    /// An empty graph.
    pub fn new(ctx: MapContext) -> Self {
        Self {
            ctx,
            releases: BTreeMap::new(),
            charts: HashMap::new(),
            mapped: HashMap::new(),
            region_status: None,
            flow: None,
            relisting: HashMap::new(),
        }
    }

    /// The mapping context.
    pub fn context(&self) -> &MapContext {
        &self.ctx
    }

    /// The `upsert-flow` and the region node, sent first.
    pub fn start(&mut self, now_ms: i64) -> Vec<Change> {
        let flow = mapper::flow_instance(&self.ctx, now_ms);
        self.flow = Some(flow.clone());
        let mut out = vec![(Key::Flow, Op::Flow(flow))];
        self.region_status = None;
        self.rollup(&mut out);
        out
    }

    /// Releases known.
    pub fn release_count(&self) -> usize {
        self.releases.len()
    }

    /// Every node id this graph currently owns (releases and the region).
    pub fn node_ids(&self) -> HashSet<String> {
        let mut ids: HashSet<String> = self.mapped.values().map(|m| m.node.id.clone()).collect();
        ids.insert(self.ctx.region_id());
        ids
    }

    /// The whole desired state (flow, region, every node and relationship).
    pub fn full_state(&self) -> Vec<Change> {
        let mut out = Vec::new();
        if let Some(f) = &self.flow {
            out.push((Key::Flow, Op::Flow(f.clone())));
        }
        let status = self.region_status.unwrap_or(Status::Pending);
        let region = mapper::region_node(&self.ctx, status);
        out.push((Key::Node(region.id.clone()), Op::UpsertNode(region)));
        for m in self.mapped.values() {
            out.push((Key::Node(m.node.id.clone()), Op::UpsertNode(m.node.clone())));
            for r in &m.rels {
                out.push((Key::Rel(r.key()), Op::UpsertRel(r.clone())));
            }
        }
        out
    }

    /// A re-list of `watched` starts (`watcher::Event::Init`).
    pub fn relist_begin(&mut self, watched: Watched) {
        self.relisting.insert(watched, HashSet::new());
    }

    /// A re-list of `watched` is complete (`InitDone`): objects known before and not listed
    /// again are deleted.
    pub fn relist_done(&mut self, watched: Watched) -> Vec<Change> {
        let Some(seen) = self.relisting.remove(&watched) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        match watched {
            Watched::Releases => {
                let gone: Vec<ObjectRef> = self
                    .releases
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    out.extend(self.delete_release(&k));
                }
            }
            Watched::Charts => {
                let gone: Vec<ObjectRef> = self
                    .charts
                    .keys()
                    .filter(|k| !seen.contains(*k))
                    .cloned()
                    .collect();
                for k in gone {
                    out.extend(self.delete_chart(&k));
                }
            }
        }
        out
    }

    fn seen(&mut self, watched: Watched, key: &ObjectRef) {
        if let Some(s) = self.relisting.get_mut(&watched) {
            s.insert(key.clone());
        }
    }

    /// A release was added or changed.
    pub fn apply_release(&mut self, r: Release) -> Vec<Change> {
        self.seen(Watched::Releases, &r.id);
        let key = r.id.clone();
        self.releases.insert(key.clone(), r);
        let mut out = Vec::new();
        self.remap(&key, &mut out);
        self.rollup(&mut out);
        out
    }

    /// A release was deleted.
    pub fn delete_release(&mut self, key: &ObjectRef) -> Vec<Change> {
        self.releases.remove(key);
        let mut out = Vec::new();
        if let Some(old) = self.mapped.remove(key) {
            for r in &old.rels {
                out.push((Key::Rel(r.key()), Op::DeleteRel));
            }
            out.push((Key::Node(old.node.id), Op::DeleteNode));
        }
        self.rollup(&mut out);
        out
    }

    /// A HelmChart was added or changed: its releases are re-mapped.
    pub fn apply_chart(&mut self, c: Chart) -> Vec<Change> {
        self.seen(Watched::Charts, &c.id);
        let key = c.id.clone();
        self.charts.insert(key.clone(), c);
        self.remap_chart_users(&key)
    }

    /// A HelmChart was deleted.
    pub fn delete_chart(&mut self, key: &ObjectRef) -> Vec<Change> {
        if self.charts.remove(key).is_none() {
            return Vec::new();
        }
        self.remap_chart_users(key)
    }

    fn remap_chart_users(&mut self, chart: &ObjectRef) -> Vec<Change> {
        let users: Vec<ObjectRef> = self
            .releases
            .values()
            .filter(|r| r.chart.as_ref() == Some(chart))
            .map(|r| r.id.clone())
            .collect();
        let mut out = Vec::new();
        for u in users {
            self.remap(&u, &mut out);
        }
        self.rollup(&mut out);
        out
    }

    fn remap(&mut self, key: &ObjectRef, out: &mut Vec<Change>) {
        let Some(r) = self.releases.get(key) else {
            return;
        };
        let chart = r.chart.as_ref().and_then(|c| self.charts.get(c));
        let previous = self.mapped.get(key);
        let new = mapper::map_release(&self.ctx, r, chart, previous.map(|m| &m.node));
        if previous.is_some_and(|p| *p == new) {
            return;
        }
        let old_rels: BTreeMap<RelPair, &Relationship> = previous
            .map(|p| p.rels.iter().map(|r| (r.key(), r)).collect())
            .unwrap_or_default();
        if previous.is_none_or(|p| p.node != new.node) {
            out.push((
                Key::Node(new.node.id.clone()),
                Op::UpsertNode(new.node.clone()),
            ));
        }
        let new_keys: BTreeSet<RelPair> = new.rels.iter().map(Relationship::key).collect();
        for rel in &new.rels {
            if old_rels.get(&rel.key()).is_none_or(|o| *o != rel) {
                out.push((Key::Rel(rel.key()), Op::UpsertRel(rel.clone())));
            }
        }
        for k in old_rels.keys().filter(|k| !new_keys.contains(*k)) {
            out.push((Key::Rel(k.clone()), Op::DeleteRel));
        }
        self.mapped.insert(key.clone(), new);
    }

    fn rollup(&mut self, out: &mut Vec<Change>) {
        let status = mapper::rollup(self.mapped.values().map(|m| Status::parse(&m.node.status)));
        if self.region_status != Some(status) {
            self.region_status = Some(status);
            let node = mapper::region_node(&self.ctx, status);
            out.push((Key::Node(node.id.clone()), Op::UpsertNode(node)));
        }
    }
}
