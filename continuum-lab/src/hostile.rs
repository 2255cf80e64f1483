//! The hostile client, the routed client and the independent checker.
//!
//! The routed client is an ordinary application: before every operation it asks the DNS for the
//! application's name, then reads the highest routed row from the region the answer names and
//! inserts the next one, with the session defaults. Its acknowledged writes must all survive,
//! and a read that misses a routed write acknowledged before it began is a stale read.
//!
//! The drill's ordinary writer commits through the cooperative path. The hostile client does
//! what any application session may do against a database it can reach: it logs in as the
//! application role ([`crate::lab::APP_ROLE`], not a superuser), sets
//! `default_transaction_read_only = off` and `synchronous_commit = local` (so a fenced old
//! primary cannot lean on its lost synchronous standby to refuse), opens `BEGIN READ WRITE` and
//! inserts a row that records what the database says about itself at that moment: its
//! timeline id, `pg_current_wal_lsn()` and `pg_control_system()`'s system identifier. Every
//! operation is recorded with its invoke and complete instants and its outcome.
//!
//! The checker trusts neither controller: it reads the recorded history and the databases'
//! final contents.
//! - split brain: a write acknowledged on an OLDER timeline that was invoked after a write on a
//!   NEWER timeline, in the other region, had already been acknowledged. Timeline ids only grow
//!   along a cluster's history (a promotion takes the newest known id + 1; rebuilds copy the
//!   history files), so at that instant the newer primary was accepting writes and the old one
//!   still accepted one: two writers.
//! - lost (ordinary writer): an acknowledged row absent from the final primary.
//! - hostile writes committed locally and then lost with their timeline are counted and reported
//!   (`synchronous_commit = local` gives up that guarantee; the application chose it).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tokio_postgres::NoTls;

/// Which client made an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Client {
    /// The hostile client: straight to a database, overriding read-only and synchronous
    /// commit as any session may.
    Hostile,
    /// The routed client: an ordinary application that asks the DNS (PowerDNS's LUA record
    /// over the route fronts) before every operation and uses the region it answered, with
    /// the session defaults.
    Routed,
}

/// What an operation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An insert of row `n`.
    Write,
    /// A read of the highest routed row: `read` holds what it returned.
    Read,
}

/// One recorded operation.
#[derive(Debug, Clone, Serialize)]
pub struct Op {
    /// Which client.
    pub client: Client,
    /// Write or read.
    pub kind: Kind,
    /// Row number (unique per write; for a read, the number of the write sent just after it).
    pub n: i64,
    /// A read's result: the highest routed row the database had (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read: Option<i64>,
    /// Region index the write was sent to.
    pub region: usize,
    /// Invoked, ms since the history began.
    pub invoke_ms: u64,
    /// Completed (acknowledged, refused or timed out), ms since the history began.
    pub complete_ms: u64,
    /// Acknowledged: the timeline id and LSN the database reported in the same transaction.
    pub acked: Option<Commit>,
    /// Refused or unknown: the error text.
    pub error: Option<String>,
}

/// What an acknowledging database said about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// Timeline id (`pg_walfile_name(pg_current_wal_lsn())`'s first 8 hex digits).
    pub tli: i32,
    /// `pg_current_wal_lsn()` before the insert.
    pub lsn: String,
    /// `pg_control_system().system_identifier`.
    pub sysid: i64,
}

/// A pair of operations that proves two writers: `old` was acknowledged on an older timeline
/// although it was invoked after `new` had been acknowledged on a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBrain {
    /// The newer timeline's acknowledged write.
    pub new: i64,
    /// The older timeline's write that should have been refused.
    pub old: i64,
}

/// Every split-brain pair in `ops` (at most one per old write; see the module docs).
pub fn split_brain(ops: &[Op]) -> Vec<SplitBrain> {
    let acked: Vec<(&Op, &Commit)> = ops
        .iter()
        .filter(|o| o.kind == Kind::Write)
        .filter_map(|o| o.acked.as_ref().map(|c| (o, c)))
        .collect();
    let mut out = Vec::new();
    for (old, oc) in &acked {
        let proof = acked.iter().find(|(new, nc)| {
            new.region != old.region && nc.tli > oc.tli && old.invoke_ms > new.complete_ms
        });
        if let Some((new, _)) = proof {
            out.push(SplitBrain {
                new: new.n,
                old: old.n,
            });
        }
    }
    out
}

