//! The PostgreSQL backend: the same model and semantics as `sqlite`, in the schema
//! `pvo_quarantine` of a database that several managers may share.
//!
//! # Connections
//!
//! The blocking `postgres` client. One writer connection behind a mutex (every write of this
//! process is one short transaction on it) and a small pool of reader connections (searches
//! and reads run beside the writer; a read that needs one snapshot runs in a
//! `REPEATABLE READ READ ONLY` transaction). A connection found closed (server restarted) is
//! replaced on next use. No pool crate: one process writes through one connection anyway.
//! TLS: [`PgStore::open`] takes the connector, so a node passes its rustls one;
//! `Store::open_postgres` uses `NoTls` and accepts only a Unix socket or a loopback host.
//!
//! # Several processes on one database
//!
//! Nothing that decides anything lives in this process: every write is one transaction
//! whose outcome is decided by the database, so a second manager on the same database
//! (or a second `Store` in this one) sees and respects it.
//!
//! - Transfer ids: `INSERT … ON CONFLICT (idem_key) DO NOTHING`; the loser of two concurrent
//!   inserts finds the winner's row and answers `created: false` — a message is stored once.
//! - Actions: `transition` loads the message row with `SELECT … FOR UPDATE`, then its
//!   memberships, runs `semantics::plan` and writes the plan in the same transaction. A
//!   second process releasing the same message waits on the row lock and then plans on the
//!   committed state, so it gets `Unchanged`: exactly one `Deliver`. Confirming and
//!   migrating lock the row the same way.
//! - Counters (`held_count`, `held_bytes`, `store_meta`) are `UPDATE … SET x = x + d`: row
//!   locks serialize them, no process keeps a copy. Ids come from identity columns.
//! - Bodies are shared by content (SHA-256) with a reference count updated under the row
//!   lock (`ON CONFLICT (hash) DO UPDATE SET refs = refs + 1`); the last reference gone, the
//!   row is deleted in the same transaction, and a concurrent insert of the same bytes
//!   waits for it and then inserts them again.
//! - Transactions that meet a deadlock or a serialization failure are retried from the
//!   start (a few times), so lock-order races between processes cost a retry, not an error.
//! - Migrations run under an advisory lock (see `schema`).
//!
//! # Message bytes
//!
//! In the table `bodies`, apart from `messages` so scans never read them. A message drops its
//! reference when it is deleted, delivered or migrated (`raw` then answers `BodyGone`, as
//! with SQLite), and bytes no message references are deleted at once.

mod schema;
mod search;

pub use schema::LATEST as PG_SCHEMA_VERSION;

use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use postgres::error::SqlState;
use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::types::ToSql;
use postgres::{Client, GenericClient, IsolationLevel, Socket, Transaction};
use sha2::{Digest, Sha256};

use crate::error::{QuarantineError, Result};
use crate::model::{
    AccessList, ActionReport, Attachment, Builtin, Cause, CopyToSend, EarlyReleaseActions, HeldIn,
    HistoryEntry, Inserted, Membership, MembershipState, MessageInfo, MessageState, MsgId,
    NewMessage, PendingDelivery, Quarantine, QuarantineDeleted, QuarantineId, QuarantineSettings,
    QuarantineUsage, ReasonKind, Usage,
};
use crate::search::{SearchPage, SearchQuery};
use crate::semantics::{self, Edit, MemberRow, Op, Plan, Record, Sel};
use crate::sqlite::{
    default_action_parse, domain_of, from_json, i, json, membership_state, message_state,
    reason_parse, u, validate_name, validate_new, validate_settings, BATCH,
};

/// Reader connections kept open.
const MAX_READERS: usize = 4;

/// How often a transaction that lost a deadlock or serialization race is run again.
const RETRIES: usize = 8;

type Connect = Box<dyn Fn() -> std::result::Result<Client, postgres::Error> + Send + Sync>;

/// The PostgreSQL store. Cheap to share: wrap it (or the `Store`) in an `Arc`.
pub struct PgStore {
    connect: Connect,
    writer: Mutex<Client>,
    readers: Mutex<Vec<Client>>,
    /// The connection that holds (or keeps asking for) the leader lock.
    leader: Mutex<Option<(Client, bool)>>,
}

/// The session advisory lock of the deployment's leader ("pvol" in ASCII): held by one
/// manager's connection at a time, let go by the database when that connection ends.
const LEADER_LOCK: i64 = 0x7076_6f6c;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The words of a text as the search matches them: letters and digits, lowercased,
/// diacritics removed, separated and surrounded by one space (` résumé attached ` →
/// ` resume attached `), so a phrase is a `LIKE '% w1 w2 %'`. The same tokenization as
/// the SQLite full-text index (`unicode61 remove_diacritics 2`).
pub(crate) fn words(text: &str) -> String {
    let mut out = String::from(" ");
    for w in tokens(text) {
        out.push_str(&w);
        out.push(' ');
    }
    out
}

pub(crate) fn tokens(text: &str) -> Vec<String> {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    let folded: String = text
        .nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect();
    folded
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Text as PostgreSQL can store it: `text` cannot hold NUL, which a message's header
/// can (a sender controls the subject and attachment names); it becomes U+FFFD rather
/// than failing the transfer forever.
pub(crate) fn pg_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

/// True for the errors after which running the same transaction again can succeed.
fn retryable(e: &QuarantineError) -> bool {
    match e {
        QuarantineError::Pg(e) => matches!(
            e.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ),
        _ => false,
    }
}

/// Whether `url` names a Unix socket or a loopback host only (where `NoTls` is acceptable).
fn local_only(config: &postgres::Config) -> bool {
    use postgres::config::Host;
    let hosts_ok = !config.get_hosts().is_empty()
        && config.get_hosts().iter().all(|h| match h {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|a| a.is_loopback())
            }
        });
    let addrs_ok = config.get_hostaddrs().iter().all(|a| a.is_loopback());
    hosts_ok && addrs_ok
}

