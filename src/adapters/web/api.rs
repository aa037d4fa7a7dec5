//! `/api/v1`: JSON over the appliance commands. Every endpoint is one or two calls of
//! `crate::commands::dispatch_as` with the token owner's [`Identity`] (origin
//! `api ADDRESS`), so the roles, the handlers and the audit trail are those of the CLI and
//! SSH. The answer is the command's `data` (200) or `{"error": text}`: 401 without a valid
//! token, otherwise the status of the failure's kind ([`status_of`]: 403 when the role
//! refuses, 404 for a MID not held, 400 for invalid arguments...).

#![allow(clippy::result_large_err)] // axum responses as errors: built once per request

pub mod cluster;

use super::openapi::{FILTERS, INTEGERS, QUERY_INTEGERS};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::adapters::web::jobs;
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::commands::replies::{ErrorReply, Gateway, Gateways, JobList, JobStarted};
use crate::core::state::Handles;
use crate::core::users::{Identity, Origin};

/// The routes of `/api/v1` (paths as the OpenAPI document writes them, `{mid}`).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/openapi.json"),
    ("get", "/api/v1/status"),
    ("get", "/api/v1/tophosts"),
    ("get", "/api/v1/quarantines"),
    ("get", "/api/v1/gateways"),
    ("get", "/api/v1/messages"),
    ("get", "/api/v1/messages/{mid}"),
    ("post", "/api/v1/messages/{mid}/release"),
    ("post", "/api/v1/messages/{mid}/delete"),
    ("post", "/api/v1/messages/{mid}/delay"),
    ("post", "/api/v1/messages/{mid}/move"),
    ("post", "/api/v1/messages/{mid}/copy"),
    ("post", "/api/v1/messages/release"),
    ("post", "/api/v1/messages/delete"),
    ("post", "/api/v1/messages/delay"),
    ("post", "/api/v1/messages/move"),
    ("get", "/api/v1/jobs"),
    ("get", "/api/v1/jobs/{id}"),
    ("post", "/api/v1/jobs/{id}/cancel"),
    ("get", "/api/v1/featurekeys"),
    ("post", "/api/v1/featurekeys/{feature}"),
    ("post", "/api/v1/featurekeys/{feature}/remove"),
    ("get", "/api/v1/cluster"),
    ("get", "/api/v1/cluster/connstatus"),
    ("get", "/api/v1/cluster/check"),
    ("get", "/api/v1/cluster/joininfo"),
    ("get", "/api/v1/cluster/jointokens"),
    ("post", "/api/v1/cluster/create"),
    ("post", "/api/v1/cluster/join"),
    ("post", "/api/v1/cluster/addgroup"),
    ("post", "/api/v1/cluster/setgroup"),
    ("post", "/api/v1/cluster/renamegroup"),
    ("post", "/api/v1/cluster/deletegroup"),
    ("post", "/api/v1/cluster/removemachine"),
    ("post", "/api/v1/cluster/disconnect"),
    ("post", "/api/v1/cluster/reconnect"),
    ("post", "/api/v1/cluster/copysettings"),
    ("post", "/api/v1/cluster/movesettings"),
    ("post", "/api/v1/cluster/deletesettings"),
    ("post", "/api/v1/cluster/jointoken"),
    ("post", "/api/v1/cluster/jointoken-revoke"),
];

/// The keys of `POST /api/v1/featurekeys/{feature}`'s body.
pub const FEATURE_KEYS: [&str; 3] = ["key", "days", "expires"];

/// The keys of a bulk action's body, per action (besides `mids` or `query`).
pub const BULK_KEYS: [(&str, &[&str]); 4] = [
    ("release", &["quarantine"]),
    ("delete", &["quarantine"]),
    ("delay", &["quarantine", "by"]),
    ("move", &["from", "to"]),
];

