//! `continuum-controller`: the DR orchestrator of one region (standalone mode), the lab and the
//! drill, and operator commands (`status`, `plan`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use continuum_controller::decide::{self, Mono, Observed, SwitchoverRequest};
use continuum_controller::drill::{self, DrillOptions};
use continuum_controller::lab::{self, Lab, LabInfo, LabOptions};
use continuum_controller::standalone::{self, Endpoints, RegionStatus, RunOptions, Secrets};

/// DR orchestrator for one region of a Continuum: lease in a witness, self-fencing, failover,
/// planned switchover and approved failback of a PostgreSQL pair, DNS flip, audit on NATS.
#[derive(Debug, Parser)]
#[command(name = "continuum-controller", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run one region's controller (standalone mode, no Kubernetes).
    Run {
        /// This region's id (one of the Continuum's regions).
        #[arg(long, env = "CONTINUUM_REGION")]
        region: String,
        /// Continuum object (YAML, same shape as the CR). Re-read when it changes: edit it to
        /// request a switchover or approve a failback.
        #[arg(long, env = "CONTINUUM_CONFIG")]
        config: PathBuf,
        /// Data-plane wiring (YAML): witness URL, PostgreSQL per region, route fronts,
        /// PowerDNS, NATS.
        #[arg(long, env = "CONTINUUM_ENDPOINTS")]
        endpoints: PathBuf,
        /// Directory for `status.json` (read by `status`) and `operation.json` (the persisted
        /// operation a restart resumes).
        #[arg(long, env = "CONTINUUM_STATE_DIR")]
        state_dir: PathBuf,
        /// Bearer token for the witness.
        #[arg(
            long,
            env = "CONTINUUM_WITNESS_TOKEN",
            hide_env_values = true,
            default_value = ""
        )]
        witness_token: String,
        /// PowerDNS API key.
        #[arg(
            long,
            env = "CONTINUUM_POWERDNS_API_KEY",
            hide_env_values = true,
            default_value = ""
        )]
        powerdns_api_key: String,
        /// Longest pause between two control ticks, ms (the loop also wakes exactly when the
        /// lease frees up or a renew falls due).
        #[arg(long, env = "CONTINUUM_TICK_MS", default_value_t = 100)]
        tick_ms: u64,
        /// Serve `/healthz`, `/readyz` and `/metrics` (`continuum_*`) on this address.
        #[arg(long, env = "CONTINUUM_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Run the database watchdog of one region: an independent process that fences the local
    /// PostgreSQL server (fence marker + standby.signal + `pg_ctl stop -m immediate`) when the
    /// lease deadline the controller armed passes without a renewal. It is what stops an old
    /// primary whose controller is paused (SIGSTOP, GC, VM pause) or killed from acknowledging
    /// writes once the peer may hold the lease. Point `run`'s endpoints `watchdogUrl` at it.
    Watchdog {
        /// Address to serve `POST /arm`, `GET /state`, `/healthz` on (loopback recommended).
        #[arg(
            long,
            env = "CONTINUUM_WATCHDOG_LISTEN",
            default_value = "127.0.0.1:7480"
        )]
        listen: std::net::SocketAddr,
        /// The PostgreSQL data directory to fence.
        #[arg(long, env = "CONTINUUM_WATCHDOG_DATA_DIR")]
        data_dir: PathBuf,
        /// Directory of `pg_ctl`.
        #[arg(
            long,
            env = "CONTINUUM_WATCHDOG_BINDIR",
            default_value = "/usr/lib/postgresql/15/bin"
        )]
        bindir: PathBuf,
        /// OS user the server runs as (`runuser -u`), when this process runs as root.
        #[arg(long, env = "CONTINUUM_WATCHDOG_RUN_AS")]
        run_as: Option<String>,
    },
    /// Start or stop the two-region lab on loopback (real PostgreSQL, PowerDNS, NATS, witness).
    Lab {
        #[command(subcommand)]
        action: LabAction,
    },
    /// Start a lab, then kill, switch over and fail back while a writer keeps a ledger; prints
    /// progress and one `drill: …` summary line; exits 1 if a transaction was lost or two
    /// regions accepted writes.
    Drill {
        /// Kills (SIGKILL of the primary region's database, route and controller).
        #[arg(long, default_value_t = 2)]
        kills: u32,
        /// Planned switchovers.
        #[arg(long, default_value_t = 1)]
        switchovers: u32,
        /// Partitions: the primary region is cut from the witness (TCP, through the lab's
        /// proxy) and must self-fence before the standby is granted the lease.
        #[arg(long, default_value_t = 0)]
        partitions: u32,
        /// Database-only kills: the primary's PostgreSQL dies while its controller lives; the
        /// controller must stop renewing so the standby takes over.
        #[arg(long, default_value_t = 0)]
        db_kills: u32,
        /// Skip the approved failback at the end.
        #[arg(long)]
        no_failback: bool,
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Show each region's state from its status file (the lab's by default).
    Status {
        /// Status files or state directories (default: the regions of `--lab-dir`).
        paths: Vec<PathBuf>,
        /// Lab directory.
        #[arg(long, default_value = ".lab")]
        lab_dir: PathBuf,
        /// Output: `table` or `json`.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
    },
    /// Print what a planned switchover to `--to` would do now from a region's last
    /// observation (or from `--observed`), without doing it.
    Plan {
        /// The region's status file or state directory.
        #[arg(long, conflicts_with = "observed")]
        status: Option<PathBuf>,
        /// An observed state as JSON (see `sample`).
        #[arg(long, env = "CONTINUUM_OBSERVED")]
        observed: Option<PathBuf>,
        /// Target region of the switchover to plan (omitted: plan the observation as it is).
        #[arg(long)]
        to: Option<String>,
        /// Local monotonic "now" in ms (default: the observation's newest instant).
        #[arg(long)]
        now_ms: Option<i64>,
    },
    /// Print a sample observed state: primary `a` renewed at 0.
    Sample,
    /// Run this region's controller on Kubernetes: watch Continuum objects, drive CNPG
    /// Clusters and HTTPRoutes, elect a leader among replicas (coordination.k8s.io Lease),
    /// serve /healthz, /readyz, /metrics. Exits non-zero when leadership is lost.
    Operator(continuum_controller::kube::cli::OperatorArgs),
    /// Operator commands against a cluster via kubeconfig: `k status`, `k plan <name> --to`,
    /// `k switchover <name> --to`, `k approve-failback <name>`.
    K(continuum_controller::kube::cli::KubeArgs),
}

