//! Helpers for the integration tests: a real `pvo` node, a real next hop, and a raw SMTP
//! client, all on loopback with ports chosen by the kernel (`port = 0`) or, where a port
//! must be named up front, reserved by [`free_port`] (`ports.rs`).
//!
//! - [`Node`] writes a configuration into a temporary directory, runs
//!   `pvo gateway run --config`, and learns its ports from the `Listener NAME listening on
//!   IP:PORT` lines the node prints. It is killed when dropped. Its log waits look only at
//!   lines written after a [`LogMark`] (`log_cursor.rs`): by default the node's latest
//!   (re)start, so a restarted node never matches a line of its earlier run.
//! - [`Sink`] runs `tests/peers/sink.py` (Debian's aiosmtpd) as the next hop and reads the
//!   messages it stored, one file per message.
//! - [`Postgres`] is a private PostgreSQL server for one test (`postgres.rs`).
//! - [`SmtpClient`], [`smtp_dialogue`] and [`send_raw`] speak SMTP over a plain
//!   `TcpStream`, optionally from another loopback source address such as 127.0.0.2 (an
//!   address the gateway does not trust), which std cannot bind, hence `socket2`.
//!
//! Every wait here waits for an event (a line, a file, a log entry) by polling with short
//! pauses up to a deadline; none is a fixed sleep standing in for synchronisation.
//!
//! Each test module uses a different subset of these helpers, so some are unused in any
//! one build of the test binary; hence the `dead_code` allowance.
#![allow(dead_code)]

mod cli;
mod cluster;
mod config;
mod log_cursor;
mod ports;
mod postgres;
mod tmpfs;
pub use cli::*;
// The soak binary holds no cluster test.
#[allow(unused_imports)]
pub use cluster::*;
pub use config::*;
pub use log_cursor::LogMark;
// The soak binary fills no disk.
#[allow(unused_imports)]
pub use tmpfs::Tmpfs;
// The soak binary holds no PostgreSQL test.
#[allow(unused_imports)]
pub use postgres::{HeldLock, Postgres};

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Debian's interpreter: python3-aiosmtpd is installed for it, not for the pyenv
/// `python3` that may come first on PATH.
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// The address the gateway trusts (RELAYLIST in the test configurations).
pub const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
/// Another loopback address: the gateway sees connections from it as an untrusted sender.
pub const UNTRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// The `pvo` binary that Cargo built for this test run.
pub fn pvo_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_pvo"))
}

/// `tests/peers/NAME`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
}

/// Polls `check` every 20 ms until it returns `Some`, or panics with `what()` after
/// `timeout`.
pub fn wait_until<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
    what: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?}: {}", what());
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Sends SIGTERM (std only has SIGKILL); `kill` is procps', installed by
/// scripts/install-test-deps.
fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(status.success(), "kill -TERM {} failed", child.id());
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads a child's stdout line by line on a thread: every line goes to `log` (so the pipe
/// never fills up and a failing test can show what was printed) and to the returned channel.
fn tee_lines(stdout: impl Read + Send + 'static, log: PathBuf) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .ok();
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(f) = out.as_mut() {
                        let _ = f.write_all(&buf);
                    }
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    // The receiver may be gone once startup is over; keep draining anyway.
                    let _ = tx.send(line);
                }
            }
        }
    });
    rx
}

// ---------------------------------------------------------------------------------------
// The gateway node
// ---------------------------------------------------------------------------------------

/// A running `pvo gateway run` in its own temporary directory.
///
/// The configuration is written to `DIR/pvo.toml`; configurations in the tests use
/// `data_dir = "."`, so the spool and `logs/mail_logs` are under `DIR` too. The node's
/// stdout is copied to `DIR/node.stdout.log` and its stderr to `DIR/node.stderr.log`
/// (appended across restarts).
pub struct Node {
    dir: tempfile::TempDir,
    data_dir: PathBuf,
    args: Vec<String>,
    /// A command the node runs under (`ip netns exec NS`), if any.
    prefix: Vec<String>,
    child: Option<Child>,
    listeners: BTreeMap<String, SocketAddr>,
    expected: Listeners,
    /// The end of `mail_logs` just before the latest (re)start: [`Node::wait_for_log`]
    /// looks only after it.
    started_at: LogMark,
    /// The length of `node.stdout.log` just before the latest (re)start.
    stdout_started_at: u64,
}

/// Which `Listener NAME listening on` lines mean the node has started.
#[derive(Clone, Debug)]
pub enum Listeners {
    /// Every one of these names.
    Named(Vec<String>),
    /// This many, whatever their names.
    Count(usize),
}

impl Node {
    /// How long a node may take to print all its `listening on` lines.
    pub const START_TIMEOUT: Duration = Duration::from_secs(60);

    /// Writes `config_toml` and starts a node from it; returns once every `[[listener]]`
    /// of the configuration is accepting connections.
    pub fn start(config_toml: &str) -> Node {
        let dir = tempfile::Builder::new()
            .prefix("pvo-node-")
            .tempdir()
            .expect("create node dir");
        fs::write(dir.path().join("pvo.toml"), config_toml).expect("write pvo.toml");
        let table: toml::Table = config_toml
            .parse()
            .unwrap_or_else(|e| panic!("test configuration is not TOML: {e}\n{config_toml}"));
        let names = table
            .get("listener")
            .and_then(|l| l.as_array())
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| l.get("name").and_then(|n| n.as_str()).map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let config = dir.path().join("pvo.toml").to_string_lossy().into_owned();
        let data_dir = dir.path().to_path_buf();
        Node::start_with_args(
            dir,
            data_dir,
            &["gateway", "run", "--config", &config],
            Listeners::Named(names),
        )
    }

    /// Runs `pvo ARGS` in `dir` (kept for the node's lifetime; its stdout and stderr logs
    /// go there) and waits for the `expected` listeners; `data_dir` is where the node
    /// keeps `logs/` and its spool. For commands other than `gateway run`, such as
    /// `quickstart`.
    pub fn start_with_args(
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        args: &[&str],
        expected: Listeners,
    ) -> Node {
        Node::start_under(&[], dir, data_dir, args, expected)
    }

