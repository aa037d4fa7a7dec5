//! File arguments of commands (`outbreakupdate FILE`): where a file may come from, and
//! how an error about its content is worded.
//!
//! Over SSH and the REST API a file argument is a plain file name in the node's import
//! directory, `DATA_DIR/import/` (created at start), as the appliance takes files from its
//! configuration directory: no `/`, no `..`, not a symbolic link, a regular file. Any
//! refusal of such a name is the same "no such file in the import directory", whether it
//! is missing, unreadable, a link or a directory, so a remote caller learns nothing about
//! other paths. The local superuser (the admin socket's owner, who can read the files
//! anyway) may also give an absolute path.
//!
//! An error about a file's content names the file, the line, the column and what was
//! expected, never the content: toml's `Display` quotes the offending line, and serde's
//! messages quote the unknown key or the wrong value, so a command pointed at
//! `/etc/shadow` or another node's password file would print them. [`toml_error`] keeps
//! the span and the message with every quoted fragment of the file replaced.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::core::users::Origin;

/// The import directory under the data directory.
pub const IMPORT_DIR: &str = "import";

/// The largest file a command reads (rules files are a few KiB).
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// `DATA_DIR/import`.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join(IMPORT_DIR)
}

/// Creates the import directory (mode 0700: the files in it are the node owner's).
pub fn ensure(data_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let d = dir(data_dir);
    if d.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&d)
}

/// Reads the file a command names: `arg` is a plain name in the import directory, or,
/// for the local superuser only, an absolute path. Returns the path read and its bytes.
pub fn read(data_dir: &Path, arg: &str, from: &Origin) -> Result<(PathBuf, Vec<u8>), String> {
    let local = matches!(from, Origin::Local);
    if local && Path::new(arg).is_absolute() {
        let path = PathBuf::from(arg);
        let bytes = read_regular(&path, true).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok((path, bytes));
    }
    let import = dir(data_dir);
    let plain =
        !arg.is_empty() && arg != "." && arg != ".." && !arg.contains('/') && !arg.contains('\0');
    if !plain {
        return Err(format!(
            "{arg:?} is not a file name in the import directory {}: give the name of a file there (no path; copy the file into that directory first){}",
            import.display(),
            if local { ", or an absolute path" } else { "" }
        ));
    }
    let path = import.join(arg);
    match read_regular(&path, false) {
        Ok(bytes) => Ok((path, bytes)),
        Err(_) => Err(format!(
            "no such file in the import directory {}: {arg:?}",
            import.display()
        )),
    }
}

/// Reads a regular file of at most [`MAX_FILE`] bytes. Without `follow`, a symbolic link
/// is refused, also one swapped in between the check and the open: the opened file must
/// be the very inode that `lstat` saw.
fn read_regular(path: &Path, follow: bool) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let refuse = |what: &str| std::io::Error::other(what.to_string());
    let seen = if follow {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    if !seen.file_type().is_file() {
        return Err(refuse("not a regular file"));
    }
    let f = std::fs::File::open(path)?;
    let opened = f.metadata()?;
    if (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) || !opened.is_file() {
        return Err(refuse("the file changed while it was opened"));
    }
    if opened.len() > MAX_FILE {
        return Err(refuse(&format!("larger than {MAX_FILE} bytes")));
    }
    let mut bytes = Vec::with_capacity(opened.len() as usize);
    f.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(refuse(&format!("larger than {MAX_FILE} bytes")));
    }
    Ok(bytes)
}

/// Line and column (1-based; the column counts characters) of byte `at` of `text`.
fn position(text: &[u8], at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&text[start..at]).chars().count() + 1;
    (line, column)
}

/// Why `bytes` is not UTF-8 text, with where, and without the bytes.
pub fn utf8_error(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    let (line, column) = position(bytes, e.valid_up_to());
    format!("line {line}, column {column}: not UTF-8 text")
}

