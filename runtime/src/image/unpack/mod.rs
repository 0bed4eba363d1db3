//! Safe unpacking of one layer (a tar stream, gzip, zstd or plain) into a snapshot directory,
//! in the form overlayfs reads as a lower layer. The pieces: `decompress` (compression and
//! hashing readers), `extract` (one function per tar entry type), `paths` (every component
//! resolved from a directory fd of the root, never through a symlink), `whiteouts` (overlayfs's
//! markers), `dirs` (directories a layer does not list), `measure` (disk usage).
//! Touches only the directory it is given.
//!
//! Bounded against hostile layers: paths are at most PATH_MAX and MAX_DEPTH components, each
//! directory is recorded once (a parent and a name), GNU sparse files keep their holes, and a
//! layer past [`Limits`] (uncompressed bytes, entries) fails.

mod decompress;
mod dirs;
mod extract;
mod measure;
mod paths;
mod whiteouts;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use rustix::fs::{self as rfs, Timestamps};
use rustix::io::Errno;

pub use decompress::{decompress, sniff, Compression, Hashing};
pub use dirs::{inherit_implicit_dirs, DirTree};
pub use extract::{extract, extract_limited};
pub use measure::measure;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {entry:?} escapes the snapshot root: {reason}")]
    Escape { entry: String, reason: String },
    #[error("layer entry {entry:?}: cannot {what}: {source}")]
    Io { entry: String, what: &'static str, source: io::Error },
    #[error("layer is not a valid {format} stream: {detail}")]
    Corrupt { format: &'static str, detail: String },
    #[error("cannot open snapshot directory {path}: {source}")]
    Root { path: PathBuf, source: io::Error },
    #[error("layer entry {entry:?}: {reason}")]
    LowerConflict { entry: String, reason: String },
    #[error("layer entry {entry:?} is {what}, which lockstep cannot unpack (a kind of entry it does not know)")]
    Unsupported { entry: String, what: String },
    #[error("layer refused: {detail}")]
    Limit { detail: String },
}

/// The most components a layer's path may have (PATH_MAX alone would allow 2,048).
pub const MAX_DEPTH: usize = 1024;

/// What one layer may cost; past either, its pull fails and nothing of it is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the uncompressed stream (the tar), which bounds what its files can hold.
    pub max_bytes: u64,
    /// Entries, the directories the layer does not list but needs counted too.
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: crate::config::DEFAULT_MAX_LAYER_BYTES,
            max_entries: crate::config::DEFAULT_MAX_LAYER_ENTRIES,
        }
    }
}

/// An entry's name for a message: long ones cut (a hostile name can be megabytes).
pub(crate) fn short(name: &str) -> String {
    match name.char_indices().nth(120) {
        Some((cut, _)) => format!("{}… ({} bytes)", &name[..cut], name.len()),
        None => name.to_string(),
    }
}

/// What a snapshot holds, for ImageFsInfo.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// What an extraction made: its usage, and its directories, among them those it had to
/// create because the layer holds entries below them but not them (their attributes belong to
/// the lower layers, see [`inherit_implicit_dirs`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    pub usage: Usage,
    pub dirs: DirTree,
    /// Whether the layer lists its root (`./`); if not, the root is implicit too.
    pub root_listed: bool,
}

pub(crate) fn io_err(entry: &str, what: &'static str, e: Errno) -> UnpackError {
    UnpackError::Io { entry: entry.to_string(), what, source: e.into() }
}

pub(crate) fn times(mtime: i64, nsec: i64) -> Timestamps {
    let t = rfs::Timespec { tv_sec: mtime, tv_nsec: nsec as _ };
    Timestamps { last_access: t, last_modification: t }
}
