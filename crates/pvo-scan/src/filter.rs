//! Content filters: serde-loadable rules of conditions and actions, evaluated over a
//! [`ScannedMessage`] and its envelope.
//!
//! A rule ([`FilterRule`]) has a `name`, one condition tree and a list of actions. In TOML:
//!
//! ```toml
//! [[filter]]
//! name = "exe_attachments"
//! conditions = { any = [
//!     { attachment_type = ["exe", "msi"] },
//!     { all = [ { attachment_name = "*.scr" }, { sender_glob = "*@partner.example" } ] },
//! ] }
//! actions = [{ quarantine = "Policy" }, { add_header = { name = "X-PVO-Filter", value = "exe" } }]
//! ```
//!
//! Conditions combine with `all` (and), `any` (or) and `not`, nested freely; `all = []` is
//! always true. The leaves are listed on [`Condition`]. Regexes use the `regex` crate syntax
//! and are case-sensitive unless they start with `(?i)`; `*_contains` conditions and globs are
//! case-insensitive. Everything is compiled once in [`FilterSet::new`], which rejects bad
//! regexes, globs, file types and action arguments with a [`RuleError`] naming the rule and
//! the field path (`conditions.any[1].all[0].attachment_name`).
//!
//! Evaluation follows the appliance: filters run in order, every matching filter contributes
//! its actions, and a matching filter with a final action (`deliver`, `drop`, `bounce`) stops
//! the evaluation of the filters after it. Nothing is executed here; [`FilterOutcome`] lists
//! the matching filters, the evidence for each (the condition and the text it matched, for
//! the quarantine's "why held" display) and their actions.
//!
//! # Security
//!
//! Rules are trusted configuration; the message text they run over is not. Regexes run on
//! the `regex` crate's linear-time engines with a compiled-size limit, globs on a
//! non-recursive matcher bounded by pattern length times text length, and evidence
//! snippets are cut to 100 characters so a hostile body cannot blow up the stored
//! verdict. Action arguments that end up in the message (`add_header`, `modify_header`) are
//! rejected at load time if they contain CR, LF or NUL, so no rule can inject header lines.

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::error::compile_regex;
use crate::filetype::TypeSet;
use crate::glob::Glob;
use crate::mime::{ScannedMessage, Unscannable};
use crate::verdict::{validate_actions, Action, Verdict};
use crate::RuleError;

/// A content filter as written in the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    /// Unique name, shown in logs (`content filter:NAME`) and in "why held".
    pub name: String,
    /// The condition tree.
    pub conditions: Condition,
    /// What to do when the conditions hold.
    pub actions: Vec<Action>,
}

/// A condition as written in the configuration: one-key tables such as
/// `{ subject_contains = "invoice" }` or `{ all = [ ... ] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// All of the conditions hold (true when empty).
    All(Vec<Condition>),
    /// At least one of the conditions holds (false when empty).
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
    /// The envelope sender matches a glob (case-insensitive).
    SenderGlob(String),
    /// The envelope sender matches a regex.
    SenderRegex(String),
    /// At least one envelope recipient matches a glob.
    AnyRecipientGlob(String),
    /// At least one envelope recipient matches a regex.
    AnyRecipientRegex(String),
    /// Every envelope recipient matches a glob (false when there are none).
    AllRecipientsGlob(String),
    /// Every envelope recipient matches a regex (false when there are none).
    AllRecipientsRegex(String),
    /// A top-level header field called `name` (case-insensitive) has a decoded value
    /// matching `regex`.
    Header {
        /// Field name.
        name: String,
        /// Regex over the decoded, unfolded value.
        regex: String,
    },
    /// The decoded subject matches a regex.
    SubjectRegex(String),
    /// The decoded subject contains the text (case-insensitive).
    SubjectContains(String),
    /// A decoded text part (body, HTML as text, or text attachment) contains the text
    /// (case-insensitive).
    BodyContains(String),
    /// A decoded text part matches a regex.
    BodyRegex(String),
    /// An attachment's declared filename matches a glob.
    AttachmentName(String),
    /// An attachment's true file type (by content) is one of these types or groups.
    AttachmentType(Vec<String>),
    /// An attachment's decoded size is larger than this many bytes.
    AttachmentSizeOver(u64),
    /// The raw message is larger than this many bytes.
    MessageSizeOver(u64),
}

