//! The drill: a ledger-keeping writer against the lab while regions are killed, switched over
//! and failed back.
//!
//! The writer tries, every `interval`, to commit one numbered row in EACH region's database
//! (`insert into ledger`), and records every acknowledged commit with its region and instants.
//! A region that is not the writable primary refuses (read-only, in recovery, down), so:
//! - `dual_writers` counts rounds in which BOTH regions acknowledged a write: two regions
//!   with write authority at the same instant;
//! - `lost_tx` counts acknowledged rows missing from the current primary, checked after every
//!   failover, switchover and failback;
//! - RTO is kill → first acknowledged write on the new primary; switchover unavailability is
//!   the gap between the last acknowledged write on the old primary and the first on the new.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::NoTls;

use crate::hostile::{self, Hostile};
use crate::lab::{Lab, LabError, REGIONS, StateFault};
use crate::net::{self, Direction};
use crate::trap::{StepTrap, Target};

/// One acknowledged commit.
#[derive(Debug, Clone)]
pub struct Ack {
    /// Row number.
    pub n: i64,
    /// Region that acknowledged it.
    pub region: usize,
    /// When it was sent.
    pub sent: Instant,
    /// When the acknowledgement arrived.
    pub acked: Instant,
    /// The same instant on the wall clock (compared with the witness's grant times).
    pub acked_wall: std::time::SystemTime,
}

#[derive(Debug, Default)]
struct Ledger {
    acks: Vec<Ack>,
    dual_rounds: u64,
    rounds: u64,
}

/// The writer task's handle.
#[derive(Debug, Clone)]
pub struct Writer {
    ledger: Arc<Mutex<Ledger>>,
}

fn lock(l: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Writer {
    /// Starts writing to both regions every `interval`; stops when `stop` flips.
    pub fn start(
        conninfos: [String; 2],
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Writer {
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let w = Writer {
            ledger: ledger.clone(),
        };
        tokio::spawn(async move {
            let mut clients: [Option<tokio_postgres::Client>; 2] = [None, None];
            let mut n: i64 = 0;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !*stop.borrow() {
                tick.tick().await;
                let round: Vec<(usize, i64)> = (0..2)
                    .map(|i| {
                        n += 1;
                        (i, n)
                    })
                    .collect();
                let mut futs = Vec::new();
                for (i, slot) in clients.iter_mut().enumerate() {
                    let info = conninfos[i].clone();
                    let num = round[i].1;
                    let c = slot.take();
                    futs.push(async move { write_one(c, &info, num, i).await });
                }
                let results = futures_util::future::join_all(futs).await;
                let mut acked_regions = 0;
                let mut l = lock(&ledger);
                l.rounds += 1;
                for (i, (client, ack)) in results.into_iter().enumerate() {
                    clients[i] = client;
                    if let Some(a) = ack {
                        acked_regions += 1;
                        l.acks.push(a);
                    }
                }
                if acked_regions == 2 {
                    l.dual_rounds += 1;
                }
            }
        });
        w
    }

    /// Acknowledged commits so far.
    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.ledger).acks.clone()
    }

    /// Rounds in which both regions acknowledged.
    pub fn dual_rounds(&self) -> u64 {
        lock(&self.ledger).dual_rounds
    }

    /// Rounds so far.
    pub fn rounds(&self) -> u64 {
        lock(&self.ledger).rounds
    }

    /// The first ack by `region` sent at or after `since`.
    pub fn first_ack_after(&self, region: usize, since: Instant) -> Option<Ack> {
        lock(&self.ledger)
            .acks
            .iter()
            .find(|a| a.region == region && a.sent >= since)
            .cloned()
    }

    /// Write unavailability across a change of primary: from the last ack by `old` before the
    /// new primary's first ack to that first ack, in ms (0 when `old` acknowledged nothing).
    pub fn gap_ms(&self, old: usize, first_on_new: &Ack) -> u64 {
        self.last_ack_before(old, first_on_new.acked)
            .map_or(0, |last| {
                first_on_new.acked.duration_since(last.acked).as_millis() as u64
            })
    }

    /// The first ack by `region` for a write sent at or after `sent_since` and acknowledged
    /// after `after` (a write sent before a fault may be acknowledged late, legitimately:
    /// its reply was held up, the row was replicated).
    pub fn acked_after(&self, region: usize, sent_since: Instant, after: Instant) -> Option<Ack> {
        lock(&self.ledger)
            .acks
            .iter()
            .find(|a| a.region == region && a.sent >= sent_since && a.acked > after)
            .cloned()
    }

    /// Acks by `region` acknowledged in `[from, to)`.
    pub fn acks_between(&self, region: usize, from: Instant, to: Instant) -> usize {
        lock(&self.ledger)
            .acks
            .iter()
            .filter(|a| a.region == region && a.acked >= from && a.acked < to)
            .count()
    }

    /// The last ack by `region` acknowledged before `before`.
    pub fn last_ack_before(&self, region: usize, before: Instant) -> Option<Ack> {
        lock(&self.ledger)
            .acks
            .iter()
            .rev()
            .find(|a| a.region == region && a.acked < before)
            .cloned()
    }
}

async fn write_one(
    client: Option<tokio_postgres::Client>,
    conninfo: &str,
    n: i64,
    region: usize,
) -> (Option<tokio_postgres::Client>, Option<Ack>) {
    let client = match client {
        Some(c) if !c.is_closed() => c,
        _ => {
            let Ok(Ok((c, conn))) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio_postgres::connect(conninfo, NoTls),
            )
            .await
            else {
                return (None, None);
            };
            tokio::spawn(conn);
            c
        }
    };
    let sent = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(3),
        client.execute(
            "insert into ledger (n, region) values ($1, $2)",
            &[&n, &REGIONS[region]],
        ),
    )
    .await;
    match r {
        Ok(Ok(_)) => (
            Some(client),
            Some(Ack {
                n,
                region,
                sent,
                acked: Instant::now(),
                acked_wall: std::time::SystemTime::now(),
            }),
        ),
        // A timed-out commit has an unknown outcome: not acknowledged, and the session may
        // still wait inside COMMIT, so drop it.
        Err(_) => (None, None),
        Ok(Err(_)) => (Some(client), None),
    }
}