    /// [`Node::start_with_args`] under `prefix` (for example `ip netns exec NS`).
    pub fn start_under(
        prefix: &[&str],
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        args: &[&str],
        expected: Listeners,
    ) -> Node {
        let mut node = Node {
            dir,
            data_dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            prefix: prefix.iter().map(|a| a.to_string()).collect(),
            child: None,
            listeners: BTreeMap::new(),
            expected,
            started_at: LogMark::START,
            stdout_started_at: 0,
        };
        node.spawn();
        node
    }

    fn started(&self) -> bool {
        match &self.expected {
            Listeners::Named(names) => names.iter().all(|n| self.listeners.contains_key(n)),
            Listeners::Count(n) => self.listeners.len() >= *n,
        }
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        // Before the child exists, so every line of this run is after the mark; the last
        // run has exited (kill9 and stop wait for it), so none of its lines is.
        self.started_at = self.log_mark();
        self.stdout_started_at = fs::metadata(self.stdout_path()).map_or(0, |m| m.len());
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open node stderr log");
        let mut cmd = match self.prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(pvo_bin());
                c
            }
            None => Command::new(pvo_bin()),
        };
        let mut child = cmd
            .args(&self.args)
            .current_dir(self.dir.path())
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", pvo_bin().display()));
        let lines = tee_lines(
            child.stdout.take().expect("stdout"),
            self.dir.path().join("node.stdout.log"),
        );
        self.child = Some(child);
        self.listeners.clear();
        let deadline = Instant::now() + Self::START_TIMEOUT;
        while !self.started() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some((name, addr)) = parse_listening_line(&line) {
                        self.listeners.insert(name, addr);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => self.startup_failed("timed out"),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_with_timeout(self.child_mut(), Duration::from_secs(5));
                    self.startup_failed(&format!("stdout closed; exit status {status:?}"));
                }
            }
        }
    }

    fn startup_failed(&mut self, why: &str) -> ! {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "`pvo {}` did not report listeners {:?} ({why}; seen {:?})\n\
             --- config {} ---\n{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args.join(" "),
            self.expected,
            self.listeners,
            self.config_path().display(),
            read_lossy(&self.config_path()),
            read_lossy(&self.dir.path().join("node.stdout.log")),
            read_lossy(&self.stderr_path()),
        );
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("node is not running")
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pvo.toml")
    }
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("node.stderr.log")
    }
    /// `DIR/node.stdout.log`: the node's stdout, appended across restarts.
    pub fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("node.stdout.log")
    }
    /// What the node printed on stdout since its latest (re)start.
    pub fn stdout_since_start(&self) -> String {
        let bytes = fs::read(self.stdout_path()).unwrap_or_default();
        let from = (self.stdout_started_at as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[from..]).into_owned()
    }
    pub fn mail_logs_path(&self) -> PathBuf {
        self.data_dir.join("logs/mail_logs")
    }
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("node is not running").id()
    }

    /// The address of the listener called `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        *self
            .listeners
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name:?}; have {:?}", self.listeners))
    }

    /// The address of the first (usually only) listener.
    pub fn addr(&self) -> SocketAddr {
        match &self.expected {
            Listeners::Named(names) => self.listener(names.first().expect("no [[listener]]")),
            Listeners::Count(_) => *self.listeners.values().next().expect("no listener"),
        }
    }

    /// Every listener the node reported, by name.
    pub fn listeners(&self) -> &BTreeMap<String, SocketAddr> {
        &self.listeners
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    /// The current `logs/mail_logs` (empty if not written yet).
    pub fn mail_logs(&self) -> String {
        read_lossy(&self.mail_logs_path())
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path())
    }

    /// Waits until a line written since the node's latest (re)start contains `needle`;
    /// returns what the log got since that start (earlier runs' lines never match: they
    /// are not in it).
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_after(self.started_at, needle, timeout)
    }

    /// The current end of `mail_logs`, for [`Node::wait_for_log_after`]: take it before
    /// the command whose line a test then waits for.
    pub fn log_mark(&self) -> LogMark {
        log_cursor::mark(&self.mail_logs_path())
    }

    /// The end of `mail_logs` just before the node's latest (re)start.
    pub fn start_mark(&self) -> LogMark {
        self.started_at
    }

    /// What `mail_logs` got after `mark` (following rotations to `mail_logs.N`).
    pub fn log_since(&self, mark: LogMark) -> String {
        log_cursor::since(&self.mail_logs_path(), mark)
    }

    /// Waits until a line written after `mark` contains `needle`; returns everything
    /// written after `mark`.
    pub fn wait_for_log_after(&self, mark: LogMark, needle: &str, timeout: Duration) -> String {
        self.wait_for_log_matching_after(mark, timeout, |log| log.contains(needle), needle)
    }

    /// Waits until `pred(what was written after mark)` holds, and returns that text;
    /// `what` names the awaited entry in the panic.
    pub fn wait_for_log_matching_after(
        &self,
        mark: LogMark,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
        what: &str,
    ) -> String {
        wait_until(
            timeout,
            || {
                let log = self.log_since(mark);
                pred(&log).then_some(log)
            },
            || {
                format!(
                    "mail_logs never showed {what:?} after {mark:?}\n--- mail_logs since then ---\n{}\n--- stderr ---\n{}",
                    self.log_since(mark),
                    self.stderr()
                )
            },
        )
    }

    /// Waits until `pred(mail_logs)` holds, on the whole current `mail_logs` file with
    /// every earlier run's lines (for callers that cut it themselves at an offset); a
    /// wait that must ignore what came before a restart or a command uses
    /// [`Node::wait_for_log_matching_after`] with [`Node::start_mark`] or
    /// [`Node::log_mark`]. `what` names the awaited entry in the panic.
    pub fn wait_for_log_matching(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
        what: &str,
    ) -> String {
        let mut last = String::new();
        wait_until(
            timeout,
            || {
                last = self.mail_logs();
                pred(&last).then(|| last.clone())
            },
            || {
                format!(
                    "mail_logs never showed {what:?}\n--- mail_logs ---\n{}\n--- stderr ---\n{}",
                    self.mail_logs(),
                    self.stderr()
                )
            },
        )
    }

    /// SIGKILL: the node gets no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the node to exit (clean shutdown); returns its status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node is not running");
        sigterm(&child);
        match wait_with_timeout(&mut child, Duration::from_secs(30)) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "node did not exit within 30 s of SIGTERM\n--- stderr ---\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Starts the node again on the same configuration and data directory (after
    /// [`Node::kill9`] or [`Node::stop`]; a running node is stopped first). Listeners with
    /// `port = 0` get new ports.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        // Keep the directory of a failed test for inspection when asked to.
        if thread::panicking() && std::env::var_os("PVO_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping node directory {}", self.dir.path().display());
            self.dir.disable_cleanup(true);
        }
    }
}

