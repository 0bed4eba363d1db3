//! Safe extraction of one layer (a tar stream, gzip, zstd or plain) into a snapshot directory,
//! in the form overlayfs reads as a lower layer: `.wh.x` becomes a 0:0 character device,
//! `.wh..wh..opq` the xattr trusted.overlay.opaque=y. Every path component is resolved here,
//! from a directory fd of the root, never following a symlink: `..`, absolute paths and writes
//! through symlinked parents fail the layer. Touches only the directory it is given.
//!
//! Bounded against hostile layers: paths are at most PATH_MAX and MAX_DEPTH components, each
//! directory is recorded once (a parent and a name), GNU sparse files keep their holes, and a
//! layer past [`Limits`] (uncompressed bytes, entries) fails.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timestamps, XattrFlags};
use rustix::io::Errno;
use sha2::Digest as _;

use super::tarstream::{self, Counted, TarEntry, TarError, TarReader};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs's own attributes: only the unpacker sets one (opaque), never a layer.
const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

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
        Limits { max_bytes: 64 << 30, max_entries: 4 << 20 }
    }
}

/// An entry's name for a message: long ones cut (a hostile name can be megabytes).
fn short(name: &str) -> String {
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

/// The directories of a layer, each recorded once as its parent and its name: a path `depth`
/// components deep costs `depth` small records, not `depth` copies of ever longer paths.
/// Node 0 is the root; a parent always comes before its children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirTree {
    nodes: Vec<DirNode>,
    index: HashMap<(u32, Box<str>), u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct DirNode {
    parent: u32,
    name: Box<str>,
    /// The layer lists it: the times to give it once its children are in.
    mtime: Option<i64>,
    /// Made because an entry lies below it, not listed (last made that way).
    implicit: bool,
}

impl Default for DirTree {
    fn default() -> Self {
        let root = DirNode { parent: 0, name: "".into(), mtime: None, implicit: false };
        DirTree { nodes: vec![root], index: HashMap::new() }
    }
}

impl DirTree {
    /// The node of `name` under `parent`, recorded now if new.
    fn child(&mut self, parent: u32, name: &str) -> u32 {
        let key = (parent, Box::<str>::from(name));
        if let Some(&id) = self.index.get(&key) {
            return id;
        }
        let id = self.nodes.len() as u32;
        self.nodes.push(DirNode { parent, name: key.1.clone(), mtime: None, implicit: false });
        self.index.insert(key, id);
        id
    }

    fn node_of(&mut self, components: &[String]) -> u32 {
        components.iter().fold(0, |node, name| self.child(node, name))
    }

    /// The components of a node's path below the root.
    fn path(&self, mut id: u32) -> Vec<String> {
        let mut out = Vec::new();
        while id != 0 {
            let node = &self.nodes[id as usize];
            out.push(node.name.to_string());
            id = node.parent;
        }
        out.reverse();
        out
    }

    /// How many directories the layer does not list.
    pub fn implicit_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.implicit).count()
    }
}

/// The compression of a layer stream, by its first bytes (media types are often wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::None => "tar",
        }
    }
}

pub fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct Hashing<R> {
    inner: R,
    hasher: sha2::Sha256,
    count: u64,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing { inner, hasher: sha2::Sha256::new(), count: 0 }
    }
    pub fn finish(self) -> (crate::image::reference::Digest, u64, R) {
        (crate::image::reference::Digest::from_sha256(&self.hasher.finalize()), self.count, self.inner)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Tags errors of the decompressor so a truncated or corrupt stream says which format failed.
struct Tagged<R> {
    inner: R,
    format: &'static str,
}

impl<R: Read> Read for Tagged<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .map_err(|e| io::Error::new(e.kind(), format!("corrupt or truncated {} stream: {e}", self.format)))
    }
}

/// A zstd stream of any number of frames (zstd:chunked layers have many), skippable frames
/// skipped, to the end of its input.
struct ZstdFrames<R> {
    source: R,
    decoder: ruzstd::decoding::FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdFrames<R> {
    fn new(source: R) -> Self {
        ZstdFrames { source, decoder: ruzstd::decoding::FrameDecoder::new(), in_frame: false }
    }

    /// Starts the next frame; false at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.decoder.init(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame { length, .. })) => {
                    let skipped = io::copy(&mut (&mut self.source).take(u64::from(length)), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "a skippable frame is cut short"));
                    }
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.decoder.can_collect() < buf.len() && !self.decoder.is_finished() {
                let wanted = buf.len() - self.decoder.can_collect();
                self.decoder
                    .decode_blocks(&mut self.source, ruzstd::decoding::BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(io::Error::other)?;
            }
            let n = self.decoder.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            if self.decoder.is_finished() {
                self.in_frame = false;
            }
        }
    }
}

/// The uncompressed tar stream of a layer, whatever its compression.
pub fn decompress<'a, R: Read + 'a>(compressed: R) -> Result<(Compression, Box<dyn Read + 'a>), UnpackError> {
    let mut buffered = BufReader::with_capacity(128 * 1024, compressed);
    let head = buffered.fill_buf().map_err(|e| UnpackError::Corrupt { format: "layer", detail: e.to_string() })?;
    let kind = sniff(head);
    let reader: Box<dyn Read + 'a> = match kind {
        Compression::Gzip => Box::new(Tagged { inner: flate2::read::MultiGzDecoder::new(buffered), format: "gzip" }),
        Compression::Zstd => Box::new(Tagged { inner: ZstdFrames::new(buffered), format: "zstd" }),
        Compression::None => Box::new(buffered),
    };
    Ok((kind, reader))
}

/// Extracts the tar stream into `root` (an existing, empty directory) and reads the stream
/// to its very end, so that a hashing reader below sees every byte. Default [`Limits`].
pub fn extract<R: Read>(tar: R, root: &Path) -> Result<(Extracted, R), UnpackError> {
    extract_limited(tar, root, &Limits::default())
}

