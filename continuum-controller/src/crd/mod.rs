//! The `Continuum` custom resource (`continuums.dr.openova.io/v1`, short name `dr`).
//!
//! A typed SUPERSET of upstream's CRD (`products/catalyst/chart/crds/continuum.yaml`): every
//! upstream field keeps its name, type and meaning, so every object upstream's CRD accepts is
//! accepted here; the fields upstream's controller reads but its CRD only keeps as unknown fields
//! (`cnpgPair`, `httpRoute`, `pdmZone`, `regions[].lbIPs`, `luaRecord.hostnames`,
//! `switchover.requested`/`targetRegion`, `failback.*`, …) are typed; and the controller's own
//! knobs are added (`durability`, `switchover.id`, `failback.id`, `holdDownSeconds`,
//! `leaseClient.config.marginSeconds`, `rpoMaxLagBytes`, `dns`).
//!
//! Deliberate deviations, both relaxations:
//! - region names follow the DNS-label shape `^[a-z0-9]+(-[a-z0-9]+)*$` (the `CNPGPair` CRD's
//!   pattern) instead of upstream's four-part `^[a-z][a-z0-9]*(-[a-z0-9]+){3,}$`, which its own
//!   tests (`fsn`, `hel`) and the CNPGPair samples (`fsn1`) do not follow;
//! - `leaseClient.kind` also takes `k8s-lease` and `switchover.mechanism` also takes `stateless`,
//!   both accepted by upstream's controller but missing from its stored CRD enums.
//!
//! Validation happens twice with the same rules: in the apiserver (OpenAPI constraints plus CEL
//! `x-kubernetes-validations`) and in [`ContinuumSpec::validate`] (standalone `run --config`
//! files never see an apiserver). `tests/crd.rs` evaluates the CEL rules offline with kube's CEL
//! engine and checks they agree with their Rust twins case by case.
//!
//! - [`duration`]: the strict `rto`/`rpo` parser.
//! - `validate`: [`ContinuumSpec::validate`], [`ContinuumSpec::to_decide_spec`], [`load_file`].

pub mod duration;
mod validate;

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::decide::{ConditionKind, Operation};

pub use validate::{CrdError, Violation, load_file};

/// API group.
pub const GROUP: &str = "dr.openova.io";
/// API version.
pub const VERSION: &str = "v1";
/// CRD object name (`<plural>.<group>`), also the finalizer name.
pub const CRD_NAME: &str = "continuums.dr.openova.io";
/// The region-name pattern (DNS label, see the module docs for the deviation from upstream).
pub const REGION_PATTERN: &str = "^[a-z0-9]+(-[a-z0-9]+)*$";
/// Default lease TTL in seconds.
pub const DEFAULT_TTL_SECONDS: i32 = 30;
/// Default renew interval in seconds.
pub const DEFAULT_RENEW_SECONDS: i32 = 10;
/// Default WAL byte bound for automatic promotion when `rpo` is above zero.
pub const DEFAULT_RPO_MAX_LAG_BYTES: i64 = 16 << 20;

