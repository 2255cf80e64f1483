#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Delivery (queue + sink) against the real flow-server library in-process: server down then
//! up, a silent server restart, 4xx handling (and 408/429 retried, on a scripted stub), and
//! coalescing under bursts.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{FlowServer, eventually, free_addr, node};
use flow_adapter_flux::Metrics;
use flow_adapter_flux::graph::{Key, Op};
use flow_adapter_flux::mapper::{MapContext, flow_instance};
use flow_adapter_flux::sink::{Backoff, Queue, Sink, SinkConfig};
use flow_server::auth::Auth;

const FLOW: &str = "deploy-1";

fn config(url: &str) -> SinkConfig {
    SinkConfig {
        base_url: url.into(),
        flow_id: FLOW.into(),
        token: None,
        batch_max: 50,
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        },
        post_timeout: Duration::from_secs(5),
        resync_interval: None,
    }
}

struct Running {
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start_sink(cfg: SinkConfig) -> Running {
    let metrics = Arc::new(Metrics::new());
    let queue = Arc::new(Queue::new(1000));
    let sink = Sink::new(cfg, metrics.clone()).unwrap();
    let task = tokio::spawn(sink.run(queue.clone()));
    Running {
        queue,
        metrics,
        task,
    }
}

async fn push_node(q: &Queue, id: &str, status: &str) {
    q.push(Key::Node(id.into()), Op::UpsertNode(node(FLOW, id, status)))
        .await;
}

async fn push_flow(q: &Queue) {
    let ctx = MapContext::new("fsn1", FLOW, Some("flux-system"));
    q.push(Key::Flow, Op::Flow(flow_instance(&ctx, 1))).await;
}

#[tokio::test]
async fn flow_server_down_then_up_loses_nothing_and_gets_the_latest_states() {
    let addr = free_addr().await;
    let s = start_sink(config(&format!("http://{addr}")));
    push_flow(&s.queue).await;
    let mut want = BTreeMap::new();
    for i in 0..50 {
        push_node(&s.queue, &format!("n{i}"), "pending").await;
        want.insert(format!("n{i}"), "pending".to_owned());
    }
    let m = s.metrics.clone();
    eventually("the sink retries while flow-server is down", || {
        let m = m.clone();
        async move { m.post_retries.get() >= 2 }
    })
    .await;
    for i in 0..10 {
        push_node(&s.queue, &format!("n{i}"), "succeeded").await;
        want.insert(format!("n{i}"), "succeeded".to_owned());
    }
    assert_eq!(
        s.metrics.events_sent.get(),
        0,
        "nothing counts as delivered yet"
    );

    let server = FlowServer::start_on(addr, Auth::default()).await;
    eventually("every node arrives with its latest status", || async {
        server.statuses(FLOW) == want && server.has_flow(FLOW)
    })
    .await;

    // A restart of flow-server with changes made while it is down: the first 2xx after the
    // failures re-sends everything, so the new (empty) server gets the full state.
    server.stop().await;
    push_node(&s.queue, "n49", "failed").await;
    want.insert("n49".into(), "failed".into());
    let m = s.metrics.clone();
    let retries = m.post_retries.get();
    eventually("the change is retried against the stopped server", || {
        let m = m.clone();
        async move { m.post_retries.get() > retries }
    })
    .await;
    let server = FlowServer::start_on(addr, Auth::default()).await;
    eventually("the restarted server gets the full state back", || async {
        server.statuses(FLOW) == want && server.has_flow(FLOW)
    })
    .await;
    assert!(s.metrics.resyncs.get() >= 1);
}

#[tokio::test]
async fn a_silent_restart_is_repaired_by_the_periodic_resync() {
    let addr = free_addr().await;
    let mut cfg = config(&format!("http://{addr}"));
    cfg.resync_interval = Some(Duration::from_millis(100));
    let server = FlowServer::start_on(addr, Auth::default()).await;
    let s = start_sink(cfg);
    for i in 0..5 {
        push_node(&s.queue, &format!("n{i}"), "running").await;
    }
    eventually("delivered", || async { server.nodes(FLOW).len() == 5 }).await;
    // Restart while idle: no request fails, so only the periodic resync can notice.
    server.stop().await;
    let server = FlowServer::start_on(addr, Auth::default()).await;
    eventually("the periodic resync re-sends everything", || async {
        server.nodes(FLOW).len() == 5
    })
    .await;
}

#[tokio::test]
async fn a_refused_envelope_is_dropped_counted_and_never_retried() {
    let server =
        FlowServer::start_on(free_addr().await, Auth::new(vec!["right".into()], vec![])).await;
    let mut cfg = config(&server.url());
    cfg.token = Some("wrong".into());
    let s = start_sink(cfg);
    for i in 0..3 {
        push_node(&s.queue, &format!("n{i}"), "running").await;
    }
    let m = s.metrics.clone();
    eventually("the 401 is counted", || {
        let m = m.clone();
        async move { m.failed_count("rejected") == 3 }
    })
    .await;
    push_node(&s.queue, "n3", "running").await;
    eventually("the next envelope is refused too", || {
        let m = m.clone();
        async move { m.failed_count("rejected") >= 4 }
    })
    .await;
    // A retry of the first envelope would have re-queued its 3 items in front of n3: the
    // second refusal would then count 4 items, not 1, and the server would have seen more POSTs.
    assert_eq!(s.metrics.failed_count("rejected"), 4);
    assert_eq!(server.posts(), 2);
    assert_eq!(s.metrics.post_retries.get(), 0);
    assert_eq!(s.metrics.events_sent.get(), 0);
    assert!(server.nodes(FLOW).is_empty());
}

#[tokio::test]
async fn the_bearer_token_is_sent() {
    let server =
        FlowServer::start_on(free_addr().await, Auth::new(vec!["right".into()], vec![])).await;
    let mut cfg = config(&server.url());
    cfg.token = Some("right".into());
    let s = start_sink(cfg);
    push_node(&s.queue, "n0", "running").await;
    eventually("accepted with the token", || async {
        server.nodes(FLOW).len() == 1
    })
    .await;
    assert_eq!(s.metrics.failed_count("rejected"), 0);
}

/// A stub that answers a scripted list of statuses (then 200) and counts requests.
async fn scripted(codes: Vec<u16>) -> (String, Arc<AtomicUsize>) {
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    let codes = Arc::new(codes);
    let app = axum::Router::new().route(
        "/v1/flows/{flow}/events",
        axum::routing::post(move || {
            let counter = counter.clone();
            let codes = codes.clone();
            async move {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let code = codes.get(n).copied().unwrap_or(200);
                let mut resp = axum::response::Response::new(axum::body::Body::from("{}"));
                *resp.status_mut() = axum::http::StatusCode::from_u16(code).unwrap();
                if code == 429 {
                    resp.headers_mut()
                        .insert("retry-after", axum::http::HeaderValue::from_static("0"));
                }
                resp
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, seen)
}

#[tokio::test]
async fn status_408_429_and_5xx_are_retried_until_a_2xx() {
    let (url, seen) = scripted(vec![429, 408, 503, 429]).await;
    let s = start_sink(config(&url));
    push_node(&s.queue, "n0", "running").await;
    let m = s.metrics.clone();
    eventually("delivered after the retries", || {
        let m = m.clone();
        async move { m.events_sent.get() >= 1 }
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 5);
    assert_eq!(s.metrics.post_retries.get(), 4);
    assert_eq!(s.metrics.failed_count("rejected"), 0);
}

#[tokio::test]
async fn status_400_and_409_are_not_retried() {
    let (url, seen) = scripted(vec![400, 409]).await;
    let s = start_sink(config(&url));
    push_node(&s.queue, "a", "running").await;
    let m = s.metrics.clone();
    eventually("the 400 is counted", || {
        let m = m.clone();
        async move { m.failed_count("rejected") == 1 }
    })
    .await;
    push_node(&s.queue, "b", "running").await;
    eventually("the 409 is counted", || {
        let m = m.clone();
        async move { m.failed_count("rejected") == 2 }
    })
    .await;
    push_node(&s.queue, "c", "running").await;
    eventually("then a 200", || {
        let m = m.clone();
        async move { m.events_sent.get() == 1 }
    })
    .await;
    assert_eq!(seen.load(Ordering::SeqCst), 3, "one request per envelope");
    assert_eq!(s.metrics.post_retries.get(), 0);
}

#[tokio::test]
async fn a_burst_of_a_thousand_changes_coalesces_to_the_latest_state() {
    let addr = free_addr().await;
    let s = start_sink(config(&format!("http://{addr}")));
    let statuses = ["pending", "running", "failed", "succeeded"];
    for round in 0..100 {
        for i in 0..10 {
            push_node(&s.queue, &format!("n{i}"), statuses[(round + i) % 4]).await;
            assert!(s.queue.len() <= 10, "one queued entry per node");
        }
    }
    let want: BTreeMap<String, String> = (0..10)
        .map(|i| (format!("n{i}"), statuses[(99 + i) % 4].to_owned()))
        .collect();
    let server = FlowServer::start_on(addr, Auth::default()).await;
    eventually("the latest state of every node arrives", || async {
        server.statuses(FLOW) == want
    })
    .await;
    // 1,000 changes; each node is delivered once, plus once more by the re-send that follows
    // the failures while the server was down.
    assert!(
        s.metrics.events_sent.get() <= 20,
        "sent {}",
        s.metrics.events_sent.get()
    );
    assert!(server.posts() <= 4, "posts {}", server.posts());
}
