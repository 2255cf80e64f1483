//! The HTTP plumbing both backends share: one reqwest client (rustls, per-request timeout), a
//! retry loop that only idempotent calls use, and the status → [`Error`] mapping.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::error::{Error, Result};

/// How many times an idempotent call is sent at most.
const IDEMPOTENT_ATTEMPTS: u32 = 3;
/// First retry delay; doubles per retry.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest response body kept in an error (upstream keeps 256 characters too).
const ERROR_BODY_CHARS: usize = 256;

/// A response read to the end.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

/// Client + retry policy for one backend.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    backend: &'static str,
    timeout: Duration,
}

impl Http {
    /// A client whose every request (connect + send + read) ends after `timeout`.
    pub(crate) fn new(backend: &'static str, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("pdm-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("building the {backend} HTTP client: {e}")))?;
        Ok(Self {
            client,
            backend,
            timeout,
        })
    }

    /// Sends the request `build` makes and reads the whole body. Transport errors, timeouts and
    /// 5xx answers are retried (with backoff) only when `idempotent`; any other answer, success
    /// or not, is returned for the caller to interpret.
    pub(crate) async fn send<F>(&self, op: &str, idempotent: bool, build: F) -> Result<Reply>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let attempts = if idempotent { IDEMPOTENT_ATTEMPTS } else { 1 };
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let result = self.send_once(op, &build).await;
            let transient = match &result {
                Ok(reply) => reply.status.is_server_error(),
                Err(e) => e.is_transient(),
            };
            if !transient || attempt >= attempts {
                return result;
            }
            match &result {
                Ok(reply) => {
                    warn!(backend = self.backend, op, status = %reply.status, attempt, "retrying idempotent call")
                }
                Err(e) => {
                    warn!(backend = self.backend, op, error = %e, attempt, "retrying idempotent call")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    async fn send_once<F>(&self, op: &str, build: &F) -> Result<Reply>
    where
        F: Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    {
        let resp = build(&self.client)
            .send()
            .await
            .map_err(|e| self.transport(op, e))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| self.transport(op, e))?;
        debug!(backend = self.backend, op, %status, "answered");
        Ok(Reply { status, body })
    }

    fn transport(&self, op: &str, source: reqwest::Error) -> Error {
        if source.is_timeout() {
            Error::Timeout {
                backend: self.backend,
                op: op.to_owned(),
                after: self.timeout,
            }
        } else {
            Error::Transport {
                backend: self.backend,
                op: op.to_owned(),
                source,
            }
        }
    }

    /// `Ok(reply)` for 2xx, the typed error for anything else.
    pub(crate) fn success(&self, op: &str, reply: Reply) -> Result<Reply> {
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(self.status_error(op, reply))
        }
    }

    /// Maps a non-2xx answer to its typed error.
    pub(crate) fn status_error(&self, op: &str, reply: Reply) -> Error {
        let backend = self.backend;
        let op = op.to_owned();
        let status = reply.status.as_u16();
        let body = truncate(&reply.body);
        match reply.status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Auth {
                backend,
                op,
                status,
                body,
            },
            StatusCode::NOT_FOUND => Error::NotFound { backend, op, body },
            StatusCode::CONFLICT => Error::Conflict { backend, op, body },
            StatusCode::BAD_REQUEST | StatusCode::GONE | StatusCode::UNPROCESSABLE_ENTITY => {
                Error::Rejected {
                    backend,
                    op,
                    status,
                    body,
                }
            }
            s if s.is_server_error() => Error::Server {
                backend,
                op,
                status,
                body,
            },
            _ => Error::UnexpectedStatus {
                backend,
                op,
                status,
                body,
            },
        }
    }

    /// Decodes a JSON body.
    pub(crate) fn json<T: DeserializeOwned>(&self, op: &str, reply: &Reply) -> Result<T> {
        serde_json::from_str(&reply.body).map_err(|source| Error::Decode {
            backend: self.backend,
            op: op.to_owned(),
            source,
        })
    }
}

fn truncate(body: &str) -> String {
    let body = body.trim();
    match body.char_indices().nth(ERROR_BODY_CHARS) {
        Some((i, _)) => format!("{}…", &body[..i]),
        None => body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_cut_at_256_characters() {
        assert_eq!(truncate(" short "), "short");
        let long = "é".repeat(300);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), 257);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn statuses_map_to_typed_errors() {
        let http = Http::new("pdm", Duration::from_secs(1)).unwrap();
        let err = |status: u16| {
            http.status_error(
                "op",
                Reply {
                    status: StatusCode::from_u16(status).unwrap(),
                    body: "b".into(),
                },
            )
            .metric_label()
        };
        assert_eq!(err(401), "auth");
        assert_eq!(err(403), "auth");
        assert_eq!(err(404), "not_found");
        assert_eq!(err(409), "conflict");
        assert_eq!(err(410), "rejected");
        assert_eq!(err(422), "rejected");
        assert_eq!(err(503), "server");
        assert_eq!(err(418), "unexpected_status");
    }
}
