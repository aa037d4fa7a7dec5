//! Pending changes (commit, clear, rollback), quarantine settings and users.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response as HttpResponse;
use axum::Extension;
use serde_json::{json, Value};

use super::*;
use crate::admin::Response;

// ----------------------------------------------------------------------------------
// Pending changes: commit, clear, rollback
// ----------------------------------------------------------------------------------

pub(super) async fn changes(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let d = run(&shared, &c.id, "commitdetail", json!({})).await;
    let mut b = String::new();
    if !d.ok {
        b.push_str(&refusal(&d));
        return html(StatusCode::OK, page(&shared, &c, "Changes", &b));
    }
    let pending = d.data["pending"].as_bool().unwrap_or(false);
    let _ = write!(
        b,
        "<p id=\"pending\">{}</p>",
        if pending {
            "Changes are pending: they take effect when committed."
        } else {
            "No changes pending."
        }
    );
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/changes/commit\" class=\"stack narrowform\">{}<label for=\"comment\">Comment</label><input id=\"comment\" name=\"comment\" required><div><button type=\"submit\" id=\"commit\"{}>Commit</button></div></form>\
<form method=\"post\" action=\"/changes/clear\">{}<button type=\"submit\" id=\"clear\" class=\"danger\"{}>Clear changes</button></form>\
<form method=\"post\" action=\"/changes/rollback\">{}<label for=\"n\">Roll back to commit</label> <input id=\"n\" name=\"n\" type=\"number\" min=\"1\" required> <button type=\"submit\" id=\"rollback\" class=\"danger\">Roll back</button></form>",
        hidden("csrf", &c.csrf),
        if pending { "" } else { " disabled" },
        hidden("csrf", &c.csrf),
        if pending { "" } else { " disabled" },
        hidden("csrf", &c.csrf),
    );
    b.push_str(&pre(&d.text));
    html(StatusCode::OK, page(&shared, &c, "Changes", &b))
}

pub(super) async fn change_op(
    Path(op): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let r = match op.as_str() {
        "commit" => {
            let comment = field(&form, "comment").unwrap_or("").trim().to_string();
            run(&shared, &c.id, "commit", json!({ "comment": comment })).await
        }
        "clear" => run(&shared, &c.id, "clearchanges", json!({})).await,
        "rollback" => match field(&form, "n").and_then(|n| n.trim().parse::<u64>().ok()) {
            Some(n) => run(&shared, &c.id, "rollback", json!({ "n": n })).await,
            None => Response::error("Give the number of the commit to go back to."),
        },
        _ => Response::error(format!("Unknown change operation {op:?}.")),
    };
    outcome_page(
        &shared,
        &c,
        &r,
        "<a href=\"/changes\" id=\"back\">Back to the changes</a>",
        ("Done", "Not done"),
    )
}

// ----------------------------------------------------------------------------------
// Quarantine settings
// ----------------------------------------------------------------------------------

/// The names in an access list as `quarantineconfig list` shows it.
pub(super) fn access_names(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(access_names).collect(),
        Value::Object(m) => m.values().flat_map(access_names).collect(),
        _ => Vec::new(),
    }
}