/// [`extract`] within `limits`.
pub fn extract_limited<R: Read>(tar: R, root: &Path, limits: &Limits) -> Result<(Extracted, R), UnpackError> {
    let root_fd =
        rfs::open(root, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| UnpackError::Root { path: root.into(), source: e.into() })?;
    let mut reader = TarReader::new(Counted::new(tar, limits.max_bytes));
    let mut state = State::default();
    let mut entries = 0u64;
    while let Some(entry) = reader.next_entry().map_err(tar_error)? {
        extract_entry(&root_fd, &entry, &mut reader, &mut state)?;
        entries += 1;
        if entries + state.parents.made > limits.max_entries {
            return Err(UnpackError::Limit {
                detail: format!(
                    "the layer has more than {} entries (the image.max_layer_entries limit)",
                    limits.max_entries
                ),
            });
        }
    }
    // Children changed their directories' times: set those last (children before parents,
    // though no order is needed once every entry is in).
    let State { usage, mut dirs, parents: _, root_listed } = state;
    for id in (0..dirs.nodes.len()).rev() {
        let Some(mtime) = dirs.nodes[id].mtime else { continue };
        let components = dirs.path(id as u32);
        // A directory a later entry replaced (or removed) keeps no times: skip it.
        let Ok(fd) = open_dir_nofollow_at(&root_fd, &components) else { continue };
        let entry = short(&components.join("/"));
        rfs::futimens(&fd, &times(mtime, 0)).map_err(|e| io_err(&entry, "set directory times", e))?;
    }
    dirs.index = HashMap::new();
    let mut rest = reader.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(|e| tar_error(TarError::Io(e)))?;
    Ok((Extracted { usage, dirs, root_listed }, rest.into_inner()))
}

fn tar_error(e: TarError) -> UnpackError {
    match e {
        TarError::Io(e) => match tarstream::limit_of(&e) {
            Some(max) => tar_error(TarError::TooLarge { max }),
            None => UnpackError::Corrupt { format: "tar", detail: e.to_string() },
        },
        TarError::Corrupt(detail) => UnpackError::Corrupt { format: "tar", detail },
        e @ (TarError::TooLong { .. } | TarError::TooLarge { .. }) => UnpackError::Limit { detail: e.to_string() },
    }
}

/// What extraction keeps between entries.
#[derive(Default)]
struct State {
    usage: Usage,
    dirs: DirTree,
    parents: ParentCache,
    root_listed: bool,
}

fn io_err(entry: &str, what: &'static str, e: Errno) -> UnpackError {
    UnpackError::Io { entry: entry.to_string(), what, source: e.into() }
}

fn times(mtime: i64, nsec: i64) -> Timestamps {
    let t = rfs::Timespec { tv_sec: mtime, tv_nsec: nsec as _ };
    Timestamps { last_access: t, last_modification: t }
}

/// The entry's path as components below the root; `..` and absolute paths are refused.
fn components(entry: &str, path: &Path) -> Result<Vec<String>, UnpackError> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => match part.to_str() {
                Some(s) => out.push(s.to_string()),
                None => {
                    use std::os::unix::ffi::OsStrExt as _;
                    out.push(String::from_utf8_lossy(part.as_bytes()).into_owned());
                    if out.last().is_some_and(|s| s.contains('\u{fffd}')) {
                        return Err(UnpackError::Io {
                            entry: entry.into(),
                            what: "use a path that is not UTF-8",
                            source: io::Error::from(io::ErrorKind::InvalidData),
                        });
                    }
                }
            },
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape { entry: entry.into(), reason: "the path contains `..`".into() })
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Escape { entry: entry.into(), reason: "the path is absolute".into() })
            }
        }
        if out.len() > MAX_DEPTH {
            return Err(UnpackError::Limit {
                detail: format!("layer entry {:?} is more than {MAX_DEPTH} directories deep", short(entry)),
            });
        }
    }
    Ok(out)
}

/// The last parent directory opened, reused while entries stay in one directory; and how many
/// directories it had to create.
#[derive(Default)]
struct ParentCache {
    key: Vec<String>,
    fd: Option<OwnedFd>,
    made: u64,
}

impl ParentCache {
    /// Opens the directory `components` below the root, one component at a time with
    /// O_NOFOLLOW: a symlink anywhere on the way is an escape. With `dirs`, what is missing is
    /// created and recorded there as implicit; without, it is an error.
    fn open(
        &mut self,
        root: &OwnedFd,
        components: &[String],
        entry: &str,
        mut dirs: Option<&mut DirTree>,
    ) -> Result<&OwnedFd, UnpackError> {
        if self.fd.is_none() || self.key != components {
            self.fd = None;
            let mut current: Option<OwnedFd> = None;
            let mut node = 0u32;
            for name in components {
                let dir = current.as_ref().map_or(root.as_fd(), |f| f.as_fd());
                if let Some(dirs) = dirs.as_deref_mut() {
                    node = dirs.child(node, name);
                }
                let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
                let opened = match rfs::openat(dir, name.as_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) if dirs.is_some() => {
                        match rfs::mkdirat(dir, name.as_str(), Mode::from_raw_mode(0o755)) {
                            Ok(()) => {
                                if let Some(dirs) = dirs.as_deref_mut() {
                                    let made = &mut dirs.nodes[node as usize];
                                    (made.implicit, made.mtime) = (true, None);
                                }
                                self.made += 1;
                            }
                            Err(Errno::EXIST) => {}
                            Err(e) => return Err(io_err(entry, "create a parent directory", e)),
                        }
                        rfs::openat(dir, name.as_str(), flags, Mode::empty())
                            .map_err(|e| io_err(entry, "open a parent directory", e))?
                    }
                    Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                        let st = rfs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| io_err(entry, "inspect a parent", e))?;
                        let reason = if FileType::from_raw_mode(st.st_mode) == FileType::Symlink {
                            format!("its parent {name:?} is a symlink")
                        } else {
                            format!("its parent {name:?} is not a directory")
                        };
                        return Err(UnpackError::Escape { entry: entry.into(), reason });
                    }
                    Err(e) => return Err(io_err(entry, "open a parent directory", e)),
                };
                current = Some(opened);
            }
            let fd = match current {
                Some(fd) => fd,
                None => rfs::openat(root, ".", OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| io_err(entry, "open the root", e))?,
            };
            self.key = components.to_vec();
            self.fd = Some(fd);
        }
        self.fd.as_ref().ok_or_else(|| io_err(entry, "open a parent directory", Errno::NOENT))
    }
}

/// Removes whatever sits at `name` (a directory with its contents), so the entry (not a
/// directory: those merge) can take its place. Later entries win, as in tar extraction.
fn clear(parent: &OwnedFd, name: &str, entry: &str) -> Result<(), UnpackError> {
    remove_any(parent, name, entry)
}

/// Reading a member's data failed: the stream (corrupt, cut short, over the byte limit) or the
/// write.
fn data_error(entry: &str, what: &'static str, e: io::Error) -> UnpackError {
    if let Some(max) = tarstream::limit_of(&e) {
        return tar_error(TarError::TooLarge { max });
    }
    if e.kind() == io::ErrorKind::UnexpectedEof || e.to_string().contains("stream") {
        UnpackError::Corrupt { format: "layer", detail: e.to_string() }
    } else {
        UnpackError::Io { entry: entry.to_string(), what, source: e }
    }
}

