//! Opening an outbound connection, and the words for a failed TLS handshake on one.
//!
//! Delivery, the enable preflight and the `diagnose`/`tlsverify` commands open the same
//! kind of connection (from the default delivery interface when one is set, with the
//! same timeout and the `telnet` words for a failure) and word a failed handshake the
//! same way (OpenSSL's "verify error" texts administrators grep `mail_logs` for, see
//! docs/appliance.md). Neither is the SMTP client's own: they live here, in the network
//! layer, so the preflight takes them without importing delivery.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// How long a TCP connect may take before it counts as "Operation timed out".
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects from `bind` (the default delivery interface) when one is set.
pub async fn connect(addr: SocketAddr, bind: Option<IpAddr>) -> Result<TcpStream, String> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| e.to_string())?;
    if let Some(ip) = bind {
        sock.bind(SocketAddr::new(ip, 0))
            .map_err(|e| format!("cannot bind {ip}: {e}"))?;
    }
    let _ = sock.set_nodelay(true);
    match tokio::time::timeout(CONNECT_TIMEOUT, sock.connect(addr)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(crate::net::net_error::describe(&e)),
        Err(_) => Err("Operation timed out".to_string()),
    }
}

/// Explains a failed handshake the way the appliance's log does (OpenSSL's
/// "verify error" wording that administrators grep for).
pub fn tls_error_text(e: &std::io::Error) -> String {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    // A peer that offers only anonymous suites cannot agree on any suite
    // with rustls: it alerts handshake_failure or just closes. Either way
    // no certificate was ever presented: scenario 4 of docs/appliance.md.
    const NO_CERT: &str = "verify error: no certificate from server (no cipher suite with a certificate was offered; the server may offer only anonymous ciphers)";
    // A CPQ peer of the deployment this node does not accept (`trust::PeerPolicy`).
    if let Some(r) = crate::net::trust::refusal_of(e) {
        return format!("verify error: certificate not accepted: {r}");
    }
    if let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) {
        return match inner {
            E::AlertReceived(A::CertificateUnknown) => "alert received: CertificateUnknown (the peer does not accept this node's CPQ certificate: revoked there, or not the one enrolled there; see its mail_logs)".into(),
            E::InvalidCertificate(C::UnknownIssuer) => "verify error: unable to get local issuer certificate (certificate issued by an unknown CA)".into(),
            E::InvalidCertificate(C::BadSignature) => "verify error: certificate signature failure (not signed by a trusted CA)".into(),
            E::InvalidCertificate(C::NotValidForName) | E::InvalidCertificate(C::NotValidForNameContext { .. }) => {
                "verify error: certificate does not match the host name".into()
            }
            E::InvalidCertificate(C::Expired) | E::InvalidCertificate(C::ExpiredContext { .. }) => "verify error: certificate has expired".into(),
            E::InvalidCertificate(C::NotValidYet) | E::InvalidCertificate(C::NotValidYetContext { .. }) => {
                "verify error: certificate is not yet valid".into()
            }
            E::InvalidCertificate(c) => format!("verify error: {c:?}"),
            E::NoCertificatesPresented => "verify error: no certificate from server".into(),
            E::AlertReceived(A::HandshakeFailure) | E::AlertReceived(A::InsufficientSecurity) => NO_CERT.into(),
            E::AlertReceived(a) => format!("alert received: {a:?}"),
            other => other.to_string(),
        };
    }
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        return NO_CERT.into();
    }
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_connection_has_the_telnet_words() {
        // A port that was just free: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(connect(addr, None).await.unwrap_err(), "Connection refused");
    }

    #[tokio::test]
    async fn it_connects_from_the_given_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let from = IpAddr::from([127, 0, 0, 1]);
        let s = connect(addr, Some(from)).await.unwrap();
        assert_eq!(s.local_addr().unwrap().ip(), from);
        // An address of no interface here cannot be bound.
        let e = connect(addr, Some(IpAddr::from([192, 0, 2, 1])))
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot bind 192.0.2.1: "), "{e}");
    }

    #[test]
    fn a_closed_handshake_means_no_certificate() {
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert!(tls_error_text(&eof).starts_with("verify error: no certificate from server"));
        let other = std::io::Error::other("handshake cut");
        assert_eq!(tls_error_text(&other), "handshake cut");
    }
}
