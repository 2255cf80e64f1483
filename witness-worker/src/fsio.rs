//! Durable whole-file replacement: write a temporary sibling, fsync it, rename it over the
//! target, fsync the directory. A crash at any point leaves the old file or the new one, never
//! a torn or empty one, and once this returns the new file survives a power loss (the rename
//! itself is only durable after the directory is synced).
//!
//! Used by `witness-server`'s state file and by continuum-controller's status and operation
//! files (it depends on this crate for the witness client already); native only, since the
//! Worker has no file system.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` durably (see the module doc). The temporary file is
/// `<name>.tmp` beside it; one writer per path at a time.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = tmp_path(path);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Best effort: do not leave a half-written temporary behind.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_dir(path))
}

/// Fsyncs a directory, making renames and new entries in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The temporary sibling [`write_atomically`] writes first: `<name>.tmp`.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("status.json");
        write_atomically(&p, b"one").unwrap();
        write_atomically(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["status.json"]);
        assert_eq!(tmp_path(&p), dir.path().join("status.json.tmp"));
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        write_atomically(&p, b"old").unwrap();
        // A directory where the temporary would go makes the write fail.
        fs::create_dir(tmp_path(&p)).unwrap();
        assert!(write_atomically(&p, b"new").is_err());
        assert_eq!(fs::read(&p).unwrap(), b"old");
        // A missing directory is an error, not a silent no-op.
        assert!(write_atomically(&dir.path().join("absent/s.json"), b"x").is_err());
    }
}
