//! The standalone mode: one region's controller without Kubernetes.
//!
//! `continuum-controller run --region <id> --config <continuum.yaml> --endpoints <lab.yaml>`:
//! the Continuum object comes from a file (re-read when it changes, so an operator requests a
//! switchover or approves a failback by editing it), the wiring of the data plane (witness,
//! PostgreSQL, route fronts, PowerDNS, NATS) from an endpoints file, secrets from the
//! environment. Every tick: read the database, the route, the witness and the peer → [`decide`]
//! → [`Executor::run`] → status file + log.
//!
//! The loop never blocks on the audit sink (NATS is connected lazily and its failures are
//! counted, never fatal) and never sleeps past the moment the lease can be acquired or must be
//! renewed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use contract::Millis;
use contract::lease::LeaseView;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::adapters::dns::{DnsConfig, PdmDns};
use crate::adapters::nats::{NatsAudit, StreamSettings};
use crate::adapters::postgres::{DbObservation, NodeControl, PgConfig, PgDatabase};
use crate::adapters::routes::{HttpRoutes, RouteFront};
use crate::adapters::witness::WitnessAdapter;
use crate::audit::AuditEvent;
use crate::decide::{self, Condition, DbRole, LeaseObs, Mono, Observed, Plan, Spec, Step};
use crate::exec::{Clock, Executor, Memory, Outcome, Ports, Stopped, SystemClock, Timeouts};
use crate::metrics::Metrics;
use crate::observe::{self, ProbeTracker};
use crate::ports::{Audit, AuditError, Dns, FileStateStore, PlaneError, Witness};

/// Setup errors of the standalone mode (the loop itself never fails: it logs and retries).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The Continuum file is unreadable or invalid.
    #[error("config {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The endpoints file is unreadable or invalid.
    #[error("endpoints: {0}")]
    Endpoints(String),
    /// A client could not be built.
    #[error("setup: {0}")]
    Setup(String),
    /// The status directory could not be written.
    #[error("status: {0}")]
    Status(#[from] std::io::Error),
}

/// The witness endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WitnessEndpoint {
    /// Base URL, e.g. `http://127.0.0.1:8787`.
    pub url: String,
    /// Lease slot (default: `<namespace>/<name>` of the Continuum).
    #[serde(default)]
    pub slot: Option<String>,
}

/// PowerDNS (LUA record) endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PowerDnsEndpoint {
    /// API base URL.
    pub api_url: String,
    /// Zone, e.g. `dr.test.`.
    pub zone: String,
    /// Hostnames carrying the application's LUA record.
    pub hostnames: Vec<String>,
    /// URL template the `ifurlup` check probes (host replaced by each region's address).
    pub probe_url: String,
    /// Authoritative servers to verify a flip against.
    pub servers: Vec<SocketAddr>,
    /// How long a flip waits for the authoritative answer.
    #[serde(default = "default_verify_ms")]
    pub verify_timeout_ms: u64,
}

fn default_verify_ms() -> u64 {
    30_000
}

/// One region's PostgreSQL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PgEndpoint {
    /// tokio-postgres conninfo.
    pub conninfo: String,
    /// `application_name` of this node when it streams from the other.
    pub application_name: String,
    /// Data directory (demote / rebuild restart the server).
    pub data_dir: PathBuf,
    /// Directory of `pg_ctl` and `pg_rewind`.
    pub bindir: PathBuf,
    /// Server log for `pg_ctl -l`.
    pub log: PathBuf,
    /// TCP port.
    pub port: u16,
    /// OS user the server runs as (when the controller runs as root).
    #[serde(default)]
    pub run_as: Option<String>,
}

/// One region's wiring.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionEndpoint {
    /// The address the region serves on (its DNS answer).
    pub ip: String,
    /// The route front's control URL.
    pub front_url: String,
    /// This region's own path to the witness, when it differs from `witness.url` (the lab
    /// routes each region through a proxy it can cut to simulate a partition).
    #[serde(default)]
    pub witness_url: Option<String>,
    /// Serve the lab route front in this controller's process on this address, so killing
    /// the controller takes the route down with it.
    #[serde(default)]
    pub front_listen: Option<SocketAddr>,
    /// The database.
    pub postgres: PgEndpoint,
    /// This region's database watchdog (`continuum-controller watchdog`), armed on every
    /// grant; it fences the database when the deadline passes unrenewed (a paused or killed
    /// controller). Strongly recommended: without it nothing fences a database whose
    /// controller is paused past the TTL.
    #[serde(default)]
    pub watchdog_url: Option<String>,
}

