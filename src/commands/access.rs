//! Who may run what: the one table from command (and action) to the permission it needs,
//! checked by [`super::dispatch_as`] before any handler runs, and what goes into the
//! audit trail afterwards.
//!
//! The table is an exhaustive match on [`Command`]: a new command does not compile
//! until someone decides what it needs. The roles behind each permission are in
//! `crate::core::users` (its module documentation has the whole matrix).

use serde_json::Value;

use super::command::{
    text, ApplianceAction, ClusterAction, Command, DeliveryConfigCmd, FeatureKeyAction, List,
    ListAction, ListenerAction, PvoAction, QuarantineCmd, RouteAction, SslConfigCmd, UserAction,
    UserSub,
};
use crate::commands::protocol::Response;
use crate::core::users::{roles_with, Identity, Perm, RoleDef};

/// What a command needs: a permission, or nothing (a user's own password and keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub perm: Option<Perm>,
    /// What the refusal says the role cannot do.
    pub what: &'static str,
}

impl Need {
    fn perm(p: Perm) -> Need {
        Need {
            perm: Some(p),
            what: p.refusal(),
        }
    }
}

/// The table: each command (and for some, its action) to what it needs. An exhaustive
/// match, so a new command or action does not compile until someone decides.
pub fn required(command: &Command, user: &str) -> Need {
    use Command as C;
    let monitor = Need::perm(Perm::Monitor);
    let operate = Need::perm(Perm::Operate);
    let configure = Need::perm(Perm::Configure);
    let read_if = |read: bool| if read { monitor } else { configure };
    match command {
        // Read-only system commands.
        C::Status(_)
        | C::TopHosts(_)
        | C::HostStatus(_)
        | C::ShowRecipients(_)
        | C::OutbreakStatus(_)
        | C::CommitDetail(_)
        | C::ShowConfig(_)
        | C::Telnet(_)
        | C::TlsVerify(_)
        | C::Diagnose(_)
        | C::ClusterCheck(_) => monitor,
        C::ClusterConfig(a) => match a.action {
            ClusterAction::List | ClusterAction::Connstatus => monitor,
            // An Administrator, or a machine logged in with a join token.
            ClusterAction::Joininfo => Need::perm(Perm::JoinCluster),
            ClusterAction::Create
            | ClusterAction::Join
            | ClusterAction::Addgroup
            | ClusterAction::Setgroup
            | ClusterAction::Renamegroup
            | ClusterAction::Deletegroup
            | ClusterAction::Removemachine
            | ClusterAction::Disconnect
            | ClusterAction::Reconnect
            | ClusterAction::Copysettings
            | ClusterAction::Movesettings
            | ClusterAction::Deletesettings
            | ClusterAction::Jointoken
            | ClusterAction::JointokenList
            | ClusterAction::JointokenRevoke => configure,
        },
        C::FeatureKey(a) => read_if(a.action == FeatureKeyAction::List),
        C::PvoConfig(a) => read_if(a.action == PvoAction::Status),
        C::ApplianceConfig(a) => read_if(a.action == ApplianceAction::Status),
        C::InterfaceConfig(a) => read_if(a.action == ListAction::List),
        C::ListenerConfig(a) => read_if(a.action == ListenerAction::List),
        C::SmtpRoutes(a) => read_if(a.action == RouteAction::List),
        C::QuarantineConfig(a) => read_if(a.action == ListAction::List),
        C::DeliveryConfig(DeliveryConfigCmd::Show) => monitor,
        C::DeliveryConfig(DeliveryConfigCmd::Set { .. }) => configure,
        C::SslConfig(SslConfigCmd::Show | SslConfigCmd::Verify) => monitor,
        C::SslConfig(SslConfigCmd::Set { .. }) => configure,
        // The running state, not the settings.
        C::Suspend(_)
        | C::Resume(_)
        | C::SuspendListeners(_)
        | C::ResumeListeners(_)
        | C::SuspendDel(_)
        | C::ResumeDel(_)
        | C::ResetCounters(_)
        | C::DeliverNow(_)
        | C::DeleteRecipients(_)
        | C::BounceRecipients(_)
        | C::RedirectRecipients(_) => operate,
        C::Quarantine(q) => match q {
            QuarantineCmd::Search(_) | QuarantineCmd::Show(_) => Need::perm(Perm::QuarantineView),
            QuarantineCmd::Release(_)
            | QuarantineCmd::Delete(_)
            | QuarantineCmd::Delay(_)
            | QuarantineCmd::Move(_)
            | QuarantineCmd::ManageByRule(_) => Need::perm(Perm::QuarantineAct),
            QuarantineCmd::Copy(_) => Need::perm(Perm::SendCopy),
            QuarantineCmd::Sweep(_) => configure,
        },
        C::UserConfig(a) => {
            let own = text(&a.name).is_some_and(|n| n.eq_ignore_ascii_case(user));
            match a.action {
                UserAction::Password | UserAction::Sshkey | UserAction::Token if own => Need {
                    perm: None,
                    what: "",
                },
                UserAction::List
                | UserAction::New
                | UserAction::Edit
                | UserAction::Delete
                | UserAction::Password
                | UserAction::Role
                | UserAction::Sshkey
                | UserAction::Token => Need {
                    perm: Some(Perm::Configure),
                    what: "manage users and roles",
                },
            }
        }
        C::AuditLog(_) => Need {
            perm: Some(Perm::Configure),
            what: "read the audit log",
        },
        C::Commit(_)
        | C::Rollback(_)
        | C::ClearChanges(_)
        | C::CpqEnroll(_)
        | C::OutbreakUpdate(_)
        | C::CpqCert(_) => configure,
    }
}

