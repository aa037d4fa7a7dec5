//! Message search, the actions on one message, a selection or all results, and Outbreak manage-by-rule.

use std::collections::HashMap;

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use serde_json::{json, Map, Value};

use super::*;
use crate::adapters::web::jobs::{Spec, Target};
use crate::commands::protocol::Response;

// ----------------------------------------------------------------------------------
// Search
// ----------------------------------------------------------------------------------

/// The text filters of `quarantine search` (label, name).
pub(super) const TEXT_FILTERS: [(&str, &str); 6] = [
    ("Sender", "sender"),
    ("Recipient", "recipient"),
    ("Subject", "subject"),
    ("Originating gateway", "gateway"),
    ("Attachment name", "attachment"),
    ("Reason (filter or rule)", "reason"),
];

pub(super) const REASON_KINDS: [&str; 5] = [
    "content filter",
    "DLP policy",
    "virus",
    "outbreak rule",
    "other",
];

/// The orders of `quarantine search` (value, label).
pub(super) const ORDERS: [(&str, &str); 6] = [
    ("newest", "newest first"),
    ("oldest", "oldest first"),
    ("largest", "largest first"),
    ("smallest", "smallest first"),
    ("exit_soonest", "exit soonest"),
    ("exit_latest", "exit latest"),
];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (GMT) as Unix seconds at the start of that day.
pub(super) fn parse_date(s: &str) -> Option<u64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    u64::try_from(days_from_civil(y, m, d) * 86_400).ok()
}

