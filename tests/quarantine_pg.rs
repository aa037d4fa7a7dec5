//! The quarantine store on PostgreSQL: every backend-independent store test of
//! `pvo_quarantine::testkit` (the same list the crate's SQLite unit tests run), each on a
//! database of its own on one private server, and the tests only PostgreSQL needs: two
//! managers migrating one database at once, and two stores on one database releasing the
//! same messages at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use pvo_quarantine::testkit::{self, hold, msg, put, Env, T0};
use pvo_quarantine::{
    Action, Actor, Builtin, Outcome, QuarantineError, Scope, SearchQuery, Store, PG_SCHEMA_VERSION,
};

use crate::support::Postgres;

/// One test's database on the shared server; `fresh` makes further ones.
struct Pg<'a> {
    pg: &'a Postgres,
    name: String,
    url: String,
    more: AtomicUsize,
}

impl<'a> Pg<'a> {
    fn new(pg: &'a Postgres, name: &str) -> Pg<'a> {
        Pg {
            pg,
            name: name.to_string(),
            url: testkit::create_database(&pg.url(), name),
            more: AtomicUsize::new(0),
        }
    }
}

impl Env for Pg<'_> {
    fn open(&self, now: u64) -> Store {
        Store::open_postgres(&self.url, now).unwrap()
    }

    fn fresh(&self, now: u64) -> Store {
        let n = self.more.fetch_add(1, Ordering::Relaxed);
        let url = testkit::create_database(&self.pg.url(), &format!("{}_{n}", self.name));
        Store::open_postgres(&url, now).unwrap()
    }
}

/// Runs every listed test in turn (one server start for all of them), each in a database
/// of its own, and fails naming every test that failed.
macro_rules! on_postgres {
    ($($name:ident),* $(,)?) => {
        #[test]
        fn every_store_test_on_postgres() {
            let pg = Postgres::start();
            let mut failed: Vec<&str> = Vec::new();
            $(
                let env = Pg::new(&pg, stringify!($name));
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    testkit::$name(&env)
                }))
                .is_err()
                {
                    failed.push(stringify!($name));
                }
            )*
            assert!(failed.is_empty(), "failed on PostgreSQL: {failed:?}");
        }
    };
}

pvo_quarantine::for_each_store_test!(on_postgres);

#[test]
fn two_managers_starting_together_migrate_once() {
    let pg = Postgres::start();
    let url = testkit::create_database(&pg.url(), "q");
    let barrier = Arc::new(Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let (url, barrier) = (url.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                Store::open_postgres(&url, T0).unwrap()
            })
        })
        .collect();
    let stores: Vec<Store> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for s in &stores {
        assert_eq!(s.schema_version().unwrap(), PG_SCHEMA_VERSION);
    }
    // Built-ins seeded once: four quarantines, not sixteen.
    assert_eq!(stores[0].quarantines().unwrap().len(), 4);
    // What one writes, the others see.
    let id = put(&stores[1], "k", vec![hold("Policy")]);
    assert_eq!(stores[2].message_by_key("k").unwrap(), Some(id));
}

#[test]
fn two_stores_releasing_the_same_messages_deliver_each_once() {
    let pg = Postgres::start();
    let url = testkit::create_database(&pg.url(), "q");
    let a = Arc::new(Store::open_postgres(&url, T0).unwrap());
    let b = Arc::new(Store::open_postgres(&url, T0).unwrap());
    let ids: Vec<u64> = (0..30)
        .map(|n| put(&a, &format!("k{n}"), vec![hold("Policy"), hold("Virus")]))
        .collect();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(t, s)| {
            let (ids, barrier) = (ids.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                // Whole batches in opposite orders: the row locks must not deadlock.
                let mut ids = ids;
                if t == 1 {
                    ids.reverse();
                }
                let r = s
                    .bulk(
                        &ids,
                        &Scope::All,
                        &Action::Release,
                        &Actor::manual(format!("admin{t}")),
                        T0,
                    )
                    .unwrap();
                r.into_iter()
                    .filter(|(_, r)| matches!(r.as_ref().unwrap().outcome, Outcome::Deliver { .. }))
                    .map(|(id, _)| id)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut delivered: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    delivered.sort_unstable();
    assert_eq!(delivered, ids, "each message delivered exactly once");
    let u = b.usage().unwrap();
    assert_eq!((u.total_messages, u.total_bytes), (0, 0));
}

#[test]
fn one_transfer_stored_once_by_two_stores_at_once() {
    let pg = Postgres::start();
    let url = testkit::create_database(&pg.url(), "q");
    let stores: Vec<Arc<Store>> = (0..2)
        .map(|_| Arc::new(Store::open_postgres(&url, T0).unwrap()))
        .collect();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                (0..20)
                    .map(|n| {
                        s.quarantine(&msg(&format!("t{n}"), vec![hold("Policy")]), T0)
                            .unwrap()
                            .created
                    })
                    .filter(|c| *c)
                    .count()
            })
        })
        .collect();
    let created: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(created, 20);
    let u = stores[0].usage().unwrap();
    assert_eq!(u.total_messages, 20);
    assert_eq!(u.total_bytes, 20 * testkit::RAW.len() as u64);
}

