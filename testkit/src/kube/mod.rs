//! [`KubeApi`]: the in-memory API, an in-process Kubernetes API server substitute that kube-rs
//! clients talk to over plain HTTP on a loopback port.
//!
//! No Kubernetes API server can run on these machines, so kube glue is tested against this. It is
//! **not a cluster**: there are no controllers, no scheduler, no admission, no RBAC, no
//! conversion, no garbage collection. Notes and claims call it "the in-memory API".
//!
//! [`KubeApi::start`] loads CustomResourceDefinitions (bundled copies of the upstream CRDs live in
//! `testkit/crds/`, see [`Crd::bundled`]), binds `127.0.0.1:0`, serves an axum router on the
//! test's runtime, and hands out `kube::Client`s built from a `kube::Config` whose cluster URL
//! is [`KubeApi::url`] (no auth, no TLS). Dropping it closes every watch and stops the server.
//!
//! # What is modelled
//!
//! - **Kinds**: every served version of each loaded CRD (namespaced or cluster-scoped, `status`
//!   subresource when the storage version declares it), plus built-ins `v1` Namespace, Secret,
//!   ConfigMap, Event, `coordination.k8s.io/v1` Lease and `events.k8s.io/v1` Event. Built-ins are
//!   stored as plain JSON (no defaulting, no type-specific rules).
//! - **Discovery**: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/{group}`,
//!   `/apis/{group}/{version}` (the classic, non-aggregated documents `kube::Discovery::run`
//!   reads).
//! - **Paths**: namespaced, cluster-scoped and all-namespaces collections; items; `/status`.
//! - **get / list**: `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`; set-based forms are a
//!   400), `fieldSelector` on `metadata.name` / `metadata.namespace` (`=`, `==`, `!=`). `limit`,
//!   `continue`, `resourceVersion` and `resourceVersionMatch` are accepted and ignored: a list
//!   always returns everything at the current resourceVersion, without a continue token.
//! - **create**: 409 AlreadyExists, `generateName`; sets uid, creationTimestamp,
//!   `generation: 1`; drops `.status` when the status subresource exists.
//! - **replace** (PUT): 409 Conflict when `metadata.resourceVersion` is stale; custom resources
//!   need a resourceVersion (422 without), built-ins allow unconditional replace; 404 when absent.
//! - **patch**: JSON merge patch; strategic merge patch is treated as JSON merge patch (lists are
//!   replaced, no patch directives); JSON patch (RFC 6902, where a `test` of `null` on a missing
//!   path passes, as in the API server). A `metadata.resourceVersion` in the patch is a
//!   precondition (409 when stale).
//! - **server-side apply** (`application/apply-patch+yaml`, `fieldManager` required, `force`):
//!   see below.
//! - **status subresource**: writes to `/status` change only `.status` (and managedFields);
//!   writes to the main resource keep the stored `.status` when the subresource exists.
//! - **generation** bumps when anything outside `metadata` changes (outside `metadata` and
//!   `status` when the status subresource exists).
//! - **no-op writes** (the result equals the stored object) store nothing: no new
//!   resourceVersion, no watch event — like the API server, so a controller that writes the same
//!   status again does not wake itself up.
//! - **delete**: without finalizers the object is removed (DELETED event) and the answer is a
//!   `Status` with `status: Success` (kube: `Either::Right`). With finalizers,
//!   `deletionTimestamp` is set (MODIFIED) and the object stays until a write empties
//!   `metadata.finalizers`, which removes it (DELETED); the answer to such a delete is the
//!   object (kube: `Either::Left`). `deletecollection` deletes what the selectors match. Delete
//!   options (propagation, grace period, preconditions) are ignored; there is no garbage
//!   collection of owned objects.
//! - **resourceVersion**: one global counter, strictly increasing on every stored change.
//! - **watch** (`watch=true`): newline-delimited `{"type","object"}` events after
//!   `resourceVersion=N`; without N (or with `0`, or `sendInitialEvents=true`) it first sends the
//!   current objects as ADDED. A bounded history (default [`DEFAULT_HISTORY`] events) is kept; an
//!   N older than it gets an `ERROR` event with a 410 Expired Status (so does a watch that falls
//!   more than 16,384 events behind the live broadcast). With
//!   `allowWatchBookmarks=true` a BOOKMARK at the current resourceVersion follows the replay
//!   (annotated `k8s.io/initial-events-end` after initial events). `timeoutSeconds` ends the
//!   stream (default 1800 s). Selectors are applied per event: an object that stops matching is
//!   simply no longer sent (the API server would send DELETED).
//! - **errors**: `kind: Status` bodies with `reason` and `code`, so kube-rs returns
//!   `kube::Error::Api`.
//! - **schema check** of custom resources, switchable (below).
//! - **faults**: [`KubeApi::fail_next_writes`], [`KubeApi::drop_watches`],
//!   [`KubeApi::expire_watch_history`].
//!
//! # Server-side apply, simplified
//!
//! - The applied object's *leaf paths* are its fields: objects recurse; scalars, lists and empty
//!   objects are leaves. **Lists are atomic**: an applied list replaces the stored one whole
//!   (no merging by `x-kubernetes-list-map-keys`, so two managers cannot share `conditions`).
//! - The applied leaves are written into the stored object (a `null` leaf removes the field).
//!   Leaves this manager applied last time and omits now are removed unless another applier
//!   owns them.
//! - `metadata.managedFields` holds one `operation: Apply` entry per (manager, subresource) with
//!   a FieldsV1 tree of those leaves; its `time` changes only when the field set does.
//!   **Update operations (PUT, merge/JSON patch) record no managedFields**, so they never own
//!   fields nor conflict.
//! - A conflict is another applier owning the same leaf (or a parent/child of it) whose stored
//!   value differs from the applied one: 409 Conflict listing the fields; with `force=true` the
//!   fields move to this manager.
//! - Applying to a missing object creates it (to `/status` it is a 404). An apply to the main
//!   resource ignores `.status` when the status subresource exists.
//!
//! # Schema check (switchable)
//!
//! On by default, off with [`KubeApi::set_schema_validation`]: every create and every stored
//! change of a custom resource is checked against the `openAPIV3Schema` of its CRD version
//! (`metadata` excluded): `type` (object, array, string, integer, number, boolean), `required`,
//! `enum`, `properties`, `additionalProperties` as a schema, `items`,
//! `x-kubernetes-int-or-string`, `x-kubernetes-preserve-unknown-fields`. A failure is a 422
//! Invalid listing each bad path. **Not checked**: formats, patterns, lengths, bounds,
//! `oneOf`/`anyOf`/`allOf`/`not`, CEL `x-kubernetes-validations`, list uniqueness. Unknown fields
//! are kept (the API server would prune them); `null` is accepted anywhere. Written here (a
//! short structural walk) rather than with a JSON Schema crate, because CRD schemas are
//! OpenAPI-flavoured (`nullable`, `x-kubernetes-*`).
//!
//! # Not modelled
//!
//! Defaulting and pruning (objects are stored as sent), version conversion
//! (an object is served under whichever version the URL names, with only `apiVersion`
//! rewritten), admission, RBAC, namespaces as a precondition (any namespace exists), owner
//! references and GC, pagination, watch-cache semantics of `resourceVersionMatch`,
//! websockets/exec/logs, Protobuf, tables. `dryRun` is refused with a 400 rather than
//! ignored, so a dry run never changes the store by accident.

