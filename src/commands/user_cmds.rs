//! `userconfig` (users, custom roles, SSH keys) and `auditlog`, executed inside the node.
//!
//! In a cluster the users are the cluster's (`core::cluster::users`): every change is
//! written to the cluster's store first, from the users revision this machine's copy is,
//! and refused when another came in between or when the store cannot be reached; users
//! are cluster-level only, so a `--level` other than `cluster` is refused.
//!
//! Changes apply at once (like `quarantineconfig`), not at `commit`: a locked-out
//! administrator must not need a commit to get back in. Every change is one write of the
//! user store (see `crate::core::users`) and one entry in the audit trail (written by
//! `dispatch_as`). A password given in a request is hashed here and never echoed; a
//! generated one is shown once, in the answer to the administrator who asked for it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::command::{text, AuditLogArgs, CommandError, Flag, UserAction, UserArgs};
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::core::clock::gmt;
use crate::core::cluster::store::{StoreError, UsersCommit};
use crate::core::cluster::users::{CLUSTER_LEVEL_ONLY, UNREACHABLE};
use crate::core::events::Event;
use crate::core::state::Handles;
use crate::core::users::{
    check_name, check_password, generate_password, hash_password, Builtin, CustomRole, Identity,
    User,
};

type Reply = Result<Response, CommandError>;

/// `userconfig`, on the blocking pool (the user store is files, and in a cluster the
/// cluster's store too).
pub async fn userconfig(
    shared: &Arc<Handles>,
    req: &Request,
    args: &UserArgs,
    id: &Identity,
) -> Response {
    if let Some(level) = &req.level {
        if !level.trim().eq_ignore_ascii_case("cluster") {
            return Response::fail(
                ErrorKind::Invalid,
                format!("userconfig --level {level}: {CLUSTER_LEVEL_ONLY}."),
            );
        }
    }
    let (s, a, i) = (shared.clone(), args.clone(), id.clone());
    tokio::task::spawn_blocking(move || userconfig_now(&s, &a, &i))
        .await
        .unwrap_or_else(|e| Err(format!("userconfig failed inside the node: {e}").into()))
        .unwrap_or_else(Response::from)
}

/// `auditlog`, on the blocking pool (the audit trail is a file).
pub async fn auditlog(shared: &Arc<Handles>, args: &AuditLogArgs) -> Response {
    let (s, a) = (shared.clone(), args.clone());
    tokio::task::spawn_blocking(move || auditlog_now(&s, &a))
        .await
        .unwrap_or_else(|e| Err(format!("auditlog failed inside the node: {e}").into()))
        .unwrap_or_else(Response::from)
}

fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; n];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            line.push_str(&format!("{c:<w$}  ", w = widths[i]));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn list_arg(list: &Option<Vec<String>>) -> Option<Vec<String>> {
    list.as_ref().map(|a| {
        a.iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    })
}

fn user_json(u: &User) -> Value {
    json!({
        "name": u.name,
        "full_name": u.full_name,
        "role": u.role,
        "enabled": u.enabled,
        "ssh_keys": u.ssh_keys.len(),
        "changed_at": u.changed_at,
    })
}

fn role_json(r: &CustomRole) -> Value {
    json!({
        "name": r.name,
        "description": r.description,
        "quarantines": r.quarantines,
        "domains": r.domains,
        "view_only": r.view_only,
        "matched_content": r.matched_content,
    })
}

fn list_users(shared: &Handles, prefix: String) -> Reply {
    let users = shared.access.users.users();
    let mut rows = vec![vec![
        "Name".to_string(),
        "Full name".into(),
        "Role".into(),
        "Status".into(),
    ]];
    for u in &users {
        rows.push(vec![
            u.name.clone(),
            u.full_name.clone(),
            u.role.clone(),
            if u.enabled { "enabled" } else { "disabled" }.into(),
        ]);
    }
    Ok(Response::ok(
        format!("{prefix}{}", table(&rows)),
        json!({ "users": users.iter().map(user_json).collect::<Vec<_>>() }),
    ))
}

