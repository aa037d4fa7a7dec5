//! End-to-end tests of the appliance command set: `pvo --dir DIR <command>` run
//! as a separate process against a real `pvo gateway run`, over the node's admin socket,
//! with real next hops (`tests/peers/sink.py`). Every command is checked in its appliance
//! text and in `--json`.
//!
//! Queued mail is made by routing a domain to a sink that answers `451` to RCPT, with a
//! first retry an hour away: the recipients then stay `deferred` until a command moves
//! them, so no test depends on the retry timer. A host that is down is a port on which
//! nothing listens (bound to 127.0.0.1:0 and closed again).
//!
//! Needs `scripts/install-test-deps` (python3-aiosmtpd).

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    connect, free_port, json, pvo, pvo_bin, pvo_in, run_with_timeout, text, wait_until, Node, Sink,
    SinkOptions, SmtpClient, TRUSTED,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const DELIVERY: Duration = Duration::from_secs(60);
/// One appliance command.
const COMMAND: Duration = Duration::from_secs(60);
/// The reply of a next hop that keeps mail queued.
const TRY_LATER: &str = "451 4.3.0 try later";

// ---------------------------------------------------------------------------------------
// The node and the command line
// ---------------------------------------------------------------------------------------

/// The knobs of the node configuration these tests use.
struct Config {
    /// `[[listener]]` names, each on 127.0.0.1 with a port from [`free_port`]: not
    /// `port = 0`, because `suspendlisteners` gives the port up until `resumelisteners`
    /// binds it again, and a kernel-chosen port could be handed to someone else between.
    listeners: Vec<&'static str>,
    /// domain -> `host:port` of its next hop; `ALL` is the default route.
    routes: Vec<(&'static str, String)>,
    /// Seconds until the first retry of a deferred recipient.
    initial_retry: u64,
}

impl Config {
    /// One listener, every domain to `default_hop`, retries an hour away.
    fn new(default_hop: &Sink) -> Config {
        Config {
            listeners: vec!["IncomingMail"],
            routes: vec![("ALL", default_hop.host_port())],
            initial_retry: 3600,
        }
    }

    fn route(mut self, domain: &'static str, hop: String) -> Config {
        // More specific routes first; `ALL` stays the fallback.
        self.routes.insert(0, (domain, hop));
        self
    }

    fn render(&self) -> String {
        let mut listeners = String::new();
        for name in &self.listeners {
            let port = free_port();
            listeners.push_str(&format!(
                r#"[[listener]]
name = "{name}"
interface = "Loopback"
port = {port}
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

  [[listener.hat]]
  group = "ALL"
  senders = ["ALL"]
  policy = "BLOCKED"

  [[listener.rat]]
  recipients = ["example.com"]
  action = "accept"

"#
            ));
        }
        let mut routes = String::new();
        for (domain, hop) in &self.routes {
            routes.push_str(&format!(
                "[[smtp_route]]\ndomain = \"{domain}\"\nhosts = [\"{hop}\"]\n\n"
            ));
        }
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

[[policy]]
name = "BLOCKED"
behavior = "reject"

{listeners}{routes}[delivery]
default_interface = "Auto"
max_concurrency = 20
max_messages_per_connection = 50

[delivery.bounce]
initial_retry = {initial_retry}
max_retry = 3600
max_queue_lifetime = 259200
max_retries = 100
send_dsn = true

[tls.inbound]
versions = ["1.2", "1.3"]

[tls.outbound]
default = "off"
versions = ["1.2", "1.3"]

[logs]
max_size = 104857600
keep = 2
"#,
            initial_retry = self.initial_retry,
        )
    }

    fn start(&self) -> Node {
        Node::start(&self.render())
    }
}

fn names(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|n| n.as_str().expect("a name").to_string())
        .collect()
}

/// The recipients `showrecipients --all --json` lists, with their states.
fn queued(node: &Node) -> Vec<(String, String)> {
    let data = json(node, &["showrecipients", "--all"]);
    data["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| {
            (
                r["recipient"].as_str().expect("recipient").to_string(),
                r["state"].as_str().expect("state").to_string(),
            )
        })
        .collect()
}

/// Waits until exactly `rcpts` are queued and every one of them is deferred.
fn wait_deferred(node: &Node, rcpts: &[&str]) {
    let want: BTreeSet<String> = rcpts.iter().map(|r| r.to_string()).collect();
    let last = std::cell::RefCell::new(Vec::new());
    wait_until(
        DELIVERY,
        || {
            let now = queued(node);
            let got: BTreeSet<String> = now.iter().map(|(r, _)| r.clone()).collect();
            let done = got == want && now.iter().all(|(_, s)| s == "deferred");
            *last.borrow_mut() = now;
            done.then_some(())
        },
        || {
            format!(
                "queue never held exactly {want:?}, all deferred; last {:?}",
                last.borrow()
            )
        },
    );
}

