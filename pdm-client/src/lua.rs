//! PURE: PowerDNS LUA-record bodies for every placement.
//!
//! No I/O, no clock, no env: a [`PlacementSpec`] goes in, a [`Rendered`] record (body, TTL, the
//! answers to expect) comes out, or a [`LuaError`] naming the bad input. Every body is valid on
//! PowerDNS Authoritative 4.7 (proven by `tests/powerdns.rs` against the real server) and
//! survives the RRset content form `A "<body>"`.
//!
//! # Bodies
//!
//! | placement | body (HTTP probe) | body (TCP probe) |
//! |---|---|---|
//! | single-region | `{'ip', …}` (static answers, no checks) | same |
//! | active-active | `ifurlup(url, {all ips}, {selector='all', …})` | `ifportup(port, {all ips}, {selector='all', …})` |
//! | active-hotstandby | `ifurlup(url, {{primary ips}, {other ips}}, {selector='all', …})` | `;`-snippet over `ifportup` (below) |
//! | active-passive-warm | as active-hotstandby, default TTL 300 s | as active-hotstandby |
//! | weighted-canary | `pickwhashed({{w, 'ip'}, …})` (no checks) | same |
//!
//! Address order: the primary region's addresses as given, then the other regions sorted by name
//! (upstream's `internal/dns/lua.go`). Options are written `{selector='…', interval=N,
//! timeout=N}`.
//!
//! # Deliberate differences from upstream's golden bodies
//!
//! Upstream renders active-hotstandby as
//! `ifurlup("<url>", {{"5.1.2.3", "5.1.2.4"}, {"5.5.6.7"}}, {selector="pickfirst", interval=5, timeout=2})`.
//! Everything but two details is reproduced byte for byte (`tests/lua_golden.rs`):
//!
//! 1. **Single quotes.** PowerDNS stores a LUA record as `A "<code>"` and, when it runs the code,
//!    splits the content on every `"` (`LUARecordContent::getCode`), so a double-quoted Lua string
//!    turns into `ifurlup(\ http://…\ …` and the query answers SERVFAIL (`unexpected symbol near
//!    '\'`, seen on 4.7.3). Single-quoted Lua strings need no escaping at all.
//! 2. **`selector='all'`, not `'pickfirst'`.** PowerDNS 4.7 has no `pickfirst` selector: it logs
//!    "unknown selector" on every query and answers at random. The ordered sets already give
//!    "first group with a healthy address wins"; `all` then answers every healthy address of that
//!    group, which is deterministic and gives clients every primary load balancer.
//!
//! `interval=N` is kept: 4.7 ignores it (the server-wide `lua-health-checks-interval` applies;
//! measured) and PowerDNS ≥ 4.9 honours it per check. Numbers are valid option values (PowerDNS
//! reads the options table as strings and Lua converts numbers; a `timeout=1` against a 2 s
//! backend marks it down and `timeout=3` marks it up, measured on 4.7.3).
//!
//! Upstream's probe-URL rewrite (`probe-<site>` as the first host label) is available as
//! [`upstream_probe_url`], but [`render`] uses the URL it is given: PowerDNS keys its health checks
//! by (address, URL, options), so a URL that changes with the primary registers new checks on
//! every flip, and until they have run PowerDNS treats every address as down and answers at
//! random (`backupSelector`). Measured on 4.7.3 (`tests/powerdns.rs`): after a flip with a
//! per-primary URL the answer was right three times in a row after 0.05-0.95 s (up to one check
//! interval), with a stable URL right at once after 15-65 ms. Keep the URL (and the options) stable across primaries.
//!
//! # Ordered groups with a TCP probe
//!
//! `ifportup` takes a flat list only, so active-hotstandby with a TCP probe is a short Lua snippet
//! (content starting with `;` is run as-is): check every address with `selector='all'`, answer the
//! healthy primary addresses if there are any, otherwise every healthy address. When every check
//! fails both forms fall back to PowerDNS's `backupSelector` (random over all addresses).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// Default DNS TTL in seconds (upstream's `SynthParams.TTL`).
pub const DEFAULT_TTL: u32 = 30;
/// Default TTL of active-passive-warm: a warm standby needs minutes to take load, so clients may
/// keep an answer longer.
pub const WARM_TTL: u32 = 300;
/// Default health-check interval in seconds (upstream and the CRD default).
pub const DEFAULT_INTERVAL_SECS: u32 = 5;
/// Default health-check timeout in seconds (upstream, the CRD and PowerDNS default).
pub const DEFAULT_TIMEOUT_SECS: u32 = 2;
/// Longest TTL accepted (one day): a longer one would pin clients to a dead region.
pub const MAX_TTL: u32 = 86_400;

