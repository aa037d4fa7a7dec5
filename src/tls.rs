//! TLS for SMTP in both directions, with rustls and the `ring` provider.
//!
//! Only TLS 1.2 and 1.3 exist here: rustls cannot negotiate SSL, export,
//! RC4 or anonymous suites, so "no certificate from the server" can only
//! happen when the peer offers something we refuse, and it then fails the
//! handshake instead of silently going unauthenticated.
//!
//! Inbound: the listener's certificate comes from the configured PEM files,
//! or a self-signed one generated for the node's host name at first start and
//! kept under `data_dir/tls/`. Outbound: `*-verify` modes check the chain
//! against the web PKI roots plus an optional CA file; the other modes encrypt
//! without authenticating (opportunistic TLS, RFC 7435), like every MTA.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme,
    SupportedCipherSuite, SupportedProtocolVersion,
};

use crate::config::{Config, TlsVersion};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ring provider limited to `ciphers` (rustls names, in that order of
/// preference); every suite when `None`.
pub fn provider_with(ciphers: Option<&[String]>) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(names) = ciphers {
        p.cipher_suites = names
            .iter()
            .filter_map(|n| {
                rustls::crypto::ring::ALL_CIPHER_SUITES
                    .iter()
                    .find(|s| suite_name(s) == *n)
                    .copied()
            })
            .collect();
    }
    Arc::new(p)
}

/// "TLS13_AES_256_GCM_SHA384".
pub fn suite_name(s: &SupportedCipherSuite) -> String {
    let suite = s.suite();
    suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_string)
}

fn suite_version(s: &SupportedCipherSuite) -> TlsVersion {
    match s {
        SupportedCipherSuite::Tls12(_) => TlsVersion::V1_2,
        SupportedCipherSuite::Tls13(_) => TlsVersion::V1_3,
    }
}

/// The names of every cipher suite rustls (ring provider) offers, in its
/// order of preference: the values `ciphers` may list.
pub fn cipher_suite_names() -> Vec<&'static str> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .filter_map(|s| s.suite().as_str())
        .collect()
}

/// The TLS version a suite of [`cipher_suite_names`] belongs to.
pub fn cipher_suite_version(name: &str) -> Option<TlsVersion> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .find(|s| suite_name(s) == name)
        .map(suite_version)
}

/// The suites a direction offers: those of `ciphers` (all when `None`)
/// whose TLS version is enabled, in order of preference, with their version.
pub fn effective_suites(
    versions: &[TlsVersion],
    ciphers: Option<&[String]>,
) -> Vec<(String, TlsVersion)> {
    provider_with(ciphers)
        .cipher_suites
        .iter()
        .filter(|s| versions.contains(&suite_version(s)))
        .map(|s| (suite_name(s), suite_version(s)))
        .collect()
}

/// Why a cipher (or protocol) an administrator asks for cannot be chosen,
/// when it is one of the families rustls deliberately leaves out; `None` for
/// a name that is simply unknown.
pub fn why_unavailable(name: &str) -> Option<&'static str> {
    let n = name.trim().to_ascii_uppercase();
    let any = |words: &[&str]| words.iter().any(|w| n.contains(w));
    if any(&["SSL", "TLSV1.0", "TLSV1.1", "TLSV1_0", "TLSV1_1"])
        || matches!(n.as_str(), "TLSV1" | "1.0" | "1.1")
    {
        Some("SSL, TLS 1.0 and TLS 1.1 do not exist in rustls (TLS 1.2 and 1.3 only)")
    } else if any(&["RC4"]) {
        Some("RC4 suites do not exist in rustls")
    } else if any(&["EXP"]) {
        Some("export suites do not exist in rustls")
    } else if any(&["ANON", "ANULL", "ADH", "AECDH"]) {
        Some("anonymous suites (no certificate) do not exist in rustls")
    } else if any(&["NULL"]) {
        Some("suites without encryption do not exist in rustls")
    } else if any(&[
        "DES", "CBC", "MD5", "CAMELLIA", "IDEA", "SEED", "ARIA", "CCM",
    ]) {
        Some("rustls offers only AEAD suites (AES-GCM and ChaCha20-Poly1305)")
    } else if n.starts_with("TLS_RSA_")
        || n.starts_with("TLS_DHE_")
        || n.starts_with("TLS_DH_")
        || n.contains("PSK")
    {
        Some("rustls offers only ECDHE key exchange (forward secrecy)")
    } else {
        None
    }
}

fn protocol_versions(v: &[TlsVersion]) -> Vec<&'static SupportedProtocolVersion> {
    v.iter()
        .map(|v| match v {
            TlsVersion::V1_2 => &rustls::version::TLS12,
            TlsVersion::V1_3 => &rustls::version::TLS13,
        })
        .collect()
}

/// Loads or generates the inbound certificate and builds the server config.
pub fn server_config(cfg: &Config) -> Result<Arc<ServerConfig>> {
    let (certs, key) = match (&cfg.tls_inbound.cert, &cfg.tls_inbound.key) {
        (Some(c), Some(k)) => load_pem(c, k)?,
        _ => {
            let dir = cfg.data_dir.join("tls");
            let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !c.exists() || !k.exists() {
                generate_self_signed(&cfg.hostname, &c, &k)?;
            }
            load_pem(&c, &k)?
        }
    };
    let sc = ServerConfig::builder_with_provider(provider_with(cfg.tls_inbound.ciphers.as_deref()))
        .with_protocol_versions(&protocol_versions(&cfg.tls_inbound.versions))
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("inbound TLS certificate and key do not match")?;
    Ok(Arc::new(sc))
}

/// Client configs for outbound delivery: (verifying, opportunistic).
pub struct ClientConfigs {
    pub verify: Arc<ClientConfig>,
    pub opportunistic: Arc<ClientConfig>,
}

pub fn client_configs(cfg: &Config) -> Result<ClientConfigs> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(ca) = &cfg.tls_outbound.ca_file {
        let pem = std::fs::read(ca)
            .with_context(|| format!("reading tls.outbound.ca_file {}", ca.display()))?;
        for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
            let cert: CertificateDer<'static> =
                cert.with_context(|| format!("parsing {}", ca.display()))?;
            roots
                .add(cert)
                .with_context(|| format!("adding a CA from {}", ca.display()))?;
        }
    }
    let versions = protocol_versions(&cfg.tls_outbound.versions);
    let suites = provider_with(cfg.tls_outbound.ciphers.as_deref());
    let verify = ClientConfig::builder_with_provider(suites.clone())
        .with_protocol_versions(&versions)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let opportunistic = ClientConfig::builder_with_provider(suites)
        .with_protocol_versions(&versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
        .with_no_client_auth();
    Ok(ClientConfigs {
        verify: Arc::new(verify),
        opportunistic: Arc::new(opportunistic),
    })
}

fn load_pem(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    use rustls_pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    Ok((certs, key))
}

/// Writes a self-signed certificate for `hostname` (key readable by the owner only).
pub fn generate_self_signed(hostname: &str, cert_path: &Path, key_path: &Path) -> Result<()> {
    let ck = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
        .context("generating a self-signed certificate")?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::atomic_file::write_private(key_path, ck.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, ck.cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok(())
}

/// The verifier of opportunistic TLS: any certificate is accepted, but the
/// handshake signatures are still checked so the session keys are sound.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// "TLSv1.3" and "TLS13_AES_256_GCM_SHA384" for the log lines.
pub fn describe(conn: &rustls::CommonState) -> (String, String) {
    let proto = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "unknown".to_string(),
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_else(|| "unknown".to_string());
    (proto, cipher)
}
