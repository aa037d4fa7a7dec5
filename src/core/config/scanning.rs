//! The scanning sections: `[antivirus]`, `[[content_filter]]`, `[[dlp_policy]]`,
//! `[[mail_policy]]` and `[outbreak]`, which together make the [`ScanConfig`] the
//! scanning pipeline compiles. Each is validated here by compiling what it names
//! once, so a bad rule is a configuration error (with the rule and field) and never a
//! runtime one; the engines themselves are `pvo-scan`'s.

use std::net::SocketAddr;
use std::path::PathBuf;

use pvo_scan::dlp::{DlpEngine, DlpPolicy};
use pvo_scan::filter::{FilterRule, FilterSet};
use pvo_scan::outbreak::OutbreakPolicy;
use pvo_scan::verdict::Action;
use serde::{Deserialize, Serialize};

use crate::core::config::outbreak_rules;
use crate::core::config::section::{ConfigError, Ctx, Section};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Antivirus {
    /// `IP:PORT` or a unix socket path.
    pub clamd: String,
    /// Seconds to wait for clamd; a timeout leaves the message queued.
    #[serde(default = "default_av_timeout")]
    pub timeout: u64,
}

fn default_av_timeout() -> u64 {
    60
}

/// Where clamd listens: `[antivirus] clamd`, and `pvo avscan --clamd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for ClamdAddr {
    type Err = String;

    /// `127.0.0.1:3310` or `/run/clamav/clamd.ctl` (or `unix:/path`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(p) = s.strip_prefix("unix:") {
            return Ok(ClamdAddr::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(ClamdAddr::Unix(PathBuf::from(s)));
        }
        s.parse::<SocketAddr>()
            .map(ClamdAddr::Tcp)
            .map_err(|_| format!("\"{s}\" is not a clamd address; allowed: IP:PORT such as \"127.0.0.1:3310\" or a unix socket path"))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Mail from hosts that may not relay (the Internet, to us).
    #[default]
    Incoming,
    /// Mail from RELAY hosts (our users, out).
    Outgoing,
}

fn all() -> Vec<String> {
    vec!["ALL".into()]
}

fn virus_quarantine() -> Vec<Action> {
    vec![Action::Quarantine("Virus".into())]
}

/// A mail policy: which mail it applies to and what each engine does.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailPolicy {
    pub name: String,
    #[serde(default)]
    pub direction: Direction,
    /// Envelope senders this policy applies to: "ALL", "example.com",
    /// ".example.com" or "user@example.com".
    #[serde(default = "all")]
    pub senders: Vec<String>,
    /// Envelope recipients this policy applies to (any recipient matching).
    #[serde(default = "all")]
    pub recipients: Vec<String>,
    /// Scan with clamd (`[antivirus]` must be set).
    #[serde(default)]
    pub antivirus: bool,
    /// Actions for an infected message (default: the Virus quarantine).
    #[serde(default = "virus_quarantine")]
    pub on_virus: Vec<Action>,
    /// Actions for a message no engine could scan: encrypted, beyond the
    /// MIME or archive limits, engine error on this content (default: the
    /// Virus quarantine). Never delivered as clean.
    #[serde(default = "virus_quarantine")]
    pub on_unscannable: Vec<Action>,
    /// Content filters to run, by name, in order; "ALL" for every filter.
    #[serde(default)]
    pub content_filters: Vec<String>,
    /// DLP policies to run, by name.
    #[serde(default)]
    pub dlp_policies: Vec<String>,
    /// Outbreak filtering: threshold and retention by threat level.
    #[serde(default)]
    pub outbreak: Option<OutbreakPolicy>,
}

/// The scanning part of a configuration, validated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScanConfig {
    pub antivirus: Option<Antivirus>,
    pub policies: Vec<MailPolicy>,
    pub filters: Vec<FilterRule>,
    pub dlp: Vec<DlpPolicy>,
    /// The outbreak rules file loaded at start (`pvo outbreakupdate` loads newer ones).
    pub outbreak_rules: Option<PathBuf>,
    /// Space for the local quarantines (bytes); free-up-space applies beyond it.
    pub quarantine_quota: Option<u64>,
}

