//! The quarantine commands, executed inside the node: `quarantineconfig`, `quarantine
//! search|show|release|delete|delay|move|copy|manage-by-rule|sweep`, `outbreakupdate` and
//! `outbreakstatus`.
//!
//! Everything goes through the local store (`scanning::local_quarantine`) on the blocking
//! pool, and every action's reports go through `handle_reports`, the same path the
//! retention sweeper takes: the quarantine `mail_logs` lines (docs/appliance.md) are written there, and what
//! an action released from all quarantines is re-injected with a new MID and delivered.
//! The text of an action repeats those log lines, so what the administrator reads is what
//! `grep` finds later.
//!
//! Administrators name messages by the gateway MID of the log lines. The store's own ids
//! are internal; [`resolve`] maps MIDs to them by walking the held messages newest first
//! (the store has no index on the gateway MID), which stops as soon as every MID asked
//! for is found — recent messages, the usual case, are on the first page.
//!
//! Who may see what is decided here, per message, because only the store knows where a
//! message is held: `dispatch_as` has already checked that the caller's role may search
//! or act at all. An Administrator sees every quarantine. Any other role sees the
//! quarantines whose access list names the user or the role, plus (custom roles) those
//! the role names itself, and a role limited to recipient domains sees only messages with
//! a recipient in one of them ([`QAccess`]). Searches carry those limits into the store's
//! query; a MID outside them is answered like a MID that is not held, so its existence
//! is not revealed; releasing or deleting "from all quarantines" a message also held
//! where the caller has no access is refused for that message.
//!
//! # Security
//!
//! Subjects, header values, file names and match evidence come from senders. Before any
//! of it reaches a terminal, control characters are escaped ([`clean`]), so a message
//! cannot move the cursor or rewrite what an administrator sees.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pvo_quarantine::{
    format_bytes, format_retention, Action, ActionReport, Actor, AddrMatch, BulkResult, Cause,
    Change, DefaultAction, DelayBy, MembershipState, MessageInfo, MsgId, OrderBy, Outcome,
    QuarantineError, QuarantineSettings, ReasonKind, Scope, SearchQuery, Store, XHeader,
};
use pvo_scan::outbreak::OutbreakRulesFile;
use serde_json::{json, Value};

use super::command::{
    text, ActArgs, CommandError, CopyArgs, List, ListAction, ManageByRuleArgs, OutbreakUpdateArgs,
    QuarantineCmd, QuarantineConfigArgs, SearchArgs, ShowArgs, SweepArgs,
};
use super::replies::Outcome as Done;
use super::replies::{
    self, ActDone, ActRefused, ActReply, ActResult, AttachmentRow, CopyReply, HeaderRow,
    HistoryRow, HitQuarantine, MembershipRow, MessageReply, PartRow, QuarantineRow,
    QuarantinesReply, SearchHit, SearchReply,
};
use crate::commands::protocol::{ErrorKind, Request, Response};
use crate::core::clock::gmt;
use crate::core::envelope::Envelope;
use crate::core::scanning::local_quarantine::{handle_reports, now};
use crate::core::state::Handles;
use crate::core::users::{Builtin, Identity, Perm, RoleDef};

type Reply = Result<Response, CommandError>;

/// [`store_err`], and a storage failure's cause logged in mail_logs, where its text
/// sends the administrator.
fn store_err_in(shared: &Handles) -> impl Fn(QuarantineError) -> CommandError + '_ {
    move |e| {
        if e.is_temporary() {
            shared
                .mail
                .log
                .emit(crate::core::events::Event::StoreFailure { error: &e });
        }
        store_err(e)
    }
}

/// The text of a store error for the administrator. Storage failures say so and that
/// nothing changed (each action is one transaction); callers that have the node use
/// [`store_err_in`], which also logs the cause.
fn store_err(e: QuarantineError) -> CommandError {
    use pvo_quarantine::QuarantineError as E;
    if e.is_temporary() {
        return CommandError::unavailable(format!(
            "The quarantine store failed ({e}); nothing was changed. See mail_logs and try again."
        ));
    }
    let kind = match &e {
        E::UnknownMessage(_)
        | E::UnknownQuarantine(_)
        | E::NotInQuarantine { .. }
        | E::BodyGone(_) => ErrorKind::NotFound,
        E::AlreadyInQuarantine { .. } | E::QuarantineExists(_) => ErrorKind::Conflict,
        E::SchemaTooNew { .. } | E::Db(_) | E::Pg(_) | E::Corrupt(_) => ErrorKind::Unavailable,
        E::BuiltinQuarantine(_) | E::Invalid(_) | E::Filter(_) => ErrorKind::Invalid,
    };
    CommandError::new(kind, e.to_string())
}

/// A store error as the command's answer, of its kind, logged like [`store_err_in`].
fn store_fail(shared: &Handles, e: QuarantineError) -> Response {
    let e = store_err_in(shared)(e);
    Response::fail(e.kind, e.text)
}

fn who(req: &Request) -> String {
    if req.user.is_empty() {
        "admin".into()
    } else {
        req.user.clone()
    }
}

// ---------------------------------------------------------------------------------------
// quarantineconfig
// ---------------------------------------------------------------------------------------

pub async fn quarantineconfig(
    shared: &Arc<Handles>,
    req: &Request,
    args: &QuarantineConfigArgs,
) -> Reply {
    match args.action {
        ListAction::List => list_quarantines(shared, String::new()).await,
        ListAction::New => {
            let name = text(&args.name)
                .ok_or("quarantineconfig new: give the name with --name")?
                .trim()
                .to_string();
            let mut settings = QuarantineSettings {
                retention_secs: 10 * 86_400,
                default_action: DefaultAction::Delete,
                exempt_from_free_up: false,
                early_release: Default::default(),
                access: Default::default(),
            };
            patch_settings(&mut settings, &args.settings)?;
            let n = name.clone();
            let q = shared
                .scan
                .local_quarantine
                .with(move |s| s.create_quarantine(&n, &settings, now()))
                .await
                .map_err(store_err_in(shared))?;
            shared
                .mail
                .log
                .emit(crate::core::events::Event::QuarantineCreated {
                    name: &q.name,
                    by: &who(req),
                });
            list_quarantines(
                shared,
                format!(
                    "Quarantine \"{}\" created (#{}): {}.\n\n",
                    q.name,
                    q.id,
                    describe_settings(&q.settings)
                ),
            )
            .await
        }
        ListAction::Edit => {
            let name = text(&args.name)
                .ok_or("quarantineconfig edit: give the quarantine's name")?
                .to_string();
            let patch = args.settings.clone();
            let q = shared
                .scan
                .local_quarantine
                .with(move |s| {
                    let mut settings = s.get_quarantine(&name).map_err(store_err)?.settings;
                    patch_settings(&mut settings, &patch)?;
                    s.update_quarantine(&name, &settings).map_err(store_err)
                })
                .await?;
            shared
                .mail
                .log
                .emit(crate::core::events::Event::QuarantineSettingsChanged {
                    name: &q.name,
                    by: &who(req),
                });
            list_quarantines(
                shared,
                format!(
                    "Quarantine \"{}\" changed: {}.\n\n",
                    q.name,
                    describe_settings(&q.settings)
                ),
            )
            .await
        }
        ListAction::Delete => {
            let name = text(&args.name)
                .ok_or("quarantineconfig delete: give the quarantine's name")?
                .to_string();
            let user = who(req);
            let (deleted, mids) = shared
                .scan
                .local_quarantine
                .with(move |s| {
                    let d = s.delete_quarantine(&name, &user, now())?;
                    let mids: Vec<u64> = d
                        .moved_to_unclassified
                        .iter()
                        .map(|&id| s.message(id).map(|m| m.gateway_mid).unwrap_or(id))
                        .collect();
                    Ok::<_, QuarantineError>((d, mids))
                })
                .await
                .map_err(store_err_in(shared))?;
            shared
                .mail
                .log
                .emit(crate::core::events::Event::QuarantineDeleted {
                    name: &deleted.name,
                    by: &who(req),
                });
            for mid in &mids {
                shared
                    .mail
                    .log
                    .emit(crate::core::events::Event::QuarantineMoved {
                        mid: *mid,
                        from: &deleted.name,
                        to: "Unclassified",
                    });
            }
            let mut text = format!("Quarantine \"{}\" deleted.", deleted.name);
            if mids.is_empty() {
                text.push_str(" It held no messages.\n\n");
            } else {
                let list: Vec<String> = mids.iter().map(|m| format!("MID {m}")).collect();
                text.push_str(&format!(
                    " The {} held in it moved to \"Unclassified\" with the same scheduled exit and reason: {}.\n\n",
                    plural(mids.len(), "message"),
                    list.join(", ")
                ));
            }
            let mut resp = list_quarantines(shared, text).await?;
            resp.data["deleted"] = json!(deleted.name);
            resp.data["moved_to_unclassified"] = json!(mids);
            Ok(resp)
        }
    }
}

