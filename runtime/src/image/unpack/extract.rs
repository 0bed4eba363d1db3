//! Extraction of a tar stream into a snapshot directory: one function per kind of entry
//! (directory, file, symlink, hardlink, device node or FIFO, whiteout), each writing through
//! its parent's directory fd only. Touches only the directory it is given.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

use super::dirs::DirTree;
use super::paths::{components, open_dir_nofollow_at, ParentCache};
use super::whiteouts::{self, OVERLAY_XATTR_PREFIX};
use super::{io_err, short, times, Extracted, Limits, UnpackError, Usage};
use crate::image::tarstream::{self, Counted, TarEntry, TarError, TarReader};

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

/// An entry's attributes, from its header and its PAX records.
struct Meta {
    /// The entry's name for messages (cut if long).
    name: String,
    mode: Mode,
    mtime: i64,
    uid: rfs::Uid,
    gid: rfs::Gid,
    /// Extended attributes, overlayfs's own left out.
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Meta {
    fn read(entry: &TarEntry, name: String) -> Result<Meta, UnpackError> {
        let corrupt = |e: io::Error| UnpackError::Corrupt { format: "tar", detail: e.to_string() };
        let header = &entry.header;
        // Extended attributes and large ids from PAX records.
        let mut xattrs = Vec::new();
        let (mut uid, mut gid) = (header.uid().unwrap_or(0), header.gid().unwrap_or(0));
        if let Some(pax) = entry.pax_records() {
            for ext in pax {
                let ext = ext.map_err(corrupt)?;
                let Ok(key) = ext.key() else { continue };
                if let Some(xattr) = key.strip_prefix("SCHILY.xattr.") {
                    if xattr.starts_with(OVERLAY_XATTR_PREFIX) {
                        // overlayfs's own (redirect, opaque, metacopy…): only the unpacker sets them.
                        tracing::debug!(entry = %name, xattr, "dropping an overlayfs attribute the layer sets");
                        continue;
                    }
                    xattrs.push((xattr.to_string(), ext.value_bytes().to_vec()));
                } else if key.starts_with("GNU.sparse.") {
                    // PAX sparse formats (0.0, 0.1, 1.0): the entry's data is a map then the pieces.
                    return Err(UnpackError::Unsupported {
                        entry: name,
                        what: "a PAX sparse file (GNU.sparse.* records)".into(),
                    });
                } else if key == "uid" {
                    uid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(uid);
                } else if key == "gid" {
                    gid = ext.value().ok().and_then(|v| v.parse().ok()).unwrap_or(gid);
                }
            }
        }
        Ok(Meta {
            mode: Mode::from_raw_mode(header.mode().map_err(corrupt)? & 0o7777),
            mtime: header.mtime().unwrap_or(0) as i64,
            uid: rfs::Uid::from_raw(uid as u32),
            gid: rfs::Gid::from_raw(gid as u32),
            xattrs,
            name,
        })
    }

    /// Owner, then mode (chmod after chown keeps setuid bits), then extended attributes.
    fn apply(&self, fd: &impl AsFd) -> Result<(), UnpackError> {
        rfs::fchown(fd, Some(self.uid), Some(self.gid)).map_err(|e| io_err(&self.name, "chown", e))?;
        rfs::fchmod(fd, self.mode).map_err(|e| io_err(&self.name, "chmod", e))?;
        set_xattrs(fd, &self.xattrs, &self.name)
    }
}

/// One entry: its path checked and its parent opened, then the function for its kind.
fn extract_entry<R: Read>(
    root: &OwnedFd,
    entry: &TarEntry,
    reader: &mut TarReader<R>,
    state: &mut State,
) -> Result<(), UnpackError> {
    use std::os::unix::ffi::OsStrExt as _;
    let raw_path = Path::new(std::ffi::OsStr::from_bytes(&entry.path));
    let name = short(&raw_path.display().to_string());
    let path = components(&name, raw_path)?;
    let meta = Meta::read(entry, name)?;
    let kind = entry.header.entry_type();
    let State { usage, dirs, parents, root_listed } = state;
    let Some((leaf, parent_path)) = path.split_last() else {
        if kind.is_dir() {
            extract_root(root, &meta, dirs)?;
            *root_listed = true;
        }
        return Ok(());
    };
    let parent = parents.open(root, parent_path, &meta.name, Some(dirs))?;
    match whiteouts::marker(leaf, &meta.name)? {
        Some(whiteouts::Marker::Opaque) => return whiteouts::mark_opaque(parent, &meta.name),
        Some(whiteouts::Marker::Whiteout(hidden)) => {
            remove_any(parent, hidden, &meta.name)?;
            whiteouts::make_whiteout(parent, hidden, &meta.name)?;
            usage.inodes += 1;
            return Ok(());
        }
        None => {}
    }
    let leaf = leaf.as_str();
    match kind {
        tar::EntryType::Directory => extract_dir(parent, leaf, &path, &meta, usage, dirs),
        // A GNU sparse file's pieces go where its map says; the holes stay holes.
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
            extract_file(parent, leaf, entry, reader, &meta, usage)
        }
        tar::EntryType::Symlink => extract_symlink(parent, leaf, entry, &meta, usage),
        tar::EntryType::Link => extract_hardlink(root, parent, leaf, entry, &meta),
        tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
            extract_node(parent, leaf, entry, &meta, usage)
        }
        // The tar reader folds these into their member; none reaches here.
        tar::EntryType::XGlobalHeader
        | tar::EntryType::XHeader
        | tar::EntryType::GNULongName
        | tar::EntryType::GNULongLink => Ok(()),
        other => Err(UnpackError::Unsupported {
            entry: meta.name,
            what: format!("an entry of kind {:?} ({:?})", other, other.as_byte() as char),
        }),
    }
}

