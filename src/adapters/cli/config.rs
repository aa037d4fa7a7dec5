//! CLI of the configuration commands (see `commands::config_cmds`).
//!
//! Every setting has a flag, so scripts never meet a prompt; without flags an
//! editor shows the current setting. Prompts (a commit comment, which commit
//! to roll back to) appear only when stdin is a terminal.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Apply the pending configuration changes to the running node.
    ///
    /// Nothing pending: says so. An invalid configuration is not applied: the
    /// node keeps its configuration and the changes stay pending.
    Commit {
        /// A comment for the history (`pvo commitdetail`); asked for in a terminal.
        #[arg(short = 'm', long)]
        comment: Option<String>,
    },
    /// The history of commits (number, time, user, comment), newest first, and the pending changes.
    Commitdetail,
    /// Go back to commit N of `pvo commitdetail`; applied and committed at once.
    ///
    /// Without N: lists the history (and asks which one in a terminal).
    Rollback {
        /// The commit number to go back to.
        n: Option<u64>,
        /// Discard pending changes without asking.
        #[arg(long)]
        yes: bool,
    },
    /// Discard the pending configuration changes.
    Clearchanges,
    /// Print the committed configuration file (--json: the parsed configuration).
    Showconfig {
        /// Print the pending configuration instead.
        #[arg(long)]
        pending: bool,
    },
    /// Default delivery interface and maximum outbound concurrency (no flags: show them).
    Deliveryconfig {
        /// `Auto` or the name of an interface (`pvo interfaceconfig`); outbound connections come from its address.
        #[arg(long)]
        interface: Option<String>,
        /// Outbound connections in total (1 to 10000).
        #[arg(long)]
        max_concurrency: Option<u64>,
    },
    /// TLS versions and cipher suites per direction (no flags: show them).
    ///
    /// `sslconfig verify` lists the cipher suites each direction offers. Only
    /// TLS 1.2 and 1.3 and the AEAD suites of rustls exist: SSL, TLS 1.0/1.1,
    /// RC4, export and anonymous suites cannot be enabled.
    Sslconfig {
        /// `verify`: list the effective cipher suites per direction.
        #[arg(value_parser = ["verify"])]
        action: Option<String>,
        /// The direction to change.
        #[arg(long, value_parser = ["inbound", "outbound"])]
        direction: Option<String>,
        /// TLS versions, comma-separated: 1.2,1.3
        #[arg(long, value_delimiter = ',')]
        versions: Option<Vec<String>>,
        /// Cipher suites in order of preference, comma-separated (rustls names such as
        /// TLS13_AES_256_GCM_SHA384), or `default` for every suite rustls offers.
        #[arg(long, value_delimiter = ',')]
        ciphers: Option<Vec<String>>,
    },
    /// IP interfaces (no subcommand: list them).
    Interfaceconfig {
        #[command(subcommand)]
        action: Option<InterfaceAction>,
    },
    /// Listeners with their host and recipient access tables (no subcommand: list them).
    Listenerconfig {
        #[command(subcommand)]
        action: Option<ListenerAction>,
    },
    /// SMTP routes: domain -> next hops (no subcommand: list them).
    Smtproutes {
        #[command(subcommand)]
        action: Option<RouteAction>,
    },
}

#[derive(clap::Subcommand)]
pub enum InterfaceAction {
    /// Add an interface.
    New {
        #[arg(long)]
        name: String,
        /// Its IP address (must be configured on this host to be used).
        #[arg(long)]
        address: String,
        /// Host name for EHLO when delivering from it (default: the node's).
        #[arg(long)]
        hostname: Option<String>,
    },
    /// Change an interface's address or host name, or the services on it.
    Edit {
        name: String,
        #[arg(long)]
        address: Option<String>,
        #[arg(long)]
        hostname: Option<String>,
        /// SSH on this interface: its port (`[ssh]`; 0: any free port), or `off`.
        #[arg(long, value_name = "PORT|off")]
        ssh: Option<String>,
        /// HTTPS (web UI, REST API, metrics) on this interface: its port (`[web]`;
        /// 0: any free port), or `off`.
        #[arg(long, value_name = "PORT|off")]
        https: Option<String>,
    },
    /// Delete an interface (refused while a listener or deliveryconfig uses it).
    Delete { name: String },
}

