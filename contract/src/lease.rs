//! Lease/witness wire types and the one pure lease transition.
//!
//! A slot (one per protected application) holds a [`LeaseRecord`]: the visible
//! [`LeaseState`] plus what the witness must remember to stay safe (recent request ids for
//! idempotent replays, the epoch floor). [`apply`] is the only code that changes a record; the
//! Durable Object runs it inside a storage transaction, `witness-server` under a lock before an
//! fsync, and the tests drive it directly.
//!
//! Rules (`shared/spec/peers.md` §2.3, fixing upstream's KV witness):
//! - `generation` is the compare-and-set version: it bumps on every write (acquire, renew,
//!   release), and a request that names an `If-Match` generation other than the current one
//!   conflicts.
//! - `epoch` is the fencing token: it increases on every new grant (a free, expired or released
//!   slot handed to a holder) and is never reused, not even after a release. Renewals and
//!   re-acquires by the unexpired holder keep it. Downstream writes carry it and refuse lower
//!   ones.
//! - Counters never saturate: a grant that cannot get an epoch strictly above the current one
//!   and the floor (the u64 space is used up) is refused with
//!   [`LeaseRequestError::EpochExhausted`], and a write that cannot bump `generation` with
//!   [`LeaseRequestError::GenerationExhausted`]; both change nothing. The floor itself only
//!   moves in bounded steps ([`raise_epoch_floor`], [`MAX_FLOOR_JUMP`]), so using the space up
//!   takes billions of authorised requests, not one.
//! - Expiry is evaluated from `now` on every request (`expiresAt <= now` is expired); nothing
//!   relies on a timer. A new holder is granted only after expiry or an explicit release.
//! - A lease is never shortened: a renew with a shorter TTL keeps the later expiry.
//! - A release by a non-holder changes nothing and succeeds (idempotent).
//! - A request with a request id that was already answered for that holder gets the same
//!   answer again and changes nothing, so client retries never burn an epoch. The one
//!   exception is a remembered grant that has been superseded since (released, or passed to
//!   another holder): it is answered as a `superseded` conflict, never as authority.

use crate::time::{Millis, rfc3339_opt};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// How many answered request ids a slot remembers per record (oldest forgotten first).
/// Clients retry within seconds; 64 covers many holders retrying at once.
pub const REPLAY_MEMORY: usize = 64;

/// The longest TTL a lease may be granted for (one hour). A longer one is a configuration
/// mistake that would stall failover for that long.
pub const MAX_TTL_MS: i64 = 3_600_000;

/// How far one [`raise_epoch_floor`] may move a slot's floor above its highest epoch
/// (`max(epoch, epochFloor)`): 2^32.
///
/// A legitimate floor is an epoch issued by an opt-in DNS-quorum takeover while the witness was
/// unreachable (`spec/peers.md` §2.3 rule 11), which is the last epoch the quorum saw plus one;
/// so it is above the witness's epoch by the number of takeovers during the outage — a handful,
/// and never near 2^32 (one takeover per millisecond would need 50 days). Without a bound a
/// single request naming `u64::MAX` would end the slot's epochs for good; with it, exhausting
/// the 2^64 space needs at least 2^32 authorised raise requests. 2^32 also keeps the bound
/// exactly representable wherever the floor travels as a JSON number.
pub const MAX_FLOOR_JUMP: u64 = 1 << 32;

/// The highest floor [`raise_epoch_floor`] accepts: it leaves [`MAX_FLOOR_JUMP`] epochs to
/// grant above it, so a raised floor never brings a slot within one jump of running out.
pub const MAX_EPOCH_FLOOR: u64 = u64::MAX - MAX_FLOOR_JUMP;

/// The visible state of a lease slot, as upstream's Worker returns it plus `epoch`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseState {
    /// Current holder; `""` when the slot is free or released.
    #[serde(default)]
    pub holder: String,
    /// When the current holder was granted the lease (kept across renewals); `""` when free.
    #[serde(default, with = "rfc3339_opt")]
    pub acquired_at: Option<Millis>,
    /// When the lease lapses unless renewed; `""` when free.
    #[serde(default, with = "rfc3339_opt")]
    pub expires_at: Option<Millis>,
    /// Compare-and-set version: bumps on every write.
    #[serde(default)]
    pub generation: u64,
    /// Fencing token: strictly increases with every new grant, never reused.
    #[serde(default)]
    pub epoch: u64,
    /// What the holder last reported with its acquire/renew (durability mode, flushed WAL
    /// position). Kept by the witness so that a standby learns the primary's durability from a
    /// third party after the primary is gone; cleared when the holder changes or releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<HolderReport>,
}

