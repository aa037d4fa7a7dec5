//! Classification of envelope addresses (`MAIL FROM` and `RCPT TO`) and RAT pattern matching.
//!
//! The SMTP server parses `MAIL FROM` and `RCPT TO` with [`crate::path`], which hands over a
//! [`Mailbox`] with the quotes of a quoted local part removed (escapes resolved) and any
//! source route (`@a,@b:`) dropped. So `"victim@other"@ours` becomes the local part
//! `victim@other` at the domain `ours`, and `<@a:b@c>` becomes `b@c`. [`parse_mailbox`] reads
//! the same stored form back (`victim@other@ours`, split at the last `@`), which is what the
//! configuration, the stores and the envelopes hold; [`Mailbox::wire`] writes it for the wire.
//!
//! # Security
//!
//! The input comes from an untrusted client, and the result decides whether PVO relays. The
//! rules that keep PVO from being an open relay are:
//!
//! - The domain is everything after the *last* `@`. That is the domain a receiving MTA routes
//!   on, so it is the only one a relay decision may use. Anything before it that looks like
//!   routing (`%`, `!`, or a further `@` that came from a quoted local part) stays in the local
//!   part, and [`Mailbox::has_routing`] reports it: a server must refuse such recipients from
//!   untrusted clients instead of hoping the next hop ignores them.
//! - The domain is normalised (ASCII lowercase, one trailing dot removed) before anyone compares
//!   it, so `victim@OTHER.` and `victim@other` are the same domain everywhere.
//! - The domain must be a syntactically valid DNS name or a valid address literal. Names whose
//!   last label is all digits (such as `127.0.0.1` without brackets) are refused: no top-level
//!   domain is numeric (RFC 3696 section 2), and some resolvers would treat such a name as an IP
//!   address, which would let a sender pick an arbitrary next hop.
//! - Control characters are refused in the local part. A quoted local part may carry them past
//!   `smtp-proto`, and they must never reach a log line or an outgoing `RCPT TO`.
//! - Non-ASCII characters are refused too: PVO does not offer SMTPUTF8 (RFC 6531), so an
//!   address is ASCII, and no invalid UTF-8 can be turned into U+FFFD and collide with another.
//! - Length limits follow RFC 5321 section 4.5.3.1, on the wire form: local part at most 64
//!   octets, domain at most 253, the whole address at most 254.
//!
//! # Stored form and wire form
//!
//! PVO keeps an address as `local@domain` with the local part *unquoted* (what it means, not
//! how it was spelt), split at the last `@`; that is what [`Mailbox`]'s `Display` writes and
//! what envelopes, logs of the stores and quarantine records hold. Anything that writes an
//! address for another program (an outgoing `MAIL FROM`/`RCPT TO`, a DSN, a CPQ record) uses
//! [`Mailbox::wire`] or [`wire_address`] instead: the RFC 5321 `Mailbox`, with the local part
//! as a Quoted-string whenever it is not a Dot-string, so `"root> NOTIFY=NEVER"@example.com`
//! stays one mailbox and never becomes `<root> NOTIFY=NEVER@example.com>` on the next hop.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Maximum length of a local part in octets (RFC 5321 section 4.5.3.1.1).
pub const MAX_LOCAL_LEN: usize = 64;
/// Maximum length of a domain in octets, without a trailing dot.
pub const MAX_DOMAIN_LEN: usize = 253;
/// Maximum length of a whole address (`local@domain`) in octets.
pub const MAX_ADDRESS_LEN: usize = 254;
/// Maximum length of one DNS label in octets.
const MAX_LABEL_LEN: usize = 63;

/// An envelope mailbox split into local part and normalised domain.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Mailbox {
    /// The local part exactly as received (case preserved, quotes already removed).
    pub local: String,
    /// The domain in ASCII lowercase without a trailing dot, or a canonical address literal
    /// such as `[192.0.2.1]` or `[ipv6:2001:db8::1]`.
    pub domain: String,
}

impl Mailbox {
    /// Whether the local part contains `%`, `!` or `@`: sender-specified routing (the percent
    /// hack, bang paths, a quoted `@`).
    ///
    /// Such an address asks the receiving side to forward the message to yet another place, so
    /// a gateway must not accept it from a client it does not relay for, whatever the domain.
    pub fn has_routing(&self) -> bool {
        self.local.contains(['%', '!', '@'])
    }

