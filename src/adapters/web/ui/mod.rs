//! The web UI: server-rendered HTML pages over the appliance commands. Every page and
//! every action is one or more calls of `crate::commands::dispatch_as` with the session
//! user's [`Identity`] (origin `web ADDRESS`), so roles, handlers and the audit trail
//! are those of the CLI, SSH and the REST API; a refusal is shown on the page.
//!
//! Sessions, CSRF and the login rate limit are in `super::session`. Every POST needs
//! the session's CSRF token (hidden field `csrf`) and, when the browser names one, an
//! `Origin` equal to this server.
//!
//! Pages are maud templates (`html!`), which escape every spliced value, so no value
//! reaches a page as markup by mistake (nothing here writes `PreEscaped` markup). The
//! script and the style sheet are static files (`static/`, embedded), kept by browsers
//! for a day and then revalidated by ETag; every response of the UI carries a strict
//! CSP ([`CSP`]), under which no inline script, style or event handler would run.

#![allow(clippy::result_large_err)] // axum responses as errors: built once per request

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::{self, Sessions};
use crate::commands::protocol::{Request, Response};
use crate::core::state::Handles;
use crate::core::users::{Identity, Origin};

mod admin;
mod cluster;
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

type St = State<Arc<Handles>>;
type Ses = Extension<Arc<Sessions>>;

/// The UI's style sheet: a file, so the CSP can refuse inline styles.
const CSS: &str = include_str!("static/ui.css");
/// The UI's only script (select all, a bulk form's "Starting…", job progress): a file
/// of the node's, so the CSP can refuse every inline script and event handler.
const JS: &str = include_str!("static/ui.js");

/// The Content-Security-Policy of every UI response: nothing but the node's own
/// script, style sheet and images; `connect-src 'self'` for `/ui.js` fetching a job's
/// progress; forms post only here; no framing, no `<base>`.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The UI's routes (merged into the server's router by `super::router`).
pub fn routes() -> Router<Arc<Handles>> {
    let r = Router::new()
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
        .merge(cluster::routes())
        .layer(Extension(Sessions::new()));
    secured(r)
}

/// `routes` with [`security_headers`] on every response.
fn secured<S: Clone + Send + Sync + 'static>(r: Router<S>) -> Router<S> {
    r.layer(axum::middleware::map_response(security_headers))
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

/// The security headers of every UI response (a layer on all of the UI's routes, so
/// redirects, refusals and the static files carry them too). A response that says how
/// long it may be kept (the static files) keeps that; any other is never stored.
async fn security_headers(mut r: HttpResponse) -> HttpResponse {
    let h = r.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("strict-transport-security", "max-age=31536000"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

fn html(code: StatusCode, body: Markup) -> HttpResponse {
    (
        code,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response()
}

fn redirect(to: &str) -> HttpResponse {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, to.to_string())],
        String::new(),
    )
        .into_response()
}

/// The session of the request, or the answer to send instead (to the login page).
fn caller(
    shared: &Handles,
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
    let Some(id) = shared.access.users.identity(&s.user, Origin::Web(peer)) else {
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
    shared: Arc<Handles>,
    c: Caller,
}

impl axum::extract::FromRequestParts<Arc<Handles>> for Viewer {
    type Rejection = HttpResponse;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Handles>,
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
    shared: Arc<Handles>,
    c: Caller,
    form: Vec<(String, String)>,
}

impl axum::extract::FromRequest<Arc<Handles>> for Post {
    type Rejection = HttpResponse;

    async fn from_request(
        req: axum::extract::Request,
        shared: &Arc<Handles>,
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
    shared: &Handles,
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
            html! {
                p class="err" role="alert" { "Request refused: it did not come from a page of this server (missing or wrong CSRF token, other origin, or no session). Nothing was changed." }
                p { a href="/" { "Go to the dashboard" } }
            },
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
async fn run(shared: &Arc<Handles>, id: &Identity, command: &str, args: Value) -> Response {
    match crate::commands::command::Command::from_parts(command, args) {
        Ok(c) => crate::commands::dispatch_as(shared, Request::new(c), id).await,
        Err(e) => Response::from(e),
    }
}

/// The names of the quarantines `quarantineconfig list` shows the caller, or its refusal.
async fn quarantine_names(shared: &Arc<Handles>, c: &Caller) -> Result<Vec<String>, Response> {
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
fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · PVO" }
                link rel="stylesheet" href="/ui.css";
            }
            body { main class="narrow" { h1 { (title) } (body) } }
        }
    }
}

/// A page with the navigation bar.
fn page(shared: &Handles, c: &Caller, title: &str, body: Markup) -> Markup {
    let cfg = shared.config.current();
    frame(&cfg.hostname, cfg.role.as_str(), c, title, body)
}

