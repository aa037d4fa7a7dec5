//! Network diagnostics run from the node: `telnet` and `tlsverify`.
//!
//! Both connect from an interface of the node (the default delivery interface unless
//! `--interface` names another, or Auto), because the question they answer is "can
//! *this node*, leaving the way mail leaves, reach that server". The probes themselves
//! are in `crate::adapters::diag`; this file holds the dialogue the appliance prints and the same
//! facts as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::adapters::diag::{self, ConnectError, HandshakeError, HelloAnswer, Source};
use crate::commands::command::text;
use crate::core::state::{NetTest, ProbeRun};

use super::Deps;

/// Seconds to wait for a connection and for each answer, unless `--timeout` says.
const DEFAULT_TIMEOUT: u64 = 10;

fn timeout_arg(timeout: Option<u64>) -> Duration {
    Duration::from_secs(timeout.unwrap_or(DEFAULT_TIMEOUT).clamp(1, 300))
}

fn port_arg(port: Option<u64>) -> Result<u16, ProbeRun> {
    match port {
        None => Ok(25),
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Some(p) => Err(ProbeRun::refused(format!(
            "{p} is not a port; allowed: 1 to 65535"
        ))),
    }
}

/// Connects from `src` to each address in turn until one answers; every attempt is
/// returned as (address, error) for the transcript.
async fn connect_any(
    addrs: &[SocketAddr],
    src: &Source,
    timeout: Duration,
) -> (
    Option<(TcpStream, SocketAddr)>,
    Vec<(SocketAddr, ConnectError)>,
) {
    let mut failed = Vec::new();
    for addr in addrs {
        match diag::connect_from(*addr, src.address, timeout).await {
            Ok(s) => return (Some((s, *addr)), failed),
            Err(e) => failed.push((*addr, e)),
        }
    }
    (None, failed)
}

/// `telnet [--interface NAME] [--timeout S] HOST [PORT]`: connect, show the banner, QUIT.
pub async fn telnet(shared: &Deps, args: &NetTest) -> ProbeRun {
    let cfg = shared.config.current();
    let src = match Source::select(&cfg, text(&args.interface)) {
        Ok(s) => s,
        Err(e) => return ProbeRun::refused(e),
    };
    drop(cfg);
    let Some(host) = text(&args.host) else {
        return ProbeRun::refused("telnet: give the host to connect to");
    };
    let port = match port_arg(args.port) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let timeout = timeout_arg(args.timeout);
    let mut text = String::new();
    let mut data = json!({
        "interface": src.name(),
        "source_address": src.address.map(|a| a.to_string()),
        "target": host,
        "port": port,
        "connected": false,
        "address": null,
        "banner": null,
        "attempts": [],
        "error": null,
    });
    let addrs: Vec<SocketAddr> = match shared.resolver.addresses(host).await {
        Ok(a) if !a.is_empty() => a.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        Ok(_) => {
            return telnet_failed(
                text,
                data,
                format!("telnet: could not resolve {host}/{port}: no address"),
            )
        }
        Err(e) => {
            return telnet_failed(
                text,
                data,
                format!("telnet: could not resolve {host}/{port}: {e}"),
            )
        }
    };
    let mut attempts = Vec::new();
    let mut last_error = String::new();
    let mut stream = None;
    for addr in &addrs {
        text.push_str(&format!("Trying {}...\n", addr.ip()));
        let (line, error) = match diag::connect_from(*addr, src.address, timeout).await {
            Ok(s) => {
                attempts.push(json!({ "address": addr.ip().to_string(), "error": null }));
                stream = Some((s, *addr));
                break;
            }
            Err(ConnectError::Bind(e)) => {
                let from = src.address.map(|i| i.to_string()).unwrap_or_default();
                (
                    format!(
                        "telnet: bind to address {from} (interface {}): {e}",
                        src.name()
                    ),
                    e,
                )
            }
            Err(ConnectError::Connect(e)) => {
                (format!("telnet: connect to address {}: {e}", addr.ip()), e)
            }
        };
        text.push_str(&line);
        text.push('\n');
        attempts.push(json!({ "address": addr.ip().to_string(), "error": error }));
        last_error = error;
    }
    data["attempts"] = json!(attempts);
    let Some((stream, addr)) = stream else {
        data["error"] = json!(last_error);
        let line = format!("telnet: Unable to connect to remote host: {last_error}");
        return telnet_failed(text, data, line);
    };
    let local = stream
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    text.push_str(&format!(
        "Connected to {} (interface {} {local}).\n",
        addr.ip(),
        src.name()
    ));
    data["connected"] = json!(true);
    data["address"] = json!(addr.ip().to_string());
    data["source_address"] = json!(local);
    let mut io = BufReader::new(stream);
    match diag::read_reply(&mut io, timeout).await {
        Ok(banner) => {
            text.push_str(&banner.text());
            text.push('\n');
            data["banner"] = json!(banner.text());
            let _ = diag::command(&mut io, "QUIT", Duration::from_secs(2)).await;
        }
        Err(diag::ReadError::Timeout) => {
            let line = format!("No banner within {} seconds.", timeout.as_secs());
            text.push_str(&line);
            text.push('\n');
            data["error"] = json!(line);
        }
        Err(diag::ReadError::Malformed(l)) => {
            text.push_str(&l);
            text.push('\n');
            data["banner"] = json!(l);
        }
        Err(diag::ReadError::Closed) => {
            text.push_str("Connection closed by foreign host.\n");
            data["error"] = json!("Connection closed by foreign host");
        }
        Err(diag::ReadError::Io(e)) => {
            text.push_str(&format!("telnet: read from {}: {e}\n", addr.ip()));
            data["error"] = json!(e);
        }
    }
    let _ = io.get_mut().shutdown().await;
    ProbeRun::ran(true, text, data)
}

