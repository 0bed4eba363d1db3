//! The CRI log format that the kubelet reads (pkg/kubelet/kuberuntime/logs):
//! `<RFC3339Nano timestamp> <stdout|stderr> <P|F> <content>\n`, F for a full line, P for a
//! piece of a longer line (cut at the maximum line size, or the unterminated tail at EOF).
//! One writer is shared by the container's streams and reopened on request (the kubelet
//! renames the file, then asks for a reopen): every entry goes whole into one file or the
//! other, never lost. Touches only the log file and its directory.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The kubelet's and containerd's default maximum line size: longer lines are split into P
/// entries of this size.
pub const DEFAULT_MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The container's log file, shared by its streams; or nowhere, when the container has no
/// log path (its output is read and dropped).
#[derive(Debug)]
pub struct CriLog {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

impl CriLog {
    /// Opens (appending) or creates the log at `path`, creating its directories.
    pub fn open(path: &Path) -> std::io::Result<CriLog> {
        Ok(CriLog { path: Some(path.to_path_buf()), file: Mutex::new(Some(open_log(path)?)) })
    }

    /// A log that keeps nothing.
    pub fn discard() -> CriLog {
        CriLog { path: None, file: Mutex::new(None) }
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Appends one entry with one write, so streams never interleave inside an entry.
    pub fn write_entry(&self, stream: Stream, partial: bool, content: &[u8], at: SystemTime) -> std::io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match file.as_mut() {
            Some(file) => file.write_all(&format_entry(stream, partial, content, at)),
            None => Ok(()),
        }
    }

    /// Opens the path again (a new file when the old one was renamed away); entries written
    /// before went to the old file, entries after go to the new one.
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        let fresh = open_log(path)?;
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        *file = Some(fresh);
        Ok(())
    }
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).mode(0o640).open(path)
}

/// One CRI log entry, newline included.
pub fn format_entry(stream: Stream, partial: bool, content: &[u8], at: SystemTime) -> Vec<u8> {
    let mut entry = Vec::with_capacity(content.len() + 48);
    entry.extend_from_slice(rfc3339_nano(at).as_bytes());
    entry.push(b' ');
    entry.extend_from_slice(stream.name().as_bytes());
    entry.extend_from_slice(if partial { b" P " } else { b" F " });
    entry.extend_from_slice(content);
    entry.push(b'\n');
    entry
}

/// Cuts a byte stream into log entries: full lines (without their newline) and, for lines
/// longer than `max`, pieces of `max` bytes marked partial.
#[derive(Debug)]
pub struct LineSplitter {
    pending: Vec<u8>,
    max: usize,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        LineSplitter { pending: Vec::new(), max: max.max(1) }
    }

    /// Feeds `data`; calls `emit(content, partial)` for each entry that is complete.
    pub fn push(&mut self, mut data: &[u8], emit: &mut impl FnMut(&[u8], bool)) {
        while !data.is_empty() {
            let room = self.max - self.pending.len();
            let window = &data[..data.len().min(room)];
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    if self.pending.is_empty() {
                        emit(&window[..i], false);
                    } else {
                        self.pending.extend_from_slice(&window[..i]);
                        emit(&self.pending, false);
                        self.pending.clear();
                    }
                    data = &data[i + 1..];
                }
                None => {
                    self.pending.extend_from_slice(window);
                    data = &data[window.len()..];
                    if self.pending.len() == self.max {
                        emit(&self.pending, true);
                        self.pending.clear();
                    }
                }
            }
        }
    }

    /// The stream ended: an unterminated tail is emitted as a partial entry (the kubelet then
    /// shows it without adding a newline).
    pub fn finish(&mut self, emit: &mut impl FnMut(&[u8], bool)) {
        if !self.pending.is_empty() {
            emit(&self.pending, true);
            self.pending.clear();
        }
    }
}

/// Go's RFC3339Nano layout in UTC with all nine digits, e.g. `2026-11-28T09:44:04.030151164Z`.
pub fn rfc3339_nano(at: SystemTime) -> String {
    let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_nanos()
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn split(max: usize, chunks: &[&[u8]]) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        let mut splitter = LineSplitter::new(max);
        let mut emit = |c: &[u8], p: bool| out.push((String::from_utf8_lossy(c).into_owned(), p));
        for chunk in chunks {
            splitter.push(chunk, &mut emit);
        }
        splitter.finish(&mut emit);
        out
    }

    fn entries(pairs: &[(&str, bool)]) -> Vec<(String, bool)> {
        pairs.iter().map(|(s, p)| (s.to_string(), *p)).collect()
    }

    #[test]
    fn full_lines_across_chunks() {
        assert_eq!(
            split(100, &[b"one\ntw", b"o\n\nthree\n"]),
            entries(&[("one", false), ("two", false), ("", false), ("three", false)])
        );
    }

    #[test]
    fn long_lines_are_cut_into_partial_pieces_then_a_full_end() {
        assert_eq!(
            split(4, &[b"abcdefghij\nxy"]),
            entries(&[("abcd", true), ("efgh", true), ("ij", false), ("xy", true)])
        );
        // A line of exactly the maximum: one partial piece, then an empty full end.
        assert_eq!(split(4, &[b"abcd\n"]), entries(&[("abcd", true), ("", false)]));
    }

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_795_858_244, 30_151_164);
        assert_eq!(rfc3339_nano(at), "2026-11-28T09:30:44.030151164Z");
        assert_eq!(rfc3339_nano(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339_nano(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn an_entry_is_what_the_kubelet_parses() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1, 5);
        let entry = format_entry(Stream::Stderr, true, b"half a line", at);
        assert_eq!(entry, b"1970-01-01T00:00:01.000000005Z stderr P half a line\n");
    }

    #[test]
    fn reopen_after_a_rename_loses_no_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("pod/c/0.log");
        let log = CriLog::open(&path).unwrap();
        log.write_entry(Stream::Stdout, false, b"before", SystemTime::now()).unwrap();
        std::fs::rename(&path, tmp.path().join("pod/c/0.log.rotated")).unwrap();
        log.write_entry(Stream::Stdout, false, b"between", SystemTime::now()).unwrap();
        log.reopen().unwrap();
        log.write_entry(Stream::Stdout, false, b"after", SystemTime::now()).unwrap();
        let old = std::fs::read_to_string(tmp.path().join("pod/c/0.log.rotated")).unwrap();
        let new = std::fs::read_to_string(&path).unwrap();
        assert!(old.contains("F before\n") && old.contains("F between\n") && !old.contains("after"));
        assert!(new.ends_with("stdout F after\n") && new.lines().count() == 1, "{new}");
    }
}