#[test]
fn identical_bytes_are_stored_once_and_go_with_the_last_message() {
    let pg = Postgres::start();
    let env = Pg::new(&pg, "q");
    let s = env.open(T0);
    let a = put(&s, "a", vec![hold("Policy")]);
    let b = put(&s, "b", vec![hold("Policy")]);
    let bodies = |url: &str| -> i64 {
        let mut c = postgres_client(url);
        c.query_one("SELECT count(*) FROM pvo_quarantine.bodies", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(bodies(&env.url), 1, "one copy of identical bytes");
    s.delete(a, "Policy", "x", T0).unwrap();
    assert!(matches!(s.raw(a), Err(QuarantineError::BodyGone(_))));
    assert_eq!(s.raw(b).unwrap(), testkit::RAW, "still referenced by b");
    assert_eq!(bodies(&env.url), 1);
    s.delete(b, "Policy", "x", T0).unwrap();
    assert_eq!(bodies(&env.url), 0, "gone with the last reference");
}

#[test]
fn a_nul_in_headers_is_stored_not_refused() {
    // The sender controls the subject: a NUL (which PostgreSQL text cannot hold) must not
    // make the transfer fail forever.
    let pg = Postgres::start();
    let env = Pg::new(&pg, "q");
    let s = env.open(T0);
    let mut m = msg("nul", vec![hold("Policy")]);
    m.subject = "pay\0now".into();
    m.recipients = vec!["x\0@example.org".into()];
    let id = s.quarantine(&m, T0).unwrap().msg_id;
    assert_eq!(s.message(id).unwrap().subject, "pay\u{FFFD}now");
    let hits = s
        .search(&SearchQuery {
            subject: Some("now".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(hits.total, 1);
}

fn postgres_client(url: &str) -> pvo_quarantine::testkit::PgClient {
    pvo_quarantine::testkit::client(url)
}

#[test]
fn managers_of_one_database_share_a_deployment_and_one_leader() {
    let pg = Postgres::start();
    let url = testkit::create_database(&pg.url(), "q");
    let a = Store::open_postgres(&url, T0).unwrap();
    let b = Store::open_postgres(&url, T0).unwrap();
    let id = a.deployment_id().unwrap().expect("a deployment id");
    assert!(id.starts_with("pvo-") && id.len() == 20, "{id}");
    assert_eq!(b.deployment_id().unwrap().as_deref(), Some(id.as_str()));
    // Each manager numbers its messages in a range of its own, the same one every start.
    let span = pvo_quarantine::MID_SPAN;
    assert_eq!(a.mid_floor("m1", T0).unwrap(), span);
    assert_eq!(b.mid_floor("m2", T0).unwrap(), 2 * span);
    assert_eq!(b.mid_floor("m1", T0 + 9).unwrap(), span);
    // One leader at a time, asked for as often as anyone likes.
    assert!(a.try_lead().unwrap());
    assert!(!b.try_lead().unwrap());
    assert!(a.try_lead().unwrap(), "the leader keeps the lock");
    assert!(!b.try_lead().unwrap());
    // The leader's process ends: the other takes over.
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !b.try_lead().unwrap() {
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was never let go"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // A leader whose connection breaks (the database restarted, its backend killed) loses
    // the lock; it asks again on its next call.
    let c = Store::open_postgres(&url, T0).unwrap();
    assert!(!c.try_lead().unwrap());
    let mut admin = postgres_client(&url);
    admin
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted AND objid = $1::bigint::oid",
            &[&0x7076_6f6ci64],
        )
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (b_leads, c_leads) = (b.try_lead().unwrap(), c.try_lead().unwrap());
        assert!(!(b_leads && c_leads), "two leaders");
        if c_leads || b_leads {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nobody leads");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn two_managers_claim_each_interrupted_release_once() {
    let pg = Postgres::start();
    let url = testkit::create_database(&pg.url(), "q");
    let a = Arc::new(Store::open_postgres(&url, T0).unwrap());
    let b = Arc::new(Store::open_postgres(&url, T0).unwrap());
    let mut ids: Vec<u64> = (0..1200)
        .map(|n| put(&a, &format!("k{n}"), vec![hold("Policy")]))
        .collect();
    a.bulk(
        &ids,
        &Scope::All,
        &Action::Release,
        &Actor::manual("admin"),
        T0,
    )
    .unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let mut mine = Vec::new();
                loop {
                    let got = s.claim_stale_pending(T0 + 100, 60).unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|p| p.msg_id));
                }
            })
        })
        .collect();
    let mut claimed: Vec<u64> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    claimed.sort_unstable();
    ids.sort_unstable();
    assert_eq!(
        claimed, ids,
        "each interrupted release claimed by one manager"
    );
}

