//! [`PowerDnsBackend`]: the PowerDNS Authoritative HTTP API (`X-API-Key`), fenced by epoch.
//!
//! # A fenced write ([`DnsControl::apply`])
//!
//! 1. Validate the update (nothing is sent for a bad one); ensure the zone exists (optional).
//! 2. Read the stored LUA RRset of every hostname, concurrently
//!    (`GET /zones/{zone}?rrset_name=…&rrset_type=LUA`), and the highest epoch in its fence
//!    comments ([`FenceComment`]). If any is higher than the update's epoch:
//!    [`Error::StaleEpoch`], nothing written. A record without a fence comment (new, or written
//!    by hand) counts as epoch 0. If these reads took longer than the fencing grace, read again.
//! 3. One `PATCH /zones/{zone}` with a `REPLACE` per hostname carrying the records *and* the
//!    fence comment: PowerDNS applies all RRsets of a PATCH in one backend transaction, so the
//!    names flip together and a record is never stored without its epoch.
//! 4. Read every RRset back, and once more after the fencing grace
//!    ([`PowerDnsConfig::fence_grace`], default 250 ms). Our content and epoch → done. A higher
//!    epoch → [`Error::Superseded`]. A lower epoch → a stale writer replaced our write; we hold
//!    the higher epoch, so we write again (back to 2), at most [`FENCE_ROUNDS`] rounds.
//!
//! The DNS answer changes at step 3; the grace only delays the return of `apply`.
//!
//! # The residual window
//!
//! PowerDNS 4.7's API has no conditional write (no `If-Match`, no compare-and-set on RRsets or
//! comments), so the check (2) and the write (3) are separate requests. A stale writer (epoch
//! `n`) whose check ran before a newer writer's PATCH (epoch `m > n`) will still PATCH, and
//! overwrite the newer record. The grace bounds that: the stale writer sends its PATCH within
//! the grace of its check, and the newer writer reads back again one grace after its own PATCH,
//! sees the lower epoch and writes again. What remains: a stale PATCH that reaches PowerDNS
//! later than that (delayed in the network or in the server's queue for about a grace, or sent
//! by a writer that does not follow this protocol, e.g. an old pdm-client or a human). Such a
//! record stays until the newer writer's next `apply` (the controller re-applies on every
//! reconcile; a stale writer has already lost its lease and should be self-fencing).
//! `tests/powerdns.rs` races simultaneous stale and newer writers against a real PowerDNS and
//! prints how often each case happens. Closing the window needs a compare-and-set the API does
//! not offer, or a single writer that checks the epoch under a lock (a fencing-aware PDM).
//!
//! # Retries
//!
//! GETs are retried on transport errors, timeouts and 5xx. A PATCH is never re-sent blindly; a
//! transient failure re-runs the fenced sequence from step 2 (the REPLACE for a given epoch is
//! idempotent), at most [`FENCE_ROUNDS`] times. Zone creation (POST) is sent once; a 409 means
//! another writer created it and is accepted.

use std::time::Duration;

use futures_util::future::try_join_all;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use tokio::time::Instant;
use tracing::{debug, info, instrument, warn};

use crate::control::{
    Applied, BoxFuture, DnsControl, DnsUpdate, Published, RecordUpdate, canonical, check_name,
    normalise,
};
use crate::error::{Error, Result};
use crate::http::Http;
use crate::model::{ChangeType, Comment, FenceComment, Record, RrSet, Zone, ZonePatch};

const BACKEND: &str = "powerdns";
/// Header carrying the API key.
pub const API_KEY_HEADER: &str = "X-API-Key";
/// Fenced write rounds (read → patch → read back) before giving up.
pub const FENCE_ROUNDS: u32 = 3;
/// Default [`PowerDnsConfig::fence_grace`].
pub const DEFAULT_FENCE_GRACE: Duration = Duration::from_millis(250);
/// Backoff between fenced rounds after a transient failure.
const ROUND_BACKOFF: Duration = Duration::from_millis(200);

/// Where and how to reach PowerDNS.
#[derive(Debug, Clone)]
pub struct PowerDnsConfig {
    /// Webserver root, e.g. `http://127.0.0.1:8081` (the API lives under `/api/v1`).
    pub api_url: String,
    /// Sent as `X-API-Key`.
    pub api_key: String,
    /// PowerDNS server id; `localhost` for the server answering the API.
    pub server_id: String,
    /// Per-request timeout (connect + send + read).
    pub timeout: Duration,
    /// Create a missing zone (Native, SOA + NS) before writing.
    pub ensure_zone: bool,
    /// NS names for a created zone; empty = `ns1.<zone>`.
    pub nameservers: Vec<String>,
    /// Fencing grace (see the module docs): a PATCH is only sent within this time of the read
    /// that checked the epoch, and a successful write is read back again after it. Zero turns
    /// both off (faster `apply`, wider race window).
    pub fence_grace: Duration,
}

