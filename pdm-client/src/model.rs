//! Wire types: the PowerDNS Authoritative HTTP API subset we use, upstream's PDM `lua/commit`
//! body, PDM's documented pool endpoints (`core/pool-domain-manager/api/openapi.yaml`), and the
//! fencing comment stored on each RRset.

use serde::{Deserialize, Serialize};

// === PowerDNS Authoritative API (`/api/v1/servers/{server}/zones…`) ===

/// A zone as `GET /zones/{zone}` returns it (fields we read) and `POST /zones` takes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Zone {
    /// Canonical name with the trailing dot.
    pub name: String,
    /// `Native`, `Master` or `Slave`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Only on create: the NS names PowerDNS writes into the apex NS RRset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The RRsets (all of them, or the ones selected with `rrset_name`/`rrset_type`).
    #[serde(default)]
    pub rrsets: Vec<RrSet>,
}

/// One RRset. In a PATCH, `changetype` says what to do; `records` and `comments`, when present,
/// replace the stored ones in the same transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RrSet {
    /// Owner name with the trailing dot.
    pub name: String,
    /// Record type, `LUA` for our records.
    #[serde(rename = "type")]
    pub rtype: String,
    /// TTL in seconds (absent on DELETE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// `REPLACE` or `DELETE` in a PATCH; absent when reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changetype: Option<ChangeType>,
    /// The records.
    #[serde(default)]
    pub records: Vec<Record>,
    /// The comments; ours carries the fencing epoch ([`FenceComment`]).
    #[serde(default)]
    pub comments: Vec<Comment>,
}

/// PATCH change types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ChangeType {
    /// Replace the RRset (records and comments) atomically.
    Replace,
    /// Delete the RRset.
    Delete,
}

/// One record of an RRset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Zone-file content; for a LUA record `A "<lua>"`.
    pub content: String,
    /// Disabled records are not served.
    #[serde(default)]
    pub disabled: bool,
}

/// An RRset comment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comment {
    /// Free text; ours is a [`FenceComment`].
    pub content: String,
    /// Who wrote it.
    #[serde(default)]
    pub account: String,
    /// Unix seconds, set by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<u64>,
}

/// `PATCH /zones/{zone}` body. All RRsets of one PATCH are applied in one backend transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZonePatch {
    /// The changes.
    pub rrsets: Vec<RrSet>,
}

/// PowerDNS error body `{"error": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PdnsError {
    /// The message.
    #[serde(default)]
    pub error: String,
}

// === fencing comment ===

/// The comment every LUA RRset we write carries:
/// `openova-dns-fence epoch=<n> writer=<writer> primary=<region>`.
///
/// Only comments starting with [`FenceComment::MARKER`] count; other comments (operators' notes)
/// are ignored when reading and dropped when we replace the RRset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceComment {
    /// The fencing epoch of the write.
    pub epoch: u64,
    /// Who wrote it (e.g. the controller's region).
    pub writer: String,
    /// The primary region the body points at.
    pub primary: String,
}

impl FenceComment {
    /// First word of our comments.
    pub const MARKER: &'static str = "openova-dns-fence";
    /// The `account` field of our comments.
    pub const ACCOUNT: &'static str = "pdm-client";

    /// The comment text.
    pub fn render(&self) -> String {
        format!(
            "{} epoch={} writer={} primary={}",
            Self::MARKER,
            self.epoch,
            field(&self.writer),
            field(&self.primary)
        )
    }

    /// Parses one comment text; `None` if it is not ours or has no valid epoch.
    pub fn parse(content: &str) -> Option<Self> {
        let mut words = content.split_whitespace();
        if words.next()? != Self::MARKER {
            return None;
        }
        let mut out = FenceComment {
            epoch: 0,
            writer: String::new(),
            primary: String::new(),
        };
        let mut epoch = None;
        for word in words {
            match word.split_once('=') {
                Some(("epoch", v)) => epoch = Some(v.parse().ok()?),
                Some(("writer", v)) => out.writer = v.to_owned(),
                Some(("primary", v)) => out.primary = v.to_owned(),
                _ => {}
            }
        }
        out.epoch = epoch?;
        Some(out)
    }

    /// The highest-epoch fence comment among `comments`.
    pub fn highest(comments: &[Comment]) -> Option<Self> {
        comments
            .iter()
            .filter_map(|c| Self::parse(&c.content))
            .max_by_key(|f| f.epoch)
    }
}

/// A comment field value: whitespace would split it, so it is replaced.
fn field(value: &str) -> String {
    if value.is_empty() {
        "-".to_owned()
    } else {
        value.replace(char::is_whitespace, "_")
    }
}

// === PDM: upstream's `POST /v1/lua/commit` (`internal/pdm/client.go`) ===

/// Body upstream's controller sends: `{"zone": …, "records": [...]}`, records sorted by hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LuaCommit {
    /// The zone, e.g. `example.com` (upstream: `spec.pdmZone`, else first hostname minus its
    /// first label).
    pub zone: String,
    /// One record per hostname.
    pub records: Vec<LuaCommitRecord>,
}

/// One record of a [`LuaCommit`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LuaCommitRecord {
    /// Fully qualified name without the trailing dot.
    pub hostname: String,
    /// The LUA body (without the `A "…"` wrapper).
    pub lua_body: String,
    /// DNS TTL in seconds.
    pub ttl: u32,
    /// The region the body points at first.
    pub primary_region: String,
}

// === PDM: documented pool endpoints (`/api/v1/…`) ===

/// `GET /healthz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `ok` or `unhealthy`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub status: String,
    /// The pool domains this PDM manages.
    #[serde(default, deserialize_with = "null_as_default")]
    pub managed_domains: Vec<String>,
}

