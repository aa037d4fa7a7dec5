//! The deployment PKI of CPQ: the files of a node's cpq directory, the deployment CA,
//! the node certificates it issues, what a certificate says about its holder, and the
//! revocation list. This is the domain side of the CPQ trust (the commands that enroll,
//! install, list and revoke certificates use it); the TLS side — the rustls
//! configurations and the verifiers that apply a node's policy in the handshake — is
//! `trust` in the network layer, which builds on these files.
//!
//! - **One deployment CA, on the manager.** [`ensure_ca`] creates it once in the
//!   manager's cpq directory (`ca.crt`, `ca.key` readable by the owner only). It is not a
//!   web PKI CA and nothing else trusts it: it exists only to say "this node belongs to
//!   this deployment". It may sign end-entity certificates only (path length 0).
//! - **Enrollment issues node certificates.** [`issue`] signs a certificate for one node
//!   (the manager itself, or a gateway being enrolled) and writes `node.crt`, `node.key`
//!   and a copy of `ca.crt` into that node's cpq directory. The certificate names the
//!   node (CN = node id, OU = its role) and carries, as subject alternative names, every
//!   address and host name peers use to reach it, valid for TLS server and client use.
//! - **Revocation.** [`revoke`] adds a serial to `revoked.json`, which both verifiers
//!   read.
//!
//! Certificates are read by [`crate::core::certificate`] (x509-parser): the subject's CN and
//! OU, the serial, the issuer and the key.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;

/// File names inside a cpq directory.
pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NODE_CERT: &str = "node.crt";
pub const NODE_KEY: &str = "node.key";
/// Gateway: the manager's certificate, pinned when the gateway was added.
pub const MANAGER_CERT: &str = "manager.crt";
/// Both: the revoked certificate serials (`cpqcert revoke`).
pub const REVOKED: &str = "revoked.json";

/// The role a node certificate is issued for, in its subject's OU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertRole {
    Manager,
    Gateway,
}

impl CertRole {
    fn ou(self) -> &'static str {
        match self {
            CertRole::Manager => "PVO manager",
            CertRole::Gateway => "PVO gateway",
        }
    }

    fn from_ou(ou: &str) -> Option<CertRole> {
        [CertRole::Manager, CertRole::Gateway]
            .into_iter()
            .find(|r| r.ou() == ou)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CertRole::Manager => "manager",
            CertRole::Gateway => "gateway",
        }
    }
}

pub(crate) const CA_VALID_DAYS: i64 = 20 * 365 + 5;
pub(crate) const NODE_VALID_DAYS: i64 = 10 * 365 + 2;
/// Certificates start this long before they are made, so that a peer whose
/// clock is a little behind the manager's does not see "not yet valid".
pub(crate) const BACKDATE: time::Duration = time::Duration::hours(1);

/// Creates the deployment CA in `dir` (ca.crt, ca.key 0600) unless ca.crt
/// already exists; returns true when created.
pub fn ensure_ca(dir: &Path, common_name: &str) -> Result<bool> {
    let cert_path = dir.join(CA_CERT);
    if cert_path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate().context("generating the deployment CA key")?;
    // A per-deployment suffix: two deployments (two quickstarts) never have CAs
    // of the same name, so a foreign certificate reads "unknown CA", not "bad
    // signature".
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let suffix = format!(
        "{:08x}",
        (nanos as u64 ^ u64::from(std::process::id())) as u32
    );
    let params = ca_params(&format!("PVO deployment CA {common_name} {suffix}"), true)?;
    let cert = params
        .self_signed(&key)
        .with_context(|| format!("signing the deployment CA {}", cert_path.display()))?;
    // The key first: ca.crt existing means the CA is complete.
    crate::core::atomic_file::write_private(&dir.join(CA_KEY), key.serialize_pem().as_bytes())?;
    crate::core::atomic_file::write(&cert_path, cert.pem().as_bytes())?;
    Ok(true)
}

/// The CA's parameters. When `fresh`, with validity and serial for a new
/// certificate; otherwise only what signing with it needs (subject, key
/// usages, key identifier method).
fn ca_params(subject_cn: &str, fresh: bool) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject_cn);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    if fresh {
        set_validity(&mut p, CA_VALID_DAYS)?;
    }
    Ok(p)
}

