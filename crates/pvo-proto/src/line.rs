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
//!
//! An over-long line is refused once and then skipped up to its LF. The skipping must
//! survive reads: if the rest of the line arrives in a later TCP segment, that rest is still
//! part of the refused line and must never run as a command (`NOOP` + 3,000 bytes, then
//! `MAIL FROM:<smuggled@...>` in the next read). [`Framer`] keeps that state between calls;
//! servers use it rather than [`next_line`] and [`skip_line`] by hand.

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

/// What to do with the start of the receive buffer, as [`Framer::next`] tells it.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete command line of `len` bytes, terminator included: take it and run it.
    Line {
        /// Length of the line in bytes, terminator included.
        len: usize,
    },
    /// No LF within the limit: reply "500 5.5.2 Line too long" (once per line) and drop `len`
    /// bytes. If they did not reach the LF, the framer goes on discarding in later calls.
    TooLong {
        /// Bytes to drop from the start of the buffer.
        len: usize,
    },
    /// More of a refused over-long line (up to and including its LF, or all of the buffer if
    /// the LF has not arrived yet): drop `len` bytes without a reply.
    Discard {
        /// Bytes to drop from the start of the buffer.
        len: usize,
    },
    /// Nothing to do until more bytes arrive.
    Incomplete,
}

/// Command-line framing that remembers, between reads, that it is inside an over-long line.
///
/// The caller keeps the receive buffer; after each call it drops the bytes the [`Frame`]
/// names (all of them, also for [`Frame::Line`] once taken) and calls again, until
/// [`Frame::Incomplete`].
#[derive(Debug, Clone)]
pub struct Framer {
    max: usize,
    discarding: bool,
}

impl Framer {
    /// A framer for lines of at most `max` bytes, terminator included.
    pub fn new(max: usize) -> Framer {
        Framer {
            max,
            discarding: false,
        }
    }

    /// Whether the framer is skipping the rest of an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }

    /// Forgets any line in progress (the stream was replaced, e.g. by STARTTLS).
    pub fn reset(&mut self) {
        self.discarding = false;
    }

    /// Looks at the start of `buf`; see [`Frame`] for what the caller does next.
    pub fn next(&mut self, buf: &[u8]) -> Frame {
        if self.discarding {
            return match skip_line(buf) {
                Some(len) => {
                    self.discarding = false;
                    Frame::Discard { len }
                }
                None if buf.is_empty() => Frame::Incomplete,
                None => Frame::Discard { len: buf.len() },
            };
        }
        match next_line(buf, self.max) {
            Line::Complete { len } => Frame::Line { len },
            Line::Incomplete => Frame::Incomplete,
            Line::TooLong => match skip_line(buf) {
                Some(len) => Frame::TooLong { len },
                None => {
                    self.discarding = true;
                    Frame::TooLong { len: buf.len() }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` one read at a time and returns the lines taken and the number of
    /// "too long" replies, the way a server loop uses the framer.
    fn run_framer(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
        let mut framer = Framer::new(max);
        let mut buf = Vec::new();
        let mut lines = Vec::new();
        let mut too_long = 0;
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match framer.next(&buf) {
                    Frame::Line { len } => lines.push(buf.drain(..len).collect()),
                    Frame::TooLong { len } => {
                        too_long += 1;
                        buf.drain(..len);
                    }
                    Frame::Discard { len } => {
                        assert!(len > 0, "a discard must make progress");
                        buf.drain(..len);
                    }
                    Frame::Incomplete => break,
                }
            }
        }
        (lines, too_long)
    }

    #[test]
    fn an_overlong_line_split_across_reads_never_runs_its_tail() {
        let head = [b"NOOP".as_slice(), &[b'a'; 3000]].concat();
        // (reads, lines taken, "too long" replies)
        type Case<'a> = (&'a [&'a [u8]], &'a [&'a [u8]], usize);
        let cases: &[Case] = &[
            // (reads, lines taken, "too long" replies)
            (&[&head, b"MAIL FROM:<smuggled@evil.test>\r\n"], &[], 1),
            (
                &[&head, &[b'b'; 5000], b"RCPT TO:<x@y>\r\nNOOP\r\n"],
                &[b"NOOP\r\n"],
                1,
            ),
            (&[&head, b"tail\r\nQUIT\r\n"], &[b"QUIT\r\n"], 1),
            // The LF of the long line in the same read as its start.
            (&[&[&head[..], b"\nNOOP\r\n"].concat()], &[b"NOOP\r\n"], 1),
            // Two long lines: two replies.
            (&[&head, b"x\n", &head, b"y\nRSET\r\n"], &[b"RSET\r\n"], 2),
            // The LF alone in its own read.
            (&[&head, b"\n", b"NOOP\n"], &[b"NOOP\n"], 1),
            (
                &[b"NOOP\r\n", b"RSET\r", b"\n"],
                &[b"NOOP\r\n", b"RSET\r\n"],
                0,
            ),
        ];
        for (reads, lines, too_long) in cases {
            let (got, n) = run_framer(512, reads);
            assert_eq!(&got, lines, "{reads:?}");
            assert_eq!(n, *too_long, "{reads:?}");
        }
    }

    #[test]
    fn a_framer_split_at_every_byte_sees_the_same_lines() {
        let input = [
            b"EHLO x\r\n".as_slice(),
            &[b'z'; 40],
            b"\r\nNOOP\r\n",
            &[b'q'; 25],
            b"\nRSET\n",
        ]
        .concat();
        let whole = run_framer(20, &[&input]);
        assert_eq!(
            whole,
            (
                vec![
                    b"EHLO x\r\n".to_vec(),
                    b"NOOP\r\n".to_vec(),
                    b"RSET\n".to_vec()
                ],
                2
            )
        );
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run_framer(20, &[a, b]), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run_framer(20, &bytes), whole);
    }

    #[test]
    fn reset_forgets_a_line_in_progress() {
        let mut f = Framer::new(4);
        assert_eq!(f.next(b"abcdef"), Frame::TooLong { len: 6 });
        assert!(f.is_discarding());
        f.reset();
        assert_eq!(f.next(b"ab\r\n"), Frame::Line { len: 4 });
    }

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