async fn list_quarantines(shared: &Arc<Handles>, prefix: String) -> Reply {
    let (table, usage, quarantines) = shared
        .scan
        .local_quarantine
        .with(|s| Ok::<_, QuarantineError>((s.quarantine_table()?, s.usage()?, s.quarantines()?)))
        .await
        .map_err(store_err_in(shared))?;
    let rows: Vec<QuarantineRow> = usage
        .quarantines
        .iter()
        .map(|u| {
            let q = quarantines.iter().find(|q| q.id == u.id);
            QuarantineRow {
                id: u.id,
                name: u.name.clone(),
                builtin: u.builtin,
                space_used_bytes: u.bytes,
                messages: u.messages,
                retention_secs: u.retention_secs,
                retention: format_retention(u.retention_secs),
                default_action: u.default_action.as_str().to_string(),
                exempt_free_up: u.exempt_from_free_up,
                early_release: q.map(|q| json!(q.settings.early_release)),
                access: q.map(|q| json!(q.settings.access)),
            }
        })
        .collect();
    let data = QuarantinesReply {
        quarantines: rows,
        total_messages: usage.total_messages,
        total_bytes: usage.total_bytes,
        quota_bytes: usage.quota_bytes,
    };
    Ok(Response::ok(
        format!("{prefix}{table}"),
        replies::data(&data),
    ))
}

/// The roles of the appliance that an access list may name; anything else is a user.
const ROLES: [&str; 5] = [
    "Administrator",
    "Operator",
    "Read-Only Operator",
    "Guest",
    "Help Desk User",
];

/// Applies the fields present in `p` (see `cli::quarantine::SettingsArgs`) to `s`.
fn patch_settings(s: &mut QuarantineSettings, p: &Value) -> Result<(), String> {
    if let Some(r) = p.get("retention_secs").and_then(Value::as_u64) {
        s.retention_secs = r;
    }
    if let Some(a) = p.get("default_action").and_then(Value::as_str) {
        s.default_action = match a.to_ascii_lowercase().as_str() {
            "delete" => DefaultAction::Delete,
            "release" => DefaultAction::Release,
            other => {
                return Err(format!(
                    "{other:?} is not a default action; allowed: delete, release"
                ))
            }
        };
    }
    if let Some(b) = p.get("exempt_free_up").and_then(Value::as_bool) {
        s.exempt_from_free_up = b;
    }
    let text = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_string);
    let opt = |t: String| if t.is_empty() { None } else { Some(t) };
    if let Some(t) = text("subject_prepend") {
        s.early_release.subject_prepend = opt(t);
    }
    if let Some(t) = text("subject_append") {
        s.early_release.subject_append = opt(t);
    }
    if let Some(t) = text("x_header") {
        s.early_release.x_header = if t.is_empty() {
            None
        } else {
            let (name, value) = t
                .split_once(':')
                .ok_or_else(|| format!("--x-header {t:?}: use NAME:VALUE, e.g. X-Released:yes"))?;
            Some(XHeader {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            })
        };
    }
    if let Some(b) = p.get("strip_attachments").and_then(Value::as_bool) {
        s.early_release.strip_attachments = b;
    }
    if let Some(list) = p.get("access").and_then(Value::as_array) {
        s.access.users.clear();
        s.access.roles.clear();
        for entry in list.iter().filter_map(Value::as_str) {
            if entry.eq_ignore_ascii_case("Technician") {
                return Err("the Technician role has no access to quarantines; allowed roles: Operator, Read-Only Operator, Guest, Help Desk User".into());
            }
            match ROLES.iter().find(|r| r.eq_ignore_ascii_case(entry)) {
                Some(role) => s.access.roles.push(role.to_string()),
                None => s.access.users.push(entry.to_string()),
            }
        }
    }
    Ok(())
}

fn describe_settings(s: &QuarantineSettings) -> String {
    let mut parts = vec![
        format!("retention {}", format_retention(s.retention_secs)),
        format!("default action {}", s.default_action.as_str()),
    ];
    if s.exempt_from_free_up {
        parts.push("exempt from free up space".into());
    }
    let e = &s.early_release;
    if let Some(t) = &e.subject_prepend {
        parts.push(format!("early release prepends {t:?} to the subject"));
    }
    if let Some(t) = &e.subject_append {
        parts.push(format!("early release appends {t:?} to the subject"));
    }
    if let Some(x) = &e.x_header {
        parts.push(format!("early release adds {}: {}", x.name, x.value));
    }
    if e.strip_attachments {
        parts.push("early release strips attachments".into());
    }
    let access: Vec<&str> = s
        .access
        .users
        .iter()
        .chain(&s.access.roles)
        .map(String::as_str)
        .collect();
    if !access.is_empty() {
        parts.push(format!("access: Administrators, {}", access.join(", ")));
    }
    parts.join(", ")
}

// ---------------------------------------------------------------------------------------
// quarantine
// ---------------------------------------------------------------------------------------

/// The quarantines and recipient domains a caller may see.
#[derive(Debug, Clone)]
pub struct QAccess {
    /// The caller's role, for refusals.
    role: String,
    /// Every quarantine (Administrator, or a custom role with `*`).
    all: bool,
    /// The quarantines besides, when not `all`.
    quarantines: Vec<String>,
    /// Recipient domains the caller is limited to (empty: none).
    domains: Vec<String>,
    /// Whether "why held" may show the matched content (`Perm::ViewMatchedContent`).
    matched_content: bool,
}

impl QAccess {
    fn everything() -> QAccess {
        QAccess {
            role: Builtin::Administrator.name().into(),
            all: true,
            quarantines: Vec::new(),
            domains: Vec::new(),
            matched_content: true,
        }
    }

    fn unrestricted(&self) -> bool {
        self.all && self.domains.is_empty()
    }

    fn quarantine_ok(&self, name: &str) -> bool {
        self.all
            || self
                .quarantines
                .iter()
                .any(|q| q.eq_ignore_ascii_case(name))
    }

    fn domain_ok(&self, recipients: &[String]) -> bool {
        self.domains.is_empty()
            || recipients.iter().any(|r| {
                let d = r.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
                self.domains.iter().any(|x| x.eq_ignore_ascii_case(d))
            })
    }

    /// Held in a quarantine the caller may see, with a recipient in the caller's domains.
    fn message_ok(&self, info: &MessageInfo) -> bool {
        info.memberships
            .iter()
            .any(|m| m.state == MembershipState::Held && self.quarantine_ok(&m.quarantine))
            && self.domain_ok(&info.recipients)
    }

    /// The store query limits for a search.
    fn limit(&self, q: &mut SearchQuery) {
        if !self.all {
            q.within_quarantines = Some(self.quarantines.clone());
        }
        if !self.domains.is_empty() {
            q.recipient_domains = Some(self.domains.clone());
        }
    }

    fn no_access(&self, quarantine: &str) -> CommandError {
        let yours = if self.quarantines.is_empty() {
            "none; an Administrator adds the user or the role to a quarantine's access list with `quarantineconfig edit NAME --access`".to_string()
        } else {
            self.quarantines.join(", ")
        };
        CommandError::forbidden(format!(
            "Role \"{}\" has no access to quarantine \"{quarantine}\"; the quarantines it may access: {yours}.",
            self.role
        ))
    }
}

/// What `id` may see, from its role and the access lists of the quarantines.
async fn access_of(shared: &Arc<Handles>, id: &Identity) -> Result<QAccess, CommandError> {
    let role = shared.access.users.role(&id.role);
    let (all, own) = match &role {
        Some(RoleDef::Builtin(Builtin::Administrator)) => return Ok(QAccess::everything()),
        Some(RoleDef::Custom(c)) => (c.all_quarantines(), c.quarantines.clone()),
        _ => (false, Vec::new()),
    };
    let quarantines = shared
        .scan
        .local_quarantine
        .with(|s| s.quarantines())
        .await
        .map_err(store_err_in(shared))?;
    let role_name = role
        .as_ref()
        .map(|r| r.name().to_string())
        .unwrap_or_default();
    let mut allowed: Vec<String> = Vec::new();
    for q in &quarantines {
        // `--access` files names it does not know as built-in roles under users, so a
        // custom role named there is found among the users.
        let listed = q.settings.access.allows(&id.user, &[role_name.as_str()])
            || q.settings
                .access
                .users
                .iter()
                .any(|u| u.eq_ignore_ascii_case(&role_name))
            || own.iter().any(|o| o.eq_ignore_ascii_case(&q.name));
        if listed {
            allowed.push(q.name.clone());
        }
    }
    Ok(QAccess {
        matched_content: role
            .as_ref()
            .is_some_and(|r| r.allows(Perm::ViewMatchedContent)),
        role: role_name,
        all,
        quarantines: allowed,
        domains: id.domains.clone(),
    })
}

