//! One layer's configuration document and the edits between layers.
//!
//! A layer is a TOML document in the node's configuration format; its top-level keys are
//! the sections (`[delivery]`, `[[listener]]`, `[content_filter]`…). The cluster moves whole
//! sections between levels, as the appliance's Centralized Management page does: copy a
//! section to another level, move it (copy, then delete where it was), delete it from a
//! level so the level above shows through. Documents are edited with `toml_edit`, so an
//! administrator's comments and layout survive every edit.
//!
//! Which sections may sit where is the [`Schema`]'s answer, given by the node (this crate
//! does not know the sections): machine-only ones (the node's name, its interfaces) never
//! leave a machine layer, cluster-only ones (the SSH server, users) never go below the
//! cluster level.

use std::fmt;

use thiserror::Error;
use toml_edit::{DocumentMut, Item};

use crate::level::Level;

/// Where a section may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only at cluster level (in a cluster) or in the machine's own file (alone).
    ClusterOnly,
    /// Only in a machine's own layer.
    MachineOnly,
    /// At any level; the most specific level that sets it wins.
    AnyLevel,
}

/// The node's list of section scopes; a section in neither list is [`Scope::AnyLevel`].
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    pub cluster_only: &'static [&'static str],
    pub machine_only: &'static [&'static str],
}

impl Schema {
    pub fn scope(&self, section: &str) -> Scope {
        if self.machine_only.contains(&section) {
            Scope::MachineOnly
        } else if self.cluster_only.contains(&section) {
            Scope::ClusterOnly
        } else {
            Scope::AnyLevel
        }
    }

    /// Whether `section` may be set at `level`.
    pub fn allows(&self, section: &str, level: &Level) -> bool {
        matches!(
            (self.scope(section), level),
            (Scope::AnyLevel, _)
                | (Scope::MachineOnly, Level::Machine(_))
                | (Scope::ClusterOnly, Level::Cluster)
        )
    }
}

/// A document that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{level}: line {line}: {message}")]
pub struct ParseError {
    pub level: String,
    pub line: usize,
    pub message: String,
}

/// An edit between layers that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EditError {
    #[error("{level} does not set [{section}]")]
    NotSet { section: String, level: Level },
    #[error("[{section}] is set per machine; it cannot be at {level}")]
    MachineOnly { section: String, level: Level },
    #[error("[{section}] is set for the whole cluster; it cannot be at {level}")]
    ClusterOnly { section: String, level: Level },
    #[error("[{section}] is already at {level}")]
    SameLevel { section: String, level: Level },
}

/// One layer's document.
#[derive(Clone)]
pub struct LayerDoc {
    level: Level,
    doc: DocumentMut,
}

impl fmt::Debug for LayerDoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerDoc")
            .field("level", &self.level)
            .field("sections", &self.sections())
            .finish()
    }
}

impl LayerDoc {
    /// An empty layer (a new group, a cluster before its first commit).
    pub fn empty(level: Level) -> LayerDoc {
        LayerDoc {
            level,
            doc: DocumentMut::new(),
        }
    }

    /// Reads a layer's text. It is checked by the `toml` parser before `toml_edit` reads
    /// it: `toml_edit` 0.23 panics on some invalid documents (a duplicate key after
    /// certain malformed tables, found by `fuzz/fuzz_targets/cluster.rs`) where `toml`
    /// reports an error, and a layer's text comes from other machines.
    pub fn parse(level: Level, text: &str) -> Result<LayerDoc, ParseError> {
        let refuse = |span: Option<std::ops::Range<usize>>, message: &str| ParseError {
            level: level.to_string(),
            line: span
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                .unwrap_or(1),
            message: message.trim_end().to_string(),
        };
        if let Err(e) = toml::from_str::<toml::Table>(text) {
            return Err(refuse(e.span(), e.message()));
        }
        match text.parse::<DocumentMut>() {
            Ok(doc) => Ok(LayerDoc { level, doc }),
            Err(e) => Err(refuse(e.span(), e.message())),
        }
    }

    pub fn level(&self) -> &Level {
        &self.level
    }