/// The faults of one drill, by kind (the drill's flags; what a drill did, in its report).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Faults {
    /// Kills (SIGKILL of the primary region's database, route and controller).
    #[arg(long, default_value_t = 2)]
    pub kills: u32,
    /// Planned switchovers.
    #[arg(long, default_value_t = 1)]
    pub switchovers: u32,
    /// Partitions: the primary region is cut from the witness (TCP, through the lab's
    /// proxy) and must self-fence before the standby is granted the lease.
    #[arg(long, default_value_t = 0)]
    pub partitions: u32,
    /// Database-only kills: the primary's PostgreSQL dies while its controller lives; the
    /// controller must stop renewing so the standby takes over.
    #[arg(long, default_value_t = 0)]
    pub db_kills: u32,
    /// Controller-only kills: the primary's controller is SIGKILLed while its database and
    /// watchdog keep running; the watchdog must fence it at the lease deadline.
    #[arg(long, default_value_t = 0)]
    pub ctl_kills: u32,
    /// Pauses: the primary's controller is SIGSTOPped for longer than the TTL (a GC or VM
    /// pause), then SIGCONTed; it must find its lease gone and stay fenced.
    #[arg(long, default_value_t = 0)]
    pub pauses: u32,
    /// Database freezes: the primary's PostgreSQL (postmaster and backends) is SIGSTOPped for
    /// longer than the TTL, then SIGCONTed; the peer must take over, and the frozen old
    /// primary must acknowledge nothing once resumed.
    #[arg(long, default_value_t = 0)]
    pub db_pauses: u32,
    /// Double failures: the primary's region dies, the peer takes over, the peer's
    /// controller dies and its lease lapses, the old primary returns and must stay fenced
    /// (its last grant was superseded), then the peer's controller returns and re-takes its
    /// own lease.
    #[arg(long, default_value_t = 0)]
    pub double_failures: u32,
    /// Witness outages: both regions cut from the witness, alternately for less than the
    /// renew deadline (nothing may change) and for longer than the TTL (the primary fences,
    /// then a region re-takes the lease).
    #[arg(long, default_value_t = 0)]
    pub witness_outages: u32,
    /// Isolations (namespaced lab): the primary's host cut from everything (witness, peer,
    /// clients, and the shared host of DNS and NATS) by packet drops; the peer must take over,
    /// the old primary must never acknowledge again and is rebuilt after the heal.
    #[arg(long, default_value_t = 0)]
    pub isolations: u32,
    /// Region splits (namespaced lab): the two regions cut from each other, both still
    /// reaching the witness and the clients; the peer must not take over.
    #[arg(long, default_value_t = 0)]
    pub region_splits: u32,
    /// One-way cuts (namespaced lab): only the primary's packets to the witness dropped, or
    /// only the witness's packets to the primary, alternately; the peer must take over.
    #[arg(long, default_value_t = 0)]
    pub one_way_cuts: u32,
    /// Flapping (namespaced lab): the primary's link to the witness cut and healed at random
    /// intervals around the renew interval, for three TTLs.
    #[arg(long, default_value_t = 0)]
    pub flaps: u32,
    /// Clock faults (libfaketime): one controller's wall clock stepped forward 5 TTLs, back 5
    /// TTLs, or skewed ±10 %, in turn, for three TTLs (the monotonic clock is left alone).
    #[arg(long, default_value_t = 0)]
    pub clock_faults: u32,
    /// State-directory faults (each region's state directory is then a 64 MiB tmpfs; needs
    /// root): the primary's filled to the last byte, or remounted read-only, in turn, for
    /// three TTLs.
    #[arg(long, default_value_t = 0)]
    pub state_dir_faults: u32,
    /// Orphaned primaries (namespaced lab): the primary's controller SIGKILLed, then its host
    /// cut from the witness and the peer while its clients still reach it. Nothing but its
    /// database watchdog stops it from acknowledging once the peer promotes (run with
    /// `--no-watchdog` to see the checker find the split brain).
    #[arg(long, default_value_t = 0)]
    pub orphans: u32,
}

/// Drill settings.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// The faults to inject, by kind.
    pub faults: Faults,
    /// Crash the switchover source and target at each step boundary their controllers
    /// persist (discovered from one clean switchover), plus the target between acquiring the
    /// lease and persisting its operation; each controller is restarted at once.
    pub switchover_crashes: bool,
    /// Seed of the schedule's random phases (`None`: from the clock; printed either way).
    pub seed: Option<u64>,
    /// Interval of the hostile client (`None`: no hostile client).
    pub hostile_interval: Option<Duration>,
    /// Run the approved failback at the end.
    pub failback: bool,
    /// Restart the killed region at once instead of after the takeover (strict durability:
    /// writes resume only once a synchronous standby is back).
    pub restart_at_once: bool,
    /// Writer interval.
    pub interval: Duration,
}

/// One switchover crashed at a step boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchoverCrash {
    /// The side whose step boundary it was (`source` or `target`).
    pub at: String,
    /// The step that side had just persisted.
    pub step: String,
    /// The side whose controller was SIGKILLed there.
    pub victim: String,
    /// The first acknowledged write after the kill, ms.
    pub writer_after_ms: u64,
}

/// The drill's figures.
#[derive(Debug, Clone, Default)]
pub struct DrillReport {
    /// The faults injected, by kind.
    pub done: Faults,
    /// Double failures in which the superseded old primary took writes (must be 0).
    pub superseded_writes: u32,
    /// Write unavailability per witness outage, ms.
    pub outage_gap_ms: Vec<u64>,
    /// Switchovers crashed at a step boundary.
    pub switchover_crashes: Vec<SwitchoverCrash>,
    /// Crash points whose step did not come (not crashed).
    pub switchover_crash_misses: u32,
    /// The seed the schedule ran with.
    pub seed: u64,
    /// Checker: split-brain pairs in the hostile client's history (must be 0).
    pub split_brain: u64,
    /// Checker: hostile writes acknowledged.
    pub hostile_acked: u64,
    /// Checker: hostile writes acknowledged with `synchronous_commit = local` and absent from
    /// the final primary (lost with their timeline; reported, not a failure).
    pub hostile_lost_local: u64,
    /// Checker: routed writes acknowledged.
    pub routed_acked: u64,
    /// Checker: routed acknowledged writes absent from the final primary (counted in
    /// `final_lost` too; must be 0).
    pub routed_lost: u64,
    /// Checker: routed reads that missed a routed write acknowledged before they began.
    pub stale_reads: u64,
    /// Checker: ordinary acknowledged rows absent from the final primary (must be 0).
    pub final_lost: u64,
    /// Partitions in which the primary stopped acknowledging writes only AFTER the standby
    /// was granted the lease (must be 0).
    pub fence_after_grant: u32,
    /// Failbacks done.
    pub failbacks: u32,
    /// Acknowledged rows missing on a primary after a change.
    pub lost_tx: u64,
    /// Rounds in which both regions acknowledged a write.
    pub dual_writers: u64,
    /// Kill → first acknowledged write on the new primary, ms.
    pub rto_ms: Vec<u64>,
    /// Switchover write unavailability, ms.
    pub switchover_ms: Vec<u64>,
    /// Fault → first acknowledged write on the other region, ms, per fault kind (`kill`,
    /// `controller-kill`, `pause`, `db-kill`, `partition`, `double-failure`).
    pub rto_by_kind: std::collections::BTreeMap<String, Vec<u64>>,
    /// Acknowledged writes in total.
    pub acked: usize,
}

/// The `q`-quantile (nearest rank) of `v` (0 when empty).
pub fn quantile(v: &[u64], q: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

impl DrillReport {
    /// Records a takeover of fault `kind` (the kills and pauses also count in the RTO line).
    fn takeover(&mut self, kind: &str, ms: u64) {
        if matches!(kind, "kill" | "controller-kill" | "pause") {
            self.rto_ms.push(ms);
        }
        self.rto_by_kind
            .entry(kind.to_owned())
            .or_default()
            .push(ms);
    }

    /// The one summary line.
    pub fn line(&self) -> String {
        format!(
            "drill: kills={} switchovers={} lost_tx={} dual_writers={} rto_p50_ms={} rto_p99_ms={} switchover_p99_ms={}",
            self.done.kills,
            self.done.switchovers,
            self.lost_tx,
            self.dual_writers,
            quantile(&self.rto_ms, 0.5),
            quantile(&self.rto_ms, 0.99),
            quantile(&self.switchover_ms, 0.99),
        )
    }
}

/// A tiny xorshift generator for kill phases (no cryptographic use).
struct XorShift(u64);

impl XorShift {
    /// The clock's nanoseconds as a seed (when none is given).
    fn clock_seed() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
    }

    fn seeded(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    /// Uniform-ish in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 { 0 } else { self.0 % n }
    }
}

