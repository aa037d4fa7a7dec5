//! The types every engine hands to the pipeline: actions to perform and per-engine verdicts.
//!
//! Engines in this crate never execute anything. A content filter or a DLP policy returns
//! the [`Action`]s its rules name, and the pipeline (in the `pvo` binary) carries them out in
//! its fixed order. A [`Verdict`] is what gets stored with a quarantined message to answer
//! "why was this held": it serializes with serde, tagged by `verdict`.
//!
//! # Security
//!
//! Actions come from configuration but are carried out on live mail, so every rule loader
//! validates them: header names must be printable ASCII without `:`, header values must
//! not contain CR, LF or NUL (no header or body injection), notification addresses must
//! look like addresses, and strip selectors must be valid globs or file types.

use serde::{Deserialize, Serialize};

use crate::filetype::TypeSet;
use crate::glob::Glob;

/// An action a rule asks for. Deserializes from TOML as a bare string for the unit actions
/// (`"deliver"`, `"drop"`, `"bounce"`) and as a one-key table for the others
/// (`{ quarantine = "Policy" }`, `{ add_header = { name = "X-PVO", value = "1" } }`,
/// `{ strip_attachment = { glob = "*.exe" } }`, `{ strip_attachment = { file_type = "exe" } }`,
/// `{ notify = "admin@example.com" }`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Action {
    /// Deliver now and skip the remaining content filters (final).
    Deliver,
    /// Drop silently (final).
    Drop,
    /// Reject with a bounce to the sender (final).
    Bounce,
    /// Hold in the named quarantine; several quarantine actions may apply to one message.
    Quarantine(String),
    /// Add a header field.
    AddHeader {
        /// Field name.
        name: String,
        /// Field value (no CR or LF).
        value: String,
    },
    /// Replace the value of a header field, adding it when absent.
    ModifyHeader {
        /// Field name.
        name: String,
        /// Field value (no CR or LF).
        value: String,
    },
    /// Remove the attachments the selector matches.
    StripAttachment(AttachmentSelector),
    /// Send a notification to this address.
    Notify(String),
}

/// Which attachments `strip_attachment` removes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AttachmentSelector {
    /// Attachments whose declared filename matches this glob.
    Glob(String),
    /// Attachments whose true file type (by content) is this type or group.
    FileType(String),
}

impl AttachmentSelector {
    /// Whether `part` is an attachment this selector picks: by declared filename for a
    /// glob, by true file type for a type or group. An invalid selector picks nothing (rule
    /// loading rejects those).
    pub fn matches(&self, part: &crate::mime::ScannedPart) -> bool {
        if !part.attachment {
            return false;
        }
        match self {
            AttachmentSelector::Glob(g) => match (Glob::new(g), &part.filename) {
                (Ok(glob), Some(name)) => glob.matches(name),
                _ => false,
            },
            AttachmentSelector::FileType(t) => {
                TypeSet::parse(&[t]).is_ok_and(|set| set.contains(part.file_type))
            }
        }
    }
}

impl Action {
    /// Whether the action ends content filtering (`deliver`, `drop`, `bounce`).
    pub fn is_final(&self) -> bool {
        matches!(self, Action::Deliver | Action::Drop | Action::Bounce)
    }

    /// Checks the action's arguments; the error text is the problem, without the rule name.
    pub(crate) fn validate(&self) -> Result<(), String> {
        fn header(name: &str, value: &str) -> Result<(), String> {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
                return Err(format!(
                    "header name {name:?} must be printable ASCII without ':' or spaces"
                ));
            }
            // A CR or LF here would let a rule inject arbitrary header lines or a body.
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!(
                    "header value for {name} must not contain CR, LF or NUL"
                ));
            }
            Ok(())
        }
        match self {
            Action::Deliver | Action::Drop | Action::Bounce => Ok(()),
            Action::Quarantine(name) => {
                if name.trim().is_empty() {
                    Err("quarantine name must not be empty".into())
                } else {
                    Ok(())
                }
            }
            Action::AddHeader { name, value } | Action::ModifyHeader { name, value } => {
                header(name, value)
            }
            Action::StripAttachment(AttachmentSelector::Glob(g)) => Glob::new(g).map(|_| ()),
            Action::StripAttachment(AttachmentSelector::FileType(t)) => {
                TypeSet::parse(&[t]).map(|_| ())
            }
            Action::Notify(address) => {
                if address.contains('@')
                    && !address
                        .bytes()
                        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
                {
                    Ok(())
                } else {
                    Err(format!(
                        "notify address {address:?} is not an email address"
                    ))
                }
            }
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Deliver => f.write_str("deliver"),
            Action::Drop => f.write_str("drop"),
            Action::Bounce => f.write_str("bounce"),
            Action::Quarantine(q) => write!(f, "quarantine({q})"),
            Action::AddHeader { name, value } => write!(f, "add_header({name}, {value})"),
            Action::ModifyHeader { name, value } => write!(f, "modify_header({name}, {value})"),
            Action::StripAttachment(AttachmentSelector::Glob(g)) => {
                write!(f, "strip_attachment({g})")
            }
            Action::StripAttachment(AttachmentSelector::FileType(t)) => {
                write!(f, "strip_attachment(type {t})")
            }
            Action::Notify(a) => write!(f, "notify({a})"),
        }
    }
}

pub(crate) fn validate_actions(
    kind: &'static str,
    rule: &str,
    field: &str,
    actions: &[Action],
) -> Result<(), crate::RuleError> {
    for (i, action) in actions.iter().enumerate() {
        action
            .validate()
            .map_err(|p| crate::RuleError::new(kind, rule, format!("{field}[{i}]"), p))?;
    }
    Ok(())
}

/// One engine's verdict on one message.
///
/// `T` is the engine's match report: [`crate::filter::FilterOutcome`],
/// [`crate::dlp::DlpResult`] or [`crate::outbreak::OutbreakResult`]. Serialized as
/// `{"verdict":"clean"}`, `{"verdict":"matched","detail":{...}}` or
/// `{"verdict":"unscannable","detail":{"reason":"..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "snake_case")]
pub enum Verdict<T> {
    /// Nothing matched.
    Clean,
    /// Something matched; the report says what and why.
    Matched(T),
    /// The message could not be scanned within bounds. Never treat this as clean.
    Unscannable {
        /// Why, for the log and the "why held" display.
        reason: String,
    },
}

impl<T> Verdict<T> {
    /// Whether the verdict is `Clean`.
    pub fn is_clean(&self) -> bool {
        matches!(self, Verdict::Clean)
    }
}