/// The role named in a request, by its canonical name.
fn known_role(shared: &Handles, name: &str) -> Result<String, String> {
    match shared.access.users.role(name) {
        Some(r) => Ok(r.name().to_string()),
        None => {
            let mut all: Vec<String> = Builtin::ALL.iter().map(|b| b.name().to_string()).collect();
            all.extend(
                shared
                    .access
                    .users
                    .custom_roles()
                    .into_iter()
                    .map(|r| r.name),
            );
            Err(format!(
                "{name:?} is not a role; roles: {} (custom roles: `userconfig role new`)",
                all.join(", ")
            ))
        }
    }
}

fn find<'a>(users: &'a mut [User], name: &str) -> Result<&'a mut User, CommandError> {
    users
        .iter_mut()
        .find(|u| u.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            CommandError::not_found(format!(
                "There is no user \"{name}\"; `userconfig list` shows them."
            ))
        })
}

/// What a change of `args` is, for the cluster's users history (never a password).
fn what(args: &UserArgs) -> String {
    let mut out = format!("userconfig {}", args.action.name());
    if matches!(
        args.action,
        UserAction::Role | UserAction::Sshkey | UserAction::Token
    ) {
        out.push(' ');
        out.push_str(args.sub.unwrap_or_default().name());
    }
    if let Some(n) = text(&args.name) {
        out.push(' ');
        out.extend(n.trim().chars().filter(|c| !c.is_control()).take(64));
    }
    out
}

/// `Users::update` with the change's typed error kept: the store words its own
/// refusals (the last Administrator, a failed write). In a cluster the new base is
/// written to the cluster's store first, from the revision this machine's copy is.
fn update<T>(
    shared: &Handles,
    id: &Identity,
    args: &UserArgs,
    change: impl FnOnce(&mut Vec<User>, &mut Vec<CustomRole>) -> Result<T, CommandError>,
) -> Result<T, CommandError> {
    let mut failed = None;
    let mut refused = None;
    let mut committed = None;
    let wrapped = |users: &mut Vec<User>, roles: &mut Vec<CustomRole>| {
        change(users, roles).map_err(|e| {
            let text = e.text.clone();
            failed = Some(e);
            text
        })
    };
    let result = match shared.cluster.membership() {
        None => shared.access.users.update(wrapped),
        Some(membership) => {
            let store = shared.cluster.store().map_err(|e| {
                CommandError::unavailable(format!("Not changed: {UNREACHABLE} ({e})."))
            })?;
            let what = what(args);
            let author = id.user.clone();
            shared.access.users.update_through(wrapped, |base, users| {
                let change = UsersCommit {
                    base,
                    users: users.to_string(),
                    author: author.clone(),
                    machine: membership.machine.to_string(),
                    what: what.clone(),
                };
                match tokio::runtime::Handle::current().block_on(store.commit_users(&change)) {
                    Ok(r) => {
                        let n = r.number;
                        committed = Some(r);
                        Ok(n)
                    }
                    Err(e) => {
                        let text = e.to_string();
                        refused = Some(store_refusal(&e));
                        Err(text)
                    }
                }
            })
        }
    };
    match result {
        Ok(out) => {
            if let Some(r) = &committed {
                shared.mail.log.emit(Event::ClusterUsersCommitted {
                    by: &r.author,
                    revision: r.number,
                    what: &r.what,
                });
            }
            Ok(out)
        }
        Err(text) => Err(match (failed.take(), refused.take(), committed) {
            (Some(e), _, _) => e,
            (None, Some(e), _) => e,
            // In the cluster's store but not in this machine's copy: the member loop
            // takes it from the store when it hears of it.
            (None, None, Some(r)) => CommandError::unavailable(format!(
                "Changed in the cluster (users revision {}), but this machine's copy could not be written: {text}",
                r.number
            )),
            (None, None, None) => CommandError::invalid(text),
        }),
    }
}

