#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The kube adapters against REAL kube-apiservers (testkit's `ControlPlane`, with the real
//! CNPG / Gateway API CRDs and our generated Continuum CRD; CNPG's status transitions played by
//! a test actor, see `kube_common`), except the two `in_memory_api_*` tests, which inject API
//! failures a real server cannot be made to produce and so use testkit's in-memory API:
//! CNPG `Cluster` (fence annotation, epoch annotation, stale epoch refused, idempotent writes,
//! planned switchover with demotion/promotion tokens across two control planes, named
//! stuck states, injected API faults), Gateway `HTTPRoute` (drain/undrain by weight) and the
//! status store (server-side apply round trip).

mod kube_common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use continuum_controller::decide::{Lsn, OpKind, Operation};
use continuum_controller::kube::cnpg::{CnpgDatabase, FENCED_ANNOTATION, PeerCluster, token_lsn};
use continuum_controller::kube::httproute::{HttpRouteRoutes, ORIGINAL_WEIGHTS_ANNOTATION};
use continuum_controller::kube::status::StatusStore;
use continuum_controller::kube::{EPOCH_ANNOTATION, FIELD_MANAGER};
use continuum_controller::ports::{Database, Persisted, PlaneError, Routes, StateStore};
use kube_common::*;
use serde_json::{Value, json};

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The Cluster `pg-eu` with CNPG's test actor, once it reports its instance ready.
async fn ready_cluster(c: &kube::Client) -> (CnpgDatabase, std::sync::Arc<CnpgSim>) {
    create(&clusters(c), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    let sim = spawn_cnpg_sim(c.clone(), "1");
    let db = CnpgDatabase::new(c.clone(), NS, "pg-eu")
        .with_settle(Duration::from_secs(10), Duration::from_millis(20));
    let ready = || async { ready_instances(&get(&clusters(c), "pg-eu").await) == Some(1) };
    eventually("CNPG reports the instance ready", ready).await;
    (db, sim)
}

/// CNPG's behaviour is played by a test actor (`kube_common::spawn_cnpg_sim`).
#[tokio::test]
async fn cnpg_fence_writes_the_fencing_and_epoch_annotations_idempotently_and_refuses_stale_epochs()
{
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    let (db, _sim) = ready_cluster(&c).await;

    db.fence(3).await.unwrap();
    let v = get(&clusters(&c), "pg-eu").await;
    assert_eq!(v["metadata"]["annotations"][FENCED_ANNOTATION], "[\"*\"]");
    assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "3");
    // Idempotent: the same write stores nothing new.
    db.fence(3).await.unwrap();
    assert_eq!(rv(&get(&clusters(&c), "pg-eu").await), rv(&v));

    // A lower epoch is refused and changes nothing.
    let err = db.unfence(2).await.unwrap_err();
    assert!(
        matches!(
            err,
            PlaneError::StaleEpoch {
                given: 2,
                applied: 3
            }
        ),
        "{err:?}"
    );
    assert_eq!(rv(&get(&clusters(&c), "pg-eu").await), rv(&v));

    db.unfence(4).await.unwrap();
    let v = get(&clusters(&c), "pg-eu").await;
    assert!(
        v["metadata"]["annotations"]
            .get(FENCED_ANNOTATION)
            .is_none()
    );
    assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "4");
    // Fencing is never refused (a restarted controller fences with epoch 0) and never lowers
    // the recorded epoch.
    db.fence(0).await.unwrap();
    let v = get(&clusters(&c), "pg-eu").await;
    assert_eq!(v["metadata"]["annotations"][FENCED_ANNOTATION], "[\"*\"]");
    assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "4");
    db.unfence(4).await.unwrap();
}

/// FAULT INJECTION, so on testkit's in-memory API (a real API server cannot be made to fail
/// one write with a 500): an API failure surfaces (kube retries 503 itself; 500 reaches us)
/// and the next write works.
#[tokio::test]
async fn in_memory_api_cnpg_fence_surfaces_an_injected_500_and_the_next_write_works() {
    let api = start_api().await;
    let c = api.client().unwrap();
    let (db, _sim) = ready_cluster(&c).await;
    api.fail_next_writes("clusters", 1, 500);
    assert!(db.fence(4).await.is_err());
    db.fence(4).await.unwrap();
    let v = get(&clusters(&c), "pg-eu").await;
    assert_eq!(v["metadata"]["annotations"][FENCED_ANNOTATION], "[\"*\"]");
}

