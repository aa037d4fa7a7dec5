//! End-to-end tests of the pending-configuration model and the
//! configuration commands (`deliveryconfig`, `sslconfig`, `interfaceconfig`,
//! `listenerconfig`, `smtproutes`, `commit`, `commitdetail`, `rollback`, `clearchanges`,
//! `showconfig`): a real `pvo gateway run`, the real `pvo` CLI over the admin socket, and
//! real next hops (aiosmtpd sinks), all on loopback with kernel-chosen ports.
//!
//! The CLI runs without a terminal (stdin is null), so it never prompts: every command
//! here is given as a script would give it. `USER=alice` makes the committing user
//! predictable.

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    free_port, pvo_bin, run_with_timeout, wait_until, Node, Reply, Sink, SmtpClient, TRUSTED,
};

const DELIVERY: Duration = Duration::from_secs(60);

/// A gateway that relays for 127.0.0.1 and routes every domain to `sink`; with
/// `second`, a second (private) listener that the tests move around.
fn config(sink: &Sink, second: bool) -> String {
    let second = if second {
        r#"
[[listener]]
name = "Second"
interface = "Loopback"
port = 0
type = "private"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"
"#
    } else {
        ""
    };
    format!(
        r#"# The test gateway. This comment must survive every edit.
[node]
hostname = "gw1.example.com"
data_dir = "."

[[interface]]
name = "Loopback"
address = "127.0.0.1"
hostname = "gw1.example.com"

[[policy]]
name = "RELAYED"
behavior = "relay"
max_concurrency = 600

[[policy]]
name = "ACCEPTED"
behavior = "accept"

[[listener]]
name = "IncomingMail"
interface = "Loopback"
port = 0                       # any free port
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

  [[listener.hat]]
  group = "ALL"
  senders = ["ALL"]
  policy = "ACCEPTED"

  [[listener.rat]]
  recipients = ["example.com"]
  action = "accept"
{second}
[[smtp_route]]
domain = "ALL"
hosts = ["{sink}"]

[delivery]
default_interface = "Auto"
max_concurrency = 500

[delivery.bounce]
initial_retry = 1

[tls.outbound]
default = "off"

[logs]
max_size = 104857600
"#,
        sink = sink.host_port()
    )
}

/// What one `pvo` command printed.
struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Out {
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `pvo ARGS --dir DATA_DIR` as user alice, without a terminal.
fn pvo(node: &Node, args: &[&str]) -> Out {
    let dir = node.data_dir();
    let (status, stdout, stderr) = run_with_timeout(
        Command::new(pvo_bin())
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .env("USER", "alice")
            .env_remove("SUDO_USER"),
        Duration::from_secs(120),
    );
    Out {
        ok: status.success(),
        stdout,
        stderr,
    }
}

/// Runs a command that must succeed; returns its stdout.
fn pvo_ok(node: &Node, args: &[&str]) -> String {
    let out = pvo(node, args);
    assert!(out.ok, "pvo {args:?} failed:\n{}", out.all());
    out.stdout
}

/// Runs a command that must fail; returns what it printed.
fn pvo_err(node: &Node, args: &[&str]) -> String {
    let out = pvo(node, args);
    assert!(!out.ok, "pvo {args:?} should have failed:\n{}", out.all());
    out.all()
}

/// `pvo --json ARGS`: the `{ok, data, text}` answer.
fn pvo_json(node: &Node, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = pvo(node, &all);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("pvo --json {args:?}: {e}\n{}", out.all()))
}

const PENDING: &str = "Changes pending. Use `pvo commit` to apply them.";

/// One message from 127.0.0.1 (relaying is allowed) on a connection of its own.
fn send(addr: SocketAddr, rcpt: &str, subject: &str) -> Reply {
    let (mut c, greeting) = SmtpClient::connect(addr, Some(TRUSTED))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    assert_eq!(greeting.code, 220, "{}", greeting.raw());
    c.expect("EHLO client.test", 250);
    let reply = c.send_message(
        "sender@example.org",
        &[rcpt],
        &format!("From: <sender@example.org>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"),
    );
    c.quit();
    reply
}