/// The router, built from [`ROUTES`] (so the OpenAPI test covers every route).
pub fn routes() -> Router<Arc<Handles>> {
    let mut r = Router::new();
    for (method, path) in ROUTES {
        let h: MethodRouter<Arc<Handles>> = match *path {
            "/api/v1/openapi.json" => get(openapi),
            "/api/v1/status" => get(status),
            "/api/v1/tophosts" => get(tophosts),
            "/api/v1/quarantines" => get(quarantines),
            "/api/v1/gateways" => get(gateways),
            "/api/v1/messages" => get(search),
            "/api/v1/messages/{mid}" => get(show),
            "/api/v1/messages/{mid}/copy" => post(copy),
            "/api/v1/jobs" => get(job_list),
            "/api/v1/jobs/{id}" => get(job),
            "/api/v1/jobs/{id}/cancel" => post(job_cancel),
            "/api/v1/featurekeys" => get(featurekeys),
            "/api/v1/featurekeys/{feature}" => post(featurekey_add),
            "/api/v1/featurekeys/{feature}/remove" => post(featurekey_remove),
            "/api/v1/cluster" => get(cluster::list),
            "/api/v1/cluster/connstatus" => get(cluster::connstatus),
            "/api/v1/cluster/check" => get(cluster::check),
            "/api/v1/cluster/joininfo" => get(cluster::joininfo),
            "/api/v1/cluster/jointokens" => get(cluster::jointokens),
            p if p.starts_with("/api/v1/cluster/") => {
                let action: &'static str = p.rsplit('/').next().unwrap_or_default();
                post(move |t: Token, b: axum::body::Bytes| cluster::change(t, b, action))
            }
            p if !p.contains('{') => {
                let action: &'static str = p.rsplit('/').next().unwrap_or_default();
                post(move |t: Token, b: axum::body::Bytes| bulk(t, b, action))
            }
            p => {
                let action: &'static str = p.rsplit('/').next().unwrap_or_default();
                post(move |t: Token, m: Path<String>, b: axum::body::Bytes| act(t, m, b, action))
            }
        };
        assert_eq!(
            *method,
            if path.ends_with("/release")
                || path.ends_with("/delete")
                || path.ends_with("/delay")
                || path.ends_with("/move")
                || path.ends_with("/copy")
                || path.ends_with("/cancel")
                || path.starts_with("/api/v1/featurekeys/")
                || (path.starts_with("/api/v1/cluster/")
                    && !path.ends_with("/connstatus")
                    && !path.ends_with("/check")
                    && !path.ends_with("/joininfo")
                    && !path.ends_with("/jointokens"))
            {
                "post"
            } else {
                "get"
            },
            "{path}"
        );
        r = r.route(path, h);
    }
    r.fallback(|| async {
        error(
            StatusCode::NOT_FOUND,
            "No such endpoint; GET /api/v1/openapi.json lists them.",
        )
    })
}

fn error(code: StatusCode, text: &str) -> HttpResponse {
    let body = ErrorReply {
        error: text.trim_end().to_string(),
    };
    (code, Json(body)).into_response()
}

/// The HTTP status of a failed command, from its kind (a reply that failed without
/// saying why is a bad request).
pub fn status_of(kind: Option<ErrorKind>) -> StatusCode {
    match kind {
        Some(ErrorKind::Forbidden) => StatusCode::FORBIDDEN,
        Some(ErrorKind::NotFound) => StatusCode::NOT_FOUND,
        Some(ErrorKind::Invalid) | None => StatusCode::BAD_REQUEST,
        Some(ErrorKind::Conflict) => StatusCode::CONFLICT,
        Some(ErrorKind::Busy) => StatusCode::TOO_MANY_REQUESTS,
        Some(ErrorKind::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// The kind of a bulk job's refusal.
fn refused_kind(r: &jobs::Refused) -> ErrorKind {
    match r {
        jobs::Refused::Forbidden(_) => ErrorKind::Forbidden,
        jobs::Refused::NotFound(_) => ErrorKind::NotFound,
        jobs::Refused::Invalid(_) => ErrorKind::Invalid,
        jobs::Refused::Busy(_) => ErrorKind::Busy,
    }
}

/// The caller's identity from `Authorization: Bearer TOKEN`.
fn identity(
    shared: &Handles,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Identity, HttpResponse> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let unauthorized = |text: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, text);
        r.headers_mut().insert(
            axum::http::header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer"),
        );
        r
    };
    let Some(token) = token else {
        return Err(unauthorized(
            "Give an API token: Authorization: Bearer TOKEN (`pvo userconfig token new USER` creates one).",
        ));
    };
    shared
        .access
        .users
        .identity_by_token(token, Origin::Api(peer))
        .ok_or_else(|| {
            unauthorized("The API token is not valid (unknown, deleted, or its user is disabled).")
        })
}

/// The caller of an endpoint: the node and the identity of the request's API token
/// (`Authorization: Bearer`); without a valid token the answer is 401.
struct Token {
    s: Arc<Handles>,
    id: Identity,
}

impl axum::extract::FromRequestParts<Arc<Handles>> for Token {
    type Rejection = HttpResponse;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        shared: &Arc<Handles>,
    ) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, shared)
            .await
            .map_err(IntoResponse::into_response)?;
        let id = identity(shared, &parts.headers, peer)?;
        Ok(Token {
            s: shared.clone(),
            id,
        })
    }
}

