//! A bounded, flat view of a MIME message: headers, parts, true file types, hashes, text, URLs.
//!
//! [`scan`] turns the raw bytes of an RFC 5322 message into a [`ScannedMessage`] that every
//! engine in this crate reads. It either returns the whole view or [`Unscannable`]: there is
//! no partial view, because a filter that sees half a message would call the other half
//! clean.
//!
//! The parsing itself is mail-parser's: its header parser (RFC 2047 words, RFC 2231
//! parameters, addresses), its boundary search and its transfer decoders. What this module
//! adds is the walk that drives them. mail-parser's own `MessageParser::parse` has no limits:
//! multipart and `message/rfc822` nesting is unbounded (a deep `message/rfc822` chain builds a
//! recursive structure whose drop, and whose `into_owned` inside an encoded nested message,
//! recurse once per level and can exhaust the stack), and an encoded `message/rfc822` deeper
//! than three levels silently becomes an opaque binary part. So instead of calling `parse`
//! and inspecting the result, [`scan`] runs the same algorithm itself over mail-parser's
//! public `MessageStream` primitives, checking every [`Limits`] bound *before* doing the work
//! the bound protects: header blocks are measured before they are parsed, the part count and
//! the depth are checked before a part is opened, decoded bytes are counted as they appear.
//! The walk keeps a flat stack of open multiparts and nested messages, so nesting costs no
//! recursion; the only recursion is into base64 or quoted-printable `message/rfc822` parts,
//! one level per nesting level, which [`Limits::max_depth`] caps.
//!
//! Depth counts containers: the body of a single-part message is at depth 0, the children of
//! a top-level multipart at depth 1, and every nested multipart or `message/rfc822` adds one.
//!
//! # Security
//!
//! The input is an arbitrary message from the network. Every bound in [`Limits`] turns into
//! `Err(Unscannable)` when exceeded, and the walk is linear in the message size: the stream
//! only moves forward, every loop iteration consumes a header block (and there are at most
//! `max_parts` of them), and a declared multipart whose boundary never appears ends the scan
//! as unscannable instead of being searched for again. Ambiguous structure is resolved the
//! way mail clients resolve it, not in the way that hides content: a base64 or
//! quoted-printable part that does not decode cleanly (bad characters, or the closing
//! boundary missing) is decoded leniently and marked `malformed`, so an executable behind a
//! broken base64 line is still seen as an executable.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::decoders::html::html_to_text;
use mail_parser::parsers::MessageStream;
use mail_parser::{
    Address, ContentType, GetHeader, Header, HeaderName, HeaderValue, MessageParser,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bytescan::find_from;
use crate::filetype::{self, ArchiveInfo, FileType};

/// Bounds on what [`scan`] is willing to parse. Every field has a default (see
/// [`Limits::default`]); deserializing fills in missing fields with the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest raw message (bytes). Default 64 MiB.
    pub max_message_bytes: usize,
    /// Deepest nesting of multiparts and `message/rfc822` parts. Default 20.
    pub max_depth: usize,
    /// Most MIME entities (header blocks: containers, leaves and nested messages). Default 500.
    pub max_parts: usize,
    /// Most decoded bytes over all parts, including decoded nested messages. Default 50 MiB.
    pub max_decoded_bytes: usize,
    /// Most physical lines in one header block. Default 1,000.
    pub max_header_lines: usize,
    /// Largest header block (bytes). Default 256 KiB.
    pub max_header_bytes: usize,
    /// Most entries in one archive before it is flagged `too_many_entries`. Default 10,000
    /// (clamd's `MaxFiles`).
    pub max_archive_entries: u64,
    /// Largest declared archive member before it is flagged `member_too_large`. Default
    /// 100 MiB (clamd's `MaxFileSize`).
    pub max_archive_member_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 64 << 20,
            max_depth: 20,
            max_parts: 500,
            max_decoded_bytes: 50 << 20,
            max_header_lines: 1_000,
            max_header_bytes: 256 << 10,
            max_archive_entries: 10_000,
            max_archive_member_bytes: 100 << 20,
        }
    }
}

