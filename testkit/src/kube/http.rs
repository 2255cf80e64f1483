//! The in-memory API's HTTP surface: path parsing, discovery documents, verbs, and watch streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::store::{Event, Msg, ResourceDef, WriteMode, key_of, reason_for};
use super::{ApiError, Shared, lock};

/// Default watch length when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Clone)]
struct Ctx {
    state: Shared,
    addr: SocketAddr,
}

pub(crate) fn router(state: Shared, addr: SocketAddr) -> Router {
    Router::new()
        .fallback(handle)
        .with_state(Ctx { state, addr })
}

fn json_response(code: u16, body: &Value) -> Response {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.status())
    }
}

/// A parsed resource path.
struct Target {
    def: usize,
    version: String,
    /// `None`: all namespaces (or cluster-scoped).
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

async fn handle(
    State(ctx): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    let path = uri.path().trim_end_matches('/');
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if method == Method::GET
        && let Some(doc) = discovery(&ctx, &segs)
    {
        return doc;
    }
    let target = match parse_target(&ctx, &segs) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    match serve(&ctx, &method, target, &query, &headers, &body) {
        Ok(Reply::Object(code, v)) => json_response(code, &v),
        Ok(Reply::Watch(w)) => w,
        Err(e) => e.into_response(),
    }
}

enum Reply {
    Object(u16, Value),
    Watch(Response),
}

fn parse_target(ctx: &Ctx, segs: &[&str]) -> Result<Target, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            format!(
                "the server could not find the requested resource ({})",
                segs.join("/")
            ),
        )
    };
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] => (Some((*ns).to_owned()), {
            let mut r = vec![*plural];
            r.extend_from_slice(rest);
            r
        }),
        _ => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some((*n).to_owned()), None),
        [p, n, s] => (*p, Some((*n).to_owned()), Some(*s)),
        _ => return Err(not_found()),
    };
    let store = lock(&ctx.state);
    let def = store.find(group, version, plural).ok_or_else(not_found)?;
    let d = &store.defs[def];
    let status = match sub {
        None => false,
        Some("status") if d.status => true,
        Some(_) => return Err(not_found()),
    };
    if namespace.is_some() && !d.namespaced {
        return Err(not_found());
    }
    if namespace.is_none() && d.namespaced && name.is_some() {
        return Err(not_found());
    }
    Ok(Target {
        def,
        version: version.to_owned(),
        namespace,
        name,
        status,
    })
}

