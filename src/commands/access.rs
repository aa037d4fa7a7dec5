//! Who may run what: the one table from command (and action) to the permission it needs,
//! checked by [`super::dispatch_as`] before any handler runs, and what goes into the
//! audit trail afterwards.
//!
//! A command missing from the table needs Administrator, so a new command is closed
//! until someone decides otherwise. The roles behind each permission are in
//! `crate::users` (its module documentation has the whole matrix).

use serde_json::Value;

use super::arg_str;
use crate::admin::Response;
use crate::users::{roles_with, Identity, Perm, RoleDef};

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

/// The table: command name (and for some, the action) to what it needs.
pub fn required(command: &str, args: &Value, user: &str) -> Need {
    let action = arg_str(args, "action");
    let listing = action.is_none_or(|a| a == "list");
    match command {
        // Read-only system commands.
        "status" | "tophosts" | "hoststatus" | "showrecipients" | "outbreakstatus"
        | "commitdetail" | "showconfig" | "telnet" | "tlsverify" | "diagnose" => {
            Need::perm(Perm::Monitor)
        }
        "pvoconfig" | "applianceconfig" if action == Some("status") => Need::perm(Perm::Monitor),
        "interfaceconfig" | "listenerconfig" | "smtproutes" | "quarantineconfig" if listing => {
            Need::perm(Perm::Monitor)
        }
        "deliveryconfig"
            if args.get("interface").is_none_or(Value::is_null)
                && args.get("max_concurrency").is_none_or(Value::is_null) =>
        {
            Need::perm(Perm::Monitor)
        }
        "sslconfig"
            if ["direction", "versions", "ciphers"]
                .iter()
                .all(|k| args.get(*k).is_none_or(Value::is_null)) =>
        {
            Need::perm(Perm::Monitor)
        }
        // The running state, not the settings.
        "suspend" | "resume" | "suspendlisteners" | "resumelisteners" | "suspenddel"
        | "resumedel" | "resetcounters" | "delivernow" | "deleterecipients"
        | "bouncerecipients" | "redirectrecipients" => Need::perm(Perm::Operate),
        "quarantine" => match action.unwrap_or("") {
            "search" | "show" => Need::perm(Perm::QuarantineView),
            "release" | "delete" | "delay" | "move" | "manage-by-rule" => {
                Need::perm(Perm::QuarantineAct)
            }
            "copy" => Need::perm(Perm::SendCopy),
            _ => Need::perm(Perm::Configure),
        },
        "userconfig" => {
            let own = arg_str(args, "name").is_some_and(|n| n.eq_ignore_ascii_case(user));
            match action.unwrap_or("list") {
                "password" | "sshkey" | "token" if own => Need {
                    perm: None,
                    what: "",
                },
                _ => Need {
                    perm: Some(Perm::Configure),
                    what: "manage users and roles",
                },
            }
        }
        "auditlog" => Need {
            perm: Some(Perm::Configure),
            what: "read the audit log",
        },
        // commit, rollback, clearchanges, every change of settings, outbreakupdate,
        // quarantine sweep, cpqenroll, applianceconfig, pvoconfig, and anything new.
        _ => Need::perm(Perm::Configure),
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
pub fn audit_action(command: &str, args: &Value, need: Need) -> Option<String> {
    let action = arg_str(args, "action").unwrap_or("");
    match command {
        "quarantine" => match action {
            "show" => Some("view".into()),
            "search" => None,
            other => Some(other.to_string()),
        },
        "userconfig" => Some(match action {
            "role" | "sshkey" | "token" => {
                format!("{action}-{}", arg_str(args, "sub").unwrap_or("list"))
            }
            "" => "user-list".into(),
            other => format!("user-{other}"),
        })
        .filter(|a| !a.ends_with("-list")),
        "auditlog" => None,
        _ if need.perm == Some(Perm::Monitor) => None,
        other => Some(other.to_string()),
    }
}

/// The MIDs a command named or acted on: `mids`/`mid` of the request, else those in the
/// answer's results (an action on every result of a search).
pub fn mids_of(args: &Value, resp: &Response) -> Vec<u64> {
    let mut mids: Vec<u64> = args
        .get("mids")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    if let Some(m) = args.get("mid").and_then(Value::as_u64) {
        mids.push(m);
    }
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

/// The quarantine a command was about, for the audit trail.
pub fn quarantine_of(args: &Value) -> Option<String> {
    let from = arg_str(args, "from").or_else(|| arg_str(args, "quarantine"));
    let q = from.or_else(|| {
        args["query"]["quarantine"]
            .as_str()
            .filter(|s| !s.is_empty())
    });
    match (q, arg_str(args, "to")) {
        (Some(f), Some(t)) if arg_str(args, "action") == Some("move") => {
            Some(format!("{f} -> {t}"))
        }
        (q, _) => q.map(str::to_string),
    }
}

/// A short detail for the audit trail: never arguments wholesale (they may hold
/// passwords), only the few that say what was done.
pub fn detail_of(command: &str, args: &Value, resp: &Response) -> String {
    if !resp.ok {
        let first = resp.text.lines().next().unwrap_or("");
        return first.chars().take(300).collect();
    }
    let mut parts = Vec::new();
    if command == "commit" {
        if let Some(c) = arg_str(args, "comment") {
            parts.push(format!(
                "comment: {}",
                c.chars().take(200).collect::<String>()
            ));
        }
    }
    for key in ["by", "what", "rule", "sub"] {
        if let Some(v) = arg_str(args, key) {
            parts.push(format!("{key} {v}"));
        }
    }
    if command == "userconfig" {
        for key in ["name", "role"] {
            if let Some(v) = arg_str(args, key) {
                parts.push(format!("{key} {v}"));
            }
        }
    }
    if command == "quarantine" && arg_str(args, "action") == Some("copy") {
        if let Some(to) = args.get("to").and_then(Value::as_array) {
            let list: Vec<&str> = to.iter().filter_map(Value::as_str).collect();
            parts.push(format!("to {}", list.join(", ")));
        }
    }
    if args.get("all_results").and_then(Value::as_bool) == Some(true) {
        parts.push("all results of a search".into());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::{Builtin, CustomRole, Origin};
    use serde_json::json;

    fn who(role: &str) -> Identity {
        Identity {
            user: "u".into(),
            role: role.into(),
            domains: vec![],
            from: Origin::Local,
        }
    }

    fn run(role: Builtin, command: &str, args: Value) -> Result<(), String> {
        let need = required(command, &args, "u");
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
        let need = required("quarantine", &q("release"), "u");
        assert!(check(need, &who("hd"), Some(&custom)).is_ok());
        let need = required("status", &json!({}), "u");
        assert!(check(need, &who("hd"), Some(&custom)).is_err());
        assert!(check(need, &who("gone"), None)
            .unwrap_err()
            .contains("no longer exists"));
    }

    #[test]
    fn audit_names() {
        let need = |c: &str, a: &Value| required(c, a, "u");
        let a = json!({ "action": "show", "mid": 4 });
        assert_eq!(
            audit_action("quarantine", &a, need("quarantine", &a)).as_deref(),
            Some("view")
        );
        let a = json!({ "action": "search" });
        assert_eq!(audit_action("quarantine", &a, need("quarantine", &a)), None);
        let a = json!({});
        assert_eq!(audit_action("status", &a, need("status", &a)), None);
        assert_eq!(
            audit_action("commit", &a, need("commit", &a)).as_deref(),
            Some("commit")
        );
        let a = json!({ "action": "role", "sub": "new" });
        assert_eq!(
            audit_action("userconfig", &a, need("userconfig", &a)).as_deref(),
            Some("role-new")
        );
        let a = json!({ "action": "list" });
        assert_eq!(audit_action("userconfig", &a, need("userconfig", &a)), None);
        let a = json!({ "action": "move", "mids": [1, 2], "from": "Policy", "to": "Virus" });
        assert_eq!(quarantine_of(&a).as_deref(), Some("Policy -> Virus"));
        assert_eq!(mids_of(&a, &Response::ok("", json!({}))), vec![1, 2]);
    }
}
