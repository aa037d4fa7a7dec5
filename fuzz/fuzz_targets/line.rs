//! Command-line framing (`pvo_proto::line::Framer`) over any bytes in any reads: the lines
//! taken do not depend on where the reads split, every step makes progress, no line is
//! longer than the limit, and the tail of an over-long line is never a line.
#![no_main]

use pvo_proto::line::{Frame, Framer};

/// The lines taken and the "too long" replies when `chunks` arrive one read each.
fn frame(max: usize, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, usize) {
    let mut f = Framer::new(max);
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    let mut too_long = 0;
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match f.next(&buf) {
                Frame::Line { len } => {
                    assert!(len > 0 && len <= max && len <= buf.len());
                    assert_eq!(buf[len - 1], b'\n');
                    lines.push(buf.drain(..len).collect());
                }
                Frame::TooLong { len } => {
                    assert!(len <= buf.len());
                    too_long += 1;
                    buf.drain(..len);
                }
                Frame::Discard { len } => {
                    assert!(len > 0 && len <= buf.len());
                    buf.drain(..len);
                }
                Frame::Incomplete => break,
            }
        }
        assert!(buf.len() < max || f.is_discarding() || buf.is_empty());
    }
    (lines, too_long)
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let max = 1 + usize::from(input[0] % 64);
    let cuts = [usize::from(input[1]), usize::from(input[2])];
    let data = &input[3..];
    let whole = frame(max, &[data]);
    let a = cuts[0].min(data.len());
    let b = (a + cuts[1]).min(data.len());
    assert_eq!(frame(max, &[&data[..a], &data[a..b], &data[b..]]), whole);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(frame(max, &bytes), whole);
});
