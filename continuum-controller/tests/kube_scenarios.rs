#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Full scenarios of the kube controller across TWO REAL Kubernetes control planes (testkit's
//! `ControlPlane`: etcd + kube-apiserver, one per region, loaded with the real CNPG / Gateway
//! API CRDs and our generated Continuum CRD) and the REAL witness server (in-process, as the
//! lab starts it):
//! - planned switchover eu-1 → us-1: CNPG Clusters swapped through demotion/promotion tokens,
//!   routes drained/undrained, epochs recorded, statuses updated, request completed once;
//! - unplanned failover after eu-1 dies: us-1 acquires the expired lease, promotes without a
//!   token, suspends sync, undrains, with a higher epoch;
//! - a controller killed in the middle of a switchover (CNPG stuck before the demotion token)
//!   resumes from `status.operation` when restarted.
//!
//! Not modelled: the CNPG operator (its status transitions are played by `kube_common`'s test
//! actor, which writes the Cluster status through the real API server), a
//! Gateway controller, DNS (`StandaloneDns::Off`), NATS (`LazyAudit::new(None)`: audit events
//! are only logged).

mod kube_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use continuum_controller::crd::ContinuumSpec;
use continuum_controller::kube::cnpg::{BoxFuture, LagReading, StaticLag};
use continuum_controller::kube::reconcile::{self, Context, PeerProbe, Settings};
use continuum_controller::kube::{EPOCH_ANNOTATION, FINALIZER};
use continuum_controller::metrics::Metrics;
use kube::api::{Patch, PatchParams};
use kube_common::*;
use serde_json::{Value, json};
use testkit::ControlPlane;

/// Two probe vantages of the peer, healthy while `up`.
#[derive(Debug)]
struct Probe(Arc<AtomicBool>);

impl PeerProbe for Probe {
    fn probe<'a>(
        &'a self,
        _spec: &'a ContinuumSpec,
        _region: &'a str,
        _peer_cluster: Option<&'a str>,
    ) -> BoxFuture<'a, Vec<(String, bool)>> {
        let up = self.0.load(Ordering::SeqCst);
        Box::pin(async move { vec![("route".to_owned(), up), ("database".to_owned(), up)] })
    }
}

struct Region {
    api: ControlPlane,
    client: kube::Client,
    sim: Arc<CnpgSim>,
    peer_up: Arc<AtomicBool>,
    lag: Arc<StaticLag>,
}

struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn kill(self) {
        let _ = self.stop.send(());
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn region(cluster: &str, primary: &str, peer: &str, witness: &str) -> Region {
    let api = start_cluster().await;
    let client = api.client().await.unwrap();
    create(&clusters(&client), cluster_obj(cluster, primary, peer)).await;
    create(&routes(&client), route_obj("shop", &["eu-1", "us-1"])).await;
    // The witness token comes from a Secret named by the spec (the controllers get no token).
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), NS);
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "witness-token", "namespace": NS},
        "data": {"token": k8s_openapi::ByteString(TOKEN.as_bytes().to_vec())}
    }))
    .unwrap();
    secrets.create(&Default::default(), &secret).await.unwrap();
    let mut c = continuum_obj("shop", witness);
    c["spec"]["leaseClient"]["config"]["tokenSecretRef"] =
        json!({"name": "witness-token", "key": "token"});
    create_continuum(&client, c).await;
    let sim = spawn_cnpg_sim(client.clone(), "7300000000000000001");
    let is_primary = cluster == primary;
    let lag = Arc::new(StaticLag::new(Some(LagReading {
        streaming: true,
        lag_bytes: 0,
        lag_seconds: 0,
        local_lsn: None,
        replay_lsn: None,
        peer_sync_state: is_primary.then(|| "sync".to_owned()),
    })));
    Region {
        api,
        client,
        sim,
        peer_up: Arc::new(AtomicBool::new(true)),
        lag,
    }
}

fn start(me: &str, r: &Region, peer: &Region) -> Running {
    let mut s = Settings::new(me, "");
    s.peer = Some(peer.client.clone());
    s.lag = r.lag.clone();
    s.probes = Arc::new(Probe(r.peer_up.clone()));
    s.cnpg_settle = Duration::from_secs(10);
    s.tick = Duration::from_millis(300);
    let ctx = Context::new(r.client.clone(), s, Arc::new(Metrics::new()));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        reconcile::run(ctx, Some(NS), async {
            let _ = rx.await;
        })
        .await;
    });
    Running { stop, task }
}

