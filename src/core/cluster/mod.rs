//! A machine's configuration in a cluster: composed from its three layers (its own, its
//! group's and the cluster's, `pvo_cluster`), validated by the same code as a single file
//! (`Config::from_layers`), and kept on the machine's own disk as the last good one
//! (`cache`) so that a member that cannot reach the cluster's store keeps running on it.
//!
//! Which sections may sit where is [`SCHEMA`]: the machine's name, role and interfaces
//! only in its own layer; the SSH server only at cluster level (one way in to every
//! member); everything else at any level, the most specific winning. A layer that sets a
//! section where it may not be is refused with the layer's name and the line.

pub mod cache;
pub mod member;
pub mod store;
pub mod sync;
pub mod users;
pub mod view;

use std::path::{Path, PathBuf};

use pvo_cluster::{LayerDoc, Level, Members, MembersError, Name, Schema};

use crate::core::config::{self, Config, ConfigError};

/// Where each section may be set, for `pvo_cluster`'s edits and checks.
pub const SCHEMA: Schema = Schema {
    cluster_only: &["ssh"],
    machine_only: &["node", "interface", "cluster"],
};

/// What a layer is called in errors: its level and the revision it was read at.
pub fn layer_name(level: &Level, revision: u64) -> PathBuf {
    PathBuf::from(format!("{level} (revision {revision})"))
}

/// Composes and validates `machine`'s configuration from the cluster's layers at
/// `revision` (`layers`: every level's text; a level without a text sets nothing).
/// `base` resolves relative paths (the machine's configuration directory).
pub fn compose(
    members: &Members,
    machine: &Name,
    layers: &[(Level, String)],
    revision: u64,
    base: &Path,
) -> Result<Config, ConfigError> {
    let chain = members
        .chain(machine)
        .map_err(|e: MembersError| ConfigError {
            file: layer_name(&Level::Machine(machine.clone()), revision),
            line: None,
            key: String::new(),
            message: e.to_string(),
        })?;
    let names: Vec<PathBuf> = chain.iter().map(|l| layer_name(l, revision)).collect();
    let texts: Vec<&str> = chain
        .iter()
        .map(|level| {
            layers
                .iter()
                .find(|(l, _)| l == level)
                .map(|(_, t)| t.as_str())
                .unwrap_or("")
        })
        .collect();
    for ((level, text), name) in chain.iter().zip(&texts).zip(&names) {
        misplaced(level, text, name)?;
    }
    let built: Vec<config::Layer<'_>> = chain
        .iter()
        .zip(&texts)
        .zip(&names)
        .map(|((level, text), name)| config::Layer {
            level: match level {
                Level::Cluster => config::Level::Cluster,
                Level::Group(g) => config::Level::Group(g.to_string()),
                Level::Machine(_) => config::Level::Machine,
            },
            file: name,
            base,
            text,
        })
        .collect();
    let mut cfg = Config::from_layers(&built)?;
    // A machine is known to the manager by one id; a `[cpq]` shared by a group or the
    // cluster names no id (`misplaced` refuses one), so each machine is its own name.
    if cfg.origin("cpq") != Some("machine") {
        if let Some(c) = cfg.cpq.as_mut() {
            c.node_id = machine.to_string();
        }
    }
    Ok(cfg)
}

/// The line (1-based) of `key` inside `[section]` of `text`, if it is there.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        let l = l.trim_start();
        if l.starts_with('[') {
            inside = l.starts_with(&format!("[{section}]"));
        } else if inside
            && l.strip_prefix(key)
                .is_some_and(|r| r.trim_start().starts_with('='))
        {
            return Some(i + 1);
        }
    }
    None
}