fn telnet_failed(mut text: String, mut data: serde_json::Value, line: String) -> ProbeRun {
    text.push_str(&line);
    text.push('\n');
    if data["error"].is_null() {
        data["error"] = json!(line);
    }
    ProbeRun::ran(false, text, data)
}

/// The transcript of a `tlsverify` run: lines as they happen, the facts as JSON.
struct Dialogue {
    lines: Vec<String>,
    data: serde_json::Value,
}

impl Dialogue {
    fn say(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    fn finish(mut self, host: &str, ok: bool, failure: Option<(&str, String)>) -> ProbeRun {
        if ok {
            self.say(format!("TLS connection to {host} succeeded."));
        } else {
            self.say(format!("TLS connection to {host} failed."));
        }
        self.data["result"] = json!(if ok { "success" } else { "failed" });
        self.data["verified"] = json!(ok);
        self.data["failure"] = match failure {
            Some((kind, message)) => json!({ "kind": kind, "message": message }),
            None => serde_json::Value::Null,
        };
        self.data["lines"] = json!(self.lines);
        let mut text = self.lines.join("\n");
        text.push('\n');
        ProbeRun::ran(ok, text, self.data)
    }

    fn fail(mut self, host: &str, kind: &str, line: String) -> ProbeRun {
        self.say(line.clone());
        self.finish(host, false, Some((kind, line)))
    }
}

/// `tlsverify [--interface NAME] [--timeout S] DOMAIN HOST[:PORT]`: the appliance's
/// dialogue for STARTTLS to HOST, verifying the certificate for DOMAIN with the trust
/// delivery uses (web PKI roots plus `tls.outbound.ca_file`).
pub async fn tlsverify(shared: &Deps, args: &NetTest) -> ProbeRun {
    let cfg = shared.config.current();
    let Some(domain) = text(&args.domain).map(|d| d.trim_end_matches('.').to_ascii_lowercase())
    else {
        return ProbeRun::refused("tlsverify: give the domain whose certificate to verify");
    };
    // A gateway's CPQ connections leave from the default delivery interface,
    // like all its deliveries (`delivery::cpq_bind`), so the probe does too.
    let src = match Source::select(&cfg, text(&args.interface)) {
        Ok(s) => s,
        Err(e) => return ProbeRun::refused(e),
    };
    drop(cfg);
    // `tlsverify the.cpq.host`: the manager, with the trust CPQ uses (the
    // deployment CA, and this node's certificate as client certificate).
    let cpq = domain == crate::core::config::CPQ_HOST;
    let manager = shared
        .config
        .current()
        .cpq
        .as_ref()
        .and_then(|c| c.manager().cloned());
    let (host, port) = match (text(&args.host), &manager) {
        (Some(h), _) => (
            h.to_string(),
            match port_arg(args.port) {
                Ok(p) => p,
                Err(r) => return r,
            },
        ),
        (None, Some((h, p))) if cpq => (h.clone(), *p),
        (None, _) if cpq => {
            return ProbeRun::refused(
                "tlsverify the.cpq.host: this node has no manager configured ([cpq] manager = \"HOST:PORT\"); give HOST[:PORT]",
            )
        }
        (None, _) => {
            return ProbeRun::refused("tlsverify: give the host to connect to (HOST[:PORT])")
        }
    };
    // CPQ certificates name the manager by address or node id.
    let name_for = if cpq { host.clone() } else { domain.clone() };
    let Ok(server_name) = ServerName::try_from(name_for.clone()) else {
        return ProbeRun::refused(format!("tlsverify: \"{name_for}\" is not a domain name"));
    };
    let cpq_client = if cpq {
        match shared.tls.cpq() {
            Some(t) => Some(t.client.clone()),
            None => {
                return ProbeRun::refused(
                    "tlsverify the.cpq.host: this node has no CPQ certificate (enroll it on the manager: `pvo manager enroll`)",
                )
            }
        }
    } else {
        None
    };
    let timeout = timeout_arg(args.timeout);
    let mut d = Dialogue {
        lines: Vec::new(),
        data: json!({
            "domain": domain,
            "host": host,
            "port": port,
            "interface": src.name(),
            "source_address": src.address.map(|a| a.to_string()),
            "address": null,
            "connected": false,
            "banner": null,
            "starttls": null,
            "tls": null,
            "certificate": null,
            "anonymous_cipher": null,
            "log_wording": null,
        }),
    };

    d.say(format!("Connecting to {host} on port {port}."));
    let addrs: Vec<SocketAddr> = match shared.resolver.addresses(&host).await {
        Ok(a) if !a.is_empty() => a.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(),
        Ok(_) => {
            return d.fail(
                &host,
                "resolve",
                format!("Could not resolve {host}: no address."),
            )
        }
        Err(e) => return d.fail(&host, "resolve", format!("Could not resolve {host}: {e}.")),
    };
    let (stream, failed) = connect_any(&addrs, &src, timeout).await;
    for (addr, e) in &failed {
        match e {
            ConnectError::Bind(e) => d.say(format!(
                "Cannot connect from interface {}: {e}.",
                src.name()
            )),
            ConnectError::Connect(e) => d.say(format!(
                "Connection to {} on port {port} failed: {e}.",
                addr.ip()
            )),
        }
    }
    let Some((stream, addr)) = stream else {
        let last = failed.last().map(|(_, e)| match e {
            ConnectError::Bind(e) | ConnectError::Connect(e) => e.clone(),
        });
        return d.finish(&host, false, Some(("connect", last.unwrap_or_default())));
    };
    let local = stream.local_addr().map(|a| a.ip()).ok();
    let from = match (&src.interface, local) {
        (Some(name), Some(ip)) => format!("{name} ({ip})"),
        (_, Some(ip)) => ip.to_string(),
        (Some(name), None) => name.clone(),
        (None, None) => "Auto".into(),
    };
    d.say(format!("Connected to {} from interface {from}.", addr.ip()));
    d.data["connected"] = json!(true);
    d.data["address"] = json!(addr.ip().to_string());
    d.data["source_address"] = json!(local.map(|l| l.to_string()));

    let mut io = BufReader::new(stream);
    match starttls(&mut io, &src.hostname, timeout, &mut d).await {
        Ok(()) => {}
        Err((kind, line)) => return d.fail(&host, kind, line),
    }
    // Bytes buffered after the 220 to STARTTLS would be injected into the TLS
    // session; they are dropped with the buffer.
    let mut stream = io.into_inner();

    d.say("Checking TLS connection.");
    let config = cpq_client.unwrap_or_else(|| shared.tls.clients().verify.clone());
    let attempt = match diag::tls_handshake(&mut stream, config, server_name, timeout).await {
        Ok(a) => a,
        Err(e) => return d.fail(&host, "handshake", format!("TLS handshake failed: {e}.")),
    };
    let negotiated = attempt.conn.negotiated_cipher_suite().is_some();
    if negotiated {
        let (protocol, cipher) = attempt.negotiated();
        d.say(format!(
            "TLS connection established: protocol {protocol}, cipher {cipher}."
        ));
        d.data["tls"] = json!({ "protocol": protocol, "cipher": cipher });
    }
    let error = match attempt.error {
        None => {
            let names = attempt
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(diag::certificate_names)
                .unwrap_or_default();
            d.say("Verifying peer certificate.");
            d.say(format!("Verifying certificate common name {domain}."));
            d.say(format!("TLS certificate match {domain}."));
            d.say("TLS certificate verified.");
            d.data["certificate"] = json!({ "names": names });
            diag::close_tls(attempt.conn, &mut stream).await;
            return d.finish(&host, true, None);
        }
        Some(e) => e,
    };
    drop(attempt.conn);
    drop(stream);
    let tls_error = match error {
        HandshakeError::Tls(e) => e,
        // Some servers (Python's asyncio among them) answer a ClientHello they share
        // no cipher with by closing the connection instead of sending an alert.
        HandshakeError::Closed if !negotiated => {
            d.say(diag::CLOSED_BEFORE_HELLO);
            return no_shared_cipher(
                d,
                addr,
                &src,
                &host,
                timeout,
                "the server closed the connection during the handshake".into(),
            )
            .await;
        }
        HandshakeError::Closed => {
            return d.fail(
                &host,
                "handshake",
                "TLS handshake failed: the server closed the connection during the handshake."
                    .into(),
            )
        }
        HandshakeError::Timeout => {
            return d.fail(
                &host,
                "handshake",
                format!(
                    "TLS handshake failed: no answer from the server within {} seconds.",
                    timeout.as_secs()
                ),
            )
        }
        HandshakeError::Io(e) => {
            return d.fail(&host, "handshake", format!("TLS handshake failed: {e}."))
        }
    };
    let mut explained = diag::explain(&tls_error, &domain);
    let foreign_ca = matches!(
        &tls_error,
        rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature
        )
    );
    if cpq && foreign_ca {
        // The only trust CPQ uses is the deployment CA, not public CAs or ca_file.
        explained.lines.truncate(1);
        explained.lines.push("The certificate is not issued by this deployment's CA (the [cpq] dir's ca.crt): the manager belongs to another deployment, or this gateway was enrolled by another manager (enroll it again with `pvo manager enroll`).".into());
    }
    if explained.certificate {
        d.say("Verifying peer certificate.");
    }
    for line in &explained.lines {
        d.say(line.clone());
    }
    let log_wording =
        crate::net::outbound::tls_error_text(&std::io::Error::other(tls_error.clone()));
    if explained.kind == "no_shared_cipher" {
        return no_shared_cipher(d, addr, &src, &host, timeout, log_wording).await;
    }
    d.data["log_wording"] = json!(format!("TLS failed: {log_wording}"));
    let message = explained.lines.last().cloned().unwrap_or_default();
    d.finish(&host, false, Some((explained.kind, message)))
}

