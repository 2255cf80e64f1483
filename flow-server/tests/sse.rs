//! SSE behaviour over real sockets on 127.0.0.1:0 (heartbeats with paused time through the
//! router): framing, snapshot-then-tail under concurrent publishers, Last-Event-ID replay, DELETE,
//! slow subscribers, shutdown.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns unwrap too

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use contract::FlowMessage;
use flow_server::sse::{self, Event};
use flow_server::state::{FlowState, StateLimits};
use flow_server::{AppState, app};
use http_body_util::BodyExt;
use tower::ServiceExt;

use common::{PATIENCE, Server, Sse, client, config, post_ok, upsert_flow, upsert_nodes};

/// What a subscriber reconstructs from its stream; checks the seq rule as it goes.
#[derive(Default)]
struct View {
    state: FlowState,
    last: Option<u64>,
    snapshots: usize,
    events: usize,
}

impl View {
    /// Applies one frame: a snapshot resets, an event must be exactly `last + 1`.
    fn apply(&mut self, e: &Event) {
        let seq = e.seq().unwrap_or_else(|| panic!("frame without id: {e:?}"));
        if e.event == "snapshot" {
            if let Some(last) = self.last {
                assert!(seq >= last, "snapshot {seq} goes back before {last}");
            }
            self.state = FlowState::default();
            if e.data != r#"{"type":"snapshot"}"# {
                let m = FlowMessage::decode(e.data.as_bytes()).unwrap();
                self.state.apply(m, StateLimits::default()).unwrap();
            }
            self.snapshots += 1;
        } else {
            let last = self.last.expect("an event before any snapshot or cursor");
            assert_eq!(
                seq,
                last + 1,
                "gap or duplicate: {seq} after {last} ({e:?})"
            );
            let m = FlowMessage::decode(e.data.as_bytes()).unwrap();
            assert_eq!(m.kind().as_str(), e.event);
            self.state.apply(m, StateLimits::default()).unwrap();
            self.events += 1;
        }
        self.last = Some(seq);
    }
}

async fn final_snapshot(c: &reqwest::Client, s: &Server, flow: &str) -> (u64, String) {
    let r = c
        .get(s.url(&format!("/v1/flows/{flow}/snapshot")))
        .send()
        .await
        .unwrap();
    let seq = r.headers()["x-flow-seq"].to_str().unwrap().parse().unwrap();
    (seq, r.text().await.unwrap())
}