/// The set of recipients in a `showrecipients --json` answer.
fn recipient_set(data: &Value) -> BTreeSet<String> {
    data["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .map(|r| r["recipient"].as_str().expect("recipient").to_string())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Sends one message from a trusted address (the RELAYLIST may relay anywhere).
fn send(node: &Node, from: &str, to: &[&str], subject: &str) {
    let mut client = SmtpClient::open(node.addr(), Some(TRUSTED));
    client.expect("EHLO client.test", 250);
    let body = format!(
        "From: <{from}>\r\nTo: <{}>\r\nSubject: {subject}\r\n\r\nBody of {subject}.\r\n",
        to[0]
    );
    let reply = client.send_message(from, to, &body);
    assert_eq!(reply.code, 250, "end of data: {}", reply.raw());
    client.quit();
}

/// Connecting to `addr` is refused by the kernel (nothing listens).
fn assert_refused(addr: SocketAddr) {
    match connect(addr, None) {
        Err(e) => assert_eq!(
            e.kind(),
            ErrorKind::ConnectionRefused,
            "connect to {addr}: {e}"
        ),
        Ok(_) => panic!("connection to {addr} was accepted; the listener should be suspended"),
    }
}

/// A connection to `addr` gets the 220 banner.
fn assert_banner(addr: SocketAddr) {
    let (client, greeting) =
        SmtpClient::connect(addr, None).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    assert_eq!(greeting.code, 220, "greeting: {}", greeting.raw());
    client.quit();
}

/// `host:port` where nothing listens: a host that is down. A reserved port, so that no
/// `port = 0` bind of another test makes it listen later.
fn closed_port() -> String {
    let addr = std::net::SocketAddr::new(TRUSTED, free_port());
    assert!(
        TcpStream::connect(addr).is_err(),
        "{addr} still accepts after close"
    );
    addr.to_string()
}

/// The value after `label` on the line of `text` that starts with it (after spaces).
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no line {label:?} in:\n{text}"))
        .trim()
}

/// The numbers of the counter row `label` of `status` (Reset, Uptime, Lifetime).
fn counter_row(text: &str, label: &str) -> Vec<u64> {
    field(text, label)
        .split_whitespace()
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("row {label:?}: {text}"))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// status, suspendlisteners, resumelisteners
// ---------------------------------------------------------------------------------------

#[test]
fn status_shows_online_counters_that_move_and_listeners_in_detail() {
    let sink = Sink::accepting();
    let node = Config::new(&sink).start();

    let t = text(&node, &["status"]);
    assert_eq!(field(&t, "System status:"), "Online", "{t}");
    assert!(
        t.contains("Enter \"status detail\" for more information."),
        "{t}"
    );
    for label in [
        "Status as of:",
        "Up since:",
        "Last counter reset:",
        "Oldest Message:",
    ] {
        field(&t, label);
    }
    assert!(
        t.contains("Counters:")
            && t.contains("Reset")
            && t.contains("Uptime")
            && t.contains("Lifetime"),
        "{t}"
    );
    assert_eq!(counter_row(&t, "Messages Received"), vec![0, 0, 0], "{t}");
    let d = json(&node, &["status"]);
    assert_eq!(d["system_status"], "Online", "{d:#}");
    assert_eq!(d["counters"]["uptime"]["messages_received"], 0, "{d:#}");
    assert_eq!(d["delivery_suspended"], false, "{d:#}");

    send(
        &node,
        "alice@example.org",
        &["a@example.com", "b@example.com"],
        "counted",
    );
    sink.wait_for_messages(1, DELIVERY);
    // Delivered Recipients is counted when the queue manager hears back from the
    // connection, a moment after the sink stored the message.
    let d = wait_until(
        DELIVERY,
        || {
            let d = json(&node, &["status"]);
            (d["counters"]["uptime"]["delivered_rcpts"] == 2).then_some(d)
        },
        || "status never counted 2 delivered recipients".into(),
    );
    let up = &d["counters"]["uptime"];
    assert_eq!(up["messages_received"], 1, "{d:#}");
    assert_eq!(up["recipients_received"], 2, "{d:#}");
    assert_eq!(up["connections_in"], 1, "{d:#}");
    assert_eq!(d["counters"]["lifetime"]["messages_received"], 1, "{d:#}");
    let t = text(&node, &["status"]);
    assert_eq!(counter_row(&t, "Messages Received"), vec![1, 1, 1], "{t}");
    assert_eq!(counter_row(&t, "Recipients Received"), vec![2, 2, 2], "{t}");
    assert_eq!(
        counter_row(&t, "Delivered Recipients"),
        vec![2, 2, 2],
        "{t}"
    );

    // resetcounters zeroes the Reset column only.
    assert_eq!(text(&node, &["resetcounters"]).trim(), "Counters reset.");
    let t = text(&node, &["status"]);
    assert_eq!(counter_row(&t, "Messages Received"), vec![0, 1, 1], "{t}");
    assert_ne!(field(&t, "Last counter reset:"), "Never", "{t}");
    let r = json(&node, &["resetcounters"]);
    assert!(r["reset_at"].as_u64().is_some_and(|t| t > 0), "{r:#}");

    let t = text(&node, &["status", "detail"]);
    assert!(!t.contains("Enter \"status detail\""), "{t}");
    assert!(t.contains("Rates (Events Per Hour"), "{t}");
    let listeners = &t[t
        .find("Listeners:")
        .unwrap_or_else(|| panic!("no Listeners in:\n{t}"))..];
    let line = listeners
        .lines()
        .find(|l| l.trim_start().starts_with("IncomingMail"))
        .unwrap_or_else(|| panic!("IncomingMail not listed:\n{t}"));
    assert!(
        line.contains(&node.addr().to_string()) && line.contains("receiving"),
        "{line}"
    );
    let d = json(&node, &["status", "detail"]);
    assert_eq!(d["listeners"][0]["name"], "IncomingMail", "{d:#}");
    assert_eq!(
        d["listeners"][0]["address"],
        node.addr().to_string(),
        "{d:#}"
    );
    assert_eq!(d["listeners"][0]["suspended"], false, "{d:#}");

    let out = pvo(&node, &["status", "details"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("status detail"), "{}", out.stderr);
}

#[test]
fn suspendlisteners_all_refuses_connections_and_status_shows_offline() {
    let sink = Sink::accepting();
    let mut cfg = Config::new(&sink);
    cfg.listeners = vec!["IncomingMail", "OutgoingMail"];
    let node = cfg.start();
    let (incoming, outgoing) = (node.listener("IncomingMail"), node.listener("OutgoingMail"));

    let t = text(&node, &["suspendlisteners", "all"]);
    assert_eq!(
        t.trim(),
        "Receiving suspended for IncomingMail, OutgoingMail."
    );
    // The answer comes once the sockets are closed: no wait needed.
    assert_refused(incoming);
    assert_refused(outgoing);
    let t = text(&node, &["status"]);
    assert_eq!(field(&t, "System status:"), "Offline", "{t}");
    let d = json(&node, &["status", "detail"]);
    assert_eq!(d["system_status"], "Offline", "{d:#}");
    assert!(
        d["listeners"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["suspended"] == true),
        "{d:#}"
    );
    // Once more: nothing was running any more.
    let d = json(&node, &["suspendlisteners", "all"]);
    assert_eq!(
        names(&d["suspended_listeners"]),
        Vec::<String>::new(),
        "{d:#}"
    );

    let t = text(&node, &["resumelisteners", "all"]);
    assert_eq!(
        t.trim(),
        "Receiving resumed for IncomingMail, OutgoingMail."
    );
    assert_banner(incoming);
    assert_banner(outgoing);
    assert_eq!(field(&text(&node, &["status"]), "System status:"), "Online");

    // The same in JSON, without a name (all is the default).
    let d = json(&node, &["suspendlisteners"]);
    assert_eq!(
        names(&d["suspended_listeners"]),
        ["IncomingMail", "OutgoingMail"],
        "{d:#}"
    );
    assert_refused(incoming);
    assert_eq!(json(&node, &["status"])["system_status"], "Offline");
    let d = json(&node, &["resumelisteners"]);
    assert_eq!(
        names(&d["resumed_listeners"]),
        ["IncomingMail", "OutgoingMail"],
        "{d:#}"
    );
    assert_banner(incoming);
    assert_eq!(json(&node, &["status"])["system_status"], "Online");

    // Quick round trips: each answer comes only once the port refuses, and the port can
    // be taken again at once.
    for _ in 0..10 {
        text(&node, &["suspendlisteners", "all"]);
        assert_refused(incoming);
        assert_refused(outgoing);
        text(&node, &["resumelisteners", "all"]);
        assert_banner(incoming);
        assert_banner(outgoing);
    }

    // Mail still flows after the round trips.
    send(
        &node,
        "alice@example.org",
        &["a@example.com"],
        "after resume",
    );
    sink.wait_for_messages(1, DELIVERY);
}

#[test]
fn suspendlisteners_by_name_suspends_only_that_one_and_unknown_names_are_explained() {
    let sink = Sink::accepting();
    let mut cfg = Config::new(&sink);
    cfg.listeners = vec!["IncomingMail", "OutgoingMail"];
    let node = cfg.start();
    let (incoming, outgoing) = (node.listener("IncomingMail"), node.listener("OutgoingMail"));

    let t = text(&node, &["suspendlisteners", "OutgoingMail"]);
    assert_eq!(t.trim(), "Receiving suspended for OutgoingMail.");
    assert_refused(outgoing);
    assert_banner(incoming);
    let t = text(&node, &["status"]);
    assert_eq!(field(&t, "System status:"), "Online", "{t}");
    assert_eq!(field(&t, "Listeners suspended:"), "OutgoingMail", "{t}");
    let d = json(&node, &["status", "detail"]);
    let states: Vec<(String, bool)> = d["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["name"].as_str().unwrap().to_string(),
                l["suspended"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("IncomingMail".to_string(), false),
            ("OutgoingMail".to_string(), true)
        ]
    );

    let t = text(&node, &["resumelisteners", "OutgoingMail"]);
    assert_eq!(t.trim(), "Receiving resumed for OutgoingMail.");
    assert_banner(outgoing);

    let d = json(&node, &["suspendlisteners", "IncomingMail"]);
    assert_eq!(names(&d["suspended_listeners"]), ["IncomingMail"], "{d:#}");
    assert_refused(incoming);
    assert_banner(outgoing);
    let d = json(&node, &["resumelisteners", "IncomingMail"]);
    assert_eq!(names(&d["resumed_listeners"]), ["IncomingMail"], "{d:#}");
    assert_banner(incoming);

    // Several by name, separated by commas, in any case.
    let t = text(&node, &["suspendlisteners", "outgoingmail,IncomingMail"]);
    assert_eq!(
        t.trim(),
        "Receiving suspended for IncomingMail, OutgoingMail."
    );
    assert_refused(incoming);
    assert_refused(outgoing);
    assert_eq!(
        field(&text(&node, &["status"]), "System status:"),
        "Offline"
    );
    let t = text(&node, &["resumelisteners", "IncomingMail, OutgoingMail"]);
    assert_eq!(
        t.trim(),
        "Receiving resumed for IncomingMail, OutgoingMail."
    );
    assert_banner(incoming);
    assert_banner(outgoing);

    for cmd in ["suspendlisteners", "resumelisteners"] {
        let out = pvo(&node, &[cmd, "IncomingMail,NoSuchListener"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", out.stdout);
        let out = pvo(&node, &[cmd, "NoSuchListener"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", out.stdout);
        for want in ["NoSuchListener", "IncomingMail", "OutgoingMail"] {
            assert!(
                out.stderr.contains(want),
                "{cmd}: {want} missing in {:?}",
                out.stderr
            );
        }
        let out = pvo(&node, &[cmd, "NoSuchListener", "--json"]);
        assert_eq!(out.status.code(), Some(1), "{cmd} --json");
        let v: Value = serde_json::from_str(&out.stdout).expect("JSON error answer");
        assert_eq!(v["ok"], false, "{v:#}");
        assert!(
            v["data"]["error"]
                .as_str()
                .unwrap()
                .contains("IncomingMail, OutgoingMail"),
            "{v:#}"
        );
    }
    // Nothing changed.
    assert_banner(incoming);
    assert_banner(outgoing);
}

#[test]
fn resume_names_a_listener_whose_port_was_taken_and_resumes_everything_else() {
    let sink = Sink::accepting();
    let mut cfg = Config::new(&sink);
    cfg.listeners = vec!["IncomingMail", "OutgoingMail"];
    let node = cfg.start();
    let (incoming, outgoing) = (node.listener("IncomingMail"), node.listener("OutgoingMail"));
    text(&node, &["suspend", "--delay", "0"]);
    // Another program takes OutgoingMail's port while the node is suspended.
    let squatter = std::net::TcpListener::bind(outgoing).expect("take the suspended port");

    let out = pvo(&node, &["resume"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stdout);
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[0], "Receiving resumed for IncomingMail.",
        "{}",
        out.stderr
    );
    assert!(
        lines[1].starts_with(&format!(
            "Listener OutgoingMail cannot listen on {outgoing} again"
        )) && lines[1].contains("resumelisteners"),
        "{}",
        out.stderr
    );
    assert_banner(incoming);
    let t = text(&node, &["status"]);
    assert_eq!(field(&t, "System status:"), "Online", "{t}");
    assert_eq!(field(&t, "Listeners suspended:"), "OutgoingMail", "{t}");
    // Delivery resumed all the same.
    assert!(t.lines().all(|l| !l.starts_with("Delivery:")), "{t}");
    send(
        &node,
        "alice@example.org",
        &["a@example.com"],
        "delivered while one listener is down",
    );
    sink.wait_for_messages(1, DELIVERY);

    let out = pvo(&node, &["resumelisteners", "OutgoingMail", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v["ok"], false, "{v:#}");
    assert_eq!(
        names(&v["data"]["resumed_listeners"]),
        Vec::<String>::new(),
        "{v:#}"
    );
    assert!(
        v["data"]["error"][0]
            .as_str()
            .unwrap()
            .contains("OutgoingMail"),
        "{v:#}"
    );

    drop(squatter);
    let t = text(&node, &["resumelisteners", "OutgoingMail"]);
    assert_eq!(t.trim(), "Receiving resumed for OutgoingMail.");
    assert_banner(outgoing);
}

// ---------------------------------------------------------------------------------------
// suspend, resume, suspenddel, resumedel
// ---------------------------------------------------------------------------------------

#[test]
fn suspend_stops_receiving_and_delivery_and_resume_restarts_both() {
    let sink = Sink::accepting();
    let held = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let mut cfg = Config::new(&sink).route("held.example.com", held.host_port());
    // The seed's listeners, in its order (not alphabetical): the answers list them so.
    cfg.listeners = vec!["euq_listener", "cpq_listener"];
    let node = cfg.start();
    send(
        &node,
        "alice@example.org",
        &["x@held.example.com"],
        "queued before suspend",
    );
    wait_deferred(&node, &["x@held.example.com"]);

    let t = text(&node, &["suspend", "--delay", "0"]);
    assert_eq!(
        t.trim(),
        "Receiving suspended for euq_listener, cpq_listener.\nDelivery suspended."
    );
    assert_refused(node.listener("euq_listener"));
    assert_refused(node.listener("cpq_listener"));
    let t = text(&node, &["status"]);
    assert_eq!(field(&t, "System status:"), "Offline", "{t}");
    assert_eq!(field(&t, "Delivery:"), "Suspended", "{t}");
    let d = json(&node, &["status"]);
    assert_eq!(
        (&d["system_status"], &d["delivery_suspended"]),
        (&"Offline".into(), &true.into())
    );

    // The next hop would take the message now, and delivernow makes it due: still it
    // stays in the queue, ready, while delivery is suspended.
    held.set_faults(&SinkOptions::default());
    let d = json(&node, &["delivernow"]);
    assert_eq!(d["rescheduled"], 1, "{d:#}");
    assert_eq!(
        queued(&node),
        [("x@held.example.com".to_string(), "ready".to_string())]
    );
    assert_eq!(held.count(), 0);

    let t = text(&node, &["resume"]);
    assert_eq!(t, "Receiving resumed for euq_listener, cpq_listener.\n");
    let m = held.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].rcpt_to, ["x@held.example.com"]);
    assert_banner(node.listener("euq_listener"));
    assert_eq!(field(&text(&node, &["status"]), "System status:"), "Online");

    // The same in JSON.
    let d = json(&node, &["suspend", "--delay", "5"]);
    assert_eq!(
        names(&d["suspended_listeners"]),
        ["euq_listener", "cpq_listener"],
        "{d:#}"
    );
    assert_eq!(
        (&d["delivery_suspended"], &d["delay"]),
        (&true.into(), &5.into()),
        "{d:#}"
    );
    assert_refused(node.listener("cpq_listener"));
    let d = json(&node, &["resume"]);
    assert_eq!(
        names(&d["resumed_listeners"]),
        ["euq_listener", "cpq_listener"],
        "{d:#}"
    );
    assert_eq!(d["delivery_resumed"], true, "{d:#}");
    assert_banner(node.listener("cpq_listener"));
    let d = json(&node, &["status"]);
    assert_eq!(
        (&d["system_status"], &d["delivery_suspended"]),
        (&"Online".into(), &false.into())
    );

    let log = node.mail_logs();
    for line in [
        "Receiving suspended for euq_listener, cpq_listener.",
        "Delivery suspended.",
        "Receiving resumed for euq_listener, cpq_listener.",
        "Delivery resumed.",
    ] {
        assert!(log.contains(line), "mail_logs lacks {line:?}:\n{log}");
    }
}

#[test]
fn suspend_closes_open_sessions_after_the_delay() {
    let sink = Sink::accepting();
    let node = Config::new(&sink).start();
    let mut client = SmtpClient::open(node.addr(), Some(TRUSTED));
    client.expect("EHLO client.test", 250);

    let t = text(&node, &["suspend", "--delay", "1"]);
    assert!(
        t.contains("Open connections are closed after 1 seconds."),
        "{t}"
    );
    assert_refused(node.addr());
    // The open session goes on until the delay is over, then it is told why it closes.
    let reply = client.read_reply().expect("a reply when the delay is over");
    assert_eq!(reply.code, 421, "{}", reply.raw());
    assert!(
        reply.raw().contains("closing connection"),
        "{}",
        reply.raw()
    );
    assert!(client.read_to_end().expect("read to EOF").is_empty());

    assert_eq!(
        text(&node, &["resume"]),
        "Receiving resumed for IncomingMail.\n"
    );
    // A new session after resume is not closed: it can send mail.
    send(
        &node,
        "alice@example.org",
        &["a@example.com"],
        "after suspend",
    );
    sink.wait_for_messages(1, DELIVERY);
}

#[test]
fn suspenddel_holds_accepted_mail_until_resumedel() {
    let sink = Sink::accepting();
    let node = Config::new(&sink).start();

    assert_eq!(text(&node, &["suspenddel"]).trim(), "Delivery suspended.");
    assert_eq!(
        text(&node, &["suspenddel"]).trim(),
        "Delivery was already suspended."
    );
    send(&node, "alice@example.org", &["a@example.com"], "held one");
    // Receiving goes on: the listener still answers.
    assert_eq!(field(&text(&node, &["status"]), "System status:"), "Online");
    assert_eq!(field(&text(&node, &["status"]), "Delivery:"), "Suspended");
    assert_eq!(
        queued(&node),
        [("a@example.com".to_string(), "ready".to_string())]
    );
    assert_eq!(sink.count(), 0);

    assert_eq!(text(&node, &["resumedel"]).trim(), "Delivery resumed.");
    sink.wait_for_messages(1, DELIVERY);
    assert_eq!(
        text(&node, &["resumedel"]).trim(),
        "Delivery was not suspended."
    );

    let d = json(&node, &["suspenddel"]);
    assert_eq!(d["delivery_suspended"], true, "{d:#}");
    send(&node, "alice@example.org", &["b@example.com"], "held two");
    assert_eq!(json(&node, &["status"])["delivery_suspended"], true);
    assert_eq!(
        queued(&node),
        [("b@example.com".to_string(), "ready".to_string())]
    );
    assert_eq!(sink.count(), 1);
    let d = json(&node, &["resumedel"]);
    assert_eq!(d["delivery_suspended"], false, "{d:#}");
    let m = sink.wait_for_messages(2, DELIVERY);
    assert_eq!(m[1].rcpt_to, ["b@example.com"]);
}

// ---------------------------------------------------------------------------------------
// tophosts, hoststatus
// ---------------------------------------------------------------------------------------

/// One row of `tophosts` text: (rank, host with its `*`, the five numbers).
fn tophosts_rows(t: &str) -> Vec<(usize, String, Vec<u64>)> {
    t.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let rank = w.first()?.parse().ok()?;
            let nums: Vec<u64> = w
                .get(2..)?
                .iter()
                .map(|n| n.parse().ok())
                .collect::<Option<_>>()?;
            (w.len() == 7).then(|| (rank, w[1].to_string(), nums))
        })
        .collect()
}

#[test]
fn tophosts_and_hoststatus_show_queued_down_and_delivered_hosts() {
    let sink = Sink::accepting();
    let slow = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let hard = Sink::start(SinkOptions::reply_rcpt("550 5.1.1 no such user"));
    let node = Config::new(&sink)
        .route("slow.example.net", slow.host_port())
        .route("hard.example.net", hard.host_port())
        .route("down.example.net", closed_port())
        .start();

    send(
        &node,
        "alice@example.org",
        &["a@ok.example.com", "b@ok.example.com"],
        "ok",
    );
    send(
        &node,
        "alice@example.org",
        &["a@slow.example.net", "b@slow.example.net"],
        "slow",
    );
    send(&node, "alice@example.org", &["a@down.example.net"], "down");
    send(&node, "alice@example.org", &["a@hard.example.net"], "hard");
    sink.wait_for_messages(1, DELIVERY);
    wait_deferred(
        &node,
        &[
            "a@slow.example.net",
            "b@slow.example.net",
            "a@down.example.net",
        ],
    );
    // The DSN of the hard bounce goes to alice at example.org, through the default route.
    wait_until(
        DELIVERY,
        || (sink.count() == 2).then_some(()),
        || format!("the DSN never arrived; sink has {}", sink.count()),
    );

    // Connections wait a moment for more work before they close; Conn. Out counts them
    // until then.
    wait_until(
        DELIVERY,
        || (json(&node, &["status"])["gauges"]["connections_out"] == 0).then_some(()),
        || "outbound connections never closed".into(),
    );
    let t = text(&node, &["tophosts"]);
    assert!(
        t.contains("Hosts marked with '*' were down as of the last delivery attempt."),
        "{t}"
    );
    // The column titles take two lines, as on the appliance.
    let lines: Vec<&str> = t.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("Recipient Host"))
        .unwrap_or_else(|| panic!("no column titles:\n{t}"));
    let header = [lines[at - 1], lines[at]];
    let words = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        words(header[0]),
        ["Active", "Conn.", "Deliv.", "Soft", "Hard"],
        "{t}"
    );
    assert_eq!(
        words(header[1]),
        [
            "#",
            "Recipient",
            "Host",
            "Recip.",
            "Out",
            "Recip.",
            "Bounced",
            "Bounced"
        ],
        "{t}"
    );
    let rows = tophosts_rows(&t);
    let row = |host: &str| {
        rows.iter()
            .find(|(_, h, _)| h.trim_start_matches('*') == host)
            .unwrap_or_else(|| panic!("no row for {host}:\n{t}"))
            .clone()
    };
    // Sorted by Active Recip. by default: slow (2), down (1), then the idle ones by name.
    assert_eq!(rows[0].1, "slow.example.net", "{t}");
    assert_eq!(rows[0].2, [2, 0, 0, 2, 0], "{t}");
    assert_eq!(rows[1].1, "*down.example.net", "{t}");
    assert_eq!(rows[1].2, [1, 0, 0, 1, 0], "{t}");
    assert_eq!(row("ok.example.com").1, "ok.example.com", "{t}");
    assert_eq!(row("ok.example.com").2, [0, 0, 2, 0, 0], "{t}");
    assert_eq!(row("hard.example.net").2, [0, 0, 0, 0, 1], "{t}");
    assert_eq!(row("example.org").2, [0, 0, 1, 0, 0], "{t}");
    assert_eq!(
        rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5],
        "{t}"
    );

    let first = |sort: &str| {
        tophosts_rows(&text(&node, &["tophosts", "--sort", sort]))[0]
            .1
            .clone()
    };
    assert_eq!(first("active"), "slow.example.net");
    assert_eq!(first("delivered"), "ok.example.com");
    assert_eq!(first("soft"), "slow.example.net");
    assert_eq!(first("hard"), "hard.example.net");
    // Nothing is connected at rest: ties are listed by name.
    let conn = tophosts_rows(&text(&node, &["tophosts", "--sort", "conn"]));
    let conn_hosts: Vec<String> = conn
        .iter()
        .map(|r| r.1.trim_start_matches('*').to_string())
        .collect();
    assert_eq!(
        conn_hosts,
        [
            "down.example.net",
            "example.org",
            "hard.example.net",
            "ok.example.com",
            "slow.example.net"
        ]
    );
    let out = pvo(&node, &["tophosts", "--sort", "bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("active") && out.stderr.contains("delivered"),
        "{}",
        out.stderr
    );

    for sort in ["active", "conn", "delivered", "hard", "soft"] {
        let d = json(&node, &["tophosts", "--sort", sort]);
        assert_eq!(d["sort"], sort, "{d:#}");
        assert_eq!(d["hosts"].as_array().unwrap().len(), 5, "{d:#}");
    }
    let d = json(&node, &["tophosts", "--sort", "soft"]);
    let h = &d["hosts"][0];
    assert_eq!(h["host"], "slow.example.net", "{d:#}");
    assert_eq!(
        (&h["active_recipients"], &h["soft_bounced"], &h["down"]),
        (&2.into(), &2.into(), &false.into()),
        "{d:#}"
    );
    let down = d["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "down.example.net")
        .unwrap();
    assert_eq!(down["down"], true, "{d:#}");
    assert!(
        down["last_error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{d:#}"
    );

    // hoststatus: a queued host, a down host, a host with no record.
    let t = text(&node, &["hoststatus", "slow.example.net"]);
    assert!(
        t.starts_with("Host mail status for: 'slow.example.net'"),
        "{t}"
    );
    assert_eq!(field(&t, "Host up/down:"), "up", "{t}");
    assert_eq!(field(&t, "Route:"), slow.host_port(), "{t}");
    assert_eq!(field(&t, "Active Recipients"), "2", "{t}");
    assert_eq!(field(&t, "Soft Bounced Events"), "2", "{t}");
    assert!(field(&t, "Last error:").contains("451"), "{t}");
    let t = text(&node, &["hoststatus", "DOWN.example.net."]);
    assert!(
        t.starts_with("Host mail status for: 'down.example.net'"),
        "{t}"
    );
    assert_eq!(field(&t, "Host up/down:"), "down", "{t}");
    assert!(
        field(&t, "Last error:").contains("Connection refused"),
        "{t}"
    );
    let d = json(&node, &["hoststatus", "slow.example.net"]);
    assert_eq!(d["known"], true, "{d:#}");
    assert_eq!(d["status"]["active_recipients"], 2, "{d:#}");
    assert_eq!(d["route"], slow.host_port(), "{d:#}");
    let d = json(&node, &["hoststatus", "ok.example.com"]);
    assert_eq!(d["status"]["delivered_recipients"], 2, "{d:#}");

    let t = text(&node, &["hoststatus", "never.example.net"]);
    assert!(
        t.starts_with("Host mail status for: 'never.example.net'"),
        "{t}"
    );
    assert!(t.contains("No record of deliveries to this host"), "{t}");
    let d = json(&node, &["hoststatus", "never.example.net"]);
    assert_eq!(
        (&d["host"], &d["known"]),
        (&"never.example.net".into(), &false.into()),
        "{d:#}"
    );
}

#[test]
fn tophosts_counts_a_delivery_in_progress_as_active_with_a_connection_out() {
    let sink = Sink::accepting();
    // Long enough to look at the delivery while the sink sits on the DATA.
    let slow = Sink::start(SinkOptions {
        delay_data: Some(5.0),
        ..SinkOptions::default()
    });
    let node = Config::new(&sink)
        .route("busy.example.net", slow.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@busy.example.net"],
        "in flight",
    );

    let row = wait_until(
        DELIVERY,
        || {
            let d = json(&node, &["tophosts", "--sort", "conn"]);
            let h = d["hosts"][0].clone();
            (h["host"] == "busy.example.net" && h["connections_out"] == 1).then_some(h)
        },
        || "tophosts never showed the connection to busy.example.net".into(),
    );
    assert_eq!(row["active_recipients"], 1, "{row:#}");
    let rows = tophosts_rows(&text(&node, &["tophosts", "--sort", "conn"]));
    assert_eq!(rows[0].1, "busy.example.net");
    assert_eq!(rows[0].2[..3], [1, 1, 0], "{rows:?}");
    assert_eq!(
        queued(&node),
        [("a@busy.example.net".to_string(), "delivering".to_string())]
    );
    let d = json(&node, &["status"]);
    assert_eq!(
        (
            &d["gauges"]["active_recipients"],
            &d["gauges"]["connections_out"]
        ),
        (&1.into(), &1.into()),
        "{d:#}"
    );

    slow.wait_for_messages(1, DELIVERY);
    let row = wait_until(
        DELIVERY,
        || {
            let d = json(&node, &["tophosts"]);
            let h = d["hosts"][0].clone();
            (h["delivered_recipients"] == 1 && h["connections_out"] == 0).then_some(h)
        },
        || "tophosts never showed the delivery done".into(),
    );
    assert_eq!(row["active_recipients"], 0, "{row:#}");
    assert!(queued(&node).is_empty());
}

// ---------------------------------------------------------------------------------------
// showrecipients, deleterecipients, bouncerecipients, redirectrecipients, delivernow
// ---------------------------------------------------------------------------------------

#[test]
fn showrecipients_lists_exactly_the_queued_recipients_by_host_sender_and_all() {
    let sink = Sink::accepting();
    let held = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let node = Config::new(&sink)
        .route("held.example.net", held.host_port())
        .route("other.example.net", held.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["x@held.example.net", "y@held.example.net"],
        "one",
    );
    send(
        &node,
        "bob@example.org",
        &["z@held.example.net", "w@other.example.net"],
        "two",
    );
    send(
        &node,
        "carol@example.org",
        &["delivered@example.com"],
        "three",
    );
    sink.wait_for_messages(1, DELIVERY);
    wait_deferred(
        &node,
        &[
            "x@held.example.net",
            "y@held.example.net",
            "z@held.example.net",
            "w@other.example.net",
        ],
    );

    let cases: [(&[&str], &[&str]); 3] = [
        (
            &["--host", "held.example.net"],
            &[
                "x@held.example.net",
                "y@held.example.net",
                "z@held.example.net",
            ],
        ),
        (
            &["--sender", "bob@example.org"],
            &["z@held.example.net", "w@other.example.net"],
        ),
        (
            &["--all"],
            &[
                "x@held.example.net",
                "y@held.example.net",
                "z@held.example.net",
                "w@other.example.net",
            ],
        ),
    ];
    for (sel, want) in cases {
        let mut args = vec!["showrecipients"];
        args.extend_from_slice(sel);
        let t = text(&node, &args);
        let listed: BTreeSet<String> = t
            .lines()
            .filter_map(|l| {
                l.split_whitespace()
                    .find(|w| w.contains('@') && !w.starts_with('<'))
            })
            .map(String::from)
            .collect();
        assert_eq!(listed, set(want), "{sel:?}:\n{t}");
        assert!(t.starts_with("Recipients in the queue for "), "{t}");
        assert!(
            t.contains("MID/[RID]") && t.contains("Sender/Recipient"),
            "{t}"
        );
        let messages = if sel[0] == "--sender" { 1 } else { 2 };
        assert!(
            t.contains(&format!(
                "{} recipients in {messages} messages.",
                want.len()
            )),
            "{sel:?}:\n{t}"
        );
        let d = json(&node, &args);
        assert_eq!(recipient_set(&d), set(want), "{sel:?}: {d:#}");
        for r in d["recipients"].as_array().unwrap() {
            assert_eq!(r["state"], "deferred", "{r}");
            assert_eq!(r["attempts"], 1, "{r}");
        }
    }
    let t = text(
        &node,
        &["showrecipients", "--sender", "<alice@example.org>"],
    );
    assert!(
        t.contains("<alice@example.org>") && t.contains("2 recipients in 1 messages."),
        "{t}"
    );
    let d = json(&node, &["showrecipients", "--host", "nowhere.example.net"]);
    assert_eq!(d["recipients"].as_array().unwrap().len(), 0, "{d:#}");

    // No selection and no terminal to ask: the command says what to give.
    let out = pvo(&node, &["showrecipients"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("--host")
            && out.stderr.contains("--sender")
            && out.stderr.contains("--all"),
        "{}",
        out.stderr
    );
}

#[test]
fn deleterecipients_removes_exactly_the_selected_recipients() {
    let sink = Sink::accepting();
    let held = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let node = Config::new(&sink)
        .route("del.example.net", held.host_port())
        .route("keep.example.net", held.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@del.example.net", "b@keep.example.net"],
        "mixed",
    );
    send(
        &node,
        "alice@example.org",
        &["c@del.example.net"],
        "only del",
    );
    send(&node, "carol@example.org", &["d@keep.example.net"], "carol");
    let all = [
        "a@del.example.net",
        "b@keep.example.net",
        "c@del.example.net",
        "d@keep.example.net",
    ];
    wait_deferred(&node, &all);

    // Without --yes and without a terminal: refused, nothing deleted.
    for args in [
        &["deleterecipients", "--host", "del.example.net"][..],
        &["deleterecipients", "--host", "del.example.net", "--json"],
    ] {
        let out = pvo(&node, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stdout);
        assert!(out.stderr.contains("--yes"), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("deleted"), "{args:?}: {}", out.stderr);
    }
    wait_deferred(&node, &all);

    let t = text(
        &node,
        &["deleterecipients", "--host", "del.example.net", "--yes"],
    );
    assert_eq!(
        t.trim(),
        "2 recipients deleted (recipient host del.example.net)."
    );
    wait_deferred(&node, &["b@keep.example.net", "d@keep.example.net"]);
    let d = json(
        &node,
        &["deleterecipients", "--sender", "carol@example.org", "--yes"],
    );
    assert_eq!(
        (&d["deleted"], &d["in_delivery"]),
        (&1.into(), &0.into()),
        "{d:#}"
    );
    wait_deferred(&node, &["b@keep.example.net"]);
    let d = json(
        &node,
        &["deleterecipients", "--host", "del.example.net", "--yes"],
    );
    assert_eq!(d["deleted"], 0, "{d:#}");

    // The message that had only deleted recipients is done.
    let log = node.wait_for_log("deleted by administrator (deleterecipients)", DELIVERY);
    assert_eq!(
        log.matches("deleted by administrator (deleterecipients)")
            .count(),
        3,
        "{log}"
    );

    // The next hop takes mail again; delivernow retries what is left: only b.
    held.set_faults(&SinkOptions::default());
    let d = json(&node, &["delivernow"]);
    assert_eq!(d["rescheduled"], 1, "{d:#}");
    let m = held.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].rcpt_to, ["b@keep.example.net"]);
    wait_until(
        DELIVERY,
        || queued(&node).is_empty().then_some(()),
        || format!("queue not empty: {:?}", queued(&node)),
    );
    let d = json(&node, &["delivernow"]);
    assert_eq!(d["rescheduled"], 0, "{d:#}");
    // The queue is empty, so nothing else can come: exactly one message arrived.
    assert_eq!(held.count(), 1);
    assert_eq!(json(&node, &["status"])["gauges"]["messages_in_queue"], 0);
}

#[test]
fn deleted_recipients_stay_deleted_after_the_node_is_killed() {
    let sink = Sink::accepting();
    let held = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let mut node = Config::new(&sink)
        .route("del.example.net", held.host_port())
        .route("keep.example.net", held.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@del.example.net", "b@keep.example.net"],
        "mixed",
    );
    wait_deferred(&node, &["a@del.example.net", "b@keep.example.net"]);
    let t = text(
        &node,
        &["deleterecipients", "--host", "del.example.net", "--yes"],
    );
    assert_eq!(
        t.trim(),
        "1 recipients deleted (recipient host del.example.net)."
    );

    // Killed right after the answer: the deletion was on disk before it.
    node.kill9();
    node.restart();
    // The recovered message is tried at once (the hop still says 451) and deferred again.
    wait_deferred(&node, &["b@keep.example.net"]);
    held.set_faults(&SinkOptions::default());
    assert_eq!(json(&node, &["delivernow"])["rescheduled"], 1);
    let m = held.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].rcpt_to, ["b@keep.example.net"]);
    wait_until(
        DELIVERY,
        || queued(&node).is_empty().then_some(()),
        || format!("queue not empty: {:?}", queued(&node)),
    );
    assert_eq!(held.count(), 1);
}

