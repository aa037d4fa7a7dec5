//! End-to-end tests of the centralized quarantines (`docs/cpq.md`): real gateways
//! (`pvo gateway run`, central mode) and a real manager (`pvo manager run`) on loopback —
//! gateway gw1 on 127.0.0.1, the manager on 127.0.0.2, a second gateway gw2 on 127.0.0.3 —
//! each gateway with its own next hop (`tests/peers/sink.py`), and the appliance commands
//! run as separate `pvo --dir DIR ...` processes, as an administrator would.
//!
//! Every deployment is made the way an administrator makes one: the manager's
//! configuration is written, each gateway is enrolled with `pvo manager enroll` (which
//! creates the deployment CA, writes the gateway's certificate into its `cpq/` directory
//! and adds its `[[cpq.gateway]]` to the manager's file), then the manager starts (and
//! issues its own certificate), then the gateways. The CPQ ports have to be known before
//! anything runs (enrollment and `[cpq] manager` name them), so they are the only ports
//! chosen up front (kernel-chosen free ports); SMTP listeners bind port 0.
//!
//! A message is quarantined by the content filter of the quickstart demo (subject
//! containing `[quarantine-test]`, to Policy). Every wait is for an event — a `mail_logs`
//! line, a command's answer, a message at a sink — never a fixed sleep.
//!
//! Needs `scripts/install-test-deps` (python3-aiosmtpd).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    accepted_mid, connect, enroll, free_port_on, json, log_lines, manager_toml, metric, new_user,
    number_after, pvo, pvo_bin, run_with_timeout, scrape, ssh_port, text, wait_line, wait_metric,
    wait_until, GatewayToml, Namespace, Node, NodeDir, Sink, SmtpClient, INCOMING_POLICY,
    OUTGOING_POLICY, QUARANTINE_TEST_FILTER, SYSTEM_PYTHON, TRUSTED,
};
use crate::support::{pvo_try, Tmpfs};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const DELIVERY: Duration = Duration::from_secs(60);
/// One appliance command.
const COMMAND: Duration = Duration::from_secs(60);

const GW1_IP: IpAddr = TRUSTED;
const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const GW2_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Neither a gateway nor the manager.
const STRANGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4));

/// What the demo content filter looks for in the subject, and how the nodes log the hit.
const TAG: &str = "[quarantine-test]";
const FILTER_REASON: &str = "content filter:quarantine_test";

// ---------------------------------------------------------------------------------------
// Configurations
// ---------------------------------------------------------------------------------------

/// A manager on 127.0.0.2 whose cpq_listener is on `cpq_port`, no gateway enrolled yet.
fn manager_config(node_id: &str, cpq_port: u16) -> String {
    manager_toml(node_id, cpq_port)
}

/// The `[[cpq.gateway]]` table `pvo manager enroll` writes, for writing it by hand.
fn enrolled_gateway(id: &str, ip: IpAddr, port: u16) -> String {
    format!("\n[[cpq.gateway]]\nid = \"{id}\"\naddress = \"{ip}\"\nport = {port}\n")
}

/// A gateway `id` on `ip` in central mode (manager 127.0.0.2:`manager_port`), its
/// cpq_listener on `ip`:`cpq_port`, mail to anything routed to `sink`, and the demo
/// content filter in both mail policies (mail from 127.0.0.1 is outgoing).
fn gateway_config(id: &str, ip: IpAddr, cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
    // CPQ leaves from the default delivery interface (as on the appliance): the
    // gateway's own address, the one the manager's HAT lists.
    GatewayToml::new(sink)
        .hostname(&format!("{id}.cpq.test"))
        .address(ip)
        .accept_all()
        .rat(&["example.com"])
        .default_interface("Loopback")
        .quiet_bounces()
        .cpq(id, cpq_port, "central", manager_port)
        .extra(QUARANTINE_TEST_FILTER)
        .extra(INCOMING_POLICY)
        .extra(OUTGOING_POLICY)
        .build()
}

// ---------------------------------------------------------------------------------------
// A deployment: one manager, enrolled gateways
// ---------------------------------------------------------------------------------------

struct Gateway {
    id: &'static str,
    ip: IpAddr,
    cpq_port: u16,
    node: Node,
    sink: Sink,
}

struct Deployment {
    manager: Node,
    manager_port: u16,
    gateways: Vec<Gateway>,
}

impl Deployment {
    /// A manager on 127.0.0.2 and a gateway per `(id, ip)`, each enrolled before the
    /// manager starts, and each delivering to its own sink.
    fn start(gateways: &[(&'static str, IpAddr)]) -> Deployment {
        Deployment::start_with(gateways, "", "")
    }

    /// Like [`Deployment::start`], with `manager_extra` appended to the manager's
    /// configuration (it ends inside `[cpq]`) and `gateway_extra` to each gateway's.
    fn start_with(
        gateways: &[(&'static str, IpAddr)],
        manager_extra: &str,
        gateway_extra: &str,
    ) -> Deployment {
        let manager_port = free_port_on(MANAGER_IP);
        let mdir = NodeDir::new(&format!(
            "{}{manager_extra}",
            manager_config("manager", manager_port)
        ));
        let mut prepared = Vec::new();
        for &(id, ip) in gateways {
            let sink = Sink::accepting();
            let cpq_port = free_port_on(ip);
            let dir = NodeDir::new(&format!(
                "{}{gateway_extra}",
                gateway_config(id, ip, cpq_port, manager_port, &sink)
            ));
            enroll(&mdir, &dir, id, ip, cpq_port);
            prepared.push((id, ip, cpq_port, dir, sink));
        }
        let manager = mdir.start_manager();
        assert_eq!(
            manager.listener("cpq_listener"),
            SocketAddr::new(MANAGER_IP, manager_port)
        );
        let gateways = prepared
            .into_iter()
            .map(|(id, ip, cpq_port, dir, sink)| {
                let node = dir.start_gateway();
                assert_eq!(node.listener("cpq_listener"), SocketAddr::new(ip, cpq_port));
                Gateway {
                    id,
                    ip,
                    cpq_port,
                    node,
                    sink,
                }
            })
            .collect();
        Deployment {
            manager,
            manager_port,
            gateways,
        }
    }

    fn manager_addr(&self) -> SocketAddr {
        SocketAddr::new(MANAGER_IP, self.manager_port)
    }
}

// ---------------------------------------------------------------------------------------
// The command line
// ---------------------------------------------------------------------------------------

/// Every message the manager holds that `quarantine search ARGS` finds (one page of up to
/// 10,000), checking that the page is all of them.
fn held(manager: &Node, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["quarantine", "search", "--limit", "10000"];
    all.extend_from_slice(args);
    let data = json(manager, &all);
    let messages = data["messages"].as_array().expect("messages").clone();
    assert_eq!(data["total_exact"], true, "{data:#}");
    assert_eq!(
        data["total"].as_u64(),
        Some(messages.len() as u64),
        "the page should hold every match: {data:#}"
    );
    messages
}

/// The originating gateway's MID of a manager search result.
fn gateway_mid(m: &Value) -> u64 {
    m["gateway_mid"]
        .as_u64()
        .unwrap_or_else(|| panic!("a search result on the manager names no gateway_mid: {m:#}"))
}

/// The recipients queued on `node` for `host` (`showrecipients --host HOST`).
fn queued_for(node: &Node, host: &str) -> Vec<Value> {
    json(node, &["showrecipients", "--host", host])["recipients"]
        .as_array()
        .expect("recipients")
        .clone()
}

// ---------------------------------------------------------------------------------------
// Mail and logs
// ---------------------------------------------------------------------------------------

fn message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{}@client.cpq.test>\r\n\r\nThe body of {subject}.\r\n",
        subject.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
    )
}

/// Sends one message from 127.0.0.1 through `node`; returns its MID on the gateway.
fn send(node: &Node, from: &str, to: &str, subject: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let r = c.send_message(from, &[to], &message(from, to, subject));
    assert_eq!(r.code, 250, "end of data: {}", r.raw());
    c.quit();
    accepted_mid(&r)
}

/// The one line of `log` containing every one of `needles`; panics unless exactly one.
fn only_line<'a>(log: &'a str, needles: &[&str]) -> &'a str {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line with {needles:?}, got {lines:#?}\n--- log ---\n{log}"
    );
    lines[0]
}

/// Waits until the gateway has the manager's `250` for `mid`; returns the manager's MID.
fn wait_transferred(gw: &Node, mid: u64) -> u64 {
    let line = wait_line(
        gw,
        &[
            &format!("MID {mid} RID [0] Response '2.0.0 Ok: Message "),
            " accepted'",
        ],
    );
    number_after(&line, "Ok: Message ").unwrap()
}

/// How many times the manager logged `quarantined to`.
fn quarantined_count(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(" quarantined to \""))
        .count()
}

/// Checks the whole story of one transfer in both logs: the gateway's delivery to the
/// manager (`New SMTP DCID … port P`, TLS, `Delivery start … to Centralized Policy
/// Quarantine`, `Message done … (centralized policy quarantine)`, the manager's MID) and
/// the manager's receipt (`New CPQ ICID … address GW_IP`, the verified peer, the transfer
/// and the quarantine). Returns the manager's MID.
fn check_transfer(d: &Deployment, gw: &Gateway, mid: u64, sender: &str) -> u64 {
    let mgr_mid = wait_transferred(&gw.node, mid);
    let glog = gw.node.mail_logs();
    only_line(
        &glog,
        &[&format!(
            "MID {mid} quarantined to \"Policy\" ({FILTER_REASON}) (centralized)"
        )],
    );
    let start = only_line(
        &glog,
        &[&format!(
            " MID {mid} to RID [0] to Centralized Policy Quarantine"
        )],
    );
    assert!(start.contains("Delivery start DCID "), "{start}");
    let dcid = number_after(start, "DCID ").unwrap();
    let connect = only_line(&glog, &[&format!("New SMTP DCID {dcid} ")]);
    assert!(
        connect.ends_with(&format!(
            "interface {} address {MANAGER_IP} port {}",
            gw.ip, d.manager_port
        )),
        "{} should connect from its cpq interface to the manager: {connect}",
        gw.id
    );
    let tls = only_line(
        &glog,
        &[&format!("DCID {dcid} TLS success protocol TLSv1.")],
    );
    assert!(tls.ends_with(" the.cpq.host"), "{tls}");
    only_line(
        &glog,
        &[&format!(
            "Message done DCID {dcid} MID {mid} to RID [0] (centralized policy quarantine)"
        )],
    );
    // `grep "port 7025" mail_logs` (here: the chosen CPQ port) finds the connection.
    assert!(
        log_lines(&glog, &format!("port {}", d.manager_port))
            .iter()
            .any(|l| l.contains(&format!("New SMTP DCID {dcid} "))),
        "grep \"port {}\" misses DCID {dcid}:\n{glog}",
        d.manager_port
    );

    let mlog = d.manager.wait_for_log(
        &format!("MID {mgr_mid} quarantined to \"Policy\" ({FILTER_REASON})"),
        DELIVERY,
    );
    let stored = only_line(
        &mlog,
        &[&format!(
            " bytes from gateway {} MID {mid} (transfer ",
            gw.id
        )],
    );
    assert!(
        stored.contains(&format!("MID {mgr_mid} ICID "))
            && stored.contains(&format!(" From: <{sender}> ")),
        "{stored}"
    );
    let icid = number_after(stored, "ICID ").unwrap();
    let new = only_line(&mlog, &[&format!("New CPQ ICID {icid} ")]);
    assert!(
        new.contains(&format!(
            "interface Management ({MANAGER_IP}) address {} ",
            gw.ip
        )),
        "{new}"
    );
    let tls = only_line(
        &mlog,
        &[&format!("ICID {icid} TLS success protocol TLSv1.")],
    );
    assert!(tls.ends_with(&format!(" peer {} verified", gw.id)), "{tls}");
    assert!(
        log_lines(&mlog, "CPQ ICID").contains(&new),
        "grep \"CPQ ICID\" misses {new}"
    );
    mgr_mid
}

// ---------------------------------------------------------------------------------------
// A hand-made CPQ client (Python's smtplib and ssl)
// ---------------------------------------------------------------------------------------

/// Speaks CPQ to a cpq_listener: EHLO, STARTTLS with a client certificate when one is
/// given, EHLO, `XPVO-META 1 <base64 of RECORD>`, and, if that is accepted, one message.
/// Prints one line per step (`EHLO 250 …`, `META 250 …`, `DATA 250 …`, `ERROR …`).
const CPQ_CLIENT: &str = r#"
import base64, smtplib, ssl, sys
host, port, source, cert, key, ca, record, sender, rcpt = sys.argv[1:10]
def show(step, code, text):
    text = text.decode() if isinstance(text, bytes) else str(text)
    print(step, code, text.replace("\n", " | "), flush=True)
