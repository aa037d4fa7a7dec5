//! PVO's scanning engines, without IO: a bounded MIME view, true file types, content
//! filters, DLP and outbreak rules.
//!
//! The pipeline in the `pvo` binary runs anti-virus (clamd, not here), then content filters
//! and DLP, then outbreak filters, then the final action. Everything in that order except
//! the anti-virus engine is a pure function of the message bytes, the envelope and the
//! rules, and lives in this crate:
//!
//! - [`mime`]: [`mime::scan`] parses a raw message once into a [`mime::ScannedMessage`]
//!   (decoded headers, subject, one [`mime::ScannedPart`] per leaf part with its declared
//!   type and name, decoded size, true file type, SHA-256, decoded text, archive flags; the
//!   URLs and domains in the text) or returns [`mime::Unscannable`] when the message exceeds
//!   [`mime::Limits`]: depth, parts, decoded bytes, header lines and bytes.
//! - [`filetype`]: [`filetype::detect`] classifies bytes by content (`exe`, `zip`, `docx`,
//!   `msi`, `pdf` ...); [`filetype::inspect_archive`] reads archive directories for nested
//!   archives, entry counts, overlapping entries, encryption and oversized members.
//! - [`filter`]: [`filter::FilterSet`] compiles [`filter::FilterRule`]s and evaluates them
//!   against an [`filter::Envelope`] and a view, returning the matching filters, evidence
//!   and [`verdict::Action`]s.
//! - [`dlp`]: [`dlp::DlpEngine`] compiles a [`dlp::DlpPolicy`] (payment cards, IBANs, US
//!   SSNs, dictionaries, regexes) and returns a severity, masked samples and actions.
//! - [`outbreak`]: [`outbreak::OutbreakRules`] compiles a versioned rules file and returns
//!   the highest threat level and matching rule ids; [`outbreak::OutbreakPolicy`] holds a
//!   threshold and the retention per threat level.
//! - [`verdict`]: [`verdict::Action`] and the serde-serializable [`verdict::Verdict`] stored
//!   with a quarantined message ("why held"); [`RuleError`] for every rule loader.
//!
//! A typical use, once per message:
//!
//! ```
//! use pvo_scan::filter::{Condition, Envelope, FilterRule, FilterSet};
//! use pvo_scan::mime::{scan, Limits};
//! use pvo_scan::verdict::{Action, Verdict};
//!
//! let filters = FilterSet::new(vec![FilterRule {
//!     name: "quarantine_test".into(),
//!     conditions: Condition::SubjectContains("[quarantine-test]".into()),
//!     actions: vec![Action::Quarantine("Policy".into())],
//! }])?;
//! let raw = b"Subject: [quarantine-test] hello\r\n\r\nbody\r\n";
//! let view = scan(raw, &Limits::default());
//! let recipients = vec!["bob@example.org".to_string()];
//! let envelope = Envelope { sender: "alice@example.com", recipients: &recipients };
//! match filters.verdict(&envelope, &view) {
//!     Verdict::Matched(outcome) => assert_eq!(outcome.matches[0].filter, "quarantine_test"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), pvo_scan::RuleError>(())
//! ```
//!
//! # Design decisions
//!
//! - **One parse, many engines.** The message is parsed and decoded once; every engine
//!   reads the same [`mime::ScannedMessage`], so a filter, a DLP policy and an outbreak rule
//!   can never disagree about what a part contains.
//! - **Unscannable is a verdict, never a partial view.** A message beyond a bound is
//!   `Err(Unscannable)` and every engine's `verdict` turns that into
//!   [`verdict::Verdict::Unscannable`]. Archive problems (nested archives, too many entries)
//!   are flags on the part ([`mime::ScannedMessage::archive_problem`]), so the policy decides
//!   how to treat them; the pipeline should treat them as unscannable.
//! - **Types by content.** File-type conditions use [`filetype::detect`], never the
//!   extension or the declared content type.
//! - **Compile once.** Regexes, globs and type sets are compiled when rules are loaded, and
//!   rule errors name the rule and the field path ([`RuleError`]). Evaluation allocates only
//!   for what it reports.
//! - **Skip, then look.** Every message is scanned, and most hold nothing, so the
//!   hand-written scanners (payment cards, IBANs, SSNs, URLs) jump a block of bytes at a
//!   time to the next byte that can start a match (a digit, a `:` or a `w`) instead of
//!   testing every position; they visit exactly the candidates a byte-at-a-time scan
//!   visits, which randomized tests against the byte-at-a-time versions hold them to.
//! - **Rules are data.** Every rule and policy type derives serde, so the binary loads them
//!   from TOML; this crate has no TOML dependency of its own.
//!
//! # Invariant
//!
//! No IO: no sockets, no files, no clocks, no threads. Inputs are bytes and rules, outputs
//! are values. The anti-virus client, the pipeline and the quarantines live elsewhere.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytescan;
pub mod dlp;
pub mod error;
pub mod filetype;
pub mod filter;
mod glob;
pub mod mime;
pub mod outbreak;
pub mod verdict;

pub use error::RuleError;

#[cfg(test)]
mod testutil;