/// The data-plane wiring of a standalone deployment (shared by every region's controller).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The lease witness.
    pub witness: WitnessEndpoint,
    /// NATS for the audit stream (`None`: audit events are only logged).
    #[serde(default)]
    pub nats_url: Option<String>,
    /// PowerDNS (`None`: DNS flips are skipped and logged).
    #[serde(default)]
    pub powerdns: Option<PowerDnsEndpoint>,
    /// Region id → wiring. Exactly the Continuum's two regions.
    pub regions: BTreeMap<String, RegionEndpoint>,
}

impl Endpoints {
    /// Reads a YAML or JSON endpoints file.
    pub fn load(path: &Path) -> Result<Endpoints, RunError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::Endpoints(format!("reading {}: {e}", path.display())))?;
        serde_yaml::from_str(&text)
            .map_err(|e| RunError::Endpoints(format!("decoding {}: {e}", path.display())))
    }
}

/// Secrets, from the environment.
#[derive(Clone, Default)]
pub struct Secrets {
    /// Bearer token for the witness.
    pub witness_token: String,
    /// PowerDNS API key.
    pub powerdns_api_key: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// This region.
    pub region: String,
    /// The Continuum YAML file.
    pub config: PathBuf,
    /// The wiring.
    pub endpoints: Endpoints,
    /// Directory for `status.json` and `operation.json`.
    pub state_dir: PathBuf,
    /// Secrets.
    pub secrets: Secrets,
    /// Longest pause between two ticks.
    pub tick: Duration,
    /// Serve `/healthz`, `/readyz` and `/metrics` here.
    pub listen: Option<SocketAddr>,
}

/// Loads the Continuum file and converts its spec for the decision core.
pub fn load_spec(path: &Path) -> Result<Spec, RunError> {
    let err = |message: String| RunError::Config {
        path: path.to_owned(),
        message,
    };
    let obj = crate::crd::load_file(path).map_err(|e| err(e.to_string()))?;
    let ns = obj.metadata.namespace.clone().unwrap_or_default();
    let name = obj.metadata.name.clone().unwrap_or_default();
    let spec = obj
        .spec
        .to_decide_spec(&ns, &name)
        .map_err(|e| err(e.to_string()))?;
    spec.timing
        .validate()
        .map_err(|e| err(format!("timing: {e}")))?;
    Ok(spec)
}

/// The audit sink of the standalone mode: JetStream, connected on first use (a NATS outage
/// at start never keeps the controller from fencing or promoting); without a URL, events are
/// only logged.
#[derive(Debug)]
pub struct LazyAudit {
    url: Option<String>,
    cell: OnceCell<NatsAudit>,
}

impl LazyAudit {
    /// A sink publishing to `url` once reachable.
    pub fn new(url: Option<String>) -> LazyAudit {
        LazyAudit {
            url,
            cell: OnceCell::new(),
        }
    }
}

impl Audit for LazyAudit {
    async fn publish(&self, event: &AuditEvent) -> Result<(), AuditError> {
        tracing::info!(
            kind = event.kind.as_str(),
            reason = %event.reason,
            epoch = ?event.epoch,
            from = %event.from_primary,
            to = %event.to_primary,
            message = %event.message,
            "audit"
        );
        let Some(url) = &self.url else {
            return Ok(());
        };
        let nats = self
            .cell
            .get_or_try_init(|| async {
                let settings = StreamSettings::default();
                NatsAudit::connect(url, &settings, Duration::from_secs(2)).await
            })
            .await?;
        nats.publish(event).await
    }
}

/// DNS of the standalone mode: PowerDNS through `pdm-client`, or nothing (logged).
#[derive(Debug)]
pub enum StandaloneDns {
    /// PowerDNS.
    PowerDns(Box<PdmDns>),
    /// No DNS configured.
    Off,
}

impl Dns for StandaloneDns {
    async fn flip(&self, primary: &str, epoch: u64) -> Result<(), PlaneError> {
        match self {
            StandaloneDns::PowerDns(d) => d.flip(primary, epoch).await,
            StandaloneDns::Off => {
                tracing::warn!(primary, epoch, "no DNS configured: flip skipped");
                Ok(())
            }
        }
    }
}

type StandaloneExecutor = Executor<
    WitnessAdapter,
    PgDatabase,
    StandaloneDns,
    HttpRoutes,
    LazyAudit,
    FileStateStore,
    SystemClock,