#[test]
fn bouncerecipients_sends_a_dsn_to_the_sender() {
    let sink = Sink::accepting();
    let held = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let senders = Sink::accepting();
    let node = Config::new(&sink)
        .route("held.example.net", held.host_port())
        .route("example.org", senders.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@held.example.net"],
        "for alice",
    );
    send(&node, "bob@example.org", &["b@held.example.net"], "for bob");
    wait_deferred(&node, &["a@held.example.net", "b@held.example.net"]);

    let out = pvo(
        &node,
        &["bouncerecipients", "--sender", "alice@example.org"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    wait_deferred(&node, &["a@held.example.net", "b@held.example.net"]);

    let t = text(
        &node,
        &["bouncerecipients", "--sender", "alice@example.org", "--yes"],
    );
    assert_eq!(
        t.trim(),
        "1 recipients bounced (envelope sender <alice@example.org>)."
    );
    let m = senders.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].mail_from, "", "a DSN has the null sender");
    assert_eq!(m[0].rcpt_to, ["alice@example.org"]);
    assert!(
        m[0].text().contains("a@held.example.net"),
        "{}",
        m[0].text()
    );
    wait_deferred(&node, &["b@held.example.net"]);

    let d = json(
        &node,
        &["bouncerecipients", "--host", "held.example.net", "--yes"],
    );
    assert_eq!(d["bounced"], 1, "{d:#}");
    let m = senders.wait_for_messages(2, DELIVERY);
    assert_eq!(m[1].rcpt_to, ["bob@example.org"]);
    assert!(
        m[1].text().contains("b@held.example.net"),
        "{}",
        m[1].text()
    );
    assert_eq!(held.count(), 0);
}