/// The frame of [`page`]: head, navigation bar (the node, its links, the user and
/// Log out) and the page's heading.
fn frame(host: &str, role: &str, c: &Caller, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (host) }
                link rel="stylesheet" href="/ui.css";
                script src="/ui.js" defer {}
            }
            body {
                header {
                    nav aria-label="Main" {
                        span class="brand" { "PVO " (role) " " b { (host) } }
                        a href="/" accesskey="d" { "Dashboard" }
                        a href="/messages" accesskey="m" { "Messages" }
                        a href="/delivery" accesskey="q" { "Delivery" }
                        a href="/services" accesskey="g" { "Services" }
                        a href="/cluster" accesskey="k" { "Cluster" }
                        a href="/pvo" accesskey="p" { "PVO settings" }
                        a href="/outbreak" accesskey="o" { "Outbreak" }
                        a href="/jobs" accesskey="j" { "Jobs" }
                        a href="/changes" accesskey="c" { "Changes" }
                        a href="/users" accesskey="u" { "Users" }
                        form method="post" action="/logout" class="inline right" {
                            (hidden("csrf", &c.csrf))
                            span class="who" { (c.id.user) " (" (c.id.role) ")" }
                            " "
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// A hidden form field.
fn hidden(name: &str, value: &str) -> Markup {
    html! { input type="hidden" name=(name) value=(value); }
}

fn pre(text: &str) -> Markup {
    html! { pre { (text.trim_end()) } }
}

/// The answer of a command that did not succeed, as a page fragment.
fn refusal(r: &Response) -> Markup {
    html! { div class="err" role="alert" { strong { "Refused:" } " " (pre(&r.text)) } }
}

/// How long a browser keeps a static file before it asks again. The URLs are fixed
/// (every page names `/ui.js` and `/ui.css`), so they cannot carry a version: a day,
/// then a revalidation with the ETag, which a new build's file does not match (a 304
/// costs no body).
const ASSET_MAX_AGE: &str = "public, max-age=86400";

/// The ETag of a static file: a hash of its content (a new build with the same file
/// may hash differently, which costs one download).
fn etag(body: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:016x}\"", h.finish())
}

static JS_ETAG: LazyLock<String> = LazyLock::new(|| etag(JS));
static CSS_ETAG: LazyLock<String> = LazyLock::new(|| etag(CSS));

/// A static file, or 304 when the browser's copy (`If-None-Match`) is this one.
fn asset(
    headers: &HeaderMap,
    body: &'static str,
    content_type: &'static str,
    tag: &str,
) -> HttpResponse {
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == tag || t.trim() == "*");
    let head = [
        (header::CONTENT_TYPE, content_type.to_string()),
        (header::CACHE_CONTROL, ASSET_MAX_AGE.to_string()),
        (header::ETAG, tag.to_string()),
    ];
    if fresh {
        (StatusCode::NOT_MODIFIED, head).into_response()
    } else {
        (head, body).into_response()
    }
}

async fn js(headers: HeaderMap) -> HttpResponse {
    asset(&headers, JS, "text/javascript; charset=utf-8", &JS_ETAG)
}

async fn css(headers: HeaderMap) -> HttpResponse {
    asset(&headers, CSS, "text/css; charset=utf-8", &CSS_ETAG)
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
fn json_table(rows: &[Value], caption: &str) -> Markup {
    let Some(Value::Object(first)) = rows.first() else {
        return html! { p { (caption) ": none." } };
    };
    let keys: Vec<&String> = first.keys().collect();
    html! {
        table {
            caption { (caption) }
            thead { tr { @for k in &keys { th scope="col" { (k.replace('_', " ")) } } } }
            tbody {
                @for r in rows {
                    tr { @for k in &keys { td { (cell(&r[k.as_str()])) } } }
                }
            }
        }
    }
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
    shared: &Handles,
    c: &Caller,
    r: &Response,
    links: Markup,
    (done, not_done): (&str, &str),
) -> HttpResponse {
    let b = html! {
        @if r.ok {
            div class="ok" id="result" { (pre(&r.text)) }
        } @else {
            div id="result" { (refusal(r)) }
        }
        p { (links) }
    };
    html(
        if r.ok {
            StatusCode::OK
        } else {
            StatusCode::BAD_REQUEST
        },
        page(shared, c, if r.ok { done } else { not_done }, b),
    )
}

/// Whether `commitdetail`'s answer says changes are pending: a machine alone answers
/// true or false, a cluster member what they are (an object).
pub(super) fn changes_pending(commitdetail: &Value) -> bool {
    match &commitdetail["pending"] {
        Value::Bool(b) => *b,
        p => p.is_object(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;

    const EVIL: &str = "<script>alert(1)</script>\"'";

    fn caller(user: &str, role: &str, csrf: &str) -> Caller {
        Caller {
            id: Identity {
                user: user.to_string(),
                role: role.to_string(),
                domains: Vec::new(),
                from: Origin::Local,
            },
            sid: String::new(),
            csrf: csrf.to_string(),
        }
    }

    /// The frame of every page: the host, role, user and title escaped, the one script
    /// by `src`, no inline script, style or event handler.
    #[test]
    fn the_page_frame_escapes_what_it_shows_and_runs_nothing_inline() {
        let c = caller(EVIL, EVIL, EVIL);
        let p = frame(EVIL, EVIL, &c, EVIL, html! { p { (EVIL) } }).into_string();
        assert_eq!(p.matches("<script").count(), 1, "{p}");
        assert!(p.contains("<script src=\"/ui.js\" defer></script>"), "{p}");
        assert!(!p.contains("<script>") && !p.contains("\"'"), "{p}");
        assert!(!p.contains(" style=") && !p.contains(" on"), "{p}");
        let e = "&lt;script&gt;alert(1)&lt;/script&gt;&quot;'";
        assert!(p.contains(&format!("<title>{e} · {e}</title>")), "{p}");
        assert!(
            p.contains(&format!("<span class=\"who\">{e} ({e})</span>")),
            "{p}"
        );
        assert!(p.contains(&format!("name=\"csrf\" value=\"{e}\"")), "{p}");
        assert!(
            p.contains(&format!("<main><h1>{e}</h1><p>{e}</p></main>")),
            "{p}"
        );
        let b = bare(EVIL, html! {}).into_string();
        assert!(
            !b.contains("<script") && b.contains(&format!("<h1>{e}</h1>")),
            "{b}"
        );
    }

    #[test]
    fn tables_and_refusals_escape_keys_and_values() {
        let t = json_table(&[serde_json::json!({ "a_b": EVIL })], EVIL).into_string();
        assert!(!t.contains("<script"), "{t}");
        assert!(t.contains("<th scope=\"col\">a b</th>"), "{t}");
        assert!(
            t.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;&quot;'</td>"),
            "{t}"
        );
        assert_eq!(
            json_table(&[], "Hosts").into_string(),
            "<p>Hosts: none.</p>"
        );
        let r = refusal(&Response::error(format!("{EVIL}\n"))).into_string();
        assert_eq!(
            r,
            "<div class=\"err\" role=\"alert\"><strong>Refused:</strong> <pre>&lt;script&gt;alert(1)&lt;/script&gt;&quot;'</pre></div>"
        );
    }

    async fn get(router: &Router, path: &str, etag: Option<&str>) -> HttpResponse {
        let mut req = HttpRequest::get(path);
        if let Some(t) = etag {
            req = req.header(header::IF_NONE_MATCH, t);
        }
        let mut svc = router.clone();
        tower_service::Service::call(&mut svc, req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    /// Every kind of UI response (a page, a redirect, a refusal, a static file, a 304)
    /// carries the CSP and the other security headers; only the static files may be
    /// kept by the browser.
    #[tokio::test]
    async fn every_ui_response_carries_the_csp() {
        let router = secured(
            Router::new()
                .route("/page", get_page())
                .route(
                    "/redirect",
                    axum::routing::get(|| async { redirect("/login") }),
                )
                .route("/refused", axum::routing::get(|| async { refused_csrf() }))
                .route("/ui.js", axum::routing::get(js))
                .route("/ui.css", axum::routing::get(css)),
        );
        for (path, code, stored) in [
            ("/page", StatusCode::OK, false),
            ("/redirect", StatusCode::SEE_OTHER, false),
            ("/refused", StatusCode::FORBIDDEN, false),
            ("/ui.js", StatusCode::OK, true),
            ("/ui.css", StatusCode::OK, true),
        ] {
            let r = get(&router, path, None).await;
            assert_eq!(r.status(), code, "{path}");
            let h = r.headers();
            assert_eq!(h["content-security-policy"], CSP, "{path}");
            assert_eq!(h["x-frame-options"], "DENY", "{path}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
            let cache = h[header::CACHE_CONTROL].to_str().unwrap();
            assert_eq!(cache != "no-store", stored, "{path}: {cache}");
        }
        assert!(!CSP.contains("unsafe-inline") && CSP.contains("style-src 'self'"));

        let js = get(&router, "/ui.js", None).await;
        assert_eq!(
            js.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(js.headers()[header::CACHE_CONTROL], ASSET_MAX_AGE);
        let tag = js.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get(&router, "/ui.js", Some(&tag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(again.headers()["content-security-policy"], CSP);
        let other = get(&router, "/ui.js", Some("\"0\"")).await;
        assert_eq!(
            other.status(),
            StatusCode::OK,
            "another version is sent again"
        );
        let css = get(&router, "/ui.css", None).await;
        assert_eq!(
            css.headers()[header::CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
        assert_ne!(css.headers()[header::ETAG], tag.as_str());
    }

    fn get_page() -> axum::routing::MethodRouter {
        axum::routing::get(|| async { html(StatusCode::OK, bare("Log in", html! { p { "x" } })) })
    }

    /// The static files need no inline anything: the script writes no markup or
    /// styles, and the pages use no `style=` (the CSP would refuse it).
    #[test]
    fn the_script_and_style_sheet_are_files_that_need_nothing_inline() {
        assert!(JS.contains("select-all") && JS.contains("data-poll"));
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            ".style",
            "eval(",
        ] {
            assert!(!JS.contains(banned), "{banned}");
        }
        assert!(CSS.contains("#progress"));
    }
}
