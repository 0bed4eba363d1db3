//! Removal of directory trees of any depth (an image's layer, what a pod wrote into its writable
//! layer) with a bounded number of open files: one directory is open at a time, walked with
//! openat/unlinkat and `..` checked against the inode it must be; never follows a symlink and
//! never enters another filesystem. Touches only the tree it is given.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

const DIR_FLAGS: OFlags = OFlags::DIRECTORY.union(OFlags::RDONLY).union(OFlags::CLOEXEC).union(OFlags::NOFOLLOW);

/// Removes `path` and everything under it; absent is fine. A symlink is removed, not followed.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no entry", path.display())));
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let parent_fd = match rfs::open(parent, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_tree_at(parent_fd.as_fd(), name)
}

/// One directory on the way down: its name in its parent and its identity, so that the way
/// back up (`..`) can be checked.
struct Level {
    name: OsString,
    dev: u64,
    ino: u64,
}

fn context(e: impl Into<io::Error>, depth: usize, name: &OsStr, what: &str) -> io::Error {
    let e = e.into();
    io::Error::new(e.kind(), format!("cannot {what} {:?} ({depth} levels down): {e}", name))
}

/// Removes the entry `name` of the directory `parent` and everything under it; absent is fine.
pub fn remove_tree_at(parent: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let st = match rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(context(e, 0, name, "inspect")),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rfs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(context(e, 0, name, "remove")),
        };
    }
    let dev = st.st_dev;
    let mut levels = vec![Level { name: name.to_owned(), dev, ino: st.st_ino }];
    let mut current = open_checked(parent, name, dev, st.st_ino).map_err(|e| context(e, 0, name, "open"))?;
    // Rounds in which a directory emptied here was not empty at rmdir: something writes into it.
    let mut refills = 0;
    loop {
        let depth = levels.len();
        // Files go as they are listed; the first subdirectory is entered (and the listing of
        // this one starts again on the way back: what was removed is no longer listed).
        if let Some(child) = empty_until_subdirectory(&current, dev, depth)? {
            let st = child.1;
            current = open_checked(current.as_fd(), &child.0, dev, st.st_ino)
                .map_err(|e| context(e, depth, &child.0, "open"))?;
            levels.push(Level { name: child.0, dev, ino: st.st_ino });
            continue;
        }
        let level = levels.pop().expect("a level is open while the loop runs");
        // The directory above, by `..` (checked to be the one we came down from).
        let up = match levels.last() {
            None => None,
            Some(above) => {
                let up = rfs::openat(&current, "..", DIR_FLAGS, Mode::empty())
                    .map_err(|e| context(e, depth, &level.name, "go up from"))?;
                let st = rfs::fstat(&up).map_err(|e| context(e, depth, &level.name, "go up from"))?;
                if (st.st_dev, st.st_ino) != (above.dev, above.ino) {
                    return Err(io::Error::other(format!(
                        "the tree moved while it was being removed ({:?}, {depth} levels down, is elsewhere now)",
                        level.name
                    )));
                }
                Some(up)
            }
        };
        let parent_fd = up.as_ref().map_or(parent, |fd| fd.as_fd());
        match rfs::unlinkat(parent_fd, level.name.as_os_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(Errno::NOTEMPTY) if refills < 100 => {
                // Filled again meanwhile: list it once more.
                refills += 1;
                levels.push(level);
                continue;
            }
            Err(e) => return Err(context(e, depth - 1, &level.name, "remove directory")),
        }
        match up {
            None => return Ok(()),
            Some(up) => current = up,
        }
    }
}

/// Opens the directory `name` of `dir`, checking that it is the one that was inspected.
fn open_checked(dir: BorrowedFd<'_>, name: &OsStr, dev: u64, ino: u64) -> io::Result<OwnedFd> {
    let fd = rfs::openat(dir, name, DIR_FLAGS, Mode::empty())?;
    let st = rfs::fstat(&fd)?;
    if st.st_dev != dev {
        return Err(io::Error::other("another filesystem is mounted there; it is not removed"));
    }
    if st.st_ino != ino {
        return Err(io::Error::other("it was replaced while being removed"));
    }
    Ok(fd)
}

