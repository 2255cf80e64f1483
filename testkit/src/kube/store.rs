//! The in-memory API's state: resource definitions, objects, the global `resourceVersion`, the
//! bounded watch history, injected faults, and every write rule (create, replace, patch,
//! server-side apply, delete with finalizers).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Map, Value, json};
use tokio::sync::broadcast;

use super::ApiError;

// === ResourceDef ===

/// One served resource: a built-in kind or a kind from a loaded CRD.
#[derive(Debug, Clone)]
pub(crate) struct ResourceDef {
    /// API group; empty for the core group.
    pub(crate) group: String,
    /// Served versions, storage version first.
    pub(crate) versions: Vec<String>,
    pub(crate) plural: String,
    pub(crate) singular: String,
    pub(crate) kind: String,
    pub(crate) short_names: Vec<String>,
    pub(crate) namespaced: bool,
    /// Whether the `status` subresource is declared.
    pub(crate) status: bool,
    /// Built-in kinds allow unconditional replace (no `metadata.resourceVersion`).
    pub(crate) builtin: bool,
    /// `openAPIV3Schema` by version (CRDs only).
    pub(crate) schemas: HashMap<String, Value>,
}

impl ResourceDef {
    fn builtin(group: &str, version: &str, plural: &str, kind: &str, namespaced: bool) -> Self {
        Self {
            group: group.to_owned(),
            versions: vec![version.to_owned()],
            plural: plural.to_owned(),
            singular: kind.to_lowercase(),
            kind: kind.to_owned(),
            short_names: Vec::new(),
            namespaced,
            status: false,
            builtin: true,
            schemas: HashMap::new(),
        }
    }

    /// The built-in kinds the in-memory API serves.
    pub(crate) fn builtins() -> Vec<Self> {
        vec![
            Self::builtin("", "v1", "namespaces", "Namespace", false),
            Self::builtin("", "v1", "secrets", "Secret", true),
            Self::builtin("", "v1", "configmaps", "ConfigMap", true),
            Self::builtin("", "v1", "events", "Event", true),
            Self::builtin("coordination.k8s.io", "v1", "leases", "Lease", true),
            Self::builtin("events.k8s.io", "v1", "events", "Event", true),
        ]
    }

    /// Parses an `apiextensions.k8s.io/v1` CustomResourceDefinition.
    pub(crate) fn from_crd(crd: &Value) -> Result<Self, String> {
        if crd["kind"] != "CustomResourceDefinition" {
            return Err(format!(
                "not a CustomResourceDefinition: kind {}",
                crd["kind"]
            ));
        }
        let spec = &crd["spec"];
        let s = |v: &Value, what: &str| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("CRD without {what}"))
        };
        let names = &spec["names"];
        let kind = s(&names["kind"], "spec.names.kind")?;
        let mut versions = Vec::new();
        let mut status = false;
        let mut schemas = HashMap::new();
        for v in spec["versions"].as_array().into_iter().flatten() {
            if v["served"] == false {
                continue;
            }
            let name = s(&v["name"], "spec.versions[].name")?;
            if let Some(schema) = v["schema"].get("openAPIV3Schema") {
                schemas.insert(name.clone(), schema.clone());
            }
            if v["storage"] == true {
                versions.insert(0, name);
                status = v["subresources"]["status"].is_object();
            } else {
                versions.push(name);
            }
        }
        if versions.is_empty() {
            return Err(format!("CRD {kind} serves no version"));
        }
        Ok(Self {
            group: s(&spec["group"], "spec.group")?,
            versions,
            plural: s(&names["plural"], "spec.names.plural")?,
            singular: names["singular"]
                .as_str()
                .map_or_else(|| kind.to_lowercase(), str::to_owned),
            short_names: names["shortNames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
            kind,
            namespaced: spec["scope"] != "Cluster",
            status,
            builtin: false,
            schemas,
        })
    }

    /// `group/version`, or just `version` for the core group.
    pub(crate) fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_owned()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// `plural.group` as Kubernetes names resources in messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// Events buffered for live watches; a watch that falls further behind gets 410 and re-lists.
