//! The `pdm-client` `Dns` adapter against a real PowerDNS Authoritative (LUA records, 1 s checks).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use continuum_controller::adapters::dns::{DnsConfig, PdmDns};
use continuum_controller::ports::{Dns, PlaneError};
use pdm_client::{
    DnsControl, Placement, PlacementSpec, PowerDnsBackend, PowerDnsConfig, RegionSpec, Verifier,
};
use testkit::PowerDns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const ZONE: &str = "dr.test";
const HOST: &str = "app.dr.test";

/// One `200 ok` HTTP listener per address, all on one port; aborted on drop.
async fn backends() -> (u16, Vec<tokio::task::JoinHandle<()>>) {
    'port: for _ in 0..20 {
        let port = testkit::free_port().unwrap();
        let mut tasks = Vec::new();
        for ip in [A, B] {
            let Ok(l) = TcpListener::bind(SocketAddr::from((ip, port))).await else {
                continue 'port;
            };
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((mut c, _)) = l.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf).await;
                        let _ = c
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            )
                            .await;
                        let _ = c.shutdown().await;
                    });
                }
            }));
        }
        return (port, tasks);
    }
    panic!("no common free port");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_points_the_record_at_the_new_primary_and_refuses_a_stale_epoch() {
    let pdns = PowerDns::start().await.unwrap();
    let (port, tasks) = backends().await;
    let backend =
        PowerDnsBackend::new(PowerDnsConfig::new(pdns.api_url(), pdns.api_key())).unwrap();
    let control: Arc<dyn DnsControl> = Arc::new(backend);
    let verifier = Verifier::new([pdns.dns_addr()])
        .unwrap()
        .poll(Duration::from_millis(50))
        .consecutive(3);
    let spec = PlacementSpec::new(Placement::ActiveHotStandby, "region-a")
        .region(RegionSpec::new("region-a", [A.to_string()]))
        .region(RegionSpec::new("region-b", [B.to_string()]))
        .probe_url(format!("http://probe.{ZONE}:{port}/healthz"))
        .timing(1, 1);
    let dns = PdmDns::new(
        control.clone(),
        Some(verifier.clone()),
        DnsConfig {
            zone: ZONE.into(),
            hostnames: vec![HOST.into()],
            spec,
            verify_timeout: Duration::from_secs(20),
        },
    );

    dns.flip("region-a", 1).await.unwrap();
    dns.flip("region-b", 2).await.unwrap();
    let stored = control.published(ZONE, HOST).await.unwrap().unwrap();
    assert_eq!(stored.fence.as_ref().map(|f| f.epoch), Some(2));
    // Idempotent.
    dns.flip("region-b", 2).await.unwrap();

    // A writer at a lower epoch is refused and changes nothing.
    let err = dns.flip("region-a", 1).await.unwrap_err();
    assert!(
        matches!(
            err,
            PlaneError::StaleEpoch {
                given: 1,
                applied: 2
            }
        ),
        "{err:?}"
    );
    let stored = control.published(ZONE, HOST).await.unwrap().unwrap();
    assert_eq!(stored.fence.as_ref().map(|f| f.epoch), Some(2));
    verifier
        .wait_for(HOST, &[B].into_iter().collect(), Duration::from_secs(20))
        .await
        .unwrap();
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn flip_against_a_dead_api_is_unavailable() {
    let port = testkit::free_port().unwrap();
    let control: Arc<dyn DnsControl> = Arc::new(
        PowerDnsBackend::new(PowerDnsConfig::new(format!("http://127.0.0.1:{port}"), "k")).unwrap(),
    );
    let dns = PdmDns::new(
        control,
        None,
        DnsConfig {
            zone: ZONE.into(),
            hostnames: vec![HOST.into()],
            spec: PlacementSpec::new(Placement::ActiveHotStandby, "region-a")
                .region(RegionSpec::new("region-a", [A.to_string()]))
                .region(RegionSpec::new("region-b", [B.to_string()]))
                .probe_url(format!("http://probe.{ZONE}:1/healthz")),
            verify_timeout: Duration::from_secs(1),
        },
    );
    let err = dns.flip("region-a", 1).await.unwrap_err();
    assert!(matches!(err, PlaneError::Unavailable(_)), "{err:?}");
}
