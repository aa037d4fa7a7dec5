//! End-to-end tests of the gateway role: a real `pvo gateway run`, real clients
//! (swaks, Python smtplib, raw bytes) and a real next hop (aiosmtpd, `tests/peers/sink.py`),
//! all on loopback with kernel-chosen ports.
//!
//! Mail from 127.0.0.1 is from the RELAYLIST (may relay anywhere); mail from 127.0.0.2
//! is from ALL (may only send to the domains the RAT accepts, `example.com`). Every
//! domain is routed to a sink so that a wrongly accepted relay shows up there instead of
//! going to DNS.
//!
//! Needs `scripts/install-test-deps` (swaks, python3-aiosmtpd).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    log_lines, peer_script, run_with_timeout, start_quickstart, strip_log_prefix, wait_until,
    Message, Node, Quickstart, Reply, Sink, SinkOptions, SmtpClient, MANAGER_IP, SYSTEM_PYTHON,
    TRUSTED, UNTRUSTED,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const DELIVERY: Duration = Duration::from_secs(60);

/// The knobs the tests turn in an otherwise fixed node configuration.
struct Config {
    /// domain -> `host:port` of its next hop (`ALL` is the default route).
    routes: Vec<(&'static str, String)>,
    accepted_max_size: u64,
    accepted_max_recipients: u32,
    max_bad_commands: u32,
    max_commands: u32,
    initial_retry: u64,
    destination_concurrency: u32,
}

impl Config {
    /// Every domain to `sink`.
    fn to(sink: &Sink) -> Config {
        Config {
            routes: vec![("ALL", sink.host_port())],
            accepted_max_size: 10_485_760,
            accepted_max_recipients: 100,
            max_bad_commands: 10,
            max_commands: 100_000,
            initial_retry: 1,
            destination_concurrency: 10,
        }
    }

    fn render(&self) -> String {
        let mut routes = String::new();
        for (domain, host) in &self.routes {
            routes.push_str(&format!(
                "[[smtp_route]]\ndomain = \"{domain}\"\nhosts = [\"{host}\"]\n\n"
            ));
            if *domain != "ALL" {
                routes.push_str(&format!(
                    "[[destination]]\ndomain = \"{domain}\"\nmax_concurrency = {}\ntls = \"off\"\n\n",
                    self.destination_concurrency
                ));
            }
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
name = "ACCEPTED"
behavior = "accept"
max_message_size = {max_size}
max_recipients = {max_rcpts}
max_concurrency = 200

[[policy]]
name = "BLOCKED"
behavior = "reject"

[[listener]]
name = "IncomingMail"
interface = "Loopback"
port = 0
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

{routes}[delivery]
default_interface = "Auto"
max_concurrency = {concurrency}
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

[limits]
max_line_length = 2048
max_bad_commands = {max_bad}
max_messages_per_session = 1000
max_commands_per_session = {max_commands}
command_timeout = 300
data_timeout = 600
session_timeout = 1800
"#,
            max_size = self.accepted_max_size,
            max_rcpts = self.accepted_max_recipients,
            concurrency = self.destination_concurrency,
            initial_retry = self.initial_retry,
            max_bad = self.max_bad_commands,
            max_commands = self.max_commands,
        )
    }

    fn start(&self) -> Node {
        Node::start(&self.render())
    }
}

/// A small message with the given subject and Message-ID.
fn body(subject: &str, message_id: &str) -> String {
    format!(
        "From: <sender@example.org>\r\nTo: <user@example.com>\r\nSubject: {subject}\r\n\
         Message-ID: <{message_id}>\r\n\r\nBody of {subject}.\r\n"
    )
}

fn subject_of(m: &Message) -> String {
    m.header("Subject").unwrap_or_default()
}

fn require_tool(path: &str) {
    assert!(
        std::path::Path::new(path).exists(),
        "{path} is missing: run scripts/install-test-deps"
    );
}

// ---------------------------------------------------------------------------------------
// mail_logs
// ---------------------------------------------------------------------------------------

/// `*` matches any run of characters; everything else literally; the whole text must match.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Finds each pattern (a [`glob`] over the line without its timestamp prefix) on a later
/// line than the previous one; returns the matching lines.
fn assert_log_in_order<'a>(log: &'a str, patterns: &[String]) -> Vec<&'a str> {
    let lines: Vec<&str> = log.lines().collect();
    let mut from = 0;
    let mut found = Vec::new();
    for pattern in patterns {
        let hit = lines[from..]
            .iter()
            .position(|line| strip_log_prefix(line).is_some_and(|rest| glob(pattern, rest)));
        match hit {
            Some(i) => {
                found.push(lines[from + i]);
                from += i + 1;
            }
            None => panic!(
                "mail_logs has no line {pattern:?} after line {from} (after {found:#?})\n\
                 --- mail_logs ---\n{log}"
            ),
        }
    }
    found
}

