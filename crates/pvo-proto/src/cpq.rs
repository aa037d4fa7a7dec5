//! The CPQ protocol: the SMTP extension commands that carry quarantine metadata between a
//! gateway and a manager. The format is specified in `docs/cpq.md`; this module is its only
//! implementation.
//!
//! CPQ is ESMTP over mutual TLS (port 7025) plus two command verbs that the server recognises
//! before a line reaches `smtp-proto`:
//!
//! - `XPVO-META <version> <base64 record>` before `MAIL`: a [`MetaRecord`], either a
//!   [`TransferRecord`] (gateway to manager) or a [`ReleaseRecord`] (manager to gateway).
//! - `XPVO-CONTROL <version> <base64 record>` outside a transaction: a [`ControlRecord`]
//!   (gateway to manager: release or expire an outbreak message after a rescan).
//!
//! [`parse_command`] returns `Ok(None)` for every line that is not one of these verbs, so the
//! caller hands it to `smtp-proto` unchanged. Every [`CpqError`] maps to an SMTP reply with
//! [`CpqError::reply`].
//!
//! # Security
//!
//! The records come from a peer that passed mutual TLS, but they are still parsed as untrusted
//! input: lines are bounded ([`MAX_LINE_LEN`]), decoded records are bounded
//! ([`MAX_RECORD_LEN`]), base64 is decoded strictly, every field is checked, and no field may
//! hold a control character (CR, LF, NUL, any other C0 or C1 control, DEL), so no value can
//! split a log line, a header or a command. Reply texts never echo received bytes. Encoding
//! applies the same checks, so PVO never sends a record it would refuse.

use std::fmt;

/// The record format version this module speaks (for all three extensions).
pub const VERSION: u32 = 1;

/// Largest decoded record in bytes.
pub const MAX_RECORD_LEN: usize = 64 * 1024;

/// Largest base64 text of a record: the encoding of [`MAX_RECORD_LEN`] bytes.
pub const MAX_BASE64_LEN: usize = MAX_RECORD_LEN.div_ceil(3) * 4;

/// Largest CPQ command line in bytes, terminator included: the longest verb, a version of up
/// to 9 digits, two spaces, [`MAX_BASE64_LEN`] and CR LF. The server's line framer must allow
/// at least this much once the client has been identified as a CPQ peer.
pub const MAX_LINE_LEN: usize = "XPVO-CONTROL".len() + 1 + 9 + 1 + MAX_BASE64_LEN + 2;

/// Longest identifier (gateway id, transfer id, release id) in bytes.
pub const MAX_ID_LEN: usize = 128;

/// Highest threat level.
pub const MAX_THREAT_LEVEL: u8 = 5;

/// Longest `details` value of a quarantine entry on the wire, in bytes of base64 (the
/// JSON it encodes is at most 3,072 bytes). A hold whose details do not fit is shortened
/// by the sender (`TransferRecord` users keep valid JSON and add `"truncated": true`).
pub const MAX_DETAILS_LEN: usize = 4096;

/// Longest `details` JSON text that fits in [`MAX_DETAILS_LEN`] once encoded.
pub const MAX_DETAILS_JSON_LEN: usize = MAX_DETAILS_LEN / 4 * 3;

/// Reply to an accepted `XPVO-META`.
pub const META_OK_REPLY: &str = "250 2.0.0 metadata ok";
/// Reply to an `XPVO-CONTROL` the manager carried out.
pub const CONTROL_OK_REPLY: &str = "250 2.0.0 control ok";
/// Reply to an `XPVO-CONTROL` naming a message the manager does not hold (or no longer holds
/// in a state the action applies to).
pub const CONTROL_UNKNOWN_REPLY: &str = "550 5.1.0 no such quarantined message";

/// The CPQ extensions, each advertised in EHLO as `<keyword> <versions>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    /// `XPVO-META`: the server accepts the metadata record before MAIL.
    Meta,
    /// `XPVO-RELEASE`: the server (a gateway) accepts released messages with release records.
    Release,
    /// `XPVO-CONTROL`: the server (a manager) accepts control records.
    Control,
}

impl Extension {
    /// The EHLO keyword (and, for `Meta` and `Control`, the command verb).
    pub fn keyword(self) -> &'static str {
        match self {
            Extension::Meta => "XPVO-META",
            Extension::Release => "XPVO-RELEASE",
            Extension::Control => "XPVO-CONTROL",
        }
    }

    /// The EHLO line this implementation advertises, without the `250-` prefix.
    pub fn ehlo_line(self) -> &'static str {
        match self {
            Extension::Meta => "XPVO-META 1",
            Extension::Release => "XPVO-RELEASE 1",
            Extension::Control => "XPVO-CONTROL 1",
        }
    }
}

/// Which side of CPQ a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The manager's `cpq_listener`: receives transfers and control commands.
    Manager,
    /// A gateway's `cpq_listener`: receives released messages.
    Gateway,
}

/// The EHLO keyword lines a `cpq_listener` of `role` advertises (after the usual ESMTP ones).
pub fn ehlo_keywords(role: Role) -> &'static [&'static str] {
    match role {
        Role::Manager => &["XPVO-META 1", "XPVO-CONTROL 1"],
        Role::Gateway => &["XPVO-META 1", "XPVO-RELEASE 1"],
    }
}

/// Parses one EHLO keyword line (without `250-`/`250 `) into a CPQ extension and the versions
/// it lists. Returns `None` for other keywords or a malformed version list.
pub fn parse_ehlo_keyword(line: &str) -> Option<(Extension, Vec<u32>)> {
    let mut words = line.split(' ');
    let keyword = words.next()?;
    let ext = [Extension::Meta, Extension::Release, Extension::Control]
        .into_iter()
        .find(|e| e.keyword().eq_ignore_ascii_case(keyword))?;
    let versions = words.map(parse_version).collect::<Option<Vec<u32>>>()?;
    if versions.is_empty() {
        return None;
    }
    Some((ext, versions))
}

/// Why a message is in a quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// A content filter's quarantine action.
    ContentFilter,
    /// A DLP policy.
    DlpPolicy,
    /// The anti-virus engine.
    Virus,
    /// An outbreak filter rule.
    OutbreakRule,
    /// Anything else.
    Other,
}

impl ReasonKind {
    /// The token used in records.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::ContentFilter => "content-filter",
            ReasonKind::DlpPolicy => "dlp-policy",
            ReasonKind::Virus => "virus",
            ReasonKind::OutbreakRule => "outbreak-rule",
            ReasonKind::Other => "other",
        }
    }

    /// The kind a record token names.
    pub fn from_token(s: &str) -> Option<Self> {
        Some(match s {
            "content-filter" => ReasonKind::ContentFilter,
            "dlp-policy" => ReasonKind::DlpPolicy,
            "virus" => ReasonKind::Virus,
            "outbreak-rule" => ReasonKind::OutbreakRule,
            "other" => ReasonKind::Other,
            _ => return None,
        })
    }
}

/// One quarantine a transferred message is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineEntry {
    /// Quarantine name (non-empty).
    pub name: String,
    /// Kind of reason.
    pub reason: ReasonKind,
    /// Filter, policy, virus or rule name (non-empty).
    pub reason_name: String,
    /// Threat level, 0 to [`MAX_THREAT_LEVEL`].
    pub threat_level: u8,
    /// Scheduled exit in unix seconds, `None` if the message stays until released or deleted.
    pub scheduled_exit: Option<u64>,
    /// Why it was held, as the scan recorded it: a JSON text (content-filter evidence,
    /// DLP samples, virus name...), at most [`MAX_DETAILS_JSON_LEN`] bytes. On the wire it
    /// is the optional `details` line, base64 so that no byte of it can split the record.
    /// `None` for records from senders that do not carry it.
    pub details: Option<String>,
}

/// Gateway → manager: metadata of a quarantined message sent to the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The sending gateway's id (an identifier, see `docs/cpq.md`).
    pub gateway_id: String,
    /// The message's MID on the gateway.
    pub gateway_mid: u64,
    /// Idempotency key: the same transfer sent twice is stored once.
    pub transfer_id: String,
    /// Original envelope sender in PVO's stored form (local part unquoted, see
    /// [`crate::address`]); empty for the null path. On the wire it is the RFC 5321 text.
    pub sender: String,
    /// Original envelope recipients (at least one), stored form like `sender`.
    pub recipients: Vec<String>,
    /// When the gateway received the message, unix seconds.
    pub received: u64,
    /// The quarantines the message is in (at least one).
    pub quarantines: Vec<QuarantineEntry>,
}

/// An early-release action applied by the gateway when it delivers a released message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseAction {
    /// Prepend text to the Subject.
    SubjectPrepend(String),
    /// Append text to the Subject.
    SubjectAppend(String),
    /// Add a header field.
    AddHeader {
        /// Field name: printable ASCII without `:`, 1 to 76 bytes.
        name: String,
        /// Field value (may be empty).
        value: String,
    },
    /// Remove attachments.
    StripAttachments,
}

