//! `continuum-controller`: the DR orchestrator of one region (standalone mode or the
//! Kubernetes operator), its database watchdog, and operator commands (`status`, `plan`, `k`).
//! The lab and the drill live in `continuum-lab`, so this binary links no test harness.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use continuum_controller::cli::{init_tracing, shutdown_signal};
use continuum_controller::decide::{self, Mono, Observed, SwitchoverRequest};
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
        Cmd::Status {
            paths,
            lab_dir,
            output,
        } => {
            let paths: Vec<PathBuf> = if paths.is_empty() {
                lab_regions(&lab_dir)?
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
            init_tracing();
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

/// The region state directories of a lab (`continuum-lab up`): its subdirectories that hold a
/// `status.json`, in name order.
fn lab_regions(dir: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!(
            "no lab in {} (give status files or --lab-dir)",
            dir.display()
        )
    })?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("status.json").is_file())
        .collect();
    out.sort();
    if out.is_empty() {
        anyhow::bail!("no region status files under {}", dir.display());
    }
    Ok(out)
}
