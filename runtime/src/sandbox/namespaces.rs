//! Pod namespaces without a pause process: a throwaway thread unshares the network, IPC and
//! UTS namespaces (these are per thread) and bind-mounts them onto files under the sandbox's
//! directory; later throwaway threads enter them to set the hostname, bring `lo` up and write
//! sysctls. Touches only those files, their mounts, and the namespaces of its own threads —
//! the daemon's threads never change namespace. A pod with a user namespace (`hostUsers:
//! false`) has it made first, by a short-lived forked child (a threaded process cannot
//! unshare one), so that the pod's other namespaces belong to it.
#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde::{Deserialize, Serialize};

use crate::host::idmap::{IdMappings, MappedChild};

/// A namespace kind that a pod can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NsKind {
    Net,
    Ipc,
    Uts,
}

impl NsKind {
    pub fn name(self) -> &'static str {
        match self {
            NsKind::Net => "net",
            NsKind::Ipc => "ipc",
            NsKind::Uts => "uts",
        }
    }
    fn flag(self) -> CloneFlags {
        match self {
            NsKind::Net => CloneFlags::CLONE_NEWNET,
            NsKind::Ipc => CloneFlags::CLONE_NEWIPC,
            NsKind::Uts => CloneFlags::CLONE_NEWUTS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot {what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("the namespace thread panicked")]
    Panicked,
    #[error(transparent)]
    UserNamespace(#[from] crate::host::idmap::IdmapError),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> NsError {
    let what = what.into();
    move |source| NsError::Sys { what, source }
}

/// Creates fresh namespaces of `kinds` and pins each at `<dir>/<kind>`. On failure nothing
/// stays pinned. Returns the pinned path of each kind.
pub fn pin(dir: &Path, kinds: &[NsKind]) -> Result<BTreeMap<NsKind, PathBuf>, NsError> {
    if kinds.is_empty() {
        return Ok(BTreeMap::new());
    }
    std::fs::create_dir_all(dir).map_err(|source| NsError::Io { what: "create", path: dir.into(), source })?;
    let flags = kinds.iter().fold(CloneFlags::empty(), |f, k| f | k.flag());
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                unshare(flags).map_err(sys("unshare the pod's namespaces"))?;
                let mut pinned = BTreeMap::new();
                for &kind in kinds {
                    let target = dir.join(kind.name());
                    match pin_current(kind, &target) {
                        Ok(()) => {
                            pinned.insert(kind, target);
                        }
                        Err(e) => {
                            for path in pinned.values() {
                                let _ = unpin(path);
                            }
                            let _ = unpin(&target);
                            return Err(e);
                        }
                    }
                }
                Ok(pinned)
            })
            .join()
            .unwrap_or(Err(NsError::Panicked))
    })
}

/// Where the user namespace of a pod is pinned, in its namespace directory.
pub const USER_PIN: &str = "user";

/// Creates a user namespace with `mappings` and fresh namespaces of `kinds` owned by it, and
/// pins them at `<dir>/user` and `<dir>/<kind>`. A forked child unshares them all at once (the
/// user namespace is created first and owns the rest), lockstepd writes its uid_map and
/// gid_map, pins its namespaces and lets it exit. On failure nothing stays pinned.
pub fn pin_with_user_namespace(
    dir: &Path,
    kinds: &[NsKind],
    mappings: &IdMappings,
) -> Result<(PathBuf, BTreeMap<NsKind, PathBuf>), NsError> {
    std::fs::create_dir_all(dir).map_err(|source| NsError::Io { what: "create", path: dir.into(), source })?;
    let flags = kinds.iter().fold(CloneFlags::empty(), |f, k| f | k.flag());
    let child = MappedChild::spawn(flags, mappings)?;
    let mut pinned: Vec<PathBuf> = Vec::new();
    let result = (|| {
        let mut pin_one = |name: &str| -> Result<PathBuf, NsError> {
            let target = dir.join(name);
            pinned.push(target.clone());
            pin_path(&child.namespace(name), &target)?;
            Ok(target)
        };
        let user = pin_one(USER_PIN)?;
        let mut by_kind = BTreeMap::new();
        for &kind in kinds {
            by_kind.insert(kind, pin_one(kind.name())?);
        }
        Ok((user, by_kind))
    })();
    child.finish();
    if result.is_err() {
        for path in &pinned {
            let _ = unpin(path);
        }
    }
    result
}

