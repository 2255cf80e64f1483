#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The generated Continuum CRD: deterministic, committed without drift, accepts upstream's valid
//! samples and rejects its invalid ones (checked with a JSON-schema validator against the
//! GENERATED `openAPIV3Schema`), stays compatible with upstream's CRD, and converts to the
//! decision core's spec.
//!
//! The samples in `tests/crd-samples/` are byte-for-byte copies of the workspace's shared
//! fixtures (`fixtures/samples/`), so this test reads nothing outside the crate.

use std::path::{Path, PathBuf};
use std::process::Command;

use continuum_controller::crd::{
    self, Continuum, ContinuumStatus, CrdError, LastSwitchover, LuaRecordSet, LuaRecordStatus,
    Phase, StatusCondition,
};
use continuum_controller::decide::{self, Durability, Lsn, OpKind, Operation, Timing};
use kube::CustomResourceExt;
use serde_json::{Value, json};

// === helpers ===

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn committed_crd_path() -> PathBuf {
    crate_dir().join("../charts/continuum-controller/crds/continuums.dr.openova.io.yaml")
}

/// Every document of a multi-document YAML file, as JSON.
fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(crate_dir().join("tests/crd-samples").join(file)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(d).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .collect()
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("?")
}

/// A Kubernetes structural schema as a plain JSON Schema:
/// - `nullable: true` becomes `type: [T, "null"]` (and `null` joins an `enum`);
/// - below the root, an object with `properties` and neither
///   `x-kubernetes-preserve-unknown-fields` nor `additionalProperties` gets
///   `additionalProperties: false`: kubectl's strict field validation refuses unknown fields
///   (the apiserver would otherwise silently prune them, losing what the controller reads);
/// - `x-kubernetes-*` keys are left in place (unknown keywords are ignored by the validator).
///
/// The root keeps unknown fields allowed (`apiVersion`, `kind`, `metadata`).
fn to_json_schema(v: &Value, root: bool) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, val) in m {
                let converted = match k.as_str() {
                    "properties" => Value::Object(
                        val.as_object()
                            .unwrap()
                            .iter()
                            .map(|(p, s)| (p.clone(), to_json_schema(s, false)))
                            .collect(),
                    ),
                    "items" | "additionalProperties" if val.is_object() => {
                        to_json_schema(val, false)
                    }
                    "allOf" | "anyOf" | "oneOf" => Value::Array(
                        val.as_array()
                            .unwrap()
                            .iter()
                            .map(|s| to_json_schema(s, false))
                            .collect(),
                    ),
                    _ => val.clone(),
                };
                out.insert(k.clone(), converted);
            }
            if out.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = out.get("type").cloned() {
                    out.insert("type".into(), json!([t, "null"]));
                }
                if let Some(Value::Array(e)) = out.get_mut("enum") {
                    e.push(Value::Null);
                }
            }
            if !root
                && out.contains_key("properties")
                && !out.contains_key("additionalProperties")
                && out.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

fn openapi_schema_of(crd: &Value) -> Value {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn generated_schema() -> Value {
    openapi_schema_of(&serde_json::to_value(Continuum::crd()).unwrap())
}

fn upstream_schema() -> Value {
    let text = std::fs::read_to_string(crate_dir().join("../testkit/crds/continuum.yaml")).unwrap();
    let crd: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    openapi_schema_of(&serde_json::to_value(crd).unwrap())
}

struct Validator(jsonschema::Validator);

impl Validator {
    fn of(schema: &Value) -> Validator {
        Validator(
            jsonschema::options()
                .should_validate_formats(true)
                .build(&to_json_schema(schema, true))
                .unwrap(),
        )
    }

    fn generated() -> Validator {
        Validator::of(&generated_schema())
    }

    fn upstream() -> Validator {
        Validator::of(&upstream_schema())
    }

    /// Schema errors as `path: message` lines (empty = accepted).
    fn errors(&self, obj: &Value) -> Vec<String> {
        self.0
            .iter_errors(obj)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect()
    }
}

/// The first valid sample (`marketing-site-dr`), edited by `f`.
fn sample_with(f: impl FnOnce(&mut Value)) -> Value {
    let mut v = docs("continuum-sample-valid.yaml").remove(0);
    f(&mut v);
    v
}

fn typed(obj: &Value) -> Result<Continuum, serde_json::Error> {
    serde_json::from_value(obj.clone())
}

/// True when every leaf of `a` appears in `b` at the same path with the same value.
fn leaves_survive(a: &Value, b: &Value, path: &str, lost: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, va) in ma {
                match mb.get(k) {
                    Some(vb) => leaves_survive(va, vb, &format!("{path}.{k}"), lost),
                    None => lost.push(format!("{path}.{k}")),
                }
            }
        }
        (Value::Array(xa), Value::Array(xb)) if xa.len() == xb.len() => {
            for (i, (va, vb)) in xa.iter().zip(xb).enumerate() {
                leaves_survive(va, vb, &format!("{path}[{i}]"), lost);
            }
        }
        _ if a == b => {}
        _ => lost.push(format!("{path}: {a} became {b}")),
    }
}

