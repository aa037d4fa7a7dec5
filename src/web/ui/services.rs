//! Centralized services (manager): the gateways with their live state, adding,
//! testing, editing and removing gateways (`applianceconfig`), and the PVO service
//! (`pvoconfig service`). On a gateway the page says where these live. Changes are
//! pending until commit (the Changes page); only Administrators may make them (the
//! command refuses others, and the refusal is shown).

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
use crate::config::Role;
use crate::state::Shared;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/services", get(services))
        .route("/services/gateways", post(gateway_new))
        .route(
            "/services/gateways/{id}",
            get(gateway_form).post(gateway_op),
        )
        .route("/services/service", post(service_save))
}

const PENDING_NOTE: &str = "Adding, editing and removing gateways and changing the PVO service are pending changes: they take effect when committed on the <a href=\"/changes\">Changes</a> page.";

/// The Test / Edit / Remove controls of one gateway row.
fn row_actions(csrf: &str) -> impl Fn(&Value) -> String + Sync + '_ {
    move |g: &Value| {
        let id = g["id"].as_str().unwrap_or("");
        format!(
            "<form method=\"post\" action=\"/services/gateways/{path}\" class=\"inline\">{csrf}\
<button type=\"submit\" name=\"op\" value=\"test\" aria-label=\"Test {id}\">Test</button> \
<a href=\"/services/gateways/{path}\" aria-label=\"Edit {id}\">Edit</a> \
<button type=\"submit\" name=\"op\" value=\"delete\" class=\"danger\" aria-label=\"Remove {id}\">Remove</button></form>",
            path = esc(&enc(id)),
            csrf = hidden("csrf", csrf),
            id = esc(id),
        )
    }
}

pub(super) async fn services(Viewer { shared, c }: Viewer) -> HttpResponse {
    let role = shared.config().role;
    let p = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    let mut b = String::new();
    if role == Role::Gateway {
        b.push_str("<p id=\"on-gateway\">Centralized services live on the manager: gateways are added, tested and removed there (Centralized services of the manager's web UI), and the manager runs the PVO service that receives this gateway's quarantined messages. On this gateway, centralization is enabled or disabled from the <a href=\"/pvo\">PVO settings</a> page.</p>");
        b.push_str("<section aria-labelledby=\"hm\"><h2 id=\"hm\">This gateway</h2>");
        b.push_str(&if p.ok {
            gateway_pvo(&p.data)
        } else {
            refusal(&p)
        });
        b.push_str("</section>");
        return html(
            StatusCode::OK,
            page(&shared, &c, "Centralized services", &b),
        );
    }
    let _ = write!(b, "<p class=\"note\">{PENDING_NOTE}</p>");
    let d = run(&shared, &c.id, "commitdetail", json!({})).await;
    if d.ok && d.data["pending"].as_bool().unwrap_or(false) {
        b.push_str("<p id=\"pending\" role=\"status\"><strong>Changes are pending.</strong> <a href=\"/changes\">Review and commit them</a>.</p>");
    }

    // Gateways and their live state.
    b.push_str("<section aria-labelledby=\"hg\"><h2 id=\"hg\">Gateways</h2>");
    let actions = row_actions(&c.csrf);
    b.push_str(&manager_gateways(&shared, &c, &p.data, Some(&actions)).await);
    b.push_str("</section>");

    // Add a gateway.
    let _ = write!(
        b,
        "<section aria-labelledby=\"ha\"><h2 id=\"ha\">Add a gateway</h2>\
<p>The manager logs into the gateway once over SSH with its Administrator's password (not stored), installs its own SSH key for that user, issues and installs the gateway's CPQ certificate, and asks where released mail goes. The gateway must have its SSH service on.</p>\
<form method=\"post\" action=\"/services/gateways\" class=\"stack narrowform\" id=\"add-gateway\">{}\
<label for=\"g-id\">Gateway id</label><input id=\"g-id\" name=\"id\" required pattern=\"[A-Za-z0-9._:\\-]{{1,128}}\" autocomplete=\"off\" aria-describedby=\"g-id-help\"><small id=\"g-id-help\">1 to 128 of A-Z a-z 0-9 . - _ : (it becomes the gateway's CPQ name)</small>\
<label for=\"g-address\">Gateway address (IP, for SSH)</label><input id=\"g-address\" name=\"address\" required autocomplete=\"off\">\
<label for=\"g-ssh-port\">SSH port</label><input id=\"g-ssh-port\" name=\"ssh_port\" type=\"number\" min=\"1\" max=\"65535\" value=\"22\" required>\
<label for=\"g-user\">Gateway Administrator's user name</label><input id=\"g-user\" name=\"user\" value=\"admin\" required autocomplete=\"off\">\
<label for=\"g-password\">Gateway Administrator's password</label><input id=\"g-password\" name=\"password\" type=\"password\" required autocomplete=\"off\">\
<div><button type=\"submit\" id=\"add\">Add the gateway</button></div></form></section>",
        hidden("csrf", &c.csrf)
    );

    // The PVO service (cpq_listener).
    let cfg = shared.config();
    let current = cfg
        .cpq
        .as_ref()
        .map(|q| (cfg.interfaces[q.interface].name.clone(), q.port));
    let _ = write!(
        b,
        "<section aria-labelledby=\"hp\"><h2 id=\"hp\">PVO service</h2><p>The centralized PVO service is the manager's cpq_listener: gateways send their quarantined messages to it. Now: {}.</p>\
<form method=\"post\" action=\"/services/service\" class=\"stack narrowform\" id=\"pvo-service\">{}\
<label for=\"s-interface\">Interface</label><select id=\"s-interface\" name=\"interface\">",
        match &current {
            Some((i, port)) => format!("interface {}, port {port}", esc(i)),
            None => "not configured ([cpq] is missing)".into(),
        },
        hidden("csrf", &c.csrf)
    );
    for i in &cfg.interfaces {
        let selected = current.as_ref().is_some_and(|(n, _)| n == &i.name);
        let _ = write!(
            b,
            "<option value=\"{n}\"{}>{n} ({})</option>",
            if selected { " selected" } else { "" },
            esc(&i.address.to_string()),
            n = esc(&i.name)
        );
    }
    let _ = write!(
        b,
        "</select><label for=\"s-port\">Port</label><input id=\"s-port\" name=\"port\" type=\"number\" min=\"1\" max=\"65535\" value=\"{}\" required>\
<div><button type=\"submit\" id=\"save-service\">Save (pending until commit)</button></div></form></section>",
        current.map_or(7025, |c| c.1)
    );
    drop(cfg);

    b.push_str("<section aria-labelledby=\"hl\"><h2 id=\"hl\">Next steps</h2><ul>\
<li><a href=\"/pvo\" id=\"wizard\">Migration wizard</a>: how the gateways' local quarantines map to the central ones (run once by an Administrator, then committed).</li>\
<li><a href=\"/changes\" id=\"changes\">Pending changes</a>: commit them (or clear them); nothing above takes effect before.</li></ul></section>");
    html(
        StatusCode::OK,
        page(&shared, &c, "Centralized services", &b),
    )
}