/// Manager → gateway: a release of a message back to the gateway it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// Release id (idempotency key for the gateway).
    pub release_id: String,
    /// The gateway the message came from; a gateway refuses a release for another id.
    pub gateway_id: String,
    /// The original MID on that gateway.
    pub gateway_mid: u64,
    /// The quarantines that released it (at least one).
    pub released_by: Vec<String>,
    /// Early-release actions, in order (possibly none).
    pub actions: Vec<ReleaseAction>,
}

/// The record carried by `XPVO-META`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaRecord {
    /// Gateway → manager.
    Transfer(TransferRecord),
    /// Manager → gateway.
    Release(ReleaseRecord),
}

/// What a control command asks the manager to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// The rescan found the outbreak message clean: release it.
    Release,
    /// The rescan found it bad (or its time ran out): expire it.
    Expire,
    /// The enable preflight: is the manager ready to centralize this gateway? (`mid` is 0
    /// and `transfer` is `ready`; the manager answers `250 2.0.0 ready` or a `550` naming
    /// what is missing.)
    Ready,
}

impl ControlAction {
    fn as_str(self) -> &'static str {
        match self {
            ControlAction::Release => "release",
            ControlAction::Expire => "expire",
            ControlAction::Ready => "ready",
        }
    }
}

/// The record carried by `XPVO-CONTROL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRecord {
    /// Release or expire.
    pub action: ControlAction,
    /// Gateway id the message came from.
    pub gateway_id: String,
    /// Its MID on that gateway.
    pub gateway_mid: u64,
    /// The transfer id it was sent with.
    pub transfer_id: String,
}

/// A parsed CPQ command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpqCommand {
    /// `XPVO-META`.
    Meta(MetaRecord),
    /// `XPVO-CONTROL`.
    Control(ControlRecord),
}

/// An SMTP reply for a CPQ error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Basic status code, e.g. 501.
    pub code: u16,
    /// Enhanced status code, e.g. `5.5.4`.
    pub enhanced: &'static str,
    /// Reply text (never contains received bytes, CR or LF).
    pub text: String,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.code, self.enhanced, self.text)
    }
}

/// Why a CPQ command or record was refused (or could not be encoded).
///
/// Variants carry only static names and numbers, never received bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpqError {
    /// The command line is longer than [`MAX_LINE_LEN`].
    #[error("command line of {len} bytes exceeds {MAX_LINE_LEN}")]
    LineTooLong {
        /// Length seen.
        len: usize,
    },
    /// The line is not `VERB SP version SP record`.
    #[error("syntax: {verb} <version> <base64 record>")]
    Syntax {
        /// The verb, as [`Extension::keyword`].
        verb: &'static str,
    },
    /// A well-formed version this implementation does not speak.
    #[error("unsupported {verb} version {version}")]
    UnsupportedVersion {
        /// The verb.
        verb: &'static str,
        /// The version asked for.
        version: u32,
    },
    /// The record is not strict base64.
    #[error("record is not valid base64")]
    BadBase64,
    /// The decoded record is longer than [`MAX_RECORD_LEN`].
    #[error("record exceeds {MAX_RECORD_LEN} bytes")]
    RecordTooLarge,
    /// The decoded record is not UTF-8.
    #[error("record is not UTF-8")]
    NotUtf8,
    /// The record ended where `missing` was expected (or its last line has no LF).
    #[error("record truncated: missing {missing}")]
    Truncated {
        /// The field (or "end of line") that was expected.
        missing: &'static str,
    },
    /// A line that is not `key=value` with the expected key.
    #[error("record malformed: expected {expected}")]
    UnexpectedField {
        /// The field that was expected at that point.
        expected: &'static str,
    },
    /// Lines after the end of the record.
    #[error("record has trailing fields")]
    TrailingFields,
    /// A control character in a field.
    #[error("control character in {field}")]
    ControlChar {
        /// The field.
        field: &'static str,
    },
    /// A field with an invalid value.
    #[error("invalid {field}")]
    InvalidField {
        /// The field.
        field: &'static str,
    },
    /// Unknown `kind` of metadata record.
    #[error("unknown record kind")]
    UnknownKind,
    /// Unknown reason kind of a quarantine entry.
    #[error("unknown reason kind")]
    UnknownReasonKind,
    /// Unknown control action.
    #[error("unknown control action")]
    UnknownAction,
    /// Unknown release action.
    #[error("unknown release action")]
    UnknownReleaseAction,
    /// Threat level above [`MAX_THREAT_LEVEL`].
    #[error("threat level {level} out of range 0-5")]
    ThreatLevel {
        /// The level seen.
        level: u64,
    },
    /// A transfer record without recipients.
    #[error("no recipients")]
    NoRecipients,
    /// A transfer record without quarantines.
    #[error("no quarantines")]
    NoQuarantines,
    /// A release record that names no releasing quarantine.
    #[error("no releasing quarantine")]
    NoReleasedBy,
    /// A quarantine entry's `details` longer than [`MAX_DETAILS_LEN`] once encoded.
    #[error("details exceed {MAX_DETAILS_LEN} bytes")]
    DetailsTooLarge,
}

