//! `flow-adapter-flux recover`: the stuck-HelmRelease repair (a CronJob), `spec/upstream-flow.md`
//! §7 with the fixes of §8.8.
//!
//! [`assess`] and [`plan`] are PURE (releases + `now` in, a [`Plan`] out); [`run`] is the thin
//! glue that lists, plans and patches.
//!
//! - **Branch A, suspend toggle**: `status.history[0].status` is `pending-install`,
//!   `pending-upgrade` or `pending-rollback`, Ready is not True, and it has been so (Ready's
//!   `lastTransitionTime`, else `history[0].lastDeployed`) for at least the threshold. Action:
//!   annotate `stuck-hr-recovery.openova.io/suspend-toggle: revision=<v>;phase=suspending;at=…`,
//!   set `spec.suspend=true`, wait `--toggle-pause`, set `spec.suspend=false` (always attempted
//!   once the first was), then `phase=done`. The annotation makes reruns idempotent (one toggle
//!   per Helm revision); a run that died mid-toggle leaves `phase=suspending`, and the next run
//!   finishes it (un-suspends) before anything else — resumes are never held back by the
//!   guardrail, they only undo our own suspend.
//! - **Branch B, deployed-but-unknown-Ready**: Ready=Unknown for at least the threshold while
//!   `status.history[0].status == deployed`, and no `stuck-hr-recovery.openova.io/auto-corrected-at`
//!   annotation. Action: annotate (audit + idempotency), then patch the status subresource:
//!   Ready=True, reason `ReconciliationSucceeded`, a message containing
//!   `auto-corrected from deployed-but-unknown-Ready`. If the status patch fails, the
//!   annotation is removed again, so a later run retries.
//! - **Guardrail, pre-counted**: when more than `--guardrail` (10) releases need action across
//!   both branches, nothing is acted on, an error naming the count is logged, and the run exits
//!   1 (upstream toggled ten releases before noticing the eleventh).
//! - `--dry-run` plans and logs, writes nothing. The summary line counts what happened.
//! - Every first write carries the listed `resourceVersion` as a precondition: a release that
//!   changed since the scan is left alone (counted as failed, retried next run).

use std::fmt;
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::flux::{self, ObjectRef, Release, format_time_ms};

/// Annotation of branch B (audit and idempotency).
pub const AUTO_CORRECTED_AT: &str = "stuck-hr-recovery.openova.io/auto-corrected-at";
/// Annotation of branch A.
pub const SUSPEND_TOGGLE: &str = "stuck-hr-recovery.openova.io/suspend-toggle";
/// The audit phrase in branch B's condition message.
pub const AUDIT_PHRASE: &str = "auto-corrected from deployed-but-unknown-Ready";
/// Default guardrail.
pub const DEFAULT_GUARDRAIL: usize = 10;

/// Settings of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoverConfig {
    /// Namespace to scan; None = all.
    pub namespace: Option<String>,
    /// How long a release must be stuck.
    pub threshold: Duration,
    /// Most releases acted on per run.
    pub guardrail: usize,
    /// Plan and log only.
    pub dry_run: bool,
    /// Pause between suspend and resume.
    pub toggle_pause: Duration,
}

/// Which repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Branch {
    /// Branch A: toggle `spec.suspend` for Helm revision `revision`.
    SuspendToggle {
        /// `history[0].version`.
        revision: i64,
    },
    /// Branch B: Ready=True through the status subresource.
    StatusPatch,
}

/// Why a release is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Skip {
    /// Ready=True, no history, or a state neither branch handles.
    NotStuck,
    /// Stuck for less than the threshold.
    TooRecent,
    /// Branch B: the annotation is already there.
    AlreadyCorrected,
    /// Branch A: already toggled for this Helm revision.
    AlreadyToggled,
    /// Branch A: suspended by someone else; not ours to toggle.
    SuspendedByOthers,
    /// No timestamp to measure how long it is stuck.
    NoTimestamp,
}

/// The verdict on one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Repair it.
    Act {
        /// How.
        branch: Branch,
        /// Seconds it has been stuck.
        stuck_secs: i64,
    },
    /// Finish a toggle a previous run left half done.
    Resume,
    /// Leave it.
    Skip(Skip),
}

fn annotation_field<'a>(value: &'a str, field: &str) -> Option<&'a str> {
    value
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| k.trim() == field)
        .map(|(_, v)| v.trim())
}