>;

/// What `status.json` holds (also what `continuum-controller status` prints).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionStatus {
    /// This region.
    pub region: String,
    /// Wall clock of the reading.
    pub updated_at: Millis,
    /// `primary`, `standby`, `down`.
    pub db_role: DbRole,
    /// Database read-only (fenced).
    pub read_only: bool,
    /// Route drained.
    pub drained: bool,
    /// Whether this region has write authority now.
    pub authority: bool,
    /// Epoch of this region's last grant (0: never).
    pub epoch: u64,
    /// The lease as last seen.
    pub lease_holder: String,
    /// Its epoch.
    pub lease_epoch: u64,
    /// Its expiry (RFC 3339).
    pub lease_expires_at: String,
    /// The holder's durability report stored with the lease.
    pub lease_synchronous: Option<bool>,
    /// Replication seen from here.
    pub replication: decide::Replication,
    /// Conditions of the last decision.
    pub conditions: Vec<Condition>,
    /// The persisted operation.
    pub operation: Option<decide::Operation>,
    /// Completed switchover/failback request ids.
    pub completed: Vec<String>,
    /// Steps the last executed plan completed.
    pub last_steps: Vec<String>,
    /// Why the last executed plan stopped early, if it did.
    pub last_error: Option<String>,
    /// The last observation (input of `plan`).
    pub observed: Observed,
}

fn err_text(s: &Stopped) -> String {
    match s {
        Stopped::Stuck {
            step,
            condition,
            after,
        } => format!("{step} stuck after {after:?} ({condition})"),
        Stopped::Failed { step, error } => format!("{step} failed: {error}"),
    }
}

struct Loop {
    opts: RunOptions,
    spec: Spec,
    /// The config file's bytes when last loaded: a change is detected by content, not by
    /// mtime (two writes within one timestamp tick of the filesystem share an mtime).
    spec_text: Option<Vec<u8>>,
    exec: StandaloneExecutor,
    peer_front: reqwest::Client,
    peer_front_url: String,
    peer_conninfo: String,
    mem: Memory,
    probes: ProbeTracker,
    last_steps: Vec<String>,
    last_error: Option<String>,
    last_run_ms: u128,
    last_conditions: Vec<Condition>,
    status_path: PathBuf,
    last_status_write: Option<Mono>,
    metrics: Arc<Metrics>,
}

