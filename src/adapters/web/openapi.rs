//! The OpenAPI 3.0 document of `/api/v1` (`GET /api/v1/openapi.json`). What the API
//! answers is derived from the reply types (`commands::replies`, by utoipa's `ToSchema`),
//! the very types the handlers fill, so every response has the schema of what is sent;
//! the requests (paths, parameters, bodies) are written here next to the checks of
//! `api` they describe. Tests check that it names exactly the routes of `api::ROUTES`,
//! the parameters and body keys `api` reads, and that every response has a schema whose
//! references resolve.

use serde_json::{json, Value};
use utoipa::{OpenApi, ToSchema};

pub mod cluster;

use crate::commands::replies::{
    ActDone, ActRefused, ActReply, ActResult, AttachmentRow, CopyReply, CounterTable, Counters,
    ErrorReply, FeatureKeysReply, FeatureRow, Gateway, Gateways, HeaderRow, HistoryRow,
    HitQuarantine, Job, JobList, JobStarted, LastRefusal, ListenerRow, MembershipRow, MessageReply,
    PartRow, QuarantineRow, QuarantinesReply, SearchHit, SearchReply, SelfSigned, StatusGauges,
    StatusReply, TopHost, TopHostsReply,
};
use crate::commands::replies::{
    ClusterCheckReply, ClusterConnstatus, ClusterCreated, ClusterFinding, ClusterGroup,
    ClusterHold, ClusterJoinInfo, ClusterJoinToken, ClusterJoinTokenInfo, ClusterJoinTokenRevoked,
    ClusterJoinTokens, ClusterJoined, ClusterList, ClusterMachine, ClusterMachineRemoved,
    ClusterMembersChanged, ClusterSettingsChanged, ClusterState, ClusterStatus,
};

/// The reply types, and every type they refer to, as components.
#[derive(OpenApi)]
#[openapi(components(schemas(
    StatusReply,
    ClusterState,
    SelfSigned,
    ListenerRow,
    CounterTable,
    Counters,
    StatusGauges,
    TopHostsReply,
    TopHost,
    QuarantinesReply,
    QuarantineRow,
    SearchReply,
    SearchHit,
    HitQuarantine,
    MessageReply,
    AttachmentRow,
    MembershipRow,
    HeaderRow,
    PartRow,
    HistoryRow,
    ActReply,
    ActResult,
    ActDone,
    ActRefused,
    CopyReply,
    Gateways,
    Gateway,
    LastRefusal,
    JobStarted,
    Job,
    JobList,
    FeatureKeysReply,
    FeatureRow,
    ClusterList,
    ClusterGroup,
    ClusterMachine,
    ClusterStatus,
    ClusterConnstatus,
    ClusterCheckReply,
    ClusterFinding,
    ClusterCreated,
    ClusterJoined,
    ClusterJoinInfo,
    ClusterJoinToken,
    ClusterJoinTokenInfo,
    ClusterJoinTokens,
    ClusterJoinTokenRevoked,
    ClusterMembersChanged,
    ClusterMachineRemoved,
    ClusterHold,
    ClusterSettingsChanged,
    ErrorReply
)))]
struct Replies;

/// A reference to the component of reply type `T`.
fn reply<'s, T: ToSchema<'s>>() -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", T::schema().0) })
}

/// The derived components.
fn reply_schemas() -> serde_json::Map<String, Value> {
    let doc = serde_json::to_value(Replies::openapi()).unwrap_or_default();
    match &doc["components"]["schemas"] {
        Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    }
}

fn error_responses(codes: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for c in codes {
        let what = match *c {
            "400" => "Bad request: invalid parameters, or the command failed.".to_string(),
            "401" => "No valid API token.".to_string(),
            "403" => "The role of the token's user does not allow this.".to_string(),
            "409" => "The request clashes with the current state (a feature key's expiry that is not in the future).".to_string(),
            "429" => format!(
                "The user has {} bulk actions running already: wait for one to end.",
                crate::adapters::web::jobs::RUNNING_PER_USER
            ),
            _ => "Not found (for a message: not held in any quarantine the caller can access)."
                .to_string(),
        };
        m.insert(
            c.to_string(),
            json!({ "description": what, "content": { "application/json": { "schema": reply::<ErrorReply>() } } }),
        );
    }
    Value::Object(m)
}

