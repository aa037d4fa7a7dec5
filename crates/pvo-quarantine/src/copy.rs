//! Moving an embedded (SQLite) store into PostgreSQL: [`copy_to_postgres`].
//!
//! Everything moves with its ids — quarantines and their settings, messages in every state
//! with their bytes, recipients, attachments, memberships and history — so MIDs, release
//! ids and the audit trail mean the same afterwards. The copy runs in batches of messages
//! in id order, each batch one PostgreSQL transaction that also records how far the copy
//! has come (`store_copy.copied_up_to`); a copy cut short (a crash, a lost connection, the
//! operator's Ctrl-C) continues after the last batch committed when run again. Only one
//! copy runs into a database at a time (an advisory lock), a database that holds anything
//! but this source's copy is refused, and the source is only read.
//!
//! At the end the counters are computed from the copied rows and both sides are compared:
//! the number of rows of each table, and one SHA-256 over every message's fields, its
//! memberships and the SHA-256 of its bytes (read back from PostgreSQL, not remembered
//! from the copy). A difference is an error that names it.

use postgres::types::ToSql;
use postgres::Transaction;
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

use crate::error::{QuarantineError, Result};
use crate::pg::{pg_text, words, PgStore};
use crate::sqlite::{i, u, SqliteStore};
use crate::store::Store;

/// Messages per batch (one PostgreSQL transaction each).
const BATCH: i64 = 500;

/// The session advisory lock of a copy into a database ("pvoc").
const COPY_LOCK: i64 = 0x7076_6f63;

/// How a copy went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyReport {
    /// Messages in the source (every state).
    pub messages: u64,
    /// Of those, already copied by an earlier run that was cut short (0 for a fresh copy).
    pub resumed_after: u64,
    /// Whether an earlier run had finished the copy (this one only verified it).
    pub already_done: bool,
    /// Rows per table, the same on both sides.
    pub tables: Vec<(&'static str, u64)>,
    /// The SHA-256 both sides agree on (hex).
    pub checksum: String,
}

/// Copies the embedded store `src` into the PostgreSQL store `dst` (see the module
/// documentation); `source` names the source for the record of a copy under way (its
/// path), `progress(copied, total)` is called after each batch.
pub fn copy_to_postgres(
    src: &Store,
    dst: &Store,
    source: &str,
    now: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    let (Store::Sqlite(src), Store::Postgres(dst)) = (src, dst) else {
        return Err(QuarantineError::Invalid(
            "a store moves from the embedded SQLite store to PostgreSQL".into(),
        ));
    };
    copy(src, dst, source, now, progress)
}

fn copy(
    src: &SqliteStore,
    dst: &PgStore,
    source: &str,
    now: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    let conn = src.read_conn()?;
    let (total, _max): (u64, u64) = conn.query_row(
        "SELECT count(*), coalesce(max(id), 0) FROM messages",
        [],
        |r| Ok((u(r.get(0)?), u(r.get(1)?))),
    )?;
    dst.with_session(|c| {
        let locked: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&COPY_LOCK])?
            .get(0);
        if !locked {
            return Err(QuarantineError::Invalid(
                "another copy into this database is running".into(),
            ));
        }
        let r = copy_locked(&conn, c, source, total, now, progress);
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&COPY_LOCK]);
        r
    })
}