/// Parses `Listener NAME listening on IP:PORT` (anywhere in the line).
pub fn parse_listening_line(line: &str) -> Option<(String, SocketAddr)> {
    let rest = &line[line.find("Listener ")? + "Listener ".len()..];
    let (name, rest) = rest.split_once(' ')?;
    let rest = rest.strip_prefix("listening on ")?;
    let addr = rest.split_whitespace().next()?;
    let (ip, port) = addr.rsplit_once(':')?;
    let ip: IpAddr = ip.trim_matches(|c| c == '[' || c == ']').parse().ok()?;
    let port: u16 = port.parse().ok()?;
    Some((name.to_string(), SocketAddr::new(ip, port)))
}

/// The lines of `log` that contain `needle`.
pub fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// Checks the appliance prefix of a mail_logs line, `Fri Sep 13 15:08:02 2013 Info: `,
/// and returns the rest.
pub fn strip_log_prefix(line: &str) -> Option<&str> {
    let (stamp, rest) = line.split_once(": ")?;
    let mut words = stamp.split(' ').filter(|w| !w.is_empty());
    let day = words.next()?;
    let month = words.next()?;
    let mday = words.next()?;
    let time = words.next()?;
    let year = words.next()?;
    let level = words.next()?;
    let ok = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"].contains(&day)
        && [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .contains(&month)
        && mday.parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
        && time.len() == 8
        && time
            .split(':')
            .all(|t| t.len() == 2 && t.parse::<u8>().is_ok())
        && year.len() == 4
        && year.parse::<u16>().is_ok()
        && ["Info", "Warning", "Critical", "Debug", "Trace"].contains(&level)
        && words.next().is_none();
    ok.then_some(rest)
}

// ---------------------------------------------------------------------------------------
// The next hop
// ---------------------------------------------------------------------------------------

/// How a [`Sink`] answers; the default accepts everything.
#[derive(Clone, Debug, Default)]
pub struct SinkOptions {
    /// Reply to every MAIL, e.g. `"451 4.3.0 try later"`.
    pub reply_mail: Option<String>,
    /// Reply to every RCPT, e.g. `"550 5.1.1 no such user"`.
    pub reply_rcpt: Option<String>,
    /// Reply after every DATA, e.g. `"554 5.7.1 rejected"`.
    pub reply_data: Option<String>,
    /// Seconds to wait before answering DATA (keeps deliveries in flight).
    pub delay_data: Option<f64>,
}

impl SinkOptions {
    pub fn reply_data(reply: &str) -> SinkOptions {
        SinkOptions {
            reply_data: Some(reply.into()),
            ..SinkOptions::default()
        }
    }
    pub fn reply_rcpt(reply: &str) -> SinkOptions {
        SinkOptions {
            reply_rcpt: Some(reply.into()),
            ..SinkOptions::default()
        }
    }
}

/// One message the sink stored.
#[derive(Clone, Debug)]
pub struct Message {
    /// The envelope sender, without brackets; empty for the null sender.
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message data as received (dot-unstuffed), ending with CRLF.
    pub data: Vec<u8>,
    pub path: PathBuf,
}

impl Message {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// The value of the first header field called `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let text = self.text();
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = value.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if value.is_some() {
                break;
            }
            if let Some((field, v)) = line.split_once(':') {
                if field.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_string());
                }
            }
        }
        value
    }

    /// Offsets of CR not followed by LF, or LF not preceded by CR.
    pub fn bare_cr_lf(&self) -> Vec<usize> {
        bare_cr_lf(&self.data)
    }
}

/// Offsets of CR not followed by LF, or LF not preceded by CR.
pub fn bare_cr_lf(data: &[u8]) -> Vec<usize> {
    let mut bad = Vec::new();
    for (i, &b) in data.iter().enumerate() {
        let bare_cr = b == b'\r' && data.get(i + 1) != Some(&b'\n');
        let bare_lf = b == b'\n' && (i == 0 || data[i - 1] != b'\r');
        if bare_cr || bare_lf {
            bad.push(i);
        }
    }
    bad
}

/// `tests/peers/sink.py`: aiosmtpd on 127.0.0.1, storing every message it accepts.
pub struct Sink {
    pub port: u16,
    /// The sink's storage (`new/`, `faults/`, `events.log`).
    pub dir: PathBuf,
    child: Option<Child>,
    root: tempfile::TempDir,
}

impl Sink {
    pub const START_TIMEOUT: Duration = Duration::from_secs(30);
    /// Fresh ports [`Sink::start`] tries before giving up.
    const START_ATTEMPTS: usize = 5;
    /// How long a restart waits for its port to be free again (a connection of the
    /// stopped sink may still hold it for a moment).
    const REBIND_TIMEOUT: f64 = 10.0;

    /// Starts a sink on a port reserved by [`free_port`], so that [`Sink::restart`] gets
    /// the same port back: a port 0 the sink bound itself would go back to the kernel when
    /// it stops, for any `port = 0` bind or outgoing connection to take. Should something
    /// outside the tests hold the reserved port anyway, the start is retried on another
    /// (nobody knows the port before the start returns).
    pub fn start(opts: SinkOptions) -> Sink {
        let root = tempfile::Builder::new()
            .prefix("pvo-sink-")
            .tempdir()
            .expect("create sink dir");
        let dir = root.path().join("store");
        let mut sink = Sink {
            port: 0,
            dir,
            child: None,
            root,
        };
        for _ in 0..Self::START_ATTEMPTS {
            if sink.spawn(free_port(), &opts, 0.0) {
                return sink;
            }
        }
        panic!(
            "sink.py could not bind any of {} reserved ports\n--- stderr ---\n{}",
            Self::START_ATTEMPTS,
            read_lossy(&sink.stderr_path())
        );
    }

