//! The anti-virus engine as the scanning pipeline sees it: a [`VirusScanner`] that
//! answers clean, infected (with the signature name) or unscannable for a message, or
//! fails (the message then stays queued and is scanned again, never passed unscanned).
//! `clamd` implements it, `node` wires it into the compiled `Scanner`; the address of
//! the daemon ([`ClamdAddr`]) is a configuration fact, parsed by `config` so validating a
//! configuration needs no client.

use std::future::Future;
use std::pin::Pin;

/// What [`VirusScanner::scan`] returns: the verdict, or why there is none.
pub type ScanFuture<'a> = Pin<
    Box<
        dyn Future<Output = Result<VirusVerdict, Box<dyn std::error::Error + Send + Sync>>>
            + Send
            + 'a,
    >,
>;

/// An anti-virus engine.
pub trait VirusScanner: Send + Sync {
    /// Scans one message (its raw bytes).
    fn scan<'a>(&'a self, data: &'a [u8]) -> ScanFuture<'a>;
}

// The address is part of the configuration (`[antivirus] clamd`), validated there.
pub use crate::core::config::ClamdAddr;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VirusVerdict {
    Clean,
    Infected(String),
    Unscannable(Unscannable),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unscannable {
    Encrypted(String),
    LimitsExceeded(String),
    EngineError(String),
}