    /// The sections this layer sets, in the order written.
    pub fn sections(&self) -> Vec<String> {
        self.doc
            .as_table()
            .iter()
            .filter(|(_, item)| !item.is_none())
            .map(|(k, _)| k.to_string())
            .collect()
    }

    pub fn sets(&self, section: &str) -> bool {
        self.doc.get(section).is_some_and(|i| !i.is_none())
    }

    /// The section's value, for comparing layers and machines regardless of layout and
    /// comments. `None` when the layer does not set it.
    pub fn value(&self, section: &str) -> Option<toml::Value> {
        let item = self.doc.get(section)?;
        let mut one = DocumentMut::new();
        one.insert(section, item.clone());
        let table: toml::Table = toml::from_str(&one.to_string()).ok()?;
        table.get(section).cloned()
    }

    /// The document's text, comments and layout kept.
    pub fn text(&self) -> String {
        self.doc.to_string()
    }

    fn item(&self, section: &str) -> Result<&Item, EditError> {
        match self.doc.get(section) {
            Some(i) if !i.is_none() => Ok(i),
            _ => Err(EditError::NotSet {
                section: section.to_string(),
                level: self.level.clone(),
            }),
        }
    }

    /// Sets `section` to `item`, replacing what the layer had, written after the
    /// sections already there.
    fn put(&mut self, section: &str, item: &Item) {
        let mut item = item.clone();
        let mut next = last_position(&self.doc) + 1;
        renumber(&mut item, &mut next);
        self.doc.insert(section, item);
    }

    /// Sets `section` to what `from` has (any level, no scope check: the caller decided
    /// where it goes), replacing this layer's.
    pub fn replace_from(&mut self, from: &LayerDoc, section: &str) -> Result<(), EditError> {
        let item = from.item(section)?.clone();
        self.put(section, &item);
        Ok(())
    }

    /// Removes `section`; the level above shows through.
    pub fn delete(&mut self, section: &str) -> Result<(), EditError> {
        self.item(section)?;
        self.doc.remove(section);
        Ok(())
    }
}

/// Positions order a document's tables (nested ones too) when it is written; an item
/// from another document keeps that document's, so it is given fresh ones after the last.
fn last_position(doc: &DocumentMut) -> isize {
    fn item(i: &Item, last: &mut isize) {
        match i {
            Item::Table(t) => table(t, last),
            Item::ArrayOfTables(a) => a.iter().for_each(|t| table(t, last)),
            _ => {}
        }
    }
    fn table(t: &toml_edit::Table, last: &mut isize) {
        *last = (*last).max(t.position().unwrap_or(0));
        t.iter().for_each(|(_, i)| item(i, last));
    }
    let mut last = 0;
    doc.as_table().iter().for_each(|(_, i)| item(i, &mut last));
    last
}

fn renumber(i: &mut Item, next: &mut isize) {
    fn table(t: &mut toml_edit::Table, next: &mut isize) {
        t.set_position(*next);
        *next += 1;
        t.iter_mut().for_each(|(_, i)| renumber(i, next));
    }
    match i {
        Item::Table(t) => table(t, next),
        Item::ArrayOfTables(a) => a.iter_mut().for_each(|t| table(t, next)),
        _ => {}
    }
}

fn check_scope(schema: &Schema, section: &str, to: &Level) -> Result<(), EditError> {
    if schema.allows(section, to) {
        return Ok(());
    }
    let (section, level) = (section.to_string(), to.clone());
    Err(match schema.scope(&section) {
        Scope::MachineOnly => EditError::MachineOnly { section, level },
        _ => EditError::ClusterOnly { section, level },
    })
}

/// Copies `section` from one layer to another, replacing the target's.
pub fn copy_section(
    schema: &Schema,
    from: &LayerDoc,
    to: &mut LayerDoc,
    section: &str,
) -> Result<(), EditError> {
    if from.level == to.level {
        return Err(EditError::SameLevel {
            section: section.to_string(),
            level: to.level.clone(),
        });
    }
    check_scope(schema, section, &to.level)?;
    let item = from.item(section)?.clone();
    to.put(section, &item);
    Ok(())
}

