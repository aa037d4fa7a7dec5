//! The `data` of the commands the REST API exposes, as types: a handler fills one of
//! these and serialises it into `Response.data`, and the OpenAPI document
//! (`web::openapi`) is derived from the same types, so what the document promises is what
//! the handlers send. The field names and shapes are those `pvo COMMAND --json` has
//! always printed; scripts read them.
//!
//! Types of other modules that appear in a reply (`state::CounterSet`,
//! `queue::HostStatus`, `state::ListenerState`) are mirrored here rather than given a
//! schema where they live, so the runtime modules do not depend on the document's crate.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Serialises a reply into `Response.data`. A reply is plain data (strings, numbers,
/// options, vectors, JSON values), which serde_json always serialises.
pub fn data<T: Serialize>(reply: &T) -> Value {
    serde_json::to_value(reply).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------

/// `status`: the node's state, its counters and gauges.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Status)]
pub struct StatusReply {
    /// `Online`, or `Offline` when every listener is suspended.
    #[schema(inline)]
    pub system_status: SystemStatus,
    /// Present when the node serves its self-signed certificate (clients cannot verify it).
    #[schema(required = true)]
    pub self_signed_certificate: Option<SelfSigned>,
    /// Unix seconds.
    pub up_since: u64,
    pub uptime_seconds: u64,
    pub delivery_suspended: bool,
    pub listeners: Vec<ListenerRow>,
    /// Where the SSH server listens (null: off).
    #[schema(required = true)]
    pub ssh: Option<String>,
    /// Where the HTTPS server listens (null: off).
    #[schema(required = true)]
    pub web: Option<String>,
    pub counters: CounterTable,
    pub gauges: StatusGauges,
    /// Each feature: keyed or not, until when, on or off on this machine (`featurekey`).
    pub features: Vec<FeatureRow>,
    /// The machine's cluster (null: not in one).
    #[schema(required = true)]
    pub cluster: Option<ClusterState>,
}

/// How a cluster member stands with its cluster's store.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterState {
    /// The cluster's name, as last seen (null before the first connection).
    #[schema(required = true)]
    pub cluster: Option<String>,
    pub machine: String,
    pub connected: bool,
    /// Held disconnected by `clusterconfig disconnect`.
    pub held: bool,
    /// Unix seconds since it is connected or disconnected.
    pub since: u64,
    /// Why it is disconnected (null when connected).
    #[schema(required = true)]
    pub why: Option<String>,
    /// The revision it runs.
    pub revision: u64,
    /// The newest revision it knows of.
    pub head: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum SystemStatus {
    Online,
    Offline,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SelfSigned {
    /// The servers that serve it.
    pub served_by: Vec<String>,
    /// What the certificate is, in a sentence.
    pub certificate: String,
}

/// One listener of `status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListenerRow {
    pub name: String,
    /// `ADDRESS:PORT`.
    pub address: String,
    pub suspended: bool,
}

impl From<&crate::core::state::ListenerState> for ListenerRow {
    fn from(l: &crate::core::state::ListenerState) -> ListenerRow {
        ListenerRow {
            name: l.name.clone(),
            address: l.address.to_string(),
            suspended: l.suspended,
        }
    }
}

/// The three columns of the counters table.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CounterTable {
    /// Since `resetcounters`.
    pub reset: Counters,
    /// Since the node started.
    pub uptime: Counters,
    /// Since the data directory was made.
    pub lifetime: Counters,
}

/// One column of the counters table.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Counters {
    pub connections_in: u64,
    pub connections_open: u64,
    pub messages_received: u64,
    pub recipients_received: u64,
    pub rejected_recipients: u64,
    pub soft_bounced: u64,
    pub delivered_rcpts: u64,
    pub bounced_rcpts: u64,
}

