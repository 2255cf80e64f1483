//! The port continuum-controller calls: [`DnsControl`], with the fenced [`DnsUpdate`] it takes.
//!
//! Both backends ([`crate::powerdns::PowerDnsBackend`], [`crate::pdm::PdmClient`]) implement it.
//! The trait is object-safe (`Arc<dyn DnsControl>`): its methods return boxed futures.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::lua::{LuaBody, Rendered};
use crate::model::{FenceComment, LuaCommit, LuaCommitRecord};

/// A boxed, `Send` future (what the object-safe trait methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The fencing token of a write: the witness lease's `epoch` (`contract::lease::LeaseState`).
/// A backend refuses to replace a record written with a higher one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl From<u64> for Epoch {
    fn from(value: u64) -> Self {
        Epoch(value)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One LUA record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordUpdate {
    /// Lower-case FQDN without the trailing dot, inside the update's zone.
    pub hostname: String,
    /// The body ([`crate::lua::render`] is the only way to make one).
    pub body: LuaBody,
    /// DNS TTL in seconds.
    pub ttl: u32,
    /// The region the body points at first.
    pub primary_region: String,
}

/// A fenced change: replace the LUA records of some hostnames of one zone, all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsUpdate {
    zone: String,
    epoch: Epoch,
    writer: String,
    records: Vec<RecordUpdate>,
}

impl DnsUpdate {
    /// An update of `zone` (trailing dot optional) carrying `epoch`, with no records yet.
    pub fn new(zone: &str, epoch: impl Into<Epoch>) -> Self {
        Self {
            zone: normalise(zone),
            epoch: epoch.into(),
            writer: "pdm-client".to_owned(),
            records: Vec::new(),
        }
    }

    /// Names the writer (e.g. the controller's region) in the fence comment.
    pub fn writer(mut self, writer: impl Into<String>) -> Self {
        self.writer = writer.into();
        self
    }

    /// Adds (or replaces) the record of `hostname` with `rendered`.
    pub fn record(mut self, hostname: &str, rendered: &Rendered) -> Self {
        let hostname = normalise(hostname);
        self.records.retain(|r| r.hostname != hostname);
        self.records.push(RecordUpdate {
            hostname,
            body: rendered.body.clone(),
            ttl: rendered.ttl,
            primary_region: rendered.primary_region.clone(),
        });
        self.records.sort_by(|a, b| a.hostname.cmp(&b.hostname));
        self
    }

    /// Adds the same rendered record for every hostname (upstream: one body for all names).
    pub fn records<I, S>(self, hostnames: I, rendered: &Rendered) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        hostnames
            .into_iter()
            .fold(self, |u, h| u.record(h.as_ref(), rendered))
    }

    /// The zone, lower-case, without the trailing dot.
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The fencing epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The writer named in the fence comment.
    pub fn writer_name(&self) -> &str {
        &self.writer
    }

    /// The records, sorted by hostname.
    pub fn record_updates(&self) -> &[RecordUpdate] {
        &self.records
    }

    /// The fence comment written with `record`.
    pub fn fence(&self, record: &RecordUpdate) -> FenceComment {
        FenceComment {
            epoch: self.epoch.0,
            writer: self.writer.clone(),
            primary: record.primary_region.clone(),
        }
    }

    /// Checks the update before anything is sent: a valid zone, at least one record, every
    /// hostname a valid name inside the zone.
    pub fn validate(&self) -> Result<()> {
        check_name(&self.zone).map_err(|e| Error::InvalidUpdate(format!("zone: {e}")))?;
        if self.records.is_empty() {
            return Err(Error::InvalidUpdate(format!(
                "no records for zone {}",
                self.zone
            )));
        }
        for r in &self.records {
            check_name(&r.hostname).map_err(|e| Error::InvalidUpdate(format!("hostname: {e}")))?;
            if !in_zone(&r.hostname, &self.zone) {
                return Err(Error::InvalidUpdate(format!(
                    "hostname {} is outside zone {}",
                    r.hostname, self.zone
                )));
            }
        }
        Ok(())
    }

    /// Upstream's PDM wire body (`{zone, records:[{hostname, luaBody, ttl, primaryRegion}]}`,
    /// records sorted by hostname).
    pub fn to_lua_commit(&self) -> LuaCommit {
        LuaCommit {
            zone: self.zone.clone(),
            records: self
                .records
                .iter()
                .map(|r| LuaCommitRecord {
                    hostname: r.hostname.clone(),
                    lua_body: r.body.as_str().to_owned(),
                    ttl: r.ttl,
                    primary_region: r.primary_region.clone(),
                })
                .collect(),
        }
    }
}

/// What [`DnsControl::apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The epoch written.
    pub epoch: Epoch,
    /// Highest epoch found on the records before the write (`None`: none, or not readable).
    pub previous_epoch: Option<u64>,
    /// Hostnames whose content or TTL changed (every hostname when the backend cannot tell).
    pub changed: Vec<String>,
}

/// A LUA RRset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The record name (no trailing dot).
    pub hostname: String,
    /// RRset contents, e.g. `A "ifurlup(…)"`.
    pub contents: Vec<String>,
    /// TTL in seconds.
    pub ttl: u32,
    /// Our fence comment with the highest epoch, if any.
    pub fence: Option<FenceComment>,
}

