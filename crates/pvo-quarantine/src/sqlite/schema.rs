//! The SQLite schema and its versioned migrations.
//!
//! `schema_version` has one row per applied migration. At open, every migration above the
//! highest applied version runs in order, each in its own transaction together with its
//! `schema_version` row, so a crash leaves the database at a version boundary. A database
//! whose version is above [`LATEST`] was written by a newer PVO and is refused rather than
//! guessed at. Migrations are append-only: a released migration is never edited, a change is
//! a new migration.
//!
//! Conventions: times are unix seconds, sizes bytes, both INTEGER. `state` columns hold
//! `MessageState::code` / `MembershipState::code` (0 is held everywhere), so the search and
//! sweep indexes are partial indexes `WHERE state = 0`: they contain held rows only, and
//! finished messages (kept for their history until purged) cost them nothing.
//! Codes added after a migration's comment was written need no migration of their own (no
//! column has a CHECK): message state 4 and membership state 3 are `Migrated` (the message
//! went to a manager when its gateway became central).
//!
//! Invariants the search relies on: a membership is held only while its message is held,
//! and `message_fts` has a row exactly for each held message (inserted with the message,
//! deleted when it stops being held). Counting through either therefore needs no check of
//! `messages.state`.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::{QuarantineError, Result};
use crate::model::Builtin;

use super::{i, json};

/// Migration 1: the store (quarantines, messages and their bytes, memberships, history).
const V1_STORE: &str = r#"
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
-- Running totals of held messages (each counted once) and their bytes; 'quota_bytes' when set.
INSERT INTO store_meta (key, value) VALUES ('held_messages', 0), ('held_bytes', 0);

CREATE TABLE quarantines (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    name           TEXT NOT NULL UNIQUE COLLATE NOCASE,
    builtin        INTEGER NOT NULL,
    retention_secs INTEGER NOT NULL,
    default_action TEXT NOT NULL,          -- 'Delete' | 'Release'
    exempt         INTEGER NOT NULL,       -- exempt from free-up-space
    early_release  TEXT NOT NULL,          -- JSON EarlyReleaseActions
    access         TEXT NOT NULL,          -- JSON AccessList
    held_count     INTEGER NOT NULL DEFAULT 0,
    held_bytes     INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL
);

CREATE TABLE messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused
    idem_key      TEXT NOT NULL UNIQUE,               -- transfer id
    gateway       TEXT NOT NULL,
    gateway_mid   INTEGER NOT NULL,
    sender        TEXT NOT NULL,
    sender_lc     TEXT NOT NULL,
    sender_domain TEXT NOT NULL,
    received      INTEGER NOT NULL,
    size          INTEGER NOT NULL,
    subject       TEXT NOT NULL,
    meta          TEXT NOT NULL,                      -- JSON, the caller's
    state         INTEGER NOT NULL,                   -- 0 held 1 released 2 delivered 3 deleted
    next_exit     INTEGER,                            -- earliest exit of the held memberships
    created_at    INTEGER NOT NULL,
    finished_at   INTEGER,                            -- left state 0
    delivery_ref  TEXT                                -- downstream queue id
);
CREATE INDEX messages_finished ON messages (finished_at) WHERE state IN (2, 3);
CREATE INDEX messages_pending ON messages (id) WHERE state = 1;

-- The message bytes, apart so that scans of `messages` never read them. Deleted when the
-- message is deleted or its delivery confirmed.
CREATE TABLE message_body (
    msg_id INTEGER PRIMARY KEY REFERENCES messages (id) ON DELETE CASCADE,
    raw    BLOB NOT NULL
);

CREATE TABLE recipients (
    msg_id  INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    pos     INTEGER NOT NULL,
    addr    TEXT NOT NULL,
    addr_lc TEXT NOT NULL,
    domain  TEXT NOT NULL,
    PRIMARY KEY (msg_id, pos)
) WITHOUT ROWID;

CREATE TABLE attachments (
    msg_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    pos    INTEGER NOT NULL,
    name   TEXT NOT NULL,
    size   INTEGER NOT NULL,
    PRIMARY KEY (msg_id, pos)
) WITHOUT ROWID;

CREATE TABLE memberships (
    id            INTEGER PRIMARY KEY,
    msg_id        INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    quarantine_id INTEGER NOT NULL REFERENCES quarantines (id),
    reason_kind   TEXT NOT NULL,
    reason_name   TEXT NOT NULL COLLATE NOCASE,
    details       TEXT NOT NULL,       -- JSON, why held
    entered_at    INTEGER NOT NULL,
    exit_at       INTEGER NOT NULL,
    state         INTEGER NOT NULL,    -- 0 held 1 released 2 deleted
    early         INTEGER NOT NULL DEFAULT 0,
    left_at       INTEGER,
    left_by       TEXT,
    cause         TEXT,
    received      INTEGER NOT NULL,    -- copies of messages.received and .size so that a
    size          INTEGER NOT NULL,    -- search in one quarantine is ordered by an index
    UNIQUE (msg_id, quarantine_id)
);
CREATE INDEX memberships_due ON memberships (exit_at) WHERE state = 0;
CREATE INDEX memberships_oldest ON memberships (entered_at, msg_id) WHERE state = 0;
CREATE INDEX memberships_reason ON memberships (reason_name, reason_kind, msg_id) WHERE state = 0;