try:
    s = smtplib.SMTP(host, int(port), local_hostname="cpq-client.test",
                     source_address=(source, 0), timeout=30)
    show("EHLO", *s.ehlo())
    if ca:
        ctx = ssl.create_default_context(cafile=ca)
        if cert:
            ctx.load_cert_chain(cert, key)
        show("STARTTLS", *s.starttls(context=ctx))
        show("EHLO", *s.ehlo())
    show("META", *s.docmd("XPVO-META", "1 " + base64.b64encode(record.encode()).decode()))
    show("MAIL", *s.mail(sender))
    show("RCPT", *s.rcpt(rcpt))
    body = "From: <%s>\r\nTo: <%s>\r\nSubject: made by hand\r\n\r\nhand-made\r\n" % (sender, rcpt)
    show("DATA", *s.data(body.encode()))
    s.quit()
except Exception as e:
    print("ERROR", type(e).__name__, str(e).replace("\n", " | "), flush=True)
"#;

/// Runs [`CPQ_CLIENT`] from `source` to `to`: in clear text without `ca`; with STARTTLS
/// trusting `ca` with it, presenting `client` (certificate, key) if given. Returns what
/// it printed.
fn cpq_client(
    to: SocketAddr,
    source: IpAddr,
    ca: Option<&Path>,
    client: Option<(&Path, &Path)>,
    record: &str,
) -> String {
    let shown = |p: Option<&Path>| p.map(|p| p.display().to_string()).unwrap_or_default();
    let (ca, cert, key) = (
        shown(ca),
        shown(client.map(|c| c.0)),
        shown(client.map(|c| c.1)),
    );
    let mut cmd = Command::new(SYSTEM_PYTHON);
    cmd.arg("-c").arg(CPQ_CLIENT).args([
        &to.ip().to_string(),
        &to.port().to_string(),
        &source.to_string(),
        &cert,
        &key,
        &ca,
        record,
        "alice@example.org",
        "bob@example.com",
    ]);
    let (status, out, err) = run_with_timeout(&mut cmd, COMMAND);
    assert!(status.success(), "cpq client: {status}\n{out}\n{err}");
    out
}

// ---------------------------------------------------------------------------------------
// Transfer, search, release
// ---------------------------------------------------------------------------------------

#[test]
fn transfer_search_release_returns_to_the_originating_gateway() {
    let d = Deployment::start(&[("gw1", GW1_IP), ("gw2", GW2_IP)]);
    let (gw1, gw2) = (&d.gateways[0], &d.gateways[1]);

    // One quarantined message through each gateway (one after the other, so that the
    // manager's MIDs come in a known order).
    let s1 = format!("{TAG} from gw1");
    let m1 = send(&gw1.node, "alice@example.org", "bob@example.com", &s1);
    let k1 = check_transfer(&d, gw1, m1, "alice@example.org");
    let s2 = format!("{TAG} from gw2");
    let m2 = send(&gw2.node, "carol@example.org", "dave@example.com", &s2);
    let k2 = check_transfer(&d, gw2, m2, "carol@example.org");
    assert_ne!(k1, k2, "the manager gives each transfer its own MID");
    assert_eq!(
        log_lines(&d.manager.mail_logs(), "New CPQ ICID").len(),
        2,
        "one CPQ connection per transfer"
    );

    // Both are held on the manager, searchable, with their metadata.
    let all = held(&d.manager, &[]);
    assert_eq!(all.len(), 2, "{all:#?}");
    for (k, m, gw, subject, sender, rcpt) in [
        (k1, m1, gw1, &s1, "alice@example.org", "bob@example.com"),
        (k2, m2, gw2, &s2, "carol@example.org", "dave@example.com"),
    ] {
        let hit = all
            .iter()
            .find(|h| h["subject"] == subject.as_str())
            .unwrap_or_else(|| panic!("{subject:?} not held on the manager: {all:#?}"));
        assert_eq!(hit["mid"], k, "the manager's MID: {hit:#}");
        assert_eq!(hit["gateway"], gw.id, "the originating gateway: {hit:#}");
        assert_eq!(gateway_mid(hit), m, "{hit:#}");
        assert_eq!(hit["sender"], sender, "{hit:#}");
        assert_eq!(hit["recipients"], serde_json::json!([rcpt]), "{hit:#}");
        assert_eq!(hit["quarantines"][0]["name"], "Policy", "{hit:#}");
        assert_eq!(hit["quarantines"][0]["reason"], FILTER_REASON, "{hit:#}");
        let by_gateway = held(&d.manager, &["--gateway", gw.id]);
        assert_eq!(
            by_gateway
                .iter()
                .map(|h| h["mid"].clone())
                .collect::<Vec<_>>(),
            vec![Value::from(k)],
            "quarantine search --gateway {}",
            gw.id
        );
        let by_subject = held(&d.manager, &["--subject", &format!("from {}", gw.id)]);
        assert_eq!(by_subject.len(), 1, "{by_subject:#?}");
        let shown = json(&d.manager, &["quarantine", "show", &k.to_string()]);
        assert_eq!(shown["mid"], k, "{shown:#}");
    }
    let listing = text(&d.manager, &["quarantine", "search"]);
    assert!(listing.contains(&s1) && listing.contains(&s2), "{listing}");

    // Release gw1's message on the manager: it goes back to gw1, which delivers it.
    let out = text(&d.manager, &["quarantine", "release", &k1.to_string()]);
    assert!(out.contains("1 released from all quarantines"), "{out}");
    let queued = wait_line(
        &d.manager,
        &[&format!(
            " released MID {k1} of gateway gw1 (gateway MID {m1}) queued to the.cpq.release.host"
        )],
    );
    let rmid = number_after(&queued, "MID ").unwrap();
    let received = wait_line(
        &gw1.node,
        &[
            " released from the Centralized Policy Quarantine (\"Policy\") by the manager manager: ",
            &format!("original MID {m1} release "),
        ],
    );
    let new_mid = number_after(&received, "MID ").unwrap();
    let cpq_icid = number_after(&received, "ICID ").unwrap();
    let release_id = received
        .split(" release ")
        .last()
        .unwrap()
        .trim()
        .to_string();
    let glog = gw1.node.mail_logs();
    let new = only_line(&glog, &[&format!("New CPQ ICID {cpq_icid} ")]);
    assert!(new.contains(&format!("address {MANAGER_IP} ")), "{new}");
    only_line(
        &glog,
        &[
            &format!("ICID {cpq_icid} TLS success protocol TLSv1."),
            " peer manager verified",
        ],
    );
    let delivered = wait_until(
        DELIVERY,
        || {
            gw1.sink
                .messages()
                .into_iter()
                .find(|m| m.header("Subject").as_deref() == Some(s1.as_str()))
        },
        || format!("{s1:?} at gw1's sink; gw1 log:\n{}", gw1.node.mail_logs()),
    );
    assert_eq!(delivered.mail_from, "alice@example.org");
    assert_eq!(delivered.rcpt_to, vec!["bob@example.com".to_string()]);
    let original = message("alice@example.org", "bob@example.com", &s1);
    assert!(
        delivered.text().ends_with(&original),
        "released as received (only trace headers added):\n{}",
        delivered.text()
    );
    wait_line(
        &gw1.node,
        &[&format!("Message finished MID {new_mid} done")],
    );
    let mlog = wait_line(
        &d.manager,
        &[&format!("MID {rmid} to RID [0] (released to its gateway)")],
    );
    assert!(mlog.contains("Message done DCID "), "{mlog}");
    // ... and only gw1: nothing reached gw2 or its sink.
    let log2 = gw2.node.mail_logs();
    assert!(
        log_lines(&log2, "CPQ ICID").is_empty() && !log2.contains("released from the Centralized"),
        "gw2 received a CPQ connection:\n{log2}"
    );
    assert_eq!(
        gw2.sink.count(),
        0,
        "gw2's sink got {:#?}",
        gw2.sink.messages()
    );
    assert_eq!(
        held(&d.manager, &[]).len(),
        1,
        "gw2's message is still held"
    );

    // A second release of the same message (a second click, a second administrator)
    // queues nothing more.
    let again = pvo(&d.manager, &["quarantine", "release", &k1.to_string()]);
    let said = format!("{}{}", again.stdout, again.stderr);
    assert!(
        ["unchanged", "not held", "already released"]
            .iter()
            .any(|w| said.contains(w)),
        "the second release should say there is nothing left to release:\n{said}"
    );
    assert_eq!(
        log_lines(
            &d.manager.mail_logs(),
            &format!(" released MID {k1} of gateway gw1 ")
        )
        .len(),
        1,
        "a second release queued the message again"
    );

    // The same release delivered again over CPQ (a retry after a lost reply), by hand
    // with the manager's own certificate from the manager's address: the gateway answers
    // 250 and does not deliver it again.
    let mcpq = d.manager.data_dir().join("cpq");
    let (cert, key, ca) = (
        mcpq.join("node.crt"),
        mcpq.join("node.key"),
        mcpq.join("ca.crt"),
    );
    let record =
        format!("kind=release\nrelease={release_id}\ngateway=gw1\nmid={m1}\nreleased-by=Policy\n");
    let replay = cpq_client(
        SocketAddr::new(gw1.ip, gw1.cpq_port),
        MANAGER_IP,
        Some(&ca),
        Some((&cert, &key)),
        &record,
    );
    assert!(replay.contains("META 250"), "{replay}");
    assert!(replay.contains("DATA 250"), "{replay}");
    wait_line(
        &gw1.node,
        &[&format!(
            "release {release_id} of MID {m1} already received; not delivered again"
        )],
    );
    // The same record for the other gateway is refused by gw1.
    let wrong = record.replace("gateway=gw1", "gateway=gw2");
    let refused = cpq_client(
        SocketAddr::new(gw1.ip, gw1.cpq_port),
        MANAGER_IP,
        Some(&ca),
        Some((&cert, &key)),
        &wrong,
    );
    assert!(refused.contains("META 550"), "{refused}");
    // A clean message through gw1 after the repeats: once it is at the sink, a second
    // copy of the released message would have been too.
    let marker = send(
        &gw1.node,
        "alice@example.org",
        "bob@example.com",
        "after the repeats",
    );
    wait_until(
        DELIVERY,
        || {
            gw1.sink
                .messages()
                .iter()
                .any(|m| m.header("Subject").as_deref() == Some("after the repeats"))
                .then_some(())
        },
        || format!("MID {marker} at gw1's sink"),
    );
    let copies = gw1
        .sink
        .messages()
        .iter()
        .filter(|m| m.header("Subject").as_deref() == Some(s1.as_str()))
        .count();
    assert_eq!(
        copies, 1,
        "the released message was delivered {copies} times"
    );
    assert!(
        !gw1.sink
            .messages()
            .iter()
            .any(|m| m.header("Subject").as_deref() == Some("made by hand")),
        "the repeated release was delivered"
    );
    assert_eq!(gw2.sink.count(), 0);
}

// ---------------------------------------------------------------------------------------
// Manager down: the gateway queues, then drains
// ---------------------------------------------------------------------------------------

