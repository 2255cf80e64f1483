//! How `witness-server` treats its state file at start: a missing state file is never
//! silently replaced by an empty one (that would reissue epochs already granted), `--init`
//! creates one but never overwrites one, and `--init-if-new-volume` (for orchestrators that
//! pass the same flags on every start) creates one only in a new, empty directory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Dir {
    tmp: tempfile::TempDir,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("tokens.yaml"), "tok-a: [region-a]\n").unwrap();
        Dir { tmp }
    }

    /// A state directory of its own, as a mounted volume would be.
    fn volume(&self) -> PathBuf {
        let v = self.tmp.path().join("volume");
        std::fs::create_dir_all(&v).unwrap();
        v
    }

    fn cmd(&self, state: &Path, port: u16, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_witness-server"));
        c.args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--state")
            .arg(state)
            .arg("--tokens")
            .arg(self.tmp.path().join("tokens.yaml"))
            .args(extra)
            .env_remove("WITNESS_INIT")
            .env_remove("WITNESS_INIT_IF_NEW_VOLUME")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }
}

/// Runs witness-server expecting it to refuse to start; returns its stderr.
async fn refused(mut cmd: Command) -> String {
    let mut child = cmd.spawn().expect("spawn witness-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "witness-server started instead of refusing; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out: Output = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "exit status {}", out.status);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

struct Running {
    child: Child,
    base: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs witness-server expecting it to serve; waits for /healthz.
async fn serving(mut cmd: Command, port: u16) -> Running {
    let child = cmd.spawn().expect("spawn witness-server");
    let mut r = Running {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if r.child.try_wait().unwrap().is_some() {
            let mut err = String::new();
            if let Some(mut e) = r.child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            panic!("witness-server exited instead of serving: {err}");
        }
        if reqwest::get(format!("{}/healthz", r.base)).await.is_ok() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "witness-server not healthy in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn acquire(base: &str, slot: &str, holder: &str) -> serde_json::Value {
    let http = reqwest::Client::new();
    let url = format!("{base}/lease/{slot}");
    let g = match http.get(&url).bearer_auth("tok-a").send().await.unwrap() {
        r if r.status() == 404 => 0,
        r => r.json::<serde_json::Value>().await.unwrap()["generation"]
            .as_u64()
            .unwrap(),
    };
    let r = http
        .put(&url)
        .bearer_auth("tok-a")
        .header("If-Match", g.to_string())
        .json(&serde_json::json!({"holder": holder, "ttlSeconds": 60, "op": "acquire"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn release(base: &str, slot: &str, holder: &str, generation: u64) {
    let r = reqwest::Client::new()
        .delete(format!("{base}/lease/{slot}"))
        .bearer_auth("tok-a")
        .header("If-Match", generation.to_string())
        .header("X-Holder", holder)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_missing_state_file_is_refused_without_init_and_nothing_is_created() {
    let d = Dir::new();
    let state = d.tmp.path().join("state.json");
    let err = refused(d.cmd(&state, testkit::free_port().unwrap(), &[])).await;
    assert!(err.contains("--init"), "the error names the flag: {err}");
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert!(!state.exists(), "nothing was created");
}

#[tokio::test]
async fn init_creates_the_state_once_and_a_restart_with_init_cannot_wipe_it() {
    let d = Dir::new();
    let state = d.tmp.path().join("state.json");
    let port = testkit::free_port().unwrap();
    let w = serving(d.cmd(&state, port, &["--init"]), port).await;
    let s = acquire(&w.base, "app", "region-a").await;
    assert_eq!(s["epoch"], 1);
    release(&w.base, "app", "region-a", 1).await;
    drop(w);
    let before = std::fs::read(&state).unwrap();

    // A restart script that still passes --init is refused and leaves the state alone.
    let err = refused(d.cmd(&state, port, &["--init"])).await;
    assert!(err.contains("--init") && err.contains("exists"), "{err}");
    assert_eq!(std::fs::read(&state).unwrap(), before);

    // A plain restart continues the epochs.
    let w = serving(d.cmd(&state, port, &[]), port).await;
    assert_eq!(acquire(&w.base, "app", "region-a").await["epoch"], 2);
    drop(w);

    // Losing the state file is noticed, even with --init: the witness remembers that it was
    // initialised here, and starting over would reissue epochs 1 and 2.
    std::fs::remove_file(&state).unwrap();
    for flags in [&[][..], &["--init"][..]] {
        let err = refused(d.cmd(&state, port, flags)).await;
        assert!(err.contains("lost"), "{flags:?}: {err}");
        assert!(!state.exists());
    }
}

#[tokio::test]
async fn init_if_new_volume_creates_only_in_an_empty_directory() {
    let d = Dir::new();
    let vol = d.volume();
    std::fs::create_dir(vol.join("lost+found")).unwrap();
    let state = vol.join("state.json");
    let port = testkit::free_port().unwrap();
    let flag = ["--init-if-new-volume"];
    // First start on a new (empty) volume: created.
    let w = serving(d.cmd(&state, port, &flag), port).await;
    assert_eq!(acquire(&w.base, "app", "region-a").await["epoch"], 1);
    drop(w);
    // The same flags on every later start: the existing state is opened, not replaced.
    let w = serving(d.cmd(&state, port, &flag), port).await;
    let s = acquire(&w.base, "app", "region-a").await;
    assert_eq!(
        (s["epoch"].as_u64(), s["generation"].as_u64()),
        (Some(1), Some(2))
    );
    drop(w);
    // The state file gone from a volume that held it: refused.
    std::fs::remove_file(&state).unwrap();
    let err = refused(d.cmd(&state, port, &flag)).await;
    assert!(err.contains("lost"), "{err}");
    assert!(!state.exists());
    // A directory with other files in it is not a new volume.
    let other = d.tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "x").unwrap();
    let err = refused(d.cmd(&other.join("state.json"), port, &flag)).await;
    assert!(
        err.contains("not empty") || err.contains("new volume"),
        "{err}"
    );
    // A directory that does not exist (the volume is not mounted): refused.
    let err = refused(d.cmd(&d.tmp.path().join("absent/state.json"), port, &flag)).await;
    assert!(err.contains("absent"), "{err}");
    // --init and --init-if-new-volume together make no sense.
    let err = refused(d.cmd(
        &vol.join("x.json"),
        port,
        &["--init", "--init-if-new-volume"],
    ))
    .await;
    assert!(err.contains("--init"), "{err}");
}