/// A read that missed a routed write acknowledged before the read was invoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleRead {
    /// The read (its `n`).
    pub read: i64,
    /// Where it was served.
    pub region: usize,
    /// What it returned.
    pub saw: i64,
    /// The highest routed write acknowledged before it began.
    pub missed: i64,
}

/// Every routed read that returned less than the highest routed write acknowledged (by any
/// region) before the read was invoked: it was served by a database behind the writer.
pub fn stale_reads(ops: &[Op]) -> Vec<StaleRead> {
    let mut writes: Vec<(u64, i64)> = ops
        .iter()
        .filter(|o| o.client == Client::Routed && o.kind == Kind::Write && o.acked.is_some())
        .map(|o| (o.complete_ms, o.n))
        .collect();
    writes.sort_unstable();
    let mut out = Vec::new();
    for r in ops
        .iter()
        .filter(|o| o.client == Client::Routed && o.kind == Kind::Read)
    {
        let Some(saw) = r.read else { continue };
        let missed = writes
            .iter()
            .take_while(|(done, _)| *done < r.invoke_ms)
            .map(|(_, n)| *n)
            .max();
        if let Some(m) = missed
            && m > saw
        {
            out.push(StaleRead {
                read: r.n,
                region: r.region,
                saw,
                missed: m,
            });
        }
    }
    out
}

/// Acknowledged rows of `acked` that `present` lacks.
pub fn missing(acked: impl IntoIterator<Item = i64>, present: &BTreeSet<i64>) -> Vec<i64> {
    acked.into_iter().filter(|n| !present.contains(n)).collect()
}

/// The routed client's rows start here (the hostile client's start at 0).
pub const ROUTED_FIRST_N: i64 = 1 << 40;

const READ_ROUTED: &str = "select coalesce(max(n), 0) from hostile where n >= 1099511627776";

const INSERT: &str = "insert into hostile (n, region, tli, lsn, sysid) select $1, $2, \
     ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int, \
     pg_current_wal_lsn(), (select system_identifier from pg_control_system()) \
     returning tli, lsn::text, sysid";

/// The hostile client's handle.
#[derive(Debug, Clone)]
pub struct Hostile {
    ops: Arc<Mutex<Vec<Op>>>,
    t0: Instant,
}

fn lock(l: &Mutex<Vec<Op>>) -> std::sync::MutexGuard<'_, Vec<Op>> {
    l.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A tick every `interval` that never bursts to catch up.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

impl Hostile {
    fn empty() -> Hostile {
        Hostile {
            ops: Arc::new(Mutex::new(Vec::new())),
            t0: Instant::now(),
        }
    }

