//! The appliance command set as one typed protocol: [`Command`], one variant per
//! command with its arguments typed, built by every channel (the CLI, the admin
//! socket, the SSH shell, the web UI, the REST API, quickstart) and run only by
//! [`super::dispatch_as`].
//!
//! On the admin socket a command is `{"command": NAME, "args": {..}}`, as it always
//! was. [`Command::from_parts`] is the one way from a name and JSON arguments to a
//! command: an unknown command, action or argument is refused there with an
//! [`ErrorKind::Invalid`] naming it, before any permission check or handler. A JSON
//! `null` counts as an absent argument (the CLI sends its unset options as `null`).
//!
//! Commands whose actions share one set of arguments (`interfaceconfig`, `userconfig`,
//! ...) are a struct with a typed `action`; those whose actions differ in what they
//! read or in the permission they need (`quarantine`, `deliveryconfig`, `sslconfig`)
//! are an enum of actions, so a read and a change are different variants.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What kind of failure a reply is: channels that answer with codes (the REST API's
/// HTTP status) take it from here, never from the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The caller's role may not do this.
    Forbidden,
    /// What the command names does not exist.
    NotFound,
    /// The command or one of its arguments is wrong.
    Invalid,
    /// The command clashes with the current state (a change made meanwhile, a name in use).
    Conflict,
    /// Too much at once: try again later.
    Busy,
    /// Something the command needs (a peer, a store) cannot be reached now.
    Unavailable,
}

/// A failed command: what kind of failure and the appliance wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct CommandError {
    pub kind: ErrorKind,
    pub text: String,
}

impl CommandError {
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> CommandError {
        CommandError {
            kind,
            text: text.into(),
        }
    }

    pub fn invalid(text: impl Into<String>) -> CommandError {
        CommandError::new(ErrorKind::Invalid, text)
    }

    pub fn not_found(text: impl Into<String>) -> CommandError {
        CommandError::new(ErrorKind::NotFound, text)
    }

    pub fn forbidden(text: impl Into<String>) -> CommandError {
        CommandError::new(ErrorKind::Forbidden, text)
    }

    pub fn conflict(text: impl Into<String>) -> CommandError {
        CommandError::new(ErrorKind::Conflict, text)
    }

    pub fn busy(text: impl Into<String>) -> CommandError {
        CommandError::new(ErrorKind::Busy, text)
    }

    pub fn unavailable(text: impl Into<String>) -> CommandError {
        CommandError::new(ErrorKind::Unavailable, text)
    }
}

/// Handlers' argument checks say `Err("...")?`: a wrong argument.
impl From<String> for CommandError {
    fn from(text: String) -> CommandError {
        CommandError::invalid(text)
    }
}

impl From<&str> for CommandError {
    fn from(text: &str) -> CommandError {
        CommandError::invalid(text)
    }
}

/// A string argument as handlers read it: an empty string is no value.
pub fn text(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// A list argument: a JSON array of strings, or one string (which some commands split
/// at commas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum List {
    Many(Vec<String>),
    One(String),
}

impl List {
    /// The items, each trimmed, empty ones dropped; one string is split at commas.
    pub fn items(&self) -> Vec<String> {
        let trimmed = |s: &str| Some(s.trim().to_string()).filter(|s| !s.is_empty());
        match self {
            List::Many(v) => v.iter().filter_map(|s| trimmed(s)).collect(),
            List::One(s) => s.split(',').filter_map(trimmed).collect(),
        }
    }

    /// The items as given: one string is one item (specs that contain commas).
    pub fn raw(&self) -> Vec<String> {
        match self {
            List::Many(v) => v.clone(),
            List::One(s) if s.is_empty() => Vec::new(),
            List::One(s) => vec![s.clone()],
        }
    }

    /// Only an array: its items as given.
    pub fn array(&self) -> Option<&[String]> {
        match self {
            List::Many(v) => Some(v),
            List::One(_) => None,
        }
    }

    /// Only a string.
    pub fn one(&self) -> Option<&str> {
        match self {
            List::One(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            List::Many(v) => v.is_empty(),
            List::One(s) => s.is_empty(),
        }
    }
}

/// A yes/no argument: `true`/`false`, or the words `yes`/`no` (checked by the handler).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Flag {
    Bool(bool),
    Word(String),
}

/// No arguments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

macro_rules! args {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            $($(#[$fm])* pub $field: $ty,)*
        }
    };
}

macro_rules! actions {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $wire:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $wire)] $var,)*
        }

        impl $name {
            /// Every action's name on the wire.
            pub const NAMES: &'static [&'static str] = &[$($wire),*];

            /// The action's name on the wire.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$var => $wire,)*
                }
            }
        }
    };
}

