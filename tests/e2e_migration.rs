//! End-to-end tests of the migration of a gateway's local quarantines to the manager
//! (`src/core/cpq/migrate.rs`): a real manager (`pvo manager run`, 127.0.0.2)
//! and a real gateway (`pvo gateway run`, 127.0.0.1) with mutual TLS, the gateway first in
//! local mode holding messages in its local Policy quarantine, then made central — by a
//! commit of the pending configuration (the running node applies it) or by a restart on a
//! rewritten `pvo.toml` — after which its held messages migrate to the manager in the
//! background while ordinary mail keeps flowing to its next hop (`tests/peers/sink.py`).
//!
//! What is checked at the end, every time: the manager holds exactly the messages the
//! gateway held (each original gateway MID once, quarantine Policy, the same scheduled
//! exit), the local store holds none, and the gateway logged each migration and the end.
//! Kill -9 of either node in the middle must not change that.
//!
//! Waits poll every half second and read small things (the gateway's
//! `cpq/migration.json`, command answers): the gateway's `mail_logs` grows to tens of
//! megabytes here, so it is read only once at the end.
//!
//! Needs `scripts/install-test-deps` (python3-aiosmtpd).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    free_port_on, json, log_lines, manager_toml, pvo_bin, run_with_timeout, text, wait_until,
    GatewayToml, Node, NodeDir, Sink, SmtpClient, INCOMING_POLICY, OUTGOING_POLICY,
    QUARANTINE_TEST_FILTER, TRUSTED,
};

const GW_IP: IpAddr = TRUSTED;
const MANAGER_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const COMMAND: Duration = Duration::from_secs(120);
/// Filling the local store, or migrating, on a debug build on two busy cores.
const LONG: Duration = Duration::from_secs(900);
/// What the content filter looks for in the subject (quarantined to Policy).
const TAG: &str = "[quarantine-test]";
const NOTIFY: &str = "quarantine-admin@example.com";

// ---------------------------------------------------------------------------------------
// A deployment
// ---------------------------------------------------------------------------------------

fn manager_config(cpq_port: u16) -> String {
    format!(
        "{}\n[logs]\nmax_size = 1099511627776\n",
        manager_toml("manager", cpq_port)
    )
}

/// Gateway gw1 in `mode` ("local" or "central"), the demo content filter in both mail
/// policies, everything routed to `sink`, `[cpq] notify` set. Logs never rotate (the
/// final checks read every line).
fn gateway_config(mode: &str, cpq_port: u16, manager_port: u16, sink: &Sink) -> String {
    GatewayToml::new(sink)
        .hostname("gw1.cpq.test")
        .address(GW_IP)
        .rat(&["example.com"])
        .quiet_bounces()
        .extra(&format!(
            r#"[logs]
max_size = 1099511627776

[cpq]
node_id = "gw1"
interface = "Loopback"
port = {cpq_port}
mode = "{mode}"
manager = "{MANAGER_IP}:{manager_port}"
notify = ["{NOTIFY}"]
"#
        ))
        .extra(QUARANTINE_TEST_FILTER)
        .extra(INCOMING_POLICY)
        .extra(OUTGOING_POLICY)
        .build()
}

struct Deployment {
    manager: Node,
    gateway: Node,
    sink: Sink,
    cpq_port: u16,
    manager_port: u16,
}

impl Deployment {
    /// The manager, and gw1 enrolled on it and started in local mode.
    fn start() -> Deployment {
        let manager_port = free_port_on(MANAGER_IP);
        let cpq_port = free_port_on(GW_IP);
        let sink = Sink::accepting();
        let mdir = NodeDir::new(&manager_config(manager_port));
        let gdir = NodeDir::new(&gateway_config("local", cpq_port, manager_port, &sink));
        let mut cmd = Command::new(pvo_bin());
        cmd.args(["manager", "enroll", "--config"])
            .arg(mdir.config_path())
            .arg("gw1")
            .args([
                "--address",
                &GW_IP.to_string(),
                "--port",
                &cpq_port.to_string(),
            ])
            .arg("--out")
            .arg(gdir.cpq_dir());
        let (status, out, err) = run_with_timeout(&mut cmd, COMMAND);
        assert!(status.success(), "enrolling gw1: {status}\n{out}\n{err}");
        let manager = mdir.start_manager();
        let gateway = gdir.start_gateway();
        Deployment {
            manager,
            gateway,
            sink,
            cpq_port,
            manager_port,
        }
    }

