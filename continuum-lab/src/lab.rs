//! The lab: two regions with REAL parts, for the drill and for operators to try the
//! controller. Two networks:
//!
//! - `netns` (the default as root): each region, and the witness, is a host of its own, a
//!   network namespace on a bridge ([`crate::net`]); partitions are nftables DROP rules, so
//!   packets vanish and requests hang until their timeouts. PowerDNS and NATS share a host
//!   (namespace) of their own; the drill's clients are on this namespace's side of the bridge.
//! - `loopback`: every part on 127.0.0.x in this namespace; a partition from the witness is a
//!   TCP proxy that drops connections (no packet loss, no hanging connects).
//!
//! - PostgreSQL 15: region `region-a` is the primary, `region-b` its synchronous standby
//!   (`synchronous_commit = remote_apply`), started through `testkit`;
//! - the witness: `witness-server` in its own namespace (`netns`), or its library in this
//!   process (`loopback`); every region has its own token, bound to its holder and the slot;
//! - PowerDNS with the application's LUA `ifurlup` record over both regions' route fronts
//!   (`127.0.0.2` and `127.0.0.3`, same port);
//! - NATS with JetStream for the audit stream;
//! - one `continuum-controller run` process per region, serving that region's route front, so
//!   that killing "the region" kills its database, its route and its controller together.
//!
//! - one database watchdog process per region (`continuum-controller watchdog`), armed by that
//!   region's controller on every grant, which fences the database when the deadline passes
//!   unrenewed (a paused or killed controller).
//!
//! A primary region's database BOOTS FENCED ([`Lab::restart_region`] writes the fence marker
//! and `standby.signal` and leaves it stopped): after a crash only its controller opens it
//! again, by un-fencing it while holding its own lease or by rebuilding it from the peer.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use testkit::{NatsServer, Pg, PgHost, PgPair, PowerDns};

use crate::net::{self, Direction, Net};

use continuum_controller::ports::Dns as _;
use continuum_controller::standalone::{
    Endpoints, PgEndpoint, PowerDnsEndpoint, RegionEndpoint, RegionStatus, WitnessEndpoint,
    read_status,
};

/// The two regions of the lab, in order (`region-a` starts as primary and is the home).
pub const REGIONS: [&str; 2] = ["region-a", "region-b"];
const ZONE: &str = "dr.test.";
const HOST: &str = "app.dr.test";
/// The lease slot (the Continuum's `namespace/name`).
const SLOT: &str = "lab/lab-app-dr";
/// The token the lab itself reads the lease with (bound to a holder no region is).
const OBSERVER_TOKEN: &str = "lab-observer-token";

/// Region `r`'s witness token: bound to holder `r` on the lab's slot only.
fn witness_token(r: &str) -> String {
    format!("lab-token-{r}")
}

/// The witness's tokens file (YAML; JSON is YAML).
fn witness_tokens() -> String {
    let mut m = serde_json::Map::new();
    for r in REGIONS.iter().copied().chain(["lab-observer"]) {
        let token = if r == "lab-observer" {
            OBSERVER_TOKEN.to_owned()
        } else {
            witness_token(r)
        };
        m.insert(token, serde_json::json!({"holders": [r], "slots": [SLOT]}));
    }
    serde_json::Value::Object(m).to_string()
}
/// Debian's libfaketime (package `faketime`).
const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
/// The application role the drill's hostile client logs in as.
pub const APP_ROLE: &str = "app";
const IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];

/// Lab errors.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A real service could not be started.
    #[error("starting {what}: {message}")]
    Start {
        /// Which part.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// File I/O.
    #[error("lab files: {0}")]
    Io(#[from] std::io::Error),
    /// A region did not reach the awaited state.
    #[error("{0}")]
    Timeout(String),
    /// A process or database operation failed.
    #[error("{0}")]
    Failed(String),
    /// The lab network (namespaces, nftables).
    #[error("lab network: {0}")]
    Net(#[from] net::NetError),
}

/// Where the lab's hosts live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// Network namespaces on a bridge, partitions by nftables DROP (needs root).
    Netns,
    /// Loopback addresses in this namespace, partitions by a TCP proxy.
    Loopback,
}

fn start_err(what: &'static str) -> impl Fn(String) -> LabError {
    move |message| LabError::Start { what, message }
}

/// Lab settings.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Directory for the config, endpoints, state and logs (created).
    pub dir: PathBuf,
    /// Lease TTL, seconds.
    pub ttl_seconds: u32,
    /// Renew interval, seconds.
    pub renew_seconds: u32,
    /// `default` or `strict`.
    pub durability: String,
    /// The controller executable (normally this one).
    pub controller_bin: PathBuf,
    /// Longest pause between two controller ticks, ms.
    pub tick_ms: u64,
    /// Run a database watchdog per region (the default). `false` removes the mechanism that
    /// fences a paused or killed controller's database: a fault-injection switch, to show the
    /// drill's checker catching the two writers that follow.
    pub watchdog: bool,
    /// The network.
    pub net: NetMode,
    /// Run the controllers under libfaketime (Debian `faketime`), each reading its wall-clock
    /// offset from `<state>/faketime.rc`, so that [`Lab::set_clock`] can step or skew one
    /// controller's wall clock. The monotonic clocks are left alone
    /// (`FAKETIME_DONT_FAKE_MONOTONIC=1`).
    pub faketime: bool,
    /// Mount each region's state directory as a small tmpfs (64 MiB; needs root), so that
    /// [`Lab::state_dir_fault`] can fill it up or make it read-only.
    pub state_tmpfs: bool,
    /// The `witness-server` executable (`netns`: it runs in the witness's namespace).
    pub witness_bin: Option<PathBuf>,
}

