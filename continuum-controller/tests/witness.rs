//! The `Witness` adapter against an in-process `witness_worker::server`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use continuum_controller::adapters::witness::WitnessAdapter;
use continuum_controller::ports::{Witness, WitnessPortError};
use testkit::eventually;
use witness_worker::auth::Tokens;
use witness_worker::client::{ClientConfig, WitnessClient};
use witness_worker::server::{serve, system_clock};
use witness_worker::store::FileStore;

const TOKENS: &str = r#"{"tok-a":["region-a"],"tok-b":["region-b"]}"#;
const TTL: Duration = Duration::from_secs(30);

struct Server {
    url: String,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path().join("state.json")).unwrap();
        let w = witness_worker::server::Witness::new(
            store,
            Tokens::from_json(TOKENS).unwrap(),
            system_clock(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(listener, w, async {
            let _ = rx.await;
        }));
        Server {
            url,
            _dir: dir,
            stop: Some(tx),
        }
    }

    fn adapter(&self, token: &str) -> WitnessAdapter {
        let mut cfg = ClientConfig::new(&self.url, token);
        cfg.attempts = 1;
        WitnessAdapter::new(WitnessClient::new(cfg, "ns/dr-x").unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn acquire_renew_release_track_the_generation() {
    let s = Server::start().await;
    let a = s.adapter("tok-a");
    let v = a.acquire("region-a", TTL, None).await.unwrap();
    assert_eq!(v.state.holder, "region-a");
    let epoch = v.state.epoch;
    assert!(epoch >= 1);
    assert_eq!(a.generation(), v.state.generation);

    let r = a.renew("region-a", TTL, epoch, None).await.unwrap();
    assert_eq!(r.state.epoch, epoch, "a renew keeps the epoch");
    assert!(r.state.generation > v.state.generation);
    assert_eq!(a.generation(), r.state.generation);
    // Renew again from the tracked generation.
    a.renew("region-a", TTL, epoch, None).await.unwrap();

    // Releasing at another epoch is a no-op; at ours it frees the lease.
    a.release("region-a", epoch + 1).await.unwrap();
    assert_eq!(a.read().await.unwrap().state.holder, "region-a");
    a.release("region-a", epoch).await.unwrap();
    assert!(a.read().await.unwrap().state.holder.is_empty());
    a.release("region-a", epoch).await.unwrap();

    // The other region then acquires with a higher epoch.
    let b = s.adapter("tok-b");
    let vb = b.acquire("region-b", TTL, None).await.unwrap();
    assert!(vb.state.epoch > epoch);
}

#[tokio::test]
async fn held_by_another_then_lost_after_expiry() {
    let s = Server::start().await;
    let a = s.adapter("tok-a");
    let b = s.adapter("tok-b");
    let va = a
        .acquire("region-a", Duration::from_secs(1), None)
        .await
        .unwrap();
    let err = b.acquire("region-b", TTL, None).await.unwrap_err();
    assert!(
        matches!(&err, WitnessPortError::HeldByAnother(v) if v.state.holder == "region-a"),
        "{err:?}"
    );
    eventually(
        "region-b acquires after expiry",
        Duration::from_secs(20),
        || async {
            b.acquire("region-b", TTL, None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await
    .unwrap();
    let err = a
        .renew("region-a", TTL, va.state.epoch, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, WitnessPortError::LeaseLost(v) if v.state.holder == "region-b"),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_a_dead_witness_is_unavailable() {
    let s = Server::start().await;
    let wrong = s.adapter("tok-nope");
    let err = wrong.acquire("region-a", TTL, None).await.unwrap_err();
    assert!(matches!(err, WitnessPortError::Refused(_)), "{err:?}");
    // tok-b may not act as region-a.
    let err = s
        .adapter("tok-b")
        .acquire("region-a", TTL, None)
        .await
        .unwrap_err();
    assert!(matches!(err, WitnessPortError::Refused(_)), "{err:?}");

    let url = s.url.clone();
    drop(s);
    let mut cfg = ClientConfig::new(&url, "tok-a");
    cfg.attempts = 1;
    cfg.timeout = Duration::from_secs(1);
    let a = WitnessAdapter::new(WitnessClient::new(cfg, "ns/dr-x").unwrap());
    eventually("witness down", Duration::from_secs(10), || async {
        match a.read().await {
            Err(WitnessPortError::Unavailable(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
    .unwrap();
}