/// Waits until the sink holds a message with this subject.
fn wait_for_subject(sink: &Sink, subject: &str) {
    wait_until(
        DELIVERY,
        || {
            sink.messages()
                .iter()
                .any(|m| m.header("Subject").as_deref() == Some(subject))
                .then_some(())
        },
        || format!("no message {subject:?} at the sink on port {}", sink.port),
    );
}

fn has_subject(sink: &Sink, subject: &str) -> bool {
    sink.messages()
        .iter()
        .any(|m| m.header("Subject").as_deref() == Some(subject))
}

/// Waits until every outbound connection the node opened has closed. A delivery
/// connection stays open briefly for more mail to its host and keeps the route it was
/// opened with; tests that change a route wait for it so the next message opens a new one.
fn wait_for_outbound_closed(node: &Node) {
    node.wait_for_log_matching(
        DELIVERY,
        |log| {
            let opened = log.lines().filter(|l| l.contains("New SMTP DCID ")).count();
            let closed = log
                .lines()
                .filter_map(crate::support::strip_log_prefix)
                .filter(|l| l.starts_with("DCID ") && l.ends_with(" close"))
                .count();
            opened == closed
        },
        "every DCID closed",
    );
}

/// True while something accepts TCP connections on `addr`.
fn accepts(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).is_ok()
}

#[test]
fn commit_with_nothing_pending_says_so() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink, false));
    assert!(pvo_ok(&node, &["commit", "-m", "nothing"]).contains("There are no changes to commit."));
    let j = pvo_json(&node, &["commit"]);
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["data"]["committed"], false, "{j}");
    assert!(pvo_ok(&node, &["showconfig", "--pending"]).contains("There are no changes pending."));
    assert!(pvo_ok(&node, &["clearchanges"]).contains("There are no changes to clear."));
}