    fn config(&self, mode: &str) -> String {
        gateway_config(mode, self.cpq_port, self.manager_port, &self.sink)
    }

    /// Makes the running gateway central the way a configuration command does: the new
    /// text as the pending configuration, then `commit` (applied to the running node).
    fn commit_central(&self) {
        let pending = self.gateway.data_dir().join("config").join("pending.toml");
        std::fs::create_dir_all(pending.parent().unwrap()).unwrap();
        std::fs::write(&pending, self.config("central")).unwrap();
        let out = text(&self.gateway, &["commit", "-m", "centralize"]);
        assert!(
            self.gateway.config_path().exists()
                && std::fs::read_to_string(self.gateway.config_path())
                    .unwrap()
                    .contains("mode = \"central\""),
            "commit did not make the gateway central:\n{out}"
        );
    }

    /// Makes the gateway central by rewriting its `pvo.toml` and restarting it.
    fn restart_central(&mut self) {
        std::fs::write(self.gateway.config_path(), self.config("central")).unwrap();
        self.gateway.restart();
    }
}

// ---------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------

/// How many messages `node`'s store holds (counted up to 10,000).
fn held_count(node: &Node) -> u64 {
    json(node, &["quarantine", "search", "--limit", "1"])["total"]
        .as_u64()
        .expect("total")
}

/// Every held message: (gateway MID, quarantine names, scheduled exit per quarantine),
/// in pages of 10,000, so that a count above 10,000 shows as well.
fn held_messages(node: &Node) -> Vec<(u64, Vec<(String, u64)>)> {
    let mut out = Vec::new();
    for page in 0.. {
        let offset = (page * 10_000).to_string();
        let data = json(
            node,
            &[
                "quarantine",
                "search",
                "--limit",
                "10000",
                "--offset",
                &offset,
            ],
        );
        let msgs = data["messages"].as_array().expect("messages");
        for m in msgs {
            let mid = m["gateway_mid"].as_u64().expect("gateway_mid");
            let qs = m["quarantines"]
                .as_array()
                .expect("quarantines")
                .iter()
                .map(|q| {
                    (
                        q["name"].as_str().unwrap().to_string(),
                        q["exit_at"].as_u64().unwrap(),
                    )
                })
                .collect();
            out.push((mid, qs));
        }
        if msgs.len() < 10_000 {
            break;
        }
    }
    out
}

/// The gateway's `DATA_DIR/cpq/migration.json` (what `pvoconfig status` shows).
fn migration_state(gw: &Node) -> Option<Value> {
    let bytes = std::fs::read(gw.data_dir().join("cpq/migration.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn migrated_so_far(gw: &Node) -> u64 {
    migration_state(gw)
        .and_then(|v| v["migrated"].as_u64())
        .unwrap_or(0)
}

fn finished(gw: &Node) -> bool {
    migration_state(gw).is_some_and(|v| v["finished_at"].is_u64())
}

/// Polls `check` every half second (cheap checks only).
fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        thread::sleep(Duration::from_millis(500));
    }
}

// ---------------------------------------------------------------------------------------
// Mail
// ---------------------------------------------------------------------------------------

fn message(to: &str, subject: &str) -> String {
    format!(
        "From: <sender@example.org>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\r\nThe body of {subject}.\r\n"
    )
}

