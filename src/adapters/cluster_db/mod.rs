//! The cluster's store on PostgreSQL: members and groups, configuration revisions with
//! the text of each layer they changed, and the notifications that tell every member a
//! revision was committed.
//!
//! What it keeps (schema `pvo_cluster`, `migrations/`): one cluster row, the groups, the
//! machines (with the revision each last reported running), and per revision its level,
//! author, time, comment and base, plus the full text of the layer it wrote. A commit is
//! one transaction under one advisory lock: the stale-base rule of `pvo_cluster::revision`
//! is checked against the rows, the next number is the last plus one (no gaps), and
//! `pg_notify('pvo_cluster', 'revision N')` is sent inside it, so a member hears of a
//! revision only once it is there to read. Membership changes notify `members`.
//!
//! Over TCP the store is reached with TLS (rustls, verified against the CA the caller
//! gives; `sslmode=require` in the address makes PostgreSQL's refusal of a plaintext
//! session an error here too); over a Unix socket PostgreSQL does not speak TLS.
//!
//! Each member connects with `application_name = pvo:NAME`; whether a machine is
//! connected is PostgreSQL's own answer (`pg_stat_activity`), not a heartbeat of ours.
//!
//! The cluster's user base is its own sequence of revisions (`users_revision`: the whole
//! base as JSON per change, author, machine, time, what changed), written under its own
//! advisory lock with the same stale-base rule, and announced as `users N`.
//!
//! Join tokens (`join_token`, migration 3) keep only the SHA-256 of their secret; a join
//! with one spends it in the join's own transaction (`join_with`), so it joins once.
//!
//! Migrations are numbered files applied in order, in one transaction under an advisory
//! lock, each with its row in `pvo_cluster.migration`, so members starting together apply
//! each once.

use std::sync::Arc;
use std::time::Duration;

use pvo_cluster::{check_base, Level, Member, MemberState, Members, MembersError, Name, Revision};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, Mutex};
use tokio_postgres::{AsyncMessage, Client, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

/// The migrations, in order.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("migrations/001_cluster.sql")),
    (2, include_str!("migrations/002_features.sql")),
    (3, include_str!("migrations/003_join_tokens.sql")),
    (4, include_str!("migrations/004_users.sql")),
    (5, include_str!("migrations/005_cpq.sql")),
];

/// The advisory lock keys: migrations, and commits with membership changes (public so
/// that a test can hold it and stop a commit or a join midway).
const LOCK_MIGRATE: i64 = 0x7076_6f00_0001;
pub const LOCK_COMMIT: i64 = 0x7076_6f00_0002;
/// Changes of the user base (apart from configuration commits: they never conflict).
pub const LOCK_USERS: i64 = 0x7076_6f00_0004;

const CHANNEL: &str = "pvo_cluster";

/// How long connecting may take before the store counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

use crate::core::cluster::store::BoxFuture;
pub use crate::core::cluster::store::{
    Commit, Notice, Snapshot, StoreError as DbError, TokenInfo, TokenRefused, TokenUse, UserBase,
    UsersCommit, UsersConflict, UsersRevision,
};
use crate::core::cluster::store::{Connector, MembersChange, Notices};
use crate::core::config::Membership;

fn refused(e: tokio_postgres::Error) -> DbError {
    if e.is_closed() {
        return DbError::Lost(e.to_string());
    }
    match e.as_db_error() {
        Some(db) => DbError::Refused(db.message().to_string()),
        None => DbError::Refused(e.to_string()),
    }
}

fn name(s: &str) -> Result<Name, DbError> {
    Name::new(s).map_err(|e| DbError::Corrupt(e.to_string()))
}

fn level(s: &str) -> Result<Level, DbError> {
    s.parse()
        .map_err(|e: pvo_cluster::NameError| DbError::Corrupt(e.to_string()))
}

/// A connection to the cluster's store.
pub struct ClusterDb {
    client: Mutex<Client>,
    config: tokio_postgres::Config,
    tls: Option<Arc<rustls::ClientConfig>>,
    target: String,
}

