//! The Continuum's status subresource: the [`StateStore`] port (`status.operation`,
//! `status.completedRequests`) and the upstream status fields, both written with server-side
//! apply under the field manager [`FIELD_MANAGER`].
//!
//! One applier owns the whole status, so every apply carries the summary AND the persisted
//! operation (the last of each is cached): a field this manager applied before and omits now is
//! removed by the API server, which is how a finished operation disappears. The store's
//! [`StateStore::load`] always reads the object back (a restarted controller resumes from what
//! the API server holds, never from memory).
//!
//! [`summarize`] is pure: decision conditions map to status conditions by their variant names
//! ([`crate::crd::condition_type`]) plus upstream's `LeaseHeld`, `Ready`, `StandbyAvailable` and
//! `LastSwitchoverHealthy`; a condition keeps its `lastTransitionTime` while its status stays.

use std::sync::Mutex;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::FIELD_MANAGER;
use crate::crd::{
    ConditionStatus, Continuum, ContinuumStatus, LastSwitchover, Phase, StatusCondition,
    condition_type, conditions,
};
use crate::decide::{self, ConditionKind, DbRole, Mono, Observed, OpKind, Plan};
use crate::ports::{Persisted, StateStore, StoreError};

fn store_err(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(std::io::Error::other(format!("{what}: {e}")))
}

#[derive(Debug, Default)]
struct Cached {
    persisted: Persisted,
    summary: Option<ContinuumStatus>,
}

/// The status store of one Continuum object.
#[derive(Debug)]
pub struct StatusStore {
    api: Api<Continuum>,
    name: String,
    cache: Mutex<Cached>,
}

impl StatusStore {
    /// The store of `namespace/name`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> StatusStore {
        StatusStore {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            cache: Mutex::new(Cached::default()),
        }
    }

    fn cached(&self) -> std::sync::MutexGuard<'_, Cached> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The apply body: the summary (operation and completed requests taken from `persisted`).
    pub fn apply_body(summary: Option<&ContinuumStatus>, persisted: &Persisted) -> Value {
        let mut st = summary.cloned().unwrap_or_default();
        st.operation = persisted.operation.clone();
        st.completed_requests = persisted.completed.clone();
        st.switchover_in_progress = Some(st.operation.as_ref().is_some_and(|o| {
            matches!(
                o.kind,
                OpKind::Switchover | OpKind::Failback | OpKind::Failover
            )
        }));
        st.switchover_step = st.operation.as_ref().map(|o| o.step.clone());
        // A finished operation is OMITTED: the API server removes a field this manager applied
        // before and omits now. (An explicit null, which testkit's in-memory API needed, is
        // STORED by a real kube-apiserver as `operation: null`, the field being nullable.)
        let status = serde_json::to_value(&st).unwrap_or_else(|_| json!({}));
        json!({
            "apiVersion": "dr.openova.io/v1",
            "kind": "Continuum",
            "status": status,
        })
    }

    async fn apply(&self, body: &Value) -> Result<Continuum, StoreError> {
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(body),
            )
            .await
            .map_err(|e| store_err(&format!("applying status of {}", self.name), e))
    }

    /// Writes the upstream status fields (with the cached operation).
    pub async fn write_summary(&self, summary: ContinuumStatus) -> Result<(), StoreError> {
        let body = {
            let mut c = self.cached();
            c.summary = Some(summary);
            Self::apply_body(c.summary.as_ref(), &c.persisted)
        };
        self.apply(&body).await.map(|_| ())
    }

    /// The last summary written by this process.
    pub fn last_summary(&self) -> Option<ContinuumStatus> {
        self.cached().summary.clone()
    }
}

impl StateStore for StatusStore {
    async fn load(&self) -> Result<Persisted, StoreError> {
        let obj = self
            .api
            .get_status(&self.name)
            .await
            .map_err(|e| store_err(&format!("reading status of {}", self.name), e))?;
        let st = obj.status.unwrap_or_default();
        let p = Persisted {
            operation: st.operation.clone(),
            completed: st.completed_requests.clone(),
        };
        let mut c = self.cached();
        c.persisted = p.clone();
        if c.summary.is_none() {
            c.summary = Some(st);
        }
        Ok(p)
    }

