//! In-process tests of the node through the `pvo` library: the configuration loader, and
//! a node started inside this test process (`pvo::node::Node::start`) that takes mail
//! over real SMTP on loopback, keeps it queued across a restart on the same data
//! directory, and answers a command dispatched to it directly (no admin socket, no `pvo`
//! process). They see the node's state through its own API, which the end-to-end tests
//! can only read from printed text.

use std::fs;
use std::path::Path;
use std::time::Duration;

use pvo::commands::protocol::Request;
use pvo::core::config::{Config, Role};
use pvo::node::Node;
use serde_json::{json, Value};

use crate::support::{free_port, wait_until, SmtpClient, TRUSTED};

/// A gateway on 127.0.0.1 (listener port chosen by the system) that relays for
/// 127.0.0.1 and routes every domain to `next_hop`, retrying a failed delivery only an
/// hour later, so that a deferred message stays in the queue for the whole test.
fn gateway_toml(next_hop: &str) -> String {
    format!(
        r#"[node]
hostname = "inproc.example.com"
data_dir = "."

[[interface]]
name = "Loopback"
address = "127.0.0.1"
hostname = "inproc.example.com"

[[policy]]
name = "RELAYED"
behavior = "relay"

[[listener]]
name = "OutgoingMail"
interface = "Loopback"
port = 0
  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "$RELAYED"
  [[listener.rat]]
  recipients = ["example.com"]
  action = "accept"

[delivery.bounce]
initial_retry = 3600

[tls.outbound]
default = "off"

[[smtp_route]]
domain = "ALL"
hosts = ["{next_hop}"]
"#
    )
}

/// A runtime like the binary's (`pvo gateway run`): several workers, so the node's tasks
/// run while this thread speaks SMTP to it.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// `Config::load` of `dir/pvo.toml`, started as a node on `rt`.
fn start(rt: &tokio::runtime::Runtime, dir: &Path) -> Node {
    let path = dir.join("pvo.toml");
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("configuration error: {e}"));
    rt.block_on(Node::start(cfg, path))
        .unwrap_or_else(|e| panic!("node start: {e:#}"))
}

/// Runs `command` with `args` on `node` as the local Administrator, the way the admin
/// socket hands a request to the node; panics unless it succeeds; its `data`.
fn dispatch(rt: &tokio::runtime::Runtime, node: &Node, command: &str, args: Value) -> Value {
    let typed = pvo::commands::command::Command::from_parts(command, args)
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    let req = Request::new(typed);
    let resp = rt.block_on(pvo::commands::dispatch(&node.shared, req));
    assert!(resp.ok, "{command}: {}", resp.text);
    resp.data
}

/// The queued recipients and their states (`showrecipients --all`), sorted.
fn queued(rt: &tokio::runtime::Runtime, node: &Node) -> Vec<(String, String)> {
    let data = dispatch(
        rt,
        node,
        "showrecipients",
        json!({ "host": null, "sender": null, "all": true }),
    );
    let mut rcpts: Vec<(String, String)> = data["recipients"]
        .as_array()
        .unwrap_or_else(|| panic!("no recipients in {data:#}"))
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().expect("recipient").to_string(),
                r["state"].as_str().expect("state").to_string(),
            )
        })
        .collect();
    rcpts.sort();
    rcpts
}

/// Waits until the queue holds exactly `want` (recipient, state), sorted.
fn wait_queued(rt: &tokio::runtime::Runtime, node: &Node, want: &[(String, String)]) {
    let last = std::cell::RefCell::new(Vec::new());
    wait_until(
        Duration::from_secs(60),
        || {
            *last.borrow_mut() = queued(rt, node);
            (*last.borrow() == want).then_some(())
        },
        || format!("the queue never held {want:?}; last {:?}", last.borrow()),
    );
}

#[test]
fn config_load_names_the_file_line_and_key_of_a_bad_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pvo.toml");

    let missing = Config::load(&path).unwrap_err().to_string();
    assert!(
        missing.starts_with(&path.display().to_string()) && missing.contains("cannot read"),
        "{missing}"
    );

    let good = gateway_toml("[127.0.0.1]:2526");
    fs::write(&path, &good).unwrap();
    let cfg = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.role, Role::Gateway);
    // `data_dir = "."` is the configuration file's directory, not the working directory.
    assert_eq!(
        fs::canonicalize(&cfg.data_dir).unwrap(),
        fs::canonicalize(dir.path()).unwrap()
    );
    assert_eq!(cfg.listeners[0].name, "OutgoingMail");

    // Line 21 of the file above is the HAT's policy.
    fs::write(&path, good.replace("\"$RELAYED\"", "\"$NOPE\"")).unwrap();
    let e = Config::load(&path).unwrap_err();
    let text = e.to_string();
    assert_eq!(e.line, Some(21), "{text}");
    assert!(
        text.starts_with(&format!("{} line 21, key listener", path.display())),
        "{text}"
    );
    assert!(text.contains("unknown policy"), "{text}");
}

#[test]
fn a_node_in_this_process_keeps_queued_mail_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // A reserved port nothing listens on: the next hop is down.
    let down = format!("[127.0.0.1]:{}", free_port());
    fs::write(dir.path().join("pvo.toml"), gateway_toml(&down)).unwrap();

    let rt = runtime();
    let node = start(&rt, dir.path());
    let addr = node
        .listeners
        .iter()
        .find(|(name, _)| name == "OutgoingMail")
        .map(|(_, a)| *a)
        .expect("the OutgoingMail listener");
    let mut c = SmtpClient::open(addr, Some(TRUSTED));
    c.expect("EHLO client.example.org", 250);
    let r = c.send_message(
        "sender@example.org",
        &["one@example.com", "two@example.com"],
        "Subject: in process\r\n\r\nHello.\r\n",
    );
    assert_eq!(r.code, 250, "end of data: {}", r.raw());
    c.quit();

    // The first attempt fails (nothing listens) and the next is an hour away.
    let want: Vec<(String, String)> = ["one@example.com", "two@example.com"]
        .iter()
        .map(|r| (r.to_string(), "deferred".to_string()))
        .collect();
    wait_queued(&rt, &node, &want);

    // A clean stop, then a new node on the same directory in a new runtime: the spool
    // is recovered and the queue holds the same recipients, nothing more.
    rt.block_on(node.shutdown());
    drop(node);
    rt.shutdown_timeout(Duration::from_secs(10));

    // Recovered recipients may be tried once more at start (and fail again) before they
    // are deferred: wait for that, rather than for a state of the moment.
    let rt = runtime();
    let node = start(&rt, dir.path());
    wait_queued(&rt, &node, &want);
    rt.block_on(node.shutdown());
}
