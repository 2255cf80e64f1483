//! The JetStream `Audit` adapter against a real `nats-server -js`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use continuum_controller::adapters::nats::{NatsAudit, StreamSettings};
use continuum_controller::audit::{AuditEvent, AuditType, SUBJECT};
use continuum_controller::ports::{Audit, AuditError};
use testkit::NatsServer;

const ACK: Duration = Duration::from_secs(2);

async fn js(server: &NatsServer) -> jetstream::Context {
    jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

#[tokio::test]
async fn creates_the_missing_stream_and_publishes_upstream_json_and_headers() {
    let server = NatsServer::start().await.unwrap();
    let settings = StreamSettings::default();
    let audit = NatsAudit::connect(&server.url(), &settings, ACK)
        .await
        .unwrap();

    let mut e = AuditEvent::new(AuditType::Switchover, "ns/dr-x", "ns/app");
    e.from_primary = "a".into();
    e.to_primary = "b".into();
    e.step = "promote".into();
    e.reason = "operator-requested".into();
    e.epoch = Some(7);
    e.lsn = Some("0/3000060".into());
    audit.publish(&e).await.unwrap();

    let js = js(&server).await;
    let mut s = js.get_stream(&settings.name).await.unwrap();
    let info = s.info().await.unwrap().clone();
    assert_eq!(info.config.subjects, vec![SUBJECT.to_owned()]);
    assert_eq!(info.config.storage, stream::StorageType::File);
    assert_eq!(info.config.retention, stream::RetentionPolicy::Limits);
    assert_eq!(info.state.messages, 1);

    let m = s.get_raw_message(1).await.unwrap();
    assert_eq!(m.subject.as_str(), SUBJECT);
    let h = |k: &str| m.headers.get(k).map(|v| v.as_str().to_owned());
    assert_eq!(h("audit-type").as_deref(), Some("continuum-switchover"));
    assert_eq!(h("continuum-name").as_deref(), Some("ns/dr-x"));
    assert_eq!(h("application-name").as_deref(), Some("ns/app"));
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["type"], "continuum-switchover");
    assert_eq!(v["continuumName"], "ns/dr-x");
    assert_eq!(v["applicationName"], "ns/app");
    assert_eq!(v["fromPrimary"], "a");
    assert_eq!(v["toPrimary"], "b");
    assert_eq!(v["initiatedBy"], "controller");
    assert_eq!(v["epoch"], 7);
    assert_eq!(v["lsn"], "0/3000060");
    assert!(v.get("lagSeconds").is_none(), "omitempty like upstream");
    let ts = v["timestamp"].as_str().unwrap();
    assert!(
        time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).is_ok(),
        "stamped RFC 3339: {ts}"
    );
}

#[tokio::test]
async fn an_existing_stream_is_left_alone() {
    let server = NatsServer::start().await.unwrap();
    let js = js(&server).await;
    js.create_stream(stream::Config {
        name: "CATALYST_AUDIT".into(),
        subjects: vec![SUBJECT.into()],
        storage: stream::StorageType::Memory,
        max_age: Duration::from_secs(3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let audit = NatsAudit::connect(&server.url(), &StreamSettings::default(), ACK)
        .await
        .unwrap();
    audit
        .publish(&AuditEvent::new(AuditType::LeaseAcquired, "ns/c", ""))
        .await
        .unwrap();
    let mut s = js.get_stream("CATALYST_AUDIT").await.unwrap();
    let info = s.info().await.unwrap();
    assert_eq!(info.config.storage, stream::StorageType::Memory);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.state.messages, 1);
    let m = s.get_raw_message(1).await.unwrap();
    assert!(
        m.headers.get("application-name").is_none(),
        "no empty header"
    );
}

#[tokio::test]
async fn publish_fails_with_a_typed_error_when_nats_is_down() {
    let server = NatsServer::start().await.unwrap();
    let url = server.url();
    let audit = NatsAudit::connect(&url, &StreamSettings::default(), ACK)
        .await
        .unwrap();
    drop(server);
    let r = audit
        .publish(&AuditEvent::new(AuditType::Error, "ns/c", "ns/app"))
        .await;
    assert!(matches!(r, Err(AuditError::Publish(_))), "{r:?}");
    let r = NatsAudit::connect(&url, &StreamSettings::default(), ACK).await;
    assert!(matches!(r, Err(AuditError::Publish(_))));
}

#[tokio::test]
async fn an_event_without_continuum_name_is_refused() {
    let server = NatsServer::start().await.unwrap();
    let audit = NatsAudit::connect(&server.url(), &StreamSettings::default(), ACK)
        .await
        .unwrap();
    let r = audit
        .publish(&AuditEvent::new(AuditType::Error, "", ""))
        .await;
    assert!(matches!(r, Err(AuditError::Publish(_))));
}
