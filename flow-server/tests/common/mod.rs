//! Shared helpers of the integration tests: a server on 127.0.0.1:0, FlowMessage builders, an
//! SSE reader over reqwest.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use flow_server::args::Config;
use flow_server::sse::{Event, Parser};
use flow_server::{AppState, serve};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A test configuration: defaults, no idle eviction.
pub fn config() -> Config {
    Config {
        idle_ttl: None,
        ..Config::default()
    }
}

/// A server on a free loopback port.
pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: Option<oneshot::Sender<()>>,
    pub handle: JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(cfg: Config) -> Self {
        Self::start_with(AppState::memory(&cfg)).await
    }

    pub async fn start_with(state: AppState) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            stop: Some(tx),
            handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Triggers the shutdown future passed to `serve`.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn node_json(flow: &str, id: &str, status: &str) -> String {
    format!(r#"{{"id":"{id}","flowId":"{flow}","label":"{id}","status":"{status}"}}"#)
}

pub fn upsert_nodes(flow: &str, id: &str, status: &str) -> String {
    format!(
        r#"{{"type":"upsert-nodes","nodes":[{}]}}"#,
        node_json(flow, id, status)
    )
}

pub fn upsert_flow(flow: &str) -> String {
    format!(r#"{{"type":"upsert-flow","flow":{{"id":"{flow}","status":"running","startedAt":1}}}}"#)
}

/// POSTs an event; returns the status and the body as JSON (or Null).
pub async fn post(
    c: &reqwest::Client,
    base: &str,
    flow: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let r = c
        .post(format!("{base}/v1/flows/{flow}/events"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let v = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// POSTs an event that must succeed; returns its seq.
pub async fn post_ok(c: &reqwest::Client, base: &str, flow: &str, body: &str) -> u64 {
    let (s, v) = post(c, base, flow, body).await;
    assert_eq!(s, 200, "{v}");
    v["seq"].as_u64().unwrap()
}

/// An open SSE response and its parser.
pub struct Sse {
    pub resp: reqwest::Response,
    parser: Parser,
    queued: std::collections::VecDeque<Event>,
    pub ended: bool,
}

impl Sse {
    pub async fn open(c: &reqwest::Client, url: &str, last_event_id: Option<u64>) -> Self {
        let mut req = c.get(url);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        Self {
            resp,
            parser: Parser::new(),
            queued: Default::default(),
            ended: false,
        }
    }

    /// The next event (heartbeats and the retry block included), None at the end of the
    /// stream. Panics after PATIENCE.
    pub async fn next_any(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            if self.ended {
                return None;
            }
            let chunk = tokio::time::timeout(PATIENCE, self.resp.chunk())
                .await
                .expect("no SSE data within the patience");
            match chunk {
                Ok(Some(b)) => self.queued.extend(self.parser.feed(&b)),
                _ => self.ended = true,
            }
        }
    }

    /// The next event that carries data (skips `retry:` blocks and heartbeats).
    pub async fn next(&mut self) -> Option<Event> {
        loop {
            let e = self.next_any().await?;
            if e.event == "heartbeat" || (e.data.is_empty() && e.retry.is_some()) {
                continue;
            }
            return Some(e);
        }
    }
}
