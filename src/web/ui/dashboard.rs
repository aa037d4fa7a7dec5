//! The dashboard: quarantines, held per day, status, centralized quarantines, delivery status.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response as HttpResponse;
use axum::Extension;
use serde_json::{json, Value};

use super::*;

// ----------------------------------------------------------------------------------
// Dashboard
// ----------------------------------------------------------------------------------
/// Days shown by the dashboard's chart.
pub(super) const CHART_DAYS: u64 = 7;

/// Held messages by the day they were received (GMT), per quarantine, for the last
/// [`CHART_DAYS`] days: one counting search per day and quarantine (searches are not
/// audited). Bars are inline SVG (no script, no inline style).
pub(super) async fn per_day_chart(shared: &Arc<Shared>, c: &Caller, list: &Value) -> String {
    let names: Vec<String> = list["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["messages"].as_u64().unwrap_or(0) > 0)
        .filter_map(|q| q["name"].as_str().map(str::to_string))
        .collect();
    let mut out = String::from(
        "<section aria-labelledby=\"hd\"><h2 id=\"hd\">Held messages by day received (GMT)</h2>",
    );
    if names.is_empty() {
        out.push_str("<p>No messages are held.</p></section>");
        return out;
    }
    let today = crate::clock::unix_now() / 86_400;
    let mut rows: Vec<(u64, Vec<(u64, bool)>)> = Vec::new();
    for d in (0..CHART_DAYS).rev() {
        let day = today - d;
        let mut counts = Vec::new();
        for n in &names {
            let r = run(
                shared,
                &c.id,
                "quarantine",
                json!({ "action": "search", "limit": 1, "query": { "quarantine": n, "from": day * 86_400, "to": day * 86_400 + 86_399 } }),
            )
            .await;
            counts.push((
                r.data["total"].as_u64().unwrap_or(0),
                r.data["total_exact"].as_bool().unwrap_or(true),
            ));
        }
        rows.push((day, counts));
    }
    let max = rows
        .iter()
        .flat_map(|(_, c)| c.iter().map(|(n, _)| *n))
        .max()
        .unwrap_or(0)
        .max(1);
    out.push_str("<table id=\"per-day\" class=\"chart\"><thead><tr><th scope=\"col\">Day</th>");
    for n in &names {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(n));
    }
    out.push_str("</tr></thead><tbody>");
    for (day, counts) in &rows {
        let _ = write!(
            out,
            "<tr><th scope=\"row\">{}</th>",
            esc(&gmt(day * 86_400).chars().take(10).collect::<String>())
        );
        for (n, exact) in counts {
            let w = (n * 120).div_ceil(max);
            let label = if *exact {
                n.to_string()
            } else {
                format!("≥{n}")
            };
            let _ = write!(
                out,
                "<td><svg width=\"122\" height=\"12\" role=\"img\" aria-label=\"{label} messages\"><rect width=\"{w}\" height=\"12\" fill=\"currentColor\"/></svg> {label}</td>"
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></section>");
    out
}

pub(super) async fn dashboard(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut b = String::new();
    let q = run(
        &shared,
        &c.id,
        "quarantineconfig",
        json!({ "action": "list" }),
    )
    .await;
    b.push_str("<section aria-labelledby=\"hq\"><h2 id=\"hq\">Quarantines</h2>");
    if q.ok {
        let d = &q.data;
        let total = d["total_bytes"].as_u64().unwrap_or(0);
        let quota = d["quota_bytes"].as_u64().unwrap_or(0);
        let _ = write!(
            b,
            "<p>{} messages held, {} used",
            d["total_messages"].as_u64().unwrap_or(0),
            esc(&bytes(total))
        );
        if quota > 0 {
            let pct = (total * 100).checked_div(quota).unwrap_or(0).min(100);
            let _ = write!(
                b,
                " of {} <meter min=\"0\" max=\"100\" value=\"{pct}\" aria-label=\"space used\">{pct}%</meter> {pct}%",
                esc(&bytes(quota))
            );
        }
        b.push_str(".</p><table id=\"quarantines\"><thead><tr><th scope=\"col\">Quarantine</th><th scope=\"col\">Messages</th><th scope=\"col\">Space</th><th scope=\"col\">Retention</th><th scope=\"col\">Default action</th><th scope=\"col\">Settings</th></tr></thead><tbody>");
        for r in d["quarantines"].as_array().into_iter().flatten() {
            let name = r["name"].as_str().unwrap_or("");
            let _ = write!(
                b,
                "<tr><td><a href=\"/messages?quarantine={}\">{}</a></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td><a href=\"/quarantines/{0}\" aria-label=\"Settings of {1}\">edit</a></td></tr>",
                enc(name),
                esc(name),
                r["messages"].as_u64().unwrap_or(0),
                esc(&bytes(r["space_used_bytes"].as_u64().unwrap_or(0))),
                esc(r["retention"].as_str().unwrap_or("")),
                esc(r["default_action"].as_str().unwrap_or("")),
            );
        }
        b.push_str("</tbody></table>");
    } else {
        b.push_str(&refusal(&q));
    }
    b.push_str("</section>");

    if q.ok {
        b.push_str(&per_day_chart(&shared, &c, &q.data).await);
    }

    let s = run(&shared, &c.id, "status", json!({})).await;
    b.push_str("<section aria-labelledby=\"hs\"><h2 id=\"hs\">Status</h2>");
    b.push_str(&if s.ok { pre(&s.text) } else { refusal(&s) });
    b.push_str("</section>");

    let p = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    b.push_str("<section aria-labelledby=\"hc\"><h2 id=\"hc\">Centralized quarantines</h2>");
    b.push_str(&if p.ok { pre(&p.text) } else { refusal(&p) });
    b.push_str("<p><a href=\"/pvo\">PVO settings</a></p></section>");

    let t = run(&shared, &c.id, "tophosts", json!({ "sort": "active" })).await;
    b.push_str("<section aria-labelledby=\"ht\"><h2 id=\"ht\">Delivery status (tophosts)</h2>");
    if t.ok {
        let rows = t.data["hosts"].as_array().cloned().unwrap_or_default();
        b.push_str(&json_table(&rows, "Destinations by active recipients"));
    } else {
        b.push_str(&refusal(&t));
    }
    b.push_str("</section>");
    html(StatusCode::OK, page(&shared, &c, "Dashboard", &b))
}