#[test]
fn a_route_change_stays_pending_until_commit_then_applies_and_is_in_the_history() {
    let sink_all = Sink::accepting();
    let sink_special = Sink::accepting();
    let node = Node::start(&config(&sink_all, false));
    let committed_before = std::fs::read_to_string(node.config_path()).unwrap();

    let out = pvo_ok(
        &node,
        &[
            "smtproutes",
            "new",
            "--domain",
            "special.test",
            "--hosts",
            &sink_special.host_port(),
        ],
    );
    assert!(
        out.contains("Route added: special.test") && out.contains(PENDING),
        "{out}"
    );
    let listing = pvo_ok(&node, &["smtproutes"]);
    assert!(
        listing.contains("special.test") && listing.contains(&sink_special.host_port()),
        "{listing}"
    );

    // Pending, not committed: the file and the running node are unchanged.
    let committed = pvo_ok(&node, &["showconfig"]);
    let pending = pvo_ok(&node, &["showconfig", "--pending"]);
    assert_ne!(committed, pending);
    assert!(
        !committed.contains("special.test") && pending.contains("special.test"),
        "{pending}"
    );
    assert!(
        pending.contains("# The test gateway. This comment must survive every edit."),
        "{pending}"
    );
    assert_eq!(
        std::fs::read_to_string(node.config_path()).unwrap(),
        committed_before
    );
    let j = pvo_json(&node, &["showconfig", "--pending"]);
    assert_eq!(
        j["data"]["routes"].as_array().map(|r| r.len()),
        Some(2),
        "{j}"
    );
    assert_eq!(
        send(node.addr(), "user@special.test", "before commit").code,
        250
    );
    wait_for_subject(&sink_all, "before commit");
    assert_eq!(
        sink_special.count(),
        0,
        "a pending route must not be in force"
    );
    wait_for_outbound_closed(&node);

    let out = pvo_ok(&node, &["commit", "-m", "route special.test"]);
    assert!(out.starts_with("Changes committed: "), "{out}");
    assert_eq!(
        send(node.addr(), "user@special.test", "after commit").code,
        250
    );
    wait_for_subject(&sink_special, "after commit");
    assert!(!has_subject(&sink_all, "after commit"));
    assert!(std::fs::read_to_string(node.config_path())
        .unwrap()
        .contains("special.test"));
    assert!(pvo_ok(&node, &["showconfig", "--pending"]).contains("There are no changes pending."));

    let detail = pvo_ok(&node, &["commitdetail"]);
    assert!(
        detail.contains("alice") && detail.contains("route special.test"),
        "{detail}"
    );
    let j = pvo_json(&node, &["commitdetail"]);
    let newest = &j["data"]["history"][0];
    assert_eq!(
        (
            newest["n"].as_u64(),
            newest["user"].as_str(),
            newest["comment"].as_str()
        ),
        (Some(1), Some("alice"), Some("route special.test")),
        "{j}"
    );
    assert_eq!(
        j["data"]["history"][1]["n"], 0,
        "entry 0 is the configuration the node started with: {j}"
    );
    assert_eq!(newest["changes"][0]["command"], "smtproutes", "{j}");

    // Rollback to 0: the route is gone from the file and from the node, as a new entry.
    wait_for_outbound_closed(&node);
    let out = pvo_ok(&node, &["rollback", "0"]);
    assert!(
        out.contains("Rolled back to commit 0.") && out.contains("Changes committed: "),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(node.config_path()).unwrap(),
        committed_before
    );
    assert_eq!(
        send(node.addr(), "user@special.test", "after rollback").code,
        250
    );
    wait_for_subject(&sink_all, "after rollback");
    assert!(!has_subject(&sink_special, "after rollback"));
    let j = pvo_json(&node, &["commitdetail"]);
    assert_eq!(j["data"]["history"][0]["n"], 2, "{j}");
    assert_eq!(j["data"]["history"][0]["comment"], "rollback to 0", "{j}");

    // A rollback does not silently discard pending changes.
    pvo_ok(&node, &["deliveryconfig", "--max-concurrency", "42"]);
    let err = pvo_err(&node, &["rollback", "1"]);
    assert!(
        err.contains("There are changes pending (by alice)") && err.contains("--yes"),
        "{err}"
    );
    assert!(pvo_ok(&node, &["showconfig", "--pending"]).contains("max_concurrency = 42"));
    wait_for_outbound_closed(&node);
    let out = pvo_ok(&node, &["rollback", "1", "--yes"]);
    assert!(out.contains("Pending changes discarded."), "{out}");
    assert!(pvo_ok(&node, &["showconfig", "--pending"]).contains("There are no changes pending."));
    assert!(pvo_ok(&node, &["showconfig"]).contains("special.test"));
    assert_eq!(
        send(node.addr(), "user@special.test", "after rollback to 1").code,
        250
    );
    wait_for_subject(&sink_special, "after rollback to 1");

    let err = pvo_err(&node, &["rollback", "99"]);
    assert!(
        err.contains("There is no commit 99; allowed: 0, 1, 2, 3"),
        "{err}"
    );
    // Without N and without a terminal: the history, and how to choose.
    let out = pvo_ok(&node, &["rollback"]);
    assert!(
        out.contains("rollback to 0") && out.contains("Use `pvo rollback N`"),
        "{out}"
    );
}

#[test]
fn clearchanges_discards_pending_changes_and_editors_refuse_invalid_values() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink, false));
    let out = pvo_ok(&node, &["deliveryconfig"]);
    assert!(
        out.contains("Default interface to deliver mail: Auto")
            && out.contains("Maximum concurrent outbound connections: 500"),
        "{out}"
    );

    // An unknown interface: refused, with the allowed names; nothing becomes pending.
    let err = pvo_err(&node, &["deliveryconfig", "--interface", "eth9"]);
    assert!(
        err.contains("Unknown interface \"eth9\"; allowed: Auto, Loopback."),
        "{err}"
    );
    let j = pvo_json(&node, &["deliveryconfig", "--interface", "eth9"]);
    assert_eq!(j["ok"], false, "{j}");
    // A value out of range: the key and what is allowed.
    let err = pvo_err(&node, &["deliveryconfig", "--max-concurrency", "0"]);
    assert!(
        err.contains("key delivery.max_concurrency")
            && err.contains("allowed: an integer from 1 to 10000"),
        "{err}"
    );
    assert!(pvo_ok(&node, &["showconfig", "--pending"]).contains("There are no changes pending."));

    let out = pvo_ok(
        &node,
        &[
            "deliveryconfig",
            "--interface",
            "loopback",
            "--max-concurrency",
            "7",
        ],
    );
    assert!(
        out.contains("Default interface to deliver mail: Loopback") && out.contains(PENDING),
        "{out}"
    );
    let j = pvo_json(&node, &["deliveryconfig"]);
    assert_eq!(
        (
            j["data"]["default_interface"].as_str(),
            j["data"]["max_concurrency"].as_u64(),
            j["data"]["pending"].as_bool()
        ),
        (Some("Loopback"), Some(7), Some(true)),
        "{j}"
    );

    // The interface is now used by deliveryconfig (pending) and by the listener.
    let err = pvo_err(&node, &["interfaceconfig", "delete", "Loopback"]);
    assert!(
        err.contains("listener IncomingMail") && err.contains("deliveryconfig"),
        "{err}"
    );

    assert!(pvo_ok(&node, &["clearchanges"]).contains("Changes cleared."));
    assert!(pvo_ok(&node, &["clearchanges"]).contains("There are no changes to clear."));
    assert!(pvo_ok(&node, &["commit", "-m", "x"]).contains("There are no changes to commit."));
    let out = pvo_ok(&node, &["deliveryconfig"]);
    assert!(
        out.contains("Default interface to deliver mail: Auto") && out.contains(": 500"),
        "{out}"
    );
}

