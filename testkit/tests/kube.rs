//! Conformance tests of the in-memory API (`testkit::kube`), driven only through kube-rs clients:
//! `Api` (dynamic and typed), discovery, `watcher`, `Controller`, `finalizer`, and a Lease race.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::{Controller, watcher};
use kube::{Client, Discovery};
use serde_json::{Value, json};
use testkit::kube::Crd;
use testkit::{KubeApi, assert_eventually};

const NS: &str = "dr";

/// A tiny cluster-scoped CRD without a status subresource, given as YAML text.
const WIDGET_CRD: &str = r"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.test
spec:
  group: example.test
  scope: Cluster
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

async fn start() -> KubeApi {
    KubeApi::start(&[
        Crd::bundled("continuum.yaml"),
        Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml"),
        Crd::bundled("gateway.networking.k8s.io_httproutes.yaml"),
        Crd::Yaml(WIDGET_CRD.to_owned()),
    ])
    .await
    .expect("start the in-memory API")
}

fn continuum_ar() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("dr.openova.io", "v1", "Continuum"),
        "continuums",
    )
}

fn continuums(client: &Client) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), NS, &continuum_ar())
}

fn widgets(client: &Client) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.test", "v1", "Widget"),
        "widgets",
    );
    Api::all_with(client.clone(), &ar)
}

fn continuum(name: &str, primary: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "dr.openova.io/v1",
        "kind": "Continuum",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": name}},
        "spec": spec(primary),
        "status": {"phase": "ignored-on-create"},
    }))
    .expect("a DynamicObject")
}

/// A Continuum spec that passes the CRD's schema (after `continuum-sample-valid.yaml`).
fn spec(primary: &str) -> Value {
    json!({
        "applicationRef": "marketing-site",
        "primaryRegion": primary,
        "hotStandbyRegions": ["eu-2"],
        "leaseClient": {"kind": "dns-quorum", "config": {"ttlSeconds": 30, "renewSeconds": 10}},
    })
}

fn api_code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn generation(o: &DynamicObject) -> i64 {
    o.metadata.generation.expect("generation")
}

#[tokio::test]
async fn discovery_lists_builtins_and_loaded_crds_with_their_status_subresource() {
    let kube = start().await;
    assert!(kube.url().starts_with("http://127.0.0.1:"));
    let client = kube.client().expect("client");
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.major, "1");
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let mut found = HashMap::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            found.insert(format!("{}/{}", ar.api_version, ar.plural), caps);
        }
    }
    for key in [
        "v1/secrets",
        "v1/configmaps",
        "v1/events",
        "coordination.k8s.io/v1/leases",
        "events.k8s.io/v1/events",
        "dr.openova.io/v1/continuums",
        "helm.toolkit.fluxcd.io/v2/helmreleases",
        "gateway.networking.k8s.io/v1/httproutes",
        "example.test/v1/widgets",
    ] {
        assert!(
            found.contains_key(key),
            "{key} missing from {:?}",
            found.keys()
        );
    }
    let cont = &found["dr.openova.io/v1/continuums"];
    assert_eq!(cont.scope, kube::discovery::Scope::Namespaced);
    assert!(
        cont.subresources
            .iter()
            .any(|(ar, _)| ar.plural == "status")
    );
    assert_eq!(
        found["example.test/v1/widgets"].scope,
        kube::discovery::Scope::Cluster
    );
    // A served non-storage version is reachable too.
    let beta = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1beta1", "HTTPRoute"),
        "httproutes",
    );
    let routes: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &beta);
    assert!(
        routes
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty()
    );
    // A dry run is refused loudly rather than ignored.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "x"}})).expect("cm");
    let err = cms
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &cm,
        )
        .await
        .expect_err("dry run");
    assert_eq!(api_code(&err), 400);
    // Dropping the in-memory API stops serving, pooled connections included.
    drop(kube);
    assert_eventually!(client.apiserver_version().await.is_err());
}