/// How traffic is spread over the regions (upstream `docs/MULTI-REGION-DNS.md` §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Placement {
    /// One region: its addresses as static answers.
    SingleRegion,
    /// Every healthy address of every region (or the closest one, see [`PlacementSpec::closest`]).
    ActiveActive,
    /// The healthy primary addresses; the other regions only when no primary address is healthy.
    ActiveHotStandby,
    /// As [`Placement::ActiveHotStandby`] with a longer default TTL ([`WARM_TTL`]).
    ActivePassiveWarm,
    /// Weighted answers, stable per client address (`pickwhashed`); no health checks.
    WeightedCanary,
}

impl Placement {
    /// Every placement, in documentation order.
    pub const ALL: [Placement; 5] = [
        Placement::SingleRegion,
        Placement::ActiveActive,
        Placement::ActiveHotStandby,
        Placement::ActivePassiveWarm,
        Placement::WeightedCanary,
    ];

    /// The name used by upstream's Application `spec.placement`.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::SingleRegion => "single-region",
            Placement::ActiveActive => "active-active",
            Placement::ActiveHotStandby => "active-hotstandby",
            Placement::ActivePassiveWarm => "active-passive-warm",
            Placement::WeightedCanary => "weighted-canary",
        }
    }

    /// TTL used when the spec sets none.
    pub fn default_ttl(self) -> u32 {
        match self {
            Placement::ActivePassiveWarm => WARM_TTL,
            _ => DEFAULT_TTL,
        }
    }

    /// Whether the body runs health checks (and so needs a [`Probe`]).
    pub fn needs_probe(self) -> bool {
        matches!(
            self,
            Placement::ActiveActive | Placement::ActiveHotStandby | Placement::ActivePassiveWarm
        )
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Placement {
    type Err = LuaError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Placement::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| LuaError::UnknownPlacement(s.to_owned()))
    }
}

/// How PowerDNS checks an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `ifurlup`: an HTTP(S) GET of this URL against each address must answer 200. The URL's host
    /// is only the `Host`/SNI name; the connection goes to the address being checked.
    Url(String),
    /// `ifportup`: a TCP connect to this port on each address must succeed.
    TcpPort(u16),
}

/// One region and its load-balancer addresses, as in the Continuum CR's `regions[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSpec {
    /// Region name, e.g. `hz-fsn-rtz-prod`.
    pub name: String,
    /// IPv4 addresses as written in the CR; parsed and checked by [`render`].
    pub lb_ips: Vec<String>,
    /// weighted-canary only: weight of *each* of this region's addresses (0 = never answered).
    pub weight: Option<u32>,
}

impl RegionSpec {
    /// A region with its addresses and no weight.
    pub fn new<I, S>(name: impl Into<String>, lb_ips: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            lb_ips: lb_ips.into_iter().map(Into::into).collect(),
            weight: None,
        }
    }

    /// Sets the weighted-canary weight of each of this region's addresses.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }
}

/// Everything a LUA body depends on. Build it with [`PlacementSpec::new`] and the setters, or as
/// a struct literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementSpec {
    /// How traffic is spread.
    pub placement: Placement,
    /// The regions; order does not matter (the body orders them).
    pub regions: Vec<RegionSpec>,
    /// The region whose addresses come first; must be one of `regions`.
    pub primary: String,
    /// Health check; required by the placements whose [`Placement::needs_probe`] is true, ignored
    /// by the others.
    pub probe: Option<Probe>,
    /// Seconds between checks (1..=60), written as the `interval` option.
    pub interval_secs: u32,
    /// Seconds before a check fails (1..=30), written as the `timeout` option.
    pub timeout_secs: u32,
    /// DNS TTL (1..=[`MAX_TTL`]); `None` = [`Placement::default_ttl`].
    pub ttl: Option<u32>,
    /// active-active only: answer the single closest healthy address (`selector='pickclosest'`,
    /// needs PowerDNS's GeoIP backend for real distances) instead of every healthy one.
    pub closest: bool,
}