/// The SMTP envelope of the message being filtered.
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// `MAIL FROM` address (empty for the null sender).
    pub sender: &'a str,
    /// `RCPT TO` addresses.
    pub recipients: &'a [String],
}

/// Why one condition held: the condition as written and the text it matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The condition, e.g. `subject_contains "invoice"`.
    pub condition: String,
    /// The matched text, shortened to at most 100 characters.
    pub matched: String,
}

/// One filter that matched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterMatch {
    /// The filter's name.
    pub filter: String,
    /// The conditions that made it match.
    pub evidence: Vec<Evidence>,
    /// Its actions.
    pub actions: Vec<Action>,
}

/// The result of running a [`FilterSet`] over one message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterOutcome {
    /// Matching filters in evaluation order.
    pub matches: Vec<FilterMatch>,
}

impl FilterOutcome {
    /// All actions of all matching filters, in order.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.matches.iter().flat_map(|m| m.actions.iter())
    }

    /// The final action (`deliver`, `drop`, `bounce`) that stopped evaluation, if any.
    pub fn final_action(&self) -> Option<&Action> {
        self.actions().find(|a| a.is_final())
    }
}

/// A compiled, ordered list of content filters.
#[derive(Debug, Clone)]
pub struct FilterSet {
    filters: Vec<Compiled>,
}

#[derive(Debug, Clone)]
struct Compiled {
    name: String,
    condition: Cond,
    actions: Vec<Action>,
}

#[derive(Debug, Clone)]
enum Pattern {
    Glob(Glob),
    Regex(Regex),
}

impl Pattern {
    fn matches(&self, text: &str) -> bool {
        match self {
            Pattern::Glob(g) => g.matches(text),
            Pattern::Regex(r) => r.is_match(text),
        }
    }
}

#[derive(Debug, Clone)]
enum Test {
    Sender(Pattern),
    AnyRecipient(Pattern),
    AllRecipients(Pattern),
    Header(String, Regex),
    Subject(Regex),
    Body(Regex),
    AttachmentName(Glob),
    AttachmentType(TypeSet),
    AttachmentSizeOver(u64),
    MessageSizeOver(u64),
}

#[derive(Debug, Clone)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>, String),
    Leaf(Test, String),
}

impl FilterSet {
    /// Compiles `rules` in order. Names must be unique and non-empty.
    pub fn new(rules: Vec<FilterRule>) -> Result<FilterSet, RuleError> {
        let mut filters: Vec<Compiled> = Vec::with_capacity(rules.len());
        for rule in rules {
            let err =
                |field: &str, problem: String| RuleError::new("filter", &rule.name, field, problem);
            if rule.name.trim().is_empty() {
                return Err(err("name", "must not be empty".into()));
            }
            if filters.iter().any(|f| f.name == rule.name) {
                return Err(err("name", "another filter has the same name".into()));
            }
            let condition = compile(&rule.conditions, "conditions").map_err(|(f, p)| err(&f, p))?;
            if rule.actions.is_empty() {
                return Err(err("actions", "at least one action is required".into()));
            }
            validate_actions("filter", &rule.name, "actions", &rule.actions)?;
            filters.push(Compiled {
                name: rule.name,
                condition,
                actions: rule.actions,
            });
        }
        Ok(FilterSet { filters })
    }

    /// Number of filters.
    pub fn len(&self) -> usize {
        self.filters.len()
    }

    /// Whether there are no filters.
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// Runs the filters over `msg`.
    pub fn evaluate(&self, envelope: &Envelope<'_>, msg: &ScannedMessage) -> FilterOutcome {
        let ctx = Ctx { envelope, msg };
        let mut outcome = FilterOutcome::default();
        let mut evidence = Vec::new();
        for filter in &self.filters {
            evidence.clear();
            if filter.condition.eval(&ctx, &mut evidence) {
                let last = filter.actions.iter().any(Action::is_final);
                outcome.matches.push(FilterMatch {
                    filter: filter.name.clone(),
                    evidence: std::mem::take(&mut evidence),
                    actions: filter.actions.clone(),
                });
                if last {
                    break;
                }
            }
        }
        outcome
    }

    /// The filter verdict for a scan result: unscannable stays unscannable, no match is
    /// clean.
    pub fn verdict(
        &self,
        envelope: &Envelope<'_>,
        scan: &Result<ScannedMessage, Unscannable>,
    ) -> Verdict<FilterOutcome> {
        match scan {
            Err(e) => Verdict::Unscannable {
                reason: e.reason.clone(),
            },
            Ok(msg) => {
                let outcome = self.evaluate(envelope, msg);
                if outcome.matches.is_empty() {
                    Verdict::Clean
                } else {
                    Verdict::Matched(outcome)
                }
            }
        }
    }
}

