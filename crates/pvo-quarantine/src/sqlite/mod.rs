//! The embedded backend: one SQLite database file in WAL mode.
//!
//! # Durability
//!
//! `synchronous = FULL`: every commit fsyncs the WAL before it returns, so a message is on
//! stable storage when `quarantine()` returns and a CPQ `250` may be sent. `NORMAL` in WAL
//! mode syncs only at checkpoints: it survives a crash of the process but can lose the last
//! commits on power loss or a kernel crash, which would break "250 only after fsync". The
//! cost is one fsync per commit; a caller that needs thousands of messages per second
//! batches them with `quarantine_many` (one transaction, one fsync), like the spool's group
//! commit. Bulk actions and the sweeper also batch ([`BATCH`] messages per transaction).
//!
//! # Message bytes
//!
//! Stored in the database (`message_body.raw`), not in files: the message, its index rows
//! and its bytes commit in one transaction with one fsync, there is no orphan file after a
//! crash and no second directory to back up. The bytes sit in their own table so scans of
//! `messages` never read them, and they are deleted as soon as the message is deleted or its
//! delivery confirmed. The database is created with `auto_vacuum = INCREMENTAL` and
//! [`SqliteStore::purge_finished`] returns freed pages to the filesystem a little at a time.
//! SQLite limits one value to 1 GB by default; messages that large never reach a quarantine.
//!
//! # Concurrency
//!
//! One writer connection behind a mutex (SQLite allows one writer at a time anyway; every
//! write is a short `BEGIN IMMEDIATE` transaction) and a small pool of reader connections:
//! in WAL mode readers never block the writer nor each other, so searches run while the
//! sweeper writes. All calls block: async callers use `spawn_blocking`.

mod schema;
mod search;

pub use schema::LATEST as SCHEMA_VERSION;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{QuarantineError, Result};
use crate::model::{
    AccessList, ActionReport, Attachment, Builtin, Cause, CopyToSend, DefaultAction,
    EarlyReleaseActions, HeldIn, HistoryEntry, Inserted, Membership, MembershipState, MessageInfo,
    MessageState, MsgId, NewMessage, PendingDelivery, Quarantine, QuarantineDeleted, QuarantineId,
    QuarantineSettings, QuarantineUsage, Reason, ReasonKind, Usage,
};
use crate::search::{SearchPage, SearchQuery};
use crate::semantics::{self, Edit, MemberRow, Op, Plan, Record, Sel};

/// Messages per write transaction in bulk actions and the sweeper: large enough that the
/// fsync is shared, small enough that the writer lock is never held for long.
pub const BATCH: usize = 500;

/// Reader connections kept open.
const MAX_READERS: usize = 4;

/// The embedded store. Cheap to share: wrap it (or the `Store`) in an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// u64 values (times, sizes, ids) as SQLite integers.
pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// SQLite integers back to u64 (never negative in this schema).
pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn json<T: Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| QuarantineError::Corrupt(e.to_string()))
}

pub(crate) fn from_json<T: DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| QuarantineError::Corrupt(format!("{what}: {e}")))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the connection rolled its transaction back (Transaction's
    // Drop); the connection itself is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32768;",
    )?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// A pooled reader; goes back to the pool when dropped.
struct Reader<'a> {
    conn: Option<Connection>,
    pool: &'a Mutex<Vec<Connection>>,
}

impl Deref for Reader<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("reader present until drop")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut pool = lock(self.pool);
            if pool.len() < MAX_READERS {
                pool.push(c);
            }
        }
    }
}

pub(crate) fn default_action_parse(s: &str) -> Result<DefaultAction> {
    match s {
        "Delete" => Ok(DefaultAction::Delete),
        "Release" => Ok(DefaultAction::Release),
        other => Err(QuarantineError::Corrupt(format!(
            "default action {other:?}"
        ))),
    }
}

pub(crate) fn reason_parse(kind: &str, name: String) -> Result<Reason> {
    let kind = ReasonKind::parse(kind)
        .ok_or_else(|| QuarantineError::Corrupt(format!("reason kind {kind:?}")))?;
    Ok(Reason { kind, name })
}

pub(crate) fn message_state(code: i64) -> Result<MessageState> {
    MessageState::from_code(code)
        .ok_or_else(|| QuarantineError::Corrupt(format!("message state {code}")))
}

pub(crate) fn membership_state(code: i64) -> Result<MembershipState> {
    MembershipState::from_code(code)
        .ok_or_else(|| QuarantineError::Corrupt(format!("membership state {code}")))
}

/// Lowercased domain of an address (after the last `@`), empty without one.
pub(crate) fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.to_lowercase())
        .unwrap_or_default()
}

/// A quarantine name: what the log lines and the CLI can show without quoting problems.
pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.trim().is_empty()
        && name == name.trim()
        && name.chars().count() <= 64
        && name.chars().all(|c| !c.is_control() && c != '"');
    if ok {
        Ok(())
    } else {
        Err(QuarantineError::Invalid(format!(
            "quarantine name {name:?}: 1 to 64 characters, no quotes or control characters, \
             no leading or trailing blanks"
        )))
    }
}

pub(crate) fn validate_settings(s: &QuarantineSettings) -> Result<()> {
    if s.retention_secs < 60 {
        return Err(QuarantineError::Invalid(
            "retention must be at least one minute".into(),
        ));
    }
    let e = &s.early_release;
    for t in [&e.subject_prepend, &e.subject_append]
        .into_iter()
        .flatten()
    {
        if t.contains(['\r', '\n']) {
            return Err(QuarantineError::Invalid(
                "subject text must be one line".into(),
            ));
        }
    }
    if let Some(x) = &e.x_header {
        let name_ok = !x.name.is_empty()
            && x.name.len() <= 76
            && x.name.chars().all(|c| c.is_ascii_graphic() && c != ':');
        if !name_ok {
            return Err(QuarantineError::Invalid(format!(
                "header name {:?}: printable ASCII without ':' or blanks",
                x.name
            )));
        }
        if x.value.contains(['\r', '\n']) {
            return Err(QuarantineError::Invalid(
                "header value must be one line".into(),
            ));
        }
    }
    Ok(())
}