impl PlacementSpec {
    /// A spec with no regions yet, no probe, the default interval, timeout and TTL.
    pub fn new(placement: Placement, primary: impl Into<String>) -> Self {
        Self {
            placement,
            regions: Vec::new(),
            primary: primary.into(),
            probe: None,
            interval_secs: DEFAULT_INTERVAL_SECS,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            ttl: None,
            closest: false,
        }
    }

    /// Adds a region.
    pub fn region(mut self, region: RegionSpec) -> Self {
        self.regions.push(region);
        self
    }

    /// Checks every address with an HTTP(S) GET of `url`.
    pub fn probe_url(mut self, url: impl Into<String>) -> Self {
        self.probe = Some(Probe::Url(url.into()));
        self
    }

    /// Checks every address with a TCP connect to `port`.
    pub fn probe_port(mut self, port: u16) -> Self {
        self.probe = Some(Probe::TcpPort(port));
        self
    }

    /// Sets the check interval and timeout in seconds.
    pub fn timing(mut self, interval_secs: u32, timeout_secs: u32) -> Self {
        self.interval_secs = interval_secs;
        self.timeout_secs = timeout_secs;
        self
    }

    /// Sets the DNS TTL.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// active-active: answer the closest healthy address only.
    pub fn closest(mut self) -> Self {
        self.closest = true;
        self
    }

    /// The same spec with another primary (the flip target).
    pub fn with_primary(&self, primary: impl Into<String>) -> Self {
        Self {
            primary: primary.into(),
            ..self.clone()
        }
    }
}

/// A LUA record body: Lua code that only ever contains single-quoted strings, so it can be
/// wrapped as `A "<body>"` unchanged. Only [`render`] makes one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LuaBody(String);

impl LuaBody {
    /// The Lua code (what upstream's PDM wire calls `luaBody`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The PowerDNS RRset content of a `LUA` record answering `A` queries: `A "<body>"`.
    pub fn rrset_content(&self) -> String {
        format!("A \"{}\"", self.0)
    }
}

impl fmt::Display for LuaBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A rendered record: the body plus what a caller needs to publish and verify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The placement it was rendered for.
    pub placement: Placement,
    /// The body.
    pub body: LuaBody,
    /// DNS TTL in seconds.
    pub ttl: u32,
    /// The primary region (PDM wire field `primaryRegion`).
    pub primary_region: String,
    /// The exact answer while every checked address is healthy; `None` when the answer is one
    /// address chosen per client (weighted-canary, active-active closest).
    pub healthy_answer: Option<BTreeSet<Ipv4Addr>>,
    /// The answer while every primary address fails its check and the others are healthy
    /// (hot-standby and warm); `None` for the other placements.
    pub failover_answer: Option<BTreeSet<Ipv4Addr>>,
    /// Every address the body can answer.
    pub all_addresses: BTreeSet<Ipv4Addr>,
}

