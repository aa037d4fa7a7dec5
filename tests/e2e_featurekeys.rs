//! End-to-end tests of `featurekey` (feature keys per machine: docs/appliance.md,
//! Clusters): the command through the CLI, SSH and the REST API, a key's expiry taking
//! effect without a restart (a key whose `--expires` is an RFC 3339 time a few seconds
//! ahead), the DLP engine skipped without its key and back with it, and the keys kept
//! across a restart; the Feature Keys section of the web UI's Changes page in headless
//! Chromium. Anti-virus with a real clamd is in `e2e_scanning`.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::support::{
    https, initial_password, json, log_lines, new_token, new_user, openssh, parse_json, printed,
    pvo, rt, send_relayed, ssh_port, text, wait_quarantined_in, wait_until, web_addr, Browser,
    GatewayToml, Node, Sink, MATCHED_CONTENT,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const EVENT: Duration = Duration::from_secs(60);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The row of `feature` in a `featurekey` (or `status`) answer.
fn row<'a>(data: &'a Value, feature: &str) -> &'a Value {
    data["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no features: {data:#}"))
        .iter()
        .find(|f| f["feature"] == feature)
        .unwrap_or_else(|| panic!("no {feature}: {data:#}"))
}

/// A card number in the body: the outgoing policy's DLP policy `cards` holds it in
/// Policy while DLP is on.
const CARD: &str = "My card is 4111 1111 1111 1111.";

/// Waits until the sink has a message with this subject.
fn wait_delivered(sink: &Sink, subject: &str) {
    wait_until(
        EVENT,
        || {
            sink.messages()
                .iter()
                .any(|m| m.header("Subject").as_deref() == Some(subject))
                .then_some(())
        },
        || format!("{subject:?} never reached the sink"),
    );
}

/// Every refusal names what is allowed; a key that expires a few seconds ahead turns DLP
/// off at that time with one warning (no restart), a card then passes unscanned, its MID
/// logged as skipped; a renewal (`--days`) turns it on again; a restart keeps the keys
/// and says again that an expired one has expired.
#[test]
fn featurekey_refusals_expiry_without_restart_and_renewal() {
    let sink = Sink::accepting();
    let mut node = Node::start(&GatewayToml::new(&sink).extra(MATCHED_CONTENT).build());

    let listed = text(&node, &["featurekey"]);
    assert!(
        listed.contains("No feature keys recorded: every feature is on"),
        "{listed}"
    );
    for title in ["Anti-Virus", "Outbreak Filters", "Data Loss Prevention"] {
        assert!(listed.contains(title), "{listed}");
    }
    let status = json(&node, &["status"]);
    assert_eq!(row(&status, "dlp")["state"], "on", "{status:#}");
    assert_eq!(row(&status, "dlp")["configured"], true, "{status:#}");
    assert_eq!(row(&status, "antivirus")["configured"], false, "{status:#}");

    // Bad input: refused with what is allowed, nothing recorded.
    for (args, want) in [
        (
            vec!["featurekey", "add", "spam"],
            "Unknown feature \"spam\"; allowed: antivirus, outbreak, dlp.",
        ),
        (
            vec!["featurekey", "add", "dlp", "--expires", "2020-01-01"],
            "--expires 2020-01-01 is in the past",
        ),
        (
            vec!["featurekey", "add", "dlp", "--expires", "31.12.2027"],
            "is not a date: give YYYY-MM-DD",
        ),
        (
            vec!["featurekey", "add", "dlp", "--days", "0"],
            "--days must be 1 to 36500",
        ),
        (
            vec!["featurekey", "add", "dlp", "--key", "two words"],
            "printable characters without spaces",
        ),
        (
            vec![
                "featurekey",
                "add",
                "dlp",
                "--expires",
                "2030-01-01",
                "--days",
                "3",
            ],
            "cannot be used with",
        ),
        (
            vec!["featurekey", "renew", "dlp"],
            "unrecognized subcommand",
        ),
    ] {
        let out = pvo(&node, &args);
        assert!(!out.status.success(), "{args:?}: {}", out.all());
        assert!(out.all().contains(want), "{args:?}: {}", out.all());
    }
    assert!(!node.data_dir().join("featurekeys.json").exists());

    // While DLP is keyed, a card is held.
    let held = send_relayed(&node, "a@one.example", "card keyed", CARD);
    wait_quarantined_in(&node, held, "Policy");

    // A key that expires a few seconds from now.
    let mark = node.log_mark();
    let at = unix_now() + 4;
    let until = rfc3339(at);
    let out = text(
        &node,
        &[
            "featurekey",
            "add",
            "dlp",
            "--key",
            "LIC-DLP-1",
            "--expires",
            &until,
        ],
    );
    assert!(
        out.contains("Feature key for Data Loss Prevention installed (key LIC-DLP-1, valid until"),
        "{out}"
    );
    let d = json(&node, &["featurekey"]);
    assert_eq!(row(&d, "dlp")["expires"], at, "{d:#}");
    assert_eq!(row(&d, "dlp")["key"], "LIC-DLP-1", "{d:#}");
    assert_eq!(d["recorded"], true, "{d:#}");
    let expired = "Warning: The feature key for Data Loss Prevention has expired; Data Loss Prevention is off on this machine";
    node.wait_for_log_after(mark, expired, EVENT);
    assert!(unix_now() >= at, "the warning came before the expiry");
    let status = text(&node, &["status"]);
    assert!(
        status.contains("configured but off: the feature key expired at")
            && status.contains("(`featurekey add dlp`)"),
        "{status}"
    );

    let passed = send_relayed(&node, "a@one.example", "card unkeyed", CARD);
    wait_delivered(&sink, "card unkeyed");
    let log = node.wait_for_log(
        &format!("MID {passed} Data Loss Prevention skipped: no feature key on this machine"),
        EVENT,
    );
    assert!(
        !log.contains(&format!("MID {passed} quarantined")),
        "held without its key:\n{log}"
    );
    assert_eq!(log_lines(&node.log_since(mark), expired).len(), 1);

    // Renewal for 30 days: held again.
    let out = text(&node, &["featurekey", "add", "dlp", "--days", "30"]);
    assert!(
        out.contains("Feature key for Data Loss Prevention renewed (key pvo-dlp-"),
        "{out}"
    );
    let again = send_relayed(&node, "a@one.example", "card renewed", CARD);
    wait_quarantined_in(&node, again, "Policy");
    let generated = json(&node, &["featurekey"]);
    let key = row(&generated, "dlp")["key"].as_str().unwrap().to_string();
    assert!(
        key.len() == "pvo-dlp-".len() + 16 && key[8..].bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );

    // An outbreak key that expires, then a restart: the keys are kept, and the expired
    // one is said again at start.
    let at = unix_now() + 3;
    text(
        &node,
        &["featurekey", "add", "outbreak", "--expires", &rfc3339(at)],
    );
    node.wait_for_log(
        "Warning: The feature key for Outbreak Filters has expired",
        EVENT,
    );
    node.restart();
    node.wait_for_log(
        "Warning: The feature key for Outbreak Filters has expired; Outbreak Filters is off on this machine",
        EVENT,
    );
    let after = json(&node, &["featurekey"]);
    assert_eq!(row(&after, "dlp")["key"], key.as_str(), "{after:#}");
    assert_eq!(row(&after, "dlp")["active"], true, "{after:#}");
    assert_eq!(row(&after, "outbreak")["active"], false, "{after:#}");
    assert_eq!(
        row(&after, "outbreak")["state"],
        "off: the feature key expired"
    );
}

