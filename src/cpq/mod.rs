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
pub mod endpoints;
pub mod enroll;
pub mod gateway;
pub mod gateways;
pub mod inbox;
pub mod ledger;
pub mod manager;
pub mod migrate;
pub mod migration;
pub mod preflight;
pub mod records;
pub mod refusal;
pub mod stats;
pub mod trust;

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::config::{Config, Role};

/// The mutual-TLS configurations of this node's CPQ link.
pub struct CpqTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
    /// Whom both accept; sessions already open check their peer against it again
    /// before each CPQ command, so a revocation also ends a kept-open connection.
    pub policy: Arc<trust::PeerPolicy>,
}

/// Loads this node's CPQ certificates and the policy of whom it accepts
/// (`trust::PeerPolicy`: a gateway its pinned manager, a manager the gateways
/// of this configuration with their enrolled serials; neither a revoked
/// serial). A manager creates its deployment CA and its own certificate on
/// first start; a gateway must have been enrolled. Rebuilt at every commit and
/// revocation, so a change takes effect on the next handshake.
pub fn load_tls(cfg: &Config) -> Result<Option<CpqTls>> {
    let Some(c) = &cfg.cpq else {
        return Ok(None);
    };
    let dir = &c.dir;
    let accept = if cfg.role == Role::Manager {
        ensure_manager_cert(cfg)?;
        trust::Accept::Gateways(
            c.gateways
                .iter()
                .map(|g| (g.id.clone(), g.serial.clone()))
                .collect(),
        )
    } else if !dir.join(trust::NODE_CERT).exists() || !dir.join(trust::CA_CERT).exists() {
        // Not enrolled yet: the gateway runs (locally) and says so; the manager
        // installs the certificate when it adds the gateway (`applianceconfig`).
        tracing::warn!(
            "this gateway has no CPQ certificate in {} yet: add it on the manager (`applianceconfig new` or `pvo manager enroll`)",
            dir.display()
        );
        return Ok(None);
    } else {
        let pin = dir.join(trust::MANAGER_CERT);
        let pinned = if pin.exists() {
            Some(trust::identify_file(&pin)?.1)
        } else {
            // Enrolled by an older version: any certificate issued for the manager
            // role (`diagnose` says to add the gateway again to pin it).
            None
        };
        trust::Accept::Manager { pinned }
    };
    let policy = Arc::new(trust::PeerPolicy {
        accept,
        revoked: trust::load_revoked(dir)?
            .into_iter()
            .map(|r| r.serial)
            .collect(),
    });
    Ok(Some(CpqTls {
        server: trust::server_config(dir, policy.clone())?,
        client: trust::client_config(dir, policy.clone())?,
        policy,
    }))
}

/// A manager's own certificate in its cpq directory, issued for the manager
/// role (with the deployment CA, created if missing). A certificate made by an
/// older version carries no role: it is replaced, since gateways accept only a
/// manager's. Returns true when one was issued.
pub fn ensure_manager_cert(cfg: &Config) -> Result<bool> {
    let Some(c) = cfg.cpq.as_ref().filter(|_| cfg.role == Role::Manager) else {
        anyhow::bail!("only a manager has a manager's CPQ certificate");
    };
    let dir = &c.dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if trust::ensure_ca(dir, &c.node_id)? {
        tracing::info!("created the deployment CA in {}", dir.display());
    }
    let cert = dir.join(trust::NODE_CERT);
    if cert.exists() {
        if trust::identify_file(&cert)?.0.role == Some(trust::CertRole::Manager) {
            return Ok(false);
        }
        tracing::warn!(
            "{} was issued by an older version (no manager role): issuing a new one",
            cert.display()
        );
    }
    let mut names = vec![c.node_id.clone(), cfg.hostname.clone()];
    names.push(cfg.interfaces[c.interface].address.to_string());
    trust::issue(dir, &c.node_id, trust::CertRole::Manager, &names, dir)?;
    Ok(true)
}

/// CPQ state of a running node.
#[derive(Default)]
pub struct State {
    /// Gateway: release ids already received (repeat-safe releases).
    pub ledger: std::sync::OnceLock<crate::cpq::ledger::ReleaseLedger>,
    /// Manager: the group-committing writer of the central store.
    pub inbox: std::sync::OnceLock<crate::cpq::inbox::Inbox>,
    /// Gateway: the migration of its local quarantines to the manager.
    pub migration: crate::cpq::migration::State,
    /// Manager: where gateways said (over SSH) released mail goes.
    pub endpoints: crate::cpq::endpoints::Endpoints,
    /// Both: the CPQ counters; manager: what it knows of each gateway.
    pub stats: crate::cpq::stats::Stats,
}

/// The role of a user of this node, by name (`None`: no such user).
pub fn role_of(shared: &crate::state::Shared, user: &str) -> Option<String> {
    shared.users.user(user).map(|u| u.role)
}