/// The instance's readiness as the Cluster status reports it.
fn ready_instances(v: &Value) -> Option<i64> {
    v.pointer("/status/readyInstances").and_then(Value::as_i64)
}

/// CNPG's behaviour is played by a test actor (`kube_common::spawn_cnpg_sim`): with no CNPG at
/// all, or with a CNPG that reported the instance Ready and then stopped acting, the
/// `cnpg.io/fencedInstances` annotation is stored but nothing stops the instance — the fence
/// is not done. Bounded by the adapter's settle timeout it fails with the named state; bounded
/// by a step timeout (what the executor does) it never completes (the executor reports
/// `FenceStuck`).
#[tokio::test]
async fn cnpg_fence_is_not_done_while_cnpg_does_not_report_the_instances_stopped() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create(&clusters(&c), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    let db = CnpgDatabase::new(c.clone(), NS, "pg-eu")
        .with_settle(Duration::from_millis(400), Duration::from_millis(20));

    // 1. No CNPG operator ever ran: the Cluster has no status at all (no `readyInstances` is
    // not "0 ready").
    let r = tokio::time::timeout(Duration::from_secs(2), db.fence(3)).await;
    let err = match r {
        Ok(Err(e)) => e.to_string(),
        other => panic!("fence completed without CNPG: {other:?}"),
    };
    assert!(err.contains("CnpgFenceNotObserved"), "{err}");
    let v = get(&clusters(&c), "pg-eu").await;
    assert_eq!(v["metadata"]["annotations"][FENCED_ANNOTATION], "[\"*\"]");
    db.unfence(3).await.unwrap();

    // 2. CNPG reported the instance Ready, then went away (absent operator).
    let sim = spawn_cnpg_sim(c.clone(), "1");
    eventually("CNPG reports the instance ready", || async {
        ready_instances(&get(&clusters(&c), "pg-eu").await) == Some(1)
    })
    .await;
    sim.absent.store(true, Ordering::SeqCst);
    let r = tokio::time::timeout(Duration::from_millis(1500), db.fence(4)).await;
    assert!(
        !matches!(r, Ok(Ok(()))),
        "fence completed with an absent CNPG operator: {r:?}"
    );
    let view = db.view().await.unwrap();
    assert!(view.fenced && !view.fence_observed());
    // The decision core is not told the database is fenced: the next round fences again.
    assert!(!view.observation(None).read_only);
    // Without a settle bound shorter than the step timeout, the step timeout fires first.
    let slow = CnpgDatabase::new(c.clone(), NS, "pg-eu")
        .with_settle(Duration::from_secs(30), Duration::from_millis(20));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), slow.fence(4))
            .await
            .is_err()
    );
}

