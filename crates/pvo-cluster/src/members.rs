//! Who is in the cluster: machines, the groups they belong to, and the changes an
//! administrator makes to them (`clusterconfig addgroup`, `setgroup`, `renamegroup`,
//! `deletegroup`, joining and `removemachine`).
//!
//! Every machine belongs to exactly one group; a new cluster has one, `Main_Group`, as on
//! the appliance. Each refusal says what to do instead, because the person reading it is
//! in the middle of changing a running cluster.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::level::{Level, Name};

/// The group a new cluster puts its machines in.
pub const MAIN_GROUP: &str = "Main_Group";

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: Name,
    /// The address the other machines and the manager reach it at.
    pub address: String,
    pub group: Name,
}

/// The cluster's machines and groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Members {
    pub cluster: Name,
    groups: BTreeSet<Name>,
    machines: BTreeMap<Name, Member>,
}

/// A change to the members that cannot be made, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MembersError {
    #[error("a machine named {0} is already in the cluster: join under another name, or `clusterconfig removemachine {0}` first")]
    NameTaken(Name),
    #[error("{machine} already has the address {address}: each machine needs its own address")]
    AddressTaken { address: String, machine: Name },
    #[error("no machine named {0} in the cluster (`clusterconfig list` shows them)")]
    NoMachine(Name),
    #[error("no group named {0} in the cluster (`clusterconfig list` shows them)")]
    NoGroup(Name),
    #[error("a group named {0} already exists")]
    GroupExists(Name),
    #[error("group {group} still holds {machines}: move them with `clusterconfig setgroup`, or delete the group with a group to move them to")]
    GroupNotEmpty { group: Name, machines: String },
    #[error("{0} is the cluster's only group; add another before deleting it")]
    LastGroup(Name),
    #[error("{0} is the cluster's last machine; a cluster keeps at least one")]
    LastMachine(Name),
}

impl Members {
    /// A new cluster of one machine, in [`MAIN_GROUP`].
    pub fn create(cluster: Name, name: Name, address: String) -> Members {
        let group = Name::new(MAIN_GROUP).expect("a valid name");
        let mut machines = BTreeMap::new();
        machines.insert(
            name.clone(),
            Member {
                name,
                address,
                group: group.clone(),
            },
        );
        Members {
            cluster,
            groups: BTreeSet::from([group]),
            machines,
        }
    }

    /// The members as a store holds them. Refused if a machine's group is not among the
    /// groups or there is no group at all (a store written by something else).
    pub fn restore(
        cluster: Name,
        groups: Vec<Name>,
        machines: Vec<Member>,
    ) -> Result<Members, MembersError> {
        let groups: BTreeSet<Name> = groups.into_iter().collect();
        if groups.is_empty() {
            return Err(MembersError::NoGroup(
                Name::new(MAIN_GROUP).expect("a valid name"),
            ));
        }
        let mut by_name = BTreeMap::new();
        for m in machines {
            if !groups.contains(&m.group) {
                return Err(MembersError::NoGroup(m.group));
            }
            if by_name.contains_key(&m.name) {
                return Err(MembersError::NameTaken(m.name));
            }
            by_name.insert(m.name.clone(), m);
        }
        Ok(Members {
            cluster,
            groups,
            machines: by_name,
        })
    }

    pub fn groups(&self) -> impl Iterator<Item = &Name> {
        self.groups.iter()
    }

    pub fn machines(&self) -> impl Iterator<Item = &Member> {
        self.machines.values()
    }

    pub fn machine(&self, name: &Name) -> Result<&Member, MembersError> {
        self.machines
            .get(name)
            .ok_or_else(|| MembersError::NoMachine(name.clone()))
    }

    /// The machines of a group, by name.
    pub fn in_group(&self, group: &Name) -> Vec<&Member> {
        self.machines
            .values()
            .filter(|m| &m.group == group)
            .collect()
    }

