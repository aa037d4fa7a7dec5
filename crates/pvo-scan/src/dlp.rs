//! Data loss prevention: built-in detectors for payment cards, IBANs and US social security
//! numbers, custom dictionaries and regexes, and a severity from the number of matches.
//!
//! A [`DlpPolicy`] (serde, usually from TOML) lists its detectors, the match counts at which
//! each severity starts, and the actions for each severity:
//!
//! ```toml
//! [[dlp]]
//! name = "pci"
//! detectors = ["payment_card", "iban", "us_ssn",
//!              { dictionary = { name = "projects", words = ["Project Falcon", "codename"] } },
//!              { regex = { name = "employee_id", pattern = "EMP-\\d{6}" } }]
//! thresholds = { low = 1, medium = 5, high = 10, critical = 20 }   # the defaults
//! actions = { low = [{ add_header = { name = "X-DLP", value = "low" } }],
//!             high = [{ quarantine = "Policy" }], critical = ["drop"] }
//! ```
//!
//! [`DlpEngine::scan`] counts every match in the subject and in every decoded text part
//! (bodies, HTML as text, text attachments), takes the highest severity whose threshold the
//! total reaches, and returns that severity's actions. Results carry at most
//! [`MAX_SAMPLES`] masked samples per detector (`4111 **** **** 1111`,
//! `DE89 **** **** **** **30 00`, `***-**-6789`); the full value never leaves this module.
//!
//! The built-in detectors are hand-written scanners, not regexes, so that each candidate
//! can be validated on the spot: card numbers must pass the Luhn check and start with a
//! known issuer prefix for their length, and all-same-digit numbers are rejected; IBANs must
//! have the registered length for their country and pass the mod-97 check; SSNs must not use
//! the never-issued area (000, 666, 900–999), group (00) or serial (0000) numbers or the
//! well-known advertising numbers. Candidates must stand alone: a digit run glued to letters
//! (`ID4111111111111111`) is not a card.
//!
//! # Security
//!
//! Scanned text is attacker-controlled. All scanners are single forward passes over the
//! bytes, linear in the text length; custom regexes are compiled once with a size limit and
//! run with the `regex` crate's linear-time engine.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::bytescan::{find_from, is_digit};
use crate::error::compile_regex;
use crate::mime::{ScannedMessage, Unscannable};
use crate::verdict::{validate_actions, Action, Verdict};
use crate::RuleError;

/// Most masked samples kept per detector.
pub const MAX_SAMPLES: usize = 3;

/// A DLP policy as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpPolicy {
    /// Unique name, shown in logs and in "why held".
    pub name: String,
    /// Detectors to run.
    pub detectors: Vec<DetectorSpec>,
    /// Match counts at which each severity starts.
    #[serde(default)]
    pub thresholds: Thresholds,
    /// Actions per severity.
    #[serde(default)]
    pub actions: SeverityActions,
}

/// A detector as written in the configuration: `"payment_card"`, `"iban"`, `"us_ssn"`,
/// `{ dictionary = { name, words } }` or `{ regex = { name, pattern } }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DetectorSpec {
    /// Payment card numbers (Luhn and issuer prefix checked).
    PaymentCard,
    /// International bank account numbers (country length and mod-97 checked).
    Iban,
    /// US social security numbers (`AAA-GG-SSSS` or `AAA GG SSSS`, invalid ranges excluded).
    UsSsn,
    /// Whole words or phrases, case-insensitive.
    Dictionary {
        /// Detector name in results.
        name: String,
        /// Words or phrases; whitespace inside a phrase matches any run of whitespace.
        words: Vec<String>,
    },
    /// A custom regex; every non-overlapping match counts once.
    Regex {
        /// Detector name in results.
        name: String,
        /// The regex.
        pattern: String,
    },
}

/// Match counts at which each severity starts (each at least the one before; `low` ≥ 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Default 1.
    pub low: u32,
    /// Default 5.
    pub medium: u32,
    /// Default 10.
    pub high: u32,
    /// Default 20.
    pub critical: u32,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            low: 1,
            medium: 5,
            high: 10,
            critical: 20,
        }
    }
}

impl Thresholds {
    /// The severity a total match count reaches, if any.
    pub fn severity(&self, total: u32) -> Option<Severity> {
        if total >= self.critical {
            Some(Severity::Critical)
        } else if total >= self.high {
            Some(Severity::High)
        } else if total >= self.medium {
            Some(Severity::Medium)
        } else if total >= self.low {
            Some(Severity::Low)
        } else {
            None
        }
    }
}

