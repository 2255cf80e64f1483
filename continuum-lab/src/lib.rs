//! The Continuum lab and drill: real parts in network namespaces (or on loopback), driven by faults, judged by a ledger.
//! See `lab` and `drill`. Kept out of `continuum-controller` so the product binary does not
//! link `testkit`.

pub mod campaign;
pub mod drill;
pub mod hostile;
pub mod lab;
pub mod net;
pub mod trap;
