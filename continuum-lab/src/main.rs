//! `continuum-lab`: the two-region lab on loopback (real PostgreSQL pair, PowerDNS, NATS,
//! witness-server, one `continuum-controller` and one database watchdog per region) and the
//! drill that kills, partitions and switches it over while a writer keeps a ledger. A crate of
//! its own so that the controller that ships in the image links no test harness.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use continuum_controller::cli::{init_tracing, shutdown_signal};
use continuum_lab::campaign;
use continuum_lab::drill::{self, DrillOptions, Faults};
use continuum_lab::lab::{Lab, LabInfo, LabOptions, NetMode};

/// The Continuum lab and drill.
#[derive(Debug, Parser)]
#[command(name = "continuum-lab", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
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
    /// Many drills, each on a fresh lab with two or three faults drawn from the seed (kills,
    /// controller kills, pauses, database kills, witness partitions, double failures, witness
    /// outages, switchovers, switchovers crashed step by step; a failback one run in three),
    /// with the hostile client and the checker. Prints one `campaign run …` line per run, the
    /// takeover times per fault kind and one `campaign: …` summary line; exits 1 on any lost
    /// acknowledged write, any two writers, or any run that could not finish.
    Campaign {
        /// Runs.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        /// Campaign seed: run i's schedule and phases come from it (printed per run).
        #[arg(long, env = "CAMPAIGN_SEED", default_value_t = 1)]
        seed: u64,
        /// Interval of the hostile client, ms (0: none).
        #[arg(long, default_value_t = 50)]
        hostile_interval_ms: u64,
        /// How each run's faults are drawn: `uniform` (two or three, uniform over every kind)
        /// or `focus` (a controller-only kill in every run, then one or two more that favour
        /// pauses, clock faults and double failures).
        #[arg(long, env = "CAMPAIGN_MIX", value_enum, default_value_t = campaign::Mix::Uniform)]
        mix: campaign::Mix,
        #[command(flatten)]
        lab: LabArgs,
    },
    /// Start a lab, then kill, switch over and fail back while a writer keeps a ledger; prints
    /// progress and one `drill: …` summary line; exits 1 if a transaction was lost or two
    /// regions accepted writes.
    Drill {
        #[command(flatten)]
        drill: DrillFlags,
        #[command(flatten)]
        lab: LabArgs,
    },
}

/// The drill's faults and clients (see `continuum-lab drill --help`).
#[derive(Debug, Clone, clap::Args)]
struct DrillFlags {
    #[command(flatten)]
    faults: Faults,
    /// Crash the switchover source and target at each step boundary (the steps their
    /// controllers persist, found by one clean switchover, plus the target between acquiring
    /// the lease and persisting its operation); each controller restarts at once.
    #[arg(long)]
    switchover_crashes: bool,
    /// Seed of the schedule's random phases (default: from the clock; printed).
    #[arg(long, env = "DRILL_SEED")]
    seed: Option<u64>,
    /// Interval of the hostile client, ms (0: none). It writes straight to both databases
    /// as the application role with `default_transaction_read_only = off`, `BEGIN READ
    /// WRITE` and `synchronous_commit = local`; the checker looks for split brain in what
    /// it got acknowledged.
    #[arg(long, default_value_t = 50)]
    hostile_interval_ms: u64,
    /// Skip the approved failback at the end.
    #[arg(long)]
    no_failback: bool,
}