const BROADCAST_CAPACITY: usize = 16_384;

// === Events and faults ===

/// A watch event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change, kept in the bounded history and broadcast to open watches.
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) rv: u64,
    pub(crate) def: usize,
    pub(crate) kind: EventType,
    pub(crate) object: Value,
}

/// What open watches receive.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    Event(Arc<Event>),
    /// Close every open watch (fault injection, or the in-memory API is dropped).
    DropAll,
}

#[derive(Debug)]
struct Fault {
    plural: String,
    /// `None`: main resource and `/status`; `Some(true)`: only `/status`.
    status_only: bool,
    remaining: usize,
    code: u16,
}

// === Store ===

/// Objects by resource definition index, then by `(namespace, name)` (namespace empty when
/// cluster-scoped).
type Objects = HashMap<usize, BTreeMap<(String, String), Value>>;

/// The whole state of one in-memory API.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) defs: Vec<ResourceDef>,
    rv: u64,
    /// Watches from a resourceVersion below this get 410 Gone.
    floor: u64,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    objects: Objects,
    faults: Vec<Fault>,
    /// Check writes against the CRD's `openAPIV3Schema` (see [`schema_errors`]).
    pub(crate) validate: bool,
    serial: u64,
    pub(crate) tx: broadcast::Sender<Msg>,
}

/// How a write reaches [`Store::update`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteMode {
    /// A write to the `/status` subresource.
    pub(crate) status_only: bool,
    /// A PUT on a custom resource: `metadata.resourceVersion` must be given.
    pub(crate) require_rv: bool,
}

impl Store {
    pub(crate) fn new(defs: Vec<ResourceDef>, history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(BROADCAST_CAPACITY);
        Self {
            defs,
            rv: 1,
            floor: 1,
            history: VecDeque::new(),
            history_limit,
            objects: HashMap::new(),
            faults: Vec::new(),
            validate: true,
            serial: 0,
            tx,
        }
    }

    pub(crate) fn resource_version(&self) -> u64 {
        self.rv
    }

    pub(crate) fn find(&self, group: &str, version: &str, plural: &str) -> Option<usize> {
        self.defs.iter().position(|d| {
            d.group == group && d.plural == plural && d.versions.iter().any(|v| v == version)
        })
    }

    pub(crate) fn find_plural(&self, plural: &str) -> Option<usize> {
        self.defs.iter().position(|d| d.plural == plural)
    }

    pub(crate) fn get(&self, def: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        self.objects
            .get(&def)
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
            .cloned()
            .ok_or_else(|| self.not_found(def, name))
    }

