//! Network probes behind the diagnostic commands (`telnet`, `tlsverify`), kept apart
//! from their wording so that `pvo diagnose` can run the same probes.
//!
//! A probe connects from a chosen interface (bind before connect, as delivery does),
//! speaks just enough SMTP to reach STARTTLS, and drives the rustls handshake by hand
//! instead of through `tokio-rustls`: when verification fails, the connection object is
//! still there, so the protocol and cipher that were negotiated can be reported next to
//! the reason. Each rustls failure is turned into the sentence an administrator acts on
//! ([`explain`]).
//!
//! rustls never offers an anonymous cipher suite, so a server that only has those answers
//! our ClientHello with a handshake_failure alert, or just closes the connection, and
//! tells us nothing more. To say for certain
//! that this is the cause, [`anonymous_probe`] sends a second, hand-built TLS 1.2
//! ClientHello that offers only anonymous suites and reads the ServerHello: if the
//! server picks one, it offers no certificate at all. That probe never finishes a
//! handshake and never carries data.
//!
//! # Security
//! Everything read here comes from a remote server. Replies are read by
//! `pvo_proto::reply` (4 KiB kept per line, the rest of a longer line skipped, never a reply
//! of its own; 100 lines per reply); the ServerHello parser reads one record and checks every
//! length against the bytes it has; certificate names are stripped of control
//! characters before they are printed. Bytes a server sends after its 220 to STARTTLS
//! and before the handshake are discarded (a STARTTLS injection attempt).

pub mod dialogue;
pub mod preflight;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{AlertDescription, CertificateError, ClientConfig, ClientConnection};
use tokio::io::{AsyncBufRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::core::config::Config;

/// The handles the probes use: the configuration (interfaces, the manager, `[cpq]`), the
/// resolver, and the outbound and CPQ TLS configurations. `node` builds it into
/// [`preflight::Probe`].
#[derive(Clone)]
pub struct Deps {
    pub config: Arc<crate::core::state::ConfigHandle>,
    pub resolver: Arc<dyn crate::core::resolve::Resolve>,
    pub tls: Arc<crate::core::state::TlsHandle>,
}

/// Where a probe connects from.
#[derive(Debug, Clone)]
pub struct Source {
    /// The interface name; `None` is Auto (the operating system picks the address).
    pub interface: Option<String>,
    /// The address to bind before connecting (the interface's).
    pub address: Option<IpAddr>,
    /// The name to give in EHLO.
    pub hostname: String,
}

impl Source {
    /// The interface selected by `name`: a configured interface (any case), `Auto`, or,
    /// when `None`, the default delivery interface, so a probe leaves the way mail does.
    pub fn select(cfg: &Config, name: Option<&str>) -> Result<Source, String> {
        let index = match name {
            None => cfg.delivery.default_interface,
            Some(n) if n.eq_ignore_ascii_case("auto") => None,
            Some(n) => Some(cfg.interface_by_name(n).ok_or_else(|| {
                let known: Vec<String> = cfg
                    .interfaces
                    .iter()
                    .map(|i| format!("{} ({})", i.name, i.address))
                    .collect();
                format!(
                    "Unknown interface \"{n}\". Interfaces: {}, or Auto.",
                    known.join(", ")
                )
            })?),
        };
        Ok(match index {
            Some(i) => {
                let iface = &cfg.interfaces[i];
                Source {
                    interface: Some(iface.name.clone()),
                    address: Some(iface.address),
                    hostname: iface.hostname.clone(),
                }
            }
            None => Source {
                interface: None,
                address: None,
                hostname: cfg.hostname.clone(),
            },
        })
    }

    /// The interface's name, or "Auto".
    pub fn name(&self) -> &str {
        self.interface.as_deref().unwrap_or("Auto")
    }
}

/// Why a connection could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The source address could not be bound (it is not on this machine, or the
    /// address families differ); nothing was sent.
    Bind(String),
    /// The connection attempt failed, in `telnet`'s words ("Connection refused").
    Connect(String),
}