/// Builds the adapters for `opts` (serving the lab route front in-process when configured).
async fn build(opts: &RunOptions, spec: &Spec) -> Result<(Loop, Option<RouteFront>), RunError> {
    let me = opts.region.as_str();
    let peer = spec
        .regions
        .iter()
        .find(|r| r.as_str() != me)
        .cloned()
        .ok_or_else(|| RunError::Setup(format!("no peer region for {me}")))?;
    if !spec.regions.iter().any(|r| r == me) {
        return Err(RunError::Setup(format!(
            "region {me:?} is not one of the Continuum's regions {:?}",
            spec.regions
        )));
    }
    let ep = &opts.endpoints;
    let mine = ep
        .regions
        .get(me)
        .ok_or_else(|| RunError::Endpoints(format!("no endpoints for region {me:?}")))?;
    let theirs = ep
        .regions
        .get(&peer)
        .ok_or_else(|| RunError::Endpoints(format!("no endpoints for region {peer:?}")))?;
    let front = match mine.front_listen {
        Some(addr) => Some(
            RouteFront::start(addr)
                .await
                .map_err(|e| RunError::Setup(format!("route front on {addr}: {e}")))?,
        ),
        None => None,
    };
    let slot = ep.witness.slot.clone().unwrap_or_else(|| spec.name.clone());
    let client = witness_worker::client::WitnessClient::new(
        witness_worker::client::ClientConfig::new(
            mine.witness_url.as_deref().unwrap_or(&ep.witness.url),
            &opts.secrets.witness_token,
        ),
        slot,
    )
    .map_err(|e| RunError::Setup(format!("witness client: {e}")))?;
    let pg = &mine.postgres;
    let db = PgDatabase::new(PgConfig {
        conninfo: pg.conninfo.clone(),
        peer_conninfo: Some(theirs.postgres.conninfo.clone()),
        peer_name: theirs.postgres.application_name.clone(),
        local_name: pg.application_name.clone(),
        node: Some(NodeControl {
            bindir: pg.bindir.clone(),
            data_dir: pg.data_dir.clone(),
            log: pg.log.clone(),
            port: pg.port,
            run_as: pg.run_as.clone(),
        }),
        watchdog: mine
            .watchdog_url
            .as_deref()
            .map(crate::watchdog::WatchdogClient::new),
        settle_timeout: Duration::from_secs(10),
    });
    if mine.watchdog_url.is_none() {
        tracing::warn!(
            "no watchdogUrl for this region: a paused or killed controller leaves its database unfenced"
        );
    }
    let dns = match &ep.powerdns {
        Some(p) => {
            let control = pdm_client::PowerDnsBackend::new(pdm_client::PowerDnsConfig::new(
                &p.api_url,
                &opts.secrets.powerdns_api_key,
            ))
            .map_err(|e| RunError::Setup(format!("PowerDNS client: {e}")))?;
            let verifier = pdm_client::Verifier::new(p.servers.iter().copied())
                .map_err(|e| RunError::Setup(format!("DNS verifier: {e}")))?
                .poll(Duration::from_millis(100))
                .consecutive(2);
            let mut placement = pdm_client::PlacementSpec::new(
                pdm_client::Placement::ActiveHotStandby,
                spec.primary.as_str(),
            );
            for r in &spec.regions {
                let ip = ep.regions.get(r).map(|e| e.ip.clone()).unwrap_or_default();
                placement = placement.region(pdm_client::RegionSpec::new(r.as_str(), [ip]));
            }
            let placement = placement.probe_url(p.probe_url.clone()).timing(1, 1);
            StandaloneDns::PowerDns(Box::new(PdmDns::new(
                Arc::new(control),
                Some(verifier),
                DnsConfig {
                    zone: p.zone.clone(),
                    hostnames: p.hostnames.clone(),
                    spec: placement,
                    verify_timeout: Duration::from_millis(p.verify_timeout_ms),
                },
            )))
        }
        None => StandaloneDns::Off,
    };
    std::fs::create_dir_all(&opts.state_dir)?;
    let ports = Ports {
        witness: WitnessAdapter::new(client),
        db,
        dns,
        routes: HttpRoutes::new(&mine.front_url, Duration::from_secs(2))
            .map_err(|e| RunError::Setup(e.to_string()))?,
        audit: LazyAudit::new(ep.nats_url.clone()),
        store: FileStateStore::new(opts.state_dir.join("operation.json")),
    };
    let mut timeouts = Timeouts::for_timing(&spec.timing);
    timeouts.dns = Duration::from_millis(
        ep.powerdns
            .as_ref()
            .map_or(5_000, |p| p.verify_timeout_ms + 5_000),
    );
    let exec = Executor::new(ports, me, spec.timing, timeouts, SystemClock::new());
    let peer_front = reqwest::Client::builder()
        .timeout(Duration::from_millis(500))
        .build()
        .map_err(|e| RunError::Setup(format!("HTTP client: {e}")))?;
    let lp = Loop {
        spec: spec.clone(),
        spec_text: std::fs::read(&opts.config).ok(),
        exec,
        peer_front,
        peer_front_url: theirs.front_url.trim_end_matches('/').to_owned(),
        peer_conninfo: theirs.postgres.conninfo.clone(),
        mem: Memory::default(),
        probes: ProbeTracker::default(),
        last_steps: Vec::new(),
        last_error: None,
        last_run_ms: 0,
        last_conditions: Vec::new(),
        status_path: opts.state_dir.join("status.json"),
        last_status_write: None,
        metrics: Arc::new(Metrics::new()),
        opts: opts.clone(),
    };
    Ok((lp, front))
}

/// Runs one region's controller until `shutdown` resolves.
pub async fn run(
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let spec = load_spec(&opts.config)?;
    let (mut lp, _front) = build(&opts, &spec).await?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    if let Some(addr) = opts.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| RunError::Setup(format!("metrics listener on {addr}: {e}")))?;
        let router = crate::metrics::router(lp.metrics.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = http_stopped.await;
                })
                .await;
        });
    }
    lp.metrics.set_ready(true);
    tracing::info!(
        region = %opts.region,
        regions = ?spec.regions,
        ttl_ms = spec.timing.ttl_ms,
        renew_ms = spec.timing.renew_ms,
        deadline_ms = spec.timing.deadline_ms(),
        "continuum controller started"
    );
    tokio::pin!(shutdown);
    loop {
        let pause = lp.tick().await;
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    lp.metrics.set_ready(false);
    let _ = stop_http.send(());
    tracing::info!(region = %opts.region, "continuum controller stopped");
    Ok(())
}

