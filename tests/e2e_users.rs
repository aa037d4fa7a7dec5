//! Users, roles, the audit trail and SSH, end to end: a real node with `[ssh] port = 0`,
//! the real OpenSSH client (`ssh`, keys made with `ssh-keygen`, passwords through
//! `SSH_ASKPASS`), and the `pvo` CLI.

use std::fs;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

const COMMAND: Duration = Duration::from_secs(60);
const DELIVERY: Duration = Duration::from_secs(60);

fn config(sink: &Sink) -> String {
    GatewayToml::new(sink)
        .rat(&["one.example", "two.example"])
        .ssh()
        .extra(QUARANTINE_TEST_FILTER)
        .extra(OUTGOING_POLICY)
        .build()
}

/// What a process printed.
struct Out {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Out {
    /// Asserts that the command failed (exit 1) saying `text` on stderr.
    #[track_caller]
    fn refused(&self, text: &str) {
        assert_eq!(self.status.code(), Some(1), "{}", self.both());
        assert!(self.stderr.contains(text), "{text:?} in:\n{}", self.both());
    }

    fn both(&self) -> String {
        format!(
            "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with `input` on its stdin, within `COMMAND`.
fn run(cmd: &mut Command, input: &[u8]) -> Out {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
        // Dropping stdin closes it: the end of the input.
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        let t = thread::spawn(move || {
            let _ = err.read_to_end(&mut e);
            e
        });
        let _ = out.read_to_end(&mut o);
        let e = t.join().unwrap_or_default();
        let status = child.wait();
        let _ = tx.send((status, o, e));
    });
    let (status, o, e) = rx
        .recv_timeout(COMMAND)
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within {COMMAND:?}"));
    Out {
        status: status.expect("wait"),
        stdout: String::from_utf8_lossy(&o).into_owned(),
        stderr: String::from_utf8_lossy(&e).into_owned(),
    }
}

fn pvo(node: &Node, args: &[&str], input: &[u8]) -> Out {
    let mut cmd = Command::new(pvo_bin());
    cmd.arg("--dir").arg(node.data_dir()).args(args);
    run(&mut cmd, input)
}

/// A `pvo` command that must succeed.
fn pvo_ok(node: &Node, args: &[&str], input: &[u8]) -> String {
    let out = pvo(node, args, input);
    assert!(
        out.status.success(),
        "`pvo {}` failed: {}",
        args.join(" "),
        out.both()
    );
    out.stdout
}

/// An ed25519 key pair made by ssh-keygen: (private key path, public key line).
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("{name}@test"))
            .arg("-f")
            .arg(&path),
        b"",
    );
    assert!(out.status.success(), "ssh-keygen: {}", out.both());
    let public = fs::read_to_string(path.with_extension("pub")).expect("public key");
    (path, public.trim().to_string())
}

/// The OpenSSH client against the node, with no user configuration, no known hosts and
/// no agent.
struct Ssh {
    addr: SocketAddr,
    askpass: PathBuf,
}

impl Ssh {
    fn new(node: &Node) -> Ssh {
        let askpass = node.dir().join("askpass.sh");
        fs::write(
            &askpass,
            "#!/bin/sh\nprintf '%s\\n' \"$PVO_TEST_PASSWORD\"\n",
        )
        .unwrap();
        fs::set_permissions(&askpass, fs::Permissions::from_mode(0o755)).unwrap();
        Ssh {
            addr: ssh_addr(node),
            askpass,
        }
    }

    fn base(&self, user: &str) -> Command {
        let mut c = openssh();
        c.arg("-p")
            .arg(self.addr.port().to_string())
            .arg("-l")
            .arg(user)
            .env_remove("SSH_AUTH_SOCK");
        c
    }

