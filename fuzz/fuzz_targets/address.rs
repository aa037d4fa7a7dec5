//! Envelope address parsing and classification (`pvo_proto::address`): any text as a
//! mailbox, and as a RAT/route pattern against it. Never panics; a parsed mailbox prints as
//! something that parses to the same mailbox.
#![no_main]

use pvo_proto::address::{domain_matches, parse_mailbox, recipient_matches};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    // "address\npattern": the second line is a pattern to match against the first.
    let (addr, pattern) = text.split_once('\n').unwrap_or((text, "example.com"));
    if let Ok(m) = parse_mailbox(addr) {
        let _ = m.has_routing();
        let _ = m.domain_literal();
        let shown = m.to_string();
        if let Ok(again) = parse_mailbox(&shown) {
            assert_eq!(again.to_string(), shown, "{addr:?}");
        }
        let _ = recipient_matches(pattern, &m);
    }
    let _ = domain_matches(pattern, addr);
});