/// A refusal of the cluster's store as the answer to a user change.
fn store_refusal(e: &StoreError) -> CommandError {
    match e {
        StoreError::UsersConflict(c) => CommandError::conflict(format!("Not changed: {c}")),
        e if e.unavailable() => {
            CommandError::unavailable(format!("Not changed: {UNREACHABLE} ({e})."))
        }
        e => {
            let r = super::cluster_cmds::store_error(e);
            CommandError::new(
                r.kind.unwrap_or(ErrorKind::Unavailable),
                format!("Not changed: {}", r.text),
            )
        }
    }
}

fn userconfig_now(shared: &Arc<Handles>, args: &UserArgs, id: &Identity) -> Reply {
    let now = crate::core::clock::unix_now();
    let name = || {
        text(&args.name)
            .map(str::trim)
            .map(str::to_string)
            .ok_or("give the user's name")
    };
    match args.action {
        UserAction::List => list_users(shared, String::new()),
        UserAction::New => {
            let name = name()?;
            check_name(&name, "user", false)?;
            let role = known_role(
                shared,
                text(&args.role).ok_or("userconfig new: give the role with --role")?,
            )?;
            let (password, generated) = match text(&args.password) {
                Some(p) => (p.to_string(), false),
                None => (generate_password(), true),
            };
            check_password(&password)?;
            let hash = hash_password(&password).map_err(|e| format!("{e:#}"))?;
            let full_name = text(&args.full_name).unwrap_or("").to_string();
            let n = name.clone();
            update(shared, id, args, move |users, _| {
                if users.iter().any(|u| u.name.eq_ignore_ascii_case(&n)) {
                    return Err(CommandError::conflict(format!(
                        "User \"{n}\" already exists; change it with `userconfig edit {n}`."
                    )));
                }
                users.push(User {
                    name: n,
                    full_name,
                    role,
                    enabled: true,
                    password: hash,
                    ssh_keys: Vec::new(),
                    api_tokens: Vec::new(),
                    changed_at: now,
                });
                Ok(())
            })?;
            let mut text = format!("User \"{name}\" created.");
            if generated {
                text.push_str(&format!(
                    " Its generated password (shown only now): {password}"
                ));
            }
            let mut resp = list_users(shared, format!("{text}\n\n"))?;
            resp.data["created"] = json!(name);
            if generated {
                resp.data["password"] = json!(password);
            }
            Ok(resp)
        }
        UserAction::Edit => {
            let name = name()?;
            let role = text(&args.role)
                .map(|r| known_role(shared, r))
                .transpose()?;
            let full_name = args.full_name.clone();
            let enabled = args.enabled;
            if role.is_none() && full_name.is_none() && enabled.is_none() {
                return Err(format!("userconfig edit {name}: nothing to change (--role, --full-name, --enable, --disable)").into());
            }
            let n = name.clone();
            let mut changes = Vec::new();
            if let Some(r) = &role {
                changes.push(format!("role {r}"));
            }
            if let Some(f) = &full_name {
                changes.push(format!("full name {f:?}"));
            }
            if let Some(e) = enabled {
                changes.push(if e { "enabled" } else { "disabled" }.to_string());
            }
            update(shared, id, args, move |users, _| {
                let u = find(users, &n)?;
                if let Some(r) = role {
                    u.role = r;
                }
                if let Some(f) = full_name {
                    u.full_name = f;
                }
                if let Some(e) = enabled {
                    u.enabled = e;
                }
                u.changed_at = now;
                Ok(())
            })?;
            list_users(
                shared,
                format!("User \"{name}\" changed: {}.\n\n", changes.join(", ")),
            )
        }
        UserAction::Delete => {
            let name = name()?;
            let n = name.clone();
            update(shared, id, args, move |users, _| {
                find(users, &n)?;
                users.retain(|u| !u.name.eq_ignore_ascii_case(&n));
                Ok(())
            })?;
            list_users(shared, format!("User \"{name}\" deleted.\n\n"))
        }
        UserAction::Password => {
            let name = name()?;
            let (password, generated) = match text(&args.password) {
                Some(p) => (p.to_string(), false),
                None => (generate_password(), true),
            };
            check_password(&password)?;
            let hash = hash_password(&password).map_err(|e| format!("{e:#}"))?;
            let n = name.clone();
            // The first password of admin is forgotten by the store once it changed.
            let canonical = update(shared, id, args, move |users, _| {
                let u = find(users, &n)?;
                u.password = hash;
                u.changed_at = now;
                Ok(u.name.clone())
            })?;
            let own = canonical.eq_ignore_ascii_case(&id.user);
            let mut text = format!(
                "The password of {} changed.",
                if own {
                    "your user".to_string()
                } else {
                    format!("user \"{canonical}\"")
                }
            );
            let mut data = json!({ "user": canonical });
            if generated {
                text.push_str(&format!(
                    " The generated password (shown only now): {password}"
                ));
                data["password"] = json!(password);
            }
            Ok(Response::ok(text, data))
        }
        UserAction::Role => role_cmd(shared, args, id),
        UserAction::Sshkey => sshkey_cmd(shared, args, id, now),
        UserAction::Token => token_cmd(shared, args, id, now),
    }
}