/// The DR contract of one application running as a primary region plus hot standby regions.
///
/// One continuum-controller per region watches it. Across regions only the lease witness decides
/// which region may write; a standby promotes itself automatically only when `autoFailover` is
/// on, the witness granted it the lease after the primary's expired, the primary fails probes
/// from more than one vantage point, and its replication is inside `rpo`. Operators move the
/// primary with `switchover` and move it back after a failover with an approved `failback`.
// `printcolumn(..)` repeats its keys once per column by design.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "dr.openova.io",
    version = "v1",
    kind = "Continuum",
    plural = "continuums",
    singular = "continuum",
    shortname = "dr",
    category = "catalyst",
    category = "openova",
    namespaced,
    status = "ContinuumStatus",
    doc = "Continuum is the declarative DR contract for an application running as a primary region plus hot standby regions. A continuum-controller in each region reads it; only the lease witness decides which region may write.",
    printcolumn(
        name = "Application",
        type_ = "string",
        json_path = ".spec.applicationRef"
    ),
    printcolumn(
        name = "Primary",
        type_ = "string",
        json_path = ".status.currentPrimary"
    ),
    printcolumn(name = "Lease", type_ = "string", json_path = ".status.leaseHolder"),
    printcolumn(name = "Epoch", type_ = "integer", json_path = ".status.epoch"),
    printcolumn(
        name = "Lag",
        type_ = "string",
        json_path = ".status.maxReplicationLag",
        priority = "1"
    ),
    printcolumn(
        name = "RTO",
        type_ = "string",
        json_path = ".spec.rto",
        priority = "1"
    ),
    printcolumn(
        name = "RPO",
        type_ = "string",
        json_path = ".spec.rpo",
        priority = "1"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(self.primaryRegion in self.hotStandbyRegions)", "message": "primaryRegion must not also be listed in hotStandbyRegions", "fieldPath": ".hotStandbyRegions"},
    {"rule": "!has(self.switchover) || !has(self.switchover.targetRegion) || self.switchover.targetRegion == self.primaryRegion || self.switchover.targetRegion in self.hotStandbyRegions", "message": "switchover.targetRegion must be primaryRegion or one of hotStandbyRegions", "fieldPath": ".switchover.targetRegion"},
    {"rule": "!has(self.switchover) || !has(self.switchover.requested) || !self.switchover.requested || has(self.switchover.id) || has(self.switchover.requestedAt)", "message": "a requested switchover needs switchover.id (or switchover.requestedAt) so it runs exactly once", "fieldPath": ".switchover.id"},
    {"rule": "!has(self.failback) || !has(self.failback.requested) || !self.failback.requested || has(self.failback.id) || has(self.failback.requestedAt)", "message": "a requested failback needs failback.id (or failback.requestedAt) so it runs exactly once", "fieldPath": ".failback.id"},
    {"rule": "!has(self.luaRecord) || !has(self.luaRecord.hostnames) || size(self.luaRecord.hostnames) == 0 || (has(self.regions) && ([self.primaryRegion] + self.hotStandbyRegions).all(r, self.regions.exists(e, e.name == r && size(e.lbIPs) > 0)))", "message": "luaRecord.hostnames makes the controller flip DNS: every region (primaryRegion and hotStandbyRegions) needs an entry in regions with at least one lbIPs address", "fieldPath": ".regions"},
    {"rule": "!has(self.luaRecord) || !has(self.luaRecord.hostnames) || size(self.luaRecord.hostnames) == 0 || self.luaRecord.selector != 'ifurlup' || has(self.luaRecord.healthCheck)", "message": "luaRecord.selector ifurlup with hostnames needs luaRecord.healthCheck.url", "fieldPath": ".luaRecord.healthCheck"}
]))]
#[serde(rename_all = "camelCase")]
pub struct ContinuumSpec {
    /// The application this Continuum governs: `<namespace>/<name>` of its Application, or a
    /// bare name in this object's namespace. Used as `applicationName` in audit events.
    #[schemars(length(min = 1, max = 253))]
    pub application_ref: String,

    /// The HOME primary region: where the application runs when nothing has failed, and where
    /// an approved failback returns it. The region that is primary right now is
    /// `status.currentPrimary` (it moves with switchovers and failovers; this field does not).
    /// Also the lease holder name of that region's controller.
    #[schemars(regex(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$"), length(min = 1, max = 63))]
    pub primary_region: String,

