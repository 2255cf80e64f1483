//! Shared helpers: the real flow-server library served in-process on loopback (with a request
//! counter in front of its router), node builders, and `eventually` with a deadline.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use contract::{FlowMessage, FlowNode};
use flow_server::AppState;
use flow_server::args::Config;
use flow_server::auth::Auth;
use tokio::sync::oneshot;

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `cond` every 10 ms until it holds; panics naming `what` after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A free loopback address (bound, then released).
pub async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// flow-server (memory backend) on loopback.
pub struct FlowServer {
    pub addr: SocketAddr,
    pub state: AppState,
    /// POST requests seen (any answer).
    pub posts: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl FlowServer {
    /// On a free port, open (no tokens).
    pub async fn start() -> Self {
        Self::start_on(free_addr().await, Auth::default()).await
    }

    /// On `addr` with `auth`.
    pub async fn start_on(addr: SocketAddr, auth: Auth) -> Self {
        let cfg = Config {
            idle_ttl: None,
            auth,
            ..Config::default()
        };
        let state = AppState::memory(&cfg);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let posts = Arc::new(AtomicUsize::new(0));
        let counter = posts.clone();
        let app = flow_server::app(state.clone()).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let counter = counter.clone();
                async move {
                    if req.method() == axum::http::Method::POST {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    next.run(req).await
                }
            },
        ));
        let (tx, rx) = oneshot::channel::<()>();
        let st = state.clone();
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                    st.begin_shutdown();
                })
                .await;
        });
        Self {
            addr,
            state,
            posts,
            stop: Some(tx),
            handle,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn posts(&self) -> usize {
        self.posts.load(Ordering::SeqCst)
    }

    /// The flow's nodes as the server holds them (empty when the flow is unknown).
    pub fn nodes(&self, flow: &str) -> Vec<FlowNode> {
        let Some(f) = self.state.hub().get(flow) else {
            return Vec::new();
        };
        let snap = f.snapshot(self.state.metrics());
        // Read leniently: a flow without its instance is encoded without `flow`, which the
        // strict contract decoder refuses.
        let v: serde_json::Value = serde_json::from_slice(&snap.json).unwrap();
        serde_json::from_value(v["nodes"].clone()).unwrap_or_default()
    }

    /// The flow's relationships.
    pub fn rels(&self, flow: &str) -> Vec<contract::Relationship> {
        let Some(f) = self.state.hub().get(flow) else {
            return Vec::new();
        };
        let snap = f.snapshot(self.state.metrics());
        let v: serde_json::Value = serde_json::from_slice(&snap.json).unwrap();
        serde_json::from_value(v["relationships"].clone()).unwrap_or_default()
    }

    /// True when the flow instance exists.
    pub fn has_flow(&self, flow: &str) -> bool {
        self.state.hub().get(flow).is_some_and(|f| {
            let snap = f.snapshot(self.state.metrics());
            matches!(
                FlowMessage::decode(&snap.json),
                Ok(FlowMessage::Snapshot { .. })
            )
        })
    }

    /// Node id → status.
    pub fn statuses(&self, flow: &str) -> std::collections::BTreeMap<String, String> {
        self.nodes(flow)
            .into_iter()
            .map(|n| (n.id, n.status))
            .collect()
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.handle).await;
    }
}

impl Drop for FlowServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

pub fn node(flow: &str, id: &str, status: &str) -> FlowNode {
    FlowNode {
        id: id.into(),
        flow_id: flow.into(),
        label: id.into(),
        status: status.into(),
        family: None,
        region: None,
        started_at: None,
        ended_at: None,
        meta: Default::default(),
    }
}