/// A message recovered after a restart has no body in memory: its DSN reads the original
/// headers back from the spool (in the DSN's own task) and still quotes them.
#[test]
fn a_message_recovered_after_a_restart_bounces_with_its_headers_quoted() {
    let sink = Sink::accepting();
    let held = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let senders = Sink::accepting();
    let mut node = Config::new(&sink)
        .route("held.example.net", held.host_port())
        .route("example.org", senders.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@held.example.net"],
        "recovered then bounced",
    );
    wait_deferred(&node, &["a@held.example.net"]);
    node.kill9();
    node.restart();
    // The recovered message is tried at once: let that try end before bouncing it.
    wait_deferred(&node, &["a@held.example.net"]);
    let t = text(
        &node,
        &["bouncerecipients", "--sender", "alice@example.org", "--yes"],
    );
    assert_eq!(
        t.trim(),
        "1 recipients bounced (envelope sender <alice@example.org>)."
    );
    let m = senders.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].mail_from, "", "a DSN has the null sender");
    assert_eq!(m[0].rcpt_to, ["alice@example.org"]);
    assert!(
        m[0].text().contains("Subject: recovered then bounced"),
        "{}",
        m[0].text()
    );
    wait_until(
        DELIVERY,
        || queued(&node).is_empty().then_some(()),
        || format!("the bounced message stayed queued: {:?}", queued(&node)),
    );
}