    /// Starts a sink that accepts everything.
    pub fn accepting() -> Sink {
        Sink::start(SinkOptions::default())
    }

    /// Runs sink.py on `port`, retrying its bind for `bind_timeout` seconds; false if the
    /// port stayed in use (sink.py says `SINK_BIND_FAILED` and exits).
    fn spawn(&mut self, port: u16, opts: &SinkOptions, bind_timeout: f64) -> bool {
        assert!(self.child.is_none(), "sink already running");
        let stderr = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr_path())
            .expect("open sink stderr");
        let mut cmd = Command::new(SYSTEM_PYTHON);
        cmd.arg(peer_script("sink.py"))
            .arg("--dir")
            .arg(&self.dir)
            .args(["--port", &port.to_string()])
            .args(["--bind-timeout", &bind_timeout.to_string()]);
        for (flag, value) in [
            ("--reply-mail", &opts.reply_mail),
            ("--reply-rcpt", &opts.reply_rcpt),
            ("--reply-data", &opts.reply_data),
        ] {
            if let Some(v) = value {
                cmd.args([flag, v]);
            }
        }
        if let Some(d) = opts.delay_data {
            cmd.args(["--delay-data", &d.to_string()]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn {SYSTEM_PYTHON} sink.py: {e} (run scripts/install-test-deps)")
            });
        let lines = tee_lines(
            child.stdout.take().expect("stdout"),
            self.root.path().join("sink.stdout.log"),
        );
        self.child = Some(child);
        let deadline = Instant::now() + Self::START_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix("SINK_PORT ") {
                        self.port = p.trim().parse().expect("SINK_PORT number");
                        return true;
                    }
                    if line.starts_with("SINK_BIND_FAILED ") {
                        self.stop();
                        return false;
                    }
                }
                Err(e) => {
                    self.stop();
                    panic!(
                        "sink.py did not report its port ({e:?})\n--- stderr ---\n{}",
                        read_lossy(&self.stderr_path())
                    );
                }
            }
        }
    }

    pub fn stderr_path(&self) -> PathBuf {
        self.root.path().join("sink.stderr.log")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(TRUSTED, self.port)
    }

    /// `127.0.0.1:PORT`, the form configuration files use.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the sink: the port then refuses connections (the next hop is down).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the sink again on the same port and storage, answering per `opts`.
    pub fn restart(&mut self, opts: SinkOptions) {
        self.stop();
        let port = self.port;
        assert!(
            self.spawn(port, &opts, Self::REBIND_TIMEOUT),
            "sink.py could not bind its port {port} again\n--- stderr ---\n{}",
            read_lossy(&self.stderr_path())
        );
        assert_eq!(self.port, port);
    }

    /// Changes how the running sink answers, without a restart (so without giving up
    /// the port): writes or removes `faults/{mail,rcpt,data}`.
    pub fn set_faults(&self, opts: &SinkOptions) {
        assert!(opts.delay_data.is_none(), "delay_data needs a restart");
        for (verb, value) in [
            ("mail", &opts.reply_mail),
            ("rcpt", &opts.reply_rcpt),
            ("data", &opts.reply_data),
        ] {
            let path = self.dir.join("faults").join(verb);
            match value {
                Some(reply) => fs::write(&path, format!("{reply}\n")).expect("write fault"),
                None => match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => panic!("remove {}: {e}", path.display()),
                },
            }
        }
    }

    /// Lines of `events.log`: one per MAIL/RCPT/DATA reply the sink gave, e.g.
    /// `DATA 451 4.3.0 try later`.
    pub fn events(&self) -> Vec<String> {
        read_lossy(&self.dir.join("events.log"))
            .lines()
            .map(String::from)
            .collect()
    }

    /// Waits until the sink has given a reply whose event line starts with `prefix`.
    pub fn wait_for_event(&self, prefix: &str, timeout: Duration) {
        wait_until(
            timeout,
            || {
                self.events()
                    .iter()
                    .any(|e| e.starts_with(prefix))
                    .then_some(())
            },
            || format!("sink never replied {prefix:?}; events: {:?}", self.events()),
        )
    }

    /// How many messages the sink has stored.
    pub fn count(&self) -> usize {
        self.eml_names().len()
    }

    fn eml_names(&self) -> Vec<String> {
        let mut names: Vec<String> = match fs::read_dir(self.dir.join("new")) {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".eml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        names.sort();
        names
    }

    /// Every stored message, in arrival order.
    pub fn messages(&self) -> Vec<Message> {
        self.eml_names()
            .iter()
            .map(|name| {
                let path = self.dir.join("new").join(name);
                let env = read_lossy(&path.with_extension("env"));
                let mut mail_from = String::new();
                let mut rcpt_to = Vec::new();
                for line in env.lines() {
                    if let Some(a) = line.strip_prefix("MAIL FROM:") {
                        mail_from = unbracket(a);
                    } else if let Some(a) = line.strip_prefix("RCPT TO:") {
                        rcpt_to.push(unbracket(a));
                    }
                }
                let data = fs::read(&path).expect("read stored message");
                Message {
                    mail_from,
                    rcpt_to,
                    data,
                    path,
                }
            })
            .collect()
    }

    /// Waits until at least `n` messages are stored and returns all of them.
    pub fn wait_for_messages(&self, n: usize, timeout: Duration) -> Vec<Message> {
        wait_until(
            timeout,
            || (self.count() >= n).then(|| self.messages()),
            || {
                format!(
                    "sink on port {} has {} of {n} messages; last events: {:?}\n--- sink stderr ---\n{}",
                    self.port,
                    self.count(),
                    self.events().iter().rev().take(10).collect::<Vec<_>>(),
                    read_lossy(&self.stderr_path())
                )
            },
        )
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop();
    }
}

fn unbracket(a: &str) -> String {
    let a = a.trim();
    a.strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(a)
        .to_string()
}

// ---------------------------------------------------------------------------------------
// A raw SMTP client
// ---------------------------------------------------------------------------------------

