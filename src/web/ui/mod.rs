//! The web UI: server-rendered HTML pages over the appliance commands. Every page and
//! every action is one or more calls of `crate::commands::dispatch_as` with the session
//! user's [`Identity`] (origin `web ADDRESS`), so roles, handlers and the audit trail
//! are those of the CLI, SSH and the REST API; a refusal is shown on the page.
//!
//! Sessions, CSRF and the login rate limit are in `super::session`. Every POST needs
//! the session's CSRF token (hidden field `csrf`) and, when the browser names one, an
//! `Origin` equal to this server. Every value written into a page goes through [`esc`].

#![allow(clippy::result_large_err)] // axum responses as errors: built once per request

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::Value;

use super::session::{self, Sessions};
use crate::admin::{Request, Response};
use crate::node::Shared;
use crate::users::{Identity, Origin};

mod admin;
mod dashboard;
mod delivery;
mod jobs;
mod login;
mod message;
mod pvo;
mod search;
mod services;

use admin::*;
use dashboard::*;
use login::*;
use message::*;
use pvo::*;
use search::*;

type St = State<Arc<Shared>>;
type Ses = Extension<Arc<Sessions>>;

const CSS: &str = include_str!("../ui.css");
/// The UI's only script (select all, job progress): a file of the node's, so the CSP
/// can refuse every inline script.
const JS: &str = include_str!("../ui.js");

/// The UI's routes (merged into the server's router by `super::router`).
pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(dashboard))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/messages", get(search))
        .route("/messages/{mid}", get(show))
        .route("/messages/action", post(action))
        .route("/pvo", get(pvo))
        .route("/pvo/enable", post(pvo_enable))
        .route("/pvo/migration", post(pvo_migration))
        .route("/outbreak", get(outbreak).post(outbreak_act))
        .route(
            "/quarantines/{name}",
            get(quarantine_form).post(quarantine_save),
        )
        .route("/users", get(users).post(user_new))
        .route("/users/{name}", post(user_op))
        .route("/changes", get(changes))
        .route("/changes/{op}", post(change_op))
        .route("/ui.css", get(css))
        .route("/ui.js", get(js))
        .merge(services::routes())
        .merge(admin::routes())
        .merge(jobs::routes())
        .merge(delivery::routes())
        .layer(Extension(Sessions::new()))
}

/// HTML-escapes `s` for text and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The logged-in caller of a request.
struct Caller {
    id: Identity,
    sid: String,
    csrf: String,
}