#[test]
fn redirectrecipients_sends_queued_mail_to_another_host() {
    let sink = Sink::accepting();
    let failing = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let other = Sink::accepting();
    let node = Config::new(&sink)
        .route("fail.example.net", failing.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@fail.example.net", "b@fail.example.net"],
        "first",
    );
    wait_deferred(&node, &["a@fail.example.net", "b@fail.example.net"]);

    let target = other.host_port();
    let out = pvo(&node, &["redirectrecipients", &target]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stderr.contains("--yes") && out.stderr.contains(&target),
        "{}",
        out.stderr
    );
    wait_deferred(&node, &["a@fail.example.net", "b@fail.example.net"]);

    let t = text(&node, &["redirectrecipients", &target, "--yes"]);
    assert_eq!(t.trim(), format!("2 recipients redirected to {target}."));
    let m = other.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].rcpt_to, ["a@fail.example.net", "b@fail.example.net"]);

    send(
        &node,
        "alice@example.org",
        &["c@fail.example.net"],
        "second",
    );
    wait_deferred(&node, &["c@fail.example.net"]);
    let d = json(&node, &["redirectrecipients", &target, "--yes"]);
    assert_eq!(
        (&d["redirected"], &d["port"]),
        (&1.into(), &other.port.into()),
        "{d:#}"
    );
    let m = other.wait_for_messages(2, DELIVERY);
    assert_eq!(m[1].rcpt_to, ["c@fail.example.net"]);
    assert_eq!(failing.count(), 0);

    let out = pvo(&node, &["redirectrecipients", "not a host", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("not a host"), "{}", out.stderr);
}

