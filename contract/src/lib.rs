//! The one contract every service of the workspace shares.
//!
//! # Layout
//! - [`flow`]: FlowMessage v1, the event envelope that emitters POST to flow-server and that
//!   flow-server streams to the console. Wire-compatible with upstream openova-flow
//!   (camelCase fields, `type` discriminator, `omitempty` on the same fields, unix-millisecond
//!   times), with stricter validation: every rule is checked here, once, and every error names
//!   the field it is about.
//! - [`lease`]: the lease/witness wire types (`LeaseState` with `generation` for
//!   compare-and-set and `epoch` as the fencing token) and [`lease::apply`], the single pure
//!   transition function that the Cloudflare Durable Object, the native `witness-server` and the
//!   tests all run.
//! - [`time`]: [`Millis`], unix milliseconds, with the RFC 3339 form the witness uses on the wire.
//! - [`error`]: [`ContractError`] for FlowMessage validation.
//!
//! # Rules of evolution
//! Additive changes (a new optional field) keep schema version 1: unknown object fields are
//! ignored on decode so older servers accept newer producers. A new message `type`, a new enum
//! value or a changed meaning is a version 2 change and gets a new route prefix.
//!
//! The crate has no async runtime, no clock and no I/O, so it also builds for
//! `wasm32-unknown-unknown` (the witness Worker links it).

pub mod error;
pub mod flow;
pub mod lease;
pub mod time;

pub use error::ContractError;
pub use flow::{
    Condition, FlowInstance, FlowMessage, FlowNode, MessageKind, RelPair, Relationship,
    RelationshipType, Triggerer, When,
};
pub use lease::{
    FloorError, HolderReport, LeaseConflict, LeaseOp, LeaseRecord, LeaseRequest, LeaseRequestError,
    LeaseState, apply,
};
pub use time::Millis;
