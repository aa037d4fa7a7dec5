//! Users and roles of a node (gateway or manager alike; not to be confused with
//! `config::Role`, the role of the node itself).
//!
//! A user has a name, a full name, one role, a state (enabled or disabled), an argon2id
//! password hash and the SSH public keys that may log in as it. Roles are the built-in
//! ones of the appliance — Administrator, Operator, Read-Only Operator, Guest, Help Desk
//! User, Technician — or custom roles that give quarantine access only, optionally
//! limited to recipient domains (a help desk for one domain sees only the messages with a
//! recipient in it) and optionally view-only.
//!
//! What each role may do is one table, [`allows`], checked once per command by
//! `commands::dispatch_as` before any handler runs (see `commands::access` for the table
//! from command to [`Perm`]):
//!
//! | permission      | Administrator | Operator | Read-Only Op. | Guest | Help Desk | Technician | custom |
//! |-----------------|---------------|----------|---------------|-------|-----------|------------|--------|
//! | Configure       | yes           |          |               |       |           |            |        |
//! | Monitor         | yes           | yes      | yes           |       |           | yes        |        |
//! | Operate         | yes           | yes      |               |       |           | yes        |        |
//! | QuarantineView  | all           | listed   | listed        | listed| listed    |            | listed |
//! | QuarantineAct   | all           | listed   |               |       | listed    |            | unless view-only |
//! | SendCopy        | yes           |          |               |       |           |            |        |
//! | ViewMatchedContent | yes        | yes      | yes           |       |           |            | if `matched_content` |
//!
//! "listed": only in the quarantines whose access list names the user or the role (and,
//! for a custom role, the quarantines the role itself names). Configure covers every
//! change of settings, users, commits and the audit log; Monitor the read-only system
//! commands (status, queues, showing the configuration, diagnostics); Operate the
//! commands that change the running state without changing settings (suspend, resume,
//! queue actions). Read-Only Operator and Guest view quarantined messages but never
//! release or delete them; Guest sees nothing else. Any user may change their own
//! password.
//!
//! ViewMatchedContent decides what "why held" shows, not whether a command runs: the
//! text of a message that matched a content filter condition and the (masked) samples
//! of a DLP detector are shown only to roles with it; `quarantine show` replaces them
//! by a marker for the others and keeps the filter, rule, conditions, verdict and counts.
//!
//! The store is `DATA_DIR/users.json` (mode 0600), rewritten whole on each change through
//! a temporary file that is fsynced and renamed, then the directory fsynced, so a crash
//! leaves the old or the new file, never half of one. A fresh node gets one user,
//! `admin` (Administrator), whose password is generated and written to
//! `DATA_DIR/run/initial-admin-password` (mode 0600) and printed once at the first start;
//! the file is removed when that password is changed (here or, in a cluster, anywhere).
//!
//! In a cluster the base is the cluster's (`core::cluster::users`): the file is then the
//! member's last good copy of it, with the users revision it is (`revision`); a change is
//! written to the cluster's store first (`update_through`) and a member takes the
//! others' with `adopt`. What is per machine stays out of it (the login throttle, the
//! web sessions).
//!
//! # Security
//!
//! Passwords are hashed with argon2id (the crate's default parameters, a random 16-byte
//! salt per hash) and never stored or logged in clear. User names and role names come
//! from administrators and from SSH clients: they are validated before they are stored,
//! and unknown names are answered like wrong passwords.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use anyhow::{Context, Result};
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

/// The built-in roles of the appliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Administrator,
    Operator,
    ReadOnlyOperator,
    Guest,
    HelpDeskUser,
    Technician,
}

impl Builtin {
    pub const ALL: [Builtin; 6] = [
        Builtin::Administrator,
        Builtin::Operator,
        Builtin::ReadOnlyOperator,
        Builtin::Guest,
        Builtin::HelpDeskUser,
        Builtin::Technician,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Builtin::Administrator => "Administrator",
            Builtin::Operator => "Operator",
            Builtin::ReadOnlyOperator => "Read-Only Operator",
            Builtin::Guest => "Guest",
            Builtin::HelpDeskUser => "Help Desk User",
            Builtin::Technician => "Technician",
        }
    }

    /// The built-in role with this name (case-insensitive; `-`, `_` and spaces alike).
    pub fn from_name(name: &str) -> Option<Builtin> {
        let norm = |s: &str| {
            s.chars()
                .filter(|c| !matches!(c, '-' | '_' | ' '))
                .flat_map(char::to_lowercase)
                .collect::<String>()
        };
        let want = norm(name);
        Builtin::ALL.into_iter().find(|b| norm(b.name()) == want)
    }
}

