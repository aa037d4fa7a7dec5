//! [`Store`]: the one type callers use, whatever the backend.
//!
//! A backend provides a small primitive set — quarantine CRUD, insert, `transition` (load a
//! message's record, run `semantics::plan`, write the plan, in one transaction), reads,
//! search, and candidate lists for expiry, free-up-space and manage-by-rule. Everything
//! built from those (actions, bulk, sweep, free-up-space) lives here once. Two backends
//! implement them: `sqlite` (embedded, the default) and `pg` (PostgreSQL, shareable by
//! several managers); callers never see which.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{QuarantineError, Result};
use crate::model::{
    Action, ActionReport, Actor, CopyToSend, DelayBy, HistoryEntry, Inserted, MessageInfo, MsgId,
    NewMessage, PendingDelivery, Quarantine, QuarantineDeleted, QuarantineId, QuarantineSettings,
    Scope, Usage,
};
use crate::pg::PgStore;
use crate::search::{SearchPage, SearchQuery};
use crate::semantics::{Op, Sel};
use crate::sqlite::{SqliteStore, BATCH};
use crate::table::render_quarantine_table;

/// The quarantine store. `Send + Sync`: share one in an `Arc`; every method blocks.
pub enum Store {
    /// The embedded SQLite database (the default).
    Sqlite(SqliteStore),
    /// A PostgreSQL database, which several managers may share.
    Postgres(Box<PgStore>),
}

/// The MIDs each manager of a shared store has to itself (see [`Store::mid_floor`]).
pub const MID_SPAN: u64 = 1_000_000_000_000;

/// Per-message results of a bulk action: a request error for one message (not in that
/// quarantine, unknown id) does not stop the others.
pub type BulkResult = Vec<(MsgId, Result<ActionReport>)>;

macro_rules! backend {
    ($self:ident, $b:ident => $e:expr) => {
        match $self {
            Store::Sqlite($b) => $e,
            Store::Postgres($b) => $e,
        }
    };
}

impl Store {
    /// Opens (or creates) the embedded store at `path` and applies pending migrations.
    pub fn open_sqlite(path: &Path, now: u64) -> Result<Store> {
        Ok(Store::Sqlite(SqliteStore::open(path, now)?))
    }

    /// Connects to the PostgreSQL database of `url` without TLS — only a Unix socket or a
    /// loopback address is accepted — and applies pending migrations (once, whoever else
    /// starts at the same time). For a remote database use [`Store::open_postgres_tls`].
    pub fn open_postgres(url: &str, now: u64) -> Result<Store> {
        Ok(Store::Postgres(Box::new(PgStore::open_local(url, now)?)))
    }

