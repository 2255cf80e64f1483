//! Watch glue: kube-runtime watchers on HelmRelease v2 and HelmChart v1 → [`Graph`] → the
//! coalescing queue, with the sink draining it in the same task (dropping the pipeline future
//! stops watching and delivering at once).
//!
//! The glue only converts: `DynamicObject` → [`Release`]/[`Chart`], watcher events → graph
//! calls, changes → queue. Decisions live in the graph and the mapper.
//!
//! - Start: `upsert-flow` and the region node are queued before the first list.
//! - After the first complete list of releases, flow-server's nodes of this region that this
//!   adapter wrote and that no longer exist are deleted (releases removed while no emitter ran);
//!   the ids are checked against the graph again when the answer arrives.
//! - Every later re-list (the watcher re-lists after a 410 or when it reconnects without a
//!   usable resourceVersion), and the first event after a watch error (a broken connection to
//!   the API server), asks the sink to re-send the full state.
//! - Watch errors are retried by kube-runtime's default backoff.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use contract::FlowNode;
use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};

use crate::flux::{self, Chart, ObjectRef, Release};
use crate::graph::{Change, Graph, Key, Op, Watched};
use crate::mapper::{EMITTED_BY, MapContext};
use crate::metrics::Metrics;
use crate::sink::{FlowClient, Jitter, Queue, Sink, SinkConfig, SinkError};

/// Settings of one emit pipeline.
#[derive(Debug, Clone)]
pub struct EmitConfig {
    /// Region, flow and namespace scope.
    pub ctx: MapContext,
    /// flow-server delivery.
    pub sink: SinkConfig,
    /// Bound of the coalescing queue, in keys.
    pub queue_capacity: usize,
}

/// Shared health flags for `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// This pod is the leader (or election is off).
    pub leader: AtomicBool,
    /// The leader's first list of releases is complete.
    pub synced: AtomicBool,
}

impl Health {
    /// Ready: a follower is always ready; the leader once its first list is complete.
    pub fn ready(&self) -> bool {
        !self.leader.load(Ordering::Acquire) || self.synced.load(Ordering::Acquire)
    }
}

fn api_for(
    client: &kube::Client,
    ns: Option<&str>,
    ar: &kube::api::ApiResource,
) -> Api<DynamicObject> {
    match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, ar),
        None => Api::all_with(client.clone(), ar),
    }
}

