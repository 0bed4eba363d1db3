//! ListMetricDescriptors: the name, help text and label keys of every metric that
//! ListPodSandboxMetrics reports — cadvisor's `container_*` names, which the kubelet serves on
//! /metrics/cadvisor when it takes them from the CRI. A fixed table; pure.

use lockstep_cri::model;

/// The labels every metric starts with: CRI-O's three (`id` the container's or pod's id,
/// `name` the container's name or `POD`, `image` the container's image) and cadvisor's three
/// that dashboards select by (`container`, `pod`, `namespace`).
pub const BASE_LABELS: [&str; 6] = ["id", "name", "image", "container", "pod", "namespace"];

/// One metric: its name, help, kind and the labels it adds to the base ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: model::MetricType,
    pub extra_labels: &'static [&'static str],
}

const fn counter(name: &'static str, help: &'static str, extra_labels: &'static [&'static str]) -> Family {
    Family { name, help, kind: model::MetricType::Counter, extra_labels }
}

const fn gauge(name: &'static str, help: &'static str) -> Family {
    Family { name, help, kind: model::MetricType::Gauge, extra_labels: &[] }
}

const NET: &[&str] = &["interface"];

/// Every metric lockstepd reports, in the order it reports them.
pub const FAMILIES: &[Family] = &[
    counter("container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in whole seconds.", &["cpu"]),
    counter("container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in whole seconds.", &[]),
    counter("container_cpu_system_seconds_total", "Cumulative system CPU time consumed, in whole seconds.", &[]),
    counter("container_cpu_cfs_periods_total", "Number of elapsed CFS enforcement periods.", &[]),
    counter("container_cpu_cfs_throttled_periods_total", "Number of CFS periods the cgroup was throttled in.", &[]),
    counter("container_cpu_cfs_throttled_seconds_total", "Total time the cgroup was throttled, in whole seconds.", &[]),
    gauge("container_memory_usage_bytes", "Current memory usage in bytes, page cache included."),
    gauge("container_memory_working_set_bytes", "Current working set in bytes: usage less inactive file cache."),
    gauge("container_memory_rss", "Anonymous memory (RSS) in bytes."),
    gauge("container_memory_cache", "Page cache in bytes."),
    gauge("container_memory_mapped_file", "Memory-mapped files in bytes."),
    gauge("container_memory_swap", "Swap used in bytes."),
    gauge("container_memory_max_usage_bytes", "Highest memory usage recorded, in bytes."),
    counter("container_memory_failcnt", "Number of times memory usage hit the limit.", &[]),
    counter(
        "container_memory_failures_total",
        "Cumulative count of page faults (failure_type pgfault or pgmajfault), the cgroup's subtree included.",
        &["failure_type", "scope"],
    ),
    counter("container_oom_events_total", "Count of out-of-memory kills in the cgroup.", &[]),
    gauge("container_spec_memory_limit_bytes", "Memory limit in bytes; 0 when there is none."),
    gauge("container_processes", "Number of processes in the cgroup."),
    gauge("container_fs_usage_bytes", "Bytes used by the container's writable layer."),
    gauge("container_fs_inodes_usage", "Inodes used by the container's writable layer."),
    counter("container_network_receive_bytes_total", "Cumulative count of bytes received.", NET),
    counter("container_network_receive_packets_total", "Cumulative count of packets received.", NET),
    counter(
        "container_network_receive_packets_dropped_total",
        "Cumulative count of packets dropped while receiving.",
        NET,
    ),
    counter("container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", NET),
    counter("container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", NET),
    counter("container_network_transmit_packets_total", "Cumulative count of packets transmitted.", NET),
    counter(
        "container_network_transmit_packets_dropped_total",
        "Cumulative count of packets dropped while transmitting.",
        NET,
    ),
    counter(
        "container_network_transmit_errors_total",
        "Cumulative count of errors encountered while transmitting.",
        NET,
    ),
    gauge("container_last_seen", "Last time the runtime read the container, in Unix seconds."),
];

/// The family of `name`, if lockstepd reports it.
pub fn family(name: &str) -> Option<&'static Family> {
    FAMILIES.iter().find(|f| f.name == name)
}

/// The descriptors of every family, as ListMetricDescriptors answers.
pub fn list_metric_descriptors() -> Vec<model::MetricDescriptor> {
    FAMILIES
        .iter()
        .map(|f| model::MetricDescriptor {
            name: f.name.to_string(),
            help: f.help.to_string(),
            label_keys: BASE_LABELS.iter().chain(f.extra_labels).map(|k| k.to_string()).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_prometheus_names_and_counters_end_in_total_or_failcnt() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAMILIES.len(), "a name is listed twice");
        for f in FAMILIES {
            assert!(f.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{}", f.name);
            assert!(f.name.starts_with("container_"), "{}", f.name);
            if f.kind == model::MetricType::Counter {
                assert!(f.name.ends_with("_total") || f.name.ends_with("failcnt"), "counter {}", f.name);
            }
        }
    }

    #[test]
    fn the_kubelet_gets_the_cadvisor_names_with_the_base_labels_first() {
        let descriptors = list_metric_descriptors();
        let cpu = descriptors.iter().find(|d| d.name == "container_cpu_usage_seconds_total").unwrap();
        assert_eq!(cpu.label_keys, ["id", "name", "image", "container", "pod", "namespace", "cpu"]);
        let ws = descriptors.iter().find(|d| d.name == "container_memory_working_set_bytes").unwrap();
        assert_eq!(ws.label_keys.len(), BASE_LABELS.len());
        assert!(descriptors.iter().all(|d| !d.help.is_empty()));
        assert_eq!(family("container_network_receive_bytes_total").map(|f| f.extra_labels), Some(NET));
    }
}