#[test]
fn an_invalid_commit_names_the_key_and_the_node_keeps_its_configuration() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink, false));
    let old = node.addr();

    // A port another program listens on: valid as configuration, refused at commit.
    let squatter = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    pvo_ok(
        &node,
        &[
            "listenerconfig",
            "edit",
            "IncomingMail",
            "--port",
            &taken.to_string(),
        ],
    );
    let err = pvo_err(&node, &["commit", "-m", "taken port"]);
    assert!(err.contains("Changes not committed:"), "{err}");
    assert!(
        err.contains("pending.toml line 23, key listener[0].port"),
        "{err}"
    );
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{taken}"))
            && err.contains("allowed: a port no other program"),
        "{err}"
    );
    assert!(err.contains("the changes stay pending"), "{err}");
    assert!(pvo_ok(&node, &["showconfig", "--pending"]).contains(&format!("port = {taken}")));
    assert!(!pvo_ok(&node, &["showconfig"]).contains(&format!("port = {taken}")));
    assert_eq!(
        send(old, "user@example.com", "old listener after failed commit").code,
        250
    );
    wait_for_subject(&sink, "old listener after failed commit");
    drop(squatter);

    // An invalid value written by hand into pending.toml.
    let pending_path = node.data_dir().join("config/pending.toml");
    let text = std::fs::read_to_string(&pending_path)
        .unwrap()
        .replace("behavior = \"relay\"", "behavior = \"relai\"");
    std::fs::write(&pending_path, text).unwrap();
    let j = pvo_json(&node, &["commit", "-m", "hand-edited"]);
    assert_eq!(j["ok"], false, "{j}");
    let err = j["text"].as_str().unwrap();
    assert!(err.contains("line 13, key policy[0].behavior: \"relai\" is not a behavior; allowed: \"accept\", \"relay\", \"reject\", \"tcprefuse\""), "{err}");
    // The node still relays for 127.0.0.1 on its old listener.
    assert_eq!(
        send(old, "someone@elsewhere.test", "still relaying").code,
        250
    );
    wait_for_subject(&sink, "still relaying");
    // Editors refuse to build on an invalid pending configuration, and say how to get out.
    let err = pvo_err(
        &node,
        &[
            "smtproutes",
            "new",
            "--domain",
            "x.test",
            "--hosts",
            "127.0.0.1:1",
        ],
    );
    assert!(
        err.contains("The pending configuration is not valid") && err.contains("pvo clearchanges"),
        "{err}"
    );
    pvo_ok(&node, &["clearchanges"]);
    assert!(pvo_ok(&node, &["commitdetail"]).contains("No changes pending."));
}

