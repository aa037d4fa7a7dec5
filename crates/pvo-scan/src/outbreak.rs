//! Outbreak rules: a versioned rules file of threat descriptions with threat levels 1–5, a
//! per-policy threshold, and how long a held message stays in the Outbreak quarantine.
//!
//! The rules file is TOML; `version` is a free-form serial that `pvo outbreakupdate` and
//! `outbreakstatus` display:
//!
//! ```toml
//! version = "2025-06-10.1"
//!
//! [[rule]]
//! id = "OUTB-2025-0042"
//! description = "Invoice-themed zip with an executable"
//! threat_level = 4
//! attachment_type = ["zip"]                    # true type by content, or a group
//! body_regex = ["(?i)overdue invoice"]
//!
//! [[rule]]
//! id = "OUTB-2025-0043"
//! description = "Known dropper"
//! threat_level = 5
//! sha256 = ["275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f"]
//!
//! [[rule]]
//! id = "OUTB-2025-0044"
//! description = "Phishing kit host"
//! threat_level = 3
//! url_domain = ["login-verify.example"]         # the domain and its subdomains
//! ```
//!
//! A rule matches when **every** criterion it sets matches (criteria combine with "and");
//! inside one criterion any listed value may match ("or"). The attachment criteria
//! (`attachment_type`, `attachment_name`, `sha256`) must all hold for the *same* part, so a
//! rule for "an exe named *.pdf" means one file that is both. `url_domain` matches the
//! message's URL hosts, `body_regex` its decoded text parts. A rule must set at least one
//! criterion. Hashes are compared over every leaf part, attachments and bodies alike.
//!
//! [`OutbreakRules::evaluate`] returns the highest threat level among the matching rules and
//! their ids; [`OutbreakResult::at_or_above`] compares with a policy's threshold.
//!
//! Retention: a message held at a higher threat level is held longer, because the point of
//! the Outbreak quarantine is to wait for anti-virus signatures that recognise the threat,
//! and severe outbreaks are the ones worth waiting for. The defaults ([`Retention`]) are
//! 1 h, 3 h, 6 h, 12 h and 1 day for levels 1 to 5; the appliance's longest default hold for
//! a virus outbreak is one day, which is where level 5 sits. A policy can override each level.
//!
//! # Security
//!
//! The rules file is trusted configuration, but it is checked like untrusted input so that
//! a mistake is caught at load time: unknown fields, out-of-range levels, malformed hashes
//! and domains, bad regexes and duplicate ids are all errors naming the rule and the field.
//! Messages are untrusted; matching is linear in the size of the [`ScannedMessage`].

use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::compile_regex;
use crate::filetype::TypeSet;
use crate::glob::Glob;
use crate::mime::{ScannedMessage, Unscannable};
use crate::verdict::Verdict;
use crate::RuleError;

/// A threat level from 1 (lowest) to 5 (highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ThreatLevel(u8);

impl ThreatLevel {
    /// The level as a number from 1 to 5.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for ThreatLevel {
    type Error = String;

    fn try_from(v: u8) -> Result<ThreatLevel, String> {
        if (1..=5).contains(&v) {
            Ok(ThreatLevel(v))
        } else {
            Err(format!("threat level must be 1 to 5, got {v}"))
        }
    }
}

impl From<ThreatLevel> for u8 {
    fn from(t: ThreatLevel) -> u8 {
        t.0
    }
}

impl std::fmt::Display for ThreatLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The rules file as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutbreakRulesFile {
    /// Version or serial of this rule set, shown by `outbreakstatus`.
    pub version: String,
    /// The rules (`[[rule]]` tables).
    #[serde(default, rename = "rule")]
    pub rules: Vec<OutbreakRuleSpec>,
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutbreakRuleSpec {
    /// Unique id, shown in logs, "why held" and manage-by-rule.
    pub id: String,
    /// What the threat is.
    #[serde(default)]
    pub description: String,
    /// 1 to 5.
    pub threat_level: u8,
    /// True file types (or groups) of an attachment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_type: Vec<String>,
    /// Globs over an attachment's declared filename.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachment_name: Vec<String>,
    /// SHA-256 of a part's decoded content, hex.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sha256: Vec<String>,
    /// Domains of URLs in the message; each also matches its subdomains.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub url_domain: Vec<String>,
    /// Regexes over the decoded text parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub body_regex: Vec<String>,
}

#[derive(Debug, Clone)]
struct Rule {
    id: String,
    level: ThreatLevel,
    types: Option<TypeSet>,
    names: Vec<Glob>,
    hashes: Vec<String>,
    domains: Vec<String>,
    bodies: Vec<Regex>,
}

/// A compiled, versioned rule set.
#[derive(Debug, Clone)]
pub struct OutbreakRules {
    version: String,
    rules: Vec<Rule>,
}

/// What the rules found in one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutbreakResult {
    /// Highest threat level among the matching rules; `None` when nothing matched.
    pub level: Option<ThreatLevel>,
    /// Ids of the matching rules, in file order.
    pub rules: Vec<String>,
    /// Version of the rule set that produced this result.
    pub version: String,
}

