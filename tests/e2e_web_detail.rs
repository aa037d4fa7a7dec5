//! The message detail page and the delivery status pages in headless Chromium (see
//! `support::Browser`): an Administrator sees what a content filter and a DLP policy
//! matched, in `<mark>`; a Guest sees the filter and the conditions but a note instead
//! of the matched text, and no "Send copy"; the delivery status lists a destination
//! whose next hop refuses connections marked down (`*`), its page shows `hoststatus`,
//! and "Deliver now" reschedules its recipient.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const DELIVERY: Duration = Duration::from_secs(60);

/// Relayed mail from 127.0.0.1: `down.example` goes to `dead` (nothing listens there),
/// the rest to the sink; a body with `code-NNNN` or a card number is quarantined.
fn config(sink: &Sink, dead: SocketAddr) -> String {
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
  recipients = ["one.example", "down.example"]
  action = "accept"

[[smtp_route]]
domain = "down.example"
hosts = ["{dead}"]

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
name = "secret_codes"
conditions = {{ body_regex = "code-[0-9]+" }}
actions = [{{ quarantine = "Policy" }}]

[[dlp_policy]]
name = "cards"
detectors = ["payment_card"]
[dlp_policy.actions]
low = [{{ quarantine = "Policy" }}]

[[mail_policy]]
name = "DEFAULT_OUTGOING"
direction = "outgoing"
content_filters = ["ALL"]
dlp_policies = ["cards"]
"#,
        sink = sink.host_port()
    )
}

/// `pvo --dir DATA_DIR ARGS` with `input` on stdin; panics unless it succeeds.
fn pvo(node: &Node, args: &[&str], input: &str) -> String {
    let mut child = Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvo");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("pvo output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`pvo {}` failed: {text}",
        args.join(" ")
    );
    text
}

