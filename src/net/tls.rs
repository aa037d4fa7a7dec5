//! TLS for SMTP in both directions, with rustls and the `ring` provider.
//!
//! Only TLS 1.2 and 1.3 exist here: rustls cannot negotiate SSL, export,
//! RC4 or anonymous suites, so "no certificate from the server" can only
//! happen when the peer offers something we refuse, and it then fails the
//! handshake instead of silently going unauthenticated.
//!
//! Inbound: the listener's certificate comes from the configured PEM files,
//! or a self-signed one generated for the node's host name (CN and SAN, valid
//! from a day ago for [`SELF_SIGNED_DAYS`]) and kept under `data_dir/tls/`. The
//! generated one is made again at start, at a commit and by an hourly check
//! ([`renew_self_signed`]) when it is within [`RENEW_BEFORE_DAYS`] of its end,
//! names another host, or was made by an older PVO (CN "rcgen self signed
//! cert", valid until 4096). [`self_signed`] tells `status` and `diagnose`
//! that the listeners serve a self-signed certificate. Outbound: `*-verify` modes check the chain
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
    SupportedProtocolVersion,
};

use crate::core::config::{Config, TlsVersion};

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

// The catalogue the configuration checks cipher lists against is the configuration's.
pub use crate::core::config::{cipher_suite_names, suite_name, why_unavailable};

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
            let (c, k) = generated_paths(cfg);
            if let Some(why) = ensure_self_signed(cfg, crate::core::clock::unix_now())? {
                tracing::warn!("made a new self-signed certificate {}: {why}", c.display());
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

/// How long a generated certificate is valid: the longest a public CA may issue for
/// (CA/Browser Forum), so no client has a reason to refuse it for its lifetime.
pub const SELF_SIGNED_DAYS: i64 = 825;
/// A generated certificate is made again this many days before its end.
pub const RENEW_BEFORE_DAYS: u64 = 30;
/// The subject older PVO versions wrote (rcgen's default), valid 1975-4096.
const OLD_GENERATED_CN: &str = "rcgen self signed cert";

/// The generated certificate and key: `DATA_DIR/tls/cert.pem`, `key.pem`.
fn generated_paths(cfg: &Config) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = cfg.data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Why the generated certificate at `cert` must be made again at `now` (Unix
/// seconds), or `None` while it is good.
fn renewal_reason(cert: &Path, hostname: &str, now: u64) -> Option<String> {
    let s = match crate::core::certificate::read_pem_file(cert) {
        Ok(s) => s,
        Err(e) => return Some(format!("the old one is unusable ({e})")),
    };
    let not_after = s.not_after_unix();
    let cn = s.subject_cn.unwrap_or_default();
    let longest = now + (SELF_SIGNED_DAYS as u64 + 1) * 86_400;
    if cn == OLD_GENERATED_CN || not_after > longest {
        Some(format!(
            "the old one was made by an older PVO (CN {cn:?}, valid until {})",
            crate::core::clock::gmt(not_after)
        ))
    } else if !cn.eq_ignore_ascii_case(hostname) {
        Some(format!(
            "the old one names {cn:?}, the node is {hostname:?}"
        ))
    } else if not_after <= now + RENEW_BEFORE_DAYS * 86_400 {
        Some(format!(
            "the old one expires on {}",
            crate::core::clock::gmt(not_after)
        ))
    } else {
        None
    }
}

/// Makes the generated certificate when it is missing or due ([`renewal_reason`]);
/// why it was made, or `None` when the one on disk stays. Nothing to do when the
/// configuration names a certificate.
pub fn ensure_self_signed(cfg: &Config, now: u64) -> Result<Option<String>> {
    if cfg.tls_inbound.cert.is_some() && cfg.tls_inbound.key.is_some() {
        return Ok(None);
    }
    let (c, k) = generated_paths(cfg);
    let why = if !c.exists() || !k.exists() {
        Some("there was none".to_string())
    } else {
        renewal_reason(&c, &cfg.hostname, now)
    };
    if why.is_some() {
        generate_self_signed(&cfg.hostname, &c, &k)?;
    }
    Ok(why)
}

/// The hourly check of a running node: a generated certificate that is due is made
/// again and put in force for the next handshakes (SMTP STARTTLS and HTTPS), with a
/// line in mail_logs.
pub async fn renew_self_signed(
    config: Arc<crate::core::state::ConfigHandle>,
    mail: Arc<crate::core::state::MailHandle>,
    tls: Arc<crate::core::state::TlsHandle>,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let cfg = config.current();
        let c = cfg.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<_> {
            match ensure_self_signed(&c, crate::core::clock::unix_now())? {
                Some(why) => Ok(Some((why, server_config(&c)?))),
                None => Ok(None),
            }
        })
        .await;
        match made {
            Ok(Ok(Some((why, sc)))) => {
                tls.set_server(sc);
                mail.log
                    .emit(crate::core::events::Event::SelfSignedRenewed {
                        hostname: &cfg.hostname,
                        why: &why,
                    });
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => mail
                .log
                .emit(crate::core::events::Event::SelfSignedNotRenewed { error: &e }),
            Err(e) => mail
                .log
                .emit(crate::core::events::Event::SelfSignedNotRenewed { error: &e }),
        }
    }
}

/// What `status` and `diagnose` say when the inbound certificate (SMTP STARTTLS and
/// HTTPS) is self-signed: "self-signed certificate for NAME, valid until DATE
/// (generated by PVO|FILE)"; `None` when a CA issued it.
pub fn self_signed(cfg: &Config) -> Option<String> {
    let (path, whose) = match &cfg.tls_inbound.cert {
        Some(c) => (c.clone(), c.display().to_string()),
        None => (generated_paths(cfg).0, "generated by PVO".to_string()),
    };
    let s = crate::core::certificate::read_pem_file(&path).ok()?;
    (s.issuer_cn == s.subject_cn).then(|| {
        format!(
            "self-signed certificate for {}, valid until {} ({whose})",
            s.subject_cn.as_deref().unwrap_or_default(),
            crate::core::clock::gmt(s.not_after_unix())
        )
    })
}

/// Client configs for outbound delivery: (verifying, opportunistic).
pub use crate::core::state::ClientConfigs;

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

/// Writes a self-signed certificate for `hostname` (key readable by the owner only):
/// CN and subject alternative name `hostname`, valid from a day ago (clocks differ) for
/// [`SELF_SIGNED_DAYS`], a random serial.
pub fn generate_self_signed(hostname: &str, cert_path: &Path, key_path: &Path) -> Result<()> {
    let mut p = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .with_context(|| format!("the host name {hostname:?} cannot name a certificate"))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, hostname);
    p.distinguished_name = dn;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(SELF_SIGNED_DAYS);
    let mut serial = [0u8; 16];
    provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| anyhow::anyhow!("no random bytes for a certificate serial number"))?;
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive, full length
    p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
    let key = rcgen::KeyPair::generate().context("generating a key for the certificate")?;
    let cert = p
        .self_signed(&key)
        .context("generating a self-signed certificate")?;
    if let Some(dir) = cert_path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::core::atomic_file::write_private(key_path, key.serialize_pem().as_bytes())?;
    crate::core::atomic_file::write(cert_path, cert.pem().as_bytes())?;
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