/// Actions per severity; a severity without actions just reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeverityActions {
    /// Actions at low severity.
    pub low: Vec<Action>,
    /// Actions at medium severity.
    pub medium: Vec<Action>,
    /// Actions at high severity.
    pub high: Vec<Action>,
    /// Actions at critical severity.
    pub critical: Vec<Action>,
}

impl SeverityActions {
    fn for_severity(&self, s: Severity) -> &[Action] {
        match s {
            Severity::Low => &self.low,
            Severity::Medium => &self.medium,
            Severity::High => &self.high,
            Severity::Critical => &self.critical,
        }
    }
}

/// DLP severity, ordered from low to critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// At least `thresholds.low` matches.
    Low,
    /// At least `thresholds.medium` matches.
    Medium,
    /// At least `thresholds.high` matches.
    High,
    /// At least `thresholds.critical` matches.
    Critical,
}

/// Matches of one detector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorHits {
    /// `payment_card`, `iban`, `us_ssn`, or the custom detector's name.
    pub detector: String,
    /// Number of matches.
    pub count: u32,
    /// Up to [`MAX_SAMPLES`] distinct masked samples.
    pub samples: Vec<String>,
}

/// The result of one DLP policy on one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DlpResult {
    /// The policy's name.
    pub policy: String,
    /// Severity reached, if any.
    pub severity: Option<Severity>,
    /// Total matches over all detectors.
    pub total: u32,
    /// Detectors with at least one match.
    pub detectors: Vec<DetectorHits>,
    /// The actions for `severity`.
    pub actions: Vec<Action>,
}

/// A compiled DLP policy.
#[derive(Debug, Clone)]
pub struct DlpEngine {
    name: String,
    detectors: Vec<Detector>,
    thresholds: Thresholds,
    actions: SeverityActions,
}

#[derive(Debug, Clone)]
enum Detector {
    Card,
    Iban,
    Ssn,
    /// A custom detector; `masked` says whether samples are masked (regex) or shown as the
    /// dictionary word they are.
    Custom {
        name: String,
        regex: Regex,
        masked: bool,
    },
}

impl Detector {
    fn name(&self) -> &str {
        match self {
            Detector::Card => "payment_card",
            Detector::Iban => "iban",
            Detector::Ssn => "us_ssn",
            Detector::Custom { name, .. } => name,
        }
    }

    /// Calls `hit` with the masked form of every match in `text`.
    fn find(&self, text: &str, hit: &mut dyn FnMut(&dyn Fn() -> String)) {
        match self {
            Detector::Card => find_cards(text, |m| hit(&|| mask_keep(m, 4, 4))),
            Detector::Iban => find_ibans(text, |m| hit(&|| mask_keep(m, 4, 4))),
            Detector::Ssn => find_ssns(text, |m| hit(&|| mask_keep(m, 0, 4))),
            Detector::Custom { regex, masked, .. } => {
                for m in regex.find_iter(text) {
                    if m.is_empty() {
                        continue;
                    }
                    let s = m.as_str();
                    if *masked {
                        hit(&|| mask_chars(s));
                    } else {
                        hit(&|| s.to_string());
                    }
                }
            }
        }
    }
}