/// Runs one command as `id`; `Err` is the HTTP answer of a failure.
async fn run(
    shared: &Arc<Handles>,
    id: &Identity,
    command: &str,
    args: Value,
) -> Result<Value, HttpResponse> {
    let req = match crate::commands::command::Command::from_parts(command, args) {
        Ok(c) => Request::new(c),
        Err(e) => return Err(error(StatusCode::BAD_REQUEST, &e.text)),
    };
    let resp: Response = crate::commands::dispatch_as(shared, req, id).await;
    if resp.ok {
        return Ok(resp.data);
    }
    Err(error(status_of(resp.kind), &resp.text))
}

/// One command, its data as the answer.
async fn one(shared: &Arc<Handles>, id: &Identity, command: &str, args: Value) -> HttpResponse {
    match run(shared, id, command, args).await {
        Ok(data) => Json(data).into_response(),
        Err(r) => r,
    }
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

async fn status(Token { s, id }: Token) -> HttpResponse {
    one(&s, &id, "status", json!({})).await
}

async fn tophosts(
    Token { s, id }: Token,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
    let sort = q.get("sort").cloned().unwrap_or_else(|| "active".into());
    if !["active", "conn", "delivered", "soft", "hard"].contains(&sort.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "sort: allowed: active, conn, delivered, soft, hard",
        );
    }
    one(&s, &id, "tophosts", json!({ "sort": sort })).await
}

async fn quarantines(Token { s, id }: Token) -> HttpResponse {
    one(&s, &id, "quarantineconfig", json!({ "action": "list" })).await
}

/// The node's PVO state; on a manager also the gateways it manages.
async fn gateways(Token { s, id }: Token) -> HttpResponse {
    let pvo = match run(&s, &id, "pvoconfig", json!({ "action": "status" })).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut out = Gateways {
        role: s.config.current().role.as_str().to_string(),
        pvo,
        gateways: Vec::new(),
        releases_waiting_total: None,
    };
    if s.config.current().role == crate::core::config::Role::Manager {
        // Each gateway's state, backlog, migration and releases (`applianceconfig status`).
        match run(&s, &id, "applianceconfig", json!({ "action": "status" })).await {
            Ok(d) => {
                let listed = d.get("gateways").cloned().unwrap_or_else(|| json!([]));
                out.gateways = match serde_json::from_value::<Vec<Gateway>>(listed) {
                    Ok(g) => g,
                    // The reply type and `cpq::gateways::status` disagree: a bug, said
                    // rather than answered outside the document.
                    Err(e) => {
                        return error(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &format!(
                                "applianceconfig status answered an unexpected gateway record: {e}"
                            ),
                        )
                    }
                };
                out.releases_waiting_total =
                    Some(d["releases_waiting_total"].as_u64().unwrap_or(0));
            }
            Err(r) => return r,
        }
    }
    Json(out).into_response()
}

async fn search(Token { s, id }: Token, Query(q): Query<HashMap<String, String>>) -> HttpResponse {
    let mut query = Map::new();
    for k in FILTERS {
        if let Some(v) = q.get(k) {
            query.insert(k.to_string(), json!(v));
        }
    }
    let mut args = json!({ "action": "search" });
    for k in INTEGERS {
        if let Some(v) = q.get(k) {
            let Some(n) = number(v) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("{k} must be a non-negative integer (dates in Unix seconds)"),
                );
            };
            if k == "offset" || k == "limit" {
                args[k] = json!(n);
            } else {
                query.insert(k.to_string(), json!(n));
            }
        }
    }
    if let Some(k) = q
        .keys()
        .find(|k| !FILTERS.contains(&k.as_str()) && !INTEGERS.contains(&k.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown parameter {k:?}; GET /api/v1/openapi.json lists them"),
        );
    }
    args["query"] = Value::Object(query);
    one(&s, &id, "quarantine", args).await
}

/// A non-negative integer that fits the document's int64.
fn number(v: &str) -> Option<u64> {
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= i64::MAX as u64)
}

fn parse_mid(mid: &str) -> Result<u64, HttpResponse> {
    number(mid).ok_or(()).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "the MID must be a non-negative integer",
        )
    })
}