impl DrillFlags {
    fn options(&self, write_interval_ms: u64, restart_at_once: bool) -> DrillOptions {
        DrillOptions {
            faults: self.faults.clone(),
            switchover_crashes: self.switchover_crashes,
            seed: self.seed,
            hostile_interval: (self.hostile_interval_ms > 0)
                .then(|| Duration::from_millis(self.hostile_interval_ms)),
            failback: !self.no_failback,
            restart_at_once,
            interval: Duration::from_millis(write_interval_ms.max(1)),
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
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
    /// Run no database watchdogs (fault injection: removes what fences a paused or killed
    /// controller's database).
    #[arg(long)]
    no_watchdog: bool,
    /// The `continuum-controller` binary each region runs (controller and watchdog). Default:
    /// the one next to this executable (`cargo build` puts both in the same directory).
    #[arg(long, env = "CONTINUUM_CONTROLLER_BIN")]
    controller_bin: Option<PathBuf>,
    /// The `witness-server` binary the namespaced lab runs on the witness's host. Default: the
    /// one next to this executable.
    #[arg(long, env = "CONTINUUM_WITNESS_BIN")]
    witness_bin: Option<PathBuf>,
    /// The lab's network. `netns`: each region and the witness a network namespace on a
    /// bridge, partitions are nftables DROP rules (packets vanish; needs root, iproute2 and
    /// nftables). `loopback`: every part on 127.0.0.x, partitions through a TCP proxy that
    /// drops connections. Default: `netns` as root, `loopback` otherwise.
    #[arg(long, env = "CONTINUUM_LAB_NET", value_enum)]
    net: Option<NetMode>,
}

impl LabArgs {
    /// `--net`, or its default: namespaces as root.
    fn options_net(&self) -> NetMode {
        self.net.unwrap_or(if nix::unistd::geteuid().is_root() {
            NetMode::Netns
        } else {
            NetMode::Loopback
        })
    }

    fn options(&self) -> anyhow::Result<LabOptions> {
        // A lab that died with its state directories mounted (state-directory faults) would
        // make the wipe fail with EBUSY: detach them first.
        if nix::unistd::geteuid().is_root() {
            for r in continuum_lab::lab::REGIONS {
                let d = self.dir.join(r);
                if d.exists() {
                    let _ = std::process::Command::new("umount")
                        .arg("-l")
                        .arg(&d)
                        .stderr(std::process::Stdio::null())
                        .status();
                }
            }
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir)
                .with_context(|| format!("wiping {}", self.dir.display()))?;
        }
        std::fs::create_dir_all(&self.dir)?;
        let net = self.options_net();
        Ok(LabOptions {
            faketime: false,
            state_tmpfs: false,
            net,
            witness_bin: match net {
                NetMode::Netns => Some(sibling_bin(
                    self.witness_bin.as_deref(),
                    "witness-server",
                    "witness-worker",
                    "--witness-bin",
                )?),
                NetMode::Loopback => None,
            },
            dir: std::fs::canonicalize(&self.dir)?,
            ttl_seconds: self.ttl,
            renew_seconds: self.renew,
            durability: self.durability.clone(),
            controller_bin: sibling_bin(
                self.controller_bin.as_deref(),
                "continuum-controller",
                "continuum-controller",
                "--controller-bin",
            )?,
            tick_ms: 50,
            watchdog: !self.no_watchdog,
        })
    }
}

/// `given`, or the executable `name` (of package `package`) next to this one.
fn sibling_bin(
    given: Option<&Path>,
    name: &str,
    package: &str,
    flag: &str,
) -> anyhow::Result<PathBuf> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    let me = std::env::current_exe().context("locating this executable")?;
    let sibling = me.with_file_name(name);
    if sibling.is_file() {
        Ok(sibling)
    } else {
        anyhow::bail!(
            "no {name} next to {}: build it (`cargo build -p {package} --bin {name}`) or pass {flag}",
            me.display()
        )
    }
}

