//! [`Dns`] over `pdm-client` (any [`DnsControl`]; the lab uses [`pdm_client::PowerDnsBackend`]).
//!
//! A flip renders the application's LUA record for the new primary (the configured
//! [`PlacementSpec`] with `primary` swapped in, probe URL unchanged so PowerDNS keeps its warm
//! health checks), applies it with the epoch in the fence comment (a stored higher epoch refuses
//! the write: [`PlaneError::StaleEpoch`]), and, when a [`Verifier`] is configured, is done only
//! once the authoritative servers answer the new primary's addresses.

use std::sync::Arc;
use std::time::Duration;

use pdm_client::{DnsControl, DnsUpdate, Error, PlacementSpec, Verifier, lua};

use crate::ports::{Dns, PlaneError};

/// Configuration of [`PdmDns`].
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The zone, e.g. `lab.test`.
    pub zone: String,
    /// The application's hostnames (in `zone`); the first one is verified.
    pub hostnames: Vec<String>,
    /// The record spec; `primary` is replaced on every flip.
    pub spec: PlacementSpec,
    /// How long a flip waits for the authoritative answer.
    pub verify_timeout: Duration,
}

/// The `pdm-client` [`Dns`] adapter.
pub struct PdmDns {
    control: Arc<dyn DnsControl>,
    verifier: Option<Verifier>,
    cfg: DnsConfig,
}

impl std::fmt::Debug for PdmDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PdmDns")
            .field("backend", &self.control.backend())
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn map(e: Error) -> PlaneError {
    match e {
        Error::StaleEpoch {
            stored, attempted, ..
        }
        | Error::Superseded {
            stored, attempted, ..
        } => PlaneError::StaleEpoch {
            given: attempted,
            applied: stored,
        },
        e if e.is_transient() => PlaneError::Unavailable(e.to_string()),
        e => PlaneError::Failed(e.to_string()),
    }
}

impl PdmDns {
    /// An adapter writing through `control`, verifying with `verifier` when given.
    pub fn new(control: Arc<dyn DnsControl>, verifier: Option<Verifier>, cfg: DnsConfig) -> PdmDns {
        PdmDns {
            control,
            verifier,
            cfg,
        }
    }
}

impl Dns for PdmDns {
    async fn flip(&self, primary: &str, epoch: u64) -> Result<(), PlaneError> {
        let rendered = lua::render(&self.cfg.spec.with_primary(primary))
            .map_err(|e| PlaneError::Failed(format!("rendering the record: {e}")))?;
        let update = DnsUpdate::new(&self.cfg.zone, epoch)
            .writer(primary)
            .records(self.cfg.hostnames.iter().map(String::as_str), &rendered);
        self.control.apply(&update).await.map_err(map)?;
        let (Some(verifier), Some(expected), Some(name)) = (
            &self.verifier,
            &rendered.healthy_answer,
            self.cfg.hostnames.first(),
        ) else {
            return Ok(());
        };
        verifier
            .wait_for(name, expected, self.cfg.verify_timeout)
            .await
            .map_err(map)?;
        Ok(())
    }
}
