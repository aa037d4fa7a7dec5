//! Pending configuration, commit history, and the edits the configuration
//! commands make to the TOML document.
//!
//! The committed configuration is the node's configuration file, the one it
//! was started from. Configuration commands never touch that file: they edit
//! a full copy, `DATA_DIR/config/pending.toml`, and note who changed what in
//! `pending.json`. A commit validates the pending text, applies it to the
//! running node, and only then replaces the committed file (write a
//! temporary file, fsync, rename, fsync the directory), so after a crash the
//! file is either the old configuration or the new one, never half of each.
//! Every committed text is kept as `history/N.toml` beside `history/N.json`
//! (number, user, time, comment); the `.json` is written last and marks a
//! complete entry. Entry 0 is the configuration the node ran before the first
//! commit, recorded the first time the history is needed, so there is always
//! something to roll back to.
//!
//! Documents are edited with `toml_edit`, which keeps the administrator's
//! comments, key order and indentation. The editors here only produce the
//! new text; the caller validates it with `Config::parse` and saves nothing
//! when it is invalid. This module knows nothing of the admin protocol or of
//! the wording of the commands (`commands::config_cmds`).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::core::config::{Config, ConfigError};

/// Commands of the same node run one at a time through the store: two
/// editors must not both start from the same pending text, and a commit must
/// not race an edit.
static LOCK: Mutex<()> = Mutex::new(());

pub fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) use crate::core::clock::unix_now as now;

/// One change made by a configuration command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Change {
    pub time: u64,
    pub user: String,
    pub command: String,
    pub summary: String,
}

/// Who made the pending changes, and what they were.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PendingMeta {
    pub created: u64,
    #[serde(default)]
    pub changes: Vec<Change>,
}

impl PendingMeta {
    /// The users who made changes, each once, in order of their first change.
    pub fn users(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.changes {
            if !out.contains(&c.user) {
                out.push(c.user.clone());
            }
        }
        out
    }
}

pub struct Pending {
    pub text: String,
    pub meta: PendingMeta,
}

/// One committed configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub n: u64,
    pub user: String,
    pub time: u64,
    pub comment: String,
    #[serde(default)]
    pub changes: Vec<Change>,
}

/// The configuration files of one node.
pub struct Store {
    dir: PathBuf,
    committed: PathBuf,
}

impl Store {
    /// `data_dir` holds `config/`; `committed` is the node's configuration file.
    pub fn new(data_dir: &Path, committed: &Path) -> Store {
        // `components` drops the "." of `data_dir = "."`, for readable messages.
        Store {
            dir: data_dir.components().collect::<PathBuf>().join("config"),
            committed: committed.to_path_buf(),
        }
    }

    pub fn committed_path(&self) -> &Path {
        &self.committed
    }

    pub fn pending_path(&self) -> PathBuf {
        self.dir.join("pending.toml")
    }

    fn pending_meta_path(&self) -> PathBuf {
        self.dir.join("pending.json")
    }

    fn history_dir(&self) -> PathBuf {
        self.dir.join("history")
    }

    pub fn history_path(&self, n: u64) -> PathBuf {
        self.history_dir().join(format!("{n}.toml"))
    }

    /// Relative paths in any version of the configuration resolve against the
    /// directory of the committed file, where the text will live.
    pub fn base(&self) -> PathBuf {
        let base = self
            .committed
            .parent()
            .map(Path::to_path_buf)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        std::fs::canonicalize(&base).unwrap_or(base)
    }