/// Checks what the database cannot: a key, at least one quarantine.
pub(crate) fn validate_new(m: &NewMessage) -> Result<()> {
    if m.idempotency_key.is_empty() {
        return Err(QuarantineError::Invalid("empty idempotency key".into()));
    }
    if m.holds.is_empty() {
        return Err(QuarantineError::Invalid(
            "a message must go to at least one quarantine".into(),
        ));
    }
    Ok(())
}

/// `(id, name, retention)` of every quarantine, for resolving names in inserts.
fn quarantine_names(tx: &Connection) -> Result<Vec<(QuarantineId, String, u64)>> {
    let mut st = tx.prepare_cached("SELECT id, name, retention_secs FROM quarantines")?;
    let rows = st.query_map([], |r| {
        Ok((u(r.get(0)?), r.get::<_, String>(1)?, u(r.get(2)?)))
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn add_counters(tx: &Connection, qid: QuarantineId, count: i64, bytes: i64) -> Result<()> {
    tx.prepare_cached(
        "UPDATE quarantines SET held_count = held_count + ?2, held_bytes = held_bytes + ?3
         WHERE id = ?1",
    )?
    .execute(params![i(qid), count, bytes])?;
    Ok(())
}

fn add_totals(tx: &Connection, count: i64, bytes: i64) -> Result<()> {
    let mut st = tx.prepare_cached("UPDATE store_meta SET value = value + ?2 WHERE key = ?1")?;
    st.execute(params!["held_messages", count])?;
    st.execute(params!["held_bytes", bytes])?;
    Ok(())
}

fn meta_value(conn: &Connection, key: &str) -> Result<Option<u64>> {
    Ok(conn
        .prepare_cached("SELECT value FROM store_meta WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, i64>(0))
        .optional()?
        .map(u))
}

fn add_history(
    tx: &Connection,
    msg_id: MsgId,
    at: u64,
    who: &str,
    action: &str,
    quarantine: Option<&str>,
    detail: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO history (msg_id, at, who, action, quarantine, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![i(msg_id), i(at), who, action, quarantine, detail])?;
    Ok(())
}

fn held_in(tx: &Connection, msg_id: MsgId) -> Result<Vec<HeldIn>> {
    let mut st = tx.prepare_cached(
        "SELECT q.name, b.reason_kind, b.reason_name, b.exit_at
         FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
         WHERE b.msg_id = ?1 ORDER BY b.id",
    )?;
    let rows = st.query_map([i(msg_id)], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            u(r.get(3)?),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (quarantine, kind, name, exit_at) = row?;
        out.push(HeldIn {
            quarantine,
            reason: reason_parse(&kind, name)?,
            exit_at,
        });
    }
    Ok(out)
}

fn load_record(tx: &Connection, msg_id: MsgId) -> Result<Option<Record>> {
    let head = tx
        .prepare_cached("SELECT gateway_mid, state, size FROM messages WHERE id = ?1")?
        .query_row([i(msg_id)], |r| {
            Ok((u(r.get(0)?), r.get::<_, i64>(1)?, u(r.get(2)?)))
        })
        .optional()?;
    let Some((gateway_mid, state, size)) = head else {
        return Ok(None);
    };
    let mut st = tx.prepare_cached(
        "SELECT b.quarantine_id, q.name, q.default_action, q.exempt, q.early_release,
                b.reason_kind, b.reason_name, b.state, b.exit_at, b.early
         FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
         WHERE b.msg_id = ?1 ORDER BY b.id",
    )?;
    let rows = st.query_map([i(msg_id)], |r| {
        Ok((
            u(r.get(0)?),
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, String>(5)?,
            r.get::<_, String>(6)?,
            r.get::<_, i64>(7)?,
            u(r.get(8)?),
            r.get::<_, bool>(9)?,
        ))
    })?;
    let mut members = Vec::new();
    for row in rows {
        let (qid, qname, action, exempt, early_json, kind, name, mstate, exit_at, early) = row?;
        members.push(MemberRow {
            quarantine_id: qid,
            quarantine: qname,
            default_action: default_action_parse(&action)?,
            exempt,
            early_release: from_json::<EarlyReleaseActions>(&early_json, "early release")?,
            reason: reason_parse(&kind, name)?,
            state: membership_state(mstate)?,
            exit_at,
            early,
        });
    }
    Ok(Some(Record {
        msg_id,
        gateway_mid,
        state: message_state(state)?,
        size,
        members,
    }))
}

fn apply_plan(tx: &Connection, rec: &Record, plan: &Plan, now: u64) -> Result<()> {
    let size = i(rec.size);
    for edit in &plan.edits {
        match edit {
            Edit::Leave {
                quarantine_id,
                state,
                cause,
                who,
                early,
            } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE memberships
                         SET state = ?3, early = ?4, left_at = ?5, left_by = ?6, cause = ?7
                         WHERE msg_id = ?1 AND quarantine_id = ?2 AND state = 0",
                    )?
                    .execute(params![
                        i(rec.msg_id),
                        i(*quarantine_id),
                        state.code(),
                        early,
                        i(now),
                        who,
                        cause.as_str()
                    ])?;
                if n == 1 {
                    add_counters(tx, *quarantine_id, -1, -size)?;
                }
            }
            Edit::SetExit {
                quarantine_id,
                exit_at,
            } => {
                tx.prepare_cached(
                    "UPDATE memberships SET exit_at = ?3 WHERE msg_id = ?1 AND quarantine_id = ?2",
                )?
                .execute(params![
                    i(rec.msg_id),
                    i(*quarantine_id),
                    i(*exit_at)
                ])?;
            }
            Edit::Move { from, to } => {
                let n = tx
                    .prepare_cached(
                        "UPDATE memberships SET quarantine_id = ?3
                         WHERE msg_id = ?1 AND quarantine_id = ?2 AND state = 0",
                    )?
                    .execute(params![i(rec.msg_id), i(*from), i(*to)])?;
                if n == 1 {
                    add_counters(tx, *from, -1, -size)?;
                    add_counters(tx, *to, 1, size)?;
                }
            }
        }
    }
    if let Some(state) = plan.message_state {
        tx.prepare_cached("UPDATE messages SET state = ?2, finished_at = ?3 WHERE id = ?1")?
            .execute(params![i(rec.msg_id), state.code(), i(now)])?;
        if rec.state == MessageState::Held && state != MessageState::Held {
            add_totals(tx, -1, -size)?;
            tx.prepare_cached("DELETE FROM message_fts WHERE rowid = ?1")?
                .execute([i(rec.msg_id)])?;
        }
        if state == MessageState::Deleted {
            tx.prepare_cached("DELETE FROM message_body WHERE msg_id = ?1")?
                .execute([i(rec.msg_id)])?;
        }
    }
    if !plan.edits.is_empty() {
        tx.prepare_cached(
            "UPDATE messages SET next_exit =
                 (SELECT min(exit_at) FROM memberships WHERE msg_id = ?1 AND state = 0)
             WHERE id = ?1",
        )?
        .execute([i(rec.msg_id)])?;
    }
    for h in &plan.history {
        add_history(
            tx,
            rec.msg_id,
            now,
            &h.who,
            h.action,
            h.quarantine.as_deref(),
            &h.detail,
        )?;
    }
    Ok(())
}

const Q_COLS: &str = "id, name, builtin, retention_secs, default_action, exempt, early_release, \
                      access, held_count, held_bytes";

type QRow = (
    i64,
    String,
    bool,
    i64,
    String,
    bool,
    String,
    String,
    i64,
    i64,
);

fn q_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<QRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
        r.get(9)?,
    ))
}

