//! SMTP replies as a client reads them from a server it does not trust, with hard limits.
//!
//! [`ReplyReader`] takes the received bytes in whatever pieces the network delivers them and
//! says when one whole reply (its last line, `NNN text` rather than `NNN-text`) has been
//! read and how many bytes it used, so the bytes of the next pipelined reply stay with the
//! caller.
//!
//! # Security
//!
//! The bytes come from a next hop, a manager or a host an administrator is diagnosing. A line
//! longer than [`MAX_LINE`] bytes is kept truncated and the rest of it is skipped up to its
//! LF, however many reads that takes (as Postfix's client does): the tail of a long line is
//! never taken for a reply of its own, which would put every later reply out of step with
//! its command. A reply of more than [`MAX_LINES`] lines is an error, so memory stays bounded
//! whatever the server sends.

use thiserror::Error;

/// Bytes of one reply line kept, terminator excluded; the rest of a longer line is skipped.
/// RFC 5321 section 4.5.3.1.5 allows 512 octets; servers with long texts exceed it.
pub const MAX_LINE: usize = 4096;

/// Lines in one reply; an EHLO reply has a few dozen at most.
pub const MAX_LINES: usize = 100;

/// One SMTP reply: the code and each line as received, without its CR LF (invalid UTF-8
/// replaced), e.g. `["250-mx.example", "250 SIZE 1000"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code of the last line.
    pub code: u16,
    /// The lines, code and separator included.
    pub lines: Vec<String>,
}

impl Reply {
    /// The text after each line's code and separator, lines joined by `\n`.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self
            .lines
            .iter()
            .map(|l| l.get(4..).unwrap_or(""))
            .collect();
        texts.join("\n")
    }
}

/// A reply that is not one.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    /// A line that does not start with a code from 200 to 599 followed by a space, a hyphen
    /// or the end of the line (the line, as received).
    #[error("malformed reply {0:?}")]
    Malformed(String),
    /// More than [`MAX_LINES`] lines without a last line.
    #[error("more than {0} reply lines")]
    TooManyLines(usize),
}

/// Reads one reply at a time from bytes fed in any pieces; see the module documentation.
#[derive(Debug, Default)]
pub struct ReplyReader {
    /// The line being received, at most [`MAX_LINE`] bytes of it.
    line: Vec<u8>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// A reader at the start of a reply.
    pub fn new() -> ReplyReader {
        ReplyReader::default()
    }

