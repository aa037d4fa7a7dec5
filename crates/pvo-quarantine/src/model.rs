//! The types of the quarantine model (`docs/appliance.md`, Quarantines): quarantines and their settings, a message and
//! its memberships, actions and what they return.
//!
//! Everything here is plain data. The rules that decide what an action does live in
//! `semantics`; the storage in `store` and `sqlite`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A message's id in the store (on the manager this is the manager's MID). Never reused.
pub type MsgId = u64;

/// A quarantine's id (the `#` column of `quarantineconfig list`). Built-ins are 1 to 4.
pub type QuarantineId = u64;

/// The four quarantines every store has. They cannot be deleted or renamed; their settings
/// can be edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Builtin {
    Policy,
    Virus,
    Outbreak,
    /// Catches messages whose filter names a quarantine that does not exist (any more), and
    /// the messages of a custom quarantine that is deleted.
    Unclassified,
}

impl Builtin {
    /// All built-ins in id order.
    pub const ALL: [Builtin; 4] = [
        Builtin::Policy,
        Builtin::Virus,
        Builtin::Outbreak,
        Builtin::Unclassified,
    ];

    /// The fixed id of the built-in.
    pub fn id(self) -> QuarantineId {
        match self {
            Builtin::Policy => 1,
            Builtin::Virus => 2,
            Builtin::Outbreak => 3,
            Builtin::Unclassified => 4,
        }
    }

    /// The name, as the appliance spells it.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Policy => "Policy",
            Builtin::Virus => "Virus",
            Builtin::Outbreak => "Outbreak",
            Builtin::Unclassified => "Unclassified",
        }
    }

    /// The settings a new store starts with: the appliance's defaults (Policy 10 days and
    /// delete, Virus 30 days and delete, Outbreak 1 day and release — a rescan decides —,
    /// Unclassified 30 days and release). Virus is exempt from free-up-space so that a full
    /// store never releases a virus early.
    pub fn default_settings(self) -> QuarantineSettings {
        const DAY: u64 = 86_400;
        let (retention_secs, default_action, exempt) = match self {
            Builtin::Policy => (10 * DAY, DefaultAction::Delete, false),
            Builtin::Virus => (30 * DAY, DefaultAction::Delete, true),
            Builtin::Outbreak => (DAY, DefaultAction::Release, false),
            Builtin::Unclassified => (30 * DAY, DefaultAction::Release, false),
        };
        QuarantineSettings {
            retention_secs,
            default_action,
            exempt_from_free_up: exempt,
            early_release: EarlyReleaseActions::default(),
            access: AccessList::default(),
        }
    }

    /// The built-in with this name (case-insensitive), if any.
    pub fn from_name(name: &str) -> Option<Builtin> {
        Builtin::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(name))
    }
}

/// What happens to a message when its scheduled exit passes (and when free-up-space picks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefaultAction {
    Delete,
    Release,
}

impl DefaultAction {
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultAction::Delete => "Delete",
            DefaultAction::Release => "Release",
        }
    }
}

/// A header that early release adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XHeader {
    pub name: String,
    pub value: String,
}

/// What a quarantine does to a message it releases before the message's scheduled exit.
/// Empty (the default) means the message leaves byte-identical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EarlyReleaseActions {
    /// Text put before the subject (a space is added between them).
    pub subject_prepend: Option<String>,
    /// Text put after the subject (a space is added between them).
    pub subject_append: Option<String>,
    /// A header added at the end of the header section.
    pub x_header: Option<XHeader>,
    /// Replace every attachment with a short text part naming it.
    pub strip_attachments: bool,
}

impl EarlyReleaseActions {
    /// True when applying these actions changes nothing.
    pub fn is_empty(&self) -> bool {
        self.subject_prepend.as_deref().is_none_or(str::is_empty)
            && self.subject_append.as_deref().is_none_or(str::is_empty)
            && self.x_header.is_none()
            && !self.strip_attachments
    }
}

/// Who may search, view and process the messages of a quarantine (besides administrators,
/// who may always). Enforcement is the caller's: the store only keeps the list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessList {
    pub users: Vec<String>,
    pub roles: Vec<String>,
}

impl AccessList {
    /// True if the user, or one of the roles the user has, is on the list.
    pub fn allows(&self, user: &str, roles: &[&str]) -> bool {
        self.users.iter().any(|u| u.eq_ignore_ascii_case(user))
            || self
                .roles
                .iter()
                .any(|r| roles.iter().any(|have| r.eq_ignore_ascii_case(have)))
    }
}

