//! [`Database`] over tokio-postgres, for the standalone mode and the lab.
//!
//! - Readings ([`PgDatabase::observe`]): role (`pg_is_in_recovery`), `default_transaction_read_only`,
//!   on a primary the peer's row of `pg_stat_replication` (sync state, flush/replay LSN, lag in
//!   bytes and seconds), on a standby its receive/replay LSNs and whether `pg_stat_wal_receiver`
//!   streams.
//! - [`Database::fence`]: a fence no client can undo (DESIGN §5, `SAFETY.md`): write the fence
//!   marker (`<data_dir>.fenced`, holding the epoch) and `standby.signal`, then stop the server
//!   with `pg_ctl stop -m immediate` (SIGQUIT: every backend exits at once, nothing is
//!   acknowledged after `pg_ctl` returns). Done when the postmaster is gone. Whoever starts the
//!   server again gets it in recovery, read-only. A session setting such as
//!   `default_transaction_read_only` is NOT a fence: any session can `SET` it off. While the
//!   marker exists, [`PgDatabase::observe`] reports a fenced primary (stopped or in recovery).
//!   The same fence is what the independent database watchdog ([`crate::watchdog`]) runs when
//!   its deadline passes unrenewed.
//! - [`Database::unfence`]: remove `standby.signal`, start the server, then remove the marker.
//! - [`Database::promote`]: `pg_promote(wait => true)`; yields `pg_current_wal_lsn()`.
//! - [`Database::set_sync`]: `synchronous_standby_names` = `FIRST 1 ("<peer>")` or `''`.
//! - [`Database::demote`] and [`Database::rebuild`] restart the server, so they need a
//!   [`NodeControl`] (data directory, binaries, OS user); without one they fail with
//!   [`PlaneError::Failed`] naming the missing control. Demote = clean stop (the walsender ships
//!   all WAL, shutdown checkpoint included, to the peer), `standby.signal`, `primary_conninfo` to
//!   the peer, start; yields the end of the replayed WAL. Rebuild = `pg_rewind` from the peer
//!   (which first recovers a crashed target), then the same follow configuration.
//!
//! Every call opens its own session (a restarted server is picked up without reconnect logic).
//! Connection failures map to [`PlaneError::Unavailable`], server errors to
//! [`PlaneError::Failed`]; epochs lower than the highest applied one are refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::EpochGuard;
use crate::decide::{DbRole, Lsn};
use crate::ports::{Database, PlaneError};

/// How to restart the local server (demote, rebuild). Programs run as `run_as` through
/// `runuser` when set (root running a server owned by `postgres`).
#[derive(Debug, Clone)]
pub struct NodeControl {
    /// Directory of `pg_ctl`, `pg_rewind` (e.g. `/usr/lib/postgresql/15/bin`).
    pub bindir: PathBuf,
    /// The data directory.
    pub data_dir: PathBuf,
    /// The server log (`pg_ctl -l`).
    pub log: PathBuf,
    /// The port the server listens on (written to `postgresql.auto.conf` after a rewind, which
    /// copies the source's configuration files).
    pub port: u16,
    /// OS user the server runs as, when different from the current one.
    pub run_as: Option<String>,
}

/// Configuration of [`PgDatabase`].
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// libpq/tokio-postgres conninfo of the local server.
    pub conninfo: String,
    /// Conninfo of the peer region's server (peer replay LSN, demote/rebuild source).
    pub peer_conninfo: Option<String>,
    /// The peer's `application_name` as a standby of this server (`synchronous_standby_names`,
    /// its `pg_stat_replication` row).
    pub peer_name: String,
    /// This server's `application_name` when it follows the peer.
    pub local_name: String,
    /// Restart control for demote/rebuild, and the data directory the fence needs.
    pub node: Option<NodeControl>,
    /// The database watchdog armed on every grant ([`crate::watchdog`]), when one runs.
    pub watchdog: Option<crate::watchdog::WatchdogClient>,
    /// How long fence/unfence wait for a reload to reach new sessions.
    pub settle_timeout: Duration,
}

impl PgConfig {
    /// A configuration without peer conninfo or node control.
    pub fn new(conninfo: &str, local_name: &str, peer_name: &str) -> PgConfig {
        PgConfig {
            conninfo: conninfo.to_owned(),
            peer_conninfo: None,
            peer_name: peer_name.to_owned(),
            local_name: local_name.to_owned(),
            node: None,
            watchdog: None,
            settle_timeout: Duration::from_secs(10),
        }
    }
}

/// Retries of a `pg_ctl start` that could not start the server (see `pg_ctl`).
const START_RETRIES: u32 = 10;
/// How long a rebuilt standby may take to stream before it is re-cloned (see `rebuild`).
const STREAM_WAIT: Duration = Duration::from_secs(10);

