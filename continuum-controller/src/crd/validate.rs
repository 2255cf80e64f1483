//! The Rust twins of the CRD's schema constraints and CEL rules, the conversion to the decision
//! core's [`decide::Spec`], and loading a Continuum from a YAML file (standalone mode).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use super::duration::{CrdDuration, DurationError};
use super::{Continuum, ContinuumSpec, DEFAULT_RPO_MAX_LAG_BYTES, GROUP, LuaSelector, VERSION};
use crate::decide::{
    self, FailbackRequest, MIN_FENCE_BUDGET_MS, RpoBound, SwitchoverRequest, Timing, TimingError,
};

/// One broken rule, naming the field (path under `spec`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Field path under `spec`, e.g. `leaseClient.config.renewSeconds`.
    pub field: String,
    /// What is wrong, for an operator.
    pub reason: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spec.{}: {}", self.field, self.reason)
    }
}

fn join(v: &[Violation]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of the CRD types.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// The spec breaks one or more rules (each names its field).
    #[error("invalid Continuum spec: {}", join(.0))]
    Invalid(Vec<Violation>),
    /// A duration field is malformed.
    #[error("spec.{field}: {source}")]
    Duration {
        /// Field name.
        field: &'static str,
        /// Parser error.
        #[source]
        source: DurationError,
    },
    /// The decision core drives exactly two regions.
    #[error(
        "spec.hotStandbyRegions: this controller drives exactly two regions (primaryRegion plus one hot standby), got {}: {regions:?}",
        regions.len()
    )]
    RegionCount {
        /// primaryRegion followed by hotStandbyRegions.
        regions: Vec<String>,
    },
    /// The derived lease timing is unsafe.
    #[error(
        "spec.leaseClient.config (ttlSeconds/renewSeconds/marginSeconds, holdDownSeconds): {0}"
    )]
    Timing(#[source] TimingError),
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a Continuum object in YAML.
    #[error("parsing {path} as a Continuum")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_yaml::Error,
    },
    /// The file holds another kind.
    #[error("{path}: expected apiVersion {GROUP}/{VERSION} kind Continuum, found {found}")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// `apiVersion kind` found.
        found: String,
    },
    /// The object has no `metadata.name`.
    #[error("{path}: metadata.name is required")]
    MissingName {
        /// The file.
        path: PathBuf,
    },
    /// The CRD could not be rendered.
    #[error("rendering the CRD as YAML")]
    Render(#[source] serde_yaml::Error),
}