/// The number after `word ` in `line` (`MID 12 ...` -> 12).
fn number_after(line: &str, word: &str) -> u64 {
    let key = format!("{word} ");
    let start = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
        + key.len();
    line[start..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {word:?} in {line:?}"))
}

/// Every line of mail_logs carries the appliance prefix `Fri Sep 13 15:08:02 2013 Info: `.
fn assert_log_prefixes(log: &str) {
    for line in log.lines() {
        assert!(
            strip_log_prefix(line).is_some(),
            "mail_logs line without the appliance timestamp prefix: {line:?}"
        );
    }
}

/// The appliance lines of one message accepted from `source` and delivered to one
/// recipient at the sink: checks them in order, returns the MID.
fn assert_message_lines(node: &Node, sender: &str, rcpt: &str, source: &str, sink: &Sink) -> u64 {
    let from_line = node.wait_for_log(&format!("From: <{sender}>"), DELIVERY);
    let line = log_lines(&from_line, &format!("From: <{sender}>"))[0].to_string();
    let mid = number_after(&line, "MID");
    let icid = number_after(&line, "ICID");
    let log = node.wait_for_log(&format!("Message finished MID {mid} done"), DELIVERY);
    assert_log_prefixes(&log);
    let group = if source == "127.0.0.1" {
        "RELAY SG RELAYLIST"
    } else {
        "ACCEPT SG ALL"
    };
    let found = assert_log_in_order(
        &log,
        &[
            format!("New SMTP ICID {icid} interface * address {source} *"),
            format!("ICID {icid} {group} match*"),
            format!("Start MID {mid} ICID {icid}"),
            format!("MID {mid} ICID {icid} From: <{sender}>*"),
            format!("MID {mid} ICID {icid} RID 0 To: <{rcpt}>*"),
            format!("MID {mid} ready * bytes from <{sender}>"),
            format!("MID {mid} queued for delivery"),
            format!("Delivery start DCID * MID {mid} to RID [0]*"),
            format!("Message done DCID * MID {mid} to RID [0]*"),
            format!("Message finished MID {mid} done"),
        ],
    );
    let dcid = number_after(found[7], "DCID");
    assert_eq!(
        dcid,
        number_after(found[8], "DCID"),
        "delivery start and done name different DCIDs: {found:#?}"
    );
    assert_log_in_order(
        &log,
        &[
            format!(
                "New SMTP DCID {dcid} interface * address 127.0.0.1 port {}",
                sink.port
            ),
            format!("Delivery start DCID {dcid} MID {mid} to RID [0]*"),
        ],
    );
    mid
}

// ---------------------------------------------------------------------------------------
// (a) delivery with real clients
// ---------------------------------------------------------------------------------------

#[test]
fn swaks_message_reaches_next_hop_with_received_header_and_appliance_log_lines() {
    require_tool("/usr/bin/swaks");
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let (status, out, err) = run_with_timeout(
        Command::new("swaks").args([
            "--server",
            "127.0.0.1",
            "--port",
            &node.port().to_string(),
            "--local-interface",
            "127.0.0.2",
            "--helo",
            "client.test",
            "--from",
            "swaks-sender@example.org",
            "--to",
            "user@example.com",
            "--header",
            "Subject: swaks e2e",
            "--header",
            "Message-Id: <swaks-e2e@client.test>",
            "--body",
            "Sent by swaks from e2e_gateway.",
            "--timeout",
            "60",
        ]),
        DELIVERY,
    );
    assert!(status.success(), "swaks failed: {status}\n{out}\n{err}");

    let messages = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let m = &messages[0];
    assert_eq!(m.mail_from, "swaks-sender@example.org");
    assert_eq!(m.rcpt_to, ["user@example.com"]);
    assert_eq!(
        m.header("Message-Id").as_deref(),
        Some("<swaks-e2e@client.test>")
    );
    assert_eq!(subject_of(m), "swaks e2e");
    let received = m.header("Received").expect("a Received header");
    assert!(
        received.contains("gw1.example.com") && received.contains("127.0.0.2"),
        "the top Received header should name the gateway (by gw1.example.com) and the \
         client address 127.0.0.2: {received:?}"
    );
    assert!(m.text().contains("Sent by swaks from e2e_gateway."));
    assert_eq!(m.bare_cr_lf(), Vec::<usize>::new());

    assert_message_lines(
        &node,
        "swaks-sender@example.org",
        "user@example.com",
        "127.0.0.2",
        &sink,
    );
}

#[test]
fn starttls_session_with_swaks_delivers() {
    require_tool("/usr/bin/swaks");
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let (status, out, err) = run_with_timeout(
        Command::new("swaks").args([
            "--server",
            "127.0.0.1",
            "--port",
            &node.port().to_string(),
            "--local-interface",
            "127.0.0.2",
            "--helo",
            "client.test",
            "--tls",
            "--from",
            "tls-sender@example.org",
            "--to",
            "user@example.com",
            "--header",
            "Subject: over STARTTLS",
            "--timeout",
            "60",
        ]),
        DELIVERY,
    );
    assert!(
        status.success(),
        "swaks --tls failed: {status}\n{out}\n{err}"
    );
    assert!(out.contains("TLS started"), "no TLS session:\n{out}");
    let messages = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(subject_of(&messages[0]), "over STARTTLS");
    assert_eq!(messages[0].mail_from, "tls-sender@example.org");
}

#[test]
fn smtplib_message_with_two_recipients_reaches_next_hop() {
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let (status, out, err) = run_with_timeout(
        Command::new(SYSTEM_PYTHON)
            .arg(peer_script("smtp_send.py"))
            .args([
                "--port",
                &node.port().to_string(),
                "--source",
                "127.0.0.1",
                "--from",
                "smtplib-sender@example.org",
                "--to",
                "one@example.com",
                "--to",
                "two@example.net",
                "--subject",
                "smtplib e2e",
                "--message-id",
                "<smtplib-e2e@client.test>",
            ]),
        DELIVERY,
    );
    assert!(
        status.success() && out.contains("SENT 250"),
        "smtp_send.py: {status}\n{out}\n{err}"
    );

    // The two recipients are in different domains: one transaction each at the next hop
    // is fine, so wait until both have arrived.
    let messages = wait_until(
        DELIVERY,
        || {
            let ms = sink.messages();
            let rcpts: BTreeSet<String> = ms.iter().flat_map(|m| m.rcpt_to.clone()).collect();
            (rcpts.len() >= 2).then_some(ms)
        },
        || format!("both recipients at the sink; have {:#?}", sink.messages()),
    );
    let rcpts: Vec<String> = messages.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(
        rcpts.iter().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from(["one@example.com".to_string(), "two@example.net".to_string()]),
        "each recipient exactly once: {rcpts:?}"
    );
    assert_eq!(rcpts.len(), 2, "each recipient exactly once: {rcpts:?}");
    for m in &messages {
        assert_eq!(m.mail_from, "smtplib-sender@example.org");
        assert_eq!(subject_of(m), "smtplib e2e");
        assert!(
            m.header("Received").is_some(),
            "no Received header:\n{}",
            m.text()
        );
        assert_eq!(m.bare_cr_lf(), Vec::<usize>::new());
    }
    let log = node.wait_for_log_matching(
        DELIVERY,
        |log| log.matches("Message finished MID").count() >= 1,
        "Message finished",
    );
    assert!(log.contains("RID 1 To: <two@example.net>"), "{log}");
}

#[test]
fn ehlo_advertises_the_required_extensions() {
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    let ehlo = c.expect("EHLO client.test", 250);
    let keywords: BTreeSet<String> = ehlo.lines[1..]
        .iter()
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_uppercase()
        })
        .collect();
    for ext in [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "STARTTLS",
        "ENHANCEDSTATUSCODES",
    ] {
        assert!(keywords.contains(ext), "EHLO lacks {ext}: {}", ehlo.raw());
    }
    let size = ehlo
        .lines
        .iter()
        .find(|l| l.to_ascii_uppercase().starts_with("SIZE"));
    assert_eq!(
        size.map(|s| s.as_str()),
        Some("SIZE 10485760"),
        "SIZE should be the ACCEPTED policy's max_message_size: {}",
        ehlo.raw()
    );
    c.quit();
}