    /// Regions running hot standby replicas, in promotion-preference order. This version of
    /// the controller drives exactly one standby (two regions in all); the schema keeps
    /// upstream's limit of four.
    #[schemars(
        length(min = 1, max = 4),
        inner(regex(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$"), length(min = 1, max = 63))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hot_standby_regions: Vec<String>,

    /// The lease witness that arbitrates which region may write.
    pub lease_client: LeaseClient,

    /// The PowerDNS LUA record the controller flips to the new primary. Without
    /// `luaRecord.hostnames` the controller does not touch DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lua_record: Option<LuaRecord>,

    /// The public addresses of each region's load balancer, the answers the LUA record gives.
    /// Required for every region when `luaRecord.hostnames` is set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub regions: Vec<RegionEndpoints>,

    /// Recovery Time Objective, e.g. `60s`, `5m`, `1h` (format `^[0-9]+(s|m|h)$`). Reported in
    /// `status.lastSwitchover.rtoObserved` comparisons and audit events; it never triggers a
    /// failover by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]+(s|m|h)$"), length(max = 32))]
    pub rto: Option<String>,

    /// Recovery Point Objective, e.g. `0s`, `5s`, `1m` (format `^[0-9]+(s|m|h)$`): the most
    /// replication lag a standby may have and still be promoted automatically. High lag is a
    /// reason NOT to fail over. Absent means `0s`: only a synchronous or fully caught-up
    /// standby is promoted automatically.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9]+(s|m|h)$"), length(max = 32))]
    pub rpo: Option<String>,

    /// The most WAL bytes a standby may be behind and still be promoted automatically (the
    /// byte twin of `rpo`). Default: 16 MiB when `rpo` is above zero, 0 when it is `0s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rpo_max_lag_bytes: Option<i64>,

    /// `rto` in seconds, as written by the cnpg-pair chart. Informational (read by the
    /// operator console's preview); `rto` is authoritative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rto_seconds: Option<i64>,

    /// `rpo` in seconds, as written by the cnpg-pair chart. Informational; `rpo` is
    /// authoritative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub rpo_seconds: Option<i64>,

    /// Whether a standby region may promote itself when the primary region is gone, without an
    /// operator. When false the controller only raises the `AutoFailoverDisabled` condition and
    /// waits for a `switchover`.
    #[serde(default)]
    pub auto_failover: bool,

    /// Seconds the primary must keep failing probes (and any state change must be stable)
    /// before an automatic failover or an un-fence. Flapping shorter than this changes nothing.
    /// Default: ttlSeconds / 6, at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600))]
    pub hold_down_seconds: Option<i32>,

    /// Seconds a standby may look unavailable before the status reports it so (upstream's
    /// #4901 grace). Default 30; 0 reports at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub standby_grace_seconds: Option<i32>,

    /// What the promoted primary does after an UNPLANNED failover, when its peer region (and
    /// so its synchronous standby) is gone. `default`: accept writes with synchronous
    /// replication suspended, raise `DurabilityDegraded`, restore synchronous replication as
    /// soon as the rebuilt peer streams. `strict`: keep writes blocked until a synchronous
    /// standby exists (CNPG `dataDurability: required`).
    #[serde(default)]
    pub durability: DurabilityMode,

    /// The CNPG cluster pair: the `catalyst.openova.io/cnpg-pair` label value on the two CNPG
    /// `Cluster` objects. Namespace defaults to this object's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnpg_pair: Option<ObjectRef>,

    /// The Gateway API `HTTPRoute` drained (backend weight 0) in the region giving up the
    /// primary role. Namespace defaults to this object's. Absent: no route is drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_route: Option<ObjectRef>,

    /// The DNS zone holding `luaRecord.hostnames`. Default: the first hostname minus its first
    /// label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub pdm_zone: Option<String>,

    /// Where DNS changes are written. Absent: the controller's `--dns-*` flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsBackend>,

    /// Planned switchover: the mechanism and, when set by an operator (or catalyst-api's
    /// `POST …/switchover`), the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover: Option<Switchover>,

    /// Failback to `primaryRegion` after a failover: requested, then approved by an operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback: Option<Failback>,
}

/// Durability mode after an unplanned failover: `default` (accept writes, synchronous
/// replication suspended until the peer is rebuilt) or `strict` (writes wait for a synchronous
/// standby).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Accept writes, raise `DurabilityDegraded`.
    #[default]
    Default,
    /// Block writes until a synchronous standby exists.
    Strict,
}

/// A namespaced object reference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// Object name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace; default: the Continuum's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// One region's load-balancer addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegionEndpoints {
    /// Region name (one of primaryRegion / hotStandbyRegions).
    #[schemars(regex(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$"), length(min = 1, max = 63))]
    pub name: String,
    /// IPv4/IPv6 addresses answered for this region.
    #[serde(rename = "lbIPs", default)]
    #[schemars(length(max = 16), inner(length(min = 2, max = 45)))]
    pub lb_ips: Vec<String>,
}