pub(super) fn gmt(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// See [`search_query`].
type Searched = (Map<String, Value>, Vec<(String, String)>, Vec<String>);

/// The search of a form or query string: (command args' `query`, the filters to keep
/// in links and hidden fields, problems).
pub(super) fn search_query(form: &[(String, String)]) -> Searched {
    let mut q = Map::new();
    let mut keep = Vec::new();
    let mut problems = Vec::new();
    for k in ["quarantine", "reason_kind", "order"]
        .into_iter()
        .chain(TEXT_FILTERS.iter().map(|(_, k)| *k))
    {
        // Not `field`, which drops white space only: such a value (CR/LF...) goes to the
        // node, which refuses it by name instead of searching without it.
        let given = form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if let Some(v) = given.filter(|v| !v.is_empty()) {
            let v = if v.trim().is_empty() { v } else { v.trim() };
            q.insert(k.into(), json!(v));
            keep.push((k.to_string(), v.to_string()));
        }
    }
    for (k, end) in [("from", 0), ("to", 86_399)] {
        if let Some(v) = field(form, k) {
            match parse_date(v) {
                Some(t) => {
                    q.insert(k.into(), json!(t + end));
                    keep.push((k.to_string(), v.trim().to_string()));
                }
                None => problems.push(format!("{k}: {v:?} is not a date (YYYY-MM-DD)")),
            }
        }
    }
    for k in ["attachment_min_size", "attachment_max_size"] {
        if let Some(v) = field(form, k) {
            match v.trim().parse::<u64>() {
                Ok(n) if n <= i64::MAX as u64 => {
                    q.insert(k.into(), json!(n));
                    keep.push((k.to_string(), v.trim().to_string()));
                }
                _ => problems.push(format!(
                    "{}: {v:?} is not a size in bytes",
                    k.replace('_', " ")
                )),
            }
        }
    }
    (q, keep, problems)
}

pub(super) fn query_string(keep: &[(String, String)], extra: &[(&str, String)]) -> String {
    keep.iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain(extra.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| format!("{}={}", enc(k), enc(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

pub(super) async fn search(Viewer { shared, c }: Viewer, RawQuery(raw): RawQuery) -> HttpResponse {
    let form = session::parse_form(raw.unwrap_or_default().as_bytes());
    let (query, keep, problems) = search_query(&form);
    let num = |k: &str, d: u64| {
        field(&form, k)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(d)
    };
    let offset = num("offset", 0);
    let limit = num("limit", 25).clamp(1, 500);
    let given: HashMap<&str, &str> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();

    // The quarantines the caller can pick from.
    let names = quarantine_names(&shared, &c).await.unwrap_or_default();
    let filters = search_form(&given, &names, limit, &problems);

    let r = run(
        &shared,
        &c.id,
        "quarantine",
        json!({ "action": "search", "query": Value::Object(query), "offset": offset, "limit": limit }),
    )
    .await;
    if !r.ok {
        let b = html! { (filters) (refusal(&r)) };
        return html(StatusCode::OK, page(&shared, &c, "Messages", b));
    }
    let central = shared.config.current().role == crate::core::config::Role::Manager;
    let shown = Shown {
        data: &r.data,
        keep: &keep,
        names: &names,
        searched: given.get("quarantine").copied().unwrap_or("").trim(),
        offset,
        limit,
        central,
    };
    let b = html! { (filters) (results(&shown, &c.csrf)) };
    html(StatusCode::OK, page(&shared, &c, "Messages", b))
}

/// The search form, filled in with the search `given`, and the `problems` of its values.
fn search_form(
    given: &HashMap<&str, &str>,
    names: &[String],
    limit: u64,
    problems: &[String],
) -> Markup {
    let val = |k: &str| given.get(k).copied().unwrap_or("").trim().to_string();
    let cur = |k: &str| given.get(k).copied().unwrap_or("");
    let order = given.get("order").copied().unwrap_or("newest");
    html! {
        form method="get" action="/messages" class="filters" role="search" {
            div {
                label for="f-quarantine" { "Quarantine" }
                select id="f-quarantine" name="quarantine" {
                    option value="" { "any" }
                    @for n in names { option selected[n == cur("quarantine")] { (n) } }
                }
            }
            @for (label, k) in TEXT_FILTERS {
                div {
                    label for={ "f-" (k) } { (label) }
                    input id={ "f-" (k) } name=(k) value=(val(k));
                }
            }
            div {
                label for="f-reason_kind" { "Reason kind" }
                select id="f-reason_kind" name="reason_kind" {
                    option value="" { "any" }
                    @for k in REASON_KINDS { option selected[k == cur("reason_kind")] { (k) } }
                }
            }
            div {
                label for="f-order" { "Order" }
                select id="f-order" name="order" {
                    @for (v, label) in ORDERS { option value=(v) selected[v == order] { (label) } }
                }
            }
            div {
                label for="f-attachment_min_size" { "Attachment at least (bytes)" }
                input id="f-attachment_min_size" name="attachment_min_size" type="number" min="0" value=(val("attachment_min_size"));
            }
            div {
                label for="f-attachment_max_size" { "Attachment at most (bytes)" }
                input id="f-attachment_max_size" name="attachment_max_size" type="number" min="0" value=(val("attachment_max_size"));
            }
            div {
                label for="f-from" { "Received from (GMT)" }
                input id="f-from" name="from" type="date" value=(val("from"));
            }
            div {
                label for="f-to" { "Received to (GMT)" }
                input id="f-to" name="to" type="date" value=(val("to"));
            }
            div {
                label for="f-limit" { "Per page" }
                input id="f-limit" name="limit" type="number" min="1" max="500" value=(limit);
            }
            div { button type="submit" id="search" accesskey="s" { "Search" } }
        }
        @for p in problems { p class="err" role="alert" { (p) } }
    }
}

/// One page of search results and what [`results`] needs around them.
struct Shown<'a> {
    /// `quarantine search`'s data.
    data: &'a Value,
    /// The filters to keep in links and hidden fields.
    keep: &'a [(String, String)],
    /// The quarantines the caller may pick from.
    names: &'a [String],
    /// The quarantine searched in, if one.
    searched: &'a str,
    offset: u64,
    limit: u64,
    /// On a manager: which gateway each message came from.
    central: bool,
}

/// The results of a search: the summary, the bulk actions, the messages and the pager.
fn results(s: &Shown, csrf: &str) -> Markup {
    let d = s.data;
    let (offset, limit) = (s.offset, s.limit);
    let total = d["total"].as_u64().unwrap_or(0);
    let exact = d["total_exact"].as_bool().unwrap_or(true);
    let msgs = d["messages"].as_array().cloned().unwrap_or_default();
    let total_text = if exact {
        total.to_string()
    } else {
        format!("at least {total}")
    };
    let page_at = |o: u64| {
        query_string(
            s.keep,
            &[("offset", o.to_string()), ("limit", limit.to_string())],
        )
    };
    let back = format!("/messages?{}", page_at(offset));
    let options = |selected: &str| {
        html! {
            @for n in s.names { option selected[n.eq_ignore_ascii_case(selected)] { (n) } }
        }
    };
    let delays = html! {
        option { "8h" } option selected { "24h" } option { "48h" } option { "1w" }
    };
    html! {
        p id="summary" aria-live="polite" {
            @if msgs.is_empty() {
                @if total > 0 {
                    (total_text) " messages match; this page is past the last one."
                } @else {
                    "No quarantined messages match."
                }
            } @else {
                "Showing " (offset + 1) "–" (offset + msgs.len() as u64) " of " (total_text) " messages."
            }
        }
        // A bulk action becomes a job (`super::jobs`): the answer is its progress page.
        // Until that answer comes, /ui.js keeps the buttons from being pressed twice.
        form method="post" action="/messages/action" id="results" {
            (hidden("csrf", csrf))
            (hidden("back", &back))
            (hidden("bulk", "1"))
            @for (k, v) in s.keep { (hidden(&format!("q_{k}"), v)) }
            @if !msgs.is_empty() {
                div class="bulk" role="group" aria-label="Bulk actions" {
                    div class="bulk-row" {
                        span class="sep" { "Selected messages:" } " "
                        button type="submit" name="op" value="release" id="release-selected" { "Release selected" } " "
                        button type="submit" name="op" value="delete" id="delete-selected" class="danger" { "Delete selected" } " "
                        button type="submit" name="op" value="delay" id="delay-selected" { "Delay selected" } " "
                        button type="submit" name="op" value="move" id="move-selected" { "Move selected" }
                    }
                    div class="bulk-row" {
                        span class="sep" { "Every result of this search (" (total_text) "):" } " "
                        button type="submit" name="op" value="release-all" id="release-all" { "Release all results" } " "
                        button type="submit" name="op" value="delete-all" id="delete-all" class="danger" { "Delete all results" } " "
                        button type="submit" name="op" value="delay-all" id="delay-all" { "Delay all results" } " "
                        button type="submit" name="op" value="move-all" id="move-all" { "Move all results" }
                    }
                    div class="bulk-row" {
                        label for="bulk-by" { "Delay by" } " "
                        select id="bulk-by" name="by" { (delays) } " "
                        label for="bulk-from" { "Move from" } " "
                        select id="bulk-from" name="from" { (options(s.searched)) } " "
                        label for="bulk-to" { "to" } " "
                        select id="bulk-to" name="to" { (options("")) }
                    }
                    span class="busy" role="status" hidden { progress aria-label="Starting" {} " Starting…" }
                }
                table id="messages" {
                    thead {
                        tr {
                            th scope="col" { input type="checkbox" id="select-all" aria-label="Select all on this page"; }
                            th scope="col" { "MID" }
                            @if s.central { th scope="col" { "Gateway" } }
                            th scope="col" { "Received (GMT)" }
                            th scope="col" { "Sender" } th scope="col" { "Recipients" } th scope="col" { "Subject" }
                            th scope="col" { "Quarantines" } th scope="col" { "Scheduled exit" }
                        }
                    }
                    tbody { @for m in &msgs { (message_row(m, s.central)) } }
                }
            }
        }
        nav class="pager" aria-label="Pages" {
            @if offset > 0 {
                a rel="prev" accesskey="," href={ "/messages?" (page_at(offset.saturating_sub(limit))) } { "← Previous" }
                " "
            }
            @if offset + (msgs.len() as u64) < total || (!exact && msgs.len() as u64 == limit) {
                a rel="next" accesskey="." href={ "/messages?" (page_at(offset + limit)) } { "Next →" }
            }
        }
    }
}

/// One message of the results.
fn message_row(m: &Value, central: bool) -> Markup {
    let mid = m["mid"].as_u64().unwrap_or(0);
    let rcpts: Vec<&str> = m["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let qs: Vec<String> = m["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            format!(
                "{} ({})",
                q["name"].as_str().unwrap_or(""),
                q["reason"].as_str().unwrap_or("")
            )
        })
        .collect();
    let subject = m["subject"].as_str().unwrap_or("");
    html! {
        tr {
            td { input type="checkbox" name="mid" value=(mid) aria-label={ "Select MID " (mid) }; }
            td { a href={ "/messages/" (mid) } { (mid) } }
            @if central {
                td { (m["gateway"].as_str().unwrap_or("")) " " span class="muted" { "#" (m["gateway_mid"].as_u64().unwrap_or(0)) } }
            }
            td { (gmt(m["received"].as_u64().unwrap_or(0))) }
            td { (m["sender"].as_str().unwrap_or("")) }
            td { (rcpts.join(", ")) }
            td { a href={ "/messages/" (mid) } { (if subject.is_empty() { "(no subject)" } else { subject }) } }
            td { (qs.join("; ")) }
            td { (m["scheduled_exit"].as_u64().map(gmt).unwrap_or_default()) }
        }
    }
}

// ----------------------------------------------------------------------------------
// Actions
// ----------------------------------------------------------------------------------
pub(super) async fn action(Post { shared, c, form }: Post) -> HttpResponse {
    let back = safe_back(field(&form, "back"));
    let op = field(&form, "op").unwrap_or("");
    let (verb, all) = match op {
        "release" | "delete" | "delay" | "move" => (op, false),
        "release-all" | "delete-all" | "delay-all" | "move-all" => {
            (op.trim_end_matches("-all"), true)
        }
        _ => ("", false),
    };
    // The search page's forms (a selection, or every result): a job with progress.
    // One message from its own page: at once, with the command's answer.
    if !verb.is_empty() && (all || field(&form, "bulk").is_some()) {
        return bulk(&shared, &c, &form, verb, all, &back).await;
    }
    let mut args = json!({ "action": verb });
    let result = if op == "copy" {
        let to: Vec<String> = field(&form, "copy_to")
            .unwrap_or("")
            .split([',', ' ', ';'])
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        match field(&form, "mid").and_then(|m| m.trim().parse::<u64>().ok()) {
            Some(mid) => {
                run(
                    &shared,
                    &c.id,
                    "quarantine",
                    json!({ "action": "copy", "mid": mid, "to": to }),
                )
                .await
            }
            None => Response::error("Which message? (no MID given)"),
        }
    } else if verb.is_empty() {
        Response::error(format!("Unknown action {op:?}."))
    } else {
        if all {
            // The search the page showed, from its hidden fields.
            let q: Vec<(String, String)> = form
                .iter()
                .filter_map(|(k, v)| k.strip_prefix("q_").map(|k| (k.to_string(), v.clone())))
                .collect();
            let (query, _, problems) = search_query(&q);
            if let Some(p) = problems.first() {
                return html(
                    StatusCode::BAD_REQUEST,
                    page(&shared, &c, "Not done", html! { p class="err" { (p) } }),
                );
            }
            args["all_results"] = json!(true);
            args["query"] = Value::Object(query);
        } else {
            let mids: Vec<u64> = form
                .iter()
                .filter(|(k, _)| k == "mid")
                .filter_map(|(_, v)| v.trim().parse().ok())
                .collect();
            args["mids"] = json!(mids);
        }
        for k in ["by", "from", "to"] {
            if let Some(v) = field(&form, k) {
                args[k] = json!(v.trim());
            }
        }
        if !all && args["mids"].as_array().is_some_and(|a| a.is_empty()) {
            Response::error(
                "Select at least one message first (the checkboxes in the first column).",
            )
        } else {
            run(&shared, &c.id, "quarantine", args).await
        }
    };
    let title = if result.ok { "Done" } else { "Not done" };
    let back_to = if back.starts_with("/messages/") && verb != "delay" && op != "copy" && result.ok
    {
        "/messages".to_string()
    } else {
        back
    };
    let b = html! {
        @if result.ok {
            div class="ok" role="status" id="result" { (pre(&result.text)) }
        } @else {
            div id="result" { (refusal(&result)) }
        }
        p { a href=(back_to) accesskey="b" id="back" { "Back" } }
    };
    let code = if result.ok {
        StatusCode::OK
    } else if result.text.contains("cannot") || result.text.contains("has no access") {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    html(code, page(&shared, &c, title, b))
}

/// A bulk action of the search page as a job: the selected MIDs, or every result of the
/// search the page showed (its hidden `q_` fields).
async fn bulk(
    shared: &Arc<Handles>,
    c: &Caller,
    form: &[(String, String)],
    verb: &str,
    all: bool,
    back: &str,
) -> HttpResponse {
    let target = if all {
        let q: Vec<(String, String)> = form
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("q_").map(|k| (k.to_string(), v.clone())))
            .collect();
        let (query, _, problems) = search_query(&q);
        if let Some(p) = problems.first() {
            let b = html! {
                div id="result" { p class="err" role="alert" { (p) } }
                p { a href=(back) id="back" { "Back" } }
            };
            return html(StatusCode::BAD_REQUEST, page(shared, c, "Not done", b));
        }
        Target::Query(query)
    } else {
        let mids: Vec<u64> = form
            .iter()
            .filter(|(k, _)| k == "mid")
            .filter_map(|(_, v)| v.trim().parse().ok())
            .collect();
        if mids.is_empty() {
            let b = html! {
                div id="result" {
                    div class="err" role="alert" {
                        strong { "Refused:" }
                        " Select at least one message first (the checkboxes in the first column)."
                    }
                }
                p { a href=(back) id="back" { "Back" } }
            };
            return html(StatusCode::BAD_REQUEST, page(shared, c, "Not done", b));
        }
        Target::Mids(mids)
    };
    let get = |k: &str| field(form, k).map(|v| v.trim().to_string());
    let spec = Spec {
        verb: verb.to_string(),
        target,
        by: get("by"),
        from: get("from"),
        to: get("to"),
        quarantine: None,
    };
    super::jobs::start(shared, c, spec, back).await
}

// ----------------------------------------------------------------------------------
// Outbreak: manage by rule
// ----------------------------------------------------------------------------------

pub(super) async fn outbreak(Viewer { shared, c }: Viewer) -> HttpResponse {
    // The rules of the held Outbreak messages (the newest 1,000), with their counts.
    let r = run(
        &shared,
        &c.id,
        "quarantine",
        json!({ "action": "search", "limit": 1000, "query": { "quarantine": "Outbreak" } }),
    )
    .await;
    let s = run(&shared, &c.id, "outbreakstatus", json!({})).await;
    let b = html! {
        @if r.ok {
            (outbreak_rules(&r.data, &c.csrf))
        } @else {
            (refusal(&r))
        }
        section aria-labelledby="hs" {
            h2 id="hs" { "Outbreak rules" }
            @if s.ok { (pre(&s.text)) } @else { (refusal(&s)) }
        }
    };
    html(StatusCode::OK, page(&shared, &c, "Outbreak", b))
}

/// The rules of the Outbreak messages of a search (`data`), each with its count and
/// its Release / Delete / Delay all.
fn outbreak_rules(data: &Value, csrf: &str) -> Markup {
    let mut rules: Vec<(String, u64)> = Vec::new();
    for m in data["messages"].as_array().into_iter().flatten() {
        for q in m["quarantines"].as_array().into_iter().flatten() {
            if q["name"] != "Outbreak" {
                continue;
            }
            let rule = q["reason_name"].as_str().unwrap_or("").to_string();
            match rules.iter_mut().find(|(r, _)| *r == rule) {
                Some((_, n)) => *n += 1,
                None => rules.push((rule, 1)),
            }
        }
    }
    html! {
        @if rules.is_empty() {
            p { "No message is held in Outbreak." }
        } @else {
            table id="rules" {
                thead { tr { th scope="col" { "Rule" } th scope="col" { "Messages held" } th scope="col" { "Manage" } } }
                tbody {
                    @for (rule, n) in &rules {
                        tr {
                            td { a href={ "/messages?quarantine=Outbreak&reason=" (enc(rule)) } { (rule) } }
                            td class="num" { (n) }
                            td {
                                form method="post" action="/outbreak" class="inline" {
                                    (hidden("csrf", csrf))
                                    (hidden("rule", rule))
                                    button type="submit" name="what" value="release" { "Release all" } " "
                                    button type="submit" name="what" value="delete" class="danger" { "Delete all" } " "
                                    select name="by" aria-label="Delay by" {
                                        option { "8h" } option selected { "24h" } option { "48h" } option { "1w" }
                                    }
                                    " "
                                    button type="submit" name="what" value="delay" { "Delay all" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Release, delete or delay every message of one rule: a job with progress.
pub(super) async fn outbreak_act(Post { shared, c, form }: Post) -> HttpResponse {
    let spec = Spec {
        verb: field(&form, "what").unwrap_or("").to_string(),
        target: Target::Rule(field(&form, "rule").unwrap_or("").to_string()),
        by: field(&form, "by").map(str::to_string),
        from: None,
        to: None,
        quarantine: None,
    };
    super::jobs::start(&shared, &c, spec, "/outbreak").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_html_cares_about() {
        // Text and double-quoted attribute values: a quote cannot end the attribute, a
        // `<` cannot open a tag (a `'` is harmless inside `"…"`).
        let v = "<a href=\"x\">'&'</a>";
        assert_eq!(
            html! { p title=(v) { (v) } }.into_string(),
            "<p title=\"&lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;\">&lt;a href=&quot;x&quot;&gt;'&amp;'&lt;/a&gt;</p>"
        );
        assert_eq!(enc("a b&c=ü"), "a%20b%26c%3D%C3%BC");
    }

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn a_results_page_escapes_subjects_senders_recipients_and_quarantines() {
        let data = json!({ "total": 1, "total_exact": true, "messages": [{
            "mid": 7, "received": 0, "sender": EVIL, "recipients": [EVIL],
            "subject": EVIL, "gateway": EVIL, "gateway_mid": 3,
            "quarantines": [{ "name": EVIL, "reason": EVIL }], "scheduled_exit": 0
        }] });
        let keep = vec![("subject".to_string(), EVIL.to_string())];
        let names = vec![EVIL.to_string()];
        let shown = Shown {
            data: &data,
            keep: &keep,
            names: &names,
            searched: EVIL,
            offset: 25,
            limit: 25,
            central: true,
        };
        let p = results(&shown, "tok\"en").into_string();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        assert!(
            p.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;'"),
            "{p}"
        );
        assert!(
            p.contains("name=\"q_subject\" value=\"&lt;script&gt;"),
            "{p}"
        );
        assert!(p.contains("value=\"tok&quot;en\""), "{p}");
        assert!(p.contains("<option selected>&lt;script&gt;"), "{p}");
        // The pager's link keeps the search, percent-encoded and then escaped.
        assert!(
            p.contains("href=\"/messages?subject=%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%27&amp;offset=0&amp;limit=25\""),
            "{p}"
        );
        assert!(!p.contains("onsubmit"), "{p}");

        let mut given = HashMap::new();
        given.insert("sender", EVIL);
        let f = search_form(&given, &names, 25, &[EVIL.to_string()]).into_string();
        assert!(!f.contains("<script") && !f.contains("\"'"), "{f}");
        assert!(
            f.contains("name=\"sender\" value=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;'\""),
            "{f}"
        );
        assert!(
            f.contains("<p class=\"err\" role=\"alert\">&lt;script&gt;"),
            "{f}"
        );
    }

    #[test]
    fn outbreak_rules_escape_the_rule_name() {
        let data = json!({ "messages": [{ "quarantines": [{ "name": "Outbreak", "reason_name": EVIL }] }] });
        let p = outbreak_rules(&data, "t").into_string();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        assert!(
            p.contains("name=\"rule\" value=\"&lt;script&gt;alert(1)&lt;/script&gt;&quot;'\""),
            "{p}"
        );
        assert!(p.contains("<td class=\"num\">1</td>"), "{p}");
        assert!(outbreak_rules(&json!({}), "t")
            .into_string()
            .contains("No message is held"));
    }

    #[test]
    fn dates_and_return_links() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2025-06-10"), Some(1_749_513_600));
        assert_eq!(parse_date("2025-13-01"), None);
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(safe_back(Some("//evil.example/")), "/messages");
        assert_eq!(safe_back(Some("https://evil.example/")), "/messages");
        assert_eq!(safe_back(Some("/messages/7")), "/messages/7");
    }

    /// A field of white space only (CR/LF) reaches the node, which refuses it by name;
    /// dropping it here would search (and act on) every held message. Empty fields are
    /// filters not given.
    #[test]
    fn white_space_filters_reach_the_node() {
        let form = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        let (q, _, _) = search_query(&form("subject", "\r\n"));
        assert_eq!(q.get("subject"), Some(&json!("\r\n")));
        let (q, _, _) = search_query(&form("sender", "  a@b.test "));
        assert_eq!(q.get("sender"), Some(&json!("a@b.test")));
        let (q, _, _) = search_query(&form("subject", ""));
        assert!(q.get("subject").is_none());
    }
}
