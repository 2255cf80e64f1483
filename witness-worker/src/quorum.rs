//! DNS-quorum view of a lease slot: strictly weaker than the witness and read-only by default.
//!
//! After every successful renew the holder publishes a TXT record
//! `holder|acquiredAt|expiresAt|epoch` (RFC 3339 times from the witness's answer) for the slot
//! on N ≥ 3 independent authoritative servers ([`Publisher`], through the PowerDNS API).
//! [`QuorumReader`] asks each server directly (hickory-resolver, no recursion, no cache) and
//! [`majority`] returns the view that at least ⌊N/2⌋+1 servers agree on, or no quorum.
//!
//! It may only *confirm* that the current holder is alive while the witness is unreachable —
//! it never grants. Takeover through it is opt-in and follows `spec/peers.md` §2.3 rule 11
//! exactly ([`takeover`]): never while the witness answers, only when a majority agrees the
//! lease expired, only after `lease TTL + max DNS TTL + margin` past that expiry, and with an
//! epoch above the quorum's so the witness (whose epoch floor must be raised to it on return)
//! never reissues it.

use contract::{LeaseState, Millis};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use std::net::SocketAddr;
use std::time::Duration;

/// Default domain under which slots are published.
pub const DEFAULT_DOMAIN: &str = "lease.openova.io";

/// One published heartbeat of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TxtRecord {
    /// Holder.
    pub holder: String,
    /// Grant time (witness clock).
    pub acquired_at: Millis,
    /// Expiry (witness clock).
    pub expires_at: Millis,
    /// Fencing epoch.
    pub epoch: u64,
}

/// A TXT value that is not `holder|acquiredAt|expiresAt|epoch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TXT value {0:?} is not holder|acquiredAt|expiresAt|epoch")]
pub struct TxtParseError(pub String);

impl TxtRecord {
    /// From a held lease state (None when the state is free).
    pub fn from_state(s: &LeaseState) -> Option<TxtRecord> {
        Some(TxtRecord {
            holder: s.holder.clone(),
            acquired_at: s.acquired_at?,
            expires_at: s.expires_at?,
            epoch: s.epoch,
        })
        .filter(|r| !r.holder.is_empty())
    }

    /// The TXT value.
    pub fn render(&self) -> String {
        format!(
            "{}|{}|{}|{}",
            self.holder,
            self.acquired_at.to_rfc3339(),
            self.expires_at.to_rfc3339(),
            self.epoch
        )
    }

    /// Parses a TXT value.
    pub fn parse(s: &str) -> Result<TxtRecord, TxtParseError> {
        let bad = || TxtParseError(s.to_owned());
        let parts: Vec<&str> = s.split('|').collect();
        let [holder, acq, exp, epoch] = parts.as_slice() else {
            return Err(bad());
        };
        if holder.is_empty() {
            return Err(bad());
        }
        Ok(TxtRecord {
            holder: (*holder).to_owned(),
            acquired_at: Millis::parse_rfc3339(acq).map_err(|_| bad())?,
            expires_at: Millis::parse_rfc3339(exp).map_err(|_| bad())?,
            epoch: epoch.parse().map_err(|_| bad())?,
        })
    }
}

/// The owner name of a slot's TXT record (`/` in slot names becomes `_`).
pub fn fqdn(slot: &str, domain: &str) -> String {
    format!(
        "{}.{}.",
        slot.replace('/', "_"),
        domain.trim_end_matches('.')
    )
}

/// What one server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A well-formed record.
    Record(TxtRecord),
    /// NXDOMAIN / no TXT: nothing published (free).
    Free,
    /// No answer in time.
    Unreachable(String),
    /// An answer that is not a single well-formed record.
    Garbled(String),
}

/// The majority view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumView {
    /// At least a majority of all configured servers gave the same answer.
    Agreed {
        /// The agreed record (None: agreed that nothing is published).
        record: Option<TxtRecord>,
        /// How many agreed.
        votes: usize,
        /// Of how many servers.
        of: usize,
    },
    /// No answer reached a majority of the configured servers.
    NoQuorum {
        /// Every server's answer, in configuration order.
        answers: Vec<Answer>,
    },
}