async fn show(Token { s, id }: Token, Path(mid): Path<String>) -> HttpResponse {
    let mid = match parse_mid(&mid) {
        Ok(m) => m,
        Err(r) => return r,
    };
    one(
        &s,
        &id,
        "quarantine",
        json!({ "action": "show", "mid": mid }),
    )
    .await
}

/// release, delete, delay (`{"by": "1d"}`), move (`{"from": Q, "to": Q}`); `quarantine`
/// limits release/delete/delay to one quarantine.
async fn act(
    Token { s, id }: Token,
    Path(mid): Path<String>,
    body: axum::body::Bytes,
    action: &'static str,
) -> HttpResponse {
    let mid = match parse_mid(&mid) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return error(StatusCode::BAD_REQUEST, "the body must be a JSON object"),
        }
    };
    let mut args = json!({ "action": action, "mids": [mid] });
    for k in ["quarantine", "by", "from", "to"] {
        match body.get(k) {
            None | Some(Value::Null) => {}
            Some(Value::String(v)) => args[k] = json!(v),
            Some(_) => return error(StatusCode::BAD_REQUEST, &format!("{k} must be a string")),
        }
    }
    one(&s, &id, "quarantine", args).await
}

/// The machine's feature keys (`featurekey list`).
async fn featurekeys(Token { s, id }: Token) -> HttpResponse {
    one(&s, &id, "featurekey", json!({ "action": "list" })).await
}

/// A feature of the path: exactly its name (404 for anything else).
fn feature_of(name: &str) -> Result<&str, HttpResponse> {
    match name.parse::<crate::core::feature_keys::Feature>() {
        Ok(_) => Ok(name),
        Err(_) => Err(error(
            StatusCode::NOT_FOUND,
            &format!(
                "No feature {name:?}; allowed: {}.",
                crate::core::feature_keys::allowed()
            ),
        )),
    }
}

/// `featurekey add FEATURE`: `key` (a licence reference; absent: one is made), and
/// `days` or `expires` (Unix seconds; absent: the key does not expire).
async fn featurekey_add(
    Token { s, id }: Token,
    Path(feature): Path<String>,
    body: axum::body::Bytes,
) -> HttpResponse {
    let feature = match feature_of(&feature) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(k) = body.keys().find(|k| !FEATURE_KEYS.contains(&k.as_str())) {
        return bad(&format!(
            "unknown key {k:?}; allowed: {}",
            FEATURE_KEYS.join(", ")
        ));
    }
    let mut args = json!({ "action": "add", "feature": feature });
    match body.get("key") {
        None => {}
        // Given, it is the key: an empty one is refused, not taken for "make one".
        Some(Value::String(k)) => match crate::core::feature_keys::check_key(k) {
            Ok(()) => args["key"] = json!(k),
            Err(e) => return bad(&e),
        },
        Some(_) => return bad("key must be a string"),
    }
    match body.get("days") {
        None => {}
        Some(v) => match v.as_u64() {
            Some(d) => args["days"] = json!(d),
            None => return bad("days must be an integer from 1"),
        },
    }
    match body.get("expires") {
        None => {}
        Some(v) => {
            let at = v
                .as_u64()
                .filter(|t| *t <= crate::core::feature_keys::MAX_EXPIRES)
                .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t as i64).ok())
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
            match at {
                // The past is a clash with the clock, not a malformed request.
                Some(_) if v.as_u64() <= Some(crate::core::clock::unix_now()) => {
                    return error(
                        StatusCode::CONFLICT,
                        &format!(
                            "expires {v} is not in the future (it is {} now); give a later time.",
                            crate::core::clock::unix_now()
                        ),
                    )
                }
                Some(t) => args["expires"] = json!(t),
                None => return bad("expires must be a time in Unix seconds"),
            }
        }
    }
    one(&s, &id, "featurekey", args).await
}

/// `featurekey remove FEATURE`.
async fn featurekey_remove(Token { s, id }: Token, Path(feature): Path<String>) -> HttpResponse {
    let feature = match feature_of(&feature) {
        Ok(f) => f,
        Err(r) => return r,
    };
    one(
        &s,
        &id,
        "featurekey",
        json!({ "action": "remove", "feature": feature }),
    )
    .await
}

/// A JSON object body (empty: `{}`), or the 400 answer.
fn object(body: &[u8]) -> Result<Map<String, Value>, HttpResponse> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "the body must be a JSON object",
        )),
    }
}

fn bad(text: &str) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, text)
}

