//! Join tokens and cluster layer documents (`pvo_cluster`): a token is text anyone who
//! reaches a member's SSH port can send; a layer document is what a member reads from the
//! cluster's store. Never panics; a token that parses prints as text that parses to the
//! same token; a document's sections survive copying and flattening.
#![no_main]

use pvo_cluster::{copy_section, flatten, JoinToken, LayerDoc, Level, Schema};

const SCHEMA: Schema = Schema {
    cluster_only: &["ssh"],
    machine_only: &["node", "interface"],
};

libfuzzer_sys::fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(t) = text.parse::<JoinToken>() {
        let shown = t.to_string();
        assert_eq!(shown.parse::<JoinToken>().as_ref(), Ok(&t), "{text:?}");
    }
    let machine: Level = "machine:gw1".parse().unwrap();
    let Ok(own) = LayerDoc::parse(machine, text) else {
        return;
    };
    let mut cluster = LayerDoc::empty(Level::Cluster);
    for s in own.sections() {
        let copied = copy_section(&SCHEMA, &own, &mut cluster, &s);
        if copied.is_ok() {
            // Compared as text: a float may be NaN, which equals nothing, not even itself.
            let shown = |v: Option<toml::Value>| v.map(|v| v.to_string());
            assert_eq!(
                shown(cluster.value(&s)),
                shown(own.value(&s)),
                "{s} of {text:?}"
            );
        }
    }
    let flat = flatten(&[&own, &cluster]);
    assert_eq!(flat.sections().len(), own.sections().len());
    let _ = LayerDoc::parse(Level::Cluster, &flat.text());
});