fn copy_locked(
    conn: &Connection,
    c: &mut postgres::Client,
    source: &str,
    total: u64,
    now: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopyReport> {
    // Where an earlier run got to, or a new record of this copy.
    let state: Option<(String, i64, Option<i64>)> = c
        .query_opt(
            "SELECT source, copied_up_to, finished_at FROM store_copy",
            &[],
        )?
        .map(|r| (r.get(0), r.get(1), r.get(2)));
    let (mut up_to, already_done) = match state {
        Some((s, _, _)) if s != source => {
            return Err(QuarantineError::Invalid(format!(
                "this database holds a copy of another store ({s}); give an empty database"
            )))
        }
        Some((_, up_to, finished)) => (up_to, finished.is_some()),
        None => {
            let held: i64 = c.query_one("SELECT count(*) FROM messages", &[])?.get(0);
            let custom: i64 = c
                .query_one("SELECT count(*) FROM quarantines WHERE NOT builtin", &[])?
                .get(0);
            if held > 0 || custom > 0 {
                return Err(QuarantineError::Invalid(format!(
                    "this database already holds a quarantine store ({held} messages, {custom} custom quarantines); give an empty database"
                )));
            }
            c.execute(
                "INSERT INTO store_copy (source, copied_up_to, started_at) VALUES ($1, 0, $2)",
                &[&source, &i(now)],
            )?;
            (0, false)
        }
    };
    let resumed_after: u64 = conn.query_row(
        "SELECT count(*) FROM messages WHERE id <= ?1",
        [up_to],
        |r| r.get::<_, i64>(0).map(u),
    )?;
    if !already_done {
        let mut tx = c.transaction()?;
        copy_quarantines(conn, &mut tx)?;
        tx.commit()?;
        let mut copied = resumed_after;
        progress(copied, total);
        loop {
            let ids: Vec<i64> = conn
                .prepare_cached("SELECT id FROM messages WHERE id > ?1 ORDER BY id LIMIT ?2")?
                .query_map(params![up_to, BATCH], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let Some(&last) = ids.last() else { break };
            let mut tx = c.transaction()?;
            for &id in &ids {
                copy_message(conn, &mut tx, id)?;
            }
            tx.execute("UPDATE store_copy SET copied_up_to = $1", &[&last])?;
            tx.commit()?;
            up_to = last;
            copied += ids.len() as u64;
            progress(copied, total);
        }
        let mut tx = c.transaction()?;
        finish(&mut tx)?;
        tx.execute("UPDATE store_copy SET finished_at = $1", &[&i(now)])?;
        tx.commit()?;
    }
    let tables = compare_counts(conn, c)?;
    let checksum = compare_checksums(conn, c)?;
    Ok(CopyReport {
        messages: total,
        resumed_after,
        already_done,
        tables,
        checksum,
    })
}

/// The quarantines with their ids and settings (built-ins 1-4 exist already; their
/// settings are the source's), and the space quota. Repeat-safe.
fn copy_quarantines(conn: &Connection, tx: &mut Transaction<'_>) -> Result<()> {
    let mut st = conn.prepare(
        "SELECT id, name, builtin, retention_secs, default_action, exempt, early_release,
                access, created_at FROM quarantines ORDER BY id",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, bool>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, i64>(8)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, name, builtin, retention, action, exempt, early, access, created) in rows {
        tx.execute(
            "INSERT INTO quarantines (id, name, builtin, retention_secs, default_action, exempt,
                                      early_release, access, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (id) DO UPDATE SET name = $2, builtin = $3, retention_secs = $4,
                 default_action = $5, exempt = $6, early_release = $7, access = $8,
                 created_at = $9",
            &[
                &id,
                &pg_text(&name),
                &builtin,
                &retention,
                &action,
                &exempt,
                &early,
                &access,
                &created,
            ],
        )?;
    }
    tx.batch_execute(
        "SELECT setval(pg_get_serial_sequence('pvo_quarantine.quarantines', 'id'),
                       greatest((SELECT max(id) FROM quarantines), 101), true)",
    )?;
    let quota: Option<i64> = conn
        .query_row(
            "SELECT value FROM store_meta WHERE key = 'quota_bytes'",
            [],
            |r| r.get(0),
        )
        .ok();
    tx.execute("DELETE FROM store_meta WHERE key = 'quota_bytes'", &[])?;
    if let Some(q) = quota {
        tx.execute(
            "INSERT INTO store_meta (key, value) VALUES ('quota_bytes', $1)",
            &[&q],
        )?;
    }
    Ok(())
}

/// One message with everything that belongs to it.
fn copy_message(conn: &Connection, tx: &mut Transaction<'_>, id: i64) -> Result<()> {
    type Row = (
        String,
        String,
        i64,
        String,
        String,
        String,
        i64,
        i64,
        String,
        String,
        i64,
        Option<i64>,
        i64,
        Option<i64>,
        Option<String>,
    );
    let m: Row = conn
        .prepare_cached(
            "SELECT idem_key, gateway, gateway_mid, sender, sender_lc, sender_domain, received,
                    size, subject, meta, state, next_exit, created_at, finished_at, delivery_ref
             FROM messages WHERE id = ?1",
        )?
        .query_row([id], |r| {
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
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
                r.get(14)?,
            ))
        })?;
    let body: Option<Vec<u8>> = conn
        .prepare_cached("SELECT raw FROM message_body WHERE msg_id = ?1")?
        .query_row([id], |r| r.get(0))
        .ok();
    let attachments: Vec<(i64, String, i64)> = conn
        .prepare_cached("SELECT pos, name, size FROM attachments WHERE msg_id = ?1 ORDER BY pos")?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let node_mid: Option<i64> = serde_json::from_str::<serde_json::Value>(&m.9)
        .ok()
        .and_then(|v| v.get("mid").and_then(|v| v.as_u64()))
        .map(i);
    let names: Vec<&str> = attachments.iter().map(|a| a.1.as_str()).collect();
    let hash = body.as_ref().map(|b| Sha256::digest(b).to_vec());
    if let (Some(h), Some(b)) = (&hash, &body) {
        tx.execute(
            "INSERT INTO bodies (hash, raw, refs) VALUES ($1, $2, 1)
             ON CONFLICT (hash) DO UPDATE SET refs = bodies.refs + 1",
            &[h, b],
        )?;
    }
    let params: [&(dyn ToSql + Sync); 20] = [
        &id,
        &pg_text(&m.0),
        &pg_text(&m.1),
        &m.2,
        &node_mid,
        &pg_text(&m.3),
        &pg_text(&m.4),
        &pg_text(&m.5),
        &m.6,
        &m.7,
        &pg_text(&m.8),
        &words(&m.8),
        &words(&names.join(" ")),
        &pg_text(&m.9),
        &m.10,
        &m.11,
        &m.12,
        &m.13,
        &m.14,
        &hash,
    ];
    tx.execute(
        "INSERT INTO messages (id, idem_key, gateway, gateway_mid, node_mid, sender, sender_lc,
                               sender_domain, received, size, subject, subject_words,
                               attach_words, meta, state, next_exit, created_at, finished_at,
                               delivery_ref, body_hash)
         OVERRIDING SYSTEM VALUE
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $18, $19, $20)",
        &params,
    )?;
    let recipients: Vec<(i64, String, String, String)> = conn
        .prepare_cached(
            "SELECT pos, addr, addr_lc, domain FROM recipients WHERE msg_id = ?1 ORDER BY pos",
        )?
        .query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (pos, addr, lc, domain) in recipients {
        tx.execute(
            "INSERT INTO recipients (msg_id, pos, addr, addr_lc, domain) VALUES ($1, $2, $3, $4, $5)",
            &[&id, &pos, &pg_text(&addr), &pg_text(&lc), &pg_text(&domain)],
        )?;
    }
    for (pos, name, size) in &attachments {
        tx.execute(
            "INSERT INTO attachments (msg_id, pos, name, size) VALUES ($1, $2, $3, $4)",
            &[&id, pos, &pg_text(name), size],
        )?;
    }
    type Member = (
        i64,
        i64,
        String,
        String,
        String,
        i64,
        i64,
        i64,
        bool,
        Option<i64>,
        Option<String>,
        Option<String>,
        i64,
        i64,
    );
    let members: Vec<Member> = conn
        .prepare_cached(
            "SELECT id, quarantine_id, reason_kind, reason_name, details, entered_at, exit_at,
                    state, early, left_at, left_by, cause, received, size
             FROM memberships WHERE msg_id = ?1 ORDER BY id",
        )?
        .query_map([id], |r| {
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
                r.get(10)?,
                r.get(11)?,
                r.get(12)?,
                r.get(13)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for b in members {
        tx.execute(
            "INSERT INTO memberships (id, msg_id, quarantine_id, reason_kind, reason_name,
                                      details, entered_at, exit_at, state, early, left_at,
                                      left_by, cause, received, size)
             OVERRIDING SYSTEM VALUE
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            &[
                &b.0,
                &id,
                &b.1,
                &b.2,
                &pg_text(&b.3),
                &pg_text(&b.4),
                &b.5,
                &b.6,
                &b.7,
                &b.8,
                &b.9,
                &b.10.as_deref().map(pg_text),
                &b.11.as_deref().map(pg_text),
                &b.12,
                &b.13,
            ],
        )?;
    }
    let history: Vec<(i64, i64, String, String, Option<String>, String)> = conn
        .prepare_cached(
            "SELECT id, at, who, action, quarantine, detail FROM history WHERE msg_id = ?1
             ORDER BY id",
        )?
        .query_map([id], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for h in history {
        tx.execute(
            "INSERT INTO history (id, msg_id, at, who, action, quarantine, detail)
             OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &h.0,
                &id,
                &h.1,
                &pg_text(&h.2),
                &pg_text(&h.3),
                &h.4.as_deref().map(pg_text),
                &pg_text(&h.5),
            ],
        )?;
    }
    Ok(())
}