/// The lease witness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseClient {
    /// Witness kind. `cloudflare-kv`: the lease HTTP API (`PUT/GET/DELETE /lease/<slot>`,
    /// bearer token) served by a Cloudflare Worker — this project's witness-worker, at
    /// `config.workerURL`. `k8s-lease`: a `coordination.k8s.io` Lease in ONE cluster (not a
    /// cross-region arbiter; single-cluster tests only). `dns-quorum`: 2-of-3 DNS TXT quorum
    /// (upstream's; never able to write, kept for compatibility).
    pub kind: LeaseKind,
    /// Kind-specific settings plus the lease timing.
    #[serde(default)]
    pub config: LeaseConfig,
}

/// Witness kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum LeaseKind {
    /// Single-cluster Lease.
    K8sLease,
    /// Lease HTTP API of a Cloudflare Worker.
    CloudflareKv,
    /// DNS TXT quorum.
    DnsQuorum,
}

/// Witness settings and lease timing. Unknown keys are kept (kind-specific settings of other
/// witness implementations).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.renewSeconds * 2 < self.ttlSeconds", "message": "renewSeconds must be less than half of ttlSeconds", "fieldPath": ".renewSeconds"},
    {"rule": "!has(self.marginSeconds) || self.renewSeconds * 2 + self.marginSeconds < self.ttlSeconds", "message": "renewSeconds * 2 + marginSeconds must be less than ttlSeconds: the self-fence deadline must leave one renew retry", "fieldPath": ".marginSeconds"},
    {"rule": "!has(self.marginSeconds) || (self.renewSeconds + self.marginSeconds) * 21 >= self.ttlSeconds * 2 + 24", "message": "(renewSeconds + marginSeconds) * 21 must be at least ttlSeconds * 2 + 24: the worst-case fence (drain + fence after the self-fence deadline, at 5 % clock drift) needs at least 1 s before the witness may grant the lease elsewhere", "fieldPath": ".marginSeconds"}
]))]
#[serde(rename_all = "camelCase")]
pub struct LeaseConfig {
    /// Lease TTL in seconds granted by the witness. A standby can take over at the earliest
    /// this long after the primary's last renew, so it bounds the unplanned RTO from below.
    #[serde(default = "default_ttl")]
    #[schemars(range(min = 5, max = 600))]
    pub ttl_seconds: i32,

    /// Seconds between renewals by the primary. Must be less than ttlSeconds / 2.
    #[serde(default = "default_renew")]
    #[schemars(range(min = 1, max = 60))]
    pub renew_seconds: i32,

    /// Safety margin in seconds: the primary fences itself (drains its route, makes its
    /// database read-only) `renewSeconds + marginSeconds` before its lease could expire.
    /// Default: derived from ttl/renew (2 for 30/10) so the deadline stays inside the TTL with
    /// 5 % clock-rate error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub margin_seconds: Option<i32>,

    /// Base URL of the lease HTTP API (`cloudflare-kv`), e.g. `https://witness.example`.
    #[serde(rename = "workerURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://.+"), length(max = 2048))]
    pub worker_url: Option<String>,

    /// Alias of `workerURL` (upstream's Go client reads both; `workerURL` wins).
    #[serde(rename = "baseURL", default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^https?://.+"), length(max = 2048))]
    pub base_url: Option<String>,

