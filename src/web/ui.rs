//! The web UI: server-rendered HTML pages over the appliance commands. Every page and
//! every action is one or more calls of `crate::commands::dispatch_as` with the session
//! user's [`Identity`] (origin `web ADDRESS`), so roles, handlers and the audit trail
//! are those of the CLI, SSH and the REST API; a refusal is shown on the page.
//!
//! Sessions, CSRF and the login rate limit are in `super::session`. Every POST needs
//! the session's CSRF token (hidden field `csrf`) and, when the browser names one, an
//! `Origin` equal to this server. Every value written into a page goes through [`esc`].

#![allow(clippy::result_large_err)] // axum responses as errors: built once per request

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde_json::{json, Map, Value};

use super::session::{self, Sessions};
use crate::admin::{Request, Response};
use crate::node::Shared;
use crate::users::{Identity, Origin};

type St = State<Arc<Shared>>;
type Ses = Extension<Arc<Sessions>>;

const CSS: &str = include_str!("ui.css");

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
            "default-src 'none'; style-src 'self'; script-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
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

/// A POST's caller: session, same origin, CSRF token.
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
    let req = Request {
        command: command.to_string(),
        args,
        user: String::new(),
        auth: None,
    };
    crate::commands::dispatch_as(shared, req, id).await
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
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t} · {host}</title><link rel=\"stylesheet\" href=\"/ui.css\"></head><body>\
<header><nav aria-label=\"Main\"><span class=\"brand\">PVO {role} <b>{host}</b></span>\
<a href=\"/\" accesskey=\"d\">Dashboard</a><a href=\"/messages\" accesskey=\"m\">Messages</a><a href=\"/pvo\" accesskey=\"p\">PVO settings</a><a href=\"/outbreak\" accesskey=\"o\">Outbreak</a><a href=\"/changes\" accesskey=\"c\">Changes</a><a href=\"/users\" accesskey=\"u\">Users</a>\
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

// ----------------------------------------------------------------------------------
// Login
// ----------------------------------------------------------------------------------

fn login_page(msg: Option<&str>, user: &str) -> String {
    let msg = msg
        .map(|m| format!("<p class=\"err\" role=\"alert\">{}</p>", esc(m)))
        .unwrap_or_default();
    bare(
        "Log in",
        &format!(
            "{msg}<form method=\"post\" action=\"/login\" class=\"stack\">\
<label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" required autofocus value=\"{u}\">\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\" id=\"login\">Log in</button></form>",
            u = esc(user)
        ),
    )
}

async fn login_form(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    if caller(&shared, &sessions, &headers, peer).is_ok() {
        return redirect("/");
    }
    html(StatusCode::OK, login_page(None, ""))
}

