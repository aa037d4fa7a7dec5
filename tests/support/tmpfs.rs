//! A small file system for the tests that need a full disk: a tmpfs of a fixed size
//! (needs root, as the test command runs).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::run_with_timeout;

/// A tmpfs of a fixed size mounted on a fresh temporary directory; unmounted when dropped,
/// also when the test panics. Declare it before the node that uses it, so that the node
/// (dropped first) is dead by the time the mount goes.
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("pvo-tmpfs-")
            .tempdir()
            .expect("create mount point");
        let (status, out, err) = run_with_timeout(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755")])
                .arg("tmpfs")
                .arg(dir.path()),
            Duration::from_secs(30),
        );
        assert!(
            status.success(),
            "mount a {size} tmpfs on {} (the durability tests run as root): {out}{err}",
            dir.path().display()
        );
        Tmpfs { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let path = self.dir.path().to_path_buf();
        let umount = |lazy: bool| {
            let mut cmd = Command::new("umount");
            if lazy {
                cmd.arg("-l");
            }
            cmd.arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        // A lazy unmount detaches it even if something still has a file open in it.
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount the tmpfs on {}", path.display());
        }
    }
}
