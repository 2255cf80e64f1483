//! Plumbing shared by the harnesses: finding programs, running helper commands, owning a
//! long-running server process that is killed on drop, and a loopback HTTP client.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::{HarnessError, Result};

/// Directories searched after `PATH` (Debian puts servers in sbin, which a non-root PATH lacks).
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Finds `name` on `PATH` or in the sbin directories, or fails loudly with `install`.
pub(crate) fn find_program(name: &str, install: &str) -> Result<PathBuf> {
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    let dirs: Vec<PathBuf> = path_dirs
        .into_iter()
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .collect();
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(|| HarnessError::MissingBinary {
            what: format!("program `{name}`"),
            looked_in: "PATH, /usr/local/sbin, /usr/sbin, /sbin".into(),
            install: install.into(),
        })
}

/// Fails loudly with `install` unless `path` exists.
pub(crate) fn require_file(path: &Path, install: &str) -> Result<()> {
    if path.exists() {
        Ok(())
    } else {
        Err(HarnessError::MissingBinary {
            what: format!("`{}`", path.display()),
            looked_in: path.display().to_string(),
            install: install.into(),
        })
    }
}

pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs a helper command to completion and fails with its output if it is unsuccessful.
pub(crate) async fn run(cmd: &mut tokio::process::Command) -> Result<String> {
    let line = describe(cmd.as_std());
    cmd.kill_on_drop(true);
    let out = cmd
        .output()
        .await
        .map_err(HarnessError::io(format!("running `{line}`")))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(HarnessError::Command {
            command: line,
            status: out.status.to_string(),
            output: text,
        })
    }
}

