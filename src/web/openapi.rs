//! The OpenAPI 3.0 document of `/api/v1` (`GET /api/v1/openapi.json`), written by hand.
//! A test checks that it names exactly the routes of `api::ROUTES`.

use serde_json::{json, Value};

fn error_responses(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        let what = match *c {
            "400" => "Bad request: invalid parameters, or the command failed.".to_string(),
            "401" => "No valid API token.".to_string(),
            "403" => "The role of the token's user does not allow this.".to_string(),
            "429" => format!(
                "The user has {} bulk actions running already: wait for one to end.",
                crate::web::jobs::RUNNING_PER_USER
            ),
            _ => "Not found (for a message: not held in any quarantine the caller can access)."
                .to_string(),
        };
        m.insert(
            c.to_string(),
            json!({ "description": what, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } } }),
        );
    }
    Value::Object(m)
}

fn op(summary: &str, params: Value, ok: &str, body: Option<Value>, errors: &[&str]) -> Value {
    let mut responses = error_responses(errors);
    responses["200"] = json!({
        "description": ok,
        "content": { "application/json": { "schema": { "type": "object", "additionalProperties": true } } }
    });
    let mut o = json!({ "summary": summary, "parameters": params, "responses": responses });
    if let Some(b) = body {
        o["requestBody"] = json!({
            "required": false,
            "content": { "application/json": { "schema": b } }
        });
    }
    o
}

/// What `quarantine search` can apply (`pvo_quarantine::FilterError`): empty is "not
/// given"; otherwise no NUL, and a word (subject, attachment), an address or domain
/// (sender, recipient), or something besides white space (the others).
fn filter_pattern(name: &str) -> &'static str {
    match name {
        "subject" | "attachment" => "^(?![\\s\\S])|^[^\\x00]*[^\\W_][^\\x00]*$",
        "sender" | "recipient" => "^(?![\\s\\S])|^[^\\x00]*[^\\s\\x00@*][^\\x00]*$",
        _ => "^(?![\\s\\S])|^[^\\x00]*[^\\s\\x00][^\\x00]*$",
    }
}

fn query(name: &str, ty: &str, desc: &str) -> Value {
    let pattern = filter_pattern(name);
    let schema = if ty == "integer" {
        json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" })
    } else {
        json!({ "type": "string", "pattern": pattern })
    };
    json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": schema })
}

fn mid() -> Value {
    json!({ "name": "mid", "in": "path", "required": true, "description": "The MID this node logged for the message.",
            "schema": { "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" } })
}

/// A bulk action: `mids` or `query`, the keys of `keys`, answered 202 with the job.
fn bulk(what: &str, props: Value, required: &[&str]) -> Value {
    let mut p = json!({
        "mids": {
            "type": "array", "minItems": 1, "maxItems": crate::web::jobs::MAX_MIDS,
            "description": "The MIDs to act on.",
            "items": { "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" }
        },
        "query": { "$ref": "#/components/schemas/Query" }
    });
    for (k, v) in props.as_object().into_iter().flatten() {
        p[k] = v.clone();
    }
    let mut responses = error_responses(&["400", "401", "403", "404", "429"]);
    responses["202"] = json!({
        "description": "The job started; GET its status_url for the progress.",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/JobStarted" } } }
    });
    json!({
        "summary": format!("{what} a selection of messages (mids) or every result of a search (query), as a background job in batches of {} (`quarantine {}`).", crate::web::jobs::BATCH, what.to_lowercase()),
        "parameters": [],
        "requestBody": {
            "required": true,
            "content": { "application/json": { "schema": {
                "type": "object",
                "additionalProperties": false,
                "required": required,
                "properties": p,
                "oneOf": [ { "required": ["mids"] }, { "required": ["query"] } ]
            } } }
        },
        "responses": responses
    })
}

/// An operation answering the job record.
fn job_op(summary: &str) -> Value {
    let mut responses = error_responses(&["401", "404"]);
    responses["200"] = json!({
        "description": "The progress record.",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Job" } } }
    });
    json!({
        "summary": summary,
        "parameters": [ {
            "name": "id", "in": "path", "required": true,
            "description": "The job id (the `job` of the 202 answer).",
            "schema": { "type": "string", "pattern": "^[0-9]{1,19}-[0-9a-f]{16}$" }
        } ],
        "responses": responses
    })
}

