//! `pvo manager enroll`: issues a gateway's CPQ certificate from the
//! manager's deployment CA and adds the gateway to the manager's enrolled
//! gateways — through the running manager (a pending change, effective at
//! `commit`), or in its configuration file when it is not running.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::config::{Config, Role};

pub fn run(
    config: &Path,
    _dir: &Path,
    gateway_id: &str,
    address: IpAddr,
    port: u16,
    out: &Path,
    json_out: bool,
) -> Result<()> {
    let cfg = Config::load(config).map_err(|e| anyhow::anyhow!("configuration error: {e}"))?;
    let Some(c) = cfg.cpq.as_ref().filter(|_| cfg.role == Role::Manager) else {
        anyhow::bail!(
            "{} is not a manager configuration (node.role = \"manager\" with a [cpq] section)",
            config.display()
        );
    };
    if !pvo_proto::cpq::is_identifier(gateway_id) {
        anyhow::bail!(
            "\"{gateway_id}\" is not a gateway id; allowed: 1-128 of A-Z a-z 0-9 . - _ :"
        );
    }
    std::fs::create_dir_all(&c.dir).with_context(|| format!("creating {}", c.dir.display()))?;
    super::trust::ensure_ca(&c.dir, &c.node_id)?;
    super::trust::issue(
        &c.dir,
        gateway_id,
        &[gateway_id.to_string(), address.to_string()],
        out,
    )?;
    println!(
        "Issued the CPQ certificate of gateway {gateway_id} into {} ({}, {}, {}).",
        out.display(),
        super::trust::NODE_CERT,
        super::trust::NODE_KEY,
        super::trust::CA_CERT
    );
    let args = json!({ "id": gateway_id, "address": address.to_string(), "port": port });
    let socket = cfg.run_dir().join("admin.sock");
    if socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        return crate::admin::client::run(&cfg.data_dir, "cpqenroll", args, json_out);
    }
    // The manager is not running: edit its file directly.
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let mut doc = crate::config_store::Doc::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    doc.cpq_gateway_set(gateway_id, &address.to_string(), port)
        .map_err(|e| anyhow::anyhow!(e))?;
    let new = doc.text();
    Config::parse(&new, config, config.parent().unwrap_or(Path::new(".")))
        .map_err(|e| anyhow::anyhow!("the enrolled configuration would not be valid: {e}"))?;
    crate::atomic_file::write(config, new.as_bytes())?;
    println!(
        "Gateway {gateway_id} enrolled in {}: released messages go to {address}:{port}.",
        config.display()
    );
    Ok(())
}