/// The counters from the copied rows, and the identities past the copied ids.
fn finish(tx: &mut Transaction<'_>) -> Result<()> {
    tx.batch_execute(
        "UPDATE quarantines q SET
             held_count = coalesce((SELECT count(*) FROM memberships b
                                    WHERE b.quarantine_id = q.id AND b.state = 0), 0),
             held_bytes = coalesce((SELECT sum(b.size) FROM memberships b
                                    WHERE b.quarantine_id = q.id AND b.state = 0), 0);
         UPDATE store_meta SET value = (SELECT count(*) FROM messages WHERE state = 0)
             WHERE key = 'held_messages';
         UPDATE store_meta SET value = (SELECT coalesce(sum(size), 0) FROM messages WHERE state = 0)
             WHERE key = 'held_bytes';
         SELECT setval(pg_get_serial_sequence('pvo_quarantine.messages', 'id'),
                       greatest((SELECT max(id) FROM messages), 1), true);
         SELECT setval(pg_get_serial_sequence('pvo_quarantine.memberships', 'id'),
                       greatest((SELECT max(id) FROM memberships), 1), true);
         SELECT setval(pg_get_serial_sequence('pvo_quarantine.history', 'id'),
                       greatest((SELECT max(id) FROM history), 1), true);",
    )?;
    Ok(())
}

