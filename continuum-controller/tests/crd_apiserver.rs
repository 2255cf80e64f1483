#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The committed Continuum CRD on a REAL kube-apiserver (testkit's [`ControlPlane`]: etcd and
//! kube-apiserver built from the Go module proxy): the server accepts the CRD, admits upstream's
//! valid samples with every field kept (no pruning), and itself rejects the invalid ones, with
//! the structural-schema and CEL messages it gives, printed by the test.
//!
//! `tests/crd.rs` checks the same samples with a JSON-schema validator of our own; this test is
//! what the API server says.

use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use serde_json::{Value, json};
use testkit::ControlPlane;

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_docs(path: PathBuf) -> Vec<Value> {
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn samples(file: &str) -> Vec<Value> {
    yaml_docs(crate_dir().join("tests/crd-samples").join(file))
}

fn continuum_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("dr.openova.io", "v1", "Continuum"),
        "continuums",
    )
}

/// Starts a control plane with the committed CRD established and the samples' namespaces.
async fn cluster() -> (ControlPlane, kube::Client) {
    let crd = testkit::kube::Crd::Path(
        crate_dir().join("../charts/continuum-controller/crds/continuums.dr.openova.io.yaml"),
    );
    let cp = ControlPlane::start_with(&[crd], &["acme", "bank", "openbao", "qa-omantel", "edits"])
        .await
        .unwrap();
    eprintln!(
        "control plane ready in {} ms, {} MiB resident",
        cp.started_in().as_millis(),
        cp.rss_kib() / 1024
    );
    let client = cp.client().await.unwrap();
    (cp, client)
}

fn api_for(client: &kube::Client, obj: &Value) -> Api<DynamicObject> {
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("edits");
    Api::namespaced_with(client.clone(), ns, &continuum_resource())
}

/// Creates `obj`; the API server's refusal as `Err(message)`.
async fn create(client: &kube::Client, obj: &Value) -> Result<DynamicObject, String> {
    let o: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
    let pp = PostParams {
        field_manager: Some("crd-apiserver-test".into()),
        ..PostParams::default()
    };
    api_for(client, obj)
        .create(&pp, &o)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
            e => format!("not an API refusal: {e}"),
        })
}

/// Every leaf of `want` (below `spec`) is in `got` with the same value: nothing was pruned.
fn leaves_kept(want: &Value, got: &Value, path: &str, lost: &mut Vec<String>) {
    match want {
        Value::Object(m) => {
            for (k, v) in m {
                leaves_kept(v, &got[k], &format!("{path}.{k}"), lost);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                leaves_kept(v, &got[i], &format!("{path}[{i}]"), lost);
            }
        }
        leaf => {
            if got != leaf {
                lost.push(format!("{path}: sent {leaf}, stored {got}"));
            }
        }
    }
}

#[tokio::test]
async fn the_real_api_server_admits_the_valid_samples_and_refuses_the_invalid_ones() {
    let (_cp, client) = cluster().await;

    // Valid: admitted, and every field the sample sets is stored as sent.
    let mut admitted = 0;
    for file in ["continuum-sample-valid.yaml", "cont-omantel.yaml"] {
        for obj in samples(file) {
            if obj["kind"] != "Continuum" {
                continue;
            }
            let stored = create(&client, &obj)
                .await
                .unwrap_or_else(|e| panic!("{file} {}: {e}", obj["metadata"]["name"]));
            let stored = serde_json::to_value(&stored).unwrap();
            let mut lost = Vec::new();
            leaves_kept(&obj["spec"], &stored["spec"], "spec", &mut lost);
            assert!(
                lost.is_empty(),
                "pruned or changed by the server: {lost:#?}"
            );
            admitted += 1;
        }
    }
    assert_eq!(
        admitted, 4,
        "3 in continuum-sample-valid.yaml + cont-omantel"
    );

    // Invalid: refused by the server itself.
    let bad = samples("continuum-sample-invalid.yaml");
    let msg = create(&client, &bad[0]).await.unwrap_err();
    eprintln!("bad-dr refused: {msg}");
    assert!(msg.starts_with("422 Invalid"), "{msg}");
    for field in [
        "spec.hotStandbyRegions",
        "spec.leaseClient.kind",
        "spec.luaRecord.selector",
        "spec.luaRecord.healthCheck.url",
        "spec.rto",
        "spec.rpo",
    ] {
        assert!(msg.contains(field), "no error at {field}: {msg}");
    }
    let msg = create(&client, &bad[1]).await.unwrap_err();
    eprintln!("bad-dr-2 refused: {msg}");
    assert!(msg.starts_with("422 Invalid"), "{msg}");
    for field in [
        "spec.leaseClient.config.resolvers",
        "spec.leaseClient.config.ttlSeconds",
    ] {
        assert!(msg.contains(field), "no error at {field}: {msg}");
    }
}

/// The CEL rules (`x-kubernetes-validations`) run in the API server: each edit alone, on an
/// otherwise valid object, is refused with the rule's own message, and the object without the
/// edit is admitted (so the refusal is the rule's doing).
#[tokio::test]
async fn the_api_server_runs_the_crds_cel_rules() {
    let (_cp, client) = cluster().await;
    let base = || {
        let mut v = samples("continuum-sample-valid.yaml").remove(0);
        v["metadata"]["namespace"] = json!("edits");
        v
    };
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "primary-in-standbys",
            |v| v["spec"]["hotStandbyRegions"] = json!([v["spec"]["primaryRegion"].clone()]),
            "primaryRegion must not also be listed in hotStandbyRegions",
        ),
        (
            "switchover-without-id",
            |v| v["spec"]["switchover"] = json!({"requested": true}),
            "a requested switchover needs switchover.id",
        ),
        (
            "renew-too-slow",
            |v| {
                v["spec"]["leaseClient"]["config"]["ttlSeconds"] = json!(30);
                v["spec"]["leaseClient"]["config"]["renewSeconds"] = json!(15);
            },
            "renewSeconds must be less than half of ttlSeconds",
        ),
        (
            "fence-budget",
            |v| {
                // 2·renew + margin < TTL holds (11 < 300), but the worst-case fence budget
                // does not: (5 + 1)·21 = 126 < 300·2 + 24.
                v["spec"]["leaseClient"]["config"]["ttlSeconds"] = json!(300);
                v["spec"]["leaseClient"]["config"]["renewSeconds"] = json!(5);
                v["spec"]["leaseClient"]["config"]["marginSeconds"] = json!(1);
            },
            "the worst-case fence",
        ),
    ];
    for (i, (name, edit, want)) in cases.iter().enumerate() {
        let mut obj = base();
        obj["metadata"]["name"] = json!(format!("{name}-{i}"));
        edit(&mut obj);
        let msg = create(&client, &obj).await.unwrap_err();
        eprintln!("{name} refused: {msg}");
        assert!(msg.contains(want), "{name}: {msg}");
        let mut ok = base();
        ok["metadata"]["name"] = json!(format!("{name}-{i}-unedited"));
        create(&client, &ok).await.unwrap();
    }
}