    /// Objects of `def` in `ns` (all namespaces when `None`), in name order.
    pub(crate) fn list(&self, def: usize, ns: Option<&str>) -> Vec<Value> {
        self.objects
            .get(&def)
            .into_iter()
            .flat_map(|m| m.iter())
            .filter(|((n, _), _)| ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn not_found(&self, def: usize, name: &str) -> ApiError {
        let d = &self.defs[def];
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", d.qualified()),
        )
        .details(d, name)
    }

    // --- faults ---

    pub(crate) fn add_fault(&mut self, resource: &str, n: usize, code: u16) {
        let (plural, status_only) = match resource.strip_suffix("/status") {
            Some(p) => (p.to_owned(), true),
            None => (resource.to_owned(), false),
        };
        self.faults.push(Fault {
            plural,
            status_only,
            remaining: n,
            code,
        });
    }

    /// Consumes one injected failure for a write to `def` (`status`: a `/status` write).
    pub(crate) fn take_fault(&mut self, def: usize, status: bool) -> Result<(), ApiError> {
        let plural = &self.defs[def].plural;
        let hit = self
            .faults
            .iter_mut()
            .find(|f| f.remaining > 0 && &f.plural == plural && (!f.status_only || status));
        if let Some(f) = hit {
            f.remaining -= 1;
            let code = f.code;
            self.faults.retain(|f| f.remaining > 0);
            return Err(ApiError::new(
                code,
                reason_for(code),
                format!("injected failure (testkit fault, HTTP {code})"),
            ));
        }
        Ok(())
    }

    // --- history ---

    /// Forgets the whole history: every resourceVersion older than the next one is too old.
    pub(crate) fn expire_history(&mut self) {
        self.rv += 1;
        self.floor = self.rv;
        self.history.clear();
    }

    /// Starts a watch: checks `rv`, returns the events to replay first and a receiver for the
    /// rest. `None` = begin with the current state as ADDED events.
    pub(crate) fn watch_from(
        &self,
        def: usize,
        rv: Option<u64>,
    ) -> Result<(Vec<Arc<Event>>, broadcast::Receiver<Msg>), ApiError> {
        let rx = self.tx.subscribe();
        let replay = match rv {
            None => self
                .list(def, None)
                .into_iter()
                .map(|object| {
                    Arc::new(Event {
                        rv: rv_of(&object),
                        def,
                        kind: EventType::Added,
                        object,
                    })
                })
                .collect(),
            Some(n) if n < self.floor => {
                return Err(ApiError::new(
                    410,
                    "Expired",
                    format!("too old resource version: {n} ({})", self.floor),
                ));
            }
            Some(n) => self
                .history
                .iter()
                .filter(|e| e.def == def && e.rv > n)
                .cloned()
                .collect(),
        };
        Ok((replay, rx))
    }

    fn commit(&mut self, def: usize, mut object: Value, kind: EventType) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = key_of(&object);
        let map = self.objects.entry(def).or_default();
        if kind == EventType::Deleted {
            map.remove(&key);
        } else {
            map.insert(key, object.clone());
        }
        let event = Arc::new(Event {
            rv: self.rv,
            def,
            kind,
            object: object.clone(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.floor = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.tx.send(Msg::Event(event));
        object
    }

    // --- writes ---

    pub(crate) fn create(
        &mut self,
        def: usize,
        ns: &str,
        mut obj: Value,
        version: &str,
        managed_fields: Option<Value>,
    ) -> Result<Value, ApiError> {
        let d = self.defs[def].clone();
        check_types(&d, &obj, version)?;
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        let mut name = obj["metadata"]["name"].as_str().unwrap_or("").to_owned();
        if name.is_empty() {
            let Some(prefix) = obj["metadata"]["generateName"].as_str() else {
                return Err(ApiError::invalid(
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            self.serial += 1;
            name = format!("{prefix}{}", suffix(self.serial));
        }
        set_namespace(&d, &mut obj, ns)?;
        obj["metadata"]["name"] = json!(name);
        if self
            .objects
            .get(&def)
            .is_some_and(|m| m.contains_key(&key_of(&obj)))
        {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", d.qualified()),
            )
            .details(&d, &name));
        }
        if d.status
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        self.serial += 1;
        let meta = meta_mut(&mut obj);
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            meta.remove(k);
        }
        meta.insert("uid".into(), json!(uid(self.serial)));
        meta.insert("creationTimestamp".into(), json!(now()));
        meta.insert("generation".into(), json!(1));
        if let Some(mf) = managed_fields {
            meta.insert("managedFields".into(), mf);
        }
        obj["apiVersion"] = json!(d.api_version(&d.versions[0]));
        obj["kind"] = json!(d.kind);
        self.check_schema(&d, &obj, version)?;
        Ok(self.commit(def, obj, EventType::Added))
    }

    /// Replaces the stored object with `new` under the rules of `mode`; a no-op write changes
    /// nothing (no new resourceVersion, no event).
    pub(crate) fn update(
        &mut self,
        def: usize,
        ns: &str,
        name: &str,
        mut new: Value,
        mode: WriteMode,
    ) -> Result<Value, ApiError> {
        let d = self.defs[def].clone();
        let old = self.get(def, ns, name)?;
        if !new["metadata"].is_object() {
            new["metadata"] = json!({});
        }
        if let Some(n) = new["metadata"]["name"].as_str()
            && n != name
        {
            return Err(ApiError::new(
                400,
                "BadRequest",
                format!("the name of the object ({n}) does not match the name on the URL ({name})"),
            ));
        }
        let given_rv = new["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if given_rv.is_empty() {
            if mode.require_rv && !d.builtin {
                return Err(ApiError::invalid(
                    "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
                ));
            }
        } else if given_rv != rv_str(&old) {
            return Err(conflict(&d, name));
        }
        let mut result = if mode.status_only {
            let mut r = old.clone();
            match new.get("status") {
                Some(s) if !s.is_null() => r["status"] = s.clone(),
                _ => {
                    if let Some(m) = r.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
            if let Some(mf) = new["metadata"].get("managedFields") {
                r["metadata"]["managedFields"] = mf.clone();
            }
            r
        } else {
            let mut r = new;
            set_namespace(&d, &mut r, ns)?;
            r["metadata"]["name"] = json!(name);
            for k in [
                "uid",
                "creationTimestamp",
                "generation",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                match old["metadata"].get(k) {
                    Some(v) => r["metadata"][k] = v.clone(),
                    None => {
                        meta_mut(&mut r).remove(k);
                    }
                }
            }
            if r["metadata"].get("managedFields").is_none()
                && let Some(mf) = old["metadata"].get("managedFields")
            {
                r["metadata"]["managedFields"] = mf.clone();
            }
            if d.status {
                match old.get("status") {
                    Some(s) => r["status"] = s.clone(),
                    None => {
                        if let Some(m) = r.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            r
        };
        result["apiVersion"] = json!(d.api_version(&d.versions[0]));
        result["kind"] = json!(d.kind);
        result["metadata"]["resourceVersion"] = json!(rv_str(&old));
        if spec_of(&old, d.status) != spec_of(&result, d.status) {
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            result["metadata"]["generation"] = json!(generation);
        }
        let deleting = old["metadata"].get("deletionTimestamp").is_some();
        if deleting && finalizers(&result).is_empty() {
            return Ok(self.commit(def, result, EventType::Deleted));
        }
        if result == old {
            return Ok(old);
        }
        self.check_schema(&d, &result, &d.versions[0])?;
        Ok(self.commit(def, result, EventType::Modified))
    }

    /// Applies a patch of `content_type` to the stored object (or creates it, for server-side
    /// apply) and stores the result through [`Store::update`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn patch(
        &mut self,
        def: usize,
        ns: &str,
        name: &str,
        content_type: &str,
        body: &[u8],
        status_only: bool,
        field_manager: Option<&str>,
        force: bool,
        version: &str,
    ) -> Result<Value, ApiError> {
        let mode = WriteMode {
            status_only,
            require_rv: false,
        };
        if content_type.starts_with("application/apply-patch") {
            let applied: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))?;
            let manager = field_manager.ok_or_else(|| {
                ApiError::bad_request("fieldManager is required for apply requests")
            })?;
            return self.apply(def, ns, name, applied, manager, force, mode, version);
        }
        let patch: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid patch body: {e}")))?;
        let mut doc = self.get(def, ns, name)?;
        if content_type.starts_with("application/json-patch+json") {
            apply_json_patch(&mut doc, patch)?;
        } else if content_type.starts_with("application/merge-patch+json")
            || content_type.starts_with("application/strategic-merge-patch+json")
        {
            json_patch::merge(&mut doc, &patch);
        } else {
            return Err(ApiError::new(
                415,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format: {content_type}"),
            ));
        }
        self.update(def, ns, name, doc, mode)
    }

    /// Server-side apply, simplified (see the module docs of `testkit::kube`).
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        def: usize,
        ns: &str,
        name: &str,
        mut applied: Value,
        manager: &str,
        force: bool,
        mode: WriteMode,
        version: &str,
    ) -> Result<Value, ApiError> {
        let d = self.defs[def].clone();
        check_types(&d, &applied, version)?;
        if applied["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n != name)
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                applied["metadata"]["name"]
            )));
        }
        let subresource = if mode.status_only {
            Some("status")
        } else {
            None
        };
        let mut fields = leaf_paths(&applied);
        fields.retain(|p| in_scope(p, &d, mode.status_only));
        let entry =
            |set: &BTreeSet<Vec<String>>| managed_entry(manager, &d, version, subresource, set);
        let existing = self
            .objects
            .get(&def)
            .and_then(|m| m.get(&(ns.to_owned(), name.to_owned())))
            .cloned();
        let Some(old) = existing else {
            if mode.status_only {
                return Err(self.not_found(def, name));
            }
            applied["metadata"]["name"] = json!(name);
            let managed = json!([entry(&fields)]);
            return self.create(def, ns, applied, version, Some(managed));
        };
        if let Some(given) = applied["metadata"]["resourceVersion"].as_str()
            && given != rv_str(&old)
        {
            return Err(conflict(&d, name));
        }
        let mut entries: Vec<Value> = old["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let same = |e: &Value| {
            e["manager"] == manager
                && e["operation"] == "Apply"
                && e["subresource"].as_str() == subresource
        };
        let previous: BTreeSet<Vec<String>> = entries
            .iter()
            .find(|e| same(e))
            .map(|e| tree_paths(&e["fieldsV1"]))
            .unwrap_or_default();
        // Conflicts with other appliers that own a field we set to a different value.
        let mut conflicts = Vec::new();
        for e in entries.iter_mut().filter(|e| !same(e)) {
            let theirs = tree_paths(&e["fieldsV1"]);
            let mut kept = theirs.clone();
            for p in &fields {
                for q in theirs
                    .iter()
                    .filter(|q| q.starts_with(p) || p.starts_with(q))
                {
                    if pointer(&old, p) != pointer(&applied, p) {
                        conflicts.push(format!(
                            "conflict with \"{}\": .{}",
                            e["manager"].as_str().unwrap_or(""),
                            p.join(".")
                        ));
                        kept.remove(q);
                    }
                }
            }
            if force && kept.len() != theirs.len() {
                e["fieldsV1"] = paths_tree(&kept);
            }
        }
        if !conflicts.is_empty() && !force {
            conflicts.sort();
            conflicts.dedup();
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflicts: {}",
                    conflicts.len(),
                    conflicts.join("; ")
                ),
            )
            .details(&d, name));
        }
        let others: BTreeSet<Vec<String>> = entries
            .iter()
            .filter(|e| !same(e))
            .flat_map(|e| tree_paths(&e["fieldsV1"]))
            .collect();
        let mut result = old.clone();
        for p in previous.difference(&fields) {
            if !others.contains(p) {
                remove_pointer(&mut result, p);
            }
        }
        for p in &fields {
            match pointer(&applied, p) {
                Some(Value::Null) | None => remove_pointer(&mut result, p),
                Some(v) => set_pointer(&mut result, p, v.clone()),
            }
        }
        match entries.iter_mut().find(|e| same(e)) {
            Some(_) if previous == fields => {}
            Some(e) => *e = entry(&fields),
            None => entries.push(entry(&fields)),
        }
        entries.retain(|e| !tree_paths(&e["fieldsV1"]).is_empty() || same(e));
        result["metadata"]["managedFields"] = json!(entries);
        self.update(def, ns, name, result, mode)
    }

    fn check_schema(&self, d: &ResourceDef, obj: &Value, version: &str) -> Result<(), ApiError> {
        let Some(schema) = d.schemas.get(version).filter(|_| self.validate) else {
            return Ok(());
        };
        let mut errors = Vec::new();
        // The API server owns metadata; its schema in a CRD is at most `type: object` (and may
        // be `required`, as CNPG's is), so it is checked as an empty object.
        let mut body = obj.clone();
        if let Some(m) = body.as_object_mut() {
            m.insert("metadata".to_owned(), Value::Object(serde_json::Map::new()));
        }
        schema_errors(schema, &body, "", &mut errors);
        if errors.is_empty() {
            return Ok(());
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("");
        Err(ApiError::invalid(format!(
            "{}.{} \"{name}\" is invalid: [{}] (schema check of the in-memory API)",
            d.kind,
            d.group,
            errors.join(", ")
        ))
        .details(d, name))
    }

    pub(crate) fn delete(&mut self, def: usize, ns: &str, name: &str) -> Result<Value, ApiError> {
        let mut obj = self.get(def, ns, name)?;
        if finalizers(&obj).is_empty() {
            return Ok(self.commit(def, obj, EventType::Deleted));
        }
        if obj["metadata"].get("deletionTimestamp").is_some() {
            return Ok(obj);
        }
        obj["metadata"]["deletionTimestamp"] = json!(now());
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        Ok(self.commit(def, obj, EventType::Modified))
    }
}

