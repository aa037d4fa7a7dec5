//! The dashboard: quarantines, held per day, status, centralized quarantines (on a
//! manager its gateways and their state, on a gateway its mode, the.cpq.host backlog and
//! the migration), delivery status. The gateways table is shared with `services`.

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
pub(super) async fn per_day_chart(shared: &Arc<Handles>, c: &Caller, list: &Value) -> Markup {
    let names: Vec<String> = list["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|q| q["messages"].as_u64().unwrap_or(0) > 0)
        .filter_map(|q| q["name"].as_str().map(str::to_string))
        .collect();
    if names.is_empty() {
        return chart(&names, &[]);
    }
    let today = crate::core::clock::unix_now() / 86_400;
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
    chart(&names, &rows)
}

/// The section of [`per_day_chart`]: per day (days since 1970), per quarantine
/// `names`, (count, exact).
fn chart(names: &[String], rows: &[(u64, Vec<(u64, bool)>)]) -> Markup {
    let max = rows
        .iter()
        .flat_map(|(_, c)| c.iter().map(|(n, _)| *n))
        .max()
        .unwrap_or(0)
        .max(1);
    html! {
        section aria-labelledby="hd" {
            h2 id="hd" { "Held messages by day received (GMT)" }
            @if names.is_empty() {
                p { "No messages are held." }
            } @else {
                table id="per-day" class="chart" {
                    thead { tr { th scope="col" { "Day" } @for n in names { th scope="col" { (n) } } } }
                    tbody {
                        @for (day, counts) in rows {
                            tr {
                                th scope="row" { (gmt(day * 86_400).chars().take(10).collect::<String>()) }
                                @for (n, exact) in counts {
                                    @let label = if *exact { n.to_string() } else { format!("≥{n}") };
                                    td {
                                        svg width="122" height="12" role="img" aria-label={ (label) " messages" } {
                                            rect width=((n * 120).div_ceil(max)) height="12" fill="currentColor" {}
                                        }
                                        " " (label)
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
pub(super) fn when(now: u64, t: Option<u64>) -> Markup {
    html! {
        @match t {
            Some(t) => {
                time datetime=(rfc3339(t)) title={ (gmt(t)) " GMT" } { (ago(now, t)) }
                " (" (gmt(t)) " GMT)"
            }
            None => "never",
        }
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
pub(super) fn state_badge(state: &str) -> Markup {
    let (class, label) = match state {
        "online" => ("online", "Online"),
        "backlog" => ("backlog", "Backlog"),
        "unreachable" => ("unreachable", "Unreachable"),
        _ => ("unknown", "Unknown"),
    };
    html! { span class={ "badge state-" (class) } { (label) } }
}

fn num(v: &Value) -> String {
    v.as_u64()
        .map_or_else(|| "–".to_string(), |n| n.to_string())
}

/// The controls a page adds to each gateway (the Centralized services page).
pub(super) type GatewayActions<'a> = &'a (dyn Fn(&Value) -> Markup + Sync);

/// What went wrong last with a gateway, as lines of text.
fn gateway_errors(g: &Value, now: u64) -> Vec<String> {
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
    errors
}

/// The gateways of `applianceconfig status` (`data`) as a table with the id
/// `gateways`; `actions` adds a last column (the Centralized services page).
pub(super) fn gateways_table(data: &Value, actions: Option<GatewayActions>) -> Markup {
    let gws = data["gateways"].as_array().cloned().unwrap_or_default();
    if gws.is_empty() {
        return html! { p id="no-gateways" { "No gateways are added (Centralized services: Add a gateway)." } };
    }
    let now = crate::core::clock::unix_now();
    let checked = gws.iter().filter_map(|g| g["checked_at"].as_u64()).max();
    html! {
        table id="gateways" {
            caption { "Gateways and their state" }
            thead {
                tr {
                    th scope="col" { "Gateway" } th scope="col" { "State" } th scope="col" { "Mode" }
                    th scope="col" { "Backlog (the.cpq.host)" } th scope="col" { "Last transfer" }
                    th scope="col" { "Held messages" } th scope="col" { "Releases waiting" } th scope="col" { "Last error" }
                    @if actions.is_some() { th scope="col" { "Actions" } }
                }
            }
            tbody {
                @for g in &gws {
                    @let id = g["id"].as_str().unwrap_or("");
                    @let errors = gateway_errors(g, now);
                    @let migration = g["migration"].as_object().filter(|m| {
                        m.get("total").and_then(Value::as_u64).unwrap_or(0) > 0
                            || m.get("running").and_then(Value::as_bool).unwrap_or(false)
                    });
                    tr data-gateway=(id) {
                        th scope="row" { (id) br; small { (g["address"].as_str().unwrap_or("")) ":" (num(&g["port"])) } }
                        td class="state" {
                            (state_badge(g["state"].as_str().unwrap_or("unknown")))
                            br;
                            span class="state-text" { (g["state_text"].as_str().unwrap_or("")) }
                        }
                        td class="mode" {
                            (g["mode"].as_str().unwrap_or("not known"))
                            @if let Some(m) = migration {
                                @let total = m.get("total").and_then(Value::as_u64).unwrap_or(0);
                                @let done = m.get("migrated").and_then(Value::as_u64).unwrap_or(0);
                                br;
                                "migration " (done) " of " (total) " "
                                progress max=(total.max(1)) value=(done.min(total.max(1))) aria-label={ "migration of " (id) } { (done) "/" (total) }
                            }
                        }
                        td class="num" { (num(&g["backlog"])) }
                        td {
                            (when(now, g["last_transfer_at"].as_u64()))
                            br;
                            small { (g["transfers_received"].as_u64().unwrap_or(0)) " received" }
                        }
                        td class="num held" { (g["held_messages"].as_u64().unwrap_or(0)) }
                        td class="num waiting" { (g["releases_waiting"].as_u64().unwrap_or(0)) }
                        td class="last-error" {
                            @if errors.is_empty() {
                                "none"
                            } @else {
                                span class="err" {
                                    @for (i, e) in errors.iter().enumerate() {
                                        @if i > 0 { br; }
                                        (e)
                                    }
                                }
                            }
                        }
                        @if let Some(a) = actions { td { (a(g)) } }
                    }
                }
            }
        }
        @if let Some(at) = checked {
            p class="note" { "State checked " (when(now, Some(at))) "." }
        }
    }
}

/// The manager's gateways section: `applianceconfig status`, or its refusal (with
/// the gateways `pvoconfig status` names, without their state).
pub(super) async fn manager_gateways(
    shared: &Arc<Handles>,
    c: &Caller,
    pvo: &Value,
    actions: Option<GatewayActions<'_>>,
) -> Markup {
    let r = run(
        shared,
        &c.id,
        "applianceconfig",
        json!({ "action": "status" }),
    )
    .await;
    let gws = pvo["gateways"].as_array().cloned().unwrap_or_default();
    let waiting = r.data["releases_waiting_total"]
        .as_u64()
        .or_else(|| pvo["queued_for_gateways"].as_u64());
    html! {
        @if r.ok {
            (gateways_table(&r.data, actions))
        } @else {
            (refusal(&r))
            @if !gws.is_empty() {
                p { "Gateways added (state not available):" }
                ul id="gateway-names" {
                    @for g in &gws {
                        li {
                            (g["id"].as_str().unwrap_or("")) " (" (g["address"].as_str().unwrap_or("")) ":" (num(&g["port"])) ") "
                            @if let Some(a) = actions { (a(g)) }
                        }
                    }
                }
            }
        }
        p id="release-backlog" {
            "Released messages waiting for their gateways (the.cpq.release.host): "
            strong { (waiting.map_or_else(|| "not known".to_string(), |n| n.to_string())) }
        }
    }
}

/// A gateway's centralization: mode and manager, the.cpq.host backlog, migration.
pub(super) fn gateway_pvo(d: &Value) -> Markup {
    let central = d["mode"].as_str() == Some("central");
    let manager = d["manager"].as_str().unwrap_or("");
    let m = &d["migration"];
    let total = m["total"].as_u64().unwrap_or(0);
    let running = m["running"].as_bool().unwrap_or(false);
    let done = m["migrated"].as_u64().unwrap_or(0).min(total);
    let pct = (done * 100).checked_div(total).unwrap_or(100);
    html! {
        dl class="summary" id="pvo-mode" {
            dt { "Mode" }
            dd {
                @if central {
                    span class="badge state-online" { "Central" } " on the manager " (manager)
                } @else {
                    span class="badge state-unknown" { "Local" } " quarantines are on this gateway"
                    @if !manager.is_empty() { " (manager configured: " (manager) ")" }
                }
            }
            dt { "Waiting for the manager (the.cpq.host)" }
            dd id="cpq-backlog" { (num(&d["queued_for_manager"])) }
            @if total > 0 || running {
                dt { label for="migration" { "Migration of local quarantines" } }
                dd {
                    progress id="migration" max=(total.max(1)) value=(done) { (pct) "%" }
                    " " (pct) "% (" (done) " of " (total) ")"
                    (if running { ", running" } else { ", done" })
                }
                @if let Some(e) = m["last_error"].as_str() {
                    dt { "Last migration problem" }
                    dd class="err" { (e) }
                }
            }
        }
    }
}

pub(super) async fn dashboard(Viewer { shared, c }: Viewer) -> HttpResponse {
    let manager = shared.config.current().role == crate::core::config::Role::Manager;
    let p = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    let central = !manager && p.ok && p.data["mode"].as_str() == Some("central");
    let q = run(
        &shared,
        &c.id,
        "quarantineconfig",
        json!({ "action": "list" }),
    )
    .await;
    let chart = if q.ok {
        Some(per_day_chart(&shared, &c, &q.data).await)
    } else {
        None
    };
    let gateways = if p.ok && manager {
        Some(manager_gateways(&shared, &c, &p.data, None).await)
    } else {
        None
    };
    let s = run(&shared, &c.id, "status", json!({})).await;
    let t = run(&shared, &c.id, "tophosts", json!({ "sort": "active" })).await;
    let b = html! {
        section aria-labelledby="hq" {
            h2 id="hq" {
                @if manager { "Quarantines" } @else if central { "Quarantines still on this gateway" } @else { "Local quarantines" }
            }
            @if central {
                p id="central-note" {
                    "The Policy, Virus and Outbreak quarantines are centralized: new quarantined messages are held on the manager "
                    (p.data["manager"].as_str().unwrap_or(""))
                    ". What is listed here is still held on this gateway (messages from before centralization, migrating to the manager; see the migration progress below)."
                }
            }
            @if q.ok {
                (quarantines_table(&q.data))
            } @else {
                (refusal(&q))
            }
        }
        @if let Some(chart) = chart { (chart) }
        section aria-labelledby="hc" {
            h2 id="hc" { @if manager { "Gateways" } @else { "Centralized quarantines" } }
            @if !p.ok {
                (refusal(&p))
            } @else if let Some(g) = gateways {
                (g)
                p { a href="/services" { "Centralized services" } " · " a href="/pvo" { "PVO settings and migration wizard" } }
            } @else {
                (gateway_pvo(&p.data))
                p { a href="/pvo" { "PVO settings" } }
            }
            @if p.ok {
                details { summary { "pvoconfig status" } (pre(&p.text)) }
            }
        }
        section aria-labelledby="hs" {
            h2 id="hs" { "Status" }
            @if s.ok { (pre(&s.text)) } @else { (refusal(&s)) }
        }
        section aria-labelledby="ht" {
            h2 id="ht" { "Delivery status (tophosts)" }
            @if t.ok {
                (json_table(t.data["hosts"].as_array().map(Vec::as_slice).unwrap_or_default(), "Destinations by active recipients"))
            } @else {
                (refusal(&t))
            }
        }
    };
    html(StatusCode::OK, page(&shared, &c, "Dashboard", b))
}

/// The quarantines of `quarantineconfig list` (`data`): totals, space against the
/// quota, and one row per quarantine with links to its messages and settings.
fn quarantines_table(d: &Value) -> Markup {
    let total = d["total_bytes"].as_u64().unwrap_or(0);
    let quota = d["quota_bytes"].as_u64().unwrap_or(0);
    let pct = (total * 100).checked_div(quota).unwrap_or(0).min(100);
    html! {
        p {
            (d["total_messages"].as_u64().unwrap_or(0)) " messages held, " (bytes(total)) " used"
            @if quota > 0 {
                " of " (bytes(quota)) " "
                meter min="0" max="100" value=(pct) aria-label="space used" { (pct) "%" }
                " " (pct) "%"
            }
            "."
        }
        table id="quarantines" {
            thead {
                tr {
                    th scope="col" { "Quarantine" } th scope="col" { "Messages" } th scope="col" { "Space" }
                    th scope="col" { "Retention" } th scope="col" { "Default action" } th scope="col" { "Settings" }
                }
            }
            tbody {
                @for r in d["quarantines"].as_array().into_iter().flatten() {
                    @let name = r["name"].as_str().unwrap_or("");
                    tr {
                        td { a href={ "/messages?quarantine=" (enc(name)) } { (name) } }
                        td class="num" { (r["messages"].as_u64().unwrap_or(0)) }
                        td class="num" { (bytes(r["space_used_bytes"].as_u64().unwrap_or(0))) }
                        td { (r["retention"].as_str().unwrap_or("")) }
                        td { (r["default_action"].as_str().unwrap_or("")) }
                        td { a href={ "/quarantines/" (enc(name)) } aria-label={ "Settings of " (name) } { "edit" } }
                    }
                }
            }
        }
    }
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
        assert_eq!(when(5, None).into_string(), "never");
        let w = when(1_700_000_060, Some(1_700_000_000)).into_string();
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
        let actions = |g: &Value| html! { "[" (g["id"].as_str().unwrap()) "]" };
        let t = gateways_table(&data, Some(&actions)).into_string();
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
        let t = gateways_table(&quiet, None).into_string();
        assert!(
            t.contains(">Online</span>") && t.contains("<td class=\"last-error\">none</td>"),
            "{t}"
        );
        assert!(!t.contains("<progress") && !t.contains("Actions"), "{t}");
        assert!(gateways_table(&json!({ "gateways": [] }), None)
            .into_string()
            .contains("no-gateways"));
    }

    #[test]
    fn a_gateways_mode_and_migration() {
        let local = gateway_pvo(
            &json!({ "mode": "local", "manager": null, "queued_for_manager": 0, "migration": { "total": 0, "running": false } }),
        )
        .into_string();
        assert!(
            local.contains(">Local</span>") && !local.contains("<progress"),
            "{local}"
        );
        let central = gateway_pvo(
            &json!({ "mode": "central", "manager": "10.0.0.9:7025", "queued_for_manager": 7, "migration": { "total": 4, "migrated": 4, "running": false, "last_error": "<x>" } }),
        )
        .into_string();
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