// ---------------------------------------------------------------------------------------
// (b) open relay
// ---------------------------------------------------------------------------------------

/// The open-relay forms an attacker tries (nmap's smtp-open-relay and more), as (MAIL FROM
/// argument, RCPT TO argument). Our domain is example.com, our name gw1.example.com,
/// our address 127.0.0.1; example.net is the victim's domain.
const RELAY_VECTORS: &[(&str, &str)] = &[
    ("<>", "<victim@example.net>"),
    ("<attacker@example.org>", "<victim@example.net>"),
    ("<relaytest@gw1.example.com>", "<victim@example.net>"),
    ("<relaytest@example.com>", "<victim@example.net>"),
    ("<relaytest@[127.0.0.1]>", "<victim@example.net>"),
    ("<a@example.org>", "<victim%example.net@example.com>"),
    ("<a@example.org>", "<victim%example.net@gw1.example.com>"),
    ("<a@example.org>", "<victim%example.net@[127.0.0.1]>"),
    ("<a@example.org>", "<\"victim@example.net\">"),
    ("<a@example.org>", "<\"victim%example.net\">"),
    ("<a@example.org>", "<victim@example.net@example.com>"),
    ("<a@example.org>", "<\"victim@example.net\"@example.com>"),
    ("<a@example.org>", "<@example.com:victim@example.net>"),
    ("<a@example.org>", "<@[127.0.0.1]:victim@example.net>"),
    ("<a@example.org>", "<example.net!victim>"),
    ("<a@example.org>", "<example.net!victim@example.com>"),
    ("<a@example.org>", "<victim@example.net.>"),
    ("<a@example.org>", "<victim@EXAMPLE.NET>"),
    ("<a@example.org>", "<Victim@Example.Net>"),
    ("<a@example.org>", "<VICTIM%EXAMPLE.NET@EXAMPLE.COM>"),
    ("<a@example.org>", "<EXAMPLE.NET!VICTIM@EXAMPLE.COM>"),
    (
        "<a@example.org>",
        "<@example.com,@gw1.example.com:victim@example.net>",
    ),
    ("<a@example.org>", "<victim@[192.0.2.1]>"),
    ("<a@example.org>", "<victim@[127.0.0.1]>"),
    ("<a@example.org>", "<victim@gw1.example.com>"),
    ("<a@example.org>", "<victim@sub.example.com>"),
    ("<a@example.org>", "<victim@example.com.example.net>"),
    ("<a@example.org>", "<victim@notexample.com>"),
    ("<a@example.org>", "victim@example.net"),
];

#[test]
fn relay_vectors_from_untrusted_address_are_refused_and_nothing_is_relayed() {
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let mut failures = Vec::new();
    for (from, rcpt) in RELAY_VECTORS {
        // One connection per vector so refusals never add up to the bad-command limit.
        let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
        c.expect("EHLO client.test", 250);
        let mail = c.command(&format!("MAIL FROM:{from}"));
        if mail.code >= 500 {
            c.quit();
            continue; // refused at MAIL: also a refusal
        }
        let reply = c.command(&format!("RCPT TO:{rcpt}"));
        if !(500..600).contains(&reply.code) {
            failures.push(format!(
                "MAIL FROM:{from} RCPT TO:{rcpt} -> {} (want 5xx)",
                reply.raw()
            ));
            // Let it through DATA so the sink shows where it would have gone.
            if reply.is_positive() {
                let r = c.data(&body("relay vector", "relay-vector@client.test"));
                failures.push(format!("  ... and DATA got {}", r.raw()));
            }
        } else if !(reply.code == 550 && reply.lines[0].starts_with("5.7.1")) {
            eprintln!(
                "note: RCPT TO:{rcpt} refused with {} (not 550 5.7.1)",
                reply.raw()
            );
        }
        c.quit();
    }

    // Positive controls from the same untrusted address: the accepted domain (in any
    // case), with the null sender too. Their arrival also bounds the wait for anything
    // wrongly relayed above, which would have been queued earlier.
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "",
        &["user@example.com"],
        &body("null sender", "null@client.test"),
    );
    assert_eq!(
        r.code,
        250,
        "null sender to an accepted domain: {}",
        r.raw()
    );
    let r = c.send_message(
        "a@example.org",
        &["Postmaster@EXAMPLE.COM"],
        &body("control", "control@client.test"),
    );
    assert_eq!(r.code, 250, "accepted domain in upper case: {}", r.raw());
    c.quit();
    let messages = sink.wait_for_messages(2, DELIVERY);

    assert!(
        failures.is_empty(),
        "relay vectors not refused:\n{}",
        failures.join("\n")
    );
    let rcpts: Vec<String> = messages.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(
        messages.len(),
        2,
        "something else reached the sink: {rcpts:?}"
    );
    assert!(
        rcpts
            .iter()
            .all(|r| r.to_ascii_lowercase().ends_with("@example.com")),
        "{rcpts:?}"
    );
    let null = messages
        .iter()
        .find(|m| subject_of(m) == "null sender")
        .expect("null sender");
    assert_eq!(null.mail_from, "");

    // From the RELAYLIST, relaying to any domain works.
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "a@example.org",
        &["friend@example.net"],
        &body("relayed", "relayed@client.test"),
    );
    assert_eq!(r.code, 250, "relay from 127.0.0.1: {}", r.raw());
    c.quit();
    let messages = sink.wait_for_messages(3, DELIVERY);
    let relayed = messages
        .iter()
        .find(|m| subject_of(m) == "relayed")
        .expect("relayed message");
    assert_eq!(relayed.rcpt_to, ["friend@example.net"]);
    assert_eq!(relayed.mail_from, "a@example.org");
}

