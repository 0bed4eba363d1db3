//! Where an entry goes: its path as components below the root (`..` and absolute paths
//! refused, depth capped), and its parent directory opened one component at a time with
//! O_NOFOLLOW from a directory fd of the root. Touches only the snapshot it is given.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::dirs::DirTree;
use super::{io_err, short, UnpackError, MAX_DEPTH};

/// The entry's path as components below the root; `..` and absolute paths are refused.
pub(super) fn components(entry: &str, path: &Path) -> Result<Vec<String>, UnpackError> {
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
pub(super) struct ParentCache {
    key: Vec<String>,
    fd: Option<OwnedFd>,
    pub(super) made: u64,
}

impl ParentCache {
    /// Opens the directory `components` below the root, one component at a time with
    /// O_NOFOLLOW: a symlink anywhere on the way is an escape. With `dirs`, what is missing is
    /// created and recorded there as implicit; without, it is an error.
    pub(super) fn open(
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

/// Opens `components` below `root`, one at a time, never following a symlink.
pub(super) fn open_dir_nofollow(root: &Path, components: &[String]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let fd = rfs::open(root, flags, Mode::empty())?;
    open_dir_nofollow_at(&fd, components)
}

pub(super) fn open_dir_nofollow_at(root: &OwnedFd, components: &[String]) -> Result<OwnedFd, Errno> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut fd = rfs::openat(root, ".", flags, Mode::empty())?;
    for c in components {
        fd = rfs::openat(&fd, c.as_str(), flags, Mode::empty())?;
    }
    Ok(fd)
}