fn with_headers(mut r: HttpResponse) -> HttpResponse {
    let h = r.headers_mut();
    for (k, v) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
        (
            "strict-transport-security",
            "max-age=31536000",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn html(code: StatusCode, body: String) -> HttpResponse {
    with_headers(
        (
            code,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

fn redirect(to: &str) -> HttpResponse {
    with_headers(
        (
            StatusCode::SEE_OTHER,
            [(header::LOCATION, to.to_string())],
            String::new(),
        )
            .into_response(),
    )
}

/// The session of the request, or the answer to send instead (to the login page).
fn caller(
    shared: &Shared,
    sessions: &Sessions,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Caller, HttpResponse> {
    let sid = session::cookie(headers, session::COOKIE).unwrap_or_default();
    let s = (!sid.is_empty())
        .then(|| sessions.get(&sid))
        .flatten()
        .ok_or_else(|| redirect("/login"))?;
    // The user as they are now: disabled, deleted or re-roled takes effect at once.
    let Some(id) = shared.users.identity(&s.user, Origin::Web(peer)) else {
        sessions.remove(&sid);
        return Err(redirect("/login"));
    };
    Ok(Caller {
        id,
        sid,
        csrf: s.csrf,
    })
}

/// The logged-in caller of a page (GET): the extractor of every page handler. Without a
/// valid session the answer is a redirect to the login page.
struct Viewer {
    shared: Arc<Shared>,
    c: Caller,
}

impl axum::extract::FromRequestParts<Arc<Shared>> for Viewer {
    type Rejection = HttpResponse;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        let Extension(sessions) = Ses::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let c = caller(shared, &sessions, &parts.headers, peer)?;
        Ok(Viewer {
            shared: shared.clone(),
            c,
        })
    }
}

/// A checked POST (same origin, a session, its CSRF token) and its form: the
/// extractor of every handler that changes something.
struct Post {
    shared: Arc<Shared>,
    c: Caller,
    form: Vec<(String, String)>,
}

impl axum::extract::FromRequest<Arc<Shared>> for Post {
    type Rejection = HttpResponse;

    async fn from_request(
        req: axum::extract::Request,
        shared: &Arc<Shared>,
    ) -> Result<Self, Self::Rejection> {
        use axum::extract::FromRequestParts;
        let (mut parts, body) = req.into_parts();
        let Extension(sessions) = Ses::from_request_parts(&mut parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(&mut parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let body = axum::body::Bytes::from_request(
            axum::extract::Request::from_parts(parts, body),
            shared,
        )
        .await
        .map_err(IntoResponse::into_response)?;
        let form = session::parse_form(&body);
        let c = poster(shared, &sessions, &headers, peer, &form)?;
        Ok(Post {
            shared: shared.clone(),
            c,
            form,
        })
    }
}

fn poster(
    shared: &Shared,
    sessions: &Sessions,
    headers: &HeaderMap,
    peer: SocketAddr,
    form: &[(String, String)],
) -> Result<Caller, HttpResponse> {
    if !session::same_origin(headers) {
        return Err(refused_csrf());
    }
    let c = caller(shared, sessions, headers, peer).map_err(|_| refused_csrf())?;
    let token = field(form, "csrf").unwrap_or("");
    if !session::ct_eq(token, &c.csrf) {
        return Err(refused_csrf());
    }
    Ok(c)
}

fn refused_csrf() -> HttpResponse {
    html(
        StatusCode::FORBIDDEN,
        bare(
            "Refused",
            "<p class=\"err\" role=\"alert\">Request refused: it did not come from a page of this server (missing or wrong CSRF token, other origin, or no session). Nothing was changed.</p><p><a href=\"/\">Go to the dashboard</a></p>",
        ),
    )
}

fn field<'a>(form: &'a [(String, String)], k: &str) -> Option<&'a str> {
    form.iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.trim().is_empty())
}

/// Runs one command as the caller.
async fn run(shared: &Arc<Shared>, id: &Identity, command: &str, args: Value) -> Response {
    match crate::commands::command::Command::from_parts(command, args) {
        Ok(c) => crate::commands::dispatch_as(shared, Request::new(c), id).await,
        Err(e) => Response::from(e),
    }
}

/// The names of the quarantines `quarantineconfig list` shows the caller, or its refusal.
async fn quarantine_names(shared: &Arc<Shared>, c: &Caller) -> Result<Vec<String>, Response> {
    let r = run(
        shared,
        &c.id,
        "quarantineconfig",
        serde_json::json!({ "action": "list" }),
    )
    .await;
    if !r.ok {
        return Err(r);
    }
    Ok(r.data["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["name"].as_str().map(str::to_string))
        .collect())
}

/// A page without navigation (login, refusals).
fn bare(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · PVO</title><link rel=\"stylesheet\" href=\"/ui.css\"></head><body><main class=\"narrow\"><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// A page with the navigation bar.
fn page(shared: &Shared, c: &Caller, title: &str, body: &str) -> String {
    let cfg = shared.config();
    let role = cfg.role.as_str();
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · {host}</title><link rel=\"stylesheet\" href=\"/ui.css\"><script src=\"/ui.js\" defer></script></head><body>\
<header><nav aria-label=\"Main\"><span class=\"brand\">PVO {role} <b>{host}</b></span>\
<a href=\"/\" accesskey=\"d\">Dashboard</a><a href=\"/messages\" accesskey=\"m\">Messages</a><a href=\"/delivery\" accesskey=\"q\">Delivery</a><a href=\"/services\" accesskey=\"g\">Services</a><a href=\"/pvo\" accesskey=\"p\">PVO settings</a><a href=\"/outbreak\" accesskey=\"o\">Outbreak</a><a href=\"/jobs\" accesskey=\"j\">Jobs</a><a href=\"/changes\" accesskey=\"c\">Changes</a><a href=\"/users\" accesskey=\"u\">Users</a>\
<form method=\"post\" action=\"/logout\" class=\"inline right\"><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><span class=\"who\">{user} ({urole})</span> <button type=\"submit\">Log out</button></form></nav></header>\
<main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title),
        host = esc(&cfg.hostname),
        role = esc(role),
        csrf = esc(&c.csrf),
        user = esc(&c.id.user),
        urole = esc(&c.id.role),
    )
}

fn pre(text: &str) -> String {
    format!("<pre>{}</pre>", esc(text.trim_end()))
}

/// The answer of a command that did not succeed, as a page fragment.
fn refusal(r: &Response) -> String {
    format!(
        "<div class=\"err\" role=\"alert\"><strong>Refused:</strong> {}</div>",
        pre(&r.text)
    )
}

async fn js() -> HttpResponse {
    with_headers(
        (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            JS,
        )
            .into_response(),
    )
}

async fn css() -> HttpResponse {
    with_headers(
        (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "max-age=300"),
            ],
            CSS,
        )
            .into_response(),
    )
}

fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A table of JSON objects: one column per key of the first row.
fn json_table(rows: &[Value], caption: &str) -> String {
    let Some(Value::Object(first)) = rows.first() else {
        return format!("<p>{}: none.</p>", esc(caption));
    };
    let keys: Vec<&String> = first.keys().collect();
    let mut t = format!("<table><caption>{}</caption><thead><tr>", esc(caption));
    for k in &keys {
        let _ = write!(t, "<th scope=\"col\">{}</th>", esc(&k.replace('_', " ")));
    }
    t.push_str("</tr></thead><tbody>");
    for r in rows {
        t.push_str("<tr>");
        for k in &keys {
            let _ = write!(t, "<td>{}</td>", esc(&cell(&r[k.as_str()])));
        }
        t.push_str("</tr>");
    }
    t.push_str("</tbody></table>");
    t
}

/// A return link only to a page of this server.
fn safe_back(v: Option<&str>) -> String {
    match v {
        Some(b) if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') => b.to_string(),
        _ => "/messages".to_string(),
    }
}

/// The page after an action: the command's answer (or its refusal, 400) and `links`.
fn outcome_page(
    shared: &Shared,
    c: &Caller,
    r: &Response,
    links: &str,
    (done, not_done): (&str, &str),
) -> HttpResponse {
    let b = format!(
        "{}<p>{links}</p>",
        if r.ok {
            format!("<div class=\"ok\" id=\"result\">{}</div>", pre(&r.text))
        } else {
            format!("<div id=\"result\">{}</div>", refusal(r))
        }
    );
    html(
        if r.ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        page(shared, c, if r.ok { done } else { not_done }, &b),
    )
}