#[test]
fn a_redirection_survives_a_restart() {
    let sink = Sink::accepting();
    let failing = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    // The new next hop is not ready yet either: the mail waits, redirected.
    let other = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let mut node = Config::new(&sink)
        .route("fail.example.net", failing.host_port())
        .start();
    send(
        &node,
        "alice@example.org",
        &["a@fail.example.net"],
        "redirected",
    );
    wait_deferred(&node, &["a@fail.example.net"]);
    let target = other.host_port();
    let t = text(&node, &["redirectrecipients", &target, "--yes"]);
    assert_eq!(t.trim(), format!("1 recipients redirected to {target}."));
    wait_deferred(&node, &["a@fail.example.net"]);
    node.kill9();
    node.restart();
    // The recovered message is tried at once (the new hop still says 451): let that try
    // end first, or it could still be in flight when delivernow looks for deferred mail.
    wait_deferred(&node, &["a@fail.example.net"]);
    other.set_faults(&SinkOptions::default());
    failing.set_faults(&SinkOptions::default());
    text(&node, &["delivernow"]);
    let m = other.wait_for_messages(1, DELIVERY);
    assert_eq!(m[0].rcpt_to, ["a@fail.example.net"]);
    assert_eq!(
        failing.count(),
        0,
        "after the restart the mail went to its old route"
    );
}