/// HAT and RAT flags, shared by `new` and `edit`.
#[derive(clap::Args)]
pub struct AccessTables {
    /// Add a HAT sender group, or replace the group of that name:
    /// GROUP=SENDER[,SENDER...]:POLICY. Senders are IP addresses, CIDRs, host
    /// names, .domain suffixes or ALL; POLICY names a mail flow policy
    /// (with or without `$`). A new group goes before the catch-all (ALL)
    /// group, since the first match wins. Repeatable.
    /// Example: --hat-add "PARTNERS=10.0.0.0/8,.partner.example:RELAYED"
    #[arg(long, value_name = "GROUP=SENDERS:POLICY")]
    hat_add: Vec<String>,
    /// Delete the HAT sender group GROUP. Repeatable.
    #[arg(long, value_name = "GROUP")]
    hat_delete: Vec<String>,
    /// Add a RAT entry: RECIPIENT[,RECIPIENT...]:accept|reject. Recipients are
    /// example.com, .example.com (subdomains), user@example.com or ALL; an
    /// entry goes before the catch-all (ALL) entry. Repeatable.
    /// Example: --rat-add "example.com,.example.com:accept"
    #[arg(long, value_name = "RECIPIENTS:ACTION")]
    rat_add: Vec<String>,
    /// Delete the recipient RECIPIENT from the RAT. Repeatable.
    #[arg(long, value_name = "RECIPIENT")]
    rat_delete: Vec<String>,
}

#[derive(clap::Subcommand)]
pub enum ListenerAction {
    /// Add a listener (its HAT starts empty: every sender is rejected until --hat-add).
    New {
        #[arg(long)]
        name: String,
        /// The interface (`pvo interfaceconfig`) whose address it listens on.
        #[arg(long)]
        interface: String,
        /// TCP port (0: any free port).
        #[arg(long)]
        port: u16,
        #[arg(long = "type", value_parser = ["public", "private"], default_value = "public")]
        kind: String,
        #[command(flatten)]
        tables: AccessTables,
    },
    /// Change a listener: port, interface, type, HAT and RAT entries.
    Edit {
        name: String,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        interface: Option<String>,
        #[arg(long = "type", value_parser = ["public", "private"])]
        kind: Option<String>,
        #[command(flatten)]
        tables: AccessTables,
    },
    /// Delete a listener.
    Delete { name: String },
    /// Change the connection limits of a mail flow policy (the HAT's `$POLICY`).
    Policy {
        /// The policy's name, with or without `$`.
        name: String,
        /// Concurrent connections from the policy's sender groups.
        #[arg(long)]
        max_concurrency: Option<u64>,
        /// Concurrent connections from one client address (1 to --max-concurrency).
        #[arg(long)]
        max_concurrency_per_ip: Option<u64>,
        /// New connections per minute from one client address (0: no limit).
        #[arg(long)]
        max_connections_per_ip_per_minute: Option<u64>,
    },
}

#[derive(clap::Subcommand)]
pub enum RouteAction {
    /// Add a route: mail for DOMAIN goes to these hosts, in order.
    New {
        /// example.com, .example.com (subdomains), or ALL (every other domain).
        #[arg(long)]
        domain: String,
        /// Next hops, comma-separated: host, host:port or [1.2.3.4]:port (port 25 by default).
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
    },
    /// Replace the next hops of an existing route.
    Edit {
        #[arg(long)]
        domain: String,
        #[arg(long, value_delimiter = ',', required = true)]
        hosts: Vec<String>,
    },
    /// Delete the route of a domain.
    Delete {
        #[arg(long)]
        domain: String,
    },
    /// Delete every route (mail then goes to the MX hosts of each domain).
    Clear,
}

impl AccessTables {
    fn to_json(&self) -> serde_json::Value {
        json!({ "hat_add": self.hat_add, "hat_delete": self.hat_delete, "rat_add": self.rat_add, "rat_delete": self.rat_delete })
    }
}

fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