#[tokio::test]
async fn stream_has_upstream_headers_and_exact_framing() {
    let s = Server::start(config()).await;
    let c = client();
    let base = s.url("");
    let s1 = post_ok(&c, &base, "f", &upsert_flow("f")).await;
    let mut resp = c.get(s.url("/v1/flows/f/stream")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "text/event-stream");
    assert_eq!(h["cache-control"], "no-cache, no-transform");
    assert_eq!(h["x-accel-buffering"], "no");
    let mut raw = Vec::new();
    let snap_json = final_snapshot(&c, &s, "f").await.1;
    let want_head = format!("retry: 3000\n\nevent: snapshot\nid: {s1}\ndata: {snap_json}\n\n");
    while raw.len() < want_head.len() {
        let b = tokio::time::timeout(PATIENCE, resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        raw.extend_from_slice(&b);
    }
    assert_eq!(String::from_utf8_lossy(&raw), want_head);
    let body = upsert_nodes("f", "a", "running");
    let s2 = post_ok(&c, &base, "f", &body).await;
    let want = format!("event: upsert-nodes\nid: {s2}\ndata: {body}\n\n");
    let mut raw = Vec::new();
    while raw.len() < want.len() {
        let b = tokio::time::timeout(PATIENCE, resp.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        raw.extend_from_slice(&b);
    }
    assert_eq!(String::from_utf8_lossy(&raw), want);
}

#[tokio::test]
async fn an_unknown_flow_streams_an_empty_snapshot_then_its_first_events() {
    let s = Server::start(config()).await;
    let c = client();
    let mut sse = Sse::open(&c, &s.url("/v1/flows/new/stream"), None).await;
    let first = sse.next().await.unwrap();
    assert_eq!(
        (first.event.as_str(), first.data.as_str()),
        ("snapshot", r#"{"type":"snapshot"}"#)
    );
    let seq = post_ok(&c, &s.url(""), "new", &upsert_flow("new")).await;
    let e = sse.next().await.unwrap();
    assert_eq!((e.event.as_str(), e.seq()), ("upsert-flow", Some(seq)));
    assert_eq!(
        first.seq(),
        Some(seq - 1),
        "the snapshot id is the seq just before"
    );
}

/// Snapshot-then-tail as a property: with concurrent publishers and subscribers joining at
/// random moments, every subscriber sees a snapshot at some seq S and then exactly S+1, S+2, …
/// (no gap, no duplicate), and what it reconstructs equals the final snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_then_tail_is_gap_free_under_concurrent_publishers() {
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..3 {
        let s = Server::start(config()).await;
        let base = s.url("");
        let flow = format!("prop-{round}");
        let c = client();
        post_ok(&c, &base, &flow, &upsert_flow(&flow)).await;
        let publishers = 2 + (next() % 3) as usize;
        let per_publisher = 60 + (next() % 60);
        let posted = Arc::new(AtomicU64::new(0));
        let total = publishers as u64 * per_publisher;

        let mut subs = Vec::new();
        for _ in 0..(4 + next() % 5) {
            let join_at = next() % total;
            let posted = posted.clone();
            let url = s.url(&format!("/v1/flows/{flow}/stream"));
            subs.push(tokio::spawn(async move {
                testkit::assert_eventually!(posted.load(Ordering::Acquire) >= join_at, PATIENCE);
                let c = client();
                let mut sse = Sse::open(&c, &url, None).await;
                let mut view = View::default();
                loop {
                    let e = sse.next().await.expect("stream ended early");
                    view.apply(&e);
                    if e.data.contains(r#""id":"end""#) {
                        return view;
                    }
                }
            }));
        }
        let mut pubs = Vec::new();
        for p in 0..publishers {
            let (c, base, flow, posted) = (client(), base.clone(), flow.clone(), posted.clone());
            let nodes = 1 + next() % 20;
            let seed = next();
            pubs.push(tokio::spawn(async move {
                for i in 0..per_publisher {
                    let id = format!("n{}", (seed.wrapping_add(i)) % nodes);
                    let body = match i % 7 {
                        6 => format!(r#"{{"type":"delete-nodes","ids":["{id}"]}}"#),
                        5 => format!(
                            r#"{{"type":"upsert-rels","relationships":[{{"fromId":"{id}","toId":"p{p}","type":"contains"}}]}}"#
                        ),
                        _ => upsert_nodes(&flow, &id, &format!("s{p}-{i}")),
                    };
                    post_ok(&c, &base, &flow, &body).await;
                    posted.fetch_add(1, Ordering::AcqRel);
                }
            }));
        }
        for p in pubs {
            p.await.unwrap();
        }
        // Every subscriber has joined by now (join_at < total); the sentinel ends them.
        let end = post_ok(&c, &base, &flow, &upsert_nodes(&flow, "end", "done")).await;
        let (seq, body) = final_snapshot(&c, &s, &flow).await;
        assert_eq!(seq, end);
        for sub in subs {
            let view = sub.await.unwrap();
            assert_eq!(view.last, Some(end));
            assert_eq!(
                String::from_utf8(view.state.encode_snapshot(&flow)).unwrap(),
                body,
                "a subscriber's reconstruction differs from the final snapshot"
            );
        }
    }
}

#[tokio::test]
async fn last_event_id_inside_the_ring_replays_exactly_the_missed_events() {
    let s = Server::start(config()).await;
    let c = client();
    let base = s.url("");
    let mut seqs = Vec::new();
    for i in 0..10 {
        seqs.push(post_ok(&c, &base, "f", &upsert_nodes("f", &format!("n{i}"), "x")).await);
    }
    // Header form.
    let mut sse = Sse::open(&c, &s.url("/v1/flows/f/stream"), Some(seqs[3])).await;
    for want in &seqs[4..] {
        let e = sse.next().await.unwrap();
        assert_eq!((e.event.as_str(), e.seq()), ("upsert-nodes", Some(*want)));
    }
    let live = post_ok(&c, &base, "f", &upsert_nodes("f", "live", "x")).await;
    assert_eq!(sse.next().await.unwrap().seq(), Some(live));
    // Query form, for proxies that drop the header.
    let url = s.url(&format!("/v1/flows/f/stream?lastEventId={}", seqs[8]));
    let mut sse = Sse::open(&c, &url, None).await;
    let got: Vec<Option<u64>> = vec![
        sse.next().await.unwrap().seq(),
        sse.next().await.unwrap().seq(),
    ];
    assert_eq!(got, vec![Some(seqs[9]), Some(live)]);
    // At the head: nothing is replayed, the next frame is the next event.
    let mut sse = Sse::open(&c, &s.url("/v1/flows/f/stream"), Some(live)).await;
    let after = post_ok(&c, &base, "f", &upsert_nodes("f", "after", "x")).await;
    let e = sse.next().await.unwrap();
    assert_eq!((e.event.as_str(), e.seq()), ("upsert-nodes", Some(after)));
}

#[tokio::test]
async fn last_event_id_outside_the_ring_or_unknown_gets_a_fresh_snapshot() {
    let mut cfg = config();
    cfg.hub.ring_capacity = 4;
    cfg.hub.lag_limit = 4;
    let s = Server::start(cfg).await;
    let c = client();
    let base = s.url("");
    let first = post_ok(&c, &base, "f", &upsert_nodes("f", "a", "x")).await;
    let mut last = first;
    for i in 0..10 {
        last = post_ok(&c, &base, "f", &upsert_nodes("f", &format!("n{i}"), "x")).await;
    }
    for cursor in [Some(first), Some(last + 100), None] {
        let mut sse = Sse::open(&c, &s.url("/v1/flows/f/stream"), cursor).await;
        let e = sse.next().await.unwrap();
        assert_eq!(
            (e.event.as_str(), e.seq()),
            ("snapshot", Some(last)),
            "cursor {cursor:?}"
        );
        assert!(
            e.data.contains(r#""id":"a""#),
            "the snapshot holds the early node"
        );
    }
    // A cursor that is not a number is ignored like a missing one.
    let r = c
        .get(s.url("/v1/flows/f/stream"))
        .header("last-event-id", "not-a-seq")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_cursor_from_before_a_delete_gets_the_new_incarnations_snapshot() {
    let s = Server::start(config()).await;
    let c = client();
    let base = s.url("");
    post_ok(&c, &base, "f", &upsert_nodes("f", "old", "x")).await;
    let old = post_ok(&c, &base, "f", &upsert_nodes("f", "old2", "x")).await;
    let r = c.delete(s.url("/v1/flows/f")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let new1 = post_ok(&c, &base, "f", &upsert_nodes("f", "new", "x")).await;
    post_ok(&c, &base, "f", &upsert_nodes("f", "new2", "x")).await;
    assert!(
        new1 > old + 1,
        "a new incarnation starts above every old seq"
    );
    let mut sse = Sse::open(&c, &s.url("/v1/flows/f/stream"), Some(old)).await;
    let e = sse.next().await.unwrap();
    assert_eq!(e.event, "snapshot");
    assert!(
        !e.data.contains("old") && e.data.contains("new2"),
        "{}",
        e.data
    );
}

#[tokio::test]
async fn delete_ends_every_open_stream_of_the_flow() {
    let s = Server::start(config()).await;
    let c = client();
    let base = s.url("");
    post_ok(&c, &base, "f", &upsert_flow("f")).await;
    post_ok(&c, &base, "g", &upsert_flow("g")).await;
    let mut a = Sse::open(&c, &s.url("/v1/flows/f/stream"), None).await;
    let mut b = Sse::open(&c, &s.url("/v1/flows/f/stream"), None).await;
    let mut other = Sse::open(&c, &s.url("/v1/flows/g/stream"), None).await;
    for sse in [&mut a, &mut b, &mut other] {
        assert_eq!(sse.next().await.unwrap().event, "snapshot");
    }
    assert_eq!(
        c.delete(s.url("/v1/flows/f"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(a.next().await.is_none(), "stream a ended");
    assert!(b.next().await.is_none(), "stream b ended");
    // Another flow's stream is untouched.
    let seq = post_ok(&c, &base, "g", &upsert_nodes("g", "n", "x")).await;
    assert_eq!(other.next().await.unwrap().seq(), Some(seq));
}

/// A subscriber that stops reading is resynchronised with a snapshot when it reads again; the
/// publishers and the other subscriber never wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_resynchronised_while_others_keep_up() {
    let mut cfg = config();
    cfg.hub.ring_capacity = 32;
    cfg.hub.lag_limit = 32;
    cfg.hub.max_resyncs = 100;
    let s = Server::start(cfg).await;
    let c = client();
    let base = s.url("");
    post_ok(&c, &base, "f", &upsert_flow("f")).await;
    let url = s.url("/v1/flows/f/stream");
    // The stalled one: response head read, body never polled, so the socket fills up.
    let mut stalled = Sse::open(&c, &url, None).await;
    let mut healthy = Sse::open(&client(), &url, None).await;
    let mut healthy_view = View::default();
    healthy_view.apply(&healthy.next().await.unwrap());
    let big = "x".repeat(64 * 1024);
    let mut last = 0;
    let n = 300;
    for i in 0..n {
        let body = format!(
            r#"{{"type":"upsert-nodes","nodes":[{{"id":"n{}","flowId":"f","label":"{big}","status":"s{i}"}}]}}"#,
            i % 3
        );
        last = post_ok(&c, &base, "f", &body).await;
        // The healthy subscriber keeps up, event by event.
        let e = healthy.next().await.unwrap();
        healthy_view.apply(&e);
    }
    assert_eq!(healthy_view.last, Some(last));
    assert_eq!(
        healthy_view.snapshots, 1,
        "the healthy subscriber was never resynchronised"
    );

    // Now the stalled one reads: whatever was buffered, then a resync snapshot, then the tail.
    let mut view = View::default();
    while view.last != Some(last) {
        let e = stalled.next().await.expect("stalled stream ended");
        view.apply(&e);
    }
    assert!(
        view.snapshots >= 2,
        "no resync snapshot was sent to the stalled subscriber"
    );
    assert!(s.state.metrics().resyncs.get() >= 1);
    let (_, body) = final_snapshot(&c, &s, "f").await;
    assert_eq!(
        String::from_utf8(view.state.encode_snapshot("f")).unwrap(),
        body
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeats_are_named_events_at_the_configured_interval() {
    let mut cfg = config();
    cfg.stream.heartbeat = Duration::from_secs(15);
    let state = AppState::memory(&cfg);
    let router = app(state);
    let resp = router
        .oneshot(
            Request::get("/v1/flows/f/stream")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut parser = sse::Parser::new();
    let mut seen = Vec::new();
    while !seen.iter().any(|e: &Event| e.event == "snapshot") {
        let f = body.frame().await.unwrap().unwrap();
        seen.extend(parser.feed(f.data_ref().unwrap()));
    }
    // Nothing for 14 s of (virtual) time…
    let quiet = tokio::time::timeout(Duration::from_secs(14), body.frame()).await;
    assert!(
        quiet.is_err(),
        "a frame came before the heartbeat interval: {quiet:?}"
    );
    // …then a heartbeat at 15 s, without an id, and another 15 s later.
    for _ in 0..2 {
        let f = tokio::time::timeout(Duration::from_secs(16), body.frame())
            .await
            .expect("no heartbeat")
            .unwrap()
            .unwrap();
        assert_eq!(f.data_ref().unwrap().as_ref(), sse::HEARTBEAT);
    }
}

#[tokio::test]
async fn shutdown_ends_every_stream_and_serve_returns() {
    let mut s = Server::start(config()).await;
    let c = client();
    post_ok(&c, &s.url(""), "f", &upsert_flow("f")).await;
    let mut streams = Vec::new();
    for flow in ["f", "f", "other"] {
        let mut sse = Sse::open(&c, &s.url(&format!("/v1/flows/{flow}/stream")), None).await;
        assert_eq!(sse.next().await.unwrap().event, "snapshot");
        streams.push(sse);
    }
    s.shutdown();
    for sse in &mut streams {
        assert!(sse.next().await.is_none(), "a stream outlived the shutdown");
    }
    let r = tokio::time::timeout(PATIENCE, &mut s.handle)
        .await
        .expect("serve did not return");
    r.unwrap().unwrap();
    assert!(s.state.draining());
}