/// The tables whose rows are compared, with the SQL that counts them on either side.
const COUNTS: &[(&str, &str, &str)] = &[
    (
        "quarantines",
        "SELECT count(*) FROM quarantines",
        "SELECT count(*) FROM quarantines",
    ),
    (
        "messages",
        "SELECT count(*) FROM messages",
        "SELECT count(*) FROM messages",
    ),
    (
        "message bytes",
        "SELECT count(*) FROM message_body",
        "SELECT count(*) FROM messages WHERE body_hash IS NOT NULL",
    ),
    (
        "recipients",
        "SELECT count(*) FROM recipients",
        "SELECT count(*) FROM recipients",
    ),
    (
        "attachments",
        "SELECT count(*) FROM attachments",
        "SELECT count(*) FROM attachments",
    ),
    (
        "memberships",
        "SELECT count(*) FROM memberships",
        "SELECT count(*) FROM memberships",
    ),
    (
        "history",
        "SELECT count(*) FROM history",
        "SELECT count(*) FROM history",
    ),
    (
        "held messages",
        "SELECT count(*) FROM messages WHERE state = 0",
        "SELECT value FROM store_meta WHERE key = 'held_messages'",
    ),
];

fn compare_counts(conn: &Connection, c: &mut postgres::Client) -> Result<Vec<(&'static str, u64)>> {
    let mut out = Vec::new();
    for (table, sqlite, pg) in COUNTS {
        let a: i64 = conn.query_row(sqlite, [], |r| r.get(0))?;
        let b: i64 = c.query_one(*pg, &[])?.get(0);
        if a != b {
            return Err(QuarantineError::Corrupt(format!(
                "the copy differs: {table}: {a} in the embedded store, {b} in PostgreSQL"
            )));
        }
        out.push((*table, u(a)));
    }
    Ok(out)
}

/// One line per message as both sides must agree on it.
fn line(fields: &[String]) -> String {
    let mut s = fields.join("\u{1f}");
    s.push('\n');
    s
}