pub async fn quarantine(
    shared: &Arc<Handles>,
    req: &Request,
    cmd: &QuarantineCmd,
    id: &Identity,
) -> Reply {
    use QuarantineCmd as Q;
    let access = match cmd {
        Q::Search(_)
        | Q::Show(_)
        | Q::Release(_)
        | Q::Delete(_)
        | Q::Delay(_)
        | Q::Move(_)
        | Q::ManageByRule(_) => access_of(shared, id).await?,
        Q::Copy(_) | Q::Sweep(_) => QAccess::everything(),
    };
    match cmd {
        Q::Search(a) => search(shared, a, &access).await,
        Q::Show(a) => show(shared, a, &access).await,
        Q::Release(a) | Q::Delete(a) | Q::Delay(a) | Q::Move(a) => {
            act(shared, req, cmd.name(), a, &access).await
        }
        Q::Copy(a) => copy(shared, req, a).await,
        Q::ManageByRule(a) => manage_by_rule(shared, req, a, &access).await,
        Q::Sweep(a) => sweep(shared, a).await,
    }
}

/// Sender-controlled text made safe for a terminal: control characters escaped.
pub fn clean(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c == '\t' {
            // Unfolded header values keep their folding tabs.
            out.push(' ');
        } else if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// At most `max` characters, with `…` when cut.
fn cut(s: &str, max: usize) -> String {
    let s = clean(s);
    if s.chars().count() <= max {
        s
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

fn addr_match(s: &str) -> AddrMatch {
    let s = s.trim();
    if let Some(prefix) = s.strip_suffix('*') {
        AddrMatch::BeginsWith(prefix.to_string())
    } else if let Some(domain) = s.strip_prefix('@') {
        AddrMatch::Domain(domain.to_string())
    } else if s.contains('@') {
        AddrMatch::Is(s.to_string())
    } else {
        AddrMatch::Domain(s.to_string())
    }
}

fn reason_kind(s: &str) -> Result<ReasonKind, String> {
    [
        ReasonKind::ContentFilter,
        ReasonKind::Dlp,
        ReasonKind::Virus,
        ReasonKind::Outbreak,
        ReasonKind::Other,
    ]
    .into_iter()
    .find(|k| k.as_str().eq_ignore_ascii_case(s))
    .ok_or_else(|| {
        format!("{s:?} is not a reason kind; allowed: content filter, DLP policy, virus, outbreak rule, other")
    })
}

/// The search of a request's `query` object (see `cli::quarantine::SearchFilters`).
fn query_from(v: &Value) -> Result<SearchQuery, String> {
    // An empty value is a filter not given (forms send every field); a value of white
    // space only (CR/LF...) is refused, never dropped, so it cannot widen a bulk action
    // to every held message. `pvo_quarantine` checks the rest (no word, NUL).
    let get = |k: &str| -> Result<Option<String>, String> {
        match v.get(k).and_then(Value::as_str) {
            None | Some("") => Ok(None),
            Some(t) if t.trim().is_empty() => {
                Err(pvo_quarantine::FilterError::new(k, t, "it is only white space").to_string())
            }
            Some(t) => Ok(Some(t.trim().to_string())),
        }
    };
    let (quarantine, sender, recipient, subject, reason, kind, attachment, gateway) = (
        get("quarantine")?,
        get("sender")?,
        get("recipient")?,
        get("subject")?,
        get("reason")?,
        get("reason_kind")?,
        get("attachment")?,
        get("gateway")?,
    );
    let order = get("order")?;
    let (order_by, descending) = match order.as_deref() {
        None | Some("newest") => (OrderBy::Received, true),
        Some("oldest") => (OrderBy::Received, false),
        Some("largest") => (OrderBy::Size, true),
        Some("smallest") => (OrderBy::Size, false),
        Some("exit_soonest") => (OrderBy::Exit, false),
        Some("exit_latest") => (OrderBy::Exit, true),
        Some(other) => {
            return Err(format!("order {other:?}: allowed: newest, oldest, largest, smallest, exit_soonest, exit_latest"))
        }
    };
    Ok(SearchQuery {
        quarantine,
        sender: sender.map(|a| addr_match(&a)),
        recipient: recipient.map(|a| addr_match(&a)),
        subject,
        received_from: v.get("from").and_then(Value::as_u64),
        received_to: v.get("to").and_then(Value::as_u64),
        reason,
        reason_kind: kind.map(|k| reason_kind(&k)).transpose()?,
        attachment_name: attachment,
        attachment_min_size: v.get("attachment_min_size").and_then(Value::as_u64),
        attachment_max_size: v.get("attachment_max_size").and_then(Value::as_u64),
        gateway,
        order_by,
        descending,
        ..SearchQuery::default()
    })
}

/// Maps gateway MIDs to store ids by walking the held messages newest first; stops when
/// every MID is found. MIDs not held are missing from the map.
fn resolve(s: &Store, mids: &[u64]) -> pvo_quarantine::Result<HashMap<u64, MsgId>> {
    const PAGE: u64 = 1000;
    let mut want: HashSet<u64> = mids.iter().copied().collect();
    let mut found = HashMap::new();
    // The MID this node logged (indexed): the manager's MID on a manager, the
    // gateway's own on a gateway.
    for &m in mids {
        if let Some(id) = s.message_by_node_mid(m)? {
            found.insert(m, id);
            want.remove(&m);
        }
    }
    // Messages stored before that MID was recorded: by the gateway MID.
    let mut q = SearchQuery {
        limit: PAGE,
        max_count: Some(1),
        ..SearchQuery::default()
    };
    while !want.is_empty() {
        let page = s.search(&q)?;
        for h in &page.hits {
            if h.node_mid.is_none() && want.remove(&h.gateway_mid) {
                found.insert(h.gateway_mid, h.msg_id);
            }
        }
        if (page.hits.len() as u64) < PAGE {
            break;
        }
        q.offset += PAGE;
    }
    Ok(found)
}

fn not_held(mid: u64) -> CommandError {
    CommandError::not_found(format!("MID {mid} is not held in any quarantine (never quarantined, or already released or deleted); `pvo quarantine search` lists the held messages"))
}

/// A MID the caller may not see: the same answer as a MID that is not held.
fn not_visible(mid: u64) -> CommandError {
    CommandError::not_found(format!("MID {mid} is not held in any quarantine you can access; `pvo quarantine search` lists the held messages"))
}

async fn search(shared: &Arc<Handles>, args: &SearchArgs, access: &QAccess) -> Reply {
    let mut q = query_from(&args.query)?;
    if let Some(name) = &q.quarantine {
        if !access.quarantine_ok(name) {
            return Ok(Response::fail(
                ErrorKind::Forbidden,
                access.no_access(name).text,
            ));
        }
    }
    access.limit(&mut q);
    q.offset = args.offset.unwrap_or(0);
    q.limit = args.limit.unwrap_or(25).clamp(1, 10_000);
    let (offset, limit) = (q.offset, q.limit);
    let page = match shared
        .scan
        .local_quarantine
        .with(move |s| s.search(&q))
        .await
    {
        Ok(page) => page,
        Err(e) => return Ok(store_fail(shared, e)),
    };
    let searched = args.query["quarantine"].as_str().map(str::to_string);
    let mut rows = vec![[
        "MID".to_string(),
        "Received (GMT)".into(),
        "Sender".into(),
        "Recipients".into(),
        "Subject".into(),
        "Quarantines".into(),
        "Scheduled exit".into(),
    ]];
    let mut messages = Vec::new();
    for h in &page.hits {
        // Only the quarantines the caller may see.
        let held_in: Vec<&pvo_quarantine::HitMembership> = h
            .held_in
            .iter()
            .filter(|m| access.quarantine_ok(&m.quarantine))
            .collect();
        // The exit in the searched quarantine, else the earliest one.
        let exit = held_in
            .iter()
            .filter(|m| {
                searched
                    .as_deref()
                    .is_none_or(|q| m.quarantine.eq_ignore_ascii_case(q))
            })
            .map(|m| m.exit_at)
            .min();
        let recipients = match h.recipients.len() {
            0 => String::new(),
            1 => cut(&h.recipients[0], 30),
            n => format!("{} (+{})", cut(&h.recipients[0], 26), n - 1),
        };
        let names: Vec<&str> = held_in.iter().map(|m| m.quarantine.as_str()).collect();
        let mid = h.node_mid.unwrap_or(h.gateway_mid);
        rows.push([
            mid.to_string(),
            gmt(h.received),
            cut(&h.sender, 30),
            recipients,
            cut(&h.subject, 40),
            cut(&names.join(", "), 30),
            exit.map(gmt).unwrap_or_default(),
        ]);
        messages.push(SearchHit {
            mid,
            gateway: h.gateway.clone(),
            gateway_mid: h.gateway_mid,
            received: h.received,
            sender: h.sender.clone(),
            recipients: h.recipients.clone(),
            subject: h.subject.clone(),
            size: h.size,
            quarantines: held_in
                .iter()
                .map(|m| HitQuarantine {
                    name: m.quarantine.clone(),
                    reason: m.reason.to_string(),
                    reason_kind: m.reason.kind.as_str().to_string(),
                    reason_name: m.reason.name.clone(),
                    exit_at: m.exit_at,
                })
                .collect(),
            scheduled_exit: exit,
        });
    }
    let mut text = String::new();
    if page.hits.is_empty() {
        text.push_str("No quarantined messages match.\n");
    } else {
        text.push_str(&render_table(&rows));
    }
    let total = if page.total_exact {
        page.total.to_string()
    } else {
        format!("at least {}", page.total)
    };
    if !page.hits.is_empty() {
        text.push_str(&format!(
            "\nShowing {}-{} of {total} messages.\n",
            offset + 1,
            offset + page.hits.len() as u64
        ));
    } else if page.total > 0 {
        text.push_str(&format!(
            "({total} messages match; --offset {offset} is past the last one.)\n"
        ));
    }
    let data = SearchReply {
        total: page.total,
        total_exact: page.total_exact,
        offset,
        limit,
        messages,
    };
    Ok(Response::ok(text, replies::data(&data)))
}

/// Left-aligned columns, two spaces apart, the first row a header.
fn render_table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == N {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn membership_state(s: MembershipState) -> &'static str {
    match s {
        MembershipState::Held => "held",
        MembershipState::Released => "released",
        MembershipState::Deleted => "deleted",
        MembershipState::Migrated => "migrated to the manager",
    }
}

/// Renders "why held" details (free-form JSON from the engines) as indented lines.
fn render_details(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let scalar = |v: &Value| match v {
        Value::String(s) => cut(s, 200),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}{}:\n", clean(k)));
                        render_details(v, indent + 2, out);
                    }
                    Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
                        out.push_str(&format!("{pad}{}:\n", clean(k)));
                        render_details(v, indent + 2, out);
                    }
                    _ => {
                        let mut text = String::new();
                        render_details(v, 0, &mut text);
                        out.push_str(&format!("{pad}{}: {}\n", clean(k), text.trim_end()));
                    }
                }
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for item in items {
                let mut text = String::new();
                render_details(item, indent + 2, &mut text);
                // The first line of each item carries the dash.
                let text = text.trim_start().to_string();
                out.push_str(&format!("{pad}- {text}"));
                if !text.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        Value::Array(items) => {
            let list: Vec<String> = items.iter().map(scalar).collect();
            out.push_str(&format!("{pad}{}\n", list.join(", ")));
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other))),
    }
}

