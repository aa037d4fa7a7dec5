//! Outbound encoding of a message body for transmission after the `354` reply to `DATA`.
//!
//! This is the inverse of [`crate::data::DataDecoder`]: for every body `x`, decoding
//! `encode_data(x)` gives `x` with its line endings normalised and a final CR LF ensured, and
//! ends exactly at the end of the encoded bytes.
//!
//! # Security
//!
//! A body is stored after [`crate::data::DataDecoder`] has normalised it, but PVO also forwards
//! bodies it did not receive over SMTP (released quarantine messages, notifications), and the
//! receiving server may read line endings differently from PVO. So the encoder does not trust
//! its input: every bare CR or LF becomes CR LF, every NUL is dropped (SMTP allows none, and a
//! receiver that drops them itself would read `\r\n\0.\r\n` as the end of data), and no
//! byte sequence in the body can end the transmission early or smuggle a second transaction
//! to the next hop.

/// Encodes a stored message body for transmission after `DATA`'s `354` and appends it to
/// `out`.
///
/// NUL bytes are dropped first (the server refuses messages with NUL, so only a body that did
/// not come over SMTP can have one). Every line ends in CR LF (any bare CR or LF is turned
/// into CR LF, defensively: PVO never forwards a bare CR or LF), lines starting with `.` (once
/// NULs are gone) get an extra `.` (RFC 5321 section
/// 4.5.2), a final CR LF is added if a non-empty body does not end with one, and then `.\r\n`
/// is appended. An empty body encodes as just `.\r\n`.
pub fn encode_data(body: &[u8], out: &mut Vec<u8>) {
    // Stuffing adds at most one byte per line; this reserve covers typical bodies in one
    // allocation without trying to be exact.
    out.reserve(body.len() + body.len() / 32 + 5);
    let without_nul: Vec<u8>;
    let mut rest = if body.contains(&0) {
        without_nul = body.iter().copied().filter(|&b| b != 0).collect();
        &without_nul[..]
    } else {
        body
    };
    // Each iteration encodes one line, so the loop always starts at the beginning of a line.
    while !rest.is_empty() {
        if rest[0] == b'.' {
            out.push(b'.');
        }
        match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
            Some(n) => {
                out.extend_from_slice(&rest[..n]);
                out.extend_from_slice(b"\r\n");
                let ending = if rest[n] == b'\r' && rest.get(n + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[n + ending..];
            }
            None => {
                // The last line has no ending; it gets one so the end marker starts a line.
                out.extend_from_slice(rest);
                out.extend_from_slice(b"\r\n");
                rest = &[];
            }
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::{DataDecoder, DataStatus};

    /// The reference model for what a body looks like on the wire once decoded: bare CR and
    /// bare LF become CR LF, and a non-empty body ends with CR LF.
    fn normalise(x: &[u8]) -> Vec<u8> {
        let x: Vec<u8> = x.iter().copied().filter(|&b| b != 0).collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < x.len() {
            match x[i] {
                b'\r' if x.get(i + 1) == Some(&b'\n') => {
                    out.extend_from_slice(b"\r\n");
                    i += 2;
                }
                b'\r' | b'\n' => {
                    out.extend_from_slice(b"\r\n");
                    i += 1;
                }
                b => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        if !out.is_empty() && !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    /// A tiny deterministic PRNG (xorshift64*), so the random inputs are the same on every run.
    /// The `data` tests use it too.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A byte biased towards the characters that matter to the framing.
        pub(crate) fn byte(&mut self) -> u8 {
            const SPECIAL: &[u8] = b"\r\n.\0";
            let r = self.next();
            if r.is_multiple_of(2) {
                SPECIAL[(r >> 8) as usize % SPECIAL.len()]
            } else {
                (r >> 8) as u8
            }
        }
    }

    #[test]
    fn table() {
        let cases: &[(&[u8], &[u8])] = &[
            // (body, encoded)
            (b"", b".\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"a\r\n.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"..a\r\n", b"...a\r\n.\r\n"),
            (b"a.\r\n", b"a.\r\n.\r\n"),
            (b"a\nb", b"a\r\nb\r\n.\r\n"),
            (b"a\rb", b"a\r\nb\r\n.\r\n"),
            (b"a\r\rb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"a\n\rb", b"a\r\n\r\nb\r\n.\r\n"),
            (b"\n", b"\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
            (b"\r\n", b"\r\n.\r\n"),
            (b"a\n.\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\r.\rb", b"a\r\n..\r\nb\r\n.\r\n"),
            // NUL is dropped before stuffing: the dot it hid is stuffed.
            (b"\x00.\r\n", b"..\r\n.\r\n"),
            (b"a\r\n\x00.\r\nb", b"a\r\n..\r\nb\r\n.\r\n"),
            (b"a\x00b\x00", b"ab\r\n.\r\n"),
            (b"\x00", b".\r\n"),
        ];
        for &(body, encoded) in cases {
            let mut out = b"prefix".to_vec();
            encode_data(body, &mut out);
            assert_eq!(&out[6..], encoded, "{body:?}");
            assert_eq!(&out[..6], b"prefix");
        }
    }

    /// Decodes `wire` with one `DataDecoder`, in pieces of `chunk` bytes, and returns the body
    /// and the total consumed count when done.
    fn decode(wire: &[u8], chunk: usize) -> (Vec<u8>, Option<usize>) {
        let mut d = DataDecoder::new(usize::MAX);
        let mut body = Vec::new();
        let mut offset = 0;
        for piece in wire.chunks(chunk) {
            match d.feed(piece, &mut body) {
                DataStatus::NeedMore => offset += piece.len(),
                DataStatus::Done { consumed } => return (body, Some(offset + consumed)),
            }
        }
        (body, None)
    }

    fn assert_round_trip(x: &[u8]) {
        let mut wire = Vec::new();
        encode_data(x, &mut wire);
        let expected = normalise(x);
        for chunk in [wire.len().max(1), 1, 2, 3, 5] {
            let (body, consumed) = decode(&wire, chunk);
            assert_eq!(body, expected, "{x:?} in chunks of {chunk}");
            assert_eq!(consumed, Some(wire.len()), "{x:?} in chunks of {chunk}");
        }
    }

    #[test]
    fn round_trip_fixed_inputs() {
        let smuggling: &[&[u8]] = &[
            b"\n.\n",
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
            b"\r\n.\x00\r\n",
            b"\r\n.\r\r\n",
            b"\r\n.\r\n",
        ];
        for seq in smuggling {
            for prefix in [&b""[..], b"x", b"x\r\n", b"."] {
                let mut x = prefix.to_vec();
                x.extend_from_slice(seq);
                assert_round_trip(&x);
                x.extend_from_slice(b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\nsecond");
                assert_round_trip(&x);
            }
        }
        for x in [
            &b""[..],
            b".",
            b"..",
            b".\r\n.",
            b"\r\n",
            b"\r",
            b"\n",
            b"\r\r",
            b"\n\n",
        ] {
            assert_round_trip(x);
        }
    }

    #[test]
    fn round_trip_random_inputs() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = (rng.next() % 64) as usize;
            let x: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
            assert_round_trip(&x);
        }
    }
}