mod http;
mod store;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::{HarnessError, Result};
use store::{Msg, ResourceDef, Store};

/// How many events the watch history keeps by default before older resourceVersions become
/// 410 Gone.
pub const DEFAULT_HISTORY: usize = 10_000;

/// A CustomResourceDefinition to load: a file (one or more YAML documents) or YAML text.
#[derive(Debug, Clone)]
pub enum Crd {
    /// A YAML file holding one or more CRDs.
    Path(PathBuf),
    /// YAML text holding one or more CRDs (e.g. a `crdgen` output).
    Yaml(String),
}

impl Crd {
    /// A CRD bundled with testkit in `testkit/crds/`, by file name, e.g.
    /// `Crd::bundled("continuum.yaml")` or `"helm.toolkit.fluxcd.io_helmreleases.yaml"`.
    /// [`Crd::BUNDLED`] lists them.
    pub fn bundled(file: &str) -> Self {
        Self::Path(bundled_dir().join(file))
    }

    /// The bundled CRD files (copies of the public upstream CRDs; provenance in
    /// `testkit/crds/README.md`).
    pub const BUNDLED: [&'static str; 8] = [
        "continuum.yaml",
        "cnpgpair.yaml",
        "pdm.yaml",
        "postgresql.cnpg.io_clusters.yaml",
        "gateway.networking.k8s.io_httproutes.yaml",
        "helm.toolkit.fluxcd.io_helmreleases.yaml",
        "source.toolkit.fluxcd.io_helmcharts.yaml",
        "source.toolkit.fluxcd.io_helmrepositories.yaml",
    ];

