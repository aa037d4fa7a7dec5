//! The outbreak rules parser (`pvo_scan::outbreak`: the TOML rules file as the node reads
//! it, then `OutbreakRules::compile`) and the evaluation of the compiled rules. Input:
//! the rules file, a NUL, then a message to evaluate them on.
#![no_main]

use pvo_scan::mime::{scan, Limits};
use pvo_scan::outbreak::{OutbreakRules, OutbreakRulesFile, RetentionTime};

const MESSAGE: &[u8] = b"Subject: invoice\r\nContent-Type: text/plain\r\n\r\nsee https://evil.example/x\r\n";

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let (rules, message) = match input.iter().position(|&b| b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, MESSAGE),
    };
    let Ok(text) = std::str::from_utf8(rules) else {
        return;
    };
    let _ = RetentionTime::parse(text.lines().next().unwrap_or(""));
    let Ok(file) = toml::from_str::<OutbreakRulesFile>(text) else {
        return;
    };
    let Ok(rules) = OutbreakRules::compile(file) else {
        return;
    };
    let _ = rules.version();
    let _ = rules.rules().count();
    if let Ok(msg) = scan(message, &Limits::default()) {
        let result = rules.evaluate(&msg);
        let _ = format!("{result:?}");
    }
});