impl ConfigCommand {
    /// The admin request for this command: (command name, JSON arguments).
    /// May prompt in a terminal; never prompts without one. (Consumes the
    /// command: the name and signature are shared with the other command
    /// groups in `main.rs`.)
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        Ok(match self {
            ConfigCommand::Commit { comment } => {
                let comment = match comment {
                    Some(c) => c,
                    None => prompt("Please enter some comments describing your changes:\n[]> ")?
                        .unwrap_or_default(),
                };
                ("commit", json!({ "comment": comment }))
            }
            ConfigCommand::Commitdetail => ("commitdetail", json!({})),
            ConfigCommand::Rollback { n, yes } => rollback_request(n, yes)?,
            ConfigCommand::Clearchanges => ("clearchanges", json!({})),
            ConfigCommand::Showconfig { pending } => ("showconfig", json!({ "pending": pending })),
            ConfigCommand::Deliveryconfig {
                interface,
                max_concurrency,
            } => (
                "deliveryconfig",
                json!({ "interface": interface, "max_concurrency": max_concurrency }),
            ),
            ConfigCommand::Sslconfig {
                action,
                direction,
                versions,
                ciphers,
            } => {
                if action.is_some()
                    && (direction.is_some() || versions.is_some() || ciphers.is_some())
                {
                    anyhow::bail!("`sslconfig verify` takes no other options; change settings with `pvo sslconfig --direction ... --versions ... --ciphers ...`");
                }
                if direction.is_none() && (versions.is_some() || ciphers.is_some()) {
                    anyhow::bail!("say which direction to change: --direction inbound or --direction outbound");
                }
                (
                    "sslconfig",
                    json!({ "action": action, "direction": direction, "versions": versions, "ciphers": ciphers }),
                )
            }
            ConfigCommand::Interfaceconfig { action } => (
                "interfaceconfig",
                match action {
                    None => json!({ "action": "list" }),
                    Some(InterfaceAction::New {
                        name,
                        address,
                        hostname,
                    }) => {
                        json!({ "action": "new", "name": name, "address": address, "hostname": hostname })
                    }
                    Some(InterfaceAction::Edit {
                        name,
                        address,
                        hostname,
                        ssh,
                        https,
                    }) => {
                        json!({ "action": "edit", "name": name, "address": address, "hostname": hostname, "ssh": ssh, "https": https })
                    }
                    Some(InterfaceAction::Delete { name }) => {
                        json!({ "action": "delete", "name": name })
                    }
                },
            ),
            ConfigCommand::Listenerconfig { action } => (
                "listenerconfig",
                match action {
                    None => json!({ "action": "list" }),
                    Some(ListenerAction::New {
                        name,
                        interface,
                        port,
                        kind,
                        tables,
                    }) => merge(
                        json!({ "action": "new", "name": name, "interface": interface, "port": port, "type": kind }),
                        tables.to_json(),
                    ),
                    Some(ListenerAction::Edit {
                        name,
                        port,
                        interface,
                        kind,
                        tables,
                    }) => merge(
                        json!({ "action": "edit", "name": name, "interface": interface, "port": port, "type": kind }),
                        tables.to_json(),
                    ),
                    Some(ListenerAction::Delete { name }) => {
                        json!({ "action": "delete", "name": name })
                    }
                    Some(ListenerAction::Policy {
                        name,
                        max_concurrency,
                        max_concurrency_per_ip,
                        max_connections_per_ip_per_minute,
                    }) => json!({
                        "action": "policy",
                        "policy": name,
                        "max_concurrency": max_concurrency,
                        "max_concurrency_per_ip": max_concurrency_per_ip,
                        "max_connections_per_ip_per_minute": max_connections_per_ip_per_minute,
                    }),
                },
            ),
            ConfigCommand::Smtproutes { action } => (
                "smtproutes",
                match action {
                    None => json!({ "action": "list" }),
                    Some(RouteAction::New { domain, hosts }) => {
                        json!({ "action": "new", "domain": domain, "hosts": hosts })
                    }
                    Some(RouteAction::Edit { domain, hosts }) => {
                        json!({ "action": "edit", "domain": domain, "hosts": hosts })
                    }
                    Some(RouteAction::Delete { domain }) => {
                        json!({ "action": "delete", "domain": domain })
                    }
                    Some(RouteAction::Clear) => json!({ "action": "clear" }),
                },
            ),
        })
    }
}

