//! [`Error`], the one error type of the I/O side of this crate ([`crate::lua`] has its own pure
//! [`LuaError`]).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::lua::LuaError;

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a backend call or a verification can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The record spec is invalid; nothing was sent.
    #[error("invalid record spec")]
    Lua(#[from] LuaError),
    /// The update is invalid (empty, names outside the zone, …); nothing was sent.
    #[error("invalid DNS update: {0}")]
    InvalidUpdate(String),
    /// The backend refused the credentials (HTTP 401/403).
    #[error("{backend}: {op}: authentication rejected (HTTP {status}): {body}")]
    Auth {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// 401 or 403.
        status: u16,
        /// Response body (at most 256 characters).
        body: String,
    },
    /// The zone, record, route or allocation does not exist (HTTP 404).
    #[error("{backend}: {op}: not found: {body}")]
    NotFound {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// Response body (at most 256 characters).
        body: String,
    },
    /// The backend reported a conflict (HTTP 409): already exists, already active, or (a
    /// fencing-aware PDM) a stale epoch.
    #[error("{backend}: {op}: conflict: {body}")]
    Conflict {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// Response body (at most 256 characters).
        body: String,
    },
    /// The backend refused the request as invalid (HTTP 400/410/422).
    #[error("{backend}: {op}: rejected (HTTP {status}): {body}")]
    Rejected {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// 400, 410 or 422.
        status: u16,
        /// Response body (at most 256 characters).
        body: String,
    },
    /// The backend failed (HTTP 5xx), after the retries idempotent calls get.
    #[error("{backend}: {op}: server error (HTTP {status}): {body}")]
    Server {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// The status.
        status: u16,
        /// Response body (at most 256 characters).
        body: String,
    },
    /// Any other unexpected HTTP status.
    #[error("{backend}: {op}: unexpected HTTP {status}: {body}")]
    UnexpectedStatus {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// The status.
        status: u16,
        /// Response body (at most 256 characters).
        body: String,
    },
    /// The request did not complete within the client timeout.
    #[error("{backend}: {op}: timed out after {after:?}")]
    Timeout {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// The configured timeout.
        after: Duration,
    },
    /// Connecting, sending or reading failed.
    #[error("{backend}: {op}: transport error")]
    Transport {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The response body is not what the API documents.
    #[error("{backend}: {op}: unexpected response body")]
    Decode {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// Fencing: the stored record carries a higher epoch than this write; nothing was written.
    #[error("{hostname}: stored epoch {stored} is higher than this write's epoch {attempted}")]
    StaleEpoch {
        /// The record.
        hostname: String,
        /// Epoch in the stored record's fence comment.
        stored: u64,
        /// Epoch of the refused write.
        attempted: u64,
    },
    /// Fencing: our write landed, but a higher-epoch writer replaced it before the read-back.
    #[error("{hostname}: superseded by epoch {stored} right after writing epoch {attempted}")]
    Superseded {
        /// The record.
        hostname: String,
        /// Epoch found on read-back.
        stored: u64,
        /// Epoch we wrote.
        attempted: u64,
    },
    /// The read-back after a write does not show what was written (and no higher epoch explains
    /// it).
    #[error("{hostname}: read-back after the write differs: {detail}")]
    ReadBack {
        /// The record.
        hostname: String,
        /// What differs.
        detail: String,
    },
    /// The backend cannot do this (e.g. reading records through PDM).
    #[error("{backend}: {op} is not supported by this backend")]
    Unsupported {
        /// `powerdns` or `pdm`.
        backend: &'static str,
        /// The operation.
        op: &'static str,
    },
    /// Building the HTTP client or a URL failed (configuration).
    #[error("configuration: {0}")]
    Config(String),
    /// The authoritative server did not answer the expected set before the deadline.
    #[error(
        "{name} at {server}: answer is still {last} after {after:?}; expected {}",
        fmt_set(expected)
    )]
    VerifyTimeout {
        /// The name queried.
        name: String,
        /// The server that did not converge.
        server: SocketAddr,
        /// The expected answer.
        expected: BTreeSet<Ipv4Addr>,
        /// The last answer or error seen.
        last: String,
        /// The deadline.
        after: Duration,
    },
}

impl Error {
    /// A low-cardinality label for metrics (`failures{error=…}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Lua(_) => "invalid_spec",
            Error::InvalidUpdate(_) => "invalid_update",
            Error::Auth { .. } => "auth",
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::Rejected { .. } => "rejected",
            Error::Server { .. } => "server",
            Error::UnexpectedStatus { .. } => "unexpected_status",
            Error::Timeout { .. } => "timeout",
            Error::Transport { .. } => "transport",
            Error::Decode { .. } => "decode",
            Error::StaleEpoch { .. } => "stale_epoch",
            Error::Superseded { .. } => "superseded",
            Error::ReadBack { .. } => "read_back",
            Error::Unsupported { .. } => "unsupported",
            Error::Config(_) => "config",
            Error::VerifyTimeout { .. } => "verify_timeout",
        }
    }

    /// True for errors a caller may retry later unchanged (transport, timeout, 5xx).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Transport { .. } | Error::Server { .. }
        )
    }
}

/// `{a, b}`.
pub(crate) fn fmt_set(set: &BTreeSet<Ipv4Addr>) -> String {
    let items: Vec<String> = set.iter().map(ToString::to_string).collect();
    format!("{{{}}}", items.join(", "))
}