    /// The IP address of an address-literal domain (`[192.0.2.1]`, `[ipv6:...]`), or `None`
    /// for a domain name.
    ///
    /// Callers use this to recognise a sender or recipient given as one of PVO's own addresses.
    pub fn domain_literal(&self) -> Option<IpAddr> {
        parse_literal(&self.domain).ok()
    }
}

impl Mailbox {
    /// The RFC 5321 `Mailbox` to write on the wire (without angle brackets): the local part as
    /// is when it is a Dot-string, otherwise as a Quoted-string with `\` before every `"` and
    /// `\`. Parsing the result gives this mailbox back.
    pub fn wire(&self) -> String {
        format!("{}@{}", wire_local(&self.local), self.domain)
    }
}

/// A local part as RFC 5321 text: itself when it is a Dot-string, else a Quoted-string.
pub fn wire_local(local: &str) -> std::borrow::Cow<'_, str> {
    if is_dot_string(local) {
        return local.into();
    }
    let mut q = String::with_capacity(local.len() + 2);
    q.push('"');
    for c in local.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q.into()
}

/// Whether `b` is an RFC 5322 `atext` character (letters, digits and ``!#$%&'*+-/=?^_`{|}~``).
pub fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// Whether `local` is an RFC 5321 Dot-string: atoms of `atext` joined by single dots.
pub fn is_dot_string(local: &str) -> bool {
    !local.is_empty()
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.bytes().all(is_atext))
}

/// The wire form (see [`Mailbox::wire`]) of an address in PVO's stored form; the null path
/// (an empty string) stays empty. Every outbound path writes addresses through this, so an
/// address that cannot be written (a control or non-ASCII character, a stored value that is
/// no address) is an error here rather than a different mailbox on the next hop.
pub fn wire_address(stored: &str) -> Result<String, AddressError> {
    if stored.is_empty() {
        return Ok(String::new());
    }
    parse_mailbox(stored).map(|m| m.wire())
}

impl fmt::Display for Mailbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.local, self.domain)
    }
}

/// Why an envelope address was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AddressError {
    /// The address is empty (the null path, or `<postmaster>` as `smtp-proto` reports it).
    #[error("empty address")]
    Empty,
    /// There is no `@`, or nothing after the last one.
    #[error("address has no domain")]
    NoDomain,
    /// Nothing before the last `@`.
    #[error("address has an empty local part")]
    EmptyLocalPart,
    /// The local part contains a control character.
    #[error("local part contains a control character")]
    BadLocalPart,
    /// The address contains a non-ASCII character (or bytes that are not UTF-8): that needs
    /// SMTPUTF8, which PVO does not offer.
    #[error("address contains non-ASCII characters, which need SMTPUTF8 (not offered)")]
    NonAscii,
    /// The domain is neither a valid DNS name nor a valid address literal.
    #[error("invalid domain {0:?}")]
    BadDomain(String),
    /// The local part, the domain or the whole address is longer than RFC 5321 allows.
    #[error("address too long")]
    TooLong,
}

/// Splits an address as handed over by `smtp-proto` into a [`Mailbox`].
///
/// The split is at the *last* `@`. The domain is lowercased (ASCII) and one trailing dot is
/// removed, so `victim@Other.` gives the domain `other`. The domain must be a valid DNS name
/// (labels of 1 to 63 letters, digits or hyphens, not starting or ending with a hyphen, at most
/// 253 octets, single labels such as `localhost` allowed, last label not all digits) or an
/// address literal `[192.0.2.1]` or `[IPv6:...]`, checked with `std::net` and stored in
/// canonical lowercase form (`[ipv6:::1]`). Internationalised domains must arrive as A-labels
/// (`xn--...`). The local part (unquoted, as stored) must be non-empty, ASCII and free of
/// control characters, and at most 64 octets once written for the wire; the whole normalised
/// address is at most 254 octets on the wire.
pub fn parse_mailbox(addr: &str) -> Result<Mailbox, AddressError> {
    if addr.is_empty() {
        return Err(AddressError::Empty);
    }
    // The longest acceptable input is a maximal address plus one trailing dot. Refusing longer
    // input first bounds every later step.
    if addr.len() > MAX_ADDRESS_LEN + 1 {
        return Err(AddressError::TooLong);
    }
    let (local, domain) = addr.rsplit_once('@').ok_or(AddressError::NoDomain)?;
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if local.len() > MAX_LOCAL_LEN {
        return Err(AddressError::TooLong);
    }
    if domain.is_empty() {
        return Err(AddressError::NoDomain);
    }
    mailbox(local, normalise_domain(domain)?)
}