fn quarantine_names(tx: &mut impl GenericClient) -> Result<Vec<(QuarantineId, String, u64)>> {
    Ok(tx
        .query("SELECT id, name, retention_secs FROM quarantines", &[])?
        .iter()
        .map(|r| (u(r.get(0)), r.get(1), u(r.get(2))))
        .collect())
}

fn add_counters(tx: &mut Transaction<'_>, qid: QuarantineId, count: i64, bytes: i64) -> Result<()> {
    tx.execute(
        "UPDATE quarantines SET held_count = held_count + $2, held_bytes = held_bytes + $3
         WHERE id = $1",
        &[&i(qid), &count, &bytes],
    )?;
    Ok(())
}

fn add_totals(tx: &mut Transaction<'_>, count: i64, bytes: i64) -> Result<()> {
    // One statement, keys in a fixed order: two processes never lock them crosswise.
    tx.execute(
        "UPDATE store_meta SET value = value + CASE key WHEN 'held_messages' THEN $1::BIGINT ELSE $2::BIGINT END
         WHERE key IN ('held_messages', 'held_bytes')",
        &[&count, &bytes],
    )?;
    Ok(())
}

fn meta_value(c: &mut impl GenericClient, key: &str) -> Result<Option<u64>> {
    Ok(
        c.query_opt("SELECT value FROM store_meta WHERE key = $1", &[&key])?
            .map(|r| u(r.get(0))),
    )
}

fn add_history(
    tx: &mut Transaction<'_>,
    msg_id: MsgId,
    at: u64,
    who: &str,
    action: &str,
    quarantine: Option<&str>,
    detail: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO history (msg_id, at, who, action, quarantine, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[&i(msg_id), &i(at), &who, &action, &quarantine, &detail],
    )?;
    Ok(())
}

/// Drops the message's reference to its bytes, and the bytes with the last reference.
fn drop_body(tx: &mut Transaction<'_>, msg_id: MsgId) -> Result<()> {
    let Some(row) = tx.query_opt(
        "SELECT body_hash FROM messages WHERE id = $1 AND body_hash IS NOT NULL",
        &[&i(msg_id)],
    )?
    else {
        return Ok(());
    };
    let hash: Vec<u8> = row.get(0);
    tx.execute(
        "UPDATE messages SET body_hash = NULL WHERE id = $1",
        &[&i(msg_id)],
    )?;
    let left: Option<i64> = tx
        .query_opt(
            "UPDATE bodies SET refs = refs - 1 WHERE hash = $1 RETURNING refs",
            &[&hash],
        )?
        .map(|r| r.get(0));
    if left.is_some_and(|n| n <= 0) {
        tx.execute("DELETE FROM bodies WHERE hash = $1 AND refs <= 0", &[&hash])?;
    }
    Ok(())
}

fn held_in(tx: &mut impl GenericClient, msg_id: MsgId) -> Result<Vec<HeldIn>> {
    let rows = tx.query(
        "SELECT q.name, b.reason_kind, b.reason_name, b.exit_at
         FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
         WHERE b.msg_id = $1 ORDER BY b.id",
        &[&i(msg_id)],
    )?;
    rows.iter()
        .map(|r| {
            Ok(HeldIn {
                quarantine: r.get(0),
                reason: reason_parse(r.get(1), r.get(2))?,
                exit_at: u(r.get(3)),
            })
        })
        .collect()
}

/// The message and its memberships; with `for_update` the message row stays locked until
/// the transaction ends (every write to a message goes through this lock).
fn load_record(
    tx: &mut impl GenericClient,
    msg_id: MsgId,
    for_update: bool,
) -> Result<Option<Record>> {
    let sql = if for_update {
        "SELECT gateway_mid, state, size FROM messages WHERE id = $1 FOR UPDATE"
    } else {
        "SELECT gateway_mid, state, size FROM messages WHERE id = $1"
    };
    let Some(head) = tx.query_opt(sql, &[&i(msg_id)])? else {
        return Ok(None);
    };
    let rows = tx.query(
        "SELECT b.quarantine_id, q.name, q.default_action, q.exempt, q.early_release,
                b.reason_kind, b.reason_name, b.state, b.exit_at, b.early
         FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
         WHERE b.msg_id = $1 ORDER BY b.id",
        &[&i(msg_id)],
    )?;
    let mut members = Vec::new();
    for r in &rows {
        members.push(MemberRow {
            quarantine_id: u(r.get(0)),
            quarantine: r.get(1),
            default_action: default_action_parse(r.get(2))?,
            exempt: r.get(3),
            early_release: from_json::<EarlyReleaseActions>(r.get(4), "early release")?,
            reason: reason_parse(r.get(5), r.get(6))?,
            state: membership_state(r.get(7))?,
            exit_at: u(r.get(8)),
            early: r.get(9),
        });
    }
    Ok(Some(Record {
        msg_id,
        gateway_mid: u(head.get(0)),
        state: message_state(head.get(1))?,
        size: u(head.get(2)),
        members,
    }))
}

