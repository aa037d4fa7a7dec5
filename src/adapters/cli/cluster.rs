//! `clusterconfig` and `clustercheck`: a cluster of machines on one PostgreSQL.

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// The cluster: create one from this machine or join one; its machines, groups and
    /// connections (`list`, `connstatus`); groups; remove a machine; disconnect and
    /// reconnect this machine (for an upgrade); copy, move and delete settings between
    /// levels (pending until `commit`). Without an action: `list`.
    Clusterconfig {
        #[command(subcommand)]
        action: Option<Box<ClusterAction>>,
    },
    /// Every difference between the cluster's levels and machines, each with the
    /// command that resolves it.
    Clustercheck,
}

#[derive(Subcommand)]
pub enum ClusterAction {
    /// The machines by group, whether each is connected and the revision it runs.
    List,
    /// This machine's connection to the cluster's store, and each member's.
    Connstatus,
    /// Creates a cluster with this machine: its settings become the cluster's.
    Create {
        /// The cluster's name.
        name: String,
        /// The cluster's PostgreSQL: postgresql://USER@HOST:PORT/DATABASE.
        #[arg(long)]
        url: String,
        /// The CA certificate (PEM) the store's certificate is checked against (TLS).
        #[arg(long)]
        ca: Option<String>,
        /// This machine's name in the cluster (default: its host name).
        #[arg(long)]
        machine: Option<String>,
        /// The address other machines know this one by (default: its first interface's).
        #[arg(long)]
        address: Option<String>,
    },
    /// Joins this machine to a cluster: it takes the cluster's settings and keeps only
    /// its machine-only ones (node, interfaces). Either over SSH to a member (`--member
    /// IP[:PORT]`, with its Administrator's password from --password-stdin or
    /// PVO_CLUSTER_PASSWORD; the member says where the store is), or with the store's
    /// address (`--url`).
    Join {
        #[arg(long, required_unless_present_any = ["member", "token"])]
        url: Option<String>,
        /// A member's SSH address, IP[:PORT] (port 22 by default).
        #[arg(long, conflicts_with_all = ["url", "token"])]
        member: Option<String>,
        /// A single-use join token from `clusterconfig jointoken` on a member: it names
        /// the member and its SSH host key, so nothing else is needed.
        #[arg(long, conflicts_with = "url")]
        token: Option<String>,
        /// The member's Administrator account.
        #[arg(long, default_value = "admin", requires = "member")]
        user: String,
        /// The member's SSH host key to expect, `SHA256:...`.
        #[arg(long, requires = "member")]
        host_key: Option<String>,
        /// Read the member Administrator's password from the first line of standard input.
        #[arg(long, requires = "member")]
        password_stdin: bool,
        #[arg(long)]
        ca: Option<String>,
        #[arg(long)]
        machine: Option<String>,
        #[arg(long)]
        address: Option<String>,
        /// The group to join (default: the first).
        #[arg(long)]
        group: Option<String>,
    },
    Addgroup {
        name: String,
    },
    /// Moves a machine to another group.
    Setgroup {
        machine: String,
        group: String,
    },
    Renamegroup {
        name: String,
        to: String,
    },
    /// Deletes a group; its machines move to --to.
    Deletegroup {
        name: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Removes a machine from the cluster; it keeps the settings it inherited.
    Removemachine {
        name: String,
    },
    /// Holds this machine disconnected from the cluster (it runs its last revision).
    Disconnect,
    /// Ends `disconnect`: the machine catches up with the cluster.
    Reconnect,
    /// Copies a section (listener, content_filter, tls, ...) from one level to another.
    Copysettings {
        section: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Moves a section from one level to another.
    Movesettings {
        section: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
    /// Deletes a section at a level (--level); the level above shows through.
    Deletesettings {
        section: String,
    },
    /// What a joining machine asks a member over SSH: where the store is (Administrator,
    /// or a machine logged in with a join token, which claims it for --machine).
    #[command(hide = true)]
    Joininfo {
        #[arg(long)]
        machine: Option<String>,
    },
    /// Makes a single-use join token (shown once): a machine joins with `clusterconfig
    /// join --token TOKEN`, without an Administrator's password. `list` shows the tokens
    /// that still work, `revoke HASH` withdraws one.
    #[command(args_conflicts_with_subcommands = true)]
    Jointoken {
        #[command(subcommand)]
        action: Option<JoinTokenAction>,
        /// Minutes the token works, 1 to 1440 (default 60).
        #[arg(long)]
        expires: Option<u64>,
    },
}

#[derive(Subcommand)]
pub enum JoinTokenAction {
    /// The join tokens that still work: who made them, when they expire, their hash's
    /// first 8 hex digits (never the token itself).
    List,
    /// Withdraws a join token that has not been used.
    Revoke {
        /// The beginning of the token's hash, as `list` shows it.
        hash: String,
    },
}

impl ClusterCommand {
    /// The admin request: (command name, JSON arguments).
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        Ok(match self {
            ClusterCommand::Clustercheck => ("clustercheck", json!({})),
            ClusterCommand::Clusterconfig { action } => (
                "clusterconfig",
                match action.map(|a| *a).unwrap_or(ClusterAction::List) {
                    ClusterAction::List => json!({ "action": "list" }),
                    ClusterAction::Connstatus => json!({ "action": "connstatus" }),
                    ClusterAction::Create {
                        name,
                        url,
                        ca,
                        machine,
                        address,
                    } => {
                        json!({ "action": "create", "name": name, "url": url, "ca": ca, "machine": machine, "address": address })
                    }
                    ClusterAction::Join {
                        url,
                        member,
                        token,
                        user,
                        host_key,
                        password_stdin,
                        ca,
                        machine,
                        address,
                        group,
                    } => {
                        let password = match (&member, password_stdin) {
                            (None, _) => None,
                            (Some(_), true) => {
                                let mut line = String::new();
                                std::io::stdin().read_line(&mut line)?;
                                Some(line.trim_end_matches(['\r', '\n']).to_string())
                            }
                            (Some(_), false) => Some(std::env::var("PVO_CLUSTER_PASSWORD").map_err(|_| {
                                anyhow::anyhow!("clusterconfig join --member: give the member Administrator's password with --password-stdin or PVO_CLUSTER_PASSWORD")
                            })?),
                        };
                        let user = member.as_ref().map(|_| user);
                        json!({ "action": "join", "url": url, "member": member, "token": token, "user": user, "password": password, "host_key": host_key, "ca": ca, "machine": machine, "address": address, "group": group })
                    }
                    ClusterAction::Addgroup { name } => {
                        json!({ "action": "addgroup", "name": name })
                    }
                    ClusterAction::Setgroup { machine, group } => {
                        json!({ "action": "setgroup", "machine": machine, "group": group })
                    }
                    ClusterAction::Renamegroup { name, to } => {
                        json!({ "action": "renamegroup", "name": name, "to": to })
                    }
                    ClusterAction::Deletegroup { name, to } => {
                        json!({ "action": "deletegroup", "name": name, "to": to })
                    }
                    ClusterAction::Removemachine { name } => {
                        json!({ "action": "removemachine", "name": name })
                    }
                    ClusterAction::Disconnect => json!({ "action": "disconnect" }),
                    ClusterAction::Reconnect => json!({ "action": "reconnect" }),
                    ClusterAction::Copysettings { section, from, to } => {
                        json!({ "action": "copysettings", "section": section, "from": from, "to": to })
                    }
                    ClusterAction::Movesettings { section, from, to } => {
                        json!({ "action": "movesettings", "section": section, "from": from, "to": to })
                    }
                    ClusterAction::Deletesettings { section } => {
                        json!({ "action": "deletesettings", "section": section })
                    }
                    ClusterAction::Joininfo { machine } => {
                        json!({ "action": "joininfo", "machine": machine })
                    }
                    ClusterAction::Jointoken { action, expires } => match action {
                        None => json!({ "action": "jointoken", "expires": expires }),
                        Some(JoinTokenAction::List) => json!({ "action": "jointoken-list" }),
                        Some(JoinTokenAction::Revoke { hash }) => {
                            json!({ "action": "jointoken-revoke", "hash": hash })
                        }
                    },
                },
            ),
        })
    }
}