/// The fence marker of the server whose data directory is `data_dir`: a sibling file
/// `<data_dir>.fenced` (outside the data directory, so `pg_rewind` and `pg_basebackup` leave
/// it alone) holding the epoch the fence was made under.
pub fn fence_marker(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("fenced")
}

/// Makes sure a server restarted by anyone comes back fenced: the marker (fsynced, so it
/// survives a crash right after) and `standby.signal` (recovery: read-only for every client).
/// Used by the fence, the watchdog and the lab (a region's database boots fenced).
pub fn write_fence_files(data_dir: &Path, epoch: u64) -> std::io::Result<()> {
    use std::io::Write as _;
    let marker = fence_marker(data_dir);
    let mut f = std::fs::File::create(&marker)?;
    writeln!(f, "{epoch}")?;
    f.sync_all()?;
    let signal = data_dir.join("standby.signal");
    if !signal.exists() {
        std::fs::File::create(&signal)?.sync_all()?;
        // The server's own user must be able to remove it on promote: same owner as the
        // data directory.
        let meta = std::fs::metadata(data_dir)?;
        use std::os::unix::fs::MetadataExt as _;
        let _ = std::os::unix::fs::chown(&signal, Some(meta.uid()), Some(meta.gid()));
    }
    if let Some(dir) = marker.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Moves the data directory `dir` to `work` for a rebuild, where no supervisor can start it;
/// if a server was started on it meanwhile (its postmaster lives), moves it back and fails,
/// for the step to be retried.
async fn take_aside(dir: &Path, work: &Path) -> Result<(), PlaneError> {
    tokio::fs::rename(dir, work)
        .await
        .map_err(|e| PlaneError::Failed(format!("moving the data directory aside: {e}")))?;
    if postmaster_alive(work) {
        let _ = tokio::fs::rename(work, dir).await;
        return Err(PlaneError::Failed(
            "a server was started on the data directory during the rebuild; retrying".into(),
        ));
    }
    Ok(())
}

/// Whether the server of `data_dir` is held fenced.
pub fn is_fenced(data_dir: &Path) -> bool {
    fence_marker(data_dir).exists()
}

/// Whether a live postmaster runs on `data_dir` (its `postmaster.pid` names a live process;
/// EPERM means it lives under another user). Rebuild checks it before it moves a data
/// directory: a supervisor that restarts the server while a rebuild runs must not have its
/// files deleted underneath it.
pub fn postmaster_alive(data_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join("postmaster.pid")) else {
        return false;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(e) => e == nix::errno::Errno::EPERM,
    }
}

/// `pg_ctl stop -m immediate` on `data_dir` (as `run_as` when set); no running server is
/// success. Shared by the fence and the watchdog.
pub async fn stop_immediate(
    bindir: &Path,
    data_dir: &Path,
    run_as: Option<&str>,
) -> Result<(), PlaneError> {
    if !data_dir.join("postmaster.pid").exists() {
        return Ok(());
    }
    let program = bindir.join("pg_ctl");
    let mut cmd = match run_as {
        Some(user) => {
            let mut c = tokio::process::Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(&program);
            c
        }
        None => tokio::process::Command::new(&program),
    };
    let out = cmd
        .arg("-D")
        .arg(data_dir)
        .args(["-w", "-t", "30", "-m", "immediate", "stop"])
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| PlaneError::Failed(format!("running {}: {e}", program.display())))?;
    let text = String::from_utf8_lossy(&out.stderr);
    // "Is server running?": no server; "No such process": a stale postmaster.pid left by a
    // crash. Either way nothing runs that could acknowledge a write.
    if out.status.success()
        || text.contains("Is server running?")
        || text.contains("No such process")
    {
        Ok(())
    } else {
        Err(PlaneError::Failed(format!(
            "pg_ctl stop -m immediate: {}: {text}",
            out.status
        )))
    }
}

/// One reading of the local database.
#[derive(Debug, Clone, PartialEq)]
pub struct DbObservation {
    /// Primary or standby (`Down` only for a fenced server that is stopped: an unreachable
    /// server is an error). A fenced server (marker present) is an old primary held fenced:
    /// `read_only`, and `Primary` while someone runs it in recovery.
    pub role: DbRole,
    /// Fenced: the fence marker exists (the server is stopped or in recovery by our fence).
    pub read_only: bool,
    /// Current `synchronous_standby_names`.
    pub sync_names: String,
    /// Primary: the peer's `sync_state` (`sync`, `async`, ...) when connected.
    pub peer_sync_state: Option<String>,
    /// Primary: WAL position written; standby: last received.
    pub flush_lsn: Option<Lsn>,
    /// Primary: the peer's replayed LSN; standby: its own.
    pub replay_lsn: Option<Lsn>,
    /// This server's own position: primary `pg_current_wal_flush_lsn()`, standby its replayed
    /// LSN (what it would promote with).
    pub local_lsn: Option<Lsn>,
    /// Bytes of WAL not replayed yet (primary: by the peer; standby: received, not replayed).
    pub lag_bytes: u64,
    /// Seconds of replay lag.
    pub lag_seconds: u64,
    /// WAL streams between the two (primary: the peer is connected; standby: the WAL receiver
    /// is `streaming`).
    pub streaming: bool,
}

