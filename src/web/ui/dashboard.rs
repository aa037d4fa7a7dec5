//! The dashboard: quarantines, held per day, status, centralized quarantines (on a
//! manager its gateways and their state, on a gateway its mode, the.cpq.host backlog and
//! the migration), delivery status. The gateways table is shared with `services`.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
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

/// "3 min ago" for a Unix time, against `now`.
pub(super) fn ago(now: u64, t: u64) -> String {
    if t > now {
        return "in the future (clock skew)".into();
    }
    let d = now - t;
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3_599 => format!("{} min ago", d / 60),
        3_600..=86_399 => format!("{} h ago", d / 3_600),
        _ => format!("{} days ago", d / 86_400),
    }
}

/// A time as relative and absolute (GMT) text, in a `<time>` element.
pub(super) fn when(now: u64, t: Option<u64>) -> String {
    match t {
        Some(t) => format!(
            "<time datetime=\"{}\" title=\"{} GMT\">{}</time> ({} GMT)",
            esc(&rfc3339(t)),
            esc(&gmt(t)),
            esc(&ago(now, t)),
            esc(&gmt(t))
        ),
        None => "never".into(),
    }
}

fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|x| {
            x.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// The states of `applianceconfig status` and their badge text.
pub(super) fn state_badge(state: &str) -> String {
    let (class, label) = match state {
        "online" => ("online", "Online"),
        "backlog" => ("backlog", "Backlog"),
        "unreachable" => ("unreachable", "Unreachable"),
        _ => ("unknown", "Unknown"),
    };
    format!("<span class=\"badge state-{class}\">{label}</span>")
}

fn num(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "–".to_string(), |n| n.to_string())
}