/// The editable settings of a quarantine. The name is not a setting: it is fixed at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineSettings {
    /// How long a message stays before its scheduled exit, in seconds.
    pub retention_secs: u64,
    pub default_action: DefaultAction,
    /// When true, free-up-space never touches this quarantine.
    pub exempt_from_free_up: bool,
    pub early_release: EarlyReleaseActions,
    pub access: AccessList,
}

/// A quarantine as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantine {
    pub id: QuarantineId,
    pub name: String,
    pub builtin: bool,
    pub settings: QuarantineSettings,
}

/// Which engine put a message into a quarantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReasonKind {
    ContentFilter,
    Dlp,
    Virus,
    Outbreak,
    Other,
}

impl ReasonKind {
    /// The prefix in log lines and the value stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::ContentFilter => "content filter",
            ReasonKind::Dlp => "DLP policy",
            ReasonKind::Virus => "virus",
            ReasonKind::Outbreak => "outbreak rule",
            ReasonKind::Other => "other",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<ReasonKind> {
        [
            ReasonKind::ContentFilter,
            ReasonKind::Dlp,
            ReasonKind::Virus,
            ReasonKind::Outbreak,
            ReasonKind::Other,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Why a message is in a quarantine: the engine and the filter name, DLP policy, virus name
/// or outbreak rule id. Displays as in the log line: `content filter:policy_violation`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Reason {
    pub kind: ReasonKind,
    pub name: String,
}

impl Reason {
    pub fn new(kind: ReasonKind, name: impl Into<String>) -> Reason {
        Reason {
            kind,
            name: name.into(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ReasonKind::Other => f.write_str(&self.name),
            kind => write!(f, "{}:{}", kind.as_str(), self.name),
        }
    }
}

/// Why a membership left its quarantine; the text in parentheses in the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cause {
    /// An administrator (or an API client) asked for it.
    Manual,
    /// The scheduled exit passed and the default action ran.
    Expired,
    /// The store was over its quota and the default action ran early.
    FreeUpSpace,
    /// An outbreak rescan after a rules update decided it.
    Rescan,
    /// The gateway became central and the message went to the manager (migration of the
    /// local quarantines, [`crate::Store::mark_migrated`]).
    Migrated,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Manual => "manual",
            Cause::Expired => "expired",
            Cause::FreeUpSpace => "free up space",
            Cause::Rescan => "rescan",
            Cause::Migrated => "migrated",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Cause> {
        [
            Cause::Manual,
            Cause::Expired,
            Cause::FreeUpSpace,
            Cause::Rescan,
            Cause::Migrated,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who does an action and why; recorded in the message's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The user name (or `system` for the sweeper).
    pub who: String,
    pub cause: Cause,
}

impl Actor {
    /// An administrator's action: cause `manual`.
    pub fn manual(who: impl Into<String>) -> Actor {
        Actor {
            who: who.into(),
            cause: Cause::Manual,
        }
    }

    /// The store's own action (expiry, free-up-space).
    pub fn system(cause: Cause) -> Actor {
        Actor {
            who: "system".into(),
            cause,
        }
    }
}

/// The state of a message as a whole. It only moves forward:
/// `Held → Released → Delivered`, `Held → Deleted` or `Held → Migrated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// In at least one quarantine.
    Held,
    /// Released from all its quarantines; the caller is delivering it and has not yet
    /// confirmed (see `Store::confirm_delivery`). The bytes are still stored.
    Released,
    /// Released and handed to the delivery queue; the bytes are gone.
    Delivered,
    /// Deleted from a quarantine, hence never delivered; the bytes are gone.
    Deleted,
    /// Handed over, held in the same quarantines with the same exits, to the central
    /// quarantines of a manager (a gateway that became central); the bytes are gone and
    /// `delivery_ref` names the transfer. Neither released nor deleted here.
    Migrated,
}

impl MessageState {
    pub(crate) fn code(self) -> i64 {
        match self {
            MessageState::Held => 0,
            MessageState::Released => 1,
            MessageState::Delivered => 2,
            MessageState::Deleted => 3,
            MessageState::Migrated => 4,
        }
    }

    pub(crate) fn from_code(c: i64) -> Option<MessageState> {
        match c {
            0 => Some(MessageState::Held),
            1 => Some(MessageState::Released),
            2 => Some(MessageState::Delivered),
            3 => Some(MessageState::Deleted),
            4 => Some(MessageState::Migrated),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Held => "held",
            MessageState::Released => "released",
            MessageState::Delivered => "delivered",
            MessageState::Deleted => "deleted",
            MessageState::Migrated => "migrated",
        }
    }
}

/// The state of one membership: `Held → Released`, `Held → Deleted` or `Held → Migrated`
/// (the message went to the manager with the whole message), never back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MembershipState {
    Held,
    Released,
    Deleted,
    Migrated,
}

impl MembershipState {
    pub(crate) fn code(self) -> i64 {
        match self {
            MembershipState::Held => 0,
            MembershipState::Released => 1,
            MembershipState::Deleted => 2,
            MembershipState::Migrated => 3,
        }
    }

    pub(crate) fn from_code(c: i64) -> Option<MembershipState> {
        match c {
            0 => Some(MembershipState::Held),
            1 => Some(MembershipState::Released),
            2 => Some(MembershipState::Deleted),
            3 => Some(MembershipState::Migrated),
            _ => None,
        }
    }
}

/// An attachment's name and decoded size, as the scanner saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub name: String,
    pub size: u64,
}

/// One quarantine a new message goes to.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    /// The quarantine's name; an unknown name holds the message in Unclassified.
    pub quarantine: String,
    pub reason: Reason,
    /// Free-form JSON: why it was held (matched content, verdicts, threat level, ...).
    pub details: serde_json::Value,
    /// The scheduled exit; `None` means now + the quarantine's retention. A CPQ transfer
    /// carries the gateway's exit; outbreak holds choose it by threat level.
    pub exit_at: Option<u64>,
}