/// Checks `need` for `role` (`None`: the user's role no longer exists).
pub fn check(need: Need, id: &Identity, role: Option<&RoleDef>) -> Result<(), String> {
    let Some(perm) = need.perm else {
        return Ok(());
    };
    let Some(role) = role else {
        return Err(format!(
            "Role \"{}\" of user \"{}\" no longer exists; an Administrator must give the user another role.",
            id.role, id.user
        ));
    };
    if role.allows(perm) {
        return Ok(());
    }
    Err(format!(
        "Role \"{}\" cannot {}; it needs {}.",
        role.name(),
        need.what,
        roles_with(perm)
    ))
}

/// What the audit trail records of a command: `None` for reads that are not a view of
/// a message (status, search, listings).
pub fn audit_action(command: &Command, need: Need) -> Option<String> {
    match command {
        Command::Quarantine(QuarantineCmd::Show(_)) => Some("view".into()),
        Command::Quarantine(QuarantineCmd::Search(_)) => None,
        Command::Quarantine(q) => Some(q.name().to_string()),
        Command::UserConfig(a) => Some(match a.action {
            UserAction::Role | UserAction::Sshkey | UserAction::Token => {
                format!("{}-{}", a.action.name(), a.sub.unwrap_or_default().name())
            }
            other => format!("user-{}", other.name()),
        })
        .filter(|a| !a.ends_with("-list")),
        Command::AuditLog(_) => None,
        _ if need.perm == Some(Perm::Monitor) => None,
        other => Some(other.name()),
    }
}

/// The command as the audit trail names it: the command and its action.
pub fn audit_command(command: &Command) -> String {
    match command.action() {
        Some(a) => format!("{} {a}", command.name()),
        None => command.name(),
    }
}

/// The MIDs a command named or acted on: those of the request, else those in the
/// answer's results (an action on every result of a search).
pub fn mids_of(command: &Command, resp: &Response) -> Vec<u64> {
    let mut mids: Vec<u64> = match command {
        Command::Quarantine(
            QuarantineCmd::Release(a)
            | QuarantineCmd::Delete(a)
            | QuarantineCmd::Delay(a)
            | QuarantineCmd::Move(a),
        ) => a.mids.clone(),
        Command::Quarantine(QuarantineCmd::Show(a)) => a.mid.into_iter().collect(),
        Command::Quarantine(QuarantineCmd::Copy(a)) => a.mid.into_iter().collect(),
        Command::AuditLog(a) => a.mid.into_iter().collect(),
        _ => Vec::new(),
    };
    if mids.is_empty() {
        if let Some(rs) = resp.data.get("results").and_then(Value::as_array) {
            mids.extend(
                rs.iter()
                    .filter_map(|r| r.get("mid").and_then(Value::as_u64)),
            );
        }
    }
    mids
}

