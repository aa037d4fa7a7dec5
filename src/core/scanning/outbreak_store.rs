//! The outbreak rules in force and their persisted copy.
//!
//! `pvo outbreakupdate FILE` puts new rules in force at run time; so that a restart does
//! not silently go back to older rules, the accepted file's bytes are kept in
//! `DATA_DIR/outbreak/rules-<sha256 prefix>.toml` with a record, `DATA_DIR/outbreak/state.json`
//! (version, source path, origin, time, SHA-256 of the copy, and the configuration's
//! `[outbreak] rules_file` with its version at that moment). Both are written atomically
//! (temporary file, fsync, rename, fsync of the directory), the record last: renaming it
//! is the commit point, and the copy it names is never overwritten by other content.
//!
//! At start ([`decide`]): the persisted rules stay in force unless the configuration
//! changed since they were persisted — it names another rules file (or none any more), or
//! the file it names now carries another `version`. Then the configured rules are in
//! force. A record or copy that cannot be used (unreadable, not JSON, SHA-256 mismatch,
//! rules that do not compile) does not stop the node: a warning names the file and the
//! fix, and the configured rules are in force.
//!
//! A commit that changes `[outbreak] rules_file` loads the new file and replaces the
//! persisted copy with it; a commit that removes it keeps the rules in force and records
//! that the configuration names no file any more, so a restart keeps them too.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use pvo_scan::outbreak::{OutbreakRules, OutbreakRulesFile};
use serde::{Deserialize, Serialize};

use crate::core::mail_log::MailLog;

/// The record's name in the outbreak directory.
const STATE: &str = "state.json";

/// How the rules got in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// `pvo outbreakupdate FILE`.
    Outbreakupdate,
    /// The configuration's `[outbreak] rules_file` (at start or by a commit).
    Configuration,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Outbreakupdate => "outbreakupdate",
            Origin::Configuration => "configuration",
        }
    }
}

/// The configuration's rules file and the version it carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configured {
    pub path: PathBuf,
    /// `None` when the file could not be read at that moment.
    pub version: Option<String>,
}

/// `DATA_DIR/outbreak/state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The rules' version.
    pub version: String,
    /// The file the rules were loaded from.
    pub source: PathBuf,
    pub origin: Origin,
    /// Unix seconds of the update or commit.
    pub at: u64,
    /// The copy's file name in the outbreak directory.
    pub file: String,
    /// SHA-256 of the copy, hex.
    pub sha256: String,
    /// The configuration's rules file when this record was written (`None`: none named).
    pub configured: Option<Configured>,
}

// The rules file's format is the configuration's (`[outbreak] rules_file`).
use crate::core::config::outbreak_rules::parse;
pub use crate::core::config::outbreak_rules::{from_bytes, read, Loaded};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data))
}

/// The rules in force and where they came from.
pub struct InForce {
    pub rules: Arc<OutbreakRules>,
    /// The file as written (descriptions for `outbreakstatus`).
    pub file: OutbreakRulesFile,
    /// The file they were loaded from.
    pub source: PathBuf,
    pub origin: Origin,
    /// The persisted record (and the copy's path) when these rules are the persisted ones.
    pub record: Option<(Record, PathBuf)>,
    /// Why these rules are in force.
    pub why: String,
}

/// Which rules a starting node puts in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Persisted,
    Configured,
}

/// The decision at start, with its reason: the persisted rules stay in force unless the
/// configuration changed since they were persisted (another rules file or none, or the
/// same file with another version). `configured` is the configuration's rules file now.
pub fn decide(record: Option<&Record>, configured: Option<&Configured>) -> (Choice, String) {
    let Some(r) = record else {
        return (
            Choice::Configured,
            "no rules were persisted by outbreakupdate".into(),
        );
    };
    let since = format!(
        "since the rules were persisted ({} at {})",
        r.origin.as_str(),
        crate::core::mail_log::ctime(r.at)
    );
    let version = |v: &Option<String>| v.clone().unwrap_or_else(|| "unreadable".into());
    match (r.configured.as_ref(), configured) {
        (then, now) if then == now => (
            Choice::Persisted,
            match now {
                Some(c) => format!(
                    "the configured rules file {} (version {}) has not changed {since}",
                    c.path.display(),
                    version(&c.version)
                ),
                None => format!("the configuration names no rules file, as {since}"),
            },
        ),
        (Some(then), Some(now)) if then.path == now.path => (
            Choice::Configured,
            format!(
                "the configured rules file {} has version {} now, it had {} {since}",
                now.path.display(),
                version(&now.version),
                version(&then.version)
            ),
        ),
        (_, Some(now)) => (
            Choice::Configured,
            format!(
                "the configuration names the rules file {} now, {}",
                now.path.display(),
                match &r.configured {
                    Some(then) => format!("it named {} {since}", then.path.display()),
                    None => format!("it named none {since}"),
                }
            ),
        ),
        (Some(then), None) => (
            Choice::Configured,
            format!(
                "the configuration names no rules file now, it named {} {since}",
                then.path.display()
            ),
        ),
        // Equal, handled above.
        (None, None) => unreachable!(),
    }
}