/// The gateways of `applianceconfig status` (`data`) as a table with the id
/// `gateways`; `actions` adds a last column (the Centralized services page).
pub(super) fn gateways_table(
    data: &Value,
    actions: Option<&(dyn Fn(&Value) -> String + Sync)>,
) -> String {
    let gws = data["gateways"].as_array().cloned().unwrap_or_default();
    if gws.is_empty() {
        return "<p id=\"no-gateways\">No gateways are added (Centralized services: Add a gateway).</p>".into();
    }
    let now = crate::clock::unix_now();
    let mut t = String::from(
        "<table id=\"gateways\"><caption>Gateways and their state</caption><thead><tr>\
<th scope=\"col\">Gateway</th><th scope=\"col\">State</th><th scope=\"col\">Mode</th>\
<th scope=\"col\">Backlog (the.cpq.host)</th><th scope=\"col\">Last transfer</th>\
<th scope=\"col\">Held messages</th><th scope=\"col\">Releases waiting</th><th scope=\"col\">Last error</th>",
    );
    if actions.is_some() {
        t.push_str("<th scope=\"col\">Actions</th>");
    }
    t.push_str("</tr></thead><tbody>");
    for g in &gws {
        let id = g["id"].as_str().unwrap_or("");
        let mut errors = Vec::new();
        if let Some(e) = g["ssh_error"].as_str() {
            errors.push(format!("SSH: {e}"));
        }
        if let Some(r) = g["last_refusal"].as_object() {
            let at = r.get("at").and_then(Value::as_u64);
            errors.push(format!(
                "Transfer refused{}: {}",
                at.map(|a| format!(" {} ({} GMT)", ago(now, a), gmt(a)))
                    .unwrap_or_default(),
                r.get("text").and_then(Value::as_str).unwrap_or("")
            ));
        }
        if let Some(e) = g["last_release_error"].as_str() {
            errors.push(format!("Release: {e}"));
        }
        let migration = match g["migration"].as_object().filter(|m| {
            m.get("total").and_then(Value::as_u64).unwrap_or(0) > 0
                || m.get("running").and_then(Value::as_bool).unwrap_or(false)
        }) {
            Some(m) => {
                let total = m.get("total").and_then(Value::as_u64).unwrap_or(0);
                let done = m.get("migrated").and_then(Value::as_u64).unwrap_or(0);
                format!(
                    "<br>migration {done} of {total} <progress max=\"{}\" value=\"{}\" aria-label=\"migration of {}\">{done}/{total}</progress>",
                    total.max(1),
                    done.min(total.max(1)),
                    esc(id)
                )
            }
            None => String::new(),
        };
        let _ = write!(
            t,
            "<tr data-gateway=\"{id}\"><th scope=\"row\">{id}<br><small>{addr}:{port}</small></th>\
<td class=\"state\">{badge}<br><span class=\"state-text\">{text}</span></td><td class=\"mode\">{mode}{migration}</td>\
<td class=\"num\">{backlog}</td><td>{last}<br><small>{received} received</small></td>\
<td class=\"num held\">{held}</td><td class=\"num waiting\">{waiting}</td><td class=\"last-error\">{errors}</td>",
            id = esc(id),
            addr = esc(g["address"].as_str().unwrap_or("")),
            port = num(&g["port"]),
            badge = state_badge(g["state"].as_str().unwrap_or("unknown")),
            text = esc(g["state_text"].as_str().unwrap_or("")),
            mode = esc(g["mode"].as_str().unwrap_or("not known")),
            backlog = num(&g["backlog"]),
            last = when(now, g["last_transfer_at"].as_u64()),
            received = g["transfers_received"].as_u64().unwrap_or(0),
            held = g["held_messages"].as_u64().unwrap_or(0),
            waiting = g["releases_waiting"].as_u64().unwrap_or(0),
            errors = if errors.is_empty() {
                "none".to_string()
            } else {
                format!(
                    "<span class=\"err\">{}</span>",
                    errors.iter().map(|e| esc(e)).collect::<Vec<_>>().join("<br>")
                )
            },
        );
        if let Some(a) = actions {
            let _ = write!(t, "<td>{}</td>", a(g));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    if let Some(at) = gws.iter().filter_map(|g| g["checked_at"].as_u64()).max() {
        let _ = write!(
            t,
            "<p class=\"note\">State checked {}.</p>",
            when(now, Some(at))
        );
    }
    t
}

/// The manager's gateways section: `applianceconfig status`, or its refusal (with
/// the gateways `pvoconfig status` names, without their state).
pub(super) async fn manager_gateways(
    shared: &Arc<Shared>,
    c: &Caller,
    pvo: &Value,
    actions: Option<&(dyn Fn(&Value) -> String + Sync)>,
) -> String {
    let r = run(
        shared,
        &c.id,
        "applianceconfig",
        json!({ "action": "status" }),
    )
    .await;
    let mut b = String::new();
    if r.ok {
        b.push_str(&gateways_table(&r.data, actions));
    } else {
        b.push_str(&refusal(&r));
        let gws = pvo["gateways"].as_array().cloned().unwrap_or_default();
        if !gws.is_empty() {
            b.push_str("<p>Gateways added (state not available):</p><ul id=\"gateway-names\">");
            for g in &gws {
                let _ = write!(
                    b,
                    "<li>{} ({}:{}) {}</li>",
                    esc(g["id"].as_str().unwrap_or("")),
                    esc(g["address"].as_str().unwrap_or("")),
                    num(&g["port"]),
                    actions.map(|a| a(g)).unwrap_or_default()
                );
            }
            b.push_str("</ul>");
        }
    }
    let waiting = r.data["releases_waiting_total"]
        .as_u64()
        .or_else(|| pvo["queued_for_gateways"].as_u64());
    let _ = write!(
        b,
        "<p id=\"release-backlog\">Released messages waiting for their gateways (the.cpq.release.host): <strong>{}</strong></p>",
        waiting.map_or_else(|| "not known".to_string(), |n| n.to_string())
    );
    b
}

/// A gateway's centralization: mode and manager, the.cpq.host backlog, migration.
pub(super) fn gateway_pvo(d: &Value) -> String {
    let central = d["mode"].as_str() == Some("central");
    let manager = d["manager"].as_str().unwrap_or("");
    let mut b = String::from("<dl class=\"summary\" id=\"pvo-mode\"><dt>Mode</dt><dd>");
    if central {
        let _ = write!(
            b,
            "<span class=\"badge state-online\">Central</span> on the manager {}",
            esc(manager)
        );
    } else {
        b.push_str(
            "<span class=\"badge state-unknown\">Local</span> quarantines are on this gateway",
        );
        if !manager.is_empty() {
            let _ = write!(b, " (manager configured: {})", esc(manager));
        }
    }
    let _ = write!(
        b,
        "</dd><dt>Waiting for the manager (the.cpq.host)</dt><dd id=\"cpq-backlog\">{}</dd>",
        num(&d["queued_for_manager"])
    );
    let m = &d["migration"];
    let total = m["total"].as_u64().unwrap_or(0);
    if total > 0 || m["running"].as_bool().unwrap_or(false) {
        let done = m["migrated"].as_u64().unwrap_or(0).min(total);
        let pct = (done * 100).checked_div(total).unwrap_or(100);
        let _ = write!(
            b,
            "<dt><label for=\"migration\">Migration of local quarantines</label></dt><dd><progress id=\"migration\" max=\"{}\" value=\"{done}\">{pct}%</progress> {pct}% ({done} of {total}){}</dd>",
            total.max(1),
            if m["running"].as_bool().unwrap_or(false) {
                ", running"
            } else {
                ", done"
            }
        );
        if let Some(e) = m["last_error"].as_str() {
            let _ = write!(
                b,
                "<dt>Last migration problem</dt><dd class=\"err\">{}</dd>",
                esc(e)
            );
        }
    }
    b.push_str("</dl>");
    b
}

pub(super) async fn dashboard(Viewer { shared, c }: Viewer) -> HttpResponse {
    let manager = shared.config().role == crate::config::Role::Manager;
    let p = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    let central = !manager && p.ok && p.data["mode"].as_str() == Some("central");
    let mut b = String::new();
    let q = run(
        &shared,
        &c.id,
        "quarantineconfig",
        json!({ "action": "list" }),
    )
    .await;
    let _ = write!(
        b,
        "<section aria-labelledby=\"hq\"><h2 id=\"hq\">{}</h2>",
        if manager {
            "Quarantines"
        } else if central {
            "Quarantines still on this gateway"
        } else {
            "Local quarantines"
        }
    );
    if central {
        let _ = write!(
            b,
            "<p id=\"central-note\">The Policy, Virus and Outbreak quarantines are centralized: new quarantined messages are held on the manager {}. What is listed here is still held on this gateway (messages from before centralization, migrating to the manager; see the migration progress below).</p>",
            esc(p.data["manager"].as_str().unwrap_or(""))
        );
    }
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

    let _ = write!(
        b,
        "<section aria-labelledby=\"hc\"><h2 id=\"hc\">{}</h2>",
        if manager {
            "Gateways"
        } else {
            "Centralized quarantines"
        }
    );
    if !p.ok {
        b.push_str(&refusal(&p));
    } else if manager {
        b.push_str(&manager_gateways(&shared, &c, &p.data, None).await);
        b.push_str("<p><a href=\"/services\">Centralized services</a> · <a href=\"/pvo\">PVO settings and migration wizard</a></p>");
    } else {
        b.push_str(&gateway_pvo(&p.data));
        b.push_str("<p><a href=\"/pvo\">PVO settings</a></p>");
    }
    if p.ok {
        let _ = write!(
            b,
            "<details><summary>pvoconfig status</summary>{}</details>",
            pre(&p.text)
        );
    }
    b.push_str("</section>");

    let s = run(&shared, &c.id, "status", json!({})).await;
    b.push_str("<section aria-labelledby=\"hs\"><h2 id=\"hs\">Status</h2>");
    b.push_str(&if s.ok { pre(&s.text) } else { refusal(&s) });
    b.push_str("</section>");

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ago_counts_in_the_largest_whole_unit() {
        assert_eq!(ago(1_000, 1_000), "0 s ago");
        assert_eq!(ago(1_000, 941), "59 s ago");
        assert_eq!(ago(10_000, 10_000 - 90), "1 min ago");
        assert_eq!(ago(10_000, 10_000 - 7_200), "2 h ago");
        assert_eq!(ago(1_000_000, 1_000_000 - 3 * 86_400), "3 days ago");
        assert!(ago(1_000, 2_000).contains("future"));
        assert_eq!(when(5, None), "never");
        let w = when(1_700_000_060, Some(1_700_000_000));
        assert!(
            w.contains("1 min ago") && w.contains("2023-11-14 22:13"),
            "{w}"
        );
    }

    #[test]
    fn gateway_rows_escape_everything_and_say_the_state_in_text() {
        let data = json!({ "gateways": [{
            "id": "gw<1>", "address": "10.0.0.1", "port": 7025,
            "state": "something new", "state_text": "<script>x</script>",
            "mode": "central", "backlog": 3,
            "migration": { "running": true, "total": 10, "migrated": 4 },
            "checked_at": null, "ssh_error": "refused & gone",
            "transfers_received": 2, "last_transfer_at": null,
            "last_refusal": { "at": 1, "text": "<b>no</b>" },
            "held_messages": 5, "releases_waiting": 1, "last_release_error": null
        }], "releases_waiting_total": 1 });
        let actions = |g: &Value| format!("[{}]", esc(g["id"].as_str().unwrap()));
        let t = gateways_table(&data, Some(&actions));
        assert!(!t.contains("<script>") && !t.contains("<b>no") && !t.contains("gw<1>"));
        assert!(t.contains("&lt;script&gt;x&lt;/script&gt;"), "{t}");
        assert!(t.contains("SSH: refused &amp; gone"), "{t}");
        assert!(t.contains("&lt;b&gt;no&lt;/b&gt;"), "{t}");
        // An unknown state is "Unknown", in words.
        assert!(
            t.contains("<span class=\"badge state-unknown\">Unknown</span>"),
            "{t}"
        );
        assert!(t.contains("<progress max=\"10\" value=\"4\""), "{t}");
        assert!(t.contains("<td class=\"num held\">5</td>"), "{t}");
        assert!(t.contains("<td>[gw&lt;1&gt;]</td>"), "{t}");
        assert!(t.contains("never"), "no last transfer: {t}");

        let quiet = json!({ "gateways": [{ "id": "gw2", "state": "online", "migration": { "total": 0, "running": false } }] });
        let t = gateways_table(&quiet, None);
        assert!(
            t.contains(">Online</span>") && t.contains("<td class=\"last-error\">none</td>"),
            "{t}"
        );
        assert!(!t.contains("<progress") && !t.contains("Actions"), "{t}");
        assert!(gateways_table(&json!({ "gateways": [] }), None).contains("no-gateways"));
    }

    #[test]
    fn a_gateways_mode_and_migration() {
        let local = gateway_pvo(
            &json!({ "mode": "local", "manager": null, "queued_for_manager": 0, "migration": { "total": 0, "running": false } }),
        );
        assert!(
            local.contains(">Local</span>") && !local.contains("<progress"),
            "{local}"
        );
        let central = gateway_pvo(
            &json!({ "mode": "central", "manager": "10.0.0.9:7025", "queued_for_manager": 7, "migration": { "total": 4, "migrated": 4, "running": false, "last_error": "<x>" } }),
        );
        assert!(
            central.contains(">Central</span> on the manager 10.0.0.9:7025"),
            "{central}"
        );
        assert!(
            central.contains("<dd id=\"cpq-backlog\">7</dd>"),
            "{central}"
        );
        assert!(
            central.contains("max=\"4\" value=\"4\">100%</progress> 100% (4 of 4), done"),
            "{central}"
        );
        assert!(central.contains("&lt;x&gt;"), "{central}");
    }
}
