//! The node-side work the kubelet does around the CRI calls: the pod's directories (emptyDir
//! volumes, its /etc/hosts, termination-log files), the pod log directory, and (cgroupfs
//! driver) the pod cgroup in each cgroup v1 hierarchy. Everything made here is removed by
//! `PodDirs::remove` and `PodCgroup::remove`.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::Node;

/// The kubelet's directories for one pod: `<kubelet dir>/pods/<uid>/…`.
#[derive(Debug, Clone)]
pub struct PodDirs {
    pod_dir: PathBuf,
}

impl PodDirs {
    pub fn new(node: &Node, pod: &Pod) -> PodDirs {
        PodDirs { pod_dir: node.kubelet_dir.join("pods").join(pod.metadata.uid.as_deref().unwrap_or_default()) }
    }

    pub fn empty_dir(&self, volume: &str) -> PathBuf {
        self.pod_dir.join("volumes/kubernetes.io~empty-dir").join(volume)
    }

    pub fn etc_hosts(&self) -> PathBuf {
        self.pod_dir.join("etc-hosts")
    }

    pub fn termination_log(&self, container: &str, restart_count: u32) -> PathBuf {
        self.pod_dir.join("containers").join(container).join(format!("termination-log-{restart_count}"))
    }

    /// Makes the emptyDir volumes, the termination-log files and a first /etc/hosts.
    pub fn prepare(&self, pod: &Pod) -> std::io::Result<()> {
        let spec = super::pod_config::spec(pod);
        for volume in spec.volumes.iter().flatten().filter(|v| v.empty_dir.is_some()) {
            std::fs::create_dir_all(self.empty_dir(&volume.name))?;
        }
        for c in spec.init_containers.iter().flatten().chain(&spec.containers) {
            let log = self.termination_log(&c.name, 0);
            if let Some(dir) = log.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(log, "")?;
        }
        self.write_hosts("", "")
    }

    /// The kubelet's managed /etc/hosts: localhost lines and the pod's own IP and hostname.
    pub fn write_hosts(&self, ip: &str, hostname: &str) -> std::io::Result<()> {
        let mut text = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        if !ip.is_empty() {
            text.push_str(&format!("{ip}\t{hostname}\n"));
        }
        std::fs::create_dir_all(&self.pod_dir)?;
        std::fs::write(self.etc_hosts(), text)
    }

    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_dir_all(&self.pod_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The pod cgroup that a cgroupfs kubelet makes before RunPodSandbox, in each cgroup v1
/// hierarchy (the directories it had to create, so that exactly those are removed).
#[derive(Debug, Default)]
pub struct PodCgroup {
    created: Vec<PathBuf>,
}

impl PodCgroup {
    /// Creates `parent` (e.g. /kubepods/besteffort/pod<uid>) under every v1 hierarchy.
    pub fn create(parent: &str) -> std::io::Result<PodCgroup> {
        let mut cgroup = PodCgroup::default();
        for hierarchy in v1_hierarchies() {
            let mut dir = hierarchy.clone();
            for part in parent.trim_start_matches('/').split('/') {
                let parent_dir = dir.clone();
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir)?;
                    cgroup.created.push(dir.clone());
                    // A new cpuset cgroup admits no task until it has cpus and mems.
                    for file in ["cpuset.cpus", "cpuset.mems"] {
                        if let Ok(value) = std::fs::read_to_string(parent_dir.join(file)) {
                            let _ = std::fs::write(dir.join(file), value.trim());
                        }
                    }
                }
            }
        }
        Ok(cgroup)
    }

    /// Removes what `create` made, deepest first; a cgroup still in use stays and is named.
    pub fn remove(self) -> Result<(), String> {
        let mut busy = Vec::new();
        for dir in self.created.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    busy.push(format!("{}: {e}", dir.display()));
                }
            }
        }
        if busy.is_empty() {
            Ok(())
        } else {
            Err(busy.join("; "))
        }
    }
}

/// The mounted cgroup v1 hierarchies (a named one like name=systemd included), from /proc/self/mounts.
fn v1_hierarchies() -> Vec<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 2 && fields[2] == "cgroup").then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

/// Creates the pod log directory as the kubelet does before RunPodSandbox.
pub fn make_log_directory(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}