impl Published {
    /// The Lua code of a single `A "…"` content.
    pub fn body(&self) -> Option<&str> {
        match self.contents.as_slice() {
            [one] => one.strip_prefix("A \"")?.strip_suffix('"'),
            _ => None,
        }
    }
}

/// DNS control as continuum-controller uses it. Every write carries an [`Epoch`].
pub trait DnsControl: Send + Sync {
    /// `powerdns` or `pdm`.
    fn backend(&self) -> &'static str;

    /// Replaces the LUA records of `update` atomically, unless a stored record carries a higher
    /// epoch ([`Error::StaleEpoch`], nothing written). Safe to call again with the same update.
    fn apply<'a>(&'a self, update: &'a DnsUpdate) -> BoxFuture<'a, Result<Applied>>;

    /// The stored LUA record of `hostname` in `zone`, `None` if there is none.
    fn published<'a>(
        &'a self,
        zone: &'a str,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Option<Published>>>;
}

impl<T: DnsControl + ?Sized> DnsControl for Arc<T> {
    fn backend(&self) -> &'static str {
        (**self).backend()
    }

    fn apply<'a>(&'a self, update: &'a DnsUpdate) -> BoxFuture<'a, Result<Applied>> {
        (**self).apply(update)
    }

    fn published<'a>(
        &'a self,
        zone: &'a str,
        hostname: &'a str,
    ) -> BoxFuture<'a, Result<Option<Published>>> {
        (**self).published(zone, hostname)
    }
}

/// Upstream's default zone when a Continuum sets no `pdmZone`: the first hostname minus its first
/// label (`api.example.com` → `example.com`); `None` for a single-label name.
pub fn upstream_default_zone(hostname: &str) -> Option<String> {
    let name = normalise(hostname);
    let (_, rest) = name.split_once('.')?;
    (!rest.is_empty()).then(|| rest.to_owned())
}

/// Lower case, no trailing dot.
pub(crate) fn normalise(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `name.` for the PowerDNS API.
pub(crate) fn canonical(name: &str) -> String {
    format!("{}.", normalise(name))
}

fn in_zone(hostname: &str, zone: &str) -> bool {
    hostname == zone
        || hostname
            .strip_suffix(zone)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// A DNS name of letter/digit/hyphen/underscore labels (a leading `*` label allowed), at most 253
/// characters.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty name".into());
    }
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for (i, label) in name.split('.').enumerate() {
        let ok = !label.is_empty()
            && label.len() <= 63
            && ((i == 0 && label == "*")
                || (label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                    && !label.starts_with('-')
                    && !label.ends_with('-')));
        if !ok {
            return Err(format!("{name:?} has an invalid label {label:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lua::{Placement, PlacementSpec, RegionSpec, render};

    fn rendered() -> Rendered {
        render(
            &PlacementSpec::new(Placement::SingleRegion, "a")
                .region(RegionSpec::new("a", ["192.0.2.1"])),
        )
        .unwrap()
    }

    #[test]
    fn updates_normalise_and_sort_hostnames() {
        let u = DnsUpdate::new("Example.COM.", 3).records(
            ["web.example.com.", "API.example.com", "web.example.com"],
            &rendered(),
        );
        assert_eq!(u.zone(), "example.com");
        let names: Vec<_> = u.record_updates().iter().map(|r| &r.hostname).collect();
        assert_eq!(names, ["api.example.com", "web.example.com"]);
        u.validate().unwrap();
        let commit = serde_json::to_string(&u.to_lua_commit()).unwrap();
        assert!(commit.starts_with(r#"{"zone":"example.com","records":[{"hostname":"api.example.com","luaBody":"{'192.0.2.1'}","ttl":30,"primaryRegion":"a"}"#), "{commit}");
    }

    #[test]
    fn invalid_updates_are_refused_before_sending() {
        let r = rendered();
        let cases = [
            DnsUpdate::new("example.com", 1),
            DnsUpdate::new("example.com", 1).record("api.other.com", &r),
            DnsUpdate::new("example.com", 1).record("badexample.com", &r),
            DnsUpdate::new("example.com", 1).record("a b.example.com", &r),
            DnsUpdate::new("exa\"mple.com", 1).record("x.exa\"mple.com", &r),
            DnsUpdate::new("", 1).record("x", &r),
        ];
        for u in cases {
            assert!(
                matches!(u.validate(), Err(Error::InvalidUpdate(_))),
                "{u:?}"
            );
        }
        DnsUpdate::new("example.com", 1)
            .record("example.com", &r)
            .record("*.example.com", &r)
            .validate()
            .unwrap();
    }

    #[test]
    fn upstreams_default_zone_drops_the_first_label() {
        assert_eq!(
            upstream_default_zone("API.example.com.").as_deref(),
            Some("example.com")
        );
        assert_eq!(upstream_default_zone("localhost"), None);
    }

    #[test]
    fn published_body_strips_the_content_wrapper() {
        let p = Published {
            hostname: "a".into(),
            contents: vec!["A \"{'192.0.2.1'}\"".into()],
            ttl: 30,
            fence: None,
        };
        assert_eq!(p.body(), Some("{'192.0.2.1'}"));
    }
}