impl CpqError {
    /// The SMTP reply the server sends for this error.
    pub fn reply(&self) -> Reply {
        let (code, enhanced) = match self {
            CpqError::LineTooLong { .. } => (500, "5.5.2"),
            CpqError::Syntax { .. } | CpqError::BadBase64 => (501, "5.5.2"),
            CpqError::UnsupportedVersion { .. } => (504, "5.5.4"),
            CpqError::RecordTooLarge => (552, "5.3.4"),
            _ => (501, "5.5.4"),
        };
        Reply {
            code,
            enhanced,
            text: self.to_string(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command lines

/// Parses a command line (with or without its CR LF or LF).
///
/// Returns `Ok(None)` if the verb is not a CPQ verb (the line goes to `smtp-proto`),
/// `Ok(Some(_))` for a valid CPQ command, and an error for a CPQ verb with a bad line.
pub fn parse_command(line: &[u8]) -> Result<Option<CpqCommand>, CpqError> {
    let line = crate::line::strip_terminator(line);
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    let verb = &line[..verb_end];
    let ext = if verb.eq_ignore_ascii_case(b"XPVO-META") {
        Extension::Meta
    } else if verb.eq_ignore_ascii_case(b"XPVO-CONTROL") {
        Extension::Control
    } else {
        return Ok(None);
    };
    // The terminator was stripped; count it as the two bytes a CR LF would take.
    if line.len() + 2 > MAX_LINE_LEN {
        return Err(CpqError::LineTooLong {
            len: line.len() + 2,
        });
    }
    let verb_name = ext.keyword();
    let syntax = CpqError::Syntax { verb: verb_name };
    let rest = line.get(verb_end + 1..).ok_or(syntax.clone())?;
    let sp = rest.iter().position(|&b| b == b' ').ok_or(syntax.clone())?;
    let version = std::str::from_utf8(&rest[..sp])
        .ok()
        .and_then(parse_version)
        .ok_or(syntax.clone())?;
    if version != VERSION {
        return Err(CpqError::UnsupportedVersion {
            verb: verb_name,
            version,
        });
    }
    let b64 = &rest[sp + 1..];
    if b64.is_empty() {
        return Err(syntax);
    }
    if b64.len() > MAX_BASE64_LEN {
        return Err(CpqError::RecordTooLarge);
    }
    let bytes = base64_decode(b64).ok_or(CpqError::BadBase64)?;
    if bytes.len() > MAX_RECORD_LEN {
        return Err(CpqError::RecordTooLarge);
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| CpqError::NotUtf8)?;
    let cmd = match ext {
        Extension::Control => CpqCommand::Control(decode_control(text)?),
        _ => CpqCommand::Meta(decode_meta(text)?),
    };
    Ok(Some(cmd))
}

/// The property the fuzz target (`fuzz/fuzz_targets/cpq.rs`) and the
/// deterministic fuzz-style test check on any input line: parsing never panics; what
/// parses re-encodes to a line that parses to the same command; an error's reply
/// never contains CR, LF or NUL; the accepted-reply parser never panics.
#[doc(hidden)]
pub fn check_command_line(line: &[u8]) -> bool {
    let parsed = match parse_command(line) {
        Ok(Some(cmd)) => {
            let again = cmd.encode().expect("a parsed command re-encodes");
            assert_eq!(parse_command(again.as_bytes()), Ok(Some(cmd)));
            true
        }
        Ok(None) => false,
        Err(e) => {
            let r = e.reply().to_string();
            assert!(!r.contains(['\r', '\n', '\0']), "{r:?}");
            false
        }
    };
    let _ = parse_accepted_reply(line);
    parsed
}

impl CpqCommand {
    /// Encodes the command as a command line, CR LF included. Fails if a field would not pass
    /// [`parse_command`] (so PVO never sends what it would refuse).
    pub fn encode(&self) -> Result<String, CpqError> {
        let (verb, record) = match self {
            CpqCommand::Meta(m) => ("XPVO-META", encode_meta(m)?),
            CpqCommand::Control(c) => ("XPVO-CONTROL", encode_control(c)?),
        };
        if record.len() > MAX_RECORD_LEN {
            return Err(CpqError::RecordTooLarge);
        }
        Ok(format!(
            "{verb} {VERSION} {}\r\n",
            base64_encode(record.as_bytes())
        ))
    }
}

/// The manager's reply to an accepted message: `250 2.0.0 Ok: Message <mid> accepted`.
pub fn accepted_reply(mgr_mid: u64) -> String {
    format!("250 2.0.0 Ok: Message {mgr_mid} accepted")
}

/// Extracts the manager MID from an accepted reply line (CR LF optional), as written by
/// [`accepted_reply`]; the enhanced code may be absent. `None` for anything else.
pub fn parse_accepted_reply(reply: &[u8]) -> Option<u64> {
    let reply = std::str::from_utf8(crate::line::strip_terminator(reply)).ok()?;
    let rest = reply.strip_prefix("250 ")?;
    let rest = rest.strip_prefix("2.0.0 ").unwrap_or(rest);
    let digits = rest
        .strip_prefix("Ok: Message ")?
        .strip_suffix(" accepted")?;
    parse_u64(digits)
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Strict decimal: digits only, no sign, no leading zero (except "0" itself), fits in u64.
fn parse_u64(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

fn parse_version(s: &str) -> Option<u32> {
    if s.len() > 9 {
        return None;
    }
    parse_u64(s).and_then(|v| u32::try_from(v).ok())
}

// ---------------------------------------------------------------------------------------------
// Base64 (RFC 4648 standard alphabet, padded, strict)

/// The `base64` crate's standard engine: padding required where it belongs, unused bits
/// zero, no whitespace or other characters, so one record has exactly one text.
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn base64_encode(input: &[u8]) -> String {
    base64::Engine::encode(&B64, input)
}

/// Strict decoding; an empty text is no record.
fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.is_empty() {
        return None;
    }
    base64::Engine::decode(&B64, input).ok()
}

// ---------------------------------------------------------------------------------------------
// Field checks (shared by encoder and decoder)

fn check_text<'a>(field: &'static str, v: &'a str) -> Result<&'a str, CpqError> {
    if v.chars().any(char::is_control) {
        return Err(CpqError::ControlChar { field });
    }
    Ok(v)
}

fn check_nonempty<'a>(field: &'static str, v: &'a str) -> Result<&'a str, CpqError> {
    check_text(field, v)?;
    if v.is_empty() {
        return Err(CpqError::InvalidField { field });
    }
    Ok(v)
}

/// True for a valid identifier (gateway id, transfer id, release id): 1 to
/// [`MAX_ID_LEN`] bytes of `A-Z a-z 0-9 . - _ :`.
pub fn is_identifier(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_ID_LEN
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'))
}

fn check_id<'a>(field: &'static str, v: &'a str) -> Result<&'a str, CpqError> {
    check_text(field, v)?;
    if !is_identifier(v) {
        return Err(CpqError::InvalidField { field });
    }
    Ok(v)
}

/// An envelope address (PVO's stored form, see [`crate::address`]) as a record carries it:
/// the RFC 5321 mailbox text of [`crate::address::wire_address`] (a local part that is not a
/// Dot-string quoted), so every address PVO accepted can be sent, spaces and angle brackets
/// included; empty for the null sender where `may_be_empty`.
fn encode_address(field: &'static str, v: &str, may_be_empty: bool) -> Result<String, CpqError> {
    check_text(field, v)?;
    if v.is_empty() && !may_be_empty {
        return Err(CpqError::InvalidField { field });
    }
    crate::address::wire_address(v).map_err(|_| CpqError::InvalidField { field })
}

/// The stored form of an address field: the RFC 5321 mailbox text (quotes removed), or, from
/// a gateway that wrote the stored form itself (before addresses were quoted), a value
/// without spaces or angle brackets that is a valid stored address.
fn decode_address(field: &'static str, v: &str, may_be_empty: bool) -> Result<String, CpqError> {
    check_text(field, v)?;
    if v.is_empty() {
        return if may_be_empty {
            Ok(String::new())
        } else {
            Err(CpqError::InvalidField { field })
        };
    }
    if let Ok(m) = crate::path::parse_address(v) {
        return Ok(m.to_string());
    }
    match crate::address::parse_mailbox(v) {
        Ok(m) if !v.contains([' ', '<', '>', '"']) => Ok(m.to_string()),
        _ => Err(CpqError::InvalidField { field }),
    }
}

fn check_header_name<'a>(field: &'static str, v: &'a str) -> Result<&'a str, CpqError> {
    check_text(field, v)?;
    let ok =
        !v.is_empty() && v.len() <= 76 && v.bytes().all(|b| (33..=126).contains(&b) && b != b':');
    if !ok {
        return Err(CpqError::InvalidField { field });
    }
    Ok(v)
}

fn check_threat(level: u64) -> Result<u8, CpqError> {
    if level > u64::from(MAX_THREAT_LEVEL) {
        return Err(CpqError::ThreatLevel { level });
    }
    Ok(level as u8)
}

fn num(field: &'static str, v: &str) -> Result<u64, CpqError> {
    check_text(field, v)?;
    parse_u64(v).ok_or(CpqError::InvalidField { field })
}

// ---------------------------------------------------------------------------------------------
// Record encoding

struct Writer(String);

impl Writer {
    fn field(&mut self, key: &str, value: &str) {
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(value);
        self.0.push('\n');
    }
}

fn encode_meta(m: &MetaRecord) -> Result<String, CpqError> {
    let mut w = Writer(String::new());
    match m {
        MetaRecord::Transfer(t) => {
            w.field("kind", "transfer");
            w.field("gateway", check_id("gateway", &t.gateway_id)?);
            w.field("mid", &t.gateway_mid.to_string());
            w.field("transfer", check_id("transfer", &t.transfer_id)?);
            w.field("received", &t.received.to_string());
            w.field("from", &encode_address("from", &t.sender, true)?);
            if t.recipients.is_empty() {
                return Err(CpqError::NoRecipients);
            }
            for r in &t.recipients {
                w.field("rcpt", &encode_address("rcpt", r, false)?);
            }
            if t.quarantines.is_empty() {
                return Err(CpqError::NoQuarantines);
            }
            for q in &t.quarantines {
                w.field("quarantine", check_nonempty("quarantine", &q.name)?);
                w.field("reason", q.reason.as_str());
                w.field(
                    "reason-name",
                    check_nonempty("reason-name", &q.reason_name)?,
                );
                w.field(
                    "threat",
                    &check_threat(u64::from(q.threat_level))?.to_string(),
                );
                match q.scheduled_exit {
                    Some(e) => w.field("exit", &e.to_string()),
                    None => w.field("exit", ""),
                }
                if let Some(d) = &q.details {
                    w.field("details", &encode_details(d)?);
                }
            }
        }
        MetaRecord::Release(r) => {
            w.field("kind", "release");
            w.field("release", check_id("release", &r.release_id)?);
            w.field("gateway", check_id("gateway", &r.gateway_id)?);
            w.field("mid", &r.gateway_mid.to_string());
            if r.released_by.is_empty() {
                return Err(CpqError::NoReleasedBy);
            }
            for q in &r.released_by {
                w.field("released-by", check_nonempty("released-by", q)?);
            }
            for a in &r.actions {
                match a {
                    ReleaseAction::SubjectPrepend(s) => {
                        w.field("subject-prepend", check_text("subject-prepend", s)?)
                    }
                    ReleaseAction::SubjectAppend(s) => {
                        w.field("subject-append", check_text("subject-append", s)?)
                    }
                    ReleaseAction::AddHeader { name, value } => {
                        w.field("header-name", check_header_name("header-name", name)?);
                        w.field("header-value", check_text("header-value", value)?);
                    }
                    ReleaseAction::StripAttachments => w.field("strip-attachments", ""),
                }
            }
        }
    }
    Ok(w.0)
}

fn encode_control(c: &ControlRecord) -> Result<String, CpqError> {
    let mut w = Writer(String::new());
    w.field("action", c.action.as_str());
    w.field("gateway", check_id("gateway", &c.gateway_id)?);
    w.field("mid", &c.gateway_mid.to_string());
    w.field("transfer", check_id("transfer", &c.transfer_id)?);
    Ok(w.0)
}

/// The `details` value: strict base64 of the UTF-8 text, bounded.
fn encode_details(d: &str) -> Result<String, CpqError> {
    if d.is_empty() {
        return Err(CpqError::InvalidField { field: "details" });
    }
    if d.len() > MAX_DETAILS_JSON_LEN {
        return Err(CpqError::DetailsTooLarge);
    }
    Ok(base64_encode(d.as_bytes()))
}

fn decode_details(v: &str) -> Result<String, CpqError> {
    if v.len() > MAX_DETAILS_LEN {
        return Err(CpqError::DetailsTooLarge);
    }
    let bytes = base64_decode(v.as_bytes()).ok_or(CpqError::InvalidField { field: "details" })?;
    String::from_utf8(bytes).map_err(|_| CpqError::InvalidField { field: "details" })
}

// ---------------------------------------------------------------------------------------------
// Record decoding

struct Reader<'a> {
    rest: &'a str,
}

impl<'a> Reader<'a> {
    /// The next line split at the first `=`, without consuming it. A line without LF is a
    /// truncated record; a line without `=` matches no key.
    fn peek(&self) -> Result<Option<(&'a str, &'a str, usize)>, CpqError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let Some(nl) = self.rest.find('\n') else {
            return Err(CpqError::Truncated {
                missing: "end of line",
            });
        };
        let line = &self.rest[..nl];
        let (k, v) = line.split_once('=').unwrap_or(("", line));
        Ok(Some((k, v, nl + 1)))
    }

    fn peek_key(&self) -> Result<Option<&'a str>, CpqError> {
        Ok(self.peek()?.map(|(k, _, _)| k))
    }

    fn take(&mut self, key: &'static str) -> Result<&'a str, CpqError> {
        match self.peek()? {
            None => Err(CpqError::Truncated { missing: key }),
            Some((k, v, n)) if k == key => {
                self.rest = &self.rest[n..];
                Ok(v)
            }
            Some(_) => Err(CpqError::UnexpectedField { expected: key }),
        }
    }

    fn finish(&self) -> Result<(), CpqError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CpqError::TrailingFields)
        }
    }
}