/// The MID in `250 2.0.0 Ok: Message N accepted`.
fn accepted_mid(reply: &str) -> u64 {
    reply
        .split_once("Message ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {reply}"))
}

/// Sends `total` tagged messages over `threads` connections at a time (sessions of up to
/// 500 messages, MAIL/RCPT/DATA pipelined); returns the gateway MIDs.
fn send_tagged(addr: SocketAddr, total: usize, threads: usize) -> BTreeSet<u64> {
    let per = total.div_ceil(threads);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let n = per.min(total.saturating_sub(t * per));
            thread::spawn(move || {
                let mut mids = Vec::new();
                let mut i = 0;
                while i < n {
                    let mut c = SmtpClient::open(addr, Some(TRUSTED));
                    c.expect("EHLO burst.cpq.test", 250);
                    for _ in 0..500.min(n - i) {
                        let subject = format!("{TAG} held {t}-{i}");
                        let body = message("bob@example.com", &subject);
                        c.write_raw(
                            b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\n",
                        )
                        .unwrap();
                        for code in [250, 250, 354] {
                            let r = c.read_reply().unwrap();
                            assert_eq!(r.code, code, "{subject}: {}", r.raw());
                        }
                        c.write_raw(format!("{body}.\r\n").as_bytes()).unwrap();
                        let r = c.read_reply().unwrap();
                        assert_eq!(r.code, 250, "{subject}: {}", r.raw());
                        mids.push(accepted_mid(&r.raw()));
                        i += 1;
                    }
                    c.quit();
                }
                mids
            })
        })
        .collect();
    let mut all = BTreeSet::new();
    for h in handles {
        for mid in h.join().expect("a sender thread failed") {
            assert!(all.insert(mid), "MID {mid} given twice");
        }
    }
    assert_eq!(all.len(), total);
    all
}

/// Ordinary mail sent one message at a time until stopped, each waited for at the sink:
/// returns (subject, seconds from 250 to the sink) per message.
struct Flow {
    stop: Arc<AtomicBool>,
    handle: thread::JoinHandle<Vec<(String, f64)>>,
}

impl Flow {
    fn start(addr: SocketAddr, sink_dir: std::path::PathBuf) -> Flow {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = thread::spawn(move || {
            let mut done = Vec::new();
            let mut n = 0;
            while !flag.load(Ordering::SeqCst) {
                n += 1;
                let subject = format!("ordinary mail {n}");
                let mut c = SmtpClient::open(addr, Some(TRUSTED));
                c.expect("EHLO flow.cpq.test", 250);
                let r = c.send_message(
                    "sender@example.org",
                    &["carol@example.com"],
                    &message("carol@example.com", &subject),
                );
                assert_eq!(r.code, 250, "{subject}: {}", r.raw());
                c.quit();
                let sent = Instant::now();
                wait_until(
                    Duration::from_secs(120),
                    || sink_has(&sink_dir, &subject).then_some(()),
                    || format!("{subject} never reached the sink during the migration"),
                );
                done.push((subject, sent.elapsed().as_secs_f64()));
                thread::sleep(Duration::from_millis(200));
            }
            done
        });
        Flow { stop, handle }
    }

    fn stop(self) -> Vec<(String, f64)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("the ordinary mail thread failed")
    }
}

/// Whether the sink stored a message with this exact subject (its newest files first).
fn sink_has(dir: &std::path::Path, subject: &str) -> bool {
    let needle = format!("Subject: {subject}\r\n");
    let Ok(rd) = std::fs::read_dir(dir.join("new")) else {
        return false;
    };
    let mut files: Vec<_> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort();
    files
        .iter()
        .rev()
        .take(50)
        .any(|(_, p)| std::fs::read(p).is_ok_and(|b| String::from_utf8_lossy(&b).contains(&needle)))
}

// ---------------------------------------------------------------------------------------
// The checks every test ends with
// ---------------------------------------------------------------------------------------

