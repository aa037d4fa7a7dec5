//! `mail_logs`: the appliance-format log that administrators grep.
//!
//! Each line is `Fri Sep 13 15:08:02 2013 Info: <text>`. The wording of the
//! texts is a compatibility surface (`docs/appliance.md`, Log lines): scripts written for
//! the commercial appliance grep for `New SMTP ICID`, `port 7025` and so on,
//! so changing a format string is a breaking change.
//!
//! What a line says is an [`Event`] of the catalogue in [`crate::core::events`]; this module
//! only writes it: [`MailLog::emit`] renders the event, counts it ([`Tally`]) and hands
//! the line to the writer.
//!
//! Lines go through a channel to one writer thread so that a session never
//! blocks on the log file. The writer flushes whenever the channel runs dry,
//! so after a `kill -9` only lines still in the channel can be missing. Files
//! rotate by size: `mail_logs` becomes `mail_logs.1`, and so on up to `keep`.
//!
//! The channel is bounded ([`CHANNEL_LINES`] lines). When it is full, the thread that
//! logs waits until the writer has taken a line: a burst slows its producers down
//! instead of growing memory without limit or losing lines. The writer never stops
//! taking lines while the process runs (a failing write is counted, not retried), so
//! the wait is as long as writing a few thousand lines.
//!
//! A line that cannot be written (a full disk) is not dropped silently: the
//! first failure is said on stderr with the file and the cause, the lines lost
//! are counted, and once writing works again a Warning line says how many were
//! lost, from when to when, and why.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

pub use crate::core::events::{ctime, Level};
use crate::core::events::{Event, Tally};

/// Lines the writer's channel holds before a caller waits (a few hundred KB at most).
pub const CHANNEL_LINES: usize = 8192;

enum Op {
    Line(SystemTime, Level, String),
    Flush(mpsc::Sender<()>),
}

/// A handle to the node's `mail_logs`. Cheap to clone.
#[derive(Clone)]
pub struct MailLog {
    tx: Option<mpsc::SyncSender<Op>>,
    tally: Arc<Tally>,
}

impl MailLog {
    /// Opens (appending) `dir/mail_logs` and starts the writer thread.
    pub fn open(dir: &Path, max_size: u64, keep: usize) -> io::Result<MailLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("mail_logs");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        let (tx, rx) = mpsc::sync_channel::<Op>(CHANNEL_LINES);
        let mut w = Writer {
            path,
            out: BufWriter::with_capacity(64 * 1024, file),
            size,
            max_size,
            keep,
            clock: Clock::default(),
            lost: None,
        };
        std::thread::Builder::new()
            .name("mail_logs".into())
            .spawn(move || w.run(rx))?;
        Ok(MailLog {
            tx: Some(tx),
            tally: Arc::default(),
        })
    }

    /// A log that goes nowhere, for unit tests of components.
    pub fn discard() -> MailLog {
        MailLog {
            tx: None,
            tally: Arc::default(),
        }
    }

    /// The counters this log's events bump (shared with the node's `Counters`).
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    /// Writes the line of `e` at its level, counts it, and says it to `tracing` with
    /// its ICID, MID and DCID as fields.
    pub fn emit(&self, e: Event<'_>) {
        self.tally.count(&e);
        let text = e.to_string();
        let ids = e.ids();
        tracing::debug!(
            target: "mail_logs",
            icid = ids.icid,
            mid = ids.mid,
            dcid = ids.dcid,
            "{text}"
        );
        if let Some(tx) = &self.tx {
            // Waits while the channel is full (see the module doc).
            let _ = tx.send(Op::Line(SystemTime::now(), e.level(), text));
        }
    }

    /// Waits until everything logged so far is written to the file.
    pub fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (ack_tx, ack_rx) = mpsc::channel();
            if tx.send(Op::Flush(ack_tx)).is_ok() {
                let _ = ack_rx.recv();
            }
        }
    }
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_size: u64,
    keep: usize,
    clock: Clock,
    /// Lines that could not be written since the last report, with the first error and
    /// the times of the first and last of them.
    lost: Option<Lost>,
}

