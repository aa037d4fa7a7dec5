//! End-to-end tests of the diagnostic commands `telnet` and `tlsverify`: a real
//! node, the real `pvo` CLI over the admin socket, and real servers on the other end.
//!
//! Peers: `tests/peers/sink.py` (plain SMTP, no STARTTLS), `tests/peers/tls_smtp.py`
//! (STARTTLS with a leaf certificate from a throwaway CA that each test makes with the
//! `openssl` command line), and `tests/peers/anon_tls_smtp.py` (STARTTLS with anonymous
//! ciphers only and no certificate: scenario 4 of `docs/appliance.md`, "no certificate from server").
//!
//! "An interface whose address cannot reach the target" (scenario 3 of `docs/appliance.md`) is a
//! network namespace joined to this one by a veth pair: the namespace knows the route
//! back to one of our addresses and not to the other, so a connection from the second
//! one times out. Everything stays inside the machine. That test needs root (CI runs as
//! root) and fails, saying so, without it.
//!
//! Needs `scripts/install-test-deps` (python3-aiosmtpd, openssl, iproute2).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::{
    free_port, peer_script, run_with_timeout, Namespace, Node, Sink, SYSTEM_PYTHON,
};

/// Generous for a debug build on two busy cores; commands end as soon as they are done.
const COMMAND: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// A node with one listener on 127.0.0.1, the interfaces `extra` (name, address) besides
/// `Loopback`, `default_interface` as the default delivery interface, and `ca_file` as
/// `tls.outbound.ca_file`.
fn node(extra: &[(&str, &str)], default_interface: &str, ca_file: Option<&Path>) -> Node {
    let mut interfaces = String::new();
    for (name, address) in extra {
        interfaces.push_str(&format!(
            "[[interface]]\nname = \"{name}\"\naddress = \"{address}\"\nhostname = \"{}.gw1.example.com\"\n\n",
            name.to_ascii_lowercase()
        ));
    }
    let ca = ca_file.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    Node::start(&format!(
        r#"[node]
hostname = "gw1.example.com"
data_dir = "."

[[interface]]
name = "Loopback"
address = "127.0.0.1"
hostname = "gw1.example.com"

{interfaces}[[policy]]
name = "RELAYED"
behavior = "relay"

[[listener]]
name = "IncomingMail"
interface = "Loopback"
port = 0
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

[[smtp_route]]
domain = "ALL"
maildir = "maildir"

[delivery]
default_interface = "{default_interface}"

[tls.outbound]
default = "off"
versions = ["1.2", "1.3"]
{ca}"#
    ))
}

/// What one `pvo --dir DATA_DIR ARGS` printed.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    /// Everything printed (text answers go to stdout on success, stderr on failure).
    fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }

    /// The `--json` answer.
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    fn assert_lines(&self, want: &[&str]) {
        let got = self.lines();
        assert_eq!(got, want, "\n--- got ---\n{}", self.text());
    }

    fn assert_has(&self, line: &str) {
        assert!(
            self.lines().iter().any(|l| l == line),
            "no line {line:?} in:\n{}",
            self.text()
        );
    }
}

