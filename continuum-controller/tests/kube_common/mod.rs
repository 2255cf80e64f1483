//! Shared helpers of the `kube_*` tests: testkit's in-memory Kubernetes API loaded with the real
//! CNPG and Gateway API CRDs and OUR generated Continuum CRD (testkit's bundled
//! `continuum.yaml` is upstream's), object builders, and a small simulation of the CNPG
//! operator's status transitions (the in-memory API runs no controllers).
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use continuum_controller::decide::Lsn;
use continuum_controller::kube::cnpg::{ClusterView, cluster_resource, make_token};
use continuum_controller::kube::httproute::httproute_resource;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::kube::{Crd, KubeApi};

pub const NS: &str = "shop";

pub fn continuum_crd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/continuum-controller/crds/continuums.dr.openova.io.yaml")
}

pub fn crds() -> Vec<Crd> {
    vec![
        Crd::bundled("postgresql.cnpg.io_clusters.yaml"),
        Crd::bundled("gateway.networking.k8s.io_httproutes.yaml"),
        Crd::Path(continuum_crd()),
    ]
}

pub async fn start_api() -> KubeApi {
    KubeApi::start(&crds()).await.expect("in-memory API")
}

pub fn clusters(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &cluster_resource())
}

pub fn routes(client: &kube::Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &httproute_resource())
}

/// A CNPG Cluster `name` in the distributed topology of `pg-<a>`/`pg-<b>`.
pub fn cluster_obj(name: &str, primary: &str, source: &str) -> Value {
    json!({
        "apiVersion": "postgresql.cnpg.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name, "namespace": NS,
            "labels": {"catalyst.openova.io/cnpg-pair": "shop-db"}},
        "spec": {
            "instances": 1,
            "replica": {"self": name, "primary": primary, "source": source},
            "externalClusters": [{"name": source}]
        }
    })
}

pub async fn create(api: &Api<DynamicObject>, v: Value) {
    let o: DynamicObject = serde_json::from_value(v).unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
}

pub async fn get(api: &Api<DynamicObject>, name: &str) -> Value {
    serde_json::to_value(api.get(name).await.unwrap()).unwrap()
}

/// An HTTPRoute with one backend per region.
pub fn route_obj(name: &str, regions: &[&str]) -> Value {
    let refs: Vec<Value> = regions
        .iter()
        .map(|r| json!({"name": format!("shop-{r}"), "port": 80, "weight": 10}))
        .collect();
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": refs}]}
    })
}

/// Knobs of the simulated CNPG operator.
#[derive(Debug, Default)]
pub struct CnpgSim {
    /// Do not produce demotion tokens (CNPG stuck).
    pub hold_demotion: AtomicBool,
    /// Stop reporting ready instances (the region's database is gone).
    pub down: AtomicBool,
    lsn: AtomicU64,
}