/// The manager holds exactly `sent` (each once, from gw1's MIDs), in Policy, with the
/// scheduled exits the gateway had (`exits`); the local store holds nothing.
fn check_all_on_manager(d: &Deployment, sent: &BTreeSet<u64>, exits: &BTreeMap<u64, u64>) {
    let on_manager = held_messages(&d.manager);
    let mut per_mid: BTreeMap<u64, usize> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (mid, qs) in &on_manager {
        *per_mid.entry(*mid).or_default() += 1;
        let want = exits.get(mid).copied();
        if qs.len() != 1 || qs[0].0 != "Policy" || Some(qs[0].1) != want {
            wrong.push((*mid, qs.clone(), want));
        }
    }
    let twice: Vec<_> = per_mid.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "held more than once on the manager: {twice:?}"
    );
    let got: BTreeSet<u64> = per_mid.keys().copied().collect();
    let missing: Vec<_> = sent.difference(&got).take(10).collect();
    let extra: Vec<_> = got.difference(sent).take(10).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} held on the manager, {} sent; missing {missing:?}, unexpected {extra:?}",
        on_manager.len(),
        sent.len()
    );
    assert!(
        wrong.is_empty(),
        "{} messages not in Policy with their local exit, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert_eq!(on_manager.len(), sent.len());
    let local = held_count(&d.gateway);
    assert_eq!(local, 0, "the local store still holds {local} messages");
}

/// Waits until the gateway's local store holds `n` messages; returns each one's
/// scheduled exit in Policy by MID.
fn wait_held_locally(gw: &Node, n: u64) -> BTreeMap<u64, u64> {
    poll(
        LONG,
        || (held_count(gw) >= n).then_some(()),
        &format!("{n} messages held in the local quarantines"),
    );
    let held = held_messages(gw);
    assert_eq!(held.len() as u64, n);
    held.into_iter()
        .map(|(mid, qs)| {
            assert_eq!(qs.len(), 1, "MID {mid}: {qs:?}");
            assert_eq!(qs[0].0, "Policy");
            (mid, qs[0].1)
        })
        .collect()
}