fn compile(c: &Condition, path: &str) -> Result<Cond, (String, String)> {
    let regex = |field: &str, pattern: &str| {
        compile_regex(pattern).map_err(|p| (format!("{path}.{field}"), p))
    };
    let glob =
        |field: &str, pattern: &str| Glob::new(pattern).map_err(|p| (format!("{path}.{field}"), p));
    let contains = |field: &str, text: &str| {
        if text.is_empty() {
            return Err((
                format!("{path}.{field}"),
                "text must not be empty".to_string(),
            ));
        }
        regex(field, &format!("(?i){}", regex::escape(text)))
    };
    let leaf = |test: Test, label: String| Ok(Cond::Leaf(test, label));
    match c {
        Condition::All(list) | Condition::Any(list) => {
            let key = if matches!(c, Condition::All(_)) {
                "all"
            } else {
                "any"
            };
            let mut out = Vec::with_capacity(list.len());
            for (i, sub) in list.iter().enumerate() {
                out.push(compile(sub, &format!("{path}.{key}[{i}]"))?);
            }
            Ok(if key == "all" {
                Cond::All(out)
            } else {
                Cond::Any(out)
            })
        }
        Condition::Not(inner) => Ok(Cond::Not(
            Box::new(compile(inner, &format!("{path}.not"))?),
            label(c),
        )),
        Condition::SenderGlob(p) => leaf(
            Test::Sender(Pattern::Glob(glob("sender_glob", p)?)),
            label(c),
        ),
        Condition::SenderRegex(p) => leaf(
            Test::Sender(Pattern::Regex(regex("sender_regex", p)?)),
            label(c),
        ),
        Condition::AnyRecipientGlob(p) => leaf(
            Test::AnyRecipient(Pattern::Glob(glob("any_recipient_glob", p)?)),
            label(c),
        ),
        Condition::AnyRecipientRegex(p) => leaf(
            Test::AnyRecipient(Pattern::Regex(regex("any_recipient_regex", p)?)),
            label(c),
        ),
        Condition::AllRecipientsGlob(p) => leaf(
            Test::AllRecipients(Pattern::Glob(glob("all_recipients_glob", p)?)),
            label(c),
        ),
        Condition::AllRecipientsRegex(p) => leaf(
            Test::AllRecipients(Pattern::Regex(regex("all_recipients_regex", p)?)),
            label(c),
        ),
        Condition::Header { name, regex: r } => {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err((
                    format!("{path}.header.name"),
                    format!("header name {name:?} must be printable ASCII without ':'"),
                ));
            }
            leaf(
                Test::Header(name.clone(), regex("header.regex", r)?),
                label(c),
            )
        }
        Condition::SubjectRegex(p) => leaf(Test::Subject(regex("subject_regex", p)?), label(c)),
        Condition::SubjectContains(t) => {
            leaf(Test::Subject(contains("subject_contains", t)?), label(c))
        }
        Condition::BodyContains(t) => leaf(Test::Body(contains("body_contains", t)?), label(c)),
        Condition::BodyRegex(p) => leaf(Test::Body(regex("body_regex", p)?), label(c)),
        Condition::AttachmentName(p) => {
            leaf(Test::AttachmentName(glob("attachment_name", p)?), label(c))
        }
        Condition::AttachmentType(types) => {
            let set = TypeSet::parse(types).map_err(|p| (format!("{path}.attachment_type"), p))?;
            if set.is_empty() {
                return Err((
                    format!("{path}.attachment_type"),
                    "list at least one file type".into(),
                ));
            }
            leaf(Test::AttachmentType(set), label(c))
        }
        Condition::AttachmentSizeOver(n) => leaf(Test::AttachmentSizeOver(*n), label(c)),
        Condition::MessageSizeOver(n) => leaf(Test::MessageSizeOver(*n), label(c)),
    }
}