// === schema check ===

/// Checks `v` against a structural `openAPIV3Schema`, appending `path: problem` lines.
///
/// Checked: `type` (object, array, string, integer, number, boolean), `required`, `enum`,
/// `properties`, `additionalProperties` (as a schema), `items`, `x-kubernetes-int-or-string`, and
/// `x-kubernetes-preserve-unknown-fields` (anything goes below it, except declared properties).
/// Not checked: formats, patterns, lengths, bounds, `oneOf`/`anyOf`/`allOf`/`not`, CEL
/// `x-kubernetes-validations`, list-type uniqueness. Unknown fields are kept, not pruned. `null`
/// is accepted anywhere (the API server drops such fields).
pub(crate) fn schema_errors(schema: &Value, v: &Value, path: &str, out: &mut Vec<String>) {
    if v.is_null() {
        return;
    }
    let at = |p: &str| {
        if p.is_empty() {
            "<root>".to_owned()
        } else {
            p.to_owned()
        }
    };
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        out.push(format!("{}: Unsupported value: {v}", at(path)));
    }
    if schema["x-kubernetes-int-or-string"] == true {
        if !(v.is_string() || is_integer(v)) {
            out.push(format!(
                "{}: Invalid value: {v}: must be an integer or a string",
                at(path)
            ));
        }
        return;
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => is_integer(v),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        Some(_) => true,
    };
    if !ok {
        out.push(format!(
            "{}: Invalid value: {v}: must be of type {}",
            at(path),
            schema["type"].as_str().unwrap_or("")
        ));
        return;
    }
    if let Some(obj) = v.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            if let Some(k) = key.as_str()
                && obj.get(k).is_none_or(Value::is_null)
            {
                out.push(format!("{path}.{k}: Required value"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, child) in obj {
            let p = format!("{path}.{k}");
            if let Some(s) = props.and_then(|m| m.get(k)) {
                schema_errors(s, child, &p, out);
            } else if schema["additionalProperties"].is_object() {
                schema_errors(&schema["additionalProperties"], child, &p, out);
            }
        }
    }
    if let (Some(items), Some(schema)) = (v.as_array(), schema.get("items")) {
        for (i, item) in items.iter().enumerate() {
            schema_errors(schema, item, &format!("{path}[{i}]"), out);
        }
    }
}