    async fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let body = {
            let mut c = self.cached();
            c.persisted = state.clone();
            Self::apply_body(c.summary.as_ref(), &c.persisted)
        };
        let stored = self.apply(&body).await?;
        let st = stored.status.unwrap_or_default();
        if st.operation != state.operation || st.completed_requests != state.completed {
            return Err(store_err(
                "status apply",
                "the stored status does not hold the applied operation",
            ));
        }
        Ok(())
    }
}

/// What the last executed plan left behind, for [`summarize`].
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// Steps done.
    pub done: Vec<&'static str>,
    /// Named stuck state or failure (`DemotionStuck`, `CnpgDemotionTokenMissing`, …) and its
    /// message.
    pub stopped: Option<(String, String)>,
    /// The operation that finished in this run (kind, id, target, epoch), if any.
    pub finished: Option<decide::Operation>,
    /// How long that operation took, start to finish (ms, wall clock): `lastSwitchover.rtoObserved`.
    pub finished_ms: Option<i64>,
    /// The LUA records this run published (a `flip-dns` step completed).
    pub lua: Option<crate::crd::LuaRecordSet>,
}

fn cond(
    prev: &[StatusCondition],
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: String,
    now: &str,
    generation: Option<i64>,
) -> StatusCondition {
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.to_owned());
    StatusCondition {
        type_: type_.to_owned(),
        status,
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_transition_time: Some(since),
        observed_generation: generation,
    }
}

fn tf(b: bool) -> ConditionStatus {
    if b {
        ConditionStatus::True
    } else {
        ConditionStatus::False
    }
}