// === generation and drift ===

#[test]
fn crd_generation_is_deterministic() {
    let a = crd::crd_yaml().unwrap();
    let b = crd::crd_yaml().unwrap();
    assert_eq!(a, b);
    let crd = Continuum::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some(crd::CRD_NAME));
    assert_eq!(crd.spec.group, "dr.openova.io");
    assert_eq!(crd.spec.names.kind, "Continuum");
    assert_eq!(crd.spec.names.plural, "continuums");
    assert_eq!(crd.spec.names.short_names, Some(vec!["dr".to_string()]));
    assert_eq!(crd.spec.scope, "Namespaced");
    let v = &crd.spec.versions[0];
    assert_eq!((v.name.as_str(), v.served, v.storage), ("v1", true, true));
    assert!(v.subresources.as_ref().unwrap().status.is_some());
}

#[test]
fn committed_crd_in_the_chart_is_up_to_date() {
    let committed = std::fs::read_to_string(committed_crd_path()).unwrap();
    assert!(
        committed == crd::crd_yaml().unwrap(),
        "charts/continuum-controller/crds/continuums.dr.openova.io.yaml drifted from the Rust \
         types: run `cargo run -p continuum-controller --bin crdgen -- --out \
         charts/continuum-controller/crds/continuums.dr.openova.io.yaml`"
    );
}

#[test]
fn crdgen_check_passes_on_the_committed_file_and_fails_on_drift() {
    let bin = env!("CARGO_BIN_EXE_crdgen");
    let ok = Command::new(bin)
        .arg("--check")
        .arg(committed_crd_path())
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let drifted = dir.path().join("crd.yaml");
    let text = crd::crd_yaml()
        .unwrap()
        .replace("maxItems: 4", "maxItems: 5");
    std::fs::write(&drifted, text).unwrap();
    let bad = Command::new(bin)
        .arg("--check")
        .arg(&drifted)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let msg = String::from_utf8_lossy(&bad.stderr);
    assert!(
        msg.contains("out of date") && msg.contains("--out"),
        "{msg}"
    );

    let written = dir.path().join("nested/out.yaml");
    let out = Command::new(bin)
        .arg("--out")
        .arg(&written)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&written).unwrap(),
        crd::crd_yaml().unwrap()
    );

    let printed = Command::new(bin).output().unwrap();
    assert_eq!(
        String::from_utf8(printed.stdout).unwrap(),
        crd::crd_yaml().unwrap()
    );
}

// === samples ===

#[test]
fn every_valid_upstream_sample_passes_the_generated_schema_deserializes_and_validates() {
    let schema = Validator::generated();
    let mut n = 0;
    for file in ["continuum-sample-valid.yaml", "cont-omantel.yaml"] {
        for obj in docs(file) {
            let name = name_of(&obj).to_owned();
            let errs = schema.errors(&obj);
            assert!(errs.is_empty(), "{file} {name}: {errs:#?}");
            let cr = typed(&obj).unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            cr.spec
                .validate()
                .unwrap_or_else(|e| panic!("{file} {name}: {e}"));
            // Typed, not pruned: every field of the sample survives the round trip.
            let back = serde_json::to_value(&cr).unwrap();
            let mut lost = Vec::new();
            leaves_survive(&obj, &back, "", &mut lost);
            assert!(lost.is_empty(), "{file} {name} lost fields: {lost:?}");
            n += 1;
        }
    }
    assert_eq!(
        n, 4,
        "3 objects in continuum-sample-valid.yaml + cont-omantel"
    );
}

