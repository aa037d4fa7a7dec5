//! Message detail: the summary, the actions (release, delete, delay, move; send a copy
//! only for roles that may), the quarantines holding it with their scheduled exits
//! (absolute and relative), "why held" per quarantine (filter or rule, verdict,
//! conditions, and the matched content in `<mark>`, or a note when `quarantine show`
//! hid it from the viewer's role), MIME parts, headers and history. Everything comes
//! from one `quarantine show` as the session user.

use std::fmt::Write as _;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response as HttpResponse;
use serde_json::{json, Value};

use super::*;
use crate::users::Perm;

// ----------------------------------------------------------------------------------
// Message detail
// ----------------------------------------------------------------------------------

pub(super) fn details_html(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut s = String::from("<dl class=\"details\">");
            for (k, v) in m {
                let _ = write!(
                    s,
                    "<dt>{}</dt><dd>{}</dd>",
                    esc(&k.replace('_', " ")),
                    details_html(v)
                );
            }
            s.push_str("</dl>");
            s
        }
        Value::Array(a) => {
            let mut s = String::from("<ul>");
            for v in a {
                let _ = write!(s, "<li>{}</li>", details_html(v));
            }
            s.push_str("</ul>");
            s
        }
        other => esc(&cell(other)),
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
                "<p class=\"err\">The MID must be a number.</p>",
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
        let body = format!(
            "{}<p><a href=\"/messages\">Back to the search</a></p>",
            refusal(&r)
        );
        return html(StatusCode::OK, page(&shared, &c, &title, &body));
    }
    let d = &r.data;
    let s = |k: &str| esc(d[k].as_str().unwrap_or(""));
    let mut b = String::new();
    let rcpts: Vec<String> = d["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(esc))
        .collect();
    let atts: Vec<String> = d["attachments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{} ({})",
                esc(a["name"].as_str().unwrap_or("")),
                esc(&bytes(a["size"].as_u64().unwrap_or(0)))
            )
        })
        .collect();
    let _ = write!(
        b,
        "<dl class=\"summary\"><dt>State</dt><dd>{}</dd><dt>Received (GMT)</dt><dd>{}</dd><dt>Envelope sender</dt><dd>{}</dd><dt>Envelope recipients</dt><dd>{}</dd><dt>Subject</dt><dd id=\"subject\">{}</dd><dt>Size</dt><dd>{}</dd><dt>Attachments</dt><dd>{}</dd>{}</dl>",
        s("state"),
        esc(&gmt(d["received"].as_u64().unwrap_or(0))),
        s("sender"),
        rcpts.join("<br>"),
        s("subject"),
        esc(&bytes(d["size"].as_u64().unwrap_or(0))),
        if atts.is_empty() { "none".into() } else { atts.join("<br>") },
        d["gateway"]
            .as_str()
            .filter(|g| !g.is_empty())
            .map(|g| format!(
                "<dt>Originating gateway</dt><dd id=\"gateway\">{} (its MID {})</dd>",
                esc(g),
                d["gateway_mid"].as_u64().unwrap_or(0)
            ))
            .unwrap_or_default(),
    );

    let now = crate::clock::unix_now();
    let hidden_for_role = d["matched_content_hidden"] == true;

    // Actions (every role sees them; a role that may not act is refused on the page).
    let held: Vec<Value> = d["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["state"] == "held")
        .cloned()
        .collect();
    if !held.is_empty() {
        let back = format!("/messages/{mid}");
        let _ = write!(
            b,
            "<section aria-labelledby=\"ha\"><h2 id=\"ha\">Actions</h2><form method=\"post\" action=\"/messages/action\" class=\"actions\">{}{}{}\
<button type=\"submit\" name=\"op\" value=\"release\" id=\"release\" accesskey=\"r\">Release</button> \
<button type=\"submit\" name=\"op\" value=\"delete\" id=\"delete\" class=\"danger\">Delete</button> \
<label for=\"by\">Delay exit by</label> <select id=\"by\" name=\"by\"><option>8h</option><option selected>24h</option><option>48h</option><option>1w</option></select> \
<button type=\"submit\" name=\"op\" value=\"delay\" id=\"delay\">Delay</button>",
            hidden("csrf", &c.csrf),
            hidden("back", &back),
            hidden("mid", &mid.to_string())
        );
        b.push_str(
            " <label for=\"move-from\">Move from</label> <select id=\"move-from\" name=\"from\">",
        );
        for m in &held {
            let q = m["quarantine"].as_str().unwrap_or("");
            let _ = write!(b, "<option>{}</option>", esc(q));
        }
        // The quarantines to move to, when the role may list them (else typed in; not
        // asked for otherwise, so a Guest's page adds no refusal to the audit trail).
        let role = shared.users.role(&c.id.role);
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
            crate::admin::Response::error("")
        };
        let mut names = String::new();
        if list.ok {
            names.push_str("<datalist id=\"quarantine-names\">");
            for q in list.data["quarantines"].as_array().into_iter().flatten() {
                let n = q["name"].as_str().unwrap_or("");
                if !held.iter().any(|m| m["quarantine"] == n) {
                    let _ = write!(names, "<option value=\"{}\">", esc(n));
                }
            }
            names.push_str("</datalist>");
        }
        let _ = write!(
            b,
            "</select> <label for=\"move-to\">to</label> <input id=\"move-to\" name=\"to\" size=\"12\" list=\"quarantine-names\" aria-describedby=\"move-help\">{names} <button type=\"submit\" name=\"op\" value=\"move\" id=\"move\">Move</button> <span id=\"move-help\" class=\"help\">the name of another quarantine</span></form>"
        );
        if may(Perm::SendCopy) {
            let _ = write!(
                b,
                "<form method=\"post\" action=\"/messages/action\" class=\"actions\">{}{}{}<label for=\"copy-to\">Send a copy to</label> <input id=\"copy-to\" name=\"copy_to\" type=\"text\" placeholder=\"a@example.com, b@example.com\" required> <button type=\"submit\" name=\"op\" value=\"copy\" id=\"copy\">Send copy</button></form>",
                hidden("csrf", &c.csrf),
                hidden("back", &back),
                hidden("mid", &mid.to_string())
            );
        }
        b.push_str("</section>");
    }

    // The quarantines holding it (or that it left), scheduled exits, then why held.
    let memberships: Vec<Value> = d["quarantines"].as_array().cloned().unwrap_or_default();
    b.push_str("<section aria-labelledby=\"hq\"><h2 id=\"hq\">Quarantines</h2><table id=\"memberships\"><thead><tr><th scope=\"col\">Quarantine</th><th scope=\"col\">State</th><th scope=\"col\">Held by</th><th scope=\"col\">Entered (GMT)</th><th scope=\"col\">Scheduled exit (GMT)</th><th scope=\"col\">Then</th></tr></thead><tbody>");
    for (i, m) in memberships.iter().enumerate() {
        let held = m["state"] == "held";
        let exit = if held {
            let at = m["exit_at"].as_u64().unwrap_or(0);
            format!(
                "<time datetime=\"{}\">{}</time> ({})",
                esc(&iso(at)),
                esc(&gmt(at)),
                esc(&relative(at, now))
            )
        } else {
            esc(&format!(
                "left {} by {} ({})",
                m["left_at"].as_u64().map(gmt).unwrap_or_default(),
                m["left_by"].as_str().unwrap_or("-"),
                m["cause"].as_str().unwrap_or("-")
            ))
        };
        let then = if held {
            m["default_action"].as_str().unwrap_or("-")
        } else {
            "-"
        };
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td><a href=\"#why-{i}\">{}</a></td><td>{}</td><td class=\"exit\">{exit}</td><td>{}</td></tr>",
            esc(m["quarantine"].as_str().unwrap_or("")),
            esc(m["state"].as_str().unwrap_or("")),
            esc(m["reason"].as_str().unwrap_or("")),
            esc(&gmt(m["entered_at"].as_u64().unwrap_or(0))),
            esc(then),
        );
    }
    b.push_str("</tbody></table></section>");
    if !memberships.is_empty() {
        b.push_str("<section aria-labelledby=\"hw\" id=\"why\"><h2 id=\"hw\">Why held</h2>");
        if hidden_for_role {
            let _ = write!(
                b,
                "<p class=\"note\" id=\"matched-hidden\" role=\"note\">The matched content is hidden for your role ({}): the filters, rules, conditions and verdicts are shown, not the text that matched.</p>",
                esc(&c.id.role)
            );
        }
        for (i, m) in memberships.iter().enumerate() {
            let _ = write!(
                b,
                "<section id=\"why-{i}\" class=\"why\" aria-labelledby=\"why-{i}-h\"><h3 id=\"why-{i}-h\">{}</h3>{}</section>",
                esc(m["quarantine"].as_str().unwrap_or("")),
                why_held(m, hidden_for_role)
            );
        }
        b.push_str("</section>");
    }

    if let Some(u) = d["unscannable"].as_str() {
        let _ = write!(
            b,
            "<p class=\"err\">The message cannot be parsed within the scanning limits: {}</p>",
            esc(u)
        );
    }
    let parts = d["parts"].as_array().cloned().unwrap_or_default();
    if !parts.is_empty() {
        b.push_str("<section aria-labelledby=\"hp\"><h2 id=\"hp\">MIME parts</h2><table id=\"parts\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Type</th><th scope=\"col\">File name</th><th scope=\"col\">Attachment</th><th scope=\"col\">Size</th><th scope=\"col\">True type</th><th scope=\"col\">SHA-256</th></tr></thead><tbody>");
        for (i, p) in parts.iter().enumerate() {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                i + 1,
                "&nbsp;&nbsp;".repeat(p["depth"].as_u64().unwrap_or(0) as usize),
                esc(p["content_type"].as_str().unwrap_or("")),
                esc(p["filename"].as_str().unwrap_or("")),
                if p["attachment"] == true { "yes" } else { "" },
                esc(&bytes(p["size"].as_u64().unwrap_or(0))),
                esc(p["file_type"].as_str().unwrap_or("")),
                esc(p["sha256"].as_str().unwrap_or("")),
            );
        }
        b.push_str("</tbody></table></section>");
    }
    let hdrs = d["headers"].as_array().cloned().unwrap_or_default();
    if !hdrs.is_empty() {
        b.push_str("<section aria-labelledby=\"hh\"><h2 id=\"hh\">Headers</h2><table id=\"headers\"><tbody>");
        for h in &hdrs {
            let _ = write!(
                b,
                "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                esc(h["name"].as_str().unwrap_or("")),
                esc(h["value"].as_str().unwrap_or(""))
            );
        }
        b.push_str("</tbody></table></section>");
    }
    let hist = d["history"].as_array().cloned().unwrap_or_default();
    if !hist.is_empty() {
        b.push_str("<section aria-labelledby=\"hy\"><h2 id=\"hy\">History</h2><table id=\"history\"><thead><tr><th scope=\"col\">At (GMT)</th><th scope=\"col\">Who</th><th scope=\"col\">Action</th><th scope=\"col\">Quarantine</th><th scope=\"col\">Detail</th></tr></thead><tbody>");
        for h in &hist {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&gmt(h["at"].as_u64().unwrap_or(0))),
                esc(h["who"].as_str().unwrap_or("")),
                esc(h["action"].as_str().unwrap_or("")),
                esc(h["quarantine"].as_str().unwrap_or("")),
                esc(h["detail"].as_str().unwrap_or("")),
            );
        }
        b.push_str("</tbody></table></section>");
    }
    html(StatusCode::OK, page(&shared, &c, &title, &b))
}

