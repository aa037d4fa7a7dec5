//! The few steps most tests of a running gateway share: the `pvo` command line against
//! its data directory, its initial Administrator password and API tokens, and a relayed
//! message sent from 127.0.0.1 (and waited for in a quarantine).
//!
//! The command line comes in one set of shapes, so that every test module runs `pvo` the
//! same way: [`pvo`] (what it printed, whatever the outcome, as an [`Out`]), [`text`]
//! (must succeed: its stdout), [`json`] (`--json`, must answer `"ok": true`: its `data`),
//! [`pvo_try`] (success and everything printed) and [`ok`] (must succeed: everything
//! printed). Each has an `_in` form for a data directory without a [`Node`].

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{
    free_port, free_port_on_all, pvo_bin, run_with_timeout, Listeners, Node, NodeDir, SmtpClient,
    MANAGER_IP, TRUSTED,
};

/// How long a relayed message may take to reach its quarantine.
const QUARANTINED: Duration = Duration::from_secs(60);

/// How long one `pvo` command may run before the test fails: long enough for a loaded
/// two-core machine; a command that takes longer has hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What one `pvo` command printed.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Panics unless the command succeeded (naming it `what`); returns its stdout.
    pub fn ok(self, what: &str) -> String {
        assert!(
            self.status.success(),
            "`pvo {what}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self.stdout
    }

    /// Everything it printed: stdout, then stderr.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `pvo --dir DIR ARGS` (stdin is not a terminal), within [`COMMAND_TIMEOUT`].
pub fn pvo_in(dir: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new(pvo_bin());
    cmd.arg("--dir").arg(dir).args(args);
    let (status, stdout, stderr) = run_with_timeout(&mut cmd, COMMAND_TIMEOUT);
    Out {
        status,
        stdout,
        stderr,
    }
}

/// `pvo --dir DATA_DIR ARGS` against `node`.
pub fn pvo(node: &Node, args: &[&str]) -> Out {
    pvo_in(&node.data_dir(), args)
}

/// A command that must succeed; its stdout. A failure shows the node's mail_logs too.
pub fn text(node: &Node, args: &[&str]) -> String {
    let out = pvo(node, args);
    assert!(
        out.status.success(),
        "`pvo --dir {} {}` failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- mail_logs ---\n{}",
        node.data_dir().display(),
        args.join(" "),
        out.status,
        out.stdout,
        out.stderr,
        node.mail_logs()
    );
    out.stdout
}

/// [`text`] for a data directory without a [`Node`].
pub fn text_in(dir: &Path, args: &[&str]) -> String {
    pvo_in(dir, args).ok(&args.join(" "))
}

/// A command with `--json` that must succeed with `"ok": true` and a `text`; its `data`.
pub fn json(node: &Node, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    json_data(&all, &text(node, &all))
}

/// [`json`] for a data directory without a [`Node`].
pub fn json_in(dir: &Path, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    json_data(&all, &text_in(dir, &all))
}

/// The `data` of the `{ok, data, text}` answer `out` of `pvo ARGS`, which must be `ok`.
fn json_data(args: &[&str], out: &str) -> Value {
    let v: Value = serde_json::from_str(out)
        .unwrap_or_else(|e| panic!("`pvo {}` printed no JSON ({e}):\n{out}", args.join(" ")));
    assert_eq!(v["ok"], true, "`pvo {}`: {v:#}", args.join(" "));
    assert!(
        v["text"].is_string(),
        "`pvo {}` has no text: {v:#}",
        args.join(" ")
    );
    v["data"].clone()
}

/// `pvo --dir DATA_DIR ARGS`: whether it succeeded, and everything it printed.
pub fn pvo_try(node: &Node, args: &[&str]) -> (bool, String) {
    let out = pvo(node, args);
    (out.status.success(), out.all())
}

/// A command that must succeed; everything it printed.
pub fn ok(node: &Node, args: &[&str]) -> String {
    let (good, out) = pvo_try(node, args);
    assert!(good, "`pvo {}` failed:\n{out}", args.join(" "));
    out
}

/// Parses `text` as JSON; panics with the text unless it is.
pub fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// `pvo --dir DATA_DIR ARGS --json`; panics (with stdout and stderr) unless it succeeds;
/// the JSON it printed on stdout (the whole `{ok, data, text}` answer).
pub fn pvo_json(node: &Node, args: &[&str]) -> Value {
    pvo_json_in(&node.data_dir(), args)
}

/// [`pvo_json`] for a data directory without a [`Node`].
pub fn pvo_json_in(dir: &Path, args: &[&str]) -> Value {
    let out = Command::new(pvo_bin())
        .arg("--dir")
        .arg(dir)
        .args(args)
        .arg("--json")
        .output()
        .expect("run pvo");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`pvo {}` failed: {text}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_json(&text)
}

/// `pvo --dir DATA_DIR ARGS` with `input` on stdin; panics unless it succeeds; what it
/// printed (stdout, then stderr).
pub fn pvo_stdin(node: &Node, args: &[&str], input: &str) -> String {
    let mut child = Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pvo");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("pvo output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "`pvo {}` failed: {text}",
        args.join(" ")
    );
    text
}

/// A new node user with `role` and `password` (`pvo userconfig new --password-stdin`).
pub fn new_user(node: &Node, name: &str, role: &str, password: &str) {
    pvo_stdin(
        node,
        &[
            "userconfig",
            "new",
            "--name",
            name,
            "--role",
            role,
            "--password-stdin",
        ],
        &format!("{password}\n"),
    );
}