fn q_from_row(row: QRow) -> Result<(Quarantine, u64, u64)> {
    let (id, name, builtin, retention, action, exempt, early, access, count, bytes) = row;
    Ok((
        Quarantine {
            id: u(id),
            name,
            builtin,
            settings: QuarantineSettings {
                retention_secs: u(retention),
                default_action: default_action_parse(&action)?,
                exempt_from_free_up: exempt,
                early_release: from_json(&early, "early release")?,
                access: from_json::<AccessList>(&access, "access list")?,
            },
        },
        u(count),
        u(bytes),
    ))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applying any pending migrations.
    pub fn open(path: &Path, now: u64) -> Result<SqliteStore> {
        Self::open_at_version(path, schema::LATEST, now)
    }

    /// Opens and migrates only up to `version` (tests of the migrations).
    pub(crate) fn open_at_version(path: &Path, version: u32, now: u64) -> Result<SqliteStore> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        if pages == 0 {
            // Only possible before the first table exists.
            conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL")?;
        }
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(QuarantineError::Corrupt(format!(
                "cannot switch {} to WAL mode (got {mode})",
                path.display()
            )));
        }
        configure(&conn)?;
        // The writer touches index pages all over the file; a larger cache and fewer, larger
        // checkpoints (a page changed by many commits is copied to the database once) keep
        // inserts fast at a million messages. The WAL is reset after each checkpoint.
        conn.execute_batch(
            "PRAGMA cache_size = -131072;
             PRAGMA wal_autocheckpoint = 16384;",
        )?;
        schema::migrate(&mut conn, version, now)?;
        // Lets the query planner keep its statistics current (cheap when nothing changed).
        conn.execute_batch("PRAGMA optimize = 0x10002")?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        schema::current_version(&*self.reader()?)
    }

    /// A read-only connection (pooled), for reads that span many statements (`copy`).
    pub(crate) fn read_conn(&self) -> Result<impl Deref<Target = Connection> + '_> {
        self.reader()
    }

    fn reader(&self) -> Result<Reader<'_>> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open(&self.path)?;
                configure(&c)?;
                c.execute_batch("PRAGMA query_only = ON")?;
                c
            }
        };
        Ok(Reader {
            conn: Some(conn),
            pool: &self.readers,
        })
    }

    fn write<R>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<R>) -> Result<R> {
        let mut conn = lock(&self.writer);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let r = f(&tx)?;
        tx.commit()?;
        Ok(r)
    }

    // ---- quarantines ----

    pub fn quarantines(&self) -> Result<Vec<Quarantine>> {
        let conn = self.reader()?;
        let mut st =
            conn.prepare_cached(&format!("SELECT {Q_COLS} FROM quarantines ORDER BY id"))?;
        let rows = st
            .query_map([], q_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        rows.into_iter().map(|r| Ok(q_from_row(r)?.0)).collect()
    }

    pub fn quarantine_by_name(&self, name: &str) -> Result<Quarantine> {
        let conn = self.reader()?;
        Self::find_quarantine(&conn, name)
    }

    fn find_quarantine(conn: &Connection, name: &str) -> Result<Quarantine> {
        let row = conn
            .prepare_cached(&format!("SELECT {Q_COLS} FROM quarantines WHERE name = ?1"))?
            .query_row([name], q_row)
            .optional()?;
        match row {
            Some(r) => Ok(q_from_row(r)?.0),
            None => Err(QuarantineError::UnknownQuarantine(name.to_string())),
        }
    }

    pub fn create_quarantine(
        &self,
        name: &str,
        settings: &QuarantineSettings,
        now: u64,
    ) -> Result<Quarantine> {
        validate_name(name)?;
        validate_settings(settings)?;
        self.write(|tx| {
            let exists: Option<String> = tx
                .query_row(
                    "SELECT name FROM quarantines WHERE name = ?1",
                    [name],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(existing) = exists {
                return Err(QuarantineError::QuarantineExists(existing));
            }
            tx.execute(
                "INSERT INTO quarantines (name, builtin, retention_secs, default_action, exempt,
                                          early_release, access, created_at)
                 VALUES (?1, 0, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    name,
                    i(settings.retention_secs),
                    settings.default_action.as_str(),
                    settings.exempt_from_free_up,
                    json(&settings.early_release)?,
                    json(&settings.access)?,
                    i(now)
                ],
            )?;
            Self::find_quarantine(tx, name)
        })
    }

    /// Changes the settings (never the name). Held messages keep their scheduled exits: a
    /// new retention applies to messages that arrive afterwards, as on the appliance.
    pub fn update_quarantine(
        &self,
        name: &str,
        settings: &QuarantineSettings,
    ) -> Result<Quarantine> {
        validate_settings(settings)?;
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE quarantines SET retention_secs = ?2, default_action = ?3, exempt = ?4,
                                        early_release = ?5, access = ?6
                 WHERE name = ?1",
                params![
                    name,
                    i(settings.retention_secs),
                    settings.default_action.as_str(),
                    settings.exempt_from_free_up,
                    json(&settings.early_release)?,
                    json(&settings.access)?
                ],
            )?;
            if n == 0 {
                return Err(QuarantineError::UnknownQuarantine(name.to_string()));
            }
            Self::find_quarantine(tx, name)
        })
    }

    /// Deletes a custom quarantine. Its held messages move to Unclassified with their exit
    /// time, reason and details (a message already held in Unclassified simply stays there);
    /// its finished memberships are dropped (their history stays).
    pub fn delete_quarantine(&self, name: &str, who: &str, now: u64) -> Result<QuarantineDeleted> {
        self.write(|tx| {
            let q = Self::find_quarantine(tx, name)?;
            if q.builtin {
                return Err(QuarantineError::BuiltinQuarantine(q.name));
            }
            let unclassified = Builtin::Unclassified.id();
            let held: Vec<(MsgId, i64)> = {
                let mut st = tx.prepare(
                    "SELECT msg_id, size FROM memberships
                     WHERE quarantine_id = ?1 AND state = 0 ORDER BY msg_id",
                )?;
                let rows = st.query_map([i(q.id)], |r| Ok((u(r.get(0)?), r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (msg_id, size) in &held {
                let existing: Option<i64> = tx
                    .prepare_cached(
                        "SELECT state FROM memberships WHERE msg_id = ?1 AND quarantine_id = ?2",
                    )?
                    .query_row(params![i(*msg_id), i(unclassified)], |r| r.get(0))
                    .optional()?;
                match existing {
                    Some(0) => {
                        tx.execute(
                            "DELETE FROM memberships WHERE msg_id = ?1 AND quarantine_id = ?2",
                            params![i(*msg_id), i(q.id)],
                        )?;
                    }
                    other => {
                        if other.is_some() {
                            // A finished Unclassified membership: the held one replaces it.
                            tx.execute(
                                "DELETE FROM memberships WHERE msg_id = ?1 AND quarantine_id = ?2",
                                params![i(*msg_id), i(unclassified)],
                            )?;
                        }
                        tx.execute(
                            "UPDATE memberships SET quarantine_id = ?3
                             WHERE msg_id = ?1 AND quarantine_id = ?2",
                            params![i(*msg_id), i(q.id), i(unclassified)],
                        )?;
                        add_counters(tx, unclassified, 1, *size)?;
                    }
                }
                add_history(
                    tx,
                    *msg_id,
                    now,
                    who,
                    "quarantine deleted",
                    Some(&q.name),
                    "moved to \"Unclassified\"",
                )?;
            }
            tx.execute(
                "DELETE FROM memberships WHERE quarantine_id = ?1",
                [i(q.id)],
            )?;
            tx.execute("DELETE FROM quarantines WHERE id = ?1", [i(q.id)])?;
            Ok(QuarantineDeleted {
                name: q.name,
                moved_to_unclassified: held.into_iter().map(|(m, _)| m).collect(),
            })
        })
    }

    pub fn set_quota(&self, quota_bytes: Option<u64>) -> Result<()> {
        self.write(|tx| {
            match quota_bytes {
                Some(q) => tx.execute(
                    "INSERT OR REPLACE INTO store_meta (key, value) VALUES ('quota_bytes', ?1)",
                    [i(q)],
                )?,
                None => tx.execute("DELETE FROM store_meta WHERE key = 'quota_bytes'", [])?,
            };
            Ok(())
        })
    }

    pub fn usage(&self) -> Result<Usage> {
        let conn = self.reader()?;
        let tx = conn.unchecked_transaction()?; // one consistent snapshot
        let rows = {
            let mut st =
                tx.prepare_cached(&format!("SELECT {Q_COLS} FROM quarantines ORDER BY id"))?;
            let rows = st.query_map([], q_row)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut quarantines = Vec::new();
        for r in rows {
            let (q, messages, bytes) = q_from_row(r)?;
            quarantines.push(QuarantineUsage {
                id: q.id,
                name: q.name,
                builtin: q.builtin,
                retention_secs: q.settings.retention_secs,
                default_action: q.settings.default_action,
                exempt_from_free_up: q.settings.exempt_from_free_up,
                messages,
                bytes,
            });
        }
        Ok(Usage {
            quarantines,
            total_messages: meta_value(&tx, "held_messages")?.unwrap_or(0),
            total_bytes: meta_value(&tx, "held_bytes")?.unwrap_or(0),
            quota_bytes: meta_value(&tx, "quota_bytes")?,
        })
    }

    // ---- messages ----

    /// Stores a batch in one transaction (one fsync). Each message gets its own result: an
    /// invalid message does not fail the others; a database error fails the whole batch and
    /// stores none of it.
    pub fn insert(&self, msgs: &[NewMessage], now: u64) -> Result<Vec<Result<Inserted>>> {
        self.write(|tx| {
            let names = quarantine_names(tx)?;
            let mut out = Vec::with_capacity(msgs.len());
            // Space counters are summed over the batch and written once.
            let mut deltas: Vec<(QuarantineId, i64, i64)> = Vec::new();
            let mut totals = (0i64, 0i64);
            for m in msgs {
                out.push(match validate_new(m) {
                    Ok(()) => {
                        let ins = Self::insert_one(tx, &names, m, now)?;
                        if ins.created {
                            let size = i(m.raw.len() as u64);
                            totals.0 += 1;
                            totals.1 += size;
                            for h in &ins.held_in {
                                let qid = names
                                    .iter()
                                    .find(|(_, n, _)| *n == h.quarantine)
                                    .map_or(Builtin::Unclassified.id(), |(id, _, _)| *id);
                                match deltas.iter_mut().find(|d| d.0 == qid) {
                                    Some(d) => {
                                        d.1 += 1;
                                        d.2 += size;
                                    }
                                    None => deltas.push((qid, 1, size)),
                                }
                            }
                        }
                        Ok(ins)
                    }
                    Err(e) => Err(e),
                });
            }
            for (qid, count, bytes) in deltas {
                add_counters(tx, qid, count, bytes)?;
            }
            add_totals(tx, totals.0, totals.1)?;
            let quota = meta_value(tx, "quota_bytes")?;
            let held = meta_value(tx, "held_bytes")?.unwrap_or(0);
            let over = quota.is_some_and(|q| held > q);
            for ins in out.iter_mut().flatten() {
                ins.over_quota = over;
            }
            Ok(out)
        })
    }

    fn insert_one(
        tx: &Connection,
        names: &[(QuarantineId, String, u64)],
        m: &NewMessage,
        now: u64,
    ) -> Result<Inserted> {
        let existing: Option<i64> = tx
            .prepare_cached("SELECT id FROM messages WHERE idem_key = ?1")?
            .query_row([&m.idempotency_key], |r| r.get(0))
            .optional()?;
        if let Some(id) = existing {
            return Ok(Inserted {
                msg_id: u(id),
                created: false,
                held_in: held_in(tx, u(id))?,
                over_quota: false,
            });
        }
        // Resolve quarantines; unknown names go to Unclassified; one membership per quarantine.
        let mut holds: Vec<(QuarantineId, &str, u64, &crate::model::Hold)> = Vec::new();
        for h in &m.holds {
            let (qid, qname, retention) = names
                .iter()
                .find(|(_, n, _)| n.eq_ignore_ascii_case(&h.quarantine))
                .or_else(|| {
                    names
                        .iter()
                        .find(|(id, _, _)| *id == Builtin::Unclassified.id())
                })
                .ok_or_else(|| QuarantineError::Corrupt("no Unclassified quarantine".into()))?;
            if holds.iter().any(|(id, ..)| id == qid) {
                continue;
            }
            let exit = h.exit_at.unwrap_or(now.saturating_add(*retention));
            holds.push((*qid, qname.as_str(), exit, h));
        }
        let size = m.raw.len() as u64;
        let next_exit = holds.iter().map(|(_, _, e, _)| *e).min();
        let sender_lc = m.sender.to_lowercase();
        tx.prepare_cached(
            "INSERT INTO messages (idem_key, gateway, gateway_mid, sender, sender_lc, sender_domain,
                                   received, size, subject, meta, state, next_exit, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11, ?12)",
        )?
        .execute(params![
            m.idempotency_key,
            m.gateway,
            i(m.gateway_mid),
            m.sender,
            sender_lc,
            domain_of(&m.sender),
            i(m.received),
            i(size),
            m.subject,
            json(&m.meta)?,
            next_exit.map(i),
            i(now)
        ])?;
        let msg_id = u(tx.last_insert_rowid());
        tx.prepare_cached("INSERT INTO message_body (msg_id, raw) VALUES (?1, ?2)")?
            .execute(params![i(msg_id), m.raw])?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO recipients (msg_id, pos, addr, addr_lc, domain)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut seen: Vec<String> = Vec::new();
            for r in &m.recipients {
                let lc = r.to_lowercase();
                if seen.contains(&lc) {
                    continue;
                }
                st.execute(params![i(msg_id), seen.len() as i64, r, lc, domain_of(r)])?;
                seen.push(lc);
            }
        }
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO attachments (msg_id, pos, name, size) VALUES (?1, ?2, ?3, ?4)",
            )?;
            for (pos, a) in m.attachments.iter().enumerate() {
                st.execute(params![i(msg_id), pos as i64, a.name, i(a.size)])?;
            }
        }
        let att_words: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
        tx.prepare_cached(
            "INSERT INTO message_fts (rowid, subject, attachments) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![i(msg_id), m.subject, att_words.join(" ")])?;
        let mut out = Vec::new();
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO memberships (msg_id, quarantine_id, reason_kind, reason_name, details,
                                          entered_at, exit_at, state, received, size)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?9)",
            )?;
            for (qid, qname, exit, h) in &holds {
                st.execute(params![
                    i(msg_id),
                    i(*qid),
                    h.reason.kind.as_str(),
                    h.reason.name,
                    json(&h.details)?,
                    i(now),
                    i(*exit),
                    i(m.received),
                    i(size)
                ])?;
                add_history(
                    tx,
                    msg_id,
                    now,
                    "system",
                    "quarantined",
                    Some(qname),
                    &h.reason.to_string(),
                )?;
                out.push(HeldIn {
                    quarantine: qname.to_string(),
                    reason: h.reason.clone(),
                    exit_at: *exit,
                });
            }
        }
        Ok(Inserted {
            msg_id,
            created: true,
            held_in: out,
            over_quota: false,
        })
    }

    /// Runs the rules on each item in one write transaction. A request error (unknown
    /// message, not in that quarantine) is that item's result; a database error fails the
    /// batch and nothing of it is written.
    pub(crate) fn transition(
        &self,
        items: &[(MsgId, Sel, Op)],
        now: u64,
    ) -> Result<Vec<(MsgId, Result<ActionReport>)>> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(items.len());
            for (msg_id, sel, op) in items {
                let Some(rec) = load_record(tx, *msg_id)? else {
                    out.push((*msg_id, Err(QuarantineError::UnknownMessage(*msg_id))));
                    continue;
                };
                match semantics::plan(&rec, sel, op, now) {
                    Ok(plan) => {
                        apply_plan(tx, &rec, &plan, now)?;
                        out.push((*msg_id, Ok(plan.report)));
                    }
                    Err(e) => out.push((*msg_id, Err(e))),
                }
            }
            Ok(out)
        })
    }

    pub fn message_by_node_mid(&self, mid: u64) -> Result<Option<MsgId>> {
        let conn = self.reader()?;
        let id: Option<i64> = conn
            .prepare_cached(
                "SELECT id FROM messages WHERE json_extract(meta, '$.mid') = ?1 AND state = 0
                 ORDER BY id DESC LIMIT 1",
            )?
            .query_row([i(mid)], |r| r.get(0))
            .optional()?;
        Ok(id.map(u))
    }

    pub fn message_by_key(&self, key: &str) -> Result<Option<MsgId>> {
        let conn = self.reader()?;
        let id: Option<i64> = conn
            .prepare_cached("SELECT id FROM messages WHERE idem_key = ?1")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        Ok(id.map(u))
    }

    pub fn message(&self, msg_id: MsgId) -> Result<MessageInfo> {
        let conn = self.reader()?;
        let tx = conn.unchecked_transaction()?;
        let head = tx
            .prepare_cached(
                "SELECT idem_key, gateway, gateway_mid, sender, received, size, subject, meta,
                        state, delivery_ref
                 FROM messages WHERE id = ?1",
            )?
            .query_row([i(msg_id)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    u(r.get(2)?),
                    r.get::<_, String>(3)?,
                    u(r.get(4)?),
                    u(r.get(5)?),
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                    r.get::<_, i64>(8)?,
                    r.get::<_, Option<String>>(9)?,
                ))
            })
            .optional()?;
        let Some((key, gateway, gateway_mid, sender, received, size, subject, meta, state, dref)) =
            head
        else {
            return Err(QuarantineError::UnknownMessage(msg_id));
        };
        let recipients = {
            let mut st =
                tx.prepare_cached("SELECT addr FROM recipients WHERE msg_id = ?1 ORDER BY pos")?;
            let rows = st.query_map([i(msg_id)], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let attachments = {
            let mut st = tx.prepare_cached(
                "SELECT name, size FROM attachments WHERE msg_id = ?1 ORDER BY pos",
            )?;
            let rows = st.query_map([i(msg_id)], |r| {
                Ok(Attachment {
                    name: r.get(0)?,
                    size: u(r.get(1)?),
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let raw_members = {
            let mut st = tx.prepare_cached(
                "SELECT q.name, b.reason_kind, b.reason_name, b.details, b.entered_at, b.exit_at,
                        b.state, b.left_at, b.left_by, b.cause, b.early
                 FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
                 WHERE b.msg_id = ?1 ORDER BY b.id",
            )?;
            let rows = st.query_map([i(msg_id)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    u(r.get(4)?),
                    u(r.get(5)?),
                    r.get::<_, i64>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    r.get::<_, Option<String>>(9)?,
                    r.get::<_, bool>(10)?,
                ))
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        let mut memberships = Vec::new();
        for (q, kind, name, details, entered, exit, st, left_at, left_by, cause, early) in
            raw_members
        {
            memberships.push(Membership {
                quarantine: q,
                reason: reason_parse(&kind, name)?,
                details: from_json(&details, "details")?,
                entered_at: entered,
                exit_at: exit,
                state: membership_state(st)?,
                left_at: left_at.map(u),
                left_by,
                cause: cause.as_deref().and_then(Cause::parse),
                released_early: early,
            });
        }
        Ok(MessageInfo {
            msg_id,
            idempotency_key: key,
            gateway,
            gateway_mid,
            sender,
            recipients,
            received,
            size,
            subject,
            attachments,
            meta: from_json(&meta, "meta")?,
            state: message_state(state)?,
            memberships,
            delivery_ref: dref,
        })
    }

    pub fn raw(&self, msg_id: MsgId) -> Result<Vec<u8>> {
        let conn = self.reader()?;
        Self::raw_in(&conn, msg_id)
    }

    fn raw_in(conn: &Connection, msg_id: MsgId) -> Result<Vec<u8>> {
        let body: Option<Vec<u8>> = conn
            .prepare_cached("SELECT raw FROM message_body WHERE msg_id = ?1")?
            .query_row([i(msg_id)], |r| r.get(0))
            .optional()?;
        match body {
            Some(b) => Ok(b),
            None => {
                let exists: Option<i64> = conn
                    .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")?
                    .query_row([i(msg_id)], |r| r.get(0))
                    .optional()?;
                Err(match exists {
                    Some(_) => QuarantineError::BodyGone(msg_id),
                    None => QuarantineError::UnknownMessage(msg_id),
                })
            }
        }
    }

    pub fn history(&self, msg_id: MsgId) -> Result<Vec<HistoryEntry>> {
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(
            "SELECT at, who, action, quarantine, detail FROM history WHERE msg_id = ?1 ORDER BY id",
        )?;
        let rows = st.query_map([i(msg_id)], |r| {
            Ok(HistoryEntry {
                at: u(r.get(0)?),
                who: r.get(1)?,
                action: r.get(2)?,
                quarantine: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    pub fn send_copy(
        &self,
        msg_id: MsgId,
        to: &[String],
        who: &str,
        now: u64,
    ) -> Result<CopyToSend> {
        if to.is_empty() {
            return Err(QuarantineError::Invalid(
                "send copy needs a recipient".into(),
            ));
        }
        self.write(|tx| {
            let raw = Self::raw_in(tx, msg_id)?;
            add_history(
                tx,
                msg_id,
                now,
                who,
                "copy sent",
                None,
                &format!("to {}", to.join(", ")),
            )?;
            Ok(CopyToSend {
                msg_id,
                raw,
                to: to.to_vec(),
                requested_by: who.to_string(),
            })
        })
    }

    /// Records that a released message was handed to the delivery queue (`delivery_ref` is
    /// that queue's id) and drops its bytes. Repeat-safe: true the first time, false after.
    pub fn confirm_delivery(&self, msg_id: MsgId, delivery_ref: &str, now: u64) -> Result<bool> {
        self.write(|tx| confirm_one(tx, msg_id, delivery_ref, now))
    }

    /// [`Self::confirm_delivery`] for many messages in one transaction (one fsync).
    pub fn confirm_deliveries(
        &self,
        items: &[(MsgId, String)],
        now: u64,
    ) -> Result<Vec<Result<bool>>> {
        self.write(|tx| {
            Ok(items
                .iter()
                .map(|(id, r)| confirm_one(tx, *id, r, now))
                .collect())
        })
    }

    /// Messages released from all quarantines whose delivery is not confirmed (after a
    /// crash between the release and the hand-over, deliver these again).
    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>> {
        let conn = self.reader()?;
        let tx = conn.unchecked_transaction()?;
        let ids: Vec<(MsgId, String)> = {
            let mut st =
                tx.prepare_cached("SELECT id, gateway FROM messages WHERE state = 1 ORDER BY id")?;
            let rows = st.query_map([], |r| Ok((u(r.get(0)?), r.get(1)?)))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut out = Vec::new();
        for (id, gateway) in ids {
            if let Some(rec) = load_record(&tx, id)? {
                out.push(PendingDelivery {
                    msg_id: id,
                    gateway,
                    gateway_mid: rec.gateway_mid,
                    early_release_actions: semantics::deliver_actions(&rec.members),
                });
            }
        }
        Ok(out)
    }

    /// Released messages still pending at or before `now - lease` (their queueing failed
    /// or was cut short), claimed again (`finished_at` = `now`) and returned to be queued.
    pub fn claim_stale_pending(&self, now: u64, lease: u64) -> Result<Vec<PendingDelivery>> {
        let before = i(now.saturating_sub(lease));
        self.write(|tx| {
            let ids: Vec<(MsgId, String)> = {
                let mut st = tx.prepare_cached(
                    "UPDATE messages SET finished_at = ?2
                     WHERE id IN (SELECT id FROM messages WHERE state = 1 AND finished_at <= ?1
                                  ORDER BY id LIMIT ?3)
                     RETURNING id, gateway",
                )?;
                let rows = st.query_map(params![before, i(now), BATCH as i64], |r| {
                    Ok((u(r.get(0)?), r.get(1)?))
                })?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            let mut out = Vec::new();
            for (id, gateway) in ids {
                if let Some(rec) = load_record(tx, id)? {
                    out.push(PendingDelivery {
                        msg_id: id,
                        gateway,
                        gateway_mid: rec.gateway_mid,
                        early_release_actions: semantics::deliver_actions(&rec.members),
                    });
                }
            }
            out.sort_by_key(|p| p.msg_id);
            Ok(out)
        })
    }

    /// Held messages with an id above `after`, in id order, at most `limit` (a cursor over
    /// what is held, for handing every held message over in batches).
    pub fn held_ids(&self, after: MsgId, limit: usize) -> Result<Vec<MsgId>> {
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(
            "SELECT id FROM messages WHERE state = 0 AND id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = st.query_map(params![i(after), limit as i64], |r| Ok(u(r.get(0)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Marks held messages migrated to a manager, in one transaction (one fsync): see
    /// `Store::mark_migrated`. Per item, in input order: true when marked now, false when
    /// the message was no longer held (nothing changed for it). An unknown id fails the
    /// whole batch and changes nothing.
    pub fn mark_migrated(&self, items: &[(MsgId, String)], now: u64) -> Result<Vec<bool>> {
        self.write(|tx| {
            items
                .iter()
                .map(|(id, r)| migrate_one(tx, *id, r, now))
                .collect()
        })
    }

    /// Messages marked migrated at or after `since`.
    pub fn migrated_since(&self, since: u64) -> Result<u64> {
        let conn = self.reader()?;
        let n: i64 = conn
            .prepare_cached("SELECT count(*) FROM messages WHERE state = ?1 AND finished_at >= ?2")?
            .query_row(params![MessageState::Migrated.code(), i(since)], |r| {
                r.get(0)
            })?;
        Ok(u(n))
    }

    /// Removes messages that were deleted or delivered before `before`, with their history,
    /// and returns freed pages to the filesystem. Returns how many were removed.
    pub fn purge_finished(&self, before: u64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.write(|tx| {
                let ids: Vec<i64> = {
                    let mut st = tx.prepare_cached(
                        "SELECT id FROM messages
                         WHERE state IN (2, 3) AND finished_at < ?1 LIMIT ?2",
                    )?;
                    let rows = st.query_map(params![i(before), BATCH as i64], |r| r.get(0))?;
                    rows.collect::<rusqlite::Result<_>>()?
                };
                let mut del = tx.prepare_cached("DELETE FROM messages WHERE id = ?1")?;
                let mut fts = tx.prepare_cached("DELETE FROM message_fts WHERE rowid = ?1")?;
                for id in &ids {
                    fts.execute([id])?;
                    del.execute([id])?;
                }
                Ok(ids.len() as u64)
            })?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        let conn = lock(&self.writer);
        let mut st = conn.prepare("PRAGMA incremental_vacuum(4096)")?;
        let mut rows = st.query([])?;
        while rows.next()?.is_some() {}
        Ok(total)
    }

    // ---- candidates for the store layer ----

    /// Held memberships whose exit has passed, earliest first.
    pub(crate) fn due(&self, now: u64, limit: usize) -> Result<Vec<(MsgId, QuarantineId)>> {
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(
            "SELECT msg_id, quarantine_id FROM memberships
             WHERE state = 0 AND exit_at <= ?1 ORDER BY exit_at, msg_id LIMIT ?2",
        )?;
        let rows = st.query_map(params![i(now), limit as i64], |r| {
            Ok((u(r.get(0)?), u(r.get(1)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Held memberships of non-exempt quarantines, oldest first, with the message size.
    pub(crate) fn free_candidates(&self, limit: usize) -> Result<Vec<(MsgId, QuarantineId, u64)>> {
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(
            "SELECT b.msg_id, b.quarantine_id, b.size
             FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
             WHERE b.state = 0 AND q.exempt = 0
             ORDER BY b.entered_at, b.msg_id LIMIT ?1",
        )?;
        let rows = st.query_map([limit as i64], |r| {
            Ok((u(r.get(0)?), u(r.get(1)?), u(r.get(2)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Messages held because of an outbreak rule.
    pub(crate) fn rule_members(&self, rule: &str) -> Result<Vec<MsgId>> {
        let conn = self.reader()?;
        let mut st = conn.prepare_cached(
            "SELECT DISTINCT msg_id FROM memberships
             WHERE state = 0 AND reason_name = ?1 AND reason_kind = ?2 ORDER BY msg_id",
        )?;
        let rows = st.query_map(params![rule, ReasonKind::Outbreak.as_str()], |r| {
            Ok(u(r.get(0)?))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub(crate) fn held_totals(&self) -> Result<(u64, Option<u64>)> {
        let conn = self.reader()?;
        Ok((
            meta_value(&conn, "held_bytes")?.unwrap_or(0),
            meta_value(&conn, "quota_bytes")?,
        ))
    }

    pub fn search(&self, q: &SearchQuery) -> Result<SearchPage> {
        let conn = self.reader()?;
        search::search(&conn, q)
    }

    /// Every id a search matches (for a bulk action on all results), in its order.
    pub fn search_ids(&self, q: &SearchQuery) -> Result<Vec<MsgId>> {
        let conn = self.reader()?;
        search::search_ids(&conn, q)
    }

    #[cfg(test)]
    pub(crate) fn with_writer<R>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        f(&lock(&self.writer))
    }

    /// Updates the planner's statistics (cheap when little changed).
    pub fn optimize(&self) -> Result<()> {
        lock(&self.writer).execute_batch("PRAGMA optimize")?;
        Ok(())
    }
}

/// Marks one held message migrated (see `SqliteStore::mark_migrated`): its held
/// memberships leave as `Migrated` (counters and totals drop as for any exit, but nothing
/// is released or deleted), the message becomes `Migrated` with the transfer as its
/// `delivery_ref`, its bytes and full-text row go, and the history says `migrated`.
fn migrate_one(tx: &Connection, msg_id: MsgId, transfer_ref: &str, now: u64) -> Result<bool> {
    let Some(rec) = load_record(tx, msg_id)? else {
        return Err(QuarantineError::UnknownMessage(msg_id));
    };
    if rec.state != MessageState::Held {
        return Ok(false);
    }
    let size = i(rec.size);
    for m in rec
        .members
        .iter()
        .filter(|m| m.state == MembershipState::Held)
    {
        let n = tx
            .prepare_cached(
                "UPDATE memberships SET state = ?3, left_at = ?4, left_by = 'system', cause = ?5
                 WHERE msg_id = ?1 AND quarantine_id = ?2 AND state = 0",
            )?
            .execute(params![
                i(msg_id),
                i(m.quarantine_id),
                MembershipState::Migrated.code(),
                i(now),
                Cause::Migrated.as_str()
            ])?;
        if n == 1 {
            add_counters(tx, m.quarantine_id, -1, -size)?;
        }
    }
    tx.prepare_cached(
        "UPDATE messages SET state = ?2, delivery_ref = ?3, finished_at = ?4, next_exit = NULL
         WHERE id = ?1",
    )?
    .execute(params![
        i(msg_id),
        MessageState::Migrated.code(),
        transfer_ref,
        i(now)
    ])?;
    add_totals(tx, -1, -size)?;
    tx.prepare_cached("DELETE FROM message_fts WHERE rowid = ?1")?
        .execute([i(msg_id)])?;
    tx.prepare_cached("DELETE FROM message_body WHERE msg_id = ?1")?
        .execute([i(msg_id)])?;
    add_history(tx, msg_id, now, "system", "migrated", None, transfer_ref)?;
    Ok(true)
}

/// Marks one released message delivered (see `SqliteStore::confirm_delivery`). Checks
/// before it writes, so an error leaves nothing half-done in the transaction.
fn confirm_one(tx: &Connection, msg_id: MsgId, delivery_ref: &str, now: u64) -> Result<bool> {
    let state: Option<i64> = tx
        .query_row(
            "SELECT state FROM messages WHERE id = ?1",
            [i(msg_id)],
            |r| r.get(0),
        )
        .optional()?;
    let state = match state {
        Some(s) => message_state(s)?,
        None => return Err(QuarantineError::UnknownMessage(msg_id)),
    };
    match state {
        MessageState::Released => {}
        MessageState::Delivered => return Ok(false),
        other => {
            return Err(QuarantineError::Invalid(format!(
                "message {msg_id} is {}, not released",
                other.as_str()
            )))
        }
    }
    tx.execute(
        "UPDATE messages SET state = ?2, delivery_ref = ?3, finished_at = ?4 WHERE id = ?1",
        params![
            i(msg_id),
            MessageState::Delivered.code(),
            delivery_ref,
            i(now)
        ],
    )?;
    tx.execute("DELETE FROM message_body WHERE msg_id = ?1", [i(msg_id)])?;
    add_history(tx, msg_id, now, "system", "delivered", None, delivery_ref)?;
    Ok(true)
}
