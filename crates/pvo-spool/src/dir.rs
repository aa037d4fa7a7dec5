//! The spool directory: file names, the lock, directory fsync, and moving files aside.
//!
//! Nothing in the spool ever deletes a file it cannot account for. Files that do not parse
//! are renamed into `corrupt/` under a name that never overwrites an earlier one, and both
//! directories are fsynced so that the move survives a crash. The lock file stops two
//! processes from writing the same spool, which would interleave their records.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{io_error, SpoolError};

/// Where files that do not parse are kept for a person to inspect.
pub(crate) const CORRUPT_DIR: &str = "corrupt";
/// Held with `flock` for as long as the spool is open.
pub(crate) const LOCK_FILE: &str = "lock";
/// Space held back for a full disk (`SpoolConfig::reserve`, see `writer`).
pub(crate) const RESERVE_FILE: &str = "reserve";

pub(crate) fn segment_name(seq: u64) -> String {
    format!("seg-{seq:016x}.log")
}

/// Parses `seg-<16 lowercase hex digits>.log`. Only the canonical spelling is accepted, so
/// that one sequence number cannot be spelled by two files.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Makes the creation, rename or removal of entries in `dir` durable.
pub(crate) fn sync_dir(dir: &Path, enabled: bool) -> Result<(), SpoolError> {
    if !enabled {
        return Ok(());
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", dir, e))
}

/// A path in `dir` named `name`, or `name.1`, `name.2`, ... if taken, so that moving a file
/// aside never replaces an earlier one.
pub(crate) fn unique_path(dir: &Path, name: &str) -> PathBuf {
    let first = dir.join(name);
    if fs::symlink_metadata(&first).is_err() {
        return first;
    }
    (1u64..)
        .map(|i| dir.join(format!("{name}.{i}")))
        .find(|p| fs::symlink_metadata(p).is_err())
        .expect("some suffix is free")
}

/// Renames `from` (a file or directory in the spool directory) into `corrupt/`.
pub(crate) fn move_aside(dir: &Path, from: &Path, fsync: bool) -> Result<PathBuf, SpoolError> {
    let corrupt = dir.join(CORRUPT_DIR);
    let name = from
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unnamed".to_string());
    let to = unique_path(&corrupt, &name);
    fs::rename(from, &to).map_err(|e| io_error("move aside", from, e))?;
    sync_dir(&corrupt, fsync)?;
    sync_dir(dir, fsync)?;
    Ok(to)
}

/// Takes the spool's exclusive lock; it is released when the returned file is closed.
pub(crate) fn lock(dir: &Path) -> Result<File, SpoolError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error("open", &path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(SpoolError::Locked {
            path: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(io_error("lock", &path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        assert_eq!(segment_name(0x2a), "seg-000000000000002a.log");
        assert_eq!(parse_segment_name("seg-000000000000002a.log"), Some(0x2a));
        for bad in [
            "seg-000000000000002A.log",
            "seg-2a.log",
            "seg-000000000000002a.log.tmp",
            "seg-+00000000000002a.log",
            "xseg-000000000000002a.log",
            "lock",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn unique_path_never_reuses_a_name() {
        let tmp = tempfile::tempdir().unwrap();
        let a = unique_path(tmp.path(), "x");
        fs::write(&a, b"1").unwrap();
        let b = unique_path(tmp.path(), "x");
        assert_ne!(a, b);
        assert_eq!(b.file_name().unwrap(), "x.1");
    }
}