#[test]
fn suspended_manager_queues_on_the_gateway_and_drains_on_resume() {
    const N: usize = 20;
    let d = Deployment::start(&[("gw1", GW1_IP)]);
    let gw = &d.gateways[0];

    let status = text(&d.manager, &["status", "detail"]);
    assert!(
        status.contains("System status:                 Online"),
        "{status}"
    );
    assert!(
        status.contains("cpq_listener"),
        "status detail shows the cpq_listener:\n{status}"
    );
    let out = text(&d.manager, &["suspend", "--delay", "0"]);
    assert!(out.contains("cpq_listener"), "{out}");
    let status = text(&d.manager, &["status"]);
    assert!(
        status.contains("System status:                 Offline"),
        "{status}"
    );
    wait_until(
        DELIVERY,
        || {
            connect(d.manager_addr(), Some(GW1_IP))
                .is_err()
                .then_some(())
        },
        || "the suspended manager's cpq_listener still accepts connections".into(),
    );

    let mut c = SmtpClient::open(gw.node.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let mut mids = BTreeSet::new();
    for i in 0..N {
        let subject = format!("{TAG} while the manager is away {i}");
        let r = c.send_message(
            "alice@example.org",
            &["bob@example.com"],
            &message("alice@example.org", "bob@example.com", &subject),
        );
        assert_eq!(r.code, 250, "{}", r.raw());
        mids.insert(accepted_mid(&r));
    }
    c.quit();

    // Every one waits under the.cpq.host, deferred after a failed attempt.
    let queued = wait_until(
        DELIVERY,
        || {
            let q = queued_for(&gw.node, "the.cpq.host");
            let tried = q
                .iter()
                .filter(|r| r["attempts"].as_u64().unwrap_or(0) >= 1)
                .count();
            (tried == N).then_some(q)
        },
        || {
            format!(
                "{N} recipients tried and queued under the.cpq.host; gateway log:\n{}",
                gw.node.mail_logs()
            )
        },
    );
    let queued_mids: BTreeSet<u64> = queued.iter().map(|r| r["mid"].as_u64().unwrap()).collect();
    assert_eq!(queued_mids, mids);
    for r in &queued {
        assert_eq!(r["host"], "the.cpq.host", "{r:#}");
        assert_eq!(r["recipient"], "bob@example.com", "{r:#}");
    }
    let shown = text(&gw.node, &["showrecipients", "--host", "the.cpq.host"]);
    assert!(
        shown.contains(&format!("{N} recipients in {N} messages.")),
        "{shown}"
    );
    let hosts = json(&gw.node, &["tophosts"]);
    let row = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "the.cpq.host")
        .unwrap_or_else(|| panic!("tophosts lacks the.cpq.host: {hosts:#}"))
        .clone();
    assert_eq!(row["active_recipients"], N, "{row:#}");
    let top = text(&gw.node, &["tophosts"]);
    assert!(top.contains("the.cpq.host"), "{top}");
    let hs = json(&gw.node, &["hoststatus", "the.cpq.host"]);
    assert_eq!(hs["known"], true, "{hs:#}");
    assert_eq!(hs["status"]["active_recipients"], N, "{hs:#}");
    assert!(
        hs["route"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("{MANAGER_IP}:{}", d.manager_port)),
        "hoststatus the.cpq.host should show the manager as the route: {hs:#}"
    );
    assert_eq!(
        hs["tls"], "required-verify",
        "CPQ is always verified TLS: {hs:#}"
    );
    let glog = gw.node.mail_logs();
    assert!(
        log_lines(
            &glog,
            &format!("connection to {MANAGER_IP}:{} failed", d.manager_port)
        )
        .len()
            >= N,
        "{glog}"
    );
    assert!(
        log_lines(&glog, "Bounced").is_empty(),
        "CPQ messages are never bounced:\n{glog}"
    );
    assert!(held(&d.manager, &[]).is_empty());

    // Back: resume, deliver now, every message arrives once.
    let out = text(&d.manager, &["resume"]);
    assert!(out.contains("resumed"), "{out}");
    let status = text(&d.manager, &["status"]);
    assert!(
        status.contains("System status:                 Online"),
        "{status}"
    );
    let out = text(&gw.node, &["delivernow", "the.cpq.host"]);
    assert!(
        out.contains(&format!("{N} recipients of the.cpq.host rescheduled")),
        "{out}"
    );
    let on_manager = wait_until(
        DELIVERY,
        || {
            let h = held(&d.manager, &[]);
            (h.len() >= N).then_some(h)
        },
        || {
            format!(
                "{N} messages on the manager; gateway log:\n{}",
                gw.node.mail_logs()
            )
        },
    );
    wait_until(
        DELIVERY,
        || {
            queued_for(&gw.node, "the.cpq.host")
                .is_empty()
                .then_some(())
        },
        || "the.cpq.host drained".into(),
    );
    let got: Vec<u64> = on_manager.iter().map(gateway_mid).collect();
    assert_eq!(got.len(), N, "{got:?}");
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), mids);
    let mlog = d.manager.mail_logs();
    for m in &mids {
        assert_eq!(
            log_lines(
                &mlog,
                &format!(" bytes from gateway gw1 MID {m} (transfer ")
            )
            .len(),
            1,
            "gateway MID {m} stored once"
        );
    }
    let hs = json(&gw.node, &["hoststatus", "the.cpq.host"]);
    assert_eq!(hs["status"]["active_recipients"], 0, "{hs:#}");
    assert_eq!(hs["status"]["delivered_recipients"], N, "{hs:#}");
}

// ---------------------------------------------------------------------------------------
// kill -9 of the manager during a burst
// ---------------------------------------------------------------------------------------

/// Sends `n` quarantined messages (subject `[quarantine-test] burst LABELsession-i`) from
/// 127.0.0.1 through the gateway at `addr`, `per_session` per SMTP session; their MIDs.
fn send_burst(addr: SocketAddr, label: &str, n: usize, per_session: usize) -> Vec<u64> {
    let mut mids = Vec::new();
    for session in 0..n.div_ceil(per_session) {
        let mut c = SmtpClient::open(addr, Some(TRUSTED));
        c.expect("EHLO burst.cpq.test", 250);
        for i in 0..per_session.min(n - session * per_session) {
            let subject = format!("{TAG} burst {label}{session}-{i}");
            let r = c.send_message(
                "burst@example.org",
                &["bob@example.com"],
                &message("burst@example.org", "bob@example.com", &subject),
            );
            assert_eq!(r.code, 250, "{subject}: {}", r.raw());
            mids.push(accepted_mid(&r));
        }
        c.quit();
    }
    mids
}

#[test]
fn kill_9_manager_during_1000_transfers_quarantines_each_exactly_once() {
    const SENDERS: usize = 4;
    const PER_SENDER: usize = 250;
    const PER_SESSION: usize = 50;
    const TOTAL: usize = SENDERS * PER_SENDER;
    const KILL_AFTER: usize = 200;
    let mut d = Deployment::start(&[("gw1", GW1_IP)]);
    let addr = d.gateways[0].node.addr();
    let started = Instant::now();

    let senders: Vec<thread::JoinHandle<Vec<u64>>> = (0..SENDERS)
        .map(|t| thread::spawn(move || send_burst(addr, &format!("{t}-"), PER_SENDER, PER_SESSION)))
        .collect();

    // kill -9 once a fifth is on the manager, and start it again on the same data.
    d.manager.wait_for_log_matching(
        Duration::from_secs(300),
        |log| quarantined_count(log) >= KILL_AFTER,
        &format!("{KILL_AFTER} transfers quarantined on the manager"),
    );
    d.manager.kill9();
    let at_kill = quarantined_count(&d.manager.mail_logs());
    d.manager.restart();

    let mut sent = BTreeSet::new();
    for s in senders {
        for mid in s.join().expect("a sender thread failed") {
            assert!(sent.insert(mid), "MID {mid} given twice");
        }
    }
    assert_eq!(sent.len(), TOTAL);
    assert!(
        at_kill < TOTAL,
        "every transfer was done before the kill ({at_kill}); nothing was tested"
    );

    // Drain: `delivernow the.cpq.host` (every few seconds) until every message has gone
    // to the central quarantine and none is left under the.cpq.host.
    let gw = &d.gateways[0].node;
    let mut kicked: Option<Instant> = None;
    wait_until(
        Duration::from_secs(600),
        || {
            if kicked.is_none_or(|k| k.elapsed() >= Duration::from_secs(3)) {
                text(gw, &["delivernow", "the.cpq.host"]);
                kicked = Some(Instant::now());
            }
            let log = gw.mail_logs();
            let routed = log_lines(&log, "queued for the Centralized Policy Quarantine").len();
            (routed >= TOTAL && queued_for(gw, "the.cpq.host").is_empty()).then_some(())
        },
        || {
            format!(
                "the.cpq.host never drained; still queued: {}",
                queued_for(gw, "the.cpq.host").len()
            )
        },
    );

    let on_manager = held(&d.manager, &[]);
    let mut per_mid: BTreeMap<u64, usize> = BTreeMap::new();
    for h in &on_manager {
        assert_eq!(h["gateway"], "gw1", "{h:#}");
        *per_mid.entry(gateway_mid(h)).or_default() += 1;
    }
    let twice: Vec<_> = per_mid.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "quarantined more than once: {twice:?}");
    let got: BTreeSet<u64> = per_mid.keys().copied().collect();
    let missing: Vec<_> = sent.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(&sent).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} held, {TOTAL} sent; missing {missing:?}, unexpected {extra:?}",
        on_manager.len()
    );
    assert_eq!(on_manager.len(), TOTAL);
    let glog = gw.mail_logs();
    assert!(
        log_lines(&glog, "Bounced").is_empty(),
        "a CPQ transfer bounced"
    );
    // The kill hit transfers under way: some failed and were tried again.
    let retried = log_lines(&glog, "Delayed: ").len();
    assert!(
        retried > 0,
        "no transfer failed at the kill; nothing was tested:\n{glog}"
    );
    let mlog = d.manager.mail_logs();
    let repeats = log_lines(&mlog, " already stored as MID ").len();
    eprintln!(
        "kill -9 burst: {TOTAL} transfers, manager killed after {at_kill}, {retried} deferred, \
         {repeats} repeats answered from the store, all held once after {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// Trust
// ---------------------------------------------------------------------------------------

#[test]
fn manager_certificate_from_another_ca_is_refused_and_explained() {
    // The gateway is enrolled by another deployment's manager (its CA), while the manager
    // it is configured to use has a CA of its own: both are called "manager", as every
    // quickstart manager is.
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let cpq_port = free_port_on(GW1_IP);
    let other = NodeDir::new(&manager_config("manager", free_port_on(MANAGER_IP)));
    let gwdir = NodeDir::new(&format!(
        "{}{}",
        gateway_config("gw1", GW1_IP, cpq_port, manager_port, &sink),
        web_on("Loopback")
    ));
    enroll(&other, &gwdir, "gw1", GW1_IP, cpq_port);
    let manager = Node::start_manager(&format!(
        "{}{}{}",
        manager_config("manager", manager_port),
        enrolled_gateway("gw1", GW1_IP, cpq_port),
        web_on("Management")
    ));
    let gw = gwdir.start_gateway();

    let mid = send(
        &gw,
        "alice@example.org",
        "bob@example.com",
        &format!("{TAG} wrong CA"),
    );
    let failed = wait_line(&gw, &[" TLS failed: verify error: "]);
    let dcid = number_after(&failed, "DCID ").unwrap();
    wait_line(
        &gw,
        &[&format!(
            "DCID {dcid} TLS was required but could not be successfully negotiated"
        )],
    );
    let log = gw.mail_logs();
    let connect = only_line(&log, &[&format!("New SMTP DCID {dcid} ")]);
    assert!(
        connect.ends_with(&format!("address {MANAGER_IP} port {manager_port}")),
        "{connect}"
    );
    assert!(!log.contains(&format!("DCID {dcid} TLS success")), "{log}");
    wait_line(
        &gw,
        &[&format!(
            "Delayed: DCID 0 MID {mid} to RID [0] - TLS failed: verify error"
        )],
    );
    // Still queued under the.cpq.host, not bounced.
    let queued = queued_for(&gw, "the.cpq.host");
    assert_eq!(
        queued
            .iter()
            .map(|r| r["mid"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![mid],
        "{queued:#?}"
    );
    assert!(log_lines(&gw.mail_logs(), "Bounced").is_empty());
    // The manager saw a handshake fail and stored nothing.
    let mlog = manager.wait_for_log(" TLS failed: ", DELIVERY);
    assert!(
        log_lines(&mlog, "TLS failed")
            .iter()
            .all(|l| l.contains("ICID ")),
        "{mlog}"
    );
    assert!(!mlog.contains("TLS success"), "{mlog}");
    assert!(held(&manager, &[]).is_empty());
    // Counted on both sides, and the manager names the refusal for gw1 (its address).
    wait_metric(
        &gw,
        "pvo_cpq_transfer_failures_total{reason=\"tls\"}",
        |v| v >= 1,
    );
    assert_eq!(metric(&scrape(&gw), "pvo_cpq_transfers_total"), Some(0));
    wait_metric(&manager, "pvo_cpq_refused_total{reason=\"tls\"}", |v| {
        v >= 1
    });
    let g = gateway_status(&manager);
    assert_eq!(g["state"], "unknown", "{g:#}");
    assert!(
        g["last_refusal"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("TLS failed")),
        "{g:#}"
    );

    // tlsverify explains it, with the trust CPQ uses.
    let out = pvo(&gw, &["tlsverify", "the.cpq.host"]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(!out.status.success(), "tlsverify should fail:\n{said}");
    assert!(
        said.contains(&format!(
            "Connecting to {MANAGER_IP} on port {manager_port}"
        )),
        "{said}"
    );
    assert!(said.contains("Certificate verification failed"), "{said}");
    // Why, in terms of the CPQ trust: the deployment CA, not public CAs or ca_file.
    assert!(
        said.contains("not issued by this deployment's CA"),
        "tlsverify should say the certificate is from another CA:\n{said}"
    );
    assert!(!said.contains("tls.outbound.ca_file"), "{said}");
    assert!(!said.contains("TLS certificate verified"), "{said}");

    // A manager of another deployment with a name of its own (it lists gw1, so its HAT
    // lets the gateway in): an unknown issuer.
    let stranger = Node::start_manager(&format!(
        "{}{}",
        manager_config("other-manager", free_port_on(MANAGER_IP)),
        enrolled_gateway("gw1", GW1_IP, cpq_port)
    ));
    let target = stranger.listener("cpq_listener").to_string();
    let out = pvo(&gw, &["tlsverify", "the.cpq.host", &target]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("unknown CA") && said.contains("not issued by this deployment's CA"),
        "tlsverify should name the unknown issuer:\n{said}"
    );
    assert!(!said.contains("tls.outbound.ca_file"), "{said}");
}

#[test]
fn unenrolled_gateways_and_clear_text_clients_are_refused() {
    // gw9 has a certificate from the right CA, but the manager does not list it (it was
    // enrolled, then taken out of [[cpq.gateway]]); it connects from 127.0.0.1, which the
    // manager's HAT relays because gw1 is enrolled there.
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_config("manager", manager_port));
    let gw9_port = free_port_on(GW1_IP);
    let gw9dir = NodeDir::new(&gateway_config(
        "gw9",
        GW1_IP,
        gw9_port,
        manager_port,
        &sink,
    ));
    enroll(&mdir, &gw9dir, "gw9", GW1_IP, gw9_port);
    mdir.write_config(&manager_config("manager", manager_port));
    let gw1_port = free_port_on(GW1_IP);
    let gw1dir = NodeDir::new(&gateway_config(
        "gw1",
        GW1_IP,
        gw1_port,
        manager_port,
        &sink,
    ));
    enroll(&mdir, &gw1dir, "gw1", GW1_IP, gw1_port);
    let manager = mdir.start_manager();
    let gw9 = gw9dir.start_gateway();

    let mid = send(
        &gw9,
        "alice@example.org",
        "bob@example.com",
        &format!("{TAG} not enrolled"),
    );
    // Refused in the handshake itself: its certificate is none of the enrolled
    // gateways' (`trust::PeerPolicy`).
    let refusal = "TLS failed: verify error: certificate not accepted: gw9 is not a gateway added to this manager";
    let mlog = manager.wait_for_log(refusal, DELIVERY);
    let line = log_lines(&mlog, refusal)[0];
    let icid = number_after(line, "ICID ").unwrap();
    assert!(
        !mlog.contains(&format!("ICID {icid} TLS success ")),
        "{mlog}"
    );
    assert!(!gw9
        .mail_logs()
        .contains(&format!("MID {mid} RID [0] Response '2.0.0")));
    assert!(held(&manager, &[]).is_empty());
    let queued = queued_for(&gw9, "the.cpq.host");
    assert_eq!(
        queued.len(),
        1,
        "kept for a retry, not bounced: {queued:#?}"
    );
    assert!(log_lines(&gw9.mail_logs(), "Bounced").is_empty());

    // A plain SMTP client at an enrolled address: no CPQ keyword before TLS, and no CPQ
    // record or message in clear text.
    let cpq_addr = manager.listener("cpq_listener");
    let mut c = SmtpClient::open(cpq_addr, Some(GW1_IP));
    let ehlo = c.expect("EHLO plain.cpq.test", 250);
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{}", ehlo.raw());
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("XPVO")),
        "CPQ keywords offered before TLS: {}",
        ehlo.raw()
    );
    let record = "kind=transfer\ngateway=gw1\nmid=1\ntransfer=gw1-1-1\nreceived=1\nfrom=alice@example.org\n\
         rcpt=bob@example.com\nquarantine=Policy\nreason=content-filter\nreason-name=quarantine_test\n\
         threat=0\nexit=\n";
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, record);
    c.expect(&format!("XPVO-META 1 {encoded}"), 530);
    c.expect("MAIL FROM:<alice@example.org>", 530);
    c.quit();

    // TLS without a client certificate fails the handshake, and nothing gets through.
    let ca = manager.data_dir().join("cpq/ca.crt");
    let out = cpq_client(cpq_addr, GW1_IP, Some(&ca), None, record);
    assert!(
        !out.contains("META 250") && !out.contains("DATA 250"),
        "{out}"
    );
    let failed = manager.wait_for_log(
        " TLS failed: verify error: no certificate from client",
        DELIVERY,
    );
    let line = only_line(
        &failed,
        &[" TLS failed: verify error: no certificate from client"],
    );
    let icid = number_after(line, "ICID ").unwrap();
    let new = only_line(&failed, &[&format!("New CPQ ICID {icid} ")]);
    assert!(new.contains(&format!("address {GW1_IP} ")), "{new}");

    // A client at an address the HAT does not know is turned away at once.
    let (mut c, greeting) = SmtpClient::connect(cpq_addr, Some(STRANGER_IP)).unwrap();
    assert_eq!(greeting.code, 554, "{}", greeting.raw());
    c.expect("EHLO stranger.cpq.test", 503);
    c.quit();
    let mlog = manager.wait_for_log(&format!("address {STRANGER_IP} "), DELIVERY);
    let new = only_line(&mlog, &[&format!("address {STRANGER_IP} ")]);
    let icid = number_after(new, "ICID ").unwrap();
    manager.wait_for_log(&format!("ICID {icid} REJECT"), DELIVERY);
}