/// Runs watch + delivery until cancelled. Returns only on a configuration error.
pub async fn run_pipeline(
    client: kube::Client,
    cfg: &EmitConfig,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<(), SinkError> {
    let sink = Sink::new(cfg.sink.clone(), metrics.clone())?;
    let flow_client = sink.client().clone();
    let queue = Arc::new(Queue::new(cfg.queue_capacity));
    tokio::select! {
        () = sink.run(queue.clone()) => Ok(()),
        () = watch_loop(client, cfg, queue, metrics, health, flow_client) => Ok(()),
    }
}

type Prune = Pin<Box<dyn Future<Output = Option<Vec<FlowNode>>> + Send>>;

async fn watch_loop(
    client: kube::Client,
    cfg: &EmitConfig,
    queue: Arc<Queue>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    flow_client: FlowClient,
) {
    let ns = cfg.ctx.namespace.as_deref();
    let mut graph = Graph::new(cfg.ctx.clone());
    push(&queue, &metrics, graph.start(now_ms())).await;

    let releases = watcher(
        api_for(&client, ns, &flux::helmrelease_resource()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| (Watched::Releases, e));
    let charts = watcher(
        api_for(&client, ns, &flux::helmchart_resource()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map(|e| (Watched::Charts, e));
    let events = futures_util::stream::select(releases, charts);
    let mut events = std::pin::pin!(events);
    let mut first_list = true;
    // A watch error means the connection to the API server broke; the first event after it
    // (the watcher reconnected) triggers a full re-send.
    let mut reconnecting = false;
    let mut prune: Prune = Box::pin(std::future::pending());

    loop {
        tokio::select! {
            ev = events.next() => {
                let Some((watched, ev)) = ev else { return };
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        tracing::warn!(?watched, error = %e, "watch failed; retrying");
                        reconnecting = true;
                        continue;
                    }
                };
                if std::mem::take(&mut reconnecting) && !first_list {
                    tracing::info!("reconnected to the API server; re-sending the full state");
                    queue.request_resync();
                }
                let changes = match ev {
                    watcher::Event::Init => {
                        graph.relist_begin(watched);
                        Vec::new()
                    }
                    watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                        apply(&mut graph, watched, &o, &metrics)
                    }
                    watcher::Event::Delete(o) => delete(&mut graph, watched, &o),
                    watcher::Event::InitDone => {
                        let out = graph.relist_done(watched);
                        if watched == Watched::Releases {
                            if first_list {
                                first_list = false;
                                health.synced.store(true, Ordering::Release);
                                tracing::info!(releases = graph.release_count(), "initial list complete");
                                prune = Box::pin(fetch_nodes(flow_client.clone(), cfg.sink.backoff));
                            } else {
                                tracing::info!("re-listed; re-sending the full state");
                                queue.request_resync();
                            }
                        }
                        out
                    }
                };
                push(&queue, &metrics, changes).await;
            }
            nodes = &mut prune => {
                prune = Box::pin(std::future::pending());
                let stale = stale_nodes(&graph, nodes.unwrap_or_default());
                if !stale.is_empty() {
                    tracing::info!(count = stale.len(), "deleting nodes of releases removed while no emitter ran");
                }
                push(&queue, &metrics, stale.into_iter().map(|id| (Key::Node(id), Op::DeleteNode)).collect()).await;
            }
        }
    }
}

/// Nodes flow-server holds for this region (and watched namespace), written by this adapter,
/// that the graph does not own (any more).
fn stale_nodes(graph: &Graph, server: Vec<FlowNode>) -> Vec<String> {
    let live: HashSet<String> = graph.node_ids();
    let region = &graph.context().region;
    server
        .into_iter()
        .filter(|n| n.region.as_deref() == Some(region.as_str()))
        .filter(|n| n.meta.get("emittedBy").and_then(|v| v.as_str()) == Some(EMITTED_BY))
        .filter(|n| {
            // Watching one namespace: leave nodes of other namespaces to their own emitter.
            graph
                .context()
                .namespace
                .as_deref()
                .is_none_or(|ns| n.meta.get("namespace").and_then(|v| v.as_str()) == Some(ns))
        })
        .filter(|n| !live.contains(&n.id))
        .map(|n| n.id)
        .collect()
}

/// Reads the flow's nodes, retrying transport errors and 5xx with backoff; gives up (None) on
/// a refusal such as a missing read permission.
async fn fetch_nodes(client: FlowClient, backoff: crate::sink::Backoff) -> Option<Vec<FlowNode>> {
    let mut jitter = Jitter::new();
    let mut attempt = 0u32;
    loop {
        match client.nodes().await {
            Ok(n) => return Some(n.unwrap_or_default()),
            Err(SinkError::Status { code, .. })
                if (400..500).contains(&code) && code != 408 && code != 429 =>
            {
                tracing::warn!(
                    code,
                    "cannot read the flow's snapshot; stale nodes are not pruned"
                );
                return None;
            }
            Err(e) => {
                tracing::debug!(error = %e, "reading the flow's snapshot failed; retrying");
                tokio::time::sleep(backoff.delay(attempt, jitter.unit())).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

fn apply(graph: &mut Graph, watched: Watched, o: &DynamicObject, metrics: &Metrics) -> Vec<Change> {
    let parsed = match watched {
        Watched::Releases => Release::from_dynamic(o).map(|r| graph.apply_release(r)),
        Watched::Charts => Chart::from_dynamic(o).map(|c| graph.apply_chart(c)),
    };
    parsed.unwrap_or_else(|e| {
        metrics.unreadable_objects.inc();
        tracing::warn!(error = %e, "ignoring an unreadable object");
        Vec::new()
    })
}

fn delete(graph: &mut Graph, watched: Watched, o: &DynamicObject) -> Vec<Change> {
    let (Some(ns), Some(name)) = (o.metadata.namespace.as_deref(), o.metadata.name.as_deref())
    else {
        return Vec::new();
    };
    let key = ObjectRef::new(ns, name);
    match watched {
        Watched::Releases => graph.delete_release(&key),
        Watched::Charts => graph.delete_chart(&key),
    }
}

async fn push(queue: &Queue, metrics: &Metrics, changes: Vec<Change>) {
    for (k, op) in changes {
        metrics.events_mapped.inc();
        queue.push(k, op).await;
    }
    metrics
        .queue_depth
        .set(i64::try_from(queue.len()).unwrap_or(i64::MAX));
}

fn now_ms() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_millisecond()
}
