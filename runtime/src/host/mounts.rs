//! Mounts on the host: /proc/self/mountinfo read line by line into the fields lockstepd looks
//! at (which cgroup hierarchies are mounted where, what is mounted under a directory), and the
//! two mount operations every part shares: find the mounts under a directory, unmount one.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot unmount {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
}

/// One line of mountinfo:
/// `<id> <parent> <maj:min> <root> <mount point> <options> [optional…] - <type> <source> <super options>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount<'a> {
    /// `maj:min` of the mounted file system (one per cgroup hierarchy).
    pub device: &'a str,
    /// The mounted root inside that file system, unescaped.
    pub root: String,
    /// Where it is mounted, unescaped.
    pub point: PathBuf,
    pub fstype: &'a str,
    /// The file system's own options (for cgroup v1, its controllers).
    pub super_options: &'a str,
}

impl Mount<'_> {
    /// Whether `option` is among the super options (a v1 hierarchy's controller).
    pub fn has_super_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// The mounts of `text`, in its order (a later mount at a path covers an earlier one).
/// Malformed lines are skipped.
pub fn mounts(text: &str) -> impl Iterator<Item = Mount<'_>> {
    text.lines().filter_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fields = left.split(' ');
        let device = fields.nth(2)?;
        let root = unescape(fields.next()?);
        let point = PathBuf::from(unescape(fields.next()?));
        let mut right = right.split(' ');
        let (fstype, _source, super_options) = (right.next()?, right.next()?, right.next().unwrap_or(""));
        Some(Mount { device, root, point, fstype, super_options })
    })
}

/// Unmounts whatever is mounted at `path` (detached); not mounted is fine.
pub fn unmount(path: &Path) -> Result<(), MountError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(MountError::Unmount { path: path.into(), source }),
    }
}

/// Every mount point at or under `dir`, deepest first (from /proc/self/mountinfo, whose paths
/// are resolved: `dir` is resolved too, so a path through a symlink finds its mounts).
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, MountError> {
    Ok(mounts_under_each(&[dir])?.pop().unwrap_or_default())
}

/// As `mounts_under`, for each of `dirs`, from one read of the mount table.
pub fn mounts_under_each(dirs: &[&Path]) -> Result<Vec<Vec<PathBuf>>, MountError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(mountinfo).map_err(|source| MountError::Io {
        what: "read",
        path: mountinfo.into(),
        source,
    })?;
    let mut found = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let resolved = match std::fs::canonicalize(dir) {
            Ok(resolved) => resolved,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                found.push(Vec::new());
                continue;
            }
            Err(source) => return Err(MountError::Io { what: "resolve", path: dir.into(), source }),
        };
        found.push(mount_points_under(&text, &resolved));
    }
    Ok(found)
}

fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mounts(mountinfo).map(|m| m.point).filter(|p| p.starts_with(dir)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_unescaped() {
        let text = "35 31 0:32 /outer /mnt/a\\040b rw,relatime shared:5 - cgroup cgroup rw,memory\nnot a mount line\n";
        let found: Vec<Mount> = mounts(text).collect();
        assert_eq!(
            found,
            vec![Mount {
                device: "0:32",
                root: "/outer".into(),
                point: PathBuf::from("/mnt/a b"),
                fstype: "cgroup",
                super_options: "rw,memory",
            }]
        );
        assert!(found[0].has_super_option("memory") && !found[0].has_super_option("mem"));
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn mount_points_under_a_directory_come_deepest_first() {
        let mountinfo = "22 1 0:21 / /run rw - tmpfs tmpfs rw\n\
            90 22 0:4 net:[1] /run/l/sandboxes/a/ns/net rw - nsfs nsfs rw\n\
            91 22 0:50 / /run/l/sandboxes/a/shm rw - tmpfs shm rw\n\
            92 22 0:51 / /run/l/sandboxes/a\\040b/shm rw - tmpfs shm rw\n\
            93 22 0:4 net:[2] /run/l/sandboxes/ab/ns/net rw - nsfs nsfs rw\n";
        let found = mount_points_under(mountinfo, Path::new("/run/l/sandboxes/a"));
        assert_eq!(found, vec![PathBuf::from("/run/l/sandboxes/a/ns/net"), PathBuf::from("/run/l/sandboxes/a/shm")]);
    }

    #[test]
    fn a_directory_through_a_symlink_finds_its_mounts() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/proc", tmp.path().join("p")).unwrap();
        let found = mounts_under(&tmp.path().join("p")).unwrap();
        assert_eq!(found.last().map(PathBuf::as_path), Some(Path::new("/proc")), "{found:?}");
    }
}
