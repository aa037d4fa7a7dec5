//! The enable preflight: can this gateway centralize its quarantines on that
//! manager? Each step is one of the failure scenarios of docs/appliance.md, named with
//! its cause and remedy, so `pvoconfig enable` and `pvo diagnose` never just
//! say "unavailable".
//!
//! 1. The CPQ certificate is there (the gateway is enrolled).
//! 2. TCP to the manager's port from the default delivery interface: a timeout
//!    is scenario 3 (that interface has no route to the manager), a refusal is
//!    scenario 1 (the manager is offline: listeners suspended).
//! 3. The banner: a 4xx/5xx greeting means the manager's HAT does not list
//!    this gateway's address.
//! 4. STARTTLS with the deployment trust: no certificate (anonymous ciphers) or
//!    one from another CA is scenario 4.
//! 5. `XPVO-CONTROL ready`: the manager's own answer — scenario 2 (migration
//!    wizard not committed, or not run by an Administrator) — or not enrolled.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufRead, AsyncWriteExt, BufReader};

use crate::core::cpq::checks::Check;
use crate::core::state::BoxFuture;

use super::Deps;

/// How long the preflight waits for the connection and for each answer.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One reply from the manager (read by `smtp_io::read_reply`).
async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<(u16, String), String> {
    use crate::net::smtp_io::ReadError;
    match crate::net::smtp_io::read_reply(r, TIMEOUT).await {
        Ok(reply) => Ok((reply.code, reply.text())),
        Err(ReadError::Timeout) => Err(format!("no answer within {} seconds", TIMEOUT.as_secs())),
        Err(ReadError::Closed) => Err("the manager closed the connection".into()),
        Err(ReadError::Io(e)) => Err(format!("read error: {e}")),
        Err(e @ ReadError::Malformed(_)) => Err(e.to_string()),
    }
}

async fn command<S: crate::net::smtp_io::Io>(
    io: &mut BufReader<S>,
    line: &str,
) -> Result<(u16, String), String> {
    io.get_mut()
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("write error: {e}"))?;
    io.get_mut()
        .flush()
        .await
        .map_err(|e| format!("write error: {e}"))?;
    read_reply(io).await
}

/// The default delivery interface as `(name, address)`; `None` for Auto.
fn delivery_interface(cfg: &crate::core::config::Config) -> Option<(String, IpAddr)> {
    cfg.delivery
        .default_interface
        .map(|i| (cfg.interfaces[i].name.clone(), cfg.interfaces[i].address))
}

