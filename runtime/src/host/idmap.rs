//! ID mappings of user namespaces (`hostUsers: false` pods) and idmapped mounts: a mount
//! whose files, as seen through it, have their owners shifted by a user namespace's mapping
//! (`mount_setattr` with MOUNT_ATTR_IDMAP, Linux 5.12; overlayfs from 5.19). A container root
//! that is host uid 65536 then owns the image's root-owned files, while on disk they stay
//! owned by 0. Touches only the mounts it is given.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One range of IDs: `length` IDs from `container_id` inside are `host_id`… outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMapping {
    pub container_id: u32,
    pub host_id: u32,
    pub length: u32,
}

impl IdMapping {
    /// The line /proc/<pid>/uid_map takes (and shows, padded).
    pub fn map_line(&self) -> String {
        format!("{} {} {}\n", self.container_id, self.host_id, self.length)
    }
}

/// A pod's user namespace mappings: one range of user IDs and one of group IDs, each mapping
/// container ID 0 (so the container's root is someone on the host: never host root unless
/// asked for).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IdMappings {
    pub uids: IdMapping,
    pub gids: IdMapping,
}

impl IdMappings {
    /// The host uid and gid of the container's root.
    pub fn root(&self) -> (u32, u32) {
        (self.uids.host_id, self.gids.host_id)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdmapError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot {what}: {source}")]
    Sys { what: &'static str, source: nix::Error },
    #[error("the child making a user namespace ended without saying whether it could")]
    ChildVanished,
}

/// A forked child that has unshared a user namespace (with `flags`' namespaces, which that
/// user namespace owns: the kernel creates it first) and sleeps until killed; its uid_map and
/// gid_map are written. A threaded process cannot unshare a user namespace itself, so this is
/// how lockstepd makes one to pin. The child is killed when dropped, and dies with the thread
/// that forked it (PDEATHSIG) — it never waits on a pipe, whose other copies any process
/// forked meanwhile by another thread could hold.
pub struct MappedChild {
    pid: i32,
}

impl MappedChild {
    pub fn spawn(flags: nix::sched::CloneFlags, mappings: &IdMappings) -> Result<MappedChild, IdmapError> {
        let (ready_read, ready_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|source| IdmapError::Sys { what: "make a pipe", source })?;
        let bits = (flags | nix::sched::CloneFlags::CLONE_NEWUSER).bits();
        let ready_fd = ready_write.as_raw_fd();
        // SAFETY: fork from a threaded process is sound when the child calls only
        // async-signal-safe functions: it calls prctl, unshare, write and pause on memory it
        // owns (a stack byte, errno), allocates nothing and takes no lock.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(IdmapError::Sys { what: "fork a child for a user namespace", source: nix::Error::last() });
        }
        if pid == 0 {
            // SAFETY: see above; the fd is open in the child (inherited).
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                let status: u8 =
                    if libc::unshare(bits) == 0 { 0 } else { nix::errno::Errno::last_raw().clamp(1, 255) as u8 };
                libc::write(ready_fd, (&status as *const u8).cast(), 1);
                loop {
                    libc::pause();
                }
            }
        }
        drop(ready_write);
        let child = MappedChild { pid };
        let mut status = [0u8; 1];
        let got = loop {
            match nix::unistd::read(&ready_read, &mut status) {
                Err(nix::Error::EINTR) => continue,
                other => break other,
            }
        };
        match got {
            Ok(1) if status[0] == 0 => {}
            Ok(1) => {
                let source = nix::Error::from_raw(i32::from(status[0]));
                return Err(IdmapError::Sys { what: "unshare a user namespace", source });
            }
            _ => return Err(IdmapError::ChildVanished),
        }
        for (file, mapping) in [("uid_map", &mappings.uids), ("gid_map", &mappings.gids)] {
            let path = PathBuf::from(format!("/proc/{pid}/{file}"));
            std::fs::write(&path, mapping.map_line()).map_err(|source| IdmapError::Io {
                what: "write the mapping",
                path,
                source,
            })?;
        }
        Ok(child)
    }

