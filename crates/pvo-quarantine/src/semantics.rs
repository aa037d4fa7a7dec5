//! The rules of the quarantine model, as pure functions over one message's record.
//!
//! A backend loads a [`Record`] inside a write transaction, calls [`plan`], writes the
//! [`Plan`]'s edits and commits. Keeping the rules here, away from SQL, is what lets a second
//! backend (PostgreSQL) reuse them unchanged: a backend only loads and stores.
//!
//! The rules (`docs/appliance.md`, Quarantines):
//! - A message is delivered only when released from all its quarantines; deleted from any
//!   one, it is deleted from all and never delivered.
//! - States only move forward. An action on a membership that is no longer held changes
//!   nothing and reports the current state ([`Outcome::Unchanged`]): two clicks, two
//!   administrators or a retry after a crash never release twice, because only the
//!   transaction that moves the last membership from held to released returns
//!   [`Outcome::Deliver`].
//! - Expiry re-checks the exit time inside the transaction, so a delay that commits between
//!   the sweeper's listing and its action wins.
//! - A release before the scheduled exit (manual, free-up-space, rescan) is *early*: the
//!   quarantine's early-release actions apply. An expiry release is not early.

use crate::error::{QuarantineError, Result};
use crate::model::{
    ActionReport, Actor, Cause, Change, DefaultAction, DelayBy, EarlyReleaseActions,
    MembershipState, MessageState, MsgId, Outcome, QuarantineId, Reason, ReasonKind,
};

/// One membership as the rules need it, with its quarantine's current settings.
#[derive(Debug, Clone)]
pub(crate) struct MemberRow {
    pub quarantine_id: QuarantineId,
    pub quarantine: String,
    pub default_action: DefaultAction,
    pub exempt: bool,
    pub early_release: EarlyReleaseActions,
    pub reason: Reason,
    pub state: MembershipState,
    pub exit_at: u64,
    pub early: bool,
}

/// A message as the rules need it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub msg_id: MsgId,
    pub gateway_mid: u64,
    pub state: MessageState,
    /// The message size (the backend adjusts the space counters with it).
    pub size: u64,
    pub members: Vec<MemberRow>,
}

/// Which memberships an operation selects (names already resolved to ids).
#[derive(Debug, Clone)]
pub(crate) enum Sel {
    Quarantine { id: QuarantineId, name: String },
    All,
    OutbreakRule(String),
}

/// An operation, as the store layer hands it to the rules.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Release(Actor),
    Delete(Actor),
    Delay(DelayBy, Actor),
    Move {
        to_id: QuarantineId,
        to_name: String,
        actor: Actor,
    },
    /// The default action of each selected membership whose exit has passed.
    Expire,
    /// The default action of each selected membership of a non-exempt quarantine, early.
    FreeUpSpace,
}

/// A write to one membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    Leave {
        quarantine_id: QuarantineId,
        state: MembershipState,
        cause: Cause,
        who: String,
        early: bool,
    },
    SetExit {
        quarantine_id: QuarantineId,
        exit_at: u64,
    },
    Move {
        from: QuarantineId,
        to: QuarantineId,
    },
}

/// A history line to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewHistory {
    pub who: String,
    pub action: &'static str,
    pub quarantine: Option<String>,
    pub detail: String,
}

/// Everything one action writes, and what it reports.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub edits: Vec<Edit>,
    pub message_state: Option<MessageState>,
    pub history: Vec<NewHistory>,
    pub report: ActionReport,
}

impl Plan {
    fn unchanged(rec: &Record) -> Plan {
        Plan {
            edits: Vec::new(),
            message_state: None,
            history: Vec::new(),
            report: ActionReport {
                msg_id: rec.msg_id,
                gateway_mid: rec.gateway_mid,
                changes: Vec::new(),
                outcome: Outcome::Unchanged {
                    msg_id: rec.msg_id,
                    state: rec.state,
                    remaining: held_names(rec.members.iter()),
                },
            },
        }
    }
}

fn held_names<'a>(members: impl Iterator<Item = &'a MemberRow>) -> Vec<String> {
    members
        .filter(|m| m.state == MembershipState::Held)
        .map(|m| m.quarantine.clone())
        .collect()
}

