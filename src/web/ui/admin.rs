//! Pending changes (commit, clear, rollback), quarantine settings, users (new, role,
//! password, enable/disable, delete) and custom roles (new, edit, delete).

use std::fmt::Write as _;

use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::admin::Response;

// ----------------------------------------------------------------------------------
// Pending changes: commit, clear, rollback
// ----------------------------------------------------------------------------------

pub(super) async fn changes(Viewer { shared, c }: Viewer) -> HttpResponse {
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
    Viewer { shared, c }: Viewer,
    Path(name): Path<String>,
) -> HttpResponse {
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
// Users and custom roles
// ----------------------------------------------------------------------------------

/// The routes of the custom roles (merged by `super::routes`; the users' routes are
/// there).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/roles", post(role_new))
        .route("/roles/{name}", get(role_form).post(role_op))
}

pub(super) const BUILTIN_ROLES: [&str; 6] = [
    "Administrator",
    "Operator",
    "Read-Only Operator",
    "Technician",
    "Help Desk User",
    "Guest",
];

/// (built-in role names, custom roles) of `userconfig role list`, or its refusal.
async fn roles_of(shared: &Arc<Shared>, c: &Caller) -> Result<(Vec<String>, Vec<Value>), Response> {
    let r = run(
        shared,
        &c.id,
        "userconfig",
        json!({ "action": "role", "sub": "list" }),
    )
    .await;
    if !r.ok {
        return Err(r);
    }
    let builtin: Vec<String> = r.data["builtin"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b.as_str().map(str::to_string))
        .collect();
    let builtin = if builtin.is_empty() {
        BUILTIN_ROLES.iter().map(|b| b.to_string()).collect()
    } else {
        builtin
    };
    Ok((
        builtin,
        r.data["custom"].as_array().cloned().unwrap_or_default(),
    ))
}

/// `<option>`s of every role, `selected` chosen.
fn role_options(builtin: &[String], custom: &[Value], selected: &str) -> String {
    let mut o = String::from("<optgroup label=\"Built-in roles\">");
    for r in builtin {
        let _ = write!(
            o,
            "<option{}>{}</option>",
            if r.eq_ignore_ascii_case(selected) {
                " selected"
            } else {
                ""
            },
            esc(r)
        );
    }
    o.push_str("</optgroup>");
    if !custom.is_empty() {
        o.push_str("<optgroup label=\"Custom roles\">");
        for r in custom {
            let n = r["name"].as_str().unwrap_or("");
            let _ = write!(
                o,
                "<option{}>{}</option>",
                if n.eq_ignore_ascii_case(selected) {
                    " selected"
                } else {
                    ""
                },
                esc(n)
            );
        }
        o.push_str("</optgroup>");
    }
    o
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}