/// Every scanning error has the key `scanning` and says which rule or field.
fn scanning_err<T>(ctx: &Ctx<'_>, message: String) -> Result<T, ConfigError> {
    ctx.err(None, "scanning", message)
}

impl Section for Option<Antivirus> {
    const KEY: &'static str = "antivirus";
    type Raw = Antivirus;
    type Needs<'a> = ();

    fn validate(
        raw: Option<Antivirus>,
        ctx: &Ctx<'_>,
        (): (),
    ) -> Result<Option<Antivirus>, ConfigError> {
        if let Some(av) = &raw {
            if let Err(e) = av.clamd.parse::<ClamdAddr>() {
                return scanning_err(ctx, format!("antivirus.clamd: {e}"));
            }
        }
        Ok(raw)
    }
}

impl Section for Vec<FilterRule> {
    const KEY: &'static str = "content_filter";
    type Raw = Vec<FilterRule>;
    type Needs<'a> = ();

    fn validate(
        raw: Option<Vec<FilterRule>>,
        ctx: &Ctx<'_>,
        (): (),
    ) -> Result<Vec<FilterRule>, ConfigError> {
        let filters = raw.unwrap_or_default();
        if let Err(e) = FilterSet::new(filters.clone()) {
            return scanning_err(ctx, e.to_string());
        }
        Ok(filters)
    }
}

impl Section for Vec<DlpPolicy> {
    const KEY: &'static str = "dlp_policy";
    type Raw = Vec<DlpPolicy>;
    type Needs<'a> = ();

    fn validate(
        raw: Option<Vec<DlpPolicy>>,
        ctx: &Ctx<'_>,
        (): (),
    ) -> Result<Vec<DlpPolicy>, ConfigError> {
        let dlp = raw.unwrap_or_default();
        for d in &dlp {
            if let Err(e) = DlpEngine::new(d.clone()) {
                return scanning_err(ctx, e.to_string());
            }
        }
        Ok(dlp)
    }
}

/// What mail policies name: the anti-virus engine, content filters and DLP policies.
pub struct PolicyNeeds<'a> {
    pub antivirus: Option<&'a Antivirus>,
    pub filters: &'a [FilterRule],
    pub dlp: &'a [DlpPolicy],
}

impl Section for Vec<MailPolicy> {
    const KEY: &'static str = "mail_policy";
    type Raw = Vec<MailPolicy>;
    type Needs<'a> = PolicyNeeds<'a>;

    fn validate(
        raw: Option<Vec<MailPolicy>>,
        ctx: &Ctx<'_>,
        needs: PolicyNeeds<'_>,
    ) -> Result<Vec<MailPolicy>, ConfigError> {
        let policies = raw.unwrap_or_default();
        for (i, p) in policies.iter().enumerate() {
            if p.antivirus && needs.antivirus.is_none() {
                return scanning_err(ctx, format!(
                    "mail_policy[{i}] ({}): antivirus = true needs an [antivirus] section with clamd = \"IP:PORT\" or a socket path",
                    p.name
                ));
            }
            for f in &p.content_filters {
                if f != "ALL" && !needs.filters.iter().any(|x| &x.name == f) {
                    let names: Vec<&str> = needs.filters.iter().map(|x| x.name.as_str()).collect();
                    return scanning_err(ctx, format!(
                        "mail_policy[{i}] ({}): content filter \"{f}\" does not exist; allowed: \"ALL\" or one of {names:?}",
                        p.name
                    ));
                }
            }
            for d in &p.dlp_policies {
                if !needs.dlp.iter().any(|x| &x.name == d) {
                    let names: Vec<&str> = needs.dlp.iter().map(|x| x.name.as_str()).collect();
                    return scanning_err(ctx, format!("mail_policy[{i}] ({}): DLP policy \"{d}\" does not exist; allowed: one of {names:?}", p.name));
                }
            }
        }
        Ok(policies)
    }
}

