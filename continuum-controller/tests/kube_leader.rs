#![allow(clippy::unwrap_used, clippy::expect_used)]
//! In-region leader election over a `coordination.k8s.io/v1` Lease on a REAL kube-apiserver
//! (testkit's `ControlPlane`): of two replicas exactly one acts; killing the leader hands over to the other;
//! a leader whose Lease is taken, or whose renew task dies, learns it from `lost()`.

mod kube_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use continuum_controller::kube::leader::{self, LeaderConfig, Lost};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use kube_common::*;

fn cfg(identity: &str) -> LeaderConfig {
    let mut c = LeaderConfig::new(NS, "continuum-controller-eu-1", identity);
    c.lease_duration = Duration::from_secs(2);
    c.renew_deadline = Duration::from_millis(1500);
    c.renew_every = Duration::from_millis(100);
    c
}

/// A replica: waits for leadership, then "acts" (sets `acting` to its number) until it loses it,
/// then exits (returns), like the process does.
fn replica(
    client: kube::Client,
    n: usize,
    acting: Arc<AtomicUsize>,
    actors: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Lost> {
    tokio::spawn(async move {
        let mut l = leader::acquire(client, cfg(&format!("pod-{n}"))).await;
        actors.fetch_add(1, Ordering::SeqCst);
        acting.store(n, Ordering::SeqCst);
        let lost = l.lost().await;
        actors.fetch_sub(1, Ordering::SeqCst);
        lost
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_two_replicas_acts_and_killing_it_hands_over() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    let acting = Arc::new(AtomicUsize::new(0));
    let actors = Arc::new(AtomicUsize::new(0));
    let r1 = replica(c.clone(), 1, acting.clone(), actors.clone());
    let r2 = replica(c.clone(), 2, acting.clone(), actors.clone());
    eventually("a leader", || async { acting.load(Ordering::SeqCst) != 0 }).await;
    // Renewals keep the first leader; the other never acts meanwhile.
    for _ in 0..10 {
        assert_eq!(actors.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = acting.load(Ordering::SeqCst);
    let (leader_task, other) = if first == 1 { (r1, r2) } else { (r2, r1) };
    let lease = api
        .object("leases", NS, "continuum-controller-eu-1")
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], format!("pod-{first}"));

    // Kill the leader's process: its renew task goes with it.
    leader_task.abort();
    let _ = leader_task.await;
    actors.store(0, Ordering::SeqCst);
    let second = if first == 1 { 2 } else { 1 };
    eventually("the other replica took over", || async {
        acting.load(Ordering::SeqCst) == second
    })
    .await;
    let lease = api
        .object("leases", NS, "continuum-controller-eu-1")
        .await
        .unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], format!("pod-{second}"));
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    other.abort();
}

#[tokio::test]
async fn a_leader_learns_when_its_lease_is_taken_or_its_renew_task_dies() {
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    let mut l = leader::acquire(c.clone(), cfg("pod-a")).await;
    // Someone else writes the Lease (e.g. an operator or a replica after a partition).
    let leases: Api<Lease> = Api::namespaced(c.clone(), NS);
    let mut lease = leases.get("continuum-controller-eu-1").await.unwrap();
    lease.spec.as_mut().unwrap().holder_identity = Some("pod-b".into());
    leases
        .replace("continuum-controller-eu-1", &PostParams::default(), &lease)
        .await
        .unwrap();
    assert_eq!(l.lost().await, Lost::TakenBy("pod-b".into()));

    // A renew task that dies ends leadership too.
    let mut l = leader::acquire(c.clone(), {
        let mut x = cfg("pod-b");
        x.lease_duration = Duration::from_secs(30);
        x
    })
    .await;
    l.abort();
    assert_eq!(l.lost().await, Lost::TaskDied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operator_replicas_one_drives_the_region_and_killing_it_hands_over() {
    use continuum_controller::kube::cli::{OperatorArgs, run_operator};
    let dir = tempfile::tempdir().unwrap();
    let (witness, _stop) = start_witness(dir.path()).await;
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    create(&clusters(&c), cluster_obj("pg-eu", "pg-eu", "pg-us")).await;
    create(&routes(&c), route_obj("shop", &["eu-1", "us-1"])).await;
    create_continuum(&c, continuum_obj("shop", &witness)).await;
    let _sim = spawn_cnpg_sim(c.clone(), "1");
    let args = |identity: &str| OperatorArgs {
        region: "eu-1".into(),
        namespace: Some(NS.into()),
        witness_url: None,
        witness_token: TOKEN.into(),
        nats_url: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        peer_kubeconfig: None,
        pg_conninfo: None,
        lease_namespace: NS.into(),
        identity: identity.into(),
        leader_lease_seconds: 2,
        tick_ms: 300,
    };
    let replicas: Vec<_> = ["pod-1", "pod-2"]
        .into_iter()
        .map(|id| {
            let c = c.clone();
            let a = args(id);
            tokio::spawn(async move { run_operator(c, None, a, std::future::pending()).await })
        })
        .collect();
    let holder = async || {
        api.object("leases", NS, "continuum-controller-eu-1")
            .await
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    let status = async || api.object("continuums", NS, "shop").await.unwrap()["status"].clone();
    eventually(
        "the leading replica holds the witness lease for eu-1",
        || async { holder().await.is_some() && status().await["leaseHolder"] == "eu-1" },
    )
    .await;
    let first = holder().await.unwrap();
    let epoch0 = status().await["epoch"].as_i64().unwrap();
    let (lead, other) = if first == "pod-1" { (0, 1) } else { (1, 0) };
    assert!(
        !replicas[other].is_finished(),
        "the standby replica is waiting"
    );

    // Kill the leading replica (its controller and its Lease task die together).
    replicas[lead].abort();
    eventually("the other replica holds the leader Lease", || async {
        holder().await.is_some_and(|h| h != first)
    })
    .await;
    let seen = status().await["leaseExpiresAt"].clone();
    eventually("the new leader renews eu-1's witness lease", || async {
        let s = status().await;
        s["leaseExpiresAt"] != seen && s["leaseHolder"] == "eu-1"
    })
    .await;
    assert!(status().await["epoch"].as_i64().unwrap() >= epoch0);
    replicas[other].abort();
}
