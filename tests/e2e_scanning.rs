//! End-to-end tests of scanning and the local quarantines: a real `pvo gateway
//! run` with mail policies, a real next hop (`tests/peers/sink.py`), a real `clamd` started
//! here with a generated signature database, and the quarantine commands run as separate
//! `pvo --dir DIR ...` processes, as an administrator would.
//!
//! Mail comes from 127.0.0.2 (an ordinary sender: the incoming mail policy applies) to
//! example.com, which the sink receives. Each message's MID is read from the `250 ... Message
//! N accepted` reply, and every wait is for an event — a `mail_logs` line, a message at the
//! sink — never a fixed sleep. Expiry is checked with `quarantine sweep --at`, which runs
//! the sweeper as if at a later time, so no test waits for a retention to pass.
//!
//! Needs `scripts/install-test-deps` (python3-aiosmtpd, clamav-daemon).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::support::{
    base64, free_port, json, log_lines, pvo, pvo_bin, run_with_timeout, start_quickstart, text,
    wait_until, GatewayToml, Message, Node, Quickstart, Sink, SmtpClient, MANAGER_IP, UNTRUSTED,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const DELIVERY: Duration = Duration::from_secs(60);
/// One appliance command.
const COMMAND: Duration = Duration::from_secs(60);
/// The bound on scanning one hostile message (nested archives, deep MIME): far above what
/// it takes (well under a second), far below "unbounded".
const BOMB_BOUND: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------
// Test data
// ---------------------------------------------------------------------------------------

