//! Shared helpers of the `kube_*` tests: testkit's in-memory Kubernetes API loaded with the real
//! CNPG and Gateway API CRDs and OUR generated Continuum CRD (testkit's bundled
//! `continuum.yaml` is upstream's), object builders, and a test actor that plays the CNPG
//! operator: it writes the Cluster status CNPG would write (the in-memory API runs no
//! controllers), with knobs for a stuck demotion, a dead region, a slow fence and an absent
//! operator.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::collections::HashMap;
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

/// A REAL control plane (etcd + kube-apiserver) with the same CRDs and the namespace [`NS`].
pub async fn start_cluster() -> testkit::ControlPlane {
    testkit::ControlPlane::start_with(&crds(), &[NS])
        .await
        .expect("control plane (scripts/build-k8s.sh builds it)")
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

/// Knobs of the test actor that plays the CNPG operator (and its instance managers).
#[derive(Debug, Default)]
pub struct CnpgSim {
    /// Do not produce demotion tokens (CNPG stuck).
    pub hold_demotion: AtomicBool,
    /// Stop reporting ready instances (the region's database is gone).
    pub down: AtomicBool,
    /// CNPG is absent (operator not running, instance managers gone): nothing is written any
    /// more, the Cluster status stays as it was last reported.
    pub absent: AtomicBool,
    /// How long after `cnpg.io/fencedInstances` names the instance CNPG reports it stopped, in
    /// milliseconds (0: on the next pass). A slow operator / slow readiness probe.
    pub fence_delay_ms: AtomicU64,
    lsn: AtomicU64,
}

/// The bucket of `status.instancesStatus` CNPG files a pod under (`ListStatusPods`): `healthy`
/// (Ready), `replicating` (active but not Ready: a fenced instance, postmaster stopped, pod kept
/// running) or `failed` (not active).
fn instance_bucket(ready: bool, down: bool) -> &'static str {
    if down {
        "failed"
    } else if ready {
        "healthy"
    } else {
        "replicating"
    }
}

/// True when the Cluster's fencing annotation names `inst` (or `*`).
fn fences(v: &Value, inst: &str) -> bool {
    v.pointer("/metadata/annotations/cnpg.io~1fencedInstances")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str::<Vec<String>>(t).ok())
        .is_some_and(|l| l.iter().any(|n| n == "*" || n == inst))
}

/// A test actor playing the CNPG operator on every Cluster of `client`'s namespace (the
/// in-memory API runs no controllers). It writes the status CNPG would write: settles
/// `currentPrimary`/`targetPrimary`, writes a new `status.demotionToken` (growing LSN) when a
/// primary becomes a replica and `status.lastPromotionToken` when a replica is promoted (the
/// last demotion token is left in place), and reports pod readiness the way CNPG aggregates it
/// (`status.readyInstances`, `status.instancesStatus`). Fencing as CNPG does it: once the
/// annotation names the instance (after [`CnpgSim::fence_delay_ms`]) its postmaster is stopped,
/// the pod stays but is not Ready — `readyInstances: 0`, the pod under `replicating` — and
/// `currentPrimary` is kept; the annotation removed, it is Ready again. With
/// [`CnpgSim::absent`] it writes nothing. Polls every 20 ms.
pub fn spawn_cnpg_sim(client: kube::Client, system_id: &'static str) -> Arc<CnpgSim> {
    let sim = Arc::new(CnpgSim {
        lsn: AtomicU64::new(0x3_0000_0000),
        ..CnpgSim::default()
    });
    let s = sim.clone();
    tokio::spawn(async move {
        let api = clusters(&client);
        // When each Cluster's fence annotation was first seen (the fence delay runs from there).
        let mut fenced_since: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            if s.absent.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            if let Ok(list) = api.list(&Default::default()).await {
                for o in list.items {
                    let v = serde_json::to_value(&o).unwrap_or_default();
                    let view = ClusterView::from_value(&v);
                    let inst = format!("{}-1", view.name);
                    let stopped = if fences(&v, &inst) {
                        let since = *fenced_since
                            .entry(view.name.clone())
                            .or_insert_with(tokio::time::Instant::now);
                        since.elapsed()
                            >= Duration::from_millis(s.fence_delay_ms.load(Ordering::SeqCst))
                    } else {
                        fenced_since.remove(&view.name);
                        false
                    };
                    let down = s.down.load(Ordering::SeqCst);
                    let ready = !down && !stopped;
                    let bucket = instance_bucket(ready, down);
                    let mut buckets = json!({"healthy": null, "replicating": null, "failed": null});
                    buckets[bucket] = json!([inst]);
                    let was_primary = v
                        .pointer(&format!("/status/instancesReportedState/{inst}/isPrimary"))
                        .and_then(Value::as_bool);
                    let want_primary = !view.spec_replica();
                    let mut st = json!({
                        "currentPrimary": inst, "targetPrimary": inst,
                        "readyInstances": i64::from(ready),
                        "instancesStatus": buckets,
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
                            == st["readyInstances"].as_i64()
                        && v.pointer(&format!("/status/instancesStatus/{bucket}"))
                            == Some(&json!([inst]))
                        && v.pointer("/status/instancesStatus")
                            .and_then(Value::as_object)
                            .is_some_and(|m| m.len() == 1);
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
