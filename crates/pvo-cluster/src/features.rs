//! Feature keys per machine, and the two cluster reasons the Enable button of the
//! centralized quarantines stays greyed (docs/appliance.md, failure scenarios 5 and 6).
//!
//! A feature (anti-virus, outbreak filters, DLP, any engine added later) runs on a
//! machine only while it holds an unexpired key for it. Centralizing the quarantines of a
//! cluster needs the machines to agree: when some hold a key for a feature the others lack
//! (scenario 5), or when content filters, DLP (and message filters and DMARC settings,
//! which come later) sit below the cluster level (scenario 6), the configuration would
//! quarantine differently per machine, and Enable is refused with the appliance's words.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::check::Layers;
use crate::level::{Level, Name};
use crate::members::Members;

/// A licensable feature.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    Antivirus,
    Outbreak,
    Dlp,
}

impl Feature {
    pub const ALL: [Feature; 3] = [Feature::Antivirus, Feature::Outbreak, Feature::Dlp];

    pub fn name(&self) -> &'static str {
        match self {
            Feature::Antivirus => "antivirus",
            Feature::Outbreak => "outbreak",
            Feature::Dlp => "dlp",
        }
    }

    /// How the appliance names it in its pages.
    pub fn title(&self) -> &'static str {
        match self {
            Feature::Antivirus => "Anti-Virus",
            Feature::Outbreak => "Outbreak Filters",
            Feature::Dlp => "Data Loss Prevention",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown feature {0:?}: use antivirus, outbreak or dlp")]
pub struct UnknownFeature(pub String);

impl FromStr for Feature {
    type Err = UnknownFeature;

    fn from_str(s: &str) -> Result<Feature, UnknownFeature> {
        Feature::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| UnknownFeature(s.to_string()))
    }
}

/// One installed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureKey {
    pub feature: Feature,
    pub key: String,
    /// Unix seconds; `None`: does not expire.
    pub expires: Option<u64>,
}

impl FeatureKey {
    pub fn active(&self, now: u64) -> bool {
        self.expires.is_none_or(|t| now < t)
    }
}

/// The features a machine's keys turn on at `now`.
pub fn active(keys: &[FeatureKey], now: u64) -> BTreeSet<Feature> {
    keys.iter()
        .filter(|k| k.active(now))
        .map(|k| k.feature.clone())
        .collect()
}

/// Scenario 5: the features some machines have and others lack, per machine lacking them.
pub fn missing_keys(machines: &BTreeMap<Name, BTreeSet<Feature>>) -> BTreeMap<Name, Vec<Feature>> {
    let any: BTreeSet<&Feature> = machines.values().flatten().collect();
    machines
        .iter()
        .filter_map(|(name, has)| {
            let lacks: Vec<Feature> = any
                .iter()
                .filter(|f| !has.contains(f))
                .map(|f| (*f).clone())
                .collect();
            (!lacks.is_empty()).then(|| (name.clone(), lacks))
        })
        .collect()
}

/// One setting that stands below the cluster level (scenario 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BelowCluster {
    pub section: String,
    pub level: Level,
    /// The machines it applies to.
    pub machines: Vec<Name>,
}

impl BelowCluster {
    pub fn remedy(&self) -> String {
        match &self.level {
            Level::Machine(m) => format!(
                "move it to the cluster level (`clusterconfig movesettings {s} --from {l} --to cluster`), or `clusterconfig removemachine {m}` and join it again",
                s = self.section,
                l = self.level
            ),
            _ => format!(
                "move it to the cluster level (`clusterconfig movesettings {s} --from {l} --to cluster`)",
                s = self.section,
                l = self.level
            ),
        }
    }
}

/// Scenario 6: each of `sections` (the filters and policies that decide what is
/// quarantined) set at a group or machine level.
pub fn below_cluster(members: &Members, layers: &Layers, sections: &[&str]) -> Vec<BelowCluster> {
    let mut out = Vec::new();
    let mut at = |level: Level, machines: Vec<Name>| {
        if let Some(doc) = layers.get(&level) {
            for s in sections.iter().filter(|s| doc.sets(s)) {
                out.push(BelowCluster {
                    section: s.to_string(),
                    level: level.clone(),
                    machines: machines.clone(),
                });
            }
        }
    };
    for g in members.groups() {
        let machines = members.in_group(g).iter().map(|m| m.name.clone()).collect();
        at(Level::Group(g.clone()), machines);
    }
    for m in members.machines() {
        at(Level::Machine(m.name.clone()), vec![m.name.clone()]);
    }
    out
}