impl ClusterDb {
    /// Connects as `member` (its machine name, or what an administrator's command runs
    /// as) and brings the schema up to date. `tls`: the client configuration to reach
    /// the store over TCP with (its roots are the CA the store's certificate is checked
    /// against); `None` for a Unix socket or a store that does not speak TLS.
    pub async fn connect(
        url: &str,
        member: &str,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<ClusterDb, DbError> {
        let mut config: tokio_postgres::Config =
            url.parse()
                .map_err(|e: tokio_postgres::Error| DbError::BadUrl {
                    url: url.to_string(),
                    why: e.to_string(),
                })?;
        if tls.is_none() && config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(DbError::BadUrl {
                url: url.to_string(),
                why: "sslmode=require needs the CA that signed the server's certificate".into(),
            });
        }
        config.application_name(format!("pvo:{member}"));
        config.connect_timeout(CONNECT_TIMEOUT);
        let target = describe(&config);
        let db = ClusterDb {
            client: Mutex::new(open(&config, &tls, &target).await?),
            config,
            tls,
            target,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// Brings the schema up to date in one transaction under the migration lock, so
    /// members starting together neither race to create the schema (`IF NOT EXISTS` is
    /// not enough: two sessions both find it absent) nor apply a migration twice.
    async fn migrate(&self) -> Result<(), DbError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_MIGRATE])
            .await
            .map_err(refused)?;
        tx.batch_execute(
            "CREATE SCHEMA IF NOT EXISTS pvo_cluster;
             CREATE TABLE IF NOT EXISTS pvo_cluster.migration (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .map_err(refused)?;
        // A store a newer PVO has migrated holds rows this one cannot read: refuse it
        // rather than half-understand it.
        let newest: Option<i32> = tx
            .query_one("SELECT max(version) FROM pvo_cluster.migration", &[])
            .await
            .map_err(refused)?
            .get(0);
        let known = MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
        if let Some(newest) = newest.filter(|n| *n > known) {
            return Err(DbError::TooNew {
                schema: newest,
                known,
            });
        }
        for (version, sql) in MIGRATIONS {
            let done = tx
                .query_opt(
                    "SELECT 1 FROM pvo_cluster.migration WHERE version = $1",
                    &[version],
                )
                .await
                .map_err(refused)?;
            if done.is_none() {
                tx.batch_execute(sql).await.map_err(refused)?;
                tx.execute(
                    "INSERT INTO pvo_cluster.migration (version) VALUES ($1)",
                    &[version],
                )
                .await
                .map_err(refused)?;
            }
        }
        tx.commit().await.map_err(refused)?;
        Ok(())
    }

    /// Creates the cluster: its members (one machine and its group), and revision 1
    /// writing the first machine's layer and, if given, the cluster's.
    pub async fn create(
        &self,
        members: &Members,
        layers: &[(Level, String)],
        author: &str,
    ) -> Result<u64, DbError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_COMMIT])
            .await
            .map_err(refused)?;
        if let Some(row) = tx
            .query_opt("SELECT name FROM pvo_cluster.cluster", &[])
            .await
            .map_err(refused)?
        {
            return Err(DbError::AlreadyCluster(row.get(0)));
        }
        tx.execute(
            "INSERT INTO pvo_cluster.cluster (id, name) VALUES (1, $1)",
            &[&members.cluster.as_str()],
        )
        .await
        .map_err(refused)?;
        write_members(&tx, members).await?;
        let mut number = 0i64;
        for (level, text) in layers {
            number += 1;
            tx.execute(
                "INSERT INTO pvo_cluster.revision (number, level, author, comment, base)
                 VALUES ($1, $2, $3, 'cluster created', 0)",
                &[&number, &level.to_string(), &author],
            )
            .await
            .map_err(refused)?;
            tx.execute(
                "INSERT INTO pvo_cluster.layer (level, revision, text) VALUES ($1, $2, $3)",
                &[&level.to_string(), &number, text],
            )
            .await
            .map_err(refused)?;
        }
        notify(&tx, &format!("revision {number}")).await?;
        tx.commit().await.map_err(refused)?;
        Ok(number as u64)
    }

    /// Commits one layer's new text as the next revision, unless a revision after the
    /// change's base changed the same level.
    pub async fn commit(&self, c: &Commit) -> Result<Revision, DbError> {
        let mut done = self.commit_all(std::slice::from_ref(c)).await?;
        Ok(done.remove(0))
    }

    /// Commits each change as the next revision, in one transaction: when one of them
    /// started from a stale base, none is written.
    pub async fn commit_all(&self, changes: &[Commit]) -> Result<Vec<Revision>, DbError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_COMMIT])
            .await
            .map_err(refused)?;
        if tx
            .query_opt("SELECT 1 FROM pvo_cluster.cluster", &[])
            .await
            .map_err(refused)?
            .is_none()
        {
            return Err(DbError::NoCluster);
        }
        let out = write_revisions(&tx, changes).await?;
        if let Some(last) = out.last() {
            notify(&tx, &format!("revision {}", last.number)).await?;
        }
        tx.commit().await.map_err(refused)?;
        Ok(out)
    }

    /// The revisions after `since`, oldest first.
    pub async fn history(&self, since: u64) -> Result<Vec<Revision>, DbError> {
        let client = self.client.lock().await;
        revisions(&*client, "WHERE number > $1", &[&(since as i64)]).await
    }

    /// The text of `level` as of `revision` (`None`: not set then, or removed).
    pub async fn layer_at(&self, level: &Level, revision: u64) -> Result<Option<String>, DbError> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT text FROM pvo_cluster.layer WHERE level = $1 AND revision <= $2
                 ORDER BY revision DESC LIMIT 1",
                &[&level.to_string(), &(revision as i64)],
            )
            .await
            .map_err(refused)?;
        Ok(row.and_then(|r| r.get(0)))
    }

    /// Everything a member needs to compose its configuration and to answer
    /// `clusterconfig list` and `clustercheck`, read in one transaction.
    pub async fn snapshot(&self) -> Result<Snapshot, DbError> {
        let mut client = self.client.lock().await;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(refused)?;
        let members = read_members(&tx).await?;
        let head: i64 = tx
            .query_one(
                "SELECT coalesce(max(number), 0) FROM pvo_cluster.revision",
                &[],
            )
            .await
            .map_err(refused)?
            .get(0);
        let mut layers = Vec::new();
        for row in tx
            .query(
                "SELECT DISTINCT ON (level) level, text FROM pvo_cluster.layer
                 ORDER BY level, revision DESC",
                &[],
            )
            .await
            .map_err(refused)?
        {
            let text: Option<String> = row.get(1);
            if let Some(text) = text {
                layers.push((level(row.get(0))?, text));
            }
        }
        let connected: Vec<String> = tx
            .query(
                "SELECT DISTINCT substr(application_name, 5) FROM pg_stat_activity
                 WHERE application_name LIKE 'pvo:%'",
                &[],
            )
            .await
            .map_err(refused)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut states = Vec::new();
        let mut features = Vec::new();
        let mut cpq = Vec::new();
        for row in tx
            .query(
                "SELECT name, applied, features, cpq FROM pvo_cluster.machine ORDER BY name",
                &[],
            )
            .await
            .map_err(refused)?
        {
            let n: String = row.get(0);
            let applied: Option<i64> = row.get(1);
            let keys: Option<Vec<String>> = row.get(2);
            if let Some(keys) = keys {
                features.push((name(&n)?, keys));
            }
            let enrolled: Option<String> = row.get(3);
            if let Some(e) = enrolled {
                cpq.push((name(&n)?, e));
            }
            states.push(MemberState {
                connected: connected.contains(&n),
                name: name(&n)?,
                applied: applied.map(|a| a as u64),
            });
        }
        tx.commit().await.map_err(refused)?;
        Ok(Snapshot {
            members,
            head: head as u64,
            layers,
            states,
            features,
            cpq,
        })
    }

    /// A member says which revision it now runs.
    pub async fn report(&self, machine: &Name, applied: u64) -> Result<(), DbError> {
        let client = self.client.lock().await;
        let n = client
            .execute(
                "UPDATE pvo_cluster.machine SET applied = $2, seen_at = now() WHERE name = $1",
                &[&machine.as_str(), &(applied as i64)],
            )
            .await
            .map_err(refused)?;
        if n == 0 {
            return Err(DbError::Members(MembersError::NoMachine(machine.clone())));
        }
        Ok(())
    }

    /// A member says which features its keys turn on now and what it holds of its
    /// enrollment on a manager (JSON); the other members hear of it (`members`): their
    /// checks of scenario 5 and of PVO in the cluster read it.
    pub async fn report_facts(
        &self,
        machine: &Name,
        features: &[String],
        cpq: Option<&str>,
    ) -> Result<(), DbError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        tx.execute(
            "UPDATE pvo_cluster.machine SET features = $2, cpq = $3, seen_at = now() WHERE name = $1",
            &[&machine.as_str(), &features, &cpq],
        )
        .await
        .map_err(refused)?;
        notify(&tx, "members").await?;
        tx.commit().await.map_err(refused)?;
        Ok(())
    }

    /// Changes the members under the commit lock: `change` sees them as stored and
    /// edits them (its refusals come back as they are); the difference is written.
    pub async fn change_members(
        &self,
        change: impl FnOnce(&mut Members) -> Result<(), MembersError>,
    ) -> Result<Members, DbError> {
        self.change_members_with(change, &[]).await.map(|(m, _)| m)
    }

    /// Changes the members and commits `changes` in one transaction: a machine joins
    /// with its own layer, or not at all.
    pub async fn change_members_with(
        &self,
        change: impl FnOnce(&mut Members) -> Result<(), MembersError>,
        changes: &[Commit],
    ) -> Result<(Members, Vec<Revision>), DbError> {
        self.join_with(change, changes, None).await
    }

    /// `change_members_with`, spending the join token `token` in the same transaction:
    /// when it no longer works (used, expired, revoked, claimed by another machine),
    /// nothing is written and the refusal says why.
    pub async fn join_with(
        &self,
        change: impl FnOnce(&mut Members) -> Result<(), MembersError>,
        changes: &[Commit],
        token: Option<&TokenUse>,
    ) -> Result<(Members, Vec<Revision>), DbError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_COMMIT])
            .await
            .map_err(refused)?;
        if let Some(t) = token {
            let spent = tx
                .execute(
                    "UPDATE pvo_cluster.join_token SET used_by = $2, used_at = now()
                     WHERE hash = $1 AND used_at IS NULL AND revoked_at IS NULL
                       AND expires_at > now() AND (claimed_by IS NULL OR claimed_by = $2)",
                    &[&t.hash, &t.machine],
                )
                .await
                .map_err(refused)?;
            if spent == 0 {
                return Err(token_refusal(&tx, &t.hash, Some(&t.machine))
                    .await?
                    .unwrap_or(TokenRefused::Unknown)
                    .into());
            }
        }
        let mut members = read_members(&tx).await?;
        change(&mut members)?;
        write_members(&tx, &members).await?;
        let revisions = write_revisions(&tx, changes).await?;
        notify(&tx, "members").await?;
        if let Some(last) = revisions.last() {
            notify(&tx, &format!("revision {}", last.number)).await?;
        }
        tx.commit().await.map_err(refused)?;
        Ok((members, revisions))
    }

    /// The user base at its newest revision (`None`: none written yet).
    pub async fn users(&self) -> Result<Option<UserBase>, DbError> {
        let client = self.client.lock().await;
        let row = client
            .query_opt(
                "SELECT number, author, machine, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), what, users
                 FROM pvo_cluster.users_revision ORDER BY number DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(refused)?;
        Ok(row.map(|r| UserBase {
            revision: UsersRevision {
                number: r.get::<_, i64>(0) as u64,
                author: r.get(1),
                machine: r.get(2),
                at: r.get(3),
                what: r.get(4),
            },
            users: r.get(5),
        }))
    }

    /// Writes a new user base as the next users revision in one transaction under the
    /// users lock, unless a revision after the change's base exists: then nothing is
    /// written and the refusal names every revision in between. The members hear of it
    /// (`users N`) once it is there to read.
    pub async fn commit_users(&self, c: &UsersCommit) -> Result<UsersRevision, DbError> {
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_USERS])
            .await
            .map_err(refused)?;
        if tx
            .query_opt("SELECT 1 FROM pvo_cluster.cluster", &[])
            .await
            .map_err(refused)?
            .is_none()
        {
            return Err(DbError::NoCluster);
        }
        let between = users_revisions(&tx, c.base).await?;
        if !between.is_empty() {
            return Err(DbError::UsersConflict(UsersConflict {
                base: c.base,
                between,
            }));
        }
        let row = tx
            .query_one(
                "INSERT INTO pvo_cluster.users_revision (number, author, machine, what, base, users)
                 SELECT coalesce(max(number), 0) + 1, $1, $2, $3, $4, $5 FROM pvo_cluster.users_revision
                 RETURNING number, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')",
                &[&c.author, &c.machine, &c.what, &(c.base as i64), &c.users],
            )
            .await
            .map_err(refused)?;
        let number: i64 = row.get(0);
        notify(&tx, &format!("users {number}")).await?;
        tx.commit().await.map_err(refused)?;
        Ok(UsersRevision {
            number: number as u64,
            author: c.author.clone(),
            machine: c.machine.clone(),
            at: row.get(1),
            what: c.what.clone(),
        })
    }

    /// The users revisions after `since`, oldest first.
    pub async fn users_history(&self, since: u64) -> Result<Vec<UsersRevision>, DbError> {
        let client = self.client.lock().await;
        users_revisions(&*client, since).await
    }

    /// Stores a new join token: the hex SHA-256 of its secret, working for `minutes`.
    pub async fn make_token(
        &self,
        hash: &str,
        minutes: u32,
        by: &str,
    ) -> Result<TokenInfo, DbError> {
        let client = self.client.lock().await;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO pvo_cluster.join_token (hash, created_by, expires_at)
                     VALUES ($1, $2, now() + make_interval(mins => $3))
                     RETURNING hash, created_by, {}, {}",
                    ts("created_at"),
                    ts("expires_at")
                ),
                &[&hash, &by, &(minutes as i32)],
            )
            .await
            .map_err(refused)?;
        Ok(token_info(&row))
    }

    /// The join tokens that still work, oldest first.
    pub async fn tokens(&self) -> Result<Vec<TokenInfo>, DbError> {
        let client = self.client.lock().await;
        let rows = client
            .query(
                &format!(
                    "SELECT hash, created_by, {}, {} FROM pvo_cluster.join_token
                     WHERE {WORKS} ORDER BY created_at, hash",
                    ts("created_at"),
                    ts("expires_at")
                ),
                &[],
            )
            .await
            .map_err(refused)?;
        Ok(rows.iter().map(token_info).collect())
    }

    /// Revokes the one working token whose hash begins with `prefix` (lowercase hex).
    pub async fn revoke_token(&self, prefix: &str, by: &str) -> Result<TokenInfo, DbError> {
        let prefix = prefix.to_ascii_lowercase();
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(TokenRefused::NoPrefix(prefix).into());
        }
        let mut client = self.client.lock().await;
        let tx = client.transaction().await.map_err(refused)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT hash, created_by, {}, {} FROM pvo_cluster.join_token
                     WHERE {WORKS} AND left(hash, char_length($1)) = $1 FOR UPDATE",
                    ts("created_at"),
                    ts("expires_at")
                ),
                &[&prefix],
            )
            .await
            .map_err(refused)?;
        let info = match rows.len() {
            0 => return Err(TokenRefused::NoPrefix(prefix).into()),
            1 => token_info(&rows[0]),
            count => return Err(TokenRefused::Ambiguous { prefix, count }.into()),
        };
        tx.execute(
            "UPDATE pvo_cluster.join_token SET revoked_by = $2, revoked_at = now() WHERE hash = $1",
            &[&info.hash, &by],
        )
        .await
        .map_err(refused)?;
        tx.commit().await.map_err(refused)?;
        Ok(info)
    }

    /// Whether the token `hash` works now.
    pub async fn check_token(&self, hash: &str) -> Result<(), DbError> {
        let client = self.client.lock().await;
        match token_refusal(&*client, hash, None).await? {
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }

    /// Claims the token `hash` for `machine`, unless it no longer works or another
    /// machine claimed it (the same machine may claim it again: a retried join).
    pub async fn claim_token(&self, hash: &str, machine: &str) -> Result<(), DbError> {
        let client = self.client.lock().await;
        let n = client
            .execute(
                &format!(
                    "UPDATE pvo_cluster.join_token SET claimed_by = $2, claimed_at = now()
                     WHERE hash = $1 AND {WORKS} AND (claimed_by IS NULL OR claimed_by = $2)"
                ),
                &[&hash, &machine],
            )
            .await
            .map_err(refused)?;
        if n == 1 {
            return Ok(());
        }
        Err(token_refusal(&*client, hash, Some(machine))
            .await?
            .unwrap_or(TokenRefused::Unknown)
            .into())
    }

    /// Listens for commits and membership changes on a connection of its own. The
    /// listener ends (`next` answers `None`) when that connection is lost: the member is
    /// then disconnected until it listens again and catches up from its last revision.
    pub async fn listen(&self) -> Result<Listener, DbError> {
        let unreachable = |e: tokio_postgres::Error| DbError::Unreachable {
            target: self.target.clone(),
            why: e.to_string(),
        };
        let (tx, rx) = mpsc::channel(64);
        let client = match &self.tls {
            Some(tls) => {
                let (client, connection) = self
                    .config
                    .connect(MakeRustlsConnect::new((**tls).clone()))
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(forward(connection, tx));
                client
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await.map_err(unreachable)?;
                tokio::spawn(forward(connection, tx));
                client
            }
        };
        // The task drives the connection while LISTEN goes through the client.
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(refused)?;
        Ok(Listener {
            notices: rx,
            _client: client,
        })
    }
}

