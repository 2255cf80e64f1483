//! Concurrency: many clients race acquire/renew/release on one slot; every answer the
//! witness gave is recorded and a history checker verifies, across a SIGKILL + restart of
//! `witness-server` mid-run (and against the wasm Worker in workerd):
//! - one holder per epoch, epochs strictly increasing in generation order;
//! - a new epoch is granted only after the previous one expired or was released;
//! - no answer extends an old epoch after a newer one was granted;
//! - every generation is answered with one state only (nothing granted twice).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::TOKENS_JSON;
use contract::LeaseState;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use witness_worker::client::{ClientConfig, WitnessClient, WitnessError};

const CLIENTS: usize = 8;
const TTL: Duration = Duration::from_millis(400);
/// Rounds per client: a bounded count, not a duration, so a loaded machine still checks as
/// many answers (it just takes longer).
const ROUNDS: u64 = 40;

#[derive(Default)]
struct Log {
    states: Vec<LeaseState>,
    ops: u64,
    errors: u64,
}

async fn racer(base: String, holder: String, log: Arc<Mutex<Log>>) {
    let mut cfg = ClientConfig::new(base, "tok-any");
    cfg.timeout = Duration::from_secs(5);
    cfg.attempts = 2;
    cfg.backoff = Duration::from_millis(50);
    let c = WitnessClient::new(cfg, "race").expect("client");
    for n in 1..=ROUNDS {
        let record = |r: Result<Option<LeaseState>, WitnessError>| {
            let mut l = log.lock().expect("log");
            l.ops += 1;
            match r {
                Ok(Some(s)) => l.states.push(s),
                Ok(None) => {}
                Err(WitnessError::HeldByAnother(v)) | Err(WitnessError::LeaseLost(v)) => {
                    l.states.push(v.state)
                }
                Err(_) => l.errors += 1,
            }
        };
        let got = c.acquire(&holder, TTL).await;
        let mine = got.as_ref().ok().map(|v| v.state.clone());
        record(got.map(|v| Some(v.state)));
        if let Some(mut s) = mine {
            for _ in 0..(n % 4) {
                tokio::time::sleep(Duration::from_millis(60)).await;
                let r = c.renew(&holder, TTL, s.generation).await;
                if let Ok(v) = &r {
                    s = v.state.clone();
                }
                let failed = r.is_err();
                record(r.map(|v| Some(v.state)));
                if failed {
                    break;
                }
            }
            if n.is_multiple_of(3) {
                record(c.release(&holder).await.map(|v| v.map(|v| v.state)));
            }
        }
        tokio::time::sleep(Duration::from_millis(5 + (n * 7 % 40))).await;
    }
}

/// Checks the history; returns the number of states checked.
fn check(states: &[LeaseState]) -> usize {
    let mut by_gen: BTreeMap<u64, &LeaseState> = BTreeMap::new();
    for s in states.iter().filter(|s| s.generation > 0) {
        if let Some(prev) = by_gen.insert(s.generation, s) {
            assert_eq!(
                prev, s,
                "generation {} answered with two states",
                s.generation
            );
        }
    }
    #[derive(Default, Debug)]
    struct Epoch {
        holder: String,
        first_gen: u64,
        max_exp: Option<contract::Millis>,
        acquired: Option<contract::Millis>,
        released_gen: Option<u64>,
    }
    let mut epochs: BTreeMap<u64, Epoch> = BTreeMap::new();
    let mut last_epoch = 0;
    for (g, s) in &by_gen {
        assert!(
            s.epoch >= last_epoch,
            "epoch went back at generation {g}: {s:?}"
        );
        last_epoch = s.epoch;
        let e = epochs.entry(s.epoch).or_default();
        if s.holder.is_empty() {
            e.released_gen.get_or_insert(*g);
            continue;
        }
        if e.holder.is_empty() {
            e.holder = s.holder.clone();
            e.first_gen = *g;
            e.acquired = s.acquired_at;
        }
        assert_eq!(e.holder, s.holder, "two holders share epoch {}", s.epoch);
        assert!(
            e.released_gen.is_none(),
            "epoch {} extended after its release",
            s.epoch
        );
        e.max_exp = e.max_exp.max(s.expires_at);
    }
    let list: Vec<_> = epochs
        .iter()
        .filter(|(_, e)| !e.holder.is_empty())
        .collect();
    for w in list.windows(2) {
        let ((e1, a), (e2, b)) = (w[0], w[1]);
        let released_first = a.released_gen.is_some_and(|r| r < b.first_gen);
        let expired_first = match (a.max_exp, b.acquired) {
            (Some(x), Some(y)) => y >= x,
            _ => false,
        };
        assert!(
            released_first || expired_first,
            "epoch {e2} ({}) granted at {:?} while epoch {e1} ({}) held until {:?}",
            b.holder,
            b.acquired,
            a.holder,
            a.max_exp
        );
    }
    by_gen.len()
}