// ---------------------------------------------------------------------------------------
// Outbreak: the gateway's copy, a rules update, XPVO-CONTROL
// ---------------------------------------------------------------------------------------

const OUTBREAK_V1: &str = r#"version = "2026-11-23.1"

[[rule]]
id = "OUTB-CPQ-1"
description = "The outbreak marker phrase"
threat_level = 4
body_regex = ["(?i)outbreak-marker-7"]
"#;

const OUTBREAK_V2: &str = r#"version = "2026-11-23.2"

[[rule]]
id = "OUTB-CPQ-1"
description = "The outbreak marker phrase, refined"
threat_level = 4
body_regex = ["(?i)outbreak-marker-7 and something else"]
"#;

#[test]
fn outbreak_rescan_on_the_gateway_releases_on_the_manager() {
    let rules = tempfile::Builder::new()
        .prefix("pvo-cpq-rules-")
        .tempdir()
        .unwrap();
    let (v1, v2) = (rules.path().join("v1.toml"), rules.path().join("v2.toml"));
    std::fs::write(&v1, OUTBREAK_V1).unwrap();
    std::fs::write(&v2, OUTBREAK_V2).unwrap();

    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_config("manager", manager_port));
    let sink = Sink::accepting();
    let cpq_port = free_port_on(GW1_IP);
    // The usual gateway, with outbreak filtering in both mail policies.
    let config = gateway_config("gw1", GW1_IP, cpq_port, manager_port, &sink)
        .replace(
            "content_filters = [\"ALL\"]\n",
            "content_filters = [\"ALL\"]\noutbreak = { threshold = 3 }\n",
        )
        .replace(
            "[[content_filter]]",
            &format!(
                "[outbreak]\nrules_file = \"{}\"\n\n[[content_filter]]",
                v1.display()
            ),
        );
    let gdir = NodeDir::new(&config);
    enroll(&mdir, &gdir, "gw1", GW1_IP, cpq_port);
    let copies = gdir.path().join("cpq/outbreak");
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();

    // Held by the rule: transferred to the manager's Outbreak quarantine, with a copy
    // kept on the gateway for rescans.
    let from = "sender@example.org";
    let mut c = SmtpClient::open(gw.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let r = c.send_message(
        from,
        &["user@example.com"],
        "From: <sender@example.org>\r\nTo: <user@example.com>\r\nSubject: outbreak one\r\n\r\nClick: OUTBREAK-MARKER-7\r\n",
    );
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    let mid = accepted_mid(&r);
    let mgr_mid = wait_transferred(&gw, mid);
    let in_outbreak = held(&manager, &["--quarantine", "Outbreak"]);
    assert_eq!(in_outbreak.len(), 1, "{in_outbreak:#?}");
    assert_eq!(in_outbreak[0]["mid"].as_u64(), Some(mgr_mid));
    assert_eq!(gateway_mid(&in_outbreak[0]), mid);
    assert!(
        copies.join(format!("{mid}.eml")).is_file(),
        "no outbreak copy kept in {}",
        copies.display()
    );

    // The same rules again: still at threshold, nothing released.
    let same = json(&gw, &["outbreakupdate", v1.to_str().unwrap()]);
    assert_eq!(same["central"]["rescanned"], 1, "{same:#}");
    assert_eq!(
        same["central"]["released"],
        serde_json::json!([]),
        "{same:#}"
    );
    assert_eq!(held(&manager, &["--quarantine", "Outbreak"]).len(), 1);

    // Refined rules: the copy is clean now; the gateway tells the manager (XPVO-CONTROL
    // over CPQ), which releases it back to the gateway, which delivers it.
    let update = json(&gw, &["outbreakupdate", v2.to_str().unwrap()]);
    assert_eq!(
        update["central"]["released"],
        serde_json::json!([mid]),
        "{update:#}"
    );
    let line = wait_line(&gw, &["XPVO-CONTROL answered 250"]);
    assert!(line.contains("DCID "), "{line}");
    wait_line(
        &manager,
        &[&format!(
            "MID {mgr_mid} released from quarantine \"Outbreak\" (rescan)"
        )],
    );
    let got = sink.wait_for_messages(1, DELIVERY);
    assert!(
        got[0].text().contains("Subject: outbreak one"),
        "{}",
        got[0].text()
    );
    wait_line(&gw, &[&format!("original MID {mid} ")]);
    assert!(held(&manager, &["--quarantine", "Outbreak"]).is_empty());
    assert!(
        !copies.join(format!("{mid}.eml")).exists(),
        "the copy outlived the release"
    );
}

// ---------------------------------------------------------------------------------------
// pvoconfig enable: the preflight names each failure scenario (`docs/appliance.md`)
// ---------------------------------------------------------------------------------------

/// `pvoconfig enable ARGS --json` that must fail: the failed check's data.
fn enable_refused(gw: &Node, args: &[&str]) -> Value {
    let mut all = vec!["pvoconfig", "enable"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = pvo(gw, &all);
    assert!(
        !out.status.success(),
        "enable should be refused:\n{}{}",
        out.stdout,
        out.stderr
    );
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}{}", out.stdout, out.stderr));
    assert_eq!(v["data"]["enabled"], false, "{v:#}");
    v["data"].clone()
}

/// `diagnose --json` (which fails when a check fails): its checks.
fn diagnose(node: &Node) -> Vec<Value> {
    let out = pvo(node, &["diagnose", "--json"]);
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON ({e}):\n{}{}", out.stdout, out.stderr));
    v["data"]["checks"].as_array().expect("checks").clone()
}

fn failed_scenarios(checks: &[Value]) -> Vec<u64> {
    checks
        .iter()
        .filter(|c| c["passed"] == false)
        .filter_map(|c| c["scenario"].as_u64())
        .collect()
}

/// A peer whose STARTTLS offers only anonymous ciphers (tests/peers/anon_tls_smtp.py).
struct AnonPeer {
    child: std::process::Child,
    port: u16,
}

impl AnonPeer {
    fn start() -> AnonPeer {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/anon_tls_smtp.py");
        let mut child = Command::new(SYSTEM_PYTHON)
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start anon_tls_smtp.py");
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines
                .next()
                .expect("anon_tls_smtp.py printed no port")
                .unwrap();
            if let Some(p) = line.strip_prefix("ANON_TLS_SMTP_PORT ") {
                break p.trim().parse().unwrap();
            }
        };
        AnonPeer { child, port }
    }
}