pub(super) async fn quarantine_form(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let title = format!("Quarantine {name}");
    let list = run(
        &shared,
        &c.id,
        "quarantineconfig",
        json!({ "action": "list" }),
    )
    .await;
    if !list.ok {
        return html(StatusCode::OK, page(&shared, &c, &title, &refusal(&list)));
    }
    let Some(q) = list.data["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["name"].as_str() == Some(name.as_str()))
        .cloned()
    else {
        let body = format!(
            "<p class=\"err\">There is no quarantine named {}.</p>",
            esc(&name)
        );
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, &body));
    };
    let er = &q["early_release"];
    let er_s = |k: &str| esc(er[k].as_str().unwrap_or(""));
    let x_header = match (
        er["x_header"]["name"].as_str(),
        er["x_header"]["value"].as_str(),
    ) {
        (Some(n), Some(v)) => format!("{n}:{v}"),
        _ => String::new(),
    };
    let checked = |b: bool| if b { " checked" } else { "" };
    let action = q["default_action"].as_str().unwrap_or("delete");
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>{} messages, {} used. Changes apply at once (they are quarantine settings, not pending configuration). Only Administrators may change them.</p>\
<form method=\"post\" action=\"/quarantines/{}\" class=\"stack narrowform\">{}\
<label for=\"retention_hours\">Retention (hours)</label><input id=\"retention_hours\" name=\"retention_hours\" type=\"number\" min=\"1\" value=\"{}\" required>\
<label for=\"default_action\">Default action at the end of retention</label><select id=\"default_action\" name=\"default_action\"><option value=\"delete\"{}>delete</option><option value=\"release\"{}>release</option></select>\
<label><input type=\"checkbox\" name=\"exempt_free_up\" value=\"1\"{}> Exempt from free-up when space runs out</label>\
<fieldset><legend>Early release</legend>\
<label for=\"subject_prepend\">Prepend to the subject</label><input id=\"subject_prepend\" name=\"subject_prepend\" value=\"{}\">\
<label for=\"subject_append\">Append to the subject</label><input id=\"subject_append\" name=\"subject_append\" value=\"{}\">\
<label for=\"x_header\">Add a header (NAME:VALUE)</label><input id=\"x_header\" name=\"x_header\" value=\"{}\">\
<label><input type=\"checkbox\" name=\"strip_attachments\" value=\"1\"{}> Strip attachments</label></fieldset>\
<label for=\"access\">Access (roles and users, comma-separated; Administrators always)</label><input id=\"access\" name=\"access\" value=\"{}\">\
<div><button type=\"submit\" id=\"save\" accesskey=\"v\">Save</button></div></form>",
        q["messages"].as_u64().unwrap_or(0),
        esc(&bytes(q["space_used_bytes"].as_u64().unwrap_or(0))),
        enc(&name),
        hidden("csrf", &c.csrf),
        q["retention_secs"].as_u64().unwrap_or(0).div_ceil(3600),
        if action == "delete" { " selected" } else { "" },
        if action == "release" { " selected" } else { "" },
        checked(q["exempt_free_up"].as_bool().unwrap_or(false)),
        er_s("subject_prepend"),
        er_s("subject_append"),
        esc(&x_header),
        checked(er["strip_attachments"].as_bool().unwrap_or(false)),
        esc(&access_names(&q["access"]).join(", ")),
    );
    html(StatusCode::OK, page(&shared, &c, &title, &b))
}

pub(super) async fn quarantine_save(
    Path(name): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let text = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let r = match text("retention_hours").parse::<u64>() {
        Ok(h) if (1..=100_000).contains(&h) => {
            let access: Vec<String> = text("access")
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            let settings = json!({
                "retention_secs": h * 3600,
                "default_action": text("default_action"),
                "exempt_free_up": field(&form, "exempt_free_up").is_some(),
                "subject_prepend": text("subject_prepend"),
                "subject_append": text("subject_append"),
                "x_header": text("x_header"),
                "strip_attachments": field(&form, "strip_attachments").is_some(),
                "access": access,
            });
            run(
                &shared,
                &c.id,
                "quarantineconfig",
                json!({ "action": "edit", "name": name, "settings": settings }),
            )
            .await
        }
        _ => Response::error("Retention: give a number of hours (1 to 100000)."),
    };
    let back = format!("/quarantines/{}", enc(&name));
    let links = format!(
        "<a href=\"{}\" id=\"back\">Back to the settings</a>",
        esc(&back)
    );
    outcome_page(&shared, &c, &r, &links, ("Saved", "Not saved"))
}

// ----------------------------------------------------------------------------------
// Users
// ----------------------------------------------------------------------------------