    /// Parses a version of the configuration; errors name `file`.
    pub fn parse(&self, text: &str, file: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, file, &self.base())
    }

    pub fn committed_text(&self) -> Result<String> {
        std::fs::read_to_string(&self.committed).with_context(|| {
            format!(
                "reading the committed configuration {}",
                self.committed.display()
            )
        })
    }

    pub fn pending(&self) -> Result<Option<Pending>> {
        let text = match std::fs::read_to_string(self.pending_path()) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", self.pending_path().display()))
            }
        };
        // A pending.toml written by hand has no notes; it is pending all the same.
        let meta = std::fs::read(self.pending_meta_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Some(Pending { text, meta }))
    }

    /// The text the editors work on: the pending one, else the committed
    /// one; and the file that text comes from.
    pub fn working(&self) -> Result<(String, PathBuf, bool)> {
        match self.pending()? {
            Some(p) => Ok((p.text, self.pending_path(), true)),
            None => Ok((self.committed_text()?, self.committed.clone(), false)),
        }
    }

    /// Saves `text` as the pending configuration, adding `change` to its notes.
    pub fn save_pending(&self, text: &str, change: Change) -> Result<()> {
        let mut meta = self.pending()?.map(|p| p.meta).unwrap_or_default();
        if meta.created == 0 {
            meta.created = change.time;
        }
        meta.changes.push(change);
        crate::core::atomic_file::write(&self.pending_path(), text.as_bytes())?;
        crate::core::atomic_file::write(
            &self.pending_meta_path(),
            &serde_json::to_vec_pretty(&meta)?,
        )?;
        Ok(())
    }

    /// Discards the pending changes; false when there were none.
    pub fn clear_pending(&self) -> Result<bool> {
        let existed = self.pending_path().exists();
        for p in [self.pending_path(), self.pending_meta_path()] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", p.display())),
            }
        }
        Ok(existed)
    }

    /// Every history entry, oldest first; records entry 0 (the committed
    /// configuration as it is now) when there is none yet.
    pub fn history(&self) -> Result<Vec<HistoryEntry>> {
        let mut entries = self.read_history()?;
        if entries.is_empty() {
            let text = self.committed_text()?;
            entries.push(self.write_entry(
                0,
                &text,
                HistoryEntry {
                    n: 0,
                    user: "system".into(),
                    time: now(),
                    comment: "configuration the node started with".into(),
                    changes: Vec::new(),
                },
            )?);
        }
        Ok(entries)
    }

    fn read_history(&self) -> Result<Vec<HistoryEntry>> {
        let dir = self.history_dir();
        let mut entries = Vec::new();
        let list = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for f in list {
            let path = f?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if let Ok(e) = serde_json::from_slice::<HistoryEntry>(&bytes) {
                if self.history_path(e.n).exists() {
                    entries.push(e);
                }
            }
        }
        entries.sort_by_key(|e| e.n);
        Ok(entries)
    }

    /// The committed text of history entry `n`.
    pub fn history_text(&self, n: u64) -> Result<String> {
        std::fs::read_to_string(self.history_path(n))
            .with_context(|| format!("reading {}", self.history_path(n).display()))
    }

    /// Records `text` as the next history entry.
    pub fn record(
        &self,
        text: &str,
        user: &str,
        comment: &str,
        changes: Vec<Change>,
    ) -> Result<HistoryEntry> {
        let n = self.history()?.last().map_or(0, |e| e.n + 1);
        self.write_entry(
            n,
            text,
            HistoryEntry {
                n,
                user: user.to_string(),
                time: now(),
                comment: comment.to_string(),
                changes,
            },
        )
    }

    fn write_entry(&self, n: u64, text: &str, entry: HistoryEntry) -> Result<HistoryEntry> {
        crate::core::atomic_file::write(&self.history_path(n), text.as_bytes())?;
        crate::core::atomic_file::write(
            &self.history_dir().join(format!("{n}.json")),
            &serde_json::to_vec_pretty(&entry)?,
        )?;
        Ok(entry)
    }

    /// Replaces the committed configuration file (atomically, keeping its mode).
    pub fn write_committed(&self, text: &str) -> Result<()> {
        crate::core::atomic_file::write(&self.committed, text.as_bytes())
    }
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The line of `[[array]]` entry `index`'s `key` in `text`, if it is there.
pub fn line_of_key(text: &str, array: &str, index: usize, key: &str) -> Option<usize> {
    // `toml` first: see `Doc::parse`.
    toml::from_str::<toml::Table>(text).ok()?;
    let doc = toml_edit::Document::parse(text).ok()?;
    let item = doc.get(array)?.as_array_of_tables()?.get(index)?.get(key)?;
    item.span().map(|s| line_of(text, s.start))
}

// ---------------------------------------------------------------------------
// Editing the document
// ---------------------------------------------------------------------------

/// The configuration text as an editable document.
pub struct Doc(pub DocumentMut);

/// A domain as the configuration compares it.
pub fn normalize_domain(d: &str) -> String {
    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
    if d == "all" {
        "ALL".to_string()
    } else {
        d
    }
}