fn extract_entry<R: Read>(
    root: &OwnedFd,
    entry: &TarEntry,
    reader: &mut TarReader<R>,
    state: &mut State,
) -> Result<(), UnpackError> {
    use std::os::unix::ffi::OsStrExt as _;
    let State { usage, dirs, parents, root_listed } = state;
    let corrupt = |e: io::Error| UnpackError::Corrupt { format: "tar", detail: e.to_string() };
    let raw_path = Path::new(std::ffi::OsStr::from_bytes(&entry.path));
    let name_text = short(&raw_path.display().to_string());
    let path = components(&name_text, raw_path)?;
    let header = &entry.header;
    let kind = header.entry_type();
    let link_name =
        || {
            entry.link.as_deref().map(|l| PathBuf::from(std::ffi::OsStr::from_bytes(l))).ok_or_else(|| {
                UnpackError::Corrupt { format: "tar", detail: format!("link {name_text:?} has no target") }
            })
        };
    // Extended attributes and large ids from PAX records.
    let mut xattrs = Vec::new();
    let (mut uid, mut gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
    if let Some(pax) = entry.pax_records() {
        for ext in pax {
            let ext = ext.map_err(corrupt)?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name.starts_with(OVERLAY_XATTR_PREFIX) {
                    // overlayfs's own (redirect, opaque, metacopy…): only the unpacker sets them.
                    tracing::debug!(entry = %name_text, xattr = name, "dropping an overlayfs attribute the layer sets");
                    continue;
                }
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            } else if key.starts_with("GNU.sparse.") {
                // PAX sparse formats (0.0, 0.1, 1.0): the entry's data is a map then the pieces.
                return Err(UnpackError::Unsupported {
                    entry: name_text,
                    what: "a PAX sparse file (GNU.sparse.* records)".into(),
                });
            } else if key == "uid" {
                uid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
            } else if key == "gid" {
                gid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
            }
        }
    }
    let mode = Mode::from_raw_mode(header.mode().map_err(corrupt)? & 0o7777);
    let mtime = header.mtime().unwrap_or(0) as i64;
    let owner = (Some(rfs::Uid::from_raw(uid as u32)), Some(rfs::Gid::from_raw(gid as u32)));

    let Some((leaf, parent_path)) = path.split_last() else {
        // The root itself ("./"): its attributes apply to the snapshot directory.
        if kind.is_dir() {
            rfs::fchown(root, owner.0, owner.1).map_err(|e| io_err(&name_text, "chown", e))?;
            rfs::fchmod(root, mode).map_err(|e| io_err(&name_text, "chmod", e))?;
            dirs.nodes[0].mtime = Some(mtime);
            *root_listed = true;
        }
        return Ok(());
    };
    let parent = parents.open(root, parent_path, &name_text, Some(dirs))?;

    if leaf == OPAQUE_MARKER {
        return rfs::fsetxattr(parent, OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| io_err(&name_text, "mark a directory opaque", e));
    }
    if let Some(hidden) = leaf.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(UnpackError::Escape { entry: name_text, reason: "a whiteout names no file".into() });
        }
        remove_any(parent, hidden, &name_text)?;
        rfs::mknodat(parent, hidden, FileType::CharacterDevice, Mode::empty(), rfs::makedev(0, 0))
            .map_err(|e| io_err(&name_text, "create a whiteout", e))?;
        usage.inodes += 1;
        return Ok(());
    }

    let leaf = leaf.as_str();
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    match kind {
        tar::EntryType::Directory => {
            match rfs::statat(parent, leaf, nofollow) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
                _ => {
                    clear(parent, leaf, &name_text)?;
                    rfs::mkdirat(parent, leaf, mode).map_err(|e| io_err(&name_text, "create directory", e))?;
                    usage.inodes += 1;
                }
            }
            let fd = rfs::openat(
                parent,
                leaf,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )
            .map_err(|e| io_err(&name_text, "open directory", e))?;
            rfs::fchown(&fd, owner.0, owner.1).map_err(|e| io_err(&name_text, "chown", e))?;
            rfs::fchmod(&fd, mode).map_err(|e| io_err(&name_text, "chmod", e))?;
            set_xattrs(&fd, &xattrs, &name_text)?;
            let node = dirs.node_of(&path);
            let listed = &mut dirs.nodes[node as usize];
            (listed.implicit, listed.mtime) = (false, Some(mtime));
        }
        // A GNU sparse file's pieces go where its map says; the holes stay holes.
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            clear(parent, leaf, &name_text)?;
            let fd = rfs::openat(
                parent,
                leaf,
                OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| io_err(&name_text, "create file", e))?;
            let mut file = std::fs::File::from(fd);
            let written = match &entry.sparse {
                None => io::copy(&mut reader.data(), &mut file).map_err(|e| data_error(&name_text, "write file", e))?,
                Some(sparse) => {
                    for &(offset, length) in &sparse.pieces {
                        file.seek(SeekFrom::Start(offset)).map_err(|e| UnpackError::Io {
                            entry: name_text.clone(),
                            what: "seek in file",
                            source: e,
                        })?;
                        let copied = io::copy(&mut reader.data().take(length), &mut file)
                            .map_err(|e| data_error(&name_text, "write file", e))?;
                        if copied != length {
                            return Err(UnpackError::Corrupt {
                                format: "tar",
                                detail: format!("sparse file {name_text:?} is cut short"),
                            });
                        }
                    }
                    file.set_len(sparse.real_size).map_err(|e| UnpackError::Io {
                        entry: name_text.clone(),
                        what: "size sparse file",
                        source: e,
                    })?;
                    entry.size
                }
            };
            rfs::fchown(&file, owner.0, owner.1).map_err(|e| io_err(&name_text, "chown", e))?;
            rfs::fchmod(&file, mode).map_err(|e| io_err(&name_text, "chmod", e))?;
            set_xattrs(&file, &xattrs, &name_text)?;
            rfs::futimens(&file, &times(mtime, 0)).map_err(|e| io_err(&name_text, "set times", e))?;
            usage.bytes += written;
            usage.inodes += 1;
        }
        tar::EntryType::Symlink => {
            let target = link_name()?;
            clear(parent, leaf, &name_text)?;
            rfs::symlinkat(target.as_path(), parent, leaf).map_err(|e| io_err(&name_text, "create symlink", e))?;
            rfs::chownat(parent, leaf, owner.0, owner.1, nofollow)
                .map_err(|e| io_err(&name_text, "chown symlink", e))?;
            rfs::utimensat(parent, leaf, &times(mtime, 0), nofollow)
                .map_err(|e| io_err(&name_text, "set symlink times", e))?;
            usage.inodes += 1;
        }
        tar::EntryType::Link => {
            let target = link_name()?;
            let target_text = target.display().to_string();
            let target_path = components(&name_text, &target).map_err(|e| match e {
                UnpackError::Escape { reason, .. } => UnpackError::Escape {
                    entry: name_text.clone(),
                    reason: format!("its hardlink target {target_text:?}: {reason}"),
                },
                other => other,
            })?;
            let Some((target_leaf, target_parent)) = target_path.split_last() else {
                return Err(UnpackError::Escape { entry: name_text, reason: "a hardlink to the root".into() });
            };
            // Open the target's directory with the same checks (a second cache, so the entry's
            // parent stays open).
            let mut target_dirs = ParentCache::default();
            let target_dir = target_dirs.open(root, target_parent, &name_text, None)?;
            clear(parent, leaf, &name_text)?;
            rfs::linkat(target_dir, target_leaf.as_str(), parent, leaf, AtFlags::empty())
                .map_err(|e| io_err(&name_text, "create hardlink", e))?;
        }
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            let file_type = match kind {
                tar::EntryType::Char => FileType::CharacterDevice,
                tar::EntryType::Block => FileType::BlockDevice,
                _ => FileType::Fifo,
            };
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            clear(parent, leaf, &name_text)?;
            rfs::mknodat(parent, leaf, file_type, mode, rfs::makedev(major, minor))
                .map_err(|e| io_err(&name_text, "create device node", e))?;
            rfs::chownat(parent, leaf, owner.0, owner.1, nofollow).map_err(|e| io_err(&name_text, "chown", e))?;
            // mknod applied the umask; the node was made just now in a directory only root
            // writes to, so the path names it.
            rfs::chmodat(parent, leaf, mode, AtFlags::empty()).map_err(|e| io_err(&name_text, "chmod", e))?;
            rfs::utimensat(parent, leaf, &times(mtime, 0), nofollow).map_err(|e| io_err(&name_text, "set times", e))?;
            usage.inodes += 1;
        }
        // The tar reader folds these into their member; none reaches here.
        tar::EntryType::XGlobalHeader
        | tar::EntryType::XHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => {}
        other => {
            return Err(UnpackError::Unsupported {
                entry: name_text,
                what: format!("an entry of kind {:?} ({:?})", other, other.as_byte() as char),
            });
        }
    }
    Ok(())
}

