//! The JetStream backend with real replicas on one real nats-server (`testkit::NatsServer`):
//! the same seq order and the same snapshots on every replica, replay across replicas, a late
//! replica rebuilding the same state, DELETE ending streams everywhere.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::time::Duration;

use flow_server::AppState;
use flow_server::args::{BackendConfig, Config};
use flow_server::hub::HubConfig;
use testkit::NatsServer;

use common::{PATIENCE, Server, Sse, client, config, post_ok, upsert_flow, upsert_nodes};

fn jet_config(url: &str) -> Config {
    Config {
        backend: BackendConfig::JetStream {
            url: url.to_owned(),
            stream: "FLOW_TEST".into(),
            subject_prefix: "flowtest.events".into(),
        },
        hub: HubConfig {
            log_origin: true,
            ..HubConfig::default()
        },
        ..config()
    }
}

async fn replica(cfg: &Config) -> Server {
    let state = AppState::connect(cfg).await.expect("replica connects");
    let s = Server::start_with(state).await;
    let c = client();
    let url = s.url("/readyz");
    testkit::eventually("the replica to be ready", PATIENCE, || async {
        let r = c.get(&url).send().await.map_err(|e| e.to_string())?;
        if r.status() == 200 {
            Ok(())
        } else {
            Err(format!("readyz {}", r.status()))
        }
    })
    .await
    .unwrap();
    s
}

async fn snapshot(c: &reqwest::Client, s: &Server, flow: &str) -> (u16, Option<u64>, String) {
    let r = c
        .get(s.url(&format!("/v1/flows/{flow}/snapshot")))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let seq = r
        .headers()
        .get("x-flow-seq")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    (status, seq, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_nats_server_give_the_same_seqs_and_snapshots() {
    let nats = NatsServer::start().await.unwrap();
    let cfg = jet_config(&nats.url());
    let a = replica(&cfg).await;
    let b = replica(&cfg).await;
    let c = client();
    let flow = "sovereign-omantel";

    // Streams open on both replicas before the flow exists.
    let mut sa = Sse::open(&c, &a.url(&format!("/v1/flows/{flow}/stream")), None).await;
    let mut sb = Sse::open(&c, &b.url(&format!("/v1/flows/{flow}/stream")), None).await;
    assert_eq!(sa.next().await.unwrap().event, "snapshot");
    assert_eq!(sb.next().await.unwrap().event, "snapshot");

    // Posts alternate between the replicas (and another flow interleaves in the log).
    let mut seqs = vec![post_ok(&c, &a.url(""), flow, &upsert_flow(flow)).await];
    for i in 0..30 {
        let target = if i % 2 == 0 { &b } else { &a };
        let body = upsert_nodes(flow, &format!("n{}", i % 7), &format!("s{i}"));
        seqs.push(post_ok(&c, &target.url(""), flow, &body).await);
        post_ok(&c, &a.url(""), "other", &upsert_nodes("other", "x", "y")).await;
    }
    for w in seqs.windows(2) {
        assert_eq!(w[1], w[0] + 1, "per-flow seqs are contiguous: {seqs:?}");
    }
    // Both streams deliver the same frames in the same order.
    let mut frames_a = Vec::new();
    let mut frames_b = Vec::new();
    for _ in &seqs {
        let ea = sa.next().await.unwrap();
        let eb = sb.next().await.unwrap();
        frames_a.push((ea.seq(), ea.event, ea.data));
        frames_b.push((eb.seq(), eb.event, eb.data));
    }
    assert_eq!(frames_a, frames_b);
    let got: Vec<u64> = frames_a.iter().filter_map(|f| f.0).collect();
    assert_eq!(got, seqs);

    // Same snapshot and seq on both (each answered after its own apply).
    let last = *seqs.last().unwrap();
    let (sta, seqa, body_a) = snapshot(&c, &a, flow).await;
    let (stb, seqb, body_b) = snapshot(&c, &b, flow).await;
    assert_eq!((sta, stb), (200, 200));
    assert_eq!((seqa, seqb), (Some(last), Some(last)));
    assert_eq!(body_a, body_b);

    // A cursor from replica A resumes on replica B without a snapshot.
    let mut resumed = Sse::open(
        &c,
        &b.url(&format!("/v1/flows/{flow}/stream")),
        Some(seqs[10]),
    )
    .await;
    for want in &seqs[11..] {
        let e = resumed.next().await.unwrap();
        assert_eq!((e.event.as_str(), e.seq()), ("upsert-nodes", Some(*want)));
    }

    // A replica started later rebuilds the same state and seqs from the log.
    let late = replica(&cfg).await;
    let (stl, seql, body_l) = snapshot(&c, &late, flow).await;
    assert_eq!((stl, seql), (200, Some(last)));
    assert_eq!(body_l, body_a);

    // DELETE on A ends the streams on B, and every replica forgets the flow.
    assert_eq!(
        c.delete(a.url(&format!("/v1/flows/{flow}")))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(sb.next().await.is_none(), "replica B's stream ended");
    assert!(resumed.next().await.is_none(), "the resumed stream ended");
    for s in [&a, &b, &late] {
        let c = c.clone();
        testkit::eventually("the flow to be gone", PATIENCE, || async {
            let (st, _, _) = snapshot(&c, s, flow).await;
            if st == 404 {
                Ok(())
            } else {
                Err(format!("snapshot {st}"))
            }
        })
        .await
        .unwrap();
    }
    // The next incarnation starts above every old seq, identically on both replicas.
    let new = post_ok(&c, &b.url(""), flow, &upsert_flow(flow)).await;
    assert!(new > last);
    let (_, seqa2, _) = snapshot(&c, &a, flow).await;
    let c2 = c.clone();
    testkit::eventually(
        "replica A to apply the new incarnation",
        PATIENCE,
        || async {
            let (_, s, _) = snapshot(&c2, &a, flow).await;
            if s == Some(new) {
                Ok(())
            } else {
                Err(format!("seq {s:?}"))
            }
        },
    )
    .await
    .unwrap();
    let _ = seqa2;
    // An old cursor on the new incarnation gets a snapshot.
    let mut fresh = Sse::open(
        &c,
        &a.url(&format!("/v1/flows/{flow}/stream")),
        Some(seqs[20]),
    )
    .await;
    let e = fresh.next().await.unwrap();
    assert_eq!((e.event.as_str(), e.seq()), ("snapshot", Some(new)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_nats_server_keeps_the_log_and_the_replica_recovers() {
    let mut nats = NatsServer::start().await.unwrap();
    let cfg = jet_config(&nats.url());
    let a = replica(&cfg).await;
    let c = client();
    let s1 = post_ok(&c, &a.url(""), "f", &upsert_flow("f")).await;
    nats.restart().await.unwrap();
    // Posting works again once the client reconnected; seqs continue.
    let c2 = c.clone();
    let url = a.url("");
    let s2 = testkit::eventually(
        "a post after the NATS restart",
        Duration::from_secs(20),
        || async {
            let (st, v) = common::post(&c2, &url, "f", &upsert_nodes("f", "n", "x")).await;
            if st == 200 {
                Ok(v["seq"].as_u64().unwrap_or(0))
            } else {
                Err(format!("{st} {v}"))
            }
        },
    )
    .await
    .unwrap();
    assert!(s2 > s1);
    let fresh = replica(&cfg).await;
    let (st, seq, body) = snapshot(&c, &fresh, "f").await;
    assert_eq!((st, seq), (200, Some(s2)));
    assert!(body.contains(r#""id":"n""#));
}
