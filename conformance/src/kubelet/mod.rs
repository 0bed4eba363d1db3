//! Kubelet emulation: a Pod manifest becomes the CRI calls that the kubelet of one minor
//! makes for it — connect checks, sandbox, image checks and pulls, init containers one after
//! another, app containers, PLEG relists, stats, then deletion — with the kubelet's labels,
//! annotations, log paths, cgroup parent and security defaults (../shared/KUBELET.md). Each call
//! is timed, and the outcomes a kubelet checks are checked.

pub mod container_config;
mod driver;
pub mod manifest;
mod node;
pub mod pod_config;
pub mod probe;
pub mod report;
pub mod resources;

use std::path::{Path, PathBuf};

use lockstep_cri::model;

pub use driver::{emulate, Call, Check, Emulation};
pub use node::PodDirs;

/// The node's settings that shape what the kubelet sends.
#[derive(Debug, Clone)]
pub struct Node {
    /// The kubelet's root (pods/<uid>/volumes, etc-hosts, termination logs live under it).
    pub kubelet_dir: PathBuf,
    /// --pod-logs-dir: where pod log directories are made.
    pub pod_logs_dir: PathBuf,
    pub systemd_cgroups: bool,
    /// clusterDNS; empty: pods get the host's resolv.conf, as a kubelet without cluster DNS does.
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    /// The host's /etc/resolv.conf, for dnsPolicy Default and host-network pods.
    pub host_dns: model::DnsConfig,
    pub memory_capacity: i64,
    /// The node's hugepage sizes in bytes: each gets a limit in every container.
    pub hugepage_sizes: Vec<u64>,
    /// The kubernetes.io/config.seen timestamp.
    pub seen: String,
}

impl Node {
    pub fn new(kubelet_dir: PathBuf, pod_logs_dir: PathBuf, systemd_cgroups: bool, cluster_dns: Vec<String>) -> Node {
        Node {
            kubelet_dir,
            pod_logs_dir,
            systemd_cgroups,
            cluster_dns,
            cluster_domain: "cluster.local".into(),
            host_dns: read_resolv_conf(Path::new("/etc/resolv.conf")),
            memory_capacity: resources::node_memory_bytes(),
            hugepage_sizes: resources::node_hugepage_sizes(),
            seen: now_rfc3339(),
        }
    }

    #[cfg(test)]
    pub fn for_tests() -> Node {
        Node {
            kubelet_dir: "/var/lib/kubelet".into(),
            pod_logs_dir: "/var/log/pods".into(),
            systemd_cgroups: false,
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            host_dns: model::DnsConfig {
                servers: vec!["192.0.2.1".into()],
                searches: vec!["lan".into()],
                options: vec![],
            },
            memory_capacity: 1 << 30,
            hugepage_sizes: vec![2 << 20],
            seen: "2026-01-01T00:00:00Z".into(),
        }
    }
}

/// Servers, searches and options of a resolv.conf; an unreadable file gives none.
pub fn read_resolv_conf(path: &Path) -> model::DnsConfig {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut dns = model::DnsConfig::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.servers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => dns.searches = words.map(str::to_string).collect(),
            Some("options") => dns.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    dns
}

/// The kubelet's `kubernetes.io/config.seen`: when it first saw the pod, in RFC3339Nano.
fn now_rfc3339() -> String {
    lockstep_runtime::monitor::log::rfc3339_nano(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_is_read_as_the_kubelet_reads_it() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            tmp.path(),
            "# c\nnameserver 1.1.1.1\nnameserver 9.9.9.9\nsearch a.b c\noptions ndots:2 rotate\n",
        )
        .unwrap();
        let dns = read_resolv_conf(tmp.path());
        assert_eq!(dns.servers, vec!["1.1.1.1", "9.9.9.9"]);
        assert_eq!(dns.searches, vec!["a.b", "c"]);
        assert_eq!(dns.options, vec!["ndots:2", "rotate"]);
    }
}
