//! The DATA phase decoder: finds the end of a message, removes dot-stuffing and normalises line
//! endings, for input that arrives in arbitrary pieces.
//!
//! After the server's `354` reply, the client sends the message and ends it with a line holding
//! a single dot. [`DataDecoder`] consumes those raw bytes as they arrive, appends the body to a
//! buffer, and reports where the message ended so that any pipelined bytes after the end can be
//! handed back to the command parser.
//!
//! # Security
//!
//! The input is untrusted, and this is the code that defends against SMTP smuggling (the 2023
//! attacks on Postfix, Sendmail, Exim and Cisco): a sender hides a second `MAIL FROM`/`RCPT
//! TO`/`DATA` transaction inside a message, behind an end-of-data sequence that one server
//! ignores and the next one honours. The contract is:
//!
//! - **The only end of data is the raw byte sequence CR LF `.` CR LF.** The leading CR LF is
//!   either the one that ended the `DATA` command line (so the decoder starts as if a line had
//!   just ended, and an empty message `.` CR LF is valid) or one inside the body. Detection
//!   works on the raw bytes, before any normalisation, so normalisation can never create an end
//!   marker. Every known smuggling sequence — `\n.\n`, `\r.\r`, `\r.\n`, `\n.\r`, `\n.\r\n`,
//!   `\r\n.\n`, `\r.\r\n`, `\r\n.\r`, `\r\n\0.\r\n`, `\r\n.\0\r\n`, `\r\n.\r\r\n` — is *not* an
//!   end and stays inside the body, so the hidden transaction is only text in one message.
//! - **Dot-unstuffing** (RFC 5321 section 4.5.2): a line that begins with `.` after a raw CR LF,
//!   or at the very start, loses that first `.`. A line that begins after a bare CR or LF is not
//!   a line to the SMTP framing, so its dot is kept.
//! - **Normalisation**: in the output every line ends with CR LF. A bare LF becomes CR LF, and
//!   so does a bare CR (a CR not immediately followed by LF, where the LF may arrive in a later
//!   call). The output therefore never holds a bare CR or LF, and nothing PVO stores or forwards
//!   can be read differently by another server. All other bytes pass unchanged. The number
//!   of bare endings is counted for the log.
//! - **NUL**: RFC 5321 and 8BITMIME allow no NUL in a message, and a receiver that drops NULs
//!   reads `\r\n\0.\r\n` as the end of data. The decoder counts the NULs of the body
//!   ([`DataDecoder::nul_bytes`]) and the server refuses a message that has any (`554 5.6.0`),
//!   so no NUL is stored or forwarded; [`crate::dotstuff::encode_data`] also drops any NUL on
//!   the way out.
//! - **Any split**: input may be cut at any byte boundary across calls to
//!   [`DataDecoder::feed`]; the body, the counters and the end position are the same as for
//!   the whole input. All state lives in the decoder, none in the input.
//! - **Bounded memory**: once the body would exceed the size limit, nothing more is appended,
//!   but the decoder keeps reading to the end marker so that the server can answer `552` at the
//!   right moment and stay in sync with the client.

/// The decoder's position in the raw byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Just after a raw CR LF, or at the start: a `.` here is stuffing or the end marker.
    LineStart,
    /// After a raw CR LF and a `.`. The dot is dropped either way: it is stuffing or part of
    /// the end marker.
    Dot,
    /// After a raw CR LF, a `.` and a CR: an LF now ends the data.
    DotCr,
    /// Inside a line.
    Text,
    /// After a CR inside a line; whether it is bare depends on the next byte.
    Cr,
    /// The end marker has been consumed.
    Done,
}

/// Incremental decoder for the bytes a client sends after the `354` reply to `DATA`.
///
/// Create one per transaction, after the `DATA` command line has been consumed, and call
/// [`feed`](Self::feed) with each piece of input until it returns [`DataStatus::Done`].
#[derive(Debug, Clone)]
pub struct DataDecoder {
    state: State,
    max_size: usize,
    /// Body bytes produced so far, including those not appended because of the size limit.
    body_len: u64,
    exceeded: bool,
    bare_line_endings: u64,
    nul_bytes: u64,
    raw_len: u64,
}

/// What [`DataDecoder::feed`] found in its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStatus {
    /// All input consumed, end not yet seen.
    NeedMore,
    /// End of data seen; `consumed` bytes of this input belonged to DATA (including the final
    /// `.\r\n`); the rest of the input is the next command (pipelining).
    Done {
        /// Bytes of this call's input that belonged to the message.
        consumed: usize,
    },
}

