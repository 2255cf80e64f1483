//! The step trap: crash a controller at an exact switchover step boundary.
//!
//! A controller persists its operation (`operation.json`, written to a temporary file and
//! renamed over the old one) BEFORE it runs each step. Polling that file every millisecond
//! misses steps that take less than a millisecond, so the trap listens to the renames with
//! inotify instead: on each rename in a watched region's state directory it SIGSTOPs that
//! region's controller (frozen within microseconds of persisting the step), reads the step,
//! and either lets it go on (SIGCONT) or, at the step it waits for, SIGKILLs the victim, which
//! may be that controller or the other side's. A step whose file was replaced again before the
//! trap could freeze its writer is reported as missed, never as crashed.
//!
//! Why not a failpoint inside the controller: the controller that ships would carry a crash
//! switch; this way the drill crashes the very binary the image runs, from outside, as a
//! power cut would.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The file a controller persists its operation in.
const OPERATION: &str = "operation.json";

/// One watched region: its name, state directory and controller pid.
#[derive(Debug, Clone)]
pub struct Watched {
    /// Region name.
    pub region: String,
    /// Its state directory (where `operation.json` lives).
    pub dir: PathBuf,
    /// Its controller's pid.
    pub pid: u32,
}

/// What the trap waits for: region `at`'s controller persisting `step`, then `victim` (a
/// region name among the watched ones) is SIGKILLed. `None`: only trace the steps.
#[derive(Debug, Clone)]
pub struct Target {
    /// The region whose step boundary is crashed.
    pub at: String,
    /// The step.
    pub step: String,
    /// The region whose controller is killed there.
    pub victim: String,
}

/// What the trap saw when it stopped.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Every persisted step, in order: (region, step, when). Consecutive repeats of the same
    /// step by the same region are kept once.
    pub steps: Vec<(String, String, Instant)>,
    /// When the victim was killed (`None`: the target step never came, or was passed).
    pub killed: Option<Instant>,
}

/// A running trap (a thread of its own, so that neither the drill's runtime nor its writer is
/// ever blocked by it).
pub struct StepTrap {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<std::io::Result<Trace>>>,
}

impl StepTrap {
    /// Starts watching `regions` (their directories must exist) for `target`.
    pub fn start(regions: Vec<Watched>, target: Option<Target>) -> std::io::Result<StepTrap> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        let mut wds = Vec::new();
        for w in &regions {
            let wd = ino.add_watch(
                &w.dir,
                AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE,
            )?;
            wds.push(wd);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("step-trap".into())
            .spawn(move || run(ino, &wds, &regions, target.as_ref(), &flag))?;
        Ok(StepTrap {
            stop,
            handle: Some(handle),
        })
    }

    /// True once the trap has killed its victim (or failed).
    pub fn done(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the trap and returns what it saw.
    pub fn finish(mut self) -> std::io::Result<Trace> {
        self.stop.store(true, Ordering::SeqCst);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(std::io::Error::other("the step trap's thread panicked")),
            None => Ok(Trace::default()),
        }
    }
}

impl Drop for StepTrap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The step in `dir/operation.json` (`None`: no operation, or no file).
pub fn read_step(dir: &Path) -> Option<String> {
    let body = std::fs::read(dir.join(OPERATION)).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v.get("operation")?.get("step")?.as_str().map(str::to_owned)
}

fn signal(pid: u32, sig: Signal) -> std::io::Result<()> {
    let pid = i32::try_from(pid).map_err(std::io::Error::other)?;
    match kill(Pid::from_raw(pid), sig) {
        // The process is already gone (killed, or exited): nothing to freeze or resume.
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn run(
    ino: Inotify,
    wds: &[nix::sys::inotify::WatchDescriptor],
    regions: &[Watched],
    target: Option<&Target>,
    stop: &AtomicBool,
) -> std::io::Result<Trace> {
    let mut trace = Trace::default();
    let pid_of = |r: &str| regions.iter().find(|w| w.region == r).map(|w| w.pid);
    let victim = match target {
        Some(t) => Some(pid_of(&t.victim).ok_or_else(|| {
            std::io::Error::other(format!("the victim {} is not watched", t.victim))
        })?),
        None => None,
    };
    while !stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(10u8))? == 0 {
            continue;
        }
        let events = match ino.read_events() {
            Ok(e) => e,
            Err(nix::errno::Errno::EAGAIN) => continue,
            Err(e) => return Err(e.into()),
        };
        for ev in events {
            if ev.name.as_deref() != Some(std::ffi::OsStr::new(OPERATION)) {
                continue;
            }
            let Some(i) = wds.iter().position(|wd| *wd == ev.wd) else {
                continue;
            };
            let w = &regions[i];
            // Freeze the writer first, then look: the step read is the one it persisted
            // last, and it cannot move on while we decide.
            signal(w.pid, Signal::SIGSTOP)?;
            let step = read_step(&w.dir);
            let now = Instant::now();
            if let Some(s) = &step
                && trace
                    .steps
                    .iter()
                    .rev()
                    .find(|(r, _, _)| *r == w.region)
                    .is_none_or(|(_, last, _)| last != s)
            {
                trace.steps.push((w.region.clone(), s.clone(), now));
            }
            let hit = target.is_some_and(|t| t.at == w.region && step.as_deref() == Some(&t.step));
            if hit && let Some(v) = victim {
                signal(v, Signal::SIGKILL)?;
                trace.killed = Some(Instant::now());
            }
            signal(w.pid, Signal::SIGCONT)?;
            if trace.killed.is_some() {
                return Ok(trace);
            }
        }
    }
    Ok(trace)
}

/// Waits until `trap` is done or `limit` passes (polling every millisecond, off the runtime's
/// worker threads' critical path).
pub async fn wait(trap: &StepTrap, limit: Duration) -> bool {
    let t0 = Instant::now();
    while !trap.done() {
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    true
}
