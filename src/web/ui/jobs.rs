//! Bulk actions as background jobs with progress (release, delete, delay, move of a
//! selection or of every result of a search, and Outbreak manage-by-rule): the pages of
//! the job table of `crate::web::jobs`. A bulk form starts a job ([`start`]) and answers
//! 303 to `/jobs/{id}`: a `<progress>` with "done of total, failed", the first refusals,
//! Cancel while it runs, links back; the node's `/ui.js` polls `/jobs/{id}.json` every
//! 500 ms (a `<noscript>` refresh otherwise). `/jobs` lists the caller's jobs (an
//! Administrator's: every job).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::*;
use crate::state::Shared;
use crate::web::jobs::{self, Refused, Spec};

/// How long a bulk form waits for its job before showing the progress page: a small
/// job is done by then and its page shows 100%.
const SETTLE: Duration = Duration::from_secs(1);

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(show))
        .route("/jobs/{id}/cancel", post(cancel))
}

/// Starts the job of a bulk form and answers 303 to its page, or the refusal
/// (403/404/400) with a link back to `back`.
pub(super) async fn start(
    shared: &Arc<Shared>,
    c: &Caller,
    spec: Spec,
    back: &str,
) -> HttpResponse {
    match jobs::start(shared, &c.id, spec, back.to_string()).await {
        Ok(jid) => {
            jobs::of(shared).wait(&jid, SETTLE).await;
            redirect(&format!("/jobs/{}", enc(&jid)))
        }
        Err(r) => {
            let code = match r {
                Refused::Forbidden(_) => StatusCode::FORBIDDEN,
                Refused::NotFound(_) => StatusCode::NOT_FOUND,
                Refused::Invalid(_) => StatusCode::BAD_REQUEST,
                Refused::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            };
            let b = format!(
                "<div id=\"result\"><div class=\"err\" role=\"alert\"><strong>Refused:</strong> {}</div></div><p><a href=\"{}\" id=\"back\" accesskey=\"b\">Back</a></p>",
                pre(r.text()),
                esc(back)
            );
            html(code, page(shared, c, "Not done", &b))
        }
    }
}

/// The page's CSP plus `connect-src 'self'` (`/ui.js` fetches the record).
fn allow_fetch(mut r: HttpResponse) -> HttpResponse {
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .map(|v| format!("{v}; connect-src 'self'"));
    if let Some(v) = csp.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert("content-security-policy", v);
    }
    r
}

fn state_text(rec: &Value) -> String {
    match rec["state"].as_str().unwrap_or("") {
        "running" => "Running…".to_string(),
        "done" => "Done.".to_string(),
        "cancelled" => "Cancelled: stopped before the end.".to_string(),
        _ => format!(
            "Stopped: {}",
            rec["error"].as_str().unwrap_or("the job ended early")
        ),
    }
}

fn num(rec: &Value, k: &str) -> u64 {
    rec[k].as_u64().unwrap_or(0)
}

/// `max` and `value` of the progress element (a job with nothing to do is complete).
fn bar(rec: &Value) -> (u64, u64) {
    let (total, done) = (num(rec, "total"), num(rec, "done"));
    if total == 0 {
        (1, u64::from(rec["state"] != "running"))
    } else {
        (total, done.min(total))
    }
}