/// Refuses a section set at a level it may not be at, naming the line.
fn misplaced(level: &Level, text: &str, name: &Path) -> Result<(), ConfigError> {
    let doc = LayerDoc::parse(level.clone(), text).map_err(|e| ConfigError {
        file: name.to_path_buf(),
        line: Some(e.line),
        key: String::new(),
        message: e.message,
    })?;
    if !matches!(level, Level::Machine(_)) {
        let id = doc.value("cpq").and_then(|v| v.get("node_id").map(|_| ()));
        if id.is_some() {
            let line = line_of(text, "cpq", "node_id");
            return Err(ConfigError {
                file: name.to_path_buf(),
                line,
                key: "cpq.node_id".into(),
                message: format!(
                    "a machine's CPQ id is its own: in a cluster each machine is known to the manager by its machine name, so [cpq] at {level} names no node_id: remove that line (each machine keeps its name as its CPQ id)"
                ),
            });
        }
    }
    for section in doc.sections() {
        if SCHEMA.allows(&section, level) {
            continue;
        }
        let line = text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                l.starts_with(&format!("[{section}]"))
                    || l.starts_with(&format!("[[{section}]]"))
                    || l.starts_with(&format!("{section} ="))
                    || l.starts_with(&format!("{section}="))
            })
            .map(|i| i + 1);
        let message = match level {
            Level::Machine(_) => format!(
                "[{section}] is set for the whole cluster; move it to the cluster level (`clusterconfig movesettings {section} --from {level} --to cluster`)"
            ),
            _ => format!(
                "[{section}] is set per machine; it cannot be at {level} (`clusterconfig deletesettings {section} --level {level}`)"
            ),
        };
        return Err(ConfigError {
            file: name.to_path_buf(),
            line,
            key: section,
            message,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    const GW1: &str = r#"[node]
hostname = "gw1.example.com"
data_dir = "."

[[interface]]
name = "Data 1"
address = "127.0.0.1"
"#;

    fn members() -> Members {
        let mut m = Members::create(n("c"), n("gw1"), "10.0.0.1".into());
        m.add_group(n("east")).unwrap();
        m.set_group(&n("gw1"), &n("east")).unwrap();
        m
    }

    fn layers(group: &str, cluster: &str) -> Vec<(Level, String)> {
        vec![
            ("machine:gw1".parse().unwrap(), GW1.to_string()),
            ("group:east".parse().unwrap(), group.to_string()),
            (Level::Cluster, cluster.to_string()),
        ]
    }

    #[test]
    fn sections_come_from_the_most_specific_layer() {
        let cfg = compose(
            &members(),
            &n("gw1"),
            &layers(
                "[limits]\nmax_bad_commands = 9\n",
                "[limits]\nmax_bad_commands = 5\n\n[logs]\n",
            ),
            7,
            Path::new("."),
        )
        .unwrap();
        assert_eq!(cfg.hostname, "gw1.example.com");
        assert_eq!(cfg.limits.max_bad_commands, 9);
        assert_eq!(cfg.origin("limits"), Some("group:east"));
        assert_eq!(cfg.origin("logs"), Some("cluster"));
        assert_eq!(cfg.origin("node"), Some("machine"));
    }

    #[test]
    fn errors_name_the_layer_and_revision() {
        let e = compose(
            &members(),
            &n("gw1"),
            &layers("", "[limits]\nmax_bad_commands = -1\n"),
            7,
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(e.file, PathBuf::from("cluster (revision 7)"));
        assert_eq!(e.line, Some(2));
        let e = compose(&members(), &n("gw9"), &[], 7, Path::new(".")).unwrap_err();
        assert!(e.message.contains("no machine named gw9"), "{e}");
    }

    const CPQ: &str = "[cpq]\nmode = \"local\"\n";

    #[test]
    fn each_machine_is_its_own_cpq_id() {
        let cfg = compose(&members(), &n("gw1"), &layers("", CPQ), 4, Path::new(".")).unwrap();
        assert_eq!(cfg.cpq.unwrap().node_id, "gw1");
        let mut own = layers("", CPQ);
        own[0].1.push_str("\n[cpq]\nnode_id = \"edge-1\"\n");
        let cfg = compose(&members(), &n("gw1"), &own, 4, Path::new(".")).unwrap();
        assert_eq!(cfg.cpq.unwrap().node_id, "edge-1");
        let shared = format!("[logs]\n\n{CPQ}node_id = \"gw1\"\n");
        let e = compose(
            &members(),
            &n("gw1"),
            &layers(&shared, ""),
            4,
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("cpq.node_id", Some(5)), "{e}");
        assert!(
            e.message
                .contains("known to the manager by its machine name"),
            "{e}"
        );
    }

    #[test]
    fn sections_out_of_their_level_are_refused() {
        let e = compose(
            &members(),
            &n("gw1"),
            &layers("[logs]\n\n[[interface]]\nname = \"x\"\n", ""),
            3,
            Path::new("."),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "group:east (revision 3) line 3, key interface: [interface] is set per machine; it cannot be at group:east (`clusterconfig deletesettings interface --level group:east`)"
        );
        let mut own = layers("", "");
        own[0].1.push_str("\n[ssh]\n");
        let e = compose(&members(), &n("gw1"), &own, 3, Path::new(".")).unwrap_err();
        assert_eq!(e.key, "ssh");
        assert!(
            e.message
                .contains("movesettings ssh --from machine:gw1 --to cluster"),
            "{e}"
        );
    }
}