/// Why a spec cannot be rendered. Nothing is written when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LuaError {
    /// The placement name is not one of [`Placement::ALL`].
    #[error(
        "unknown placement {0:?} (expected single-region, active-active, active-hotstandby, active-passive-warm or weighted-canary)"
    )]
    UnknownPlacement(String),
    /// `regions` is empty.
    #[error("no regions given")]
    NoRegions,
    /// A region has an empty name.
    #[error("a region has an empty name")]
    EmptyRegionName,
    /// Two regions share a name.
    #[error("region {0:?} is listed twice")]
    DuplicateRegion(String),
    /// A region has no addresses.
    #[error("region {region:?} has no load-balancer addresses")]
    EmptyRegion {
        /// The region.
        region: String,
    },
    /// An address is not a usable IPv4 unicast address.
    #[error("region {region:?}: invalid address {value:?}: {reason}")]
    InvalidIp {
        /// The region.
        region: String,
        /// The address as given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The same address is listed twice (in one region or in two).
    #[error("address {ip} is listed in region {first:?} and again in {second:?}")]
    DuplicateIp {
        /// The address.
        ip: Ipv4Addr,
        /// The region that listed it first.
        first: String,
        /// The region that listed it again.
        second: String,
    },
    /// The primary is not one of the regions.
    #[error("primary region {primary:?} is not one of the regions {known:?}")]
    UnknownPrimary {
        /// The primary asked for.
        primary: String,
        /// The regions given.
        known: Vec<String>,
    },
    /// The placement runs health checks but no probe was given.
    #[error("placement {0} needs a probe (URL or TCP port)")]
    MissingProbe(Placement),
    /// The probe URL is unusable.
    #[error("invalid probe URL {url:?}: {reason}")]
    InvalidProbeUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// TCP probe port 0.
    #[error("probe port 0 is not a port")]
    InvalidProbePort,
    /// Interval outside 1..=60 s.
    #[error("check interval {0} s is outside 1..=60 s")]
    InvalidInterval(u32),
    /// Timeout outside 1..=30 s.
    #[error("check timeout {0} s is outside 1..=30 s")]
    InvalidTimeout(u32),
    /// TTL outside 1..=[`MAX_TTL`].
    #[error("TTL {0} s is outside 1..=86400 s")]
    InvalidTtl(u32),
    /// weighted-canary: a region has no weight.
    #[error("weighted-canary: region {0:?} has no weight")]
    MissingWeight(String),
    /// weighted-canary: every weight is 0 (PowerDNS throws on a zero sum).
    #[error("weighted-canary: the weights sum to 0")]
    ZeroTotalWeight,
    /// weighted-canary: the weights sum past what PowerDNS adds up in a C `int`.
    #[error("weighted-canary: the weights sum past {}", i32::MAX)]
    WeightTooLarge,
}

/// Upstream's `regionLabel`: the second `-`-separated token (`hz-fsn-rtz-prod` → `fsn`), or the
/// whole name when it has no hyphen.
pub fn region_label(region: &str) -> &str {
    let mut parts = region.split('-');
    match (parts.next(), parts.next()) {
        (Some(_), Some(second)) => second,
        _ => region,
    }
}

/// Upstream's probe-URL rewrite (`internal/dns/lua.go`): a first host label `probe-<x>` becomes
/// `probe-<site of region>`, otherwise `probe-<site>.` is prepended; port and path are kept.
/// Compatibility helper only; see the module docs for why [`render`] does not apply it.
pub fn upstream_probe_url(url: &str, region: &str) -> Result<String, LuaError> {
    let mut parsed = parse_probe_url(url)?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let site = region_label(region);
    let new_host = match host.split_once('.') {
        Some((first, rest)) if first.starts_with("probe-") => format!("probe-{site}.{rest}"),
        _ if host.starts_with("probe-") && !host.contains('.') => format!("probe-{site}"),
        _ => format!("probe-{site}.{host}"),
    };
    parsed
        .set_host(Some(&new_host))
        .map_err(|e| LuaError::InvalidProbeUrl {
            url: url.to_owned(),
            reason: e.to_string(),
        })?;
    let out = parsed.to_string();
    check_lua_safe(&out)?;
    Ok(out)
}