/// What a command needs (see the table in the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Perm {
    Configure,
    Monitor,
    Operate,
    QuarantineView,
    QuarantineAct,
    SendCopy,
    /// See the matched content of "why held" (the text a filter condition matched, DLP
    /// samples); without it `quarantine show` hides them.
    ViewMatchedContent,
    /// Learn where the cluster's store is, to join it (`clusterconfig joininfo`): an
    /// Administrator, or a machine logged in with a join token ([`RoleDef::Joiner`]).
    JoinCluster,
}

impl Perm {
    /// What a role without it cannot do, for the refusal.
    pub fn refusal(self) -> &'static str {
        match self {
            Perm::Configure => "change the configuration",
            Perm::Monitor => "view the system status",
            Perm::Operate => "change the running state (suspend, resume, queue actions)",
            Perm::QuarantineView => "access quarantines",
            Perm::QuarantineAct => "release, delete, delay or move quarantined messages",
            Perm::SendCopy => "send copies of quarantined messages",
            Perm::ViewMatchedContent => "see the matched content of quarantined messages",
            Perm::JoinCluster => "tell a joining machine where the cluster's store is",
        }
    }
}

/// Whether a built-in role has a permission (quarantine permissions still depend on
/// the access lists).
pub fn builtin_allows(role: Builtin, perm: Perm) -> bool {
    use Builtin::*;
    match perm {
        Perm::Configure | Perm::SendCopy => role == Administrator,
        Perm::Monitor => matches!(
            role,
            Administrator | Operator | ReadOnlyOperator | Technician
        ),
        Perm::Operate => matches!(role, Administrator | Operator | Technician),
        Perm::QuarantineView => role != Technician,
        Perm::QuarantineAct => matches!(role, Administrator | Operator | HelpDeskUser),
        Perm::ViewMatchedContent => matches!(role, Administrator | Operator | ReadOnlyOperator),
        Perm::JoinCluster => role == Administrator,
    }
}

/// A custom role: quarantine access only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomRole {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Quarantines this role may access besides those whose access list names it;
    /// `*` means all.
    #[serde(default)]
    pub quarantines: Vec<String>,
    /// When not empty, only messages with a recipient in one of these domains.
    #[serde(default)]
    pub domains: Vec<String>,
    /// Search and view only; no release, delete, delay or move.
    #[serde(default)]
    pub view_only: bool,
    /// May see the matched content of "why held" (filter matches, DLP samples).
    #[serde(default)]
    pub matched_content: bool,
}

impl CustomRole {
    pub fn all_quarantines(&self) -> bool {
        self.quarantines.iter().any(|q| q == "*")
    }
}

/// A role as defined on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleDef {
    Builtin(Builtin),
    Custom(CustomRole),
    /// A machine logged in as [`JOIN_USER`] with a join token ([`Origin::JoinToken`]):
    /// it may only ask where the cluster's store is. No stored user has it.
    Joiner,
}

/// The reserved SSH user a joining machine logs in as with a join token's secret; no
/// user of that name can be made.
pub const JOIN_USER: &str = "pvojoin";

impl RoleDef {
    pub fn name(&self) -> &str {
        match self {
            RoleDef::Builtin(b) => b.name(),
            RoleDef::Custom(c) => &c.name,
            RoleDef::Joiner => "Cluster Joiner",
        }
    }

    pub fn allows(&self, perm: Perm) -> bool {
        match self {
            RoleDef::Builtin(b) => builtin_allows(*b, perm),
            RoleDef::Custom(c) => match perm {
                Perm::QuarantineView => true,
                Perm::QuarantineAct => !c.view_only,
                Perm::ViewMatchedContent => c.matched_content,
                _ => false,
            },
            RoleDef::Joiner => perm == Perm::JoinCluster,
        }
    }
}