/// The condition as the administrator wrote it, for evidence.
fn label(c: &Condition) -> String {
    match c {
        Condition::All(_) => "all".into(),
        Condition::Any(_) => "any".into(),
        Condition::Not(inner) => format!("not ({})", label(inner)),
        Condition::SenderGlob(p) => format!("sender_glob {p:?}"),
        Condition::SenderRegex(p) => format!("sender_regex {p:?}"),
        Condition::AnyRecipientGlob(p) => format!("any_recipient_glob {p:?}"),
        Condition::AnyRecipientRegex(p) => format!("any_recipient_regex {p:?}"),
        Condition::AllRecipientsGlob(p) => format!("all_recipients_glob {p:?}"),
        Condition::AllRecipientsRegex(p) => format!("all_recipients_regex {p:?}"),
        Condition::Header { name, regex } => format!("header {name} {regex:?}"),
        Condition::SubjectRegex(p) => format!("subject_regex {p:?}"),
        Condition::SubjectContains(t) => format!("subject_contains {t:?}"),
        Condition::BodyContains(t) => format!("body_contains {t:?}"),
        Condition::BodyRegex(p) => format!("body_regex {p:?}"),
        Condition::AttachmentName(p) => format!("attachment_name {p:?}"),
        Condition::AttachmentType(t) => format!("attachment_type [{}]", t.join(", ")),
        Condition::AttachmentSizeOver(n) => format!("attachment_size_over {n}"),
        Condition::MessageSizeOver(n) => format!("message_size_over {n}"),
    }
}

struct Ctx<'a> {
    envelope: &'a Envelope<'a>,
    msg: &'a ScannedMessage,
}

/// At most 100 characters of `s`, on a character boundary.
fn snippet(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

impl Cond {
    /// Whether the condition holds; on success the evidence is appended, on failure
    /// `evidence` is left as it was.
    fn eval(&self, ctx: &Ctx<'_>, evidence: &mut Vec<Evidence>) -> bool {
        let mark = evidence.len();
        let hit = match self {
            Cond::All(list) => list.iter().all(|c| c.eval(ctx, evidence)),
            Cond::Any(list) => list.iter().any(|c| c.eval(ctx, evidence)),
            Cond::Not(inner, label) => {
                let held = inner.eval(ctx, evidence);
                evidence.truncate(mark);
                if !held {
                    evidence.push(Evidence {
                        condition: label.clone(),
                        matched: String::new(),
                    });
                }
                !held
            }
            Cond::Leaf(test, label) => match test.eval(ctx) {
                Some(matched) => {
                    evidence.push(Evidence {
                        condition: label.clone(),
                        matched: snippet(&matched),
                    });
                    true
                }
                None => false,
            },
        };
        if !hit {
            evidence.truncate(mark);
        }
        hit
    }
}

impl Test {
    /// The matched text when the test holds.
    fn eval(&self, ctx: &Ctx<'_>) -> Option<String> {
        let msg = ctx.msg;
        let recipients = ctx.envelope.recipients;
        match self {
            Test::Sender(p) => p
                .matches(ctx.envelope.sender)
                .then(|| ctx.envelope.sender.to_string()),
            Test::AnyRecipient(p) => recipients.iter().find(|r| p.matches(r)).cloned(),
            Test::AllRecipients(p) => (!recipients.is_empty()
                && recipients.iter().all(|r| p.matches(r)))
            .then(|| recipients.join(", ")),
            Test::Header(name, re) => msg
                .header_values(name)
                .find_map(|v| re.find(v).map(|m| format!("{name}: {}", m.as_str()))),
            Test::Subject(re) => re.find(&msg.subject).map(|m| m.as_str().to_string()),
            Test::Body(re) => msg
                .texts()
                .find_map(|t| re.find(t).map(|m| m.as_str().to_string())),
            Test::AttachmentName(g) => msg
                .attachments()
                .filter_map(|p| p.filename.as_deref())
                .find(|f| g.matches(f))
                .map(str::to_string),
            Test::AttachmentType(set) => {
                msg.attachments()
                    .find(|p| set.contains(p.file_type))
                    .map(|p| match &p.filename {
                        Some(f) => format!("{f} ({})", p.file_type),
                        None => format!("unnamed {} part", p.file_type),
                    })
            }
            Test::AttachmentSizeOver(n) => {
                msg.attachments().find(|p| p.size as u64 > *n).map(|p| {
                    format!(
                        "{} ({} bytes)",
                        p.filename.as_deref().unwrap_or("unnamed"),
                        p.size
                    )
                })
            }
            Test::MessageSizeOver(n) => {
                (msg.size as u64 > *n).then(|| format!("{} bytes", msg.size))
            }
        }
    }
}

#[cfg(test)]
mod tests;
