#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `recover` against a REAL kube-apiserver (testkit's `ControlPlane`) loaded with the real Flux
//! HelmRelease CRD (the failed-status-patch case injects its fault on the in-memory API):
//! both branches, the pre-counted guardrail (exit 1), rollback of the annotation when the
//! status patch fails, idempotent reruns, dry-run, and the summary line's counts.

use std::time::Duration;

use flow_adapter_flux::flux::{format_time_ms, helmrelease_resource};
use flow_adapter_flux::recover::{
    self, AUDIT_PHRASE, AUTO_CORRECTED_AT, RecoverConfig, SUSPEND_TOGGLE, Summary,
};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::ControlPlane;
use testkit::kube::{Crd, KubeApi};

const NS: &str = "flux-system";
/// The run's clock: 2026-11-20T12:00:00Z.
const NOW: i64 = 1_795_176_000_000;
const MIN: i64 = 60_000;

fn cfg() -> RecoverConfig {
    RecoverConfig {
        namespace: None,
        threshold: Duration::from_secs(300),
        guardrail: 10,
        dry_run: false,
        toggle_pause: Duration::ZERO,
    }
}

/// A REAL control plane with Flux's HelmRelease CRD and the `flux-system` namespace.
async fn kube() -> (ControlPlane, kube::Client, Api<DynamicObject>) {
    let k = ControlPlane::start_with(
        &[Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml")],
        &[NS],
    )
    .await
    .unwrap();
    let c = k.client().await.unwrap();
    let a = Api::namespaced_with(c.clone(), NS, &helmrelease_resource());
    (k, c, a)
}

/// The in-memory API, for the one test that injects a failed write (a real API server cannot
/// be made to answer one status patch with a 500).
async fn kube_in_memory() -> (KubeApi, kube::Client, Api<DynamicObject>) {
    let k = KubeApi::start(&[Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml")])
        .await
        .unwrap();
    let c = k.client().unwrap();
    let a = Api::namespaced_with(c.clone(), NS, &helmrelease_resource());
    (k, c, a)
}

/// Every HelmRelease's name and resourceVersion: equal before and after means no write.
async fn versions(api: &Api<DynamicObject>) -> Vec<(String, String)> {
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|o| {
            (
                o.metadata.name.unwrap_or_default(),
                o.metadata.resource_version.unwrap_or_default(),
            )
        })
        .collect()
}

fn history(status: &str, version: i64) -> Value {
    json!([{
        "name": "x", "namespace": NS, "chartName": "x", "chartVersion": "1.0.0",
        "configDigest": "sha256:aa", "digest": "sha256:bb",
        "firstDeployed": format_time_ms(NOW - 60 * MIN), "lastDeployed": format_time_ms(NOW - 30 * MIN),
        "status": status, "version": version
    }])
}

/// A release whose Ready has been `ready` (reason `reason`) for `age_min` minutes, with
/// `history[0].status == release_status`.
async fn hr(api: &Api<DynamicObject>, name: &str, ready: &str, age_min: i64, release_status: &str) {
    let o: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"interval": "10m", "chart": {"spec": {"chart": name, "sourceRef": {"kind": "HelmRepository", "name": "r"}}}}
    }))
    .unwrap();
    api.create(&PostParams::default(), &o).await.unwrap();
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "observedGeneration": 1,
            "history": history(release_status, 1),
            "conditions": [
                {"type": "Ready", "status": ready, "reason": "Progressing", "message": "Running 'upgrade' action",
                 "lastTransitionTime": format_time_ms(NOW - age_min * MIN), "observedGeneration": 1},
                {"type": "Released", "status": "True", "reason": "InstallSucceeded", "message": "Helm install succeeded",
                 "lastTransitionTime": format_time_ms(NOW - 60 * MIN), "observedGeneration": 1}
            ]
        }})),
    )
    .await
    .unwrap();
}

async fn get(api: &Api<DynamicObject>, name: &str) -> DynamicObject {
    api.get(name).await.unwrap()
}

fn ready_of(o: &DynamicObject) -> Value {
    o.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap()
}

fn annotation(o: &DynamicObject, key: &str) -> Option<String> {
    o.metadata.annotations.as_ref()?.get(key).cloned()
}