/// Drives a listening connection, passing its notifications on until it ends.
async fn forward<S, T>(mut connection: Connection<S, T>, tx: mpsc::Sender<Notice>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let message = std::future::poll_fn(|cx| connection.poll_message(cx)).await;
        let notice = match message {
            Some(Ok(AsyncMessage::Notification(n))) if n.channel() == CHANNEL => {
                let payload = n.payload();
                if let Some(r) = payload.strip_prefix("revision ") {
                    match r.parse() {
                        Ok(r) => Notice::Revision(r),
                        Err(_) => continue,
                    }
                } else if let Some(r) = payload.strip_prefix("users ") {
                    match r.parse() {
                        Ok(r) => Notice::Users(r),
                        Err(_) => continue,
                    }
                } else if payload == "members" {
                    Notice::Members
                } else {
                    continue;
                }
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                tracing::debug!("cluster listener: {e}");
                return;
            }
            None => return,
        };
        // A member that is slow to read hears of a later revision anyway, and reads
        // everything after its last one: a notice dropped when the channel is full
        // loses nothing.
        if tx.is_closed() {
            return;
        }
        let _ = tx.try_send(notice);
    }
}

/// Notifications of the cluster's store; dropping it closes its connection.
pub struct Listener {
    notices: mpsc::Receiver<Notice>,
    _client: Client,
}