impl DlpEngine {
    /// Compiles a policy.
    pub fn new(policy: DlpPolicy) -> Result<DlpEngine, RuleError> {
        let name = policy.name.clone();
        let err =
            |field: String, problem: String| RuleError::new("dlp policy", &name, field, problem);
        if name.trim().is_empty() {
            return Err(err("name".into(), "must not be empty".into()));
        }
        if policy.detectors.is_empty() {
            return Err(err("detectors".into(), "list at least one detector".into()));
        }
        let mut detectors = Vec::with_capacity(policy.detectors.len());
        for (i, spec) in policy.detectors.iter().enumerate() {
            let field = |sub: &str| format!("detectors[{i}]{sub}");
            let detector = match spec {
                DetectorSpec::PaymentCard => Detector::Card,
                DetectorSpec::Iban => Detector::Iban,
                DetectorSpec::UsSsn => Detector::Ssn,
                DetectorSpec::Dictionary { name, words } => {
                    if name.trim().is_empty() {
                        return Err(err(field(".dictionary.name"), "must not be empty".into()));
                    }
                    let words: Vec<&str> = words
                        .iter()
                        .map(|w| w.trim())
                        .filter(|w| !w.is_empty())
                        .collect();
                    if words.is_empty() {
                        return Err(err(
                            field(".dictionary.words"),
                            "list at least one word".into(),
                        ));
                    }
                    let alternatives: Vec<String> = words.iter().map(|w| word_pattern(w)).collect();
                    let regex = compile_regex(&format!("(?i)(?:{})", alternatives.join("|")))
                        .map_err(|p| err(field(".dictionary.words"), p))?;
                    Detector::Custom {
                        name: name.clone(),
                        regex,
                        masked: false,
                    }
                }
                DetectorSpec::Regex { name, pattern } => {
                    if name.trim().is_empty() {
                        return Err(err(field(".regex.name"), "must not be empty".into()));
                    }
                    let regex =
                        compile_regex(pattern).map_err(|p| err(field(".regex.pattern"), p))?;
                    if regex.is_match("") {
                        return Err(err(
                            field(".regex.pattern"),
                            format!("regex {pattern:?} matches the empty string"),
                        ));
                    }
                    Detector::Custom {
                        name: name.clone(),
                        regex,
                        masked: true,
                    }
                }
            };
            if detectors
                .iter()
                .any(|d: &Detector| d.name() == detector.name())
            {
                return Err(err(
                    field(""),
                    format!("detector {:?} is listed twice", detector.name()),
                ));
            }
            detectors.push(detector);
        }
        let t = policy.thresholds;
        if t.low == 0 || t.low > t.medium || t.medium > t.high || t.high > t.critical {
            return Err(err(
                "thresholds".into(),
                format!(
                    "need 1 <= low <= medium <= high <= critical, got {}/{}/{}/{}",
                    t.low, t.medium, t.high, t.critical
                ),
            ));
        }
        let a = &policy.actions;
        for (field, list) in [
            ("actions.low", &a.low),
            ("actions.medium", &a.medium),
            ("actions.high", &a.high),
            ("actions.critical", &a.critical),
        ] {
            validate_actions("dlp policy", &name, field, list)?;
        }
        Ok(DlpEngine {
            name,
            detectors,
            thresholds: t,
            actions: policy.actions,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Scans the subject and every text part of `msg`.
    pub fn scan(&self, msg: &ScannedMessage) -> DlpResult {
        let texts = std::iter::once(msg.subject.as_str()).chain(msg.texts());
        self.scan_texts(texts)
    }

    /// Scans arbitrary texts (the subject and parts of a message, or anything else).
    pub fn scan_texts<'a>(&self, texts: impl Iterator<Item = &'a str> + Clone) -> DlpResult {
        let mut hits = Vec::new();
        let mut total = 0u32;
        for detector in &self.detectors {
            let mut count = 0u32;
            let mut samples: Vec<String> = Vec::new();
            for text in texts.clone() {
                detector.find(text, &mut |masked| {
                    count = count.saturating_add(1);
                    if samples.len() < MAX_SAMPLES {
                        let s = masked();
                        if !samples.contains(&s) {
                            samples.push(s);
                        }
                    }
                });
            }
            if count > 0 {
                total = total.saturating_add(count);
                hits.push(DetectorHits {
                    detector: detector.name().to_string(),
                    count,
                    samples,
                });
            }
        }
        let severity = self.thresholds.severity(total);
        DlpResult {
            policy: self.name.clone(),
            severity,
            total,
            detectors: hits,
            actions: severity
                .map(|s| self.actions.for_severity(s).to_vec())
                .unwrap_or_default(),
        }
    }

    /// The DLP verdict for a scan result: unscannable stays unscannable, no severity is clean.
    pub fn verdict(&self, scan: &Result<ScannedMessage, Unscannable>) -> Verdict<DlpResult> {
        match scan {
            Err(e) => Verdict::Unscannable {
                reason: e.reason.clone(),
            },
            Ok(msg) => {
                let result = self.scan(msg);
                if result.severity.is_none() {
                    Verdict::Clean
                } else {
                    Verdict::Matched(result)
                }
            }
        }
    }
}

/// A whole-word regex for a dictionary entry. `\b` only makes sense next to a word
/// character, so an entry like `C++` gets a boundary at the start only.
fn word_pattern(word: &str) -> String {
    let escaped: Vec<String> = word.split_whitespace().map(regex::escape).collect();
    let body = escaped.join(r"\s+");
    let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    let start = if is_word(word.chars().next()) {
        r"\b"
    } else {
        ""
    };
    let end = if is_word(word.chars().last()) {
        r"\b"
    } else {
        ""
    };
    format!("{start}{body}{end}")
}

/// Replaces every alphanumeric character except the first `keep_start` and the last
/// `keep_end` with `*`, keeping separators.
fn mask_keep(s: &str, keep_start: usize, keep_end: usize) -> String {
    let total = s.chars().filter(|c| c.is_ascii_alphanumeric()).count();
    let mut seen = 0;
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                seen += 1;
                if seen <= keep_start || seen > total.saturating_sub(keep_end) {
                    c
                } else {
                    '*'
                }
            } else {
                c
            }
        })
        .collect()
}

