//! Durable slot storage for `witness-server`: every slot's [`LeaseRecord`] in one JSON file.
//!
//! A change is on disk before the caller answers: the whole file is replaced with
//! [`crate::fsio::write_atomically`] (temporary sibling, fsync, rename, fsync the directory),
//! so a crash leaves either the old or the new file, never a torn one. Slots are few (one per
//! protected application), so rewriting the file is cheap.
//!
//! # Starting
//! A witness that starts with an empty state would grant epochs it has already granted, so a
//! long-lived witness opens its state with [`FileStore::start`] and a [`StartMode`]: a missing
//! state file is an error unless this is the witness's first start. Beside the state file a
//! marker `<name>.created` records that a state was created there; it lets a later start tell
//! "never initialised" from "lost" (see [`StoreError::Lost`]). [`FileStore::open`] (open or
//! create) is for state that lives and dies with its process: tests and the lab.

use crate::fsio;
use contract::LeaseRecord;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

/// Storage failures. A failed write means the request was not answered as granted.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the state file failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not ours or is corrupt; refusing to start rather than forget epochs.
    #[error("state file {path} is not a witness state file: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decode error.
        #[source]
        source: serde_json::Error,
    },
    /// [`StartMode::Existing`] and there is no state file (and never was one here, as far as
    /// the marker tells).
    #[error(
        "state file {path} does not exist; a witness that started empty would grant epochs it has already granted"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The state file is missing but its marker says one was created there: the state was
    /// lost. Restore it; starting empty would reissue its epochs.
    #[error(
        "state file {path} is missing but {marker} says a witness state was created there ({created}): the state was lost. Restore it from a backup; starting empty would grant epochs that were already granted. To really start over, delete {marker}, initialise again and raise every slot's epoch floor above the highest epoch ever granted"
    )]
    Lost {
        /// The file.
        path: PathBuf,
        /// The marker.
        marker: PathBuf,
        /// What the marker says.
        created: String,
    },
    /// [`StartMode::Init`] and the state file exists: init never overwrites it.
    #[error("state file {path} already exists; initialising never overwrites a state file")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// [`StartMode::InitIfNewVolume`] and the directory is neither new nor holds the state.
    #[error(
        "state file {path} does not exist and {dir} is not a new volume (not empty: {entries}); refusing to create an empty state where one may have been lost"
    )]
    NotNewVolume {
        /// The file.
        path: PathBuf,
        /// Its directory.
        dir: PathBuf,
        /// Some of what the directory holds.
        entries: String,
    },
    /// [`StartMode::InitIfNewVolume`] and the directory does not exist (volume not mounted?).
    #[error("state directory {dir} does not exist (is the volume mounted?)")]
    NoDirectory {
        /// The directory.
        dir: PathBuf,
    },
}

/// How [`FileStore::start`] treats the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartMode {
    /// Every start but the first: the state file must exist.
    Existing,
    /// The first start of a new witness: create the state file (and its directory). Refused
    /// when the state file exists (never overwritten) or when the marker says one was lost.
    Init,
    /// For orchestrators that pass the same flags on every start (the Helm chart): open the
    /// state file when it exists; create it only when its directory exists and holds nothing
    /// but `lost+found` (a new volume); refuse otherwise — a directory with the marker in it
    /// lost its state.
    InitIfNewVolume,
}

/// All slots, mirrored in memory, persisted on every change.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    slots: BTreeMap<String, LeaseRecord>,
}

/// The marker beside a state file: `<name>.created`.
pub fn marker_path(state: &Path) -> PathBuf {
    let mut name = state
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".created");
    state.with_file_name(name)
}