/// SHA-256 over every message (fields, memberships, the SHA-256 of its bytes) on each
/// side, in id order; the hex digest when they agree, else the first message that differs.
fn compare_checksums(conn: &Connection, c: &mut postgres::Client) -> Result<String> {
    let (mut a, mut b) = (Sha256::new(), Sha256::new());
    let mut after: i64 = 0;
    loop {
        let src: Vec<(i64, String)> = conn
            .prepare_cached(
                "SELECT m.id, m.idem_key, m.gateway, m.gateway_mid, m.state, m.size, m.received,
                        coalesce(m.next_exit, -1), coalesce(m.delivery_ref, ''),
                        (SELECT group_concat(quarantine_id || ':' || state || ':' || exit_at, ',')
                           FROM (SELECT quarantine_id, state, exit_at FROM memberships
                                 WHERE msg_id = m.id ORDER BY id)),
                        b.raw
                 FROM messages m LEFT JOIN message_body b ON b.msg_id = m.id
                 WHERE m.id > ?1 ORDER BY m.id LIMIT ?2",
            )?
            .query_map(params![after, BATCH], |r| {
                let raw: Option<Vec<u8>> = r.get(10)?;
                let fields = vec![
                    r.get::<_, i64>(0)?.to_string(),
                    pg_text(&r.get::<_, String>(1)?),
                    pg_text(&r.get::<_, String>(2)?),
                    r.get::<_, i64>(3)?.to_string(),
                    r.get::<_, i64>(4)?.to_string(),
                    r.get::<_, i64>(5)?.to_string(),
                    r.get::<_, i64>(6)?.to_string(),
                    r.get::<_, i64>(7)?.to_string(),
                    r.get::<_, String>(8)?,
                    r.get::<_, Option<String>>(9)?.unwrap_or_default(),
                    raw.map(|b| hex(&Sha256::digest(&b))).unwrap_or_default(),
                ];
                Ok((r.get::<_, i64>(0)?, line(&fields)))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let dst: Vec<(i64, String)> = c
            .query(
                "SELECT m.id, m.idem_key, m.gateway, m.gateway_mid, m.state, m.size, m.received,
                        coalesce(m.next_exit, -1), coalesce(m.delivery_ref, ''),
                        (SELECT string_agg(quarantine_id || ':' || state || ':' || exit_at, ','
                                           ORDER BY id)
                           FROM memberships WHERE msg_id = m.id),
                        encode(sha256(b.raw), 'hex')
                 FROM messages m LEFT JOIN bodies b ON b.hash = m.body_hash
                 WHERE m.id > $1 ORDER BY m.id LIMIT $2",
                &[&after, &BATCH],
            )?
            .iter()
            .map(|r| {
                let fields = vec![
                    r.get::<_, i64>(0).to_string(),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, i64>(3).to_string(),
                    r.get::<_, i64>(4).to_string(),
                    r.get::<_, i64>(5).to_string(),
                    r.get::<_, i64>(6).to_string(),
                    r.get::<_, i64>(7).to_string(),
                    r.get::<_, String>(8),
                    r.get::<_, Option<String>>(9).unwrap_or_default(),
                    r.get::<_, Option<String>>(10).unwrap_or_default(),
                ];
                (r.get::<_, i64>(0), line(&fields))
            })
            .collect();
        for (x, y) in src.iter().zip(&dst) {
            if x != y {
                return Err(QuarantineError::Corrupt(format!(
                    "the copy differs at message {} (PostgreSQL message {})",
                    x.0, y.0
                )));
            }
            a.update(x.1.as_bytes());
            b.update(y.1.as_bytes());
        }
        if src.len() != dst.len() {
            return Err(QuarantineError::Corrupt(format!(
                "the copy differs after message {after}: {} messages in the embedded store, {} in PostgreSQL",
                src.len(),
                dst.len()
            )));
        }
        match src.last() {
            Some((id, _)) => after = *id,
            None => break,
        }
    }
    let (a, b) = (hex(&a.finalize()), hex(&b.finalize()));
    if a != b {
        return Err(QuarantineError::Corrupt(
            "the copy's checksums differ".into(),
        ));
    }
    Ok(a)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
