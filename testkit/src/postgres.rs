//! PostgreSQL 15 harnesses: [`PgPair`], a primary with a **synchronous** standby, and [`Pg`], one
//! node with stop, start and crash controls.
//!
//! The pair follows `shared/TOOLCHAIN.md` §5: `synchronous_commit = remote_apply`,
//! `synchronous_standby_names = 'FIRST 1 (standby1)'`, a physical slot `standby1`, a
//! `pg_basebackup` **without** `-R` (its `primary_conninfo` lacks `application_name`, and every
//! commit would hang), `standby.signal`, and `wal_log_hints = on` so `pg_rewind` works after a
//! failover. Ready = the primary reports the standby's `sync_state` as `sync`.
//!
//! When the tests run as root, every PostgreSQL program runs as user `postgres`
//! (`runuser -u postgres --`) and the temp dir is handed to that user. Servers listen on free
//! loopback ports; their unix sockets live in the temp dir. `fsync = off`: a killed postmaster
//! loses nothing (the kernel keeps its writes), only a machine crash would.
//!
//! `wal_keep_size = 128MB` keeps the WAL `pg_rewind` needs on a crashed old primary (its
//! end-of-recovery checkpoint would otherwise recycle the segment holding the last common
//! checkpoint).
//!
//! Each node's own settings (port, `primary_conninfo`, ...) live in `testkit-node.conf` in its data
//! directory, included at the end of `postgresql.conf`, so they can be rewritten on their own.

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, User};
use tempfile::TempDir;
use tokio_postgres::NoTls;

use crate::process::{is_executable, run};
use crate::{HarnessError, Result, eventually};

const INSTALL: &str =
    "scripts/setup.sh (or: apt-get install -y postgresql-15 postgresql-client-15)";
/// Where Debian installs PostgreSQL 15; `TESTKIT_PG_BINDIR` overrides it.
const DEFAULT_BINDIR: &str = "/usr/lib/postgresql/15/bin";
/// The standby's `application_name` and slot name.
pub const STANDBY_NAME: &str = "standby1";
/// Included at the end of `postgresql.conf`; holds one node's own settings.
const NODE_CONF: &str = "testkit-node.conf";
const START_ATTEMPTS: usize = 5;
const READY_TIMEOUT: Duration = Duration::from_secs(60);

// === PgTools ===

/// The PostgreSQL programs and the user they must run as.
#[derive(Debug, Clone)]
struct PgTools {
    bindir: PathBuf,
    /// `Some(("postgres", runuser))` when running as root.
    run_as: Option<(String, PathBuf)>,
}