fn back_links() -> &'static str {
    "<a href=\"/services\" id=\"back\">Back to the centralized services</a> · <a href=\"/changes\">Pending changes (commit)</a>"
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
        let b = format!("{}<p>{}</p>", refusal(&l), back_links());
        return html(StatusCode::OK, page(&shared, &c, &title, &b));
    }
    let Some(g) = l.data["gateways"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|g| g["id"].as_str() == Some(id.as_str()))
        .cloned()
    else {
        let b = format!(
            "<p class=\"err\" role=\"alert\">No gateway {} is added (or it is added but not committed yet).</p><p>{}</p>",
            esc(&id),
            back_links()
        );
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, &b));
    };
    let b = format!(
        "<p>CPQ (released mail) goes to {}:{}{}; SSH host key {}. {PENDING_NOTE}</p>\
<form method=\"post\" action=\"/services/gateways/{}\" class=\"stack narrowform\" id=\"edit-gateway\">{}{}\
<label for=\"e-address\">Address (IP)</label><input id=\"e-address\" name=\"address\" value=\"{}\" required autocomplete=\"off\">\
<label for=\"e-ssh-port\">SSH port</label><input id=\"e-ssh-port\" name=\"ssh_port\" type=\"number\" min=\"1\" max=\"65535\" value=\"{}\">\
<label for=\"e-user\">SSH user (the gateway's Administrator)</label><input id=\"e-user\" name=\"user\" value=\"{}\" autocomplete=\"off\">\
<div><button type=\"submit\" id=\"save-gateway\">Save (pending until commit)</button></div></form><p>{}</p>",
        esc(g["address"].as_str().unwrap_or("")),
        g["port"].as_u64().unwrap_or(0),
        g["learned"]
            .as_str()
            .map(|l| format!(" (learned over SSH: {})", esc(l)))
            .unwrap_or_default(),
        esc(g["ssh_host_key"].as_str().unwrap_or("not known")),
        esc(&enc(&id)),
        hidden("csrf", &c.csrf),
        hidden("op", "edit"),
        esc(g["address"].as_str().unwrap_or("")),
        g["ssh_port"].as_u64().map(|p| p.to_string()).unwrap_or_default(),
        esc(g["ssh_user"].as_str().unwrap_or("")),
        back_links()
    );
    html(StatusCode::OK, page(&shared, &c, &title, &b))
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
            let b = format!(
                "<p role=\"alert\">Remove the gateway <strong>{}</strong>? Once committed it can no longer transfer messages to this manager, and nothing is released to it.</p>\
<form method=\"post\" action=\"/services/gateways/{}\">{}{}{}<button type=\"submit\" id=\"confirm-remove\" class=\"danger\">Remove {}</button> <a href=\"/services\" id=\"back\">Cancel</a></form>",
                esc(&id),
                esc(&enc(&id)),
                hidden("csrf", &c.csrf),
                hidden("op", "delete"),
                hidden("confirm", "1"),
                esc(&id),
            );
            return html(
                StatusCode::OK,
                page(&shared, &c, &format!("Remove gateway {id}?"), &b),
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
