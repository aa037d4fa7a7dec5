//! The audit trail: who did what to which message or setting, when and from where.
//!
//! Every view of a quarantined message, every action on one (release, delete, delay,
//! move, copy, manage by rule), every change of settings or users and every commit, every
//! refusal and every failed login is one entry: unix time, user, role, origin (`local`,
//! `ssh ADDRESS`), action, the command, the quarantine, the MIDs, the outcome and a short
//! detail. `pvo auditlog` searches it.
//!
//! The store is `DATA_DIR/audit.db`, SQLite in WAL mode with `synchronous = FULL`, so an
//! entry is on disk before the command's answer is sent. It is append-only: the code has
//! no update or delete, and triggers refuse them, so an entry cannot be changed through
//! SQL either without dropping the triggers first. MIDs are a table of their own with an
//! index, so "everything done to MID 482" is an index lookup; user, action and time are
//! indexed too. It is separate from `mail_logs`, which keeps the appliance's format.

use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rusqlite::{params, params_from_iter, types::Value, Connection};
use serde::Serialize;

/// One entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub at: u64,
    pub user: String,
    pub role: String,
    pub from: String,
    pub action: String,
    pub command: String,
    pub quarantine: Option<String>,
    pub mids: Vec<u64>,
    /// `ok`, `error`, `refused` or `failed` (logins).
    pub outcome: String,
    pub detail: String,
}

/// What `pvo auditlog` asks for; every filter is optional.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub user: Option<String>,
    pub action: Option<String>,
    pub mid: Option<u64>,
    pub since: Option<u64>,
    pub until: Option<u64>,
    pub limit: u64,
}