    /// Logs in with a key.
    fn with_key(&self, user: &str, key: &Path) -> Command {
        let mut c = self.base(user);
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PreferredAuthentications=publickey",
            "-i",
        ])
        .arg(key);
        c
    }

    /// Logs in with a password, given through SSH_ASKPASS.
    fn with_password(&self, user: &str, password: &str) -> Command {
        let mut c = self.base(user);
        c.args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "NumberOfPasswordPrompts=1",
        ])
        .env("SSH_ASKPASS", &self.askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("PVO_TEST_PASSWORD", password);
        c
    }

    fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// Runs one command as `user` logged in with `password`.
    fn exec(&self, user: &str, password: &str, cmd: &str) -> Out {
        run(
            self.with_password(user, password).arg(self.host()).arg(cmd),
            b"",
        )
    }
}

/// Sends a message from 127.0.0.1 (relayed, so the outgoing policy's filter runs) to
/// `rcpt`; returns the MID.
fn send(node: &Node, rcpt: &str, subject: &str) -> u64 {
    send_relayed(node, rcpt, subject, "hello")
}

/// The status text says `System status: Online` (columns aligned).
fn online(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with("System status:") && l.trim_end().ends_with("Online"))
}

fn mids_of(search: &Value) -> Vec<u64> {
    let mut m: Vec<u64> = search["data"]["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["mid"].as_u64().expect("mid"))
        .collect();
    m.sort();
    m
}

#[test]
fn ssh_exec_shell_keys_and_passwords_like_the_openssh_client_sees_them() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let dir = node.dir().to_path_buf();

    // First start: admin's generated password, printed once and kept in run/ (0600).
    let stdout = fs::read_to_string(dir.join("node.stdout.log")).unwrap();
    let printed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Initial password for admin: "))
        .expect("the initial password is printed")
        .to_string();
    let file = node.data_dir().join("run/initial-admin-password");
    assert_eq!(fs::read_to_string(&file).unwrap().trim(), printed);
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let host_key = node.data_dir().join("ssh/ssh_host_ed25519_key");
    assert_eq!(
        fs::metadata(&host_key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let ssh = Ssh::new(&node);
    let (key, public) = keygen(&dir, "admin_key");
    let (wrong_key, _) = keygen(&dir, "other_key");
    let listed = pvo_ok(
        &node,
        &["userconfig", "sshkey", "add", "admin", &public],
        b"",
    );
    assert!(listed.contains("admin_key@test"), "{listed}");

    // One-shot exec with the key: the status, exit 0.
    let out = run(
        ssh.with_key("admin", &key).arg(ssh.host()).arg("status"),
        b"",
    );
    assert!(out.status.success(), "{}", out.both());
    assert!(online(&out.stdout), "{}", out.both());
    // --json works, and a failing command exits 1 with its error on stderr.
    let out = run(
        ssh.with_key("admin", &key)
            .arg(ssh.host())
            .arg("quarantine search --json"),
        b"",
    );
    assert!(out.status.success(), "{}", out.both());
    assert_eq!(parse_json(&out.stdout)["ok"], true);
    let out = run(
        ssh.with_key("admin", &key)
            .arg(ssh.host())
            .args(["quarantine", "show", "999999"]),
        b"",
    );
    out.refused("MID 999999 is not held");
    // A command that would ask for confirmation does not wait for a terminal.
    let out = run(
        ssh.with_key("admin", &key)
            .arg(ssh.host())
            .args(["deleterecipients", "--all"]),
        b"",
    );
    out.refused("--yes");

    // Interactive, with a pty (ssh -tt): the prompt, two commands, exit.
    let out = run(
        ssh.with_key("admin", &key).arg("-tt").arg(ssh.host()),
        b"status\rtophosts\rexit\r",
    );
    assert!(out.status.success(), "{}", out.both());
    assert!(
        out.stdout.matches("gw1.example.com> ").count() >= 2,
        "{}",
        out.both()
    );
    assert!(online(&out.stdout), "{}", out.both());
    assert!(out.stdout.contains("Recipient Host"), "{}", out.both());
    // Without a pty, commands piped in are run the same way, until the end of input.
    let out = run(
        ssh.with_key("admin", &key).arg("-T").arg(ssh.host()),
        b"help\nstatus detail\n",
    );
    assert!(out.status.success(), "{}", out.both());
    assert!(out.stdout.contains("gw1.example.com> "), "{}", out.both());
    assert!(out.stdout.contains("userconfig"), "{}", out.both());
    assert!(online(&out.stdout), "{}", out.both());

    // Password login (the printed password), then a wrong password and a wrong key.
    let out = ssh.exec("admin", &printed, "status");
    assert!(out.status.success(), "{}", out.both());
    assert!(out.stdout.contains("System status"), "{}", out.both());
    let out = ssh.exec("admin", "not-the-password", "status");
    assert_eq!(out.status.code(), Some(255), "{}", out.both());
    assert!(out.stderr.contains("Permission denied"), "{}", out.both());
    assert!(!out.stdout.contains("System status"), "{}", out.both());
    let out = run(
        ssh.with_key("admin", &wrong_key)
            .arg(ssh.host())
            .arg("status"),
        b"",
    );
    assert_eq!(out.status.code(), Some(255), "{}", out.both());
    assert!(out.stderr.contains("Permission denied"), "{}", out.both());

    // The audit trail has the refused logins, from ssh and the client's address.
    let audit = parse_json(&pvo_ok(
        &node,
        &["auditlog", "--action", "login", "--json"],
        b"",
    ));
    let entries = audit["data"]["entries"].as_array().unwrap();
    let failed: Vec<&Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "failed")
        .collect();
    assert!(failed.len() >= 2, "{audit:#}");
    assert!(
        failed
            .iter()
            .all(|e| e["user"] == "admin"
                && e["from"].as_str().unwrap().starts_with("ssh 127.0.0.1:")),
        "{audit:#}"
    );
    assert!(
        failed.iter().any(|e| e["detail"] == "wrong password"),
        "{audit:#}"
    );
    assert!(entries.iter().any(|e| e["outcome"] == "ok"), "{audit:#}");

    // Changing admin's password retires the initial-password file.
    pvo_ok(
        &node,
        &["userconfig", "password", "admin", "--password-stdin"],
        b"a-new-admin-password\n",
    );
    assert!(!file.exists());
    let out = ssh.exec("admin", "a-new-admin-password", "status");
    assert!(out.status.success(), "{}", out.both());
}

#[test]
fn roles_limit_commands_and_quarantines_and_the_audit_trail_names_who_released_from_where() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let ssh = Ssh::new(&node);

    let one = send(&node, "x@one.example", "[quarantine-test] for one");
    let two = send(&node, "y@two.example", "[quarantine-test] for two");
    for mid in [one, two] {
        wait_quarantined_in(&node, mid, "Policy");
    }

    // An Operator named on Policy's access list, and a help desk for one.example.
    let made = pvo_ok(
        &node,
        &[
            "userconfig",
            "new",
            "--name",
            "op",
            "--role",
            "Operator",
            "--full-name",
            "Olga Operator",
            "--password-stdin",
        ],
        b"operator-password\n",
    );
    assert!(made.contains("Olga Operator"), "{made}");
    pvo_ok(
        &node,
        &["quarantineconfig", "edit", "Policy", "--access", "Operator"],
        b"",
    );
    pvo_ok(
        &node,
        &[
            "userconfig",
            "role",
            "new",
            "--name",
            "helpdesk-one",
            "--quarantines",
            "Policy",
            "--domains",
            "one.example",
        ],
        b"",
    );
    let made = parse_json(&pvo_ok(
        &node,
        &[
            "userconfig",
            "new",
            "--name",
            "hd",
            "--role",
            "helpdesk-one",
            "--json",
        ],
        b"",
    ));
    let hd_password = made["data"]["password"]
        .as_str()
        .expect("generated")
        .to_string();
    let tech = pvo_ok(
        &node,
        &[
            "userconfig",
            "new",
            "--name",
            "tech",
            "--role",
            "Technician",
            "--password-stdin",
        ],
        b"technician-password\n",
    );
    let list = pvo_ok(&node, &["userconfig"], b"");
    for want in [
        "Name",
        "Full name",
        "Role",
        "Status",
        "op",
        "Operator",
        "hd",
        "helpdesk-one",
        "tech",
        "Technician",
        "enabled",
    ] {
        assert!(list.contains(want), "{want}: {list}\n{tech}");
    }

    // The Operator searches both messages over SSH, but may not commit or manage users.
    let op = |cmd: &str| ssh.exec("op", "operator-password", cmd);
    let out = op("quarantine search --json");
    assert!(out.status.success(), "{}", out.both());
    assert_eq!(mids_of(&parse_json(&out.stdout)), vec![one, two]);
    let out = op("commit --comment nope");
    out.refused("Role \"Operator\" cannot change the configuration; it needs Administrator.");
    let out = op("userconfig new --name evil --role Administrator");
    out.refused("Role \"Operator\" cannot manage users and roles; it needs Administrator.");
    let out = op("quarantine copy 1 --to a@example.org");
    out.refused("needs Administrator");

    // A view-only custom role named on the access list sees both, and may not release.
    pvo_ok(
        &node,
        &[
            "userconfig",
            "role",
            "new",
            "--name",
            "auditors",
            "--view-only",
        ],
        b"",
    );
    pvo_ok(
        &node,
        &[
            "quarantineconfig",
            "edit",
            "Policy",
            "--access",
            "Operator,auditors",
        ],
        b"",
    );
    pvo_ok(
        &node,
        &[
            "userconfig",
            "new",
            "--name",
            "aud",
            "--role",
            "auditors",
            "--password-stdin",
        ],
        b"auditor-password\n",
    );
    let aud = |cmd: &str| ssh.exec("aud", "auditor-password", cmd);
    let out = aud("quarantine search --json");
    assert!(out.status.success(), "{}", out.both());
    assert_eq!(mids_of(&parse_json(&out.stdout)), vec![one, two]);
    let out = aud(&format!("quarantine delete {two} --yes"));
    out.refused("Role \"auditors\" cannot release, delete, delay or move quarantined messages");

    // The Technician sees the status, not the quarantines.
    let out = ssh.exec("tech", "technician-password", "status");
    assert!(out.status.success(), "{}", out.both());
    let out = ssh.exec("tech", "technician-password", "quarantine search");
    out.refused("Role \"Technician\" cannot access quarantines");

    // The help desk of one.example sees only its message, and cannot see the other.
    let hd = |cmd: &str| ssh.exec("hd", &hd_password, cmd);
    let out = hd("quarantine search --json");
    assert!(out.status.success(), "{}", out.both());
    assert_eq!(mids_of(&parse_json(&out.stdout)), vec![one]);
    let out = hd(&format!("quarantine show {two}"));
    out.refused(&format!(
        "MID {two} is not held in any quarantine you can access"
    ));
    let out = hd(&format!("quarantine release {two}"));
    assert_eq!(out.status.code(), Some(1), "{}", out.both());
    let out = hd("status");
    assert_eq!(out.status.code(), Some(1), "{}", out.both());

    // ... and releases its own, which is delivered and audited with where it came from.
    let out = hd(&format!("quarantine show {one}"));
    assert!(out.status.success(), "{}", out.both());
    let out = hd(&format!("quarantine release {one}"));
    assert!(out.status.success(), "{}", out.both());
    assert!(
        out.stdout.contains(&format!("MID {one} released")),
        "{}",
        out.both()
    );
    sink.wait_for_messages(1, DELIVERY);
    let audit = parse_json(&pvo_ok(
        &node,
        &["auditlog", "--mid", &one.to_string(), "--json"],
        b"",
    ));
    let entries = audit["data"]["entries"].as_array().unwrap();
    let release = entries
        .iter()
        .find(|e| e["action"] == "release")
        .unwrap_or_else(|| panic!("no release in {audit:#}"));
    assert_eq!(release["user"], "hd", "{audit:#}");
    assert_eq!(release["role"], "helpdesk-one", "{audit:#}");
    assert_eq!(release["outcome"], "ok", "{audit:#}");
    assert_eq!(release["mids"], serde_json::json!([one]), "{audit:#}");
    assert!(
        release["from"]
            .as_str()
            .unwrap()
            .starts_with("ssh 127.0.0.1:"),
        "{audit:#}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "view" && e["user"] == "hd"),
        "{audit:#}"
    );
    // Refusals are audited too; the text table names the columns.
    let refused = pvo_ok(&node, &["auditlog", "--user", "op"], b"");
    assert!(
        refused.contains("refused") && refused.contains("commit"),
        "{refused}"
    );

    // The CLI's --user runs as that user; a wrong password is refused and audited.
    let out = run(
        Command::new(pvo_bin())
            .arg("--dir")
            .arg(node.data_dir())
            .args(["--user", "op", "commit", "--comment", "x"])
            .env("PVO_PASSWORD", "operator-password"),
        b"",
    );
    out.refused("needs Administrator");
    let out = run(
        Command::new(pvo_bin())
            .arg("--dir")
            .arg(node.data_dir())
            .args(["--user", "op", "status"])
            .env("PVO_PASSWORD", "wrong-password"),
        b"",
    );
    out.refused("refused");
    let logins = parse_json(&pvo_ok(
        &node,
        &["auditlog", "--action", "login", "--user", "op", "--json"],
        b"",
    ));
    assert!(
        logins["data"]["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["outcome"] == "failed" && e["from"] == "local"),
        "{logins:#}"
    );
}

// ---------------------------------------------------------------------------------------
// Matched content: who may see what a filter or DLP policy matched
// ---------------------------------------------------------------------------------------

/// A node whose outgoing policy quarantines in Policy what a body regex matches
/// (`code-NNNN`) and what carries a payment card number (DLP).
fn matched_config(sink: &Sink) -> String {
    GatewayToml::new(sink)
        .ssh()
        .web()
        .extra(MATCHED_CONTENT)
        .build()
}

/// Sends `body` relayed from 127.0.0.1; returns the MID once it is quarantined.
fn send_body(node: &Node, subject: &str, body: &str) -> u64 {
    let mid = send_relayed(node, "x@one.example", subject, body);
    wait_quarantined_in(node, mid, "Policy");
    mid
}

/// `pvo --user USER ARGS --json` with the user's password; the answer's JSON.
fn as_user(node: &Node, user: &str, password: &str, args: &[&str]) -> Value {
    let out = run(
        Command::new(pvo_bin())
            .arg("--dir")
            .arg(node.data_dir())
            .args(["--user", user])
            .args(args)
            .arg("--json")
            .env("PVO_PASSWORD", password),
        b"",
    );
    assert!(out.status.success(), "{user}: {args:?}: {}", out.both());
    parse_json(&out.stdout)
}

/// The "why held" details of the Policy membership in a `quarantine show` answer.
fn policy_details(shown: &Value) -> Value {
    shown["data"]["quarantines"]
        .as_array()
        .unwrap_or_else(|| panic!("{shown:#}"))
        .iter()
        .find(|m| m["quarantine"] == "Policy")
        .unwrap_or_else(|| panic!("{shown:#}"))["details"]
        .clone()
}

#[test]
fn matched_content_is_shown_only_to_roles_that_may_see_it() {
    let sink = Sink::accepting();
    let node = Node::start(&matched_config(&sink));
    let code = send_body(&node, "codes", "Your code-4711 is inside.");
    let card = send_body(&node, "payment", "My card is 4111 1111 1111 1111.");

    pvo_ok(
        &node,
        &["quarantineconfig", "edit", "Policy", "--access", "Guest"],
        b"",
    );
    // Two custom roles on Policy: one without the flag (the default), one with it.
    pvo_ok(
        &node,
        &[
            "userconfig",
            "role",
            "new",
            "--name",
            "blind",
            "--quarantines",
            "Policy",
        ],
        b"",
    );
    pvo_ok(
        &node,
        &[
            "userconfig",
            "role",
            "new",
            "--name",
            "sighted",
            "--quarantines",
            "Policy",
            "--matched-content",
            "no",
        ],
        b"",
    );
    pvo_ok(
        &node,
        &[
            "userconfig",
            "role",
            "edit",
            "sighted",
            "--matched-content",
            "yes",
        ],
        b"",
    );
    let roles = pvo_ok(&node, &["userconfig", "role", "list"], b"");
    assert!(roles.contains("Matched content"), "{roles}");
    let line = |name: &str| {
        roles
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {roles}"))
            .to_string()
    };
    assert!(line("blind").contains("hidden"), "{roles}");
    assert!(line("sighted").contains("shown"), "{roles}");
    let listed = parse_json(&pvo_ok(
        &node,
        &["userconfig", "role", "list", "--json"],
        b"",
    ));
    let custom = listed["data"]["custom"].as_array().unwrap();
    let flag = |n: &str| custom.iter().find(|r| r["name"] == n).unwrap()["matched_content"].clone();
    assert_eq!(flag("blind"), false, "{listed:#}");
    assert_eq!(flag("sighted"), true, "{listed:#}");
    let bad = pvo(
        &node,
        &[
            "userconfig",
            "role",
            "edit",
            "blind",
            "--matched-content",
            "maybe",
        ],
        b"",
    );
    assert!(!bad.status.success(), "{}", bad.both());

    for (user, role) in [("gina", "Guest"), ("bea", "blind"), ("sam", "sighted")] {
        pvo_ok(
            &node,
            &[
                "userconfig",
                "new",
                "--name",
                user,
                "--role",
                role,
                "--password-stdin",
            ],
            format!("{user}-password-1\n").as_bytes(),
        );
    }

    // The Administrator sees what matched: the body text, the masked card sample.
    let admin_code = parse_json(&pvo_ok(
        &node,
        &["quarantine", "show", &code.to_string(), "--json"],
        b"",
    ));
    let d = policy_details(&admin_code);
    assert_eq!(d["evidence"][0]["matched"], "code-4711", "{admin_code:#}");
    assert_eq!(admin_code["data"]["matched_content_hidden"], false);
    let admin_card = parse_json(&pvo_ok(
        &node,
        &["quarantine", "show", &card.to_string(), "--json"],
        b"",
    ));
    let d = policy_details(&admin_card);
    let sample = d["detectors"][0]["samples"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{admin_card:#}"))
        .to_string();
    assert!(sample.ends_with("1111"), "{admin_card:#}");
    let text = pvo_ok(&node, &["quarantine", "show", &code.to_string()], b"");
    assert!(text.contains("matched: code-4711"), "{text}");

    // A Guest and the custom role without the flag: the marker instead, the rest stays.
    for (user, role) in [("gina", "Guest"), ("bea", "blind")] {
        let pw = format!("{user}-password-1");
        let marker = format!("(hidden: role {role} may not see matched content)");
        let shown = as_user(&node, user, &pw, &["quarantine", "show", &code.to_string()]);
        assert_eq!(shown["data"]["matched_content_hidden"], true, "{shown:#}");
        let d = policy_details(&shown);
        assert_eq!(d["evidence"][0]["matched"], marker.as_str(), "{shown:#}");
        assert_eq!(
            d["evidence"][0]["condition"], "body_regex \"code-[0-9]+\"",
            "{shown:#}"
        );
        assert!(!shown.to_string().contains("code-4711"), "{shown:#}");
        assert!(
            shown["data"]["quarantines"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("secret_codes"),
            "{shown:#}"
        );
        let shown = as_user(&node, user, &pw, &["quarantine", "show", &card.to_string()]);
        let d = policy_details(&shown);
        assert_eq!(
            d["detectors"][0]["samples"],
            serde_json::json!([marker]),
            "{shown:#}"
        );
        assert_eq!(d["detectors"][0]["detector"], "payment_card", "{shown:#}");
        assert_eq!(d["detectors"][0]["count"], 1, "{shown:#}");
        assert_eq!(d["policy"], "cards", "{shown:#}");
        assert!(!shown.to_string().contains(&sample), "{shown:#}");
        // The text says so too, and a search shows no matched text either.
        let out = run(
            Command::new(pvo_bin())
                .arg("--dir")
                .arg(node.data_dir())
                .args(["--user", user, "quarantine", "show", &code.to_string()])
                .env("PVO_PASSWORD", &pw),
            b"",
        );
        assert!(out.status.success(), "{}", out.both());
        assert!(out.stdout.contains(&marker), "{}", out.both());
        assert!(!out.stdout.contains("code-4711"), "{}", out.both());
        let found = as_user(&node, user, &pw, &["quarantine", "search"]);
        assert_eq!(mids_of(&found), {
            let mut m = vec![code, card];
            m.sort();
            m
        });
        assert!(!found.to_string().contains("code-4711"), "{found:#}");
        assert!(!found.to_string().contains(&sample), "{found:#}");
    }

    // Over SSH and the REST API (the same `quarantine show`): hidden for the Guest.
    let ssh = Ssh::new(&node);
    let out = ssh.exec(
        "gina",
        "gina-password-1",
        &format!("quarantine show {code}"),
    );
    assert!(out.status.success(), "{}", out.both());
    assert!(
        out.stdout
            .contains("(hidden: role Guest may not see matched content)")
            && !out.stdout.contains("code-4711"),
        "{}",
        out.both()
    );
    let token = parse_json(&pvo_ok(
        &node,
        &["userconfig", "token", "new", "gina", "--json"],
        b"",
    ))["data"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    let web = web_addr(&node);
    let (status, body) = https(
        web,
        "GET",
        &format!("/api/v1/messages/{code}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let api: Value = parse_json(&body);
    assert_eq!(api["matched_content_hidden"], true, "{api:#}");
    assert!(!body.contains("code-4711"), "{body}");
    let (status, body) = https(
        web,
        "GET",
        &format!("/api/v1/messages/{card}"),
        Some(&token),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(&sample), "{body}");
    let (status, body) = https(web, "GET", "/api/v1/messages", Some(&token), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&code.to_string()), "{body}");
    assert!(
        !body.contains("code-4711") && !body.contains(&sample),
        "{body}"
    );

    // The custom role with the flag sees it.
    let shown = as_user(
        &node,
        "sam",
        "sam-password-1",
        &["quarantine", "show", &code.to_string()],
    );
    assert_eq!(shown["data"]["matched_content_hidden"], false, "{shown:#}");
    assert_eq!(
        policy_details(&shown)["evidence"][0]["matched"],
        "code-4711"
    );
    let shown = as_user(
        &node,
        "sam",
        "sam-password-1",
        &["quarantine", "show", &card.to_string()],
    );
    assert_eq!(
        policy_details(&shown)["detectors"][0]["samples"][0],
        sample.as_str()
    );
}

/// `[ssh]` moves on commit: an administrator logged in over SSH moves the SSH service to
/// another port (`interfaceconfig edit Loopback --ssh PORT`, `commit`) and the session
/// goes on; another session, idle, is closed after the grace; the new port logs in, the
/// old one refuses; the web server is not restarted.
/// A commit to a port another program holds is refused with the section, the address
/// and the OS error, the server stays where it was and the change stays pending.
#[test]
fn commit_moves_the_ssh_server_and_refuses_a_taken_port() {
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).ssh().web().build());
    let dir = node.dir().to_path_buf();
    let mut ssh = Ssh::new(&node);
    let old = ssh.addr;
    let (key, public) = keygen(&dir, "admin_key");
    pvo_ok(
        &node,
        &["userconfig", "sshkey", "add", "admin", &public],
        b"",
    );

    // An idle interactive session on the old port, held open across the move.
    let held_out = dir.join("held-session.out");
    let mut held = ssh
        .with_key("admin", &key)
        .arg("-tt")
        .arg(ssh.host())
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&held_out).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn ssh");
    wait_until(
        COMMAND,
        || {
            fs::read_to_string(&held_out)
                .ok()
                .filter(|t| t.contains("> "))
        },
        || format!("no prompt in {}", held_out.display()),
    );

    let new = SocketAddr::new(old.ip(), free_port());
    let input = format!(
        "interfaceconfig edit Loopback --ssh {}\rcommit -m ssh-moves\rstatus --json\rexit\r",
        new.port()
    );
    let before_move = std::time::Instant::now();
    let out = run(
        ssh.with_key("admin", &key).arg("-tt").arg(ssh.host()),
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", out.both());
    // The held session is closed by the node after its grace (10 s), not before.
    let status = wait_until(
        COMMAND,
        || held.try_wait().expect("try_wait"),
        || "the session on the old port is still open".to_string(),
    );
    assert!(!status.success(), "{status}");
    assert!(
        before_move.elapsed() >= Duration::from_secs(10),
        "closed after {:?}",
        before_move.elapsed()
    );
    // The session that committed the move is still served after it.
    assert!(out.stdout.contains("\"ssh\":"), "{}", out.both());
    assert!(
        out.stdout.contains(&format!("\"{new}\"")),
        "status after the commit names the new address:\n{}",
        out.both()
    );

    let err = std::net::TcpStream::connect(old).expect_err("the old SSH port refuses");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    ssh.addr = new;
    let out = run(
        ssh.with_key("admin", &key).arg(ssh.host()).arg("status"),
        b"",
    );
    assert!(out.status.success(), "{}", out.both());
    assert!(online(&out.stdout), "{}", out.both());
    let status = pvo_json(&node, &["status"]);
    assert_eq!(status["data"]["ssh"], new.to_string(), "{status:#}");
    node.wait_for_log(&format!("SSH stopped listening on {old}"), COMMAND);
    node.wait_for_log(&format!("SSH listening on {new}"), COMMAND);
    let logs = node.mail_logs();
    assert_eq!(
        logs.matches("Web listening on").count(),
        1,
        "the web server was left alone:\n{logs}"
    );

    // A port another program listens on.
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap().port();
    pvo_ok(
        &node,
        &[
            "interfaceconfig",
            "edit",
            "Loopback",
            "--ssh",
            &taken.to_string(),
        ],
        b"",
    );
    let out = pvo(&node, &["commit", "-m", "ssh on a taken port"], b"");
    assert!(!out.status.success(), "{}", out.both());
    let text = out.both();
    assert!(
        text.contains(&format!("[ssh] cannot listen on 127.0.0.1:{taken}"))
            && text.contains("Address already in use")
            && text.contains("the changes stay pending"),
        "{text}"
    );
    let out = run(
        ssh.with_key("admin", &key).arg(ssh.host()).arg("status"),
        b"",
    );
    assert!(out.status.success(), "still on {new}: {}", out.both());
    assert_eq!(pvo_json(&node, &["status"])["data"]["ssh"], new.to_string());
    assert!(pvo_ok(&node, &["showconfig", "--pending"], b"").contains(&format!("port = {taken}")));
    drop(squatter);
}