/// A bulk action's `query`: the filters of `GET /api/v1/messages` (no paging).
fn bulk_query(v: &Value) -> Result<Map<String, Value>, HttpResponse> {
    let Value::Object(q) = v else {
        return Err(bad("query must be an object of search filters"));
    };
    let mut out = Map::new();
    for (k, v) in q {
        if QUERY_INTEGERS.contains(&k.as_str()) {
            match v.as_u64().filter(|n| *n <= i64::MAX as u64) {
                Some(n) => {
                    out.insert(k.clone(), json!(n));
                }
                None => {
                    return Err(bad(&format!(
                        "query.{k} must be a non-negative integer (dates in Unix seconds)"
                    )))
                }
            }
        } else if FILTERS.contains(&k.as_str()) {
            let Some(t) = v.as_str() else {
                return Err(bad(&format!("query.{k} must be a string")));
            };
            let allowed: &[&str] = match k.as_str() {
                "reason_kind" => &[
                    "content filter",
                    "DLP policy",
                    "virus",
                    "outbreak rule",
                    "other",
                ],
                "order" => &[
                    "newest",
                    "oldest",
                    "largest",
                    "smallest",
                    "exit_soonest",
                    "exit_latest",
                ],
                _ => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&t) {
                return Err(bad(&format!("query.{k}: allowed: {}", allowed.join(", "))));
            }
            out.insert(k.clone(), json!(t));
        } else {
            return Err(bad(&format!(
                "query: unknown filter {k:?}; the filters of GET /api/v1/messages but offset and limit"
            )));
        }
    }
    Ok(out)
}

/// POST /api/v1/messages/{release,delete,delay,move}: `{"mids": [...]}` or
/// `{"query": {filters}}` as a background job; 202 with the job's URL.
async fn bulk(
    Token { s, id }: Token,
    body: axum::body::Bytes,
    action: &'static str,
) -> HttpResponse {
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let keys = BULK_KEYS
        .iter()
        .find(|(a, _)| *a == action)
        .map(|(_, k)| *k)
        .unwrap_or_default();
    if let Some(k) = body
        .keys()
        .find(|k| *k != "mids" && *k != "query" && !keys.contains(&k.as_str()))
    {
        return bad(&format!(
            "unknown key {k:?}; allowed: mids or query, {}",
            keys.join(", ")
        ));
    }
    let mut text = HashMap::new();
    for k in keys {
        match body.get(*k) {
            None => {}
            Some(Value::String(v)) => {
                text.insert(*k, v.clone());
            }
            Some(_) => return bad(&format!("{k} must be a string")),
        }
    }
    match action {
        "delay"
            if !["8h", "24h", "48h", "1w"].contains(&text.get("by").map_or("", |v| v.as_str())) =>
        {
            return bad("by: allowed: 8h, 24h, 48h, 1w");
        }
        "move"
            if ["from", "to"]
                .iter()
                .any(|k| text.get(k).is_none_or(|v| v.trim().is_empty())) =>
        {
            return bad("move: give from and to (quarantine names)");
        }
        _ => {}
    }
    let target = match (body.get("mids"), body.get("query")) {
        (Some(m), None) => {
            let Some(items) = m.as_array() else {
                return bad("mids must be an array of MIDs");
            };
            let mids: Option<Vec<u64>> = items
                .iter()
                .map(|v| v.as_u64().filter(|n| *n <= i64::MAX as u64))
                .collect();
            match mids {
                Some(m) if !m.is_empty() && m.len() <= jobs::MAX_MIDS => jobs::Target::Mids(m),
                Some(_) => {
                    return bad(&format!(
                        "mids: give 1 to {} MIDs (or a query)",
                        jobs::MAX_MIDS
                    ))
                }
                None => return bad("mids must be non-negative integers"),
            }
        }
        (None, Some(q)) => match bulk_query(q) {
            Ok(q) => jobs::Target::Query(q),
            Err(r) => return r,
        },
        _ => return bad("give either mids (the MIDs) or query (every result of a search)"),
    };
    let spec = jobs::Spec {
        verb: action.to_string(),
        target,
        by: text.remove("by"),
        from: text.remove("from"),
        to: text.remove("to"),
        quarantine: text.remove("quarantine"),
    };
    match jobs::start(&s, &id, spec, "/messages".into()).await {
        Ok(jid) => {
            let url = format!("/api/v1/jobs/{jid}");
            let started = JobStarted {
                job: jid,
                status_url: url.clone(),
            };
            let mut r = (StatusCode::ACCEPTED, Json(started)).into_response();
            if let Ok(v) = axum::http::HeaderValue::from_str(&url) {
                r.headers_mut().insert(axum::http::header::LOCATION, v);
            }
            r
        }
        Err(r) => error(status_of(Some(refused_kind(&r))), r.text()),
    }
}