/// Masks a custom-regex match: the first and last two characters stay when the match is
/// long enough for that to hide most of it.
fn mask_chars(s: &str) -> String {
    let n = s.chars().count();
    let keep = if n >= 8 { 2 } else { 0 };
    s.chars()
        .enumerate()
        .map(|(i, c)| if i < keep || i >= n - keep { c } else { '*' })
        .collect()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Finds payment card numbers: 13–19 digits, contiguous or in groups separated by one
/// space or dash (the same separator throughout), in the layouts cards are printed in.
fn find_cards(text: &str, mut hit: impl FnMut(&str)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        // A card starts at a digit; the bytes before the next one cannot start anything.
        match find_from(b, i, is_digit) {
            Some(d) => i = d,
            None => break,
        }
        // The run of digit groups starting here; most runs (dates, amounts) are too short
        // to hold a card and are skipped without collecting anything.
        let start = i;
        let mut j = i;
        let mut digits = 0;
        loop {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
                digits += 1;
            }
            if j + 1 < b.len() && (b[j] == b' ' || b[j] == b'-') && b[j + 1].is_ascii_digit() {
                j += 1;
            } else {
                break;
            }
        }
        let end = j;
        i = end;
        if digits < 13 {
            continue;
        }
        let mut groups: Vec<(usize, usize)> = Vec::new(); // (start, end) of each group
        let mut seps: Vec<u8> = Vec::new();
        let mut k = start;
        while k < end {
            let g = k;
            while k < end && b[k].is_ascii_digit() {
                k += 1;
            }
            groups.push((g, k));
            if k < end {
                seps.push(b[k]);
                k += 1;
            }
        }
        // Glued to a word on either side: an identifier, not a card.
        let before_ok = start == 0 || !(is_word_byte(b[start - 1]) || b[start - 1] == b'.');
        let after_ok = end >= b.len()
            || !(is_word_byte(b[end])
                || (b[end] == b'.' && b.get(end + 1).is_some_and(u8::is_ascii_digit)));
        if !before_ok || !after_ok {
            continue;
        }
        let mut g = 0;
        while g < groups.len() {
            let mut found = None;
            for k in (1..=groups.len() - g).rev() {
                let window = &groups[g..g + k];
                let window_seps = &seps[g..g + k - 1];
                if card_layout(window, window_seps) {
                    let digits: Vec<u8> = text[window[0].0..window[k - 1].1]
                        .bytes()
                        .filter(u8::is_ascii_digit)
                        .map(|d| d - b'0')
                        .collect();
                    if valid_card(&digits) {
                        found = Some(k);
                        break;
                    }
                }
            }
            match found {
                Some(k) => {
                    hit(&text[groups[g].0..groups[g + k - 1].1]);
                    g += k;
                }
                None => g += 1,
            }
        }
    }
}

/// Whether digit groups form a printed card number layout.
fn card_layout(groups: &[(usize, usize)], seps: &[u8]) -> bool {
    let lens: Vec<usize> = groups.iter().map(|(s, e)| e - s).collect();
    let digits: usize = lens.iter().sum();
    if !(13..=19).contains(&digits) {
        return false;
    }
    if lens.len() == 1 {
        return true;
    }
    if seps.iter().any(|&s| s != seps[0]) {
        return false;
    }
    let (last, head) = lens.split_last().unwrap_or((&0, &[]));
    let fours = head.iter().all(|&l| l == 4) && (1..=4).contains(last);
    fours || lens == [4, 6, 5] || lens == [4, 6, 4]
}

/// Luhn, issuer prefix for the length, and not all one digit.
pub(crate) fn valid_card(d: &[u8]) -> bool {
    if !(13..=19).contains(&d.len()) || d.iter().all(|&x| x == d[0]) {
        return false;
    }
    let prefix = |n: usize| d[..n].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    let len = d.len();
    let brand_ok = (d[0] == 4 && matches!(len, 13 | 16 | 19)) // Visa
        || (((51..=55).contains(&prefix(2)) || (2221..=2720).contains(&prefix(4))) && len == 16) // Mastercard
        || (matches!(prefix(2), 34 | 37) && len == 15) // American Express
        || ((prefix(4) == 6011 || (644..=649).contains(&prefix(3)) || prefix(2) == 65)
            && (16..=19).contains(&len)) // Discover
        || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len)) // JCB
        || (((300..=305).contains(&prefix(3)) || matches!(prefix(2), 36 | 38 | 39))
            && (14..=19).contains(&len)) // Diners Club
        || (prefix(2) == 62 && (16..=19).contains(&len)); // UnionPay
    brand_ok && luhn(d)
}