#[tokio::test]
async fn branch_b_forces_ready_true_with_the_audit_annotation_once() {
    let (_k, c, api) = kube().await;
    hr(&api, "bp-vpa", "Unknown", 10, "deployed").await;
    let s = recover::run(c.clone(), &cfg(), NOW).await.unwrap();
    assert_eq!(
        (s.candidates, s.acted, s.status_patched, s.failed),
        (1, 1, 1, 0)
    );
    assert_eq!(s.exit_code(), 0);
    let o = get(&api, "bp-vpa").await;
    assert_eq!(annotation(&o, AUTO_CORRECTED_AT), Some(format_time_ms(NOW)));
    let r = ready_of(&o);
    assert_eq!(r["status"], "True");
    assert_eq!(r["reason"], "ReconciliationSucceeded");
    assert!(r["message"].as_str().unwrap().contains(AUDIT_PHRASE));
    let kinds: Vec<&str> = o.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Ready", "Released"], "other conditions are kept");

    // helm-controller flips it back to Unknown: the annotation keeps the rerun from acting again.
    api.patch_status(
        "bp-vpa",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [
            {"type": "Ready", "status": "Unknown", "reason": "Progressing", "message": "again",
             "lastTransitionTime": format_time_ms(NOW - 20 * MIN)}
        ]}})),
    )
    .await
    .unwrap();
    let before = get(&api, "bp-vpa").await.metadata.resource_version;
    let s = recover::run(c, &cfg(), NOW).await.unwrap();
    assert_eq!((s.candidates, s.acted, s.skipped), (0, 0, 1));
    assert_eq!(get(&api, "bp-vpa").await.metadata.resource_version, before);
}

#[tokio::test]
async fn a_failing_status_patch_rolls_the_annotation_back_and_the_next_run_retries() {
    let (k, c, api) = kube_in_memory().await;
    hr(&api, "bp-vpa", "Unknown", 10, "deployed").await;
    k.fail_next_writes("helmreleases/status", 1, 500);
    let s = recover::run(c.clone(), &cfg(), NOW).await.unwrap();
    assert_eq!((s.acted, s.failed, s.rolled_back), (0, 1, 1));
    assert_eq!(s.exit_code(), 1);
    let o = get(&api, "bp-vpa").await;
    assert_eq!(
        annotation(&o, AUTO_CORRECTED_AT),
        None,
        "annotation removed again"
    );
    assert_eq!(ready_of(&o)["status"], "Unknown");

    let s = recover::run(c, &cfg(), NOW).await.unwrap();
    assert_eq!((s.acted, s.failed), (1, 0));
    assert_eq!(ready_of(&get(&api, "bp-vpa").await)["status"], "True");
}

#[tokio::test]
async fn branch_a_toggles_suspend_once_per_helm_revision() {
    let (_k, c, api) = kube().await;
    hr(&api, "bp-stuck", "Unknown", 10, "pending-upgrade").await;
    let gen0 = get(&api, "bp-stuck").await.metadata.generation.unwrap();
    let s = recover::run(c.clone(), &cfg(), NOW).await.unwrap();
    assert_eq!((s.candidates, s.acted, s.suspend_toggled), (1, 1, 1));
    let o = get(&api, "bp-stuck").await;
    assert_eq!(
        o.data["spec"]["suspend"],
        json!(false),
        "never left suspended"
    );
    assert_eq!(
        o.metadata.generation.unwrap(),
        gen0 + 2,
        "spec.suspend went true, then false"
    );
    let a = annotation(&o, SUSPEND_TOGGLE).unwrap();
    assert!(a.starts_with("revision=1;phase=done;"), "{a}");

    let s = recover::run(c, &cfg(), NOW).await.unwrap();
    assert_eq!((s.candidates, s.acted, s.skipped), (0, 0, 1));
    assert_eq!(
        get(&api, "bp-stuck").await.metadata.generation.unwrap(),
        gen0 + 2
    );
}