fn list_roles(shared: &Handles, prefix: String) -> Reply {
    let roles = shared.access.users.custom_roles();
    let mut text = prefix;
    text.push_str("Built-in roles: ");
    text.push_str(
        &Builtin::ALL
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", "),
    );
    text.push('\n');
    if roles.is_empty() {
        text.push_str("No custom roles (`userconfig role new --name NAME --quarantines Policy --domains example.com`).\n");
    } else {
        let mut rows = vec![vec![
            "Custom role".to_string(),
            "Quarantines".into(),
            "Recipient domains".into(),
            "Access".into(),
            "Matched content".into(),
            "Description".into(),
        ]];
        for r in &roles {
            rows.push(vec![
                r.name.clone(),
                if r.all_quarantines() {
                    "all".into()
                } else if r.quarantines.is_empty() {
                    "those whose access list names it".into()
                } else {
                    r.quarantines.join(", ")
                },
                if r.domains.is_empty() {
                    "all".into()
                } else {
                    r.domains.join(", ")
                },
                if r.view_only { "view" } else { "view, act" }.into(),
                if r.matched_content { "shown" } else { "hidden" }.into(),
                r.description.clone(),
            ]);
        }
        text.push_str(&table(&rows));
    }
    Ok(Response::ok(
        text,
        json!({
            "builtin": Builtin::ALL.iter().map(|b| b.name()).collect::<Vec<_>>(),
            "custom": roles.iter().map(role_json).collect::<Vec<_>>(),
        }),
    ))
}