/// A [`Mailbox`] from an unquoted local part and a normalised domain, after the checks that
/// depend on the local part: not empty, no control character, ASCII, and within the RFC 5321
/// limits once written for the wire.
pub(crate) fn mailbox(local: &str, domain: String) -> Result<Mailbox, AddressError> {
    if local.is_empty() {
        return Err(AddressError::EmptyLocalPart);
    }
    if local.chars().any(char::is_control) {
        return Err(AddressError::BadLocalPart);
    }
    if !local.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    let wire_len = wire_local(local).len();
    if wire_len > MAX_LOCAL_LEN || wire_len + 1 + domain.len() > MAX_ADDRESS_LEN {
        return Err(AddressError::TooLong);
    }
    Ok(Mailbox {
        local: local.to_owned(),
        domain,
    })
}

/// Validates a domain and returns its normalised form.
pub(crate) fn normalise_domain(domain: &str) -> Result<String, AddressError> {
    let bad = || AddressError::BadDomain(domain.to_owned());
    if !domain.is_ascii() {
        return Err(AddressError::NonAscii);
    }
    if domain.starts_with('[') {
        // A trailing dot after an address literal is not a DNS root, so it is not accepted.
        let ip = parse_literal(domain).map_err(|()| bad())?;
        return Ok(format_literal(ip));
    }
    let name = domain.strip_suffix('.').unwrap_or(domain);
    if name.is_empty() {
        return Err(bad());
    }
    if name.len() > MAX_DOMAIN_LEN {
        return Err(AddressError::TooLong);
    }
    let mut last_label = "";
    for label in name.split('.') {
        let valid = !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(bad());
        }
        last_label = label;
    }
    if last_label.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(name.to_ascii_lowercase())
}

/// Parses `[192.0.2.1]` or `[IPv6:...]` (tag case-insensitive) into an IP address.
fn parse_literal(literal: &str) -> Result<IpAddr, ()> {
    let inner = literal
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .ok_or(())?;
    match inner.get(..5) {
        Some(tag) if tag.eq_ignore_ascii_case("ipv6:") => {
            // The remaining text is ASCII here because the tag was five ASCII bytes.
            let v6: Ipv6Addr = inner[5..].parse().map_err(|_| ())?;
            Ok(IpAddr::V6(v6))
        }
        _ => {
            // `Ipv4Addr`'s parser refuses leading zeros and short forms such as `127.1`, which
            // some C libraries would read differently.
            let v4: Ipv4Addr = inner.parse().map_err(|_| ())?;
            Ok(IpAddr::V4(v4))
        }
    }
}

/// Formats an IP address as the canonical lowercase address literal used in [`Mailbox`].
fn format_literal(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("[{v4}]"),
        IpAddr::V6(v6) => format!("[ipv6:{v6}]"),
    }
}

