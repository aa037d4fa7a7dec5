//! What the configuration commands of a cluster member work on: the store's layers as
//! last read, with this machine's pending changes over them, per level.
//!
//! The editors of `commands::config_cmds` edit one TOML document, as on a machine alone.
//! In a cluster that document is the view from a level: the sections in force at that
//! level (every layer from it up to the cluster's, the most specific winning), or, with
//! no level named, the whole chain of this machine. After the edit, each section whose
//! value changed is written back to one layer: the level named, or the level the section
//! came from (a new section: the machine's when only a machine may set it, else the
//! cluster's). Setting a section at a lower level than where it is overrides it there;
//! deleting one at a lower level lets the higher one show through again.
//!
//! Pending changes live in `DATA_DIR/cluster/pending.json`: the revision they started
//! from (the commit's base) and the new text of each level they changed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pvo_cluster::{LayerDoc, Level, Members, Name};
use serde::{Deserialize, Serialize};

use crate::core::cluster::SCHEMA;
use crate::core::config::{Config, ConfigError, Membership};
use crate::core::config_store::Change;

/// A member's changes not yet committed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pending {
    /// The revision the first change started from.
    pub base: u64,
    /// The new text of each level changed (`cluster`, `group:NAME`, `machine:NAME`).
    pub levels: BTreeMap<String, String>,
    #[serde(default)]
    pub changes: Vec<Change>,
}

pub fn pending_path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("pending.json")
}

