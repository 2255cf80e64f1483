//! The DNS-quorum reader and publisher against three real PowerDNS servers (testkit):
//! majority, split, one server down, stale records, and rule 11's takeover decision.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use contract::{LeaseState, Millis};
use std::time::Duration;
use testkit::PowerDns;
use witness_worker::quorum::{
    Publisher, QuorumReader, QuorumView, TakeoverPolicy, TakeoverRefused, TxtRecord, fqdn, takeover,
};

const DOMAIN: &str = "lease.openova.test";

async fn three() -> Vec<PowerDns> {
    let (a, b, c) = tokio::join!(PowerDns::start(), PowerDns::start(), PowerDns::start());
    let servers = vec![a.unwrap(), b.unwrap(), c.unwrap()];
    for s in &servers {
        s.create_zone(DOMAIN).await.unwrap();
    }
    servers
}

fn held(holder: &str, epoch: u64, exp: i64) -> LeaseState {
    LeaseState {
        holder: holder.into(),
        acquired_at: Some(Millis(exp - 30_000)),
        expires_at: Some(Millis(exp)),
        generation: epoch * 10,
        epoch,
        report: None,
    }
}

fn reader(servers: &[PowerDns]) -> QuorumReader {
    let addrs: Vec<_> = servers.iter().map(|s| s.dns_addr()).collect();
    QuorumReader::new(&addrs, DOMAIN, Duration::from_millis(800)).unwrap()
}

fn publisher(servers: &[PowerDns]) -> Publisher {
    let apis = servers
        .iter()
        .map(|s| (s.api_url(), s.api_key().to_owned()))
        .collect();
    Publisher::new(apis, DOMAIN, DOMAIN, 5)
}

#[tokio::test]
async fn published_heartbeat_is_read_back_by_majority() {
    let servers = three().await;
    let state = held("region-a", 3, 1_778_493_630_000);
    assert_eq!(
        publisher(&servers).publish("app/db", &state).await.unwrap(),
        3
    );
    match reader(&servers).read("app/db").await {
        QuorumView::Agreed { record, votes, of } => {
            assert_eq!((votes, of), (3, 3));
            assert_eq!(record, TxtRecord::from_state(&state));
        }
        other => panic!("no quorum: {other:?}"),
    }
    // Never published: all three agree nothing is there.
    assert!(matches!(
        reader(&servers).read("other").await,
        QuorumView::Agreed {
            record: None,
            votes: 3,
            ..
        }
    ));
    // A free state deletes the record everywhere.
    publisher(&servers)
        .publish("app/db", &LeaseState::default())
        .await
        .unwrap();
    assert!(matches!(
        reader(&servers).read("app/db").await,
        QuorumView::Agreed { record: None, .. }
    ));
}

#[tokio::test]
async fn split_answers_have_no_quorum_and_one_server_down_keeps_it() {
    let mut servers = three().await;
    let name = fqdn("slot", DOMAIN);
    let a = TxtRecord::from_state(&held("region-a", 1, 1_000_000))
        .unwrap()
        .render();
    let b = TxtRecord::from_state(&held("region-b", 2, 2_000_000))
        .unwrap()
        .render();
    servers[0]
        .put_rrset(DOMAIN, &name, "TXT", 5, &[&format!("\"{a}\"")])
        .await
        .unwrap();
    servers[1]
        .put_rrset(DOMAIN, &name, "TXT", 5, &[&format!("\"{b}\"")])
        .await
        .unwrap();
    // Third server: garbage.
    servers[2]
        .put_rrset(DOMAIN, &name, "TXT", 5, &["\"not|a|record\""])
        .await
        .unwrap();
    assert!(matches!(
        reader(&servers).read("slot").await,
        QuorumView::NoQuorum { .. }
    ));

    // Two agree, then the third goes down: 2 of 3 is still a majority.
    servers[1]
        .put_rrset(DOMAIN, &name, "TXT", 5, &[&format!("\"{a}\"")])
        .await
        .unwrap();
    let r = reader(&servers);
    drop(servers.pop());
    match r.read("slot").await {
        QuorumView::Agreed { votes, of, record } => {
            assert_eq!((votes, of), (2, 3));
            assert_eq!(record.unwrap().holder, "region-a");
        }
        other => panic!("expected a 2/3 majority: {other:?}"),
    }
    // A second server down: no quorum, and publishing fails too.
    drop(servers.pop());
    assert!(matches!(r.read("slot").await, QuorumView::NoQuorum { .. }));
}

#[tokio::test]
async fn stale_heartbeat_allows_takeover_only_when_enabled_unreachable_and_waited() {
    let servers = three().await;
    let exp = 1_778_493_630_000;
    publisher(&servers)
        .publish("db", &held("region-a", 7, exp))
        .await
        .unwrap();
    let view = reader(&servers).read("db").await;
    let policy = TakeoverPolicy {
        enabled: true,
        lease_ttl_ms: 30_000,
        max_dns_ttl_ms: 5_000,
        margin_ms: 5_000,
    };
    let after = Millis(exp + 40_000);
    assert_eq!(
        takeover(
            &TakeoverPolicy {
                enabled: false,
                ..policy
            },
            false,
            &view,
            after
        ),
        Err(TakeoverRefused::Disabled)
    );
    assert_eq!(
        takeover(&policy, true, &view, after),
        Err(TakeoverRefused::WitnessReachable)
    );
    assert!(matches!(
        takeover(&policy, false, &view, Millis(exp + 39_999)),
        Err(TakeoverRefused::NotExpired { .. })
    ));
    assert_eq!(
        takeover(&policy, false, &view, after),
        Ok(8),
        "epoch above the quorum's"
    );
}

#[test]
fn fewer_than_three_servers_is_a_configuration_error() {
    let one = ["127.0.0.1:53".parse().unwrap()];
    assert!(QuorumReader::new(&one, DOMAIN, Duration::from_secs(1)).is_err());
}
