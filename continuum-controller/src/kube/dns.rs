//! DNS of the Kubernetes mode, chosen by the spec: `spec.dns` names the API (`pdm`: PDM's
//! lua-commit API; `powerdns`: the PowerDNS HTTP API, server `serverId`), its key comes from
//! `apiSecretRef`, and the record from `luaRecord` (hostnames, selector, health check, TTL),
//! `regions[].lbIPs` and `pdmZone`. The flips go through the standalone mode's [`PdmDns`]
//! adapter (epoch in the record's fence comment, lower epochs refused by `pdm-client`).
//!
//! Without `spec.dns` or without `luaRecord.hostnames`, flips are skipped and logged
//! ([`StandaloneDns::Off`]). No authoritative servers are configured for verification here:
//! a flip is done when the API committed it (the standalone mode also verifies by query).

use std::sync::Arc;
use std::time::Duration;

use pdm_client::{Placement, PlacementSpec, RegionSpec};

use super::reconcile::Error;
use crate::adapters::dns::{DnsConfig, PdmDns};
use crate::crd::{ContinuumSpec, DnsBackendKind, LuaSelector};
use crate::standalone::StandaloneDns;

/// The zone of the record: `pdmZone`, else the first hostname minus its first label; always
/// ending in a dot.
pub fn zone(spec: &ContinuumSpec) -> Option<String> {
    let z = spec.pdm_zone.clone().or_else(|| {
        let h = spec.lua_record.as_ref()?.hostnames.first()?;
        h.split_once('.').map(|(_, rest)| rest.to_owned())
    })?;
    let z = z.trim_end_matches('.');
    (!z.is_empty()).then(|| format!("{z}."))
}

/// The placement rendered into the LUA record (pure).
pub fn placement(spec: &ContinuumSpec) -> PlacementSpec {
    let selector = spec
        .lua_record
        .as_ref()
        .map(|l| l.selector)
        .unwrap_or_default();
    let kind = match selector {
        LuaSelector::Pickwhashed => Placement::WeightedCanary,
        LuaSelector::Ifurlup | LuaSelector::Pickclosest | LuaSelector::Pickfirst => {
            Placement::ActiveHotStandby
        }
    };
    let mut p = PlacementSpec::new(kind, spec.primary_region.as_str());
    for r in std::iter::once(&spec.primary_region).chain(&spec.hot_standby_regions) {
        let ips = spec
            .regions
            .iter()
            .find(|e| &e.name == r)
            .map(|e| e.lb_ips.clone())
            .unwrap_or_default();
        p = p.region(RegionSpec::new(r.as_str(), ips));
    }
    if selector == LuaSelector::Pickclosest {
        p = p.closest();
    }
    let Some(lua) = &spec.lua_record else {
        return p;
    };
    if let Some(h) = &lua.health_check {
        p = p.probe_url(h.url.clone()).timing(
            u32::try_from(h.interval_seconds.max(1)).unwrap_or(1),
            u32::try_from(h.timeout_seconds.max(1)).unwrap_or(1),
        );
    }
    if let Some(ttl) = lua.ttl.and_then(|t| u32::try_from(t).ok()) {
        p = p.ttl(ttl);
    }
    p
}

/// Builds the DNS port of one Continuum (`ns` is its namespace, for the API key Secret).
pub async fn build(
    client: &kube::Client,
    ns: &str,
    spec: &ContinuumSpec,
) -> Result<StandaloneDns, Error> {
    let (Some(dns), Some(lua)) = (&spec.dns, &spec.lua_record) else {
        return Ok(StandaloneDns::Off);
    };
    if lua.hostnames.is_empty() {
        return Ok(StandaloneDns::Off);
    }
    let zone = zone(spec).ok_or_else(|| Error::Setup("no DNS zone (pdmZone)".to_owned()))?;
    let key = match &dns.api_secret_ref {
        Some(r) => Some(
            super::reconcile::secret_value(
                client,
                r.namespace.as_deref().unwrap_or(ns),
                &r.name,
                &r.key,
            )
            .await?,
        ),
        None => None,
    };
    let control: Arc<dyn pdm_client::DnsControl> = match dns.backend {
        DnsBackendKind::Pdm => {
            let mut cfg = pdm_client::PdmConfig::new(dns.url.clone());
            cfg.token = key;
            Arc::new(
                pdm_client::PdmClient::new(cfg)
                    .map_err(|e| Error::Setup(format!("PDM client: {e}")))?,
            )
        }
        DnsBackendKind::Powerdns => {
            let mut cfg = pdm_client::PowerDnsConfig::new(dns.url.clone(), key.unwrap_or_default());
            if let Some(id) = &dns.server_id {
                cfg.server_id = id.clone();
            }
            Arc::new(
                pdm_client::PowerDnsBackend::new(cfg)
                    .map_err(|e| Error::Setup(format!("PowerDNS client: {e}")))?,
            )
        }
    };
    Ok(StandaloneDns::PowerDns(Box::new(PdmDns::new(
        control,
        None,
        DnsConfig {
            zone,
            hostnames: lua.hostnames.clone(),
            spec: placement(spec),
            verify_timeout: Duration::from_secs(10),
        },
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContinuumSpec {
        serde_json::from_value(serde_json::json!({
            "applicationRef": "shop", "primaryRegion": "eu-1", "hotStandbyRegions": ["us-1"],
            "leaseClient": {"kind": "cloudflare-kv"},
            "luaRecord": {"selector": "ifurlup", "hostnames": ["shop.example.org"],
                "healthCheck": {"url": "https://shop.example.org/health", "intervalSeconds": 5, "timeoutSeconds": 2}},
            "regions": [{"name": "eu-1", "lbIPs": ["192.0.2.1"]}, {"name": "us-1", "lbIPs": ["192.0.2.2"]}]
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_zone_defaults_to_the_hostnames_parent_and_the_placement_names_every_region() {
        let s = spec();
        assert_eq!(zone(&s).as_deref(), Some("example.org."));
        let mut z = s.clone();
        z.pdm_zone = Some("dr.example.org".into());
        assert_eq!(zone(&z).as_deref(), Some("dr.example.org."));
        let body = pdm_client::lua::body(&placement(&s)).unwrap_or_else(|e| panic!("{e}"));
        let text = body.as_str();
        assert!(
            text.contains("192.0.2.1") && text.contains("192.0.2.2"),
            "{text}"
        );
        assert!(text.contains("ifurlup"), "{text}");
    }
}