    /// The child's namespace file of `kind` ("user", "net", …).
    pub fn namespace(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.pid))
    }

    /// Kills the child and reaps it (as dropping it does).
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for MappedChild {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        while let Err(nix::Error::EINTR) = nix::sys::wait::waitpid(pid, None) {}
    }
}

fn failed<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(rustix::io::Errno) -> IdmapError + 'a {
    move |e| IdmapError::Io { what, path: path.into(), source: e.into() }
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Marks a detached mount (`tree`, from open_tree or fsmount) idmapped by the user namespace
/// open at `userns` (`what` names it in errors).
fn set_idmap(tree: &impl AsFd, userns: &impl AsFd, what: &Path) -> Result<(), IdmapError> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    // SAFETY: the fds stay open for the call; the path is a NUL-terminated empty string and
    // `attr` a valid mount_attr of the size passed; the kernel only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(IdmapError::Io {
            what: "make an idmapped mount of",
            path: what.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn open_userns(userns: &Path) -> Result<std::fs::File, IdmapError> {
    std::fs::File::open(userns).map_err(|source| IdmapError::Io {
        what: "open the user namespace",
        path: userns.into(),
        source,
    })
}

/// A detached, idmapped copy of the mount at `source` (that mount alone, not its submounts).
pub fn idmapped_copy(source: &Path, userns: &Path) -> Result<OwnedFd, IdmapError> {
    use rustix::mount::{open_tree, OpenTreeFlags};
    let ns = open_userns(userns)?;
    let tree = open_tree(rustix::fs::CWD, source, OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC)
        .map_err(failed("copy the mount at", source))?;
    set_idmap(&tree, &ns, source)?;
    Ok(tree)
}

/// Attaches a detached mount at `target` (which must exist).
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<(), IdmapError> {
    use rustix::mount::{move_mount, MoveMountFlags};
    move_mount(tree, "", rustix::fs::CWD, target, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .map_err(failed("attach an idmapped mount at", target))
}

/// Replaces the mount at `target` (a container's rootfs overlay) with an idmapped copy of it.
/// On failure the original mount stays.
pub fn idmap_in_place(target: &Path, userns: &Path) -> Result<(), IdmapError> {
    let copy = idmapped_copy(target, userns)?;
    nix::mount::umount2(target, nix::mount::MntFlags::MNT_DETACH).map_err(|e| IdmapError::Io {
        what: "unmount (to idmap it)",
        path: target.into(),
        source: e.into(),
    })?;
    attach(&copy, target)
}

/// Lets anyone search (`o+x`, not list) `dir` and each directory above it: a container's root
/// in a user namespace is nobody to host-root-owned directories, yet its OCI runtime resolves
/// the rootfs and the bind-mount sources from inside that namespace (as CRI-O does, nothing
/// is made readable). A directory that already allows it is left alone.
pub fn make_traversable(dir: &Path) -> Result<(), IdmapError> {
    use std::os::unix::fs::PermissionsExt as _;
    for dir in dir.ancestors() {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let metadata = std::fs::metadata(dir).map_err(|source| IdmapError::Io {
            what: "read the mode of",
            path: dir.into(),
            source,
        })?;
        let mode = metadata.permissions().mode();
        if mode & 0o001 == 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode((mode | 0o001) & 0o7777))
                .map_err(|source| IdmapError::Io { what: "let others search", path: dir.into(), source })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_is_one_line_of_uid_map() {
        let m = IdMapping { container_id: 0, host_id: 65536, length: 65536 };
        assert_eq!(m.map_line(), "0 65536 65536\n");
        let mappings = IdMappings { uids: m, gids: IdMapping { host_id: 131072, ..m } };
        assert_eq!(mappings.root(), (65536, 131072));
    }

    #[test]
    fn traversable_directories_gain_search_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b");
        std::fs::create_dir_all(&deep).unwrap();
        for dir in [tmp.path(), &tmp.path().join("a"), &deep] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        make_traversable(&deep).unwrap();
        for dir in [tmp.path(), &tmp.path().join("a"), &deep] {
            assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o701, "{}", dir.display());
        }
    }
}