fn apply_plan(tx: &mut Transaction<'_>, rec: &Record, plan: &Plan, now: u64) -> Result<()> {
    let size = i(rec.size);
    let id = i(rec.msg_id);
    for edit in &plan.edits {
        match edit {
            Edit::Leave {
                quarantine_id,
                state,
                cause,
                who,
                early,
            } => {
                let n = tx.execute(
                    "UPDATE memberships
                     SET state = $3, early = $4, left_at = $5, left_by = $6, cause = $7
                     WHERE msg_id = $1 AND quarantine_id = $2 AND state = 0",
                    &[
                        &id,
                        &i(*quarantine_id),
                        &state.code(),
                        early,
                        &i(now),
                        who,
                        &cause.as_str(),
                    ],
                )?;
                if n == 1 {
                    add_counters(tx, *quarantine_id, -1, -size)?;
                }
            }
            Edit::SetExit {
                quarantine_id,
                exit_at,
            } => {
                tx.execute(
                    "UPDATE memberships SET exit_at = $3 WHERE msg_id = $1 AND quarantine_id = $2",
                    &[&id, &i(*quarantine_id), &i(*exit_at)],
                )?;
            }
            Edit::Move { from, to } => {
                let n = tx.execute(
                    "UPDATE memberships SET quarantine_id = $3
                     WHERE msg_id = $1 AND quarantine_id = $2 AND state = 0",
                    &[&id, &i(*from), &i(*to)],
                )?;
                if n == 1 {
                    add_counters(tx, *from, -1, -size)?;
                    add_counters(tx, *to, 1, size)?;
                }
            }
        }
    }
    if let Some(state) = plan.message_state {
        tx.execute(
            "UPDATE messages SET state = $2, finished_at = $3 WHERE id = $1",
            &[&id, &state.code(), &i(now)],
        )?;
        if rec.state == MessageState::Held && state != MessageState::Held {
            add_totals(tx, -1, -size)?;
        }
        if state == MessageState::Deleted {
            drop_body(tx, rec.msg_id)?;
        }
    }
    if !plan.edits.is_empty() {
        tx.execute(
            "UPDATE messages SET next_exit =
                 (SELECT min(exit_at) FROM memberships WHERE msg_id = $1 AND state = 0)
             WHERE id = $1",
            &[&id],
        )?;
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

fn q_from_row(r: &postgres::Row) -> Result<(Quarantine, u64, u64)> {
    Ok((
        Quarantine {
            id: u(r.get(0)),
            name: r.get(1),
            builtin: r.get(2),
            settings: QuarantineSettings {
                retention_secs: u(r.get(3)),
                default_action: default_action_parse(r.get(4))?,
                exempt_from_free_up: r.get(5),
                early_release: from_json(r.get(6), "early release")?,
                access: from_json::<AccessList>(r.get(7), "access list")?,
            },
        },
        u(r.get(8)),
        u(r.get(9)),
    ))
}

fn find_quarantine(c: &mut impl GenericClient, name: &str) -> Result<Quarantine> {
    let row = c.query_opt(
        &format!("SELECT {Q_COLS} FROM quarantines WHERE lower(name) = lower($1)"),
        &[&name],
    )?;
    match row {
        Some(r) => Ok(q_from_row(&r)?.0),
        None => Err(QuarantineError::UnknownQuarantine(name.to_string())),
    }
}

/// A reader connection; goes back to the pool when dropped.
struct Reader<'a> {
    conn: Option<Client>,
    pool: &'a Mutex<Vec<Client>>,
}

impl Reader<'_> {
    fn c(&mut self) -> &mut Client {
        self.conn.as_mut().expect("reader present until drop")
    }

    /// A read-only transaction over one snapshot.
    fn snapshot(&mut self) -> Result<Transaction<'_>> {
        Ok(self
            .c()
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()?)
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            let mut pool = lock(self.pool);
            if pool.len() < MAX_READERS && !c.is_closed() {
                pool.push(c);
            }
        }
    }
}

