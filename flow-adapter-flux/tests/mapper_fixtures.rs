#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The mapper's table, row by row, on HelmRelease/HelmChart fixtures written on the real Flux
//! CRD shapes (the fixtures are checked against those CRDs by a real kube-apiserver),
//! plus dependsOn fan-out, family, region, ids and the graph's diffs.

use std::collections::BTreeSet;

use contract::{Condition, FlowMessage, RelationshipType};
use flow_adapter_flux::flux::{Chart, ObjectRef, Release};
use flow_adapter_flux::graph::{Graph, Key, Op, Watched};
use flow_adapter_flux::mapper::{self, MapContext, RULES, map_release};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::ControlPlane;
use testkit::kube::Crd;

fn load(file: &str) -> Vec<DynamicObject> {
    let path = format!("{}/tests/fixtures/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v: Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::from_value(v).unwrap()
        })
        .collect()
}

fn releases() -> Vec<Release> {
    load("helmreleases.yaml")
        .iter()
        .map(|o| Release::from_dynamic(o).unwrap())
        .collect()
}

fn release(name: &str) -> Release {
    releases().into_iter().find(|r| r.id.name == name).unwrap()
}

fn ctx() -> MapContext {
    MapContext::new("fsn1", "deploy-1", Some("flux-system"))
}

#[test]
fn every_fixture_maps_to_its_expected_status_and_rule() {
    let rs = releases();
    assert!(rs.len() >= 14);
    for r in &rs {
        let m = map_release(&ctx(), r, None, None);
        assert_eq!(
            m.node.status, r.annotations["test.openova.io/expect-status"],
            "{}",
            r.id
        );
        assert_eq!(
            m.node.meta["rule"], r.annotations["test.openova.io/expect-rule"],
            "{}",
            r.id
        );
    }
}

#[test]
fn every_row_of_the_table_has_a_fixture() {
    let covered: BTreeSet<String> = releases()
        .iter()
        .map(|r| r.annotations["test.openova.io/expect-rule"].clone())
        .collect();
    for rule in RULES {
        assert!(
            covered.contains(rule.name),
            "no fixture for rule {}",
            rule.name
        );
    }
}

#[test]
fn ready_true_release_has_region_family_and_one_finish_to_start_edge() {
    let m = map_release(&ctx(), &release("bp-cert-manager"), None, None);
    assert_eq!(m.node.id, "fsn1/bp-cert-manager");
    assert_eq!(m.node.label, "bp-cert-manager");
    assert_eq!(m.node.family.as_deref(), Some("cert-manager"));
    assert_eq!(m.node.region.as_deref(), Some("fsn1"));
    assert_eq!(m.node.flow_id, "deploy-1");
    assert!(m.node.ended_at.is_some(), "a finished release has endedAt");
    assert!(m.node.started_at.is_some());
    let fs: Vec<_> = m
        .rels
        .iter()
        .filter(|r| r.kind == RelationshipType::FinishToStart)
        .collect();
    assert_eq!(fs.len(), 1);
    assert_eq!(fs[0].from_id, "fsn1/bp-cilium");
    assert_eq!(fs[0].to_id, "fsn1/bp-cert-manager");
    assert_eq!(fs[0].condition, Some(Condition::OnSuccess));
    let contains: Vec<_> = m
        .rels
        .iter()
        .filter(|r| r.kind == RelationshipType::Contains)
        .collect();
    assert_eq!(contains.len(), 1);
    assert_eq!(
        (contains[0].from_id.as_str(), contains[0].to_id.as_str()),
        ("fsn1/bp-cert-manager", "fsn1"),
        "contains: child fromId, parent toId"
    );
}

#[test]
fn depends_on_fans_out_with_cross_namespace_refs_resolved_and_duplicates_merged() {
    let m = map_release(&ctx(), &release("bp-guacamole"), None, None);
    let from: BTreeSet<&str> = m
        .rels
        .iter()
        .filter(|r| r.kind == RelationshipType::FinishToStart)
        .map(|r| r.from_id.as_str())
        .collect();
    assert_eq!(
        from,
        BTreeSet::from([
            "fsn1/bp-cilium",
            "fsn1/bp-cert-manager",
            "fsn1/auth/bp-keycloak",
            "fsn1/bp-postgres",
            "fsn1/bp-gateway",
        ])
    );
    assert!(m.rels.iter().all(|r| r.kind == RelationshipType::Contains
        || (r.to_id == "fsn1/bp-guacamole" && r.condition == Some(Condition::OnSuccess))));
    FlowMessage::UpsertRels {
        relationships: m.rels.clone(),
    }
    .validate()
    .unwrap();
}