    /// Writes to every region in `conninfos` every `interval` (row numbers from `first_n`, so
    /// they never collide with the ordinary writer's) until `stop` flips.
    pub fn start(
        conninfos: Vec<String>,
        interval: Duration,
        first_n: i64,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Hostile {
        let h = Hostile::empty();
        let me = h.clone();
        tokio::spawn(async move {
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                conninfos.iter().map(|_| None).collect();
            let mut n = first_n;
            let mut tick = ticker(interval);
            while !*stop.borrow() {
                tick.tick().await;
                let mut futs = Vec::new();
                for (i, slot) in clients.iter_mut().enumerate() {
                    n += 1;
                    let info = conninfos[i].clone();
                    let c = slot.take();
                    let t0 = me.t0;
                    let num = n;
                    futs.push(async move { hostile_write(c, &info, num, i, t0, true).await });
                }
                let results = futures_util::future::join_all(futs).await;
                let mut ops = lock(&me.ops);
                for (i, (client, op)) in results.into_iter().enumerate() {
                    clients[i] = client;
                    if let Some(op) = op {
                        ops.push(op);
                    }
                }
            }
        });
        h
    }

    /// The routed client: every `interval`, asks the DNS (`resolver`) for `host`, takes the
    /// region whose address (`ips`) it answered, reads the highest routed row there, then
    /// writes the next one, as an ordinary session (`conninfos`, the application role, no
    /// overrides). An answer that is empty, fails, or names no known region is recorded as a
    /// failed read, so that an unroutable moment shows in the history.
    pub fn start_routed(
        resolver: pdm_client::verify::Verifier,
        host: String,
        ips: Vec<std::net::Ipv4Addr>,
        conninfos: Vec<String>,
        interval: Duration,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Hostile {
        let h = Hostile::empty();
        let me = h.clone();
        tokio::spawn(async move {
            let mut clients: Vec<Option<tokio_postgres::Client>> =
                conninfos.iter().map(|_| None).collect();
            let mut n = ROUTED_FIRST_N;
            let mut tick = ticker(interval);
            while !*stop.borrow() {
                tick.tick().await;
                n += 1;
                let invoke_ms = ms_since(me.t0);
                let answer = resolver.answers(&host).await.into_iter().next();
                let region = match &answer {
                    Some((_, Ok(set))) => set.iter().find_map(|a| ips.iter().position(|i| i == a)),
                    _ => None,
                };
                let Some(i) = region else {
                    lock(&me.ops).push(Op {
                        client: Client::Routed,
                        kind: Kind::Read,
                        n,
                        read: None,
                        region: usize::MAX,
                        invoke_ms,
                        complete_ms: ms_since(me.t0),
                        acked: None,
                        error: Some(format!("no route: DNS answered {answer:?}")),
                    });
                    continue;
                };
                let (c, read) = routed_read(clients[i].take(), &conninfos[i], n, i, me.t0).await;
                let (c, write) = hostile_write(c, &conninfos[i], n, i, me.t0, false).await;
                clients[i] = c;
                let mut ops = lock(&me.ops);
                ops.extend(read);
                ops.extend(write);
            }
        });
        h
    }

    /// The history so far.
    pub fn ops(&self) -> Vec<Op> {
        lock(&self.ops).clone()
    }
}

/// An ordinary session to `conninfo` (reused when still open).
async fn session(
    client: Option<tokio_postgres::Client>,
    conninfo: &str,
    hostile: bool,
) -> Option<tokio_postgres::Client> {
    if let Some(c) = client
        && !c.is_closed()
    {
        return Some(c);
    }
    let Ok(Ok((c, conn))) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio_postgres::connect(conninfo, NoTls),
    )
    .await
    else {
        return None;
    };
    tokio::spawn(conn);
    if hostile {
        // What a session may set: nothing here needs a privilege.
        c.batch_execute("set default_transaction_read_only = off; set synchronous_commit = local")
            .await
            .ok()?;
    }
    Some(c)
}

/// One routed read of the highest routed row in region `region`.
async fn routed_read(
    client: Option<tokio_postgres::Client>,
    conninfo: &str,
    n: i64,
    region: usize,
    t0: Instant,
) -> (Option<tokio_postgres::Client>, Option<Op>) {
    let Some(client) = session(client, conninfo, false).await else {
        return (None, None);
    };
    let invoke_ms = ms_since(t0);
    let r = tokio::time::timeout(Duration::from_secs(3), client.query_one(READ_ROUTED, &[])).await;
    let mut op = Op {
        client: Client::Routed,
        kind: Kind::Read,
        n,
        read: None,
        region,
        invoke_ms,
        complete_ms: ms_since(t0),
        acked: None,
        error: None,
    };
    match r {
        Ok(Ok(row)) => {
            op.read = Some(row.get(0));
            (Some(client), Some(op))
        }
        Ok(Err(e)) => {
            op.error = Some(e.to_string());
            (Some(client), Some(op))
        }
        Err(_) => {
            op.error = Some("timed out".into());
            (None, Some(op))
        }
    }
}

fn ms_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One write of row `n` to region `region`: as the hostile client (`hostile`: overrides
/// read-only and synchronous commit, `BEGIN READ WRITE`) or as the routed client (session
/// defaults, plain `BEGIN`). `None` when no session could be opened (nothing was invoked).
async fn hostile_write(
    client: Option<tokio_postgres::Client>,
    conninfo: &str,
    n: i64,
    region: usize,
    t0: Instant,
    hostile: bool,
) -> (Option<tokio_postgres::Client>, Option<Op>) {
    let Some(client) = session(client, conninfo, hostile).await else {
        return (None, None);
    };
    let invoke_ms = ms_since(t0);
    let attempt = async {
        client
            .batch_execute(if hostile { "begin read write" } else { "begin" })
            .await?;
        let row = client
            .query_one(INSERT, &[&n, &crate::lab::REGIONS[region]])
            .await;
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                let _ = client.batch_execute("rollback").await;
                return Err(e);
            }
        };
        client.batch_execute("commit").await?;
        Ok::<_, tokio_postgres::Error>(Commit {
            tli: row.get(0),
            lsn: row.get(1),
            sysid: row.get(2),
        })
    };
    let r = tokio::time::timeout(Duration::from_secs(3), attempt).await;
    let complete_ms = ms_since(t0);
    let mut op = Op {
        client: if hostile {
            Client::Hostile
        } else {
            Client::Routed
        },
        kind: Kind::Write,
        n,
        read: None,
        region,
        invoke_ms,
        complete_ms,
        acked: None,
        error: None,
    };
    match r {
        Ok(Ok(c)) => {
            op.acked = Some(c);
            (Some(client), Some(op))
        }
        Ok(Err(e)) => {
            op.error = Some(
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
            );
            (Some(client), Some(op))
        }
        // Unknown outcome: not acknowledged; drop the session (it may still sit in COMMIT).
        Err(_) => {
            op.error = Some("timed out (outcome unknown)".into());
            (None, Some(op))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(n: i64, region: usize, invoke_ms: u64, complete_ms: u64, tli: Option<i32>) -> Op {
        Op {
            client: Client::Hostile,
            kind: Kind::Write,
            read: None,
            n,
            region,
            invoke_ms,
            complete_ms,
            acked: tli.map(|tli| Commit {
                tli,
                lsn: "0/0".into(),
                sysid: 1,
            }),
            error: None,
        }
    }

    #[test]
    fn an_old_timeline_write_after_a_newer_ack_is_split_brain() {
        // b promoted (tli 2) and acknowledged at 1000; a (tli 1) then accepted a write invoked
        // at 1010.
        let ops = [
            op(1, 0, 900, 905, Some(1)),
            op(2, 1, 990, 1000, Some(2)),
            op(3, 0, 1010, 1012, Some(1)),
        ];
        assert_eq!(split_brain(&ops), vec![SplitBrain { new: 2, old: 3 }]);
    }

    #[test]
    fn a_clean_handover_is_not_split_brain() {
        let ops = [
            // a's last write, slow, completing after b's first: invoked before it, so fine.
            op(1, 0, 980, 1020, Some(1)),
            op(2, 1, 990, 1000, Some(2)),
            // a refused afterwards (fenced): not acknowledged.
            op(3, 0, 1010, 1011, None),
            // a back as primary on a newer timeline (switchover back): fine.
            op(4, 0, 2000, 2001, Some(3)),
            // and b's later writes are refused.
            op(5, 1, 2002, 2003, None),
        ];
        assert!(split_brain(&ops).is_empty());
    }

    #[test]
    fn the_same_region_on_two_timelines_is_not_split_brain() {
        let ops = [op(1, 0, 0, 1, Some(2)), op(2, 0, 5, 6, Some(1))];
        assert!(split_brain(&ops).is_empty());
    }

    #[test]
    fn a_routed_read_behind_an_acknowledged_routed_write_is_stale() {
        let w = |n, region, invoke_ms, complete_ms| Op {
            client: Client::Routed,
            ..op(n, region, invoke_ms, complete_ms, Some(1))
        };
        let r = |n, region, invoke_ms, saw| Op {
            client: Client::Routed,
            kind: Kind::Read,
            read: Some(saw),
            acked: None,
            ..op(n, region, invoke_ms, invoke_ms + 1, None)
        };
        let ops = [
            w(10, 0, 0, 5),
            // Invoked after 10 was acknowledged, saw it: fine.
            r(11, 1, 6, 10),
            w(11, 1, 7, 9),
            // Invoked before 11 completed: may miss it.
            r(12, 0, 8, 10),
            // Invoked after 11 completed and saw only 10: stale.
            r(13, 0, 20, 10),
            // A hostile write never counts.
            Op {
                client: Client::Hostile,
                ..op(99, 0, 0, 1, Some(1))
            },
        ];
        assert_eq!(
            stale_reads(&ops),
            vec![StaleRead {
                read: 13,
                region: 0,
                saw: 10,
                missed: 11
            }]
        );
    }

    #[test]
    fn missing_lists_acknowledged_rows_absent_from_the_database() {
        let present: BTreeSet<i64> = [1, 2, 4].into_iter().collect();
        assert_eq!(missing([1, 2, 3, 4, 5], &present), vec![3, 5]);
    }
}
