//! The `MAIL FROM` and `RCPT TO` command lines, parsed from the raw bytes (RFC 5321 section
//! 4.1.2), with the parameters PVO announces.
//!
//! `smtp-proto` removes the quotes of a quoted local part and replaces bytes that are not
//! UTF-8 by U+FFFD, so what it hands over no longer says which mailbox the client meant:
//! `<"root> NOTIFY=NEVER"@example.com>` and `<root> NOTIFY=NEVER@example.com>` look the same,
//! and so do two different invalid byte sequences. This parser works on the bytes and keeps
//! the meaning: the local part comes out unquoted (escapes resolved) in a [`Mailbox`], which
//! [`Mailbox::wire`] writes back as the same mailbox.
//!
//! # Security
//!
//! - Grammar: `MAIL FROM:<reverse-path> [SP params]`, `RCPT TO:<forward-path> [SP params]`
//!   (the keyword case-insensitive, spaces tolerated around the colon). A path is `<>` (MAIL
//!   only) or `<[@route,...:]local@domain>`; the source route is checked and dropped (RFC 5321
//!   appendix C). The local part is a Dot-string or a Quoted-string (printable ASCII and space,
//!   `\` escapes); the domain a DNS name or an IPv4/IPv6 address literal
//!   ([`crate::address`] normalises and checks it).
//! - SMTPUTF8 is not offered: any byte above 127 in a path is refused with `553 5.6.7`, and
//!   the `SMTPUTF8` parameter with `555 5.6.7`, so no non-ASCII address is accepted and none is
//!   forwarded to a host that was never asked whether it takes one.
//! - Only the parameters PVO announces are accepted: `SIZE` and `BODY=7BIT|8BITMIME` on MAIL,
//!   none on RCPT (no DSN). Anything else is `555 5.5.4`, so no parameter a client sends is
//!   silently dropped or passed on.
//! - Control characters (CR, NUL, ...) anywhere in the line are refused.

use crate::address::{self, AddressError, Mailbox};

/// A parsed `MAIL FROM` or `RCPT TO` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `MAIL FROM:<sender>`.
    Mail {
        /// The sender; `None` for the null path `<>`.
        sender: Option<Mailbox>,
        /// The `SIZE` parameter, 0 when absent.
        size: u64,
    },
    /// `RCPT TO:<recipient>`.
    Rcpt {
        /// The recipient.
        rcpt: Mailbox,
    },
}

/// Why a `MAIL` or `RCPT` command was refused; [`PathError::reply`] is the SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The line does not follow the grammar.
    #[error("syntax error")]
    Syntax {
        /// Whether the command was MAIL (else RCPT).
        mail: bool,
    },
    /// The path is well-formed but the address is not acceptable.
    #[error("bad address: {why}")]
    Address {
        /// Whether the command was MAIL (else RCPT).
        mail: bool,
        /// What is wrong with it.
        why: AddressError,
    },
    /// A byte above 127 in the path: that needs SMTPUTF8, which is not offered.
    #[error("non-ASCII address without SMTPUTF8")]
    NonAscii {
        /// Whether the command was MAIL (else RCPT).
        mail: bool,
    },
    /// The `SMTPUTF8` parameter, which is not offered.
    #[error("SMTPUTF8 is not offered")]
    Smtputf8,
    /// A parameter that is not offered (its keyword, uppercased).
    #[error("parameter {name} is not supported")]
    Unsupported {
        /// Whether the command was MAIL (else RCPT).
        mail: bool,
        /// The parameter's keyword (ASCII letters, digits and `-` only).
        name: String,
    },
    /// A supported parameter with a bad value (its keyword).
    #[error("invalid value for {name}")]
    BadValue {
        /// The parameter's keyword.
        name: &'static str,
    },
}