pub(super) const BUILTIN_ROLES: [&str; 6] = [
    "Administrator",
    "Operator",
    "Read-Only Operator",
    "Technician",
    "Help Desk User",
    "Guest",
];

pub(super) async fn users(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = run(&shared, &c.id, "userconfig", json!({ "action": "list" })).await;
    if !r.ok {
        return html(StatusCode::OK, page(&shared, &c, "Users", &refusal(&r)));
    }
    let mut b = String::from("<table id=\"users\"><thead><tr><th scope=\"col\">User</th><th scope=\"col\">Full name</th><th scope=\"col\">Role</th><th scope=\"col\">State</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    for u in r.data["users"].as_array().into_iter().flatten() {
        let name = u["name"].as_str().unwrap_or("");
        let enabled = u["enabled"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/users/{}\" class=\"inline\">{}<button type=\"submit\" name=\"op\" value=\"{}\" aria-label=\"{} {}\">{}</button> <button type=\"submit\" name=\"op\" value=\"delete\" class=\"danger\" aria-label=\"Delete {}\">Delete</button></form></td></tr>",
            esc(name),
            esc(u["full_name"].as_str().unwrap_or("")),
            esc(u["role"].as_str().unwrap_or("")),
            if enabled { "enabled" } else { "disabled" },
            enc(name),
            hidden("csrf", &c.csrf),
            if enabled { "disable" } else { "enable" },
            if enabled { "Disable" } else { "Enable" },
            esc(name),
            if enabled { "Disable" } else { "Enable" },
            esc(name),
        );
    }
    b.push_str("</tbody></table><h2>New user</h2>");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/users\" class=\"stack narrowform\">{}\
<label for=\"u-name\">User name</label><input id=\"u-name\" name=\"name\" required autocomplete=\"off\">\
<label for=\"u-full\">Full name</label><input id=\"u-full\" name=\"full_name\">\
<label for=\"u-role\">Role</label><select id=\"u-role\" name=\"role\">",
        hidden("csrf", &c.csrf)
    );
    for role in BUILTIN_ROLES {
        let _ = write!(b, "<option>{}</option>", esc(role));
    }
    b.push_str("</select><label for=\"u-password\">Password</label><input id=\"u-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
<div><button type=\"submit\" id=\"create-user\">Create</button></div></form>");
    html(StatusCode::OK, page(&shared, &c, "Users", &b))
}

pub(super) fn user_result(shared: &Shared, c: &Caller, r: &Response) -> HttpResponse {
    outcome_page(
        shared,
        c,
        r,
        "<a href=\"/users\" id=\"back\">Back to the users</a>",
        ("Done", "Not done"),
    )
}

pub(super) async fn user_new(Post { shared, c, form }: Post) -> HttpResponse {
    let mut args = json!({ "action": "new" });
    for k in ["name", "full_name", "role", "password"] {
        if let Some(v) = form.iter().find(|(n, _)| n == k).map(|(_, v)| v) {
            let v = if k == "password" {
                v.as_str()
            } else {
                v.trim()
            };
            if !v.is_empty() {
                args[k] = json!(v);
            }
        }
    }
    let mut r = run(&shared, &c.id, "userconfig", args).await;
    // Never echo a password back into a page.
    if let Some(p) = r.data.get("password").and_then(Value::as_str) {
        if !p.is_empty() {
            r.text = r.text.replace(p, "(hidden)");
        }
    }
    user_result(&shared, &c, &r)
}

pub(super) async fn user_op(
    Path(name): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let args = match field(&form, "op").unwrap_or("") {
        "enable" => json!({ "action": "edit", "name": name, "enabled": true }),
        "disable" => json!({ "action": "edit", "name": name, "enabled": false }),
        "delete" => json!({ "action": "delete", "name": name }),
        other => {
            return user_result(
                &shared,
                &c,
                &Response::error(format!("Unknown user operation {other:?}.")),
            )
        }
    };
    let r = run(&shared, &c.id, "userconfig", args).await;
    user_result(&shared, &c, &r)
}
