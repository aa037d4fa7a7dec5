//! Message detail: the summary, the actions (release, delete, delay, move; send a copy
//! only for roles that may), the quarantines holding it with their scheduled exits
//! (absolute and relative), "why held" per quarantine (filter or rule, verdict,
//! conditions, and the matched content in `<mark>`, or a note when `quarantine show`
//! hid it from the viewer's role), MIME parts, headers and history. Everything comes
//! from one `quarantine show` as the session user.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use serde_json::{json, Value};

use super::*;
use crate::core::users::Perm;

// ----------------------------------------------------------------------------------
// Message detail
// ----------------------------------------------------------------------------------

pub(super) fn details_html(v: &Value) -> Markup {
    html! {
        @match v {
            Value::Object(m) => {
                dl class="details" {
                    @for (k, v) in m { dt { (k.replace('_', " ")) } dd { (details_html(v)) } }
                }
            }
            Value::Array(a) => {
                ul { @for v in a { li { (details_html(v)) } } }
            }
            other => (cell(other)),
        }
    }
}

pub(super) async fn show(Viewer { shared, c }: Viewer, Path(mid): Path<String>) -> HttpResponse {
    let Ok(mid) = mid.trim().parse::<u64>() else {
        return html(
            StatusCode::NOT_FOUND,
            page(
                &shared,
                &c,
                "No such message",
                html! { p class="err" { "The MID must be a number." } },
            ),
        );
    };
    let r = run(
        &shared,
        &c.id,
        "quarantine",
        json!({ "action": "show", "mid": mid }),
    )
    .await;
    let title = format!("Message {mid}");
    if !r.ok {
        let body = html! {
            (refusal(&r))
            p { a href="/messages" { "Back to the search" } }
        };
        return html(StatusCode::OK, page(&shared, &c, &title, body));
    }
    let d = &r.data;

    // Actions (every role sees them; a role that may not act is refused on the page).
    let held: Vec<Value> = d["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["state"] == "held")
        .cloned()
        .collect();
    let actions = if held.is_empty() {
        None
    } else {
        // The quarantines to move to, when the role may list them (else typed in; not
        // asked for otherwise, so a Guest's page adds no refusal to the audit trail).
        let role = shared.access.users.role(&c.id.role);
        let may = |p: Perm| role.as_ref().is_some_and(|r| r.allows(p));
        let list = if may(Perm::Monitor) {
            run(
                &shared,
                &c.id,
                "quarantineconfig",
                json!({ "action": "list" }),
            )
            .await
        } else {
            crate::commands::protocol::Response::error("")
        };
        let others: Option<Vec<&str>> = list.ok.then(|| {
            list.data["quarantines"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|q| q["name"].as_str().unwrap_or(""))
                .filter(|n| !held.iter().any(|m| m["quarantine"] == *n))
                .collect()
        });
        Some(actions(
            mid,
            &held,
            others.as_deref(),
            may(Perm::SendCopy),
            &c.csrf,
        ))
    };
    let b = html! {
        (summary(d))
        @if let Some(a) = actions { (a) }
        (quarantines(d, &c.id.role))
    };
    html(StatusCode::OK, page(&shared, &c, &title, b))
}

/// The summary of a message (`quarantine show`'s data `d`).
fn summary(d: &Value) -> Markup {
    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
    let rcpts: Vec<&str> = d["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let atts: Vec<Value> = d["attachments"].as_array().cloned().unwrap_or_default();
    html! {
        dl class="summary" {
            dt { "State" } dd { (s("state")) }
            dt { "Received (GMT)" } dd { (gmt(d["received"].as_u64().unwrap_or(0))) }
            dt { "Envelope sender" } dd { (s("sender")) }
            dt { "Envelope recipients" }
            dd { @for (i, r) in rcpts.iter().enumerate() { @if i > 0 { br; } (r) } }
            dt { "Subject" } dd id="subject" { (s("subject")) }
            dt { "Size" } dd { (bytes(d["size"].as_u64().unwrap_or(0))) }
            dt { "Attachments" }
            dd {
                @if atts.is_empty() {
                    "none"
                } @else {
                    @for (i, a) in atts.iter().enumerate() {
                        @if i > 0 { br; }
                        (a["name"].as_str().unwrap_or("")) " (" (bytes(a["size"].as_u64().unwrap_or(0))) ")"
                    }
                }
            }
            @if let Some(g) = d["gateway"].as_str().filter(|g| !g.is_empty()) {
                dt { "Originating gateway" }
                dd id="gateway" { (g) " (its MID " (d["gateway_mid"].as_u64().unwrap_or(0)) ")" }
            }
        }
    }
}

/// The actions on message `mid` while it is `held` somewhere: release, delete, delay,
/// move (to one of `others` when the role may list them) and, when `may_copy`, send a
/// copy.
fn actions(
    mid: u64,
    held: &[Value],
    others: Option<&[&str]>,
    may_copy: bool,
    csrf: &str,
) -> Markup {
    let back = format!("/messages/{mid}");
    let fields = html! {
        (hidden("csrf", csrf))
        (hidden("back", &back))
        (hidden("mid", &mid.to_string()))
    };
    html! {
        section aria-labelledby="ha" {
            h2 id="ha" { "Actions" }
            form method="post" action="/messages/action" class="actions" {
                (fields)
                button type="submit" name="op" value="release" id="release" accesskey="r" { "Release" } " "
                button type="submit" name="op" value="delete" id="delete" class="danger" { "Delete" } " "
                label for="by" { "Delay exit by" } " "
                select id="by" name="by" { option { "8h" } option selected { "24h" } option { "48h" } option { "1w" } } " "
                button type="submit" name="op" value="delay" id="delay" { "Delay" }
                " " label for="move-from" { "Move from" } " "
                select id="move-from" name="from" {
                    @for m in held { option { (m["quarantine"].as_str().unwrap_or("")) } }
                }
                " " label for="move-to" { "to" } " "
                input id="move-to" name="to" size="12" list="quarantine-names" aria-describedby="move-help";
                @if let Some(others) = others {
                    datalist id="quarantine-names" { @for n in others { option value=(n); } }
                }
                " " button type="submit" name="op" value="move" id="move" { "Move" }
                " " span id="move-help" class="help" { "the name of another quarantine" }
            }
            @if may_copy {
                form method="post" action="/messages/action" class="actions" {
                    (fields)
                    label for="copy-to" { "Send a copy to" } " "
                    input id="copy-to" name="copy_to" type="text" placeholder="a@example.com, b@example.com" required;
                    " " button type="submit" name="op" value="copy" id="copy" { "Send copy" }
                }
            }
        }
    }
}

/// The quarantines holding a message (or that it left) with their scheduled exits,
/// why held in each (matched content hidden for `role` when `quarantine show` hid
/// it), MIME parts, headers and history.
fn quarantines(d: &Value, role: &str) -> Markup {
    let now = crate::core::clock::unix_now();
    let hidden_for_role = d["matched_content_hidden"] == true;
    let memberships: Vec<Value> = d["quarantines"].as_array().cloned().unwrap_or_default();
    let parts = d["parts"].as_array().cloned().unwrap_or_default();
    let hdrs = d["headers"].as_array().cloned().unwrap_or_default();
    let hist = d["history"].as_array().cloned().unwrap_or_default();
    html! {
        section aria-labelledby="hq" {
            h2 id="hq" { "Quarantines" }
            table id="memberships" {
                thead {
                    tr {
                        th scope="col" { "Quarantine" } th scope="col" { "State" } th scope="col" { "Held by" }
                        th scope="col" { "Entered (GMT)" } th scope="col" { "Scheduled exit (GMT)" } th scope="col" { "Then" }
                    }
                }
                tbody {
                    @for (i, m) in memberships.iter().enumerate() {
                        @let held = m["state"] == "held";
                        tr {
                            th scope="row" { (m["quarantine"].as_str().unwrap_or("")) }
                            td { (m["state"].as_str().unwrap_or("")) }
                            td { a href={ "#why-" (i) } { (m["reason"].as_str().unwrap_or("")) } }
                            td { (gmt(m["entered_at"].as_u64().unwrap_or(0))) }
                            td class="exit" {
                                @if held {
                                    @let at = m["exit_at"].as_u64().unwrap_or(0);
                                    time datetime=(iso(at)) { (gmt(at)) } " (" (relative(at, now)) ")"
                                } @else {
                                    "left " (m["left_at"].as_u64().map(gmt).unwrap_or_default())
                                    " by " (m["left_by"].as_str().unwrap_or("-"))
                                    " (" (m["cause"].as_str().unwrap_or("-")) ")"
                                }
                            }
                            td { (if held { m["default_action"].as_str().unwrap_or("-") } else { "-" }) }
                        }
                    }
                }
            }
        }
        @if !memberships.is_empty() {
            section aria-labelledby="hw" id="why" {
                h2 id="hw" { "Why held" }
                @if hidden_for_role {
                    p class="note" id="matched-hidden" role="note" {
                        "The matched content is hidden for your role (" (role) "): the filters, rules, conditions and verdicts are shown, not the text that matched."
                    }
                }
                @for (i, m) in memberships.iter().enumerate() {
                    section id={ "why-" (i) } class="why" aria-labelledby={ "why-" (i) "-h" } {
                        h3 id={ "why-" (i) "-h" } { (m["quarantine"].as_str().unwrap_or("")) }
                        (why_held(m, hidden_for_role))
                    }
                }
            }
        }
        @if let Some(u) = d["unscannable"].as_str() {
            p class="err" { "The message cannot be parsed within the scanning limits: " (u) }
        }
        @if !parts.is_empty() {
            section aria-labelledby="hp" {
                h2 id="hp" { "MIME parts" }
                table id="parts" {
                    thead {
                        tr {
                            th scope="col" { "#" } th scope="col" { "Type" } th scope="col" { "File name" }
                            th scope="col" { "Attachment" } th scope="col" { "Size" } th scope="col" { "True type" }
                            th scope="col" { "SHA-256" }
                        }
                    }
                    tbody {
                        @for (i, p) in parts.iter().enumerate() {
                            tr {
                                td { (i + 1) }
                                // Indented by depth with no-break spaces (no inline style).
                                td { ("\u{a0}\u{a0}".repeat(p["depth"].as_u64().unwrap_or(0) as usize)) (p["content_type"].as_str().unwrap_or("")) }
                                td { (p["filename"].as_str().unwrap_or("")) }
                                td { (if p["attachment"] == true { "yes" } else { "" }) }
                                td class="num" { (bytes(p["size"].as_u64().unwrap_or(0))) }
                                td { (p["file_type"].as_str().unwrap_or("")) }
                                td { code { (p["sha256"].as_str().unwrap_or("")) } }
                            }
                        }
                    }
                }
            }
        }
        @if !hdrs.is_empty() {
            section aria-labelledby="hh" {
                h2 id="hh" { "Headers" }
                table id="headers" {
                    tbody {
                        @for h in &hdrs {
                            tr { th scope="row" { (h["name"].as_str().unwrap_or("")) } td { (h["value"].as_str().unwrap_or("")) } }
                        }
                    }
                }
            }
        }
        @if !hist.is_empty() {
            section aria-labelledby="hy" {
                h2 id="hy" { "History" }
                table id="history" {
                    thead {
                        tr {
                            th scope="col" { "At (GMT)" } th scope="col" { "Who" } th scope="col" { "Action" }
                            th scope="col" { "Quarantine" } th scope="col" { "Detail" }
                        }
                    }
                    tbody {
                        @for h in &hist {
                            tr {
                                td { (gmt(h["at"].as_u64().unwrap_or(0))) }
                                td { (h["who"].as_str().unwrap_or("")) }
                                td { (h["action"].as_str().unwrap_or("")) }
                                td { (h["quarantine"].as_str().unwrap_or("")) }
                                td { (h["detail"].as_str().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// "Why held" of one membership: the filter or rule, the verdict, the conditions and
/// what they matched (in `<mark>`, escaped), or a note where the role may not see it.
fn why_held(m: &Value, hidden: bool) -> Markup {
    let kind = m["reason_kind"].as_str().unwrap_or("other");
    let name = m["reason_name"].as_str().unwrap_or("");
    let d = &m["details"];
    let matched = |text: &str| {
        html! {
            @if text.is_empty() {
                span class="help" { "(a condition that holds by not matching)" }
            } @else if hidden {
                em class="hidden-match" { "hidden for your role" }
            } @else {
                mark { (text) }
            }
        }
    };
    // Whether the kind's own rows say it all; otherwise every detail is listed.
    let known = matches!(
        kind,
        "content filter" | "DLP policy" | "virus" | "outbreak rule"
    ) || d["unscannable"].is_string();
    let ev = d["evidence"].as_array().cloned().unwrap_or_default();
    let dets = d["detectors"].as_array().cloned().unwrap_or_default();
    let rules: Vec<String> = d["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    html! {
        dl class="summary" {
            @match kind {
                "content filter" => {
                    dt { "Content filter" } dd class="rule" { (name) }
                    dt { "Verdict" } dd { "its conditions matched" }
                }
                "DLP policy" => {
                    dt { "DLP policy" } dd class="rule" { (name) }
                    dt { "Verdict" }
                    dd {
                        "violation, severity " (d["severity"].as_str().unwrap_or("-")) ", " (cell(&d["total"])) " "
                        (if d["total"] == 1 { "match" } else { "matches" })
                    }
                }
                "virus" => {
                    dt { "Anti-virus" } dd { "positive" }
                    dt { "Virus" } dd class="rule" { (d["virus"].as_str().unwrap_or(name)) }
                }
                "outbreak rule" => {
                    dt { "Outbreak rule" } dd class="rule" { (name) }
                    dt { "Verdict" } dd { "positive, threat level " (cell(&d["threat_level"])) }
                    @if !rules.is_empty() {
                        dt { "Rules matched" } dd { (rules.join(", ")) }
                    }
                    @if let Some(v) = d["rules_version"].as_str() {
                        dt { "Rules version" } dd { (v) }
                    }
                }
                _ => {
                    dt { "Reason" } dd class="rule" { (name) }
                    @if let Some(u) = d["unscannable"].as_str() {
                        dt { "Verdict" } dd { "unscannable: " (u) }
                    }
                }
            }
        }
        @if d.is_null() {
            p class="help" { "No details were recorded for this quarantine." }
        } @else if !known {
            (details_html(d))
        }
        @if kind == "content filter" && !ev.is_empty() {
            table class="evidence" {
                caption { "Conditions and what they matched" }
                thead { tr { th scope="col" { "Condition" } th scope="col" { "Matched content" } } }
                tbody {
                    @for e in &ev {
                        tr {
                            td { code { (e["condition"].as_str().unwrap_or("")) } }
                            td { (matched(e["matched"].as_str().unwrap_or(""))) }
                        }
                    }
                }
            }
        }
        @if kind == "DLP policy" && !dets.is_empty() {
            table class="evidence" {
                caption { "Detectors and what they matched" }
                thead {
                    tr { th scope="col" { "Detector" } th scope="col" { "Matches" } th scope="col" { "Matched content (masked samples)" } }
                }
                tbody {
                    @for x in &dets {
                        @let samples: Vec<&str> = x["samples"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                        tr {
                            td { (x["detector"].as_str().unwrap_or("")) }
                            td class="num" { (cell(&x["count"])) }
                            td {
                                @if hidden && !samples.is_empty() {
                                    (matched("hidden"))
                                } @else {
                                    @for (i, t) in samples.iter().enumerate() {
                                        @if i > 0 { " " }
                                        (matched(t))
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

/// `2026-11-23T16:00:00Z` for `<time datetime>`.
fn iso(secs: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second]Z"
            ))
            .ok()
        })
        .unwrap_or_default()
}

/// How far `at` is from `now`: "in 3 h", "in 2 d 4 h", "in 25 min", "due now",
/// "5 min ago".
fn relative(at: u64, now: u64) -> String {
    let span = |d: u64| {
        if d >= 86_400 {
            let h = (d % 86_400) / 3_600;
            if h == 0 {
                format!("{} d", d / 86_400)
            } else {
                format!("{} d {h} h", d / 86_400)
            }
        } else if d >= 3_600 {
            format!("{} h", d / 3_600)
        } else {
            format!("{} min", d.div_ceil(60))
        }
    };
    if at > now + 59 {
        format!("in {}", span(at - now))
    } else if now > at + 59 {
        format!("{} ago", span(now - at))
    } else {
        "due now".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times() {
        let now = 1_000_000;
        for (at, want) in [
            (now + 3 * 3_600, "in 3 h"),
            (now + 3 * 3_600 + 1_800, "in 3 h"),
            (now + 2 * 86_400 + 4 * 3_600, "in 2 d 4 h"),
            (now + 86_400, "in 1 d"),
            (now + 25 * 60, "in 25 min"),
            (now + 10, "due now"),
            (now - 300, "5 min ago"),
        ] {
            assert_eq!(relative(at, now), want, "{at}");
        }
        assert_eq!(iso(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn why_held_marks_matched_content_escaped_or_says_it_is_hidden() {
        let m = serde_json::json!({
            "reason_kind": "content filter", "reason_name": "codes",
            "details": { "evidence": [{ "condition": "body_regex \"c<\\\\d>\"", "matched": "c<7>" }] }
        });
        let shown = why_held(&m, false).into_string();
        assert!(shown.contains("<mark>c&lt;7&gt;</mark>"), "{shown}");
        assert!(
            shown.contains("codes") && shown.contains("body_regex"),
            "{shown}"
        );
        let mut h = m.clone();
        h["details"]["evidence"][0]["matched"] =
            "(hidden: role Guest may not see matched content)".into();
        let hidden = why_held(&h, true).into_string();
        assert!(
            !hidden.contains("<mark>") && hidden.contains("hidden for your role"),
            "{hidden}"
        );
        assert!(hidden.contains("body_regex"), "{hidden}");
        let dlp = serde_json::json!({
            "reason_kind": "DLP policy", "reason_name": "cards",
            "details": { "severity": "low", "total": 1, "detectors": [{ "detector": "payment_card", "count": 1, "samples": ["4111 **** **** 1111"] }] }
        });
        let shown = why_held(&dlp, false).into_string();
        assert!(
            shown.contains("<mark>4111 **** **** 1111</mark>") && shown.contains("severity low"),
            "{shown}"
        );
    }

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn a_message_page_escapes_subject_sender_file_names_and_quarantines() {
        let d = serde_json::json!({
            "state": EVIL, "received": 0, "sender": EVIL, "recipients": [EVIL, "b@x"],
            "subject": EVIL, "size": 10, "attachments": [{ "name": EVIL, "size": 2 }],
            "gateway": EVIL, "gateway_mid": 4,
            "quarantines": [{ "quarantine": EVIL, "state": "held", "reason": EVIL, "exit_at": 0,
                "entered_at": 0, "default_action": EVIL, "reason_kind": "mystery",
                "reason_name": EVIL, "details": { EVIL: [EVIL] } }],
            "unscannable": EVIL,
            "parts": [{ "depth": 1, "content_type": EVIL, "filename": EVIL, "size": 2, "file_type": EVIL, "sha256": EVIL }],
            "headers": [{ "name": EVIL, "value": EVIL }],
            "history": [{ "at": 0, "who": EVIL, "action": EVIL, "quarantine": EVIL, "detail": EVIL }],
            "matched_content_hidden": true
        });
        let held = d["quarantines"].as_array().unwrap().clone();
        let p = [
            summary(&d),
            actions(4, &held, Some(&[EVIL]), true, "t\"k"),
            quarantines(&d, EVIL),
        ]
        .map(Markup::into_string)
        .concat();
        assert!(!p.contains("<script") && !p.contains("\"'"), "{p}");
        let e = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'";
        assert!(p.contains(&format!("<dd id=\"subject\">{e}</dd>")), "{p}");
        assert!(p.contains(&format!("<dd>{e}<br>b@x</dd>")), "{p}");
        assert!(
            p.contains(&format!("<dd>{e} (2 B)</dd>")),
            "attachment: {p}"
        );
        assert!(p.contains(&format!("<option value=\"{e}\">")), "{p}");
        assert!(
            p.contains(&format!("<td>\u{a0}\u{a0}{e}</td>")),
            "MIME part: {p}"
        );
        assert!(
            p.contains(&format!("<dt>{e}</dt><dd><ul><li>{e}</li></ul></dd>")),
            "details: {p}"
        );
        assert!(p.contains("value=\"t&quot;k\""), "{p}");
        assert!(p.contains("id=\"matched-hidden\""), "{p}");
    }
}
