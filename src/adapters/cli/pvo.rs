//! `pvoconfig` and `diagnose`: centralizing a gateway's PVO quarantines.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum PvoCommand {
    /// Centralized Policy, Virus and Outbreak quarantines: status; enable or disable on a
    /// gateway (enable checks that the manager is ready and names the cause when not); the
    /// migration wizard on a manager. Changes are pending until `commit`.
    Pvoconfig {
        #[command(subcommand)]
        action: Option<PvoAction>,
    },
    /// Manager: the gateways it centralizes (the PVO service): list, add over SSH (installs
    /// the manager's key, issues and installs the CPQ certificate, asks where released mail
    /// goes), test, delete.
    Applianceconfig {
        #[command(subcommand)]
        action: Option<ApplianceAction>,
    },
    /// This node's CPQ certificate, whom its handshakes accept and its revocation list
    /// (`list`); `revoke --serial HEX` or `--id ID` (an added gateway on a manager, the
    /// manager on a gateway) refuses a certificate from the next handshake on; `install`
    /// is run by the manager over SSH when it adds a gateway.
    Cpqcert {
        #[arg(value_parser = ["list", "revoke", "install"], default_value = "list")]
        action: String,
        #[arg(long)]
        id: Option<String>,
        /// revoke: the certificate's serial number (hex, as `cpqcert list` shows).
        #[arg(long)]
        serial: Option<String>,
        #[arg(long, hide = true)]
        cert: Option<String>,
        #[arg(long, hide = true)]
        key: Option<String>,
        #[arg(long, hide = true)]
        ca: Option<String>,
        /// install: the manager's own certificate, pinned by the gateway.
        #[arg(long, hide = true)]
        manager: Option<String>,
    },
    /// Run every check behind the centralization failure scenarios (listeners, certificates,
    /// reachability from each interface, TLS, manager readiness, CPQ queues) and print each
    /// as PASS or FAIL with cause and remedy.
    Diagnose,
}

