//! The SMTP client's reply reader (`pvo_proto::reply`) on any bytes from a server, in any
//! reads: the replies do not depend on where the reads split, input is used only up to a
//! reply's end, and lines stay within `MAX_LINE` and `MAX_LINES`.
#![no_main]

use pvo_proto::reply::{ReplyReader, MAX_LINE, MAX_LINES};

/// Every reply (or the first error) when `chunks` arrive one read each, as the client
/// reads them: a fresh reader per reply, leftover bytes kept for the next.
fn read(chunks: &[&[u8]]) -> Vec<Result<(u16, Vec<String>), String>> {
    let mut r = ReplyReader::new();
    let mut out = Vec::new();
    for chunk in chunks {
        let mut input: &[u8] = chunk;
        while !input.is_empty() {
            let (used, res) = r.feed(input);
            assert!(used <= input.len());
            input = &input[used..];
            match res {
                Ok(Some(reply)) => {
                    assert!(used > 0);
                    assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_LINES);
                    for l in &reply.lines {
                        // Lossy UTF-8 may grow a byte to three.
                        assert!(l.len() <= 3 * MAX_LINE, "{} bytes", l.len());
                    }
                    let _ = reply.text();
                    out.push(Ok((reply.code, reply.lines)));
                }
                Ok(None) => assert!(input.is_empty()),
                Err(e) => {
                    out.push(Err(e.to_string()));
                    return out;
                }
            }
        }
    }
    out
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Some((&cut, data)) = input.split_first() else {
        return;
    };
    let whole = read(&[data]);
    let at = (usize::from(cut) * 37).min(data.len());
    let (a, b) = data.split_at(at);
    assert_eq!(read(&[a, b]), whole, "split at {at}");
});