    /// Takes bytes from the start of `input`, up to the end of the current reply at most.
    /// Returns how many bytes it used and the reply if it is complete (`Ok(None)`: all of
    /// `input` was used, feed more). After a reply or an error the reader starts afresh.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Result<Option<Reply>, ReplyError>) {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            let (piece, end) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], true),
                None => (rest, false),
            };
            used += piece.len() + usize::from(end);
            // Past the limit the line stops growing until its LF: the tail is skipped,
            // even when it arrives in later reads.
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&piece[..piece.len().min(room)]);
            if !end {
                break;
            }
            match self.end_line() {
                Ok(None) => {}
                other => return (used, other),
            }
        }
        (used, Ok(None))
    }

    /// A line ended: returns the reply if it was the last line.
    fn end_line(&mut self) -> Result<Option<Reply>, ReplyError> {
        let raw = std::mem::take(&mut self.line);
        let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
        let text = String::from_utf8_lossy(raw).into_owned();
        let code = match raw {
            [a @ b'2'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
                u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
            }
            _ => return Err(self.fail(ReplyError::Malformed(text))),
        };
        let last = match raw.get(3) {
            None | Some(b' ') => true,
            Some(b'-') => false,
            Some(_) => return Err(self.fail(ReplyError::Malformed(text))),
        };
        self.lines.push(text);
        if last {
            let lines = std::mem::take(&mut self.lines);
            return Ok(Some(Reply { code, lines }));
        }
        if self.lines.len() >= MAX_LINES {
            return Err(self.fail(ReplyError::TooManyLines(MAX_LINES)));
        }
        Ok(None)
    }

    fn fail(&mut self, e: ReplyError) -> ReplyError {
        self.lines.clear();
        self.line.clear();
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` one at a time; returns every reply (or error) and the bytes left over.
    fn read_all(reads: &[&[u8]]) -> (Vec<Result<Reply, ReplyError>>, usize) {
        let mut r = ReplyReader::new();
        let mut out = Vec::new();
        let mut left = 0;
        for read in reads {
            let mut input: &[u8] = read;
            loop {
                let (used, res) = r.feed(input);
                assert!(used <= input.len());
                input = &input[used..];
                match res {
                    Ok(Some(reply)) => out.push(Ok(reply)),
                    Ok(None) => {
                        assert!(input.is_empty(), "Ok(None) must use all input");
                        break;
                    }
                    Err(e) => {
                        out.push(Err(e));
                        left += input.len();
                        break;
                    }
                }
                if input.is_empty() {
                    break;
                }
            }
        }
        (out, left)
    }

    fn reply(code: u16, lines: &[&str]) -> Result<Reply, ReplyError> {
        Ok(Reply {
            code,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        })
    }

    #[test]
    fn reply_table() {
        type Replies = Vec<Result<Reply, ReplyError>>;
        let cases: &[(&[u8], Replies)] = &[
            (b"220 mx ESMTP\r\n", vec![reply(220, &["220 mx ESMTP"])]),
            (b"250\r\n", vec![reply(250, &["250"])]),
            (b"250 ok\n", vec![reply(250, &["250 ok"])]),
            (
                b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
                vec![reply(250, &["250-mx", "250-PIPELINING", "250 SIZE 10"])],
            ),
            // Pipelined replies in one read: each on its own.
            (
                b"250 a\r\n250 b\r\n354 go\r\n",
                vec![
                    reply(250, &["250 a"]),
                    reply(250, &["250 b"]),
                    reply(354, &["354 go"]),
                ],
            ),
            (
                b"25 short\r\n",
                vec![Err(ReplyError::Malformed("25 short".into()))],
            ),
            (
                b"250ok\r\n",
                vec![Err(ReplyError::Malformed("250ok".into()))],
            ),
            (
                b"+25 ok\r\n",
                vec![Err(ReplyError::Malformed("+25 ok".into()))],
            ),
            (
                b"199 low\r\n",
                vec![Err(ReplyError::Malformed("199 low".into()))],
            ),
            (
                b"600 high\r\n",
                vec![Err(ReplyError::Malformed("600 high".into()))],
            ),
            (b"\r\n", vec![Err(ReplyError::Malformed(String::new()))]),
            (b"250 caf\xff\r\n", vec![reply(250, &["250 caf\u{fffd}"])]),
            // A bare CR stays in the line.
            (b"250 a\rb\r\n", vec![reply(250, &["250 a\rb"])]),
        ];
        for (input, expected) in cases {
            assert_eq!(&read_all(&[input]).0, expected, "{input:?}");
        }
    }

    #[test]
    fn the_tail_of_an_overlong_line_is_never_a_reply() {
        // The first read ends exactly at the limit; the second starts with what looks like a
        // final line. It is the rest of the first line and must be skipped.
        let mut first = b"550-5.1.1 ".to_vec();
        first.resize(MAX_LINE, b'x');
        let second: &[u8] = b"250 2.1.5 smuggled ok\r\n550 5.1.1 no such user\r\n";
        let (got, left) = read_all(&[&first, second]);
        assert_eq!(left, 0);
        assert_eq!(got.len(), 1, "{got:?}");
        let r = got[0].as_ref().unwrap();
        assert_eq!(r.code, 550);
        assert_eq!(r.lines.len(), 2);
        assert_eq!(r.lines[0].len(), MAX_LINE);
        assert_eq!(r.lines[1], "550 5.1.1 no such user");
        // The same when the tail comes byte by byte.
        let whole = [first.as_slice(), second].concat();
        let bytes: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(read_all(&bytes).0, got);
        // And at every split of the whole.
        for i in (0..whole.len()).step_by(97) {
            let (a, b) = whole.split_at(i);
            assert_eq!(read_all(&[a, b]).0, got, "split at {i}");
        }
    }

    #[test]
    fn a_long_line_is_kept_truncated_and_its_final_flag_comes_from_its_start() {
        let mut line = b"250 ".to_vec();
        line.extend(std::iter::repeat_n(b'y', 10_000));
        line.extend_from_slice(b"-\r\n");
        let (got, _) = read_all(&[&line[..5000], &line[5000..]]);
        let r = got[0].as_ref().unwrap();
        assert_eq!(r.code, 250);
        assert_eq!(r.lines.len(), 1);
        assert_eq!(r.lines[0].len(), MAX_LINE);
    }

    #[test]
    fn too_many_lines_is_an_error_and_memory_stays_bounded() {
        let many = b"250-x\r\n".repeat(MAX_LINES + 5);
        let (got, left) = read_all(&[&many]);
        assert_eq!(got, vec![Err(ReplyError::TooManyLines(MAX_LINES))]);
        assert_eq!(left, 5 * 7);
        // A line that never ends keeps at most MAX_LINE bytes.
        let mut r = ReplyReader::new();
        for _ in 0..100 {
            assert_eq!(r.feed(&[b'z'; 65536]), (65536, Ok(None)));
        }
        assert_eq!(r.line.len(), MAX_LINE);
    }

    #[test]
    fn text_is_what_follows_each_code() {
        let r = Reply {
            code: 250,
            lines: vec!["250-mx".into(), "250 SIZE 10".into(), "250".into()],
        };
        assert_eq!(r.text(), "mx\nSIZE 10\n");
    }
}