args!(StatusArgs { detail: bool });
args!(SuspendArgs {
    delay: Option<u64>
});
args!(
    /// `all` (or nothing) for every listener, else names separated by commas.
    ListenersArgs { listener: Option<String> }
);
args!(TophostsArgs { sort: Option<String> });
args!(HostArgs { host: Option<String> });
args!(
    /// Queued recipients by recipient host, by envelope sender, or all.
    SelectionArgs {
        host: Option<String>,
        sender: Option<String>,
        all: bool,
    }
);
args!(CommitArgs {
    comment: Option<String>
});
args!(RollbackArgs {
    n: Option<u64>,
    yes: bool
});
args!(ShowconfigArgs { pending: bool });

/// `deliveryconfig`: show the settings, or change them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "DeliveryConfigArgs", into = "DeliveryConfigArgs")]
pub enum DeliveryConfigCmd {
    Show,
    Set {
        interface: Option<String>,
        max_concurrency: Option<u64>,
    },
}

args!(
    /// The wire form of [`DeliveryConfigCmd`]: a change when any setting is given.
    DeliveryConfigArgs {
        #[serde(skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        max_concurrency: Option<u64>,
    }
);

impl TryFrom<DeliveryConfigArgs> for DeliveryConfigCmd {
    type Error = String;

    fn try_from(a: DeliveryConfigArgs) -> Result<Self, String> {
        Ok(match (a.interface, a.max_concurrency) {
            (None, None) => DeliveryConfigCmd::Show,
            (interface, max_concurrency) => DeliveryConfigCmd::Set {
                interface,
                max_concurrency,
            },
        })
    }
}

impl From<DeliveryConfigCmd> for DeliveryConfigArgs {
    fn from(c: DeliveryConfigCmd) -> Self {
        match c {
            DeliveryConfigCmd::Show => DeliveryConfigArgs::default(),
            DeliveryConfigCmd::Set {
                interface,
                max_concurrency,
            } => DeliveryConfigArgs {
                interface,
                max_concurrency,
            },
        }
    }
}

/// `sslconfig`: show the settings, list what each direction offers, or change them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SslConfigArgs", into = "SslConfigArgs")]
pub enum SslConfigCmd {
    Show,
    Verify,
    Set {
        direction: Option<String>,
        versions: Option<List>,
        ciphers: Option<List>,
    },
}

args!(
    /// The wire form of [`SslConfigCmd`].
    SslConfigArgs {
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        direction: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        versions: Option<List>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ciphers: Option<List>,
    }
);

impl TryFrom<SslConfigArgs> for SslConfigCmd {
    type Error = String;

    fn try_from(a: SslConfigArgs) -> Result<Self, String> {
        match a.action.as_deref().filter(|s| !s.is_empty()) {
            Some("verify") => Ok(SslConfigCmd::Verify),
            Some(other) => Err(format!(
                "Unknown sslconfig action \"{other}\"; allowed: verify (or none)."
            )),
            None if a.direction.is_none() && a.versions.is_none() && a.ciphers.is_none() => {
                Ok(SslConfigCmd::Show)
            }
            None => Ok(SslConfigCmd::Set {
                direction: a.direction,
                versions: a.versions,
                ciphers: a.ciphers,
            }),
        }
    }
}

impl From<SslConfigCmd> for SslConfigArgs {
    fn from(c: SslConfigCmd) -> Self {
        match c {
            SslConfigCmd::Show => SslConfigArgs::default(),
            SslConfigCmd::Verify => SslConfigArgs {
                action: Some("verify".into()),
                ..SslConfigArgs::default()
            },
            SslConfigCmd::Set {
                direction,
                versions,
                ciphers,
            } => SslConfigArgs {
                action: None,
                direction,
                versions,
                ciphers,
            },
        }
    }
}

actions!(ListAction {
    #[default]
    List = "list",
    New = "new",
    Edit = "edit",
    Delete = "delete",
});

args!(InterfaceArgs {
    action: ListAction,
    name: Option<String>,
    address: Option<String>,
    hostname: Option<String>,
    ssh: Option<String>,
    https: Option<String>,
});

actions!(ListenerAction {
    #[default]
    List = "list",
    New = "new",
    Edit = "edit",
    Delete = "delete",
    Policy = "policy",
});

args!(ListenerArgs {
    action: ListenerAction,
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    interface: Option<String>,
    port: Option<u64>,
    hat_add: Option<List>,
    hat_delete: Option<List>,
    rat_add: Option<List>,
    rat_delete: Option<List>,
    policy: Option<String>,
    max_concurrency: Option<u64>,
    max_concurrency_per_ip: Option<u64>,
    max_connections_per_ip_per_minute: Option<u64>,
});

impl ListenerArgs {
    /// Whether any HAT or RAT entry is added or deleted.
    pub fn has_table_edits(&self) -> bool {
        [
            &self.hat_add,
            &self.hat_delete,
            &self.rat_add,
            &self.rat_delete,
        ]
        .iter()
        .any(|l| l.as_ref().is_some_and(|l| !l.is_empty()))
    }
}

actions!(RouteAction {
    #[default]
    List = "list",
    New = "new",
    Edit = "edit",
    Delete = "delete",
    Clear = "clear",
});

args!(RouteArgs {
    action: RouteAction,
    domain: Option<String>,
    hosts: Option<List>,
});