fn set_validity(p: &mut CertificateParams, days: i64) -> Result<()> {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - BACKDATE;
    p.not_after = now + time::Duration::days(days);
    let mut serial = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut serial)
        .map_err(|_| anyhow::anyhow!("no random bytes for a certificate serial number"))?;
    serial[0] = (serial[0] & 0x7f) | 0x40; // positive, full length
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    Ok(())
}

/// Issues a node certificate signed by the CA in `ca_dir`, writing
/// out_dir/node.crt, out_dir/node.key (0600) and out_dir/ca.crt (a copy of
/// the CA certificate). `names` are the subject alternative names: each entry
/// that parses as an IpAddr becomes an IP SAN, anything else a DNS SAN;
/// CN = node_id, OU = the role. EKU serverAuth and clientAuth, digital
/// signature key usage, valid 10 years. Creates out_dir if missing. Overwrites
/// existing node files. Returns the new certificate's serial (hex), which the
/// manager records as the only one it accepts from that gateway.
pub fn issue(
    ca_dir: &Path,
    node_id: &str,
    role: CertRole,
    names: &[String],
    out_dir: &Path,
) -> Result<String> {
    if node_id.is_empty() {
        bail!("a node certificate needs a node id");
    }
    if names.is_empty() {
        bail!(
            "the node certificate for {node_id} needs at least one name or address peers \
             connect to (every CPQ node is also a TLS server)"
        );
    }
    let ca_cert_path = ca_dir.join(CA_CERT);
    let ca_key_path = ca_dir.join(CA_KEY);
    let ca_pem = std::fs::read(&ca_cert_path)
        .with_context(|| format!("reading the deployment CA {}", ca_cert_path.display()))?;
    let ca_der = CertificateDer::from_pem_slice(&ca_pem)
        .with_context(|| format!("parsing the deployment CA {}", ca_cert_path.display()))?;
    let ca = crate::core::certificate::read(&ca_der).with_context(|| {
        format!(
            "{} is not a certificate this reader understands",
            ca_cert_path.display()
        )
    })?;
    let ca_cn = ca
        .subject_cn
        .clone()
        .with_context(|| format!("{} has no subject common name", ca_cert_path.display()))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path)
        .with_context(|| format!("reading the deployment CA key {}", ca_key_path.display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("parsing the deployment CA key {}", ca_key_path.display()))?;
    if ca_key.subject_public_key_info() != ca.spki_der {
        bail!(
            "{} does not belong to {} (different key)",
            ca_key_path.display(),
            ca_cert_path.display()
        );
    }
    let issuer = Issuer::new(ca_params(&ca_cn, false)?, ca_key);

    let mut params = CertificateParams::new(names.to_vec()).with_context(|| {
        format!("the names {names:?} for {node_id} (DNS names must be ASCII, or IP addresses)")
    })?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationalUnitName, role.ou());
    dn.push(DnType::CommonName, node_id);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, NODE_VALID_DAYS)?;
    let key = KeyPair::generate().context("generating a node key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .with_context(|| format!("signing the node certificate for {node_id}"))?;

    // The issuer is rebuilt from the CA's common name; make sure it came out
    // byte for byte as the CA's subject, and that the result verifies the way
    // peers will verify it, before writing anything.
    let node =
        crate::core::certificate::read(cert.der()).context("reading back the node certificate")?;
    if node.issuer_der != ca.subject_der {
        bail!(
            "the subject of {} cannot be reproduced (not a PVO deployment CA?)",
            ca_cert_path.display()
        );
    }
    self_check(&ca_der, cert.der(), names).with_context(|| {
        format!(
            "the certificate issued for {node_id} does not verify against {}",
            ca_cert_path.display()
        )
    })?;

    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    crate::core::atomic_file::write_private(
        &out_dir.join(NODE_KEY),
        key.serialize_pem().as_bytes(),
    )?;
    crate::core::atomic_file::write(&out_dir.join(NODE_CERT), cert.pem().as_bytes())?;
    crate::core::atomic_file::write(&out_dir.join(CA_CERT), &ca_pem)?;
    Ok(node.serial)
}

