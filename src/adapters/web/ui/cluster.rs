//! Cluster: the gateway cluster this machine is in (`clusterconfig list`): its groups
//! and machines with their connection state and the revision each runs; this machine's
//! connection to the cluster's store (`clusterconfig connstatus`: said loudly when it is
//! disconnected, why, and that it runs its last good configuration); the differences
//! `clustercheck` finds with the commands that resolve them; and the forms of the
//! membership changes (addgroup, setgroup, renamegroup, deletegroup, removemachine,
//! disconnect, reconnect); and "Centralized Management": which level (the cluster, each
//! group, each machine) sets each section, which one is in force on this machine
//! (`showconfig`'s `origins` and `layers`), and the forms that copy, move or delete a
//! section between levels (pending until committed). On a machine in no cluster the page says so and shows the
//! create and join forms. Roles with Monitor see the page; the forms are shown to
//! roles that may configure (the command refuses anyone else, and the refusal is shown).
//! Every form is one `clusterconfig` as the session user.

use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::commands::protocol::Response;
use crate::core::state::Handles;
use crate::core::users::Perm;

/// The routes of this page (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Handles>> {
    Router::new()
        .route("/cluster", get(cluster))
        .route("/cluster/{action}", post(cluster_op))
}

/// The actions the page's forms post, with the form fields each passes on.
const ACTIONS: &[(&str, &[&str])] = &[
    ("create", &["name", "url", "ca", "machine", "address"]),
    (
        "join",
        &[
            "url", "ca", "machine", "address", "group", "member", "user", "password", "host_key",
            "token",
        ],
    ),
    ("addgroup", &["name"]),
    ("jointoken", &["expires"]),
    ("jointoken-revoke", &["hash"]),
    ("setgroup", &["machine", "group"]),
    ("renamegroup", &["name", "to"]),
    ("deletegroup", &["name", "to"]),
    ("removemachine", &["name"]),
    ("disconnect", &[]),
    ("reconnect", &[]),
    ("copysettings", &["section", "from", "to"]),
    ("movesettings", &["section", "from", "to"]),
    ("deletesettings", &["section", "from"]),
];

/// The actions of the "Centralized Management" forms: pending until committed.
const SETTINGS: &[&str] = &["copysettings", "movesettings", "deletesettings"];

/// The input pattern of a machine or group name (`pvo_cluster::Name`).
const NAME: &str = "[A-Za-z0-9][A-Za-z0-9._\\-]{0,62}";

fn when(secs: u64) -> String {
    crate::core::mail_log::ctime(secs)
}

pub(super) async fn cluster(Viewer { shared, c }: Viewer) -> HttpResponse {
    let may_change = shared
        .access
        .users
        .role(&c.id.role)
        .is_some_and(|r| r.allows(Perm::Configure));
    let csrf = may_change.then_some(c.csrf.as_str());
    let cs = run(
        &shared,
        &c.id,
        "clusterconfig",
        json!({ "action": "connstatus" }),
    )
    .await;
    if !cs.ok {
        return html(StatusCode::OK, page(&shared, &c, "Cluster", refusal(&cs)));
    }
    if cs.data["cluster"] != json!(true) {
        let b = html! {
            p id="not-in-cluster" role="status" {
                strong { "This machine is not in a cluster." }
                " It runs its own configuration. Create a cluster (this machine becomes its first member, its settings the cluster's) or join one (this machine takes the cluster's settings; its machine-only settings stay its own)."
            }
            @match csrf {
                Some(t) => { (create_form(t)) (join_form(t)) }
                None => p class="note" { "Creating or joining a cluster needs a role that may change the configuration." },
            }
        };
        return html(StatusCode::OK, page(&shared, &c, "Cluster", b));
    }
    let status = &cs.data["status"];
    let list = run(&shared, &c.id, "clusterconfig", json!({ "action": "list" })).await;
    let check = run(&shared, &c.id, "clustercheck", json!({})).await;
    let tokens = match csrf {
        Some(_) => Some(
            run(
                &shared,
                &c.id,
                "clusterconfig",
                json!({ "action": "jointoken-list" }),
            )
            .await,
        ),
        None => None,
    };
    let now = run(&shared, &c.id, "showconfig", json!({ "pending": false })).await;
    let planned = run(&shared, &c.id, "showconfig", json!({ "pending": true })).await;
    let b = html! {
        (connection(status))
        section aria-labelledby="hm" {
            h2 id="hm" { "Groups and machines" }
            @if list.ok { (members(&list.data)) } @else { (refusal(&list)) }
        }
        section aria-labelledby="hc" {
            h2 id="hc" { "Differences between levels and machines" }
            @if check.ok { (findings(&check.data)) } @else { (refusal(&check)) }
        }
        section aria-labelledby="hcm" {
            h2 id="hcm" { "Centralized Management" }
            @if now.ok {
                (settings_table(&now.data, planned.ok.then_some(&planned.data)))
                @if let Some(t) = csrf { (settings_forms(t, &now.data, planned.ok.then_some(&planned.data))) }
            } @else { (refusal(&now)) }
        }
        @match csrf {
            Some(t) => (change_forms(t, status["held"] == json!(true), list.ok.then_some(&list.data))),
            None => p class="note" { "Changing the cluster needs a role that may change the configuration." },
        }
        @if let (Some(t), Some(tokens)) = (csrf, &tokens) { (token_forms(t, tokens)) }
    };
    html(StatusCode::OK, page(&shared, &c, "Cluster", b))
}

