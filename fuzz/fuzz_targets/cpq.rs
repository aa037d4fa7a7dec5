//! CPQ command lines and records (`pvo_proto::cpq`): any bytes as a line on a cpq_listener,
//! and any bytes as the record inside `XPVO-META 1` / `XPVO-CONTROL 1` (base64-wrapped here
//! so the fuzzer reaches the record decoders). `check_command_line` asserts the properties:
//! no panic, a parsed command re-encodes to itself, error replies stay one clean line.
//!
//! Not reachable from here: `src/core/cpq/records.rs` (spool tags <-> records <-> the quarantine
//! model) lives in the `pvo` binary, which has no library target.
#![no_main]

fn base64(input: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, input)
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
