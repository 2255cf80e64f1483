//! The database watchdog: a small process per region, independent of the controller, that
//! FENCES the local PostgreSQL server when the lease deadline passes without a renewal.
//!
//! Why: a controller that is paused (SIGSTOP, a GC or VM pause longer than the TTL) or killed
//! with its database left running cannot fence. Its database would stay a writable primary
//! while the peer is granted the lease and promotes: two writers, for every client that talks
//! to the database directly. Patroni covers this with `/dev/watchdog` (the node resets when
//! Patroni stops feeding it); we have no hardware watchdog on these hosts, so a second process
//! plays that part for the database alone.
//!
//! Protocol: after every granted acquire/renew the controller `POST /arm {"epoch", "untilMs"}`,
//! where `untilMs` is `sent + deadline` on the host's `CLOCK_BOOTTIME` in ms (shared by every
//! process on the host, counting through a suspend; the send instant, not the arrival, so a
//! pause of the controller between the grant and the arm cannot stretch it). When the clock
//! passes `untilMs` with no later arm, the watchdog runs the same fence as the controller
//! (`adapters::postgres`: marker + `standby.signal` + `pg_ctl stop -m immediate`) and logs
//! it. An arm never moves the deadline backwards for the same epoch, and a lower epoch is
//! refused. `POST /disarm {"epoch"}` clears the deadline after the controller RELEASED its
//! lease (a switchover source, demoted first: its database is a standby). `GET /state` shows
//! the armed deadline; `/healthz` answers while it runs.
//!
//! What it does not cover (SAFETY.md): the controller AND the watchdog paused together (the
//! same host frozen: then the database is frozen too, unless it runs elsewhere); a watchdog
//! that is down when the controller arms (the arm fails, the step reports it, and the
//! controller itself still fences at the deadline).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::adapters::postgres::{stop_immediate, write_fence_files};

/// The host's boot-time clock in ms (`CLOCK_BOOTTIME`).
pub fn host_ms() -> i64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() * 1000 + t.tv_nsec() / 1_000_000)
        .unwrap_or(0)
}

/// What the watchdog fences.
#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    /// Directory of `pg_ctl`.
    pub bindir: PathBuf,
    /// The server's data directory.
    pub data_dir: PathBuf,
    /// OS user the server runs as (through `runuser`), when different from this process's.
    pub run_as: Option<String>,
}

/// The armed state (also the `GET /state` body).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Armed {
    /// Highest epoch armed.
    pub epoch: u64,
    /// Host-clock deadline, when armed.
    pub until_ms: Option<i64>,
    /// How many times the watchdog fenced.
    pub fired: u64,
    /// The host clock when this was read.
    #[serde(default)]
    pub now_ms: i64,
}

/// `POST /arm` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArmBody {
    /// Epoch of the grant.
    pub epoch: u64,
    /// `sent + deadline` on the host clock.
    pub until_ms: i64,
}

#[derive(Debug)]
struct Inner {
    armed: Mutex<Armed>,
    wake: tokio::sync::Notify,
}

type Shared = Arc<Inner>;

fn lock(s: &Inner) -> std::sync::MutexGuard<'_, Armed> {
    s.armed
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Applies an arm: a lower epoch is refused; the same epoch never moves the deadline back.
pub fn apply_arm(a: &mut Armed, b: &ArmBody) -> Result<(), String> {
    if b.epoch < a.epoch {
        return Err(format!(
            "stale epoch {}: {} already armed",
            b.epoch, a.epoch
        ));
    }
    let until = if b.epoch == a.epoch {
        a.until_ms.map_or(b.until_ms, |u| u.max(b.until_ms))
    } else {
        b.until_ms
    };
    a.epoch = b.epoch;
    a.until_ms = Some(until);
    Ok(())
}

/// Applies a disarm (the controller released its lease after demoting: its database is a
/// standby and the deadline no longer guards anything). A lower epoch than the armed one is
/// refused, so a late disarm can never cancel a newer grant's deadline.
pub fn apply_disarm(a: &mut Armed, epoch: u64) -> Result<(), String> {
    if epoch < a.epoch {
        return Err(format!("stale epoch {epoch}: {} already armed", a.epoch));
    }
    a.epoch = epoch;
    a.until_ms = None;
    Ok(())
}

/// `POST /disarm` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DisarmBody {
    /// Epoch of the released grant.
    pub epoch: u64,
}

async fn disarm(State(s): State<Shared>, Json(b): Json<DisarmBody>) -> Response {
    let r = apply_disarm(&mut lock(&s), b.epoch);
    match r {
        Ok(()) => {
            s.wake.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::CONFLICT, e).into_response(),
    }
}

async fn arm(State(s): State<Shared>, Json(b): Json<ArmBody>) -> Response {
    let r = apply_arm(&mut lock(&s), &b);
    match r {
        Ok(()) => {
            s.wake.notify_one();
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::CONFLICT, e).into_response(),
    }
}