pub(super) async fn users(Viewer { shared, c }: Viewer) -> HttpResponse {
    let r = run(&shared, &c.id, "userconfig", json!({ "action": "list" })).await;
    if !r.ok {
        return html(StatusCode::OK, page(&shared, &c, "Users", &refusal(&r)));
    }
    let (builtin, custom) = match roles_of(&shared, &c).await {
        Ok(x) => x,
        Err(e) => return html(StatusCode::OK, page(&shared, &c, "Users", &refusal(&e))),
    };
    let mut b = String::from("<section aria-labelledby=\"hu\"><h2 id=\"hu\">Users</h2><table id=\"users\"><thead><tr><th scope=\"col\">User</th><th scope=\"col\">Full name</th><th scope=\"col\">Role</th><th scope=\"col\">State</th><th scope=\"col\">Change role</th><th scope=\"col\">Reset password</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    for u in r.data["users"].as_array().into_iter().flatten() {
        let name = u["name"].as_str().unwrap_or("");
        let role = u["role"].as_str().unwrap_or("");
        let enabled = u["enabled"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{n}</th><td>{}</td><td class=\"role\">{}</td><td>{}</td>\
<td><form method=\"post\" action=\"/users/{path}\" class=\"inline\">{csrf}<label for=\"role-{n}\" class=\"vh\">Role of {n}</label><select id=\"role-{n}\" name=\"role\">{}</select> <button type=\"submit\" name=\"op\" value=\"role\" aria-label=\"Change the role of {n}\">Change</button></form></td>\
<td><form method=\"post\" action=\"/users/{path}\" class=\"inline\">{csrf}<label for=\"pw-{n}\" class=\"vh\">New password for {n}</label><input id=\"pw-{n}\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required size=\"12\"> <button type=\"submit\" name=\"op\" value=\"password\" aria-label=\"Reset the password of {n}\">Reset</button></form></td>\
<td><form method=\"post\" action=\"/users/{path}\" class=\"inline\">{csrf}<button type=\"submit\" name=\"op\" value=\"{}\" aria-label=\"{} {n}\">{}</button> <button type=\"submit\" name=\"op\" value=\"delete\" class=\"danger\" aria-label=\"Delete {n}\">Delete</button></form></td></tr>",
            esc(u["full_name"].as_str().unwrap_or("")),
            esc(role),
            if enabled { "enabled" } else { "disabled" },
            role_options(&builtin, &custom, role),
            if enabled { "disable" } else { "enable" },
            if enabled { "Disable" } else { "Enable" },
            if enabled { "Disable" } else { "Enable" },
            n = esc(name),
            path = esc(&enc(name)),
            csrf = hidden("csrf", &c.csrf),
        );
    }
    b.push_str("</tbody></table><h3>New user</h3>");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/users\" class=\"stack narrowform\">{}\
<label for=\"u-name\">User name</label><input id=\"u-name\" name=\"name\" required autocomplete=\"off\">\
<label for=\"u-full\">Full name</label><input id=\"u-full\" name=\"full_name\">\
<label for=\"u-role\">Role</label><select id=\"u-role\" name=\"role\">{}</select>\
<label for=\"u-password\">Password</label><input id=\"u-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
<div><button type=\"submit\" id=\"create-user\">Create</button></div></form></section>",
        hidden("csrf", &c.csrf),
        // Least privilege unless the Administrator picks more.
        role_options(&builtin, &custom, "Guest"),
    );

    // Custom roles.
    b.push_str("<section aria-labelledby=\"hr\"><h2 id=\"hr\">Custom roles</h2><p>A custom role sees and acts on the quarantines it names (or those whose access list names it), for the recipient domains it names (all when none).</p>");
    if custom.is_empty() {
        b.push_str("<p id=\"no-roles\">No custom roles.</p>");
    } else {
        b.push_str("<table id=\"roles\"><thead><tr><th scope=\"col\">Role</th><th scope=\"col\">Description</th><th scope=\"col\">Quarantines</th><th scope=\"col\">Recipient domains</th><th scope=\"col\">Access</th><th scope=\"col\">Matched content</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
        for r in &custom {
            let n = r["name"].as_str().unwrap_or("");
            let qs = strings(&r["quarantines"]);
            let ds = strings(&r["domains"]);
            let _ = write!(
                b,
                "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"quarantines\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td><a href=\"/roles/{path}\" aria-label=\"Edit role {0}\">Edit</a> <form method=\"post\" action=\"/roles/{path}\" class=\"inline\">{}<button type=\"submit\" name=\"op\" value=\"delete\" class=\"danger\" aria-label=\"Delete role {0}\">Delete</button></form></td></tr>",
                esc(n),
                esc(r["description"].as_str().unwrap_or("")),
                if qs.iter().any(|q| q == "*") {
                    "all".to_string()
                } else if qs.is_empty() {
                    "those whose access list names it".to_string()
                } else {
                    esc(&qs.join(", "))
                },
                if ds.is_empty() { "all".to_string() } else { esc(&ds.join(", ")) },
                if r["view_only"].as_bool().unwrap_or(false) { "view only" } else { "view and act" },
                match r["matched_content"].as_bool() {
                    Some(true) => "may see",
                    Some(false) => "hidden",
                    None => "–",
                },
                hidden("csrf", &c.csrf),
                path = esc(&enc(n)),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("<h3>New custom role</h3>");
    b.push_str(&role_fields(&shared, &c, None).await);
    b.push_str("</section>");
    html(StatusCode::OK, page(&shared, &c, "Users and roles", &b))
}

/// The form of a new role (`None`) or of an existing one.
async fn role_fields(shared: &Arc<Shared>, c: &Caller, role: Option<&Value>) -> String {
    let (names, refused) = match quarantine_names(shared, c).await {
        Ok(n) => (n, None),
        Err(r) => (Vec::new(), Some(r)),
    };
    let chosen = role.map(|r| strings(&r["quarantines"])).unwrap_or_default();
    let all = chosen.iter().any(|q| q == "*");
    let checked = |b: bool| if b { " checked" } else { "" };
    let (action, p) = match role {
        None => ("/roles".to_string(), "r"),
        Some(r) => (
            format!("/roles/{}", enc(r["name"].as_str().unwrap_or(""))),
            "e",
        ),
    };
    let mut f = format!(
        "<form method=\"post\" action=\"{}\" class=\"stack narrowform\" id=\"{}\">{}",
        esc(&action),
        if role.is_none() {
            "new-role"
        } else {
            "edit-role"
        },
        hidden("csrf", &c.csrf)
    );
    match role {
        None => {
            let _ = write!(f, "<label for=\"{p}-name\">Role name</label><input id=\"{p}-name\" name=\"name\" required autocomplete=\"off\" aria-describedby=\"{p}-name-help\"><small id=\"{p}-name-help\">letters, digits, spaces, '.', '_' and '-' (at most 64)</small>");
        }
        Some(_) => f.push_str(&hidden("op", "edit")),
    }
    let _ = write!(
        f,
        "<label for=\"{p}-description\">Description</label><input id=\"{p}-description\" name=\"description\" value=\"{}\">\
<fieldset><legend>Quarantines</legend><label><input type=\"checkbox\" name=\"quarantine\" value=\"*\" id=\"{p}-q-all\"{}> All quarantines</label>",
        esc(role.and_then(|r| r["description"].as_str()).unwrap_or("")),
        checked(all),
    );
    if let Some(r) = &refused {
        f.push_str(&refusal(r));
    }
    for (i, n) in names.iter().enumerate() {
        let _ = write!(
            f,
            "<label><input type=\"checkbox\" name=\"quarantine\" value=\"{}\" id=\"{p}-q-{i}\"{}> {}</label>",
            esc(n),
            checked(chosen.iter().any(|c| c.eq_ignore_ascii_case(n))),
            esc(n)
        );
    }
    let _ = write!(
        f,
        "<small>None checked: the quarantines whose access list names the role.</small></fieldset>\
<label for=\"{p}-domains\">Recipient domains (comma-separated; empty: all)</label><input id=\"{p}-domains\" name=\"domains\" value=\"{}\" autocomplete=\"off\">\
<label><input type=\"checkbox\" name=\"view_only\" value=\"1\" id=\"{p}-view-only\"{}> View only (may not release, delete, delay or move)</label>\
<label><input type=\"checkbox\" name=\"matched_content\" value=\"1\" id=\"{p}-matched-content\"{}> May see matched content (what a filter or DLP rule matched)</label>\
<div><button type=\"submit\" id=\"{}\">{}</button></div></form>",
        esc(&role.map(|r| strings(&r["domains"]).join(", ")).unwrap_or_default()),
        checked(role.is_some_and(|r| r["view_only"].as_bool().unwrap_or(false))),
        checked(role.is_some_and(|r| r["matched_content"].as_bool().unwrap_or(false))),
        if role.is_none() { "create-role" } else { "save-role" },
        if role.is_none() { "Create the role" } else { "Save" },
    );
    f
}

/// The `userconfig role new|edit` arguments of a role form.
fn role_args(sub: &str, name: &str, form: &[(String, String)]) -> Value {
    let quarantines: Vec<&str> = form
        .iter()
        .filter(|(k, v)| k == "quarantine" && !v.trim().is_empty())
        .map(|(_, v)| v.trim())
        .collect();
    let domains: Vec<&str> = form
        .iter()
        .find(|(k, _)| k == "domains")
        .map(|(_, v)| {
            v.split(',')
                .map(str::trim)
                .filter(|d| !d.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let description = form
        .iter()
        .find(|(k, _)| k == "description")
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    json!({
        "action": "role",
        "sub": sub,
        "name": name,
        "description": description,
        "quarantines": if quarantines.contains(&"*") { vec!["*"] } else { quarantines },
        "domains": domains,
        "view_only": field(form, "view_only").is_some(),
        "matched_content": field(form, "matched_content").is_some(),
    })
}

fn role_result(shared: &Shared, c: &Caller, r: &Response) -> HttpResponse {
    outcome_page(
        shared,
        c,
        r,
        "<a href=\"/users\" id=\"back\">Back to the users and roles</a>",
        ("Done", "Not done"),
    )
}

pub(super) async fn role_new(Post { shared, c, form }: Post) -> HttpResponse {
    let name = field(&form, "name").unwrap_or("").trim().to_string();
    let r = if name.is_empty() {
        Response::error("Give the role's name.")
    } else {
        run(&shared, &c.id, "userconfig", role_args("new", &name, &form)).await
    };
    role_result(&shared, &c, &r)
}

pub(super) async fn role_form(
    Viewer { shared, c }: Viewer,
    Path(name): Path<String>,
) -> HttpResponse {
    let title = format!("Role {name}");
    let custom = match roles_of(&shared, &c).await {
        Ok((_, custom)) => custom,
        Err(e) => return html(StatusCode::OK, page(&shared, &c, &title, &refusal(&e))),
    };
    let Some(role) = custom.iter().find(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
    }) else {
        let b = format!(
            "<p class=\"err\" role=\"alert\">There is no custom role named {} (built-in roles cannot be changed).</p><p><a href=\"/users\" id=\"back\">Back to the users and roles</a></p>",
            esc(&name)
        );
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, &b));
    };
    let mut b = String::from("<p>Changes apply at once (users and roles are not pending configuration). Only Administrators may change them.</p>");
    b.push_str(&role_fields(&shared, &c, Some(role)).await);
    b.push_str("<p><a href=\"/users\" id=\"back\">Back to the users and roles</a></p>");
    html(StatusCode::OK, page(&shared, &c, &title, &b))
}

pub(super) async fn role_op(
    Path(name): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let r = match field(&form, "op").unwrap_or("") {
        "edit" => {
            run(
                &shared,
                &c.id,
                "userconfig",
                role_args("edit", &name, &form),
            )
            .await
        }
        "delete" => {
            run(
                &shared,
                &c.id,
                "userconfig",
                json!({ "action": "role", "sub": "delete", "name": name }),
            )
            .await
        }
        other => Response::error(format!(
            "Unknown role operation {other:?}; allowed: edit, delete."
        )),
    };
    role_result(&shared, &c, &r)
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

/// Never echo a password back into a page: neither the one given nor a generated one.
fn hide_password(r: &mut Response, given: &str) {
    if let Some(p) = r
        .data
        .get("password")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        if !p.is_empty() {
            r.text = r.text.replace(&p, "(hidden)");
        }
        r.data["password"] = json!("(hidden)");
    }
    if !given.is_empty() {
        r.text = r.text.replace(given, "(hidden)");
    }
}

pub(super) async fn user_new(Post { shared, c, form }: Post) -> HttpResponse {
    let mut args = json!({ "action": "new" });
    let mut given = String::new();
    for k in ["name", "full_name", "role", "password"] {
        if let Some(v) = form.iter().find(|(n, _)| n == k).map(|(_, v)| v) {
            let v = if k == "password" {
                given = v.clone();
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
    hide_password(&mut r, &given);
    user_result(&shared, &c, &r)
}

pub(super) async fn user_op(
    Path(name): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let given = form
        .iter()
        .find(|(n, _)| n == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let args = match field(&form, "op").unwrap_or("") {
        "enable" => json!({ "action": "edit", "name": name, "enabled": true }),
        "disable" => json!({ "action": "edit", "name": name, "enabled": false }),
        "delete" => json!({ "action": "delete", "name": name }),
        "role" => match field(&form, "role") {
            Some(role) => json!({ "action": "edit", "name": name, "role": role.trim() }),
            None => return user_result(&shared, &c, &Response::error("Choose the new role.")),
        },
        // A password is required here: a generated one would have to be shown.
        "password" if given.is_empty() => {
            return user_result(
                &shared,
                &c,
                &Response::error("Type the new password (it is not shown again)."),
            )
        }
        "password" => json!({ "action": "password", "name": name, "password": given }),
        other => {
            return user_result(
                &shared,
                &c,
                &Response::error(format!(
                    "Unknown user operation {other:?}; allowed: enable, disable, delete, role, password."
                )),
            )
        }
    };
    let mut r = run(&shared, &c.id, "userconfig", args).await;
    hide_password(&mut r, &given);
    user_result(&shared, &c, &r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn role_form_to_command_args() {
        let a = role_args(
            "new",
            "Desk",
            &form(&[
                ("description", " Help desk "),
                ("quarantine", "Policy"),
                ("quarantine", "Virus"),
                ("domains", "a.example, ,b.example"),
                ("matched_content", "1"),
            ]),
        );
        assert_eq!(
            a,
            json!({ "action": "role", "sub": "new", "name": "Desk", "description": "Help desk",
                "quarantines": ["Policy", "Virus"], "domains": ["a.example", "b.example"],
                "view_only": false, "matched_content": true })
        );
        // "All quarantines" wins over single ones; nothing checked is an empty list.
        let a = role_args(
            "edit",
            "Desk",
            &form(&[
                ("quarantine", "Policy"),
                ("quarantine", "*"),
                ("view_only", "1"),
            ]),
        );
        assert_eq!(a["quarantines"], json!(["*"]));
        assert_eq!(a["view_only"], true);
        assert_eq!(a["matched_content"], false);
        assert_eq!(role_args("edit", "Desk", &[])["quarantines"], json!([]));
    }

    #[test]
    fn passwords_are_not_echoed() {
        let mut r = Response::ok(
            "User \"x\" created. Its generated password (shown only now): Gen-123",
            json!({ "password": "Gen-123" }),
        );
        hide_password(&mut r, "");
        assert!(!r.text.contains("Gen-123") && r.data["password"] == "(hidden)");
        let mut r = Response::ok("oops typed-secret", json!({}));
        hide_password(&mut r, "typed-secret");
        assert_eq!(r.text, "oops (hidden)");
    }

    #[test]
    fn role_options_group_and_select() {
        let o = role_options(
            &["Administrator".into(), "Operator".into()],
            &[json!({ "name": "Desk <1>" })],
            "desk <1>",
        );
        assert!(
            o.contains("<optgroup label=\"Custom roles\"><option selected>Desk &lt;1&gt;</option>"),
            "{o}"
        );
        assert!(o.contains("<option>Administrator</option>"), "{o}");
    }
}
