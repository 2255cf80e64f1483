#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The real binary: `recover` against a REAL kube-apiserver (through its kubeconfig, TLS and a
//! bearer token) exits
//! 1 with the guardrail log and the summary line; invalid configuration exits 64.

use flow_adapter_flux::flux::{format_time_ms, helmrelease_resource};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;
use testkit::ControlPlane;
use testkit::kube::Crd;

const BIN: &str = env!("CARGO_BIN_EXE_flow-adapter-flux");

async fn stuck(api: &Api<DynamicObject>, name: &str, now_ms: i64) {
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": "flux-system"},
        // (Flux's CEL rule wants a chart or a chartRef: the real API server refused the
        // chartless object the in-memory API had accepted.)
        "spec": {"interval": "10m", "chart": {"spec": {"chart": name,
            "sourceRef": {"kind": "HelmRepository", "name": "r"}}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
    let t = format_time_ms(now_ms - 3_600_000);
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(json!({"status": {
        "history": [{"name": name, "namespace": "flux-system", "chartName": "x", "chartVersion": "1",
                     "configDigest": "d", "digest": "d", "firstDeployed": t, "lastDeployed": t,
                     "status": "deployed", "version": 1}],
        "conditions": [{"type": "Ready", "status": "Unknown", "reason": "Progressing",
                        "message": "m", "lastTransitionTime": t}]
    }}))).await.unwrap();
}

async fn recover(k: &ControlPlane, extra: &[&str]) -> std::process::Output {
    tokio::process::Command::new(BIN)
        .arg("recover")
        .args(extra)
        .env("KUBECONFIG", k.kubeconfig())
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn recover_exits_1_on_the_guardrail_and_0_after_a_clean_run() {
    let k = ControlPlane::start_with(
        &[Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml")],
        &["flux-system"],
    )
    .await
    .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(
        k.client().await.unwrap(),
        "flux-system",
        &helmrelease_resource(),
    );
    let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
    for i in 0..11 {
        stuck(&api, &format!("r{i:02}"), now).await;
    }
    let out = recover(&k, &[]).await;
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("GUARDRAIL: 11 stuck HelmReleases detected (more than 10)"),
        "{log}"
    );
    assert!(
        log.contains("scan complete: scanned=11 candidates=11 acted=0"),
        "{log}"
    );

    let out = recover(&k, &["--guardrail", "11"]).await;
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert!(
        log.contains("scan complete: scanned=11 candidates=11 acted=11"),
        "{log}"
    );
    assert!(
        log.contains("[A66] HR flux-system/r00 patched to Ready=True"),
        "{log}"
    );
}

#[tokio::test]
async fn invalid_configuration_exits_64_naming_the_env() {
    let out = tokio::process::Command::new(BIN)
        .args([
            "emit",
            "--region-key",
            "fsn1",
            "--flow-server-url",
            "ftp://x",
            "--flow-id",
            "f",
        ])
        .env_remove("FLOW_SERVER_URL")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOW_SERVER_URL"));
    let out = tokio::process::Command::new(BIN)
        .args(["recover", "--stuck-threshold", "soon"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("STUCK_HR_RECOVERY_THRESHOLD"));
}