fn role_cmd(shared: &Arc<Handles>, args: &UserArgs, id: &Identity) -> Reply {
    let sub = args.sub.unwrap_or_default().name();
    if sub == "list" {
        return list_roles(shared, String::new());
    }
    let name = text(&args.name)
        .map(str::trim)
        .ok_or("give the role's name")?
        .to_string();
    if Builtin::from_name(&name).is_some() {
        return Err(format!(
            "\"{name}\" is a built-in role; built-in roles cannot be created, changed or deleted."
        )
        .into());
    }
    let quarantines = list_arg(&args.quarantines).map(|qs| {
        if qs.iter().any(|q| q == "*" || q.eq_ignore_ascii_case("all")) {
            vec!["*".to_string()]
        } else {
            qs
        }
    });
    let domains = list_arg(&args.domains).map(|ds| {
        ds.into_iter()
            .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
            .collect::<Vec<_>>()
    });
    if let Some(ds) = &domains {
        for d in ds {
            if !d.contains('.') || d.contains(['@', ' ', '*']) {
                return Err(format!("{d:?} is not a domain (for example example.com)").into());
            }
        }
    }
    let view_only = args.view_only;
    let matched_content = match &args.matched_content {
        None => None,
        Some(Flag::Bool(b)) => Some(*b),
        Some(Flag::Word(s)) => {
            Some(yes_no(s).ok_or_else(|| format!("matched content: {s:?} is neither yes nor no"))?)
        }
    };
    let description = args.description.clone();
    let n = name.clone();
    let text = match sub {
        "new" => {
            check_name(&name, "role", true)?;
            update(shared, id, args, move |_, roles| {
                if roles.iter().any(|r| r.name.eq_ignore_ascii_case(&n)) {
                    return Err(CommandError::conflict(format!(
                        "Role \"{n}\" already exists; change it with `userconfig role edit`."
                    )));
                }
                roles.push(CustomRole {
                    name: n,
                    description: description.unwrap_or_default(),
                    quarantines: quarantines.unwrap_or_default(),
                    domains: domains.unwrap_or_default(),
                    view_only: view_only.unwrap_or(false),
                    matched_content: matched_content.unwrap_or(false),
                });
                Ok(())
            })?;
            format!("Custom role \"{name}\" created.\n\n")
        }
        "edit" => {
            update(shared, id, args, move |_, roles| {
                let r = roles
                    .iter_mut()
                    .find(|r| r.name.eq_ignore_ascii_case(&n))
                    .ok_or_else(|| {
                        CommandError::not_found(format!("There is no custom role \"{n}\"."))
                    })?;
                if let Some(q) = quarantines {
                    r.quarantines = q;
                }
                if let Some(d) = domains {
                    r.domains = d;
                }
                if let Some(v) = view_only {
                    r.view_only = v;
                }
                if let Some(m) = matched_content {
                    r.matched_content = m;
                }
                if let Some(d) = description {
                    r.description = d;
                }
                Ok(())
            })?;
            format!("Custom role \"{name}\" changed.\n\n")
        }
        "delete" => {
            update(shared, id, args, move |users, roles| {
                if !roles.iter().any(|r| r.name.eq_ignore_ascii_case(&n)) {
                    return Err(CommandError::not_found(format!(
                        "There is no custom role \"{n}\"."
                    )));
                }
                let holders: Vec<&str> = users
                    .iter()
                    .filter(|u| u.role.eq_ignore_ascii_case(&n))
                    .map(|u| u.name.as_str())
                    .collect();
                if !holders.is_empty() {
                    return Err(CommandError::conflict(format!(
                        "Role \"{n}\" is the role of {}; give them another role first (`userconfig edit NAME --role ROLE`).",
                        holders.join(", ")
                    )));
                }
                roles.retain(|r| !r.name.eq_ignore_ascii_case(&n));
                Ok(())
            })?;
            format!("Custom role \"{name}\" deleted.\n\n")
        }
        other => {
            return Err(format!(
                "userconfig role: unknown action {other:?}; allowed: list, new, edit, delete"
            )
            .into())
        }
    };
    list_roles(shared, text)
}

/// `yes`/`no` (also `true`/`false`, `on`/`off`), as `--matched-content` takes them.
fn yes_no(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "on" => Some(true),
        "no" | "n" | "false" | "off" => Some(false),
        _ => None,
    }
}

