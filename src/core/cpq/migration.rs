//! The migration's state in a running node (`cpq::State::migration`): whether a
//! migration task runs and its progress, for `pvoconfig status`. The migration itself
//! (batches, copies, waiting for the manager) is `cpq::migrate`'s.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The state of the migration, for `pvoconfig status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// A migration task runs now (handing over, or waiting for the manager to take the
    /// last copies).
    pub running: bool,
    /// Messages to migrate: those held when it started plus, after a restart, those
    /// migrated before it.
    pub total: u64,
    /// Messages handed over so far (spooled for the manager and marked migrated).
    pub migrated: u64,
    pub started_at: Option<u64>,
    pub finished_at: Option<u64>,
    /// The last problem (cleared when things move again): a store or spool error, or why
    /// the manager does not take the copies.
    pub last_error: Option<String>,
}

/// The migration state of a node (`cpq::State::migration`).
#[derive(Default)]
pub struct State {
    pub(crate) running: AtomicBool,
    pub(crate) progress: Mutex<Option<Progress>>,
}
