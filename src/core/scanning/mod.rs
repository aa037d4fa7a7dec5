//! Scanning: mail policies and the engines they run (anti-virus with clamd,
//! content filters, DLP, outbreak filters), in the appliance's order
//! anti-virus → content filters and DLP → outbreak filters → final action.
//!
//! The engines themselves are IO-free and live in `pvo-scan`; their configuration
//! (`[antivirus]`, `[[mail_policy]]`, `[[content_filter]]`, `[[dlp_policy]]`,
//! `[outbreak]`) is `config`'s. This module compiles it into a
//! [`Scanner`] whenever a configuration comes into force, and (in
//! `pipeline`) runs every accepted message through it between the spool and
//! the delivery queue. Local quarantines are in `local_quarantine`.

pub mod local_quarantine;
pub mod outbreak_store;
pub mod pipeline;
pub mod quarantine_store;
pub mod virus;

use std::sync::Arc;

use pvo_scan::dlp::DlpEngine;
use pvo_scan::filter::{FilterRule, FilterSet};

use crate::core::scanning::virus::VirusScanner;
// The configuration's model of scanning (validated there) is what the scanner compiles.
pub use crate::core::config::{Antivirus, Direction, MailPolicy, ScanConfig};

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