pub fn load_pending(data_dir: &Path) -> Result<Option<Pending>, String> {
    let path = pending_path(data_dir);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("cannot read {}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

pub fn save_pending(data_dir: &Path, p: &Pending) -> Result<(), String> {
    let path = pending_path(data_dir);
    let json = serde_json::to_vec_pretty(p).expect("plain data serialises");
    crate::core::atomic_file::write_private(&path, &json)
        .map_err(|e| format!("cannot write {}: {e:#}", path.display()))
}

/// Discards the pending changes; `false` when there were none.
pub fn clear_pending(data_dir: &Path) -> Result<bool, String> {
    match std::fs::remove_file(pending_path(data_dir)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("cannot remove the pending changes: {e}")),
    }
}

/// Reads `--level`: `cluster`, `group:NAME`, `machine` (this machine) or
/// `machine:NAME` (this machine's name).
pub fn parse_level(text: &str, machine: &Name) -> Result<Level, String> {
    let text = text.trim();
    if text == "machine" {
        return Ok(Level::Machine(machine.clone()));
    }
    let level: Level = text.parse().map_err(|e: pvo_cluster::NameError| {
        format!("{e}; allowed: cluster, group:NAME, machine")
    })?;
    match &level {
        Level::Machine(m) if m != machine => Err(format!(
            "--level {text}: this machine is {machine}; a machine's own settings are changed on that machine (allowed: cluster, group:NAME, machine)"
        )),
        _ => Ok(level),
    }
}

/// The layers as the store had them, with the pending changes over them.
#[derive(Debug, Clone)]
pub struct View {
    pub members: Members,
    pub machine: Name,
    pub head: u64,
    pub layers: Vec<(Level, String)>,
    pub pending: Pending,
}

impl View {
    pub fn new(
        members: Members,
        machine: Name,
        head: u64,
        stored: &[(Level, String)],
        pending: Option<Pending>,
    ) -> View {
        let pending = pending.unwrap_or(Pending {
            base: head,
            ..Default::default()
        });
        let mut layers: Vec<(Level, String)> = stored.to_vec();
        for (level, text) in &pending.levels {
            let Ok(level) = level.parse::<Level>() else {
                continue;
            };
            match layers.iter_mut().find(|(l, _)| *l == level) {
                Some(slot) => slot.1 = text.clone(),
                None => layers.push((level, text.clone())),
            }
        }
        View {
            members,
            machine,
            head,
            layers,
            pending,
        }
    }

    /// This machine's chain: its own level, its group's, the cluster's.
    pub fn chain(&self) -> Result<[Level; 3], String> {
        self.members.chain(&self.machine).map_err(|e| e.to_string())
    }

    pub fn text(&self, level: &Level) -> &str {
        self.layers
            .iter()
            .find(|(l, _)| l == level)
            .map(|(_, t)| t.as_str())
            .unwrap_or("")
    }

    fn doc(&self, level: &Level) -> Result<LayerDoc, String> {
        LayerDoc::parse(level.clone(), self.text(level))
            .map_err(|e| format!("{level} line {}: {}", e.line, e.message))
    }

    /// The levels seen from `from` (`None`: the whole chain), most specific first.
    fn seen(&self, from: Option<&Level>) -> Result<Vec<Level>, String> {
        let chain = self.chain()?;
        Ok(match from {
            None => chain.to_vec(),
            Some(l) => {
                let i = chain.iter().position(|c| c == l).ok_or_else(|| {
                    format!("{l} is not a level of this machine ({}); allowed: cluster, group:{}, machine", self.machine, chain[1].to_string().trim_start_matches("group:"))
                })?;
                chain[i..].to_vec()
            }
        })
    }

    /// The document an editor works on: what is in force seen from `from`.
    pub fn flattened(&self, from: Option<&Level>) -> Result<String, String> {
        let docs = self
            .seen(from)?
            .iter()
            .map(|l| self.doc(l))
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&LayerDoc> = docs.iter().collect();
        Ok(pvo_cluster::flatten(&refs).text())
    }

    /// The level each section in force comes from, seen from `from`.
    pub fn origins(&self, from: Option<&Level>) -> Result<Vec<(String, Level)>, String> {
        let mut out: Vec<(String, Level)> = Vec::new();
        for level in self.seen(from)? {
            for s in self.doc(&level)?.sections() {
                if !out.iter().any(|(have, _)| *have == s) {
                    out.push((s, level.clone()));
                }
            }
        }
        Ok(out)
    }

    /// This machine's configuration with the pending changes.
    pub fn compose(&self, membership: &Membership, base: &Path) -> Result<Config, ConfigError> {
        crate::core::cluster::sync::compose_from(
            &self.members,
            &self.layers,
            self.head,
            membership,
            base,
        )
    }

    /// Writes an editor's result back: each section whose value differs between
    /// `before` and `after` (both seen from `level`) goes to `level`, or to where it came
    /// from. Answers the levels changed.
    pub fn apply_edit(
        &mut self,
        before: &str,
        after: &str,
        level: Option<&Level>,
    ) -> Result<Vec<Level>, String> {
        let chain = self.chain()?;
        let parse = |t: &str| {
            LayerDoc::parse(chain[0].clone(), t)
                .map_err(|e| format!("line {}: {}", e.line, e.message))
        };
        let (old, new) = (parse(before)?, parse(after)?);
        let origins = self.origins(level)?;
        let mut sections = old.sections();
        for s in new.sections() {
            if !sections.contains(&s) {
                sections.push(s);
            }
        }
        let mut changed: Vec<Level> = Vec::new();
        for section in sections {
            if old.value(&section) == new.value(&section) {
                continue;
            }
            let target = match level {
                Some(l) => l.clone(),
                None => match origins.iter().find(|(s, _)| *s == section) {
                    Some((_, l)) => l.clone(),
                    None if SCHEMA.scope(&section) == pvo_cluster::Scope::MachineOnly => {
                        chain[0].clone()
                    }
                    None => Level::Cluster,
                },
            };
            if !SCHEMA.allows(&section, &target) {
                return Err(match SCHEMA.scope(&section) {
                    pvo_cluster::Scope::MachineOnly => {
                        format!("[{section}] is set per machine; change it with --level machine")
                    }
                    _ => format!(
                        "[{section}] is set for the whole cluster; change it with --level cluster"
                    ),
                });
            }
            let mut doc = self.doc(&target)?;
            if new.sets(&section) {
                doc.replace_from(&new, &section)
                    .map_err(|e| e.to_string())?;
            } else if doc.sets(&section) {
                doc.delete(&section).map_err(|e| e.to_string())?;
            } else {
                return Err(format!(
                    "[{section}] is not set at {target}; it comes from a level above (change it there, or copy it here first with `clusterconfig copysettings {section} --from LEVEL --to {target}`)"
                ));
            }
            self.set_text(&target, doc.text());
            if !changed.contains(&target) {
                changed.push(target);
            }
        }
        Ok(changed)
    }

    /// Sets a level's text in the view and among the pending changes.
    pub fn set_text(&mut self, level: &Level, text: String) {
        match self.layers.iter_mut().find(|(l, _)| l == level) {
            Some(slot) => slot.1 = text.clone(),
            None => self.layers.push((level.clone(), text.clone())),
        }
        self.pending.levels.insert(level.to_string(), text);
    }

    /// The pending levels whose text differs from what the store has.
    pub fn changed_levels(&self, stored: &[(Level, String)]) -> Vec<(Level, String)> {
        let stored_text = |l: &Level| {
            stored
                .iter()
                .find(|(s, _)| s == l)
                .map(|(_, t)| t.as_str())
                .unwrap_or("")
        };
        self.pending
            .levels
            .iter()
            .filter_map(|(l, t)| {
                let level: Level = l.parse().ok()?;
                (stored_text(&level) != t).then(|| (level, t.clone()))
            })
            .collect()
    }
}