/// The root itself (`./`): its attributes apply to the snapshot directory.
fn extract_root(root: &OwnedFd, meta: &Meta, dirs: &mut DirTree) -> Result<(), UnpackError> {
    rfs::fchown(root, Some(meta.uid), Some(meta.gid)).map_err(|e| io_err(&meta.name, "chown", e))?;
    rfs::fchmod(root, meta.mode).map_err(|e| io_err(&meta.name, "chmod", e))?;
    dirs.nodes[0].mtime = Some(meta.mtime);
    Ok(())
}

/// A directory merges with one already there (made implicitly or listed before); whatever
/// else is there goes. Its times are set after its children are in.
fn extract_dir(
    parent: &OwnedFd,
    leaf: &str,
    path: &[String],
    meta: &Meta,
    usage: &mut Usage,
    dirs: &mut DirTree,
) -> Result<(), UnpackError> {
    match rfs::statat(parent, leaf, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
        _ => {
            remove_any(parent, leaf, &meta.name)?;
            rfs::mkdirat(parent, leaf, meta.mode).map_err(|e| io_err(&meta.name, "create directory", e))?;
            usage.inodes += 1;
        }
    }
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rfs::openat(parent, leaf, flags, Mode::empty()).map_err(|e| io_err(&meta.name, "open directory", e))?;
    meta.apply(&fd)?;
    let node = dirs.node_of(path);
    let listed = &mut dirs.nodes[node as usize];
    (listed.implicit, listed.mtime) = (false, Some(meta.mtime));
    Ok(())
}

/// A regular file (or a GNU sparse one, its pieces placed at their offsets).
fn extract_file<R: Read>(
    parent: &OwnedFd,
    leaf: &str,
    entry: &TarEntry,
    reader: &mut TarReader<R>,
    meta: &Meta,
    usage: &mut Usage,
) -> Result<(), UnpackError> {
    let name = &meta.name;
    remove_any(parent, leaf, name)?;
    let fd = rfs::openat(
        parent,
        leaf,
        OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| io_err(name, "create file", e))?;
    let mut file = std::fs::File::from(fd);
    let written = match &entry.sparse {
        None => io::copy(&mut reader.data(), &mut file).map_err(|e| data_error(name, "write file", e))?,
        Some(sparse) => {
            for &(offset, length) in &sparse.pieces {
                file.seek(SeekFrom::Start(offset)).map_err(|e| UnpackError::Io {
                    entry: name.clone(),
                    what: "seek in file",
                    source: e,
                })?;
                let copied = io::copy(&mut reader.data().take(length), &mut file)
                    .map_err(|e| data_error(name, "write file", e))?;
                if copied != length {
                    return Err(UnpackError::Corrupt {
                        format: "tar",
                        detail: format!("sparse file {name:?} is cut short"),
                    });
                }
            }
            file.set_len(sparse.real_size).map_err(|e| UnpackError::Io {
                entry: name.clone(),
                what: "size sparse file",
                source: e,
            })?;
            entry.size
        }
    };
    meta.apply(&file)?;
    rfs::futimens(&file, &times(meta.mtime, 0)).map_err(|e| io_err(name, "set times", e))?;
    usage.bytes += written;
    usage.inodes += 1;
    Ok(())
}