/// `rollback`: in a terminal, shows the history and asks which commit when
/// N is missing, and asks before discarding pending changes.
fn rollback_request(n: Option<u64>, yes: bool) -> Result<(&'static str, serde_json::Value)> {
    if !crate::adapters::cli::stdin_is_terminal() || (n.is_some() && yes) {
        return Ok(("rollback", json!({ "n": n, "yes": yes })));
    }
    let history = ask_node("commitdetail")?;
    let mut n = n;
    if n.is_none() {
        println!("{}", history.text.trim_end());
        match prompt("Enter the number of the commit to roll back to (empty: cancel).\n[]> ")? {
            Some(a) if a.is_empty() => anyhow::bail!("cancelled"),
            Some(a) => {
                n = Some(
                    a.parse()
                        .map_err(|_| anyhow::anyhow!("{a:?} is not a commit number"))?,
                )
            }
            None => {}
        }
    }
    let mut yes = yes;
    if !yes && history.data.get("pending").and_then(|p| p.as_bool()) == Some(true) {
        confirm("There are changes pending; rolling back discards them.")?;
        yes = true;
    }
    Ok(("rollback", json!({ "n": n, "yes": yes })))
}

/// One request to the node, for a prompt that needs its answer first.
fn ask_node(command: &str) -> Result<crate::commands::protocol::Response> {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "admin".into());
    let resp = crate::adapters::cli::client::call(
        &data_dir(),
        &crate::commands::protocol::Request {
            command: crate::commands::command::Command::from_parts(command, json!({}))?,
            user,
            auth: crate::adapters::cli::client::credentials()?,
            level: crate::adapters::cli::client::level(),
        },
    )?;
    if !resp.ok {
        anyhow::bail!("{}", resp.text.trim_end());
    }
    Ok(resp)
}

/// The --dir of this command line (`to_request` is not handed it).
fn data_dir() -> PathBuf {
    let args: Vec<String> = std::env::args().collect();
    let mut dir = PathBuf::from("./pvo-data");
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--dir=") {
            dir = PathBuf::from(v);
        } else if a == "--dir" {
            if let Some(v) = args.get(i + 1) {
                dir = PathBuf::from(v);
            }
        }
    }
    dir
}

/// Asks a question when stdin is a terminal; `None` otherwise.
fn prompt(question: &str) -> Result<Option<String>> {
    use std::io::{BufRead, Write};
    if !crate::adapters::cli::stdin_is_terminal() {
        return Ok(None);
    }
    print!("{question}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(Some(line.trim().to_string()))
}

fn confirm(what: &str) -> Result<()> {
    match prompt(&format!("{what} Are you sure? [N]> "))? {
        Some(a) if a.eq_ignore_ascii_case("y") || a.eq_ignore_ascii_case("yes") => Ok(()),
        Some(_) => anyhow::bail!("cancelled"),
        None => anyhow::bail!("{what} Confirm with --yes (no terminal to ask)."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        c: ConfigCommand,
    }

    fn request(args: &[&str]) -> (&'static str, serde_json::Value) {
        let cli = Cli::try_parse_from(std::iter::once("pvo").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.c.to_request().unwrap()
    }

    #[test]
    fn config_cli_maps_flags_to_requests() {
        assert_eq!(
            request(&["commit", "-m", "x"]),
            ("commit", json!({ "comment": "x" }))
        );
        assert_eq!(
            request(&["rollback", "3", "--yes"]),
            ("rollback", json!({ "n": 3, "yes": true }))
        );
        let (_, a) = request(&[
            "sslconfig",
            "--direction",
            "inbound",
            "--versions",
            "1.2,1.3",
            "--ciphers",
            "default",
        ]);
        assert_eq!(a["versions"], json!(["1.2", "1.3"]));
        assert_eq!(a["ciphers"], json!(["default"]));
        let (_, a) = request(&[
            "listenerconfig",
            "edit",
            "IncomingMail",
            "--port",
            "2526",
            "--hat-add",
            "P=10.0.0.0/8,1.2.3.4:RELAYED",
            "--rat-delete",
            "x.com",
        ]);
        assert_eq!(a["action"], "edit");
        assert_eq!(a["port"], 2526);
        assert_eq!(a["hat_add"], json!(["P=10.0.0.0/8,1.2.3.4:RELAYED"]));
        assert_eq!(a["rat_delete"], json!(["x.com"]));
        let (_, a) = request(&[
            "smtproutes",
            "new",
            "--domain",
            "d.test",
            "--hosts",
            "h1:25,h2",
        ]);
        assert_eq!(a["hosts"], json!(["h1:25", "h2"]));
        assert_eq!(request(&["interfaceconfig"]).1, json!({ "action": "list" }));
        let (_, a) = request(&[
            "interfaceconfig",
            "edit",
            "Data",
            "--https",
            "8443",
            "--ssh",
            "off",
        ]);
        assert_eq!((&a["https"], &a["ssh"]), (&json!("8443"), &json!("off")));
    }
}
