//! The kube-rs `Controller` glue: one controller per region (`--region`), watching Continuum
//! objects in its own cluster.
//!
//! Per object and reconcile, the same round as the standalone runner
//! ([`crate::standalone`]): read the CNPG Cluster and the HTTPRoute → [`crate::observe`] →
//! (witness read when this region has no authority; peer probes) → [`decide::decide`] →
//! [`Executor`] (the operation persisted in `status.operation` through [`StatusStore`] before
//! every external write) → status summary (server-side apply) → events. Nothing is decided
//! here.
//!
//! - What only lives in memory between reconciles (last witness answer, last grant, probe
//!   history, last state change, the witness client's generation) is kept per object in the
//!   [`Context`]. A restarted controller starts with none of it, reads `status.operation` and
//!   the witness, and the core resumes the operation from its persisted step (every step is
//!   idempotent and carries the epoch).
//! - Requeue: at once after a plan changed something, else at the next renew (authority) or
//!   when the lease the peer holds may expire, at most every `tick`.
//! - Finalizer [`super::FINALIZER`]: on delete, release the lease if this region holds it and
//!   leave the data plane as it is.
//! - `error_policy`: log, count, requeue with exponential backoff per object (1 s … 60 s).
//! - Each plan step is executed as its own one-step plan through the same executor, so each
//!   step's duration is measured (`continuum_step_duration_seconds{step}`); the stop rules are
//!   the executor's (first failure stops, except `drain`/`fence`).
//! - DNS from the spec ([`super::dns`]: PDM or PowerDNS through `pdm-client`; off without
//!   `spec.dns`); audit: NATS JetStream through [`LazyAudit`] when `--nats-url`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use super::cnpg::{CnpgDatabase, LagSource, NoLag, PeerCluster, cluster_resource};
use super::httproute::HttpRouteRoutes;
use super::status::{RunReport, StatusStore, stop_name, summarize};
use crate::adapters::postgres::DbObservation;
use crate::adapters::witness::WitnessAdapter;
use crate::crd::{Continuum, ContinuumSpec, ContinuumStatus, Phase};
use crate::decide::{self, LeaseObs, Observed, OpKind, Plan, Spec, Step};
use crate::exec::{Clock, Executor, Memory, Outcome, Ports, Stopped, SystemClock, Timeouts};
use crate::metrics::{Metrics, ObjectLabel};
use crate::observe::{self, ProbeTracker};
use crate::ports::{StateStore, Witness};
use crate::standalone::{LazyAudit, StandaloneDns};

/// Reconcile errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec does not convert (phase `Failed`).
    #[error("invalid spec: {0}")]
    Spec(String),
    /// A Kubernetes call failed.
    #[error("kube: {0}")]
    Kube(#[source] kube::Error),
    /// Adding/removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// Wiring the ports failed (no CNPG Cluster, witness client, …).
    #[error("setup: {0}")]
    Setup(String),
}

impl Error {
    /// Label for `continuum_failures_total{error}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Spec(_) => "spec",
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Setup(_) => "setup",
        }
    }
}

/// Probes of the peer region (each vantage counts once).
pub trait PeerProbe: Send + Sync + std::fmt::Debug {
    /// `(vantage, healthy)` readings for the peer of `region`.
    fn probe<'a>(
        &'a self,
        spec: &'a ContinuumSpec,
        region: &'a str,
        peer_cluster: Option<&'a str>,
    ) -> super::cnpg::BoxFuture<'a, Vec<(String, bool)>>;
}

/// The default probes: `peer-api` (the peer's CNPG Cluster through the peer cluster's API has
/// a ready instance; only with peer access) and `peer-http` (`luaRecord.healthCheck.url`
/// against the peer region's first `lbIPs` address; only when both are set).
#[derive(Clone)]
pub struct KubePeerProbe {
    peer: Option<kube::Client>,
    http: reqwest::Client,
}

impl std::fmt::Debug for KubePeerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KubePeerProbe(peer access: {})", self.peer.is_some())
    }
}