/// Moves `section` from one layer to another: the target gets it, the source loses it.
pub fn move_section(
    schema: &Schema,
    from: &mut LayerDoc,
    to: &mut LayerDoc,
    section: &str,
) -> Result<(), EditError> {
    copy_section(schema, from, to, section)?;
    from.delete(section)
}

/// What `removemachine` leaves on the machine: its own layer with every section it
/// inherited written into it, so it runs on exactly what it ran in the cluster. `chain`
/// is the machine's layers, most specific first (machine, group, cluster).
pub fn flatten(chain: &[&LayerDoc]) -> LayerDoc {
    let Some((own, above)) = chain.split_first() else {
        unreachable!("a chain holds at least the machine's own layer");
    };
    let mut out = (*own).clone();
    for layer in above {
        for section in layer.sections() {
            if !out.sets(&section) {
                if let Ok(item) = layer.item(&section) {
                    out.put(&section, item);
                }
            }
        }
    }
    out
}

/// What a joining machine keeps of its own file: its machine-only sections. The
/// clusterable ones it had are returned by name, so the join can say what it replaced.
pub fn take_over(schema: &Schema, own: &LayerDoc) -> (LayerDoc, Vec<String>) {
    let mut kept = own.clone();
    let mut dropped = Vec::new();
    for section in own.sections() {
        if schema.scope(&section) != Scope::MachineOnly {
            kept.doc.remove(&section);
            dropped.push(section);
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::level::Name;

    const SCHEMA: Schema = Schema {
        cluster_only: &["ssh", "users"],
        machine_only: &["node", "interface"],
    };

    fn machine(n: &str) -> Level {
        Level::Machine(Name::new(n).unwrap())
    }

    fn doc(level: Level, text: &str) -> LayerDoc {
        LayerDoc::parse(level, text).unwrap()
    }

    const GW1: &str = "\
[node]
hostname = \"gw1\"

[[interface]]
name = \"Data 1\"
address = \"10.0.0.1\"

# Slow relays in the east.
[delivery]
max_concurrency = 50
";

    #[test]
    fn sections_in_order_and_values_compare_structurally() {
        let d = doc(machine("gw1"), GW1);
        assert_eq!(d.sections(), ["node", "interface", "delivery"]);
        let other = doc(
            Level::Cluster,
            "delivery = { max_concurrency = 50 } # inline",
        );
        assert_eq!(d.value("delivery"), other.value("delivery"));
        assert_eq!(d.value("limits"), None);
    }

    #[test]
    fn parse_errors_name_level_and_line() {
        let e = LayerDoc::parse(Level::Cluster, "[a]\nx = 1\ny = \n").unwrap_err();
        assert_eq!(e.level, "cluster");
        assert_eq!(e.line, 3);
        assert!(e.to_string().starts_with("cluster: line 3: "), "{e}");
    }

    /// Found by the fuzzer: `toml_edit` 0.23.10 alone panics on `=={\r.`.
    #[test]
    fn a_document_toml_edit_would_panic_on_is_refused() {
        let e = LayerDoc::parse(Level::Cluster, "=={\r.").unwrap_err();
        assert_eq!(e.level, "cluster");
        assert_eq!(e.line, 1);
        assert!(LayerDoc::parse(Level::Cluster, "[a.b]\nc = 1\n[a]\nb = 2\n[a]\n").is_err());
    }

    #[test]
    fn copy_keeps_comments_and_replaces_the_target() {
        let from = doc(machine("gw1"), GW1);
        let mut to = doc(
            Level::Cluster,
            "[delivery]\nmax_concurrency = 10\n\n[limits]\n",
        );
        copy_section(&SCHEMA, &from, &mut to, "delivery").unwrap();
        assert_eq!(to.value("delivery"), from.value("delivery"));
        assert!(
            to.text().contains("# Slow relays in the east."),
            "{}",
            to.text()
        );
        assert!(from.sets("delivery"));
        // Written after what was there.
        let text = to.text();
        assert!(
            text.find("[limits]").unwrap() < text.find("[delivery]").unwrap(),
            "{text}"
        );
    }

    #[test]
    fn nested_tables_travel_whole_and_in_order() {
        let from = doc(
            machine("gw1"),
            "[[listener]]\nname = \"in\"\n[[listener.hat]]\nsender = \"a\"\n[[listener.hat]]\nsender = \"b\"\n[[listener]]\nname = \"out\"\n",
        );
        let mut to = doc(Level::Cluster, "[a]\nx = 1\n\n[b]\ny = 2\n");
        copy_section(&SCHEMA, &from, &mut to, "listener").unwrap();
        let text = to.text();
        let again = LayerDoc::parse(Level::Cluster, &text).unwrap();
        assert_eq!(again.value("listener"), from.value("listener"), "{text}");
        assert_eq!(again.sections(), ["a", "b", "listener"], "{text}");
        let at = |needle: &str| text.find(needle).unwrap();
        assert!(at("[b]") < at("name = \"in\""), "{text}");
        assert!(at("sender = \"b\"") < at("name = \"out\""), "{text}");
    }

    #[test]
    fn move_deletes_at_the_source() {
        let mut from = doc(machine("gw1"), GW1);
        let mut to = LayerDoc::empty(Level::Cluster);
        move_section(&SCHEMA, &mut from, &mut to, "delivery").unwrap();
        assert!(!from.sets("delivery"));
        assert!(to.sets("delivery"));
        assert_eq!(
            move_section(&SCHEMA, &mut from, &mut to, "delivery").unwrap_err(),
            EditError::NotSet {
                section: "delivery".into(),
                level: machine("gw1")
            }
        );
    }

    #[test]
    fn scopes_are_kept() {
        let from = doc(machine("gw1"), GW1);
        let mut cluster = LayerDoc::empty(Level::Cluster);
        let e = copy_section(&SCHEMA, &from, &mut cluster, "interface").unwrap_err();
        assert_eq!(
            e.to_string(),
            "[interface] is set per machine; it cannot be at cluster"
        );
        let ssh = doc(Level::Cluster, "[ssh]\nport = 22\n");
        let mut gw2 = LayerDoc::empty(machine("gw2"));
        let e = copy_section(&SCHEMA, &ssh, &mut gw2, "ssh").unwrap_err();
        assert_eq!(
            e.to_string(),
            "[ssh] is set for the whole cluster; it cannot be at machine:gw2"
        );
        let mut same = LayerDoc::empty(Level::Cluster);
        assert!(matches!(
            copy_section(&SCHEMA, &ssh, &mut same, "ssh"),
            Err(EditError::SameLevel { .. })
        ));
    }

    #[test]
    fn flatten_writes_what_was_inherited() {
        let own = doc(machine("gw1"), GW1);
        let group = doc(
            Level::Group(Name::new("east").unwrap()),
            "[delivery]\nmax_concurrency = 7\n\n[[smtp_route]]\ndomain = \"a\"\n",
        );
        let cluster = doc(Level::Cluster, "[limits]\nmax_message_size = 10\n\n[ssh]\n");
        let flat = flatten(&[&own, &group, &cluster]);
        assert_eq!(
            flat.sections(),
            [
                "node",
                "interface",
                "delivery",
                "smtp_route",
                "limits",
                "ssh"
            ]
        );
        // The machine's own value won; nothing of the group's replaced it.
        assert_eq!(flat.value("delivery"), own.value("delivery"));
        let again = LayerDoc::parse(machine("gw1"), &flat.text()).unwrap();
        assert_eq!(again.value("smtp_route"), group.value("smtp_route"));
        assert_eq!(again.value("limits"), cluster.value("limits"));
    }

    #[test]
    fn a_joining_machine_keeps_only_its_own_sections() {
        let own = doc(machine("gw1"), GW1);
        let (kept, dropped) = take_over(&SCHEMA, &own);
        assert_eq!(kept.sections(), ["node", "interface"]);
        assert_eq!(dropped, ["delivery"]);
    }
}
