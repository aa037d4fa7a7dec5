//! Centralized services (manager): the gateways with their live state, adding,
//! testing, editing and removing gateways (`applianceconfig`), and the PVO service
//! (`pvoconfig service`). On a gateway the page says where these live. Changes are
//! pending until commit (the Changes page); only Administrators may make them (the
//! command refuses others, and the refusal is shown).

use std::sync::Arc;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::commands::protocol::Response;
use crate::core::config::Role;
use crate::core::state::Handles;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Handles>> {
    Router::new()
        .route("/services", get(services))
        .route("/services/gateways", post(gateway_new))
        .route(
            "/services/gateways/{id}",
            get(gateway_form).post(gateway_op),
        )
        .route("/services/service", post(service_save))
}

/// That changes here wait for a commit, with the link to the Changes page.
fn pending_note() -> Markup {
    html! {
        "Adding, editing and removing gateways and changing the PVO service are pending changes: they take effect when committed on the "
        a href="/changes" { "Changes" }
        " page."
    }
}

/// The Test / Edit / Remove controls of one gateway row.
fn row_actions(csrf: &str) -> impl Fn(&Value) -> Markup + Sync + '_ {
    move |g: &Value| {
        let id = g["id"].as_str().unwrap_or("");
        let path = format!("/services/gateways/{}", enc(id));
        html! {
            form method="post" action=(path) class="inline" {
                (hidden("csrf", csrf))
                button type="submit" name="op" value="test" aria-label={ "Test " (id) } { "Test" } " "
                a href=(path) aria-label={ "Edit " (id) } { "Edit" } " "
                button type="submit" name="op" value="delete" class="danger" aria-label={ "Remove " (id) } { "Remove" }
            }
        }
    }
}

pub(super) async fn services(Viewer { shared, c }: Viewer) -> HttpResponse {
    let role = shared.config.current().role;
    let p = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    if role == Role::Gateway {
        let b = html! {
            p id="on-gateway" {
                "Centralized services live on the manager: gateways are added, tested and removed there (Centralized services of the manager's web UI), and the manager runs the PVO service that receives this gateway's quarantined messages. On this gateway, centralization is enabled or disabled from the "
                a href="/pvo" { "PVO settings" }
                " page."
            }
            section aria-labelledby="hm" {
                h2 id="hm" { "This gateway" }
                @if p.ok { (gateway_pvo(&p.data)) } @else { (refusal(&p)) }
            }
        };
        return html(StatusCode::OK, page(&shared, &c, "Centralized services", b));
    }
    let d = run(&shared, &c.id, "commitdetail", json!({})).await;
    let pending = d.ok && changes_pending(&d.data);
    // Gateways and their live state.
    let actions = row_actions(&c.csrf);
    let gateways = manager_gateways(&shared, &c, &p.data, Some(&actions)).await;
    let cfg = shared.config.current();
    // The PVO service (cpq_listener).
    let current = cfg
        .cpq
        .as_ref()
        .map(|q| (cfg.interfaces[q.interface].name.clone(), q.port));
    let interfaces: Vec<(String, String)> = cfg
        .interfaces
        .iter()
        .map(|i| (i.name.clone(), i.address.to_string()))
        .collect();
    drop(cfg);
    let b = html! {
        p class="note" { (pending_note()) }
        @if pending {
            p id="pending" role="status" {
                strong { "Changes are pending." } " " a href="/changes" { "Review and commit them" } "."
            }
        }
        section aria-labelledby="hg" { h2 id="hg" { "Gateways" } (gateways) }
        (add_gateway(&c.csrf))
        (pvo_service(current.as_ref(), &interfaces, &c.csrf))
        section aria-labelledby="hl" {
            h2 id="hl" { "Next steps" }
            ul {
                li { a href="/pvo" id="wizard" { "Migration wizard" } ": how the gateways' local quarantines map to the central ones (run once by an Administrator, then committed)." }
                li { a href="/changes" id="changes" { "Pending changes" } ": commit them (or clear them); nothing above takes effect before." }
            }
        }
    };
    html(StatusCode::OK, page(&shared, &c, "Centralized services", b))
}