async fn show(shared: &Arc<Handles>, args: &ShowArgs, access: &QAccess) -> Reply {
    let mid = args.mid.ok_or("quarantine show: give the MID")?;
    let acc = access.clone();
    let loaded = shared
        .scan
        .local_quarantine
        .with(move |s| {
            let Some(&id) = resolve(s, &[mid])?.get(&mid) else {
                return Ok(None);
            };
            let mut info = s.message(id)?;
            if !acc.message_ok(&info) {
                return Ok(None);
            }
            info.memberships
                .retain(|m| acc.quarantine_ok(&m.quarantine));
            let mut history = s.history(id)?;
            history.retain(|h| h.quarantine.as_deref().is_none_or(|q| acc.quarantine_ok(q)));
            let raw = s.raw(id).ok();
            let quarantines = s.quarantines()?;
            Ok::<_, QuarantineError>(Some((info, history, raw, quarantines)))
        })
        .await
        .map_err(store_err_in(shared))?;
    let Some((mut info, history, raw, quarantines)) = loaded else {
        return Ok(Response::fail(
            ErrorKind::NotFound,
            if access.unrestricted() {
                not_held(mid).text
            } else {
                not_visible(mid).text
            },
        ));
    };
    let view = match raw {
        Some(raw) => Some(
            tokio::task::spawn_blocking(move || {
                pvo_scan::mime::scan(&raw, &pvo_scan::mime::Limits::default())
            })
            .await
            .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    // What matched is the sender's text (or DLP samples): only for roles that may see
    // it; the rest of "why held" stays.
    let mut hidden = None;
    if !access.matched_content {
        let marker = format!("(hidden: role {} may not see matched content)", access.role);
        let mut any = false;
        for m in &mut info.memberships {
            any |= hide_matched(&mut m.details, &marker);
        }
        hidden = Some(any);
    }
    let (mut text, mut data) = render_message(mid, &info, &history, view.as_ref(), &quarantines);
    data.matched_content_hidden = hidden.is_some();
    if hidden == Some(true) {
        text.push_str(&format!(
            "\nThe matched content is hidden: role \"{}\" may not see it.\n",
            access.role
        ));
    }
    Ok(Response::ok(text, replies::data(&data)))
}

/// Replaces every matched text in "why held" details by `marker`: the `matched` text of
/// content filter evidence and the `samples` of DLP detectors, wherever they are nested
/// (details from a gateway over CPQ have the same shape). Names, conditions, verdicts
/// and counts stay. Whether anything was replaced.
fn hide_matched(v: &mut Value, marker: &str) -> bool {
    let mut any = false;
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match (k.as_str(), &*v) {
                    ("matched", Value::String(s)) if s.is_empty() => {}
                    ("matched", Value::Null) => {}
                    ("matched", _) => {
                        *v = json!(marker);
                        any = true;
                    }
                    ("samples", Value::Array(a)) if a.is_empty() => {}
                    ("samples", _) => {
                        *v = json!([marker]);
                        any = true;
                    }
                    _ => any |= hide_matched(v, marker),
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                any |= hide_matched(i, marker);
            }
        }
        _ => {}
    }
    any
}

fn render_message(
    mid: u64,
    info: &MessageInfo,
    history: &[pvo_quarantine::HistoryEntry],
    view: Option<&Result<pvo_scan::mime::ScannedMessage, pvo_scan::mime::Unscannable>>,
    quarantines: &[pvo_quarantine::Quarantine],
) -> (String, MessageReply) {
    let meta_str = |k: &str| info.meta.get(k).and_then(Value::as_str).unwrap_or("");
    let mut t = format!("MID {mid} ({})\n", info.state.as_str());
    let mut received = format!("{} GMT", gmt(info.received));
    if !meta_str("source_ip").is_empty() {
        received.push_str(&format!(" from {}", meta_str("source_ip")));
    }
    if !meta_str("listener").is_empty() {
        received.push_str(&format!(" on {}", meta_str("listener")));
    }
    if let Some(icid) = info.meta.get("icid").and_then(Value::as_u64) {
        received.push_str(&format!(" (ICID {icid})"));
    }
    t.push_str(&format!("  Received:       {received}\n"));
    if !info.gateway.is_empty() {
        t.push_str(&format!(
            "  Gateway:        {} (its MID {})\n",
            clean(&info.gateway),
            info.gateway_mid
        ));
    }
    t.push_str(&format!("  Envelope From:  <{}>\n", clean(&info.sender)));
    for (i, r) in info.recipients.iter().enumerate() {
        let label = if i == 0 { "Envelope To:" } else { "" };
        t.push_str(&format!("  {label:<15} <{}>\n", clean(r)));
    }
    t.push_str(&format!("  Subject:        {}\n", cut(&info.subject, 200)));
    t.push_str(&format!("  Size:           {}\n", format_bytes(info.size)));
    if !info.attachments.is_empty() {
        let list: Vec<String> = info
            .attachments
            .iter()
            .map(|a| format!("{} ({})", cut(&a.name, 80), format_bytes(a.size)))
            .collect();
        t.push_str(&format!("  Attachments:    {}\n", list.join(", ")));
    }

    t.push_str("\nQuarantines:\n");
    let mut memberships = Vec::new();
    for m in &info.memberships {
        let action = quarantines
            .iter()
            .find(|q| q.name.eq_ignore_ascii_case(&m.quarantine))
            .map(|q| q.settings.default_action.as_str());
        t.push_str(&format!(
            "  \"{}\": {}, {}\n",
            m.quarantine,
            membership_state(m.state),
            clean(&m.reason.to_string())
        ));
        t.push_str(&format!("      entered {} GMT", gmt(m.entered_at)));
        match m.state {
            MembershipState::Held => t.push_str(&format!(
                ", scheduled exit {} GMT{}\n",
                gmt(m.exit_at),
                action.map(|a| format!(" (then: {a})")).unwrap_or_default()
            )),
            _ => t.push_str(&format!(
                ", left {} GMT by {} ({})\n",
                m.left_at.map(gmt).unwrap_or_default(),
                clean(m.left_by.as_deref().unwrap_or("-")),
                m.cause.map(|c| c.as_str()).unwrap_or("-"),
            )),
        }
        if !m.details.is_null() {
            t.push_str("      why held:\n");
            render_details(&m.details, 8, &mut t);
        }
        memberships.push(MembershipRow {
            quarantine: m.quarantine.clone(),
            state: membership_state(m.state).to_string(),
            reason: m.reason.to_string(),
            reason_kind: m.reason.kind.as_str().to_string(),
            reason_name: m.reason.name.clone(),
            details: m.details.clone(),
            entered_at: m.entered_at,
            exit_at: m.exit_at,
            default_action: action.map(str::to_string),
            left_at: m.left_at,
            left_by: m.left_by.clone(),
            cause: m.cause.map(|c| c.as_str().to_string()),
            released_early: m.released_early,
        });
    }

    let mut headers = Vec::new();
    let mut parts = Vec::new();
    let mut unscannable = None;
    match view {
        None => t.push_str("\nThe message bytes are no longer stored.\n"),
        Some(Err(u)) => {
            t.push_str(&format!(
                "\nThe message cannot be parsed within the scanning limits: {}\n",
                clean(&u.reason)
            ));
            unscannable = Some(u.reason.clone());
        }
        Some(Ok(v)) => {
            t.push_str("\nHeaders:\n");
            for h in &v.headers {
                t.push_str(&format!("  {}: {}\n", clean(&h.name), cut(&h.value, 200)));
                headers.push(HeaderRow {
                    name: h.name.clone(),
                    value: h.value.clone(),
                });
            }
            t.push_str("\nParts:\n");
            let mut rows = vec![[
                "#".to_string(),
                "Type".into(),
                "Name".into(),
                "Size".into(),
                "True type".into(),
                "SHA-256".into(),
            ]];
            for (i, p) in v.parts.iter().enumerate() {
                rows.push([
                    (i + 1).to_string(),
                    cut(&p.content_type, 40),
                    p.filename
                        .as_deref()
                        .map(|f| cut(f, 40))
                        .unwrap_or_default(),
                    format_bytes(p.size as u64),
                    p.file_type.name().to_string(),
                    if p.sha256.is_empty() {
                        "-".to_string()
                    } else {
                        p.sha256.chars().take(16).collect::<String>() + "…"
                    },
                ]);
                parts.push(PartRow {
                    content_type: p.content_type.clone(),
                    filename: p.filename.clone(),
                    attachment: p.attachment,
                    size: p.size as u64,
                    file_type: p.file_type.name().to_string(),
                    sha256: p.sha256.clone(),
                    depth: p.depth as u64,
                });
            }
            for line in render_table(&rows).lines() {
                t.push_str(&format!("  {line}\n"));
            }
        }
    }

    t.push_str("\nHistory:\n");
    let mut hist = Vec::new();
    for h in history {
        let q = h
            .quarantine
            .as_deref()
            .map(|q| format!(" \"{q}\""))
            .unwrap_or_default();
        let detail = if h.detail.is_empty() {
            String::new()
        } else {
            format!(": {}", cut(&h.detail, 200))
        };
        t.push_str(&format!(
            "  {} GMT  {}  {}{q}{detail}\n",
            gmt(h.at),
            clean(&h.who),
            h.action
        ));
        hist.push(HistoryRow {
            at: h.at,
            who: h.who.clone(),
            action: h.action.clone(),
            quarantine: h.quarantine.clone(),
            detail: h.detail.clone(),
        });
    }

    let data = MessageReply {
        mid,
        msg_id: info.msg_id,
        gateway: info.gateway.clone(),
        gateway_mid: info.gateway_mid,
        state: info.state.as_str().to_string(),
        sender: info.sender.clone(),
        recipients: info.recipients.clone(),
        received: info.received,
        size: info.size,
        subject: info.subject.clone(),
        attachments: info
            .attachments
            .iter()
            .map(|a| AttachmentRow {
                name: a.name.clone(),
                size: a.size,
            })
            .collect(),
        meta: info.meta.clone(),
        quarantines: memberships,
        headers,
        parts,
        unscannable,
        history: hist,
        delivery_ref: info.delivery_ref.clone(),
        matched_content_hidden: false,
    };
    (t, data)
}

