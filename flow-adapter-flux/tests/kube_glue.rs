#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Watch glue against a REAL kube-apiserver (testkit's `ControlPlane`, loaded with the real Flux
//! HelmRelease/HelmChart CRDs) and the real flow-server library in-process: mapping and
//! following changes, 100 emitter restarts, and leader election with two emitters; the re-list
//! after a 410 Gone runs on the in-memory API, which can expire its watch history on demand.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use common::{FlowServer, eventually, free_addr};
use flow_adapter_flux::flux::{helmchart_resource, helmrelease_resource};
use flow_adapter_flux::leader::LeaseConfig;
use flow_adapter_flux::mapper::MapContext;
use flow_adapter_flux::sink::{Backoff, SinkConfig};
use flow_adapter_flux::{EmitConfig, Health, Metrics, emit};
use flow_server::auth::Auth;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::ControlPlane;
use testkit::kube::{Crd, KubeApi};

const FLOW: &str = "deploy-1";
const NS: &str = "flux-system";

fn flux_crds() -> [Crd; 2] {
    [
        Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml"),
        Crd::bundled("source.toolkit.fluxcd.io_helmcharts.yaml"),
    ]
}

/// A REAL control plane with Flux's CRDs and the `flux-system` namespace.
async fn kube() -> ControlPlane {
    ControlPlane::start_with(&flux_crds(), &[NS]).await.unwrap()
}

/// The in-memory API, for the one test that expires the watch history on demand (a 410 Gone
/// a real API server gives only after its etcd compaction, not when a test asks).
async fn kube_in_memory() -> KubeApi {
    KubeApi::start(&flux_crds()).await.unwrap()
}

fn releases(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &helmrelease_resource())
}

fn ready(status: &str, reason: &str) -> Value {
    json!({
        "observedGeneration": 1,
        "conditions": [{
            "type": "Ready", "status": status, "reason": reason, "message": format!("{reason} message"),
            "lastTransitionTime": "2026-11-20T10:00:00Z", "observedGeneration": 1
        }]
    })
}

async fn create_hr(api: &Api<DynamicObject>, name: &str, deps: &[&str], status: Option<Value>) {
    let deps: Vec<Value> = deps.iter().map(|d| json!({ "name": d })).collect();
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "interval": "10m",
            "dependsOn": deps,
            "chart": {"spec": {"chart": name, "sourceRef": {"kind": "HelmRepository", "name": "openova"}}}
        }
    }))
    .unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
    if let Some(st) = status {
        set_status(api, name, st).await;
    }
}

async fn set_status(api: &Api<DynamicObject>, name: &str, status: Value) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .unwrap();
}

fn config(url: &str) -> EmitConfig {
    EmitConfig {
        ctx: MapContext::new("fsn1", FLOW, Some(NS)),
        sink: SinkConfig {
            base_url: url.into(),
            flow_id: FLOW.into(),
            token: None,
            batch_max: 200,
            backoff: Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            post_timeout: Duration::from_secs(5),
            resync_interval: None,
        },
        queue_capacity: 10_000,
    }
}