fn pvo_json(node: &Node, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let text = pvo(node, &a, "");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// Sends `body` to `rcpt`; returns the MID.
fn send(node: &Node, rcpt: &str, subject: &str, body: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "sender@example.org",
        &[rcpt],
        &format!("Subject: {subject}\r\n\r\n{body}\r\n"),
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

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

async fn login(b: &Browser, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/login")).await;
    b.fill("#username", user).await;
    b.fill("#password", password).await;
    b.click("#login").await;
    b.find("header form button[type=submit]").await;
}

async fn logout(b: &Browser) {
    b.click("header form button[type=submit]").await;
    b.find("#password").await;
}

#[test]
fn web_detail_shows_matched_content_by_role_and_delivery_status_delivers_now() {
    let sink = Sink::accepting();
    // A port nothing listens on: connections to it are refused.
    let dead = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let node = Node::start(&config(&sink, dead));
    let base = format!("https://{}", web_addr(&node));
    let admin_pw = std::fs::read_to_string(node.data_dir().join("run/initial-admin-password"))
        .expect("initial admin password")
        .trim()
        .to_string();
    pvo(
        &node,
        &[
            "userconfig",
            "new",
            "--name",
            "guest",
            "--role",
            "Guest",
            "--password-stdin",
        ],
        "guest-password-1\n",
    );
    pvo(
        &node,
        &["quarantineconfig", "edit", "Policy", "--access", "Guest"],
        "",
    );

    let code = send(
        &node,
        "x@one.example",
        "codes <i>inside</i>",
        "Your code-4711 <b>is</b> inside.",
    );
    let card = send(
        &node,
        "x@one.example",
        "payment",
        "My card is 4111 1111 1111 1111.",
    );
    for mid in [code, card] {
        node.wait_for_log(&format!("MID {mid} quarantined to \"Policy\""), DELIVERY);
    }
    // A clean message to the host whose next hop refuses: deferred, the host down.
    send(&node, "y@down.example", "deferred", "Nothing to see.");
    wait_until(
        DELIVERY,
        || {
            let s = pvo_json(&node, &["hoststatus", "down.example"]);
            (s["data"]["status"]["down"] == true).then_some(())
        },
        || "down.example never marked down".to_string(),
    );

    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &base, "admin", &admin_pw).await;

        // The Administrator: the filter, its condition and the matched text marked.
        b.goto(&format!("{base}/messages/{code}")).await;
        let mark = b.text("#why mark").await;
        assert_eq!(mark, "code-4711");
        let why = b.text("#why").await;
        assert!(
            why.contains("secret_codes") && why.contains("body_regex \"code-[0-9]+\""),
            "{why}"
        );
        assert!(b.all("#matched-hidden").await.is_empty());
        let exit = b.text("#memberships td.exit").await;
        assert!(exit.contains("(in "), "{exit}");
        let parts = b.text("#parts").await;
        assert!(parts.contains("text/plain"), "{parts}");
        let headers = b.text("#headers").await;
        assert!(headers.contains("codes <i>inside</i>"), "{headers}");
        assert!(b.all("main i").await.is_empty(), "the subject is escaped");
        b.find("#copy").await;
        // Move offers the other quarantines.
        let mut others = Vec::new();
        for o in b.all("#quarantine-names option").await {
            others.push(o.attr("value").await.unwrap().unwrap_or_default());
        }
        assert!(
            !others.is_empty() && !others.iter().any(|q| q == "Policy"),
            "{others:?}"
        );
        // The DLP message: the detector and its masked sample marked.
        b.goto(&format!("{base}/messages/{card}")).await;
        let mark = b.text("#why mark").await;
        assert!(
            mark.ends_with("1111") && !mark.contains("1111 1111"),
            "{mark}"
        );
        let why = b.text("#why").await;
        assert!(
            why.contains("cards") && why.contains("payment_card"),
            "{why}"
        );

        // A Guest: the filter and conditions, a note instead of what matched, no
        // "Send copy", and no delivery status (its role may not monitor).
        logout(&b).await;
        login(&b, &base, "guest", "guest-password-1").await;
        b.goto(&format!("{base}/messages/{code}")).await;
        let note = b.text("#matched-hidden").await;
        assert!(note.contains("hidden for your role"), "{note}");
        let why = b.text("#why").await;
        assert!(
            why.contains("secret_codes") && why.contains("body_regex \"code-[0-9]+\""),
            "{why}"
        );
        assert!(b.all("#why mark").await.is_empty());
        assert!(!b.source().await.contains("code-4711"));
        b.find("#release").await;
        assert!(b.all("#copy").await.is_empty());
        b.goto(&format!("{base}/messages/{card}")).await;
        b.find("#matched-hidden").await;
        assert!(b.all("#why mark").await.is_empty());
        assert!(!b.source().await.contains("**** 1111"));
        b.goto(&format!("{base}/delivery")).await;
        let refused = b.text_with("main .err", "Refused").await;
        assert!(refused.contains("Refused"), "{refused}");
        assert!(b.all("#tophosts").await.is_empty());
        logout(&b).await;

        // Delivery status: the refusing destination is marked down.
        login(&b, &base, "admin", &admin_pw).await;
        b.click("a[href='/delivery']").await;
        let table = b.text_with("#tophosts", "down.example").await;
        assert!(table.contains("*down.example"), "{table}");
        for col in [
            "Recipient Host",
            "Active Recip.",
            "Conn. Out",
            "Deliv. Recip.",
            "Soft Bounced",
            "Hard Bounced",
        ] {
            assert!(table.contains(col), "{table}");
        }
        // The sort selector keeps its choice.
        b.goto(&format!("{base}/delivery?sort=soft")).await;
        let chosen = b.find("#sort option[selected]").await.text().await.unwrap();
        assert_eq!(chosen, "Soft bounced");
        b.click("#tophosts a[href='/delivery/down.example']").await;
        let updown = b.text_with("#updown", "down").await;
        assert!(updown.starts_with("down"), "{updown}");
        let status = b.text("#hoststatus").await;
        assert!(
            status.contains("Host mail status for: 'down.example'")
                && status.contains(&dead.to_string()),
            "{status}"
        );
        let last = b.text("#last-error").await;
        assert!(!last.is_empty());
        b.click("#deliver-now").await;
        let result = b.text_with("#result", "rescheduled").await;
        assert!(
            result.contains("1 recipients of down.example rescheduled for immediate delivery"),
            "{result}"
        );
        b.click("#back").await;
        b.find("#hoststatus").await;
        b.close().await;
    });

    // The press was the admin's, from the web UI, and the queue retried at once.
    let audit = pvo_json(&node, &["auditlog"]);
    assert!(
        audit["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["command"] == "delivernow"
                && e["user"] == "admin"
                && e["from"].as_str().unwrap_or("").starts_with("web ")),
        "{audit:#}"
    );
}

// ---------------------------------------------------------------------------------------
// The CPQ destinations on both roles
// ---------------------------------------------------------------------------------------

const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn manager_config(cpq_port: u16) -> String {
    format!(
        r#"[node]
role = "manager"
hostname = "manager.cpq.test"
data_dir = "."

[[interface]]
name = "Management"
address = "{MANAGER_IP}"
hostname = "manager.cpq.test"

[cpq]
node_id = "manager"
interface = "Management"
port = {cpq_port}

[web]
interface = "Management"
port = 0
"#
    )
}