/// The outbreak rules of a node: the rules in force and their persisted copy.
pub struct OutbreakState {
    dir: PathBuf,
    in_force: RwLock<Option<Arc<InForce>>>,
    /// Serializes persisting with putting in force (updates and commits).
    write: Mutex<()>,
}

impl OutbreakState {
    /// Where the copy and the record live: `DATA_DIR/outbreak`.
    pub fn dir_of(data_dir: &Path) -> PathBuf {
        // `components` drops the "." of `data_dir = "."`, for readable messages.
        data_dir.components().collect::<PathBuf>().join("outbreak")
    }

    /// The rules a starting node puts in force (see [`decide`]); logs one line saying
    /// which and why, and a warning when the persisted copy cannot be used. Fails only
    /// when the configured rules file cannot be loaded (as the configuration check does).
    pub fn start(
        data_dir: &Path,
        configured: Option<&Path>,
        log: &MailLog,
    ) -> anyhow::Result<OutbreakState> {
        let dir = Self::dir_of(data_dir);
        let configured = match configured {
            Some(p) => Some((p.to_path_buf(), read(p).map_err(|e| anyhow::anyhow!(e))?)),
            None => None,
        };
        let conf = configured.as_ref().map(|(p, l)| Configured {
            path: p.clone(),
            version: Some(l.file.version.clone()),
        });
        let persisted = match load_persisted(&dir) {
            Ok(p) => p,
            Err(e) => {
                log.emit(crate::core::events::Event::OutbreakCopyUnusable {
                    dir: &dir,
                    error: &e,
                });
                None
            }
        };
        let had_record = persisted.is_some();
        let (choice, why) = decide(persisted.as_ref().map(|(r, _)| r), conf.as_ref());
        let in_force = match (choice, persisted, configured) {
            (Choice::Persisted, Some((record, loaded)), _) => {
                let copy = dir.join(&record.file);
                Some(InForce {
                    rules: Arc::new(loaded.rules),
                    file: loaded.file,
                    source: record.source.clone(),
                    origin: record.origin,
                    record: Some((record, copy)),
                    why,
                })
            }
            (_, _, Some((path, loaded))) => Some(InForce {
                rules: Arc::new(loaded.rules),
                file: loaded.file,
                source: path,
                origin: Origin::Configuration,
                record: None,
                why,
            }),
            (_, _, None) => {
                // Say so only when rules had been persisted (the configuration dropped
                // its rules file since); a node that never had rules stays quiet.
                if had_record {
                    log.emit(crate::core::events::Event::NoOutbreakRules { why: &why });
                }
                None
            }
        };
        if let Some(f) = &in_force {
            log.emit(crate::core::events::Event::OutbreakRulesInForce {
                version: &f.rules.version(),
                rules: f.rules.len(),
                from: &f.source,
                origin: f.origin.as_str(),
                kept: f.record.as_ref().map(|(r, copy)| (r.at, copy.as_path())),
                why: &f.why,
            });
        }
        Ok(OutbreakState {
            dir,
            in_force: RwLock::new(in_force.map(Arc::new)),
            write: Mutex::new(()),
        })
    }

    pub fn rules(&self) -> Option<Arc<OutbreakRules>> {
        self.in_force().map(|f| f.rules.clone())
    }

    pub fn in_force(&self) -> Option<Arc<InForce>> {
        self.in_force.read().unwrap().clone()
    }