fn op(
    summary: &str,
    params: Value,
    (ok, schema): (&str, Value),
    body: Option<Value>,
    errors: &[&str],
) -> Value {
    let mut responses = error_responses(errors);
    responses["200"] = json!({
        "description": ok,
        "content": { "application/json": { "schema": schema } }
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
            "type": "array", "minItems": 1, "maxItems": crate::adapters::web::jobs::MAX_MIDS,
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
        "content": { "application/json": { "schema": reply::<JobStarted>() } }
    });
    json!({
        "summary": format!("{what} a selection of messages (mids) or every result of a search (query), as a background job in batches of {} (`quarantine {}`).", crate::adapters::web::jobs::BATCH, what.to_lowercase()),
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
        "content": { "application/json": { "schema": reply::<Job>() } }
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
    let mut query = serde_json::Map::new();
    for f in FILTERS {
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
    for f in QUERY_INTEGERS {
        query.insert(
            f.to_string(),
            json!({ "type": "integer", "minimum": 0, "maximum": i64::MAX, "format": "int64" }),
        );
    }
    let mut all = reply_schemas();
    all.insert(
        "Query".into(),
        json!({
            "type": "object",
            "additionalProperties": false,
            "description": "The filters of GET /api/v1/messages (dates in Unix seconds), without paging: the job acts on every result.",
            "properties": Value::Object(query)
        }),
    );
    Value::Object(all)
}

const ALL: &[&str] = &["400", "401", "403"];
const MSG: &[&str] = &["400", "401", "403", "404"];

/// The document.
/// The integer filters of a bulk action's `query` (the rest of [`FILTERS`] are strings).
pub const QUERY_INTEGERS: [&str; 4] = ["from", "to", "attachment_min_size", "attachment_max_size"];

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
            ("What was done, per quarantine.", reply::<ActReply>()),
            Some(body),
            MSG,
        );
        o["requestBody"]["required"] = json!(required);
        o
    };
    // One message's action reads a null `quarantine` as absent (a bulk action refuses it).
    let one_quarantine = json!({ "type": "string", "nullable": true, "description": "Only in this quarantine (empty, null or absent: every quarantine the message is in)." });
    let plain = json!({ "type": "object", "properties": { "quarantine": one_quarantine } });
    let delay = json!({
        "type": "object",
        "required": ["by"],
        "properties": {
            "quarantine": one_quarantine,
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
    let gateways = op(
        "The PVO state of this node (`pvoconfig status`) and, on a manager, each gateway's state, backlog, migration and releases (`applianceconfig status`).",
        json!([]),
        ("role, pvo and gateways.", reply::<Gateways>()),
        None,
        ALL,
    );
    let jobs = op(
        "The caller's bulk jobs of the last hour (an Administrator's: every job), newest first.",
        json!([]),
        ("The jobs.", reply::<JobList>()),
        None,
        &["401"],
    );
    let mut copy = op(
        "Send a copy of a quarantined message to addresses (`quarantine copy`, Administrators only); the message stays held.",
        json!([mid()]),
        ("The copy's new MID.", reply::<CopyReply>()),
        Some(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["to"],
            "properties": { "to": {
                "type": "array", "minItems": 1, "maxItems": 100,
                "items": { "type": "string", "pattern": "^(?!.*\\.\\.)[A-Za-z0-9_+-]([A-Za-z0-9._+-]{0,62}[A-Za-z0-9_+-])?@([A-Za-z0-9]{1,20}\\.){1,4}[A-Za-z][A-Za-z0-9]{0,19}$" }
            } }
        })),
        MSG,
    );
    copy["requestBody"]["required"] = json!(true);
    let feature = json!({ "name": "feature", "in": "path", "required": true,
        "description": "The feature: antivirus, outbreak or dlp.",
        "schema": { "type": "string", "enum": crate::core::feature_keys::Feature::ALL.iter().map(|f| f.name()).collect::<Vec<_>>() } });
    let featurekeys = op(
        "The feature keys of this machine: each feature with its key, until when it is valid, and whether it is on (`featurekey list`).",
        json!([]),
        ("The feature keys.", reply::<FeatureKeysReply>()),
        None,
        ALL,
    );
    let featurekey_add = op(
        "Install or renew the key of a feature on this machine (`featurekey add`): it takes effect at once. Without `key` one is made; without `days` or `expires` it does not expire.",
        json!([feature.clone()]),
        ("The feature keys after the change.", reply::<FeatureKeysReply>()),
        Some(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "key": { "type": "string", "pattern": format!("^[!-~]{{1,{}}}(?![\\s\\S])", crate::core::feature_keys::MAX_KEY),
                         "description": "The key as recorded (a licence reference): printable ASCII without spaces." },
                "days": { "type": "integer", "minimum": 1, "maximum": crate::core::feature_keys::MAX_DAYS,
                          "description": "The key works for this many days from now." },
                "expires": { "type": "integer", "minimum": 0, "maximum": crate::core::feature_keys::MAX_EXPIRES, "format": "int64",
                             "description": "When the key stops working, Unix seconds; a time that is not in the future is answered 409." }
            },
            "not": { "required": ["days", "expires"] }
        })),
        &["400", "401", "403", "404", "409"],
    );
    let featurekey_remove = op(
        "Remove the key of a feature: the feature is off on this machine at once (`featurekey remove`); 404 when it has no key.",
        json!([feature]),
        ("The feature keys after the change.", reply::<FeatureKeysReply>()),
        None,
        MSG,
    );
    let mut doc = json!({
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
            "/api/v1/status": { "get": op("Node status and counters (`status`).", json!([]), ("The status.", reply::<StatusReply>()), None, ALL) },
            "/api/v1/tophosts": { "get": op("Delivery status per destination host (`tophosts`).",
                json!([ { "name": "sort", "in": "query", "required": false, "schema": { "type": "string", "enum": ["active", "conn", "delivered", "soft", "hard"] } } ]),
                ("The destination hosts.", reply::<TopHostsReply>()), None, ALL) },
            "/api/v1/quarantines": { "get": op("The quarantines: messages, space, retention, default action (`quarantineconfig`).", json!([]), ("The quarantines and the space used.", reply::<QuarantinesReply>()), None, ALL) },
            "/api/v1/gateways": { "get": gateways },
            "/api/v1/messages": { "get": op("Search the quarantined messages (`quarantine search`).", search_params, ("One page of results.", reply::<SearchReply>()), None, MSG) },
            "/api/v1/messages/{mid}": { "get": op("A quarantined message (`quarantine show`).", json!([mid()]), ("The message.", reply::<MessageReply>()), None, MSG) },
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
            "/api/v1/featurekeys": { "get": featurekeys },
            "/api/v1/featurekeys/{feature}": { "post": featurekey_add },
            "/api/v1/featurekeys/{feature}/remove": { "post": featurekey_remove },
        }
    });
    for (path, item) in cluster_paths() {
        doc["paths"][path] = item;
    }
    doc
}