impl PgStore {
    /// Connects to the database of `url` (`postgresql://…` or `host=… dbname=…`) with the
    /// TLS connector `tls` and applies pending migrations.
    pub fn open<T>(url: &str, tls: T, now: u64) -> Result<PgStore>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync + 'static,
        T::TlsConnect: Send,
        T::Stream: Send + Sync,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let config = postgres::Config::from_str(url)?;
        let connect: Connect = Box::new(move || {
            let mut c = config.connect(tls.clone())?;
            c.batch_execute("SET search_path TO pvo_quarantine")?;
            Ok(c)
        });
        let mut writer = connect()?;
        schema::migrate(&mut writer, now)?;
        Ok(PgStore {
            connect,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
            leader: Mutex::new(None),
        })
    }

    /// [`PgStore::open`] without TLS: only for a Unix socket or a loopback address (a
    /// password and the messages would otherwise cross the network in the clear).
    pub fn open_local(url: &str, now: u64) -> Result<PgStore> {
        let config = postgres::Config::from_str(url)?;
        if !local_only(&config) {
            return Err(QuarantineError::Invalid(
                "a PostgreSQL store without TLS must be on a Unix socket or a loopback \
                 address"
                    .into(),
            ));
        }
        PgStore::open(url, postgres::NoTls, now)
    }

    pub fn schema_version(&self) -> Result<u32> {
        schema::current_version(self.reader()?.c())
    }

    /// The id every manager of this database shares.
    pub fn deployment_id(&self) -> Result<Option<String>> {
        Ok(self
            .reader()?
            .c()
            .query_opt("SELECT id FROM deployment", &[])?
            .map(|r| r.get(0)))
    }

    /// The slot of the manager `node_id` among the managers of this database (1 for the
    /// first to open it, then 2, …; the same slot every time the same manager opens it).
    pub fn manager_slot(&self, node_id: &str, now: u64) -> Result<u64> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO managers (node_id, joined_at) VALUES ($1, $2)
                 ON CONFLICT (node_id) DO NOTHING",
                &[&node_id, &i(now)],
            )?;
            Ok(u(tx
                .query_one("SELECT slot FROM managers WHERE node_id = $1", &[&node_id])?
                .get(0)))
        })
    }

    /// Whether this store's process leads the deployment: it holds the leader lock on a
    /// connection of its own (asked for again on every call while another holds it). A
    /// leader whose process dies or whose connection breaks loses the lock at once, and the
    /// next manager that asks takes it over.
    pub fn try_lead(&self) -> Result<bool> {
        let mut slot = lock(&self.leader);
        if let Some((c, held)) = slot.as_mut() {
            // The lock lives as long as the session: held and still connected is held.
            let asked = if *held {
                c.query_one("SELECT TRUE", &[])
            } else {
                c.query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            };
            match asked {
                Ok(row) => {
                    *held = row.get(0);
                    return Ok(*held);
                }
                // The connection broke (and with it any lock it held): ask anew.
                Err(_) => *slot = None,
            }
        }
        let mut c = (self.connect)()?;
        let held: bool = c
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
            .get(0);
        *slot = Some((c, held));
        Ok(held)
    }

    /// Releases interrupted by a manager that stopped before queueing them: messages
    /// released (pending) at or before `now - lease` are claimed by this process (their
    /// claim renewed to `now`, rows another manager is claiming skipped) and returned to be
    /// queued again. A release in flight on a live manager is queued within milliseconds,
    /// so only a dead (or stuck) manager's releases are taken over; one taken twice carries
    /// the same release id and its gateway delivers it once.
    pub fn claim_stale_pending(&self, now: u64, lease: u64) -> Result<Vec<PendingDelivery>> {
        let before = i(now.saturating_sub(lease));
        self.write(|tx| {
            let rows = tx.query(
                "UPDATE messages SET finished_at = $2
                 WHERE id IN (SELECT id FROM messages WHERE state = 1 AND finished_at <= $1
                              ORDER BY finished_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
                 RETURNING id, gateway",
                &[&before, &i(now), &(BATCH as i64)],
            )?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let id = u(r.get(0));
                if let Some(rec) = load_record(tx, id, false)? {
                    out.push(PendingDelivery {
                        msg_id: id,
                        gateway: r.get(1),
                        gateway_mid: rec.gateway_mid,
                        early_release_actions: semantics::deliver_actions(&rec.members),
                    });
                }
            }
            out.sort_by_key(|p| p.msg_id);
            Ok(out)
        })
    }

    fn reader(&self) -> Result<Reader<'_>> {
        let pooled = lock(&self.readers).pop();
        let conn = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => (self.connect)()?,
        };
        Ok(Reader {
            conn: Some(conn),
            pool: &self.readers,
        })
    }

    /// Runs `f` on the writer connection (reconnected first if it was closed), outside any
    /// transaction: for work that spans several (`copy`).
    pub(crate) fn with_session<R>(&self, f: impl FnOnce(&mut Client) -> Result<R>) -> Result<R> {
        let mut conn = lock(&self.writer);
        if conn.is_closed() {
            *conn = (self.connect)()?;
        }
        f(&mut conn)
    }

    fn write<R>(&self, mut f: impl FnMut(&mut Transaction<'_>) -> Result<R>) -> Result<R> {
        let mut conn = lock(&self.writer);
        if conn.is_closed() {
            *conn = (self.connect)()?;
        }
        let mut attempt = 0;
        loop {
            let r = (|| {
                let mut tx = conn.transaction()?;
                let r = f(&mut tx)?;
                tx.commit()?;
                Ok(r)
            })();
            match r {
                Err(e) if attempt < RETRIES && retryable(&e) => attempt += 1,
                other => return other,
            }
        }
    }

    // ---- quarantines ----

    pub fn quarantines(&self) -> Result<Vec<Quarantine>> {
        let mut r = self.reader()?;
        let rows = r.c().query(
            &format!("SELECT {Q_COLS} FROM quarantines ORDER BY id"),
            &[],
        )?;
        rows.iter().map(|r| Ok(q_from_row(r)?.0)).collect()
    }

    pub fn quarantine_by_name(&self, name: &str) -> Result<Quarantine> {
        find_quarantine(self.reader()?.c(), name)
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
            // Looked up first so a refused name consumes no id (as with SQLite); the
            // unique index on lower(name) still decides between two managers at once.
            if let Ok(existing) = find_quarantine(tx, name) {
                return Err(QuarantineError::QuarantineExists(existing.name));
            }
            let n = tx.execute(
                "INSERT INTO quarantines (name, builtin, retention_secs, default_action, exempt,
                                          early_release, access, created_at)
                 VALUES ($1, FALSE, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (lower(name)) DO NOTHING",
                &[
                    &name,
                    &i(settings.retention_secs),
                    &settings.default_action.as_str(),
                    &settings.exempt_from_free_up,
                    &json(&settings.early_release)?,
                    &json(&settings.access)?,
                    &i(now),
                ],
            )?;
            if n == 0 {
                let existing = find_quarantine(tx, name)?;
                return Err(QuarantineError::QuarantineExists(existing.name));
            }
            find_quarantine(tx, name)
        })
    }

    pub fn update_quarantine(
        &self,
        name: &str,
        settings: &QuarantineSettings,
    ) -> Result<Quarantine> {
        validate_settings(settings)?;
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE quarantines SET retention_secs = $2, default_action = $3, exempt = $4,
                                        early_release = $5, access = $6
                 WHERE lower(name) = lower($1)",
                &[
                    &name,
                    &i(settings.retention_secs),
                    &settings.default_action.as_str(),
                    &settings.exempt_from_free_up,
                    &json(&settings.early_release)?,
                    &json(&settings.access)?,
                ],
            )?;
            if n == 0 {
                return Err(QuarantineError::UnknownQuarantine(name.to_string()));
            }
            find_quarantine(tx, name)
        })
    }

    pub fn delete_quarantine(&self, name: &str, who: &str, now: u64) -> Result<QuarantineDeleted> {
        self.write(|tx| {
            // The quarantine row locked first: a concurrent insert into it or a second
            // delete waits.
            let row = tx.query_opt(
                &format!(
                    "SELECT {Q_COLS} FROM quarantines WHERE lower(name) = lower($1) FOR UPDATE"
                ),
                &[&name],
            )?;
            let Some(row) = row else {
                return Err(QuarantineError::UnknownQuarantine(name.to_string()));
            };
            let q = q_from_row(&row)?.0;
            if q.builtin {
                return Err(QuarantineError::BuiltinQuarantine(q.name));
            }
            let unclassified = Builtin::Unclassified.id();
            let held: Vec<(MsgId, i64)> = tx
                .query(
                    "SELECT msg_id, size FROM memberships
                     WHERE quarantine_id = $1 AND state = 0 ORDER BY msg_id",
                    &[&i(q.id)],
                )?
                .iter()
                .map(|r| (u(r.get(0)), r.get(1)))
                .collect();
            for (msg_id, size) in &held {
                tx.execute(
                    "SELECT 1 FROM messages WHERE id = $1 FOR UPDATE",
                    &[&i(*msg_id)],
                )?;
                let existing: Option<i64> = tx
                    .query_opt(
                        "SELECT state FROM memberships WHERE msg_id = $1 AND quarantine_id = $2",
                        &[&i(*msg_id), &i(unclassified)],
                    )?
                    .map(|r| r.get(0));
                match existing {
                    Some(0) => {
                        tx.execute(
                            "DELETE FROM memberships WHERE msg_id = $1 AND quarantine_id = $2",
                            &[&i(*msg_id), &i(q.id)],
                        )?;
                    }
                    other => {
                        if other.is_some() {
                            tx.execute(
                                "DELETE FROM memberships WHERE msg_id = $1 AND quarantine_id = $2",
                                &[&i(*msg_id), &i(unclassified)],
                            )?;
                        }
                        tx.execute(
                            "UPDATE memberships SET quarantine_id = $3
                             WHERE msg_id = $1 AND quarantine_id = $2",
                            &[&i(*msg_id), &i(q.id), &i(unclassified)],
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
                "DELETE FROM memberships WHERE quarantine_id = $1",
                &[&i(q.id)],
            )?;
            tx.execute("DELETE FROM quarantines WHERE id = $1", &[&i(q.id)])?;
            Ok(QuarantineDeleted {
                name: q.name.clone(),
                moved_to_unclassified: held.iter().map(|(m, _)| *m).collect(),
            })
        })
    }

    pub fn set_quota(&self, quota_bytes: Option<u64>) -> Result<()> {
        self.write(|tx| {
            match quota_bytes {
                Some(q) => tx.execute(
                    "INSERT INTO store_meta (key, value) VALUES ('quota_bytes', $1)
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&i(q)],
                )?,
                None => tx.execute("DELETE FROM store_meta WHERE key = 'quota_bytes'", &[])?,
            };
            Ok(())
        })
    }

    pub fn usage(&self) -> Result<Usage> {
        let mut r = self.reader()?;
        let mut tx = r.snapshot()?;
        let rows = tx.query(
            &format!("SELECT {Q_COLS} FROM quarantines ORDER BY id"),
            &[],
        )?;
        let mut quarantines = Vec::new();
        for r in &rows {
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
        let usage = Usage {
            quarantines,
            total_messages: meta_value(&mut tx, "held_messages")?.unwrap_or(0),
            total_bytes: meta_value(&mut tx, "held_bytes")?.unwrap_or(0),
            quota_bytes: meta_value(&mut tx, "quota_bytes")?,
        };
        tx.commit()?;
        Ok(usage)
    }

    // ---- messages ----

    /// Stores a batch in one transaction, as `SqliteStore::insert`.
    pub fn insert(&self, msgs: &[NewMessage], now: u64) -> Result<Vec<Result<Inserted>>> {
        self.write(|tx| {
            let names = quarantine_names(tx)?;
            let mut out = Vec::with_capacity(msgs.len());
            let mut deltas: Vec<(QuarantineId, i64, i64)> = Vec::new();
            let mut totals = (0i64, 0i64);
            for m in msgs {
                out.push(match validate_new(m) {
                    Ok(()) => {
                        let (ins, qids) = insert_one(tx, &names, m, now)?;
                        if ins.created {
                            let size = i(m.raw.len() as u64);
                            totals.0 += 1;
                            totals.1 += size;
                            for qid in qids {
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
            // Counter rows in id order: concurrent inserts lock them in the same order.
            deltas.sort_by_key(|d| d.0);
            for (qid, count, bytes) in deltas {
                add_counters(tx, qid, count, bytes)?;
            }
            if totals.0 != 0 {
                add_totals(tx, totals.0, totals.1)?;
            }
            let quota = meta_value(tx, "quota_bytes")?;
            let held = meta_value(tx, "held_bytes")?.unwrap_or(0);
            let over = quota.is_some_and(|q| held > q);
            for ins in out.iter_mut().flatten() {
                ins.over_quota = over;
            }
            Ok(out)
        })
    }

    pub(crate) fn transition(
        &self,
        items: &[(MsgId, Sel, Op)],
        now: u64,
    ) -> Result<Vec<(MsgId, Result<ActionReport>)>> {
        // Message rows locked in id order, so two processes acting on overlapping batches
        // wait for each other instead of deadlocking; results go back in input order.
        let mut order: Vec<usize> = (0..items.len()).collect();
        order.sort_by_key(|&k| items[k].0);
        self.write(|tx| {
            let mut out: Vec<Option<(MsgId, Result<ActionReport>)>> =
                (0..items.len()).map(|_| None).collect();
            for &k in &order {
                let (msg_id, sel, op) = &items[k];
                let Some(rec) = load_record(tx, *msg_id, true)? else {
                    out[k] = Some((*msg_id, Err(QuarantineError::UnknownMessage(*msg_id))));
                    continue;
                };
                out[k] = Some(match semantics::plan(&rec, sel, op, now) {
                    Ok(plan) => {
                        apply_plan(tx, &rec, &plan, now)?;
                        (*msg_id, Ok(plan.report))
                    }
                    Err(e) => (*msg_id, Err(e)),
                });
            }
            Ok(out.into_iter().flatten().collect())
        })
    }

    pub fn message_by_node_mid(&self, mid: u64) -> Result<Option<MsgId>> {
        Ok(self
            .reader()?
            .c()
            .query_opt(
                "SELECT id FROM messages WHERE node_mid = $1 AND state = 0
                 ORDER BY id DESC LIMIT 1",
                &[&i(mid)],
            )?
            .map(|r| u(r.get(0))))
    }

    pub fn message_by_key(&self, key: &str) -> Result<Option<MsgId>> {
        Ok(self
            .reader()?
            .c()
            .query_opt("SELECT id FROM messages WHERE idem_key = $1", &[&key])?
            .map(|r| u(r.get(0))))
    }

    pub fn message(&self, msg_id: MsgId) -> Result<MessageInfo> {
        let mut r = self.reader()?;
        let mut tx = r.snapshot()?;
        let id = i(msg_id);
        let Some(head) = tx.query_opt(
            "SELECT idem_key, gateway, gateway_mid, sender, received, size, subject, meta,
                    state, delivery_ref
             FROM messages WHERE id = $1",
            &[&id],
        )?
        else {
            return Err(QuarantineError::UnknownMessage(msg_id));
        };
        let recipients: Vec<String> = tx
            .query(
                "SELECT addr FROM recipients WHERE msg_id = $1 ORDER BY pos",
                &[&id],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let attachments: Vec<Attachment> = tx
            .query(
                "SELECT name, size FROM attachments WHERE msg_id = $1 ORDER BY pos",
                &[&id],
            )?
            .iter()
            .map(|r| Attachment {
                name: r.get(0),
                size: u(r.get(1)),
            })
            .collect();
        let rows = tx.query(
            "SELECT q.name, b.reason_kind, b.reason_name, b.details, b.entered_at, b.exit_at,
                    b.state, b.left_at, b.left_by, b.cause, b.early
             FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
             WHERE b.msg_id = $1 ORDER BY b.id",
            &[&id],
        )?;
        let mut memberships = Vec::new();
        for r in &rows {
            let cause: Option<String> = r.get(9);
            memberships.push(Membership {
                quarantine: r.get(0),
                reason: reason_parse(r.get(1), r.get(2))?,
                details: from_json(r.get(3), "details")?,
                entered_at: u(r.get(4)),
                exit_at: u(r.get(5)),
                state: membership_state(r.get(6))?,
                left_at: r.get::<_, Option<i64>>(7).map(u),
                left_by: r.get(8),
                cause: cause.as_deref().and_then(Cause::parse),
                released_early: r.get(10),
            });
        }
        tx.commit()?;
        Ok(MessageInfo {
            msg_id,
            idempotency_key: head.get(0),
            gateway: head.get(1),
            gateway_mid: u(head.get(2)),
            sender: head.get(3),
            recipients,
            received: u(head.get(4)),
            size: u(head.get(5)),
            subject: head.get(6),
            attachments,
            meta: from_json(head.get(7), "meta")?,
            state: message_state(head.get(8))?,
            memberships,
            delivery_ref: head.get(9),
        })
    }

    pub fn raw(&self, msg_id: MsgId) -> Result<Vec<u8>> {
        raw_in(self.reader()?.c(), msg_id)
    }

    pub fn history(&self, msg_id: MsgId) -> Result<Vec<HistoryEntry>> {
        let rows = self.reader()?.c().query(
            "SELECT at, who, action, quarantine, detail FROM history
             WHERE msg_id = $1 ORDER BY id",
            &[&i(msg_id)],
        )?;
        Ok(rows
            .iter()
            .map(|r| HistoryEntry {
                at: u(r.get(0)),
                who: r.get(1),
                action: r.get(2),
                quarantine: r.get(3),
                detail: r.get(4),
            })
            .collect())
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
            let raw = raw_in(tx, msg_id)?;
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

    pub fn confirm_delivery(&self, msg_id: MsgId, delivery_ref: &str, now: u64) -> Result<bool> {
        self.write(|tx| confirm_one(tx, msg_id, delivery_ref, now))
    }

    pub fn confirm_deliveries(
        &self,
        items: &[(MsgId, String)],
        now: u64,
    ) -> Result<Vec<Result<bool>>> {
        self.write(|tx| {
            let mut out = Vec::with_capacity(items.len());
            for (id, r) in items {
                out.push(match confirm_one(tx, *id, r, now) {
                    Err(e @ (QuarantineError::Pg(_) | QuarantineError::Corrupt(_))) => {
                        return Err(e)
                    }
                    other => other,
                });
            }
            Ok(out)
        })
    }

    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>> {
        let mut r = self.reader()?;
        let mut tx = r.snapshot()?;
        let ids: Vec<(MsgId, String)> = tx
            .query(
                "SELECT id, gateway FROM messages WHERE state = 1 ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| (u(r.get(0)), r.get(1)))
            .collect();
        let mut out = Vec::new();
        for (id, gateway) in ids {
            if let Some(rec) = load_record(&mut tx, id, false)? {
                out.push(PendingDelivery {
                    msg_id: id,
                    gateway,
                    gateway_mid: rec.gateway_mid,
                    early_release_actions: semantics::deliver_actions(&rec.members),
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    pub fn held_ids(&self, after: MsgId, limit: usize) -> Result<Vec<MsgId>> {
        Ok(self
            .reader()?
            .c()
            .query(
                "SELECT id FROM messages WHERE state = 0 AND id > $1 ORDER BY id LIMIT $2",
                &[&i(after), &(limit as i64)],
            )?
            .iter()
            .map(|r| u(r.get(0)))
            .collect())
    }

    pub fn mark_migrated(&self, items: &[(MsgId, String)], now: u64) -> Result<Vec<bool>> {
        self.write(|tx| {
            items
                .iter()
                .map(|(id, r)| migrate_one(tx, *id, r, now))
                .collect()
        })
    }

    pub fn migrated_since(&self, since: u64) -> Result<u64> {
        let n: i64 = self
            .reader()?
            .c()
            .query_one(
                "SELECT count(*) FROM messages WHERE state = $1 AND finished_at >= $2",
                &[&MessageState::Migrated.code(), &i(since)],
            )?
            .get(0);
        Ok(u(n))
    }

    /// Removes messages deleted or delivered before `before`, with their history; bytes
    /// still referenced only by them go too.
    pub fn purge_finished(&self, before: u64) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self.write(|tx| {
                let ids: Vec<i64> = tx
                    .query(
                        "SELECT id FROM messages
                         WHERE state IN (2, 3) AND finished_at < $1
                         ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
                        &[&i(before), &(BATCH as i64)],
                    )?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                for id in &ids {
                    drop_body(tx, u(*id))?;
                    tx.execute("DELETE FROM messages WHERE id = $1", &[id])?;
                }
                Ok(ids.len() as u64)
            })?;
            total += n;
            if n < BATCH as u64 {
                break;
            }
        }
        Ok(total)
    }

    // ---- candidates for the store layer ----

    pub(crate) fn due(&self, now: u64, limit: usize) -> Result<Vec<(MsgId, QuarantineId)>> {
        Ok(self
            .reader()?
            .c()
            .query(
                "SELECT msg_id, quarantine_id FROM memberships
                 WHERE state = 0 AND exit_at <= $1 ORDER BY exit_at, msg_id LIMIT $2",
                &[&i(now), &(limit as i64)],
            )?
            .iter()
            .map(|r| (u(r.get(0)), u(r.get(1))))
            .collect())
    }

    pub(crate) fn free_candidates(&self, limit: usize) -> Result<Vec<(MsgId, QuarantineId, u64)>> {
        Ok(self
            .reader()?
            .c()
            .query(
                "SELECT b.msg_id, b.quarantine_id, b.size
                 FROM memberships b JOIN quarantines q ON q.id = b.quarantine_id
                 WHERE b.state = 0 AND NOT q.exempt
                 ORDER BY b.entered_at, b.msg_id LIMIT $1",
                &[&(limit as i64)],
            )?
            .iter()
            .map(|r| (u(r.get(0)), u(r.get(1)), u(r.get(2))))
            .collect())
    }

    pub(crate) fn rule_members(&self, rule: &str) -> Result<Vec<MsgId>> {
        Ok(self
            .reader()?
            .c()
            .query(
                "SELECT DISTINCT msg_id FROM memberships
                 WHERE state = 0 AND lower(reason_name) = lower($1) AND reason_kind = $2
                 ORDER BY msg_id",
                &[&rule, &ReasonKind::Outbreak.as_str()],
            )?
            .iter()
            .map(|r| u(r.get(0)))
            .collect())
    }

    pub(crate) fn held_totals(&self) -> Result<(u64, Option<u64>)> {
        let mut r = self.reader()?;
        let c = r.c();
        Ok((
            meta_value(c, "held_bytes")?.unwrap_or(0),
            meta_value(c, "quota_bytes")?,
        ))
    }

    pub fn search(&self, q: &SearchQuery) -> Result<SearchPage> {
        let mut r = self.reader()?;
        let mut tx = r.snapshot()?;
        let page = search::search(&mut tx, q)?;
        tx.commit()?;
        Ok(page)
    }

    pub fn search_ids(&self, q: &SearchQuery) -> Result<Vec<MsgId>> {
        let mut r = self.reader()?;
        let mut tx = r.snapshot()?;
        let ids = search::search_ids(&mut tx, q)?;
        tx.commit()?;
        Ok(ids)
    }

    /// Planner statistics: PostgreSQL's autovacuum keeps them current, nothing to do.
    pub fn optimize(&self) -> Result<()> {
        Ok(())
    }
}

fn raw_in(c: &mut impl GenericClient, msg_id: MsgId) -> Result<Vec<u8>> {
    let row = c.query_opt(
        "SELECT b.raw FROM messages m LEFT JOIN bodies b ON b.hash = m.body_hash
         WHERE m.id = $1",
        &[&i(msg_id)],
    )?;
    match row {
        None => Err(QuarantineError::UnknownMessage(msg_id)),
        Some(r) => r
            .get::<_, Option<Vec<u8>>>(0)
            .ok_or(QuarantineError::BodyGone(msg_id)),
    }
}

/// Stores one message (or finds it by its transfer id). Returns the quarantine ids it
/// was put in (for the counters) when created.
fn insert_one(
    tx: &mut Transaction<'_>,
    names: &[(QuarantineId, String, u64)],
    m: &NewMessage,
    now: u64,
) -> Result<(Inserted, Vec<QuarantineId>)> {
    let existing = |tx: &mut Transaction<'_>| -> Result<Option<(Inserted, Vec<QuarantineId>)>> {
        let Some(row) = tx.query_opt(
            "SELECT id FROM messages WHERE idem_key = $1",
            &[&m.idempotency_key],
        )?
        else {
            return Ok(None);
        };
        let id = u(row.get(0));
        Ok(Some((
            Inserted {
                msg_id: id,
                created: false,
                held_in: held_in(tx, id)?,
                over_quota: false,
            },
            Vec::new(),
        )))
    };
    if let Some(found) = existing(tx)? {
        return Ok(found);
    }
    let mut holds: Vec<(QuarantineId, &str, u64, &crate::model::Hold)> = Vec::new();
    for h in &m.holds {
        let (qid, qname, retention) = names
            .iter()
            .find(|(_, n, _)| n.to_lowercase() == h.quarantine.to_lowercase())
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
    let next_exit = holds.iter().map(|(_, _, e, _)| *e).min().map(i);
    let hash = Sha256::digest(&m.raw).to_vec();
    let node_mid = m.meta.get("mid").and_then(|v| v.as_u64()).map(i);
    let att_names: Vec<&str> = m.attachments.iter().map(|a| a.name.as_str()).collect();
    let params: [&(dyn ToSql + Sync); 15] = [
        &pg_text(&m.idempotency_key),
        &pg_text(&m.gateway),
        &i(m.gateway_mid),
        &node_mid,
        &pg_text(&m.sender),
        &pg_text(&m.sender.to_lowercase()),
        &pg_text(&domain_of(&m.sender)),
        &i(m.received),
        &i(size),
        &pg_text(&m.subject),
        &words(&m.subject),
        &words(&att_names.join(" ")),
        &json(&m.meta)?,
        &next_exit,
        &i(now),
    ];
    // Of two processes storing one transfer at once, one inserts; the other waits for it
    // to commit, finds the conflict and answers with the stored message.
    let row = tx.query_opt(
        "INSERT INTO messages (idem_key, gateway, gateway_mid, node_mid, sender, sender_lc,
                               sender_domain, received, size, subject, subject_words,
                               attach_words, meta, state, next_exit, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 0, $14, $15)
         ON CONFLICT (idem_key) DO NOTHING
         RETURNING id",
        &params,
    )?;
    let Some(row) = row else {
        return existing(tx)?
            .ok_or_else(|| QuarantineError::Corrupt("transfer id conflict without a row".into()));
    };
    let msg_id: i64 = row.get(0);
    tx.execute(
        "INSERT INTO bodies (hash, raw, refs) VALUES ($1, $2, 1)
         ON CONFLICT (hash) DO UPDATE SET refs = bodies.refs + 1",
        &[&hash, &m.raw],
    )?;
    tx.execute(
        "UPDATE messages SET body_hash = $2 WHERE id = $1",
        &[&msg_id, &hash],
    )?;
    let mut seen: Vec<String> = Vec::new();
    for r in &m.recipients {
        let r = &pg_text(r);
        let lc = r.to_lowercase();
        if seen.contains(&lc) {
            continue;
        }
        tx.execute(
            "INSERT INTO recipients (msg_id, pos, addr, addr_lc, domain)
             VALUES ($1, $2, $3, $4, $5)",
            &[&msg_id, &(seen.len() as i64), r, &lc, &domain_of(r)],
        )?;
        seen.push(lc);
    }
    for (pos, a) in m.attachments.iter().enumerate() {
        tx.execute(
            "INSERT INTO attachments (msg_id, pos, name, size) VALUES ($1, $2, $3, $4)",
            &[&msg_id, &(pos as i64), &pg_text(&a.name), &i(a.size)],
        )?;
    }
    let mut out = Vec::new();
    for (qid, qname, exit, h) in &holds {
        tx.execute(
            "INSERT INTO memberships (msg_id, quarantine_id, reason_kind, reason_name, details,
                                      entered_at, exit_at, state, received, size)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $9)",
            &[
                &msg_id,
                &i(*qid),
                &h.reason.kind.as_str(),
                &pg_text(&h.reason.name),
                &json(&h.details)?,
                &i(now),
                &i(*exit),
                &i(m.received),
                &i(size),
            ],
        )?;
        add_history(
            tx,
            u(msg_id),
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
    Ok((
        Inserted {
            msg_id: u(msg_id),
            created: true,
            held_in: out,
            over_quota: false,
        },
        holds.iter().map(|(q, ..)| *q).collect(),
    ))
}

fn migrate_one(
    tx: &mut Transaction<'_>,
    msg_id: MsgId,
    transfer_ref: &str,
    now: u64,
) -> Result<bool> {
    let Some(rec) = load_record(tx, msg_id, true)? else {
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
        let n = tx.execute(
            "UPDATE memberships SET state = $3, left_at = $4, left_by = 'system', cause = $5
             WHERE msg_id = $1 AND quarantine_id = $2 AND state = 0",
            &[
                &i(msg_id),
                &i(m.quarantine_id),
                &MembershipState::Migrated.code(),
                &i(now),
                &Cause::Migrated.as_str(),
            ],
        )?;
        if n == 1 {
            add_counters(tx, m.quarantine_id, -1, -size)?;
        }
    }
    tx.execute(
        "UPDATE messages SET state = $2, delivery_ref = $3, finished_at = $4, next_exit = NULL
         WHERE id = $1",
        &[
            &i(msg_id),
            &MessageState::Migrated.code(),
            &transfer_ref,
            &i(now),
        ],
    )?;
    add_totals(tx, -1, -size)?;
    drop_body(tx, msg_id)?;
    add_history(tx, msg_id, now, "system", "migrated", None, transfer_ref)?;
    Ok(true)
}

fn confirm_one(
    tx: &mut Transaction<'_>,
    msg_id: MsgId,
    delivery_ref: &str,
    now: u64,
) -> Result<bool> {
    let state: Option<i64> = tx
        .query_opt(
            "SELECT state FROM messages WHERE id = $1 FOR UPDATE",
            &[&i(msg_id)],
        )?
        .map(|r| r.get(0));
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
        "UPDATE messages SET state = $2, delivery_ref = $3, finished_at = $4 WHERE id = $1",
        &[
            &i(msg_id),
            &MessageState::Delivered.code(),
            &delivery_ref,
            &i(now),
        ],
    )?;
    drop_body(tx, msg_id)?;
    add_history(tx, msg_id, now, "system", "delivered", None, delivery_ref)?;
    Ok(true)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn words_fold_case_and_diacritics_and_split_on_punctuation() {
        assert_eq!(words("Résumé attached"), " resume attached ");
        assert_eq!(
            words("invoice_2024.pdf cv.docx"),
            " invoice 2024 pdf cv docx "
        );
        assert_eq!(words("%_\\ 'x'"), " x ");
        assert_eq!(words(""), " ");
    }

    #[test]
    fn no_tls_only_on_a_socket_or_loopback() {
        let ok = |u: &str| local_only(&postgres::Config::from_str(u).unwrap());
        assert!(ok("host=/tmp/pg port=5432 user=pvo"));
        assert!(ok("postgresql://pvo@localhost/db"));
        assert!(ok("postgresql://pvo@127.0.0.1:5433/db"));
        assert!(ok("host=::1 user=pvo"));
        assert!(!ok("postgresql://pvo@db.example.com/db"));
        assert!(!ok("postgresql://pvo@10.0.0.5/db"));
        assert!(!ok("host=localhost,db.example.com user=pvo"));
        assert!(!ok("host=localhost hostaddr=10.0.0.5 user=pvo"));
        assert!(matches!(
            PgStore::open_local("postgresql://pvo@db.example.com/db", 0),
            Err(QuarantineError::Invalid(_))
        ));
    }
}
