//! PodSandboxStats and ListPodSandboxStats: a pod's CPU and memory from its cgroup (its cgroup
//! parent; a pod without one sums its containers'), its network from its own network namespace
//! (entered on a throwaway thread), its process count, and its running containers' own stats,
//! as the kubelet's CRI stats provider reads them. Reads only.

use std::path::Path;

use lockstep_cri::model;

use super::error::ContainerError;
use super::manager::ContainerManager;
use super::record::RecordState;
use super::stats::stats_of;
use super::usage::{self, CgroupSample, MemorySample};
use crate::cni::network::POD_IFNAME;
use crate::host::cgroups;
use crate::sandbox::namespaces::{self, NsKind};
use crate::sandbox::SandboxRecord;
use crate::timing::now_nanos;

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

fn stats_of_pod(containers: &ContainerManager, sandbox: &SandboxRecord) -> model::PodSandboxStats {
    let running: Vec<_> = containers
        .store
        .of_sandbox(&sandbox.id)
        .iter()
        .map(|e| containers.refresh(e))
        .filter(|r| r.state == RecordState::Running)
        .collect();
    let container_stats: Vec<model::ContainerStats> = running.iter().map(|r| stats_of(containers, r)).collect();
    let now = now_nanos();
    let driver = containers.info.config().cgroup_driver;
    let pod_cgroup = (!sandbox.cgroup_parent.is_empty()).then(|| cgroups::parent_path(driver, &sandbox.cgroup_parent));
    let reading = pod_cgroup
        .as_deref()
        .and_then(|path| usage::sample_cgroup(path, now))
        .unwrap_or_else(|| sum(running.iter().filter_map(|r| usage::sample(r.init_pid, now)), now));
    let previous = containers.store.swap_sample(&format!("{POD_SAMPLE}{}", sandbox.id), reading.clone());
    let process_count = match pod_cgroup.as_deref() {
        Some(path) => usage::process_count(path),
        None => running.iter().map(|r| usage::sample_tasks(r.init_pid)).sum::<Option<u64>>(),
    };
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
            cpu: usage::cpu_usage(&reading, previous.as_ref()),
            memory: usage::memory_usage(&reading),
            network: sandbox.namespaces.network.as_deref().and_then(|netns| network(netns, now)),
            process: process_count.map(|count| model::ProcessUsage {
                timestamp: now,
                process_count: Some(model::UInt64Value { value: count }),
            }),
            containers: container_stats,
            io: None,
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
fn network(netns: &Path, timestamp: i64) -> Option<model::NetworkUsage> {
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
    let interfaces: Vec<model::NetworkInterfaceUsage> = net_dev(&text).into_iter().filter(|i| i.name != "lo").collect();
    Some(model::NetworkUsage {
        timestamp,
        default_interface: interfaces.iter().find(|i| i.name == POD_IFNAME).cloned(),
        interfaces,
    })
}

/// /proc/net/dev: `name: rx_bytes rx_packets rx_errs … (8 receive fields) tx_bytes tx_packets tx_errs …`.
fn net_dev(text: &str) -> Vec<model::NetworkInterfaceUsage> {
    let value = |v: u64| Some(model::UInt64Value { value: v });
    text.lines()
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let fields: Vec<u64> = counters.split_whitespace().map(|f| f.parse().ok()).collect::<Option<_>>()?;
            (fields.len() >= 16).then(|| model::NetworkInterfaceUsage {
                name: name.trim().to_string(),
                rx_bytes: value(fields[0]),
                rx_errors: value(fields[2]),
                tx_bytes: value(fields[8]),
                tx_errors: value(fields[10]),
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
            eth0:   9001      40    3    0    0     0          0         0     4500      30    1    0    0     0       0          0\n";
        let found = net_dev(text);
        assert_eq!(found.len(), 2);
        let eth0 = &found[1];
        assert_eq!(eth0.name, "eth0");
        let v = |x: &Option<model::UInt64Value>| x.as_ref().map(|v| v.value);
        assert_eq!(
            (v(&eth0.rx_bytes), v(&eth0.rx_errors), v(&eth0.tx_bytes), v(&eth0.tx_errors)),
            (Some(9001), Some(3), Some(4500), Some(1))
        );
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
