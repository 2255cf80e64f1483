//! Golden LUA bodies for every placement (`tests/golden/<case>.lua`), and upstream's two
//! active-hotstandby golden bodies (`internal/dns/testdata`) reproduced except for the two
//! documented differences (see `pdm_client::lua`).
//!
//! Regenerate after a deliberate change with `UPDATE_GOLDEN=1 cargo test -p pdm-client --test
//! lua_golden`, then review the diff.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

use std::path::PathBuf;

use pdm_client::lua::{self, Placement, PlacementSpec, RegionSpec, WARM_TTL};
use pdm_client::{DnsUpdate, Epoch};

const FSN: &str = "hz-fsn-rtz-prod";
const HEL: &str = "hz-hel-rtz-prod";
const NBG: &str = "hz-nbg-rtz-prod";

/// Upstream `active-hotstandby-fsn-primary.golden` (TTL 30).
const UPSTREAM_FSN: &str = r#"ifurlup("https://probe-fsn.example.com/healthz", {{"5.1.2.3", "5.1.2.4"}, {"5.5.6.7"}}, {selector="pickfirst", interval=5, timeout=2})"#;
/// Upstream `active-hotstandby-hel-promoted.golden` (TTL 30).
const UPSTREAM_HEL: &str = r#"ifurlup("https://probe-hel.example.com/healthz", {{"5.5.6.7"}, {"5.1.2.3", "5.1.2.4"}}, {selector="pickfirst", interval=5, timeout=2})"#;

/// Upstream's inputs: fsn has two load balancers, hel one.
fn upstream_regions(placement: Placement, primary: &str) -> PlacementSpec {
    PlacementSpec::new(placement, primary)
        .region(RegionSpec::new(FSN, ["5.1.2.3", "5.1.2.4"]))
        .region(RegionSpec::new(HEL, ["5.5.6.7"]))
}

/// Three regions given out of order, to show the ordering rule.
fn three_regions(placement: Placement, primary: &str) -> PlacementSpec {
    PlacementSpec::new(placement, primary)
        .region(RegionSpec::new(NBG, ["5.9.9.9"]).weight(5))
        .region(RegionSpec::new(HEL, ["5.5.6.7"]).weight(15))
        .region(RegionSpec::new(FSN, ["5.1.2.3", "5.1.2.4"]).weight(40))
}

fn cases() -> Vec<(&'static str, PlacementSpec, u32)> {
    let url = "https://probe.example.com/healthz";
    vec![
        (
            "single-region",
            upstream_regions(Placement::SingleRegion, FSN),
            30,
        ),
        (
            "active-active-url",
            three_regions(Placement::ActiveActive, HEL).probe_url(url),
            30,
        ),
        (
            "active-active-tcp",
            three_regions(Placement::ActiveActive, FSN)
                .probe_port(443)
                .timing(1, 1),
            30,
        ),
        (
            "active-active-closest",
            three_regions(Placement::ActiveActive, FSN)
                .probe_url(url)
                .closest(),
            30,
        ),
        (
            "active-hotstandby-fsn-primary",
            upstream_regions(Placement::ActiveHotStandby, FSN)
                .probe_url(lua::upstream_probe_url("https://example.com/healthz", FSN).unwrap()),
            30,
        ),
        (
            "active-hotstandby-hel-promoted",
            upstream_regions(Placement::ActiveHotStandby, HEL)
                .probe_url(lua::upstream_probe_url("https://example.com/healthz", HEL).unwrap()),
            30,
        ),
        (
            "active-hotstandby-three-regions",
            three_regions(Placement::ActiveHotStandby, HEL).probe_url(url),
            30,
        ),
        (
            "active-hotstandby-tcp",
            upstream_regions(Placement::ActiveHotStandby, FSN).probe_port(8443),
            30,
        ),
        (
            "active-passive-warm",
            upstream_regions(Placement::ActivePassiveWarm, FSN).probe_url(url),
            WARM_TTL,
        ),
        (
            "weighted-canary",
            three_regions(Placement::WeightedCanary, FSN),
            30,
        ),
    ]
}

