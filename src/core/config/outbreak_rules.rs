//! The outbreak rules file `[outbreak] rules_file` names (and `pvo outbreakupdate`
//! loads): read, parsed and compiled by one parser, whose errors name the line and
//! column but never repeat the bytes of a file that is not a rules file.

use std::path::Path;

use pvo_scan::outbreak::{OutbreakRules, OutbreakRulesFile};

/// A rules file read, parsed and compiled.
pub struct Loaded {
    pub bytes: Vec<u8>,
    pub file: OutbreakRulesFile,
    pub rules: OutbreakRules,
}

/// Reads and compiles a rules file, keeping its bytes.
pub fn read(path: &Path) -> Result<Loaded, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("outbreak rules file {}: {e}", path.display()))?;
    from_bytes(path, bytes)
}

/// Compiles the bytes read from `path` (which the errors name).
pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Loaded, String> {
    parse(bytes).map_err(|e| format!("outbreak rules file {}: {e}", path.display()))
}

/// The key names of a rules file: the only words of it an error may repeat.
const KEYS: &[&str] = &[
    "version",
    "rule",
    "id",
    "description",
    "threat_level",
    "attachment_type",
    "attachment_name",
    "sha256",
    "url_domain",
    "body_regex",
];

/// Errors name the line, column and what was expected, never the bytes of a file that
/// is not a rules file (`crate::core::import::toml_error`).
pub fn parse(bytes: Vec<u8>) -> Result<Loaded, String> {
    let text =
        std::str::from_utf8(&bytes).map_err(|e| crate::core::import::utf8_error(&bytes, &e))?;
    let file: OutbreakRulesFile =
        toml::from_str(text).map_err(|e| crate::core::import::toml_error(text, &e, KEYS))?;
    let rules = OutbreakRules::compile(file.clone()).map_err(|e| e.to_string())?;
    Ok(Loaded { bytes, file, rules })
}