async fn race(base: &str, log: Arc<Mutex<Log>>) -> Arc<Mutex<Log>> {
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(racer(base.to_owned(), format!("region-{i}"), log.clone())))
        .collect();
    for t in tasks {
        t.await.expect("racer");
    }
    log
}

/// Starts witness-server; `init` on the first start only (a restart must find the state).
fn spawn_server(bin: &str, port: u16, dir: &std::path::Path, init: bool) -> Child {
    Command::new(bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(init.then_some("--init"))
        .arg("--state")
        .arg(dir.join("state.json"))
        .arg("--tokens")
        .arg(dir.join("tokens.yaml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn witness-server")
}

async fn wait_healthy(base: &str) {
    testkit::eventually(
        "witness-server /healthz",
        Duration::from_secs(20),
        || async {
            reqwest::get(format!("{base}/healthz"))
                .await
                .map(|r| r.status())
        },
    )
    .await
    .expect("witness-server healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_never_see_two_holders_across_a_witness_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let yaml: serde_json::Value = serde_json::from_str(TOKENS_JSON).unwrap();
    std::fs::write(
        dir.path().join("tokens.yaml"),
        serde_yaml::to_string(&yaml).unwrap(),
    )
    .unwrap();
    let port = testkit::free_port().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let bin = env!("CARGO_BIN_EXE_witness-server");
    let mut server = spawn_server(bin, port, dir.path(), true);
    wait_healthy(&base).await;

    let log = Arc::new(Mutex::new(Log::default()));
    let run = tokio::spawn({
        let (base, log) = (base.clone(), log.clone());
        async move { race(&base, log).await }
    });
    let ops = || log.lock().unwrap().ops;
    testkit::eventually("racers under way", Duration::from_secs(60), || async {
        if ops() >= 150 {
            Ok(())
        } else {
            Err(format!("{} ops", ops()))
        }
    })
    .await
    .unwrap();
    server.kill().unwrap(); // SIGKILL mid-run: only fsynced state survives
    server.wait().unwrap();
    let mut server = spawn_server(bin, port, dir.path(), false);
    wait_healthy(&base).await;
    let log = run.await.unwrap();
    server.kill().unwrap();
    server.wait().unwrap();

    let log = log.lock().unwrap();
    let checked = check(&log.states);
    println!(
        "witness-server history: {} operations, {} answers checked, {} unavailable, 0 violations (restart mid-run)",
        log.ops, checked, log.errors
    );
    assert!(checked > 20, "too few answers to mean anything: {checked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_clients_never_see_two_holders_on_the_wasm_worker() {
    let w = common::start_workerd().await;
    let base = w.url().trim_end_matches('/').to_owned();
    let log = race(&base, Arc::new(Mutex::new(Log::default()))).await;
    let log = log.lock().unwrap();
    let checked = check(&log.states);
    println!(
        "workerd history: {} operations, {} answers checked, {} unavailable, 0 violations",
        log.ops, checked, log.errors
    );
    assert!(checked > 20, "too few answers to mean anything: {checked}");
}

#[test]
fn the_checker_catches_a_double_grant() {
    let st = |holder: &str, g: u64, e: u64, acq: i64, exp: i64| LeaseState {
        holder: holder.into(),
        acquired_at: Some(contract::Millis(acq)),
        expires_at: Some(contract::Millis(exp)),
        generation: g,
        epoch: e,
        report: None,
    };
    let ok = [
        st("a", 1, 1, 0, 100),
        st("a", 2, 1, 0, 150),
        st("b", 3, 2, 150, 250),
    ];
    assert_eq!(check(&ok), 3);
    let bad = [st("a", 1, 1, 0, 100), st("b", 2, 2, 50, 150)];
    assert!(std::panic::catch_unwind(|| check(&bad)).is_err());
    let shared = [st("a", 1, 1, 0, 100), st("b", 2, 1, 0, 100)];
    assert!(std::panic::catch_unwind(|| check(&shared)).is_err());
}
