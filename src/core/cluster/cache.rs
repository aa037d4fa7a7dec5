//! The last good configuration of a member, on its own disk: the revision it runs, the
//! members as it last saw them, and the text of its three layers. A member writes it after
//! a revision composed and validated, before putting it in force, and starts from it when
//! the cluster's store cannot be reached — so a disconnected machine keeps working on
//! exactly what it last ran, and says which revision that is.
//!
//! One JSON file, `DATA_DIR/cluster/last_good.json`, replaced whole (`atomic_file`): a crash
//! leaves the old one or the new one. A file that does not read is an error naming it,
//! never an empty configuration.

use std::path::{Path, PathBuf};

use pvo_cluster::{Level, Member, Members, Name};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The cache's file under the data directory.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("cluster").join("last_good.json")
}

/// What a member last ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastGood {
    pub revision: u64,
    pub machine: Name,
    pub members: Members,
    /// The machine's chain: its own layer, its group's, the cluster's.
    pub layers: Vec<(Level, String)>,
}

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("cannot write the last good cluster configuration {path}: {why}")]
    Write { path: PathBuf, why: String },
    #[error("cannot read the last good cluster configuration {path}: {why}")]
    Read { path: PathBuf, why: String },
}

#[derive(Serialize, Deserialize)]
struct File {
    revision: u64,
    machine: String,
    cluster: String,
    groups: Vec<String>,
    machines: Vec<FileMember>,
    layers: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct FileMember {
    name: String,
    address: String,
    group: String,
}

/// Writes the cache (atomically, durably, owner-only: the layers may hold secrets).
pub fn save(data_dir: &Path, last: &LastGood) -> Result<(), CacheError> {
    let path = path(data_dir);
    let file = File {
        revision: last.revision,
        machine: last.machine.to_string(),
        cluster: last.members.cluster.to_string(),
        groups: last.members.groups().map(|g| g.to_string()).collect(),
        machines: last
            .members
            .machines()
            .map(|m| FileMember {
                name: m.name.to_string(),
                address: m.address.clone(),
                group: m.group.to_string(),
            })
            .collect(),
        layers: last
            .layers
            .iter()
            .map(|(l, t)| (l.to_string(), t.clone()))
            .collect(),
    };
    let json = serde_json::to_vec_pretty(&file).expect("plain data serialises");
    crate::core::atomic_file::write_private(&path, &json).map_err(|e| CacheError::Write {
        why: format!("{e:#}"),
        path,
    })
}

/// Reads the cache; `None` when there is none (a machine that never ran in a cluster).
pub fn load(data_dir: &Path) -> Result<Option<LastGood>, CacheError> {
    let path = path(data_dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(CacheError::Read {
                why: e.to_string(),
                path,
            })
        }
    };
    let bad = |why: String| CacheError::Read {
        path: path.clone(),
        why,
    };
    let file: File = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    let name = |s: &str| Name::new(s).map_err(|e| bad(e.to_string()));
    let machines = file
        .machines
        .iter()
        .map(|m| {
            Ok(Member {
                name: name(&m.name)?,
                address: m.address.clone(),
                group: name(&m.group)?,
            })
        })
        .collect::<Result<Vec<_>, CacheError>>()?;
    let groups = file
        .groups
        .iter()
        .map(|g| name(g))
        .collect::<Result<Vec<_>, _>>()?;
    let members =
        Members::restore(name(&file.cluster)?, groups, machines).map_err(|e| bad(e.to_string()))?;
    let layers = file
        .layers
        .into_iter()
        .map(|(l, t)| {
            l.parse::<Level>()
                .map(|l| (l, t))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(LastGood {
        revision: file.revision,
        machine: name(&file.machine)?,
        members,
        layers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_private_and_refusing_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let gw1 = Name::new("gw1").unwrap();
        let last = LastGood {
            revision: 12,
            machine: gw1.clone(),
            members: Members::create(Name::new("c").unwrap(), gw1, "10.0.0.1".into()),
            layers: vec![
                ("machine:gw1".parse().unwrap(), "[node]\n".into()),
                (Level::Cluster, "[limits]\n# \"quoted\"\n".into()),
            ],
        };
        save(dir.path(), &last).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(last));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        std::fs::write(path(dir.path()), b"{\"revision\": 1").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(
            e.starts_with("cannot read the last good cluster configuration "),
            "{e}"
        );
        assert!(e.contains("last_good.json"), "{e}");
    }
}