/// One SMTP reply: its code and the text of each line (after `NNN-` / `NNN `).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as it came on the wire, lines joined by `\n` without CRLF.
    pub fn raw(&self) -> String {
        let n = self.lines.len();
        self.lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let sep = if i + 1 == n { ' ' } else { '-' };
                if l.is_empty() && i + 1 == n {
                    format!("{}", self.code)
                } else {
                    format!("{}{sep}{l}", self.code)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }
}

/// Opens a TCP connection to `addr`, from `source` if given (any loopback address works as
/// a source on Linux, which is how tests pose as the untrusted 127.0.0.2).
pub fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.connect_timeout(&addr.into(), Duration::from_secs(10))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    stream.set_write_timeout(Some(Duration::from_secs(60)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A line-oriented SMTP client over a plain TCP stream: it sends exactly the bytes it is
/// given, which is what smuggling and relay tests need.
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl SmtpClient {
    /// Connects (from `source` if given) and reads the greeting.
    pub fn connect(
        addr: SocketAddr,
        source: Option<IpAddr>,
    ) -> std::io::Result<(SmtpClient, Reply)> {
        let stream = connect(addr, source)?;
        let writer = stream.try_clone()?;
        let mut client = SmtpClient {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = client.read_reply()?;
        Ok((client, greeting))
    }

    /// Connects and panics unless the greeting is 220.
    pub fn open(addr: SocketAddr, source: Option<IpAddr>) -> SmtpClient {
        let (client, greeting) = SmtpClient::connect(addr, source)
            .unwrap_or_else(|e| panic!("connect to {addr} from {source:?}: {e}"));
        assert_eq!(greeting.code, 220, "greeting: {}", greeting.raw());
        client
    }

    /// Reads one (possibly multi-line) reply.
    pub fn read_reply(&mut self) -> std::io::Result<Reply> {
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            let n = self.reader.read_until(b'\n', &mut buf)?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed; partial reply {lines:?}"),
                ));
            }
            let line = String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_string();
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("bad reply line {line:?}"),
                )
            })?;
            let sep = line.as_bytes().get(3).copied();
            lines.push(line.get(4..).unwrap_or("").to_string());
            match sep {
                Some(b'-') => continue,
                None | Some(b' ') => return Ok(Reply { code, lines }),
                Some(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("bad reply line {line:?}"),
                    ))
                }
            }
        }
    }

    /// Writes `bytes` as they are.
    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()
    }

    /// Sends `line` + CRLF and reads the reply.
    pub fn try_command(&mut self, line: &str) -> std::io::Result<Reply> {
        self.write_raw(format!("{line}\r\n").as_bytes())?;
        self.read_reply()
    }

    /// Sends `line` + CRLF and returns the reply; panics on IO errors.
    pub fn command(&mut self, line: &str) -> Reply {
        self.try_command(line)
            .unwrap_or_else(|e| panic!("SMTP command {line:?}: {e}"))
    }

    /// Sends `line` and panics unless the reply code is `code`.
    pub fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.command(line);
        assert_eq!(reply.code, code, "{line:?} got {}", reply.raw());
        reply
    }

    /// Sends `DATA`, expects 354, sends `body` (already dot-stuffed, lines ending in CRLF)
    /// and the final `.`; returns the reply to the final dot.
    pub fn data(&mut self, body: &str) -> Reply {
        self.expect("DATA", 354);
        let mut bytes = body.as_bytes().to_vec();
        if !bytes.ends_with(b"\r\n") {
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b".\r\n");
        self.write_raw(&bytes).expect("write message data");
        self.read_reply().expect("reply to end of data")
    }

    /// Sends QUIT and expects 221 (ignores a connection the server already closed).
    pub fn quit(mut self) {
        if let Ok(reply) = self.try_command("QUIT") {
            assert_eq!(reply.code, 221, "QUIT got {}", reply.raw());
        }
    }

    /// Reads until the server closes the connection; returns what came (for asserting
    /// that the server hung up).
    pub fn read_to_end(&mut self) -> std::io::Result<Vec<u8>> {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest)?;
        Ok(rest)
    }

    /// The whole transaction: MAIL, each RCPT (each must get 250), DATA with `body`;
    /// returns the reply to the final dot.
    pub fn send_message(&mut self, from: &str, to: &[&str], body: &str) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250);
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250);
        }
        self.data(body)
    }
}

/// Connects from `source` (if given), checks the 220 greeting, then sends each command
/// (CRLF appended) and asserts its reply code. Returns the replies, greeting first.
///
/// To send message data, make the step after `("DATA", 354)` the body followed by a line
/// with a single dot, without the final CRLF: `("Subject: x\r\n\r\nhello\r\n.", 250)`.
pub fn smtp_dialogue(
    addr: SocketAddr,
    source: Option<IpAddr>,
    steps: &[(&str, u16)],
) -> Vec<Reply> {
    let (mut client, greeting) = SmtpClient::connect(addr, source)
        .unwrap_or_else(|e| panic!("connect to {addr} from {source:?}: {e}"));
    assert_eq!(greeting.code, 220, "greeting: {}", greeting.raw());
    let mut replies = vec![greeting];
    for (command, code) in steps {
        let reply = client.command(command);
        assert_eq!(
            reply.code,
            *code,
            "{command:?} from {source:?} got {}\n(dialogue so far: {replies:?})",
            reply.raw()
        );
        replies.push(reply);
    }
    replies
}

/// Connects from `source` (if given), writes `bytes` in one go, and returns everything
/// the server sent until it closed the connection (include a QUIT) or stayed silent for
/// `quiet` after the last byte.
pub fn send_raw(addr: SocketAddr, source: Option<IpAddr>, bytes: &[u8]) -> String {
    send_raw_with_quiet(addr, source, bytes, Duration::from_secs(10))
}

pub fn send_raw_with_quiet(
    addr: SocketAddr,
    source: Option<IpAddr>,
    bytes: &[u8],
    quiet: Duration,
) -> String {
    let mut stream =
        connect(addr, source).unwrap_or_else(|e| panic!("connect to {addr} from {source:?}: {e}"));
    stream.set_read_timeout(Some(quiet)).expect("set timeout");
    stream.write_all(bytes).expect("write raw bytes");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("read from {addr}: {e}"),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The codes of the reply lines in `text` that end a reply (`NNN ` or `NNN`), in order.
pub fn reply_codes(text: &str) -> Vec<u16> {
    text.split("\r\n")
        .filter(|l| l.len() >= 3 && l.as_bytes().get(3) != Some(&b'-'))
        .filter_map(|l| l[..3].parse().ok())
        .collect()
}

/// Runs a command to completion with a time limit; returns (status, stdout, stderr).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_t = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = match wait_with_timeout(&mut child, timeout) {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
    };
    let out = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let err = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    (status, out, err)
}