/// The tokio-postgres [`Database`] adapter.
#[derive(Debug)]
pub struct PgDatabase {
    cfg: PgConfig,
    epoch: EpochGuard,
}

fn pg_err(context: &str) -> impl Fn(tokio_postgres::Error) -> PlaneError + '_ {
    move |e| {
        if e.as_db_error().is_some() {
            PlaneError::Failed(format!("{context}: {e}"))
        } else {
            PlaneError::Unavailable(format!("{context}: {e}"))
        }
    }
}

/// Parses `X/Y` (hex halves) into an [`Lsn`].
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some(Lsn((hi << 32) | lo))
}

/// A single-quoted SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn to_u64(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        // Lag seconds: rounding up keeps a non-zero lag visible.
        v.ceil() as u64
    } else {
        0
    }
}

impl PgDatabase {
    /// An adapter over `cfg`.
    pub fn new(cfg: PgConfig) -> PgDatabase {
        PgDatabase {
            cfg,
            epoch: EpochGuard::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &PgConfig {
        &self.cfg
    }

    async fn connect_to(conninfo: &str) -> Result<Client, PlaneError> {
        let (client, conn) = tokio_postgres::connect(conninfo, NoTls)
            .await
            .map_err(|e| PlaneError::Unavailable(format!("connecting: {e}")))?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, PlaneError> {
        Self::connect_to(&self.cfg.conninfo).await
    }

    /// Whether the fence marker exists (needs node control; without it, never).
    pub fn fenced(&self) -> bool {
        self.cfg
            .node
            .as_ref()
            .is_some_and(|n| is_fenced(&n.data_dir))
    }

    /// Reads role, fence state, LSNs, lag and streaming state. A fenced server reads as a
    /// fenced primary whether it is stopped or running in recovery.
    pub async fn observe(&self) -> Result<DbObservation, PlaneError> {
        if self.fenced() {
            let mut obs = match self.observe_running().await {
                Ok(o) => o,
                // Fenced and stopped: `Down` (nothing runs: the holder does not renew on it)
                // but `read_only` (held fenced: it is rebuilt from a peer that holds the
                // lease, or un-fenced by this region's own grant).
                Err(_) => DbObservation {
                    role: DbRole::Down,
                    read_only: true,
                    sync_names: String::new(),
                    peer_sync_state: None,
                    flush_lsn: None,
                    replay_lsn: None,
                    local_lsn: None,
                    lag_bytes: 0,
                    lag_seconds: 0,
                    streaming: false,
                },
            };
            if obs.role != DbRole::Down {
                obs.role = DbRole::Primary;
            }
            obs.read_only = true;
            obs.streaming = false;
            return Ok(obs);
        }
        self.observe_running().await
    }

    async fn observe_running(&self) -> Result<DbObservation, PlaneError> {
        let c = self.connect().await?;
        let row = c
            .query_one(
                "select pg_is_in_recovery(), false, \
                 current_setting('synchronous_standby_names')",
                &[],
            )
            .await
            .map_err(pg_err("reading role"))?;
        let in_recovery: bool = row.get(0);
        let read_only: bool = row.get(1);
        let sync_names: String = row.get(2);
        if in_recovery {
            let r = c
                .query_one(
                    "select pg_last_wal_receive_lsn()::text, pg_last_wal_replay_lsn()::text, \
                     coalesce(pg_wal_lsn_diff(pg_last_wal_receive_lsn(), \
                       pg_last_wal_replay_lsn()), 0)::bigint, \
                     case when pg_last_wal_receive_lsn() is null \
                       or pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() then 0 \
                       else coalesce(extract(epoch from now() - pg_last_xact_replay_timestamp()), 0) \
                     end::float8, \
                     exists (select 1 from pg_stat_wal_receiver where status = 'streaming')",
                    &[],
                )
                .await
                .map_err(pg_err("reading standby replay"))?;
            let recv: Option<String> = r.get(0);
            let replay: Option<String> = r.get(1);
            Ok(DbObservation {
                role: DbRole::Standby,
                read_only,
                sync_names,
                peer_sync_state: None,
                flush_lsn: recv.as_deref().and_then(parse_lsn),
                replay_lsn: replay.as_deref().and_then(parse_lsn),
                local_lsn: replay.as_deref().and_then(parse_lsn),
                lag_bytes: u64::try_from(r.get::<_, i64>(2)).unwrap_or(0),
                lag_seconds: to_u64(r.get(3)),
                streaming: r.get(4),
            })
        } else {
            let own: String = c
                .query_one("select pg_current_wal_flush_lsn()::text", &[])
                .await
                .map_err(pg_err("reading pg_current_wal_flush_lsn"))?
                .get(0);
            let r = c
                .query_opt(
                    "select sync_state, flush_lsn::text, replay_lsn::text, \
                     coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn), 0)::bigint, \
                     coalesce(extract(epoch from replay_lag), 0)::float8, state = 'streaming' \
                     from pg_stat_replication where application_name = $1 limit 1",
                    &[&self.cfg.peer_name],
                )
                .await
                .map_err(pg_err("reading pg_stat_replication"))?;
            let mut obs = DbObservation {
                role: DbRole::Primary,
                read_only,
                sync_names,
                peer_sync_state: None,
                flush_lsn: None,
                replay_lsn: None,
                local_lsn: parse_lsn(&own),
                lag_bytes: 0,
                lag_seconds: 0,
                streaming: false,
            };
            if let Some(r) = r {
                obs.peer_sync_state = r.get(0);
                obs.flush_lsn = r.get::<_, Option<String>>(1).as_deref().and_then(parse_lsn);
                obs.replay_lsn = r.get::<_, Option<String>>(2).as_deref().and_then(parse_lsn);
                obs.lag_bytes = u64::try_from(r.get::<_, i64>(3)).unwrap_or(0);
                obs.lag_seconds = to_u64(r.get(4));
                obs.streaming = r.get::<_, Option<bool>>(5).unwrap_or(false);
            }
            Ok(obs)
        }
    }

    /// `ALTER SYSTEM` (which cannot run in a transaction block) then `pg_reload_conf()`.
    async fn alter_system(&self, c: &Client, stmt: &str) -> Result<(), PlaneError> {
        // A fenced server starts sessions read-only; ALTER SYSTEM itself is allowed, but make
        // this session's intent explicit.
        c.batch_execute("set default_transaction_read_only = off")
            .await
            .map_err(pg_err("set session read-write"))?;
        c.batch_execute(stmt).await.map_err(pg_err(stmt))?;
        c.query_one("select pg_reload_conf()", &[])
            .await
            .map_err(pg_err("pg_reload_conf"))?;
        Ok(())
    }

    /// Waits until a NEW session sees `setting` = `want` (the postmaster processed the reload).
    async fn settle(&self, setting: &str, want: &str) -> Result<(), PlaneError> {
        let deadline = tokio::time::Instant::now() + self.cfg.settle_timeout;
        loop {
            let c = self.connect().await?;
            let row = c
                .query_one("select current_setting($1)", &[&setting])
                .await
                .map_err(pg_err("reading setting"))?;
            let got: String = row.get(0);
            if got == want {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PlaneError::Failed(format!(
                    "{setting} is {got:?} after reload, wanted {want:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Terminates every other client backend, waiting up to 5 s for each to exit. Returns how
    /// many were signalled.
    pub async fn terminate_clients(&self) -> Result<u64, PlaneError> {
        let c = self.connect().await?;
        let row = c
            .query_one(
                "select count(*) from (select pg_terminate_backend(pid, 5000) \
                 from pg_stat_activity \
                 where backend_type = 'client backend' and pid <> pg_backend_pid()) t",
                &[],
            )
            .await
            .map_err(pg_err("terminating client backends"))?;
        Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
    }

    fn node(&self, what: &str) -> Result<&NodeControl, PlaneError> {
        self.cfg.node.as_ref().ok_or_else(|| {
            PlaneError::Failed(format!(
                "{what} needs node control (data directory, pg_ctl); none configured"
            ))
        })
    }

    fn peer_conninfo(&self, what: &str) -> Result<&str, PlaneError> {
        self.cfg.peer_conninfo.as_deref().ok_or_else(|| {
            PlaneError::Failed(format!("{what} needs the peer's conninfo; none configured"))
        })
    }

    /// `primary_conninfo` for following the peer.
    fn follow_conninfo(&self, peer: &str) -> String {
        format!("{peer} application_name={}", self.cfg.local_name)
    }

    async fn run(&self, node: &NodeControl, bin: &str, args: &[String]) -> Result<(), PlaneError> {
        let program = node.bindir.join(bin);
        let mut cmd = match &node.run_as {
            Some(user) => {
                let mut c = tokio::process::Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&program);
                c
            }
            None => tokio::process::Command::new(&program),
        };
        cmd.args(args)
            .env("LC_ALL", "C")
            .env_remove("PGOPTIONS")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let out = cmd
            .output()
            .await
            .map_err(|e| PlaneError::Failed(format!("running {}: {e}", program.display())))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(PlaneError::Failed(format!(
                "{bin} {}: {}: {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )))
        }
    }

    async fn pg_ctl(&self, node: &NodeControl, action: &str) -> Result<(), PlaneError> {
        let mut args = vec![
            "-D".to_owned(),
            node.data_dir.display().to_string(),
            "-w".to_owned(),
            "-t".to_owned(),
            "60".to_owned(),
        ];
        match action {
            "start" => args.extend(["-l".to_owned(), node.log.display().to_string()]),
            _ => args.extend(["-m".to_owned(), "fast".to_owned()]),
        }
        args.push(action.to_owned());
        if action != "start" {
            return self.run(node, "pg_ctl", &args).await;
        }
        // A start refused because the previous postmaster still holds its lock file is retried
        // for a few seconds: a crashed postmaster that nobody has reaped yet is a zombie, and
        // PostgreSQL takes a zombie's pid for a live server ("lock file … already exists").
        // An init that reaps orphans late (seen here: ~2 s, this machine's PID 1; containers
        // without a real init do the same) made every rebuild right after a crash fail.
        let mut tries = 0;
        loop {
            match self.run(node, "pg_ctl", &args).await {
                Err(e) if tries < START_RETRIES && e.to_string().contains("could not start") => {
                    tries += 1;
                    tracing::warn!(error = %e, tries, "pg_ctl start failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                r => return r,
            }
        }
    }

    /// Writes `standby.signal` (as the server's user, so the server can remove it on promote).
    async fn write_standby_signal(&self, node: &NodeControl) -> Result<(), PlaneError> {
        let path = node.data_dir.join("standby.signal");
        let mut cmd = match &node.run_as {
            Some(user) => {
                let mut c = tokio::process::Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg("touch");
                c
            }
            None => tokio::process::Command::new("touch"),
        };
        let st = cmd
            .arg(&path)
            .status()
            .await
            .map_err(|e| PlaneError::Failed(format!("touch {}: {e}", path.display())))?;
        if st.success() {
            Ok(())
        } else {
            Err(PlaneError::Failed(format!(
                "touch {}: {st}",
                path.display()
            )))
        }
    }

    /// The end of the replayed WAL, waiting (bounded) until the standby reports one.
    async fn replayed_lsn(&self) -> Result<Lsn, PlaneError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(obs) = self.observe().await
                && let Some(l) = obs.replay_lsn.filter(|_| obs.role == DbRole::Standby)
            {
                return Ok(l);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(PlaneError::Failed("no replay LSN after restart".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Rewinds (or re-clones) the data directory of `node` (the rebuild's work directory)
    /// from `peer` and points it at the peer; no standby.signal (pg_rewind's single-user
    /// recovery refuses it): only ever called on a directory nobody can start.
    async fn rebuild_in(&self, node: &NodeControl, peer: &str) -> Result<(), PlaneError> {
        let _ = std::fs::remove_file(node.data_dir.join("standby.signal"));
        // PostgreSQL 15's pg_rewind reads the source's timeline from its control file, which a
        // promotion updates only at the next checkpoint.
        let src = Self::connect_to(peer).await?;
        src.batch_execute("checkpoint")
            .await
            .map_err(pg_err("checkpoint on the source"))?;
        drop(src);
        let rewound = self
            .run(
                node,
                "pg_rewind",
                &[
                    format!("--target-pgdata={}", node.data_dir.display()),
                    format!("--source-server={peer}"),
                    "--no-sync".to_owned(),
                ],
            )
            .await;
        if let Err(e) = rewound {
            // Missing WAL, a lost or corrupt data directory: copy the peer afresh.
            tracing::warn!(error = %e, "pg_rewind failed; re-cloning with pg_basebackup");
            self.reclone(node, peer).await?;
        }
        self.write_follow_conf(node, peer).await
    }

    /// This node's own settings over what pg_rewind or pg_basebackup copied from the peer: its
    /// port, and following `peer` as a standby.
    async fn write_follow_conf(&self, node: &NodeControl, peer: &str) -> Result<(), PlaneError> {
        let auto = format!(
            "# Do not edit this file manually!\n\
             # It will be overwritten by the ALTER SYSTEM command.\n\
             port = {}\nprimary_conninfo = {}\nprimary_slot_name = ''\n\
             synchronous_standby_names = ''\n",
            node.port,
            literal(&self.follow_conninfo(peer))
        );
        tokio::fs::write(node.data_dir.join("postgresql.auto.conf"), auto)
            .await
            .map_err(|e| PlaneError::Failed(format!("writing postgresql.auto.conf: {e}")))?;
        Ok(())
    }

    /// Moves the rebuild's work directory (`w`) back under the node's name with
    /// `standby.signal` in place: whatever happened, the directory goes back fenced.
    async fn put_back(&self, w: &NodeControl, node: &NodeControl) -> Result<(), PlaneError> {
        if tokio::fs::metadata(&w.data_dir).await.is_ok() {
            let signal = self.write_standby_signal(w).await;
            tokio::fs::rename(&w.data_dir, &node.data_dir)
                .await
                .map_err(|e| PlaneError::Failed(format!("moving the data directory back: {e}")))?;
            signal?;
        }
        Ok(())
    }

    /// Whether the server becomes a standby whose WAL receiver streams STEADILY within
    /// `limit`: in 10 polls in a row, 200 ms apart. A diverged standby's receiver reconnects
    /// every ~200 ms and reads as streaming for a moment each time (seen in CI: one lucky poll
    /// made a rebuild of a diverged node "succeed").
    async fn streams_within(&self, limit: Duration) -> bool {
        let t0 = tokio::time::Instant::now();
        let mut steady = 0;
        loop {
            match self.observe_running().await {
                Ok(o) if o.role == DbRole::Standby && o.streaming => steady += 1,
                _ => steady = 0,
            }
            if steady >= 10 {
                return true;
            }
            if t0.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Replaces the data directory with a fresh `pg_basebackup` of `peer`. The old directory
    /// is moved aside first and removed only once the copy succeeded. Called only on the
    /// rebuild's work directory, which no supervisor can start (the rebuild checked, after
    /// renaming it, that no server runs in it).
    async fn reclone(&self, node: &NodeControl, peer: &str) -> Result<(), PlaneError> {
        let aside = node.data_dir.with_extension("replaced");
        let _ = tokio::fs::remove_dir_all(&aside).await;
        if tokio::fs::metadata(&node.data_dir).await.is_ok() {
            tokio::fs::rename(&node.data_dir, &aside)
                .await
                .map_err(|e| PlaneError::Failed(format!("moving the old data aside: {e}")))?;
        }
        let copied = self
            .run(
                node,
                "pg_basebackup",
                &[
                    "-d".to_owned(),
                    peer.to_owned(),
                    "-D".to_owned(),
                    node.data_dir.display().to_string(),
                    "-X".to_owned(),
                    "stream".to_owned(),
                    "-c".to_owned(),
                    "fast".to_owned(),
                    "--no-sync".to_owned(),
                ],
            )
            .await;
        match copied {
            Ok(()) => {
                let _ = tokio::fs::remove_dir_all(&aside).await;
                Ok(())
            }
            Err(e) => {
                // Put the old directory back: a later attempt may still rewind it.
                let _ = tokio::fs::remove_dir_all(&node.data_dir).await;
                let _ = tokio::fs::rename(&aside, &node.data_dir).await;
                Err(e)
            }
        }
    }

    /// Whether the server answers, and whether it is in recovery.
    async fn in_recovery(&self) -> Result<bool, PlaneError> {
        let c = self.connect().await?;
        let row = c
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(pg_err("pg_is_in_recovery"))?;
        Ok(row.get(0))
    }
}

impl Database for PgDatabase {
    async fn promote(&self, epoch: u64) -> Result<Lsn, PlaneError> {
        self.epoch.admit(epoch)?;
        let c = self.connect().await?;
        let rec: bool = c
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(pg_err("pg_is_in_recovery"))?
            .get(0);
        if rec {
            let done: bool = c
                .query_one("select pg_promote(true, 60)", &[])
                .await
                .map_err(pg_err("pg_promote"))?
                .get(0);
            if !done {
                return Err(PlaneError::Failed("pg_promote did not finish".into()));
            }
        }
        let lsn: String = c
            .query_one("select pg_current_wal_lsn()::text", &[])
            .await
            .map_err(pg_err("pg_current_wal_lsn"))?
            .get(0);
        parse_lsn(&lsn).ok_or_else(|| PlaneError::Failed(format!("bad LSN {lsn:?}")))
    }

    async fn fence(&self, epoch: u64) -> Result<(), PlaneError> {
        self.epoch.admit(epoch)?;
        let node = self.node("fence")?;
        write_fence_files(&node.data_dir, epoch)
            .map_err(|e| PlaneError::Failed(format!("writing the fence marker: {e}")))?;
        stop_immediate(&node.bindir, &node.data_dir, node.run_as.as_deref()).await
    }

    async fn unfence(&self, epoch: u64) -> Result<(), PlaneError> {
        self.epoch.admit(epoch)?;
        if !self.fenced() {
            return Ok(());
        }
        let node = self.node("unfence")?.clone();
        // Someone may have started it (in recovery): stop it, then start it as a primary.
        stop_immediate(&node.bindir, &node.data_dir, node.run_as.as_deref()).await?;
        let signal = node.data_dir.join("standby.signal");
        if signal.exists() {
            std::fs::remove_file(&signal)
                .map_err(|e| PlaneError::Failed(format!("removing standby.signal: {e}")))?;
        }
        self.pg_ctl(&node, "start").await?;
        std::fs::remove_file(fence_marker(&node.data_dir))
            .map_err(|e| PlaneError::Failed(format!("removing the fence marker: {e}")))
    }

    async fn demote(&self, epoch: u64, _target: &str) -> Result<Lsn, PlaneError> {
        self.epoch.admit(epoch)?;
        let running = match self.in_recovery().await {
            Ok(true) => return self.replayed_lsn().await,
            Ok(false) => true,
            // Stopped (e.g. an earlier demote stopped it and failed before the restart): start
            // it as a standby below.
            Err(PlaneError::Unavailable(_)) if self.cfg.node.is_some() => false,
            Err(e) => return Err(e),
        };
        let node = self.node("demote")?.clone();
        let peer = self.peer_conninfo("demote")?.to_owned();
        let follow = format!(
            "primary_conninfo = {}",
            literal(&self.follow_conninfo(&peer))
        );
        if running {
            let c = self.connect().await?;
            self.alter_system(&c, &format!("alter system set {follow}"))
                .await?;
            // Follow without a slot: the new primary may not have one for this node (slots
            // are not carried across rewinds and promotions).
            self.alter_system(&c, "alter system set primary_slot_name = ''")
                .await?;
            drop(c);
            // A clean stop: the walsender ships all WAL, the shutdown checkpoint included.
            self.pg_ctl(&node, "stop").await?;
        } else {
            // The server is down: append to postgresql.auto.conf (the last setting wins).
            let path = node.data_dir.join("postgresql.auto.conf");
            let mut text = tokio::fs::read_to_string(&path).await.unwrap_or_default();
            text.push_str(&format!("{follow}\nprimary_slot_name = ''\n"));
            tokio::fs::write(&path, text)
                .await
                .map_err(|e| PlaneError::Failed(format!("writing {}: {e}", path.display())))?;
        }
        self.write_standby_signal(&node).await?;
        self.pg_ctl(&node, "start").await?;
        self.replayed_lsn().await
    }

    async fn arm(&self, epoch: u64, until_host_ms: i64) -> Result<(), PlaneError> {
        match &self.cfg.watchdog {
            Some(w) => w
                .arm(epoch, until_host_ms)
                .await
                .map_err(PlaneError::Unavailable),
            None => Ok(()),
        }
    }

    async fn disarm(&self, epoch: u64) -> Result<(), PlaneError> {
        match &self.cfg.watchdog {
            Some(w) => w.disarm(epoch).await.map_err(PlaneError::Unavailable),
            None => Ok(()),
        }
    }

    async fn peer_replayed(&self) -> Result<Lsn, PlaneError> {
        if let Some(peer) = &self.cfg.peer_conninfo {
            let c = Self::connect_to(peer).await?;
            let lsn: Option<String> = c
                .query_one(
                    "select (case when pg_is_in_recovery() then pg_last_wal_replay_lsn() \
                     else pg_current_wal_lsn() end)::text",
                    &[],
                )
                .await
                .map_err(pg_err("reading the peer's replay LSN"))?
                .get(0);
            return lsn
                .as_deref()
                .and_then(parse_lsn)
                .ok_or_else(|| PlaneError::Unavailable("peer has no replay LSN yet".into()));
        }
        self.observe()
            .await?
            .replay_lsn
            .ok_or_else(|| PlaneError::Unavailable("peer not streaming".into()))
    }

    async fn set_sync(&self, epoch: u64, on: bool) -> Result<(), PlaneError> {
        self.epoch.admit(epoch)?;
        let names = if on {
            format!("FIRST 1 (\"{}\")", self.cfg.peer_name.replace('"', ""))
        } else {
            String::new()
        };
        let c = self.connect().await?;
        self.alter_system(
            &c,
            &format!(
                "alter system set synchronous_standby_names = {}",
                literal(&names)
            ),
        )
        .await?;
        drop(c);
        self.settle("synchronous_standby_names", &names).await
    }

    async fn rebuild(&self, _source: &str, epoch: u64) -> Result<(), PlaneError> {
        self.epoch.admit(epoch)?;
        let node = self.node("rebuild")?.clone();
        let peer = self.peer_conninfo("rebuild")?.to_owned();
        // Already a streaming standby: nothing to do.
        if let Ok(obs) = self.observe().await
            && obs.role == DbRole::Standby
            && obs.streaming
        {
            return Ok(());
        }
        // Stop if running.
        let _ = self.pg_ctl(&node, "stop").await;
        // Work on the directory under another name: pg_rewind recovers a crashed server first,
        // in single-user mode, which refuses to run with standby.signal present, so the signal
        // must go while it runs. Under its own name, a supervisor restarting the crashed
        // server in that window (systemd; the lab's drill, seen in CI) started it as a
        // WRITABLE primary on its old timeline while the peer was primary. Renamed, nobody
        // can start it; it comes back under its name only with standby.signal in place.
        let work = node.data_dir.with_extension("rebuilding");
        if tokio::fs::metadata(&node.data_dir).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&work).await;
            take_aside(&node.data_dir, &work).await?;
        }
        // Nothing runs now and nothing can start (the directory is renamed): the old grant's
        // watchdog deadline guards nothing any more. Disarm it (with the peer's newer epoch)
        // and wait out a fence attempt in flight, or its retries would stop the standby this
        // rebuild starts (found by the campaign, seed 4743859999086724788: a database frozen
        // past the TTL, its watchdog firing 7.5 s late, in a retry loop that succeeded right
        // after the rename back and stopped the rebuilt server). A watchdog that cannot be
        // reached cannot fence either: go on.
        if let Err(e) = self.disarm(epoch).await {
            tracing::warn!(error = %e, "could not disarm the watchdog before the rebuild");
        }
        // (No data directory under its name: a lost one, or a rebuild that crashed after the
        // rename; the work directory, if any, is used as it is.)
        let mut w = node.clone();
        w.data_dir = work.clone();
        let rebuilt = self.rebuild_in(&w, &peer).await;
        self.put_back(&w, &node).await?;
        rebuilt?;
        self.pg_ctl(&node, "start").await?;
        // pg_rewind decides from the target's control file whether a rewind is needed; a node
        // last shut down as a standby may record a minimum recovery point BEFORE the peer's
        // fork while its own WAL runs past it. pg_rewind then reports "no rewind required",
        // and the restarted standby replays its own WAL past the fork and never streams ("new
        // timeline forked off current database system timeline before current recovery
        // point"). Found by the campaign (seed 8247506267396718108: a database killed and
        // restarted fenced by its supervisor before the controller rebuilt it; the region
        // stayed a standby that never streamed). So: a rebuilt node must stream; if it does
        // not within STREAM_WAIT, it is re-cloned from the peer, which always works.
        if !self.streams_within(STREAM_WAIT).await {
            tracing::warn!(
                "the rewound standby does not stream (its WAL runs past the peer's fork); re-cloning it with pg_basebackup"
            );
            let _ = self.pg_ctl(&node, "stop").await;
            take_aside(&node.data_dir, &work).await?;
            let recloned = match self.reclone(&w, &peer).await {
                Ok(()) => self.write_follow_conf(&w, &peer).await,
                Err(e) => Err(e),
            };
            self.put_back(&w, &node).await?;
            recloned?;
            self.pg_ctl(&node, "start").await?;
            if !self.streams_within(STREAM_WAIT).await {
                return Err(PlaneError::Failed(
                    "the re-cloned standby does not stream from the peer".into(),
                ));
            }
        }
        // A standby of the peer now: no longer an old primary held fenced.
        match std::fs::remove_file(fence_marker(&node.data_dir)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(PlaneError::Failed(format!(
                "removing the fence marker: {e}"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_parses_hex_halves() {
        assert_eq!(parse_lsn("0/0"), Some(Lsn(0)));
        assert_eq!(parse_lsn("16/B374D848"), Some(Lsn(0x16_B374_D848)));
        assert_eq!(parse_lsn("zz"), None);
        assert_eq!(Lsn(0x16_B374_D848).to_string(), "16/B374D848");
    }

    #[test]
    fn postmaster_alive_reads_the_pid_file() {
        let dir = std::env::temp_dir().join(format!("pm-alive-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(!postmaster_alive(&dir), "no pid file: nothing runs");
        let pid = dir.join("postmaster.pid");
        std::fs::write(&pid, format!("{}\n/data\n", std::process::id())).unwrap();
        assert!(postmaster_alive(&dir), "our own pid is alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(&pid, format!("{dead}\n")).unwrap();
        assert!(!postmaster_alive(&dir), "a reaped pid is a stale file");
        std::fs::write(&pid, "garbage\n").unwrap();
        assert!(!postmaster_alive(&dir));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn literal_doubles_quotes() {
        assert_eq!(literal("a'b"), "'a''b'");
    }
}
