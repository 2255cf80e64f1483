//! [`PdmClient`]: the pool-domain-manager (PDM) API.
//!
//! - `POST <base>/v1/lua/commit` exactly as upstream's controller sends it
//!   (`internal/pdm/client.go`): `Content-Type`/`Accept: application/json`, optional
//!   `X-Catalyst-Token`, body [`LuaCommit`]. Upstream's PDM does **not** implement this route
//!   (`spec/upstream-continuum.md` §8.2, it answers 404); this client speaks it for a PDM that
//!   does. The fencing epoch travels in the `X-Continuum-Epoch` header (the body shape stays
//!   upstream's); a fencing-aware PDM answers 409 to a stale epoch, mapped to
//!   [`Error::Conflict`]. Nothing is fenced by a PDM that ignores the header.
//! - PDM's documented pool endpoints (`core/pool-domain-manager/api/openapi.yaml`): `GET
//!   /healthz`, `GET /api/v1/reserved`, `GET /api/v1/pool/{domain}/check?sub=`, `POST
//!   …/reserve`, `POST …/commit`, `DELETE …/release`, `GET …/list`.
//!
//! Statuses map to [`Error::Auth`] (401/403), [`Error::NotFound`] (404), [`Error::Conflict`]
//! (409), [`Error::Rejected`] (400/410/422), [`Error::Server`] (5xx). Every request has the
//! configured timeout (default 5 s, upstream's step budget). GETs and the LUA commit (a
//! REPLACE) are retried on transport errors, timeouts and 5xx; reserve, pool commit and release
//! are sent once.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::Deserialize;
use tracing::{info, instrument};

use crate::control::{Applied, BoxFuture, DnsControl, DnsUpdate, Epoch, Published};
use crate::error::{Error, Result};
use crate::http::{Http, Reply};
use crate::model::{
    Allocation, AllocationList, CheckResult, Health, LuaCommit, PoolCommitRequest, ReleaseRequest,
    ReserveRequest, ReservedList,
};

const BACKEND: &str = "pdm";
/// Upstream's auth header.
pub const TOKEN_HEADER: &str = "X-Catalyst-Token";
/// Header carrying the fencing epoch of a LUA commit.
pub const EPOCH_HEADER: &str = "X-Continuum-Epoch";
/// The LUA commit route, relative to the base URL (upstream's `PDM_API_URL`).
pub const LUA_COMMIT_PATH: &str = "/v1/lua/commit";

/// Where and how to reach PDM.
#[derive(Debug, Clone)]
pub struct PdmConfig {
    /// Base URL (upstream's `PDM_API_URL`), e.g. `http://pool-domain-manager:8080`.
    pub base_url: String,
    /// Sent as `X-Catalyst-Token` when set (upstream's `PDM_AUTH_TOKEN`).
    pub token: Option<String>,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl PdmConfig {
    /// No token, 5 s timeout.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            token: None,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Result of a pool commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolCommitted {
    /// 200: the allocation is active and its DNS records exist.
    Active(Allocation),
    /// 202: active in PDM's database, but the DNS write failed; commit again with the same body.
    DnsPending {
        /// The allocation as far as PDM knows it.
        allocation: Allocation,
        /// PDM's explanation.
        detail: String,
    },
}

/// Result of a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// The freed allocation.
    pub freed: Allocation,
    /// 202: the row is gone but PowerDNS clean-up failed; release again.
    pub dns_pending: bool,
}

/// PDM client implementing [`DnsControl`] through the LUA commit.
#[derive(Debug, Clone)]
pub struct PdmClient {
    http: Http,
    base: String,
    token: Option<String>,
}

