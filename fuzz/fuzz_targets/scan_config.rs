//! The scanning parts of the configuration as the node parses them (TOML into the
//! `pvo_scan` types, then compiled): content filters (`[[filter]]`), DLP policies
//! (`[[dlp]]`) and the MIME limits (`[scan.limits]`-style table), evaluated on a fixed
//! message when they compile.
//!
//! Not reachable from here: the rest of the configuration parser (`src/config.rs`: raw TOML
//! to the validated `Config` with file, line and key in its errors) lives in the `pvo`
//! binary, which has no library target.
#![no_main]

use pvo_scan::dlp::{DlpEngine, DlpPolicy};
use pvo_scan::filter::{Envelope, FilterRule, FilterSet};
use pvo_scan::mime::{scan, Limits};

#[derive(serde::Deserialize)]
struct File {
    #[serde(default)]
    filter: Vec<FilterRule>,
    #[serde(default)]
    dlp: Vec<DlpPolicy>,
    #[serde(default)]
    limits: Option<Limits>,
}

const MESSAGE: &[u8] = b"From: a@example.org\r\nSubject: [quarantine-test] card\r\n\
Content-Type: text/plain\r\n\r\n4111 1111 1111 1111 GB82WEST12345698765432 078-05-1120\r\n";

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(file) = toml::from_str::<File>(text) else {
        return;
    };
    let limits = file.limits.unwrap_or_default();
    let Ok(msg) = scan(MESSAGE, &limits) else {
        return;
    };
    if let Ok(set) = FilterSet::new(file.filter) {
        let recipients = vec!["bob@example.com".to_string()];
        let env = Envelope {
            sender: "a@example.org",
            recipients: &recipients,
        };
        let _ = set.evaluate(&env, &msg);
    }
    for policy in file.dlp {
        if let Ok(engine) = DlpEngine::new(policy) {
            let _ = engine.scan(&msg);
        }
    }
});