    /// Lease slot name. Default: `<namespace>/<name>` of this Continuum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub slot: Option<String>,

    /// Secret holding this region's witness bearer token (`cloudflare-kv`). Plaintext never
    /// goes on the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<TokenSecretRef>,

    /// Cloudflare KV namespace id (upstream's schema; not needed by the worker API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_namespace_id: Option<String>,

    /// Cloudflare account id (upstream's schema; not needed by the worker API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,

    /// `dns-quorum`: 3 to 5 IPv4 resolver addresses (the voting set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 5),
        inner(regex(pattern = r"^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$"))
    )]
    pub resolvers: Option<Vec<String>>,

    /// `dns-quorum`: alias of `resolvers` (upstream's Go client reads both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 3, max = 5), inner(length(min = 1, max = 253)))]
    pub dns_servers: Option<Vec<String>>,

    /// `dns-quorum`: the zone holding the lease TXT records (default `lease.openova.io`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,

    /// `dns-quorum`: Secret holding the TSIG key for TXT updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsig_secret_ref: Option<TsigSecretRef>,

    /// `k8s-lease`: namespace of the Lease objects (default: the controller's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,

    /// `k8s-lease`: alias of `namespace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_namespace: Option<String>,
}

fn default_ttl() -> i32 {
    DEFAULT_TTL_SECONDS
}

fn default_renew() -> i32 {
    DEFAULT_RENEW_SECONDS
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl_seconds: DEFAULT_TTL_SECONDS,
            renew_seconds: DEFAULT_RENEW_SECONDS,
            margin_seconds: None,
            worker_url: None,
            base_url: None,
            slot: None,
            token_secret_ref: None,
            kv_namespace_id: None,
            account_id: None,
            resolvers: None,
            dns_servers: None,
            domain: None,
            tsig_secret_ref: None,
            namespace: None,
            lease_namespace: None,
        }
    }
}

/// A key of a Secret in the controller's witness-secret namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "token".into()
}

/// A key of a Secret holding a TSIG key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TsigSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_tsig_key")]
    pub key: String,
}

fn default_tsig_key() -> String {
    "tsig".into()
}

/// A key of a Secret holding a DNS API key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiSecretRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Namespace; default: the controller's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key inside the Secret.
    #[serde(default = "default_api_key")]
    pub key: String,
}

fn default_api_key() -> String {
    "api-key".into()
}

/// The PowerDNS LUA record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LuaRecord {
    /// How PowerDNS picks among the regions' addresses. `ifurlup` (default): the primary's
    /// addresses while its health check passes, the standby's otherwise. `pickclosest`,
    /// `pickfirst`, `pickwhashed`: PowerDNS's selectors of those names.
    #[serde(default)]
    pub selector: LuaSelector,
    /// The probe PowerDNS runs against each region (`ifurlup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// The application's hostnames served by the LUA record. Set them to let the controller
    /// flip DNS; leave them empty when DNS is managed elsewhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub hostnames: Vec<String>,
    /// DNS TTL of the LUA record in seconds (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub ttl: Option<i32>,
}

/// LUA record selector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LuaSelector {
    /// `ifurlup`.
    #[default]
    Ifurlup,
    /// `pickclosest`.
    Pickclosest,
    /// `pickfirst`.
    Pickfirst,
    /// `pickwhashed`.
    Pickwhashed,
}

/// The DNS health check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// URL probed in each region (`http://` or `https://`).
    #[schemars(regex(pattern = "^https?://.+"), length(max = 2048))]
    pub url: String,
    /// Seconds between probes.
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1, max = 60))]
    pub interval_seconds: i32,
    /// Seconds before a probe fails.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 30))]
    pub timeout_seconds: i32,
}

fn default_interval() -> i32 {
    5
}

fn default_timeout() -> i32 {
    2
}