#[tokio::test]
async fn crud_on_a_fixture_crd_with_kubernetes_status_errors() {
    let kube = start().await;
    let client = kube.client().expect("client");
    let api = continuums(&client);

    let created = api
        .create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");
    assert_eq!(generation(&created), 1);
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    assert!(
        created.data.get("status").is_none(),
        "status is dropped on create"
    );
    api.create(&PostParams::default(), &continuum("b", "eu-2"))
        .await
        .expect("create b");

    let err = api
        .create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect_err("duplicate");
    assert_eq!(api_code(&err), 409);
    if let kube::Error::Api(s) = &err {
        assert_eq!(s.reason, "AlreadyExists");
    }

    let got = api.get("a").await.expect("get");
    assert_eq!(got.data["spec"]["primaryRegion"], "eu-1");
    assert_eq!(
        kube.object("continuums", NS, "a").expect("stored")["kind"],
        "Continuum"
    );

    let all = api.list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 2);
    let only_b = api
        .list(&ListParams::default().labels("app=b"))
        .await
        .expect("list by label");
    assert_eq!(only_b.items.len(), 1);
    assert_eq!(only_b.items[0].metadata.name.as_deref(), Some("b"));
    let not_b = api
        .list(&ListParams::default().labels("app!=b"))
        .await
        .expect("list by label inequality");
    assert_eq!(not_b.items.len(), 1);
    let everywhere: Api<DynamicObject> = Api::all_with(client.clone(), &continuum_ar());
    assert_eq!(
        everywhere
            .list(&ListParams::default())
            .await
            .expect("all ns")
            .items
            .len(),
        2
    );
    let elsewhere: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), "other", &continuum_ar());
    assert!(
        elsewhere
            .list(&ListParams::default())
            .await
            .expect("other ns")
            .items
            .is_empty()
    );

    // kube's metadata API (PartialObjectMetadata).
    let metas = api
        .list_metadata(&ListParams::default())
        .await
        .expect("list_metadata");
    assert_eq!(metas.items.len(), 2);
    let meta = api.get_metadata("b").await.expect("get_metadata");
    assert_eq!(meta.metadata.labels.expect("labels")["app"], "b");

    let mut changed = got.clone();
    changed.data["spec"]["primaryRegion"] = json!("eu-2");
    let replaced = api
        .replace("a", &PostParams::default(), &changed)
        .await
        .expect("replace");
    assert_eq!(replaced.data["spec"]["primaryRegion"], "eu-2");

    let merged = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"x": "1"}}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(merged.metadata.annotations.expect("annotations")["x"], "1");
    let json_patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::<()>::Json(
                serde_json::from_value(
                    json!([{"op": "replace", "path": "/spec/primaryRegion", "value": "eu-1"}]),
                )
                .expect("json patch"),
            ),
        )
        .await
        .expect("json patch");
    assert_eq!(json_patched.data["spec"]["primaryRegion"], "eu-1");

    let deleted = api
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let status = deleted.right().expect("deleted at once: a Status");
    assert_eq!(status.details.expect("details").name, "a");
    let err = api.get("a").await.expect_err("gone");
    assert_eq!(api_code(&err), 404);
    assert!(api.get_opt("a").await.expect("get_opt").is_none());

    // Cluster-scoped kind from inline YAML.
    let w = widgets(&client);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.test/v1", "kind": "Widget",
        "metadata": {"generateName": "w-"}, "spec": {"size": 1},
    }))
    .expect("widget");
    let made = w
        .create(&PostParams::default(), &widget)
        .await
        .expect("create widget");
    let name = made.metadata.name.expect("generated name");
    assert!(name.starts_with("w-") && name.len() == 7, "{name}");
    assert!(made.metadata.namespace.is_none());
}

