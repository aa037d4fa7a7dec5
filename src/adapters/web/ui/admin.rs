//! Pending changes (commit, clear, rollback) with the machine's feature keys (add,
//! renew, remove: they take effect at once), quarantine settings, users (new, role,
//! password, enable/disable, delete) and custom roles (new, edit, delete).

use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::commands::protocol::Response;

// ----------------------------------------------------------------------------------
// Pending changes: commit, clear, rollback
// ----------------------------------------------------------------------------------

pub(super) async fn changes(Viewer { shared, c }: Viewer) -> HttpResponse {
    let d = run(&shared, &c.id, "commitdetail", json!({})).await;
    if !d.ok {
        return html(StatusCode::OK, page(&shared, &c, "Changes", refusal(&d)));
    }
    let pending = changes_pending(&d.data);
    let b = html! {
        p id="pending" {
            (if pending { "Changes are pending: they take effect when committed." } else { "No changes pending." })
        }
        form method="post" action="/changes/commit" class="stack narrowform" {
            (hidden("csrf", &c.csrf))
            label for="comment" { "Comment" }
            input id="comment" name="comment" required;
            div { button type="submit" id="commit" disabled[!pending] { "Commit" } }
        }
        form method="post" action="/changes/clear" {
            (hidden("csrf", &c.csrf))
            button type="submit" id="clear" class="danger" disabled[!pending] { "Clear changes" }
        }
        form method="post" action="/changes/rollback" {
            (hidden("csrf", &c.csrf))
            label for="n" { "Roll back to commit" } " "
            input id="n" name="n" type="number" min="1" required;
            " "
            button type="submit" id="rollback" class="danger" { "Roll back" }
        }
        (pre(&d.text))
    };
    let keys = run(&shared, &c.id, "featurekey", json!({ "action": "list" })).await;
    let b = html! {
        (b)
        (feature_keys_section(&keys, &c.csrf))
    };
    html(StatusCode::OK, page(&shared, &c, "Changes", b))
}