fn index_of(region: &str) -> usize {
    usize::from(region != REGIONS[0])
}

/// Counts acknowledged rows (up to now) missing from `region`'s database.
async fn lost_on(lab: &Lab, w: &Writer, region: &str) -> Result<u64, LabError> {
    // The server may be restarting (a fence is a restart in recovery): retry for a while.
    let mut tries = 0;
    let (c, conn) = loop {
        match tokio_postgres::connect(&lab.conninfo(region), NoTls).await {
            Ok(pair) => break pair,
            Err(e) if tries >= 300 => {
                return Err(LabError::Failed(format!("ledger check on {region}: {e}")));
            }
            Err(_) => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::spawn(conn);
    let acks = w.acks();
    let rows = c
        .query("select n from ledger", &[])
        .await
        .map_err(|e| LabError::Failed(format!("ledger check on {region}: {e}")))?;
    let present: BTreeSet<i64> = rows.iter().map(|r| r.get::<_, i64>(0)).collect();
    let missing: Vec<i64> = acks
        .iter()
        .map(|a| a.n)
        .filter(|n| !present.contains(n))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "LOST on {region}: {} acknowledged rows missing, first {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    Ok(missing.len() as u64)
}

/// Waits for the first write acknowledged at or after `since` by `region` (`None`: by either
/// region).
async fn wait_first_ack(
    w: &Writer,
    lab: &Lab,
    region: Option<usize>,
    since: Instant,
    limit: Duration,
) -> Result<Ack, LabError> {
    let deadline = since + limit;
    let regions: &[usize] = match &region {
        Some(r) => std::slice::from_ref(r),
        None => &[0, 1],
    };
    loop {
        let first = regions
            .iter()
            .filter_map(|r| w.first_ack_after(*r, since))
            .min_by_key(|a| a.acked);
        if let Some(a) = first {
            return Ok(a);
        }
        if Instant::now() > deadline {
            let by = region.map_or("either region", |r| REGIONS[r]);
            return Err(LabError::Timeout(format!(
                "no write acknowledged by {by} within {limit:?}: {}",
                lab.describe()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The region with write authority and its peer.
fn primary_and_peer(lab: &Lab) -> Result<(String, &'static str), LabError> {
    let primary = lab
        .primary()
        .ok_or_else(|| LabError::Failed(format!("no primary: {}", lab.describe())))?;
    let peer = REGIONS[1 - index_of(&primary)];
    Ok((primary, peer))
}

/// Runs the drill against a healthy lab, printing progress; returns the figures.
pub async fn run(
    lab: &mut Lab,
    opts: &DrillOptions,
    ttl: Duration,
    renew: Duration,
) -> Result<DrillReport, LabError> {
    let seed = opts.seed.unwrap_or_else(XorShift::clock_seed);
    println!("drill: seed {seed} (replay the schedule's phases with --seed {seed})");
    let mut rng = XorShift::seeded(seed);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let w = Writer::start(
        [lab.conninfo(REGIONS[0]), lab.conninfo(REGIONS[1])],
        opts.interval,
        stop_rx.clone(),
    );
    let hostile = opts.hostile_interval.map(|every| {
        Hostile::start(
            REGIONS.iter().map(|r| lab.app_conninfo(r)).collect(),
            every,
            0,
            stop_rx.clone(),
        )
    });
    // The routed client runs with the hostile one, at the same interval.
    let routed = match opts.hostile_interval {
        Some(every) => {
            let (dns, host, ips) = lab.routing()?;
            Some(Hostile::start_routed(
                dns,
                host,
                ips,
                REGIONS.iter().map(|r| lab.app_conninfo(r)).collect(),
                every,
                stop_rx,
            ))
        }
        None => None,
    };
    let mut rep = DrillReport {
        seed,
        ..DrillReport::default()
    };
    let heal = ttl * 2 + Duration::from_secs(90);
    let total = opts.faults.kills + opts.faults.switchovers;
    let mut step = 0;
    let (mut k, mut s) = (0, 0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    while k < opts.faults.kills || s < opts.faults.switchovers {
        step += 1;
        let (primary, other) = primary_and_peer(lab)?;
        let do_kill = k < opts.faults.kills && (s >= opts.faults.switchovers || k <= s);
        if do_kill {
            k += 1;
            // Kill at a random phase of the renew cycle (healthy is first seen right after a
            // renew, which would make every kill wait the full TTL).
            tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
            let left = lab.lease_remaining_ms().await.unwrap_or(-1);
            let t0 = Instant::now();
            lab.kill_region(&primary).await?;
            // Writes SENT before the kill completed may still have been acknowledged by the
            // dying primary: only a write sent after it counts as the new writer's.
            let killed = Instant::now();
            // Strict mode: the region comes back at once; either it re-takes its own
            // unexpired lease, or the standby takes over and waits for it as a synchronous
            // standby.
            let ack = if opts.restart_at_once {
                lab.restart_region(&primary).await?;
                wait_first_ack(&w, lab, None, killed, ttl + Duration::from_secs(120)).await?
            } else {
                wait_first_ack(
                    &w,
                    lab,
                    Some(index_of(other)),
                    t0,
                    ttl + Duration::from_secs(60),
                )
                .await?
            };
            let other = REGIONS[ack.region];
            let rto = ack.acked.duration_since(t0).as_millis() as u64;
            rep.takeover("kill", rto);
            let lost = lost_on(lab, &w, other).await?;
            rep.lost_tx += lost;
            rep.done.kills += 1;
            println!(
                "[{step}/{total}] kill {primary}: {other} took writes after {rto} ms (lease had {left} ms left: takeover {} ms after expiry); lost {lost}; restarting {primary}",
                i64::try_from(rto).unwrap_or(i64::MAX) - left
            );
            if !opts.restart_at_once {
                lab.restart_region(&primary).await?;
            }
        } else {
            s += 1;
            let id = format!("drill-switchover-{s}");
            let t0 = Instant::now();
            lab.request_switchover(Some((id, other.to_owned())))?;
            let first =
                wait_first_ack(&w, lab, Some(index_of(other)), t0, Duration::from_secs(60)).await?;
            let gap = w.gap_ms(index_of(&primary), &first);
            rep.switchover_ms.push(gap);
            let lost = lost_on(lab, &w, other).await?;
            rep.lost_tx += lost;
            rep.done.switchovers += 1;
            println!(
                "[{step}/{total}] switchover {primary} → {other}: writes unavailable {gap} ms; lost {lost}"
            );
        }
        lab.wait_healthy(heal).await?;
        lab.request_switchover(None)?;
    }
    for p in 0..opts.faults.partitions {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.partition_from_witness(&primary, true)?;
        let ack = wait_first_ack(
            &w,
            lab,
            Some(index_of(other)),
            t0,
            ttl + Duration::from_secs(60),
        )
        .await?;
        let lease = lab.lease().await?;
        let granted = lease.state.acquired_at.map_or(0, |m| m.0);
        let last_old = w
            .last_ack_before(index_of(&primary), ack.acked)
            .map_or(0, |a| {
                a.acked_wall
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64)
            });
        let margin = granted - last_old;
        if margin <= 0 {
            rep.fence_after_grant += 1;
        }
        rep.takeover("partition", ack.acked.duration_since(t0).as_millis() as u64);
        let lost = lost_on(lab, &w, other).await?;
        rep.lost_tx += lost;
        rep.done.partitions += 1;
        println!(
            "[partition {}/{}] {primary} cut from the witness ({}): its last write was acknowledged {margin} ms BEFORE {other} was granted the lease (epoch {}); {other} took writes after {} ms; lost {lost}; healing",
            p + 1,
            opts.faults.partitions,
            if lab.black_holes() {
                "packets dropped both ways; peer and clients still reach it"
            } else {
                "TCP proxy"
            },
            lease.state.epoch,
            ack.acked.duration_since(t0).as_millis()
        );
        lab.partition_from_witness(&primary, false)?;
        lab.wait_healthy(heal).await?;
    }
    for d in 0..opts.faults.db_kills {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.kill_database(&primary).await?;
        let ack = wait_first_ack(
            &w,
            lab,
            Some(index_of(other)),
            t0,
            ttl * 2 + Duration::from_secs(60),
        )
        .await?;
        rep.takeover("db-kill", ack.acked.duration_since(t0).as_millis() as u64);
        let lost = lost_on(lab, &w, other).await?;
        rep.lost_tx += lost;
        rep.done.db_kills += 1;
        println!(
            "[database kill {}/{}] {primary}'s database killed, its controller alive: {other} took writes after {} ms; lost {lost}; restarting the database",
            d + 1,
            opts.faults.db_kills,
            ack.acked.duration_since(t0).as_millis()
        );
        lab.restart_database(&primary).await?;
        lab.wait_healthy(heal).await?;
    }
    for p in 0..opts.faults.db_pauses {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.freeze_database(&primary, true)?;
        let ack = wait_first_ack(
            &w,
            lab,
            Some(index_of(other)),
            t0,
            ttl * 2 + Duration::from_secs(60),
        )
        .await;
        let held = t0.elapsed();
        if held < ttl + Duration::from_secs(2) {
            tokio::time::sleep(ttl + Duration::from_secs(2) - held).await;
        }
        // Resumed: the frozen backends run again, with whatever the fence sent them pending.
        let resumed = Instant::now();
        lab.freeze_database(&primary, false)?;
        let ack = ack?;
        let rto = ack.acked.duration_since(t0).as_millis() as u64;
        rep.takeover("db-pause", rto);
        // Nothing the old primary acknowledges after the peer took over may count: the
        // ordinary writer's commits waited on the peer (now promoted), so none may complete.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let late = w.acked_after(index_of(&primary), t0, ack.acked);
        if let Some(a) = &late {
            rep.superseded_writes += 1;
            eprintln!(
                "FROZEN OLD PRIMARY ACKNOWLEDGED row {} after {other} took over",
                a.n
            );
        }
        let lost = lost_on(lab, &w, other).await?;
        rep.lost_tx += lost;
        rep.done.db_pauses += 1;
        println!(
            "[database freeze {}/{}] {primary}'s database SIGSTOPped for {} ms: {other} took writes after {rto} ms; late acknowledgements from the old primary: {}; lost {lost}; resumed",
            p + 1,
            opts.faults.db_pauses,
            resumed.duration_since(t0).as_millis(),
            usize::from(late.is_some())
        );
        lab.wait_healthy(heal).await?;
    }
    for k in 0..opts.faults.ctl_kills {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let left = lab.lease_remaining_ms().await.unwrap_or(-1);
        let t0 = Instant::now();
        lab.kill_controller(&primary).await;
        // Its database keeps running: only its watchdog fences it, at the lease deadline.
        let ack = wait_first_ack(
            &w,
            lab,
            Some(index_of(other)),
            t0,
            ttl * 2 + Duration::from_secs(60),
        )
        .await?;
        let rto = ack.acked.duration_since(t0).as_millis() as u64;
        rep.takeover("controller-kill", rto);
        let lost = lost_on(lab, &w, other).await?;
        rep.lost_tx += lost;
        rep.done.ctl_kills += 1;
        println!(
            "[controller kill {}/{}] {primary}'s controller SIGKILLed, its database left running: {other} took writes after {rto} ms (lease had {left} ms left); lost {lost}; restarting the controller",
            k + 1,
            opts.faults.ctl_kills,
        );
        lab.spawn_controller(&primary)?;
        lab.wait_healthy(heal).await?;
    }
    for p in 0..opts.faults.pauses {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.pause_controller(&primary, true)?;
        let ack = wait_first_ack(
            &w,
            lab,
            Some(index_of(other)),
            t0,
            ttl * 2 + Duration::from_secs(60),
        );
        let ack = ack.await;
        // Hold the pause past the TTL even if the takeover was quick, then resume it: it must
        // find its lease gone and stay fenced.
        let held = t0.elapsed();
        if held < ttl + Duration::from_secs(2) {
            tokio::time::sleep(ttl + Duration::from_secs(2) - held).await;
        }
        lab.pause_controller(&primary, false)?;
        let ack = ack?;
        let rto = ack.acked.duration_since(t0).as_millis() as u64;
        rep.takeover("pause", rto);
        let lost = lost_on(lab, &w, other).await?;
        rep.lost_tx += lost;
        rep.done.pauses += 1;
        println!(
            "[pause {}/{}] {primary}'s controller SIGSTOPped for {} ms: {other} took writes after {rto} ms; lost {lost}; resumed",
            p + 1,
            opts.faults.pauses,
            t0.elapsed().as_millis()
        );
        lab.wait_healthy(heal).await?;
    }
    for d in 0..opts.faults.double_failures {
        double_failure(lab, &w, ttl, heal, &mut rep).await?;
        println!(
            "[double failure {}/{}] done",
            d + 1,
            opts.faults.double_failures
        );
    }
    for o in 0..opts.faults.witness_outages {
        let long = o % 2 == 1;
        // Short: half a renew interval, so the renew deadline (more than one renew interval
        // after the last grant) is never reached and nothing may change.
        let hold = if long {
            ttl + Duration::from_secs(2)
        } else {
            renew / 2
        };
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        // Namespaced lab: the witness process itself dies (SIGKILL) and comes back on its
        // state file; loopback: both regions' proxies to it drop everything.
        let killed = lab.black_holes();
        if killed {
            lab.witness_up(false).await?;
        } else {
            for r in REGIONS {
                lab.partition_from_witness(r, true)?;
            }
        }
        tokio::time::sleep(hold).await;
        let healed = Instant::now();
        if killed {
            lab.witness_up(true).await?;
        } else {
            for r in REGIONS {
                lab.partition_from_witness(r, false)?;
            }
        }
        let ack = wait_first_ack(&w, lab, None, healed, ttl * 2 + Duration::from_secs(60)).await?;
        // Unavailability: from the last write acknowledged by either region before the heal
        // to the first after it (0 when writes never stopped).
        let last = (0..2)
            .filter_map(|r| w.last_ack_before(r, healed))
            .map(|a| a.acked)
            .max();
        let gap = last.map_or(0, |l| ack.acked.duration_since(l).as_millis() as u64);
        rep.outage_gap_ms.push(gap);
        let lost = lost_on(lab, &w, REGIONS[ack.region]).await?;
        rep.lost_tx += lost;
        rep.done.witness_outages += 1;
        println!(
            "[witness outage {}/{}] witness {} for {} ms ({}): writes unavailable {gap} ms; {} took writes after the heal; lost {lost}",
            o + 1,
            opts.faults.witness_outages,
            if killed { "killed" } else { "unreachable" },
            hold.as_millis(),
            if long {
                "longer than the TTL"
            } else {
                "half a renew interval"
            },
            REGIONS[ack.region]
        );
        lab.wait_healthy(heal).await?;
    }
    black_hole_faults(lab, &w, opts, &mut rng, ttl, renew, heal, &mut rep).await?;
    for c in 0..opts.faults.clock_faults {
        clock_fault(lab, &w, c, &mut rng, ttl, heal, &mut rep).await?;
    }
    for f in 0..opts.faults.state_dir_faults {
        let (primary, _) = primary_and_peer(lab)?;
        let fault = if f % 2 == 0 {
            StateFault::Full
        } else {
            StateFault::ReadOnly
        };
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.state_dir_fault(&primary, fault)?;
        tokio::time::sleep(ttl * 3).await;
        lab.state_dir_fault(&primary, StateFault::Clear)?;
        let cleared = Instant::now();
        // A controller that exited is started again, as its supervisor would.
        let exited = lab.controller_exited(&primary);
        if exited.is_some() {
            lab.spawn_controller(&primary)?;
        }
        let ack = wait_first_ack(&w, lab, None, cleared, ttl * 2 + Duration::from_secs(60)).await?;
        let now_writer = REGIONS[ack.region];
        let moved = now_writer != primary;
        if moved && let Some(first) = w.first_ack_after(ack.region, t0) {
            rep.takeover(
                "state-dir",
                first.acked.duration_since(t0).as_millis() as u64,
            );
            if let Some(a) = w.acked_after(index_of(&primary), t0, first.acked) {
                rep.superseded_writes += 1;
                eprintln!(
                    "STATE-DIR FAULT: old primary {primary} acknowledged row {} after {now_writer} took over",
                    a.n
                );
            }
        }
        let during = w.acks_between(index_of(&primary), t0, cleared);
        let lost = lost_on(lab, &w, now_writer).await?;
        rep.lost_tx += lost;
        rep.done.state_dir_faults += 1;
        println!(
            "[state dir {}] {primary}'s state directory {} for {} ms{}: it acknowledged {during} writes meanwhile; writes now on {now_writer}{}; lost {lost}",
            f + 1,
            if fault == StateFault::Full {
                "full"
            } else {
                "read-only"
            },
            cleared.duration_since(t0).as_millis(),
            exited.map_or(String::new(), |s| format!(
                " (its controller exited: {s}; restarted)"
            )),
            if moved { " (took over)" } else { "" },
        );
        lab.wait_healthy(heal).await?;
    }
    if opts.switchover_crashes {
        switchover_crashes(lab, &w, ttl, heal, &mut rep).await?;
    }
    if opts.failback {
        let home = REGIONS[0];
        if lab.primary().as_deref() == Some(home) {
            // Move away first so there is something to fail back.
            let t0 = Instant::now();
            lab.request_switchover(Some(("drill-away".into(), REGIONS[1].to_owned())))?;
            wait_first_ack(&w, lab, Some(1), t0, Duration::from_secs(60)).await?;
            lab.wait_healthy(heal).await?;
            lab.request_switchover(None)?;
            rep.done.switchovers += 1;
            println!(
                "[extra] switchover {home} → {} before the failback",
                REGIONS[1]
            );
        }
        let away = REGIONS[1];
        lab.request_failback(Some(("drill-failback".into(), false)))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let waiting = lab.status(away).is_some_and(|st| {
                st.conditions.iter().any(|c| {
                    c.kind == continuum_controller::decide::ConditionKind::FailbackAwaitingApproval
                })
            });
            if waiting {
                break;
            }
            if Instant::now() > deadline {
                return Err(LabError::Timeout(format!(
                    "failback never reported FailbackAwaitingApproval: {}",
                    lab.describe()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if lab.primary().as_deref() != Some(away) {
            return Err(LabError::Failed("failback ran without approval".into()));
        }
        println!("failback to {home} requested: waiting for approval (FailbackAwaitingApproval)");
        let t0 = Instant::now();
        lab.request_failback(Some(("drill-failback".into(), true)))?;
        let first = wait_first_ack(&w, lab, Some(0), t0, Duration::from_secs(60)).await?;
        let gap = w.gap_ms(1, &first);
        let lost = lost_on(lab, &w, home).await?;
        rep.lost_tx += lost;
        rep.failbacks += 1;
        lab.wait_healthy(heal).await?;
        lab.request_failback(None)?;
        println!("approved failback {away} → {home}: writes unavailable {gap} ms; lost {lost}");
    }
    let _ = stop_tx.send(true);
    tokio::time::sleep(opts.interval * 3 + Duration::from_millis(500)).await;
    rep.dual_writers = w.dual_rounds();
    check(lab, &w, [hostile.as_ref(), routed.as_ref()], &mut rep).await?;
    rep.acked = w.acks().len();
    let per_region: HashMap<usize, usize> = w.acks().iter().fold(HashMap::new(), |mut m, a| {
        *m.entry(a.region).or_default() += 1;
        m
    });
    println!(
        "ledger: {} rounds, {} acknowledged writes ({} on {}, {} on {})",
        w.rounds(),
        rep.acked,
        per_region.get(&0).copied().unwrap_or(0),
        REGIONS[0],
        per_region.get(&1).copied().unwrap_or(0),
        REGIONS[1]
    );
    Ok(rep)
}

/// Clock fault `c` (see [`DrillOptions::clock_faults`]) on the primary's or the standby's
/// controller.
async fn clock_fault(
    lab: &mut Lab,
    w: &Writer,
    c: u32,
    rng: &mut XorShift,
    ttl: Duration,
    heal: Duration,
    rep: &mut DrillReport,
) -> Result<(), LabError> {
    let (primary, other) = primary_and_peer(lab)?;
    let victim = if rng.below(2) == 0 {
        primary.clone()
    } else {
        other.to_owned()
    };
    let step = ttl.as_secs() * 5;
    // Skews are a staircase of offsets rewritten every 100 ms (libfaketime's own rate, `x1.1`,
    // counts from the process start and cannot be undone cleanly mid-run).
    let (spec, rate) = match c % 4 {
        0 => (format!("+{step}"), None),
        1 => (format!("-{step}"), None),
        2 => ("rate x1.1".to_owned(), Some(0.1)),
        _ => ("rate x0.9".to_owned(), Some(-0.1)),
    };
    let t0 = Instant::now();
    match rate {
        None => {
            lab.set_clock(&victim, &spec)?;
            tokio::time::sleep(ttl * 3).await;
        }
        Some(r) => {
            while t0.elapsed() < ttl * 3 {
                let off = t0.elapsed().as_secs_f64() * r;
                lab.set_clock(&victim, &format!("{off:+.3}"))?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    lab.set_clock(&victim, "+0")?;
    let restored = Instant::now();
    // Whoever holds writes now: a takeover during the fault is allowed (a controller may
    // fence on a clock it distrusts), two writers or a loss are not.
    let ack = wait_first_ack(w, lab, None, restored, ttl * 2 + Duration::from_secs(60)).await?;
    let now_writer = REGIONS[ack.region];
    let moved = now_writer != primary;
    if moved && let Some(first) = w.first_ack_after(ack.region, t0) {
        rep.takeover("clock", first.acked.duration_since(t0).as_millis() as u64);
        if let Some(a) = w.acked_after(index_of(&primary), t0, first.acked) {
            rep.superseded_writes += 1;
            eprintln!(
                "CLOCK FAULT: old primary {primary} acknowledged row {} after {now_writer} took over",
                a.n
            );
        }
    }
    let lost = lost_on(lab, w, now_writer).await?;
    rep.lost_tx += lost;
    rep.done.clock_faults += 1;
    println!(
        "[clock {}] {victim}'s controller wall clock `{spec}` for {} ms ({}): writes now on {now_writer}{}; lost {lost}",
        c + 1,
        restored.duration_since(t0).as_millis(),
        if victim == primary {
            "the primary"
        } else {
            "the standby"
        },
        if moved { " (took over)" } else { "" },
    );
    lab.wait_healthy(heal).await?;
    Ok(())
}

/// The packet-drop partitions of a namespaced lab: isolations, one-way cuts, region splits
/// and flapping (see [`DrillOptions`]).
#[allow(clippy::too_many_arguments)]
async fn black_hole_faults(
    lab: &mut Lab,
    w: &Writer,
    opts: &DrillOptions,
    rng: &mut XorShift,
    ttl: Duration,
    renew: Duration,
    heal: Duration,
    rep: &mut DrillReport,
) -> Result<(), LabError> {
    let wanted = opts.faults.isolations
        + opts.faults.region_splits
        + opts.faults.one_way_cuts
        + opts.faults.flaps;
    if wanted > 0 && !lab.black_holes() {
        return Err(LabError::Failed(
            "isolations, region splits, one-way cuts, flapping and orphans need the namespaced lab (--net netns)".into(),
        ));
    }
    let takeover_limit = ttl * 2 + Duration::from_secs(60);
    for i in 0..opts.faults.isolations + opts.faults.one_way_cuts {
        let isolate = i < opts.faults.isolations;
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        let what = if isolate {
            for to in [net::WITNESS, other, net::CLIENTS, net::SHARED] {
                lab.cut(&primary, to, Direction::Both)?;
            }
            format!("{primary} cut from everything (witness, {other}, clients, DNS and NATS)")
        } else if i % 2 == 0 {
            lab.cut(&primary, net::WITNESS, Direction::OneWay)?;
            format!("{primary}'s packets to the witness dropped (one way)")
        } else {
            lab.cut(net::WITNESS, &primary, Direction::OneWay)?;
            format!("the witness's packets to {primary} dropped (one way)")
        };
        let ack = wait_first_ack(w, lab, Some(index_of(other)), t0, takeover_limit).await?;
        let rto = ack.acked.duration_since(t0).as_millis() as u64;
        let kind = if isolate { "isolate" } else { "one-way" };
        rep.takeover(kind, rto);
        // Hold the cut past the TTL after the takeover, then heal: the old primary must come
        // back fenced and be rebuilt, never acknowledge again.
        tokio::time::sleep(renew).await;
        lab.heal()?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let late = w.acked_after(index_of(&primary), t0, ack.acked);
        if let Some(a) = &late {
            rep.superseded_writes += 1;
            eprintln!(
                "CUT-OFF OLD PRIMARY {primary} ACKNOWLEDGED row {} after {other} took over",
                a.n
            );
        }
        let lost = lost_on(lab, w, other).await?;
        rep.lost_tx += lost;
        if isolate {
            rep.done.isolations += 1;
        } else {
            rep.done.one_way_cuts += 1;
        }
        println!(
            "[{kind} {}] {what}: {other} took writes after {rto} ms; late acknowledgements from the old primary: {}; lost {lost}; healed",
            if isolate {
                i + 1
            } else {
                i - opts.faults.isolations + 1
            },
            usize::from(late.is_some())
        );
        lab.wait_healthy(heal).await?;
    }
    for i in 0..opts.faults.orphans {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.kill_controller(&primary).await;
        for to in [net::WITNESS, other] {
            lab.cut(&primary, to, Direction::Both)?;
        }
        let ack = wait_first_ack(w, lab, Some(index_of(other)), t0, takeover_limit).await?;
        let rto = ack.acked.duration_since(t0).as_millis() as u64;
        rep.takeover("orphan", rto);
        // The clients (the hostile one commits with `synchronous_commit = local`) keep
        // reaching the old primary for two renew intervals after the takeover.
        tokio::time::sleep(renew * 2).await;
        lab.heal()?;
        lab.spawn_controller(&primary)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let late = w.acked_after(index_of(&primary), t0, ack.acked);
        if let Some(a) = &late {
            rep.superseded_writes += 1;
            eprintln!(
                "ORPHANED OLD PRIMARY {primary} ACKNOWLEDGED row {} after {other} took over",
                a.n
            );
        }
        let lost = lost_on(lab, w, other).await?;
        rep.lost_tx += lost;
        rep.done.orphans += 1;
        println!(
            "[orphan {}] {primary}'s controller SIGKILLed and {primary} cut from the witness and {other}, its clients still reaching it: {other} took writes after {rto} ms; late acknowledgements from the old primary: {}; lost {lost}; healed, controller restarted",
            i + 1,
            usize::from(late.is_some())
        );
        lab.wait_healthy(heal).await?;
    }
    for i in 0..opts.faults.region_splits {
        let (primary, other) = primary_and_peer(lab)?;
        tokio::time::sleep(Duration::from_millis(rng.below(renew.as_millis() as u64))).await;
        let t0 = Instant::now();
        lab.cut(&primary, other, Direction::Both)?;
        // Both still reach the witness: the primary keeps renewing, the peer must not take
        // the lease; synchronous commits wait for the unreachable standby.
        let hold = ttl * 2;
        tokio::time::sleep(hold).await;
        let during = w.acks_between(index_of(other), t0, Instant::now());
        let primary_acks = w.acks_between(index_of(&primary), t0, Instant::now());
        let healed = Instant::now();
        lab.heal()?;
        let ack = wait_first_ack(w, lab, None, healed, takeover_limit).await?;
        if during > 0 {
            rep.superseded_writes += 1;
            eprintln!(
                "REGION SPLIT: {other} acknowledged {during} writes while {primary} held the lease"
            );
        }
        let lost = lost_on(lab, w, REGIONS[ack.region]).await?;
        rep.lost_tx += lost;
        rep.done.region_splits += 1;
        println!(
            "[region split {}] {primary} and {other} cut from each other for {} ms, both reaching the witness: {primary} acknowledged {primary_acks} writes, {other} {during}; {} took writes after the heal; lost {lost}",
            i + 1,
            hold.as_millis(),
            REGIONS[ack.region]
        );
        lab.wait_healthy(heal).await?;
    }
    for i in 0..opts.faults.flaps {
        let (primary, _) = primary_and_peer(lab)?;
        let t0 = Instant::now();
        let mut toggles = 0;
        let mut cut = false;
        while t0.elapsed() < ttl * 3 {
            cut = !cut;
            if cut {
                lab.cut(&primary, net::WITNESS, Direction::Both)?;
            } else {
                lab.heal()?;
            }
            toggles += 1;
            // A quarter to one and a half renew intervals.
            let r = renew.as_millis() as u64;
            tokio::time::sleep(Duration::from_millis(r / 4 + rng.below(r * 5 / 4))).await;
        }
        lab.heal()?;
        let healed = Instant::now();
        let ack = wait_first_ack(w, lab, None, healed, takeover_limit).await?;
        let lost = lost_on(lab, w, REGIONS[ack.region]).await?;
        rep.lost_tx += lost;
        rep.done.flaps += 1;
        println!(
            "[flap {}] {primary}'s link to the witness toggled {toggles} times over {} ms: {} took writes after; lost {lost}",
            i + 1,
            healed.duration_since(t0).as_millis(),
            REGIONS[ack.region]
        );
        lab.wait_healthy(heal).await?;
    }
    Ok(())
}

/// The step boundaries of one switchover, discovered by running one under a tracing
/// [`StepTrap`]: every step either side persisted, in order, as (`true`: source, step).
async fn switchover_steps(
    lab: &mut Lab,
    w: &Writer,
    heal: Duration,
    id: &str,
) -> Result<Vec<(bool, String)>, LabError> {
    let (src, dst) = primary_and_peer(lab)?;
    let trap = StepTrap::start(vec![lab.watched(&src)?, lab.watched(dst)?], None)
        .map_err(|e| LabError::Failed(format!("the step trap: {e}")))?;
    let t0 = Instant::now();
    lab.request_switchover(Some((id.to_owned(), dst.to_owned())))?;
    let deadline = t0 + Duration::from_secs(60);
    while w.first_ack_after(index_of(dst), t0).is_none() || lab.operation_step(dst).is_some() {
        if Instant::now() > deadline {
            return Err(LabError::Timeout(format!(
                "the discovery switchover did not finish: {}",
                lab.describe()
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let trace = trap
        .finish()
        .map_err(|e| LabError::Failed(format!("the step trap: {e}")))?;
    let mut seen: Vec<(bool, String)> = Vec::new();
    for (r, step, _) in trace.steps {
        let p = (r == src, step);
        if !seen.contains(&p) {
            seen.push(p);
        }
    }
    lab.wait_healthy(heal).await?;
    lab.request_switchover(None)?;
    Ok(seen)
}

/// A switchover crashed at each step boundary, on both sides (see
/// [`DrillOptions::switchover_crashes`]): for every step either side persists, one
/// switchover in which the source's controller is SIGKILLed right there and one in which the
/// target's is, by a [`StepTrap`]; plus the target's gap between taking the lease and
/// persisting its first step (path 6), which no file marks and which is polled.
async fn switchover_crashes(
    lab: &mut Lab,
    w: &Writer,
    ttl: Duration,
    heal: Duration,
    rep: &mut DrillReport,
) -> Result<(), LabError> {
    let mut points = switchover_steps(lab, w, heal, "drill-sw-discover").await?;
    points.insert(0, (false, "lease-acquired".to_owned()));
    let side = |source: bool| if source { "source" } else { "target" };
    println!(
        "[switchover crashes] step boundaries: {}",
        points
            .iter()
            .map(|(s, st)| format!("{}:{st}", side(*s)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let crashes: Vec<(bool, String, bool)> = points
        .iter()
        .flat_map(|(at, step)| [true, false].map(|v| (*at, step.clone(), v)))
        .collect();
    for (i, (at_source, step, victim_source)) in crashes.iter().enumerate() {
        let n = format!("{}/{}", i + 1, crashes.len());
        let (src, dst) = primary_and_peer(lab)?;
        let region_of = |source: bool| if source { src.clone() } else { dst.to_owned() };
        let (at, victim) = (region_of(*at_source), region_of(*victim_source));
        let t0 = Instant::now();
        let finished = |lab: &Lab| {
            w.first_ack_after(index_of(dst), t0).is_some()
                && lab.operation_step(dst).is_none()
                && lab.operation_step(&src).is_none()
        };
        let killed = if step == "lease-acquired" {
            lab.request_switchover(Some((format!("drill-sw-crash-{i}"), dst.to_owned())))?;
            let deadline = t0 + Duration::from_secs(30);
            loop {
                if lab
                    .lease()
                    .await
                    .is_ok_and(|l| l.state.holder == dst && l.state.acquired_at.is_some())
                    && lab.operation_step(dst).is_none()
                {
                    let k = Instant::now();
                    lab.kill_controller(&victim).await;
                    break Some(k);
                }
                if finished(lab) || Instant::now() > deadline {
                    break None;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else {
            let trap = StepTrap::start(
                vec![lab.watched(&src)?, lab.watched(dst)?],
                Some(Target {
                    at: at.clone(),
                    step: step.clone(),
                    victim: victim.clone(),
                }),
            )
            .map_err(|e| LabError::Failed(format!("the step trap: {e}")))?;
            lab.request_switchover(Some((format!("drill-sw-crash-{i}"), dst.to_owned())))?;
            let deadline = t0 + Duration::from_secs(30);
            while !trap.done() && !finished(lab) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let trace = trap
                .finish()
                .map_err(|e| LabError::Failed(format!("the step trap: {e}")))?;
            if trace.killed.is_some() {
                // Reap it, as a supervisor would before restarting it.
                lab.kill_controller(&victim).await;
            }
            trace.killed.map(Instant::from_std)
        };
        let Some(killed) = killed else {
            println!(
                "[switchover crash {n}] {}:{step} did not come (this switchover took another path, or the step was overwritten before the trap froze its writer): not crashed",
                side(*at_source)
            );
            rep.switchover_crash_misses += 1;
            lab.wait_healthy(heal).await?;
            lab.request_switchover(None)?;
            continue;
        };
        lab.spawn_controller(&victim)?;
        let ack = wait_first_ack(w, lab, None, killed, ttl * 2 + Duration::from_secs(60)).await?;
        let after = ack.acked.duration_since(killed).as_millis() as u64;
        let lost = lost_on(lab, w, REGIONS[ack.region]).await?;
        rep.lost_tx += lost;
        println!(
            "[switchover crash {n}] {} ({victim}) killed at the {}'s {step}: {} took writes {after} ms later{}; lost {lost}",
            side(*victim_source),
            side(*at_source),
            REGIONS[ack.region],
            if Duration::from_millis(after) > ttl {
                " (LONGER THAN ONE TTL)"
            } else {
                ""
            }
        );
        rep.switchover_crashes.push(SwitchoverCrash {
            at: side(*at_source).to_owned(),
            step: step.clone(),
            victim: side(*victim_source).to_owned(),
            writer_after_ms: after,
        });
        lab.wait_healthy(heal).await?;
        lab.request_switchover(None)?;
    }
    Ok(())
}

/// One double failure (see [`DrillOptions::double_failures`]): the superseded old primary must
/// not take writes while the peer that superseded it is down, and the peer's writes survive.
async fn double_failure(
    lab: &mut Lab,
    w: &Writer,
    ttl: Duration,
    heal: Duration,
    rep: &mut DrillReport,
) -> Result<(), LabError> {
    let (a, b) = primary_and_peer(lab)?;
    let t0 = Instant::now();
    lab.kill_region(&a).await?;
    let ack = wait_first_ack(w, lab, Some(index_of(b)), t0, ttl + Duration::from_secs(60)).await?;
    rep.takeover(
        "double-failure",
        ack.acked.duration_since(t0).as_millis() as u64,
    );
    println!(
        "  {a} killed: {b} took writes after {} ms; now {b}'s controller dies (its database stays up, its watchdog fences it)",
        ack.acked.duration_since(t0).as_millis()
    );
    lab.kill_controller(b).await;
    let lapse = Instant::now() + ttl + Duration::from_secs(30);
    while lab.lease_remaining_ms().await.unwrap_or(1) > 0 {
        if Instant::now() > lapse {
            return Err(LabError::Timeout(format!(
                "{b}'s lease did not lapse: {}",
                lab.describe()
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = Instant::now();
    lab.restart_region(&a).await?;
    // The old primary's last grant was superseded by b's: it must stay fenced (no acquire),
    // however long b is away. Watch it for a TTL and more.
    tokio::time::sleep(ttl + Duration::from_secs(3)).await;
    let took = w.first_ack_after(index_of(&a), back);
    if let Some(bad) = &took {
        rep.superseded_writes += 1;
        eprintln!(
            "SUPERSEDED PRIMARY TOOK WRITES: {a} acknowledged row {} {} ms after it returned, while {b}'s controller was down",
            bad.n,
            bad.acked.duration_since(back).as_millis()
        );
    }
    println!(
        "  {b}'s lease lapsed; {a} returned and {} for {} ms; {b}'s controller returns",
        if took.is_some() {
            "TOOK WRITES"
        } else {
            "stayed fenced"
        },
        back.elapsed().as_millis()
    );
    let t1 = Instant::now();
    lab.spawn_controller(b)?;
    let ack = wait_first_ack(
        w,
        lab,
        Some(index_of(b)),
        t1,
        ttl * 2 + Duration::from_secs(60),
    )
    .await?;
    let lost = lost_on(lab, w, b).await?;
    rep.lost_tx += lost;
    rep.done.double_failures += 1;
    println!(
        "  {b} re-took its own lease and took writes {} ms after its controller returned; lost {lost}",
        ack.acked.duration_since(t1).as_millis()
    );
    lab.wait_healthy(heal).await
}

/// The independent checker, once the writers stopped: reads the final primary's tables and
/// the recorded histories (never a controller's status), saves the hostile history to
/// `history.jsonl` in the lab directory, and prints one `checker: …` line.
async fn check(
    lab: &Lab,
    w: &Writer,
    clients: [Option<&Hostile>; 2],
    rep: &mut DrillReport,
) -> Result<(), LabError> {
    let (primary, _) = primary_and_peer(lab)?;
    let err = |e: tokio_postgres::Error| LabError::Failed(format!("checker on {primary}: {e}"));
    let (c, conn) = tokio_postgres::connect(&lab.conninfo(&primary), NoTls)
        .await
        .map_err(err)?;
    tokio::spawn(conn);
    let ledger: BTreeSet<i64> = c
        .query("select n from ledger", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let lost = hostile::missing(w.acks().iter().map(|a| a.n), &ledger);
    rep.final_lost = lost.len() as u64;
    let mut line = format!(
        "checker: final_primary={primary} ledger_acked={} final_lost={}",
        w.acks().len(),
        rep.final_lost
    );
    let ops: Vec<hostile::Op> = clients.iter().flatten().flat_map(|h| h.ops()).collect();
    if !ops.is_empty() {
        let rows: BTreeSet<i64> = c
            .query("select n from hostile", &[])
            .await
            .map_err(err)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let acked = |who: hostile::Client| -> Vec<i64> {
            ops.iter()
                .filter(|o| o.client == who && o.kind == hostile::Kind::Write && o.acked.is_some())
                .map(|o| o.n)
                .collect()
        };
        let (hostile_acked, routed_acked) = (
            acked(hostile::Client::Hostile),
            acked(hostile::Client::Routed),
        );
        rep.hostile_acked = hostile_acked.len() as u64;
        rep.hostile_lost_local = hostile::missing(hostile_acked, &rows).len() as u64;
        rep.routed_acked = routed_acked.len() as u64;
        // The routed client commits with the session defaults (synchronous): a loss is a loss.
        let routed_lost = hostile::missing(routed_acked, &rows);
        rep.final_lost += routed_lost.len() as u64;
        rep.routed_lost = routed_lost.len() as u64;
        let pairs = hostile::split_brain(&ops);
        rep.split_brain = pairs.len() as u64;
        for p in pairs.iter().take(5) {
            eprintln!(
                "SPLIT BRAIN: write {} acknowledged on an older timeline after write {} on a newer one",
                p.old, p.new
            );
        }
        let stale = hostile::stale_reads(&ops);
        rep.stale_reads = stale.len() as u64;
        for s in stale.iter().take(5) {
            eprintln!(
                "STALE READ: routed read {} on {} saw row {} after row {} was acknowledged",
                s.read,
                REGIONS.get(s.region).copied().unwrap_or("?"),
                s.saw,
                s.missed
            );
        }
        let path = lab.dir().join("history.jsonl");
        let mut text = String::new();
        for o in &ops {
            text += &serde_json::to_string(o).map_err(|e| LabError::Failed(e.to_string()))?;
            text.push('\n');
        }
        std::fs::write(&path, text)?;
        line += &format!(
            " hostile_ops={} hostile_acked={} split_brain={} hostile_lost_local={} routed_acked={} routed_lost={} stale_reads={} history={}",
            ops.len(),
            rep.hostile_acked,
            rep.split_brain,
            rep.hostile_lost_local,
            rep.routed_acked,
            rep.routed_lost,
            rep.stale_reads,
            path.display()
        );
    }
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(quantile(&[5], 0.99), 5);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&[3, 1, 2], 0.5), 2);
    }

    #[test]
    fn the_summary_line_has_the_agreed_shape() {
        let r = DrillReport {
            done: Faults {
                kills: 2,
                switchovers: 1,
                ..Faults::default()
            },
            rto_ms: vec![100, 200],
            switchover_ms: vec![50],
            ..DrillReport::default()
        };
        assert_eq!(
            r.line(),
            "drill: kills=2 switchovers=1 lost_tx=0 dual_writers=0 rto_p50_ms=100 rto_p99_ms=200 switchover_p99_ms=50"
        );
    }
}
