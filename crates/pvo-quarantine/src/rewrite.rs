//! Early-release rewriting: the only change PVO makes to a released message.
//!
//! A message released before its scheduled exit gets its quarantines' early-release actions
//! (prepend or append to the subject, add a header, strip attachments). Everything else must
//! leave exactly as it came in, so that a DKIM signature over the untouched parts still
//! verifies: [`apply_early_release`] copies the input and splices in only the changed bytes;
//! with no actions (or none that apply) the output is byte-identical to the input. Inserted
//! lines use the message's own line ending (CRLF for everything PVO stores).
//!
//! # Security
//!
//! The input is a message from the internet. The MIME walk is bounded (nesting depth
//! [`MAX_DEPTH`]; deeper multiparts are left as they are), linear in the input per level,
//! and never panics on malformed input: an unterminated multipart ends at the end of its
//! body, a part without headers is treated as text. Texts from the settings are stripped of
//! CR and LF so that an administrator's value cannot inject header lines, and non-ASCII text
//! is encoded as RFC 2047 encoded-words.

use crate::model::EarlyReleaseActions;

/// Multiparts nested deeper than this are copied unchanged (their attachments stay).
pub const MAX_DEPTH: usize = 16;

/// Applies each set of actions in order and returns the new message bytes.
pub fn apply_early_release(raw: &[u8], actions: &[EarlyReleaseActions]) -> Vec<u8> {
    let mut out = raw.to_vec();
    for a in actions.iter().filter(|a| !a.is_empty()) {
        out = apply_one(&out, a);
    }
    out
}

fn apply_one(raw: &[u8], a: &EarlyReleaseActions) -> Vec<u8> {
    let eol: &[u8] = match raw.iter().position(|&b| b == b'\n') {
        Some(i) if i > 0 && raw[i - 1] == b'\r' => b"\r\n",
        Some(_) => b"\n",
        None => b"\r\n",
    };
    let mut msg = raw.to_vec();
    if a.strip_attachments {
        if let Some(new) = strip_entity(&msg, eol, 0) {
            msg = new;
        }
    }
    let (hdr_end, _) = split_header(&msg);
    let mut header = msg[..hdr_end].to_vec();
    let body = msg[hdr_end..].to_vec();

    let prepend = a.subject_prepend.as_deref().filter(|s| !s.is_empty());
    let append = a.subject_append.as_deref().filter(|s| !s.is_empty());
    if prepend.is_some() || append.is_some() {
        header = modify_subject(&header, prepend, append, eol);
    }
    if let Some(x) = &a.x_header {
        let name: String = x
            .name
            .chars()
            .filter(|c| c.is_ascii_graphic() && *c != ':')
            .collect();
        if !name.is_empty() {
            let mut line = name.into_bytes();
            line.extend_from_slice(b": ");
            line.extend_from_slice(&encode_text(&x.value, eol));
            line.extend_from_slice(eol);
            header = append_field(&header, &line, eol);
        }
    }
    header.extend_from_slice(&body);
    header
}

/// Returns the length of the header section including its final line ending (not the blank
/// line), and the offset where the body starts (after the blank line). A message without a
/// blank line is all header.
fn split_header(msg: &[u8]) -> (usize, usize) {
    let mut pos = 0;
    while pos < msg.len() {
        let end = line_end(msg, pos);
        let line = &msg[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return (pos, end);
        }
        pos = end;
    }
    (msg.len(), msg.len())
}

/// The end of the line starting at `pos` (after its `\n`, or the end of input).
fn line_end(buf: &[u8], pos: usize) -> usize {
    match buf[pos..].iter().position(|&b| b == b'\n') {
        Some(i) => pos + i + 1,
        None => buf.len(),
    }
}

/// A header field: its name and the byte range of the whole field (continuations included).
struct Field<'a> {
    name: &'a [u8],
    start: usize,
    end: usize,
}

