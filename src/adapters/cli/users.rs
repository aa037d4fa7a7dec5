//! CLI of `userconfig` (users, custom roles, SSH keys) and `auditlog` (see
//! `commands::user_cmds`).
//!
//! Passwords never appear on a command line (where `ps` and shell history would keep
//! them): `--password-stdin` reads one line from standard input; without it, `password`
//! asks twice without echo in a terminal, and otherwise the node generates one and shows
//! it once. Over SSH there is no standard input of the command's own, so only generated
//! passwords are possible there.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Users and roles of this node: list them (no subcommand: name, full name, role,
    /// status), add, change and delete users, set passwords, custom roles and SSH keys.
    ///
    /// Built-in roles: Administrator (everything), Operator (status, queues, quarantines in
    /// its access lists; no settings), Read-Only Operator (views status and quarantined
    /// messages in its access lists; no release or delete), Guest (views quarantined
    /// messages in its access lists only), Help Desk User (searches, views and processes
    /// messages in its access lists only), Technician (status, queues and diagnostics; no
    /// quarantines). Custom roles give quarantine access, optionally limited to recipient
    /// domains. Changes apply at once (no commit).
    Userconfig {
        #[command(subcommand)]
        action: Option<UserAction>,
    },
    /// The audit trail: views, releases, deletes, moves, copies, delays of quarantined
    /// messages, configuration commits and changes, user changes, refusals and failed
    /// logins — who, when, what and from where. Newest last.
    Auditlog {
        /// Only this user's entries.
        #[arg(long)]
        user: Option<String>,
        /// Only this action (view, release, delete, delay, move, copy, commit, login,
        /// user-new, ...).
        #[arg(long)]
        action: Option<String>,
        /// Only entries naming this MID.
        #[arg(long)]
        mid: Option<u64>,
        /// From this time: YYYY-MM-DD, "YYYY-MM-DD HH:MM[:SS]" (GMT) or unix seconds.
        #[arg(long)]
        since: Option<String>,
        /// Up to this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: u64,
    },
}