/// Renders the LUA record for `spec`. See the module docs for the bodies.
pub fn render(spec: &PlacementSpec) -> Result<Rendered, LuaError> {
    let regions = checked_regions(spec)?;
    let ttl = spec.ttl.unwrap_or(spec.placement.default_ttl());
    if ttl == 0 || ttl > MAX_TTL {
        return Err(LuaError::InvalidTtl(ttl));
    }
    let probe = if spec.placement.needs_probe() {
        Some(checked_probe(spec)?)
    } else {
        None
    };
    let primary = &regions.primary;
    let all: Vec<Ipv4Addr> = regions.ordered().collect();
    let all_addresses: BTreeSet<Ipv4Addr> = all.iter().copied().collect();
    let primary_set: BTreeSet<Ipv4Addr> = primary.iter().copied().collect();
    let opts = |selector: &str| {
        format!(
            "{{selector='{selector}', interval={}, timeout={}}}",
            spec.interval_secs, spec.timeout_secs
        )
    };

    let (code, healthy_answer, failover_answer) = match spec.placement {
        Placement::SingleRegion => (list(primary), Some(primary_set), None),
        Placement::ActiveActive => {
            let selector = if spec.closest { "pickclosest" } else { "all" };
            let code = match probe {
                Some(CheckedProbe::Url(url)) => {
                    format!("ifurlup('{url}', {}, {})", list(&all), opts(selector))
                }
                Some(CheckedProbe::Port(port)) => {
                    format!("ifportup({port}, {}, {})", list(&all), opts(selector))
                }
                None => unreachable_probe(spec.placement)?,
            };
            let healthy = (!spec.closest).then(|| all_addresses.clone());
            (code, healthy, None)
        }
        Placement::ActiveHotStandby | Placement::ActivePassiveWarm => {
            let others = &regions.others;
            let code = match probe {
                Some(CheckedProbe::Url(url)) => {
                    let mut groups = vec![list(primary)];
                    if !others.is_empty() {
                        groups.push(list(others));
                    }
                    format!(
                        "ifurlup('{url}', {{{}}}, {})",
                        groups.join(", "),
                        opts("all")
                    )
                }
                Some(CheckedProbe::Port(port)) => {
                    let members: Vec<String> =
                        primary.iter().map(|ip| format!("['{ip}']=true")).collect();
                    format!(
                        ";local up = ifportup({port}, {}, {}) \
                         local primary = {{{}}} local r = {{}} \
                         for _, a in ipairs(up) do if primary[a] then r[#r+1] = a end end \
                         if #r > 0 then return r end return up",
                        list(&all),
                        opts("all"),
                        members.join(", ")
                    )
                }
                None => unreachable_probe(spec.placement)?,
            };
            let failover = (!others.is_empty()).then(|| others.iter().copied().collect());
            (code, Some(primary_set), failover)
        }
        Placement::WeightedCanary => (weighted(spec, &regions)?, None, None),
    };

    Ok(Rendered {
        placement: spec.placement,
        body: LuaBody(code),
        ttl,
        primary_region: spec.primary.clone(),
        healthy_answer,
        failover_answer,
        all_addresses,
    })
}

/// The body alone (DESIGN §4's `lua::body`).
pub fn body(spec: &PlacementSpec) -> Result<LuaBody, LuaError> {
    render(spec).map(|r| r.body)
}

// === impl render helpers ===

/// Regions after validation: the primary's addresses in the given order, then the other regions
/// sorted by name (with each region's addresses in the given order).
struct CheckedRegions {
    primary: Vec<Ipv4Addr>,
    others: Vec<Ipv4Addr>,
    /// Non-primary regions sorted by name, with their addresses and weight.
    other_regions: Vec<(String, Vec<Ipv4Addr>, Option<u32>)>,
    primary_weight: Option<u32>,
}

impl CheckedRegions {
    fn ordered(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.primary.iter().chain(self.others.iter()).copied()
    }
}

enum CheckedProbe<'a> {
    Url(&'a str),
    Port(u16),
}

fn checked_regions(spec: &PlacementSpec) -> Result<CheckedRegions, LuaError> {
    if spec.regions.is_empty() {
        return Err(LuaError::NoRegions);
    }
    let mut by_name: BTreeMap<&str, &RegionSpec> = BTreeMap::new();
    for region in &spec.regions {
        if region.name.trim().is_empty() {
            return Err(LuaError::EmptyRegionName);
        }
        if by_name.insert(region.name.as_str(), region).is_some() {
            return Err(LuaError::DuplicateRegion(region.name.clone()));
        }
    }
    if !by_name.contains_key(spec.primary.as_str()) {
        return Err(LuaError::UnknownPrimary {
            primary: spec.primary.clone(),
            known: by_name.keys().map(|k| (*k).to_owned()).collect(),
        });
    }
    let mut seen: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut parsed: BTreeMap<&str, Vec<Ipv4Addr>> = BTreeMap::new();
    // Primary first so a duplicate is reported against the primary.
    let order = std::iter::once(spec.primary.as_str())
        .chain(by_name.keys().copied().filter(|n| *n != spec.primary));
    for name in order {
        let region = by_name[name];
        if region.lb_ips.is_empty() {
            return Err(LuaError::EmptyRegion {
                region: name.to_owned(),
            });
        }
        let mut ips = Vec::with_capacity(region.lb_ips.len());
        for value in &region.lb_ips {
            let ip = parse_ipv4(name, value)?;
            if let Some(first) = seen.insert(ip, name.to_owned()) {
                return Err(LuaError::DuplicateIp {
                    ip,
                    first,
                    second: name.to_owned(),
                });
            }
            ips.push(ip);
        }
        parsed.insert(name, ips);
    }
    let primary = parsed.remove(spec.primary.as_str()).unwrap_or_default();
    let other_regions: Vec<(String, Vec<Ipv4Addr>, Option<u32>)> = parsed
        .into_iter()
        .map(|(name, ips)| (name.to_owned(), ips, by_name[name].weight))
        .collect();
    let others = other_regions
        .iter()
        .flat_map(|(_, ips, _)| ips.iter().copied())
        .collect();
    Ok(CheckedRegions {
        primary,
        others,
        other_regions,
        primary_weight: by_name[spec.primary.as_str()].weight,
    })
}

