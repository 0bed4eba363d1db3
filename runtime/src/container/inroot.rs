//! Paths inside an image's tree, resolved as if that tree were `/`: an image is untrusted, so
//! its symlinks (`data -> /`, `etc/passwd -> /etc/shadow`) must never lead lockstepd, or a bind
//! mount it sets up, to the host's files. Also the bounded read of small files from such a tree.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution follows before it gives up (as the kernel's ELOOP).
const MAX_LINKS: usize = 40;

/// `path` inside `root`, with every symlink on the way resolved inside `root` and `..` stopping
/// at `root`. The result is under `root`; its last components may not exist.
pub fn resolve(root: &Path, path: &Path) -> std::io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = names(path).collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&name);
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(root.join(&candidate))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for part in names(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part);
                }
            }
            Ok(_) => resolved = candidate,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => resolved = candidate,
            Err(e) => return Err(e),
        }
    }
    Ok(root.join(resolved))
}

/// The components of `path` that name something: normal names and `..` (root and `.` dropped).
fn names(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(name) => Some(name.to_os_string()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
}

/// Reads the regular file at `path` inside `root` (resolved as `resolve` does), at most `cap`
/// bytes. Absent is `None`; a device, FIFO, directory or a larger file is an error.
pub fn read_small_file(root: &Path, path: &Path, cap: u64) -> std::io::Result<Option<Vec<u8>>> {
    let full = resolve(root, path)?;
    // Looked at before opening: opening a device node can itself do something.
    match std::fs::symlink_metadata(&full) {
        Ok(meta) if !meta.is_file() => {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&full)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a regular file"));
    }
    if meta.len() > cap {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("larger than {cap} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(cap).read_to_end(&mut bytes)?;
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        symlink("/", root.join("escape")).unwrap();
        symlink("../../..", root.join("real/up")).unwrap();
        symlink("/real/dir", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(resolve(root, Path::new("escape/etc/shadow")).unwrap(), root.join("etc/shadow"));
        assert_eq!(resolve(root, Path::new("real/up/etc")).unwrap(), root.join("etc"));
        assert_eq!(resolve(root, Path::new("../../etc")).unwrap(), root.join("etc"));
        assert_eq!(resolve(root, Path::new("abs/x")).unwrap(), root.join("real/dir/x"));
        assert_eq!(resolve(root, Path::new("/real/./dir")).unwrap(), root.join("real/dir"));
        assert_eq!(resolve(root, Path::new("loop")).unwrap_err().raw_os_error(), Some(libc::ELOOP));
    }

    #[test]
    fn only_small_regular_files_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        symlink("/dev/zero", root.join("etc/group")).unwrap();
        nix::unistd::mkfifo(&root.join("etc/fifo"), nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(root.join("etc/big"), vec![b'x'; 100]).unwrap();
        let read = |p: &str| read_small_file(root, Path::new(p), 64);
        assert_eq!(read("etc/passwd").unwrap().unwrap(), b"root:x:0:0::/root:/bin/sh\n");
        assert_eq!(read("etc/group").unwrap(), None, "the link leads to <root>/dev/zero, absent");
        assert!(read("etc/fifo").is_err(), "a FIFO is refused, not waited on");
        assert!(read("etc/big").is_err(), "a file over the cap is refused");
        assert!(read("etc").is_err(), "a directory is refused");
        assert_eq!(read("etc/shadow").unwrap(), None);
    }
}