// ---------------------------------------------------------------------------------------
// (c) SMTP smuggling
// ---------------------------------------------------------------------------------------

/// The end-of-data look-alikes of the 2023 SMTP smuggling research.
const SMUGGLING_SEQUENCES: &[&[u8]] = &[
    b"\n.\n",
    b"\r.\r",
    b"\r.\n",
    b"\n.\r",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r\n",
    b"\r\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\n.\x00\r\n",
    b"\r\n.\r\r\n",
];

#[test]
fn smuggling_sequences_stay_inside_one_message() {
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let mut delivered = 0;
    for (i, seq) in SMUGGLING_SEQUENCES.iter().enumerate() {
        let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
        c.expect("EHLO client.test", 250);
        c.expect("MAIL FROM:<alice@example.org>", 250);
        c.expect("RCPT TO:<bob@example.com>", 250);
        c.expect("DATA", 354);
        let mut data = format!(
            "From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: smuggle-{i}\r\n\r\n\
             first message line"
        )
        .into_bytes();
        data.extend_from_slice(seq);
        data.extend_from_slice(
            format!(
                "MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim-{i}@example.com>\r\nDATA\r\n\
                 From: <admin@example.com>\r\nSubject: smuggled-{i}\r\n\r\nsmuggled body\r\n.\r\n"
            )
            .as_bytes(),
        );
        c.write_raw(&data).expect("write smuggling payload");
        let end = c.read_reply().expect("reply to the real end of data");
        // A vulnerable server would now answer the smuggled MAIL with 250, not QUIT with 221.
        let quit = c.try_command("QUIT").expect("reply to QUIT");
        assert_eq!(
            quit.code,
            221,
            "sequence {seq:?}: the smuggled transaction ran (reply after the data: {}, then {})",
            end.raw(),
            quit.raw()
        );
        let nul = seq.contains(&0);
        match end.code {
            250 => delivered += 1,
            // A NUL byte in the data may be refused outright; the message is then lost as
            // a whole, which is safe.
            550..=554 if nul => eprintln!("note: sequence {seq:?} refused: {}", end.raw()),
            _ => panic!("sequence {seq:?}: end of data got {}", end.raw()),
        }
    }

    // A marker sent last bounds the wait for anything smuggled, which was queued earlier.
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "alice@example.org",
        &["bob@example.com"],
        &body("marker", "marker@client.test"),
    );
    assert_eq!(r.code, 250);
    c.quit();
    let messages = wait_until(
        DELIVERY,
        || {
            let ms = sink.messages();
            (ms.len() > delivered && ms.iter().any(|m| subject_of(m) == "marker")).then_some(ms)
        },
        || {
            format!(
                "{} messages and the marker at the sink; have {}",
                delivered + 1,
                sink.count()
            )
        },
    );

    assert_eq!(
        messages.len(),
        delivered + 1,
        "extra messages: {messages:#?}"
    );
    for m in &messages {
        assert_eq!(m.rcpt_to, ["bob@example.com"], "smuggled envelope: {m:#?}");
        assert_eq!(
            m.mail_from, "alice@example.org",
            "smuggled envelope: {m:#?}"
        );
        assert_eq!(
            m.bare_cr_lf(),
            Vec::<usize>::new(),
            "bare CR or LF forwarded in {:?}: {:?}",
            subject_of(m),
            m.text()
        );
        let subject = subject_of(m);
        if let Some(i) = subject.strip_prefix("smuggle-") {
            assert!(
                m.text().contains(&format!("smuggled-{i}")),
                "the smuggled part should have stayed inside message {subject}: {:?}",
                m.text()
            );
        }
    }
}