/// A message that cannot be scanned within [`Limits`]. Policy must never treat it as clean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("message unscannable: {reason}")]
pub struct Unscannable {
    /// Which bound was exceeded, or which structure was ambiguous.
    pub reason: String,
}

impl Unscannable {
    fn new(reason: impl Into<String>) -> Unscannable {
        Unscannable {
            reason: reason.into(),
        }
    }
}

/// One top-level header field, decoded (RFC 2047 words, address display names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HeaderField {
    /// The name as written (known names in their canonical case).
    pub name: String,
    /// The decoded, unfolded value.
    pub value: String,
}

/// One leaf MIME part (a body text or an attachment), in message order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScannedPart {
    /// Declared content type, lowercase (`text/plain`, `application/pdf`).
    pub content_type: String,
    /// Declared filename (`Content-Disposition: filename`, else `Content-Type: name`).
    pub filename: Option<String>,
    /// Whether this part counts as an attachment: it has a filename, is declared
    /// `attachment`, or is not `text/*`.
    pub attachment: bool,
    /// Decoded size in bytes.
    pub size: usize,
    /// True file type from the decoded content.
    pub file_type: FileType,
    /// SHA-256 of the decoded content, lowercase hex; empty for parts that are not
    /// attachments (file-hash outbreak rules match attachments only).
    pub sha256: String,
    /// Decoded text for `text/*` parts and for parts whose content is text or HTML (HTML is
    /// converted to its visible text). Not serialized.
    #[serde(skip)]
    pub text: Option<String>,
    /// Nesting depth (0 for the body of a single-part message).
    pub depth: usize,
    /// Archive structure, for archives and zip-based documents.
    pub archive: Option<ArchiveInfo>,
    /// The transfer encoding did not decode cleanly and was decoded leniently.
    pub malformed: bool,
    /// Byte range of the part in the raw message, from its first header line to the end of
    /// its body (before the line break that precedes the next boundary), for rewriting
    /// such as stripping an attachment. `None` for parts inside a base64 or
    /// quoted-printable encoded `message/rfc822`, which only exist after decoding; strip
    /// the enclosing part instead.
    pub raw_span: Option<(usize, usize)>,
}

/// The bounded view of one message that all engines read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScannedMessage {
    /// Top-level header fields in order.
    pub headers: Vec<HeaderField>,
    /// Decoded subject (empty when absent).
    pub subject: String,
    /// Leaf parts in message order, including those of nested messages.
    pub parts: Vec<ScannedPart>,
    /// URLs found in text and HTML parts (deduplicated, in first-seen order).
    pub urls: Vec<String>,
    /// Host names of those URLs, lowercase, sorted and deduplicated.
    pub domains: Vec<String>,
    /// Raw message size in bytes.
    pub size: usize,
    /// Total decoded bytes.
    pub decoded_size: usize,
    /// Deepest nesting seen.
    pub depth: usize,
}

impl ScannedMessage {
    /// Values of the top-level header fields called `name` (case-insensitive).
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }

    /// The parts that count as attachments.
    pub fn attachments(&self) -> impl Iterator<Item = &ScannedPart> {
        self.parts.iter().filter(|p| p.attachment)
    }

    /// The texts of all parts that have one, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> + Clone {
        self.parts.iter().filter_map(|p| p.text.as_deref())
    }

    /// The first attachment whose archive structure makes it unscannable, as a reason such
    /// as `attachment "a.zip": nested archive`.
    pub fn archive_problem(&self) -> Option<String> {
        self.parts.iter().find_map(|p| {
            let problem = p.archive.as_ref()?.problem()?;
            Some(format!(
                "attachment {:?}: {problem}",
                p.filename.as_deref().unwrap_or(p.file_type.name())
            ))
        })
    }
}