struct Emitter {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Emitter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn spawn_emitter(client: kube::Client, url: &str, lease: Option<LeaseConfig>) -> Emitter {
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    let (m, h) = (metrics.clone(), health.clone());
    let cfg = config(url);
    let task = tokio::spawn(async move {
        emit::run(client, cfg, lease, m, h).await.unwrap();
    });
    Emitter {
        metrics,
        health,
        task,
    }
}

/// What the server should hold: region node + one node per release, by id → status.
fn want(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut w: BTreeMap<String, String> = rows
        .iter()
        .map(|(n, s)| (format!("fsn1/{n}"), (*s).to_owned()))
        .collect();
    let statuses: Vec<&str> = rows.iter().map(|(_, s)| *s).collect();
    let region = if statuses.contains(&"failed") {
        "failed"
    } else if statuses.contains(&"running") {
        "running"
    } else if statuses.contains(&"pending") {
        "pending"
    } else {
        "succeeded"
    };
    w.insert("fsn1".into(), region.into());
    w
}

#[tokio::test]
async fn the_emitter_maps_the_cluster_and_follows_every_change() {
    let k = kube().await;
    let client = k.client().await.unwrap();
    let hrs = releases(&client);
    create_hr(
        &hrs,
        "bp-cilium",
        &[],
        Some(ready("True", "InstallSucceeded")),
    )
    .await;
    create_hr(
        &hrs,
        "bp-cert-manager",
        &["bp-cilium"],
        Some(ready("Unknown", "Progressing")),
    )
    .await;
    create_hr(&hrs, "bp-keycloak", &["bp-cilium", "bp-cert-manager"], None).await;
    let server = FlowServer::start().await;
    let e = spawn_emitter(client.clone(), &server.url(), None);

    let w = want(&[
        ("bp-cilium", "succeeded"),
        ("bp-cert-manager", "running"),
        ("bp-keycloak", "pending"),
    ]);
    // Nodes and relationships arrive in batches of their own: a real API server delivers each
    // release as its own watch event (seen in CI: the statuses complete, a relationship not
    // yet), so wait for both.
    eventually("the initial state arrives", || async {
        server.statuses(FLOW) == w && server.has_flow(FLOW) && server.rels(FLOW).len() == 6
    })
    .await;
    assert!(e.health.ready());
    let rels: BTreeSet<(String, String, &str)> = server
        .rels(FLOW)
        .iter()
        .map(|r| (r.from_id.clone(), r.to_id.clone(), r.kind.as_str()))
        .collect();
    for (from, to, kind) in [
        ("fsn1/bp-cilium", "fsn1/bp-cert-manager", "finish-to-start"),
        ("fsn1/bp-cilium", "fsn1/bp-keycloak", "finish-to-start"),
        (
            "fsn1/bp-cert-manager",
            "fsn1/bp-keycloak",
            "finish-to-start",
        ),
        ("fsn1/bp-keycloak", "fsn1", "contains"),
    ] {
        assert!(
            rels.contains(&(from.into(), to.into(), kind)),
            "{from} {to} {kind}"
        );
    }
    assert_eq!(rels.len(), 6);

    // A condition change.
    set_status(&hrs, "bp-cert-manager", ready("False", "UpgradeFailed")).await;
    eventually("the failure arrives", || async {
        server
            .statuses(FLOW)
            .get("fsn1/bp-cert-manager")
            .map(String::as_str)
            == Some("failed")
            && server.statuses(FLOW).get("fsn1").map(String::as_str) == Some("failed")
    })
    .await;
    let failed = server
        .nodes(FLOW)
        .into_iter()
        .find(|n| n.id == "fsn1/bp-cert-manager")
        .unwrap();
    assert_eq!(failed.meta["lastFailure"], json!("UpgradeFailed message"));

    // Remediated: the last failure message stays.
    set_status(&hrs, "bp-cert-manager", ready("True", "UpgradeSucceeded")).await;
    eventually(
        "the remediation arrives with the old failure kept",
        || async {
            server.nodes(FLOW).iter().any(|n| {
                n.id == "fsn1/bp-cert-manager"
                    && n.status == "succeeded"
                    && n.meta.get("lastFailure") == Some(&json!("UpgradeFailed message"))
            })
        },
    )
    .await;

    // A dependsOn removed → its edge is deleted.
    hrs.patch(
        "bp-keycloak",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"dependsOn": [{"name": "bp-cilium"}]}})),
    )
    .await
    .unwrap();
    eventually("the removed edge disappears", || async {
        !server
            .rels(FLOW)
            .iter()
            .any(|r| r.from_id == "fsn1/bp-cert-manager" && r.to_id == "fsn1/bp-keycloak")
    })
    .await;

    // A HelmChart folds into its release.
    let charts: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), NS, &helmchart_resource());
    let chart: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmChart",
        "metadata": {"name": "flux-system-bp-keycloak", "namespace": NS},
        "spec": {"chart": "keycloak", "interval": "10m", "sourceRef": {"kind": "HelmRepository", "name": "openova"}}
    }))
    .unwrap();
    charts.create(&PostParams::default(), &chart).await.unwrap();
    charts
        .patch_status(
            "flux-system-bp-keycloak",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Ready", "status": "False", "reason": "ChartPullFailed", "message": "no such chart",
                "lastTransitionTime": "2026-11-20T10:00:00Z"
            }]}})),
        )
        .await
        .unwrap();
    eventually("the chart's readiness shows on the release", || async {
        server.nodes(FLOW).iter().any(|n| {
            n.id == "fsn1/bp-keycloak"
                && n.meta
                    .get("chart")
                    .is_some_and(|c| c["reason"] == "ChartPullFailed")
        })
    })
    .await;

    // A deletion → delete-nodes (and its edges go with it).
    hrs.delete("bp-keycloak", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the deleted release's node and edges are gone", || async {
        !server.statuses(FLOW).contains_key("fsn1/bp-keycloak")
            && !server
                .rels(FLOW)
                .iter()
                .any(|r| r.from_id == "fsn1/bp-keycloak" || r.to_id == "fsn1/bp-keycloak")
    })
    .await;
    assert_eq!(e.metrics.failed_count("rejected"), 0);
}

