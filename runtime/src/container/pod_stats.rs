//! PodSandboxStats and ListPodSandboxStats: a pod's CPU and memory from its cgroup (its cgroup
//! parent; a pod without one sums its containers'), its network from its own network namespace
//! (read through a process in it, or entered on a throwaway thread), its process count, and its running containers' own stats,
//! as the kubelet's CRI stats provider reads them; PSI from the pod's v2 cgroup where the kernel
//! has it (1.33+ answers carry it). Reads only.

use std::path::{Path, PathBuf};

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::{ContainerRecord, RecordState};
use super::stats::stats_of;
use super::usage::{self, CgroupSample, MemorySample};
use super::usage_detail;
use crate::cni::network::POD_IFNAME;
use crate::host::cgroups;
use crate::sandbox::namespaces::{self, NsKind};
use crate::sandbox::SandboxRecord;
use crate::timing::now_nanos;
use rustix::fs as rfs;

pub fn pod_sandbox_stats(containers: &ContainerManager, id: &str) -> Result<model::PodSandboxStats, ContainerError> {
    if !crate::ids::is_safe_id(id) {
        return Err(ContainerError::bad_field("pod_sandbox_id", format!("{id:?} is not a pod sandbox id")));
    }
    let sandbox = containers.sandboxes.get(id).ok_or_else(|| ContainerError::NoSuchSandbox { id: id.to_string() })?;
    Ok(stats_of_pod(containers, &sandbox))
}

/// The stats of every pod the filter matches (by id and labels).
pub fn list_pod_sandbox_stats(
    containers: &ContainerManager,
    filter: Option<&model::PodSandboxStatsFilter>,
) -> Vec<model::PodSandboxStats> {
    let pods = crate::sandbox::status::list_pod_sandboxes(&containers.sandboxes, None);
    let stats: Vec<model::PodSandboxStats> = pods
        .iter()
        .filter(|pod| {
            filter.is_none_or(|f| {
                (f.id.is_empty() || f.id == pod.id) && crate::filter::labels_match(&pod.labels, &f.label_selector)
            })
        })
        .filter_map(|pod| containers.sandboxes.get(&pod.id))
        .map(|sandbox| stats_of_pod(containers, &sandbox))
        .collect();
    // Readings of pods that are gone go with them.
    containers
        .store
        .forget_samples(|key| key.strip_prefix(POD_SAMPLE).is_none_or(|id| pods.iter().any(|p| p.id == id)));
    stats
}

/// The prefix of a pod's entry among the readings kept for CPU rates.
const POD_SAMPLE: &str = "pod:";

/// A pod's running containers and one reading of its cgroup (or of its containers' added up).
pub(super) struct PodReading {
    pub running: Vec<ContainerRecord>,
    /// The pod's cgroup relative to each hierarchy's root, when it has a cgroup parent.
    pub cgroup: Option<PathBuf>,
    pub reading: CgroupSample,
    pub process_count: Option<u64>,
}

pub(super) fn read_pod(containers: &ContainerManager, sandbox: &SandboxRecord, now: i64) -> PodReading {
    let entries = containers.store.of_sandbox(&sandbox.id);
    containers.refresh_live(&entries);
    let running: Vec<_> = entries.iter().map(|e| e.read()).filter(|r| r.state == RecordState::Running).collect();
    let driver = containers.info.config().cgroup_driver;
    let cgroup = (!sandbox.cgroup_parent.is_empty()).then(|| cgroups::parent_path(driver, &sandbox.cgroup_parent));
    let reading = cgroup
        .as_deref()
        .and_then(|path| usage::sample_cgroup(path, now))
        .unwrap_or_else(|| sum(running.iter().filter_map(|r| usage::sample(r.init_pid, now)), now));
    let process_count = match cgroup.as_deref() {
        Some(path) => usage::process_count(path),
        None => running.iter().map(|r| usage::sample_tasks(r.init_pid)).sum::<Option<u64>>(),
    };
    PodReading { running, cgroup, reading, process_count }
}