    /// The layers a machine's configuration is made of, most specific first.
    pub fn chain(&self, name: &Name) -> Result<[Level; 3], MembersError> {
        let m = self.machine(name)?;
        Ok([
            Level::Machine(m.name.clone()),
            Level::Group(m.group.clone()),
            Level::Cluster,
        ])
    }

    /// The machines whose configuration a change at `level` changes.
    pub fn affected(&self, level: &Level) -> Vec<&Member> {
        match level {
            Level::Cluster => self.machines.values().collect(),
            Level::Group(g) => self.in_group(g),
            Level::Machine(n) => self.machines.get(n).into_iter().collect(),
        }
    }

    /// A machine joins, into `group` (the first group when `None`).
    pub fn join(
        &mut self,
        name: Name,
        address: String,
        group: Option<Name>,
    ) -> Result<(), MembersError> {
        if self.machines.contains_key(&name) {
            return Err(MembersError::NameTaken(name));
        }
        if let Some(m) = self.machines.values().find(|m| m.address == address) {
            return Err(MembersError::AddressTaken {
                address,
                machine: m.name.clone(),
            });
        }
        let group = match group {
            Some(g) if self.groups.contains(&g) => g,
            Some(g) => return Err(MembersError::NoGroup(g)),
            None => self
                .groups
                .iter()
                .next()
                .expect("a cluster has a group")
                .clone(),
        };
        self.machines.insert(
            name.clone(),
            Member {
                name,
                address,
                group,
            },
        );
        Ok(())
    }

    pub fn remove(&mut self, name: &Name) -> Result<Member, MembersError> {
        self.machine(name)?;
        if self.machines.len() == 1 {
            return Err(MembersError::LastMachine(name.clone()));
        }
        Ok(self.machines.remove(name).expect("checked"))
    }

    pub fn add_group(&mut self, group: Name) -> Result<(), MembersError> {
        if !self.groups.insert(group.clone()) {
            return Err(MembersError::GroupExists(group));
        }
        Ok(())
    }

    pub fn set_group(&mut self, machine: &Name, group: &Name) -> Result<(), MembersError> {
        if !self.groups.contains(group) {
            return Err(MembersError::NoGroup(group.clone()));
        }
        let m = self
            .machines
            .get_mut(machine)
            .ok_or_else(|| MembersError::NoMachine(machine.clone()))?;
        m.group = group.clone();
        Ok(())
    }

    /// Renames a group; its machines follow (and its layer is renamed with it).
    pub fn rename_group(&mut self, old: &Name, new: Name) -> Result<(), MembersError> {
        if !self.groups.contains(old) {
            return Err(MembersError::NoGroup(old.clone()));
        }
        if self.groups.contains(&new) {
            return Err(MembersError::GroupExists(new));
        }
        self.groups.remove(old);
        self.groups.insert(new.clone());
        for m in self.machines.values_mut().filter(|m| &m.group == old) {
            m.group = new.clone();
        }
        Ok(())
    }

