//! Tests of the test helpers themselves, where a flaw makes other tests flaky rather
//! than wrong: log waits after a restart and across rotations, and ports named before
//! the program that binds them starts.
//!
//! - A restarted node's [`Node::wait_for_log`] must not match a line of its earlier run
//!   (it did: it read the whole `mail_logs`, so a line from before the restart satisfied
//!   a wait meant for the new run, and the test went on before the new run had logged).
//! - [`Node::wait_for_log_after`] sees only lines after a [`LogMark`], also when
//!   `mail_logs` rotates by size in between.
//! - [`web_addr`] of a restarted node is the new run's address, not the first run's.
//! - Two hundred threads that each take a [`free_port`] and bind it a moment later, while
//!   others bind port 0 as nodes and sinks do, never collide (the old bind-0-and-release
//!   port went back to the kernel, which handed it out again).

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use crate::support::{
    free_port, free_port_on, free_port_on_all, https, log_lines, strip_log_prefix, web_addr,
    GatewayToml, Node, Sink, SmtpClient, TRUSTED, UNTRUSTED,
};

const DELIVERY: Duration = Duration::from_secs(60);

/// Sends one message from 127.0.0.1; returns its MID (from `250 … Message N accepted`).
fn send(node: &Node, subject: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let body = format!(
        "From: <alice@example.org>\r\nTo: <bob@one.example>\r\nSubject: {subject}\r\n\
         Message-ID: <{subject}@client.test>\r\n\r\n{subject}\r\n"
    );
    let r = c.send_message("alice@example.org", &["bob@one.example"], &body);
    assert_eq!(r.code, 250, "{}", r.raw());
    c.quit();
    let text = r.lines.last().cloned().unwrap_or_default();
    text.split_once("Message ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {}", r.raw()))
}

fn finished(mid: u64) -> String {
    format!("Message finished MID {mid} done")
}

#[test]
fn a_wait_after_a_restart_does_not_match_a_line_of_the_run_before() {
    let sink = Sink::accepting();
    let mut node = Node::start(&GatewayToml::new(&sink).build());
    let before = send(&node, "before-restart");
    node.wait_for_log(&finished(before), DELIVERY);

    for how in ["SIGTERM", "kill -9"] {
        if how == "kill -9" {
            node.kill9();
        }
        node.restart();
        let after = send(&node, &format!("after-{}", how.replace(' ', "")));
        // "Message finished MID" is in the log of the run before: only this run's line may
        // end the wait, and what it returns is this run's log.
        let log = node.wait_for_log("Message finished MID", DELIVERY);
        assert!(
            log.contains(&finished(after)),
            "after {how}, the wait ended before this run delivered MID {after}:\n{log}"
        );
        assert!(
            !log.contains(&finished(before)),
            "after {how}, the wait returned a line of an earlier run:\n{log}"
        );
        assert!(
            node.mail_logs().contains(&finished(before)),
            "mail_logs keeps earlier runs (else this tests nothing)"
        );
    }
}

#[test]
fn a_wait_after_a_mark_sees_only_later_lines_also_across_log_rotations() {
    let sink = Sink::accepting();
    // The smallest rotation size: each message's lines fill a good part of a file, so
    // the mark's file is rotated to mail_logs.N while the test waits.
    let mut node = Node::start(
        &GatewayToml::new(&sink)
            .extra("[logs]\nmax_size = 4096\nkeep = 1000\n")
            .build(),
    );
    let old: Vec<u64> = (0..3).map(|i| send(&node, &format!("old-{i}"))).collect();
    node.wait_for_log(&finished(old[2]), DELIVERY);

    // Within one run: a mark, then messages; the wait sees each once, none before.
    let mark = node.log_mark();
    let new: Vec<u64> = (0..20).map(|i| send(&node, &format!("new-{i}"))).collect();
    let log = node.wait_for_log_matching_after(
        mark,
        DELIVERY,
        |log| new.iter().all(|m| log.contains(&finished(*m))),
        "every new message finished",
    );
    assert!(
        log.len() > 2 * 4096,
        "the lines after the mark fill less than two rotations; nothing was tested"
    );
    let dir = node.data_dir().join("logs");
    assert!(
        dir.join("mail_logs.2").exists(),
        "mail_logs did not rotate twice; nothing was tested"
    );
    for m in &new {
        assert_eq!(log_lines(&log, &finished(*m)).len(), 1, "MID {m}:\n{log}");
    }
    for m in &old {
        assert!(
            !log.contains(&format!("MID {m} ")),
            "MID {m} is before the mark:\n{log}"
        );
    }
    assert!(
        log.lines().all(|l| strip_log_prefix(l).is_some()),
        "a line cut at the mark or at a rotation:\n{log}"
    );

    // After a restart, the default wait starts at the restart, across rotations too.
    node.restart();
    let again = send(&node, "after-restart");
    let log = node.wait_for_log(&finished(again), DELIVERY);
    for m in old.iter().chain(&new) {
        assert!(
            !log.contains(&format!("MID {m} ")),
            "MID {m} is of the earlier run:\n{log}"
        );
    }
    assert_eq!(log, node.log_since(node.start_mark()));
}

