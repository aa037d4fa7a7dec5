//! End-to-end tests of who may speak CPQ: a manager on 127.0.0.2
//! and gateways gw1 (127.0.0.1) and gw2 (127.0.0.3), real `pvo` processes with real
//! mutual TLS, enrolled with `pvo manager enroll` as in `e2e_cpq`.
//!
//! A certificate of the deployment CA is not a licence: a gateway takes releases only
//! from the manager it was added to (another gateway's certificate, or one from an
//! enrollment that was cleared, presented from the manager's own address, fails the
//! handshake), and a manager takes transfers only from the certificates it enrolled and
//! still lists. `cpqcert revoke` and `applianceconfig delete` act on the next
//! handshake. Every refusal is in mail_logs and in `pvo_cpq_refused_total{reason}`.
//! Forged records are sent by Python's `smtplib`/`ssl` presenting the stolen
//! certificate, from the address the victim trusts. Waits are for log lines, command
//! answers, metrics or sink messages, never a fixed sleep.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    enroll, free_port_on, manager_toml, ok, pvo_bin, pvo_json, pvo_try, run_with_timeout,
    wait_line, wait_metric, GatewayToml, Node, NodeDir, Reply, Sink, SmtpClient, INCOMING_POLICY,
    OUTGOING_POLICY, QUARANTINE_TEST_FILTER, SYSTEM_PYTHON, TRUSTED,
};

const WAIT: Duration = Duration::from_secs(60);

const GW1_IP: IpAddr = TRUSTED;
const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const GW2_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// The demo content filter's subject tag (to Policy).
const TAG: &str = "[quarantine-test]";

/// A gateway `id` on `ip` in central mode with `/metrics`, delivering to `sink`.
fn gateway_config(id: &str, ip: IpAddr, cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
    GatewayToml::new(sink)
        .hostname(&format!("{id}.cpq.test"))
        .address(ip)
        .accept_all()
        .rat(&["example.com"])
        .default_interface("Loopback")
        .quiet_bounces()
        .cpq(id, cpq_port, "central", manager_port)
        .web()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(INCOMING_POLICY)
        .extra(OUTGOING_POLICY)
        .build()
}

struct Gateway {
    node: Node,
    sink: Sink,
    /// The gateway's cpq directory (its certificate, key and the pinned manager's).
    cpq: std::path::PathBuf,
}

struct Deployment {
    manager: Node,
    manager_port: u16,
    gw1: Gateway,
    gw2: Gateway,
}

/// A manager (with `/metrics`) and gw1, gw2, each enrolled before the manager starts.
fn deployment() -> Deployment {
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&format!(
        "{}\n[web]\ninterface = \"Management\"\nport = 0\n",
        manager_toml("manager", manager_port)
    ));
    let mut prepared = Vec::new();
    for (id, ip) in [("gw1", GW1_IP), ("gw2", GW2_IP)] {
        let sink = Sink::accepting();
        let cpq_port = free_port_on(ip);
        let dir = NodeDir::new(&gateway_config(id, ip, cpq_port, manager_port, &sink));
        enroll(&mdir, &dir, id, ip, cpq_port);
        prepared.push((dir, sink));
    }
    let manager = mdir.start_manager();
    let mut gws = prepared.into_iter().map(|(dir, sink)| {
        let cpq = dir.cpq_dir();
        Gateway {
            node: dir.start_gateway(),
            sink,
            cpq,
        }
    });
    let (gw1, gw2) = (gws.next().unwrap(), gws.next().unwrap());
    Deployment {
        manager,
        manager_port,
        gw1,
        gw2,
    }
}

/// Speaks CPQ with a given client certificate from `source`: EHLO, STARTTLS, EHLO,
/// `XPVO-META 1 <record>`, then one message. One line per step, or `ERROR …`.
const CPQ_CLIENT: &str = r#"
import base64, smtplib, ssl, sys
host, port, source, cert, key, ca, record = sys.argv[1:8]
def show(step, code, text):
    text = text.decode() if isinstance(text, bytes) else str(text)
    print(step, code, text.replace("\n", " | "), flush=True)
