//! Durable slot storage for `witness-server`: every slot's [`LeaseRecord`] in one JSON file.
//!
//! A change is on disk before the caller answers: the whole file is written to a temporary
//! sibling, fsynced, renamed over the old one, and the directory is fsynced, so a crash leaves
//! either the old or the new file, never a torn one. Slots are few (one per protected
//! application), so rewriting the file is cheap.

use contract::LeaseRecord;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
}

/// All slots, mirrored in memory, persisted on every change.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    slots: BTreeMap<String, LeaseRecord>,
}

impl FileStore {
    /// Opens (or creates, when absent) the state file.
    pub fn open(path: impl Into<PathBuf>) -> Result<FileStore, StoreError> {
        let path = path.into();
        let io = |source| StoreError::Io {
            path: path.clone(),
            source,
        };
        let slots = match fs::read(&path) {
            Ok(b) if b.is_empty() => BTreeMap::new(),
            Ok(b) => serde_json::from_slice(&b).map_err(|source| StoreError::Corrupt {
                path: path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(io)?;
                }
                BTreeMap::new()
            }
            Err(e) => return Err(io(e)),
        };
        Ok(FileStore { path, slots })
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
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let tmp = tmp_path(&self.path);
        let bytes = serde_json::to_vec_pretty(&self.slots).map_err(|e| io(e.into()))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(io)?;
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(())
    }
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut name = p.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    p.with_file_name(name)
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