impl Listener {
    /// The next notice; `None` once the connection is lost.
    pub async fn next(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }
}

/// "postgresql HOST:PORT/DBNAME as USER" for messages, without the password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        config.get_dbname().unwrap_or("postgres"),
        config.get_user().unwrap_or("?")
    )
}

async fn open(
    config: &tokio_postgres::Config,
    tls: &Option<Arc<rustls::ClientConfig>>,
    target: &str,
) -> Result<Client, DbError> {
    let unreachable = |e: tokio_postgres::Error| DbError::Unreachable {
        target: target.to_string(),
        why: match std::error::Error::source(&e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    };
    let client = match tls {
        Some(tls) => {
            let (client, connection) = config
                .connect(MakeRustlsConnect::new((**tls).clone()))
                .await
                .map_err(unreachable)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("cluster database connection: {e}");
                }
            });
            client
        }
        None => {
            let (client, connection) = config.connect(NoTls).await.map_err(unreachable)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!("cluster database connection: {e}");
                }
            });
            client
        }
    };
    Ok(client)
}

/// Writes each change as the next revision, refusing a stale base (under the commit lock,
/// inside the caller's transaction).
async fn write_revisions(
    tx: &tokio_postgres::Transaction<'_>,
    changes: &[Commit],
) -> Result<Vec<Revision>, DbError> {
    let mut out = Vec::new();
    for c in changes {
        let newer = revisions(
            tx,
            "WHERE number > $1 AND level = $2",
            &[&(c.base as i64), &c.level.to_string()],
        )
        .await?;
        // The revisions this commit itself wrote do not make its other changes stale.
        let newer: Vec<Revision> = newer
            .into_iter()
            .filter(|r| !out.iter().any(|o: &Revision| o.number == r.number))
            .collect();
        check_base(c.base, &c.level, &newer)?;
        let row = tx
                .query_one(
                    "INSERT INTO pvo_cluster.revision (number, level, author, comment, base)
                     SELECT coalesce(max(number), 0) + 1, $1, $2, $3, $4 FROM pvo_cluster.revision
                     RETURNING number, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')",
                    &[
                        &c.level.to_string(),
                        &c.author,
                        &c.comment,
                        &(c.base as i64),
                    ],
                )
                .await
                .map_err(refused)?;
        let number: i64 = row.get(0);
        tx.execute(
            "INSERT INTO pvo_cluster.layer (level, revision, text) VALUES ($1, $2, $3)",
            &[&c.level.to_string(), &number, &c.text],
        )
        .await
        .map_err(refused)?;
        out.push(Revision {
            number: number as u64,
            level: c.level.clone(),
            author: c.author.clone(),
            at: row.get(1),
            comment: c.comment.clone(),
        });
    }
    Ok(out)
}