/// Where DNS changes go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DnsBackend {
    /// `pdm` (the PDM service's lua-commit API) or `powerdns` (the PowerDNS HTTP API directly).
    #[serde(default)]
    pub backend: DnsBackendKind,
    /// Base URL of the API.
    #[schemars(regex(pattern = "^https?://.+"), length(max = 2048))]
    pub url: String,
    /// PowerDNS server id (`powerdns`; default `localhost`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Secret holding the API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_secret_ref: Option<ApiSecretRef>,
}

/// DNS API kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DnsBackendKind {
    /// PDM.
    #[default]
    Pdm,
    /// PowerDNS HTTP API.
    Powerdns,
}

/// Planned switchover settings and request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Switchover {
    /// How the state store is promoted. `cnpg-pair` (default): the two CNPG `Cluster` halves,
    /// demoted and promoted with CNPG's demotion/promotion tokens. `raft-transition`: OpenBao
    /// raft peers.json recovery on the surviving standby Pod. `stateless`: nothing to promote.
    #[serde(default)]
    pub mechanism: SwitchoverMechanism,
    /// OpenBao standby target (`raft-transition` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_transition: Option<RaftTransition>,
    /// Set to true to request a planned switchover to `targetRegion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<bool>,
    /// Request id: a request whose id has completed (`status.completedRequests`) never runs
    /// again. Default: `requestedAt`. Use a new id for each request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    /// The region to make primary. Default: the first of hotStandbyRegions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[a-z0-9]+(-[a-z0-9]+)*$"), length(min = 1, max = 63))]
    pub target_region: Option<String>,
    /// When the request was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub requested_at: Option<String>,
    /// Who made the request (audit `initiatedBy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why (audit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// State-store promotion mechanism.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchoverMechanism {
    /// CNPG replica-cluster switchover.
    #[default]
    CnpgPair,
    /// OpenBao raft recovery.
    RaftTransition,
    /// No state store.
    Stateless,
}

/// OpenBao standby target for `raft-transition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftTransition {
    /// OpenBao release namespace on the standby cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Standby raft member Pod to promote; when empty, `podSelector` finds the Ready Pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Label selector of the standby Pods (the lexically first Ready match is promoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<String>,
    /// OpenBao container name.
    #[serde(default = "default_container")]
    pub container: String,
    /// Raft data directory inside the container.
    #[serde(default = "default_raft_data_path")]
    pub raft_data_path: String,
    /// Optional staged snapshot restored before the peers.json recovery.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_path: Option<String>,
    /// OpenBao CLI name in the image (`bao` or `vault`).
    #[serde(default = "default_bao_binary")]
    pub bao_binary: String,
}

fn default_container() -> String {
    "openbao".into()
}

fn default_raft_data_path() -> String {
    "/openbao/data".into()
}

fn default_bao_binary() -> String {
    "bao".into()
}

/// Failback request: move the primary back to `primaryRegion` after a failover. It runs only
/// once `approved` is true; the old primary is rebuilt from the current one before it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failback {
    /// Set to true to request a failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested: Option<bool>,
    /// Request id (default: `requestedAt`); a completed id never runs again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub id: Option<String>,
    /// When it was requested (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub requested_at: Option<String>,
    /// Who requested it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Echoed by catalyst-api; this controller ALWAYS waits for `approved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_required: Option<bool>,
    /// Operator approval; until true the status shows `FailbackAwaitingApproval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// When it was approved (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_at: Option<String>,
    /// Who approved it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
}

// === status ===

