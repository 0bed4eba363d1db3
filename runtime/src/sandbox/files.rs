//! The files a pod's containers bind-mount, under `<runroot>/sandboxes/<id>/`: hostname,
//! resolv.conf (from DNSConfig, else the node's), hosts, and a tmpfs for /dev/shm.
//! Touches only that directory and the shm mount in it.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

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
pub fn mount_shm(path: &Path, owner: Option<(u32, u32)>) -> Result<(), FilesError> {
    std::fs::create_dir_all(path).map_err(|source| FilesError::Io { what: "create", path: path.into(), source })?;
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mut data = format!("mode=1777,size={SHM_SIZE}");
    if let Some((uid, gid)) = owner {
        data.push_str(&format!(",uid={uid},gid={gid}"));
    }
    mount(Some("shm"), path, Some("tmpfs"), flags, Some(data.as_str())).map_err(|source| FilesError::Mount {
        what: "mount a tmpfs on",
        path: path.into(),
        source,
    })
}

/// Gives `paths` to the host uid and gid of a user namespace's root (a pod with `hostUsers:
/// false`), so that its containers' root owns them.
pub fn give_to(paths: &[&Path], (uid, gid): (u32, u32)) -> Result<(), FilesError> {
    for path in paths {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|source| FilesError::Io {
            what: "change the owner of",
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(())
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
}
