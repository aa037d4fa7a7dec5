//! Message detail: headers, parts, why held, quarantines, history and the actions on it.

use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response as HttpResponse;
use axum::Extension;
use serde_json::{json, Value};

use super::*;

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

pub(super) async fn show(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(mid): Path<String>,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
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
        d["meta"]["gateway"]
            .as_str()
            .map(|g| format!("<dt>Gateway</dt><dd>{}</dd>", esc(g)))
            .unwrap_or_default(),
    );

    // Actions.
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
        let others: Vec<&String> = Vec::new();
        let _ = others;
        b.push_str(
            " <label for=\"move-from\">Move from</label> <select id=\"move-from\" name=\"from\">",
        );
        for m in &held {
            let q = m["quarantine"].as_str().unwrap_or("");
            let _ = write!(b, "<option>{}</option>", esc(q));
        }
        b.push_str("</select> <label for=\"move-to\">to</label> <input id=\"move-to\" name=\"to\" size=\"12\"> <button type=\"submit\" name=\"op\" value=\"move\" id=\"move\">Move</button></form>");
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/messages/action\" class=\"actions\">{}{}{}<label for=\"copy-to\">Send a copy to</label> <input id=\"copy-to\" name=\"copy_to\" type=\"text\" placeholder=\"a@example.com, b@example.com\" required> <button type=\"submit\" name=\"op\" value=\"copy\" id=\"copy\">Send copy</button></form></section>",
            hidden("csrf", &c.csrf),
            hidden("back", &format!("/messages/{mid}")),
            hidden("mid", &mid.to_string())
        );
    }

    // Why held, other quarantines, scheduled exit.
    b.push_str("<section aria-labelledby=\"hq\"><h2 id=\"hq\">Quarantines</h2><table id=\"memberships\"><thead><tr><th scope=\"col\">Quarantine</th><th scope=\"col\">State</th><th scope=\"col\">Why held</th><th scope=\"col\">Entered (GMT)</th><th scope=\"col\">Scheduled exit (GMT)</th></tr></thead><tbody>");
    for m in d["quarantines"].as_array().into_iter().flatten() {
        let exit = if m["state"] == "held" {
            format!(
                "{}{}",
                gmt(m["exit_at"].as_u64().unwrap_or(0)),
                m["default_action"]
                    .as_str()
                    .map(|a| format!(", then {a}"))
                    .unwrap_or_default()
            )
        } else {
            format!(
                "left {} by {} ({})",
                m["left_at"].as_u64().map(gmt).unwrap_or_default(),
                m["left_by"].as_str().unwrap_or("-"),
                m["cause"].as_str().unwrap_or("-")
            )
        };
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
            esc(m["quarantine"].as_str().unwrap_or("")),
            esc(m["state"].as_str().unwrap_or("")),
            esc(m["reason"].as_str().unwrap_or("")),
            if m["details"].is_null() {
                String::new()
            } else {
                details_html(&m["details"])
            },
            esc(&gmt(m["entered_at"].as_u64().unwrap_or(0))),
            esc(&exit),
        );
    }
    b.push_str("</tbody></table></section>");

    if let Some(u) = d["unscannable"].as_str() {
        let _ = write!(
            b,
            "<p class=\"err\">The message cannot be parsed within the scanning limits: {}</p>",
            esc(u)
        );
    }
    let parts = d["parts"].as_array().cloned().unwrap_or_default();
    if !parts.is_empty() {
        b.push_str("<section aria-labelledby=\"hp\"><h2 id=\"hp\">MIME parts</h2><table id=\"parts\"><thead><tr><th scope=\"col\">#</th><th scope=\"col\">Type</th><th scope=\"col\">File name</th><th scope=\"col\">Size</th><th scope=\"col\">True type</th><th scope=\"col\">SHA-256</th></tr></thead><tbody>");
        for (i, p) in parts.iter().enumerate() {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td><code>{}</code></td></tr>",
                i + 1,
                "&nbsp;&nbsp;".repeat(p["depth"].as_u64().unwrap_or(0) as usize),
                esc(p["content_type"].as_str().unwrap_or("")),
                esc(p["filename"].as_str().unwrap_or("")),
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