/// An embedded store with a bit of everything: the search corpus, a custom quarantine, a
/// quota, held, released-but-unqueued, delivered, deleted and moved messages, and enough of
/// them for several batches of the copy.
fn embedded_store_with_history(dir: &std::path::Path) -> (Store, Vec<u64>) {
    use pvo_quarantine::{DefaultAction, QuarantineSettings};
    let s = Store::open_sqlite(&dir.join("quarantine.db"), T0).unwrap();
    let mut ids = testkit::corpus(&s);
    let settings = QuarantineSettings {
        retention_secs: 3 * 86_400,
        default_action: DefaultAction::Release,
        ..Builtin::Policy.default_settings()
    };
    s.create_quarantine("Legal Hold", &settings, T0).unwrap();
    s.set_quota(Some(512 * 1024 * 1024)).unwrap();
    for n in 0..1100 {
        let mut m = msg(
            &format!("bulk{n}"),
            vec![hold("Policy"), hold("Legal Hold")],
        );
        m.meta = serde_json::json!({ "mid": 1_000 + n, "icid": 7 });
        m.raw = format!("Subject: bulk {n}\r\n\r\nbody {n}\r\n").into_bytes();
        ids.push(s.quarantine(&m, T0).unwrap().msg_id);
    }
    let n = ids.len();
    // Released from both: pending (never queued); the next one delivered and confirmed.
    for &id in &ids[n - 4..n - 2] {
        s.release(id, "Policy", "admin", T0 + 1).unwrap();
        s.release(id, "Legal Hold", "admin", T0 + 1).unwrap();
    }
    s.confirm_delivery(ids[n - 3], "MID 77", T0 + 2).unwrap();
    s.delete(ids[n - 1], "Policy", "admin", T0 + 3).unwrap();
    s.delete(ids[n - 1], "Legal Hold", "admin", T0 + 3).unwrap();
    s.move_message(ids[n - 5], "Legal Hold", "Virus", "admin", T0 + 4)
        .unwrap();
    (s, ids)
}