/// Whether a RAT or route domain pattern matches a domain, case-insensitively.
///
/// - `ALL` (in any case) matches every domain.
/// - `example.com` matches exactly that domain.
/// - `.example.com` matches any subdomain such as `mx.example.com`, but not `example.com`
///   itself and not `badexample.com`.
/// - An address literal such as `[IPv6:0::1]` matches the same address in any spelling.
///
/// One trailing dot is ignored on both sides. An empty pattern and a pattern containing `@`
/// (an address pattern, see [`recipient_matches`]) match no domain.
pub fn domain_matches(pattern: &str, domain: &str) -> bool {
    if pattern.eq_ignore_ascii_case("ALL") {
        return true;
    }
    let pattern = strip_root(pattern);
    let domain = strip_root(domain);
    if pattern.is_empty() || pattern.contains('@') {
        return false;
    }
    if pattern.starts_with('[') {
        return match (parse_literal(pattern), parse_literal(domain)) {
            (Ok(p), Ok(d)) => p == d,
            _ => false,
        };
    }
    if pattern.starts_with('.') {
        // Comparing bytes keeps the slicing safe even for non-ASCII input, which then simply
        // fails to match.
        let (p, d) = (pattern.as_bytes(), domain.as_bytes());
        return d.len() > p.len() && d[d.len() - p.len()..].eq_ignore_ascii_case(p);
    }
    pattern.eq_ignore_ascii_case(domain)
}

/// Whether a RAT entry matches a recipient.
///
/// The pattern is `ALL`, a domain pattern as for [`domain_matches`], or `local@domain`, which
/// matches that one mailbox: the domain exactly (after normalisation) and the local part
/// case-insensitively. RFC 5321 lets the receiving host treat local parts as case-sensitive,
/// but no real mail system does, and an entry that silently stops matching because a sender
/// typed `Postmaster` would be a surprise for the administrator; so PVO compares ASCII letters
/// case-insensitively.
///
/// This looks only at the pattern. A recipient with sender-specified routing (see
/// [`Mailbox::has_routing`]) still matches its domain here, so the server must refuse routed
/// recipients from untrusted clients before it consults the RAT.
pub fn recipient_matches(pattern: &str, rcpt: &Mailbox) -> bool {
    match pattern.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.starts_with('.')
                && local.eq_ignore_ascii_case(&rcpt.local)
                && domain_matches(domain, &rcpt.domain)
        }
        None => domain_matches(pattern, &rcpt.domain),
    }
}