/// The end of the dialogue for a server that refused every suite rustls offers:
/// probes for anonymous suites to tell the appliance's "no certificate from server" apart
/// from a plain cipher mismatch. `log_wording` is what delivery would log otherwise.
async fn no_shared_cipher(
    mut d: Dialogue,
    addr: SocketAddr,
    src: &Source,
    host: &str,
    timeout: Duration,
    log_wording: String,
) -> ProbeRun {
    const NO_CERT_LOG: &str = "verify error: no certificate from server";
    d.say("Checking for anonymous cipher suites.");
    let (kind, verdict, log) = match anonymous_check(addr, src, timeout).await {
        Ok(HelloAnswer::Anonymous(c)) => {
            d.say(format!("The server accepts the anonymous cipher {} ({}, {}), which provides no certificate.", c.name, c.iana, c.protocol));
            d.data["anonymous_cipher"] = json!(c);
            (
                "no_certificate",
                diag::NO_CERT_CIPHER.to_string(),
                NO_CERT_LOG.to_string(),
            )
        }
        Ok(HelloAnswer::Alert(_) | HelloAnswer::Other(_)) => {
            d.say("The server refuses anonymous cipher suites too.");
            (
                "no_shared_cipher",
                "TLS handshake failed: the server shares no cipher suite with PVO (TLS 1.2 or 1.3 with a certificate); check the server's TLS versions and ciphers.".to_string(),
                log_wording,
            )
        }
        Err(e) => {
            d.say(format!(
                "The check for anonymous cipher suites could not run: {e}."
            ));
            (
                "no_certificate",
                diag::NO_CERT_CIPHER.to_string(),
                NO_CERT_LOG.to_string(),
            )
        }
    };
    d.say(verdict.clone());
    if kind == "no_certificate" {
        // The appliance's log line, which is what an administrator greps for.
        d.say("No certificate was presented by the server.");
        d.say(format!("TLS failed: {log}"));
    }
    d.data["log_wording"] = json!(format!("TLS failed: {log}"));
    d.finish(host, false, Some((kind, verdict)))
}

