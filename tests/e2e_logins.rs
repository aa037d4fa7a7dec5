//! Logins and the node's defaults, end to end: the login throttle across the web UI
//! (`curl`, from two loopback addresses), SSH (the real OpenSSH client, passwords through
//! `SSH_ASKPASS`, as in `e2e_users`) and `pvo --user`; `pvo … | head -1` through a real
//! pipe; the self-signed certificate and the banners the node shows.

use std::fs;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::*;

const COMMAND: Duration = Duration::from_secs(60);

fn config(sink: &Sink) -> String {
    GatewayToml::new(sink).ssh().web().build()
}

/// `POST /login` with curl from `source`: (HTTP status, body).
fn web_login(web: SocketAddr, source: &str, user: &str, password: &str) -> (u16, String) {
    let o = Command::new("curl")
        .args(["-sk", "--max-time", "60", "--interface", source])
        .args(["-w", "\n%{http_code}", "--data-urlencode"])
        .arg(format!("username={user}"))
        .arg("--data-urlencode")
        .arg(format!("password={password}"))
        .arg(format!("https://{web}/login"))
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl gave no status: {}", printed(&o)));
    (code, body.to_string())
}

/// One `ssh -l USER NODE status` with `password` (asked `prompts` times at most).
fn ssh_status(node: &Node, askpass: &PathBuf, user: &str, password: &str, prompts: u32) -> Output {
    let addr = ssh_addr(node);
    openssh()
        .args([
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "PreferredAuthentications=password",
        ])
        .arg("-o")
        .arg(format!("NumberOfPasswordPrompts={prompts}"))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["-l", user])
        .arg(addr.ip().to_string())
        .arg("status")
        .env_remove("SSH_AUTH_SOCK")
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("PVO_TEST_PASSWORD", password)
        .output()
        .expect("run ssh")
}

fn askpass(node: &Node) -> PathBuf {
    let p = node.dir().join("askpass.sh");
    fs::write(&p, "#!/bin/sh\nprintf '%s\\n' \"$PVO_TEST_PASSWORD\"\n").unwrap();
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// `pvo --user USER status` with `PVO_PASSWORD`.
fn pvo_as(node: &Node, user: &str, password: &str) -> Output {
    Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(["--user", user, "status"])
        .env("PVO_PASSWORD", password)
        .output()
        .expect("run pvo")
}

/// The audit trail's login entries for `user`.
fn login_audit(node: &Node, user: &str) -> Vec<serde_json::Value> {
    pvo_json(node, &["auditlog", "--user", user, "--action", "login"])["data"]["entries"]
        .as_array()
        .expect("entries")
        .clone()
}

#[test]
fn a_guest_login_does_not_reset_the_failures_of_admin_from_the_same_address() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    let admin_pw = initial_password(&node);
    new_user(&node, "guest", "Guest", "guest-password-1");

    // Four guesses at admin, then a good Guest login, repeated: the Guest login must not
    // give the guesser another four.
    let mut answers = Vec::new();
    for _ in 0..3 {
        for _ in 0..4 {
            answers.push(web_login(web, "127.0.0.1", "admin", "guess").0);
        }
        answers.push(web_login(web, "127.0.0.1", "guest", "guest-password-1").0);
    }
    let wrong = answers.iter().filter(|c| **c == 401).count();
    assert_eq!(wrong, 5, "{answers:?}");
    assert!(answers[5..].contains(&429), "{answers:?}");

    // Even the right password is refused from there now, with the reason and the wait.
    let (code, body) = web_login(web, "127.0.0.1", "admin", &admin_pw);
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("Too many failed logins for this address; try again in "),
        "{body}"
    );
    // Another address is not concerned.
    let (code, body) = web_login(web, "127.0.0.2", "admin", &admin_pw);
    assert_eq!(code, 303, "{body}");

    // The throttled attempts are in the audit trail, and the lockout in mail_logs.
    let audit = login_audit(&node, "admin");
    assert!(
        audit.iter().any(|e| e["outcome"] == "failed"
            && e["detail"]
                .as_str()
                .unwrap()
                .starts_with("throttled: Too many failed logins for this address")),
        "{audit:?}"
    );
    node.wait_for_log(
        "Login throttled: user \"admin\" from web 127.0.0.1:",
        COMMAND,
    );
}

