//! Faults of the cluster's store, with real gateways and a private PostgreSQL: killed
//! under SMTP load (no member stops accepting or delivering mail; each says it is
//! disconnected, keeps its configuration, and reconnects when the store is back), and
//! gone in the middle of a join (nothing half-joined: the machine keeps its own
//! configuration and mail, the cluster does not list it, and the join can be retried).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::support::{
    cluster_gateway, cluster_status, json, pvo_bin, pvo_try, text, wait_connected, wait_until,
    HeldLock, Node, Postgres, Sink, SmtpClient, APPLIED, TRUSTED,
};

/// gw2 joins (both gateways listen on 127.0.0.1; the cluster knows gw2 by another address).
const JOIN: [&str; 8] = [
    "clusterconfig",
    "join",
    "--url",
    "URL",
    "--machine",
    "gw2",
    "--address",
    "127.0.0.2",
];

/// Mail through a debug build on two busy cores.
const DELIVERY: Duration = Duration::from_secs(120);

/// Sends `n` messages through `node` on one SMTP session; counts each 250 in `accepted`
/// and panics on any other reply.
fn send_many(
    node: &Node,
    tag: &str,
    n: usize,
    accepted: Arc<AtomicUsize>,
) -> thread::JoinHandle<()> {
    let addr = node.addr();
    let tag = tag.to_string();
    thread::spawn(move || {
        let mut c = SmtpClient::open(addr, Some(TRUSTED));
        c.expect("EHLO load.example", 250);
        for i in 0..n {
            let body = format!(
                "From: <a@load.example>\r\nTo: <b@one.example>\r\nSubject: {tag} {i}\r\n\r\nload {i}\r\n"
            );
            let r = c.send_message("a@load.example", &["b@one.example"], &body);
            assert_eq!(r.code, 250, "{tag} message {i}: {}", r.raw());
            accepted.fetch_add(1, Ordering::SeqCst);
        }
        c.quit();
    })
}

#[test]
fn postgresql_killed_under_load_stops_no_member_from_accepting_or_delivering() {
    let mut pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = cluster_gateway(&sink, "gw1");
    let gw2 = cluster_gateway(&sink, "gw2");
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "edge",
            "--url",
            &url,
            "--machine",
            "gw1",
        ],
    );
    text(
        &gw2,
        &JOIN.map(|a| if a == "URL" { url.as_str() } else { a }),
    );
    wait_connected(&gw2, true, APPLIED);

    const EACH: usize = 150;
    let accepted = Arc::new(AtomicUsize::new(0));
    let senders = [
        send_many(&gw1, "gw1", EACH, accepted.clone()),
        send_many(&gw2, "gw2", EACH, accepted.clone()),
    ];
    // Kill the store a third of the way in.
    wait_until(
        DELIVERY,
        || (accepted.load(Ordering::SeqCst) >= 2 * EACH / 3).then_some(()),
        || format!("only {} accepted", accepted.load(Ordering::SeqCst)),
    );
    pg.kill();
    for gw in [&gw1, &gw2] {
        wait_connected(gw, false, APPLIED);
    }
    for s in senders {
        s.join().expect("a sender saw a refusal");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 2 * EACH);
    let got = sink.wait_for_messages(2 * EACH, DELIVERY);
    assert_eq!(got.len(), 2 * EACH);
    // Each member says why, keeps its configuration, and refuses cluster-level changes.
    for gw in [&gw1, &gw2] {
        let st = cluster_status(gw);
        assert_eq!(st["connected"], false, "{st:#}");
        assert!(
            gw.mail_logs().contains("Cluster: machine "),
            "{}",
            gw.mail_logs()
        );
        text(gw, &["deliveryconfig", "--max-concurrency", "99"]);
        let (ok, said) = pvo_try(gw, &["commit", "-m", "while the store is gone"]);
        assert!(
            !ok && said.contains("disconnected from the cluster's store"),
            "{said}"
        );
        text(gw, &["clearchanges"]);
    }
    // Mail keeps flowing while the store is down, and after it is back.
    let more = Arc::new(AtomicUsize::new(0));
    send_many(&gw2, "down", 10, more.clone()).join().unwrap();
    pg.start_again();
    for gw in [&gw1, &gw2] {
        wait_connected(gw, true, Duration::from_secs(60));
    }
    send_many(&gw1, "back", 10, more.clone()).join().unwrap();
    sink.wait_for_messages(2 * EACH + 20, DELIVERY);
}

#[test]
fn postgresql_gone_in_the_middle_of_a_join_leaves_nothing_half_joined() {
    let mut pg = Postgres::start();
    let url = pg.url();
    let sink = Sink::accepting();
    let gw1 = cluster_gateway(&sink, "gw1");
    let gw2 = cluster_gateway(&sink, "gw2");
    text(
        &gw1,
        &[
            "clusterconfig",
            "create",
            "edge",
            "--url",
            &url,
            "--machine",
            "gw1",
        ],
    );
    let own = std::fs::read(gw2.config_path()).unwrap();

    // Hold the store's commit lock, so that the join stops inside its transaction.
    let lock = HeldLock::take(&url, pvo::adapters::cluster_db::LOCK_COMMIT);
    let join = Command::new(pvo_bin())
        .arg("--dir")
        .arg(gw2.data_dir())
        .args(JOIN.map(|a| if a == "URL" { url.as_str() } else { a }))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lock.wait_for_waiters(1, APPLIED);
    // The store goes away with the join's transaction open.
    pg.kill();
    drop(lock);
    let out = join.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("PostgreSQL"), "{said}");
    // Nothing changed on the machine: its own file, no membership, its mail flows.
    assert_eq!(std::fs::read(gw2.config_path()).unwrap(), own);
    assert_eq!(cluster_status(&gw2)["machine"], serde_json::Value::Null);
    let sent = Arc::new(AtomicUsize::new(0));
    send_many(&gw2, "alone", 5, sent.clone()).join().unwrap();
    sink.wait_for_messages(5, DELIVERY);

    // Nor in the cluster: once the store is back it lists gw1 alone; the join retried
    // goes through.
    pg.start_again();
    wait_connected(&gw1, true, Duration::from_secs(60));
    let list = json(&gw1, &["clusterconfig", "list"]);
    let machines: Vec<&str> = list["groups"][0]["machines"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(machines, ["gw1"], "{list:#}");
    let out = text(
        &gw2,
        &JOIN.map(|a| if a == "URL" { url.as_str() } else { a }),
    );
    assert!(out.contains("This machine (gw2) joined"), "{out}");
    send_many(&gw2, "joined", 5, sent).join().unwrap();
    sink.wait_for_messages(10, DELIVERY);
}