#[test]
fn an_embedded_store_moves_to_postgresql_resumes_after_a_cut_and_is_verified() {
    let pg = Postgres::start();
    let tmp = tempfile::TempDir::new().unwrap();
    let (src, ids) = embedded_store_with_history(tmp.path());
    let url = testkit::create_database(&pg.url(), "moved");
    let source = tmp.path().join("quarantine.db").display().to_string();

    // Cut short after the first batch (a crash: nothing after the last commit survives).
    {
        let dst = Store::open_postgres(&url, T0).unwrap();
        let mut batches = 0;
        let cut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pvo_quarantine::copy_to_postgres(&src, &dst, &source, T0 + 10, &mut |copied, _| {
                if copied > 0 {
                    batches += 1;
                    panic!("cut after {copied}");
                }
            })
        }));
        assert!(cut.is_err() && batches == 1);
    }
    let dst = Store::open_postgres(&url, T0).unwrap();
    let mut seen = Vec::new();
    let report = pvo_quarantine::copy_to_postgres(&src, &dst, &source, T0 + 20, &mut |c, t| {
        seen.push((c, t))
    })
    .unwrap();
    assert_eq!(report.messages, ids.len() as u64);
    assert_eq!(report.resumed_after, 500, "resumed after the first batch");
    assert!(!report.already_done);
    assert_eq!(seen.first(), Some(&(500, ids.len() as u64)));
    assert_eq!(seen.last(), Some(&(ids.len() as u64, ids.len() as u64)));
    assert!(
        report.tables.contains(&("messages", ids.len() as u64)),
        "{report:?}"
    );
    assert_eq!(report.checksum.len(), 64);

    // The same messages, states, memberships, bytes, history, counters and ids.
    for &id in &ids {
        let (a, b) = (src.message(id).unwrap(), dst.message(id).unwrap());
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "message {id}");
        assert_eq!(
            src.raw(id).ok(),
            dst.raw(id).ok(),
            "the bytes of message {id}"
        );
        assert_eq!(
            format!("{:?}", src.history(id).unwrap()),
            format!("{:?}", dst.history(id).unwrap())
        );
    }
    assert_eq!(
        format!("{:?}", src.usage().unwrap()),
        format!("{:?}", dst.usage().unwrap())
    );
    assert_eq!(
        format!("{:?}", src.quarantines().unwrap()),
        format!("{:?}", dst.quarantines().unwrap())
    );
    for q in [
        SearchQuery::default(),
        SearchQuery {
            subject: Some("bulk".into()),
            ..Default::default()
        },
        SearchQuery {
            quarantine: Some("Legal Hold".into()),
            ..Default::default()
        },
    ] {
        let (a, b) = (src.search(&q).unwrap(), dst.search(&q).unwrap());
        assert_eq!(a.total, b.total, "{q:?}");
        let ids_of =
            |p: &pvo_quarantine::SearchPage| p.hits.iter().map(|h| h.msg_id).collect::<Vec<_>>();
        assert_eq!(ids_of(&a), ids_of(&b), "{q:?}");
    }
    assert_eq!(
        dst.message_by_node_mid(1_007).unwrap(),
        src.message_by_node_mid(1_007).unwrap()
    );
    let pending: Vec<u64> = dst
        .pending_deliveries()
        .unwrap()
        .iter()
        .map(|p| p.msg_id)
        .collect();
    assert_eq!(pending, vec![ids[ids.len() - 4]]);
    // The moved store goes on: new ids after the copied ones, actions work.
    let new = put(&dst, "after the move", vec![hold("Legal Hold")]);
    assert!(new > *ids.iter().max().unwrap());
    assert!(
        dst.create_quarantine("After", &Builtin::Policy.default_settings(), T0)
            .unwrap()
            .id
            > 101
    );

    // Run again: nothing copied twice, only verified.
    let again = pvo_quarantine::copy_to_postgres(&src, &dst, &source, T0 + 30, &mut |_, _| {});
    // (the new message makes the two sides differ now: said, not hidden)
    let e = again.unwrap_err().to_string();
    assert!(e.contains("the copy differs"), "{e}");

    // A database that holds another store is refused; so is a second source.
    let other = testkit::create_database(&pg.url(), "other");
    let busy = Store::open_postgres(&other, T0).unwrap();
    put(&busy, "someone else's", vec![hold("Policy")]);
    let e = pvo_quarantine::copy_to_postgres(&src, &busy, &source, T0, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("already holds a quarantine store (1 messages"),
        "{e}"
    );
    let e = pvo_quarantine::copy_to_postgres(
        &src,
        &dst,
        "/elsewhere/quarantine.db",
        T0,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("holds a copy of another store"), "{e}");
}

#[test]
fn a_finished_move_run_again_only_verifies() {
    let pg = Postgres::start();
    let tmp = tempfile::TempDir::new().unwrap();
    let s = Store::open_sqlite(&tmp.path().join("q.db"), T0).unwrap();
    let ids: Vec<u64> = (0..3)
        .map(|n| put(&s, &format!("k{n}"), vec![hold("Policy")]))
        .collect();
    let url = testkit::create_database(&pg.url(), "q");
    let dst = Store::open_postgres(&url, T0).unwrap();
    let first = pvo_quarantine::copy_to_postgres(&s, &dst, "src", T0, &mut |_, _| {}).unwrap();
    let again = pvo_quarantine::copy_to_postgres(&s, &dst, "src", T0, &mut |_, _| {}).unwrap();
    assert!(again.already_done && !first.already_done);
    assert_eq!(first.checksum, again.checksum);
    assert_eq!(dst.usage().unwrap().total_messages, ids.len() as u64);
    // Bytes changed behind the copy's back are found.
    let mut c = postgres_client(&url);
    c.execute("UPDATE pvo_quarantine.bodies SET raw = 'tampered'", &[])
        .unwrap();
    let e = pvo_quarantine::copy_to_postgres(&s, &dst, "src", T0, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("the copy differs at message"), "{e}");
}