/// A message to quarantine: the envelope, the raw bytes and where it goes.
#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    /// The transfer id: storing the same key twice returns the first message and changes
    /// nothing, so a retried CPQ transfer is quarantined once.
    pub idempotency_key: String,
    /// The originating gateway (its name or enrollment id).
    pub gateway: String,
    /// The MID the gateway gave the message.
    pub gateway_mid: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    /// When the gateway received the message (unix seconds).
    pub received: u64,
    pub subject: String,
    pub attachments: Vec<Attachment>,
    /// Anything else the caller wants to keep with the envelope (ICID, client address, mail
    /// policy, ...). Stored and returned as is.
    pub meta: serde_json::Value,
    /// The message as received, CRLF line ends. Its length is the message size.
    pub raw: Vec<u8>,
    pub holds: Vec<Hold>,
}

/// A membership as the caller needs it to log `quarantined to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldIn {
    pub quarantine: String,
    pub reason: Reason,
    pub exit_at: u64,
}

/// What `quarantine()` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inserted {
    pub msg_id: MsgId,
    /// False when the idempotency key was seen before: nothing was changed and `msg_id` is
    /// the first message's id. Log `quarantined to` only when true.
    pub created: bool,
    /// The message's memberships (for a repeat, as they are now).
    pub held_in: Vec<HeldIn>,
    /// True when the store is over its quota after this insert: run `free_up_space` soon.
    pub over_quota: bool,
}

/// One membership of a stored message.
#[derive(Debug, Clone, PartialEq)]
pub struct Membership {
    pub quarantine: String,
    pub reason: Reason,
    pub details: serde_json::Value,
    pub entered_at: u64,
    pub exit_at: u64,
    pub state: MembershipState,
    /// When, by whom and why it left (`None` while held).
    pub left_at: Option<u64>,
    pub left_by: Option<String>,
    pub cause: Option<Cause>,
    /// Released before its scheduled exit: the quarantine's early-release actions apply.
    pub released_early: bool,
}

/// Everything stored about a message (for `quarantine show`).
#[derive(Debug, Clone, PartialEq)]
pub struct MessageInfo {
    pub msg_id: MsgId,
    pub idempotency_key: String,
    pub gateway: String,
    pub gateway_mid: u64,
    pub sender: String,
    pub recipients: Vec<String>,
    pub received: u64,
    pub size: u64,
    pub subject: String,
    pub attachments: Vec<Attachment>,
    pub meta: serde_json::Value,
    pub state: MessageState,
    pub memberships: Vec<Membership>,
    /// Set by `confirm_delivery`: the downstream queue id the caller handed the message to.
    pub delivery_ref: Option<String>,
}