args!(CpqEnrollArgs {
    id: Option<String>,
    address: Option<String>,
    port: Option<u64>,
    serial: Option<String>,
});

args!(TelnetArgs {
    interface: Option<String>,
    timeout: Option<u64>,
    host: Option<String>,
    port: Option<u64>,
});

args!(TlsVerifyArgs {
    interface: Option<String>,
    timeout: Option<u64>,
    domain: Option<String>,
    host: Option<String>,
    port: Option<u64>,
});

args!(QuarantineConfigArgs {
    action: ListAction,
    name: Option<String>,
    /// The settings to set: the handler reads and checks each key.
    settings: Value,
});

args!(
    /// A search: the filters (each checked by the handler) and the page.
    SearchArgs {
        query: Value,
        offset: Option<u64>,
        limit: Option<u64>,
    }
);

args!(
    /// release, delete, delay, move: on MIDs, or on every result of `query`.
    ActArgs {
        mids: Vec<u64>,
        all_results: bool,
        quarantine: Option<String>,
        query: Value,
        by: Option<String>,
        from: Option<String>,
        to: Option<String>,
    }
);

args!(ShowArgs { mid: Option<u64> });

args!(CopyArgs {
    mid: Option<u64>,
    to: Option<List>,
});

args!(ManageByRuleArgs {
    rule: Option<String>,
    what: Option<String>,
    by: Option<String>,
});

args!(SweepArgs { at: Option<u64> });

/// `quarantine ACTION`: each action a variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum QuarantineCmd {
    Search(SearchArgs),
    Show(ShowArgs),
    Release(ActArgs),
    Delete(ActArgs),
    Delay(ActArgs),
    Move(ActArgs),
    Copy(CopyArgs),
    ManageByRule(ManageByRuleArgs),
    Sweep(SweepArgs),
}

impl QuarantineCmd {
    pub const NAMES: &'static [&'static str] = &[
        "search",
        "show",
        "release",
        "delete",
        "delay",
        "move",
        "copy",
        "manage-by-rule",
        "sweep",
    ];

    /// The action's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            QuarantineCmd::Search(_) => "search",
            QuarantineCmd::Show(_) => "show",
            QuarantineCmd::Release(_) => "release",
            QuarantineCmd::Delete(_) => "delete",
            QuarantineCmd::Delay(_) => "delay",
            QuarantineCmd::Move(_) => "move",
            QuarantineCmd::Copy(_) => "copy",
            QuarantineCmd::ManageByRule(_) => "manage-by-rule",
            QuarantineCmd::Sweep(_) => "sweep",
        }
    }
}

args!(OutbreakUpdateArgs {
    file: Option<String>
});

actions!(UserAction {
    #[default]
    List = "list",
    New = "new",
    Edit = "edit",
    Delete = "delete",
    Password = "password",
    Role = "role",
    Sshkey = "sshkey",
    Token = "token",
});

actions!(
    /// What `userconfig role|sshkey|token` does; which ones each allows is checked in
    /// [`Command::from_parts`].
    UserSub {
        #[default]
        List = "list",
        New = "new",
        Edit = "edit",
        Add = "add",
        Delete = "delete",
    }
);

args!(UserArgs {
    action: UserAction,
    sub: Option<UserSub>,
    name: Option<String>,
    role: Option<String>,
    password: Option<String>,
    full_name: Option<String>,
    enabled: Option<bool>,
    key: Option<String>,
    token_name: Option<String>,
    quarantines: Option<Vec<String>>,
    domains: Option<Vec<String>>,
    view_only: Option<bool>,
    matched_content: Option<Flag>,
    description: Option<String>,
});

args!(AuditLogArgs {
    user: Option<String>,
    audit_action: Option<String>,
    mid: Option<u64>,
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<u64>,
});

actions!(PvoAction {
    #[default]
    Status = "status",
    Enable = "enable",
    Disable = "disable",
    Migration = "migration",
    Service = "service",
});

args!(PvoArgs {
    action: PvoAction,
    manager: Option<String>,
    mode: Option<String>,
    map: Option<Vec<String>>,
    unmap: Option<Vec<String>>,
    interface: Option<String>,
    port: Option<u64>,
});

actions!(CertAction {
    #[default]
    List = "list",
    Install = "install",
    Revoke = "revoke",
});

args!(CpqCertArgs {
    action: CertAction,
    id: Option<String>,
    serial: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
    manager: Option<String>,
});

actions!(ApplianceAction {
    #[default]
    List = "list",
    Status = "status",
    New = "new",
    Test = "test",
    Edit = "edit",
    Delete = "delete",
});

args!(ApplianceArgs {
    action: ApplianceAction,
    id: Option<String>,
    address: Option<String>,
    ssh_port: Option<u64>,
    user: Option<String>,
    password: Option<String>,
    host_key: Option<String>,
});