/// The answers of a cluster endpoint besides 200: its failures by kind.
fn cluster_errors(change: bool) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    let codes: &[(&str, &str)] = &[
        ("400", "Invalid arguments, or the command refused them."),
        ("401", "No valid API token."),
        ("403", "The role of the token's user does not allow this (changes need Configure, reads Monitor)."),
        ("404", "No such machine or group, or no cluster in the store."),
        ("409", "A clash with the cluster's state: a name in use, already in a cluster, changes pending, a change made meanwhile."),
        ("503", "This machine is in no cluster, or cannot reach the cluster's store now (it runs its last good configuration)."),
    ];
    for (code, what) in codes {
        if !change && *code == "409" {
            continue;
        }
        m.insert(
            code.to_string(),
            json!({ "description": what, "content": { "application/json": { "schema": reply::<ErrorReply>() } } }),
        );
    }
    m
}

/// `/api/v1/cluster`: the reads and one POST per changing action of `clusterconfig`.
fn cluster_paths() -> Vec<(String, Value)> {
    use self::cluster::{key_schema, reply_of, CHANGES};
    let read = |summary: &str, schema: Value| {
        let mut responses = cluster_errors(false);
        responses.insert(
            "200".into(),
            json!({ "description": "The command's data.", "content": { "application/json": { "schema": schema } } }),
        );
        json!({ "get": { "summary": summary, "parameters": [], "responses": responses } })
    };
    let mut out = vec![
        (
            "/api/v1/cluster".to_string(),
            read(
                "The cluster's groups and machines, each machine connected or not and the revision it runs (`clusterconfig list`).",
                reply::<ClusterList>(),
            ),
        ),
        (
            "/api/v1/cluster/connstatus".to_string(),
            read(
                "This machine's connection to the cluster's store (`clusterconfig connstatus`): `cluster` false on a machine in no cluster.",
                reply::<ClusterConnstatus>(),
            ),
        ),
        (
            "/api/v1/cluster/check".to_string(),
            read(
                "The differences between levels and machines, each with the commands that resolve it (`clustercheck`).",
                reply::<ClusterCheckReply>(),
            ),
        ),
    ];
    out.push((
        "/api/v1/cluster/joininfo".to_string(),
        read(
            "Where this member's store is and its CA, for a machine that joins (`clusterconfig joininfo`; Configure only).",
            reply::<ClusterJoinInfo>(),
        ),
    ));
    out.push((
        "/api/v1/cluster/jointokens".to_string(),
        read(
            "The join tokens that still work: who made them, when they expire, the first 8 hex digits of their hash, never a token itself (`clusterconfig jointoken list`; Configure only).",
            reply::<ClusterJoinTokens>(),
        ),
    ));
    for (action, keys, needed) in CHANGES {
        let mut props = serde_json::Map::new();
        for k in *keys {
            let (pattern, what) = key_schema(action, k);
            props.insert(
                k.to_string(),
                json!({ "type": "string", "pattern": pattern, "description": what }),
            );
        }
        let mut responses = cluster_errors(true);
        responses.insert(
            "200".into(),
            json!({ "description": "What changed.", "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{}", reply_of(action)) } } } }),
        );
        let mut body =
            json!({ "type": "object", "additionalProperties": false, "properties": props });
        if !needed.is_empty() {
            body["required"] = json!(needed);
        }
        let pending = if action.ends_with("settings") {
            " Pending until `commit`."
        } else {
            ""
        };
        out.push((
            format!("/api/v1/cluster/{action}"),
            json!({ "post": {
                "summary": format!("`clusterconfig {action}`.{pending}"),
                "parameters": [],
                "requestBody": { "required": !needed.is_empty(), "content": { "application/json": { "schema": body } } },
                "responses": responses
            } }),
        ));
    }
    out
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
        let mut routes: Vec<(String, String)> = crate::adapters::web::api::ROUTES
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

    /// Every `$ref` under `v`.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn the_document_parses_and_every_response_has_a_schema_that_resolves() {
        // What is served: the document as text, parsed back.
        let text = serde_json::to_string(&document()).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        let mut operations = 0;
        for (p, ops) in doc["paths"].as_object().unwrap() {
            for (m, o) in ops.as_object().unwrap() {
                operations += 1;
                let responses = o["responses"].as_object().unwrap();
                assert!(!responses.is_empty(), "{m} {p}");
                for (code, r) in responses {
                    let schema = &r["content"]["application/json"]["schema"];
                    assert!(
                        schema.is_object() && !schema.as_object().unwrap().is_empty(),
                        "{m} {p} {code}: no schema"
                    );
                    // A reply is a named type, not "an object" (but the document itself).
                    if p != "/api/v1/openapi.json" {
                        let r = schema["$ref"].as_str();
                        assert!(r.is_some(), "{m} {p} {code}: {schema}");
                    }
                }
            }
        }
        assert_eq!(operations, crate::adapters::web::api::ROUTES.len());
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 40, "{all:?}");
        for r in all {
            let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
            assert!(schemas.contains_key(name), "{r} does not resolve");
        }
        // The names clients and tests know.
        for name in ["Error", "Query", "Job", "JobStarted", "Gateway", "Gateways"] {
            assert!(schemas.contains_key(name), "{name}");
        }
        let gateway = &schemas["Gateway"];
        assert_eq!(
            gateway["properties"]["state"]["enum"],
            json!(["online", "backlog", "unreachable", "unknown"])
        );
        for k in ["id", "state", "mode", "backlog", "ssh_error", "checked_at"] {
            assert!(
                gateway["required"].as_array().unwrap().contains(&json!(k)),
                "{k}"
            );
        }
        assert_eq!(
            doc["paths"]["/api/v1/messages/{mid}"]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/Message"
        );
    }

    #[test]
    fn bulk_bodies_are_the_keys_the_api_reads() {
        let doc = document();
        for (action, keys) in crate::adapters::web::api::BULK_KEYS {
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
        assert_eq!(q.len(), FILTERS.len() + QUERY_INTEGERS.len());
        for a in ["a@b.example", "first.last+tag@mail.one.example"] {
            assert!(crate::adapters::web::api::simple_address(a), "{a}");
        }
        // A local part is a dot-string: no dot at either end, no two together.
        assert!(crate::adapters::web::api::simple_address("a.b@c.example"));
        for a in [
            "a.@b.example",
            ".a@b.example",
            "a..b@c.example",
            "a@b",
            "@b.example",
            "a b@c.example",
            "a@-b.example",
            "a@b..example",
        ] {
            assert!(!crate::adapters::web::api::simple_address(a), "{a}");
        }
    }

    #[test]
    fn the_feature_key_body_is_the_keys_the_api_reads() {
        let doc = document();
        let b = &doc["paths"]["/api/v1/featurekeys/{feature}"]["post"]["requestBody"]["content"]
            ["application/json"]["schema"];
        let mut props: Vec<&str> = b["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        props.sort();
        let mut want = crate::adapters::web::api::FEATURE_KEYS.to_vec();
        want.sort();
        assert_eq!(props, want);
        assert_eq!(b["additionalProperties"], false);
        assert_eq!(
            b["properties"]["key"]["pattern"],
            "^[!-~]{1,128}(?![\\s\\S])"
        );
        assert_eq!(
            doc["paths"]["/api/v1/featurekeys/{feature}/remove"]["post"]["parameters"][0]["schema"]
                ["enum"],
            json!(["antivirus", "outbreak", "dlp"])
        );
    }

    #[test]
    fn cluster_bodies_are_the_keys_the_api_reads() {
        use super::cluster::{CHANGES, PATTERNS};
        let doc = document();
        for (action, keys, needed) in CHANGES {
            let op = &doc["paths"][format!("/api/v1/cluster/{action}")]["post"];
            let b = &op["requestBody"]["content"]["application/json"]["schema"];
            let mut props: Vec<&str> = b["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut want = keys.to_vec();
            props.sort();
            want.sort();
            assert_eq!(props, want, "{action}");
            assert_eq!(b["additionalProperties"], false, "{action}");
            let required: Vec<&str> = b["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            assert_eq!(required, needed.to_vec(), "{action}");
            for p in b["properties"].as_object().unwrap().values() {
                assert!(
                    PATTERNS.contains(&p["pattern"].as_str().unwrap()),
                    "{action}"
                );
            }
            for code in ["200", "400", "401", "403", "404", "409", "503"] {
                assert!(op["responses"][code].is_object(), "{action} {code}");
            }
        }
        assert_eq!(
            doc["paths"]["/api/v1/cluster"]["get"]["responses"]["200"]["content"]
                ["application/json"]["schema"]["$ref"],
            "#/components/schemas/Cluster"
        );
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
        for f in FILTERS.iter().chain(INTEGERS.iter()) {
            assert!(params.contains(f), "{f}");
        }
        assert_eq!(params.len(), FILTERS.len() + INTEGERS.len());
    }
}