/// Parses `raw` within `limits`.
///
/// Returns the complete view, or `Err(Unscannable)` when any bound is exceeded or the
/// structure is ambiguous. Time and memory are linear in `raw.len()`.
pub fn scan(raw: &[u8], limits: &Limits) -> Result<ScannedMessage, Unscannable> {
    if raw.len() > limits.max_message_bytes {
        return Err(Unscannable::new(format!(
            "message of {} bytes exceeds the {}-byte limit",
            raw.len(),
            limits.max_message_bytes
        )));
    }
    let mut walker = Walker {
        limits,
        parser: MessageParser::new(),
        entities: 0,
        decoded: 0,
        depth: 0,
        headers: Vec::new(),
        subject: String::new(),
        parts: Vec::new(),
        urls: Vec::new(),
    };
    walker.walk(raw, 0, true)?;
    let Walker {
        headers,
        subject,
        parts,
        mut urls,
        decoded,
        depth,
        ..
    } = walker;
    let mut seen = std::collections::HashSet::new();
    urls.retain(|u| seen.insert(u.clone()));
    let mut domains: Vec<String> = urls.iter().filter_map(|u| url_host(u)).collect();
    domains.sort_unstable();
    domains.dedup();
    Ok(ScannedMessage {
        headers,
        subject,
        parts,
        urls,
        domains,
        size: raw.len(),
        decoded_size: decoded,
        depth,
    })
}

/// An open container on the walk's stack.
enum Frame {
    Multipart {
        boundary: Vec<u8>,
        digest: bool,
    },
    /// A non-encoded `message/rfc822` whose body ends where its parent's does.
    Message,
}