/// Simulates the CNPG operator on every Cluster of `client`'s namespace: settles
/// `currentPrimary`/`targetPrimary`, writes a new `status.demotionToken` (growing LSN) when a
/// primary becomes a replica and `status.lastPromotionToken` when a replica is promoted (the
/// last demotion token is left in place). Polls every 20 ms.
pub fn spawn_cnpg_sim(client: kube::Client, system_id: &'static str) -> Arc<CnpgSim> {
    let sim = Arc::new(CnpgSim {
        lsn: AtomicU64::new(0x3_0000_0000),
        ..CnpgSim::default()
    });
    let s = sim.clone();
    tokio::spawn(async move {
        let api = clusters(&client);
        loop {
            if let Ok(list) = api.list(&Default::default()).await {
                for o in list.items {
                    let v = serde_json::to_value(&o).unwrap_or_default();
                    let view = ClusterView::from_value(&v);
                    let inst = format!("{}-1", view.name);
                    let was_primary = v
                        .pointer(&format!("/status/instancesReportedState/{inst}/isPrimary"))
                        .and_then(Value::as_bool);
                    let want_primary = !view.spec_replica();
                    let mut st = json!({
                        "currentPrimary": inst, "targetPrimary": inst,
                        "readyInstances": if s.down.load(Ordering::SeqCst) { 0 } else { 1 },
                        "phase": "Cluster in healthy state",
                        "instancesReportedState": {inst.clone(): {"isPrimary": want_primary}},
                    });
                    match (was_primary, want_primary) {
                        (Some(true), false) => {
                            if s.hold_demotion.load(Ordering::SeqCst) {
                                continue;
                            }
                            let lsn = s.lsn.fetch_add(0x100, Ordering::SeqCst);
                            st["demotionToken"] = json!(make_token(Lsn(lsn), system_id, 1));
                        }
                        (Some(false), true) => {
                            // The old demotion token stays in the status (the adapter must not
                            // take it for a later demotion's).
                            st["lastPromotionToken"] =
                                json!(view.promotion_token.clone().unwrap_or_default());
                        }
                        (None, _) | (Some(true), true) | (Some(false), false) => {}
                    }
                    let same = was_primary == Some(want_primary)
                        && v.pointer("/status/readyInstances").and_then(Value::as_i64)
                            == st["readyInstances"].as_i64();
                    if same {
                        continue;
                    }
                    let _ = api
                        .patch_status(
                            &view.name,
                            &PatchParams::default(),
                            &Patch::Merge(&json!({"status": st})),
                        )
                        .await;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    sim
}

/// Waits (polling, bounded) until `f` holds; panics with `what` otherwise.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A Continuum for regions `eu-1` (home primary) and `us-1`, witness at `witness_url`.
pub fn continuum_obj(name: &str, witness_url: &str) -> Value {
    json!({
        "apiVersion": "dr.openova.io/v1",
        "kind": "Continuum",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "applicationRef": "shop",
            "primaryRegion": "eu-1",
            "hotStandbyRegions": ["us-1"],
            "leaseClient": {"kind": "cloudflare-kv", "config": {
                "workerURL": witness_url, "slot": format!("{NS}/{name}"),
                "ttlSeconds": 5, "renewSeconds": 1}},
            "rpo": "5s",
            "autoFailover": true,
            "holdDownSeconds": 1,
            "cnpgPair": {"name": "shop-db"},
            "httpRoute": {"name": "shop"},
            // DNS data present (so the controller records what it flips) but no `dns`
            // backend: flips are skipped, `lastLuaRecord` still says what was published.
            "luaRecord": {"selector": "ifurlup",
                "healthCheck": {"url": "https://shop.dr.example/health"},
                "hostnames": ["shop.dr.example"]},
            "regions": [{"name": "eu-1", "lbIPs": ["10.0.0.1"]},
                        {"name": "us-1", "lbIPs": ["10.0.0.2"]}]
        }
    })
}

pub fn continuums(client: &kube::Client) -> Api<continuum_controller::crd::Continuum> {
    Api::namespaced(client.clone(), NS)
}

pub async fn create_continuum(client: &kube::Client, v: Value) {
    let o: continuum_controller::crd::Continuum = serde_json::from_value(v).unwrap();
    continuums(client)
        .create(&PostParams::default(), &o)
        .await
        .unwrap();
}

/// Bearer token of the in-process witness.
pub const TOKEN: &str = "kube-test-token";

/// The REAL witness server in-process (as `lab.rs` starts it), on a loopback port.
pub async fn start_witness(dir: &std::path::Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    use witness_worker::auth::Tokens;
    use witness_worker::server::{Witness, serve, system_clock};
    use witness_worker::store::FileStore;
    let store = FileStore::open(dir.join("witness.json")).unwrap();
    let tokens = Tokens::from_json(&format!(r#"{{"{TOKEN}":["*"]}}"#)).unwrap();
    let w = Witness::new(store, tokens, system_clock());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, w, async {
        let _ = rx.await;
    }));
    (url, tx)
}
