//! A cursor into a node's `mail_logs`, so that a wait sees only what was written after a
//! moment of the test and never a line of an earlier run.
//!
//! `mail_logs` keeps the lines of every earlier run of the node, and the node rotates it
//! by size (`mail_logs` → `mail_logs.1` → … up to `[logs] keep`). A [`LogMark`] is the file
//! (by inode, which a rename keeps) and the byte offset in it at the moment it was taken;
//! [`since`] reads from there on, following the marked file into whichever
//! `mail_logs.N` it has been rotated to, then every newer file. A marked file rotated
//! away altogether is older than every file left, so then all of them are new.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A position in `mail_logs`: what had been written when it was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogMark {
    /// The inode of `mail_logs` then; `None` if there was no file yet.
    ino: Option<u64>,
    /// Its length then.
    offset: u64,
}

impl LogMark {
    /// The mark of an empty log: everything is after it.
    pub const START: LogMark = LogMark {
        ino: None,
        offset: 0,
    };
}

/// The current end of the log at `path` (`…/logs/mail_logs`).
pub fn mark(path: &Path) -> LogMark {
    match fs::metadata(path) {
        Ok(m) => LogMark {
            ino: Some(m.ino()),
            offset: m.len(),
        },
        Err(_) => LogMark::START,
    }
}

/// `path`, then `path.1`, `path.2`, … as long as they exist: newest first.
fn generations(path: &Path) -> Vec<PathBuf> {
    let mut all = vec![path.to_path_buf()];
    for n in 1.. {
        let older = PathBuf::from(format!("{}.{n}", path.display()));
        if !older.exists() {
            break;
        }
        all.push(older);
    }
    all
}

fn inodes(files: &[PathBuf]) -> Vec<Option<u64>> {
    files
        .iter()
        .map(|f| fs::metadata(f).ok().map(|m| m.ino()))
        .collect()
}

/// Reads `file` from `offset` on. A mark can fall inside a line only if the node was
/// writing it at that moment; that line began before the mark, so the partial line is
/// skipped.
fn read_from(file: &Path, offset: u64) -> Vec<u8> {
    let Ok(mut f) = File::open(file) else {
        return Vec::new();
    };
    let mut bytes = Vec::new();
    let start = offset.saturating_sub(1);
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    if offset == 0 {
        return bytes;
    }
    // `bytes[0]` is the byte before the mark: a newline means the mark is at a line start.
    match bytes.iter().position(|&b| b == b'\n') {
        Some(i) => bytes.split_off(i + 1),
        None => Vec::new(),
    }
}

/// Everything written to the log at `path` after `mark`, across rotations.
pub fn since(path: &Path, mark: LogMark) -> String {
    // A rotation between listing the files and reading them would skip or repeat a file:
    // read again until the files are the same before and after.
    loop {
        let files = generations(path);
        let before = inodes(&files);
        let (marked, offset) = match mark.ino {
            Some(ino) => match before.iter().position(|i| *i == Some(ino)) {
                Some(k) => (Some(k), mark.offset),
                None => (None, 0),
            },
            None => (None, 0),
        };
        // Oldest first: the marked file from the mark on, then every newer one whole.
        let first = marked.unwrap_or(files.len() - 1);
        let mut bytes = Vec::new();
        for (k, file) in files.iter().enumerate().take(first + 1).rev() {
            let from = if Some(k) == marked { offset } else { 0 };
            bytes.extend(read_from(file, from));
        }
        if generations(path) == files && inodes(&files) == before {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
}