/// Runs the checks against the manager `host:port`; stops at the first
/// failure (the later steps cannot run). Every check passed = ready.
pub async fn run(shared: &Deps, host: &str, port: u16) -> Vec<Check> {
    let mut checks = Vec::new();
    let cfg = shared.config.current();
    let node_id = cfg
        .cpq
        .as_ref()
        .map(|c| c.node_id.clone())
        .unwrap_or_else(|| cfg.hostname.clone());
    let iface = delivery_interface(&cfg);
    let helo = cfg.default_interface_hostname();
    drop(cfg);

    // 1. Enrolled.
    let Some(tls) = shared.tls.cpq() else {
        checks.push(Check::fail(
            "CPQ certificate",
            "this gateway has no CPQ certificate",
            "the gateway is not enrolled on the manager",
            format!("on the manager: add this gateway (`pvo manager enroll ... {node_id} --address ADDRESS --out DATA_DIR/cpq`) and commit, then restart or commit here"),
            None,
        ));
        return checks;
    };
    checks.push(Check::pass(
        "CPQ certificate",
        format!("enrolled as {node_id}"),
    ));

    // 2. TCP from the default delivery interface.
    let from = match &iface {
        Some((name, ip)) => format!("interface {name} ({ip})"),
        None => "interface Auto".to_string(),
    };
    let addrs = match shared.resolver.addresses(host).await {
        Ok(a) if !a.is_empty() => a,
        Ok(_) | Err(_) => {
            checks.push(Check::fail(
                "manager address",
                format!("{host} does not resolve"),
                format!("the manager's address {host} is not a known host"),
                "give the manager's IP address or a resolvable name (`pvoconfig enable --manager HOST:PORT`)",
                None,
            ));
            return checks;
        }
    };
    let addr = SocketAddr::new(addrs[0], port);
    let connected = tokio::time::timeout(
        TIMEOUT,
        crate::net::outbound::connect(addr, iface.as_ref().map(|i| i.1)),
    )
    .await
    .unwrap_or_else(|_| Err("Operation timed out".into()));
    let stream = match connected {
        Ok(s) => s,
        Err(e)
            if e.contains("timed out") || e.contains("unreachable") || e.contains("No route") =>
        {
            let remedy = match &iface {
                Some((name, _)) => format!("set the default delivery interface to Auto (`pvo deliveryconfig --interface Auto`, then `commit`), or route {} to the manager's network; `pvo telnet --interface {name} {host} {port}` shows the same timeout", addrs[0]),
                None => format!("give this gateway a route to {} (the manager's network); `pvo telnet {host} {port}` shows the same failure", addrs[0]),
            };
            checks.push(Check::fail(
                "connect to the manager",
                format!("connecting to {addr} from {from}: {e}"),
                format!("the default delivery interface ({from}) has no route to the manager"),
                remedy,
                Some(3),
            ));
            return checks;
        }
        Err(e) if e.contains("refused") => {
            checks.push(Check::fail(
                "connect to the manager",
                format!("connecting to {addr} from {from}: {e}"),
                format!("the manager is offline: nothing accepts connections on port {port} (its listeners are suspended — `status` on the manager shows `System status: Offline` — or its PVO service is not enabled)"),
                "on the manager: `pvo status`; if it is Offline, `pvo resume` (or `resumelisteners cpq_listener`)",
                Some(1),
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "connect to the manager",
                format!("connecting to {addr} from {from}: {e}"),
                format!("cannot connect to the manager: {e}"),
                format!("check that {host}:{port} is the manager's cpq_listener (`pvo telnet {host} {port}`)"),
                None,
            ));
            return checks;
        }
    };
    let local = stream
        .local_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_default();
    checks.push(Check::pass(
        "connect to the manager",
        format!("{addr} from {from} ({local})"),
    ));

    // 3. Banner and EHLO.
    let mut io = BufReader::new(stream);
    match read_reply(&mut io).await {
        Ok((220, _)) => {}
        Ok((code, text)) => {
            checks.push(Check::fail(
                "manager greeting",
                format!("{code} {text}"),
                format!("the manager refuses connections from {local} (its cpq_listener's HAT lists only added gateways)"),
                format!("on the manager: add this gateway with its address {local} (applianceconfig / `pvo manager enroll ... --address {local}`) and commit"),
                None,
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "manager greeting",
                e.clone(),
                format!("the manager did not greet: {e}"),
                "check the manager's cpq_listener (`pvo --dir MANAGER status detail`)",
                None,
            ));
            return checks;
        }
    }
    let starttls = match command(&mut io, &format!("EHLO {helo}\r\n")).await {
        Ok((250, text)) => text
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("STARTTLS")),
        _ => false,
    };
    let refused_tls = |why: String, cause: &str| {
        Check::fail(
            "TLS with the manager",
            why,
            cause.to_string(),
            "CPQ needs the manager's certificate from this deployment's CA: check that HOST:PORT is the PVO manager, re-enroll this gateway if the manager's CA changed; `pvo tlsverify the.cpq.host` shows the dialogue",
            Some(4),
        )
    };
    if !starttls {
        checks.push(refused_tls(
            "the manager does not offer STARTTLS".into(),
            "TLS was required but could not be successfully negotiated",
        ));
        return checks;
    }
    match command(&mut io, "STARTTLS\r\n").await {
        Ok((220, _)) => {}
        Ok((code, text)) => {
            checks.push(refused_tls(
                format!("STARTTLS refused: {code} {text}"),
                "TLS was required but could not be successfully negotiated",
            ));
            return checks;
        }
        Err(e) => {
            checks.push(refused_tls(
                e,
                "TLS was required but could not be successfully negotiated",
            ));
            return checks;
        }
    }
    let name = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("invalid.invalid".to_string()).unwrap());
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let plain = io.into_inner();
    let tls_stream = match tokio::time::timeout(TIMEOUT, connector.connect(name, plain)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = crate::net::outbound::tls_error_text(&e);
            checks.push(refused_tls(
                format!("TLS failed: {why}"),
                &format!(
                    "TLS failed: {why}; TLS was required but could not be successfully negotiated"
                ),
            ));
            return checks;
        }
        Err(_) => {
            checks.push(refused_tls(
                "the TLS handshake timed out".into(),
                "TLS was required but could not be successfully negotiated",
            ));
            return checks;
        }
    };
    let (proto, cipher) = crate::net::tls::describe(tls_stream.get_ref().1);
    let peer = crate::net::trust::peer_common_name(tls_stream.get_ref().1).unwrap_or_default();
    let mut io = BufReader::new(tls_stream);
    // TLS 1.3: a refused client certificate shows only at the first read.
    let cpq = match command(&mut io, &format!("EHLO {helo}\r\n")).await {
        Ok((250, text)) => text.lines().any(|l| {
            matches!(
                pvo_proto::cpq::parse_ehlo_keyword(l.trim()),
                Some((pvo_proto::cpq::Extension::Control, v)) if v.contains(&1)
            )
        }),
        Ok((code, text)) => {
            checks.push(refused_tls(
                format!("EHLO after TLS: {code} {text}"),
                "the manager refused the session after TLS",
            ));
            return checks;
        }
        Err(e) => {
            checks.push(Check::fail(
                "TLS with the manager",
                format!("the manager closed the session after the handshake: {e}"),
                "the manager does not accept this gateway's certificate (issued by another deployment CA, or revoked)",
                "re-enroll this gateway on the manager (`pvo manager enroll`) and restart it",
                Some(4),
            ));
            return checks;
        }
    };
    checks.push(Check::pass(
        "TLS with the manager",
        format!("{proto} {cipher}, manager certificate verified ({peer})"),
    ));
    if !cpq {
        checks.push(Check::fail(
            "manager ready",
            "the peer does not offer XPVO-CONTROL 1",
            format!("{host}:{port} is not a PVO manager's cpq_listener"),
            "give the manager's CPQ address (`pvoconfig enable --manager HOST:PORT`)",
            None,
        ));
        return checks;
    }

    // 5. The manager's own answer.
    let line = pvo_proto::cpq::CpqCommand::Control(pvo_proto::cpq::ControlRecord {
        action: pvo_proto::cpq::ControlAction::Ready,
        gateway_id: node_id.clone(),
        gateway_mid: 0,
        transfer_id: "ready".into(),
    })
    .encode();
    let answer = match line {
        Ok(l) => command(&mut io, &l).await,
        Err(e) => Err(e.to_string()),
    };
    let _ = command(&mut io, "QUIT\r\n").await;
    match answer {
        Ok((250, _)) => checks.push(Check::pass(
            "manager ready",
            format!("the manager is ready to centralize {node_id}"),
        )),
        Ok((code, text)) => {
            let why = text
                .trim_start_matches("5.7.1 ")
                .trim_start_matches("not ready: ")
                .to_string();
            let scenario = (why.contains("wizard")).then_some(2);
            let remedy = if why.contains("not committed") {
                "on the manager: `pvo commit` (as an Administrator)".to_string()
            } else if why.contains("not Administrator") || why.contains("not a user") {
                "on the manager, as an Administrator: run `pvoconfig migration` again and `commit`"
                    .to_string()
            } else if why.contains("not been run") {
                "on the manager: `pvo pvoconfig migration automatic` (or custom), then `commit`"
                    .to_string()
            } else {
                format!("on the manager: {why}")
            };
            checks.push(Check::fail(
                "manager ready",
                format!("{code} {text}"),
                why,
                remedy,
                scenario,
            ));
        }
        Err(e) => checks.push(Check::fail(
            "manager ready",
            e.clone(),
            format!("the manager did not answer the readiness query: {e}"),
            "check the manager (`pvo diagnose` there)",
            None,
        )),
    }
    checks
}