/// Connects to `addr` from `bind` (when set) within `timeout`.
pub async fn connect_from(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    if let Some(ip) = bind {
        if ip.is_ipv4() != addr.is_ipv4() {
            let (have, want) = if ip.is_ipv4() {
                ("IPv4", "IPv6")
            } else {
                ("IPv6", "IPv4")
            };
            return Err(ConnectError::Bind(format!(
                "the interface address is {have} and {} is {want}",
                addr.ip()
            )));
        }
    }
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| ConnectError::Bind(crate::net::net_error::describe_plain(&e)))?;
    if let Some(ip) = bind {
        sock.bind(SocketAddr::new(ip, 0)).map_err(|e| {
            let mut text = crate::net::net_error::describe_plain(&e);
            if e.kind() == std::io::ErrorKind::AddrNotAvailable {
                text.push_str(&format!(" ({ip} is not an address of this machine)"));
            }
            ConnectError::Bind(text)
        })?;
    }
    let _ = sock.set_nodelay(true);
    match tokio::time::timeout(timeout, sock.connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(ConnectError::Connect(
            crate::net::net_error::describe_plain(&e),
        )),
        Err(_) => Err(ConnectError::Connect("Operation timed out".into())),
    }
}

/// One SMTP reply, as its lines were received (`250-STARTTLS`, `250 SIZE 1000`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// The reply as one string, lines separated by `\n`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// Whether an EHLO reply lists `keyword` (case-insensitive).
    pub fn has_extension(&self, keyword: &str) -> bool {
        self.lines.iter().skip(1).any(|l| {
            l.get(4..)
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
        })
    }
}

pub use crate::net::smtp_io::ReadError;

/// Reads one (possibly multi-line) SMTP reply within `timeout`, control characters
/// replaced for printing.
pub async fn read_reply<R: AsyncBufRead + Unpin>(
    r: &mut R,
    timeout: Duration,
) -> Result<Reply, ReadError> {
    let raw = crate::net::smtp_io::read_reply(r, timeout).await?;
    Ok(Reply {
        code: raw.code,
        lines: raw.lines.iter().map(|l| printable(l)).collect(),
    })
}

use crate::net::smtp_io::printable;

/// Sends one command line (CRLF added) and reads the reply.
pub async fn command<S>(
    io: &mut tokio::io::BufReader<S>,
    line: &str,
    timeout: Duration,
) -> Result<Reply, ReadError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let w = io.get_mut();
    w.write_all(format!("{line}\r\n").as_bytes())
        .await
        .map_err(|e| ReadError::Io(crate::net::net_error::describe_plain(&e)))?;
    w.flush()
        .await
        .map_err(|e| ReadError::Io(crate::net::net_error::describe_plain(&e)))?;
    read_reply(io, timeout).await
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    Tls(rustls::Error),
    Io(String),
    Closed,
    Timeout,
}

/// A finished handshake attempt: the connection (with whatever was negotiated before
/// it failed) and the failure, if any.
pub struct TlsAttempt {
    pub conn: ClientConnection,
    pub error: Option<HandshakeError>,
}

impl TlsAttempt {
    /// The negotiated protocol and cipher suite, as `mail_logs` names them.
    pub fn negotiated(&self) -> (String, String) {
        crate::net::tls::describe(&self.conn)
    }
}