/// Observed state, written by the controller of the region that holds the lease (and by each
/// region's controller for its own conditions).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinuumStatus {
    /// Summary phase (see [`Phase`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The region that is primary right now (moves with switchovers and failovers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_primary: Option<String>,
    /// Upstream's field: a copy of `spec.primaryRegion`. Kept for old consoles; read
    /// `currentPrimary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    /// The lease epoch the current primary writes under; every data-plane write carries it and
    /// lower epochs are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub epoch: Option<i64>,
    /// Region that holds the lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<String>,
    /// When the lease expires (witness clock, RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub lease_expires_at: Option<String>,
    /// Replication lag per standby region (duration string, e.g. `2s`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replication_lag: BTreeMap<String, String>,
    /// The largest value of `replicationLag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_replication_lag: Option<String>,
    /// Measured replication lag in seconds; ABSENT when not measured (never a fake 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replication_lag_seconds: Option<i64>,
    /// Measured replication lag in WAL bytes; absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replication_lag_bytes: Option<i64>,
    /// The last switchover, failover or failback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_switchover: Option<LastSwitchover>,
    /// Conditions: `Ready`, `LeaseHeld`, `StandbyAvailable`, `LastSwitchoverHealthy`,
    /// `RejoinRepair`, and the controller's own (`SelfFenced`, `DurabilityDegraded`,
    /// `FailbackAwaitingApproval`, `HoldDown`, …): one entry per type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<StatusCondition>,
    /// The LUA records last committed to DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_lua_record: Option<LuaRecordSet>,
    /// When `lastLuaRecord` was committed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_lua_record_at: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// True while a switchover/failover/failback runs (see `operation`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_in_progress: Option<bool>,
    /// The step the running operation started last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switchover_step: Option<String>,
    /// Whether the hot standby is reachable and following.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_available: Option<bool>,
    /// True when the standby is gone (not merely lagging).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hot_standby_absent: Option<bool>,
    /// The standby's CNPG `Cluster` (or `application_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_replica_cluster: Option<String>,
    /// The last rebuild (re-clone) episode of a diverged standby.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoin_repair: Option<RejoinRepair>,
    /// The operation in progress, persisted BEFORE each external write so a restarted
    /// controller resumes or compensates it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "operation_schema")]
    pub operation: Option<Operation>,
    /// Ids of switchover/failback requests that completed (most recent last); a request whose
    /// id is here never runs again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub completed_requests: Vec<String>,
}

/// Summary: `Healthy` (the primary holds the lease, the standby follows), `Degraded` (see
/// conditions), `SwitchingOver` (a switchover or failback runs), `FailedOver` (after an
/// unplanned failover; failback pending), `Fenced` (this region fenced itself), `Rebuilding`
/// (the old primary is rebuilt as a standby), `Failed` (invalid spec), `Pending`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Not reconciled yet.
    Pending,
    /// Primary holds the lease, standby following.
    Healthy,
    /// Something needs attention (see conditions).
    Degraded,
    /// A switchover/failback runs.
    SwitchingOver,
    /// An unplanned failover happened; failback pending.
    FailedOver,
    /// The region fenced itself.
    Fenced,
    /// The old primary is being rebuilt as a standby.
    Rebuilding,
    /// The spec is invalid.
    Failed,
}

/// A status condition (upstream's shape: only `type` and `status` required).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    /// Condition type, e.g. `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// Machine-readable reason (CamelCase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `status` last changed (not when it was last written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// The generation the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Condition status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// True.
    True,
    /// False.
    False,
    /// Unknown.
    Unknown,
}

/// The last switchover, failover or failback.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSwitchover {
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub at: Option<String>,
    /// Old primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// New primary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why (`operator-requested`, `failover`, `failback`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `Success` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Operation kind (`switchover`, `failover`, `failback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Request or operation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The epoch the new primary writes under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// Measured time without a writable primary (duration string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_observed: Option<String>,
    /// Measured data loss window (duration string; `0s` for a planned switchover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_observed: Option<String>,
    /// User or `auto-failover`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiated_by: Option<String>,
}

/// Committed LUA records.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LuaRecordSet {
    /// One record per hostname.
    #[serde(default)]
    pub records: Vec<LuaRecordStatus>,
}

