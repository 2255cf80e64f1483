//! Dev-only harnesses that run **real** components for integration tests.
//!
//! Each harness is shaped like the `nats-server` crate of nats.rs: it spawns the real program on
//! free loopback ports inside its own temporary directory, waits until the program answers, and
//! its `Drop` kills the program and deletes the directory. Every test owns its own instances, so
//! tests stay parallel-safe.
//!
//! A missing program is a loud [`HarnessError::MissingBinary`] naming the install command
//! (`scripts/setup.sh`, or the apt/npm line); tests never skip silently.
//!
//! # Layout
//!
//! - [`nats`]: [`NatsServer`], `nats-server` with JetStream on a dynamic port.
//! - [`powerdns`]: [`PowerDns`], PowerDNS Authoritative with the gsqlite3 backend, LUA records and
//!   the HTTP API, plus zone/rrset helpers and a cache-less hickory resolver.
//! - [`postgres`]: [`PgPair`], a PostgreSQL 15 primary with a synchronous standby
//!   (`remote_apply`), and [`Pg`], one node with stop/start/crash, promote and
//!   `pg_rewind`-and-follow controls. As root, PostgreSQL runs as user `postgres`;
//!   `TESTKIT_PG_BINDIR` overrides `/usr/lib/postgresql/15/bin`.
//! - [`workerd`]: [`Workerd`], the real `workerd` runtime driven through Miniflare by a small Node
//!   runner (`testkit/workerd/run.mjs`), serving a Worker bundle directory.
//! - [`kube`]: [`KubeApi`], the in-memory API: an in-process HTTP server that kube-rs clients
//!   (`Api`, `watcher`, `Controller`, `finalizer`, Lease election) talk to, loaded with real CRDs
//!   (bundled in `testkit/crds/`), with fault injection. Not a cluster.
//! - [`port`]: [`free_port`] and [`free_udp_tcp_port`], loopback ports outside the ephemeral range.
//! - [`wait`]: [`eventually`] and [`assert_eventually!`], deadline-bounded polling instead of sleeps.
//! - [`error`]: [`HarnessError`], the one error type of this crate.

pub mod apiserver;
pub mod error;
pub mod kube;
pub mod nats;
pub mod port;
pub mod postgres;
pub mod powerdns;
mod process;
pub mod wait;
pub mod workerd;

pub use apiserver::ControlPlane;
pub use error::{HarnessError, Result};
pub use kube::{Crd, KubeApi};
pub use nats::NatsServer;
pub use port::{free_port, free_udp_tcp_port};
pub use postgres::{Pg, PgHost, PgPair};
pub use powerdns::PowerDns;
pub use wait::{eventually, eventually_with};
pub use workerd::{Workerd, WorkerdConfig};

/// Re-export for [`assert_eventually!`]; not part of the public API.
#[doc(hidden)]
pub use tokio as __tokio;
