//! The DATA decoder (`pvo_proto::data`) on any bytes after `354`, fed in two pieces split
//! where the first input byte says: the body never holds a bare CR or LF, the split never
//! changes the result, and what is consumed never exceeds the input.
#![no_main]

use pvo_proto::data::{DataDecoder, DataStatus};

/// Feeds `pieces` in order; the body, the bytes left over after the end, and whether the
/// end was seen.
fn decode(pieces: &[&[u8]], max: usize) -> (Vec<u8>, Vec<u8>, bool) {
    let mut d = DataDecoder::new(max);
    let mut body = Vec::new();
    let mut rest = Vec::new();
    let mut done = false;
    for piece in pieces {
        if done {
            rest.extend_from_slice(piece);
            continue;
        }
        match d.feed(piece, &mut body) {
            DataStatus::NeedMore => {}
            DataStatus::Done { consumed } => {
                assert!(consumed <= piece.len());
                rest.extend_from_slice(&piece[consumed..]);
                done = true;
            }
        }
    }
    assert_eq!(done, d.is_done());
    (body, rest, done)
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&split, data)) = input.split_first() else {
        return;
    };
    let max = 1 << 20;
    let whole = decode(&[data], max);
    let at = usize::from(split).min(data.len());
    let (a, b) = data.split_at(at);
    assert_eq!(decode(&[a, b], max), whole, "split at {at}");
    let body = &whole.0;
    for (i, &c) in body.iter().enumerate() {
        if c == b'\r' {
            assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
        if c == b'\n' {
            assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i}");
        }
    }
    if whole.2 {
        assert!(body.is_empty() || body.ends_with(b"\r\n"));
    }
    // A small size limit: never more than that appended.
    let small = decode(&[data], 64);
    assert!(small.0.len() <= 64 + 2, "{} bytes past a 64-byte limit", small.0.len());
    assert_eq!(small.2, whole.2);
    assert_eq!(small.1, whole.1);
});
