//! PowerDns runs a real PowerDNS Authoritative: zones and rrsets made through its API resolve
//! over real DNS queries (hickory), LUA records included, and instances run side by side.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use testkit::{PowerDns, eventually, free_port};

async fn lookup_a(pdns: &PowerDns, name: &str) -> Result<Vec<Ipv4Addr>, String> {
    let answer = pdns
        .resolver()
        .ipv4_lookup(name)
        .await
        .map_err(|e| e.to_string())?;
    let mut ips: Vec<Ipv4Addr> = answer.iter().map(|a| a.0).collect();
    ips.sort();
    Ok(ips)
}

#[tokio::test]
async fn plain_and_lua_records_resolve_over_dns() {
    let pdns = PowerDns::start().await.expect("start PowerDNS");
    assert!(pdns.dns_addr().ip().is_loopback());
    assert!(pdns.api_url().starts_with("http://127.0.0.1:"));
    assert_eq!(pdns.api_key().len(), 32);

    pdns.create_zone("feas.test").await.expect("create zone");
    pdns.put_rrset("feas.test", "www.feas.test", "A", 60, &["127.0.0.5"])
        .await
        .expect("plain A");
    pdns.put_rrset(
        "feas.test.",
        "lua.feas.test.",
        "LUA",
        60,
        &["A \"'127.0.0.9'\""],
    )
    .await
    .expect("LUA A");

    assert_eq!(
        lookup_a(&pdns, "www.feas.test.").await.expect("www"),
        [Ipv4Addr::new(127, 0, 0, 5)]
    );
    assert_eq!(
        lookup_a(&pdns, "lua.feas.test.").await.expect("lua"),
        [Ipv4Addr::new(127, 0, 0, 9)]
    );
    let soa = pdns
        .resolver()
        .soa_lookup("feas.test.")
        .await
        .expect("SOA of the zone");
    assert_eq!(soa.iter().count(), 1);

    // A record replaced through the API shows in the next answer (caches are off).
    pdns.put_rrset(
        "feas.test",
        "www.feas.test",
        "A",
        60,
        &["127.0.0.6", "127.0.0.7"],
    )
    .await
    .expect("replace A");
    assert_eq!(
        lookup_a(&pdns, "www.feas.test.").await.expect("www again"),
        [Ipv4Addr::new(127, 0, 0, 6), Ipv4Addr::new(127, 0, 0, 7)]
    );
    pdns.delete_rrset("feas.test", "www.feas.test", "A")
        .await
        .expect("delete A");
    assert!(lookup_a(&pdns, "www.feas.test.").await.is_err());
}

#[tokio::test]
async fn lua_ifportup_follows_the_health_checks() {
    let pdns = PowerDns::start().await.expect("start PowerDNS");
    pdns.create_zone("hc.test").await.expect("create zone");
    let port = free_port().expect("free port");
    let body = format!("A \"ifportup({port}, {{'127.0.0.2', '127.0.0.3'}})\"");
    pdns.put_rrset("hc.test", "web.hc.test", "LUA", 5, &[body.as_str()])
        .await
        .expect("LUA ifportup");

    let only = |ip: Ipv4Addr| {
        let pdns = &pdns;
        move || async move {
            let ips = lookup_a(pdns, "web.hc.test.").await?;
            if ips == [ip] {
                Ok(())
            } else {
                Err(format!("answer {ips:?}"))
            }
        }
    };
    let up3 = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 3), port)).expect("listen on .3");
    eventually(
        "only 127.0.0.3 up",
        Duration::from_secs(15),
        only(Ipv4Addr::new(127, 0, 0, 3)),
    )
    .await
    .expect("answer follows the up address");

    drop(up3);
    let _up2 = TcpListener::bind((Ipv4Addr::new(127, 0, 0, 2), port)).expect("listen on .2");
    eventually(
        "only 127.0.0.2 up",
        Duration::from_secs(15),
        only(Ipv4Addr::new(127, 0, 0, 2)),
    )
    .await
    .expect("answer flips to the other address");
}

#[tokio::test]
async fn instances_run_side_by_side() {
    let (a, b) = tokio::join!(PowerDns::start(), PowerDns::start());
    let (a, b) = (a.expect("start a"), b.expect("start b"));
    assert_ne!(a.dns_addr(), b.dns_addr());
    assert_ne!(a.api_key(), b.api_key());
    for (pdns, ip) in [(&a, "127.0.0.11"), (&b, "127.0.0.12")] {
        pdns.create_zone("same.test").await.expect("create zone");
        pdns.put_rrset("same.test", "x.same.test", "A", 60, &[ip])
            .await
            .expect("A");
    }
    assert_eq!(
        lookup_a(&a, "x.same.test.").await.expect("a"),
        [Ipv4Addr::new(127, 0, 0, 11)]
    );
    assert_eq!(
        lookup_a(&b, "x.same.test.").await.expect("b"),
        [Ipv4Addr::new(127, 0, 0, 12)]
    );
}
