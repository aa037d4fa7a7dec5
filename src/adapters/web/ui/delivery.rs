//! Delivery status, on gateways and managers alike: the queue's destinations as
//! `tophosts` shows them (the appliance's columns, `*` before a host that was down at
//! the last delivery attempt, the same sort orders), one host's `hoststatus` (its text
//! and its figures), and "Deliver now" (`delivernow` for that host) for roles that may
//! operate. The CPQ destinations (`the.cpq.host` on a gateway, `the.cpq.release.host`
//! on a manager) are hosts like any other here, as they are in the queue. Each page is
//! one command as the session user, so a role without Monitor sees the refusal.

use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::commands::protocol::Response;
use crate::core::state::Handles;
use crate::core::users::Perm;

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Handles>> {
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
    let b = html! {
        form method="get" action="/delivery" class="filters" {
            div {
                label for="sort" { "Sort by" }
                select id="sort" name="sort" {
                    @for (v, label) in SORTS { option value=(v) selected[v == sort] { (label) } }
                }
            }
            div { button type="submit" id="sort-go" { "Sort" } }
        }
        @if r.ok {
            (hosts_table(r.data["hosts"].as_array().map(Vec::as_slice).unwrap_or_default()))
        } @else {
            (refusal(&r))
        }
    };
    html(StatusCode::OK, page(&shared, &c, "Delivery status", b))
}

/// The hosts of `tophosts`, `*` before those that were down.
fn hosts_table(hosts: &[Value]) -> Markup {
    html! {
        p id="legend" { "Hosts marked with " strong { "*" } " were down as of the last delivery attempt." }
        table id="tophosts" {
            caption { "Recipient hosts in the delivery queue" }
            thead {
                tr {
                    th scope="col" { "#" } th scope="col" { "Recipient Host" } th scope="col" { "Active Recip." }
                    th scope="col" { "Conn. Out" } th scope="col" { "Deliv. Recip." } th scope="col" { "Soft Bounced" }
                    th scope="col" { "Hard Bounced" }
                }
            }
            tbody {
                @for (i, h) in hosts.iter().enumerate() {
                    @let name = h["host"].as_str().unwrap_or("");
                    @let down = h["down"] == true;
                    tr class=[down.then_some("down")] {
                        td class="num" { (i + 1) }
                        th scope="row" {
                            @if down {
                                span class="err" title="down at the last delivery attempt" aria-label="down at the last delivery attempt" { "*" }
                            }
                            a href={ "/delivery/" (enc(name)) } { (name) }
                        }
                        td class="num" { (num(&h["active_recipients"])) }
                        td class="num" { (num(&h["connections_out"])) }
                        td class="num" { (num(&h["delivered_recipients"])) }
                        td class="num" { (num(&h["soft_bounced"])) }
                        td class="num" { (num(&h["hard_bounced"])) }
                    }
                }
            }
        }
        @if hosts.is_empty() {
            p id="no-hosts" { "No hosts: nothing was delivered or queued since the node started." }
        }
    }
}

async fn host(Viewer { shared, c }: Viewer, Path(host): Path<String>) -> HttpResponse {
    let r = run(&shared, &c.id, "hoststatus", json!({ "host": host })).await;
    let title = format!("Host {host}");
    if !r.ok {
        let b = html! {
            (refusal(&r))
            p { a href="/delivery" { "Back to the delivery status" } }
        };
        return html(StatusCode::OK, page(&shared, &c, &title, b));
    }
    let may_operate = shared
        .access
        .users
        .role(&c.id.role)
        .is_some_and(|r| r.allows(Perm::Operate));
    let b = host_status(&host, &r, may_operate.then_some(c.csrf.as_str()));
    html(StatusCode::OK, page(&shared, &c, &title, b))
}

/// One host's `hoststatus` (`r`) and, for a role that may operate (`csrf` given),
/// Deliver now.
fn host_status(host: &str, r: &Response, csrf: Option<&str>) -> Markup {
    let d = &r.data;
    let name = d["host"].as_str().unwrap_or(host);
    let st = &d["status"];
    let down = st["down"] == true;
    html! {
        @if d["known"] == true {
            dl class="summary" id="host-summary" {
                dt { "Host up/down" }
                dd id="updown" class=(if down { "err" } else { "ok" }) {
                    (if down { "down (at the last delivery attempt)" } else { "up" })
                }
                dt { "Route" } dd { (d["route"].as_str().unwrap_or("")) }
                dt { "TLS" } dd { (d["tls"].as_str().unwrap_or("")) }
                dt { "Active recipients" } dd { (num(&st["active_recipients"])) }
                dt { "Current outbound connections" } dd { (num(&st["connections_out"])) }
                dt { "Delivered recipients" } dd { (num(&st["delivered_recipients"])) }
                dt { "Soft bounced events" } dd { (num(&st["soft_bounced"])) }
                dt { "Hard bounced recipients" } dd { (num(&st["hard_bounced"])) }
                @if let Some(e) = st["last_error"].as_str() {
                    dt { "Last error" } dd id="last-error" { (e) }
                }
            }
        }
        @if let Some(csrf) = csrf {
            form method="post" action={ "/delivery/" (enc(name)) "/delivernow" } class="actions" {
                (hidden("csrf", csrf))
                button type="submit" id="deliver-now" aria-describedby="dn-help" { "Deliver now" }
                " "
                span id="dn-help" class="help" {
                    "retries every queued recipient of " (name) " at once (" code { "delivernow " (name) } ")"
                }
            }
        }
        section aria-labelledby="ht" {
            h2 id="ht" { "hoststatus " (name) }
            pre id="hoststatus" { (r.text.trim_end()) }
        }
        p { a href="/delivery" id="back" { "Back to the delivery status" } }
    }
}

async fn deliver_now(Path(host): Path<String>, Post { shared, c, .. }: Post) -> HttpResponse {
    let r = run(&shared, &c.id, "delivernow", json!({ "host": host })).await;
    let links = html! {
        a href={ "/delivery/" (enc(&host)) } id="back" { "Back to " (host) }
        " "
        a href="/delivery" { "Delivery status" }
    };
    outcome_page(&shared, &c, &r, links, ("Delivery rescheduled", "Not done"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn delivery_pages_escape_host_names_routes_and_errors() {
        let t = hosts_table(&[json!({ "host": EVIL, "down": true, "active_recipients": 2 })])
            .into_string();
        assert!(!t.contains("<script") && !t.contains("\"'"), "{t}");
        assert!(t.contains("<tr class=\"down\">"), "{t}");
        assert!(
            t.contains(
                "href=\"/delivery/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27\">&lt;script&gt;"
            ),
            "{t}"
        );
        assert!(!hosts_table(&[json!({ "host": "a" })])
            .into_string()
            .contains("class=\"down\""));

        let r = Response::ok(
            format!("{EVIL}\n"),
            json!({ "host": EVIL, "known": true, "route": EVIL, "tls": "off",
                "status": { "down": false, "last_error": EVIL } }),
        );
        let p = host_status("h", &r, Some("c\"s")).into_string();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        assert!(
            p.contains("<pre id=\"hoststatus\">&lt;script&gt;alert(1)&lt;/script&gt;&quot;'</pre>"),
            "{p}"
        );
        assert!(p.contains("<dd id=\"last-error\">&lt;script&gt;"), "{p}");
        assert!(p.contains("value=\"c&quot;s\""), "{p}");
        assert!(!host_status("h", &r, None)
            .into_string()
            .contains("deliver-now"));
    }
}
