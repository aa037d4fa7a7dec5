//! The REST API and metrics end to end: a gateway with `[web] port = 0`, API tokens made
//! with `pvo userconfig token new`, and a real HTTPS client (Python's `http.client`).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const DELIVERY: Duration = Duration::from_secs(60);

fn config(sink: &Sink) -> String {
    GatewayToml::new(sink)
        .rat(&["one.example", "two.example"])
        .web()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(OUTGOING_POLICY)
        .build()
}

/// Sends a message from 127.0.0.1 (relayed, so the outgoing policy's filter runs) to
/// `rcpt`; returns the MID.
fn send(node: &Node, rcpt: &str, subject: &str) -> u64 {
    send_relayed(node, rcpt, subject, "hello")
}

#[test]
fn api_tokens_roles_search_show_release_openapi_and_metrics() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);

    let made = pvo_json(
        &node,
        &["userconfig", "token", "new", "admin", "--name", "ci"],
    );
    let admin = made["data"]["token"].as_str().expect("token").to_string();
    assert!(admin.starts_with("pvo_"), "{made:#}");
    // Only its hash is stored.
    let store = std::fs::read_to_string(node.data_dir().join("users.json")).unwrap();
    assert!(
        !store.contains(&admin) && store.contains("\"ci\""),
        "{store}"
    );
    let listed = pvo_json(&node, &["userconfig", "token", "list", "admin"]);
    assert!(!listed.to_string().contains(&admin), "{listed:#}");

    pvo_json(
        &node,
        &["userconfig", "new", "--name", "guest", "--role", "Guest"],
    );
    let guest = new_token(&node, "guest");

    let mid = send(&node, "x@one.example", "[quarantine-test] api");
    wait_quarantined_in(&node, mid, "Policy");
    let big = send(
        &node,
        "y@two.example",
        "[quarantine-test] a longer subject makes a larger message",
    );
    wait_quarantined_in(&node, big, "Policy");

    // No token, a wrong token: 401.
    let (code, body) = https(web, "GET", "/api/v1/status", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(
        parse_json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("Bearer"),
        "{body}"
    );
    let (code, _) = https(web, "GET", "/api/v1/messages", Some("pvo_nope"), None);
    assert_eq!(code, 401);

    let (code, body) = https(web, "GET", "/api/v1/status", Some(&admin), None);
    assert_eq!(code, 200, "{body}");
    parse_json(&body);
    for path in [
        "/api/v1/tophosts",
        "/api/v1/quarantines",
        "/api/v1/gateways",
    ] {
        let (code, body) = https(web, "GET", path, Some(&admin), None);
        assert_eq!(code, 200, "{path}: {body}");
        parse_json(&body);
    }

    // Search and show.
    let (code, body) = https(
        web,
        "GET",
        "/api/v1/messages?quarantine=Policy&subject=api&limit=10",
        Some(&admin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    let found = parse_json(&body);
    let mids: Vec<u64> = found["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{found:#}"))
        .iter()
        .map(|m| m["mid"].as_u64().unwrap())
        .collect();
    assert_eq!(mids, vec![mid], "{found:#}");
    for (order, want) in [("largest", [big, mid]), ("smallest", [mid, big])] {
        let (code, body) = https(
            web,
            "GET",
            &format!("/api/v1/messages?quarantine=Policy&order={order}"),
            Some(&admin),
            None,
        );
        assert_eq!(code, 200, "{body}");
        let got: Vec<u64> = parse_json(&body)["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mid"].as_u64().unwrap())
            .collect();
        assert_eq!(got, want, "{order}: {body}");
    }
    let (code, body) = https(
        web,
        "GET",
        "/api/v1/messages?order=random",
        Some(&admin),
        None,
    );
    assert_eq!(code, 400, "{body}");
    let (code, body) = https(web, "GET", "/api/v1/messages?limit=ten", Some(&admin), None);
    assert_eq!(code, 400, "{body}");
    let (code, body) = https(
        web,
        "GET",
        &format!("/api/v1/messages/{mid}"),
        Some(&admin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    parse_json(&body);
    let (code, body) = https(web, "GET", "/api/v1/messages/999999", Some(&admin), None);
    assert_eq!(code, 404, "{body}");

    // A Guest may not release: 403 with the refusal, and nothing is delivered.
    let path = format!("/api/v1/messages/{mid}/release");
    let (code, body) = https(web, "POST", &path, Some(&guest), None);
    assert_eq!(code, 403, "{body}");
    assert!(
        parse_json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("cannot"),
        "{body}"
    );
    assert_eq!(sink.count(), 0);

    // The Administrator's token releases it: the sink receives it.
    let (code, body) = https(web, "POST", &path, Some(&admin), Some("{}"));
    assert_eq!(code, 200, "{body}");
    let got = sink.wait_for_messages(1, DELIVERY);
    assert!(got[0].text().contains("[quarantine-test] api"));

    // The audit trail says the release came over the API.
    let audit = pvo_json(&node, &["auditlog", "--mid", &mid.to_string()]);
    let entries = audit["data"]["entries"].as_array().unwrap();
    let release = entries
        .iter()
        .find(|e| e["action"] == "release" && e["outcome"] == "ok")
        .unwrap_or_else(|| panic!("no release in {audit:#}"));
    assert_eq!(release["user"], "admin", "{audit:#}");
    assert!(
        release["from"]
            .as_str()
            .unwrap()
            .starts_with("api 127.0.0.1:"),
        "{audit:#}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "release" && e["outcome"] == "refused" && e["user"] == "guest"),
        "{audit:#}"
    );

    // The OpenAPI document (no token needed) lists the paths.
    let (code, body) = https(web, "GET", "/api/v1/openapi.json", None, None);
    assert_eq!(code, 200, "{body}");
    let doc = parse_json(&body);
    assert_eq!(doc["openapi"], "3.0.3");
    for p in [
        "/api/v1/messages",
        "/api/v1/messages/{mid}/release",
        "/api/v1/status",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing");
    }

    // Metrics.
    let (code, body) = https(web, "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("pvo_messages_received_total 2\n"), "{body}");
    assert!(
        body.contains("pvo_recipients_delivered_total 1\n"),
        "{body}"
    );
    // The message was scanned: the histogram counted it.
    let scans: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("pvo_scan_seconds_count "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{body}"));
    assert!(scans >= 1, "{body}");
    assert!(
        body.contains("pvo_scan_seconds_bucket{le=\"+Inf\"} "),
        "{body}"
    );
    assert!(
        body.contains("pvo_quarantine_messages{quarantine=\"Policy\"} 1\n"),
        "{body}"
    );

    // A deleted token no longer works.
    pvo_json(&node, &["userconfig", "token", "delete", "admin", "ci"]);
    let (code, _) = https(web, "GET", "/api/v1/status", Some(&admin), None);
    assert_eq!(code, 401);
}

/// Polls a job's record until it has ended; the record.
fn job_end(web: std::net::SocketAddr, url: &str, token: &str) -> Value {
    wait_until(
        DELIVERY,
        || {
            let (code, body) = https(web, "GET", url, Some(token), None);
            assert_eq!(code, 200, "{body}");
            let rec = parse_json(&body);
            (rec["state"] != "running").then_some(rec)
        },
        || format!("the job {url} did not end"),
    )
}

/// Bulk actions over the API: a release of every result of a search as a job (202, the
/// record reaches done, the sink receives them, a message outside the search stays); a
/// Guest's bulk job refused (403) and nothing changed; another user's job is not found;
/// bodies outside the document are 400; send copy (Administrators only).
#[test]
fn api_bulk_jobs_release_by_query_guest_refused_and_copy() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    pvo_json(
        &node,
        &["userconfig", "new", "--name", "guest", "--role", "Guest"],
    );
    pvo_json(
        &node,
        &["quarantineconfig", "edit", "Policy", "--access", "Guest"],
    );
    let token = |user: &str| new_token(&node, user);
    let (admin, guest) = (token("admin"), token("guest"));
    let wave: Vec<u64> = (0..30)
        .map(|i| {
            send(
                &node,
                "x@one.example",
                &format!("[quarantine-test] wave {i}"),
            )
        })
        .collect();
    let other = send(&node, "y@two.example", "[quarantine-test] other");
    for m in wave.iter().chain([&other]) {
        wait_quarantined_in(&node, *m, "Policy");
    }
    let held = || {
        let d = pvo_json(&node, &["quarantine", "search", "--limit", "100"]);
        let mut mids: Vec<u64> = d["data"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mid"].as_u64().unwrap())
            .collect();
        mids.sort();
        mids
    };
    let all = held();
    assert_eq!(all.len(), 31);

    // The Guest: refused before anything runs, and audited as a refused release.
    let body = r#"{"query": {"subject": "wave", "quarantine": "Policy"}}"#;
    let (code, answer) = https(
        web,
        "POST",
        "/api/v1/messages/release",
        Some(&guest),
        Some(body),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(
        parse_json(&answer)["error"]
            .as_str()
            .unwrap()
            .contains("cannot"),
        "{answer}"
    );
    let (code, answer) = https(
        web,
        "POST",
        "/api/v1/messages/delete",
        Some(&guest),
        Some(&format!("{{\"mids\": [{}]}}", wave[0])),
    );
    assert_eq!(code, 403, "{answer}");
    assert_eq!(held(), all);
    let audit = pvo_json(&node, &["auditlog", "--user", "guest"]);
    let entries = audit["data"]["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "release" && e["outcome"] == "refused"),
        "{audit:#}"
    );
    assert!(entries.iter().all(|e| e["outcome"] != "ok"), "{audit:#}");

    // Bodies outside the document: 400, no job.
    for (path, body) in [
        ("/api/v1/messages/release", r#"{"mids": []}"#),
        ("/api/v1/messages/release", r#"{"mids": [1], "query": {}}"#),
        ("/api/v1/messages/release", r#"{"query": {"limit": 5}}"#),
        (
            "/api/v1/messages/release",
            r#"{"query": {"subject": "x"}, "by": "8h"}"#,
        ),
        ("/api/v1/messages/delay", r#"{"mids": [1]}"#),
        (
            "/api/v1/messages/move",
            r#"{"mids": [1], "from": "Policy"}"#,
        ),
        ("/api/v1/messages/delete", "[1, 2]"),
    ] {
        let (code, answer) = https(web, "POST", path, Some(&admin), Some(body));
        assert_eq!(code, 400, "{path} {body}: {answer}");
    }

    // The Administrator: 202 and the job's URL; it releases the 30 and only them.
    let (code, answer) = https(
        web,
        "POST",
        "/api/v1/messages/release",
        Some(&admin),
        Some(body),
    );
    assert_eq!(code, 202, "{answer}");
    let started = parse_json(&answer);
    let url = started["status_url"].as_str().unwrap().to_string();
    assert_eq!(
        url,
        format!("/api/v1/jobs/{}", started["job"].as_str().unwrap())
    );
    let rec = job_end(web, &url, &admin);
    assert_eq!(rec["state"], "done", "{rec:#}");
    assert_eq!(rec["action"], "release", "{rec:#}");
    assert_eq!(rec["target"], "search", "{rec:#}");
    assert_eq!(
        (rec["total"].as_u64(), rec["done"].as_u64()),
        (Some(30), Some(30)),
        "{rec:#}"
    );
    assert_eq!(rec["failed"], 0, "{rec:#}");
    assert_eq!(rec["user"], "admin", "{rec:#}");
    let got = sink.wait_for_messages(30, DELIVERY);
    assert!(
        got.iter().all(|m| m.text().contains("wave")),
        "a message outside the search"
    );
    assert_eq!(held(), vec![other]);
    // Each batch is one audited release naming its MIDs.
    let audit = pvo_json(&node, &["auditlog", "--mid", &wave[29].to_string()]);
    assert!(
        audit["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "release" && e["outcome"] == "ok" && e["user"] == "admin"),
        "{audit:#}"
    );

    // Another user's job: not found, and not in their list; in the owner's.
    let (code, answer) = https(web, "GET", &url, Some(&guest), None);
    assert_eq!(code, 404, "{answer}");
    let (code, answer) = https(web, "GET", "/api/v1/jobs", Some(&guest), None);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        parse_json(&answer)["jobs"],
        serde_json::json!([]),
        "{answer}"
    );
    let (code, answer) = https(web, "GET", "/api/v1/jobs", Some(&admin), None);
    assert_eq!(code, 200, "{answer}");
    assert_eq!(
        parse_json(&answer)["jobs"][0]["id"],
        started["job"],
        "{answer}"
    );
    let (code, answer) = https(web, "GET", &url, None, None);
    assert_eq!(code, 401, "{answer}");

    // Send a copy: the Guest may not; the Administrator's reaches the sink, the message
    // stays held.
    let path = format!("/api/v1/messages/{other}/copy");
    let copy = r#"{"to": ["copy@one.example"]}"#;
    let (code, answer) = https(web, "POST", &path, Some(&guest), Some(copy));
    assert_eq!(code, 403, "{answer}");
    let (code, answer) = https(
        web,
        "POST",
        &path,
        Some(&admin),
        Some(r#"{"to": ["not an address"]}"#),
    );
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = https(web, "POST", &path, Some(&admin), Some(copy));
    assert_eq!(code, 200, "{answer}");
    assert!(
        parse_json(&answer)["copy_mid"].as_u64().is_some(),
        "{answer}"
    );
    let got = sink.wait_for_messages(31, DELIVERY);
    assert!(got.iter().any(|m| m.text().contains("other")));
    assert_eq!(held(), vec![other]);
}

/// What schemathesis is told of the cluster's endpoints. They answer 503 on a machine in
/// no cluster (these tests' nodes) or one that cannot reach its cluster's store, as the
/// command says and the document describes; every other check applies to them. `create`
/// and `join` connect to the PostgreSQL their body names, so they are not run with
/// generated addresses: `e2e_cluster_web` runs them against a real store.
const SCHEMATHESIS_CONFIG: &str = r#"
[[operations]]
include-path-regex = "^/api/v1/cluster(/(connstatus|check|joininfo|addgroup|setgroup|renamegroup|deletegroup|removemachine|disconnect|reconnect|copysettings|movesettings|deletesettings|jointoken|jointoken-revoke|jointokens))?$"
checks.not_a_server_error.expected-statuses = ["2xx", "3xx", "4xx", "503"]

[[operations]]
include-path-regex = "^/api/v1/cluster/(create|join)$"
enabled = false
"#;

/// Runs schemathesis against the node's OpenAPI document with `header` on every request
/// (deterministic generation), `phases` with at most `examples` cases per operation;
/// panics with its report unless it passed.
pub(crate) fn schemathesis(
    web: std::net::SocketAddr,
    header: &str,
    who: &str,
    (phases, examples): (&str, u32),
    extra: &[&str],
) -> String {
    let started = std::time::Instant::now();
    let config = std::env::temp_dir().join(format!("pvo-schemathesis-{}.toml", std::process::id()));
    std::fs::write(&config, SCHEMATHESIS_CONFIG).expect("write the schemathesis configuration");
    let out = Command::new("schemathesis")
        .arg("--config-file")
        .arg(&config)
        .args(["run", &format!("https://{web}/api/v1/openapi.json")])
        .args(["--tls-verify", "false", "-H", header])
        .args(["--phases", phases, "--max-examples", &examples.to_string()])
        .args(["--seed", "7", "--generation-deterministic"])
        // Every check, the response bodies against their schemas included.
        .args(["--checks", "all"])
        // The server closes a keep-alive connection idle for 30 s (hyper's header read
        // timeout) without a TLS close_notify; a request sent on it meanwhile sees an
        // EOF, on a loaded machine now and then. Sent again on a new connection, as
        // clients do; a request the server itself drops fails every time.
        .args(["--request-retries", "2"])
        .args(extra)
        // Anything it writes (a .hypothesis directory) goes there, not into the work tree.
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("schemathesis: {e}; scripts/install-test-deps installs it (pip)")
        });
    eprintln!(
        "schemathesis as {who}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "schemathesis as {who} found problems:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What is held: each MID with its quarantines and their scheduled exits.
fn held_state(node: &Node) -> Vec<(u64, Vec<(String, u64)>)> {
    let d = pvo_json(node, &["quarantine", "search", "--limit", "1000"]);
    let mut out: Vec<(u64, Vec<(String, u64)>)> = d["data"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{d:#}"))
        .iter()
        .map(|m| {
            let mut qs: Vec<(String, u64)> = m["quarantines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|q| {
                    (
                        q["name"].as_str().unwrap().to_string(),
                        q["exit_at"].as_u64().unwrap(),
                    )
                })
                .collect();
            qs.sort();
            (m["mid"].as_u64().unwrap(), qs)
        })
        .collect();
    out.sort();
    out
}

/// schemathesis once per built-in role and once without a token: no 5xx, no answer
/// outside the document, no schema-valid request refused with 400, no invalid one
/// accepted. The roles that may not act (no token, Guest, Read-Only Operator,
/// Technician) changed nothing and have no successful action in the audit log; the
/// Operator and the Help Desk User, named on Policy's access list only, changed nothing
/// outside it (a message held in Virus stays as it was). The Administrator runs last.
#[test]
fn schemathesis_per_role_and_without_a_token() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    let users = [
        ("guest", "Guest"),
        ("ro", "Read-Only Operator"),
        ("tech", "Technician"),
        ("op", "Operator"),
        ("helpdesk", "Help Desk User"),
    ];
    for (name, role) in users {
        pvo_json(
            &node,
            &["userconfig", "new", "--name", name, "--role", role],
        );
    }
    pvo_json(
        &node,
        &[
            "quarantineconfig",
            "edit",
            "Policy",
            "--access",
            "Operator,Help Desk User,Guest,Read-Only Operator",
        ],
    );
    let token = |user: &str| new_token(&node, user);
    let mid = send(&node, "x@one.example", "[quarantine-test] fuzzed");
    let outside = send(&node, "y@two.example", "[quarantine-test] outside");
    for m in [mid, outside] {
        wait_quarantined_in(&node, m, "Policy");
    }
    pvo_json(
        &node,
        &[
            "quarantine",
            "move",
            "--from",
            "Policy",
            "--to",
            "Virus",
            &outside.to_string(),
        ],
    );
    let before = held_state(&node);
    assert_eq!(before.len(), 2, "{before:?}");
    let outside_before = before.iter().find(|(m, _)| *m == outside).cloned();
    assert_eq!(outside_before.as_ref().unwrap().1[0].0, "Virus");

    let audited_ok = |user: &str| -> Vec<Value> {
        let audit = pvo_json(&node, &["auditlog", "--user", user, "--limit", "100000"]);
        audit["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "ok" && e["action"] != "view")
            .cloned()
            .collect()
    };

    // The roles that may not act.
    // Each run kept short (the whole test about two minutes on two cores): the
    // coverage phase (boundaries and invalid data, the same checks for every role) for
    // the acting roles, generated cases and stateful sequences for the others.
    const LIGHT: (&str, u32) = ("examples,fuzzing,stateful", 8);
    const FULL: (&str, u32) = ("examples,coverage,fuzzing,stateful", 10);
    schemathesis(web, "X-No-Token: 1", "no token", LIGHT, &[]);
    assert_eq!(
        held_state(&node),
        before,
        "the run without a token changed something"
    );
    for (name, role) in [
        ("guest", "Guest"),
        ("ro", "Read-Only Operator"),
        ("tech", "Technician"),
    ] {
        schemathesis(
            web,
            &format!("Authorization: Bearer {}", token(name)),
            role,
            LIGHT,
            &[],
        );
        assert_eq!(held_state(&node), before, "{role} changed held messages");
        let did = audited_ok(name);
        assert!(did.is_empty(), "{role} did {did:#?}");
    }
    assert_eq!(sink.count(), 0);

    // The roles that may act, in Policy only: the message in Virus is untouched.
    for (name, role) in [("op", "Operator"), ("helpdesk", "Help Desk User")] {
        schemathesis(
            web,
            &format!("Authorization: Bearer {}", token(name)),
            role,
            FULL,
            &[],
        );
        let now = held_state(&node);
        assert_eq!(
            now.iter().find(|(m, _)| *m == outside).cloned(),
            outside_before,
            "{role} changed the message held in Virus"
        );
        for e in audited_ok(name) {
            let mids: Vec<u64> = serde_json::from_value(e["mids"].clone()).unwrap_or_default();
            assert!(
                !mids.contains(&outside) && e["quarantine"] != "Virus",
                "{role} did {e:#}"
            );
        }
    }

    schemathesis(
        web,
        &format!("Authorization: Bearer {}", token("admin")),
        "Administrator",
        ("examples,coverage,fuzzing,stateful", 20),
        &[],
    );
}

/// `GET /api/v1/gateways` on a manager (`pvo quickstart`: a gateway enrolled): each
/// gateway's state from `applianceconfig status`, with every key the document names,
/// and schemathesis finds the answer conforms to the document.
#[test]
fn api_gateways_on_a_manager_is_applianceconfig_status() {
    let Quickstart { node, data, .. } = start_quickstart(&[]);
    let manager = data.join("manager");
    let stdout = node.dir().join("node.stdout.log");
    let prefix = "  Manager web:  https://";
    let web: std::net::SocketAddr = wait_until(
        DELIVERY,
        || {
            std::fs::read_to_string(&stdout)
                .ok()?
                .lines()
                .find_map(|l| l.strip_prefix(prefix)?.split('/').next()?.parse().ok())
        },
        || format!("{prefix:?} in {}", stdout.display()),
    );
    let token = admin_token_in(&manager);

    let (code, body) = https(web, "GET", "/api/v1/gateways", Some(&token), None);
    assert_eq!(code, 200, "{body}");
    let got = parse_json(&body);
    assert_eq!(got["role"], "manager", "{got:#}");
    assert!(got["releases_waiting_total"].is_u64(), "{got:#}");
    let gateways = got["gateways"].as_array().unwrap();
    assert_eq!(gateways.len(), 1, "{got:#}");
    let (_, doc) = https(web, "GET", "/api/v1/openapi.json", None, None);
    let doc = parse_json(&doc);
    let schema = &doc["components"]["schemas"]["Gateway"];
    for k in schema["required"].as_array().unwrap() {
        let k = k.as_str().unwrap();
        assert!(gateways[0].get(k).is_some(), "{k} missing: {got:#}");
    }
    let states = schema["properties"]["state"]["enum"].as_array().unwrap();
    assert!(states.contains(&gateways[0]["state"]), "{got:#}");
    // quickstart gave the manager SSH access to its gateway: the gateway's own view
    // (central, nothing waiting in the.cpq.host) is there, read over SSH.
    let g = &gateways[0];
    assert_eq!(g["id"], "gw1", "{got:#}");
    assert_eq!(g["state"], "online", "{got:#}");
    assert_eq!(g["mode"], "central", "{got:#}");
    assert_eq!(g["backlog"], 0, "{got:#}");
    assert!(
        g["ssh_error"].is_null() && g["checked_at"].is_u64(),
        "{got:#}"
    );

    let report = schemathesis(
        web,
        &format!("Authorization: Bearer {token}"),
        "Administrator on a manager",
        ("examples,fuzzing", 5),
        &["--include-path", "/api/v1/gateways"],
    );
    assert!(report.contains("Selected: 1/"), "{report}");
}

/// `[web]` moves on commit (`interfaceconfig edit Loopback --https PORT`): the new port
/// answers HTTPS, the old one refuses, the SSH server is not restarted, API tokens still
/// work. A commit to a port another program holds is refused with the section, the
/// address and the OS error; the server stays and the change stays pending, so the same
/// commit goes through once the port is free.
#[test]
fn commit_moves_the_web_server_and_refuses_a_taken_port() {
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).ssh().web().build());
    let old = web_addr(&node);
    let token = new_token(&node, "admin");
    assert_eq!(https(old, "GET", "/metrics", None, None).0, 200);

    let new = std::net::SocketAddr::new(old.ip(), free_port());
    let edited = pvo_json(
        &node,
        &[
            "interfaceconfig",
            "edit",
            "Loopback",
            "--https",
            &new.port().to_string(),
        ],
    );
    assert!(
        edited["text"]
            .as_str()
            .unwrap()
            .contains(&format!("HTTPS on port {}", new.port())),
        "{edited:#}"
    );
    let listed = pvo_json(&node, &["interfaceconfig"]);
    assert_eq!(
        listed["data"]["interfaces"][0]["https_port"],
        new.port(),
        "{listed:#}"
    );
    // Not in force before the commit.
    assert_eq!(https(old, "GET", "/metrics", None, None).0, 200);
    pvo_json(&node, &["commit", "-m", "web moves"]);

    let (status, _) = https(new, "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let (status, body) = https(new, "GET", "/api/v1/status", Some(&token), None);
    assert_eq!(status, 200, "the token still works: {body}");
    let err = std::net::TcpStream::connect(old).expect_err("the old web port refuses");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(pvo_json(&node, &["status"])["data"]["web"], new.to_string());
    node.wait_for_log(&format!("Web stopped listening on {old}"), DELIVERY);
    node.wait_for_log(&format!("Web listening on https://{new}"), DELIVERY);
    let logs = node.mail_logs();
    assert_eq!(
        logs.matches("SSH listening on").count(),
        1,
        "the SSH server was left alone:\n{logs}"
    );

    // A port another program listens on.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    pvo_json(
        &node,
        &[
            "interfaceconfig",
            "edit",
            "Loopback",
            "--https",
            &taken.to_string(),
        ],
    );
    let (ok, text) = pvo_try(&node, &["commit", "-m", "web on a taken port"]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("[web] cannot listen on 127.0.0.1:{taken}"))
            && text.contains("Address already in use")
            && text.contains("the changes stay pending"),
        "{text}"
    );
    assert_eq!(https(new, "GET", "/metrics", None, None).0, 200);
    assert_eq!(pvo_json(&node, &["status"])["data"]["web"], new.to_string());

    // The port is free again: the pending change commits.
    drop(squatter);
    pvo_json(&node, &["commit", "-m", "web moves again"]);
    let moved = std::net::SocketAddr::new(old.ip(), taken);
    assert_eq!(https(moved, "GET", "/metrics", None, None).0, 200);
    let err = std::net::TcpStream::connect(new).expect_err("the previous web port refuses");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // Turned off: nothing listens any more.
    pvo_json(
        &node,
        &["interfaceconfig", "edit", "Loopback", "--https", "off"],
    );
    pvo_json(&node, &["commit", "-m", "web off"]);
    let err = std::net::TcpStream::connect(moved).expect_err("web is off");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert_eq!(pvo_json(&node, &["status"])["data"]["web"], Value::Null);
    // The interface SSH is on cannot be deleted from under it.
    let (ok, text) = pvo_try(&node, &["interfaceconfig", "delete", "Loopback"]);
    assert!(!ok && text.contains("the SSH service"), "{text}");
}