/// Which check rejects each invalid sample:
/// - `bad-dr`: the SCHEMA (hotStandbyRegions minItems, leaseClient.kind enum, luaRecord.selector
///   enum, healthCheck.url pattern, rto and rpo patterns); typed deserialization fails too
///   (`etcd` and `round-robin` are not enum variants), so `load_file` refuses it as a parse
///   error. Its `primaryRegion: fsn` is ACCEPTED by design (DNS-label region names, see
///   `crd` module docs) — every other seeded error still rejects the object.
/// - `bad-dr-2`: the SCHEMA (resolvers minItems 3 and IPv4 pattern, ttlSeconds minimum 5) and
///   `validate()` (the same three, plus the CEL twin renewSeconds·2 < ttlSeconds with the
///   default renew 10 against ttl 1). It deserializes.
#[test]
fn every_invalid_upstream_sample_is_rejected_by_schema_and_by_rust() {
    let schema = Validator::generated();
    let objs = docs("continuum-sample-invalid.yaml");
    assert_eq!(objs.len(), 2);

    let bad = &objs[0];
    assert_eq!(name_of(bad), "bad-dr");
    let errs = schema.errors(bad).join("\n");
    for path in [
        "/spec/hotStandbyRegions",
        "/spec/leaseClient/kind",
        "/spec/luaRecord/selector",
        "/spec/luaRecord/healthCheck/url",
        "/spec/rto",
        "/spec/rpo",
    ] {
        assert!(
            errs.contains(&format!("{path}:")),
            "no schema error at {path}:\n{errs}"
        );
    }
    assert!(!errs.contains("/spec/primaryRegion:"), "{errs}");
    assert!(
        typed(bad).is_err(),
        "etcd / round-robin are not enum variants"
    );

    let bad2 = &objs[1];
    assert_eq!(name_of(bad2), "bad-dr-2");
    let errs = schema.errors(bad2).join("\n");
    for path in [
        "/spec/leaseClient/config/resolvers:",
        "/spec/leaseClient/config/resolvers/1:",
        "/spec/leaseClient/config/ttlSeconds:",
    ] {
        assert!(errs.contains(path), "no schema error at {path}\n{errs}");
    }
    let cr = typed(bad2).unwrap();
    let fields: Vec<String> = cr.spec.violations().into_iter().map(|v| v.field).collect();
    for f in [
        "leaseClient.config.resolvers",
        "leaseClient.config.resolvers[1]",
        "leaseClient.config.ttlSeconds",
        "leaseClient.config.renewSeconds",
    ] {
        assert!(
            fields.iter().any(|x| x == f),
            "validate() misses {f}: {fields:?}"
        );
    }
}

/// Each error seeded in `bad-dr` alone, on an otherwise valid object: the schema and the Rust
/// side (deserialization or `validate()`) both reject it.
#[test]
fn each_seeded_error_alone_is_rejected_by_schema_and_rust() {
    let schema = Validator::generated();
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit); 9] = [
        ("hotStandbyRegions empty", |v| {
            v["spec"]["hotStandbyRegions"] = json!([])
        }),
        ("leaseClient.kind etcd", |v| {
            v["spec"]["leaseClient"]["kind"] = json!("etcd")
        }),
        ("selector round-robin", |v| {
            v["spec"]["luaRecord"]["selector"] = json!("round-robin")
        }),
        ("url without scheme", |v| {
            v["spec"]["luaRecord"]["healthCheck"]["url"] = json!("marketing.acme.com/health")
        }),
        ("rto 1minute", |v| v["spec"]["rto"] = json!("1minute")),
        ("rpo fast", |v| v["spec"]["rpo"] = json!("fast")),
        ("ttlSeconds 1", |v| {
            v["spec"]["leaseClient"]["config"]["ttlSeconds"] = json!(1)
        }),
        ("resolvers 2", |v| {
            v["spec"]["leaseClient"]["config"]["resolvers"] = json!(["8.8.8.8", "1.1.1.1"])
        }),
        ("resolver not an ip", |v| {
            v["spec"]["leaseClient"]["config"]["resolvers"] =
                json!(["8.8.8.8", "not-an-ip", "9.9.9.9"])
        }),
    ];
    for (what, edit) in cases {
        let obj = sample_with(edit);
        assert!(!schema.errors(&obj).is_empty(), "schema accepts {what}");
        let rust_rejects = match typed(&obj) {
            Err(_) => true,
            Ok(cr) => cr.spec.validate().is_err(),
        };
        assert!(rust_rejects, "Rust accepts {what}");
    }
}