#[tokio::test]
async fn a_replace_with_a_stale_resource_version_is_a_409_conflict() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let v1 = api
        .create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");
    let mut first = v1.clone();
    first.data["spec"]["primaryRegion"] = json!("eu-2");
    api.replace("a", &PostParams::default(), &first)
        .await
        .expect("first replace wins");
    let mut stale = v1.clone();
    stale.data["spec"]["primaryRegion"] = json!("eu-3");
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .expect_err("stale replace");
    assert_eq!(api_code(&err), 409);
    if let kube::Error::Api(s) = &err {
        assert_eq!(s.reason, "Conflict");
    }
    // A merge patch carrying the stale resourceVersion is a precondition failure too.
    let err = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": v1.metadata.resource_version}})),
        )
        .await
        .expect_err("stale patch");
    assert_eq!(api_code(&err), 409);
    // A custom resource cannot be replaced without a resourceVersion.
    let mut unconditional = v1;
    unconditional.metadata.resource_version = None;
    let err = api
        .replace("a", &PostParams::default(), &unconditional)
        .await
        .expect_err("no resourceVersion");
    assert_eq!(api_code(&err), 422);
    assert_eq!(
        api.get("a").await.expect("get").data["spec"]["primaryRegion"],
        "eu-2"
    );
}

#[tokio::test]
async fn the_status_subresource_is_isolated_from_the_main_resource() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let created = api
        .create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");

    // A write to /status changes only .status.
    let mut via_status = created.clone();
    via_status.data["status"] = json!({"phase": "Healthy"});
    via_status.data["spec"]["primaryRegion"] = json!("eu-2");
    via_status.metadata.labels = Some([("sneaky".to_owned(), "yes".to_owned())].into());
    let after = api
        .replace_status("a", &PostParams::default(), &via_status)
        .await
        .expect("replace status");
    assert_eq!(after.data["status"]["phase"], "Healthy");
    assert_eq!(after.data["spec"]["primaryRegion"], "eu-1");
    assert!(
        !after
            .metadata
            .labels
            .clone()
            .expect("labels")
            .contains_key("sneaky")
    );
    assert_eq!(
        generation(&after),
        1,
        "status writes do not bump generation"
    );

    // A write to the main resource ignores .status.
    let mut via_main = after.clone();
    via_main.data["status"] = json!({"phase": "Broken"});
    via_main.data["spec"]["primaryRegion"] = json!("eu-2");
    let after = api
        .replace("a", &PostParams::default(), &via_main)
        .await
        .expect("replace");
    assert_eq!(after.data["status"]["phase"], "Healthy");
    assert_eq!(after.data["spec"]["primaryRegion"], "eu-2");

    let patched = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"epoch": 7}, "spec": {"primaryRegion": "eu-9"}})),
        )
        .await
        .expect("patch status");
    assert_eq!(patched.data["status"]["epoch"], 7);
    assert_eq!(patched.data["status"]["phase"], "Healthy");
    assert_eq!(patched.data["spec"]["primaryRegion"], "eu-2");
    assert_eq!(
        api.get_status("a").await.expect("get status").data["status"]["epoch"],
        7
    );
}

