//! The deployment CA and mutual TLS for CPQ (the gateway ↔ manager link,
//! port 7025).
//!
//! Trust model:
//!
//! - **One deployment CA, on the manager.** [`ensure_ca`] creates it once in
//!   the manager's cpq directory (`ca.crt`, `ca.key` readable by the owner
//!   only). It is not a web PKI CA and nothing else trusts it: it exists only
//!   to say "this node belongs to this deployment". It may sign end-entity
//!   certificates only (path length 0).
//! - **Enrollment issues node certificates.** [`issue`] signs a certificate
//!   for one node (the manager itself, or a gateway being enrolled) and writes
//!   `node.crt`, `node.key` and a copy of `ca.crt` into that node's cpq
//!   directory. The certificate names the node (CN = node id) and carries, as
//!   subject alternative names, every address and host name peers use to
//!   reach it, and it is valid for both TLS server and TLS client use: the
//!   gateway connects to the manager to quarantine, the manager connects to
//!   the gateway to release.
//! - **Both directions verify, both directions authenticate.** Every CPQ
//!   connection is mutual TLS (TLS 1.2/1.3, rustls, `ring`). The connecting
//!   side checks the receiving side's chain against `ca.crt` only, with the
//!   normal host name / IP check ([`client_config`]); the receiving side
//!   requires a client certificate that chains to the same `ca.crt`
//!   ([`server_config`]). A peer with no certificate, or with one from another
//!   deployment (or from the web PKI), fails the handshake;
//!   [`server_error_text`] words the failure the way administrators grep for
//!   it, and [`peer_common_name`] tells who the authenticated peer is.
//! - **A chain to the CA is not enough: each side says whom it accepts.** Every
//!   certificate carries its role in the subject (OU `PVO manager` or `PVO
//!   gateway`) and a random serial. On top of the chain check, both verifiers
//!   ([`server_config`], [`client_config`]) apply the node's [`PeerPolicy`] in
//!   the handshake itself: a gateway accepts only its manager — the certificate
//!   pinned when it was added (`manager.crt`, written by `pvo manager enroll`
//!   and `cpqcert install`), or, for a gateway enrolled by an older version, a
//!   certificate issued for the manager role; a manager accepts only the
//!   gateways of its committed configuration, each with the serial enrolled for
//!   it (`[[cpq.gateway]] serial`), never a manager's certificate. Both refuse
//!   the serials on their revocation list (`revoked.json`, `cpqcert revoke`).
//!   So another gateway's certificate, or one from an enrollment that was
//!   cleared, deleted or replaced, fails the handshake; the refusal carries its
//!   reason ([`refusal_of`]) for the log and the counters.
//!
//! Certificates are read by [`crate::core::certificate`] (x509-parser): the subject's
//! CN and OU, the serial, the issuer and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName as TlsName,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;

use crate::core::cpq::pki::{identify, CertRole, Identity, CA_CERT, NODE_CERT, NODE_KEY};
use crate::net::tls::provider;

static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn load_ca(dir: &Path) -> Result<Arc<RootCertStore>> {
    let path = dir.join(CA_CERT);
    let certs = CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading the deployment CA {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the deployment CA {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("using {} as a trust anchor", path.display()))?;
    }
    Ok(Arc::new(roots))
}

fn load_node(dir: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let (cert, key) = (dir.join(NODE_CERT), dir.join(NODE_KEY));
    let certs = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading the node certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the node certificate {}", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading the node key {}", key.display()))?;
    Ok((certs, key))
}

/// Server side (a cpq_listener after STARTTLS): presents dir/node.crt +
/// node.key and requires a client certificate that chains to dir/ca.crt and
/// that `policy` accepts.
pub fn server_config(dir: &Path, policy: Arc<PeerPolicy>) -> Result<Arc<ServerConfig>> {
    let roots = load_ca(dir)?;
    let (certs, key) = load_node(dir)?;
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .with_context(|| format!("client verifier for {}", dir.join(CA_CERT).display()))?;
    let verifier = Arc::new(AllowedClients { inner, policy });
    let sc = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} do not match",
                dir.join(NODE_CERT).display(),
                dir.join(NODE_KEY).display()
            )
        })?;
    Ok(Arc::new(sc))
}

