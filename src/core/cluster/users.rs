//! One user base for the cluster: users, their roles, states, password hashes, SSH keys
//! and API tokens, and the custom roles are the cluster's, kept in its store as
//! revisions (`ClusterStore::users`, `commit_users`) and on every member in its own
//! `users.json` as the last good copy (`core::users`), which a member that cannot reach
//! the store keeps logging users in with. What is per machine stays local: the login
//! throttle's counters and the web sessions.
//!
//! A change is written to the store first, from the users revision the member's copy is
//! (`userconfig`, through `Users::update_through`); a change from an older revision is
//! refused naming the ones in between. Every member hears of a new revision
//! (`Notice::Users`) and takes it ([`catch_up`]); one that reconnects catches up the
//! same way. A cluster without a user base yet (made before users were the cluster's)
//! takes the first member's that connects ([`seed`]).

use pvo_cluster::Name;

use crate::core::cluster::store::{ClusterStore, StoreError, UsersCommit, UsersRevision};
use crate::core::events::Event;
use crate::core::state::{AccessHandle, MailHandle};

/// What the refusal of a user change says when the member cannot reach the store.
pub const UNREACHABLE: &str = "users are the cluster's; this machine cannot reach the cluster's store: see `clusterconfig connstatus`";

/// What a `--level` other than the cluster's on a user command says.
pub const CLUSTER_LEVEL_ONLY: &str = "users and roles are cluster-level only: there is one user base for the cluster (as on the appliance, users and passwords are not set per group or machine); run the command without --level";

/// Writes the member's own base as the cluster's first one. `None`: another member's
/// came first (the caller takes that one).
pub async fn seed(
    access: &AccessHandle,
    store: &dyn ClusterStore,
    author: &str,
    machine: &Name,
) -> Result<Option<UsersRevision>, StoreError> {
    let change = UsersCommit {
        base: 0,
        users: access.users.export(),
        author: author.to_string(),
        machine: machine.to_string(),
        what: format!("the users of machine {machine} became the cluster's"),
    };
    match store.commit_users(&change).await {
        Ok(r) => Ok(Some(r)),
        Err(StoreError::UsersConflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes the store's user base when it is newer than this member's copy; seeds the
/// store with the copy when it has none. A base that cannot be used is logged and the
/// copy stays in force.
pub async fn catch_up(
    access: &std::sync::Arc<AccessHandle>,
    mail: &MailHandle,
    store: &dyn ClusterStore,
    machine: &Name,
) -> Result<(), StoreError> {
    let base = match store.users().await? {
        Some(b) => b,
        None => match seed(access, store, "the first member", machine).await? {
            Some(r) => {
                taken(access, mail, machine, r.number);
                mail.log.emit(Event::ClusterUsersApplied {
                    machine,
                    revision: r.number,
                    by: &r.author,
                    on: &r.machine,
                    what: &r.what,
                });
                return Ok(());
            }
            None => match store.users().await? {
                Some(b) => b,
                None => return Ok(()),
            },
        },
    };
    let running = access.users.revision();
    if base.revision.number <= running {
        return Ok(());
    }
    let a = access.clone();
    let (text, number) = (base.users.clone(), base.revision.number);
    let adopted = tokio::task::spawn_blocking(move || a.users.adopt(&text, number, false))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match adopted {
        Ok(true) => mail.log.emit(Event::ClusterUsersApplied {
            machine,
            revision: number,
            by: &base.revision.author,
            on: &base.revision.machine,
            what: &base.revision.what,
        }),
        Ok(false) => {}
        Err(why) => mail.log.emit(Event::ClusterUsersNotApplied {
            machine,
            revision: number,
            why: &why,
            running,
        }),
    }
    Ok(())
}

/// The copy is the seeded revision now.
pub fn taken(access: &AccessHandle, mail: &MailHandle, machine: &Name, revision: u64) {
    let text = access.users.export();
    if let Err(why) = access.users.adopt(&text, revision, false) {
        mail.log.emit(Event::ClusterUsersNotApplied {
            machine,
            revision,
            why: &why,
            running: access.users.revision(),
        });
    }
}