    /// Deletes a group, moving its machines to `move_to` (refused if it holds machines
    /// and no group is given).
    pub fn delete_group(
        &mut self,
        group: &Name,
        move_to: Option<&Name>,
    ) -> Result<(), MembersError> {
        if !self.groups.contains(group) {
            return Err(MembersError::NoGroup(group.clone()));
        }
        if self.groups.len() == 1 {
            return Err(MembersError::LastGroup(group.clone()));
        }
        let held: Vec<Name> = self
            .in_group(group)
            .iter()
            .map(|m| m.name.clone())
            .collect();
        match move_to {
            _ if held.is_empty() => {}
            Some(to) if to == group || !self.groups.contains(to) => {
                return Err(MembersError::NoGroup(to.clone()))
            }
            Some(to) => {
                for n in &held {
                    self.machines.get_mut(n).expect("listed").group = to.clone();
                }
            }
            None => {
                return Err(MembersError::GroupNotEmpty {
                    group: group.clone(),
                    machines: held.iter().map(Name::as_str).collect::<Vec<_>>().join(", "),
                })
            }
        }
        self.groups.remove(group);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    fn three() -> Members {
        let mut c = Members::create(n("east"), n("gw1"), "10.0.0.1".into());
        c.join(n("gw2"), "10.0.0.2".into(), None).unwrap();
        c.join(n("gw3"), "10.0.0.3".into(), None).unwrap();
        c
    }

    #[test]
    fn joining_refuses_names_and_addresses_in_use() {
        let mut c = three();
        assert_eq!(
            c.join(n("gw2"), "10.0.0.9".into(), None),
            Err(MembersError::NameTaken(n("gw2")))
        );
        let e = c.join(n("gw4"), "10.0.0.3".into(), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "gw3 already has the address 10.0.0.3: each machine needs its own address"
        );
        assert_eq!(
            c.join(n("gw4"), "10.0.0.4".into(), Some(n("west"))),
            Err(MembersError::NoGroup(n("west")))
        );
        assert_eq!(c.machines().count(), 3);
        assert!(c.machines().all(|m| m.group.as_str() == MAIN_GROUP));
    }

    #[test]
    fn chains_and_affected_machines() {
        let mut c = three();
        c.add_group(n("west")).unwrap();
        c.set_group(&n("gw3"), &n("west")).unwrap();
        assert_eq!(
            c.chain(&n("gw3")).unwrap().map(|l| l.to_string()),
            ["machine:gw3", "group:west", "cluster"]
        );
        let names = |l: &Level| -> Vec<String> {
            c.affected(l).iter().map(|m| m.name.to_string()).collect()
        };
        assert_eq!(names(&Level::Cluster), ["gw1", "gw2", "gw3"]);
        assert_eq!(names(&Level::Group(n(MAIN_GROUP))), ["gw1", "gw2"]);
        assert_eq!(names(&Level::Machine(n("gw9"))), Vec::<String>::new());
    }

    #[test]
    fn groups_rename_and_delete() {
        let mut c = three();
        assert_eq!(
            c.add_group(n(MAIN_GROUP)),
            Err(MembersError::GroupExists(n(MAIN_GROUP)))
        );
        assert_eq!(
            c.delete_group(&n(MAIN_GROUP), None),
            Err(MembersError::LastGroup(n(MAIN_GROUP)))
        );
        c.add_group(n("west")).unwrap();
        c.rename_group(&n(MAIN_GROUP), n("east")).unwrap();
        assert!(c.machines().all(|m| m.group.as_str() == "east"));
        let e = c.delete_group(&n("east"), None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "group east still holds gw1, gw2, gw3: move them with `clusterconfig setgroup`, or delete the group with a group to move them to"
        );
        assert_eq!(
            c.delete_group(&n("east"), Some(&n("east"))),
            Err(MembersError::NoGroup(n("east")))
        );
        c.delete_group(&n("east"), Some(&n("west"))).unwrap();
        assert_eq!(c.groups().map(Name::as_str).collect::<Vec<_>>(), ["west"]);
        assert!(c.machines().all(|m| m.group.as_str() == "west"));
    }

    #[test]
    fn restoring_checks_groups() {
        let c = three();
        let again = Members::restore(
            c.cluster.clone(),
            c.groups().cloned().collect(),
            c.machines().cloned().collect(),
        )
        .unwrap();
        assert_eq!(again, c);
        let mut lost = c.machines().cloned().collect::<Vec<_>>();
        lost[0].group = n("gone");
        assert_eq!(
            Members::restore(c.cluster.clone(), vec![n(MAIN_GROUP)], lost),
            Err(MembersError::NoGroup(n("gone")))
        );
        assert!(Members::restore(c.cluster.clone(), vec![], vec![]).is_err());
    }

    #[test]
    fn removing_machines() {
        let mut c = three();
        assert_eq!(c.remove(&n("gw9")), Err(MembersError::NoMachine(n("gw9"))));
        c.remove(&n("gw1")).unwrap();
        c.remove(&n("gw2")).unwrap();
        assert_eq!(
            c.remove(&n("gw3")),
            Err(MembersError::LastMachine(n("gw3")))
        );
    }
}