/// The verdict on one release (PURE).
pub fn assess(r: &Release, now_ms: i64, threshold: Duration) -> Assessment {
    let threshold_ms = i64::try_from(threshold.as_millis()).unwrap_or(i64::MAX);
    let toggle = r.annotations.get(SUSPEND_TOGGLE);
    if toggle.is_some_and(|v| annotation_field(v, "phase") == Some("suspending")) {
        return Assessment::Resume;
    }
    let ready = r.condition("Ready");
    if ready.is_some_and(|c| c.is_true()) {
        return Assessment::Skip(Skip::NotStuck);
    }
    let Some(head) = &r.history_head else {
        return Assessment::Skip(Skip::NotStuck);
    };
    let age = |since: Option<i64>| -> Result<i64, Skip> {
        let since = since.ok_or(Skip::NoTimestamp)?;
        let age = now_ms - since;
        if age >= threshold_ms {
            Ok(age / 1000)
        } else {
            Err(Skip::TooRecent)
        }
    };
    let unknown = ready.is_some_and(|c| !c.is_true() && !c.is_false());
    if unknown && head.status == "deployed" {
        if r.annotations.contains_key(AUTO_CORRECTED_AT) {
            return Assessment::Skip(Skip::AlreadyCorrected);
        }
        return match age(ready.and_then(|c| c.last_transition_ms)) {
            Ok(stuck_secs) => Assessment::Act {
                branch: Branch::StatusPatch,
                stuck_secs,
            },
            Err(s) => Assessment::Skip(s),
        };
    }
    if head.status.starts_with("pending-") {
        if r.suspend {
            return Assessment::Skip(Skip::SuspendedByOthers);
        }
        let done_for = toggle
            .and_then(|v| annotation_field(v, "revision"))
            .and_then(|v| v.parse::<i64>().ok());
        if done_for == Some(head.version) {
            return Assessment::Skip(Skip::AlreadyToggled);
        }
        let since = ready
            .and_then(|c| c.last_transition_ms)
            .or(head.last_deployed_ms);
        return match age(since) {
            Ok(stuck_secs) => Assessment::Act {
                branch: Branch::SuspendToggle {
                    revision: head.version,
                },
                stuck_secs,
            },
            Err(s) => Assessment::Skip(s),
        };
    }
    Assessment::Skip(Skip::NotStuck)
}

/// One planned repair.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// The release as listed.
    pub release: Release,
    /// How.
    pub branch: Branch,
    /// Seconds stuck.
    pub stuck_secs: i64,
}

/// What a run will do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Releases scanned.
    pub scanned: usize,
    /// Repairs, both branches (empty when the guardrail tripped).
    pub actions: Vec<Action>,
    /// Candidates found (also when the guardrail tripped).
    pub candidates: usize,
    /// Half-done toggles to finish.
    pub resumes: Vec<Release>,
    /// Releases left alone.
    pub skipped: usize,
    /// More candidates than the guardrail allows: nothing is acted on.
    pub guardrail_tripped: bool,
}

/// Plans a run (PURE). The guardrail is counted before anything is done.
pub fn plan(releases: &[Release], now_ms: i64, threshold: Duration, guardrail: usize) -> Plan {
    let mut actions = Vec::new();
    let mut resumes = Vec::new();
    let mut skipped = 0;
    for r in releases {
        match assess(r, now_ms, threshold) {
            Assessment::Act { branch, stuck_secs } => actions.push(Action {
                release: r.clone(),
                branch,
                stuck_secs,
            }),
            Assessment::Resume => resumes.push(r.clone()),
            Assessment::Skip(_) => skipped += 1,
        }
    }
    let candidates = actions.len();
    let guardrail_tripped = candidates > guardrail;
    if guardrail_tripped {
        actions.clear();
    }
    Plan {
        scanned: releases.len(),
        actions,
        candidates,
        resumes,
        skipped,
        guardrail_tripped,
    }
}

/// The counts of one run; `Display` is the summary line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Releases scanned.
    pub scanned: usize,
    /// Releases that needed a repair.
    pub candidates: usize,
    /// Repairs completed (suspend toggles + status patches).
    pub acted: usize,
    /// Branch A repairs completed.
    pub suspend_toggled: usize,
    /// Branch B repairs completed.
    pub status_patched: usize,
    /// Half-done toggles finished.
    pub resumed: usize,
    /// Releases left alone.
    pub skipped: usize,
    /// Repairs that failed.
    pub failed: usize,
    /// Branch B annotations removed after a failed status patch.
    pub rolled_back: usize,
    /// Nothing was written.
    pub dry_run: bool,
    /// The guardrail tripped.
    pub guardrail_tripped: bool,
    /// The threshold, in seconds.
    pub threshold_secs: u64,
}

