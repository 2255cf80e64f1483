//! Typed witness client (continuum-controller's `Witness` port uses it).
//!
//! Every call has a per-attempt timeout and is retried on transport errors and 5xx with the
//! SAME `X-Request-Id`, so a retry of a request the witness already applied gets the first
//! answer back and never burns an epoch. Errors say what the caller must do: another holder
//! has it (wait), the lease is lost (self-fence now), the token is wrong (operator), or the
//! witness is unavailable (keep serving only until the renew deadline).

use contract::lease::{ConflictReason, LeaseView};
use contract::{HolderReport, LeaseState, Millis};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::time::Duration;

/// Client configuration.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Base URL, e.g. `http://127.0.0.1:8787` or the Worker's URL.
    pub base_url: String,
    /// Bearer token.
    pub token: String,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts per call (1 = no retry).
    pub attempts: u32,
    /// Pause between attempts.
    pub backoff: Duration,
}

impl ClientConfig {
    /// Defaults: 2 s per attempt, 3 attempts, 200 ms apart — a renew fits well inside a 10 s
    /// renew interval.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into().trim_end_matches('/').to_owned(),
            token: token.into(),
            timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(200),
        }
    }
}

/// What went wrong, in the terms the controller acts on.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// Another holder has an unexpired lease.
    #[error("lease held by {:?} (epoch {}) until {:?}", .0.state.holder, .0.state.epoch, .0.state.expires_at)]
    HeldByAnother(Box<LeaseView>),
    /// This holder no longer holds the lease (expired, taken over, or superseded): stop acting.
    #[error("lease lost: now held by {:?} epoch {}", .0.state.holder, .0.state.epoch)]
    LeaseLost(Box<LeaseView>),
    /// The compare-and-set kept failing (the slot is being written concurrently).
    #[error("lease changed concurrently {0} times in a row")]
    Contended(u32),
    /// 401: the token is unknown.
    #[error("witness refused the token (401)")]
    Unauthorized,
    /// 403: the token may not act as this holder or is not bound to this slot.
    #[error("token may not act as this holder or use this slot (403): {0}")]
    Forbidden(String),
    /// 400: the request is malformed (a bug or bad configuration).
    #[error("witness rejected the request: {0}")]
    Invalid(String),
    /// No answer (timeouts, connection errors, 5xx) after every attempt.
    #[error("witness unavailable: {0}")]
    Unavailable(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    #[serde(flatten)]
    view: LeaseView,
    #[serde(default)]
    conflict: Option<ConflictReason>,
}

/// One slot of one witness.
#[derive(Debug, Clone)]
pub struct WitnessClient {
    http: reqwest::Client,
    cfg: ClientConfig,
    slot: String,
}

struct Reply {
    status: StatusCode,
    body: Vec<u8>,
}