#[derive(Debug, Subcommand)]
enum LabAction {
    /// Start the lab and keep it running until SIGINT/SIGTERM (`lab down`).
    Up {
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Stop a running lab.
    Down {
        /// Lab directory.
        #[arg(long, default_value = ".lab")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
struct LabArgs {
    /// Lab directory (config, endpoints, status files, controller logs). Wiped at start.
    #[arg(long, default_value = ".lab")]
    dir: PathBuf,
    /// Lease TTL in seconds.
    #[arg(long, default_value_t = 30)]
    ttl: u32,
    /// Lease renew interval in seconds.
    #[arg(long, default_value_t = 10)]
    renew: u32,
    /// Durability after an unplanned failover: `default` (writes resume, sync suspended until
    /// the old primary is rebuilt) or `strict` (writes wait for a synchronous standby).
    #[arg(long, default_value = "default")]
    durability: String,
    /// Writer interval of the drill, ms.
    #[arg(long, default_value_t = 20)]
    write_interval_ms: u64,
}

impl LabArgs {
    fn options(&self) -> anyhow::Result<LabOptions> {
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("wiping {}", self.dir.display()))?;
        }
        std::fs::create_dir_all(&self.dir)?;
        Ok(LabOptions {
            dir: std::fs::canonicalize(&self.dir)?,
            ttl_seconds: self.ttl,
            renew_seconds: self.renew,
            durability: self.durability.clone(),
            controller_bin: std::env::current_exe().context("locating this executable")?,
            tick_ms: 50,
        })
    }
}

fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn status_path(p: &std::path::Path) -> PathBuf {
    if p.is_dir() {
        p.join("status.json")
    } else {
        p.to_owned()
    }
}

fn print_status(rows: &[RegionStatus], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<10} {:<8} {:<9} {:<8} {:<6} {:<14} {:<5} {:<9} {:<24} CONDITIONS",
        "REGION", "DB", "WRITABLE", "ROUTE", "EPOCH", "LEASE", "SYNC", "LAG", "OPERATION"
    );
    for s in rows {
        let writable = s.db_role == decide::DbRole::Primary && !s.read_only && s.authority;
        println!(
            "{:<10} {:<8} {:<9} {:<8} {:<6} {:<14} {:<5} {:<9} {:<24} {}",
            s.region,
            format!("{:?}", s.db_role).to_lowercase(),
            if writable { "yes" } else { "no" },
            if s.drained { "drained" } else { "serving" },
            s.epoch,
            format!("{}@{}", s.lease_holder, s.lease_epoch),
            s.lease_synchronous
                .map_or("-", |b| if b { "yes" } else { "no" }),
            format!(
                "{}B/{}s",
                s.replication.lag_bytes.min(99_999_999),
                s.replication.lag_seconds.min(9_999)
            ),
            s.operation
                .as_ref()
                .map_or_else(|| "-".to_owned(), |o| format!("{}:{}", o.id, o.step)),
            s.conditions
                .iter()
                .map(|c| format!("{:?}", c.kind))
                .collect::<Vec<_>>()
                .join(",")
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Args { cmd } = Args::parse();
    match cmd {
        Cmd::Run {
            region,
            config,
            endpoints,
            state_dir,
            witness_token,
            powerdns_api_key,
            tick_ms,
            listen,
        } => {
            init_tracing();
            let endpoints = Endpoints::load(&endpoints)?;
            let opts = RunOptions {
                region,
                config,
                endpoints,
                state_dir,
                secrets: Secrets {
                    witness_token,
                    powerdns_api_key,
                },
                tick: Duration::from_millis(tick_ms.max(10)),
                listen,
            };
            standalone::run(opts, shutdown_signal()).await?;
        }
        Cmd::Lab { action } => match action {
            LabAction::Up { lab: args } => {
                init_tracing();
                let lab = Lab::up(args.options()?).await?;
                let info = lab.info().clone();
                println!("lab up in {}:", info.dir.display());
                println!("  witness   {}", info.witness_url);
                println!("  nats      {}", info.nats_url);
                println!(
                    "  dns       {} (dig @{} -p {} {})",
                    info.dns,
                    info.dns.ip(),
                    info.dns.port(),
                    info.host
                );
                for (r, c) in &info.postgres {
                    println!("  {r}  postgres: {c}  front: {}", info.fronts[r]);
                    if let Some(m) = info.metrics.get(r) {
                        println!("  {r}  controller: http://{m}/metrics");
                    }
                }
                println!(
                    "  status    continuum-controller status --lab-dir {}",
                    info.dir.display()
                );
                println!(
                    "primary: {}. Ctrl-C or `continuum-controller lab down --dir {}` stops it.",
                    lab.primary().unwrap_or_default(),
                    info.dir.display()
                );
                shutdown_signal().await;
                lab.down().await;
                println!("lab down");
            }
            LabAction::Down { dir } => {
                let body = std::fs::read(dir.join("lab.json"))
                    .with_context(|| format!("no lab running in {}", dir.display()))?;
                let info: LabInfo = serde_json::from_slice(&body)?;
                let pid = nix_pid(info.pid)?;
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
                    .with_context(|| format!("signalling lab process {}", info.pid))?;
                for _ in 0..300 {
                    if nix::sys::signal::kill(pid, None).is_err() {
                        println!("lab down");
                        return Ok(());
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                anyhow::bail!("lab process {} did not stop within 30 s", info.pid);
            }
        },
        Cmd::Drill {
            kills,
            switchovers,
            partitions,
            db_kills,
            no_failback,
            lab: args,
        } => {
            let opts = args.options()?;
            println!(
                "drill: starting the lab (TTL {} s, renew {} s, durability {}) in {}",
                args.ttl,
                args.renew,
                args.durability,
                opts.dir.display()
            );
            let started = std::time::Instant::now();
            let mut lab = Lab::up(opts).await?;
            println!(
                "lab healthy after {:.1} s: primary {}",
                started.elapsed().as_secs_f64(),
                lab.primary().unwrap_or_default()
            );
            let result = drill::run(
                &mut lab,
                &DrillOptions {
                    kills,
                    switchovers,
                    partitions,
                    db_kills,
                    failback: !no_failback,
                    restart_at_once: args.durability == "strict",
                    interval: Duration::from_millis(args.write_interval_ms.max(1)),
                },
                Duration::from_secs(u64::from(args.ttl)),
                Duration::from_secs(u64::from(args.renew)),
            )
            .await;
            let dir = lab.dir().to_owned();
            lab.down().await;
            let rep = match result {
                Ok(r) => r,
                Err(e) => {
                    eprintln!(
                        "drill failed: {e}\n(controller logs in {}/region-*/controller.log)",
                        dir.display()
                    );
                    std::process::exit(2);
                }
            };
            println!("{}", rep.line());
            if rep.db_kills > 0 {
                println!("database_kills={} (all taken over)", rep.db_kills);
            }
            if rep.partitions > 0 {
                println!(
                    "partitions={} fenced_before_grant={}",
                    rep.partitions,
                    rep.partitions - rep.fence_after_grant
                );
            }
            if rep.lost_tx > 0 || rep.dual_writers > 0 || rep.fence_after_grant > 0 {
                std::process::exit(1);
            }
        }
        Cmd::Status {
            paths,
            lab_dir,
            output,
        } => {
            let paths: Vec<PathBuf> = if paths.is_empty() {
                lab::REGIONS.iter().map(|r| lab_dir.join(r)).collect()
            } else {
                paths
            };
            let mut rows = Vec::new();
            for p in &paths {
                let p = status_path(p);
                rows.push(
                    standalone::read_status(&p)
                        .with_context(|| format!("reading {}", p.display()))?,
                );
            }
            print_status(&rows, output == "json")?;
        }
        Cmd::Plan {
            status,
            observed,
            to,
            now_ms,
        } => {
            let mut o: Observed = match (status, observed) {
                (Some(s), _) => {
                    let p = status_path(&s);
                    standalone::read_status(&p)
                        .with_context(|| format!("reading {}", p.display()))?
                        .observed
                }
                (None, Some(f)) => {
                    let body =
                        std::fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
                    serde_json::from_slice(&body).context("decoding observed state")?
                }
                (None, None) => anyhow::bail!("give --status <file|dir> or --observed <file>"),
            };
            if let Err(e) = o.spec.timing.validate() {
                anyhow::bail!("invalid timing: {e}");
            }
            if let Some(target) = to {
                o.spec.switchover = Some(SwitchoverRequest {
                    id: "plan-preview".into(),
                    target,
                });
                o.completed.retain(|c| c != "plan-preview");
            }
            let now = now_ms.map_or_else(|| newest_instant(&o), Mono);
            let plan = decide::decide(&o, now);
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        Cmd::Watchdog {
            listen,
            data_dir,
            bindir,
            run_as,
        } => {
            continuum_controller::watchdog::serve(
                listen,
                continuum_controller::watchdog::WatchdogConfig {
                    bindir,
                    data_dir,
                    run_as,
                },
            )
            .await
            .context("watchdog")?;
        }
        Cmd::Sample => println!("{}", serde_json::to_string_pretty(&decide::sample())?),
        Cmd::Operator(args) => {
            init_tracing();
            let _ = rustls::crypto::ring::default_provider().install_default();
            // Leadership lost or the Lease task died: exit before doing anything else.
            continuum_controller::kube::cli::operator(args, shutdown_signal())
                .await
                .context("continuum-controller operator")?;
        }
        Cmd::K(args) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            continuum_controller::kube::cli::kube_command(args).await?;
        }
    }
    Ok(())
}

/// The newest local instant in an observation (its "now" when it was taken).
fn newest_instant(o: &Observed) -> Mono {
    let mut t = Mono(0);
    if let Some(l) = &o.lease {
        t = t.max(l.received_at);
    }
    if let Some(r) = o.renewed {
        t = t.max(r.sent_at);
    }
    t
}

fn nix_pid(pid: u32) -> anyhow::Result<nix::unistd::Pid> {
    Ok(nix::unistd::Pid::from_raw(i32::try_from(pid)?))
}
