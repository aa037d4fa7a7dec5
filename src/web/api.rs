//! `/api/v1`: JSON over the appliance commands. Every endpoint is one or two calls of
//! `crate::commands::dispatch_as` with the token owner's [`Identity`] (origin
//! `api ADDRESS`), so the roles, the handlers and the audit trail are those of the CLI and
//! SSH. The answer is the command's `data` (200) or `{"error": text}`: 401 without a valid
//! token, 403 when the role refuses, 404 for a MID not held, 400 otherwise.

#![allow(clippy::result_large_err)] // axum responses as errors: built once per request

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use serde_json::{json, Map, Value};

use crate::admin::{Request, Response};
use crate::commands::access;
use crate::node::Shared;
use crate::users::{Identity, Origin};

type St = State<Arc<Shared>>;

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
];

/// The router, built from [`ROUTES`] (so the OpenAPI test covers every route).
pub fn routes() -> Router<Arc<Shared>> {
    let mut r = Router::new();
    for (method, path) in ROUTES {
        let h: MethodRouter<Arc<Shared>> = match *path {
            "/api/v1/openapi.json" => get(openapi),
            "/api/v1/status" => get(status),
            "/api/v1/tophosts" => get(tophosts),
            "/api/v1/quarantines" => get(quarantines),
            "/api/v1/gateways" => get(gateways),
            "/api/v1/messages" => get(search),
            "/api/v1/messages/{mid}" => get(show),
            p => {
                let action: &'static str = p.rsplit('/').next().unwrap_or_default();
                post(
                    move |s: St,
                          c: ConnectInfo<SocketAddr>,
                          h: HeaderMap,
                          m: Path<String>,
                          b: axum::body::Bytes| act(s, c, h, m, b, action),
                )
            }
        };
        assert_eq!(
            *method,
            if path.ends_with("/release")
                || path.ends_with("/delete")
                || path.ends_with("/delay")
                || path.ends_with("/move")
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
    (code, Json(json!({ "error": text.trim_end() }))).into_response()
}

/// The caller's identity from `Authorization: Bearer TOKEN`.
fn identity(
    shared: &Shared,
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
        .users
        .identity_by_token(token, Origin::Api(peer))
        .ok_or_else(|| {
            unauthorized("The API token is not valid (unknown, deleted, or its user is disabled).")
        })
}

/// Runs one command as `id`; `Err` is the HTTP answer of a failure.
async fn run(
    shared: &Arc<Shared>,
    id: &Identity,
    command: &str,
    args: Value,
) -> Result<Value, HttpResponse> {
    let req = Request {
        command: command.to_string(),
        args,
        user: String::new(),
        auth: None,
    };
    let refused = {
        let need = access::required(&req.command, &req.args, &id.user);
        access::check(need, id, shared.users.role(&id.role).as_ref()).is_err()
    };
    let resp: Response = crate::commands::dispatch_as(shared, req, id).await;
    if resp.ok {
        return Ok(resp.data);
    }
    // The role check of `access`, or a handler's refusal of a quarantine the role may
    // not access.
    let code = if refused || resp.text.contains(" has no access to quarantine") {
        StatusCode::FORBIDDEN
    } else if [
        "is not held in any quarantine",
        "There is no",
        "no quarantine named",
    ]
    .iter()
    .any(|t| resp.text.contains(t))
    {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::BAD_REQUEST
    };
    Err(error(code, &resp.text))
}

/// One command, its data as the answer.
async fn one(
    shared: Arc<Shared>,
    headers: HeaderMap,
    peer: SocketAddr,
    command: &str,
    args: Value,
) -> HttpResponse {
    let id = match identity(&shared, &headers, peer) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match run(&shared, &id, command, args).await {
        Ok(data) => Json(data).into_response(),
        Err(r) => r,
    }
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

async fn status(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
) -> HttpResponse {
    one(s, h, peer, "status", json!({})).await
}

async fn tophosts(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
    let sort = q.get("sort").cloned().unwrap_or_else(|| "active".into());
    if !["active", "conn", "delivered", "soft", "hard"].contains(&sort.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "sort: allowed: active, conn, delivered, soft, hard",
        );
    }
    one(s, h, peer, "tophosts", json!({ "sort": sort })).await
}

async fn quarantines(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
) -> HttpResponse {
    one(s, h, peer, "quarantineconfig", json!({ "action": "list" })).await
}

/// The node's PVO state; on a manager also the gateways it manages.
async fn gateways(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
) -> HttpResponse {
    let id = match identity(&s, &h, peer) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let pvo = match run(&s, &id, "pvoconfig", json!({ "action": "status" })).await {
        Ok(d) => d,
        Err(r) => return r,
    };
    let mut out = json!({ "role": s.config().role.as_str(), "pvo": pvo, "gateways": [] });
    if s.config().role == crate::config::Role::Manager {
        match run(&s, &id, "applianceconfig", json!({ "action": "list" })).await {
            Ok(d) => out["gateways"] = d.get("gateways").cloned().unwrap_or(d),
            Err(r) => return r,
        }
    }
    Json(out).into_response()
}

/// The search filters, as `quarantine search` takes them.
pub const FILTERS: [&str; 9] = [
    "quarantine",
    "sender",
    "recipient",
    "subject",
    "reason",
    "reason_kind",
    "attachment",
    "gateway",
    "order",
];

/// The integer parameters of a search (dates in Unix seconds, sizes in bytes).
pub const INTEGERS: [&str; 6] = [
    "from",
    "to",
    "attachment_min_size",
    "attachment_max_size",
    "offset",
    "limit",
];

async fn search(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> HttpResponse {
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
    one(s, h, peer, "quarantine", args).await
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

async fn show(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
    Path(mid): Path<String>,
) -> HttpResponse {
    let mid = match parse_mid(&mid) {
        Ok(m) => m,
        Err(r) => return r,
    };
    one(
        s,
        h,
        peer,
        "quarantine",
        json!({ "action": "show", "mid": mid }),
    )
    .await
}

/// release, delete, delay (`{"by": "1d"}`), move (`{"from": Q, "to": Q}`); `quarantine`
/// limits release/delete/delay to one quarantine.
async fn act(
    State(s): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    h: HeaderMap,
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
    one(s, h, peer, "quarantine", args).await
}
