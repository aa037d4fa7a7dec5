//! The cluster's store as the core sees it: the trait the composition root wires to the
//! PostgreSQL adapter (`adapters::cluster_db`), the values that cross it, and its typed
//! errors. Nothing here does IO.

use std::sync::Arc;

use pvo_cluster::{Conflict, Level, MemberState, Members, MembersError, Revision};
use thiserror::Error;

use crate::core::config::Membership;

/// A future as the traits here return it (they are used as trait objects).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What went wrong with the store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("the cluster database address {url:?} is not valid: {why}")]
    BadUrl { url: String, why: String },
    #[error("cannot reach the cluster's PostgreSQL ({target}): {why}; check that it runs and that [cluster] url names it")]
    Unreachable { target: String, why: String },
    #[error("the cluster's PostgreSQL refused: {0}")]
    Refused(String),
    #[error("lost the connection to the cluster's PostgreSQL ({0}); the member reconnects and catches up")]
    Lost(String),
    #[error("this database already holds the cluster {0}; join it instead of creating another")]
    AlreadyCluster(String),
    #[error("this database holds no cluster yet; create one with `clusterconfig create` first")]
    NoCluster,
    #[error(transparent)]
    Conflict(#[from] Conflict),
    #[error(transparent)]
    UsersConflict(#[from] UsersConflict),
    #[error(transparent)]
    Members(#[from] MembersError),
    #[error("the cluster database holds a row this version cannot read: {0}")]
    Corrupt(String),
    #[error("the cluster's store was set up by a newer PVO (store schema {schema}; this PVO knows up to {known}): upgrade this machine to the version the other members run")]
    TooNew { schema: i32, known: i32 },
    #[error("cannot read the CA certificate {path}: {why}")]
    Ca { path: String, why: String },
    #[error(transparent)]
    Token(#[from] TokenRefused),
}

/// Why a join token does not work (any more). The times are the store's, in UTC.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenRefused {
    #[error(
        "this cluster has no such join token (make one with `clusterconfig jointoken` on a member)"
    )]
    Unknown,
    #[error("the join token was already used: machine {by} joined with it at {at}; make a new one with `clusterconfig jointoken`")]
    Used { by: String, at: String },
    #[error("the join token expired at {at}; make a new one with `clusterconfig jointoken`")]
    Expired { at: String },
    #[error(
        "the join token was revoked by {by} at {at}; make a new one with `clusterconfig jointoken`"
    )]
    Revoked { by: String, at: String },
    #[error("the join token is being used by machine {by}, which is joining with it; a token joins one machine")]
    Claimed { by: String },
    #[error(
        "no join token of this cluster begins with {0:?} (see `clusterconfig jointoken list`)"
    )]
    NoPrefix(String),
    #[error("{count} join tokens begin with {prefix:?}: give more of the hash")]
    Ambiguous { prefix: String, count: usize },
}

/// A join token as the store keeps it: never its secret, only the hex SHA-256 of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub hash: String,
    pub created_by: String,
    pub created_at: String,
    pub expires_at: String,
}

impl TokenInfo {
    /// The first 8 hex digits of the hash: what `jointoken list` shows and `revoke` takes.
    pub fn short(&self) -> &str {
        self.hash.get(..8).unwrap_or(&self.hash)
    }
}

/// A join token spent by a join: its hash and the machine that joins with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenUse {
    pub hash: String,
    pub machine: String,
}

/// The hex SHA-256 of a join token's secret (what the store keeps).
pub fn token_hash(secret: &[u8; 32]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, secret))
}

impl StoreError {
    /// The store could not be asked at all (as opposed to refusing what was asked).
    pub fn unavailable(&self) -> bool {
        matches!(self, StoreError::Unreachable { .. } | StoreError::Lost(_))
    }
}

/// A configuration change to commit.
#[derive(Debug, Clone)]
pub struct Commit {
    pub level: Level,
    /// The revision the changes started from.
    pub base: u64,
    /// The layer's whole new text; `None` removes the layer.
    pub text: Option<String>,
    pub author: String,
    pub comment: String,
}

/// The store as one member sees it at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub members: Members,
    /// The newest revision (0 before the first).
    pub head: u64,
    /// The text of every layer at `head` (removed layers left out).
    pub layers: Vec<(Level, String)>,
    pub states: Vec<MemberState>,
    /// The features each machine's keys turn on, as it last reported them.
    pub features: Vec<(pvo_cluster::Name, Vec<String>)>,
    /// What each machine last reported of its enrollment on a manager (JSON of
    /// `core::cpq::enrollment::Enrollment`).
    pub cpq: Vec<(pvo_cluster::Name, String)>,
}

impl Snapshot {
    /// The text of `level` at `head` ("" when it sets nothing).
    pub fn layer(&self, level: &Level) -> &str {
        self.layers
            .iter()
            .find(|(l, _)| l == level)
            .map(|(_, t)| t.as_str())
            .unwrap_or("")
    }
}

/// What a member hears.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Revision(u64),
    Members,
    /// A revision of the cluster's user base.
    Users(u64),
}

/// One change of the cluster's user base (users and roles are the cluster's, one base
/// for every member: `core::cluster::users`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersRevision {
    pub number: u64,
    /// Who made it, and on which machine.
    pub author: String,
    pub machine: String,
    /// When, as the node prints times.
    pub at: String,
    /// What it changed (`userconfig new bob`); never a password.
    pub what: String,
}