#[tokio::test]
async fn generation_bumps_on_spec_changes_only_and_no_op_writes_store_nothing() {
    let kube = start().await;
    let client = kube.client().expect("client");
    let api = continuums(&client);
    let o = api
        .create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");
    let rv0 = o.metadata.resource_version.clone();

    let meta_only = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "gold"}}})),
        )
        .await
        .expect("label patch");
    assert_eq!(
        generation(&meta_only),
        1,
        "metadata changes keep generation"
    );
    assert_ne!(meta_only.metadata.resource_version, rv0);

    let spec = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoFailover": true}})),
        )
        .await
        .expect("spec patch");
    assert_eq!(generation(&spec), 2);

    let status = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Healthy"}})),
        )
        .await
        .expect("status patch");
    assert_eq!(generation(&status), 2);

    let before = kube.resource_version();
    let same = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"autoFailover": true}})),
        )
        .await
        .expect("no-op patch");
    assert_eq!(
        same.metadata.resource_version,
        status.metadata.resource_version
    );
    assert_eq!(
        kube.resource_version(),
        before,
        "a no-op write stores nothing"
    );

    // Without a status subresource, .status is part of what bumps generation.
    let w = widgets(&client);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.test/v1", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"size": 1},
    }))
    .expect("widget");
    w.create(&PostParams::default(), &widget)
        .await
        .expect("create widget");
    let changed = w
        .patch(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ok": true}})),
        )
        .await
        .expect("status on a kind without the subresource");
    assert_eq!(generation(&changed), 2);
    assert_eq!(changed.data["status"]["ok"], true);
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_tracks_field_managers() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let applied = json!({
        "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
        "metadata": {"name": "a", "labels": {"owner": "ctl"}},
        "spec": spec("eu-1").as_object().cloned().map(|mut m| {
            m.insert("ttl".into(), json!(30));
            m.insert("renew".into(), json!(10));
            m
        }),
    });
    let created = api
        .patch(
            "a",
            &PatchParams::apply("continuum-controller"),
            &Patch::Apply(&applied),
        )
        .await
        .expect("apply creates");
    assert_eq!(created.data["spec"]["ttl"], 30);
    assert_eq!(generation(&created), 1);
    let mf = created
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields");
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("continuum-controller"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Applying the same fields again is a no-op.
    let again = api
        .patch(
            "a",
            &PatchParams::apply("continuum-controller"),
            &Patch::Apply(&applied),
        )
        .await
        .expect("re-apply");
    assert_eq!(
        again.metadata.resource_version,
        created.metadata.resource_version
    );

    // Dropping a field this manager owned removes it; a changed field bumps generation.
    let smaller = json!({
        "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
        "metadata": {"name": "a"},
        "spec": spec("eu-1").as_object().cloned().map(|mut m| {
            m.insert("ttl".into(), json!(45));
            m
        }),
    });
    let updated = api
        .patch(
            "a",
            &PatchParams::apply("continuum-controller"),
            &Patch::Apply(&smaller),
        )
        .await
        .expect("apply update");
    assert_eq!(updated.data["spec"]["ttl"], 45);
    assert!(updated.data["spec"].get("renew").is_none());
    assert!(
        updated
            .metadata
            .labels
            .clone()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(generation(&updated), 2);

    // Another manager setting a field to a different value conflicts unless forced.
    let rival = json!({
        "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
        "metadata": {"name": "a"},
        "spec": {"ttl": 60},
    });
    let err = api
        .patch("a", &PatchParams::apply("kubectl"), &Patch::Apply(&rival))
        .await
        .expect_err("conflict");
    assert_eq!(api_code(&err), 409);
    let forced = api
        .patch(
            "a",
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&rival),
        )
        .await
        .expect("forced apply");
    assert_eq!(forced.data["spec"]["ttl"], 60);
    let managers: Vec<_> = forced
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields")
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"kubectl".to_owned()));

    // Status via SSA on /status: only .status changes.
    let status = json!({
        "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
        "metadata": {"name": "a"},
        "status": {"phase": "Healthy", "epoch": 3},
        "spec": {"primaryRegion": "ignored"},
    });
    let with_status = api
        .patch_status(
            "a",
            &PatchParams::apply("continuum-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("apply status");
    assert_eq!(with_status.data["status"]["epoch"], 3);
    assert_eq!(with_status.data["spec"]["primaryRegion"], "eu-1");
    assert_eq!(generation(&with_status), generation(&forced));

    // Apply to /status of a missing object is a 404; a plain patch of a missing object too.
    let err = api
        .patch_status(
            "nope",
            &PatchParams::apply("m"),
            &Patch::Apply(json!({
                "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
                "metadata": {"name": "nope"}, "status": {"phase": "Healthy"},
            })),
        )
        .await
        .expect_err("missing");
    assert_eq!(api_code(&err), 404);
}

#[tokio::test]
async fn delete_with_finalizers_sets_deletion_timestamp_until_they_are_removed() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let mut o = continuum("a", "eu-1");
    o.metadata.finalizers = Some(vec!["continuums.dr.openova.io".into()]);
    api.create(&PostParams::default(), &o)
        .await
        .expect("create");

    let answer = api
        .delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    let held = answer.left().expect("held by a finalizer: the object");
    assert!(held.metadata.deletion_timestamp.is_some());
    let pending = api.get("a").await.expect("still there");
    assert!(pending.metadata.deletion_timestamp.is_some());
    // Deleting again changes nothing.
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete again");
    assert_eq!(
        api.get("a").await.expect("get").metadata.resource_version,
        pending.metadata.resource_version
    );

    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert_eq!(api_code(&api.get("a").await.expect_err("gone")), 404);
}

