//! Exactly-once where PVO can promise it: a release that the gateway
//! spooled but had not yet recorded in its release-id ledger when it died must not be
//! delivered twice when the manager sends it again.
//!
//! The crash is a real one at the exact point: debug builds of `pvo` abort the process
//! right after the released copy's spool fsync, before its release id is recorded, while
//! the file `DATA_DIR/run/fault-crash-after-release-spooled` exists (see
//! `cpq::gateway::receive_release`). A manager (127.0.0.2) and one central gateway
//! (127.0.0.1) run as real processes; the next hop is `tests/peers/sink.py`.
//!
//! Needs `scripts/install-test-deps` (python3-aiosmtpd).

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use crate::support::{
    enroll, free_port_on, manager_toml, number_after, text_in, wait_until, GatewayToml, NodeDir,
    Sink, SmtpClient, INCOMING_POLICY, OUTGOING_POLICY, QUARANTINE_TEST_FILTER, TRUSTED,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const WAIT: Duration = Duration::from_secs(120);
const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const TAG: &str = "[quarantine-test]";

#[test]
fn a_release_spooled_but_not_yet_recorded_at_a_crash_is_delivered_once() {
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_toml("manager", manager_port));
    let sink = Sink::accepting();
    let cpq_port = free_port_on(TRUSTED);
    let gdir = NodeDir::new(
        &GatewayToml::new(&sink)
            .hostname("gw1.cpq.test")
            .address(TRUSTED)
            .accept_all()
            .rat(&["example.com"])
            .default_interface("Loopback")
            .quiet_bounces()
            .cpq("gw1", cpq_port, "central", manager_port)
            .extra(QUARANTINE_TEST_FILTER)
            .extra(INCOMING_POLICY)
            .extra(OUTGOING_POLICY)
            .build(),
    );
    enroll(&mdir, &gdir, "gw1", TRUSTED, cpq_port);
    let manager = mdir.start_manager();
    let mut gw = gdir.start_gateway();

    // One message held on the manager.
    let mut c = SmtpClient::open(gw.addr(), Some(TRUSTED));
    c.expect("EHLO client.cpq.test", 250);
    let body = format!(
        "From: <alice@example.org>\r\nTo: <bob@example.com>\r\nSubject: {TAG} once\r\n\
         Message-ID: <release-once@client.cpq.test>\r\n\r\nreleased exactly once\r\n"
    );
    let r = c.send_message("alice@example.org", &["bob@example.com"], &body);
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    let held = gw.wait_for_log_matching(
        WAIT,
        |log| log.contains("RID [0] Response '2.0.0 Ok: Message "),
        "the manager took the transfer",
    );
    let line = held
        .lines()
        .find(|l| l.contains("RID [0] Response '2.0.0 Ok: Message "))
        .unwrap()
        .to_string();
    let manager_mid = number_after(&line, "Ok: Message ").expect("manager MID");

    // The gateway dies between spooling the released copy and recording its release id.
    let fault = gw
        .data_dir()
        .join("run")
        .join("fault-crash-after-release-spooled");
    std::fs::write(&fault, b"").expect("arm the fault point");
    let out = text_in(
        &manager.data_dir(),
        &["quarantine", "release", &manager_mid.to_string()],
    );
    assert!(out.contains("1 released"), "{out}");
    let logs = gw.mail_logs_path();
    wait_until(
        WAIT,
        || (!gw.is_running()).then_some(()),
        || {
            format!(
                "the gateway did not crash at the fault point:\n{}",
                std::fs::read_to_string(&logs).unwrap_or_default()
            )
        },
    );
    let before = gw.mail_logs();
    std::fs::remove_file(&fault).expect("disarm the fault point");
    let mark = before.len();
    gw.kill9();
    gw.restart();

    // The manager's retry (now, not in a minute) meets the rebuilt ledger.
    text_in(&manager.data_dir(), &["delivernow"]);
    let run = |log: &str| log.get(mark..).unwrap_or("").to_string();
    let after = gw.wait_for_log_matching(
        WAIT,
        |log| {
            let run = run(log);
            run.contains(" already received; not delivered again")
                || run.contains(" released from the Centralized Policy Quarantine ")
        },
        "the gateway answered the manager's retry",
    );
    let after = run(&after);
    assert!(
        !after.contains(" released from the Centralized Policy Quarantine "),
        "the retried release was spooled again, so it is delivered twice:\n{after}"
    );
    // The copy spooled before the crash is delivered by the restarted gateway, once.
    let msgs = sink.wait_for_messages(1, WAIT);
    assert_eq!(msgs.len(), 1);
    assert!(
        msgs[0].text().contains("released exactly once"),
        "{}",
        msgs[0].text()
    );
    assert!(gw.is_running(), "the gateway died again:\n{}", gw.stderr());
}