impl Drop for AnonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn enable_preflight_names_each_scenario_and_enables_when_ready() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_config("manager", manager_port));
    let cpq_port = free_port_on(GW1_IP);
    let local = gateway_config("gw1", GW1_IP, cpq_port, manager_port, &sink)
        .replace("mode = \"central\"", "mode = \"local\"");
    let gdir = NodeDir::new(&local);
    enroll(&mdir, &gdir, "gw1", GW1_IP, cpq_port);
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();
    assert!(text(&gw, &["pvoconfig", "status"]).contains(": local"));
    // The PVO service's interface and port are settings like any other (pending).
    let out = text(&manager, &["pvoconfig", "service", "--port", "7099"]);
    assert!(out.contains("interface Management, port 7099"), "{out}");
    let bad = pvo(
        &manager,
        &["pvoconfig", "service", "--interface", "Nowhere"],
    );
    assert!(!bad.status.success());
    assert!(
        format!("{}{}", bad.stdout, bad.stderr).contains("Unknown interface \"Nowhere\""),
        "{}{}",
        bad.stdout,
        bad.stderr
    );
    text(&manager, &["clearchanges"]);

    // Scenario 2: the migration wizard has not been run on the manager.
    let d = enable_refused(&gw, &[]);
    assert_eq!(d["scenario"], 2, "{d:#}");
    assert!(
        d["cause"].as_str().unwrap().contains("not been run"),
        "{d:#}"
    );
    // ... run but not committed.
    text(&manager, &["pvoconfig", "migration", "automatic"]);
    let d = enable_refused(&gw, &[]);
    assert_eq!(d["scenario"], 2, "{d:#}");
    assert!(
        d["cause"].as_str().unwrap().contains("not committed"),
        "{d:#}"
    );
    assert_eq!(failed_scenarios(&diagnose(&manager)), vec![2]);
    text(&manager, &["commit", "-m", "migration wizard"]);
    assert!(failed_scenarios(&diagnose(&manager)).is_empty());

    // Scenario 2, the other half: the wizard is an Administrator's job. An Operator is
    // refused outright; a wizard run by an Administrator who is later made an Operator
    // no longer counts, and enable says whose role is wrong.
    for (name, role) in [("olga", "Operator"), ("ann", "Administrator")] {
        new_user(&manager, name, role, &format!("{name}-password-1"));
    }
    let as_user = |user: &str, args: &[&str]| {
        let mut cmd = Command::new(pvo_bin());
        cmd.arg("--dir")
            .arg(manager.data_dir())
            .args(["--user", user])
            .args(args)
            .env("PVO_PASSWORD", format!("{user}-password-1"));
        run_with_timeout(&mut cmd, COMMAND)
    };
    let (status, out, err) = as_user("olga", &["pvoconfig", "migration", "automatic"]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("needs Administrator"),
        "{out}{err}"
    );
    let (status, out, err) = as_user("ann", &["pvoconfig", "migration", "custom"]);
    assert!(status.success(), "{out}{err}");
    text(&manager, &["commit", "-m", "ann's wizard"]);
    assert!(failed_scenarios(&diagnose(&manager)).is_empty());
    text(
        &manager,
        &["userconfig", "edit", "ann", "--role", "Operator"],
    );
    let d = enable_refused(&gw, &[]);
    assert_eq!(d["scenario"], 2, "{d:#}");
    let cause = d["cause"].as_str().unwrap();
    assert!(
        cause.contains("ann") && cause.contains("Operator") && cause.contains("not Administrator"),
        "{d:#}"
    );
    text(&manager, &["pvoconfig", "migration", "automatic"]);
    text(&manager, &["commit", "-m", "wizard again"]);

    // Scenario 1: the manager is offline.
    text(&manager, &["suspendlisteners", "all"]);
    let d = enable_refused(&gw, &[]);
    assert_eq!(d["scenario"], 1, "{d:#}");
    assert!(d["cause"].as_str().unwrap().contains("offline"), "{d:#}");
    assert!(d["remedy"].as_str().unwrap().contains("resume"), "{d:#}");
    let out = pvo(&gw, &["pvoconfig", "enable"]);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("FAIL  connect to the manager"), "{said}");
    assert!(said.contains("Enable is unavailable"), "{said}");
    assert!(failed_scenarios(&diagnose(&gw)).contains(&1));
    text(&manager, &["resumelisteners", "all"]);

    // Scenario 4: the manager's address answered by a peer with only anonymous ciphers...
    let anon = AnonPeer::start();
    let d = enable_refused(&gw, &["--manager", &format!("127.0.0.1:{}", anon.port)]);
    assert_eq!(d["scenario"], 4, "{d:#}");
    assert!(
        d["cause"]
            .as_str()
            .unwrap()
            .contains("no certificate from server"),
        "{d:#}"
    );
    // ... and by a manager of another deployment (its own CA).
    let stranger = Node::start_manager(&format!(
        "{}{}",
        manager_config("other-manager", free_port_on(MANAGER_IP)),
        enrolled_gateway("gw1", GW1_IP, cpq_port)
    ));
    let d = enable_refused(
        &gw,
        &["--manager", &stranger.listener("cpq_listener").to_string()],
    );
    assert_eq!(d["scenario"], 4, "{d:#}");
    assert!(d["cause"].as_str().unwrap().contains("unknown CA"), "{d:#}");

    // Everything holds: enable (pending), commit, and quarantined mail goes to the manager.
    let out = text(&gw, &["pvoconfig", "enable"]);
    assert!(out.contains("PASS  manager ready"), "{out}");
    assert!(
        text(&gw, &["pvoconfig", "status"]).contains(": local"),
        "pending until commit"
    );
    text(&gw, &["commit", "-m", "centralize"]);
    assert!(text(&gw, &["pvoconfig", "status"]).contains("centralized on the manager"));
    assert!(failed_scenarios(&diagnose(&gw)).is_empty());
    let mid = send(
        &gw,
        "alice@example.org",
        "bob@example.com",
        &format!("{TAG} now central"),
    );
    wait_transferred(&gw, mid);
    assert_eq!(held(&manager, &[]).len(), 1);
}

#[test]
fn enable_names_a_default_delivery_interface_without_a_route_to_the_manager() {
    // The manager lives in a network namespace (10.213.K.2). This gateway's default
    // delivery interface is 10.214.K.1: its SYN reaches the manager, whose namespace has
    // no route back, so the connection times out (scenario 3). With Auto the system
    // leaves from 10.213.K.1, the address the manager knows the gateway by.
    let ns = Namespace::create();
    let inside: IpAddr = ns.inside().parse().unwrap();
    let near: IpAddr = ns.reachable_local().parse().unwrap();
    // Nothing else listens in a namespace this test created: the default port is free.
    let manager_port = 7025;
    let mdir = NodeDir::new(
        &manager_config("manager", manager_port)
            .replace(&MANAGER_IP.to_string(), &inside.to_string()),
    );
    let sink = Sink::accepting();
    let cpq_port = free_port_on(GW1_IP);
    let config = gateway_config("gw1", GW1_IP, cpq_port, manager_port, &sink)
        .replace("mode = \"central\"", "mode = \"local\"")
        .replace(
            &format!("manager = \"{MANAGER_IP}:{manager_port}\""),
            &format!("manager = \"{inside}:{manager_port}\""),
        )
        .replace(
            "[delivery]\ndefault_interface = \"Loopback\"",
            &format!(
                "[[interface]]\nname = \"Isolated\"\naddress = \"{}\"\n\n[delivery]\ndefault_interface = \"Isolated\"",
                ns.unroutable_local()
            ),
        );
    assert!(
        config.contains("default_interface = \"Isolated\""),
        "{config}"
    );
    let gdir = NodeDir::new(&config);
    enroll(&mdir, &gdir, "gw1", near, cpq_port);
    let manager = mdir.start_manager_in(&ns);
    text(&manager, &["pvoconfig", "migration", "automatic"]);
    text(&manager, &["commit", "-m", "migration wizard"]);
    let gw = gdir.start_gateway();

    let d = enable_refused(&gw, &[]);
    assert_eq!(d["scenario"], 3, "{d:#}");
    let cause = d["cause"].as_str().unwrap();
    assert!(
        cause.contains("default delivery interface") && cause.contains("no route"),
        "{d:#}"
    );
    assert!(d["remedy"].as_str().unwrap().contains("Auto"), "{d:#}");
    let checks = diagnose(&gw);
    assert!(failed_scenarios(&checks).contains(&3), "{checks:#?}");
    // Reachability from each interface: Isolated fails, Loopback does not matter here.
    assert!(
        checks.iter().any(
            |c| c["name"] == format!("reach {inside}:{manager_port} from Isolated")
                && c["passed"] == false
        ),
        "{checks:#?}"
    );

    // The remedy of scenario 3: default delivery interface Auto.
    text(&gw, &["deliveryconfig", "--interface", "Auto"]);
    text(&gw, &["commit", "-m", "auto"]);
    let out = text(&gw, &["pvoconfig", "enable"]);
    assert!(out.contains("PASS  manager ready"), "{out}");
}

// ---------------------------------------------------------------------------------------
// applianceconfig: adding a gateway over SSH
// ---------------------------------------------------------------------------------------

#[test]
fn applianceconfig_adds_a_gateway_over_ssh_and_centralizes_it() {
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let cpq_port = free_port_on(GW1_IP);
    let manager = Node::start_manager(&format!(
        "{}\n[ssh]\nport = 0\n",
        manager_config("manager", manager_port)
    ));
    // A gateway with local quarantines, its SSH on, not enrolled anywhere yet. (Its SSH
    // port is fixed for the test because the gateway restarts below.)
    let gw_ssh = free_port_on(GW1_IP);
    let mut gw = NodeDir::new(&format!(
        "{}\n[ssh]\nport = {gw_ssh}\n",
        gateway_config("gw1", GW1_IP, cpq_port, manager_port, &sink)
            .replace("mode = \"central\"", "mode = \"local\"")
    ))
    .start_gateway();
    let checks = diagnose(&gw);
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "CPQ certificate" && c["passed"] == false),
        "{checks:#?}"
    );
    let port = ssh_port(&gw);
    let password = std::fs::read_to_string(gw.data_dir().join("run/initial-admin-password"))
        .expect("the gateway's initial admin password");

    // A wrong password adds nothing.
    let add = |pw: &str| {
        let mut cmd = Command::new(pvo_bin());
        cmd.arg("--dir")
            .arg(manager.data_dir())
            .args([
                "applianceconfig",
                "new",
                "--id",
                "gw1",
                "--address",
                "127.0.0.1",
            ])
            .args(["--ssh-port", &port.to_string()])
            .env("PVO_GATEWAY_PASSWORD", pw);
        run_with_timeout(&mut cmd, COMMAND)
    };
    let (status, out, err) = add("not the password");
    assert!(!status.success(), "{out}{err}");
    assert!(format!("{out}{err}").contains("refused"), "{out}{err}");

    let (status, out, err) = add(password.trim());
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("the manager's SSH key is installed"), "{out}");
    assert!(out.contains("installed on the gateway"), "{out}");
    assert!(
        out.contains(&format!("delivers released mail to {GW1_IP}:{cpq_port}")),
        "{out}"
    );
    text(&manager, &["commit", "-m", "add gw1"]);
    let list = json(&manager, &["applianceconfig", "list"]);
    assert_eq!(list["gateways"][0]["id"], "gw1", "{list:#}");
    assert_eq!(list["gateways"][0]["ssh_port"], port, "{list:#}");
    assert!(list["gateways"][0]["ssh_host_key"]
        .as_str()
        .unwrap()
        .starts_with("SHA256:"));
    // From now on the manager logs in with its key.
    let test = text(&manager, &["applianceconfig", "test", "gw1"]);
    assert!(
        test.contains("SSH login with the manager's key works"),
        "{test}"
    );
    let checks = diagnose(&manager);
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "SSH to gw1" && c["passed"] == true),
        "{checks:#?}"
    );

    // The wizard, enable, and a quarantined message goes to the manager and back.
    text(&manager, &["pvoconfig", "migration", "automatic"]);
    text(&manager, &["commit", "-m", "wizard"]);
    let out = text(&gw, &["pvoconfig", "enable"]);
    assert!(out.contains("PASS  manager ready"), "{out}");
    text(&gw, &["commit", "-m", "centralize"]);
    let mid = send(
        &gw,
        "alice@example.org",
        "bob@example.com",
        &format!("{TAG} via ssh"),
    );
    let mgr_mid = wait_transferred(&gw, mid);
    text(&manager, &["quarantine", "release", &mgr_mid.to_string()]);
    let got = sink.wait_for_messages(1, DELIVERY);
    assert!(got[0].text().contains("via ssh"), "{}", got[0].text());

    // The gateway moves its cpq_listener. The next release cannot reach the old port;
    // the manager asks the gateway over SSH where released mail goes now, and delivers.
    let mid = send(
        &gw,
        "alice@example.org",
        "bob@example.com",
        &format!("{TAG} moved"),
    );
    let mgr_mid = wait_transferred(&gw, mid);
    gw.stop();
    let moved = free_port_on(GW1_IP);
    let config = std::fs::read_to_string(gw.config_path()).unwrap();
    let old = format!("port = {cpq_port}\nmode = \"central\"");
    assert!(config.contains(&old), "{config}");
    std::fs::write(
        gw.config_path(),
        config.replace(&old, &format!("port = {moved}\nmode = \"central\"")),
    )
    .unwrap();
    gw.restart();
    assert_eq!(gw.listener("cpq_listener").port(), moved);
    text(&manager, &["quarantine", "release", &mgr_mid.to_string()]);
    wait_line(
        &manager,
        &[&format!(
            "Gateway gw1 delivers released mail to {GW1_IP}:{moved} (asked over SSH)"
        )],
    );
    let got = sink.wait_for_messages(2, DELIVERY);
    assert!(got.iter().any(|m| m.text().contains(" moved")), "{got:#?}");
    let list = json(&manager, &["applianceconfig", "list"]);
    assert_eq!(
        list["gateways"][0]["learned"],
        format!("{GW1_IP}:{moved}"),
        "{list:#}"
    );

    // edit and delete are pending until commit, like every configuration change.
    let user_of =
        || json(&manager, &["applianceconfig", "list"])["gateways"][0]["ssh_user"].clone();
    text(
        &manager,
        &["applianceconfig", "edit", "gw1", "--user", "ops"],
    );
    assert_eq!(user_of(), "admin");
    text(&manager, &["commit", "-m", "ssh user"]);
    assert_eq!(user_of(), "ops");
    text(&manager, &["applianceconfig", "delete", "gw1"]);
    text(&manager, &["commit", "-m", "remove gw1"]);
    assert_eq!(
        json(&manager, &["applianceconfig", "list"])["gateways"],
        serde_json::json!([])
    );
}