impl KubePeerProbe {
    /// Probes through `peer` (the peer region's API) and HTTP.
    pub fn new(peer: Option<kube::Client>) -> KubePeerProbe {
        KubePeerProbe {
            peer,
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(800))
                .build()
                .unwrap_or_default(),
        }
    }
}

impl PeerProbe for KubePeerProbe {
    fn probe<'a>(
        &'a self,
        spec: &'a ContinuumSpec,
        region: &'a str,
        peer_cluster: Option<&'a str>,
    ) -> super::cnpg::BoxFuture<'a, Vec<(String, bool)>> {
        Box::pin(async move {
            let mut out = Vec::new();
            if let (Some(client), Some(name), Some(pair)) =
                (&self.peer, peer_cluster, spec.cnpg_pair.as_ref())
            {
                let ns = pair
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_owned());
                let api: Api<kube::api::DynamicObject> =
                    Api::namespaced_with(client.clone(), &ns, &cluster_resource());
                let ok = match api.get(name).await {
                    Ok(o) => serde_json::to_value(&o).is_ok_and(|v| {
                        super::cnpg::ClusterView::from_value(&v).ready_instances > 0
                    }),
                    Err(_) => false,
                };
                out.push(("peer-api".to_owned(), ok));
            }
            let url = spec
                .lua_record
                .as_ref()
                .and_then(|l| l.health_check.as_ref())
                .map(|h| h.url.clone());
            let ip = spec
                .regions
                .iter()
                .find(|r| r.name != region)
                .and_then(|r| r.lb_ips.first().cloned());
            if let (Some(url), Some(ip)) = (url, ip)
                && let Ok(mut u) = reqwest::Url::parse(&url)
                && u.set_host(Some(&ip)).is_ok()
            {
                let ok = self
                    .http
                    .get(u)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                out.push(("peer-http".to_owned(), ok));
            }
            out
        })
    }
}

/// The controller's settings (flags + env in `main`).
#[derive(Clone)]
pub struct Settings {
    /// This region.
    pub region: String,
    /// Witness URL when the spec names none (`leaseClient.config.workerURL`/`baseURL`).
    pub witness_url: Option<String>,
    /// Witness bearer token.
    pub witness_token: String,
    /// NATS for the audit stream.
    pub nats_url: Option<String>,
    /// The peer region's API (CNPG demotion token hand-over, `peer-api` probe).
    pub peer: Option<kube::Client>,
    /// Replication numbers (CNPG's status has none).
    pub lag: Arc<dyn LagSource>,
    /// Peer probes.
    pub probes: Arc<dyn PeerProbe>,
    /// How long CNPG may take to settle a demotion/promotion.
    pub cnpg_settle: Duration,
    /// Longest pause between two rounds of one object.
    pub tick: Duration,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("region", &self.region)
            .field("witness_url", &self.witness_url)
            .field("nats_url", &self.nats_url)
            .field("peer", &self.peer.is_some())
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl Settings {
    /// Defaults for `region`: no peer access, no lag source, probes through `peer`.
    pub fn new(region: &str, witness_token: &str) -> Settings {
        Settings {
            region: region.to_owned(),
            witness_url: None,
            witness_token: witness_token.to_owned(),
            nats_url: None,
            peer: None,
            lag: Arc::new(NoLag),
            probes: Arc::new(KubePeerProbe::new(None)),
            cnpg_settle: Duration::from_secs(20),
            tick: Duration::from_secs(5),
        }
    }
}

type KubeExecutor = Executor<
    WitnessAdapter,
    CnpgDatabase,
    StandaloneDns,
    HttpRouteRoutes,
    LazyAudit,
    StatusStore,
    SystemClock,
>;

/// One object's controller memory.
struct ObjectLoop {
    wiring: String,
    exec: KubeExecutor,
    peer_cluster: Option<String>,
    /// Lease, grant and last state change (same memory as the standalone runner).
    mem: Memory,
    probes: ProbeTracker,
    last_conditions: Vec<String>,
    backoff: Duration,
}

impl std::fmt::Debug for ObjectLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ObjectLoop({})", self.wiring)
    }
}