impl PowerDnsConfig {
    /// Defaults: server `localhost`, 5 s timeout, zones ensured, NS `ns1.<zone>`, fencing grace
    /// [`DEFAULT_FENCE_GRACE`].
    pub fn new(api_url: impl Into<String>, api_key: impl Into<String>) -> Self {
        Self {
            api_url: api_url.into(),
            api_key: api_key.into(),
            server_id: "localhost".into(),
            timeout: Duration::from_secs(5),
            ensure_zone: true,
            nameservers: Vec::new(),
            fence_grace: DEFAULT_FENCE_GRACE,
        }
    }
}

/// PowerDNS Authoritative API client implementing [`DnsControl`].
#[derive(Debug, Clone)]
pub struct PowerDnsBackend {
    http: Http,
    config: PowerDnsConfig,
    server_url: String,
}

impl PowerDnsBackend {
    /// A client for `config`; nothing is sent yet.
    pub fn new(config: PowerDnsConfig) -> Result<Self> {
        let base = url::Url::parse(&config.api_url)
            .map_err(|e| Error::Config(format!("PowerDNS API URL {:?}: {e}", config.api_url)))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "PowerDNS API URL {:?}: scheme must be http or https",
                config.api_url
            )));
        }
        if config.api_key.is_empty() {
            return Err(Error::Config("PowerDNS API key is empty".into()));
        }
        let server_url = format!(
            "{}/api/v1/servers/{}",
            config.api_url.trim_end_matches('/'),
            segment(&config.server_id)
        );
        Ok(Self {
            http: Http::new(BACKEND, config.timeout)?,
            config,
            server_url,
        })
    }

    fn zone_url(&self, zone: &str) -> String {
        format!("{}/zones/{}", self.server_url, segment(&canonical(zone)))
    }

    /// Creates `zone` (Native, explicit SOA, NS from the config) unless it exists.
    /// Returns true if this call created it.
    #[instrument(skip(self))]
    pub async fn ensure_zone(&self, zone: &str) -> Result<bool> {
        check_name(&normalise(zone)).map_err(|e| Error::InvalidUpdate(format!("zone: {e}")))?;
        let op = format!("reading zone {zone}");
        let url = format!("{}?rrsets=false", self.zone_url(zone));
        let reply = self
            .http
            .send(&op, true, |c| {
                c.get(&url).header(API_KEY_HEADER, &self.config.api_key)
            })
            .await?;
        // 4.7 answers 404 for an unknown zone; some versions use 422.
        match reply.status {
            s if s.is_success() => return Ok(false),
            StatusCode::NOT_FOUND | StatusCode::UNPROCESSABLE_ENTITY => {}
            _ => return Err(self.http.status_error(&op, reply)),
        }
        let name = canonical(zone);
        let nameservers = if self.config.nameservers.is_empty() {
            vec![format!("ns1.{name}")]
        } else {
            self.config
                .nameservers
                .iter()
                .map(|n| canonical(n))
                .collect()
        };
        let soa = RrSet {
            name: name.clone(),
            rtype: "SOA".into(),
            ttl: Some(60),
            changetype: None,
            records: vec![Record {
                content: format!(
                    "{} hostmaster.{name} 1 10800 3600 604800 60",
                    nameservers[0]
                ),
                disabled: false,
            }],
            comments: vec![],
        };
        let body = Zone {
            name,
            kind: "Native".into(),
            nameservers,
            rrsets: vec![soa],
        };
        let op = format!("creating zone {zone}");
        let url = format!("{}/zones", self.server_url);
        let reply = self
            .http
            .send(&op, false, |c| {
                c.post(&url)
                    .header(API_KEY_HEADER, &self.config.api_key)
                    .json(&body)
            })
            .await?;
        match reply.status {
            s if s.is_success() => {
                info!(zone, "created zone");
                Ok(true)
            }
            StatusCode::CONFLICT => Ok(false),
            _ => Err(self.http.status_error(&op, reply)),
        }
    }

    /// The stored LUA RRset of `hostname` in `zone`.
    pub async fn read_lua(&self, zone: &str, hostname: &str) -> Result<Option<Published>> {
        let name = canonical(hostname);
        let op = format!("reading LUA {name}");
        let url = format!(
            "{}?rrset_name={}&rrset_type=LUA",
            self.zone_url(zone),
            segment(&name)
        );
        let reply = self
            .http
            .send(&op, true, |c| {
                c.get(&url).header(API_KEY_HEADER, &self.config.api_key)
            })
            .await?;
        let reply = self.http.success(&op, reply)?;
        let zone: Zone = self.http.json(&op, &reply)?;
        // Versions without the rrset filter return every RRset; filter here as well.
        Ok(zone
            .rrsets
            .into_iter()
            .find(|r| r.rtype == "LUA" && r.name.eq_ignore_ascii_case(&name))
            .map(|r| Published {
                hostname: normalise(&r.name),
                contents: r.records.into_iter().map(|rec| rec.content).collect(),
                ttl: r.ttl.unwrap_or_default(),
                fence: FenceComment::highest(&r.comments),
            }))
    }

    /// Deletes the LUA RRset of `hostname` (unfenced; for operators and tests).
    pub async fn delete_lua(&self, zone: &str, hostname: &str) -> Result<()> {
        let patch = ZonePatch {
            rrsets: vec![RrSet {
                name: canonical(hostname),
                rtype: "LUA".into(),
                changetype: Some(ChangeType::Delete),
                ..RrSet::default()
            }],
        };
        self.patch(zone, &patch).await
    }

    async fn patch(&self, zone: &str, patch: &ZonePatch) -> Result<()> {
        let op = format!("patching zone {}", normalise(zone));
        let url = self.zone_url(zone);
        let reply = self
            .http
            .send(&op, false, |c| {
                c.patch(&url)
                    .header(API_KEY_HEADER, &self.config.api_key)
                    .json(patch)
            })
            .await?;
        self.http.success(&op, reply).map(|_| ())
    }

    /// Reads the stored LUA RRset of every record of `update`, concurrently.
    async fn read_all(&self, update: &DnsUpdate) -> Result<Vec<Option<Published>>> {
        try_join_all(
            update
                .record_updates()
                .iter()
                .map(|r| self.read_lua(update.zone(), &r.hostname)),
        )
        .await
    }

    /// One fenced round: read + check, PATCH, read back.
    async fn round(&self, update: &DnsUpdate) -> Result<Round> {
        let ours = update.epoch().0;
        let read_at = Instant::now();
        let stored = self.read_all(update).await?;
        let mut previous: Option<u64> = None;
        let mut changed = Vec::new();
        for (r, stored) in update.record_updates().iter().zip(&stored) {
            let stored_epoch = stored
                .as_ref()
                .and_then(|p| p.fence.as_ref())
                .map(|f| f.epoch);
            if let Some(stored_epoch) = stored_epoch {
                previous = previous.max(Some(stored_epoch));
                if stored_epoch > ours {
                    return Err(Error::StaleEpoch {
                        hostname: r.hostname.clone(),
                        stored: stored_epoch,
                        attempted: ours,
                    });
                }
            }
            if !matches_record(stored.as_ref(), r) {
                changed.push(r.hostname.clone());
            }
        }
        // A check older than the grace may no longer hold; read again rather than PATCH on it.
        // This bounds how late after its read our PATCH can be sent, which is what lets a newer
        // writer's re-check (below) catch us if we turn out to be the stale one.
        if !self.config.fence_grace.is_zero() && read_at.elapsed() > self.config.fence_grace {
            return Ok(Round::Again("the fence check took longer than the grace"));
        }
        let patch = ZonePatch {
            rrsets: update
                .record_updates()
                .iter()
                .map(|r| RrSet {
                    name: canonical(&r.hostname),
                    rtype: "LUA".into(),
                    ttl: Some(r.ttl),
                    changetype: Some(ChangeType::Replace),
                    records: vec![Record {
                        content: r.body.rrset_content(),
                        disabled: false,
                    }],
                    comments: vec![Comment {
                        content: update.fence(r).render(),
                        account: FenceComment::ACCOUNT.into(),
                        modified_at: None,
                    }],
                })
                .collect(),
        };
        self.patch(update.zone(), &patch).await?;
        if let Some(again) = self.read_back(update).await? {
            return Ok(Round::Again(again));
        }
        Ok(Round::Done(Applied {
            epoch: update.epoch(),
            previous_epoch: previous,
            changed,
        }))
    }

    /// Reads every record back. `Ok(None)`: ours, as written. `Ok(Some(why))`: a lower epoch
    /// replaced ours (write again). Errors: a higher epoch ([`Error::Superseded`]) or content that
    /// differs at our own epoch ([`Error::ReadBack`]).
    async fn read_back(&self, update: &DnsUpdate) -> Result<Option<&'static str>> {
        let ours = update.epoch().0;
        let back = self.read_all(update).await?;
        for (r, back) in update.record_updates().iter().zip(&back) {
            let back_epoch = back
                .as_ref()
                .and_then(|p| p.fence.as_ref())
                .map_or(0, |f| f.epoch);
            if back_epoch > ours {
                return Err(Error::Superseded {
                    hostname: r.hostname.clone(),
                    stored: back_epoch,
                    attempted: ours,
                });
            }
            if back_epoch < ours {
                warn!(hostname = %r.hostname, back_epoch, ours, "a stale writer replaced our record; writing again");
                return Ok(Some("a lower epoch replaced the record"));
            }
            if !matches_record(back.as_ref(), r) {
                return Err(Error::ReadBack {
                    hostname: r.hostname.clone(),
                    detail: format!(
                        "stored {:?} ttl {:?}, wrote {:?} ttl {}",
                        back.as_ref().map(|b| &b.contents),
                        back.as_ref().map(|b| b.ttl),
                        r.body.rrset_content(),
                        r.ttl
                    ),
                });
            }
        }
        Ok(None)
    }

    #[instrument(skip(self, update), fields(zone = update.zone(), epoch = update.epoch().0))]
    async fn apply_fenced(&self, update: &DnsUpdate) -> Result<Applied> {
        update.validate()?;
        if self.config.ensure_zone {
            self.ensure_zone(update.zone()).await?;
        }
        let grace = self.config.fence_grace;
        let mut round = 1;
        loop {
            let why = match self.round(update).await {
                Ok(Round::Done(applied)) => {
                    // Re-check once the grace has passed: a stale writer that read before our
                    // PATCH sends its own within the grace, so it has landed by now.
                    if !grace.is_zero() {
                        tokio::time::sleep(grace).await;
                        match self.read_back(update).await {
                            Ok(None) => {}
                            Ok(Some(why)) if round < FENCE_ROUNDS => {
                                round += 1;
                                debug!(round, why, "fenced write round");
                                continue;
                            }
                            Ok(Some(why)) => return Err(self.gave_up(update, why)),
                            Err(e) => return Err(e),
                        }
                    }
                    info!(changed = ?applied.changed, previous = ?applied.previous_epoch, "LUA records written");
                    return Ok(applied);
                }
                Ok(Round::Again(why)) => why,
                Err(e) if e.is_transient() => {
                    if round >= FENCE_ROUNDS {
                        return Err(e);
                    }
                    warn!(error = %e, round, "transient failure; re-running the fenced write");
                    tokio::time::sleep(ROUND_BACKOFF).await;
                    "transient failure"
                }
                Err(e) => return Err(e),
            };
            if round >= FENCE_ROUNDS {
                return Err(self.gave_up(update, why));
            }
            round += 1;
            debug!(round, why, "fenced write round");
        }
    }

    fn gave_up(&self, update: &DnsUpdate, why: &str) -> Error {
        Error::ReadBack {
            hostname: update
                .record_updates()
                .first()
                .map(|r| r.hostname.clone())
                .unwrap_or_default(),
            detail: format!("gave up after {FENCE_ROUNDS} fenced rounds: {why}"),
        }
    }
}