/// The command line of `cmd`, for error messages.
/// A command for `program`, run in network namespace `netns` when given (`ip netns exec`,
/// which execs, so the child's pid is the program's).
pub(crate) fn command_in(netns: Option<&str>, program: &Path) -> Command {
    match netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

pub(crate) fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of a log file (or a note that it is unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// `n` random bytes from the kernel, hex-encoded (API keys).
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(HarnessError::io("reading /dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// An HTTP client for loopback readiness probes (never via a proxy).
pub(crate) fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(HarnessError::http("building an HTTP client"))
}

/// A long-running server that is ours: stdout and stderr go to `log`, and drop kills it (or its
/// whole process group) and reaps it, so it never outlives the harness.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    what: String,
    child: Child,
    log: PathBuf,
    /// Whether the child leads its own process group (then the group is signalled).
    group: bool,
    /// Set once the child has been reaped; its pid must not be signalled after that.
    reaped: Option<ExitStatus>,
    /// Log lines meaning "lost a port race", turning exits and waits into
    /// [`HarnessError::PortTaken`].
    port_taken_markers: &'static [&'static str],
}

impl ServerProcess {
    /// Spawns `cmd` with output appended to `log`. With `group`, the child gets its own process
    /// group and every signal goes to the whole group.
    pub(crate) fn spawn(what: &str, mut cmd: Command, log: &Path, group: bool) -> Result<Self> {
        use std::os::unix::process::CommandExt;
        let line = describe(&cmd);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(HarnessError::io(format!("opening {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(HarnessError::io("duplicating a log handle"))?;
        cmd.stdout(out).stderr(err);
        if group {
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .map_err(HarnessError::io(format!("spawning `{line}`")))?;
        Ok(Self {
            what: what.into(),
            child,
            log: log.into(),
            group,
            reaped: None,
            port_taken_markers: &[],
        })
    }

    /// Declares log lines that mean the server lost a port race (e.g. "Address already in use");
    /// seeing one ends a wait with [`HarnessError::PortTaken`], even if the server stays up.
    pub(crate) fn with_port_taken_markers(mut self, markers: &'static [&'static str]) -> Self {
        self.port_taken_markers = markers;
        self
    }

    /// `Err(PortTaken)` if the log shows a lost port race.
    fn check_port_taken(&self) -> Result<()> {
        if self.port_taken_markers.is_empty() {
            return Ok(());
        }
        let log = log_tail(&self.log, 200);
        if self.port_taken_markers.iter().any(|m| log.contains(m)) {
            return Err(HarnessError::PortTaken {
                what: self.what.clone(),
                log_tail: log_tail(&self.log, 30),
            });
        }
        Ok(())
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err(Exited)` with the log tail if the process has already exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        match self.try_reap() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(self.exited(status)),
            Err(e) => Err(HarnessError::io(format!("waiting for {}", self.what))(e)),
        }
    }

    /// Reaps the child if it has exited; after an exit of a group leader, kills what is left of
    /// its group first.
    fn try_reap(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if let Some(status) = self.reaped {
            return Ok(Some(status));
        }
        let status = self.child.try_wait()?;
        if let Some(status) = status {
            self.reaped = Some(status);
            if self.group {
                // Whatever is left of the group dies with its leader. A pid stays reserved while
                // it is the id of a live process group, so this cannot hit a stranger.
                let pgid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        }
        Ok(status)
    }

    /// The error describing an exit with `status`.
    pub(crate) fn exited(&self, status: ExitStatus) -> HarnessError {
        if let Err(port_taken) = self.check_port_taken() {
            return port_taken;
        }
        HarnessError::Exited {
            what: self.what.clone(),
            status: status.to_string(),
            log_tail: log_tail(&self.log, 30),
        }
    }

    /// Polls `probe` until it succeeds, failing early (with the log tail) if the process exits.
    pub(crate) async fn wait_ready<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut probe: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<(), String>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = String::from("(no probe finished)");
        loop {
            self.check_alive()?;
            self.check_port_taken()?;
            match tokio::time::timeout_at(deadline, probe()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                self.check_alive()?;
                return Err(HarnessError::Timeout {
                    what: what.into(),
                    after: timeout,
                    last: format!("{last}; last log lines:\n{}", self.log_tail(20)),
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The end of this process's log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    fn signal(&self, sig: Signal) -> nix::Result<()> {
        if self.reaped.is_some() {
            return Err(nix::Error::ESRCH);
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        if self.group {
            killpg(pid, sig)
        } else {
            kill(pid, sig)
        }
    }

    /// Sends SIGTERM, waits up to `grace` for the exit, then SIGKILLs. Returns the exit status.
    pub(crate) async fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let _ = self.signal(Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_reap() {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill_now()
    }

    /// SIGKILLs the process (group) and reaps it.
    pub(crate) fn kill_now(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.reaped {
            return Ok(status);
        }
        let _ = self.signal(Signal::SIGKILL);
        let status = self
            .child
            .wait()
            .map_err(HarnessError::io(format!("reaping {}", self.what)))?;
        self.reaped = Some(status);
        if self.group {
            let pgid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        Ok(status)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.kill_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_names_its_install_command() {
        let err = find_program(
            "testkit-no-such-program",
            "scripts/setup.sh (or: apt-get x)",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("testkit-no-such-program"), "{msg}");
        assert!(msg.contains("scripts/setup.sh (or: apt-get x)"), "{msg}");
    }

    #[tokio::test]
    async fn a_port_race_in_the_log_ends_the_wait_early() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'bind: Address already in use'; exec sleep 30"]);
        let mut p = ServerProcess::spawn("sh", cmd, &dir.path().join("log"), false)
            .unwrap()
            .with_port_taken_markers(&["Address already in use"]);
        let started = tokio::time::Instant::now();
        let err = p
            .wait_ready("never", Duration::from_secs(20), || async {
                Err::<(), _>("not yet".to_owned())
            })
            .await
            .unwrap_err();
        assert!(matches!(err, HarnessError::PortTaken { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn drop_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & exec sleep 30"]);
        let p = ServerProcess::spawn("sh", cmd, &dir.path().join("log"), true).unwrap();
        let pgid = Pid::from_raw(i32::try_from(p.pid()).unwrap());
        assert!(killpg(pgid, None).is_ok());
        drop(p);
        // The leader is reaped by drop; the backgrounded sleep was SIGKILLed with the group and
        // at most lingers as a zombie until init reaps it.
        let alive: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
            .filter(|stat| {
                let rest = &stat[stat.rfind(')').unwrap() + 1..];
                let f: Vec<&str> = rest.split_whitespace().collect();
                f[2] == pgid.as_raw().to_string() && f[0] != "Z"
            })
            .collect();
        assert!(alive.is_empty(), "{alive:?}");
    }
}