#[test]
fn a_listener_port_change_moves_the_listener_at_commit() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink, false));
    let old = node.addr();
    let port = free_port();
    let new = SocketAddr::new(TRUSTED, port);
    let out = pvo_ok(
        &node,
        &[
            "listenerconfig",
            "edit",
            "IncomingMail",
            "--port",
            &port.to_string(),
        ],
    );
    assert!(
        out.contains(&format!("Listener IncomingMail: port 0 -> {port}.")) && out.contains(PENDING),
        "{out}"
    );
    assert!(
        accepts(old) && !accepts(new),
        "nothing moves before the commit"
    );

    let j = pvo_json(&node, &["commit", "-m", "move IncomingMail"]);
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["data"]["commit"]["comment"], "move IncomingMail", "{j}");
    wait_until(
        DELIVERY,
        || (!accepts(old)).then_some(()),
        || format!("the old port {old} still accepts"),
    );
    assert_eq!(send(new, "user@example.com", "on the new port").code, 250);
    wait_for_subject(&sink, "on the new port");
    let j = pvo_json(&node, &["listenerconfig"]);
    let l = &j["data"]["listeners"][0];
    assert_eq!(
        (l["port"].as_u64(), l["running"]["address"].as_str()),
        (Some(port as u64), Some(new.to_string().as_str())),
        "{j}"
    );
}

#[test]
fn a_commit_under_load_loses_and_delays_no_message() {
    const MESSAGES: usize = 300;
    let sink = Sink::accepting();
    let other = Sink::accepting();
    let node = Node::start(&config(&sink, true));
    let addr = node.listener("IncomingMail");
    let second_old = node.listener("Second");
    let second_new = SocketAddr::new(TRUSTED, free_port());

    // The changes are pending before the load starts; the commit happens in the middle.
    pvo_ok(
        &node,
        &[
            "listenerconfig",
            "edit",
            "Second",
            "--port",
            &second_new.port().to_string(),
        ],
    );
    pvo_ok(
        &node,
        &[
            "smtproutes",
            "new",
            "--domain",
            "other.test",
            "--hosts",
            &other.host_port(),
        ],
    );

    let sent = Arc::new(AtomicUsize::new(0));
    let sender = {
        let sent = sent.clone();
        thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut refused = Vec::new();
            for i in 0..MESSAGES {
                let start = Instant::now();
                let reply = send(addr, "user@example.com", &format!("load {i}"));
                slowest = slowest.max(start.elapsed());
                if reply.code != 250 {
                    refused.push((i, reply.raw()));
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            (slowest, refused)
        })
    };
    wait_until(
        DELIVERY,
        || (sent.load(Ordering::SeqCst) >= 50).then_some(()),
        || "50 messages sent".into(),
    );
    let out = pvo_ok(&node, &["commit", "-m", "under load"]);
    assert!(out.starts_with("Changes committed: "), "{out}");
    let at_commit = sent.load(Ordering::SeqCst);
    let (slowest, refused) = sender.join().unwrap();
    assert!(
        at_commit < MESSAGES,
        "the commit must happen while messages are sent (all {at_commit} were sent already)"
    );
    assert!(refused.is_empty(), "refused during the commit: {refused:?}");
    assert!(
        slowest < Duration::from_secs(10),
        "a message took {slowest:?}"
    );

    let messages = sink.wait_for_messages(MESSAGES, DELIVERY);
    let mut subjects: Vec<String> = messages
        .iter()
        .filter_map(|m| m.header("Subject"))
        .collect();
    subjects.sort();
    subjects.dedup();
    assert_eq!(
        subjects.len(),
        MESSAGES,
        "every message arrives exactly once"
    );

    // The committed changes are in force.
    wait_until(
        DELIVERY,
        || (!accepts(second_old)).then_some(()),
        || format!("Second still listens on {second_old}"),
    );
    assert!(accepts(second_new));
    assert_eq!(send(addr, "user@other.test", "routed to other").code, 250);
    wait_for_subject(&other, "routed to other");
}