/// The quarantine named by a search's filters.
fn searched(query: &Value) -> Option<&str> {
    query["quarantine"].as_str().filter(|s| !s.is_empty())
}

/// The quarantine a command was about, for the audit trail.
pub fn quarantine_of(command: &Command) -> Option<String> {
    match command {
        Command::Quarantine(QuarantineCmd::Move(a)) => {
            let q = text(&a.from)
                .or_else(|| text(&a.quarantine))
                .or_else(|| searched(&a.query));
            match (q, text(&a.to)) {
                (Some(f), Some(t)) => Some(format!("{f} -> {t}")),
                (q, _) => q.map(str::to_string),
            }
        }
        Command::Quarantine(
            QuarantineCmd::Release(a) | QuarantineCmd::Delete(a) | QuarantineCmd::Delay(a),
        ) => text(&a.from)
            .or_else(|| text(&a.quarantine))
            .or_else(|| searched(&a.query))
            .map(str::to_string),
        Command::Quarantine(QuarantineCmd::Search(a)) => searched(&a.query).map(str::to_string),
        _ => None,
    }
}

/// A short detail for the audit trail: never arguments wholesale (they may hold
/// passwords), only the few that say what was done.
pub fn detail_of(command: &Command, resp: &Response) -> String {
    if !resp.ok {
        let first = resp.text.lines().next().unwrap_or("");
        return first.chars().take(300).collect();
    }
    let mut parts = Vec::new();
    let mut add = |key: &str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            parts.push(format!("{key} {v}"));
        }
    };
    match command {
        Command::Commit(a) => {
            if let Some(c) = text(&a.comment) {
                add("comment:", Some(&c.chars().take(200).collect::<String>()));
            }
        }
        Command::Quarantine(
            QuarantineCmd::Release(a)
            | QuarantineCmd::Delete(a)
            | QuarantineCmd::Delay(a)
            | QuarantineCmd::Move(a),
        ) => add("by", text(&a.by)),
        Command::Quarantine(QuarantineCmd::ManageByRule(a)) => {
            add("by", text(&a.by));
            add("what", text(&a.what));
            add("rule", text(&a.rule));
        }
        Command::FeatureKey(a) => {
            add("feature", text(&a.feature));
            add("expires", text(&a.expires));
            add("days", a.days.map(|d| d.to_string()).as_deref());
        }
        Command::UserConfig(a) => {
            add("sub", a.sub.map(UserSub::name));
            add("name", text(&a.name));
            add("role", text(&a.role));
        }
        _ => {}
    }
    if let Command::Quarantine(QuarantineCmd::Copy(a)) = command {
        if let Some(to) = a.to.as_ref().and_then(List::array) {
            parts.push(format!("to {}", to.join(", ")));
        }
    }
    if let Command::Quarantine(
        QuarantineCmd::Release(a)
        | QuarantineCmd::Delete(a)
        | QuarantineCmd::Delay(a)
        | QuarantineCmd::Move(a),
    ) = command
    {
        if a.all_results {
            parts.push("all results of a search".into());
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::users::{Builtin, CustomRole, Origin};
    use serde_json::json;

    fn who(role: &str) -> Identity {
        Identity {
            user: "u".into(),
            role: role.into(),
            domains: vec![],
            from: Origin::Local,
        }
    }

    fn cmd(command: &str, args: Value) -> Command {
        Command::from_parts(command, args).unwrap()
    }

    /// An unknown command is refused before the table (by [`Command::from_parts`]).
    fn run(role: Builtin, command: &str, args: Value) -> Result<(), String> {
        let c = Command::from_parts(command, args).map_err(|e| e.text)?;
        let need = required(&c, "u");
        check(need, &who(role.name()), Some(&RoleDef::Builtin(role)))
    }

    #[test]
    fn table() {
        use Builtin::*;
        let q = |a: &str| json!({ "action": a });
        let cases: Vec<(Builtin, &str, Value, bool)> = vec![
            (Operator, "status", json!({}), true),
            (Technician, "status", json!({}), true),
            (Guest, "status", json!({}), false),
            (HelpDeskUser, "tophosts", json!({}), false),
            (Operator, "commit", json!({}), false),
            (Administrator, "commit", json!({}), true),
            (Operator, "listenerconfig", q("list"), true),
            (Operator, "listenerconfig", q("new"), false),
            (Operator, "deliveryconfig", json!({}), true),
            (
                Operator,
                "deliveryconfig",
                json!({ "interface": "Auto" }),
                false,
            ),
            (ReadOnlyOperator, "suspend", json!({}), false),
            (Technician, "suspend", json!({}), true),
            (Operator, "quarantine", q("search"), true),
            (Guest, "quarantine", q("show"), true),
            (Technician, "quarantine", q("search"), false),
            (ReadOnlyOperator, "quarantine", q("release"), false),
            (HelpDeskUser, "quarantine", q("delete"), true),
            (Operator, "quarantine", q("copy"), false),
            (Administrator, "quarantine", q("copy"), true),
            (Operator, "quarantine", q("sweep"), false),
            (Operator, "userconfig", q("new"), false),
            (
                Guest,
                "userconfig",
                json!({ "action": "password", "name": "U" }),
                true,
            ),
            (
                Guest,
                "userconfig",
                json!({ "action": "password", "name": "admin" }),
                false,
            ),
            (Operator, "pvoconfig", q("status"), true),
            (Operator, "pvoconfig", q("enable"), false),
            (Operator, "diagnose", json!({}), true),
            (Operator, "applianceconfig", q("list"), false),
            (Operator, "applianceconfig", q("status"), true),
            (Operator, "auditlog", json!({}), false),
            (Operator, "something-new", json!({}), false),
        ];
        for (role, cmd, args, ok) in cases {
            assert_eq!(
                run(role, cmd, args.clone()).is_ok(),
                ok,
                "{role:?} {cmd} {args}"
            );
        }
        assert_eq!(
            run(Operator, "commit", json!({})).unwrap_err(),
            "Role \"Operator\" cannot change the configuration; it needs Administrator."
        );
        let custom = RoleDef::Custom(CustomRole {
            name: "hd".into(),
            description: String::new(),
            quarantines: vec![],
            domains: vec![],
            view_only: false,
            matched_content: false,
        });
        let need = required(&cmd("quarantine", q("release")), "u");
        assert!(check(need, &who("hd"), Some(&custom)).is_ok());
        let need = required(&cmd("status", json!({})), "u");
        assert!(check(need, &who("hd"), Some(&custom)).is_err());
        assert!(check(need, &who("gone"), None)
            .unwrap_err()
            .contains("no longer exists"));
    }

    /// A machine logged in with a join token may ask where the store is, and nothing
    /// else: not even the read-only commands, nor the other cluster actions.
    #[test]
    fn a_joiner_may_only_ask_for_the_joininfo() {
        let joiner = who("Cluster Joiner");
        let q = |a: &str| json!({ "action": a });
        let need = required(&cmd("clusterconfig", q("joininfo")), "pvojoin");
        assert!(check(need, &joiner, Some(&RoleDef::Joiner)).is_ok());
        for (c, args) in [
            ("clusterconfig", q("list")),
            ("clusterconfig", q("jointoken")),
            ("clusterconfig", q("join")),
            ("status", json!({})),
            ("userconfig", q("list")),
            ("commit", json!({})),
        ] {
            let need = required(&cmd(c, args.clone()), "pvojoin");
            let refused = check(need, &joiner, Some(&RoleDef::Joiner)).unwrap_err();
            assert!(
                refused.starts_with("Role \"Cluster Joiner\" cannot"),
                "{c} {args}: {refused}"
            );
        }
        // The password path: an Administrator may, an Operator may not.
        assert!(run(Builtin::Administrator, "clusterconfig", q("joininfo")).is_ok());
        assert!(run(Builtin::Operator, "clusterconfig", q("joininfo")).is_err());
        assert!(run(Builtin::Operator, "clusterconfig", q("jointoken-list")).is_err());
    }

    #[test]
    fn reads_and_changes_need_different_permissions() {
        use Builtin::*;
        let q = |a: &str| json!({ "action": a });
        let cases: Vec<(Builtin, &str, Value, bool)> = vec![
            (
                ReadOnlyOperator,
                "deliveryconfig",
                json!({ "interface": null }),
                true,
            ),
            (
                ReadOnlyOperator,
                "deliveryconfig",
                json!({ "max_concurrency": 5 }),
                false,
            ),
            (Operator, "sslconfig", json!({ "action": "verify" }), true),
            (
                Operator,
                "sslconfig",
                json!({ "direction": "inbound" }),
                false,
            ),
            (Operator, "smtproutes", json!({}), true),
            (Operator, "smtproutes", json!({ "action": "clear" }), false),
            (
                Operator,
                "quarantineconfig",
                json!({ "action": "list" }),
                true,
            ),
            (
                Operator,
                "quarantineconfig",
                json!({ "action": "delete", "name": "X" }),
                false,
            ),
            (
                Operator,
                "applianceconfig",
                json!({ "action": "new" }),
                false,
            ),
            (
                Guest,
                "userconfig",
                json!({ "action": "sshkey", "sub": "add", "name": "u" }),
                true,
            ),
            (
                Guest,
                "userconfig",
                json!({ "action": "role", "name": "u" }),
                false,
            ),
            (Technician, "resume", json!({}), true),
            (Guest, "resume", json!({}), false),
            (Operator, "cpqcert", json!({}), false),
            (Administrator, "auditlog", json!({}), true),
            (Operator, "featurekey", json!({}), true),
            (ReadOnlyOperator, "featurekey", q("list"), true),
            (Guest, "featurekey", q("list"), false),
            (Operator, "featurekey", q("add"), false),
            (Operator, "featurekey", q("remove"), false),
            (Administrator, "featurekey", q("add"), true),
            (Administrator, "featurekey", q("remove"), true),
        ];
        for (role, cmd, args, ok) in cases {
            assert_eq!(
                run(role, cmd, args.clone()).is_ok(),
                ok,
                "{role:?} {cmd} {args}"
            );
        }
        assert_eq!(
            run(Operator, "auditlog", json!({})).unwrap_err(),
            "Role \"Operator\" cannot read the audit log; it needs Administrator."
        );
    }

    #[test]
    fn audit_names() {
        let action = |c: &str, a: Value| {
            let c = cmd(c, a);
            audit_action(&c, required(&c, "u"))
        };
        assert_eq!(
            action("quarantine", json!({ "action": "show", "mid": 4 })).as_deref(),
            Some("view")
        );
        assert_eq!(action("quarantine", json!({ "action": "search" })), None);
        assert_eq!(action("status", json!({})), None);
        assert_eq!(action("commit", json!({})).as_deref(), Some("commit"));
        assert_eq!(
            action("userconfig", json!({ "action": "role", "sub": "new" })).as_deref(),
            Some("role-new")
        );
        assert_eq!(action("userconfig", json!({ "action": "list" })), None);
        let a = cmd(
            "quarantine",
            json!({ "action": "move", "mids": [1, 2], "from": "Policy", "to": "Virus" }),
        );
        assert_eq!(quarantine_of(&a).as_deref(), Some("Policy -> Virus"));
        assert_eq!(mids_of(&a, &Response::ok("", json!({}))), vec![1, 2]);
    }
}