fn serve(
    ctx: &Ctx,
    method: &Method,
    t: Target,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let mut store = lock(&ctx.state);
    let d = store.defs[t.def].clone();
    let ns = t.namespace.clone().unwrap_or_default();
    let meta_only = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    let out = |v: Value| shape(v, &d, &t.version, meta_only);
    let (list_kind, list_api_version) = if meta_only {
        (
            "PartialObjectMetadataList".to_owned(),
            "meta.k8s.io/v1".to_owned(),
        )
    } else {
        (format!("{}List", d.kind), d.api_version(&t.version))
    };
    let is_write = !matches!(*method, Method::GET | Method::HEAD);
    if is_write {
        if d.namespaced && t.namespace.is_none() {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "writes need a namespaced path",
            ));
        }
        if query.contains_key("dryRun") {
            return Err(ApiError::bad_request(
                "dryRun is not supported by the in-memory API",
            ));
        }
        store.take_fault(t.def, t.status)?;
    }
    let parse_body = || -> Result<Value, ApiError> {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    };
    match (method.clone(), t.name.as_deref()) {
        (Method::GET, None) => {
            let selector = Selector::parse(query)?;
            if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
                drop(store);
                return watch(ctx, &t, &d, selector, query, meta_only).map(Reply::Watch);
            }
            let items: Vec<Value> = store
                .list(t.def, t.namespace.as_deref())
                .into_iter()
                .filter(|o| selector.matches(o))
                .map(out)
                .collect();
            Ok(Reply::Object(
                200,
                json!({
                    "kind": list_kind,
                    "apiVersion": list_api_version,
                    "metadata": {"resourceVersion": store.resource_version().to_string()},
                    "items": items,
                }),
            ))
        }
        (Method::GET, Some(name)) => Ok(Reply::Object(200, out(store.get(t.def, &ns, name)?))),
        (Method::POST, None) if !t.status => {
            let v = store.create(t.def, &ns, parse_body()?, &t.version, None)?;
            Ok(Reply::Object(201, out(v)))
        }
        (Method::PUT, Some(name)) => {
            let mode = WriteMode {
                status_only: t.status,
                require_rv: true,
            };
            let mut v = parse_body()?;
            if let Some(av) = v["apiVersion"].as_str()
                && av != d.api_version(&t.version)
            {
                return Err(ApiError::bad_request(format!(
                    "apiVersion {av} does not match the URL's {}",
                    d.api_version(&t.version)
                )));
            }
            if v["kind"].as_str().is_some_and(|k| k != d.kind) {
                return Err(ApiError::bad_request(format!("kind is not {}", d.kind)));
            }
            v["apiVersion"] = json!(d.api_version(&d.versions[0]));
            let v = store.update(t.def, &ns, name, v, mode)?;
            Ok(Reply::Object(200, out(v)))
        }
        (Method::PATCH, Some(name)) => {
            let content_type = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let force = query.get("force").is_some_and(|f| f == "true");
            let existed = store.get(t.def, &ns, name).is_ok();
            let v = store.patch(
                t.def,
                &ns,
                name,
                content_type,
                body,
                t.status,
                query.get("fieldManager").map(String::as_str),
                force,
                &t.version,
            )?;
            Ok(Reply::Object(if existed { 200 } else { 201 }, out(v)))
        }
        (Method::DELETE, Some(name)) if !t.status => {
            let v = store.delete(t.def, &ns, name)?;
            if store.get(t.def, &ns, name).is_ok() {
                // Finalizers hold it: the API server answers with the object.
                return Ok(Reply::Object(200, out(v)));
            }
            // Deleted at once: a success Status, which kube returns as `Either::Right`.
            Ok(Reply::Object(
                200,
                json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": name,
                        "group": d.group,
                        "kind": d.plural,
                        "uid": v["metadata"]["uid"],
                    },
                }),
            ))
        }
        (Method::DELETE, None) if !t.status => {
            let selector = Selector::parse(query)?;
            let victims: Vec<Value> = store
                .list(t.def, t.namespace.as_deref())
                .into_iter()
                .filter(|o| selector.matches(o))
                .collect();
            let mut items = Vec::new();
            for o in victims {
                let (ns, name) = key_of(&o);
                items.push(out(store.delete(t.def, &ns, &name)?));
            }
            Ok(Reply::Object(
                200,
                json!({
                    "kind": list_kind,
                    "apiVersion": list_api_version,
                    "metadata": {"resourceVersion": store.resource_version().to_string()},
                    "items": items,
                }),
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on this path"),
        )),
    }
}

/// Serves the object under the version the URL names.
fn with_version(mut v: Value, d: &ResourceDef, version: &str) -> Value {
    v["apiVersion"] = json!(d.api_version(version));
    v
}

/// The object as the client asked for it: whole, or as `PartialObjectMetadata` (kube's
/// metadata API: `Api::get_metadata`, `list_metadata`, `metadata_watcher`).
fn shape(v: Value, d: &ResourceDef, version: &str, meta_only: bool) -> Value {
    if meta_only {
        json!({
            "apiVersion": "meta.k8s.io/v1",
            "kind": "PartialObjectMetadata",
            "metadata": v["metadata"],
        })
    } else {
        with_version(v, d, version)
    }
}

// === selectors ===

#[derive(Debug, Default)]
struct Selector {
    /// (key, Some(value), equal) | (key, None, exists)
    labels: Vec<(String, Option<String>, bool)>,
    /// (field path, value, equal)
    fields: Vec<(String, String, bool)>,
}