/// The majority of `answers` (one per configured server). Unreachable and garbled answers
/// count against every view: the majority is of all servers, not of those that answered.
pub fn majority(answers: &[Answer]) -> QuorumView {
    let need = answers.len() / 2 + 1;
    let mut counts: Vec<(Option<&TxtRecord>, usize)> = Vec::new();
    for a in answers {
        let key = match a {
            Answer::Record(r) => Some(r),
            Answer::Free => None,
            Answer::Unreachable(_) | Answer::Garbled(_) => continue,
        };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    match counts.into_iter().find(|(_, n)| *n >= need) {
        Some((record, votes)) if !answers.is_empty() => QuorumView::Agreed {
            record: record.cloned(),
            votes,
            of: answers.len(),
        },
        _ => QuorumView::NoQuorum {
            answers: answers.to_vec(),
        },
    }
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// Fewer than three servers: no meaningful majority.
    #[error("DNS quorum needs at least 3 independent servers, got {0}")]
    TooFewServers(usize),
    /// Publishing failed on too many servers.
    #[error("published on {ok} of {of} servers; a majority is needed: {errors:?}")]
    NotPublished {
        /// Servers written.
        ok: usize,
        /// Servers configured.
        of: usize,
        /// Per-server errors.
        errors: Vec<String>,
    },
}

/// Reads a slot's TXT record from each authoritative server directly.
pub struct QuorumReader {
    resolvers: Vec<Resolver<TokioConnectionProvider>>,
    domain: String,
}

impl QuorumReader {
    /// One resolver per server, no cache, no retries beyond `timeout`.
    pub fn new(
        servers: &[SocketAddr],
        domain: &str,
        timeout: Duration,
    ) -> Result<QuorumReader, QuorumError> {
        if servers.len() < 3 {
            return Err(QuorumError::TooFewServers(servers.len()));
        }
        let resolvers = servers
            .iter()
            .map(|s| {
                let group = NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true);
                let mut opts = ResolverOpts::default();
                opts.timeout = timeout;
                opts.attempts = 1;
                opts.cache_size = 0;
                opts.recursion_desired = false;
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
                .with_options(opts)
                .build()
            })
            .collect();
        Ok(QuorumReader {
            resolvers,
            domain: domain.to_owned(),
        })
    }

    /// Asks every server at once and returns their answers in configuration order.
    pub async fn answers(&self, slot: &str) -> Vec<Answer> {
        // from_ascii, not IDNA: slot labels may carry `_` (upstream's `/` replacement).
        let name = match hickory_resolver::Name::from_ascii(fqdn(slot, &self.domain)) {
            Ok(n) => n,
            Err(e) => {
                let bad = Answer::Garbled(format!("slot {slot:?} is not a DNS name: {e}"));
                return vec![bad; self.resolvers.len()];
            }
        };
        let asks = self.resolvers.iter().map(|r| {
            let name = name.clone();
            async move {
                match r.txt_lookup(name).await {
                    Ok(l) => {
                        let values: Vec<String> = l
                            .iter()
                            .map(|t| {
                                t.txt_data()
                                    .iter()
                                    .map(|d| String::from_utf8_lossy(d).into_owned())
                                    .collect::<String>()
                            })
                            .collect();
                        match values.as_slice() {
                            [one] => TxtRecord::parse(one)
                                .map(Answer::Record)
                                .unwrap_or_else(|e| Answer::Garbled(e.to_string())),
                            _ => Answer::Garbled(format!("{} TXT values", values.len())),
                        }
                    }
                    Err(e) if e.is_nx_domain() || e.is_no_records_found() => Answer::Free,
                    Err(e) => Answer::Unreachable(e.to_string()),
                }
            }
        });
        futures_util::future::join_all(asks).await
    }

    /// The majority view of `slot`.
    pub async fn read(&self, slot: &str) -> QuorumView {
        majority(&self.answers(slot).await)
    }
}

/// Writes a slot's TXT record to each server through the PowerDNS HTTP API.
pub struct Publisher {
    http: reqwest::Client,
    /// (API base URL, API key) per server, e.g. (`http://127.0.0.1:8081`, key).
    servers: Vec<(String, String)>,
    zone: String,
    domain: String,
    ttl: u32,
}