/// A holder's report, sent with acquire/renew.
///
/// Safety use (continuum-controller): a primary renews with `synchronous: false` BEFORE it
/// suspends synchronous replication, so a standby that finds `synchronous: true` in the lease
/// knows every commit acknowledged under that epoch was on it, and one that finds `false`
/// applies the RPO bound against `flushedLsn` instead of trusting its own stale view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HolderReport {
    /// Whether commits currently wait for a synchronous standby.
    pub synchronous: bool,
    /// The holder's flushed WAL position when it reported (PostgreSQL `pg_lsn` text, `X/Y`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flushed_lsn: Option<String>,
}

impl HolderReport {
    /// Checks the shape: `flushedLsn`, when present, is `X/Y` with 1..=8 hex digits each.
    pub fn validate(&self) -> Result<(), LeaseRequestError> {
        let ok = self.flushed_lsn.as_deref().is_none_or(|l| {
            l.split_once('/').is_some_and(|(a, b)| {
                [a, b]
                    .iter()
                    .all(|p| (1..=8).contains(&p.len()) && p.bytes().all(|c| c.is_ascii_hexdigit()))
            })
        });
        if ok {
            Ok(())
        } else {
            Err(LeaseRequestError::InvalidReport)
        }
    }
}

impl LeaseState {
    /// True when nobody holds an unexpired lease at `now`.
    pub fn is_free_at(&self, now: Millis) -> bool {
        self.holder.is_empty() || self.expires_at.is_none_or(|e| e <= now)
    }

    /// True when `holder` holds an unexpired lease at `now`.
    pub fn is_held_by(&self, holder: &str, now: Millis) -> bool {
        !holder.is_empty() && self.holder == holder && !self.is_free_at(now)
    }

    /// Milliseconds of validity left at `now` (0 when free or expired).
    pub fn remaining_ms(&self, now: Millis) -> i64 {
        if self.is_free_at(now) {
            0
        } else {
            self.expires_at.map_or(0, |e| e.since(now))
        }
    }
}

/// What a witness returns for every lease request: the state plus the witness's own clock, so
/// clients compute remaining validity without comparing against their own wall clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseView {
    /// The state after the request.
    #[serde(flatten)]
    pub state: LeaseState,
    /// The witness's clock when it answered.
    #[serde(with = "crate::time::rfc3339")]
    pub witness_now: Millis,
}

/// The operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeaseOp {
    /// Take a free or expired slot, or extend one's own unexpired lease.
    Acquire,
    /// Extend one's own unexpired lease; anything else is lost.
    Renew,
    /// Give the lease up; a no-op for anyone but the holder.
    Release,
}

/// A request to change a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRequest {
    /// The operation.
    pub op: LeaseOp,
    /// Who asks. Non-empty.
    pub holder: String,
    /// Requested validity for acquire/renew, in milliseconds (1 ..= [`MAX_TTL_MS`]); ignored
    /// by release.
    #[serde(default)]
    pub ttl_ms: i64,
    /// Compare-and-set precondition: the generation the caller last read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<u64>,
    /// Idempotency key; a replay gets the first answer again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The holder's report (acquire/renew); `None` keeps the previous one while the holder and
    /// epoch stay the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<HolderReport>,
}

impl LeaseRequest {
    /// An acquire for `holder` with `ttl_ms`.
    pub fn acquire(holder: &str, ttl_ms: i64) -> LeaseRequest {
        LeaseRequest::new(LeaseOp::Acquire, holder, ttl_ms)
    }

    /// A renew for `holder` with `ttl_ms`.
    pub fn renew(holder: &str, ttl_ms: i64) -> LeaseRequest {
        LeaseRequest::new(LeaseOp::Renew, holder, ttl_ms)
    }

    /// A release by `holder`.
    pub fn release(holder: &str) -> LeaseRequest {
        LeaseRequest::new(LeaseOp::Release, holder, 0)
    }

    fn new(op: LeaseOp, holder: &str, ttl_ms: i64) -> LeaseRequest {
        LeaseRequest {
            op,
            holder: holder.to_owned(),
            ttl_ms,
            if_match: None,
            request_id: None,
            report: None,
        }
    }

    /// With a holder report.
    pub fn report(mut self, report: HolderReport) -> LeaseRequest {
        self.report = Some(report);
        self
    }

    /// With an `If-Match` generation.
    pub fn if_match(mut self, generation: u64) -> LeaseRequest {
        self.if_match = Some(generation);
        self
    }