/// The "Feature Keys" section: each feature with its key, validity and state, Remove
/// for those with a key, and a form to add or renew one (`r`: `featurekey list`).
fn feature_keys_section(r: &Response, csrf: &str) -> Markup {
    html! {
        section id="feature-keys" {
            h2 { "Feature Keys" }
            p { "The feature keys of this machine: a feature without an active key is off here. A change takes effect at once, without a commit." }
            @if !r.ok {
                (refusal(r))
            } @else {
                table id="featurekeys" {
                    thead { tr { th { "Feature" } th { "Key" } th { "Valid until" } th { "State" } th {} } }
                    tbody {
                        @for f in r.data["features"].as_array().into_iter().flatten() {
                            @let name = f["feature"].as_str().unwrap_or("");
                            tr id={ "feature-" (name) } {
                                td { (f["title"].as_str().unwrap_or(name)) }
                                td class="key" { (f["key"].as_str().unwrap_or("–")) }
                                td {
                                    @match (f["valid_until"].as_str(), f["keyed"].as_bool() == Some(true)) {
                                        (Some(u), _) => { (u) " GMT" }
                                        (None, true) => { "no expiry" }
                                        (None, false) => { "–" }
                                    }
                                }
                                td class="state" { (f["state"].as_str().unwrap_or("")) }
                                td {
                                    @if f["keyed"].as_bool() == Some(true) {
                                        form method="post" action="/featurekeys/remove" class="inline" {
                                            (hidden("csrf", csrf))
                                            (hidden("feature", name))
                                            button type="submit" class="danger" id={ "remove-" (name) } { "Remove" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                form method="post" action="/featurekeys/add" class="stack narrowform" id="featurekey-add" {
                    (hidden("csrf", csrf))
                    label for="fk-feature" { "Feature" }
                    select id="fk-feature" name="feature" {
                        @for f in r.data["features"].as_array().into_iter().flatten() {
                            option value=(f["feature"].as_str().unwrap_or("")) { (f["title"].as_str().unwrap_or("")) }
                        }
                    }
                    label for="fk-key" { "Key (a licence reference; empty: one is made)" }
                    input id="fk-key" name="key" maxlength="128";
                    label for="fk-expires" { "Valid until (the end of that day, UTC; empty: no expiry)" }
                    input id="fk-expires" name="expires" type="date";
                    div { button type="submit" id="fk-add" { "Add or renew" } }
                }
            }
        }
    }
}

/// The arguments of the feature key form's `op` (add, remove).
fn featurekey_args(op: &str, form: &[(String, String)]) -> Option<Value> {
    let feature = field(form, "feature").unwrap_or("").trim();
    match op {
        "add" => Some(json!({
            "action": "add",
            "feature": feature,
            "key": field(form, "key").map(str::trim),
            "expires": field(form, "expires").map(str::trim),
        })),
        "remove" => Some(json!({ "action": "remove", "feature": feature })),
        _ => None,
    }
}

pub(super) async fn featurekey_op(
    Path(op): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let r = match featurekey_args(&op, &form) {
        Some(args) => run(&shared, &c.id, "featurekey", args).await,
        None => Response::error(format!("Unknown feature key operation {op:?}.")),
    };
    outcome_page(
        &shared,
        &c,
        &r,
        html! { a href="/changes#feature-keys" id="back" { "Back to the feature keys" } },
        ("Done", "Not done"),
    )
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
        html! { a href="/changes" id="back" { "Back to the changes" } },
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
        return html(StatusCode::OK, page(&shared, &c, &title, refusal(&list)));
    }
    let Some(q) = list.data["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["name"].as_str() == Some(name.as_str()))
        .cloned()
    else {
        let body = html! { p class="err" { "There is no quarantine named " (name) "." } };
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, body));
    };
    html(
        StatusCode::OK,
        page(&shared, &c, &title, quarantine_settings(&name, &q, &c.csrf)),
    )
}

/// The settings form of quarantine `name` (`q`, its row of `quarantineconfig list`).
fn quarantine_settings(name: &str, q: &Value, csrf: &str) -> Markup {
    let er = &q["early_release"];
    let er_s = |k: &str| er[k].as_str().unwrap_or("");
    let x_header = match (
        er["x_header"]["name"].as_str(),
        er["x_header"]["value"].as_str(),
    ) {
        (Some(n), Some(v)) => format!("{n}:{v}"),
        _ => String::new(),
    };
    let action = q["default_action"].as_str().unwrap_or("delete");
    html! {
        p {
            (q["messages"].as_u64().unwrap_or(0)) " messages, "
            (bytes(q["space_used_bytes"].as_u64().unwrap_or(0)))
            " used. Changes apply at once (they are quarantine settings, not pending configuration). Only Administrators may change them."
        }
        form method="post" action={ "/quarantines/" (enc(name)) } class="stack narrowform" {
            (hidden("csrf", csrf))
            label for="retention_hours" { "Retention (hours)" }
            input id="retention_hours" name="retention_hours" type="number" min="1" value=(q["retention_secs"].as_u64().unwrap_or(0).div_ceil(3600)) required;
            label for="default_action" { "Default action at the end of retention" }
            select id="default_action" name="default_action" {
                option value="delete" selected[action == "delete"] { "delete" }
                option value="release" selected[action == "release"] { "release" }
            }
            label { input type="checkbox" name="exempt_free_up" value="1" checked[q["exempt_free_up"].as_bool().unwrap_or(false)]; " Exempt from free-up when space runs out" }
            fieldset {
                legend { "Early release" }
                label for="subject_prepend" { "Prepend to the subject" }
                input id="subject_prepend" name="subject_prepend" value=(er_s("subject_prepend"));
                label for="subject_append" { "Append to the subject" }
                input id="subject_append" name="subject_append" value=(er_s("subject_append"));
                label for="x_header" { "Add a header (NAME:VALUE)" }
                input id="x_header" name="x_header" value=(x_header);
                label { input type="checkbox" name="strip_attachments" value="1" checked[er["strip_attachments"].as_bool().unwrap_or(false)]; " Strip attachments" }
            }
            label for="access" { "Access (roles and users, comma-separated; Administrators always)" }
            input id="access" name="access" value=(access_names(&q["access"]).join(", "));
            div { button type="submit" id="save" accesskey="v" { "Save" } }
        }
    }
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
    let links = html! {
        a href={ "/quarantines/" (enc(&name)) } id="back" { "Back to the settings" }
    };
    outcome_page(&shared, &c, &r, links, ("Saved", "Not saved"))
}

// ----------------------------------------------------------------------------------
// Users and custom roles
// ----------------------------------------------------------------------------------

/// The routes of the custom roles (merged by `super::routes`; the users' routes are
/// there).
pub(super) fn routes() -> Router<Arc<Handles>> {
    Router::new()
        .route("/roles", post(role_new))
        .route("/roles/{name}", get(role_form).post(role_op))
        .route("/featurekeys/{op}", post(featurekey_op))
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
async fn roles_of(
    shared: &Arc<Handles>,
    c: &Caller,
) -> Result<(Vec<String>, Vec<Value>), Response> {
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
fn role_options(builtin: &[String], custom: &[Value], selected: &str) -> Markup {
    html! {
        optgroup label="Built-in roles" {
            @for r in builtin { option selected[r.eq_ignore_ascii_case(selected)] { (r) } }
        }
        @if !custom.is_empty() {
            optgroup label="Custom roles" {
                @for r in custom {
                    @let n = r["name"].as_str().unwrap_or("");
                    option selected[n.eq_ignore_ascii_case(selected)] { (n) }
                }
            }
        }
    }
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
        return html(StatusCode::OK, page(&shared, &c, "Users", refusal(&r)));
    }
    let (builtin, custom) = match roles_of(&shared, &c).await {
        Ok(x) => x,
        Err(e) => return html(StatusCode::OK, page(&shared, &c, "Users", refusal(&e))),
    };
    let users = r.data["users"].as_array().cloned().unwrap_or_default();
    let new_role = role_fields(&shared, &c, None).await;
    let b = html! {
        (users_section(&users, &builtin, &custom, &c.csrf))
        section aria-labelledby="hr" {
            h2 id="hr" { "Custom roles" }
            p { "A custom role sees and acts on the quarantines it names (or those whose access list names it), for the recipient domains it names (all when none)." }
            (roles_table(&custom, &c.csrf))
            h3 { "New custom role" }
            (new_role)
        }
    };
    html(StatusCode::OK, page(&shared, &c, "Users and roles", b))
}

/// The users with their forms (role, password, enable/disable, delete) and the form
/// of a new user.
fn users_section(users: &[Value], builtin: &[String], custom: &[Value], csrf: &str) -> Markup {
    html! {
        section aria-labelledby="hu" {
            h2 id="hu" { "Users" }
            table id="users" {
                thead {
                    tr {
                        th scope="col" { "User" } th scope="col" { "Full name" } th scope="col" { "Role" }
                        th scope="col" { "State" } th scope="col" { "Change role" } th scope="col" { "Reset password" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody {
                    @for u in users {
                        @let n = u["name"].as_str().unwrap_or("");
                        @let role = u["role"].as_str().unwrap_or("");
                        @let enabled = u["enabled"].as_bool().unwrap_or(false);
                        @let path = format!("/users/{}", enc(n));
                        @let toggle = if enabled { "Disable" } else { "Enable" };
                        tr {
                            th scope="row" { (n) }
                            td { (u["full_name"].as_str().unwrap_or("")) }
                            td class="role" { (role) }
                            td { (if enabled { "enabled" } else { "disabled" }) }
                            td {
                                form method="post" action=(path) class="inline" {
                                    (hidden("csrf", csrf))
                                    label for={ "role-" (n) } class="vh" { "Role of " (n) }
                                    select id={ "role-" (n) } name="role" { (role_options(builtin, custom, role)) }
                                    " "
                                    button type="submit" name="op" value="role" aria-label={ "Change the role of " (n) } { "Change" }
                                }
                            }
                            td {
                                form method="post" action=(path) class="inline" {
                                    (hidden("csrf", csrf))
                                    label for={ "pw-" (n) } class="vh" { "New password for " (n) }
                                    input id={ "pw-" (n) } name="password" type="password" autocomplete="new-password" required size="12";
                                    " "
                                    button type="submit" name="op" value="password" aria-label={ "Reset the password of " (n) } { "Reset" }
                                }
                            }
                            td {
                                form method="post" action=(path) class="inline" {
                                    (hidden("csrf", csrf))
                                    button type="submit" name="op" value=(toggle.to_ascii_lowercase()) aria-label={ (toggle) " " (n) } { (toggle) }
                                    " "
                                    button type="submit" name="op" value="delete" class="danger" aria-label={ "Delete " (n) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "New user" }
            form method="post" action="/users" class="stack narrowform" {
                (hidden("csrf", csrf))
                label for="u-name" { "User name" }
                input id="u-name" name="name" required autocomplete="off";
                label for="u-full" { "Full name" }
                input id="u-full" name="full_name";
                label for="u-role" { "Role" }
                // Least privilege unless the Administrator picks more.
                select id="u-role" name="role" { (role_options(builtin, custom, "Guest")) }
                label for="u-password" { "Password" }
                input id="u-password" name="password" type="password" autocomplete="new-password" required;
                div { button type="submit" id="create-user" { "Create" } }
            }
        }
    }
}

/// The custom roles with Edit and Delete.
fn roles_table(custom: &[Value], csrf: &str) -> Markup {
    html! {
        @if custom.is_empty() {
            p id="no-roles" { "No custom roles." }
        } @else {
            table id="roles" {
                thead {
                    tr {
                        th scope="col" { "Role" } th scope="col" { "Description" } th scope="col" { "Quarantines" }
                        th scope="col" { "Recipient domains" } th scope="col" { "Access" } th scope="col" { "Matched content" }
                        th scope="col" { "Actions" }
                    }
                }
                tbody {
                    @for r in custom {
                        @let n = r["name"].as_str().unwrap_or("");
                        @let qs = strings(&r["quarantines"]);
                        @let ds = strings(&r["domains"]);
                        @let path = format!("/roles/{}", enc(n));
                        tr {
                            th scope="row" { (n) }
                            td { (r["description"].as_str().unwrap_or("")) }
                            td class="quarantines" {
                                @if qs.iter().any(|q| q == "*") {
                                    "all"
                                } @else if qs.is_empty() {
                                    "those whose access list names it"
                                } @else {
                                    (qs.join(", "))
                                }
                            }
                            td { @if ds.is_empty() { "all" } @else { (ds.join(", ")) } }
                            td { (if r["view_only"].as_bool().unwrap_or(false) { "view only" } else { "view and act" }) }
                            td {
                                @match r["matched_content"].as_bool() {
                                    Some(true) => "may see",
                                    Some(false) => "hidden",
                                    None => "–",
                                }
                            }
                            td {
                                a href=(path) aria-label={ "Edit role " (n) } { "Edit" }
                                " "
                                form method="post" action=(path) class="inline" {
                                    (hidden("csrf", csrf))
                                    button type="submit" name="op" value="delete" class="danger" aria-label={ "Delete role " (n) } { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The form of a new role (`None`) or of an existing one.
async fn role_fields(shared: &Arc<Handles>, c: &Caller, role: Option<&Value>) -> Markup {
    let (names, refused) = match quarantine_names(shared, c).await {
        Ok(n) => (n, None),
        Err(r) => (Vec::new(), Some(r)),
    };
    role_form_fields(role, &names, refused.as_ref(), &c.csrf)
}

/// [`role_fields`] with the quarantines `names` the caller may list (or the refusal).
fn role_form_fields(
    role: Option<&Value>,
    names: &[String],
    refused: Option<&Response>,
    csrf: &str,
) -> Markup {
    let chosen = role.map(|r| strings(&r["quarantines"])).unwrap_or_default();
    let all = chosen.iter().any(|q| q == "*");
    let (action, p) = match role {
        None => ("/roles".to_string(), "r"),
        Some(r) => (
            format!("/roles/{}", enc(r["name"].as_str().unwrap_or(""))),
            "e",
        ),
    };
    let flag = |k: &str| role.is_some_and(|r| r[k].as_bool().unwrap_or(false));
    html! {
        form method="post" action=(action) class="stack narrowform" id=(if role.is_none() { "new-role" } else { "edit-role" }) {
            (hidden("csrf", csrf))
            @if role.is_none() {
                label for={ (p) "-name" } { "Role name" }
                input id={ (p) "-name" } name="name" required autocomplete="off" aria-describedby={ (p) "-name-help" };
                small id={ (p) "-name-help" } { "letters, digits, spaces, '.', '_' and '-' (at most 64)" }
            } @else {
                (hidden("op", "edit"))
            }
            label for={ (p) "-description" } { "Description" }
            input id={ (p) "-description" } name="description" value=(role.and_then(|r| r["description"].as_str()).unwrap_or(""));
            fieldset {
                legend { "Quarantines" }
                label { input type="checkbox" name="quarantine" value="*" id={ (p) "-q-all" } checked[all]; " All quarantines" }
                @if let Some(r) = refused { (refusal(r)) }
                @for (i, n) in names.iter().enumerate() {
                    label {
                        input type="checkbox" name="quarantine" value=(n) id={ (p) "-q-" (i) } checked[chosen.iter().any(|c| c.eq_ignore_ascii_case(n))];
                        " " (n)
                    }
                }
                small { "None checked: the quarantines whose access list names the role." }
            }
            label for={ (p) "-domains" } { "Recipient domains (comma-separated; empty: all)" }
            input id={ (p) "-domains" } name="domains" value=(role.map(|r| strings(&r["domains"]).join(", ")).unwrap_or_default()) autocomplete="off";
            label { input type="checkbox" name="view_only" value="1" id={ (p) "-view-only" } checked[flag("view_only")]; " View only (may not release, delete, delay or move)" }
            label { input type="checkbox" name="matched_content" value="1" id={ (p) "-matched-content" } checked[flag("matched_content")]; " May see matched content (what a filter or DLP rule matched)" }
            div {
                button type="submit" id=(if role.is_none() { "create-role" } else { "save-role" }) {
                    (if role.is_none() { "Create the role" } else { "Save" })
                }
            }
        }
    }
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

fn role_result(shared: &Handles, c: &Caller, r: &Response) -> HttpResponse {
    outcome_page(
        shared,
        c,
        r,
        html! { a href="/users" id="back" { "Back to the users and roles" } },
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
        Err(e) => return html(StatusCode::OK, page(&shared, &c, &title, refusal(&e))),
    };
    let Some(role) = custom.iter().find(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case(&name))
    }) else {
        let b = html! {
            p class="err" role="alert" { "There is no custom role named " (name) " (built-in roles cannot be changed)." }
            p { a href="/users" id="back" { "Back to the users and roles" } }
        };
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, b));
    };
    let fields = role_fields(&shared, &c, Some(role)).await;
    let b = html! {
        p { "Changes apply at once (users and roles are not pending configuration). Only Administrators may change them." }
        (fields)
        p { a href="/users" id="back" { "Back to the users and roles" } }
    };
    html(StatusCode::OK, page(&shared, &c, &title, b))
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

pub(super) fn user_result(shared: &Handles, c: &Caller, r: &Response) -> HttpResponse {
    outcome_page(
        shared,
        c,
        r,
        html! { a href="/users" id="back" { "Back to the users" } },
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
    fn the_feature_keys_section_escapes_and_posts_the_command() {
        let r = Response::ok(
            "",
            json!({ "recorded": true, "features": [
                { "feature": "antivirus", "title": "Anti-Virus", "keyed": true,
                  "key": "<script>x</script>", "valid_until": "2027-12-31 23:59:59",
                  "state": "on" },
                { "feature": "dlp", "title": "Data Loss Prevention", "keyed": false,
                  "key": null, "valid_until": null,
                  "state": "configured but off: no feature key (`featurekey add dlp`)" }
            ] }),
        );
        let html = feature_keys_section(&r, "tok").into_string();
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("&lt;script&gt;x"), "{html}");
        assert!(html.contains("2027-12-31 23:59:59 GMT"));
        assert!(html.contains("id=\"remove-antivirus\""));
        assert!(!html.contains("id=\"remove-dlp\""));
        assert!(html.contains("configured but off: no feature key"));
        assert_eq!(
            featurekey_args(
                "add",
                &form(&[("feature", "dlp"), ("key", " "), ("expires", "2027-12-31")])
            ),
            Some(
                json!({ "action": "add", "feature": "dlp", "key": null, "expires": "2027-12-31" })
            )
        );
        assert_eq!(featurekey_args("burn", &form(&[])), None);
        let refused = feature_keys_section(&Response::error("Role \"Guest\" cannot"), "t");
        assert!(refused.into_string().contains("Refused:"));
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
        )
        .into_string();
        assert!(
            o.contains("<optgroup label=\"Custom roles\"><option selected>Desk &lt;1&gt;</option>"),
            "{o}"
        );
        assert!(o.contains("<option>Administrator</option>"), "{o}");
    }

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn user_and_role_pages_escape_names_and_settings() {
        let users = [json!({ "name": EVIL, "full_name": EVIL, "role": EVIL, "enabled": true })];
        let custom = [
            json!({ "name": EVIL, "description": EVIL, "quarantines": [EVIL], "domains": [EVIL], "view_only": true, "matched_content": false }),
        ];
        let p = [
            users_section(&users, &["Guest".into()], &custom, "t"),
            roles_table(&custom, "t"),
            role_form_fields(Some(&custom[0]), &[EVIL.to_string()], None, "t"),
        ]
        .map(Markup::into_string)
        .concat();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        let e = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'";
        let path = "%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27";
        assert!(p.contains(&format!("<th scope=\"row\">{e}</th>")), "{p}");
        assert!(p.contains(&format!("action=\"/users/{path}\"")), "{p}");
        assert!(
            p.contains(&format!("<select id=\"role-{e}\" name=\"role\">")),
            "{p}"
        );
        assert!(
            p.contains(&format!("aria-label=\"Disable {e}\">Disable</button>")),
            "{p}"
        );
        assert!(
            p.contains(&format!(
                "<a href=\"/roles/{path}\" aria-label=\"Edit role {e}\">Edit</a>"
            )),
            "{p}"
        );
        assert!(
            p.contains(&format!("name=\"description\" value=\"{e}\"")),
            "{p}"
        );
        assert!(
            p.contains(&format!("value=\"{e}\" id=\"e-q-0\" checked> {e}</label>")),
            "{p}"
        );
        assert!(p.contains("id=\"e-view-only\" checked>"), "{p}");
        assert!(!p.contains("id=\"e-matched-content\" checked"), "{p}");

        let q = json!({ "name": EVIL, "messages": 1, "space_used_bytes": 0, "retention_secs": 7200,
            "default_action": "release", "exempt_free_up": true, "access": [EVIL],
            "early_release": { "subject_prepend": EVIL, "x_header": { "name": "X", "value": EVIL } } });
        let p = quarantine_settings(EVIL, &q, "t").into_string();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        assert!(
            p.contains(&format!("action=\"/quarantines/{path}\"")),
            "{p}"
        );
        assert!(
            p.contains(&format!("name=\"subject_prepend\" value=\"{e}\"")),
            "{p}"
        );
        assert!(
            p.contains(&format!("name=\"x_header\" value=\"X:{e}\"")),
            "{p}"
        );
        assert!(
            p.contains("<option value=\"release\" selected>release</option>"),
            "{p}"
        );
        assert!(p.contains("value=\"2\" required>"), "{p}");
    }
}