try:
    s = smtplib.SMTP(host, int(port), local_hostname="cpq-client.test",
                     source_address=(source, 0), timeout=30)
    show("EHLO", *s.ehlo())
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    show("STARTTLS", *s.starttls(context=ctx))
    show("EHLO", *s.ehlo())
    show("META", *s.docmd("XPVO-META", "1 " + base64.b64encode(record.encode()).decode()))
    show("MAIL", *s.mail("forger@evil.test"))
    show("RCPT", *s.rcpt("victim@elsewhere.test"))
    body = "From: <forger@evil.test>\r\nTo: <victim@elsewhere.test>\r\nSubject: forged release\r\n\r\nunscanned\r\n"
    show("DATA", *s.data(body.encode()))
    s.quit()
except Exception as e:
    print("ERROR", type(e).__name__, str(e).replace("\n", " | "), flush=True)
"#;

/// Runs [`CPQ_CLIENT`] against `to` from `source`, presenting the certificate in the
/// cpq directory `creds` and trusting its `ca.crt`.
fn cpq_client(to: SocketAddr, source: IpAddr, creds: &Path, record: &str) -> String {
    let mut cmd = Command::new(SYSTEM_PYTHON);
    cmd.arg("-c").arg(CPQ_CLIENT).args([
        to.ip().to_string(),
        to.port().to_string(),
        source.to_string(),
        creds.join("node.crt").display().to_string(),
        creds.join("node.key").display().to_string(),
        creds.join("ca.crt").display().to_string(),
        record.to_string(),
    ]);
    let (status, out, err) = run_with_timeout(&mut cmd, WAIT);
    assert!(status.success(), "cpq client: {status}\n{out}\n{err}");
    out
}

/// A release record for gw1 as the manager would send it.
fn release_record(id: &str) -> String {
    format!("kind=release\nrelease={id}\ngateway=gw1\nmid=1\nreleased-by=Policy\n")
}

/// Sends a message the demo filter quarantines through `gw` (from 127.0.0.1).
fn send_held(gw: &Node, subject: &str) -> u64 {
    let mut c = SmtpClient::open(gw.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let body = format!(
        "From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: {TAG} {subject}\r\n\r\n{subject}\r\n"
    );
    let r: Reply = c.send_message("alice@example.org", &["bob@example.com"], &body);
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    let text = r.lines.last().cloned().unwrap_or_default();
    text.split_once("Message ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {}", r.raw()))
}