/// The commands' [`crate::core::state::Probes`]: this preflight, and the outbound connect and
/// handshake wording it shares with delivery, with the handles they use.
pub struct Probe(pub Deps);

/// Connects to `addr` from the address `from`, within the preflight's timeout, and
/// closes again; the error is `telnet`'s words.
pub async fn reach(addr: SocketAddr, from: IpAddr) -> Result<(), String> {
    tokio::time::timeout(TIMEOUT, crate::net::outbound::connect(addr, Some(from)))
        .await
        .unwrap_or_else(|_| Err("Operation timed out".into()))
        .map(drop)
}

impl crate::core::state::Probes for Probe {
    fn preflight<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, Vec<Check>> {
        Box::pin(run(&self.0, host, port))
    }

    fn reach(&self, addr: SocketAddr, from: IpAddr) -> BoxFuture<'static, Result<(), String>> {
        Box::pin(reach(addr, from))
    }

    fn tls_error_text(&self, e: &std::io::Error) -> String {
        crate::net::outbound::tls_error_text(e)
    }

    fn telnet<'a>(
        &'a self,
        test: crate::core::state::NetTest,
    ) -> BoxFuture<'a, crate::core::state::ProbeRun> {
        Box::pin(async move { super::dialogue::telnet(&self.0, &test).await })
    }

    fn tlsverify<'a>(
        &'a self,
        test: crate::core::state::NetTest,
    ) -> BoxFuture<'a, crate::core::state::ProbeRun> {
        Box::pin(async move { super::dialogue::tlsverify(&self.0, &test).await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reach_connects_from_the_address_and_says_why_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let from = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(reach(addr, from).await, Ok(()));
        drop(listener);
        assert_eq!(
            reach(addr, from).await,
            Err("Connection refused".to_string())
        );
    }
}
