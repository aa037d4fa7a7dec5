//! PVO's quarantines: the model of `docs/appliance.md` (Quarantines) and the store that holds it, used unchanged by
//! the gateway (its local Policy, Virus and Outbreak quarantines) and by the manager (the
//! central quarantines of many gateways).
//!
//! # The model
//!
//! A message is stored once — envelope, attachment names, raw bytes — and has one
//! *membership* per quarantine it is in, each with its own reason, details, scheduled exit
//! and state. It is delivered only when released from all of its quarantines; deleted from
//! any one, it is deleted from all and never delivered. Every action returns an
//! [`ActionReport`] whose [`Outcome`] says what the caller must do next
//! ([`Outcome::Deliver`] with the early-release actions to apply with
//! [`apply_early_release`], [`Outcome::StillHeld`], [`Outcome::Deleted`], or
//! [`Outcome::Unchanged`] for a repeat), and whose `changes` give the log lines
//! ([`ActionReport::log_lines`], [`logline`]).
//!
//! States only move forward (held → released → delivered, held → deleted, held → migrated),
//! and each action is one transaction that re-reads the state it changes, so repeating an
//! action — a second click, a second administrator, a retry after a crash — changes nothing
//! and never returns `Deliver` twice. Expiry and free-up-space are the same transitions with cause `expired` /
//! `free up space`; time is always a parameter (`now`, unix seconds), never read from the
//! clock, so tests control it.
//!
//! # Using it
//!
//! - [`Store::open_sqlite`] opens or creates the database and migrates it;
//!   [`Store::open_postgres`] / [`Store::open_postgres_tls`] do the same on PostgreSQL
//!   (schema `pvo_quarantine`), which several managers may share: every write is one
//!   transaction decided by the database (see the `pg` module's docs), so two processes
//!   storing one transfer store it once and two releasing one message deliver it once.
//! - [`Store::quarantine`] / [`Store::quarantine_many`] store messages (durable on return,
//!   idempotent per transfer id); log [`logline::quarantined`] for each `held_in` entry of a
//!   result whose `created` is true.
//! - [`Store::act`] and the shorthands ([`Store::release`], [`Store::delete`],
//!   [`Store::delay`], [`Store::move_message`]), [`Store::bulk`], [`Store::bulk_search`],
//!   [`Store::manage_by_rule`], [`Store::send_copy`].
//! - [`Store::sweep`] every minute or so: expiry, then free-up-space under the quota
//!   ([`Store::set_quota`]).
//! - After `Deliver`: read [`Store::raw`], rewrite with [`apply_early_release`], queue it,
//!   then [`Store::confirm_delivery`] with the queue id (this drops the bytes). After a
//!   crash, [`Store::pending_deliveries`] lists what was released but not confirmed; the
//!   downstream queue must treat the message id as an idempotency key, because a crash
//!   between queueing and confirming hands the message over twice.
//! - A gateway that becomes central hands its held messages to the manager: walk them with
//!   [`Store::held_ids`], send each, then [`Store::mark_migrated`] with its transfer id
//!   (state `migrated`: neither released nor deleted, bytes dropped).
//! - [`Store::search`], [`Store::message`], [`Store::history`], [`Store::usage`] and
//!   [`Store::quarantine_table`] for the commands and the web UI.
//!
//! Access lists are stored with each quarantine ([`AccessList::allows`]); enforcing them
//! and the Administrator-only rule for send-copy is the caller's job, since the caller
//! knows who is asking.
//!
//! # Modules
//!
//! - `model`: plain data types; `semantics`: the rules, pure functions over one message;
//! - `store`: [`Store`], the backend-independent operations; `sqlite`: the embedded backend
//!   (schema and migrations, durability, search SQL); `pg`: the PostgreSQL backend (the
//!   same primitives; migrations under an advisory lock, deduplicated bodies);
//! - `testkit` (feature `testkit`): the store tests, run on every backend;
//! - `search`: query types; `rewrite`: early-release rewriting; `logline`: log texts;
//!   `table`: the `quarantineconfig` list; `copy`: moving an embedded store into
//!   PostgreSQL, resumable and verified.
#![forbid(unsafe_code)]

mod copy;
mod error;
pub mod logline;
mod model;
mod pg;
mod rewrite;
mod search;
mod semantics;
mod sqlite;
mod store;
mod table;

#[cfg(test)]
mod migrate_tests;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
#[cfg(test)]
mod tests;

pub use copy::{copy_to_postgres, CopyReport};
pub use error::{QuarantineError, Result};
pub use model::{
    AccessList, Action, ActionReport, Actor, Attachment, Builtin, Cause, Change, CopyToSend,
    DefaultAction, DelayBy, EarlyReleaseActions, HeldIn, HistoryEntry, Hold, Inserted, Membership,
    MembershipState, MessageInfo, MessageState, MsgId, NewMessage, Outcome, PendingDelivery,
    Quarantine, QuarantineDeleted, QuarantineId, QuarantineSettings, QuarantineUsage, Reason,
    ReasonKind, Scope, Usage, XHeader,
};
pub use pg::{PgStore, PG_SCHEMA_VERSION};
pub use rewrite::{apply_early_release, MAX_DEPTH};
pub use search::{
    AddrMatch, FilterError, HitMembership, OrderBy, SearchHit, SearchPage, SearchQuery,
    DEFAULT_MAX_COUNT,
};
pub use sqlite::{SqliteStore, BATCH, SCHEMA_VERSION};
pub use store::{BulkResult, Store, MID_SPAN};
pub use table::{format_bytes, format_retention, render_quarantine_table};