fn delay_by(s: Option<&str>) -> Result<DelayBy, String> {
    match s {
        Some("8h") => Ok(DelayBy::Hours8),
        Some("24h") => Ok(DelayBy::Hours24),
        Some("48h") => Ok(DelayBy::Hours48),
        Some("1w") => Ok(DelayBy::Week),
        other => Err(format!(
            "delay by {:?}: allowed: 8h, 24h, 48h, 1w",
            other.unwrap_or("")
        )),
    }
}

/// release, delete, delay, move: on MIDs or on every result of a search.
async fn act(
    shared: &Arc<Handles>,
    req: &Request,
    verb: &str,
    args: &ActArgs,
    access: &QAccess,
) -> Reply {
    let action = match verb {
        "release" => Action::Release,
        "delete" => Action::Delete,
        "delay" => Action::Delay(delay_by(text(&args.by))?),
        _ => Action::Move {
            to: text(&args.to)
                .ok_or("quarantine move: say where to with --to")?
                .to_string(),
        },
    };
    let scope = if verb == "move" {
        Scope::Quarantine(
            text(&args.from)
                .ok_or("quarantine move: say from which quarantine with --from")?
                .to_string(),
        )
    } else {
        match text(&args.quarantine) {
            Some(q) => Scope::Quarantine(q.to_string()),
            None => Scope::All,
        }
    };
    if let Scope::Quarantine(q) = &scope {
        if !access.quarantine_ok(q) {
            return Ok(Response::fail(
                ErrorKind::Forbidden,
                access.no_access(q).text,
            ));
        }
    }
    if let Action::Move { to } = &action {
        if !access.quarantine_ok(to) {
            return Ok(Response::fail(
                ErrorKind::Forbidden,
                access.no_access(to).text,
            ));
        }
    }
    let actor = Actor::manual(who(req));
    let at = now();
    let acc = access.clone();
    let results = if args.all_results {
        if verb == "move" {
            return Err("quarantine move: name the messages by MID".into());
        }
        let mut q = query_from(&args.query)?;
        if let Some(name) = &q.quarantine {
            if !access.quarantine_ok(name) {
                return Ok(Response::fail(
                    ErrorKind::Forbidden,
                    access.no_access(name).text,
                ));
            }
        }
        if access.unrestricted() {
            match shared
                .scan
                .local_quarantine
                .with(move |s| {
                    s.bulk_search(&q, &action, &actor, at)
                        .map(|r| (r, Vec::new()))
                })
                .await
            {
                Ok(r) => r,
                Err(e) => return Ok(store_fail(shared, e)),
            }
        } else {
            access.limit(&mut q);
            match shared
                .scan
                .local_quarantine
                .with(move |s| {
                    let ids = s.search_ids(&q)?;
                    let (ids, denied) = permitted(s, &acc, &scope, ids, |id| id)?;
                    let results = if ids.is_empty() {
                        Vec::new()
                    } else {
                        s.bulk(&ids, &scope, &action, &actor, at)?
                    };
                    Ok::<_, QuarantineError>((results, denied))
                })
                .await
            {
                Ok(r) => r,
                Err(e) => return Ok(store_fail(shared, e)),
            }
        }
    } else {
        let mids = args.mids.clone();
        if mids.is_empty() {
            return Err(format!("quarantine {verb}: give the MIDs").into());
        }
        match shared
            .scan
            .local_quarantine
            .with(move |s| {
                let map = resolve(s, &mids)?;
                let mut missing: Refusals = mids
                    .iter()
                    .filter(|m| !map.contains_key(m))
                    .map(|&m| {
                        let e = if acc.unrestricted() {
                            not_held(m)
                        } else {
                            not_visible(m)
                        };
                        (m, e.text, e.kind)
                    })
                    .collect();
                let found: Vec<(u64, MsgId)> = mids
                    .iter()
                    .filter_map(|m| map.get(m).map(|id| (*m, *id)))
                    .collect();
                let (ids, denied) = if acc.unrestricted() {
                    (found.iter().map(|(_, id)| *id).collect(), Vec::new())
                } else {
                    permitted(s, &acc, &scope, found, |(_, id)| id)?
                };
                missing.extend(denied);
                let results = if ids.is_empty() {
                    Vec::new()
                } else {
                    s.bulk(&ids, &scope, &action, &actor, at)?
                };
                Ok::<_, QuarantineError>((results, missing))
            })
            .await
        {
            Ok(r) => r,
            Err(e) => return Ok(store_fail(shared, e)),
        }
    };
    let (results, missing) = results;
    report(shared, results, missing, verb).await
}

/// MIDs with the text that says why they were not acted on, and what kind of failure
/// that is (a MID not held, or one the caller may not see, is not found).
type Refusals = Vec<(u64, String, ErrorKind)>;