actions!(ClusterAction {
    #[default]
    List = "list",
    Connstatus = "connstatus",
    Create = "create",
    Join = "join",
    Addgroup = "addgroup",
    Setgroup = "setgroup",
    Renamegroup = "renamegroup",
    Deletegroup = "deletegroup",
    Removemachine = "removemachine",
    Disconnect = "disconnect",
    Reconnect = "reconnect",
    Copysettings = "copysettings",
    Movesettings = "movesettings",
    Deletesettings = "deletesettings",
    Joininfo = "joininfo",
    Jointoken = "jointoken",
    JointokenList = "jointoken-list",
    JointokenRevoke = "jointoken-revoke",
});

args!(
    /// `clusterconfig`: `name` is the cluster (create), the group (addgroup, renamegroup,
    /// deletegroup) or the machine (removemachine); `section` the section that
    /// copysettings, movesettings and deletesettings move.
    ClusterArgs {
        action: ClusterAction,
        name: Option<String>,
        url: Option<String>,
        ca: Option<String>,
        machine: Option<String>,
        address: Option<String>,
        group: Option<String>,
        from: Option<String>,
        to: Option<String>,
        section: Option<String>,
        /// join over SSH: a member's SSH address (`IP[:PORT]`), the Administrator account
        /// and its password there, and the member's host key to pin (`SHA256:...`).
        member: Option<String>,
        user: Option<String>,
        password: Option<String>,
        host_key: Option<String>,
        /// join with a single-use join token (`pvojoin1....`) instead of a password.
        token: Option<String>,
        /// jointoken: how many minutes the new token works (1..=1440, default 60).
        expires: Option<u64>,
        /// jointoken-revoke: the beginning of the token's hash (`jointoken-list`).
        hash: Option<String>,
    }
);

actions!(FeatureKeyAction {
    #[default]
    List = "list",
    Add = "add",
    Remove = "remove",
});

args!(
    /// `featurekey`: the machine's feature keys. `add` installs (or renews) the key of
    /// `feature`: `key` the licence reference (absent: one is made), `expires` a date
    /// (`2027-12-31`, to the end of that day UTC) or an RFC 3339 time, or `days`.
    FeatureKeyArgs {
        action: FeatureKeyAction,
        feature: Option<String>,
        key: Option<String>,
        expires: Option<String>,
        days: Option<u64>,
    }
);

/// Every appliance command, with its arguments. The wire form is
/// `{"command": NAME, "args": {..}}`; read it with [`Command::from_parts`], which
/// checks and normalizes the arguments first (deserializing a `Command` directly
/// takes no `null` for an absent argument).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", content = "args", rename_all = "lowercase")]
pub enum Command {
    Status(StatusArgs),
    Suspend(SuspendArgs),
    Resume(NoArgs),
    SuspendListeners(ListenersArgs),
    ResumeListeners(ListenersArgs),
    ResetCounters(NoArgs),
    SuspendDel(NoArgs),
    ResumeDel(NoArgs),
    TopHosts(TophostsArgs),
    HostStatus(HostArgs),
    ShowRecipients(SelectionArgs),
    DeleteRecipients(SelectionArgs),
    BounceRecipients(SelectionArgs),
    RedirectRecipients(HostArgs),
    DeliverNow(HostArgs),
    Commit(CommitArgs),
    CommitDetail(NoArgs),
    Rollback(RollbackArgs),
    ClearChanges(NoArgs),
    ShowConfig(ShowconfigArgs),
    DeliveryConfig(DeliveryConfigCmd),
    SslConfig(SslConfigCmd),
    InterfaceConfig(InterfaceArgs),
    ListenerConfig(ListenerArgs),
    SmtpRoutes(RouteArgs),
    CpqEnroll(CpqEnrollArgs),
    Telnet(TelnetArgs),
    TlsVerify(TlsVerifyArgs),
    QuarantineConfig(QuarantineConfigArgs),
    Quarantine(QuarantineCmd),
    OutbreakUpdate(OutbreakUpdateArgs),
    OutbreakStatus(NoArgs),
    UserConfig(UserArgs),
    AuditLog(AuditLogArgs),
    PvoConfig(PvoArgs),
    Diagnose(NoArgs),
    CpqCert(CpqCertArgs),
    ApplianceConfig(ApplianceArgs),
    ClusterConfig(ClusterArgs),
    ClusterCheck(NoArgs),
    FeatureKey(FeatureKeyArgs),
}

/// A command as a name and JSON arguments (the wire form before it is checked).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Parts {
    pub command: String,
    #[serde(default)]
    pub args: Value,
}

impl TryFrom<Parts> for Command {
    type Error = CommandError;

    fn try_from(p: Parts) -> Result<Command, CommandError> {
        Command::from_parts(&p.command, p.args)
    }
}

/// The value of `key` when it is a string ("" when absent).
fn word<'a>(args: &'a Map<String, Value>, key: &str) -> &'a str {
    args.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Refuses an action of `command` that is not one of `names` with today's wording.
fn check_action(
    args: &Map<String, Value>,
    names: &[&str],
    unknown: impl Fn(&str) -> String,
) -> Result<(), CommandError> {
    match args.get("action") {
        None => Ok(()),
        Some(Value::String(a)) if names.contains(&a.as_str()) => Ok(()),
        Some(Value::String(a)) => Err(CommandError::invalid(unknown(a))),
        Some(other) => Err(CommandError::invalid(unknown(&other.to_string()))),
    }
}

