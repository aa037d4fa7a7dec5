//! The errors the quarantine store reports.
//!
//! Two families: errors in the request (an unknown message or quarantine, a built-in that
//! cannot be deleted, invalid settings), which the caller shows to the administrator as they
//! are, and errors of the storage itself (`Db`, `Corrupt`, `SchemaTooNew`), which the caller
//! logs and treats as temporary: a CPQ transfer that meets one gets a 4xx, never a 250.

use crate::model::MsgId;
use crate::search::FilterError;

/// An error from the quarantine store.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineError {
    /// The database reported an error (including a failed fsync or a full disk).
    #[error("quarantine database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// The PostgreSQL backend reported an error (connection lost, disk full, ...).
    #[error("quarantine database error: {0}")]
    Pg(#[from] postgres::Error),
    /// A value stored in the database does not decode (hand-edited or damaged database).
    #[error("corrupt quarantine database: {0}")]
    Corrupt(String),
    /// The database was written by a newer PVO whose schema this build does not know.
    #[error("quarantine database schema version {found} is newer than the supported {supported}")]
    SchemaTooNew { found: u32, supported: u32 },
    /// No message has this id (never stored, or purged).
    #[error("no quarantined message {0}")]
    UnknownMessage(MsgId),
    /// No quarantine has this name.
    #[error("no quarantine named \"{0}\"")]
    UnknownQuarantine(String),
    /// The message was never in this quarantine (or was moved out of it).
    #[error("message {msg_id} is not in quarantine \"{quarantine}\"")]
    NotInQuarantine { msg_id: MsgId, quarantine: String },
    /// A move would put the message into a quarantine it already has a membership in.
    #[error("message {msg_id} is already in quarantine \"{quarantine}\"")]
    AlreadyInQuarantine { msg_id: MsgId, quarantine: String },
    /// A quarantine with this name exists already (names compare case-insensitively).
    #[error("a quarantine named \"{0}\" already exists")]
    QuarantineExists(String),
    /// Built-in quarantines (Policy, Virus, Outbreak, Unclassified) cannot be deleted.
    #[error("\"{0}\" is a built-in quarantine and cannot be deleted")]
    BuiltinQuarantine(String),
    /// The request is not valid (bad settings, empty key, move without a source, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A search filter cannot be applied (it would match everything, or cannot reach the
    /// database at all); the search is refused rather than widened.
    #[error(transparent)]
    Filter(#[from] FilterError),
    /// The message bytes are gone: the message was deleted or its delivery was confirmed.
    #[error("the bytes of message {0} are no longer stored")]
    BodyGone(MsgId),
}

impl QuarantineError {
    /// True for errors of the storage rather than of the request: the caller should retry
    /// later (answer 4xx to a transfer) and log the cause.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            QuarantineError::Db(_) | QuarantineError::Pg(_) | QuarantineError::Corrupt(_)
        )
    }

    /// True when the disk (or the filesystem quota) is full: a CPQ transfer answers 452
    /// rather than 451, as the spool does.
    pub fn is_no_space(&self) -> bool {
        match self {
            QuarantineError::Db(rusqlite::Error::SqliteFailure(e, _)) => {
                e.code == rusqlite::ErrorCode::DiskFull
            }
            QuarantineError::Pg(e) => e.code() == Some(&postgres::error::SqlState::DISK_FULL),
            _ => false,
        }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = QuarantineError> = std::result::Result<T, E>;