fn region_ok(r: &str) -> bool {
    // ^[a-z0-9]+(-[a-z0-9]+)*$, at most 63
    !r.is_empty()
        && r.len() <= 63
        && r.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

fn http_url_ok(u: &str) -> bool {
    // ^https?://.+
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    rest.is_some_and(|r| !r.is_empty())
}

struct Check(Vec<Violation>);

impl Check {
    fn fail(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Violation {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn range(&mut self, field: &str, v: i64, min: i64, max: i64) {
        if v < min || v > max {
            self.fail(field, format!("{v} is outside {min}..={max}"));
        }
    }
}

impl ContinuumSpec {
    /// Every regular region: `primaryRegion` followed by `hotStandbyRegions`.
    pub fn all_regions(&self) -> Vec<String> {
        let mut v = vec![self.primary_region.clone()];
        v.extend(self.hot_standby_regions.iter().cloned());
        v
    }

    /// True when the controller flips DNS (`luaRecord.hostnames` is set).
    pub fn flips_dns(&self) -> bool {
        self.lua_record
            .as_ref()
            .is_some_and(|l| !l.hostnames.is_empty())
    }

    /// Every rule the apiserver enforces (schema constraints and CEL rules) plus the timing
    /// check, as a list of violations (empty = valid).
    pub fn violations(&self) -> Vec<Violation> {
        let mut c = Check(Vec::new());

        if self.application_ref.is_empty() {
            c.fail("applicationRef", "must not be empty");
        }
        if !region_ok(&self.primary_region) {
            c.fail(
                "primaryRegion",
                format!("{:?} is not a region name (lowercase letters, digits and single dashes, at most 63)", self.primary_region),
            );
        }
        let n = self.hot_standby_regions.len();
        if !(1..=4).contains(&n) {
            c.fail(
                "hotStandbyRegions",
                format!("needs 1 to 4 regions, has {n}"),
            );
        }
        for (i, r) in self.hot_standby_regions.iter().enumerate() {
            if !region_ok(r) {
                c.fail(
                    format!("hotStandbyRegions[{i}]"),
                    format!("{r:?} is not a region name"),
                );
            }
            if self.hot_standby_regions[..i].contains(r) {
                c.fail(
                    format!("hotStandbyRegions[{i}]"),
                    format!("{r:?} is listed twice"),
                );
            }
        }
        // CEL: !(self.primaryRegion in self.hotStandbyRegions)
        if self.hot_standby_regions.contains(&self.primary_region) {
            c.fail("hotStandbyRegions", "must not contain primaryRegion");
        }

        // leaseClient.config
        let cfg = &self.lease_client.config;
        c.range(
            "leaseClient.config.ttlSeconds",
            cfg.ttl_seconds.into(),
            5,
            600,
        );
        c.range(
            "leaseClient.config.renewSeconds",
            cfg.renew_seconds.into(),
            1,
            60,
        );
        // CEL: self.renewSeconds * 2 < self.ttlSeconds
        if i64::from(cfg.renew_seconds) * 2 >= i64::from(cfg.ttl_seconds) {
            c.fail(
                "leaseClient.config.renewSeconds",
                format!(
                    "must be less than ttlSeconds / 2 (renew {} s, ttl {} s)",
                    cfg.renew_seconds, cfg.ttl_seconds
                ),
            );
        }
        if let Some(m) = cfg.margin_seconds {
            c.range("leaseClient.config.marginSeconds", m.into(), 1, 60);
            // CEL: renewSeconds * 2 + marginSeconds < ttlSeconds
            if i64::from(cfg.renew_seconds) * 2 + i64::from(m) >= i64::from(cfg.ttl_seconds) {
                c.fail(
                    "leaseClient.config.marginSeconds",
                    "renewSeconds * 2 + marginSeconds must be less than ttlSeconds",
                );
            }
            // CEL: (renewSeconds + marginSeconds) * 21 >= ttlSeconds * 2 + 24 — the fence
            // budget (Timing::fence_budget_ms ≥ 1 s at 5 % drift) in integers.
            if (i64::from(cfg.renew_seconds) + i64::from(m)) * 21
                < i64::from(cfg.ttl_seconds) * 2 + 24
            {
                c.fail(
                    "leaseClient.config.marginSeconds",
                    "(renewSeconds + marginSeconds) * 21 must be at least ttlSeconds * 2 + 24: \
                     drain + fence need at least 1 s after the self-fence deadline",
                );
            }
        }
        for (field, url) in [
            ("leaseClient.config.workerURL", &cfg.worker_url),
            ("leaseClient.config.baseURL", &cfg.base_url),
        ] {
            if let Some(u) = url
                && !http_url_ok(u)
            {
                c.fail(field, format!("{u:?} is not an http(s) URL"));
            }
        }
        if let Some(rs) = &cfg.resolvers {
            if !(3..=5).contains(&rs.len()) {
                c.fail(
                    "leaseClient.config.resolvers",
                    format!("needs 3 to 5 resolvers, has {}", rs.len()),
                );
            }
            for (i, r) in rs.iter().enumerate() {
                if r.parse::<Ipv4Addr>().is_err() {
                    c.fail(
                        format!("leaseClient.config.resolvers[{i}]"),
                        format!("{r:?} is not an IPv4 address"),
                    );
                }
            }
        }
        if let Some(ds) = &cfg.dns_servers
            && !(3..=5).contains(&ds.len())
        {
            c.fail(
                "leaseClient.config.dnsServers",
                format!("needs 3 to 5 servers, has {}", ds.len()),
            );
        }
        if let Some(t) = &cfg.token_secret_ref
            && t.name.is_empty()
        {
            c.fail(
                "leaseClient.config.tokenSecretRef.name",
                "must not be empty",
            );
        }

        // luaRecord
        if let Some(l) = &self.lua_record {
            if let Some(h) = &l.health_check {
                if !http_url_ok(&h.url) {
                    c.fail(
                        "luaRecord.healthCheck.url",
                        format!("{:?} must start with http:// or https://", h.url),
                    );
                }
                c.range(
                    "luaRecord.healthCheck.intervalSeconds",
                    h.interval_seconds.into(),
                    1,
                    60,
                );
                c.range(
                    "luaRecord.healthCheck.timeoutSeconds",
                    h.timeout_seconds.into(),
                    1,
                    30,
                );
            }
            if let Some(t) = l.ttl {
                c.range("luaRecord.ttl", t.into(), 1, 86400);
            }
            if l.hostnames.len() > 32 {
                c.fail("luaRecord.hostnames", "at most 32 hostnames");
            }
            for (i, h) in l.hostnames.iter().enumerate() {
                if h.is_empty() || h.len() > 253 {
                    c.fail(
                        format!("luaRecord.hostnames[{i}]"),
                        "must be 1 to 253 characters",
                    );
                }
            }
            // CEL: ifurlup with hostnames needs a health check
            if !l.hostnames.is_empty()
                && l.selector == LuaSelector::Ifurlup
                && l.health_check.is_none()
            {
                c.fail(
                    "luaRecord.healthCheck",
                    "selector ifurlup with hostnames needs healthCheck.url",
                );
            }
        }

        // regions[]
        if self.regions.len() > 8 {
            c.fail("regions", "at most 8 entries");
        }
        for (i, e) in self.regions.iter().enumerate() {
            if !region_ok(&e.name) {
                c.fail(
                    format!("regions[{i}].name"),
                    format!("{:?} is not a region name", e.name),
                );
            }
            if self.regions[..i].iter().any(|o| o.name == e.name) {
                c.fail(
                    format!("regions[{i}].name"),
                    format!("{:?} is listed twice", e.name),
                );
            }
            if e.lb_ips.len() > 16 {
                c.fail(format!("regions[{i}].lbIPs"), "at most 16 addresses");
            }
            for (j, ip) in e.lb_ips.iter().enumerate() {
                if ip.parse::<IpAddr>().is_err() {
                    c.fail(
                        format!("regions[{i}].lbIPs[{j}]"),
                        format!("{ip:?} is not an IP address"),
                    );
                }
            }
        }
        // CEL: DNS data present when a flip is required
        if self.flips_dns() {
            for r in self.all_regions() {
                let ok = self
                    .regions
                    .iter()
                    .any(|e| e.name == r && !e.lb_ips.is_empty());
                if !ok {
                    c.fail(
                        "regions",
                        format!("luaRecord.hostnames is set, so region {r:?} needs an entry with at least one lbIPs address"),
                    );
                }
            }
        }

        // durations
        for (field, v) in [("rto", &self.rto), ("rpo", &self.rpo)] {
            if let Some(s) = v
                && let Err(e) = CrdDuration::parse(s)
            {
                c.fail(field, e.to_string());
            }
        }
        for (field, v) in [
            ("rpoMaxLagBytes", self.rpo_max_lag_bytes),
            ("rtoSeconds", self.rto_seconds),
            ("rpoSeconds", self.rpo_seconds),
        ] {
            if let Some(v) = v
                && v < 0
            {
                c.fail(field, "must not be negative");
            }
        }
        if let Some(h) = self.hold_down_seconds {
            c.range("holdDownSeconds", h.into(), 1, 600);
        }
        if let Some(g) = self.standby_grace_seconds {
            c.range("standbyGraceSeconds", g.into(), 0, 3600);
        }
        if let Some(d) = &self.dns
            && !http_url_ok(&d.url)
        {
            c.fail("dns.url", format!("{:?} is not an http(s) URL", d.url));
        }

        // switchover / failback requests
        if let Some(s) = &self.switchover {
            if let Some(t) = &s.target_region
                && !self.all_regions().contains(t)
            {
                c.fail(
                    "switchover.targetRegion",
                    format!("{t:?} is neither primaryRegion nor one of hotStandbyRegions"),
                );
            }
            if s.requested == Some(true) && s.id.is_none() && s.requested_at.is_none() {
                c.fail(
                    "switchover.id",
                    "a requested switchover needs an id (or requestedAt)",
                );
            }
            if matches!(&s.id, Some(id) if id.is_empty() || id.len() > 128) {
                c.fail("switchover.id", "must be 1 to 128 characters");
            }
        }
        if let Some(f) = &self.failback {
            if f.requested == Some(true) && f.id.is_none() && f.requested_at.is_none() {
                c.fail(
                    "failback.id",
                    "a requested failback needs an id (or requestedAt)",
                );
            }
            if matches!(&f.id, Some(id) if id.is_empty() || id.len() > 128) {
                c.fail("failback.id", "must be 1 to 128 characters");
            }
        }

        // the derived timing (drift rule; CEL only has the integer twin)
        if c.0
            .iter()
            .all(|v| !v.field.starts_with("leaseClient.config") && v.field != "holdDownSeconds")
            && let Err(e) = self.timing().validate()
        {
            c.fail("leaseClient.config", e.to_string());
        }
        c.0
    }

    /// Checks every rule (see [`ContinuumSpec::violations`]).
    pub fn validate(&self) -> Result<(), CrdError> {
        let v = self.violations();
        if v.is_empty() {
            Ok(())
        } else {
            Err(CrdError::Invalid(v))
        }
    }

    /// The lease timing in milliseconds. `marginSeconds` and `holdDownSeconds` default to the
    /// proportions of [`Timing::standard`] (2 s and 5 s for ttl 30 / renew 10), with the margin
    /// clamped so that the deadline keeps one renew retry and stays strictly inside the TTL at
    /// 5 % clock-rate error whenever `renewSeconds * 2 < ttlSeconds`.
    pub fn timing(&self) -> Timing {
        let std = Timing::standard();
        let cfg = &self.lease_client.config;
        let ttl = i64::from(cfg.ttl_seconds) * 1000;
        let renew = i64::from(cfg.renew_seconds) * 1000;
        let margin = match cfg.margin_seconds {
            Some(m) => i64::from(m) * 1000,
            None => {
                // deadline = ttl - renew - margin; keep it ≤ 0.9·ttl (drift) and > renew (retry).
                let scaled = ttl * std.margin_ms / std.ttl_ms;
                let drift_floor = ttl / 10 - renew;
                let retry_ceiling = ttl - 2 * renew - 1;
                // …and leave the fence its budget (Timing::fence_budget_ms ≥ the minimum).
                let probe = Timing {
                    ttl_ms: ttl,
                    renew_ms: renew,
                    margin_ms: 0,
                    hold_down_ms: 1,
                    max_drift: std.max_drift,
                };
                let budget_floor = MIN_FENCE_BUDGET_MS - probe.fence_budget_ms();
                scaled
                    .max(drift_floor)
                    .max(budget_floor)
                    .max(1000)
                    .min(retry_ceiling)
                    .max(1)
            }
        };
        let hold_down = match self.hold_down_seconds {
            Some(h) => i64::from(h) * 1000,
            None => (ttl * std.hold_down_ms / std.ttl_ms).max(1000),
        };
        Timing {
            ttl_ms: ttl,
            renew_ms: renew,
            margin_ms: margin,
            hold_down_ms: hold_down,
            max_drift: std.max_drift,
        }
    }

    /// The RPO bound: `rpo` (absent = `0s`) and `rpoMaxLagBytes` (default 16 MiB, or 0 when the
    /// RPO is zero).
    pub fn rpo_bound(&self) -> Result<RpoBound, CrdError> {
        let secs = match &self.rpo {
            Some(s) => CrdDuration::parse(s)
                .map_err(|source| CrdError::Duration {
                    field: "rpo",
                    source,
                })?
                .as_secs(),
            None => 0,
        };
        let bytes = match self.rpo_max_lag_bytes {
            Some(b) => u64::try_from(b).unwrap_or(0),
            None if secs == 0 => 0,
            None => DEFAULT_RPO_MAX_LAG_BYTES as u64,
        };
        Ok(RpoBound {
            max_lag_bytes: bytes,
            max_lag_seconds: secs,
        })
    }

    /// The RTO, when set.
    pub fn rto_duration(&self) -> Result<Option<CrdDuration>, CrdError> {
        self.rto
            .as_deref()
            .map(|s| {
                CrdDuration::parse(s).map_err(|source| CrdError::Duration {
                    field: "rto",
                    source,
                })
            })
            .transpose()
    }

    /// The decision core's view of this spec, for the Continuum `namespace/name`.
    ///
    /// Validates first. Errors when the spec has more than one hot standby (the decision core
    /// drives exactly two regions) or when the derived timing fails [`Timing::validate`].
    pub fn to_decide_spec(&self, namespace: &str, name: &str) -> Result<decide::Spec, CrdError> {
        // Typed errors for the two parsed fields first, then the whole rule set.
        self.rto_duration()?;
        let rpo = self.rpo_bound()?;
        self.validate()?;
        let regions = self.all_regions();
        if regions.len() != 2 {
            return Err(CrdError::RegionCount { regions });
        }
        let timing = self.timing();
        timing.validate().map_err(CrdError::Timing)?;
        let application = if self.application_ref.contains('/') {
            self.application_ref.clone()
        } else {
            format!("{namespace}/{}", self.application_ref)
        };
        let switchover = self.switchover.as_ref().and_then(|s| {
            if s.requested != Some(true) {
                return None;
            }
            let id = s.id.clone().or_else(|| s.requested_at.clone())?;
            let target = s
                .target_region
                .clone()
                .unwrap_or_else(|| self.hot_standby_regions[0].clone());
            Some(SwitchoverRequest { id, target })
        });
        let failback = self.failback.as_ref().and_then(|f| {
            if f.requested != Some(true) {
                return None;
            }
            let id = f.id.clone().or_else(|| f.requested_at.clone())?;
            Some(FailbackRequest {
                id,
                approved: f.approved == Some(true),
            })
        });
        Ok(decide::Spec {
            name: format!("{namespace}/{name}"),
            application,
            regions,
            primary: self.primary_region.clone(),
            auto_failover: self.auto_failover,
            timing,
            rpo,
            durability: match self.durability {
                super::DurabilityMode::Default => decide::Durability::Default,
                super::DurabilityMode::Strict => decide::Durability::Strict,
            },
            switchover,
            failback,
        })
    }
}

impl Continuum {
    /// `namespace/name` (namespace `default` when unset).
    pub fn key(&self) -> (String, String) {
        (
            self.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            self.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// [`ContinuumSpec::to_decide_spec`] with this object's namespace and name.
    pub fn to_decide_spec(&self) -> Result<decide::Spec, CrdError> {
        let (ns, name) = self.key();
        self.spec.to_decide_spec(&ns, &name)
    }
}

/// Loads one Continuum object from a YAML file (standalone `run --config`), checks its
/// apiVersion/kind and name, and validates its spec. A missing namespace reads as `default`.
pub fn load_file(path: impl AsRef<Path>) -> Result<Continuum, CrdError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| CrdError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_yaml(&text, path)
}

/// [`load_file`] on a string; `path` only names the source in errors.
pub(crate) fn parse_yaml(text: &str, path: &Path) -> Result<Continuum, CrdError> {
    let parse = |source| CrdError::Parse {
        path: path.to_owned(),
        source,
    };
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(parse)?;
    let field = |k: &str| {
        value
            .get(k)
            .and_then(serde_yaml::Value::as_str)
            .unwrap_or("")
    };
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != format!("{GROUP}/{VERSION}") || kind != "Continuum" {
        return Err(CrdError::WrongKind {
            path: path.to_owned(),
            found: format!("{api_version:?} {kind:?}"),
        });
    }
    let mut obj: Continuum = serde_yaml::from_value(value).map_err(parse)?;
    if obj.metadata.name.as_deref().unwrap_or("").is_empty() {
        return Err(CrdError::MissingName {
            path: path.to_owned(),
        });
    }
    obj.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    obj.spec.validate()?;
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::super::{
        LeaseClient, LeaseConfig, LeaseKind, LuaRecord, RegionEndpoints, Switchover,
    };
    use super::*;

    fn spec() -> ContinuumSpec {
        ContinuumSpec {
            application_ref: "app".into(),
            primary_region: "eu-1".into(),
            hot_standby_regions: vec!["eu-2".into()],
            lease_client: LeaseClient {
                kind: LeaseKind::CloudflareKv,
                config: LeaseConfig::default(),
            },
            lua_record: None,
            regions: Vec::new(),
            rto: Some("60s".into()),
            rpo: None,
            rpo_max_lag_bytes: None,
            rto_seconds: None,
            rpo_seconds: None,
            auto_failover: false,
            hold_down_seconds: None,
            standby_grace_seconds: None,
            durability: super::super::DurabilityMode::Default,
            cnpg_pair: None,
            http_route: None,
            pdm_zone: None,
            dns: None,
            switchover: None,
            failback: None,
        }
    }

    fn fields(s: &ContinuumSpec) -> Vec<String> {
        s.violations().into_iter().map(|v| v.field).collect()
    }

    #[test]
    fn a_minimal_spec_is_valid_and_uses_the_standard_timing() {
        let s = spec();
        assert_eq!(s.violations(), vec![]);
        assert_eq!(s.timing(), Timing::standard());
        let d = s.to_decide_spec("ns", "n").unwrap();
        assert_eq!(
            d.rpo,
            RpoBound {
                max_lag_bytes: 0,
                max_lag_seconds: 0
            },
            "absent rpo = 0s"
        );
        assert_eq!(d.application, "ns/app");
    }

    #[test]
    fn renew_twice_must_stay_below_ttl() {
        let mut s = spec();
        s.lease_client.config.renew_seconds = 15;
        assert_eq!(fields(&s), vec!["leaseClient.config.renewSeconds"]);
        s.lease_client.config.renew_seconds = 14;
        assert_eq!(fields(&s), Vec::<String>::new());
        s.lease_client.config.margin_seconds = Some(2);
        assert_eq!(fields(&s), vec!["leaseClient.config.marginSeconds"]);
    }

    #[test]
    fn default_margin_gives_a_valid_timing_for_every_ttl_and_renew_the_schema_allows() {
        let mut s = spec();
        for ttl in 5..=600 {
            for renew in 1..=60 {
                if renew * 2 >= ttl {
                    continue;
                }
                s.lease_client.config.ttl_seconds = ttl;
                s.lease_client.config.renew_seconds = renew;
                let t = s.timing();
                assert_eq!(t.validate(), Ok(()), "ttl {ttl} renew {renew}: {t:?}");
            }
        }
    }

    #[test]
    fn primary_must_not_be_a_standby_and_standbys_are_unique() {
        let mut s = spec();
        s.hot_standby_regions = vec!["eu-1".into(), "eu-2".into(), "eu-2".into()];
        let f = fields(&s);
        assert!(f.contains(&"hotStandbyRegions".to_string()), "{f:?}");
        assert!(f.contains(&"hotStandbyRegions[2]".to_string()), "{f:?}");
    }

    #[test]
    fn switchover_target_must_be_one_of_the_regions() {
        let mut s = spec();
        s.switchover = Some(Switchover {
            mechanism: Default::default(),
            raft_transition: None,
            requested: Some(true),
            id: Some("sw-1".into()),
            target_region: Some("us-1".into()),
            requested_at: None,
            requested_by: None,
            reason: None,
        });
        assert_eq!(fields(&s), vec!["switchover.targetRegion"]);
        if let Some(sw) = s.switchover.as_mut() {
            sw.target_region = Some("eu-1".into());
            sw.id = None;
        }
        assert_eq!(fields(&s), vec!["switchover.id"], "a request needs an id");
    }

    #[test]
    fn flipping_dns_needs_every_regions_addresses_and_a_health_check() {
        let mut s = spec();
        s.lua_record = Some(LuaRecord {
            selector: LuaSelector::Ifurlup,
            health_check: None,
            hostnames: vec!["app.example.org".into()],
            ttl: None,
        });
        s.regions = vec![RegionEndpoints {
            name: "eu-1".into(),
            lb_ips: vec!["192.0.2.1".into()],
        }];
        assert_eq!(fields(&s), vec!["luaRecord.healthCheck", "regions"]);
        s.regions.push(RegionEndpoints {
            name: "eu-2".into(),
            lb_ips: vec!["2001:db8::1".into(), "bad".into()],
        });
        assert_eq!(
            fields(&s),
            vec!["luaRecord.healthCheck", "regions[1].lbIPs[1]"]
        );
        // Without hostnames the controller does not touch DNS, so nothing is required.
        if let Some(l) = s.lua_record.as_mut() {
            l.hostnames.clear();
        }
        s.regions.clear();
        assert_eq!(fields(&s), Vec::<String>::new());
    }

    #[test]
    fn timing_errors_name_the_lease_config() {
        let mut s = spec();
        // Explicit margin inside the retry rule but with no room for drift or the fence:
        // ttl 600, renew 1, margin 1 ⇒ deadline 598 s, not inside 600 s at 5 % drift; the
        // fence-budget rule (CEL twin) names the margin.
        s.lease_client.config.ttl_seconds = 600;
        s.lease_client.config.renew_seconds = 1;
        s.lease_client.config.margin_seconds = Some(1);
        let v = s.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].to_string()
                .starts_with("spec.leaseClient.config.marginSeconds:")
                && v[0].to_string().contains("fence"),
            "{}",
            v[0]
        );
    }
}