impl DataDecoder {
    /// Creates a decoder that appends at most `max_size` body bytes (after unstuffing and
    /// normalising). Beyond that it stops appending to the output but keeps reading to the end
    /// marker, so the server can reply `552` after the end. What was appended to the output by
    /// then is a truncated body, to be discarded.
    pub fn new(max_size: usize) -> Self {
        Self {
            state: State::LineStart,
            max_size,
            body_len: 0,
            exceeded: false,
            bare_line_endings: 0,
            nul_bytes: 0,
            raw_len: 0,
        }
    }

    /// Feeds raw bytes received after the server's `354` reply and appends the body to `out`.
    ///
    /// Returns [`DataStatus::Done`] with the number of bytes of `input` that belonged to the
    /// message once the end marker has been seen; the caller must treat the rest of `input` as
    /// command input. Once done, further calls consume nothing and return
    /// `Done { consumed: 0 }`.
    ///
    /// The body appended to `out` never contains a bare CR or LF, and once the end has been
    /// seen it is empty or ends with CR LF (unless the size limit cut it short). Bytes already
    /// in `out` are left alone and do not count towards the size limit.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> DataStatus {
        if self.state == State::Done {
            return DataStatus::Done { consumed: 0 };
        }
        let mut i = 0;
        while i < input.len() {
            match self.state {
                State::Text => {
                    // The common path: copy a whole run of ordinary bytes, and its CR LF if
                    // present, with one append.
                    let rest = &input[i..];
                    let Some(n) = rest.iter().position(|&b| b == b'\r' || b == b'\n') else {
                        self.emit(rest, out);
                        i = input.len();
                        continue;
                    };
                    match (rest[n], rest.get(n + 1)) {
                        (b'\r', Some(b'\n')) => {
                            self.emit(&rest[..n + 2], out);
                            i += n + 2;
                            self.state = State::LineStart;
                        }
                        (b'\r', None) => {
                            // The LF, if any, is in the next piece of input.
                            self.emit(&rest[..n], out);
                            i += n + 1;
                            self.state = State::Cr;
                        }
                        (b'\r', Some(_)) => {
                            // A bare CR: the run plus the CR becomes a line ending in CR LF.
                            self.emit(&rest[..n], out);
                            self.bare_line_end(out);
                            i += n + 1;
                        }
                        _ => {
                            // A bare LF. The next line does not start after a raw CR LF, so it
                            // stays in `Text`, where a leading dot is ordinary text.
                            self.emit(&rest[..n], out);
                            self.bare_line_end(out);
                            i += n + 1;
                        }
                    }
                }
                State::Cr => {
                    if input[i] == b'\n' {
                        self.emit(b"\r\n", out);
                        i += 1;
                        self.state = State::LineStart;
                    } else {
                        // The CR was bare. The current byte is not consumed here: it is
                        // ordinary text, and may itself be a CR or LF.
                        self.bare_line_end(out);
                        self.state = State::Text;
                    }
                }
                State::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.state = State::DotCr;
                    } else {
                        // A stuffed line: the dot is already dropped, the rest is text.
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if input[i] == b'\n' {
                        i += 1;
                        self.state = State::Done;
                        self.raw_len += i as u64;
                        return DataStatus::Done { consumed: i };
                    }
                    // CR LF `.` CR without LF, as in `\r\n.\r\r\n`: not an end. The line was
                    // a lone (stuffed) dot ended by a bare CR.
                    self.bare_line_end(out);
                    self.state = State::Text;
                }
                State::Done => unreachable!("the loop returns as soon as the end is seen"),
            }
        }
        self.raw_len += input.len() as u64;
        DataStatus::NeedMore
    }

    /// Whether the body grew beyond `max_size`; the server must then reply `552` after the end.
    pub fn size_exceeded(&self) -> bool {
        self.exceeded
    }

    /// How many bare CR or bare LF were found and normalised (for logging).
    pub fn bare_line_endings(&self) -> u64 {
        self.bare_line_endings
    }

    /// How many NUL bytes the body held (including any beyond the size limit): the server
    /// refuses such a message.
    pub fn nul_bytes(&self) -> u64 {
        self.nul_bytes
    }

    /// Raw bytes consumed so far, including the end marker once it has been seen.
    pub fn raw_len(&self) -> u64 {
        self.raw_len
    }

    /// Body bytes produced so far (after unstuffing and normalising), including any that were
    /// not appended because the size limit was exceeded.
    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Whether the end marker has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Ends a line at a bare CR or LF, which the output spells CR LF.
    fn bare_line_end(&mut self, out: &mut Vec<u8>) {
        self.bare_line_endings += 1;
        self.emit(b"\r\n", out);
    }

    /// Appends body bytes up to the size limit.
    ///
    /// The output holds exactly the first `max_size` bytes of the body, which does not depend
    /// on how the input was split, except that a CR whose LF falls beyond the limit is left out
    /// too, so that even a cut-short body has no bare CR.
    fn emit(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        let len = bytes.len() as u64;
        // `contains` is a memchr: the common body without NUL costs one fast scan.
        if bytes.contains(&0) {
            self.nul_bytes += bytes.iter().filter(|&&b| b == 0).count() as u64;
        }
        if !self.exceeded {
            let room = (self.max_size as u64).saturating_sub(self.body_len);
            if len <= room {
                out.extend_from_slice(bytes);
            } else {
                self.exceeded = true;
                // `room` is below `bytes.len()`, so it fits in a `usize`. A chunk never ends in
                // the CR of a CR LF, so a CR just before the cut always lost its LF to the cut.
                let mut take = room as usize;
                if take > 0 && bytes[take - 1] == b'\r' {
                    take -= 1;
                }
                out.extend_from_slice(&bytes[..take]);
            }
        }
        self.body_len = self.body_len.saturating_add(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 2023 smuggling sequences, each with the body text it must turn into and the number
    /// of bare endings it contains. Each is preceded by a line `first` and followed by `M`.
    const SMUGGLING: &[(&[u8], &[u8], u64)] = &[
        (b"\n.\n", b"\r\n.\r\n", 2),
        (b"\r.\r", b"\r\n.\r\n", 2),
        (b"\r.\n", b"\r\n.\r\n", 2),
        (b"\n.\r", b"\r\n.\r\n", 2),
        (b"\n.\r\n", b"\r\n.\r\n", 1),
        // After a raw CR LF the dot is stuffing, so it goes, and the bare LF ends an empty line.
        (b"\r\n.\n", b"\r\n\r\n", 1),
        (b"\r.\r\n", b"\r\n.\r\n", 1),
        (b"\r\n.\r", b"\r\n\r\n", 1),
        (b"\r\n\x00.\r\n", b"\r\n\x00.\r\n", 0),
        (b"\r\n.\x00\r\n", b"\r\n\x00\r\n", 0),
        (b"\r\n.\r\r\n", b"\r\n\r\n\r\n", 1),
    ];

    /// The part of the end marker after the CR LF that ends the last line.
    const END_TAIL: &[u8] = b".\r\n";

    const SECOND: &[u8] = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsecond\r\n";

    /// The result of decoding: body, total bytes consumed when done, bare endings, exceeded.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        body: Vec<u8>,
        consumed: Option<usize>,
        bare: u64,
        exceeded: bool,
        raw_len: u64,
    }

    /// Feeds `pieces` in order, stopping at the end marker, and reports the outcome with the
    /// consumed count relative to the concatenated input.
    fn decode_pieces(pieces: &[&[u8]], max: usize) -> Outcome {
        let mut d = DataDecoder::new(max);
        let mut body = Vec::new();
        let mut offset = 0;
        let mut consumed = None;
        for piece in pieces {
            match d.feed(piece, &mut body) {
                DataStatus::NeedMore => offset += piece.len(),
                DataStatus::Done { consumed: c } => {
                    consumed = Some(offset + c);
                    break;
                }
            }
        }
        assert_eq!(d.is_done(), consumed.is_some());
        Outcome {
            body,
            consumed,
            bare: d.bare_line_endings(),
            exceeded: d.size_exceeded(),
            raw_len: d.raw_len(),
        }
    }

    /// Decodes `input` whole, byte by byte, and split in two at every position, asserts that
    /// all give the same outcome, and returns it.
    fn decode_all_ways(input: &[u8], max: usize) -> Outcome {
        let whole = decode_pieces(&[input], max);
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(&bytes, max), whole, "byte by byte: {input:?}");
        for k in 0..=input.len() {
            let (a, b) = input.split_at(k);
            assert_eq!(
                decode_pieces(&[a, b], max),
                whole,
                "split at {k}: {input:?}"
            );
        }
        assert!(
            !has_bare_cr_or_lf(&whole.body),
            "bare ending in {:?}",
            whole.body
        );
        if let Some(c) = whole.consumed {
            assert_eq!(whole.raw_len, c as u64);
            assert!(ends_with_end_marker(&input[..c]), "{input:?}");
        } else {
            assert_eq!(whole.raw_len, input.len() as u64);
        }
        whole
    }

    /// Whether `input` ends with the end-of-data marker, counting a marker at the very start.
    fn ends_with_end_marker(input: &[u8]) -> bool {
        input == END_TAIL || input.ends_with(b"\r\n.\r\n")
    }

    fn has_bare_cr_or_lf(body: &[u8]) -> bool {
        body.iter().enumerate().any(|(i, &b)| match b {
            b'\r' => body.get(i + 1) != Some(&b'\n'),
            b'\n' => i == 0 || body[i - 1] != b'\r',
            _ => false,
        })
    }

    /// (raw input, body, consumed, bare endings)
    type TableCase = (&'static [u8], &'static [u8], Option<usize>, u64);

    #[test]
    fn table() {
        let cases: &[TableCase] = &[
            // (raw input, body, consumed, bare endings)
            (b".\r\n", b"", Some(3), 0),
            (b".\r\nQUIT\r\n", b"", Some(3), 0),
            (b"", b"", None, 0),
            (b"hello\r\n.\r\n", b"hello\r\n", Some(10), 0),
            (b"a\r\nb\r\n\r\n.\r\n", b"a\r\nb\r\n\r\n", Some(11), 0),
            (b"hello\r\n", b"hello\r\n", None, 0),
            (b"hello\r\n.\r", b"hello\r\n", None, 0),
            (b"hello", b"hello", None, 0),
            // Dot-stuffed lines, including a stuffed lone dot and a stuffed first line.
            (b"..\r\n.\r\n", b".\r\n", Some(7), 0),
            (
                b"..a\r\n...b\r\nc.\r\n.\r\n",
                b".a\r\n..b\r\nc.\r\n",
                Some(18),
                0,
            ),
            (b"x\r\n..\r\n.\r\n", b"x\r\n.\r\n", Some(10), 0),
            (b"x\r\n.y\r\n.\r\n", b"x\r\ny\r\n", Some(10), 0),
            // Pipelined commands after the end are not consumed.
            (b"body\r\n.\r\nMAIL FROM:<a@b>\r\n", b"body\r\n", Some(9), 0),
            (b"body\r\n.\r\n.\r\n", b"body\r\n", Some(9), 0),
            // Bare endings are normalised and counted; a dot after one is text.
            (b"a\nb\rc\r\n.\r\n", b"a\r\nb\r\nc\r\n", Some(10), 2),
            (b"a\r\r\n.\r\n", b"a\r\n\r\n", Some(7), 1),
            (b"a\n\r\n.\r\n", b"a\r\n\r\n", Some(7), 1),
            (b"a\r\n\n.\r\n", b"a\r\n\r\n.\r\n", None, 1),
            (b"\n.\r\n", b"\r\n.\r\n", None, 1),
            (b"\r\n.\r\n", b"\r\n", Some(5), 0),
            (b".\r.\r\n", b"\r\n.\r\n", None, 1),
            (b".\n", b"\r\n", None, 1),
            (b"a\r", b"a", None, 0),
            // NUL and 8-bit bytes pass unchanged.
            (b"\x00\xff\x80\r\n.\r\n", b"\x00\xff\x80\r\n", Some(8), 0),
        ];
        for &(input, body, consumed, bare) in cases {
            let got = decode_all_ways(input, usize::MAX);
            assert_eq!(got.body, body, "{input:?}");
            assert_eq!(got.consumed, consumed, "{input:?}");
            assert_eq!(got.bare, bare, "{input:?}");
            assert!(!got.exceeded);
        }
    }

    /// NULs are counted wherever they are (the `\r\n\0.\r\n` smuggling sequence, after a
    /// stuffed dot, beyond the size limit), the same for every split of the input, so the
    /// server can refuse the message.
    #[test]
    fn nul_bytes_are_counted() {
        let cases: &[(&[u8], usize, u64)] = &[
            // (raw input, size limit, NULs)
            (b"hello\r\n.\r\n", usize::MAX, 0),
            (b"first\r\n\x00.\r\nMAIL FROM:<a@b>\r\n.\r\n", usize::MAX, 1),
            (b"first\r\n.\x00\r\n.\r\n", usize::MAX, 1),
            (b"\x00\x00a\x00\r\n.\r\n", usize::MAX, 3),
            (b"aaaa\x00\x00\r\n.\r\n", 2, 2),
        ];
        for &(input, max, nuls) in cases {
            for k in 0..=input.len() {
                let (a, b) = input.split_at(k);
                let mut d = DataDecoder::new(max);
                let mut body = Vec::new();
                let done = matches!(d.feed(a, &mut body), DataStatus::Done { .. })
                    || matches!(d.feed(b, &mut body), DataStatus::Done { .. });
                assert!(done, "{input:?}");
                assert_eq!(d.nul_bytes(), nuls, "split at {k}: {input:?}");
            }
        }
    }

    #[test]
    fn smuggling_sequences_stay_in_one_body() {
        for &(seq, fragment, bare) in SMUGGLING {
            let mut input = b"Subject: one\r\n\r\nfirst".to_vec();
            input.extend_from_slice(seq);
            input.extend_from_slice(SECOND);
            let end = input.len() + END_TAIL.len();
            input.extend_from_slice(END_TAIL);
            input.extend_from_slice(b"QUIT\r\n");

            let got = decode_all_ways(&input, usize::MAX);
            assert_eq!(got.consumed, Some(end), "{seq:?}");

            let mut expected = b"Subject: one\r\n\r\nfirst".to_vec();
            expected.extend_from_slice(fragment);
            expected.extend_from_slice(SECOND);
            assert_eq!(got.body, expected, "{seq:?}");
            assert_eq!(got.bare, bare, "{seq:?}");
        }
    }

    #[test]
    fn smuggling_sequence_at_the_very_end_does_not_end() {
        // Without the real end, no smuggling sequence may finish the message, wherever it is.
        for &(seq, _, _) in SMUGGLING {
            for prefix in [&b""[..], b"x", b"x\r\n"] {
                let mut input = prefix.to_vec();
                input.extend_from_slice(seq);
                input.extend_from_slice(SECOND);
                let got = decode_all_ways(&input, usize::MAX);
                assert_eq!(got.consumed, None, "{input:?}");
            }
        }
    }

    #[test]
    fn pipelined_second_transaction_is_left_for_the_caller() {
        let mut input = b"one\r\n.\r\n".to_vec();
        input.extend_from_slice(SECOND);
        input.extend_from_slice(b".\r\n");
        let got = decode_all_ways(&input, usize::MAX);
        assert_eq!(got.body, b"one\r\n");
        assert_eq!(got.consumed, Some(8));

        // The rest starts with the next command, and a new decoder reads the second body.
        let rest = &input[8..];
        let second_data = rest.windows(6).position(|w| w == b"DATA\r\n").unwrap() + 6;
        let got = decode_all_ways(&rest[second_data..], usize::MAX);
        assert_eq!(got.body, b"second\r\n");
        assert_eq!(got.consumed, Some(rest.len() - second_data));
    }

    #[test]
    fn size_limit_still_finds_the_end() {
        let cases: &[(&[u8], usize, bool, &[u8])] = &[
            // (input, max_size, exceeded, body appended)
            (b"0123456789\r\n.\r\nNEXT", 12, false, b"0123456789\r\n"),
            // The limit falls between CR and LF: the CR is left out as well.
            (b"0123456789\r\n.\r\nNEXT", 11, true, b"0123456789"),
            (b"0123456789\r\n.\r\nNEXT", 5, true, b"01234"),
            (
                b"0123456789\r\nabc\r\n.\r\nNEXT",
                12,
                true,
                b"0123456789\r\n",
            ),
            (
                b"0123456789\r\nabc\r\n.\r\nNEXT",
                13,
                true,
                b"0123456789\r\na",
            ),
            (b"01234\r\n.x\r\n.\r\nNEXT", 0, true, b""),
            (b".\r\nNEXT", 0, false, b""),
            (b"a\nb\r\n.\r\nNEXT", 2, true, b"a"),
            (b"a\nb\r\n.\r\nNEXT", 3, true, b"a\r\n"),
            (b"a\rb\r\n.\r\nNEXT", 2, true, b"a"),
        ];
        for &(input, max, exceeded, body) in cases {
            let got = decode_all_ways(input, max);
            assert_eq!(got.exceeded, exceeded, "{input:?}");
            assert_eq!(got.consumed, Some(input.len() - 4), "{input:?}");
            assert_eq!(got.body, body, "{input:?}");
            assert!(got.body.len() <= max, "{input:?}");

            let full = decode_all_ways(input, usize::MAX);
            assert!(full.body.starts_with(&got.body), "{input:?}");
        }
    }

    /// A deliberately simple, whole-input model of the contract, written from the rules in the
    /// module doc rather than from the state machine: returns the body, the end position and
    /// the number of bare endings.
    fn reference(input: &[u8]) -> (Vec<u8>, usize, u64) {
        let after_crlf = |p: usize| p == 0 || (p >= 2 && &input[p - 2..p] == b"\r\n");
        let end = (0..input.len())
            .find(|&p| after_crlf(p) && input[p..].starts_with(END_TAIL))
            .expect("inputs given to the model contain an end");
        let raw = &input[..end];
        let unstuffed: Vec<u8> = (0..raw.len())
            .filter(|&i| !(raw[i] == b'.' && after_crlf(i)))
            .map(|i| raw[i])
            .collect();
        let mut body = Vec::new();
        let mut bare = 0;
        for (i, &b) in unstuffed.iter().enumerate() {
            match b {
                b'\r' if unstuffed.get(i + 1) == Some(&b'\n') => body.push(b'\r'),
                b'\n' if i > 0 && unstuffed[i - 1] == b'\r' => body.push(b'\n'),
                b'\r' | b'\n' => {
                    bare += 1;
                    body.extend_from_slice(b"\r\n");
                }
                _ => body.push(b),
            }
        }
        (body, end + END_TAIL.len(), bare)
    }

    #[test]
    fn random_inputs_match_the_reference_model() {
        let mut rng = crate::dotstuff::tests::Rng(0x0123_4567_89ab_cdef);
        for _ in 0..1000 {
            let len = (rng.next() % 40) as usize;
            let mut input: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            // Ensure an end exists; the model finds the first one, which may come earlier.
            input.extend_from_slice(b"\r\n.\r\nNEXT\r\n");
            let (body, consumed, bare) = reference(&input);
            let got = decode_all_ways(&input, usize::MAX);
            assert_eq!(got.body, body, "{input:?}");
            assert_eq!(got.consumed, Some(consumed), "{input:?}");
            assert_eq!(got.bare, bare, "{input:?}");
        }
    }

    #[test]
    fn done_consumes_nothing_more() {
        let mut d = DataDecoder::new(100);
        let mut out = Vec::new();
        assert_eq!(
            d.feed(b"a\r\n.\r\nB", &mut out),
            DataStatus::Done { consumed: 6 }
        );
        assert_eq!(
            d.feed(b"more\r\n.\r\n", &mut out),
            DataStatus::Done { consumed: 0 }
        );
        assert_eq!(out, b"a\r\n");
        assert_eq!(d.raw_len(), 6);
        assert_eq!(d.body_len(), 3);
    }

    #[test]
    fn output_is_appended_after_existing_bytes() {
        let mut d = DataDecoder::new(3);
        let mut out = b"Received: x\r\n".to_vec();
        assert_eq!(
            d.feed(b"a\r\n.\r\n", &mut out),
            DataStatus::Done { consumed: 6 }
        );
        assert_eq!(out, b"Received: x\r\na\r\n");
        assert!(!d.size_exceeded());
    }

    #[test]
    fn one_mebibyte_body() {
        let mut raw = Vec::new();
        let mut expected = Vec::new();
        let mut n = 0u32;
        while expected.len() < 1 << 20 {
            // Every seventh line starts with a dot, so the stuffing path is exercised too.
            let line = format!(
                "{}line {n} of a long message body with some text\r\n",
                if n.is_multiple_of(7) { "." } else { "" }
            );
            if line.starts_with('.') {
                raw.push(b'.');
            }
            raw.extend_from_slice(line.as_bytes());
            expected.extend_from_slice(line.as_bytes());
            n += 1;
        }
        raw.extend_from_slice(b".\r\nQUIT\r\n");

        for chunk in [raw.len(), 65536, 1400, 7] {
            let mut d = DataDecoder::new(2 << 20);
            let mut out = Vec::with_capacity(raw.len());
            let mut offset = 0;
            let mut consumed = None;
            for piece in raw.chunks(chunk) {
                match d.feed(piece, &mut out) {
                    DataStatus::NeedMore => offset += piece.len(),
                    DataStatus::Done { consumed: c } => {
                        consumed = Some(offset + c);
                        break;
                    }
                }
            }
            assert_eq!(consumed, Some(raw.len() - 6), "chunk {chunk}");
            assert!(out == expected, "chunk {chunk}");
            assert_eq!(d.bare_line_endings(), 0);
        }
    }
}