CREATE TABLE history (
    id         INTEGER PRIMARY KEY,
    msg_id     INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
    at         INTEGER NOT NULL,
    who        TEXT NOT NULL,
    action     TEXT NOT NULL,
    quarantine TEXT,
    detail     TEXT NOT NULL
);
CREATE INDEX history_msg ON history (msg_id);
"#;

/// Migration 2: the search indexes and the full-text index (filled from existing messages).
const V2_SEARCH: &str = r#"
CREATE INDEX messages_received ON messages (received) WHERE state = 0;
CREATE INDEX messages_size ON messages (size) WHERE state = 0;
CREATE INDEX messages_exit ON messages (next_exit) WHERE state = 0;
CREATE INDEX messages_sender ON messages (sender_lc, received) WHERE state = 0;
CREATE INDEX messages_sender_domain ON messages (sender_domain, received) WHERE state = 0;
CREATE INDEX messages_gateway ON messages (gateway, received) WHERE state = 0;
CREATE INDEX memberships_q_received ON memberships (quarantine_id, received, msg_id) WHERE state = 0;
CREATE INDEX memberships_q_size ON memberships (quarantine_id, size, msg_id) WHERE state = 0;
CREATE INDEX memberships_q_exit ON memberships (quarantine_id, exit_at, msg_id) WHERE state = 0;
CREATE INDEX recipients_addr ON recipients (addr_lc);
CREATE INDEX recipients_domain ON recipients (domain);
CREATE INDEX attachments_size ON attachments (size);

-- Words of the subject and of the attachment names of held messages; rowid = messages.id.
-- Contentless: the text lives in `messages`/`attachments`; rows are deleted when a message
-- stops being held.
CREATE VIRTUAL TABLE message_fts USING fts5 (
    subject, attachments,
    content = '', contentless_delete = 1,
    tokenize = 'unicode61 remove_diacritics 2'
);
INSERT INTO message_fts (rowid, subject, attachments)
    SELECT m.id, m.subject,
           coalesce((SELECT group_concat(a.name, ' ') FROM attachments a WHERE a.msg_id = m.id), '')
    FROM messages m WHERE m.state = 0;
"#;

/// Version 3: the MID this node gave the message (`meta.mid`: the manager's
/// MID of a CPQ transfer, the gateway's own MID locally), indexed so commands
/// name messages by it without a scan.
const V3_NODE_MID: &str = r#"
CREATE INDEX messages_node_mid ON messages (json_extract(meta, '$.mid'));
"#;

/// The migrations, in order; the index + 1 is the version.
const MIGRATIONS: &[&str] = &[V1_STORE, V2_SEARCH, V3_NODE_MID];

/// The schema version this build writes.
pub const LATEST: u32 = MIGRATIONS.len() as u32;

/// The highest applied version (0 for a new database).
pub(crate) fn current_version(conn: &Connection) -> Result<u32> {
    let exists: Option<i64> = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    if exists.is_none() {
        return Ok(0);
    }
    let v: Option<i64> =
        conn.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    Ok(u32::try_from(v.unwrap_or(0)).unwrap_or(0))
}

/// Applies the migrations above the current version, up to `target`.
pub(crate) fn migrate(conn: &mut Connection, target: u32, now: u64) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )?;
    let found = current_version(conn)?;
    if found > LATEST {
        return Err(QuarantineError::SchemaTooNew {
            found,
            supported: LATEST,
        });
    }
    for version in found + 1..=target.min(LATEST) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        if current_version(&tx)? >= version {
            continue;
        }
        tx.execute_batch(MIGRATIONS[version as usize - 1])?;
        if version == 1 {
            seed_builtins(&tx, now)?;
        }
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            params![version, i(now)],
        )?;
        tx.commit()?;
    }
    Ok(())
}

/// The four built-ins with fixed ids 1 to 4; custom quarantines are numbered from 101 so
/// that the `#` column tells them apart at a glance.
fn seed_builtins(conn: &Connection, now: u64) -> Result<()> {
    for b in Builtin::ALL {
        let s = b.default_settings();
        conn.execute(
            "INSERT INTO quarantines (id, name, builtin, retention_secs, default_action, exempt,
                                      early_release, access, created_at)
             VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                i(b.id()),
                b.name(),
                i(s.retention_secs),
                s.default_action.as_str(),
                s.exempt_from_free_up,
                json(&s.early_release)?,
                json(&s.access)?,
                i(now)
            ],
        )?;
    }
    conn.execute(
        "UPDATE sqlite_sequence SET seq = 100 WHERE name = 'quarantines'",
        [],
    )?;
    Ok(())
}
