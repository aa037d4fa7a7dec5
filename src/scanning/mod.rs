//! Scanning: mail policies and the engines they run (anti-virus with clamd,
//! content filters, DLP, outbreak filters), in the appliance's order
//! anti-virus → content filters and DLP → outbreak filters → final action.
//!
//! The engines themselves are IO-free and live in `pvo-scan`; this module
//! holds their configuration (`[antivirus]`, `[[mail_policy]]`,
//! `[[content_filter]]`, `[[dlp_policy]]`, `[outbreak]`), compiles it into a
//! [`Scanner`] whenever a configuration comes into force, and (in
//! `pipeline`) runs every accepted message through it between the spool and
//! the delivery queue. Local quarantines are in `local_quarantine`.

pub mod local_quarantine;
pub mod outbreak_store;
pub mod pipeline;
pub mod quarantine_store;
pub mod virus;

use std::path::PathBuf;
use std::sync::Arc;

use pvo_scan::dlp::{DlpEngine, DlpPolicy};
use pvo_scan::filter::{FilterRule, FilterSet};
use pvo_scan::outbreak::{OutbreakPolicy, OutbreakRules};
use pvo_scan::verdict::Action;
use serde::{Deserialize, Serialize};

use crate::scanning::virus::{ClamdAddr, VirusScanner};

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

/// The scanning part of a configuration, as written (validated by `config`).
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

impl ScanConfig {
    /// Checks names and compiles everything once, so a bad rule is a
    /// configuration error (with the rule and field) and never a runtime one.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(av) = &self.antivirus {
            av.clamd
                .parse::<ClamdAddr>()
                .map_err(|e| format!("antivirus.clamd: {e}"))?;
        }
        FilterSet::new(self.filters.clone()).map_err(|e| e.to_string())?;
        for d in &self.dlp {
            DlpEngine::new(d.clone()).map_err(|e| e.to_string())?;
        }
        for (i, p) in self.policies.iter().enumerate() {
            if p.antivirus && self.antivirus.is_none() {
                return Err(format!(
                    "mail_policy[{i}] ({}): antivirus = true needs an [antivirus] section with clamd = \"IP:PORT\" or a socket path",
                    p.name
                ));
            }
            for f in &p.content_filters {
                if f != "ALL" && !self.filters.iter().any(|x| &x.name == f) {
                    let names: Vec<&str> = self.filters.iter().map(|x| x.name.as_str()).collect();
                    return Err(format!(
                        "mail_policy[{i}] ({}): content filter \"{f}\" does not exist; allowed: \"ALL\" or one of {names:?}",
                        p.name
                    ));
                }
            }
            for d in &p.dlp_policies {
                if !self.dlp.iter().any(|x| &x.name == d) {
                    let names: Vec<&str> = self.dlp.iter().map(|x| x.name.as_str()).collect();
                    return Err(format!("mail_policy[{i}] ({}): DLP policy \"{d}\" does not exist; allowed: one of {names:?}", p.name));
                }
            }
        }
        if let Some(path) = &self.outbreak_rules {
            load_outbreak_rules(path)?;
        }
        Ok(())
    }
}

/// Reads and compiles an outbreak rules file.
pub fn load_outbreak_rules(path: &std::path::Path) -> Result<OutbreakRules, String> {
    // One parser for every rules file, whose errors never repeat the file's content.
    outbreak_store::read(path).map(|l| l.rules)
}

/// One mail policy, compiled.
pub struct CompiledPolicy {
    pub policy: MailPolicy,
    pub filters: FilterSet,
    pub dlp: Vec<DlpEngine>,
}

/// Everything the pipeline needs, compiled from one configuration.
pub struct Scanner {
    /// The anti-virus engine (`[antivirus]`), when one is configured.
    pub clamd: Option<Arc<dyn VirusScanner>>,
    pub policies: Vec<CompiledPolicy>,
}

impl Scanner {
    /// Compiles `cfg`; `antivirus` builds the engine for its `[antivirus]` section
    /// (`clamd::scanner_for`, wired by `node`).
    pub fn new(
        cfg: &ScanConfig,
        antivirus: impl Fn(&Antivirus) -> Result<Arc<dyn VirusScanner>, String>,
    ) -> Result<Scanner, String> {
        let clamd = match &cfg.antivirus {
            Some(av) => Some(antivirus(av)?),
            None => None,
        };
        let mut policies = Vec::new();
        for p in &cfg.policies {
            let rules: Vec<FilterRule> = if p.content_filters.iter().any(|f| f == "ALL") {
                cfg.filters.clone()
            } else {
                p.content_filters
                    .iter()
                    .filter_map(|n| cfg.filters.iter().find(|f| &f.name == n).cloned())
                    .collect()
            };
            let filters = FilterSet::new(rules).map_err(|e| e.to_string())?;
            let mut dlp = Vec::new();
            for n in &p.dlp_policies {
                if let Some(d) = cfg.dlp.iter().find(|d| &d.name == n) {
                    dlp.push(DlpEngine::new(d.clone()).map_err(|e| e.to_string())?);
                }
            }
            policies.push(CompiledPolicy {
                policy: p.clone(),
                filters,
                dlp,
            });
        }
        Ok(Scanner { clamd, policies })
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Whether a rescan with new outbreak `rules` still holds a message in Outbreak:
    /// its mail policy's outbreak settings against the rules' verdict on `raw`.
    /// Outbreak filtering that no longer applies to the mail lets it go; a message that
    /// cannot be parsed stays held (new rules cannot clear what they cannot read).
    pub fn outbreak_still_holds(
        &self,
        outgoing: bool,
        sender: &str,
        recipients: &[String],
        raw: &[u8],
        rules: &pvo_scan::outbreak::OutbreakRules,
    ) -> bool {
        let Some(op) = self
            .select(outgoing, sender, recipients)
            .and_then(|p| p.policy.outbreak.as_ref())
        else {
            return false;
        };
        match pvo_scan::mime::scan(raw, &pvo_scan::mime::Limits::default()) {
            Err(_) => true,
            Ok(view) => op.hold_for(&rules.evaluate(&view)).is_some(),
        }
    }

    /// The first policy of the message's direction whose senders match the
    /// envelope sender or whose recipients match any recipient.
    pub fn select(
        &self,
        outgoing: bool,
        sender: &str,
        recipients: &[String],
    ) -> Option<&CompiledPolicy> {
        let dir = if outgoing {
            Direction::Outgoing
        } else {
            Direction::Incoming
        };
        let matches = |pattern: &str, addr: &str| -> bool {
            if pattern == "ALL" {
                return true;
            }
            match pvo_proto::address::parse_mailbox(addr) {
                Ok(m) => pvo_proto::address::recipient_matches(pattern, &m),
                Err(_) => false,
            }
        };
        self.policies.iter().find(|p| {
            p.policy.direction == dir
                && (p.policy.senders.iter().any(|s| matches(s, sender))
                    && p.policy
                        .recipients
                        .iter()
                        .any(|r| recipients.iter().any(|a| matches(r, a))))
        })
    }
}