/// A token that works: not used, not revoked, not expired.
const WORKS: &str = "used_at IS NULL AND revoked_at IS NULL AND expires_at > now()";

/// A time column as the store shows times (`2025-01-31 12:00:00 UTC`).
fn ts(column: &str) -> String {
    format!("to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"')")
}

fn token_info(row: &tokio_postgres::Row) -> TokenInfo {
    TokenInfo {
        hash: row.get(0),
        created_by: row.get(1),
        created_at: row.get(2),
        expires_at: row.get(3),
    }
}

/// Why the token `hash` does not work for `machine` now (`None`: it works); a token
/// claimed by another machine counts only when `machine` is given.
async fn token_refusal(
    c: &impl tokio_postgres::GenericClient,
    hash: &str,
    machine: Option<&str>,
) -> Result<Option<TokenRefused>, DbError> {
    let Some(row) = c
        .query_opt(
            &format!(
                "SELECT used_by, {}, revoked_by, {}, {}, expires_at <= now(), claimed_by
                 FROM pvo_cluster.join_token WHERE hash = $1",
                ts("used_at"),
                ts("revoked_at"),
                ts("expires_at")
            ),
            &[&hash],
        )
        .await
        .map_err(refused)?
    else {
        return Ok(Some(TokenRefused::Unknown));
    };
    let (used_by, used_at): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    let (revoked_by, revoked_at): (Option<String>, Option<String>) = (row.get(2), row.get(3));
    let expired: bool = row.get(5);
    let claimed_by: Option<String> = row.get(6);
    Ok(if let Some(by) = used_by {
        Some(TokenRefused::Used {
            by,
            at: used_at.unwrap_or_default(),
        })
    } else if let Some(by) = revoked_by {
        Some(TokenRefused::Revoked {
            by,
            at: revoked_at.unwrap_or_default(),
        })
    } else if expired {
        Some(TokenRefused::Expired { at: row.get(4) })
    } else {
        match (claimed_by, machine) {
            (Some(by), Some(m)) if by != m => Some(TokenRefused::Claimed { by }),
            _ => None,
        }
    })
}

async fn notify(tx: &tokio_postgres::Transaction<'_>, payload: &str) -> Result<(), DbError> {
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
        .await
        .map_err(refused)?;
    Ok(())
}

async fn revisions(
    c: &impl tokio_postgres::GenericClient,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<Revision>, DbError> {
    let sql = format!(
        "SELECT number, level, author, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), comment
         FROM pvo_cluster.revision {filter} ORDER BY number"
    );
    let mut out = Vec::new();
    for row in c.query(&sql, params).await.map_err(refused)? {
        let number: i64 = row.get(0);
        out.push(Revision {
            number: number as u64,
            level: level(row.get(1))?,
            author: row.get(2),
            at: row.get(3),
            comment: row.get(4),
        });
    }
    Ok(out)
}

async fn users_revisions(
    c: &impl tokio_postgres::GenericClient,
    since: u64,
) -> Result<Vec<UsersRevision>, DbError> {
    let mut out = Vec::new();
    for row in c
        .query(
            "SELECT number, author, machine, to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS \"UTC\"'), what
             FROM pvo_cluster.users_revision WHERE number > $1 ORDER BY number",
            &[&(since as i64)],
        )
        .await
        .map_err(refused)?
    {
        let number: i64 = row.get(0);
        out.push(UsersRevision {
            number: number as u64,
            author: row.get(1),
            machine: row.get(2),
            at: row.get(3),
            what: row.get(4),
        });
    }
    Ok(out)
}

async fn read_members(c: &impl tokio_postgres::GenericClient) -> Result<Members, DbError> {
    let cluster = c
        .query_opt("SELECT name FROM pvo_cluster.cluster", &[])
        .await
        .map_err(refused)?
        .ok_or(DbError::NoCluster)?;
    let groups = c
        .query("SELECT name FROM pvo_cluster.grp ORDER BY name", &[])
        .await
        .map_err(refused)?
        .iter()
        .map(|r| name(r.get(0)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut machines = Vec::new();
    for r in c
        .query(
            "SELECT name, address, grp FROM pvo_cluster.machine ORDER BY name",
            &[],
        )
        .await
        .map_err(refused)?
    {
        machines.push(Member {
            name: name(r.get(0))?,
            address: r.get(1),
            group: name(r.get(2))?,
        });
    }
    Ok(Members::restore(name(cluster.get(0))?, groups, machines)?)
}

/// Writes the members over what is stored: groups first (machines refer to them), then
/// machines added, moved or gone, then the groups no longer there.
async fn write_members(tx: &tokio_postgres::Transaction<'_>, m: &Members) -> Result<(), DbError> {
    for g in m.groups() {
        tx.execute(
            "INSERT INTO pvo_cluster.grp (name) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&g.as_str()],
        )
        .await
        .map_err(refused)?;
    }
    let names: Vec<&str> = m.machines().map(|x| x.name.as_str()).collect();
    tx.execute(
        "DELETE FROM pvo_cluster.machine WHERE NOT (name = ANY($1))",
        &[&names],
    )
    .await
    .map_err(refused)?;
    for x in m.machines() {
        tx.execute(
            "INSERT INTO pvo_cluster.machine (name, address, grp) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET address = excluded.address, grp = excluded.grp",
            &[&x.name.as_str(), &x.address, &x.group.as_str()],
        )
        .await
        .map_err(refused)?;
    }
    let groups: Vec<&str> = m.groups().map(Name::as_str).collect();
    tx.execute(
        "DELETE FROM pvo_cluster.grp WHERE NOT (name = ANY($1))",
        &[&groups],
    )
    .await
    .map_err(refused)?;
    Ok(())
}

impl crate::core::cluster::store::ClusterStore for ClusterDb {
    fn create<'a>(
        &'a self,
        members: &'a Members,
        layers: &'a [(Level, String)],
        author: &'a str,
    ) -> BoxFuture<'a, Result<u64, DbError>> {
        Box::pin(ClusterDb::create(self, members, layers, author))
    }

    fn commit<'a>(
        &'a self,
        changes: &'a [Commit],
    ) -> BoxFuture<'a, Result<Vec<Revision>, DbError>> {
        Box::pin(self.commit_all(changes))
    }

    fn history(&self, since: u64) -> BoxFuture<'_, Result<Vec<Revision>, DbError>> {
        Box::pin(ClusterDb::history(self, since))
    }

    fn layer_at<'a>(
        &'a self,
        level: &'a Level,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<String>, DbError>> {
        Box::pin(ClusterDb::layer_at(self, level, revision))
    }

    fn snapshot(&self) -> BoxFuture<'_, Result<Snapshot, DbError>> {
        Box::pin(ClusterDb::snapshot(self))
    }

    fn report<'a>(&'a self, machine: &'a Name, applied: u64) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(ClusterDb::report(self, machine, applied))
    }

    fn report_facts<'a>(
        &'a self,
        machine: &'a Name,
        features: &'a [String],
        cpq: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(ClusterDb::report_facts(self, machine, features, cpq))
    }

    fn change_members(&self, change: MembersChange) -> BoxFuture<'_, Result<Members, DbError>> {
        Box::pin(ClusterDb::change_members(self, change))
    }

    fn join<'a>(
        &'a self,
        change: MembersChange,
        changes: &'a [Commit],
        token: Option<&'a TokenUse>,
    ) -> BoxFuture<'a, Result<Vec<Revision>, DbError>> {
        Box::pin(async move {
            ClusterDb::join_with(self, change, changes, token)
                .await
                .map(|(_, r)| r)
        })
    }

    fn users(&self) -> BoxFuture<'_, Result<Option<UserBase>, DbError>> {
        Box::pin(ClusterDb::users(self))
    }

    fn commit_users<'a>(
        &'a self,
        change: &'a UsersCommit,
    ) -> BoxFuture<'a, Result<UsersRevision, DbError>> {
        Box::pin(ClusterDb::commit_users(self, change))
    }

    fn make_token<'a>(
        &'a self,
        hash: &'a str,
        minutes: u32,
        by: &'a str,
    ) -> BoxFuture<'a, Result<TokenInfo, DbError>> {
        Box::pin(ClusterDb::make_token(self, hash, minutes, by))
    }

    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenInfo>, DbError>> {
        Box::pin(ClusterDb::tokens(self))
    }

    fn revoke_token<'a>(
        &'a self,
        prefix: &'a str,
        by: &'a str,
    ) -> BoxFuture<'a, Result<TokenInfo, DbError>> {
        Box::pin(ClusterDb::revoke_token(self, prefix, by))
    }

    fn check_token<'a>(&'a self, hash: &'a str) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(ClusterDb::check_token(self, hash))
    }

    fn claim_token<'a>(
        &'a self,
        hash: &'a str,
        machine: &'a str,
    ) -> BoxFuture<'a, Result<(), DbError>> {
        Box::pin(ClusterDb::claim_token(self, hash, machine))
    }

    fn listen(&self) -> BoxFuture<'_, Result<Box<dyn Notices>, DbError>> {
        Box::pin(async move {
            let l = ClusterDb::listen(self).await?;
            Ok(Box::new(l) as Box<dyn Notices>)
        })
    }
}