fn golden_path(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{case}.lua"))
}

#[test]
fn every_placement_matches_its_golden_body() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut seen = std::collections::BTreeSet::new();
    for (case, spec, ttl) in cases() {
        let rendered = lua::render(&spec).unwrap_or_else(|e| panic!("{case}: {e}"));
        seen.insert(spec.placement);
        assert_eq!(rendered.ttl, ttl, "{case}");
        let path = golden_path(case);
        let got = format!("{}\n", rendered.body);
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "{case}: {}: {e} (UPDATE_GOLDEN=1 writes it)",
                path.display()
            )
        });
        assert_eq!(got, want, "{case}: body differs from {}", path.display());
    }
    assert_eq!(
        seen.len(),
        Placement::ALL.len(),
        "a placement has no golden case"
    );
}

/// The two deliberate differences, and nothing else: `"` → `'` (PowerDNS splits LUA content on
/// `"`), and `selector='all'` instead of `'pickfirst'` (4.7 has no pickfirst).
#[test]
fn upstream_goldens_are_reproduced_except_quotes_and_selector() {
    for (primary, upstream) in [(FSN, UPSTREAM_FSN), (HEL, UPSTREAM_HEL)] {
        let probe = lua::upstream_probe_url("https://example.com/healthz", primary).unwrap();
        let spec = upstream_regions(Placement::ActiveHotStandby, primary).probe_url(probe);
        let ours = lua::render(&spec).unwrap();
        let expected = upstream
            .replace('"', "'")
            .replace("selector='pickfirst'", "selector='all'");
        assert_eq!(ours.body.as_str(), expected, "{primary}");
        assert_eq!(ours.ttl, 30);
        assert_eq!(ours.primary_region, primary);
        // Upstream's body cannot be stored as `A "<body>"` as is; ours can.
        assert!(upstream.contains('"'));
        assert!(!ours.body.as_str().contains('"'));
    }
}

/// The PDM wire body upstream's controller sends, for the fsn golden (records sorted by name).
#[test]
fn lua_commit_body_matches_upstreams_wire_shape() {
    let probe = lua::upstream_probe_url("https://example.com/healthz", FSN).unwrap();
    let spec = upstream_regions(Placement::ActiveHotStandby, FSN).probe_url(probe);
    let rendered = lua::render(&spec).unwrap();
    let update = DnsUpdate::new("example.com", Epoch(1))
        .records(["web.example.com", "api.example.com"], &rendered);
    let body = serde_json::to_string(&update.to_lua_commit()).unwrap();
    let lua = UPSTREAM_FSN
        .replace('"', "'")
        .replace("selector='pickfirst'", "selector='all'");
    assert_eq!(
        body,
        format!(
            r#"{{"zone":"example.com","records":[{{"hostname":"api.example.com","luaBody":"{lua}","ttl":30,"primaryRegion":"hz-fsn-rtz-prod"}},{{"hostname":"web.example.com","luaBody":"{lua}","ttl":30,"primaryRegion":"hz-fsn-rtz-prod"}}]}}"#
        )
    );
}

#[test]
fn expected_answers_follow_the_placement() {
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    let hs =
        lua::render(&upstream_regions(Placement::ActiveHotStandby, HEL).probe_port(1)).unwrap();
    assert_eq!(hs.healthy_answer, Some([ip("5.5.6.7")].into()));
    assert_eq!(
        hs.failover_answer,
        Some([ip("5.1.2.3"), ip("5.1.2.4")].into())
    );
    let aa = lua::render(&three_regions(Placement::ActiveActive, HEL).probe_port(1)).unwrap();
    assert_eq!(aa.healthy_answer.as_ref().map(|s| s.len()), Some(4));
    let canary = lua::render(&three_regions(Placement::WeightedCanary, HEL)).unwrap();
    assert_eq!(canary.healthy_answer, None);
    assert_eq!(canary.all_addresses.len(), 4);
}
