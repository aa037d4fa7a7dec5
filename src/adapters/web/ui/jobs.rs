//! Bulk actions as background jobs with progress (release, delete, delay, move of a
//! selection or of every result of a search, and Outbreak manage-by-rule): the pages of
//! the job table of `crate::adapters::web::jobs`. A bulk form starts a job ([`start`]) and answers
//! 303 to `/jobs/{id}`: a `<progress>` with "done of total, failed", the first refusals,
//! Cancel while it runs, links back; the node's `/ui.js` polls `/jobs/{id}.json` every
//! 500 ms (a `<noscript>` refresh otherwise). `/jobs` lists the caller's jobs (an
//! Administrator's: every job).

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
use crate::adapters::web::jobs::{self, Refused, Spec};
use crate::core::state::Handles;

/// How long a bulk form waits for its job before showing the progress page: a small
/// job is done by then and its page shows 100%.
const SETTLE: Duration = Duration::from_secs(1);

/// The routes of this page group (merged by `super::routes`).
pub(super) fn routes() -> Router<Arc<Handles>> {
    Router::new()
        .route("/jobs", get(list))
        .route("/jobs/{id}", get(show))
        .route("/jobs/{id}/cancel", post(cancel))
}

/// Starts the job of a bulk form and answers 303 to its page, or the refusal
/// (403/404/400) with a link back to `back`.
pub(super) async fn start(
    shared: &Arc<Handles>,
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
            let b = html! {
                div id="result" { div class="err" role="alert" { strong { "Refused:" } " " (pre(r.text())) } }
                p { a href=(back) id="back" accesskey="b" { "Back" } }
            };
            html(code, page(shared, c, "Not done", b))
        }
    }
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
        let b = html! {
            p class="err" role="alert" { (text) }
            p { a href="/jobs" { "Your jobs" } }
        };
        return html(StatusCode::NOT_FOUND, page(&shared, &c, "No such job", b));
    };
    if as_json {
        let mut r = Json(rec).into_response();
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return r;
    }
    let back = table.back(&jid).unwrap_or_else(|| "/messages".into());
    let b = job_page(&jid, &rec, &back, &c.csrf);
    html(StatusCode::OK, page(&shared, &c, "Bulk action", b))
}

/// The page of job `jid` (its record `rec`): what it does, its progress, the first
/// refusals, Cancel while it runs, the links back.
fn job_page(jid: &str, rec: &Value, back: &str, csrf: &str) -> Markup {
    let running = rec["state"] == "running";
    let (max, value) = bar(rec);
    // /ui.js polls the record named here while the job runs.
    let poll = running.then(|| format!("/jobs/{}.json", enc(jid)));
    html! {
        @if running {
            noscript { meta http-equiv="refresh" content="2"; }
        }
        p id="what" { (rec["description"].as_str().unwrap_or("")) }
        p {
            label for="progress" { "Progress" } " "
            progress id="progress" max=(max) value=(value) data-poll=[poll] { (value) " of " (max) }
        }
        div id="result" class=(if rec["state"] == "stopped" { "err" } else { "ok" }) role="status" aria-live="polite" {
            p {
                span id="done" { (num(rec, "done")) } " of "
                span id="total" { @if rec["total_exact"] == false { "at least " } (num(rec, "total")) }
                " done, "
                span id="failed" { (num(rec, "failed")) } " failed. "
                span id="state" { (state_text(rec)) }
            }
        }
        section aria-labelledby="hr" {
            h2 id="hr" { "Refusals" }
            ul id="refusals" {
                @for r in rec["refusals"].as_array().into_iter().flatten() { li { (r.as_str().unwrap_or("")) } }
            }
            p class="note" { "The first few are shown; the audit log has every one." }
        }
        form method="post" action={ "/jobs/" (enc(jid)) "/cancel" } id="cancel-form" hidden[!running] {
            (hidden("csrf", csrf))
            button type="submit" id="cancel" class="danger" { "Cancel" }
        }
        p {
            a href=(back) id="back" accesskey="b" { "Back" } " · "
            a href="/messages" { "Messages" } " · "
            a href="/jobs" { "Your jobs" }
        }
    }
}