/// The form that adds a gateway.
fn add_gateway(csrf: &str) -> Markup {
    html! {
        section aria-labelledby="ha" {
            h2 id="ha" { "Add a gateway" }
            p { "The manager logs into the gateway once over SSH with its Administrator's password (not stored), installs its own SSH key for that user, issues and installs the gateway's CPQ certificate, and asks where released mail goes. The gateway must have its SSH service on." }
            form method="post" action="/services/gateways" class="stack narrowform" id="add-gateway" {
                (hidden("csrf", csrf))
                label for="g-id" { "Gateway id" }
                input id="g-id" name="id" required pattern="[A-Za-z0-9._:\\-]{1,128}" autocomplete="off" aria-describedby="g-id-help";
                small id="g-id-help" { "1 to 128 of A-Z a-z 0-9 . - _ : (it becomes the gateway's CPQ name)" }
                label for="g-address" { "Gateway address (IP, for SSH)" }
                input id="g-address" name="address" required autocomplete="off";
                label for="g-ssh-port" { "SSH port" }
                input id="g-ssh-port" name="ssh_port" type="number" min="1" max="65535" value="22" required;
                label for="g-user" { "Gateway Administrator's user name" }
                input id="g-user" name="user" value="admin" required autocomplete="off";
                label for="g-password" { "Gateway Administrator's password" }
                input id="g-password" name="password" type="password" required autocomplete="off";
                div { button type="submit" id="add" { "Add the gateway" } }
            }
        }
    }
}

/// The PVO service (the cpq_listener): where it is now (`current`: interface, port)
/// and the form that moves it to one of `interfaces` (name, address).
fn pvo_service(
    current: Option<&(String, u16)>,
    interfaces: &[(String, String)],
    csrf: &str,
) -> Markup {
    html! {
        section aria-labelledby="hp" {
            h2 id="hp" { "PVO service" }
            p {
                "The centralized PVO service is the manager's cpq_listener: gateways send their quarantined messages to it. Now: "
                @match current {
                    Some((i, port)) => { "interface " (i) ", port " (port) }
                    None => "not configured ([cpq] is missing)",
                }
                "."
            }
            form method="post" action="/services/service" class="stack narrowform" id="pvo-service" {
                (hidden("csrf", csrf))
                label for="s-interface" { "Interface" }
                select id="s-interface" name="interface" {
                    @for (n, addr) in interfaces {
                        option value=(n) selected[current.is_some_and(|(c, _)| c == n)] { (n) " (" (addr) ")" }
                    }
                }
                label for="s-port" { "Port" }
                input id="s-port" name="port" type="number" min="1" max="65535" value=(current.map_or(7025, |c| c.1)) required;
                div { button type="submit" id="save-service" { "Save (pending until commit)" } }
            }
        }
    }
}

fn back_links() -> Markup {
    html! {
        a href="/services" id="back" { "Back to the centralized services" }
        " · "
        a href="/changes" { "Pending changes (commit)" }
    }
}

fn text_of(form: &[(String, String)], k: &str) -> Option<String> {
    field(form, k).map(|v| v.trim().to_string())
}

/// A port from a form field, or the reason it is not one.
fn port_of(form: &[(String, String)], k: &str, what: &str) -> Result<Option<u64>, Response> {
    match field(form, k) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(p) if (1..=65_535).contains(&p) => Ok(Some(p)),
            _ => Err(Response::error(format!(
                "{what}: {v:?} is not a port (1 to 65535)."
            ))),
        },
    }
}