async fn state(State(s): State<Shared>) -> Json<Armed> {
    let mut a = lock(&s).clone();
    a.now_ms = host_ms();
    Json(a)
}

/// Serves the watchdog on `listen` until the process ends; fences when the deadline passes.
pub async fn serve(listen: SocketAddr, cfg: WatchdogConfig) -> std::io::Result<()> {
    let shared: Shared = Arc::new(Inner {
        armed: Mutex::new(Armed::default()),
        wake: tokio::sync::Notify::new(),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/state", get(state))
        .route("/arm", post(arm))
        .route("/disarm", post(disarm))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(addr = %listener.local_addr()?, data_dir = %cfg.data_dir.display(), "database watchdog listening");
    let server = axum::serve(listener, app);
    tokio::select! {
        r = server => r,
        () = fire_loop(shared, cfg) => Ok(()),
    }
}

async fn fire_loop(s: Shared, cfg: WatchdogConfig) {
    loop {
        let (epoch, until) = {
            let a = lock(&s);
            (a.epoch, a.until_ms)
        };
        let Some(until) = until else {
            s.wake.notified().await;
            continue;
        };
        let left = until - host_ms();
        if left > 0 {
            let wait = Duration::from_millis(u64::try_from(left).unwrap_or(0));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = s.wake.notified() => {}
            }
            continue;
        }
        // Re-check under the lock: an arm may have just moved it.
        {
            let mut a = lock(&s);
            if a.until_ms != Some(until) || a.epoch != epoch {
                continue;
            }
            a.until_ms = None;
        }
        let started = host_ms();
        let r = match write_fence_files(&cfg.data_dir, epoch) {
            Ok(()) => stop_immediate(&cfg.bindir, &cfg.data_dir, cfg.run_as.as_deref())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(format!("writing the fence marker: {e}")),
        };
        let took = host_ms() - started;
        match r {
            Ok(()) => {
                lock(&s).fired += 1;
                tracing::warn!(
                    epoch,
                    late_ms = started - until,
                    fence_ms = took,
                    "watchdog fired: the lease deadline passed unrenewed; database fenced"
                );
            }
            Err(e) => {
                tracing::error!(epoch, error = %e, "watchdog could not fence; retrying");
                // Try again shortly: the deadline has passed, the fence is still owed.
                lock(&s).until_ms = Some(until);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A client of the watchdog, for the database adapter.
#[derive(Debug, Clone)]
pub struct WatchdogClient {
    url: String,
    http: reqwest::Client,
}

impl WatchdogClient {
    /// A client of the watchdog at `url` (`http://host:port`).
    pub fn new(url: &str) -> WatchdogClient {
        WatchdogClient {
            url: url.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .unwrap_or_default(),
        }
    }

    /// Arms the watchdog.
    pub async fn arm(&self, epoch: u64, until_ms: i64) -> Result<(), String> {
        self.post("arm", &ArmBody { epoch, until_ms }).await
    }

    /// Disarms the watchdog after a release.
    pub async fn disarm(&self, epoch: u64) -> Result<(), String> {
        self.post("disarm", &DisarmBody { epoch }).await
    }

    async fn post(&self, path: &str, body: &impl Serialize) -> Result<(), String> {
        let r = self
            .http
            .post(format!("{}/{path}", self.url))
            .json(body)
            .send()
            .await
            .map_err(|e| format!("watchdog {}: {e}", self.url))?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "watchdog {} {path}: {} {}",
                self.url,
                r.status(),
                r.text().await.unwrap_or_default()
            ))
        }
    }

    /// Reads the watchdog's state.
    pub async fn state(&self) -> Result<Armed, String> {
        self.http
            .get(format!("{}/state", self.url))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_never_move_back_and_refuse_lower_epochs() {
        let mut a = Armed::default();
        apply_arm(
            &mut a,
            &ArmBody {
                epoch: 2,
                until_ms: 100,
            },
        )
        .unwrap();
        apply_arm(
            &mut a,
            &ArmBody {
                epoch: 2,
                until_ms: 50,
            },
        )
        .unwrap();
        assert_eq!(
            a.until_ms,
            Some(100),
            "same epoch: never earlier... nor later than asked"
        );
        assert!(
            apply_arm(
                &mut a,
                &ArmBody {
                    epoch: 1,
                    until_ms: 500
                }
            )
            .is_err()
        );
        assert_eq!(a.until_ms, Some(100));
        apply_arm(
            &mut a,
            &ArmBody {
                epoch: 3,
                until_ms: 40,
            },
        )
        .unwrap();
        assert_eq!((a.epoch, a.until_ms), (3, Some(40)));
    }

    #[tokio::test]
    async fn host_clock_is_boot_time_and_advances() {
        let a = host_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(host_ms() >= a + 5 && a > 0);
    }
}