/// One committed LUA record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LuaRecordStatus {
    /// Hostname.
    #[serde(default)]
    pub hostname: String,
    /// The Lua expression PowerDNS evaluates at query time.
    #[serde(default)]
    pub body: String,
    /// DNS TTL.
    #[serde(default)]
    pub ttl: i64,
    /// The primary the record points at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_region: Option<String>,
    /// The epoch in the record's fence comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}

/// A rebuild (re-clone) episode of a diverged standby.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RejoinRepair {
    /// The rebuilt object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: i64,
    /// True once the attempts are exhausted (operator needed).
    #[serde(default)]
    pub bounded: bool,
    /// Detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Last attempt (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub at: Option<String>,
}

/// Schema of `status.operation` ([`crate::decide::Operation`] as serialized: `startedAt` is
/// epoch milliseconds, `lsn` the LSN as a 64-bit integer).
fn operation_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "description": "The operation in progress, persisted BEFORE each external write so a restarted controller resumes or compensates it.",
        "required": ["id", "kind", "step", "epoch", "startedAt"],
        "properties": {
            "id": {"type": "string", "description": "Operation id (the request id for switchover/failback)."},
            "kind": {
                "type": "string",
                "enum": ["switchover", "failback", "failover", "self-fence", "rebuild"],
                "description": "What the operation does."
            },
            "step": {"type": "string", "description": "The step started last (e.g. drain, demote, promote, flip-dns)."},
            "epoch": {"type": "integer", "format": "int64", "minimum": 0, "description": "The lease epoch the operation acts under."},
            "startedAt": {"type": "integer", "format": "int64", "description": "Wall-clock start, milliseconds since the Unix epoch."},
            "lsn": {"type": "integer", "format": "int64", "minimum": 0, "description": "The demotion LSN once the source demoted."},
            "target": {"type": "string", "description": "Target region (switchover/failback)."}
        }
    })
}

/// Condition types upstream writes, plus the ones the controller adds.
pub mod conditions {
    /// The local region's controller holds the lease.
    pub const LEASE_HELD: &str = "LeaseHeld";
    /// Summary readiness (`Healthy`/`FailedOver` ⇒ True).
    pub const READY: &str = "Ready";
    /// Result of the post-switchover health check.
    pub const LAST_SWITCHOVER_HEALTHY: &str = "LastSwitchoverHealthy";
    /// The hot standby is reachable and following.
    pub const STANDBY_AVAILABLE: &str = "StandbyAvailable";
    /// A diverged standby is being rebuilt.
    pub const REJOIN_REPAIR: &str = "RejoinRepair";
}

/// The status condition type of a decision-core condition (its variant name).
pub fn condition_type(kind: ConditionKind) -> &'static str {
    match kind {
        ConditionKind::SelfFenced => "SelfFenced",
        ConditionKind::LeaseHeldByPeer => "LeaseHeldByPeer",
        ConditionKind::WitnessUnreachable => "WitnessUnreachable",
        ConditionKind::ReplicationLagAboveRpo => "ReplicationLagAboveRpo",
        ConditionKind::AutoFailoverDisabled => "AutoFailoverDisabled",
        ConditionKind::DurabilityDegraded => "DurabilityDegraded",
        ConditionKind::WritesBlockedAwaitingSyncStandby => "WritesBlockedAwaitingSyncStandby",
        ConditionKind::FailbackAwaitingApproval => "FailbackAwaitingApproval",
        ConditionKind::NeedsRebuild => "NeedsRebuild",
        ConditionKind::SwitchoverBlocked => "SwitchoverBlocked",
        ConditionKind::HoldDown => "HoldDown",
        ConditionKind::DatabaseDown => "DatabaseDown",
    }
}

/// The CRD as YAML, exactly as `crdgen` writes it (deterministic: the same build always
/// produces the same bytes).
pub fn crd_yaml() -> Result<String, CrdError> {
    let body = serde_yaml::to_string(&Continuum::crd()).map_err(CrdError::Render)?;
    Ok(format!(
        "# Generated by `cargo run -p continuum-controller --bin crdgen`; do not edit.\n{body}"
    ))
}