async fn next_event<S>(stream: &mut S, what: &str) -> watcher::Event<DynamicObject>
where
    S: Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(e))) => return e,
            // Errors (such as the 410 of an expired resourceVersion) are followed by a re-list.
            Ok(Some(Err(_))) => continue,
            Ok(None) => panic!("watcher ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn name(o: &DynamicObject) -> &str {
    o.metadata.name.as_deref().unwrap_or("")
}

/// Reads events until `pred` matches one, recording whether a re-list (`Init`) happened.
async fn until<S>(
    stream: &mut S,
    what: &str,
    pred: impl Fn(&watcher::Event<DynamicObject>) -> bool,
) -> bool
where
    S: Stream<Item = Result<watcher::Event<DynamicObject>, watcher::Error>> + Unpin,
{
    let mut relisted = false;
    loop {
        let e = next_event(stream, what).await;
        relisted |= matches!(e, watcher::Event::Init);
        if pred(&e) {
            return relisted;
        }
    }
}

#[tokio::test]
async fn watcher_sees_added_modified_deleted_and_recovers_from_drops_and_410() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    api.create(&PostParams::default(), &continuum("before", "eu-1"))
        .await
        .expect("create");
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    until(
        &mut stream,
        "initial list",
        |e| matches!(e, watcher::Event::InitApply(o) if name(o) == "before"),
    )
    .await;
    until(&mut stream, "init done", |e| {
        matches!(e, watcher::Event::InitDone)
    })
    .await;

    api.create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create a");
    until(
        &mut stream,
        "ADDED a",
        |e| matches!(e, watcher::Event::Apply(o) if name(o) == "a"),
    )
    .await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ttl": 31}})),
    )
    .await
    .expect("modify");
    until(
        &mut stream,
        "MODIFIED a",
        |e| matches!(e, watcher::Event::Apply(o) if name(o) == "a" && o.data["spec"]["ttl"] == 31),
    )
    .await;
    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    until(
        &mut stream,
        "DELETED a",
        |e| matches!(e, watcher::Event::Delete(o) if name(o) == "a"),
    )
    .await;

    // A dropped watch is resumed from the last resourceVersion: no re-list, no missed event.
    kube.drop_watches();
    api.create(&PostParams::default(), &continuum("b", "eu-1"))
        .await
        .expect("create b");
    let relisted = until(
        &mut stream,
        "b after a dropped watch",
        |e| matches!(e, watcher::Event::Apply(o) if name(o) == "b"),
    )
    .await;
    assert!(!relisted, "a dropped watch resumes without a re-list");

    // An expired history answers 410 to the re-watch: the watcher re-lists and sees c.
    kube.expire_watch_history();
    api.create(&PostParams::default(), &continuum("c", "eu-1"))
        .await
        .expect("create c");
    let relisted = until(
        &mut stream,
        "c after 410",
        |e| matches!(e, watcher::Event::InitApply(o) | watcher::Event::Apply(o) if name(o) == "c"),
    )
    .await;
    assert!(relisted, "a 410 makes the watcher re-list");
}