impl PgTools {
    fn find() -> Result<Self> {
        let bindir = std::env::var_os("TESTKIT_PG_BINDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_BINDIR));
        for bin in ["initdb", "pg_ctl", "pg_basebackup", "pg_rewind", "postgres"] {
            let path = bindir.join(bin);
            if !is_executable(&path) {
                return Err(HarnessError::MissingBinary {
                    what: format!("PostgreSQL 15 program `{bin}`"),
                    looked_in: path.display().to_string(),
                    install: INSTALL.into(),
                });
            }
        }
        let run_as = if nix::unistd::geteuid().is_root() {
            let runuser = crate::process::find_program("runuser", "apt-get install -y util-linux")?;
            Some(("postgres".to_owned(), runuser))
        } else {
            None
        };
        Ok(Self { bindir, run_as })
    }

    /// `bin` from the PostgreSQL bindir, run as the right user, in `cwd`, inside network
    /// namespace `netns` when given (`ip netns exec`, which execs: the child's pid is the
    /// program's own).
    fn std_command(&self, bin: &str, cwd: &Path, netns: Option<&str>) -> std::process::Command {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = netns {
            argv.extend(["ip", "netns", "exec", ns].map(OsString::from));
        }
        if let Some((user, runuser)) = &self.run_as {
            argv.push(runuser.into());
            argv.extend(["-u", user.as_str(), "--"].map(OsString::from));
        }
        argv.push(self.bindir.join(bin).into());
        let mut cmd = std::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(cwd);
        for var in [
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGDATABASE",
            "PGDATA",
            "PGOPTIONS",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn command(&self, bin: &str, cwd: &Path) -> tokio::process::Command {
        tokio::process::Command::from(self.std_command(bin, cwd, None))
    }

    /// Hands `path` to the user the servers run as.
    fn chown(&self, path: &Path) -> Result<()> {
        let Some((user, _)) = &self.run_as else {
            return Ok(());
        };
        let user = User::from_name(user)
            .map_err(|e| HarnessError::Sys {
                context: format!("looking up user {user}"),
                source: e,
            })?
            .ok_or_else(|| HarnessError::MissingBinary {
                what: format!("user `{user}`"),
                looked_in: "/etc/passwd".into(),
                install: INSTALL.into(),
            })?;
        nix::unistd::chown(path, Some(user.uid), Some(user.gid)).map_err(|e| HarnessError::Sys {
            context: format!("chown {} to postgres", path.display()),
            source: e,
        })
    }
}

// === Pg ===

/// Where a node runs when it is not on loopback: a network namespace (made by the caller) and
/// the address it is reached at from outside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgHost {
    /// The namespace (`ip netns exec <netns>` starts and stops the server in it).
    pub netns: String,
    /// The address clients and the peer connect to.
    pub ip: Ipv4Addr,
}

/// One PostgreSQL node: a data directory and a port on 127.0.0.1 (or on its [`PgHost`]'s
/// address). Drop stops it (immediate).
///
/// From a [`PgPair`], the nodes keep their names after a failover: [`PgPair::standby`] is still
/// the node that *started* as standby, even once promoted.
#[derive(Debug)]
pub struct Pg {
    name: String,
    data_dir: PathBuf,
    /// Holds the unix sockets and the logs.
    base_dir: PathBuf,
    port: u16,
    tools: PgTools,
    /// Set for a standalone node, which owns its temp dir (dropped after the server stops).
    own_dir: Option<TempDir>,
    /// The namespace and address it runs at (`None`: loopback, this namespace).
    host: Option<PgHost>,
}

impl Pg {
    /// Starts a standalone single node (no replication) in its own temp dir.
    pub async fn start() -> Result<Self> {
        let tools = PgTools::find()?;
        let dir = pg_temp_dir(&tools)?;
        let mut pg = Self::init(&tools, dir.path(), "pg", None).await?;
        pg.start_new(|port| format!("port = {port}\n")).await?;
        pg.own_dir = Some(dir);
        Ok(pg)
    }

    /// Runs `initdb` for a node named `name` under `base` and writes the shared settings (on a
    /// [`PgHost`]: listening on every address of its namespace, and trusting 10.0.0.0/8, the
    /// private range the namespaces' bridge is on).
    async fn init(tools: &PgTools, base: &Path, name: &str, host: Option<PgHost>) -> Result<Self> {
        let data_dir = base.join(name);
        run(tools
            .command("initdb", base)
            .arg("-D")
            .arg(&data_dir)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .args(["--locale=C", "--no-instructions"]))
        .await?;
        let conf = data_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(HarnessError::io(format!("reading {}", conf.display())))?;
        text.push_str(&shared_settings(base, host.is_some()));
        write_as_is(&conf, &text)?;
        if host.is_some() {
            let hba = data_dir.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba)
                .map_err(HarnessError::io(format!("reading {}", hba.display())))?;
            text.push_str(
                "# testkit: the network namespaces' bridge\n\
                 host all all 10.0.0.0/8 trust\nhost replication all 10.0.0.0/8 trust\n",
            );
            write_as_is(&hba, &text)?;
        }
        Ok(Self {
            name: name.into(),
            data_dir,
            base_dir: base.into(),
            port: 0,
            tools: tools.clone(),
            own_dir: None,
            host,
        })
    }

    /// Picks a free port, writes the node conf made by `node_conf(port)` and starts the server,
    /// retrying with another port if one was taken meanwhile.
    async fn start_new(&mut self, node_conf: impl Fn(u16) -> String) -> Result<()> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            self.port = crate::free_port()?;
            self.write_node_conf(&node_conf(self.port))?;
            match self.start_server().await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let log = crate::process::log_tail(&self.log_path(), 20);
                    if !log.contains("could not bind") && !log.contains("already in use") {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| HarnessError::State {
            context: format!("starting {}", self.name),
            detail: "no attempt made".into(),
        }))
    }

    fn write_node_conf(&self, text: &str) -> Result<()> {
        write_as_is(&self.data_dir.join(NODE_CONF), text)
    }

    /// The node's name (`primary`, `standby`, or `pg` for a standalone node).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The TCP port (on [`Pg::ip`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address the server is reached at: 127.0.0.1, or its [`PgHost`]'s.
    pub fn ip(&self) -> Ipv4Addr {
        self.host.as_ref().map_or(Ipv4Addr::LOCALHOST, |h| h.ip)
    }

    /// The network namespace the server runs in (`None`: this one).
    pub fn netns(&self) -> Option<&str> {
        self.host.as_ref().map(|h| h.netns.as_str())
    }

    /// A tokio-postgres connection string for user `postgres`, database `postgres`.
    pub fn conninfo(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres connect_timeout=10",
            self.ip(),
            self.port
        )
    }

    /// `pg_ctl`, run where the server runs.
    fn pg_ctl(&self) -> tokio::process::Command {
        tokio::process::Command::from(self.tools.std_command(
            "pg_ctl",
            &self.base_dir,
            self.netns(),
        ))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log written by `pg_ctl -l`.
    pub fn log_path(&self) -> PathBuf {
        self.base_dir.join(format!("{}.log", self.name))
    }

    /// Connects (no TLS) and drives the connection on a spawned task.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.conninfo(), NoTls)
            .await
            .map_err(HarnessError::pg(format!("connecting to {}", self.name)))?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Whether the postmaster is alive (a pid file naming a live, non-zombie process).
    pub fn is_running(&self) -> bool {
        self.postmaster_pid().is_some_and(process_alive)
    }

    /// Starts the (stopped or crashed) server and waits until it accepts connections.
    pub async fn start_server(&self) -> Result<()> {
        self.remove_stale_lock_files();
        let log = self.log_path();
        let mut cmd = self.pg_ctl();
        cmd.arg("-D")
            .arg(&self.data_dir)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60", "start"]);
        run(&mut cmd).await.map_err(|e| match e {
            HarnessError::Command {
                command,
                status,
                output,
            } => HarnessError::Command {
                command,
                status,
                output: format!(
                    "{output}\nlast lines of {}:\n{}",
                    log.display(),
                    crate::process::log_tail(&log, 20)
                ),
            },
            other => other,
        })?;
        Ok(())
    }

    /// Stops the server cleanly (`pg_ctl stop -m fast`) and waits for it.
    pub async fn stop_server(&self) -> Result<()> {
        self.pg_ctl_stop("fast").await
    }

    /// Stops the server with `pg_ctl stop -m immediate` (no shutdown checkpoint; crash recovery
    /// at the next start).
    pub async fn stop_server_immediate(&self) -> Result<()> {
        self.pg_ctl_stop("immediate").await
    }

    async fn pg_ctl_stop(&self, mode: &str) -> Result<()> {
        run(self
            .pg_ctl()
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-m", mode, "-w", "-t", "60", "stop"]))
        .await?;
        Ok(())
    }

    /// SIGSTOPs (`true`) or SIGCONTs (`false`) the server: its postmaster and every child, so
    /// that the whole database hangs (a frozen VM, a stuck disk) rather than dies. Signals
    /// sent to it meanwhile (a fence's `pg_ctl stop`) wait until it is resumed.
    pub fn freeze_server(&self, stop: bool) -> Result<()> {
        let pid = self.postmaster_pid().ok_or_else(|| HarnessError::State {
            context: format!("freezing {}", self.name),
            detail: "no postmaster.pid: the server is not running".into(),
        })?;
        let sig = if stop {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        let postmaster = Pid::from_raw(pid);
        if stop {
            // The postmaster first, so it forks nothing new while its children stop.
            kill(postmaster, sig).map_err(|e| HarnessError::Sys {
                context: format!("{sig} to postmaster {pid} of {}", self.name),
                source: e,
            })?;
        }
        for child in children_of(pid) {
            let _ = kill(Pid::from_raw(child), sig);
        }
        if !stop {
            kill(postmaster, sig).map_err(|e| HarnessError::Sys {
                context: format!("{sig} to postmaster {pid} of {}", self.name),
                source: e,
            })?;
        }
        Ok(())
    }

    /// Crashes the server like a power cut: the postmaster is frozen (SIGSTOP, so it forks no
    /// more), then it and every child process (backends, walsender/walreceiver, checkpointer...)
    /// get SIGKILL; returns once none of them runs. PostgreSQL children are session leaders of
    /// their own, so the postmaster's process group alone would miss them.
    pub async fn kill_server(&self) -> Result<()> {
        let pid = self.postmaster_pid().ok_or_else(|| HarnessError::State {
            context: format!("killing {}", self.name),
            detail: "no postmaster.pid: the server is not running".into(),
        })?;
        let children = crash(pid).map_err(|e| HarnessError::Sys {
            context: format!("SIGKILL to postmaster {pid} of {}", self.name),
            source: e,
        })?;
        eventually(
            &format!("{}'s processes to die", self.name),
            Duration::from_secs(20),
            || async {
                let alive = std::iter::once(pid)
                    .chain(children.iter().copied())
                    .filter(|p| process_alive(*p))
                    .count();
                match alive {
                    0 => Ok(()),
                    n => Err(format!("{n} processes of postmaster {pid} still alive")),
                }
            },
        )
        .await
    }

    /// Whether the node runs as a standby (`pg_is_in_recovery()`).
    pub async fn is_in_recovery(&self) -> Result<bool> {
        let client = self.connect().await?;
        let row = client
            .query_one("select pg_is_in_recovery()", &[])
            .await
            .map_err(HarnessError::pg("pg_is_in_recovery()"))?;
        Ok(row.get(0))
    }

    /// Promotes a standby: `select pg_promote(wait => true, wait_seconds => 30)`.
    pub async fn promote(&self) -> Result<()> {
        let client = self.connect().await?;
        let row = client
            .query_one("select pg_promote(wait => true, wait_seconds => 30)", &[])
            .await
            .map_err(HarnessError::pg(format!("promoting {}", self.name)))?;
        if row.get::<_, bool>(0) {
            Ok(())
        } else {
            Err(HarnessError::Timeout {
                what: format!("promotion of {}", self.name),
                after: Duration::from_secs(30),
                last: "pg_promote returned false".into(),
            })
        }
    }

    /// Sets `synchronous_standby_names` (`ALTER SYSTEM` + reload), e.g. `FIRST 1 (primary1)`
    /// on a promoted standby once the old primary follows it, or `''` to stop waiting.
    pub async fn set_synchronous_standby_names(&self, value: &str) -> Result<()> {
        let client = self.connect().await?;
        // ALTER SYSTEM takes no bind parameters; quote the literal by doubling quotes.
        let literal = value.replace('\'', "''");
        // Two statements: ALTER SYSTEM cannot run inside the implicit transaction of a batch.
        let context = format!("setting synchronous_standby_names on {}", self.name);
        client
            .batch_execute(&format!(
                "alter system set synchronous_standby_names = '{literal}'"
            ))
            .await
            .map_err(HarnessError::pg(context.clone()))?;
        client
            .batch_execute("select pg_reload_conf()")
            .await
            .map_err(HarnessError::pg(context))
    }

    /// Turns this node (stopped, crashed or running: it is stopped first) into a standby of
    /// `primary` after a failover: `pg_rewind` from `primary` (which recovers a crashed target
    /// first), then `standby.signal`, `primary_conninfo` with `application_name`, and a physical
    /// slot of that name on `primary` (created if missing). Starts it and returns; whether it is
    /// *synchronous* is up to `primary`'s `synchronous_standby_names`.
    pub async fn rewind_and_follow(&self, primary: &Pg, application_name: &str) -> Result<()> {
        if self.is_running() {
            self.stop_server().await?;
        }
        self.remove_stale_lock_files();
        let source = primary.connect().await?;
        source
            .execute(
                "select pg_create_physical_replication_slot($1, true) \
                 where not exists (select 1 from pg_replication_slots where slot_name = $1)",
                &[&application_name],
            )
            .await
            .map_err(HarnessError::pg(format!(
                "creating slot {application_name} on {}",
                primary.name
            )))?;
        // PostgreSQL 15's pg_rewind reads the source's timeline from its control file, which a
        // promotion updates only at the next checkpoint; without one it finds "no rewind
        // required" and the node then cannot follow the new timeline.
        source
            .batch_execute("checkpoint")
            .await
            .map_err(HarnessError::pg(format!("checkpoint on {}", primary.name)))?;
        run(self
            .tools
            .command("pg_rewind", &self.base_dir)
            .arg(format!("--target-pgdata={}", self.data_dir.display()))
            .arg(format!(
                "--source-server=host={} port={} user=postgres dbname=postgres",
                primary.ip(),
                primary.port
            ))
            .arg("--no-sync"))
        .await?;
        // pg_rewind copied the source's config files, node conf and ALTER SYSTEM settings
        // included: write ours again and drop the source's overrides.
        self.write_node_conf(&follower_conf(
            self.port,
            primary.ip(),
            primary.port,
            application_name,
        ))?;
        write_as_is(
            &self.data_dir.join("postgresql.auto.conf"),
            "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n",
        )?;
        write_as_is(&self.data_dir.join("standby.signal"), "")?;
        self.start_server().await
    }

    /// The postmaster pid from `postmaster.pid`, if the file exists.
    fn postmaster_pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// After a crash the postmaster may linger as a zombie until init reaps it, and PostgreSQL
    /// refuses to start while the pid in `postmaster.pid` or in the socket lock file answers
    /// `kill(pid, 0)`. Lock files naming a dead or zombie process are removed.
    fn remove_stale_lock_files(&self) {
        let socket_lock = self.base_dir.join(format!(".s.PGSQL.{}.lock", self.port));
        for lock in [self.data_dir.join("postmaster.pid"), socket_lock] {
            let pid = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
            if pid.is_some_and(|p| !process_alive(p)) {
                let _ = std::fs::remove_file(&lock);
            }
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        // A crashed postmaster may still be a zombie: pg_ctl would wait for it in vain.
        if !self.is_running() {
            return;
        }
        let mut cmd = self
            .tools
            .std_command("pg_ctl", &self.base_dir, self.netns());
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-m", "immediate", "-w", "-t", "30", "stop"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let _ = cmd.status();
        if let Some(pid) = self.postmaster_pid().filter(|p| process_alive(*p)) {
            let _ = crash(pid);
        }
    }
}

// === PgPair ===

/// A PostgreSQL 15 primary with one synchronous standby (`remote_apply`): a commit on the primary
/// returns only once the standby has applied it. Drop stops both (immediate) and deletes the data.
#[derive(Debug)]
pub struct PgPair {
    // Declared before `dir`: both servers stop before the directory is removed.
    primary: Pg,
    standby: Pg,
    dir: TempDir,
}

impl PgPair {
    /// Creates and starts the pair on loopback, and waits until the standby is `sync`.
    pub async fn start() -> Result<Self> {
        Self::start_on(None).await
    }

    /// Creates and starts the pair with each node in its own network namespace (`[primary,
    /// standby]`, made by the caller and reachable from here), and waits until the standby is
    /// `sync`.
    pub async fn start_in(hosts: [PgHost; 2]) -> Result<Self> {
        Self::start_on(Some(hosts)).await
    }

    async fn start_on(hosts: Option<[PgHost; 2]>) -> Result<Self> {
        let tools = PgTools::find()?;
        let dir = pg_temp_dir(&tools)?;
        let base = dir.path();
        let [primary_host, standby_host] = match hosts {
            Some([p, s]) => [Some(p), Some(s)],
            None => [None, None],
        };

        let mut primary = Pg::init(&tools, base, "primary", primary_host).await?;
        primary
            .start_new(|port| {
                format!("port = {port}\nsynchronous_standby_names = 'FIRST 1 ({STANDBY_NAME})'\n")
            })
            .await?;
        primary
            .connect()
            .await?
            .execute(
                "select pg_create_physical_replication_slot($1)",
                &[&STANDBY_NAME],
            )
            .await
            .map_err(HarnessError::pg("creating the standby's replication slot"))?;

        let standby_dir = base.join("standby");
        let mut basebackup = tools.command("pg_basebackup", base);
        basebackup
            .env("PGOPTIONS", "-c synchronous_commit=local")
            .arg("-h")
            .arg(primary.ip().to_string())
            .args(["-U", "postgres", "-X", "stream", "-c", "fast"])
            .arg("-p")
            .arg(primary.port.to_string())
            .args(["-S", STANDBY_NAME, "--no-sync", "-D"])
            .arg(&standby_dir);
        run(&mut basebackup).await?;
        write_as_is(&standby_dir.join("standby.signal"), "")?;

        let mut standby = Pg {
            name: "standby".into(),
            data_dir: standby_dir,
            base_dir: base.into(),
            port: 0,
            tools: tools.clone(),
            own_dir: None,
            host: standby_host,
        };
        let (primary_ip, primary_port) = (primary.ip(), primary.port);
        standby
            .start_new(|port| follower_conf(port, primary_ip, primary_port, STANDBY_NAME))
            .await?;

        let pair = Self {
            primary,
            standby,
            dir,
        };
        pair.wait_sync(READY_TIMEOUT).await?;
        Ok(pair)
    }

    /// The node that started as primary.
    pub fn primary(&self) -> &Pg {
        &self.primary
    }

    /// The node that started as standby.
    pub fn standby(&self) -> &Pg {
        &self.standby
    }

    /// tokio-postgres connection string of the primary.
    pub fn primary_conninfo(&self) -> String {
        self.primary.conninfo()
    }

    /// tokio-postgres connection string of the standby.
    pub fn standby_conninfo(&self) -> String {
        self.standby.conninfo()
    }

    /// The temp dir holding both data directories, sockets and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the primary cleanly.
    pub async fn stop_primary(&self) -> Result<()> {
        self.primary.stop_server().await
    }

    /// Starts the primary again (after a stop or a kill).
    pub async fn start_primary(&self) -> Result<()> {
        self.primary.start_server().await
    }

    /// Crashes the primary (SIGKILL to the postmaster and its backends).
    pub async fn kill_primary(&self) -> Result<()> {
        self.primary.kill_server().await
    }

    /// Stops the standby cleanly; commits on the primary then wait (`SyncRep`).
    pub async fn stop_standby(&self) -> Result<()> {
        self.standby.stop_server().await
    }

    /// Starts the standby again; it reconnects and waiting commits complete.
    pub async fn start_standby(&self) -> Result<()> {
        self.standby.start_server().await
    }

    /// Crashes the standby (SIGKILL to the postmaster and its backends).
    pub async fn kill_standby(&self) -> Result<()> {
        self.standby.kill_server().await
    }

    /// Promotes the standby (`pg_promote(wait => true, wait_seconds => 30)`). It has no standby
    /// of its own (`synchronous_standby_names = ''`), so it accepts writes at once.
    pub async fn promote_standby(&self) -> Result<()> {
        self.standby.promote().await
    }

    /// The standby's `sync_state` as the primary sees it in `pg_stat_replication`
    /// (`None` while it is not connected).
    pub async fn sync_state(&self) -> Result<Option<String>> {
        let client = self.primary.connect().await?;
        let row = client
            .query_opt(
                "select sync_state from pg_stat_replication where application_name = $1",
                &[&STANDBY_NAME],
            )
            .await
            .map_err(HarnessError::pg("reading pg_stat_replication"))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Waits until the standby is connected and `sync`.
    pub async fn wait_sync(&self, timeout: Duration) -> Result<()> {
        eventually("the standby to be sync", timeout, || async {
            match self.sync_state().await {
                Ok(Some(state)) if state == "sync" => Ok(()),
                Ok(state) => Err(format!("sync_state = {state:?}")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Bytes of WAL the standby has not replayed yet, from `pg_stat_replication` on the primary
    /// (`pg_current_wal_lsn() - replay_lsn`); `None` while the standby is not connected.
    pub async fn replay_lag_bytes(&self) -> Result<Option<u64>> {
        let client = self.primary.connect().await?;
        let row = client
            .query_opt(
                "select pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint \
                 from pg_stat_replication where application_name = $1",
                &[&STANDBY_NAME],
            )
            .await
            .map_err(HarnessError::pg("reading replay lag"))?;
        Ok(row
            .and_then(|r| r.get::<_, Option<i64>>(0))
            .map(|lag| u64::try_from(lag).unwrap_or(0)))
    }
}

// === helpers ===

/// A temp dir the servers' user owns.
fn pg_temp_dir(tools: &PgTools) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("testkit-pg-")
        .tempdir()
        .map_err(HarnessError::io("creating the PostgreSQL temp dir"))?;
    tools.chown(dir.path())?;
    Ok(dir)
}

/// Settings appended to every node's `postgresql.conf`; the last line includes the node conf.
/// In a namespace of its own a node listens on every address there (`*`: the same line on both
/// nodes, so `pg_rewind` copying the peer's files changes nothing).
fn shared_settings(base: &Path, in_netns: bool) -> String {
    format!(
        "
# --- testkit ---
listen_addresses = '{listen}'
unix_socket_directories = '{base}'
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_log_hints = on
wal_keep_size = '128MB'
hot_standby = on
synchronous_commit = remote_apply
wal_retrieve_retry_interval = '200ms'
fsync = off
shared_buffers = '32MB'
max_connections = 50
log_line_prefix = '%m [%p] %q%a '
include_if_exists = '{NODE_CONF}'
",
        base = base.display(),
        listen = if in_netns { "*" } else { "127.0.0.1" },
    )
}

/// Node conf of a standby streaming from `primary_ip:primary_port` as `name`, through the slot
/// `name`. It has no synchronous standby of its own, so it takes writes at once when promoted.
fn follower_conf(port: u16, primary_ip: Ipv4Addr, primary_port: u16, name: &str) -> String {
    format!(
        "port = {port}
primary_conninfo = 'host={primary_ip} port={primary_port} user=postgres application_name={name}'
primary_slot_name = '{name}'
synchronous_standby_names = ''
"
    )
}

/// Writes a file inside a data dir; files created by root are readable by the servers' user
/// (mode 0644), and the data dirs themselves stay theirs.
fn write_as_is(path: &Path, text: &str) -> Result<()> {
    let existed = path.exists();
    std::fs::write(path, text).map_err(HarnessError::io(format!("writing {}", path.display())))?;
    // New files would be root's; hand them to the data dir's owner so PostgreSQL can read (and
    // pg_rewind replace) them.
    if !existed && let Some(meta) = path.parent().and_then(|p| std::fs::metadata(p).ok()) {
        use std::os::unix::fs::MetadataExt;
        let _ = nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(meta.uid())),
            Some(nix::unistd::Gid::from_raw(meta.gid())),
        );
    }
    Ok(())
}

/// Whether `pid` is a live process that is not a zombie.
fn process_alive(pid: i32) -> bool {
    match proc_stat(pid) {
        Some((state, _)) => state != 'Z' && state != 'X',
        None => false,
    }
}

/// Freezes the postmaster `pid`, SIGKILLs its children (and their groups), then SIGKILLs it.
/// Returns the children's pids.
fn crash(pid: i32) -> nix::Result<Vec<i32>> {
    let postmaster = Pid::from_raw(pid);
    let _ = kill(postmaster, Signal::SIGSTOP);
    let children = children_of(pid);
    for child in &children {
        let child = Pid::from_raw(*child);
        let _ = killpg(child, Signal::SIGKILL);
        let _ = kill(child, Signal::SIGKILL);
    }
    kill(postmaster, Signal::SIGKILL)?;
    Ok(children)
}

/// The pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

/// `(state, ppid)` from `/proc/<pid>/stat`.
fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces; fields follow the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_conf_names_itself_for_synchronous_standby_names() {
        let conf = follower_conf(5433, Ipv4Addr::new(10, 9, 8, 2), 5432, STANDBY_NAME);
        assert!(conf.contains("application_name=standby1'"));
        assert!(conf.contains("host=10.9.8.2 port=5432 "));
        assert!(conf.contains("primary_slot_name = 'standby1'"));
        assert!(conf.contains("synchronous_standby_names = ''"));
    }

    #[test]
    fn own_process_is_alive_and_a_child_of_its_parent() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(process_alive(me));
        let (_, ppid) = proc_stat(me).unwrap();
        assert!(children_of(ppid).contains(&me));
    }
}