fn innermost_boundary(stack: &[Frame]) -> Option<&[u8]> {
    stack.iter().rev().find_map(|f| match f {
        Frame::Multipart { boundary, .. } => Some(boundary.as_slice()),
        Frame::Message => None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Cte {
    Identity,
    Base64,
    QuotedPrintable,
}

struct Walker<'l> {
    limits: &'l Limits,
    parser: MessageParser,
    entities: usize,
    decoded: usize,
    depth: usize,
    headers: Vec<HeaderField>,
    subject: String,
    parts: Vec<ScannedPart>,
    urls: Vec<String>,
}

impl Walker<'_> {
    /// Walks one message held in `data`, whose body sits at `base_depth`.
    fn walk(&mut self, data: &[u8], base_depth: usize, top: bool) -> Result<(), Unscannable> {
        let mut stream = MessageStream::new(data);
        let mut stack: Vec<Frame> = Vec::new();
        let mut first = true;
        'outer: loop {
            let off = stream.offset();
            if off >= data.len() && !first {
                break;
            }
            let (headers, body_start) = self.header_block(data, off)?;
            if body_start > off {
                stream.skip_bytes(body_start - off);
            }
            if headers.is_empty() && body_start >= data.len() && !first {
                break;
            }
            self.entities += 1;
            if self.entities > self.limits.max_parts {
                return Err(Unscannable::new(format!(
                    "more than {} MIME parts",
                    self.limits.max_parts
                )));
            }
            let depth = base_depth + stack.len();
            self.depth = self.depth.max(depth);
            if first && top {
                self.top_headers(data, off, &headers);
            }
            first = false;

            let ct = headers
                .header_value(&HeaderName::ContentType)
                .and_then(|v| v.as_content_type());
            let in_digest = matches!(stack.last(), Some(Frame::Multipart { digest: true, .. }));
            let (ctype, subtype) = match ct {
                Some(ct) => (ct.ctype(), ct.subtype().unwrap_or("")),
                None if in_digest => ("message", "rfc822"),
                None => ("text", "plain"),
            };
            let cte = match headers.header_value(&HeaderName::ContentTransferEncoding) {
                Some(HeaderValue::Text(t)) if t.trim().eq_ignore_ascii_case("base64") => {
                    Cte::Base64
                }
                Some(HeaderValue::Text(t)) if t.trim().eq_ignore_ascii_case("quoted-printable") => {
                    Cte::QuotedPrintable
                }
                _ => Cte::Identity,
            };

            let boundary_attr = ct
                .and_then(|c| c.attribute("boundary"))
                .filter(|b| !b.is_empty());
            if ctype.eq_ignore_ascii_case("multipart") {
                if let Some(boundary) = boundary_attr {
                    if !stream.seek_next_part(boundary.as_bytes()) {
                        return Err(Unscannable::new(format!(
                            "multipart boundary {boundary:?} never appears"
                        )));
                    }
                    self.check_depth(depth + 1)?;
                    stack.push(Frame::Multipart {
                        boundary: boundary.as_bytes().to_vec(),
                        digest: subtype.eq_ignore_ascii_case("digest"),
                    });
                    stream.skip_crlf();
                    continue;
                }
                // A multipart without a boundary is one opaque body; it is scanned as text
                // below, so nothing in it escapes the filters.
            }
            let is_message = ctype.eq_ignore_ascii_case("message")
                && (subtype.eq_ignore_ascii_case("rfc822")
                    || subtype.eq_ignore_ascii_case("global"));
            if is_message && cte == Cte::Identity {
                self.check_depth(depth + 1)?;
                stack.push(Frame::Message);
                continue;
            }

            // A leaf: decode up to the innermost boundary (or the end of the data).
            let boundary = innermost_boundary(&stack);
            let bound = boundary.unwrap_or(b"");
            // Quoted-printable: the part's end is found first and its bytes decoded without
            // a boundary, because mail-parser's boundary-aware decoder subtracts past the
            // start of its buffer on a soft line break just before the boundary
            // (`U=\r\n--b1`: an overflow panic where overflow checks are on; fuzz/corpus/mime
            // keeps the input).
            let mut qp_end = None;
            let (end, decoded) = match cte {
                Cte::Base64 => stream.decode_base64_mime(bound),
                Cte::QuotedPrintable => {
                    let (end, found) = stream.seek_part_end(boundary);
                    let raw = data.get(body_start..end.max(body_start)).unwrap_or(b"");
                    match MessageStream::new(raw).decode_quoted_printable_mime(b"") {
                        (e, decoded) if found && e != usize::MAX => (end, decoded),
                        _ => {
                            qp_end = Some(end);
                            (usize::MAX, Cow::Borrowed(&b""[..]))
                        }
                    }
                }
                Cte::Identity => stream.mime_part(bound),
            };
            let (body, malformed, end): (Cow<'_, [u8]>, bool, usize) = if end == usize::MAX {
                // Bad encoding or no closing boundary: take the raw body up to the boundary or
                // the end of the data, and decode it the lenient way mail clients do.
                let (end, _found) = match qp_end {
                    Some(end) => (end, false),
                    None => stream.seek_part_end(boundary),
                };
                let raw = data.get(body_start..end.max(body_start)).unwrap_or(b"");
                let body = match cte {
                    Cte::Base64 => Cow::Owned(lenient_base64(raw)),
                    Cte::QuotedPrintable => Cow::Owned(lenient_qp(raw)),
                    Cte::Identity => Cow::Borrowed(raw),
                };
                (body, cte != Cte::Identity, end)
            } else {
                (decoded, false, end)
            };
            self.decoded = self.decoded.saturating_add(body.len());
            if self.decoded > self.limits.max_decoded_bytes {
                return Err(Unscannable::new(format!(
                    "more than {} decoded bytes",
                    self.limits.max_decoded_bytes
                )));
            }
            if is_message {
                // An encoded message/rfc822: walk the decoded bytes as a message of its own.
                self.check_depth(depth + 1)?;
                self.walk(&body, depth + 1, false)?;
            } else {
                let span = top.then_some((off, end.clamp(body_start, data.len())));
                let leaf = Leaf {
                    ctype,
                    subtype,
                    depth,
                    malformed,
                    span,
                };
                self.leaf(&headers, ct, &leaf, &body);
            }

            if boundary.is_none() {
                // The leaf ran to the end of the data.
                break;
            }
            // The stream sits just after "--boundary", or at the end of the data.
            loop {
                while matches!(stack.last(), Some(Frame::Message)) {
                    stack.pop();
                }
                if stream.offset() >= data.len() {
                    break 'outer;
                }
                if !stream.is_multipart_end() {
                    // Another part of the same multipart follows.
                    continue 'outer;
                }
                stack.pop();
                while matches!(stack.last(), Some(Frame::Message)) {
                    stack.pop();
                }
                match innermost_boundary(&stack) {
                    Some(parent) => {
                        if !stream.seek_next_part(parent) {
                            break 'outer;
                        }
                    }
                    None => break 'outer,
                }
            }
        }
        Ok(())
    }

    fn check_depth(&self, depth: usize) -> Result<(), Unscannable> {
        if depth > self.limits.max_depth {
            Err(Unscannable::new(format!(
                "MIME nesting deeper than {}",
                self.limits.max_depth
            )))
        } else {
            Ok(())
        }
    }

    /// Measures the header block at `off` against the limits, then parses exactly that
    /// block. Returns the headers and the offset of the body.
    fn header_block<'x>(
        &self,
        data: &'x [u8],
        off: usize,
    ) -> Result<(Vec<Header<'x>>, usize), Unscannable> {
        let max_bytes = self.limits.max_header_bytes;
        let max_lines = self.limits.max_header_lines;
        let too_big = || {
            Unscannable::new(format!(
                "header block larger than {max_bytes} bytes or {max_lines} lines"
            ))
        };
        let mut lines = 0usize;
        let mut at = off;
        let end = loop {
            if at >= data.len() {
                break data.len();
            }
            // Search only as far as the byte limit allows, so a huge line costs no more than
            // the limit.
            let window_end = data
                .len()
                .min(off.saturating_add(max_bytes).saturating_add(1));
            let window = data.get(at..window_end).unwrap_or(b"");
            let Some(nl) = window.iter().position(|&b| b == b'\n') else {
                if window_end < data.len() {
                    return Err(too_big());
                }
                break data.len();
            };
            let line = &window[..nl];
            lines += 1;
            at += nl + 1;
            if line.is_empty() || line == b"\r" {
                break at;
            }
            if lines > max_lines || at - off > max_bytes {
                return Err(too_big());
            }
        };
        if end - off > max_bytes.saturating_add(2) {
            return Err(too_big());
        }
        let block = &data[off..end];
        let mut stream = MessageStream::new(block);
        let mut headers = Vec::new();
        stream.parse_headers(&self.parser, &mut headers);
        Ok((headers, off + stream.offset()))
    }

    fn top_headers(&mut self, data: &[u8], off: usize, headers: &[Header<'_>]) {
        for h in headers {
            let value = match &h.value {
                HeaderValue::Text(t) => unfold(t.as_bytes()),
                HeaderValue::Address(a) => format_address(a),
                _ => {
                    let start = off + h.offset_start as usize;
                    let end = off + h.offset_end as usize;
                    unfold(data.get(start..end).unwrap_or(b""))
                }
            };
            if matches!(h.name, HeaderName::Subject) && self.subject.is_empty() {
                self.subject = value.clone();
            }
            self.headers.push(HeaderField {
                name: h.name.as_str().to_string(),
                value,
            });
        }
    }

    // `GetHeader` is implemented for `Vec<Header>`, not for slices.
    #[allow(clippy::ptr_arg)]
    fn leaf(
        &mut self,
        headers: &Vec<Header<'_>>,
        ct: Option<&ContentType<'_>>,
        leaf: &Leaf<'_>,
        body: &[u8],
    ) {
        let Leaf {
            ctype,
            subtype,
            depth,
            malformed,
            span,
        } = *leaf;
        let disposition = headers
            .header_value(&HeaderName::ContentDisposition)
            .and_then(|v| v.as_content_type());
        let filename = disposition
            .and_then(|d| d.attribute("filename"))
            .or_else(|| ct.and_then(|c| c.attribute("name")))
            .map(|f| f.trim().to_string())
            .filter(|f| !f.is_empty());
        let declared_text =
            ctype.eq_ignore_ascii_case("text") || ctype.eq_ignore_ascii_case("multipart");
        let file_type = filetype::detect(body);
        let archive = filetype::inspect_archive(
            body,
            file_type,
            self.limits.max_archive_entries,
            self.limits.max_archive_member_bytes,
        );
        let text = if declared_text || file_type.is_text() {
            let decoded = match ct
                .and_then(|c| c.attribute("charset"))
                .and_then(|cs| charset_decoder(cs.as_bytes()))
            {
                Some(decode) => decode(body),
                // Valid UTF-8 (nearly every body) is checked on the fast path and copied
                // once; anything else gets the replacement characters.
                None => match std::str::from_utf8(body) {
                    Ok(text) => text.to_owned(),
                    Err(_) => String::from_utf8_lossy(body).into_owned(),
                },
            };
            let html = subtype.eq_ignore_ascii_case("html") || file_type == FileType::Html;
            extract_urls(&decoded, &mut self.urls);
            Some(if html {
                html_to_text(&decoded)
            } else {
                decoded
            })
        } else {
            None
        };
        let attachment = filename.is_some()
            || disposition.is_some_and(|d| d.is_attachment())
            || !ctype.eq_ignore_ascii_case("text");
        let content_type = if subtype.is_empty() {
            ctype.to_ascii_lowercase()
        } else {
            format!("{}/{}", ctype, subtype).to_ascii_lowercase()
        };
        self.parts.push(ScannedPart {
            content_type,
            filename,
            attachment,
            size: body.len(),
            file_type,
            // Hashing is the single largest cost of a large text body, and
            // file-hash rules are about attachments: text bodies are not hashed.
            sha256: if attachment {
                hex::encode(Sha256::digest(body))
            } else {
                String::new()
            },
            text,
            depth,
            archive,
            malformed,
            raw_span: span,
        });
    }
}