fn schemas() -> Value {
    let int = json!({ "type": "integer", "minimum": 0, "format": "int64" });
    let int_or_null =
        json!({ "type": "integer", "minimum": 0, "format": "int64", "nullable": true });
    let text_or_null = json!({ "type": "string", "nullable": true });
    let mut query = serde_json::Map::new();
    for f in crate::web::api::FILTERS {
        let schema = match f {
            "reason_kind" => {
                json!({ "type": "string", "enum": ["content filter", "DLP policy", "virus", "outbreak rule", "other"] })
            }
            "order" => {
                json!({ "type": "string", "enum": ["newest", "oldest", "largest", "smallest", "exit_soonest", "exit_latest"],
                                "description": "Accepted and ignored: a job goes oldest first." })
            }
            _ => json!({ "type": "string", "pattern": filter_pattern(f) }),
        };
        query.insert(f.to_string(), schema);
    }
    for f in crate::web::api::QUERY_INTEGERS {
        query.insert(
            f.to_string(),
            json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" }),
        );
    }
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": { "error": { "type": "string" } }
        },
        "Query": {
            "type": "object",
            "additionalProperties": false,
            "description": "The filters of GET /api/v1/messages (dates in Unix seconds), without paging: the job acts on every result.",
            "properties": Value::Object(query)
        },
        "JobStarted": {
            "type": "object",
            "required": ["job", "status_url"],
            "properties": {
                "job": { "type": "string" },
                "status_url": { "type": "string", "description": "/api/v1/jobs/{id}" }
            }
        },
        "Job": {
            "type": "object",
            "required": ["id", "user", "action", "target", "description", "state", "total", "total_exact", "done", "succeeded", "failed", "refusals", "started_at", "finished_at", "cancelled", "error"],
            "properties": {
                "id": { "type": "string" },
                "user": { "type": "string", "description": "Whose job it is." },
                "action": { "type": "string", "enum": ["release", "delete", "delay", "move"] },
                "target": { "type": "string", "enum": ["selection", "search", "rule"] },
                "description": { "type": "string" },
                "state": { "type": "string", "enum": ["running", "done", "cancelled", "stopped"] },
                "total": int.clone(),
                "total_exact": { "type": "boolean", "description": "False while the total is the counting cap (at least that many)." },
                "done": { "type": "integer", "minimum": 0, "format": "int64", "description": "Messages handled (acted on or refused)." },
                "succeeded": int.clone(),
                "failed": { "type": "integer", "minimum": 0, "format": "int64", "description": "Messages refused (the audit log has each)." },
                "refusals": { "type": "array", "items": { "type": "string" }, "description": "The first refusal texts." },
                "started_at": int.clone(),
                "finished_at": int_or_null.clone(),
                "cancelled": { "type": "boolean" },
                "error": { "type": "string", "nullable": true, "description": "Why a stopped job stopped." }
            }
        },
        "Gateway": {
            "type": "object",
            "required": ["id", "address", "port", "state", "state_text", "mode", "backlog", "migration", "checked_at", "ssh_error", "transfers_received", "last_transfer_at", "last_refusal", "held_messages", "releases_waiting", "last_release_error"],
            "properties": {
                "id": { "type": "string" },
                "address": { "type": "string" },
                "port": { "type": "integer", "minimum": 0, "maximum": 65535 },
                "state": { "type": "string", "enum": ["online", "backlog", "unreachable", "unknown"] },
                "state_text": { "type": "string", "description": "The state and what to do, in a sentence." },
                "mode": { "type": "string", "nullable": true, "description": "The gateway's PVO mode, from the last check over SSH." },
                "backlog": { "type": "integer", "minimum": 0, "format": "int64", "nullable": true, "description": "Recipients queued for the.cpq.host on the gateway." },
                "migration": { "description": "The gateway's migration progress (pvoconfig status), or null." },
                "checked_at": int_or_null.clone(),
                "ssh_error": text_or_null.clone(),
                "transfers_received": int.clone(),
                "last_transfer_at": int_or_null,
                "last_refusal": {
                    "type": "object", "nullable": true,
                    "properties": { "at": { "type": "integer", "minimum": 0 }, "text": { "type": "string" } }
                },
                "held_messages": int.clone(),
                "releases_waiting": int,
                "last_release_error": text_or_null
            }
        },
        "Gateways": {
            "type": "object",
            "required": ["role", "pvo", "gateways"],
            "properties": {
                "role": { "type": "string", "enum": ["gateway", "manager"] },
                "pvo": { "type": "object", "description": "`pvoconfig status` of this node." },
                "gateways": { "type": "array", "items": { "$ref": "#/components/schemas/Gateway" }, "description": "On a manager, its gateways (`applianceconfig status`); empty on a gateway." },
                "releases_waiting_total": { "type": "integer", "minimum": 0, "description": "On a manager: releases queued for the gateways." }
            }
        }
    })
}

const ALL: &[&str] = &["400", "401", "403"];
const MSG: &[&str] = &["400", "401", "403", "404"];

