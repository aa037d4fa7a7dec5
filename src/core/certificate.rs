//! What PVO reads from an X.509 certificate, through x509-parser: the serial number, the
//! subject's common name and organisational unit, the issuer's common name, the validity
//! period and the subject alternative names.
//!
//! The CPQ trust code names peers and checks their role and serial with it, the TLS code
//! decides when the generated certificate is renewed and whether a listener serves a
//! self-signed one, and the diagnostics list the names a server's certificate holds. The
//! input often comes from a peer (a handshake's certificate), so reading is all or nothing:
//! anything x509-parser does not accept, bytes after the certificate, or an empty serial
//! number is an error, never a panic or half a result.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::oid_registry::{OID_X509_COMMON_NAME, OID_X509_ORGANIZATIONAL_UNIT};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// The parts of a certificate PVO uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// Lowercase hex of the serial number's DER contents (a leading zero byte kept): what
    /// `cpqcert list` shows and a manager records for a gateway.
    pub serial: String,
    /// The subject's first common name.
    pub subject_cn: Option<String>,
    /// The subject's first organisational unit (a CPQ certificate's role).
    pub subject_ou: Option<String>,
    /// The issuer's first common name.
    pub issuer_cn: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The subject alternative names, in the certificate's order.
    pub names: Vec<AltName>,
    /// The DER of the subject and of the issuer (tag and length included): an issued
    /// certificate's issuer must be its CA's subject byte for byte.
    pub subject_der: Vec<u8>,
    pub issuer_der: Vec<u8>,
    /// The DER of the SubjectPublicKeyInfo, to match a certificate with its key.
    pub spki_der: Vec<u8>,
}

impl Certificate {
    /// The end of the validity period as Unix seconds, the node's clock unit (0 for a
    /// time before 1970).
    pub fn not_after_unix(&self) -> u64 {
        u64::try_from(self.not_after.unix_timestamp()).unwrap_or(0)
    }
}

/// One subject alternative name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltName {
    Dns(String),
    Ip(IpAddr),
    Email(String),
    Uri(String),
    /// Another kind of name (directory name, registered id...), by its kind.
    Other(&'static str),
}

impl std::fmt::Display for AltName {
    /// `mx.example.com`, `IP 192.0.2.1`, `email a@example.com`, `URI https://...`; control
    /// characters a certificate may hold are shown as `?`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AltName::Dns(n) => f.write_str(&printable(n)),
            AltName::Ip(ip) => write!(f, "IP {ip}"),
            AltName::Email(e) => write!(f, "email {}", printable(e)),
            AltName::Uri(u) => write!(f, "URI {}", printable(u)),
            AltName::Other(kind) => f.write_str(kind),
        }
    }
}

/// Why a certificate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("not an X.509 certificate ({0})")]
    Malformed(String),
    #[error("{0} bytes after the certificate")]
    TrailingBytes(usize),
    #[error("no serial number")]
    NoSerial,
}

/// Why a certificate file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("reading certificate {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("parsing certificate {}: no PEM certificate in it", path.display())]
    NoPem { path: PathBuf },
    #[error("{} is not a certificate this reader understands: {error}", path.display())]
    Certificate { path: PathBuf, error: ReadError },
}