/// A free port on 127.0.0.1, reserved for this test process: for programs whose command
/// line or configuration wants a port number up front (`pvo quickstart --smtp-port`,
/// `clamd`, chromedriver, a port a commit moves a server to). It comes from outside the
/// kernel's ephemeral range with a lock per port (see `support/ports.rs`), so no `port = 0`
/// bind, outgoing connection or other test takes it before the program binds it, or while
/// the program is down for a restart. A node's own listeners bind `port = 0` instead and
/// report what they got.
pub fn free_port() -> u16 {
    ports::reserve_port(&[TRUSTED])
}

/// [`free_port`] on `ip` (any loopback address): for ports that must be known before a
/// node starts, such as the CPQ ports that enrollment and a gateway's `[cpq] manager`
/// name up front.
pub fn free_port_on(ip: IpAddr) -> u16 {
    ports::reserve_port(&[ip])
}

// ---------------------------------------------------------------------------------------
// CPQ nodes: a directory prepared before the node starts
// ---------------------------------------------------------------------------------------

/// The `name`s of the `[[listener]]` tables of a configuration, plus `cpq_listener` when
/// it has a `[cpq]` section (the hidden listener that section adds).
pub fn configured_listeners(config_toml: &str) -> Vec<String> {
    let table: toml::Table = config_toml
        .parse()
        .unwrap_or_else(|e| panic!("test configuration is not TOML: {e}\n{config_toml}"));
    let mut names: Vec<String> = table
        .get("listener")
        .and_then(|l| l.as_array())
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l.get("name").and_then(|n| n.as_str()).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if table.contains_key("cpq") {
        names.push("cpq_listener".into());
    }
    names
}

/// A node's directory with its `pvo.toml` written but the node not started yet, so that
/// something can happen in between: a gateway must be enrolled on the manager (its
/// certificate written into `DIR/cpq`) before either starts.
pub struct NodeDir {
    dir: tempfile::TempDir,
}

impl NodeDir {
    /// Writes `config_toml` (which should use `data_dir = "."`) to `DIR/pvo.toml`.
    pub fn new(config_toml: &str) -> NodeDir {
        let dir = tempfile::Builder::new()
            .prefix("pvo-node-")
            .tempdir()
            .expect("create node dir");
        fs::write(dir.path().join("pvo.toml"), config_toml).expect("write pvo.toml");
        NodeDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("pvo.toml")
    }

    /// `DIR/cpq`: the default `[cpq] dir` (certificates) with `data_dir = "."`.
    pub fn cpq_dir(&self) -> PathBuf {
        self.dir.path().join("cpq")
    }

    /// Replaces `pvo.toml`.
    pub fn write_config(&self, config_toml: &str) {
        fs::write(self.config_path(), config_toml).expect("write pvo.toml");
    }

    fn start(self, args: &[&str]) -> Node {
        self.start_under(&[], args)
    }

    fn start_under(self, prefix: &[&str], args: &[&str]) -> Node {
        let text = fs::read_to_string(self.config_path()).expect("read pvo.toml");
        let names = configured_listeners(&text);
        let config = self.config_path().to_string_lossy().into_owned();
        let data_dir = self.dir.path().to_path_buf();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.as_str()]);
        Node::start_under(prefix, self.dir, data_dir, &all, Listeners::Named(names))
    }

    /// `pvo gateway run` inside the network namespace `ns`.
    pub fn start_gateway_in(self, ns: &Namespace) -> Node {
        self.start_under(&["ip", "netns", "exec", &ns.name], &["gateway", "run"])
    }

    /// `pvo manager run` inside the network namespace `ns`.
    pub fn start_manager_in(self, ns: &Namespace) -> Node {
        self.start_under(&["ip", "netns", "exec", &ns.name], &["manager", "run"])
    }

    /// `pvo gateway run`; returns once every listener, `cpq_listener` included, is up.
    pub fn start_gateway(self) -> Node {
        self.start(&["gateway", "run"])
    }

    /// `pvo manager run`; returns once its `cpq_listener` is up.
    pub fn start_manager(self) -> Node {
        self.start(&["manager", "run"])
    }
}

impl Node {
    /// Writes `config_toml` (a `[node] role = "manager"` configuration) and runs `pvo
    /// manager run` on it; returns once its `cpq_listener` accepts connections.
    pub fn start_manager(config_toml: &str) -> Node {
        NodeDir::new(config_toml).start_manager()
    }
}

/// [`free_port`] free on every one of `ips` (`pvo quickstart --cpq-port` listens on the
/// same port on 127.0.0.1 and 127.0.0.2).
pub fn free_port_on_all(ips: &[IpAddr]) -> u16 {
    ports::reserve_port(ips)
}

// ---------------------------------------------------------------------------------------
// Network namespaces (scenario 3 of docs/appliance.md: no route from an interface)
// ---------------------------------------------------------------------------------------