/// A list of names for messages: `"a", "b"`, or `(none)`.
pub fn quoted_list<S: AsRef<str>>(names: &[S]) -> String {
    if names.is_empty() {
        return "(none)".to_string();
    }
    names
        .iter()
        .map(|n| format!("\"{}\"", n.as_ref()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn str_array<S: AsRef<str>>(items: &[S]) -> Value {
    let mut a = Array::new();
    for i in items {
        a.push(i.as_ref());
    }
    Value::Array(a)
}

/// The whitespace that indents the last line of a decor prefix ("" if none).
fn indent_of(prefix: Option<&toml_edit::RawString>) -> String {
    let p = prefix.and_then(|p| p.as_str()).unwrap_or("");
    let last = p.rsplit('\n').next().unwrap_or("");
    if last.chars().all(|c| c == ' ' || c == '\t') {
        last.to_string()
    } else {
        String::new()
    }
}

/// A new table for an array of tables, indented like its siblings and set
/// off from them by a blank line.
fn new_entry(siblings: &ArrayOfTables) -> Table {
    let mut t = Table::new();
    let indent = siblings
        .iter()
        .last()
        .map(|s| indent_of(s.decor().prefix()))
        .unwrap_or_default();
    t.decor_mut().set_prefix(format!("\n{indent}"));
    t
}

/// Sets `key` to `v`, keeping the key's place and indentation and the
/// value's trailing comment when the key exists; otherwise appends it,
/// indented like the table's other keys.
fn set(t: &mut Table, key: &str, v: impl Into<Value>) {
    let mut v: Value = v.into();
    if let Some(item) = t.get_mut(key) {
        if let Some(old) = item.as_value() {
            let decor = old.decor().clone();
            *v.decor_mut() = decor;
        }
        *item = Item::Value(v);
        return;
    }
    let indent = t
        .iter()
        .next()
        .and_then(|(k, _)| t.key(k))
        .map(|k| indent_of(k.leaf_decor().prefix()))
        .unwrap_or_else(|| indent_of(t.decor().prefix()));
    t.insert(key, Item::Value(v));
    if let Some(mut k) = t.key_mut(key) {
        k.leaf_decor_mut().set_prefix(indent);
    }
}

impl Doc {
    /// `toml` checks the text first: `toml_edit` 0.23 panics on some invalid documents
    /// (found by fuzzing `pvo_cluster`'s layer documents) that `toml` reports as errors.
    pub fn parse(text: &str) -> std::result::Result<Doc, String> {
        if let Err(e) = toml::from_str::<toml::Table>(text) {
            return Err(format!("the configuration is not valid TOML: {e}"));
        }
        text.parse::<DocumentMut>()
            .map(Doc)
            .map_err(|e| format!("the configuration is not valid TOML: {e}"))
    }

    pub fn text(&self) -> String {
        self.0.to_string()
    }

    /// The array of tables `key` (`[[key]]`), created when absent.
    fn array(&mut self, key: &str) -> std::result::Result<&mut ArrayOfTables, String> {
        let item = self
            .0
            .as_table_mut()
            .entry(key)
            .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
        if item.is_none() {
            *item = Item::ArrayOfTables(ArrayOfTables::new());
        }
        item.as_array_of_tables_mut().ok_or_else(|| {
            format!("`{key}` must be written as [[{key}]] tables to be edited by this command")
        })
    }

    /// The table at `path` (`["tls", "inbound"]`), created when absent.
    fn table(&mut self, path: &[&str]) -> std::result::Result<&mut Table, String> {
        let mut t = self.0.as_table_mut();
        for (i, key) in path.iter().enumerate() {
            let implicit = i + 1 < path.len();
            let item = t.entry(key).or_insert_with(|| {
                let mut n = Table::new();
                n.set_implicit(implicit);
                Item::Table(n)
            });
            if let Some(inline) = item.as_inline_table().cloned() {
                *item = Item::Table(inline.into_table());
            }
            t = item.as_table_mut().ok_or_else(|| {
                format!(
                    "`{}` must be a table to be edited by this command",
                    path[..=i].join(".")
                )
            })?;
        }
        Ok(t)
    }

    /// The index of the `[[array]]` entry whose `field` is `name` (any case).
    fn find(&mut self, array: &str, field: &str, name: &str) -> Option<usize> {
        let a = self.0.get(array)?.as_array_of_tables()?;
        a.iter().position(|t| {
            t.get(field)
                .and_then(|v| v.as_str())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case(name.trim()))
        })
    }

    // -- listenerconfig policy -----------------------------------------------

    /// Sets integer keys of the `[[policy]]` named `name`.
    pub fn policy_set(
        &mut self,
        name: &str,
        values: &[(&str, u64)],
    ) -> std::result::Result<(), String> {
        let i = self
            .find("policy", "name", name)
            .ok_or_else(|| format!("no [[policy]] named \"{name}\" in the configuration file"))?;
        let t = self
            .0
            .get_mut("policy")
            .and_then(|a| a.as_array_of_tables_mut())
            .and_then(|a| a.get_mut(i))
            .ok_or_else(|| format!("no [[policy]] named \"{name}\" in the configuration file"))?;
        for (key, v) in values {
            set(t, key, (*v).min(i64::MAX as u64) as i64);
        }
        Ok(())
    }

    // -- deliveryconfig ----------------------------------------------------

    pub fn set_delivery(
        &mut self,
        interface: Option<&str>,
        max_concurrency: Option<u64>,
    ) -> std::result::Result<(), String> {
        let t = self.table(&["delivery"])?;
        if let Some(i) = interface {
            set(t, "default_interface", i);
        }
        if let Some(n) = max_concurrency {
            set(t, "max_concurrency", n.min(i64::MAX as u64) as i64);
        }
        Ok(())
    }

    // -- sslconfig ---------------------------------------------------------

    /// `direction` is "inbound" or "outbound"; `ciphers` `Some(None)`
    /// removes the list (every suite).
    pub fn set_tls(
        &mut self,
        direction: &str,
        versions: Option<&[String]>,
        ciphers: Option<Option<&[String]>>,
    ) -> std::result::Result<(), String> {
        let t = self.table(&["tls", direction])?;
        if let Some(v) = versions {
            set(t, "versions", str_array(v));
        }
        match ciphers {
            None => {}
            Some(None) => {
                t.remove("ciphers");
            }
            Some(Some(list)) => set(t, "ciphers", str_array(list)),
        }
        Ok(())
    }

    // -- interfaceconfig ---------------------------------------------------

    pub fn interface_new(
        &mut self,
        name: &str,
        address: &str,
        hostname: Option<&str>,
    ) -> std::result::Result<(), String> {
        let a = self.array("interface")?;
        let mut t = new_entry(a);
        set(&mut t, "name", name);
        set(&mut t, "address", address);
        if let Some(h) = hostname {
            set(&mut t, "hostname", h);
        }
        a.push(t);
        Ok(())
    }

    pub fn interface_edit(
        &mut self,
        name: &str,
        address: Option<&str>,
        hostname: Option<&str>,
    ) -> std::result::Result<(), String> {
        let i = self
            .find("interface", "name", name)
            .ok_or_else(|| format!("no interface \"{name}\""))?;
        let t = self
            .array("interface")?
            .get_mut(i)
            .ok_or("interface vanished")?;
        if let Some(a) = address {
            set(t, "address", a);
        }
        if let Some(h) = hostname {
            set(t, "hostname", h);
        }
        Ok(())
    }

    /// `[ssh]` or `[web]` (`section`) on interface `interface`, port `port`; `None`:
    /// turned off (`enabled = false`, the rest kept).
    pub fn server_set(
        &mut self,
        section: &str,
        on: Option<(&str, u16)>,
    ) -> std::result::Result<(), String> {
        let t = self.table(&[section])?;
        match on {
            Some((interface, port)) => {
                t.remove("enabled");
                set(t, "interface", interface);
                set(t, "port", port as i64);
            }
            None => set(t, "enabled", false),
        }
        Ok(())
    }

    pub fn interface_delete(&mut self, name: &str) -> std::result::Result<(), String> {
        let i = self
            .find("interface", "name", name)
            .ok_or_else(|| format!("no interface \"{name}\""))?;
        self.array("interface")?.remove(i);
        Ok(())
    }

    // -- listenerconfig ----------------------------------------------------

    pub fn listener_new(
        &mut self,
        name: &str,
        interface: &str,
        port: u16,
        kind: &str,
    ) -> std::result::Result<(), String> {
        let a = self.array("listener")?;
        let mut t = new_entry(a);
        set(&mut t, "name", name);
        set(&mut t, "interface", interface);
        set(&mut t, "port", port as i64);
        set(&mut t, "type", kind);
        a.push(t);
        Ok(())
    }

    fn listener(&mut self, name: &str) -> std::result::Result<&mut Table, String> {
        let i = self
            .find("listener", "name", name)
            .ok_or_else(|| format!("no listener \"{name}\""))?;
        self.array("listener")?
            .get_mut(i)
            .ok_or_else(|| "listener vanished".to_string())
    }

    pub fn listener_edit(
        &mut self,
        name: &str,
        port: Option<u16>,
        interface: Option<&str>,
        kind: Option<&str>,
    ) -> std::result::Result<(), String> {
        let t = self.listener(name)?;
        if let Some(p) = port {
            set(t, "port", p as i64);
        }
        if let Some(i) = interface {
            set(t, "interface", i);
        }
        if let Some(k) = kind {
            set(t, "type", k);
        }
        Ok(())
    }

    pub fn listener_delete(&mut self, name: &str) -> std::result::Result<(), String> {
        let i = self
            .find("listener", "name", name)
            .ok_or_else(|| format!("no listener \"{name}\""))?;
        self.array("listener")?.remove(i);
        Ok(())
    }

    /// The `[[listener.hat]]` or `[[listener.rat]]` tables of a listener.
    fn listener_table_array(
        &mut self,
        listener: &str,
        key: &str,
    ) -> std::result::Result<&mut ArrayOfTables, String> {
        let t = self.listener(listener)?;
        let item = t
            .entry(key)
            .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
        item.as_array_of_tables_mut().ok_or_else(|| format!("the {key} of listener \"{listener}\" must be written as [[listener.{key}]] tables to be edited by this command"))
    }

    /// Writes `[cluster]` (`clusterconfig create` and `join`), replacing any.
    pub fn set_cluster(
        &mut self,
        url: &str,
        ca: Option<&str>,
        machine: &str,
    ) -> std::result::Result<(), String> {
        self.0.remove("cluster");
        let t = self.table(&["cluster"])?;
        set(t, "url", url);
        if let Some(ca) = ca {
            set(t, "ca", ca);
        }
        set(t, "machine", machine);
        Ok(())
    }

    /// Sets a string key of `[cpq]` (`mode`, `manager`, ...).
    pub fn cpq_set(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        let t = self.table(&["cpq"])?;
        set(t, key, value);
        Ok(())
    }

    /// Sets `[store]` (the central store on PostgreSQL): its `url`, and `ca` when given.
    pub fn store_set(&mut self, url: &str, ca: Option<&str>) -> std::result::Result<(), String> {
        let t = self.table(&["store"])?;
        set(t, "url", url);
        match ca {
            Some(ca) => set(t, "ca", ca),
            None => {
                t.remove("ca");
            }
        }
        Ok(())
    }

    /// Sets `[cpq] manager`: one `"HOST:PORT"`, or a list of them for several managers.
    pub fn cpq_set_managers(&mut self, managers: &[String]) -> std::result::Result<(), String> {
        let t = self.table(&["cpq"])?;
        match managers {
            [one] => set(t, "manager", one.as_str()),
            many => set(
                t,
                "manager",
                many.iter().map(String::as_str).collect::<Array>(),
            ),
        }
        Ok(())
    }

    /// Sets an integer key of `[cpq]` (`port`).
    pub fn cpq_set_int(&mut self, key: &str, value: i64) -> std::result::Result<(), String> {
        let t = self.table(&["cpq"])?;
        set(t, key, value);
        Ok(())
    }

    /// Writes the migration wizard's settings (`[cpq.migration]`).
    pub fn cpq_migration(
        &mut self,
        mode: &str,
        set_by: &str,
        map: &[(String, String, String)],
    ) -> std::result::Result<(), String> {
        let t = self.table(&["cpq", "migration"])?;
        set(t, "mode", mode);
        set(t, "set_by", set_by);
        t.remove("map");
        if !map.is_empty() {
            let mut a = ArrayOfTables::new();
            for (g, l, c) in map {
                let mut m = Table::new();
                set(&mut m, "gateway", g.as_str());
                set(&mut m, "local", l.as_str());
                set(&mut m, "central", c.as_str());
                a.push(m);
            }
            t.insert("map", Item::ArrayOfTables(a));
        }
        Ok(())
    }

    /// Records how the manager reaches an added gateway over SSH.
    pub fn cpq_gateway_ssh(
        &mut self,
        id: &str,
        ssh_port: u16,
        ssh_user: &str,
        host_key: &str,
    ) -> std::result::Result<(), String> {
        let t = self.table(&["cpq"])?;
        let a = t
            .get_mut("gateway")
            .and_then(|i| i.as_array_of_tables_mut())
            .ok_or("no [[cpq.gateway]]")?;
        let g = a
            .iter_mut()
            .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
            .ok_or_else(|| format!("no gateway {id}"))?;
        set(g, "ssh_port", i64::from(ssh_port));
        set(g, "ssh_user", ssh_user);
        set(g, "ssh_host_key", host_key);
        Ok(())
    }

    /// Records the serial of the CPQ certificate issued to an added gateway:
    /// the only certificate the manager accepts from it once committed.
    pub fn cpq_gateway_serial(
        &mut self,
        id: &str,
        serial: &str,
    ) -> std::result::Result<(), String> {
        let t = self.table(&["cpq"])?;
        let g = t
            .get_mut("gateway")
            .and_then(|i| i.as_array_of_tables_mut())
            .and_then(|a| {
                a.iter_mut()
                    .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
            })
            .ok_or_else(|| format!("no gateway {id}"))?;
        set(g, "serial", serial);
        Ok(())
    }

    /// Removes an added gateway (`[[cpq.gateway]]` of that id); false if absent.
    pub fn cpq_gateway_delete(&mut self, id: &str) -> std::result::Result<bool, String> {
        let t = self.table(&["cpq"])?;
        let Some(a) = t
            .get_mut("gateway")
            .and_then(|i| i.as_array_of_tables_mut())
        else {
            return Ok(false);
        };
        let before = a.len();
        a.retain(|t| t.get("id").and_then(|v| v.as_str()) != Some(id));
        Ok(a.len() != before)
    }

    /// Enrolls a gateway on a manager (`[[cpq.gateway]]`), or updates the
    /// address and port of the gateway of that id.
    pub fn cpq_gateway_set(
        &mut self,
        id: &str,
        address: &str,
        port: u16,
    ) -> std::result::Result<(), String> {
        let t = self.table(&["cpq"])?;
        let item = t
            .entry("gateway")
            .or_insert(Item::ArrayOfTables(ArrayOfTables::new()));
        let a = item
            .as_array_of_tables_mut()
            .ok_or("`cpq.gateway` must be written as [[cpq.gateway]] tables")?;
        if let Some(g) = a
            .iter_mut()
            .find(|t| t.get("id").and_then(|v| v.as_str()) == Some(id))
        {
            set(g, "address", address);
            set(g, "port", i64::from(port));
            return Ok(());
        }
        let mut g = Table::new();
        set(&mut g, "id", id);
        set(&mut g, "address", address);
        set(&mut g, "port", i64::from(port));
        a.push(g);
        Ok(())
    }

    /// Adds a sender group, or replaces the senders and policy of the group
    /// of that name. A new group goes before the first catch-all group (one
    /// whose senders include "ALL"), since the first matching group wins.
    pub fn hat_add(
        &mut self,
        listener: &str,
        group: &str,
        senders: &[String],
        policy: &str,
    ) -> std::result::Result<bool, String> {
        let a = self.listener_table_array(listener, "hat")?;
        let existing = a.iter().position(|t| {
            t.get("group")
                .and_then(|g| g.as_str())
                .is_some_and(|g| g.eq_ignore_ascii_case(group))
        });
        if let Some(t) = existing.and_then(|i| a.get_mut(i)) {
            set(t, "senders", str_array(senders));
            set(t, "policy", policy);
            return Ok(false);
        }
        let mut t = new_entry(a);
        set(&mut t, "group", group);
        set(&mut t, "senders", str_array(senders));
        set(&mut t, "policy", policy);
        let at = a.iter().position(|t| {
            t.get("senders")
                .and_then(|s| s.as_array())
                .is_some_and(|s| s.iter().any(|v| v.as_str() == Some("ALL")))
        });
        insert_at(a, at, t);
        Ok(true)
    }

    pub fn hat_delete(&mut self, listener: &str, group: &str) -> std::result::Result<(), String> {
        let a = self.listener_table_array(listener, "hat")?;
        let i = a
            .iter()
            .position(|t| {
                t.get("group")
                    .and_then(|g| g.as_str())
                    .is_some_and(|g| g.eq_ignore_ascii_case(group))
            })
            .ok_or_else(|| format!("listener \"{listener}\" has no sender group \"{group}\""))?;
        a.remove(i);
        Ok(())
    }

    /// Makes `recipients` get `action`: they leave the entries they were in,
    /// and a new entry goes before the first catch-all ("ALL") entry.
    pub fn rat_add(
        &mut self,
        listener: &str,
        recipients: &[String],
        action: &str,
    ) -> std::result::Result<(), String> {
        for r in recipients {
            let _ = self.rat_delete(listener, r);
        }
        let a = self.listener_table_array(listener, "rat")?;
        let mut t = new_entry(a);
        set(&mut t, "recipients", str_array(recipients));
        set(&mut t, "action", action);
        let at = a.iter().position(|t| {
            t.get("recipients")
                .and_then(|s| s.as_array())
                .is_some_and(|s| s.iter().any(|v| v.as_str() == Some("ALL")))
        });
        insert_at(a, at, t);
        Ok(())
    }

    /// Removes a recipient pattern; an entry left without any goes too.
    pub fn rat_delete(
        &mut self,
        listener: &str,
        recipient: &str,
    ) -> std::result::Result<(), String> {
        let a = self.listener_table_array(listener, "rat")?;
        let mut found = false;
        for t in a.iter_mut() {
            let Some(list) = t.get_mut("recipients").and_then(|r| r.as_array_mut()) else {
                continue;
            };
            let before = list.len();
            list.retain(|v| {
                !v.as_str()
                    .is_some_and(|s| s.trim().eq_ignore_ascii_case(recipient.trim()))
            });
            found |= list.len() != before;
        }
        a.retain(|t| {
            t.get("recipients")
                .and_then(|r| r.as_array())
                .is_none_or(|r| !r.is_empty())
        });
        if found {
            Ok(())
        } else {
            Err(format!(
                "listener \"{listener}\" has no RAT entry for \"{recipient}\""
            ))
        }
    }

    // -- smtproutes --------------------------------------------------------

    /// Adds a route, or replaces the next hops of the route for `domain`.
    pub fn route_set(
        &mut self,
        domain: &str,
        hosts: &[String],
    ) -> std::result::Result<bool, String> {
        let existing = self.route_index(domain);
        let a = self.array("smtp_route")?;
        if let Some(t) = existing.and_then(|i| a.get_mut(i)) {
            t.remove("maildir");
            set(t, "hosts", str_array(hosts));
            return Ok(false);
        }
        let mut t = new_entry(a);
        set(&mut t, "domain", domain);
        set(&mut t, "hosts", str_array(hosts));
        a.push(t);
        Ok(true)
    }

    pub fn route_index(&self, domain: &str) -> Option<usize> {
        let want = normalize_domain(domain);
        self.0
            .get("smtp_route")?
            .as_array_of_tables()?
            .iter()
            .position(|t| {
                t.get("domain")
                    .and_then(|d| d.as_str())
                    .is_some_and(|d| normalize_domain(d) == want)
            })
    }

    pub fn route_delete(&mut self, domain: &str) -> std::result::Result<(), String> {
        let i = self
            .route_index(domain)
            .ok_or_else(|| format!("no route for \"{domain}\""))?;
        self.array("smtp_route")?.remove(i);
        Ok(())
    }

    /// Removes every route; returns how many there were.
    pub fn route_clear(&mut self) -> usize {
        match self
            .0
            .get_mut("smtp_route")
            .and_then(|i| i.as_array_of_tables_mut())
        {
            Some(a) => {
                let n = a.len();
                a.clear();
                n
            }
            None => 0,
        }
    }
}

/// Inserts `t` before index `at` (at the end when `None`). `ArrayOfTables`
/// has no insert; its tables keep their place in the text, and a new table
/// is written after the one before it in the array.
fn insert_at(a: &mut ArrayOfTables, at: Option<usize>, t: Table) {
    let Some(at) = at else {
        a.push(t);
        return;
    };
    let mut all: Vec<Table> = Vec::new();
    while !a.is_empty() {
        all.push(a.remove(0));
    }
    all.insert(at.min(all.len()), t);
    for t in all {
        a.push(t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# top comment
[node]
hostname = "gw1.example.com"
data_dir = "."

[[interface]]
name = "Loopback"
address = "127.0.0.1"

[[policy]]
name = "RELAYED"
behavior = "relay"

[[policy]]
name = "ACCEPTED"
behavior = "accept"

[[listener]]
name = "IncomingMail"
interface = "Loopback"
port = 0                       # any free port
type = "public"

  [[listener.hat]]
  group = "RELAYLIST"
  senders = ["127.0.0.1"]
  policy = "RELAYED"

  [[listener.hat]]
  group = "ALL"
  senders = ["ALL"]
  policy = "ACCEPTED"

  [[listener.rat]]
  recipients = ["example.com"]
  action = "accept"

[[smtp_route]]
domain = "ALL"
hosts = ["sink.test:2526"]

[delivery]
default_interface = "Auto"     # Auto or an interface
max_concurrency = 500
"#;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml"), Path::new("/tmp"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn config_edits_keep_comments_and_values_parse() {
        let mut d = Doc::parse(TEXT).unwrap();
        d.set_delivery(Some("Loopback"), Some(20)).unwrap();
        d.listener_edit("incomingmail", Some(2600), None, None)
            .unwrap();
        let text = d.text();
        assert!(text.contains("# top comment"), "{text}");
        assert!(
            text.contains("default_interface = \"Loopback\"     # Auto or an interface\n"),
            "{text}"
        );
        assert!(
            text.contains("\nport = 2600                       # any free port\n"),
            "{text}"
        );
        let c = parse(&text);
        assert_eq!(c.delivery.default_interface, Some(0));
        assert_eq!(c.delivery.max_concurrency, 20);
        assert_eq!(c.listeners[0].port, 2600);
    }

    #[test]
    fn config_hat_and_rat_go_before_the_catch_all() {
        let mut d = Doc::parse(TEXT).unwrap();
        assert!(d
            .hat_add(
                "IncomingMail",
                "PARTNERS",
                &["10.0.0.0/8".into(), ".partner.example".into()],
                "RELAYED"
            )
            .unwrap());
        d.rat_add("IncomingMail", &["ALL".into()], "reject")
            .unwrap();
        d.rat_add("IncomingMail", &["user@example.org".into()], "accept")
            .unwrap();
        let text = d.text();
        let c = parse(&text);
        let groups: Vec<&str> = c.listeners[0]
            .hat
            .iter()
            .map(|h| h.group.as_str())
            .collect();
        assert_eq!(groups, ["RELAYLIST", "PARTNERS", "ALL"], "{text}");
        let rat: Vec<String> = c.listeners[0]
            .rat
            .iter()
            .map(|r| r.recipients.join(","))
            .collect();
        assert_eq!(rat, ["example.com", "user@example.org", "ALL"], "{text}");
        assert!(
            text.contains("\n  [[listener.hat]]\n  group = \"PARTNERS\""),
            "indented like its siblings:\n{text}"
        );
        // Replacing a group keeps its place.
        assert!(!d
            .hat_add(
                "IncomingMail",
                "partners",
                &["10.1.0.0/16".into()],
                "ACCEPTED"
            )
            .unwrap());
        d.hat_delete("IncomingMail", "RELAYLIST").unwrap();
        d.rat_delete("IncomingMail", "example.com").unwrap();
        let c = parse(&d.text());
        assert_eq!(c.listeners[0].hat.len(), 2);
        assert_eq!(c.listeners[0].hat[0].group, "PARTNERS");
        assert_eq!(c.listeners[0].rat.len(), 2);
        assert!(d.rat_delete("IncomingMail", "nope.example").is_err());
    }

    #[test]
    fn config_routes_interfaces_and_listeners() {
        let mut d = Doc::parse(TEXT).unwrap();
        assert!(d
            .route_set(
                "Special.Test.",
                &["sink.test:2999".into(), "mx.special.test".into()]
            )
            .unwrap());
        assert!(!d
            .route_set("special.test", &["sink.test:3000".into()])
            .unwrap());
        d.interface_new("Data1", "127.0.0.2", Some("data1.example.com"))
            .unwrap();
        d.listener_new("Outgoing", "Data1", 0, "private").unwrap();
        d.set_tls(
            "inbound",
            Some(&["1.3".to_string()]),
            Some(Some(&["TLS13_AES_256_GCM_SHA384".to_string()])),
        )
        .unwrap();
        let c = parse(&d.text());
        assert_eq!(c.routes.len(), 2);
        assert_eq!(
            c.route("special.test").unwrap().target,
            crate::core::config::RouteTarget::Hosts(vec![("sink.test".into(), 3000)])
        );
        assert_eq!(c.interfaces[1].name, "Data1");
        assert_eq!(c.listeners[1].interface, 1);
        assert_eq!(
            c.tls_inbound.ciphers.as_deref(),
            Some(&["TLS13_AES_256_GCM_SHA384".to_string()][..])
        );
        d.set_tls("inbound", None, Some(None)).unwrap();
        d.listener_delete("Outgoing").unwrap();
        d.interface_delete("data1").unwrap();
        d.route_delete("ALL").unwrap();
        assert_eq!(d.route_clear(), 1);
        let c = parse(&d.text());
        assert!(c.routes.is_empty() && c.interfaces.len() == 1 && c.listeners.len() == 1);
        assert!(c.tls_inbound.ciphers.is_none());
    }

    #[test]
    fn config_store_pending_history_and_atomic_writes() {
        let dir = tempfile::tempdir().unwrap();
        let committed = dir.path().join("pvo.toml");
        std::fs::write(&committed, TEXT).unwrap();
        let store = Store::new(dir.path(), &committed);
        assert!(store.pending().unwrap().is_none());
        assert!(!store.working().unwrap().2);
        let change = |u: &str| Change {
            time: now(),
            user: u.into(),
            command: "smtproutes".into(),
            summary: "x".into(),
        };
        store.save_pending("a = 1\n", change("alice")).unwrap();
        store.save_pending("a = 2\n", change("bob")).unwrap();
        store.save_pending("a = 3\n", change("alice")).unwrap();
        let p = store.pending().unwrap().unwrap();
        assert_eq!(p.text, "a = 3\n");
        assert_eq!(p.meta.users(), ["alice", "bob"]);
        let h = store.history().unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(store.history_text(0).unwrap(), TEXT);
        let e = store
            .record("b = 1\n", "alice", "first", p.meta.changes)
            .unwrap();
        assert_eq!(e.n, 1);
        assert_eq!(
            store
                .history()
                .unwrap()
                .iter()
                .map(|e| e.n)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        store.write_committed("b = 1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&committed).unwrap(), "b = 1\n");
        assert!(store.clear_pending().unwrap());
        assert!(!store.clear_pending().unwrap());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn text_toml_edit_panics_on_is_refused() {
        // `toml_edit` 0.23.10 alone panics on this text (found by fuzzing).
        let e = Doc::parse("=={\r.").err().unwrap();
        assert!(
            e.starts_with("the configuration is not valid TOML: "),
            "{e}"
        );
        assert_eq!(line_of_key("=={\r.", "listener", 0, "port"), None);
    }

    #[test]
    fn config_line_of_key_finds_array_entries() {
        assert_eq!(line_of_key(TEXT, "listener", 0, "port"), Some(21));
        assert_eq!(line_of_key(TEXT, "listener", 1, "port"), None);
    }
}