/// CNPG's behaviour is played by a test actor: once it reports the instance stopped
/// (`readyInstances: 0`, the pod under `instancesStatus.replicating`), the fence is done and
/// the Cluster reads as a fenced primary (not a database that is down).
#[tokio::test]
async fn cnpg_fence_completes_once_cnpg_reports_the_instances_stopped() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create(&clusters(&c), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    let sim = spawn_cnpg_sim(c.clone(), "1");
    let db = CnpgDatabase::new(c.clone(), NS, "pg-eu")
        .with_settle(Duration::from_secs(10), Duration::from_millis(20));
    eventually("Cluster settled", || async { db.observe().await.is_ok() }).await;

    // An absent operator first: not done; it comes back: done.
    sim.absent.store(true, Ordering::SeqCst);
    let fence = tokio::spawn({
        let db = db.clone();
        async move { db.fence(5).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fence.is_finished(), "fence done before CNPG acted");
    sim.absent.store(false, Ordering::SeqCst);
    fence.await.unwrap().unwrap();

    let v = get(&clusters(&c), "pg-eu").await;
    assert_eq!(ready_instances(&v), Some(0));
    assert_eq!(
        v["status"]["instancesStatus"]["replicating"],
        json!(["pg-eu-1"])
    );
    let (view, obs) = db.observe().await.unwrap();
    assert!(view.fence_observed());
    assert_eq!(obs.role, continuum_controller::decide::DbRole::Primary);
    assert!(obs.read_only);
    // Idempotent: fencing a fenced Cluster is done at once and stores nothing new.
    db.fence(5).await.unwrap();
    assert_eq!(rv(&get(&clusters(&c), "pg-eu").await), rv(&v));

    // Lifting the fence: CNPG restarts the instance, Ready again.
    db.unfence(5).await.unwrap();
    eventually("the instance is Ready again", || async {
        ready_instances(&get(&clusters(&c), "pg-eu").await) == Some(1)
    })
    .await;
    let (view, obs) = db.observe().await.unwrap();
    assert!(!view.fenced && !obs.read_only);
}

/// CNPG's behaviour is played by a test actor that reports the instance stopped only 700 ms
/// after the annotation appears (a slow operator / readiness probe): the fence waits for it.
#[tokio::test]
async fn cnpg_fence_waits_for_a_slow_cnpg_operator() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create(&clusters(&c), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    let sim = spawn_cnpg_sim(c.clone(), "1");
    let db = CnpgDatabase::new(c.clone(), NS, "pg-eu")
        .with_settle(Duration::from_secs(10), Duration::from_millis(20));
    eventually("Cluster settled", || async { db.observe().await.is_ok() }).await;
    sim.fence_delay_ms.store(700, Ordering::SeqCst);

    let t = std::time::Instant::now();
    db.fence(2).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "fence done after {:?}, before CNPG stopped the instance",
        t.elapsed()
    );
    assert_eq!(ready_instances(&get(&clusters(&c), "pg-eu").await), Some(0));
    // A step timeout shorter than the operator's delay: not done (the executor's FenceStuck).
    db.unfence(2).await.unwrap();
    eventually("the instance is Ready again", || async {
        ready_instances(&get(&clusters(&c), "pg-eu").await) == Some(1)
    })
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), db.fence(2))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn cnpg_planned_switchover_hands_the_demotion_token_to_the_peer_cluster() {
    let eu = start_cluster().await;
    let us = start_cluster().await;
    let (ce, cu) = (eu.client().await.unwrap(), us.client().await.unwrap());
    create(&clusters(&ce), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    create(&clusters(&cu), cluster_obj("pg-us", "pg-eu", "pg-eu")).await;
    let _se = spawn_cnpg_sim(ce.clone(), "7300000000000000001");
    let _su = spawn_cnpg_sim(cu.clone(), "7300000000000000001");
    let peer = |c: &kube::Client, name: &str| PeerCluster {
        api: clusters(c),
        name: name.to_owned(),
    };
    let settle = (Duration::from_secs(20), Duration::from_millis(20));
    let db_eu = CnpgDatabase::new(ce.clone(), NS, "pg-eu")
        .with_peer(Some(peer(&cu, "pg-us")))
        .with_settle(settle.0, settle.1);
    let db_us = CnpgDatabase::new(cu.clone(), NS, "pg-us")
        .with_peer(Some(peer(&ce, "pg-eu")))
        .with_settle(settle.0, settle.1);
    eventually("both Clusters settled", || async {
        db_eu.observe().await.is_ok() && db_us.observe().await.is_ok()
    })
    .await;
    assert_eq!(
        db_eu.view().await.unwrap().role(),
        continuum_controller::decide::DbRole::Primary
    );

    let lsn = db_eu.demote(7, "us-1").await.unwrap();
    let v = get(&clusters(&ce), "pg-eu").await;
    assert_eq!(v["spec"]["replica"]["primary"], "pg-us");
    assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "7");
    let token = v["status"]["demotionToken"].as_str().unwrap().to_owned();
    assert_eq!(token_lsn(&token), Some(lsn));
    // Demoting again is idempotent and yields the same LSN.
    assert_eq!(db_eu.demote(7, "us-1").await.unwrap(), lsn);
    assert_eq!(db_eu.peer_replayed().await.unwrap(), lsn);

    let promoted = db_us.promote(7).await.unwrap();
    assert_eq!(promoted, lsn);
    let v = get(&clusters(&cu), "pg-us").await;
    assert_eq!(v["spec"]["replica"]["primary"], "pg-us");
    assert_eq!(v["spec"]["replica"]["promotionToken"], token.as_str());
    assert_eq!(v["status"]["lastPromotionToken"], token.as_str());
    assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "7");
    assert_eq!(
        db_us.view().await.unwrap().role(),
        continuum_controller::decide::DbRole::Primary
    );
    // The old primary refuses a stale writer.
    assert!(matches!(
        db_eu.promote(6).await,
        Err(PlaneError::StaleEpoch { .. })
    ));
}

