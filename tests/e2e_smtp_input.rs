//! End-to-end tests of what a client may put in an envelope and a message (quoted
//! local parts, NUL and non-ASCII bytes): a real `pvo gateway run` and a real next hop (aiosmtpd,
//! `tests/peers/sink.py`, which records the envelope it got), with mail from 127.0.0.2
//! (untrusted: only the RAT's `example.com`) and from 127.0.0.1 (RELAYLIST).
//!
//! - A quoted local part reaches the next hop quoted, as the same mailbox; it never turns
//!   into another recipient followed by ESMTP parameters the sender chose.
//! - SMTPUTF8 is not offered: non-ASCII and invalid UTF-8 addresses and the `SMTPUTF8`
//!   parameter are refused with 5.6.7, and unannounced parameters (`NOTIFY`, `ORCPT`) too.
//! - A message with NUL is refused (`554 5.6.0`); nothing forwarded holds a NUL.
//! - A held message with such an address reaches the manager (the CPQ record carries it
//!   quoted; it used to wait in `the.cpq.host` for ever) and its release reaches the next
//!   hop as the same mailbox.

use std::time::Duration;

use crate::support::{
    enroll, free_port_on, manager_toml, pvo_json, wait_until, GatewayToml, Message, Node, NodeDir,
    Sink, SmtpClient, INCOMING_POLICY, MANAGER_IP, OUTGOING_POLICY, QUARANTINE_TEST_FILTER,
    TRUSTED, UNTRUSTED,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const DELIVERY: Duration = Duration::from_secs(60);

/// A gateway that accepts `example.com` from anyone and relays for 127.0.0.1, every domain
/// routed to `sink`.
fn gateway(sink: &Sink) -> Node {
    Node::start(
        &GatewayToml::new(sink)
            .accept_all()
            .rat(&["example.com"])
            .build(),
    )
}

fn body(subject: &str) -> String {
    format!(
        "From: <sender@example.org>\r\nTo: <user@example.com>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@client.test>\r\n\r\nBody of {subject}.\r\n"
    )
}

fn by_subject(messages: &[Message], subject: &str) -> Message {
    messages
        .iter()
        .find(|m| m.header("Subject").as_deref() == Some(subject))
        .unwrap_or_else(|| panic!("no message {subject:?} at the sink"))
        .clone()
}

#[test]
fn quoted_local_parts_reach_the_next_hop_as_the_same_mailbox() {
    let sink = Sink::accepting();
    let node = gateway(&sink);

    // The finding: from an untrusted address, a quoted local part that reads like a
    // recipient plus DSN parameters once its quotes are lost.
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<\"john doe\"@example.org>", 250);
    c.expect(
        "RCPT TO:<\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com>",
        250,
    );
    // Escapes inside the quotes, and quotes that are not needed (the same mailbox as none).
    c.expect("RCPT TO:<\"a\\\"b\\\\c\"@example.com>", 250);
    c.expect("RCPT TO:<\"plain\"@example.com>", 250);
    let r = c.data(&body("quoted-untrusted"));
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();

    // From the RELAYLIST: a quoted `@` is routing the sender may ask for, and it must
    // reach the next hop as that (quoted), not as a different domain.
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    c.expect("MAIL FROM:<>", 250);
    c.expect("RCPT TO:<\"victim@example.net\"@example.org>", 250);
    let r = c.data(&body("quoted-relay"));
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();

    let messages = sink.wait_for_messages(2, DELIVERY);
    let m = by_subject(&messages, "quoted-untrusted");
    assert_eq!(m.mail_from, "\"john doe\"@example.org");
    let mut rcpts = m.rcpt_to.clone();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            "\"a\\\"b\\\\c\"@example.com",
            "\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com",
            "plain@example.com",
        ],
        "the next hop got {:?}",
        m.rcpt_to
    );
    let r = by_subject(&messages, "quoted-relay");
    assert_eq!(r.mail_from, "");
    assert_eq!(r.rcpt_to, ["\"victim@example.net\"@example.org"]);

    // The log names the mailbox as it was meant, quotes included.
    let log = node.mail_logs();
    assert!(
        log.contains("To: <\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com>"),
        "{log}"
    );
    assert!(log.contains("From: <\"john doe\"@example.org>"), "{log}");
}

#[test]
fn smtputf8_is_not_offered_and_non_ascii_envelopes_and_unannounced_parameters_are_refused() {
    let sink = Sink::accepting();
    let node = gateway(&sink);
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    let ehlo = c.expect("EHLO client.test", 250);
    assert!(
        !ehlo
            .lines
            .iter()
            .any(|l| l.eq_ignore_ascii_case("SMTPUTF8")),
        "EHLO offers SMTPUTF8: {}",
        ehlo.raw()
    );
    let raw = |c: &mut SmtpClient, bytes: &[u8]| {
        c.write_raw(bytes).expect("write");
        c.read_reply().expect("reply")
    };
    let r = raw(&mut c, b"MAIL FROM:<a@example.org> SMTPUTF8\r\n");
    assert_eq!(
        (r.code, r.lines[0].get(..5)),
        (555, Some("5.6.7")),
        "{}",
        r.raw()
    );
    let r = raw(&mut c, "MAIL FROM:<jörg@example.org>\r\n".as_bytes());
    assert_eq!(
        (r.code, r.lines[0].get(..5)),
        (553, Some("5.6.7")),
        "{}",
        r.raw()
    );
    c.expect("MAIL FROM:<a@example.org>", 250);
    // UTF-8, and two different invalid byte sequences that U+FFFD would have made one.
    for rcpt in [
        "RCPT TO:<jörg@example.com>\r\n".as_bytes(),
        b"RCPT TO:<j\xffrg@example.com>\r\n",
        b"RCPT TO:<j\xfe\xferg@example.com>\r\n",
        "RCPT TO:<user@bücher.example.com>\r\n".as_bytes(),
    ] {
        let r = raw(&mut c, rcpt);
        assert_eq!(
            (r.code, r.lines[0].get(..5)),
            (553, Some("5.6.7")),
            "{:?}: {}",
            String::from_utf8_lossy(rcpt),
            r.raw()
        );
    }
    // Parameters that were never announced (no DSN): refused, not dropped silently.
    for rcpt in [
        "RCPT TO:<user@example.com> NOTIFY=NEVER",
        "RCPT TO:<user@example.com> ORCPT=rfc822;root@example.com",
    ] {
        let r = c.command(rcpt);
        assert_eq!(r.code, 555, "{rcpt}: {}", r.raw());
    }
    c.expect("RCPT TO:<user@example.com>", 250);
    let r = c.data(&body("ascii-only"));
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();

    let messages = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["user@example.com"]);
    let log = node.mail_logs();
    assert!(!log.contains('\u{fffd}'), "{log}");
}

