//! Load figures for the emitter: 1,000 HelmReleases in the in-memory Kubernetes API
//! (testkit::kube, real Flux CRDs, schema check on), flow-server (memory backend) in-process,
//! and the emitter, then:
//!
//! 1. time from emitter start to the full graph delivered (1,000 release nodes + the region
//!    node, every `contains` and `dependsOn` edge, as flow-server holds them);
//! 2. the emitter's RSS (`VmRSS` / `VmHWM` from `/proc/<pid>/status`);
//! 3. condition change → node on flow-server latency: a status patch of one release at a time
//!    (the clock starts before the patch request) until flow-server's SSE stream carries the
//!    node with its new status; p50/p99/max over the samples. This bounds change → POST from
//!    above (it adds flow-server's ingest and SSE fan-out).
//!
//! By default the emitter is the real binary in its own process (so its RSS is its own),
//! pointed at the in-memory API with a kubeconfig; build it first:
//!
//! ```sh
//! cargo build --release -p flow-adapter-flux --bins --examples
//! cargo run --release -p flow-adapter-flux --example emit_load            # child process
//! cargo run --release -p flow-adapter-flux --example emit_load -- --in-process
//! ```
//!
//! With `--in-process` (or when the binary is missing) the emitter runs in this process and the
//! RSS printed is that of the whole process (in-memory API + flow-server + emitter).
//! Every load loop is bounded and targets loopback only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_adapter_flux::flux::helmrelease_resource;
use flow_adapter_flux::mapper::MapContext;
use flow_adapter_flux::sink::{Backoff, SinkConfig};
use flow_adapter_flux::{EmitConfig, Health, Metrics, emit};
use flow_server::AppState;
use flow_server::args::Config;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use testkit::kube::{Crd, KubeApi};

const RELEASES: usize = 1000;
const SAMPLES: usize = 200;
const FLOW: &str = "load-1";
const NS: &str = "flux-system";

fn ready(status: &str, reason: &str) -> Value {
    json!({"status": {
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": reason,
                        "lastTransitionTime": "2026-11-20T10:00:00Z", "observedGeneration": 1}]
    }})
}

fn vm(pid: &str, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .map(|l| l[key.len()..].trim().to_owned())
        .unwrap_or_else(|| "?".into())
}

fn counts(state: &AppState) -> (usize, usize) {
    let Some(f) = state.hub().get(FLOW) else {
        return (0, 0);
    };
    let snap = f.snapshot(state.metrics());
    let v: Value = serde_json::from_slice(&snap.json).unwrap();
    (
        v["nodes"].as_array().map_or(0, Vec::len),
        v["relationships"].as_array().map_or(0, Vec::len),
    )
}