/// Removes a file or a whole directory tree at `name` (a whiteout in the same layer), of any
/// depth with a bounded number of open files.
fn remove_any(parent: &OwnedFd, name: &str, entry: &str) -> Result<(), UnpackError> {
    crate::fstree::remove_tree_at(parent.as_fd(), std::ffi::OsStr::new(name)).map_err(|source| UnpackError::Io {
        entry: entry.to_string(),
        what: "remove what it replaces",
        source,
    })
}

fn set_xattrs(fd: &impl AsFd, xattrs: &[(String, Vec<u8>)], entry: &str) -> Result<(), UnpackError> {
    for (name, value) in xattrs {
        match rfs::fsetxattr(fd, name.as_str(), value, XattrFlags::empty()) {
            Ok(()) => {}
            // A filesystem without xattrs of that namespace: skip, as tar and containerd do.
            Err(Errno::NOTSUP) => tracing::debug!(entry, xattr = %name, "xattr not supported here"),
            Err(e) => return Err(io_err(entry, "set an extended attribute", e)),
        }
    }
    Ok(())
}

/// What the layers below show at a path, as overlayfs merges them.
enum Below {
    /// A directory, in this layer's root, at these components.
    Dir(PathBuf),
    /// Nothing (absent, whited out, or hidden by an opaque directory).
    Absent,
    /// Something that is not a directory: a file or a symlink.
    NotDir(FileType),
}

/// Opens `components` below `root`, one at a time, never following a symlink.
fn open_dir_nofollow(root: &Path, components: &[String]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rfs::open(root, flags, Mode::empty())?;
    open_dir_nofollow_at(&fd, components)
}

fn open_dir_nofollow_at(root: &OwnedFd, components: &[String]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd = rfs::openat(root, ".", flags, Mode::empty())?;
    for c in components {
        fd = rfs::openat(&fd, c.as_str(), flags, Mode::empty())?;
    }
    Ok(fd)
}

fn is_whiteout(st: &rfs::Stat) -> bool {
    FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice && st.st_rdev == 0
}

fn is_opaque(dir: &OwnedFd) -> bool {
    let mut value = [0u8; 4];
    matches!(rfs::fgetxattr(dir, OPAQUE_XATTR, &mut value[..]), Ok(1) if value[0] == b'y')
}

/// What `lowers` (snapshot roots, topmost first) show at `path`, by overlayfs's rules: the
/// topmost layer that has it decides; a whiteout or a non-directory on the way, or an opaque
/// directory above it in a layer that lacks it, hides the layers below.
fn below(lowers: &[PathBuf], path: &[String]) -> Result<Below, Errno> {
    for layer in lowers {
        let mut dir = open_dir_nofollow(layer, &[])?;
        let mut opaque_above = false;
        for (depth, name) in path.iter().enumerate() {
            let st = match rfs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => break,
                Err(e) => return Err(e),
            };
            let last = depth + 1 == path.len();
            let kind = FileType::from_raw_mode(st.st_mode);
            if is_whiteout(&st) {
                return Ok(Below::Absent);
            }
            if kind != FileType::Directory {
                return Ok(if last { Below::NotDir(kind) } else { Below::Absent });
            }
            if last {
                return Ok(Below::Dir(layer.join(path.join("/"))));
            }
            dir = rfs::openat(
                &dir,
                name.as_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            opaque_above |= is_opaque(&dir);
        }
        if opaque_above {
            return Ok(Below::Absent);
        }
    }
    Ok(Below::Absent)
}