fn is_integer(v: &Value) -> bool {
    v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0)
}

// === helpers ===

fn check_types(d: &ResourceDef, obj: &Value, version: &str) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request("the body is not a JSON object"));
    }
    if let Some(k) = obj["kind"].as_str()
        && k != d.kind
    {
        return Err(ApiError::bad_request(format!(
            "kind {k} does not match the resource {} (kind {})",
            d.plural, d.kind
        )));
    }
    if let Some(av) = obj["apiVersion"].as_str()
        && av != d.api_version(version)
    {
        return Err(ApiError::bad_request(format!(
            "apiVersion {av} does not match the URL's {}",
            d.api_version(version)
        )));
    }
    Ok(())
}

fn set_namespace(d: &ResourceDef, obj: &mut Value, ns: &str) -> Result<(), ApiError> {
    let given = obj["metadata"]["namespace"].as_str().unwrap_or("");
    if d.namespaced {
        if !given.is_empty() && given != ns {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({given}) does not match the namespace on the URL ({ns})"
            )));
        }
        obj["metadata"]["namespace"] = json!(ns);
    } else {
        meta_mut(obj).remove("namespace");
    }
    Ok(())
}

fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

pub(crate) fn key_of(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("").to_owned(),
        m["name"].as_str().unwrap_or("").to_owned(),
    )
}

