#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Operations surface of the kube mode: `/healthz`, `/readyz`, `/metrics`, and the
//! `k switchover` / `k approve-failback` / `k status` commands through a kubeconfig naming two
//! REAL control planes (testkit's `ControlPlane`, one per "region"), and an invalid spec marked
//! Failed on a real one.

mod kube_common;

use std::sync::Arc;

use continuum_controller::kube::cli::{KubeArgs, KubeCmd, kube_command};
use continuum_controller::metrics::{self, Metrics};
use kube_common::*;

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let m = Arc::new(Metrics::new());
    m.reconciles.inc();
    m.step("demote", 0.2);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(metrics::serve(addr, m.clone(), async {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("http://{addr}{p}")).send();
    let mut health = None;
    for _ in 0..100 {
        if let Ok(r) = get("/healthz").await {
            health = Some(r.status());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(health, Some(reqwest::StatusCode::OK));
    assert_eq!(get("/readyz").await.unwrap().status(), 503);
    m.set_ready(true);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let text = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(text.contains("continuum_reconciles_total 1"), "{text}");
    assert!(
        text.contains("continuum_step_duration_seconds_count{step=\"demote\"} 1"),
        "{text}"
    );
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// One kubeconfig naming both control planes (contexts `eu` and `us`), as an operator's would.
fn kubeconfig(
    dir: &std::path::Path,
    eu: &testkit::ControlPlane,
    us: &testkit::ControlPlane,
) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    let cluster = |cp: &testkit::ControlPlane| {
        format!(
            "{{server: \"{}\", certificate-authority: \"{}\"}}",
            cp.url(),
            cp.ca_file().display()
        )
    };
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: eu\n\
             clusters:\n- name: eu\n  cluster: {}\n- name: us\n  cluster: {}\n\
             users:\n- name: eu\n  user: {{token: {}}}\n- name: us\n  user: {{token: {}}}\n\
             contexts:\n- name: eu\n  context: {{cluster: eu, user: eu, namespace: {NS}}}\n- name: us\n  context: {{cluster: us, user: us, namespace: {NS}}}\n",
            cluster(eu),
            cluster(us),
            eu.token(),
            us.token()
        ),
    )
    .unwrap();
    p
}

#[tokio::test]
async fn k_switchover_and_approve_failback_write_the_request_into_every_cluster() {
    let eu = start_cluster().await;
    let us = start_cluster().await;
    for api in [&eu, &us] {
        create_continuum(
            &api.client().await.unwrap(),
            continuum_obj("shop", "http://127.0.0.1:1"),
        )
        .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &eu, &us);
    let args = |cmd: KubeCmd| KubeArgs {
        kubeconfig: Some(kc.clone()),
        context: Some("eu".into()),
        peer_contexts: vec!["us".into()],
        namespace: None,
        cmd,
    };
    kube_command(args(KubeCmd::Switchover {
        name: "shop".into(),
        to: "us-1".into(),
        id: Some("sw-9".into()),
    }))
    .await
    .unwrap();
    for api in [&eu, &us] {
        let o = api.object("continuums", NS, "shop").await.unwrap();
        assert_eq!(o["spec"]["switchover"]["requested"], true);
        assert_eq!(o["spec"]["switchover"]["id"], "sw-9");
        assert_eq!(o["spec"]["switchover"]["targetRegion"], "us-1");
    }
    kube_command(args(KubeCmd::ApproveFailback {
        name: "shop".into(),
        id: Some("fb-1".into()),
    }))
    .await
    .unwrap();
    for api in [&eu, &us] {
        let o = api.object("continuums", NS, "shop").await.unwrap();
        assert_eq!(o["spec"]["failback"]["approved"], true);
        assert_eq!(o["spec"]["failback"]["id"], "fb-1");
    }
    // The objects still convert for the decision core (the request is well-formed).
    let c = continuums(&eu.client().await.unwrap())
        .get("shop")
        .await
        .unwrap();
    let spec = c.to_decide_spec().unwrap();
    assert_eq!(spec.switchover.unwrap().target, "us-1");
    assert!(spec.failback.unwrap().approved);
    kube_command(args(KubeCmd::Status {
        all_namespaces: true,
        output: "table".into(),
    }))
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_spec_is_marked_failed_with_an_event_and_counted() {
    use continuum_controller::kube::reconcile::{self, Context, Settings};
    let api = start_cluster().await;
    let c = api.client().await.unwrap();
    // Admitted by the API server (schema and CEL), refused by the controller's spec rules:
    // two hot standbys (this controller runs exactly two regions).
    let mut o = continuum_obj("bad", "http://127.0.0.1:1");
    o["spec"]["hotStandbyRegions"] = serde_json::json!(["us-1", "ap-1"]);
    // (The CRD's CEL rule wants every region in `regions` with an address: the API server
    // refused the object without it.)
    o["spec"]["regions"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "ap-1", "lbIPs": ["192.0.2.30"]}));
    create_continuum(&c, o).await;
    let m = Arc::new(Metrics::new());
    let ctx = Context::new(c.clone(), Settings::new("eu-1", "t"), m.clone());
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(reconcile::run(ctx, Some(NS), async {
        let _ = rx.await;
    }));
    eventually("phase Failed", || async {
        api.object("continuums", NS, "bad").await.unwrap()["status"]["phase"] == "Failed"
    })
    .await;
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::namespaced(c, NS);
    eventually("an InvalidSpec event", || async {
        events.list(&Default::default()).await.is_ok_and(|l| {
            l.items
                .iter()
                .any(|e| e.reason.as_deref() == Some("InvalidSpec"))
        })
    })
    .await;
    eventually("the failure counted", || async {
        m.encode()
            .contains("continuum_failures_total{error=\"spec\"}")
    })
    .await;
    let _ = stop.send(());
    let _ = task.await;
}