impl FileStore {
    /// Opens the state file, creating an empty one when absent. Only for state that lives and
    /// dies with its process (tests, the lab): a long-lived witness uses [`FileStore::start`].
    pub fn open(path: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let path = path.into();
        match Self::read(&path)? {
            Some(slots) => Ok(FileStore { path, slots }),
            None => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(io_err(&path))?;
                }
                Ok(FileStore {
                    path,
                    slots: BTreeMap::new(),
                })
            }
        }
    }

    /// Opens the state file of a long-lived witness as `mode` says (see [`StartMode`]). A
    /// state file created here is on disk (fsynced, with its marker) before this returns; an
    /// existing one gets its marker if it has none yet (state files from before markers).
    pub fn start(path: impl Into<PathBuf>, mode: StartMode) -> Result<FileStore, StoreError> {
        let path = path.into();
        let marker = marker_path(&path);
        let existing = Self::read(&path)?;
        let store = match (existing, mode) {
            (Some(_), StartMode::Init) => return Err(StoreError::Exists { path }),
            (Some(slots), _) => FileStore { path, slots },
            (None, mode) => {
                if let Ok(created) = fs::read_to_string(&marker) {
                    return Err(StoreError::Lost {
                        path,
                        marker,
                        created: created.trim().to_owned(),
                    });
                }
                match mode {
                    StartMode::Existing => return Err(StoreError::Missing { path }),
                    StartMode::Init => {
                        let dir = fsio::parent_dir(&path);
                        fs::create_dir_all(dir).map_err(io_err(&path))?;
                    }
                    StartMode::InitIfNewVolume => Self::check_new_volume(&path)?,
                }
                let store = FileStore {
                    path,
                    slots: BTreeMap::new(),
                };
                store.flush()?;
                store
            }
        };
        if !marker.exists() {
            let note = format!(
                "witness state {} created or first opened at unix ms {}\n",
                store.path.display(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            );
            fsio::write_atomically(&marker, note.as_bytes()).map_err(io_err(&marker))?;
        }
        Ok(store)
    }

    fn check_new_volume(path: &Path) -> Result<(), StoreError> {
        let dir = fsio::parent_dir(path);
        let entries = match fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NoDirectory {
                    dir: dir.to_owned(),
                });
            }
            Err(e) => return Err(io_err(path)(e)),
        };
        // A crash during our own first write may leave its temporary; nothing else counts.
        let tmp = fsio::tmp_path(path);
        let mut others = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(path))?;
            let name = entry.file_name();
            if name == "lost+found" || tmp.file_name() == Some(name.as_os_str()) {
                continue;
            }
            others.push(name.to_string_lossy().into_owned());
        }
        if others.is_empty() {
            return Ok(());
        }
        others.sort();
        let more = others.len().saturating_sub(5);
        others.truncate(5);
        let mut entries = others.join(", ");
        if more > 0 {
            entries.push_str(&format!(" and {more} more"));
        }
        Err(StoreError::NotNewVolume {
            path: path.to_owned(),
            dir: dir.to_owned(),
            entries,
        })
    }

    /// The slots in the state file, or `None` when it does not exist.
    fn read(path: &Path) -> Result<Option<BTreeMap<String, LeaseRecord>>, StoreError> {
        match fs::read(path) {
            Ok(b) if b.is_empty() => Ok(Some(BTreeMap::new())),
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    path: path.to_owned(),
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    }

    /// The record of `slot`, if it was ever written.
    pub fn get(&self, slot: &str) -> Option<&LeaseRecord> {
        self.slots.get(slot)
    }

    /// All slots (for metrics).
    pub fn slots(&self) -> impl Iterator<Item = (&String, &LeaseRecord)> {
        self.slots.iter()
    }

    /// Stores `record` for `slot` and makes it durable before returning. On error the
    /// in-memory view is left as it was.
    pub fn put(&mut self, slot: &str, record: LeaseRecord) -> Result<(), StoreError> {
        let old = self.slots.insert(slot.to_owned(), record);
        if let Err(e) = self.flush() {
            match old {
                Some(o) => self.slots.insert(slot.to_owned(), o),
                None => self.slots.remove(slot),
            };
            return Err(e);
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec_pretty(&self.slots).map_err(|e| io_err(&self.path)(e.into()))?;
        fsio::write_atomically(&self.path, &bytes).map_err(io_err(&self.path))
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use contract::{LeaseRequest, Millis, apply};

    #[test]
    fn records_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let mut s = FileStore::open(&path).unwrap();
        let a = apply(
            &LeaseRecord::default(),
            &LeaseRequest::acquire("a", 1000),
            Millis(5),
        )
        .unwrap();
        s.put("app/db", a.record.clone()).unwrap();
        drop(s);
        let s = FileStore::open(&path).unwrap();
        assert_eq!(s.get("app/db"), Some(&a.record));
        assert!(s.get("other").is_none());
    }

    #[test]
    fn start_modes_never_replace_a_state_or_start_empty_after_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(matches!(
            FileStore::start(&path, StartMode::Existing),
            Err(StoreError::Missing { .. })
        ));
        assert!(!path.exists(), "a refused start creates nothing");
        let mut s = FileStore::start(&path, StartMode::Init).unwrap();
        let a = apply(
            &LeaseRecord::default(),
            &LeaseRequest::acquire("a", 1000),
            Millis(5),
        )
        .unwrap();
        s.put("app", a.record.clone()).unwrap();
        drop(s);
        assert!(matches!(
            FileStore::start(&path, StartMode::Init),
            Err(StoreError::Exists { .. })
        ));
        for mode in [StartMode::Existing, StartMode::InitIfNewVolume] {
            assert_eq!(
                FileStore::start(&path, mode).unwrap().get("app"),
                Some(&a.record)
            );
        }
        fs::remove_file(&path).unwrap();
        for mode in [
            StartMode::Existing,
            StartMode::Init,
            StartMode::InitIfNewVolume,
        ] {
            let e = FileStore::start(&path, mode).unwrap_err();
            assert!(matches!(e, StoreError::Lost { .. }), "{mode:?}: {e}");
            assert!(!path.exists());
        }
    }

    #[test]
    fn an_existing_state_without_a_marker_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{}").unwrap();
        FileStore::start(&path, StartMode::Existing).unwrap();
        assert!(marker_path(&path).exists());
        fs::remove_file(&path).unwrap();
        assert!(matches!(
            FileStore::start(&path, StartMode::Existing),
            Err(StoreError::Lost { .. })
        ));
    }

    #[test]
    fn corrupt_state_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            FileStore::open(&path),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