fn rv_str(obj: &Value) -> &str {
    obj["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

pub(crate) fn rv_of(obj: &Value) -> u64 {
    rv_str(obj).parse().unwrap_or(0)
}

fn finalizers(obj: &Value) -> Vec<Value> {
    obj["metadata"]["finalizers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The part of an object whose change bumps `metadata.generation`: everything but `metadata`
/// (and but `status` when the status subresource exists).
fn spec_of(obj: &Value, status_sub: bool) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if status_sub {
            m.remove("status");
        }
    }
    v
}

fn conflict(d: &ResourceDef, name: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            d.qualified()
        ),
    )
    .details(d, name)
}

pub(crate) fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    }
}

/// JSON patch (RFC 6902). A `test` of `null` against a missing path passes, as in the API server
/// (kube's `finalizer` helper relies on it).
fn apply_json_patch(doc: &mut Value, patch: Value) -> Result<(), ApiError> {
    let Value::Array(ops) = patch else {
        return Err(ApiError::bad_request("a JSON patch must be an array"));
    };
    let ops: Vec<Value> = ops
        .into_iter()
        .filter(|op| {
            !(op["op"] == "test"
                && op["value"].is_null()
                && op["path"]
                    .as_str()
                    .is_some_and(|p| doc.pointer(p).is_none()))
        })
        .collect();
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(doc, &patch).map_err(|e| {
        ApiError::new(
            422,
            "Invalid",
            format!("the server rejected our request due to an error in our request: {e}"),
        )
    })
}

