//! In-region leader election among the controller's replicas with a `coordination.k8s.io/v1`
//! Lease (own thin code, client-go's algorithm).
//!
//! - Acquire: create the Lease, or take it over with a compare-and-swap replace
//!   (`metadata.resourceVersion`) when it is ours, has no holder, or has not changed for
//!   `leaseDurationSeconds` as observed on OUR monotonic clock (no wall-clock comparison
//!   between replicas).
//! - Renew every `renew_every` with the same CAS. Leadership is lost when another identity
//!   holds the Lease, or when no renew succeeded for `renew_deadline` (< lease duration, so a
//!   partitioned leader stops before another replica can take over).
//! - [`Leadership::lost`] resolves when leadership is lost OR the renew task died (panicked,
//!   aborted): the caller exits the process before doing anything else (no acting on
//!   authority it may no longer hold).
//!
//! Across regions this Lease decides nothing: only the witness does.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{is_conflict, is_not_found};

/// Leader election settings.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Lease name (e.g. `continuum-controller-<region>`).
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// `leaseDurationSeconds`.
    pub lease_duration: Duration,
    /// Give up leadership when no renew succeeded for this long.
    pub renew_deadline: Duration,
    /// Renew / retry period.
    pub renew_every: Duration,
}

impl LeaderConfig {
    /// client-go's defaults (15 s / 10 s / 2 s).
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaderConfig {
        LeaderConfig {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_every: Duration::from_secs(2),
        }
    }
}

/// Why leadership ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lost {
    /// Another identity holds the Lease.
    TakenBy(String),
    /// No renew succeeded within the renew deadline.
    RenewDeadline,
    /// The renew task stopped (panic, abort, runtime shutdown).
    TaskDied,
}

/// The holder's view of the Lease changing: the record and when WE saw it change.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(String, Option<String>, String)>,
    since: Option<Instant>,
}

/// Leadership held by this replica.
#[derive(Debug)]
pub struct Leadership {
    rx: watch::Receiver<Option<Lost>>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Resolves when leadership is lost or the renew task died.
    pub async fn lost(&mut self) -> Lost {
        loop {
            if let Some(l) = self.rx.borrow().clone() {
                return l;
            }
            if self.rx.changed().await.is_err() {
                return self.rx.borrow().clone().unwrap_or(Lost::TaskDied);
            }
        }
    }

    /// Stops renewing (the Lease then expires for the other replicas).
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_micro() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One attempt to take or keep the Lease; `Ok(true)` when this replica holds it now.
async fn try_hold(
    api: &Api<Lease>,
    cfg: &LeaderConfig,
    seen: &mut Observed,
) -> Result<bool, kube::Error> {
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(15);
    let lease = match api.get(&cfg.name).await {
        Ok(l) => l,
        Err(e) if is_not_found(&e) => {
            let l = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now_micro()),
                    renew_time: Some(now_micro()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match api.create(&PostParams::default(), &l).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        }
        Err(e) => return Err(e),
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let record = (
        holder.clone(),
        spec.renew_time.as_ref().map(|t| t.0.to_string()),
        lease.metadata.resource_version.clone().unwrap_or_default(),
    );
    if seen.record.as_ref() != Some(&record) {
        seen.record = Some(record);
        seen.since = Some(Instant::now());
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(cfg.lease_duration, Duration::from_secs);
    let expired = seen.since.is_some_and(|t| t.elapsed() >= duration);
    let mine = holder == cfg.identity;
    if !(mine || holder.is_empty() || expired) {
        return Ok(false);
    }
    let mut next = lease.clone();
    let mut s = spec;
    if !mine {
        s.acquire_time = Some(now_micro());
        s.lease_transitions = Some(s.lease_transitions.unwrap_or(0) + 1);
    }
    s.holder_identity = Some(cfg.identity.clone());
    s.lease_duration_seconds = Some(secs);
    s.renew_time = Some(now_micro());
    next.spec = Some(s);
    match api.replace(&cfg.name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this replica holds the Lease, then keeps renewing it in a task.
pub async fn acquire(client: kube::Client, cfg: LeaderConfig) -> Leadership {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut seen = Observed::default();
    loop {
        match try_hold(&api, &cfg, &mut seen).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "leader election: lease not reachable"),
        }
        tokio::time::sleep(cfg.renew_every).await;
    }
    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "leading");
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(async move {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(cfg.renew_every).await;
            match try_hold(&api, &cfg, &mut seen).await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => {
                    let by = seen
                        .record
                        .as_ref()
                        .map(|r| r.0.clone())
                        .unwrap_or_default();
                    if by != cfg.identity {
                        let _ = tx.send(Some(Lost::TakenBy(by)));
                        return;
                    }
                    // A write conflict on our own Lease: retry until the deadline.
                }
                Err(e) => tracing::warn!(error = %e, "leader election: renew failed"),
            }
            if last_ok.elapsed() >= cfg.renew_deadline {
                let _ = tx.send(Some(Lost::RenewDeadline));
                return;
            }
        }
    });
    Leadership { rx, task }
}
