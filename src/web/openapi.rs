//! The OpenAPI 3.0 document of `/api/v1` (`GET /api/v1/openapi.json`), written by hand.
//! A test checks that it names exactly the routes of `api::ROUTES`.

use serde_json::{json, Value};

fn error_responses(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        let what = match *c {
            "400" => "Bad request: invalid parameters, or the command failed.",
            "401" => "No valid API token.",
            "403" => "The role of the token's user does not allow this.",
            _ => "Not found (for a message: not held in any quarantine the caller can access).",
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

fn query(name: &str, ty: &str, desc: &str) -> Value {
    let schema = if ty == "integer" {
        json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" })
    } else {
        json!({ "type": "string" })
    };
    json!({ "name": name, "in": "query", "required": false, "description": desc, "schema": schema })
}

fn mid() -> Value {
    json!({ "name": "mid", "in": "path", "required": true, "description": "The MID this node logged for the message.",
            "schema": { "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" } })
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
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": { "type": "string" } }
                }
            }
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
            "/api/v1/gateways": { "get": op("The PVO state of this node (`pvoconfig status`) and, on a manager, its gateways (`applianceconfig`).", json!([]), "role, pvo and gateways.", None, ALL) },
            "/api/v1/messages": { "get": op("Search the quarantined messages (`quarantine search`).", search_params, "One page of results.", None, MSG) },
            "/api/v1/messages/{mid}": { "get": op("A quarantined message (`quarantine show`).", json!([mid()]), "The message.", None, MSG) },
            "/api/v1/messages/{mid}/release": { "post": action("Release", plain.clone(), false) },
            "/api/v1/messages/{mid}/delete": { "post": action("Delete", plain, false) },
            "/api/v1/messages/{mid}/delay": { "post": action("Delay", delay, true) },
            "/api/v1/messages/{mid}/move": { "post": action("Move", moved, true) },
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
        // Every operation answers 200 and, but for the document itself, 401.
        for (m, p) in &routes {
            let o = &paths[p][m];
            assert!(o["responses"]["200"].is_object(), "{m} {p}");
            if p != "/api/v1/openapi.json" {
                assert!(o["responses"]["401"].is_object(), "{m} {p}");
            }
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