#[test]
fn unknown_fields_are_refused_except_in_lease_client_config() {
    let schema = Validator::generated();
    let typo = sample_with(|v| v["spec"]["autoFailOver"] = json!(true));
    assert!(
        !schema.errors(&typo).is_empty(),
        "a misspelt spec field must not pass silently"
    );
    let extra = sample_with(|v| v["spec"]["leaseClient"]["config"]["apiToken"] = json!("t"));
    assert!(
        schema.errors(&extra).is_empty(),
        "{:?}",
        schema.errors(&extra)
    );
}

// === upstream compatibility ===

/// Every property path of upstream's schema, with its type and enum.
fn paths(schema: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, s) in props {
            let p = format!("{prefix}.{k}");
            out.push((p.clone(), s.clone()));
            paths(s, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        paths(items, &format!("{prefix}[]"), out);
    }
    if let Some(ap) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        paths(ap, &format!("{prefix}{{}}"), out);
    }
}

fn lookup<'a>(schema: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = schema;
    let mut rest = path.trim_start_matches('.');
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("[]") {
            cur = cur.get("items")?;
            rest = r.trim_start_matches('.');
            continue;
        }
        if let Some(r) = rest.strip_prefix("{}") {
            cur = cur.get("additionalProperties")?;
            rest = r.trim_start_matches('.');
            continue;
        }
        let end = rest.find(['.', '[', '{']).unwrap_or(rest.len());
        cur = cur.get("properties")?.get(&rest[..end])?;
        rest = rest[end..].trim_start_matches('.');
    }
    Some(cur)
}

#[test]
fn every_upstream_field_keeps_its_name_type_and_enum_values() {
    let ours = generated_schema();
    let mut up = Vec::new();
    paths(&upstream_schema(), "", &mut up);
    assert!(up.len() > 60, "walked {} upstream paths", up.len());
    for (path, s) in up {
        let mine = lookup(&ours, &path).unwrap_or_else(|| panic!("upstream field {path} missing"));
        assert_eq!(mine.get("type"), s.get("type"), "type of {path}");
        if let Some(Value::Array(vals)) = s.get("enum") {
            let my_vals = mine
                .get("enum")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for v in vals {
                assert!(
                    my_vals.contains(v),
                    "{path}: upstream enum value {v} missing"
                );
            }
        }
        if let Some(d) = s.get("default") {
            assert_eq!(mine.get("default"), Some(d), "default of {path}");
        }
    }
}

#[test]
fn objects_upstream_accepts_are_accepted_and_only_documented_relaxations_differ() {
    let ours = Validator::generated();
    let upstream = Validator::upstream();
    for file in ["continuum-sample-valid.yaml", "cont-omantel.yaml"] {
        for obj in docs(file) {
            assert!(
                upstream.errors(&obj).is_empty(),
                "upstream rejects {}",
                name_of(&obj)
            );
            assert!(ours.errors(&obj).is_empty());
        }
    }
    // Upstream's four-part region names pass our DNS-label pattern.
    for r in ["hz-fsn-rtz-prod", "a1-b-c-d", "x-0-0-0-0"] {
        let obj = sample_with(|v| v["spec"]["primaryRegion"] = json!(r));
        assert!(
            upstream.errors(&obj).is_empty() && ours.errors(&obj).is_empty(),
            "{r}"
        );
    }
    // Documented relaxations: short region names, k8s-lease, stateless.
    let relaxed = [
        sample_with(|v| v["spec"]["primaryRegion"] = json!("fsn")),
        sample_with(|v| v["spec"]["leaseClient"]["kind"] = json!("k8s-lease")),
        sample_with(|v| v["spec"]["switchover"] = json!({"mechanism": "stateless"})),
    ];
    for obj in &relaxed {
        assert!(!upstream.errors(obj).is_empty());
        assert!(ours.errors(obj).is_empty(), "{:?}", ours.errors(obj));
    }
}

