//! The bounded MIME view (`pvo_scan::mime::scan`) on any message, with the default limits
//! and with small ones: never panics, and within small limits it is either a view within
//! them or `Unscannable`, never a partial one.
#![no_main]

use pvo_scan::mime::{scan, Limits};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    if let Ok(msg) = scan(input, &Limits::default()) {
        let _ = msg.attachments().count();
        let _ = msg.texts().map(str::len).sum::<usize>();
        let _ = msg.archive_problem();
        let _ = msg.header_values("subject").count();
    }
    let small = Limits {
        max_message_bytes: 1 << 16,
        max_depth: 3,
        max_parts: 8,
        max_decoded_bytes: 1 << 14,
        max_header_lines: 20,
        max_header_bytes: 2048,
        max_archive_entries: 10,
        max_archive_member_bytes: 1 << 12,
    };
    if let Ok(msg) = scan(input, &small) {
        let decoded: usize = msg.texts().map(str::len).sum();
        assert!(decoded <= small.max_decoded_bytes * 4, "{decoded} decoded text bytes");
    }
});