pub(super) async fn gateway_new(Post { shared, c, form }: Post) -> HttpResponse {
    let password = form
        .iter()
        .find(|(n, _)| n == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut r = match port_of(&form, "ssh_port", "SSH port") {
        Err(r) => r,
        Ok(ssh_port) => {
            let mut args = json!({ "action": "new" });
            for k in ["id", "address", "user"] {
                if let Some(v) = text_of(&form, k) {
                    args[k] = json!(v);
                }
            }
            if let Some(p) = ssh_port {
                args["ssh_port"] = json!(p);
            }
            if !password.is_empty() {
                args["password"] = json!(password);
            }
            run(&shared, &c.id, "applianceconfig", args).await
        }
    };
    // Never echo a password back into a page.
    if !password.is_empty() {
        r.text = r.text.replace(&password, "(hidden)");
    }
    if r.ok {
        r.text.push_str("\nPending until commit.");
    }
    outcome_page(
        &shared,
        &c,
        &r,
        back_links(),
        ("Gateway added (pending)", "Gateway not added"),
    )
}

/// The edit form of one gateway (prefilled from `applianceconfig list`).
pub(super) async fn gateway_form(
    Viewer { shared, c }: Viewer,
    Path(id): Path<String>,
) -> HttpResponse {
    let title = format!("Gateway {id}");
    let l = run(
        &shared,
        &c.id,
        "applianceconfig",
        json!({ "action": "list" }),
    )
    .await;
    if !l.ok {
        let b = html! { (refusal(&l)) p { (back_links()) } };
        return html(StatusCode::OK, page(&shared, &c, &title, b));
    }
    let Some(g) = l.data["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["id"].as_str() == Some(id.as_str()))
        .cloned()
    else {
        let b = html! {
            p class="err" role="alert" { "No gateway " (id) " is added (or it is added but not committed yet)." }
            p { (back_links()) }
        };
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, b));
    };
    html(
        StatusCode::OK,
        page(&shared, &c, &title, gateway_edit(&id, &g, &c.csrf)),
    )
}

/// The edit form of gateway `id` (`g`, its row of `applianceconfig list`).
fn gateway_edit(id: &str, g: &Value, csrf: &str) -> Markup {
    html! {
        p {
            "CPQ (released mail) goes to " (g["address"].as_str().unwrap_or("")) ":" (g["port"].as_u64().unwrap_or(0))
            @if let Some(l) = g["learned"].as_str() { " (learned over SSH: " (l) ")" }
            "; SSH host key " (g["ssh_host_key"].as_str().unwrap_or("not known")) ". "
            (pending_note())
        }
        form method="post" action={ "/services/gateways/" (enc(id)) } class="stack narrowform" id="edit-gateway" {
            (hidden("csrf", csrf))
            (hidden("op", "edit"))
            label for="e-address" { "Address (IP)" }
            input id="e-address" name="address" value=(g["address"].as_str().unwrap_or("")) required autocomplete="off";
            label for="e-ssh-port" { "SSH port" }
            input id="e-ssh-port" name="ssh_port" type="number" min="1" max="65535" value=(g["ssh_port"].as_u64().map(|p| p.to_string()).unwrap_or_default());
            label for="e-user" { "SSH user (the gateway's Administrator)" }
            input id="e-user" name="user" value=(g["ssh_user"].as_str().unwrap_or("")) autocomplete="off";
            div { button type="submit" id="save-gateway" { "Save (pending until commit)" } }
        }
        p { (back_links()) }
    }
}