#[tokio::main]
async fn main() {
    let in_process_flag = std::env::args().any(|a| a == "--in-process");
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("flow-adapter-flux"))
        .filter(|p| p.exists());
    let in_process = in_process_flag || bin.is_none();

    let k = KubeApi::start(&[
        Crd::bundled("helm.toolkit.fluxcd.io_helmreleases.yaml"),
        Crd::bundled("source.toolkit.fluxcd.io_helmcharts.yaml"),
    ])
    .await
    .unwrap();
    let client = k.client().unwrap();
    let hrs: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &helmrelease_resource());
    let t = Instant::now();
    let mut edges = 0;
    for i in 0..RELEASES {
        let deps: Vec<Value> = (i.saturating_sub(2)..i)
            .map(|d| json!({"name": format!("bp-r{d:04}")}))
            .collect();
        edges += deps.len();
        let o: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": format!("bp-r{i:04}"), "namespace": NS},
            "spec": {"interval": "10m", "dependsOn": deps,
                     "chart": {"spec": {"chart": "x", "sourceRef": {"kind": "HelmRepository", "name": "r"}}}}
        }))
        .unwrap();
        hrs.create(&PostParams::default(), &o).await.unwrap();
        hrs.patch_status(
            &format!("bp-r{i:04}"),
            &PatchParams::default(),
            &Patch::Merge(ready("True", "InstallSucceeded")),
        )
        .await
        .unwrap();
    }
    let want_rels = RELEASES + edges;
    println!(
        "setup: {RELEASES} HelmReleases ({edges} dependsOn edges) created in the in-memory API in {:.2?}",
        t.elapsed()
    );

    let cfg = Config {
        idle_ttl: None,
        ..Config::default()
    };
    let state = AppState::memory(&cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fs_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(flow_server::serve(
        listener,
        state.clone(),
        std::future::pending::<()>(),
    ));

    // Start the emitter.
    let start = Instant::now();
    let mut child = None;
    let _kubeconfig;
    let emitter_pid: String;
    if in_process {
        let emit_cfg = EmitConfig {
            ctx: MapContext::new("fsn1", FLOW, Some(NS)),
            sink: SinkConfig {
                base_url: fs_url.clone(),
                flow_id: FLOW.into(),
                token: None,
                batch_max: 200,
                backoff: Backoff::default(),
                post_timeout: Duration::from_secs(10),
                resync_interval: None,
            },
            queue_capacity: 20_000,
        };
        let c = client.clone();
        tokio::spawn(async move {
            let _ = emit::run(
                c,
                emit_cfg,
                None,
                Arc::new(Metrics::new()),
                Arc::new(Health::default()),
            )
            .await;
        });
        emitter_pid = "self".into();
    } else {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(
            f,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mem\n  cluster:\n    server: {}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: c\n  context:\n    cluster: mem\n    user: u\ncurrent-context: c\n",
            k.url()
        )
        .unwrap();
        let c = tokio::process::Command::new(bin.clone().unwrap())
            .arg("emit")
            .env("KUBECONFIG", f.path())
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("REGION_KEY", "fsn1")
            .env("FLOW_SERVER_URL", &fs_url)
            .env("FLOW_ID", FLOW)
            .env("NAMESPACE_FILTER", NS)
            .env("HEALTH_LISTEN_ADDR", "127.0.0.1:0")
            .env("FLOW_ADAPTER_LEADER_ELECTION", "false")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        emitter_pid = c.id().unwrap().to_string();
        child = Some(c);
        _kubeconfig = f;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (n, r) = counts(&state);
        if n == RELEASES + 1 && r == want_rels {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "graph not delivered: {n} nodes, {r} rels"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let full = start.elapsed();
    println!(
        "full graph delivered ({} nodes, {want_rels} relationships): {full:.2?} from emitter start",
        RELEASES + 1
    );
    let rss_label = if in_process {
        "RSS of the whole process (in-memory API + flow-server + emitter)"
    } else {
        "emitter process RSS"
    };
    println!(
        "{rss_label} after delivery: VmRSS {} (VmHWM {})",
        vm(&emitter_pid, "VmRSS:"),
        vm(&emitter_pid, "VmHWM:")
    );

    // Condition change → node on flow-server (SSE), one change at a time.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut resp = http
        .get(format!("{fs_url}/v1/flows/{FLOW}/stream"))
        .send()
        .await
        .unwrap();
    let mut parser = flow_server::sse::Parser::new();
    let mut got_snapshot = false;
    while !got_snapshot {
        let chunk = resp.chunk().await.unwrap().unwrap();
        got_snapshot = parser.feed(&chunk).iter().any(|e| e.event == "snapshot");
    }
    let mut samples = Vec::with_capacity(SAMPLES);
    for s in 0..SAMPLES {
        let name = format!("bp-r{:04}", (s * 5) % RELEASES);
        let id = format!("fsn1/{name}");
        let t0 = Instant::now();
        hrs.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(ready("False", "UpgradeFailed")),
        )
        .await
        .unwrap();
        'wait: loop {
            let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
                .await
                .expect("no SSE data within 30 s")
                .unwrap()
                .unwrap();
            for e in parser.feed(&chunk) {
                if e.event != "upsert-nodes" {
                    continue;
                }
                let v: Value = serde_json::from_str(&e.data).unwrap();
                let hit = v["nodes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n["id"] == id.as_str() && n["status"] == "failed");
                if hit {
                    samples.push(t0.elapsed());
                    break 'wait;
                }
            }
        }
    }
    samples.sort();
    let pct = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    println!(
        "condition change → node on flow-server ({SAMPLES} sequential changes): p50 {:.2?}  p99 {:.2?}  max {:.2?}",
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
    println!(
        "{rss_label} at the end: VmRSS {} (VmHWM {})",
        vm(&emitter_pid, "VmRSS:"),
        vm(&emitter_pid, "VmHWM:")
    );
    drop(child);
}
