//! Adapters implementing the [`ports`](crate::ports) for the standalone mode and the lab.
//!
//! - [`postgres`]: [`Database`](crate::ports::Database) over tokio-postgres (role, LSNs, lag,
//!   promote, fence, sync, demote and rebuild through `pg_ctl`/`pg_rewind`).
//! - [`nats`]: [`Audit`](crate::ports::Audit) over async-nats JetStream (`catalyst.audit`).
//! - [`witness`]: [`Witness`](crate::ports::Witness) over the witness client.
//! - [`dns`]: [`Dns`](crate::ports::Dns) over `pdm-client` (PowerDNS LUA record + epoch + verify).
//! - [`routes`]: [`Routes`](crate::ports::Routes) for the lab: a loopback HTTP front per region
//!   (drain state + dead-man switch behind `/healthz`) and its HTTP client.

pub mod dns;
pub mod nats;
pub mod postgres;
pub mod routes;
pub mod witness;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::ports::PlaneError;

/// The highest epoch a data-plane adapter applied; lower epochs are refused
/// (`spec/peers.md` §2.3 rule 7).
#[derive(Debug, Default)]
pub struct EpochGuard(AtomicU64);

impl EpochGuard {
    /// Accepts `epoch` when it is at least the highest applied one, and records it.
    pub fn admit(&self, epoch: u64) -> Result<(), PlaneError> {
        let prev = self.0.fetch_max(epoch, Ordering::SeqCst);
        if epoch < prev {
            return Err(PlaneError::StaleEpoch {
                given: epoch,
                applied: prev,
            });
        }
        Ok(())
    }

    /// The highest epoch applied so far.
    pub fn applied(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_guard_refuses_lower_epochs_only() {
        let g = EpochGuard::default();
        g.admit(3).unwrap();
        g.admit(3).unwrap();
        assert!(matches!(
            g.admit(2),
            Err(PlaneError::StaleEpoch {
                given: 2,
                applied: 3
            })
        ));
        g.admit(4).unwrap();
        assert_eq!(g.applied(), 4);
    }
}