/// A central gateway: what the filter quarantines goes to the manager (`the.cpq.host`).
fn central_gateway_config(cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
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
  recipients = ["one.example"]
  action = "accept"

[[smtp_route]]
domain = "ALL"
hosts = ["{sink}"]

[delivery]
default_interface = "Loopback"

[tls.outbound]
default = "off"

[web]
interface = "Loopback"
port = 0

[[content_filter]]
name = "secret_codes"
conditions = {{ body_regex = "code-[0-9]+" }}
actions = [{{ quarantine = "Policy" }}]

[[mail_policy]]
name = "DEFAULT_OUTGOING"
direction = "outgoing"
content_filters = ["ALL"]

[cpq]
node_id = "gw1"
interface = "Loopback"
port = {cpq_port}
mode = "central"
manager = "{MANAGER_IP}:{manager_port}"
"#,
        sink = sink.host_port()
    )
}

fn password(node: &Node) -> String {
    std::fs::read_to_string(node.data_dir().join("run/initial-admin-password"))
        .expect("initial admin password")
        .trim()
        .to_string()
}

/// The `hoststatus` figures of `host` on `node`.
fn host_status(node: &Node, host: &str) -> Value {
    pvo_json(node, &["hoststatus", host])["data"].clone()
}

#[test]
fn web_delivery_status_lists_the_cpq_hosts_on_gateway_and_manager() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_config(manager_port));
    let cpq_port = free_port_on(TRUSTED);
    let gdir = NodeDir::new(&central_gateway_config(cpq_port, manager_port, &sink));
    let mut enroll = Command::new(pvo_bin());
    enroll
        .args(["manager", "enroll", "--config"])
        .arg(mdir.config_path())
        .arg("gw1")
        .args(["--address", "127.0.0.1", "--port", &cpq_port.to_string()])
        .arg("--out")
        .arg(gdir.cpq_dir());
    let (status, out, err) = run_with_timeout(&mut enroll, DELIVERY);
    assert!(status.success(), "enroll: {out}{err}");
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();
    // The manager refuses connections for now: the transfer waits, the host is down.
    pvo(&manager, &["suspendlisteners", "all"], "");
    send(&gw, "x@one.example", "central", "code-1234");
    wait_until(
        DELIVERY,
        || (host_status(&gw, "the.cpq.host")["status"]["down"] == true).then_some(()),
        || "the.cpq.host never marked down".to_string(),
    );

    let gw_base = format!("https://{}", web_addr(&gw));
    let m_base = format!("https://{}", web_addr(&manager));
    rt().block_on(async {
        let b = Browser::start().await;
        login(&b, &gw_base, "admin", &password(&gw)).await;
        b.goto(&format!("{gw_base}/delivery")).await;
        let table = b.text_with("#tophosts", "the.cpq.host").await;
        assert!(table.contains("*the.cpq.host"), "{table}");
        b.click("#tophosts a[href='/delivery/the.cpq.host']").await;
        let updown = b.text_with("#updown", "down").await;
        assert!(updown.starts_with("down"), "{updown}");
        let status = b.text("#hoststatus").await;
        assert!(status.contains("the manager's cpq_listener"), "{status}");

        // The manager back, "Deliver now": the transfer goes at once.
        pvo(&manager, &["resumelisteners", "all"], "");
        b.click("#deliver-now").await;
        let result = b.text_with("#result", "rescheduled").await;
        assert!(
            result.contains("of the.cpq.host rescheduled for immediate delivery"),
            "{result}"
        );
        let mid = wait_until(
            DELIVERY,
            || {
                let found = pvo_json(&manager, &["quarantine", "search"]);
                found["data"]["messages"][0]["mid"].as_u64()
            },
            || "the manager holds nothing".into(),
        );
        wait_until(
            DELIVERY,
            || (host_status(&gw, "the.cpq.host")["status"]["down"] == false).then_some(()),
            || "the.cpq.host still down".to_string(),
        );
        b.click("#back").await;
        let updown = b.text_with("#updown", "up").await;
        assert_eq!(updown, "up");

        // On the manager, a release goes out through the.cpq.release.host.
        pvo(&manager, &["quarantine", "release", &mid.to_string()], "");
        sink.wait_for_messages(1, DELIVERY);
        wait_until(
            DELIVERY,
            || {
                let s = host_status(&manager, "the.cpq.release.host");
                (s["status"]["delivered_recipients"] == 1).then_some(())
            },
            || "the.cpq.release.host never delivered".to_string(),
        );
        login(&b, &m_base, "admin", &password(&manager)).await;
        b.goto(&format!("{m_base}/delivery?sort=delivered")).await;
        let row = b
            .text_with("#tophosts tbody tr:first-child", "the.cpq.release.host")
            .await;
        assert!(row.contains("the.cpq.release.host"), "{row}");
        b.click("#tophosts a[href='/delivery/the.cpq.release.host']")
            .await;
        let status = b.text("#hoststatus").await;
        assert!(
            status.contains("the originating gateway's cpq_listener"),
            "{status}"
        );
        b.find("#deliver-now").await;
        b.close().await;
    });
}