#[test]
fn web_addr_after_a_restart_is_the_new_runs_address() {
    let sink = Sink::accepting();
    // `[web] port = 0`: each run gets a new port; stdout keeps the earlier runs' lines.
    let mut node = Node::start(&GatewayToml::new(&sink).web().build());
    web_addr(&node);
    node.restart();
    let second = web_addr(&node);
    let (code, body) = https(second, "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    // The old helper returned the first run's address; the kernel may hand that port out
    // again by chance, so that is not asserted, only that the address answers.
}

#[test]
fn two_hundred_parallel_free_port_users_do_not_collide() {
    const USERS: usize = 200;
    let barrier = Arc::new(Barrier::new(USERS));
    let users: Vec<_> = (0..USERS)
        .map(|i| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                // Like a test that names a port in a configuration, then starts the node.
                let port = match i % 3 {
                    0 => free_port(),
                    1 => free_port_on(UNTRUSTED),
                    _ => free_port_on_all(&[TRUSTED, UNTRUSTED]),
                };
                let ip = if i % 3 == 1 { UNTRUSTED } else { TRUSTED };
                // Meanwhile other programs bind port 0 (nodes, sinks) ...
                let other = TcpListener::bind((ip, 0)).expect("bind port 0");
                barrier.wait();
                // ... and then each program binds the port it was told.
                let bound = TcpListener::bind((ip, port));
                // Hold everything until every user has bound, as running programs do.
                barrier.wait();
                drop(other);
                (ip, port, bound.map(|_| ()).map_err(|e| e.to_string()))
            })
        })
        .collect();
    let results: Vec<_> = users.into_iter().map(|u| u.join().unwrap()).collect();
    let failed: Vec<_> = results.iter().filter(|(_, _, r)| r.is_err()).collect();
    assert!(failed.is_empty(), "binds of free ports failed: {failed:?}");
    let distinct: BTreeSet<(std::net::IpAddr, u16)> =
        results.iter().map(|(ip, port, _)| (*ip, *port)).collect();
    assert_eq!(distinct.len(), USERS, "a port was handed out twice");
}

/// The kernel's ephemeral port range, from which `bind(…:0)` and outgoing connections
/// take their ports.
fn ephemeral_range() -> std::ops::RangeInclusive<u16> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse::<u16>().unwrap());
    it.next().unwrap()..=it.next().unwrap()
}

#[test]
fn a_sink_restarts_on_a_port_no_bind_to_port_0_can_take_meanwhile() {
    let mut sink = Sink::accepting();
    let port = sink.port;
    // A port from the ephemeral range goes back to the kernel when the sink stops, and
    // the next `port = 0` bind or outgoing connection may get it before the restart.
    assert!(
        !ephemeral_range().contains(&port),
        "the sink's port {port} is in the ephemeral range {:?}",
        ephemeral_range()
    );
    sink.stop();
    let squatters: Vec<TcpListener> = (0..200)
        .map(|_| TcpListener::bind((TRUSTED, 0)).expect("bind port 0"))
        .collect();
    assert!(squatters
        .iter()
        .all(|l| l.local_addr().unwrap().port() != port));
    sink.restart(Default::default());
    assert_eq!(sink.port, port);
    SmtpClient::open(sink.addr(), Some(TRUSTED)).quit();
}