#[test]
fn ssh_passwords_are_throttled_and_the_client_is_told_why() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let pass = askpass(&node);
    let admin_pw = initial_password(&node);

    for _ in 0..5 {
        let o = ssh_status(&node, &pass, "admin", "wrong-password", 1);
        assert_eq!(o.status.code(), Some(255), "{}", printed(&o));
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("Too many"),
            "{}",
            printed(&o)
        );
    }
    // The sixth, with the right password: refused unchecked, and the client prints the
    // server's reason when it closes the connection.
    let o = ssh_status(&node, &pass, "admin", &admin_pw, 2);
    assert_eq!(o.status.code(), Some(255), "{}", printed(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Too many failed logins for this address; try again in "),
        "{}",
        printed(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).is_empty(),
        "{}",
        printed(&o)
    );
    let audit = login_audit(&node, "admin");
    assert!(
        audit.iter().any(|e| e["command"] == "login (ssh password)"
            && e["detail"].as_str().unwrap().starts_with("throttled: ")),
        "{audit:?}"
    );
}

#[test]
fn an_account_is_throttled_across_web_ssh_and_pvo_user() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    let pass = askpass(&node);
    let admin_pw = initial_password(&node);
    new_user(&node, "guest", "Guest", "guest-password-1");

    // Ten failures for admin, none of its addresses at its own limit of five: four over
    // SSH from 127.0.0.1, four with `pvo --user` on the admin socket, two on the web
    // from 127.0.0.2.
    for _ in 0..4 {
        let o = ssh_status(&node, &pass, "admin", "wrong-password", 1);
        assert_eq!(o.status.code(), Some(255), "{}", printed(&o));
    }
    for _ in 0..4 {
        let o = pvo_as(&node, "admin", "guess");
        assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains("Too many"),
            "{}",
            printed(&o)
        );
    }
    for _ in 0..2 {
        assert_eq!(web_login(web, "127.0.0.2", "admin", "guess").0, 401);
    }
    // From an address that never failed, admin is refused, Guest is not.
    let (code, body) = web_login(web, "127.0.0.3", "admin", &admin_pw);
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("Too many failed logins for this account; try again in "),
        "{body}"
    );
    assert_eq!(
        web_login(web, "127.0.0.3", "guest", "guest-password-1").0,
        303
    );
    // `pvo --user admin` says the same.
    let o = pvo_as(&node, "admin", &admin_pw);
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("Too many failed logins for this account; try again in "),
        "{}",
        printed(&o)
    );
    // The local owner of the socket (no --user) is never locked out.
    let o = Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .arg("status")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", printed(&o));
}

#[test]
fn a_command_whose_reader_went_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let sink = Sink::accepting();
    let node = Node::start(&GatewayToml::new(&sink).build());

    // A pipe whose reading end is already closed: the first write fails for sure.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let o = Command::new(pvo_bin())
        .arg("--dir")
        .arg(node.data_dir())
        .args(["status", "detail"])
        .stdout(writer)
        .output()
        .expect("run pvo");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{}", printed(&o));
    assert!(
        o.status.code() == Some(0) || o.status.signal() == Some(libc_sigpipe()),
        "{}",
        printed(&o)
    );

    // And the way people do it: `pvo … | head -1` in a shell, with pvo's own status.
    let o = Command::new("bash")
        .args([
            "-o",
            "pipefail",
            "-c",
            "\"$0\" --dir \"$1\" status detail | head -1",
        ])
        .arg(pvo_bin())
        .arg(node.data_dir())
        .output()
        .expect("run bash");
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("panicked"),
        "{}",
        printed(&o)
    );
    assert!(
        matches!(o.status.code(), Some(0) | Some(141)),
        "{}",
        printed(&o)
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).lines().count(),
        1,
        "{}",
        printed(&o)
    );
}