#[derive(clap::Subcommand)]
pub enum UserAction {
    /// List the users (the default).
    List,
    /// Add a user. Without --password-stdin a password is generated and shown once.
    New {
        #[arg(long)]
        name: String,
        /// A built-in role (Administrator, Operator, Read-Only Operator, Guest, Help Desk
        /// User, Technician) or a custom role.
        #[arg(long)]
        role: String,
        #[arg(long)]
        full_name: Option<String>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Change a user's role, full name or state.
    Edit {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long)]
        full_name: Option<String>,
        /// Refuse the user's logins (kept, with its keys).
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        #[arg(long)]
        enable: bool,
    },
    /// Delete a user.
    Delete { name: String },
    /// Set a user's password (any user may set their own): from --password-stdin, asked
    /// in a terminal, or generated and shown once.
    Password {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Custom roles: list (no subcommand), new, edit, delete.
    Role {
        #[command(subcommand)]
        action: Option<RoleAction>,
    },
    /// A user's SSH public keys (authorized keys for `ssh USER@node`).
    Sshkey {
        #[command(subcommand)]
        action: SshkeyAction,
    },
    /// A user's REST API tokens (`Authorization: Bearer TOKEN`); a new one is shown once.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(clap::Subcommand)]
pub enum TokenAction {
    /// List a user's tokens (names and creation times; never the tokens).
    List { name: String },
    /// Create a token for the user and print it (only the SHA-256 is kept).
    New {
        name: String,
        /// The token's name (default `token-<unix time>`).
        #[arg(long = "name", id = "token_name")]
        token_name: Option<String>,
    },
    /// Delete a token by its name.
    Delete { name: String, token_name: String },
}

/// The settings of a custom role, shared by `new` and `edit`.
#[derive(clap::Args)]
pub struct RoleArgs {
    /// Quarantines it may access besides those whose access list names it
    /// (comma-separated; "all" for every quarantine; "" for none).
    #[arg(long, value_delimiter = ',')]
    quarantines: Option<Vec<String>>,
    /// Only messages with a recipient in these domains (comma-separated; "" for all).
    #[arg(long, value_delimiter = ',')]
    domains: Option<Vec<String>>,
    /// Search and view only (no release, delete, delay or move).
    #[arg(long, conflicts_with = "can_act")]
    view_only: bool,
    /// May release, delete, delay and move (the default for a new role).
    #[arg(long)]
    can_act: bool,
    /// Whether it may see the matched content of "why held" (filter matches, DLP
    /// samples): yes or no (a new role: no).
    #[arg(long, value_name = "yes|no", value_parser = ["yes", "no"])]
    matched_content: Option<String>,
    #[arg(long)]
    description: Option<String>,
}

impl RoleArgs {
    fn to_json(&self) -> Value {
        let view_only = match (self.view_only, self.can_act) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        json!({
            "quarantines": self.quarantines,
            "domains": self.domains,
            "view_only": view_only,
            "matched_content": self.matched_content.as_deref().map(|v| v == "yes"),
            "description": self.description,
        })
    }
}

#[derive(clap::Subcommand)]
pub enum RoleAction {
    /// List the roles (the default).
    List,
    /// Add a custom role.
    New {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: RoleArgs,
    },
    /// Change a custom role; settings not given stay.
    Edit {
        name: String,
        #[command(flatten)]
        settings: RoleArgs,
    },
    /// Delete a custom role no user has.
    Delete { name: String },
}

#[derive(clap::Subcommand)]
pub enum SshkeyAction {
    /// List a user's keys (number, SHA256 fingerprint, comment).
    List { name: String },
    /// Add a key: one authorized_keys line, given as an argument or read from --file.
    Add {
        name: String,
        /// The key line (`ssh-ed25519 AAAA... comment`); quote it.
        key: Option<String>,
        /// Read the key from this file (for example ~/.ssh/id_ed25519.pub).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Delete a key by its number, fingerprint or comment.
    Delete { name: String, key: String },
}

/// Reads the first line of standard input (never over SSH).
fn password_stdin() -> Result<String> {
    if crate::adapters::cli::remote() {
        bail!("--password-stdin does not work over SSH; leave it out and the node generates a password");
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Asks twice without echo in a terminal; `None` without one (the node generates).
fn password_prompt(name: &str) -> Result<Option<String>> {
    if !crate::adapters::cli::stdin_is_terminal() {
        return Ok(None);
    }
    let first = crate::adapters::cli::client::read_password(&format!("{name} (new)"), None)?;
    let second = crate::adapters::cli::client::read_password(&format!("{name} (again)"), None)?;
    if first != second {
        bail!("the two passwords differ; nothing was changed");
    }
    Ok(Some(first))
}

impl UserCommand {
    /// The admin request for this command.
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, Value)> {
        Ok(match self {
            UserCommand::Auditlog {
                user,
                action,
                mid,
                since,
                until,
                limit,
            } => (
                "auditlog",
                json!({
                    "user": user,
                    "audit_action": action,
                    "mid": mid,
                    "since": since.map(|s| crate::adapters::cli::quarantine::parse_date(&s, false)).transpose()?,
                    "until": until.map(|s| crate::adapters::cli::quarantine::parse_date(&s, true)).transpose()?,
                    "limit": limit,
                }),
            ),
            UserCommand::Userconfig { action } => ("userconfig", user_json(action)?),
        })
    }
}

fn user_json(action: Option<UserAction>) -> Result<Value> {
    Ok(match action.unwrap_or(UserAction::List) {
        UserAction::List => json!({ "action": "list" }),
        UserAction::New {
            name,
            role,
            full_name,
            password_stdin: from_stdin,
        } => {
            let password = if from_stdin {
                Some(password_stdin()?)
            } else {
                None
            };
            json!({ "action": "new", "name": name, "role": role, "full_name": full_name, "password": password })
        }
        UserAction::Edit {
            name,
            role,
            full_name,
            disable,
            enable,
        } => {
            let enabled = match (disable, enable) {
                (true, _) => Some(false),
                (_, true) => Some(true),
                _ => None,
            };
            json!({ "action": "edit", "name": name, "role": role, "full_name": full_name, "enabled": enabled })
        }
        UserAction::Delete { name } => json!({ "action": "delete", "name": name }),
        UserAction::Password {
            name,
            password_stdin: from_stdin,
        } => {
            let password = if from_stdin {
                Some(password_stdin()?)
            } else {
                password_prompt(&name)?
            };
            json!({ "action": "password", "name": name, "password": password })
        }
        UserAction::Role { action } => {
            let mut v = match action.unwrap_or(RoleAction::List) {
                RoleAction::List => json!({ "sub": "list" }),
                RoleAction::New { name, settings } => {
                    let mut v = settings.to_json();
                    v["sub"] = json!("new");
                    v["name"] = json!(name);
                    v
                }
                RoleAction::Edit { name, settings } => {
                    let mut v = settings.to_json();
                    v["sub"] = json!("edit");
                    v["name"] = json!(name);
                    v
                }
                RoleAction::Delete { name } => json!({ "sub": "delete", "name": name }),
            };
            v["action"] = json!("role");
            v
        }
        UserAction::Sshkey { action } => match action {
            SshkeyAction::List { name } => {
                json!({ "action": "sshkey", "sub": "list", "name": name })
            }
            SshkeyAction::Add { name, key, file } => {
                let key = match (key, file) {
                    (Some(k), None) => k,
                    (None, Some(f)) => {
                        if crate::adapters::cli::remote() {
                            bail!("--file does not work over SSH; give the key line as an argument (quoted)");
                        }
                        std::fs::read_to_string(&f)
                            .with_context(|| format!("reading {}", f.display()))?
                            .lines()
                            .next()
                            .unwrap_or("")
                            .to_string()
                    }
                    _ => bail!(
                        "userconfig sshkey add: give the key line or --file FILE (one of them)"
                    ),
                };
                json!({ "action": "sshkey", "sub": "add", "name": name, "key": key })
            }
            SshkeyAction::Delete { name, key } => {
                json!({ "action": "sshkey", "sub": "delete", "name": name, "key": key })
            }
        },
        UserAction::Token { action } => match action {
            TokenAction::List { name } => {
                json!({ "action": "token", "sub": "list", "name": name })
            }
            TokenAction::New { name, token_name } => {
                json!({ "action": "token", "sub": "new", "name": name, "token_name": token_name })
            }
            TokenAction::Delete { name, token_name } => {
                json!({ "action": "token", "sub": "delete", "name": name, "token_name": token_name })
            }
        },
    })
}
