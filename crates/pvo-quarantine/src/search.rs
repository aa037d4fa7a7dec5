//! What a search asks for and what it returns (`quarantine search`, the REST API).
//!
//! A search looks at held messages only (those still in at least one quarantine). All
//! filters combine with AND. Addresses compare case-insensitively. Subject and attachment
//! name match whole words through the full-text index (a word ending in `*` matches as a
//! prefix); an attachment name like `invoice.pdf` is the words `invoice pdf` in order.
//! Ranges are inclusive. Results are distinct messages; `total` counts all matches, not
//! only the page, up to [`SearchQuery::max_count`] (10,000 by default): beyond it the page
//! says "at least" (`total_exact` false). Counting every match of a broad filter over a
//! million messages costs one row lookup per match, which is what the cap bounds; an
//! unfiltered search or one by quarantine alone is always exact (maintained counters).
//!
//! # Security
//!
//! Search values come from administrators and API clients. Every value reaches SQL as a
//! bound parameter; subject and attachment words reach FTS5 as quoted strings, so FTS5
//! operators (`OR`, `NEAR`, `*` in the middle, column filters) in the input are plain
//! text. Pages are capped at 10,000 hits.

use crate::model::{MsgId, Reason, ReasonKind};

/// How an address filter matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddrMatch {
    /// The whole address.
    Is(String),
    /// Everything after the `@` (`example.com`; a leading `@` is ignored).
    Domain(String),
    /// The address starts with this text.
    BeginsWith(String),
}

/// The sort key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderBy {
    #[default]
    Received,
    Size,
    /// The scheduled exit: of the membership in the searched quarantine, or the earliest
    /// of the message's held memberships when no quarantine is given.
    Exit,
}

/// A search. `Default` is "every held message, newest first, first 25".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    pub quarantine: Option<String>,
    pub sender: Option<AddrMatch>,
    pub recipient: Option<AddrMatch>,
    /// Words of the subject.
    pub subject: Option<String>,
    pub received_from: Option<u64>,
    pub received_to: Option<u64>,
    /// The originating gateway.
    pub gateway: Option<String>,
    /// The filter name, DLP policy, virus name or outbreak rule id (case-insensitive).
    pub reason: Option<String>,
    pub reason_kind: Option<ReasonKind>,
    /// Words of an attachment's name.
    pub attachment_name: Option<String>,
    pub attachment_min_size: Option<u64>,
    pub attachment_max_size: Option<u64>,
    pub min_size: Option<u64>,
    pub max_size: Option<u64>,
    /// Only messages held in at least one of these quarantines (`Some(empty)`: none).
    /// Access control: the quarantines a user's role may see.
    pub within_quarantines: Option<Vec<String>>,
    /// Only messages with at least one recipient in one of these domains
    /// (`Some(empty)`: none). Access control: a role limited to recipient domains.
    pub recipient_domains: Option<Vec<String>>,
    pub order_by: OrderBy,
    pub descending: bool,
    pub offset: u64,
    pub limit: u64,
    /// Count at most this many matches (`None`: count all, however long it takes).
    pub max_count: Option<u64>,
}

/// The default [`SearchQuery::max_count`].
pub const DEFAULT_MAX_COUNT: u64 = 10_000;

impl Default for SearchQuery {
    fn default() -> SearchQuery {
        SearchQuery {
            quarantine: None,
            sender: None,
            recipient: None,
            subject: None,
            received_from: None,
            received_to: None,
            gateway: None,
            reason: None,
            reason_kind: None,
            attachment_name: None,
            attachment_min_size: None,
            attachment_max_size: None,
            min_size: None,
            max_size: None,
            within_quarantines: None,
            recipient_domains: None,
            order_by: OrderBy::Received,
            descending: true,
            offset: 0,
            limit: 25,
            max_count: Some(DEFAULT_MAX_COUNT),
        }
    }
}

/// Where a found message is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HitMembership {
    pub quarantine: String,
    pub reason: Reason,
    pub exit_at: u64,
}

/// One found message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHit {
    pub msg_id: MsgId,
    pub gateway: String,
    pub gateway_mid: u64,
    /// The MID this node gave the message (`meta.mid`), when recorded.
    pub node_mid: Option<u64>,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub received: u64,
    pub size: u64,
    /// Held memberships only.
    pub held_in: Vec<HitMembership>,
}

/// One page of results and the number of all matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// The number of matches, or `max_count` when there are more (see `total_exact`).
    pub total: u64,
    /// False when `total` is the cap: there are at least that many.
    pub total_exact: bool,
    pub hits: Vec<SearchHit>,
}

/// A search filter that cannot be applied, and why. A search is refused rather than run
/// without the filter: a dropped filter matches every message, and a bulk action on
/// "every result" would then act on all of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {field}={value:?} cannot be applied: {why}")]
pub struct FilterError {
    /// The filter's name as the CLI and the API spell it (`subject`, `attachment`...).
    pub field: String,
    /// The value as given.
    pub value: String,
    pub why: String,
}

impl FilterError {
    pub fn new(field: &str, value: &str, why: &str) -> FilterError {
        FilterError {
            field: field.to_string(),
            value: value.to_string(),
            why: why.to_string(),
        }
    }
}

/// Why no SQL filter can be built from this text, if it cannot: a NUL is not text
/// (SQLite and FTS5 cut strings there), and a value of white space only names nothing.
fn text_problem(value: &str) -> Option<&'static str> {
    if value.contains('\0') {
        Some("it contains a NUL character")
    } else if value.trim().is_empty() {
        Some("it is only white space")
    } else {
        None
    }
}

