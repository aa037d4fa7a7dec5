//! CLI of the quarantine commands (see `commands::quarantine_cmds`): `quarantineconfig`,
//! `quarantine search|show|release|delete|delay|move|copy|manage-by-rule|sweep`,
//! `outbreakupdate` and `outbreakstatus`.
//!
//! Messages are named by the MID the gateway logged (`MID 482 quarantined to "Policy"`),
//! never by the store's internal id, so an administrator can go from `grep` to an action.
//! Every action has flags, so scripts never meet a prompt; deleting, and any action on
//! every result of a search, asks for confirmation in a terminal unless `--yes`.
//!
//! Parsing that needs no node (durations, dates, the shape of a request) happens here, so
//! a typo fails before anything is sent; the node checks everything again, since the admin
//! channel is not the only way requests will arrive.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

#[derive(clap::Subcommand)]
pub enum QuarantineCommand {
    /// Local quarantines: list them (no subcommand), or add, change and delete one.
    ///
    /// The list has the columns #, name, space used, messages, retention and action,
    /// then the totals. Settings are stored with the quarantines and apply at once.
    Quarantineconfig {
        #[command(subcommand)]
        action: Option<QuarantineConfigAction>,
    },
    /// Search, view and act on quarantined messages (MID = the MID in mail_logs).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
    },
    /// Load an outbreak rules file, put it in force, and rescan every message held in
    /// the Outbreak quarantine: those no longer at their policy's threshold are released.
    ///
    /// The rules stay in force until the node restarts; to keep them, point
    /// `[outbreak] rules_file` at the file.
    Outbreakupdate {
        /// The rules file (TOML: version and [[rule]] tables).
        file: PathBuf,
    },
    /// The outbreak rules in force (version, id, level, description) and the messages
    /// held in the Outbreak quarantine per rule.
    Outbreakstatus,
}