/// Gives the directories a layer did not list (`extracted.implicit_dirs`, and its root unless
/// listed) the attributes they have in the layers below (`lowers`, snapshot roots, lowest
/// first): owner, mode, times and extended attributes (not overlayfs's own). Without this a
/// layer holding only `tmp/x` would turn the merged `/tmp` from 1777 into 0755. A path that a
/// lower layer made a file or a symlink fails the layer: lockstep writes through no symlink.
pub fn inherit_implicit_dirs(root: &Path, extracted: &Extracted, lowers: &[PathBuf]) -> Result<(), UnpackError> {
    let top_first: Vec<PathBuf> = lowers.iter().rev().cloned().collect();
    if !extracted.root_listed {
        if let (Some(top), Ok(target)) = (top_first.first(), open_dir_nofollow(root, &[])) {
            let lower = open_dir_nofollow(top, &[]).map_err(|e| io_err("./", "open it below", e))?;
            copy_dir_attributes(&lower, &target, "./")?;
        }
    }
    let nodes = &extracted.dirs.nodes;
    // Absent below: so are its children, which need no look-up (a hostile chain of thousands
    // of implicit directories costs one).
    let mut absent_below = vec![false; nodes.len()];
    for id in 1..nodes.len() {
        let node = &nodes[id];
        if absent_below[node.parent as usize] {
            absent_below[id] = true;
            continue;
        }
        if !node.implicit {
            continue;
        }
        let path = extracted.dirs.path(id as u32);
        let entry = short(&path.join("/"));
        let Ok(target) = open_dir_nofollow(root, &path) else { continue }; // removed or replaced later in the layer
        match below(&top_first, &path).map_err(|e| io_err(&entry, "look it up in the layers below", e))? {
            Below::Absent => absent_below[id] = true,
            Below::NotDir(kind) => {
                let what = if kind == FileType::Symlink { "a symlink" } else { "not a directory" };
                return Err(UnpackError::LowerConflict {
                    entry,
                    reason: format!(
                        "the layer writes below it, and a lower layer made it {what}; lockstep does not write through it"
                    ),
                });
            }
            Below::Dir(dir) => {
                let lower = open_dir_nofollow(&dir, &[]).map_err(|e| io_err(&entry, "open it below", e))?;
                copy_dir_attributes(&lower, &target, &entry)?;
            }
        }
    }
    Ok(())
}

fn copy_dir_attributes(from: &OwnedFd, to: &OwnedFd, entry: &str) -> Result<(), UnpackError> {
    let st = rfs::fstat(from).map_err(|e| io_err(entry, "inspect it below", e))?;
    rfs::fchown(to, Some(rfs::Uid::from_raw(st.st_uid)), Some(rfs::Gid::from_raw(st.st_gid)))
        .map_err(|e| io_err(entry, "chown", e))?;
    rfs::fchmod(to, Mode::from_raw_mode(st.st_mode & 0o7777)).map_err(|e| io_err(entry, "chmod", e))?;
    let mut names = vec![0u8; 64 * 1024];
    let n = match rfs::flistxattr(from, &mut names[..]) {
        Ok(n) => n,
        Err(Errno::NOTSUP) => 0,
        Err(e) => return Err(io_err(entry, "list extended attributes below", e)),
    };
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_XATTR_PREFIX) {
            continue;
        }
        let mut value = vec![0u8; 64 * 1024];
        let len = rfs::fgetxattr(from, name.as_str(), &mut value[..])
            .map_err(|e| io_err(entry, "read an extended attribute below", e))?;
        rfs::fsetxattr(to, name.as_str(), &value[..len], XattrFlags::empty())
            .map_err(|e| io_err(entry, "set an extended attribute", e))?;
    }
    let t = |sec: i64, nsec: u64| rfs::Timespec { tv_sec: sec, tv_nsec: nsec as _ };
    let stamps = Timestamps {
        last_access: t(st.st_atime as i64, st.st_atime_nsec as u64),
        last_modification: t(st.st_mtime as i64, st.st_mtime_nsec as u64),
    };
    rfs::futimens(to, &stamps).map_err(|e| io_err(entry, "set times", e))
}