    /// With an idempotency key.
    pub fn request_id(mut self, id: impl Into<String>) -> LeaseRequest {
        self.request_id = Some(id.into());
        self
    }
}

/// Why a well-formed request was refused. The caller gets the current state with it, so a
/// primary that lost its lease can demote itself at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConflictReason {
    /// `If-Match` named another generation.
    GenerationMismatch,
    /// Another holder has an unexpired lease.
    HeldByAnother,
    /// Renew by someone who is not the holder.
    NotHolder,
    /// Renew after the lease expired (re-acquire instead; that bumps the epoch).
    Expired,
    /// A replayed request id whose grant is no longer the current one (the holder released
    /// it or it passed to another holder since): the old answer would claim authority the
    /// caller no longer has.
    Superseded,
}

/// A refused request (HTTP 412 with the current state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("lease conflict ({reason:?}): held by {:?} epoch {} generation {}", current.holder, current.epoch, current.generation)]
#[serde(rename_all = "camelCase")]
pub struct LeaseConflict {
    /// Why.
    pub reason: ConflictReason,
    /// The slot's state when refused.
    pub current: LeaseState,
}

/// A request that is malformed in itself (HTTP 400), or one the slot can never carry out
/// because a counter is used up (HTTP 409); it changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseRequestError {
    /// `holder` is empty.
    #[error("holder must be a non-empty string")]
    InvalidHolder,
    /// TTL outside 1 ms ..= [`MAX_TTL_MS`].
    #[error("ttl must be between 1 ms and {MAX_TTL_MS} ms, got {0} ms")]
    InvalidTtl(i64),
    /// The request id was already used by this holder for another operation.
    #[error("request id {0:?} was already used for a different operation")]
    RequestIdReused(String),
    /// The holder report is malformed (`flushedLsn` not `X/Y` hex).
    #[error("report.flushedLsn must be a pg_lsn like 0/3000148")]
    InvalidReport,
    /// A new grant needs an epoch above `highest` (the current epoch or the floor) and there
    /// is none: the slot's fencing epochs are used up. Refused rather than reusing an epoch.
    #[error(
        "no fencing epoch left above {highest}: the slot's epochs are used up, a new grant is refused (move the application to a new slot)"
    )]
    EpochExhausted {
        /// The highest epoch issued or reserved on the slot.
        highest: u64,
    },
    /// The write needs a generation above `u64::MAX`: refused rather than repeating a
    /// compare-and-set version.
    #[error("generation is at its maximum: no write to this slot can be versioned any more")]
    GenerationExhausted,
}

impl LeaseRequestError {
    /// Machine-readable code, matching upstream's Worker where it has one.
    pub fn code(&self) -> &'static str {
        match self {
            LeaseRequestError::InvalidHolder => "invalid_holder",
            LeaseRequestError::InvalidTtl(_) => "invalid_ttl",
            LeaseRequestError::RequestIdReused(_) => "request_id_reused",
            LeaseRequestError::InvalidReport => "invalid_report",
            LeaseRequestError::EpochExhausted { .. } => "epoch_exhausted",
            LeaseRequestError::GenerationExhausted => "generation_exhausted",
        }
    }

    /// True when the request was well-formed but the slot can never carry it out (a counter
    /// is used up): HTTP 409 rather than 400.
    pub fn is_exhausted(&self) -> bool {
        matches!(
            self,
            LeaseRequestError::EpochExhausted { .. } | LeaseRequestError::GenerationExhausted
        )
    }
}

/// The answer to a request: the new state, or a conflict with the current state.
pub type LeaseOutcome = Result<LeaseState, LeaseConflict>;

/// One remembered answer for idempotent replays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answered {
    /// Holder of the request.
    pub holder: String,
    /// Its request id.
    pub request_id: String,
    /// Its operation.
    pub op: LeaseOp,
    /// What it was answered.
    pub outcome: LeaseOutcome,
    /// The witness clock when it was first answered, so a replay can be answered identically.
    #[serde(default)]
    pub at: Millis,
}

/// Everything a witness stores for one slot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaseRecord {
    /// The visible state.
    pub state: LeaseState,
    /// The next grant's epoch is above this floor as well as above the current epoch (raised
    /// when an epoch was issued elsewhere, e.g. by an opt-in DNS-quorum takeover, so the
    /// witness never reissues it).
    #[serde(default)]
    pub epoch_floor: u64,
    /// Recently answered request ids, oldest first, at most [`REPLAY_MEMORY`].
    #[serde(default)]
    pub answered: VecDeque<Answered>,
}

