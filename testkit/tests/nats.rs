//! NatsServer runs a real nats-server with JetStream: a stream, a publish and a durable pull
//! consumer work, and a restart keeps both the message store and the consumer's position.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use testkit::NatsServer;

async fn next_payload(consumer: &jetstream::consumer::PullConsumer) -> String {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch a batch");
    let msg = batch
        .next()
        .await
        .expect("a message within the batch")
        .expect("a valid message");
    msg.ack().await.expect("ack");
    String::from_utf8(msg.payload.to_vec()).expect("utf-8 payload")
}

#[tokio::test]
async fn jetstream_stream_and_durable_pull_consumer_survive_a_restart() {
    let mut server = NatsServer::start().await.expect("start nats-server");
    assert!(server.url().starts_with("nats://127.0.0.1:"));
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));

    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = jetstream::new(client);
    let events = js
        .create_stream(stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .expect("create stream");
    for body in ["first", "second"] {
        js.publish("events.audit", body.into())
            .await
            .expect("publish")
            .await
            .expect("publish ack");
    }
    let consumer = events
        .create_consumer(pull::Config {
            durable_name: Some("auditor".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("create durable consumer");
    assert_eq!(next_payload(&consumer).await, "first");

    let port = server.port();
    server.restart().await.expect("restart nats-server");
    assert_eq!(server.port(), port, "restart keeps the port");

    // The client reconnects by itself; the durable consumer resumes after the acked message.
    let pending = testkit::eventually(
        "the consumer after restart",
        Duration::from_secs(20),
        || {
            let consumer = &consumer;
            async move { consumer.get_info().await.map(|i| i.num_pending) }
        },
    )
    .await
    .expect("consumer info after restart");
    assert_eq!(pending, 1, "one message left for the durable consumer");
    assert_eq!(next_payload(&consumer).await, "second");
}