fn stats_of_pod(containers: &ContainerManager, sandbox: &SandboxRecord) -> model::PodSandboxStats {
    let now = now_nanos();
    let PodReading { running, cgroup, reading, process_count } = read_pod(containers, sandbox, now);
    let container_stats: Vec<model::ContainerStats> = running.iter().map(|r| stats_of(containers, r)).collect();
    let previous = containers.store.swap_sample(&format!("{POD_SAMPLE}{}", sandbox.id), reading.clone());
    let own: Vec<_> = running.iter().map(|r| usage_detail::unified_of_pid(r.init_pid)).collect();
    let pod_dir = cgroup.as_deref().and_then(usage_detail::unified_of_cgroup);
    let pressure = usage_detail::pod_pressure_dir(pod_dir, &own).map(|dir| usage_detail::pressure(&dir));
    let mut cpu = usage::cpu_usage(&reading, previous.as_ref());
    let mut memory = usage::memory_usage(&reading);
    let pressure = pressure.unwrap_or_default();
    if let Some(cpu) = cpu.as_mut() {
        cpu.psi = pressure.cpu;
    }
    if let Some(memory) = memory.as_mut() {
        memory.psi = pressure.memory;
    }
    let io = pressure.io.map(|psi| model::IoUsage { timestamp: now, psi: Some(psi) });
    model::PodSandboxStats {
        attributes: Some(model::PodSandboxAttributes {
            id: sandbox.id.clone(),
            metadata: Some(model::PodSandboxMetadata {
                name: sandbox.metadata.name.clone(),
                uid: sandbox.metadata.uid.clone(),
                namespace: sandbox.metadata.namespace.clone(),
                attempt: sandbox.metadata.attempt,
            }),
            labels: sandbox.labels.clone().into_iter().collect(),
            annotations: sandbox.annotations.clone().into_iter().collect(),
        }),
        linux: Some(model::LinuxPodSandboxStats {
            cpu,
            memory,
            network: sandbox.namespaces.network.as_deref().and_then(|netns| network(sandbox, &running, netns, now)),
            process: process_count.map(|count| model::ProcessUsage {
                timestamp: now,
                process_count: Some(model::UInt64Value { value: count }),
            }),
            containers: container_stats,
            io,
        }),
        windows: None,
    }
}

/// The containers' readings added up, for a pod without a cgroup of its own (a pod with no
/// running container has used nothing).
fn sum(readings: impl Iterator<Item = CgroupSample>, timestamp: i64) -> CgroupSample {
    let mut total = CgroupSample { timestamp, cpu_ns: Some(0), memory: Some(MemorySample::default()) };
    for reading in readings {
        if let (Some(cpu), Some(t)) = (reading.cpu_ns, total.cpu_ns.as_mut()) {
            *t += cpu;
        }
        if let (Some(m), Some(t)) = (reading.memory, total.memory.as_mut()) {
            t.usage += m.usage;
            t.inactive_file += m.inactive_file;
            t.rss += m.rss;
            t.page_faults += m.page_faults;
            t.major_page_faults += m.major_page_faults;
        }
    }
    total
}

/// Each interface of the pod's network namespace but loopback, eth0 as the default.
fn network(
    sandbox: &SandboxRecord,
    running: &[ContainerRecord],
    netns: &Path,
    timestamp: i64,
) -> Option<model::NetworkUsage> {
    let value = |v: u64| Some(model::UInt64Value { value: v });
    let interfaces: Vec<model::NetworkInterfaceUsage> = pod_interfaces(sandbox, running, netns)?
        .into_iter()
        .map(|d| model::NetworkInterfaceUsage {
            name: d.name,
            rx_bytes: value(d.rx_bytes),
            rx_errors: value(d.rx_errors),
            tx_bytes: value(d.tx_bytes),
            tx_errors: value(d.tx_errors),
        })
        .collect();
    Some(model::NetworkUsage {
        timestamp,
        default_interface: interfaces.iter().find(|i| i.name == POD_IFNAME).cloned(),
        interfaces,
    })
}

/// The counters of the pod's interfaces but loopback, read through a process that lives in the
/// pod's network namespace — its pause process, else one of its running containers — which
/// spares a thread per pod and call; else as `interfaces` reads them.
pub(super) fn pod_interfaces(
    sandbox: &SandboxRecord,
    running: &[ContainerRecord],
    netns: &Path,
) -> Option<Vec<NetDevice>> {
    let pod_netns = std::fs::metadata(netns).ok()?;
    let members = sandbox.namespaces.pause.iter().map(|p| p.pid).chain(running.iter().map(|r| r.init_pid));
    match members.filter(|&pid| pid > 0).find_map(|pid| net_dev_through(pid, &pod_netns)) {
        Some(text) => Some(net_dev(&text).into_iter().filter(|d| d.name != "lo").collect()),
        None => interfaces(netns),
    }
}

