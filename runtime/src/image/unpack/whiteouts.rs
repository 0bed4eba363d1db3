//! overlayfs's markers: a tar whiteout `.wh.x` becomes a 0:0 character device, `.wh..wh..opq`
//! the xattr trusted.overlay.opaque=y; and what the layers below show at a path, read back by
//! the same rules. Touches only the directories it is given.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, XattrFlags};
use rustix::io::Errno;

use super::paths::open_dir_nofollow;
use super::{io_err, UnpackError};

pub(super) const WHITEOUT_PREFIX: &str = ".wh.";
pub(super) const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub(super) const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// overlayfs's own attributes: only the unpacker sets one (opaque), never a layer.
pub(super) const OVERLAY_XATTR_PREFIX: &str = "trusted.overlay.";

/// What the layers below show at a path, as overlayfs merges them.
pub(super) enum Below {
    /// A directory, in this layer's root, at these components.
    Dir(PathBuf),
    /// Nothing (absent, whited out, or hidden by an opaque directory).
    Absent,
    /// Something that is not a directory: a file or a symlink.
    NotDir(FileType),
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
pub(super) fn below(lowers: &[PathBuf], path: &[String]) -> Result<Below, Errno> {
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

/// A tar whiteout marker, told by the entry's name.
pub(super) enum Marker<'a> {
    /// `.wh..wh..opq`: the directory hides what the layers below hold in it.
    Opaque,
    /// `.wh.<name>`: `<name>` is removed from the layers below.
    Whiteout(&'a str),
}

/// Whether `leaf` is a marker; a whiteout that names no file fails the layer.
pub(super) fn marker<'a>(leaf: &'a str, entry: &str) -> Result<Option<Marker<'a>>, UnpackError> {
    if leaf == OPAQUE_MARKER {
        return Ok(Some(Marker::Opaque));
    }
    match leaf.strip_prefix(WHITEOUT_PREFIX) {
        Some("" | "." | "..") => {
            Err(UnpackError::Escape { entry: entry.to_string(), reason: "a whiteout names no file".into() })
        }
        Some(hidden) => Ok(Some(Marker::Whiteout(hidden))),
        None => Ok(None),
    }
}

/// Marks the directory `dir` opaque, as overlayfs reads it.
pub(super) fn mark_opaque(dir: &OwnedFd, entry: &str) -> Result<(), UnpackError> {
    rfs::fsetxattr(dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
        .map_err(|e| io_err(entry, "mark a directory opaque", e))
}

/// Makes `hidden` in `dir` an overlayfs whiteout (a 0:0 character device); whatever was
/// there is already gone.
pub(super) fn make_whiteout(dir: &OwnedFd, hidden: &str, entry: &str) -> Result<(), UnpackError> {
    rfs::mknodat(dir, hidden, FileType::CharacterDevice, Mode::empty(), rfs::makedev(0, 0))
        .map_err(|e| io_err(entry, "create a whiteout", e))
}