fn selected(m: &MemberRow, sel: &Sel) -> bool {
    match sel {
        Sel::Quarantine { id, .. } => m.quarantine_id == *id,
        Sel::All => true,
        Sel::OutbreakRule(rule) => {
            m.reason.kind == ReasonKind::Outbreak && m.reason.name.eq_ignore_ascii_case(rule)
        }
    }
}

/// The early-release actions a delivery must apply: those of the memberships released
/// before their exit, in membership order, skipping empty ones.
pub(crate) fn deliver_actions(members: &[MemberRow]) -> Vec<EarlyReleaseActions> {
    members
        .iter()
        .filter(|m| m.state == MembershipState::Released && m.early && !m.early_release.is_empty())
        .map(|m| m.early_release.clone())
        .collect()
}

/// Decides what `op` does to the memberships `sel` picks out of `rec` at time `now`.
pub(crate) fn plan(rec: &Record, sel: &Sel, op: &Op, now: u64) -> Result<Plan> {
    if let Sel::Quarantine { id, name } = sel {
        let present = rec.members.iter().any(|m| m.quarantine_id == *id);
        let move_done = matches!(op, Op::Move { to_id, .. }
            if rec.members.iter().any(|m| m.quarantine_id == *to_id));
        if !present && !move_done {
            return Err(QuarantineError::NotInQuarantine {
                msg_id: rec.msg_id,
                quarantine: name.clone(),
            });
        }
    }
    let held: Vec<usize> = rec
        .members
        .iter()
        .enumerate()
        .filter(|(_, m)| m.state == MembershipState::Held && selected(m, sel))
        .map(|(i, _)| i)
        .collect();
    match op {
        Op::Release(actor) => Ok(release(rec, &held, actor, now)),
        Op::Delete(actor) => Ok(delete(rec, &held, actor)),
        Op::Delay(by, actor) => Ok(delay(rec, &held, *by, actor, now)),
        Op::Move {
            to_id,
            to_name,
            actor,
        } => move_to(rec, sel, &held, *to_id, to_name, actor),
        Op::Expire => {
            let due: Vec<usize> = held
                .into_iter()
                .filter(|&i| rec.members[i].exit_at <= now)
                .collect();
            Ok(default_action(
                rec,
                &due,
                &Actor::system(Cause::Expired),
                now,
            ))
        }
        Op::FreeUpSpace => {
            let eligible: Vec<usize> = held
                .into_iter()
                .filter(|&i| !rec.members[i].exempt)
                .collect();
            Ok(default_action(
                rec,
                &eligible,
                &Actor::system(Cause::FreeUpSpace),
                now,
            ))
        }
    }
}

/// Applies each membership's default action; if any of them deletes, the message is deleted
/// (deleted from one quarantine means deleted from all), otherwise the others are released.
fn default_action(rec: &Record, idx: &[usize], actor: &Actor, now: u64) -> Plan {
    let deletes = idx
        .iter()
        .any(|&i| rec.members[i].default_action == DefaultAction::Delete);
    if deletes {
        delete(rec, idx, actor)
    } else {
        release(rec, idx, actor, now)
    }
}

fn release(rec: &Record, idx: &[usize], actor: &Actor, now: u64) -> Plan {
    if idx.is_empty() {
        return Plan::unchanged(rec);
    }
    let mut members = rec.members.clone();
    let mut edits = Vec::new();
    let mut history = Vec::new();
    let mut changes = Vec::new();
    for &i in idx {
        let m = &mut members[i];
        let early = actor.cause != Cause::Expired && now < m.exit_at;
        m.state = MembershipState::Released;
        m.early = early;
        edits.push(Edit::Leave {
            quarantine_id: m.quarantine_id,
            state: MembershipState::Released,
            cause: actor.cause,
            who: actor.who.clone(),
            early,
        });
        history.push(NewHistory {
            who: actor.who.clone(),
            action: "released",
            quarantine: Some(m.quarantine.clone()),
            detail: if early {
                format!("{} (early)", actor.cause)
            } else {
                actor.cause.to_string()
            },
        });
        changes.push(Change::Released {
            quarantine: m.quarantine.clone(),
            cause: actor.cause,
            early,
        });
    }
    let remaining = held_names(members.iter());
    let (message_state, outcome) = if remaining.is_empty() {
        history.push(NewHistory {
            who: actor.who.clone(),
            action: "released from all",
            quarantine: None,
            detail: String::new(),
        });
        (
            Some(MessageState::Released),
            Outcome::Deliver {
                msg_id: rec.msg_id,
                early_release_actions: deliver_actions(&members),
            },
        )
    } else {
        (
            None,
            Outcome::StillHeld {
                msg_id: rec.msg_id,
                remaining,
            },
        )
    };
    Plan {
        edits,
        message_state,
        history,
        report: ActionReport {
            msg_id: rec.msg_id,
            gateway_mid: rec.gateway_mid,
            changes,
            outcome,
        },
    }
}