#[tokio::test]
async fn a_raw_watch_from_an_expired_resource_version_gets_an_error_event_410() {
    let kube = KubeApi::start_with_history(&[Crd::bundled("continuum.yaml")], 2)
        .await
        .expect("start");
    let client = kube.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, NS);
    for i in 0..4 {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": format!("cm{i}")}})).expect("cm");
        cms.create(&PostParams::default(), &cm)
            .await
            .expect("create");
    }
    let params = kube::api::WatchParams::default().timeout(5);
    let mut events = cms.watch(&params, "1").await.expect("watch").boxed();
    match events.next().await {
        Some(Err(kube::Error::Api(s))) => assert_eq!(s.code, 410),
        Some(Ok(kube::api::WatchEvent::Error(s))) => assert_eq!(s.code, 410),
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    // From the current resourceVersion the watch works and times out by itself.
    let rv = kube.resource_version().to_string();
    let mut events = cms
        .watch(&kube::api::WatchParams::default().timeout(1), &rv)
        .await
        .expect("watch")
        .boxed();
    loop {
        let next = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("timeoutSeconds ends the stream");
        match next {
            None => break,
            Some(Ok(kube::api::WatchEvent::Bookmark(b))) => {
                assert_eq!(b.metadata.resource_version, rv);
            }
            other => panic!("nothing but a bookmark was expected, got {other:?}"),
        }
    }
}

#[derive(Default)]
struct Seen {
    reconciles: Mutex<HashMap<String, usize>>,
    cleanups: Mutex<Vec<String>>,
}

impl Seen {
    fn count(&self, name: &str) -> usize {
        self.reconciles
            .lock()
            .expect("lock")
            .get(name)
            .copied()
            .unwrap_or(0)
    }
}

#[tokio::test]
async fn a_controller_reconciles_each_object_once_per_change() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let seen = Arc::new(Seen::default());
    let controller = Controller::new_with(api.clone(), watcher::Config::default(), continuum_ar())
        .run(
            |obj: Arc<DynamicObject>, seen: Arc<Seen>| async move {
                *seen
                    .reconciles
                    .lock()
                    .expect("lock")
                    .entry(name(&obj).to_owned())
                    .or_default() += 1;
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_, _, _| Action::requeue(Duration::from_secs(60)),
            seen.clone(),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    api.create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create a");
    assert_eventually!(seen.count("a") == 1);
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ttl": 40}})),
    )
    .await
    .expect("change a");
    assert_eventually!(seen.count("a") == 2);
    // A no-op write produces no event; the next reconcile of `b` proves the queue drained.
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ttl": 40}})),
    )
    .await
    .expect("no-op a");
    api.create(&PostParams::default(), &continuum("b", "eu-1"))
        .await
        .expect("create b");
    assert_eventually!(seen.count("b") == 1);
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"ttl": 41}})),
    )
    .await
    .expect("change a again");
    assert_eventually!(seen.count("a") >= 3);
    assert_eq!(seen.count("a"), 3, "one reconcile per change of a");
    assert_eq!(seen.count("b"), 1);
    task.abort();
}

#[tokio::test]
async fn a_controller_with_the_finalizer_helper_applies_status_and_cleans_up() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let seen = Arc::new(Seen::default());
    let reconcile_api = api.clone();
    let controller = Controller::new_with(api.clone(), watcher::Config::default(), continuum_ar())
        .run(
            move |obj: Arc<DynamicObject>, seen: Arc<Seen>| {
                let api = reconcile_api.clone();
                async move {
                    *seen
                        .reconciles
                        .lock()
                        .expect("lock")
                        .entry(name(&obj).to_owned())
                        .or_default() += 1;
                    finalizer(&api, "continuums.dr.openova.io", obj, |event| async {
                        match event {
                            Finalizer::Apply(o) => {
                                let status = json!({
                                    "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
                                    "metadata": {"name": name(&o)},
                                    "status": {"observedGeneration": o.metadata.generation},
                                });
                                api.patch_status(
                                    name(&o),
                                    &PatchParams::apply("continuum-controller").force(),
                                    &Patch::Apply(&status),
                                )
                                .await?;
                            }
                            Finalizer::Cleanup(o) => {
                                seen.cleanups
                                    .lock()
                                    .expect("lock")
                                    .push(name(&o).to_owned());
                            }
                        }
                        Ok::<_, kube::Error>(Action::await_change())
                    })
                    .await
                    .map_err(|e| std::io::Error::other(e.to_string()))
                }
            },
            |_, _, _| Action::requeue(Duration::from_millis(200)),
            seen.clone(),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    api.create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");
    let observed = |api: Api<DynamicObject>| async move {
        api.get("a")
            .await
            .ok()
            .map(|o| (o.data["status"]["observedGeneration"].clone(), o))
    };
    assert_eventually!(
        observed(api.clone())
            .await
            .is_some_and(|(g, _)| g == json!(1))
    );
    let (_, o) = observed(api.clone()).await.expect("object");
    assert_eq!(
        o.metadata.finalizers.as_deref(),
        Some(&["continuums.dr.openova.io".to_owned()][..])
    );
    // Settled: the status write was a change once, then a no-op; the controller is idle.
    let settled = seen.count("a");
    assert!(settled <= 4, "no reconcile loop ({settled} reconciles)");

    api.delete("a", &DeleteParams::default())
        .await
        .expect("delete");
    assert_eventually!(api.get_opt("a").await.expect("get_opt").is_none());
    assert_eq!(*seen.cleanups.lock().expect("lock"), vec!["a".to_owned()]);
    task.abort();
}