async fn obj(r: &Region, plural: &str, name: &str) -> Value {
    r.api.object(plural, NS, name).await.unwrap_or(Value::Null)
}

async fn status(r: &Region) -> Value {
    obj(r, "continuums", "shop").await["status"].clone()
}

async fn weight(r: &Region, backend: usize) -> i64 {
    obj(r, "httproutes", "shop").await["spec"]["rules"][0]["backendRefs"][backend]["weight"]
        .as_i64()
        .unwrap_or(-1)
}

async fn request_switchover(r: &Region, id: &str, target: &str) {
    continuums(&r.client)
        .patch(
            "shop",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"switchover": {
                "requested": true, "id": id, "targetRegion": target}}})),
        )
        .await
        .unwrap();
}

struct World {
    eu: Region,
    us: Region,
    _witness: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG").unwrap_or_else(|_| "continuum_controller=info".to_owned()),
        )
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let (url, stop) = start_witness(dir.path()).await;
    let eu = region("pg-eu", "pg-eu", "pg-us", &url).await;
    let us = region("pg-us", "pg-eu", "pg-eu", &url).await;
    World {
        eu,
        us,
        _witness: stop,
        _dir: dir,
    }
}

async fn healthy(w: &World) {
    eventually("eu-1 primary holds the lease, us-1 follows", || async {
        let se = status(&w.eu).await;
        se["phase"] == "Healthy"
            && se["leaseHolder"] == "eu-1"
            && se["currentPrimary"] == "eu-1"
            && status(&w.us).await["leaseHolder"] == "eu-1"
            && weight(&w.eu, 0).await == 10
    })
    .await;
    // The finalizer is on both objects.
    for r in [&w.eu, &w.us] {
        let fins = obj(r, "continuums", "shop").await["metadata"]["finalizers"].clone();
        assert_eq!(fins, json!([FINALIZER]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planned_switchover_moves_the_primary_through_cnpg_tokens_and_route_weights() {
    let w = world().await;
    let ce = start("eu-1", &w.eu, &w.us);
    let cu = start("us-1", &w.us, &w.eu);
    healthy(&w).await;
    let epoch0 = status(&w.eu).await["epoch"].as_i64().unwrap();

    request_switchover(&w.eu, "sw-1", "us-1").await;
    request_switchover(&w.us, "sw-1", "us-1").await;
    eventually("us-1 is primary and both completed sw-1", || async {
        let su = status(&w.us).await;
        let se = status(&w.eu).await;
        su["currentPrimary"] == "us-1"
            && su["leaseHolder"] == "us-1"
            && su["completedRequests"] == json!(["sw-1"])
            && se["completedRequests"] == json!(["sw-1"])
            && su["lastSwitchover"]["id"] == "sw-1"
            && su.get("operation").is_none_or(Value::is_null)
            && weight(&w.us, 1).await == 10
    })
    .await;
    let su = status(&w.us).await;
    let epoch1 = su["epoch"].as_i64().unwrap();
    assert!(epoch1 > epoch0, "{epoch1} > {epoch0}");
    assert_eq!(su["lastSwitchover"]["id"], "sw-1");
    assert_eq!(su["lastSwitchover"]["to"], "us-1");

    // CNPG: eu demoted towards pg-us, us promoted with eu's demotion token.
    let ceu = obj(&w.eu, "clusters", "pg-eu").await;
    let cus = obj(&w.us, "clusters", "pg-us").await;
    assert_eq!(ceu["spec"]["replica"]["primary"], "pg-us");
    assert_eq!(cus["spec"]["replica"]["primary"], "pg-us");
    let token = ceu["status"]["demotionToken"].as_str().unwrap();
    assert_eq!(cus["spec"]["replica"]["promotionToken"], token);
    assert_eq!(cus["status"]["lastPromotionToken"], token);
    let ep = |v: &Value| {
        v["metadata"]["annotations"][EPOCH_ANNOTATION]
            .as_str()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    assert_eq!(ep(&ceu), epoch0);
    assert_eq!(ep(&cus), epoch1);
    // Routes: eu drained, us serving.
    eventually("eu-1's route drained", || async {
        weight(&w.eu, 0).await == 0
    })
    .await;
    assert_eq!(ep(&obj(&w.us, "httproutes", "shop").await), epoch1);
    // The request runs once: nothing moves back while it stays in the spec.
    eventually("eu-1 sees us-1 as primary", || async {
        status(&w.eu).await["leaseHolder"] == "us-1"
    })
    .await;
    assert_eq!(
        obj(&w.us, "clusters", "pg-us").await["spec"]["replica"]["primary"],
        "pg-us"
    );

    // Back and forth again: each promotion uses the token of ITS demotion, never the one an
    // earlier demotion left in the status (the simulation leaves old tokens in place).
    let done = async |into: &'static str, id: &'static str| {
        let (st, other) = if into == "eu-1" {
            (status(&w.eu).await, status(&w.us).await)
        } else {
            (status(&w.us).await, status(&w.eu).await)
        };
        st["currentPrimary"] == into
            && st["lastSwitchover"]["id"] == id
            && other["completedRequests"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == id))
    };
    request_switchover(&w.eu, "sw-2", "eu-1").await;
    request_switchover(&w.us, "sw-2", "eu-1").await;
    eventually("switched back to eu-1", || async {
        done("eu-1", "sw-2").await
    })
    .await;
    // eu-1 demotes again while its OLD token is still in its status; CNPG is slow to write
    // the new one: eu-1 must wait for it instead of handing the old one over.
    w.eu.sim.hold_demotion.store(true, Ordering::SeqCst);
    request_switchover(&w.eu, "sw-3", "us-1").await;
    request_switchover(&w.us, "sw-3", "us-1").await;
    eventually("eu-1 waits in demote for the new token", || async {
        let op = &status(&w.eu).await["operation"];
        op["id"] == "sw-3"
            && op["step"] == "demote"
            && obj(&w.eu, "clusters", "pg-eu").await["spec"]["replica"]["primary"] == "pg-us"
    })
    .await;
    w.eu.sim.hold_demotion.store(false, Ordering::SeqCst);
    eventually("switched to us-1 again", || async {
        done("us-1", "sw-3").await
    })
    .await;
    let ceu = obj(&w.eu, "clusters", "pg-eu").await;
    let cus = obj(&w.us, "clusters", "pg-us").await;
    let third = ceu["status"]["demotionToken"].as_str().unwrap();
    assert_ne!(third, token, "eu-1 demoted twice: a new token");
    assert_eq!(cus["spec"]["replica"]["promotionToken"], third);
    let lsn = |t: &str| continuum_controller::kube::cnpg::token_lsn(t).unwrap();
    assert!(lsn(third) > lsn(token));
    ce.kill().await;
    cu.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplanned_failover_promotes_the_standby_after_the_primary_region_dies() {
    let w = world().await;
    let ce = start("eu-1", &w.eu, &w.us);
    let cu = start("us-1", &w.us, &w.eu);
    healthy(&w).await;
    let epoch0 = status(&w.eu).await["epoch"].as_i64().unwrap();
    // eu-1 had reported synchronous replication with its renewals.

    // The whole region eu-1 dies: controller, database; us-1's probes fail.
    ce.kill().await;
    w.eu.sim.down.store(true, Ordering::SeqCst);
    w.us.peer_up.store(false, Ordering::SeqCst);
    w.us.lag.set(Some(LagReading {
        streaming: false,
        ..LagReading::default()
    }));

    eventually("us-1 failed over", || async {
        let su = status(&w.us).await;
        su["lastSwitchover"]["kind"] == "failover"
            && su["currentPrimary"] == "us-1"
            && su["leaseHolder"] == "us-1"
            && su.get("operation").is_none_or(Value::is_null)
            && weight(&w.us, 1).await == 10
    })
    .await;
    let su = status(&w.us).await;
    let epoch1 = su["epoch"].as_i64().unwrap();
    assert!(epoch1 > epoch0);
    let cus = obj(&w.us, "clusters", "pg-us").await;
    assert_eq!(cus["spec"]["replica"]["primary"], "pg-us");
    // Unplanned: no token (the old primary never demoted).
    assert!(cus["spec"]["replica"]["promotionToken"].is_null());
    assert_eq!(
        cus["metadata"]["annotations"][EPOCH_ANNOTATION],
        epoch1.to_string()
    );
    // Default durability: synchronous replication suspended and the condition raised.
    assert_eq!(
        cus["metadata"]["annotations"]["dr.openova.io/sync-suspended"],
        "true"
    );
    let conds = su["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "DurabilityDegraded" && c["status"] == "True"),
        "{conds:?}"
    );
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "LeaseHeld" && c["status"] == "True")
    );
    assert_eq!(su["lastSwitchover"]["kind"], "failover");
    assert!(
        su["lastSwitchover"]["rtoObserved"]
            .as_str()
            .is_some_and(|r| r.ends_with("ms")),
        "{su}"
    );
    let rec = &su["lastLuaRecord"]["records"][0];
    assert_eq!(rec["hostname"], "shop.dr.example");
    assert_eq!(rec["primaryRegion"], "us-1");
    assert!(
        rec["body"].as_str().is_some_and(|b| b.contains("10.0.0.2")),
        "{rec}"
    );
    assert!(su["lastLuaRecordAt"].is_string());
    // eu-1's objects were not touched by us-1 (separate clusters; eu-1 is dead).
    assert_eq!(
        obj(&w.eu, "clusters", "pg-eu").await["spec"]["replica"]["primary"],
        "pg-eu"
    );
    cu.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_resumes_a_half_done_switchover_from_the_status() {
    let w = world().await;
    let ce = start("eu-1", &w.eu, &w.us);
    let cu = start("us-1", &w.us, &w.eu);
    healthy(&w).await;

    // CNPG does not produce the demotion token: eu-1 stops inside the switchover.
    w.eu.sim.hold_demotion.store(true, Ordering::SeqCst);
    request_switchover(&w.eu, "sw-2", "us-1").await;
    request_switchover(&w.us, "sw-2", "us-1").await;
    eventually("eu-1 persisted the operation at demote", || async {
        let op = &status(&w.eu).await["operation"];
        op["id"] == "sw-2" && op["step"] == "demote"
    })
    .await;
    // The step is persisted BEFORE its write; the demotion patch follows and then waits for
    // the token CNPG does not produce.
    eventually("eu-1's Cluster was told to demote", || async {
        obj(&w.eu, "clusters", "pg-eu").await["spec"]["replica"]["primary"] == "pg-us"
    })
    .await;
    assert!(obj(&w.eu, "clusters", "pg-eu").await["status"]["demotionToken"].is_null());
    // Kill eu-1's controller mid-operation; a NEW controller (no memory) takes over.
    ce.kill().await;
    w.eu.sim.hold_demotion.store(false, Ordering::SeqCst);
    let ce2 = start("eu-1", &w.eu, &w.us);
    eventually("the switchover completed after the restart", || async {
        let su = status(&w.us).await;
        su["currentPrimary"] == "us-1"
            && su["completedRequests"] == json!(["sw-2"])
            && status(&w.eu).await["completedRequests"] == json!(["sw-2"])
            && status(&w.eu)
                .await
                .get("operation")
                .is_none_or(Value::is_null)
    })
    .await;
    let cus = obj(&w.us, "clusters", "pg-us").await;
    assert_eq!(cus["spec"]["replica"]["primary"], "pg-us");
    assert_eq!(
        cus["spec"]["replica"]["promotionToken"],
        obj(&w.eu, "clusters", "pg-eu").await["status"]["demotionToken"]
    );
    ce2.kill().await;
    cu.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_continuum_releases_the_lease_and_leaves_the_data_plane_as_is() {
    let w = world().await;
    let ce = start("eu-1", &w.eu, &w.us);
    let cu = start("us-1", &w.us, &w.eu);
    healthy(&w).await;
    // Events were recorded on the object (events.k8s.io/v1).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(w.eu.client.clone(), NS);
    eventually("a PlanExecuted event on shop", || async {
        events.list(&Default::default()).await.is_ok_and(|l| {
            l.items.iter().any(|e| {
                e.reason.as_deref() == Some("PlanExecuted")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("shop")
            })
        })
    })
    .await;

    continuums(&w.eu.client)
        .delete("shop", &Default::default())
        .await
        .unwrap();
    eventually("the finalizer ran and the object is gone", || async {
        w.eu.api.object("continuums", NS, "shop").await.is_none()
    })
    .await;
    // The lease was released: us-1 sees it free (or takes it, as a standby may not: no
    // switchover, peer healthy), and eu-1's Cluster and route are as they were.
    eventually("us-1 sees the lease released", || async {
        status(&w.us).await["leaseHolder"].is_null()
    })
    .await;
    let ceu = obj(&w.eu, "clusters", "pg-eu").await;
    assert_eq!(ceu["spec"]["replica"]["primary"], "pg-eu");
    assert!(
        ceu["metadata"]["annotations"]
            .get(continuum_controller::kube::cnpg::FENCED_ANNOTATION)
            .is_none()
    );
    assert_eq!(weight(&w.eu, 0).await, 10);
    ce.kill().await;
    cu.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_the_old_primary_is_rebuilt_and_an_approved_failback_moves_home() {
    let w = world().await;
    let ce = start("eu-1", &w.eu, &w.us);
    let cu = start("us-1", &w.us, &w.eu);
    healthy(&w).await;
    ce.kill().await;
    w.eu.sim.down.store(true, Ordering::SeqCst);
    w.us.peer_up.store(false, Ordering::SeqCst);
    w.us.lag.set(Some(LagReading::default()));
    eventually("us-1 failed over", || async {
        let su = status(&w.us).await;
        su["lastSwitchover"]["kind"] == "failover" && su["currentPrimary"] == "us-1"
    })
    .await;

    // eu-1 comes back with its old primary: it fences itself and is rebuilt as a replica of
    // us-1 (CNPG: spec.replica.primary = pg-us), never serving on its own.
    w.eu.sim.down.store(false, Ordering::SeqCst);
    w.us.peer_up.store(true, Ordering::SeqCst);
    let ce2 = start("eu-1", &w.eu, &w.us);
    eventually("eu-1's Cluster rebuilt as a replica of pg-us", || async {
        let c = obj(&w.eu, "clusters", "pg-eu").await;
        c["spec"]["replica"]["primary"] == "pg-us"
            && status(&w.eu)
                .await
                .get("operation")
                .is_none_or(Value::is_null)
    })
    .await;
    assert_eq!(
        weight(&w.eu, 0).await,
        0,
        "the old primary's route stays drained"
    );
    // The rebuilt standby streams again: us-1 restores synchronous replication.
    w.eu.lag.set(Some(LagReading {
        streaming: true,
        ..LagReading::default()
    }));
    w.us.lag.set(Some(LagReading {
        streaming: true,
        peer_sync_state: Some("sync".into()),
        ..LagReading::default()
    }));
    eventually("us-1 restored sync", || async {
        obj(&w.us, "clusters", "pg-us").await["metadata"]["annotations"]
            .get("dr.openova.io/sync-suspended")
            .is_none()
    })
    .await;

    // An approved failback (in both clusters) moves the primary home with us-1's token.
    for r in [&w.eu, &w.us] {
        continuums(&r.client)
            .patch(
                "shop",
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"failback": {
                    "requested": true, "id": "fb-1", "approved": true}}})),
            )
            .await
            .unwrap();
    }
    eventually("eu-1 is primary again", || async {
        let se = status(&w.eu).await;
        se["currentPrimary"] == "eu-1"
            && se["lastSwitchover"]["id"] == "fb-1"
            && status(&w.us).await["completedRequests"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "fb-1"))
    })
    .await;
    let ceu = obj(&w.eu, "clusters", "pg-eu").await;
    let cus = obj(&w.us, "clusters", "pg-us").await;
    assert_eq!(ceu["spec"]["replica"]["primary"], "pg-eu");
    assert_eq!(cus["spec"]["replica"]["primary"], "pg-eu");
    assert_eq!(
        ceu["spec"]["replica"]["promotionToken"],
        cus["status"]["demotionToken"]
    );
    assert_eq!(status(&w.eu).await["lastSwitchover"]["kind"], "failback");
    ce2.kill().await;
    cu.kill().await;
}
