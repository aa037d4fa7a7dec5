//! `Store::mark_migrated` and its companions (`held_ids`, `migrated_since`): a gateway that
//! becomes central hands its held messages to the manager and marks them here.

use serde_json::json;
use tempfile::TempDir;

use crate::*;

const T0: u64 = 1_700_000_000;
const RAW: &[u8] = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: Hello\r\n\r\nHi\r\n";

fn open() -> (TempDir, Store) {
    let dir = TempDir::new().unwrap();
    let store = Store::open_sqlite(&dir.path().join("q.db"), T0).unwrap();
    (dir, store)
}

fn put(s: &Store, key: &str, mid: u64, quarantines: &[&str]) -> MsgId {
    let holds = quarantines
        .iter()
        .map(|q| Hold {
            quarantine: (*q).into(),
            reason: Reason::new(ReasonKind::ContentFilter, "quarantine_test"),
            details: json!({}),
            exit_at: Some(T0 + 3600),
        })
        .collect();
    let m = NewMessage {
        idempotency_key: key.into(),
        gateway: "gw1".into(),
        gateway_mid: mid,
        sender: "a@example.com".into(),
        recipients: vec!["b@example.org".into()],
        received: T0,
        subject: "Hello".into(),
        attachments: vec![],
        meta: json!({ "mid": mid }),
        raw: RAW.to_vec(),
        holds,
    };
    s.quarantine(&m, T0).unwrap().msg_id
}

#[test]
fn mark_migrated_leaves_every_quarantine_without_releasing_or_deleting() {
    let (_d, s) = open();
    let a = put(&s, "local-1", 1, &["Policy", "Virus"]);
    let b = put(&s, "local-2", 2, &["Policy"]);
    let c = put(&s, "local-3", 3, &["Policy"]);
    assert_eq!(s.held_ids(0, 10).unwrap(), vec![a, b, c]);
    assert_eq!(s.held_ids(a, 1).unwrap(), vec![b]);

    let t = T0 + 60;
    let marked = s
        .mark_migrated(
            &[(a, "gw1-migrate-1".into()), (b, "gw1-migrate-2".into())],
            t,
        )
        .unwrap();
    assert_eq!(marked, vec![true, true]);

    let info = s.message(a).unwrap();
    assert_eq!(info.state, MessageState::Migrated);
    assert_eq!(info.delivery_ref.as_deref(), Some("gw1-migrate-1"));
    assert_eq!(info.memberships.len(), 2);
    for m in &info.memberships {
        assert_eq!(m.state, MembershipState::Migrated);
        assert_eq!(m.cause, Some(Cause::Migrated));
        assert_eq!(m.left_at, Some(t));
        assert_eq!(m.exit_at, T0 + 3600, "the exit is kept for the record");
        assert!(!m.released_early);
    }
    // The bytes are gone; the history names the transfer.
    assert!(s.raw(a).is_err());
    let h = s.history(a).unwrap();
    let last = h.last().unwrap();
    assert_eq!(
        (last.action.as_str(), last.detail.as_str()),
        ("migrated", "gw1-migrate-1")
    );

    // Counters: only c is held; search and the held cursor see only c.
    let u = s.usage().unwrap();
    assert_eq!(u.total_messages, 1);
    assert_eq!(u.total_bytes, RAW.len() as u64);
    let policy = u.quarantines.iter().find(|q| q.name == "Policy").unwrap();
    assert_eq!((policy.messages, policy.bytes), (1, RAW.len() as u64));
    let virus = u.quarantines.iter().find(|q| q.name == "Virus").unwrap();
    assert_eq!((virus.messages, virus.bytes), (0, 0));
    let page = s.search(&SearchQuery::default()).unwrap();
    assert_eq!(page.total, 1);
    assert_eq!(page.hits[0].msg_id, c);
    assert_eq!(s.held_ids(0, 10).unwrap(), vec![c]);
    assert_eq!(s.migrated_since(T0).unwrap(), 2);
    assert_eq!(s.migrated_since(t + 1).unwrap(), 0);

    // Nothing is handed to delivery, and no later action or sweep touches it.
    assert!(s.pending_deliveries().unwrap().is_empty());
    let r = s.release(a, "Policy", "admin", t).unwrap();
    assert!(matches!(
        r.outcome,
        Outcome::Unchanged {
            state: MessageState::Migrated,
            ..
        }
    ));
    assert!(r.changes.is_empty());
    // (The sweep expires c, which was still held; Policy deletes at expiry.)
    let swept = s.sweep(T0 + 7200).unwrap();
    assert_eq!(swept.len(), 1, "{swept:?}");
    assert_eq!(swept[0].msg_id, c);
    assert_eq!(s.message(a).unwrap().state, MessageState::Migrated);

    // Repeat-safe: a second mark changes nothing; a message no longer held is not marked.
    assert_eq!(
        s.mark_migrated(&[(a, "again".into())], t + 5).unwrap(),
        vec![false]
    );
    assert_eq!(
        s.message(a).unwrap().delivery_ref.as_deref(),
        Some("gw1-migrate-1")
    );
    assert_eq!(
        s.history(a)
            .unwrap()
            .iter()
            .filter(|h| h.action == "migrated")
            .count(),
        1
    );
    let d = put(&s, "local-4", 4, &["Policy"]);
    s.delete(d, "Policy", "admin", t).unwrap();
    assert_eq!(s.mark_migrated(&[(d, "x".into())], t).unwrap(), vec![false]);
    assert_eq!(s.message(d).unwrap().state, MessageState::Deleted);

    // An unknown id fails the batch and changes nothing.
    let e = put(&s, "local-5", 5, &["Policy"]);
    assert!(s
        .mark_migrated(&[(e, "y".into()), (9999, "z".into())], t)
        .is_err());
    assert_eq!(s.message(e).unwrap().state, MessageState::Held);
    assert!(s.raw(e).is_ok());

    // Survives a reopen.
    drop(s);
    let s = Store::open_sqlite(&_d.path().join("q.db"), T0).unwrap();
    assert_eq!(s.message(b).unwrap().state, MessageState::Migrated);
    assert_eq!(s.usage().unwrap().total_messages, 1, "e only");
}
