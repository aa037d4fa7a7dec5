//! End-to-end tests of the per-client-address limits of HAT mail flow policies: one address can no longer take a whole sender group with idle
//! connections, connects at a bounded rate, and idle sessions are cut sooner while a
//! policy is under pressure. A real `pvo gateway run`, raw SMTP clients from several
//! loopback source addresses, and aiosmtpd as the next hop.
//!
//! 127.0.0.2 and 127.0.0.3 are both in the `ALL` sender group (policy `ACCEPTED`, at
//! most 200 connections): the attacker and an ordinary sender of the same group.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::thread;
use std::time::Duration;

use crate::support::{connect, log_lines, pvo_try, Node, Reply, Sink, SmtpClient, UNTRUSTED};

/// Another sender of the same group as [`UNTRUSTED`].
const OTHER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

const WAIT: Duration = Duration::from_secs(30);

/// The test gateway: `ACCEPTED` (200 connections) for everyone, with `policy_keys` added
/// to that policy and `limits` as the `[limits]` section.
fn gateway(sink: &Sink, policy_keys: &str, limits: &str) -> Node {
    let toml = crate::support::GatewayToml::new(sink)
        .accept_all()
        .build()
        .replace(
            "max_concurrency = 200\n",
            &format!("max_concurrency = 200\n{policy_keys}"),
        );
    Node::start(&format!("{toml}\n[limits]\n{limits}\n"))
}

/// Connects from `source` and reads the first reply; the client stays open.
fn open(node: &Node, source: IpAddr) -> (SmtpClient, Reply) {
    SmtpClient::connect(node.addr(), Some(source))
        .unwrap_or_else(|e| panic!("connect from {source}: {e}"))
}

/// One message from `source`, checked at every step; returns the reply to the final dot.
fn send_one(node: &Node, source: IpAddr, subject: &str) -> Reply {
    let (mut c, greeting) = open(node, source);
    assert_eq!(
        greeting.code,
        220,
        "greeting to {source}: {}",
        greeting.raw()
    );
    c.expect("EHLO other.test", 250);
    let reply = c.send_message(
        "someone@other.test",
        &["user@one.example"],
        &format!("Subject: {subject}\r\n\r\nhello\r\n"),
    );
    c.quit();
    reply
}

#[test]
fn idle_connections_from_one_address_do_not_shut_out_its_sender_group() {
    let sink = Sink::accepting();
    // Only the defaults: at most 10 connections per address in a 200-connection policy.
    let node = gateway(&sink, "", "");
    let mut idle = Vec::new();
    let mut greeted = 0;
    let mut refused = Vec::new();
    for _ in 0..210 {
        let (c, first) = open(&node, UNTRUSTED);
        match first.code {
            220 => greeted += 1,
            421 => refused.push(first.raw()),
            _ => panic!("unexpected first reply {}", first.raw()),
        }
        idle.push(c);
    }
    // The other sender of the same group gets in at once, while the 10 idle sessions
    // and the attacker's refused connections are still there.
    let reply = send_one(&node, OTHER, "past the slowloris");
    assert_eq!(reply.code, 250, "{}", reply.raw());
    let got = sink.wait_for_messages(1, WAIT);
    assert!(got[0].text().contains("past the slowloris"));
    assert_eq!((greeted, refused.len()), (10, 200));
    assert!(refused.iter().all(
        |r| r == "421 4.7.0 Too many concurrent connections from your address, try again later"
    ));

    let log = node.wait_for_log(
        "refused: concurrency limit 10 per address of policy ACCEPTED reached for 127.0.0.2",
        WAIT,
    );
    assert!(
        !log.contains("refused: concurrency limit 200 of policy ACCEPTED reached"),
        "the policy itself was never full"
    );
    drop(idle);
}

#[test]
fn the_per_address_limit_refuses_with_421_logs_and_frees_the_slot() {
    let sink = Sink::accepting();
    let node = gateway(&sink, "max_concurrency_per_ip = 3\n", "");
    let held: Vec<SmtpClient> = (0..3)
        .map(|_| {
            let (c, r) = open(&node, UNTRUSTED);
            assert_eq!(r.code, 220, "{}", r.raw());
            c
        })
        .collect();
    let (mut fourth, r) = open(&node, UNTRUSTED);
    assert_eq!(
        r.raw(),
        "421 4.7.0 Too many concurrent connections from your address, try again later"
    );
    // Refused means closed: nothing else is read on that connection.
    assert!(fourth.read_to_end().unwrap_or_default().is_empty());
    let log = node.wait_for_log(
        "refused: concurrency limit 3 per address of policy ACCEPTED reached for 127.0.0.2",
        WAIT,
    );
    assert_eq!(
        log_lines(&log, "per address of policy ACCEPTED").len(),
        1,
        "one log line per refusal"
    );

    // Another address of the group is not affected.
    assert_eq!(send_one(&node, OTHER, "other address").code, 250);

    // A session that ends gives its slot back.
    let mut held = held.into_iter();
    held.next().unwrap().quit();
    let mut again = None;
    crate::support::wait_until(
        WAIT,
        || {
            let (c, r) = open(&node, UNTRUSTED);
            (r.code == 220).then(|| again = Some(c))
        },
        || "a slot after one of the three sessions quit".into(),
    );
    let mut again = again.unwrap();
    again.expect("EHLO back.test", 250);
    let reply = again.send_message(
        "back@other.test",
        &["user@one.example"],
        "Subject: freed slot\r\n\r\nhello\r\n",
    );
    assert_eq!(reply.code, 250, "{}", reply.raw());
}

