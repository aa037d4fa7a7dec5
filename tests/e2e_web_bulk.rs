//! Bulk actions as jobs, in headless Chromium (see `support::Browser`): 1,500 messages
//! quarantined through the gateway (Postfix's `smtp-source`), "Delete all results" of a
//! search from the page, the job page followed until it says done (its progress element
//! at the total), nothing of that search left and a message outside it still held; and
//! a running job cancelled from its page (it stopped before its total, and the message
//! at the end of its list was not touched).

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const TAG: &str = "[quarantine-test]";
const FLOOD: usize = 1_500;

fn config(sink: &Sink) -> String {
    config_with(sink, "")
}

/// The gateway, `extra` appended (its outgoing mail policy filters every message).
fn config_with(sink: &Sink, extra: &str) -> String {
    let outbreak = if extra.is_empty() {
        ""
    } else {
        "outbreak = { threshold = 3 }\n"
    };
    GatewayToml::new(sink)
        .web()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(extra)
        .extra(&format!("{OUTGOING_POLICY}{outbreak}"))
        .build()
}

/// How many held messages have `word` in their subject.
fn held_with(node: &Node, word: &str) -> u64 {
    let d = pvo_json(
        node,
        &["quarantine", "search", "--subject", word, "--limit", "1"],
    );
    d["data"]["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{d:#}"))
}

/// The messages held with `word` in their subject (`quarantine search` rows).
fn messages_with(node: &Node, word: &str) -> Vec<Value> {
    let d = pvo_json(
        node,
        &[
            "quarantine",
            "search",
            "--subject",
            word,
            "--limit",
            "10000",
        ],
    );
    d["data"]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{d:#}"))
}

/// The MIDs held with `word` in their subject.
fn mids_with(node: &Node, word: &str) -> Vec<u64> {
    messages_with(node, word)
        .iter()
        .map(|m| m["mid"].as_u64().unwrap())
        .collect()
}

/// The scheduled exit of a held message (its first quarantine).
fn exit_of(node: &Node, mid: u64) -> u64 {
    let d = pvo_json(node, &["quarantine", "search", "--subject", "keeper"]);
    d["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mid"] == mid)
        .and_then(|m| m["quarantines"][0]["exit_at"].as_u64())
        .unwrap_or_else(|| panic!("MID {mid} not held: {d:#}"))
}

