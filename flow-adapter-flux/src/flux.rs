//! The HelmRelease (`helm.toolkit.fluxcd.io/v2`) and HelmChart (`source.toolkit.fluxcd.io/v1`)
//! fields this crate reads, parsed from kube's `DynamicObject` into plain structs.
//!
//! PURE: no client, no clock. Only the fields the mapper and the repair job use are read; the
//! rest of the object is ignored, so newer Flux fields never break parsing. Timestamps are kept
//! as unix milliseconds (`None` when absent or unparseable).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

/// HelmRelease API group.
pub const HR_GROUP: &str = "helm.toolkit.fluxcd.io";
/// HelmRelease version.
pub const HR_VERSION: &str = "v2";
/// HelmRelease kind.
pub const HR_KIND: &str = "HelmRelease";
/// HelmRelease plural.
pub const HR_PLURAL: &str = "helmreleases";
/// HelmChart API group (upstream's emitter used the HelmRelease group here, which is wrong).
pub const HC_GROUP: &str = "source.toolkit.fluxcd.io";
/// HelmChart version.
pub const HC_VERSION: &str = "v1";
/// HelmChart kind.
pub const HC_KIND: &str = "HelmChart";
/// HelmChart plural.
pub const HC_PLURAL: &str = "helmcharts";

/// The `ApiResource` of HelmRelease v2.
pub fn helmrelease_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(HR_GROUP, HR_VERSION, HR_KIND),
        HR_PLURAL,
    )
}

/// The `ApiResource` of HelmChart v1.
pub fn helmchart_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(HC_GROUP, HC_VERSION, HC_KIND),
        HC_PLURAL,
    )
}

/// An object that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FluxError {
    /// `metadata.name` is missing.
    #[error("{kind} without metadata.name")]
    NoName {
        /// The kind.
        kind: &'static str,
    },
    /// `metadata.namespace` is missing (both kinds are namespaced).
    #[error("{kind} {name} without metadata.namespace")]
    NoNamespace {
        /// The kind.
        kind: &'static str,
        /// The object's name.
        name: String,
    },
}

/// `namespace/name` of a namespaced object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// A reference.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One `status.conditions[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Condition {
    /// `type` (`Ready`, `Stalled`, `Released`, …).
    pub kind: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
    /// `lastTransitionTime` as unix ms.
    pub last_transition_ms: Option<i64>,
    /// The raw condition, kept so the repair job can write the list back unchanged.
    pub raw: Value,
}

impl Condition {
    fn parse(v: &Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Self {
            kind: s("type"),
            status: s("status"),
            reason: s("reason"),
            message: s("message"),
            last_transition_ms: v["lastTransitionTime"].as_str().and_then(parse_time_ms),
            raw: v.clone(),
        }
    }

    /// `status == "True"`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }

    /// `status == "False"`.
    pub fn is_false(&self) -> bool {
        self.status == "False"
    }
}

/// `status.history[0]`: helm-controller's snapshot of the latest Helm release.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HistoryHead {
    /// Helm release status (`deployed`, `failed`, `pending-install`, `pending-upgrade`, …).
    pub status: String,
    /// Helm release revision.
    pub version: i64,
    /// Chart version.
    pub chart_version: String,
    /// `lastDeployed` as unix ms.
    pub last_deployed_ms: Option<i64>,
}

/// The HelmRelease fields read by the mapper and the repair job.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Release {
    /// Namespace and name.
    pub id: ObjectRef,
    /// `metadata.resourceVersion`, a precondition for the repair job's writes.
    pub resource_version: Option<String>,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// `metadata.creationTimestamp` as unix ms.
    pub created_ms: Option<i64>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// `spec.suspend`.
    pub suspend: bool,
    /// `spec.dependsOn[]` with the namespace resolved (defaults to the release's).
    pub depends_on: Vec<ObjectRef>,
    /// The HelmChart helm-controller made for this release: `status.helmChart`, else the
    /// `{sourceNamespace}/{namespace}-{name}` it is named by convention when `spec.chart` is used.
    pub chart: Option<ObjectRef>,
    /// `status.observedGeneration`.
    pub observed_generation: Option<i64>,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// `status.history[0]`.
    pub history_head: Option<HistoryHead>,
}

