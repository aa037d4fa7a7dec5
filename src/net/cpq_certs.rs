//! A node's CPQ certificates loaded into its mutual-TLS configurations ([`CpqTls`]),
//! rebuilt at start, at every commit and at a revocation; and the manager's own
//! certificate made on its first start. The TLS side of CPQ (with `trust`): the core
//! holds the result and checks peers through [`PeerCheck`].

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::core::config::{Config, Role};
use crate::core::cpq::pki;
use crate::core::cpq::refusal::Refusal;
use crate::core::cpq::{CpqTls, PeerCheck};
use crate::net::trust;

impl PeerCheck for trust::PeerPolicy {
    fn check(&self, der: &[u8]) -> std::result::Result<(), Refusal> {
        trust::PeerPolicy::check(self, der).map(|_| ())
    }
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
    } else if !dir.join(pki::NODE_CERT).exists() || !dir.join(pki::CA_CERT).exists() {
        // Not enrolled yet: the gateway runs (locally) and says so; the manager
        // installs the certificate when it adds the gateway (`applianceconfig`).
        tracing::warn!(
            "this gateway has no CPQ certificate in {} yet: add it on the manager (`applianceconfig new` or `pvo manager enroll`)",
            dir.display()
        );
        return Ok(None);
    } else {
        let pin = dir.join(pki::MANAGER_CERT);
        let pinned = if pin.exists() {
            Some(
                pki::identify_all_file(&pin)?
                    .into_iter()
                    .map(|(_, der)| der)
                    .collect(),
            )
        } else {
            // Enrolled by an older version: any certificate issued for the manager
            // role (`diagnose` says to add the gateway again to pin it).
            None
        };
        trust::Accept::Manager { pinned }
    };
    let policy: Arc<trust::PeerPolicy> = Arc::new(trust::PeerPolicy {
        accept,
        revoked: pki::load_revoked(dir)?
            .into_iter()
            .map(|r| r.serial)
            .collect(),
    });
    Ok(Some(CpqTls {
        server: trust::server_config(dir, policy.clone())?,
        client: trust::client_config(dir, policy.clone())?,
        policy: policy as Arc<dyn PeerCheck>,
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
    if pki::ensure_ca(dir, &c.node_id)? {
        tracing::info!("created the deployment CA in {}", dir.display());
    }
    let cert = dir.join(pki::NODE_CERT);
    if cert.exists() {
        if pki::identify_file(&cert)?.0.role == Some(pki::CertRole::Manager) {
            return Ok(false);
        }
        tracing::warn!(
            "{} was issued by an older version (no manager role): issuing a new one",
            cert.display()
        );
    }
    let mut names = vec![c.node_id.clone(), cfg.hostname.clone()];
    names.push(cfg.interfaces[c.interface].address.to_string());
    pki::issue(dir, &c.node_id, pki::CertRole::Manager, &names, dir)?;
    Ok(true)
}

/// Builds (and drops) the server and client configurations of a gateway whose CPQ
/// material is in `dir` and that takes only the managers `pinned`: an error names what
/// rustls cannot use.
pub fn check_gateway_material(dir: &std::path::Path, pinned: Option<Vec<Vec<u8>>>) -> Result<()> {
    let policy = Arc::new(trust::PeerPolicy {
        accept: trust::Accept::Manager { pinned },
        revoked: Default::default(),
    });
    trust::server_config(dir, policy.clone())?;
    trust::client_config(dir, policy)?;
    Ok(())
}