fn fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    while pos < header.len() {
        let end = line_end(header, pos);
        let first = header[pos];
        if (first == b' ' || first == b'\t') && !out.is_empty() {
            if let Some(last) = out.last_mut() {
                last.end = end;
            }
        } else {
            let line = &header[pos..end];
            let name = match line.iter().position(|&b| b == b':') {
                Some(c) => trim(&line[..c]),
                None => &[][..],
            };
            out.push(Field {
                name,
                start: pos,
                end,
            });
        }
        pos = end;
    }
    out
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |i| i + 1);
    &b[s..e.max(s)]
}

/// The unfolded value of the first field with this name.
fn header_value(header: &[u8], name: &str) -> Option<String> {
    let f = fields(header)
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name.as_bytes()))?;
    let raw = &header[f.start..f.end];
    let colon = raw.iter().position(|&b| b == b':')?;
    let v: Vec<u8> = raw[colon + 1..]
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    Some(String::from_utf8_lossy(trim(&v)).into_owned())
}

/// Inserts `line` (a complete field with its line ending) at the end of the header section.
fn append_field(header: &[u8], line: &[u8], eol: &[u8]) -> Vec<u8> {
    let mut out = header.to_vec();
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(line);
    out
}

fn modify_subject(
    header: &[u8],
    prepend: Option<&str>,
    append: Option<&str>,
    eol: &[u8],
) -> Vec<u8> {
    let Some(f) = fields(header)
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(b"subject"))
    else {
        let text: Vec<&str> = prepend.into_iter().chain(append).collect();
        let mut line = b"Subject: ".to_vec();
        line.extend_from_slice(&encode_text(&text.join(" "), eol));
        line.extend_from_slice(eol);
        return append_field(header, &line, eol);
    };
    let field = &header[f.start..f.end];
    // Where the value starts: after the colon and the blanks that follow it.
    let colon = field.iter().position(|&b| b == b':').unwrap_or(0);
    let mut vstart = colon + 1;
    while vstart < field.len() && (field[vstart] == b' ' || field[vstart] == b'\t') {
        vstart += 1;
    }
    // Where it ends: before the final line ending.
    let mut vend = field.len();
    if field.ends_with(b"\r\n") {
        vend -= 2;
    } else if field.ends_with(b"\n") {
        vend -= 1;
    }
    let vend = vend.max(vstart);
    let empty = field[vstart..vend].iter().all(|b| b.is_ascii_whitespace());

    let mut new = field[..vstart].to_vec();
    if colon + 1 == vstart {
        new.push(b' ');
    }
    if let Some(p) = prepend {
        new.extend_from_slice(&encode_text(p, eol));
        if !empty {
            new.push(b' ');
        }
    }
    new.extend_from_slice(&field[vstart..vend]);
    if let Some(a) = append {
        if !empty || prepend.is_some() {
            new.push(b' ');
        }
        new.extend_from_slice(&encode_text(a, eol));
    }
    new.extend_from_slice(&field[vend..]);

    let mut out = header[..f.start].to_vec();
    out.extend_from_slice(&new);
    out.extend_from_slice(&header[f.end..]);
    out
}

/// Header text from the settings: CR and LF become spaces; anything beyond printable ASCII
/// is sent as RFC 2047 `B` encoded-words (folded, each at most 75 characters).
fn encode_text(text: &str, eol: &[u8]) -> Vec<u8> {
    let clean: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    if clean
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return clean.into_bytes();
    }
    let mut out = Vec::new();
    let mut chunk = String::new();
    let flush = |chunk: &mut String, out: &mut Vec<u8>| {
        if chunk.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.extend_from_slice(eol);
            out.push(b' ');
        }
        out.extend_from_slice(b"=?UTF-8?B?");
        out.extend_from_slice(base64(chunk.as_bytes()).as_bytes());
        out.extend_from_slice(b"?=");
        chunk.clear();
    };
    for c in clean.chars() {
        if chunk.len() + c.len_utf8() > 45 {
            flush(&mut chunk, &mut out);
        }
        chunk.push(c);
    }
    flush(&mut chunk, &mut out);
    out
}