/// SIGPIPE's number (13 on Linux), without a libc dependency in the tests.
fn libc_sigpipe() -> i32 {
    13
}

/// `curl -sk` with a cookie jar: (headers, body).
fn curl(jar: &std::path::Path, args: &[&str]) -> (String, String) {
    let o = Command::new("curl")
        .args(["-sk", "--max-time", "60", "-D", "-", "-b"])
        .arg(jar)
        .arg("-c")
        .arg(jar)
        .args(args)
        .output()
        .expect("run curl");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_ascii_lowercase(), body.to_string())
}

#[test]
fn the_ui_runs_no_inline_script() {
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    let jar = node.dir().join("cookies.txt");
    let admin_pw = initial_password(&node);
    let base = format!("https://{web}");

    let (head, _) = curl(
        &jar,
        &[
            "--data-urlencode",
            "username=admin",
            "--data-urlencode",
            &format!("password={admin_pw}"),
            &format!("{base}/login"),
        ],
    );
    assert!(head.contains(" 303 "), "{head}");
    for path in ["/", "/messages", "/jobs", "/users"] {
        let (head, body) = curl(&jar, &[&format!("{base}{path}")]);
        assert!(head.contains(" 200 "), "{path}: {head}");
        let csp = head
            .lines()
            .find_map(|l| l.strip_prefix("content-security-policy: "))
            .unwrap_or_else(|| panic!("{path}: no CSP in {head}"));
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        // Scripts only by src, and no event handler attributes.
        assert_eq!(
            body.matches("<script").count(),
            body.matches("<script src=\"/ui.js\" defer></script>")
                .count(),
            "{path}: {body}"
        );
        assert!(!body.contains(" onclick="), "{path}: {body}");
    }
    let (head, js) = curl(&jar, &[&format!("{base}/ui.js")]);
    assert!(head.contains(" 200 "), "{head}");
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(
        js.contains("select-all") && js.contains("data-poll"),
        "{js}"
    );
}

/// Every answer of the UI carries the same strict CSP: pages, the login page, redirects,
/// refusals, a missing job (page and JSON), the static files (kept a day, then
/// revalidated by ETag: 304) and a route's own error.
#[test]
fn every_ui_response_carries_the_strict_csp() {
    const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let web = web_addr(&node);
    let jar = node.dir().join("cookies.txt");
    let base = format!("https://{web}");
    let csp_of = |head: &str, what: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix("content-security-policy: "))
            .unwrap_or_else(|| panic!("{what}: no CSP in {head}"))
            .trim()
            .to_string()
    };
    let check = |args: &[&str], code: &str, what: &str| {
        let (head, body) = curl(&jar, args);
        assert!(head.contains(&format!(" {code} ")), "{what}: {head}");
        assert_eq!(csp_of(&head, what), CSP.to_ascii_lowercase(), "{what}");
        (head, body)
    };
    // Before logging in: the login page, a page (redirected), a POST without a session.
    check(&[&format!("{base}/login")], "200", "login page");
    check(
        &[&format!("{base}/messages")],
        "303",
        "redirect to the login",
    );
    check(
        &["-X", "POST", &format!("{base}/logout")],
        "403",
        "refused POST",
    );
    let (head, _) = check(
        &[
            "--data-urlencode",
            "username=admin",
            "--data-urlencode",
            &format!("password={}", initial_password(&node)),
            &format!("{base}/login"),
        ],
        "303",
        "login",
    );
    assert!(head.contains("set-cookie: __host-pvo_session="), "{head}");
    check(&[&format!("{base}/")], "200", "dashboard");
    check(&[&format!("{base}/messages/x")], "404", "not a MID");
    check(&[&format!("{base}/jobs/nope")], "404", "no such job");
    check(
        &[&format!("{base}/jobs/nope.json")],
        "404",
        "no such job (JSON)",
    );
    check(
        &[&format!("{base}/quarantines/Nope")],
        "404",
        "no such quarantine",
    );
    for (path, ctype) in [("/ui.js", "text/javascript"), ("/ui.css", "text/css")] {
        let (head, body) = check(&[&format!("{base}{path}")], "200", path);
        assert!(head.contains(&format!("content-type: {ctype}")), "{head}");
        assert!(
            head.contains("cache-control: public, max-age=86400"),
            "{head}"
        );
        assert!(!body.is_empty(), "{path}");
        let etag = head
            .lines()
            .find_map(|l| l.strip_prefix("etag: "))
            .unwrap_or_else(|| panic!("{path}: no ETag in {head}"))
            .trim()
            .to_string();
        let (head, body) = check(
            &[
                "-H",
                &format!("If-None-Match: {etag}"),
                &format!("{base}{path}"),
            ],
            "304",
            path,
        );
        assert!(body.is_empty(), "{path}: {head}");
    }
}