#[derive(clap::Subcommand)]
pub enum QuarantineConfigAction {
    /// List the quarantines (the default).
    List,
    /// Add a custom quarantine.
    New {
        /// The name (names never change; built-in names are taken).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Change a quarantine's settings (built-ins too); settings not given stay.
    Edit {
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Delete a custom quarantine; messages held in it move to Unclassified.
    Delete { name: String },
}

/// The settings of a quarantine, shared by `new` and `edit`.
#[derive(clap::Args, Default)]
pub struct SettingsArgs {
    /// How long a message stays: 90m, 8h, 10d, 1w (default for a new one: 10d).
    #[arg(long, value_parser = parse_retention)]
    retention: Option<u64>,
    /// What happens at the scheduled exit (default for a new one: delete).
    #[arg(long, value_parser = ["delete", "release"])]
    action: Option<String>,
    /// Never apply the default action early to free up space.
    #[arg(long, conflicts_with = "no_exempt_free_up")]
    exempt_free_up: bool,
    /// Let free-up-space apply to this quarantine again.
    #[arg(long)]
    no_exempt_free_up: bool,
    /// Early release: text put before the subject ("" removes the setting).
    #[arg(long, value_name = "TEXT")]
    subject_prepend: Option<String>,
    /// Early release: text put after the subject ("" removes the setting).
    #[arg(long, value_name = "TEXT")]
    subject_append: Option<String>,
    /// Early release: a header to add, NAME:VALUE ("" removes the setting).
    #[arg(long, value_name = "NAME:VALUE")]
    x_header: Option<String>,
    /// Early release: replace every attachment with a note naming it.
    #[arg(long, conflicts_with = "no_strip_attachments")]
    strip_attachments: bool,
    /// Early release: keep attachments.
    #[arg(long)]
    no_strip_attachments: bool,
    /// Who besides administrators may search, view and process its messages: user
    /// names and roles (Operator, Read-Only Operator, Guest, Help Desk User, custom roles),
    /// comma-separated; "" empties the list.
    #[arg(long, value_name = "USER,ROLE", value_delimiter = ',')]
    access: Option<Vec<String>>,
}

impl SettingsArgs {
    fn to_json(&self) -> Value {
        let tri = |yes: bool, no: bool| match (yes, no) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        };
        json!({
            "retention_secs": self.retention,
            "default_action": self.action,
            "exempt_free_up": tri(self.exempt_free_up, self.no_exempt_free_up),
            "subject_prepend": self.subject_prepend,
            "subject_append": self.subject_append,
            "x_header": self.x_header,
            "strip_attachments": tri(self.strip_attachments, self.no_strip_attachments),
            "access": self.access.as_ref().map(|a| {
                a.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect::<Vec<_>>()
            }),
        })
    }
}

#[derive(clap::Subcommand)]
pub enum QuarantineAction {
    /// Find held messages (all filters combine with "and"); newest first.
    Search {
        #[command(flatten)]
        filters: SearchFilters,
        /// Skip this many results.
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// Show at most this many (1 to 10000).
        #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        limit: u64,
    },
    /// Everything about one message: envelope, headers, parts, why it is held, where
    /// else it is held, its scheduled exits and its history.
    Show {
        /// The MID in mail_logs.
        mid: u64,
    },
    /// Release messages: from --quarantine, or from every quarantine they are in.
    /// Delivered once released from all of them.
    Release(ActArgs),
    /// Delete messages (from one quarantine is from all: they are never delivered).
    Delete(ActArgs),
    /// Delay the scheduled exit: in --quarantine, or in every quarantine.
    Delay {
        #[command(flatten)]
        target: ActArgs,
        /// By how long (the appliance's choices).
        #[arg(long, value_parser = ["8h", "24h", "48h", "1w"])]
        by: String,
    },
    /// Move messages to another quarantine, keeping their scheduled exit and reason.
    Move {
        /// MIDs.
        #[arg(required = true)]
        mids: Vec<u64>,
        /// The quarantine they are in.
        #[arg(long)]
        from: String,
        /// The quarantine they go to.
        #[arg(long)]
        to: String,
    },
    /// Send a copy of a message to addresses (administrators only); the message stays held.
    Copy {
        mid: u64,
        /// Recipients of the copy, comma-separated.
        #[arg(long, required = true, value_delimiter = ',')]
        to: Vec<String>,
    },
    /// Outbreak "manage by rule": release, delete or delay every message held in
    /// Outbreak because of one rule.
    ManageByRule {
        /// The outbreak rule id (`pvo outbreakstatus`).
        rule: String,
        #[arg(value_parser = ["release", "delete", "delay"])]
        action: String,
        /// For delay: by how long.
        #[arg(long, value_parser = ["8h", "24h", "48h", "1w"])]
        by: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Apply scheduled exits and free-up-space now, as if the time were --at (unix
    /// seconds; default now). The node does this by itself every 30 seconds.
    Sweep {
        #[arg(long)]
        at: Option<u64>,
    },
}

/// The search filters, shared by `search` and the bulk actions (`--all-results`).
#[derive(clap::Args, Default, Clone)]
pub struct SearchFilters {
    /// Held in this quarantine (for an action: the quarantine to act in).
    #[arg(long)]
    quarantine: Option<String>,
    /// Envelope sender: an address, a domain (example.com or @example.com), or a
    /// prefix ending in * (alice*).
    #[arg(long)]
    sender: Option<String>,
    /// An envelope recipient, same forms as --sender.
    #[arg(long)]
    recipient: Option<String>,
    /// Words of the subject (a word ending in * is a prefix).
    #[arg(long)]
    subject: Option<String>,
    /// Received at or after: YYYY-MM-DD, "YYYY-MM-DD HH:MM[:SS]" (GMT) or unix seconds.
    #[arg(long, value_name = "DATE")]
    from: Option<String>,
    /// Received at or before (a date alone means the end of that day).
    #[arg(long, value_name = "DATE")]
    to: Option<String>,
    /// Why held: the filter, DLP policy, virus or rule name, or KIND:NAME
    /// ("content filter:quarantine_test", "virus:Eicar-Test.Custom.UNOFFICIAL").
    #[arg(long, conflicts_with = "rule")]
    reason: Option<String>,
    /// Held because of this outbreak rule.
    #[arg(long)]
    rule: Option<String>,
    /// Words of an attachment's name (invoice.pdf matches "invoice pdf").
    #[arg(long)]
    attachment: Option<String>,
    /// On a manager: messages from this gateway (its id).
    #[arg(long)]
    gateway: Option<String>,
}

impl SearchFilters {
    fn to_json(&self) -> Result<Value> {
        let from = self
            .from
            .as_deref()
            .map(|d| parse_date(d, false))
            .transpose()?;
        let to = self
            .to
            .as_deref()
            .map(|d| parse_date(d, true))
            .transpose()?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                bail!("--from is after --to");
            }
        }
        // An empty value would reach the node as "not given" and widen the search (an
        // action on every result would then act on more than asked for).
        for (flag, v) in [
            ("quarantine", &self.quarantine),
            ("sender", &self.sender),
            ("recipient", &self.recipient),
            ("subject", &self.subject),
            ("reason", &self.reason),
            ("rule", &self.rule),
            ("attachment", &self.attachment),
            ("gateway", &self.gateway),
        ] {
            if v.as_deref() == Some("") {
                bail!("filter --{flag} \"\" cannot be applied: it is empty (leave the filter out to match any)");
            }
        }
        let (reason_kind, reason) = match (&self.reason, &self.rule) {
            (_, Some(rule)) => (Some("outbreak rule".to_string()), Some(rule.clone())),
            (Some(r), None) => split_reason(r),
            (None, None) => (None, None),
        };
        Ok(json!({
            "quarantine": self.quarantine,
            "sender": self.sender,
            "recipient": self.recipient,
            "subject": self.subject,
            "from": from,
            "to": to,
            "reason": reason,
            "reason_kind": reason_kind,
            "attachment": self.attachment,
            "gateway": self.gateway,
        }))
    }

