//! The shape every configuration section shares, so that a section can be validated
//! from any layer (cluster, group or machine) with the same errors.
//!
//! A [`Layer`] is one file of the configuration: its level, its path (which errors
//! name), the directory its relative paths resolve against, and its text. [`Ctx`] is
//! the layer a section is being validated from: every error it makes names that file,
//! the line of the offending value, the key and what is allowed, because an
//! administrator fixing a configuration at 3 a.m. should not have to guess which of
//! several files is wrong. A [`Section`] is one top-level key of a file: its raw serde
//! model, what it resolves names against, and its validation.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;

/// A configuration error that points at the place to fix.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ", key {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Where a layer sits: a section set at machine level overrides the group's, which
/// overrides the cluster's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    Cluster,
    /// A group of machines, by name.
    Group(String),
    Machine,
}

impl Level {
    /// 0 for the layer that wins.
    pub(super) fn precedence(&self) -> u8 {
        match self {
            Level::Machine => 0,
            Level::Group(_) => 1,
            Level::Cluster => 2,
        }
    }
}

impl fmt::Display for Level {
    /// "cluster", "group:NAME" or "machine": what `Config::origin` answers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Level::Cluster => f.write_str("cluster"),
            Level::Group(name) => write!(f, "group:{name}"),
            Level::Machine => f.write_str("machine"),
        }
    }
}

/// One configuration file of a node.
#[derive(Debug, Clone)]
pub struct Layer<'a> {
    pub level: Level,
    /// Only used in error messages.
    pub file: &'a Path,
    /// What relative paths in this file resolve against.
    pub base: &'a Path,
    pub text: &'a str,
}

impl<'a> Layer<'a> {
    /// The machine's own file: today's single configuration file.
    pub fn machine(text: &'a str, file: &'a Path, base: &'a Path) -> Layer<'a> {
        Layer {
            level: Level::Machine,
            file,
            base,
            text,
        }
    }
}

/// The layer a section is validated from; every error it makes names its file.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    layer: &'a Layer<'a>,
}

impl<'a> Ctx<'a> {
    pub fn new(layer: &'a Layer<'a>) -> Ctx<'a> {
        Ctx { layer }
    }

    pub(super) fn line_of(&self, offset: usize) -> usize {
        let text = self.layer.text;
        text.as_bytes()[..offset.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    pub(super) fn toml_error(&self, e: &toml::de::Error) -> ConfigError {
        ConfigError {
            file: self.layer.file.to_path_buf(),
            line: e.span().map(|s| self.line_of(s.start)),
            key: String::new(),
            message: e.message().trim().to_string(),
        }
    }

    pub(super) fn err<T>(
        &self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> Result<T, ConfigError> {
        Err(ConfigError {
            file: self.layer.file.to_path_buf(),
            line: span.map(|s| self.line_of(s.start)),
            key: key.into(),
            message: message.into(),
        })
    }

    /// An integer in `min..=max`, `default` when the key is absent.
    pub(super) fn int(
        &self,
        v: &Option<Spanned<i64>>,
        key: &str,
        min: i64,
        max: i64,
        default: i64,
    ) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => {
                let n = *s.get_ref();
                if n < min || n > max {
                    self.err(
                        Some(s.span()),
                        key,
                        format!("{n} is out of range; allowed: an integer from {min} to {max}"),
                    )
                } else {
                    Ok(n)
                }
            }
        }
    }

    /// A path as written in this layer's file: relative ones are relative to it.
    pub(super) fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.layer.base.join(p)
        }
    }

    /// The line of a top-level key of this layer's file (the first `[[key]]` of an
    /// array of tables), for errors about a whole section.
    pub(super) fn key_line(&self, key: &str) -> Option<usize> {
        let table = toml::de::DeTable::parse(self.layer.text).ok()?;
        let (k, _) = table.get_ref().iter().find(|(k, _)| {
            let name: &str = k.get_ref();
            name == key
        })?;
        Some(self.line_of(k.span().start))
    }
}

/// One top-level key of a configuration file.
pub trait Section: Sized {
    /// The key, as written in the file.
    const KEY: &'static str;
    /// A section only the machine's own file may set (its name, addresses...).
    const MACHINE_ONLY: bool = false;
    /// The section as written.
    type Raw;
    /// The validated sections this one resolves names against.
    type Needs<'a>;
    /// `raw` is `None` when no layer sets the section (its defaults apply); errors
    /// name `ctx`'s file.
    fn validate(
        raw: Option<Self::Raw>,
        ctx: &Ctx<'_>,
        needs: Self::Needs<'_>,
    ) -> Result<Self, ConfigError>;
}