enum Round {
    Done(Applied),
    /// Run the fenced sequence again, for this reason.
    Again(&'static str),
}

/// True when the stored RRset holds exactly `r`'s content and TTL.
fn matches_record(stored: Option<&Published>, r: &RecordUpdate) -> bool {
    stored.is_some_and(|p| p.contents == [r.body.rrset_content()] && p.ttl == r.ttl)
}

/// One URL path segment or query value, percent-encoded.
fn segment(s: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet =
        &NON_ALPHANUMERIC.remove(b'.').remove(b'-').remove(b'_');
    utf8_percent_encode(s, KEEP).to_string()
}

impl DnsControl for PowerDnsBackend {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn apply<'a>(&'a self, update: &'a DnsUpdate) -> BoxFuture<'a, Result<Applied>> {
        Box::pin(self.apply_fenced(update))
    }

    fn published<'a>(
        &'a self,
        zone: &'a str,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Option<Published>>> {
        Box::pin(self.read_lua(zone, hostname))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_reported_before_any_request() {
        assert!(matches!(
            PowerDnsBackend::new(PowerDnsConfig::new("ftp://x", "k")),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            PowerDnsBackend::new(PowerDnsConfig::new("http://127.0.0.1:1", "")),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn zone_urls_are_canonical_and_encoded() {
        let b = PowerDnsBackend::new(PowerDnsConfig::new("http://127.0.0.1:8081/", "k")).unwrap();
        assert_eq!(
            b.zone_url("Example.com"),
            "http://127.0.0.1:8081/api/v1/servers/localhost/zones/example.com."
        );
        assert_eq!(segment("a b/c"), "a%20b%2Fc");
    }
}
