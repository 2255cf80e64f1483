//! [`Witness`] over [`witness_worker::client::WitnessClient`].
//!
//! The client's errors map onto the port's: `HeldByAnother` and `LeaseLost` as they are,
//! `Unavailable` (timeouts, connection errors, 5xx after the client's retries) as
//! `Unavailable`, everything else (token refused, malformed request, contention) as `Refused`.
//! The adapter keeps the generation of the last answer for the next renew's `If-Match` (the
//! client re-reads once when another write intervened). A renew whose answer carries another
//! epoch than the one renewed is `LeaseLost`: write authority never silently moves epochs.

use std::sync::Mutex;
use std::time::Duration;

use contract::lease::{HolderReport, LeaseView};
use witness_worker::client::{WitnessClient, WitnessError};

use crate::ports::{Witness, WitnessPortError};

/// The witness-client [`Witness`] adapter.
#[derive(Debug)]
pub struct WitnessAdapter {
    client: WitnessClient,
    generation: Mutex<u64>,
}

fn map(e: WitnessError) -> WitnessPortError {
    match e {
        WitnessError::HeldByAnother(v) => WitnessPortError::HeldByAnother(v),
        WitnessError::LeaseLost(v) => WitnessPortError::LeaseLost(v),
        WitnessError::Unavailable(m) => WitnessPortError::Unavailable(m),
        other @ (WitnessError::Contended(_)
        | WitnessError::Unauthorized
        | WitnessError::Forbidden(_)
        | WitnessError::Invalid(_)) => WitnessPortError::Refused(other.to_string()),
    }
}

impl WitnessAdapter {
    /// An adapter over `client` (one slot of one witness).
    pub fn new(client: WitnessClient) -> WitnessAdapter {
        WitnessAdapter {
            client,
            generation: Mutex::new(0),
        }
    }

    /// The generation of the last answer seen (0 before any).
    pub fn generation(&self) -> u64 {
        self.generation.lock().map_or(0, |g| *g)
    }

    fn remember(&self, view: &LeaseView) {
        if let Ok(mut g) = self.generation.lock() {
            *g = view.state.generation;
        }
    }

    fn remember_err(&self, e: &WitnessError) {
        if let WitnessError::HeldByAnother(v) | WitnessError::LeaseLost(v) = e {
            self.remember(v);
        }
    }
}

impl Witness for WitnessAdapter {
    async fn read(&self) -> Result<LeaseView, WitnessPortError> {
        let v = self.client.read().await.map_err(map)?;
        self.remember(&v);
        Ok(v)
    }

    async fn acquire(
        &self,
        holder: &str,
        ttl: Duration,
        report: Option<&HolderReport>,
    ) -> Result<LeaseView, WitnessPortError> {
        match self.client.acquire_reporting(holder, ttl, report).await {
            Ok(v) => {
                self.remember(&v);
                Ok(v)
            }
            Err(e) => {
                self.remember_err(&e);
                Err(map(e))
            }
        }
    }

    async fn renew(
        &self,
        holder: &str,
        ttl: Duration,
        epoch: u64,
        report: Option<&HolderReport>,
    ) -> Result<LeaseView, WitnessPortError> {
        let generation = self.generation();
        match self
            .client
            .renew_reporting(holder, ttl, generation, report)
            .await
        {
            Ok(v) => {
                self.remember(&v);
                if v.state.epoch != epoch {
                    return Err(WitnessPortError::LeaseLost(Box::new(v)));
                }
                Ok(v)
            }
            Err(e) => {
                self.remember_err(&e);
                Err(map(e))
            }
        }
    }

    async fn release(&self, holder: &str, epoch: u64) -> Result<(), WitnessPortError> {
        let cur = self.read().await?;
        if cur.state.holder != holder || cur.state.epoch != epoch {
            return Ok(());
        }
        if let Some(v) = self.client.release(holder).await.map_err(map)? {
            self.remember(&v);
        }
        Ok(())
    }
}