/// `openssl x509 -noout ARGS -in FILE`.
fn x509(cert: &std::path::Path, args: &[&str]) -> String {
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-in"])
        .arg(cert)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(o.status.success(), "{}", printed(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `notBefore=…`/`notAfter=…` as Unix seconds (GNU date parses openssl's format).
fn x509_time(cert: &std::path::Path, which: &str) -> i64 {
    let line = x509(cert, &[&format!("-{}", which.to_ascii_lowercase())]);
    let value = line
        .trim()
        .split_once('=')
        .expect("date line")
        .1
        .to_string();
    let o = Command::new("date")
        .args(["-u", "+%s", "-d", &value])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("seconds")
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn the_default_certificate_names_the_host_and_an_old_one_is_replaced() {
    let sink = Sink::accepting();
    let mut node = Node::start(&config(&sink));
    let cert = node.data_dir().join("tls/cert.pem");

    let check = |cert: &std::path::Path| {
        let subject = x509(cert, &["-subject"]);
        assert!(subject.contains("CN = gw1.example.com"), "{subject}");
        let san = x509(cert, &["-ext", "subjectAltName"]);
        assert!(san.contains("DNS:gw1.example.com"), "{san}");
        let (start, end) = (x509_time(cert, "startdate"), x509_time(cert, "enddate"));
        assert!((now() - 86_400 - start).abs() < 3_600, "starts {start}");
        assert!(
            end - now() <= 825 * 86_400 && end - now() > 824 * 86_400,
            "ends {end}"
        );
    };
    check(&cert);

    // status and diagnose say which listeners serve a self-signed certificate.
    let status = pvo_json(&node, &["status", "detail"]);
    let note = &status["data"]["self_signed_certificate"];
    assert!(
        note["certificate"]
            .as_str()
            .unwrap()
            .starts_with("self-signed certificate for gw1.example.com, valid until "),
        "{note}"
    );
    let served: Vec<&str> = note["served_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(served.contains(&"HTTPS") && served.len() >= 2, "{served:?}");
    assert!(
        status["text"]
            .as_str()
            .unwrap()
            .contains("HTTPS serve a self-signed certificate for gw1.example.com"),
        "{status}"
    );
    let diag = pvo_json(&node, &["diagnose"]);
    assert!(
        diag.to_string()
            .contains("serve a self-signed certificate for gw1.example.com"),
        "{diag}"
    );

    // A certificate of the old kind (rcgen's name, valid until 4096) is replaced at start.
    node.stop();
    let key = node.data_dir().join("tls/key.pem");
    let o = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args([
            "-nodes",
            "-subj",
            "/CN=rcgen self signed cert",
            "-days",
            "754000",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", printed(&o));
    assert!(x509(&cert, &["-subject"]).contains("rcgen self signed cert"));
    node.restart();
    check(&cert);
}

#[test]
fn the_ssh_banner_names_no_version() {
    use std::io::{BufRead, BufReader};
    let sink = Sink::accepting();
    let node = Node::start(&config(&sink));
    let s = std::net::TcpStream::connect(ssh_addr(&node)).unwrap();
    s.set_read_timeout(Some(COMMAND)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert_eq!(line, "SSH-2.0-PVO\r\n");
}