/// Disk usage of a directory tree (apparent bytes of regular files, and inodes), for trees
/// this module did not write (container layers).
pub fn measure(path: &Path) -> Usage {
    let mut usage = Usage::default();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            usage.inodes += 1;
            if meta.is_dir() {
                stack.push(e.path());
            } else if meta.is_file() {
                usage.bytes += meta.len();
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn header(path: &str, kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(1234);
        h.set_gid(5678);
        h.set_mtime(1_700_000_000);
        // Write the raw name so tests can build paths the builder would refuse.
        let name = &mut h.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        h
    }

    fn layer(entries: &[(&str, tar::EntryType, &[u8], &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = header(path, *kind, data.len() as u64, if kind.is_dir() { 0o750 } else { 0o640 });
            if !link.is_empty() {
                h.set_link_name(link).unwrap();
                h.set_cksum();
            }
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<Usage, UnpackError>) {
        let tmp = tempfile::tempdir().unwrap();
        let r = extract(bytes, tmp.path()).map(|(e, _)| e.usage);
        (tmp, r)
    }

    use tar::EntryType as T;

    #[test]
    fn files_dirs_links_and_owners() {
        let bytes = layer(&[
            ("etc/", T::Directory, b"", ""),
            ("etc/motd", T::Regular, b"hello", ""),
            ("etc/motd2", T::Link, b"", "etc/motd"),
            ("etc/link", T::Symlink, b"", "/etc/motd"),
            ("bin/deep/file", T::Regular, b"x", ""),
            ("dev/null", T::Char, b"", ""),
        ]);
        let (tmp, usage) = unpack(&bytes);
        let usage = usage.unwrap();
        let root = tmp.path();
        assert_eq!(std::fs::read_to_string(root.join("etc/motd")).unwrap(), "hello");
        let meta = std::fs::metadata(root.join("etc/motd")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.permissions().mode() & 0o7777), (1234, 5678, 0o640));
        assert_eq!(meta.nlink(), 2, "hardlinked");
        assert_eq!(meta.mtime(), 1_700_000_000);
        assert_eq!(std::fs::read_link(root.join("etc/link")).unwrap(), Path::new("/etc/motd"));
        let etc = std::fs::metadata(root.join("etc")).unwrap();
        assert_eq!((etc.permissions().mode() & 0o7777, etc.mtime()), (0o750, 1_700_000_000));
        assert!(root.join("bin/deep/file").exists(), "missing parents are created");
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::symlink_metadata(root.join("dev/null")).unwrap().file_type().is_char_device());
        assert_eq!(usage.bytes, 6);
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let bytes = layer(&[
            ("etc/", T::Directory, b"", ""),
            ("etc/.wh.passwd", T::Regular, b"", ""),
            ("var/", T::Directory, b"", ""),
            ("var/.wh..wh..opq", T::Regular, b"", ""),
        ]);
        let (tmp, usage) = unpack(&bytes);
        usage.unwrap();
        let meta = std::fs::symlink_metadata(tmp.path().join("etc/passwd")).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(meta.file_type().is_char_device() && meta.rdev() == 0, "a 0:0 character device");
        assert!(!tmp.path().join("etc/.wh.passwd").exists());
        let mut buf = [0u8; 4];
        let n = rfs::getxattr(tmp.path().join("var"), OPAQUE_XATTR, &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"y");
    }

    #[test]
    fn escapes_are_refused() {
        // Where a broken unpacker would write: beside the root (it sits two levels down, so
        // `..` twice stays inside our temporary directory) or, for absolute paths, in /tmp.
        let marker = format!("/tmp/lockstep-unpack-escape-{}", std::process::id());
        let marker_name = marker.trim_start_matches("/tmp/").to_string();
        for (entries, why) in [
            (vec![("../evil".to_string(), T::Regular, &b"x"[..], String::new())], "`..`"),
            (vec![("a/../../evil".to_string(), T::Regular, &b"x"[..], String::new())], "`..`"),
            (vec![(marker.clone(), T::Regular, &b"x"[..], String::new())], "absolute"),
            (
                vec![
                    ("esc".to_string(), T::Symlink, &b""[..], "/tmp".to_string()),
                    (format!("esc/{marker_name}"), T::Regular, &b"x"[..], String::new()),
                ],
                "symlink",
            ),
            (
                vec![
                    ("esc".to_string(), T::Symlink, &b""[..], "../..".to_string()),
                    ("esc/x/evil".to_string(), T::Directory, &b""[..], String::new()),
                ],
                "symlink",
            ),
            (vec![("hl".to_string(), T::Link, &b""[..], "../../etc/passwd".to_string())], "hardlink target"),
        ] {
            let outer = tempfile::tempdir().unwrap();
            let root = outer.path().join("d1/root");
            std::fs::create_dir_all(&root).unwrap();
            let borrowed: Vec<(&str, T, &[u8], &str)> =
                entries.iter().map(|(p, k, d, l)| (p.as_str(), *k, *d, l.as_str())).collect();
            let bytes = layer(&borrowed);
            let err = extract(&bytes[..], &root).map(|(e, _)| e.usage).unwrap_err();
            let escaped = Path::new(&marker).exists();
            let _ = std::fs::remove_file(&marker);
            assert!(!escaped, "wrote {marker}");
            assert!(matches!(err, UnpackError::Escape { .. }), "{err}");
            assert!(err.to_string().contains(why), "{err}");
            let top: Vec<_> = std::fs::read_dir(outer.path()).unwrap().flatten().map(|e| e.file_name()).collect();
            let beside: Vec<_> =
                std::fs::read_dir(outer.path().join("d1")).unwrap().flatten().map(|e| e.file_name()).collect();
            assert_eq!((top, beside), (vec!["d1".into()], vec!["root".into()]), "nothing beside the root");
        }
    }

    /// A layer that lists `tmp/x` but not `tmp/` must not turn the merged /tmp (1777 below)
    /// into a 0755 directory of the unpack's time: overlayfs shows the topmost directory.
    #[test]
    fn directories_a_layer_does_not_list_keep_their_attributes_from_below() {
        use std::os::unix::fs::MetadataExt;
        let tmp = tempfile::tempdir().unwrap();
        let unpack_at = |name: &str, bytes: &[u8]| {
            let dir = tmp.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let (extracted, _) = extract(bytes, &dir).unwrap();
            (dir, extracted)
        };
        let mut b = tar::Builder::new(Vec::new());
        for (path, mode) in [("./", 0o751), ("tmp/", 0o1777), ("gone/", 0o700), ("hidden/", 0o700), ("lib/", 0o755)] {
            b.append(&header(path, T::Directory, 0, mode), &b""[..]).unwrap();
        }
        let bytes = b.into_inner().unwrap();
        let (base, _) = unpack_at("base", &bytes);
        rfs::setxattr(base.join("tmp"), "user.lockstep", b"kept", XattrFlags::empty()).unwrap();
        rfs::setxattr(base.join("tmp"), OPAQUE_XATTR, b"y", XattrFlags::empty()).unwrap();
        // The middle layer whites out gone/ and makes hidden/ opaque, so nothing of the base's shows there.
        let (middle, middle_extracted) = unpack_at(
            "middle",
            &layer(&[
                (".wh.gone", T::Regular, b"", ""),
                ("hidden/", T::Directory, b"", ""),
                ("hidden/.wh..wh..opq", T::Regular, b"", ""),
            ]),
        );
        inherit_implicit_dirs(&middle, &middle_extracted, std::slice::from_ref(&base)).unwrap();
        let (top, extracted) = unpack_at(
            "top",
            &layer(&[
                ("tmp/x", T::Regular, b"x", ""),
                ("gone/y", T::Regular, b"y", ""),
                ("hidden/sub/z", T::Regular, b"z", ""),
            ]),
        );
        assert!(!extracted.root_listed);
        inherit_implicit_dirs(&top, &extracted, &[base.clone(), middle.clone()]).unwrap();
        let meta = |p: &str| std::fs::symlink_metadata(top.join(p)).unwrap();
        let (t, below) = (meta("tmp"), std::fs::metadata(base.join("tmp")).unwrap());
        assert_eq!(t.mode() & 0o7777, 0o1777, "mode from below");
        assert_eq!((t.uid(), t.gid(), t.mtime()), (1234, 5678, below.mtime()), "owner and times from below");
        let mut value = [0u8; 16];
        let n = rfs::getxattr(top.join("tmp"), "user.lockstep", &mut value[..]).unwrap();
        assert_eq!(&value[..n], b"kept");
        assert!(rfs::getxattr(top.join("tmp"), OPAQUE_XATTR, &mut value[..]).is_err(), "opaque is not inherited");
        assert_eq!(meta("").mode() & 0o7777, 0o751, "an implicit root takes the root's attributes");
        assert_eq!(meta("gone").mode() & 0o7777, 0o755, "whited out below: a new directory");
        assert_eq!(meta("hidden/sub").mode() & 0o7777, 0o755, "under an opaque directory: a new one");
        assert_eq!(meta("hidden").uid(), 1234, "hidden/ itself is the middle layer's");

        // A lower symlink where this layer needs a directory: refused, not shadowed.
        let (linked, _) = unpack_at("linked", &layer(&[("lib2", T::Symlink, b"", "lib")]));
        let (writer, extracted) = unpack_at("writer", &layer(&[("lib2/x", T::Regular, b"x", "")]));
        let err = inherit_implicit_dirs(&writer, &extracted, &[base, linked]).unwrap_err();
        assert!(matches!(err, UnpackError::LowerConflict { .. }) && err.to_string().contains("symlink"), "{err}");
    }

    /// overlayfs reads its own xattrs from lower layers (redirects, opaque markers, metacopy):
    /// a layer must not set them; its other xattrs stay.
    #[test]
    fn layers_cannot_set_overlayfs_attributes() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.redirect", &b"/etc"[..]),
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.user.kept", &b"1"[..]),
        ])
        .unwrap();
        b.append(&header("d/", T::Directory, 0, 0o755), &b""[..]).unwrap();
        let (tmp, usage) = unpack(&b.into_inner().unwrap());
        usage.unwrap();
        let mut value = [0u8; 16];
        for name in ["trusted.overlay.redirect", "trusted.overlay.opaque"] {
            assert!(rfs::getxattr(tmp.path().join("d"), name, &mut value[..]).is_err(), "{name} was set");
        }
        assert_eq!(rfs::getxattr(tmp.path().join("d"), "user.kept", &mut value[..]).unwrap(), 1);
    }

    /// The mode a layer gives a device node or a FIFO is the mode it gets, whatever the umask.
    #[test]
    fn device_and_fifo_modes_are_kept_whole() {
        let mut b = tar::Builder::new(Vec::new());
        let mut null = header("null", T::Char, 0, 0o666);
        null.set_device_major(1).unwrap();
        null.set_device_minor(3).unwrap();
        null.set_cksum();
        b.append(&null, &b""[..]).unwrap();
        b.append(&header("pipe", T::Fifo, 0, 0o666), &b""[..]).unwrap();
        let (tmp, usage) = unpack(&b.into_inner().unwrap());
        usage.unwrap();
        for name in ["null", "pipe"] {
            let meta = std::fs::symlink_metadata(tmp.path().join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o7777, 0o666, "{name}");
            assert_eq!((meta.uid(), meta.gid()), (1234, 5678), "{name}");
        }
    }

    /// Later entries win, as tar extraction does: a directory replaced by a file or a symlink
    /// in the same layer goes with its contents.
    #[test]
    fn a_later_entry_replaces_a_directory() {
        let bytes = layer(&[
            ("d/", T::Directory, b"", ""),
            ("d/f", T::Regular, b"x", ""),
            ("d", T::Symlink, b"", "/elsewhere"),
            ("e/sub/", T::Directory, b"", ""),
            ("e", T::Regular, b"file now", ""),
            ("h/", T::Directory, b"", ""),
            ("h", T::Link, b"", "e"),
        ]);
        let (tmp, usage) = unpack(&bytes);
        usage.unwrap();
        assert_eq!(std::fs::read_link(tmp.path().join("d")).unwrap(), Path::new("/elsewhere"));
        assert_eq!(std::fs::read(tmp.path().join("e")).unwrap(), b"file now");
        assert_eq!(std::fs::metadata(tmp.path().join("h")).unwrap().nlink(), 2);
    }

    #[test]
    fn compressed_streams_are_sniffed_and_truncation_is_reported() {
        let bytes = layer(&[("f", T::Regular, b"data", "")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &bytes).unwrap();
        let gz = gz.finish().unwrap();
        let zst = ruzstd::encoding::compress_to_vec(&bytes[..], ruzstd::encoding::CompressionLevel::Fastest);
        for (data, kind) in
            [(&gz[..], Compression::Gzip), (&zst[..], Compression::Zstd), (&bytes[..], Compression::None)]
        {
            let (found, reader) = decompress(data).unwrap();
            assert_eq!(found, kind);
            let tmp = tempfile::tempdir().unwrap();
            let hashing = Hashing::new(reader);
            let (_, rest) = extract(hashing, tmp.path()).unwrap();
            let (_, count, _) = rest.finish();
            assert_eq!(count, bytes.len() as u64, "the whole stream was read");
            assert_eq!(std::fs::read(tmp.path().join("f")).unwrap(), b"data");
        }
        let truncated = &gz[..gz.len() - 6];
        let (_, reader) = decompress(truncated).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = extract(reader, tmp.path()).err().unwrap().to_string();
        assert!(err.contains("gzip"), "{err}");
    }

    /// zstd:chunked and other seekable layouts: several frames, and skippable frames between.
    #[test]
    fn zstd_layers_of_several_frames_are_read_to_the_end() {
        let bytes = layer(&[("a", T::Regular, &[b'a'; 5000][..], ""), ("b", T::Regular, b"second frame", "")]);
        let mid = bytes.len() / 2;
        let frame = |part: &[u8]| ruzstd::encoding::compress_to_vec(part, ruzstd::encoding::CompressionLevel::Fastest);
        let mut stream = frame(&bytes[..mid]);
        stream.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
        stream.extend_from_slice(&5u32.to_le_bytes());
        stream.extend_from_slice(b"skip!");
        stream.extend(frame(&bytes[mid..]));
        let (kind, reader) = decompress(&stream[..]).unwrap();
        assert_eq!(kind, Compression::Zstd);
        let tmp = tempfile::tempdir().unwrap();
        let (_, rest) = extract(Hashing::new(reader), tmp.path()).unwrap();
        let (_, count, _) = rest.finish();
        assert_eq!(count, bytes.len() as u64, "every frame was decoded");
        assert_eq!(std::fs::read(tmp.path().join("b")).unwrap(), b"second frame");
        let mut cut = stream.clone();
        cut.truncate(stream.len() - 3);
        let (_, reader) = decompress(&cut[..]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = extract(reader, tmp.path()).err().unwrap().to_string();
        assert!(err.contains("zstd"), "a truncated last frame is reported: {err}");
    }

    /// GNU tar --sparse: the pieces go where the map says and the holes stay holes (a 1 GiB
    /// hole costs no disk; written out as zeros it did), reading as zeros. Entry kinds it cannot
    /// place fail the layer instead of vanishing from it.
    #[test]
    fn sparse_files_keep_their_holes_and_unknown_kinds_are_refused() {
        let hole = 1u64 << 30;
        let mut h = header("sparse", T::GNUSparse, 1024, 0o644);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(0);
        gnu.sparse[0].set_length(512);
        gnu.sparse[1].set_offset(512 + hole);
        gnu.sparse[1].set_length(512);
        gnu.set_real_size(1024 + hole);
        h.set_cksum();
        let mut data = vec![b'a'; 512];
        data.extend([b'b'; 512]);
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &data[..]).unwrap();
        let (tmp, usage) = unpack(&b.into_inner().unwrap());
        assert_eq!(usage.unwrap().bytes, 1024, "the bytes the file takes, not its length");
        let path = tmp.path().join("sparse");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 1024 + hole);
        assert!(meta.blocks() * 512 < 1 << 20, "the hole is a hole: {} bytes allocated", meta.blocks() * 512);
        let mut file = std::fs::File::open(&path).unwrap();
        let mut piece = [0u8; 1024];
        io::Read::read_exact(&mut file, &mut piece).unwrap();
        assert!(piece[..512].iter().all(|&c| c == b'a') && piece[512..].iter().all(|&c| c == 0));
        file.seek(SeekFrom::Start(hole)).unwrap();
        io::Read::read_exact(&mut file, &mut piece).unwrap();
        assert!(piece[..512].iter().all(|&c| c == 0) && piece[512..].iter().all(|&c| c == b'b'));

        // Pieces out of order (or overlapping): corrupt.
        let mut h = header("bad", T::GNUSparse, 512, 0o644);
        let gnu = h.as_gnu_mut().unwrap();
        gnu.sparse[0].set_offset(4096);
        gnu.sparse[0].set_length(512);
        gnu.sparse[1].set_offset(0);
        gnu.sparse[1].set_length(512);
        gnu.set_real_size(8192);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &[0u8; 512][..]).unwrap();
        let (_, usage) = unpack(&b.into_inner().unwrap());
        assert!(matches!(usage, Err(UnpackError::Corrupt { .. })), "{usage:?}");

        let (_, usage) = unpack(&layer(&[("dump", T::new(b'D'), b"", "")]));
        let err = usage.unwrap_err().to_string();
        assert!(err.contains("dump") && err.contains("kind"), "{err}");

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("GNU.sparse.major", &b"1"[..]), ("GNU.sparse.name", &b"f"[..])]).unwrap();
        b.append(&header("GNUSparseFile.0/f", T::Regular, 1, 0o644), &b"x"[..]).unwrap();
        let (tmp, usage) = unpack(&b.into_inner().unwrap());
        let err = usage.unwrap_err().to_string();
        assert!(err.contains("sparse"), "PAX sparse files are refused, not stored as their map: {err}");
        assert!(!tmp.path().join("GNUSparseFile.0").exists());
    }

    /// Past a limit the layer fails: bytes of the uncompressed stream (a gzip bomb: 4 MiB of
    /// zeros in a few KiB), entries (the directories it makes without listing them count), and
    /// depth.
    #[test]
    fn layers_past_their_limits_fail() {
        let limits = Limits { max_bytes: 1 << 20, max_entries: 100 };
        let extract_with = |bytes: &[u8]| {
            let tmp = tempfile::tempdir().unwrap();
            let (_, reader) = decompress(bytes).unwrap();
            extract_limited(reader, tmp.path(), &limits).map(|(e, _)| e.usage)
        };
        let zeros = vec![0u8; 4 << 20];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        io::Write::write_all(&mut gz, &layer(&[("zeros", T::Regular, &zeros[..], "")])).unwrap();
        let bomb = gz.finish().unwrap();
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = extract_with(&bomb).unwrap_err();
        assert!(matches!(err, UnpackError::Limit { .. }) && err.to_string().contains("max_layer_bytes"), "{err}");

        let names: Vec<String> = (0..150).map(|i| format!("f{i}")).collect();
        let many: Vec<_> = names.iter().map(|n| (n.as_str(), T::Regular, &b""[..], "")).collect();
        let err = extract_with(&layer(&many)).unwrap_err();
        assert!(err.to_string().contains("max_layer_entries"), "{err}");
        let long_named = |path: &str| {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(0);
            b.append_data(&mut h, path, &b""[..]).unwrap();
            b.into_inner().unwrap()
        };
        let deep = format!("{}f", "d/".repeat(150));
        let err = extract_with(&long_named(&deep)).unwrap_err();
        assert!(err.to_string().contains("max_layer_entries"), "implicit directories count: {err}");
        assert!(extract_with(&layer(&many[..99])).is_ok(), "within the limits");

        let too_deep = format!("{}f", "d/".repeat(MAX_DEPTH));
        let (_, usage) = unpack(&long_named(&too_deep));
        let err = usage.unwrap_err();
        assert!(matches!(err, UnpackError::Limit { .. }) && err.to_string().contains("deep"), "{err}");
        assert!(err.to_string().len() < 400, "the message does not repeat the whole path: {err}");
    }

    #[test]
    fn permissions_survive_setuid_and_read_only_dirs() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header("ro/", T::Directory, 0, 0o555);
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        let mut h = header("ro/suid", T::Regular, 1, 0o4755);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let (tmp, usage) = unpack(&bytes);
        usage.unwrap();
        let mode = std::fs::metadata(tmp.path().join("ro/suid")).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o4755, "chmod after chown keeps setuid");
        std::fs::set_permissions(tmp.path().join("ro"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        fn component() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("a".to_string()),
                Just("b".to_string()),
                Just("..".to_string()),
                Just(".".to_string()),
                Just(".wh.a".to_string())
            ]
        }

        fn path() -> impl Strategy<Value = String> {
            (proptest::bool::ANY, proptest::collection::vec(component(), 1..4))
                .prop_map(|(absolute, parts)| format!("{}{}", if absolute { "/" } else { "" }, parts.join("/")))
        }

        /// Link targets that a broken unpacker would follow to just beside the root (and never
        /// further, so a failing run cannot touch the host).
        fn target() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("..".to_string()),
                Just("../a".to_string()),
                Just("../b".to_string()),
                Just("a".to_string()),
                Just(".".to_string())
            ]
        }

        fn entry() -> impl Strategy<Value = (String, u8, String)> {
            (path(), 0u8..4, target())
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
            /// Whatever the layer holds, nothing appears beside the root, and no panic.
            #[test]
            fn nothing_is_written_outside_the_root(entries in proptest::collection::vec(entry(), 1..8)) {
                // The root sits four levels down: paths have at most three components, so even
                // a broken unpacker could climb no higher than the first level, where we look.
                let outer = tempfile::tempdir().unwrap();
                let chain = ["d1", "d2", "d3", "root"];
                let root = chain.iter().fold(outer.path().to_path_buf(), |p, c| p.join(c));
                std::fs::create_dir_all(&root).unwrap();
                let mut b = tar::Builder::new(Vec::new());
                for (name, kind, target) in &entries {
                    let kind = [T::Regular, T::Directory, T::Symlink, T::Link][*kind as usize];
                    let mut h = header(name, kind, if kind == T::Regular { 1 } else { 0 }, 0o755);
                    if matches!(kind, T::Symlink | T::Link) {
                        let raw = &mut h.as_old_mut().linkname;
                        raw[..target.len()].copy_from_slice(target.as_bytes());
                        h.set_cksum();
                    }
                    let data: &[u8] = if kind == T::Regular { b"x" } else { b"" };
                    b.append(&h, data).unwrap();
                }
                let bytes = b.into_inner().unwrap();
                let _ = extract(&bytes[..], &root);
                let mut dir = outer.path().to_path_buf();
                for child in chain {
                    let beside: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
                    prop_assert_eq!(beside, vec![std::ffi::OsString::from(child)], "in {}", dir.display());
                    dir = dir.join(child);
                }
            }
        }
    }
}
