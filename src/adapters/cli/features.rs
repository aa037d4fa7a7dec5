//! `featurekey`: the feature keys of this machine (anti-virus, outbreak filters, DLP).

use anyhow::Result;
use clap::Subcommand;
use serde_json::json;

#[derive(Subcommand)]
pub enum FeatureCommand {
    /// The feature keys of this machine: which engines (antivirus, outbreak, dlp) run
    /// here and until when. A feature without an active key is off on this machine.
    /// Changes take effect at once (no commit). Without an action: `list`.
    Featurekey {
        #[command(subcommand)]
        action: Option<FeatureKeyAction>,
    },
}

#[derive(Subcommand)]
pub enum FeatureKeyAction {
    /// Each feature with its key, until when it is valid, and whether it is on.
    List,
    /// Installs the key of a feature, or renews it (replaces the key it has).
    Add {
        /// antivirus, outbreak or dlp.
        feature: String,
        /// The key as recorded (a licence reference); default: one is made
        /// (pvo-FEATURE-<16 hex>).
        #[arg(long)]
        key: Option<String>,
        /// The last day the key works (YYYY-MM-DD, to the end of that day UTC), or an
        /// RFC 3339 time (2027-12-31T12:00:00Z). Default: it does not expire.
        #[arg(long, conflicts_with = "days")]
        expires: Option<String>,
        /// The key works for this many days from now.
        #[arg(long)]
        days: Option<u64>,
    },
    /// Removes the key of a feature: the feature is off on this machine.
    Remove {
        /// antivirus, outbreak or dlp.
        feature: String,
    },
}

impl FeatureCommand {
    /// The admin request: (command name, JSON arguments).
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, serde_json::Value)> {
        let FeatureCommand::Featurekey { action } = self;
        Ok((
            "featurekey",
            match action.unwrap_or(FeatureKeyAction::List) {
                FeatureKeyAction::List => json!({ "action": "list" }),
                FeatureKeyAction::Add {
                    feature,
                    key,
                    expires,
                    days,
                } => {
                    json!({ "action": "add", "feature": feature, "key": key, "expires": expires, "days": days })
                }
                FeatureKeyAction::Remove { feature } => {
                    json!({ "action": "remove", "feature": feature })
                }
            },
        ))
    }
}