/// The result of [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The record to store (equal to the input when nothing changed).
    pub record: LeaseRecord,
    /// The answer to give.
    pub outcome: LeaseOutcome,
    /// True when the visible state changed (a storage write is needed).
    pub changed: bool,
    /// True when this was a replay of an answered request id.
    pub replayed: bool,
    /// The witness time the answer speaks for: `now`, or the first answer's time on a replay.
    pub at: Millis,
}

/// Applies `req` to `record` at witness time `now`. Pure: the same inputs give the same
/// output. The returned record must be persisted before the answer is sent whenever it differs
/// from the input (`changed`, or a new remembered request id).
pub fn apply(
    record: &LeaseRecord,
    req: &LeaseRequest,
    now: Millis,
) -> Result<Applied, LeaseRequestError> {
    if req.holder.is_empty() {
        return Err(LeaseRequestError::InvalidHolder);
    }
    if req.op != LeaseOp::Release && !(1..=MAX_TTL_MS).contains(&req.ttl_ms) {
        return Err(LeaseRequestError::InvalidTtl(req.ttl_ms));
    }
    if let Some(r) = &req.report {
        r.validate()?;
    }
    if let Some(id) = &req.request_id
        && let Some(prev) = record
            .answered
            .iter()
            .find(|a| a.request_id == *id && a.holder == req.holder)
    {
        if prev.op != req.op {
            return Err(LeaseRequestError::RequestIdReused(id.clone()));
        }
        let cur = &record.state;
        let outcome = match &prev.outcome {
            // A remembered grant is only repeated while it is still the current grant.
            Ok(s) if !s.holder.is_empty() && (s.holder != cur.holder || s.epoch != cur.epoch) => {
                Err(LeaseConflict {
                    reason: ConflictReason::Superseded,
                    current: cur.clone(),
                })
            }
            other => other.clone(),
        };
        return Ok(Applied {
            record: record.clone(),
            outcome,
            changed: false,
            replayed: true,
            at: prev.at,
        });
    }

    let cur = &record.state;
    let outcome = decide(record, req, now)?;
    let changed = matches!(&outcome, Ok(s) if s != cur);
    let mut next = record.clone();
    if let Ok(s) = &outcome {
        next.state = s.clone();
    }
    if let Some(id) = &req.request_id {
        if next.answered.len() >= REPLAY_MEMORY {
            next.answered.pop_front();
        }
        next.answered.push_back(Answered {
            holder: req.holder.clone(),
            request_id: id.clone(),
            op: req.op,
            outcome: outcome.clone(),
            at: now,
        });
    }
    Ok(Applied {
        record: next,
        outcome,
        changed,
        replayed: false,
        at: now,
    })
}

/// The transition itself, for a valid, non-replayed request. `Err` when the answer would
/// need a counter beyond `u64::MAX`.
fn decide(
    record: &LeaseRecord,
    req: &LeaseRequest,
    now: Millis,
) -> Result<LeaseOutcome, LeaseRequestError> {
    let cur = &record.state;
    let conflict = |reason| LeaseConflict {
        reason,
        current: cur.clone(),
    };
    if let Some(g) = req.if_match
        && g != cur.generation
    {
        return Ok(Err(conflict(ConflictReason::GenerationMismatch)));
    }
    let free = cur.is_free_at(now);
    let mine = cur.holder == req.holder;
    // Every write bumps the generation; never past the top (a repeated version would let a
    // stale If-Match succeed).
    let generation = || {
        cur.generation
            .checked_add(1)
            .ok_or(LeaseRequestError::GenerationExhausted)
    };
    let extended = || -> Result<LeaseState, LeaseRequestError> {
        Ok(LeaseState {
            holder: cur.holder.clone(),
            acquired_at: cur.acquired_at,
            // Never shorten a granted lease.
            expires_at: Some(
                cur.expires_at
                    .map_or(now.plus(req.ttl_ms), |e| e.max(now.plus(req.ttl_ms))),
            ),
            generation: generation()?,
            epoch: cur.epoch,
            report: req.report.clone().or_else(|| cur.report.clone()),
        })
    };
    Ok(match req.op {
        LeaseOp::Acquire if !free && mine => Ok(extended()?),
        LeaseOp::Acquire if !free => Err(conflict(ConflictReason::HeldByAnother)),
        LeaseOp::Acquire => {
            // A new grant: strictly above every epoch issued or reserved, or refused.
            let highest = cur.epoch.max(record.epoch_floor);
            let epoch = highest
                .checked_add(1)
                .ok_or(LeaseRequestError::EpochExhausted { highest })?;
            Ok(LeaseState {
                holder: req.holder.clone(),
                acquired_at: Some(now),
                expires_at: Some(now.plus(req.ttl_ms)),
                generation: generation()?,
                epoch,
                // A new grant never inherits the previous holder's report.
                report: req.report.clone(),
            })
        }
        LeaseOp::Renew if !mine => Err(conflict(ConflictReason::NotHolder)),
        LeaseOp::Renew if free => Err(conflict(ConflictReason::Expired)),
        LeaseOp::Renew => Ok(extended()?),
        // Release by anyone but the holder (or of a free slot) is a successful no-op.
        LeaseOp::Release if !mine || cur.holder.is_empty() => Ok(cur.clone()),
        LeaseOp::Release => Ok(LeaseState {
            holder: String::new(),
            acquired_at: None,
            expires_at: None,
            generation: generation()?,
            epoch: cur.epoch,
            report: None,
        }),
    })
}

