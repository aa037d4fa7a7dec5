//! `clustercheck`: every difference between levels and machines, each with the commands
//! that resolve it.
//!
//! A cluster is easiest to run when every setting sits at cluster level; anything set lower
//! is a deliberate difference an administrator should see at a glance: a machine or group
//! overriding the level above (or repeating it, which is harmless today and a surprise
//! tomorrow), a section only some machines set, a section at a level it may not be at, a
//! machine running an older revision or not connected at all. Where each setting comes
//! from for one machine is [`Layers::effective`] (what `showconfig` prints beside each
//! section).

use std::collections::BTreeMap;

use crate::document::{LayerDoc, Schema};
use crate::level::{Level, Name};
use crate::members::{Members, MembersError};

/// Every layer of a cluster, by level.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    docs: BTreeMap<Level, LayerDoc>,
}

impl Layers {
    pub fn new(docs: impl IntoIterator<Item = LayerDoc>) -> Layers {
        Layers {
            docs: docs.into_iter().map(|d| (d.level().clone(), d)).collect(),
        }
    }

    pub fn get(&self, level: &Level) -> Option<&LayerDoc> {
        self.docs.get(level)
    }

    /// Every section in force on `machine`, with the level it comes from, in the order:
    /// the machine's own sections, then the group's, then the cluster's.
    pub fn effective(
        &self,
        members: &Members,
        machine: &Name,
    ) -> Result<Vec<(String, Level)>, MembersError> {
        let mut out: Vec<(String, Level)> = Vec::new();
        for level in members.chain(machine)? {
            if let Some(doc) = self.docs.get(&level) {
                for s in doc.sections() {
                    if !out.iter().any(|(have, _)| *have == s) {
                        out.push((s, level.clone()));
                    }
                }
            }
        }
        Ok(out)
    }
}

/// What a member reports of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberState {
    pub name: Name,
    /// The revision it runs; `None` before its first.
    pub applied: Option<u64>,
    pub connected: bool,
}

/// One difference, what it is about and how to resolve it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The level or machine it is about (`machine:gw1`, `group:east`, `gw2`).
    pub subject: String,
    pub text: String,
    /// The commands that resolve it, any one of them.
    pub resolve: Vec<String>,
}

fn move_to(section: &str, from: &Level, to: &Level) -> String {
    format!("clusterconfig movesettings {section} --from {from} --to {to}")
}

fn delete_at(section: &str, level: &Level) -> String {
    format!("clusterconfig deletesettings {section} --level {level}")
}

/// The differences of the cluster, in a stable order: settings below the cluster level
/// (groups first, then machines, by name), then the members' revisions and connections.
pub fn check(
    schema: &Schema,
    members: &Members,
    layers: &Layers,
    head: u64,
    states: &[MemberState],
) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(doc) = layers.get(&Level::Cluster) {
        misplaced(schema, doc, &mut out);
    }
    for group in members.groups() {
        let level = Level::Group(group.clone());
        let Some(doc) = layers.get(&level) else {
            continue;
        };
        misplaced(schema, doc, &mut out);
        let above = [Level::Cluster];
        let machines: Vec<String> = members
            .in_group(group)
            .iter()
            .map(|m| m.name.to_string())
            .collect();
        below(schema, layers, doc, &above, &machines.join(", "), &mut out);
    }
    for m in members.machines() {
        let level = Level::Machine(m.name.clone());
        let Some(doc) = layers.get(&level) else {
            continue;
        };
        misplaced(schema, doc, &mut out);
        let above = [Level::Group(m.group.clone()), Level::Cluster];
        below(schema, layers, doc, &above, m.name.as_str(), &mut out);
    }
    for m in members.machines() {
        let state = states.iter().find(|s| s.name == m.name);
        match state {
            Some(s) if !s.connected => out.push(Finding {
                subject: m.name.to_string(),
                text: format!(
                    "{} is not connected to the cluster{}",
                    m.name,
                    match s.applied {
                        Some(r) => format!(" (it runs revision {r}; the cluster is at {head})"),
                        None => String::new(),
                    }
                ),
                resolve: vec![format!("clusterconfig reconnect (on {})", m.name)],
            }),
            Some(MemberState {
                applied: Some(r), ..
            }) if *r == head => {}
            other => out.push(Finding {
                subject: m.name.to_string(),
                text: format!(
                    "{} runs {}; the cluster is at revision {head}",
                    m.name,
                    match other.and_then(|s| s.applied) {
                        Some(r) => format!("revision {r}"),
                        None => "no revision yet".to_string(),
                    }
                ),
                resolve: vec![format!(
                    "clusterconfig connstatus (on {}) says why it has not applied it",
                    m.name
                )],
            }),
        }
    }
    out
}

/// Sections at a level they may not be at (a layer written by hand).
fn misplaced(schema: &Schema, doc: &LayerDoc, out: &mut Vec<Finding>) {
    for s in doc.sections() {
        if !schema.allows(&s, doc.level()) {
            out.push(Finding {
                subject: doc.level().to_string(),
                text: format!(
                    "{} sets [{s}], which cannot be set at that level",
                    doc.level()
                ),
                resolve: vec![delete_at(&s, doc.level())],
            });
        }
    }
}

