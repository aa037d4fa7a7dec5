//! Durability end-to-end tests: what happens to a
//! message when the disk or the process fails under a real `pvo gateway run`.
//!
//! The promise under test is the one in ARCHITECTURE.md: `250` after DATA only once the
//! message is fsynced, and after that the message is delivered whatever happens, at least
//! once; anything that answered 4xx stays the client's responsibility. The faults are real:
//!
//! - fsync failures are injected with libfiu's POSIX preload module (`fiu-run -x`), switched
//!   on and off at run time through its control fifo (`fiu-ctrl`);
//! - a full disk is a small tmpfs holding the node's whole data directory;
//! - crashes are `kill -9`; damaged spool files are cut or overwritten by the test.
//!
//! The next hop is `tests/peers/sink.py` (aiosmtpd); its fault files make it answer 451 at
//! DATA so that accepted mail stays in the spool until the test lets it go, and its delay
//! keeps deliveries in flight for a kill.
//!
//! Needs root (the tmpfs mounts) and `scripts/install-test-deps` (fiu-utils, libfiu0,
//! python3-aiosmtpd).

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    accepted_mid, parse_listening_line, pvo_bin, run_with_timeout, wait_until, Listeners, Node,
    Reply, Sink, SinkOptions, SmtpClient, Tmpfs, TRUSTED,
};

/// Long enough for a debug build on two busy cores; waits end as soon as the event comes.
const DELIVERY: Duration = Duration::from_secs(90);

const FROM: &str = "sender@example.org";
const TO: &str = "user@example.com";
/// The only listener of the configurations here.
const LISTENER: &str = "IncomingMail";

// ---------------------------------------------------------------------------------------
// Configuration and messages
// ---------------------------------------------------------------------------------------

/// A node that relays for 127.0.0.1, sends `example.com` to `sink` with at most
/// `concurrency` deliveries at once, and retries every second (so a test that switches the
/// sink back to accepting does not wait for a backoff), practically forever.
fn config(data_dir: &str, sink: &Sink, concurrency: u32) -> String {
    format!(
        r#"[node]
hostname = "gw1.example.com"
data_dir = "{data_dir}"

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
name = "{LISTENER}"
interface = "Loopback"
port = 0
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

[[smtp_route]]
domain = "example.com"
hosts = ["{sink}"]

[[destination]]
domain = "example.com"
max_concurrency = {concurrency}
tls = "off"

[delivery]
default_interface = "Auto"
max_concurrency = {concurrency}
max_messages_per_connection = 50

[delivery.bounce]
initial_retry = 1
max_retry = 1
max_queue_lifetime = 259200
max_retries = 10000
send_dsn = false
"#,
        sink = sink.host_port(),
    )
}

/// A message of about `size` bytes: headers naming `subject`, padding lines, and a last
/// line that shows whether a delivered copy is whole. No line starts with a dot.
fn message(subject: &str, size: usize) -> String {
    let mut text = format!(
        "From: <{FROM}>\r\nTo: <{TO}>\r\nSubject: {subject}\r\n\
         Message-ID: <{}@durability.test>\r\n\r\n",
        subject.replace(' ', "-")
    );
    let mut line = 0;
    while text.len() + 80 < size {
        // 5 + 1 + 72 + 2 = 80 bytes.
        text.push_str(&format!("{line:05} {}\r\n", "durable ".repeat(9)));
        line += 1;
    }
    text.push_str(&format!("End of {subject}.\r\n"));
    text
}

/// What the test sent, by Subject: the message as sent, and its MID once accepted.
#[derive(Default)]
struct Sent {
    bodies: BTreeMap<String, String>,
    mids: BTreeMap<String, u64>,
}

impl Sent {
    /// Sends one message of about `size` bytes on `client` and returns the reply to the
    /// final dot; remembers the MID if it was accepted.
    fn send(&mut self, client: &mut SmtpClient, subject: &str, size: usize) -> Reply {
        let body = message(subject, size);
        let reply = client.send_message(FROM, &[TO], &body);
        self.bodies.insert(subject.to_string(), body);
        if reply.code == 250 {
            self.mids.insert(subject.to_string(), accepted_mid(&reply));
        }
        reply
    }

    /// Sends one message and panics unless it gets 250.
    fn accept(&mut self, client: &mut SmtpClient, subject: &str, size: usize) -> u64 {
        let reply = self.send(client, subject, size);
        assert_eq!(reply.code, 250, "{subject:?} got {}", reply.raw());
        self.mids[subject]
    }

    fn subject_of_mid(&self, mid: u64) -> Option<&str> {
        self.mids
            .iter()
            .find(|(_, m)| **m == mid)
            .map(|(s, _)| s.as_str())
    }
}

/// Opens a session from the trusted address and says EHLO.
fn client(addr: SocketAddr) -> SmtpClient {
    let mut c = SmtpClient::open(addr, Some(TRUSTED));
    c.expect("EHLO client.durability.test", 250);
    c
}