#[tokio::test]
async fn cnpg_stuck_states_are_named() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create(&clusters(&c), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    let sim = spawn_cnpg_sim(c.clone(), "1");
    let db = CnpgDatabase::new(c.clone(), NS, "pg-eu")
        .with_settle(Duration::from_millis(300), Duration::from_millis(20));
    eventually("Cluster settled", || async { db.observe().await.is_ok() }).await;
    sim.hold_demotion
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = db.demote(2, "us-1").await.unwrap_err().to_string();
    assert!(err.contains("CnpgDemotionTokenMissing"), "{err}");
    // Without access to the peer's cluster the token cannot travel: named, never a silent pass.
    let err = db.peer_replayed().await.unwrap_err().to_string();
    assert!(err.contains("CnpgPeerAccessMissing"), "{err}");
}

#[tokio::test]
async fn httproute_drain_zeroes_the_regions_weight_once_and_undrain_restores_it() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create(&routes(&c), route_obj("shop", &["eu-1", "us-1"])).await;
    let r = HttpRouteRoutes::new(c.clone(), NS, "shop", "eu-1");
    assert!(!r.drained().await.unwrap());

    r.drain(2).await.unwrap();
    let v = get(&routes(&c), "shop").await;
    assert_eq!(v["spec"]["rules"][0]["backendRefs"][0]["weight"], 0);
    assert_eq!(v["spec"]["rules"][0]["backendRefs"][1]["weight"], 10);
    assert_eq!(v["metadata"]["annotations"][EPOCH_ANNOTATION], "2");
    assert!(
        v["metadata"]["annotations"][ORIGINAL_WEIGHTS_ANNOTATION]
            .as_str()
            .unwrap()
            .contains("10")
    );
    assert!(r.drained().await.unwrap());
    r.drain(2).await.unwrap();
    assert_eq!(rv(&get(&routes(&c), "shop").await), rv(&v));

    assert!(matches!(
        r.undrain(1).await,
        Err(PlaneError::StaleEpoch {
            given: 1,
            applied: 2
        })
    ));
    // Draining is never refused and never lowers the recorded epoch.
    r.drain(0).await.unwrap();
    assert_eq!(
        get(&routes(&c), "shop").await["metadata"]["annotations"][EPOCH_ANNOTATION],
        "2"
    );
    r.arm(2, Duration::from_secs(1)).await.unwrap();
    r.undrain(3).await.unwrap();
    let v = get(&routes(&c), "shop").await;
    assert_eq!(v["spec"]["rules"][0]["backendRefs"][0]["weight"], 10);
    assert!(
        v["metadata"]["annotations"]
            .get(ORIGINAL_WEIGHTS_ANNOTATION)
            .is_none()
    );
    assert!(!r.drained().await.unwrap());
}