/// A network namespace joined to ours by a veth pair, for scenario 3 of `docs/appliance.md`:
///
/// - here: `10.213.K.1/24` on `pvodiagKa`, and `10.214.K.1/32` on the same link;
/// - in the namespace: `10.213.K.2/24` on `pvodiagKb`, and no other route at all.
///
/// From 10.213.K.1 the namespace is reachable. From 10.214.K.1 a SYN arrives but the
/// namespace has no route back, so the connection times out: "no route to the manager
/// from the default delivery interface". 10.213.K.3 is on the link but nobody has it, so
/// ARP fails: "No route to host". All of it stays inside this machine.
pub struct Namespace {
    pub name: String,
    link: String,
    k: usize,
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            format!("cannot run `ip` ({e}); install iproute2 (scripts/install-test-deps)")
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Namespace {
    pub fn create() -> Namespace {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pvo-diag-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        if let Err(e) = ip(&["netns", "add", &name]) {
            panic!(
                "this test needs network namespaces, which need root (CI runs the tests as root): {e}"
            );
        }
        let mut ns = Namespace {
            name,
            link: String::new(),
            k: 0,
        };
        // Claim a free link name and subnet: `ip link add` fails if another test (or
        // another test run) has the name.
        let start = std::process::id() as usize;
        for i in 0..250 {
            let k = (start + i) % 250 + 1;
            let link = format!("pvodiag{k}a");
            if ip(&[
                "link",
                "add",
                &link,
                "type",
                "veth",
                "peer",
                "name",
                &format!("pvodiag{k}b"),
            ])
            .is_ok()
            {
                ns.link = link;
                ns.k = k;
                break;
            }
        }
        assert!(ns.k != 0, "no free veth name pvodiag1a..pvodiag250a");
        let k = ns.k;
        let setup: Vec<Vec<String>> = vec![
            vec![
                "link".into(),
                "set".into(),
                format!("pvodiag{k}b"),
                "netns".into(),
                ns.name.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("10.213.{k}.1/24"),
                "dev".into(),
                ns.link.clone(),
            ],
            vec![
                "addr".into(),
                "add".into(),
                format!("10.214.{k}.1/32"),
                "dev".into(),
                ns.link.clone(),
            ],
            vec!["link".into(), "set".into(), ns.link.clone(), "up".into()],
            vec![
                "-n".into(),
                ns.name.clone(),
                "addr".into(),
                "add".into(),
                format!("10.213.{k}.2/24"),
                "dev".into(),
                format!("pvodiag{k}b"),
            ],
            vec![
                "-n".into(),
                ns.name.clone(),
                "link".into(),
                "set".into(),
                format!("pvodiag{k}b"),
                "up".into(),
            ],
            vec![
                "-n".into(),
                ns.name.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for args in setup {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ip(&args).unwrap_or_else(|e| panic!("setting up the test namespace: {e}"));
        }
        ns
    }

    /// A point-to-point link (a veth pair, a /30 of 10.216.0.0/16) from this namespace to
    /// `other`, as between two hosts on one cable; answers (this end's address, the other
    /// end's). Deleted with either namespace.
    pub fn link_to(&self, other: &Namespace) -> (String, String) {
        // Names free here may be taken inside namespaces they were moved to: each link of
        // this process starts its search further on.
        use std::sync::atomic::{AtomicUsize, Ordering};
        static LINKS: AtomicUsize = AtomicUsize::new(0);
        let start = std::process::id() as usize * 7 + LINKS.fetch_add(1, Ordering::SeqCst) * 97;
        for i in 0..16_000 {
            let n = (start + i) % 16_000 + 1;
            let (a, b) = (format!("pvol{n}a"), format!("pvol{n}b"));
            if ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]).is_err() {
                continue;
            }
            let (hi, lo) = (n / 64, (n % 64) * 4);
            let (here, there) = (
                format!("10.216.{hi}.{}", lo + 1),
                format!("10.216.{hi}.{}", lo + 2),
            );
            for (dev, ns, addr) in [(&a, self, &here), (&b, other, &there)] {
                let cidr = format!("{addr}/30");
                let steps: [Vec<&str>; 3] = [
                    vec!["link", "set", dev, "netns", &ns.name],
                    vec!["-n", &ns.name, "addr", "add", &cidr, "dev", dev],
                    vec!["-n", &ns.name, "link", "set", dev, "up"],
                ];
                for args in steps {
                    ip(&args).unwrap_or_else(|e| panic!("linking two test namespaces: {e}"));
                }
            }
            return (here, there);
        }
        panic!("no free veth name pvol1a..pvol16000a");
    }

    /// A route in this namespace to `address` (another namespace's [`Namespace::inside`])
    /// through `via` (the far end of a [`Namespace::link_to`] link), as a host reaches
    /// another's address over the cable between them.
    pub fn route(&self, address: &str, via: &str) {
        let to = format!("{address}/32");
        ip(&["-n", &self.name, "route", "add", &to, "via", via])
            .unwrap_or_else(|e| panic!("routing between two test namespaces: {e}"));
    }

    pub fn reachable_local(&self) -> String {
        format!("10.213.{}.1", self.k)
    }
    pub fn unroutable_local(&self) -> String {
        format!("10.214.{}.1", self.k)
    }
    pub fn inside(&self) -> String {
        format!("10.213.{}.2", self.k)
    }
    pub fn nobody(&self) -> String {
        format!("10.213.{}.3", self.k)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth pair, and with it ours.
        let _ = ip(&["netns", "del", &self.name]);
        if !self.link.is_empty() {
            let _ = ip(&["link", "del", &self.link]);
        }
    }
}

/// The address of the `Web listening on https://IP:PORT` line the node printed on stdout
/// since its latest (re)start (a restarted node's web port may have changed).
pub fn web_addr(node: &Node) -> SocketAddr {
    wait_until(
        Node::START_TIMEOUT,
        || {
            node.stdout_since_start()
                .lines()
                .find_map(|l| l.strip_prefix("Web listening on https://"))
                .and_then(|a| a.trim().parse().ok())
        },
        || {
            format!(
                "no `Web listening on` line in {} since the latest start",
                node.stdout_path().display()
            )
        },
    )
}

/// The address of the `SSH listening on IP:PORT` line the node printed on stdout since
/// its latest (re)start.
pub fn ssh_addr(node: &Node) -> SocketAddr {
    wait_until(
        Node::START_TIMEOUT,
        || {
            node.stdout_since_start()
                .lines()
                .find_map(|l| l.strip_prefix("SSH listening on "))
                .and_then(|a| a.trim().parse().ok())
        },
        || {
            format!(
                "no `SSH listening on` line in {} since the latest start",
                node.stdout_path().display()
            )
        },
    )
}

/// The port of [`ssh_addr`].
pub fn ssh_port(node: &Node) -> u16 {
    ssh_addr(node).port()
}

/// OpenSSH's client (`ssh`) with no configuration file, no known hosts (any host key is
/// taken), no agent, errors only and a 20 s connect timeout; the caller adds how to log
/// in, where, and the command.
pub fn openssh() -> Command {
    let mut c = Command::new("ssh");
    c.args([
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "IdentityAgent=none",
    ]);
    c
}

/// A finished process's exit status, stdout and stderr, for an assertion's message.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How long a test waits for a log line or a metric that the node is about to produce.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Waits for a line of `node`'s mail_logs (since its latest start) containing every one
/// of `needles`; returns the first such line.
pub fn wait_line(node: &Node, needles: &[&str]) -> String {
    let found = |log: &str| {
        log.lines()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    };
    let log = node.wait_for_log_matching(
        EVENT_TIMEOUT,
        |log| found(log).is_some(),
        &needles.join(" … "),
    );
    found(&log).unwrap()
}

/// The number right after `key` in `line` (`number_after(l, "DCID ")`).
pub fn number_after(line: &str, key: &str) -> Option<u64> {
    let rest = &line[line.find(key)? + key.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The MID in the end-of-data reply `250 2.0.0 Ok: Message N accepted`.
pub fn accepted_mid(reply: &Reply) -> u64 {
    let text = reply.lines.last().map(String::as_str).unwrap_or("");
    text.split_once("Message ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {}", reply.raw()))
}

/// Standard base64 (RFC 4648, padded, one line), from the `base64` crate (not from PVO's
/// code, so what the tests send does not depend on the code under test).
pub fn base64(data: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data)
}

/// `node`'s `/metrics` page (on its web port); panics unless it answers 200.
pub fn scrape(node: &Node) -> String {
    let (code, body) = https(web_addr(node), "GET", "/metrics", None, None);
    assert_eq!(code, 200, "{body}");
    body
}

/// The value of the sample `series` (name with its labels) in a `/metrics` page.
pub fn metric(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until the sample `series` of `node`'s `/metrics` satisfies `ok`; returns it.
pub fn wait_metric(node: &Node, series: &str, ok: impl Fn(u64) -> bool) -> u64 {
    let last = std::cell::RefCell::new(String::new());
    wait_until(
        EVENT_TIMEOUT,
        || {
            let page = scrape(node);
            let v = metric(&page, series).filter(|v| ok(*v));
            *last.borrow_mut() = page;
            v
        },
        || format!("{series} never as expected in:\n{}", last.borrow()),
    )
}

/// One HTTPS request with Python's `http.client` (the node's certificate is
/// self-signed: not verified): (status, body).
pub fn https(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    const SCRIPT: &str = r#"
import http.client, ssl, sys
host, port, method, path, token, body = sys.argv[1:7]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
c = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=60)
headers = {}
if token:
    headers["Authorization"] = "Bearer " + token
if body:
    headers["Content-Type"] = "application/json"
c.request(method, path, body=body.encode() if body else None, headers=headers)
r = c.getresponse()
sys.stdout.write(str(r.status) + "\n")
sys.stdout.write(r.read().decode("utf-8", "replace"))
"#;
    let out = std::process::Command::new(SYSTEM_PYTHON)
        .args(["-c", SCRIPT])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .args([method, path, token.unwrap_or(""), body.unwrap_or("")])
        .output()
        .expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, rest) = text.split_once('\n').unwrap_or_else(|| {
        panic!(
            "{method} {path}: no answer: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (
        status.trim().parse().expect("HTTP status"),
        rest.to_string(),
    )
}

// ---------------------------------------------------------------------------------------
// A real browser: headless Chromium over WebDriver
// ---------------------------------------------------------------------------------------

/// Headless Chromium (Debian `chromium`) driven by `chromedriver` (Debian
/// `chromium-driver`) on a free port, with a fresh profile; the node's self-signed
/// certificate is accepted. Call [`Browser::close`] at the end (it also ends Chromium);
/// dropping only kills chromedriver.
pub struct Browser {
    pub client: fantoccini::Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// How long a page or an element may take to appear.
    pub const WAIT: Duration = Duration::from_secs(60);

    pub async fn start() -> Browser {
        let port = free_port();
        let profile = tempfile::Builder::new()
            .prefix("pvo-chromium-")
            .tempdir()
            .expect("profile dir");
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (scripts/install-test-deps installs chromium-driver)");
        let mut browser_driver = Some(driver);
        wait_until(
            Duration::from_secs(30),
            || TcpStream::connect(("127.0.0.1", port)).ok(),
            || format!("chromedriver did not listen on port {port}"),
        );
        let caps = serde_json::json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--no-first-run",
                    "--ignore-certificate-errors",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let mut builder = fantoccini::ClientBuilder::new(
            hyper_util::client::legacy::connect::HttpConnector::new(),
        );
        builder.capabilities(caps.as_object().unwrap().clone());
        let client = match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(c) => c,
            Err(e) => {
                let _ = browser_driver.as_mut().unwrap().kill();
                panic!("no WebDriver session with Chromium: {e}");
            }
        };
        Browser {
            client,
            driver: browser_driver.take().unwrap(),
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + Self::WAIT;
        loop {
            match self.client.find(fantoccini::Locator::Css(css)).await {
                Ok(e) => return e,
                Err(e) if Instant::now() > deadline => {
                    let page = self.client.source().await.unwrap_or_default();
                    panic!("no element {css:?} ({e}) on the page:\n{page}");
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<fantoccini::elements::Element> {
        self.client
            .find_all(fantoccini::Locator::Css(css))
            .await
            .unwrap_or_default()
    }

    /// Types into the field matching `css` (after clearing it).
    pub async fn fill(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// The visible text of the element matching `css` (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        self.text_with(css, "").await
    }

    /// The visible text of the element matching `css` once it contains `needle` (a
    /// click's navigation may still be under way); after [`Self::WAIT`], whatever it
    /// says, for the caller's assertion.
    pub async fn text_with(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Self::WAIT;
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Ok(e) = self.client.find(fantoccini::Locator::Css(css)).await {
                // A page being replaced: the element may go stale; look again.
                if let Ok(t) = e.text().await {
                    if t.contains(needle) {
                        return t;
                    }
                    last = t;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        last
    }

    /// The page's HTML.
    pub async fn source(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// The current URL's path.
    pub async fn path(&self) -> String {
        self.client
            .current_url()
            .await
            .map(|u| u.path().to_string())
            .unwrap_or_default()
    }

    /// Ends the WebDriver session (and Chromium), then chromedriver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