/// The roles that have `perm`, for a refusal: "Administrator, Operator or Technician".
pub fn roles_with(perm: Perm) -> String {
    let mut names: Vec<String> = Builtin::ALL
        .into_iter()
        .filter(|b| builtin_allows(*b, perm))
        .map(|b| b.name().to_string())
        .collect();
    match perm {
        Perm::QuarantineView => names.push("a custom role".into()),
        Perm::QuarantineAct => names.push("a custom role that is not view-only".into()),
        Perm::ViewMatchedContent => names.push("a custom role with matched content".into()),
        _ => {}
    }
    match names.len() {
        0 => String::new(),
        1 => names.remove(0),
        n => format!("{} or {}", names[..n - 1].join(", "), names[n - 1]),
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    #[serde(default)]
    pub full_name: String,
    pub role: String,
    pub enabled: bool,
    /// The argon2id PHC string.
    pub password: String,
    /// OpenSSH public key lines (`ssh-ed25519 AAAA... comment`).
    #[serde(default)]
    pub ssh_keys: Vec<String>,
    #[serde(default)]
    pub changed_at: u64,
    /// REST API tokens (`Authorization: Bearer`): only their SHA-256 is stored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub api_tokens: Vec<ApiToken>,
}

/// One API token of a user: its name and the hex SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub name: String,
    pub sha256: String,
    pub created_at: u64,
}

/// The hex SHA-256 of an API token (what the user store keeps).
pub fn token_hash(token: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        token.as_bytes(),
    ))
}

/// A new API token: `pvo_` and 32 random bytes in hex.
pub fn generate_token() -> String {
    let mut buf = [0u8; 32];
    random_bytes(&mut buf);
    format!("pvo_{}", hex::encode(buf))
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Db {
    version: u32,
    /// In a cluster: the users revision of the cluster's base this copy is; 0 (left
    /// out of the file): the machine's own base.
    #[serde(default, skip_serializing_if = "is_zero")]
    revision: u64,
    users: Vec<User>,
    #[serde(default)]
    roles: Vec<CustomRole>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Db {
    /// Refuses a base no node should run on: unreadable names, two users of one name,
    /// a role that does not exist, no enabled Administrator.
    fn check(&self) -> Result<(), String> {
        let mut seen: Vec<String> = Vec::new();
        for r in &self.roles {
            check_name(&r.name, "role", true)?;
            if Builtin::from_name(&r.name).is_some() {
                return Err(format!(
                    "the custom role {:?} has a built-in role's name",
                    r.name
                ));
            }
        }
        for u in &self.users {
            check_name(&u.name, "user", false)?;
            let lower = u.name.to_ascii_lowercase();
            if seen.contains(&lower) {
                return Err(format!("the user {:?} is there twice", u.name));
            }
            seen.push(lower);
            let known = Builtin::from_name(&u.role).is_some()
                || self
                    .roles
                    .iter()
                    .any(|r| r.name.eq_ignore_ascii_case(&u.role));
            if !known {
                return Err(format!(
                    "the role {:?} of user {:?} does not exist",
                    u.role, u.name
                ));
            }
        }
        if !self.has_admin() {
            return Err("no enabled user has the Administrator role".into());
        }
        Ok(())
    }

    fn has_admin(&self) -> bool {
        self.users
            .iter()
            .any(|u| u.enabled && Builtin::from_name(&u.role) == Some(Builtin::Administrator))
    }

    /// The password hash of `admin` (the user the first start made).
    fn admin_hash(&self) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.name == "admin")
            .map(|u| u.password.as_str())
    }

    /// The base as the cluster's store keeps it (without this copy's revision).
    fn export(&self) -> String {
        let mut base = self.clone();
        base.revision = 0;
        serde_json::to_string_pretty(&base).expect("plain data serialises")
    }
}

/// Where a caller came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The admin socket (the node's owner on this machine).
    Local,
    /// An SSH session from this address.
    Ssh(SocketAddr),
    /// A REST API call (`crate::adapters::web`) from this address.
    Api(SocketAddr),
    /// A web UI session (`crate::adapters::web::ui`) from this address.
    Web(SocketAddr),
    /// An SSH session of a joining machine from this address, logged in as
    /// [`JOIN_USER`] with the join token whose secret hashes to `token` (hex SHA-256).
    JoinToken { peer: SocketAddr, token: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Local => f.write_str("local"),
            Origin::Ssh(a) => write!(f, "ssh {a}"),
            Origin::Api(a) => write!(f, "api {a}"),
            Origin::Web(a) => write!(f, "web {a}"),
            Origin::JoinToken { peer, token } => {
                write!(
                    f,
                    "ssh {peer} (join token {})",
                    token.get(..8).unwrap_or(token)
                )
            }
        }
    }
}

