//! [`Verifier`]: a flip is done when the authoritative servers answer the new address set.
//!
//! Queries go straight to the given authoritative servers (no recursor, no cache, recursion not
//! requested), over UDP with TCP on truncation, and repeat every poll interval until every server
//! has answered exactly the expected `A` set `consecutive` times in a row, or the deadline passes
//! ([`Error::VerifyTimeout`] with the last answer seen).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use tokio::time::Instant;
use tracing::debug;

use crate::error::{Error, Result, fmt_set};

/// Default time between queries.
pub const DEFAULT_POLL: Duration = Duration::from_millis(50);
/// Per-query timeout: a lost UDP packet costs one poll, not the deadline.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// How a verification went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verified {
    /// From the start of [`Verifier::wait_for`] to the last matching answer.
    pub elapsed: Duration,
    /// Query rounds sent (each round asks every server once).
    pub rounds: u32,
}

/// Asks authoritative servers directly.
#[derive(Debug, Clone)]
pub struct Verifier {
    servers: Vec<(SocketAddr, TokioResolver)>,
    poll: Duration,
    consecutive: u32,
}

impl Verifier {
    /// A verifier asking every server in `servers`; poll [`DEFAULT_POLL`], one matching round.
    pub fn new(servers: impl IntoIterator<Item = SocketAddr>) -> Result<Self> {
        let servers: Vec<_> = servers
            .into_iter()
            .map(|addr| (addr, resolver(addr)))
            .collect();
        if servers.is_empty() {
            return Err(Error::Config("no authoritative servers to verify".into()));
        }
        Ok(Self {
            servers,
            poll: DEFAULT_POLL,
            consecutive: 1,
        })
    }

    /// Time between query rounds.
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Matching rounds required in a row (≥ 1). More than one guards against a lucky answer
    /// while PowerDNS's checks are still cold (it answers at random then).
    pub fn consecutive(mut self, rounds: u32) -> Self {
        self.consecutive = rounds.max(1);
        self
    }

    /// The `A` answer of every server for `name` (NXDOMAIN and NODATA are an empty set).
    pub async fn answers(
        &self,
        name: &str,
    ) -> Vec<(SocketAddr, std::result::Result<BTreeSet<Ipv4Addr>, String>)> {
        let fqdn = fqdn(name);
        let mut out = Vec::with_capacity(self.servers.len());
        for (addr, resolver) in &self.servers {
            out.push((*addr, query(resolver, &fqdn).await));
        }
        out
    }

    /// Polls until every server answers exactly `expected` for `name` (`consecutive` rounds in a
    /// row), or `timeout` passes.
    pub async fn wait_for(
        &self,
        name: &str,
        expected: &BTreeSet<Ipv4Addr>,
        timeout: Duration,
    ) -> Result<Verified> {
        let start = Instant::now();
        let deadline = start + timeout;
        let fqdn = fqdn(name);
        let mut rounds = 0;
        let mut streak = 0;
        loop {
            rounds += 1;
            let mut mismatch = None;
            for (addr, resolver) in &self.servers {
                let got = tokio::time::timeout_at(deadline, query(resolver, &fqdn))
                    .await
                    .unwrap_or_else(|_| Err("no answer before the deadline".into()));
                match got {
                    Ok(set) if &set == expected => {}
                    Ok(set) => mismatch = Some((*addr, fmt_set(&set))),
                    Err(e) => mismatch = Some((*addr, e)),
                }
                if mismatch.is_some() {
                    break;
                }
            }
            match mismatch {
                None => {
                    streak += 1;
                    if streak >= self.consecutive {
                        let elapsed = start.elapsed();
                        debug!(name, rounds, ?elapsed, "authoritative answer verified");
                        return Ok(Verified { elapsed, rounds });
                    }
                }
                Some((server, last)) => {
                    streak = 0;
                    if Instant::now() + self.poll >= deadline {
                        return Err(Error::VerifyTimeout {
                            name: name.to_owned(),
                            server,
                            expected: expected.clone(),
                            last,
                            after: timeout,
                        });
                    }
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}

/// One-shot: [`Verifier::new`] for one server, then [`Verifier::wait_for`].
pub async fn verify(
    server: SocketAddr,
    name: &str,
    expected: &BTreeSet<Ipv4Addr>,
    timeout: Duration,
) -> Result<Verified> {
    Verifier::new([server])?
        .wait_for(name, expected, timeout)
        .await
}

fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

async fn query(
    resolver: &TokioResolver,
    fqdn: &str,
) -> std::result::Result<BTreeSet<Ipv4Addr>, String> {
    match resolver.ipv4_lookup(fqdn).await {
        Ok(lookup) => Ok(lookup.iter().map(|a| a.0).collect()),
        Err(e) => match e.proto().map(|p| p.kind()) {
            // NXDOMAIN or NODATA: an empty answer. SERVFAIL, REFUSED… stay errors.
            Some(ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError | ResponseCode::NXDomain,
                ..
            }) => Ok(BTreeSet::new()),
            Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
                Err(format!("{response_code} for {fqdn}"))
            }
            _ => Err(e.to_string()),
        },
    }
}

/// A resolver that asks only `addr`, with its cache off and recursion not requested.
fn resolver(addr: SocketAddr) -> TokioResolver {
    let servers = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
    let config = ResolverConfig::from_parts(None, vec![], servers);
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.positive_max_ttl = Some(Duration::ZERO);
    opts.negative_max_ttl = Some(Duration::ZERO);
    opts.timeout = QUERY_TIMEOUT;
    opts.attempts = 1;
    opts.recursion_desired = false;
    opts.ndots = 0;
    opts.edns0 = true;
    TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_queried_fully_qualified() {
        assert_eq!(fqdn("app.dr.test"), "app.dr.test.");
        assert_eq!(fqdn("app.dr.test."), "app.dr.test.");
    }

    #[test]
    fn a_verifier_needs_a_server() {
        assert!(matches!(
            Verifier::new(Vec::<SocketAddr>::new()),
            Err(Error::Config(_))
        ));
    }
}
