//! Shared test targets for the witness contract suite: the pure core, `witness-server` over
//! HTTP, and the built wasm Worker in real workerd.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code, unreachable_pub)] // test code: a panic is the failure report

use contract::{LeaseRecord, LeaseRequest, LeaseState, Millis, apply};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use witness_worker::auth::Tokens;
use witness_worker::client::{ClientConfig, WitnessClient, WitnessError};
use witness_worker::server::{Witness, serve, system_clock};
use witness_worker::store::FileStore;

/// How a refused call is classified by the suite.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Held,
    Lost,
    Other(String),
}

/// The operations the suite runs; `pass` lets witness time go by.
#[allow(async_fn_in_trait)]
pub trait LeaseApi {
    async fn acquire(&self, slot: &str, holder: &str, ttl_ms: u64) -> Result<LeaseState, Refusal>;
    async fn renew(&self, slot: &str, holder: &str, ttl_ms: u64) -> Result<LeaseState, Refusal>;
    async fn release(&self, slot: &str, holder: &str) -> Result<(), Refusal>;
    async fn read(&self, slot: &str) -> Result<LeaseState, Refusal>;
    async fn pass(&self, ms: u64);
}

/// The pure core with a fake clock.
pub struct Core {
    slots: RefCell<HashMap<String, LeaseRecord>>,
    now: Cell<Millis>,
}

impl Core {
    pub fn new() -> Core {
        Core {
            slots: RefCell::new(HashMap::new()),
            now: Cell::new(Millis(1_778_493_600_000)),
        }
    }

    fn run(&self, slot: &str, req: LeaseRequest) -> Result<LeaseState, contract::LeaseConflict> {
        let rec = self.slots.borrow().get(slot).cloned().unwrap_or_default();
        let a = apply(&rec, &req, self.now.get()).expect("well-formed");
        self.slots.borrow_mut().insert(slot.into(), a.record);
        a.outcome
    }
}

impl LeaseApi for Core {
    async fn acquire(&self, slot: &str, holder: &str, ttl_ms: u64) -> Result<LeaseState, Refusal> {
        self.run(slot, LeaseRequest::acquire(holder, ttl_ms as i64))
            .map_err(|_| Refusal::Held)
    }
    async fn renew(&self, slot: &str, holder: &str, ttl_ms: u64) -> Result<LeaseState, Refusal> {
        self.run(slot, LeaseRequest::renew(holder, ttl_ms as i64))
            .map_err(|_| Refusal::Lost)
    }
    async fn release(&self, slot: &str, holder: &str) -> Result<(), Refusal> {
        self.run(slot, LeaseRequest::release(holder))
            .map(|_| ())
            .map_err(|c| Refusal::Other(c.to_string()))
    }
    async fn read(&self, slot: &str) -> Result<LeaseState, Refusal> {
        Ok(self
            .slots
            .borrow()
            .get(slot)
            .map(|r| r.state.clone())
            .unwrap_or_default())
    }
    async fn pass(&self, ms: u64) {
        self.now.set(self.now.get().plus(ms as i64));
    }
}

/// A witness over HTTP (witness-server or workerd), through the real client.
pub struct Http {
    pub base_url: String,
    pub token: String,
}

impl Http {
    pub fn client(&self, slot: &str) -> WitnessClient {
        let mut cfg = ClientConfig::new(&self.base_url, &self.token);
        cfg.timeout = Duration::from_secs(10);
        WitnessClient::new(cfg, slot).expect("client")
    }
}

fn classify(e: WitnessError) -> Refusal {
    match e {
        WitnessError::HeldByAnother(_) => Refusal::Held,
        WitnessError::LeaseLost(_) => Refusal::Lost,
        other => Refusal::Other(other.to_string()),
    }
}

impl LeaseApi for Http {
    async fn acquire(&self, slot: &str, holder: &str, ttl_ms: u64) -> Result<LeaseState, Refusal> {
        self.client(slot)
            .acquire(holder, Duration::from_millis(ttl_ms))
            .await
            .map(|v| v.state)
            .map_err(classify)
    }
    async fn renew(&self, slot: &str, holder: &str, ttl_ms: u64) -> Result<LeaseState, Refusal> {
        let c = self.client(slot);
        let g = c.read().await.map_err(classify)?.state.generation;
        c.renew(holder, Duration::from_millis(ttl_ms), g)
            .await
            .map(|v| v.state)
            .map_err(classify)
    }
    async fn release(&self, slot: &str, holder: &str) -> Result<(), Refusal> {
        self.client(slot)
            .release(holder)
            .await
            .map(|_| ())
            .map_err(classify)
    }
    async fn read(&self, slot: &str) -> Result<LeaseState, Refusal> {
        self.client(slot)
            .read()
            .await
            .map(|v| v.state)
            .map_err(classify)
    }
    async fn pass(&self, ms: u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// Tokens used by every HTTP target: one per region, an any-holder token, and `tok-bound`,
/// which may act as region-a on the slot `bound` only.
pub const TOKENS_JSON: &str = r#"{"tok-any":["*"],"tok-a":["region-a"],"tok-b":["region-b"],"tok-bound":{"holders":["region-a"],"slots":["bound"]}}"#;

pub fn tokens() -> Tokens {
    Tokens::from_json(TOKENS_JSON).expect("tokens")
}

/// An in-process witness-server on a free loopback port with its state in a temp dir.
pub struct Server {
    pub url: String,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileStore::open(dir.path().join("state.json")).expect("store");
        let w = Witness::new(store, tokens(), system_clock());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, w, async {
            let _ = rx.await;
        }));
        Server {
            url,
            dir,
            stop: Some(tx),
        }
    }

    pub fn http(&self, token: &str) -> Http {
        Http {
            base_url: self.url.clone(),
            token: token.into(),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// The built Worker bundle (scripts/build-witness.sh).
pub fn bundle_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build");
    assert!(
        dir.join("index_bg.wasm").exists() && dir.join("entry.mjs").exists(),
        "the Worker bundle is missing in {}: run scripts/build-witness.sh first \
         (scripts/test.sh does it)",
        dir.display()
    );
    dir
}

/// The wasm Worker served by real workerd with a SQLite-backed Durable Object namespace.
pub async fn start_workerd() -> testkit::workerd::Workerd {
    let cfg = testkit::workerd::WorkerdConfig::new(bundle_dir(), "entry.mjs")
        .compatibility_date("2025-09-01")
        .durable_object("LEASES", "LeaseObject", true)
        .binding("WITNESS_TOKENS", TOKENS_JSON);
    testkit::workerd::Workerd::start(cfg)
        .await
        .expect("workerd starts")
}

/// Keeps a value alive for the duration of a test.
pub type Keep = Arc<dyn std::any::Any + Send + Sync>;