    /// [`Store::open_postgres`] with a TLS connector (the node's rustls one).
    pub fn open_postgres_tls<T>(url: &str, tls: T, now: u64) -> Result<Store>
    where
        T: postgres::tls::MakeTlsConnect<postgres::Socket> + Clone + Send + Sync + 'static,
        T::TlsConnect: Send,
        T::Stream: Send + Sync,
        <T::TlsConnect as postgres::tls::TlsConnect<postgres::Socket>>::Future: Send,
    {
        Ok(Store::Postgres(Box::new(PgStore::open(url, tls, now)?)))
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<u32> {
        backend!(self, b => b.schema_version())
    }

    /// The id shared by every manager of a PostgreSQL store (`None` for the embedded one,
    /// which one manager owns).
    pub fn deployment_id(&self) -> Result<Option<String>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(b) => b.deployment_id(),
        }
    }

    /// The first MID manager `node_id` may give on this store: 1 on the embedded one; on
    /// PostgreSQL its slot × [`MID_SPAN`], so the managers of one deployment never give
    /// the same MID (each message found by its MID on any of them).
    pub fn mid_floor(&self, node_id: &str, now: u64) -> Result<u64> {
        match self {
            Store::Sqlite(_) => Ok(1),
            Store::Postgres(b) => Ok(b.manager_slot(node_id, now)?.saturating_mul(MID_SPAN)),
        }
    }

    /// Whether this process runs the deployment-wide jobs (expiry, free-up space): always
    /// for the embedded store; on PostgreSQL, the one manager holding the leader lock,
    /// taken over by another when it dies.
    pub fn try_lead(&self) -> Result<bool> {
        match self {
            Store::Sqlite(_) => Ok(true),
            Store::Postgres(b) => b.try_lead(),
        }
    }

    /// Releases still pending `lease` seconds after they were made or last claimed (their
    /// manager stopped before queueing them, or queueing failed), claimed by this process
    /// and returned to be queued; on PostgreSQL each is claimed by one manager at a time.
    pub fn claim_stale_pending(&self, now: u64, lease: u64) -> Result<Vec<PendingDelivery>> {
        backend!(self, b => b.claim_stale_pending(now, lease))
    }

    // ---- quarantines ----

    /// All quarantines, by id (built-ins 1 to 4 first).
    pub fn quarantines(&self) -> Result<Vec<Quarantine>> {
        backend!(self, b => b.quarantines())
    }

    /// One quarantine by name (case-insensitive).
    pub fn get_quarantine(&self, name: &str) -> Result<Quarantine> {
        backend!(self, b => b.quarantine_by_name(name))
    }

    /// Adds a custom quarantine.
    pub fn create_quarantine(
        &self,
        name: &str,
        settings: &QuarantineSettings,
        now: u64,
    ) -> Result<Quarantine> {
        backend!(self, b => b.create_quarantine(name, settings, now))
    }

    /// Changes a quarantine's settings (built-ins too); names never change.
    pub fn update_quarantine(
        &self,
        name: &str,
        settings: &QuarantineSettings,
    ) -> Result<Quarantine> {
        backend!(self, b => b.update_quarantine(name, settings))
    }

    /// Deletes a custom quarantine; its held messages move to Unclassified (reported, so
    /// the caller can tell the administrator). Built-ins cannot be deleted.
    pub fn delete_quarantine(&self, name: &str, who: &str, now: u64) -> Result<QuarantineDeleted> {
        backend!(self, b => b.delete_quarantine(name, who, now))
    }

    /// Sets or clears the space quota of the whole store (`cpq_quota`), in bytes.
    pub fn set_quota(&self, quota_bytes: Option<u64>) -> Result<()> {
        backend!(self, b => b.set_quota(quota_bytes))
    }

    /// Space used and messages per quarantine and in total.
    pub fn usage(&self) -> Result<Usage> {
        backend!(self, b => b.usage())
    }

    /// The `quarantineconfig` list table.
    pub fn quarantine_table(&self) -> Result<String> {
        Ok(render_quarantine_table(&self.usage()?))
    }

    // ---- messages ----

    /// Quarantines one message; durable when this returns. Idempotent on
    /// `idempotency_key`.
    pub fn quarantine(&self, msg: &NewMessage, now: u64) -> Result<Inserted> {
        let mut out = self.quarantine_many(std::slice::from_ref(msg), now)?;
        out.pop()
            .unwrap_or_else(|| Err(QuarantineError::Invalid("empty batch".into())))
    }

    /// Quarantines a batch in one transaction (one fsync): the way to reach thousands of
    /// messages per second. Results are in input order.
    pub fn quarantine_many(&self, msgs: &[NewMessage], now: u64) -> Result<Vec<Result<Inserted>>> {
        backend!(self, b => b.insert(msgs, now))
    }

    /// Everything stored about a message.
    pub fn message(&self, msg_id: MsgId) -> Result<MessageInfo> {
        backend!(self, b => b.message(msg_id))
    }

    /// The message bytes as received (while held or released-but-unconfirmed).
    /// The held message this node knows by `mid` (`meta.mid` of [`NewMessage`]), if any.
    pub fn message_by_node_mid(&self, mid: u64) -> Result<Option<MsgId>> {
        backend!(self, b => b.message_by_node_mid(mid))
    }

    /// The message stored under an idempotency key (a CPQ transfer), if any.
    pub fn message_by_key(&self, key: &str) -> Result<Option<MsgId>> {
        backend!(self, b => b.message_by_key(key))
    }

    pub fn raw(&self, msg_id: MsgId) -> Result<Vec<u8>> {
        backend!(self, b => b.raw(msg_id))
    }

    /// Who did what and when, oldest first.
    pub fn history(&self, msg_id: MsgId) -> Result<Vec<HistoryEntry>> {
        backend!(self, b => b.history(msg_id))
    }

    /// Returns the bytes and the recipients of a copy for the caller to send, and records
    /// who asked. Only administrators may (the caller checks the role).
    pub fn send_copy(
        &self,
        msg_id: MsgId,
        to: &[String],
        who: &str,
        now: u64,
    ) -> Result<CopyToSend> {
        backend!(self, b => b.send_copy(msg_id, to, who, now))
    }

    /// Records that a released message was queued downstream (`delivery_ref` = that queue
    /// id) and drops its bytes. True the first time, false on a repeat.
    /// Confirms many deliveries in one transaction; results in input order.
    pub fn confirm_deliveries(
        &self,
        items: &[(MsgId, String)],
        now: u64,
    ) -> Result<Vec<Result<bool>>> {
        backend!(self, b => b.confirm_deliveries(items, now))
    }

    pub fn confirm_delivery(&self, msg_id: MsgId, delivery_ref: &str, now: u64) -> Result<bool> {
        backend!(self, b => b.confirm_delivery(msg_id, delivery_ref, now))
    }

    /// Released messages not yet confirmed: hand them to delivery again after a restart.
    pub fn pending_deliveries(&self) -> Result<Vec<PendingDelivery>> {
        backend!(self, b => b.pending_deliveries())
    }

    /// Held messages with an id above `after`, in id order, at most `limit`: a cursor for
    /// handing every held message over in batches (the migration to a manager).
    pub fn held_ids(&self, after: MsgId, limit: usize) -> Result<Vec<MsgId>> {
        backend!(self, b => b.held_ids(after, limit))
    }

    /// Records that held messages went to a manager's central quarantines (a gateway that
    /// became central migrates its local quarantines): `transfer_ref` is each one's CPQ
    /// transfer id. In one transaction (one fsync). Each held membership leaves with state
    /// [`crate::MembershipState::Migrated`] and cause `migrated` — neither released nor
    /// deleted, so nothing is delivered or logged as deleted here —, the message becomes
    /// [`crate::MessageState::Migrated`] with `delivery_ref` = the transfer, its bytes are
    /// dropped, and its history gets a `migrated` entry naming the transfer. Results in
    /// input order: true when marked now, false when the message was no longer held
    /// (released, deleted or migrated meanwhile; nothing changed for it). Repeat-safe.
    pub fn mark_migrated(&self, items: &[(MsgId, String)], now: u64) -> Result<Vec<bool>> {
        backend!(self, b => b.mark_migrated(items, now))
    }

    /// How many messages were marked migrated at or after `since` (unix seconds).
    pub fn migrated_since(&self, since: u64) -> Result<u64> {
        backend!(self, b => b.migrated_since(since))
    }

    /// Drops deleted and delivered messages finished before `before` (with their history).
    pub fn purge_finished(&self, before: u64) -> Result<u64> {
        backend!(self, b => b.purge_finished(before))
    }

    pub fn search(&self, q: &SearchQuery) -> Result<SearchPage> {
        backend!(self, b => b.search(q))
    }

    /// All ids a search matches, in its order (offset and limit are ignored).
    pub fn search_ids(&self, q: &SearchQuery) -> Result<Vec<MsgId>> {
        backend!(self, b => b.search_ids(q))
    }

    // ---- actions ----

    fn transition(&self, items: &[(MsgId, Sel, Op)], now: u64) -> Result<BulkResult> {
        backend!(self, b => b.transition(items, now))
    }

    fn sel(&self, scope: &Scope) -> Result<Sel> {
        Ok(match scope {
            Scope::Quarantine(name) => {
                let q = self.get_quarantine(name)?;
                Sel::Quarantine {
                    id: q.id,
                    name: q.name,
                }
            }
            Scope::All => Sel::All,
            Scope::OutbreakRule(rule) => Sel::OutbreakRule(rule.clone()),
        })
    }

    fn op(&self, action: &Action, actor: &Actor) -> Result<Op> {
        Ok(match action {
            Action::Release => Op::Release(actor.clone()),
            Action::Delete => Op::Delete(actor.clone()),
            Action::Delay(by) => Op::Delay(*by, actor.clone()),
            Action::Move { to } => {
                let q = self.get_quarantine(to)?;
                Op::Move {
                    to_id: q.id,
                    to_name: q.name,
                    actor: actor.clone(),
                }
            }
        })
    }

    /// Applies an action to one message. Repeat-safe: see [`crate::Outcome::Unchanged`].
    pub fn act(
        &self,
        msg_id: MsgId,
        scope: &Scope,
        action: &Action,
        actor: &Actor,
        now: u64,
    ) -> Result<ActionReport> {
        let mut r = self.bulk(&[msg_id], scope, action, actor, now)?;
        match r.pop() {
            Some((_, res)) => res,
            None => Err(QuarantineError::UnknownMessage(msg_id)),
        }
    }

    /// Releases a message from one quarantine (manual).
    pub fn release(
        &self,
        msg_id: MsgId,
        quarantine: &str,
        who: &str,
        now: u64,
    ) -> Result<ActionReport> {
        self.act(
            msg_id,
            &Scope::Quarantine(quarantine.into()),
            &Action::Release,
            &Actor::manual(who),
            now,
        )
    }

    /// Deletes a message from one quarantine, hence from all (manual).
    pub fn delete(
        &self,
        msg_id: MsgId,
        quarantine: &str,
        who: &str,
        now: u64,
    ) -> Result<ActionReport> {
        self.act(
            msg_id,
            &Scope::Quarantine(quarantine.into()),
            &Action::Delete,
            &Actor::manual(who),
            now,
        )
    }

    /// Delays a message's scheduled exit from one quarantine.
    pub fn delay(
        &self,
        msg_id: MsgId,
        quarantine: &str,
        by: DelayBy,
        who: &str,
        now: u64,
    ) -> Result<ActionReport> {
        self.act(
            msg_id,
            &Scope::Quarantine(quarantine.into()),
            &Action::Delay(by),
            &Actor::manual(who),
            now,
        )
    }

    /// Moves a message from one quarantine to another, keeping exit time and reason.
    pub fn move_message(
        &self,
        msg_id: MsgId,
        from: &str,
        to: &str,
        who: &str,
        now: u64,
    ) -> Result<ActionReport> {
        self.act(
            msg_id,
            &Scope::Quarantine(from.into()),
            &Action::Move { to: to.into() },
            &Actor::manual(who),
            now,
        )
    }

    /// Applies an action to each message of a list, [`BATCH`] per transaction.
    pub fn bulk(
        &self,
        ids: &[MsgId],
        scope: &Scope,
        action: &Action,
        actor: &Actor,
        now: u64,
    ) -> Result<BulkResult> {
        let sel = self.sel(scope)?;
        let op = self.op(action, actor)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let items: Vec<_> = chunk
                .iter()
                .map(|&id| (id, sel.clone(), op.clone()))
                .collect();
            out.extend(self.transition(&items, now)?);
        }
        Ok(out)
    }

    /// Applies an action to every result of a search (all pages): to the searched
    /// quarantine's membership, or to every membership when the search names none.
    pub fn bulk_search(
        &self,
        q: &SearchQuery,
        action: &Action,
        actor: &Actor,
        now: u64,
    ) -> Result<BulkResult> {
        let ids = self.search_ids(q)?;
        let scope = match &q.quarantine {
            Some(name) => Scope::Quarantine(name.clone()),
            None => Scope::All,
        };
        self.bulk(&ids, &scope, action, actor, now)
    }

    /// Outbreak "manage by rule": release, delete, delay (or move) every message held
    /// because of one outbreak rule.
    pub fn manage_by_rule(
        &self,
        rule: &str,
        action: &Action,
        actor: &Actor,
        now: u64,
    ) -> Result<BulkResult> {
        let ids = backend!(self, b => b.rule_members(rule))?;
        self.bulk(
            &ids,
            &Scope::OutbreakRule(rule.to_string()),
            action,
            actor,
            now,
        )
    }

    fn names(&self) -> Result<HashMap<QuarantineId, String>> {
        Ok(self
            .quarantines()?
            .into_iter()
            .map(|q| (q.id, q.name))
            .collect())
    }

    /// Applies the default action to every membership whose scheduled exit is at or before
    /// `now` ("expired"), earliest first. Returns what changed.
    pub fn expire(&self, now: u64) -> Result<Vec<ActionReport>> {
        let names = self.names()?;
        let mut out = Vec::new();
        loop {
            let due = backend!(self, b => b.due(now, BATCH))?;
            if due.is_empty() {
                break;
            }
            let items: Vec<_> = due
                .iter()
                .map(|&(m, q)| {
                    let name = names.get(&q).cloned().unwrap_or_default();
                    (m, Sel::Quarantine { id: q, name }, Op::Expire)
                })
                .collect();
            let before = out.len();
            collect_changed(self.transition(&items, now)?, &mut out);
            if out.len() == before {
                break; // nothing could be done; never spin
            }
        }
        Ok(out)
    }

    /// While the store is over its quota, applies the default action early to the oldest
    /// memberships of non-exempt quarantines ("free up space"). Returns what changed.
    pub fn free_up_space(&self, now: u64) -> Result<Vec<ActionReport>> {
        let names = self.names()?;
        let mut out = Vec::new();
        loop {
            let (held, quota) = backend!(self, b => b.held_totals())?;
            let Some(quota) = quota else { break };
            if held <= quota {
                break;
            }
            let excess = held - quota;
            let candidates = backend!(self, b => b.free_candidates(BATCH))?;
            let mut items = Vec::new();
            let mut seen = HashSet::new();
            let mut freed = 0u64;
            for (m, q, size) in candidates {
                let name = names.get(&q).cloned().unwrap_or_default();
                items.push((m, Sel::Quarantine { id: q, name }, Op::FreeUpSpace));
                if seen.insert(m) {
                    freed += size;
                }
                if freed >= excess {
                    break;
                }
            }
            if items.is_empty() {
                break; // only exempt quarantines hold messages
            }
            let before = out.len();
            collect_changed(self.transition(&items, now)?, &mut out);
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// The retention sweeper's one call: expiry, then free-up-space, then a cheap refresh
    /// of the planner statistics. Call it every minute or so with the current time.
    pub fn sweep(&self, now: u64) -> Result<Vec<ActionReport>> {
        let mut out = self.expire(now)?;
        out.extend(self.free_up_space(now)?);
        backend!(self, b => b.optimize())?;
        Ok(out)
    }
}

fn collect_changed(results: BulkResult, out: &mut Vec<ActionReport>) {
    out.extend(
        results
            .into_iter()
            .filter_map(|(_, r)| r.ok())
            .filter(|r| !r.changes.is_empty()),
    );
}