#[tokio::test]
async fn the_status_store_round_trips_the_operation_through_server_side_apply() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create_continuum(&c, continuum_obj("shop", "http://127.0.0.1:1")).await;
    let store = StatusStore::new(c.clone(), NS, "shop");
    assert_eq!(store.load().await.unwrap(), Persisted::default());

    let op = Operation {
        id: "sw-1".into(),
        kind: OpKind::Switchover,
        step: "demote".into(),
        epoch: 4,
        started_at: contract::Millis(1_700_000_000_000),
        lsn: Some(Lsn(0x3_0000_0100)),
        target: Some("us-1".into()),
    };
    let p = Persisted {
        operation: Some(op.clone()),
        completed: vec!["sw-0".into()],
    };
    store.save(&p).await.unwrap();
    let v = api.object("continuums", NS, "shop").await.unwrap();
    assert_eq!(v["status"]["operation"]["step"], "demote");
    assert_eq!(v["status"]["switchoverInProgress"], true);
    let managers: Vec<&str> = v["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert!(managers.contains(&FIELD_MANAGER), "{managers:?}");

    // A fresh store (a restarted controller) reads the same state back.
    let again = StatusStore::new(c.clone(), NS, "shop");
    assert_eq!(again.load().await.unwrap(), p);

    // The summary keeps the operation; finishing removes it and keeps the completed ids.
    let summary = continuum_controller::crd::ContinuumStatus {
        phase: Some(continuum_controller::crd::Phase::SwitchingOver),
        lease_holder: Some("eu-1".into()),
        ..Default::default()
    };
    again.write_summary(summary).await.unwrap();
    let v = api.object("continuums", NS, "shop").await.unwrap();
    assert_eq!(v["status"]["phase"], "SwitchingOver");
    assert_eq!(v["status"]["operation"]["id"], "sw-1");
    let done = Persisted {
        operation: None,
        completed: vec!["sw-0".into(), "sw-1".into()],
    };
    again.save(&done).await.unwrap();
    let v = api.object("continuums", NS, "shop").await.unwrap();
    assert!(v["status"].get("operation").is_none(), "{}", v["status"]);
    assert_eq!(v["status"]["completedRequests"], json!(["sw-0", "sw-1"]));
    assert_eq!(v["status"]["phase"], "SwitchingOver");
    assert_eq!(store.load().await.unwrap(), done);
}

/// FAULT INJECTION, so on testkit's in-memory API: a failed status write is an error (no
/// external write may follow it).
#[tokio::test]
async fn in_memory_api_a_failed_status_write_is_an_error() {
    let api = start_api().await;
    let c = api.client().unwrap();
    create_continuum(&c, continuum_obj("shop", "http://127.0.0.1:1")).await;
    let store = StatusStore::new(c.clone(), NS, "shop");
    api.fail_next_writes("continuums/status", 1, 500);
    assert!(store.save(&Persisted::default()).await.is_err());
    store.save(&Persisted::default()).await.unwrap();
}

/// Server-side apply with real field managers: another manager applying a status field the
/// controller owns, without force, gets 409 Conflict naming the controller's manager; the
/// controller's next apply (forced: it owns the status) takes the field back.
#[tokio::test]
async fn another_field_manager_conflicts_on_the_status_the_controller_owns() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create_continuum(&c, continuum_obj("shop", "http://127.0.0.1:1")).await;
    let store = StatusStore::new(c.clone(), NS, "shop");
    let summary = continuum_controller::crd::ContinuumStatus {
        phase: Some(continuum_controller::crd::Phase::Healthy),
        lease_holder: Some("eu-1".into()),
        ..Default::default()
    };
    store.write_summary(summary.clone()).await.unwrap();

    let other = kube::api::PatchParams::apply("someone-else");
    let body = json!({"apiVersion": "dr.openova.io/v1", "kind": "Continuum",
        "status": {"phase": "Failed"}});
    let err = continuums(&c)
        .patch_status("shop", &other, &kube::api::Patch::Apply(&body))
        .await
        .unwrap_err();
    let kube::Error::Api(s) = err else {
        panic!("not an API refusal: {err}")
    };
    eprintln!("{} {}: {}", s.code, s.reason, s.message);
    assert_eq!(s.code, 409, "{s:?}");
    assert!(s.message.contains(FIELD_MANAGER), "{}", s.message);
    let v = api.object("continuums", NS, "shop").await.unwrap();
    assert_eq!(v["status"]["phase"], "Healthy", "nothing changed");

    // Forced, the other manager takes the field; the controller's next apply takes it back.
    continuums(&c)
        .patch_status(
            "shop",
            &other.clone().force(),
            &kube::api::Patch::Apply(&body),
        )
        .await
        .unwrap();
    store.write_summary(summary).await.unwrap();
    let v = api.object("continuums", NS, "shop").await.unwrap();
    assert_eq!(v["status"]["phase"], "Healthy");
}