/// Waits for the manager's `250` to `mid`; returns the manager's MID.
fn wait_transferred(gw: &Node, mid: u64) -> u64 {
    let line = wait_line(
        gw,
        &[
            &format!("MID {mid} RID [0] Response '2.0.0 Ok: Message "),
            " accepted'",
        ],
    );
    let rest = &line[line.find("Ok: Message ").unwrap() + "Ok: Message ".len()..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// The serial of `node`'s own CPQ certificate (`cpqcert list`).
fn serial_of(node: &Node) -> String {
    let list = pvo_json(node, &["cpqcert", "list"]);
    list["data"]["certificate"]["serial"]
        .as_str()
        .unwrap_or_else(|| panic!("no serial in {list:#}"))
        .to_string()
}

#[test]
fn only_the_managers_certificate_may_release_to_a_gateway() {
    let d = deployment();
    let gw1_cpq = d.gw1.node.listener("cpq_listener");

    // gw2's certificate (same deployment CA), from the manager's own address.
    let out = cpq_client(gw1_cpq, MANAGER_IP, &d.gw2.cpq, &release_record("forged-1"));
    assert!(
        !out.contains("META 250") && !out.contains("DATA 250"),
        "gw1 took a release from gw2's certificate:\n{out}"
    );
    let refused = wait_line(
        &d.gw1.node,
        &[" TLS failed: verify error: certificate not accepted: certificate of gw2 "],
    );
    assert!(refused.contains("is not the manager's"), "{refused}");
    assert_eq!(
        wait_metric(
            &d.gw1.node,
            "pvo_cpq_refused_total{reason=\"not_manager\"}",
            |v| v >= 1
        ),
        1
    );

    // A certificate from an enrollment that was cleared before its commit.
    let tmp = tempfile::tempdir().unwrap();
    let cleared = tmp.path().join("gw7");
    let mut cmd = Command::new(pvo_bin());
    cmd.args(["manager", "enroll", "--config"])
        .arg(d.manager.config_path())
        .args(["gw7", "--address", "127.0.0.1", "--port", "7025", "--out"])
        .arg(&cleared);
    let (status, out, err) = run_with_timeout(&mut cmd, WAIT);
    assert!(status.success(), "enroll gw7: {out}{err}");
    assert!(ok(&d.manager, &["showconfig", "--pending"]).contains("gw7"));
    ok(&d.manager, &["clearchanges"]);
    let out = cpq_client(gw1_cpq, MANAGER_IP, &cleared, &release_record("forged-2"));
    assert!(
        !out.contains("META 250") && !out.contains("DATA 250"),
        "gw1 took a release from a cleared enrollment's certificate:\n{out}"
    );
    wait_line(
        &d.gw1.node,
        &[" TLS failed: verify error: certificate not accepted: certificate of gw7 "],
    );
    wait_metric(
        &d.gw1.node,
        "pvo_cpq_refused_total{reason=\"not_manager\"}",
        |v| v >= 2,
    );
    // The manager does not take it either (from gw1's address, which its HAT relays).
    let manager_cpq = SocketAddr::new(MANAGER_IP, d.manager_port);
    let transfer = "kind=transfer\ngateway=gw7\nmid=1\ntransfer=gw7-1-1\nreceived=1\nfrom=alice@example.org\n\
         rcpt=bob@example.com\nquarantine=Policy\nreason=content-filter\nreason-name=quarantine_test\n\
         threat=0\nexit=\n";
    let out = cpq_client(manager_cpq, GW1_IP, &cleared, transfer);
    assert!(!out.contains("META 250"), "{out}");
    let line = wait_line(
        &d.manager,
        &[" TLS failed: verify error: certificate not accepted: gw7 is not a gateway added"],
    );
    assert!(line.contains("not committed"), "{line}");
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"not_enrolled\"}",
        |v| v >= 1,
    );

    // The real manager's release still works, and it is the only thing gw1 delivered.
    let mid = send_held(&d.gw1.node, "the real one");
    let mgr_mid = wait_transferred(&d.gw1.node, mid);
    ok(&d.manager, &["quarantine", "release", &mgr_mid.to_string()]);
    let got = d.gw1.sink.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("the real one"), "{}", got[0].text());
    let log = d.gw1.node.mail_logs();
    let released: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("released from the Centralized Policy Quarantine"))
        .collect();
    assert_eq!(released.len(), 1, "{released:#?}");
    assert!(
        released[0].contains("by the manager manager"),
        "{}",
        released[0]
    );
    assert!(
        !log.contains("forged-1") && !log.contains("forged-2"),
        "a forged release reached the release logic:\n{log}"
    );
    assert_eq!(d.gw1.sink.count(), 1);
    assert_eq!(d.gw2.sink.count(), 0);

    // Enrollment pinned the manager's certificate; gw1 shows whom it accepts.
    assert!(d.gw1.cpq.join("manager.crt").is_file());
    let list = pvo_json(&d.gw1.node, &["cpqcert", "list"]);
    let pinned = &list["data"]["accepted"][0];
    assert_eq!(pinned["id"], "manager", "{list:#}");
    assert_eq!(pinned["pinned"], true, "{list:#}");
}