/// The node's initial Administrator password (`run/initial-admin-password`).
pub fn initial_password(node: &Node) -> String {
    std::fs::read_to_string(node.data_dir().join("run/initial-admin-password"))
        .expect("initial admin password")
        .trim()
        .to_string()
}

/// A new API token for `user` (`pvo userconfig token new USER`).
pub fn new_token(node: &Node, user: &str) -> String {
    pvo_json(node, &["userconfig", "token", "new", user])["data"]["token"]
        .as_str()
        .expect("token")
        .to_string()
}

/// A new API token for `admin` in the data directory `dir` (a node started by other
/// means than [`Node`], e.g. `pvo quickstart`).
pub fn admin_token_in(dir: &Path) -> String {
    let out = Command::new(pvo_bin())
        .arg("--dir")
        .arg(dir)
        .args(["userconfig", "token", "new", "admin", "--json"])
        .output()
        .unwrap();
    let made: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    made["data"]["token"].as_str().expect("token").to_string()
}

/// Sends `Subject: SUBJECT` and `body` from sender@example.org to `rcpt`, from
/// 127.0.0.1 (relayed, so the outgoing mail policy applies); panics unless the end of
/// data gets 250; the MID of that reply.
pub fn send_relayed(node: &Node, rcpt: &str, subject: &str, body: &str) -> u64 {
    let mut c = SmtpClient::open(node.addr(), Some(TRUSTED));
    c.expect("EHLO client.test", 250);
    let r = c.send_message(
        "sender@example.org",
        &[rcpt],
        &format!("Subject: {subject}\r\n\r\n{body}\r\n"),
    );
    assert_eq!(r.code, 250, "end of data: {}", r.raw());
    c.quit();
    let line = r.lines.last().cloned().unwrap_or_default();
    line.split_whitespace()
        .skip_while(|w| *w != "Message")
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no MID in {line:?}"))
}

/// Waits for the log line `MID <mid> quarantined to "<quarantine>"`.
pub fn wait_quarantined_in(node: &Node, mid: u64, quarantine: &str) {
    node.wait_for_log(
        &format!("MID {mid} quarantined to \"{quarantine}\""),
        QUARANTINED,
    );
}

/// `pvo manager enroll --config MANAGER/pvo.toml ID --address IP --port PORT --out
/// GATEWAY/cpq` (the manager not running: the gateway goes into the manager's file);
/// panics unless it succeeded, wrote the gateway's certificate, key and CA, and added
/// the gateway to the manager's file.
pub fn enroll(manager: &NodeDir, gateway: &NodeDir, id: &str, ip: IpAddr, port: u16) {
    let mut cmd = Command::new(pvo_bin());
    cmd.args(["manager", "enroll", "--config"])
        .arg(manager.config_path())
        .arg(id)
        .args(["--address", &ip.to_string(), "--port", &port.to_string()])
        .arg("--out")
        .arg(gateway.cpq_dir());
    let (status, out, err) = run_with_timeout(&mut cmd, Duration::from_secs(60));
    assert!(
        status.success(),
        "enrolling {id}: {status}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"
    );
    for file in ["node.crt", "node.key", "ca.crt"] {
        assert!(
            gateway.cpq_dir().join(file).is_file(),
            "enroll wrote no {file} for {id}:\n{out}"
        );
    }
    let config = std::fs::read_to_string(manager.config_path()).unwrap();
    assert!(
        config.contains(&format!("id = \"{id}\"")),
        "enroll did not add gateway {id} to the manager's file:\n{config}"
    );
}

/// A node started by `pvo quickstart`.
pub struct Quickstart {
    /// The quickstart process (its gateway's listeners).
    pub node: Node,
    /// `DIR`: quickstart lays out `DIR/gateway` and `DIR/manager`.
    pub data: PathBuf,
    /// The gateway's SMTP port (`--smtp-port`).
    pub port: u16,
    /// The CPQ port, the same on the gateway (127.0.0.1) and the manager (127.0.0.2).
    pub cpq_port: u16,
}

/// `pvo quickstart --dir TMP/pvo-data --ssh-port 0 --web-port 0 --smtp-port PORT
/// EXTRA.. --cpq-port CPQ_PORT`, once its gateway's `IncomingMail` and `cpq_listener`
/// listen. quickstart takes its ports on the command line, so the test has to name
/// them: ports reserved by [`free_port`] (outside the kernel's ephemeral range, locked
/// for this test process), which also keeps them free for a restart on the same ports.
pub fn start_quickstart(extra: &[&str]) -> Quickstart {
    let tmp = tempfile::Builder::new()
        .prefix("pvo-quickstart-")
        .tempdir()
        .unwrap();
    let data = tmp.path().join("pvo-data");
    let port = free_port();
    let cpq_port = free_port_on_all(&[TRUSTED, MANAGER_IP]);
    let (smtp, cpq) = (port.to_string(), cpq_port.to_string());
    let mut args = vec![
        "quickstart",
        "--dir",
        data.to_str().unwrap(),
        "--ssh-port",
        "0",
        "--web-port",
        "0",
        "--smtp-port",
        &smtp,
    ];
    args.extend_from_slice(extra);
    args.extend(["--cpq-port", &cpq]);
    let expected = Listeners::Named(vec!["IncomingMail".into(), "cpq_listener".into()]);
    let node = Node::start_with_args(tmp, data.join("gateway"), &args, expected);
    Quickstart {
        node,
        data,
        port,
        cpq_port,
    }
}

/// A tokio runtime for the browser tests (one worker thread).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}
