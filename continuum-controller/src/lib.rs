//! Continuum controller: safe failover, switchover and failback between two regions.
//!
//! # Layout
//! - [`decide`]: PURE decision core, `decide(&Observed, now) -> Plan` (no async, no I/O, no
//!   clock), with table-driven tests and a two-region property simulation against the real
//!   lease transition ([`contract::apply`]).
//! - [`ports`]: the async traits the executor calls (`Witness`, `Dns`, `Database`, `Routes`,
//!   `Audit`, `StateStore`).
//! - [`adapters`]: the standalone/lab implementations of the ports: tokio-postgres, async-nats
//!   JetStream, the witness client, `pdm-client` (PowerDNS) and the lab route front.
//! - [`exec`]: runs a [`decide::Plan`] step by step through the ports, persisting the
//!   operation before every external write, with a timeout and a named condition per step.
//! - [`audit`]: upstream's 13 audit event types and JSON shape, plus epoch, durations, LSNs.
//!
//! # State machine (one region's view)
//! ```text
//!            acquire (free/expired, peer down ≥2 vantages, RPO ok, autoFailover)
//!  STANDBY ───────────────────────────────────────────────▶ HOLDER(standby)
//!     ▲  ▲                                                      │ promote → undrain → flip DNS
//!     │  │ rebuild (peer holds lease)                           ▼
//!     │  └──────────── FENCED ◀── deadline passed / lease lost ─ PRIMARY ─┐ renew every `renew`
//!     │                   │ renew ok again (hold-down) → un-fence ──▶ ▲   │
//!     └── switchover: drain → demote → wait replayed LSN → release ◀──┴───┘
//! ```

pub mod adapters;
pub mod audit;
pub mod cli;
pub mod crd;
pub mod decide;
pub mod exec;
pub mod kube;
pub mod metrics;
pub mod observe;
pub mod ports;
pub mod standalone;
pub mod watchdog;
