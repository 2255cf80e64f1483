//! One emitter per cluster: a `coordination.k8s.io/v1` Lease, client-go style.
//!
//! The emitter runs as a DaemonSet, so every node has a pod; only the pod holding the Lease
//! emits. [`decide`] is the pure rule (create / renew / take over an expired lease / follow);
//! [`run`] is the thin loop that reads the Lease every `retry_period` and writes it with the
//! read `resourceVersion` as a precondition, so two pods can never both win one round (the
//! loser gets a 409).
//!
//! Leadership is published on a `watch` channel. It turns false at once when a write conflicts
//! (someone else wrote the Lease), when another holder is seen, or when no renewal succeeded
//! within `renew_deadline`; `lease_duration` > `renew_deadline` gives the old leader time to
//! stop before anyone may take over. There is no fencing token: a leader that is stopped for
//! longer than the lease may emit one batch late; flow-server's upserts are idempotent per key,
//! so that costs a stale status until the next change, never a duplicate node.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;

/// Lease settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This pod's identity (`POD_NAME`).
    pub identity: String,
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// Time between two rounds.
    pub retry_period: Duration,
}

/// The Lease fields the decision reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// `spec.holderIdentity`.
    pub holder: Option<String>,
    /// `spec.renewTime` as unix ms.
    pub renew_ms: Option<i64>,
    /// `spec.leaseDurationSeconds`.
    pub duration_secs: Option<i32>,
}

/// What to do this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder's lease expired: take it.
    TakeOver,
    /// Someone else holds a valid lease.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// The rule. An expired lease is one whose `renewTime + leaseDurationSeconds` is not after
/// `now_ms`; a missing `renewTime` counts as expired.
pub fn decide(observed: Option<&Observed>, me: &str, now_ms: i64) -> Decision {
    let Some(o) = observed else {
        return Decision::Create;
    };
    let holder = o.holder.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    if holder == me {
        return Decision::Renew;
    }
    let expires = o
        .renew_ms
        .map(|r| r + i64::from(o.duration_secs.unwrap_or(0).max(0)) * 1000);
    match expires {
        Some(e) if e > now_ms => Decision::Follow {
            holder: holder.to_owned(),
        },
        _ => Decision::TakeOver,
    }
}

fn observed(lease: &Lease) -> Observed {
    let spec = lease.spec.as_ref();
    Observed {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renew_ms: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.as_millisecond()),
        duration_secs: spec.and_then(|s| s.lease_duration_seconds),
    }
}

/// Runs the election forever, publishing leadership on `tx`.
pub async fn run(api: Api<Lease>, cfg: LeaseConfig, tx: watch::Sender<bool>) {
    let duration_secs = i32::try_from(cfg.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX);
    let mut last_renew: Option<tokio::time::Instant> = None;
    loop {
        let now = Timestamp::now();
        let leading = *tx.borrow();
        let result = round(&api, &cfg, duration_secs, now).await;
        match result {
            Ok(true) => {
                last_renew = Some(tokio::time::Instant::now());
                if !leading {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.name, "lease acquired");
                }
                tx.send_replace(true);
            }
            Ok(false) => {
                if leading {
                    tracing::warn!(identity = %cfg.identity, lease = %cfg.name, "lease lost");
                }
                last_renew = None;
                tx.send_replace(false);
            }
            Err(e) => {
                let conflict = matches!(&e, kube::Error::Api(s) if s.code == 409);
                let overdue = last_renew.is_none_or(|t| t.elapsed() >= cfg.renew_deadline);
                if leading && (conflict || overdue) {
                    tracing::warn!(identity = %cfg.identity, error = %e, "lease lost: could not renew");
                    last_renew = None;
                    tx.send_replace(false);
                } else {
                    tracing::debug!(error = %e, "lease round failed");
                }
            }
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// One round: Ok(true) when we hold the lease after it, Ok(false) when someone else does.
async fn round(
    api: &Api<Lease>,
    cfg: &LeaseConfig,
    duration_secs: i32,
    now: Timestamp,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(&cfg.name).await?;
    let decision = decide(
        current.as_ref().map(observed).as_ref(),
        &cfg.identity,
        now.as_millisecond(),
    );
    match decision {
        Decision::Follow { .. } => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            api.create(&PostParams::default(), &lease).await?;
            Ok(true)
        }
        Decision::Renew | Decision::TakeOver => {
            let Some(mut lease) = current else {
                return Ok(false);
            };
            let mut spec = lease.spec.take().unwrap_or_default();
            if decision == Decision::TakeOver {
                spec.holder_identity = Some(cfg.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(duration_secs);
            lease.spec = Some(spec);
            // The read resourceVersion stays in metadata: a concurrent writer makes this a 409.
            api.replace(&cfg.name, &PostParams::default(), &lease)
                .await?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(by: &str, renew_ms: i64, secs: i32) -> Observed {
        Observed {
            holder: Some(by.into()),
            renew_ms: Some(renew_ms),
            duration_secs: Some(secs),
        }
    }

    #[test]
    fn no_lease_is_created_and_our_own_is_renewed() {
        assert_eq!(decide(None, "a", 0), Decision::Create);
        assert_eq!(
            decide(Some(&held("a", 0, 15)), "a", 1_000_000),
            Decision::Renew
        );
    }

    #[test]
    fn a_valid_foreign_lease_is_followed_until_it_expires() {
        let o = held("b", 10_000, 15);
        assert_eq!(
            decide(Some(&o), "a", 24_999),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(decide(Some(&o), "a", 25_000), Decision::TakeOver);
    }

    #[test]
    fn an_empty_holder_or_missing_renew_time_is_free() {
        assert_eq!(
            decide(Some(&Observed::default()), "a", 0),
            Decision::TakeOver
        );
        let o = Observed {
            holder: Some("b".into()),
            renew_ms: None,
            duration_secs: Some(15),
        };
        assert_eq!(decide(Some(&o), "a", 0), Decision::TakeOver);
    }
}