/// Bind-mounts the namespace file `source` onto `target` (created empty).
pub fn pin_path(source: &Path, target: &Path) -> Result<(), NsError> {
    std::fs::File::create(target).map_err(|source| NsError::Io { what: "create", path: target.into(), source })?;
    mount(Some(source), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(sys(format!(
        "bind-mount {} onto {}",
        source.display(),
        target.display()
    )))
}

/// Bind-mounts the calling thread's namespace of `kind` onto `target` (created empty).
fn pin_current(kind: NsKind, target: &Path) -> Result<(), NsError> {
    pin_path(&Path::new("/proc/thread-self/ns").join(kind.name()), target)
}

/// Unpins a namespace: detaches the bind mount and removes the file. Absent is fine.
pub fn unpin(path: &Path) -> Result<(), NsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => return Err(sys(format!("unmount {}", path.display()))(e)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NsError::Io { what: "remove", path: path.into(), source }),
    }
}

/// Runs `work` on a throwaway thread that has entered the namespaces at `paths`.
pub fn within<T: Send>(
    paths: &[(NsKind, &Path)],
    work: impl FnOnce() -> Result<T, NsError> + Send,
) -> Result<T, NsError> {
    let mut files = Vec::new();
    for (kind, path) in paths {
        let file =
            std::fs::File::open(path).map_err(|source| NsError::Io { what: "open", path: path.into(), source })?;
        files.push((*kind, path, file));
    }
    std::thread::scope(|scope| {
        scope
            .spawn(move || {
                // setns(CLONE_NEWUTS/IPC/NET) changes only this thread's namespaces.
                for (kind, path, file) in &files {
                    setns(file, kind.flag()).map_err(sys(format!("enter the namespace {}", path.display())))?;
                }
                work()
            })
            .join()
            .unwrap_or(Err(NsError::Panicked))
    })
}

/// Sets the hostname of the calling thread's UTS namespace.
pub fn set_hostname(name: &str) -> Result<(), NsError> {
    nix::unistd::sethostname(name).map_err(sys(format!("set the hostname to {name:?}")))
}

/// Brings the loopback interface of the calling thread's network namespace up.
pub fn loopback_up() -> Result<(), NsError> {
    use std::os::fd::AsRawFd as _;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("open a socket in the pod's network namespace"))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: the socket is open for the whole call and `request` is a valid ifreq that the
    // kernel reads and writes; SIOCGIFFLAGS fills ifru_flags.
    let got = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if got < 0 {
        return Err(sys("read the flags of lo")(nix::Error::last()));
    }
    // SAFETY: SIOCGIFFLAGS just initialised the flags member of the union.
    unsafe { request.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS reads ifru_flags.
    let set = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if set < 0 {
        return Err(sys("bring lo up")(nix::Error::last()));
    }
    Ok(())
}

/// The /proc/sys file of a sysctl name, dotted (`net.ipv4.ip_forward`) or slashed
/// (`net/ipv4/conf/eth0.100/forwarding`, for names with dots in them).
pub fn sysctl_path(name: &str) -> PathBuf {
    let relative = if name.contains('/') { name.to_string() } else { name.replace('.', "/") };
    Path::new("/proc/sys").join(relative)
}

/// Writes a sysctl as the calling thread sees it (its namespaces).
pub fn write_sysctl(name: &str, value: &str) -> Result<(), NsError> {
    let path = sysctl_path(name);
    std::fs::write(&path, value).map_err(|source| NsError::Io { what: "write", path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(sysctl_path("net.ipv4.ip_forward"), Path::new("/proc/sys/net/ipv4/ip_forward"));
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.1/forwarding"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.1/forwarding")
        );
    }
}