/// The EICAR test file, put together at run time so that this source file is not itself a
/// detection.
fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    v.extend_from_slice(b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// Standard base64 with CRLF every 76 characters (a MIME body).
fn base64_lines(data: &[u8]) -> String {
    base64(data)
        .as_bytes()
        .chunks(76)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect::<Vec<_>>()
        .join("\r\n")
}

/// EICAR in `depth` nested deflated zips, built with Python's zipfile (deflate, so the
/// signature bytes never appear verbatim in the outer layers).
fn nested_zip(depth: usize) -> Vec<u8> {
    let script = format!(
        "import io,sys,zipfile\ndata=sys.stdin.buffer.read()\nname='eicar.com'\nfor i in range({depth}):\n    b=io.BytesIO()\n    with zipfile.ZipFile(b,'w',zipfile.ZIP_DEFLATED) as z: z.writestr(name,data)\n    data=b.getvalue(); name='layer%d.zip'%i\nsys.stdout.buffer.write(data)\n"
    );
    let mut child = Command::new(crate::support::SYSTEM_PYTHON)
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    child.stdin.take().unwrap().write_all(&eicar()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "building nested zips");
    out.stdout
}

/// A message with one base64 attachment.
fn with_attachment(subject: &str, name: &str, data: &[u8]) -> String {
    format!(
        "From: <sender@example.org>\r\nTo: <user@example.com>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n\
         --outer\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n\
         --outer\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--outer--\r\n",
        base64_lines(data)
    )
}

/// `depth` nested multiparts with EICAR at the bottom.
fn deep_mime(subject: &str, depth: usize) -> String {
    let mut m = format!(
        "From: <sender@example.org>\r\nTo: <user@example.com>\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n"
    );
    for i in 0..depth {
        m.push_str(&format!(
            "--b{i}\r\nContent-Type: multipart/mixed; boundary=\"b{}\"\r\n\r\n",
            i + 1
        ));
    }
    m.push_str(&format!(
        "--b{depth}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n--b{depth}--\r\n",
        base64_lines(&eicar())
    ));
    for i in (0..depth).rev() {
        m.push_str(&format!("--b{i}--\r\n"));
    }
    m
}

fn plain(subject: &str, body: &str) -> String {
    format!(
        "From: <sender@example.org>\r\nTo: <user@example.com>\r\nSubject: {subject}\r\n\r\n{body}\r\n"
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------
// A private clamd
// ---------------------------------------------------------------------------------------

/// `clamd` on 127.0.0.1 with a signature database written here (EICAR as an `.ndb` body
/// signature), `AlertExceedsMax yes` (limits exceeded is a finding, so it can never pass
/// as clean) and `MaxRecursion 5`. It can be stopped and started again on the same port.
struct Clamd {
    port: u16,
    conf: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Clamd {
    fn start() -> Clamd {
        let dir = tempfile::Builder::new()
            .prefix("pvo-clamd-")
            .tempdir()
            .unwrap();
        let db = dir.path().join("db");
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&db).unwrap();
        fs::create_dir_all(&tmp).unwrap();
        fs::write(
            db.join("pvo-test.ndb"),
            format!("Eicar-Test.Custom:0:*:{}\n", hex::encode(eicar())),
        )
        .unwrap();
        // clamd has no "port 0": take a free port from the kernel and hand it over.
        let port = free_port();
        let conf = dir.path().join("clamd.conf");
        fs::write(
            &conf,
            format!(
                "DatabaseDirectory {}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n\
                 AlertExceedsMax yes\nMaxRecursion 5\nTemporaryDirectory {}\n",
                db.display(),
                tmp.display()
            ),
        )
        .unwrap();
        let mut c = Clamd {
            port,
            conf,
            dir,
            child: None,
        };
        c.spawn();
        c
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("clamd.log"))
            .unwrap();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("clamd (Debian clamav-daemon; run scripts/install-test-deps)");
        self.child = Some(child);
        let addr = self.addr();
        wait_until(
            Duration::from_secs(60),
            || {
                let mut s = TcpStream::connect(&addr).ok()?;
                s.write_all(b"zPING\0").ok()?;
                let mut b = [0u8; 5];
                s.read_exact(&mut b).ok()?;
                (&b == b"PONG\0").then_some(())
            },
            || {
                format!(
                    "clamd on {addr} never answered PING\n--- clamd.log ---\n{}",
                    fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
                )
            },
        );
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Adds a body signature for `marker` (a signature update) and restarts clamd on the
    /// same port to load it.
    fn add_signature(&mut self, name: &str, marker: &[u8]) {
        fs::write(
            self.dir.path().join("db").join(format!("{name}.ndb")),
            format!("{name}:0:*:{}\n", hex::encode(marker)),
        )
        .unwrap();
        self.restart();
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------
// The node and the command line
// ---------------------------------------------------------------------------------------

/// A gateway on 127.0.0.1 that accepts mail for example.com from anyone and delivers
/// everything to `sink`, with `scanning` (mail policies, filters, ...) appended.
fn config(sink: &Sink, scanning: &str) -> String {
    GatewayToml::new(sink)
        .accept_all()
        .rat(&["example.com"])
        .quiet_bounces()
        .extra(scanning)
        .build()
}

/// Sends `data` from 127.0.0.2 to user@example.com; returns the MID from the 250.
fn send(node: &Node, data: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message("sender@example.org", &["user@example.com"], data);
    assert_eq!(r.code, 250, "end of data: {}", r.raw());
    c.quit();
    let line = r.lines.last().cloned().unwrap_or_default();
    line.split_whitespace()
        .skip_while(|w| *w != "Message")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {line:?}"))
}

/// Waits for `MID {mid} quarantined to "{quarantine}" ({reason}...`; returns the line.
fn wait_quarantined(node: &Node, mid: u64, quarantine: &str, reason: &str) -> String {
    let needle = format!("MID {mid} quarantined to \"{quarantine}\" ({reason}");
    let log = node.wait_for_log(&needle, DELIVERY);
    log_lines(&log, &needle)[0].to_string()
}

fn subject_of(m: &Message) -> String {
    m.header("Subject").unwrap_or_default()
}

fn subjects(sink: &Sink) -> Vec<String> {
    sink.messages().iter().map(subject_of).collect()
}

/// Waits until a message with this subject reached the sink; returns it.
fn wait_delivered(sink: &Sink, subject: &str) -> Message {
    wait_until(
        DELIVERY,
        || {
            sink.messages()
                .into_iter()
                .find(|m| subject_of(m) == subject)
        },
        || {
            format!(
                "no message {subject:?} at the sink; it has {:?}",
                subjects(sink)
            )
        },
    )
}

/// The `quarantine show MID --json` memberships, by quarantine name.
fn memberships(node: &Node, mid: u64) -> Vec<Value> {
    json(node, &["quarantine", "show", &mid.to_string()])["quarantines"]
        .as_array()
        .expect("quarantines")
        .clone()
}

fn membership(node: &Node, mid: u64, quarantine: &str) -> Value {
    memberships(node, mid)
        .into_iter()
        .find(|m| m["quarantine"] == quarantine)
        .unwrap_or_else(|| panic!("MID {mid} has no membership in {quarantine}"))
}

/// MIDs of `quarantine search --json ARGS`.
fn search_mids(node: &Node, args: &[&str]) -> Vec<u64> {
    let mut all = vec!["quarantine", "search"];
    all.extend_from_slice(args);
    json(node, &all)["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["mid"].as_u64().expect("mid"))
        .collect()
}

/// The peak resident set of a process (VmHWM), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM")
}

const AV_POLICY: &str = r#"
[[mail_policy]]
name = "DEFAULT_INCOMING"
direction = "incoming"
antivirus = true
"#;

fn av_config(sink: &Sink, clamd: &Clamd) -> String {
    config(
        sink,
        &format!(
            "[antivirus]\nclamd = \"{}\"\ntimeout = 30\n{AV_POLICY}",
            clamd.addr()
        ),
    )
}

// ---------------------------------------------------------------------------------------
// Anti-virus with a real clamd
// ---------------------------------------------------------------------------------------

#[test]
fn eicar_lands_in_virus_and_nested_archives_and_deep_mime_end_unscannable_in_bounded_time() {
    let clamd = Clamd::start();
    let sink = Sink::accepting();
    let node = Node::start(&av_config(&sink, &clamd));

    let eicar_mid = send(&node, &with_attachment("eicar", "eicar.com", &eicar()));
    let line = wait_quarantined(&node, eicar_mid, "Virus", "virus:Eicar-Test.Custom");
    assert!(line.contains("Info: "), "{line}");

    // Hostile structure: each ends held as unscannable, never clean, within the bound.
    let mut bombs = Vec::new();
    for (subject, data) in [
        (
            "nested zips",
            with_attachment("nested zips", "layers.zip", &nested_zip(20)),
        ),
        ("deep mime", deep_mime("deep mime", 200)),
    ] {
        let started = Instant::now();
        let mid = send(&node, &data);
        wait_quarantined(&node, mid, "Virus", "");
        let took = started.elapsed();
        assert!(took < BOMB_BOUND, "{subject}: held after {took:?}");
        bombs.push((subject, mid));
    }
    let log = node.mail_logs();
    for (subject, mid) in &bombs {
        let held = log_lines(&log, &format!("MID {mid} quarantined to \"Virus\""));
        assert!(
            held.iter().any(|l| l.contains("unscannable")),
            "{subject}: {held:?}\n{log}"
        );
        assert!(
            !log.contains(&format!("MID {mid} antivirus negative")),
            "{subject} passed as clean:\n{log}"
        );
    }

    // A clean message passes; it is the only one the sink ever gets.
    let clean = send(&node, &plain("clean", "Nothing to see."));
    node.wait_for_log(&format!("MID {clean} antivirus negative"), DELIVERY);
    wait_delivered(&sink, "clean");
    assert_eq!(subjects(&sink), vec!["clean"]);

    let held = search_mids(&node, &["--quarantine", "Virus"]);
    let mut want = vec![eicar_mid, bombs[0].1, bombs[1].1];
    want.sort_unstable();
    let mut got = held.clone();
    got.sort_unstable();
    assert_eq!(got, want);
    let shown = json(&node, &["quarantine", "show", &eicar_mid.to_string()]);
    assert!(
        shown["quarantines"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("virus:Eicar-Test.Custom"),
        "{shown:#}"
    );
    assert_eq!(shown["attachments"][0]["name"], "eicar.com");

    // Bounded memory: the node's peak resident set stays small.
    let rss = peak_rss_kib(node.pid());
    assert!(rss < 300 * 1024, "peak RSS {rss} KiB");
}

/// `featurekey` (docs/appliance.md, Clusters: feature keys are machine-only): a data
/// directory without `featurekeys.json` has every feature keyed; `featurekey remove
/// antivirus` turns anti-virus off on this machine at once (no commit), with one
/// warning, and `status`/`showconfig` say the configuration uses it without a key; a
/// message with the test signature is then delivered unscanned, its MID logged as
/// skipped; `featurekey add antivirus` puts it back and the signature is caught again.
#[test]
fn without_its_feature_key_antivirus_is_off_and_adding_the_key_turns_it_back_on() {
    let clamd = Clamd::start();
    let sink = Sink::accepting();
    let node = Node::start(&av_config(&sink, &clamd));

    let keyed = send(&node, &with_attachment("keyed", "eicar.com", &eicar()));
    wait_quarantined(&node, keyed, "Virus", "virus:Eicar-Test.Custom");
    let status = json(&node, &["status"]);
    assert_eq!(status["features"][0]["feature"], "antivirus", "{status:#}");
    assert_eq!(status["features"][0]["state"], "on", "{status:#}");
    assert_eq!(status["features"][0]["key"], "default", "{status:#}");
    assert!(!node.data_dir().join("featurekeys.json").exists());

    let mark = node.log_mark();
    let out = text(&node, &["featurekey", "remove", "antivirus"]);
    assert!(
        out.contains("Feature key for Anti-Virus removed. Anti-Virus is off on this machine.")
            && out.contains("The configuration uses it"),
        "{out}"
    );
    let warning = "Warning: The feature key for Anti-Virus was removed by admin; Anti-Virus is off on this machine";
    node.wait_for_log_after(mark, warning, COMMAND);
    let off = "configured but off: no feature key (`featurekey add antivirus`)";
    let status = text(&node, &["status"]);
    assert!(status.contains(off), "{status}");
    let shown = json(&node, &["showconfig"]);
    let row = &shown["feature_keys"]["features"][0];
    assert_eq!(
        (&row["state"], &row["keyed"], &row["configured"]),
        (&Value::from(off), &Value::from(false), &Value::from(true)),
        "{shown:#}"
    );
    assert!(text(&node, &["showconfig"]).contains(off));
    // The full set is recorded, mode 0600.
    use std::os::unix::fs::PermissionsExt;
    let file = node.data_dir().join("featurekeys.json");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let listed = json(&node, &["featurekey"]);
    let keyed_now: Vec<&str> = listed["features"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["keyed"] == true)
        .map(|f| f["feature"].as_str().unwrap())
        .collect();
    assert_eq!(keyed_now, ["outbreak", "dlp"], "{listed:#}");

    let unkeyed = send(&node, &with_attachment("unkeyed", "eicar.com", &eicar()));
    wait_delivered(&sink, "unkeyed");
    let log = node.wait_for_log(
        &format!("MID {unkeyed} Anti-Virus skipped: no feature key on this machine"),
        DELIVERY,
    );
    assert!(
        !log.contains(&format!("MID {unkeyed} antivirus")),
        "scanned without its key:\n{log}"
    );
    assert_eq!(log_lines(&node.log_since(mark), warning).len(), 1);

    // The key back (a licence reference, valid to the end of a day): caught again.
    let out = text(
        &node,
        &[
            "featurekey",
            "add",
            "antivirus",
            "--key",
            "LIC-AV-7",
            "--expires",
            "2099-12-31",
        ],
    );
    assert!(
        out.contains("Feature key for Anti-Virus installed (key LIC-AV-7, valid until 2099-12-31 23:59:59 GMT). Anti-Virus is on on this machine."),
        "{out}"
    );
    node.wait_for_log_after(
        mark,
        "Info: Feature key for Anti-Virus installed by admin (key LIC-AV-7, valid until 2099-12-31 23:59:59 GMT); Anti-Virus is on on this machine",
        COMMAND,
    );
    let again = send(
        &node,
        &with_attachment("keyed again", "eicar.com", &eicar()),
    );
    wait_quarantined(&node, again, "Virus", "virus:Eicar-Test.Custom");
    assert_eq!(subjects(&sink), vec!["unkeyed"]);
    let status = json(&node, &["status"]);
    assert_eq!(status["features"][0]["state"], "on", "{status:#}");
    assert_eq!(status["features"][0]["valid_until"], "2099-12-31 23:59:59");
}

#[test]
fn a_stopped_clamd_leaves_mail_queued_until_it_is_back() {
    let mut clamd = Clamd::start();
    let sink = Sink::accepting();
    let node = Node::start(&av_config(&sink, &clamd));

    clamd.stop();
    let clean = send(&node, &plain("while clamd is down", "clean"));
    let virus = send(
        &node,
        &with_attachment("virus while down", "e.com", &eicar()),
    );
    for mid in [clean, virus] {
        node.wait_for_log(&format!("MID {mid} scanning deferred"), DELIVERY);
    }
    // Deferred means kept in the spool: nothing delivered, nothing held.
    assert_eq!(sink.count(), 0);
    assert!(search_mids(&node, &[]).is_empty());

    // The same clamd comes back on the same port: the retry scans both.
    clamd.restart();
    wait_delivered(&sink, "while clamd is down");
    wait_quarantined(&node, virus, "Virus", "virus:Eicar-Test.Custom");
    assert_eq!(subjects(&sink), vec!["while clamd is down"]);
}

#[test]
fn a_message_released_from_outbreak_is_rescanned_with_antivirus() {
    // The point of the Outbreak quarantine: hold what anti-virus does not know yet, and
    // scan it again when it leaves, with the signatures that came meanwhile.
    let mut clamd = Clamd::start();
    let sink = Sink::accepting();
    let rules = tempfile::Builder::new()
        .prefix("pvo-rules-")
        .tempdir()
        .unwrap();
    let rules_file = rules.path().join("rules.toml");
    fs::write(&rules_file, OUTBREAK_V1).unwrap();
    let node = Node::start(&config(
        &sink,
        &format!(
            "[antivirus]\nclamd = \"{}\"\ntimeout = 30\n\n[outbreak]\nrules_file = \"{}\"\n{AV_POLICY}outbreak = {{ threshold = 3 }}\n",
            clamd.addr(),
            rules_file.display()
        ),
    ));
    let marker = b"PVO-NEW-VIRUS-MARKER-0042";
    let fresh = send(
        &node,
        &with_attachment(
            "new threat",
            "payload.bin",
            &[b"outbreak-marker-7 ".as_slice(), marker].concat(),
        ),
    );
    node.wait_for_log(&format!("MID {fresh} antivirus negative"), DELIVERY);
    wait_quarantined(&node, fresh, "Outbreak", "outbreak rule:OUTB-TEST-1)");
    let clean = send(&node, &plain("outbreak but harmless", "outbreak-marker-7"));
    wait_quarantined(&node, clean, "Outbreak", "outbreak rule:OUTB-TEST-1)");

    // The signature arrives; both leave the Outbreak quarantine.
    clamd.add_signature("Pvo-New-Virus", marker);
    let out = text(
        &node,
        &[
            "quarantine",
            "release",
            &fresh.to_string(),
            &clean.to_string(),
        ],
    );
    assert!(
        out.contains("2 messages: 2 released from all quarantines."),
        "{out}"
    );
    let new_mid = |mid: u64| -> u64 {
        let needle = format!("MID {mid} rewritten to MID ");
        let log = node.wait_for_log(&needle, DELIVERY);
        log_lines(&log, &needle)[0]
            .split(&needle)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|m| m.parse().ok())
            .expect("new MID")
    };
    let rescanned = new_mid(fresh);
    wait_quarantined(&node, rescanned, "Virus", "virus:Pvo-New-Virus");
    // The harmless one passes anti-virus and is delivered, not held by the rule again.
    let delivered = new_mid(clean);
    node.wait_for_log(&format!("MID {delivered} antivirus negative"), DELIVERY);
    wait_delivered(&sink, "outbreak but harmless");
    assert_eq!(subjects(&sink), vec!["outbreak but harmless"]);
    assert_eq!(search_mids(&node, &[]), vec![rescanned]);
}

// ---------------------------------------------------------------------------------------
// Content filters, DLP, outbreak rules
// ---------------------------------------------------------------------------------------

const OUTBREAK_V1: &str = r#"version = "2025-06-10.1"

[[rule]]
id = "OUTB-TEST-1"
description = "The outbreak marker phrase"
threat_level = 4
body_regex = ["(?i)outbreak-marker-7"]
"#;

const OUTBREAK_V2: &str = r#"version = "2025-06-11.1"

[[rule]]
id = "OUTB-TEST-1"
description = "The outbreak marker phrase, refined"
threat_level = 4
body_regex = ["(?i)outbreak-marker-7 and something else"]
"#;

fn policy_config(sink: &Sink, rules: &Path) -> String {
    config(
        sink,
        &format!(
            r#"
[outbreak]
rules_file = "{}"

[[content_filter]]
name = "quarantine_test"
conditions = {{ subject_contains = "[quarantine-test]" }}
actions = [{{ quarantine = "Policy" }}]

[[content_filter]]
name = "two_quarantines"
conditions = {{ subject_contains = "[two]" }}
actions = [{{ quarantine = "Policy" }}, {{ quarantine = "Legal" }}]

[[content_filter]]
name = "expire_release"
conditions = {{ subject_contains = "[hold-release]" }}
actions = [{{ quarantine = "Hold1h" }}]

[[content_filter]]
name = "expire_delete"
conditions = {{ subject_contains = "[hold-delete]" }}
actions = [{{ quarantine = "Del1h" }}]

[[dlp_policy]]
name = "cards"
detectors = ["payment_card"]
[dlp_policy.actions]
low = [{{ quarantine = "Policy" }}]

[[mail_policy]]
name = "DEFAULT_INCOMING"
direction = "incoming"
content_filters = ["ALL"]
dlp_policies = ["cards"]
outbreak = {{ threshold = 3 }}
"#,
            rules.display()
        ),
    )
}

/// A sink, a rules directory with OUTBREAK_V1, and a node with the filters above.
fn policy_node() -> (Node, Sink, tempfile::TempDir) {
    let rules = tempfile::Builder::new()
        .prefix("pvo-rules-")
        .tempdir()
        .unwrap();
    fs::write(rules.path().join("v1.toml"), OUTBREAK_V1).unwrap();
    fs::write(rules.path().join("v2.toml"), OUTBREAK_V2).unwrap();
    let sink = Sink::accepting();
    let node = Node::start(&policy_config(&sink, &rules.path().join("v1.toml")));
    (node, sink, rules)
}

#[test]
fn filter_dlp_and_outbreak_hits_land_in_their_quarantines_and_release_delivers() {
    let (node, sink, rules) = policy_node();

    let policy = send(&node, &plain("[quarantine-test] hello", "Hi."));
    let dlp = send(&node, &plain("payment", "My card is 4111 1111 1111 1111."));
    let outbreak = send(&node, &plain("outbreak one", "Click: OUTBREAK-MARKER-7"));
    let outbreak2 = send(&node, &plain("outbreak two", "again outbreak-marker-7"));
    wait_quarantined(&node, policy, "Policy", "content filter:quarantine_test)");
    wait_quarantined(&node, dlp, "Policy", "DLP policy:cards)");
    wait_quarantined(&node, outbreak, "Outbreak", "outbreak rule:OUTB-TEST-1)");
    wait_quarantined(&node, outbreak2, "Outbreak", "outbreak rule:OUTB-TEST-1)");
    assert_eq!(sink.count(), 0);

    // Search by quarantine, reason, rule and subject; the table has the columns.
    let mut got = search_mids(&node, &["--quarantine", "Policy"]);
    got.sort_unstable();
    assert_eq!(got, vec![policy, dlp]);
    assert_eq!(
        search_mids(&node, &["--reason", "DLP policy:cards"]),
        vec![dlp]
    );
    let mut got = search_mids(&node, &["--rule", "OUTB-TEST-1"]);
    got.sort_unstable();
    assert_eq!(got, vec![outbreak, outbreak2]);
    assert_eq!(search_mids(&node, &["--subject", "payment"]), vec![dlp]);
    let table = text(&node, &["quarantine", "search"]);
    for col in [
        "MID",
        "Received",
        "Sender",
        "Recipients",
        "Subject",
        "Quarantines",
        "Scheduled exit",
    ] {
        assert!(table.contains(col), "{table}");
    }
    assert!(table.contains("Showing 1-4 of 4 messages."), "{table}");

    // Why held, readably: the evidence of the filter, the DLP detector.
    let shown = text(&node, &["quarantine", "show", &policy.to_string()]);
    assert!(shown.contains("content filter:quarantine_test"), "{shown}");
    assert!(
        shown.contains("subject_contains \"[quarantine-test]\""),
        "{shown}"
    );
    assert!(
        shown.contains("Subject: [quarantine-test] hello"),
        "{shown}"
    );
    let shown = text(&node, &["quarantine", "show", &dlp.to_string()]);
    assert!(shown.contains("detector: payment_card"), "{shown}");
    assert!(
        !shown.contains("4111 1111 1111 1111"),
        "DLP samples are masked: {shown}"
    );

    // Release delivers to the next hop, under a new MID, with the appliance's lines.
    let out = text(&node, &["quarantine", "release", &policy.to_string()]);
    assert!(
        out.contains(&format!(
            "MID {policy} released from quarantine \"Policy\" (manual)"
        )),
        "{out}"
    );
    let delivered = wait_delivered(&sink, "[quarantine-test] hello");
    assert!(delivered.text().contains("Hi."));
    let log = node.mail_logs();
    assert_eq!(
        log_lines(
            &log,
            &format!("MID {policy} released from quarantine \"Policy\" (manual)")
        )
        .len(),
        1,
        "{log}"
    );
    assert_eq!(
        log_lines(&log, &format!("MID {policy} released from all quarantines")).len(),
        1,
        "{log}"
    );
    assert_eq!(
        log_lines(&log, &format!("MID {policy} rewritten to MID ")).len(),
        1,
        "{log}"
    );
    // A second release changes nothing and delivers nothing.
    let again = pvo(&node, &["quarantine", "release", &policy.to_string()]);
    assert!(!again.status.success());
    assert!(again.stderr.contains("is not held"), "{}", again.stderr);

    // A manual release from Outbreak while the rule still matches: rescanned with
    // anti-virus only, so it is delivered and not held again by the same rule.
    text(&node, &["quarantine", "release", &outbreak.to_string()]);
    wait_delivered(&sink, "outbreak one");
    assert_eq!(
        search_mids(&node, &["--quarantine", "Outbreak"]),
        vec![outbreak2]
    );

    // outbreakstatus: version, rules, held per rule.
    let status = json(&node, &["outbreakstatus"]);
    assert_eq!(status["version"], "2025-06-10.1");
    assert_eq!(status["rules"][0]["id"], "OUTB-TEST-1");
    assert_eq!(status["rules"][0]["level"], 4);
    assert_eq!(
        status["rules"][0]["description"],
        "The outbreak marker phrase"
    );
    assert_eq!(status["rules"][0]["held"], 1);

    // Manage by rule: delay every message of the rule.
    let exit = membership(&node, outbreak2, "Outbreak")["exit_at"]
        .as_u64()
        .unwrap();
    let out = text(
        &node,
        &[
            "quarantine",
            "manage-by-rule",
            "OUTB-TEST-1",
            "delay",
            "--by",
            "24h",
        ],
    );
    assert!(
        out.contains(&format!("MID {outbreak2} scheduled exit")),
        "{out}"
    );
    let delayed = membership(&node, outbreak2, "Outbreak")["exit_at"]
        .as_u64()
        .unwrap();
    assert_eq!(delayed, exit + 24 * 3600);

    // New rules that no longer match: the held message is rescanned and released.
    let v2 = rules.path().join("v2.toml");
    let update = json(&node, &["outbreakupdate", v2.to_str().unwrap()]);
    assert_eq!(update["version"], "2025-06-11.1");
    assert_eq!(update["rescanned"], 1);
    assert_eq!(update["released"], 1);
    node.wait_for_log(
        &format!("MID {outbreak2} released from quarantine \"Outbreak\" (rescan)"),
        DELIVERY,
    );
    wait_delivered(&sink, "outbreak two");
    let status = text(&node, &["outbreakstatus"]);
    assert!(status.contains("2025-06-11.1"), "{status}");
    assert!(
        status.contains("The outbreak marker phrase, refined"),
        "{status}"
    );
    assert!(status.contains("Messages held in Outbreak: 0"), "{status}");

    // The new rules are in force for new mail too.
    let after = send(&node, &plain("outbreak three", "outbreak-marker-7"));
    node.wait_for_log(
        &format!("MID {after} Outbreak Filters: verdict negative"),
        DELIVERY,
    );
    wait_delivered(&sink, "outbreak three");
    assert_eq!(search_mids(&node, &[]), vec![dlp]);
}

/// A version 2 whose only rule is new: it matches mail that version 1 lets through, and
/// no longer matches version 1's marker.
const OUTBREAK_V2_NEW_RULE: &str = r#"version = "2025-06-12.2"

[[rule]]
id = "OUTB-TEST-2"
description = "Only in version 2"
threat_level = 4
body_regex = ["(?i)v2-only-marker"]
"#;

/// `outbreakupdate` to OUTBREAK_V2_NEW_RULE on a `policy_node`; returns the persisted
/// record (`DATA_DIR/outbreak/state.json`), written before the command answered.
fn update_to_v2(node: &Node, rules: &Path) -> Value {
    let v2 = rules.join("v2-new.toml");
    fs::write(&v2, OUTBREAK_V2_NEW_RULE).unwrap();
    let update = json(node, &["outbreakupdate", v2.to_str().unwrap()]);
    assert_eq!(update["version"], "2025-06-12.2");
    let dir = node.data_dir().join("outbreak");
    let record: Value =
        serde_json::from_slice(&fs::read(dir.join("state.json")).expect("state.json")).unwrap();
    assert_eq!(record["version"], "2025-06-12.2");
    assert_eq!(record["origin"], "outbreakupdate");
    assert_eq!(record["source"], v2.to_str().unwrap());
    assert_eq!(
        fs::read(dir.join(record["file"].as_str().unwrap())).unwrap(),
        OUTBREAK_V2_NEW_RULE.as_bytes()
    );
    record
}

#[test]
fn outbreakupdate_rules_stay_in_force_after_a_restart() {
    let (mut node, sink, rules) = policy_node();
    let record = update_to_v2(&node, rules.path());
    // The copy counts, not the file it came from.
    let source = rules.path().join("v2-new.toml");
    fs::remove_file(&source).unwrap();

    node.restart();
    let log = node.wait_for_log("Outbreak rules in force: version 2025-06-12.2", COMMAND);
    let line = log_lines(&log, "Outbreak rules in force: version 2025-06-12.2")[0];
    assert!(line.contains("(outbreakupdate at "), "{line}");
    assert!(line.contains("has not changed since"), "{line}");

    let status = json(&node, &["outbreakstatus"]);
    assert_eq!(status["version"], "2025-06-12.2");
    assert_eq!(status["source"]["origin"], "outbreakupdate");
    assert_eq!(status["source"]["file"], source.to_str().unwrap());
    assert_eq!(status["source"]["at"], record["at"]);
    assert_eq!(status["rules"][0]["id"], "OUTB-TEST-2");
    assert_eq!(status["rules"][0]["description"], "Only in version 2");
    let shown = text(&node, &["outbreakstatus"]);
    assert!(
        shown.contains(&format!(
            "Loaded from: {} (outbreakupdate, ",
            source.display()
        )),
        "{shown}"
    );

    // Verdicts are version 2's: its rule holds, version 1's marker passes.
    let held = send(&node, &plain("v2 only", "here is v2-only-marker"));
    wait_quarantined(&node, held, "Outbreak", "outbreak rule:OUTB-TEST-2)");
    let passed = send(&node, &plain("v1 only", "outbreak-marker-7"));
    node.wait_for_log(
        &format!("MID {passed} Outbreak Filters: verdict negative"),
        DELIVERY,
    );
    wait_delivered(&sink, "v1 only");
}

#[test]
fn a_corrupt_persisted_outbreak_rules_copy_falls_back_to_the_configured_rules() {
    let (mut node, _sink, rules) = policy_node();
    let record = update_to_v2(&node, rules.path());
    node.stop();
    // A torn copy (its SHA-256 no longer matches the record).
    let copy = node
        .data_dir()
        .join("outbreak")
        .join(record["file"].as_str().unwrap());
    fs::write(&copy, "version = \"2025-06-12.2\"\n[[rule]]\nid = ").unwrap();

    node.restart();
    let log = node.wait_for_log("Outbreak rules in force: version 2025-06-10.1", COMMAND);
    let warning = log_lines(&log, "cannot be used")
        .first()
        .map(|l| l.to_string())
        .unwrap_or_else(|| panic!("no warning about the persisted copy:\n{log}"));
    assert!(warning.contains("Warning"), "{warning}");
    // It names the file (the data directory may be spelled with a `./`).
    assert!(
        warning.contains(&format!(
            "outbreak/{}: its SHA-256 is",
            record["file"].as_str().unwrap()
        )),
        "{warning}"
    );
    assert!(warning.contains("pvo outbreakupdate FILE"), "{warning}");

    let status = json(&node, &["outbreakstatus"]);
    assert_eq!(status["version"], "2025-06-10.1");
    assert_eq!(status["source"]["origin"], "configuration");
    assert_eq!(
        status["source"]["file"],
        rules.path().join("v1.toml").to_str().unwrap()
    );
    let held = send(&node, &plain("v1 again", "outbreak-marker-7"));
    wait_quarantined(&node, held, "Outbreak", "outbreak rule:OUTB-TEST-1)");
}

#[test]
fn a_commit_naming_another_rules_file_replaces_the_persisted_rules() {
    let (mut node, _sink, rules) = policy_node();
    update_to_v2(&node, rules.path());
    // The administrator names another rules file (OUTBREAK_V2) and commits.
    let v1 = rules.path().join("v1.toml");
    let other = rules.path().join("v2.toml");
    let committed = fs::read_to_string(node.config_path()).unwrap();
    let pending = committed.replace(v1.to_str().unwrap(), other.to_str().unwrap());
    assert_ne!(pending, committed);
    fs::create_dir_all(node.data_dir().join("config")).unwrap();
    fs::write(node.data_dir().join("config").join("pending.toml"), pending).unwrap();
    text(&node, &["commit", "-m", "another outbreak rules file"]);

    let check = |node: &Node| {
        let status = json(node, &["outbreakstatus"]);
        assert_eq!(status["version"], "2025-06-11.1");
        assert_eq!(status["source"]["origin"], "configuration");
        assert_eq!(status["source"]["file"], other.to_str().unwrap());
    };
    check(&node);
    let record: Value = serde_json::from_slice(
        &fs::read(node.data_dir().join("outbreak").join("state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["version"], "2025-06-11.1");
    assert_eq!(record["origin"], "configuration");

    node.restart();
    let log = node.wait_for_log("Outbreak rules in force: version 2025-06-11.1", COMMAND);
    assert!(
        log_lines(&log, "Outbreak rules in force: version 2025-06-11.1")
            .iter()
            .any(|l| l.contains("has not changed since")),
        "{log}"
    );
    check(&node);
}

#[test]
fn expiry_applies_each_quarantines_default_action_and_early_release_rewrites() {
    let (node, sink, _rules) = policy_node();
    text(
        &node,
        &[
            "quarantineconfig",
            "new",
            "--name",
            "Hold1h",
            "--retention",
            "1h",
            "--action",
            "release",
            "--subject-prepend",
            "[early]",
        ],
    );
    text(
        &node,
        &[
            "quarantineconfig",
            "new",
            "--name",
            "Del1h",
            "--retention",
            "1h",
            "--action",
            "delete",
        ],
    );
    let list = text(&node, &["quarantineconfig"]);
    for want in [
        "#",
        "Name",
        "Space used",
        "Messages",
        "Retention",
        "Action",
        "Total",
    ] {
        assert!(list.contains(want), "{list}");
    }
    let row = list
        .lines()
        .find(|l| l.contains("Hold1h"))
        .expect("Hold1h row");
    assert!(row.contains("1 hour") && row.contains("Release"), "{row}");
    // Edit changes only what it names; built-ins can be edited too.
    text(
        &node,
        &[
            "quarantineconfig",
            "edit",
            "Hold1h",
            "--access",
            "alice,Operator",
        ],
    );
    let out = text(
        &node,
        &["quarantineconfig", "edit", "Policy", "--exempt-free-up"],
    );
    let row = out
        .lines()
        .find(|l| l.trim_start().starts_with("1  Policy"))
        .expect("Policy row");
    assert!(row.contains("exempt from free up space"), "{out}");
    let list = json(&node, &["quarantineconfig"]);
    let hold = list["quarantines"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "Hold1h")
        .unwrap()
        .clone();
    assert_eq!(hold["retention_secs"], 3600);
    assert_eq!(hold["default_action"], "Release");
    assert_eq!(hold["early_release"]["subject_prepend"], "[early]");
    assert_eq!(hold["access"]["users"], serde_json::json!(["alice"]));
    assert_eq!(hold["access"]["roles"], serde_json::json!(["Operator"]));

    let expire_release = send(&node, &plain("[hold-release] expires", "one"));
    let expire_delete = send(&node, &plain("[hold-delete] expires", "two"));
    let early = send(&node, &plain("[hold-release] early", "three"));
    wait_quarantined(
        &node,
        expire_release,
        "Hold1h",
        "content filter:expire_release)",
    );
    wait_quarantined(
        &node,
        expire_delete,
        "Del1h",
        "content filter:expire_delete)",
    );
    wait_quarantined(&node, early, "Hold1h", "content filter:expire_release)");
    let exit = membership(&node, expire_release, "Hold1h")["exit_at"]
        .as_u64()
        .unwrap();
    let now = unix_now();
    assert!(
        exit > now + 3000 && exit <= now + 3600,
        "exit {exit}, now {now}"
    );

    // Released before its exit: the quarantine's early-release action applies.
    text(&node, &["quarantine", "release", &early.to_string()]);
    wait_delivered(&sink, "[early] [hold-release] early");

    // A sweep now changes nothing; one as if two hours later applies the default actions.
    let out = text(&node, &["quarantine", "sweep"]);
    assert!(out.contains("no scheduled exit was due"), "{out}");
    let later = (unix_now() + 2 * 3600).to_string();
    let out = text(&node, &["quarantine", "sweep", "--at", &later]);
    assert!(
        out.contains(&format!(
            "MID {expire_release} released from quarantine \"Hold1h\" (expired)"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "MID {expire_delete} deleted from quarantine \"Del1h\" (expired)"
        )),
        "{out}"
    );
    // Released at its exit, not early: the subject is unchanged.
    wait_delivered(&sink, "[hold-release] expires");
    let log = node.mail_logs();
    assert_eq!(
        log_lines(
            &log,
            &format!("MID {expire_delete} deleted from quarantine \"Del1h\" (expired)")
        )
        .len(),
        1
    );
    assert!(
        !log.contains(&format!("MID {expire_delete} released")),
        "{log}"
    );
    assert!(
        !log.contains(&format!("MID {expire_delete} rewritten")),
        "{log}"
    );
    let mut got = subjects(&sink);
    got.sort();
    assert_eq!(
        got,
        vec!["[early] [hold-release] early", "[hold-release] expires"]
    );
    assert!(search_mids(&node, &[]).is_empty());
    let list = json(&node, &["quarantineconfig"]);
    assert_eq!(list["total_messages"], 0, "{list:#}");
}

#[test]
fn a_message_in_two_quarantines_needs_both_releases_and_a_delete_from_one_wins() {
    let (node, sink, _rules) = policy_node();
    text(&node, &["quarantineconfig", "new", "--name", "Legal"]);
    text(
        &node,
        &[
            "quarantineconfig",
            "new",
            "--name",
            "Archive",
            "--retention",
            "30d",
        ],
    );

    let deleted = send(&node, &plain("[two] deleted from one", "a"));
    let both = send(&node, &plain("[two] released from both", "b"));
    let moved = send(&node, &plain("[two] delayed and moved", "c"));
    for mid in [deleted, both, moved] {
        wait_quarantined(&node, mid, "Policy", "content filter:two_quarantines)");
        wait_quarantined(&node, mid, "Legal", "content filter:two_quarantines)");
    }

    // Released from Policy, deleted from Legal: never delivered.
    let out = text(
        &node,
        &[
            "quarantine",
            "release",
            &deleted.to_string(),
            "--quarantine",
            "Policy",
        ],
    );
    assert!(
        out.contains(&format!("MID {deleted} still held in \"Legal\"")),
        "{out}"
    );
    // Deleting asks for confirmation; without a terminal, --yes is required.
    let refused = pvo(
        &node,
        &[
            "quarantine",
            "delete",
            &deleted.to_string(),
            "--quarantine",
            "Legal",
        ],
    );
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("--yes"), "{}", refused.stderr);
    let out = text(
        &node,
        &[
            "quarantine",
            "delete",
            &deleted.to_string(),
            "--quarantine",
            "Legal",
            "--yes",
        ],
    );
    assert!(
        out.contains(&format!(
            "MID {deleted} deleted from quarantine \"Legal\" (manual)"
        )),
        "{out}"
    );

    // One release is not enough; the second delivers.
    text(
        &node,
        &[
            "quarantine",
            "release",
            &both.to_string(),
            "--quarantine",
            "Legal",
        ],
    );
    assert_eq!(membership(&node, both, "Policy")["state"], "held");
    assert_eq!(sink.count(), 0);
    let out = text(
        &node,
        &[
            "quarantine",
            "release",
            &both.to_string(),
            "--quarantine",
            "Policy",
        ],
    );
    assert!(
        out.contains(&format!("MID {both} released from all quarantines")),
        "{out}"
    );
    wait_delivered(&sink, "[two] released from both");
    // The deleted one was acted on first; had it been delivered, it would be there now.
    assert_eq!(subjects(&sink), vec!["[two] released from both"]);
    let log = node.mail_logs();
    assert!(
        !log.contains(&format!("MID {deleted} released from all")),
        "{log}"
    );

    // Delay extends the exit of one membership; move keeps exit and reason.
    let before = membership(&node, moved, "Policy");
    let legal_exit = membership(&node, moved, "Legal")["exit_at"].clone();
    let exit = before["exit_at"].as_u64().unwrap();
    text(
        &node,
        &[
            "quarantine",
            "delay",
            &moved.to_string(),
            "--quarantine",
            "Policy",
            "--by",
            "8h",
        ],
    );
    let delayed = membership(&node, moved, "Policy");
    assert_eq!(delayed["exit_at"].as_u64().unwrap(), exit + 8 * 3600);
    assert_eq!(membership(&node, moved, "Legal")["exit_at"], legal_exit);
    let out = text(
        &node,
        &[
            "quarantine",
            "move",
            &moved.to_string(),
            "--from",
            "Policy",
            "--to",
            "Archive",
        ],
    );
    assert!(
        out.contains(&format!(
            "MID {moved} moved from quarantine \"Policy\" to \"Archive\""
        )),
        "{out}"
    );
    let m = membership(&node, moved, "Archive");
    assert_eq!(m["exit_at"].as_u64().unwrap(), exit + 8 * 3600);
    assert_eq!(m["reason"], before["reason"]);
    assert_eq!(
        search_mids(&node, &["--quarantine", "Archive"]),
        vec![moved]
    );
    assert!(search_mids(&node, &["--quarantine", "Policy"]).is_empty());

    // Deleting a custom quarantine that holds it moves it to Unclassified, and says so.
    let out = text(&node, &["quarantineconfig", "delete", "Archive"]);
    assert!(out.contains("moved to \"Unclassified\""), "{out}");
    assert!(out.contains(&format!("MID {moved}")), "{out}");
    assert_eq!(
        membership(&node, moved, "Unclassified")["exit_at"]
            .as_u64()
            .unwrap(),
        exit + 8 * 3600
    );
    let refused = pvo(&node, &["quarantineconfig", "delete", "Policy"]);
    assert!(!refused.status.success());
    assert!(
        refused
            .stderr
            .contains("built-in quarantine and cannot be deleted"),
        "{}",
        refused.stderr
    );

    // Bulk on every result of a search, with a copy sent first.
    let out = text(
        &node,
        &[
            "quarantine",
            "copy",
            &moved.to_string(),
            "--to",
            "auditor@example.com",
        ],
    );
    assert!(out.contains("stays in quarantine"), "{out}");
    let copy = wait_until(
        DELIVERY,
        || {
            sink.messages()
                .into_iter()
                .find(|m| m.rcpt_to == ["auditor@example.com"])
        },
        || format!("no copy at the sink: {:?}", subjects(&sink)),
    );
    assert_eq!(subject_of(&copy), "[two] delayed and moved");
    assert_eq!(copy.mail_from, "");
    let out = text(
        &node,
        &[
            "quarantine",
            "delete",
            "--all-results",
            "--subject",
            "delayed",
            "--yes",
        ],
    );
    assert!(
        out.contains(&format!("MID {moved} deleted from quarantine")),
        "{out}"
    );
    assert!(search_mids(&node, &[]).is_empty());
}

// ---------------------------------------------------------------------------------------
// quickstart
// ---------------------------------------------------------------------------------------

#[test]
fn quickstart_demo_holds_the_test_subject_and_card_numbers_in_policy() {
    let sink = Sink::accepting();
    let relay = sink.host_port();
    let Quickstart {
        node,
        data,
        cpq_port,
        ..
    } = start_quickstart(&["--relay-host", &relay]);
    let stdout = wait_until(
        DELIVERY,
        || {
            let t = fs::read_to_string(node.dir().join("node.stdout.log")).ok()?;
            t.contains("Stop with Ctrl-C").then_some(t)
        },
        || "the quickstart banner".into(),
    );
    // The quarantine commands run on the manager (quickstart prints the canonical path).
    let manager = fs::canonicalize(data.join("manager")).unwrap();
    for want in [
        "[quarantine-test]".to_string(),
        "4111 1111 1111 1111".into(),
        format!("pvo --dir {} quarantine search", manager.display()),
        format!("pvo --dir {} quarantine release MID", manager.display()),
        format!("Manager cpq_listener listening on {MANAGER_IP}:{cpq_port}"),
    ] {
        assert!(stdout.contains(&want), "banner lacks {want:?}:\n{stdout}");
    }
    let on_manager = |args: &[&str]| -> String {
        let mut cmd = Command::new(pvo_bin());
        cmd.arg("--dir").arg(&manager).args(args);
        let (status, out, err) = run_with_timeout(&mut cmd, COMMAND);
        assert!(
            status.success(),
            "`pvo --dir {} {}`: {status}\n{out}\n{err}",
            manager.display(),
            args.join(" ")
        );
        out
    };

    let by_subject = send(&node, &plain("[quarantine-test] demo", "hello"));
    let by_card = send(&node, &plain("order", "card 4111 1111 1111 1111"));
    let clean = send(&node, &plain("plain", "hello"));
    let line = wait_quarantined(
        &node,
        by_subject,
        "Policy",
        "content filter:quarantine_test)",
    );
    assert!(line.ends_with("(centralized)"), "{line}");
    let line = wait_quarantined(&node, by_card, "Policy", "DLP policy:payment_cards)");
    assert!(line.ends_with("(centralized)"), "{line}");
    wait_delivered(&sink, "plain");
    assert!(node.mail_logs().contains(&format!("MID {clean} ")));

    // Both went to the manager, which holds them under its own MIDs.
    let manager_mid = |mid: u64| -> u64 {
        let needle = format!("MID {mid} RID [0] Response '2.0.0 Ok: Message ");
        let log = node.wait_for_log(&needle, DELIVERY);
        let line = log_lines(&log, &needle)[0];
        line[line.find(&needle).unwrap() + needle.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no manager MID in {line}"))
    };
    let (k_subject, k_card) = (manager_mid(by_subject), manager_mid(by_card));
    let found: Value = serde_json::from_str(&on_manager(&["quarantine", "search", "--json"]))
        .expect("search --json");
    let mut held: Vec<(u64, u64)> = found["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            assert_eq!(m["gateway"], "gw1", "{m:#}");
            (
                m["mid"].as_u64().unwrap(),
                m["gateway_mid"].as_u64().unwrap(),
            )
        })
        .collect();
    held.sort();
    let mut want = vec![(k_subject, by_subject), (k_card, by_card)];
    want.sort();
    assert_eq!(held, want, "{found:#}");

    let out = on_manager(&[
        "quarantine",
        "release",
        &k_subject.to_string(),
        &k_card.to_string(),
    ]);
    assert!(
        out.contains("2 messages: 2 released from all quarantines."),
        "{out}"
    );
    wait_delivered(&sink, "[quarantine-test] demo");
    wait_delivered(&sink, "order");
    let log = node.mail_logs();
    for mid in [by_subject, by_card] {
        assert!(
            log.contains(&format!(
                "by the manager manager: original MID {mid} release "
            )),
            "{log}"
        );
    }
}