impl Summary {
    /// 1 when the guardrail tripped or a repair failed (the CronJob's Job then fails, which is
    /// what alerts), else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.guardrail_tripped || self.failed > 0)
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "scan complete: scanned={} candidates={} acted={} suspend_toggled={} status_patched={} resumed={} skipped={} failed={} rolled_back={} dry_run={} guardrail={} threshold={}s",
            self.scanned,
            self.candidates,
            self.acted,
            self.suspend_toggled,
            self.status_patched,
            self.resumed,
            self.skipped,
            self.failed,
            self.rolled_back,
            self.dry_run,
            if self.guardrail_tripped {
                "tripped"
            } else {
                "ok"
            },
            self.threshold_secs,
        )
    }
}

/// A run that could not scan.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// Listing HelmReleases failed.
    #[error("listing HelmReleases failed: {0}")]
    List(#[source] kube::Error),
}

/// Lists, plans and repairs. Errors only when the list fails; failed repairs are counted.
pub async fn run(
    client: kube::Client,
    cfg: &RecoverConfig,
    now_ms: i64,
) -> Result<Summary, RecoverError> {
    let ar = flux::helmrelease_resource();
    let all: Api<DynamicObject> = match &cfg.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let list = all
        .list(&ListParams::default())
        .await
        .map_err(RecoverError::List)?;
    let mut releases = Vec::with_capacity(list.items.len());
    for o in &list.items {
        match Release::from_dynamic(o) {
            Ok(r) => releases.push(r),
            Err(e) => tracing::warn!(error = %e, "ignoring an unreadable HelmRelease"),
        }
    }
    let plan = plan(&releases, now_ms, cfg.threshold, cfg.guardrail);
    let mut s = Summary {
        scanned: plan.scanned,
        candidates: plan.candidates,
        skipped: plan.skipped,
        dry_run: cfg.dry_run,
        guardrail_tripped: plan.guardrail_tripped,
        threshold_secs: cfg.threshold.as_secs(),
        ..Summary::default()
    };
    let api = |id: &ObjectRef| -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), &id.namespace, &ar)
    };

    for r in &plan.resumes {
        if cfg.dry_run {
            tracing::info!(release = %r.id, "DRY-RUN would finish a half-done suspend toggle");
            continue;
        }
        match resume(&api(&r.id), r, now_ms).await {
            Ok(()) => {
                s.resumed += 1;
                tracing::info!(release = %r.id, "RESUMED a half-done suspend toggle");
            }
            Err(e) => {
                s.failed += 1;
                tracing::error!(release = %r.id, error = %e, "resuming a suspend toggle FAILED");
            }
        }
    }

    if plan.guardrail_tripped {
        tracing::error!(
            candidates = plan.candidates,
            guardrail = cfg.guardrail,
            "GUARDRAIL: {} stuck HelmReleases detected (more than {}) — refusing to mass-recover; nothing was changed. Investigate a cluster-wide outage.",
            plan.candidates,
            cfg.guardrail
        );
    }

    for a in &plan.actions {
        let id = &a.release.id;
        match &a.branch {
            Branch::StatusPatch => {
                tracing::info!(
                    "[A66] HR {id} Ready=Unknown for {}s, history[0]=deployed → attempting patch",
                    a.stuck_secs
                );
                if cfg.dry_run {
                    tracing::info!("DRY-RUN [A66] HR {id} would be patched to Ready=True");
                    continue;
                }
                match status_patch(&api(id), a, now_ms).await {
                    Ok(()) => {
                        s.acted += 1;
                        s.status_patched += 1;
                        tracing::info!("[A66] HR {id} patched to Ready=True");
                    }
                    Err(PatchFailure { error, rolled_back }) => {
                        s.failed += 1;
                        if rolled_back {
                            s.rolled_back += 1;
                        }
                        tracing::error!(rolled_back, "[A66] HR {id} patch FAILED: {error}");
                    }
                }
            }
            Branch::SuspendToggle { revision } => {
                tracing::info!(
                    revision,
                    "RECOVER HR {id}: stuck in {} for {}s → suspend toggle",
                    a.release
                        .history_head
                        .as_ref()
                        .map(|h| h.status.as_str())
                        .unwrap_or_default(),
                    a.stuck_secs
                );
                if cfg.dry_run {
                    tracing::info!("DRY-RUN HR {id} would be suspend-toggled");
                    continue;
                }
                match toggle(&api(id), a, *revision, now_ms, cfg.toggle_pause).await {
                    Ok(()) => {
                        s.acted += 1;
                        s.suspend_toggled += 1;
                        tracing::info!("RECOVERED HR {id} (suspend toggled)");
                    }
                    Err(e) => {
                        s.failed += 1;
                        tracing::error!("suspend toggle of HR {id} FAILED: {e}");
                    }
                }
            }
        }
    }
    tracing::info!("{s}");
    Ok(s)
}