#[test]
fn no_depends_on_gives_only_the_contains_edge() {
    let m = map_release(&ctx(), &release("bp-fresh"), None, None);
    assert_eq!(m.rels.len(), 1);
    assert_eq!(m.rels[0].kind, RelationshipType::Contains);
}

#[test]
fn family_label_overrides_the_name_and_region_falls_back_to_default() {
    let m = map_release(&ctx(), &release("bp-stalwart"), None, None);
    assert_eq!(m.node.family.as_deref(), Some("mail"));
    let c = MapContext::new("  ", "f", Some("flux-system"));
    let m = map_release(&c, &release("bp-fresh"), None, None);
    assert_eq!(m.node.id, "default/bp-fresh");
    assert_eq!(m.node.region.as_deref(), Some("default"));
}

#[test]
fn watching_all_namespaces_puts_the_namespace_in_every_id() {
    let c = MapContext::new("fsn1", "f", None);
    let m = map_release(&c, &release("bp-cert-manager"), None, None);
    assert_eq!(m.node.id, "fsn1/flux-system/bp-cert-manager");
    assert!(
        m.rels
            .iter()
            .any(|r| r.from_id == "fsn1/flux-system/bp-cilium")
    );
}

#[test]
fn suspended_stalled_and_generation_behind_are_visible_in_meta() {
    let m = map_release(&ctx(), &release("bp-suspended"), None, None);
    assert_eq!(m.node.meta["suspended"], json!(true));
    let m = map_release(&ctx(), &release("bp-stalled"), None, None);
    assert_eq!(m.node.meta["stalledReason"], json!("RetriesExceeded"));
    assert_eq!(
        m.node.meta["lastFailure"],
        json!("Failed to upgrade after 5 attempt(s)"),
        "Ready=False ArtifactFailed is not a failure reason; the Stalled message is the failure"
    );
    let m = map_release(&ctx(), &release("bp-generation-behind"), None, None);
    assert_eq!(m.node.meta["observedGeneration"], json!(2));
    assert_eq!(m.node.meta["generation"], json!(3));
    assert_eq!(m.node.ended_at, None, "a running release has no endedAt");
}

#[test]
fn the_last_failure_message_survives_remediation() {
    let failed = release("bp-install-failed");
    let before = map_release(&ctx(), &failed, None, None);
    assert_eq!(before.node.status, "failed");
    let message = before.node.meta["lastFailure"].clone();
    assert_eq!(
        message,
        json!("Helm install failed: timed out waiting for the condition")
    );
    let mut fixed = failed.clone();
    fixed.conditions = release("bp-cert-manager").conditions;
    let after = map_release(&ctx(), &fixed, None, Some(&before.node));
    assert_eq!(after.node.status, "succeeded");
    assert_eq!(after.node.meta["lastFailure"], message);
    assert_eq!(after.node.meta["lastFailureReason"], json!("InstallFailed"));
    let fresh = map_release(&ctx(), &fixed, None, None);
    assert!(!fresh.node.meta.contains_key("lastFailure"));
}

#[test]
fn the_helmchart_readiness_is_folded_into_its_release_node() {
    let charts: Vec<Chart> = load("helmcharts.yaml")
        .iter()
        .map(|o| Chart::from_dynamic(o).unwrap())
        .collect();
    let r = release("bp-stalled");
    assert_eq!(
        r.chart,
        Some(ObjectRef::new("flux-system", "flux-system-bp-stalled"))
    );
    let chart = charts.iter().find(|c| Some(&c.id) == r.chart.as_ref());
    let m = map_release(&ctx(), &r, chart, None);
    assert_eq!(m.node.meta["chart"]["ready"], json!("False"));
    assert_eq!(m.node.meta["chart"]["reason"], json!("ChartPullFailed"));
}

#[test]
fn every_mapped_node_and_edge_passes_the_contract() {
    let c = ctx();
    let mapped: Vec<_> = releases()
        .iter()
        .map(|r| map_release(&c, r, None, None))
        .collect();
    let nodes = mapped.iter().map(|m| m.node.clone()).collect();
    let msg = FlowMessage::UpsertNodes { nodes };
    msg.validate().unwrap();
    msg.check_flow_id("deploy-1").unwrap();
    let round = FlowMessage::decode(&msg.encode()).unwrap();
    assert_eq!(round, msg);
    let flow = FlowMessage::UpsertFlow {
        flow: mapper::flow_instance(&c, 1),
    };
    flow.check_flow_id("deploy-1").unwrap();
}

