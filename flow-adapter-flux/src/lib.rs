//! flow-adapter-flux: Flux HelmReleases and HelmCharts of one cluster → FlowMessages for
//! flow-server, and the stuck-HelmRelease repair job.
//!
//! # Layout
//! - [`flux`] (pure): the HelmRelease v2 / HelmChart v1 fields read, from `DynamicObject`.
//! - [`mapper`] (pure, table-driven): release (+ chart, + previous node) → node and
//!   relationships; region node; `upsert-flow`.
//! - [`graph`] (pure): the emitter's store; watch events in, keyed changes out.
//! - [`queue`]: bounded coalescing queue (latest state per key wins).
//! - [`sink`]: batching, POST with bearer token, retry with backoff + jitter, dedup after 2xx,
//!   full re-send after reconnects.
//! - [`watch`]: kube-runtime watchers → graph → queue, and the sink, as one cancellable pipeline.
//! - [`leader`]: `coordination.k8s.io` Lease election (pure rule + thin loop).
//! - [`emit`]: leadership gating the pipeline.
//! - [`recover`]: the repair job (pure plan + thin patch glue).
//! - [`metrics`], [`http`] (`/healthz`, `/readyz`, `/metrics`), [`args`].
//!
//! ```text
//!  HelmRelease watch ─┐                                   ┌─ POST /v1/flows/{FLOW_ID}/events
//!                     ├─► Graph ─► CoalescingQueue ─► Sink┤   (2xx → delivered; 5xx/408/429/net → requeue + backoff)
//!  HelmChart watch ───┘    (mapper)                       └─ GET snapshot once: prune stale nodes
//!            ▲ runs only while this pod holds the Lease (leader::run → emit::run)
//! ```

pub mod args;
pub mod emit;
pub mod flux;
pub mod graph;
pub mod http;
pub mod leader;
pub mod mapper;
pub mod metrics;
pub mod queue;
pub mod recover;
pub mod sink;
pub mod watch;

pub use metrics::Metrics;
pub use watch::{EmitConfig, Health};