/// The commands' [`crate::core::state::InboundCertificate`]: [`self_signed`] on the files this
/// module generates or the configuration names.
pub struct Inbound;

impl crate::core::state::InboundCertificate for Inbound {
    fn self_signed(&self, cfg: &Config) -> Option<String> {
        self_signed(cfg)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suites_the_commands_list_are_the_ones_rustls_is_given() {
        let names: Vec<String> = cipher_suite_names()
            .into_iter()
            .rev()
            .take(3)
            .map(String::from)
            .collect();
        for ciphers in [None, Some(&names[..]), Some(&[][..])] {
            for versions in [
                &[TlsVersion::V1_2, TlsVersion::V1_3][..],
                &[TlsVersion::V1_2][..],
                &[TlsVersion::V1_3][..],
            ] {
                let given: Vec<(String, TlsVersion)> = provider_with(ciphers)
                    .cipher_suites
                    .iter()
                    .filter(|s| versions.contains(&crate::core::config::suite_version(s)))
                    .map(|s| (suite_name(s), crate::core::config::suite_version(s)))
                    .collect();
                assert_eq!(
                    crate::core::config::effective_suites(versions, ciphers),
                    given
                );
            }
        }
    }

    #[test]
    fn the_generated_certificate_names_the_host_and_is_renewed_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        generate_self_signed("gw1.example.com", &c, &k).unwrap();
        let s = crate::core::certificate::read_pem_file(&c).unwrap();
        assert_eq!(s.subject_cn.as_deref(), Some("gw1.example.com"));
        assert_eq!(s.issuer_cn.as_deref(), Some("gw1.example.com"));
        let now = crate::core::clock::unix_now();
        let not_after = s.not_after_unix();
        let days = (not_after - now) as i64 / 86_400;
        assert!(
            (SELF_SIGNED_DAYS - 1..=SELF_SIGNED_DAYS).contains(&days),
            "{days}"
        );
        assert_eq!(renewal_reason(&c, "gw1.example.com", now), None);
        assert_eq!(renewal_reason(&c, "GW1.example.com", now), None);
        // Within 30 days of the end: due.
        let late = not_after - RENEW_BEFORE_DAYS * 86_400 + 60;
        let why = renewal_reason(&c, "gw1.example.com", late).unwrap();
        assert!(why.starts_with("the old one expires on "), "{why}");
        let early = not_after - RENEW_BEFORE_DAYS * 86_400 - 60;
        assert_eq!(renewal_reason(&c, "gw1.example.com", early), None);
        // Another host name: due.
        let why = renewal_reason(&c, "gw2.example.com", now).unwrap();
        assert!(why.contains("names \"gw1.example.com\""), "{why}");
        // What older versions made: rcgen's name, valid until 4096.
        let old = rcgen::generate_simple_self_signed(vec!["gw1.example.com".to_string()]).unwrap();
        std::fs::write(&c, old.cert.pem()).unwrap();
        let why = renewal_reason(&c, "gw1.example.com", now).unwrap();
        assert!(
            why.contains("rcgen self signed cert") && why.contains("4096"),
            "{why}"
        );
        // Garbage: due too.
        std::fs::write(&c, "not a certificate").unwrap();
        assert!(renewal_reason(&c, "gw1.example.com", now).is_some());
    }
}