#[tokio::test]
async fn of_two_lease_replaces_from_the_same_version_exactly_one_wins() {
    let kube = start().await;
    let client = kube.client().expect("client");
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "continuum-leader"},
        "spec": {"holderIdentity": "nobody", "leaseDurationSeconds": 15},
    }))
    .expect("lease");
    leases
        .create(&PostParams::default(), &lease)
        .await
        .expect("create");
    let err = leases
        .create(&PostParams::default(), &lease)
        .await
        .expect_err("second create");
    assert_eq!(api_code(&err), 409);

    let current = leases.get("continuum-leader").await.expect("get");
    let claim = |who: &str| {
        let mut l = current.clone();
        if let Some(spec) = l.spec.as_mut() {
            spec.holder_identity = Some(who.to_owned());
        }
        l
    };
    let (a, b) = (claim("replica-a"), claim("replica-b"));
    let other: Api<Lease> = Api::namespaced(kube.client().expect("client"), NS);
    let pp = PostParams::default();
    let (ra, rb) = tokio::join!(
        leases.replace("continuum-leader", &pp, &a),
        other.replace("continuum-leader", &pp, &b),
    );
    let winners: Vec<&str> = [("replica-a", &ra), ("replica-b", &rb)]
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(w, _)| *w)
        .collect();
    assert_eq!(winners.len(), 1, "exactly one replace wins: {ra:?} {rb:?}");
    for r in [&ra, &rb] {
        if let Err(e) = r {
            assert_eq!(api_code(e), 409);
        }
    }
    let holder = leases
        .get("continuum-leader")
        .await
        .expect("get")
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some(winners[0]));
}

#[tokio::test]
async fn injected_faults_fail_the_next_writes_with_a_kubernetes_status() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    api.create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");
    kube.fail_next_writes("continuums/status", 1, 500);
    kube.fail_next_writes("continuums", 1, 409);
    // The main-resource write only meets the plain fault.
    let err = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttl": 1}})),
        )
        .await
        .expect_err("injected 409");
    assert_eq!(api_code(&err), 409);
    if let kube::Error::Api(s) = &err {
        assert_eq!(s.reason, "Conflict");
    }
    let err = api
        .patch_status(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"x": 1}})),
        )
        .await
        .expect_err("injected 500");
    assert_eq!(api_code(&err), 500);
    api.patch_status(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"x": 1}})),
    )
    .await
    .expect("faults are used up");
    let v: Value = kube.object("continuums", NS, "a").expect("stored");
    assert!(
        v["spec"].get("ttl").is_none(),
        "a failed write changes nothing"
    );
    assert_eq!(v["status"]["x"], 1);

    // kube's client retries 429/503/504 by itself (Config::default_retry): two 503s are absorbed.
    kube.fail_next_writes("continuums", 2, 503);
    let ok = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"ttl": 2}})),
        )
        .await
        .expect("retried past two 503s");
    assert_eq!(ok.data["spec"]["ttl"], 2);
}