// ---------------------------------------------------------------------------------------
// The manager's live view of its gateways, matched content, CPQ metrics
// ---------------------------------------------------------------------------------------

/// `[web]` on the node's first interface (`/metrics`).
fn web_on(interface: &str) -> String {
    format!("\n[web]\ninterface = \"{interface}\"\nport = 0\n")
}

/// The one gateway of `applianceconfig status --json` on the manager.
fn gateway_status(manager: &Node) -> Value {
    let data = json(manager, &["applianceconfig", "status"]);
    let gws = data["gateways"].as_array().expect("gateways");
    assert_eq!(gws.len(), 1, "{data:#}");
    gws[0].clone()
}

/// Waits until the manager's view of its gateway satisfies `ok`; returns it.
fn wait_gateway_status(manager: &Node, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let last = std::cell::RefCell::new(Value::Null);
    wait_until(
        DELIVERY,
        || {
            let g = gateway_status(manager);
            let done = ok(&g).then(|| g.clone());
            *last.borrow_mut() = g;
            done
        },
        || {
            format!(
                "applianceconfig status never showed {what}: {:#}",
                last.borrow()
            )
        },
    )
}

#[test]
fn matched_content_and_cpq_counters_reach_the_manager() {
    let d = Deployment::start_with(
        &[("gw1", GW1_IP)],
        &web_on("Management"),
        &web_on("Loopback"),
    );
    let gw = &d.gateways[0];
    assert_eq!(
        metric(&scrape(&gw.node), "pvo_cpq_transfers_total"),
        Some(0)
    );

    // A content filter hold: its evidence (the matched subject) is on the manager.
    let subject = format!("{TAG} evidence \"quoted\" <b>");
    let mid = send(&gw.node, "alice@example.org", "bob@example.com", &subject);
    let mgr_mid = check_transfer(&d, gw, mid, "alice@example.org");
    let shown = json(&d.manager, &["quarantine", "show", &mgr_mid.to_string()]);
    let m = &shown["quarantines"][0];
    assert_eq!(m["quarantine"], "Policy", "{shown:#}");
    let evidence = m["details"]["evidence"]
        .as_array()
        .unwrap_or_else(|| panic!("no evidence on the manager: {shown:#}"));
    assert!(
        evidence
            .iter()
            .any(|e| e["matched"].as_str().is_some_and(|t| t.contains(TAG))
                && e["condition"].as_str().is_some_and(|c| !c.is_empty())),
        "{shown:#}"
    );
    assert_eq!(m["details"]["threat_level"], 0, "{shown:#}");
    assert!(m["details"].get("truncated").is_none(), "{shown:#}");
    let shown = text(&d.manager, &["quarantine", "show", &mgr_mid.to_string()]);
    assert!(shown.contains(TAG), "the text shows what matched:\n{shown}");

    // Metrics: one transfer accepted, no failure; the manager received one from gw1.
    wait_metric(&gw.node, "pvo_cpq_transfers_total", |v| v == 1);
    let page = scrape(&gw.node);
    assert!(
        page.contains("# TYPE pvo_cpq_transfer_failures_total counter"),
        "{page}"
    );
    for reason in ["connect", "tls", "refused", "deferred"] {
        assert_eq!(
            metric(
                &page,
                &format!("pvo_cpq_transfer_failures_total{{reason=\"{reason}\"}}")
            ),
            Some(0),
            "{page}"
        );
    }
    let page = scrape(&d.manager);
    assert_eq!(
        metric(&page, "pvo_cpq_received_total{gateway=\"gw1\"}"),
        Some(1),
        "{page}"
    );
    // A transfer is a received message with its recipients, as any other.
    assert_eq!(
        metric(&page, "pvo_messages_received_total"),
        Some(1),
        "{page}"
    );
    assert_eq!(
        metric(&page, "pvo_recipients_received_total"),
        Some(1),
        "{page}"
    );
    assert!(
        page.contains("# TYPE pvo_cpq_gateway_backlog gauge"),
        "{page}"
    );

    // Refusals: a stranger's address, and a CPQ record in clear text from gw1's.
    let mut stranger = connect(d.manager_addr(), Some(STRANGER_IP)).unwrap();
    stranger
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut banner = [0u8; 64];
    let n = std::io::Read::read(&mut stranger, &mut banner).unwrap();
    assert!(banner[..n].starts_with(b"554 "), "{:?}", &banner[..n]);
    drop(stranger);
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"address\"}",
        |v| v == 1,
    );
    let out = cpq_client(d.manager_addr(), GW1_IP, None, None, "kind=transfer\n");
    // The record is refused as malformed, the MAIL after it for want of TLS.
    assert!(out.contains("META 501"), "{out}");
    assert!(out.contains("MAIL 530"), "{out}");
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"bad_record\"}",
        |v| v == 1,
    );
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"clear_text\"}",
        |v| v >= 1,
    );

    // The manager's view of gw1: it transfers, the manager has no SSH access to it.
    let g = gateway_status(&d.manager);
    let keys: BTreeSet<&str> = g.as_object().unwrap().keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "id",
        "address",
        "port",
        "state",
        "state_text",
        "mode",
        "backlog",
        "migration",
        "cluster",
        "checked_at",
        "ssh_error",
        "transfers_received",
        "last_transfer_at",
        "last_refusal",
        "held_messages",
        "releases_waiting",
        "last_release_error",
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want, "{g:#}");
    assert_eq!(g["id"], "gw1", "{g:#}");
    assert_eq!(g["address"], GW1_IP.to_string(), "{g:#}");
    assert_eq!(g["port"], gw.cpq_port, "{g:#}");
    assert_eq!(g["state"], "online", "{g:#}");
    assert!(
        g["state_text"]
            .as_str()
            .unwrap()
            .contains("applianceconfig new"),
        "{g:#}"
    );
    for k in [
        "mode",
        "backlog",
        "migration",
        "checked_at",
        "last_release_error",
    ] {
        assert!(g[k].is_null(), "{k}: {g:#}");
    }
    assert!(
        g["ssh_error"].as_str().unwrap().contains("no SSH access"),
        "{g:#}"
    );
    assert_eq!(g["transfers_received"], 1, "{g:#}");
    assert!(g["last_transfer_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(g["held_messages"], 1, "{g:#}");
    assert_eq!(g["releases_waiting"], 0, "{g:#}");
    let refusal = g["last_refusal"]["text"].as_str().unwrap();
    assert!(refusal.contains("STARTTLS"), "{g:#}");
    let table = text(&d.manager, &["applianceconfig", "status"]);
    assert!(table.contains("gw1") && table.contains("online"), "{table}");
    let out = pvo(&d.manager, &["applianceconfig", "status", "--id", "nope"]);
    assert!(!out.status.success());
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("No gateway nope is added"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    let out = pvo(&gw.node, &["applianceconfig", "status"]);
    assert!(!out.status.success());
    assert!(
        format!("{}{}", out.stdout, out.stderr)
            .contains("applianceconfig status runs on the manager"),
        "{}{}",
        out.stdout,
        out.stderr
    );

    // The gateway stops listening: the release waits for it, and the manager says so.
    text(&gw.node, &["suspendlisteners"]);
    let gw_cpq = SocketAddr::new(GW1_IP, gw.cpq_port);
    wait_until(
        DELIVERY,
        || connect(gw_cpq, Some(MANAGER_IP)).is_err().then_some(()),
        || "the suspended gateway's cpq_listener still accepts connections".into(),
    );
    text(&d.manager, &["quarantine", "release", &mgr_mid.to_string()]);
    let g = wait_gateway_status(&d.manager, "a failed release", |g| {
        g["state"] == "unreachable" && g["releases_waiting"] == 1
    });
    let e = g["last_release_error"].as_str().unwrap();
    assert!(e.contains(&gw.cpq_port.to_string()), "{g:#}");
    assert!(
        g["state_text"]
            .as_str()
            .unwrap()
            .contains("Released messages cannot be delivered to gw1"),
        "{g:#}"
    );
    assert_eq!(
        json(&d.manager, &["applianceconfig", "status"])["releases_waiting_total"],
        1
    );
    wait_metric(&d.manager, "pvo_cpq_release_failures_total", |v| v >= 1);
    assert_eq!(
        metric(&scrape(&d.manager), "pvo_cpq_releases_total"),
        Some(0)
    );

    // Back: it is delivered once, counted, and the gateway is online again.
    text(&gw.node, &["resumelisteners"]);
    text(&d.manager, &["delivernow", "the.cpq.release.host"]);
    gw.sink.wait_for_messages(1, DELIVERY);
    wait_metric(&d.manager, "pvo_cpq_releases_total", |v| v == 1);
    let g = wait_gateway_status(&d.manager, "online after the release", |g| {
        g["state"] == "online" && g["releases_waiting"] == 0
    });
    assert!(g["last_release_error"].is_null(), "{g:#}");
    assert_eq!(g["held_messages"], 0, "{g:#}");
}

#[test]
fn applianceconfig_status_follows_a_gateways_backlog_over_ssh() {
    const N: u64 = 3;
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let cpq_port = free_port_on(GW1_IP);
    // A manager that checks its gateways every second.
    let manager = Node::start_manager(&format!(
        "{}status_poll = 1\n\n[ssh]\nport = 0\n{}",
        manager_config("manager", manager_port),
        web_on("Management")
    ));
    let gw = NodeDir::new(&format!(
        "{}\n[ssh]\nport = 0\n{}",
        gateway_config("gw1", GW1_IP, cpq_port, manager_port, &sink)
            .replace("mode = \"central\"", "mode = \"local\""),
        web_on("Loopback")
    ))
    .start_gateway();
    let port = ssh_port(&gw);
    let password = std::fs::read_to_string(gw.data_dir().join("run/initial-admin-password"))
        .expect("the gateway's initial admin password");
    let mut cmd = Command::new(pvo_bin());
    cmd.arg("--dir")
        .arg(manager.data_dir())
        .args(["applianceconfig", "new", "--id", "gw1", "--address"])
        .arg(GW1_IP.to_string())
        .args(["--ssh-port", &port.to_string()])
        .env("PVO_GATEWAY_PASSWORD", password.trim());
    let (status, out, err) = run_with_timeout(&mut cmd, COMMAND);
    assert!(status.success(), "{out}{err}");
    text(&manager, &["commit", "-m", "add gw1"]);

    // Checked over SSH: in local mode, nothing waiting.
    let g = wait_gateway_status(&manager, "gw1 checked, local", |g| {
        g["mode"] == "local" && g["checked_at"].is_u64()
    });
    assert_eq!(g["state"], "online", "{g:#}");
    assert_eq!(g["backlog"], 0, "{g:#}");
    assert!(g["ssh_error"].is_null(), "{g:#}");
    assert!(g["migration"].is_object(), "{g:#}");

    text(&manager, &["pvoconfig", "migration", "automatic"]);
    text(&manager, &["commit", "-m", "wizard"]);
    text(&gw, &["pvoconfig", "enable"]);
    text(&gw, &["commit", "-m", "centralize"]);
    let g = wait_gateway_status(&manager, "gw1 central", |g| g["mode"] == "central");
    assert_eq!(
        (g["state"].as_str(), g["backlog"].as_u64()),
        (Some("online"), Some(0))
    );

    // The manager stops listening: the gateway's transfers wait, and the manager sees
    // the backlog in the gateway's own count of the.cpq.host.
    text(&manager, &["suspendlisteners"]);
    let manager_addr = SocketAddr::new(MANAGER_IP, manager_port);
    wait_until(
        DELIVERY,
        || connect(manager_addr, Some(GW1_IP)).is_err().then_some(()),
        || "the suspended manager's cpq_listener still accepts connections".into(),
    );
    for i in 0..N {
        send(
            &gw,
            "alice@example.org",
            "bob@example.com",
            &format!("{TAG} waiting {i}"),
        );
    }
    wait_until(
        DELIVERY,
        || {
            let q = queued_for(&gw, "the.cpq.host");
            (q.len() as u64 == N && q.iter().all(|r| r["attempts"].as_u64().unwrap_or(0) >= 1))
                .then_some(())
        },
        || format!("{N} tried and queued under the.cpq.host"),
    );
    let g = wait_gateway_status(&manager, "a backlog of 3", |g| {
        g["state"] == "backlog" && g["backlog"] == N
    });
    let said = g["state_text"].as_str().unwrap();
    assert!(
        said.contains(&format!("{N} message")) && said.contains("the.cpq.host"),
        "{g:#}"
    );
    assert_eq!(g["transfers_received"], 0, "{g:#}");
    wait_metric(&manager, "pvo_cpq_gateway_backlog{gateway=\"gw1\"}", |v| {
        v == N
    });
    wait_metric(
        &gw,
        "pvo_cpq_transfer_failures_total{reason=\"connect\"}",
        |v| v >= N,
    );
    let table = text(&manager, &["applianceconfig", "status"]);
    assert!(table.contains("backlog"), "{table}");

    // Back: the queue drains and the manager sees the gateway online with nothing waiting.
    text(&manager, &["resumelisteners"]);
    text(&gw, &["delivernow", "the.cpq.host"]);
    let g = wait_gateway_status(&manager, "online, backlog 0, 3 received", |g| {
        g["state"] == "online" && g["backlog"] == 0 && g["transfers_received"] == N
    });
    assert_eq!(g["held_messages"], N, "{g:#}");
    assert!(g["last_transfer_at"].is_u64(), "{g:#}");
    wait_metric(&gw, "pvo_cpq_transfers_total", |v| v == N);
    wait_metric(&manager, "pvo_cpq_gateway_backlog{gateway=\"gw1\"}", |v| {
        v == 0
    });
}

// ---------------------------------------------------------------------------------------
// An internal component of the manager down
// ---------------------------------------------------------------------------------------

fn component(manager: &Node, name: &str) -> Value {
    diagnose(manager)
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("diagnose has no check {name:?}"))
}

/// The central store's disk full: the manager answers the transfer with a temporary error
/// and logs it as a Critical line, the gateway keeps the message in the.cpq.host, and
/// `diagnose` on the manager names the component (its store writer) and the remedy; with
/// space again, the retried transfer is stored once and the check passes.
#[test]
fn a_full_store_disk_is_named_by_diagnose_and_the_gateway_keeps_the_transfer() {
    let disk = Tmpfs::mount("4m");
    let sink = Sink::accepting();
    let manager_port = free_port_on(MANAGER_IP);
    let cpq_port = free_port_on(GW1_IP);
    let mdir = NodeDir::new(&manager_config("manager", manager_port));
    let gdir = NodeDir::new(&gateway_config(
        "gw1",
        GW1_IP,
        cpq_port,
        manager_port,
        &sink,
    ));
    enroll(&mdir, &gdir, "gw1", GW1_IP, cpq_port);
    // The manager's central store (DATA_DIR/quarantine) on the small file system.
    std::os::unix::fs::symlink(disk.path(), mdir.path().join("quarantine")).unwrap();
    let manager = mdir.start_manager();
    let gw = gdir.start_gateway();
    for name in ["central store", "central store writer", "delivery queue"] {
        assert_eq!(component(&manager, name)["passed"], true, "{name}");
    }
    let first = send(
        &gw,
        "alice@example.org",
        "bob@example.com",
        &format!("{TAG} before"),
    );
    wait_transferred(&gw, first);

    // Fill the disk, then a transfer bigger than anything the store has written before.
    let filler = disk.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let mark = manager.log_mark();
    let big = format!(
        "From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: {TAG} full\r\n\r\n{}\r\n",
        "x".repeat(76)
            .repeat(8_000)
            .as_bytes()
            .chunks(76)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n")
    );
    let mut c = SmtpClient::open(gw.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let r = c.send_message("alice@example.org", &["bob@example.com"], &big);
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    let mid = accepted_mid(&r);
    let line = manager.wait_for_log_after(mark, "could not be stored", DELIVERY);
    assert!(line.contains("Critical:"), "{line}");
    let writer = component(&manager, "central store writer");
    assert_eq!(writer["passed"], false, "{writer:#}");
    assert!(
        writer["detail"].as_str().unwrap().contains("full"),
        "{writer:#}"
    );
    assert!(
        writer["remedy"].as_str().unwrap().contains("free space"),
        "{writer:#}"
    );
    // The gateway keeps it for the manager.
    assert!(
        queued_for(&gw, "the.cpq.host")
            .iter()
            .any(|r| r["mid"].as_u64() == Some(mid)),
        "{:#?}",
        queued_for(&gw, "the.cpq.host")
    );

    // Space again: the retry is stored, once, and the check passes.
    std::fs::remove_file(&filler).unwrap();
    let (ok, said) = pvo_try(&gw, &["delivernow", "the.cpq.host"]);
    assert!(ok, "{said}");
    wait_transferred(&gw, mid);
    assert_eq!(component(&manager, "central store writer")["passed"], true);
    assert_eq!(held(&manager, &["--subject", "full"]).len(), 1);
}

// ---------------------------------------------------------------------------------------
// The central store on PostgreSQL
// ---------------------------------------------------------------------------------------

/// A manager with `[store] url` keeps the central quarantines in PostgreSQL: a transfer
/// is stored there (once, however often the gateway retries), searched, released back to
/// the originating gateway and delivered; the store survives a restart of the manager,
/// and a gateway refuses the section.
#[test]
fn a_manager_on_postgresql_stores_searches_and_releases() {
    let pg = crate::support::Postgres::start();
    let url = pg.url();
    let d = Deployment::start_with(
        &[("gw1", GW1_IP)],
        &format!("\n[store]\nurl = \"{url}\"\n"),
        "",
    );
    let gw = &d.gateways[0];
    assert!(!d
        .manager
        .data_dir()
        .join("quarantine/quarantine.db")
        .exists());
    let subject = format!("{TAG} on postgresql");
    let mid = send(&gw.node, "alice@example.org", "bob@example.com", &subject);
    let k = check_transfer(&d, gw, mid, "alice@example.org");
    let hits = held(&d.manager, &["--gateway", "gw1"]);
    assert_eq!(hits.len(), 1, "{hits:#?}");
    assert_eq!(hits[0]["mid"], k, "{hits:#?}");
    assert_eq!(hits[0]["subject"], subject.as_str(), "{hits:#?}");
    // The rows are PostgreSQL's.
    let rows = crate::support::rt().block_on(async {
        let (c, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query_one("SELECT count(*) FROM pvo_quarantine.messages", &[])
            .await
            .map(|r| r.get::<_, i64>(0))
    });
    assert_eq!(rows.ok(), Some(1), "the message is not in PostgreSQL");

    text(&d.manager, &["quarantine", "release", &k.to_string()]);
    let got = gw.sink.wait_for_messages(1, DELIVERY);
    assert!(got[0].text().contains("on postgresql"), "{}", got[0].text());
    assert_eq!(held(&d.manager, &[]).len(), 0);

    // A gateway has no central store.
    let bad = GatewayToml::new(&gw.sink)
        .extra(&format!("[store]\nurl = \"{url}\"\n"))
        .build();
    let dir = NodeDir::new(&bad);
    let (ok, out, err) = run_with_timeout(
        Command::new(pvo_bin())
            .args(["gateway", "run", "--config"])
            .arg(dir.config_path()),
        COMMAND,
    );
    assert!(!ok.success(), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("[store] on a manager only"),
        "{out}{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Several managers on one PostgreSQL store
// ---------------------------------------------------------------------------------------

/// The second manager of a deployment, on 127.0.0.5.
const MANAGER2_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));

/// Subjects of the sink's messages, each with how often it arrived.
fn delivered_subjects(sink: &Sink) -> BTreeMap<String, usize> {
    let mut n = BTreeMap::new();
    for m in sink.messages() {
        let subject = m
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            .unwrap_or_default();
        *n.entry(subject).or_default() += 1;
    }
    n
}

/// Two managers on one PostgreSQL database and a gateway that lists both: transfers go to
/// the first; `kill -9` of the first under load (transfers and releases in flight) sends
/// them to the second, and every transfer is held once; a release made on either manager
/// is delivered once (the second finds the first's messages by their MIDs); the first
/// comes back and takes the traffic again; the second runs the sweeps once the first is
/// gone; `diagnose` on the gateway names the manager that is down.
#[test]
fn two_managers_on_one_postgresql_survive_a_kill_9_of_either() {
    const FIRST: usize = 60;
    const BURST: usize = 240;
    let pg = crate::support::Postgres::start();
    let store = format!("\n[store]\nurl = \"{}\"\n", pg.url());
    let (p1, p2) = (free_port_on(MANAGER_IP), free_port_on(MANAGER2_IP));
    let m1dir = NodeDir::new(&format!("{}{store}", manager_config("manager1", p1)));
    let sink = Sink::accepting();
    let gw_port = free_port_on(GW1_IP);
    let gw_toml = gateway_config("gw1", GW1_IP, gw_port, p1, &sink).replace(
        &format!("manager = \"{MANAGER_IP}:{p1}\""),
        &format!("manager = [\"{MANAGER_IP}:{p1}\", \"{MANAGER2_IP}:{p2}\"]"),
    );
    assert!(
        gw_toml.contains(&format!("{MANAGER2_IP}:{p2}")),
        "{gw_toml}"
    );
    let gwdir = NodeDir::new(&gw_toml);
    enroll(&m1dir, &gwdir, "gw1", GW1_IP, gw_port);
    // The second manager as an administrator adds one: the deployment CA and the enrolled
    // gateways copied from the first, its own node id and address.
    let m1_toml = std::fs::read_to_string(m1dir.config_path()).unwrap();
    assert!(m1_toml.contains("[[cpq.gateway]]"), "{m1_toml}");
    let m2_toml = m1_toml
        .replace("manager1", "manager2")
        .replace(&MANAGER_IP.to_string(), &MANAGER2_IP.to_string())
        .replace(&format!("port = {p1}\n"), &format!("port = {p2}\n"));
    assert!(m2_toml.contains(&format!("port = {p2}\n")), "{m2_toml}");
    let m2dir = NodeDir::new(&m2_toml);
    std::fs::create_dir_all(m2dir.cpq_dir()).unwrap();
    for f in ["ca.crt", "ca.key"] {
        std::fs::copy(m1dir.cpq_dir().join(f), m2dir.cpq_dir().join(f))
            .unwrap_or_else(|e| panic!("copying {f}: {e}"));
    }
    let mut m1 = m1dir.start_manager();
    let m2 = m2dir.start_manager();
    // The gateway accepts both managers' certificates (the pinned bundle).
    let mut bundle = std::fs::read(gwdir.cpq_dir().join("manager.crt")).unwrap();
    bundle.extend(std::fs::read(m2.data_dir().join("cpq/node.crt")).unwrap());
    std::fs::write(gwdir.cpq_dir().join("manager.crt"), bundle).unwrap();
    let gw = gwdir.start_gateway();
    let listed = json(&gw, &["cpqcert", "list"]);
    assert_eq!(
        listed["accepted"].as_array().map(Vec::len),
        Some(2),
        "{listed:#}"
    );
    let status = json(&gw, &["pvoconfig", "status"]);
    assert_eq!(
        status["managers"],
        serde_json::json!([format!("{MANAGER_IP}:{p1}"), format!("{MANAGER2_IP}:{p2}")]),
        "{status:#}"
    );

    // The first ones go to the first manager.
    let first: Vec<u64> = (0..FIRST)
        .map(|i| {
            send(
                &gw,
                "a@example.org",
                "bob@example.com",
                &format!("{TAG} first {i}"),
            )
        })
        .collect();
    m1.wait_for_log_matching(
        Duration::from_secs(120),
        |log| quarantined_count(log) >= FIRST,
        "the first transfers quarantined on manager1",
    );
    assert_eq!(
        quarantined_count(&m2.mail_logs()),
        0,
        "manager2 got transfers first"
    );
    // manager2 sees them and finds them by manager1's MIDs.
    let on_m2 = held(&m2, &["--subject", "first"]);
    assert_eq!(on_m2.len(), FIRST, "{on_m2:#?}");
    let mids: Vec<String> = on_m2.iter().map(|h| h["mid"].to_string()).collect();
    assert!(
        on_m2
            .iter()
            .all(|h| h["mid"].as_u64() < Some(2 * 1_000_000_000_000)),
        "manager1's MIDs are in its own range: {mids:?}"
    );

    // Under load: a burst of transfers, and half the first ones released on manager1;
    // kill -9 manager1 in the middle.
    let addr = gw.addr();
    let burst = thread::spawn(move || send_burst(addr, "", BURST, BURST));
    let released_on_m1: Vec<&str> = mids[..FIRST / 2].iter().map(String::as_str).collect();
    let mut args = vec!["quarantine", "release"];
    args.extend(&released_on_m1);
    text(&m1, &args);
    m1.wait_for_log_matching(
        Duration::from_secs(120),
        |log| quarantined_count(log) >= FIRST + 20,
        "burst transfers on manager1",
    );
    m1.kill9();
    let sent: BTreeSet<u64> = burst
        .join()
        .expect("the burst failed")
        .into_iter()
        .chain(first.iter().copied())
        .collect();
    assert_eq!(sent.len(), FIRST + BURST);

    // diagnose on the gateway says which manager is down.
    let checks = diagnose(&gw);
    let down: Vec<&Value> = checks
        .iter()
        .filter(|c| {
            c["passed"] == false
                && c["name"]
                    .as_str()
                    .is_some_and(|n| n.contains(&format!("{MANAGER_IP}:{p1}")))
        })
        .collect();
    assert!(
        !down.is_empty(),
        "no failing check names manager1: {checks:#?}"
    );
    assert!(
        down.iter().any(|c| c["cause"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("manager {MANAGER_IP}:{p1}")))),
        "{down:#?}"
    );
    assert!(
        checks.iter().any(|c| c["passed"] == true
            && c["name"].as_str().is_some_and(
                |n| n.starts_with("manager link") && n.contains(&format!("{MANAGER2_IP}:{p2}"))
            )),
        "manager2's link is not shown as up: {checks:#?}"
    );

    // The enable preflight checks each manager listed and names the one that is down.
    let both = format!("{MANAGER_IP}:{p1},{MANAGER2_IP}:{p2}");
    let refused = enable_refused(&gw, &["--manager", &both]);
    assert!(
        refused["cause"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("manager {MANAGER_IP}:{p1}: "))),
        "{refused:#}"
    );
    let named: Vec<&str> = refused["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        named
            .iter()
            .any(|n| n.ends_with(&format!("({MANAGER2_IP}:{p2})"))),
        "manager2 was not checked: {named:?}"
    );

    // Everything reaches the store through manager2, each transfer once.
    let mut kicked: Option<Instant> = None;
    wait_until(
        Duration::from_secs(300),
        || {
            if kicked.is_none_or(|k| k.elapsed() >= Duration::from_secs(3)) {
                text(&gw, &["delivernow", "the.cpq.host"]);
                kicked = Some(Instant::now());
            }
            queued_for(&gw, "the.cpq.host").is_empty().then_some(())
        },
        || {
            format!(
                "the.cpq.host never drained: {} left",
                queued_for(&gw, "the.cpq.host").len()
            )
        },
    );
    assert!(
        quarantined_count(&m2.mail_logs()) > 0,
        "manager2 took no transfer"
    );
    let all = held(&m2, &["--gateway", "gw1"]);
    let mut per_mid: BTreeMap<u64, usize> = BTreeMap::new();
    for h in &all {
        *per_mid.entry(gateway_mid(h)).or_default() += 1;
    }
    let twice: Vec<_> = per_mid.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "held twice: {twice:?}");
    let got: BTreeSet<u64> = per_mid.keys().copied().collect();
    let released_mids: BTreeSet<u64> = on_m2[..FIRST / 2].iter().map(gateway_mid).collect();
    let expected: BTreeSet<u64> = sent.difference(&released_mids).copied().collect();
    assert_eq!(
        got.symmetric_difference(&expected)
            .take(10)
            .collect::<Vec<_>>(),
        Vec::<&u64>::new(),
        "held on the store vs sent less released"
    );

    // manager2 runs the sweeps now that manager1 is gone.
    m2.wait_for_log_matching_after(
        m2.start_mark(),
        Duration::from_secs(120),
        |log| log.contains("this manager now runs the expiry and free-up-space sweeps"),
        "manager2 leading the sweeps",
    );

    // A release on manager2 of messages manager1 stored, while manager1 is down.
    let released_on_m2: Vec<&str> = mids[FIRST / 2..].iter().map(String::as_str).collect();
    let mut args = vec!["quarantine", "release"];
    args.extend(&released_on_m2);
    text(&m2, &args);

    // manager1 comes back: its releases spooled before the kill go out, and new transfers
    // go to it first again.
    let mark = m1.log_mark();
    m1.restart();
    let back = send(
        &gw,
        "a@example.org",
        "bob@example.com",
        &format!("{TAG} back"),
    );
    m1.wait_for_log_matching_after(
        mark,
        Duration::from_secs(120),
        |log| quarantined_count(log) >= 1,
        "a transfer on manager1 after it came back",
    );
    let got = sink.wait_for_messages(FIRST, DELIVERY * 3);
    assert!(got.len() >= FIRST);
    // Nothing waits anywhere any more, and each release arrived once.
    wait_until(
        Duration::from_secs(120),
        || {
            for m in [&m1, &m2] {
                if !queued_for(m, "the.cpq.release.host").is_empty() {
                    text(m, &["delivernow", "the.cpq.release.host"]);
                    return None;
                }
            }
            json(&gw, &["showrecipients", "--all"])["recipients"]
                .as_array()
                .is_some_and(|r| r.is_empty())
                .then_some(())
        },
        || "released mail still queued".to_string(),
    );
    let subjects = delivered_subjects(&sink);
    let more_than_once: Vec<_> = subjects.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        more_than_once.is_empty(),
        "delivered more than once: {more_than_once:?}"
    );
    let firsts = subjects.keys().filter(|s| s.contains(" first ")).count();
    assert_eq!(firsts, FIRST, "{subjects:#?}");
    assert_eq!(held(&m1, &["--subject", "first"]).len(), 0);
    assert_eq!(held(&m2, &["--subject", "back"]).len(), 1, "MID {back}");
    assert_eq!(held(&m1, &[]).len(), BURST + 1);
}