#[test]
fn interfaces_listeners_and_access_tables_are_edited_with_flags() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink, false));

    let out = pvo_ok(&node, &["interfaceconfig"]);
    assert!(
        out.contains("1. Loopback (127.0.0.1: gw1.example.com)"),
        "{out}"
    );
    let out = pvo_ok(
        &node,
        &[
            "interfaceconfig",
            "new",
            "--name",
            "Data2",
            "--address",
            "127.0.0.2",
            "--hostname",
            "data2.example.com",
        ],
    );
    assert!(
        out.contains("Interface Data2 (127.0.0.2: data2.example.com) created.")
            && out.contains(PENDING),
        "{out}"
    );
    let err = pvo_err(
        &node,
        &[
            "interfaceconfig",
            "new",
            "--name",
            "Data3",
            "--address",
            "127.0.0.300",
        ],
    );
    assert!(
        err.contains("\"127.0.0.300\" is not an IP address"),
        "{err}"
    );

    let out = pvo_ok(
        &node,
        &[
            "listenerconfig",
            "new",
            "--name",
            "Relay2",
            "--interface",
            "data2",
            "--port",
            "0",
            "--type",
            "private",
            "--hat-add",
            "RELAYLIST=127.0.0.1,10.0.0.0/8:RELAYED",
            "--rat-add",
            "ALL:accept",
        ],
    );
    assert!(
        out.contains("Listener Relay2 (on Data2, 127.0.0.2) SMTP TCP Port 0 private created."),
        "{out}"
    );
    let err = pvo_err(
        &node,
        &[
            "listenerconfig",
            "edit",
            "IncomingMail",
            "--hat-add",
            "PARTNERS=10.1.0.0/16:NOPE",
        ],
    );
    assert!(
        err.contains("Unknown policy \"NOPE\"")
            && err.contains("allowed: \"RELAYED\", \"ACCEPTED\""),
        "{err}"
    );
    let err = pvo_err(
        &node,
        &[
            "listenerconfig",
            "edit",
            "IncomingMail",
            "--hat-add",
            "PARTNERS=10.1.0.0/99:RELAYED",
        ],
    );
    assert!(
        err.contains("key listener[0].hat[1].senders") && err.contains("is not a sender; allowed:"),
        "{err}"
    );
    pvo_ok(
        &node,
        &[
            "listenerconfig",
            "edit",
            "IncomingMail",
            "--hat-add",
            "PARTNERS=10.1.0.0/16,.partner.example:RELAYED",
            "--rat-add",
            "example.net:accept",
            "--rat-delete",
            "example.com",
        ],
    );
    let out = pvo_ok(&node, &["listenerconfig"]);
    assert!(
        out.contains("1. IncomingMail (on Loopback, 127.0.0.1) SMTP TCP Port 0 Public"),
        "{out}"
    );
    assert!(out.contains("     RELAYLIST: 127.0.0.1 -> $RELAYED (RELAY)\n     PARTNERS: 10.1.0.0/16, .partner.example -> $RELAYED (RELAY)\n     ALL -> $ACCEPTED (ACCEPT)"), "{out}");
    assert!(
        out.contains("     example.net -> ACCEPT\n     (anything else) -> REJECT"),
        "{out}"
    );
    assert!(
        out.contains("2. Relay2 (on Data2, 127.0.0.2) SMTP TCP Port 0 Private"),
        "{out}"
    );

    let err = pvo_err(&node, &["interfaceconfig", "delete", "Data2"]);
    assert!(
        err.contains("Interface Data2 is in use by listener Relay2"),
        "{err}"
    );
    let j = pvo_json(&node, &["listenerconfig"]);
    assert_eq!(
        j["data"]["listeners"][0]["hat"][1]["group"], "PARTNERS",
        "{j}"
    );
    assert_eq!(j["data"]["listeners"][1]["interface"], "Data2", "{j}");

    // Nothing of this is in force yet: mail for example.com is still accepted from anyone.
    let untrusted = Some(crate::support::UNTRUSTED);
    let (mut c, _) = SmtpClient::connect(node.addr(), untrusted).unwrap();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@example.org>", 250);
    c.expect("RCPT TO:<user@example.com>", 250);
    c.quit();

    pvo_ok(&node, &["commit", "-m", "tables"]);
    let (mut c, _) = SmtpClient::connect(node.addr(), untrusted).unwrap();
    c.expect("EHLO x.test", 250);
    c.expect("MAIL FROM:<a@example.org>", 250);
    assert!(
        !c.command("RCPT TO:<user@example.com>").is_positive(),
        "example.com left the RAT"
    );
    c.expect("RCPT TO:<user@example.net>", 250);
    c.quit();
    let relay2 = wait_until(
        DELIVERY,
        || {
            node.mail_logs()
                .lines()
                .find(|l| l.contains("Listener Relay2 listening on"))
                .map(String::from)
        },
        || "Relay2 started".into(),
    );
    assert!(relay2.contains("127.0.0.2:"), "{relay2}");

    pvo_ok(&node, &["listenerconfig", "delete", "Relay2"]);
    pvo_ok(&node, &["interfaceconfig", "delete", "Data2"]);
    pvo_ok(&node, &["smtproutes", "delete", "--domain", "ALL"]);
    let err = pvo_err(&node, &["smtproutes", "delete", "--domain", "nope.test"]);
    assert!(err.contains("There is no route for nope.test"), "{err}");
    assert!(pvo_ok(&node, &["smtproutes"]).contains("There are currently no routes configured"));
    let pending = pvo_ok(&node, &["showconfig", "--pending"]);
    assert!(
        !pending.contains("Relay2")
            && !pending.contains("Data2")
            && pending.contains("# any free port"),
        "{pending}"
    );
}