fn decode_meta(text: &str) -> Result<MetaRecord, CpqError> {
    let mut r = Reader { rest: text };
    let kind = r.take("kind")?;
    let rec = match kind {
        "transfer" => MetaRecord::Transfer(decode_transfer(&mut r)?),
        "release" => MetaRecord::Release(decode_release(&mut r)?),
        _ => {
            check_text("kind", kind)?;
            return Err(CpqError::UnknownKind);
        }
    };
    r.finish()?;
    Ok(rec)
}

fn decode_transfer(r: &mut Reader<'_>) -> Result<TransferRecord, CpqError> {
    let gateway_id = check_id("gateway", r.take("gateway")?)?.to_owned();
    let gateway_mid = num("mid", r.take("mid")?)?;
    let transfer_id = check_id("transfer", r.take("transfer")?)?.to_owned();
    let received = num("received", r.take("received")?)?;
    let sender = decode_address("from", r.take("from")?, true)?;
    let mut recipients = Vec::new();
    loop {
        match r.peek_key()? {
            Some("rcpt") => recipients.push(decode_address("rcpt", r.take("rcpt")?, false)?),
            None if recipients.is_empty() => return Err(CpqError::Truncated { missing: "rcpt" }),
            _ if recipients.is_empty() => return Err(CpqError::NoRecipients),
            _ => break,
        }
    }
    let mut quarantines = Vec::new();
    loop {
        match r.peek_key()? {
            Some("quarantine") => {
                let name = check_nonempty("quarantine", r.take("quarantine")?)?.to_owned();
                let reason_tok = check_text("reason", r.take("reason")?)?;
                let reason =
                    ReasonKind::from_token(reason_tok).ok_or(CpqError::UnknownReasonKind)?;
                let reason_name = check_nonempty("reason-name", r.take("reason-name")?)?.to_owned();
                let threat_level = check_threat(num("threat", r.take("threat")?)?)?;
                let exit = r.take("exit")?;
                let scheduled_exit = if exit.is_empty() {
                    None
                } else {
                    Some(num("exit", exit)?)
                };
                // Optional: older gateways do not send it.
                let details = if r.peek_key()? == Some("details") {
                    Some(decode_details(r.take("details")?)?)
                } else {
                    None
                };
                quarantines.push(QuarantineEntry {
                    name,
                    reason,
                    reason_name,
                    threat_level,
                    scheduled_exit,
                    details,
                });
            }
            None if quarantines.is_empty() => {
                return Err(CpqError::Truncated {
                    missing: "quarantine",
                })
            }
            _ if quarantines.is_empty() => return Err(CpqError::NoQuarantines),
            _ => break,
        }
    }
    Ok(TransferRecord {
        gateway_id,
        gateway_mid,
        transfer_id,
        sender,
        recipients,
        received,
        quarantines,
    })
}

fn decode_release(r: &mut Reader<'_>) -> Result<ReleaseRecord, CpqError> {
    let release_id = check_id("release", r.take("release")?)?.to_owned();
    let gateway_id = check_id("gateway", r.take("gateway")?)?.to_owned();
    let gateway_mid = num("mid", r.take("mid")?)?;
    let mut released_by = Vec::new();
    while r.peek_key()? == Some("released-by") {
        released_by.push(check_nonempty("released-by", r.take("released-by")?)?.to_owned());
    }
    if released_by.is_empty() {
        return Err(match r.peek_key()? {
            None => CpqError::Truncated {
                missing: "released-by",
            },
            Some(_) => CpqError::NoReleasedBy,
        });
    }
    let mut actions = Vec::new();
    while let Some(key) = r.peek_key()? {
        let action = match key {
            "subject-prepend" => ReleaseAction::SubjectPrepend(
                check_text("subject-prepend", r.take("subject-prepend")?)?.to_owned(),
            ),
            "subject-append" => ReleaseAction::SubjectAppend(
                check_text("subject-append", r.take("subject-append")?)?.to_owned(),
            ),
            "header-name" => {
                let name = check_header_name("header-name", r.take("header-name")?)?.to_owned();
                let value = check_text("header-value", r.take("header-value")?)?.to_owned();
                ReleaseAction::AddHeader { name, value }
            }
            "strip-attachments" => {
                if !r.take("strip-attachments")?.is_empty() {
                    return Err(CpqError::InvalidField {
                        field: "strip-attachments",
                    });
                }
                ReleaseAction::StripAttachments
            }
            _ => return Err(CpqError::UnknownReleaseAction),
        };
        actions.push(action);
    }
    Ok(ReleaseRecord {
        release_id,
        gateway_id,
        gateway_mid,
        released_by,
        actions,
    })
}