fn pvo(node: &Node, args: &[&str]) -> Run {
    let started = Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pvo"));
    cmd.arg("--dir").arg(node.data_dir()).args(args);
    let (status, stdout, stderr) = run_with_timeout(&mut cmd, COMMAND);
    Run {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// A Python peer from `tests/peers` that prints `<PREFIX> <port>` once it listens; killed
/// when dropped.
struct Peer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Peer {
    /// Runs `prefix... /usr/bin/python3 tests/peers/SCRIPT ARGS` (`prefix` is how a test
    /// runs it inside a network namespace).
    fn start(prefix: &[&str], script: &str, args: &[&str], port_line: &str) -> Peer {
        let dir = tempfile::Builder::new()
            .prefix("pvo-peer-")
            .tempdir()
            .expect("peer dir");
        let stderr = dir.path().join("stderr.log");
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(SYSTEM_PYTHON);
                c
            }
            None => Command::new(SYSTEM_PYTHON),
        };
        let mut child = cmd
            .arg(peer_script(script))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("peer stderr"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e} (run scripts/install-test-deps)"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let prefix_word = format!("{port_line} ");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(p) = line.strip_prefix(&prefix_word) {
                        break p.trim().parse().expect("port number");
                    }
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "{script} did not print {port_line} ({e:?})\n--- stderr ---\n{}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
            }
        };
        Peer {
            child,
            port,
            _dir: dir,
        }
    }

    fn anonymous() -> Peer {
        Peer::start(&[], "anon_tls_smtp.py", &[], "ANON_TLS_SMTP_PORT")
    }

    fn with_certificate(pki: &TestPki) -> Peer {
        let (cert, key) = (
            pki.leaf_pem.to_string_lossy(),
            pki.leaf_key.to_string_lossy(),
        );
        Peer::start(
            &[],
            "tls_smtp.py",
            &["--cert", &cert, "--key", &key],
            "TLS_SMTP_PORT",
        )
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throwaway CA and a leaf certificate for `example.com` and `mx.example.com`, made
/// with the `openssl` command line.
struct TestPki {
    ca_pem: PathBuf,
    leaf_pem: PathBuf,
    leaf_key: PathBuf,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run openssl: {e} (run scripts/install-test-deps)"));
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestPki {
    fn new() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("pvo-pki-")
            .tempdir()
            .expect("pki dir");
        let p = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=PVO Test CA",
        ]);
        openssl(p, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-keyout",
            "leaf.key",
            "-out",
            "leaf.csr",
            "-subj",
            "/CN=mx.example.com",
        ]);
        openssl(p, &csr);
        std::fs::write(
            p.join("leaf.ext"),
            "subjectAltName = DNS:example.com, DNS:mx.example.com\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .expect("write leaf.ext");
        openssl(
            p,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
            ],
        );
        TestPki {
            ca_pem: p.join("ca.pem"),
            leaf_pem: p.join("leaf.pem"),
            leaf_key: p.join("leaf.key"),
            _dir: dir,
        }
    }
}

/// A port nothing listens on: reserved (see `support::free_port`), so that no `port = 0`
/// bind of another test makes it listen later.
fn closed_port() -> u16 {
    free_port()
}

// ---------------------------------------------------------------------------------------
// telnet
// ---------------------------------------------------------------------------------------

#[test]
fn telnet_prints_the_banner_of_a_listening_server() {
    let sink = Sink::accepting();
    let node = node(&[], "Auto", None);
    let port = sink.port.to_string();

    let run = pvo(&node, &["telnet", "127.0.0.1", &port]);
    assert!(run.status.success(), "{}", run.text());
    let lines = run.lines();
    assert_eq!(lines[0], "Trying 127.0.0.1...");
    assert_eq!(
        lines[1],
        "Connected to 127.0.0.1 (interface Auto 127.0.0.1)."
    );
    assert!(lines[2].starts_with("220 sink.test "), "{}", run.text());

    // The node's own listener, from a named interface: the administrator's check that a listener answers.
    let own = node.addr().port().to_string();
    let run = pvo(
        &node,
        &["telnet", "--interface", "loopback", "127.0.0.1", &own],
    );
    assert!(run.status.success(), "{}", run.text());
    run.assert_has("Connected to 127.0.0.1 (interface Loopback 127.0.0.1).");
    assert!(
        run.lines()[2].starts_with("220 gw1.example.com"),
        "{}",
        run.text()
    );

    let run = pvo(&node, &["--json", "telnet", "127.0.0.1", &port]);
    assert!(run.status.success(), "{}", run.text());
    let j = run.json();
    assert_eq!(j["ok"], true);
    let d = &j["data"];
    assert_eq!(d["connected"], true);
    assert_eq!(d["interface"], "Auto");
    assert_eq!(d["source_address"], "127.0.0.1");
    assert_eq!(d["target"], "127.0.0.1");
    assert_eq!(d["port"], sink.port);
    assert!(
        d["banner"]
            .as_str()
            .is_some_and(|b| b.starts_with("220 sink.test ")),
        "{j}"
    );
    assert!(d["error"].is_null(), "{j}");
}

