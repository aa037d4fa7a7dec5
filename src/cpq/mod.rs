//! Centralized Policy, Virus and Outbreak Quarantines (CPQ): the gateway <->
//! manager link (`docs/cpq.md`).
//!
//! - [`trust`]: the deployment CA, node certificates and the mutual-TLS
//!   configurations every CPQ connection uses.
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

pub mod appliance;
pub mod enroll;
pub mod gateway;
pub mod gateways;
pub mod manager;
pub mod migrate;
pub mod preflight;
pub mod records;
pub mod trust;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{Config, Role};

/// The mutual-TLS configurations of this node's CPQ link.
pub struct CpqTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

/// Loads this node's CPQ certificates. A manager creates its deployment CA
/// and its own certificate on first start; a gateway must have been enrolled.
pub fn load_tls(cfg: &Config) -> Result<Option<CpqTls>> {
    let Some(c) = &cfg.cpq else {
        return Ok(None);
    };
    let dir = &c.dir;
    if cfg.role == Role::Manager {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if trust::ensure_ca(dir, &c.node_id)? {
            tracing::info!("created the deployment CA in {}", dir.display());
        }
        if !dir.join(trust::NODE_CERT).exists() {
            let mut names = vec![c.node_id.clone(), cfg.hostname.clone()];
            names.push(cfg.interfaces[c.interface].address.to_string());
            trust::issue(dir, &c.node_id, &names, dir)?;
        }
    } else if !dir.join(trust::NODE_CERT).exists() || !dir.join(trust::CA_CERT).exists() {
        // Not enrolled yet: the gateway runs (locally) and says so; the manager
        // installs the certificate when it adds the gateway (`applianceconfig`).
        tracing::warn!(
            "this gateway has no CPQ certificate in {} yet: add it on the manager (`applianceconfig new` or `pvo manager enroll`)",
            dir.display()
        );
        return Ok(None);
    }
    Ok(Some(CpqTls {
        server: trust::server_config(dir)?,
        client: trust::client_config(dir)?,
    }))
}

/// CPQ state of a running node.
#[derive(Default)]
pub struct State {
    /// Gateway: release ids already received (repeat-safe releases).
    pub ledger: std::sync::OnceLock<gateway::ReleaseLedger>,
    /// Manager: the group-committing writer of the central store.
    pub inbox: std::sync::OnceLock<manager::Inbox>,
    /// Gateway: the migration of its local quarantines to the manager.
    pub migration: migrate::State,
    /// Manager: where gateways said (over SSH) released mail goes.
    pub endpoints: appliance::Endpoints,
    /// Both: the CPQ counters; manager: what it knows of each gateway.
    pub stats: gateways::Stats,
}

/// The role of a user of this node, by name (`None`: no such user).
pub fn role_of(shared: &crate::node::Shared, user: &str) -> Option<String> {
    shared.users.user(user).map(|u| u.role)
}