fn sshkey_cmd(shared: &Arc<Handles>, args: &UserArgs, id: &Identity, now: u64) -> Reply {
    let name = text(&args.name).ok_or("give the user's name")?.to_string();
    let fingerprint = |line: &str| {
        russh::keys::PublicKey::from_openssh(line)
            .map(|k| k.fingerprint(russh::keys::HashAlg::Sha256).to_string())
            .unwrap_or_else(|_| "(unreadable)".into())
    };
    let list = |prefix: String| -> Reply {
        let u =
            shared.access.users.user(&name).ok_or_else(|| {
                format!("There is no user \"{name}\"; `userconfig list` shows them.")
            })?;
        let mut text = prefix;
        let mut keys = Vec::new();
        if u.ssh_keys.is_empty() {
            text.push_str(&format!("User \"{}\" has no SSH keys.\n", u.name));
        } else {
            text.push_str(&format!("SSH keys of \"{}\":\n", u.name));
            for (i, k) in u.ssh_keys.iter().enumerate() {
                let comment = k.split_whitespace().nth(2).unwrap_or("");
                let fp = fingerprint(k);
                text.push_str(&format!("  {}. {fp} {comment}\n", i + 1));
                keys.push(
                    json!({ "index": i + 1, "fingerprint": fp, "comment": comment, "key": k }),
                );
            }
        }
        Ok(Response::ok(text, json!({ "user": u.name, "keys": keys })))
    };
    match args.sub.unwrap_or_default().name() {
        "list" => list(String::new()),
        "add" => {
            let line = text(&args.key)
                .ok_or("userconfig sshkey add: give the public key (one line of authorized_keys)")?
                .trim()
                .to_string();
            let key = russh::keys::PublicKey::from_openssh(&line).map_err(|e| {
                format!("That is not an OpenSSH public key ({e}); give one line such as the contents of ~/.ssh/id_ed25519.pub")
            })?;
            let fp = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
            let n = name.clone();
            update(shared, id, args, move |users, _| {
                let u = find(users, &n)?;
                if u.ssh_keys.iter().any(|k| {
                    russh::keys::PublicKey::from_openssh(k)
                        .is_ok_and(|k| k.key_data() == key.key_data())
                }) {
                    return Err(CommandError::conflict(format!(
                        "User \"{}\" already has the key {fp}.",
                        u.name
                    )));
                }
                u.ssh_keys.push(line);
                u.changed_at = now;
                Ok(())
            })?;
            list("SSH key added.\n".to_string())
        }
        "delete" => {
            let which = text(&args.key)
                .ok_or("userconfig sshkey delete: give the key's number, fingerprint or comment")?
                .trim()
                .to_string();
            let n = name.clone();
            update(shared, id, args, move |users, _| {
                let u = find(users, &n)?;
                let before = u.ssh_keys.len();
                let index = which.parse::<usize>().ok();
                let mut i = 0;
                u.ssh_keys.retain(|k| {
                    i += 1;
                    let comment = k.split_whitespace().nth(2).unwrap_or("");
                    !(index == Some(i)
                        || fingerprint(k) == which
                        || (!comment.is_empty() && comment == which))
                });
                if u.ssh_keys.len() == before {
                    return Err(CommandError::not_found(format!(
                        "User \"{}\" has no key {which:?}; `userconfig sshkey list {}` shows them.",
                        u.name, u.name
                    )));
                }
                u.changed_at = now;
                Ok(())
            })?;
            list("SSH key deleted.\n".to_string())
        }
        other => Err(format!(
            "userconfig sshkey: unknown action {other:?}; allowed: list, add, delete"
        )
        .into()),
    }
}

