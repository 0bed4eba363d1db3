//! The files a pod's containers bind-mount, under `<runroot>/sandboxes/<id>/`: hostname,
//! resolv.conf (from DNSConfig, else the node's), hosts, and a tmpfs for /dev/shm.
//! Touches only that directory and the shm mount in it.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::record::DnsSettings;

/// /dev/shm's size when the pod sets none, as in containerd and CRI-O.
pub const SHM_SIZE: &str = "64m";

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("cannot {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("cannot {what} {path}: {source}")]
    Mount { what: &'static str, path: PathBuf, source: nix::Error },
}

fn write(path: &Path, text: &str) -> Result<(), FilesError> {
    std::fs::write(path, text).map_err(|source| FilesError::Io { what: "write", path: path.into(), source })
}

pub fn write_hostname(path: &Path, hostname: &str) -> Result<(), FilesError> {
    write(path, &format!("{hostname}\n"))
}

/// resolv.conf from the pod's DNSConfig; without one, a copy of the node's.
pub fn write_resolv_conf(path: &Path, dns: Option<&DnsSettings>) -> Result<(), FilesError> {
    let text = match dns {
        Some(dns) => resolv_conf(dns),
        None => {
            let node = Path::new("/etc/resolv.conf");
            std::fs::read_to_string(node).map_err(|source| FilesError::Io {
                what: "read",
                path: node.into(),
                source,
            })?
        }
    };
    write(path, &text)
}

pub fn resolv_conf(dns: &DnsSettings) -> String {
    let mut text = String::new();
    if !dns.searches.is_empty() {
        text.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    text
}

/// /etc/hosts: localhost for both families and, when the pod has an IP, its hostname.
pub fn write_hosts(path: &Path, hostname: &str, ip: Option<&str>) -> Result<(), FilesError> {
    let mut text = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let (Some(ip), false) = (ip, hostname.is_empty()) {
        text.push_str(&format!("{ip}\t{hostname}\n"));
    }
    write(path, &text)
}

/// A copy of the node's /etc/hosts, for a host-network pod.
pub fn copy_node_hosts(path: &Path) -> Result<(), FilesError> {
    let node = Path::new("/etc/hosts");
    let text =
        std::fs::read_to_string(node).map_err(|source| FilesError::Io { what: "read", path: node.into(), source })?;
    write(path, &text)
}

/// Mounts a private tmpfs for the pod's /dev/shm at `path` (created).
pub fn mount_shm(path: &Path) -> Result<(), FilesError> {
    std::fs::create_dir_all(path).map_err(|source| FilesError::Io { what: "create", path: path.into(), source })?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let data = format!("mode=1777,size={SHM_SIZE}");
    mount(Some("shm"), path, Some("tmpfs"), flags, Some(data.as_str())).map_err(|source| FilesError::Mount {
        what: "mount a tmpfs on",
        path: path.into(),
        source,
    })
}

/// Unmounts whatever is mounted at `path` (detached); not mounted is fine.
pub fn unmount(path: &Path) -> Result<(), FilesError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => Ok(()),
        Err(source) => Err(FilesError::Mount { what: "unmount", path: path.into(), source }),
    }
}

/// Every mount point at or under `dir`, deepest first (from /proc/self/mountinfo, whose paths
/// are resolved: `dir` is resolved too, so a path through a symlink finds its mounts).
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, FilesError> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(mountinfo).map_err(|source| FilesError::Io {
        what: "read",
        path: mountinfo.into(),
        source,
    })?;
    let dir = match std::fs::canonicalize(dir) {
        Ok(resolved) => resolved,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(FilesError::Io { what: "resolve", path: dir.into(), source }),
    };
    Ok(mount_points_under(&text, &dir))
}

fn mount_points_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> =
        crate::mountinfo::mounts(mountinfo).map(|m| m.point).filter(|p| p.starts_with(dir)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_has_search_servers_and_options() {
        let dns = DnsSettings {
            servers: vec!["10.96.0.10".into(), "8.8.8.8".into()],
            searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:5 edns0\n"
        );
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