impl Loop {
    fn reload_spec(&mut self) {
        let text = std::fs::read(&self.opts.config).ok();
        if text == self.spec_text {
            return;
        }
        self.spec_text = text;
        match load_spec(&self.opts.config) {
            Ok(s) if s.timing != self.spec.timing => tracing::warn!(
                "lease timing changed in the config: restart the controller to apply it; \
                 keeping the running timing"
            ),
            Ok(s) => {
                tracing::info!(switchover = ?s.switchover, failback = ?s.failback, "config reloaded");
                self.spec = s;
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the last good spec")
            }
        }
    }

    async fn probe_peer(&mut self, now: Mono) {
        let front = async {
            self.peer_front
                .get(format!("{}/healthz", self.peer_front_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        };
        // The peer's database SERVES only as a writable primary: a fenced (read-only) or
        // demoted one fails this probe like an unreachable one.
        let db = async {
            let probe = async {
                let (c, conn) = tokio_postgres::connect(&self.peer_conninfo, tokio_postgres::NoTls)
                    .await
                    .ok()?;
                tokio::spawn(conn);
                let row = c
                    .query_one(
                        "select not pg_is_in_recovery() \
                         and current_setting('default_transaction_read_only') = 'off'",
                        &[],
                    )
                    .await
                    .ok()?;
                Some(row.get::<_, bool>(0))
            };
            matches!(
                tokio::time::timeout(Duration::from_millis(500), probe).await,
                Ok(Some(true))
            )
        };
        let (f, d) = tokio::join!(front, db);
        self.probes.record("route", f, now);
        self.probes.record("database", d, now);
    }

    fn remember_lease(&mut self, view: &LeaseView) {
        self.mem.lease = Some(LeaseObs {
            state: view.state.clone(),
            witness_now: view.witness_now,
            received_at: self.exec.clock().mono(),
        });
    }

    /// One observe → decide → execute round; returns how long to wait before the next.
    async fn tick(&mut self) -> Duration {
        self.reload_spec();
        let dbo: Option<DbObservation> = match self.exec.ports().db.observe().await {
            Ok(o) => Some(o),
            Err(e) => {
                tracing::debug!(error = %e, "database unreadable");
                None
            }
        };
        let route = self.exec.ports().routes.state().await.ok();
        let now = self.exec.clock().mono();
        let persisted = self.exec.load().await.unwrap_or_default();
        // The witness: read unless this region has authority (its renews answer then).
        let mut observed = self.observed(dbo.as_ref(), route.as_ref(), &persisted);
        if decide::authority(&observed, now).is_none() {
            match self.exec.ports().witness.read().await {
                Ok(v) => self.remember_lease(&v),
                Err(e) => tracing::debug!(error = %e, "witness read failed"),
            }
        }
        self.probe_peer(now).await;
        let now = self.exec.clock().mono();
        observed = self.observed(dbo.as_ref(), route.as_ref(), &persisted);
        self.exec.set_report(observe::holder_report(dbo.as_ref()));
        let plan = decide::decide(&observed, now);
        self.log_conditions(&plan);
        let mut acted = false;
        if !plan.steps.is_empty() {
            let started = std::time::Instant::now();
            let out = self.exec.run(&plan).await;
            self.last_run_ms = started.elapsed().as_millis();
            self.record(&plan, &out, started.elapsed().as_secs_f64());
            acted = self.absorb(&plan, &out);
        }
        if observed.replication.lag_seconds != u64::MAX {
            self.metrics
                .lag
                .get_or_create(&crate::metrics::ObjectLabel {
                    continuum: self.spec.name.clone(),
                })
                .set(i64::try_from(observed.replication.lag_seconds).unwrap_or(i64::MAX));
        }
        self.write_status(&observed, &plan, now, acted);
        self.pause(&observed, acted)
    }

    fn observed(
        &self,
        dbo: Option<&DbObservation>,
        route: Option<&crate::adapters::routes::FrontView>,
        persisted: &crate::ports::Persisted,
    ) -> Observed {
        observe::observed(
            &self.opts.region,
            &self.spec,
            dbo,
            route.map(|r| r.drained),
            persisted,
            &self.mem,
            &self.probes,
        )
    }

    fn log_conditions(&mut self, plan: &Plan) {
        if plan.conditions != self.last_conditions {
            for c in &plan.conditions {
                if !self.last_conditions.contains(c) {
                    tracing::warn!(condition = ?c.kind, message = %c.message, "condition");
                }
            }
            self.last_conditions = plan.conditions.clone();
        }
    }

    /// Metrics of one executed plan: a reconcile, its duration per single-step plan (a renew
    /// alone is the renew latency), failures by label.
    fn record(&self, plan: &Plan, out: &Outcome, seconds: f64) {
        let m = &self.metrics;
        m.reconciles.inc();
        if let [only] = plan.steps.as_slice() {
            m.step(only.name(), seconds);
        }
        match &out.stopped {
            Some(Stopped::Failed { error, .. }) => m.failure(error.metric_label()),
            Some(Stopped::Stuck { .. }) => m.failure("stuck"),
            None => {}
        }
        let label = crate::metrics::ObjectLabel {
            continuum: self.spec.name.clone(),
        };
        if let Some(r) = self.mem.renewed {
            m.epoch
                .get_or_create(&label)
                .set(i64::try_from(r.epoch).unwrap_or(i64::MAX));
        }
    }

    /// Folds an outcome into the loop's memory and logs it; true when something changed.
    fn absorb(&mut self, plan: &Plan, out: &Outcome) -> bool {
        let acted = self.mem.absorb(plan, out, self.exec.clock().mono());
        let only_renew = plan
            .steps
            .iter()
            .all(|s| matches!(s, Step::RenewLease { .. }));
        if !only_renew || out.stopped.is_some() {
            tracing::info!(
                planned = ?plan.names(),
                done = ?out.done,
                stopped = ?out.stopped.as_ref().map(err_text),
                audit_failures = out.audit_failures.len(),
                elapsed_ms = self.last_run_ms,
                "plan executed"
            );
        }
        for e in &out.audit_failures {
            tracing::warn!(error = %e, "audit event not published");
        }
        self.last_steps = out.done.iter().map(|s| (*s).to_owned()).collect();
        self.last_error = out.stopped.as_ref().map(err_text);
        acted
    }

    fn write_status(&mut self, o: &Observed, plan: &Plan, now: Mono, acted: bool) {
        let due = acted || self.last_status_write.is_none_or(|t| now.since(t) >= 500);
        if !due {
            return;
        }
        self.last_status_write = Some(now);
        let lease = o.lease.as_ref();
        let st = RegionStatus {
            region: o.region.clone(),
            updated_at: self.exec.clock().wall(),
            db_role: o.local.db,
            read_only: o.local.read_only,
            drained: o.local.drained,
            authority: decide::authority(o, now).is_some(),
            epoch: o.renewed.map_or(0, |r| r.epoch),
            lease_holder: lease.map(|l| l.state.holder.clone()).unwrap_or_default(),
            lease_epoch: lease.map_or(0, |l| l.state.epoch),
            lease_expires_at: lease
                .and_then(|l| l.state.expires_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            lease_synchronous: lease.and_then(|l| l.state.report.as_ref().map(|r| r.synchronous)),
            replication: o.replication,
            conditions: plan.conditions.clone(),
            operation: o.operation.clone(),
            completed: o.completed.clone(),
            last_steps: self.last_steps.clone(),
            last_error: self.last_error.clone(),
            observed: o.clone(),
        };
        if let Err(e) = write_json_atomically(&self.status_path, &st) {
            tracing::warn!(error = %e, path = %self.status_path.display(), "status not written");
        }
    }

    /// Acted → go again at once (the next step of a promotion must not wait a tick); else the
    /// tick, shortened to the moment the lease frees up or the renew falls due.
    fn pause(&self, o: &Observed, acted: bool) -> Duration {
        if acted {
            return Duration::ZERO;
        }
        let max = i64::try_from(self.opts.tick.as_millis()).unwrap_or(1_000);
        let ms = decide::wake_in_ms(o, self.exec.clock().mono(), max);
        Duration::from_millis(u64::try_from(ms).unwrap_or(5))
    }
}

/// Writes `value` as JSON to a temporary file, fsyncs it, renames it over `path` and fsyncs
/// the directory (the workspace's one helper for this, `witness_worker::fsio`), so a crash
/// leaves the old file or the new one and a returned write survives a power loss.
pub fn write_json_atomically<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    witness_worker::fsio::write_atomically(path, &body)
}

/// Reads a region's `status.json`.
pub fn read_status(path: &Path) -> std::io::Result<RegionStatus> {
    let body = std::fs::read(path)?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}