impl Selector {
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        let mut s = Self::default();
        for term in query
            .get("labelSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if term.contains(" in ") || term.contains(" notin ") || term.contains('(') {
                return Err(ApiError::bad_request(format!(
                    "set-based label selectors are not supported by the in-memory API: {term}"
                )));
            }
            let parsed = if let Some((k, v)) = term.split_once("!=") {
                (k.trim(), Some(v.trim()), false)
            } else if let Some((k, v)) = term.split_once("==") {
                (k.trim(), Some(v.trim()), true)
            } else if let Some((k, v)) = term.split_once('=') {
                (k.trim(), Some(v.trim()), true)
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim(), None, false)
            } else {
                (term, None, true)
            };
            s.labels
                .push((parsed.0.to_owned(), parsed.1.map(str::to_owned), parsed.2));
        }
        for term in query
            .get("fieldSelector")
            .map(String::as_str)
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            let (k, v, eq) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, v, true)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, v, true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {term}"
                )));
            };
            if k != "metadata.name" && k != "metadata.namespace" {
                return Err(ApiError::bad_request(format!(
                    "field label not supported by the in-memory API: {k}"
                )));
            }
            s.fields.push((k.to_owned(), v.to_owned(), eq));
        }
        Ok(s)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = &obj["metadata"]["labels"];
        let labels_ok = self.labels.iter().all(|(k, v, eq)| {
            let actual = labels.get(k).and_then(Value::as_str);
            match v {
                Some(v) => (actual == Some(v.as_str())) == *eq,
                None => actual.is_some() == *eq,
            }
        });
        let fields_ok = self.fields.iter().all(|(k, v, eq)| {
            let field = k.trim_start_matches("metadata.");
            (obj["metadata"][field].as_str().unwrap_or("") == v) == *eq
        });
        labels_ok && fields_ok
    }
}

// === watch ===

fn watch(
    ctx: &Ctx,
    t: &Target,
    d: &ResourceDef,
    selector: Selector,
    query: &HashMap<String, String>,
    meta_only: bool,
) -> Result<Response, ApiError> {
    let initial = query.get("sendInitialEvents").is_some_and(|v| v == "true");
    let rv = match query.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => None,
        Some(_) if initial => None,
        Some(n) => Some(
            n.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion: {n}")))?,
        ),
    };
    let bookmarks = query
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true");
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let store = lock(&ctx.state);
    let started = store.watch_from(t.def, rv);
    let current = store.resource_version();
    drop(store);
    let filter = WatchFilter {
        def: t.def,
        namespace: t.namespace.clone(),
        selector,
        d: d.clone(),
        version: t.version.clone(),
        meta_only,
    };
    match started {
        Err(e) => {
            let line = event_line("ERROR", &e.status());
            tokio::spawn(async move {
                let _ = tx.send(line).await;
            });
        }
        Ok((replay, live)) => {
            tokio::spawn(run_watch(
                filter,
                replay,
                live,
                tx,
                WatchOpts {
                    bookmark: bookmarks.then_some((current, rv.is_none())),
                    timeout,
                },
            ));
        }
    }
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

struct WatchFilter {
    def: usize,
    namespace: Option<String>,
    selector: Selector,
    d: ResourceDef,
    version: String,
    meta_only: bool,
}

impl WatchFilter {
    fn line(&self, e: &Event) -> Option<Bytes> {
        if e.def != self.def {
            return None;
        }
        let (ns, _) = key_of(&e.object);
        if self.namespace.as_ref().is_some_and(|n| *n != ns) || !self.selector.matches(&e.object) {
            return None;
        }
        let object = shape(e.object.clone(), &self.d, &self.version, self.meta_only);
        Some(event_line(e.kind.as_str(), &object))
    }
}