/// Banner, EHLO, STARTTLS; on failure the failure kind and the line that says why.
async fn starttls(
    io: &mut BufReader<TcpStream>,
    helo: &str,
    timeout: Duration,
    d: &mut Dialogue,
) -> Result<(), (&'static str, String)> {
    let banner = diag::read_reply(io, timeout)
        .await
        .map_err(|e| ("smtp", format!("No SMTP greeting from the server: {e}.")))?;
    d.data["banner"] = json!(banner.text());
    if banner.code != 220 {
        return Err((
            "smtp",
            format!(
                "The server did not accept the connection: {}.",
                banner.text()
            ),
        ));
    }
    let ehlo = diag::command(io, &format!("EHLO {helo}"), timeout)
        .await
        .map_err(|e| ("smtp", format!("No answer to EHLO: {e}.")))?;
    let offered = ehlo.code == 250 && ehlo.has_extension("STARTTLS");
    d.data["starttls"] = json!(offered);
    if ehlo.code != 250 {
        return Err((
            "no_starttls",
            format!(
                "The server refused EHLO ({}), so it does not offer STARTTLS.",
                ehlo.text()
            ),
        ));
    }
    if !offered {
        return Err(("no_starttls", "The server does not offer STARTTLS.".into()));
    }
    let r = diag::command(io, "STARTTLS", timeout)
        .await
        .map_err(|e| ("smtp", format!("No answer to STARTTLS: {e}.")))?;
    if r.code != 220 {
        return Err((
            "starttls_refused",
            format!("The server refused STARTTLS: {}.", r.text()),
        ));
    }
    Ok(())
}

/// A second connection to the same address, up to STARTTLS, that offers only
/// anonymous cipher suites.
async fn anonymous_check(
    addr: SocketAddr,
    src: &Source,
    timeout: Duration,
) -> Result<HelloAnswer, String> {
    let stream = diag::connect_from(addr, src.address, timeout)
        .await
        .map_err(|e| match e {
            ConnectError::Bind(e) | ConnectError::Connect(e) => e,
        })?;
    let mut io = BufReader::new(stream);
    let mut scratch = Dialogue {
        lines: Vec::new(),
        data: json!({}),
    };
    starttls(&mut io, &src.hostname, timeout, &mut scratch)
        .await
        .map_err(|(_, line)| line)?;
    diag::anonymous_probe(io.into_inner(), timeout).await
}