#[test]
fn graph_diffs_edges_deletes_owned_edges_and_relists() {
    let mut g = Graph::new(ctx());
    let start = g.start(5);
    assert_eq!(start[0].0, Key::Flow);
    assert!(
        matches!(&start[1], (Key::Node(id), Op::UpsertNode(n)) if id == "fsn1" && n.status == "pending")
    );

    let mut r = release("bp-guacamole");
    let first = g.apply_release(r.clone());
    let upserts = first
        .iter()
        .filter(|(_, op)| matches!(op, Op::UpsertRel(_)))
        .count();
    assert_eq!(upserts, 6, "5 dependsOn + contains");
    assert!(
        g.apply_release(r.clone()).is_empty(),
        "no change, no output"
    );

    r.depends_on.retain(|d| d.name != "bp-postgres");
    let second = g.apply_release(r.clone());
    assert_eq!(second.len(), 1);
    assert!(matches!(&second[0], (Key::Rel(p), Op::DeleteRel) if p.from_id == "fsn1/bp-postgres"));

    g.apply_release(release("bp-cert-manager"));
    g.relist_begin(Watched::Releases);
    g.apply_release(release("bp-cert-manager"));
    let gone = g.relist_done(Watched::Releases);
    assert!(gone.contains(&(Key::Node("fsn1/bp-guacamole".into()), Op::DeleteNode)));
    assert_eq!(
        gone.iter().filter(|(_, op)| *op == Op::DeleteRel).count(),
        5,
        "its 4 remaining dependsOn edges and its contains edge"
    );
    assert!(
        gone.iter().any(|(k, op)| *k == Key::Node("fsn1".into())
            && matches!(op, Op::UpsertNode(n) if n.status == "succeeded")),
        "the region rollup follows"
    );
    assert_eq!(g.node_ids().len(), 2);
}

#[test]
fn a_chart_change_remaps_its_release() {
    let mut g = Graph::new(ctx());
    g.start(0);
    g.apply_release(release("bp-stalled"));
    let chart = load("helmcharts.yaml")
        .iter()
        .map(|o| Chart::from_dynamic(o).unwrap())
        .find(|c| c.id.name == "flux-system-bp-stalled")
        .unwrap();
    let out = g.apply_chart(chart.clone());
    assert!(
        matches!(&out[..], [(Key::Node(id), Op::UpsertNode(n))] if id == "fsn1/bp-stalled" && n.meta["chart"]["reason"] == "ChartPullFailed")
    );
    let out = g.delete_chart(&chart.id);
    assert!(
        matches!(&out[..], [(Key::Node(_), Op::UpsertNode(n))] if !n.meta.contains_key("chart"))
    );
}

#[tokio::test]
async fn the_fixtures_are_valid_against_the_real_flux_crds() {
    // A REAL kube-apiserver with Flux's CRDs: structural schema, CEL and defaulting.
    let api = ControlPlane::start_with(
        &[
            Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml"),
            Crd::bundled("source.toolkit.fluxcd.io_helmcharts.yaml"),
        ],
        &["flux-system"],
    )
    .await
    .unwrap();
    let client = api.client().await.unwrap();
    for (file, ar) in [
        (
            "helmreleases.yaml",
            flow_adapter_flux::flux::helmrelease_resource(),
        ),
        (
            "helmcharts.yaml",
            flow_adapter_flux::flux::helmchart_resource(),
        ),
    ] {
        for mut o in load(file) {
            let ns = o.metadata.namespace.clone().unwrap();
            let name = o.metadata.name.clone().unwrap();
            let a: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &ar);
            let status = o.data.as_object_mut().unwrap().remove("status");
            o.metadata.generation = None;
            a.create(&PostParams::default(), &o)
                .await
                .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            if let Some(st) = status {
                a.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": st })),
                )
                .await
                .unwrap_or_else(|e| panic!("{file} {name} status: {e}"));
            }
        }
    }
    // The schema check is on: a wrong shape is refused, so the check above can fail.
    let a: Api<DynamicObject> = Api::namespaced_with(
        client,
        "flux-system",
        &flow_adapter_flux::flux::helmrelease_resource(),
    );
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "bad", "namespace": "flux-system"},
        "spec": {"interval": "1m", "dependsOn": "bp-cilium"}
    }))
    .unwrap();
    assert!(a.create(&PostParams::default(), &bad).await.is_err());
}