fn base64(data: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, data)
}

/// A parsed `Content-Type` or `Content-Disposition` value: the lowercased first token and
/// the parameters (lowercased names).
struct ParsedValue {
    token: String,
    params: Vec<(String, String)>,
}

fn parse_value(v: &str) -> ParsedValue {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    for c in v.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if quoted && c == '\\' {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c == ';' && !quoted {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    let token = parts[0].trim().to_ascii_lowercase();
    let params = parts[1..]
        .iter()
        .filter_map(|p| {
            let (n, v) = p.split_once('=')?;
            Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    ParsedValue { token, params }
}

impl ParsedValue {
    /// A parameter, also in its RFC 2231 forms (`name*`, `name*0`, `name*0*`).
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name || n.strip_prefix(name).is_some_and(|r| r.starts_with('*')))
            .map(|(_, v)| v.as_str())
    }
}

/// If the entity (header + body) is or contains attachments, returns it rewritten with each
/// attachment replaced by a short notice; `None` when nothing changes.
fn strip_entity(entity: &[u8], eol: &[u8], depth: usize) -> Option<Vec<u8>> {
    let (hdr_end, body_start) = split_header(entity);
    let header = &entity[..hdr_end];
    let ct = header_value(header, "content-type")
        .map(|v| parse_value(&v))
        .unwrap_or(ParsedValue {
            token: "text/plain".into(),
            params: Vec::new(),
        });
    let cd = header_value(header, "content-disposition").map(|v| parse_value(&v));
    if ct.token.starts_with("multipart/") {
        if depth >= MAX_DEPTH {
            return None;
        }
        let boundary = ct.param("boundary")?.to_string();
        if boundary.is_empty() {
            return None;
        }
        let new_body = strip_multipart(&entity[body_start..], boundary.as_bytes(), eol, depth)?;
        let mut out = entity[..body_start].to_vec();
        out.extend_from_slice(&new_body);
        return Some(out);
    }
    let filename = cd
        .as_ref()
        .and_then(|d| d.param("filename"))
        .or_else(|| ct.param("name"));
    let is_attachment = cd.as_ref().is_some_and(|d| d.token == "attachment") || filename.is_some();
    if !is_attachment {
        return None;
    }
    Some(notice(header, filename.unwrap_or("unnamed"), eol))
}

/// Replaces an attachment entity: its `Content-*` fields give way to a text/plain notice,
/// other fields (the message's From, Subject, ... at the top level) stay.
fn notice(header: &[u8], filename: &str, eol: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in fields(header) {
        let n = f.name.to_ascii_lowercase();
        if n == b"content-type" || n == b"content-transfer-encoding" || n == b"content-disposition"
        {
            continue;
        }
        out.extend_from_slice(&header[f.start..f.end]);
    }
    let name: String = filename
        .trim_matches('"')
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect();
    for line in [
        &b"Content-Type: text/plain; charset=us-ascii"[..],
        b"Content-Transfer-Encoding: 7bit",
        b"Content-Disposition: inline",
    ] {
        out.extend_from_slice(line);
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    out.extend_from_slice(
        format!("The attachment \"{name}\" was removed by the quarantine.").as_bytes(),
    );
    out.extend_from_slice(eol);
    out
}

/// Walks the parts of a multipart body; `None` when no part changes.
fn strip_multipart(body: &[u8], boundary: &[u8], eol: &[u8], depth: usize) -> Option<Vec<u8>> {
    let mut dash = b"--".to_vec();
    dash.extend_from_slice(boundary);
    // Delimiter lines: (line start, line end, is the close delimiter).
    let mut delims = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let end = line_end(body, pos);
        let line = &body[pos..end];
        if let Some(rest) = line.strip_prefix(dash.as_slice()) {
            let close = rest.starts_with(b"--");
            let tail = if close { &rest[2..] } else { rest };
            if tail.iter().all(|b| b.is_ascii_whitespace()) {
                delims.push((pos, end, close));
                if close {
                    break;
                }
            }
        }
        pos = end;
    }
    let mut edits: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    for (i, &(_, open_end, close)) in delims.iter().enumerate() {
        if close {
            break;
        }
        // The line ending before the next delimiter belongs to that delimiter.
        let part_end = match delims.get(i + 1) {
            Some(&(next_start, _, _)) => {
                let mut e = next_start;
                if e > open_end && body[e - 1] == b'\n' {
                    e -= 1;
                    if e > open_end && body[e - 1] == b'\r' {
                        e -= 1;
                    }
                }
                e
            }
            None => body.len(),
        };
        let part = &body[open_end..part_end.max(open_end)];
        if let Some(mut new) = strip_entity(part, eol, depth + 1) {
            // The part ended without a line ending (the delimiter's own came next): keep it so.
            if !part.ends_with(b"\n") && new.ends_with(eol) {
                new.truncate(new.len() - eol.len());
            }
            edits.push((open_end, part_end.max(open_end), new));
        }
    }
    if edits.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    for (s, e, new) in edits {
        out.extend_from_slice(&body[at..s]);
        out.extend_from_slice(&new);
        at = e;
    }
    out.extend_from_slice(&body[at..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::XHeader;

    const PLAIN: &[u8] = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n\
DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1;\r\n\th=from:subject; b=abc\r\n\
From: a@example.com\r\nSubject: Hello\r\n world\r\nTo: b@example.org\r\n\r\nBody line\r\n.dot\r\n";

    const MULTI: &[u8] = b"From: a@example.com\r\nSubject: Invoice\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\npreamble\r\n--XX\r\n\
Content-Type: text/plain\r\n\r\nSee attached.\r\n--XX\r\n\
Content-Type: application/pdf; name=\"inv.pdf\"\r\nContent-Disposition: attachment; filename=\"inv.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XX--\r\nepilogue\r\n";

    fn acts(f: impl FnOnce(&mut EarlyReleaseActions)) -> EarlyReleaseActions {
        let mut a = EarlyReleaseActions::default();
        f(&mut a);
        a
    }

    #[test]
    fn untouched_is_byte_identical() {
        for raw in [PLAIN, MULTI, b"no header end", b""] {
            assert_eq!(apply_early_release(raw, &[]), raw);
            assert_eq!(
                apply_early_release(raw, &[EarlyReleaseActions::default()]),
                raw
            );
        }
        // Strip attachments on a message without any changes nothing.
        let strip = acts(|a| a.strip_attachments = true);
        assert_eq!(
            apply_early_release(PLAIN, std::slice::from_ref(&strip)),
            PLAIN
        );
    }

    #[test]
    fn header_rewrites() {
        let cases: Vec<(&str, EarlyReleaseActions, &[u8], &[u8])> = vec![
            (
                "prepend",
                acts(|a| a.subject_prepend = Some("[SUSPECT]".into())),
                b"Subject: Hello\r\n world\r\n",
                b"Subject: [SUSPECT] Hello\r\n world\r\n",
            ),
            (
                "append to a folded subject",
                acts(|a| a.subject_append = Some("(released)".into())),
                b"Subject: Hello\r\n world\r\n",
                b"Subject: Hello\r\n world (released)\r\n",
            ),
            (
                "both",
                acts(|a| {
                    a.subject_prepend = Some("[P]".into());
                    a.subject_append = Some("[A]".into())
                }),
                b"Subject: Hello\r\n world\r\n",
                b"Subject: [P] Hello\r\n world [A]\r\n",
            ),
            (
                "x-header after the last field",
                acts(|a| {
                    a.x_header = Some(XHeader {
                        name: "X-PVO-Released".into(),
                        value: "early\r\nBcc: evil@x".into(),
                    })
                }),
                b"To: b@example.org\r\n\r\n",
                b"To: b@example.org\r\nX-PVO-Released: early  Bcc: evil@x\r\n\r\n",
            ),
        ];
        for (name, a, from, to) in cases {
            let out = apply_early_release(PLAIN, std::slice::from_ref(&a));
            let want = replace(PLAIN, from, to);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&want),
                "{name}"
            );
        }
    }

    fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
        let i = hay
            .windows(from.len())
            .position(|w| w == from)
            .expect("pattern present");
        let mut out = hay[..i].to_vec();
        out.extend_from_slice(to);
        out.extend_from_slice(&hay[i + from.len()..]);
        out
    }

    #[test]
    fn non_ascii_subject_text_is_encoded() {
        let a = acts(|a| a.subject_prepend = Some("[Quarantäne]".into()));
        let out = apply_early_release(b"Subject: Hi\r\n\r\nx\r\n", &[a]);
        assert_eq!(
            out,
            b"Subject: =?UTF-8?B?W1F1YXJhbnTDpG5lXQ==?= Hi\r\n\r\nx\r\n".to_vec()
        );
    }

    #[test]
    fn missing_subject_is_added() {
        let a = acts(|a| a.subject_prepend = Some("[P]".into()));
        let out = apply_early_release(b"From: a@b\r\n\r\nx\r\n", &[a]);
        assert_eq!(out, b"From: a@b\r\nSubject: [P]\r\n\r\nx\r\n".to_vec());
    }

    #[test]
    fn strip_attachment_keeps_everything_else() {
        let a = acts(|a| a.strip_attachments = true);
        let out = apply_early_release(MULTI, &[a]);
        let want = replace(
            MULTI,
            b"Content-Type: application/pdf; name=\"inv.pdf\"\r\nContent-Disposition: attachment; filename=\"inv.pdf\"\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK",
            b"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\
Content-Disposition: inline\r\n\r\nThe attachment \"inv.pdf\" was removed by the quarantine.",
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        // Idempotent: the notice itself is not an attachment.
        let again = apply_early_release(&out, &[acts(|a| a.strip_attachments = true)]);
        assert_eq!(again, out);
    }

    #[test]
    fn nested_and_top_level_attachments() {
        let nested = b"Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\
Content-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n\
--a\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=x.png\r\n\r\niVBOR\r\n--a--\r\n";
        let out = apply_early_release(nested, &[acts(|a| a.strip_attachments = true)]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--"));
        assert!(text.contains("\"x.png\" was removed"));
        assert!(!text.contains("iVBOR"));

        let top = b"From: a@b\r\nContent-Type: application/zip; name=a.zip\r\n\r\nUEsDB\r\n";
        let out = apply_early_release(top, &[acts(|a| a.strip_attachments = true)]);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "From: a@b\r\nContent-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\
Content-Disposition: inline\r\n\r\nThe attachment \"a.zip\" was removed by the quarantine.\r\n"
        );
    }

    #[test]
    fn hostile_inputs_terminate() {
        // Deep nesting beyond MAX_DEPTH, an unterminated multipart, an empty boundary.
        let mut deep = Vec::new();
        for i in 0..200 {
            deep.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        deep.extend_from_slice(b"Content-Disposition: attachment; filename=z\r\n\r\nzz\r\n");
        let out = apply_early_release(&deep, &[acts(|a| a.strip_attachments = true)]);
        assert_eq!(out, deep);
        for raw in [
            &b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\nContent-Disposition: attachment\r\n\r\nab"[..],
            b"Content-Type: multipart/mixed; boundary=\"\"\r\n\r\n--\r\n",
            b"Content-Type: multipart/mixed\r\n\r\n",
            b"\r\n\r\n",
        ] {
            let _ = apply_early_release(raw, &[acts(|a| a.strip_attachments = true)]);
        }
    }

    #[test]
    fn lf_only_message_keeps_lf() {
        let a = acts(|a| {
            a.x_header = Some(XHeader {
                name: "X-Q".into(),
                value: "1".into(),
            })
        });
        let out = apply_early_release(b"Subject: s\n\nbody\n", &[a]);
        assert_eq!(out, b"Subject: s\nX-Q: 1\n\nbody\n".to_vec());
    }
}
