//! The lease witness: the single arbiter of which region holds write authority.
//!
//! # Layout
//! - [`api`] (pure, every target): the HTTP protocol, compatible with upstream's Worker, that
//!   both runtimes share: parse → [`contract::apply`] → respond.
//! - [`auth`] (every target): bearer tokens bound to the holders they may act as and the
//!   slots they may use.
//! - `wasm` (wasm32 only): the Cloudflare Worker entry and the `LeaseObject` Durable Object
//!   (one per slot; the transition runs inside a storage transaction; expiry from the object's
//!   clock on every request).
//! - `store`, `server` (native): `witness-server`, the same protocol over axum with the slots
//!   persisted to one JSON file (write, fsync, rename, fsync the directory) before answering;
//!   a missing state file is refused unless the witness is initialised (`StartMode`).
//! - `fsio` (native): that durable file replacement, also used by continuum-controller.
//! - `client` (native): the typed client continuum-controller uses.
//! - `quorum` (native): the read-only DNS-quorum view of a slot and its publisher.
//!
//! The lease rules themselves live once, in `contract::lease`.

pub mod api;
pub mod auth;

#[cfg(not(target_arch = "wasm32"))]
pub mod client;
#[cfg(not(target_arch = "wasm32"))]
pub mod fsio;
#[cfg(not(target_arch = "wasm32"))]
pub mod quorum;
#[cfg(not(target_arch = "wasm32"))]
pub mod server;
#[cfg(not(target_arch = "wasm32"))]
pub mod store;

#[cfg(target_arch = "wasm32")]
mod wasm;