struct WatchOpts {
    /// Send a BOOKMARK at this resourceVersion after the replay (`true`: after initial events).
    bookmark: Option<(u64, bool)>,
    timeout: Duration,
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

async fn run_watch(
    filter: WatchFilter,
    replay: Vec<Arc<Event>>,
    mut live: broadcast::Receiver<Msg>,
    tx: mpsc::Sender<Bytes>,
    opts: WatchOpts,
) {
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut last = 0;
    for e in &replay {
        last = last.max(e.rv);
        if let Some(line) = filter.line(e)
            && tx.send(line).await.is_err()
        {
            return;
        }
    }
    if let Some((rv, initial_end)) = opts.bookmark {
        let mut meta = json!({"resourceVersion": rv.max(last).to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let bookmark = json!({
            "kind": filter.d.kind,
            "apiVersion": filter.d.api_version(&filter.version),
            "metadata": meta,
        });
        if tx.send(event_line("BOOKMARK", &bookmark)).await.is_err() {
            return;
        }
    }
    loop {
        let msg = tokio::select! {
            m = live.recv() => m,
            () = tokio::time::sleep_until(deadline) => return,
            () = tx.closed() => return,
        };
        match msg {
            Ok(Msg::Event(e)) => {
                // The replay was taken under the same lock as the subscription: no overlap.
                if let Some(line) = filter.line(&e)
                    && tx.send(line).await.is_err()
                {
                    return;
                }
            }
            Ok(Msg::DropAll) | Err(broadcast::error::RecvError::Closed) => return,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                let status = super::ApiError::new(
                    410,
                    reason_for(410),
                    "watch fell behind the in-memory API's event buffer; re-list",
                )
                .status();
                let _ = tx.send(event_line("ERROR", &status)).await;
                return;
            }
        }
    }
}

// === discovery ===

fn discovery(ctx: &Ctx, segs: &[&str]) -> Option<Response> {
    let store = lock(&ctx.state);
    let defs = &store.defs;
    let doc = match segs {
        ["version"] => json!({
            "major": "1", "minor": "34", "gitVersion": "v1.34.0-testkit-in-memory",
            "gitCommit": "", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "none", "compiler": "none", "platform": "linux/amd64",
        }),
        ["api"] => json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ctx.addr.to_string()}],
        }),
        ["api", "v1"] => resource_list(defs, "", "v1"),
        ["apis"] => {
            let mut groups: Vec<&str> = Vec::new();
            for d in defs.iter().filter(|d| !d.group.is_empty()) {
                if !groups.contains(&d.group.as_str()) {
                    groups.push(&d.group);
                }
            }
            let groups: Vec<Value> = groups.iter().map(|g| api_group(defs, g)).collect();
            json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        }
        ["apis", g] if defs.iter().any(|d| d.group == *g) => {
            let mut v = api_group(defs, g);
            v["kind"] = json!("APIGroup");
            v["apiVersion"] = json!("v1");
            v
        }
        ["apis", g, v]
            if defs
                .iter()
                .any(|d| d.group == *g && d.versions.iter().any(|x| x == v)) =>
        {
            resource_list(defs, g, v)
        }
        _ => return None,
    };
    Some(json_response(200, &doc))
}

fn api_group(defs: &[ResourceDef], group: &str) -> Value {
    let mut versions: Vec<&str> = Vec::new();
    let mut preferred = "";
    for d in defs.iter().filter(|d| d.group == group) {
        if preferred.is_empty() {
            preferred = &d.versions[0];
        }
        for v in &d.versions {
            if !versions.contains(&v.as_str()) {
                versions.push(v);
            }
        }
    }
    let gv = |v: &str| json!({"groupVersion": format!("{group}/{v}"), "version": v});
    json!({
        "name": group,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(preferred),
    })
}

fn resource_list(defs: &[ResourceDef], group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for d in defs
        .iter()
        .filter(|d| d.group == group && d.versions.iter().any(|v| v == version))
    {
        resources.push(json!({
            "name": d.plural,
            "singularName": d.singular,
            "namespaced": d.namespaced,
            "kind": d.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": d.short_names,
        }));
        if d.status {
            resources.push(json!({
                "name": format!("{}/status", d.plural),
                "singularName": "",
                "namespaced": d.namespaced,
                "kind": d.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
    }
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
        "resources": resources,
    })
}
