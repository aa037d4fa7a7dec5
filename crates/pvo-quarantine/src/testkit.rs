//! The store tests, backend-independent: each takes an [`Env`] (a fresh database of one
//! backend) and runs the quarantine model end to end on it, with time passed in (no
//! sleeps). The crate's unit tests run every one on SQLite; the main crate's
//! `tests/quarantine_pg.rs` runs every one on PostgreSQL. Both iterate
//! [`for_each_store_test!`](crate::for_each_store_test), so a test added here runs on both.
//! Public only with the `testkit` feature (enabled by the main crate's dev-dependencies).
#![allow(clippy::missing_panics_doc)]

use serde_json::json;

use crate::*;

/// A test's database: empty until the first `open`, the same data on every later one.
pub trait Env {
    /// Opens (the first time: creates and migrates) this test's store at `now`.
    fn open(&self, now: u64) -> Store;
    /// Opens another, empty database of the same backend: a new one on every call.
    fn fresh(&self, now: u64) -> Store;
}

pub const T0: u64 = 1_700_000_000;
pub const DAY: u64 = 86_400;
pub const RAW: &[u8] =
    b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Hello\r\n\r\nHi there\r\n";

pub fn hold(q: &str) -> Hold {
    Hold {
        quarantine: q.into(),
        reason: Reason::new(ReasonKind::ContentFilter, "policy_violation"),
        details: json!({"matched": "[quarantine-test]"}),
        exit_at: None,
    }
}

pub fn outbreak(rule: &str) -> Hold {
    Hold {
        quarantine: "Outbreak".into(),
        reason: Reason::new(ReasonKind::Outbreak, rule),
        details: json!({"threat_level": 4}),
        exit_at: None,
    }
}

pub fn msg(key: &str, holds: Vec<Hold>) -> NewMessage {
    NewMessage {
        idempotency_key: key.into(),
        gateway: "gw1".into(),
        gateway_mid: 482,
        sender: "alice@example.com".into(),
        recipients: vec!["bob@example.org".into()],
        received: T0,
        subject: "Hello".into(),
        attachments: vec![],
        meta: json!({"icid": 7}),
        raw: RAW.to_vec(),
        holds,
    }
}

pub fn put(s: &Store, key: &str, holds: Vec<Hold>) -> MsgId {
    let ins = s.quarantine(&msg(key, holds), T0).unwrap();
    assert!(ins.created);
    ins.msg_id
}

pub fn kind(o: &Outcome) -> &'static str {
    match o {
        Outcome::Deliver { .. } => "deliver",
        Outcome::StillHeld { .. } => "still",
        Outcome::Deleted { .. } => "deleted",
        Outcome::Unchanged { .. } => "unchanged",
    }
}

pub fn usage_of(s: &Store, name: &str) -> (u64, u64) {
    let u = s.usage().unwrap();
    let q = u.quarantines.iter().find(|q| q.name == name).unwrap();
    (q.messages, q.bytes)
}

/// Calls `$runner! { name, ... }` with every backend-independent store test of this module.
#[macro_export]
macro_rules! for_each_store_test {
    ($runner:ident) => {
        $runner! {
            quarantine_logs_and_stores,
            multi_quarantine_semantics,
            release_reports_log_lines_and_history,
            concurrent_releases_deliver_once,
            confirm_delivery_and_pending_survive_reopen,
            stale_pending_releases_are_claimed_again,
            delay_pushes_exit,
            move_keeps_exit_reason_details,
            expiry_applies_default_action,
            explicit_exit_and_unknown_quarantine,
            free_up_space_oldest_first_exempt_skipped,
            free_up_space_release_is_early,
            manage_by_rule,
            idempotent_insert,
            custom_quarantines,
            send_copy_records_who,
            early_release_through_the_store,
            quarantine_table_from_store,
            purge_finished_removes_old_messages,
            search_filters,
            search_paging_total_and_held_only,
            bulk_on_search_results,
            messages_are_found_by_the_node_mid_and_the_transfer_key,
            confirm_deliveries_in_one_transaction,
            search_within_quarantines_and_recipient_domains,
        }
    };
}

pub fn quarantine_logs_and_stores(env: &dyn Env) {
    let s = env.open(T0);
    let ins = s
        .quarantine(&msg("t1", vec![hold("Policy"), hold("Virus")]), T0)
        .unwrap();
    assert!(ins.created && !ins.over_quota);
    let lines: Vec<String> = ins
        .held_in
        .iter()
        .map(|h| logline::quarantined(482, &h.quarantine, &h.reason))
        .collect();
    assert_eq!(
        lines,
        [
            "MID 482 quarantined to \"Policy\" (content filter:policy_violation)",
            "MID 482 quarantined to \"Virus\" (content filter:policy_violation)"
        ]
    );
    assert_eq!(ins.held_in[0].exit_at, T0 + 10 * DAY);
    assert_eq!(ins.held_in[1].exit_at, T0 + 30 * DAY);
    let info = s.message(ins.msg_id).unwrap();
    assert_eq!(info.state, MessageState::Held);
    assert_eq!(info.memberships.len(), 2);
    assert_eq!(
        info.memberships[0].details,
        json!({"matched": "[quarantine-test]"})
    );
    assert_eq!(info.meta, json!({"icid": 7}));
    assert_eq!(s.raw(ins.msg_id).unwrap(), RAW);
    let size = RAW.len() as u64;
    assert_eq!(usage_of(&s, "Policy"), (1, size));
    assert_eq!(usage_of(&s, "Virus"), (1, size));
    let u = s.usage().unwrap();
    assert_eq!((u.total_messages, u.total_bytes), (1, size));
}