/// /proc/PID/net/dev when process PID is in the network namespace `netns` (the pinned file's
/// metadata). /proc/PID, once open, stays that process's: what is read through it fails once the
/// process has exited, whoever takes the pid next, so a reused pid is never read by mistake.
fn net_dev_through(pid: i32, netns: &std::fs::Metadata) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let cloexec = rfs::OFlags::RDONLY | rfs::OFlags::CLOEXEC;
    let process = rfs::open(format!("/proc/{pid}"), cloexec | rfs::OFlags::DIRECTORY, rfs::Mode::empty()).ok()?;
    // Opened first: the file reads the namespace its process was in when it was opened.
    let dev = rfs::openat(&process, "net/dev", cloexec, rfs::Mode::empty()).ok()?;
    let ns = rfs::statat(&process, "ns/net", rfs::AtFlags::empty()).ok()?;
    if ns.st_dev != netns.dev() || ns.st_ino != netns.ino() {
        return None;
    }
    let mut text = String::new();
    std::fs::File::from(dev).read_to_string(&mut text).ok()?;
    Some(text)
}

/// The counters of each interface of the network namespace `netns` but loopback, read on a
/// throwaway thread that enters it; None when it cannot be entered or read.
fn interfaces(netns: &Path) -> Option<Vec<NetDevice>> {
    let text = namespaces::within(&[(NsKind::Net, netns)], || {
        // thread-self: this thread's network namespace, which it just entered.
        std::fs::read_to_string("/proc/thread-self/net/dev").map_err(|source| namespaces::NsError::Io {
            what: "read",
            path: "/proc/thread-self/net/dev".into(),
            source,
        })
    })
    .map_err(|e| tracing::debug!(netns = %netns.display(), error = %e, "no network stats"))
    .ok()?;
    Some(net_dev(&text).into_iter().filter(|d| d.name != "lo").collect())
}

/// One interface's line of /proc/net/dev.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetDevice {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// /proc/net/dev: `name: rx_bytes rx_packets rx_errs rx_drop … (8 receive fields) tx_bytes
/// tx_packets tx_errs tx_drop …`.
fn net_dev(text: &str) -> Vec<NetDevice> {
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let f: Vec<u64> = counters.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
            (f.len() >= 16).then(|| NetDevice {
                name: name.trim().to_string(),
                rx_bytes: f[0],
                rx_packets: f[1],
                rx_errors: f[2],
                rx_dropped: f[3],
                tx_bytes: f[8],
                tx_packets: f[9],
                tx_errors: f[10],
                tx_dropped: f[11],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_gives_bytes_and_errors_of_each_interface() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
            face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
            lo:     120       2    0    0    0     0          0         0      120       2    0    0    0     0       0          0\n  \
            eth0:   9001      40    3    5    0     0          0         0     4500      30    1    2    0     0       0          0\n";
        let found = net_dev(text);
        assert_eq!(found.len(), 2);
        let eth0 = &found[1];
        assert_eq!(eth0.name, "eth0");
        assert_eq!((eth0.rx_bytes, eth0.rx_errors, eth0.tx_bytes, eth0.tx_errors), (9001, 3, 4500, 1));
        assert_eq!((eth0.rx_packets, eth0.rx_dropped, eth0.tx_packets, eth0.tx_dropped), (40, 5, 30, 2));
    }

    #[test]
    fn net_dev_is_read_through_a_process_only_in_the_pod_s_namespace_and_only_while_it_lives() {
        let own_netns = std::fs::metadata("/proc/self/ns/net").unwrap();
        let me = std::process::id() as i32;
        let text = net_dev_through(me, &own_netns).expect("this process is in its own namespace");
        assert!(net_dev(&text).iter().any(|d| d.name == "lo"), "{text}");
        let another_namespace = std::fs::metadata("/proc/self/ns/mnt").unwrap();
        assert_eq!(net_dev_through(me, &another_namespace), None, "a namespace the process is not in");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(net_dev_through(gone, &own_netns), None, "an exited process");
    }

    #[test]
    fn a_pod_without_a_cgroup_adds_up_its_containers() {
        let reading = |cpu, usage| CgroupSample {
            timestamp: 1,
            cpu_ns: Some(cpu),
            memory: Some(MemorySample { usage, inactive_file: 1, ..Default::default() }),
        };
        let total = sum([reading(10, 100), reading(5, 50)].into_iter(), 9);
        assert_eq!(total.cpu_ns, Some(15));
        let memory = total.memory.unwrap();
        assert_eq!((memory.usage, memory.working_set(), total.timestamp), (150, 148, 9));
        let idle = sum(std::iter::empty(), 9);
        assert_eq!((idle.cpu_ns, idle.memory.map(|m| m.usage)), (Some(0), Some(0)), "no container, nothing used");
    }
}