/// The scheduled exit of each held message with `word` in its subject.
fn exits(node: &Node, word: &str) -> std::collections::HashMap<u64, u64> {
    messages_with(node, word)
        .iter()
        .map(|m| {
            (
                m["mid"].as_u64().unwrap(),
                m["quarantines"][0]["exit_at"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// `n` messages through the gateway with `smtp-source` (20 sessions), each quarantined
/// by the tagged subject; returns once all are held.
fn flood(node: &Node, n: usize, word: &str) {
    let out = Command::new("smtp-source")
        .args(["-m", &n.to_string(), "-s", "20", "-l", "200"])
        .args(["-f", "sender@example.org", "-t", "x@one.example"])
        .args(["-M", "client.test", "-S", &format!("{TAG} {word}")])
        .arg(node.addr().to_string())
        .output()
        .expect("smtp-source (Debian postfix) must be installed");
    assert!(
        out.status.success(),
        "smtp-source: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(300),
        || (held_with(node, word) == n as u64).then_some(()),
        || format!("{} of {n} {word} messages held", held_with(node, word)),
    );
}

/// POST of a body too large for a command line (`support::https` passes it as an
/// argument): Python's http.client reads it from stdin.
fn post_big(web: std::net::SocketAddr, path: &str, token: &str, body: &str) -> (u16, String) {
    use std::io::Write as _;
    const SCRIPT: &str = r#"
import http.client, ssl, sys
host, port, path, token = sys.argv[1:5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
c.request("POST", path, body=sys.stdin.buffer.read(), headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
r = c.getresponse()
sys.stdout.write(str(r.status) + "\n" + r.read().decode("utf-8", "replace"))
"#;
    let mut child = Command::new(SYSTEM_PYTHON)
        .args([
            "-c",
            SCRIPT,
            &web.ip().to_string(),
            &web.port().to_string(),
            path,
            token,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, rest) = text.split_once('\n').expect("an HTTP answer");
    (code.trim().parse().expect("HTTP status"), rest.to_string())
}

#[test]
fn bulk_delete_of_every_result_with_progress_and_a_cancelled_job() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let base = format!("https://{}", web_addr(&node));
    let web = web_addr(&node);
    let admin_pw = initial_password(&node);
    let token = new_token(&node, "admin");

    let started = std::time::Instant::now();
    flood(&node, FLOOD, "flood");
    flood(&node, 1, "keeper");
    eprintln!(
        "{FLOOD} messages quarantined in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let keeper = mids_with(&node, "keeper")[0];

    rt().block_on(async {
        let b = Browser::start().await;
        b.goto(&format!("{base}/login")).await;
        b.fill("#username", "admin").await;
        b.fill("#password", &admin_pw).await;
        b.click("#login").await;
        b.find("#quarantines").await;

        // A job cancelled from its page: 100,000 MIDs (the held keeper last) to delay,
        // started over the API by the same user.
        let mut mids: Vec<u64> = (1..100_000).map(|i| 10_000_000 + i).collect();
        mids.push(keeper);
        let body = serde_json::json!({ "mids": mids, "by": "1w" }).to_string();
        let (code, answer) = post_big(web, "/api/v1/messages/delay", &token, &body);
        assert_eq!(code, 202, "{answer}");
        let job: Value = serde_json::from_str(&answer).unwrap();
        let url = job["status_url"].as_str().unwrap().to_string();
        let id = job["job"].as_str().unwrap().to_string();
        b.goto(&format!("{base}/jobs/{id}")).await;
        let state = b.text("#state").await;
        assert!(state.contains("Running"), "{state}");
        // The page's script follows the job without reloading the page.
        let first = b.text("#done").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while b.text("#done").await == first {
            assert!(
                std::time::Instant::now() < deadline,
                "the page did not update"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        b.click("#cancel").await;
        let state = b.text_with("#state", "Cancelled").await;
        assert!(state.contains("Cancelled"), "{state}");
        assert!(b
            .find("#cancel-form")
            .await
            .attr("hidden")
            .await
            .unwrap()
            .is_some());
        let (code, rec) = https(web, "GET", &url, Some(&token), None);
        assert_eq!(code, 200, "{rec}");
        let rec: Value = serde_json::from_str(&rec).unwrap();
        assert_eq!(rec["state"], "cancelled", "{rec:#}");
        assert_eq!(rec["total"], 100_000, "{rec:#}");
        let done = rec["done"].as_u64().unwrap();
        assert!(done < 100_000, "{rec:#}");
        assert_eq!(rec["failed"], rec["done"], "{rec:#}");
        assert!(
            rec["refusals"][0]
                .as_str()
                .unwrap()
                .contains("is not held in any quarantine"),
            "{rec:#}"
        );
        // The keeper, last in the list, was not delayed.
        let audit = pvo_json(&node, &["auditlog", "--mid", &keeper.to_string()]);
        let entries = audit["data"]["entries"].as_array().unwrap();
        assert!(!entries.iter().any(|e| e["action"] == "delay"), "{audit:#}");
        // The job is listed.
        b.goto(&format!("{base}/jobs")).await;
        let list = b.text("#jobs").await;
        assert!(list.contains("cancelled"), "{list}");

        // At most four running jobs per user: the fifth is 429; cancelled over the API.
        let mut running = Vec::new();
        for _ in 0..4 {
            let (code, answer) = post_big(web, "/api/v1/messages/delay", &token, &body);
            assert_eq!(code, 202, "{answer}");
            let job: Value = serde_json::from_str(&answer).unwrap();
            running.push(job["status_url"].as_str().unwrap().to_string());
        }
        let (code, answer) = post_big(web, "/api/v1/messages/delay", &token, &body);
        assert_eq!(code, 429, "{answer}");
        assert!(answer.contains("wait for one to end"), "{answer}");
        for url in &running {
            let (code, rec) = https(web, "POST", &format!("{url}/cancel"), Some(&token), None);
            assert_eq!(code, 200, "{rec}");
            let rec: Value = serde_json::from_str(&rec).unwrap();
            assert_eq!(rec["state"], "cancelled", "{rec:#}");
        }

        // Delay every result: the messages stay in the result, each is delayed once.
        let exits_before = exits(&node, "flood");
        b.goto(&format!("{base}/messages?subject=flood&order=exit_soonest"))
            .await;
        b.client
            .execute("document.getElementById('bulk-by').value = '1w'", vec![])
            .await
            .unwrap();
        b.click("#delay-all").await;
        let state = b.text_with("#state", "Done").await;
        assert!(state.contains("Done"), "{state}");
        let result = b.text("#result").await;
        assert!(result.contains("1500 of 1500 done, 0 failed"), "{result}");
        let exits_after = exits(&node, "flood");
        assert_eq!(exits_after.len(), FLOOD);
        for (mid, before) in &exits_before {
            let moved = exits_after[mid] - before;
            assert!(
                (6 * 86_400..8 * 86_400).contains(&moved),
                "MID {mid}: exit moved by {moved} s"
            );
        }

        // A selection: the first page of 50 moved from Policy to Virus; the keeper
        // delayed by a week.
        b.goto(&format!(
            "{base}/messages?subject=flood&quarantine=Policy&limit=50"
        ))
        .await;
        b.click("#select-all").await;
        b.client
            .execute("document.getElementById('bulk-to').value = 'Virus'", vec![])
            .await
            .unwrap();
        b.click("#move-selected").await;
        let result = b.text_with("#result", "Done").await;
        assert!(result.contains("50 of 50 done, 0 failed"), "{result}");
        let what = b.text("#what").await;
        assert!(what.contains("Move from \"Policy\" to \"Virus\""), "{what}");
        let exit_before = exit_of(&node, keeper);
        b.goto(&format!("{base}/messages?subject=keeper")).await;
        b.click("#select-all").await;
        b.client
            .execute("document.getElementById('bulk-by').value = '1w'", vec![])
            .await
            .unwrap();
        b.click("#delay-selected").await;
        let result = b.text_with("#result", "Done").await;
        assert!(result.contains("1 of 1 done, 0 failed"), "{result}");
        assert!(
            exit_of(&node, keeper) >= exit_before + 6 * 86_400,
            "the keeper's exit did not move"
        );
        let in_virus = pvo_json(
            &node,
            &[
                "quarantine",
                "search",
                "--quarantine",
                "Virus",
                "--limit",
                "1",
            ],
        );
        assert_eq!(in_virus["data"]["total"], 50, "{in_virus:#}");

        // Delete every result of a search from the search page.
        b.goto(&format!("{base}/messages?subject=flood&limit=50"))
            .await;
        let summary = b.text_with("#summary", "of 1500").await;
        assert!(summary.contains("of 1500 messages"), "{summary}");
        let clicked = std::time::Instant::now();
        b.click("#delete-all").await;
        // The job page follows the job (its script polls) until it says done.
        let state = b.text_with("#state", "Done").await;
        assert!(state.contains("Done"), "{state}");
        eprintln!(
            "{FLOOD} messages deleted by one job in {:.1} s",
            clicked.elapsed().as_secs_f64()
        );
        assert!(b.path().await.starts_with("/jobs/"), "{}", b.path().await);
        let result = b.text("#result").await;
        assert!(result.contains("1500 of 1500 done, 0 failed"), "{result}");
        // The bar as the script left it (properties, not the first HTML).
        let bar = b
            .client
            .execute(
                "const p = document.getElementById('progress'); return [p.value, p.max];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(bar, serde_json::json!([1500, 1500]));
        assert!(b
            .find("#cancel-form")
            .await
            .attr("hidden")
            .await
            .unwrap()
            .is_some());
        // Back to the search: nothing left of it.
        b.click("#back").await;
        let summary = b.text_with("#summary", "No quarantined").await;
        assert!(
            summary.contains("No quarantined messages match"),
            "{summary}"
        );
        b.close().await;
    });
    assert_eq!(held_with(&node, "flood"), 0);
    assert_eq!(mids_with(&node, "keeper"), vec![keeper]);
    // Every message of the search was deleted in batches, each one audited action.
    let audit = pvo_json(
        &node,
        &[
            "auditlog", "--user", "admin", "--action", "delete", "--limit", "1000",
        ],
    );
    let deletes = audit["data"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "delete" && e["outcome"] == "ok")
        .count();
    assert!(
        (8..=20).contains(&deletes),
        "{deletes} delete entries: {audit:#}"
    );
    assert_eq!(sink.count(), 0);
}

const RULES: &str = r#"version = "2025-06-10.1"

[[rule]]
id = "OUTB-BULK-1"
description = "The outbreak marker phrase"
threat_level = 4
body_regex = ["(?i)outbreak-marker-7"]
"#;

/// Sends one relayed message; its MID.
fn send(node: &Node, subject: &str, body: &str) -> u64 {
    send_relayed(node, "x@one.example", subject, body)
}

/// Outbreak manage-by-rule from the Outbreak page: a job that deletes every message the
/// rule holds, and nothing else.
#[test]
fn outbreak_manage_by_rule_is_a_job() {
    let rules = tempfile::Builder::new()
        .prefix("pvo-rules-")
        .tempdir()
        .unwrap();
    let file = rules.path().join("rules.toml");
    std::fs::write(&file, RULES).unwrap();
    let sink = Sink::accepting();
    let node = Node::start(&config_with(
        &sink,
        &format!("[outbreak]\nrules_file = \"{}\"\n", file.display()),
    ));
    let base = format!("https://{}", web_addr(&node));
    let admin_pw = initial_password(&node);
    let held: Vec<u64> = (0..5)
        .map(|i| send(&node, &format!("wave {i}"), "look: outbreak-marker-7"))
        .collect();
    for m in &held {
        wait_quarantined_in(&node, *m, "Outbreak");
    }
    let kept = send(&node, &format!("{TAG} kept"), "nothing to see");
    // A Guest who may see Policy.
    new_user(&node, "guest", "Guest", "guest-password-1");
    pvo_json(
        &node,
        &["quarantineconfig", "edit", "Policy", "--access", "Guest"],
    );
    wait_quarantined_in(&node, kept, "Policy");

    rt().block_on(async {
        let b = Browser::start().await;
        b.goto(&format!("{base}/login")).await;
        b.fill("#username", "admin").await;
        b.fill("#password", &admin_pw).await;
        b.click("#login").await;
        b.find("#quarantines").await;
        b.goto(&format!("{base}/outbreak")).await;
        let rules = b.text("#rules").await;
        assert!(
            rules.contains("OUTB-BULK-1") && rules.contains('5'),
            "{rules}"
        );
        b.click("#rules button[value=delete]").await;
        let state = b.text_with("#state", "Done").await;
        assert!(state.contains("Done"), "{state}");
        let result = b.text("#result").await;
        assert!(result.contains("5 of 5 done, 0 failed"), "{result}");
        let what = b.text("#what").await;
        assert!(what.contains("OUTB-BULK-1"), "{what}");
        b.click("#back").await;
        let said = b.text_with("main", "No message is held in Outbreak").await;
        assert!(said.contains("No message is held in Outbreak"), "{said}");

        // A Guest's bulk action from the search page: refused, nothing changed.
        b.click("header form button[type=submit]").await;
        b.find("#password").await;
        b.fill("#username", "guest").await;
        b.fill("#password", "guest-password-1").await;
        b.click("#login").await;
        b.text_with("main h1", "Dashboard").await;
        b.goto(&format!("{base}/messages?subject=kept")).await;
        b.click("#select-all").await;
        b.click("#delete-selected").await;
        let result = b.text_with("#result", "cannot").await;
        assert!(
            result.contains("Refused") && result.contains("cannot"),
            "{result}"
        );
        b.goto(&format!("{base}/messages?subject=kept")).await;
        b.click("#delete-all").await;
        let result = b.text_with("#result", "cannot").await;
        assert!(
            result.contains("Refused") && result.contains("cannot"),
            "{result}"
        );
        b.close().await;
    });
    let d = pvo_json(&node, &["quarantine", "search", "--limit", "100"]);
    let now: Vec<u64> = d["data"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mid"].as_u64().unwrap())
        .collect();
    assert_eq!(now, vec![kept]);
    assert_eq!(sink.count(), 0);
    // The Guest's refusals are in the audit trail; nothing of theirs went through.
    let audit = pvo_json(&node, &["auditlog", "--user", "guest"]);
    let entries = audit["data"]["entries"].as_array().unwrap();
    let refused = entries
        .iter()
        .filter(|e| e["action"] == "delete" && e["outcome"] == "refused")
        .count();
    assert_eq!(refused, 2, "{audit:#}");
    assert!(
        entries
            .iter()
            .all(|e| e["outcome"] != "ok" || e["action"] == "view" || e["action"] == "login"),
        "{audit:#}"
    );
}