/// Where the lab's parts listen (`lab.json`, read by `status` and `lab down`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabInfo {
    /// The supervising process (`lab down` signals it).
    pub pid: u32,
    /// The lab directory.
    pub dir: PathBuf,
    /// Witness URL.
    pub witness_url: String,
    /// NATS URL.
    pub nats_url: String,
    /// PowerDNS authoritative address.
    pub dns: SocketAddr,
    /// The application's hostname.
    pub host: String,
    /// Region → PostgreSQL conninfo.
    pub postgres: BTreeMap<String, String>,
    /// Region → route front URL.
    pub fronts: BTreeMap<String, String>,
    /// Region → the controller's `/healthz`, `/readyz`, `/metrics` address.
    pub metrics: BTreeMap<String, SocketAddr>,
    /// The hosts and how to enter them (`netns`; empty on loopback).
    #[serde(default)]
    pub hosts: Vec<String>,
}

/// A running lab. Dropping it stops every part.
pub struct Lab {
    opts: LabOptions,
    pair: PgPair,
    _pdns: PowerDns,
    _nats: NatsServer,
    witness: WitnessProc,
    controllers: BTreeMap<String, tokio::process::Child>,
    watchdogs: BTreeMap<String, (SocketAddr, Option<tokio::process::Child>)>,
    cuts: BTreeMap<String, tokio::sync::watch::Sender<bool>>,
    info: LabInfo,
    config_path: PathBuf,
    endpoints_path: PathBuf,
    spec_extra: SpecExtra,
    /// Each region's address (what the DNS answers for it), in [`REGIONS`] order.
    ips: [Ipv4Addr; 2],
    /// Declared last: the namespaces go once every process in them is gone.
    net: Option<std::sync::Mutex<Net>>,
}

/// The running witness.
enum WitnessProc {
    /// Served by this process (loopback); dropping the sender stops it.
    InProcess {
        _stop: tokio::sync::oneshot::Sender<()>,
    },
    /// A `witness-server` process in the witness's namespace (`None` while it is down).
    Process {
        child: Option<Box<tokio::process::Child>>,
        listen: SocketAddr,
    },
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("info", &self.info).finish()
    }
}

/// Requests written into the Continuum file.
#[derive(Debug, Clone, Default)]
struct SpecExtra {
    switchover: Option<(String, String)>,
    failback: Option<(String, bool)>,
}

