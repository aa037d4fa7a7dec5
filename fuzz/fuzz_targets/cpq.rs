//! CPQ command lines and records (`pvo_proto::cpq`): any bytes as a line on a cpq_listener,
//! and any bytes as the record inside `XPVO-META 1` / `XPVO-CONTROL 1` (base64-wrapped here
//! so the fuzzer reaches the record decoders). `check_command_line` asserts the properties:
//! no panic, a parsed command re-encodes to itself, error replies stay one clean line.
//!
//! Not reachable from here: `src/cpq/records.rs` (spool tags <-> records <-> the quarantine
//! model) lives in the `pvo` binary, which has no library target.
#![no_main]

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64(input: &[u8]) -> String {
    let mut out = String::new();
    for c in input.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    pvo_proto::cpq::check_command_line(input);
    let Some((&which, record)) = input.split_first() else {
        return;
    };
    let verb = if which & 1 == 0 {
        "XPVO-META"
    } else {
        "XPVO-CONTROL"
    };
    let line = format!("{verb} 1 {}\r\n", base64(record));
    pvo_proto::cpq::check_command_line(line.as_bytes());
    if let Ok(text) = std::str::from_utf8(record) {
        let _ = pvo_proto::cpq::parse_ehlo_keyword(text);
        let _ = pvo_proto::cpq::is_identifier(text);
    }
});
