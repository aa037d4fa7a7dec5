//! Store tests of the SQLite backend: every backend-independent test of `testkit` on a
//! fresh database file, and the SQLite-specific ones (file migrations, a full disk).

use tempfile::TempDir;

use crate::testkit::{self, *};
use crate::*;

/// A database file in a temporary directory (`fresh`: further files beside it).
struct Sqlite(TempDir, std::sync::atomic::AtomicUsize);

impl Env for Sqlite {
    fn open(&self, now: u64) -> Store {
        Store::open_sqlite(&self.0.path().join("q.db"), now).unwrap()
    }

    fn fresh(&self, now: u64) -> Store {
        let n = self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Store::open_sqlite(&self.0.path().join(format!("fresh{n}.db")), now).unwrap()
    }
}

fn open() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open_sqlite(&dir.path().join("q.db"), T0).unwrap();
    (dir, store)
}

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                testkit::$name(&Sqlite(TempDir::new().unwrap(), Default::default()));
            }
        )*
    };
}

crate::for_each_store_test!(on_sqlite);

#[test]
fn migrations_from_empty_and_reopen() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("q.db");
    // Version 1 only, with a message written by that version.
    drop(SqliteStore::open_at_version(&path, 1, T0).unwrap());
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "INSERT INTO messages (id, idem_key, gateway, gateway_mid, sender, sender_lc,
                 sender_domain, received, size, subject, meta, state, next_exit, created_at)
             VALUES (1, 'old', 'gw', 1, 'a@b', 'a@b', 'b', 5, 3, 'Quarterly report', '{}', 0, 9, 5);
             INSERT INTO memberships (msg_id, quarantine_id, reason_kind, reason_name, details,
                 entered_at, exit_at, state, received, size)
             VALUES (1, 1, 'content filter', 'f', '{}', 5, 9, 0, 5, 3);
             INSERT INTO attachments (msg_id, pos, name, size) VALUES (1, 0, 'budget.xlsx', 10);",
        )
        .unwrap();
    }
    let s = Store::open_sqlite(&path, T0 + 1).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    // Every commit is fsynced (FULL = 2), in WAL mode.
    let Store::Sqlite(inner) = &s else {
        panic!("a SQLite store")
    };
    let sync: i64 = inner
        .with_writer(|c| c.query_row("PRAGMA synchronous", [], |r| r.get(0)))
        .unwrap();
    assert_eq!(sync, 2);
    let by_words = |subject: Option<&str>, att: Option<&str>| {
        s.search(&SearchQuery {
            subject: subject.map(str::to_string),
            attachment_name: att.map(str::to_string),
            ..Default::default()
        })
        .unwrap()
        .total
    };
    assert_eq!(
        by_words(Some("quarterly"), None),
        1,
        "FTS filled by migration 2"
    );
    assert_eq!(by_words(None, Some("budget")), 1);
    drop(s);
    // Reopening applies nothing again.
    let s = Store::open_sqlite(&path, T0 + 2).unwrap();
    assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
    drop(s);
    let c = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(i64, i64)> = c
        .prepare("SELECT version, applied_at FROM schema_version ORDER BY version")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(
        rows,
        [(1, T0 as i64), (2, T0 as i64 + 1), (3, T0 as i64 + 1)]
    );
    let (journal, vacuum): (String, i64) = (
        c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap(),
        c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap(),
    );
    assert_eq!((journal.as_str(), vacuum), ("wal", 2));
    // A database from a newer PVO is refused.
    c.execute("INSERT INTO schema_version VALUES (99, 0)", [])
        .unwrap();
    drop(c);
    assert!(matches!(
        Store::open_sqlite(&path, T0),
        Err(QuarantineError::SchemaTooNew { found: 99, .. })
    ));
}
#[test]
fn full_disk_is_reported_and_stores_nothing() {
    let (_d, s) = open();
    let Store::Sqlite(inner) = &s else {
        panic!("a SQLite store")
    };
    // SQLITE_FULL without filling a disk: cap the database at its current size.
    inner
        .with_writer(|c| {
            let pages: i64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
            c.execute_batch(&format!("PRAGMA max_page_count = {}", pages + 2))
        })
        .unwrap();
    let mut big = msg("big", vec![hold("Policy")]);
    big.raw = vec![b'x'; 256 * 1024];
    let err = s.quarantine(&big, T0).unwrap_err();
    assert!(err.is_no_space() && err.is_temporary(), "{err:?}");
    let u = s.usage().unwrap();
    assert_eq!((u.total_messages, u.total_bytes), (0, 0));
    assert!(s.search(&SearchQuery::default()).unwrap().hits.is_empty());
}