struct Lost {
    lines: u64,
    error: String,
    first: SystemTime,
    last: SystemTime,
}

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Op>) {
        while let Ok(op) = rx.recv() {
            self.apply(op);
            while let Ok(op) = rx.try_recv() {
                self.apply(op);
            }
            if let Err(e) = self.out.flush() {
                tracing::error!("cannot write {}: {e}", self.path.display());
            }
        }
        let _ = self.out.flush();
        if let Some(l) = &self.lost {
            eprintln!(
                "{} lines could not be written to {} ({})",
                l.lines,
                self.path.display(),
                l.error
            );
        }
    }

    /// Counts a line that could not be written; the first of a run is said on stderr.
    fn lose(&mut self, t: SystemTime, e: &io::Error) {
        match &mut self.lost {
            Some(l) => {
                l.lines += 1;
                l.last = t;
            }
            None => {
                eprintln!(
                    "cannot write {}: {e}; lines are counted and reported once it can be written",
                    self.path.display()
                );
                self.lost = Some(Lost {
                    lines: 1,
                    error: e.to_string(),
                    first: t,
                    last: t,
                });
            }
        }
    }

    /// After lines were lost: if the file takes bytes again, says so in it.
    fn report_lost(&mut self) {
        let Some(l) = &self.lost else {
            return;
        };
        if self.out.flush().is_err() {
            return;
        }
        let stamp = self.clock.format(SystemTime::now()).to_string();
        let first = self.clock.format(l.first).to_string();
        let last = self.clock.format(l.last).to_string();
        let e = Event::LinesLost {
            lines: l.lines,
            path: &self.path,
            first: &first,
            last: &last,
            error: &l.error,
        };
        let line = format!("{stamp} {}: {e}\n", e.level().as_str());
        if self.out.write_all(line.as_bytes()).is_ok() && self.out.flush().is_ok() {
            self.size += line.len() as u64;
            self.lost = None;
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Line(t, level, text) => {
                let stamp = self.clock.format(t);
                let line = format!("{stamp} {}: {text}\n", level.as_str());
                if self.size + line.len() as u64 > self.max_size && self.size > 0 {
                    if let Err(e) = self.rotate() {
                        tracing::error!("cannot rotate mail_logs: {e}");
                    }
                }
                if self.lost.is_some() {
                    self.report_lost();
                }
                match self.out.write_all(line.as_bytes()) {
                    Ok(()) => self.size += line.len() as u64,
                    Err(e) => self.lose(t, &e),
                }
            }
            Op::Flush(ack) => {
                let _ = self.out.flush();
                let _ = ack.send(());
            }
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let name = |n: usize| PathBuf::from(format!("{}.{n}", self.path.display()));
        let _ = std::fs::remove_file(name(self.keep));
        for n in (1..self.keep).rev() {
            let _ = std::fs::rename(name(n), name(n + 1));
        }
        std::fs::rename(&self.path, name(1))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.out = BufWriter::with_capacity(64 * 1024, file);
        self.size = 0;
        Ok(())
    }
}

/// Formats timestamps in the appliance's `ctime` form, caching the text of
/// the current second because thousands of lines share it.
#[derive(Default)]
struct Clock {
    second: u64,
    text: String,
}

impl Clock {
    fn format(&mut self, t: SystemTime) -> &str {
        let secs = t
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if secs != self.second || self.text.is_empty() {
            self.second = secs;
            self.text = ctime(secs);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_matches_appliance_form() {
        // The seed's example timestamp.
        assert_eq!(ctime(1_379_084_882), "Fri Sep 13 15:08:02 2013");
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
    }

    #[test]
    fn lines_are_written_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let log = MailLog::open(dir.path(), 4096, 2).unwrap();
        for i in 0..200 {
            log.emit(Event::Queued { mid: i });
        }
        log.flush();
        let current = std::fs::read_to_string(dir.path().join("mail_logs")).unwrap();
        assert!(
            current.lines().all(|l| l.contains(" Info: MID ")),
            "{current}"
        );
        assert!(dir.path().join("mail_logs.1").exists());
        assert!(dir.path().join("mail_logs.2").exists());
        assert!(!dir.path().join("mail_logs.3").exists());
        assert!(current.ends_with("MID 199 queued for delivery\n"));
    }

    /// A full disk (`/dev/full` answers every write with ENOSPC): the lines lost are
    /// counted, and the first line written once there is room says how many, and why.
    #[test]
    fn lines_lost_to_a_full_disk_are_counted_and_reported_once_there_is_room() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mail_logs");
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let mut w = Writer {
            path: path.clone(),
            out: BufWriter::with_capacity(1024, full),
            size: 0,
            max_size: u64::MAX,
            keep: 1,
            clock: Clock::default(),
            lost: None,
        };
        let t = SystemTime::now();
        for i in 0..100 {
            w.apply(Op::Line(
                t,
                Level::Info,
                format!("MID {i} queued for delivery"),
            ));
        }
        let lost = w.lost.as_ref().map_or(0, |l| l.lines);
        assert!(lost > 0, "no line counted as lost");
        // Room again: the report, then the new line (what was still buffered for /dev/full went with it).
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        w.out = BufWriter::with_capacity(1024, file);
        w.apply(Op::Line(t, Level::Info, "after the disk was freed".into()));
        w.out.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let warning = format!(
            " Warning: {lost} lines could not be written to {} between ",
            path.display()
        );
        assert!(text.contains(&warning), "{text}");
        assert!(text.contains("No space left on device"), "{text}");
        assert!(
            text.ends_with(" Info: after the disk was freed\n"),
            "{text}"
        );
        assert!(w.lost.is_none());
    }
}
