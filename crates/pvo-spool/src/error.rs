//! The errors the spool reports, and the mapping from `io::Error` to them.
//!
//! The caller turns these into SMTP replies: `NoSpace` becomes 452 (the client should try
//! again later, or with a smaller message), everything else from `append` becomes 451. The
//! only distinction that matters to a client is therefore "disk full" versus "anything else",
//! which is why `is_no_space` exists and why `ENOSPC` and `EDQUOT` get their own variant
//! instead of being buried in `Io`.

use std::io;
use std::path::{Path, PathBuf};

/// An error from the spool.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A filesystem operation failed.
    #[error("cannot {op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The filesystem is full or the quota is exhausted (`ENOSPC`, `EDQUOT`): operation `op`
    /// on `path` failed for it, or was not tried because the disk is full.
    #[error("cannot {op} {path}: no space left on the spool filesystem")]
    NoSpace { op: &'static str, path: PathBuf },
    /// Data read back from a segment does not match its checksum.
    #[error("corrupt spool data in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The writer thread has stopped; nothing more can be written.
    #[error("the spool writer has stopped")]
    Closed,
    /// No live message has this id (it was never appended, not yet durable, or finished).
    #[error("no live message {0} in the spool")]
    UnknownMessage(u64),
    /// `append` was called with the id of a message that is still live.
    #[error("message {0} is already in the spool")]
    DuplicateMessage(u64),
    /// The record would not fit the format's 32-bit length field.
    #[error("message {mid} is too large for the spool ({len} bytes)")]
    TooLarge { mid: u64, len: u64 },
    /// Another process (or another `Spool` in this one) has the directory open.
    #[error("spool directory {path} is locked by another process")]
    Locked { path: PathBuf },
    /// `sync` was called from a completion callback, which runs on the writer thread and
    /// would wait for itself.
    #[error("sync called from a spool callback, which would deadlock")]
    Reentrant,
}

impl SpoolError {
    /// True for `ENOSPC`/`EDQUOT`: the SMTP server then answers 452 instead of 451.
    pub fn is_no_space(&self) -> bool {
        match self {
            SpoolError::NoSpace { .. } => true,
            SpoolError::Io { source, .. } => is_no_space_io(source),
            _ => false,
        }
    }

    /// A copy of this error, for reporting one failed batch to every append in it.
    /// `io::Error` is not `Clone`, so the copy keeps the OS error code or the kind and text.
    pub(crate) fn duplicate(&self) -> SpoolError {
        match self {
            SpoolError::Io { op, path, source } => SpoolError::Io {
                op,
                path: path.clone(),
                source: match source.raw_os_error() {
                    Some(code) => io::Error::from_raw_os_error(code),
                    None => io::Error::new(source.kind(), source.to_string()),
                },
            },
            SpoolError::NoSpace { op, path } => SpoolError::NoSpace {
                op,
                path: path.clone(),
            },
            SpoolError::Corrupt {
                path,
                offset,
                reason,
            } => SpoolError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            SpoolError::Closed => SpoolError::Closed,
            SpoolError::UnknownMessage(mid) => SpoolError::UnknownMessage(*mid),
            SpoolError::DuplicateMessage(mid) => SpoolError::DuplicateMessage(*mid),
            SpoolError::TooLarge { mid, len } => SpoolError::TooLarge {
                mid: *mid,
                len: *len,
            },
            SpoolError::Locked { path } => SpoolError::Locked { path: path.clone() },
            SpoolError::Reentrant => SpoolError::Reentrant,
        }
    }
}

fn is_no_space_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Wraps an `io::Error` from operation `op` on `path`, mapping a full disk to `NoSpace`.
pub(crate) fn io_error(op: &'static str, path: &Path, source: io::Error) -> SpoolError {
    if is_no_space_io(&source) {
        SpoolError::NoSpace {
            op,
            path: path.to_path_buf(),
        }
    } else {
        SpoolError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_and_edquot_are_no_space() {
        let p = Path::new("/spool/seg");
        assert!(io_error("write", p, io::Error::from_raw_os_error(28)).is_no_space());
        assert!(io_error("write", p, io::Error::from(io::ErrorKind::QuotaExceeded)).is_no_space());
        let eio = io_error("fsync", p, io::Error::from_raw_os_error(5));
        assert!(!eio.is_no_space());
        assert!(matches!(
            eio.duplicate(),
            SpoolError::Io { op: "fsync", .. }
        ));
        assert_eq!(eio.to_string(), "cannot fsync /spool/seg");
    }
}