/// Client side: verifies the server against dir/ca.crt only (with the normal
/// name check against the ServerName the caller passes) and `policy`, and
/// presents dir/node.crt + node.key as client certificate.
pub fn client_config(dir: &Path, policy: Arc<PeerPolicy>) -> Result<Arc<ClientConfig>> {
    let roots = load_ca(dir)?;
    let (certs, key) = load_node(dir)?;
    let inner = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .with_context(|| format!("server verifier for {}", dir.join(CA_CERT).display()))?;
    let cc = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(VERSIONS)
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AllowedServer { inner, policy }))
        .with_client_auth_cert(certs, key)
        .with_context(|| {
            format!(
                "{} and {} do not match",
                dir.join(NODE_CERT).display(),
                dir.join(NODE_KEY).display()
            )
        })?;
    Ok(Arc::new(cc))
}

/// Whom a node accepts as its CPQ peer, beyond a chain to the deployment CA.
#[derive(Debug, Clone)]
pub enum Accept {
    /// A gateway: its managers only — the pinned certificates (DER; several when the
    /// deployment has several managers on one store) when they were installed, else
    /// (enrolled by an older version) any certificate issued for the manager role.
    Manager { pinned: Option<Vec<Vec<u8>>> },
    /// A manager: its added gateways (committed configuration), id -> the serial
    /// enrolled for it (`None`: enrolled by an older version, any serial).
    Gateways(BTreeMap<String, Option<String>>),
}

/// The peer policy checked in every CPQ handshake (both directions).
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub accept: Accept,
    /// Serials (hex) refused whatever else holds.
    pub revoked: BTreeSet<String>,
}

/// Why a handshake was refused by the [`PeerPolicy`] (`cpq::refusal`).
pub use crate::core::cpq::refusal::Refusal;

impl PeerPolicy {
    /// Accepts or refuses a certificate that already chains to the CA.
    pub fn check(&self, der: &[u8]) -> std::result::Result<Identity, Refusal> {
        use crate::core::cpq::refusal as r;
        let Some(id) = identify(der) else {
            return Err(Refusal {
                reason: r::CERTIFICATE,
                text: "the certificate cannot be read (no serial or subject)".into(),
                peer: None,
            });
        };
        let refuse = |reason, text: String| {
            Err(Refusal {
                reason,
                text,
                peer: Some(id.cn.clone()),
            })
        };
        let who = format!("{} (serial {})", id.cn, id.serial);
        if self.revoked.contains(&id.serial) {
            return refuse(
                r::REVOKED,
                format!("certificate of {who} is revoked on this node (`cpqcert list`)"),
            );
        }
        match &self.accept {
            Accept::Manager { pinned: Some(p) } => {
                if !p.iter().any(|c| c.as_slice() == der) {
                    let names: Vec<String> = p
                        .iter()
                        .filter_map(|c| identify(c))
                        .map(|m| format!("{} serial {}", m.cn, m.serial))
                        .collect();
                    let pinned = if names.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", names.join(", "))
                    };
                    return refuse(
                        r::NOT_MANAGER,
                        format!(
                            "certificate of {who} is not the manager's this gateway was added to{pinned}: only that manager may release to it or send it control records"
                        ),
                    );
                }
            }
            Accept::Manager { pinned: None } => {
                if id.role != Some(CertRole::Manager) {
                    return refuse(
                        r::NOT_MANAGER,
                        format!(
                            "certificate of {who} was issued to a {}, not to the manager: only the manager may release to this gateway",
                            id.role.map_or("node of an older version", CertRole::as_str)
                        ),
                    );
                }
            }
            Accept::Gateways(enrolled) => {
                if id.role == Some(CertRole::Manager) {
                    return refuse(
                        r::ROLE,
                        format!("certificate of {who} was issued to a manager; a manager never acts as a gateway"),
                    );
                }
                match enrolled.get(&id.cn) {
                    None => {
                        return refuse(
                            r::NOT_ENROLLED,
                            format!("{} is not a gateway added to this manager (never added, deleted, or its enrollment was not committed)", id.cn),
                        )
                    }
                    Some(Some(serial)) if *serial != id.serial => {
                        return refuse(
                            r::SERIAL,
                            format!(
                                "certificate of {who} is not the one enrolled for {} (serial {serial}): issued by an enrollment that was cleared or replaced",
                                id.cn
                            ),
                        )
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(id)
    }
}

/// The policy's refusal inside a failed handshake's error, if that is why it failed.
pub fn refusal_of(e: &std::io::Error) -> Option<&Refusal> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    let rustls::Error::InvalidCertificate(CertificateError::Other(o)) = tls else {
        return None;
    };
    let inner: &(dyn std::error::Error + 'static) = o.0.as_ref();
    inner.downcast_ref::<Refusal>()
}

fn refused(r: Refusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(r))))
}