/// Sections a group or machine layer sets, against the levels above it.
fn below(
    schema: &Schema,
    layers: &Layers,
    doc: &LayerDoc,
    above: &[Level],
    machines: &str,
    out: &mut Vec<Finding>,
) {
    let level = doc.level();
    for s in doc.sections() {
        if !schema.allows(&s, level) || schema.scope(&s) == crate::document::Scope::MachineOnly {
            continue;
        }
        let higher = above
            .iter()
            .find_map(|l| layers.get(l).filter(|d| d.sets(&s)).map(|d| (l, d)));
        let finding = match higher {
            Some((l, d)) if d.value(&s) == doc.value(&s) => Finding {
                subject: level.to_string(),
                text: format!("{level} sets [{s}] to the same value as {l}"),
                resolve: vec![delete_at(&s, level)],
            },
            Some((l, _)) => Finding {
                subject: level.to_string(),
                text: format!("{level} overrides [{s}] of {l} (for {machines})"),
                resolve: vec![move_to(&s, level, l), delete_at(&s, level)],
            },
            None => Finding {
                subject: level.to_string(),
                text: format!(
                    "[{s}] is set at {level} only (for {machines}); the other machines use its defaults"
                ),
                resolve: vec![move_to(&s, level, &Level::Cluster), delete_at(&s, level)],
            },
        };
        out.push(finding);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: Schema = Schema {
        cluster_only: &["ssh"],
        machine_only: &["node", "interface"],
    };

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn doc(level: &str, text: &str) -> LayerDoc {
        LayerDoc::parse(level.parse().unwrap(), text).unwrap()
    }

    fn cluster() -> (Members, Layers) {
        let mut m = Members::create(n("c"), n("gw1"), "10.0.0.1".into());
        m.join(n("gw2"), "10.0.0.2".into(), None).unwrap();
        m.add_group(n("west")).unwrap();
        m.join(n("gw3"), "10.0.0.3".into(), Some(n("west")))
            .unwrap();
        let layers = Layers::new([
            doc("cluster", "[delivery]\nmax_concurrency = 10\n\n[ssh]\n"),
            doc("group:west", "[delivery]\nmax_concurrency = 10\n"),
            doc(
                "machine:gw1",
                "[node]\nhostname = \"gw1\"\n\n[delivery]\nmax_concurrency = 99\n\n[limits]\nx = 1\n",
            ),
            doc("machine:gw2", "[node]\nhostname = \"gw2\"\n\n[ssh]\n"),
        ]);
        (m, layers)
    }

    fn up(names: &[&str], applied: u64) -> Vec<MemberState> {
        names
            .iter()
            .map(|s| MemberState {
                name: n(s),
                applied: Some(applied),
                connected: true,
            })
            .collect()
    }

    #[test]
    fn where_each_section_comes_from() {
        let (m, layers) = cluster();
        let eff = layers.effective(&m, &n("gw3")).unwrap();
        assert_eq!(
            eff.iter()
                .map(|(s, l)| format!("{s}@{l}"))
                .collect::<Vec<_>>(),
            ["delivery@group:west", "ssh@cluster"]
        );
        let eff = layers.effective(&m, &n("gw1")).unwrap();
        assert_eq!(
            eff.iter()
                .map(|(s, l)| format!("{s}@{l}"))
                .collect::<Vec<_>>(),
            [
                "node@machine:gw1",
                "delivery@machine:gw1",
                "limits@machine:gw1",
                "ssh@cluster"
            ]
        );
        assert!(layers.effective(&m, &n("gw9")).is_err());
    }

    #[test]
    fn every_difference_with_its_remedy() {
        let (m, layers) = cluster();
        let f = check(&SCHEMA, &m, &layers, 7, &up(&["gw1", "gw2", "gw3"], 7));
        let lines: Vec<String> = f
            .iter()
            .map(|f| format!("{} | {}", f.text, f.resolve.join(" ; ")))
            .collect();
        assert_eq!(
            lines,
            [
                "group:west sets [delivery] to the same value as cluster | clusterconfig deletesettings delivery --level group:west",
                "machine:gw1 overrides [delivery] of cluster (for gw1) | clusterconfig movesettings delivery --from machine:gw1 --to cluster ; clusterconfig deletesettings delivery --level machine:gw1",
                "[limits] is set at machine:gw1 only (for gw1); the other machines use its defaults | clusterconfig movesettings limits --from machine:gw1 --to cluster ; clusterconfig deletesettings limits --level machine:gw1",
                "machine:gw2 sets [ssh], which cannot be set at that level | clusterconfig deletesettings ssh --level machine:gw2",
            ]
        );
    }

    #[test]
    fn members_behind_or_away() {
        let (m, _) = cluster();
        let mut states = up(&["gw1", "gw2"], 7);
        states[1].applied = Some(5);
        states.push(MemberState {
            name: n("gw3"),
            applied: Some(6),
            connected: false,
        });
        let f = check(&SCHEMA, &m, &Layers::default(), 7, &states);
        let texts: Vec<&str> = f.iter().map(|f| f.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "gw2 runs revision 5; the cluster is at revision 7",
                "gw3 is not connected to the cluster (it runs revision 6; the cluster is at 7)",
            ]
        );
        assert_eq!(f[1].resolve, ["clusterconfig reconnect (on gw3)"]);
        // A machine that never reported is behind too.
        let f = check(&SCHEMA, &m, &Layers::default(), 7, &up(&["gw1", "gw2"], 7));
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].text,
            "gw3 runs no revision yet; the cluster is at revision 7"
        );
    }

    #[test]
    fn an_all_cluster_configuration_has_no_finding() {
        let (m, _) = cluster();
        let layers = Layers::new([
            doc("cluster", "[delivery]\nmax_concurrency = 10\n"),
            doc(
                "machine:gw1",
                "[node]\nhostname = \"gw1\"\n[[interface]]\nname = \"a\"\n",
            ),
        ]);
        assert!(check(&SCHEMA, &m, &layers, 1, &up(&["gw1", "gw2", "gw3"], 1)).is_empty());
    }
}