    /// Every bundled CRD.
    pub fn all_bundled() -> Vec<Self> {
        Self::BUNDLED.iter().map(|f| Self::bundled(f)).collect()
    }

    /// The CRD documents, as JSON (for a real API server).
    pub fn documents(&self) -> Result<Vec<Value>> {
        let (text, origin) = self.text()?;
        let mut out = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| HarnessError::Parse {
                    context: format!("CRD from {origin}"),
                    detail: e.to_string(),
                })?;
            if !v.is_null() {
                out.push(v);
            }
        }
        Ok(out)
    }

    fn text(&self) -> Result<(String, String)> {
        Ok(match self {
            Self::Path(p) => (
                std::fs::read_to_string(p)
                    .map_err(HarnessError::io(format!("reading CRD {}", p.display())))?,
                p.display().to_string(),
            ),
            Self::Yaml(y) => (y.clone(), "inline YAML".to_owned()),
        })
    }

    fn load(&self) -> Result<Vec<ResourceDef>> {
        let (text, origin) = self.text()?;
        let parse = |detail: String| HarnessError::Parse {
            context: format!("CRD from {origin}"),
            detail,
        };
        let mut defs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: Value =
                serde::Deserialize::deserialize(doc).map_err(|e| parse(e.to_string()))?;
            if v.is_null() {
                continue;
            }
            defs.push(ResourceDef::from_crd(&v).map_err(parse)?);
        }
        Ok(defs)
    }
}

/// The directory of the bundled CRDs.
pub fn bundled_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crds")
}