    /// True when any filter besides the quarantine is set.
    fn narrows(&self) -> bool {
        self.gateway.is_some()
            || self.sender.is_some()
            || self.recipient.is_some()
            || self.subject.is_some()
            || self.from.is_some()
            || self.to.is_some()
            || self.reason.is_some()
            || self.rule.is_some()
            || self.attachment.is_some()
    }
}

/// Which messages an action applies to: MIDs, or every result of a search.
#[derive(clap::Args)]
pub struct ActArgs {
    /// MIDs (as in mail_logs).
    mids: Vec<u64>,
    /// Act on every message the search filters match instead of on MIDs.
    #[arg(long)]
    all_results: bool,
    #[command(flatten)]
    filters: SearchFilters,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
}

impl ActArgs {
    /// The request arguments, after asking for confirmation where it is due.
    fn to_json(&self, verb: &str, destructive: bool) -> Result<Value> {
        if self.all_results && !self.mids.is_empty() {
            bail!("quarantine {verb}: give MIDs or --all-results, not both");
        }
        if !self.all_results && self.mids.is_empty() {
            bail!("quarantine {verb}: give the MIDs of the messages (see `pvo quarantine search`), or --all-results with search filters");
        }
        if !self.all_results && self.filters.narrows() {
            bail!("quarantine {verb}: search filters select messages only with --all-results");
        }
        let query = self.filters.to_json()?;
        let scope = match &self.filters.quarantine {
            Some(q) => format!("quarantine \"{q}\""),
            None if self.mids.len() == 1 => "every quarantine it is in".to_string(),
            None => "every quarantine they are in".to_string(),
        };
        if self.all_results {
            crate::adapters::cli::confirm(
                &format!("Every message the search matches will be {verb}d from {scope}."),
                self.yes,
            )?;
        } else if destructive {
            let mids: Vec<String> = self.mids.iter().map(|m| format!("MID {m}")).collect();
            crate::adapters::cli::confirm(
                &format!(
                    "{} will be deleted from {scope} and never delivered.",
                    mids.join(", ")
                ),
                self.yes,
            )?;
        }
        Ok(json!({
            "mids": self.mids,
            "all_results": self.all_results,
            "quarantine": self.filters.quarantine,
            "query": query,
        }))
    }
}

impl QuarantineCommand {
    /// The admin request for this command: (command name, JSON arguments). (It takes
    /// `self` like the other command groups' `to_request`.)
    #[allow(clippy::wrong_self_convention)]
    pub fn to_request(self) -> Result<(&'static str, Value)> {
        match self {
            QuarantineCommand::Quarantineconfig { action } => {
                let args = match action.unwrap_or(QuarantineConfigAction::List) {
                    QuarantineConfigAction::List => json!({ "action": "list" }),
                    QuarantineConfigAction::New { name, settings } => {
                        json!({ "action": "new", "name": name, "settings": settings.to_json() })
                    }
                    QuarantineConfigAction::Edit { name, settings } => {
                        json!({ "action": "edit", "name": name, "settings": settings.to_json() })
                    }
                    QuarantineConfigAction::Delete { name } => {
                        json!({ "action": "delete", "name": name })
                    }
                };
                Ok(("quarantineconfig", args))
            }
            QuarantineCommand::Quarantine { action } => Ok(("quarantine", action.to_json()?)),
            QuarantineCommand::Outbreakupdate { file } => {
                if crate::adapters::cli::remote() {
                    // Over SSH: a name in the node's import directory, checked there;
                    // nothing is resolved against the node's own working directory.
                    return Ok(("outbreakupdate", json!({ "file": file })));
                }
                // A plain name that is not here is one of the import directory.
                if !file.is_absolute() && file.components().count() == 1 && !file.exists() {
                    return Ok(("outbreakupdate", json!({ "file": file })));
                }
                // The node runs in another directory: send an absolute path.
                let abs = std::fs::canonicalize(&file)
                    .with_context(|| format!("outbreakupdate: {}", file.display()))?;
                Ok(("outbreakupdate", json!({ "file": abs })))
            }
            QuarantineCommand::Outbreakstatus => Ok(("outbreakstatus", json!({}))),
        }
    }
}

impl QuarantineAction {
    fn to_json(&self) -> Result<Value> {
        Ok(match self {
            QuarantineAction::Search {
                filters,
                offset,
                limit,
            } => json!({
                "action": "search",
                "query": filters.to_json()?,
                "offset": offset,
                "limit": limit,
            }),
            QuarantineAction::Show { mid } => json!({ "action": "show", "mid": mid }),
            QuarantineAction::Release(a) => with_action(a.to_json("release", false)?, "release"),
            QuarantineAction::Delete(a) => with_action(a.to_json("delete", true)?, "delete"),
            QuarantineAction::Delay { target, by } => {
                let mut v = with_action(target.to_json("delay", false)?, "delay");
                v["by"] = json!(by);
                v
            }
            QuarantineAction::Move { mids, from, to } => {
                json!({ "action": "move", "mids": mids, "from": from, "to": to })
            }
            QuarantineAction::Copy { mid, to } => {
                let to: Vec<&str> = to
                    .iter()
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .collect();
                if to.is_empty() {
                    bail!("quarantine copy: give the addresses with --to");
                }
                json!({ "action": "copy", "mid": mid, "to": to })
            }
            QuarantineAction::ManageByRule {
                rule,
                action,
                by,
                yes,
            } => {
                match (action.as_str(), by) {
                    ("delay", None) => {
                        bail!("manage-by-rule delay: say by how long with --by 8h|24h|48h|1w")
                    }
                    ("delay", Some(_)) => {}
                    (_, Some(_)) => bail!("manage-by-rule: --by is only for delay"),
                    _ => {}
                }
                if action != "delay" {
                    crate::adapters::cli::confirm(
                        &format!("Every message held in Outbreak because of rule {rule} will be {action}d."),
                        *yes,
                    )?;
                }
                json!({ "action": "manage-by-rule", "rule": rule, "what": action, "by": by })
            }
            QuarantineAction::Sweep { at } => json!({ "action": "sweep", "at": at }),
        })
    }
}

fn with_action(mut v: Value, action: &str) -> Value {
    v["action"] = json!(action);
    v
}

/// `10d`, `8h`, `90m`, `1w`, `3600s` or `3600` (seconds).
fn parse_retention(s: &str) -> Result<u64, String> {
    pvo_scan::outbreak::RetentionTime::parse(s).map(|t| t.0.as_secs())
}

/// Splits `KIND:NAME` when KIND is one of the reason kinds; anything else is a name.
fn split_reason(r: &str) -> (Option<String>, Option<String>) {
    const KINDS: [&str; 5] = [
        "content filter",
        "DLP policy",
        "virus",
        "outbreak rule",
        "other",
    ];
    if let Some((kind, name)) = r.split_once(':') {
        if let Some(k) = KINDS.iter().find(|k| k.eq_ignore_ascii_case(kind.trim())) {
            return (Some(k.to_string()), Some(name.trim().to_string()));
        }
    }
    (None, Some(r.trim().to_string()))
}

/// Unix seconds from `1700000000`, `2025-06-10`, `2025-06-10 14:30`, `2025-06-10T14:30:05`
/// (GMT, like mail_logs). A date alone is its first second, or its last when `end`.
pub fn parse_date(s: &str, end: bool) -> Result<u64> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().context("date: number too large");
    }
    let bad = || {
        anyhow::anyhow!(
            "{s:?} is not a date; use YYYY-MM-DD, \"YYYY-MM-DD HH:MM[:SS]\" (GMT) or unix seconds"
        )
    };
    let (date, time) = match s.split_once([' ', 'T']) {
        Some((d, t)) => (d, Some(t.trim())),
        None => (s, None),
    };
    let nums = |text: &str, sep: char, n: usize| -> Option<Vec<u32>> {
        let parts: Vec<&str> = text.split(sep).collect();
        if parts.len() < n - 1 || parts.len() > n {
            return None;
        }
        parts.iter().map(|p| p.parse().ok()).collect()
    };
    let d = nums(date, '-', 3)
        .filter(|d| d.len() == 3)
        .ok_or_else(bad)?;
    let month = time::Month::try_from(u8::try_from(d[1]).map_err(|_| bad())?).map_err(|_| bad())?;
    let date =
        time::Date::from_calendar_date(d[0] as i32, month, u8::try_from(d[2]).map_err(|_| bad())?)
            .map_err(|_| bad())?;
    let t = match time {
        Some(t) => {
            let hms = nums(t, ':', 3).ok_or_else(bad)?;
            let (h, m, sec) = (hms[0], hms[1], hms.get(2).copied().unwrap_or(0));
            time::Time::from_hms(h as u8, m as u8, sec as u8).map_err(|_| bad())?
        }
        None if end => time::Time::from_hms(23, 59, 59).expect("valid time"),
        None => time::Time::MIDNIGHT,
    };
    let ts = time::PrimitiveDateTime::new(date, t)
        .assume_utc()
        .unix_timestamp();
    u64::try_from(ts).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: QuarantineCommand,
    }

    fn request(args: &[&str]) -> Result<(&'static str, Value)> {
        let cli = Cli::try_parse_from(std::iter::once("pvo").chain(args.iter().copied()))?;
        cli.cmd.to_request()
    }

    #[test]
    fn quarantine_requests() {
        let no_query = json!({
            "quarantine": null, "sender": null, "recipient": null, "subject": null,
            "from": null, "to": null, "reason": null, "reason_kind": null, "attachment": null, "gateway": null,
        });
        let cases: Vec<(&[&str], &str, Value)> = vec![
            (
                &["quarantineconfig"],
                "quarantineconfig",
                json!({ "action": "list" }),
            ),
            (
                &[
                    "quarantineconfig",
                    "new",
                    "--name",
                    "Legal",
                    "--retention",
                    "1h",
                    "--action",
                    "release",
                    "--exempt-free-up",
                    "--x-header",
                    "X-Released:yes",
                    "--access",
                    "alice, Operator",
                ],
                "quarantineconfig",
                json!({ "action": "new", "name": "Legal", "settings": {
                    "retention_secs": 3600, "default_action": "release", "exempt_free_up": true,
                    "subject_prepend": null, "subject_append": null, "x_header": "X-Released:yes",
                    "strip_attachments": null, "access": ["alice", "Operator"] } }),
            ),
            (
                &[
                    "quarantineconfig",
                    "edit",
                    "Policy",
                    "--no-exempt-free-up",
                    "--subject-prepend",
                    "",
                ],
                "quarantineconfig",
                json!({ "action": "edit", "name": "Policy", "settings": {
                    "retention_secs": null, "default_action": null, "exempt_free_up": false,
                    "subject_prepend": "", "subject_append": null, "x_header": null,
                    "strip_attachments": null, "access": null } }),
            ),
            (
                &["quarantineconfig", "delete", "Legal"],
                "quarantineconfig",
                json!({ "action": "delete", "name": "Legal" }),
            ),
            (
                &["quarantine", "show", "482"],
                "quarantine",
                json!({ "action": "show", "mid": 482 }),
            ),
            (
                &[
                    "quarantine",
                    "search",
                    "--quarantine",
                    "Policy",
                    "--from",
                    "2025-06-10",
                    "--to",
                    "2025-06-10",
                    "--rule",
                    "OUTB-1",
                    "--limit",
                    "5",
                ],
                "quarantine",
                json!({ "action": "search", "offset": 0, "limit": 5, "query": {
                    "quarantine": "Policy", "sender": null, "recipient": null, "subject": null,
                    "from": 1_749_513_600u64, "to": 1_749_599_999u64, "reason": "OUTB-1",
                    "reason_kind": "outbreak rule", "attachment": null, "gateway": null } }),
            ),
            (
                &[
                    "quarantine",
                    "release",
                    "482",
                    "483",
                    "--quarantine",
                    "Policy",
                ],
                "quarantine",
                json!({ "action": "release", "mids": [482, 483], "all_results": false, "quarantine": "Policy",
                        "query": { "quarantine": "Policy", "sender": null, "recipient": null, "subject": null,
                                   "from": null, "to": null, "reason": null, "reason_kind": null, "attachment": null, "gateway": null } }),
            ),
            (
                &["quarantine", "delete", "482", "--yes"],
                "quarantine",
                json!({ "action": "delete", "mids": [482], "all_results": false, "quarantine": null, "query": no_query }),
            ),
            (
                &[
                    "quarantine",
                    "delete",
                    "--all-results",
                    "--reason",
                    "virus:Eicar",
                    "--yes",
                ],
                "quarantine",
                json!({ "action": "delete", "mids": [], "all_results": true, "quarantine": null,
                        "query": { "quarantine": null, "sender": null, "recipient": null, "subject": null,
                                   "from": null, "to": null, "reason": "Eicar", "reason_kind": "virus", "attachment": null, "gateway": null } }),
            ),
            (
                &["quarantine", "delay", "482", "--by", "8h"],
                "quarantine",
                json!({ "action": "delay", "by": "8h", "mids": [482], "all_results": false, "quarantine": null, "query": no_query }),
            ),
            (
                &[
                    "quarantine",
                    "move",
                    "482",
                    "--from",
                    "Policy",
                    "--to",
                    "Legal",
                ],
                "quarantine",
                json!({ "action": "move", "mids": [482], "from": "Policy", "to": "Legal" }),
            ),
            (
                &[
                    "quarantine",
                    "copy",
                    "482",
                    "--to",
                    "a@example.com,b@example.com",
                ],
                "quarantine",
                json!({ "action": "copy", "mid": 482, "to": ["a@example.com", "b@example.com"] }),
            ),
            (
                &[
                    "quarantine",
                    "manage-by-rule",
                    "OUTB-1",
                    "delay",
                    "--by",
                    "1w",
                ],
                "quarantine",
                json!({ "action": "manage-by-rule", "rule": "OUTB-1", "what": "delay", "by": "1w" }),
            ),
            (
                &["quarantine", "sweep", "--at", "1700000000"],
                "quarantine",
                json!({ "action": "sweep", "at": 1_700_000_000u64 }),
            ),
            (&["outbreakstatus"], "outbreakstatus", json!({})),
        ];
        for (args, name, want) in cases {
            let (n, got) = request(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!((n, &got), (name, &want), "{args:?}");
        }
    }

    #[test]
    fn quarantine_rejects_bad_arguments() {
        for args in [
            &["quarantine", "release"][..],
            &["quarantine", "release", "1", "--all-results"],
            &["quarantine", "release", "1", "--sender", "a@b.c"],
            &["quarantine", "delay", "1"],
            &["quarantine", "delay", "1", "--by", "3h"],
            &["quarantine", "move", "1", "--from", "Policy"],
            &["quarantine", "copy", "1"],
            &["quarantine", "search", "--from", "yesterday"],
            &["quarantine", "search", "--from", "2025-13-01"],
            &[
                "quarantine",
                "search",
                "--from",
                "2025-06-11",
                "--to",
                "2025-06-10",
            ],
            &["quarantine", "search", "--reason", "x", "--rule", "y"],
            &["quarantine", "search", "--limit", "0"],
            &["quarantine", "manage-by-rule", "R", "delay"],
            &[
                "quarantine",
                "manage-by-rule",
                "R",
                "release",
                "--by",
                "8h",
                "--yes",
            ],
            &[
                "quarantineconfig",
                "new",
                "--name",
                "X",
                "--retention",
                "0m",
            ],
            &["quarantineconfig", "new", "--name", "X", "--action", "keep"],
            &[
                "quarantineconfig",
                "edit",
                "X",
                "--strip-attachments",
                "--no-strip-attachments",
            ],
        ] {
            // (Confirmation without --yes is checked end to end, where stdin is not a
            // terminal; here it would prompt a developer running the tests.)
            assert!(request(args).is_err(), "{args:?} was accepted");
        }
    }

    #[test]
    fn quarantine_dates() {
        let cases = [
            ("0", false, 0),
            ("1700000000", false, 1_700_000_000),
            ("1970-01-02", false, 86_400),
            ("1970-01-02", true, 2 * 86_400 - 1),
            ("1970-01-01 01:02", true, 3_720),
            ("1970-01-01T01:02:03", false, 3_723),
        ];
        for (s, end, want) in cases {
            assert_eq!(parse_date(s, end).unwrap(), want, "{s}");
        }
        for bad in [
            "",
            "2025-02-30",
            "2025-06",
            "12:00",
            "2025-06-10 25:00",
            "1969-12-31",
        ] {
            assert!(parse_date(bad, false).is_err(), "{bad:?}");
        }
    }
}