/// Shared state of the controller.
pub struct Context {
    client: kube::Client,
    settings: Settings,
    recorder: Recorder,
    /// Metrics (served by [`crate::metrics::router`]).
    pub metrics: Arc<Metrics>,
    objects: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<ObjectLoop>>>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({})", self.settings.region)
    }
}

impl Context {
    /// A context for `client` (this region's cluster).
    pub fn new(client: kube::Client, settings: Settings, metrics: Arc<Metrics>) -> Arc<Context> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: super::FIELD_MANAGER.to_owned(),
                instance: Some(settings.region.clone()),
            },
        );
        Arc::new(Context {
            client,
            settings,
            recorder,
            metrics,
            objects: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn object(&self, key: &str) -> Option<Arc<tokio::sync::Mutex<ObjectLoop>>> {
        self.objects.lock().await.get(key).cloned()
    }

    async fn publish(&self, obj: &Continuum, type_: EventType, reason: &str, note: String) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::debug!(error = %e, "event not published");
        }
    }
}

fn key(obj: &Continuum) -> String {
    format!(
        "{}/{}",
        obj.namespace().unwrap_or_else(|| "default".to_owned()),
        obj.name_any()
    )
}

/// Finds this region's CNPG Cluster of the pair: labelled `catalyst.openova.io/cnpg-pair`;
/// with several, the one labelled `dr.openova.io/region=<region>`.
async fn local_cluster(
    client: &kube::Client,
    ns: &str,
    pair: &str,
    region: &str,
) -> Result<String, Error> {
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &cluster_resource());
    let list = api
        .list(&ListParams::default().labels(&format!("catalyst.openova.io/cnpg-pair={pair}")))
        .await
        .map_err(Error::Kube)?;
    let names: Vec<(String, Option<String>)> = list
        .items
        .iter()
        .map(|o| {
            (
                o.name_any(),
                o.labels().get("dr.openova.io/region").cloned(),
            )
        })
        .collect();
    match names.as_slice() {
        [] => Err(Error::Setup(format!(
            "no CNPG Cluster labelled catalyst.openova.io/cnpg-pair={pair} in {ns}"
        ))),
        [(one, _)] => Ok(one.clone()),
        many => many
            .iter()
            .find(|(_, r)| r.as_deref() == Some(region))
            .map(|(n, _)| n.clone())
            .ok_or_else(|| {
                Error::Setup(format!(
                    "several Clusters of pair {pair} in {ns}; label this region's with dr.openova.io/region={region}"
                ))
            }),
    }
}