impl Command {
    /// Every command's name, as the appliance spells it.
    pub const NAMES: &'static [&'static str] = &[
        "status",
        "suspend",
        "resume",
        "suspendlisteners",
        "resumelisteners",
        "resetcounters",
        "suspenddel",
        "resumedel",
        "tophosts",
        "hoststatus",
        "showrecipients",
        "deleterecipients",
        "bouncerecipients",
        "redirectrecipients",
        "delivernow",
        "commit",
        "commitdetail",
        "rollback",
        "clearchanges",
        "showconfig",
        "deliveryconfig",
        "sslconfig",
        "interfaceconfig",
        "listenerconfig",
        "smtproutes",
        "cpqenroll",
        "telnet",
        "tlsverify",
        "quarantineconfig",
        "quarantine",
        "outbreakupdate",
        "outbreakstatus",
        "userconfig",
        "auditlog",
        "pvoconfig",
        "diagnose",
        "cpqcert",
        "applianceconfig",
        "clusterconfig",
        "clustercheck",
        "featurekey",
    ];

    /// The command `name` with the JSON arguments `args` (an object, or null for none).
    pub fn from_parts(name: &str, args: Value) -> Result<Command, CommandError> {
        let mut args = match args {
            Value::Null => Map::new(),
            Value::Object(m) => m,
            other => {
                return Err(CommandError::invalid(format!(
                    "{name}: the arguments must be an object, not {other}"
                )))
            }
        };
        // An argument given as null is one not given.
        args.retain(|_, v| !v.is_null());
        if !Command::NAMES.contains(&name) {
            return Err(CommandError::invalid(format!("Unknown command: {name}")));
        }
        match name {
            "sslconfig" => check_action(&args, &["verify"], |a| {
                format!("Unknown sslconfig action \"{a}\"; allowed: verify (or none).")
            })?,
            "interfaceconfig" => check_action(&args, ListAction::NAMES, |a| {
                format!("Unknown interfaceconfig action \"{a}\"; allowed: new, edit, delete (or none to list).")
            })?,
            "listenerconfig" => check_action(&args, ListenerAction::NAMES, |a| {
                format!("Unknown listenerconfig action \"{a}\"; allowed: new, edit, delete, policy (or none to list).")
            })?,
            "smtproutes" => check_action(&args, RouteAction::NAMES, |a| {
                format!("Unknown smtproutes action \"{a}\"; allowed: new, edit, delete, clear (or none to list).")
            })?,
            "cpqcert" => check_action(&args, CertAction::NAMES, |a| {
                format!("Unknown cpqcert action \"{a}\"; allowed: list, revoke, install.")
            })?,
            "applianceconfig" => check_action(&args, ApplianceAction::NAMES, |a| {
                format!("Unknown applianceconfig action \"{a}\"; allowed: list, status, new, edit, test, delete.")
            })?,
            "clusterconfig" => check_action(&args, ClusterAction::NAMES, |a| {
                format!(
                    "Unknown clusterconfig action \"{a}\"; allowed: {}.",
                    ClusterAction::NAMES.join(", ")
                )
            })?,
            "featurekey" => check_action(&args, FeatureKeyAction::NAMES, |a| {
                format!(
                    "Unknown featurekey action \"{a}\"; allowed: {}.",
                    FeatureKeyAction::NAMES.join(", ")
                )
            })?,
            "pvoconfig" => check_action(&args, PvoAction::NAMES, |a| {
                format!("Unknown pvoconfig action \"{a}\"; allowed: status, service, enable, disable (gateway), migration (manager).")
            })?,
            "quarantineconfig" => check_action(&args, ListAction::NAMES, |a| {
                format!("quarantineconfig: unknown action {a:?}; allowed: list, new, edit, delete")
            })?,
            "quarantine" => {
                let a = word(&args, "action").to_string();
                if !QuarantineCmd::NAMES.contains(&a.as_str()) {
                    return Err(CommandError::invalid(format!(
                        "quarantine: unknown action {a:?}; allowed: search, show, release, delete, delay, move, copy, manage-by-rule, sweep"
                    )));
                }
            }
            "userconfig" => {
                check_action(&args, UserAction::NAMES, |a| {
                    format!("userconfig: unknown action {a:?}; allowed: list, new, edit, delete, password, role, sshkey")
                })?;
                let (what, allowed): (&str, &[&str]) = match word(&args, "action") {
                    "role" => ("role", &["list", "new", "edit", "delete"]),
                    "sshkey" => ("sshkey", &["list", "add", "delete"]),
                    "token" => ("token", &["list", "new", "delete"]),
                    _ => ("", &[]),
                };
                if !what.is_empty() {
                    let sub = word(&args, "sub");
                    if args.contains_key("sub") && !allowed.contains(&sub) {
                        return Err(CommandError::invalid(format!(
                            "userconfig {what}: unknown action {sub:?}; allowed: {}",
                            allowed.join(", ")
                        )));
                    }
                }
            }
            _ => {}
        }
        let wire = serde_json::json!({ "command": name, "args": Value::Object(args) });
        serde_json::from_value::<Command>(wire)
            .map_err(|e| CommandError::invalid(format!("{name}: {e}")))
    }

    /// The command's name and JSON arguments (its wire form).
    pub fn to_parts(&self) -> Parts {
        let v = serde_json::to_value(self).unwrap_or(Value::Null);
        Parts {
            command: v["command"].as_str().unwrap_or("").to_string(),
            // Absent arguments stay absent (from_parts reads a null as absent too).
            args: match v.get("args") {
                Some(Value::Object(m)) => Value::Object(
                    m.iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                _ => Value::Object(Map::new()),
            },
        }
    }

    /// The command's name, as the appliance spells it.
    pub fn name(&self) -> String {
        self.to_parts().command
    }

    /// The action of a command that has actions, as the request named it (`None` for
    /// a command without actions, or one whose action was left to its default).
    pub fn action(&self) -> Option<&'static str> {
        match self {
            Command::Quarantine(q) => Some(q.name()),
            Command::SslConfig(SslConfigCmd::Verify) => Some("verify"),
            Command::InterfaceConfig(a) => Some(a.action.name()),
            Command::ListenerConfig(a) => Some(a.action.name()),
            Command::SmtpRoutes(a) => Some(a.action.name()),
            Command::QuarantineConfig(a) => Some(a.action.name()),
            Command::UserConfig(a) => Some(a.action.name()),
            Command::PvoConfig(a) => Some(a.action.name()),
            Command::CpqCert(a) => Some(a.action.name()),
            Command::ApplianceConfig(a) => Some(a.action.name()),
            Command::ClusterConfig(a) => Some(a.action.name()),
            Command::FeatureKey(a) => Some(a.action.name()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(name: &str, args: Value) -> Result<Command, CommandError> {
        Command::from_parts(name, args)
    }

    /// What the channels send: the CLI (its own tests pin these shapes), the web UI,
    /// the REST API and the bulk jobs; at least one line per command.
    fn sent() -> Vec<(&'static str, Value)> {
        let no_query = json!({ "quarantine": null, "sender": null, "recipient": null,
            "subject": null, "from": null, "to": null, "reason": null,
            "reason_kind": null, "attachment": null, "gateway": null });
        vec![
            ("status", json!({ "detail": true })),
            ("suspend", json!({ "delay": 30 })),
            ("resume", json!({})),
            ("suspendlisteners", json!({ "listener": null })),
            ("resumelisteners", json!({ "listener": "IncomingMail" })),
            ("resetcounters", json!({})),
            ("suspenddel", json!({})),
            ("resumedel", json!({})),
            ("tophosts", json!({ "sort": "active" })),
            ("hoststatus", json!({ "host": "example.com" })),
            (
                "showrecipients",
                json!({ "host": null, "sender": null, "all": true }),
            ),
            (
                "deleterecipients",
                json!({ "host": "a.test", "sender": null, "all": false }),
            ),
            (
                "bouncerecipients",
                json!({ "host": null, "sender": "s@a.test", "all": false }),
            ),
            ("redirectrecipients", json!({ "host": "10.0.0.1:2525" })),
            ("delivernow", json!({ "host": null })),
            ("commit", json!({ "comment": "x" })),
            ("commitdetail", json!({})),
            ("rollback", json!({ "n": 3, "yes": true })),
            ("clearchanges", json!({})),
            ("showconfig", json!({ "pending": false })),
            (
                "deliveryconfig",
                json!({ "interface": null, "max_concurrency": 40 }),
            ),
            (
                "sslconfig",
                json!({ "action": null, "direction": "inbound",
                "versions": ["1.2", "1.3"], "ciphers": ["default"] }),
            ),
            (
                "sslconfig",
                json!({ "action": "verify", "direction": null, "versions": null, "ciphers": null }),
            ),
            (
                "interfaceconfig",
                json!({ "action": "edit", "name": "Data", "address": null,
                "hostname": null, "ssh": "off", "https": "8443" }),
            ),
            (
                "listenerconfig",
                json!({ "action": "edit", "name": "IncomingMail",
                "interface": null, "port": 2526, "type": null,
                "hat_add": ["P=10.0.0.0/8,1.2.3.4:RELAYED"], "hat_delete": null,
                "rat_add": null, "rat_delete": ["x.com"] }),
            ),
            (
                "listenerconfig",
                json!({ "action": "policy", "policy": "$TRUSTED",
                "max_concurrency": 10, "max_concurrency_per_ip": null,
                "max_connections_per_ip_per_minute": null }),
            ),
            (
                "smtproutes",
                json!({ "action": "new", "domain": "d.test", "hosts": ["h1:25", "h2"] }),
            ),
            (
                "cpqenroll",
                json!({ "id": "gw1", "address": "10.0.0.2", "port": 7025, "serial": "ab" }),
            ),
            (
                "telnet",
                json!({ "interface": null, "timeout": 10, "host": "mx.example.com", "port": 25 }),
            ),
            (
                "tlsverify",
                json!({ "interface": "Auto", "timeout": 10, "domain": "example.com",
                "host": "mx.example.com", "port": 25 }),
            ),
            (
                "quarantineconfig",
                json!({ "action": "new", "name": "Legal", "settings": {
                "retention_secs": 3600, "default_action": "release", "access": ["alice"] } }),
            ),
            (
                "quarantine",
                json!({ "action": "search", "offset": 0, "limit": 5, "query": no_query }),
            ),
            ("quarantine", json!({ "action": "show", "mid": 482 })),
            (
                "quarantine",
                json!({ "action": "release", "mids": [482, 483], "all_results": false,
                "quarantine": "Policy", "query": no_query }),
            ),
            (
                "quarantine",
                json!({ "action": "delay", "by": "8h", "mids": [482],
                "all_results": false, "quarantine": null, "query": no_query }),
            ),
            (
                "quarantine",
                json!({ "action": "move", "mids": [482], "from": "Policy", "to": "Legal" }),
            ),
            (
                "quarantine",
                json!({ "action": "copy", "mid": 482, "to": ["a@example.com"] }),
            ),
            (
                "quarantine",
                json!({ "action": "manage-by-rule", "rule": "OUTB-1", "what": "delay", "by": "1w" }),
            ),
            (
                "quarantine",
                json!({ "action": "sweep", "at": 1_700_000_000u64 }),
            ),
            ("outbreakupdate", json!({ "file": "/tmp/rules.json" })),
            ("outbreakstatus", json!({})),
            (
                "userconfig",
                json!({ "action": "new", "name": "op", "role": "Operator",
                "full_name": null, "password": null }),
            ),
            (
                "userconfig",
                json!({ "action": "edit", "name": "op", "enabled": false }),
            ),
            (
                "userconfig",
                json!({ "action": "role", "sub": "new", "name": "Desk",
                "description": "Help desk", "quarantines": ["Policy"], "domains": ["a.example"],
                "view_only": false, "matched_content": true }),
            ),
            (
                "userconfig",
                json!({ "action": "role", "sub": "edit", "name": "Desk",
                "matched_content": "no" }),
            ),
            (
                "userconfig",
                json!({ "action": "sshkey", "sub": "add", "name": "op", "key": "ssh-ed25519 AAAA" }),
            ),
            (
                "userconfig",
                json!({ "action": "token", "sub": "delete", "name": "op", "token_name": "ci" }),
            ),
            (
                "auditlog",
                json!({ "user": null, "audit_action": "release", "mid": 4,
                "since": null, "until": null, "limit": 100 }),
            ),
            (
                "pvoconfig",
                json!({ "action": "migration", "mode": "custom",
                "map": ["gw1:Policy=Legal"], "unmap": null }),
            ),
            (
                "pvoconfig",
                json!({ "action": "service", "interface": "Data", "port": 7026 }),
            ),
            ("diagnose", json!({})),
            (
                "cpqcert",
                json!({ "action": "revoke", "id": null, "serial": "0a", "cert": null,
                "key": null, "ca": null, "manager": null }),
            ),
            (
                "applianceconfig",
                json!({ "action": "new", "id": "gw1", "address": "10.0.0.2",
                "ssh_port": 22, "user": "admin", "password": "pw" }),
            ),
            ("featurekey", json!({})),
            (
                "featurekey",
                json!({ "action": "add", "feature": "antivirus", "key": null,
                "expires": "2027-12-31", "days": null }),
            ),
            (
                "featurekey",
                json!({ "action": "remove", "feature": "dlp" }),
            ),
            // The REST API (`/api/v1/cluster`) and the web UI's Cluster page.
            ("clusterconfig", json!({ "action": "list" })),
            (
                "clusterconfig",
                json!({ "action": "create", "name": "east", "url": "postgresql://pvo@db/pvo",
                "machine": "gw1", "address": "10.0.0.1" }),
            ),
            (
                "clusterconfig",
                json!({ "action": "deletesettings", "section": "tls" }),
            ),
            ("clustercheck", json!({})),
        ]
    }

    #[test]
    fn every_command_round_trips() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, args) in sent() {
            let c = parse(name, args.clone()).unwrap_or_else(|e| panic!("{name} {args}: {e}"));
            assert_eq!(c.name(), name);
            let p = c.to_parts();
            assert_eq!(
                parse(&p.command, p.args.clone()).unwrap(),
                c,
                "{name} {args}"
            );
            seen.insert(name);
        }
        let all: std::collections::BTreeSet<&str> = Command::NAMES.iter().copied().collect();
        assert_eq!(seen, all, "a command without a line in sent()");
    }

    #[test]
    fn unknown_commands_actions_and_arguments_are_invalid() {
        let cases: Vec<(&str, Value, &str)> = vec![
            ("frobnicate", json!({}), "Unknown command: frobnicate"),
            ("quarantine", json!({ "action": "burn" }), "quarantine: unknown action \"burn\"; allowed: search, show, release, delete, delay, move, copy, manage-by-rule, sweep"),
            ("quarantine", json!({}), "quarantine: unknown action \"\";"),
            ("interfaceconfig", json!({ "action": "rename" }), "Unknown interfaceconfig action \"rename\"; allowed: new, edit, delete (or none to list)."),
            ("userconfig", json!({ "action": "sshkey", "sub": "new", "name": "u" }), "userconfig sshkey: unknown action \"new\"; allowed: list, add, delete"),
            ("userconfig", json!({ "action": "fly" }), "userconfig: unknown action \"fly\""),
            ("sslconfig", json!({ "action": "test" }), "Unknown sslconfig action \"test\""),
            ("featurekey", json!({ "action": "renew" }), "Unknown featurekey action \"renew\"; allowed: list, add, remove."),
            ("featurekey", json!({ "action": "add", "days": "soon" }), "featurekey: invalid type"),
            ("status", json!({ "verbose": true }), "status: unknown field `verbose`"),
            ("quarantine", json!({ "action": "show", "mids": [1] }), "unknown field `mids`"),
            ("suspend", json!({ "delay": "soon" }), "suspend: invalid type"),
            ("resume", json!([1]), "resume: the arguments must be an object"),
        ];
        for (name, args, want) in cases {
            let e = parse(name, args.clone()).expect_err(name);
            assert_eq!(e.kind, ErrorKind::Invalid, "{name} {args}");
            assert!(e.text.contains(want), "{name} {args}: {:?}", e.text);
        }
    }

    #[test]
    fn reads_and_changes_are_different_variants() {
        let cases: Vec<(&str, Value, Command)> = vec![
            (
                "deliveryconfig",
                json!({}),
                Command::DeliveryConfig(DeliveryConfigCmd::Show),
            ),
            (
                "deliveryconfig",
                json!({ "interface": null, "max_concurrency": null }),
                Command::DeliveryConfig(DeliveryConfigCmd::Show),
            ),
            (
                "deliveryconfig",
                json!({ "interface": "Auto" }),
                Command::DeliveryConfig(DeliveryConfigCmd::Set {
                    interface: Some("Auto".into()),
                    max_concurrency: None,
                }),
            ),
            (
                "sslconfig",
                json!({ "action": null }),
                Command::SslConfig(SslConfigCmd::Show),
            ),
            (
                "sslconfig",
                json!({ "action": "verify" }),
                Command::SslConfig(SslConfigCmd::Verify),
            ),
            (
                "sslconfig",
                json!({ "direction": "outbound" }),
                Command::SslConfig(SslConfigCmd::Set {
                    direction: Some("outbound".into()),
                    versions: None,
                    ciphers: None,
                }),
            ),
            ("resume", Value::Null, Command::Resume(NoArgs {})),
            (
                "interfaceconfig",
                json!({}),
                Command::InterfaceConfig(InterfaceArgs::default()),
            ),
        ];
        for (name, args, want) in cases {
            assert_eq!(parse(name, args.clone()).unwrap(), want, "{name} {args}");
        }
    }

    #[test]
    fn actions_are_named_for_the_audit_trail() {
        let cases: Vec<(&str, Value, Option<&str>)> = vec![
            ("status", json!({}), None),
            (
                "quarantine",
                json!({ "action": "manage-by-rule" }),
                Some("manage-by-rule"),
            ),
            ("userconfig", json!({}), Some("list")),
            ("pvoconfig", json!({}), Some("status")),
            ("sslconfig", json!({ "direction": "inbound" }), None),
            ("sslconfig", json!({ "action": "verify" }), Some("verify")),
        ];
        for (name, args, want) in cases {
            assert_eq!(
                parse(name, args.clone()).unwrap().action(),
                want,
                "{name} {args}"
            );
        }
    }

    #[test]
    fn lists() {
        let cases: Vec<(Value, Vec<&str>, Vec<&str>)> = vec![
            (
                json!(["a", " b ", ""]),
                vec!["a", "b"],
                vec!["a", " b ", ""],
            ),
            (json!("a, b,,c"), vec!["a", "b", "c"], vec!["a, b,,c"]),
            (json!(""), vec![], vec![]),
            (json!([]), vec![], vec![]),
        ];
        for (v, items, raw) in cases {
            let l: List = serde_json::from_value(v.clone()).unwrap();
            assert_eq!(l.items(), items, "{v}");
            assert_eq!(l.raw(), raw, "{v}");
        }
        assert_eq!(text(&Some(String::new())), None);
        assert_eq!(text(&Some("x".into())), Some("x"));
    }

    #[test]
    fn argument_checks_in_handlers_are_invalid() {
        let e: CommandError = "give the MID".into();
        assert_eq!(e.kind, ErrorKind::Invalid);
        let e: CommandError = format!("MID {} is not held", 4).into();
        assert_eq!(
            (e.kind, e.text.as_str()),
            (ErrorKind::Invalid, "MID 4 is not held")
        );
    }
}