impl std::fmt::Display for UsersRevision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "users revision {} by {} on {} ({}): {}",
            self.number, self.author, self.machine, self.at, self.what
        )
    }
}

/// A change of the user base to write.
#[derive(Debug, Clone)]
pub struct UsersCommit {
    /// The users revision the member's copy was when the change was made.
    pub base: u64,
    /// The whole new base, as `Users::export` writes it.
    pub users: String,
    pub author: String,
    pub machine: String,
    pub what: String,
}

/// The cluster's user base at its newest revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserBase {
    pub revision: UsersRevision,
    pub users: String,
}

/// A change of the user base refused: another one was written after its base.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct UsersConflict {
    pub base: u64,
    /// The revisions after the base, oldest first.
    pub between: Vec<UsersRevision>,
}

impl std::fmt::Display for UsersConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the cluster's users changed since users revision {}, which this machine's copy is from:",
            self.base
        )?;
        for r in &self.between {
            write!(f, "\n  {r}")?;
        }
        write!(
            f,
            "\nThis machine takes them within a second: look at them (`userconfig list`) and make your change again."
        )
    }
}

/// A change to the members, made under the store's commit lock.
pub type MembersChange = Box<dyn FnOnce(&mut Members) -> Result<(), MembersError> + Send>;

/// One connection to the cluster's store.
pub trait ClusterStore: Send + Sync {
    /// Creates the cluster with its first members and layers (revision 1 onwards);
    /// answers the last revision written.
    fn create<'a>(
        &'a self,
        members: &'a Members,
        layers: &'a [(Level, String)],
        author: &'a str,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;
    /// Commits each change as the next revision, all in one transaction: none is written
    /// when one of them started from a stale base.
    fn commit<'a>(
        &'a self,
        changes: &'a [Commit],
    ) -> BoxFuture<'a, Result<Vec<Revision>, StoreError>>;
    /// The revisions after `since`, oldest first.
    fn history(&self, since: u64) -> BoxFuture<'_, Result<Vec<Revision>, StoreError>>;
    /// The text of `level` as of `revision` (`None`: not set then).
    fn layer_at<'a>(
        &'a self,
        level: &'a Level,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;
    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, StoreError>>;
    /// This member now runs `applied`.
    fn report<'a>(
        &'a self,
        machine: &'a pvo_cluster::Name,
        applied: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// This member's feature keys turn on `features` now, and it holds `cpq` of its
    /// enrollment on a manager.
    fn report_facts<'a>(
        &'a self,
        machine: &'a pvo_cluster::Name,
        features: &'a [String],
        cpq: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn change_members(&self, change: MembersChange) -> BoxFuture<'_, Result<Members, StoreError>>;
    /// Changes the members and commits `changes` in one transaction (a machine joins with
    /// its own layer, or not at all); with `token`, that join token is spent in the same
    /// transaction, and nothing is written when it no longer works.
    fn join<'a>(
        &'a self,
        change: MembersChange,
        changes: &'a [Commit],
        token: Option<&'a TokenUse>,
    ) -> BoxFuture<'a, Result<Vec<Revision>, StoreError>>;
    /// The user base at its newest revision (`None`: the cluster has none yet).
    fn users(&self) -> BoxFuture<'_, Result<Option<UserBase>, StoreError>>;
    /// Writes a new user base as the next users revision, unless one was written after
    /// the change's base (`StoreError::UsersConflict`, naming them).
    fn commit_users<'a>(
        &'a self,
        change: &'a UsersCommit,
    ) -> BoxFuture<'a, Result<UsersRevision, StoreError>>;
    /// Stores a new join token (`hash` of its secret) that works for `minutes`.
    fn make_token<'a>(
        &'a self,
        hash: &'a str,
        minutes: u32,
        by: &'a str,
    ) -> BoxFuture<'a, Result<TokenInfo, StoreError>>;
    /// The join tokens that still work (unexpired, unused, not revoked), oldest first.
    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenInfo>, StoreError>>;
    /// Revokes the one working token whose hash begins with `prefix`.
    fn revoke_token<'a>(
        &'a self,
        prefix: &'a str,
        by: &'a str,
    ) -> BoxFuture<'a, Result<TokenInfo, StoreError>>;
    /// Whether the token `hash` works now (the SSH login of a joining machine).
    fn check_token<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Claims the token `hash` for `machine` (joininfo): refused when it no longer works
    /// or another machine claimed it; the same machine may claim it again.
    fn claim_token<'a>(
        &'a self,
        hash: &'a str,
        machine: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Notices of commits and membership changes, on a connection of their own.
    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Notices>, StoreError>>;
}

/// The notices of one listening connection; `None` once it is lost.
pub trait Notices: Send {
    fn next(&mut self) -> BoxFuture<'_, Option<Notice>>;
}

/// Opens connections to a cluster's store (the root wires PostgreSQL).
pub trait Connector: Send + Sync {
    /// Connects as `member` to the store `[cluster]` names.
    fn connect<'a>(
        &'a self,
        membership: &'a Membership,
        member: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn ClusterStore>, StoreError>>;
}