#[test]
fn telnet_to_a_closed_port_says_connection_refused() {
    let node = node(&[], "Auto", None);
    let port = closed_port().to_string();
    let run = pvo(&node, &["telnet", "127.0.0.1", &port]);
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    run.assert_lines(&[
        "Trying 127.0.0.1...",
        "telnet: connect to address 127.0.0.1: Connection refused",
        "telnet: Unable to connect to remote host: Connection refused",
    ]);

    let run = pvo(&node, &["--json", "telnet", "127.0.0.1", &port]);
    assert_eq!(run.status.code(), Some(1));
    let j = run.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["data"]["connected"], false);
    assert_eq!(j["data"]["error"], "Connection refused");
    assert_eq!(j["data"]["attempts"][0]["address"], "127.0.0.1");
}

#[test]
fn telnet_from_an_interface_this_machine_does_not_have_cannot_bind() {
    // 192.0.2.1 (TEST-NET-1) is on no machine: binding it fails before anything is sent.
    let node = node(&[("Data2", "192.0.2.1")], "Auto", None);
    let port = closed_port().to_string();
    let run = pvo(
        &node,
        &["telnet", "--interface", "Data2", "127.0.0.1", &port],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    run.assert_lines(&[
        "Trying 127.0.0.1...",
        "telnet: bind to address 192.0.2.1 (interface Data2): Cannot assign requested address (192.0.2.1 is not an address of this machine)",
        "telnet: Unable to connect to remote host: Cannot assign requested address (192.0.2.1 is not an address of this machine)",
    ]);

    let run = pvo(
        &node,
        &["telnet", "--interface", "eth7", "127.0.0.1", &port],
    );
    assert_eq!(run.status.code(), Some(1));
    run.assert_lines(&[
        "Unknown interface \"eth7\". Interfaces: Loopback (127.0.0.1), Data2 (192.0.2.1), or Auto.",
    ]);
}

#[test]
fn telnet_from_an_interface_without_a_route_to_the_target_times_out() {
    let ns = Namespace::create();
    let peer = Peer::start(
        &["ip", "netns", "exec", &ns.name],
        "anon_tls_smtp.py",
        &["--host", &ns.inside()],
        "ANON_TLS_SMTP_PORT",
    );
    let port = peer.port.to_string();
    let inside = ns.inside();
    // The default delivery interface is the one without a route, as in scenario 3.
    let node = node(&[("Isolated", &ns.unroutable_local())], "Isolated", None);

    let run = pvo(&node, &["telnet", "--timeout", "2", &inside, &port]);
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    run.assert_lines(&[
        &format!("Trying {inside}..."),
        &format!("telnet: connect to address {inside}: Operation timed out"),
        "telnet: Unable to connect to remote host: Operation timed out",
    ]);
    assert!(
        run.elapsed < Duration::from_secs(20),
        "--timeout 2 took {:?}",
        run.elapsed
    );

    let run = pvo(
        &node,
        &["--json", "telnet", "--timeout", "2", &inside, &port],
    );
    let j = run.json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["data"]["interface"], "Isolated");
    assert_eq!(j["data"]["source_address"], ns.unroutable_local());
    assert_eq!(j["data"]["error"], "Operation timed out");

    // The remedy of scenario 3, default interface Auto, reaches it.
    let run = pvo(&node, &["telnet", "--interface", "Auto", &inside, &port]);
    assert!(run.status.success(), "{}", run.text());
    run.assert_has(&format!(
        "Connected to {inside} (interface Auto {}).",
        ns.reachable_local()
    ));
    assert!(
        run.lines().iter().any(|l| l.starts_with("220 anon.test")),
        "{}",
        run.text()
    );

    // tlsverify leaves the same way and says so.
    let target = format!("{inside}:{port}");
    let run = pvo(
        &node,
        &["tlsverify", "--timeout", "2", "example.com", &target],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    run.assert_lines(&[
        &format!("Connecting to {inside} on port {port}."),
        &format!("Connection to {inside} on port {port} failed: Operation timed out."),
        &format!("TLS connection to {inside} failed."),
    ]);

    // An address on the link that nobody has: ARP gets no answer.
    let run = pvo(
        &node,
        &["telnet", "--interface", "Auto", &ns.nobody(), "25"],
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    run.assert_has(&format!(
        "telnet: connect to address {}: No route to host",
        ns.nobody()
    ));
}

// ---------------------------------------------------------------------------------------
// tlsverify
// ---------------------------------------------------------------------------------------

#[test]
fn tlsverify_succeeds_with_a_certificate_from_the_configured_ca() {
    let pki = TestPki::new();
    let peer = Peer::with_certificate(&pki);
    let node = node(&[], "Auto", Some(&pki.ca_pem));
    let target = format!("127.0.0.1:{}", peer.port);

    let run = pvo(&node, &["tlsverify", "example.com", &target]);
    assert!(run.status.success(), "{}", run.text());
    let port = peer.port;
    let lines = run.lines();
    let established = lines
        .iter()
        .find(|l| l.starts_with("TLS connection established: "))
        .cloned()
        .unwrap_or_default();
    assert!(
        established.starts_with("TLS connection established: protocol TLSv1.3, cipher TLS13_"),
        "{}",
        run.text()
    );
    run.assert_lines(&[
        &format!("Connecting to 127.0.0.1 on port {port}."),
        "Connected to 127.0.0.1 from interface 127.0.0.1.",
        "Checking TLS connection.",
        &established,
        "Verifying peer certificate.",
        "Verifying certificate common name example.com.",
        "TLS certificate match example.com.",
        "TLS certificate verified.",
        "TLS connection to 127.0.0.1 succeeded.",
    ]);

    let run = pvo(
        &node,
        &[
            "--json",
            "tlsverify",
            "--interface",
            "Loopback",
            "mx.example.com",
            &target,
        ],
    );
    assert!(run.status.success(), "{}", run.text());
    let j = run.json();
    let d = &j["data"];
    assert_eq!(d["result"], "success");
    assert_eq!(d["verified"], true);
    assert_eq!(d["interface"], "Loopback");
    assert_eq!(d["starttls"], true);
    assert_eq!(d["tls"]["protocol"], "TLSv1.3");
    assert_eq!(
        d["certificate"]["names"],
        serde_json::json!(["example.com", "mx.example.com"])
    );
    assert!(d["failure"].is_null());
    assert!(
        d["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l == "Connected to 127.0.0.1 from interface Loopback (127.0.0.1)."),
        "{j}"
    );
}

#[test]
fn tlsverify_reports_a_certificate_from_an_unknown_ca() {
    let pki = TestPki::new();
    let peer = Peer::with_certificate(&pki);
    // No ca_file: the test CA is in no trust store.
    let node = node(&[], "Auto", None);
    let target = format!("127.0.0.1:{}", peer.port);

    let run = pvo(&node, &["tlsverify", "example.com", &target]);
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    let lines = run.lines();
    let established = lines
        .iter()
        .find(|l| l.starts_with("TLS connection established: "))
        .cloned()
        .unwrap_or_default();
    run.assert_lines(&[
        &format!("Connecting to 127.0.0.1 on port {}.", peer.port),
        "Connected to 127.0.0.1 from interface 127.0.0.1.",
        "Checking TLS connection.",
        &established,
        "Verifying peer certificate.",
        "Certificate verification failed: certificate issued by an unknown CA (unknown issuer).",
        "The certificate chain does not lead to a trusted CA: a public CA or one in tls.outbound.ca_file.",
        "TLS connection to 127.0.0.1 failed.",
    ]);
    assert!(established.contains("protocol TLSv1.3"), "{}", run.text());

    let j = pvo(&node, &["--json", "tlsverify", "example.com", &target]).json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["data"]["failure"]["kind"], "unknown_ca");
    assert_eq!(j["data"]["verified"], false);
    // What delivery to this server would log.
    assert_eq!(
        j["data"]["log_wording"],
        "TLS failed: verify error: unable to get local issuer certificate (certificate issued by an unknown CA)"
    );
}

#[test]
fn tlsverify_reports_a_certificate_for_another_name() {
    let pki = TestPki::new();
    let peer = Peer::with_certificate(&pki);
    let node = node(&[], "Auto", Some(&pki.ca_pem));
    // HOST is an address; the certificate is checked against DOMAIN, not HOST.
    let target = format!("127.0.0.1:{}", peer.port);

    let run = pvo(&node, &["tlsverify", "other.example.net", &target]);
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    let text = run.text();
    let tail: Vec<&str> = text.lines().skip(4).collect();
    assert_eq!(
        tail,
        [
            "Verifying peer certificate.",
            "Verifying certificate common name other.example.net.",
            "TLS certificate does not match other.example.net (certificate names: example.com, mx.example.com).",
            "TLS connection to 127.0.0.1 failed.",
        ],
        "{text}"
    );
    let j = pvo(
        &node,
        &["--json", "tlsverify", "other.example.net", &target],
    )
    .json();
    assert_eq!(j["data"]["failure"]["kind"], "name_mismatch");
}

#[test]
fn tlsverify_explains_a_server_with_only_anonymous_ciphers() {
    let peer = Peer::anonymous();
    let node = node(&[], "Auto", None);
    let target = format!("127.0.0.1:{}", peer.port);

    let run = pvo(&node, &["tlsverify", "example.com", &target]);
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    let lines = run.lines();
    // The peer closes the connection after our ClientHello (asyncio does not send the
    // alert OpenSSL queued); a server that sends the alert gets the other first line.
    let refused = &lines[3];
    assert!(
        refused == "The server closed the connection without choosing a cipher suite."
            || refused.starts_with("The server refused every cipher suite PVO offers"),
        "{}",
        run.text()
    );
    run.assert_lines(&[
        &format!("Connecting to 127.0.0.1 on port {}.", peer.port),
        "Connected to 127.0.0.1 from interface 127.0.0.1.",
        "Checking TLS connection.",
        refused,
        "Checking for anonymous cipher suites.",
        "The server accepts the anonymous cipher AECDH-AES256-SHA (TLS_ECDH_anon_WITH_AES_256_CBC_SHA, TLSv1.2), which provides no certificate.",
        "TLS handshake failed: the server offers no cipher suite with a certificate (it may offer only anonymous ciphers, which provide no certificate: verify error: no certificate from server).",
        "No certificate was presented by the server.",
        "TLS failed: verify error: no certificate from server",
        "TLS connection to 127.0.0.1 failed.",
    ]);

    let j = pvo(&node, &["--json", "tlsverify", "example.com", &target]).json();
    assert_eq!(j["ok"], false);
    let d = &j["data"];
    assert_eq!(d["failure"]["kind"], "no_certificate");
    assert_eq!(d["anonymous_cipher"]["name"], "AECDH-AES256-SHA");
    assert_eq!(d["anonymous_cipher"]["protocol"], "TLSv1.2");
    assert!(d["certificate"].is_null());
    assert_eq!(d["starttls"], true);
}

#[test]
fn tlsverify_to_a_server_without_starttls_says_so() {
    let sink = Sink::accepting();
    let node = node(&[], "Auto", None);
    let run = pvo(&node, &["tlsverify", "example.com", &sink.host_port()]);
    assert_eq!(run.status.code(), Some(1), "{}", run.text());
    run.assert_lines(&[
        &format!("Connecting to 127.0.0.1 on port {}.", sink.port),
        "Connected to 127.0.0.1 from interface 127.0.0.1.",
        "The server does not offer STARTTLS.",
        "TLS connection to 127.0.0.1 failed.",
    ]);
    let j = pvo(
        &node,
        &["--json", "tlsverify", "example.com", &sink.host_port()],
    )
    .json();
    assert_eq!(j["data"]["failure"]["kind"], "no_starttls");
    assert_eq!(j["data"]["starttls"], false);
}