#[tokio::test]
async fn a_toggle_left_half_done_is_finished_by_the_next_run() {
    let (_k, c, api) = kube().await;
    hr(&api, "bp-stuck", "Unknown", 10, "pending-install").await;
    api.patch(
        "bp-stuck",
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"annotations": {SUSPEND_TOGGLE: "revision=1;phase=suspending;at=x"}},
            "spec": {"suspend": true}
        })),
    )
    .await
    .unwrap();
    let s = recover::run(c, &cfg(), NOW).await.unwrap();
    assert_eq!((s.resumed, s.acted, s.failed), (1, 0, 0));
    let o = get(&api, "bp-stuck").await;
    assert_eq!(o.data["spec"]["suspend"], json!(false));
    assert!(
        annotation(&o, SUSPEND_TOGGLE)
            .unwrap()
            .contains("phase=done")
    );
}

#[tokio::test]
async fn more_than_ten_candidates_trip_the_guardrail_and_nothing_changes() {
    let (_k, c, api) = kube().await;
    for i in 0..6 {
        hr(&api, &format!("b{i}"), "Unknown", 10, "deployed").await;
    }
    for i in 0..5 {
        hr(&api, &format!("a{i}"), "Unknown", 10, "pending-install").await;
    }
    let rv = versions(&api).await;
    let s = recover::run(c.clone(), &cfg(), NOW).await.unwrap();
    assert!(s.guardrail_tripped);
    assert_eq!((s.candidates, s.acted), (11, 0));
    assert_eq!(s.exit_code(), 1);
    assert_eq!(versions(&api).await, rv, "not a single write");

    // Exactly ten is allowed.
    api.patch_status(
        "a4",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "UpgradeSucceeded", "message": "ok",
             "lastTransitionTime": format_time_ms(NOW)}
        ]}})),
    )
    .await
    .unwrap();
    let s = recover::run(c, &cfg(), NOW).await.unwrap();
    assert!(!s.guardrail_tripped);
    assert_eq!(
        (s.candidates, s.acted, s.status_patched, s.suspend_toggled),
        (10, 10, 6, 4)
    );
    assert_eq!(s.exit_code(), 0);
}

#[tokio::test]
async fn dry_run_plans_and_writes_nothing() {
    let (_k, c, api) = kube().await;
    hr(&api, "b", "Unknown", 10, "deployed").await;
    hr(&api, "a", "Unknown", 10, "pending-install").await;
    let rv = versions(&api).await;
    let s = recover::run(
        c,
        &RecoverConfig {
            dry_run: true,
            ..cfg()
        },
        NOW,
    )
    .await
    .unwrap();
    assert_eq!((s.candidates, s.acted, s.failed), (2, 0, 0));
    assert!(s.dry_run);
    assert_eq!(versions(&api).await, rv);
}

#[tokio::test]
async fn the_summary_line_counts_each_outcome() {
    let (_k, c, api) = kube().await;
    hr(&api, "stuck-b1", "Unknown", 10, "deployed").await;
    hr(&api, "stuck-b2", "Unknown", 6, "deployed").await;
    hr(&api, "stuck-a", "False", 30, "pending-install").await;
    hr(&api, "healthy", "True", 100, "deployed").await;
    hr(&api, "too-recent", "Unknown", 2, "deployed").await;
    hr(&api, "failed-release", "False", 100, "failed").await;
    hr(&api, "corrected", "Unknown", 10, "deployed").await;
    api.patch(
        "corrected",
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {AUTO_CORRECTED_AT: "2026-11-19T00:00:00Z"}}}),
        ),
    )
    .await
    .unwrap();
    let s = recover::run(c, &cfg(), NOW).await.unwrap();
    assert_eq!(
        s,
        Summary {
            scanned: 7,
            candidates: 3,
            acted: 3,
            suspend_toggled: 1,
            status_patched: 2,
            resumed: 0,
            skipped: 4,
            failed: 0,
            rolled_back: 0,
            dry_run: false,
            guardrail_tripped: false,
            threshold_secs: 300,
        }
    );
    assert_eq!(
        s.to_string(),
        "scan complete: scanned=7 candidates=3 acted=3 suspend_toggled=1 status_patched=2 resumed=0 skipped=4 failed=0 rolled_back=0 dry_run=false guardrail=ok threshold=300s"
    );
}