/// Runs a rustls client handshake over `io` (after STARTTLS) for `name`, within
/// `timeout`. A fatal alert that rustls wants to send is sent before returning.
pub async fn tls_handshake(
    io: &mut TcpStream,
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    timeout: Duration,
) -> Result<TlsAttempt, rustls::Error> {
    let mut conn = ClientConnection::new(config, name)?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Err(e) = flush_tls(&mut conn, io).await {
            return Ok(TlsAttempt {
                conn,
                error: Some(HandshakeError::Io(e)),
            });
        }
        if !conn.is_handshaking() {
            return Ok(TlsAttempt { conn, error: None });
        }
        let n = match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => {
                return Ok(TlsAttempt {
                    conn,
                    error: Some(HandshakeError::Timeout),
                })
            }
            Ok(Err(e)) => {
                return Ok(TlsAttempt {
                    conn,
                    error: Some(HandshakeError::Io(crate::net::net_error::describe_plain(
                        &e,
                    ))),
                })
            }
            Ok(Ok(0)) => {
                return Ok(TlsAttempt {
                    conn,
                    error: Some(HandshakeError::Closed),
                })
            }
            Ok(Ok(n)) => n,
        };
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            if let Err(e) = conn.read_tls(&mut rd) {
                return Ok(TlsAttempt {
                    conn,
                    error: Some(HandshakeError::Io(e.to_string())),
                });
            }
            if let Err(e) = conn.process_new_packets() {
                let _ = flush_tls(&mut conn, io).await;
                return Ok(TlsAttempt {
                    conn,
                    error: Some(HandshakeError::Tls(e)),
                });
            }
        }
    }
}

/// Writes everything rustls has queued.
async fn flush_tls(conn: &mut ClientConnection, io: &mut TcpStream) -> Result<(), String> {
    while conn.wants_write() {
        let mut out = Vec::new();
        conn.write_tls(&mut out).map_err(|e| e.to_string())?;
        io.write_all(&out)
            .await
            .map_err(|e| crate::net::net_error::describe_plain(&e))?;
    }
    Ok(())
}

/// Ends a successful session politely: QUIT inside TLS, close_notify, FIN.
pub async fn close_tls(mut conn: ClientConnection, io: &mut TcpStream) {
    use std::io::Write;
    let _ = conn.writer().write_all(b"QUIT\r\n");
    conn.send_close_notify();
    let _ = flush_tls(&mut conn, io).await;
    let _ = io.shutdown().await;
}

/// The names a certificate is valid for (its subject alternative names; like every
/// modern verifier, rustls ignores the common name): `mx.example.com`, `IP 192.0.2.1`.
pub fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    crate::core::certificate::read(cert)
        .map(|c| c.names.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// A name of a failed name check, as rustls reports it. rustls keeps no certificate that
/// failed to verify, so the names in its error are all there is; it writes them as
/// `DnsName("mx.example.com")` and `IpAddress(192.0.2.1)`, which become `mx.example.com`
/// and `IP 192.0.2.1` as [`certificate_names`] gives them; anything else as given.
fn presented_name(p: &str) -> String {
    if let Some(dns) = p
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
    {
        return printable(dns);
    }
    if let Some(ip) = p
        .strip_prefix("IpAddress(")
        .and_then(|s| s.strip_suffix(')'))
    {
        return format!("IP {}", printable(ip));
    }
    printable(p)
}

/// What went wrong in a handshake, for people and scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// A stable name for scripts: `unknown_ca`, `name_mismatch`, `expired`,
    /// `not_yet_valid`, `bad_certificate`, `no_certificate`, `no_shared_cipher`,
    /// `protocol_version`, `handshake`.
    pub kind: &'static str,
    /// The lines of the dialogue, in order.
    pub lines: Vec<String>,
    /// Whether the failure is about the certificate (then "Verifying peer
    /// certificate." comes first).
    pub certificate: bool,
}