/// Reads one DER certificate (nothing may follow it).
pub fn read(der: &[u8]) -> Result<Certificate, ReadError> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| {
        ReadError::Malformed(match e {
            x509_parser::nom::Err::Incomplete(_) => "truncated".to_string(),
            x509_parser::nom::Err::Error(e) | x509_parser::nom::Err::Failure(e) => e.to_string(),
        })
    })?;
    if !rest.is_empty() {
        return Err(ReadError::TrailingBytes(rest.len()));
    }
    let tbs = &cert.tbs_certificate;
    if tbs.raw_serial().is_empty() {
        return Err(ReadError::NoSerial);
    }
    let names = match tbs.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.iter().map(alt_name).collect(),
        Ok(None) => Vec::new(),
        Err(e) => return Err(ReadError::Malformed(e.to_string())),
    };
    Ok(Certificate {
        serial: hex::encode(tbs.raw_serial()),
        subject_cn: attribute(tbs.subject(), &OID_X509_COMMON_NAME),
        subject_ou: attribute(tbs.subject(), &OID_X509_ORGANIZATIONAL_UNIT),
        issuer_cn: attribute(tbs.issuer(), &OID_X509_COMMON_NAME),
        not_before: tbs.validity().not_before.to_datetime(),
        not_after: tbs.validity().not_after.to_datetime(),
        names,
        subject_der: tbs.subject().as_raw().to_vec(),
        issuer_der: tbs.issuer().as_raw().to_vec(),
        spki_der: tbs.public_key().raw.to_vec(),
    })
}

/// Reads the first certificate of a PEM file.
pub fn read_pem_file(path: &Path) -> Result<Certificate, FileError> {
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(path).map_err(|error| FileError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    let der =
        rustls_pki_types::CertificateDer::from_pem_slice(&pem).map_err(|_| FileError::NoPem {
            path: path.to_path_buf(),
        })?;
    read(&der).map_err(|error| FileError::Certificate {
        path: path.to_path_buf(),
        error,
    })
}

fn alt_name(n: &GeneralName<'_>) -> AltName {
    match n {
        GeneralName::DNSName(d) => AltName::Dns(d.to_string()),
        GeneralName::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
            Ok(v4) => AltName::Ip(IpAddr::from(v4)),
            Err(_) => match <[u8; 16]>::try_from(*b) {
                Ok(v6) => AltName::Ip(IpAddr::from(v6)),
                Err(_) => AltName::Other("IpAddress"),
            },
        },
        GeneralName::RFC822Name(e) => AltName::Email(e.to_string()),
        GeneralName::URI(u) => AltName::Uri(u.to_string()),
        GeneralName::OtherName(..) => AltName::Other("OtherName"),
        GeneralName::X400Address(_) => AltName::Other("X400Address"),
        GeneralName::DirectoryName(_) => AltName::Other("DirectoryName"),
        GeneralName::EDIPartyName(_) => AltName::Other("EDIPartyName"),
        GeneralName::RegisteredID(_) => AltName::Other("RegisteredID"),
        GeneralName::Invalid(..) => AltName::Other("Invalid"),
    }
}

/// The first attribute `oid` of a name, decoded (`None` when absent or not a string).
fn attribute(name: &X509Name<'_>, oid: &x509_parser::oid_registry::Oid<'_>) -> Option<String> {
    let value = name.iter_by_oid(oid).next()?.attr_value();
    decode_string(value.tag().0, value.data)
}