#[test]
fn revoke_and_delete_take_effect_on_the_next_handshake() {
    let d = deployment();
    // A message of gw1 held on the manager, before anything is revoked.
    let mid = send_held(&d.gw1.node, "held before the revocation");
    let held = wait_transferred(&d.gw1.node, mid);
    let gw1_serial = serial_of(&d.gw1.node);

    // Revoked on the manager: from the next handshake on, in both directions.
    let out = ok(&d.manager, &["cpqcert", "revoke", "--id", "gw1"]);
    assert!(out.contains(&gw1_serial), "{out}");
    wait_line(
        &d.manager,
        &[&format!("CPQ certificate {gw1_serial} (gw1) revoked by ")],
    );
    let list = pvo_json(&d.manager, &["cpqcert", "list"]);
    assert_eq!(
        list["data"]["revoked"][0]["serial"],
        gw1_serial.as_str(),
        "{list:#}"
    );
    let diagnose = pvo_try(&d.manager, &["diagnose", "--json"]).1;
    assert!(
        diagnose.contains(&gw1_serial) && diagnose.contains("CPQ peers"),
        "diagnose shows the revocation list:\n{diagnose}"
    );
    // gw1 -> manager.
    let mid2 = send_held(&d.gw1.node, "after the revocation");
    let refused = wait_line(
        &d.manager,
        &[&format!(
            " TLS failed: verify error: certificate not accepted: certificate of gw1 (serial {gw1_serial}) is revoked"
        )],
    );
    assert!(refused.contains("ICID "), "{refused}");
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"revoked\"}",
        |v| v >= 1,
    );
    assert!(
        !d.gw1
            .node
            .mail_logs()
            .contains(&format!("MID {mid2} RID [0] Response '2.0.0")),
        "the manager took a transfer from a revoked certificate"
    );
    // manager -> gw1: the release does not go to a revoked gateway.
    ok(&d.manager, &["quarantine", "release", &held.to_string()]);
    let failed = wait_line(
        &d.manager,
        &[
            "DCID ",
            " TLS failed: verify error: certificate not accepted: certificate of gw1 ",
        ],
    );
    assert!(failed.contains("is revoked"), "{failed}");
    assert_eq!(d.gw1.sink.count(), 0);

    // gw2 works until it is deleted and that is committed.
    let mid = send_held(&d.gw2.node, "before the delete");
    wait_transferred(&d.gw2.node, mid);
    ok(&d.manager, &["applianceconfig", "delete", "gw2"]);
    ok(&d.manager, &["commit", "-m", "gw2 is gone"]);
    // Its own address is no longer relayed by the manager's HAT...
    let mid = send_held(&d.gw2.node, "after the delete");
    wait_line(&d.manager, &["REJECT SG ALL match ALL"]);
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"address\"}",
        |v| v >= 1,
    );
    // ...and its certificate fails the handshake from an address that is (gw1's).
    let transfer = "kind=transfer\ngateway=gw2\nmid=1\ntransfer=gw2-1-1\nreceived=1\nfrom=alice@example.org\n\
         rcpt=bob@example.com\nquarantine=Policy\nreason=content-filter\nreason-name=quarantine_test\n\
         threat=0\nexit=\n";
    let out = cpq_client(
        SocketAddr::new(MANAGER_IP, d.manager_port),
        GW1_IP,
        &d.gw2.cpq,
        transfer,
    );
    assert!(
        !out.contains("META 250") && !out.contains("DATA 250"),
        "{out}"
    );
    wait_line(
        &d.manager,
        &[" TLS failed: verify error: certificate not accepted: gw2 is not a gateway added"],
    );
    wait_metric(
        &d.manager,
        "pvo_cpq_refused_total{reason=\"not_enrolled\"}",
        |v| v >= 1,
    );
    let queued: Value = pvo_json(&d.gw2.node, &["showrecipients", "--host", "the.cpq.host"]);
    let mids: Vec<u64> = queued["data"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["mid"].as_u64())
        .collect();
    assert!(
        mids.contains(&mid),
        "kept for a retry, not bounced: {queued:#}"
    );
}