impl PathError {
    /// The SMTP reply for this error. It never echoes more of the client's input than a
    /// parameter keyword, which is checked to be letters, digits and `-`.
    pub fn reply(&self) -> String {
        match self {
            PathError::Syntax { mail: true } => {
                "501 5.5.4 Syntax: MAIL FROM:<address> [SIZE=n] [BODY=7BIT|8BITMIME]".into()
            }
            PathError::Syntax { mail: false } => "501 5.5.4 Syntax: RCPT TO:<address>".into(),
            PathError::Address { mail: true, .. } => "553 5.1.7 Bad sender address syntax".into(),
            PathError::Address { mail: false, .. } => {
                "553 5.1.3 Bad recipient address syntax".into()
            }
            PathError::NonAscii { mail } => format!(
                "553 5.6.7 Non-ASCII {} address not permitted: SMTPUTF8 is not offered",
                if *mail { "sender" } else { "recipient" }
            ),
            PathError::Smtputf8 => "555 5.6.7 SMTPUTF8 is not offered by this server".into(),
            PathError::Unsupported { mail, name } => format!(
                "555 5.5.4 {} parameter {name} is not supported",
                if *mail { "MAIL FROM" } else { "RCPT TO" }
            ),
            PathError::BadValue { name } => format!("501 5.5.4 Invalid {name} value"),
        }
    }
}

/// Parses a command line (with or without its CR LF) if it is `MAIL` or `RCPT`; `None` for
/// any other command, which the caller parses otherwise.
pub fn parse(line: &[u8]) -> Option<Result<Command, PathError>> {
    let line = crate::line::strip_terminator(line);
    let verb = line.get(..4)?;
    let mail = if verb.eq_ignore_ascii_case(b"MAIL") {
        true
    } else if verb.eq_ignore_ascii_case(b"RCPT") {
        false
    } else {
        return None;
    };
    if line.len() > 4 && line[4] != b' ' {
        return None;
    }
    Some(parse_command(line, mail))
}

/// Parses an address written as RFC 5321 text without angle brackets (`local@domain`, the
/// local part a Dot-string or a Quoted-string), as an administrator types it or a CPQ record
/// carries it.
pub fn parse_address(text: &str) -> Result<Mailbox, PathError> {
    let mut c = Cursor {
        s: text.as_bytes(),
        i: 0,
        mail: false,
    };
    let m = c.mailbox(None)?;
    if c.i != c.s.len() {
        return Err(c.syntax());
    }
    Ok(m)
}