fn decode_control(text: &str) -> Result<ControlRecord, CpqError> {
    let mut r = Reader { rest: text };
    let action = match check_text("action", r.take("action")?)? {
        "release" => ControlAction::Release,
        "expire" => ControlAction::Expire,
        "ready" => ControlAction::Ready,
        _ => return Err(CpqError::UnknownAction),
    };
    let gateway_id = check_id("gateway", r.take("gateway")?)?.to_owned();
    let gateway_mid = num("mid", r.take("mid")?)?;
    let transfer_id = check_id("transfer", r.take("transfer")?)?.to_owned();
    r.finish()?;
    Ok(ControlRecord {
        action,
        gateway_id,
        gateway_mid,
        transfer_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer() -> TransferRecord {
        TransferRecord {
            gateway_id: "gw-1.example".into(),
            gateway_mid: 23456,
            transfer_id: "gw-1.example:23456:1".into(),
            sender: "alice@example.org".into(),
            recipients: vec!["bob@example.com".into(), "carol@example.com".into()],
            received: 1_795_000_000,
            quarantines: vec![
                QuarantineEntry {
                    name: "Policy".into(),
                    reason: ReasonKind::ContentFilter,
                    reason_name: "block_exe".into(),
                    threat_level: 0,
                    scheduled_exit: Some(1_795_864_000),
                    details: None,
                },
                QuarantineEntry {
                    name: "Outbreak".into(),
                    reason: ReasonKind::OutbreakRule,
                    reason_name: "OUTBREAK_0001".into(),
                    threat_level: 5,
                    scheduled_exit: None,
                    details: None,
                },
                QuarantineEntry {
                    name: "Virus Ünïcode".into(),
                    reason: ReasonKind::Virus,
                    reason_name: "EICAR-Test".into(),
                    threat_level: 3,
                    scheduled_exit: Some(0),
                    details: None,
                },
                QuarantineEntry {
                    name: "DLP".into(),
                    reason: ReasonKind::DlpPolicy,
                    reason_name: "PCI".into(),
                    threat_level: 1,
                    scheduled_exit: Some(u64::MAX),
                    details: None,
                },
                QuarantineEntry {
                    name: "Misc".into(),
                    reason: ReasonKind::Other,
                    reason_name: "x=y".into(),
                    threat_level: 2,
                    scheduled_exit: None,
                    details: None,
                },
            ],
        }
    }

    fn release() -> ReleaseRecord {
        ReleaseRecord {
            release_id: "rel-42".into(),
            gateway_id: "gw-1.example".into(),
            gateway_mid: 23456,
            released_by: vec!["Policy".into(), "Outbreak".into()],
            actions: vec![
                ReleaseAction::SubjectPrepend("[SUSPICIOUS] ".into()),
                ReleaseAction::SubjectAppend(" (released)".into()),
                ReleaseAction::AddHeader {
                    name: "X-PVO-Released".into(),
                    value: "yes".into(),
                },
                ReleaseAction::AddHeader {
                    name: "X-Empty".into(),
                    value: String::new(),
                },
                ReleaseAction::StripAttachments,
            ],
        }
    }

    fn control(action: ControlAction) -> ControlRecord {
        ControlRecord {
            action,
            gateway_id: "gw-1.example".into(),
            gateway_mid: 7,
            transfer_id: "t-7".into(),
        }
    }

    /// A command line for `verb` carrying `record` verbatim (no checks).
    fn raw(verb: &str, version: &str, record: &str) -> Vec<u8> {
        format!("{verb} {version} {}\r\n", base64_encode(record.as_bytes())).into_bytes()
    }

    fn transfer_text() -> String {
        encode_meta(&MetaRecord::Transfer(transfer())).unwrap()
    }

    #[test]
    fn round_trips() {
        let mut null_sender = transfer();
        null_sender.sender = String::new();
        null_sender.recipients.truncate(1);
        null_sender.quarantines.truncate(1);
        let mut no_actions = release();
        no_actions.actions.clear();
        let cmds = [
            CpqCommand::Meta(MetaRecord::Transfer(transfer())),
            CpqCommand::Meta(MetaRecord::Transfer(null_sender)),
            CpqCommand::Meta(MetaRecord::Release(release())),
            CpqCommand::Meta(MetaRecord::Release(no_actions)),
            CpqCommand::Control(control(ControlAction::Release)),
            CpqCommand::Control(control(ControlAction::Expire)),
            CpqCommand::Control(control(ControlAction::Ready)),
        ];
        for cmd in cmds {
            let line = cmd.encode().unwrap();
            assert!(line.ends_with("\r\n"));
            assert_eq!(line.matches('\n').count(), 1);
            assert_eq!(parse_command(line.as_bytes()), Ok(Some(cmd.clone())));
            // Also without terminator, and with a bare LF.
            let bare = line.trim_end();
            assert_eq!(parse_command(bare.as_bytes()), Ok(Some(cmd.clone())));
            assert_eq!(
                parse_command(format!("{bare}\n").as_bytes()),
                Ok(Some(cmd.clone()))
            );
        }
    }

    /// Every address PVO accepts fits a record: a local part with spaces, angle brackets or
    /// quotes travels as an RFC 5321 Quoted-string and comes back as the same stored address
    /// (before, such a record could not be encoded and the message waited in `the.cpq.host`
    /// for ever). Records written by gateways before quoting still decode.
    #[test]
    fn addresses_that_need_quotes_travel_quoted() {
        let mut t = transfer();
        t.sender = "john doe@example.org".into();
        t.recipients = vec![
            "root> NOTIFY=NEVER ORCPT=rfc822;x@example.com".into(),
            "a\"b\\c@example.com".into(),
            "a@b@example.com".into(),
            "plain@example.com".into(),
        ];
        let cmd = CpqCommand::Meta(MetaRecord::Transfer(t.clone()));
        let line = cmd.encode().unwrap();
        assert_eq!(parse_command(line.as_bytes()), Ok(Some(cmd)));
        let text = transfer_text()
            .replace("from=alice@example.org", "from=\"john doe\"@example.org")
            .replace(
                "rcpt=bob@example.com",
                "rcpt=\"root> NOTIFY=NEVER\"@example.com",
            );
        let Ok(Some(CpqCommand::Meta(MetaRecord::Transfer(got)))) =
            parse_command(&raw("XPVO-META", "1", &text))
        else {
            panic!("quoted addresses refused");
        };
        assert_eq!(got.sender, "john doe@example.org");
        assert_eq!(got.recipients[0], "root> NOTIFY=NEVER@example.com");
        // The stored form from an older gateway: taken as it is.
        let old = transfer_text().replace("rcpt=bob@example.com", "rcpt=a%b@example.com");
        assert!(parse_command(&raw("XPVO-META", "1", &old)).is_ok());
        // What no gateway may send: an unquoted space, non-ASCII.
        for bad in ["rcpt=a b@example.com", "rcpt=j\u{f6}rg@example.com"] {
            let text = transfer_text().replace("rcpt=bob@example.com", bad);
            assert_eq!(
                parse_command(&raw("XPVO-META", "1", &text)),
                Err(CpqError::InvalidField { field: "rcpt" }),
                "{bad}"
            );
        }
        let mut t = transfer();
        t.recipients = vec!["j\u{f6}rg@example.com".into()];
        assert_eq!(
            CpqCommand::Meta(MetaRecord::Transfer(t)).encode(),
            Err(CpqError::InvalidField { field: "rcpt" })
        );
    }

    #[test]
    fn documented_limits_and_replies() {
        // Values stated in docs/cpq.md.
        assert_eq!(MAX_RECORD_LEN, 65_536);
        assert_eq!(MAX_BASE64_LEN, 87_384);
        assert_eq!(MAX_LINE_LEN, 87_409);
        assert_eq!(
            CpqError::LineTooLong { len: 90_000 }.reply().to_string(),
            "500 5.5.2 command line of 90000 bytes exceeds 87409"
        );
        assert_eq!(
            CpqError::RecordTooLarge.reply().to_string(),
            "552 5.3.4 record exceeds 65536 bytes"
        );
        assert_eq!(
            CpqError::Syntax { verb: "XPVO-META" }.reply().to_string(),
            "501 5.5.2 syntax: XPVO-META <version> <base64 record>"
        );
        assert_eq!(
            CpqError::Truncated { missing: "rcpt" }.reply().to_string(),
            "501 5.5.4 record truncated: missing rcpt"
        );
    }

    #[test]
    fn documented_example() {
        // The example in docs/cpq.md.
        let rec = ControlRecord {
            action: ControlAction::Release,
            gateway_id: "gw1".into(),
            gateway_mid: 23456,
            transfer_id: "gw1:23456".into(),
        };
        let line = CpqCommand::Control(rec).encode().unwrap();
        assert_eq!(
            line,
            "XPVO-CONTROL 1 YWN0aW9uPXJlbGVhc2UKZ2F0ZXdheT1ndzEKbWlkPTIzNDU2CnRyYW5zZmVyPWd3MToyMzQ1Ngo=\r\n"
        );
    }

    #[test]
    fn verbs_case_insensitive() {
        let line = CpqCommand::Control(control(ControlAction::Expire))
            .encode()
            .unwrap();
        let b64 = line.split(' ').nth(2).unwrap();
        for verb in ["xpvo-control", "XpVo-CoNtRoL", "XPVO-CONTROL"] {
            let l = format!("{verb} 1 {b64}");
            assert!(matches!(
                parse_command(l.as_bytes()),
                Ok(Some(CpqCommand::Control(_)))
            ));
        }
        let t = transfer_text();
        for verb in ["xpvo-meta", "Xpvo-Meta"] {
            assert!(matches!(
                parse_command(&raw(verb, "1", &t)),
                Ok(Some(CpqCommand::Meta(_)))
            ));
        }
    }

    #[test]
    fn non_cpq_lines_are_none() {
        let lines: &[&[u8]] = &[
            b"",
            b"\r\n",
            b"EHLO gw1\r\n",
            b"MAIL FROM:<a@b>\r\n",
            b"XPVO-METADATA 1 AAAA\r\n",
            b"XPVO-RELEASE 1 AAAA\r\n",
            b"XPVO\r\n",
            b" XPVO-META 1 AAAA\r\n",
            b"XPVO-META\t1 AAAA\r\n",
            b"XPVO-METAX\r\n",
            b"\xff\xfe\r\n",
        ];
        for l in lines {
            assert_eq!(parse_command(l), Ok(None), "{l:?}");
        }
        // A huge non-CPQ line is smtp-proto's business.
        let big = vec![b'A'; MAX_LINE_LEN * 2];
        assert_eq!(parse_command(&big), Ok(None));
    }

    #[test]
    fn command_line_errors() {
        let t = transfer_text();
        let good_b64 = base64_encode(t.as_bytes());
        let syntax = CpqError::Syntax { verb: "XPVO-META" };
        let cases: Vec<(Vec<u8>, CpqError)> = vec![
            (b"XPVO-META".to_vec(), syntax.clone()),
            (b"XPVO-META ".to_vec(), syntax.clone()),
            (b"XPVO-META 1".to_vec(), syntax.clone()),
            (b"XPVO-META 1 ".to_vec(), syntax.clone()),
            (
                format!("XPVO-META  1 {good_b64}").into_bytes(),
                syntax.clone(),
            ),
            (
                format!("XPVO-META 01 {good_b64}").into_bytes(),
                syntax.clone(),
            ),
            (
                format!("XPVO-META +1 {good_b64}").into_bytes(),
                syntax.clone(),
            ),
            (
                format!("XPVO-META x {good_b64}").into_bytes(),
                syntax.clone(),
            ),
            (
                format!("XPVO-META 9999999999 {good_b64}").into_bytes(),
                syntax.clone(),
            ),
            (
                format!("XPVO-META 2 {good_b64}").into_bytes(),
                CpqError::UnsupportedVersion {
                    verb: "XPVO-META",
                    version: 2,
                },
            ),
            (
                format!("XPVO-CONTROL 0 {good_b64}").into_bytes(),
                CpqError::UnsupportedVersion {
                    verb: "XPVO-CONTROL",
                    version: 0,
                },
            ),
            (
                format!("XPVO-META 1 {good_b64} ").into_bytes(),
                CpqError::BadBase64,
            ),
            (
                format!("XPVO-META 1 {good_b64}=").into_bytes(),
                CpqError::BadBase64,
            ),
            (b"XPVO-META 1 AAA".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 AA=A".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 A===".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 ====".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 AB==".to_vec(), CpqError::BadBase64), // non-zero unused bits
            (b"XPVO-META 1 AAB=".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 AA-_".to_vec(), CpqError::BadBase64), // URL alphabet
            (b"XPVO-META 1 AA==AA==".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 AA\rA".to_vec(), CpqError::BadBase64),
            (b"XPVO-META 1 AA\0A".to_vec(), CpqError::BadBase64),
            (
                format!("XPVO-META 1 {}", base64_encode(b"kind=\xff\n")).into_bytes(),
                CpqError::NotUtf8,
            ),
        ];
        for (line, want) in cases {
            assert_eq!(
                parse_command(&line),
                Err(want.clone()),
                "{}",
                String::from_utf8_lossy(&line)
            );
        }
    }

    #[test]
    fn size_limits() {
        // A line at exactly the limit is measured; one byte over is refused before decoding.
        let over = format!("XPVO-META 1 {}", "A".repeat(MAX_LINE_LEN));
        assert!(matches!(
            parse_command(over.as_bytes()),
            Err(CpqError::LineTooLong { .. })
        ));
        // A record one byte over MAX_RECORD_LEN (fits in the line, base64 too long).
        let big = "x".repeat(MAX_RECORD_LEN + 1);
        assert_eq!(
            parse_command(&raw("XPVO-META", "1", &big)),
            Err(CpqError::RecordTooLarge)
        );
        // Exactly MAX_RECORD_LEN decodes (and then fails as a record, not on size).
        let max = "x".repeat(MAX_RECORD_LEN);
        let line = raw("XPVO-CONTROL", "1", &max);
        assert!(line.len() <= MAX_LINE_LEN);
        assert_eq!(
            parse_command(&line),
            Err(CpqError::Truncated {
                missing: "end of line"
            })
        );
        // Encoding refuses a record over the limit.
        let mut t = transfer();
        t.recipients = vec!["r@example.com".into(); MAX_RECORD_LEN / 10];
        assert_eq!(
            CpqCommand::Meta(MetaRecord::Transfer(t)).encode(),
            Err(CpqError::RecordTooLarge)
        );
    }

    #[test]
    fn record_errors() {
        let t = transfer_text();
        let meta = |s: &str| parse_command(&raw("XPVO-META", "1", s));
        let ctl = |s: &str| parse_command(&raw("XPVO-CONTROL", "1", s));
        let cases: Vec<(Result<Option<CpqCommand>, CpqError>, CpqError)> = vec![
            // Truncation at every field boundary of a transfer.
            (meta(""), CpqError::Syntax { verb: "XPVO-META" }),
            (meta("\n"), CpqError::UnexpectedField { expected: "kind" }),
            (
                meta("kind=transfer\n"),
                CpqError::Truncated { missing: "gateway" },
            ),
            (
                meta("kind=transfer\ngateway=g\nmid=1\n"),
                CpqError::Truncated {
                    missing: "transfer",
                },
            ),
            (
                meta(&t[..t.len() - 1]),
                CpqError::Truncated {
                    missing: "end of line",
                },
            ),
            (
                meta(&t[..t.find("rcpt=").unwrap()]),
                CpqError::Truncated { missing: "rcpt" },
            ),
            (
                meta(&t[..t.find("quarantine=").unwrap()]),
                CpqError::Truncated {
                    missing: "quarantine",
                },
            ),
            (
                meta(&t[..t.find("threat=").unwrap()]),
                CpqError::Truncated { missing: "threat" },
            ),
            (
                meta(&t[..t.find("kind").unwrap() + 4]),
                CpqError::Truncated {
                    missing: "end of line",
                },
            ),
            // Wrong order / unknown / trailing.
            (
                meta(&t.replacen("gateway=", "gw=", 1)),
                CpqError::UnexpectedField {
                    expected: "gateway",
                },
            ),
            (
                meta(&t.replacen("gateway=", "GATEWAY=", 1)),
                CpqError::UnexpectedField {
                    expected: "gateway",
                },
            ),
            (
                meta(&t.replacen("mid=23456\n", "mid 23456\n", 1)),
                CpqError::UnexpectedField { expected: "mid" },
            ),
            (meta(&format!("{t}extra=1\n")), CpqError::TrailingFields),
            (meta(&format!("{t}\n")), CpqError::TrailingFields),
            (
                meta(&t.replacen("kind=transfer", "kind=bogus", 1)),
                CpqError::UnknownKind,
            ),
            (
                meta(&t.replacen("kind=transfer", "kind=bo\0gus", 1)),
                CpqError::ControlChar { field: "kind" },
            ),
            // Empty lists.
            (
                meta(&t.replace("rcpt=bob@example.com\nrcpt=carol@example.com\n", "")),
                CpqError::NoRecipients,
            ),
            (
                // Recipients followed directly by something that is not a quarantine.
                meta(&format!("{}exit=\n", &t[..t.find("quarantine=").unwrap()])),
                CpqError::NoQuarantines,
            ),
            // Field values.
            (
                meta(&t.replacen("reason=content-filter", "reason=spam", 1)),
                CpqError::UnknownReasonKind,
            ),
            (
                meta(&t.replacen("reason=content-filter", "reason=Content-Filter", 1)),
                CpqError::UnknownReasonKind,
            ),
            (
                meta(&t.replacen("threat=0", "threat=6", 1)),
                CpqError::ThreatLevel { level: 6 },
            ),
            (
                meta(&t.replacen("threat=0", "threat=99999999999", 1)),
                CpqError::ThreatLevel {
                    level: 99_999_999_999,
                },
            ),
            (
                meta(&t.replacen("threat=0", "threat=-1", 1)),
                CpqError::InvalidField { field: "threat" },
            ),
            (
                meta(&t.replacen("threat=0", "threat=", 1)),
                CpqError::InvalidField { field: "threat" },
            ),
            (
                meta(&t.replacen("mid=23456", "mid=023456", 1)),
                CpqError::InvalidField { field: "mid" },
            ),
            (
                meta(&t.replacen("mid=23456", "mid=18446744073709551616", 1)),
                CpqError::InvalidField { field: "mid" },
            ),
            (
                meta(&t.replacen("received=1795000000", "received=1.5", 1)),
                CpqError::InvalidField { field: "received" },
            ),
            (
                meta(&t.replacen("exit=1795864000", "exit=soon", 1)),
                CpqError::InvalidField { field: "exit" },
            ),
            (
                meta(&t.replacen("gateway=gw-1.example", "gateway=", 1)),
                CpqError::InvalidField { field: "gateway" },
            ),
            (
                meta(&t.replacen("gateway=gw-1.example", "gateway=gw 1", 1)),
                CpqError::InvalidField { field: "gateway" },
            ),
            (
                meta(&t.replacen(
                    "transfer=",
                    &format!("transfer={}", "a".repeat(MAX_ID_LEN)),
                    1,
                )),
                CpqError::InvalidField { field: "transfer" },
            ),
            (
                meta(&t.replacen("quarantine=Policy", "quarantine=", 1)),
                CpqError::InvalidField {
                    field: "quarantine",
                },
            ),
            (
                meta(&t.replacen("reason-name=block_exe", "reason-name=", 1)),
                CpqError::InvalidField {
                    field: "reason-name",
                },
            ),
            (
                meta(&t.replacen("rcpt=bob@example.com", "rcpt=", 1)),
                CpqError::InvalidField { field: "rcpt" },
            ),
            (
                meta(&t.replacen("rcpt=bob@example.com", "rcpt=<bob@example.com>", 1)),
                CpqError::InvalidField { field: "rcpt" },
            ),
            // Smuggled CR, NUL, other controls (LF inside a value just splits the line).
            (
                meta(&t.replacen("from=alice@example.org", "from=alice@example.org\r", 1)),
                CpqError::ControlChar { field: "from" },
            ),
            (
                meta(&t.replacen(
                    "rcpt=bob@example.com",
                    "rcpt=bob@example.com\r\nRCPT TO:<x@y>",
                    1,
                )),
                CpqError::ControlChar { field: "rcpt" },
            ),
            (
                meta(&t.replacen("quarantine=Policy", "quarantine=Pol\0icy", 1)),
                CpqError::ControlChar {
                    field: "quarantine",
                },
            ),
            (
                meta(&t.replacen("reason-name=block_exe", "reason-name=blo\u{1b}[2J", 1)),
                CpqError::ControlChar {
                    field: "reason-name",
                },
            ),
            (
                meta(&t.replacen("reason-name=block_exe", "reason-name=a\u{85}b", 1)),
                CpqError::ControlChar {
                    field: "reason-name",
                },
            ),
            (
                meta(&t.replacen("gateway=gw-1.example", "gateway=gw\x7f", 1)),
                CpqError::ControlChar { field: "gateway" },
            ),
            (
                meta(&t.replacen("quarantine=Policy", "quarantine=Policy\nquarantine=X", 1)),
                CpqError::UnexpectedField { expected: "reason" },
            ),
            // Control records.
            (
                ctl("action=release\ngateway=g\nmid=1\n"),
                CpqError::Truncated {
                    missing: "transfer",
                },
            ),
            (
                ctl("action=delete\ngateway=g\nmid=1\ntransfer=t\n"),
                CpqError::UnknownAction,
            ),
            (
                ctl("action=release\ngateway=g\nmid=1\ntransfer=t\nx=1\n"),
                CpqError::TrailingFields,
            ),
            (
                ctl("action=release\ngateway=g\nmid=1\ntransfer=t\r\n"),
                CpqError::ControlChar { field: "transfer" },
            ),
            (
                ctl("kind=transfer\n"),
                CpqError::UnexpectedField { expected: "action" },
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Err(want), "case {i}");
        }
    }

    #[test]
    fn release_record_errors() {
        let r = encode_meta(&MetaRecord::Release(release())).unwrap();
        let meta = |s: &str| parse_command(&raw("XPVO-META", "1", s));
        let cases = vec![
            (
                meta(&r[..r.find("released-by").unwrap()]),
                CpqError::Truncated {
                    missing: "released-by",
                },
            ),
            (
                meta(&r.replace("released-by=Policy\nreleased-by=Outbreak\n", "")),
                CpqError::NoReleasedBy,
            ),
            (
                meta(&r.replacen("released-by=Policy", "released-by=", 1)),
                CpqError::InvalidField {
                    field: "released-by",
                },
            ),
            (
                meta(&r.replacen("subject-prepend=", "subject-rewrite=", 1)),
                CpqError::UnknownReleaseAction,
            ),
            (
                meta(&r.replacen("subject-prepend=[SUSPICIOUS] ", "subject-prepend=a\rb", 1)),
                CpqError::ControlChar {
                    field: "subject-prepend",
                },
            ),
            (
                meta(&r.replacen("header-name=X-PVO-Released", "header-name=X:Y", 1)),
                CpqError::InvalidField {
                    field: "header-name",
                },
            ),
            (
                meta(&r.replacen("header-name=X-PVO-Released", "header-name=X Y", 1)),
                CpqError::InvalidField {
                    field: "header-name",
                },
            ),
            (
                meta(&r.replacen("header-name=X-PVO-Released", "header-name=", 1)),
                CpqError::InvalidField {
                    field: "header-name",
                },
            ),
            (
                meta(&r.replacen("header-value=yes", "header-value=y\0es", 1)),
                CpqError::ControlChar {
                    field: "header-value",
                },
            ),
            (
                meta(&r.replacen("header-value=yes\n", "", 1)),
                CpqError::UnexpectedField {
                    expected: "header-value",
                },
            ),
            (
                meta(&r.replacen("strip-attachments=", "strip-attachments=1", 1)),
                CpqError::InvalidField {
                    field: "strip-attachments",
                },
            ),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, Err(want), "case {i}");
        }
    }

    #[test]
    fn encode_refuses_what_parse_refuses() {
        let enc = |t: TransferRecord| CpqCommand::Meta(MetaRecord::Transfer(t)).encode();
        let mut t = transfer();
        t.recipients.clear();
        assert_eq!(enc(t), Err(CpqError::NoRecipients));
        let mut t = transfer();
        t.quarantines.clear();
        assert_eq!(enc(t), Err(CpqError::NoQuarantines));
        let mut t = transfer();
        t.quarantines[0].threat_level = 6;
        assert_eq!(enc(t), Err(CpqError::ThreatLevel { level: 6 }));
        let mut t = transfer();
        t.sender = "a@b\r\nRSET".into();
        assert_eq!(enc(t), Err(CpqError::ControlChar { field: "from" }));
        let mut t = transfer();
        t.quarantines[0].name = "a\nb".into();
        assert_eq!(
            enc(t),
            Err(CpqError::ControlChar {
                field: "quarantine"
            })
        );
        let mut r = release();
        r.released_by.clear();
        assert_eq!(
            CpqCommand::Meta(MetaRecord::Release(r)).encode(),
            Err(CpqError::NoReleasedBy)
        );
        let mut r = release();
        r.actions.push(ReleaseAction::AddHeader {
            name: "Bad:Name".into(),
            value: String::new(),
        });
        assert_eq!(
            CpqCommand::Meta(MetaRecord::Release(r)).encode(),
            Err(CpqError::InvalidField {
                field: "header-name"
            })
        );
        let mut c = control(ControlAction::Release);
        c.transfer_id = String::new();
        assert_eq!(
            CpqCommand::Control(c).encode(),
            Err(CpqError::InvalidField { field: "transfer" })
        );
    }

    #[test]
    fn replies() {
        let cases = [
            (CpqError::LineTooLong { len: 99 }, 500, "5.5.2"),
            (CpqError::Syntax { verb: "XPVO-META" }, 501, "5.5.2"),
            (CpqError::BadBase64, 501, "5.5.2"),
            (
                CpqError::UnsupportedVersion {
                    verb: "XPVO-META",
                    version: 2,
                },
                504,
                "5.5.4",
            ),
            (CpqError::RecordTooLarge, 552, "5.3.4"),
            (CpqError::NotUtf8, 501, "5.5.4"),
            (CpqError::ThreatLevel { level: 6 }, 501, "5.5.4"),
            (CpqError::NoRecipients, 501, "5.5.4"),
            (CpqError::ControlChar { field: "from" }, 501, "5.5.4"),
        ];
        for (e, code, enh) in cases {
            let r = e.reply();
            assert_eq!((r.code, r.enhanced), (code, enh), "{e:?}");
            let line = r.to_string();
            assert!(!line.contains(['\r', '\n']));
            assert!(line.starts_with(&format!("{code} {enh} ")));
        }
        assert_eq!(
            CpqError::UnsupportedVersion {
                verb: "XPVO-META",
                version: 2
            }
            .reply()
            .to_string(),
            "504 5.5.4 unsupported XPVO-META version 2"
        );
        assert_eq!(
            CpqError::ThreatLevel { level: 6 }.reply().to_string(),
            "501 5.5.4 threat level 6 out of range 0-5"
        );
    }

    #[test]
    fn accepted_reply_mid() {
        assert_eq!(
            accepted_reply(98765),
            "250 2.0.0 Ok: Message 98765 accepted"
        );
        let cases: &[(&[u8], Option<u64>)] = &[
            (b"250 2.0.0 Ok: Message 98765 accepted", Some(98765)),
            (b"250 2.0.0 Ok: Message 98765 accepted\r\n", Some(98765)),
            (b"250 Ok: Message 1 accepted\n", Some(1)),
            (b"250 2.0.0 Ok: Message 0 accepted", Some(0)),
            (
                b"250 2.0.0 Ok: Message 18446744073709551615 accepted",
                Some(u64::MAX),
            ),
            (b"250 2.0.0 Ok: Message 18446744073709551616 accepted", None),
            (b"250 2.0.0 Ok: Message 012 accepted", None),
            (b"250 2.0.0 Ok: Message  12 accepted", None),
            (b"250 2.0.0 Ok: Message 12 accepted ", None),
            (b"250 2.0.0 Ok: Message abc accepted", None),
            (b"250 2.0.0 Ok: Message  accepted", None),
            (b"250-2.0.0 Ok: Message 12 accepted", None),
            (b"251 2.0.0 Ok: Message 12 accepted", None),
            (b"550 5.0.0 Ok: Message 12 accepted", None),
            (b"250 2.0.0 Ok", None),
            (b"", None),
            (b"250 2.0.0 Ok: Message \xff accepted", None),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_accepted_reply(reply), *want, "{reply:?}");
        }
        for mid in [0, 1, 42, u64::MAX] {
            assert_eq!(
                parse_accepted_reply(accepted_reply(mid).as_bytes()),
                Some(mid)
            );
        }
    }

    #[test]
    fn ehlo() {
        assert_eq!(
            ehlo_keywords(Role::Manager),
            ["XPVO-META 1", "XPVO-CONTROL 1"]
        );
        assert_eq!(
            ehlo_keywords(Role::Gateway),
            ["XPVO-META 1", "XPVO-RELEASE 1"]
        );
        for ext in [Extension::Meta, Extension::Release, Extension::Control] {
            assert_eq!(parse_ehlo_keyword(ext.ehlo_line()), Some((ext, vec![1])));
        }
        assert_eq!(
            parse_ehlo_keyword("xpvo-meta 1 2"),
            Some((Extension::Meta, vec![1, 2]))
        );
        for bad in [
            "XPVO-META",
            "XPVO-META ",
            "XPVO-META x",
            "PIPELINING",
            "XPVO-METAX 1",
            "",
        ] {
            assert_eq!(parse_ehlo_keyword(bad), None, "{bad}");
        }
    }

    #[test]
    fn base64_table() {
        let cases: &[(&[u8], &str)] = &[
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
            (b"\xff\xfe\x00", "//4A"),
        ];
        for (raw, enc) in cases {
            assert_eq!(base64_encode(raw), *enc);
            assert_eq!(base64_decode(enc.as_bytes()).as_deref(), Some(*raw));
        }
        assert_eq!(base64_decode(b""), None);
        // Not strict base64: missing, misplaced or extra padding, unused bits set,
        // whitespace, another alphabet.
        for bad in [
            "Zg", "Zg=", "Z===", "Zg==Zg==", "=Zg=", "Zh==", "Zm9=", "Zm9v\r\n", " Zm9v", "Zm-_",
        ] {
            assert_eq!(base64_decode(bad.as_bytes()), None, "{bad:?}");
        }
    }

    /// xorshift64*: a tiny deterministic PRNG for the fuzz-style test.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn mutate(rng: &mut Rng, v: &mut Vec<u8>) {
        const INTERESTING: &[u8] = b"\r\n\0=+/ \x7f\xff\xc3A1-";
        for _ in 0..=rng.below(4) {
            match rng.below(6) {
                0 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.next() as u8;
                }
                1 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v.remove(i);
                }
                2 => {
                    let i = rng.below(v.len() + 1);
                    v.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
                }
                3 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v.truncate(i);
                }
                4 if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
                _ => {
                    let i = rng.below(v.len() + 1);
                    let j = rng.below(v.len() + 1);
                    let (a, b) = (i.min(j), i.max(j));
                    let dup: Vec<u8> = v[a..b].to_vec();
                    v.splice(b..b, dup);
                }
            }
        }
    }

    fn with_details(d: &str) -> TransferRecord {
        let mut t = transfer();
        t.quarantines[0].details = Some(d.to_string());
        t
    }

    #[test]
    fn details_round_trip_and_hostile_content_stays_inside_its_line() {
        let hostile = [
            r#"{"evidence":[{"condition":"subject_contains","matched":"[quarantine-test]"}]}"#
                .to_string(),
            // CR, LF, NUL, quotes, a fake next field and a fake next command: all data.
            "{\"matched\":\"a\r\nquarantine=Evil\nreason=virus\u{0}\\\"\r\n.\r\nMAIL FROM:<x>\"}"
                .to_string(),
            "\u{0}\u{7f}\u{85}\u{2028}é😀=\n=".to_string(),
            "x".repeat(MAX_DETAILS_JSON_LEN),
        ];
        for d in &hostile {
            let cmd = CpqCommand::Meta(MetaRecord::Transfer(with_details(d)));
            let line = cmd.encode().unwrap();
            assert_eq!(line.matches('\n').count(), 1, "one line");
            assert!(!line[..line.len() - 2].contains(['\r', '\0']));
            assert_eq!(parse_command(line.as_bytes()), Ok(Some(cmd.clone())));
            let text = encode_meta(&MetaRecord::Transfer(with_details(d))).unwrap();
            // The record keeps its line structure: details is one line after exit.
            let lines: Vec<&str> = text.lines().collect();
            let at = lines
                .iter()
                .position(|l| l.starts_with("details="))
                .unwrap();
            assert!(lines[at - 1].starts_with("exit="), "{text}");
            assert_eq!(
                lines
                    .iter()
                    .filter(|l| l.starts_with("quarantine="))
                    .count(),
                5
            );
        }
        // Every quarantine may carry its own.
        let mut t = transfer();
        for (i, q) in t.quarantines.iter_mut().enumerate() {
            q.details = Some(format!("{{\"n\":{i}}}"));
        }
        let cmd = CpqCommand::Meta(MetaRecord::Transfer(t));
        assert_eq!(
            parse_command(cmd.encode().unwrap().as_bytes()),
            Ok(Some(cmd))
        );
    }

    #[test]
    fn details_are_bounded_optional_and_strict() {
        // Too large to send: the sender must shorten it first.
        let huge = "y".repeat(MAX_DETAILS_JSON_LEN + 1);
        assert_eq!(
            CpqCommand::Meta(MetaRecord::Transfer(with_details(&huge))).encode(),
            Err(CpqError::DetailsTooLarge)
        );
        assert_eq!(
            CpqCommand::Meta(MetaRecord::Transfer(with_details(""))).encode(),
            Err(CpqError::InvalidField { field: "details" })
        );
        // A record without the line (an older gateway) parses, with no details.
        let old = transfer_text();
        assert!(!old.contains("details="));
        let Ok(Some(CpqCommand::Meta(MetaRecord::Transfer(t)))) =
            parse_command(&raw("XPVO-META", "1", &old))
        else {
            panic!("an old record parses")
        };
        assert!(t.quarantines.iter().all(|q| q.details.is_none()));
        // Hostile values on the wire.
        let with = |v: &str| {
            old.replacen(
                "exit=1795864000\n",
                &format!("exit=1795864000\ndetails={v}\n"),
                1,
            )
        };
        let big = base64_encode("z".repeat(MAX_DETAILS_JSON_LEN + 3).as_bytes());
        let cases = [
            (with(""), CpqError::InvalidField { field: "details" }),
            (
                with("not base64!"),
                CpqError::InvalidField { field: "details" },
            ),
            (with("eyJ9\r"), CpqError::InvalidField { field: "details" }),
            (
                with(&base64_encode(b"\xff\xfe")),
                CpqError::InvalidField { field: "details" },
            ),
            (with(&big), CpqError::DetailsTooLarge),
        ];
        for (rec, want) in cases {
            assert!(rec.contains("details="), "{rec}");
            let got = parse_command(&raw("XPVO-META", "1", &rec));
            assert_eq!(got, Err(want), "{rec:?}");
        }
        // Two details lines for one quarantine: the second is no known field.
        let twice = with("e30=").replacen("details=e30=\n", "details=e30=\ndetails=e30=\n", 1);
        assert!(parse_command(&raw("XPVO-META", "1", &twice)).is_err());
    }

    #[test]
    fn fuzz_never_panics() {
        let seeds: Vec<String> = vec![
            transfer_text(),
            encode_meta(&MetaRecord::Release(release())).unwrap(),
            encode_control(&control(ControlAction::Expire)).unwrap(),
        ];
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut ok = 0;
        for i in 0..10_000 {
            let seed = &seeds[i % seeds.len()];
            let verb = if i % 3 == 2 {
                "XPVO-CONTROL"
            } else {
                "XPVO-META"
            };
            // Half the time mutate the decoded record (reaches the record parser), half the
            // time the whole command line (reaches framing, version and base64).
            let line = if i % 2 == 0 {
                let mut rec = seed.clone().into_bytes();
                mutate(&mut rng, &mut rec);
                format!("{verb} 1 {}\r\n", base64_encode(&rec)).into_bytes()
            } else {
                let mut line = raw(verb, "1", seed);
                mutate(&mut rng, &mut line);
                line
            };
            if check_command_line(&line) {
                ok += 1;
            }
        }
        assert!(ok > 0, "some mutations should still parse");
    }
}