/// What the walk knows about a leaf besides its headers and body.
struct Leaf<'a> {
    ctype: &'a str,
    subtype: &'a str,
    depth: usize,
    malformed: bool,
    span: Option<(usize, usize)>,
}

fn format_address(address: &Address<'_>) -> String {
    let mut out = String::new();
    let mut push = |name: Option<&str>, addr: Option<&str>| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        match (name, addr) {
            (Some(n), Some(a)) => {
                out.push_str(n);
                out.push_str(" <");
                out.push_str(a);
                out.push('>');
            }
            (Some(n), None) => out.push_str(n),
            (None, Some(a)) => out.push_str(a),
            (None, None) => {}
        }
    };
    match address {
        Address::List(list) => {
            for a in list {
                push(a.name(), a.address());
            }
        }
        Address::Group(groups) => {
            for g in groups {
                for a in &g.addresses {
                    push(a.name(), a.address());
                }
            }
        }
    }
    out
}

/// Joins folded lines and trims; invalid UTF-8 is replaced.
fn unfold(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if !text.contains('\n') {
        return text.trim().to_string();
    }
    let mut out = String::with_capacity(text.len());
    for piece in text.split('\n') {
        out.push_str(piece.strip_suffix('\r').unwrap_or(piece));
    }
    out.trim().to_string()
}