fn parse_command(line: &[u8], mail: bool) -> Result<Command, PathError> {
    let mut c = Cursor {
        s: line,
        i: 4,
        mail,
    };
    c.spaces();
    let keyword: &[u8] = if mail { b"FROM" } else { b"TO" };
    if !c.take_keyword(keyword) {
        return Err(c.syntax());
    }
    c.spaces();
    if !c.eat(b':') {
        return Err(c.syntax());
    }
    c.spaces();
    if !c.eat(b'<') {
        return Err(c.syntax());
    }
    let addr = if c.eat(b'>') {
        if !mail {
            return Err(PathError::Address {
                mail,
                why: AddressError::Empty,
            });
        }
        None
    } else {
        c.source_route()?;
        Some(c.mailbox(Some(b'>'))?)
    };
    // Parameters: SP-separated keyword[=value] (RFC 5321 section 4.1.2).
    let mut size = 0;
    let mut first = true;
    loop {
        let had_space = c.spaces();
        if c.i == c.s.len() {
            break;
        }
        if !had_space && first {
            return Err(c.syntax());
        }
        first = false;
        let start = c.i;
        while c.peek().is_some_and(|b| b != b' ') {
            c.i += 1;
        }
        let param = &c.s[start..c.i];
        let (key, value) = match param.iter().position(|&b| b == b'=') {
            Some(p) => (&param[..p], Some(&param[p + 1..])),
            None => (param, None),
        };
        let key_ok = key.first().is_some_and(u8::is_ascii_alphanumeric)
            && key.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-');
        let value_ok = value.is_none_or(|v| {
            !v.is_empty() && v.iter().all(|&b| (33..=126).contains(&b) && b != b'=')
        });
        if !key_ok || !value_ok {
            return Err(c.syntax());
        }
        let name = String::from_utf8_lossy(key).to_ascii_uppercase();
        match (mail, name.as_str(), value) {
            (true, "SIZE", Some(v)) => {
                size = std::str::from_utf8(v)
                    .ok()
                    .filter(|v| v.len() <= 20 && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse().ok())
                    .ok_or(PathError::BadValue { name: "SIZE" })?;
            }
            (true, "BODY", Some(v)) => {
                if !v.eq_ignore_ascii_case(b"7BIT") && !v.eq_ignore_ascii_case(b"8BITMIME") {
                    return Err(PathError::BadValue { name: "BODY" });
                }
            }
            (true, "SIZE" | "BODY", None) => {
                return Err(PathError::BadValue {
                    name: if name == "SIZE" { "SIZE" } else { "BODY" },
                })
            }
            (_, "SMTPUTF8", _) => return Err(PathError::Smtputf8),
            _ => return Err(PathError::Unsupported { mail, name }),
        }
    }
    Ok(match addr {
        _ if !mail => Command::Rcpt {
            rcpt: addr.expect("RCPT has an address"),
        },
        sender => Command::Mail { sender, size },
    })
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
    mail: bool,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Skips spaces; whether there were any.
    fn spaces(&mut self) -> bool {
        let start = self.i;
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
        self.i > start
    }

    fn take_keyword(&mut self, k: &[u8]) -> bool {
        match self.s.get(self.i..self.i + k.len()) {
            Some(w) if w.eq_ignore_ascii_case(k) => {
                self.i += k.len();
                true
            }
            _ => false,
        }
    }

    fn syntax(&self) -> PathError {
        PathError::Syntax { mail: self.mail }
    }

    fn address_error(&self, why: AddressError) -> PathError {
        match why {
            AddressError::NonAscii => PathError::NonAscii { mail: self.mail },
            why => PathError::Address {
                mail: self.mail,
                why,
            },
        }
    }

    /// A byte above 127 is refused as non-ASCII wherever it appears in a path, so the reply
    /// says why rather than "syntax error".
    fn non_ascii(&self) -> PathError {
        PathError::NonAscii { mail: self.mail }
    }

    /// `@domain(,@domain)*:` if present: checked, then dropped.
    fn source_route(&mut self) -> Result<(), PathError> {
        if self.peek() != Some(b'@') {
            return Ok(());
        }
        loop {
            if !self.eat(b'@') {
                return Err(self.syntax());
            }
            let start = self.i;
            while self
                .peek()
                .is_some_and(|b| !matches!(b, b',' | b':' | b'>'))
            {
                self.i += 1;
            }
            let domain = &self.s[start..self.i];
            if !domain.is_ascii() {
                return Err(self.non_ascii());
            }
            let domain = std::str::from_utf8(domain).map_err(|_| self.syntax())?;
            if address::normalise_domain(domain).is_err() {
                return Err(self.syntax());
            }
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b':') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.syntax()),
            }
        }
    }

    /// `local@domain`, ending at `end` (consumed) or at the end of input when `end` is `None`.
    fn mailbox(&mut self, end: Option<u8>) -> Result<Mailbox, PathError> {
        let local = if self.eat(b'"') {
            let mut local = String::new();
            loop {
                match self.peek() {
                    None => return Err(self.syntax()),
                    Some(b'"') => {
                        self.i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        self.i += 1;
                        match self.peek() {
                            Some(b @ 32..=126) => local.push(b as char),
                            Some(128..) => return Err(self.non_ascii()),
                            Some(_) => return Err(self.address_error(AddressError::BadLocalPart)),
                            None => return Err(self.syntax()),
                        }
                        self.i += 1;
                    }
                    Some(b @ 32..=126) => {
                        local.push(b as char);
                        self.i += 1;
                    }
                    Some(128..) => return Err(self.non_ascii()),
                    Some(_) => return Err(self.address_error(AddressError::BadLocalPart)),
                }
            }
            if self.peek() != Some(b'@') {
                return Err(self.syntax());
            }
            local
        } else {
            let start = self.i;
            while let Some(b) = self.peek() {
                match b {
                    b'@' => break,
                    b'.' => {}
                    128.. => return Err(self.non_ascii()),
                    0..32 | 127 => return Err(self.address_error(AddressError::BadLocalPart)),
                    b if address::is_atext(b) => {}
                    _ if Some(b) == end => break,
                    _ => return Err(self.syntax()),
                }
                self.i += 1;
            }
            let local = std::str::from_utf8(&self.s[start..self.i]).map_err(|_| self.syntax())?;
            if self.peek() != Some(b'@') {
                // `<postmaster>` without a domain, a bang path, a bare word.
                return Err(self.address_error(AddressError::NoDomain));
            }
            if local.is_empty() {
                return Err(self.address_error(AddressError::EmptyLocalPart));
            }
            if !address::is_dot_string(local) {
                return Err(self.syntax());
            }
            local.to_owned()
        };
        self.i += 1; // the '@'
        let start = self.i;
        if self.peek() == Some(b'[') {
            while self.peek().is_some_and(|b| b != b']') {
                self.i += 1;
            }
            if !self.eat(b']') {
                return Err(self.syntax());
            }
        } else {
            while self.peek().is_some_and(|b| Some(b) != end) {
                self.i += 1;
            }
        }
        let domain = &self.s[start..self.i];
        match end {
            Some(e) if !self.eat(e) => return Err(self.syntax()),
            _ => {}
        }
        if !domain.is_ascii() {
            return Err(self.non_ascii());
        }
        let domain = std::str::from_utf8(domain).map_err(|_| self.syntax())?;
        if domain.is_empty() {
            return Err(self.address_error(AddressError::NoDomain));
        }
        let domain = address::normalise_domain(domain).map_err(|e| self.address_error(e))?;
        address::mailbox(&local, domain).map_err(|e| self.address_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local: local.into(),
            domain: domain.into(),
        }
    }

    #[test]
    fn not_mail_or_rcpt() {
        for line in [
            &b"EHLO x\r\n"[..],
            b"MAILX FROM:<a@b.c>\r\n",
            b"RCP TO:<a@b.c>\r\n",
            b"XPVO-META 1 abc\r\n",
            b"\r\n",
            b"",
        ] {
            assert_eq!(parse(line), None, "{line:?}");
        }
    }

    /// (line, sender or None for `<>`, SIZE)
    #[test]
    fn mail_accepted() {
        let cases: &[(&[u8], Option<Mailbox>, u64)] = &[
            (
                b"MAIL FROM:<a@example.org>\r\n",
                Some(mb("a", "example.org")),
                0,
            ),
            (
                b"mail from:<A@Example.ORG>",
                Some(mb("A", "example.org")),
                0,
            ),
            (
                b"MAIL FROM: <a@example.org>\r\n",
                Some(mb("a", "example.org")),
                0,
            ),
            (
                b"MAIL  FROM : <a@example.org>\n",
                Some(mb("a", "example.org")),
                0,
            ),
            (b"MAIL FROM:<>\r\n", None, 0),
            (
                b"MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME\r\n",
                Some(mb("a", "example.org")),
                1000,
            ),
            (b"MAIL FROM:<> body=7bit size=5\r\n", None, 5),
            (
                b"MAIL FROM:<\"john doe\"@example.org>\r\n",
                Some(mb("john doe", "example.org")),
                0,
            ),
            // Unneeded quotes mean the same mailbox as none.
            (
                b"MAIL FROM:<\"john\"@example.org>\r\n",
                Some(mb("john", "example.org")),
                0,
            ),
            (
                b"MAIL FROM:<\"a\\\"b\\\\c\"@example.org>\r\n",
                Some(mb("a\"b\\c", "example.org")),
                0,
            ),
            (
                b"MAIL FROM:<\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com>\r\n",
                Some(mb("root> NOTIFY=NEVER ORCPT=rfc822;x", "example.com")),
                0,
            ),
            (
                b"MAIL FROM:<@a.example,@b.example:u@c.example>\r\n",
                Some(mb("u", "c.example")),
                0,
            ),
            (
                b"MAIL FROM:<a@[10.0.0.1]> SIZE=100\r\n",
                Some(mb("a", "[10.0.0.1]")),
                100,
            ),
            (
                b"MAIL FROM:<a@[IPv6:::1]>\r\n",
                Some(mb("a", "[ipv6:::1]")),
                0,
            ),
            (
                b"MAIL FROM:<first.last+tag@example.org>\r\n",
                Some(mb("first.last+tag", "example.org")),
                0,
            ),
        ];
        for (line, sender, size) in cases {
            assert_eq!(
                parse(line),
                Some(Ok(Command::Mail {
                    sender: sender.clone(),
                    size: *size
                })),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn rcpt_accepted() {
        let cases: &[(&[u8], Mailbox)] = &[
            (b"RCPT TO:<bob@example.com>\r\n", mb("bob", "example.com")),
            (b"rcpt to: <bob@EXAMPLE.com.>\r\n", mb("bob", "example.com")),
            (b"RCPT TO:<b@[192.0.2.1]>\r\n", mb("b", "[192.0.2.1]")),
            (
                b"rcpt to:<@[127.0.0.1]:victim@[192.0.2.1]>\r\n",
                mb("victim", "[192.0.2.1]"),
            ),
            // The route is dropped; the RAT then judges the real recipient.
            (
                b"RCPT TO:<@[127.0.0.1]:victim@example.net>\r\n",
                mb("victim", "example.net"),
            ),
            // Routing in the local part is kept, for the server to refuse.
            (
                b"RCPT TO:<\"a@b\"@[192.0.2.1]>\r\n",
                mb("a@b", "[192.0.2.1]"),
            ),
            (
                b"RCPT TO:<\"victim@example.net\"@example.com>",
                mb("victim@example.net", "example.com"),
            ),
            (
                b"RCPT TO:<victim%example.net@example.com>",
                mb("victim%example.net", "example.com"),
            ),
            (
                b"RCPT TO:<example.net!victim@example.com>",
                mb("example.net!victim", "example.com"),
            ),
            (
                b"RCPT TO:<\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com>\r\n",
                mb("root> NOTIFY=NEVER ORCPT=rfc822;x", "example.com"),
            ),
        ];
        for (line, rcpt) in cases {
            assert_eq!(
                parse(line),
                Some(Ok(Command::Rcpt { rcpt: rcpt.clone() })),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn refused() {
        use AddressError as A;
        let syn_m = PathError::Syntax { mail: true };
        let syn_r = PathError::Syntax { mail: false };
        let addr_r = |why| PathError::Address { mail: false, why };
        let cases: &[(&[u8], PathError)] = &[
            (b"MAIL FROM:a@example.org\r\n", syn_m.clone()),
            (b"MAIL FROM<a@example.org>\r\n", syn_m.clone()),
            (b"MAIL\r\n", syn_m.clone()),
            (b"MAIL FROM:<a@example.org\r\n", syn_m.clone()),
            (b"MAIL FROM:<a@example.org>SIZE=1\r\n", syn_m.clone()),
            (b"MAIL FROM:<a..b@example.org>\r\n", syn_m.clone()),
            (b"MAIL FROM:<.a@example.org>\r\n", syn_m.clone()),
            (b"MAIL FROM:<a b@example.org>\r\n", syn_m.clone()),
            (b"MAIL FROM:<\"a\"b@example.org>\r\n", syn_m.clone()),
            (b"MAIL FROM:<\"unterminated@example.org>\r\n", syn_m.clone()),
            (b"RCPT TO:<a@example.com> >\r\n", syn_r.clone()),
            (b"RCPT TO:<a@example.com> X=\r\n", syn_r.clone()),
            (b"RCPT TO:<@:a@example.com>\r\n", syn_r.clone()),
            (b"RCPT TO:<@bad_domain:a@example.com>\r\n", syn_r.clone()),
            (b"RCPT TO:<a@[127.0.0.1>\r\n", syn_r.clone()),
            (b"RCPT TO:<a@[127.0.0.1]x>\r\n", syn_r.clone()),
            (b"RCPT TO:<>\r\n", addr_r(A::Empty)),
            (b"RCPT TO:<postmaster>\r\n", addr_r(A::NoDomain)),
            (b"RCPT TO:<\"victim@example.net\">\r\n", syn_r.clone()),
            (b"RCPT TO:<example.net!victim>\r\n", addr_r(A::NoDomain)),
            (b"RCPT TO:<a@>\r\n", addr_r(A::NoDomain)),
            (b"RCPT TO:<@example.com>\r\n", syn_r.clone()),
            (
                b"RCPT TO:<a@exa_mple.com>\r\n",
                addr_r(A::BadDomain("exa_mple.com".into())),
            ),
            (b"RCPT TO:<a\x00b@example.com>\r\n", addr_r(A::BadLocalPart)),
            (
                b"RCPT TO:<\"a\x00b\"@example.com>\r\n",
                addr_r(A::BadLocalPart),
            ),
            (
                b"RCPT TO:<\"a\rb\"@example.com>\r\n",
                addr_r(A::BadLocalPart),
            ),
            (
                b"RCPT TO:<\"a\\\x01b\"@example.com>\r\n",
                addr_r(A::BadLocalPart),
            ),
            (b"RCPT TO:<\"\"@example.com>\r\n", addr_r(A::EmptyLocalPart)),
            // Non-ASCII: valid UTF-8 and invalid bytes alike, in every part of the path.
            (
                b"RCPT TO:<j\xc3\xb6rg@example.com>\r\n",
                PathError::NonAscii { mail: false },
            ),
            (
                b"RCPT TO:<j\xffrg@example.com>\r\n",
                PathError::NonAscii { mail: false },
            ),
            (
                b"RCPT TO:<j\xfergx@example.com>\r\n",
                PathError::NonAscii { mail: false },
            ),
            (
                b"RCPT TO:<\"j\xc3\xb6rg\"@example.com>\r\n",
                PathError::NonAscii { mail: false },
            ),
            (
                b"RCPT TO:<a@b\xc3\xbccher.example>\r\n",
                PathError::NonAscii { mail: false },
            ),
            (
                b"RCPT TO:<@b\xc3\xbccher.example:a@example.com>\r\n",
                PathError::NonAscii { mail: false },
            ),
            (
                b"MAIL FROM:<\xe5\xad\xab@example.org>\r\n",
                PathError::NonAscii { mail: true },
            ),
            // Parameters that are not offered.
            (
                b"MAIL FROM:<a@example.org> SMTPUTF8\r\n",
                PathError::Smtputf8,
            ),
            (
                b"MAIL FROM:<a@example.org> smtputf8\r\n",
                PathError::Smtputf8,
            ),
            (
                b"MAIL FROM:<a@example.org> RET=HDRS\r\n",
                PathError::Unsupported {
                    mail: true,
                    name: "RET".into(),
                },
            ),
            (
                b"RCPT TO:<a@example.com> NOTIFY=NEVER\r\n",
                PathError::Unsupported {
                    mail: false,
                    name: "NOTIFY".into(),
                },
            ),
            (
                b"RCPT TO:<a@example.com> ORCPT=rfc822;x@example.com\r\n",
                PathError::Unsupported {
                    mail: false,
                    name: "ORCPT".into(),
                },
            ),
            (
                b"MAIL FROM:<a@example.org> SIZE=abc\r\n",
                PathError::BadValue { name: "SIZE" },
            ),
            (
                b"MAIL FROM:<a@example.org> SIZE=999999999999999999999999\r\n",
                PathError::BadValue { name: "SIZE" },
            ),
            (
                b"MAIL FROM:<a@example.org> SIZE\r\n",
                PathError::BadValue { name: "SIZE" },
            ),
            (
                b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
                PathError::BadValue { name: "BODY" },
            ),
        ];
        for (line, err) in cases {
            assert_eq!(
                parse(line),
                Some(Err(err.clone())),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let long_local = format!("MAIL FROM:<{}@example.org>", "a".repeat(65));
        assert_eq!(
            parse(long_local.as_bytes()),
            Some(Err(PathError::Address {
                mail: true,
                why: A::TooLong
            }))
        );
        // 63 characters, but 65 once quoted for the wire.
        let long_quoted = format!("MAIL FROM:<\"{} \"@example.org>", "a".repeat(62));
        assert_eq!(
            parse(long_quoted.as_bytes()),
            Some(Err(PathError::Address {
                mail: true,
                why: A::TooLong
            }))
        );
    }

    #[test]
    fn replies_are_clear_and_never_echo_the_address() {
        let cases: &[(&[u8], &str)] = &[
            (b"RCPT TO:<j\xc3\xb6rg@example.com>", "553 5.6.7 "),
            (b"MAIL FROM:<j\xc3\xb6rg@example.com>", "553 5.6.7 "),
            (b"MAIL FROM:<a@example.org> SMTPUTF8", "555 5.6.7 "),
            (
                b"RCPT TO:<a@example.com> NOTIFY=NEVER",
                "555 5.5.4 RCPT TO parameter NOTIFY ",
            ),
            (b"RCPT TO:<a b@example.com>", "501 5.5.4 "),
            (b"RCPT TO:<a@exa_mple.com>", "553 5.1.3 "),
            (b"MAIL FROM:<a@exa_mple.com>", "553 5.1.7 "),
        ];
        for (line, prefix) in cases {
            let reply = parse(line).unwrap().unwrap_err().reply();
            assert!(reply.starts_with(prefix), "{reply}");
            assert!(!reply.contains("example"), "{reply}");
        }
    }

    /// Whatever is accepted writes back (`Mailbox::wire`) as a path that parses to the same
    /// mailbox, and a quoted local part stays quoted.
    #[test]
    fn wire_form_round_trips() {
        let cases: &[(&str, &str)] = &[
            ("a@example.org", "a@example.org"),
            ("\"a\"@example.org", "a@example.org"),
            ("\"john doe\"@example.org", "\"john doe\"@example.org"),
            ("\"a\\\"b\\\\c\"@example.org", "\"a\\\"b\\\\c\"@example.org"),
            (
                "\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com",
                "\"root> NOTIFY=NEVER ORCPT=rfc822;x\"@example.com",
            ),
            ("\"a@b\"@example.com", "\"a@b\"@example.com"),
            ("\"a..b\"@example.com", "\"a..b\"@example.com"),
            ("\".a\"@example.com", "\".a\"@example.com"),
            ("\"a.\"@example.com", "\"a.\"@example.com"),
            ("\"<x>\"@[IPv6:::1]", "\"<x>\"@[ipv6:::1]"),
        ];
        for (input, wire) in cases {
            let line = format!("RCPT TO:<{input}>");
            let Some(Ok(Command::Rcpt { rcpt })) = parse(line.as_bytes()) else {
                panic!("{input}");
            };
            assert_eq!(rcpt.wire(), *wire, "{input}");
            assert_eq!(parse_address(wire), Ok(rcpt.clone()), "{input}");
            assert_eq!(
                address::wire_address(&rcpt.to_string()).as_deref(),
                Ok(*wire)
            );
            let again = format!("RCPT TO:<{}>", rcpt.wire());
            assert_eq!(parse(again.as_bytes()), Some(Ok(Command::Rcpt { rcpt })));
        }
        // Every printable ASCII local part survives the round trip.
        for b in 32u8..=126 {
            let local = format!("x{}y", b as char);
            let m = address::parse_mailbox(&format!("{local}@example.com")).unwrap();
            assert_eq!(parse_address(&m.wire()), Ok(m.clone()), "{local:?}");
        }
        assert_eq!(
            parse_address("a b@example.com"),
            Err(PathError::Syntax { mail: false })
        );
        assert_eq!(
            parse_address("<a@example.com>"),
            Err(PathError::Syntax { mail: false })
        );
        assert_eq!(address::wire_address(""), Ok(String::new()));
        assert_eq!(
            address::wire_address("j\u{f6}rg@example.com"),
            Err(AddressError::NonAscii)
        );
    }
}