impl PdmClient {
    /// A client for `config`; nothing is sent yet.
    pub fn new(config: PdmConfig) -> Result<Self> {
        let base = url::Url::parse(&config.base_url)
            .map_err(|e| Error::Config(format!("PDM URL {:?}: {e}", config.base_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "PDM URL {:?}: scheme must be http or https",
                config.base_url
            )));
        }
        Ok(Self {
            http: Http::new(BACKEND, config.timeout)?,
            base: config.base_url.trim_end_matches('/').to_owned(),
            token: config.token.filter(|t| !t.is_empty()),
        })
    }

    fn request(&self, builder: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let builder = builder.header(reqwest::header::ACCEPT, "application/json");
        match &self.token {
            Some(token) => builder.header(TOKEN_HEADER, token),
            None => builder,
        }
    }

    fn pool_url(&self, domain: &str, action: &str) -> String {
        format!(
            "{}/api/v1/pool/{}/{action}",
            self.base,
            utf8_percent_encode(domain, NON_ALPHANUMERIC)
        )
    }

    /// Upstream's LUA commit. An empty record list is refused before sending (upstream's
    /// `ErrNoOp`).
    #[instrument(skip(self, commit), fields(zone = %commit.zone, records = commit.records.len()))]
    pub async fn lua_commit(&self, commit: &LuaCommit, epoch: Option<Epoch>) -> Result<()> {
        if commit.records.is_empty() {
            return Err(Error::InvalidUpdate(format!(
                "no records for zone {} (upstream ErrNoOp)",
                commit.zone
            )));
        }
        let op = format!("committing LUA records for {}", commit.zone);
        let url = format!("{}{LUA_COMMIT_PATH}", self.base);
        let reply = self
            .http
            .send(&op, true, |c| {
                let b = self.request(c.post(&url)).json(commit);
                match epoch {
                    Some(e) => b.header(EPOCH_HEADER, e.0.to_string()),
                    None => b,
                }
            })
            .await?;
        self.http.success(&op, reply)?;
        info!("PDM accepted the LUA commit");
        Ok(())
    }

    async fn get<T: for<'de> Deserialize<'de>>(&self, op: &str, url: &str) -> Result<T> {
        let reply = self
            .http
            .send(op, true, |c| self.request(c.get(url)))
            .await?;
        let reply = self.http.success(op, reply)?;
        self.http.json(op, &reply)
    }

    /// `GET /healthz` (503 = PDM up, database down → [`Error::Server`] after retries).
    pub async fn health(&self) -> Result<Health> {
        self.get("health check", &format!("{}/healthz", self.base))
            .await
    }

    /// `GET /api/v1/reserved`.
    pub async fn reserved(&self) -> Result<ReservedList> {
        self.get(
            "listing reserved names",
            &format!("{}/api/v1/reserved", self.base),
        )
        .await
    }

    /// `GET /api/v1/pool/{domain}/check?sub=` (read `available`; always 200 upstream).
    pub async fn check(&self, domain: &str, sub: &str) -> Result<CheckResult> {
        let url = format!(
            "{}?sub={}",
            self.pool_url(domain, "check"),
            utf8_percent_encode(sub, NON_ALPHANUMERIC)
        );
        self.get(&format!("checking {sub}.{domain}"), &url).await
    }

    /// `GET /api/v1/pool/{domain}/list`.
    pub async fn list(&self, domain: &str) -> Result<AllocationList> {
        self.get(
            &format!("listing pool {domain}"),
            &self.pool_url(domain, "list"),
        )
        .await
    }

    /// `POST /api/v1/pool/{domain}/reserve` (201). 409 → [`Error::Conflict`] (taken), 422 →
    /// [`Error::Rejected`]. Sent once.
    pub async fn reserve(&self, domain: &str, request: &ReserveRequest) -> Result<Allocation> {
        let op = format!("reserving {}.{domain}", request.subdomain);
        let url = self.pool_url(domain, "reserve");
        let reply = self
            .http
            .send(&op, false, |c| self.request(c.post(&url)).json(request))
            .await?;
        let reply = self.http.success(&op, reply)?;
        self.http.json(&op, &reply)
    }

    /// `POST /api/v1/pool/{domain}/commit`: 200 → [`PoolCommitted::Active`], 202 →
    /// [`PoolCommitted::DnsPending`]; 403 (token mismatch) → [`Error::Auth`], 404 (no
    /// reservation) → [`Error::NotFound`], 409 (already active) → [`Error::Conflict`], 410
    /// (reservation expired) and 422 → [`Error::Rejected`]. Sent once.
    pub async fn commit(&self, domain: &str, request: &PoolCommitRequest) -> Result<PoolCommitted> {
        let op = format!("committing {}.{domain}", request.subdomain);
        let url = self.pool_url(domain, "commit");
        let reply = self
            .http
            .send(&op, false, |c| self.request(c.post(&url)).json(request))
            .await?;
        let reply = self.http.success(&op, reply)?;
        if reply.status == StatusCode::ACCEPTED {
            let pending: Pending = self.http.json(&op, &reply)?;
            return Ok(PoolCommitted::DnsPending {
                allocation: pending.allocation,
                detail: pending.detail,
            });
        }
        Ok(PoolCommitted::Active(self.http.json(&op, &reply)?))
    }

    /// `DELETE /api/v1/pool/{domain}/release` with body `{subdomain}`: 200 or 202 (DNS clean-up
    /// pending), 404 → [`Error::NotFound`]. Sent once.
    pub async fn release(&self, domain: &str, subdomain: &str) -> Result<Released> {
        let op = format!("releasing {subdomain}.{domain}");
        let url = self.pool_url(domain, "release");
        let body = ReleaseRequest {
            subdomain: subdomain.to_owned(),
        };
        let reply: Reply = self
            .http
            .send(&op, false, |c| self.request(c.delete(&url)).json(&body))
            .await?;
        let reply = self.http.success(&op, reply)?;
        let freed: Freed = self.http.json(&op, &reply)?;
        Ok(Released {
            freed: freed.freed,
            dns_pending: reply.status == StatusCode::ACCEPTED,
        })
    }
}

/// 202 body of a pool commit: the allocation fields inline plus `warning`/`detail`.
#[derive(Deserialize)]
struct Pending {
    #[serde(default)]
    detail: String,
    #[serde(flatten)]
    allocation: Allocation,
}

/// Release body: `{"freed": {...}}` (202 adds `warning`/`detail`).
#[derive(Deserialize)]
struct Freed {
    freed: Allocation,
}

impl DnsControl for PdmClient {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn apply<'a>(&'a self, update: &'a DnsUpdate) -> BoxFuture<'a, Result<Applied>> {
        Box::pin(async move {
            update.validate()?;
            self.lua_commit(&update.to_lua_commit(), Some(update.epoch()))
                .await?;
            Ok(Applied {
                epoch: update.epoch(),
                previous_epoch: None,
                changed: update
                    .record_updates()
                    .iter()
                    .map(|r| r.hostname.clone())
                    .collect(),
            })
        })
    }

    fn published<'a>(
        &'a self,
        _zone: &'a str,
        _hostname: &'a str,
    ) -> BoxFuture<'a, Result<Option<Published>>> {
        Box::pin(async {
            Err(Error::Unsupported {
                backend: BACKEND,
                op: "reading LUA records",
            })
        })
    }
}