/// Who runs a command: the user, the user's role, the recipient domains the role is
/// limited to (empty: none), and where the caller came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub role: String,
    pub domains: Vec<String>,
    pub from: Origin,
}

impl Identity {
    /// The local superuser: whoever can open the admin socket (mode 0600) owns the node.
    pub fn local_admin() -> Identity {
        Identity {
            user: "admin".into(),
            role: Builtin::Administrator.name().into(),
            domains: Vec::new(),
            from: Origin::Local,
        }
    }
}

/// A refused login, with the text for the caller (never says which part was wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailed {
    /// For the audit trail: unknown user, disabled, wrong password, unknown key.
    pub why: &'static str,
}

impl fmt::Display for LoginFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrong user name or password")
    }
}

/// The user store of a node.
pub struct Users {
    path: PathBuf,
    db: RwLock<Db>,
    /// One change at a time (read, change, write, swap).
    write: Mutex<()>,
}

/// The name of the file holding the first password of `admin`.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

impl Users {
    /// Opens `DATA_DIR/users.json`, creating it with `admin` on a fresh node; the second
    /// value is admin's generated password when it was just created.
    pub fn open(data_dir: &Path, now: u64) -> Result<(Users, Option<String>)> {
        let path = data_dir.join("users.json");
        let mut initial = None;
        let db = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a valid user store", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let password = generate_password();
                let db = Db {
                    version: 1,
                    revision: 0,
                    users: vec![User {
                        name: "admin".into(),
                        full_name: "Administrator".into(),
                        role: Builtin::Administrator.name().into(),
                        enabled: true,
                        password: hash_password(&password)?,
                        ssh_keys: Vec::new(),
                        api_tokens: Vec::new(),
                        changed_at: now,
                    }],
                    roles: Vec::new(),
                };
                let run = data_dir.join("run");
                std::fs::create_dir_all(&run)
                    .with_context(|| format!("creating {}", run.display()))?;
                crate::core::atomic_file::write_private(
                    &run.join(INITIAL_PASSWORD_FILE),
                    format!("{password}\n").as_bytes(),
                )?;
                crate::core::atomic_file::write_private(&path, &serde_json::to_vec_pretty(&db)?)?;
                initial = Some(password);
                db
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok((
            Users {
                path,
                db: RwLock::new(db),
                write: Mutex::new(()),
            },
            initial,
        ))
    }

    pub fn users(&self) -> Vec<User> {
        self.db.read().unwrap().users.clone()
    }

    /// In a cluster, the users revision of the cluster's base this copy is; 0: the
    /// machine's own base.
    pub fn revision(&self) -> u64 {
        self.db.read().unwrap().revision
    }

    /// The whole base as the cluster's store keeps it.
    pub fn export(&self) -> String {
        self.db.read().unwrap().export()
    }

    /// Writes `db` to the file, then puts it in force; `admin`'s first password no
    /// longer applies once its hash is another one (changed here or in the cluster).
    fn write_and_swap(&self, db: Db) -> Result<(), String> {
        let bytes = serde_json::to_vec_pretty(&db).map_err(|e| e.to_string())?;
        crate::core::atomic_file::write_private(&self.path, &bytes).map_err(|e| {
            format!("The user store could not be written ({e:#}); nothing was changed.")
        })?;
        let before = self.db.read().unwrap().admin_hash().map(str::to_string);
        if before.is_some() && before.as_deref() != db.admin_hash() {
            self.forget_initial_password();
        }
        *self.db.write().unwrap() = db;
        Ok(())
    }