async fn build(ctx: &Context, obj: &Continuum, spec: &Spec) -> Result<ObjectLoop, Error> {
    let s = &ctx.settings;
    let (ns, name) = obj.key();
    let cfg = &obj.spec.lease_client.config;
    let url = cfg
        .worker_url
        .clone()
        .or_else(|| cfg.base_url.clone())
        .or_else(|| s.witness_url.clone())
        .ok_or_else(|| Error::Setup("no witness URL (spec or --witness-url)".to_owned()))?;
    let slot = cfg.slot.clone().unwrap_or_else(|| spec.name.clone());
    let pair = obj.spec.cnpg_pair.as_ref().ok_or_else(|| {
        Error::Setup("spec.cnpgPair is required in the Kubernetes mode".to_owned())
    })?;
    let pair_ns = pair.namespace.clone().unwrap_or_else(|| ns.clone());
    let cluster = local_cluster(&ctx.client, &pair_ns, &pair.name, &s.region).await?;
    let mut db = CnpgDatabase::new(ctx.client.clone(), &pair_ns, &cluster)
        .with_lag(s.lag.clone())
        .with_settle(s.cnpg_settle, Duration::from_millis(100));
    let view = db.view().await.map_err(|e| Error::Setup(e.to_string()))?;
    let peer_cluster = view.source.clone();
    if let (Some(peer), Some(pc)) = (&s.peer, &peer_cluster) {
        db = db.with_peer(Some(PeerCluster {
            api: Api::namespaced_with(peer.clone(), &pair_ns, &cluster_resource()),
            name: pc.clone(),
        }));
    }
    let routes = match &obj.spec.http_route {
        Some(r) => HttpRouteRoutes::new(
            ctx.client.clone(),
            r.namespace.as_deref().unwrap_or(&ns),
            &r.name,
            &s.region,
        ),
        None => HttpRouteRoutes::none(&s.region),
    };
    let token = match &cfg.token_secret_ref {
        Some(r) => secret_value(&ctx.client, &ns, &r.name, &r.key).await?,
        None => s.witness_token.clone(),
    };
    let client = witness_worker::client::WitnessClient::new(
        witness_worker::client::ClientConfig::new(&url, &token),
        slot.clone(),
    )
    .map_err(|e| Error::Setup(format!("witness client: {e}")))?;
    let ports = Ports {
        witness: WitnessAdapter::new(client),
        db,
        dns: super::dns::build(&ctx.client, &ns, &obj.spec).await?,
        routes,
        audit: LazyAudit::new(s.nats_url.clone()),
        store: StatusStore::new(ctx.client.clone(), &ns, &name),
    };
    let timeouts = Timeouts::for_timing(&spec.timing);
    let exec = Executor::new(ports, &s.region, spec.timing, timeouts, SystemClock::new());
    Ok(ObjectLoop {
        wiring: wiring(obj, spec, &url),
        exec,
        peer_cluster,
        mem: Memory::default(),
        probes: ProbeTracker::default(),
        last_conditions: Vec::new(),
        backoff: Duration::from_secs(1),
    })
}

/// A key of a Secret, as text (the witness token of `leaseClient.config.tokenSecretRef`).
pub(crate) async fn secret_value(
    client: &kube::Client,
    ns: &str,
    name: &str,
    key: &str,
) -> Result<String, Error> {
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), ns);
    let secret = api.get(name).await.map_err(Error::Kube)?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| Error::Setup(format!("Secret {ns}/{name} has no key {key:?}")))?;
    String::from_utf8(bytes)
        .map(|t| t.trim().to_owned())
        .map_err(|_| Error::Setup(format!("Secret {ns}/{name} key {key:?} is not UTF-8")))
}

fn wiring(obj: &Continuum, spec: &Spec, url: &str) -> String {
    let o = &obj.spec;
    format!(
        "{url}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}|{:?}",
        o.lease_client.config.slot,
        o.lease_client.config.token_secret_ref,
        o.cnpg_pair,
        o.http_route,
        o.dns,
        o.lua_record,
        o.regions,
        spec.timing
    )
}