#[tokio::test]
async fn a_relist_after_410_deletes_what_vanished_and_resends_everything() {
    let k = kube_in_memory().await;
    let client = k.client().unwrap();
    let hrs = releases(&client);
    for n in ["a", "b", "c"] {
        create_hr(&hrs, n, &[], Some(ready("True", "InstallSucceeded"))).await;
    }
    let addr = free_addr().await;
    let server = FlowServer::start_on(addr, Auth::default()).await;
    let e = spawn_emitter(client.clone(), &server.url(), None);
    let all = want(&[("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]);
    eventually("initial state", || async { server.statuses(FLOW) == all }).await;

    // flow-server restarts empty while the watch history expires and a release is deleted:
    // the watcher gets 410, re-lists, and the emitter re-sends its whole (new) state.
    server.stop().await;
    k.expire_watch_history();
    hrs.delete("b", &DeleteParams::default()).await.unwrap();
    let server = FlowServer::start_on(addr, Auth::default()).await;
    let rest = want(&[("a", "succeeded"), ("c", "succeeded")]);
    eventually(
        "the full state without b reaches the new server",
        || async { server.statuses(FLOW) == rest && server.has_flow(FLOW) },
    )
    .await;
    assert!(e.metrics.resyncs.get() >= 1);
}

#[tokio::test]
async fn a_hundred_emitter_restarts_leave_exactly_the_live_nodes() {
    let k = kube().await;
    let client = k.client().await.unwrap();
    let hrs = releases(&client);
    let server = FlowServer::start().await;
    let mut live: BTreeMap<String, &str> = BTreeMap::new();
    for i in 0..5 {
        create_hr(
            &hrs,
            &format!("r{i}"),
            &[],
            Some(ready("True", "InstallSucceeded")),
        )
        .await;
        live.insert(format!("r{i}"), "succeeded");
    }
    let mut next = 5;
    for round in 0..100 {
        // Change the cluster while no emitter runs: delete one, create one, flip one.
        match round % 3 {
            0 => {
                let victim = live.keys().next().unwrap().clone();
                hrs.delete(&victim, &DeleteParams::default()).await.unwrap();
                live.remove(&victim);
            }
            1 => {
                let name = format!("r{next}");
                next += 1;
                create_hr(&hrs, &name, &[], None).await;
                live.insert(name, "pending");
            }
            _ => {
                let name = live.keys().last().unwrap().clone();
                let (st, reason, node) = if live[&name] == "failed" {
                    ("True", "InstallSucceeded", "succeeded")
                } else {
                    ("False", "InstallFailed", "failed")
                };
                set_status(&hrs, &name, ready(st, reason)).await;
                live.insert(name, node);
            }
        }
        let rows: Vec<(&str, &str)> = live.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let w = want(&rows);
        let e = spawn_emitter(client.clone(), &server.url(), None);
        eventually(
            &format!("round {round}: the server holds exactly the live releases"),
            || async { server.statuses(FLOW) == w },
        )
        .await;
        drop(e);
    }
    let nodes = server.nodes(FLOW);
    let ids: BTreeSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids.len(), nodes.len(), "no duplicate node ids");
    assert_eq!(
        nodes.len(),
        live.len() + 1,
        "the releases and the region node, nothing stale"
    );
}

fn lease(identity: &str) -> LeaseConfig {
    LeaseConfig {
        name: "flow-adapter-flux".into(),
        namespace: NS.into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn only_the_leader_emits_and_losing_the_lease_stops_emission() {
    let k = kube().await;
    let client = k.client().await.unwrap();
    let hrs = releases(&client);
    create_hr(
        &hrs,
        "bp-cilium",
        &[],
        Some(ready("True", "InstallSucceeded")),
    )
    .await;
    let server = FlowServer::start().await;
    let a = spawn_emitter(client.clone(), &server.url(), Some(lease("pod-a")));
    let b = spawn_emitter(client.clone(), &server.url(), Some(lease("pod-b")));
    let w = want(&[("bp-cilium", "succeeded")]);
    eventually("one leader delivers the state", || async {
        server.statuses(FLOW) == w
    })
    .await;
    let (leader, follower) = if a.metrics.leader.get() == 1 {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert_eq!(leader.metrics.leader.get(), 1);
    assert_eq!(follower.metrics.leader.get(), 0);
    assert!(leader.metrics.events_sent.get() > 0);
    assert_eq!(
        follower.metrics.events_sent.get(),
        0,
        "the follower never posts"
    );
    assert!(follower.health.ready(), "a follower is ready");

    // Someone else takes the lease: the leader stops at once, and nobody emits.
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let mut l = leases.get("flow-adapter-flux").await.unwrap();
    let spec = l.spec.as_mut().unwrap();
    spec.holder_identity = Some("intruder".into());
    spec.lease_duration_seconds = Some(3600);
    spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    leases
        .replace("flow-adapter-flux", &PostParams::default(), &l)
        .await
        .unwrap();
    eventually("both emitters stand down", || async {
        a.metrics.leader.get() == 0 && b.metrics.leader.get() == 0
    })
    .await;
    let posts = server.posts();
    set_status(&hrs, "bp-cilium", ready("False", "UpgradeFailed")).await;
    // 20 lease rounds: a pipeline still running would have posted the change within them.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(server.posts(), posts, "no emitter posts without the lease");
    assert_eq!(
        server
            .statuses(FLOW)
            .get("fsn1/bp-cilium")
            .map(String::as_str),
        Some("succeeded")
    );

    // The lease is released: one of them takes over and delivers the change.
    let mut l = leases.get("flow-adapter-flux").await.unwrap();
    l.spec.as_mut().unwrap().holder_identity = None;
    leases
        .replace("flow-adapter-flux", &PostParams::default(), &l)
        .await
        .unwrap();
    eventually("a new leader delivers the change", || async {
        server
            .statuses(FLOW)
            .get("fsn1/bp-cilium")
            .map(String::as_str)
            == Some("failed")
    })
    .await;
    assert_eq!(a.metrics.leader.get() + b.metrics.leader.get(), 1);
}