/// This machine's connection to the cluster's store (`connstatus`'s `status`): a quiet
/// line when connected, an alert when not, with why and the revision it keeps running.
fn connection(s: &Value) -> Markup {
    let machine = s["machine"].as_str().unwrap_or("");
    let since = when(s["since"].as_u64().unwrap_or(0));
    let revision = s["revision"].as_u64().unwrap_or(0);
    let head = s["head"].as_u64().unwrap_or(0);
    let why = s["why"].as_str().unwrap_or("unknown");
    html! {
        section aria-labelledby="hs" {
            h2 id="hs" { "This machine" }
            @if s["held"] == json!(true) {
                div id="connection" class="err" role="alert" {
                    p { strong { "DISCONNECTED" } " — this machine (" (machine) ") was disconnected from the cluster with `clusterconfig disconnect` since " (since) "." }
                    p { "It runs its last good configuration (revision " (revision) ") and takes no configuration changes until it is reconnected." }
                }
            } @else if s["connected"] == json!(true) {
                p id="connection" class="ok" role="status" {
                    "This machine (" (machine) ") is " strong { "connected" } " to the cluster's store since " (since)
                    "; it runs revision " (revision) " of " (head) "."
                }
            } @else {
                div id="connection" class="err" role="alert" {
                    p { strong { "NOT CONNECTED" } " to the cluster's store since " (since) ": " (why) "." }
                    p { "This machine (" (machine) ") keeps running its last good configuration (revision " (revision) ") and takes no configuration changes until the store is back." }
                }
            }
        }
    }
}