#[derive(Subcommand)]
pub enum ApplianceAction {
    /// The added gateways.
    List,
    /// Each added gateway's state: what it sent, what was refused, and its own view over
    /// SSH (mode, backlog for the manager, migration).
    Status {
        #[arg(long)]
        id: Option<String>,
    },
    /// Add a gateway: log into it over SSH once with its Administrator's password (from
    /// --password-stdin or the environment variable PVO_GATEWAY_PASSWORD).
    New {
        /// The gateway's id.
        #[arg(long)]
        id: String,
        /// The gateway's address (SSH and CPQ).
        #[arg(long)]
        address: String,
        /// The gateway's SSH port.
        #[arg(long, default_value_t = 22)]
        ssh_port: u16,
        /// The gateway's Administrator account.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a gateway's address, SSH port, SSH user or pinned SSH host key (pending
    /// until commit).
    Edit {
        id: String,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        ssh_port: Option<u16>,
        #[arg(long)]
        user: Option<String>,
        /// The gateway's SSH host key fingerprint, `SHA256:...`.
        #[arg(long)]
        host_key: Option<String>,
    },
    /// Log in with the manager's key and ask where released mail goes.
    Test { id: String },
    /// Remove a gateway.
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum PvoAction {
    /// Mode, manager, queues and migration progress.
    Status,
    /// The PVO service: the interface and port of this node's cpq_listener (pending until
    /// commit).
    Service {
        #[arg(long)]
        interface: Option<String>,
        #[arg(long)]
        port: Option<u16>,
    },
    /// Gateway: centralize this gateway's quarantines on the manager (after the preflight).
    Enable {
        /// The manager's CPQ address, HOST[:PORT] (port 7025 by default), or the managers
        /// of one deployment separated by commas, tried in that order; default: the
        /// configured [cpq] manager.
        #[arg(long)]
        manager: Option<String>,
    },
    /// Gateway: keep quarantined messages in the local quarantines again.
    Disable,
    /// Manager: the migration wizard — how gateways' local quarantines map to central ones.
    Migration {
        /// automatic (by name), custom (by --map; by name for the rest), or show.
        #[arg(value_parser = ["automatic", "custom", "show"], default_value = "show")]
        mode: String,
        /// Custom mapping GATEWAY:LOCAL=CENTRAL (repeatable), e.g. gw1:Policy=Policy.
        #[arg(long)]
        map: Vec<String>,
        /// Undo a custom mapping GATEWAY:LOCAL (repeatable).
        #[arg(long)]
        unmap: Vec<String>,
    },
}

impl PvoCommand {
    /// The admin request: (command name, JSON arguments).
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        Ok(match self {
            PvoCommand::Diagnose => ("diagnose", json!({})),
            PvoCommand::Cpqcert {
                action,
                id,
                serial,
                cert,
                key,
                ca,
                manager,
            } => (
                "cpqcert",
                json!({ "action": action, "id": id, "serial": serial, "cert": cert, "key": key, "ca": ca, "manager": manager }),
            ),
            PvoCommand::Applianceconfig { action } => (
                "applianceconfig",
                match action.unwrap_or(ApplianceAction::List) {
                    ApplianceAction::List => json!({ "action": "list" }),
                    ApplianceAction::Status { id } => json!({ "action": "status", "id": id }),
                    ApplianceAction::New {
                        id,
                        address,
                        ssh_port,
                        user,
                        password_stdin,
                    } => {
                        let password = if password_stdin {
                            let mut line = String::new();
                            std::io::stdin().read_line(&mut line)?;
                            line.trim_end_matches(['\r', '\n']).to_string()
                        } else {
                            std::env::var("PVO_GATEWAY_PASSWORD").map_err(|_| {
                                anyhow::anyhow!("applianceconfig new: give the gateway Administrator's password with --password-stdin or PVO_GATEWAY_PASSWORD")
                            })?
                        };
                        json!({ "action": "new", "id": id, "address": address, "ssh_port": ssh_port, "user": user, "password": password })
                    }
                    ApplianceAction::Edit {
                        id,
                        address,
                        ssh_port,
                        user,
                        host_key,
                    } => {
                        json!({ "action": "edit", "id": id, "address": address, "ssh_port": ssh_port, "user": user, "host_key": host_key })
                    }
                    ApplianceAction::Test { id } => json!({ "action": "test", "id": id }),
                    ApplianceAction::Delete { id } => json!({ "action": "delete", "id": id }),
                },
            ),
            PvoCommand::Pvoconfig { action } => (
                "pvoconfig",
                match action.unwrap_or(PvoAction::Status) {
                    PvoAction::Status => json!({ "action": "status" }),
                    PvoAction::Service { interface, port } => {
                        json!({ "action": "service", "interface": interface, "port": port })
                    }
                    PvoAction::Enable { manager } => {
                        json!({ "action": "enable", "manager": manager })
                    }
                    PvoAction::Disable => json!({ "action": "disable" }),
                    PvoAction::Migration { mode, map, unmap } => {
                        json!({ "action": "migration", "mode": mode, "map": map, "unmap": unmap })
                    }
                },
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        c: PvoCommand,
    }

    fn req(args: &[&str]) -> (&'static str, serde_json::Value) {
        let mut all = vec!["pvo"];
        all.extend_from_slice(args);
        T::try_parse_from(all).unwrap().c.to_request().unwrap()
    }

    #[test]
    fn requests() {
        assert_eq!(req(&["pvoconfig"]).1["action"], "status");
        assert_eq!(
            req(&["pvoconfig", "enable", "--manager", "10.0.0.1"]),
            (
                "pvoconfig",
                json!({ "action": "enable", "manager": "10.0.0.1" })
            )
        );
        let m = req(&[
            "pvoconfig",
            "migration",
            "custom",
            "--map",
            "gw1:Policy=Legal",
            "--unmap",
            "gw1:Virus",
        ]);
        assert_eq!(m.1["mode"], "custom");
        assert_eq!(m.1["map"], json!(["gw1:Policy=Legal"]));
        assert_eq!(m.1["unmap"], json!(["gw1:Virus"]));
        assert_eq!(req(&["diagnose"]).0, "diagnose");
        let mut all = vec!["pvo", "pvoconfig", "migration", "sideways"];
        assert!(T::try_parse_from(std::mem::take(&mut all)).is_err());
    }
}
