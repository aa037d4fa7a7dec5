//! `[tls]`: the TLS versions, cipher suites and certificate of inbound SMTP and the
//! default mode, versions and CA file of outbound SMTP; and the catalogue of cipher
//! suites those lists are checked against: what rustls's `ring` provider offers (a
//! library's list, so the configuration can be validated without the TLS adapter).

use std::path::PathBuf;

use rustls::SupportedCipherSuite;
use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsMode {
    Off,
    Preferred,
    Required,
    PreferredVerify,
    RequiredVerify,
}

impl TlsMode {
    fn parse(s: &str) -> Option<TlsMode> {
        Some(match s {
            "off" => TlsMode::Off,
            "preferred" => TlsMode::Preferred,
            "required" => TlsMode::Required,
            "preferred-verify" => TlsMode::PreferredVerify,
            "required-verify" => TlsMode::RequiredVerify,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::PreferredVerify => "preferred-verify",
            TlsMode::RequiredVerify => "required-verify",
        }
    }
    pub fn required(self) -> bool {
        matches!(self, TlsMode::Required | TlsMode::RequiredVerify)
    }
    pub fn verify(self) -> bool {
        matches!(self, TlsMode::PreferredVerify | TlsMode::RequiredVerify)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

impl TlsVersion {
    /// "1.2" / "1.3", as written in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::V1_2 => "1.2",
            TlsVersion::V1_3 => "1.3",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsInbound {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub versions: Vec<TlsVersion>,
    /// Cipher suites in order of preference (rustls names); `None` = every
    /// suite rustls offers.
    pub ciphers: Option<Vec<String>>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsOutbound {
    pub default: TlsMode,
    pub versions: Vec<TlsVersion>,
    pub ca_file: Option<PathBuf>,
    /// As [`TlsInbound::ciphers`].
    pub ciphers: Option<Vec<String>>,
}

/// `[tls]`, validated: both directions.
#[derive(Debug, Clone)]
pub struct Tls {
    pub inbound: TlsInbound,
    pub outbound: TlsOutbound,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub inbound: Option<RawInbound>,
    pub outbound: Option<RawOutbound>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawInbound {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub versions: Option<Vec<Spanned<String>>>,
    pub ciphers: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawOutbound {
    pub default: Option<Spanned<String>>,
    pub versions: Option<Vec<Spanned<String>>>,
    pub ca_file: Option<String>,
    pub ciphers: Option<Spanned<Vec<Spanned<String>>>>,
}

impl Section for Tls {
    const KEY: &'static str = "tls";
    type Raw = Raw;
    type Needs<'a> = ();

    fn validate(raw: Option<Raw>, ctx: &Ctx<'_>, (): ()) -> Result<Tls, ConfigError> {
        let tls = raw.unwrap_or_default();
        let ti = tls.inbound.unwrap_or_default();
        if ti.cert.is_some() != ti.key.is_some() {
            return ctx.err(None, "tls.inbound", "cert and key must be given together; allowed: both, or neither (a self-signed certificate is generated)");
        }
        let versions = self::versions(ctx, &ti.versions, "tls.inbound.versions")?;
        let inbound = TlsInbound {
            cert: ti.cert.as_deref().map(|p| ctx.resolve(p)),
            key: ti.key.as_deref().map(|p| ctx.resolve(p)),
            ciphers: ciphers(ctx, &ti.ciphers, &versions, "tls.inbound")?,
            versions,
        };
        let to = tls.outbound.unwrap_or_default();
        let versions = self::versions(ctx, &to.versions, "tls.outbound.versions")?;
        let outbound = TlsOutbound {
            default: match &to.default {
                None => TlsMode::Preferred,
                Some(s) => tls_mode(ctx, s, "tls.outbound.default")?,
            },
            ciphers: ciphers(ctx, &to.ciphers, &versions, "tls.outbound")?,
            versions,
            ca_file: to.ca_file.as_deref().map(|p| ctx.resolve(p)),
        };
        Ok(Tls { inbound, outbound })
    }
}

fn versions(
    ctx: &Ctx<'_>,
    v: &Option<Vec<Spanned<String>>>,
    key: &str,
) -> Result<Vec<TlsVersion>, ConfigError> {
    let Some(list) = v else {
        return Ok(vec![TlsVersion::V1_2, TlsVersion::V1_3]);
    };
    let mut out = Vec::new();
    for s in list {
        let ver = match s.get_ref().as_str() {
            "1.2" | "TLSv1.2" => TlsVersion::V1_2,
            "1.3" | "TLSv1.3" => TlsVersion::V1_3,
            other => {
                return ctx.err(
                    Some(s.span()),
                    key,
                    format!("\"{other}\" is not offered; allowed: \"1.2\", \"1.3\" (TLS 1.0/1.1 and SSL are not supported)"),
                )
            }
        };
        if !out.contains(&ver) {
            out.push(ver);
        }
    }
    if out.is_empty() {
        return ctx.err(
            None,
            key,
            "the list is empty; allowed: one or both of \"1.2\", \"1.3\"",
        );
    }
    Ok(out)
}

/// A cipher list: every name one the rustls ring provider offers, and
/// for each enabled TLS version at least one suite of that version, so
/// the list never silently switches a version off.
fn ciphers(
    ctx: &Ctx<'_>,
    v: &Option<Spanned<Vec<Spanned<String>>>>,
    versions: &[TlsVersion],
    section: &str,
) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(list) = v else {
        return Ok(None);
    };
    let key = format!("{section}.ciphers");
    let names = cipher_suite_names();
    let quoted = |of: &dyn Fn(&str) -> bool| {
        names
            .iter()
            .filter(|n| of(n))
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out: Vec<String> = Vec::new();
    for s in list.get_ref() {
        let name = s.get_ref().trim();
        let Some(canonical) = names.iter().find(|n| n.eq_ignore_ascii_case(name)) else {
            let why = match why_unavailable(name) {
                Some(w) => format!("\"{name}\" is not offered: {w}"),
                None => format!("\"{name}\" is not a cipher suite rustls offers"),
            };
            return ctx.err(
                Some(s.span()),
                key,
                format!("{why}; allowed: {}", quoted(&|_| true)),
            );
        };
        if !out.iter().any(|o| o == canonical) {
            out.push(canonical.to_string());
        }
    }
    if out.is_empty() {
        return ctx.err(
            Some(list.span()),
            key,
            format!(
                "the list is empty; allowed: one or more of {} (or no key: all of them)",
                quoted(&|_| true)
            ),
        );
    }
    for version in versions {
        let label = version.as_str();
        let of = |n: &str| cipher_suite_version(n) == Some(*version);
        if !out.iter().any(|n| of(n)) {
            return ctx.err(
                Some(list.span()),
                key,
                format!("{section}.versions enables TLS {label} but no TLS {label} cipher suite is listed; allowed: add one of {}, or remove \"{label}\" from {section}.versions", quoted(&of)),
            );
        }
    }
    Ok(Some(out))
}

/// A TLS mode as written (`[tls.outbound] default`, a destination's `tls`).
pub(super) fn tls_mode(
    ctx: &Ctx<'_>,
    v: &Spanned<String>,
    key: &str,
) -> Result<TlsMode, ConfigError> {
    TlsMode::parse(v.get_ref()).map_or_else(
        || {
            ctx.err(
                Some(v.span()),
                key,
                format!(
                    "\"{}\" is not a TLS mode; allowed: \"off\", \"preferred\", \"required\", \"preferred-verify\", \"required-verify\"",
                    v.get_ref()
                ),
            )
        },
        Ok,
    )
}

/// "TLS13_AES_256_GCM_SHA384".
pub fn suite_name(s: &SupportedCipherSuite) -> String {
    let suite = s.suite();
    suite
        .as_str()
        .map_or_else(|| format!("{suite:?}"), str::to_string)
}

/// The TLS version a suite belongs to.
pub fn suite_version(s: &SupportedCipherSuite) -> TlsVersion {
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

/// The suites a direction offers: those of `ciphers` (all when `None`)
/// whose TLS version is enabled, in order of preference, with their version. The same
/// choice `tls::provider_with` hands rustls: the ring provider's default suites, or the
/// named ones in the order given.
pub fn effective_suites(
    versions: &[TlsVersion],
    ciphers: Option<&[String]>,
) -> Vec<(String, TlsVersion)> {
    let suites: Vec<SupportedCipherSuite> = match ciphers {
        None => rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec(),
        Some(names) => names
            .iter()
            .filter_map(|n| {
                rustls::crypto::ring::ALL_CIPHER_SUITES
                    .iter()
                    .find(|s| suite_name(s) == *n)
                    .copied()
            })
            .collect(),
    };
    suites
        .iter()
        .filter(|s| versions.contains(&suite_version(s)))
        .map(|s| (suite_name(s), suite_version(s)))
        .collect()
}

/// The TLS version a suite of [`cipher_suite_names`] belongs to.
pub fn cipher_suite_version(name: &str) -> Option<TlsVersion> {
    rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .find(|s| suite_name(s) == name)
        .map(suite_version)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::tests::{parse, GOOD};

    #[test]
    fn tls_cipher_lists_are_checked_against_rustls() {
        let with = |versions: &str, ciphers: &str| {
            parse(&format!(
                "{GOOD}[tls.inbound]\nversions = {versions}\nciphers = {ciphers}\n"
            ))
        };
        let c = with(
            "[\"1.3\"]",
            "[\"tls13_aes_256_gcm_sha384\", \"TLS13_AES_256_GCM_SHA384\"]",
        )
        .unwrap();
        assert_eq!(
            c.tls_inbound.ciphers,
            Some(vec!["TLS13_AES_256_GCM_SHA384".to_string()])
        );
        assert!(c.tls_outbound.ciphers.is_none());
        let e = with("[\"1.2\", \"1.3\"]", "[\"RC4-SHA\"]").unwrap_err();
        assert_eq!(e.key, "tls.inbound.ciphers");
        assert!(
            e.message.contains("RC4 suites do not exist in rustls")
                && e.message.contains("allowed: \"TLS13_AES_256_GCM_SHA384\""),
            "{e}"
        );
        let e = with("[\"1.2\"]", "[\"TLS_DH_anon_WITH_AES_128_GCM_SHA256\"]").unwrap_err();
        assert!(e.message.contains("anonymous"), "{e}");
        // A version without any of its suites would be switched off silently.
        let e = with("[\"1.2\", \"1.3\"]", "[\"TLS13_AES_128_GCM_SHA256\"]").unwrap_err();
        assert!(
            e.message
                .contains("enables TLS 1.2 but no TLS 1.2 cipher suite is listed"),
            "{e}"
        );
        assert!(
            !e.message.contains("TLS13_AES_256"),
            "only TLS 1.2 suites are suggested: {e}"
        );
        assert!(with("[\"1.2\"]", "[]")
            .unwrap_err()
            .message
            .contains("the list is empty"));
        let e = with("[\"1.1\"]", "[\"TLS13_AES_128_GCM_SHA256\"]").unwrap_err();
        assert!(
            e.message.contains("TLS 1.0/1.1 and SSL are not supported"),
            "{e}"
        );
    }

    #[test]
    fn the_catalogue_names_each_suite_with_its_version() {
        let names = cipher_suite_names();
        assert!(names.contains(&"TLS13_AES_128_GCM_SHA256"), "{names:?}");
        for (name, version) in [
            ("TLS13_AES_256_GCM_SHA384", Some(TlsVersion::V1_3)),
            (
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                Some(TlsVersion::V1_2),
            ),
            ("RC4-SHA", None),
        ] {
            assert_eq!(cipher_suite_version(name), version, "{name}");
        }
        for (name, why) in [
            ("SSLv3", Some("TLS 1.2 and 1.3 only")),
            ("EXP-RC2-CBC-MD5", Some("export")),
            ("TLS_RSA_WITH_AES_128_GCM_SHA256", Some("ECDHE")),
            ("NO_SUCH_SUITE", None),
        ] {
            let got = why_unavailable(name);
            match why {
                Some(w) => assert!(got.is_some_and(|g| g.contains(w)), "{name}: {got:?}"),
                None => assert_eq!(got, None, "{name}"),
            }
        }
    }
}