/// The target an entry links to.
fn link_target(entry: &TarEntry, name: &str) -> Result<PathBuf, UnpackError> {
    use std::os::unix::ffi::OsStrExt as _;
    entry
        .link
        .as_deref()
        .map(|l| PathBuf::from(std::ffi::OsStr::from_bytes(l)))
        .ok_or_else(|| UnpackError::Corrupt { format: "tar", detail: format!("link {name:?} has no target") })
}

/// A symlink, its target stored as it is (never followed here).
fn extract_symlink(
    parent: &OwnedFd,
    leaf: &str,
    entry: &TarEntry,
    meta: &Meta,
    usage: &mut Usage,
) -> Result<(), UnpackError> {
    let name = &meta.name;
    let target = link_target(entry, name)?;
    remove_any(parent, leaf, name)?;
    rfs::symlinkat(target.as_path(), parent, leaf).map_err(|e| io_err(name, "create symlink", e))?;
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    rfs::chownat(parent, leaf, Some(meta.uid), Some(meta.gid), nofollow)
        .map_err(|e| io_err(name, "chown symlink", e))?;
    rfs::utimensat(parent, leaf, &times(meta.mtime, 0), nofollow).map_err(|e| io_err(name, "set symlink times", e))?;
    usage.inodes += 1;
    Ok(())
}

/// A hardlink to an entry of the same layer, its target resolved with the same checks.
fn extract_hardlink(
    root: &OwnedFd,
    parent: &OwnedFd,
    leaf: &str,
    entry: &TarEntry,
    meta: &Meta,
) -> Result<(), UnpackError> {
    let name = &meta.name;
    let target = link_target(entry, name)?;
    let target_text = target.display().to_string();
    let target_path = components(name, &target).map_err(|e| match e {
        UnpackError::Escape { reason, .. } => UnpackError::Escape {
            entry: name.clone(),
            reason: format!("its hardlink target {target_text:?}: {reason}"),
        },
        other => other,
    })?;
    let Some((target_leaf, target_parent)) = target_path.split_last() else {
        return Err(UnpackError::Escape { entry: name.clone(), reason: "a hardlink to the root".into() });
    };
    // Open the target's directory with the same checks (a second cache, so the entry's
    // parent stays open).
    let mut target_dirs = ParentCache::default();
    let target_dir = target_dirs.open(root, target_parent, name, None)?;
    remove_any(parent, leaf, name)?;
    rfs::linkat(target_dir, target_leaf.as_str(), parent, leaf, AtFlags::empty())
        .map_err(|e| io_err(name, "create hardlink", e))
}

/// A character or block device node, or a FIFO.
fn extract_node(
    parent: &OwnedFd,
    leaf: &str,
    entry: &TarEntry,
    meta: &Meta,
    usage: &mut Usage,
) -> Result<(), UnpackError> {
    let name = &meta.name;
    let header = &entry.header;
    let file_type = match header.entry_type() {
        tar::EntryType::Char => FileType::CharacterDevice,
        tar::EntryType::Block => FileType::BlockDevice,
        _ => FileType::Fifo,
    };
    let major = header.device_major().ok().flatten().unwrap_or(0);
    let minor = header.device_minor().ok().flatten().unwrap_or(0);
    remove_any(parent, leaf, name)?;
    rfs::mknodat(parent, leaf, file_type, meta.mode, rfs::makedev(major, minor))
        .map_err(|e| io_err(name, "create device node", e))?;
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    rfs::chownat(parent, leaf, Some(meta.uid), Some(meta.gid), nofollow).map_err(|e| io_err(name, "chown", e))?;
    // mknod applied the umask; the node was made just now in a directory only root
    // writes to, so the path names it.
    rfs::chmodat(parent, leaf, meta.mode, AtFlags::empty()).map_err(|e| io_err(name, "chmod", e))?;
    rfs::utimensat(parent, leaf, &times(meta.mtime, 0), nofollow).map_err(|e| io_err(name, "set times", e))?;
    usage.inodes += 1;
    Ok(())
}
/// Removes whatever sits at `name` (a file, or a directory tree of any depth with a bounded
/// number of open files), so the entry (not a directory: those merge) or a whiteout can take
/// its place. Later entries win, as in tar extraction.
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
