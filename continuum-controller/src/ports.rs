//! The async traits the executor calls. One adapter per trait lives elsewhere (witness client,
//! `pdm-client` for PowerDNS, tokio-postgres, a lab route front, async-nats JetStream); the
//! executor and its tests depend only on these.
//!
//! Every operation is idempotent (doing it twice equals doing it once), and every operation
//! that writes to the data plane carries the fencing epoch: an adapter remembers the highest
//! epoch it applied and refuses a lower one with a `StaleEpoch` error (spec/peers.md §2.3
//! rule 7).

use crate::audit::AuditEvent;
use crate::decide::{Lsn, Operation};
use contract::lease::{HolderReport, LeaseView};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// Witness errors, in the terms the controller acts on (mirrors
/// `witness_worker::client::WitnessError`).
#[derive(Debug, thiserror::Error)]
pub enum WitnessPortError {
    /// Another holder has an unexpired lease (wait).
    #[error("lease held by {:?} epoch {}", .0.state.holder, .0.state.epoch)]
    HeldByAnother(Box<LeaseView>),
    /// This holder no longer holds the lease: stop acting (self-fence).
    #[error("lease lost: held by {:?} epoch {}", .0.state.holder, .0.state.epoch)]
    LeaseLost(Box<LeaseView>),
    /// No answer (keep serving only until the renew deadline).
    #[error("witness unavailable: {0}")]
    Unavailable(String),
    /// Refused for another reason (token, malformed request, contention).
    #[error("witness refused: {0}")]
    Refused(String),
}

/// The lease witness (adapter: `witness_worker::client::WitnessClient`; the adapter keeps the
/// last generation for `If-Match`).
pub trait Witness: Send + Sync {
    /// Reads the lease.
    fn read(&self) -> impl Future<Output = Result<LeaseView, WitnessPortError>> + Send;
    /// Acquires the lease for `holder` (free/expired, or own unexpired: extended). Never forces.
    /// `report` (durability, flushed LSN) is stored with the lease for the peer to read.
    fn acquire(
        &self,
        holder: &str,
        ttl: Duration,
        report: Option<&HolderReport>,
    ) -> impl Future<Output = Result<LeaseView, WitnessPortError>> + Send;
    /// Renews `holder`'s lease held at `epoch`, storing `report` with it.
    fn renew(
        &self,
        holder: &str,
        ttl: Duration,
        epoch: u64,
        report: Option<&HolderReport>,
    ) -> impl Future<Output = Result<LeaseView, WitnessPortError>> + Send;
    /// Releases `holder`'s lease held at `epoch`; a no-op when not held.
    fn release(
        &self,
        holder: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), WitnessPortError>> + Send;
}

/// Data-plane errors shared by [`Dns`], [`Database`] and [`Routes`].
#[derive(Debug, thiserror::Error)]
pub enum PlaneError {
    /// The target already applied a higher epoch; this writer is stale and must stop.
    #[error("stale epoch {given}: {applied} already applied")]
    StaleEpoch {
        /// Epoch of the refused write.
        given: u64,
        /// Highest epoch applied.
        applied: u64,
    },
    /// The target did not answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The target refused or failed.
    #[error("failed: {0}")]
    Failed(String),
}

/// DNS control (adapter: `pdm-client`, PowerDNS LUA record with the epoch in the comment).
pub trait Dns: Send + Sync {
    /// Points the application's record at `primary`; done when an authoritative answer shows
    /// it.
    fn flip(
        &self,
        primary: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), PlaneError>> + Send;
}

/// The local database (adapters: tokio-postgres for the lab, CNPG through kube).
pub trait Database: Send + Sync {
    /// Promotes the local standby (`pg_promote`); yields the promoted LSN.
    fn promote(&self, epoch: u64) -> impl Future<Output = Result<Lsn, PlaneError>> + Send;
    /// Fences: read-only + terminate writers.
    fn fence(&self, epoch: u64) -> impl Future<Output = Result<(), PlaneError>> + Send;
    /// Un-fences: read-write again.
    fn unfence(&self, epoch: u64) -> impl Future<Output = Result<(), PlaneError>> + Send;
    /// Demotes the local primary to a standby following `target`; yields the demotion LSN
    /// (already a standby: the end of its replayed WAL).
    fn demote(
        &self,
        epoch: u64,
        target: &str,
    ) -> impl Future<Output = Result<Lsn, PlaneError>> + Send;
    /// The LSN the peer (switchover target) has replayed.
    fn peer_replayed(&self) -> impl Future<Output = Result<Lsn, PlaneError>> + Send;
    /// Turns synchronous replication on (`synchronous_standby_names` = peer) or off.
    fn set_sync(&self, epoch: u64, on: bool)
    -> impl Future<Output = Result<(), PlaneError>> + Send;
    /// Arms the database's own dead-man switch, when it has one: an independent watchdog
    /// process that fences the database (the same fence as [`Database::fence`]) once the
    /// host's boot-time clock passes `until_host_ms` without a later arm. This is what stops
    /// an old primary whose controller is paused or killed from acknowledging writes after
    /// the peer may hold the lease. Default: none (CNPG: see `SAFETY.md`).
    fn arm(
        &self,
        epoch: u64,
        until_host_ms: i64,
    ) -> impl Future<Output = Result<(), PlaneError>> + Send {
        let _ = (epoch, until_host_ms);
        async { Ok(()) }
    }
    /// Disarms the database's dead-man switch after this region RELEASED its lease (only a
    /// demoted switchover source releases: its database is a standby then).
    fn disarm(&self, epoch: u64) -> impl Future<Output = Result<(), PlaneError>> + Send {
        let _ = epoch;
        async { Ok(()) }
    }
    /// Rebuilds the local database as a standby of `source` (pg_rewind, else re-clone).
    fn rebuild(
        &self,
        source: &str,
        epoch: u64,
    ) -> impl Future<Output = Result<(), PlaneError>> + Send;
}