/// The audit store, shared by every task of the node.
#[derive(Clone)]
pub struct Audit {
    conn: Arc<Mutex<Connection>>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    user       TEXT NOT NULL COLLATE NOCASE,
    role       TEXT NOT NULL,
    origin     TEXT NOT NULL,
    action     TEXT NOT NULL COLLATE NOCASE,
    command    TEXT NOT NULL,
    quarantine TEXT,
    outcome    TEXT NOT NULL,
    detail     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_mids (
    audit_id INTEGER NOT NULL REFERENCES audit(id),
    mid      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_at ON audit(at);
CREATE INDEX IF NOT EXISTS audit_user ON audit(user, at);
CREATE INDEX IF NOT EXISTS audit_action ON audit(action, at);
CREATE INDEX IF NOT EXISTS audit_mids_mid ON audit_mids(mid);
CREATE INDEX IF NOT EXISTS audit_mids_entry ON audit_mids(audit_id);
CREATE TRIGGER IF NOT EXISTS audit_append_only_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_append_only_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_mids_append_only_update BEFORE UPDATE ON audit_mids
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_mids_append_only_delete BEFORE DELETE ON audit_mids
    BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END;
";

impl Audit {
    /// Opens (or creates) `DATA_DIR/audit.db`.
    pub fn open(data_dir: &Path) -> Result<Audit> {
        let path = data_dir.join("audit.db");
        let conn =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        // The first statement touches the disk (WAL, its shared-memory index): on a full
        // disk this is where SQLite fails, and its message names no file.
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "synchronous", "FULL"))
            .with_context(|| format!("opening {} in WAL mode", path.display()))?;
        conn.execute_batch(SCHEMA)
            .with_context(|| format!("creating the audit tables in {}", path.display()))?;
        Ok(Audit {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Appends one entry (durable on return). `id` and `at` of `e` are ignored when 0:
    /// `at` then is now.
    pub fn append(&self, e: &Entry) -> Result<i64> {
        let mut conn = self.conn.lock().unwrap();
        let tx = conn.transaction()?;
        let at = if e.at == 0 {
            crate::core::clock::unix_now()
        } else {
            e.at
        };
        tx.execute(
            "INSERT INTO audit (at, user, role, origin, action, command, quarantine, outcome, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                at as i64,
                e.user,
                e.role,
                e.from,
                e.action,
                e.command,
                e.quarantine,
                e.outcome,
                e.detail
            ],
        )?;
        let id = tx.last_insert_rowid();
        {
            let mut ins =
                tx.prepare_cached("INSERT INTO audit_mids (audit_id, mid) VALUES (?1, ?2)")?;
            for m in &e.mids {
                ins.execute(params![id, *m as i64])?;
            }
        }
        tx.commit()?;
        Ok(id)
    }

    /// Appends on the blocking pool; a failure is logged, never lost silently.
    pub async fn record(&self, e: Entry, log: &crate::core::mail_log::MailLog) {
        let me = self.clone();
        let what = format!("{} by {}", e.action, e.user);
        let r = tokio::task::spawn_blocking(move || me.append(&e)).await;
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => log.emit(crate::core::events::Event::AuditNotRecorded {
                what: &what,
                error: &err,
            }),
            Err(err) => log.emit(crate::core::events::Event::AuditNotRecorded {
                what: &what,
                error: &err,
            }),
        }
    }

    /// The newest entries matching `q`, newest first.
    pub fn search(&self, q: &Query) -> Result<Vec<Entry>> {
        let conn = self.conn.lock().unwrap();
        let mut conds: Vec<&str> = Vec::new();
        let mut p: Vec<Value> = Vec::new();
        if let Some(u) = &q.user {
            conds.push("a.user = ?");
            p.push(Value::Text(u.clone()));
        }
        if let Some(a) = &q.action {
            conds.push("a.action = ?");
            p.push(Value::Text(a.clone()));
        }
        if let Some(m) = q.mid {
            conds.push("a.id IN (SELECT audit_id FROM audit_mids WHERE mid = ?)");
            p.push(Value::Integer(m as i64));
        }
        if let Some(s) = q.since {
            conds.push("a.at >= ?");
            p.push(Value::Integer(s as i64));
        }
        if let Some(s) = q.until {
            conds.push("a.at <= ?");
            p.push(Value::Integer(s as i64));
        }
        let wh = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        p.push(Value::Integer(q.limit.clamp(1, 100_000) as i64));
        let sql = format!(
            "SELECT a.id, a.at, a.user, a.role, a.origin, a.action, a.command, a.quarantine, a.outcome, a.detail
             FROM audit a {wh} ORDER BY a.id DESC LIMIT ?"
        );
        let mut stmt = conn.prepare(&sql)?;
        let mut entries = stmt
            .query_map(params_from_iter(p), |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    at: r.get::<_, i64>(1)? as u64,
                    user: r.get(2)?,
                    role: r.get(3)?,
                    from: r.get(4)?,
                    action: r.get(5)?,
                    command: r.get(6)?,
                    quarantine: r.get(7)?,
                    mids: Vec::new(),
                    outcome: r.get(8)?,
                    detail: r.get(9)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut mids =
            conn.prepare_cached("SELECT mid FROM audit_mids WHERE audit_id = ?1 ORDER BY rowid")?;
        for e in &mut entries {
            e.mids = mids
                .query_map([e.id], |r| r.get::<_, i64>(0).map(|m| m as u64))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(user: &str, action: &str, mids: &[u64], at: u64) -> Entry {
        Entry {
            id: 0,
            at,
            user: user.into(),
            role: "Administrator".into(),
            from: "local".into(),
            action: action.into(),
            command: format!("quarantine {action}"),
            quarantine: Some("Policy".into()),
            mids: mids.to_vec(),
            outcome: "ok".into(),
            detail: String::new(),
        }
    }

    #[test]
    fn append_search_and_refuse_changes() {
        let dir = tempfile::tempdir().unwrap();
        let a = Audit::open(dir.path()).unwrap();
        a.append(&entry("admin", "view", &[482], 100)).unwrap();
        a.append(&entry("bob", "release", &[482, 483], 200))
            .unwrap();
        a.append(&entry("admin", "commit", &[], 300)).unwrap();
        let all = a
            .search(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(
            all.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
            ["commit", "release", "view"]
        );
        let by_mid = a
            .search(&Query {
                mid: Some(483),
                limit: 10,
                ..Query::default()
            })
            .unwrap();
        assert_eq!(by_mid.len(), 1);
        assert_eq!(by_mid[0].mids, vec![482, 483]);
        assert_eq!(by_mid[0].user, "bob");
        let q = Query {
            user: Some("ADMIN".into()),
            since: Some(150),
            limit: 10,
            ..Query::default()
        };
        assert_eq!(a.search(&q).unwrap().len(), 1);
        let q = Query {
            action: Some("view".into()),
            mid: Some(482),
            limit: 10,
            ..Query::default()
        };
        assert_eq!(a.search(&q).unwrap().len(), 1);
        // Append-only, even through SQL.
        let conn = a.conn.lock().unwrap();
        let err = conn.execute("DELETE FROM audit", []).unwrap_err();
        assert!(err.to_string().contains("append-only"), "{err}");
        assert!(conn.execute("UPDATE audit SET user = 'x'", []).is_err());
        assert!(conn.execute("DELETE FROM audit_mids", []).is_err());
        drop(conn);
        // Survives a reopen.
        drop(a);
        let a = Audit::open(dir.path()).unwrap();
        assert_eq!(
            a.search(&Query {
                limit: 10,
                ..Query::default()
            })
            .unwrap()
            .len(),
            3
        );
    }
}