/// The appliance's refusal of Enable for these hosts: "host1", "host1 and host2",
/// "host1, host2 and host3".
pub fn enable_refusal(hosts: &[&str]) -> String {
    let list = match hosts {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    };
    format!(
        "Unable to proceed with Centralized Policy, Virus and Outbreak Quarantines configuration as {list} in Cluster have content filters / DLP actions available at a level different from the cluster Level."
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::LayerDoc;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn keys_expire() {
        let keys = [
            FeatureKey {
                feature: Feature::Dlp,
                key: "k1".into(),
                expires: Some(100),
            },
            FeatureKey {
                feature: Feature::Antivirus,
                key: "k2".into(),
                expires: None,
            },
        ];
        assert_eq!(
            active(&keys, 99),
            BTreeSet::from([Feature::Antivirus, Feature::Dlp])
        );
        assert_eq!(active(&keys, 100), BTreeSet::from([Feature::Antivirus]));
        assert_eq!("dlp".parse::<Feature>(), Ok(Feature::Dlp));
        assert_eq!(
            "spam".parse::<Feature>().unwrap_err().to_string(),
            "unknown feature \"spam\": use antivirus, outbreak or dlp"
        );
    }

    #[test]
    fn scenario_5_names_each_missing_key() {
        let machines = BTreeMap::from([
            (n("gw1"), BTreeSet::from([Feature::Antivirus, Feature::Dlp])),
            (n("gw2"), BTreeSet::from([Feature::Antivirus])),
            (n("gw3"), BTreeSet::from([Feature::Outbreak])),
        ]);
        let m = missing_keys(&machines);
        assert_eq!(m[&n("gw1")], [Feature::Outbreak]);
        assert_eq!(m[&n("gw2")], [Feature::Outbreak, Feature::Dlp]);
        assert_eq!(m[&n("gw3")], [Feature::Antivirus, Feature::Dlp]);
        let same = BTreeMap::from([
            (n("gw1"), BTreeSet::from([Feature::Dlp])),
            (n("gw2"), BTreeSet::from([Feature::Dlp])),
        ]);
        assert!(missing_keys(&same).is_empty());
    }

    #[test]
    fn scenario_6_settings_below_the_cluster() {
        let mut members = Members::create(n("c"), n("gw1"), "a".into());
        members.join(n("gw2"), "b".into(), None).unwrap();
        let layers = Layers::new([
            LayerDoc::parse(Level::Cluster, "[[content_filter]]\nname = \"a\"\n").unwrap(),
            LayerDoc::parse(
                "group:Main_Group".parse().unwrap(),
                "[[dlp_policy]]\nname = \"d\"\n",
            )
            .unwrap(),
            LayerDoc::parse(
                "machine:gw2".parse().unwrap(),
                "[[content_filter]]\nname = \"b\"\n[delivery]\n",
            )
            .unwrap(),
        ]);
        let found = below_cluster(&members, &layers, &["content_filter", "dlp_policy"]);
        let lines: Vec<String> = found
            .iter()
            .map(|b| {
                let ms: Vec<&str> = b.machines.iter().map(Name::as_str).collect();
                format!(
                    "{} at {} ({}): {}",
                    b.section,
                    b.level,
                    ms.join(","),
                    b.remedy()
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                "dlp_policy at group:Main_Group (gw1,gw2): move it to the cluster level (`clusterconfig movesettings dlp_policy --from group:Main_Group --to cluster`)",
                "content_filter at machine:gw2 (gw2): move it to the cluster level (`clusterconfig movesettings content_filter --from machine:gw2 --to cluster`), or `clusterconfig removemachine gw2` and join it again",
            ]
        );
    }

    #[test]
    fn the_appliance_wording() {
        assert_eq!(
            enable_refusal(&["host1", "host2"]),
            "Unable to proceed with Centralized Policy, Virus and Outbreak Quarantines configuration as host1 and host2 in Cluster have content filters / DLP actions available at a level different from the cluster Level."
        );
        assert!(enable_refusal(&["a", "b", "c"]).contains(" as a, b and c in Cluster "));
        assert!(enable_refusal(&["a"]).contains(" as a in Cluster "));
    }
}