fn delete(rec: &Record, idx: &[usize], actor: &Actor) -> Plan {
    if idx.is_empty() {
        return Plan::unchanged(rec);
    }
    // The selected memberships first, then every other held one: the message is gone.
    let mut order: Vec<usize> = idx.to_vec();
    order.extend(
        rec.members
            .iter()
            .enumerate()
            .filter(|(i, m)| m.state == MembershipState::Held && !idx.contains(i))
            .map(|(i, _)| i),
    );
    let mut edits = Vec::new();
    let mut history = Vec::new();
    let mut changes = Vec::new();
    for i in order {
        let m = &rec.members[i];
        edits.push(Edit::Leave {
            quarantine_id: m.quarantine_id,
            state: MembershipState::Deleted,
            cause: actor.cause,
            who: actor.who.clone(),
            early: false,
        });
        history.push(NewHistory {
            who: actor.who.clone(),
            action: "deleted",
            quarantine: Some(m.quarantine.clone()),
            detail: actor.cause.to_string(),
        });
        changes.push(Change::Deleted {
            quarantine: m.quarantine.clone(),
            cause: actor.cause,
        });
    }
    Plan {
        edits,
        message_state: Some(MessageState::Deleted),
        history,
        report: ActionReport {
            msg_id: rec.msg_id,
            gateway_mid: rec.gateway_mid,
            changes,
            outcome: Outcome::Deleted { msg_id: rec.msg_id },
        },
    }
}

fn delay(rec: &Record, idx: &[usize], by: DelayBy, actor: &Actor, now: u64) -> Plan {
    if idx.is_empty() {
        return Plan::unchanged(rec);
    }
    let mut edits = Vec::new();
    let mut history = Vec::new();
    let mut changes = Vec::new();
    for &i in idx {
        let m = &rec.members[i];
        let to = m.exit_at.max(now).saturating_add(by.secs());
        edits.push(Edit::SetExit {
            quarantine_id: m.quarantine_id,
            exit_at: to,
        });
        history.push(NewHistory {
            who: actor.who.clone(),
            action: "delayed",
            quarantine: Some(m.quarantine.clone()),
            detail: format!("exit {} -> {}", m.exit_at, to),
        });
        changes.push(Change::Delayed {
            quarantine: m.quarantine.clone(),
            from: m.exit_at,
            to,
        });
    }
    Plan {
        edits,
        message_state: None,
        history,
        report: ActionReport {
            msg_id: rec.msg_id,
            gateway_mid: rec.gateway_mid,
            changes,
            outcome: Outcome::StillHeld {
                msg_id: rec.msg_id,
                remaining: held_names(rec.members.iter()),
            },
        },
    }
}