/// Leaf paths of an applied object, as server-side apply owns them: objects recurse, everything
/// else (scalars, lists, empty objects) is one leaf.
fn leaf_paths(v: &Value) -> BTreeSet<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Whether an applied path is owned by an apply to the main resource (`status_only` false) or
/// to `/status`.
fn in_scope(p: &[String], d: &ResourceDef, status_only: bool) -> bool {
    const SYSTEM: [&str; 9] = [
        "name",
        "namespace",
        "resourceVersion",
        "uid",
        "managedFields",
        "creationTimestamp",
        "generation",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ];
    match p.first().map(String::as_str) {
        Some("apiVersion" | "kind") | None => false,
        Some("metadata") => !status_only && p.get(1).is_some_and(|k| !SYSTEM.contains(&k.as_str())),
        Some("status") => status_only || !d.status,
        Some(_) => !status_only,
    }
}

/// `{"f:spec":{"f:x":{}}}` (FieldsV1) from a set of paths.
fn paths_tree(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut node = &mut root;
        for seg in p {
            let entry = node.entry(format!("f:{seg}")).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            node = match entry.as_object_mut() {
                Some(m) => m,
                None => unreachable!("entry was just made an object"),
            };
        }
    }
    Value::Object(root)
}

/// The leaf paths of a FieldsV1 tree.
fn tree_paths(tree: &Value) -> BTreeSet<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        let children: Vec<_> = v
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, c)| k.strip_prefix("f:").map(|k| (k, c)))
            .collect();
        if children.is_empty() {
            if !prefix.is_empty() {
                out.insert(prefix.clone());
            }
            return;
        }
        for (k, c) in children {
            prefix.push(k.to_owned());
            walk(c, prefix, out);
            prefix.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(tree, &mut Vec::new(), &mut out);
    out
}