/// The messages at the sink counted by Subject. Panics on a message the test did not send
/// or one that is not exactly what was sent (the gateway only prepends its Received
/// header).
fn arrivals(sink: &Sink, sent: &Sent) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in sink.messages() {
        let subject = m.header("Subject").unwrap_or_default();
        let body = sent
            .bodies
            .get(&subject)
            .unwrap_or_else(|| panic!("the sink has a message the test never sent: {m:#?}"));
        assert!(
            m.data.ends_with(body.as_bytes()),
            "{subject:?} arrived damaged or cut short ({} bytes, sent {}): {}",
            m.data.len(),
            body.len(),
            m.path.display()
        );
        *counts.entry(subject).or_insert(0) += 1;
    }
    counts
}

/// Waits until every one of `subjects` has arrived at least once; returns the counts.
fn wait_for_arrivals<'a>(
    sink: &Sink,
    sent: &Sent,
    subjects: impl IntoIterator<Item = &'a str>,
    timeout: Duration,
) -> BTreeMap<String, usize> {
    let want: BTreeSet<&str> = subjects.into_iter().collect();
    wait_until(
        timeout,
        || {
            let counts = arrivals(sink, sent);
            want.iter()
                .all(|s| counts.contains_key(*s))
                .then_some(counts)
        },
        || {
            let counts = arrivals(sink, sent);
            let missing: Vec<&&str> = want.iter().filter(|s| !counts.contains_key(**s)).collect();
            format!(
                "{} of {} messages never arrived, first {:?}; sink events: {:?}",
                missing.len(),
                want.len(),
                &missing[..missing.len().min(10)],
                sink.events().iter().rev().take(5).collect::<Vec<_>>()
            )
        },
    )
}

// ---------------------------------------------------------------------------------------
// mail_logs
// ---------------------------------------------------------------------------------------

/// The part of `log` from byte `from` on: what one run of the node wrote, if `from` is
/// the length of the log before that run started (start-up logs its recovery before its
/// `starting on` line, so that line cannot mark the start).
fn run_log(log: &str, from: usize) -> &str {
    log.get(from..).unwrap_or("")
}

/// `kill -9` (if still running) and a restart on the same data; returns where the new
/// run's part of mail_logs begins.
fn kill9_and_restart(node: &mut Node) -> usize {
    node.kill9();
    let from = node.mail_logs().len();
    node.restart();
    from
}