/// This region's route (adapters: lab loopback front, Gateway API HTTPRoute weight).
pub trait Routes: Send + Sync {
    /// Weight 0: no new traffic here.
    fn drain(&self, epoch: u64) -> impl Future<Output = Result<(), PlaneError>> + Send;
    /// Traffic here again.
    fn undrain(&self, epoch: u64) -> impl Future<Output = Result<(), PlaneError>> + Send;
    /// Dead-man switch: the route drains itself unless re-armed within `valid_for` (measured
    /// on the same local monotonic clock). Armed after every successful acquire/renew with
    /// `deadline − (now − sent)`, so a paused or crashed controller cannot extend write
    /// authority past its deadline.
    fn arm(
        &self,
        epoch: u64,
        valid_for: Duration,
    ) -> impl Future<Output = Result<(), PlaneError>> + Send;
}

/// Audit errors.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The stream did not acknowledge.
    #[error("audit publish failed: {0}")]
    Publish(String),
}

/// The audit sink (adapter: async-nats JetStream on `catalyst.audit`, stream ensured).
pub trait Audit: Send + Sync {
    /// Publishes one event and waits for the acknowledgement.
    fn publish(&self, event: &AuditEvent) -> impl Future<Output = Result<(), AuditError>> + Send;
}

/// What survives a restart: the operation in progress and the last completed request id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Persisted {
    /// `status.operation`.
    #[serde(default)]
    pub operation: Option<Operation>,
    /// Request ids of the last completed switchovers/failbacks (at most
    /// [`crate::decide::COMPLETED_MEMORY`], oldest first).
    #[serde(default)]
    pub completed: Vec<String>,
}

/// Status store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// I/O failed.
    #[error("status store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The stored status does not decode.
    #[error("status store decode: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Where the operation state is persisted (standalone: a status file; kube: the CR status).
pub trait StateStore: Send + Sync {
    /// Loads the persisted state (default when none).
    fn load(&self) -> impl Future<Output = Result<Persisted, StoreError>> + Send;
    /// Saves it durably before returning.
    fn save(&self, state: &Persisted) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Standalone mode's [`StateStore`]: a JSON status file, written to a temporary file, synced,
/// renamed over the old one and the directory synced (`witness_worker::fsio`), so a crash
/// leaves either the old or the new state and a saved state survives a power loss.
#[derive(Debug, Clone)]
pub struct FileStateStore {
    path: std::path::PathBuf,
}

impl FileStateStore {
    /// A store at `path`.
    pub fn new(path: impl Into<std::path::PathBuf>) -> FileStateStore {
        FileStateStore { path: path.into() }
    }
}

impl StateStore for FileStateStore {
    async fn load(&self) -> Result<Persisted, StoreError> {
        match tokio::fs::read(&self.path).await {
            Ok(b) => Ok(serde_json::from_slice(&b)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Persisted::default()),
            Err(e) => Err(e.into()),
        }
    }

    async fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let body = serde_json::to_vec_pretty(state)?;
        let path = self.path.clone();
        // Blocking file I/O and fsyncs: off the async runtime.
        tokio::task::spawn_blocking(move || witness_worker::fsio::write_atomically(&path, &body))
            .await
            .map_err(std::io::Error::other)??;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::OpKind;

    #[tokio::test]
    async fn file_state_store_round_trips_and_reads_missing_as_default() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStateStore::new(dir.path().join("status.json"));
        assert_eq!(store.load().await.unwrap(), Persisted::default());
        let p = Persisted {
            operation: Some(Operation {
                id: "sw-1".into(),
                kind: OpKind::Switchover,
                step: "demote".into(),
                epoch: 4,
                started_at: contract::Millis(1),
                lsn: Some(Lsn(0x1_0000_0010)),
                target: Some("b".into()),
            }),
            completed: vec!["sw-0".into()],
        };
        store.save(&p).await.unwrap();
        assert_eq!(store.load().await.unwrap(), p);
    }
}
