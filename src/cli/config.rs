//! CLI of the configuration commands (see `commands::config_cmds`).

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {}

impl ConfigCommand {
    /// The admin request for this command: (command name, JSON arguments).
    /// May prompt in a terminal; never prompts without one.
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        match self {}
    }
}
