//! DNS control for Continuum: PowerDNS LUA-record bodies for every placement, written through the
//! PowerDNS Authoritative API or the pool-domain-manager (PDM) API, fenced by the witness epoch,
//! and verified against the authoritative servers.
//!
//! ```text
//!  PlacementSpec ──lua::render──▶ Rendered ──DnsUpdate (+ epoch)──▶ dyn DnsControl ──▶ PowerDNS / PDM
//!                                    │                                                   │
//!                                    └─ healthy_answer ──▶ Verifier::wait_for ◀── DNS ───┘
//! ```
//!
//! # Layout
//!
//! - [`lua`]: PURE. [`Placement`], [`PlacementSpec`] → [`lua::render`] → [`Rendered`] (body, TTL,
//!   expected answers) or a typed [`LuaError`]. Bodies are valid on PowerDNS 4.7; the module docs
//!   list where and why they differ from upstream's golden bodies.
//! - [`model`]: wire types (PowerDNS zones/RRsets/comments, PDM's `lua/commit` and pool
//!   endpoints, the [`model::FenceComment`] carrying the epoch).
//! - [`control`]: the port, [`DnsControl`] (object-safe), with [`DnsUpdate`] and [`Epoch`].
//! - [`powerdns`]: [`PowerDnsBackend`], `X-API-Key`, ensure zone, fenced atomic `PATCH … REPLACE`,
//!   read-back. Its module docs describe the epoch compare and its residual race window.
//! - [`pdm`]: [`PdmClient`], upstream's `POST /v1/lua/commit` and PDM's pool endpoints.
//! - [`verify`]: [`Verifier`], polls the authoritative servers with hickory until the answer is
//!   the expected set.
//! - [`error`]: [`Error`] (with `metric_label()`), the I/O side's one error type.
//!
//! # Use from continuum-controller
//!
//! ```no_run
//! # async fn f(dns: std::sync::Arc<dyn pdm_client::DnsControl>) -> Result<(), Box<dyn std::error::Error>> {
//! use pdm_client::{DnsUpdate, Placement, PlacementSpec, RegionSpec, Verifier, lua};
//! let spec = PlacementSpec::new(Placement::ActiveHotStandby, "hz-hel-rtz-prod")
//!     .region(RegionSpec::new("hz-fsn-rtz-prod", ["5.1.2.3", "5.1.2.4"]))
//!     .region(RegionSpec::new("hz-hel-rtz-prod", ["5.5.6.7"]))
//!     .probe_url("https://probe.example.com/healthz");
//! let rendered = lua::render(&spec)?;
//! let update = DnsUpdate::new("example.com", 8).writer("hz-hel-rtz-prod")
//!     .records(["api.example.com", "web.example.com"], &rendered);
//! dns.apply(&update).await?; // StaleEpoch if a newer epoch already wrote
//! if let Some(expected) = &rendered.healthy_answer {
//!     Verifier::new(["192.0.2.53:53".parse()?])?
//!         .wait_for("api.example.com", expected, std::time::Duration::from_secs(30))
//!         .await?;
//! }
//! # Ok(()) }
//! ```

pub mod control;
pub mod error;
mod http;
pub mod lua;
pub mod model;
pub mod pdm;
pub mod powerdns;
pub mod verify;

pub use control::{Applied, BoxFuture, DnsControl, DnsUpdate, Epoch, Published, RecordUpdate};
pub use error::{Error, Result};
pub use lua::{LuaBody, LuaError, Placement, PlacementSpec, Probe, RegionSpec, Rendered};
pub use pdm::{PdmClient, PdmConfig};
pub use powerdns::{PowerDnsBackend, PowerDnsConfig};
pub use verify::{Verified, Verifier};
