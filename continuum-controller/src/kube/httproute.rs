//! The [`Routes`] port over a Gateway API `gateway.networking.k8s.io/v1 HTTPRoute`.
//!
//! - `drain`: every `spec.rules[].backendRefs[]` of this region (name ending in `-<region>`;
//!   when none does, every backendRef — safety wins, as upstream) gets `weight: 0`. The
//!   weights they had are recorded once, in the annotation [`ORIGINAL_WEIGHTS_ANNOTATION`]
//!   (`[[rule, ref, weight], …]`, absent weight = Gateway API's default 1), so draining twice
//!   keeps the real originals.
//! - `undrain`: the recorded weights come back (a route drained without a record gets weight
//!   1) and the record is removed.
//! - Both are idempotent and carry the epoch annotation in the same compare-and-swap as the
//!   epoch check (`spec.rules` is replaced whole: a merge patch replaces lists). A lower epoch
//!   refuses `undrain`, never `drain` (it only takes traffic away; a restarted controller knows
//!   no epoch until it holds the lease again and must still be able to drain).
//! - `arm` is a no-op: **Gateway API has no dead-man switch** (no TTL on a weight). What bounds a
//!   stale controller's authority instead: its own self-fence deadline inside the lease TTL (it
//!   drains itself and fences the database before the witness can grant the lease to the peer),
//!   the database fence (`cnpg.io/fencedInstances`) and demotion, which make writes impossible
//!   whatever the route still sends, and the epoch annotation, which makes a paused
//!   controller's late write fail once the peer wrote a higher epoch. A crashed controller can
//!   leave its route open; its database is fenced or demoted by then.

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{EPOCH_ANNOTATION, applied_epoch, check_epoch, is_conflict, plane_error};
use crate::ports::{PlaneError, Routes};

/// Where the pre-drain weights are recorded.
pub const ORIGINAL_WEIGHTS_ANNOTATION: &str = "dr.openova.io/original-weights";

/// The `gateway.networking.k8s.io/v1` `httproutes` resource.
pub fn httproute_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// `(rule, backendRef)` indices of `region`'s backends (all backends when none matches).
pub fn region_refs(route: &Value, region: &str) -> Vec<(usize, usize)> {
    let suffix = format!("-{region}");
    let mut all = Vec::new();
    let mut mine = Vec::new();
    for (ri, rule) in rules(route).iter().enumerate() {
        let refs = rule
            .get("backendRefs")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (bi, b) in refs.iter().enumerate() {
            all.push((ri, bi));
            if b.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| n.ends_with(&suffix))
            {
                mine.push((ri, bi));
            }
        }
    }
    if mine.is_empty() { all } else { mine }
}

fn rules(route: &Value) -> Vec<Value> {
    route
        .pointer("/spec/rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn weight(route: &Value, (r, b): (usize, usize)) -> i64 {
    route
        .pointer(&format!("/spec/rules/{r}/backendRefs/{b}/weight"))
        .and_then(Value::as_i64)
        .unwrap_or(1)
}

/// Drained: every backend of the region has weight 0.
pub fn is_drained(route: &Value, region: &str) -> bool {
    let refs = region_refs(route, region);
    !refs.is_empty() && refs.iter().all(|&i| weight(route, i) == 0)
}

fn recorded(route: &Value) -> Option<Vec<(usize, usize, i64)>> {
    route
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(ORIGINAL_WEIGHTS_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())
}

fn set_weights(route: &Value, weights: &[((usize, usize), i64)]) -> Vec<Value> {
    let mut rs = rules(route);
    for &((r, b), w) in weights {
        if let Some(slot) = rs
            .get_mut(r)
            .and_then(|rule| rule.get_mut("backendRefs"))
            .and_then(|refs| refs.get_mut(b))
        {
            slot["weight"] = json!(w);
        }
    }
    rs
}

/// The merge patch draining `region` (pure).
pub fn drain_patch(route: &Value, region: &str, epoch: u64) -> Value {
    let refs = region_refs(route, region);
    let record = match recorded(route) {
        Some(r) => r,
        None => refs
            .iter()
            .map(|&(r, b)| (r, b, weight(route, (r, b))))
            .collect(),
    };
    let zeros: Vec<_> = refs.iter().map(|&i| (i, 0)).collect();
    json!({
        "metadata": {"annotations": {
            ORIGINAL_WEIGHTS_ANNOTATION: serde_json::to_string(&record).unwrap_or_default(),
            EPOCH_ANNOTATION: epoch.max(applied_epoch(route)).to_string(),
        }},
        "spec": {"rules": set_weights(route, &zeros)},
    })
}

/// The merge patch undraining `region` (pure).
pub fn undrain_patch(route: &Value, region: &str, epoch: u64) -> Value {
    let weights: Vec<_> = match recorded(route) {
        Some(r) => r.into_iter().map(|(r, b, w)| ((r, b), w)).collect(),
        None => region_refs(route, region)
            .into_iter()
            .map(|i| {
                (
                    i,
                    if weight(route, i) == 0 {
                        1
                    } else {
                        weight(route, i)
                    },
                )
            })
            .collect(),
    };
    json!({
        "metadata": {"annotations": {
            ORIGINAL_WEIGHTS_ANNOTATION: null,
            EPOCH_ANNOTATION: epoch.max(applied_epoch(route)).to_string(),
        }},
        "spec": {"rules": set_weights(route, &weights)},
    })
}

/// The HTTPRoute [`Routes`] adapter; without a route configured, drain state is only
/// remembered in memory (nothing to drain).
#[derive(Debug)]
pub struct HttpRouteRoutes {
    target: Option<(Api<DynamicObject>, String)>,
    region: String,
    drained: AtomicBool,
}

impl HttpRouteRoutes {
    /// The adapter for HTTPRoute `name` in `namespace`, draining `region`'s backends.
    pub fn new(client: kube::Client, namespace: &str, name: &str, region: &str) -> Self {
        HttpRouteRoutes {
            target: Some((
                Api::namespaced_with(client, namespace, &httproute_resource()),
                name.to_owned(),
            )),
            region: region.to_owned(),
            drained: AtomicBool::new(true),
        }
    }

    /// No HTTPRoute (`spec.httpRoute` absent).
    pub fn none(region: &str) -> Self {
        HttpRouteRoutes {
            target: None,
            region: region.to_owned(),
            drained: AtomicBool::new(true),
        }
    }

    async fn get(&self, api: &Api<DynamicObject>, name: &str) -> Result<Value, PlaneError> {
        let o = api
            .get(name)
            .await
            .map_err(|e| plane_error(&format!("reading HTTPRoute {name}"), &e))?;
        serde_json::to_value(&o).map_err(|e| PlaneError::Failed(e.to_string()))
    }

    /// Whether this region's backends are drained (no route: the remembered state).
    pub async fn drained(&self) -> Result<bool, PlaneError> {
        match &self.target {
            Some((api, name)) => Ok(is_drained(&self.get(api, name).await?, &self.region)),
            None => Ok(self.drained.load(Ordering::SeqCst)),
        }
    }

    async fn write(&self, epoch: u64, drain: bool) -> Result<(), PlaneError> {
        let Some((api, name)) = &self.target else {
            self.drained.store(drain, Ordering::SeqCst);
            return Ok(());
        };
        for _ in 0..5 {
            let v = self.get(api, name).await?;
            // Draining only takes traffic away: never refused for its epoch (a restarted
            // controller knows none until it holds the lease again).
            if !drain {
                check_epoch(applied_epoch(&v), epoch)?;
            }
            let mut patch = if drain {
                drain_patch(&v, &self.region, epoch)
            } else {
                undrain_patch(&v, &self.region, epoch)
            };
            patch["metadata"]["resourceVersion"] = v
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(Value::Null);
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(plane_error(&format!("patching HTTPRoute {name}"), &e)),
            }
        }
        Err(PlaneError::Unavailable(format!(
            "patching HTTPRoute {name}: kept conflicting"
        )))
    }
}

