//! A full disk under the log must not kill the controller: its processes log to stdout, and
//! a log line that cannot be written is dropped. (tracing-subscriber's default reports the
//! failed write with `eprintln!`, which panics when stderr is full too: the lab's
//! state-directory fault killed a controller with exit 101 that way.)

use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

#[tokio::test]
async fn the_watchdog_keeps_running_with_stdout_and_stderr_on_a_full_device() {
    let data = tempfile::tempdir().unwrap();
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_continuum-controller"))
        .args(["watchdog", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(full())
        .stderr(full())
        .spawn()
        .unwrap();
    // It logs "database watchdog listening" at once; give it time to log and, without the
    // fix, to panic on the failed write.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the watchdog exited with its logs on a full device: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().await.unwrap();
}