/// Explains a rustls error met while connecting to a server for `domain`.
pub fn explain(err: &rustls::Error, domain: &str) -> Explanation {
    use rustls::Error as E;
    let cert = |kind, lines: Vec<String>| Explanation {
        kind,
        lines,
        certificate: true,
    };
    let failed = |why: String| format!("Certificate verification failed: {why}.");
    match err {
        E::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => cert(
                "unknown_ca",
                vec![
                    failed("certificate issued by an unknown CA (unknown issuer)".into()),
                    "The certificate chain does not lead to a trusted CA: a public CA or one in tls.outbound.ca_file.".into(),
                ],
            ),
            CertificateError::NotValidForName => cert(
                "name_mismatch",
                vec![format!("Verifying certificate common name {domain}."), format!("TLS certificate does not match {domain}.")],
            ),
            CertificateError::NotValidForNameContext { presented, .. } => {
                let names: Vec<String> = presented.iter().map(|p| presented_name(p)).collect();
                let names = if names.is_empty() { "none".to_string() } else { names.join(", ") };
                cert(
                    "name_mismatch",
                    vec![
                        format!("Verifying certificate common name {domain}."),
                        format!("TLS certificate does not match {domain} (certificate names: {names})."),
                    ],
                )
            }
            CertificateError::Expired => cert("expired", vec![failed("certificate has expired".into())]),
            CertificateError::ExpiredContext { not_after, .. } => {
                cert("expired", vec![failed(format!("certificate has expired (valid until {} GMT)", gmt(not_after.as_secs())))])
            }
            CertificateError::NotValidYet => cert("not_yet_valid", vec![failed("certificate is not yet valid".into())]),
            CertificateError::NotValidYetContext { not_before, .. } => {
                cert("not_yet_valid", vec![failed(format!("certificate is not yet valid (valid from {} GMT)", gmt(not_before.as_secs())))])
            }
            CertificateError::Revoked => cert("bad_certificate", vec![failed("certificate revoked".into())]),
            CertificateError::BadSignature => cert("bad_certificate", vec![failed("certificate signature failure (bad signature)".into())]),
            CertificateError::BadEncoding => cert("bad_certificate", vec![failed("the certificate cannot be parsed (bad encoding)".into())]),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                cert("bad_certificate", vec![failed("the certificate is not for TLS servers (invalid purpose)".into())])
            }
            other => cert("bad_certificate", vec![failed(format!("{other:?}"))]),
        },
        E::NoCertificatesPresented => cert("no_certificate", vec!["No certificate was presented by the server.".into()]),
        E::AlertReceived(a @ (AlertDescription::HandshakeFailure | AlertDescription::InsufficientSecurity)) => Explanation {
            kind: "no_shared_cipher",
            lines: vec![format!("The server refused every cipher suite PVO offers ({} alert).", alert_name(*a))],
            certificate: false,
        },
        E::AlertReceived(AlertDescription::ProtocolVersion) => Explanation {
            kind: "protocol_version",
            lines: vec!["TLS handshake failed: the server accepts none of the TLS versions PVO offers (see sslconfig; SSL, TLS 1.0 and TLS 1.1 are never used).".into()],
            certificate: false,
        },
        other => Explanation { kind: "handshake", lines: vec![format!("TLS handshake failed: {other}.")], certificate: false },
    }
}

/// The verdict when a server refuses all our cipher suites (with an alert, or by
/// closing the connection before its ServerHello) and may offer only anonymous ones.
pub const NO_CERT_CIPHER: &str = "TLS handshake failed: the server offers no cipher suite with a certificate (it may offer only anonymous ciphers, which provide no certificate: verify error: no certificate from server).";

/// The line for a server that closed the connection in answer to our ClientHello,
/// which is how some servers (Python's asyncio among them) say "no shared cipher".
pub const CLOSED_BEFORE_HELLO: &str =
    "The server closed the connection without choosing a cipher suite.";

fn alert_name(a: AlertDescription) -> &'static str {
    match a {
        AlertDescription::HandshakeFailure => "handshake_failure",
        AlertDescription::InsufficientSecurity => "insufficient_security",
        _ => "fatal",
    }
}

fn gmt(secs: u64) -> String {
    crate::core::mail_log::ctime(secs)
}