impl Notices for Listener {
    fn next(&mut self) -> BoxFuture<'_, Option<Notice>> {
        Box::pin(Listener::next(self))
    }
}

/// Connects members and administrators' commands to the store `[cluster]` names: over
/// a Unix socket as it is, over TCP with TLS verified against `[cluster] ca` when given.
pub struct Postgres;

impl Connector for Postgres {
    fn connect<'a>(
        &'a self,
        membership: &'a Membership,
        member: &'a str,
    ) -> BoxFuture<'a, Result<Arc<dyn crate::core::cluster::store::ClusterStore>, DbError>> {
        Box::pin(async move {
            let tls = match &membership.ca {
                Some(path) => Some(client_config(path)?),
                None => None,
            };
            let db = ClusterDb::connect(&membership.url, member, tls).await?;
            Ok(Arc::new(db) as Arc<dyn crate::core::cluster::store::ClusterStore>)
        })
    }
}

/// The TLS connector for a PostgreSQL whose certificate the CA in the PEM file `ca`
/// signed: the cluster's store, and a manager's central store (`[store] ca`).
pub fn tls_connector(ca: &std::path::Path) -> Result<MakeRustlsConnect, DbError> {
    Ok(MakeRustlsConnect::new((*client_config(ca)?).clone()))
}

/// A TLS client configuration that trusts only the CA certificates in the PEM file `path`.
fn client_config(path: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, DbError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |why: String| DbError::Ca {
        path: path.display().to_string(),
        why,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("it holds no PEM certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}