// === status ===

#[test]
fn a_full_status_passes_the_schema_and_round_trips() {
    let mut cr = typed(&docs("cont-omantel.yaml")[0]).unwrap();
    cr.status = Some(ContinuumStatus {
        phase: Some(Phase::SwitchingOver),
        current_primary: Some("hz-fsn-rtz-prod".into()),
        primary_region: Some("hz-fsn-rtz-prod".into()),
        epoch: Some(7),
        lease_holder: Some("hz-fsn-rtz-prod".into()),
        lease_expires_at: Some("2026-11-23T12:00:00Z".into()),
        replication_lag: [("hz-hel-rtz-prod".to_string(), "2s".to_string())].into(),
        max_replication_lag: Some("2s".into()),
        replication_lag_seconds: Some(2),
        replication_lag_bytes: Some(4096),
        last_switchover: Some(LastSwitchover {
            at: Some("2026-11-23T11:00:00Z".into()),
            from: Some("hz-hel-rtz-prod".into()),
            to: Some("hz-fsn-rtz-prod".into()),
            result: Some("Success".into()),
            epoch: Some(6),
            ..Default::default()
        }),
        conditions: vec![StatusCondition {
            type_: crd::conditions::LEASE_HELD.into(),
            status: crd::ConditionStatus::True,
            reason: Some("Renewed".into()),
            message: None,
            last_transition_time: Some("2026-11-23T11:00:00Z".into()),
            observed_generation: Some(3),
        }],
        last_lua_record: Some(LuaRecordSet {
            records: vec![LuaRecordStatus {
                hostname: "qa-wp.openova.io".into(),
                body: "A \"ifurlup(...)\"".into(),
                ttl: 30,
                primary_region: Some("hz-fsn-rtz-prod".into()),
                epoch: Some(7),
            }],
        }),
        operation: Some(Operation {
            id: "sw-1".into(),
            kind: OpKind::SelfFence,
            step: "drain".into(),
            epoch: 7,
            started_at: contract::Millis(1_763_900_000_000),
            lsn: Some(Lsn(0x1_0000_0A00)),
            target: Some("hz-hel-rtz-prod".into()),
        }),
        completed_requests: vec!["sw-0".into()],
        ..Default::default()
    });
    let v = serde_json::to_value(&cr).unwrap();
    assert_eq!(v["status"]["operation"]["kind"], "self-fence");
    let errs = Validator::generated().errors(&v);
    assert!(errs.is_empty(), "{errs:#?}");
    let back: Continuum = serde_json::from_value(v).unwrap();
    assert_eq!(back.status, cr.status);
}

// === conversion to the decision core ===

#[test]
fn the_tier1_sample_converts_to_the_decision_cores_spec() {
    let cr = typed(&docs("continuum-sample-valid.yaml")[0]).unwrap();
    let spec = cr.to_decide_spec().unwrap();
    assert_eq!(spec.name, "acme/marketing-site-dr");
    assert_eq!(spec.application, "acme/marketing-site");
    assert_eq!(spec.regions, vec!["hz-fsn-rtz-prod", "hz-hel-rtz-prod"]);
    assert_eq!(spec.primary, "hz-fsn-rtz-prod");
    assert!(spec.auto_failover);
    assert_eq!(
        spec.timing,
        Timing::standard(),
        "ttl 30 / renew 10 is the standard timing"
    );
    assert_eq!(spec.rpo.max_lag_seconds, 5);
    assert_eq!(spec.rpo.max_lag_bytes, 16 << 20);
    assert_eq!(spec.durability, Durability::Default);
    assert_eq!((spec.switchover, spec.failback), (None, None));
}