/// Turns user words into an FTS5 query restricted to one column: every word quoted (so
/// that FTS5 operators and punctuation in user input are plain text), all required, a
/// trailing `*` kept as a prefix match. A value with no word (letters or digits) is an
/// error, never "no condition": the index holds words only, so nothing could match it
/// and dropping it would match everything.
pub(crate) fn fts_query(column: &str, field: &str, words: &str) -> Result<String, FilterError> {
    if let Some(why) = text_problem(words) {
        return Err(FilterError::new(field, words, why));
    }
    let terms: Vec<String> = words
        .split_whitespace()
        .filter_map(|w| {
            let prefix = w.ends_with('*');
            let w = w.trim_end_matches('*').replace('"', "\"\"");
            if w.chars().all(|c| !c.is_alphanumeric()) {
                return None;
            }
            Some(format!("\"{w}\"{}", if prefix { "*" } else { "" }))
        })
        .collect();
    if terms.is_empty() {
        let why = if words.contains('\u{FFFD}') {
            "it has no word to search for (letters or digits), only characters that were not valid UTF-8"
        } else {
            "it has no word to search for (letters or digits); this filter matches whole words"
        };
        return Err(FilterError::new(field, words, why));
    }
    Ok(format!("{{{column}}} : ({})", terms.join(" AND ")))
}

impl SearchQuery {
    /// Checks that every filter can be applied as given (see [`FilterError`]); the store
    /// runs it before any search, and callers may run it first to refuse a bulk job
    /// before it starts.
    pub fn validate(&self) -> Result<(), FilterError> {
        let texts = [
            ("quarantine", self.quarantine.as_deref()),
            ("gateway", self.gateway.as_deref()),
            ("reason", self.reason.as_deref()),
        ];
        for (field, value) in texts {
            if let Some(v) = value {
                if let Some(why) = text_problem(v) {
                    return Err(FilterError::new(field, v, why));
                }
            }
        }
        for (field, m) in [("sender", &self.sender), ("recipient", &self.recipient)] {
            let Some(m) = m else { continue };
            let (shown, raw) = match m {
                AddrMatch::Is(a) => (a.clone(), a.as_str()),
                AddrMatch::Domain(d) => (d.clone(), d.as_str()),
                AddrMatch::BeginsWith(p) => (format!("{p}*"), p.as_str()),
            };
            let no_domain =
                matches!(m, AddrMatch::Domain(d) if d.trim().trim_start_matches('@').is_empty());
            let why = text_problem(raw).or(no_domain.then_some("it names no domain"));
            if let Some(why) = why {
                return Err(FilterError::new(field, &shown, why));
            }
        }
        if let Some(s) = &self.subject {
            fts_query("subject", "subject", s)?;
        }
        if let Some(a) = &self.attachment_name {
            fts_query("attachments", "attachment", a)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fts_queries() {
        let cases = [
            ("Invoice", Some("{subject} : (\"Invoice\")")),
            ("  big  deal ", Some("{subject} : (\"big\" AND \"deal\")")),
            ("inv*", Some("{subject} : (\"inv\"*)")),
            (
                "a\"b OR NEAR(",
                Some("{subject} : (\"a\"\"b\" AND \"OR\" AND \"NEAR(\")"),
            ),
            ("( invoice %", Some("{subject} : (\"invoice\")")),
            ("-- * \"", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                fts_query("subject", "subject", input).ok().as_deref(),
                want,
                "{input}"
            );
        }
    }

    /// Filters that name nothing searchable: each is refused with the filter, its value
    /// and why, never dropped (a dropped filter matches every held message).
    #[test]
    fn filters_that_cannot_be_applied_are_refused() {
        let lossy = String::from_utf8_lossy(b"\xff\xfe").into_owned();
        let subject = |s: &str| SearchQuery {
            subject: Some(s.to_string()),
            ..SearchQuery::default()
        };
        let cases: Vec<(SearchQuery, &str)> = vec![
            (subject("("), "filter subject=\"(\" cannot be applied: it has no word"),
            (subject("\""), "filter subject=\"\\\"\" cannot be applied: it has no word"),
            (subject("%"), "filter subject=\"%\" cannot be applied: it has no word"),
            (subject("\r\n"), "filter subject=\"\\r\\n\" cannot be applied: it is only white space"),
            (subject("in\0voice"), "filter subject=\"in\\0voice\" cannot be applied: it contains a NUL"),
            (subject(&lossy), "cannot be applied: it has no word to search for (letters or digits), only characters that were not valid UTF-8"),
            (
                SearchQuery { attachment_name: Some("( )".into()), ..SearchQuery::default() },
                "filter attachment=\"( )\" cannot be applied: it has no word",
            ),
            (
                SearchQuery { sender: Some(AddrMatch::Is("a\0@b.test".into())), ..SearchQuery::default() },
                "filter sender=\"a\\0@b.test\" cannot be applied: it contains a NUL",
            ),
            (
                SearchQuery { recipient: Some(AddrMatch::Domain("@".into())), ..SearchQuery::default() },
                "filter recipient=\"@\" cannot be applied: it names no domain",
            ),
            (
                SearchQuery { reason: Some("x\0".into()), ..SearchQuery::default() },
                "filter reason=\"x\\0\" cannot be applied: it contains a NUL",
            ),
            (
                SearchQuery { gateway: Some("\r\n".into()), ..SearchQuery::default() },
                "filter gateway=\"\\r\\n\" cannot be applied: it is only white space",
            ),
        ];
        for (q, want) in cases {
            let e = q.validate().expect_err(want).to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
        for ok in ["invoice", "(invoice)", "inv*", "\"quoted words\""] {
            subject(ok).validate().unwrap();
        }
        SearchQuery::default().validate().unwrap();
    }
}