/// The MIDs of the lines of `log` that contain `needle` (`… MID n …`).
fn mids_on(log: &str, needle: &str) -> BTreeSet<u64> {
    log.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| {
            let rest = &l[l.find(" MID ")? + " MID ".len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

/// Waits until the run whose log starts at `from` has logged its listener, so that
/// everything start-up logs (recovery, files moved aside) is in the file; returns that
/// run's log so far.
fn startup_log(node: &Node, from: usize) -> String {
    let needle = format!("Listener {LISTENER} listening on");
    let log = node.wait_for_log_matching(
        DELIVERY,
        |log| run_log(log, from).contains(&needle),
        &needle,
    );
    run_log(&log, from).to_string()
}

/// `N` of `Recovered N messages from the spool` in `run`, 0 without that line.
fn recovered(run: &str) -> usize {
    run.lines()
        .find_map(|l| {
            let rest = &l[l.find("Recovered ")? + "Recovered ".len()..];
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Waits until every delivery the run whose log starts at `from` started has finished, so
/// that nothing is still on its way to the sink. Call it after waiting for the expected
/// arrivals: before the first delivery starts, there is trivially nothing to wait for.
fn wait_for_quiet_queue(node: &Node, from: usize) {
    node.wait_for_log_matching(
        DELIVERY,
        |log| {
            let run = run_log(log, from);
            mids_on(run, "Delivery start ").is_subset(&mids_on(run, "Message finished "))
        },
        "every delivery of this run finished",
    );
}

// ---------------------------------------------------------------------------------------
// Spool files
// ---------------------------------------------------------------------------------------

/// The spool's segment header, then records with a 24-byte header (crates/pvo-spool).
const SEGMENT_HEADER_LEN: usize = 40;
const RECORD_HEADER_LEN: usize = 24;
const RECORD_MESSAGE: u8 = 1;

/// One record of a segment file, as far as these tests need it.
#[derive(Debug)]
struct Record {
    off: usize,
    kind: u8,
    payload_len: usize,
    mid: u64,
}

impl Record {
    fn end(&self) -> usize {
        self.off + RECORD_HEADER_LEN + self.payload_len
    }
}

/// The whole records of segment `bytes`, in file order.
fn records(bytes: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut off = SEGMENT_HEADER_LEN;
    while off + RECORD_HEADER_LEN <= bytes.len() {
        let h = &bytes[off..off + RECORD_HEADER_LEN];
        let rec = Record {
            off,
            kind: h[1],
            payload_len: u32::from_le_bytes(h[4..8].try_into().unwrap()) as usize,
            mid: u64::from_le_bytes(h[8..16].try_into().unwrap()),
        };
        if rec.end() > bytes.len() {
            break;
        }
        off = rec.end();
        out.push(rec);
    }
    out
}

/// The segment file with the highest sequence number in `spool`.
fn newest_segment(spool: &Path) -> PathBuf {
    fs::read_dir(spool)
        .unwrap_or_else(|e| panic!("read {}: {e}", spool.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".log")
        })
        .max()
        .unwrap_or_else(|| panic!("no segment in {}", spool.display()))
}

/// The files in `spool/corrupt/`, by name.
fn corrupt_files(spool: &Path) -> BTreeMap<String, Vec<u8>> {
    let dir = spool.join("corrupt");
    match fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let bytes = fs::read(e.path()).expect("read corrupt file");
                (name, bytes)
            })
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// Sends `count` messages (`"{prefix} {i}"`, about 2 KB each) that the sink refuses, then
/// kills the node with `kill -9`; returns the newest segment's path, bytes and records.
/// Each message is one record, in the order sent: the sink's 451 leaves no progress
/// records behind.
fn queue_then_kill(
    node: &mut Node,
    sent: &mut Sent,
    prefix: &str,
    count: usize,
) -> (PathBuf, Vec<u8>, Vec<Record>) {
    let mut c = client(node.addr());
    let mids: Vec<u64> = (0..count)
        .map(|i| sent.accept(&mut c, &format!("{prefix} {i}"), 2000))
        .collect();
    c.quit();
    node.kill9();
    let segment = newest_segment(&node.data_dir().join("spool"));
    let bytes = fs::read(&segment).expect("read segment");
    let recs = records(&bytes);
    assert_eq!(
        recs.iter().map(|r| (r.kind, r.mid)).collect::<Vec<_>>(),
        mids.iter()
            .map(|m| (RECORD_MESSAGE, *m))
            .collect::<Vec<_>>(),
        "{} should hold exactly one message record per accepted message",
        segment.display()
    );
    assert_eq!(
        recs.last().map(Record::end),
        Some(bytes.len()),
        "trailing bytes"
    );
    (segment, bytes, recs)
}

// ---------------------------------------------------------------------------------------
// A node under libfiu
// ---------------------------------------------------------------------------------------

/// libfiu's POSIX preload module (Debian `libfiu0`), which `fiu-run -x` preloads.
const FIU_POSIX_PRELOAD: &str = "/usr/lib/fiu/fiu_posix_preload.so";
/// The failure points of `fdatasync(2)` (the spool's `File::sync_data`) and `fsync(2)`
/// (directory syncs and `File::sync_all`).
const FIU_SYNC_POINTS: [&str; 2] = ["posix/io/sync/fdatasync", "posix/io/sync/fsync"];
const EIO: i32 = 5;
const ENOSPC: i32 = 28;

/// `pvo gateway run` started through `fiu-run -x`, so that libfiu can make its system calls
/// fail, with a control fifo (`-f`) through which `fiu-ctrl` switches failure points on
/// and off while it runs. fiu-run execs the program, so the child's pid is the node's and
/// its stdout carries the node's `Listener NAME listening on` lines.
struct FiuNode {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    addr: SocketAddr,
}

impl FiuNode {
    /// Writes `config_toml` (which should use `data_dir = "."`) and starts the node with
    /// no failure point enabled; returns once its listener accepts connections.
    fn start(config_toml: &str) -> FiuNode {
        for path in ["/usr/bin/fiu-run", "/usr/bin/fiu-ctrl", FIU_POSIX_PRELOAD] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: run scripts/install-test-deps"
            );
        }
        // A renamed failure point would be enabled without complaint and never fire.
        let module = fs::read(FIU_POSIX_PRELOAD).expect("read the libfiu POSIX module");
        for point in FIU_SYNC_POINTS {
            assert!(
                module.windows(point.len()).any(|w| w == point.as_bytes()),
                "{FIU_POSIX_PRELOAD} has no failure point {point}"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("pvo-fiu-")
            .tempdir()
            .expect("create node dir");
        fs::write(dir.path().join("pvo.toml"), config_toml).expect("write pvo.toml");
        let stderr = fs::File::create(dir.path().join("node.stderr.log")).expect("stderr log");
        let mut child = Command::new("fiu-run")
            .arg("-x")
            .arg("-f")
            .arg(dir.path().join("fiu"))
            .arg(pvo_bin())
            .args(["gateway", "run", "--config", "pvo.toml"])
            .current_dir(dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn fiu-run (run scripts/install-test-deps)");
        let lines = drain_lines(
            child.stdout.take().expect("stdout"),
            dir.path().join("node.stdout.log"),
        );
        let mut node = FiuNode {
            dir: Some(dir),
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Node::START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some((name, addr)) = parse_listening_line(&line) {
                        if name == LISTENER {
                            node.addr = addr;
                            return node;
                        }
                    }
                }
                Err(e) => panic!(
                    "the node under fiu-run did not report its listener ({e:?})\n\
                     --- stderr ---\n{}",
                    node.stderr()
                ),
            }
        }
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("node dir").path()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir().join("node.stderr.log")).unwrap_or_default())
            .into_owned()
    }

    fn mail_logs(&self) -> String {
        String::from_utf8_lossy(&fs::read(self.dir().join("logs/mail_logs")).unwrap_or_default())
            .into_owned()
    }

    fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Runs libfiu remote-control commands in the node through `fiu-ctrl`, which reports
    /// a failed command (or an unknown pid) on stdout but still exits 0.
    fn fiu_ctrl(&self, commands: &[String]) {
        let pid = self.child.as_ref().expect("node is not running").id();
        let mut cmd = Command::new("fiu-ctrl");
        cmd.arg("-f").arg(self.dir().join("fiu"));
        for c in commands {
            cmd.args(["-c", c]);
        }
        cmd.arg(pid.to_string());
        let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(30));
        assert!(
            status.success() && out.trim().is_empty() && err.trim().is_empty(),
            "fiu-ctrl {commands:?} failed ({status}): {out}{err}"
        );
    }

    /// Makes every `fdatasync` and `fsync` fail with `errno`.
    fn fail_syncs(&self, errno: i32) {
        let commands: Vec<String> = FIU_SYNC_POINTS
            .iter()
            .map(|p| format!("enable name={p},failinfo={errno}"))
            .collect();
        self.fiu_ctrl(&commands);
    }

    fn heal_syncs(&self) {
        let commands: Vec<String> = FIU_SYNC_POINTS
            .iter()
            .map(|p| format!("disable name={p}"))
            .collect();
        self.fiu_ctrl(&commands);
    }

    /// `kill -9`, then the same node again on the same data, without libfiu; also returns
    /// where the new run's part of mail_logs begins.
    fn kill9_and_restart_plain(mut self) -> (Node, usize) {
        self.kill9();
        let from = self.mail_logs().len();
        let dir = self.dir.take().expect("node dir");
        let data_dir = dir.path().to_path_buf();
        let config = data_dir.join("pvo.toml").to_string_lossy().into_owned();
        let node = Node::start_with_args(
            dir,
            data_dir,
            &["gateway", "run", "--config", &config],
            Listeners::Named(vec![LISTENER.to_string()]),
        );
        (node, from)
    }

    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for FiuNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Copies a child's stdout line by line to `log` and to the returned channel, until EOF,
/// so that the pipe never fills up.
fn drain_lines(stdout: impl Read + Send + 'static, log: PathBuf) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = fs::File::create(log).ok();
        for line in BufReader::new(stdout).split(b'\n') {
            let Ok(line) = line else { break };
            if let Some(f) = out.as_mut() {
                let _ = f.write_all(&line);
                let _ = f.write_all(b"\n");
            }
            // Nobody listens once the node has started; keep draining.
            let _ = tx.send(String::from_utf8_lossy(&line).trim_end().to_string());
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------
// A small file system
// ---------------------------------------------------------------------------------------

/// A node whose whole data directory (spool, logs, run state) is `data_dir`.
fn node_on(data_dir: &Path, sink: &Sink) -> Node {
    let dir = tempfile::Builder::new()
        .prefix("pvo-node-")
        .tempdir()
        .expect("create node dir");
    let config_path = dir.path().join("pvo.toml");
    fs::write(&config_path, config(&data_dir.to_string_lossy(), sink, 10)).expect("write pvo.toml");
    Node::start_with_args(
        dir,
        data_dir.to_path_buf(),
        &["gateway", "run", "--config", &config_path.to_string_lossy()],
        Listeners::Named(vec![LISTENER.to_string()]),
    )
}

/// Sends 100 KB messages until one gets 452 (at most `max`); every other reply must be
/// 250. Returns the subjects accepted.
fn fill_spool(node: &Node, sent: &mut Sent, max: usize) -> Vec<String> {
    let mut c = client(node.addr());
    let mut accepted = Vec::new();
    for i in 0..max {
        let subject = format!("filler {i}");
        let reply = sent.send(&mut c, &subject, 100_000);
        match reply.code {
            250 => accepted.push(subject),
            452 => {
                assert!(
                    reply.raw().contains("4.3.1"),
                    "452 without 4.3.1: {}",
                    reply.raw()
                );
                c.quit();
                return accepted;
            }
            _ => panic!(
                "{subject:?} got {} with the disk filling up; expected 250 or 452",
                reply.raw()
            ),
        }
    }
    panic!("{max} messages of 100 KB and still no 452; is the spool on the tmpfs?")
}

// ---------------------------------------------------------------------------------------
// fsync failure
// ---------------------------------------------------------------------------------------

#[test]
fn fsync_failure_gives_4xx_never_250() {
    let sink = Sink::accepting();
    let mut node = FiuNode::start(&config(".", &sink, 10));
    let mut sent = Sent::default();

    // The preload alone changes nothing.
    let mut c = client(node.addr);
    sent.accept(&mut c, "before the failure", 2000);
    wait_for_arrivals(&sink, &sent, ["before the failure"], DELIVERY);

    // EIO from fsync: 451 for two concurrent sessions (one group-commit batch or two)...
    node.fail_syncs(EIO);
    let addr = node.addr;
    let concurrent: Vec<(String, Reply, String)> = thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                s.spawn(move || {
                    let mut sent = Sent::default();
                    let mut c = client(addr);
                    let subject = format!("refused {i}");
                    let reply = sent.send(&mut c, &subject, 2000);
                    c.quit();
                    let body = sent.bodies.remove(&subject).expect("body");
                    (subject, reply, body)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (subject, reply, body) in concurrent {
        assert_eq!(
            reply.raw(),
            "451 4.3.0 Error: queue file write error",
            "{subject:?} while fsync fails with EIO"
        );
        sent.bodies.insert(subject, body);
    }
    // ...and for a later message in an open session, which stays usable.
    let reply = sent.send(&mut c, "refused 2", 2000);
    assert_eq!(reply.raw(), "451 4.3.0 Error: queue file write error");
    c.expect("RSET", 250);

    // ENOSPC from fsync (thin provisioning, NFS) is a full disk: 452.
    node.heal_syncs();
    node.fail_syncs(ENOSPC);
    let reply = sent.send(&mut c, "refused 3", 2000);
    assert_eq!(reply.raw(), "452 4.3.1 Insufficient system storage");

    assert!(node.is_running(), "the node died:\n{}", node.stderr());
    // The log is written by its own thread, a moment after the reply.
    let critical = |log: &str| {
        log.lines()
            .filter(|l| {
                l.contains(" Critical: ") && l.contains("could not be written to the spool")
            })
            .count()
    };
    wait_until(
        DELIVERY,
        || (critical(&node.mail_logs()) >= 4).then_some(()),
        || format!("four Critical lines in mail_logs:\n{}", node.mail_logs()),
    );
    assert_eq!(
        critical(&node.mail_logs()),
        4,
        "one Critical line per refusal:\n{}",
        node.mail_logs()
    );

    // Healed: mail is accepted and delivered again, from the same session.
    node.heal_syncs();
    sent.accept(&mut c, "after the failure", 2000);
    c.quit();
    wait_for_arrivals(&sink, &sent, ["after the failure"], DELIVERY);

    // The refused messages may have reached the page cache; the spool must have recorded
    // them as finished, so that not even a crash brings them back.
    let (node, from) = node.kill9_and_restart_plain();
    let mut c = client(node.addr());
    sent.accept(&mut c, "after the restart", 2000);
    c.quit();
    wait_for_arrivals(&sink, &sent, ["after the restart"], DELIVERY);
    wait_for_quiet_queue(&node, from);
    let counts = arrivals(&sink, &sent);
    let refused: Vec<&String> = counts.keys().filter(|s| s.starts_with("refused")).collect();
    assert!(
        refused.is_empty(),
        "messages that got 4xx were delivered: {refused:?}"
    );
    assert_eq!(counts["before the failure"], 1);
}

/// A message refused because its fsync failed must stay refused when the node crashes
/// before the spool could record that: the client was told 451 and will send it again.
#[test]
fn message_refused_for_a_failed_fsync_stays_refused_after_a_crash() {
    let sink = Sink::accepting();
    let node = FiuNode::start(&config(".", &sink, 10));
    let mut sent = Sent::default();
    node.fail_syncs(EIO);
    let mut c = client(node.addr);
    let reply = sent.send(&mut c, "refused before the crash", 2000);
    assert_eq!(reply.raw(), "451 4.3.0 Error: queue file write error");
    c.quit();

    // kill -9 with the disk still failing, then a healthy restart.
    let (node, from) = node.kill9_and_restart_plain();
    let run = startup_log(&node, from);
    let mut c = client(node.addr());
    sent.accept(&mut c, "after the restart", 2000);
    c.quit();
    wait_for_arrivals(&sink, &sent, ["after the restart"], DELIVERY);
    wait_for_quiet_queue(&node, from);
    let counts = arrivals(&sink, &sent);
    assert!(
        !counts.contains_key("refused before the crash"),
        "a message that got 451 was delivered after the restart (the restart {})",
        run.lines()
            .find(|l| l.contains("Recovered "))
            .unwrap_or("recovered nothing")
    );
}

// ---------------------------------------------------------------------------------------
// Full disk
// ---------------------------------------------------------------------------------------

#[test]
fn full_disk_gives_452_and_loses_no_accepted_message() {
    let mount = Tmpfs::mount("4m");
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try later"));
    let mut node = node_on(mount.path(), &sink);
    let mut sent = Sent::default();

    let accepted = fill_spool(&node, &mut sent, 200);
    assert!(
        accepted.len() >= 10,
        "only {} messages of 100 KB fit in 4 MiB",
        accepted.len()
    );
    assert!(node.is_running(), "the node died:\n{}", node.stderr());

    sink.set_faults(&SinkOptions::default());
    let counts = wait_for_arrivals(&sink, &sent, accepted.iter().map(String::as_str), DELIVERY);
    assert!(node.is_running(), "the node died:\n{}", node.stderr());
    assert_eq!(
        counts.len(),
        accepted.len(),
        "a message that got 452 was delivered: {counts:?}"
    );
    eprintln!(
        "full disk: {} messages of 100 KB accepted before the first 452, all delivered",
        accepted.len()
    );
}

/// Once the queue has drained, the spool must give back the space of the finished
/// messages, so that a disk that was full for a moment does not refuse mail forever.
#[test]
fn full_disk_accepts_mail_again_once_the_queue_drains() {
    let mount = Tmpfs::mount("1m");
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try later"));
    let mut node = node_on(mount.path(), &sink);
    let mut sent = Sent::default();
    let accepted = fill_spool(&node, &mut sent, 100);
    sink.set_faults(&SinkOptions::default());
    wait_for_arrivals(&sink, &sent, accepted.iter().map(String::as_str), DELIVERY);

    let mut c = client(node.addr());
    let attempts = Cell::new(0);
    wait_until(
        Duration::from_secs(30),
        || {
            attempts.set(attempts.get() + 1);
            let subject = format!("after the drain {}", attempts.get());
            let reply = sent.send(&mut c, &subject, 2000);
            match reply.code {
                250 => Some(()),
                452 => None,
                _ => panic!("{subject:?} got {}", reply.raw()),
            }
        },
        || {
            format!(
                "every message delivered, yet still 452 after {} tries; spool: {:?}",
                attempts.get(),
                fs::read_dir(mount.path().join("spool"))
                    .map(|rd| rd
                        .filter_map(|e| e.ok())
                        .map(|e| (file_name(&e.path()), e.metadata().map(|m| m.len()).ok()))
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            )
        },
    );
    c.quit();
    assert!(node.is_running(), "the node died:\n{}", node.stderr());
}

/// A node killed while its spool file system is full must start again on it and deliver
/// what it accepted: refusing to start would keep the mail that fills the disk from ever
/// leaving.
#[test]
fn full_disk_node_restarts_and_delivers_after_kill_9() {
    let mount = Tmpfs::mount("1m");
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try later"));
    let mut node = node_on(mount.path(), &sink);
    let mut sent = Sent::default();
    let accepted = fill_spool(&node, &mut sent, 100);

    node.kill9();
    sink.set_faults(&SinkOptions::default());
    node.restart();
    wait_for_arrivals(&sink, &sent, accepted.iter().map(String::as_str), DELIVERY);
    assert!(node.is_running(), "the node died:\n{}", node.stderr());
}

/// Writes zeros to `path` until the file system is full.
fn fill_up(path: &Path) {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("create filler");
    let chunk = vec![0u8; 64 << 10];
    let mut size = chunk.len();
    loop {
        match f.write(&chunk[..size]) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) && size > 1 => size /= 2,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("fill {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

/// Every file under `dir` whose name has `.tmp` in it.
fn temporary_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if file_name(&p).contains(".tmp") {
                out.push(p);
            }
        }
    }
    out
}

/// A data disk with no byte left (mail filled part of it, something
/// else the rest) must not keep the gateway from starting, after `kill -9` or a clean stop:
/// it starts, answers 452 to new mail while the disk is full, delivers what it holds, and
/// takes mail again once there is room; the refusals name the spool and the cause, and no
/// temporary file is left behind.
#[test]
fn a_completely_full_disk_restarts_refuses_new_mail_delivers_and_recovers() {
    let mount = Tmpfs::mount("2m");
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try later"));
    let mut node = node_on(mount.path(), &sink);
    let mut sent = Sent::default();
    let mut c = client(node.addr());
    let held: Vec<String> = (0..3).map(|i| format!("held {i}")).collect();
    for s in &held {
        sent.accept(&mut c, s, 20_000);
    }
    fill_up(&mount.path().join("filler"));
    let reply = sent.send(&mut c, "refused on the full disk", 100_000);
    assert_eq!(reply.raw(), "452 4.3.1 Insufficient system storage");
    c.quit();

    let refuse = |node: &Node, subject: &str| {
        let mut c = client(node.addr());
        let reply = c.send_message(FROM, &[TO], &message(subject, 2000));
        assert_eq!(
            reply.raw(),
            "452 4.3.1 Insufficient system storage",
            "{subject:?} with the disk still full"
        );
        c.quit();
    };
    // A start may free a little room (what the previous run left behind is tidied):
    // the disk is filled up again each time, so that it stays full.
    let filler = mount.path().join("filler");
    node.kill9();
    node.restart();
    fill_up(&filler);
    refuse(&node, "refused after kill -9");
    node.stop();
    let mark = node.log_mark();
    node.restart();
    fill_up(&filler);
    refuse(&node, "refused after a clean restart");
    sink.set_faults(&SinkOptions::default());
    wait_for_arrivals(&sink, &sent, held.iter().map(String::as_str), DELIVERY);
    fs::remove_file(mount.path().join("filler")).expect("free the disk");
    let mut c = client(node.addr());
    let attempts = Cell::new(0);
    let accepted = wait_until(
        Duration::from_secs(60),
        || {
            attempts.set(attempts.get() + 1);
            let subject = format!("after the room came back {}", attempts.get());
            let reply = sent.send(&mut c, &subject, 2000);
            match reply.code {
                250 => Some(subject),
                452 => None,
                _ => panic!("{subject:?} got {}", reply.raw()),
            }
        },
        || {
            format!(
                "still 452 after {} tries with the disk freed",
                attempts.get()
            )
        },
    );
    c.quit();
    wait_for_arrivals(&sink, &sent, [accepted.as_str()], DELIVERY);
    assert!(node.is_running(), "the node died:\n{}", node.stderr());
    // What this run of the node logged on the full disk, read once there is room again
    // (a line the disk cut short is finished then, from the writer's buffer; an earlier
    // run killed meanwhile may have left part of one, before `mark`): each refusal names
    // the file and the cause, and the lines that did not fit at all are counted in a
    // Warning once there is room.
    let spool = mount.path().join("spool");
    let log = node.log_since(mark);
    let refusals: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("could not be written to the spool"))
        .collect();
    let lost = log
        .lines()
        .any(|l| l.contains(" Warning: ") && l.contains(" lines could not be written to "));
    assert!(!refusals.is_empty() || lost, "{log}");
    for l in &refusals {
        assert!(
            l.contains(&spool.display().to_string()) && l.contains("no space left"),
            "a refusal that names no file or cause: {l}"
        );
    }
    let counts = arrivals(&sink, &sent);
    assert!(
        counts.values().all(|n| *n == 1),
        "delivered twice: {counts:?}"
    );
    let tmps = temporary_files(mount.path());
    assert!(tmps.is_empty(), "temporary files left behind: {tmps:?}");
}

// ---------------------------------------------------------------------------------------
// Damaged spool files
// ---------------------------------------------------------------------------------------

#[test]
fn spool_segment_cut_short_is_moved_aside_not_deleted() {
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try later"));
    let mut node = Node::start(&config(".", &sink, 10));
    let mut sent = Sent::default();
    let (segment, bytes, recs) = queue_then_kill(&mut node, &mut sent, "queued", 5);

    // Cut the file in the middle of the last record's payload, as a torn write would.
    let last = recs.last().expect("records");
    let cut = last.off + RECORD_HEADER_LEN + last.payload_len / 2;
    fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(cut as u64))
        .expect("truncate segment");

    let from = kill9_and_restart(&mut node);
    let run = startup_log(&node, from);
    let name = file_name(&segment);
    let warning = run
        .lines()
        .find(|l| l.contains("moved aside") && l.contains(&name))
        .unwrap_or_else(|| panic!("no `moved aside` line for {name}:\n{run}"));
    assert!(
        warning.contains(" Warning: ") && warning.contains("torn record"),
        "{warning}"
    );
    assert_eq!(recovered(&run), 4, "the four whole messages are recovered");

    // The torn bytes are kept: the last record from its start to the cut.
    let corrupt = corrupt_files(&node.data_dir().join("spool"));
    let tail_name = format!("{name}.tail-{}", last.off);
    let tail = corrupt
        .get(&tail_name)
        .unwrap_or_else(|| panic!("no {tail_name} in spool/corrupt: {:?}", corrupt.keys()));
    assert!(
        tail == &bytes[last.off..cut],
        "{tail_name} is not the torn record"
    );

    sink.set_faults(&SinkOptions::default());
    let whole: Vec<String> = (0..4).map(|i| format!("queued {i}")).collect();
    wait_for_arrivals(&sink, &sent, whole.iter().map(String::as_str), DELIVERY);
    wait_for_quiet_queue(&node, from);
    let counts = arrivals(&sink, &sent);
    assert!(
        !counts.contains_key("queued 4"),
        "the torn message was delivered"
    );
}

#[test]
fn spool_segment_damaged_in_the_middle_is_moved_aside_whole() {
    let sink = Sink::start(SinkOptions::reply_data("451 4.3.0 try later"));
    let mut node = Node::start(&config(".", &sink, 10));
    let mut sent = Sent::default();
    let (segment, mut bytes, recs) = queue_then_kill(&mut node, &mut sent, "queued", 5);

    // Garbage over the middle of the third record's payload; whole records follow it.
    let hit = &recs[2];
    let at = hit.off + RECORD_HEADER_LEN + hit.payload_len / 2;
    for b in &mut bytes[at..at + 64] {
        *b = 0xEE;
    }
    fs::write(&segment, &bytes).expect("write damaged segment");

    let from = kill9_and_restart(&mut node);
    let run = startup_log(&node, from);
    let name = file_name(&segment);
    assert!(
        run.lines()
            .any(|l| l.contains(" Warning: ") && l.contains("moved aside") && l.contains(&name)),
        "no `moved aside` line for {name}:\n{run}"
    );
    assert_eq!(
        recovered(&run),
        2,
        "the two messages before the damage are recovered"
    );
    assert!(!segment.exists(), "{name} is still in the spool");
    let corrupt = corrupt_files(&node.data_dir().join("spool"));
    let kept = corrupt
        .get(&name)
        .unwrap_or_else(|| panic!("no {name} in spool/corrupt: {:?}", corrupt.keys()));
    assert!(
        kept == &bytes,
        "spool/corrupt/{name} is not the damaged file byte for byte"
    );

    sink.set_faults(&SinkOptions::default());
    wait_for_arrivals(&sink, &sent, ["queued 0", "queued 1"], DELIVERY);
    wait_for_quiet_queue(&node, from);
    let counts = arrivals(&sink, &sent);
    assert!(
        !counts.contains_key("queued 2"),
        "the damaged message was delivered"
    );
    eprintln!(
        "damaged segment: delivered {:?}; the records after the damage are kept in \
         spool/corrupt/{name} only",
        counts.keys().collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// kill -9
// ---------------------------------------------------------------------------------------

#[test]
fn kill_9_during_data_delivers_nothing_of_the_transaction() {
    let sink = Sink::accepting();
    let mut node = Node::start(&config(".", &sink, 10));
    let mut sent = Sent::default();

    // Three sessions stopped at different points of DATA: right after 354, half-way
    // through the body, and with the final dot sent but not its LF.
    let mut open = Vec::new();
    for subject in ["nothing sent", "half sent", "dot without LF"] {
        let body = message(subject, 20_000);
        let partial = match subject {
            "nothing sent" => String::new(),
            "half sent" => body[..body.len() / 2].to_string(),
            _ => format!("{body}.\r"),
        };
        let mut c = client(node.addr());
        c.expect(&format!("MAIL FROM:<{FROM}>"), 250);
        c.expect(&format!("RCPT TO:<{TO}>"), 250);
        c.expect("DATA", 354);
        c.write_raw(partial.as_bytes()).expect("write partial data");
        sent.bodies.insert(subject.to_string(), body);
        open.push(c);
    }
    node.kill9();
    drop(open);
    let from = kill9_and_restart(&mut node);
    let run = startup_log(&node, from);
    for bad in ["moved aside", " Critical: ", " Warning: "] {
        assert!(!run.contains(bad), "the restart logged {bad:?}:\n{run}");
    }
    assert_eq!(recovered(&run), 0, "recovered a message:\n{run}");
    let corrupt = corrupt_files(&node.data_dir().join("spool"));
    assert!(corrupt.is_empty(), "spool/corrupt: {:?}", corrupt.keys());

    let mut c = client(node.addr());
    sent.accept(&mut c, "after the restart", 2000);
    c.quit();
    let counts = wait_for_arrivals(&sink, &sent, ["after the restart"], DELIVERY);
    wait_for_quiet_queue(&node, from);
    assert_eq!(
        counts.keys().collect::<Vec<_>>(),
        ["after the restart"],
        "only the message sent after the restart arrives"
    );
}

#[test]
fn kill_9_during_delivery_redelivers_only_what_was_in_flight() {
    const MESSAGES: usize = 20;
    const CONCURRENCY: u32 = 5;
    // The sink holds each DATA reply this long, so that deliveries are in flight at the
    // kill.
    let sink = Sink::start(SinkOptions {
        delay_data: Some(1.5),
        ..SinkOptions::default()
    });
    let mut node = Node::start(&config(".", &sink, CONCURRENCY));
    let mut sent = Sent::default();
    let mut c = client(node.addr());
    let subjects: Vec<String> = (0..MESSAGES).map(|i| format!("in the queue {i}")).collect();
    for s in &subjects {
        sent.accept(&mut c, s, 4000);
    }
    c.quit();

    // Kill as the first deliveries complete: the sink has stored them and answered 250, but
    // the gateway has had no time to record that (its finish record goes out with the next
    // group commit), and the next deliveries are under way. aiosmtpd drops
    // a message whose client disconnects during the delay, so these are the deliveries that
    // can arrive twice.
    wait_until(
        DELIVERY,
        || (sink.count() > 0).then_some(()),
        || format!("no delivery completed; sink events {:?}", sink.events()),
    );
    node.kill9();
    let log = node.mail_logs();
    let started = mids_on(&log, "Delivery start ");
    let finished = mids_on(&log, "Message finished ");
    assert!(
        !started.is_empty() && started.len() < MESSAGES,
        "{} deliveries started before the kill",
        started.len()
    );

    let from = kill9_and_restart(&mut node);
    wait_for_arrivals(&sink, &sent, subjects.iter().map(String::as_str), DELIVERY);
    wait_for_quiet_queue(&node, from);
    // Every delivery of the restarted node has finished and the sink dropped those the
    // kill cut off, so these counts are final.
    let counts = arrivals(&sink, &sent);
    let duplicated: Vec<(&String, usize)> = counts
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(s, n)| (s, *n))
        .collect();
    let duplicates: usize = duplicated.iter().map(|(_, n)| n - 1).sum();
    eprintln!(
        "kill -9 during delivery: {MESSAGES} queued; {} deliveries started before the kill, \
         {} of them finished, {} in flight; all {} arrived; \
         {duplicates} duplicate deliveries",
        started.len(),
        finished.len(),
        started.difference(&finished).count(),
        counts.len()
    );
    for (subject, n) in &duplicated {
        let mid = sent.mids[*subject];
        assert!(
            started.contains(&mid) && *n == 2,
            "{subject:?} (MID {mid}) arrived {n} times but was not in flight at the kill \
             (in flight: {:?})",
            started
                .iter()
                .map(|m| sent.subject_of_mid(*m).unwrap_or("?"))
                .collect::<Vec<_>>()
        );
    }
}