/// The client verifier of a cpq_listener: the CA's chain, then the policy.
#[derive(Debug)]
struct AllowedClients {
    inner: Arc<dyn ClientCertVerifier>,
    policy: Arc<PeerPolicy>,
}

impl ClientCertVerifier for AllowedClients {
    fn root_hint_subjects(&self) -> &[TlsName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let ok = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        self.policy.check(end_entity).map_err(refused)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server verifier of CPQ connections: the CA's chain and the name, then
/// the policy.
#[derive(Debug)]
struct AllowedServer {
    inner: Arc<WebPkiServerVerifier>,
    policy: Arc<PeerPolicy>,
}

impl ServerCertVerifier for AllowedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let ok = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        self.policy.check(end_entity).map_err(refused)?;
        Ok(ok)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The CN of the peer's end-entity certificate once a handshake is done
/// (None without a peer certificate or without a CN).
pub fn peer_common_name(conn: &rustls::CommonState) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    crate::core::certificate::read(cert).ok()?.subject_cn
}

/// Explains a failed server-side handshake in the wording administrators
/// grep for ("verify error: no certificate from client", "verify error:
/// unable to get local issuer certificate (certificate issued by an unknown
/// CA)"). `e` is the io::Error tokio-rustls's accept returns.
pub fn server_error_text(e: &std::io::Error) -> String {
    error_text(e, "client")
}

fn error_text(e: &std::io::Error, peer: &str) -> String {
    use rustls::Error as E;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                format!("the {peer} closed the connection during the TLS handshake")
            }
            _ => format!("TLS handshake: {e}"),
        };
    };
    match tls {
        E::NoCertificatesPresented => format!("verify error: no certificate from {peer}"),
        E::InvalidCertificate(c) => format!("verify error: {}", certificate_error_text(c)),
        E::AlertReceived(a) => {
            use rustls::AlertDescription as A;
            let why = match a {
                A::UnknownCA | A::BadCertificate | A::DecryptError => {
                    " (it does not trust this node's certificate: issued by another deployment CA?)"
                }
                // What a PeerPolicy refusal sends.
                A::CertificateUnknown => {
                    " (it does not accept this node's certificate: issued by another deployment CA, revoked there, or not the one enrolled there — see its mail_logs)"
                }
                A::CertificateRequired => " (it requires a certificate from this node)",
                A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => {
                    " (no TLS version or cipher in common; CPQ uses TLS 1.2/1.3 only)"
                }
                _ => "",
            };
            format!("the {peer} aborted the handshake with alert {a:?}{why}")
        }
        E::PeerIncompatible(p) => {
            format!("no TLS version or cipher in common with the {peer} (TLS 1.2/1.3 only): {p:?}")
        }
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            format!("the {peer} does not speak TLS as expected: {tls}")
        }
        other => format!("TLS handshake: {other}"),
    }
}