/// The document.
pub fn document() -> Value {
    let search_params = json!([
        query("quarantine", "string", "Only this quarantine."),
        query("sender", "string", "Envelope sender (address or @domain)."),
        query(
            "recipient",
            "string",
            "Envelope recipient (address or @domain)."
        ),
        query("subject", "string", "Words of the subject."),
        query("from", "integer", "Received at or after (Unix seconds)."),
        query("to", "integer", "Received before (Unix seconds)."),
        query(
            "reason",
            "string",
            "Why held: filter, rule or verdict text."
        ),
        json!({ "name": "reason_kind", "in": "query", "required": false,
                "description": "The kind of reason (as `quarantine search --reason-kind`).",
                "schema": { "type": "string", "enum": ["content filter", "DLP policy", "virus", "outbreak rule", "other"] } }),
        query("attachment", "string", "An attachment file name."),
        query(
            "attachment_min_size",
            "integer",
            "An attachment of at least this many bytes."
        ),
        query(
            "attachment_max_size",
            "integer",
            "An attachment of at most this many bytes."
        ),
        json!({ "name": "order", "in": "query", "required": false,
                "description": "The order of the results (default newest).",
                "schema": { "type": "string", "enum": ["newest", "oldest", "largest", "smallest", "exit_soonest", "exit_latest"] } }),
        query("gateway", "string", "The originating gateway."),
        query("offset", "integer", "Results to skip (default 0)."),
        query(
            "limit",
            "integer",
            "Results per page (default 25, at most 10000)."
        ),
    ]);
    let quarantine = json!({ "type": "string", "description": "Only in this quarantine (empty or absent: every quarantine the message is in)." });
    let action = |what: &str, body: Value, required: bool| {
        let mut o = op(
            &format!(
                "{what} a quarantined message (`quarantine {}`).",
                what.to_lowercase()
            ),
            json!([mid()]),
            "What was done, per quarantine.",
            Some(body),
            MSG,
        );
        o["requestBody"]["required"] = json!(required);
        o
    };
    let plain = json!({ "type": "object", "properties": { "quarantine": quarantine } });
    let delay = json!({
        "type": "object",
        "required": ["by"],
        "properties": {
            "quarantine": quarantine,
            "by": { "type": "string", "enum": ["8h", "24h", "48h", "1w"], "description": "How much later the message leaves." }
        }
    });
    let moved = json!({
        "type": "object",
        "required": ["from", "to"],
        "properties": {
            "from": { "type": "string", "minLength": 1, "pattern": "\\S", "description": "The quarantine it leaves." },
            "to": { "type": "string", "minLength": 1, "pattern": "\\S", "description": "The quarantine it goes to." }
        }
    });
    let by = json!({ "type": "string", "enum": ["8h", "24h", "48h", "1w"], "description": "How much later the messages leave." });
    let name =
        |d: &str| json!({ "type": "string", "minLength": 1, "pattern": "\\S", "description": d });
    let mut gateways = op(
        "The PVO state of this node (`pvoconfig status`) and, on a manager, each gateway's state, backlog, migration and releases (`applianceconfig status`).",
        json!([]),
        "role, pvo and gateways.",
        None,
        ALL,
    );
    gateways["responses"]["200"]["content"]["application/json"]["schema"] =
        json!({ "$ref": "#/components/schemas/Gateways" });
    let mut jobs = op(
        "The caller's bulk jobs of the last hour (an Administrator's: every job), newest first.",
        json!([]),
        "The jobs.",
        None,
        &["401"],
    );
    jobs["responses"]["200"]["content"]["application/json"]["schema"] = json!({
        "type": "object",
        "required": ["jobs"],
        "properties": { "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } } }
    });
    let mut copy = op(
        "Send a copy of a quarantined message to addresses (`quarantine copy`, Administrators only); the message stays held.",
        json!([mid()]),
        "The copy's new MID.",
        Some(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["to"],
            "properties": { "to": {
                "type": "array", "minItems": 1, "maxItems": 100,
                "items": { "type": "string", "pattern": "^[A-Za-z0-9._+-]{1,64}@([A-Za-z0-9]{1,20}\\.){1,4}[A-Za-z][A-Za-z0-9]{0,19}$" }
            } }
        })),
        MSG,
    );
    copy["requestBody"]["required"] = json!(true);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "PVO REST API",
            "version": "1",
            "description": "The appliance commands of a PVO gateway or manager over HTTPS. Each answer is the `data` of the command (what `pvo COMMAND --json` prints); the roles are those of the CLI and SSH. Create a token with `pvo userconfig token new USER`."
        },
        "security": [ { "bearer": [] } ],
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas()
        },
        "paths": {
            "/api/v1/openapi.json": { "get": {
                "summary": "This document.", "security": [],
                "responses": { "200": { "description": "The OpenAPI document.", "content": { "application/json": { "schema": { "type": "object" } } } } }
            } },
            "/api/v1/status": { "get": op("Node status and counters (`status`).", json!([]), "The status.", None, ALL) },
            "/api/v1/tophosts": { "get": op("Delivery status per destination host (`tophosts`).",
                json!([ { "name": "sort", "in": "query", "required": false, "schema": { "type": "string", "enum": ["active", "conn", "delivered", "soft", "hard"] } } ]),
                "The destination hosts.", None, ALL) },
            "/api/v1/quarantines": { "get": op("The quarantines: messages, space, retention, default action (`quarantineconfig`).", json!([]), "The quarantines and the space used.", None, ALL) },
            "/api/v1/gateways": { "get": gateways },
            "/api/v1/messages": { "get": op("Search the quarantined messages (`quarantine search`).", search_params, "One page of results.", None, MSG) },
            "/api/v1/messages/{mid}": { "get": op("A quarantined message (`quarantine show`).", json!([mid()]), "The message.", None, MSG) },
            "/api/v1/messages/{mid}/release": { "post": action("Release", plain.clone(), false) },
            "/api/v1/messages/{mid}/delete": { "post": action("Delete", plain, false) },
            "/api/v1/messages/{mid}/delay": { "post": action("Delay", delay, true) },
            "/api/v1/messages/{mid}/move": { "post": action("Move", moved, true) },
            "/api/v1/messages/{mid}/copy": { "post": copy },
            "/api/v1/messages/release": { "post": bulk("Release", json!({ "quarantine": quarantine }), &[]) },
            "/api/v1/messages/delete": { "post": bulk("Delete", json!({ "quarantine": quarantine }), &[]) },
            "/api/v1/messages/delay": { "post": bulk("Delay", json!({ "quarantine": quarantine, "by": by }), &["by"]) },
            "/api/v1/messages/move": { "post": bulk("Move", json!({ "from": name("The quarantine they leave."), "to": name("The quarantine they go to.") }), &["from", "to"]) },
            "/api/v1/jobs": { "get": jobs },
            "/api/v1/jobs/{id}": { "get": job_op("The progress of a bulk job: total, done, failed, the first refusals (another user's job: 404, except for an Administrator).") },
            "/api/v1/jobs/{id}/cancel": { "post": job_op("Cancel a bulk job: it stops after the batch under way; the answer is its record.") },
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_a_route() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (p, ops) in paths {
            for m in ops.as_object().unwrap().keys() {
                documented.push((m.clone(), p.clone()));
            }
        }
        let mut routes: Vec<(String, String)> = crate::web::api::ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        documented.sort();
        routes.sort();
        assert_eq!(documented, routes);
        // Every operation answers 200 (a bulk action: 202) and, but for the document
        // itself, 401.
        for (m, p) in &routes {
            let o = &paths[p][m];
            let ok = if p.starts_with("/api/v1/messages/") && !p.contains('{') {
                "202"
            } else {
                "200"
            };
            assert!(o["responses"][ok].is_object(), "{m} {p}");
            if p != "/api/v1/openapi.json" {
                assert!(o["responses"]["401"].is_object(), "{m} {p}");
            }
        }
    }

    #[test]
    fn bulk_bodies_are_the_keys_the_api_reads() {
        let doc = document();
        for (action, keys) in crate::web::api::BULK_KEYS {
            let b = &doc["paths"][format!("/api/v1/messages/{action}")]["post"]["requestBody"]
                ["content"]["application/json"]["schema"];
            let mut props: Vec<&str> = b["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut want: Vec<&str> = keys.iter().copied().chain(["mids", "query"]).collect();
            props.sort();
            want.sort();
            assert_eq!(props, want, "{action}");
            assert_eq!(b["additionalProperties"], false, "{action}");
        }
        let q = doc["components"]["schemas"]["Query"]["properties"]
            .as_object()
            .unwrap();
        assert_eq!(
            q.len(),
            crate::web::api::FILTERS.len() + crate::web::api::QUERY_INTEGERS.len()
        );
        for a in ["a@b.example", "first.last+tag@mail.one.example"] {
            assert!(crate::web::api::simple_address(a), "{a}");
        }
        for a in [
            "a@b",
            "@b.example",
            "a b@c.example",
            "a@-b.example",
            "a@b..example",
        ] {
            assert!(!crate::web::api::simple_address(a), "{a}");
        }
    }

    #[test]
    fn search_parameters_are_the_filters_the_api_reads() {
        let doc = document();
        let params: Vec<&str> = doc["paths"]["/api/v1/messages"]["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for f in crate::web::api::FILTERS
            .iter()
            .chain(crate::web::api::INTEGERS.iter())
        {
            assert!(params.contains(f), "{f}");
        }
        assert_eq!(
            params.len(),
            crate::web::api::FILTERS.len() + crate::web::api::INTEGERS.len()
        );
    }
}