/// A failed branch B repair and whether its annotation was removed again.
struct PatchFailure {
    error: kube::Error,
    rolled_back: bool,
}

fn merge(v: Value) -> Patch<Value> {
    Patch::Merge(v)
}

/// Branch B: annotate, patch the status, roll the annotation back when the patch fails.
async fn status_patch(
    api: &Api<DynamicObject>,
    a: &Action,
    now_ms: i64,
) -> Result<(), PatchFailure> {
    let r = &a.release;
    let name = &r.id.name;
    let pp = PatchParams::default();
    let now = format_time_ms(now_ms);
    let mut annotate = json!({"metadata": {"annotations": {AUTO_CORRECTED_AT: now}}});
    if let Some(rv) = &r.resource_version {
        annotate["metadata"]["resourceVersion"] = json!(rv);
    }
    api.patch(name, &pp, &merge(annotate))
        .await
        .map_err(|error| PatchFailure {
            error,
            rolled_back: false,
        })?;
    let message = format!(
        "{AUDIT_PHRASE}: Ready was Unknown for {}s while history[0] is deployed (flow-adapter-flux recover at {now})",
        a.stuck_secs
    );
    let ready = json!({
        "type": "Ready",
        "status": "True",
        "reason": "ReconciliationSucceeded",
        "message": message,
        "lastTransitionTime": now,
        "observedGeneration": r.generation.unwrap_or_default(),
    });
    let mut conditions: Vec<Value> = r
        .conditions
        .iter()
        .filter(|c| c.kind != "Ready")
        .map(|c| c.raw.clone())
        .collect();
    conditions.insert(0, ready);
    let patched = api
        .patch_status(
            name,
            &pp,
            &merge(json!({"status": {"conditions": conditions}})),
        )
        .await;
    match patched {
        Ok(_) => Ok(()),
        Err(error) => {
            let undo = json!({"metadata": {"annotations": {AUTO_CORRECTED_AT: null}}});
            let rolled_back = match api.patch(name, &pp, &merge(undo)).await {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(release = %r.id, error = %e, "removing the {AUTO_CORRECTED_AT} annotation FAILED; remove it by hand");
                    false
                }
            };
            Err(PatchFailure { error, rolled_back })
        }
    }
}

/// Branch A: annotate (phase=suspending), suspend, pause, resume (always attempted once the
/// suspend was sent), annotate (phase=done).
async fn toggle(
    api: &Api<DynamicObject>,
    a: &Action,
    revision: i64,
    now_ms: i64,
    pause: Duration,
) -> Result<(), kube::Error> {
    let r = &a.release;
    let name = &r.id.name;
    let pp = PatchParams::default();
    let at = format_time_ms(now_ms);
    let mut annotate = json!({"metadata": {"annotations": {
        SUSPEND_TOGGLE: format!("revision={revision};phase=suspending;at={at}")
    }}});
    if let Some(rv) = &r.resource_version {
        annotate["metadata"]["resourceVersion"] = json!(rv);
    }
    api.patch(name, &pp, &merge(annotate)).await?;
    let suspended = api
        .patch(name, &pp, &merge(json!({"spec": {"suspend": true}})))
        .await;
    if suspended.is_ok() && !pause.is_zero() {
        tokio::time::sleep(pause).await;
    }
    // The finally path: never leave a release suspended by us.
    api.patch(name, &pp, &merge(json!({"spec": {"suspend": false}})))
        .await?;
    suspended?;
    api.patch(
        name,
        &pp,
        &merge(json!({"metadata": {"annotations": {
            SUSPEND_TOGGLE: format!("revision={revision};phase=done;at={at}")
        }}})),
    )
    .await?;
    Ok(())
}

/// Finishes a toggle a previous run left at `phase=suspending`.
async fn resume(api: &Api<DynamicObject>, r: &Release, now_ms: i64) -> Result<(), kube::Error> {
    let pp = PatchParams::default();
    let revision = r
        .annotations
        .get(SUSPEND_TOGGLE)
        .and_then(|v| annotation_field(v, "revision"))
        .unwrap_or("0")
        .to_owned();
    api.patch(&r.id.name, &pp, &merge(json!({"spec": {"suspend": false}})))
        .await?;
    api.patch(
        &r.id.name,
        &pp,
        &merge(json!({"metadata": {"annotations": {
            SUSPEND_TOGGLE: format!("revision={revision};phase=done;at={}", format_time_ms(now_ms))
        }}})),
    )
    .await?;
    Ok(())
}
