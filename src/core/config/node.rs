//! `[node]`: the machine's host name, its data directory and its role. Only the
//! machine's own file may set it.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::core::config::section::{ConfigError, Ctx, Section};

/// What a node is: a gateway (`pvo gateway run`) or a manager (`pvo manager run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Gateway,
    Manager,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Manager => "manager",
        }
    }
}

/// `[node]`, validated.
#[derive(Debug, Clone)]
pub struct Node {
    pub hostname: String,
    pub data_dir: PathBuf,
    pub role: Role,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub hostname: Option<Spanned<String>>,
    pub data_dir: Option<String>,
    pub role: Option<Spanned<String>>,
}

impl Section for Node {
    const KEY: &'static str = "node";
    const MACHINE_ONLY: bool = true;
    type Raw = Raw;
    type Needs<'a> = ();

    fn validate(raw: Option<Raw>, ctx: &Ctx<'_>, (): ()) -> Result<Node, ConfigError> {
        let node = raw.unwrap_or_default();
        let role = match node.role.as_ref().map(|r| r.get_ref().to_ascii_lowercase()) {
            None => Role::Gateway,
            Some(r) if r == "gateway" => Role::Gateway,
            Some(r) if r == "manager" => Role::Manager,
            Some(other) => {
                return ctx.err(
                    node.role.as_ref().map(|r| r.span()),
                    "node.role",
                    format!("\"{other}\" is not a role; allowed: \"gateway\", \"manager\""),
                )
            }
        };
        let hostname = match &node.hostname {
            Some(h) => {
                if pvo_proto::address::parse_mailbox(&format!("x@{}", h.get_ref())).is_err() {
                    return ctx.err(Some(h.span()), "node.hostname", format!("\"{}\" is not a host name; allowed: a DNS name such as \"gw1.example.com\"", h.get_ref()));
                }
                h.get_ref().clone()
            }
            None => "localhost".to_string(),
        };
        let data_dir = ctx.resolve(node.data_dir.as_deref().unwrap_or("."));
        Ok(Node {
            hostname,
            data_dir,
            role,
        })
    }
}