/// Decodes base64 the way mail clients do: characters outside the alphabet (`=` too,
/// wherever it is) are skipped, a last group of two or three characters gives one or two
/// bytes whatever its unused bits, and a single character left over is dropped.
fn lenient_base64(raw: &[u8]) -> Vec<u8> {
    const LENIENT: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let mut text: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .collect();
    if text.len() % 4 == 1 {
        text.pop();
    }
    // Only alphabet characters in a valid length are left: decoding cannot fail.
    base64::Engine::decode(&LENIENT, &text).unwrap_or_default()
}

/// Decodes quoted-printable leniently: `=XX` and soft line breaks; any other `=` is literal.
fn lenient_qp(raw: &[u8]) -> Vec<u8> {
    let hexval = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        if c == b'=' {
            if raw.get(i + 1..i + 3) == Some(b"\r\n") {
                i += 3;
                continue;
            }
            if raw.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            if let (Some(h), Some(l)) = (
                raw.get(i + 1).and_then(|&c| hexval(c)),
                raw.get(i + 2).and_then(|&c| hexval(c)),
            ) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Appends the URLs in `text`: anything starting with `http://`, `https://` or `ftp://`
/// (case-insensitive), and bare `www.` names, up to the first character that cannot be part
/// of a URL in running text or HTML.
fn extract_urls(text: &str, out: &mut Vec<String>) {
    let bytes = text.as_bytes();
    let stop = |b: u8| {
        b.is_ascii_whitespace()
            || b.is_ascii_control()
            || matches!(
                b,
                b'"' | b'\'' | b'<' | b'>' | b'`' | b'\\' | b'{' | b'}' | b'|' | b'^'
            )
    };
    let take = |start: usize| {
        let mut end = start;
        while end < bytes.len() && !stop(bytes[end]) {
            end += 1;
        }
        // Trailing punctuation belongs to the sentence, not the URL.
        while end > start
            && matches!(
                bytes[end - 1],
                b'.' | b',' | b';' | b':' | b')' | b']' | b'!' | b'?'
            )
        {
            end -= 1;
        }
        end
    };
    let mut i = 0;
    while i < bytes.len() {
        // Only a ':' (of "://") or a 'w' (of "www.") can start a URL.
        match find_from(bytes, i, |b| b == b':' || (b | 0x20) == b'w') {
            Some(at) => i = at,
            None => break,
        }
        let b = bytes[i];
        if b == b':' && bytes.get(i + 1..i + 3) == Some(b"//") {
            let mut s = i;
            while s > 0 && bytes[s - 1].is_ascii_alphabetic() {
                s -= 1;
            }
            let scheme = &bytes[s..i];
            if scheme.eq_ignore_ascii_case(b"http")
                || scheme.eq_ignore_ascii_case(b"https")
                || scheme.eq_ignore_ascii_case(b"ftp")
            {
                let end = take(i + 3);
                if end > i + 3 {
                    out.push(text[s..end].to_string());
                }
                i = end.max(i + 3);
                continue;
            }
        } else if (b | 0x20) == b'w'
            && bytes
                .get(i..i + 4)
                .is_some_and(|w| w.eq_ignore_ascii_case(b"www."))
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric()
                    || matches!(bytes[i - 1], b'.' | b'/' | b'@' | b'-')))
        {
            let end = take(i);
            if end > i + 4 {
                out.push(text[i..end].to_string());
            }
            i = end.max(i + 4);
            continue;
        }
        i += 1;
    }
}

/// The host of a URL as [`extract_urls`] returns them: lowercase, without user, port or
/// trailing dot.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let rest = match url.find("://") {
        Some(p) => &url[p + 3..],
        None => url,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?;
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host.split(':').next()?
    };
    let host = host.trim_end_matches('.').to_lowercase();
    if host.is_empty() {
        None
    } else {
        Some(host)
    }
}

#[cfg(test)]
mod tests;