fn json_error(code: StatusCode, text: &str) -> HttpResponse {
    let mut r = (code, Json(json!({ "error": text }))).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn show(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> HttpResponse {
    let (jid, as_json) = match id.strip_suffix(".json") {
        Some(j) => (j.to_string(), true),
        None => (id, false),
    };
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) if as_json => {
            drop(r);
            return json_error(StatusCode::UNAUTHORIZED, "Log in first.");
        }
        Err(r) => return r,
    };
    let table = jobs::of(&shared);
    let Some(rec) = table.get(&jid, &c.id) else {
        let text = "There is no such job of yours (jobs are kept for an hour after they end).";
        if as_json {
            return json_error(StatusCode::NOT_FOUND, text);
        }
        let b = format!(
            "<p class=\"err\" role=\"alert\">{}</p><p><a href=\"/jobs\">Your jobs</a></p>",
            esc(text)
        );
        return html(StatusCode::NOT_FOUND, page(&shared, &c, "No such job", &b));
    };
    if as_json {
        let mut r = Json(rec).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let back = table.back(&jid).unwrap_or_else(|| "/messages".into());
    let running = rec["state"] == "running";
    let (max, value) = bar(&rec);
    let mut b = String::new();
    if running {
        b.push_str("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>");
    }
    let _ = write!(
        b,
        "<p id=\"what\">{}</p>\
<p><label for=\"progress\">Progress</label> <progress id=\"progress\" max=\"{max}\" value=\"{value}\"{poll}>{value} of {max}</progress></p>\
<div id=\"result\" class=\"{}\" role=\"status\" aria-live=\"polite\"><p><span id=\"done\">{}</span> of <span id=\"total\">{}</span> done, <span id=\"failed\">{}</span> failed. <span id=\"state\">{}</span></p></div>",
        esc(rec["description"].as_str().unwrap_or("")),
        if rec["state"] == "stopped" { "err" } else { "ok" },
        num(&rec, "done"),
        esc(&format!(
            "{}{}",
            if rec["total_exact"] == false { "at least " } else { "" },
            num(&rec, "total")
        )),
        num(&rec, "failed"),
        esc(&state_text(&rec)),
        // /ui.js polls the record named here while the job runs.
        poll = if running {
            format!(" data-poll=\"{}\"", esc(&format!("/jobs/{}.json", enc(&jid))))
        } else {
            String::new()
        },
    );
    b.push_str("<section aria-labelledby=\"hr\"><h2 id=\"hr\">Refusals</h2><ul id=\"refusals\">");
    for r in rec["refusals"].as_array().into_iter().flatten() {
        let _ = write!(b, "<li>{}</li>", esc(r.as_str().unwrap_or("")));
    }
    b.push_str("</ul><p class=\"note\">The first few are shown; the audit log has every one.</p></section>");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/jobs/{jid}/cancel\" id=\"cancel-form\"{}>{}<button type=\"submit\" id=\"cancel\" class=\"danger\">Cancel</button></form>",
        if running { "" } else { " hidden" },
        hidden("csrf", &c.csrf),
        jid = esc(&enc(&jid)),
    );
    let _ = write!(
        b,
        "<p><a href=\"{}\" id=\"back\" accesskey=\"b\">Back</a> · <a href=\"/messages\">Messages</a> · <a href=\"/jobs\">Your jobs</a></p>",
        esc(&back)
    );
    allow_fetch(html(StatusCode::OK, page(&shared, &c, "Bulk action", &b)))
}

async fn list(Viewer { shared, c }: Viewer) -> HttpResponse {
    let recs = jobs::of(&shared).list(&c.id);
    let mut b = String::new();
    if recs.is_empty() {
        b.push_str("<p id=\"none\">No bulk action in the last hour.</p>");
    } else {
        b.push_str("<table id=\"jobs\"><caption>Bulk actions (kept for an hour after they end)</caption><thead><tr><th scope=\"col\">Started (GMT)</th><th scope=\"col\">User</th><th scope=\"col\">Action</th><th scope=\"col\">Done</th><th scope=\"col\">Failed</th><th scope=\"col\">State</th></tr></thead><tbody>");
        for r in &recs {
            let jid = r["id"].as_str().unwrap_or("");
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td><a href=\"/jobs/{}\">{}</a></td><td class=\"num\">{} of {}</td><td class=\"num\">{}</td><td>{}</td></tr>",
                esc(&super::search::gmt(num(r, "started_at"))),
                esc(r["user"].as_str().unwrap_or("")),
                esc(&enc(jid)),
                esc(r["description"].as_str().unwrap_or("")),
                num(r, "done"),
                num(r, "total"),
                num(r, "failed"),
                esc(r["state"].as_str().unwrap_or("")),
            );
        }
        b.push_str("</tbody></table>");
    }
    html(StatusCode::OK, page(&shared, &c, "Bulk actions", &b))
}

async fn cancel(Path(id): Path<String>, Post { shared, c, .. }: Post) -> HttpResponse {
    match jobs::of(&shared).cancel(&id, &c.id) {
        Ok(_) => {
            // Cancelling waits for the batch under way (at most one).
            jobs::of(&shared).wait(&id, SETTLE).await;
            redirect(&format!("/jobs/{}", enc(&id)))
        }
        Err(e) => {
            let b = format!(
                "<div id=\"result\"><p class=\"err\" role=\"alert\">{}</p></div><p><a href=\"/jobs\" id=\"back\">Your jobs</a></p>",
                esc(&e)
            );
            html(StatusCode::NOT_FOUND, page(&shared, &c, "Not done", &b))
        }
    }
}