impl Publisher {
    /// `zone` is the PowerDNS zone that contains `domain` (often the same).
    pub fn new(servers: Vec<(String, String)>, zone: &str, domain: &str, ttl: u32) -> Publisher {
        Publisher {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()
                .unwrap_or_default(),
            servers,
            zone: format!("{}.", zone.trim_end_matches('.')),
            domain: domain.to_owned(),
            ttl,
        }
    }

    /// Publishes `state` (a free state deletes the record) on every server; succeeds when a
    /// majority took it.
    pub async fn publish(&self, slot: &str, state: &LeaseState) -> Result<usize, QuorumError> {
        let name = fqdn(slot, &self.domain);
        let rrset = match TxtRecord::from_state(state) {
            Some(r) => serde_json::json!({
                "name": name, "type": "TXT", "ttl": self.ttl, "changetype": "REPLACE",
                "records": [{"content": format!("\"{}\"", r.render()), "disabled": false}],
            }),
            None => serde_json::json!({"name": name, "type": "TXT", "changetype": "DELETE"}),
        };
        let body = serde_json::json!({ "rrsets": [rrset] });
        let writes = self.servers.iter().map(|(api, key)| {
            let url = format!("{api}/api/v1/servers/localhost/zones/{}", self.zone);
            let req = self.http.patch(url).header("X-API-Key", key).json(&body);
            async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!("{api}: HTTP {}", r.status())),
                    Err(e) => Err(format!("{api}: {e}")),
                }
            }
        });
        let results = futures_util::future::join_all(writes).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        if ok > self.servers.len() / 2 {
            Ok(ok)
        } else {
            Err(QuorumError::NotPublished {
                ok,
                of: self.servers.len(),
                errors: results.into_iter().filter_map(Result::err).collect(),
            })
        }
    }
}

/// Opt-in takeover settings (rule 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeoverPolicy {
    /// Off by default: the quorum then only ever confirms.
    pub enabled: bool,
    /// The lease TTL, ms.
    pub lease_ttl_ms: i64,
    /// The largest TTL of the published TXT records, ms.
    pub max_dns_ttl_ms: i64,
    /// Extra propagation margin, ms.
    pub margin_ms: i64,
}

/// Why a takeover is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TakeoverRefused {
    /// Takeover is not enabled.
    #[error("DNS-quorum takeover is disabled (read-only quorum)")]
    Disabled,
    /// The witness answers: only it may grant.
    #[error("the witness is reachable; only it may grant")]
    WitnessReachable,
    /// No majority view.
    #[error("no DNS quorum")]
    NoQuorum,
    /// The majority says the holder is still within its lease (or the wait is not over).
    #[error("quorum holder {holder:?} is not expired long enough (until {until:?})")]
    NotExpired {
        /// Quorum holder.
        holder: String,
        /// When a takeover could be considered.
        until: Millis,
    },
    /// The quorum's epoch is `u64::MAX`: there is no higher epoch to take over with.
    #[error("no fencing epoch left above the quorum's {0}; refusing rather than reusing it")]
    EpochExhausted(u64),
}