    /// Persists `loaded` (read from `source`) and then puts it in force. Nothing changes
    /// when persisting fails.
    pub fn update(
        &self,
        loaded: Loaded,
        source: &Path,
        origin: Origin,
        configured: Option<Configured>,
        now: u64,
    ) -> Result<Arc<InForce>, String> {
        self.persist_and_put(loaded, source, origin, configured, now, false)
    }

    /// With `force`, the rules are put in force even when persisting fails (still an error).
    fn persist_and_put(
        &self,
        loaded: Loaded,
        source: &Path,
        origin: Origin,
        configured: Option<Configured>,
        now: u64,
        force: bool,
    ) -> Result<Arc<InForce>, String> {
        let _w = self.write.lock().unwrap();
        let sha256 = sha256_hex(&loaded.bytes);
        let record = Record {
            version: loaded.file.version.clone(),
            source: source.to_path_buf(),
            origin,
            at: now,
            file: format!("rules-{}.toml", &sha256[..16]),
            sha256,
            configured,
        };
        let copy = self.dir.join(&record.file);
        let persisted = self.persist(&record, Some(&loaded.bytes));
        if let (Err(e), false) = (&persisted, force) {
            return Err(e.clone());
        }
        let why = match origin {
            Origin::Outbreakupdate => "loaded by outbreakupdate".to_string(),
            Origin::Configuration => "the configuration's rules file changed".to_string(),
        };
        let f = Arc::new(InForce {
            rules: Arc::new(loaded.rules),
            file: loaded.file,
            source: source.to_path_buf(),
            origin,
            record: persisted.is_ok().then_some((record, copy)),
            why,
        });
        *self.in_force.write().unwrap() = Some(f.clone());
        persisted.map(|()| f)
    }

    /// A commit removed `[outbreak] rules_file`: the rules in force stay, and the record
    /// (if any) says the configuration names none, so a restart keeps them too.
    pub fn configuration_names_none(&self) -> Result<(), String> {
        let _w = self.write.lock().unwrap();
        let Some(f) = self.in_force() else {
            return Ok(());
        };
        let Some((record, _)) = &f.record else {
            return Ok(());
        };
        let mut record = record.clone();
        record.configured = None;
        self.persist(&record, None)
    }