/// The text of a directory string. x509-parser decodes only the ASCII-compatible types, and
/// old CAs also wrote names as BMPString, UniversalString or TeletexString.
fn decode_string(tag: u32, b: &[u8]) -> Option<String> {
    match tag {
        // UTF8String, PrintableString, IA5String, VisibleString
        12 | 19 | 22 | 26 => String::from_utf8(b.to_vec()).ok(),
        // TeletexString: in practice Latin-1
        20 => Some(b.iter().map(|&c| char::from(c)).collect()),
        // BMPString: UTF-16BE
        30 => {
            if !b.len().is_multiple_of(2) {
                return None;
            }
            let units = b.chunks_exact(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        // UniversalString: UTF-32BE
        28 => {
            if !b.len().is_multiple_of(4) {
                return None;
            }
            b.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// Replaces control characters (a hostile certificate could carry terminal escapes).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SerialNumber};
    use time::macros::datetime;

    struct Case {
        serial: &'static [u8],
        cn: Option<&'static str>,
        ou: Option<&'static str>,
        names: &'static [&'static str],
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    }

    fn make(c: &Case) -> Vec<u8> {
        let mut p =
            CertificateParams::new(c.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = DistinguishedName::new();
        if let Some(ou) = c.ou {
            dn.push(DnType::OrganizationalUnitName, ou);
        }
        if let Some(cn) = c.cn {
            dn.push(DnType::CommonName, cn);
        }
        p.distinguished_name = dn;
        p.serial_number = Some(SerialNumber::from_slice(c.serial));
        p.not_before = c.not_before;
        p.not_after = c.not_after;
        let key = KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_the_fields_of_generated_certificates() {
        let cases = [
            Case {
                serial: &[0x40, 0x01, 0xab, 0xcd],
                cn: Some("gw1"),
                ou: Some("PVO gateway"),
                names: &["gw1.example.com", "192.0.2.1", "2001:db8::1"],
                // UTCTime on both sides, a leap day.
                not_before: datetime!(2024-02-29 12:00:00 UTC),
                not_after: datetime!(2049-12-31 23:59:59 UTC),
            },
            Case {
                serial: &[0x01],
                cn: Some("Zoë"),
                ou: None,
                names: &["mx.example.com"],
                // GeneralizedTime after 2049.
                not_before: datetime!(1970-01-01 00:00:00 UTC),
                not_after: datetime!(2099-12-31 23:59:59 UTC),
            },
            Case {
                serial: &[0x7f; 20],
                cn: None,
                ou: Some("PVO manager"),
                names: &[],
                not_before: datetime!(2026-01-01 00:00:00 UTC),
                not_after: datetime!(2026-01-02 00:00:00 UTC),
            },
        ];
        for c in &cases {
            let der = make(c);
            let got = read(&der).unwrap();
            assert_eq!(got.serial, hex::encode(c.serial), "{got:?}");
            assert_eq!(got.subject_cn.as_deref(), c.cn);
            assert_eq!(got.subject_ou.as_deref(), c.ou);
            assert_eq!(got.issuer_cn, got.subject_cn, "self-signed");
            assert_eq!(got.subject_der, got.issuer_der, "self-signed");
            assert_eq!((got.not_before, got.not_after), (c.not_before, c.not_after));
            let names: Vec<String> = got.names.iter().map(ToString::to_string).collect();
            let want: Vec<String> = c
                .names
                .iter()
                .map(|n| match n.parse::<IpAddr>() {
                    Ok(ip) => format!("IP {ip}"),
                    Err(_) => n.to_string(),
                })
                .collect();
            assert_eq!(names, want);
        }
    }

    #[test]
    fn the_key_of_a_certificate_is_its_spki() {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["a.example".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let got = read(cert.der()).unwrap();
        assert_eq!(
            got.spki_der,
            rcgen::PublicKeyData::subject_public_key_info(&key)
        );
    }

    #[test]
    fn reading_is_all_or_nothing() {
        let der = make(&Case {
            serial: &[0x42, 0x42],
            cn: Some("gw1"),
            ou: Some("PVO gateway"),
            names: &["gw1", "127.0.0.1"],
            not_before: datetime!(2025-01-01 00:00:00 UTC),
            not_after: datetime!(2035-01-01 00:00:00 UTC),
        });
        assert_eq!(read(&der).unwrap().subject_cn.as_deref(), Some("gw1"));
        // Every truncation fails cleanly.
        for n in 0..der.len() {
            assert!(read(&der[..n]).is_err(), "prefix {n}");
        }
        // Trailing bytes are refused.
        let mut longer = der.clone();
        longer.push(0);
        assert_eq!(read(&longer), Err(ReadError::TrailingBytes(1)));
        // Corrupted bytes never panic (deterministic pseudo-random flips).
        let mut x: u32 = 0x1234_5678;
        for _ in 0..5000 {
            let mut c = der.clone();
            for _ in 0..3 {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let i = (x as usize >> 8) % c.len();
                c[i] ^= (x >> 24) as u8 | 1;
            }
            let _ = read(&c);
        }
        // Hand-made nasties.
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x80, 0x00, 0x00],             // indefinite length
            &[0x30, 0x84, 0xff, 0xff, 0xff, 0xff], // 4 GiB claimed
            &[0x30, 0x85, 1, 0, 0, 0, 0],          // length of length too big
            &[0x1f, 0x81, 0x01, 0x00],             // high tag number
            &[0x30, 0x02, 0x30, 0x05],             // inner overruns outer
        ] {
            assert!(read(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_in_every_directory_string_type() {
        // Name: SET{ C=PrintableString "DE" }, SET{ CN=BMPString "Zoë" }.
        let name = [
            0x30, 0x1e, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x06, 0x13, 0x02, b'D',
            b'E', 0x31, 0x0f, 0x30, 0x0d, 0x06, 0x03, 0x55, 0x04, 0x03, 0x1e, 0x06, 0x00, b'Z',
            0x00, b'o', 0x00, 0xeb,
        ];
        let cn = |der: &[u8]| {
            let (_, n) = X509Name::from_der(der).unwrap();
            attribute(&n, &OID_X509_COMMON_NAME)
        };
        assert_eq!(cn(&name).as_deref(), Some("Zoë"));
        // Without a CN.
        let mut no_cn = name[..15].to_vec();
        no_cn[1] = 0x0d;
        assert_eq!(cn(&no_cn), None);
        // PrintableString CN.
        let printable = [
            0x30, 0x0d, 0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x02, b'g',
            b'w',
        ];
        assert_eq!(cn(&printable).as_deref(), Some("gw"));

        let cases: &[(u32, &[u8], Option<&str>)] = &[
            (12, "Zoë".as_bytes(), Some("Zoë")),
            (12, b"\xff", None),
            (19, b"gw", Some("gw")),
            (22, b"a@b", Some("a@b")),
            (26, b"vis", Some("vis")),
            (20, b"Zo\xeb", Some("Zoë")),
            (30, &[0x00, b'Z', 0x00, 0xeb], Some("Zë")),
            (30, &[0x00, b'Z', 0x00], None),
            (30, &[0xd8, 0x00], None), // a lone surrogate
            (28, &[0, 0, 0, b'Z', 0, 0, 0, 0xeb], Some("Zë")),
            (28, &[0, 0x11, 0, 0], None), // beyond Unicode
            (28, &[0, 0, 0], None),
            (4, b"gw", None), // OCTET STRING: not text
        ];
        for (tag, bytes, want) in cases {
            assert_eq!(
                decode_string(*tag, bytes).as_deref(),
                *want,
                "{tag} {bytes:?}"
            );
        }
    }

    #[test]
    fn alt_names_are_printed_safely() {
        let cases = [
            (AltName::Dns("mx.example.com".into()), "mx.example.com"),
            (AltName::Dns("a\x1b[31m".into()), "a?[31m"),
            (AltName::Ip("192.0.2.1".parse().unwrap()), "IP 192.0.2.1"),
            (
                AltName::Ip("2001:db8::1".parse().unwrap()),
                "IP 2001:db8::1",
            ),
            (
                AltName::Email("a@example.com".into()),
                "email a@example.com",
            ),
            (AltName::Uri("https://x/".into()), "URI https://x/"),
            (AltName::Other("DirectoryName"), "DirectoryName"),
        ];
        for (name, text) in cases {
            assert_eq!(name.to_string(), text);
        }
    }

    #[test]
    fn pem_files_name_themselves_in_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let e = read_pem_file(&tmp.path().join("missing.crt")).unwrap_err();
        assert!(e.to_string().contains("missing.crt"), "{e}");
        let junk = tmp.path().join("junk.crt");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = read_pem_file(&junk).unwrap_err();
        assert!(e.to_string().contains("junk.crt"), "{e}");
        let bad = tmp.path().join("bad.crt");
        std::fs::write(
            &bad,
            "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = read_pem_file(&bad).unwrap_err();
        assert!(
            matches!(e, FileError::Certificate { .. }) && e.to_string().contains("bad.crt"),
            "{e}"
        );
    }
}