impl Lab {
    /// Starts every part and both controllers; returns once a primary holds the lease and
    /// serves writes with a synchronous standby.
    pub async fn up(opts: LabOptions) -> Result<Lab, LabError> {
        std::fs::create_dir_all(&opts.dir)?;
        let net = match opts.net {
            NetMode::Netns => Some(Net::up(&[
                REGIONS[0],
                REGIONS[1],
                net::WITNESS,
                net::SHARED,
            ])?),
            NetMode::Loopback => None,
        };
        let ips: [Ipv4Addr; 2] = match &net {
            Some(n) => [n.ip(REGIONS[0])?, n.ip(REGIONS[1])?],
            None => IPS,
        };
        // PowerDNS and NATS: on a host of their own (netns), apart from the clients.
        let (shared_ns, shared_ip) = match &net {
            Some(n) => (n.netns(net::SHARED)?.map(str::to_owned), n.ip(net::SHARED)?),
            None => (None, Ipv4Addr::LOCALHOST),
        };
        let pair = match &net {
            Some(n) => {
                let host = |r: &str| -> Result<PgHost, LabError> {
                    Ok(PgHost {
                        netns: n.netns(r)?.unwrap_or_default().to_owned(),
                        ip: n.ip(r)?,
                    })
                };
                PgPair::start_in([host(REGIONS[0])?, host(REGIONS[1])?]).await
            }
            None => PgPair::start().await,
        }
        .map_err(|e| start_err("PostgreSQL pair")(e.to_string()))?;
        let pdns = PowerDns::start_in(shared_ns.as_deref(), shared_ip)
            .await
            .map_err(|e| start_err("PowerDNS")(e.to_string()))?;
        let nats = NatsServer::start_in(shared_ns.as_deref(), shared_ip)
            .await
            .map_err(|e| start_err("NATS")(e.to_string()))?;
        let (witness_url, witness) = match &net {
            Some(n) => {
                let listen = SocketAddr::from((n.ip(net::WITNESS)?, 8787));
                let mut w = WitnessProc::Process {
                    child: None,
                    listen,
                };
                spawn_witness(&opts, n, &mut w, true).await?;
                (format!("http://{listen}"), w)
            }
            None => {
                let (url, stop) = start_witness(&opts.dir).await?;
                (url, WitnessProc::InProcess { _stop: stop })
            }
        };
        pdns.create_zone(ZONE)
            .await
            .map_err(|e| start_err("PowerDNS zone")(e.to_string()))?;
        // The application's table for the drill's ledger.
        let c = pair
            .primary()
            .connect()
            .await
            .map_err(|e| start_err("PostgreSQL")(e.to_string()))?;
        c.batch_execute(
            "create table if not exists ledger (n bigint primary key, region text not null, \
             at timestamptz not null default now())",
        )
        .await
        .map_err(|e| start_err("ledger table")(e.to_string()))?;
        // The drill's hostile client: an ordinary application role (no superuser, so no
        // pg_promote) that writes with whatever a session may set, and records in each row
        // what the database says about itself at commit.
        c.batch_execute(&format!(
            "create table if not exists hostile (n bigint primary key, region text not null, \
             tli int not null, lsn pg_lsn not null, sysid bigint not null, \
             at timestamptz not null default now());\n\
             do $$ begin if not exists (select from pg_roles where rolname = '{APP_ROLE}') \
             then create role {APP_ROLE} login; end if; end $$;\n\
             grant select, insert on ledger, hostile to {APP_ROLE};\n\
             grant pg_monitor to {APP_ROLE};"
        ))
        .await
        .map_err(|e| start_err("application role")(e.to_string()))?;
        drop(c);

        // Each namespace has its own ports: any port is free on a region's own address.
        let port = if net.is_some() { 8080 } else { front_port()? };
        let witness_addr: SocketAddr = witness_url
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| LabError::Failed(format!("witness address: {e}")))?;
        let mut cuts = BTreeMap::new();
        let mut witness_paths = BTreeMap::new();
        for r in REGIONS {
            if net.is_some() {
                // Straight to the witness's host: partitions are packet drops.
                witness_paths.insert(r.to_owned(), witness_url.clone());
                continue;
            }
            let (url, cut) = start_cuttable_proxy(witness_addr).await?;
            witness_paths.insert(r.to_owned(), url);
            cuts.insert(r.to_owned(), cut);
        }
        let mut watchdogs = BTreeMap::new();
        for r in REGIONS.into_iter().filter(|_| opts.watchdog) {
            let port = testkit::free_port().map_err(|e| LabError::Failed(e.to_string()))?;
            watchdogs.insert(
                r.to_owned(),
                (SocketAddr::from(([127, 0, 0, 1], port)), None),
            );
        }
        let mut regions = BTreeMap::new();
        let mut fronts = BTreeMap::new();
        let mut postgres = BTreeMap::new();
        for (i, r) in REGIONS.iter().enumerate() {
            let pg = node(&pair, r);
            let addr = SocketAddr::from((ips[i], port));
            let app_name = if i == 0 {
                "primary"
            } else {
                testkit::postgres::STANDBY_NAME
            };
            regions.insert(
                (*r).to_owned(),
                RegionEndpoint {
                    ip: ips[i].to_string(),
                    front_url: format!("http://{addr}"),
                    front_listen: Some(addr),
                    witness_url: witness_paths.get(*r).cloned(),
                    watchdog_url: watchdogs.get(*r).map(|(a, _)| format!("http://{a}")),
                    postgres: PgEndpoint {
                        conninfo: pg
                            .conninfo()
                            .replace("connect_timeout=10", "connect_timeout=2"),
                        application_name: app_name.to_owned(),
                        data_dir: pg.data_dir().to_owned(),
                        bindir: std::env::var_os("TESTKIT_PG_BINDIR")
                            .map_or_else(|| "/usr/lib/postgresql/15/bin".into(), PathBuf::from),
                        log: pg.log_path(),
                        port: pg.port(),
                        run_as: nix::unistd::geteuid()
                            .is_root()
                            .then(|| "postgres".to_owned()),
                    },
                },
            );
            fronts.insert((*r).to_owned(), format!("http://{addr}"));
            postgres.insert((*r).to_owned(), pg.conninfo());
        }
        let endpoints = Endpoints {
            witness: WitnessEndpoint {
                url: witness_url.clone(),
                slot: None,
            },
            nats_url: Some(nats.url()),
            powerdns: Some(PowerDnsEndpoint {
                api_url: pdns.api_url(),
                zone: ZONE.to_owned(),
                hostnames: vec![HOST.to_owned()],
                probe_url: format!("http://probe.{}:{port}/healthz", ZONE.trim_end_matches('.')),
                servers: vec![pdns.dns_addr()],
                verify_timeout_ms: 20_000,
            }),
            regions,
        };
        let endpoints_path = opts.dir.join("endpoints.yaml");
        std::fs::write(
            &endpoints_path,
            serde_yaml::to_string(&endpoints).map_err(|e| LabError::Failed(e.to_string()))?,
        )?;
        let mut metrics = BTreeMap::new();
        for (i, r) in REGIONS.iter().enumerate() {
            let addr = if net.is_some() {
                SocketAddr::from((ips[i], 9090))
            } else {
                let port = testkit::free_port().map_err(|e| LabError::Failed(e.to_string()))?;
                SocketAddr::from(([127, 0, 0, 1], port))
            };
            metrics.insert((*r).to_owned(), addr);
        }
        let info = LabInfo {
            hosts: net.as_ref().map(Net::describe).unwrap_or_default(),
            metrics,
            pid: std::process::id(),
            dir: opts.dir.clone(),
            witness_url,
            nats_url: nats.url(),
            dns: pdns.dns_addr(),
            host: HOST.to_owned(),
            postgres,
            fronts,
        };
        continuum_controller::standalone::write_json_atomically(&opts.dir.join("lab.json"), &info)?;
        let mut lab = Lab {
            config_path: opts.dir.join("continuum.yaml"),
            endpoints_path,
            opts,
            pair,
            _pdns: pdns,
            _nats: nats,
            witness,
            controllers: BTreeMap::new(),
            watchdogs,
            cuts,
            info,
            spec_extra: SpecExtra::default(),
            ips,
            net: net.map(std::sync::Mutex::new),
        };
        if lab.opts.state_tmpfs {
            for r in REGIONS {
                lab.mount_state(r)?;
            }
        }
        lab.write_config()?;
        // The initial record: the home region, epoch 0 (every promotion writes a higher one).
        lab.initial_dns(port, ips).await?;
        for r in REGIONS {
            lab.spawn_watchdog(r)?;
            lab.spawn_controller(r)?;
        }
        lab.wait_healthy(Duration::from_secs(90)).await?;
        Ok(lab)
    }

    /// Where the parts listen.
    pub fn info(&self) -> &LabInfo {
        &self.info
    }

    /// The lab directory.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    async fn initial_dns(&self, port: u16, ips: [Ipv4Addr; 2]) -> Result<(), LabError> {
        let ep =
            Endpoints::load(&self.endpoints_path).map_err(|e| LabError::Failed(e.to_string()))?;
        let Some(p) = ep.powerdns else {
            return Ok(());
        };
        let control = pdm_client::PowerDnsBackend::new(pdm_client::PowerDnsConfig::new(
            &p.api_url,
            self._pdns.api_key(),
        ))
        .map_err(|e| LabError::Failed(e.to_string()))?;
        let mut placement =
            pdm_client::PlacementSpec::new(pdm_client::Placement::ActiveHotStandby, REGIONS[0]);
        for (i, r) in REGIONS.iter().enumerate() {
            placement = placement.region(pdm_client::RegionSpec::new(*r, [ips[i].to_string()]));
        }
        let dns = continuum_controller::adapters::dns::PdmDns::new(
            std::sync::Arc::new(control),
            None,
            continuum_controller::adapters::dns::DnsConfig {
                zone: p.zone,
                hostnames: p.hostnames,
                spec: placement
                    .probe_url(format!(
                        "http://probe.{}:{port}/healthz",
                        ZONE.trim_end_matches('.')
                    ))
                    .timing(1, 1),
                verify_timeout: Duration::from_secs(5),
            },
        );
        dns.flip(REGIONS[0], 0)
            .await
            .map_err(|e| LabError::Failed(format!("initial DNS record: {e}")))
    }

    /// Rewrites the Continuum file (the controllers re-read it when it changes).
    fn write_config(&self) -> Result<(), LabError> {
        let text = config_text(
            self.opts.ttl_seconds,
            self.opts.renew_seconds,
            &self.opts.durability,
            &self.spec_extra,
        );
        // Write then rename: a controller never reads half a file.
        let tmp = self.config_path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config_path)?;
        Ok(())
    }

    /// Requests a planned switchover to `target` with request id `id` (`None` clears it).
    pub fn request_switchover(&mut self, req: Option<(String, String)>) -> Result<(), LabError> {
        self.spec_extra.switchover = req;
        self.write_config()
    }

    /// Requests a failback to the home region (`None` clears it).
    pub fn request_failback(&mut self, req: Option<(String, bool)>) -> Result<(), LabError> {
        self.spec_extra.failback = req;
        self.write_config()
    }

    /// Region `r`'s log file `name` in its state directory, opened for appending.
    /// With [`LabOptions::state_tmpfs`] the logs live beside the state directory, in
    /// `<region>.logs` (a full or read-only state directory must not also silence them).
    fn region_log(&self, r: &str, name: &str) -> Result<std::fs::File, LabError> {
        let state = if self.opts.state_tmpfs {
            self.opts.dir.join(format!("{r}.logs"))
        } else {
            self.opts.dir.join(r)
        };
        std::fs::create_dir_all(&state)?;
        Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.join(name))?)
    }

    /// Starts region `r`'s database watchdog process.
    pub fn spawn_watchdog(&mut self, r: &str) -> Result<(), LabError> {
        let log = self.region_log(r, "watchdog.log")?;
        let Some((addr, _)) = self.watchdogs.get(r).map(|(a, c)| (*a, c.is_some())) else {
            return Ok(());
        };
        let pg = node(&self.pair, r);
        let mut cmd = self.command_on(r, &self.opts.controller_bin)?;
        cmd.arg("watchdog")
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(pg.data_dir())
            .arg("--bindir")
            .arg(
                std::env::var_os("TESTKIT_PG_BINDIR")
                    .map_or_else(|| "/usr/lib/postgresql/15/bin".into(), PathBuf::from),
            );
        if nix::unistd::geteuid().is_root() {
            cmd.arg("--run-as").arg("postgres");
        }
        let child = spawn_logged(&mut cmd, log)?
            .map_err(|e| LabError::Failed(format!("spawning the watchdog of {r}: {e}")))?;
        if let Some(w) = self.watchdogs.get_mut(r) {
            w.1 = Some(child);
        }
        Ok(())
    }

    /// Region `r`'s running controller's pid.
    fn controller_pid(&self, r: &str) -> Result<u32, LabError> {
        self.controllers
            .get(r)
            .and_then(tokio::process::Child::id)
            .ok_or_else(|| LabError::Failed(format!("{r} has no running controller")))
    }

    /// SIGSTOPs (`true`) or SIGCONTs (`false`) region `r`'s controller: a GC or VM pause. Its
    /// database and watchdog keep running.
    pub fn pause_controller(&self, r: &str, stop: bool) -> Result<(), LabError> {
        let pid = self.controller_pid(r)?;
        let sig = if stop {
            nix::sys::signal::Signal::SIGSTOP
        } else {
            nix::sys::signal::Signal::SIGCONT
        };
        let pid = i32::try_from(pid).map_err(|e| LabError::Failed(e.to_string()))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig)
            .map_err(|e| LabError::Failed(format!("{sig} to {r}'s controller: {e}")))
    }

    /// Freezes (`true`: SIGSTOP of the postmaster and every child) or resumes region `r`'s
    /// database; its controller and watchdog keep running.
    pub fn freeze_database(&self, r: &str, stop: bool) -> Result<(), LabError> {
        node(&self.pair, r)
            .freeze_server(stop)
            .map_err(|e| LabError::Failed(format!("freezing {r}'s database: {e}")))
    }

    /// If region `r`'s controller process has exited: its exit status (reaped), and the lab
    /// forgets it so that [`Lab::spawn_controller`] can start it again as a supervisor would.
    pub fn controller_exited(&mut self, r: &str) -> Option<std::process::ExitStatus> {
        let status = self.controllers.get_mut(r)?.try_wait().ok()??;
        self.controllers.remove(r);
        Some(status)
    }

    /// SIGKILLs only region `r`'s controller (its database and watchdog stay up).
    pub async fn kill_controller(&mut self, r: &str) {
        sigkill(self.controllers.remove(r)).await;
    }

    /// Starts region `r`'s controller process.
    pub fn spawn_controller(&mut self, r: &str) -> Result<(), LabError> {
        let state = self.opts.dir.join(r);
        let log = self.region_log(r, "controller.log")?;
        let mut cmd = self.command_on(r, &self.opts.controller_bin)?;
        cmd.arg("run")
            .arg("--region")
            .arg(r)
            .arg("--config")
            .arg(&self.config_path)
            .arg("--endpoints")
            .arg(&self.endpoints_path)
            .arg("--state-dir")
            .arg(&state)
            .arg("--tick-ms")
            .arg(self.opts.tick_ms.to_string())
            .args(
                self.info
                    .metrics
                    .get(r)
                    .map(|a| ["--listen".to_owned(), a.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .envs(self.faketime_env(r)?)
            .env("CONTINUUM_WITNESS_TOKEN", witness_token(r))
            .env("CONTINUUM_POWERDNS_API_KEY", self._pdns.api_key());
        let child = spawn_logged(&mut cmd, log)?.map_err(|e| {
            LabError::Failed(format!(
                "spawning {}: {e}",
                self.opts.controller_bin.display()
            ))
        })?;
        self.controllers.insert(r.to_owned(), child);
        Ok(())
    }

    /// SIGKILLs region `r`: its controller (and with it the route front) and its database.
    pub async fn kill_region(&mut self, r: &str) -> Result<(), LabError> {
        let watchdog = self.watchdogs.get_mut(r).and_then(|w| w.1.take());
        let controller = self.controllers.remove(r);
        let ctl = async {
            sigkill(controller).await;
            sigkill(watchdog).await;
        };
        let pg = node(&self.pair, r);
        let db = async {
            if pg.is_running() {
                pg.kill_server()
                    .await
                    .map_err(|e| LabError::Failed(format!("killing {r}'s database: {e}")))
            } else {
                Ok(())
            }
        };
        let ((), db) = tokio::join!(ctl, db);
        db
    }

    /// SIGKILLs only region `r`'s database (its controller and route stay up).
    pub async fn kill_database(&self, r: &str) -> Result<(), LabError> {
        node(&self.pair, r)
            .kill_server()
            .await
            .map_err(|e| LabError::Failed(format!("killing {r}'s database: {e}")))
    }

    /// Brings region `r`'s database back after a crash: a primary boots fenced (marker and
    /// `standby.signal`, left stopped: its controller un-fences or rebuilds it), a standby
    /// starts as it was.
    pub async fn restart_database(&self, r: &str) -> Result<(), LabError> {
        let pg = node(&self.pair, r);
        if pg.is_running() {
            return Ok(());
        }
        // No data directory under its name: the region's controller is rebuilding it (the
        // rebuild works on it under another name and starts it itself). A supervisor's start
        // fails then; so does nothing here.
        if !pg.data_dir().exists() {
            return Ok(());
        }
        // The controller may take the directory for a rebuild at any moment (it renames it):
        // a start that fails because the directory is gone is that race, not an error.
        let gone = || !pg.data_dir().exists();
        match boot_fenced(pg) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(_) if gone() => return Ok(()),
            Err(e) => return Err(e),
        }
        match pg.start_server().await {
            Ok(()) => Ok(()),
            Err(_) if gone() => Ok(()),
            Err(e) => Err(LabError::Failed(format!("starting {r}'s database: {e}"))),
        }
    }

    /// Brings region `r` back after a kill: its database as [`Lab::restart_database`], then
    /// its watchdog and its controller (which rebuilds the database as a standby when the
    /// peer holds the lease).
    pub async fn restart_region(&mut self, r: &str) -> Result<(), LabError> {
        self.restart_database(r).await?;
        if self.watchdogs.get(r).is_some_and(|w| w.1.is_none()) {
            self.spawn_watchdog(r)?;
        }
        self.spawn_controller(r)
    }

    /// Mounts a 64 MiB tmpfs on region `r`'s state directory.
    fn mount_state(&self, r: &str) -> Result<(), LabError> {
        let dir = self.opts.dir.join(r);
        std::fs::create_dir_all(&dir)?;
        run_tool(&[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=64m",
            &format!("lab-{r}"),
            &dir.display().to_string(),
        ])
    }

    /// A fault of region `r`'s state directory (needs [`LabOptions::state_tmpfs`]): `Full`
    /// fills it to the last byte with a filler file, `ReadOnly` remounts it read-only, `Clear`
    /// removes the filler and remounts it read-write.
    pub fn state_dir_fault(&self, r: &str, fault: StateFault) -> Result<(), LabError> {
        if !self.opts.state_tmpfs {
            return Err(LabError::Failed(
                "state-directory faults need the lab started with state_tmpfs".into(),
            ));
        }
        let dir = self.opts.dir.join(r);
        let filler = dir.join("filler");
        let d = dir.display().to_string();
        match fault {
            StateFault::Full => {
                use std::io::Write as _;
                let mut f = std::fs::File::create(&filler)?;
                let block = vec![0u8; 1 << 20];
                loop {
                    match f.write(&block) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
                        Err(e) => return Err(e.into()),
                    }
                }
                // The last partial blocks, byte-sized writes until nothing fits.
                while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
                Ok(())
            }
            StateFault::ReadOnly => run_tool(&["mount", "-o", "remount,ro", &d]),
            StateFault::Clear => {
                run_tool(&["mount", "-o", "remount,rw", &d])?;
                match std::fs::remove_file(&filler) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                    _ => Ok(()),
                }
            }
        }
    }

    /// The environment that puts region `r`'s controller under libfaketime (empty unless
    /// [`LabOptions::faketime`]); creates its clock file at offset 0 if missing.
    fn faketime_env(&self, r: &str) -> Result<Vec<(&'static str, String)>, LabError> {
        if !self.opts.faketime {
            return Ok(Vec::new());
        }
        let lib = Path::new(FAKETIME_LIB);
        if !lib.is_file() {
            return Err(LabError::Failed(format!(
                "clock faults need libfaketime ({FAKETIME_LIB}): apt-get install -y faketime, or scripts/setup.sh"
            )));
        }
        let file = self.clock_file(r);
        if !file.exists() {
            std::fs::write(&file, "+0\n")?;
        }
        Ok(vec![
            ("LD_PRELOAD", FAKETIME_LIB.to_owned()),
            ("FAKETIME_TIMESTAMP_FILE", file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1".to_owned()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_owned()),
        ])
    }

    fn clock_file(&self, r: &str) -> PathBuf {
        self.opts.dir.join(r).join("faketime.rc")
    }

    /// Sets region `r`'s controller's wall clock to libfaketime offset `spec` (`+0`: the true
    /// time; `+30`/`-1.5`: stepped by that many seconds). Needs [`LabOptions::faketime`].
    pub fn set_clock(&self, r: &str, spec: &str) -> Result<(), LabError> {
        if !self.opts.faketime {
            return Err(LabError::Failed(
                "clock faults need the lab started with faketime".into(),
            ));
        }
        let file = self.clock_file(r);
        let tmp = file.with_extension("rc.tmp");
        std::fs::write(&tmp, format!("{spec}\n"))?;
        std::fs::rename(&tmp, &file)?;
        Ok(())
    }

    /// `program` to run on host `host` (inside its namespace with `--net netns`).
    fn command_on(&self, host: &str, program: &Path) -> Result<tokio::process::Command, LabError> {
        let ns = match &self.net {
            Some(n) => n
                .lock()
                .map_err(|_| LabError::Failed("lab network lock poisoned".into()))?
                .netns(host)?
                .map(str::to_owned),
            None => None,
        };
        Ok(match ns {
            Some(ns) => {
                let mut c = tokio::process::Command::new("ip");
                c.args(["netns", "exec", &ns]).arg(program);
                c
            }
            None => tokio::process::Command::new(program),
        })
    }

    /// Whether partitions are packet drops (network namespaces).
    pub fn black_holes(&self) -> bool {
        self.net.is_some()
    }

    /// Cuts (`true`) or heals (`false`) region `r`'s network path to the witness. With
    /// namespaces the packets between the two hosts are dropped both ways (region still
    /// reachable by its peer and the clients), and healing removes EVERY cut; on loopback the
    /// lab's proxy drops open connections and refuses new ones.
    pub fn partition_from_witness(&self, r: &str, cut: bool) -> Result<(), LabError> {
        if self.net.is_some() {
            return if cut {
                self.cut(r, net::WITNESS, Direction::Both)
            } else {
                self.heal()
            };
        }
        if let Some(tx) = self.cuts.get(r) {
            let _ = tx.send(cut);
        }
        Ok(())
    }

    /// Drops packets from host `from` to host `to` (hosts: the regions, `witness`,
    /// `clients`), both ways or one way. Needs `--net netns`.
    pub fn cut(&self, from: &str, to: &str, dir: Direction) -> Result<(), LabError> {
        let n = self.net.as_ref().ok_or_else(|| {
            LabError::Failed("packet-drop partitions need the namespaced lab (--net netns)".into())
        })?;
        n.lock()
            .map_err(|_| LabError::Failed("lab network lock poisoned".into()))?
            .cut(from, to, dir)?;
        Ok(())
    }

    /// Removes every cut (namespaced lab; nothing on loopback).
    pub fn heal(&self) -> Result<(), LabError> {
        if let Some(n) = &self.net {
            n.lock()
                .map_err(|_| LabError::Failed("lab network lock poisoned".into()))?
                .heal_all()?;
        }
        Ok(())
    }

    /// Stops (`false`) or starts again (`true`) the witness process: a witness outage. The
    /// state file survives, so the witness comes back with every epoch it granted. Needs
    /// `--net netns` (on loopback the witness runs in this process).
    pub async fn witness_up(&mut self, up: bool) -> Result<(), LabError> {
        let n = self.net.as_ref().ok_or_else(|| {
            LabError::Failed("stopping the witness needs the namespaced lab (--net netns)".into())
        })?;
        if up {
            let ns = n
                .lock()
                .map_err(|_| LabError::Failed("lab network lock poisoned".into()))?
                .netns(net::WITNESS)?
                .map(str::to_owned);
            spawn_witness_in(&self.opts, ns.as_deref(), &mut self.witness, false).await
        } else {
            if let WitnessProc::Process { child, .. } = &mut self.witness {
                sigkill(child.take().map(|c| *c)).await;
            }
            Ok(())
        }
    }

    /// The step region `r`'s controller persisted last for its operation in progress
    /// (`operation.json`; `None`: no operation).
    pub fn operation_step(&self, r: &str) -> Option<String> {
        crate::trap::read_step(&self.opts.dir.join(r))
    }

    /// Region `r` as a [`crate::trap::StepTrap`] watches it: its state directory and its
    /// running controller's pid.
    pub fn watched(&self, r: &str) -> Result<crate::trap::Watched, LabError> {
        let pid = self.controller_pid(r)?;
        Ok(crate::trap::Watched {
            region: r.to_owned(),
            dir: self.opts.dir.join(r),
            pid,
        })
    }

    /// Region `r`'s last status (None before its first write).
    pub fn status(&self, r: &str) -> Option<RegionStatus> {
        read_status(&self.opts.dir.join(r).join("status.json")).ok()
    }

    /// The region that holds write authority according to the status files.
    pub fn primary(&self) -> Option<String> {
        REGIONS
            .iter()
            .filter_map(|r| self.status(r))
            .find(|s| {
                s.authority
                    && s.db_role == continuum_controller::decide::DbRole::Primary
                    && !s.read_only
            })
            .map(|s| s.region)
    }

    /// True when one region is primary with authority, its lease report says synchronous and
    /// the other is a streaming standby.
    pub fn healthy(&self) -> bool {
        let Some(p) = self.primary() else {
            return false;
        };
        let Some(ps) = self.status(&p) else {
            return false;
        };
        let other = REGIONS
            .iter()
            .find(|r| **r != p)
            .copied()
            .unwrap_or_default();
        let Some(os) = self.status(other) else {
            return false;
        };
        let fresh = |s: &RegionStatus| {
            let now = continuum_controller::exec::Clock::wall(
                &continuum_controller::exec::SystemClock::new(),
            );
            now.since(s.updated_at) < 3_000
        };
        fresh(&ps)
            && fresh(&os)
            && ps.lease_synchronous == Some(true)
            && ps.replication.sync
            && !ps.drained
            && os.db_role == continuum_controller::decide::DbRole::Standby
            && os.replication.streaming
            && ps.operation.is_none()
            && os.operation.is_none()
    }

    /// Waits until [`Lab::healthy`].
    pub async fn wait_healthy(&self, limit: Duration) -> Result<(), LabError> {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.healthy() {
            if tokio::time::Instant::now() >= deadline {
                return Err(LabError::Timeout(format!(
                    "the lab did not become healthy within {limit:?}: {}",
                    self.describe()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// One line per region: role, authority, lease, conditions, last error.
    pub fn describe(&self) -> String {
        REGIONS
            .iter()
            .map(|r| match self.status(r) {
                Some(s) => format!(
                    "{r}: db={:?} ro={} drained={} authority={} lease={}@{} sync={:?} streaming={} op={:?} conditions={:?} err={:?}",
                    s.db_role,
                    s.read_only,
                    s.drained,
                    s.authority,
                    s.lease_holder,
                    s.lease_epoch,
                    s.lease_synchronous,
                    s.replication.streaming,
                    s.operation.as_ref().map(|o| (&o.id, &o.step)),
                    s.conditions.iter().map(|c| c.kind).collect::<Vec<_>>(),
                    s.last_error
                ),
                None => format!("{r}: no status"),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Milliseconds of lease validity left now, as the witness answers (0: free or expired).
    pub async fn lease_remaining_ms(&self) -> Result<i64, LabError> {
        let v = self.lease().await?;
        Ok(v.state.remaining_ms(v.witness_now))
    }

    /// The lease as the witness answers now.
    pub async fn lease(&self) -> Result<contract::lease::LeaseView, LabError> {
        let client = witness_worker::client::WitnessClient::new(
            witness_worker::client::ClientConfig::new(&self.info.witness_url, OBSERVER_TOKEN),
            SLOT,
        )
        .map_err(|e| LabError::Failed(e.to_string()))?;
        let v = client
            .read()
            .await
            .map_err(|e| LabError::Failed(format!("reading the lease: {e}")))?;
        Ok(v)
    }

    /// Region `r`'s conninfo.
    pub fn conninfo(&self, r: &str) -> String {
        node(&self.pair, r).conninfo()
    }

    /// Region `r`'s conninfo as the application role ([`APP_ROLE`]).
    pub fn app_conninfo(&self, r: &str) -> String {
        node(&self.pair, r)
            .conninfo()
            .replace("user=postgres", &format!("user={APP_ROLE}"))
    }

    /// A routed client's view of the lab: a DNS client asking the lab's PowerDNS, the
    /// application's hostname, and each region's address in [`REGIONS`] order.
    pub fn routing(
        &self,
    ) -> Result<(pdm_client::verify::Verifier, String, Vec<Ipv4Addr>), LabError> {
        let dns = pdm_client::verify::Verifier::new([self.info.dns])
            .map_err(|e| LabError::Failed(format!("DNS client: {e}")))?;
        Ok((dns, self.info.host.clone(), self.ips.to_vec()))
    }

    /// Stops the controllers, then every part (by drop).
    pub async fn down(mut self) {
        for (_, mut c) in std::mem::take(&mut self.controllers) {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Keep each database's server log beside the controller logs (the servers' own
        // directory is a temporary one that goes with the lab): `<region>/postgresql.log`.
        for r in REGIONS {
            let from = node(&self.pair, r).log_path();
            let _ = std::fs::copy(&from, self.opts.dir.join(r).join("postgresql.log"));
        }
        if self.opts.state_tmpfs {
            // Keep the logs: copy each state directory out of its tmpfs (to `<region>.state`),
            // then detach the tmpfs (lazily: processes still in it are killed right after).
            for r in REGIONS {
                let dir = self.opts.dir.join(r).display().to_string();
                let keep = self
                    .opts
                    .dir
                    .join(format!("{r}.state"))
                    .display()
                    .to_string();
                let _ = run_tool(&["cp", "-a", &dir, &keep]);
                let _ = run_tool(&["umount", "-l", &dir]);
            }
        }
    }
}

/// A fault of a region's state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFault {
    /// No byte left.
    Full,
    /// Remounted read-only.
    ReadOnly,
    /// Back to normal.
    Clear,
}

/// Runs a system tool, with its stderr in the error.
fn run_tool(argv: &[&str]) -> Result<(), LabError> {
    let out = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Failed(format!("{}: {e}", argv.join(" "))))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LabError::Failed(format!(
            "{}: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Spawns `cmd` with `RUST_LOG=info`, no stdin, stdout and stderr to `log`, killed when its
/// handle drops. The outer error is the log's, the inner the spawn's.
fn spawn_logged(
    cmd: &mut tokio::process::Command,
    log: std::fs::File,
) -> Result<std::io::Result<tokio::process::Child>, LabError> {
    Ok(cmd
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn())
}

/// SIGKILLs a child process (if any) and reaps it.
async fn sigkill(child: Option<tokio::process::Child>) {
    if let Some(mut c) = child {
        let _ = c.start_kill();
        let _ = c.wait().await;
    }
}

fn node<'a>(pair: &'a PgPair, r: &str) -> &'a Pg {
    if r == REGIONS[0] {
        pair.primary()
    } else {
        pair.standby()
    }
}

/// A stopped node that was a primary (no `standby.signal`) gets the fence files, like a
/// fencing annotation that survives restarts; true when it did (the node stays stopped).
fn boot_fenced(pg: &Pg) -> Result<bool, LabError> {
    let dir = pg.data_dir();
    if dir.join("standby.signal").exists() {
        return Ok(false);
    }
    continuum_controller::adapters::postgres::write_fence_files(dir, 0)?;
    Ok(true)
}

/// The lab's Continuum object (same shape as the CR) with the current requests.
fn config_text(ttl: u32, renew: u32, durability: &str, extra: &SpecExtra) -> String {
    let mut switchover = String::new();
    if let Some((id, target)) = &extra.switchover {
        switchover = format!(
            "  switchover:\n    requested: true\n    id: {id}\n    targetRegion: {target}\n"
        );
    }
    let mut failback = String::new();
    if let Some((id, approved)) = &extra.failback {
        failback = format!(
            "  failback:\n    requested: true\n    id: {id}\n    approvalRequired: true\n    approved: {approved}\n"
        );
    }
    format!(
        "# Written by `continuum-lab`: the lab's Continuum (same shape as the CR).\n\
         apiVersion: dr.openova.io/v1\nkind: Continuum\nmetadata:\n  name: lab-app-dr\n  namespace: lab\n\
         spec:\n  applicationRef: lab-app\n  primaryRegion: {a}\n  hotStandbyRegions: [{b}]\n\
         \x20 leaseClient:\n    kind: cloudflare-kv\n    config:\n      ttlSeconds: {ttl}\n      renewSeconds: {renew}\n\
         \x20 rpo: 0s\n  autoFailover: true\n  durability: {durability}\n{switchover}{failback}",
        a = REGIONS[0],
        b = REGIONS[1],
    )
}

/// A port free on both region addresses.
fn front_port() -> Result<u16, LabError> {
    for _ in 0..50 {
        let port = testkit::free_port().map_err(|e| LabError::Failed(e.to_string()))?;
        let free = IPS
            .iter()
            .all(|ip| std::net::TcpListener::bind((*ip, port)).is_ok());
        if free {
            return Ok(port);
        }
    }
    Err(LabError::Failed(
        "no port free on 127.0.0.2 and 127.0.0.3".into(),
    ))
}

async fn start_witness(dir: &Path) -> Result<(String, tokio::sync::oneshot::Sender<()>), LabError> {
    use witness_worker::auth::Tokens;
    use witness_worker::server::{Witness, serve, system_clock};
    use witness_worker::store::FileStore;
    let store = FileStore::open(dir.join("witness.json"))
        .map_err(|e| start_err("witness")(e.to_string()))?;
    let tokens =
        Tokens::from_json(&witness_tokens()).map_err(|e| start_err("witness")(e.to_string()))?;
    let w = Witness::new(store, tokens, system_clock());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, w, async {
        let _ = rx.await;
    }));
    Ok((url, tx))
}

/// Starts the `witness-server` of a namespaced lab (first start: `--init`).
async fn spawn_witness(
    opts: &LabOptions,
    net: &Net,
    w: &mut WitnessProc,
    init: bool,
) -> Result<(), LabError> {
    let ns = net.netns(net::WITNESS)?.map(str::to_owned);
    spawn_witness_in(opts, ns.as_deref(), w, init).await
}

async fn spawn_witness_in(
    opts: &LabOptions,
    netns: Option<&str>,
    w: &mut WitnessProc,
    init: bool,
) -> Result<(), LabError> {
    let WitnessProc::Process { child, listen } = w else {
        return Ok(());
    };
    if child.is_some() {
        return Ok(());
    }
    let bin = opts.witness_bin.as_ref().ok_or_else(|| {
        start_err("witness")("no witness-server executable given (--witness-bin)".into())
    })?;
    let dir = opts.dir.join("witness");
    std::fs::create_dir_all(&dir)?;
    let tokens = dir.join("tokens.yaml");
    std::fs::write(&tokens, witness_tokens())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("witness.log"))?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = tokio::process::Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => tokio::process::Command::new(bin),
    };
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--tokens")
        .arg(&tokens);
    if init {
        cmd.arg("--init");
    }
    let spawned = spawn_logged(&mut cmd, log)?
        .map_err(|e| start_err("witness")(format!("spawning {}: {e}", bin.display())))?;
    *child = Some(Box::new(spawned));
    // Ready when its health endpoint answers.
    let url = format!("http://{listen}/healthz");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| start_err("witness")(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if http
            .get(&url)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return Ok(());
        }
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(start_err("witness")(format!(
                "witness-server exited ({status}); see {}",
                dir.join("witness.log").display()
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(start_err("witness")(format!(
                "{url} did not answer within 20 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy to `target` on a free loopback port that can be cut: while the watch value is
/// `true`, open connections are dropped and new ones closed at once.
async fn start_cuttable_proxy(
    target: SocketAddr,
) -> Result<(String, tokio::sync::watch::Sender<bool>), LabError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            if *rx.borrow() {
                drop(inbound);
                continue;
            }
            let mut cut = rx.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    _ = cut.wait_for(|c| *c) => {}
                }
            });
        }
    });
    Ok((url, tx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use continuum_controller::decide::Durability;

    fn spec_of(text: &str) -> continuum_controller::decide::Spec {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, text).unwrap();
        continuum_controller::standalone::load_spec(&path).unwrap()
    }

    #[test]
    fn the_lab_config_is_a_valid_continuum_with_its_requests() {
        let s = spec_of(&config_text(6, 2, "strict", &SpecExtra::default()));
        assert_eq!(s.name, "lab/lab-app-dr");
        assert_eq!(s.regions, ["region-a", "region-b"]);
        assert_eq!((s.timing.ttl_ms, s.timing.renew_ms), (6_000, 2_000));
        assert_eq!(s.durability, Durability::Strict);
        assert!(s.auto_failover && s.switchover.is_none() && s.failback.is_none());
        let extra = SpecExtra {
            switchover: Some(("sw-1".into(), "region-b".into())),
            failback: Some(("fb-1".into(), false)),
        };
        let s = spec_of(&config_text(30, 10, "default", &extra));
        let sw = s.switchover.unwrap();
        assert_eq!((sw.id.as_str(), sw.target.as_str()), ("sw-1", "region-b"));
        let fb = s.failback.unwrap();
        assert_eq!(fb.id, "fb-1");
        assert!(!fb.approved);
    }

    #[test]
    fn a_config_with_a_bad_timing_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, config_text(6, 5, "default", &SpecExtra::default())).unwrap();
        let e = continuum_controller::standalone::load_spec(&path)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.yaml"), "{e}");
    }
}