async fn list(Viewer { shared, c }: Viewer) -> HttpResponse {
    let recs = jobs::of(&shared).list(&c.id);
    html(
        StatusCode::OK,
        page(&shared, &c, "Bulk actions", jobs_table(&recs)),
    )
}

/// The jobs of `/jobs`.
fn jobs_table(recs: &[Value]) -> Markup {
    html! {
        @if recs.is_empty() {
            p id="none" { "No bulk action in the last hour." }
        } @else {
            table id="jobs" {
                caption { "Bulk actions (kept for an hour after they end)" }
                thead {
                    tr {
                        th scope="col" { "Started (GMT)" } th scope="col" { "User" } th scope="col" { "Action" }
                        th scope="col" { "Done" } th scope="col" { "Failed" } th scope="col" { "State" }
                    }
                }
                tbody {
                    @for r in recs {
                        tr {
                            td { (crate::core::clock::gmt(num(r, "started_at")).chars().take(16).collect::<String>()) }
                            td { (r["user"].as_str().unwrap_or("")) }
                            td { a href={ "/jobs/" (enc(r["id"].as_str().unwrap_or(""))) } { (r["description"].as_str().unwrap_or("")) } }
                            td class="num" { (num(r, "done")) " of " (num(r, "total")) }
                            td class="num" { (num(r, "failed")) }
                            td { (r["state"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

async fn cancel(Path(id): Path<String>, Post { shared, c, .. }: Post) -> HttpResponse {
    match jobs::of(&shared).cancel(&id, &c.id) {
        Ok(_) => {
            // Cancelling waits for the batch under way (at most one).
            jobs::of(&shared).wait(&id, SETTLE).await;
            redirect(&format!("/jobs/{}", enc(&id)))
        }
        Err(e) => {
            let b = html! {
                div id="result" { p class="err" role="alert" { (e) } }
                p { a href="/jobs" id="back" { "Your jobs" } }
            };
            html(StatusCode::NOT_FOUND, page(&shared, &c, "Not done", b))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVIL: &str = "<script>alert(1)</script>\"'";

    #[test]
    fn a_jobs_page_escapes_its_description_refusals_and_links() {
        let rec = json!({ "state": "running", "description": EVIL, "total": 4, "done": 1,
            "failed": 1, "total_exact": false, "refusals": [EVIL] });
        let p = job_page("j\"1", &rec, "/messages?subject=\"x", "t").into_string();
        assert!(!p.contains("<script>") && !p.contains("\"'"), "{p}");
        assert!(
            p.contains("<p id=\"what\">&lt;script&gt;alert(1)&lt;/script&gt;&quot;'</p>"),
            "{p}"
        );
        assert!(p.contains("<li>&lt;script&gt;"), "{p}");
        assert!(p.contains("href=\"/messages?subject=&quot;x\""), "{p}");
        assert!(
            p.contains("<progress id=\"progress\" max=\"4\" value=\"1\" data-poll=\"/jobs/j%221.json\">1 of 4</progress>"),
            "{p}"
        );
        assert!(p.contains("<span id=\"total\">at least 4</span>"), "{p}");
        assert!(
            p.contains("<noscript><meta http-equiv=\"refresh\" content=\"2\"></noscript>"),
            "{p}"
        );
        assert!(
            p.contains("id=\"cancel-form\">"),
            "running: Cancel shown: {p}"
        );

        let done =
            json!({ "state": "done", "description": "d", "total": 0, "done": 0, "failed": 0 });
        let p = job_page("j", &done, "/", "t").into_string();
        assert!(!p.contains("data-poll") && !p.contains("noscript"), "{p}");
        assert!(p.contains("id=\"cancel-form\" hidden>"), "{p}");
        assert!(p.contains("max=\"1\" value=\"1\""), "{p}");

        let l =
            jobs_table(&[json!({ "id": "a b", "user": EVIL, "description": EVIL, "state": EVIL })])
                .into_string();
        assert!(!l.contains("<script>"), "{l}");
        assert!(l.contains("href=\"/jobs/a%20b\""), "{l}");
        assert!(jobs_table(&[]).into_string().contains("id=\"none\""));
    }
}