    /// Writes the copy (when given) and then the record, each atomically; removes copies
    /// no record names any more.
    fn persist(&self, record: &Record, bytes: Option<&[u8]>) -> Result<(), String> {
        let fail = |e: anyhow::Error| format!("persisting the outbreak rules: {e:#}");
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        if let Some(bytes) = bytes {
            crate::core::atomic_file::write(&self.dir.join(&record.file), bytes).map_err(fail)?;
        }
        let json = serde_json::to_vec_pretty(record).map_err(|e| e.to_string())?;
        crate::core::atomic_file::write(&self.dir.join(STATE), &json).map_err(fail)?;
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("rules-") && name.ends_with(".toml") && name != record.file {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        Ok(())
    }
}

/// What a commit does to the outbreak rules.
pub enum Commit {
    /// The configuration names a new rules file: in force, and the persisted copy.
    Load(PathBuf, Loaded),
    /// The configuration names no rules file any more: the rules in force stay.
    NoneNamed,
}

/// Checks a commit's `[outbreak] rules_file` before anything is swapped: `None` when it
/// did not change, an error when the new file cannot be loaded.
pub fn prepare_commit(old: Option<&Path>, new: Option<&Path>) -> Result<Option<Commit>, String> {
    Ok(match (old, new) {
        (o, Some(n)) if o != Some(n) => Some(Commit::Load(n.to_path_buf(), read(n)?)),
        (Some(_), None) => Some(Commit::NoneNamed),
        _ => None,
    })
}

impl OutbreakState {
    /// Carries out a commit's change (from [`prepare_commit`]), after the configuration is
    /// swapped. The rules are put in force even when persisting fails (a warning): a
    /// restart then loads the configured file anyway, since the configuration names
    /// another file than the record does.
    pub fn commit(&self, change: Commit, now: u64, log: &MailLog) {
        let result = match change {
            Commit::Load(path, loaded) => {
                let version = loaded.file.version.clone();
                let configured = Some(Configured {
                    path: path.clone(),
                    version: Some(version.clone()),
                });
                self.persist_and_put(loaded, &path, Origin::Configuration, configured, now, true)
                    .map(|f| {
                        log.emit(crate::core::events::Event::OutbreakRulesChanged {
                            version: &version,
                            rules: f.rules.len(),
                            from: &path,
                            kept: f.record.as_ref().map(|(_, c)| c.as_path()),
                        });
                    })
            }
            Commit::NoneNamed => self.configuration_names_none(),
        };
        if let Err(e) = result {
            log.emit(crate::core::events::Event::OutbreakRulesUnrecorded {
                error: &e,
                dir: &self.dir,
            });
        }
    }
}

/// The persisted record and its rules; `Ok(None)` when nothing was persisted.
fn load_persisted(dir: &Path) -> Result<Option<(Record, Loaded)>, String> {
    let state = dir.join(STATE);
    let text = match std::fs::read(&state) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", state.display())),
    };
    let record: Record =
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", state.display()))?;
    if record.file.contains('/') || !record.file.starts_with("rules-") {
        return Err(format!(
            "{}: the rules file name {:?} is not one PVO writes",
            state.display(),
            record.file
        ));
    }
    let copy = dir.join(&record.file);
    let bytes = std::fs::read(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
    let sha = sha256_hex(&bytes);
    if sha != record.sha256 {
        return Err(format!(
            "{}: its SHA-256 is {sha}, {} says {}",
            copy.display(),
            state.display(),
            record.sha256
        ));
    }
    let loaded = parse(bytes).map_err(|e| format!("{}: {e}", copy.display()))?;
    if loaded.file.version != record.version {
        return Err(format!(
            "{}: version {}, {} says {}",
            copy.display(),
            loaded.file.version,
            state.display(),
            record.version
        ));
    }
    Ok(Some((record, loaded)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(path: &str, version: &str) -> Configured {
        Configured {
            path: PathBuf::from(path),
            version: Some(version.into()),
        }
    }

    fn record(configured: Option<Configured>) -> Record {
        Record {
            version: "v2".into(),
            source: "/tmp/v2.toml".into(),
            origin: Origin::Outbreakupdate,
            at: 1_700_000_000,
            file: "rules-0123456789abcdef.toml".into(),
            sha256: "00".into(),
            configured,
        }
    }

    #[test]
    fn nothing_persisted_means_the_configured_rules() {
        let (c, why) = decide(None, Some(&conf("/etc/r.toml", "v1")));
        assert_eq!(c, Choice::Configured);
        assert!(why.contains("no rules were persisted"), "{why}");
        assert_eq!(decide(None, None).0, Choice::Configured);
    }

    #[test]
    fn persisted_rules_win_while_the_configuration_is_unchanged() {
        let r = record(Some(conf("/etc/r.toml", "v1")));
        let (c, why) = decide(Some(&r), Some(&conf("/etc/r.toml", "v1")));
        assert_eq!(c, Choice::Persisted);
        assert!(why.contains("has not changed"), "{why}");
        // No rules file configured then or now: the persisted rules stay.
        let (c, why) = decide(Some(&record(None)), None);
        assert_eq!(c, Choice::Persisted);
        assert!(why.contains("names no rules file"), "{why}");
    }

    #[test]
    fn a_new_version_of_the_configured_file_wins() {
        let r = record(Some(conf("/etc/r.toml", "v1")));
        let (c, why) = decide(Some(&r), Some(&conf("/etc/r.toml", "v3")));
        assert_eq!(c, Choice::Configured);
        assert!(why.contains("has version v3 now, it had v1"), "{why}");
    }

    #[test]
    fn another_configured_file_or_none_wins() {
        let r = record(Some(conf("/etc/r.toml", "v1")));
        let (c, why) = decide(Some(&r), Some(&conf("/etc/other.toml", "v1")));
        assert_eq!(c, Choice::Configured);
        assert!(
            why.contains("names the rules file /etc/other.toml now"),
            "{why}"
        );
        let (c, why) = decide(Some(&r), None);
        assert_eq!(c, Choice::Configured);
        assert!(why.contains("names no rules file now"), "{why}");
        // Persisted with no file configured; now the configuration names one.
        let (c, why) = decide(Some(&record(None)), Some(&conf("/etc/r.toml", "v1")));
        assert_eq!(c, Choice::Configured);
        assert!(why.contains("it named none"), "{why}");
    }

    const V1: &str =
        "version = \"v1\"\n\n[[rule]]\nid = \"R1\"\nthreat_level = 4\nbody_regex = [\"one\"]\n";
    const V2: &str =
        "version = \"v2\"\n\n[[rule]]\nid = \"R2\"\nthreat_level = 4\nbody_regex = [\"two\"]\n";

    fn state_in(data: &Path, configured: Option<&Path>) -> (OutbreakState, String) {
        let logs = data.join("logs");
        let log = MailLog::open(&logs, 1 << 20, 2).unwrap();
        let s = OutbreakState::start(data, configured, &log).unwrap();
        log.flush();
        let mut text = String::new();
        for e in std::fs::read_dir(&logs).unwrap().flatten() {
            text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        (s, text)
    }

    #[test]
    fn a_commit_naming_another_file_replaces_the_copy_and_one_naming_none_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let v1 = tmp.path().join("v1.toml");
        let v2 = tmp.path().join("v2.toml");
        std::fs::write(&v1, V1).unwrap();
        std::fs::write(&v2, V2).unwrap();
        let log = MailLog::discard();

        let (s, _) = state_in(&data, Some(&v1));
        s.update(read(&v1).unwrap(), &v1, Origin::Outbreakupdate, None, 1)
            .unwrap();
        // The configuration now names v2: in force and persisted as the copy.
        let change = prepare_commit(Some(&v1), Some(&v2)).unwrap().unwrap();
        s.commit(change, 2, &log);
        assert_eq!(s.rules().unwrap().version(), "v2");
        assert!(prepare_commit(Some(&v2), Some(&v2)).unwrap().is_none());
        drop(s);
        let (s, _) = state_in(&data, Some(&v2));
        let f = s.in_force().unwrap();
        assert_eq!((f.origin, f.rules.version()), (Origin::Configuration, "v2"));
        assert_eq!(f.record.as_ref().unwrap().0.at, 2);
        // Only the current copy is kept.
        let copies = std::fs::read_dir(OutbreakState::dir_of(&data))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("rules-")
            })
            .count();
        assert_eq!(copies, 1);

        // The configuration drops its rules file: the rules stay, across a restart too.
        let change = prepare_commit(Some(&v2), None).unwrap().unwrap();
        s.commit(change, 3, &log);
        drop(s);
        let (s, _) = state_in(&data, None);
        assert_eq!(s.rules().unwrap().version(), "v2");
        // A bad new file fails the commit before anything changes.
        std::fs::write(&v1, "version = ").unwrap();
        assert!(prepare_commit(None, Some(&v1)).is_err());
    }

    #[test]
    fn an_update_survives_a_restart_and_a_corrupt_copy_falls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let v1 = tmp.path().join("v1.toml");
        let v2 = tmp.path().join("v2.toml");
        std::fs::write(&v1, V1).unwrap();
        std::fs::write(&v2, V2).unwrap();

        let (s, _) = state_in(&data, Some(&v1));
        assert_eq!(s.rules().unwrap().version(), "v1");
        let configured = Some(Configured {
            path: v1.clone(),
            version: Some("v1".into()),
        });
        s.update(
            read(&v2).unwrap(),
            &v2,
            Origin::Outbreakupdate,
            configured,
            1_700_000_000,
        )
        .unwrap();
        assert_eq!(s.rules().unwrap().version(), "v2");
        drop(s);

        // The source may go away: the copy is what counts.
        std::fs::remove_file(&v2).unwrap();
        let (s, _) = state_in(&data, Some(&v1));
        let f = s.in_force().unwrap();
        assert_eq!(f.rules.version(), "v2");
        assert_eq!(f.origin, Origin::Outbreakupdate);
        assert_eq!(f.source, v2);
        let (record, copy) = f.record.clone().unwrap();
        assert_eq!(record.at, 1_700_000_000);
        drop(s);

        // A torn copy: warning, configured rules.
        std::fs::write(&copy, "version = \"v2\"\n[[rule]]\nid = ").unwrap();
        let (s, log) = state_in(&data, Some(&v1));
        assert_eq!(s.rules().unwrap().version(), "v1");
        assert!(log.contains("cannot be used"), "{log}");
        assert!(log.contains(&copy.display().to_string()), "{log}");
        drop(s);

        // A record that is not JSON: the same.
        std::fs::write(OutbreakState::dir_of(&data).join(STATE), "{not json").unwrap();
        let (s, log) = state_in(&data, Some(&v1));
        assert_eq!(s.rules().unwrap().version(), "v1");
        assert!(log.contains("state.json"), "{log}");
    }
}