async fn login(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> HttpResponse {
    if !session::same_origin(&headers) {
        return refused_csrf();
    }
    let form = session::parse_form(&body);
    let user = field(&form, "username").unwrap_or("").trim().to_string();
    let password = form
        .iter()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if let Err(wait) = sessions.login_allowed(peer.ip()) {
        let mut r = html(
            StatusCode::TOO_MANY_REQUESTS,
            login_page(
                Some(&format!(
                    "Too many failed logins from {}: {} in the last minute. Try again in {wait} seconds.",
                    peer.ip(),
                    session::MAX_FAILURES
                )),
                &user,
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(wait));
        return r;
    }
    match session::login(&shared, &user, &password, peer).await {
        Ok(id) => {
            sessions.login_succeeded(peer.ip());
            let (sid, _) = sessions.create(&id.user);
            let mut r = redirect("/");
            if let Ok(v) = HeaderValue::from_str(&session::set_cookie(&sid)) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Err(_) => {
            sessions.login_failed(peer.ip());
            html(
                StatusCode::UNAUTHORIZED,
                login_page(Some("Wrong user name or password."), &user),
            )
        }
    }
}

async fn logout(Extension(sessions): Ses, Post { c, .. }: Post) -> HttpResponse {
    sessions.remove(&c.sid);
    let mut r = redirect("/login");
    if let Ok(v) = HeaderValue::from_str(&session::clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ----------------------------------------------------------------------------------
// Dashboard
// ----------------------------------------------------------------------------------

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

/// Days shown by the dashboard's chart.
const CHART_DAYS: u64 = 7;

/// Held messages by the day they were received (GMT), per quarantine, for the last
/// [`CHART_DAYS`] days: one counting search per day and quarantine (searches are not
/// audited). Bars are inline SVG (no script, no inline style).
async fn per_day_chart(shared: &Arc<Shared>, c: &Caller, list: &Value) -> String {
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

async fn dashboard(
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

// ----------------------------------------------------------------------------------
// Search
// ----------------------------------------------------------------------------------

/// The text filters of `quarantine search` (label, name).
const TEXT_FILTERS: [(&str, &str); 6] = [
    ("Sender", "sender"),
    ("Recipient", "recipient"),
    ("Subject", "subject"),
    ("Originating gateway", "gateway"),
    ("Attachment name", "attachment"),
    ("Reason (filter or rule)", "reason"),
];

const REASON_KINDS: [&str; 5] = [
    "content filter",
    "DLP policy",
    "virus",
    "outbreak rule",
    "other",
];

/// The orders of `quarantine search` (value, label).
const ORDERS: [(&str, &str); 6] = [
    ("newest", "newest first"),
    ("oldest", "oldest first"),
    ("largest", "largest first"),
    ("smallest", "smallest first"),
    ("exit_soonest", "exit soonest"),
    ("exit_latest", "exit latest"),
];

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD` (GMT) as Unix seconds at the start of that day.
fn parse_date(s: &str) -> Option<u64> {
    let mut it = s.trim().splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    u64::try_from(days_from_civil(y, m, d) * 86_400).ok()
}

fn gmt(secs: u64) -> String {
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
fn search_query(form: &[(String, String)]) -> Searched {
    let mut q = Map::new();
    let mut keep = Vec::new();
    let mut problems = Vec::new();
    for k in ["quarantine", "reason_kind", "order"]
        .into_iter()
        .chain(TEXT_FILTERS.iter().map(|(_, k)| *k))
    {
        if let Some(v) = field(form, k) {
            q.insert(k.into(), json!(v.trim()));
            keep.push((k.to_string(), v.trim().to_string()));
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

fn query_string(keep: &[(String, String)], extra: &[(&str, String)]) -> String {
    keep.iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .chain(extra.iter().map(|(k, v)| (*k, v.clone())))
        .map(|(k, v)| format!("{}={}", enc(k), enc(&v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn hidden(name: &str, value: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
        esc(name),
        esc(value)
    )
}

async fn search(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
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
    let val = |k: &str| esc(given.get(k).copied().unwrap_or("").trim());

    // The quarantines the caller can pick from.
    let list = run(
        &shared,
        &c.id,
        "quarantineconfig",
        json!({ "action": "list" }),
    )
    .await;
    let names: Vec<String> = list.data["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|q| q["name"].as_str().map(str::to_string))
        .collect();

    let mut b = String::from(
        "<form method=\"get\" action=\"/messages\" class=\"filters\" role=\"search\">",
    );
    let _ = write!(
        b,
        "<div><label for=\"f-quarantine\">Quarantine</label><select id=\"f-quarantine\" name=\"quarantine\"><option value=\"\">any</option>"
    );
    let cur = given.get("quarantine").copied().unwrap_or("");
    for n in &names {
        let _ = write!(
            b,
            "<option{}>{}</option>",
            if n == cur { " selected" } else { "" },
            esc(n)
        );
    }
    b.push_str("</select></div>");
    for (label, k) in TEXT_FILTERS {
        let _ = write!(
            b,
            "<div><label for=\"f-{k}\">{}</label><input id=\"f-{k}\" name=\"{k}\" value=\"{}\"></div>",
            esc(label),
            val(k)
        );
    }
    let cur = given.get("reason_kind").copied().unwrap_or("");
    b.push_str("<div><label for=\"f-reason_kind\">Reason kind</label><select id=\"f-reason_kind\" name=\"reason_kind\"><option value=\"\">any</option>");
    for k in REASON_KINDS {
        let _ = write!(
            b,
            "<option{}>{}</option>",
            if k == cur { " selected" } else { "" },
            esc(k)
        );
    }
    b.push_str("</select></div>");
    let cur = given.get("order").copied().unwrap_or("newest");
    b.push_str("<div><label for=\"f-order\">Order</label><select id=\"f-order\" name=\"order\">");
    for (v, label) in ORDERS {
        let _ = write!(
            b,
            "<option value=\"{v}\"{}>{}</option>",
            if v == cur { " selected" } else { "" },
            esc(label)
        );
    }
    b.push_str("</select></div>");
    let _ = write!(
        b,
        "<div><label for=\"f-attachment_min_size\">Attachment at least (bytes)</label><input id=\"f-attachment_min_size\" name=\"attachment_min_size\" type=\"number\" min=\"0\" value=\"{}\"></div>\
<div><label for=\"f-attachment_max_size\">Attachment at most (bytes)</label><input id=\"f-attachment_max_size\" name=\"attachment_max_size\" type=\"number\" min=\"0\" value=\"{}\"></div>",
        val("attachment_min_size"),
        val("attachment_max_size")
    );
    let _ = write!(
        b,
        "<div><label for=\"f-from\">Received from (GMT)</label><input id=\"f-from\" name=\"from\" type=\"date\" value=\"{}\"></div>\
<div><label for=\"f-to\">Received to (GMT)</label><input id=\"f-to\" name=\"to\" type=\"date\" value=\"{}\"></div>\
<div><label for=\"f-limit\">Per page</label><input id=\"f-limit\" name=\"limit\" type=\"number\" min=\"1\" max=\"500\" value=\"{limit}\"></div>\
<div><button type=\"submit\" id=\"search\" accesskey=\"s\">Search</button></div></form>",
        val("from"),
        val("to")
    );
    for p in &problems {
        let _ = write!(b, "<p class=\"err\" role=\"alert\">{}</p>", esc(p));
    }

    let r = run(
        &shared,
        &c.id,
        "quarantine",
        json!({ "action": "search", "query": Value::Object(query), "offset": offset, "limit": limit }),
    )
    .await;
    if !r.ok {
        b.push_str(&refusal(&r));
        return html(StatusCode::OK, page(&shared, &c, "Messages", &b));
    }
    let d = &r.data;
    let total = d["total"].as_u64().unwrap_or(0);
    let exact = d["total_exact"].as_bool().unwrap_or(true);
    let msgs = d["messages"].as_array().cloned().unwrap_or_default();
    let total_text = if exact {
        total.to_string()
    } else {
        format!("at least {total}")
    };
    let _ = write!(
        b,
        "<p id=\"summary\" aria-live=\"polite\">{}</p>",
        if msgs.is_empty() {
            if total > 0 {
                format!("{total_text} messages match; this page is past the last one.")
            } else {
                "No quarantined messages match.".to_string()
            }
        } else {
            format!(
                "Showing {}–{} of {total_text} messages.",
                offset + 1,
                offset + msgs.len() as u64
            )
        }
    );
    let back = format!(
        "/messages?{}",
        query_string(
            &keep,
            &[("offset", offset.to_string()), ("limit", limit.to_string())]
        )
    );
    // While a bulk action runs (the answer comes when it is done), an indeterminate
    // progress bar; the buttons cannot be pressed twice.
    b.push_str("<form method=\"post\" action=\"/messages/action\" id=\"results\" onsubmit=\"this.querySelector('.busy').hidden=false;setTimeout(()=>this.querySelectorAll('button').forEach(x=>x.disabled=true))\">");
    b.push_str(&hidden("csrf", &c.csrf));
    b.push_str(&hidden("back", &back));
    for (k, v) in &keep {
        b.push_str(&hidden(&format!("q_{k}"), v));
    }
    if !msgs.is_empty() {
        b.push_str("<div class=\"bulk\" role=\"group\" aria-label=\"Bulk actions\">\
<button type=\"submit\" name=\"op\" value=\"release\" id=\"release-selected\">Release selected</button> \
<button type=\"submit\" name=\"op\" value=\"delete\" id=\"delete-selected\" class=\"danger\">Delete selected</button> \
<span class=\"sep\">or every result of this search:</span> \
<button type=\"submit\" name=\"op\" value=\"release-all\" id=\"release-all\">Release all results</button> \
<button type=\"submit\" name=\"op\" value=\"delete-all\" id=\"delete-all\" class=\"danger\">Delete all results</button> \
<span class=\"busy\" role=\"status\" hidden><progress aria-label=\"Working\"></progress> Working…</span></div>");
        b.push_str("<table id=\"messages\"><thead><tr><th scope=\"col\"><input type=\"checkbox\" id=\"select-all\" aria-label=\"Select all on this page\" onclick=\"for(const c of document.querySelectorAll('input[name=mid]'))c.checked=this.checked\"></th><th scope=\"col\">MID</th><th scope=\"col\">Received (GMT)</th><th scope=\"col\">Sender</th><th scope=\"col\">Recipients</th><th scope=\"col\">Subject</th><th scope=\"col\">Quarantines</th><th scope=\"col\">Scheduled exit</th></tr></thead><tbody>");
        for m in &msgs {
            let mid = m["mid"].as_u64().unwrap_or(0);
            let rcpts: Vec<String> = m["recipients"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r.as_str().map(str::to_string))
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
            let _ = write!(
                b,
                "<tr><td><input type=\"checkbox\" name=\"mid\" value=\"{mid}\" aria-label=\"Select MID {mid}\"></td><td><a href=\"/messages/{mid}\">{mid}</a></td><td>{}</td><td>{}</td><td>{}</td><td><a href=\"/messages/{mid}\">{}</a></td><td>{}</td><td>{}</td></tr>",
                esc(&gmt(m["received"].as_u64().unwrap_or(0))),
                esc(m["sender"].as_str().unwrap_or("")),
                esc(&rcpts.join(", ")),
                esc(if subject.is_empty() { "(no subject)" } else { subject }),
                esc(&qs.join("; ")),
                esc(&m["scheduled_exit"].as_u64().map(gmt).unwrap_or_default()),
            );
        }
        b.push_str("</tbody></table>");
    }
    b.push_str("</form><nav class=\"pager\" aria-label=\"Pages\">");
    if offset > 0 {
        let prev = offset.saturating_sub(limit);
        let _ = write!(
            b,
            "<a rel=\"prev\" accesskey=\",\" href=\"/messages?{}\">← Previous</a> ",
            esc(&query_string(
                &keep,
                &[("offset", prev.to_string()), ("limit", limit.to_string())]
            ))
        );
    }
    if offset + (msgs.len() as u64) < total || (!exact && msgs.len() as u64 == limit) {
        let _ = write!(
            b,
            "<a rel=\"next\" accesskey=\".\" href=\"/messages?{}\">Next →</a>",
            esc(&query_string(
                &keep,
                &[
                    ("offset", (offset + limit).to_string()),
                    ("limit", limit.to_string())
                ]
            ))
        );
    }
    b.push_str("</nav>");
    html(StatusCode::OK, page(&shared, &c, "Messages", &b))
}

// ----------------------------------------------------------------------------------
// Message detail
// ----------------------------------------------------------------------------------

fn details_html(v: &Value) -> String {
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

async fn show(
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

// ----------------------------------------------------------------------------------
// Actions
// ----------------------------------------------------------------------------------

/// A return link only to a page of this server.
fn safe_back(v: Option<&str>) -> String {
    match v {
        Some(b) if b.starts_with('/') && !b.starts_with("//") && !b.contains('\\') => b.to_string(),
        _ => "/messages".to_string(),
    }
}

async fn action(Post { shared, c, form }: Post) -> HttpResponse {
    let back = safe_back(field(&form, "back"));
    let op = field(&form, "op").unwrap_or("");
    let (verb, all) = match op {
        "release" | "delete" | "delay" | "move" => (op, false),
        "release-all" => ("release", true),
        "delete-all" => ("delete", true),
        _ => ("", false),
    };
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
                    page(
                        &shared,
                        &c,
                        "Not done",
                        &format!("<p class=\"err\">{}</p>", esc(p)),
                    ),
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
    let mut b = if result.ok {
        format!(
            "<div class=\"ok\" role=\"status\" id=\"result\">{}</div>",
            pre(&result.text)
        )
    } else {
        format!("<div id=\"result\">{}</div>", refusal(&result))
    };
    let back_to = if back.starts_with("/messages/") && verb != "delay" && op != "copy" && result.ok
    {
        "/messages".to_string()
    } else {
        back
    };
    let _ = write!(
        b,
        "<p><a href=\"{}\" accesskey=\"b\" id=\"back\">Back</a></p>",
        esc(&back_to)
    );
    let code = if result.ok {
        StatusCode::OK
    } else if result.text.contains("cannot") || result.text.contains("has no access") {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    html(code, page(&shared, &c, title, &b))
}

// ----------------------------------------------------------------------------------
// PVO settings
// ----------------------------------------------------------------------------------

/// Checks of `diagnose` that are `pvoconfig enable`'s preflight.
fn preflight_check(name: &str) -> bool {
    [
        "CPQ certificate",
        "manager address",
        "connect to the manager",
        "manager greeting",
        "TLS with the manager",
        "manager ready",
    ]
    .contains(&name)
}

async fn pvo(
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
    let st = run(&shared, &c.id, "pvoconfig", json!({ "action": "status" })).await;
    b.push_str("<section aria-labelledby=\"hs\"><h2 id=\"hs\">Status</h2>");
    b.push_str(&if st.ok { pre(&st.text) } else { refusal(&st) });
    b.push_str("</section>");
    let cfg = shared.config();
    if cfg.role == crate::config::Role::Manager && st.ok {
        let _ = write!(
            b,
            "<section aria-labelledby=\"hw\"><h2 id=\"hw\">Migration wizard</h2><p>How the gateways' local quarantines map to the central ones; an Administrator's run, committed, is what gateways need before they can enable centralization.</p>\
<form method=\"post\" action=\"/pvo/migration\">{}<button type=\"submit\" name=\"mode\" value=\"automatic\" id=\"wizard-automatic\">Automatic migration</button> <button type=\"submit\" name=\"mode\" value=\"custom\" id=\"wizard-custom\">Custom migration</button></form></section>",
            hidden("csrf", &c.csrf)
        );
    }
    if cfg.role == crate::config::Role::Gateway && st.ok && st.data["mode"] != "central" {
        // Why Enable would fail, found without changing anything: the preflight's
        // checks as `diagnose` runs them.
        let mut reason: Option<(String, String)> = None;
        let mut checks = String::new();
        if cfg.cpq.is_none() {
            reason = Some((
                "This gateway has no [cpq] section (its id, cpq_listener and certificate).".into(),
                "Add one (see docs/gateway.example.toml) and commit first.".into(),
            ));
        } else if cfg.cpq.as_ref().and_then(|c| c.manager.as_ref()).is_none() {
            reason = Some((
                "No manager address is configured.".into(),
                "Set the manager's CPQ address: `pvoconfig enable --manager HOST[:PORT]`.".into(),
            ));
        } else {
            drop(cfg);
            let d = run(&shared, &c.id, "diagnose", json!({})).await;
            let list = d.data["checks"].as_array().cloned().unwrap_or_default();
            if list.is_empty() && !d.ok {
                reason = Some((
                    d.text.trim().to_string(),
                    "Ask an Administrator or Operator.".into(),
                ));
            }
            checks.push_str("<ul class=\"checks\">");
            // The preflight decides; how each interface reaches the manager is shown too.
            for ch in list.iter().filter(|ch| {
                let n = ch["name"].as_str().unwrap_or("");
                preflight_check(n) || n.starts_with("reach ")
            }) {
                let name = ch["name"].as_str().unwrap_or("");
                let passed = ch["passed"].as_bool().unwrap_or(false);
                let _ = write!(
                    checks,
                    "<li class=\"{}\">{} {}: {}</li>",
                    if passed { "pass" } else { "fail" },
                    if passed { "PASS" } else { "FAIL" },
                    esc(name),
                    esc(ch["detail"].as_str().unwrap_or(""))
                );
                if !passed && reason.is_none() && preflight_check(name) {
                    reason = Some((
                        ch["cause"].as_str().unwrap_or("").to_string(),
                        ch["remedy"].as_str().unwrap_or("").to_string(),
                    ));
                }
            }
            checks.push_str("</ul>");
        }
        b.push_str("<section aria-labelledby=\"he\"><h2 id=\"he\">Centralize the quarantines</h2>");
        let _ = write!(
            b,
            "<form method=\"post\" action=\"/pvo/enable\" class=\"enable\">{}<button type=\"submit\" id=\"enable\" accesskey=\"e\"{}>Enable</button>",
            hidden("csrf", &c.csrf),
            if reason.is_some() { " disabled aria-describedby=\"why\"" } else { "" },
                    );
        match &reason {
            Some((cause, remedy)) => {
                let _ = write!(
                    b,
                    " <div id=\"why\" class=\"err\" role=\"status\"><p><strong>Enable is unavailable:</strong> <span id=\"cause\">{}</span></p><p><strong>Remedy:</strong> <span id=\"remedy\">{}</span></p></div>",
                    esc(cause),
                    esc(remedy)
                );
            }
            None => b.push_str(" <span class=\"ok\">The preflight passed: enabling is pending until you commit.</span>"),
        }
        b.push_str("</form>");
        b.push_str(&checks);
        b.push_str("</section>");
    }
    html(StatusCode::OK, page(&shared, &c, "PVO settings", &b))
}

async fn pvo_enable(Post { shared, c, .. }: Post) -> HttpResponse {
    let r = run(&shared, &c.id, "pvoconfig", json!({ "action": "enable" })).await;
    let b = format!(
        "{}<p><a href=\"/pvo\" id=\"back\">Back to the PVO settings</a></p>",
        if r.ok {
            format!("<div class=\"ok\" id=\"result\">{}</div>", pre(&r.text))
        } else {
            refusal(&r)
        }
    );
    html(
        if r.ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        page(
            &shared,
            &c,
            if r.ok {
                "Enabled (pending)"
            } else {
                "Not enabled"
            },
            &b,
        ),
    )
}

// ----------------------------------------------------------------------------------
// Pending changes: commit, clear, rollback
// ----------------------------------------------------------------------------------

async fn changes(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let d = run(&shared, &c.id, "commitdetail", json!({})).await;
    let mut b = String::new();
    if !d.ok {
        b.push_str(&refusal(&d));
        return html(StatusCode::OK, page(&shared, &c, "Changes", &b));
    }
    let pending = d.data["pending"].as_bool().unwrap_or(false);
    let _ = write!(
        b,
        "<p id=\"pending\">{}</p>",
        if pending {
            "Changes are pending: they take effect when committed."
        } else {
            "No changes pending."
        }
    );
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/changes/commit\" class=\"stack narrowform\">{}<label for=\"comment\">Comment</label><input id=\"comment\" name=\"comment\" required><div><button type=\"submit\" id=\"commit\"{}>Commit</button></div></form>\
<form method=\"post\" action=\"/changes/clear\">{}<button type=\"submit\" id=\"clear\" class=\"danger\"{}>Clear changes</button></form>\
<form method=\"post\" action=\"/changes/rollback\">{}<label for=\"n\">Roll back to commit</label> <input id=\"n\" name=\"n\" type=\"number\" min=\"1\" required> <button type=\"submit\" id=\"rollback\" class=\"danger\">Roll back</button></form>",
        hidden("csrf", &c.csrf),
        if pending { "" } else { " disabled" },
        hidden("csrf", &c.csrf),
        if pending { "" } else { " disabled" },
        hidden("csrf", &c.csrf),
    );
    b.push_str(&pre(&d.text));
    html(StatusCode::OK, page(&shared, &c, "Changes", &b))
}

async fn change_op(Path(op): Path<String>, Post { shared, c, form }: Post) -> HttpResponse {
    let r = match op.as_str() {
        "commit" => {
            let comment = field(&form, "comment").unwrap_or("").trim().to_string();
            run(&shared, &c.id, "commit", json!({ "comment": comment })).await
        }
        "clear" => run(&shared, &c.id, "clearchanges", json!({})).await,
        "rollback" => match field(&form, "n").and_then(|n| n.trim().parse::<u64>().ok()) {
            Some(n) => run(&shared, &c.id, "rollback", json!({ "n": n })).await,
            None => Response::error("Give the number of the commit to go back to."),
        },
        _ => Response::error(format!("Unknown change operation {op:?}.")),
    };
    outcome_page(
        &shared,
        &c,
        &r,
        "<a href=\"/changes\" id=\"back\">Back to the changes</a>",
        ("Done", "Not done"),
    )
}

// ----------------------------------------------------------------------------------
// Quarantine settings
// ----------------------------------------------------------------------------------

/// The names in an access list as `quarantineconfig list` shows it.
fn access_names(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a.iter().flat_map(access_names).collect(),
        Value::Object(m) => m.values().flat_map(access_names).collect(),
        _ => Vec::new(),
    }
}

async fn quarantine_form(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let title = format!("Quarantine {name}");
    let list = run(
        &shared,
        &c.id,
        "quarantineconfig",
        json!({ "action": "list" }),
    )
    .await;
    if !list.ok {
        return html(StatusCode::OK, page(&shared, &c, &title, &refusal(&list)));
    }
    let Some(q) = list.data["quarantines"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["name"].as_str() == Some(name.as_str()))
        .cloned()
    else {
        let body = format!(
            "<p class=\"err\">There is no quarantine named {}.</p>",
            esc(&name)
        );
        return html(StatusCode::NOT_FOUND, page(&shared, &c, &title, &body));
    };
    let er = &q["early_release"];
    let er_s = |k: &str| esc(er[k].as_str().unwrap_or(""));
    let x_header = match (
        er["x_header"]["name"].as_str(),
        er["x_header"]["value"].as_str(),
    ) {
        (Some(n), Some(v)) => format!("{n}:{v}"),
        _ => String::new(),
    };
    let checked = |b: bool| if b { " checked" } else { "" };
    let action = q["default_action"].as_str().unwrap_or("delete");
    let mut b = String::new();
    let _ = write!(
        b,
        "<p>{} messages, {} used. Changes apply at once (they are quarantine settings, not pending configuration). Only Administrators may change them.</p>\
<form method=\"post\" action=\"/quarantines/{}\" class=\"stack narrowform\">{}\
<label for=\"retention_hours\">Retention (hours)</label><input id=\"retention_hours\" name=\"retention_hours\" type=\"number\" min=\"1\" value=\"{}\" required>\
<label for=\"default_action\">Default action at the end of retention</label><select id=\"default_action\" name=\"default_action\"><option value=\"delete\"{}>delete</option><option value=\"release\"{}>release</option></select>\
<label><input type=\"checkbox\" name=\"exempt_free_up\" value=\"1\"{}> Exempt from free-up when space runs out</label>\
<fieldset><legend>Early release</legend>\
<label for=\"subject_prepend\">Prepend to the subject</label><input id=\"subject_prepend\" name=\"subject_prepend\" value=\"{}\">\
<label for=\"subject_append\">Append to the subject</label><input id=\"subject_append\" name=\"subject_append\" value=\"{}\">\
<label for=\"x_header\">Add a header (NAME:VALUE)</label><input id=\"x_header\" name=\"x_header\" value=\"{}\">\
<label><input type=\"checkbox\" name=\"strip_attachments\" value=\"1\"{}> Strip attachments</label></fieldset>\
<label for=\"access\">Access (roles and users, comma-separated; Administrators always)</label><input id=\"access\" name=\"access\" value=\"{}\">\
<div><button type=\"submit\" id=\"save\" accesskey=\"v\">Save</button></div></form>",
        q["messages"].as_u64().unwrap_or(0),
        esc(&bytes(q["space_used_bytes"].as_u64().unwrap_or(0))),
        enc(&name),
        hidden("csrf", &c.csrf),
        q["retention_secs"].as_u64().unwrap_or(0).div_ceil(3600),
        if action == "delete" { " selected" } else { "" },
        if action == "release" { " selected" } else { "" },
        checked(q["exempt_free_up"].as_bool().unwrap_or(false)),
        er_s("subject_prepend"),
        er_s("subject_append"),
        esc(&x_header),
        checked(er["strip_attachments"].as_bool().unwrap_or(false)),
        esc(&access_names(&q["access"]).join(", ")),
    );
    html(StatusCode::OK, page(&shared, &c, &title, &b))
}

async fn quarantine_save(Path(name): Path<String>, Post { shared, c, form }: Post) -> HttpResponse {
    let text = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let r = match text("retention_hours").parse::<u64>() {
        Ok(h) if (1..=100_000).contains(&h) => {
            let access: Vec<String> = text("access")
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            let settings = json!({
                "retention_secs": h * 3600,
                "default_action": text("default_action"),
                "exempt_free_up": field(&form, "exempt_free_up").is_some(),
                "subject_prepend": text("subject_prepend"),
                "subject_append": text("subject_append"),
                "x_header": text("x_header"),
                "strip_attachments": field(&form, "strip_attachments").is_some(),
                "access": access,
            });
            run(
                &shared,
                &c.id,
                "quarantineconfig",
                json!({ "action": "edit", "name": name, "settings": settings }),
            )
            .await
        }
        _ => Response::error("Retention: give a number of hours (1 to 100000)."),
    };
    let back = format!("/quarantines/{}", enc(&name));
    let links = format!(
        "<a href=\"{}\" id=\"back\">Back to the settings</a>",
        esc(&back)
    );
    outcome_page(&shared, &c, &r, &links, ("Saved", "Not saved"))
}

// ----------------------------------------------------------------------------------
// Users
// ----------------------------------------------------------------------------------

const BUILTIN_ROLES: [&str; 6] = [
    "Administrator",
    "Operator",
    "Read-Only Operator",
    "Technician",
    "Help Desk User",
    "Guest",
];

async fn users(
    State(shared): St,
    Extension(sessions): Ses,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> HttpResponse {
    let c = match caller(&shared, &sessions, &headers, peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let r = run(&shared, &c.id, "userconfig", json!({ "action": "list" })).await;
    if !r.ok {
        return html(StatusCode::OK, page(&shared, &c, "Users", &refusal(&r)));
    }
    let mut b = String::from("<table id=\"users\"><thead><tr><th scope=\"col\">User</th><th scope=\"col\">Full name</th><th scope=\"col\">Role</th><th scope=\"col\">State</th><th scope=\"col\">Actions</th></tr></thead><tbody>");
    for u in r.data["users"].as_array().into_iter().flatten() {
        let name = u["name"].as_str().unwrap_or("");
        let enabled = u["enabled"].as_bool().unwrap_or(false);
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form method=\"post\" action=\"/users/{}\" class=\"inline\">{}<button type=\"submit\" name=\"op\" value=\"{}\" aria-label=\"{} {}\">{}</button> <button type=\"submit\" name=\"op\" value=\"delete\" class=\"danger\" aria-label=\"Delete {}\">Delete</button></form></td></tr>",
            esc(name),
            esc(u["full_name"].as_str().unwrap_or("")),
            esc(u["role"].as_str().unwrap_or("")),
            if enabled { "enabled" } else { "disabled" },
            enc(name),
            hidden("csrf", &c.csrf),
            if enabled { "disable" } else { "enable" },
            if enabled { "Disable" } else { "Enable" },
            esc(name),
            if enabled { "Disable" } else { "Enable" },
            esc(name),
        );
    }
    b.push_str("</tbody></table><h2>New user</h2>");
    let _ = write!(
        b,
        "<form method=\"post\" action=\"/users\" class=\"stack narrowform\">{}\
<label for=\"u-name\">User name</label><input id=\"u-name\" name=\"name\" required autocomplete=\"off\">\
<label for=\"u-full\">Full name</label><input id=\"u-full\" name=\"full_name\">\
<label for=\"u-role\">Role</label><select id=\"u-role\" name=\"role\">",
        hidden("csrf", &c.csrf)
    );
    for role in BUILTIN_ROLES {
        let _ = write!(b, "<option>{}</option>", esc(role));
    }
    b.push_str("</select><label for=\"u-password\">Password</label><input id=\"u-password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" required>\
<div><button type=\"submit\" id=\"create-user\">Create</button></div></form>");
    html(StatusCode::OK, page(&shared, &c, "Users", &b))
}

fn user_result(shared: &Shared, c: &Caller, r: &Response) -> HttpResponse {
    outcome_page(
        shared,
        c,
        r,
        "<a href=\"/users\" id=\"back\">Back to the users</a>",
        ("Done", "Not done"),
    )
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

async fn user_new(Post { shared, c, form }: Post) -> HttpResponse {
    let mut args = json!({ "action": "new" });
    for k in ["name", "full_name", "role", "password"] {
        if let Some(v) = form.iter().find(|(n, _)| n == k).map(|(_, v)| v) {
            let v = if k == "password" {
                v.as_str()
            } else {
                v.trim()
            };
            if !v.is_empty() {
                args[k] = json!(v);
            }
        }
    }
    let mut r = run(&shared, &c.id, "userconfig", args).await;
    // Never echo a password back into a page.
    if let Some(p) = r.data.get("password").and_then(Value::as_str) {
        if !p.is_empty() {
            r.text = r.text.replace(p, "(hidden)");
        }
    }
    user_result(&shared, &c, &r)
}

async fn user_op(Path(name): Path<String>, Post { shared, c, form }: Post) -> HttpResponse {
    let args = match field(&form, "op").unwrap_or("") {
        "enable" => json!({ "action": "edit", "name": name, "enabled": true }),
        "disable" => json!({ "action": "edit", "name": name, "enabled": false }),
        "delete" => json!({ "action": "delete", "name": name }),
        other => {
            return user_result(
                &shared,
                &c,
                &Response::error(format!("Unknown user operation {other:?}.")),
            )
        }
    };
    let r = run(&shared, &c.id, "userconfig", args).await;
    user_result(&shared, &c, &r)
}

async fn pvo_migration(Post { shared, c, form }: Post) -> HttpResponse {
    let mode = field(&form, "mode").unwrap_or("show");
    let r = run(
        &shared,
        &c.id,
        "pvoconfig",
        json!({ "action": "migration", "mode": mode }),
    )
    .await;
    outcome_page(&shared, &c, &r, "<a href=\"/changes\">Pending changes (commit)</a> · <a href=\"/pvo\" id=\"back\">Back to the PVO settings</a>", ("Done", "Not done"))
}

// ----------------------------------------------------------------------------------
// Outbreak: manage by rule
// ----------------------------------------------------------------------------------

async fn outbreak(
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
    // The rules of the held Outbreak messages (the newest 1,000), with their counts.
    let r = run(
        &shared,
        &c.id,
        "quarantine",
        json!({ "action": "search", "limit": 1000, "query": { "quarantine": "Outbreak" } }),
    )
    .await;
    if !r.ok {
        b.push_str(&refusal(&r));
    } else {
        let mut rules: Vec<(String, u64)> = Vec::new();
        for m in r.data["messages"].as_array().into_iter().flatten() {
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
        if rules.is_empty() {
            b.push_str("<p>No message is held in Outbreak.</p>");
        } else {
            b.push_str("<table id=\"rules\"><thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">Messages held</th><th scope=\"col\">Manage</th></tr></thead><tbody>");
            for (rule, n) in &rules {
                let _ = write!(
                    b,
                    "<tr><td><a href=\"/messages?quarantine=Outbreak&amp;reason={}\">{}</a></td><td class=\"num\">{n}</td><td><form method=\"post\" action=\"/outbreak\" class=\"inline\">{}{}\
<button type=\"submit\" name=\"what\" value=\"release\">Release all</button> <button type=\"submit\" name=\"what\" value=\"delete\" class=\"danger\">Delete all</button> \
<select name=\"by\" aria-label=\"Delay by\"><option>8h</option><option selected>24h</option><option>48h</option><option>1w</option></select> <button type=\"submit\" name=\"what\" value=\"delay\">Delay all</button></form></td></tr>",
                    enc(rule),
                    esc(rule),
                    hidden("csrf", &c.csrf),
                    hidden("rule", rule),
                );
            }
            b.push_str("</tbody></table>");
        }
    }
    let s = run(&shared, &c.id, "outbreakstatus", json!({})).await;
    b.push_str("<section aria-labelledby=\"hs\"><h2 id=\"hs\">Outbreak rules</h2>");
    b.push_str(&if s.ok { pre(&s.text) } else { refusal(&s) });
    b.push_str("</section>");
    html(StatusCode::OK, page(&shared, &c, "Outbreak", &b))
}

async fn outbreak_act(Post { shared, c, form }: Post) -> HttpResponse {
    let mut args = json!({
        "action": "manage-by-rule",
        "rule": field(&form, "rule").unwrap_or(""),
        "what": field(&form, "what").unwrap_or(""),
    });
    if let Some(by) = field(&form, "by") {
        args["by"] = json!(by);
    }
    let r = run(&shared, &c.id, "quarantine", args).await;
    outcome_page(
        &shared,
        &c,
        &r,
        "<a href=\"/outbreak\" id=\"back\">Back to Outbreak</a>",
        ("Done", "Not done"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_everything_html_cares_about() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(enc("a b&c=ü"), "a%20b%26c%3D%C3%BC");
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
}
