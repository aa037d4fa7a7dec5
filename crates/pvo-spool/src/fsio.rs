//! The writes, truncations and fsyncs of spool files, in one place so that tests can make
//! them fail.
//!
//! In test builds every `SpoolConfig` carries a `Faults` plan: the next N (or all) fsyncs,
//! writes or truncations fail with a chosen OS error, and a quota on the bytes of all files in
//! the spool directory (`corrupt/` included) makes writes fail with `ENOSPC` once the files
//! would outgrow it, after writing what still fits, as a full file system does. Deleting or
//! truncating files gives the space back, since usage is measured from the files themselves.
//! Directory fsyncs are not covered. Outside tests these functions are the plain calls.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::SpoolConfig;

/// `pwrite`s all of `buf` at `off`.
pub(crate) fn write_at(cfg: &SpoolConfig, file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some((n, e)) = cfg.faults.write_fault(&cfg.dir, file, buf.len(), off) {
        file.write_all_at(&buf[..n], off)?;
        return Err(e);
    }
    #[cfg(not(test))]
    let _ = cfg;
    file.write_all_at(buf, off)
}

/// `fdatasync`, if the configuration asks for fsyncs.
pub(crate) fn sync_data(cfg: &SpoolConfig, file: &File) -> io::Result<()> {
    #[cfg(test)]
    if let Some(e) = cfg.faults.sync_fault() {
        return Err(e);
    }
    if cfg.fsync {
        file.sync_data()
    } else {
        Ok(())
    }
}

/// `fsync`, if the configuration asks for fsyncs.
pub(crate) fn sync_all(cfg: &SpoolConfig, file: &File) -> io::Result<()> {
    #[cfg(test)]
    if let Some(e) = cfg.faults.sync_fault() {
        return Err(e);
    }
    if cfg.fsync {
        file.sync_all()
    } else {
        Ok(())
    }
}

/// `ftruncate`.
pub(crate) fn set_len(cfg: &SpoolConfig, file: &File, len: u64) -> io::Result<()> {
    #[cfg(test)]
    if let Some(e) = cfg.faults.truncate_fault() {
        return Err(e);
    }
    #[cfg(not(test))]
    let _ = cfg;
    file.set_len(len)
}

#[cfg(test)]
pub(crate) use faults::Faults;

#[cfg(test)]
mod faults {
    use std::fs::{self, File};
    use std::io;
    use std::path::Path;
    use std::sync::{Mutex, PoisonError};

    use crate::dir::CORRUPT_DIR;

    /// Failures planned by a test; shared by every clone of a `SpoolConfig`.
    #[derive(Debug, Default)]
    pub(crate) struct Faults {
        plan: Mutex<Plan>,
    }

    #[derive(Debug, Default)]
    struct Plan {
        sync: Fault,
        write: Fault,
        truncate: Fault,
        /// Bytes that all files in the spool directory together may hold.
        quota: Option<u64>,
    }

    #[derive(Debug, Default, Clone, Copy)]
    struct Fault {
        code: i32,
        /// How many more operations fail; `u32::MAX`: all of them.
        times: u32,
    }

    impl Fault {
        fn take(&mut self) -> Option<io::Error> {
            if self.times == 0 {
                return None;
            }
            if self.times != u32::MAX {
                self.times -= 1;
            }
            Some(io::Error::from_raw_os_error(self.code))
        }
    }

    /// Bytes of the regular files in `dir` and `dir/corrupt`.
    fn usage(dir: &Path) -> u64 {
        [dir.to_path_buf(), dir.join(CORRUPT_DIR)]
            .iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    impl Faults {
        fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
            self.plan.lock().unwrap_or_else(PoisonError::into_inner)
        }

        /// The next `times` fsyncs (`u32::MAX`: all, until called again) fail with `code`.
        pub(crate) fn fail_syncs(&self, code: i32, times: u32) {
            self.plan().sync = Fault { code, times };
        }

        /// The next `times` writes fail with `code`, each after writing half its bytes.
        pub(crate) fn fail_writes(&self, code: i32, times: u32) {
            self.plan().write = Fault { code, times };
        }

        /// The next `times` truncations fail with `code`.
        pub(crate) fn fail_truncates(&self, code: i32, times: u32) {
            self.plan().truncate = Fault { code, times };
        }

        /// Limits the bytes of all files in the spool directory; `None` lifts the limit.
        pub(crate) fn set_quota(&self, quota: Option<u64>) {
            self.plan().quota = quota;
        }

        pub(super) fn sync_fault(&self) -> Option<io::Error> {
            self.plan().sync.take()
        }

        pub(super) fn truncate_fault(&self) -> Option<io::Error> {
            self.plan().truncate.take()
        }

        /// How many of `len` bytes at `off` may be written before the write fails, and with
        /// what; `None` if it succeeds.
        pub(super) fn write_fault(
            &self,
            dir: &Path,
            file: &File,
            len: usize,
            off: u64,
        ) -> Option<(usize, io::Error)> {
            let mut plan = self.plan();
            if let Some(e) = plan.write.take() {
                return Some((len / 2, e));
            }
            let quota = plan.quota?;
            let used = usage(dir);
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            let growth = (off + len as u64).saturating_sub(size);
            if used + growth <= quota {
                return None;
            }
            let room = quota.saturating_sub(used);
            let fits = (size + room).saturating_sub(off).min(len as u64);
            Some((fits as usize, io::Error::from_raw_os_error(28)))
        }
    }
}