fn parse_ipv4(region: &str, value: &str) -> Result<Ipv4Addr, LuaError> {
    let invalid = |reason| LuaError::InvalidIp {
        region: region.to_owned(),
        value: value.to_owned(),
        reason,
    };
    match value.parse::<IpAddr>() {
        Err(_) => Err(invalid("not an IP address")),
        Ok(IpAddr::V6(_)) => Err(invalid(
            "IPv6 needs a LUA AAAA record, which this crate does not write",
        )),
        Ok(IpAddr::V4(ip)) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => {
            Err(invalid("not a unicast address"))
        }
        Ok(IpAddr::V4(ip)) => Ok(ip),
    }
}

fn checked_probe(spec: &PlacementSpec) -> Result<CheckedProbe<'_>, LuaError> {
    if !(1..=60).contains(&spec.interval_secs) {
        return Err(LuaError::InvalidInterval(spec.interval_secs));
    }
    if !(1..=30).contains(&spec.timeout_secs) {
        return Err(LuaError::InvalidTimeout(spec.timeout_secs));
    }
    match &spec.probe {
        None => Err(LuaError::MissingProbe(spec.placement)),
        Some(Probe::TcpPort(0)) => Err(LuaError::InvalidProbePort),
        Some(Probe::TcpPort(port)) => Ok(CheckedProbe::Port(*port)),
        Some(Probe::Url(url)) => {
            parse_probe_url(url)?;
            Ok(CheckedProbe::Url(url))
        }
    }
}