#[test]
fn a_message_with_nul_is_refused_and_nothing_forwarded_holds_a_nul() {
    let sink = Sink::accepting();
    let node = gateway(&sink);
    let mut c = SmtpClient::open(node.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    // `\r\n\0.\r\n` is an end of data to a receiver that drops NULs: what follows would be
    // a second, smuggled transaction there.
    for smuggled in [
        &b"\r\n\x00.\r\n"[..],
        b"\r\n.\x00\r\n",
        b"\r\nnul\x00byte\r\n",
    ] {
        c.expect("MAIL FROM:<a@example.org>", 250);
        c.expect("RCPT TO:<user@example.com>", 250);
        c.expect("DATA", 354);
        let mut data = body("with-nul").into_bytes();
        data.extend_from_slice(b"first");
        data.extend_from_slice(smuggled);
        data.extend_from_slice(
            b"MAIL FROM:<a@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n\
              Subject: smuggled\r\n\r\nsecond\r\n.\r\n",
        );
        c.write_raw(&data).expect("write");
        let r = c.read_reply().expect("reply to the end of data");
        assert_eq!(
            (r.code, r.lines[0].get(..5)),
            (554, Some("5.6.0")),
            "{:?}: {}",
            String::from_utf8_lossy(smuggled),
            r.raw()
        );
        // The bytes after the real end are commands again, in sync.
        c.expect("NOOP", 250);
    }
    let r = c.send_message("a@example.org", &["user@example.com"], &body("clean"));
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();

    let messages = sink.wait_for_messages(1, DELIVERY);
    assert_eq!(
        messages.len(),
        1,
        "{:?}",
        messages
            .iter()
            .map(|m| m.header("Subject"))
            .collect::<Vec<_>>()
    );
    assert_eq!(messages[0].header("Subject").as_deref(), Some("clean"));
    assert!(!messages[0].data.contains(&0));
    let log = node.mail_logs();
    assert!(log.contains("NUL characters in the message"), "{log}");
}

#[test]
fn a_held_message_with_a_quoted_address_reaches_the_manager_and_is_released_quoted() {
    let manager_port = free_port_on(MANAGER_IP);
    let mdir = NodeDir::new(&manager_toml("manager", manager_port));
    let sink = Sink::accepting();
    let cpq_port = free_port_on(TRUSTED);
    let gdir = NodeDir::new(
        &GatewayToml::new(&sink)
            .hostname("gw1.cpq.test")
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
    let gw = gdir.start_gateway();

    // Spaces and angle brackets in both addresses, from an untrusted sender; the demo
    // content filter holds it, and central mode sends it to the manager.
    let sender = "\"john doe\"@example.org";
    let rcpt = "\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com";
    let mut c = SmtpClient::open(gw.addr(), Some(UNTRUSTED));
    c.expect("EHLO client.test", 250);
    c.expect(&format!("MAIL FROM:<{sender}>"), 250);
    c.expect(&format!("RCPT TO:<{rcpt}>"), 250);
    let r = c.data(&body("[quarantine-test] quoted"));
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();

    // The manager holds it under the same mailboxes (stored unquoted, as PVO keeps them).
    let held = wait_until(
        DELIVERY,
        || {
            let data = &pvo_json(&manager, &["quarantine", "search"])["data"];
            let first = data["messages"].as_array()?.first()?.clone();
            Some(first)
        },
        || {
            format!(
                "nothing held on the manager; gateway log:\n{}",
                gw.mail_logs()
            )
        },
    );
    assert_eq!(held["sender"], "john doe@example.org", "{held:#}");
    assert_eq!(
        held["recipients"],
        serde_json::json!(["root> NOTIFY=NEVER ORCPT=rfc822;x@example.com"]),
        "{held:#}"
    );
    assert!(
        !gw.mail_logs().contains("cannot encode the CPQ record"),
        "{}",
        gw.mail_logs()
    );

    // Released, it goes back to gw1 and reaches the next hop as the same mailbox.
    let mid = held["mid"].as_u64().expect("mid").to_string();
    pvo_json(&manager, &["quarantine", "release", &mid]);
    let m = sink.wait_for_messages(1, DELIVERY).remove(0);
    assert_eq!(m.mail_from, sender);
    assert_eq!(m.rcpt_to, [rcpt]);
}