/// `pvo manager migrate-store --config C --to URL` (more arguments after).
fn migrate_store(config: &Path, url: &str) -> Command {
    let mut cmd = Command::new(pvo_bin());
    cmd.args(["manager", "migrate-store", "--config"])
        .arg(config)
        .args(["--to", url]);
    cmd
}

/// A manager's embedded store moves to PostgreSQL while the manager is stopped: refused
/// while it runs; `kill -9` of the move in the middle, then the same command goes on from
/// the last batch, verifies the copy and sets `[store] url`; the manager starts on
/// PostgreSQL with every message, found and acted on by its MIDs.
#[test]
fn a_stopped_managers_store_moves_to_postgresql_and_a_killed_move_goes_on() {
    const N: u64 = 8_000;
    let pg = crate::support::Postgres::start();
    let url = pg.url();
    let dir = NodeDir::new(&manager_config("manager", free_port_on(MANAGER_IP)));
    let config = dir.config_path();
    // The embedded store as N transfers from gw1 would have left it.
    {
        std::fs::create_dir_all(dir.path().join("quarantine")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let s =
            pvo_quarantine::Store::open_sqlite(&dir.path().join("quarantine/quarantine.db"), now)
                .unwrap();
        let msgs: Vec<pvo_quarantine::NewMessage> = (0..N)
            .map(|n| {
                let mut m = pvo_quarantine::testkit::msg(
                    &format!("gw1-{n}"),
                    vec![pvo_quarantine::testkit::hold("Policy")],
                );
                m.gateway_mid = n + 1;
                m.subject = format!("moved {n}");
                m.meta = serde_json::json!({ "mid": 500 + n, "icid": 1 });
                m.received = now;
                m
            })
            .collect();
        for chunk in msgs.chunks(2_000) {
            for r in s.quarantine_many(chunk, now).unwrap() {
                assert!(r.unwrap().created);
            }
        }
    }
    let mut manager = dir.start_manager();
    let held_total = |m: &Node| json(m, &["quarantineconfig", "list"])["total_messages"].clone();
    assert_eq!(held_total(&manager), N);
    let (ok, out, err) = run_with_timeout(&mut migrate_store(&config, &url), COMMAND);
    assert!(!ok.success(), "{out}{err}");
    assert!(
        err.contains("the manager is running: stop it first"),
        "{err}"
    );
    manager.stop();

    // kill -9 the move once a tenth or so is copied.
    let mut child = migrate_store(&config, &url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for l in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
        let l = l.unwrap();
        seen.push(l.clone());
        // The first line after 0%: a tenth or so is copied, most is not.
        if l.contains("Moving the quarantine store") && !l.contains("] 0% (") {
            break;
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    assert!(
        seen.last()
            .is_some_and(|l| l.contains("Moving the quarantine store to ")
                && l.contains(&format!(" of {N} messages)"))),
        "{seen:#?}"
    );
    assert!(!std::fs::read_to_string(&config)
        .unwrap()
        .contains("[store]"));

    // The same command goes on after the batches that were committed.
    let (ok, out, err) =
        run_with_timeout(&mut migrate_store(&config, &url), Duration::from_secs(600));
    assert!(ok.success(), "{out}{err}");
    assert!(out.contains(&format!("Moved {N} messages from ")), "{out}");
    assert!(out.contains("going on after the "), "{out}");
    assert!(out.contains("Verified: 8 rows alike"), "{out}");
    assert!(err.contains("] 100% ("), "{err}");
    let written = std::fs::read_to_string(&config).unwrap();
    assert!(
        written.contains("[store]") && written.contains(&url),
        "{written}"
    );

    // The manager on PostgreSQL: every message, by its MIDs.
    manager.restart();
    assert_eq!(held_total(&manager), N);
    assert_eq!(held(&manager, &["--subject", "7999"]).len(), 1);
    text(&manager, &["quarantine", "delete", "507", "--yes"]);
    assert_eq!(held_total(&manager), N - 1);
    assert!(
        held(&manager, &["--subject", "7"]).is_empty(),
        "MID 507 (subject moved 7) deleted"
    );
    // The embedded store is left as it was.
    assert!(dir_has_store(&manager));
    // A store on PostgreSQL does not move again.
    manager.stop();
    let (ok, _, err) = run_with_timeout(&mut migrate_store(&config, &url), COMMAND);
    assert!(
        !ok.success() && err.contains("on PostgreSQL already"),
        "{err}"
    );
}

fn dir_has_store(node: &Node) -> bool {
    node.data_dir().join("quarantine/quarantine.db").is_file()
}

/// PostgreSQL killed under load beneath a manager on it: the manager refuses transfers with
/// a temporary error (nothing half stored), the gateway keeps them in `the.cpq.host`,
/// `diagnose` on the manager names the central store and the PostgreSQL server; when
/// PostgreSQL is back everything drains, each transfer held once.
#[test]
fn postgresql_killed_under_a_manager_keeps_transfers_on_the_gateway_until_it_returns() {
    const N: usize = 150;
    let mut pg = crate::support::Postgres::start();
    let d = Deployment::start_with(
        &[("gw1", GW1_IP)],
        &format!("\n[store]\nurl = \"{}\"\n", pg.url()),
        "",
    );
    let gw = &d.gateways[0].node;
    let addr = gw.addr();
    let burst = thread::spawn(move || send_burst(addr, "pg-", N, 50));
    d.manager.wait_for_log_matching(
        DELIVERY,
        |log| quarantined_count(log) >= N / 5,
        "a fifth of the transfers stored",
    );
    pg.kill();
    let sent: BTreeSet<u64> = burst
        .join()
        .expect("the gateway refused mail")
        .into_iter()
        .collect();
    assert_eq!(sent.len(), N);

    // The manager says what is wrong, and refuses with 4xx meanwhile.
    let store = wait_until(
        DELIVERY,
        || {
            let c = component(&d.manager, "central store");
            (c["passed"] == false).then_some(c)
        },
        || "the central store check never failed".to_string(),
    );
    assert!(
        store["remedy"]
            .as_str()
            .is_some_and(|r| r.contains("PostgreSQL server of [store] url")),
        "{store:#}"
    );
    text(gw, &["delivernow", "the.cpq.host"]);
    wait_line(gw, &["Delayed: "]);
    assert!(
        !queued_for(gw, "the.cpq.host").is_empty(),
        "the gateway holds nothing for the manager"
    );

    // PostgreSQL is back: the store answers again and the gateway's queue drains.
    pg.start_again();
    let mut kicked: Option<Instant> = None;
    wait_until(
        Duration::from_secs(300),
        || {
            if kicked.is_none_or(|k| k.elapsed() >= Duration::from_secs(3)) {
                text(gw, &["delivernow", "the.cpq.host"]);
                kicked = Some(Instant::now());
            }
            queued_for(gw, "the.cpq.host").is_empty().then_some(())
        },
        || {
            format!(
                "the.cpq.host never drained: {} left",
                queued_for(gw, "the.cpq.host").len()
            )
        },
    );
    assert_eq!(component(&d.manager, "central store")["passed"], true);
    let held_now = held(&d.manager, &["--gateway", "gw1"]);
    let mut per_mid: BTreeMap<u64, usize> = BTreeMap::new();
    for h in &held_now {
        *per_mid.entry(gateway_mid(h)).or_default() += 1;
    }
    assert!(per_mid.values().all(|n| *n == 1), "held twice: {per_mid:?}");
    let got: BTreeSet<u64> = per_mid.keys().copied().collect();
    assert_eq!(got, sent, "held on the manager vs sent");
    assert!(
        log_lines(&gw.mail_logs(), "Bounced").is_empty(),
        "a transfer bounced"
    );
}