/// Verifies a freshly issued certificate against the CA alone, as a client
/// and as a server for at least one of its names. (A name that is not a
/// valid host name, say a node id with a space, is harmless in the
/// certificate, peers just cannot connect by it; rejecting it would only
/// make enrollment fail.)
fn self_check(
    ca: &CertificateDer<'static>,
    cert: &CertificateDer<'_>,
    names: &[String],
) -> Result<()> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone())?;
    let roots = Arc::new(roots);
    let now = UnixTime::now();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()?
        .verify_client_cert(cert, &[], now)
        .context("as a client")?;
    let server = WebPkiServerVerifier::builder_with_provider(roots, provider).build()?;
    let mut last = None;
    for name in names {
        let verified = ServerName::try_from(name.as_str())
            .map_err(anyhow::Error::from)
            .and_then(|sn| Ok(server.verify_server_cert(cert, &[], &sn, &[], now)?));
        match verified {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e.context(format!("as the server {name:?}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no names")))
}

/// What a CPQ certificate says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The node id (empty without a CN).
    pub cn: String,
    /// `None`: issued by an older version (no role in the subject).
    pub role: Option<CertRole>,
    /// Lowercase hex of the serial number.
    pub serial: String,
}

/// Reads the identity of a DER certificate (`None`: not one this reader understands).
pub fn identify(der: &[u8]) -> Option<Identity> {
    let c = crate::core::certificate::read(der).ok()?;
    Some(Identity {
        cn: c.subject_cn.unwrap_or_default(),
        role: c.subject_ou.as_deref().and_then(CertRole::from_ou),
        serial: c.serial,
    })
}

/// The identity in the first certificate of a PEM file.
pub fn identify_file(path: &Path) -> Result<(Identity, Vec<u8>)> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let der = CertificateDer::from_pem_slice(&pem)
        .with_context(|| format!("parsing certificate {}", path.display()))?;
    let id = identify(&der).with_context(|| {
        format!(
            "{} is not a certificate this reader understands",
            path.display()
        )
    })?;
    Ok((id, der.to_vec()))
}

/// Every certificate of a PEM file (the pinned managers of a gateway: one per manager of
/// the deployment), each with what it says of its holder.
pub fn identify_all_file(path: &Path) -> Result<Vec<(Identity, Vec<u8>)>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    let mut out = Vec::new();
    for der in CertificateDer::pem_slice_iter(&pem) {
        let der = der.with_context(|| format!("parsing certificate {}", path.display()))?;
        let id = identify(&der).with_context(|| {
            format!(
                "{} holds a certificate this reader does not understand",
                path.display()
            )
        })?;
        out.push((id, der.to_vec()));
    }
    if out.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(out)
}

/// One entry of the revocation list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Revoked {
    /// Lowercase hex.
    pub serial: String,
    /// The certificate's CN when known ("" otherwise).
    pub subject: String,
    /// Unix seconds.
    pub at: u64,
}

/// The revocation list of the cpq directory `dir` (empty when there is none).
pub fn load_revoked(dir: &Path) -> Result<Vec<Revoked>> {
    let path = dir.join(REVOKED);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| {
            format!(
                "{} is not a revocation list (a JSON list of {{serial, subject, at}}); fix or remove it",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Adds `serial` to the revocation list of `dir` (durably); false when it was
/// already there.
pub fn revoke(dir: &Path, serial: &str, subject: &str) -> Result<bool> {
    let serial = serial.to_ascii_lowercase();
    if !is_serial(&serial) {
        bail!(
            "\"{serial}\" is not a certificate serial number (hex digits, as `cpqcert list` shows)"
        );
    }
    let mut list = load_revoked(dir)?;
    if list.iter().any(|r| r.serial == serial) {
        return Ok(false);
    }
    list.push(Revoked {
        serial,
        subject: subject.to_string(),
        at: crate::core::clock::unix_now(),
    });
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let bytes = serde_json::to_vec_pretty(&list).context("encoding the revocation list")?;
    crate::core::atomic_file::write(&dir.join(REVOKED), &bytes)?;
    Ok(true)
}

pub use crate::core::config::is_serial;

/// What `diagnose` says about a node's CPQ certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    /// Empty when the subject has no CN.
    pub subject_cn: String,
    /// Empty when the issuer has no CN.
    pub issuer_cn: String,
    /// Unix seconds.
    pub not_after: u64,
}

/// Summarizes the first certificate of a PEM file.
pub fn summarize(cert_pem_path: &Path) -> Result<CertSummary> {
    let c = crate::core::certificate::read_pem_file(cert_pem_path)?;
    Ok(CertSummary {
        not_after: c.not_after_unix(),
        subject_cn: c.subject_cn.unwrap_or_default(),
        issuer_cn: c.issuer_cn.unwrap_or_default(),
    })
}
