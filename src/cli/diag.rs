//! CLI of the diagnostic commands (see `commands::diag_cmds`).

use anyhow::Result;

#[derive(clap::Subcommand)]
pub enum DiagCommand {}

impl DiagCommand {
    /// The admin request for this command: (command name, JSON arguments).
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        match self {}
    }
}