/// Decides whether `holder` may take the slot over through the quorum at `now` (a clock that
/// must be compared with the published witness times; the wait includes a margin for skew).
/// On success returns the epoch to use, above anything the quorum has seen.
pub fn takeover(
    policy: &TakeoverPolicy,
    witness_reachable: bool,
    view: &QuorumView,
    now: Millis,
) -> Result<u64, TakeoverRefused> {
    if !policy.enabled {
        return Err(TakeoverRefused::Disabled);
    }
    if witness_reachable {
        return Err(TakeoverRefused::WitnessReachable);
    }
    let QuorumView::Agreed { record, .. } = view else {
        return Err(TakeoverRefused::NoQuorum);
    };
    match record {
        // Nothing ever published: there is no epoch to fence above; refuse rather than guess.
        None => Err(TakeoverRefused::NoQuorum),
        Some(r) => {
            let until = r
                .expires_at
                .plus(policy.lease_ttl_ms)
                .plus(policy.max_dns_ttl_ms)
                .plus(policy.margin_ms);
            if now < until {
                Err(TakeoverRefused::NotExpired {
                    holder: r.holder.clone(),
                    until,
                })
            } else {
                r.epoch
                    .checked_add(1)
                    .ok_or(TakeoverRefused::EpochExhausted(r.epoch))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, exp: i64, epoch: u64) -> TxtRecord {
        TxtRecord {
            holder: holder.into(),
            acquired_at: Millis(exp - 30_000),
            expires_at: Millis(exp),
            epoch,
        }
    }

    #[test]
    fn txt_round_trips() {
        let r = rec("region-a", 1_778_493_630_000, 7);
        assert_eq!(
            r.render(),
            "region-a|2026-05-11T10:00:00.000Z|2026-05-11T10:00:30.000Z|7"
        );
        assert_eq!(TxtRecord::parse(&r.render()), Ok(r));
        for bad in [
            "",
            "a|b|c",
            "|2026-05-11T10:00:00Z|2026-05-11T10:00:00Z|1",
            "a|x|y|1",
            "a|2026-05-11T10:00:00Z|2026-05-11T10:00:00Z|-1",
        ] {
            assert!(TxtRecord::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            fqdn("app/db", "lease.openova.io"),
            "app_db.lease.openova.io."
        );
    }

    #[test]
    fn majority_is_of_all_servers() {
        let a = Answer::Record(rec("a", 100, 1));
        let b = Answer::Record(rec("b", 100, 2));
        let down = Answer::Unreachable("timeout".into());
        assert!(matches!(
            majority(&[a.clone(), a.clone(), b.clone()]),
            QuorumView::Agreed {
                votes: 2,
                of: 3,
                ..
            }
        ));
        assert!(matches!(
            majority(&[a.clone(), b.clone(), down.clone()]),
            QuorumView::NoQuorum { .. }
        ));
        assert!(matches!(
            majority(&[a.clone(), down.clone(), down.clone()]),
            QuorumView::NoQuorum { .. }
        ));
        assert!(matches!(
            majority(&[a.clone(), a.clone(), down]),
            QuorumView::Agreed { votes: 2, .. }
        ));
        assert!(matches!(
            majority(&[Answer::Free, Answer::Free, a]),
            QuorumView::Agreed { record: None, .. }
        ));
        assert!(matches!(majority(&[]), QuorumView::NoQuorum { .. }));
    }

    #[test]
    fn takeover_follows_rule_11() {
        let p = TakeoverPolicy {
            enabled: true,
            lease_ttl_ms: 30_000,
            max_dns_ttl_ms: 5_000,
            margin_ms: 5_000,
        };
        let v = QuorumView::Agreed {
            record: Some(rec("a", 1_000_000, 4)),
            votes: 3,
            of: 3,
        };
        let off = TakeoverPolicy {
            enabled: false,
            ..p
        };
        assert_eq!(
            takeover(&off, false, &v, Millis(i64::MAX)),
            Err(TakeoverRefused::Disabled)
        );
        assert_eq!(
            takeover(&p, true, &v, Millis(i64::MAX)),
            Err(TakeoverRefused::WitnessReachable)
        );
        assert!(matches!(
            takeover(&p, false, &v, Millis(1_039_999)),
            Err(TakeoverRefused::NotExpired { .. })
        ));
        assert_eq!(takeover(&p, false, &v, Millis(1_040_000)), Ok(5));
        let none = QuorumView::NoQuorum { answers: vec![] };
        assert_eq!(
            takeover(&p, false, &none, Millis(i64::MAX)),
            Err(TakeoverRefused::NoQuorum)
        );
    }

    #[test]
    fn takeover_never_reuses_the_last_epoch() {
        let p = TakeoverPolicy {
            enabled: true,
            lease_ttl_ms: 30_000,
            max_dns_ttl_ms: 5_000,
            margin_ms: 5_000,
        };
        let at = |epoch| QuorumView::Agreed {
            record: Some(rec("a", 1_000_000, epoch)),
            votes: 3,
            of: 3,
        };
        assert_eq!(
            takeover(&p, false, &at(u64::MAX - 1), Millis(i64::MAX)),
            Ok(u64::MAX)
        );
        let top = takeover(&p, false, &at(u64::MAX), Millis(i64::MAX));
        assert_eq!(top, Err(TakeoverRefused::EpochExhausted(u64::MAX)));
    }
}