#[test]
fn the_connection_rate_per_address_is_limited() {
    let sink = Sink::accepting();
    let node = gateway(&sink, "max_connections_per_ip_per_minute = 4\n", "");
    for i in 0..4 {
        let (c, r) = open(&node, UNTRUSTED);
        assert_eq!(r.code, 220, "connection {i}: {}", r.raw());
        c.quit();
    }
    let (_c, r) = open(&node, UNTRUSTED);
    assert_eq!(
        r.raw(),
        "421 4.7.0 Too many connections from your address, try again later"
    );
    node.wait_for_log(
        "refused: connection rate limit 4 per minute per address of policy ACCEPTED reached for 127.0.0.2",
        WAIT,
    );
    // The rate is per address: the other sender of the group connects as usual.
    assert_eq!(send_one(&node, OTHER, "own rate").code, 250);
}

#[test]
fn idle_sessions_are_cut_sooner_while_the_policy_is_under_pressure() {
    let sink = Sink::accepting();
    // A 10-connection policy under pressure above 10%: above one open connection. The
    // normal command timeout (300 s) would keep every session below.
    let toml = crate::support::GatewayToml::new(&sink)
        .accept_all()
        .build()
        .replace(
            "max_concurrency = 200\n",
            "max_concurrency = 10\nmax_concurrency_per_ip = 10\n",
        );
    let node = Node::start(&format!(
        "{toml}\n[limits]\ncommand_timeout_under_pressure = 3\npressure_percent = 10\n"
    ));

    // An active sender, a NOOP every 200 ms: never idle for 3 s.
    let (mut active, r) = open(&node, OTHER);
    assert_eq!(r.code, 220, "{}", r.raw());
    active.expect("EHLO active.test", 250);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = active.command("NOOP");
                assert_eq!(r.code, 250, "the active session: {}", r.raw());
                thread::sleep(Duration::from_millis(200));
            }
            active
        })
    };
    // Seven silent sessions and one that trickles a byte every 200 ms without ever
    // finishing a command.
    let mut idle: Vec<SmtpClient> = (0..7)
        .map(|_| {
            let (c, r) = open(&node, UNTRUSTED);
            assert_eq!(r.code, 220, "{}", r.raw());
            c
        })
        .collect();
    let mut trickle = connect(node.addr(), Some(UNTRUSTED)).expect("connect the trickler");
    let mut greeting = [0u8; 64];
    let n = trickle.read(&mut greeting).expect("greeting");
    assert!(greeting[..n].starts_with(b"220 "));
    let trickler = {
        let mut w = trickle.try_clone().unwrap();
        thread::spawn(move || {
            for _ in 0..100 {
                if w.write_all(b"X").is_err() {
                    return true;
                }
                thread::sleep(Duration::from_millis(200));
            }
            false
        })
    };

    // Every idle session and the trickler get the timeout reply and are closed, while
    // the active one goes on.
    for (i, c) in idle.iter_mut().enumerate() {
        let r = c
            .read_reply()
            .unwrap_or_else(|e| panic!("idle session {i}: {e}"));
        assert_eq!(r.code, 421, "idle session {i}: {}", r.raw());
        assert!(r.raw().contains("command timeout exceeded"), "{}", r.raw());
    }
    trickle.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let _ = trickle.read_to_end(&mut rest);
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.starts_with("421 4.4.2 gw1.example.com Error: command timeout exceeded"),
        "the trickler got {text:?}"
    );
    assert!(
        trickler.join().unwrap(),
        "the trickler's connection was closed"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut active = pinger.join().expect("the active session kept getting 250");
    let reply = active.send_message(
        "active@other.test",
        &["user@one.example"],
        "Subject: still here\r\n\r\nhello\r\n",
    );
    assert_eq!(reply.code, 250, "{}", reply.raw());
    let log = node.wait_for_log("idle for 3 s while policy ACCEPTED is under pressure", WAIT);
    assert_eq!(
        log_lines(&log, "while policy ACCEPTED is under pressure").len(),
        8,
        "one line per cut session"
    );
}

#[test]
fn an_administrator_sets_the_per_address_limits_with_listenerconfig() {
    let sink = Sink::accepting();
    let node = gateway(&sink, "", "");
    let (ok, out) = pvo_try(
        &node,
        &[
            "listenerconfig",
            "policy",
            "ACCEPTED",
            "--max-concurrency-per-ip",
            "500",
        ],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("key policy[1].max_concurrency_per_ip: 500 is out of range; allowed: an integer from 1 to the policy's max_concurrency (200)"),
        "{out}"
    );
    let (ok, out) = pvo_try(
        &node,
        &[
            "listenerconfig",
            "policy",
            "$ACCEPTED",
            "--max-concurrency-per-ip",
            "2",
            "--max-connections-per-ip-per-minute",
            "100",
        ],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Policy $ACCEPTED: max_concurrency_per_ip = 2."),
        "{out}"
    );
    let (ok, out) = pvo_try(&node, &["commit", "-m", "two per address"]);
    assert!(ok, "{out}");

    let _held: Vec<SmtpClient> = (0..2)
        .map(|_| {
            let (c, r) = open(&node, UNTRUSTED);
            assert_eq!(r.code, 220, "{}", r.raw());
            c
        })
        .collect();
    let (_third, r) = open(&node, UNTRUSTED);
    assert_eq!(
        r.raw(),
        "421 4.7.0 Too many concurrent connections from your address, try again later"
    );
    node.wait_for_log(
        "refused: concurrency limit 2 per address of policy ACCEPTED reached for 127.0.0.2",
        WAIT,
    );
}