/// `[outbreak]`, validated: the rules file loaded at start, which must compile.
#[derive(Debug, Clone, Default)]
pub struct Outbreak {
    pub rules_file: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbreak {
    pub rules_file: Option<String>,
}

impl Section for Outbreak {
    const KEY: &'static str = "outbreak";
    type Raw = RawOutbreak;
    type Needs<'a> = ();

    fn validate(raw: Option<RawOutbreak>, ctx: &Ctx<'_>, (): ()) -> Result<Outbreak, ConfigError> {
        let rules_file = raw.and_then(|o| o.rules_file).map(|f| ctx.resolve(&f));
        if let Some(path) = &rules_file {
            if let Err(e) = outbreak_rules::read(path) {
                return scanning_err(ctx, e);
            }
        }
        Ok(Outbreak { rules_file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::config::tests::{parse, GOOD};

    #[test]
    fn clamd_addresses() {
        assert_eq!(
            "127.0.0.1:3310".parse::<ClamdAddr>(),
            Ok(ClamdAddr::Tcp("127.0.0.1:3310".parse().unwrap()))
        );
        for unix in ["/run/clamav/clamd.ctl", "unix:/run/clamav/clamd.ctl"] {
            assert_eq!(
                unix.parse::<ClamdAddr>(),
                Ok(ClamdAddr::Unix("/run/clamav/clamd.ctl".into())),
                "{unix}"
            );
        }
        assert_eq!(
            "unix:/tmp/c.sock".parse::<ClamdAddr>(),
            Ok(ClamdAddr::Unix("/tmp/c.sock".into()))
        );
        let e = "clamd.local".parse::<ClamdAddr>().unwrap_err();
        assert!(e.contains("allowed: IP:PORT"), "{e}");
        // A host name is not resolved here, and a bare port is not an address.
        for refused in ["localhost:3310", "3310"] {
            assert!(refused.parse::<ClamdAddr>().is_err(), "{refused}");
        }
    }

    #[test]
    fn scanning_sections_are_checked_in_order_and_name_the_rule() {
        let cases: &[(&str, &str)] = &[
            (
                "[antivirus]\nclamd = \"nowhere\"\n",
                "antivirus.clamd: \"nowhere\" is not a clamd address",
            ),
            (
                "[[mail_policy]]\nname = \"In\"\nantivirus = true\n",
                "mail_policy[0] (In): antivirus = true needs an [antivirus] section",
            ),
            (
                "[[mail_policy]]\nname = \"In\"\ncontent_filters = [\"Nope\"]\n",
                "content filter \"Nope\" does not exist; allowed: \"ALL\" or one of []",
            ),
            (
                "[[mail_policy]]\nname = \"In\"\ndlp_policies = [\"Cards\"]\n",
                "DLP policy \"Cards\" does not exist",
            ),
            (
                "[outbreak]\nrules_file = \"/nonexistent/rules.toml\"\n",
                "outbreak rules file /nonexistent/rules.toml: ",
            ),
        ];
        for (section, needle) in cases {
            let e = parse(&format!("{GOOD}{section}")).unwrap_err();
            assert_eq!((e.key.as_str(), e.line), ("scanning", None), "{e}");
            assert!(e.message.contains(needle), "{section}: {e}");
        }
        let c = parse(&format!(
            "{GOOD}[antivirus]\nclamd = \"127.0.0.1:3310\"\n[[mail_policy]]\nname = \"In\"\nantivirus = true\n[quarantines]\nquota = 1073741824\n"
        ))
        .unwrap();
        assert_eq!(c.scanning.policies[0].name, "In");
        assert_eq!(c.scanning.antivirus.unwrap().timeout, 60);
        assert_eq!(c.scanning.quarantine_quota, Some(1 << 30));
    }
}
