//! Configuration revisions: the rule that keeps two administrators from overwriting each
//! other, and which revision a per-level rollback restores.
//!
//! Every commit writes one revision: a number (the cluster's sequence), the level it
//! changed, who made it, when, and a comment. An administrator's pending changes start
//! from the revision they last saw (their base). A commit at a level is refused when a
//! revision newer than the base changed the same level: the appliance's last writer wins,
//! here the second writer is told who committed what in between and makes the change again
//! on top of it. Changes at different levels do not conflict; the composed configuration
//! of every affected machine is validated again at commit either way.

use std::fmt;

use thiserror::Error;

use crate::level::Level;

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub number: u64,
    pub level: Level,
    pub author: String,
    /// When, as the node prints times.
    pub at: String,
    pub comment: String,
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "revision {} at {} by {} ({})",
            self.number, self.level, self.author, self.at
        )?;
        if !self.comment.is_empty() {
            write!(f, ": {:?}", self.comment)?;
        }
        Ok(())
    }
}

/// A commit refused because the level changed since its base.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct Conflict {
    pub base: u64,
    pub level: Level,
    /// The revisions after the base that changed the level, oldest first.
    pub between: Vec<Revision>,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "commit refused: {} changed since revision {}, which your changes start from:",
            self.level, self.base
        )?;
        for r in &self.between {
            write!(f, "\n  {r}")?;
        }
        write!(
            f,
            "\nReview them (`commitdetail`), discard yours (`clearchanges`) and make them again."
        )
    }
}

/// Whether a commit at `level` from `base` may go ahead, given the history (any order).
pub fn check_base(base: u64, level: &Level, history: &[Revision]) -> Result<(), Conflict> {
    let mut between: Vec<Revision> = history
        .iter()
        .filter(|r| r.number > base && &r.level == level)
        .cloned()
        .collect();
    if between.is_empty() {
        return Ok(());
    }
    between.sort_by_key(|r| r.number);
    Err(Conflict {
        base,
        level: level.clone(),
        between,
    })
}

/// A rollback that cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RollbackError {
    #[error("{level} has no revision at or before {to}")]
    Nothing { level: Level, to: u64 },
    #[error("{level} is already at revision {to}: nothing to roll back")]
    Current { level: Level, to: u64 },
}

/// The revision whose text of `level` a rollback to `to` restores: the newest one at or
/// before `to` that changed the level. Rolling back writes that text as a new revision,
/// so the history only grows.
pub fn rollback_source(level: &Level, to: u64, history: &[Revision]) -> Result<u64, RollbackError> {
    let of_level = || history.iter().filter(|r| &r.level == level);
    let source = of_level()
        .filter(|r| r.number <= to)
        .map(|r| r.number)
        .max()
        .ok_or_else(|| RollbackError::Nothing {
            level: level.clone(),
            to,
        })?;
    let newest = of_level().map(|r| r.number).max().unwrap_or(source);
    if newest == source {
        return Err(RollbackError::Current {
            level: level.clone(),
            to,
        });
    }
    Ok(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(number: u64, level: &str, author: &str, comment: &str) -> Revision {
        Revision {
            number,
            level: level.parse().unwrap(),
            author: author.into(),
            at: format!("10:0{number}"),
            comment: comment.into(),
        }
    }

    fn history() -> Vec<Revision> {
        vec![
            rev(1, "cluster", "admin", "initial"),
            rev(2, "group:east", "alice", ""),
            rev(3, "cluster", "bob", "tighter limits"),
            rev(4, "machine:gw1", "alice", "local relay"),
            rev(5, "cluster", "carol", "new route"),
        ]
    }

    #[test]
    fn a_stale_base_is_refused_naming_who_committed_what() {
        let e = check_base(2, &Level::Cluster, &history()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "commit refused: cluster changed since revision 2, which your changes start from:\n  \
             revision 3 at cluster by bob (10:03): \"tighter limits\"\n  \
             revision 5 at cluster by carol (10:05): \"new route\"\n\
             Review them (`commitdetail`), discard yours (`clearchanges`) and make them again."
        );
        assert!(check_base(5, &Level::Cluster, &history()).is_ok());
        // Another level's commits do not conflict.
        assert!(check_base(2, &"group:east".parse().unwrap(), &history()).is_ok());
        assert!(check_base(3, &"machine:gw1".parse().unwrap(), &history()).is_err());
    }

    #[test]
    fn rollback_per_level() {
        let h = history();
        assert_eq!(rollback_source(&Level::Cluster, 4, &h), Ok(3));
        assert_eq!(rollback_source(&Level::Cluster, 1, &h), Ok(1));
        assert_eq!(
            rollback_source(&Level::Cluster, 5, &h),
            Err(RollbackError::Current {
                level: Level::Cluster,
                to: 5
            })
        );
        let g: Level = "group:west".parse().unwrap();
        assert_eq!(
            rollback_source(&g, 5, &h).unwrap_err().to_string(),
            "group:west has no revision at or before 5"
        );
    }
}