#[test]
fn cont_omantel_converts_with_a_valid_timing() {
    let cr = typed(&docs("cont-omantel.yaml")[0]).unwrap();
    let spec = cr.to_decide_spec().unwrap();
    spec.timing.validate().unwrap();
    assert_eq!(spec.rpo.max_lag_seconds, 30);
    assert_eq!(spec.name, "qa-omantel/cont-omantel");
}

#[test]
fn more_than_two_regions_is_a_clear_error() {
    let cr = typed(&docs("continuum-sample-valid.yaml")[1]).unwrap();
    cr.spec.validate().unwrap();
    let err = cr.to_decide_spec().unwrap_err();
    assert!(matches!(&err, CrdError::RegionCount { regions } if regions.len() == 3));
    let msg = err.to_string();
    assert!(
        msg.contains("exactly two regions") && msg.contains("hotStandbyRegions"),
        "{msg}"
    );
}

#[test]
fn bad_durations_are_typed_errors_naming_the_field() {
    for (field, edit) in [("rto", "rto"), ("rpo", "rpo")] {
        let mut cr = typed(&docs("continuum-sample-valid.yaml")[0]).unwrap();
        let bad = Some("1m30s".to_string());
        if edit == "rto" {
            cr.spec.rto = bad;
        } else {
            cr.spec.rpo = bad;
        }
        let err = cr.to_decide_spec().unwrap_err();
        assert!(
            matches!(err, CrdError::Duration { field: f, .. } if f == field),
            "{err}"
        );
        assert!(
            err.to_string().starts_with(&format!("spec.{field}:")),
            "{err}"
        );
    }
}

#[test]
fn requests_durability_and_strict_mode_reach_the_decision_core() {
    let obj = sample_with(|v| {
        v["spec"]["durability"] = json!("strict");
        v["spec"]["switchover"] = json!({
            "requested": true, "requestedAt": "2026-11-23T10:00:00Z", "requestedBy": "ops@example"
        });
        v["spec"]["failback"] = json!({"requested": true, "id": "fb-1", "approved": true});
        v["spec"]["leaseClient"]["config"]["marginSeconds"] = json!(3);
        v["spec"]["holdDownSeconds"] = json!(9);
    });
    assert!(Validator::generated().errors(&obj).is_empty());
    let spec: decide::Spec = typed(&obj).unwrap().to_decide_spec().unwrap();
    assert_eq!(spec.durability, Durability::Strict);
    let sw = spec.switchover.unwrap();
    assert_eq!(
        (sw.id.as_str(), sw.target.as_str()),
        ("2026-11-23T10:00:00Z", "hz-hel-rtz-prod")
    );
    let fb = spec.failback.unwrap();
    assert_eq!((fb.id.as_str(), fb.approved), ("fb-1", true));
    assert_eq!(
        (spec.timing.margin_ms, spec.timing.hold_down_ms),
        (3000, 9000)
    );
}

// === load_file (standalone mode) ===

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn load_file_reads_validates_and_names_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let omantel =
        std::fs::read_to_string(crate_dir().join("tests/crd-samples/cont-omantel.yaml")).unwrap();
    let cr = crd::load_file(write(dir.path(), "ok.yaml", &omantel)).unwrap();
    assert_eq!(
        cr.key(),
        ("qa-omantel".to_string(), "cont-omantel".to_string())
    );

    let no_ns = omantel.replace("  namespace: qa-omantel\n  labels", "  labels");
    let cr = crd::load_file(write(dir.path(), "nons.yaml", &no_ns)).unwrap();
    assert_eq!(cr.metadata.namespace.as_deref(), Some("default"));

    let wrong = omantel.replace("kind: Continuum", "kind: CNPGPair");
    let e = crd::load_file(write(dir.path(), "kind.yaml", &wrong)).unwrap_err();
    assert!(matches!(e, CrdError::WrongKind { .. }), "{e}");

    let invalid = omantel.replace("renewSeconds: 10", "renewSeconds: 15");
    let e = crd::load_file(write(dir.path(), "renew.yaml", &invalid)).unwrap_err();
    assert!(
        e.to_string()
            .contains("spec.leaseClient.config.renewSeconds"),
        "{e}"
    );

    let multi = std::fs::read_to_string(
        crate_dir().join("tests/crd-samples/continuum-sample-invalid.yaml"),
    )
    .unwrap();
    let e = crd::load_file(write(dir.path(), "multi.yaml", &multi)).unwrap_err();
    assert!(matches!(e, CrdError::Parse { .. }), "{e}");

    let e = crd::load_file(dir.path().join("absent.yaml")).unwrap_err();
    assert!(matches!(e, CrdError::Read { .. }), "{e}");
}