/// The upstream status fields from one observe → decide → execute round (pure).
///
/// `prev` is the stored status; `wall_now` RFC 3339; `generation` the object's.
pub fn summarize(
    o: &Observed,
    plan: &Plan,
    run: &RunReport,
    now: Mono,
    prev: &ContinuumStatus,
    wall_now: &str,
    generation: Option<i64>,
) -> ContinuumStatus {
    let me = o.region.as_str();
    let authority = decide::authority(o, now);
    let lease = o.lease.as_ref();
    let holder = lease
        .filter(|l| l.remaining_ms(now) > 0)
        .map(|l| l.state.holder.clone())
        .filter(|h| !h.is_empty());
    // Only a region whose database IS primary under its authority names itself; the peer's
    // holding the lease names the peer; a holder still promoting names nobody new.
    let current_primary = if authority.is_some() && o.local.db == DbRole::Primary {
        Some(me.to_owned())
    } else {
        holder
            .clone()
            .filter(|h| h != me)
            .or_else(|| prev.current_primary.clone())
    };
    let epoch = authority
        .map(|r| r.epoch)
        .or_else(|| lease.map(|l| l.state.epoch))
        .and_then(|e| i64::try_from(e).ok());
    let has = |k: ConditionKind| plan.has_condition(k);
    let op_kind = o.operation.as_ref().map(|op| op.kind);
    let phase = if has(ConditionKind::SelfFenced) || op_kind == Some(OpKind::SelfFence) {
        Phase::Fenced
    } else if matches!(op_kind, Some(OpKind::Switchover | OpKind::Failback)) {
        Phase::SwitchingOver
    } else if op_kind == Some(OpKind::Rebuild) || o.replication.needs_rebuild {
        Phase::Rebuilding
    } else if run.stopped.is_some()
        || (o.local.db == DbRole::Primary && (o.local.read_only || o.local.drained))
        || plan.conditions.iter().any(|c| {
            !matches!(
                c.kind,
                ConditionKind::LeaseHeldByPeer | ConditionKind::HoldDown
            )
        })
    {
        Phase::Degraded
    } else if current_primary
        .as_deref()
        .is_some_and(|p| p != o.spec.primary)
    {
        Phase::FailedOver
    } else if current_primary.is_some() {
        Phase::Healthy
    } else {
        Phase::Pending
    };
    let prev_c = &prev.conditions;
    let mut cs = Vec::new();
    let held = authority.is_some();
    cs.push(cond(
        prev_c,
        conditions::LEASE_HELD,
        tf(held),
        if held {
            "Held"
        } else if holder.is_some() {
            "HeldByPeer"
        } else {
            "NotHeld"
        },
        match (&holder, lease) {
            (Some(h), Some(l)) => format!("lease held by {h} at epoch {}", l.state.epoch),
            _ => "lease free or not read yet".to_owned(),
        },
        wall_now,
        generation,
    ));
    let ready = matches!(phase, Phase::Healthy | Phase::FailedOver);
    cs.push(cond(
        prev_c,
        conditions::READY,
        tf(ready),
        &format!("{phase:?}"),
        format!("phase {phase:?}"),
        wall_now,
        generation,
    ));
    let standby_ok = if o.local.db == DbRole::Primary {
        o.replication.streaming
    } else {
        o.local.db == DbRole::Standby && !o.replication.needs_rebuild
    };
    cs.push(cond(
        prev_c,
        conditions::STANDBY_AVAILABLE,
        tf(standby_ok),
        if standby_ok {
            "Following"
        } else {
            "NotFollowing"
        },
        if o.local.db == DbRole::Primary {
            format!("peer streaming: {}", o.replication.streaming)
        } else {
            format!("local database {:?}", o.local.db)
        },
        wall_now,
        generation,
    ));
    let mut last = prev.last_switchover.clone();
    if let Some(op) = &run.finished {
        last = Some(LastSwitchover {
            at: Some(wall_now.to_owned()),
            from: o
                .spec
                .regions
                .iter()
                .find(|r| Some(r.as_str()) != op.target.as_deref())
                .cloned(),
            to: op.target.clone(),
            reason: Some(
                match op.kind {
                    OpKind::Switchover => "operator-requested",
                    OpKind::Failback => "failback",
                    OpKind::Failover => "failover",
                    OpKind::SelfFence => "self-fence",
                    OpKind::Rebuild => "rebuild",
                }
                .to_owned(),
            ),
            result: Some("Success".to_owned()),
            kind: Some(
                serde_json::to_value(op.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
            id: Some(op.id.clone()),
            epoch: i64::try_from(op.epoch).ok(),
            rto_observed: run.finished_ms.map(|ms| format!("{ms}ms")),
            rpo_observed: (op.kind != OpKind::Failover).then(|| "0s".to_owned()),
            initiated_by: None,
        });
    }
    if let Some(ls) = &last {
        let failed = run.stopped.is_some() && o.operation.is_some();
        cs.push(cond(
            prev_c,
            conditions::LAST_SWITCHOVER_HEALTHY,
            tf(!failed),
            if failed { "StepFailed" } else { "Succeeded" },
            match (&run.stopped, failed) {
                (Some((n, m)), true) => format!("{n}: {m}"),
                _ => format!(
                    "{} → {} at epoch {}",
                    ls.from.as_deref().unwrap_or("?"),
                    ls.to.as_deref().unwrap_or("?"),
                    ls.epoch.unwrap_or(0)
                ),
            },
            wall_now,
            generation,
        ));
    }
    for c in &plan.conditions {
        let t = condition_type(c.kind);
        if cs.iter().any(|x| x.type_ == t) {
            continue;
        }
        cs.push(cond(
            prev_c,
            t,
            ConditionStatus::True,
            t,
            c.message.clone(),
            wall_now,
            generation,
        ));
    }
    if let Some((name, message)) = &run.stopped
        && !cs.iter().any(|x| &x.type_ == name)
    {
        cs.push(cond(
            prev_c,
            name,
            ConditionStatus::True,
            name,
            message.clone(),
            wall_now,
            generation,
        ));
    }
    let lag_known = o.replication.lag_seconds != u64::MAX;
    ContinuumStatus {
        phase: Some(phase),
        current_primary,
        primary_region: Some(o.spec.primary.clone()),
        epoch,
        lease_holder: holder,
        lease_expires_at: lease
            .and_then(|l| l.state.expires_at)
            .map(|t| t.to_rfc3339()),
        replication_lag_seconds: lag_known
            .then(|| i64::try_from(o.replication.lag_seconds).ok())
            .flatten(),
        replication_lag_bytes: (o.replication.lag_bytes != u64::MAX)
            .then(|| i64::try_from(o.replication.lag_bytes).ok())
            .flatten(),
        max_replication_lag: lag_known.then(|| format!("{}s", o.replication.lag_seconds)),
        last_switchover: last,
        conditions: cs,
        observed_generation: generation,
        standby_available: Some(standby_ok),
        last_lua_record: run.lua.clone().or_else(|| prev.last_lua_record.clone()),
        last_lua_record_at: if run.lua.is_some() {
            Some(wall_now.to_owned())
        } else {
            prev.last_lua_record_at.clone()
        },
        ..ContinuumStatus::default()
    }
}

/// The named stop of an executor outcome: the stuck condition, a CNPG stuck state named in the
/// error, or the step's failure.
pub fn stop_name(s: &crate::exec::Stopped) -> (String, String) {
    use crate::exec::Stopped;
    match s {
        Stopped::Stuck {
            step,
            condition,
            after,
        } => (
            (*condition).to_owned(),
            format!("{step} did not finish within {after:?}"),
        ),
        Stopped::Failed { step, error } => {
            let text = error.to_string();
            let named = [
                "CnpgDemotionTokenMissing",
                "CnpgWalReceiverActive",
                "CnpgPromotionNotSettled",
                "CnpgPeerAccessMissing",
            ]
            .into_iter()
            .find(|n| text.contains(n));
            let name = named.map_or_else(|| format!("StepFailed{}", camel(step)), |n| n.to_owned());
            (name, format!("{step}: {text}"))
        }
    }
}

fn camel(step: &str) -> String {
    step.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{Condition, Operation};

    #[test]
    fn the_apply_body_carries_the_operation_and_omits_it_once_finished() {
        let p = Persisted {
            operation: Some(Operation {
                id: "sw-1".into(),
                kind: OpKind::Switchover,
                step: "demote".into(),
                epoch: 3,
                started_at: contract::Millis(5),
                lsn: None,
                target: Some("b".into()),
            }),
            completed: vec![],
        };
        let b = StatusStore::apply_body(None, &p);
        assert_eq!(b["status"]["operation"]["step"], "demote");
        assert_eq!(b["status"]["switchoverInProgress"], true);
        assert_eq!(b["status"]["switchoverStep"], "demote");
        let done = Persisted {
            operation: None,
            completed: vec!["sw-1".into()],
        };
        let b = StatusStore::apply_body(None, &done);
        assert!(b["status"].get("operation").is_none(), "{b}");
        assert_eq!(b["status"]["completedRequests"], json!(["sw-1"]));
    }

    #[test]
    fn conditions_keep_their_transition_time_while_unchanged() {
        let prev = vec![cond(
            &[],
            "Ready",
            ConditionStatus::True,
            "Healthy",
            "x".into(),
            "t0",
            None,
        )];
        let same = cond(
            &prev,
            "Ready",
            ConditionStatus::True,
            "Healthy",
            "y".into(),
            "t1",
            None,
        );
        assert_eq!(same.last_transition_time.as_deref(), Some("t0"));
        let flipped = cond(
            &prev,
            "Ready",
            ConditionStatus::False,
            "Degraded",
            "y".into(),
            "t1",
            None,
        );
        assert_eq!(flipped.last_transition_time.as_deref(), Some("t1"));
    }

    #[test]
    fn stop_names_prefer_the_cnpg_stuck_state() {
        use crate::exec::{ExecError, Stopped};
        let s = Stopped::Failed {
            step: "demote",
            error: ExecError::Plane(crate::ports::PlaneError::Failed(
                "CnpgDemotionTokenMissing: no token".into(),
            )),
        };
        assert_eq!(stop_name(&s).0, "CnpgDemotionTokenMissing");
        let s = Stopped::Failed {
            step: "flip-dns",
            error: ExecError::Plane(crate::ports::PlaneError::Failed("x".into())),
        };
        assert_eq!(stop_name(&s).0, "StepFailedFlipDns");
        let _ = Condition {
            kind: ConditionKind::HoldDown,
            message: String::new(),
        };
    }
}