#[tokio::test]
async fn kube_event_recorder_creates_then_patches_an_events_k8s_io_series() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let kube = start().await;
    let client = kube.client().expect("client");
    let api = continuums(&client);
    let obj = api
        .create(&PostParams::default(), &continuum("a", "eu-1"))
        .await
        .expect("create");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "continuum-controller".into(),
            instance: Some("replica-a".into()),
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "LeaseAcquired".into(),
        note: Some("epoch 1".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    let reference = obj.object_ref(&continuum_ar());
    recorder
        .publish(&event, &reference)
        .await
        .expect("first publish");
    recorder
        .publish(&event, &reference)
        .await
        .expect("second publish");
    let events: Api<K8sEvent> = Api::namespaced(client, NS);
    let list = events
        .list(&ListParams::default())
        .await
        .expect("list events");
    assert_eq!(list.items.len(), 1, "one event with a series");
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("LeaseAcquired"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(
        e.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("a")
    );
}

#[tokio::test]
async fn a_cluster_scoped_bundled_crd_is_served_without_a_namespace() {
    let kube = KubeApi::start(&Crd::all_bundled()).await.expect("start");
    let client = kube.client().expect("client");
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("dr.openova.io", "v1", "PDM"),
        "pdms",
    );
    let pdms: Api<DynamicObject> = Api::all_with(client, &ar);
    let applied = json!({
        "apiVersion": "dr.openova.io/v1", "kind": "PDM",
        "metadata": {"name": "pdm-1"},
        "spec": {"endpoint": "https://pdm-1.openova.io:8081", "region": "hz-fsn-rtz-prod", "zone": "openova.io"},
    });
    let made = pdms
        .patch(
            "pdm-1",
            &PatchParams::apply("test"),
            &Patch::Apply(&applied),
        )
        .await
        .expect("apply a cluster-scoped object");
    assert!(made.metadata.namespace.is_none());
    assert!(kube.object("pdms", "", "pdm-1").is_some());
    let status = json!({
        "apiVersion": "dr.openova.io/v1", "kind": "PDM",
        "metadata": {"name": "pdm-1"}, "status": {"healthy": true},
    });
    let with_status = pdms
        .patch_status("pdm-1", &PatchParams::apply("test"), &Patch::Apply(&status))
        .await
        .expect("status apply");
    assert_eq!(with_status.data["status"]["healthy"], true);
    assert_eq!(
        pdms.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );
}

#[tokio::test]
async fn the_switchable_schema_check_rejects_wrong_types_and_missing_required_fields() {
    let kube = start().await;
    let api = continuums(&kube.client().expect("client"));
    let mut wrong = continuum("a", "eu-1");
    wrong.data["spec"]["autoFailover"] = json!("yes");
    if let Some(spec) = wrong.data["spec"].as_object_mut() {
        spec.remove("applicationRef");
    }
    let err = api
        .create(&PostParams::default(), &wrong)
        .await
        .expect_err("invalid");
    assert_eq!(api_code(&err), 422);
    if let kube::Error::Api(s) = &err {
        assert_eq!(s.reason, "Invalid");
        assert!(s.message.contains(".spec.autoFailover"), "{}", s.message);
        assert!(
            s.message.contains(".spec.applicationRef: Required value"),
            "{}",
            s.message
        );
    }
    // Updates are checked too, and nothing is stored on failure.
    api.create(&PostParams::default(), &continuum("b", "eu-1"))
        .await
        .expect("valid create");
    let err = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"hotStandbyRegions": "eu-2"}})),
        )
        .await
        .expect_err("invalid patch");
    assert_eq!(api_code(&err), 422);
    assert_eq!(
        api.get("b").await.expect("get").data["spec"]["hotStandbyRegions"],
        json!(["eu-2"])
    );

    kube.set_schema_validation(false);
    api.create(&PostParams::default(), &wrong)
        .await
        .expect("accepted with the check off");
}