impl From<&crate::core::state::CounterSet> for Counters {
    fn from(c: &crate::core::state::CounterSet) -> Counters {
        Counters {
            connections_in: c.connections_in,
            connections_open: c.connections_open,
            messages_received: c.messages_received,
            recipients_received: c.recipients_received,
            rejected_recipients: c.rejected_recipients,
            soft_bounced: c.soft_bounced,
            delivered_rcpts: c.delivered_rcpts,
            bounced_rcpts: c.bounced_rcpts,
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StatusGauges {
    pub connections_in: u64,
    pub connections_out: u64,
    pub active_recipients: u64,
    pub messages_in_queue: u64,
    pub kilobytes_used: u64,
    /// Unix seconds; null when the queue is empty.
    #[schema(required = true)]
    pub oldest_message_received_at: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// featurekey
// ---------------------------------------------------------------------------------------

/// `featurekey`: the machine's feature keys and what they turn on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(as = FeatureKeys)]
pub struct FeatureKeysReply {
    /// Every feature, in the order antivirus, outbreak, dlp.
    pub features: Vec<FeatureRow>,
    /// Whether the keys are recorded (`DATA_DIR/featurekeys.json`); without the file
    /// every feature is on with a key that never expires.
    pub recorded: bool,
}

/// One feature of `featurekey` (and of `status` and `showconfig`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FeatureRow {
    /// The feature's name in commands.
    #[schema(inline)]
    pub feature: FeatureName,
    /// How the appliance names it (`Anti-Virus`).
    pub title: String,
    /// Whether the machine holds a key for it (perhaps expired).
    pub keyed: bool,
    /// The key (a licence reference); null without one.
    #[schema(required = true)]
    pub key: Option<String>,
    /// When the key stops working, Unix seconds (the first second it is off); null: it
    /// does not expire, or there is no key.
    #[schema(required = true)]
    pub expires: Option<u64>,
    /// The last second the key works, `YYYY-MM-DD HH:MM:SS` GMT; null as for `expires`.
    #[schema(required = true)]
    pub valid_until: Option<String>,
    /// Whether the feature is on on this machine now (an unexpired key).
    pub active: bool,
    /// Whether the configuration's mail policies use it.
    pub configured: bool,
    /// `on`, `off`, or why a feature the configuration uses is off, with the command
    /// that turns it on.
    pub state: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FeatureName {
    Antivirus,
    Outbreak,
    Dlp,
}

// ---------------------------------------------------------------------------------------
// tophosts
// ---------------------------------------------------------------------------------------

/// `tophosts`: delivery status per destination host.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = TopHosts)]
pub struct TopHostsReply {
    /// The order asked for.
    pub sort: String,
    pub hosts: Vec<TopHost>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TopHost {
    pub host: String,
    pub active_recipients: u64,
    pub connections_out: u64,
    pub delivered_recipients: u64,
    pub soft_bounced: u64,
    pub hard_bounced: u64,
    /// The host was down at the last delivery attempt.
    pub down: bool,
    #[schema(required = true)]
    pub last_error: Option<String>,
}

impl From<&crate::core::queue::HostStatus> for TopHost {
    fn from(h: &crate::core::queue::HostStatus) -> TopHost {
        TopHost {
            host: h.host.clone(),
            active_recipients: h.active_recipients as u64,
            connections_out: h.connections_out as u64,
            delivered_recipients: h.delivered_recipients,
            soft_bounced: h.soft_bounced,
            hard_bounced: h.hard_bounced,
            down: h.down,
            last_error: h.last_error.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// quarantineconfig list
// ---------------------------------------------------------------------------------------

/// `quarantineconfig list`: the quarantines and the space they use.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Quarantines)]
pub struct QuarantinesReply {
    pub quarantines: Vec<QuarantineRow>,
    pub total_messages: u64,
    pub total_bytes: u64,
    /// The store's quota (null: none).
    #[schema(required = true)]
    pub quota_bytes: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QuarantineRow {
    pub id: u64,
    pub name: String,
    pub builtin: bool,
    pub space_used_bytes: u64,
    pub messages: u64,
    pub retention_secs: u64,
    /// The retention in words (`10 days`).
    pub retention: String,
    pub default_action: String,
    pub exempt_free_up: bool,
    /// What an early release changes (subject, X-header, attachments).
    #[schema(required = true)]
    pub early_release: Option<Value>,
    /// The users and roles named on its access list.
    #[schema(required = true)]
    pub access: Option<Value>,
}

// ---------------------------------------------------------------------------------------
// quarantine search
// ---------------------------------------------------------------------------------------

/// `quarantine search`: one page of results.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = SearchResults)]
pub struct SearchReply {
    pub total: u64,
    /// False while `total` is the counting cap (at least that many).
    pub total_exact: bool,
    pub offset: u64,
    pub limit: u64,
    pub messages: Vec<SearchHit>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SearchHit {
    /// The MID this node logged for the message.
    pub mid: u64,
    /// The gateway it came from (empty: this node).
    pub gateway: String,
    pub gateway_mid: u64,
    /// Unix seconds.
    pub received: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub subject: String,
    pub size: u64,
    /// The quarantines the caller may see that hold it.
    pub quarantines: Vec<HitQuarantine>,
    /// Unix seconds: its exit from the searched quarantine, else the earliest one.
    #[schema(required = true)]
    pub scheduled_exit: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HitQuarantine {
    pub name: String,
    pub reason: String,
    pub reason_kind: String,
    pub reason_name: String,
    pub exit_at: u64,
}

// ---------------------------------------------------------------------------------------
// quarantine show
// ---------------------------------------------------------------------------------------

/// `quarantine show`: one message, its quarantines, headers, parts and history.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageReply {
    pub mid: u64,
    /// The store's id of the message.
    pub msg_id: u64,
    pub gateway: String,
    pub gateway_mid: u64,
    pub state: String,
    pub sender: String,
    pub recipients: Vec<String>,
    pub received: u64,
    pub size: u64,
    pub subject: String,
    pub attachments: Vec<AttachmentRow>,
    /// What the receiving node recorded (source IP, listener, ICID...).
    pub meta: Value,
    pub quarantines: Vec<MembershipRow>,
    pub headers: Vec<HeaderRow>,
    pub parts: Vec<PartRow>,
    /// Why the message cannot be parsed within the scanning limits (null: it can).
    #[schema(required = true)]
    pub unscannable: Option<String>,
    pub history: Vec<HistoryRow>,
    #[schema(required = true)]
    pub delivery_ref: Option<String>,
    /// The matched content in `details` is replaced: the caller's role may not see it.
    pub matched_content_hidden: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AttachmentRow {
    pub name: String,
    pub size: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MembershipRow {
    pub quarantine: String,
    pub state: String,
    pub reason: String,
    pub reason_kind: String,
    pub reason_name: String,
    /// Why held: filter evidence, DLP samples, the virus, outbreak rules (null: nothing).
    pub details: Value,
    pub entered_at: u64,
    pub exit_at: u64,
    /// What happens at the exit (null: the quarantine is gone).
    #[schema(required = true)]
    pub default_action: Option<String>,
    #[schema(required = true)]
    pub left_at: Option<u64>,
    #[schema(required = true)]
    pub left_by: Option<String>,
    #[schema(required = true)]
    pub cause: Option<String>,
    pub released_early: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HeaderRow {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PartRow {
    pub content_type: String,
    #[schema(required = true)]
    pub filename: Option<String>,
    pub attachment: bool,
    pub size: u64,
    /// The true file type, by magic bytes.
    pub file_type: String,
    pub sha256: String,
    pub depth: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryRow {
    pub at: u64,
    pub who: String,
    pub action: String,
    #[schema(required = true)]
    pub quarantine: Option<String>,
    pub detail: String,
}

// ---------------------------------------------------------------------------------------
// quarantine release|delete|delay|move
// ---------------------------------------------------------------------------------------

/// `quarantine release|delete|delay|move`: what was done, per message.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
#[schema(as = ActionResults)]
pub struct ActReply {
    pub results: Vec<ActResult>,
    /// Messages that changed.
    pub changed: u64,
    /// Messages refused (each one a result with its error).
    pub errors: u64,
}

/// A message acted on, or one refused.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum ActResult {
    Done(ActDone),
    Refused(ActRefused),
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActDone {
    pub mid: u64,
    #[schema(inline)]
    pub outcome: Outcome,
    /// The mail_logs lines of the action.
    pub lines: Vec<String>,
    /// The quarantines that still hold it.
    pub remaining: Vec<String>,
    /// The MID it was queued for delivery as (released from all quarantines).
    #[schema(required = true)]
    pub delivered_as: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum Outcome {
    #[serde(rename = "delivered")]
    Delivered,
    #[serde(rename = "still held")]
    StillHeld,
    #[serde(rename = "deleted")]
    Deleted,
    #[serde(rename = "unchanged")]
    Unchanged,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActRefused {
    /// `MID N` (or `quarantine message N` when the store no longer knows the MID).
    pub mid: String,
    pub error: String,
}

// ---------------------------------------------------------------------------------------
// quarantine copy
// ---------------------------------------------------------------------------------------

/// `quarantine copy`: the copy's new MID.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Copy)]
pub struct CopyReply {
    pub mid: u64,
    /// The recipients of the copy, as stored.
    pub to: Vec<String>,
    pub copy_mid: u64,
}

// ---------------------------------------------------------------------------------------
// applianceconfig status
// ---------------------------------------------------------------------------------------

/// One gateway of `applianceconfig status` on a manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Gateway {
    pub id: String,
    pub address: String,
    pub port: u16,
    #[schema(inline)]
    pub state: GatewayState,
    /// The state and what to do, in a sentence.
    pub state_text: String,
    /// The gateway's PVO mode, from the last check over SSH.
    #[schema(required = true)]
    pub mode: Option<String>,
    /// Recipients queued for the.cpq.host on the gateway.
    #[schema(required = true)]
    pub backlog: Option<u64>,
    /// The gateway's migration progress (pvoconfig status), or null.
    pub migration: Value,
    /// The cluster the gateway is a machine of, from the last check over SSH.
    #[serde(default)]
    #[schema(required = true)]
    pub cluster: Option<String>,
    #[schema(required = true)]
    pub checked_at: Option<u64>,
    #[schema(required = true)]
    pub ssh_error: Option<String>,
    pub transfers_received: u64,
    #[schema(required = true)]
    pub last_transfer_at: Option<u64>,
    #[schema(required = true)]
    pub last_refusal: Option<LastRefusal>,
    pub held_messages: u64,
    pub releases_waiting: u64,
    #[schema(required = true)]
    pub last_release_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GatewayState {
    Online,
    Backlog,
    Unreachable,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LastRefusal {
    pub at: u64,
    pub text: String,
}

// ---------------------------------------------------------------------------------------
// clusterconfig and clustercheck
// ---------------------------------------------------------------------------------------
//
// `cluster_cmds` writes these shapes as JSON; the REST API reads its `data` back into
// them (a shape they disagree on is a bug, answered 500 rather than outside the
// document), so the document and the answers stay one.

/// `clusterconfig list`: the cluster's groups and machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = Cluster)]
pub struct ClusterList {
    /// The cluster's name.
    pub cluster: String,
    /// The newest revision of the cluster's configuration.
    pub revision: u64,
    /// False: as this machine last saw it (it is disconnected from the cluster's store).
    pub fresh: bool,
    pub groups: Vec<ClusterGroup>,
    /// This machine's name in the cluster.
    pub machine: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterGroup {
    pub name: String,
    pub machines: Vec<ClusterMachine>,
}

/// One machine of a group, as the store reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterMachine {
    pub name: String,
    pub address: String,
    /// Connected to the cluster's store now.
    pub connected: bool,
    /// The revision it runs (null: none yet).
    #[schema(required = true)]
    pub revision: Option<u64>,
}

/// How a machine stands with its cluster (`clusterconfig connstatus`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterStatus {
    /// The machine's name in its cluster (null: not in one).
    #[schema(required = true)]
    pub machine: Option<String>,
    pub connected: bool,
    /// Held disconnected by `clusterconfig disconnect`.
    pub held: bool,
    /// Since when (Unix seconds) it is connected or disconnected.
    pub since: u64,
    /// Why it is disconnected (null when connected).
    #[schema(required = true)]
    pub why: Option<String>,
    /// The revision it runs: its last good configuration while disconnected.
    pub revision: u64,
    /// The newest revision it knows of.
    pub head: u64,
}

/// `clusterconfig connstatus`: `cluster` false (and no status) on a machine in no cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ClusterConnection)]
pub struct ClusterConnstatus {
    pub cluster: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ClusterStatus>,
}

/// One difference `clustercheck` found, with the commands that resolve it (any one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterFinding {
    /// The level or machine it is about (`machine:gw1`, `group:east`, `gw2`).
    pub subject: String,
    pub text: String,
    pub resolve: Vec<String>,
}

/// `clustercheck`: the differences between levels and machines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(as = ClusterCheck)]
pub struct ClusterCheckReply {
    pub cluster: String,
    pub revision: u64,
    /// False: as this machine last saw the cluster (disconnected).
    pub fresh: bool,
    pub findings: Vec<ClusterFinding>,
}

/// `clusterconfig jointoken`: a new single-use join token, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterJoinToken {
    /// The token (`pvojoin1.MEMBER.HOSTKEY.SECRET`) for `clusterconfig join --token`.
    pub token: String,
    /// The first 8 hex digits of the SHA-256 of its secret (what the list shows).
    pub hash: String,
    /// The member's SSH address the joining machine logs into.
    pub member: String,
    /// That member's SSH host key (`SHA256:...`), which the joining machine pins.
    pub host_key: String,
    /// Until when it works (UTC).
    pub expires: String,
    pub created_by: String,
}

/// One join token that still works (never the token itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterJoinTokenInfo {
    /// The first 8 hex digits of the SHA-256 of its secret.
    pub hash: String,
    pub created_by: String,
    pub created: String,
    pub expires: String,
}

/// `clusterconfig jointoken list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterJoinTokens {
    pub tokens: Vec<ClusterJoinTokenInfo>,
}

/// `clusterconfig jointoken revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterJoinTokenRevoked {
    pub revoked: ClusterJoinTokenInfo,
}

/// `clusterconfig joininfo`: where a member's store is, for a machine that joins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterJoinInfo {
    /// The cluster's name, as this member last saw it (null before its first connection).
    #[schema(required = true)]
    pub cluster: Option<String>,
    /// The store's address.
    pub url: String,
    /// The CA that signed the store's certificate, PEM (null: none).
    #[schema(required = true)]
    pub ca: Option<String>,
    /// The member's own name.
    pub machine: String,
}

/// `clusterconfig create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterCreated {
    pub cluster: String,
    pub machine: String,
    pub revision: u64,
    /// The sections of this machine's file that became the cluster's.
    pub cluster_sections: Vec<String>,
    /// The machine runs the new revision already.
    pub applied: bool,
    /// How many users this machine had: the cluster's user base now.
    pub users: u64,
}

/// `clusterconfig join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterJoined {
    pub cluster: String,
    pub machine: String,
    pub group: String,
    pub revision: u64,
    /// The sections of this machine's own file the cluster's replaced.
    pub replaced: Vec<String>,
    pub applied: bool,
    /// How many users this machine had before: the cluster's replaced them.
    pub users_before: u64,
    /// How many users the cluster's base holds (null: it had none yet, and this
    /// machine's became the cluster's).
    #[schema(required = true)]
    pub users: Option<u64>,
}

/// `clusterconfig addgroup|setgroup|renamegroup|deletegroup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterMembersChanged {
    pub changed: bool,
    /// What changed, in a sentence (`group east added`).
    pub what: String,
}

/// `clusterconfig removemachine`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterMachineRemoved {
    pub removed: String,
    /// This machine removed itself (it keeps what it inherited).
    pub itself: bool,
}

/// `clusterconfig disconnect|reconnect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterHold {
    /// Held disconnected now.
    pub held: bool,
    pub status: ClusterStatus,
}

/// `clusterconfig copysettings|movesettings|deletesettings`: pending until `commit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterSettingsChanged {
    pub changed: bool,
    pub pending: bool,
    pub summary: String,
    /// The levels the change touched.
    pub levels: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// bulk jobs (the REST API's and the web UI's)
// ---------------------------------------------------------------------------------------

/// A job's progress record (`GET /api/v1/jobs/{id}`, the UI's job page).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Job {
    pub id: String,
    /// Whose job it is.
    pub user: String,
    #[schema(value_type = String, pattern = "^(release|delete|delay|move)$")]
    pub action: String,
    #[schema(value_type = String, pattern = "^(selection|search|rule)$")]
    pub target: String,
    pub description: String,
    #[schema(value_type = String, pattern = "^(running|done|cancelled|stopped)$")]
    pub state: String,
    pub total: u64,
    /// False while the total is the counting cap (at least that many).
    pub total_exact: bool,
    /// Messages handled (acted on or refused).
    pub done: u64,
    pub succeeded: u64,
    /// Messages refused (the audit log has each).
    pub failed: u64,
    /// The first refusal texts.
    pub refusals: Vec<String>,
    pub started_at: u64,
    #[schema(required = true)]
    pub finished_at: Option<u64>,
    pub cancelled: bool,
    /// Why a stopped job stopped.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// The answer to a bulk action: the job started (202).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobStarted {
    pub job: String,
    /// `/api/v1/jobs/{id}`.
    pub status_url: String,
}

/// `GET /api/v1/jobs`: the caller's jobs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Jobs)]
pub struct JobList {
    pub jobs: Vec<Job>,
}

// ---------------------------------------------------------------------------------------
// the REST API's own answers
// ---------------------------------------------------------------------------------------

/// `GET /api/v1/gateways`: this node's PVO state and, on a manager, its gateways.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Gateways {
    #[schema(value_type = String, pattern = "^(gateway|manager)$")]
    pub role: String,
    /// `pvoconfig status` of this node.
    #[schema(value_type = Object)]
    pub pvo: Value,
    /// On a manager, its gateways (`applianceconfig status`); empty on a gateway.
    pub gateways: Vec<Gateway>,
    /// On a manager: releases queued for the gateways.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub releases_waiting_total: Option<u64>,
}

/// A failure: what the command or the API answered.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorReply {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_keep_the_json_shapes_scripts_read() {
        let r = ActReply {
            results: vec![
                ActResult::Done(ActDone {
                    mid: 5,
                    outcome: Outcome::StillHeld,
                    lines: vec!["l".into()],
                    remaining: vec!["Virus".into()],
                    delivered_as: None,
                }),
                ActResult::Refused(ActRefused {
                    mid: "MID 6".into(),
                    error: "e".into(),
                }),
            ],
            changed: 1,
            errors: 1,
        };
        assert_eq!(
            data(&r),
            json!({ "results": [
                { "mid": 5, "outcome": "still held", "lines": ["l"], "remaining": ["Virus"], "delivered_as": null },
                { "mid": "MID 6", "error": "e" },
            ], "changed": 1, "errors": 1 })
        );
        for (o, text) in [
            (Outcome::Delivered, "delivered"),
            (Outcome::StillHeld, "still held"),
            (Outcome::Deleted, "deleted"),
            (Outcome::Unchanged, "unchanged"),
        ] {
            assert_eq!(data(&o), json!(text));
        }
        for (s, text) in [
            (SystemStatus::Online, "Online"),
            (SystemStatus::Offline, "Offline"),
        ] {
            assert_eq!(data(&s), json!(text));
        }
    }

    /// The shapes `cluster_cmds` writes read back into the reply types unchanged.
    #[test]
    fn cluster_replies_read_back_as_the_commands_write_them() {
        fn same<T: serde::de::DeserializeOwned + Serialize>(v: Value) {
            let typed: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{e}: {v}"));
            assert_eq!(data(&typed), v);
        }
        let status = json!({ "machine": "gw1", "connected": false, "held": true, "since": 5,
            "why": "held by clusterconfig disconnect", "revision": 3, "head": 4 });
        same::<ClusterList>(json!({ "cluster": "east", "revision": 4, "fresh": true,
            "groups": [ { "name": "main", "machines": [
                { "name": "gw1", "address": "10.0.0.1", "connected": true, "revision": 4 },
                { "name": "gw2", "address": "10.0.0.2", "connected": false, "revision": null } ] },
                { "name": "west", "machines": [] } ],
            "machine": "gw1" }));
        same::<ClusterConnstatus>(json!({ "cluster": false }));
        same::<ClusterConnstatus>(json!({ "cluster": true, "status": status.clone() }));
        same::<ClusterCheckReply>(json!({ "cluster": "east", "revision": 4, "fresh": false,
            "findings": [ { "subject": "machine:gw2", "text": "t", "resolve": ["clusterconfig movesettings tls --from machine:gw2 --to cluster"] } ] }));
        same::<ClusterCreated>(json!({ "cluster": "east", "machine": "gw1", "revision": 2,
            "cluster_sections": ["listener"], "applied": true, "users": 1 }));
        same::<ClusterJoined>(
            json!({ "cluster": "east", "machine": "gw2", "group": "main",
            "revision": 3, "replaced": [], "applied": false, "users_before": 2, "users": 1 }),
        );
        same::<ClusterJoinInfo>(json!({ "cluster": "east", "url": "postgresql://h/db",
            "ca": null, "machine": "gw1" }));
        same::<ClusterMembersChanged>(json!({ "changed": true, "what": "group west added" }));
        let token = json!({ "hash": "1a2b3c4d", "created_by": "admin",
            "created": "2025-01-31 12:00:00 UTC", "expires": "2025-01-31 13:00:00 UTC" });
        same::<ClusterJoinTokens>(json!({ "tokens": [token.clone()] }));
        same::<ClusterJoinTokenRevoked>(json!({ "revoked": token }));
        same::<ClusterJoinToken>(json!({ "token": "pvojoin1.a.b.c", "hash": "1a2b3c4d",
            "member": "10.0.0.1:2222", "host_key": "SHA256:x", "expires": "2025-01-31 13:00:00 UTC",
            "created_by": "admin" }));
        same::<ClusterMachineRemoved>(json!({ "removed": "gw2", "itself": false }));
        same::<ClusterHold>(json!({ "held": true, "status": status }));
        same::<ClusterSettingsChanged>(json!({ "changed": true, "pending": true,
            "summary": "[tls] moved", "levels": ["cluster", "machine:gw1"] }));
        // Not in a cluster, the status says so with nulls.
        let s = crate::core::cluster::member::Status::default();
        same::<ClusterStatus>(serde_json::to_value(&s).unwrap());
    }

    #[test]
    fn a_gateway_of_applianceconfig_status_reads_back_as_it_was_written() {
        let g = json!({
            "id": "gw1", "address": "127.0.0.1", "port": 7025, "state": "backlog",
            "state_text": "t", "mode": "central", "backlog": 3, "migration": { "total": 1 },
            "checked_at": 9, "ssh_error": null, "transfers_received": 2, "cluster": "edge",
            "last_transfer_at": null, "last_refusal": { "at": 4, "text": "no" },
            "held_messages": 1, "releases_waiting": 0, "last_release_error": null,
        });
        let typed: Gateway = serde_json::from_value(g.clone()).unwrap();
        assert_eq!(typed.state, GatewayState::Backlog);
        assert_eq!(data(&typed), g);
    }
}
