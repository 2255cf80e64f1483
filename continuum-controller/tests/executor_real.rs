//! The executor driving all five REAL adapters through an unplanned failover: PostgreSQL pair
//! (primary killed), in-process witness-server, PowerDNS with the LUA record probing the lab
//! route fronts, the route front, and NATS JetStream audit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use continuum_controller::adapters::dns::{DnsConfig, PdmDns};
use continuum_controller::adapters::nats::{NatsAudit, StreamSettings};
use continuum_controller::adapters::postgres::{PgConfig, PgDatabase};
use continuum_controller::adapters::routes::{HttpRoutes, RouteFront};
use continuum_controller::adapters::witness::WitnessAdapter;
use continuum_controller::audit::{AuditEvent, AuditType};
use continuum_controller::decide::{OpKind, Operation, Plan, Step, Timing};
use continuum_controller::exec::{Executor, Ports, SystemClock, Timeouts};
use continuum_controller::ports::FileStateStore;
use pdm_client::{
    DnsControl, Placement, PlacementSpec, PowerDnsBackend, PowerDnsConfig, RegionSpec, Verifier,
};
use testkit::postgres::STANDBY_NAME;
use testkit::{NatsServer, PgPair, PowerDns};
use witness_worker::auth::Tokens;
use witness_worker::client::{ClientConfig, WitnessClient};
use witness_worker::server::{serve, system_clock};
use witness_worker::store::FileStore;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const HOST: &str = "app.dr.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_fails_over_through_real_adapters() {
    let pair = PgPair::start().await.unwrap();
    let pdns = PowerDns::start().await.unwrap();
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    // Witness.
    let store = FileStore::open(dir.path().join("witness.json")).unwrap();
    let w = witness_worker::server::Witness::new(
        store,
        Tokens::from_json(r#"{"tok-b":["region-b"]}"#).unwrap(),
        system_clock(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let witness_url = format!("http://{}", listener.local_addr().unwrap());
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, w, async {
        let _ = rx.await;
    }));

    // Region b's route front on 127.0.0.3 (region a's address has nothing listening: dead).
    let front = loop {
        let port = testkit::free_port().unwrap();
        if let Ok(f) = RouteFront::start(SocketAddr::from((B, port))).await {
            break f;
        }
    };
    let port = front.addr().port();

    // Data: acknowledged rows on the primary, then region a dies.
    let c = pair.primary().connect().await.unwrap();
    c.batch_execute("create table t (id int primary key)")
        .await
        .unwrap();
    for i in 0..50 {
        c.execute("insert into t values ($1)", &[&i]).await.unwrap();
    }
    drop(c);
    pair.kill_primary().await.unwrap();

    let control: Arc<dyn DnsControl> = Arc::new(
        PowerDnsBackend::new(PowerDnsConfig::new(pdns.api_url(), pdns.api_key())).unwrap(),
    );
    let verifier = Verifier::new([pdns.dns_addr()])
        .unwrap()
        .poll(Duration::from_millis(50))
        .consecutive(3);
    let ports = Ports {
        witness: WitnessAdapter::new(
            WitnessClient::new(ClientConfig::new(&witness_url, "tok-b"), "ns/dr").unwrap(),
        ),
        db: PgDatabase::new(PgConfig::new(
            &pair.standby_conninfo(),
            STANDBY_NAME,
            "primary",
        )),
        dns: PdmDns::new(
            control,
            Some(verifier.clone()),
            DnsConfig {
                zone: "dr.test".into(),
                hostnames: vec![HOST.into()],
                spec: PlacementSpec::new(Placement::ActiveHotStandby, "region-a")
                    .region(RegionSpec::new("region-a", [A.to_string()]))
                    .region(RegionSpec::new("region-b", [B.to_string()]))
                    .probe_url(format!("http://probe.dr.test:{port}/healthz"))
                    .timing(1, 1),
                verify_timeout: Duration::from_secs(20),
            },
        ),
        routes: HttpRoutes::new(&front.url(), Duration::from_secs(2)).unwrap(),
        audit: NatsAudit::connect(
            &nats.url(),
            &StreamSettings::default(),
            Duration::from_secs(2),
        )
        .await
        .unwrap(),
        store: FileStateStore::new(dir.path().join("status.json")),
    };
    let timing = Timing::standard();
    let mut timeouts = Timeouts::for_timing(&timing);
    timeouts.dns = Duration::from_secs(30);
    let exec = Executor::new(ports, "region-b", timing, timeouts, SystemClock::new());

    let mut event = AuditEvent::new(AuditType::Switchover, "ns/dr", "ns/app");
    event.from_primary = "region-a".into();
    event.to_primary = "region-b".into();
    event.reason = "lease-loss".into();
    event.epoch = Some(1);
    let plan = Plan {
        steps: vec![
            Step::AcquireLease,
            Step::Promote { epoch: 1 },
            Step::SuspendSync { epoch: 1 },
            Step::Unfence { epoch: 1 },
            Step::Undrain { epoch: 1 },
            Step::FlipDns {
                primary: "region-b".into(),
                epoch: 1,
            },
            Step::Audit(Box::new(event)),
            Step::FinishOperation,
        ],
        conditions: vec![],
        start: Some(Operation {
            id: "failover-1".into(),
            kind: OpKind::Failover,
            step: String::new(),
            epoch: 1,
            started_at: contract::Millis(0),
            lsn: None,
            target: Some("region-b".into()),
        }),
    };
    let out = exec.run(&plan).await;
    assert!(out.stopped.is_none(), "{:?}", out.stopped);
    assert!(out.audit_failures.is_empty(), "{:?}", out.audit_failures);
    assert_eq!(out.renewed.map(|r| r.epoch), Some(1));
    assert!(out.persisted.operation.is_none());

    // Every acknowledged row on the new, writable primary.
    let c = pair.standby().connect().await.unwrap();
    let n: i64 = c
        .query_one("select count(*) from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 50);
    c.execute("insert into t values (50)", &[]).await.unwrap();
    // Its front is serving (undrained and armed by the acquire), DNS answers it.
    let st = exec.ports().routes.state().await.unwrap();
    assert!(st.healthy && st.epoch == 1, "{st:?}");
    verifier
        .wait_for(HOST, &[B].into_iter().collect(), Duration::from_secs(10))
        .await
        .unwrap();
    // The audit event is in the stream with the epoch.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let s = js.get_stream("CATALYST_AUDIT").await.unwrap();
    let m = s.get_raw_message(1).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["type"], "continuum-switchover");
    assert_eq!(v["epoch"], 1);
}