/// "Why held" of one membership: the filter or rule, the verdict, the conditions and
/// what they matched (in `<mark>`, escaped), or a note where the role may not see it.
fn why_held(m: &Value, hidden: bool) -> String {
    let kind = m["reason_kind"].as_str().unwrap_or("other");
    let name = m["reason_name"].as_str().unwrap_or("");
    let d = &m["details"];
    let matched = |text: &str| {
        if text.is_empty() {
            "<span class=\"help\">(a condition that holds by not matching)</span>".to_string()
        } else if hidden {
            "<em class=\"hidden-match\">hidden for your role</em>".to_string()
        } else {
            format!("<mark>{}</mark>", esc(text))
        }
    };
    let mut s = String::from("<dl class=\"summary\">");
    let mut rest = String::new();
    let mut known = true;
    match kind {
        "content filter" => {
            let _ = write!(
                s,
                "<dt>Content filter</dt><dd class=\"rule\">{}</dd><dt>Verdict</dt><dd>its conditions matched</dd>",
                esc(name)
            );
            let ev = d["evidence"].as_array().cloned().unwrap_or_default();
            if !ev.is_empty() {
                rest.push_str("<table class=\"evidence\"><caption>Conditions and what they matched</caption><thead><tr><th scope=\"col\">Condition</th><th scope=\"col\">Matched content</th></tr></thead><tbody>");
                for e in &ev {
                    let _ = write!(
                        rest,
                        "<tr><td><code>{}</code></td><td>{}</td></tr>",
                        esc(e["condition"].as_str().unwrap_or("")),
                        matched(e["matched"].as_str().unwrap_or(""))
                    );
                }
                rest.push_str("</tbody></table>");
            }
        }
        "DLP policy" => {
            let _ = write!(
                s,
                "<dt>DLP policy</dt><dd class=\"rule\">{}</dd><dt>Verdict</dt><dd>violation, severity {}, {} {}</dd>",
                esc(name),
                esc(d["severity"].as_str().unwrap_or("-")),
                esc(&cell(&d["total"])),
                if d["total"] == 1 { "match" } else { "matches" }
            );
            let dets = d["detectors"].as_array().cloned().unwrap_or_default();
            if !dets.is_empty() {
                rest.push_str("<table class=\"evidence\"><caption>Detectors and what they matched</caption><thead><tr><th scope=\"col\">Detector</th><th scope=\"col\">Matches</th><th scope=\"col\">Matched content (masked samples)</th></tr></thead><tbody>");
                for x in &dets {
                    let samples: Vec<String> = x["samples"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(&matched)
                        .collect();
                    let samples = if hidden && !samples.is_empty() {
                        matched("hidden")
                    } else {
                        samples.join(" ")
                    };
                    let _ = write!(
                        rest,
                        "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                        esc(x["detector"].as_str().unwrap_or("")),
                        esc(&cell(&x["count"])),
                        samples
                    );
                }
                rest.push_str("</tbody></table>");
            }
        }
        "virus" => {
            let _ = write!(
                s,
                "<dt>Anti-virus</dt><dd>positive</dd><dt>Virus</dt><dd class=\"rule\">{}</dd>",
                esc(d["virus"].as_str().unwrap_or(name))
            );
        }
        "outbreak rule" => {
            let rules: Vec<String> = d["rules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| esc(&cell(r)))
                .collect();
            let _ = write!(
                s,
                "<dt>Outbreak rule</dt><dd class=\"rule\">{}</dd><dt>Verdict</dt><dd>positive, threat level {}</dd>",
                esc(name),
                esc(&cell(&d["threat_level"]))
            );
            if !rules.is_empty() {
                let _ = write!(s, "<dt>Rules matched</dt><dd>{}</dd>", rules.join(", "));
            }
            if let Some(v) = d["rules_version"].as_str() {
                let _ = write!(s, "<dt>Rules version</dt><dd>{}</dd>", esc(v));
            }
        }
        _ => {
            known = false;
            let _ = write!(s, "<dt>Reason</dt><dd class=\"rule\">{}</dd>", esc(name));
            if let Some(u) = d["unscannable"].as_str() {
                let _ = write!(s, "<dt>Verdict</dt><dd>unscannable: {}</dd>", esc(u));
                known = true;
            }
        }
    }
    s.push_str("</dl>");
    if d.is_null() {
        s.push_str("<p class=\"help\">No details were recorded for this quarantine.</p>");
    } else if !known {
        s.push_str(&details_html(d));
    }
    s.push_str(&rest);
    s
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
        let shown = why_held(&m, false);
        assert!(shown.contains("<mark>c&lt;7&gt;</mark>"), "{shown}");
        assert!(
            shown.contains("codes") && shown.contains("body_regex"),
            "{shown}"
        );
        let mut h = m.clone();
        h["details"]["evidence"][0]["matched"] =
            "(hidden: role Guest may not see matched content)".into();
        let hidden = why_held(&h, true);
        assert!(
            !hidden.contains("<mark>") && hidden.contains("hidden for your role"),
            "{hidden}"
        );
        assert!(hidden.contains("body_regex"), "{hidden}");
        let dlp = serde_json::json!({
            "reason_kind": "DLP policy", "reason_name": "cards",
            "details": { "severity": "low", "total": 1, "detectors": [{ "detector": "payment_card", "count": 1, "samples": ["4111 **** **** 1111"] }] }
        });
        let shown = why_held(&dlp, false);
        assert!(
            shown.contains("<mark>4111 **** **** 1111</mark>") && shown.contains("severity low"),
            "{shown}"
        );
    }
}