fn move_to(
    rec: &Record,
    sel: &Sel,
    idx: &[usize],
    to_id: QuarantineId,
    to_name: &str,
    actor: &Actor,
) -> Result<Plan> {
    if matches!(sel, Sel::All) {
        return Err(QuarantineError::Invalid(
            "move needs the quarantine to move from".into(),
        ));
    }
    if idx.is_empty() {
        // Already moved (the source membership is gone and the target holds it), or no
        // longer held: a repeat changes nothing.
        return Ok(Plan::unchanged(rec));
    }
    if rec.members.iter().any(|m| m.quarantine_id == to_id) || idx.len() > 1 {
        return Err(QuarantineError::AlreadyInQuarantine {
            msg_id: rec.msg_id,
            quarantine: to_name.to_string(),
        });
    }
    let m = &rec.members[idx[0]];
    let remaining = rec
        .members
        .iter()
        .filter(|o| o.state == MembershipState::Held)
        .map(|o| {
            if o.quarantine_id == m.quarantine_id {
                to_name.to_string()
            } else {
                o.quarantine.clone()
            }
        })
        .collect();
    Ok(Plan {
        edits: vec![Edit::Move {
            from: m.quarantine_id,
            to: to_id,
        }],
        message_state: None,
        history: vec![NewHistory {
            who: actor.who.clone(),
            action: "moved",
            quarantine: Some(m.quarantine.clone()),
            detail: format!("to \"{to_name}\" ({})", actor.cause),
        }],
        report: ActionReport {
            msg_id: rec.msg_id,
            gateway_mid: rec.gateway_mid,
            changes: vec![Change::Moved {
                from: m.quarantine.clone(),
                to: to_name.to_string(),
            }],
            outcome: Outcome::StillHeld {
                msg_id: rec.msg_id,
                remaining,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: QuarantineId, name: &str, action: DefaultAction, exit_at: u64) -> MemberRow {
        MemberRow {
            quarantine_id: id,
            quarantine: name.into(),
            default_action: action,
            exempt: false,
            early_release: EarlyReleaseActions {
                subject_prepend: Some(format!("[{name}]")),
                ..Default::default()
            },
            reason: Reason::new(ReasonKind::ContentFilter, "f"),
            state: MembershipState::Held,
            exit_at,
            early: false,
        }
    }

    fn two() -> Record {
        Record {
            msg_id: 7,
            gateway_mid: 70,
            state: MessageState::Held,
            size: 100,
            members: vec![
                member(1, "Policy", DefaultAction::Delete, 1000),
                member(2, "Virus", DefaultAction::Release, 2000),
            ],
        }
    }

    fn sel(id: QuarantineId) -> Sel {
        Sel::Quarantine {
            id,
            name: format!("q{id}"),
        }
    }

    /// Applies a plan to a record the way a backend does, so sequences can be checked.
    fn apply(rec: &mut Record, p: &Plan) {
        for e in &p.edits {
            match e {
                Edit::Leave {
                    quarantine_id,
                    state,
                    early,
                    ..
                } => {
                    let m = rec
                        .members
                        .iter_mut()
                        .find(|m| m.quarantine_id == *quarantine_id)
                        .unwrap();
                    m.state = *state;
                    m.early = *early;
                }
                Edit::SetExit {
                    quarantine_id,
                    exit_at,
                } => {
                    rec.members
                        .iter_mut()
                        .find(|m| m.quarantine_id == *quarantine_id)
                        .unwrap()
                        .exit_at = *exit_at
                }
                Edit::Move { from, to } => {
                    rec.members
                        .iter_mut()
                        .find(|m| m.quarantine_id == *from)
                        .unwrap()
                        .quarantine_id = *to
                }
            }
        }
        if let Some(s) = p.message_state {
            rec.state = s;
        }
    }

    #[test]
    fn sequences() {
        let admin = Actor::manual("admin");
        // (steps, expected outcome kind of each step)
        type Steps = Vec<(Sel, Op)>;
        let cases: Vec<(&str, Steps, Vec<&str>)> = vec![
            (
                "release both",
                vec![
                    (sel(1), Op::Release(admin.clone())),
                    (sel(2), Op::Release(admin.clone())),
                ],
                vec!["still", "deliver"],
            ),
            (
                "release twice is a no-op",
                vec![
                    (sel(1), Op::Release(admin.clone())),
                    (sel(1), Op::Release(admin.clone())),
                    (sel(2), Op::Release(admin.clone())),
                    (sel(2), Op::Release(admin.clone())),
                ],
                vec!["still", "unchanged", "deliver", "unchanged"],
            ),
            (
                "delete from one, then release the other",
                vec![
                    (sel(1), Op::Delete(admin.clone())),
                    (sel(2), Op::Release(admin.clone())),
                ],
                vec!["deleted", "unchanged"],
            ),
            (
                "release one, delete the other",
                vec![
                    (sel(1), Op::Release(admin.clone())),
                    (sel(2), Op::Delete(admin.clone())),
                    (sel(1), Op::Release(admin.clone())),
                ],
                vec!["still", "deleted", "unchanged"],
            ),
            (
                "release all",
                vec![
                    (Sel::All, Op::Release(admin.clone())),
                    (Sel::All, Op::Release(admin.clone())),
                ],
                vec!["deliver", "unchanged"],
            ),
            (
                "expiry before the exit does nothing",
                vec![(sel(1), Op::Expire)],
                vec!["unchanged"],
            ),
        ];
        for (name, steps, want) in cases {
            let mut rec = two();
            let mut got = Vec::new();
            for (s, op) in &steps {
                let p = plan(&rec, s, op, 500).unwrap();
                got.push(match p.report.outcome {
                    Outcome::Deliver { .. } => "deliver",
                    Outcome::StillHeld { .. } => "still",
                    Outcome::Deleted { .. } => "deleted",
                    Outcome::Unchanged { .. } => "unchanged",
                });
                apply(&mut rec, &p);
            }
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn early_actions_only_from_early_releases() {
        let mut rec = two();
        // Policy released manually before its exit: early.
        let p = plan(&rec, &sel(1), &Op::Release(Actor::manual("a")), 500).unwrap();
        apply(&mut rec, &p);
        // Virus expires (default release): not early.
        let p = plan(&rec, &sel(2), &Op::Expire, 2000).unwrap();
        match &p.report.outcome {
            Outcome::Deliver {
                early_release_actions,
                ..
            } => {
                assert_eq!(early_release_actions.len(), 1);
                assert_eq!(
                    early_release_actions[0].subject_prepend.as_deref(),
                    Some("[Policy]")
                );
            }
            o => panic!("unexpected {o:?}"),
        }
    }

    #[test]
    fn expiry_with_delete_default_deletes_everywhere() {
        let rec = two();
        let p = plan(&rec, &sel(1), &Op::Expire, 1000).unwrap();
        assert_eq!(p.message_state, Some(MessageState::Deleted));
        assert_eq!(p.edits.len(), 2);
        assert!(matches!(p.report.outcome, Outcome::Deleted { msg_id: 7 }));
    }

    #[test]
    fn move_keeps_and_repeats() {
        let mut rec = two();
        let op = Op::Move {
            to_id: 9,
            to_name: "Custom".into(),
            actor: Actor::manual("a"),
        };
        let p = plan(&rec, &sel(1), &op, 0).unwrap();
        assert_eq!(p.edits, vec![Edit::Move { from: 1, to: 9 }]);
        apply(&mut rec, &p);
        let again = plan(&rec, &sel(1), &op, 0).unwrap();
        assert!(matches!(again.report.outcome, Outcome::Unchanged { .. }));
        // Into a quarantine it is already in.
        let err = plan(
            &rec,
            &sel(9),
            &Op::Move {
                to_id: 2,
                to_name: "Virus".into(),
                actor: Actor::manual("a"),
            },
            0,
        )
        .unwrap_err();
        assert!(matches!(err, QuarantineError::AlreadyInQuarantine { .. }));
        assert!(matches!(
            plan(&rec, &Sel::All, &op, 0).unwrap_err(),
            QuarantineError::Invalid(_)
        ));
    }

    #[test]
    fn not_in_quarantine() {
        let err = plan(&two(), &sel(3), &Op::Release(Actor::manual("a")), 0).unwrap_err();
        assert!(matches!(
            err,
            QuarantineError::NotInQuarantine { msg_id: 7, .. }
        ));
    }

    #[test]
    fn delay_from_now_when_overdue() {
        let rec = two();
        let p = plan(
            &rec,
            &sel(1),
            &Op::Delay(DelayBy::Hours8, Actor::manual("a")),
            5000,
        )
        .unwrap();
        assert_eq!(
            p.edits,
            vec![Edit::SetExit {
                quarantine_id: 1,
                exit_at: 5000 + 8 * 3600
            }]
        );
    }
}
