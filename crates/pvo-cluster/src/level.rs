//! Names and levels: where a setting sits in a cluster.
//!
//! A cluster has one cluster level, any number of groups and machines. Machine and group
//! names appear in commands, in `mail_logs`, in PostgreSQL rows and in file names of a
//! member's cache, so they are checked once here: 1 to 63 characters, letters, digits,
//! `.`, `-` and `_`, beginning with a letter or a digit (a hostname is a valid machine
//! name). A level is written `cluster`, `group:NAME` or `machine:NAME`.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A machine or group name, checked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

/// Why a name or a level was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("a name cannot be empty")]
    Empty,
    #[error("the name {0:?} is longer than 63 characters")]
    TooLong(String),
    #[error("the name {0:?} must begin with a letter or a digit")]
    BadStart(String),
    #[error("the name {name:?} contains {ch:?}; allowed are letters, digits, '.', '-' and '_'")]
    BadChar { name: String, ch: char },
    #[error("unknown level {0:?}: use cluster, group:NAME or machine:NAME")]
    BadLevel(String),
}

impl Name {
    pub fn new(s: &str) -> Result<Name, NameError> {
        let Some(first) = s.chars().next() else {
            return Err(NameError::Empty);
        };
        if s.chars().count() > 63 {
            return Err(NameError::TooLong(s.to_string()));
        }
        if !first.is_ascii_alphanumeric() {
            return Err(NameError::BadStart(s.to_string()));
        }
        if let Some(ch) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
        {
            return Err(NameError::BadChar {
                name: s.to_string(),
                ch,
            });
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a layer sits. A section set at machine level overrides the group's, which
/// overrides the cluster's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Cluster,
    Group(Name),
    Machine(Name),
}

impl Level {
    /// 0 for the most specific level (the one that wins).
    pub fn precedence(&self) -> u8 {
        match self {
            Level::Machine(_) => 0,
            Level::Group(_) => 1,
            Level::Cluster => 2,
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Cluster => f.write_str("cluster"),
            Level::Group(n) => write!(f, "group:{n}"),
            Level::Machine(n) => write!(f, "machine:{n}"),
        }
    }
}

impl FromStr for Level {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Level, NameError> {
        match s.split_once(':') {
            None if s == "cluster" => Ok(Level::Cluster),
            Some(("group", n)) => Ok(Level::Group(Name::new(n)?)),
            Some(("machine", n)) => Ok(Level::Machine(Name::new(n)?)),
            _ => Err(NameError::BadLevel(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["gw1", "gw-1.example.com", "A_b", "9"] {
            assert_eq!(Name::new(ok).unwrap().as_str(), ok);
        }
        assert_eq!(Name::new(""), Err(NameError::Empty));
        assert_eq!(Name::new("-gw"), Err(NameError::BadStart("-gw".into())));
        assert_eq!(
            Name::new("gw 1"),
            Err(NameError::BadChar {
                name: "gw 1".into(),
                ch: ' '
            })
        );
        assert!(matches!(
            Name::new(&"a".repeat(64)),
            Err(NameError::TooLong(_))
        ));
        assert!(Name::new(&"a".repeat(63)).is_ok());
        assert!(matches!(
            Name::new("gw/../x"),
            Err(NameError::BadChar { ch: '/', .. })
        ));
    }

    #[test]
    fn levels_round_trip() {
        for s in ["cluster", "group:east", "machine:gw1.example.com"] {
            assert_eq!(s.parse::<Level>().unwrap().to_string(), s);
        }
        for bad in [
            "",
            "Cluster",
            "group",
            "group:",
            "machine:a b",
            "site:x",
            "cluster:x",
        ] {
            assert!(bad.parse::<Level>().is_err(), "{bad}");
        }
        assert_eq!(
            "site:x".parse::<Level>().unwrap_err().to_string(),
            "unknown level \"site:x\": use cluster, group:NAME or machine:NAME"
        );
    }

    #[test]
    fn precedence_orders_specific_first() {
        let m = Level::Machine(Name::new("a").unwrap());
        let g = Level::Group(Name::new("a").unwrap());
        assert!(m.precedence() < g.precedence());
        assert!(g.precedence() < Level::Cluster.precedence());
    }
}