/// The same command over SSH (the CLI's grammar, parsed in the node) and the REST API:
/// list for a monitor role, add and remove for an Administrator only, 404 for a
/// feature without a key, 400 for a bad body.
#[test]
fn featurekey_over_ssh_and_the_rest_api() {
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).ssh().web().build());

    // SSH with a key for admin.
    let dir = node.dir().to_path_buf();
    let key = dir.join("fk_key");
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "fk@test", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen");
    assert!(out.status.success(), "{}", printed(&out));
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    text(
        &node,
        &["userconfig", "sshkey", "add", "admin", public.trim()],
    );
    let ssh = |args: &[&str]| {
        let out = openssh()
            .arg("-i")
            .arg(&key)
            .args(["-o", "PasswordAuthentication=no", "-p"])
            .arg(ssh_port(&node).to_string())
            .arg("admin@127.0.0.1")
            .args(args)
            .output()
            .expect("ssh");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = ssh(&["featurekey", "remove", "outbreak"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "Feature key for Outbreak Filters removed. Outbreak Filters is off on this machine."
        ),
        "{out}"
    );
    let (ok, out) = ssh(&[
        "featurekey",
        "add",
        "antivirus",
        "--key",
        "LIC-1",
        "--days",
        "10",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains("(key LIC-1, valid until"), "{out}");
    let (ok, out) = ssh(&["featurekey", "list", "--json"]);
    assert!(ok, "{out}");
    let d = parse_json(&out)["data"].clone();
    assert_eq!(row(&d, "outbreak")["keyed"], false, "{d:#}");
    assert_eq!(row(&d, "antivirus")["key"], "LIC-1", "{d:#}");
    let (ok, out) = ssh(&["featurekey", "add", "spam"]);
    assert!(
        !ok && out.contains("allowed: antivirus, outbreak, dlp"),
        "{out}"
    );
    node.wait_for_log(
        "The feature key for Outbreak Filters was removed by admin; Outbreak Filters is off on this machine",
        EVENT,
    );

    // The REST API.
    let web = web_addr(&node);
    let admin = new_token(&node, "admin");
    new_user(&node, "op", "Operator", "operator-password-1");
    let op = new_token(&node, "op");
    let (code, body) = https(web, "GET", "/api/v1/featurekeys", Some(&op), None);
    assert_eq!(code, 200, "{body}");
    let d = parse_json(&body);
    assert_eq!(row(&d, "outbreak")["state"], "off: no feature key", "{d:#}");
    let (code, body) = https(
        web,
        "POST",
        "/api/v1/featurekeys/outbreak",
        Some(&op),
        Some("{}"),
    );
    assert_eq!(code, 403, "{body}");
    let expires = unix_now() + 86_400;
    let (code, body) = https(
        web,
        "POST",
        "/api/v1/featurekeys/outbreak",
        Some(&admin),
        Some(&json!({ "key": "LIC-OUTB", "expires": expires }).to_string()),
    );
    assert_eq!(code, 200, "{body}");
    let d = parse_json(&body);
    assert_eq!(row(&d, "outbreak")["expires"], expires, "{d:#}");
    assert_eq!(row(&d, "outbreak")["active"], true, "{d:#}");
    for (path, body, want) in [
        (
            "/api/v1/featurekeys/outbreak",
            json!({ "days": 3, "expires": expires }).to_string(),
            400,
        ),
        (
            "/api/v1/featurekeys/outbreak",
            json!({ "lifetime": 3 }).to_string(),
            400,
        ),
        (
            "/api/v1/featurekeys/outbreak",
            json!({ "expires": 1 }).to_string(),
            409,
        ),
        (
            "/api/v1/featurekeys/outbreak",
            json!({ "key": "" }).to_string(),
            400,
        ),
        ("/api/v1/featurekeys/spam", "{}".to_string(), 404),
    ] {
        let (code, text) = https(web, "POST", path, Some(&admin), Some(&body));
        assert_eq!(code, want, "{path} {body}: {text}");
    }
    let (code, body) = https(
        web,
        "POST",
        "/api/v1/featurekeys/dlp/remove",
        Some(&admin),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(row(&parse_json(&body), "dlp")["keyed"], false);
    let (code, body) = https(
        web,
        "POST",
        "/api/v1/featurekeys/dlp/remove",
        Some(&admin),
        None,
    );
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("Data Loss Prevention has no feature key on this machine"));
    let (code, body) = https(web, "GET", "/api/v1/status", Some(&op), None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(row(&parse_json(&body), "dlp")["active"], false, "{body}");
}

/// The Feature Keys section of the Changes page: each feature's state, Add (a key
/// without expiry) and Remove, each answered on the page and in force at once; an
/// Operator sees the keys but its Remove is refused.
#[test]
fn web_ui_feature_keys_add_and_remove() {
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).extra(MATCHED_CONTENT).web().build());
    let base = format!("https://{}", web_addr(&node));
    let password = initial_password(&node);
    new_user(&node, "otto", "Operator", "otto-password-1");
    rt().block_on(async {
        let b = Browser::start().await;
        let login = |user: &'static str, pw: String| {
            let b = &b;
            let base = base.clone();
            async move {
                b.goto(&format!("{base}/login")).await;
                b.fill("#username", user).await;
                b.fill("#password", &pw).await;
                b.click("#login").await;
                b.text_with("main h1", "Dashboard").await;
            }
        };
        login("admin", password.clone()).await;
        b.goto(&format!("{base}/changes")).await;
        let dlp = b.text_with("#feature-dlp", "Data Loss Prevention").await;
        assert!(dlp.contains("default") && dlp.contains("on"), "{dlp}");

        b.fill("#fk-key", "LIC-WEB-1").await;
        b.click("#fk-add").await;
        let result = b.text_with("#result", "Feature key").await;
        assert!(
            result.contains("Feature key for Anti-Virus installed (key LIC-WEB-1, no expiry)"),
            "{result}"
        );

        b.goto(&format!("{base}/changes")).await;
        b.click("#remove-dlp").await;
        let result = b.text_with("#result", "removed").await;
        assert!(
            result.contains("Feature key for Data Loss Prevention removed. Data Loss Prevention is off on this machine."),
            "{result}"
        );
        b.goto(&format!("{base}/changes")).await;
        let dlp = b.text_with("#feature-dlp", "configured but off").await;
        assert!(
            dlp.contains("configured but off: no feature key (`featurekey add dlp`)"),
            "{dlp}"
        );
        assert!(b.all("#remove-dlp").await.is_empty());

        // An Operator sees them; its Remove is refused.
        b.click("header form button[type=submit]").await;
        b.find("#password").await;
        login("otto", "otto-password-1".to_string()).await;
        b.goto(&format!("{base}/changes")).await;
        b.text_with("#feature-antivirus", "LIC-WEB-1").await;
        b.click("#remove-antivirus").await;
        let refused = b.text_with("#result", "Refused").await;
        assert!(refused.contains("Role \"Operator\" cannot"), "{refused}");
        b.close().await;
    });
    let d = json(&node, &["featurekey"]);
    assert_eq!(row(&d, "antivirus")["key"], "LIC-WEB-1", "{d:#}");
    assert_eq!(row(&d, "dlp")["keyed"], false, "{d:#}");
    node.wait_for_log(
        "The feature key for Data Loss Prevention was removed by admin",
        EVENT,
    );
}