impl WitnessClient {
    /// A client for `slot`.
    pub fn new(cfg: ClientConfig, slot: impl Into<String>) -> Result<WitnessClient, WitnessError> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| WitnessError::Unavailable(e.to_string()))?;
        Ok(WitnessClient {
            http,
            cfg,
            slot: slot.into(),
        })
    }

    fn url(&self) -> String {
        let enc =
            percent_encoding::utf8_percent_encode(&self.slot, percent_encoding::NON_ALPHANUMERIC);
        format!("{}/lease/{enc}", self.cfg.base_url)
    }

    async fn send(
        &self,
        method: Method,
        headers: &[(&str, String)],
        body: Option<serde_json::Value>,
    ) -> Result<Reply, WitnessError> {
        let mut last = String::new();
        for attempt in 0..self.cfg.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.cfg.backoff).await;
            }
            let mut rb = self
                .http
                .request(method.clone(), self.url())
                .bearer_auth(&self.cfg.token)
                .header("X-Lease-Slot", &self.slot);
            for (k, v) in headers {
                rb = rb.header(*k, v);
            }
            if let Some(b) = &body {
                rb = rb.json(b);
            }
            match rb.send().await {
                Ok(r) if r.status().is_server_error() => {
                    last = format!("HTTP {}", r.status());
                }
                Ok(r) => {
                    let status = r.status();
                    match r.bytes().await {
                        Ok(b) => {
                            return Ok(Reply {
                                status,
                                body: b.to_vec(),
                            });
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(WitnessError::Unavailable(last))
    }

    fn decode(reply: &Reply) -> Result<Answer, WitnessError> {
        serde_json::from_slice(&reply.body)
            .map_err(|e| WitnessError::Unavailable(format!("undecodable answer: {e}")))
    }

    fn refused(reply: &Reply) -> WitnessError {
        let text = String::from_utf8_lossy(&reply.body).into_owned();
        match reply.status {
            StatusCode::UNAUTHORIZED => WitnessError::Unauthorized,
            StatusCode::FORBIDDEN => WitnessError::Forbidden(text),
            s if s.is_client_error() => WitnessError::Invalid(format!("HTTP {s}: {text}")),
            s => WitnessError::Unavailable(format!("HTTP {s}: {text}")),
        }
    }

    /// Reads the slot. A never-written slot reads as free (generation 0); `witness_now` is
    /// then unknown and reported as 0.
    pub async fn read(&self) -> Result<LeaseView, WitnessError> {
        let reply = self.send(Method::GET, &[], None).await?;
        match reply.status {
            StatusCode::OK => Ok(Self::decode(&reply)?.view),
            StatusCode::NOT_FOUND => Ok(LeaseView {
                state: LeaseState::default(),
                witness_now: Millis(0),
            }),
            _ => Err(Self::refused(&reply)),
        }
    }

    async fn put(
        &self,
        op: &str,
        holder: &str,
        ttl: Duration,
        generation: u64,
        report: Option<&HolderReport>,
    ) -> Result<(StatusCode, Answer), WitnessError> {
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut body = serde_json::json!({
            "holder": holder,
            "ttlSeconds": ttl.as_secs_f64(),
            "op": op,
        });
        if let Some(r) = report {
            body["report"] = serde_json::to_value(r)
                .map_err(|e| WitnessError::Invalid(format!("report: {e}")))?;
        }
        let reply = self
            .send(
                Method::PUT,
                &[
                    ("If-Match", generation.to_string()),
                    ("X-Request-Id", request_id),
                ],
                Some(body),
            )
            .await?;
        match reply.status {
            StatusCode::OK | StatusCode::PRECONDITION_FAILED => {
                Ok((reply.status, Self::decode(&reply)?))
            }
            _ => Err(Self::refused(&reply)),
        }
    }

    /// Acquires the lease for `holder` (or extends it if `holder` already has it). Waits for
    /// nothing: a lease held by another holder is [`WitnessError::HeldByAnother`].
    pub async fn acquire(&self, holder: &str, ttl: Duration) -> Result<LeaseView, WitnessError> {
        self.acquire_reporting(holder, ttl, None).await
    }

    /// [`WitnessClient::acquire`] with the holder's report (durability mode, flushed LSN).
    pub async fn acquire_reporting(
        &self,
        holder: &str,
        ttl: Duration,
        report: Option<&HolderReport>,
    ) -> Result<LeaseView, WitnessError> {
        const ROUNDS: u32 = 4;
        for _ in 0..ROUNDS {
            let cur = self.read().await?;
            let (status, ans) = self
                .put("acquire", holder, ttl, cur.state.generation, report)
                .await?;
            match (status, ans.conflict) {
                (StatusCode::OK, _) => return Ok(ans.view),
                (_, Some(ConflictReason::GenerationMismatch)) => continue,
                _ => return Err(WitnessError::HeldByAnother(Box::new(ans.view))),
            }
        }
        Err(WitnessError::Contended(ROUNDS))
    }

    /// Renews `holder`'s lease. `generation` is the generation of the caller's last answer
    /// (it is re-read once if another write intervened). Anything but success while the
    /// lease is not ours is [`WitnessError::LeaseLost`].
    pub async fn renew(
        &self,
        holder: &str,
        ttl: Duration,
        generation: u64,
    ) -> Result<LeaseView, WitnessError> {
        self.renew_reporting(holder, ttl, generation, None).await
    }

    /// [`WitnessClient::renew`] with the holder's report. A primary renews with
    /// `synchronous: false` and waits for success BEFORE it suspends synchronous replication.
    pub async fn renew_reporting(
        &self,
        holder: &str,
        ttl: Duration,
        generation: u64,
        report: Option<&HolderReport>,
    ) -> Result<LeaseView, WitnessError> {
        let mut generation = generation;
        for _ in 0..2 {
            let (status, ans) = self.put("renew", holder, ttl, generation, report).await?;
            match (status, ans.conflict) {
                (StatusCode::OK, _) => return Ok(ans.view),
                (_, Some(ConflictReason::GenerationMismatch))
                    if ans.view.state.holder == holder =>
                {
                    generation = ans.view.state.generation;
                }
                _ => return Err(WitnessError::LeaseLost(Box::new(ans.view))),
            }
        }
        Err(WitnessError::Contended(2))
    }

    /// Releases `holder`'s lease (planned switchover). Idempotent: releasing a lease one does
    /// not hold succeeds and changes nothing.
    pub async fn release(&self, holder: &str) -> Result<Option<LeaseView>, WitnessError> {
        for _ in 0..4 {
            let cur = self.read().await?;
            if cur.state.holder != holder {
                return Ok(None);
            }
            let reply = self
                .send(
                    Method::DELETE,
                    &[
                        ("If-Match", cur.state.generation.to_string()),
                        ("X-Holder", holder.to_owned()),
                        ("X-Request-Id", uuid::Uuid::new_v4().to_string()),
                    ],
                    None,
                )
                .await?;
            match reply.status {
                StatusCode::NO_CONTENT => return Ok(None),
                StatusCode::OK => return Ok(Some(Self::decode(&reply)?.view)),
                StatusCode::PRECONDITION_FAILED => continue,
                _ => return Err(Self::refused(&reply)),
            }
        }
        Err(WitnessError::Contended(4))
    }
}
