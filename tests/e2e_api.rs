//! The REST API and metrics end to end: a gateway with `[web] port = 0`, API tokens made
//! with `pvo userconfig token new`, and a real HTTPS client (Python's `http.client`).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const DELIVERY: Duration = Duration::from_secs(60);

fn config(sink: &Sink) -> String {
    format!(
        r#"[node]
hostname = "gw1.example.com"
data_dir = "."

[[interface]]
name = "Loopback"
address = "127.0.0.1"
hostname = "gw1.example.com"

[[policy]]
name = "RELAYED"
behavior = "relay"
max_message_size = 20971520
max_recipients = 1000
max_concurrency = 600

[[listener]]
name = "IncomingMail"
interface = "Loopback"
port = 0
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

  [[listener.rat]]
  recipients = ["one.example", "two.example"]
  action = "accept"

[[smtp_route]]
domain = "ALL"
hosts = ["{sink}"]

[delivery]
default_interface = "Auto"

[tls.outbound]
default = "off"

[web]
interface = "Loopback"
port = 0

[[content_filter]]
name = "quarantine_test"
conditions = {{ subject_contains = "[quarantine-test]" }}
actions = [{{ quarantine = "Policy" }}]

[[mail_policy]]
name = "DEFAULT_OUTGOING"
direction = "outgoing"
content_filters = ["ALL"]
"#,
        sink = sink.host_port()
    )
}

fn pvo_json(node: &Node, args: &[&str]) -> Value {
    let out = Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(args)
        .arg("--json")
        .output()
        .expect("run pvo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`pvo {}` failed: {text}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Sends a message from 127.0.0.1 (relayed, so the outgoing policy's filter runs) to
/// `rcpt`; returns the MID.
fn send(node: &Node, rcpt: &str, subject: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "sender@example.org",
        &[rcpt],
        &format!("Subject: {subject}\r\n\r\nhello\r\n"),
    );
    assert_eq!(r.code, 250, "end of data: {}", r.raw());
    c.quit();
    let line = r.lines.last().cloned().unwrap_or_default();
    line.split_whitespace()
        .skip_while(|w| *w != "Message")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {line:?}"))
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
    let guest = pvo_json(&node, &["userconfig", "token", "new", "guest"])["data"]["token"]
        .as_str()
        .expect("token")
        .to_string();

    let mid = send(&node, "x@one.example", "[quarantine-test] api");
    node.wait_for_log(&format!("MID {mid} quarantined to \"Policy\""), DELIVERY);
    let big = send(
        &node,
        "y@two.example",
        "[quarantine-test] a longer subject makes a larger message",
    );
    node.wait_for_log(&format!("MID {big} quarantined to \"Policy\""), DELIVERY);

    // No token, a wrong token: 401.
    let (code, body) = https(web, "GET", "/api/v1/status", None, None);
    assert_eq!(code, 401, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("Bearer"),
        "{body}"
    );
    let (code, _) = https(web, "GET", "/api/v1/messages", Some("pvo_nope"), None);
    assert_eq!(code, 401);

    let (code, body) = https(web, "GET", "/api/v1/status", Some(&admin), None);
    assert_eq!(code, 200, "{body}");
    json(&body);
    for path in [
        "/api/v1/tophosts",
        "/api/v1/quarantines",
        "/api/v1/gateways",
    ] {
        let (code, body) = https(web, "GET", path, Some(&admin), None);
        assert_eq!(code, 200, "{path}: {body}");
        json(&body);
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
    let found = json(&body);
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
        let got: Vec<u64> = json(&body)["messages"]
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
    json(&body);
    let (code, body) = https(web, "GET", "/api/v1/messages/999999", Some(&admin), None);
    assert_eq!(code, 404, "{body}");

    // A Guest may not release: 403 with the refusal, and nothing is delivered.
    let path = format!("/api/v1/messages/{mid}/release");
    let (code, body) = https(web, "POST", &path, Some(&guest), None);
    assert_eq!(code, 403, "{body}");
    assert!(
        json(&body)["error"].as_str().unwrap().contains("cannot"),
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
    let doc = json(&body);
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

/// Runs schemathesis against the node's OpenAPI document with `header` on every request
/// (fixed seed, deterministic generation); panics with its report unless it passed.
fn schemathesis(web: std::net::SocketAddr, header: &str, who: &str) {
    let out = Command::new("schemathesis")
        .args(["run", &format!("https://{web}/api/v1/openapi.json")])
        .args(["--tls-verify", "false", "-H", header])
        .args([
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--generation-deterministic",
        ])
        // Anything it writes (a .hypothesis directory) goes there, not into the work tree.
        .current_dir(std::env::temp_dir())
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("schemathesis: {e}; scripts/install-test-deps installs it (pip)")
        });
    assert!(
        out.status.success(),
        "schemathesis as {who} found problems:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// schemathesis once per role (Administrator, Guest) and once without a token: no 5xx,
/// no answer outside the document, no schema-valid request refused with 400; and the
/// Guest's and the anonymous runs changed nothing.
#[test]
fn schemathesis_per_role_and_without_a_token() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    pvo_json(
        &node,
        &["userconfig", "new", "--name", "guest", "--role", "Guest"],
    );
    let token = |user: &str| {
        pvo_json(&node, &["userconfig", "token", "new", user])["data"]["token"]
            .as_str()
            .expect("token")
            .to_string()
    };
    let (admin, guest) = (token("admin"), token("guest"));
    let mid = send(&node, "x@one.example", "[quarantine-test] fuzzed");
    node.wait_for_log(&format!("MID {mid} quarantined to \"Policy\""), DELIVERY);

    schemathesis(web, "X-No-Token: 1", "no token");
    schemathesis(web, &format!("Authorization: Bearer {guest}"), "Guest");
    // Neither could act: the message is still held, and no action of the guest went
    // through.
    let held = pvo_json(&node, &["quarantine", "search"]);
    assert_eq!(held["data"]["messages"][0]["mid"], mid, "{held:#}");
    let audit = pvo_json(&node, &["auditlog", "--user", "guest"]);
    for e in audit["data"]["entries"].as_array().unwrap() {
        assert!(
            e["outcome"] != "ok" || e["action"] == "view",
            "the Guest did {e:#}"
        );
    }
    assert_eq!(sink.count(), 0);
    schemathesis(
        web,
        &format!("Authorization: Bearer {admin}"),
        "Administrator",
    );
}