fn managed_entry(
    manager: &str,
    d: &ResourceDef,
    version: &str,
    subresource: Option<&str>,
    fields: &BTreeSet<Vec<String>>,
) -> Value {
    let mut e = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": d.api_version(version),
        "time": now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": paths_tree(fields),
    });
    if let Some(s) = subresource {
        e["subresource"] = json!(s);
    }
    e
}

fn pointer<'a>(v: &'a Value, p: &[String]) -> Option<&'a Value> {
    p.iter().try_fold(v, |v, seg| v.get(seg))
}

fn set_pointer(v: &mut Value, p: &[String], value: Value) {
    let mut node = v;
    for seg in p {
        if !node.is_object() {
            *node = json!({});
        }
        node = &mut node[seg.as_str()];
    }
    *node = value;
}

fn remove_pointer(v: &mut Value, p: &[String]) {
    let Some((last, parent)) = p.split_last() else {
        return;
    };
    let mut node = v;
    for seg in parent {
        match node.get_mut(seg) {
            Some(n) => node = n,
            None => return,
        }
    }
    if let Some(m) = node.as_object_mut() {
        m.remove(last);
    }
}

/// RFC 3339 UTC time with second precision, as Kubernetes writes timestamps.
pub(crate) fn now() -> String {
    let t = time::OffsetDateTime::now_utc();
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn uid(n: u64) -> String {
    format!("7e577e57-0000-4000-8000-{n:012x}")
}

/// Five characters from `[a-z0-9]` for generateName, derived from a counter.
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_paths_round_trip_through_a_fields_v1_tree() {
        let v = json!({"spec": {"a": 1, "b": {"c": [1, 2]}, "e": {}}, "metadata": {"labels": {"x": "y"}}});
        let paths = leaf_paths(&v);
        assert_eq!(paths.len(), 4);
        let tree = paths_tree(&paths);
        assert_eq!(tree["f:spec"]["f:b"]["f:c"], json!({}));
        assert_eq!(tree_paths(&tree), paths);
    }

    #[test]
    fn json_patch_test_of_null_passes_on_a_missing_path() {
        let mut doc = json!({"metadata": {}});
        apply_json_patch(
            &mut doc,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": null},
                {"op": "add", "path": "/metadata/finalizers", "value": ["f"]},
            ]),
        )
        .expect("patch");
        assert_eq!(doc["metadata"]["finalizers"], json!(["f"]));
        let err = apply_json_patch(
            &mut doc,
            json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "g"}]),
        )
        .expect_err("failed test");
        assert_eq!(err.code, 422);
    }

    #[test]
    fn generated_suffixes_are_five_distinct_lowercase_characters() {
        let a = suffix(1);
        assert_eq!(a.len(), 5);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_ne!(a, suffix(2));
    }

    #[test]
    fn crds_are_parsed_with_scope_versions_and_status() {
        let crd = json!({
            "kind": "CustomResourceDefinition",
            "spec": {
                "group": "g.test", "scope": "Cluster",
                "names": {"plural": "things", "kind": "Thing"},
                "versions": [
                    {"name": "v1beta1", "served": true, "storage": false},
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}},
                    {"name": "v0", "served": false, "storage": false},
                ],
            },
        });
        let d = ResourceDef::from_crd(&crd).expect("parse");
        assert_eq!(d.versions, ["v1", "v1beta1"]);
        assert!(d.status && !d.namespaced);
        assert_eq!(d.singular, "thing");
        assert!(ResourceDef::from_crd(&json!({"kind": "ConfigMap"})).is_err());
    }
}