#[test]
fn pipelined_transactions_make_exactly_one_message_each() {
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    c.write_raw(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n")
        .unwrap();
    let codes: Vec<u16> = (0..3).map(|_| c.read_reply().unwrap().code).collect();
    assert_eq!(codes, [250, 250, 354]);
    // Mail 1, its real end, and mail 2's commands in one write, without waiting.
    c.write_raw(
        b"Subject: pipelined-1\r\n\r\nfirst\r\n.\r\n\
          MAIL FROM:<carol@example.org>\r\nRCPT TO:<dave@example.com>\r\nDATA\r\n",
    )
    .unwrap();
    let codes: Vec<u16> = (0..4).map(|_| c.read_reply().unwrap().code).collect();
    assert_eq!(codes, [250, 250, 250, 354]);
    c.write_raw(b"Subject: pipelined-2\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
        .unwrap();
    let codes: Vec<u16> = (0..2).map(|_| c.read_reply().unwrap().code).collect();
    assert_eq!(codes, [250, 221]);

    let messages = sink.wait_for_messages(2, DELIVERY);
    assert_eq!(messages.len(), 2, "{messages:#?}");
    let by_subject: BTreeMap<String, &Message> =
        messages.iter().map(|m| (subject_of(m), m)).collect();
    let one = by_subject["pipelined-1"];
    let two = by_subject["pipelined-2"];
    assert_eq!(
        (one.mail_from.as_str(), one.rcpt_to.as_slice()),
        ("alice@example.org", &["bob@example.com".to_string()][..])
    );
    assert_eq!(
        (two.mail_from.as_str(), two.rcpt_to.as_slice()),
        ("carol@example.org", &["dave@example.com".to_string()][..])
    );
    assert!(
        !one.text().contains("MAIL FROM") && !one.text().contains("second"),
        "{:?}",
        one.text()
    );
    assert!(!two.text().contains("first"), "{:?}", two.text());
}

// ---------------------------------------------------------------------------------------
// (d), (e) limits
// ---------------------------------------------------------------------------------------

#[test]
fn a_noop_loop_ends_at_the_command_limit() {
    let sink = Sink::accepting();
    let node = Config {
        max_commands: 10,
        ..Config::to(&sink)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    for _ in 0..9 {
        c.expect("NOOP", 250);
    }
    let reply = c.command("NOOP");
    assert_eq!(reply.code, 421, "{}", reply.raw());
    let rest = c.read_to_end().expect("connection closed after 421");
    assert!(
        rest.is_empty(),
        "data after 421: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn too_many_bad_commands_get_421_and_the_connection_closes() {
    let sink = Sink::accepting();
    let node = Config {
        max_bad_commands: 3,
        ..Config::to(&sink)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    let mut replies = Vec::new();
    let closing = loop {
        let reply = c.command(&format!("XBOGUS {}", replies.len()));
        if reply.code == 421 {
            break reply;
        }
        assert!(reply.code >= 500, "a bad command got {}", reply.raw());
        replies.push(reply);
        assert!(
            replies.len() <= 3,
            "no 421 after {} bad commands: {replies:?}",
            replies.len()
        );
    };
    assert_eq!(
        closing.raw(),
        "421 Exceeded bad SMTP command limit, disconnecting."
    );
    // 421 on the third bad command or right after it, depending on how one reads "after".
    assert!(
        (2..=3).contains(&replies.len()),
        "421 after {} bad commands",
        replies.len() + 1
    );
    let rest = c.read_to_end().expect("connection closed after 421");
    assert!(
        rest.is_empty(),
        "data after 421: {:?}",
        String::from_utf8_lossy(&rest)
    );
}

#[test]
fn overlong_command_line_gets_500_and_the_session_goes_on() {
    let sink = Sink::accepting();
    let node = Config::to(&sink).start();
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    let long = format!("MAIL FROM:<{}@example.org>", "a".repeat(3000));
    let r = c.command(&long);
    assert_eq!(
        r.code,
        500,
        "a {}-byte command line: {}",
        long.len(),
        r.raw()
    );
    let r = c.send_message(
        "a@example.org",
        &["user@example.com"],
        &body("after long line", "long@client.test"),
    );
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    let messages = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(subject_of(&messages[0]), "after long line");
}

#[test]
fn message_size_and_recipient_limits_of_the_policy_apply() {
    let sink = Sink::accepting();
    let node = Config {
        accepted_max_size: 20_000,
        accepted_max_recipients: 3,
        ..Config::to(&sink)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(
        ehlo.lines.iter().any(|l| l == "SIZE 20000"),
        "{}",
        ehlo.raw()
    );

    // Declared too big.
    let r = c.command("MAIL FROM:<a@example.org> SIZE=50000");
    assert_eq!(r.code, 552, "MAIL with SIZE over the limit: {}", r.raw());

    // Too many recipients.
    c.expect("MAIL FROM:<a@example.org>", 250);
    for i in 1..=3 {
        c.expect(&format!("RCPT TO:<r{i}@example.com>"), 250);
    }
    let r = c.command("RCPT TO:<r4@example.com>");
    assert_eq!(r.raw(), "452 4.5.3 Too many recipients");

    // Too big in fact: the 552 comes after the whole data was read.
    let mut big = body("too big", "big@client.test");
    let line = format!("{}\r\n", "x".repeat(78));
    while big.len() < 30_000 {
        big.push_str(&line);
    }
    let r = c.data(&big);
    assert_eq!(r.code, 552, "message over max_message_size: {}", r.raw());

    // The session goes on: a message within the limits is accepted.
    let r = c.send_message(
        "a@example.org",
        &["r1@example.com", "r2@example.com", "r3@example.com"],
        &body("small", "small@client.test"),
    );
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();

    let messages = sink.wait_for_messages(1, DELIVERY);
    assert!(
        messages.iter().all(|m| subject_of(m) == "small"),
        "{messages:#?}"
    );
    let rcpts: BTreeSet<String> = messages.iter().flat_map(|m| m.rcpt_to.clone()).collect();
    let want: BTreeSet<String> = ["r1@example.com", "r2@example.com", "r3@example.com"]
        .map(String::from)
        .into();
    if rcpts != want {
        // Split across transactions: wait for the rest.
        let all = wait_until(
            DELIVERY,
            || {
                let ms = sink.messages();
                let r: BTreeSet<String> = ms.iter().flat_map(|m| m.rcpt_to.clone()).collect();
                (r == want).then_some(ms)
            },
            || {
                format!(
                    "recipients {want:?} at the sink; have {:#?}",
                    sink.messages()
                )
            },
        );
        assert!(all.iter().all(|m| subject_of(m) == "small"));
    }
}

// ---------------------------------------------------------------------------------------
// (f) next-hop failures
// ---------------------------------------------------------------------------------------

/// A message to example.com, whose next hop fails with `fault`; example.org (the
/// sender's domain) goes to a sink that accepts. Returns the DSN that sink got.
fn dsn_for(fault: SinkOptions) -> Message {
    let failing = Sink::start(fault);
    let senders = Sink::accepting();
    let node = Config {
        routes: vec![
            ("example.com", failing.host_port()),
            ("example.org", senders.host_port()),
        ],
        ..Config::to(&failing)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "sender@example.org",
        &["user@example.com"],
        &body("will bounce", "bounce-me@client.test"),
    );
    assert_eq!(r.code, 250);
    c.quit();

    let dsns = senders.wait_for_messages(1, DELIVERY);
    assert_eq!(failing.count(), 0);
    let dsn = dsns[0].clone();
    assert_eq!(dsn.mail_from, "", "a DSN has the null sender: {dsn:#?}");
    assert_eq!(dsn.rcpt_to, ["sender@example.org"]);
    let text = dsn.text();
    assert!(
        text.contains("user@example.com"),
        "the DSN names the recipient:\n{text}"
    );
    assert!(
        text.to_ascii_lowercase().contains("multipart/report"),
        "a DSN is multipart/report (RFC 3464):\n{text}"
    );
    assert_eq!(dsn.bare_cr_lf(), Vec::<usize>::new());
    dsn
}

#[test]
fn permanent_failure_at_data_sends_a_dsn_to_the_sender() {
    dsn_for(SinkOptions::reply_data(
        "554 5.7.1 rejected by the next hop",
    ));
}

#[test]
fn permanent_failure_at_rcpt_sends_a_dsn_to_the_sender() {
    dsn_for(SinkOptions::reply_rcpt("550 5.1.1 no such user"));
}

#[test]
fn permanent_failure_of_a_bounce_sends_no_dsn() {
    // A message with the null sender (itself a DSN) that fails must not make another DSN
    // (RFC 5321 section 4.5.5): that is how bounce loops start.
    let failing = Sink::start(SinkOptions::reply_data(
        "554 5.7.1 rejected by the next hop",
    ));
    let senders = Sink::accepting();
    let node = Config {
        routes: vec![
            ("example.com", failing.host_port()),
            ("ALL", senders.host_port()),
        ],
        ..Config::to(&failing)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "",
        &["user@example.com"],
        &body("a bounce", "bounce@client.test"),
    );
    assert_eq!(r.code, 250);
    failing.wait_for_event("DATA 554", DELIVERY);
    // Then an ordinary message that fails the same way: its DSN arrives, and bounds the
    // wait for any DSN about the first one, which would have been made earlier.
    let r = c.send_message(
        "sender@example.org",
        &["user@example.com"],
        &body("ordinary", "ordinary@client.test"),
    );
    assert_eq!(r.code, 250);
    c.quit();
    let dsns = senders.wait_for_messages(1, DELIVERY);
    assert_eq!(
        dsns.len(),
        1,
        "a DSN about the null-sender message: {dsns:#?}"
    );
    assert_eq!(dsns[0].rcpt_to, ["sender@example.org"]);
}

#[test]
fn temporary_failure_is_retried_until_delivered() {
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try again later"));
    let senders = Sink::accepting();
    let node = Config {
        routes: vec![
            ("example.com", sink.host_port()),
            ("example.org", senders.host_port()),
        ],
        initial_retry: 1,
        ..Config::to(&sink)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "sender@example.org",
        &["user@example.com"],
        &body("deferred", "deferred@client.test"),
    );
    assert_eq!(r.code, 250);
    c.quit();

    // The first attempt gets 451; then the next hop recovers (normal mode, same port).
    sink.wait_for_event("DATA 451", DELIVERY);
    sink.set_faults(&SinkOptions::default());
    let messages = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(messages.len(), 1);
    assert_eq!(subject_of(&messages[0]), "deferred");
    assert_eq!(senders.count(), 0, "a temporary failure must not bounce");
}

// ---------------------------------------------------------------------------------------
// (g), (h) durability
// ---------------------------------------------------------------------------------------

/// What one sender thread learned about the messages it tried.
#[derive(Default)]
struct Outcome {
    /// Got 250 after the final dot: must be delivered.
    acked: Vec<usize>,
    /// Sent at least partly but no 250 seen (the node died): may or may not arrive.
    uncertain: Vec<usize>,
    /// Never sent (no connection): to send again after the restart.
    unsent: Vec<usize>,
    /// Refused with a reply: reported.
    refused: Vec<(usize, String)>,
}

/// Sends messages `burst-N` for N taken from `next` (below `total`) over connections from
/// 127.0.0.1, 25 per connection, until the ids run out or the node goes away.
fn burst_sender(
    addr: std::net::SocketAddr,
    next: &AtomicUsize,
    total: usize,
    acked: &AtomicUsize,
    retry: &Mutex<Vec<usize>>,
) -> Outcome {
    let mut out = Outcome::default();
    let mut conn: Option<(SmtpClient, usize)> = None;
    loop {
        let id = match retry.lock().unwrap().pop() {
            Some(id) => id,
            None => {
                let id = next.fetch_add(1, Ordering::SeqCst);
                if id >= total {
                    break;
                }
                id
            }
        };
        if conn.as_ref().is_some_and(|(_, n)| *n >= 25) {
            let (mut c, _) = conn.take().unwrap();
            let _ = c.try_command("QUIT");
        }
        if conn.is_none() {
            match SmtpClient::connect(addr, Some(TRUSTED)) {
                Ok((mut c, greeting)) if greeting.code == 220 => {
                    if c.try_command("EHLO client.test").map(|r| r.code).ok() != Some(250) {
                        out.unsent.push(id);
                        break;
                    }
                    conn = Some((c, 0));
                }
                _ => {
                    out.unsent.push(id);
                    break;
                }
            }
        }
        let (c, n) = conn.as_mut().unwrap();
        *n += 1;
        let result = (|| -> std::io::Result<Reply> {
            for cmd in [
                "MAIL FROM:<burst@example.org>",
                "RCPT TO:<user@example.com>",
                "DATA",
            ] {
                let r = c.try_command(cmd)?;
                if r.code >= 400 {
                    return Ok(r);
                }
            }
            c.write_raw(burst_body(id).as_bytes())?;
            c.write_raw(b".\r\n")?;
            c.read_reply()
        })();
        match result {
            Ok(r) if r.code == 250 => {
                out.acked.push(id);
                acked.fetch_add(1, Ordering::SeqCst);
            }
            Ok(r) => {
                out.refused.push((id, r.raw()));
                conn = None;
            }
            Err(_) => {
                out.uncertain.push(id);
                break;
            }
        }
    }
    out
}

/// Burst message `id`: about 8 KB, so that a kill often lands in the middle of a DATA,
/// and a last line that shows whether a delivered copy is whole.
fn burst_body(id: usize) -> String {
    let mut text = body(&format!("burst {id}"), &format!("burst-{id}@e2e.test"));
    for i in 0..100 {
        text.push_str(&format!("{i:03} {}\r\n", "padding ".repeat(9)));
    }
    text.push_str(&format!("End of burst {id}.\r\n"));
    text
}

/// The burst ids in the sink's messages (from Message-ID `<burst-N@e2e.test>`), counted;
/// panics on a message that is not whole.
fn burst_ids(sink: &Sink) -> BTreeMap<usize, usize> {
    let mut ids = BTreeMap::new();
    for m in sink.messages() {
        let id = m.header("Message-ID").and_then(|v| {
            v.strip_prefix("<burst-")
                .and_then(|v| v.strip_suffix("@e2e.test>"))
                .and_then(|v| v.parse().ok())
        });
        match id {
            Some(id) => {
                assert!(
                    m.text().ends_with(&format!("\r\nEnd of burst {id}.\r\n")),
                    "burst {id} delivered cut short ({} bytes): {}",
                    m.data.len(),
                    m.path.display()
                );
                *ids.entry(id).or_insert(0) += 1
            }
            None => assert_eq!(subject_of(&m), "after restart", "unexpected message {m:#?}"),
        }
    }
    ids
}

#[test]
fn kill_9_during_a_burst_loses_no_acknowledged_message() {
    const TOTAL: usize = 1000;
    const SENDERS: usize = 8;
    const DESTINATION_CONCURRENCY: u32 = 4;
    let sink = Sink::accepting();
    let mut node = Config {
        destination_concurrency: DESTINATION_CONCURRENCY,
        routes: vec![("example.com", sink.host_port())],
        ..Config::to(&sink)
    }
    .start();

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let retry = Arc::new(Mutex::new(Vec::new()));
    let run = |addr,
               next: &Arc<AtomicUsize>,
               acked: &Arc<AtomicUsize>,
               retry: &Arc<Mutex<Vec<usize>>>| {
        (0..SENDERS)
            .map(|_| {
                let (next, acked, retry) = (next.clone(), acked.clone(), retry.clone());
                thread::spawn(move || burst_sender(addr, &next, TOTAL, &acked, &retry))
            })
            .collect::<Vec<_>>()
    };

    // Phase 1: the burst; kill -9 once 300 messages have their 250 (deliveries to the
    // sink are under way by then).
    let started = Instant::now();
    let threads = run(node.addr(), &next, &acked, &retry);
    wait_until(
        Duration::from_secs(180),
        || (acked.load(Ordering::SeqCst) >= 300).then_some(()),
        || {
            format!(
                "300 messages acknowledged; have {}",
                acked.load(Ordering::SeqCst)
            )
        },
    );
    let delivered_at_kill = sink.count();
    node.kill9();
    let mut outcomes: Vec<Outcome> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let acked_at_kill = acked.load(Ordering::SeqCst);
    eprintln!(
        "kill -9 after {:?}: {acked_at_kill} acknowledged, {delivered_at_kill} at the sink",
        started.elapsed()
    );

    // Phase 2: restart on the same data directory, send what was never sent.
    node.restart();
    retry.lock().unwrap().extend(
        outcomes
            .iter_mut()
            .flat_map(|o| std::mem::take(&mut o.unsent)),
    );
    let threads = run(node.addr(), &next, &acked, &retry);
    outcomes.extend(threads.into_iter().map(|t| t.join().unwrap()));
    let acked_ids: BTreeSet<usize> = outcomes.iter().flat_map(|o| o.acked.clone()).collect();
    let uncertain: BTreeSet<usize> = outcomes.iter().flat_map(|o| o.uncertain.clone()).collect();
    let refused: Vec<&(usize, String)> = outcomes.iter().flat_map(|o| &o.refused).collect();
    let unsent: Vec<usize> = outcomes.iter().flat_map(|o| o.unsent.clone()).collect();
    assert!(
        unsent.is_empty(),
        "never sent after the restart: {unsent:?}"
    );
    assert!(refused.is_empty(), "refused: {refused:?}");
    assert_eq!(
        acked_ids.len() + uncertain.len(),
        TOTAL,
        "every message acknowledged or in flight at the kill"
    );

    // A marker after everything: recovered messages were queued before it.
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "burst@example.org",
        &["user@example.com"],
        &body("after restart", "after-restart@e2e.test"),
    );
    assert_eq!(r.code, 250);
    c.quit();

    let deadline = Instant::now() + Duration::from_secs(240);
    let ids = loop {
        let count = sink.count();
        if count > acked_ids.len() {
            let ids = burst_ids(&sink);
            let marker = sink
                .messages()
                .iter()
                .any(|m| subject_of(m) == "after restart");
            if marker && acked_ids.iter().all(|id| ids.contains_key(id)) {
                break ids;
            }
        }
        if Instant::now() > deadline {
            let ids = burst_ids(&sink);
            let missing: Vec<&usize> = acked_ids
                .iter()
                .filter(|id| !ids.contains_key(id))
                .collect();
            panic!(
                "{} acknowledged messages never arrived (first: {:?}); sink has {count}\n\
                 --- node stderr ---\n{}",
                missing.len(),
                &missing[..missing.len().min(20)],
                node.stderr()
            );
        }
        thread::sleep(Duration::from_millis(200));
    };

    let duplicates: usize = ids.values().map(|n| n - 1).sum();
    let uncertain_arrived = uncertain.iter().filter(|id| ids.contains_key(id)).count();
    let bound = DESTINATION_CONCURRENCY as usize * 50;
    eprintln!(
        "kill -9 burst: {} acknowledged, all delivered; {} in flight at the kill \
         ({uncertain_arrived} of them arrived); {duplicates} duplicate deliveries (bound {bound}); \
         total {:?}",
        acked_ids.len(),
        uncertain.len(),
        started.elapsed()
    );
    assert!(
        ids.keys().all(|id| *id < TOTAL),
        "unknown burst ids at the sink"
    );
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates: more than the deliveries that can be in flight ({bound})"
    );
}

#[test]
fn spool_survives_sigterm_while_the_next_hop_is_down() {
    let mut sink = Sink::accepting();
    sink.stop(); // the next hop is down: connections to its port are refused
    let mut node = Config {
        routes: vec![("ALL", sink.host_port())],
        initial_retry: 1,
        ..Config::to(&sink)
    }
    .start();
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    for i in 0..3 {
        let r = c.send_message(
            "sender@example.org",
            &["user@example.com"],
            &body(&format!("spooled {i}"), &format!("spooled-{i}@client.test")),
        );
        assert_eq!(r.code, 250);
    }
    c.quit();
    node.wait_for_log_matching(
        DELIVERY,
        |log| log.matches(" queued for delivery").count() >= 3,
        "3 x queued for delivery",
    );

    let status = node.stop();
    assert!(
        status.success(),
        "SIGTERM should be a clean shutdown, got {status}\n{}",
        node.stderr()
    );

    sink.restart(SinkOptions::default());
    node.restart();
    let messages = sink.wait_for_messages(3, DELIVERY);
    let subjects: BTreeSet<String> = messages.iter().map(subject_of).collect();
    assert_eq!(
        subjects,
        (0..3)
            .map(|i| format!("spooled {i}"))
            .collect::<BTreeSet<_>>()
    );
    assert_eq!(messages.len(), 3, "delivered twice: {messages:#?}");
}

// ---------------------------------------------------------------------------------------
// (i) quickstart
// ---------------------------------------------------------------------------------------

#[test]
fn quickstart_delivers_into_the_local_maildir_and_restarts_on_the_same_dir() {
    // quickstart lays out a gateway and a manager under DIR.
    let Quickstart {
        mut node,
        data,
        port,
        cpq_port,
    } = start_quickstart(&[]);
    let gateway = data.join("gateway");
    let manager = data.join("manager");
    let manager_ip = MANAGER_IP;
    assert_eq!(node.port(), port);
    assert_eq!(
        node.listener("cpq_listener"),
        std::net::SocketAddr::new(TRUSTED, cpq_port)
    );
    let manager_line = format!("Manager cpq_listener listening on {manager_ip}:{cpq_port}");
    let stdout = node.dir().join("node.stdout.log");
    wait_until(
        DELIVERY,
        || {
            std::fs::read_to_string(&stdout)
                .ok()?
                .contains(&manager_line)
                .then_some(())
        },
        || format!("{manager_line:?} in {}", stdout.display()),
    );
    // The banner names each node's web URL; the gateway's answers over HTTPS.
    for (what, ip) in [("Gateway", TRUSTED), ("Manager", manager_ip)] {
        let prefix = format!("  {what} web:  https://");
        let addr: std::net::SocketAddr = wait_until(
            DELIVERY,
            || {
                std::fs::read_to_string(&stdout)
                    .ok()?
                    .lines()
                    .find_map(|l| l.strip_prefix(&prefix)?.split('/').next()?.parse().ok())
            },
            || format!("{prefix:?} in {}", stdout.display()),
        );
        assert_eq!(addr.ip(), ip);
        let (code, body) = crate::support::https(addr, "GET", "/api/v1/openapi.json", None, None);
        assert_eq!(code, 200, "{what}: {body}");
        // An Administrator's token reads the node's PVO state (a manager: its gateways).
        let dir = if what == "Gateway" {
            &gateway
        } else {
            &manager
        };
        let token = crate::support::admin_token_in(dir);
        let (code, body) =
            crate::support::https(addr, "GET", "/api/v1/gateways", Some(&token), None);
        assert_eq!(code, 200, "{what}: {body}");
        let state: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(state["role"], what.to_lowercase(), "{body}");
    }
    for file in [gateway.join("pvo.toml"), manager.join("pvo.toml")] {
        assert!(file.is_file(), "quickstart writes {}", file.display());
    }
    let config = std::fs::read_to_string(gateway.join("pvo.toml")).unwrap();
    let manager_config = std::fs::read_to_string(manager.join("pvo.toml")).unwrap();

    let maildir_new = gateway.join("maildir/new");
    let count = |dir: &std::path::Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "someone@example.org",
        &["user@example.com"],
        &body("quickstart", "qs@client.test"),
    );
    assert_eq!(
        r.code, 250,
        "quickstart accepts mail for example.com from anyone"
    );
    let r = c.command("MAIL FROM:<someone@example.org>");
    assert_eq!(r.code, 250);
    let r = c.command("RCPT TO:<victim@example.net>");
    assert!(
        (500..600).contains(&r.code),
        "quickstart must not relay for 127.0.0.2: {}",
        r.raw()
    );
    c.quit();

    wait_until(
        DELIVERY,
        || (count(&maildir_new) >= 1).then_some(()),
        || format!("a message in {}", maildir_new.display()),
    );
    let file = std::fs::read_dir(&maildir_new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("Subject: quickstart"), "{text}");

    // Run again on the same directory: same configs, same mail.
    let status = node.stop();
    assert!(status.success(), "SIGTERM: {status}");
    node.restart();
    assert_eq!(node.port(), port);
    assert_eq!(
        node.listener("cpq_listener"),
        std::net::SocketAddr::new(TRUSTED, cpq_port)
    );
    assert_eq!(
        std::fs::read_to_string(gateway.join("pvo.toml")).unwrap(),
        config
    );
    assert_eq!(
        std::fs::read_to_string(manager.join("pvo.toml")).unwrap(),
        manager_config
    );
    assert_eq!(count(&maildir_new), 1);
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "me@example.org",
        &["friend@example.net"],
        &body("quickstart relay", "qs2@client.test"),
    );
    assert_eq!(r.code, 250, "quickstart relays anything for 127.0.0.1");
    c.quit();
    wait_until(
        DELIVERY,
        || (count(&maildir_new) >= 2).then_some(()),
        || format!("a second message in {}", maildir_new.display()),
    );
}