impl Release {
    /// Reads a HelmRelease.
    pub fn from_dynamic(obj: &DynamicObject) -> Result<Self, FluxError> {
        Self::from_parts(&obj.metadata, &obj.data)
    }

    /// Reads a HelmRelease from its metadata and the rest of the object (`spec`, `status`).
    pub fn from_parts(meta: &ObjectMeta, data: &Value) -> Result<Self, FluxError> {
        let id = object_ref(meta, HR_KIND)?;
        let spec = &data["spec"];
        let status = &data["status"];
        let depends_on = spec["dependsOn"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| {
                let name = d["name"].as_str()?.trim();
                if name.is_empty() {
                    return None;
                }
                let ns = d["namespace"]
                    .as_str()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&id.namespace);
                Some(ObjectRef::new(ns, name))
            })
            .collect();
        let chart = match status["helmChart"].as_str().and_then(|s| s.split_once('/')) {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                Some(ObjectRef::new(ns, name))
            }
            _ if spec["chart"].is_object() => {
                let src_ns = spec["chart"]["spec"]["sourceRef"]["namespace"]
                    .as_str()
                    .filter(|n| !n.is_empty())
                    .unwrap_or(&id.namespace);
                Some(ObjectRef::new(
                    src_ns,
                    format!("{}-{}", id.namespace, id.name),
                ))
            }
            _ => None,
        };
        let history_head = status["history"]
            .as_array()
            .and_then(|h| h.first())
            .map(|h| HistoryHead {
                status: h["status"].as_str().unwrap_or_default().to_owned(),
                version: h["version"].as_i64().unwrap_or_default(),
                chart_version: h["chartVersion"].as_str().unwrap_or_default().to_owned(),
                last_deployed_ms: h["lastDeployed"].as_str().and_then(parse_time_ms),
            });
        Ok(Self {
            resource_version: meta.resource_version.clone(),
            generation: meta.generation,
            created_ms: meta
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
            labels: meta.labels.clone().unwrap_or_default(),
            annotations: meta.annotations.clone().unwrap_or_default(),
            suspend: spec["suspend"].as_bool().unwrap_or(false),
            depends_on,
            chart,
            observed_generation: status["observedGeneration"].as_i64(),
            conditions: conditions(status),
            history_head,
            id,
        })
    }

    /// The first condition of type `kind`.
    pub fn condition(&self, kind: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }
}

/// The HelmChart fields folded into its HelmRelease's node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Namespace and name.
    pub id: ObjectRef,
    /// `spec.chart`.
    pub chart: String,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
}

impl Chart {
    /// Reads a HelmChart.
    pub fn from_dynamic(obj: &DynamicObject) -> Result<Self, FluxError> {
        let id = object_ref(&obj.metadata, HC_KIND)?;
        Ok(Self {
            id,
            chart: obj.data["spec"]["chart"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            conditions: conditions(&obj.data["status"]),
        })
    }

    /// The `Ready` condition.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == "Ready")
    }
}

fn conditions(status: &Value) -> Vec<Condition> {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(Condition::parse)
        .collect()
}

fn object_ref(meta: &ObjectMeta, kind: &'static str) -> Result<ObjectRef, FluxError> {
    let name = meta.name.clone().ok_or(FluxError::NoName { kind })?;
    let namespace = meta
        .namespace
        .clone()
        .ok_or_else(|| FluxError::NoNamespace {
            kind,
            name: name.clone(),
        })?;
    Ok(ObjectRef { namespace, name })
}

/// RFC 3339 → unix ms.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    s.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

/// Unix ms → RFC 3339 with second precision (the form Kubernetes writes `metav1.Time` in).
pub fn format_time_ms(ms: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(ms.div_euclid(1000))
        .map(|t| t.to_string())
        .unwrap_or_default()
}
