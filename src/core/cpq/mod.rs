//! Centralized Policy, Virus and Outbreak Quarantines (CPQ): the gateway <->
//! manager link (`docs/cpq.md`).
//!
//! - [`trust`]: the deployment CA, node certificates and the mutual-TLS
//!   configurations every CPQ connection uses; [`certs`] loads a node's into its
//!   [`CpqTls`].
//! - [`records`]: spool tags <-> wire records <-> the quarantine model.
//! - [`gateway`]: central mode on a gateway — quarantined messages queued to
//!   `the.cpq.host`, released messages received on its `cpq_listener`.
//! - [`manager`]: the manager's side — transfers stored (group-committed) in
//!   the central store, control commands, releases queued to
//!   `the.cpq.release.host`.
//! - [`migrate`]: a gateway that becomes central hands the messages held in
//!   its local quarantines to the manager, in the background.
//! - [`gateways`]: the manager's live view of its gateways (`applianceconfig
//!   status`: its own counters and their answers over SSH) and the CPQ counters
//!   of `/metrics`.
//!
//! The SMTP parts stay where all SMTP lives: the `cpq_listener` is a listener
//! of `smtp_server` (which recognises the XPVO verbs before `smtp-proto` sees
//! a line) and both queues are delivered by `delivery`.

pub mod checks;
pub mod endpoints;
pub mod enrollment;
pub mod gateway;
pub mod gateways;
pub mod handles;
pub mod inbox;
pub mod ledger;
pub mod manager;
pub mod migrate;
pub mod migration;
pub mod pki;
pub mod records;
pub mod refusal;
pub mod shell;
pub mod stats;
pub mod transfer;

use std::sync::Arc;

/// The mutual-TLS configurations of this node's CPQ link.
pub struct CpqTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// Whom both accept; sessions already open check their peer against it again
    /// before each CPQ command, so a revocation also ends a kept-open connection.
    pub policy: Arc<dyn PeerCheck>,
}

/// Whom a node's CPQ link accepts (`trust::PeerPolicy`, through `certs`): a certificate
/// (DER) that already chains to the deployment CA is accepted, or refused with the
/// reason.
pub trait PeerCheck: Send + Sync {
    fn check(&self, der: &[u8]) -> Result<(), refusal::Refusal>;
}

/// CPQ state of a running node.
#[derive(Default)]
pub struct State {
    /// Gateway: release ids already received (repeat-safe releases).
    pub ledger: std::sync::OnceLock<crate::core::cpq::ledger::ReleaseLedger>,
    /// Manager: the prefix of its release ids, once the store has said it: the id every
    /// manager of a shared store (PostgreSQL) has in common, else the manager's node id.
    pub release_prefix: std::sync::OnceLock<String>,
    /// Manager: the group-committing writer of the central store.
    pub inbox: std::sync::OnceLock<crate::core::cpq::inbox::Inbox>,
    /// Gateway: the migration of its local quarantines to the manager.
    pub migration: crate::core::cpq::migration::State,
    /// Manager: where gateways said (over SSH) released mail goes.
    pub endpoints: crate::core::cpq::endpoints::Endpoints,
    /// Both: the CPQ counters; manager: what it knows of each gateway.
    pub stats: crate::core::cpq::stats::Stats,
}
