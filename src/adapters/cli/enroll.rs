//! `pvo manager enroll`: issues a gateway's CPQ certificate from the
//! manager's deployment CA, pins the manager's own certificate next to it
//! (`manager.crt`: the only peer the gateway will take releases from), and adds
//! the gateway with the new certificate's serial to the manager's enrolled
//! gateways — through the running manager (a pending change, effective at
//! `commit`: until then, and if the change is cleared, the manager refuses the
//! certificate), or in its configuration file when it is not running.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use crate::core::config::{Config, Role};

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
    crate::net::cpq_certs::ensure_manager_cert(&cfg)?;
    let serial = crate::core::cpq::pki::issue(
        &c.dir,
        gateway_id,
        crate::core::cpq::pki::CertRole::Gateway,
        &[gateway_id.to_string(), address.to_string()],
        out,
    )?;
    let pin = c.dir.join(crate::core::cpq::pki::NODE_CERT);
    let manager_pem = std::fs::read(&pin).with_context(|| format!("reading {}", pin.display()))?;
    crate::core::atomic_file::write(&out.join(crate::core::cpq::pki::MANAGER_CERT), &manager_pem)?;
    println!(
        "Issued the CPQ certificate of gateway {gateway_id} (serial {serial}) into {} ({}, {}, {}, and the manager's certificate {}).",
        out.display(),
        crate::core::cpq::pki::NODE_CERT,
        crate::core::cpq::pki::NODE_KEY,
        crate::core::cpq::pki::CA_CERT,
        crate::core::cpq::pki::MANAGER_CERT
    );
    let args =
        json!({ "id": gateway_id, "address": address.to_string(), "port": port, "serial": serial });
    let socket = cfg.run_dir().join("admin.sock");
    if socket.exists() && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        let command = crate::commands::command::Command::from_parts("cpqenroll", args)?;
        return crate::adapters::cli::client::run(&cfg.data_dir, command, json_out);
    }
    // The manager is not running: edit its file directly.
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let mut doc = crate::core::config_store::Doc::parse(&text).map_err(|e| anyhow::anyhow!(e))?;
    doc.cpq_gateway_set(gateway_id, &address.to_string(), port)
        .and_then(|()| doc.cpq_gateway_serial(gateway_id, &serial))
        .map_err(|e| anyhow::anyhow!(e))?;
    let new = doc.text();
    Config::parse(&new, config, config.parent().unwrap_or(Path::new(".")))
        .map_err(|e| anyhow::anyhow!("the enrolled configuration would not be valid: {e}"))?;
    crate::core::atomic_file::write(config, new.as_bytes())?;
    println!(
        "Gateway {gateway_id} enrolled in {}: released messages go to {address}:{port}.",
        config.display()
    );
    Ok(())
}