/// Splits `items` into the store ids the caller may act on with `scope` and the refusals
/// (MID, text) for the others: a message the caller may not see is "not held"; acting on
/// all the quarantines of a message also held where the caller has no access is refused.
fn permitted<T>(
    s: &Store,
    acc: &QAccess,
    scope: &Scope,
    items: Vec<T>,
    id_of: impl Fn(T) -> MsgId,
) -> pvo_quarantine::Result<(Vec<MsgId>, Refusals)> {
    let mut ok = Vec::new();
    let mut denied = Vec::new();
    for item in items {
        let id = id_of(item);
        let info = s.message(id)?;
        let mid = info
            .meta
            .get("mid")
            .and_then(Value::as_u64)
            .unwrap_or(info.gateway_mid);
        if !acc.message_ok(&info) {
            denied.push((mid, not_visible(mid).text, ErrorKind::NotFound));
            continue;
        }
        if matches!(scope, Scope::All) {
            let hidden: Vec<String> = info
                .memberships
                .iter()
                .filter(|m| m.state == MembershipState::Held && !acc.quarantine_ok(&m.quarantine))
                .map(|m| m.quarantine.clone())
                .collect();
            if !hidden.is_empty() {
                let mine: Vec<String> = info
                    .memberships
                    .iter()
                    .filter(|m| {
                        m.state == MembershipState::Held && acc.quarantine_ok(&m.quarantine)
                    })
                    .map(|m| format!("--quarantine {}", m.quarantine))
                    .collect();
                denied.push((
                    mid,
                    format!(
                        "MID {mid} is also held in a quarantine role \"{}\" has no access to; act on it in yours only with {}",
                        acc.role,
                        mine.join(" or ")
                    ),
                    ErrorKind::Invalid,
                ));
                continue;
            }
        }
        ok.push(id);
    }
    Ok((ok, denied))
}

/// Logs and delivers through `handle_reports`, then answers with the same lines.
async fn report(
    shared: &Arc<Handles>,
    results: BulkResult,
    missing: Refusals,
    verb: &str,
) -> Reply {
    let mut reports: Vec<ActionReport> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    // The answer's kind: not found when a message (or the quarantine named) was not
    // found, else invalid.
    let mut kind = ErrorKind::Invalid;
    for (m, text, k) in missing {
        if k == ErrorKind::NotFound {
            kind = k;
        }
        errors.push((format!("MID {m}"), text));
    }
    // An error names the store id only; show the MID when the store still knows it.
    let mut failed_ids = Vec::new();
    for (id, r) in results {
        match r {
            Ok(rep) => reports.push(rep),
            Err(e) => {
                let e = store_err_in(shared)(e);
                if e.kind == ErrorKind::NotFound {
                    kind = ErrorKind::NotFound;
                }
                failed_ids.push((id, e.text))
            }
        }
    }
    let reports =
        crate::core::scanning::local_quarantine::with_node_mids(&(&**shared).into(), reports).await;
    if !failed_ids.is_empty() {
        let ids: Vec<MsgId> = failed_ids.iter().map(|(id, _)| *id).collect();
        let mids: HashMap<MsgId, u64> = shared
            .scan
            .local_quarantine
            .with(move |s| {
                ids.iter()
                    .filter_map(|&id| {
                        s.message(id).ok().map(|m| {
                            (
                                id,
                                m.meta
                                    .get("mid")
                                    .and_then(|v| v.as_u64())
                                    .unwrap_or(m.gateway_mid),
                            )
                        })
                    })
                    .collect()
            })
            .await;
        for (id, e) in failed_ids {
            let who = mids
                .get(&id)
                .map(|m| format!("MID {m}"))
                .unwrap_or_else(|| format!("quarantine message {id}"));
            // The store words errors by its id; the administrator knows the MID.
            let e = e.replace(&format!("message {id} "), &format!("{who} "));
            errors.push((who, e));
        }
    }
    let summary = summarize(&reports);
    let delivered: HashMap<u64, u64> = handle_reports(&(&**shared).into(), reports.clone())
        .await
        .into_iter()
        .collect();
    let mut text = String::new();
    let mut items = Vec::new();
    for r in &reports {
        let mid = r.gateway_mid;
        // The log lines, except that a delay shows its new exit as a date.
        let mut lines: Vec<String> = r
            .log_lines(mid)
            .into_iter()
            .zip(r.changes.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(line, change)| match change {
                Some(Change::Delayed { quarantine, to, .. }) => format!(
                    "MID {mid} scheduled exit from quarantine \"{quarantine}\" delayed to {} GMT",
                    gmt(*to)
                ),
                _ => line,
            })
            .collect();
        let (outcome, remaining) = match &r.outcome {
            Outcome::Deliver { .. } => {
                match delivered.get(&mid) {
                    Some(new) => lines.push(format!("MID {mid} queued for delivery as MID {new}")),
                    None => lines.push(format!("MID {mid} could not be queued for delivery yet; see mail_logs (it is handed over again at the next start)")),
                }
                (Done::Delivered, Vec::new())
            }
            Outcome::StillHeld { remaining, .. } => {
                let names: Vec<String> = remaining.iter().map(|q| format!("\"{q}\"")).collect();
                lines.push(format!("MID {mid} still held in {}", names.join(", ")));
                (Done::StillHeld, remaining.clone())
            }
            Outcome::Deleted { .. } => (Done::Deleted, Vec::new()),
            Outcome::Unchanged {
                state, remaining, ..
            } => {
                let names: Vec<String> = remaining.iter().map(|q| format!("\"{q}\"")).collect();
                let held = if names.is_empty() {
                    String::new()
                } else {
                    format!("; held in {}", names.join(", "))
                };
                lines.push(format!(
                    "MID {mid} unchanged (nothing to {verb}: the message is {}{held})",
                    state.as_str()
                ));
                (Done::Unchanged, remaining.clone())
            }
        };
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        items.push(ActResult::Done(ActDone {
            mid,
            outcome,
            lines,
            remaining,
            delivered_as: delivered.get(&mid).copied(),
        }));
    }
    for (who, e) in &errors {
        if e.starts_with(who.as_str()) {
            text.push_str(&format!("{e}\n"));
        } else {
            text.push_str(&format!("{who}: {e}\n"));
        }
        items.push(ActResult::Refused(ActRefused {
            mid: who.clone(),
            error: e.clone(),
        }));
    }
    if reports.is_empty() && errors.is_empty() {
        text.push_str("No message matched; nothing was changed.\n");
    } else if !reports.is_empty() {
        text.push_str(&format!("{summary}\n"));
    }
    let data = ActReply {
        results: items,
        changed: reports.iter().filter(|r| !r.changes.is_empty()).count() as u64,
        errors: errors.len() as u64,
    };
    Ok(Response {
        ok: errors.is_empty(),
        text,
        data: replies::data(&data),
        kind: (!errors.is_empty()).then_some(kind),
    })
}

fn summarize(reports: &[ActionReport]) -> String {
    let count = |f: &dyn Fn(&ActionReport) -> bool| reports.iter().filter(|r| f(r)).count();
    let delivered = count(&|r| matches!(r.outcome, Outcome::Deliver { .. }));
    let still = count(&|r| matches!(r.outcome, Outcome::StillHeld { .. }));
    let deleted = count(&|r| matches!(r.outcome, Outcome::Deleted { .. }));
    let unchanged = count(&|r| matches!(r.outcome, Outcome::Unchanged { .. }));
    let mut parts = Vec::new();
    if delivered > 0 {
        parts.push(format!("{delivered} released from all quarantines"));
    }
    if still > 0 {
        parts.push(format!("{still} still held"));
    }
    if deleted > 0 {
        parts.push(format!("{deleted} deleted"));
    }
    if unchanged > 0 {
        parts.push(format!("{unchanged} unchanged"));
    }
    format!(
        "{}: {}.",
        plural(reports.len(), "message"),
        if parts.is_empty() {
            "nothing changed".to_string()
        } else {
            parts.join(", ")
        }
    )
}

async fn copy(shared: &Arc<Handles>, req: &Request, args: &CopyArgs) -> Reply {
    let mid = args.mid.ok_or("quarantine copy: give the MID")?;
    let to: Vec<String> = args
        .to
        .as_ref()
        .and_then(List::array)
        .map(<[String]>::to_vec)
        .unwrap_or_default();
    if to.is_empty() {
        return Err("quarantine copy: give the addresses with --to".into());
    }
    // Typed as RFC 5321 text (`"john doe"@example.com` quoted); kept in the
    // stored form, which delivery writes back quoted.
    let mut to_stored = Vec::with_capacity(to.len());
    for a in &to {
        match pvo_proto::path::parse_address(a) {
            Ok(m) => to_stored.push(m.to_string()),
            Err(e) => {
                return Err(format!(
                    "quarantine copy: {a:?} is not an email address ({e}; ASCII only, quote a local part with spaces)"
                ).into())
            }
        }
    }
    let to = to_stored;
    let user = who(req);
    let rcpts = to.clone();
    let copy = shared
        .scan
        .local_quarantine
        .with(move |s| {
            let Some(&id) = resolve(s, &[mid])?.get(&mid) else {
                return Ok(None);
            };
            s.send_copy(id, &rcpts, &user, now()).map(Some)
        })
        .await
        .map_err(store_err_in(shared))?;
    let Some(copy) = copy else {
        return Ok(Response::fail(ErrorKind::NotFound, not_held(mid).text));
    };
    // The null sender: a copy that cannot be delivered bounces to no one, never to the
    // (possibly forged) original sender. Not scanned again: an administrator asked for
    // exactly these bytes.
    let env = Envelope {
        mid: 0,
        icid: 0,
        sender: String::new(),
        recipients: copy.to.clone(),
        received_at: now(),
        source_ip: String::new(),
        listener: String::new(),
        dsn: false,
        size: 0,
        outgoing: false,
        scanned: true,
        cpq: None,
    };
    let new_mid =
        crate::core::scanning::pipeline::inject(&(&**shared).into(), &env, copy.raw, true)
            .await
            .map_err(|e| format!("the copy of MID {mid} could not be queued: {e:#}"))?;
    shared.mail.log.emit(crate::core::events::Event::CopySent {
        mid,
        to: &to,
        new_mid,
        by: &copy.requested_by,
    });
    Ok(Response::ok(
        format!(
            "A copy of MID {mid} is queued for {} as MID {new_mid}; the message stays in quarantine.",
            to.join(", ")
        ),
        replies::data(&CopyReply {
            mid,
            to,
            copy_mid: new_mid,
        }),
    ))
}