/// Shared state of one in-memory API.
pub(crate) type Shared = Arc<Mutex<Store>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, Store> {
    // A poisoned lock only means a handler panicked; the store is still consistent per write.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running in-memory API on a loopback port, owned by the test. Drop stops it.
#[derive(Debug)]
pub struct KubeApi {
    addr: SocketAddr,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl KubeApi {
    /// Loads `crds` and starts serving on `127.0.0.1` with a fresh, empty store and a watch
    /// history of [`DEFAULT_HISTORY`] events. Must be called inside a tokio runtime.
    pub async fn start(crds: &[Crd]) -> Result<Self> {
        Self::start_with_history(crds, DEFAULT_HISTORY).await
    }

    /// Like [`KubeApi::start`], keeping only `history` events for watches (a small number makes
    /// 410 Gone easy to provoke).
    pub async fn start_with_history(crds: &[Crd], history: usize) -> Result<Self> {
        let mut defs = ResourceDef::builtins();
        for crd in crds {
            for def in crd.load()? {
                if defs
                    .iter()
                    .any(|d| d.group == def.group && d.plural == def.plural)
                {
                    return Err(HarnessError::State {
                        context: "loading CRDs".into(),
                        detail: format!("{}.{} is defined twice", def.plural, def.group),
                    });
                }
                defs.push(def);
            }
        }
        let state: Shared = Arc::new(Mutex::new(Store::new(defs, history.max(1))));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(HarnessError::io("binding the in-memory API's port"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("reading the in-memory API's address"))?;
        let router = http::router(state.clone(), addr);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            // Graceful: open connections (kube's pooled keep-alives too) are closed, so no client
            // keeps talking to a dropped in-memory API.
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A new client for the in-memory API, default namespace `default`.
    ///
    /// Installs rustls' `ring` provider as the process default first when none is installed
    /// (the plain-HTTP client is still built with kube's rustls connector, which needs one).
    pub fn client(&self) -> Result<::kube::Client> {
        // Err only means a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let uri: axum::http::Uri =
            self.url()
                .parse()
                .map_err(|e: axum::http::uri::InvalidUri| HarnessError::Parse {
                    context: "the in-memory API's URL".into(),
                    detail: e.to_string(),
                })?;
        let config = ::kube::Config::new(uri);
        ::kube::Client::try_from(config).map_err(|e| HarnessError::State {
            context: "building a kube client for the in-memory API".into(),
            detail: e.to_string(),
        })
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        lock(&self.state).resource_version()
    }

    /// The stored object `plural`/`name` in `namespace` (`""` for cluster-scoped), read without
    /// a client (for assertions). The first loaded resource with that plural is used.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let store = lock(&self.state);
        let def = store.find_plural(plural)?;
        store.get(def, namespace, name).ok()
    }

    /// Makes the next `n` writes (create, replace, patch, apply, delete) of `resource` fail with
    /// HTTP `code` and a matching Kubernetes `Status`. `resource` is a plural (`"helmreleases"`:
    /// main resource and `/status`, in any group) or `"plural/status"` (only `/status` writes).
    /// Faults queue up in the order they were added.
    ///
    /// kube's client retries 429, 503 and 504 by itself (`Config::default_retry`), so use codes
    /// such as 500, 409 or 422 to make a write fail as seen by the caller.
    pub fn fail_next_writes(&self, resource: &str, n: usize, code: u16) {
        lock(&self.state).add_fault(resource, n, code);
    }

    /// Turns the schema check on or off (on by default). When on, every create and every
    /// stored change of a custom resource is checked against its CRD's `openAPIV3Schema` for
    /// types, `required`, `enum`, `x-kubernetes-int-or-string` (see the module docs); a failure
    /// is a 422 Invalid naming each path. Built-in kinds are never checked.
    pub fn set_schema_validation(&self, on: bool) {
        lock(&self.state).validate = on;
    }

    /// Ends every open watch stream now (clients see the stream close and re-watch from their
    /// last resourceVersion).
    pub fn drop_watches(&self) {
        let _ = lock(&self.state).tx.send(Msg::DropAll);
    }

    /// Forgets the watch history and ends every open watch: a re-watch from any earlier
    /// resourceVersion gets 410 Gone, so clients must re-list.
    pub fn expire_watch_history(&self) {
        let store = &mut *lock(&self.state);
        store.expire_history();
        let _ = store.tx.send(Msg::DropAll);
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        // Watch streams end first, then the server shuts down gracefully in the background.
        let _ = lock(&self.state).tx.send(Msg::DropAll);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

// === ApiError ===

/// An error answered as a Kubernetes `Status` body.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    pub(crate) code: u16,
    pub(crate) reason: &'static str,
    pub(crate) message: String,
    pub(crate) details: Option<Value>,
}

impl ApiError {
    pub(crate) fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message)
    }

    pub(crate) fn details(mut self, d: &ResourceDef, name: &str) -> Self {
        self.details = Some(json!({"name": name, "group": d.group, "kind": d.plural}));
        self
    }

    /// The `Status` object.
    pub(crate) fn status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}