    /// Removes `run/initial-admin-password`: the generated password is not admin's.
    pub fn forget_initial_password(&self) {
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_file(dir.join("run").join(INITIAL_PASSWORD_FILE));
        }
    }

    /// How many users a base read from the cluster's store holds, once checked as
    /// `adopt` checks it.
    pub fn check_base(text: &str) -> Result<usize, String> {
        let db: Db = serde_json::from_str(text)
            .map_err(|e| format!("the cluster's user base does not read: {e}"))?;
        db.check()
            .map_err(|e| format!("the cluster's user base is not usable: {e}"))?;
        Ok(db.users.len())
    }

    /// Takes the cluster's base at `revision` (read from its store), checked first: a
    /// base no node should run on is refused and the copy stays. Only a revision newer
    /// than the copy is taken, unless `replace` (joining: whatever the copy was).
    /// Answers whether it was taken.
    pub fn adopt(&self, text: &str, revision: u64, replace: bool) -> Result<bool, String> {
        let mut db: Db = serde_json::from_str(text)
            .map_err(|e| format!("the cluster's user base does not read: {e}"))?;
        db.check()
            .map_err(|e| format!("the cluster's user base is not usable: {e}"))?;
        db.revision = revision;
        let _one = self.write.lock().unwrap();
        if !replace && revision <= self.revision() {
            return Ok(false);
        }
        self.write_and_swap(db)?;
        Ok(true)
    }

    /// The base becomes the machine's own again (it left its cluster): the same users,
    /// no longer a cluster's revision.
    pub fn own_again(&self) -> Result<(), String> {
        let _one = self.write.lock().unwrap();
        let mut db = self.db.read().unwrap().clone();
        if db.revision == 0 {
            return Ok(());
        }
        db.revision = 0;
        self.write_and_swap(db)
    }

    /// Keeps a copy of the file beside it as `users.json.SUFFIX` (owner-only).
    pub fn keep_copy(&self, suffix: &str) -> Result<PathBuf, String> {
        let _one = self.write.lock().unwrap();
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{suffix}"));
        let copy = PathBuf::from(name);
        let bytes = std::fs::read(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        crate::core::atomic_file::write_private(&copy, &bytes)
            .map_err(|e| format!("cannot write {}: {e:#}", copy.display()))?;
        Ok(copy)
    }

    pub fn custom_roles(&self) -> Vec<CustomRole> {
        self.db.read().unwrap().roles.clone()
    }

    pub fn user(&self, name: &str) -> Option<User> {
        self.db
            .read()
            .unwrap()
            .users
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
            .cloned()
    }

    /// A built-in or custom role by name (case-insensitive).
    pub fn role(&self, name: &str) -> Option<RoleDef> {
        if let Some(b) = Builtin::from_name(name) {
            return Some(RoleDef::Builtin(b));
        }
        self.db
            .read()
            .unwrap()
            .roles
            .iter()
            .find(|r| r.name.eq_ignore_ascii_case(name))
            .cloned()
            .map(RoleDef::Custom)
    }

    /// The identity of an enabled user.
    pub fn identity(&self, name: &str, from: Origin) -> Option<Identity> {
        let u = self.user(name).filter(|u| u.enabled)?;
        let domains = match self.role(&u.role) {
            Some(RoleDef::Custom(c)) => c.domains,
            _ => Vec::new(),
        };
        Some(Identity {
            user: u.name,
            role: u.role,
            domains,
            from,
        })
    }

    /// Checks a password (slow on purpose: run it on the blocking pool).
    pub fn login_password(
        &self,
        name: &str,
        password: &str,
        from: Origin,
    ) -> Result<Identity, LoginFailed> {
        let Some(u) = self.user(name) else {
            // Spend the same time as a real check, so timing does not tell names apart.
            let _ = verify_password(password, dummy_hash());
            return Err(LoginFailed {
                why: "unknown user",
            });
        };
        if !verify_password(password, &u.password) {
            return Err(LoginFailed {
                why: "wrong password",
            });
        }
        if !u.enabled {
            return Err(LoginFailed {
                why: "user disabled",
            });
        }
        self.identity(&u.name, from).ok_or(LoginFailed {
            why: "user disabled",
        })
    }

    /// The identity of the enabled user one of whose API tokens is `token`.
    pub fn identity_by_token(&self, token: &str, from: Origin) -> Option<Identity> {
        let hash = token_hash(token);
        let name = self
            .db
            .read()
            .unwrap()
            .users
            .iter()
            .find(|u| {
                // Comparing hashes: the time taken tells nothing of a token.
                u.api_tokens.iter().any(|t| t.sha256 == hash)
            })
            .map(|u| u.name.clone())?;
        self.identity(&name, from)
    }

    /// Whether `key` is one of the user's keys (and the user is enabled).
    pub fn key_allowed(&self, name: &str, key: &russh::keys::PublicKey) -> bool {
        self.user(name).is_some_and(|u| {
            u.enabled
                && u.ssh_keys.iter().any(|line| {
                    russh::keys::PublicKey::from_openssh(line)
                        .is_ok_and(|k| k.key_data() == key.key_data())
                })
        })
    }

    /// Applies `change` to a copy of the store and writes it; the store in memory
    /// changes only when the file was written.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Vec<User>, &mut Vec<CustomRole>) -> Result<T, String>,
    ) -> Result<T, String> {
        self.update_through(change, |base, _| Ok(base))
    }

    /// `update` with a step between the change and the write: `first` gets the revision
    /// the copy is and the new base (as `export` writes it), and answers the revision the
    /// new base is (in a cluster: written to the cluster's store first, so nothing
    /// changes here unless it is there). Refused by it, nothing changes.
    pub fn update_through<T>(
        &self,
        change: impl FnOnce(&mut Vec<User>, &mut Vec<CustomRole>) -> Result<T, String>,
        first: impl FnOnce(u64, &str) -> Result<u64, String>,
    ) -> Result<T, String> {
        let _one = self.write.lock().unwrap();
        let mut db = self.db.read().unwrap().clone();
        let out = change(&mut db.users, &mut db.roles)?;
        if !db.has_admin() {
            return Err(
                "At least one enabled user must keep the Administrator role; nothing was changed."
                    .into(),
            );
        }
        db.revision = first(db.revision, &db.export())?;
        self.write_and_swap(db)?;
        Ok(out)
    }
}