async fn manage_by_rule(
    shared: &Arc<Handles>,
    req: &Request,
    args: &ManageByRuleArgs,
    access: &QAccess,
) -> Reply {
    if !access.quarantine_ok("Outbreak") {
        return Err(access.no_access("Outbreak"));
    }
    if !access.domains.is_empty() {
        return Err(format!(
            "manage-by-rule acts on every message of the rule, and role \"{}\" is limited to recipients in {}; act on the messages by MID instead (`quarantine search --quarantine Outbreak`).",
            access.role,
            access.domains.join(", ")
        ).into());
    }
    let rule = text(&args.rule)
        .ok_or("manage-by-rule: give the outbreak rule id")?
        .to_string();
    let what = text(&args.what).unwrap_or_default().to_string();
    let action = match what.as_str() {
        "release" => Action::Release,
        "delete" => Action::Delete,
        "delay" => Action::Delay(delay_by(text(&args.by))?),
        other => {
            return Err(format!(
                "manage-by-rule: {other:?} is not an action; allowed: release, delete, delay"
            )
            .into())
        }
    };
    let actor = Actor::manual(who(req));
    let r = rule.clone();
    let results = shared
        .scan
        .local_quarantine
        .with(move |s| s.manage_by_rule(&r, &action, &actor, now()))
        .await
        .map_err(store_err_in(shared))?;
    if results.is_empty() {
        return Ok(Response::ok(
            format!(
                "No message is held in Outbreak because of rule {}.",
                clean(&rule)
            ),
            json!({ "results": [], "changed": 0, "errors": 0 }),
        ));
    }
    report(shared, results, Vec::new(), &what).await
}

async fn sweep(shared: &Arc<Handles>, args: &SweepArgs) -> Reply {
    let at = args.at.unwrap_or_else(now);
    let reports = shared
        .scan
        .local_quarantine
        .with(move |s| s.sweep(at))
        .await
        .map_err(store_err_in(shared))?;
    let n = reports.len();
    let mut resp = report(
        shared,
        reports.into_iter().map(|r| (r.msg_id, Ok(r))).collect(),
        Vec::new(),
        "sweep",
    )
    .await?;
    let head = if n == 0 {
        format!(
            "Sweep as of {} GMT: no scheduled exit was due and the space quota is not exceeded.\n",
            gmt(at)
        )
    } else {
        format!("Sweep as of {} GMT:\n", gmt(at))
    };
    resp.text = if n == 0 {
        head
    } else {
        format!("{head}{}", resp.text)
    };
    resp.data["at"] = json!(at);
    Ok(resp)
}

// ---------------------------------------------------------------------------------------
// outbreakupdate, outbreakstatus
// ---------------------------------------------------------------------------------------