/// Removes the entries of `dir` that are not directories, up to the first directory, which it
/// returns (name and status) for the caller to enter; None once nothing but `.` and `..` is left.
fn empty_until_subdirectory(dir: &OwnedFd, dev: u64, depth: usize) -> io::Result<Option<(OsString, rfs::Stat)>> {
    let mut listing = rfs::Dir::read_from(dir).map_err(|e| context(e, depth, OsStr::new("."), "list"))?;
    while let Some(item) = listing.read() {
        let item = item.map_err(|e| context(e, depth, OsStr::new("."), "list"))?;
        let name = OsStr::from_bytes(item.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        if matches!(item.file_type(), FileType::Directory | FileType::Unknown) {
            let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(context(e, depth, name, "inspect")),
            };
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                if st.st_dev != dev {
                    return Err(context(
                        io::Error::other("another filesystem is mounted there; it is not removed"),
                        depth,
                        name,
                        "remove",
                    ));
                }
                return Ok(Some((name.to_owned(), st)));
            }
        }
        match rfs::unlinkat(dir, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(context(e, depth, name, "remove")),
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A chain of `depth` directories `d/d/d/...` under `root`, each holding a file and a
    /// symlink, made without ever naming the whole path (it is longer than PATH_MAX).
    pub(crate) fn deep_chain(root: &Path, depth: usize) {
        let mut dir = rfs::open(root, DIR_FLAGS, Mode::empty()).unwrap();
        for _ in 0..depth {
            rfs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
            let f =
                rfs::openat(&dir, "f", OFlags::CREATE | OFlags::WRONLY | OFlags::CLOEXEC, Mode::from_raw_mode(0o644));
            drop(f.unwrap());
            rfs::symlinkat("/", &dir, "up").unwrap();
            dir = rfs::openat(&dir, "d", DIR_FLAGS, Mode::empty()).unwrap();
        }
    }

    /// The open-file limit this process runs with.
    pub(crate) fn nofile() -> u64 {
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        line.split_whitespace().nth(3).and_then(|soft| soft.parse().ok()).unwrap_or(u64::MAX)
    }

    /// Deeper than this process may open files (std's remove_dir_all keeps one open per level
    /// and fails with EMFILE), and at least the 2,000 and 5,000 of the issue.
    #[test]
    fn trees_deeper_than_the_open_file_limit_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        // Something to keep: a symlink target outside the tree.
        std::fs::write(tmp.path().join("outside"), b"kept").unwrap();
        for depth in [2_000, 5_000, (nofile() as usize + 100).min(200_000)] {
            let root = tmp.path().join(format!("tree-{depth}"));
            std::fs::create_dir(&root).unwrap();
            deep_chain(&root, depth);
            std::os::unix::fs::symlink(tmp.path().join("outside"), root.join("link")).unwrap();
            remove_tree(&root).unwrap();
            assert!(!root.exists(), "depth {depth}");
        }
        assert_eq!(std::fs::read(tmp.path().join("outside")).unwrap(), b"kept", "symlinks are not followed");
        remove_tree(&tmp.path().join("absent")).unwrap();
        std::fs::write(tmp.path().join("file"), b"x").unwrap();
        remove_tree(&tmp.path().join("file")).unwrap();
        assert!(!tmp.path().join("file").exists());
    }

    /// A mount inside the tree (a propagated host directory) is never emptied: removal stops.
    #[test]
    fn another_filesystem_inside_is_not_entered() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("tree");
        std::fs::create_dir_all(root.join("a/mnt")).unwrap();
        nix::mount::mount(
            Some("tmpfs"),
            &root.join("a/mnt"),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        std::fs::write(root.join("a/mnt/precious"), b"x").unwrap();
        let err = remove_tree(&root).unwrap_err();
        let precious = std::fs::read(root.join("a/mnt/precious"));
        nix::mount::umount2(&root.join("a/mnt"), nix::mount::MntFlags::MNT_DETACH).unwrap();
        assert!(err.to_string().contains("another filesystem"), "{err}");
        assert_eq!(precious.unwrap(), b"x");
        remove_tree(&root).unwrap();
        assert!(!root.exists());
    }
}