impl Routes for HttpRouteRoutes {
    async fn drain(&self, epoch: u64) -> Result<(), PlaneError> {
        self.write(epoch, true).await
    }

    async fn undrain(&self, epoch: u64) -> Result<(), PlaneError> {
        self.write(epoch, false).await
    }

    /// No dead-man switch exists in Gateway API (module docs).
    async fn arm(&self, _epoch: u64, _valid_for: Duration) -> Result<(), PlaneError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Value {
        json!({
            "metadata": {"name": "app"},
            "spec": {"rules": [
                {"backendRefs": [{"name": "app-eu-1", "weight": 3}, {"name": "app-us-1"}]},
                {"backendRefs": [{"name": "static"}]}
            ]}
        })
    }

    fn apply(route: &mut Value, patch: &Value) {
        // A JSON merge patch, enough for these bodies.
        fn merge(t: &mut Value, p: &Value) {
            if let (Some(to), Some(po)) = (t.as_object_mut(), p.as_object()) {
                for (k, v) in po {
                    if v.is_null() {
                        to.remove(k);
                    } else if v.is_object() && to.get(k).is_some_and(Value::is_object) {
                        if let Some(slot) = to.get_mut(k) {
                            merge(slot, v);
                        }
                    } else {
                        to.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        merge(route, patch);
    }

    #[test]
    fn drain_zeroes_only_the_regions_backends_and_undrain_restores_them() {
        let mut r = route();
        assert_eq!(region_refs(&r, "eu-1"), vec![(0, 0)]);
        assert!(!is_drained(&r, "eu-1"));
        let p = drain_patch(&r, "eu-1", 4);
        apply(&mut r, &p);
        assert!(is_drained(&r, "eu-1"));
        assert!(!is_drained(&r, "us-1"));
        assert_eq!(r.pointer("/spec/rules/0/backendRefs/1/weight"), None);
        // Draining again keeps the recorded original (3), not 0.
        let p = drain_patch(&r, "eu-1", 4);
        apply(&mut r, &p);
        let p = undrain_patch(&r, "eu-1", 4);
        apply(&mut r, &p);
        assert_eq!(
            r.pointer("/spec/rules/0/backendRefs/0/weight"),
            Some(&json!(3))
        );
        assert!(recorded(&r).is_none());
        assert_eq!(applied_epoch(&r), 4);
    }

    #[test]
    fn a_route_without_region_backends_drains_every_backend() {
        let r = route();
        assert_eq!(region_refs(&r, "ap-1").len(), 3);
        let mut d = r.clone();
        apply(&mut d, &drain_patch(&r, "ap-1", 1));
        assert!(is_drained(&d, "ap-1"));
        // Undrain without a record: weight 1.
        let mut plain = d.clone();
        plain["metadata"]["annotations"] = json!({});
        let p = undrain_patch(&plain, "ap-1", 1);
        apply(&mut plain, &p);
        assert_eq!(
            plain.pointer("/spec/rules/1/backendRefs/0/weight"),
            Some(&json!(1))
        );
    }
}