pub async fn outbreakupdate(
    shared: &Arc<Handles>,
    args: &OutbreakUpdateArgs,
    id: &Identity,
) -> Reply {
    use crate::core::scanning::outbreak_store::{from_bytes, read, Configured, Origin};
    let file = text(&args.file)
        .ok_or("outbreakupdate: give the rules file")?
        .to_string();
    // Over SSH and the API only a file of the import directory (`crate::core::import`).
    let (s, from) = (shared.clone(), id.from.clone());
    let (path, bytes) = tokio::task::spawn_blocking(move || {
        crate::core::import::read(&s.config.current().data_dir, &file, &from)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("outbreakupdate: {e}"))?;
    // Load, then persist the accepted file's bytes in DATA_DIR/outbreak (fsynced) before
    // putting them in force and answering, so a restart keeps these rules.
    let (s, p) = (shared.clone(), path.clone());
    let in_force = tokio::task::spawn_blocking(move || {
        let loaded = from_bytes(&p, bytes)?;
        // The configuration's rules file as it is now: a restart keeps these rules
        // until the configuration names another file or that file another version.
        let configured = s
            .config
            .current()
            .scanning
            .outbreak_rules
            .clone()
            .map(|c| Configured {
                version: read(&c).ok().map(|l| l.file.version),
                path: c,
            });
        s.scan
            .outbreak
            .update(loaded, &p, Origin::Outbreakupdate, configured, now())
    })
    .await
    .map_err(|e| e.to_string())??;
    let version = in_force.rules.version().to_string();
    let count = in_force.rules.len();
    shared
        .mail
        .log
        .emit(crate::core::events::Event::OutbreakRulesUpdated {
            version: &version,
            rules: count,
            from: &path,
            kept: in_force.record.as_ref().map(|(_, c)| c.as_path()),
        });
    // Rescan with the rules now in force (a concurrent update may have replaced them;
    // the newest rules are the right ones to rescan with).
    let rules = shared
        .scan
        .outbreak_rules()
        .ok_or("outbreak rules disappeared during the update")?;
    let scanner = shared.scan.scanner();
    let (scanned, released, kept) = shared
        .scan
        .local_quarantine
        .with(move |s| rescan_outbreak(s, &scanner, &rules))
        .await
        .map_err(store_err_in(shared))?;
    let n_released = released.len();
    let mut resp = report(
        shared,
        released.into_iter().map(|r| (r.msg_id, Ok(r))).collect(),
        Vec::new(),
        "release",
    )
    .await?;
    let head = format!(
        "Outbreak rules updated: version {version}, {} (from {}).\nRescanned {} held in Outbreak: {n_released} released (below their policy's threshold now), {kept} still held.\n",
        plural(count, "rule"),
        path.display(),
        plural(scanned, "message"),
    );
    resp.text = if n_released == 0 {
        head
    } else {
        format!("{head}{}", resp.text)
    };
    if shared
        .config
        .current()
        .cpq
        .as_ref()
        .is_some_and(|c| c.central())
    {
        // Central mode: the held messages are on the manager; the gateway rescans its
        // copies and tells the manager which ones to release.
        let rules = shared
            .scan
            .outbreak_rules()
            .ok_or("outbreak rules disappeared during the update")?;
        let (n, released, still, err) =
            crate::core::cpq::gateway::rescan_outbreak_copies(&(&**shared).into(), rules).await;
        resp.text.push_str(&format!(
            "Centralized Outbreak quarantine: rescanned {}: {} released on the manager, {still} still held.\n",
            plural(n, "kept outbreak message"),
            released.len()
        ));
        if let Some(e) = &err {
            resp.text.push_str(&format!("The manager could not be told: {e}; the clean ones are tried again at the next outbreakupdate.\n"));
        }
        resp.data["central"] =
            json!({ "rescanned": n, "released": released, "still_held": still, "error": err });
    }
    resp.data["version"] = json!(version);
    resp.data["rules"] = json!(count);
    resp.data["rescanned"] = json!(scanned);
    resp.data["released"] = json!(n_released);
    resp.data["still_held"] = json!(kept);
    Ok(resp)
}

/// Rescans every message held in Outbreak with `rules`; releases (cause `rescan`) those
/// below their policy's threshold now. Returns (rescanned, release reports, still held).
fn rescan_outbreak(
    s: &Store,
    scanner: &crate::core::scanning::Scanner,
    rules: &pvo_scan::outbreak::OutbreakRules,
) -> pvo_quarantine::Result<(usize, Vec<ActionReport>, usize)> {
    let ids = s.search_ids(&SearchQuery {
        quarantine: Some("Outbreak".into()),
        max_count: None,
        ..SearchQuery::default()
    })?;
    let mut released = Vec::new();
    let mut kept = 0;
    let mut scanned = 0;
    for id in ids {
        let (info, raw) = match (s.message(id), s.raw(id)) {
            (Ok(i), Ok(r)) => (i, r),
            // Released or deleted since the listing.
            (Err(QuarantineError::UnknownMessage(_)), _)
            | (_, Err(QuarantineError::BodyGone(_))) => continue,
            (Err(e), _) | (_, Err(e)) => return Err(e),
        };
        scanned += 1;
        let outgoing = info
            .meta
            .get("outgoing")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if scanner.outbreak_still_holds(outgoing, &info.sender, &info.recipients, &raw, rules) {
            kept += 1;
            continue;
        }
        match s.act(
            id,
            &Scope::Quarantine("Outbreak".into()),
            &Action::Release,
            &Actor::system(Cause::Rescan),
            now(),
        ) {
            Ok(r) => released.push(r),
            Err(QuarantineError::NotInQuarantine { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((scanned, released, kept))
}

pub async fn outbreakstatus(shared: &Arc<Handles>) -> Reply {
    // One read: the rules, their descriptions and where they came from go together.
    let in_force = shared.scan.outbreak.in_force();
    let rules = in_force.as_ref().map(|f| f.rules.clone());
    let cfg = shared.config.current();
    let listed: Vec<(String, u8)> = rules
        .as_ref()
        .map(|r| r.rules().map(|(id, l)| (id.to_string(), l.get())).collect())
        .unwrap_or_default();
    // Descriptions and where the rules came from: kept with the rules in force (the
    // persisted record when they are the persisted ones).
    let version = rules.as_ref().map(|r| r.version().to_string());
    let file: Option<&OutbreakRulesFile> = in_force
        .as_deref()
        .map(|f| &f.file)
        .filter(|f| Some(&f.version) == version.as_ref());
    let description = |id: &str| -> String {
        file.and_then(|f| f.rules.iter().find(|r| r.id == id))
            .map(|r| r.description.clone())
            .unwrap_or_default()
    };
    let ids: Vec<String> = listed.iter().map(|(id, _)| id.clone()).collect();
    let (per_rule, total) = shared
        .scan
        .local_quarantine
        .with(move |s| {
            let count = |rule: Option<&str>| {
                s.search(&SearchQuery {
                    quarantine: Some("Outbreak".into()),
                    reason: rule.map(str::to_string),
                    reason_kind: rule.map(|_| ReasonKind::Outbreak),
                    limit: 0,
                    max_count: None,
                    ..SearchQuery::default()
                })
                .map(|p| p.total)
            };
            let mut per_rule = Vec::new();
            for id in &ids {
                per_rule.push(count(Some(id))?);
            }
            Ok::<_, QuarantineError>((per_rule, count(None)?))
        })
        .await
        .map_err(store_err_in(shared))?;
    let mut t = String::new();
    match &version {
        Some(v) => t.push_str(&format!(
            "Outbreak rules version: {}, {}\n",
            clean(v),
            plural(listed.len(), "rule")
        )),
        None => t.push_str(
            "No outbreak rules are loaded: set [outbreak] rules_file in the configuration, or load a file with `pvo outbreakupdate FILE`.\n",
        ),
    }
    let source = in_force.as_deref().map(|f| {
        let (at, kept) = match &f.record {
            Some((r, copy)) => (Some(r.at), Some(copy.display().to_string())),
            None => (None, None),
        };
        match (at, &kept) {
            (Some(at), Some(kept)) => t.push_str(&format!(
                "Loaded from: {} ({}, {}), kept in {}\n",
                clean(&f.source.display().to_string()),
                f.origin.as_str(),
                crate::core::mail_log::ctime(at),
                clean(kept)
            )),
            _ => t.push_str(&format!(
                "Loaded from: {} ({}), not persisted\n",
                clean(&f.source.display().to_string()),
                f.origin.as_str()
            )),
        }
        t.push_str(&format!("In force because: {}\n", clean(&f.why)));
        json!({
            "file": f.source,
            "origin": f.origin.as_str(),
            "at": at,
            "at_text": at.map(crate::core::mail_log::ctime),
            "persisted": kept,
            "why": f.why,
        })
    });
    let thresholds: Vec<String> = cfg
        .scanning
        .policies
        .iter()
        .filter_map(|p| {
            p.outbreak
                .map(|o| format!("{} (threshold {})", p.name, o.threshold))
        })
        .collect();
    if thresholds.is_empty() {
        t.push_str("No mail policy has outbreak filtering on.\n");
    } else {
        t.push_str(&format!(
            "Mail policies with outbreak filtering: {}\n",
            thresholds.join(", ")
        ));
    }
    let mut rows_json = Vec::new();
    if !listed.is_empty() {
        let mut rows = vec![[
            "Rule ID".to_string(),
            "Level".into(),
            "Held".into(),
            "Description".into(),
        ]];
        for ((id, level), held) in listed.iter().zip(&per_rule) {
            let d = description(id);
            rows.push([clean(id), level.to_string(), held.to_string(), cut(&d, 60)]);
            rows_json.push(json!({ "id": id, "level": level, "description": d, "held": held }));
        }
        t.push('\n');
        t.push_str(&render_table(&rows));
    }
    let by_rules: u64 = per_rule.iter().sum();
    t.push_str(&format!("\nMessages held in Outbreak: {total}"));
    if total > by_rules {
        t.push_str(&format!(
            " ({} held by rules no longer in force)",
            total - by_rules
        ));
    }
    t.push('\n');
    Ok(Response::ok(
        t,
        json!({
            "version": version,
            "source": source,
            "rules": rows_json,
            "held": total,
            "held_by_other_rules": total.saturating_sub(by_rules),
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_settings_patch() {
        let mut s = pvo_quarantine::Builtin::Policy.default_settings();
        patch_settings(
            &mut s,
            &json!({
                "retention_secs": 3600, "default_action": "release", "exempt_free_up": true,
                "subject_prepend": "[released]", "x_header": "X-Released: yes",
                "strip_attachments": true, "access": ["alice", "operator", "Help Desk User"],
            }),
        )
        .unwrap();
        assert_eq!(s.retention_secs, 3600);
        assert_eq!(s.default_action, DefaultAction::Release);
        assert!(s.exempt_from_free_up && s.early_release.strip_attachments);
        assert_eq!(
            s.early_release.subject_prepend.as_deref(),
            Some("[released]")
        );
        assert_eq!(
            s.early_release.x_header,
            Some(XHeader {
                name: "X-Released".into(),
                value: "yes".into()
            })
        );
        assert_eq!(s.access.users, vec!["alice"]);
        assert_eq!(s.access.roles, vec!["Operator", "Help Desk User"]);
        // Absent fields stay; "" clears.
        patch_settings(&mut s, &json!({ "subject_prepend": "", "x_header": null })).unwrap();
        assert_eq!(s.early_release.subject_prepend, None);
        assert!(s.early_release.x_header.is_some());
        for bad in [
            json!({ "default_action": "keep" }),
            json!({ "x_header": "no colon" }),
            json!({ "access": ["Technician"] }),
        ] {
            assert!(patch_settings(&mut s, &bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn quarantine_text_is_safe_for_terminals() {
        assert_eq!(clean("a\u{1b}[2Jb\r\n"), "a\\u{1b}[2Jb\\r\\n");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
    }

    #[test]
    fn quarantine_address_filters() {
        let cases = [
            (
                "alice@example.com",
                AddrMatch::Is("alice@example.com".into()),
            ),
            ("@example.com", AddrMatch::Domain("example.com".into())),
            ("example.com", AddrMatch::Domain("example.com".into())),
            ("ali*", AddrMatch::BeginsWith("ali".into())),
        ];
        for (input, want) in cases {
            assert_eq!(addr_match(input), want, "{input}");
        }
    }

    #[test]
    fn quarantine_details_render_readably() {
        let mut out = String::new();
        render_details(
            &json!({ "evidence": [{ "condition": "subject_contains \"x\"", "matched": "x\u{7}y" }], "threat_level": 4, "rules": ["A", "B"] }),
            2,
            &mut out,
        );
        assert_eq!(
            out,
            "  evidence:\n    - condition: subject_contains \"x\"\n      matched: x\\u{7}y\n  rules: A, B\n  threat_level: 4\n"
        );
    }

    #[test]
    fn matched_content_is_hidden_and_the_rest_of_why_held_stays() {
        let m = "(hidden)";
        let mut filter = json!({ "evidence": [
            { "condition": "body_regex \"code-\\\\d+\"", "matched": "code-4711" },
            { "condition": "not subject_contains \"x\"", "matched": "" },
        ] });
        assert!(hide_matched(&mut filter, m));
        assert_eq!(
            filter,
            json!({ "evidence": [
                { "condition": "body_regex \"code-\\\\d+\"", "matched": m },
                { "condition": "not subject_contains \"x\"", "matched": "" },
            ] })
        );
        let mut dlp = json!({ "policy": "cards", "severity": "low", "total": 2, "detectors": [
            { "detector": "payment_card", "count": 2, "samples": ["4111 **** **** 1111"] },
            { "detector": "iban", "count": 0, "samples": [] },
        ], "actions": [] });
        assert!(hide_matched(&mut dlp, m));
        assert_eq!(dlp["detectors"][0]["samples"], json!([m]));
        assert_eq!(dlp["detectors"][0]["count"], 2);
        assert_eq!(dlp["detectors"][1]["samples"], json!([]));
        assert_eq!(dlp["policy"], "cards");
        assert!(!dlp.to_string().contains("4111"));
        // Nothing matched to hide: a virus name, an outbreak verdict.
        for mut v in [
            json!({ "virus": "Eicar-Test.Custom" }),
            json!({ "threat_level": 4, "rules": ["OUTB-1"] }),
            Value::Null,
        ] {
            let before = v.clone();
            assert!(!hide_matched(&mut v, m));
            assert_eq!(v, before);
        }
    }
}
