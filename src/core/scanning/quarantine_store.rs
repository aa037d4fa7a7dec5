//! The handle of a node's quarantine store (`pvo-quarantine` under
//! `DATA_DIR/quarantine/`): the gateway's local quarantines or the manager's central
//! store. `state::Handles` holds it; what the node does with the store's reports is
//! `local_quarantine`'s. The store is synchronous (SQLite, or on a manager with `[store]
//! url` PostgreSQL through the blocking `postgres` client, which must never run on a
//! runtime worker): every call runs on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use pvo_quarantine::{Inserted, NewMessage, Store};

use crate::core::clock::unix_now as now;

#[derive(Clone)]
pub struct LocalQuarantine {
    store: Arc<SharedStore>,
}

/// The store as the node shares it (the handle and the manager's writer thread). Its last
/// holder may let go of it on a runtime thread, where the blocking PostgreSQL client may
/// not close its connections (it runs a runtime of its own): it is dropped on a thread
/// of its own.
pub struct SharedStore(Option<Store>);

impl std::ops::Deref for SharedStore {
    type Target = Store;

    fn deref(&self) -> &Store {
        self.0
            .as_ref()
            .expect("the store is there until it is dropped")
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        if let Some(store) = self.0.take() {
            let _ = std::thread::spawn(move || drop(store)).join();
        }
    }
}

impl LocalQuarantine {
    /// The embedded store in `dir` (`quarantine.db`).
    pub fn open(dir: &Path, quota: Option<u64>) -> Result<LocalQuarantine> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("quarantine.db");
        let store = Store::open_sqlite(&path, now())
            .with_context(|| format!("opening the quarantine store {}", path.display()))?;
        store
            .set_quota(quota)
            .context("setting the quarantine quota")?;
        Ok(LocalQuarantine::with_store(store))
    }

    /// A store opened elsewhere (the composition root opens PostgreSQL off the runtime,
    /// and sets its quota there).
    pub fn with_store(store: Store) -> LocalQuarantine {
        LocalQuarantine {
            store: Arc::new(SharedStore(Some(store))),
        }
    }

    /// The store itself (the manager's group-committing writer owns a handle).
    pub fn store(&self) -> Arc<SharedStore> {
        self.store.clone()
    }

    /// Runs `f` with the store on the blocking pool.
    pub async fn with<R: Send + 'static>(&self, f: impl FnOnce(&Store) -> R + Send + 'static) -> R {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .expect("quarantine store task panicked")
    }

    pub async fn quarantine(&self, msg: NewMessage) -> pvo_quarantine::Result<Inserted> {
        self.with(move |s| s.quarantine(&msg, now())).await
    }
}