/// Parses an http(s) URL with a host and checks it can sit inside a single-quoted Lua string
/// inside `A "…"` unchanged.
fn parse_probe_url(url: &str) -> Result<url::Url, LuaError> {
    check_lua_safe(url)?;
    let invalid = |reason: String| LuaError::InvalidProbeUrl {
        url: url.to_owned(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(invalid(format!(
            "scheme {:?} (PowerDNS checks http and https only)",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host".into()));
    }
    Ok(parsed)
}

/// Refuses anything that would need escaping inside `'…'` within `A "…"`: quotes, backslashes,
/// whitespace, control and non-ASCII characters (percent-encode those in the URL instead).
fn check_lua_safe(url: &str) -> Result<(), LuaError> {
    match url
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '\'' | '"' | '\\'))
    {
        None => Ok(()),
        Some(c) => Err(LuaError::InvalidProbeUrl {
            url: url.to_owned(),
            reason: format!("character {c:?} cannot be written unescaped in a LUA record"),
        }),
    }
}

/// `{'a', 'b'}`.
fn list(ips: &[Ipv4Addr]) -> String {
    let items: Vec<String> = ips.iter().map(|ip| format!("'{ip}'")).collect();
    format!("{{{}}}", items.join(", "))
}

/// `pickwhashed({{w, 'ip'}, …})` over every address with a non-zero weight.
fn weighted(spec: &PlacementSpec, regions: &CheckedRegions) -> Result<String, LuaError> {
    let primary_weight = regions
        .primary_weight
        .ok_or_else(|| LuaError::MissingWeight(spec.primary.clone()))?;
    let mut entries = Vec::new();
    let mut total: u64 = 0;
    let groups = std::iter::once((primary_weight, regions.primary.as_slice()));
    let mut rest = Vec::new();
    for (name, ips, weight) in &regions.other_regions {
        let weight = weight.ok_or_else(|| LuaError::MissingWeight(name.clone()))?;
        rest.push((weight, ips.as_slice()));
    }
    for (weight, ips) in groups.chain(rest) {
        if weight == 0 {
            continue;
        }
        for ip in ips {
            total += u64::from(weight);
            entries.push(format!("{{{weight}, '{ip}'}}"));
        }
    }
    if total == 0 {
        return Err(LuaError::ZeroTotalWeight);
    }
    if total > i32::MAX as u64 {
        return Err(LuaError::WeightTooLarge);
    }
    Ok(format!("pickwhashed({{{}}})", entries.join(", ")))
}

/// `render` checks the probe before it builds a body, so this is never reached.
fn unreachable_probe(placement: Placement) -> Result<String, LuaError> {
    Err(LuaError::MissingProbe(placement))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_regions(placement: Placement) -> PlacementSpec {
        PlacementSpec::new(placement, "hz-fsn-rtz-prod")
            .region(RegionSpec::new("hz-hel-rtz-prod", ["5.5.6.7"]))
            .region(RegionSpec::new("hz-fsn-rtz-prod", ["5.1.2.3", "5.1.2.4"]))
            .probe_url("https://probe-fsn.example.com/healthz")
    }

    #[test]
    fn placement_names_round_trip() {
        for p in Placement::ALL {
            assert_eq!(p.as_str().parse::<Placement>().unwrap(), p);
            assert_eq!(p.to_string(), p.as_str());
        }
        assert_eq!(
            "round-robin".parse::<Placement>(),
            Err(LuaError::UnknownPlacement("round-robin".into()))
        );
    }

    #[test]
    fn region_label_takes_the_second_token() {
        assert_eq!(region_label("hz-fsn-rtz-prod"), "fsn");
        assert_eq!(region_label("fsn"), "fsn");
        assert_eq!(region_label("a-b"), "b");
    }

    #[test]
    fn upstream_probe_url_rewrites_or_prepends_the_first_label() {
        assert_eq!(
            upstream_probe_url("https://api.example.com/healthz", "hz-fsn-rtz-prod").unwrap(),
            "https://probe-fsn.api.example.com/healthz"
        );
        assert_eq!(
            upstream_probe_url(
                "https://probe-fsn.example.com:8443/x?y=1",
                "hz-hel-rtz-prod"
            )
            .unwrap(),
            "https://probe-hel.example.com:8443/x?y=1"
        );
    }

    #[test]
    fn primary_comes_first_and_others_are_sorted_by_name() {
        let spec = PlacementSpec::new(Placement::ActiveActive, "c")
            .region(RegionSpec::new("b", ["10.0.0.2"]))
            .region(RegionSpec::new("c", ["10.0.0.3"]))
            .region(RegionSpec::new("a", ["10.0.0.1"]))
            .probe_port(443);
        assert_eq!(
            body(&spec).unwrap().as_str(),
            "ifportup(443, {'10.0.0.3', '10.0.0.1', '10.0.0.2'}, {selector='all', interval=5, timeout=2})"
        );
    }

    #[test]
    fn every_body_is_free_of_double_quotes_and_backslashes() {
        for p in Placement::ALL {
            let spec = two_regions(p);
            let spec = PlacementSpec {
                regions: spec.regions.into_iter().map(|r| r.weight(3)).collect(),
                ..spec
            };
            let body = body(&spec).unwrap();
            assert!(!body.as_str().contains(['"', '\\', '\n']), "{p}: {body}");
            assert_eq!(body.rrset_content(), format!("A \"{body}\""));
        }
    }

    #[test]
    fn hot_standby_answers_are_primary_then_the_others() {
        let r = render(&two_regions(Placement::ActiveHotStandby)).unwrap();
        let ips = |s: &[&str]| {
            s.iter()
                .map(|s| s.parse().unwrap())
                .collect::<BTreeSet<_>>()
        };
        assert_eq!(r.healthy_answer, Some(ips(&["5.1.2.3", "5.1.2.4"])));
        assert_eq!(r.failover_answer, Some(ips(&["5.5.6.7"])));
        assert_eq!(r.ttl, DEFAULT_TTL);
        assert_eq!(
            render(&two_regions(Placement::ActivePassiveWarm))
                .unwrap()
                .ttl,
            WARM_TTL
        );
    }

    #[test]
    fn a_single_hot_standby_region_has_one_group() {
        let spec = PlacementSpec::new(Placement::ActiveHotStandby, "a")
            .region(RegionSpec::new("a", ["10.0.0.1"]))
            .probe_url("http://x.test/");
        let r = render(&spec).unwrap();
        assert_eq!(
            r.body.as_str(),
            "ifurlup('http://x.test/', {{'10.0.0.1'}}, {selector='all', interval=5, timeout=2})"
        );
        assert_eq!(r.failover_answer, None);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let base = two_regions(Placement::ActiveHotStandby);
        let cases: Vec<(PlacementSpec, LuaError)> = vec![
            (
                PlacementSpec {
                    regions: vec![],
                    ..base.clone()
                },
                LuaError::NoRegions,
            ),
            (
                base.clone()
                    .region(RegionSpec::new("x", Vec::<String>::new())),
                LuaError::EmptyRegion { region: "x".into() },
            ),
            (
                base.clone().region(RegionSpec::new("x", ["5.1.2.300"])),
                LuaError::InvalidIp {
                    region: "x".into(),
                    value: "5.1.2.300".into(),
                    reason: "not an IP address",
                },
            ),
            (
                base.clone().region(RegionSpec::new("x", ["2001:db8::1"])),
                LuaError::InvalidIp {
                    region: "x".into(),
                    value: "2001:db8::1".into(),
                    reason: "IPv6 needs a LUA AAAA record, which this crate does not write",
                },
            ),
            (
                base.clone().region(RegionSpec::new("x", ["0.0.0.0"])),
                LuaError::InvalidIp {
                    region: "x".into(),
                    value: "0.0.0.0".into(),
                    reason: "not a unicast address",
                },
            ),
            (
                base.clone().region(RegionSpec::new("x", ["5.1.2.3"])),
                LuaError::DuplicateIp {
                    ip: "5.1.2.3".parse().unwrap(),
                    first: "hz-fsn-rtz-prod".into(),
                    second: "x".into(),
                },
            ),
            (
                base.clone()
                    .region(RegionSpec::new("hz-hel-rtz-prod", ["1.1.1.1"])),
                LuaError::DuplicateRegion("hz-hel-rtz-prod".into()),
            ),
            (
                base.clone().region(RegionSpec::new(" ", ["1.1.1.1"])),
                LuaError::EmptyRegionName,
            ),
            (
                base.with_primary("hz-nbg-rtz-prod"),
                LuaError::UnknownPrimary {
                    primary: "hz-nbg-rtz-prod".into(),
                    known: vec!["hz-fsn-rtz-prod".into(), "hz-hel-rtz-prod".into()],
                },
            ),
            (
                PlacementSpec {
                    probe: None,
                    ..base.clone()
                },
                LuaError::MissingProbe(Placement::ActiveHotStandby),
            ),
            (base.clone().probe_port(0), LuaError::InvalidProbePort),
            (base.clone().timing(0, 2), LuaError::InvalidInterval(0)),
            (base.clone().timing(5, 31), LuaError::InvalidTimeout(31)),
            (base.clone().ttl(0), LuaError::InvalidTtl(0)),
            (
                base.clone().ttl(MAX_TTL + 1),
                LuaError::InvalidTtl(MAX_TTL + 1),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(render(&spec), Err(want.clone()), "{want}");
        }
    }

    #[test]
    fn probe_urls_that_need_escaping_are_refused() {
        for url in [
            "https://x.test/it's",
            "https://x.test/\"q\"",
            "https://x.test/a\\b",
            "https://x.test/a b",
            "https://x.test/é",
            "ftp://x.test/",
            "not a url",
            "http://",
        ] {
            let spec = two_regions(Placement::ActiveActive).probe_url(url);
            assert!(
                matches!(render(&spec), Err(LuaError::InvalidProbeUrl { .. })),
                "{url}: {:?}",
                render(&spec)
            );
        }
    }

    #[test]
    fn weighted_canary_needs_weights_that_sum_above_zero() {
        let spec = two_regions(Placement::WeightedCanary);
        assert_eq!(
            render(&spec),
            Err(LuaError::MissingWeight("hz-fsn-rtz-prod".into()))
        );
        let zero = PlacementSpec {
            regions: spec.regions.iter().cloned().map(|r| r.weight(0)).collect(),
            ..spec.clone()
        };
        assert_eq!(render(&zero), Err(LuaError::ZeroTotalWeight));
        let huge = PlacementSpec {
            regions: spec
                .regions
                .iter()
                .cloned()
                .map(|r| r.weight(u32::MAX))
                .collect(),
            ..spec
        };
        assert_eq!(render(&huge), Err(LuaError::WeightTooLarge));
    }
}