/// One line of a message's action history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub at: u64,
    pub who: String,
    /// `quarantined`, `released`, `deleted`, `delayed`, `moved`, `copy sent`,
    /// `released from all`, `delivered`, `quarantine deleted`, `migrated`.
    pub action: String,
    pub quarantine: Option<String>,
    pub detail: String,
}

/// The "delay scheduled exit" choices of the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayBy {
    Hours8,
    Hours24,
    Hours48,
    Week,
}

impl DelayBy {
    pub fn secs(self) -> u64 {
        match self {
            DelayBy::Hours8 => 8 * 3600,
            DelayBy::Hours24 => 24 * 3600,
            DelayBy::Hours48 => 48 * 3600,
            DelayBy::Week => 7 * 86_400,
        }
    }
}

/// An action on a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Release,
    Delete,
    /// Push the scheduled exit out: new exit = max(exit, now) + the period.
    Delay(DelayBy),
    /// Move to another quarantine, keeping the scheduled exit, reason and details.
    Move {
        to: String,
    },
}

/// Which of a message's memberships an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The membership in this quarantine.
    Quarantine(String),
    /// Every membership (release from all, delete, delay all). Not valid for `Move`.
    All,
    /// Every membership held because of this outbreak rule (manage by rule).
    OutbreakRule(String),
}

/// A change to one membership, for the log lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Released {
        quarantine: String,
        cause: Cause,
        early: bool,
    },
    Deleted {
        quarantine: String,
        cause: Cause,
    },
    Delayed {
        quarantine: String,
        from: u64,
        to: u64,
    },
    Moved {
        from: String,
        to: String,
    },
}

/// What the caller must do after an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The last quarantine released the message: deliver it (read the bytes with
    /// `Store::raw`, apply `apply_early_release` with these actions — those of the
    /// quarantines that released it before its exit — then queue it and call
    /// `Store::confirm_delivery`).
    Deliver {
        msg_id: MsgId,
        early_release_actions: Vec<EarlyReleaseActions>,
    },
    /// Released (or delayed, or moved) but still in these quarantines.
    StillHeld {
        msg_id: MsgId,
        remaining: Vec<String>,
    },
    /// The message was deleted: it is never delivered.
    Deleted { msg_id: MsgId },
    /// Nothing changed: the action had already been done (repeat-safe) or there was nothing
    /// to do. Reports the message's current state and where it is still held.
    Unchanged {
        msg_id: MsgId,
        state: MessageState,
        remaining: Vec<String>,
    },
}

/// The result of an action on one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionReport {
    pub msg_id: MsgId,
    /// The MID the gateway gave the message (the MID in gateway log lines).
    pub gateway_mid: u64,
    /// What changed, in order; empty for `Outcome::Unchanged`.
    pub changes: Vec<Change>,
    pub outcome: Outcome,
}

/// A message released from all quarantines whose delivery is not confirmed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDelivery {
    pub msg_id: MsgId,
    pub gateway: String,
    pub gateway_mid: u64,
    pub early_release_actions: Vec<EarlyReleaseActions>,
}

/// A copy to send (the caller sends it; only administrators may ask — the caller checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyToSend {
    pub msg_id: MsgId,
    pub raw: Vec<u8>,
    pub to: Vec<String>,
    pub requested_by: String,
}

/// What deleting a custom quarantine did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineDeleted {
    pub name: String,
    /// Messages that were held in it and are now held in Unclassified (same exit, reason).
    pub moved_to_unclassified: Vec<MsgId>,
}

/// Space and messages of one quarantine (a `quarantineconfig list` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuarantineUsage {
    pub id: QuarantineId,
    pub name: String,
    pub builtin: bool,
    pub retention_secs: u64,
    pub default_action: DefaultAction,
    pub exempt_from_free_up: bool,
    /// Held messages.
    pub messages: u64,
    /// Sum of the sizes of the held messages.
    pub bytes: u64,
}

/// Space used per quarantine and in total.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    pub quarantines: Vec<QuarantineUsage>,
    /// Held messages, each counted once even when it is in several quarantines.
    pub total_messages: u64,
    /// Their bytes, each message counted once (a message is stored once).
    pub total_bytes: u64,
    pub quota_bytes: Option<u64>,
}