#[test]
fn delivernow_retries_deferred_mail_at_once() {
    let sink = Sink::accepting();
    let one = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let two = Sink::start(SinkOptions::reply_rcpt(TRY_LATER));
    let node = Config::new(&sink)
        .route("one.example.net", one.host_port())
        .route("two.example.net", two.host_port())
        .start();
    send(&node, "alice@example.org", &["a@one.example.net"], "one");
    send(&node, "alice@example.org", &["b@two.example.net"], "two");
    wait_deferred(&node, &["a@one.example.net", "b@two.example.net"]);
    one.set_faults(&SinkOptions::default());
    two.set_faults(&SinkOptions::default());

    // The first retry is an hour away: only delivernow can make these go.
    let t = text(&node, &["delivernow", "one.example.net"]);
    assert_eq!(
        t.trim(),
        "1 recipients of one.example.net rescheduled for immediate delivery."
    );
    one.wait_for_messages(1, DELIVERY);
    wait_deferred(&node, &["b@two.example.net"]);

    let d = json(&node, &["delivernow", "two.example.net"]);
    assert_eq!(
        (&d["host"], &d["rescheduled"]),
        (&"two.example.net".into(), &1.into()),
        "{d:#}"
    );
    two.wait_for_messages(1, DELIVERY);

    let t = text(&node, &["delivernow"]);
    assert_eq!(
        t.trim(),
        "0 recipients of all hosts rescheduled for immediate delivery."
    );
}