// === CEL rules (evaluated offline with kube's CEL engine) ===

#[test]
fn cel_rules_compile_and_stay_inside_the_apiserver_cost_budget() {
    let schema = generated_schema();
    let compiled = kube_cel::compile_schema(&schema);
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
    let spec = &schema["properties"]["spec"];
    let config = &spec["properties"]["leaseClient"]["properties"]["config"];
    let mut n = 0;
    for node in [spec, config] {
        let c = kube_cel::compile_schema(node);
        for rule in node["x-kubernetes-validations"].as_array().unwrap() {
            let rule = rule["rule"].as_str().unwrap();
            // Cost only: kube-cel's scope check does not know comprehension variables
            // (`all(r, …)`) and flags them as unknown.
            let w = kube_cel::estimate_rule_cost(rule, &c);
            assert!(w.is_empty(), "{rule}: {w:?}");
            n += 1;
        }
    }
    assert_eq!(n, 9);
}

/// Every CEL rule against its Rust twin in `validate()`, on both sides of the rule. Schema
/// defaults are applied before CEL runs, as in the apiserver.
#[test]
fn cel_rules_and_their_rust_twins_agree() {
    let schema = generated_schema();
    type Edit = fn(&mut Value);
    let hostnames: Edit =
        |v| v["spec"]["luaRecord"]["hostnames"] = json!(["marketing.acme-prod.omantel.openova.io"]);
    let both_regions = json!([
        {"name": "hz-fsn-rtz-prod", "lbIPs": ["192.0.2.10"]},
        {"name": "hz-hel-rtz-prod", "lbIPs": ["192.0.2.20", "2001:db8::20"]}
    ]);
    type Case = (&'static str, Box<dyn Fn(&mut Value)>, bool);
    let cases: Vec<Case> = vec![
        ("baseline", Box::new(|_| {}), true),
        (
            "renew 15 of ttl 30",
            Box::new(|v| v["spec"]["leaseClient"]["config"]["renewSeconds"] = json!(15)),
            false,
        ),
        (
            "renew 14 of ttl 30",
            Box::new(|v| v["spec"]["leaseClient"]["config"]["renewSeconds"] = json!(14)),
            true,
        ),
        (
            "no config: defaults 30/10",
            Box::new(|v| {
                v["spec"]["leaseClient"]
                    .as_object_mut()
                    .unwrap()
                    .remove("config");
            }),
            true,
        ),
        (
            "ttl 20 with the default renew 10",
            Box::new(|v| {
                v["spec"]["leaseClient"]["config"] = json!({"ttlSeconds": 20});
            }),
            false,
        ),
        (
            "margin 11 on 30/10",
            Box::new(|v| v["spec"]["leaseClient"]["config"]["marginSeconds"] = json!(11)),
            false,
        ),
        (
            "margin 9 on 30/10",
            Box::new(|v| v["spec"]["leaseClient"]["config"]["marginSeconds"] = json!(9)),
            true,
        ),
        (
            "ttl 10 / renew 1 / margin 1: drain + fence get under 1 s (fence budget)",
            Box::new(|v| {
                v["spec"]["leaseClient"]["config"] =
                    json!({"ttlSeconds": 10, "renewSeconds": 1, "marginSeconds": 1});
            }),
            false,
        ),
        (
            "ttl 10 / renew 1 / margin 2: inside the fence budget",
            Box::new(|v| {
                v["spec"]["leaseClient"]["config"] =
                    json!({"ttlSeconds": 10, "renewSeconds": 1, "marginSeconds": 2});
            }),
            true,
        ),
        (
            "primary also a standby",
            Box::new(|v| {
                v["spec"]["hotStandbyRegions"] = json!(["hz-hel-rtz-prod", "hz-fsn-rtz-prod"]);
            }),
            false,
        ),
        (
            "target outside the regions",
            Box::new(|v| v["spec"]["switchover"] = json!({"targetRegion": "eu-9"})),
            false,
        ),
        (
            "target the primary",
            Box::new(|v| v["spec"]["switchover"] = json!({"targetRegion": "hz-fsn-rtz-prod"})),
            true,
        ),
        (
            "target the standby",
            Box::new(|v| v["spec"]["switchover"] = json!({"targetRegion": "hz-hel-rtz-prod"})),
            true,
        ),
        (
            "switchover requested without id",
            Box::new(|v| v["spec"]["switchover"] = json!({"requested": true})),
            false,
        ),
        (
            "switchover requested with requestedAt",
            Box::new(|v| {
                v["spec"]["switchover"] =
                    json!({"requested": true, "requestedAt": "2026-11-23T10:00:00Z"});
            }),
            true,
        ),
        (
            "switchover not requested, no id",
            Box::new(|v| v["spec"]["switchover"] = json!({"requested": false})),
            true,
        ),
        (
            "failback requested without id",
            Box::new(|v| v["spec"]["failback"] = json!({"requested": true, "approved": true})),
            false,
        ),
        (
            "failback requested with id",
            Box::new(|v| v["spec"]["failback"] = json!({"requested": true, "id": "fb-1"})),
            true,
        ),
        ("hostnames without regions", Box::new(hostnames), false),
        (
            "hostnames with both regions",
            Box::new({
                let r = both_regions.clone();
                move |v| {
                    hostnames(v);
                    v["spec"]["regions"] = r.clone();
                }
            }),
            true,
        ),
        (
            "hostnames, standby region missing",
            Box::new(move |v| {
                hostnames(v);
                v["spec"]["regions"] =
                    json!([{"name": "hz-fsn-rtz-prod", "lbIPs": ["192.0.2.10"]}]);
            }),
            false,
        ),
        (
            "hostnames, standby without addresses",
            Box::new(move |v| {
                hostnames(v);
                v["spec"]["regions"] = json!([
                    {"name": "hz-fsn-rtz-prod", "lbIPs": ["192.0.2.10"]},
                    {"name": "hz-hel-rtz-prod"}
                ]);
            }),
            false,
        ),
        (
            "hostnames, ifurlup without health check",
            Box::new({
                let r = both_regions.clone();
                move |v| {
                    hostnames(v);
                    v["spec"]["regions"] = r.clone();
                    v["spec"]["luaRecord"]
                        .as_object_mut()
                        .unwrap()
                        .remove("healthCheck");
                }
            }),
            false,
        ),
        (
            "hostnames, pickfirst without health check",
            Box::new({
                let r = both_regions.clone();
                move |v| {
                    hostnames(v);
                    v["spec"]["regions"] = r.clone();
                    v["spec"]["luaRecord"] = json!({
                        "selector": "pickfirst",
                        "hostnames": ["marketing.acme-prod.omantel.openova.io"]
                    });
                }
            }),
            true,
        ),
    ];
    for (what, edit, valid) in cases {
        let obj = sample_with(|v| edit(v));
        let schema_errs = Validator::generated().errors(&obj);
        assert!(
            schema_errs.is_empty(),
            "{what}: not a CEL case, schema says {schema_errs:?}"
        );
        let cel = kube_cel::validate(&schema, &obj, None);
        assert_eq!(cel.is_ok(), valid, "CEL on {what}: {cel:?}");
        let rust = typed(&obj).unwrap().spec.validate();
        assert_eq!(rust.is_ok(), valid, "validate() on {what}: {rust:?}");
    }
}