/// `GET /api/v1/reserved`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservedList {
    /// Reserved subdomain labels.
    #[serde(default, deserialize_with = "null_as_default")]
    pub reserved: Vec<String>,
}

/// `GET /api/v1/pool/{domain}/check?sub=` (always HTTP 200; read `available`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Whether the subdomain can be reserved.
    #[serde(default, deserialize_with = "null_as_default")]
    pub available: bool,
    /// Machine-readable reason when not available (e.g. `invalid-format`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub reason: String,
    /// Human-readable detail.
    #[serde(default, deserialize_with = "null_as_default")]
    pub detail: String,
    /// The full name.
    #[serde(default, deserialize_with = "null_as_default")]
    pub fqdn: String,
}

/// `POST /api/v1/pool/{domain}/reserve` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReserveRequest {
    /// The label to reserve.
    pub subdomain: String,
    /// Who asks (free text).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub created_by: String,
}

/// An allocation as the pool endpoints return it (`ReserveResponse`, `allocationResponse`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// The pool domain.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pool_domain: String,
    /// The label.
    #[serde(default, deserialize_with = "null_as_default")]
    pub subdomain: String,
    /// `reserved` or `active`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub state: String,
    /// RFC 3339.
    #[serde(default, deserialize_with = "null_as_default")]
    pub reserved_at: String,
    /// RFC 3339; reservations only.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub expires_at: String,
    /// Needed by commit.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub reservation_token: String,
    /// Who reserved it.
    #[serde(default, deserialize_with = "null_as_default")]
    pub created_by: String,
    /// Active allocations: the sovereign's FQDN.
    #[serde(
        default,
        rename = "sovereignFQDN",
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub sovereign_fqdn: String,
    /// Active allocations: the load balancer address.
    #[serde(
        default,
        rename = "loadBalancerIP",
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub load_balancer_ip: String,
}

/// `POST /api/v1/pool/{domain}/commit` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolCommitRequest {
    /// The reserved label.
    pub subdomain: String,
    /// From the reservation.
    pub reservation_token: String,
    /// The sovereign's FQDN.
    #[serde(rename = "sovereignFQDN")]
    pub sovereign_fqdn: String,
    /// IPv4 of the sovereign's load balancer.
    #[serde(rename = "loadBalancerIP")]
    pub load_balancer_ip: String,
}

/// `DELETE /api/v1/pool/{domain}/release` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The label to free.
    pub subdomain: String,
}

/// `GET /api/v1/pool/{domain}/list`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationList {
    /// The pool domain.
    #[serde(default, deserialize_with = "null_as_default")]
    pub pool_domain: String,
    /// Every allocation.
    #[serde(default, deserialize_with = "null_as_default")]
    pub allocations: Vec<Allocation>,
}

/// PDM error body `{"error": "...", "detail": "..."}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PdmError {
    /// Machine-readable code (`conflict`, `not-found`, …).
    #[serde(default, deserialize_with = "null_as_default")]
    pub error: String,
    /// Human-readable detail.
    #[serde(default, deserialize_with = "null_as_default")]
    pub detail: String,
}

/// PDM is written in Go, whose encoder never writes `null` for a string; tolerate it anyway.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fence_comment_round_trips_and_ignores_foreign_comments() {
        let f = FenceComment {
            epoch: 42,
            writer: "hz fsn".into(),
            primary: "hz-hel-rtz-prod".into(),
        };
        let text = f.render();
        assert_eq!(
            text,
            "openova-dns-fence epoch=42 writer=hz_fsn primary=hz-hel-rtz-prod"
        );
        let back = FenceComment::parse(&text).unwrap();
        assert_eq!(back.epoch, 42);
        assert_eq!(back.writer, "hz_fsn");
        assert_eq!(FenceComment::parse("set by hand epoch=99"), None);
        assert_eq!(FenceComment::parse("openova-dns-fence epoch=x"), None);
        assert_eq!(FenceComment::parse("openova-dns-fence writer=a"), None);
        let comments = [
            Comment {
                content: "note".into(),
                ..Comment::default()
            },
            Comment {
                content: "openova-dns-fence epoch=3".into(),
                ..Comment::default()
            },
            Comment {
                content: "openova-dns-fence epoch=9".into(),
                ..Comment::default()
            },
        ];
        assert_eq!(FenceComment::highest(&comments).unwrap().epoch, 9);
    }

    #[test]
    fn lua_commit_has_upstreams_field_names() {
        let body = LuaCommit {
            zone: "example.com".into(),
            records: vec![LuaCommitRecord {
                hostname: "api.example.com".into(),
                lua_body: "x".into(),
                ttl: 30,
                primary_region: "hz-hel-rtz-prod".into(),
            }],
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"zone":"example.com","records":[{"hostname":"api.example.com","luaBody":"x","ttl":30,"primaryRegion":"hz-hel-rtz-prod"}]}"#
        );
    }

    #[test]
    fn patch_rrsets_serialise_like_the_powerdns_api_expects() {
        let patch = ZonePatch {
            rrsets: vec![RrSet {
                name: "app.dr.test.".into(),
                rtype: "LUA".into(),
                ttl: Some(30),
                changetype: Some(ChangeType::Replace),
                records: vec![Record {
                    content: "A \"{'192.0.2.1'}\"".into(),
                    disabled: false,
                }],
                comments: vec![],
            }],
        };
        let v = serde_json::to_value(&patch).unwrap();
        assert_eq!(v["rrsets"][0]["type"], "LUA");
        assert_eq!(v["rrsets"][0]["changetype"], "REPLACE");
        assert_eq!(v["rrsets"][0]["comments"], serde_json::json!([]));
    }
}