/// Anonymous (certificate-less) cipher suites of TLS 1.2 and before: (code, IANA name,
/// OpenSSL name).
const ANON_SUITES: &[(u16, &str, &str)] = &[
    (
        0xC019,
        "TLS_ECDH_anon_WITH_AES_256_CBC_SHA",
        "AECDH-AES256-SHA",
    ),
    (
        0xC018,
        "TLS_ECDH_anon_WITH_AES_128_CBC_SHA",
        "AECDH-AES128-SHA",
    ),
    (
        0xC017,
        "TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA",
        "AECDH-DES-CBC3-SHA",
    ),
    (0xC016, "TLS_ECDH_anon_WITH_RC4_128_SHA", "AECDH-RC4-SHA"),
    (
        0x00A7,
        "TLS_DH_anon_WITH_AES_256_GCM_SHA384",
        "ADH-AES256-GCM-SHA384",
    ),
    (
        0x00A6,
        "TLS_DH_anon_WITH_AES_128_GCM_SHA256",
        "ADH-AES128-GCM-SHA256",
    ),
    (
        0x006D,
        "TLS_DH_anon_WITH_AES_256_CBC_SHA256",
        "ADH-AES256-SHA256",
    ),
    (
        0x006C,
        "TLS_DH_anon_WITH_AES_128_CBC_SHA256",
        "ADH-AES128-SHA256",
    ),
    (0x003A, "TLS_DH_anon_WITH_AES_256_CBC_SHA", "ADH-AES256-SHA"),
    (0x0034, "TLS_DH_anon_WITH_AES_128_CBC_SHA", "ADH-AES128-SHA"),
    (
        0x0089,
        "TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA",
        "ADH-CAMELLIA256-SHA",
    ),
    (
        0x0046,
        "TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA",
        "ADH-CAMELLIA128-SHA",
    ),
    (
        0x001B,
        "TLS_DH_anon_WITH_3DES_EDE_CBC_SHA",
        "ADH-DES-CBC3-SHA",
    ),
    (0x0018, "TLS_DH_anon_WITH_RC4_128_MD5", "ADH-RC4-MD5"),
];

/// A TLS 1.2 ClientHello record that offers only [`ANON_SUITES`], with the elliptic
/// curve extensions the ECDH suites need.
pub fn anonymous_client_hello(random: [u8; 32]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&random);
    body.push(0); // no session id
    let suites: Vec<u8> = ANON_SUITES
        .iter()
        .flat_map(|(c, _, _)| c.to_be_bytes())
        .collect();
    body.extend_from_slice(&(suites.len() as u16).to_be_bytes());
    body.extend_from_slice(&suites);
    body.extend_from_slice(&[1, 0]); // compression: null only
    let mut ext = Vec::new();
    // supported_groups: x25519, secp256r1, secp384r1
    ext.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18,
    ]);
    // ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    record.extend_from_slice(&hs);
    record
}

/// An anonymous cipher suite a server agreed to.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AnonymousCipher {
    /// As OpenSSL and the appliance name it: `AECDH-AES256-SHA`.
    pub name: String,
    /// The IANA name: `TLS_ECDH_anon_WITH_AES_256_CBC_SHA`.
    pub iana: String,
    /// `TLSv1.2`.
    pub protocol: String,
}

/// The server's first answer to [`anonymous_client_hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloAnswer {
    /// A ServerHello choosing an anonymous suite.
    Anonymous(AnonymousCipher),
    /// A fatal alert (the server refuses anonymous suites too).
    Alert(u8),
    /// Anything else (a ServerHello with a suite we did not offer, garbage).
    Other(String),
}