/// `userconfig token new|list|delete NAME`: REST API tokens; a new token is shown once.
fn token_cmd(shared: &Arc<Handles>, args: &UserArgs, id: &Identity, now: u64) -> Reply {
    let name = text(&args.name).ok_or("give the user's name")?.to_string();
    let list = |prefix: String, token: Option<(String, String)>| -> Reply {
        let u =
            shared.access.users.user(&name).ok_or_else(|| {
                format!("There is no user \"{name}\"; `userconfig list` shows them.")
            })?;
        let mut text = prefix;
        let tokens: Vec<Value> = u
            .api_tokens
            .iter()
            .map(|t| json!({ "name": t.name, "created": gmt(t.created_at) }))
            .collect();
        if u.api_tokens.is_empty() {
            text.push_str(&format!("User \"{}\" has no API tokens.\n", u.name));
        } else {
            text.push_str(&format!("API tokens of \"{}\":\n", u.name));
            for t in &u.api_tokens {
                text.push_str(&format!("  {} (created {})\n", t.name, gmt(t.created_at)));
            }
        }
        let mut data = json!({ "user": u.name, "tokens": tokens });
        if let Some((tname, token)) = token {
            data["token"] = json!(token);
            data["token_name"] = json!(tname);
        }
        Ok(Response::ok(text, data))
    };
    match args.sub.unwrap_or_default().name() {
        "list" => list(String::new(), None),
        "new" => {
            let tname = text(&args.token_name)
                .map(str::to_string)
                .unwrap_or_else(|| format!("token-{now}"));
            check_name(&tname, "token name", false)?;
            let token = crate::core::users::generate_token();
            let hash = crate::core::users::token_hash(&token);
            let (n, t) = (name.clone(), tname.clone());
            update(shared, id, args, move |users, _| {
                let u = find(users, &n)?;
                if u.api_tokens.iter().any(|x| x.name.eq_ignore_ascii_case(&t)) {
                    return Err(CommandError::conflict(format!(
                        "User \"{}\" already has a token {t:?}.",
                        u.name
                    )));
                }
                u.api_tokens.push(crate::core::users::ApiToken {
                    name: t,
                    sha256: hash,
                    created_at: now,
                });
                u.changed_at = now;
                Ok(())
            })?;
            list(
                format!("API token {tname:?} created; it is shown only now:\n  {token}\n"),
                Some((tname, token)),
            )
        }
        "delete" => {
            let tname = text(&args.token_name)
                .ok_or("userconfig token delete: give the token's name")?
                .to_string();
            let n = name.clone();
            update(shared, id, args, move |users, _| {
                let u = find(users, &n)?;
                let before = u.api_tokens.len();
                u.api_tokens
                    .retain(|x| !x.name.eq_ignore_ascii_case(&tname));
                if u.api_tokens.len() == before {
                    return Err(CommandError::not_found(format!(
                        "User \"{}\" has no token {tname:?}; `userconfig token list {}` shows them.",
                        u.name, u.name
                    )));
                }
                u.changed_at = now;
                Ok(())
            })?;
            list("API token deleted.\n".to_string(), None)
        }
        other => Err(format!(
            "userconfig token: unknown action {other:?}; allowed: list, new, delete"
        )
        .into()),
    }
}

fn auditlog_now(shared: &Arc<Handles>, args: &AuditLogArgs) -> Reply {
    let q = crate::core::audit::Query {
        user: text(&args.user).map(str::to_string),
        action: text(&args.audit_action).map(str::to_string),
        mid: args.mid,
        since: args.since,
        until: args.until,
        limit: args.limit.unwrap_or(100),
    };
    let entries = shared
        .access
        .audit
        .search(&q)
        .map_err(|e| format!("The audit trail could not be read: {e:#}"))?;
    let mut rows = vec![vec![
        "Time (GMT)".to_string(),
        "User".into(),
        "Role".into(),
        "From".into(),
        "Action".into(),
        "Quarantine".into(),
        "MIDs".into(),
        "Outcome".into(),
        "Detail".into(),
    ]];
    for e in entries.iter().rev() {
        rows.push(vec![
            gmt(e.at),
            e.user.clone(),
            e.role.clone(),
            e.from.clone(),
            e.action.clone(),
            e.quarantine.clone().unwrap_or_default(),
            e.mids
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(","),
            e.outcome.clone(),
            crate::commands::quarantine_cmds::clean(&e.detail),
        ]);
    }
    let text = if entries.is_empty() {
        "No audit entries match.\n".to_string()
    } else {
        let mut t = table(&rows);
        if entries.len() as u64 == q.limit {
            t.push_str(&format!(
                "(the newest {} entries; --limit N for more)\n",
                entries.len()
            ));
        }
        t
    };
    Ok(Response::ok(text, json!({ "entries": entries })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matched_content_flag_reads_yes_and_no_and_is_listed() {
        for (s, want) in [
            ("yes", Some(true)),
            ("No", Some(false)),
            ("true", Some(true)),
            ("off", Some(false)),
            ("maybe", None),
        ] {
            assert_eq!(yes_no(s), want, "{s}");
        }
        let r = CustomRole {
            name: "dlp-reviewers".into(),
            description: String::new(),
            quarantines: vec!["Policy".into()],
            domains: vec![],
            view_only: true,
            matched_content: true,
        };
        assert_eq!(role_json(&r)["matched_content"], true);
        assert_eq!(role_json(&r)["view_only"], true);
    }
}