/// Reconciles one Continuum (through the finalizer).
pub async fn reconcile(obj: Arc<Continuum>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciles.inc();
    let (ns, _) = obj.key();
    let api: Api<Continuum> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, super::FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(o) => apply(o, ctx.clone()).await,
            Finalizer::Cleanup(o) => cleanup(o, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Logs, counts and backs off (per object, doubling up to 60 s).
pub fn error_policy(obj: Arc<Continuum>, err: &Error, ctx: Arc<Context>) -> Action {
    let label = match err {
        Error::Finalizer(b) => match b.as_ref() {
            kube::runtime::finalizer::Error::ApplyFailed(e)
            | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
            _ => err.metric_label(),
        },
        _ => err.metric_label(),
    };
    ctx.metrics.failure(label);
    tracing::warn!(continuum = %key(&obj), error = %err, "reconcile failed");
    let k = key(&obj);
    let backoff = ctx
        .objects
        .try_lock()
        .ok()
        .and_then(|m| m.get(&k).cloned())
        .and_then(|o| {
            o.try_lock().ok().map(|mut l| {
                let b = l.backoff;
                l.backoff = (b * 2).min(Duration::from_secs(60));
                b
            })
        })
        .unwrap_or(Duration::from_secs(1));
    Action::requeue(backoff)
}

async fn apply(obj: Arc<Continuum>, ctx: Arc<Context>) -> Result<Action, Error> {
    let k = key(&obj);
    let spec = match obj.to_decide_spec() {
        Ok(s) => s,
        Err(e) => {
            let (ns, name) = obj.key();
            let store = StatusStore::new(ctx.client.clone(), &ns, &name);
            let _ = store.load().await;
            let st = ContinuumStatus {
                phase: Some(Phase::Failed),
                observed_generation: obj.metadata.generation,
                ..store.last_summary().unwrap_or_default()
            };
            let _ = store.write_summary(st).await;
            ctx.publish(&obj, EventType::Warning, "InvalidSpec", e.to_string())
                .await;
            return Err(Error::Spec(e.to_string()));
        }
    };
    if !spec.regions.iter().any(|r| r == &ctx.settings.region) {
        return Err(Error::Spec(format!(
            "region {} is not one of {:?}",
            ctx.settings.region, spec.regions
        )));
    }
    let lp = {
        let existing = ctx.object(&k).await;
        let url_now = obj
            .spec
            .lease_client
            .config
            .worker_url
            .clone()
            .or_else(|| obj.spec.lease_client.config.base_url.clone())
            .or_else(|| ctx.settings.witness_url.clone())
            .unwrap_or_default();
        let want = wiring(&obj, &spec, &url_now);
        match existing {
            Some(l) if l.lock().await.wiring == want => l,
            _ => {
                let l = Arc::new(tokio::sync::Mutex::new(build(&ctx, &obj, &spec).await?));
                ctx.objects.lock().await.insert(k.clone(), l.clone());
                l
            }
        }
    };
    let mut lp = lp.lock().await;
    let pause = lp.tick(&obj, spec, &ctx).await;
    lp.backoff = Duration::from_secs(1);
    Ok(Action::requeue(pause))
}

async fn cleanup(obj: Arc<Continuum>, ctx: Arc<Context>) -> Result<Action, Error> {
    let k = key(&obj);
    let region = ctx.settings.region.clone();
    if let Some(l) = ctx.objects.lock().await.remove(&k) {
        let l = l.lock().await;
        let w = &l.exec.ports().witness;
        let epoch = match w.read().await {
            Ok(v) if v.state.holder == region => Some(v.state.epoch),
            Ok(_) => None,
            Err(e) => {
                return Err(Error::Setup(format!(
                    "reading the lease to release it: {e}"
                )));
            }
        };
        if let Some(epoch) = epoch {
            w.release(&region, epoch)
                .await
                .map_err(|e| Error::Setup(format!("releasing the lease: {e}")))?;
            ctx.publish(
                &obj,
                EventType::Normal,
                "LeaseReleased",
                format!("{region} released the lease at epoch {epoch}; data plane left as is"),
            )
            .await;
        }
    } else if let Ok(spec) = obj.to_decide_spec() {
        // Not built in this process (restart): build only to release.
        let l = build(&ctx, &obj, &spec).await?;
        let w = &l.exec.ports().witness;
        if let Ok(v) = w.read().await
            && v.state.holder == region
        {
            w.release(&region, v.state.epoch)
                .await
                .map_err(|e| Error::Setup(format!("releasing the lease: {e}")))?;
        }
    }
    Ok(Action::await_change())
}

impl ObjectLoop {
    fn observed(
        &self,
        region: &str,
        spec: &Spec,
        dbo: Option<&DbObservation>,
        drained: Option<bool>,
        persisted: &crate::ports::Persisted,
    ) -> Observed {
        observe::observed(
            region,
            spec,
            dbo,
            drained,
            persisted,
            &self.mem,
            &self.probes,
        )
    }

    /// Runs each step as a one-step plan through the executor, timing it; stops like
    /// [`Executor::run`].
    async fn run(&self, plan: &Plan, metrics: &Metrics) -> Outcome {
        let mut total = Outcome::default();
        let mut start = plan.start.clone();
        for step in &plan.steps {
            let sub = Plan {
                steps: vec![step.clone()],
                conditions: Vec::new(),
                start: start.clone(),
            };
            let t = std::time::Instant::now();
            let out = self.exec.run(&sub).await;
            metrics.step(step.name(), t.elapsed().as_secs_f64());
            if let Some(s) = &start
                && out
                    .persisted
                    .operation
                    .as_ref()
                    .is_some_and(|o| o.id == s.id)
            {
                start = None;
            }
            if matches!(step, Step::FinishOperation) {
                start = None;
            }
            total.done.extend(out.done);
            total.renewed = out.renewed.or(total.renewed);
            if out.lease.is_some() {
                total.lease = out.lease;
            }
            total.persisted = out.persisted;
            total.audit_failures.extend(out.audit_failures);
            if let Some(s) = out.stopped {
                if let Stopped::Failed { error, .. } = &s {
                    metrics.failure(error.metric_label());
                } else {
                    metrics.failure("stuck");
                }
                let keep_going = matches!(step, Step::Drain { .. } | Step::Fence { .. });
                total.stopped.get_or_insert(s);
                if !keep_going {
                    break;
                }
            }
        }
        total
    }

    /// One observe → decide → execute → status round; returns the pause before the next.
    async fn tick(&mut self, obj: &Continuum, spec: Spec, ctx: &Context) -> Duration {
        let region = ctx.settings.region.clone();
        tracing::debug!(region = %region, continuum = %spec.name, "round");
        let dbo = match self.exec.ports().db.observe().await {
            Ok((_, o)) => Some(o),
            Err(e) => {
                tracing::debug!(error = %e, "CNPG Cluster unreadable");
                None
            }
        };
        let drained = self.exec.ports().routes.drained().await.ok();
        let persisted = self.exec.load().await.unwrap_or_default();
        let now = self.exec.clock().mono();
        let o = self.observed(&region, &spec, dbo.as_ref(), drained, &persisted);
        if decide::authority(&o, now).is_none() {
            match self.exec.ports().witness.read().await {
                Ok(v) => {
                    self.mem.lease = Some(LeaseObs {
                        state: v.state.clone(),
                        witness_now: v.witness_now,
                        received_at: self.exec.clock().mono(),
                    });
                }
                Err(e) => tracing::debug!(error = %e, "witness read failed"),
            }
        }
        let readings = ctx
            .settings
            .probes
            .probe(&obj.spec, &region, self.peer_cluster.as_deref())
            .await;
        let now = self.exec.clock().mono();
        for (vantage, ok) in readings {
            self.probes.record(&vantage, ok, now);
        }
        let o = self.observed(&region, &spec, dbo.as_ref(), drained, &persisted);
        self.exec.set_report(observe::holder_report(dbo.as_ref()));
        let plan = decide::decide(&o, now);
        let mut report = RunReport::default();
        let mut acted = false;
        if !plan.steps.is_empty() {
            let run_started = self.exec.clock().wall();
            let out = self.run(&plan, &ctx.metrics).await;
            acted = self.mem.absorb(&plan, &out, self.exec.clock().mono());
            report.done = out.done.clone();
            report.stopped = out.stopped.as_ref().map(stop_name);
            if out.done.contains(&"flip-dns") {
                report.lua = lua_records(obj, &plan);
            }
            if out.done.contains(&"finish-operation") {
                report.finished = o
                    .operation
                    .clone()
                    .or_else(|| plan.start.clone())
                    .filter(|op| {
                        matches!(
                            op.kind,
                            OpKind::Switchover | OpKind::Failback | OpKind::Failover
                        )
                    });
                // Started in an earlier round: its persisted start; else within this run.
                let started = o
                    .operation
                    .as_ref()
                    .map(|op| op.started_at)
                    .filter(|t| t.0 > 0)
                    .unwrap_or(run_started);
                report.finished_ms = report
                    .finished
                    .as_ref()
                    .map(|_| self.exec.clock().wall().since(started));
            }
            if acted || out.stopped.is_some() {
                tracing::info!(
                    continuum = %spec.name, planned = ?plan.names(), done = ?out.done,
                    stopped = ?report.stopped, "plan executed"
                );
                ctx.publish(
                    obj,
                    EventType::Normal,
                    "PlanExecuted",
                    format!("planned {:?}, done {:?}", plan.names(), out.done),
                )
                .await;
            }
            if let Some((name, msg)) = &report.stopped {
                ctx.publish(obj, EventType::Warning, name, msg.clone())
                    .await;
            }
            for e in &out.audit_failures {
                tracing::warn!(error = %e, "audit event not published");
            }
        }
        // Status: observe again what the run left (the persisted operation in particular).
        let now = self.exec.clock().mono();
        let persisted = self.exec.load().await.unwrap_or(persisted);
        let o = self.observed(&region, &spec, dbo.as_ref(), drained, &persisted);
        let names: Vec<String> = plan
            .conditions
            .iter()
            .map(|c| crate::crd::condition_type(c.kind).to_owned())
            .collect();
        for c in &plan.conditions {
            let t = crate::crd::condition_type(c.kind);
            if !self.last_conditions.iter().any(|x| x == t) {
                ctx.publish(obj, EventType::Warning, t, c.message.clone())
                    .await;
            }
        }
        self.last_conditions = names;
        let store = &self.exec.ports().store;
        let prev = store
            .last_summary()
            .or_else(|| obj.status.clone())
            .unwrap_or_default();
        let wall = self.exec.clock().wall().to_rfc3339();
        let summary = summarize(
            &o,
            &plan,
            &report,
            now,
            &prev,
            &wall,
            obj.metadata.generation,
        );
        let label = ObjectLabel {
            continuum: spec.name.clone(),
        };
        if let Some(e) = summary.epoch {
            ctx.metrics.epoch.get_or_create(&label).set(e);
        }
        if let Some(l) = summary.replication_lag_seconds {
            ctx.metrics.lag.get_or_create(&label).set(l);
        }
        if let Err(e) = store.write_summary(summary).await {
            ctx.metrics.failure("store");
            tracing::warn!(error = %e, "status summary not written");
        }
        let pause = self.pause(&o, acted, ctx.settings.tick);
        tracing::debug!(region = %region, steps = ?plan.names(), ?pause, "round done");
        pause
    }

    fn pause(&self, o: &Observed, acted: bool, tick: Duration) -> Duration {
        if acted {
            return Duration::from_millis(10);
        }
        let max = i64::try_from(tick.as_millis()).unwrap_or(5_000);
        let ms = decide::wake_in_ms(o, self.exec.clock().mono(), max);
        Duration::from_millis(u64::try_from(ms).unwrap_or(5))
    }
}

/// Runs the controller for Continuum objects in `namespace` (all namespaces when `None`) until
/// `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Continuum> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
    ctx.metrics.set_ready(false);
}

/// The LUA records a completed `flip-dns` step of `plan` published, as the status reports
/// them (`lastLuaRecord`): the same rendering the DNS adapter wrote.
fn lua_records(obj: &Continuum, plan: &Plan) -> Option<crate::crd::LuaRecordSet> {
    let (primary, epoch) = plan.steps.iter().find_map(|s| match s {
        Step::FlipDns { primary, epoch } => Some((primary.clone(), *epoch)),
        _ => None,
    })?;
    let hostnames = &obj.spec.lua_record.as_ref()?.hostnames;
    let rendered =
        pdm_client::lua::render(&super::dns::placement(&obj.spec).with_primary(&primary)).ok()?;
    Some(crate::crd::LuaRecordSet {
        records: hostnames
            .iter()
            .map(|h| crate::crd::LuaRecordStatus {
                hostname: h.clone(),
                body: rendered.body.to_string(),
                ttl: i64::from(rendered.ttl),
                primary_region: Some(primary.clone()),
                epoch: i64::try_from(epoch).ok(),
            })
            .collect(),
    })
}