// ---------------------------------------------------------------------------------------
// Errors a person can act on
// ---------------------------------------------------------------------------------------

#[test]
fn a_node_that_is_not_running_names_the_dir_and_how_to_start_one() {
    for args in [&["status"][..], &["status", "--json"], &["tophosts"]] {
        let out = pvo_in(Path::new("/nonexistent"), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", out.stdout);
        for want in [
            "/nonexistent",
            "no PVO node is running",
            "pvo quickstart --dir /nonexistent",
            "pvo gateway run",
            "--dir",
        ] {
            assert!(
                out.stderr.contains(want),
                "{args:?}: {want:?} missing in {:?}",
                out.stderr
            );
        }
    }
}

#[test]
fn an_unknown_command_suggests_the_nearest_one() {
    let (status, stdout, stderr) = run_with_timeout(Command::new(pvo_bin()).arg("stauts"), COMMAND);
    assert!(!status.success(), "{stdout}");
    assert!(
        stderr.contains("unrecognized subcommand 'stauts'"),
        "{stderr}"
    );
    let tip = stderr
        .lines()
        .find(|l| l.contains("tip: ") && l.contains("similar subcommand"))
        .unwrap_or_else(|| panic!("no suggestion in {stderr}"));
    assert!(tip.contains("'status'"), "{stderr}");
    let (_, _, stderr) = run_with_timeout(Command::new(pvo_bin()).arg("tophost"), COMMAND);
    assert!(stderr.contains("'tophosts'"), "{stderr}");
}