fn nix_pid(pid: u32) -> anyhow::Result<nix::unistd::Pid> {
    Ok(nix::unistd::Pid::from_raw(i32::try_from(pid)?))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Up { lab: args } => {
            init_tracing();
            let lab = Lab::up(args.options()?).await?;
            let info = lab.info().clone();
            println!("lab up in {}:", info.dir.display());
            for h in &info.hosts {
                println!("  host      {h}");
            }
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
                "primary: {}. Ctrl-C or `continuum-lab down --dir {}` stops it.",
                lab.primary().unwrap_or_default(),
                info.dir.display()
            );
            shutdown_signal().await;
            lab.down().await;
            println!("lab down");
        }
        Cmd::Down { dir } => {
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
        Cmd::Campaign {
            runs,
            seed,
            hostile_interval_ms,
            mix,
            lab: args,
        } => {
            let mut summary = campaign::Summary::default();
            let black_holes = args.options_net() == NetMode::Netns;
            let interval = Duration::from_millis(args.write_interval_ms.max(1));
            let hostile =
                (hostile_interval_ms > 0).then(|| Duration::from_millis(hostile_interval_ms));
            let (ttl, renew) = (
                Duration::from_secs(u64::from(args.ttl)),
                Duration::from_secs(u64::from(args.renew)),
            );
            println!(
                "campaign: {runs} runs, seed {seed}, TTL {} s, renew {} s, durability {}, network {}, in {}{}",
                args.ttl,
                args.renew,
                args.durability,
                if black_holes {
                    "netns (nftables DROP)"
                } else {
                    "loopback (TCP proxy)"
                },
                args.dir.display(),
                if mix == campaign::Mix::Focus {
                    ", mix focus"
                } else {
                    ""
                }
            );
            for i in 0..runs {
                let run_seed = campaign::run_seed(seed, i);
                let opts = campaign::schedule_mix(mix, run_seed, interval, hostile, black_holes);
                let faults = campaign::faults(&opts)
                    .iter()
                    .map(|(k, n)| format!("{k}:{n}"))
                    .collect::<Vec<_>>()
                    .join(",");
                println!(
                    "campaign run {}/{runs} seed={run_seed} faults={faults}",
                    i + 1
                );
                let mut run_args = args.clone();
                run_args.dir = args.dir.join(format!("run-{}", i + 1));
                let result = async {
                    let mut lab_opts = run_args.options()?;
                    lab_opts.faketime = opts.faults.clock_faults > 0;
                    lab_opts.state_tmpfs = opts.faults.state_dir_faults > 0;
                    let mut lab = Lab::up(lab_opts).await?;
                    let r = drill::run(&mut lab, &opts, ttl, renew).await;
                    lab.down().await;
                    anyhow::Ok(r?)
                }
                .await;
                match result {
                    Ok(rep) => {
                        // Every takeover of the run, whatever fault caused it.
                        let rto: Vec<u64> = rep.rto_by_kind.values().flatten().copied().collect();
                        println!(
                            "campaign run {}/{runs} seed={run_seed} faults={faults} lost_tx={} split_brain={} dual_writers={} superseded_writes={} rto_p50_ms={} rto_p99_ms={}",
                            i + 1,
                            rep.lost_tx + rep.final_lost,
                            rep.split_brain,
                            rep.dual_writers,
                            rep.superseded_writes,
                            drill::quantile(&rto, 0.5),
                            drill::quantile(&rto, 0.99),
                        );
                        summary.add(&opts, &rep);
                    }
                    Err(e) => {
                        println!(
                            "campaign run {}/{runs} seed={run_seed} faults={faults} FAILED: {e} (logs in {})",
                            i + 1,
                            run_args.dir.display()
                        );
                        summary.add_failed(i + 1, run_seed, &opts, e.to_string());
                    }
                }
            }
            for l in summary.per_kind() {
                println!("{l}");
            }
            println!("{}", summary.line());
            if !summary.clean() {
                std::process::exit(1);
            }
        }
        Cmd::Drill {
            drill: flags,
            lab: args,
        } => {
            let mut opts = args.options()?;
            opts.faketime = flags.faults.clock_faults > 0;
            opts.state_tmpfs = flags.faults.state_dir_faults > 0;
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
                &flags.options(args.write_interval_ms, args.durability == "strict"),
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
            if rep.done.db_kills > 0 {
                println!("database_kills={} (all taken over)", rep.done.db_kills);
            }
            if rep.done.partitions > 0 {
                println!(
                    "partitions={} fenced_before_grant={}",
                    rep.done.partitions,
                    rep.done.partitions - rep.fence_after_grant
                );
            }
            if rep.done.db_pauses > 0 {
                println!("database_freezes={} (all taken over)", rep.done.db_pauses);
            }
            if rep.done.ctl_kills > 0 || rep.done.pauses > 0 {
                println!(
                    "controller_kills={} pauses={} (all taken over, databases fenced by their watchdogs)",
                    rep.done.ctl_kills, rep.done.pauses
                );
            }
            if !rep.switchover_crashes.is_empty() {
                let worst = rep
                    .switchover_crashes
                    .iter()
                    .map(|c| c.writer_after_ms)
                    .max()
                    .unwrap_or(0);
                println!(
                    "switchover_crashes={} missed={} worst_writer_after_ms={worst}",
                    rep.switchover_crashes.len(),
                    rep.switchover_crash_misses
                );
            }
            if rep.done.double_failures > 0 {
                println!(
                    "double_failures={} superseded_writes={}",
                    rep.done.double_failures, rep.superseded_writes
                );
            }
            let d = &rep.done;
            if d.isolations + d.region_splits + d.one_way_cuts + d.flaps + d.orphans > 0 {
                println!(
                    "isolations={} region_splits={} one_way_cuts={} flaps={} orphans={} superseded_writes={}",
                    d.isolations,
                    d.region_splits,
                    d.one_way_cuts,
                    d.flaps,
                    d.orphans,
                    rep.superseded_writes
                );
            }
            if rep.done.clock_faults > 0 || rep.done.state_dir_faults > 0 {
                println!(
                    "clock_faults={} state_dir_faults={}",
                    rep.done.clock_faults, rep.done.state_dir_faults
                );
            }
            for (kind, v) in &rep.rto_by_kind {
                println!(
                    "rto[{kind}]: n={} p50_ms={} p99_ms={}",
                    v.len(),
                    drill::quantile(v, 0.5),
                    drill::quantile(v, 0.99)
                );
            }
            if rep.done.witness_outages > 0 {
                println!(
                    "witness_outages={} outage_gap_p50_ms={} outage_gap_max_ms={}",
                    rep.done.witness_outages,
                    drill::quantile(&rep.outage_gap_ms, 0.5),
                    drill::quantile(&rep.outage_gap_ms, 1.0)
                );
            }
            if rep.lost_tx > 0
                || rep.superseded_writes > 0
                || rep.dual_writers > 0
                || rep.fence_after_grant > 0
                || rep.split_brain > 0
                || rep.final_lost > 0
            {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