pub fn multi_quarantine_semantics(env: &dyn Env) {
    // Each case: actions as (quarantine, release?) in order, the outcome kinds, final state.
    // (quarantine, true = release / false = delete)
    type Steps = Vec<(&'static str, bool)>;
    let cases: Vec<(&str, Steps, Vec<&str>, MessageState)> = vec![
        (
            "delivered only after both releases",
            vec![("Policy", true), ("Virus", true)],
            vec!["still", "deliver"],
            MessageState::Released,
        ),
        (
            "deleted from one, never delivered",
            vec![("Policy", false), ("Virus", true)],
            vec!["deleted", "unchanged"],
            MessageState::Deleted,
        ),
        (
            "released from one, then deleted from the other",
            vec![("Policy", true), ("Virus", false), ("Policy", true)],
            vec!["still", "deleted", "unchanged"],
            MessageState::Deleted,
        ),
        (
            "repeat release changes nothing",
            vec![
                ("Policy", true),
                ("Policy", true),
                ("Virus", true),
                ("Virus", true),
            ],
            vec!["still", "unchanged", "deliver", "unchanged"],
            MessageState::Released,
        ),
        (
            "delete after delivery decided changes nothing",
            vec![("Policy", true), ("Virus", true), ("Virus", false)],
            vec!["still", "deliver", "unchanged"],
            MessageState::Released,
        ),
    ];
    for (name, steps, want, final_state) in cases {
        let s = env.fresh(T0);
        let id = put(&s, "k", vec![hold("Policy"), hold("Virus")]);
        let mut got = Vec::new();
        for (q, release) in steps {
            let r = if release {
                s.release(id, q, "admin", T0 + 10).unwrap()
            } else {
                s.delete(id, q, "admin", T0 + 10).unwrap()
            };
            got.push(kind(&r.outcome));
        }
        assert_eq!(got, want, "{name}");
        assert_eq!(s.message(id).unwrap().state, final_state, "{name}");
        let u = s.usage().unwrap();
        assert_eq!((u.total_messages, u.total_bytes), (0, 0), "{name}");
        assert!(
            u.quarantines
                .iter()
                .all(|q| q.messages == 0 && q.bytes == 0),
            "{name}"
        );
        if final_state == MessageState::Deleted {
            assert!(
                matches!(s.raw(id), Err(QuarantineError::BodyGone(_))),
                "{name}"
            );
        }
    }
}

pub fn release_reports_log_lines_and_history(env: &dyn Env) {
    let s = env.open(T0);
    let id = put(&s, "k", vec![hold("Policy"), hold("Virus")]);
    let r1 = s.release(id, "Policy", "alice", T0 + 5).unwrap();
    assert_eq!(
        r1.log_lines(483),
        ["MID 483 released from quarantine \"Policy\" (manual)"]
    );
    let r2 = s.release(id, "Virus", "bob", T0 + 6).unwrap();
    assert_eq!(
        r2.log_lines(483),
        [
            "MID 483 released from quarantine \"Virus\" (manual)",
            "MID 483 released from all quarantines"
        ]
    );
    let h = s.history(id).unwrap();
    let summary: Vec<(u64, &str, &str)> = h
        .iter()
        .map(|e| (e.at, e.who.as_str(), e.action.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (T0, "system", "quarantined"),
            (T0, "system", "quarantined"),
            (T0 + 5, "alice", "released"),
            (T0 + 6, "bob", "released"),
            (T0 + 6, "bob", "released from all"),
        ]
    );
    let info = s.message(id).unwrap();
    assert_eq!(info.memberships[0].left_by.as_deref(), Some("alice"));
    assert_eq!(info.memberships[0].cause, Some(Cause::Manual));
    assert!(info.memberships[0].released_early);
}

pub fn concurrent_releases_deliver_once(env: &dyn Env) {
    let s = env.open(T0);
    let s = std::sync::Arc::new(s);
    let ids: Vec<MsgId> = (0..20)
        .map(|n| put(&s, &format!("k{n}"), vec![hold("Policy"), hold("Virus")]))
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let s = s.clone();
            let ids = ids.clone();
            std::thread::spawn(move || {
                let mut delivers = 0;
                for id in ids {
                    let r = s
                        .act(
                            id,
                            &Scope::All,
                            &Action::Release,
                            &Actor::manual(format!("admin{t}")),
                            T0,
                        )
                        .unwrap();
                    if matches!(r.outcome, Outcome::Deliver { .. }) {
                        delivers += 1;
                    }
                }
                delivers
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(total, ids.len());
}

pub fn confirm_delivery_and_pending_survive_reopen(env: &dyn Env) {
    let id = {
        let s = env.open(T0);
        let id = put(&s, "k", vec![hold("Policy")]);
        assert_eq!(
            kind(&s.release(id, "Policy", "a", T0).unwrap().outcome),
            "deliver"
        );
        id
    };
    // "Crash" before confirming: the release is durable and the delivery pending.
    let s = env.open(T0 + 1);
    let pending = s.pending_deliveries().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!((pending[0].msg_id, pending[0].gateway_mid), (id, 482));
    assert_eq!(s.raw(id).unwrap(), RAW);
    assert!(s.confirm_delivery(id, "MID 513", T0 + 2).unwrap());
    assert!(!s.confirm_delivery(id, "MID 513", T0 + 3).unwrap());
    assert!(s.pending_deliveries().unwrap().is_empty());
    let info = s.message(id).unwrap();
    assert_eq!(info.state, MessageState::Delivered);
    assert_eq!(info.delivery_ref.as_deref(), Some("MID 513"));
    assert!(matches!(s.raw(id), Err(QuarantineError::BodyGone(_))));
    // A held message cannot be confirmed.
    let other = put(&s, "k2", vec![hold("Policy")]);
    assert!(matches!(
        s.confirm_delivery(other, "x", T0),
        Err(QuarantineError::Invalid(_))
    ));
}

pub fn stale_pending_releases_are_claimed_again(env: &dyn Env) {
    let s = env.open(T0);
    let id = put(&s, "k", vec![hold("Policy")]);
    let queued = put(&s, "q", vec![hold("Policy")]);
    for m in [id, queued] {
        assert_eq!(
            kind(&s.release(m, "Policy", "a", T0).unwrap().outcome),
            "deliver"
        );
    }
    assert!(s.confirm_delivery(queued, "MID 9", T0).unwrap());
    // A release in flight (made less than the lease ago) is its maker's.
    assert!(s.claim_stale_pending(T0 + 59, 60).unwrap().is_empty());
    let claimed = s.claim_stale_pending(T0 + 60, 60).unwrap();
    assert_eq!(claimed.len(), 1, "only the one never queued");
    assert_eq!((claimed[0].msg_id, claimed[0].gateway_mid), (id, 482));
    assert_eq!(claimed[0].gateway, "gw1");
    // Claimed: nobody takes it for another lease; then it is taken again.
    assert!(s.claim_stale_pending(T0 + 119, 60).unwrap().is_empty());
    assert_eq!(s.claim_stale_pending(T0 + 120, 60).unwrap().len(), 1);
    assert!(s.confirm_delivery(id, "MID 10", T0 + 121).unwrap());
    assert!(s.claim_stale_pending(T0 + 10_000, 60).unwrap().is_empty());
    assert_eq!(s.message(id).unwrap().state, MessageState::Delivered);
}

pub fn delay_pushes_exit(env: &dyn Env) {
    let cases = [
        (DelayBy::Hours8, 8 * 3600),
        (DelayBy::Hours24, DAY),
        (DelayBy::Hours48, 2 * DAY),
        (DelayBy::Week, 7 * DAY),
    ];
    for (by, secs) in cases {
        let s = env.fresh(T0);
        let id = put(&s, "k", vec![hold("Policy")]);
        let exit = T0 + 10 * DAY;
        let r = s.delay(id, "Policy", by, "admin", T0 + 60).unwrap();
        assert_eq!(
            r.changes,
            [Change::Delayed {
                quarantine: "Policy".into(),
                from: exit,
                to: exit + secs
            }]
        );
        // The old exit passes: nothing happens.
        assert!(s.sweep(exit).unwrap().is_empty(), "{by:?}");
        assert_eq!(s.message(id).unwrap().state, MessageState::Held);
        // The new one: Policy's default action (delete) runs.
        let out = s.sweep(exit + secs).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].log_lines(9),
            ["MID 9 deleted from quarantine \"Policy\" (expired)"]
        );
    }
}

pub fn move_keeps_exit_reason_details(env: &dyn Env) {
    let s = env.open(T0);
    let custom = Builtin::Policy.default_settings();
    s.create_quarantine("Legal", &custom, T0).unwrap();
    let id = put(&s, "k", vec![hold("Policy")]);
    s.delay(id, "Policy", DelayBy::Hours8, "a", T0).unwrap();
    let before = s.message(id).unwrap().memberships[0].clone();
    let r = s.move_message(id, "Policy", "Legal", "a", T0 + 1).unwrap();
    assert_eq!(
        r.outcome,
        Outcome::StillHeld {
            msg_id: id,
            remaining: vec!["Legal".into()]
        }
    );
    let after = s.message(id).unwrap().memberships[0].clone();
    assert_eq!(after.quarantine, "Legal");
    assert_eq!(
        (
            after.exit_at,
            &after.reason,
            &after.details,
            after.entered_at
        ),
        (
            before.exit_at,
            &before.reason,
            &before.details,
            before.entered_at
        )
    );
    assert_eq!(usage_of(&s, "Policy").0, 0);
    assert_eq!(usage_of(&s, "Legal").0, 1);
    // Repeat: nothing changes.
    let again = s.move_message(id, "Policy", "Legal", "a", T0 + 2).unwrap();
    assert_eq!(kind(&again.outcome), "unchanged");
    // Into a quarantine the message is already in.
    let two = put(&s, "k2", vec![hold("Policy"), hold("Virus")]);
    assert!(matches!(
        s.move_message(two, "Policy", "Virus", "a", T0),
        Err(QuarantineError::AlreadyInQuarantine { .. })
    ));
    assert!(matches!(
        s.move_message(two, "Outbreak", "Legal", "a", T0),
        Err(QuarantineError::NotInQuarantine { .. })
    ));
}

pub fn expiry_applies_default_action(env: &dyn Env) {
    let early = EarlyReleaseActions {
        subject_prepend: Some("[EARLY]".into()),
        ..Default::default()
    };
    // (quarantine, default action, expected outcome, expected log line)
    let cases = [
        (
            "Policy",
            DefaultAction::Delete,
            "deleted",
            "MID 1 deleted from quarantine \"Policy\" (expired)",
        ),
        (
            "Policy",
            DefaultAction::Release,
            "deliver",
            "MID 1 released from quarantine \"Policy\" (expired)",
        ),
        (
            "Outbreak",
            DefaultAction::Release,
            "deliver",
            "MID 1 released from quarantine \"Outbreak\" (expired)",
        ),
    ];
    for (q, action, want, line) in cases {
        let s = env.fresh(T0);
        let mut settings = s.get_quarantine(q).unwrap().settings;
        settings.default_action = action;
        settings.early_release = early.clone();
        s.update_quarantine(q, &settings).unwrap();
        let id = put(&s, "k", vec![hold(q)]);
        let exit = T0 + settings.retention_secs;
        assert!(s.sweep(exit - 1).unwrap().is_empty());
        let out = s.sweep(exit).unwrap();
        assert_eq!(out.len(), 1, "{q}");
        assert_eq!(kind(&out[0].outcome), want, "{q}");
        assert_eq!(out[0].log_lines(1)[0], line);
        if let Outcome::Deliver {
            early_release_actions,
            ..
        } = &out[0].outcome
        {
            // Expiry is not an early release.
            assert!(early_release_actions.is_empty());
        }
        assert!(s.sweep(exit + DAY).unwrap().is_empty(), "repeat sweep");
        assert_eq!(
            s.message(id).unwrap().memberships[0].cause,
            Some(Cause::Expired)
        );
    }
}

pub fn explicit_exit_and_unknown_quarantine(env: &dyn Env) {
    let s = env.open(T0);
    let mut h = hold("No such filter target");
    h.exit_at = Some(T0 + 3600);
    let ins = s
        .quarantine(&msg("k", vec![h, hold("Policy")]), T0)
        .unwrap();
    assert_eq!(ins.held_in[0].quarantine, "Unclassified");
    assert_eq!(ins.held_in[0].exit_at, T0 + 3600);
    // Unclassified releases at expiry; Policy still holds it.
    let out = s.sweep(T0 + 3600).unwrap();
    assert_eq!(kind(&out[0].outcome), "still");
}

pub fn free_up_space_oldest_first_exempt_skipped(env: &dyn Env) {
    let s = env.open(T0);
    let size = RAW.len() as u64;
    // Virus (exempt by default) holds the two oldest messages.
    let mut ids = Vec::new();
    for (n, q) in ["Virus", "Virus", "Policy", "Policy", "Policy", "Policy"]
        .iter()
        .enumerate()
    {
        let ins = s
            .quarantine(&msg(&format!("k{n}"), vec![hold(q)]), T0 + n as u64)
            .unwrap();
        ids.push(ins.msg_id);
    }
    assert!(s.free_up_space(T0 + 10).unwrap().is_empty(), "no quota");
    s.set_quota(Some(4 * size)).unwrap();
    let out = s.free_up_space(T0 + 10).unwrap();
    let freed: Vec<MsgId> = out.iter().map(|r| r.msg_id).collect();
    assert_eq!(freed, [ids[2], ids[3]], "the two oldest Policy messages");
    assert!(out.iter().all(|r| kind(&r.outcome) == "deleted"));
    assert_eq!(
        out[0].log_lines(5),
        ["MID 5 deleted from quarantine \"Policy\" (free up space)"]
    );
    let u = s.usage().unwrap();
    assert_eq!(u.total_bytes, 4 * size);
    assert_eq!(usage_of(&s, "Virus").0, 2);
    // Only exempt messages left above the quota: nothing more to do.
    s.set_quota(Some(size)).unwrap();
    let out = s.free_up_space(T0 + 11).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(usage_of(&s, "Virus").0, 2);
    assert_eq!(usage_of(&s, "Policy").0, 0);
}

pub fn free_up_space_release_is_early(env: &dyn Env) {
    let s = env.open(T0);
    let mut settings = s.get_quarantine("Policy").unwrap().settings;
    settings.default_action = DefaultAction::Release;
    settings.early_release.subject_append = Some("(released early)".into());
    s.update_quarantine("Policy", &settings).unwrap();
    let id = put(&s, "k", vec![hold("Policy")]);
    s.set_quota(Some(1)).unwrap();
    let out = s.sweep(T0 + 1).unwrap();
    assert_eq!(out.len(), 1);
    match &out[0].outcome {
        Outcome::Deliver {
            msg_id,
            early_release_actions,
        } => {
            assert_eq!(*msg_id, id);
            let raw = apply_early_release(&s.raw(id).unwrap(), early_release_actions);
            assert!(raw.starts_with(b"From: alice@example.com\r\nTo: bob@example.org\r\nSubject: Hello (released early)\r\n\r\n"));
        }
        o => panic!("unexpected {o:?}"),
    }
}

pub fn manage_by_rule(env: &dyn Env) {
    let s = env.open(T0);
    let a = put(&s, "a", vec![outbreak("OUTBREAK_0001")]);
    let b = put(&s, "b", vec![outbreak("OUTBREAK_0001"), hold("Policy")]);
    let c = put(&s, "c", vec![outbreak("OUTBREAK_0002")]);
    let exit = T0 + DAY;

    let delayed = s
        .manage_by_rule(
            "OUTBREAK_0001",
            &Action::Delay(DelayBy::Hours24),
            &Actor::manual("a"),
            T0,
        )
        .unwrap();
    assert_eq!(delayed.len(), 2);
    let out = s.sweep(exit).unwrap();
    assert_eq!(out.iter().map(|r| r.msg_id).collect::<Vec<_>>(), [c]);

    let released = s
        .manage_by_rule(
            "outbreak_0001",
            &Action::Release,
            &Actor::manual("a"),
            T0 + 5,
        )
        .unwrap();
    let kinds: Vec<(MsgId, &str)> = released
        .iter()
        .map(|(id, r)| (*id, kind(&r.as_ref().unwrap().outcome)))
        .collect();
    assert_eq!(kinds, [(a, "deliver"), (b, "still")]);
    assert!(s
        .manage_by_rule(
            "OUTBREAK_0001",
            &Action::Release,
            &Actor::manual("a"),
            T0 + 6
        )
        .unwrap()
        .is_empty());
}

pub fn idempotent_insert(env: &dyn Env) {
    let s = env.open(T0);
    let first = s
        .quarantine(&msg("transfer-1", vec![hold("Policy")]), T0)
        .unwrap();
    let mut changed = msg("transfer-1", vec![hold("Virus")]);
    changed.subject = "Different".into();
    let again = s.quarantine(&changed, T0 + 5).unwrap();
    assert!(!again.created);
    assert_eq!(again.msg_id, first.msg_id);
    assert_eq!(again.held_in, first.held_in);
    assert_eq!(s.message(first.msg_id).unwrap().subject, "Hello");
    assert_eq!(s.usage().unwrap().total_messages, 1);
    assert_eq!(s.history(first.msg_id).unwrap().len(), 1);

    // Within one batch, and with an invalid message that does not fail the others.
    let batch = vec![
        msg("t2", vec![hold("Policy")]),
        msg("t2", vec![hold("Policy")]),
        msg("", vec![hold("Policy")]),
        msg("t3", vec![]),
    ];
    let out = s.quarantine_many(&batch, T0).unwrap();
    let a = out[0].as_ref().unwrap();
    let b = out[1].as_ref().unwrap();
    assert!(a.created && !b.created && a.msg_id == b.msg_id);
    assert!(matches!(out[2], Err(QuarantineError::Invalid(_))));
    assert!(matches!(out[3], Err(QuarantineError::Invalid(_))));
    assert_eq!(s.usage().unwrap().total_messages, 2);
}

pub fn custom_quarantines(env: &dyn Env) {
    let s = env.open(T0);
    let settings = QuarantineSettings {
        retention_secs: 3 * DAY,
        default_action: DefaultAction::Release,
        exempt_from_free_up: false,
        early_release: EarlyReleaseActions::default(),
        access: AccessList {
            users: vec!["helpdesk1".into()],
            roles: vec!["Operator".into()],
        },
    };
    let q = s.create_quarantine("Legal", &settings, T0).unwrap();
    assert_eq!(q.id, 101);
    assert!(!q.builtin);
    assert!(q.settings.access.allows("someone", &["operator"]));
    assert!(!q.settings.access.allows("guest", &["Guest"]));
    assert!(matches!(
        s.create_quarantine("legal", &settings, T0),
        Err(QuarantineError::QuarantineExists(_))
    ));
    for bad in ["", " x", "a\"b", "tab\there"] {
        assert!(
            matches!(
                s.create_quarantine(bad, &settings, T0),
                Err(QuarantineError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    for b in Builtin::ALL {
        assert!(matches!(
            s.delete_quarantine(b.name(), "a", T0),
            Err(QuarantineError::BuiltinQuarantine(_))
        ));
    }

    let only = put(&s, "only", vec![hold("Legal")]);
    let both = put(&s, "both", vec![hold("Legal"), hold("Unclassified")]);
    let released = put(&s, "released", vec![hold("Legal"), hold("Policy")]);
    s.release(released, "Legal", "a", T0).unwrap();
    let d = s.delete_quarantine("Legal", "admin", T0 + 1).unwrap();
    assert_eq!(d.moved_to_unclassified, [only, both]);
    let m = s.message(only).unwrap().memberships;
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].quarantine, "Unclassified");
    assert_eq!(m[0].exit_at, T0 + 3 * DAY, "keeps its exit");
    assert_eq!(s.message(both).unwrap().memberships.len(), 1);
    assert_eq!(
        s.message(released)
            .unwrap()
            .memberships
            .iter()
            .map(|m| m.quarantine.as_str())
            .collect::<Vec<_>>(),
        ["Policy"]
    );
    assert_eq!(usage_of(&s, "Unclassified"), (2, 2 * RAW.len() as u64));
    assert!(matches!(
        s.get_quarantine("Legal"),
        Err(QuarantineError::UnknownQuarantine(_))
    ));
    // A filter that still names the deleted quarantine lands in Unclassified.
    let late = s.quarantine(&msg("late", vec![hold("Legal")]), T0).unwrap();
    assert_eq!(late.held_in[0].quarantine, "Unclassified");
    // The id is never reused.
    assert_eq!(
        s.create_quarantine("Legal2", &settings, T0).unwrap().id,
        102
    );
}

pub fn send_copy_records_who(env: &dyn Env) {
    let s = env.open(T0);
    let id = put(&s, "k", vec![hold("Policy")]);
    let c = s
        .send_copy(id, &["admin@example.com".into()], "admin", T0 + 1)
        .unwrap();
    assert_eq!((c.raw.as_slice(), c.requested_by.as_str()), (RAW, "admin"));
    let last = s.history(id).unwrap().pop().unwrap();
    assert_eq!(
        (
            last.who.as_str(),
            last.action.as_str(),
            last.detail.as_str()
        ),
        ("admin", "copy sent", "to admin@example.com")
    );
    assert_eq!(s.message(id).unwrap().state, MessageState::Held);
    s.delete(id, "Policy", "admin", T0 + 2).unwrap();
    assert!(matches!(
        s.send_copy(id, &["a@b".into()], "admin", T0),
        Err(QuarantineError::BodyGone(_))
    ));
    assert!(matches!(
        s.send_copy(999, &["a@b".into()], "admin", T0),
        Err(QuarantineError::UnknownMessage(999))
    ));
}

pub fn early_release_through_the_store(env: &dyn Env) {
    let s = env.open(T0);
    let mut settings = s.get_quarantine("Policy").unwrap().settings;
    settings.early_release = EarlyReleaseActions {
        subject_prepend: Some("[Released]".into()),
        x_header: Some(XHeader {
            name: "X-PVO-Early-Release".into(),
            value: "Policy".into(),
        }),
        ..Default::default()
    };
    s.update_quarantine("Policy", &settings).unwrap();
    let rewritten = put(&s, "a", vec![hold("Policy")]);
    let untouched = put(&s, "b", vec![hold("Virus")]);
    let deliver = |id: MsgId, q: &str| match s.release(id, q, "a", T0 + 1).unwrap().outcome {
        Outcome::Deliver {
            early_release_actions,
            ..
        } => apply_early_release(&s.raw(id).unwrap(), &early_release_actions),
        o => panic!("unexpected {o:?}"),
    };
    assert_eq!(
        String::from_utf8(deliver(rewritten, "Policy")).unwrap(),
        "From: alice@example.com\r\nTo: bob@example.org\r\nSubject: [Released] Hello\r\n\
         X-PVO-Early-Release: Policy\r\n\r\nHi there\r\n"
    );
    assert_eq!(deliver(untouched, "Virus"), RAW, "byte-identical");
    // Settings that could inject header lines are refused.
    settings.early_release.x_header = Some(XHeader {
        name: "X-A".into(),
        value: "v\r\nBcc: x@y".into(),
    });
    assert!(matches!(
        s.update_quarantine("Policy", &settings),
        Err(QuarantineError::Invalid(_))
    ));
}

pub fn quarantine_table_from_store(env: &dyn Env) {
    let s = env.open(T0);
    put(&s, "k", vec![hold("Policy"), hold("Virus")]);
    s.set_quota(Some(1024 * 1024)).unwrap();
    let t = s.quarantine_table().unwrap();
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(
        lines[0],
        "  #  Name          Space used  Messages   Retention  Action"
    );
    assert_eq!(
        lines[1],
        "  1  Policy              74 B         1     10 days  Delete"
    );
    assert_eq!(lines[5], "     Total               74 B         1");
    assert!(t.contains("counted once"));
    assert!(t.ends_with("Quota: 74 B of 1.0 MB used (0.0%)\n"));
}

pub fn purge_finished_removes_old_messages(env: &dyn Env) {
    let s = env.open(T0);
    let gone = put(&s, "a", vec![hold("Policy")]);
    let kept = put(&s, "b", vec![hold("Policy")]);
    s.delete(gone, "Policy", "a", T0 + 10).unwrap();
    assert_eq!(
        s.purge_finished(T0 + 10).unwrap(),
        0,
        "finished at T0+10, not before"
    );
    assert_eq!(s.purge_finished(T0 + 11).unwrap(), 1);
    assert!(matches!(
        s.message(gone),
        Err(QuarantineError::UnknownMessage(_))
    ));
    assert_eq!(s.message(kept).unwrap().state, MessageState::Held);
    // The transfer id of a purged message is free again.
    assert!(
        s.quarantine(&msg("a", vec![hold("Policy")]), T0)
            .unwrap()
            .created
    );
}

/// A small corpus for the search tests: (key, sender, recipients, subject, received,
/// attachments, holds, gateway).
pub fn corpus(s: &Store) -> Vec<MsgId> {
    let att = |n: &str, size: u64| Attachment {
        name: n.into(),
        size,
    };
    type Item = (
        &'static str,
        &'static str,
        Vec<&'static str>,
        &'static str,
        u64,
    );
    let items: Vec<(Item, Vec<Attachment>, Vec<Hold>, &str)> = vec![
        (
            (
                "m0",
                "alice@example.com",
                vec!["bob@corp.example"],
                "Quarterly invoice",
                100,
            ),
            vec![att("invoice_2024.pdf", 50_000)],
            vec![hold("Policy")],
            "gw1",
        ),
        (
            (
                "m1",
                "Mallory@Evil.test",
                vec!["carol@corp.example", "dave@other.test"],
                "You won a prize",
                200,
            ),
            vec![att("prize.exe", 700_000)],
            vec![hold("Virus"), outbreak("OUTBREAK_7")],
            "gw2",
        ),
        (
            (
                "m2",
                "alice@example.com",
                vec!["carol@corp.example"],
                "Lunch?",
                300,
            ),
            vec![],
            vec![hold("Policy")],
            "gw1",
        ),
        (
            (
                "m3",
                "news@list.test",
                vec!["bob@corp.example"],
                "Weekly invoice digest",
                400,
            ),
            vec![att("digest.html", 2_000)],
            vec![outbreak("OUTBREAK_7")],
            "gw2",
        ),
        (
            (
                "m4",
                "alicia@example.com",
                vec!["eve@corp.example"],
                "Résumé attached",
                500,
            ),
            vec![att("cv.docx", 30_000)],
            vec![hold("Policy")],
            "gw1",
        ),
    ];
    items
        .into_iter()
        .enumerate()
        .map(
            |(n, ((key, sender, rcpts, subject, received), attachments, holds, gw))| {
                let mut m = msg(key, holds);
                m.sender = sender.into();
                m.recipients = rcpts.into_iter().map(String::from).collect();
                m.subject = subject.into();
                m.received = T0 + received;
                m.attachments = attachments;
                m.gateway = gw.into();
                m.raw = vec![b'x'; 1000 * (n + 1)];
                s.quarantine(&m, T0 + received).unwrap().msg_id
            },
        )
        .collect()
}

pub fn search_filters(env: &dyn Env) {
    let s = env.open(T0);
    let ids = corpus(&s);
    let q = SearchQuery::default;
    let cases: Vec<(&str, SearchQuery, Vec<usize>)> = vec![
        ("everything, newest first", q(), vec![4, 3, 2, 1, 0]),
        (
            "quarantine",
            SearchQuery {
                quarantine: Some("policy".into()),
                ..q()
            },
            vec![4, 2, 0],
        ),
        (
            "sender is, any case",
            SearchQuery {
                sender: Some(AddrMatch::Is("ALICE@example.com".into())),
                ..q()
            },
            vec![2, 0],
        ),
        (
            "sender domain",
            SearchQuery {
                sender: Some(AddrMatch::Domain("@evil.TEST".into())),
                ..q()
            },
            vec![1],
        ),
        (
            "sender begins with",
            SearchQuery {
                sender: Some(AddrMatch::BeginsWith("ali".into())),
                ..q()
            },
            vec![4, 2, 0],
        ),
        (
            "recipient is",
            SearchQuery {
                recipient: Some(AddrMatch::Is("carol@corp.example".into())),
                ..q()
            },
            vec![2, 1],
        ),
        (
            "recipient domain",
            SearchQuery {
                recipient: Some(AddrMatch::Domain("other.test".into())),
                ..q()
            },
            vec![1],
        ),
        (
            "subject word",
            SearchQuery {
                subject: Some("invoice".into()),
                ..q()
            },
            vec![3, 0],
        ),
        (
            "subject words AND",
            SearchQuery {
                subject: Some("weekly INVOICE".into()),
                ..q()
            },
            vec![3],
        ),
        (
            "subject prefix",
            SearchQuery {
                subject: Some("quart*".into()),
                ..q()
            },
            vec![0],
        ),
        (
            "subject without diacritics",
            SearchQuery {
                subject: Some("resume".into()),
                ..q()
            },
            vec![4],
        ),
        (
            "subject operators are text",
            SearchQuery {
                subject: Some("prize OR lunch".into()),
                ..q()
            },
            vec![],
        ),
        (
            "date range",
            SearchQuery {
                received_from: Some(T0 + 200),
                received_to: Some(T0 + 400),
                ..q()
            },
            vec![3, 2, 1],
        ),
        (
            "gateway",
            SearchQuery {
                gateway: Some("gw2".into()),
                ..q()
            },
            vec![3, 1],
        ),
        (
            "reason (rule)",
            SearchQuery {
                reason: Some("outbreak_7".into()),
                ..q()
            },
            vec![3, 1],
        ),
        (
            "reason kind in a quarantine",
            SearchQuery {
                quarantine: Some("Outbreak".into()),
                reason_kind: Some(ReasonKind::Outbreak),
                ..q()
            },
            vec![3, 1],
        ),
        (
            "attachment name words",
            SearchQuery {
                attachment_name: Some("invoice_2024.pdf".into()),
                ..q()
            },
            vec![0],
        ),
        (
            "attachment extension",
            SearchQuery {
                attachment_name: Some("exe".into()),
                ..q()
            },
            vec![1],
        ),
        (
            "attachment size range",
            SearchQuery {
                attachment_min_size: Some(10_000),
                attachment_max_size: Some(100_000),
                ..q()
            },
            vec![4, 0],
        ),
        (
            "message size",
            SearchQuery {
                min_size: Some(2000),
                max_size: Some(3000),
                ..q()
            },
            vec![2, 1],
        ),
        (
            "combined",
            SearchQuery {
                quarantine: Some("Policy".into()),
                sender: Some(AddrMatch::Domain("example.com".into())),
                subject: Some("invoice".into()),
                ..q()
            },
            vec![0],
        ),
        (
            "size order ascending",
            SearchQuery {
                order_by: OrderBy::Size,
                descending: false,
                quarantine: Some("Policy".into()),
                ..q()
            },
            vec![0, 2, 4],
        ),
        (
            "exit order",
            SearchQuery {
                order_by: OrderBy::Exit,
                descending: false,
                ..q()
            },
            vec![1, 3, 0, 2, 4],
        ),
    ];
    for (name, query, want) in cases {
        let page = s.search(&query).unwrap();
        let got: Vec<MsgId> = page.hits.iter().map(|h| h.msg_id).collect();
        let want: Vec<MsgId> = want.iter().map(|&n| ids[n]).collect();
        assert_eq!(got, want, "{name}");
        assert_eq!(page.total, want.len() as u64, "{name}: total");
        assert_eq!(s.search_ids(&query).unwrap(), want, "{name}: ids");
    }
    // Hits carry where the message is held.
    let hit = &s
        .search(&SearchQuery {
            gateway: Some("gw2".into()),
            ..q()
        })
        .unwrap()
        .hits[1];
    assert_eq!(hit.recipients, ["carol@corp.example", "dave@other.test"]);
    assert_eq!(
        hit.held_in
            .iter()
            .map(|h| h.quarantine.as_str())
            .collect::<Vec<_>>(),
        ["Virus", "Outbreak"]
    );
    assert!(matches!(
        s.search(&SearchQuery {
            quarantine: Some("Nope".into()),
            ..q()
        }),
        Err(QuarantineError::UnknownQuarantine(_))
    ));
}

pub fn search_paging_total_and_held_only(env: &dyn Env) {
    let s = env.open(T0);
    let ids: Vec<MsgId> = (0..23)
        .map(|n| {
            let mut m = msg(&format!("k{n}"), vec![hold("Policy")]);
            m.received = T0 + n;
            s.quarantine(&m, T0).unwrap().msg_id
        })
        .collect();
    let page = |offset, limit, sender: Option<AddrMatch>| {
        s.search(&SearchQuery {
            quarantine: Some("Policy".into()),
            sender,
            descending: false,
            offset,
            limit,
            ..Default::default()
        })
        .unwrap()
    };
    // Counter-backed total and COUNT-backed total agree.
    for sender in [None, Some(AddrMatch::Domain("example.com".into()))] {
        let p = page(20, 10, sender.clone());
        assert_eq!(p.total, 23);
        assert_eq!(
            p.hits.iter().map(|h| h.msg_id).collect::<Vec<_>>(),
            ids[20..]
        );
        assert!(page(30, 10, sender.clone()).hits.is_empty());
        assert_eq!(page(0, 0, sender).total, 23);
    }
    // A capped count says "at least", and the pages beyond the cap still come.
    for sender in [None, Some(AddrMatch::Domain("example.com".into()))] {
        let capped = |offset| {
            s.search(&SearchQuery {
                sender: sender.clone(),
                max_count: Some(10),
                offset,
                descending: false,
                ..Default::default()
            })
            .unwrap()
        };
        let p = capped(0);
        // The unfiltered search is counter-backed, hence exact whatever the cap.
        let want = if sender.is_none() {
            (23, true)
        } else {
            (10, false)
        };
        assert_eq!((p.total, p.total_exact), want);
        assert_eq!(capped(20).hits.len(), 3);
    }
    // Counting through the full-text index alone (no row lookups), capped or not.
    for (max_count, want) in [
        (Some(10), (10, false)),
        (None, (23, true)),
        (Some(23), (23, true)),
    ] {
        let p = s
            .search(&SearchQuery {
                subject: Some("hello".into()),
                max_count,
                ..Default::default()
            })
            .unwrap();
        assert_eq!((p.total, p.total_exact), want, "{max_count:?}");
    }
    // Released and deleted messages leave the results.
    s.release(ids[0], "Policy", "a", T0).unwrap();
    s.delete(ids[1], "Policy", "a", T0).unwrap();
    let p = page(0, 5, None);
    assert_eq!(p.total, 21);
    assert_eq!(p.hits[0].msg_id, ids[2]);
    assert_eq!(
        page(0, 5, Some(AddrMatch::Is("alice@example.com".into()))).total,
        21
    );
}

pub fn bulk_on_search_results(env: &dyn Env) {
    let s = env.open(T0);
    let ids = corpus(&s);
    let q = SearchQuery {
        quarantine: Some("Policy".into()),
        sender: Some(AddrMatch::Domain("example.com".into())),
        ..Default::default()
    };
    let out = s
        .bulk_search(&q, &Action::Delete, &Actor::manual("admin"), T0 + 1000)
        .unwrap();
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|(_, r)| kind(&r.as_ref().unwrap().outcome) == "deleted"));
    assert_eq!(s.search(&q).unwrap().total, 0);
    // Bulk on a list: per-message errors do not stop the others.
    let out = s
        .bulk(
            &[ids[1], 12345, ids[3]],
            &Scope::Quarantine("Outbreak".into()),
            &Action::Release,
            &Actor::manual("a"),
            T0,
        )
        .unwrap();
    assert_eq!(kind(&out[0].1.as_ref().unwrap().outcome), "still");
    assert!(matches!(
        out[1].1,
        Err(QuarantineError::UnknownMessage(12345))
    ));
    assert_eq!(kind(&out[2].1.as_ref().unwrap().outcome), "deliver");
}

pub fn messages_are_found_by_the_node_mid_and_the_transfer_key(env: &dyn Env) {
    let s = env.open(T0);
    let mut a = msg("gw1:t-1", vec![hold("Policy")]);
    a.gateway = "gw1".into();
    a.gateway_mid = 5;
    a.meta = serde_json::json!({ "mid": 900 });
    let mut b = msg("gw2:t-1", vec![hold("Policy")]);
    b.gateway = "gw2".into();
    b.gateway_mid = 5;
    b.meta = serde_json::json!({ "mid": 901 });
    let ia = s.quarantine(&a, T0).unwrap().msg_id;
    let ib = s.quarantine(&b, T0).unwrap().msg_id;
    assert_eq!(s.message_by_node_mid(900).unwrap(), Some(ia));
    assert_eq!(s.message_by_node_mid(901).unwrap(), Some(ib));
    assert_eq!(s.message_by_node_mid(5).unwrap(), None);
    assert_eq!(s.message_by_key("gw2:t-1").unwrap(), Some(ib));
    assert_eq!(s.message_by_key("gw3:t-1").unwrap(), None);
    let page = s
        .search(&SearchQuery {
            gateway: Some("gw2".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.hits.len(), 1);
    assert_eq!(page.hits[0].node_mid, Some(901));
    assert_eq!(page.hits[0].gateway_mid, 5);
    // Only held messages are named by their MID.
    s.delete(ib, "Policy", "admin", T0 + 1).unwrap();
    assert_eq!(s.message_by_node_mid(901).unwrap(), None);
}

pub fn confirm_deliveries_in_one_transaction(env: &dyn Env) {
    let s = env.open(T0);
    let a = put(&s, "a", vec![hold("Policy")]);
    let b = put(&s, "b", vec![hold("Policy")]);
    let held = put(&s, "c", vec![hold("Policy")]);
    s.release(a, "Policy", "alice", T0 + 1).unwrap();
    s.release(b, "Policy", "alice", T0 + 1).unwrap();
    let items = vec![
        (a, "10".to_string()),
        (b, "11".to_string()),
        (held, "12".to_string()),
    ];
    let r = s.confirm_deliveries(&items, T0 + 2).unwrap();
    assert!(matches!(r[0], Ok(true)));
    assert!(matches!(r[1], Ok(true)));
    assert!(r[2].is_err(), "a held message cannot be confirmed");
    assert_eq!(s.message(b).unwrap().delivery_ref.as_deref(), Some("11"));
    assert_eq!(s.message(held).unwrap().state, MessageState::Held);
    // Repeat-safe.
    let r = s.confirm_deliveries(&items[..2], T0 + 3).unwrap();
    assert!(matches!(r[0], Ok(false)) && matches!(r[1], Ok(false)));
    assert!(s.pending_deliveries().unwrap().is_empty());
}

pub fn search_within_quarantines_and_recipient_domains(env: &dyn Env) {
    let s = env.open(T0);
    let mut a = msg("a", vec![hold("Policy")]);
    a.recipients = vec!["x@one.example".into()];
    let a = s.quarantine(&a, T0).unwrap().msg_id;
    let mut b = msg("b", vec![hold("Virus")]);
    b.recipients = vec!["y@two.example".into(), "z@One.Example".into()];
    let b = s.quarantine(&b, T0).unwrap().msg_id;
    let mut c = msg("c", vec![hold("Policy"), hold("Virus")]);
    c.recipients = vec!["w@two.example".into()];
    let c = s.quarantine(&c, T0).unwrap().msg_id;
    let ids = |q: SearchQuery| {
        let mut v: Vec<MsgId> = s
            .search(&q)
            .unwrap()
            .hits
            .iter()
            .map(|h| h.msg_id)
            .collect();
        v.sort();
        let mut again = s.search_ids(&q).unwrap();
        again.sort();
        assert_eq!(v, again);
        v
    };
    let within = |names: &[&str]| SearchQuery {
        within_quarantines: Some(names.iter().map(|n| n.to_string()).collect()),
        ..SearchQuery::default()
    };
    let domains = |names: &[&str]| SearchQuery {
        recipient_domains: Some(names.iter().map(|n| n.to_string()).collect()),
        ..SearchQuery::default()
    };
    assert_eq!(ids(within(&["policy"])), vec![a, c]);
    assert_eq!(ids(within(&["Virus"])), vec![b, c]);
    assert_eq!(ids(within(&[])), Vec::<MsgId>::new());
    assert_eq!(ids(domains(&["one.example"])), vec![a, b]);
    assert_eq!(ids(domains(&["@TWO.example"])), vec![b, c]);
    assert_eq!(ids(domains(&[])), Vec::<MsgId>::new());
    let both = SearchQuery {
        recipient_domains: Some(vec!["one.example".into()]),
        ..within(&["Virus"])
    };
    assert_eq!(ids(both), vec![b]);
    // Combined with a named quarantine: both conditions hold.
    let named = SearchQuery {
        quarantine: Some("Policy".into()),
        ..domains(&["two.example"])
    };
    assert_eq!(ids(named), vec![c]);
    // A released message is no longer held in Policy.
    s.release(a, "Policy", "admin", T0).unwrap();
    assert_eq!(ids(within(&["Policy"])), vec![c]);
}

/// Creates the empty database `name` on the server of `admin_url` (a superuser's
/// connection string, `host=… dbname=…` form) and returns the connection string of it.
pub fn create_database(admin_url: &str, name: &str) -> String {
    assert!(
        name.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
        "a plain database name"
    );
    let mut c = ::postgres::Client::connect(admin_url, ::postgres::NoTls).unwrap();
    c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
    admin_url.replace("dbname=postgres", &format!("dbname={name}"))
}

/// A plain client for looking into a PostgreSQL store's tables from a test.
pub type PgClient = ::postgres::Client;

/// Connects to `url` without TLS (a test server's Unix socket).
pub fn client(url: &str) -> PgClient {
    ::postgres::Client::connect(url, ::postgres::NoTls).unwrap()
}