/// OpenSSL's words for certificate verification failures, which is what
/// administrators search logs for.
fn certificate_error_text(c: &CertificateError) -> String {
    use CertificateError as C;
    match c {
        C::UnknownIssuer => {
            "unable to get local issuer certificate (certificate issued by an unknown CA)".into()
        }
        C::BadSignature => "certificate signature failure".into(),
        C::Expired | C::ExpiredContext { .. } => "certificate has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "certificate is not yet valid".into(),
        C::Revoked => "certificate revoked".into(),
        C::BadEncoding => "unable to decode the certificate".into(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
            "unsupported certificate purpose".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            format!("hostname mismatch ({c})")
        }
        C::Other(o) => {
            let inner: &(dyn std::error::Error + 'static) = o.0.as_ref();
            match inner.downcast_ref::<Refusal>() {
                Some(r) => format!("certificate not accepted: {r}"),
                None => format!("{o}"),
            }
        }
        other => format!("{other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::cpq::pki::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    struct Deployment {
        _tmp: tempfile::TempDir,
        ca: PathBuf,
        manager: PathBuf,
        gw: PathBuf,
    }

    fn deployment() -> Deployment {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        let manager = tmp.path().join("manager");
        let gw = tmp.path().join("gw1");
        assert!(ensure_ca(&ca, "test").unwrap());
        issue(
            &ca,
            "manager",
            CertRole::Manager,
            &["manager.cpq".into(), "127.0.0.2".into()],
            &manager,
        )
        .unwrap();
        issue(
            &ca,
            "gw1",
            CertRole::Gateway,
            &["gw1".into(), "127.0.0.1".into()],
            &gw,
        )
        .unwrap();
        Deployment {
            _tmp: tmp,
            ca,
            manager,
            gw,
        }
    }

    /// The manager of [`deployment`]: accepts gw1 with any serial.
    fn manager_policy() -> Arc<PeerPolicy> {
        Arc::new(PeerPolicy {
            accept: Accept::Gateways([("gw1".to_string(), None)].into()),
            revoked: BTreeSet::new(),
        })
    }

    /// A gateway enrolled without a pin: accepts a manager's certificate.
    fn gateway_policy() -> Arc<PeerPolicy> {
        Arc::new(PeerPolicy {
            accept: Accept::Manager { pinned: None },
            revoked: BTreeSet::new(),
        })
    }

    fn name(s: &str) -> ServerName<'static> {
        ServerName::try_from(s.to_string()).unwrap()
    }

    fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
        e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
    }

    /// Runs both ends of a handshake over an in-memory pipe, then a one-line
    /// exchange (client to server) so a failure the client only learns after
    /// its side of the handshake (TLS 1.3 client auth) still shows. Returns
    /// (server result, client result): the peer's CN on success.
    async fn handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        sn: ServerName<'static>,
    ) -> (
        std::result::Result<Option<String>, std::io::Error>,
        std::result::Result<Option<String>, std::io::Error>,
    ) {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let srv = async move {
            let mut tls = TlsAcceptor::from(server).accept(s).await?;
            let cn = peer_common_name(tls.get_ref().1);
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"hello");
            tls.write_all(b"ok").await?;
            tls.shutdown().await?;
            Ok(cn)
        };
        let cli = async move {
            let mut tls = TlsConnector::from(client).connect(sn, c).await?;
            let cn = peer_common_name(tls.get_ref().1);
            tls.write_all(b"hello").await?;
            tls.flush().await?;
            let mut buf = Vec::new();
            tls.read_to_end(&mut buf).await?;
            if buf != b"ok" {
                return Err(std::io::Error::other(format!("server said {buf:?}")));
            }
            Ok(cn)
        };
        tokio::join!(srv, cli)
    }

    #[tokio::test]
    async fn mutual_tls_both_directions_by_ip_and_name() {
        let d = deployment();
        let manager_srv = server_config(&d.manager, manager_policy()).unwrap();
        let gw_cli = client_config(&d.gw, gateway_policy()).unwrap();
        for sn in ["127.0.0.2", "manager.cpq"] {
            let (s, c) = handshake(manager_srv.clone(), gw_cli.clone(), name(sn)).await;
            assert_eq!(s.unwrap().as_deref(), Some("gw1"), "server side via {sn}");
            assert_eq!(
                c.unwrap().as_deref(),
                Some("manager"),
                "client side via {sn}"
            );
        }
        // The other direction: the manager releasing to the gateway.
        let gw_srv = server_config(&d.gw, gateway_policy()).unwrap();
        let manager_cli = client_config(&d.manager, manager_policy()).unwrap();
        for sn in ["127.0.0.1", "gw1"] {
            let (s, c) = handshake(gw_srv.clone(), manager_cli.clone(), name(sn)).await;
            assert_eq!(
                s.unwrap().as_deref(),
                Some("manager"),
                "server side via {sn}"
            );
            assert_eq!(c.unwrap().as_deref(), Some("gw1"), "client side via {sn}");
        }
        // Name verification is on: a name not in the certificate fails.
        let (_, c) = handshake(manager_srv, gw_cli, name("127.0.0.1")).await;
        let e = c.unwrap_err();
        assert!(
            matches!(
                rustls_error(&e),
                Some(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. }
                ))
            ),
            "{e:?}"
        );
    }

    /// The DER of the first certificate in a PEM file.
    fn der_of(path: &Path) -> Vec<u8> {
        identify_file(path).unwrap().1
    }

    fn refusal_reason(e: &std::io::Error) -> Option<&'static str> {
        refusal_of(e).map(|r| r.reason)
    }

    #[tokio::test]
    async fn a_gateway_accepts_only_its_pinned_manager() {
        use crate::core::cpq::refusal as r;
        let d = deployment();
        // gw2 of the same deployment, at the manager's address: a valid chain.
        let gw2 = d._tmp.path().join("gw2");
        issue(
            &d.ca,
            "gw2",
            CertRole::Gateway,
            &["gw2".into(), "127.0.0.2".into()],
            &gw2,
        )
        .unwrap();
        let pinned = Arc::new(PeerPolicy {
            accept: Accept::Manager {
                pinned: Some(vec![der_of(&d.manager.join(NODE_CERT))]),
            },
            revoked: BTreeSet::new(),
        });
        let gw_srv = server_config(&d.gw, pinned.clone()).unwrap();
        let (s, c) = handshake(
            gw_srv.clone(),
            client_config(&gw2, manager_policy()).unwrap(),
            name("127.0.0.1"),
        )
        .await;
        let e = s.unwrap_err();
        assert_eq!(refusal_reason(&e), Some(r::NOT_MANAGER), "{e:?}");
        let text = server_error_text(&e);
        assert!(text.contains("certificate not accepted"), "{text}");
        assert!(text.contains("gw2"), "{text}");
        assert!(c.is_err());
        // Without a pin (an older enrollment) the role decides: still refused.
        let (s, _) = handshake(
            server_config(&d.gw, gateway_policy()).unwrap(),
            client_config(&gw2, manager_policy()).unwrap(),
            name("127.0.0.1"),
        )
        .await;
        assert_eq!(refusal_reason(&s.unwrap_err()), Some(r::NOT_MANAGER));
        // Another manager certificate of the same CA is not the pinned one.
        let other = d._tmp.path().join("other-manager");
        issue(
            &d.ca,
            "manager",
            CertRole::Manager,
            &["127.0.0.2".into()],
            &other,
        )
        .unwrap();
        let (s, _) = handshake(
            gw_srv.clone(),
            client_config(&other, manager_policy()).unwrap(),
            name("127.0.0.1"),
        )
        .await;
        assert_eq!(refusal_reason(&s.unwrap_err()), Some(r::NOT_MANAGER));
        // The real manager is accepted.
        let (s, c) = handshake(
            gw_srv,
            client_config(&d.manager, manager_policy()).unwrap(),
            name("127.0.0.1"),
        )
        .await;
        assert_eq!(s.unwrap().as_deref(), Some("manager"));
        assert_eq!(c.unwrap().as_deref(), Some("gw1"));
        // As a client the gateway refuses a server that is not its manager, even one
        // with the right name and chain.
        let (_, c) = handshake(
            server_config(&gw2, manager_policy()).unwrap(),
            client_config(&d.gw, pinned).unwrap(),
            name("127.0.0.2"),
        )
        .await;
        assert_eq!(refusal_reason(&c.unwrap_err()), Some(r::NOT_MANAGER));
    }

    #[tokio::test]
    async fn a_manager_accepts_only_enrolled_serials_of_gateways() {
        use crate::core::cpq::refusal as r;
        let d = deployment();
        let serial = identify_file(&d.gw.join(NODE_CERT)).unwrap().0.serial;
        let policy = |serial: Option<String>, revoked: &[&str]| {
            Arc::new(PeerPolicy {
                accept: Accept::Gateways([("gw1".to_string(), serial)].into()),
                revoked: revoked.iter().map(|s| s.to_string()).collect(),
            })
        };
        let gw_cli = client_config(&d.gw, gateway_policy()).unwrap();
        let try_with = |p: Arc<PeerPolicy>, cli: Arc<ClientConfig>| {
            let srv = server_config(&d.manager, p).unwrap();
            async move { handshake(srv, cli, name("127.0.0.2")).await.0 }
        };
        // The enrolled serial, and an older enrollment without one.
        assert_eq!(
            try_with(policy(Some(serial.clone()), &[]), gw_cli.clone())
                .await
                .unwrap()
                .as_deref(),
            Some("gw1")
        );
        assert!(try_with(policy(None, &[]), gw_cli.clone()).await.is_ok());
        // Another certificate of gw1 (a cleared or replaced enrollment).
        let e = try_with(policy(Some("40".repeat(16)), &[]), gw_cli.clone())
            .await
            .unwrap_err();
        assert_eq!(refusal_reason(&e), Some(r::SERIAL));
        // Revoked.
        let e = try_with(policy(Some(serial.clone()), &[&serial]), gw_cli.clone())
            .await
            .unwrap_err();
        assert_eq!(refusal_reason(&e), Some(r::REVOKED));
        assert!(server_error_text(&e).contains("revoked"));
        // Not added.
        let srv = Arc::new(PeerPolicy {
            accept: Accept::Gateways(BTreeMap::new()),
            revoked: BTreeSet::new(),
        });
        let e = try_with(srv, gw_cli).await.unwrap_err();
        assert_eq!(refusal_reason(&e), Some(r::NOT_ENROLLED));
        // A manager's certificate never acts as a gateway, whatever its name.
        let m2 = d._tmp.path().join("m2");
        issue(&d.ca, "gw1", CertRole::Manager, &["gw1".into()], &m2).unwrap();
        let e = try_with(
            policy(None, &[]),
            client_config(&m2, gateway_policy()).unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(refusal_reason(&e), Some(r::ROLE));
    }

    #[test]
    fn identities_and_the_revocation_list() {
        let d = deployment();
        let (gw, _) = identify_file(&d.gw.join(NODE_CERT)).unwrap();
        assert_eq!(gw.cn, "gw1");
        assert_eq!(gw.role, Some(CertRole::Gateway));
        assert!(is_serial(&gw.serial) && gw.serial.len() == 32, "{gw:?}");
        let (m, _) = identify_file(&d.manager.join(NODE_CERT)).unwrap();
        assert_eq!(m.role, Some(CertRole::Manager));
        assert_ne!(m.serial, gw.serial);
        // issue returns the serial it wrote.
        let again = d._tmp.path().join("again");
        let serial = issue(&d.ca, "gw1", CertRole::Gateway, &["gw1".into()], &again).unwrap();
        assert_eq!(
            identify_file(&again.join(NODE_CERT)).unwrap().0.serial,
            serial
        );

        assert!(load_revoked(&d.gw).unwrap().is_empty());
        assert!(revoke(&d.gw, &serial.to_ascii_uppercase(), "gw1").unwrap());
        assert!(!revoke(&d.gw, &serial, "gw1").unwrap());
        let list = load_revoked(&d.gw).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].serial.as_str(), list[0].subject.as_str()),
            (serial.as_str(), "gw1")
        );
        let e = revoke(&d.gw, "not hex", "").unwrap_err();
        assert!(format!("{e:#}").contains("serial"), "{e:#}");
        std::fs::write(d.gw.join(REVOKED), "{").unwrap();
        let e = load_revoked(&d.gw).unwrap_err();
        assert!(format!("{e:#}").contains("revoked.json"), "{e:#}");
        for bad in ["", "0", "xyz1", &"00".repeat(41)] {
            assert!(!is_serial(bad), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn negotiates_tls13_by_default_and_tls12_when_asked() {
        let d = deployment();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let acceptor = TlsAcceptor::from(server_config(&d.manager, manager_policy()).unwrap());
        let connector = TlsConnector::from(client_config(&d.gw, gateway_policy()).unwrap());
        let (s, c) = tokio::join!(
            acceptor.accept(s),
            connector.connect(name("manager.cpq"), c)
        );
        let (s, _c) = (s.unwrap(), c.unwrap());
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );

        // A TLS 1.2-only client with the same credentials is accepted too.
        let (certs, key) = load_node(&d.gw).unwrap();
        let cc = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(load_ca(&d.gw).unwrap())
            .with_client_auth_cert(certs, key)
            .unwrap();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let connector = TlsConnector::from(Arc::new(cc));
        let (s, c) = tokio::join!(
            acceptor.accept(s),
            connector.connect(name("manager.cpq"), c)
        );
        let (s, _c) = (s.unwrap(), c.unwrap());
        assert_eq!(
            s.get_ref().1.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_2)
        );
        assert_eq!(peer_common_name(s.get_ref().1).as_deref(), Some("gw1"));
    }

    #[tokio::test]
    async fn client_certificate_from_another_ca_is_refused() {
        let d = deployment();
        let tmp = tempfile::tempdir().unwrap();
        let other_ca = tmp.path().join("ca");
        let intruder = tmp.path().join("intruder");
        ensure_ca(&other_ca, "other").unwrap();
        issue(
            &other_ca,
            "gw1",
            CertRole::Gateway,
            &["gw1".into()],
            &intruder,
        )
        .unwrap();
        // The intruder trusts the real CA (so it accepts the manager), but
        // its own certificate comes from elsewhere.
        std::fs::copy(d.ca.join(CA_CERT), intruder.join(CA_CERT)).unwrap();

        let (s, c) = handshake(
            server_config(&d.manager, manager_policy()).unwrap(),
            client_config(&intruder, gateway_policy()).unwrap(),
            name("manager.cpq"),
        )
        .await;
        let e = s.unwrap_err();
        assert_eq!(
            rustls_error(&e),
            Some(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
        let text = server_error_text(&e);
        assert!(text.contains("unknown CA"), "{text}");
        assert!(
            text.contains("verify error: unable to get local issuer certificate"),
            "{text}"
        );
        let e = c.unwrap_err();
        assert!(
            matches!(rustls_error(&e), Some(rustls::Error::AlertReceived(_))),
            "client error {e:?}"
        );
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let d = deployment();
        let cc = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(load_ca(&d.gw).unwrap())
            .with_no_client_auth();
        let (s, c) = handshake(
            server_config(&d.manager, manager_policy()).unwrap(),
            Arc::new(cc),
            name("manager.cpq"),
        )
        .await;
        let e = s.unwrap_err();
        assert_eq!(
            rustls_error(&e),
            Some(&rustls::Error::NoCertificatesPresented)
        );
        let text = server_error_text(&e);
        assert!(text.contains("no certificate from client"), "{text}");
        assert!(c.is_err());
    }

    #[tokio::test]
    async fn server_certificate_from_another_ca_is_refused() {
        let d = deployment();
        let tmp = tempfile::tempdir().unwrap();
        let other_ca = tmp.path().join("ca");
        let impostor = tmp.path().join("impostor");
        ensure_ca(&other_ca, "other").unwrap();
        issue(
            &other_ca,
            "manager",
            CertRole::Manager,
            &["manager.cpq".into(), "127.0.0.2".into()],
            &impostor,
        )
        .unwrap();
        // The impostor would even accept the gateway's certificate.
        std::fs::copy(d.ca.join(CA_CERT), impostor.join(CA_CERT)).unwrap();

        let (s, c) = handshake(
            server_config(&impostor, manager_policy()).unwrap(),
            client_config(&d.gw, gateway_policy()).unwrap(),
            name("manager.cpq"),
        )
        .await;
        let e = c.unwrap_err();
        assert_eq!(
            rustls_error(&e),
            Some(&rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))
        );
        let e = s.unwrap_err();
        let text = server_error_text(&e);
        assert!(text.contains("aborted the handshake"), "{text}");
    }

    #[test]
    fn ensure_ca_is_idempotent_and_keys_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("cpq");
        assert!(ensure_ca(&ca, "one").unwrap());
        let crt = std::fs::read(ca.join(CA_CERT)).unwrap();
        let key = std::fs::read(ca.join(CA_KEY)).unwrap();
        assert!(!ensure_ca(&ca, "two").unwrap());
        assert_eq!(std::fs::read(ca.join(CA_CERT)).unwrap(), crt);
        assert_eq!(std::fs::read(ca.join(CA_KEY)).unwrap(), key);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.join(CA_KEY)), 0o600);

        // An existing, too widely readable node.key is replaced by a 0600 one.
        let node = tmp.path().join("node");
        std::fs::create_dir_all(&node).unwrap();
        std::fs::write(node.join(NODE_KEY), "old").unwrap();
        std::fs::set_permissions(node.join(NODE_KEY), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        issue(&ca, "gw1", CertRole::Gateway, &["gw1".into()], &node).unwrap();
        assert_eq!(mode(&node.join(NODE_KEY)), 0o600);
        assert_ne!(std::fs::read(node.join(NODE_KEY)).unwrap(), b"old");
        assert_eq!(std::fs::read(node.join(CA_CERT)).unwrap(), crt);
        // Issuing into the CA's own directory (the manager's node cert).
        issue(
            &ca,
            "manager",
            CertRole::Manager,
            &["manager.cpq".into()],
            &ca,
        )
        .unwrap();
        assert_eq!(std::fs::read(ca.join(CA_CERT)).unwrap(), crt);
        assert_eq!(mode(&ca.join(NODE_KEY)), 0o600);
        assert!(std::fs::read_dir(&ca).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")));
    }

    #[test]
    fn issue_refuses_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = tmp.path().join("ca");
        let out = tmp.path().join("out");
        // No CA yet: the error names the file.
        let e = issue(&ca, "gw1", CertRole::Gateway, &["gw1".into()], &out).unwrap_err();
        assert!(format!("{e:#}").contains("ca.crt"), "{e:#}");
        ensure_ca(&ca, "t").unwrap();
        assert!(issue(&ca, "gw1", CertRole::Gateway, &[], &out).is_err());
        assert!(issue(&ca, "", CertRole::Gateway, &["gw1".into()], &out).is_err());
        // A key that does not belong to the certificate.
        let other = tmp.path().join("other");
        ensure_ca(&other, "t").unwrap();
        std::fs::copy(other.join(CA_KEY), ca.join(CA_KEY)).unwrap();
        let e = issue(&ca, "gw1", CertRole::Gateway, &["gw1".into()], &out).unwrap_err();
        assert!(format!("{e:#}").contains("does not belong"), "{e:#}");
        assert!(!out.join(NODE_CERT).exists());
    }

    #[tokio::test]
    async fn names_peers_cannot_use_do_not_block_enrollment() {
        let tmp = tempfile::tempdir().unwrap();
        let (ca, node) = (tmp.path().join("ca"), tmp.path().join("node"));
        ensure_ca(&ca, "t").unwrap();
        // Only names that are not host names at all: refused.
        let e = issue(&ca, "m", CertRole::Manager, &["Manager One".into()], &node).unwrap_err();
        assert!(format!("{e:#}").contains("Manager One"), "{e:#}");
        // Mixed with a usable one: issued, and the usable one works.
        issue(
            &ca,
            "Manager One",
            CertRole::Manager,
            &["Manager One".into(), "10.0.0.9".into()],
            &node,
        )
        .unwrap();
        let (s, c) = handshake(
            server_config(&node, gateway_policy()).unwrap(),
            client_config(&node, gateway_policy()).unwrap(),
            name("10.0.0.9"),
        )
        .await;
        assert_eq!(s.unwrap().as_deref(), Some("Manager One"));
        assert_eq!(c.unwrap().as_deref(), Some("Manager One"));
    }

    #[test]
    fn summarize_reads_names_and_expiry() {
        let d = deployment();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let day = 86_400;
        let s = summarize(&d.gw.join(NODE_CERT)).unwrap();
        assert_eq!(s.subject_cn, "gw1");
        assert!(
            s.issuer_cn.starts_with("PVO deployment CA test "),
            "{}",
            s.issuer_cn
        );
        let ten_years = 3652 * day;
        assert!(s.not_after.abs_diff(now + ten_years) < 2 * day, "{s:?}");
        let s = summarize(&d.ca.join(CA_CERT)).unwrap();
        assert!(s.subject_cn.starts_with("PVO deployment CA test "), "{s:?}");
        assert_eq!(s.issuer_cn, s.subject_cn);
        assert!(s.not_after.abs_diff(now + 2 * ten_years) < 4 * day, "{s:?}");
        let e = summarize(&d.ca.join("missing.crt")).unwrap_err();
        assert!(format!("{e:#}").contains("missing.crt"), "{e:#}");
        std::fs::write(d.ca.join("junk.crt"), "not a certificate").unwrap();
        let e = summarize(&d.ca.join("junk.crt")).unwrap_err();
        assert!(format!("{e:#}").contains("junk.crt"), "{e:#}");
    }

    #[test]
    fn certificates_of_a_deployment_read_back() {
        let d = deployment();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let read = |p: &Path| crate::core::certificate::read_pem_file(p).unwrap();
        let s = read(&d.gw.join(NODE_CERT));
        assert_eq!(s.subject_cn.as_deref(), Some("gw1"));
        assert_eq!(s.subject_ou.as_deref(), Some("PVO gateway"));
        let issuer = s.issuer_cn.clone().unwrap();
        assert!(issuer.starts_with("PVO deployment CA test "), "{issuer}");
        let ten_years = time::Duration::days(NODE_VALID_DAYS);
        assert!(
            (s.not_after - (now + ten_years)).abs() < day * 2_i32,
            "{s:?}"
        );
        assert!((s.not_before - (now - BACKDATE)).abs() < day, "{s:?}");
        let names: Vec<String> = s.names.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["gw1", "IP 127.0.0.1"]);
        assert!(is_serial(&s.serial) && s.serial.len() == 32, "{}", s.serial);
        assert_eq!(
            identify_file(&d.gw.join(NODE_CERT)).unwrap().0.serial,
            s.serial
        );
        let s = read(&d.ca.join(CA_CERT));
        let subject = s.subject_cn.as_deref().unwrap_or_default();
        assert!(subject.starts_with("PVO deployment CA test "), "{s:?}");
        assert_eq!(s.issuer_cn, s.subject_cn);
        assert_eq!(s.issuer_der, s.subject_der);
        assert!(
            (s.not_after - (now + time::Duration::days(CA_VALID_DAYS))).abs() < day * 4_i32,
            "{s:?}"
        );
    }

    #[test]
    fn error_texts() {
        let io = |e: rustls::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
        assert_eq!(
            server_error_text(&io(rustls::Error::NoCertificatesPresented)),
            "verify error: no certificate from client"
        );
        assert_eq!(
            server_error_text(&io(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer
            ))),
            "verify error: unable to get local issuer certificate (certificate issued by an unknown CA)"
        );
        assert_eq!(
            server_error_text(&io(rustls::Error::InvalidCertificate(
                CertificateError::Expired
            ))),
            "verify error: certificate has expired"
        );
        let t = server_error_text(&io(rustls::Error::AlertReceived(
            rustls::AlertDescription::UnknownCA,
        )));
        assert!(t.contains("does not trust this node's certificate"), "{t}");
        let t = server_error_text(&std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(t.contains("closed the connection"), "{t}");
    }
}
