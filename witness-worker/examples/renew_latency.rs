//! Renew latency of the witness on loopback, through the real client: p50/p99/max.
//!
//! Run with `cargo run --release -p witness-worker --example renew_latency -- server 2000`
//! (in-process witness-server, fsync included) or `... -- workerd 2000` (the built wasm Worker
//! in real workerd; run scripts/build-witness.sh first), or `... -- url http://host:port TOKEN N`.

use std::time::{Duration, Instant};
use witness_worker::auth::Tokens;
use witness_worker::client::{ClientConfig, WitnessClient};
use witness_worker::server::{Witness, serve, system_clock};
use witness_worker::store::FileStore;

const TOKENS: &str = r#"{"tok":["*"]}"#;

async fn measure(base: &str, token: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let c = WitnessClient::new(ClientConfig::new(base, token), "bench/slot")?;
    let ttl = Duration::from_secs(30);
    let mut g = c.acquire("region-a", ttl).await?.state.generation;
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        g = c.renew("region-a", ttl, g).await?.state.generation;
        lat.push(t.elapsed());
    }
    lat.sort();
    Ok(lat)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = args.first().map(String::as_str).unwrap_or("server");
    let n: usize = args.last().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let (lat, what) = match target {
        "server" => {
            let dir = tempfile::tempdir()?;
            let w = Witness::new(
                FileStore::open(dir.path().join("state.json"))?,
                Tokens::from_json(TOKENS)?,
                system_clock(),
            );
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", l.local_addr()?);
            tokio::spawn(serve(l, w, std::future::pending()));
            (
                measure(&base, "tok", n).await?,
                "witness-server (fsync per write)",
            )
        }
        "workerd" => {
            let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build");
            let cfg = testkit::WorkerdConfig::new(dir, "entry.mjs")
                .compatibility_date("2025-09-01")
                .durable_object("LEASES", "LeaseObject", true)
                .binding("WITNESS_TOKENS", TOKENS);
            let w = testkit::Workerd::start(cfg).await?;
            let base = w.url().trim_end_matches('/').to_owned();
            (
                measure(&base, "tok", n).await?,
                "wasm Worker in workerd (Durable Object, SQLite)",
            )
        }
        "url" => {
            let base = args.get(1).cloned().unwrap_or_default();
            let token = args.get(2).cloned().unwrap_or_default();
            (measure(&base, &token, n).await?, "given URL")
        }
        other => anyhow::bail!("unknown target {other:?}: server | workerd | url URL TOKEN N"),
    };
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "renew latency, {what}: n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
        lat.len(),
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3
    );
    Ok(())
}