fn luhn(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 {
                    y - 9
                } else {
                    y
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Registered IBAN lengths: all SEPA countries and the other common IBAN countries.
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// Finds IBANs, written contiguously or with single spaces (the printed groups of four).
fn find_ibans(text: &str, mut hit: impl FnMut(&str)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 4 <= b.len() {
        // An IBAN has its check digits at i + 2: no position before the next digit but two
        // can start one.
        match find_from(b, i + 2, is_digit) {
            Some(d) => i = d - 2,
            None => break,
        }
        if i + 4 > b.len() {
            break;
        }
        let candidate = b[i].is_ascii_uppercase()
            && b[i + 1].is_ascii_uppercase()
            && b[i + 2].is_ascii_digit()
            && b[i + 3].is_ascii_digit()
            && (i == 0 || !is_word_byte(b[i - 1]));
        let want = if candidate {
            IBAN_LENGTHS
                .iter()
                .find(|(cc, _)| cc[..] == b[i..i + 2])
                .map(|&(_, len)| len)
        } else {
            None
        };
        let Some(want) = want else {
            i += 1;
            continue;
        };
        let mut chars: Vec<u8> = Vec::with_capacity(want);
        let mut j = i;
        while j < b.len() && chars.len() < want {
            let c = b[j];
            if c.is_ascii_uppercase() || c.is_ascii_digit() {
                chars.push(c);
                j += 1;
            } else if c == b' '
                && j + 1 < b.len()
                && b[j + 1].is_ascii_alphanumeric()
                && !chars.is_empty()
            {
                j += 1;
            } else {
                break;
            }
        }
        let complete = chars.len() == want && (j >= b.len() || !is_word_byte(b[j]));
        if complete && iban_checksum(&chars) {
            hit(&text[i..j]);
            i = j;
        } else {
            i += 1;
        }
    }
}

/// ISO 13616 mod-97: move the first four characters to the end, letters count as 10–35.
pub(crate) fn iban_checksum(chars: &[u8]) -> bool {
    if chars.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

/// Finds US SSNs written `AAA-GG-SSSS` or `AAA GG SSSS`.
fn find_ssns(text: &str, mut hit: impl FnMut(&str)) {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 11 <= b.len() {
        // An SSN starts at a digit.
        match find_from(b, i, is_digit) {
            Some(d) => i = d,
            None => break,
        }
        if i + 11 > b.len() {
            break;
        }
        let w = &b[i..i + 11];
        let shape = w[..3].iter().all(u8::is_ascii_digit)
            && (w[3] == b'-' || w[3] == b' ')
            && w[4..6].iter().all(u8::is_ascii_digit)
            && w[6] == w[3]
            && w[7..].iter().all(u8::is_ascii_digit);
        // Not part of a longer number such as a phone number or an account id.
        let glued = |k: Option<&u8>, next: Option<&u8>| match k {
            Some(&c) if is_word_byte(c) => true,
            Some(&b'-') => next.is_some_and(u8::is_ascii_digit),
            _ => false,
        };
        let before = i.checked_sub(1).map(|p| &b[p]);
        let before2 = i.checked_sub(2).map(|p| &b[p]);
        if shape && !glued(before, before2) && !glued(b.get(i + 11), b.get(i + 12)) && valid_ssn(w)
        {
            hit(&text[i..i + 11]);
            i += 11;
        } else {
            i += 1;
        }
    }
}

/// SSA rules: no area 000, 666 or 900–999, no group 00, no serial 0000, and not one of the
/// numbers published in advertising.
pub(crate) fn valid_ssn(w: &[u8]) -> bool {
    let num =
        |r: std::ops::Range<usize>| w[r].iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
    let (area, group, serial) = (num(0..3), num(4..6), num(7..11));
    let famous = [(78, 5, 1120), (219, 9, 9999), (123, 45, 6789)];
    area != 0
        && area != 666
        && area < 900
        && group != 0
        && serial != 0
        && !famous.contains(&(area, group, serial))
}

#[cfg(test)]
mod tests;