/// Why [`raise_epoch_floor`] refused a floor. Nothing changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FloorError {
    /// The floor is more than [`MAX_FLOOR_JUMP`] above the slot's highest epoch.
    #[error(
        "epoch floor {requested} is more than {MAX_FLOOR_JUMP} above the slot's highest epoch {highest}; an epoch issued by a DNS-quorum takeover is only a few above it"
    )]
    TooFar {
        /// The floor asked for.
        requested: u64,
        /// `max(epoch, epochFloor)` of the slot.
        highest: u64,
    },
    /// The floor would leave fewer than [`MAX_FLOOR_JUMP`] epochs to grant.
    #[error(
        "epoch floor {requested} leaves no room for new grants (the highest floor accepted is {MAX_EPOCH_FLOOR})"
    )]
    NoRoom {
        /// The floor asked for.
        requested: u64,
    },
}

impl FloorError {
    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            FloorError::TooFar { .. } => "epoch_floor_too_far",
            FloorError::NoRoom { .. } => "epoch_floor_no_room",
        }
    }
}

/// Raises the slot's epoch floor to at least `floor` (never lowers it). Used when an epoch was
/// issued outside the witness — an opt-in DNS-quorum takeover while the witness was
/// unreachable (`spec/peers.md` §2.3 rule 11) — so that the witness's next grant is above it
/// and the epoch is never issued twice. The visible state and generation do not change.
///
/// A floor at or below the slot's highest epoch (`max(epoch, epochFloor)`) is a no-op. A floor
/// more than [`MAX_FLOOR_JUMP`] above it, or above [`MAX_EPOCH_FLOOR`], is refused.
pub fn raise_epoch_floor(record: &LeaseRecord, floor: u64) -> Result<LeaseRecord, FloorError> {
    let highest = record.state.epoch.max(record.epoch_floor);
    if floor <= highest {
        return Ok(record.clone());
    }
    if floor - highest > MAX_FLOOR_JUMP {
        return Err(FloorError::TooFar {
            requested: floor,
            highest,
        });
    }
    if floor > MAX_EPOCH_FLOOR {
        return Err(FloorError::NoRoom { requested: floor });
    }
    let mut next = record.clone();
    next.epoch_floor = floor;
    Ok(next)
}

/// Parses an `If-Match` header value as upstream's Worker accepts it: `N`, `"N"` or `W/"N"`.
pub fn parse_if_match(value: &str) -> Option<u64> {
    let v = value.trim();
    let v = v.strip_prefix("W/").unwrap_or(v);
    let v = v
        .strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .unwrap_or(v);
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// The PUT body of upstream's Worker: `{"holder", "ttlSeconds", "op": "acquire"|"renew"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PutBody {
    /// Who asks.
    pub holder: String,
    /// Requested validity in seconds (finite, > 0; fractions allowed).
    pub ttl_seconds: f64,
    /// `acquire` or `renew`.
    pub op: LeaseOp,
}

impl PutBody {
    /// The TTL in whole milliseconds, or the error upstream's Worker gives (`invalid_ttl`).
    pub fn ttl_ms(&self) -> Result<i64, LeaseRequestError> {
        let ms = self.ttl_seconds * 1000.0;
        if !ms.is_finite() || ms < 1.0 || ms > MAX_TTL_MS as f64 {
            // Report what was asked, rounded to ms and clamped into i64 for the message.
            return Err(LeaseRequestError::InvalidTtl(ms.clamp(-9e15, 9e15) as i64));
        }
        Ok(ms.round() as i64)
    }
}

#[cfg(test)]
mod tests;