/// Removes one trailing dot, the DNS root, from a domain or pattern.
fn strip_root(s: &str) -> &str {
    s.strip_suffix('.').unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses in the stored form (quotes removed, as `crate::path` hands them over), with
    /// the expected domain and routing flag. The comment on each row is what the client
    /// actually sent.
    #[test]
    fn parse_accepts_and_classifies() {
        let cases: &[(&str, &str, &str, bool)] = &[
            // (input, local, domain, has_routing)
            ("user@example.com", "user", "example.com", false),
            // Case variants: the domain is lowercased, the local part kept.
            ("User@EXAMPLE.Com", "User", "example.com", false),
            // victim@other. (trailing dot)
            ("victim@other.", "victim", "other", false),
            ("victim@Other.Example.", "victim", "other.example", false),
            // victim%other@ours (percent hack)
            ("victim%other@ours", "victim%other", "ours", true),
            // "victim@other"@ours
            ("victim@other@ours", "victim@other", "ours", true),
            // other!victim@ours (bang path)
            ("other!victim@ours", "other!victim", "ours", true),
            // "victim%other"@ours
            (
                "victim%other@ours.example",
                "victim%other",
                "ours.example",
                true,
            ),
            // @ours:victim@other and <@a,@b:u@c>: smtp-proto removes the source route.
            ("victim@other", "victim", "other", false),
            ("u@c", "u", "c", false),
            ("postmaster@localhost", "postmaster", "localhost", false),
            // Sender = our own [ip].
            ("victim@[127.0.0.1]", "victim", "[127.0.0.1]", false),
            ("victim@[IPv6:::1]", "victim", "[ipv6:::1]", false),
            (
                "victim@[ipv6:0:0:0:0:0:0:0:1]",
                "victim",
                "[ipv6:::1]",
                false,
            ),
            ("a@[IPv6:2001:DB8::1]", "a", "[ipv6:2001:db8::1]", false),
            (
                "a@[IPv6:::ffff:192.0.2.1]",
                "a",
                "[ipv6:::ffff:192.0.2.1]",
                false,
            ),
            (
                "first.last+tag@sub-domain.example.org",
                "first.last+tag",
                "sub-domain.example.org",
                false,
            ),
            (
                "a@xn--bcher-kva.example",
                "a",
                "xn--bcher-kva.example",
                false,
            ),
            ("a@1.example.com", "a", "1.example.com", false),
            ("a@example.123abc", "a", "example.123abc", false),
            // "john doe"@example.com: stored unquoted, written quoted again for the wire.
            ("john doe@example.com", "john doe", "example.com", false),
        ];
        for &(input, local, domain, routing) in cases {
            let m = parse_mailbox(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(m.local, local, "{input:?}");
            assert_eq!(m.domain, domain, "{input:?}");
            assert_eq!(m.has_routing(), routing, "{input:?}");
            assert_eq!(m.to_string(), format!("{local}@{domain}"), "{input:?}");
        }
    }

    #[test]
    fn parse_refuses() {
        let long_local = "a".repeat(65);
        let long_label = format!("a@{}.com", "b".repeat(64));
        let long_domain = format!("a@{}com", "b.".repeat(126));
        let long_total = format!(
            "{}@{}.{}.{}.com",
            "a".repeat(64),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(58)
        );
        let cases: &[(&str, AddressError)] = &[
            // <> (null path) and <postmaster>, which smtp-proto reports as "".
            ("", AddressError::Empty),
            // other!victim (bang path without domain)
            ("other!victim", AddressError::NoDomain),
            ("victim", AddressError::NoDomain),
            ("victim@", AddressError::NoDomain),
            ("@example.com", AddressError::EmptyLocalPart),
            ("a\0b@example.com", AddressError::BadLocalPart),
            ("a\r\nRCPT TO:<x@y>@example.com", AddressError::BadLocalPart),
            ("a\tb@example.com", AddressError::BadLocalPart),
            ("a@.", AddressError::BadDomain(".".into())),
            (
                "a@example..com",
                AddressError::BadDomain("example..com".into()),
            ),
            (
                "a@.example.com",
                AddressError::BadDomain(".example.com".into()),
            ),
            (
                "a@example.com..",
                AddressError::BadDomain("example.com..".into()),
            ),
            (
                "a@-example.com",
                AddressError::BadDomain("-example.com".into()),
            ),
            (
                "a@example-.com",
                AddressError::BadDomain("example-.com".into()),
            ),
            (
                "a@exa_mple.com",
                AddressError::BadDomain("exa_mple.com".into()),
            ),
            (
                "a@exa mple.com",
                AddressError::BadDomain("exa mple.com".into()),
            ),
            ("a@other%ours", AddressError::BadDomain("other%ours".into())),
            ("a@bücher.example", AddressError::NonAscii),
            ("bücher@example.com", AddressError::NonAscii),
            ("a\u{fffd}@example.com", AddressError::NonAscii),
            // An unbracketed IP address is not a domain.
            ("a@127.0.0.1", AddressError::BadDomain("127.0.0.1".into())),
            ("a@127.0.0.1.", AddressError::BadDomain("127.0.0.1.".into())),
            ("a@2130706433", AddressError::BadDomain("2130706433".into())),
            ("a@[127.0.0.1", AddressError::BadDomain("[127.0.0.1".into())),
            (
                "a@[127.0.0.1].",
                AddressError::BadDomain("[127.0.0.1].".into()),
            ),
            ("a@[127.1]", AddressError::BadDomain("[127.1]".into())),
            (
                "a@[127.000.000.001]",
                AddressError::BadDomain("[127.000.000.001]".into()),
            ),
            ("a@[::1]", AddressError::BadDomain("[::1]".into())),
            (
                "a@[IPv6:127.0.0.1]",
                AddressError::BadDomain("[IPv6:127.0.0.1]".into()),
            ),
            (
                "a@[IPv6:::1%eth0]",
                AddressError::BadDomain("[IPv6:::1%eth0]".into()),
            ),
            (
                "a@[tag:content]",
                AddressError::BadDomain("[tag:content]".into()),
            ),
            ("a@[]", AddressError::BadDomain("[]".into())),
            (&long_local, AddressError::NoDomain),
            (
                &long_label,
                AddressError::BadDomain(long_label[2..].to_owned()),
            ),
            (&long_domain, AddressError::TooLong),
            (&long_total, AddressError::TooLong),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_mailbox(input).as_ref(), Err(expected), "{input:?}");
        }
        let long_local_at = format!("{long_local}@example.com");
        assert_eq!(parse_mailbox(&long_local_at), Err(AddressError::TooLong));
    }

    #[test]
    fn length_limits_are_inclusive() {
        let local = "a".repeat(MAX_LOCAL_LEN);
        let m = parse_mailbox(&format!("{local}@example.com")).unwrap();
        assert_eq!(m.local, local);
        // 64 + 1 + 189 = 254 octets, with and without a trailing dot.
        let domain = format!(
            "{}.{}.{}.com",
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(57)
        );
        assert_eq!(domain.len(), 189);
        let addr = format!("{local}@{domain}");
        assert_eq!(addr.len(), MAX_ADDRESS_LEN);
        assert_eq!(parse_mailbox(&addr).unwrap().domain, domain);
        assert_eq!(parse_mailbox(&format!("{addr}.")).unwrap().domain, domain);
    }

    #[test]
    fn domain_literal_ip() {
        let cases: &[(&str, Option<IpAddr>)] = &[
            (
                "a@[192.0.2.1]",
                Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))),
            ),
            ("a@[IPv6:::1]", Some(IpAddr::V6(Ipv6Addr::LOCALHOST))),
            ("a@example.com", None),
        ];
        for (input, expected) in cases {
            assert_eq!(
                parse_mailbox(input).unwrap().domain_literal(),
                *expected,
                "{input}"
            );
        }
    }

    #[test]
    fn domain_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            // (pattern, domain, matches)
            ("ALL", "example.com", true),
            ("all", "anything.example", true),
            ("ALL", "[127.0.0.1]", true),
            ("example.com", "example.com", true),
            ("example.com", "EXAMPLE.COM", true),
            ("Example.Com", "example.com", true),
            ("example.com.", "example.com", true),
            ("example.com", "example.com.", true),
            ("example.com", "mx.example.com", false),
            ("example.com", "badexample.com", false),
            ("example.com", "example.com.evil", false),
            (".example.com", "mx.example.com", true),
            (".example.com", "a.b.EXAMPLE.com", true),
            (".example.com.", "mx.example.com", true),
            (".example.com", "example.com", false),
            (".example.com", "badexample.com", false),
            (".example.com", ".example.com", false),
            ("[127.0.0.1]", "[127.0.0.1]", true),
            ("[127.0.0.1]", "[127.0.0.2]", false),
            ("[IPv6:0::1]", "[ipv6:::1]", true),
            ("[IPv6:::1]", "localhost", false),
            ("", "example.com", false),
            ("", "", false),
            (".", "example.com", false),
            ("user@example.com", "example.com", false),
            ("é.example", "é.example", true),
            (".é", "aé", false),
        ];
        for &(pattern, domain, expected) in cases {
            assert_eq!(
                domain_matches(pattern, domain),
                expected,
                "{pattern:?} vs {domain:?}"
            );
        }
    }

    #[test]
    fn recipient_patterns() {
        let cases: &[(&str, &str, bool)] = &[
            // (pattern, recipient as smtp-proto hands it, matches)
            ("ALL", "victim@other", true),
            ("ours", "user@ours", true),
            ("ours", "user@OURS.", true),
            ("ours", "user@other", false),
            (".ours", "user@mx.ours", true),
            ("user@ours", "user@ours", true),
            ("user@ours", "USER@Ours", true),
            ("user@ours.", "user@ours", true),
            ("user@ours", "other@ours", false),
            ("user@ours", "user@mx.ours", false),
            ("user@.ours", "user@mx.ours", false),
            ("@ours", "user@ours", false),
            ("user@ours", "user@other@ours", false),
            // Routing is not the RAT's concern: the server refuses it first.
            ("ours", "victim%other@ours", true),
            ("ours", "victim@other@ours", true),
            ("victim@other@ours", "victim@other@ours", true),
            ("postmaster@[127.0.0.1]", "Postmaster@[127.0.0.1]", true),
        ];
        for &(pattern, rcpt, expected) in cases {
            let m = parse_mailbox(rcpt).unwrap();
            assert_eq!(
                recipient_matches(pattern, &m),
                expected,
                "{pattern:?} vs {rcpt:?}"
            );
        }
    }
}