/// Test, edit or remove one gateway. Remove asks first: the first POST shows a
/// confirmation form, the second (with `confirm`) removes.
pub(super) async fn gateway_op(
    Path(id): Path<String>,
    Post { shared, c, form }: Post,
) -> HttpResponse {
    let r = match field(&form, "op").unwrap_or("") {
        "test" => {
            let r = run(
                &shared,
                &c.id,
                "applianceconfig",
                json!({ "action": "test", "id": id }),
            )
            .await;
            return outcome_page(
                &shared,
                &c,
                &r,
                back_links(),
                ("Gateway test passed", "Gateway test failed"),
            );
        }
        "edit" => match port_of(&form, "ssh_port", "SSH port") {
            Err(r) => r,
            Ok(ssh_port) => {
                let mut args = json!({ "action": "edit", "id": id });
                for k in ["address", "user"] {
                    if let Some(v) = text_of(&form, k) {
                        args[k] = json!(v);
                    }
                }
                if let Some(p) = ssh_port {
                    args["ssh_port"] = json!(p);
                }
                run(&shared, &c.id, "applianceconfig", args).await
            }
        },
        "delete" if field(&form, "confirm").is_none() => {
            let b = html! {
                p role="alert" {
                    "Remove the gateway " strong { (id) }
                    "? Once committed it can no longer transfer messages to this manager, and nothing is released to it."
                }
                form method="post" action={ "/services/gateways/" (enc(&id)) } {
                    (hidden("csrf", &c.csrf))
                    (hidden("op", "delete"))
                    (hidden("confirm", "1"))
                    button type="submit" id="confirm-remove" class="danger" { "Remove " (id) }
                    " "
                    a href="/services" id="back" { "Cancel" }
                }
            };
            return html(
                StatusCode::OK,
                page(&shared, &c, &format!("Remove gateway {id}?"), b),
            );
        }
        "delete" => {
            run(
                &shared,
                &c.id,
                "applianceconfig",
                json!({ "action": "delete", "id": id }),
            )
            .await
        }
        other => Response::error(format!(
            "Unknown gateway operation {other:?}; allowed: test, edit, delete."
        )),
    };
    let mut r = r;
    if r.ok {
        r.text.push_str("\nPending until commit.");
    }
    outcome_page(
        &shared,
        &c,
        &r,
        back_links(),
        ("Done (pending)", "Not done"),
    )
}

pub(super) async fn service_save(Post { shared, c, form }: Post) -> HttpResponse {
    let mut r = match port_of(&form, "port", "Port") {
        Err(r) => r,
        Ok(port) => {
            let mut args = json!({ "action": "service" });
            if let Some(i) = text_of(&form, "interface") {
                args["interface"] = json!(i);
            }
            if let Some(p) = port {
                args["port"] = json!(p);
            }
            run(&shared, &c.id, "pvoconfig", args).await
        }
    };
    if r.ok {
        r.text.push_str("\nPending until commit.");
    }
    outcome_page(
        &shared,
        &c,
        &r,
        back_links(),
        ("Saved (pending)", "Not saved"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn services_pages_escape_gateway_ids_addresses_and_interfaces() {
        let g = json!({ "id": EVIL, "address": EVIL, "port": 7025, "learned": EVIL,
            "ssh_host_key": EVIL, "ssh_port": 22, "ssh_user": EVIL });
        let interfaces = [(EVIL.to_string(), EVIL.to_string())];
        let p = [
            gateway_edit(EVIL, &g, "t"),
            row_actions("t")(&g),
            pvo_service(Some(&(EVIL.to_string(), 7025)), &interfaces, "t\""),
        ]
        .map(Markup::into_string)
        .concat();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        let e = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'";
        let path = "%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27";
        assert!(
            p.contains(&format!("action=\"/services/gateways/{path}\"")),
            "{p}"
        );
        assert!(
            p.contains(&format!("name=\"address\" value=\"{e}\"")),
            "{p}"
        );
        assert!(
            p.contains(&format!("aria-label=\"Remove {e}\">Remove</button>")),
            "{p}"
        );
        assert!(
            p.contains(&format!(
                "<option value=\"{e}\" selected>{e} ({e})</option>"
            )),
            "{p}"
        );
        assert!(
            p.contains(&format!("Now: interface {e}, port 7025.")),
            "{p}"
        );
        assert!(p.contains("value=\"t&quot;\""), "{p}");
        assert!(
            p.contains("committed on the <a href=\"/changes\">Changes</a> page."),
            "{p}"
        );
        assert!(pvo_service(None, &[], "t")
            .into_string()
            .contains("not configured ([cpq] is missing)"));
    }
}