/// A hash of a random password, checked against for unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&generate_password()).unwrap_or_default())
}

pub fn hash_password(password: &str) -> Result<String> {
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// 20 characters from a 32-letter alphabet without look-alikes (100 bits), in groups of
/// five: `k7m2p-x9q4r-...`.
pub fn generate_password() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 20];
    random_bytes(&mut bytes);
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        // 256 is a multiple of 32: every letter is equally likely.
        out.push(ALPHABET[(*b as usize) % 32] as char);
    }
    out
}

/// Fills `buf` from the operating system's random source (getrandom, through
/// password-hash's salt generator).
pub fn random_bytes(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(16) {
        let salt = argon2::password_hash::generate_salt();
        chunk.copy_from_slice(&salt[..chunk.len()]);
    }
}

/// Checks a new password: at least 8 characters, no control characters.
pub fn check_password(password: &str) -> Result<(), String> {
    if password.chars().count() < 8 {
        return Err("The password must have at least 8 characters.".into());
    }
    if password.chars().any(char::is_control) {
        return Err("The password must not contain control characters.".into());
    }
    Ok(())
}

/// User and role names: letters, digits, `.`, `_`, `-` (roles also spaces), at most 64.
pub fn check_name(name: &str, what: &str, spaces: bool) -> Result<(), String> {
    if what == "user" && name.eq_ignore_ascii_case(JOIN_USER) {
        return Err(format!(
            "the user name {JOIN_USER:?} is reserved: joining machines log in as it with a join token (`clusterconfig jointoken`)"
        ));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') || (spaces && c == ' ')
        })
        && !name.starts_with(['-', ' '])
        && !name.ends_with(' ');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid {what} name: use letters, digits, '.', '_' and '-'{} (at most 64)",
            if spaces { " and spaces" } else { "" }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_user_cannot_be_made() {
        for name in ["pvojoin", "PVOJoin"] {
            let e = check_name(name, "user", false).unwrap_err();
            assert!(e.contains("reserved"), "{e}");
        }
        assert!(check_name("pvojoin", "role", true).is_ok());
        assert!(check_name("pvojoiner", "user", false).is_ok());
    }

    #[test]
    fn builtin_names_are_forgiving() {
        assert_eq!(
            Builtin::from_name("read-only operator"),
            Some(Builtin::ReadOnlyOperator)
        );
        assert_eq!(
            Builtin::from_name("HelpDeskUser"),
            Some(Builtin::HelpDeskUser)
        );
        assert_eq!(Builtin::from_name("admin"), None);
    }

    #[test]
    fn role_table() {
        use Builtin::*;
        let table = [
            (Administrator, [true, true, true, true, true, true, true]),
            (Operator, [false, true, true, true, true, false, true]),
            (
                ReadOnlyOperator,
                [false, true, false, true, false, false, true],
            ),
            (Guest, [false, false, false, true, false, false, false]),
            (
                HelpDeskUser,
                [false, false, false, true, true, false, false],
            ),
            (Technician, [false, true, true, false, false, false, false]),
        ];
        let perms = [
            Perm::Configure,
            Perm::Monitor,
            Perm::Operate,
            Perm::QuarantineView,
            Perm::QuarantineAct,
            Perm::SendCopy,
            Perm::ViewMatchedContent,
        ];
        for (role, want) in table {
            for (p, w) in perms.iter().zip(want) {
                assert_eq!(builtin_allows(role, *p), w, "{role:?} {p:?}");
            }
        }
        let custom = RoleDef::Custom(CustomRole {
            name: "helpdesk-example".into(),
            description: String::new(),
            quarantines: vec!["Policy".into()],
            domains: vec!["example.com".into()],
            view_only: true,
            matched_content: false,
        });
        assert!(custom.allows(Perm::QuarantineView));
        assert!(!custom.allows(Perm::QuarantineAct));
        assert!(!custom.allows(Perm::Monitor));
        assert!(!custom.allows(Perm::ViewMatchedContent));
        let RoleDef::Custom(mut c) = custom else {
            unreachable!()
        };
        c.matched_content = true;
        assert!(RoleDef::Custom(c).allows(Perm::ViewMatchedContent));
        // A store written before the flag existed reads as "may not see".
        let old: CustomRole =
            serde_json::from_str(r#"{"name":"old","quarantines":["Policy"]}"#).unwrap();
        assert!(!old.matched_content && !old.view_only);
        assert_eq!(
            roles_with(Perm::ViewMatchedContent),
            "Administrator, Operator, Read-Only Operator or a custom role with matched content"
        );
        assert_eq!(roles_with(Perm::Configure), "Administrator");
        assert_eq!(
            roles_with(Perm::Operate),
            "Administrator, Operator or Technician"
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        let p = generate_password();
        assert_eq!(p.len(), 23);
        assert_ne!(p, generate_password());
        assert!(check_password(&p).is_ok());
        assert!(check_password("short").is_err());
    }

    #[test]
    fn fresh_store_has_admin_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (users, initial) = Users::open(dir.path(), 1).unwrap();
        let pw = initial.expect("generated on a fresh node");
        let file = dir.path().join("run").join(INITIAL_PASSWORD_FILE);
        assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), pw);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let id = users
            .login_password("admin", &pw, Origin::Local)
            .expect("admin logs in");
        assert_eq!(id.role, "Administrator");
        assert!(users
            .login_password("admin", "nope-nope", Origin::Local)
            .is_err());
        assert!(users.login_password("nobody", &pw, Origin::Local).is_err());
        // The last Administrator cannot go.
        let err = users
            .update(|u, _| {
                u.retain(|u| u.name != "admin");
                Ok(())
            })
            .unwrap_err();
        assert!(err.contains("Administrator"), "{err}");
        users
            .update(|u, r| {
                r.push(CustomRole {
                    name: "hd-one".into(),
                    description: String::new(),
                    quarantines: vec!["Policy".into()],
                    domains: vec!["one.example".into()],
                    view_only: false,
                    matched_content: false,
                });
                u.push(User {
                    name: "bob".into(),
                    full_name: String::new(),
                    role: "hd-one".into(),
                    enabled: true,
                    password: hash_password("bobs-password").unwrap(),
                    ssh_keys: vec![],
                    api_tokens: vec![],
                    changed_at: 2,
                });
                Ok(())
            })
            .unwrap();
        drop(users);
        let (users, initial) = Users::open(dir.path(), 3).unwrap();
        assert!(initial.is_none());
        let bob = users
            .login_password("Bob", "bobs-password", Origin::Local)
            .unwrap();
        assert_eq!(bob.domains, vec!["one.example".to_string()]);
        assert_eq!(bob.user, "bob");
    }

    fn user(name: &str, role: &str, password: &str) -> User {
        User {
            name: name.into(),
            full_name: String::new(),
            role: role.into(),
            enabled: true,
            password: hash_password(password).unwrap(),
            ssh_keys: vec![],
            api_tokens: vec![],
            changed_at: 1,
        }
    }

    fn base(users: Vec<User>, roles: Vec<CustomRole>) -> String {
        Db {
            version: 1,
            revision: 0,
            users,
            roles,
        }
        .export()
    }

    #[test]
    fn a_cluster_base_is_taken_only_when_usable_and_newer() {
        let dir = tempfile::tempdir().unwrap();
        let (users, initial) = Users::open(dir.path(), 1).unwrap();
        let first = initial.unwrap();
        let file = dir.path().join("run").join(INITIAL_PASSWORD_FILE);
        assert_eq!(users.revision(), 0);
        // What a store could hand over that no node should run on: the copy stays.
        let no_admin = base(vec![user("eve", "Guest", "eves-password")], vec![]);
        let bad_role = base(
            vec![
                user("admin", "Administrator", "cluster-admin-pw"),
                user("eve", "Root", "eves-password"),
            ],
            vec![],
        );
        let twice = base(
            vec![
                user("admin", "Administrator", "cluster-admin-pw"),
                user("Admin", "Guest", "eves-password"),
            ],
            vec![],
        );
        let bad_name = base(
            vec![
                user("admin", "Administrator", "cluster-admin-pw"),
                user("../eve", "Guest", "eves-password"),
            ],
            vec![],
        );
        for (text, why) in [
            (
                no_admin.as_str(),
                "no enabled user has the Administrator role",
            ),
            (
                bad_role.as_str(),
                "the role \"Root\" of user \"eve\" does not exist",
            ),
            (twice.as_str(), "is there twice"),
            (bad_name.as_str(), "not a valid user name"),
            ("{\"version\": 1", "does not read"),
        ] {
            let e = users.adopt(text, 5, false).unwrap_err();
            assert!(e.contains(why), "{e}");
            assert!(Users::check_base(text).is_err());
        }
        assert!(users.login_password("admin", &first, Origin::Local).is_ok());
        assert!(file.exists(), "the first password still applies");

        let good = base(
            vec![
                user("admin", "Administrator", "cluster-admin-pw"),
                user("bob", "Operator", "bobs-password"),
            ],
            vec![],
        );
        assert_eq!(Users::check_base(&good), Ok(2));
        assert_eq!(users.adopt(&good, 5, false), Ok(true));
        assert_eq!(users.revision(), 5);
        assert!(users
            .login_password("admin", &first, Origin::Local)
            .is_err());
        assert!(users
            .login_password("admin", "cluster-admin-pw", Origin::Local)
            .is_ok());
        assert!(
            !file.exists(),
            "admin's generated password no longer applies"
        );
        // An older or the same revision is not taken again; joining replaces whatever.
        let older = base(
            vec![user("admin", "Administrator", "older-admin-pw")],
            vec![],
        );
        assert_eq!(users.adopt(&older, 4, false), Ok(false));
        assert_eq!(users.adopt(&older, 5, false), Ok(false));
        assert!(users.user("bob").is_some());
        // The copy survives a restart with its revision.
        drop(users);
        let (users, initial) = Users::open(dir.path(), 2).unwrap();
        assert!(initial.is_none());
        assert_eq!(users.revision(), 5);
        assert_eq!(users.adopt(&older, 3, true), Ok(true));
        assert_eq!(users.revision(), 3);
        assert!(users.user("bob").is_none());
        // Leaving the cluster: the same users, the machine's own again.
        users.own_again().unwrap();
        assert_eq!(users.revision(), 0);
        assert!(users
            .login_password("admin", "older-admin-pw", Origin::Local)
            .is_ok());
        let text = std::fs::read_to_string(dir.path().join("users.json")).unwrap();
        assert!(!text.contains("\"revision\""), "{text}");
    }

    #[test]
    fn a_change_refused_by_the_cluster_changes_nothing_here() {
        let dir = tempfile::tempdir().unwrap();
        let (users, _) = Users::open(dir.path(), 1).unwrap();
        let path = dir.path().join("users.json");
        let before = std::fs::read(&path).unwrap();
        let add = |u: &mut Vec<User>, _: &mut Vec<CustomRole>| {
            u.push(user("bob", "Operator", "bobs-password"));
            Ok(())
        };
        let mut seen = None;
        let e = users
            .update_through(add, |base, text| {
                seen = Some((base, text.to_string()));
                Err("refused by the store".to_string())
            })
            .unwrap_err();
        assert_eq!(e, "refused by the store");
        assert!(users.user("bob").is_none());
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // The store was given the whole new base, from the copy's revision.
        let (base, text) = seen.unwrap();
        assert_eq!(base, 0);
        assert_eq!(Users::check_base(&text), Ok(2));
        users.update_through(add, |_, _| Ok(9)).unwrap();
        assert_eq!(users.revision(), 9);
        assert!(users.user("bob").is_some());
    }
}
