//! Files replaced whole, so that readers and crashes see the old or the new content: a
//! temporary file in the same directory, fsync, rename over the file, fsync of the
//! directory. Configuration, users, certificates and keys, ledgers and records use it.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `path` atomically and durably; an existing file's permissions are kept.
pub fn write(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, None)
}

/// Writes `path` atomically and durably, readable by the owner only (mode 0600, also
/// when `path` existed with a wider mode).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    replace(path, data, Some(0o600))
}

fn replace(path: &Path, data: &[u8], mode: Option<u32>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = temporary(dir, path);
    let result = (|| -> std::io::Result<()> {
        // A leftover of an earlier crash would keep its own mode: start afresh.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode.unwrap_or(0o666))
            .open(&tmp)?;
        if mode.is_none() {
            if let Ok(meta) = std::fs::metadata(path) {
                f.set_permissions(meta.permissions())?;
            }
        }
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// `.NAME.tmpPID` beside the file: hidden, and one per process.
fn temporary(dir: &Path, path: &Path) -> PathBuf {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    dir.join(format!(".{name}.tmp{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_keeps_or_narrows_the_mode_and_leaves_no_temporary() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("sub").join("f.txt");
        write(&p, b"one").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&p), 0o640);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&p, b"secret").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"secret");
        assert_eq!(mode(&p), 0o600);
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("f.txt")]);
    }
}