/// The groups and machines of `clusterconfig list`.
fn members(d: &Value) -> Markup {
    let me = d["machine"].as_str().unwrap_or("");
    let groups = d["groups"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    html! {
        p id="cluster-name" {
            "Cluster " strong { (d["cluster"].as_str().unwrap_or("")) }
            ", revision " (d["revision"].as_u64().unwrap_or(0))
            @if d["fresh"] == json!(false) { " — as this machine last saw it (it cannot reach the cluster's store)" }
            "."
        }
        table id="members" {
            caption { "Machines by group" }
            thead { tr { th scope="col" { "Group" } th scope="col" { "Machine" } th scope="col" { "Address" } th scope="col" { "Connection" } th scope="col" { "Revision" } } }
            tbody {
                @for g in groups {
                    @let name = g["name"].as_str().unwrap_or("");
                    @let machines = g["machines"].as_array().map(Vec::as_slice).unwrap_or_default();
                    @if machines.is_empty() {
                        tr { td { (name) } td colspan="4" class="muted" { "no machines" } }
                    }
                    @for m in machines {
                        @let mn = m["name"].as_str().unwrap_or("");
                        tr {
                            td { (name) }
                            td { (mn) @if mn == me { " (this machine)" } }
                            td { (m["address"].as_str().unwrap_or("")) }
                            td {
                                @if m["connected"] == json!(true) {
                                    span class="badge state-online" { "connected" }
                                } @else {
                                    span class="badge state-unreachable" { "not connected" }
                                }
                            }
                            td {
                                @match m["revision"].as_u64() {
                                    Some(r) => (r),
                                    None => span class="muted" { "none yet" },
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `clustercheck`'s findings, each with the commands that resolve it.
fn findings(d: &Value) -> Markup {
    let list = d["findings"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    html! {
        @if list.is_empty() {
            p id="findings" class="ok" { "No differences between levels or machines (revision " (d["revision"].as_u64().unwrap_or(0)) ")." }
        } @else {
            ul id="findings" {
                @for f in list {
                    li {
                        strong { (f["subject"].as_str().unwrap_or("")) } ": " (f["text"].as_str().unwrap_or(""))
                        @let resolve = f["resolve"].as_array().map(Vec::as_slice).unwrap_or_default();
                        @if !resolve.is_empty() {
                            ul class="resolve" {
                                @for r in resolve { li { "Resolve: " code { (r.as_str().unwrap_or("")) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The levels of `showconfig`'s `layers`, each with the sections it sets.
fn layer_rows(d: &Value) -> Vec<(&str, Vec<&str>)> {
    d["layers"]["levels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            let sections = l["sections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            (l["level"].as_str().unwrap_or(""), sections)
        })
        .collect()
}

/// Every section some level sets, now or once the pending changes are committed, sorted.
fn all_sections<'a>(now: &'a Value, planned: Option<&'a Value>) -> Vec<&'a str> {
    let mut out: Vec<&str> = layer_rows(now)
        .into_iter()
        .chain(planned.map(layer_rows).unwrap_or_default())
        .flat_map(|(_, s)| s)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// Where a section may be: `showconfig`'s `layers.scopes` (`machine`, `cluster`, `any`).
fn scope<'a>(d: &'a Value, planned: Option<&'a Value>, section: &str) -> &'a str {
    d["layers"]["scopes"][section]
        .as_str()
        .or_else(|| planned.and_then(|p| p["layers"]["scopes"][section].as_str()))
        .unwrap_or("any")
}

/// How a level is named in a column heading or a choice.
fn level_label(level: &str, me: &str) -> String {
    match level.split_once(':') {
        None => "Cluster".to_string(),
        Some(("group", g)) => format!("Group {g}"),
        Some((_, m)) if m == me => format!("Machine {m} (this machine)"),
        Some((_, m)) => format!("Machine {m}"),
    }
}

/// The "Centralized Management" table: the sections (rows) by level (columns), each cell
/// whether that level sets the section, the one in force on this machine marked, and
/// what the pending changes would change (`now`: `showconfig`; `planned`: `showconfig`
/// with the pending changes).
fn settings_table(now: &Value, planned: Option<&Value>) -> Markup {
    let me = now["machine"].as_str().unwrap_or("");
    let levels = layer_rows(now);
    let after = planned.map(layer_rows).unwrap_or_default();
    let sections = all_sections(now, planned);
    let sets = |rows: &[(&str, Vec<&str>)], level: &str, section: &str| {
        rows.iter()
            .any(|(l, s)| *l == level && s.contains(&section))
    };
    html! {
        p class="note" {
            "A section set at a lower level overrides the one above it: a machine's own over its group's, a group's over the cluster's. "
            "Copying, moving or deleting a section is a pending change: it takes effect when committed on the "
            a href="/changes" id="settings-changes" { "Changes" } " page."
        }
        @if planned.is_some_and(|p| p["pending"] == json!(true)) {
            p id="settings-pending" role="status" {
                strong { "Changes are pending." } " " a href="/changes" { "Review and commit them" } "."
            }
        }
        @if sections.is_empty() {
            p id="no-settings" { "No level sets any section." }
        } @else {
            table id="settings" {
                caption { "Sections by level; in force on this machine (" (me) "): marked" }
                thead {
                    tr {
                        th scope="col" { "Section" }
                        @for (l, _) in &levels { th scope="col" { (level_label(l, me)) } }
                    }
                }
                tbody {
                    @for s in &sections {
                        @let origin = now["origins"][*s].as_str().unwrap_or("");
                        tr {
                            th scope="row" {
                                (s)
                                @match scope(now, planned, s) {
                                    "machine" => { " " span class="badge" { "machine only" } }
                                    "cluster" => { " " span class="badge" { "cluster only" } }
                                    _ => {}
                                }
                            }
                            @for (l, _) in &levels {
                                @let set = sets(&levels, l, s);
                                @let will = planned.is_none() || sets(&after, l, s);
                                td data-level=(l) data-section=(s) {
                                    @if set { "set" } @else { span class="muted" { "–" } }
                                    @if *l == origin { " " strong class="badge state-online" { "in force here" } }
                                    @if set && !will { " " em { "(pending: deleted)" } }
                                    @if !set && will { " " em { "(pending: set)" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The levels this machine may change: the cluster, every group, its own.
fn changeable_levels(now: &Value) -> Vec<&str> {
    let me = now["machine"].as_str().unwrap_or("");
    layer_rows(now)
        .into_iter()
        .map(|(l, _)| l)
        .filter(|l| match l.split_once(':') {
            Some(("machine", m)) => m == me,
            _ => true,
        })
        .collect()
}

/// Copy, move and delete a section between levels (each one `clusterconfig`, pending
/// until committed). The choices are the cluster's levels this machine may change: a
/// machine's own settings are changed on that machine.
fn settings_forms(csrf: &str, now: &Value, planned: Option<&Value>) -> Markup {
    let me = now["machine"].as_str().unwrap_or("");
    let levels = changeable_levels(now);
    let sections = all_sections(now, planned);
    let section = |id: &str| {
        html! {
            label for=(id) { "Section" }
            select id=(id) name="section" {
                @for s in &sections { option value=(s) { (s) } }
            }
        }
    };
    let level = |id: &str, name: &str, label: &str, first: &str| {
        html! {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                @for l in &levels {
                    option value=(l) selected[*l == first] { (level_label(l, me)) }
                }
            }
        }
    };
    let mine = format!("machine:{me}");
    html! {
        p class="note" { "The levels below are the cluster, its groups and this machine: another machine's own settings are changed on that machine's page." }
        form method="post" action="/cluster/copysettings" class="stack narrowform" id="copysettings" {
            (hidden("csrf", csrf))
            (section("cs-section"))
            (level("cs-from", "from", "Copy it from", "cluster"))
            (level("cs-to", "to", "To", &mine))
            div { button type="submit" id="copy-settings" { "Copy the section" } }
        }
        form method="post" action="/cluster/movesettings" class="stack narrowform" id="movesettings" {
            (hidden("csrf", csrf))
            (section("ms-section"))
            (level("ms-from", "from", "Move it from", &mine))
            (level("ms-to", "to", "To", "cluster"))
            div { button type="submit" id="move-settings" { "Move the section" } }
        }
        form method="post" action="/cluster/deletesettings" class="stack narrowform" id="deletesettings" {
            (hidden("csrf", csrf))
            (section("ds-section"))
            (level("ds-level", "from", "Delete it at", &mine))
            div { button type="submit" id="delete-settings" class="danger" { "Delete the section there" } }
        }
    }
}

/// A labelled text input.
fn input(id: &str, name: &str, label: &str, pattern: Option<&str>, required: bool) -> Markup {
    html! {
        label for=(id) { (label) }
        input id=(id) name=(name) required[required] pattern=[pattern] autocomplete="off";
    }
}

fn create_form(csrf: &str) -> Markup {
    html! {
        section aria-labelledby="hcr" {
            h2 id="hcr" { "Create a cluster" }
            form method="post" action="/cluster/create" class="stack narrowform" id="create" {
                (hidden("csrf", csrf))
                (input("c-name", "name", "Cluster name", Some(NAME), true))
                (input("c-url", "url", "The cluster's PostgreSQL (postgresql://USER@HOST:PORT/DATABASE)", None, true))
                (input("c-ca", "ca", "CA of the store's certificate (a file next to the configuration; empty: none)", None, false))
                (input("c-machine", "machine", "This machine's name in the cluster (empty: its host name)", Some(NAME), false))
                (input("c-address", "address", "This machine's address in the cluster (empty: its first interface's)", None, false))
                div { button type="submit" id="create-cluster" { "Create the cluster" } }
            }
        }
    }
}

fn join_form(csrf: &str) -> Markup {
    html! {
        section aria-labelledby="hj" {
            h2 id="hj" { "Join a cluster" }
            form method="post" action="/cluster/join" class="stack narrowform" id="join" {
                (hidden("csrf", csrf))
                p class="note" { "Give the store (its PostgreSQL and CA), or a member to ask over SSH where it is." }
                (input("j-url", "url", "The cluster's PostgreSQL (postgresql://USER@HOST:PORT/DATABASE)", None, false))
                (input("j-ca", "ca", "CA of the store's certificate (a file next to the configuration; empty: none)", None, false))
                (input("j-member", "member", "Or a member's SSH address (IP[:PORT])", None, false))
                (input("j-user", "user", "The member's Administrator account (empty: admin)", None, false))
                label for="j-password" { "That account's password (not stored)" }
                input id="j-password" name="password" type="password" autocomplete="off";
                (input("j-host-key", "host_key", "The member's SSH host key to pin (SHA256:..., optional)", None, false))
                label for="j-token" { "Or a join token from `clusterconfig jointoken` on a member (instead of the above)" }
                input id="j-token" name="token" type="password" autocomplete="off";
                (input("j-machine", "machine", "This machine's name in the cluster (empty: its host name)", Some(NAME), false))
                (input("j-address", "address", "This machine's address in the cluster (empty: its first interface's)", None, false))
                (input("j-group", "group", "Group (empty: the cluster's main group)", Some(NAME), false))
                div { button type="submit" id="join-cluster" { "Join the cluster" } }
            }
        }
    }
}

/// The membership forms of a member; `list`: `clusterconfig list`, for the choices.
fn change_forms(csrf: &str, held: bool, list: Option<&Value>) -> Markup {
    let groups: Vec<&str> = list
        .and_then(|l| l["groups"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|g| g["name"].as_str())
        .collect();
    let machines: Vec<&str> = list
        .and_then(|l| l["groups"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|g| g["machines"].as_array())
        .flatten()
        .filter_map(|m| m["name"].as_str())
        .collect();
    let select = |id: &str, name: &str, label: &str, items: &[&str], empty: Option<&str>| {
        html! {
            label for=(id) { (label) }
            select id=(id) name=(name) {
                @if let Some(e) = empty { option value="" { (e) } }
                @for i in items { option value=(i) { (i) } }
            }
        }
    };
    html! {
        section aria-labelledby="hch" {
            h2 id="hch" { "Change the cluster" }
            p class="note" { "Membership changes take effect at once on every member (they are not pending changes)." }
            form method="post" action="/cluster/addgroup" class="stack narrowform" id="addgroup" {
                (hidden("csrf", csrf))
                (input("a-name", "name", "New group", Some(NAME), true))
                div { button type="submit" id="add-group" { "Add the group" } }
            }
            form method="post" action="/cluster/setgroup" class="stack narrowform" id="setgroup" {
                (hidden("csrf", csrf))
                (select("s-machine", "machine", "Machine", &machines, None))
                (select("s-group", "group", "Move it to group", &groups, None))
                div { button type="submit" id="set-group" { "Move the machine" } }
            }
            form method="post" action="/cluster/renamegroup" class="stack narrowform" id="renamegroup" {
                (hidden("csrf", csrf))
                (select("r-name", "name", "Group", &groups, None))
                (input("r-to", "to", "New name", Some(NAME), true))
                div { button type="submit" id="rename-group" { "Rename the group" } }
            }
            form method="post" action="/cluster/deletegroup" class="stack narrowform" id="deletegroup" {
                (hidden("csrf", csrf))
                (select("d-name", "name", "Group", &groups, None))
                (select("d-to", "to", "Move its machines to", &groups, Some("(it has none)")))
                div { button type="submit" id="delete-group" class="danger" { "Delete the group" } }
            }
            form method="post" action="/cluster/removemachine" class="stack narrowform" id="removemachine" {
                (hidden("csrf", csrf))
                (select("m-name", "name", "Machine", &machines, None))
                div { button type="submit" id="remove-machine" class="danger" { "Remove the machine from the cluster" } }
            }
            @if held {
                form method="post" action="/cluster/reconnect" id="reconnect" {
                    (hidden("csrf", csrf))
                    p { "This machine is held disconnected: reconnect it to take the cluster's configuration again." }
                    button type="submit" id="reconnect-machine" { "Reconnect this machine" }
                }
            } @else {
                form method="post" action="/cluster/disconnect" id="disconnect" {
                    (hidden("csrf", csrf))
                    p { "Disconnecting keeps this machine on the revision it runs and refuses configuration changes until it is reconnected." }
                    button type="submit" id="disconnect-machine" class="danger" { "Disconnect this machine" }
                }
            }
        }
    }
}

/// Join tokens: make one (shown once, on the page that answers), the ones that work
/// (never a token itself), each with its revoke button.
fn token_forms(csrf: &str, tokens: &Response) -> Markup {
    let list: Vec<Value> = tokens.data["tokens"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    html! {
        section aria-labelledby="htk" {
            h2 id="htk" { "Join tokens" }
            p class="note" { "A join token lets one machine join with `clusterconfig join --token`, without an Administrator's password: it names this member and pins its SSH host key. It is shown once and works once." }
            form method="post" action="/cluster/jointoken" class="stack narrowform" id="jointoken" {
                (hidden("csrf", csrf))
                (input("t-expires", "expires", "Minutes it works (1 to 1440; empty: 60)", Some("[1-9][0-9]{0,3}"), false))
                div { button type="submit" id="make-token" { "Make a join token" } }
            }
            @if !tokens.ok { (refusal(tokens)) }
            @else if list.is_empty() { p id="no-tokens" { "No join token works now." } }
            @else {
                table id="tokens" {
                    thead { tr { th { "Hash" } th { "Made by" } th { "Made" } th { "Expires" } th { "" } } }
                    tbody {
                        @for t in &list {
                            tr {
                                td { code { (t["hash"].as_str().unwrap_or("")) } }
                                td { (t["created_by"].as_str().unwrap_or("")) }
                                td { (t["created"].as_str().unwrap_or("")) }
                                td { (t["expires"].as_str().unwrap_or("")) }
                                td {
                                    form method="post" action="/cluster/jointoken-revoke" {
                                        (hidden("csrf", csrf))
                                        (hidden("hash", t["hash"].as_str().unwrap_or("")))
                                        button type="submit" class="danger" { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn back_links() -> Markup {
    html! { a href="/cluster" id="back" { "Back to the cluster" } }
}

/// One form of the page: its `clusterconfig` action with the form's fields. Removing a
/// machine asks first (the first POST shows a confirmation, the second removes).
pub(super) async fn cluster_op(
    Path(action): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let Some((action, keys)) = ACTIONS.iter().find(|(a, _)| *a == action.as_str()) else {
        let r = Response::error(format!(
            "Unknown cluster action {action:?}; allowed: {}.",
            ACTIONS
                .iter()
                .map(|(a, _)| *a)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return outcome_page(&shared, &c, &r, back_links(), ("", "Not done"));
    };
    if *action == "removemachine" && field(&form, "confirm").is_none() {
        let name = field(&form, "name").unwrap_or("").trim().to_string();
        let b = html! {
            p role="alert" {
                "Remove the machine " strong { (name) } " from the cluster? It keeps the settings it inherited, flattened into its own configuration, and no longer takes the cluster's."
            }
            form method="post" action="/cluster/removemachine" {
                (hidden("csrf", &c.csrf))
                (hidden("name", &name))
                (hidden("confirm", "1"))
                button type="submit" id="confirm-remove" class="danger" { "Remove " (name) }
                " "
                a href="/cluster" id="back" { "Cancel" }
            }
        };
        return html(
            StatusCode::OK,
            page(&shared, &c, &format!("Remove machine {name}?"), b),
        );
    }
    let mut args = json!({ "action": action });
    let password = form
        .iter()
        .find(|(n, _)| n == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    for k in *keys {
        if *k == "password" {
            if !password.is_empty() {
                args["password"] = json!(password);
            }
        } else if let Some(v) = field(&form, k) {
            args[*k] = match (*k, v.trim().parse::<u64>()) {
                ("expires", Ok(m)) => json!(m),
                _ => json!(v.trim()),
            };
        }
    }
    let mut r = run(&shared, &c.id, "clusterconfig", args).await;
    // Never echo a password back into a page.
    if !password.is_empty() {
        r.text = r.text.replace(&password, "(hidden)");
    }
    let links = if SETTINGS.contains(action) {
        html! { a href="/changes" id="changes" { "Pending changes (commit)" } " · " (back_links()) }
    } else {
        back_links()
    };
    outcome_page(&shared, &c, &r, links, ("Done", "Not done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>\"'";
    const E: &str = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'";

    #[test]
    fn the_cluster_page_escapes_names_addresses_reasons_and_commands() {
        let list = json!({ "cluster": EVIL, "revision": 4, "fresh": false, "machine": EVIL,
            "groups": [ { "name": EVIL, "machines": [
                { "name": EVIL, "address": EVIL, "connected": true, "revision": 4 },
                { "name": "gw2", "address": "10.0.0.2", "connected": false, "revision": null } ] },
                { "name": "west", "machines": [] } ] });
        let check = json!({ "revision": 4, "findings": [ { "subject": EVIL, "text": EVIL, "resolve": [EVIL] } ] });
        let down = json!({ "machine": EVIL, "connected": false, "held": false, "since": 0,
            "why": EVIL, "revision": 3, "head": 4 });
        let p = [
            members(&list),
            findings(&check),
            connection(&down),
            change_forms(EVIL, false, Some(&list)),
        ]
        .map(Markup::into_string)
        .concat();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        assert!(p.contains(&format!("<td>{E} (this machine)</td>")), "{p}");
        assert!(p.contains(&format!("Resolve: <code>{E}</code>")), "{p}");
        assert!(p.contains("to the cluster's store since"), "{p}");
        assert!(p.contains(&format!(": {E}.</p>")), "{p}");
        assert!(p.contains("last good configuration (revision 3)"), "{p}");
        assert!(p.contains("as this machine last saw it"), "{p}");
        assert!(
            p.contains("<td colspan=\"4\" class=\"muted\">no machines</td>"),
            "{p}"
        );
        assert!(
            p.contains(&format!("<option value=\"{E}\">{E}</option>")),
            "{p}"
        );
        assert!(p.contains(&format!("name=\"csrf\" value=\"{E}\"")), "{p}");
        assert!(!p.contains(" style=") && !p.contains(" onclick"), "{p}");
        // Every form of the page posts one of the actions the handler takes.
        let all = [
            p,
            create_form("t").into_string(),
            join_form("t").into_string(),
        ]
        .concat();
        for (i, _) in all.match_indices("action=\"/cluster/") {
            let a = &all[i + 17..];
            let a = &a[..a.find('"').unwrap()];
            assert!(ACTIONS.iter().any(|(x, _)| *x == a), "{a}");
        }
    }

    /// `showconfig`'s answer on `me` with `levels` (level, sections set there).
    fn shown(me: &str, levels: &[(&str, &[&str])], origins: Value, pending: bool) -> Value {
        let rows: Vec<Value> = levels
            .iter()
            .map(|(l, s)| json!({ "level": l, "sections": s }))
            .collect();
        json!({ "cluster": true, "revision": 5, "machine": me, "origins": origins, "pending": pending,
            "layers": { "levels": rows, "scopes": { "interface": "machine", "ssh": "cluster", "tls": "any" } } })
    }

    #[test]
    fn the_settings_table_shows_each_level_the_section_in_force_and_what_is_pending() {
        let group = format!("group:{EVIL}");
        let other = format!("machine:{EVIL}");
        let now = shown(
            "gw1",
            &[
                ("cluster", &["tls", "ssh", EVIL]),
                (&group, &["tls"]),
                ("machine:gw1", &["interface"]),
                (&other, &["tls"]),
            ],
            json!({ "tls": group, "ssh": "cluster", "interface": "machine:gw1", EVIL: "cluster" }),
            false,
        );
        let planned = shown(
            "gw1",
            &[
                ("cluster", &["tls", "ssh", EVIL]),
                (&group, &[]),
                ("machine:gw1", &["interface", "tls"]),
                (&other, &["tls"]),
            ],
            json!({}),
            true,
        );
        let t = settings_table(&now, Some(&planned)).into_string();
        assert!(!t.contains("<script") && !t.contains("\"'"), "{t}");
        // One column per level, named; a machine other than this one is a column too.
        assert!(
            t.contains(&format!("<th scope=\"col\">Group {E}</th>")),
            "{t}"
        );
        assert!(
            t.contains(&format!("<th scope=\"col\">Machine {E}</th>")),
            "{t}"
        );
        assert!(
            t.contains("<th scope=\"col\">Machine gw1 (this machine)</th>"),
            "{t}"
        );
        assert!(t.contains(&format!("<th scope=\"row\">{E}</th>")), "{t}");
        // The level in force is marked in its own cell only.
        let cell = |level: &str, section: &str| {
            let at = format!("data-level=\"{level}\" data-section=\"{section}\">");
            let i = t.find(&at).unwrap_or_else(|| panic!("no cell {at}: {t}"));
            let rest = &t[i + at.len()..];
            rest[..rest.find("</td>").unwrap()].to_string()
        };
        let eg = format!("group:{E}");
        assert!(
            cell(&eg, "tls").starts_with("set") && cell(&eg, "tls").contains("in force here"),
            "{t}"
        );
        assert!(!cell("cluster", "tls").contains("in force here"), "{t}");
        assert!(cell("cluster", "ssh").contains("in force here"), "{t}");
        assert!(cell(&format!("machine:{E}"), "tls") == "set", "{t}");
        // What the pending changes would do.
        assert!(cell(&eg, "tls").contains("(pending: deleted)"), "{t}");
        assert!(cell("machine:gw1", "tls").contains("(pending: set)"), "{t}");
        assert!(t.contains("id=\"settings-pending\""), "{t}");
        // Machine-only and cluster-only sections say so.
        assert!(
            t.contains("interface <span class=\"badge\">machine only</span>"),
            "{t}"
        );
        assert!(
            t.contains("ssh <span class=\"badge\">cluster only</span>"),
            "{t}"
        );
        assert!(t.contains("href=\"/changes\""), "{t}");
        // Nothing pending: no pending marks.
        let t = settings_table(&now, Some(&now)).into_string();
        assert!(
            !t.contains("pending:") && !t.contains("settings-pending"),
            "{t}"
        );
    }

    #[test]
    fn the_settings_forms_offer_the_levels_this_machine_may_change() {
        let now = shown(
            "gw1",
            &[
                ("cluster", &["tls"]),
                ("group:Main_Group", &[]),
                ("group:west", &[EVIL]),
                ("machine:gw1", &["interface"]),
                ("machine:gw2", &["tls"]),
            ],
            json!({ "tls": "cluster" }),
            false,
        );
        let f = settings_forms(EVIL, &now, None).into_string();
        assert!(!f.contains("<script") && !f.contains("\"'"), "{f}");
        assert!(
            f.contains(&format!("<option value=\"{E}\">{E}</option>")),
            "{f}"
        );
        assert!(
            f.contains("<option value=\"group:west\">Group west</option>"),
            "{f}"
        );
        assert!(
            f.contains("value=\"machine:gw1\" selected>Machine gw1 (this machine)"),
            "{f}"
        );
        // Another machine's own level is not offered: it is changed on that machine.
        assert!(!f.contains("machine:gw2"), "{f}");
        assert_eq!(
            f.matches(&format!("name=\"csrf\" value=\"{E}\"")).count(),
            3,
            "{f}"
        );
        for a in SETTINGS {
            assert!(f.contains(&format!("action=\"/cluster/{a}\"")), "{f}");
            assert!(ACTIONS.iter().any(|(x, _)| x == a), "{a}");
        }
    }

    #[test]
    fn held_and_connected_say_so() {
        let held = json!({ "machine": "gw1", "connected": false, "held": true, "since": 0,
            "why": "held", "revision": 7, "head": 7 });
        let h = connection(&held).into_string();
        // Held while the loop has not let go of the store yet: held is what it is.
        let mut going = held.clone();
        going["connected"] = json!(true);
        assert!(connection(&going).into_string().contains("DISCONNECTED"));
        assert!(
            h.contains("DISCONNECTED") && h.contains("role=\"alert\"") && h.contains("revision 7"),
            "{h}"
        );
        let up = json!({ "machine": "gw1", "connected": true, "held": false, "since": 0,
            "why": null, "revision": 7, "head": 8 });
        let u = connection(&up).into_string();
        assert!(
            u.contains("role=\"status\"") && u.contains("revision 7 of 8"),
            "{u}"
        );
        assert!(change_forms("t", true, None)
            .into_string()
            .contains("/cluster/reconnect"));
        assert!(change_forms("t", false, None)
            .into_string()
            .contains("/cluster/disconnect"));
        assert!(findings(&json!({ "revision": 2, "findings": [] }))
            .into_string()
            .contains("No differences"));
    }
}