/// GET /api/v1/jobs: the caller's jobs (an Administrator's: every job), newest first.
async fn job_list(Token { s, id }: Token) -> HttpResponse {
    let list = JobList {
        jobs: jobs::of(&s).records(&id),
    };
    Json(list).into_response()
}

const NO_JOB: &str = "There is no such job of yours (jobs are kept for an hour after they end).";

/// GET /api/v1/jobs/{id}: the progress record (another user's job: 404, except for an
/// Administrator).
async fn job(Token { s, id }: Token, Path(jid): Path<String>) -> HttpResponse {
    match jobs::of(&s).record(&jid, &id) {
        Some(rec) => Json(rec).into_response(),
        None => error(StatusCode::NOT_FOUND, NO_JOB),
    }
}

/// POST /api/v1/jobs/{id}/cancel: stops the job after the batch under way, and answers
/// once it has stopped (at most 10 s: a batch of 200 actions on a loaded machine can take
/// several seconds; after that the record still says `running` and the job stops later).
async fn job_cancel(Token { s, id }: Token, Path(jid): Path<String>) -> HttpResponse {
    let table = jobs::of(&s);
    match table.cancel(&jid, &id) {
        Ok(_) => {
            table.wait(&jid, std::time::Duration::from_secs(10)).await;
            match table.record(&jid, &id) {
                Some(rec) => Json(rec).into_response(),
                None => error(StatusCode::NOT_FOUND, NO_JOB),
            }
        }
        Err(_) => error(StatusCode::NOT_FOUND, NO_JOB),
    }
}

/// An address as the document describes it: `local@label.label` (letters, digits and
/// `._+-` before the `@`, as a dot-string: no dot at either end or next to another, which
/// `quarantine copy` would refuse; 2 to 5 labels of letters and digits after, the last
/// one starting with a letter).
pub fn simple_address(a: &str) -> bool {
    let Some((local, domain)) = a.split_once('@') else {
        return false;
    };
    let labels: Vec<&str> = domain.split('.').collect();
    (1..=64).contains(&local.len())
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && (2..=5).contains(&labels.len())
        && labels
            .iter()
            .all(|l| (1..=20).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric()))
        // The last label starts with a letter (an all-digit one is not a domain).
        && labels
            .last()
            .is_some_and(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
}

/// POST /api/v1/messages/{mid}/copy `{"to": [addresses]}`: send a copy
/// (`quarantine copy`, Administrators only); the message stays held.
async fn copy(
    Token { s, id }: Token,
    Path(mid): Path<String>,
    body: axum::body::Bytes,
) -> HttpResponse {
    let mid = match parse_mid(&mid) {
        Ok(m) => m,
        Err(r) => return r,
    };
    let body = match object(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Some(k) = body.keys().find(|k| *k != "to") {
        return bad(&format!("unknown key {k:?}; allowed: to"));
    }
    let to: Option<Vec<String>> = body
        .get("to")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or(None);
    let to = match to {
        Some(t) if !t.is_empty() && t.len() <= 100 && t.iter().all(|a| simple_address(a)) => t,
        _ => return bad("to must be an array of 1 to 100 addresses (local@domain.example)"),
    };
    match run(
        &s,
        &id,
        "quarantine",
        json!({ "action": "copy", "mid": mid, "to": to }),
    )
    .await
    {
        Ok(data) => Json(data).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_of_a_failure_is_its_kind() {
        for (kind, code) in [
            (Some(ErrorKind::Forbidden), 403),
            (Some(ErrorKind::NotFound), 404),
            (Some(ErrorKind::Invalid), 400),
            (Some(ErrorKind::Conflict), 409),
            (Some(ErrorKind::Busy), 429),
            (Some(ErrorKind::Unavailable), 503),
            (None, 400),
        ] {
            assert_eq!(status_of(kind).as_u16(), code, "{kind:?}");
        }
        let r = jobs::Refused::Busy("wait".into());
        assert_eq!(status_of(Some(refused_kind(&r))).as_u16(), 429);
        let r = jobs::Refused::NotFound("no".into());
        assert_eq!(status_of(Some(refused_kind(&r))).as_u16(), 404);
    }
}