/// Parses the first TLS record a server sent; `None` if more bytes are needed.
pub fn parse_hello_answer(b: &[u8]) -> Option<HelloAnswer> {
    match b {
        [] => return None,
        [t, ..] if *t != 0x15 && *t != 0x16 => {
            return Some(HelloAnswer::Other(format!(
                "not TLS (first byte 0x{t:02X})"
            )))
        }
        [_, v, ..] if *v != 3 => {
            return Some(HelloAnswer::Other("not TLS (record version)".into()))
        }
        _ if b.len() < 5 => return None,
        _ => {}
    }
    let len = u16::from_be_bytes([b[3], b[4]]) as usize;
    let Some(rec) = b.get(5..5 + len) else {
        return if len > 16 * 1024 + 2048 {
            Some(HelloAnswer::Other("oversized TLS record".into()))
        } else {
            None
        };
    };
    match b[0] {
        0x15 if rec.len() >= 2 => Some(HelloAnswer::Alert(rec[1])),
        0x16 => {
            // Handshake header (type 2 = ServerHello, 3-byte length), then version,
            // random, session id, cipher suite.
            if rec.len() < 4 || rec[0] != 0x02 {
                return Some(HelloAnswer::Other("not a ServerHello".into()));
            }
            let version = rec.get(4..6)?;
            let sid_len = *rec.get(38)? as usize;
            let suite = rec.get(39 + sid_len..41 + sid_len)?;
            let code = u16::from_be_bytes([suite[0], suite[1]]);
            let protocol = match version {
                [3, 3] => "TLSv1.2",
                [3, 2] => "TLSv1.1",
                [3, 1] => "TLSv1",
                [3, 0] => "SSLv3",
                _ => "unknown",
            };
            match ANON_SUITES.iter().find(|(c, _, _)| *c == code) {
                Some((_, iana, name)) => Some(HelloAnswer::Anonymous(AnonymousCipher {
                    name: name.to_string(),
                    iana: iana.to_string(),
                    protocol: protocol.into(),
                })),
                None => Some(HelloAnswer::Other(format!(
                    "ServerHello with cipher suite 0x{code:04X}"
                ))),
            }
        }
        _ => Some(HelloAnswer::Other(
            "a TLS record that is neither alert nor handshake".into(),
        )),
    }
}