fn log_summary(what: &str, started: Instant) {
    let _ = writeln!(
        std::io::stderr(),
        "{what} after {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// 10,000 held local messages migrate after a commit makes the running gateway central,
/// none lost or doubled, while ordinary mail keeps reaching the next hop; the
/// administrator is mailed when it is done.
#[test]
fn ten_thousand_held_messages_migrate_while_mail_flows() {
    const TOTAL: usize = 10_000;
    let started = Instant::now();
    let d = Deployment::start();
    let sent = send_tagged(d.gateway.addr(), TOTAL, 8);
    log_summary("migration: 10,000 messages accepted", started);
    let exits = wait_held_locally(&d.gateway, TOTAL as u64);
    log_summary("migration: 10,000 messages held locally", started);

    let flow = Flow::start(d.gateway.addr(), d.sink.dir.clone());
    let t0 = Instant::now();
    d.commit_central();
    poll(
        LONG,
        || finished(&d.gateway).then_some(()),
        "the migration to finish",
    );
    let took = t0.elapsed();
    let flowed = flow.stop();
    log_summary("migration: finished", started);

    check_all_on_manager(&d, &sent, &exits);

    // Ordinary mail went through during the migration, and promptly.
    assert!(
        flowed.len() >= 3,
        "only {} ordinary messages went through during a {took:?} migration",
        flowed.len()
    );
    let slowest = flowed.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    assert!(
        slowest < 30.0,
        "ordinary mail took up to {slowest:.1} s during the migration: {flowed:?}"
    );

    // The gateway's story: one line per message, the end, the notification.
    let glog = d.gateway.mail_logs();
    let migrating = log_lines(
        &glog,
        "migrating from quarantine \"Policy\" to the Centralized Policy Quarantine as MID ",
    );
    assert_eq!(migrating.len(), TOTAL);
    let mut seen = BTreeSet::new();
    for l in &migrating {
        let mid: u64 = l
            .split("MID ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no MID in {l}"));
        assert!(seen.insert(mid), "MID {mid} migrated twice: {l}");
        assert!(l.contains(" (transfer gw1-migrate-"), "{l}");
    }
    assert_eq!(&seen, &sent);
    assert_eq!(
        log_lines(
            &glog,
            "Migration of local quarantines to the manager finished: 10000 messages"
        )
        .len(),
        1
    );
    let state = migration_state(&d.gateway).unwrap();
    assert_eq!(state["migrated"], TOTAL as u64, "{state:#}");
    assert_eq!(state["total"], TOTAL as u64, "{state:#}");
    assert!(state["last_error"].is_null(), "{state:#}");
    // `pvoconfig status` shows it, with a bar.
    let status = text(&d.gateway, &["pvoconfig", "status"]);
    assert!(
        status.contains(&format!(
            "Migration of local quarantines: [{}] 100% ({TOTAL} of {TOTAL}), done",
            "#".repeat(30)
        )),
        "{status}"
    );
    let st = json(&d.gateway, &["pvoconfig", "status"]);
    assert_eq!(st["migration"]["migrated"], TOTAL as u64, "{st:#}");

    let note = poll(
        Duration::from_secs(120),
        || {
            d.sink
                .messages()
                .into_iter()
                .find(|m| m.rcpt_to.iter().any(|r| r == NOTIFY))
        },
        "the notification at the sink",
    );
    let subject = note.header("Subject").unwrap_or_default();
    assert!(
        subject.contains("migration to the manager finished: gw1, 10000 messages"),
        "{subject}"
    );
    assert!(
        note.text().contains("Messages migrated: 10000"),
        "{}",
        note.text()
    );
    assert_eq!(
        note.mail_from, "",
        "a notification comes from the null sender"
    );
    let mlog = d.manager.mail_logs();
    let _ = writeln!(
        std::io::stderr(),
        "migration: {TOTAL} messages in {took:?} ({:.0}/s), {} ordinary messages meanwhile \
         (slowest {slowest:.1} s), {} repeats answered by the manager; whole test {:?}",
        TOTAL as f64 / took.as_secs_f64(),
        flowed.len(),
        log_lines(&mlog, " already stored as MID ").len(),
        started.elapsed()
    );
}

/// kill -9 of the gateway in the middle of the migration: the restarted gateway resumes
/// (same start, count carried on) and the manager ends with each message once.
#[test]
fn kill_9_gateway_during_migration_resumes_without_loss_or_duplicates() {
    const TOTAL: usize = 10_000;
    let started = Instant::now();
    let mut d = Deployment::start();
    let sent = send_tagged(d.gateway.addr(), TOTAL, 8);
    let exits = wait_held_locally(&d.gateway, TOTAL as u64);

    d.restart_central();
    poll(
        LONG,
        || (migrated_so_far(&d.gateway) >= 2_000).then_some(()),
        "2,000 messages migrated",
    );
    d.gateway.kill9();
    let at_kill = migration_state(&d.gateway).unwrap();
    assert!(
        at_kill["finished_at"].is_null(),
        "the migration finished before the kill; nothing was tested: {at_kill:#}"
    );
    let started_at = at_kill["started_at"].as_u64().unwrap();
    d.gateway.restart();
    poll(
        LONG,
        || finished(&d.gateway).then_some(()),
        "the migration to finish after the restart",
    );
    check_all_on_manager(&d, &sent, &exits);

    let state = migration_state(&d.gateway).unwrap();
    assert_eq!(
        state["started_at"], started_at,
        "resumed, not restarted: {state:#}"
    );
    assert_eq!(state["migrated"], TOTAL as u64, "{state:#}");
    let glog = d.gateway.mail_logs();
    let resumed = log_lines(
        &glog,
        "Migration of local quarantines to the manager resumed: ",
    );
    assert_eq!(
        resumed.len(),
        1,
        "{}",
        log_lines(&glog, "Migration of local quarantines").join("\n")
    );
    // Where it stopped: at least what was counted at the kill (a batch marked after the
    // last progress note counts too), nothing handed over twice.
    let done: u64 = resumed[0]
        .split("resumed: ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let at_kill_migrated = at_kill["migrated"].as_u64().unwrap();
    assert!(
        done >= at_kill_migrated && done < TOTAL as u64,
        "resumed at {done}, killed at {at_kill_migrated}: {}",
        resumed[0]
    );
    assert!(
        resumed[0].ends_with(&format!(" of {TOTAL} messages migrated")),
        "{}",
        resumed[0]
    );
    assert_eq!(
        log_lines(&glog, " to the Centralized Policy Quarantine as MID ").len(),
        TOTAL,
        "a message was handed over twice"
    );
    assert_eq!(
        log_lines(
            &glog,
            &format!("Migration of local quarantines to the manager finished: {TOTAL} messages")
        )
        .len(),
        1
    );
    let mlog = d.manager.mail_logs();
    let _ = writeln!(
        std::io::stderr(),
        "migration, gateway killed after {} of {TOTAL}: {} migration lines, {} repeats \
         answered by the manager, whole test {:?}",
        at_kill["migrated"],
        log_lines(&glog, " to the Centralized Policy Quarantine as MID ").len(),
        log_lines(&mlog, " already stored as MID ").len(),
        started.elapsed()
    );
}

/// kill -9 of the manager in the middle of the migration: the copies wait in the
/// gateway's queue, go when the manager is back, and are stored once each.
#[test]
fn kill_9_manager_during_migration_loses_and_doubles_nothing() {
    const TOTAL: usize = 10_000;
    let started = Instant::now();
    let mut d = Deployment::start();
    let sent = send_tagged(d.gateway.addr(), TOTAL, 8);
    let exits = wait_held_locally(&d.gateway, TOTAL as u64);

    d.restart_central();
    let quarantined = |log: &str| log_lines(log, " quarantined to \"Policy\"").len();
    poll(
        LONG,
        || (quarantined(&d.manager.mail_logs()) >= 2_000).then_some(()),
        "2,000 messages on the manager",
    );
    let before_kill = d.gateway.log_mark();
    d.manager.kill9();
    let at_kill = quarantined(&d.manager.mail_logs());
    assert!(
        !finished(&d.gateway) && at_kill < TOTAL,
        "the migration finished before the kill; nothing was tested"
    );
    // The manager stays down until a transfer has failed on the gateway.
    d.gateway.wait_for_log_after(before_kill, "Delayed: ", LONG);
    d.manager.restart();
    // The gateway retries on its own (5 s doubling to 60 s); `delivernow` makes it soon.
    let mut kicked = Instant::now();
    poll(
        LONG,
        || {
            if kicked.elapsed() >= Duration::from_secs(5) {
                text(&d.gateway, &["delivernow", "the.cpq.host"]);
                kicked = Instant::now();
            }
            finished(&d.gateway).then_some(())
        },
        "the migration to finish after the manager's restart",
    );
    check_all_on_manager(&d, &sent, &exits);
    let glog = d.gateway.mail_logs();
    assert!(
        log_lines(&glog, "Bounced").is_empty(),
        "a migrated message bounced"
    );
    let deferred = log_lines(&glog, "Delayed: ").len();
    assert!(
        deferred > 0,
        "no transfer failed at the kill; nothing was tested"
    );
    let mlog = d.manager.mail_logs();
    let _ = writeln!(
        std::io::stderr(),
        "migration, manager killed after {at_kill} of {TOTAL}: {deferred} deferred, {} repeats \
         answered from the store, whole test {:?}",
        log_lines(&mlog, " already stored as MID ").len(),
        started.elapsed()
    );
}
