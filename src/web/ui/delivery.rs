//! Delivery status, on gateways and managers alike: the queue's destinations as
//! `tophosts` shows them (the appliance's columns, `*` before a host that was down at
//! the last delivery attempt, the same sort orders), one host's `hoststatus` (its text
//! and its figures), and "Deliver now" (`delivernow` for that host) for roles that may
//! operate. The CPQ destinations (`the.cpq.host` on a gateway, `the.cpq.release.host`
//! on a manager) are hosts like any other here, as they are in the queue. Each page is
//! one command as the session user, so a role without Monitor sees the refusal.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::state::Shared;
use crate::users::Perm;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/delivery", get(tophosts))
        .route("/delivery/{host}", get(host))
        .route("/delivery/{host}/delivernow", post(deliver_now))
}

/// The sort orders of `tophosts`: (value, label).
const SORTS: [(&str, &str); 5] = [
    ("active", "Active recipients"),
    ("conn", "Connections out"),
    ("delivered", "Delivered recipients"),
    ("soft", "Soft bounced"),
    ("hard", "Hard bounced"),
];

fn num(v: &Value) -> String {
    v.as_u64().unwrap_or(0).to_string()
}

async fn tophosts(Viewer { shared, c }: Viewer, RawQuery(raw): RawQuery) -> HttpResponse {
    let form = session::parse_form(raw.unwrap_or_default().as_bytes());
    let sort = field(&form, "sort").unwrap_or("active").trim().to_string();
    let r = run(&shared, &c.id, "tophosts", json!({ "sort": sort })).await;
    let mut b = String::new();
    b.push_str("<form method=\"get\" action=\"/delivery\" class=\"filters\"><div><label for=\"sort\">Sort by</label><select id=\"sort\" name=\"sort\">");
    for (v, label) in SORTS {
        let _ = write!(
            b,
            "<option value=\"{v}\"{}>{label}</option>",
            if v == sort { " selected" } else { "" }
        );
    }
    b.push_str(
        "</select></div><div><button type=\"submit\" id=\"sort-go\">Sort</button></div></form>",
    );
    if !r.ok {
        b.push_str(&refusal(&r));
        return html(StatusCode::OK, page(&shared, &c, "Delivery status", &b));
    }
    let hosts = r.data["hosts"].as_array().cloned().unwrap_or_default();
    b.push_str("<p id=\"legend\">Hosts marked with <strong>*</strong> were down as of the last delivery attempt.</p>");
    b.push_str("<table id=\"tophosts\"><caption>Recipient hosts in the delivery queue</caption><thead><tr>\
<th scope=\"col\">#</th><th scope=\"col\">Recipient Host</th><th scope=\"col\">Active Recip.</th><th scope=\"col\">Conn. Out</th>\
<th scope=\"col\">Deliv. Recip.</th><th scope=\"col\">Soft Bounced</th><th scope=\"col\">Hard Bounced</th></tr></thead><tbody>");
    for (i, h) in hosts.iter().enumerate() {
        let name = h["host"].as_str().unwrap_or("");
        let down = h["down"] == true;
        let _ = write!(
            b,
            "<tr{}><td class=\"num\">{}</td><th scope=\"row\">{}<a href=\"/delivery/{}\">{}</a></th><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            if down { " class=\"down\"" } else { "" },
            i + 1,
            if down {
                "<span class=\"err\" title=\"down at the last delivery attempt\" aria-label=\"down at the last delivery attempt\">*</span>"
            } else {
                ""
            },
            enc(name),
            esc(name),
            num(&h["active_recipients"]),
            num(&h["connections_out"]),
            num(&h["delivered_recipients"]),
            num(&h["soft_bounced"]),
            num(&h["hard_bounced"]),
        );
    }
    b.push_str("</tbody></table>");
    if hosts.is_empty() {
        b.push_str("<p id=\"no-hosts\">No hosts: nothing was delivered or queued since the node started.</p>");
    }
    html(StatusCode::OK, page(&shared, &c, "Delivery status", &b))
}

async fn host(Viewer { shared, c }: Viewer, Path(host): Path<String>) -> HttpResponse {
    let r = run(&shared, &c.id, "hoststatus", json!({ "host": host })).await;
    let title = format!("Host {host}");
    let mut b = String::new();
    if !r.ok {
        b.push_str(&refusal(&r));
        b.push_str("<p><a href=\"/delivery\">Back to the delivery status</a></p>");
        return html(StatusCode::OK, page(&shared, &c, &title, &b));
    }
    let d = &r.data;
    let name = d["host"].as_str().unwrap_or(&host).to_string();
    if d["known"] == true {
        let st = &d["status"];
        let down = st["down"] == true;
        let _ = write!(
            b,
            "<dl class=\"summary\" id=\"host-summary\"><dt>Host up/down</dt><dd id=\"updown\" class=\"{}\">{}</dd><dt>Route</dt><dd>{}</dd><dt>TLS</dt><dd>{}</dd><dt>Active recipients</dt><dd>{}</dd><dt>Current outbound connections</dt><dd>{}</dd><dt>Delivered recipients</dt><dd>{}</dd><dt>Soft bounced events</dt><dd>{}</dd><dt>Hard bounced recipients</dt><dd>{}</dd>{}</dl>",
            if down { "err" } else { "ok" },
            if down {
                "down (at the last delivery attempt)"
            } else {
                "up"
            },
            esc(d["route"].as_str().unwrap_or("")),
            esc(d["tls"].as_str().unwrap_or("")),
            num(&st["active_recipients"]),
            num(&st["connections_out"]),
            num(&st["delivered_recipients"]),
            num(&st["soft_bounced"]),
            num(&st["hard_bounced"]),
            st["last_error"]
                .as_str()
                .map(|e| format!("<dt>Last error</dt><dd id=\"last-error\">{}</dd>", esc(e)))
                .unwrap_or_default(),
        );
    }
    let may_operate = shared
        .users
        .role(&c.id.role)
        .is_some_and(|r| r.allows(Perm::Operate));
    if may_operate {
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/delivery/{}/delivernow\" class=\"actions\">{}<button type=\"submit\" id=\"deliver-now\" aria-describedby=\"dn-help\">Deliver now</button> <span id=\"dn-help\" class=\"help\">retries every queued recipient of {} at once (<code>delivernow {}</code>)</span></form>",
            enc(&name),
            hidden("csrf", &c.csrf),
            esc(&name),
            esc(&name)
        );
    }
    let _ = write!(
        b,
        "<section aria-labelledby=\"ht\"><h2 id=\"ht\">hoststatus {}</h2>{}</section><p><a href=\"/delivery\" id=\"back\">Back to the delivery status</a></p>",
        esc(&name),
        pre(&r.text).replacen("<pre>", "<pre id=\"hoststatus\">", 1)
    );
    html(StatusCode::OK, page(&shared, &c, &title, &b))
}

async fn deliver_now(Path(host): Path<String>, Post { shared, c, .. }: Post) -> HttpResponse {
    let r = run(&shared, &c.id, "delivernow", json!({ "host": host })).await;
    let links = format!(
        "<a href=\"/delivery/{}\" id=\"back\">Back to {}</a> <a href=\"/delivery\">Delivery status</a>",
        enc(&host),
        esc(&host)
    );
    outcome_page(
        &shared,
        &c,
        &r,
        &links,
        ("Delivery rescheduled", "Not done"),
    )
}
