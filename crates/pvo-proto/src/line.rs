//! Framing of SMTP command lines in a receive buffer, with a hard length limit.
//!
//! The server keeps the bytes it has received in a buffer and asks [`next_line`] whether a
//! whole command line is there. A line ends at LF: normally CR LF, but a bare LF is tolerated
//! for commands, as most servers do, because some clients send it and a command line cannot
//! hide a second message the way a body can.
//!
//! # Security
//!
//! The buffer holds untrusted input. [`next_line`] only ever looks at the first `max` bytes,
//! so a client that never sends a line end cannot make the server buffer or scan without
//! bound: the caller gets [`Line::TooLong`] as soon as `max` bytes are there without an LF.
//! RFC 5321 section 4.5.3.1.4 sets 512 octets including CR LF for a command line; extensions
//! such as `SIZE` and `AUTH` justify a somewhat larger `max`, never an unlimited one.
//!
//! A bare CR inside a command line is not a line end here; it stays in the line, and the
//! command parser refuses the command.

/// The result of looking for a command line at the start of a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line of `len` bytes including its terminator (CRLF, or a bare LF which we
    /// tolerate for commands).
    Complete {
        /// Length of the line in bytes, terminator included.
        len: usize,
    },
    /// No line end yet, and fewer than `max` bytes buffered: read more.
    Incomplete,
    /// No line end within `max` bytes: the caller replies "500 5.5.2 Line too long" and must
    /// discard input up to and including the next LF (see [`skip_line`]).
    TooLong,
}

/// Looks for a complete command line at the start of `buf`.
///
/// `max` is the longest acceptable line in bytes, terminator included. A line is
/// [`Line::Complete`] if an LF occurs within the first `max` bytes, [`Line::TooLong`] if `buf`
/// holds at least `max` bytes and none of them is an LF, and [`Line::Incomplete`] otherwise.
pub fn next_line(buf: &[u8], max: usize) -> Line {
    let window = &buf[..buf.len().min(max)];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => Line::Complete { len: i + 1 },
        None if buf.len() >= max => Line::TooLong,
        None => Line::Incomplete,
    }
}

/// The command text of a complete line: the line without its CR LF or bare LF.
pub fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// How many bytes to discard from the start of `buf` after [`Line::TooLong`]: up to and
/// including the next LF, or `None` if there is no LF yet (then discard all of `buf` and keep
/// discarding until one arrives).
pub fn skip_line(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_line_table() {
        let cases: &[(&[u8], usize, Line)] = &[
            // (buffer, max, result)
            (b"", 512, Line::Incomplete),
            (b"EHLO x", 512, Line::Incomplete),
            (b"EHLO x\r", 512, Line::Incomplete),
            (b"EHLO x\r\n", 512, Line::Complete { len: 8 }),
            (b"EHLO x\n", 512, Line::Complete { len: 7 }),
            (b"\r\n", 512, Line::Complete { len: 2 }),
            (b"\n", 512, Line::Complete { len: 1 }),
            // Pipelined commands: only the first line is reported.
            (
                b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n",
                512,
                Line::Complete { len: 17 },
            ),
            (b"NOOP\nNOOP\r\n", 512, Line::Complete { len: 5 }),
            // A bare CR does not end a line.
            (b"NOOP\rRSET\r\n", 512, Line::Complete { len: 11 }),
            // The limit includes the terminator.
            (b"abc\r\n", 5, Line::Complete { len: 5 }),
            (b"abcd\r\n", 5, Line::TooLong),
            (b"abc\r", 5, Line::Incomplete),
            (b"abcd\r", 5, Line::TooLong),
            (b"abcde", 5, Line::TooLong),
            (b"abcdefgh\r\n", 5, Line::TooLong),
            (b"abcd", 5, Line::Incomplete),
            (b"abcd\n", 5, Line::Complete { len: 5 }),
            (b"", 0, Line::TooLong),
        ];
        for (buf, max, expected) in cases {
            assert_eq!(&next_line(buf, *max), expected, "{buf:?} max {max}");
        }
    }

    #[test]
    fn next_line_does_not_scan_past_max() {
        // An LF far beyond the limit must not make an overlong line complete.
        let mut buf = vec![b'a'; 100_000];
        buf.push(b'\n');
        assert_eq!(next_line(&buf, 512), Line::TooLong);
        assert_eq!(skip_line(&buf), Some(buf.len()));
    }

    #[test]
    fn strip_terminator_table() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"NOOP\r\n", b"NOOP"),
            (b"NOOP\n", b"NOOP"),
            (b"NOOP", b"NOOP"),
            (b"NOOP\r", b"NOOP"),
            (b"\r\n", b""),
            (b"NOOP\r\r\n", b"NOOP\r"),
        ];
        for (line, expected) in cases {
            assert_eq!(strip_terminator(line), *expected, "{line:?}");
        }
    }

    #[test]
    fn skip_line_table() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"", None),
            (b"aaaa", None),
            (b"aaaa\r", None),
            (b"aaaa\r\nNOOP\r\n", Some(6)),
            (b"\nNOOP", Some(1)),
        ];
        for (buf, expected) in cases {
            assert_eq!(skip_line(buf), *expected, "{buf:?}");
        }
    }
}