impl OutbreakResult {
    /// Whether the message reached `threshold`.
    pub fn at_or_above(&self, threshold: ThreatLevel) -> bool {
        self.level.is_some_and(|l| l >= threshold)
    }
}

impl OutbreakRules {
    /// Compiles a parsed rules file.
    pub fn compile(file: OutbreakRulesFile) -> Result<OutbreakRules, RuleError> {
        if file.version.trim().is_empty() {
            return Err(RuleError::new(
                "outbreak rules file",
                "",
                "version",
                "must not be empty; use a serial such as \"2025-06-10.1\"",
            ));
        }
        let mut rules: Vec<Rule> = Vec::with_capacity(file.rules.len());
        for spec in file.rules {
            let err = |field: String, problem: String| {
                RuleError::new("outbreak rule", &spec.id, field, problem)
            };
            if spec.id.trim().is_empty() {
                return Err(err("id".into(), "must not be empty".into()));
            }
            if rules.iter().any(|r| r.id == spec.id) {
                return Err(err("id".into(), "another rule has the same id".into()));
            }
            let level = ThreatLevel::try_from(spec.threat_level).map_err(|_| {
                err(
                    "threat_level".into(),
                    format!("{} is not allowed; use 1 to 5", spec.threat_level),
                )
            })?;
            let types = if spec.attachment_type.is_empty() {
                None
            } else {
                Some(
                    TypeSet::parse(&spec.attachment_type)
                        .map_err(|p| err("attachment_type".into(), p))?,
                )
            };
            let names = spec
                .attachment_name
                .iter()
                .enumerate()
                .map(|(i, g)| Glob::new(g).map_err(|p| err(format!("attachment_name[{i}]"), p)))
                .collect::<Result<Vec<_>, _>>()?;
            let hashes = spec
                .sha256
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let h = h.trim().to_ascii_lowercase();
                    if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        Ok(h)
                    } else {
                        Err(err(
                            format!("sha256[{i}]"),
                            format!("{h:?} is not 64 hexadecimal digits"),
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let domains = spec
                .url_domain
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let d = d.trim().trim_end_matches('.').to_lowercase();
                    let ok = !d.is_empty()
                        && !d.starts_with('.')
                        && !d.contains("..")
                        && d.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '.');
                    if ok {
                        Ok(d)
                    } else {
                        Err(err(
                            format!("url_domain[{i}]"),
                            format!("{d:?} is not a domain name (letters, digits, '-' and '.', no scheme or path)"),
                        ))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let bodies = spec
                .body_regex
                .iter()
                .enumerate()
                .map(|(i, r)| compile_regex(r).map_err(|p| err(format!("body_regex[{i}]"), p)))
                .collect::<Result<Vec<_>, _>>()?;
            if types.is_none()
                && names.is_empty()
                && hashes.is_empty()
                && domains.is_empty()
                && bodies.is_empty()
            {
                return Err(err(
                    "(criteria)".into(),
                    "set at least one of attachment_type, attachment_name, sha256, url_domain, body_regex".into(),
                ));
            }
            rules.push(Rule {
                id: spec.id,
                level,
                types,
                names,
                hashes,
                domains,
                bodies,
            });
        }
        Ok(OutbreakRules {
            version: file.version,
            rules,
        })
    }

    /// The version of the loaded rule set.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Ids and threat levels of the loaded rules, in file order.
    pub fn rules(&self) -> impl Iterator<Item = (&str, ThreatLevel)> {
        self.rules.iter().map(|r| (r.id.as_str(), r.level))
    }

    /// Runs every rule over `msg`.
    pub fn evaluate(&self, msg: &ScannedMessage) -> OutbreakResult {
        let mut result = OutbreakResult {
            version: self.version.clone(),
            ..OutbreakResult::default()
        };
        for rule in &self.rules {
            if rule.matches(msg) {
                result.level = result.level.max(Some(rule.level));
                result.rules.push(rule.id.clone());
            }
        }
        result
    }

    /// The outbreak verdict at `threshold`: unscannable stays unscannable; a message below
    /// the threshold is clean.
    pub fn verdict(
        &self,
        scan: &Result<ScannedMessage, Unscannable>,
        threshold: ThreatLevel,
    ) -> Verdict<OutbreakResult> {
        match scan {
            Err(e) => Verdict::Unscannable {
                reason: e.reason.clone(),
            },
            Ok(msg) => {
                let result = self.evaluate(msg);
                if result.at_or_above(threshold) {
                    Verdict::Matched(result)
                } else {
                    Verdict::Clean
                }
            }
        }
    }
}

impl Rule {
    fn matches(&self, msg: &ScannedMessage) -> bool {
        let has_part_criteria =
            self.types.is_some() || !self.names.is_empty() || !self.hashes.is_empty();
        if has_part_criteria {
            let part_hit = msg.parts.iter().any(|p| {
                self.types
                    .as_ref()
                    .is_none_or(|t| p.attachment && t.contains(p.file_type))
                    && (self.names.is_empty()
                        || p.filename
                            .as_deref()
                            .is_some_and(|f| self.names.iter().any(|g| g.matches(f))))
                    && (self.hashes.is_empty() || self.hashes.contains(&p.sha256))
            });
            if !part_hit {
                return false;
            }
        }
        if !self.domains.is_empty()
            && !msg.domains.iter().any(|host| {
                self.domains.iter().any(|d| {
                    host == d
                        || host
                            .strip_suffix(d.as_str())
                            .is_some_and(|prefix| prefix.ends_with('.'))
                })
            })
        {
            return false;
        }
        if !self.bodies.is_empty()
            && !msg
                .texts()
                .any(|t| self.bodies.iter().any(|r| r.is_match(t)))
        {
            return false;
        }
        true
    }
}

/// How long a message stays in the Outbreak quarantine, by threat level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Retention {
    /// Level 1; default 1 hour.
    pub level_1: RetentionTime,
    /// Level 2; default 3 hours.
    pub level_2: RetentionTime,
    /// Level 3; default 6 hours.
    pub level_3: RetentionTime,
    /// Level 4; default 12 hours.
    pub level_4: RetentionTime,
    /// Level 5; default 1 day.
    pub level_5: RetentionTime,
}

impl Default for Retention {
    fn default() -> Retention {
        let h = |n: u64| RetentionTime(Duration::from_secs(n * 3600));
        Retention {
            level_1: h(1),
            level_2: h(3),
            level_3: h(6),
            level_4: h(12),
            level_5: h(24),
        }
    }
}

impl Retention {
    /// The retention for a threat level.
    pub fn for_level(&self, level: ThreatLevel) -> Duration {
        match level.0 {
            1 => self.level_1.0,
            2 => self.level_2.0,
            3 => self.level_3.0,
            4 => self.level_4.0,
            _ => self.level_5.0,
        }
    }
}

/// A duration in the configuration: a string with a unit (`"90m"`, `"12h"`, `"2d"`,
/// `"3600s"`) or a bare number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RetentionTime(pub Duration);

impl RetentionTime {
    /// Parses `"90m"`, `"12h"`, `"2d"`, `"1w"`, `"3600s"` or `"3600"`.
    pub fn parse(s: &str) -> Result<RetentionTime, String> {
        let s = s.trim();
        let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
            Some(p) => (&s[..p], &s[p..]),
            None => (s, "s"),
        };
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a duration; use e.g. \"90m\", \"12h\", \"2d\""))?;
        let secs = match unit.trim() {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?}; use s, m, h, d or w"
                ))
            }
        };
        if n == 0 {
            return Err("retention must be longer than zero".into());
        }
        n.checked_mul(secs)
            .map(|t| RetentionTime(Duration::from_secs(t)))
            .ok_or_else(|| format!("{s:?} is too long"))
    }
}

impl Serialize for RetentionTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let secs = self.0.as_secs();
        let text = if secs.is_multiple_of(86_400) {
            format!("{}d", secs / 86_400)
        } else if secs.is_multiple_of(3600) {
            format!("{}h", secs / 3600)
        } else if secs.is_multiple_of(60) {
            format!("{}m", secs / 60)
        } else {
            format!("{secs}s")
        };
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for RetentionTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RetentionTime, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RetentionTime;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration such as \"12h\" or a number of seconds")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RetentionTime, E> {
                RetentionTime::parse(v).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RetentionTime, E> {
                RetentionTime::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RetentionTime, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("retention must be positive"))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The outbreak part of a mail policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutbreakPolicy {
    /// Messages at or above this level go to the Outbreak quarantine.
    pub threshold: ThreatLevel,
    /// Retention by threat level (defaults per [`Retention`]).
    #[serde(default)]
    pub retention: Retention,
}

impl OutbreakPolicy {
    /// How long to hold a message with this result, or `None` when it is below threshold.
    pub fn hold_for(&self, result: &OutbreakResult) -> Option<Duration> {
        let level = result.level?;
        (level >= self.threshold).then(|| self.retention.for_level(level))
    }
}

#[cfg(test)]
mod tests;