/// Sends [`anonymous_client_hello`] over a connection that has just had its 220 to
/// STARTTLS, and reads the answer; the connection is then dropped.
pub async fn anonymous_probe(mut io: TcpStream, timeout: Duration) -> Result<HelloAnswer, String> {
    let mut random = [0u8; 32];
    crate::net::tls::provider()
        .secure_random
        .fill(&mut random)
        .map_err(|_| "no random bytes".to_string())?;
    io.write_all(&anonymous_client_hello(random))
        .await
        .map_err(|e| crate::net::net_error::describe_plain(&e))?;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(a) = parse_hello_answer(&got) {
            return Ok(a);
        }
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Err(_) => return Err("no answer in time".into()),
            Ok(Err(e)) => return Err(crate::net::net_error::describe_plain(&e)),
            Ok(Ok(0)) => return Err("the server closed the connection".into()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_each_certificate_failure() {
        let mismatch =
            rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("other.example").unwrap(),
                presented: vec![
                    "DnsName(\"example.com\")".into(),
                    "DnsName(\"mx.example.com\")".into(),
                    "IpAddress(192.0.2.1)".into(),
                ],
            });
        let cases: Vec<(rustls::Error, &str, &str)> = vec![
            (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), "unknown_ca", "Certificate verification failed: certificate issued by an unknown CA (unknown issuer)."),
            (mismatch, "name_mismatch", "TLS certificate does not match other.example (certificate names: example.com, mx.example.com, IP 192.0.2.1)."),
            (rustls::Error::InvalidCertificate(CertificateError::NotValidForName), "name_mismatch", "TLS certificate does not match other.example."),
            (rustls::Error::InvalidCertificate(CertificateError::Expired), "expired", "Certificate verification failed: certificate has expired."),
            (rustls::Error::NoCertificatesPresented, "no_certificate", "No certificate was presented by the server."),
            (rustls::Error::AlertReceived(AlertDescription::HandshakeFailure), "no_shared_cipher", "The server refused every cipher suite PVO offers (handshake_failure alert)."),
            (rustls::Error::AlertReceived(AlertDescription::InsufficientSecurity), "no_shared_cipher", "The server refused every cipher suite PVO offers (insufficient_security alert)."),
            (rustls::Error::AlertReceived(AlertDescription::ProtocolVersion), "protocol_version", "TLS handshake failed: the server accepts none of the TLS versions"),
            (rustls::Error::AlertReceived(AlertDescription::InternalError), "handshake", "TLS handshake failed: received fatal alert"),
        ];
        for (err, kind, line) in cases {
            let e = explain(&err, "other.example");
            assert_eq!(e.kind, kind, "{err:?}");
            assert!(
                e.lines.iter().any(|l| l.starts_with(line)),
                "{err:?}: {:?} lacks {line:?}",
                e.lines
            );
        }
    }

    #[test]
    fn certificate_names_are_the_subject_alternative_names() {
        let c = rcgen::generate_simple_self_signed(vec![
            "mx.example.com".to_string(),
            "192.0.2.1".to_string(),
            "example.com".to_string(),
        ])
        .unwrap();
        assert_eq!(
            certificate_names(c.cert.der()),
            ["mx.example.com", "IP 192.0.2.1", "example.com"]
        );
        // The same names as a failed name check reports them.
        for (presented, shown) in [
            ("DnsName(\"mx.example.com\")", "mx.example.com"),
            ("IpAddress(192.0.2.1)", "IP 192.0.2.1"),
            ("DirectoryName", "DirectoryName"),
        ] {
            assert_eq!(presented_name(presented), shown);
        }
        assert!(certificate_names(&CertificateDer::from(vec![0x30, 0x00])).is_empty());
    }

    #[test]
    fn name_mismatch_checks_the_domain_first() {
        let e = explain(
            &rustls::Error::InvalidCertificate(CertificateError::NotValidForName),
            "example.org",
        );
        assert_eq!(e.lines[0], "Verifying certificate common name example.org.");
        assert!(e.certificate);
    }

    #[test]
    fn client_hello_offers_only_anonymous_suites() {
        let hello = anonymous_client_hello([7; 32]);
        assert_eq!(&hello[..3], &[0x16, 0x03, 0x01]);
        assert_eq!(
            u16::from_be_bytes([hello[3], hello[4]]) as usize,
            hello.len() - 5
        );
        assert_eq!(hello[5], 0x01);
        let hs_len = u32::from_be_bytes([0, hello[6], hello[7], hello[8]]) as usize;
        assert_eq!(hs_len, hello.len() - 9);
        let suites_len = u16::from_be_bytes([hello[9 + 35], hello[9 + 36]]) as usize;
        assert_eq!(suites_len, ANON_SUITES.len() * 2);
    }

    fn server_hello(version: [u8; 2], sid: &[u8], suite: u16) -> Vec<u8> {
        let mut body = version.to_vec();
        body.extend_from_slice(&[0; 32]);
        body.push(sid.len() as u8);
        body.extend_from_slice(sid);
        body.extend_from_slice(&suite.to_be_bytes());
        body.push(0);
        let mut hs = vec![0x02, 0, 0, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 3, 3, 0, hs.len() as u8];
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn parses_the_answer_to_the_anonymous_hello() {
        let anon = server_hello([3, 3], &[1; 32], 0xC019);
        assert_eq!(
            parse_hello_answer(&anon),
            Some(HelloAnswer::Anonymous(AnonymousCipher {
                name: "AECDH-AES256-SHA".into(),
                iana: "TLS_ECDH_anon_WITH_AES_256_CBC_SHA".into(),
                protocol: "TLSv1.2".into()
            }))
        );
        // Incomplete input asks for more, at every cut.
        for cut in 0..anon.len() {
            assert_eq!(parse_hello_answer(&anon[..cut]), None, "cut at {cut}");
        }
        assert!(matches!(
            parse_hello_answer(&server_hello([3, 3], &[], 0x1301)),
            Some(HelloAnswer::Other(_))
        ));
        assert_eq!(
            parse_hello_answer(&[0x15, 3, 3, 0, 2, 2, 40]),
            Some(HelloAnswer::Alert(40))
        );
        assert!(matches!(
            parse_hello_answer(b"220 not TLS at all\r\n"),
            Some(HelloAnswer::Other(_))
        ));
        assert!(matches!(
            parse_hello_answer(&[0x16, 3, 3, 0xff, 0xff]),
            Some(HelloAnswer::Other(_))
        ));
    }

    #[tokio::test]
    async fn the_tail_of_a_long_reply_line_is_not_the_next_reply() {
        // A buffer of 4096 bytes makes the first read end inside the long line, where the
        // second starts with what would be a final line if the line were cut there.
        let mut data = b"220-".to_vec();
        data.resize(4096, b'x');
        data.extend_from_slice(b"554 not a reply\r\n220 mx.test ESMTP\r\n250 next\r\n");
        let mut r = tokio::io::BufReader::with_capacity(4096, data.as_slice());
        let banner = read_reply(&mut r, Duration::from_secs(1)).await.unwrap();
        assert_eq!(banner.code, 220, "{banner:?}");
        assert_eq!(banner.lines.len(), 2);
        assert_eq!(banner.lines[1], "220 mx.test ESMTP");
        let next = read_reply(&mut r, Duration::from_secs(1)).await.unwrap();
        assert_eq!(next.lines, ["250 next"]);
    }

    #[tokio::test]
    async fn reads_multiline_replies_and_extensions() {
        let data: &[u8] = b"250-mx.test\r\n250-SIZE 100\r\n250-starttls\r\n250 8BITMIME\r\n";
        let mut r = tokio::io::BufReader::new(data);
        let reply = read_reply(&mut r, Duration::from_secs(1)).await.unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines.len(), 4);
        assert!(reply.has_extension("STARTTLS"));
        assert!(!reply.has_extension("PIPELINING"));
        let data: &[u8] = b"220 hi\x1b[31m\r\n";
        let reply = read_reply(&mut tokio::io::BufReader::new(data), Duration::from_secs(1))
            .await
            .unwrap();
        assert_eq!(reply.text(), "220 hi?[31m");
        let data: &[u8] = b"HTTP/1.1 400\r\n";
        assert!(matches!(
            read_reply(&mut tokio::io::BufReader::new(data), Duration::from_secs(1)).await,
            Err(ReadError::Malformed(_))
        ));
        let data: &[u8] = b"";
        assert_eq!(
            read_reply(&mut tokio::io::BufReader::new(data), Duration::from_secs(1)).await,
            Err(ReadError::Closed)
        );
    }

    #[test]
    fn source_defaults_to_the_delivery_interface() {
        let text = r#"
[node]
hostname = "gw.example.com"
[[interface]]
name = "Management"
address = "127.0.0.1"
hostname = "mgmt.example.com"
[[interface]]
name = "Data2"
address = "192.0.2.1"
hostname = "d2.example.com"
[delivery]
default_interface = "Data2"
"#;
        let cfg = Config::parse(
            text,
            std::path::Path::new("t.toml"),
            std::path::Path::new("/tmp"),
        )
        .unwrap();
        let s = Source::select(&cfg, None).unwrap();
        assert_eq!(
            (s.name(), s.address, s.hostname.as_str()),
            (
                "Data2",
                Some("192.0.2.1".parse().unwrap()),
                "d2.example.com"
            )
        );
        let s = Source::select(&cfg, Some("management")).unwrap();
        assert_eq!(s.name(), "Management");
        let s = Source::select(&cfg, Some("Auto")).unwrap();
        assert_eq!((s.name(), s.address), ("Auto", None));
        let e = Source::select(&cfg, Some("eth9")).unwrap_err();
        assert_eq!(e, "Unknown interface \"eth9\". Interfaces: Management (127.0.0.1), Data2 (192.0.2.1), or Auto.");
    }

    #[test]
    fn os_errors_read_like_telnet() {
        assert_eq!(
            crate::net::net_error::describe_plain(&std::io::Error::from_raw_os_error(111)),
            "Connection refused"
        );
        assert_eq!(
            crate::net::net_error::describe_plain(&std::io::Error::from_raw_os_error(110)),
            "Operation timed out"
        );
        assert_eq!(
            crate::net::net_error::describe_plain(&std::io::Error::from_raw_os_error(99)),
            "Cannot assign requested address"
        );
    }
}