/// A TOML error without the file's content: `line L, column C: MESSAGE`, where every
/// fragment the message quotes (`` `...` `` or `"..."`) is kept only if it is one of
/// `known` (the file's own key names) or a part of what was expected, and is `…`
/// otherwise.
pub fn toml_error(text: &str, e: &toml::de::Error, known: &[&str]) -> String {
    let message = redact(e.message(), known);
    match e.span() {
        Some(span) => {
            let (line, column) = position(text.as_bytes(), span.start);
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn redact(message: &str, known: &[&str]) -> String {
    // serde and toml name what was expected after ", expected": words of the schema.
    let (head, tail) = match message.find("expected ") {
        Some(p) => message.split_at(p),
        None => (message, ""),
    };
    let mut out = String::new();
    let mut rest = head;
    while let Some(open) = rest.find(['`', '"']) {
        let q = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find(q) {
            Some(close) => {
                let inner = &after[..close];
                out.push_str(if known.contains(&inner) { inner } else { "…" });
                out.push(q);
                rest = &after[close + 1..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    // After "expected": the names serde and toml list (schema words, literals such as
    // `=`), unless the file's text itself is quoted there too.
    out.push_str(&redact_unknown(tail, known));
    out.trim_end().to_string()
}

/// The "expected ..." part: fragments that are single schema words or punctuation stay.
fn redact_unknown(tail: &str, known: &[&str]) -> String {
    let mut out = String::new();
    let mut rest = tail;
    while let Some(open) = rest.find(['`', '"']) {
        let q = rest.as_bytes()[open] as char;
        out.push_str(&rest[..=open]);
        let after = &rest[open + 1..];
        match after.find(q) {
            Some(close) => {
                let inner = &after[..close];
                let safe = known.contains(&inner)
                    || (inner.len() <= 3 && inner.chars().all(|c| c.is_ascii_punctuation()));
                out.push_str(if safe { inner } else { "…" });
                out.push(q);
                rest = &after[close + 1..];
            }
            None => {
                out.push('…');
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &["version", "rule", "id", "threat_level"];

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rules {
        version: String,
        #[serde(default)]
        rule: Vec<Rule>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Rule {
        id: String,
        threat_level: u8,
    }

    fn err(text: &str) -> String {
        let e = toml::from_str::<Rules>(text).unwrap_err();
        toml_error(text, &e, KNOWN)
    }

    /// Files that are not rules files: the error says where and what was expected, and
    /// never repeats a byte of them.
    #[test]
    fn toml_errors_name_the_place_never_the_content() {
        let cases = [
            (
                "root:$y$j9T$secretsalt$hash:19000:0:99999:7:::\n",
                "line 1",
                "root",
            ),
            (
                "version = \"1\"\nPASSWORD=hunter2secret\n",
                "line 2",
                "hunter2",
            ),
            (
                "SECRET_TOKEN = \"abc123secret\"\n",
                "line 1",
                "SECRET_TOKEN",
            ),
            (
                "version = \"1\"\n[[rule]]\nid = \"x\"\nthreat_level = \"s3cret\"\n",
                "line 4",
                "s3cret",
            ),
            ("version = 7777\n", "line 1", "7777"),
            ("HOME=/root\0PATH=/usr/bin\0", "line 1", "root"),
            ("Zx8Qp2Lm\n", "line 1", "Zx8Qp2Lm"),
        ];
        for (text, place, secret) in cases {
            let e = err(text);
            assert!(e.starts_with(&format!("{place}, column ")), "{text:?}: {e}");
            assert!(!e.contains(secret), "{text:?} leaks {secret:?}: {e}");
            assert!(!e.contains("|"), "{text:?}: no quoted line: {e}");
        }
        // What was expected stays.
        let e = err("SECRET = 1\n");
        assert!(e.contains("expected `version` or `rule`"), "{e}");
        let e = err("version = \"1\"\n[[rule]]\nid = \"x\"\n");
        assert!(e.contains("missing field `threat_level`"), "{e}");
    }

    #[test]
    fn utf8_errors_say_where() {
        let b: Vec<u8> = b"version = \"1\"\nab\xffcd".to_vec();
        let e = std::str::from_utf8(&b).unwrap_err();
        assert_eq!(utf8_error(&b, &e), "line 2, column 3: not UTF-8 text");
    }

    /// Only plain names in the import directory, and regular files, over remote
    /// channels; every refusal of a name reads the same.
    #[test]
    fn remote_file_arguments_come_only_from_the_import_directory() {
        let data = tempfile::tempdir().unwrap();
        ensure(data.path()).unwrap();
        let import = dir(data.path());
        std::fs::write(import.join("rules.toml"), "version = \"1\"\n").unwrap();
        std::fs::write(data.path().join("secret"), "s3cret").unwrap();
        std::os::unix::fs::symlink(data.path().join("secret"), import.join("link")).unwrap();
        std::fs::create_dir(import.join("sub")).unwrap();
        let ssh = Origin::Ssh("127.0.0.1:1".parse().unwrap());
        let (p, b) = read(data.path(), "rules.toml", &ssh).unwrap();
        assert_eq!(
            (p, b),
            (import.join("rules.toml"), b"version = \"1\"\n".to_vec())
        );
        let secret = data.path().join("secret");
        for bad in [secret.to_str().unwrap(), "../secret", "..", "", "a/b"] {
            let e = read(data.path(), bad, &ssh).unwrap_err();
            assert!(
                e.contains("is not a file name in the import directory"),
                "{bad}: {e}"
            );
            assert!(!e.contains("s3cret"), "{e}");
        }
        let missing = read(data.path(), "missing", &ssh).unwrap_err();
        for name in ["link", "sub", "missing"] {
            let e = read(data.path(), name, &ssh).unwrap_err();
            assert_eq!(e, missing.replace("missing", name), "{name}");
        }
        // The local superuser may name an absolute path; a remote caller may not.
        let (_, b) = read(data.path(), secret.to_str().unwrap(), &Origin::Local).unwrap();
        assert_eq!(b, b"s3cret");
        assert!(read(data.path(), "/dev/zero", &Origin::Local)
            .unwrap_err()
            .contains("not a regular file"));
    }
}