#[test]
fn sslconfig_limits_the_cipher_suites_and_verify_lists_them() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink, false));
    let out = pvo_ok(&node, &["sslconfig"]);
    assert!(
        out.contains("Inbound SMTP method:  TLSv1.2, TLSv1.3")
            && out.contains("default (every suite rustls offers)"),
        "{out}"
    );
    assert!(
        out.contains("RC4, export and anonymous cipher suites do not exist in rustls"),
        "{out}"
    );

    let err = pvo_err(
        &node,
        &[
            "sslconfig",
            "--direction",
            "inbound",
            "--versions",
            "1.0,1.2",
        ],
    );
    assert!(
        err.contains("do not exist in rustls") && err.contains("allowed: 1.2, 1.3"),
        "{err}"
    );
    let err = pvo_err(
        &node,
        &[
            "sslconfig",
            "--direction",
            "outbound",
            "--ciphers",
            "EXP-RC4-MD5",
        ],
    );
    assert!(
        err.contains("key tls.outbound.ciphers")
            && err.contains("do not exist in rustls")
            && err.contains("allowed: \"TLS13_AES_256_GCM_SHA384\""),
        "{err}"
    );
    let err = pvo_err(
        &node,
        &[
            "sslconfig",
            "--direction",
            "inbound",
            "--ciphers",
            "TLS13_AES_128_GCM_SHA256",
        ],
    );
    assert!(
        err.contains("enables TLS 1.2 but no TLS 1.2 cipher suite is listed"),
        "{err}"
    );

    let out = pvo_ok(
        &node,
        &[
            "sslconfig",
            "--direction",
            "inbound",
            "--versions",
            "1.3",
            "--ciphers",
            "tls13_aes_256_gcm_sha384",
        ],
    );
    assert!(
        out.contains("Inbound SMTP ciphers: TLS13_AES_256_GCM_SHA384") && out.contains(PENDING),
        "{out}"
    );
    let out = pvo_ok(&node, &["sslconfig", "verify"]);
    assert!(out.contains("Inbound SMTP (after `pvo commit`): TLSv1.3\n  TLSv1.3  TLS13_AES_256_GCM_SHA384\nOutbound"), "{out}");
    pvo_ok(&node, &["commit", "-m", "tls 1.3 only inbound"]);
    let j = pvo_json(&node, &["sslconfig", "verify"]);
    let names: Vec<&str> = j["data"]["inbound"]["effective"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, ["TLS13_AES_256_GCM_SHA384"], "{j}");
    assert_eq!(
        j["data"]["outbound"]["effective"]
            .as_array()
            .map(|a| a.len()),
        Some(9),
        "{j}"
    );
    assert!(pvo_ok(&node, &["showconfig"]).contains("ciphers = [\"TLS13_AES_256_GCM_SHA384\"]"));

    pvo_ok(
        &node,
        &[
            "sslconfig",
            "--direction",
            "inbound",
            "--versions",
            "1.2,1.3",
            "--ciphers",
            "default",
        ],
    );
    assert!(!pvo_ok(&node, &["showconfig", "--pending"]).contains("ciphers ="));
}
