//! ListPodSandboxMetrics (and on 1.36+ StreamPodSandboxMetrics): cadvisor's `container_*`
//! metrics (`metric_descriptors`) for each pod — from the readings PodSandboxStats uses, its
//! network per interface — and for each of its running containers. The CRI carries whole
//! numbers, so seconds are whole seconds, as CRI-O sends them. Reads only.

use lockstep_cri::model;

use super::manager::ContainerManager;
use super::metric_descriptors::{family, BASE_LABELS};
use super::pod_stats::{pod_interfaces, read_pod, NetDevice};
use super::record::ContainerRecord;
use super::usage::{self, CgroupSample};
use super::usage_detail::{self, CgroupDetail, Dirs};
use crate::image::unpack::Usage;
use crate::sandbox::SandboxRecord;
use crate::timing::now_nanos;

/// Every pod's metrics and its running containers'.
pub fn list_pod_sandbox_metrics(containers: &ContainerManager) -> Vec<model::PodSandboxMetrics> {
    crate::sandbox::status::list_pod_sandboxes(&containers.sandboxes, None)
        .iter()
        .filter_map(|pod| containers.sandboxes.get(&pod.id))
        .map(|sandbox| metrics_of_pod(containers, &sandbox))
        .collect()
}

fn metrics_of_pod(containers: &ContainerManager, sandbox: &SandboxRecord) -> model::PodSandboxMetrics {
    let now = now_nanos();
    let pod = read_pod(containers, sandbox, now);
    let detail = pod.cgroup.as_deref().and_then(Dirs::of_cgroup).map(|d| usage_detail::detail(&d)).unwrap_or_default();
    let network = (sandbox.namespaces.network.as_deref())
        .and_then(|netns| pod_interfaces(sandbox, &pod.running, netns))
        .unwrap_or_default();
    let pod_labels = Labels {
        id: &sandbox.id,
        name: "POD",
        image: "",
        container: "",
        pod: &sandbox.metadata.name,
        namespace: &sandbox.metadata.namespace,
    };
    let reading = Reading {
        sample: &pod.reading,
        detail: &detail,
        processes: pod.process_count,
        layer: None,
        interfaces: &network,
    };
    model::PodSandboxMetrics {
        pod_sandbox_id: sandbox.id.clone(),
        metrics: metrics_of(&pod_labels, &reading),
        container_metrics: pod.running.iter().map(|r| metrics_of_container(r, sandbox, now)).collect(),
    }
}

fn metrics_of_container(record: &ContainerRecord, sandbox: &SandboxRecord, now: i64) -> model::ContainerMetrics {
    let template = record.template();
    let name = template.metadata.as_ref().map(|m| m.name.as_str()).unwrap_or(record.name.as_str());
    let image = template.image.as_ref().map(|i| i.image.as_str()).unwrap_or("");
    let labels = Labels {
        id: &record.id,
        name,
        image,
        container: name,
        pod: &sandbox.metadata.name,
        namespace: &sandbox.metadata.namespace,
    };
    let sample = usage::sample(record.init_pid, now).unwrap_or(CgroupSample { timestamp: now, ..Default::default() });
    let detail = Dirs::of_pid(record.init_pid).map(|d| usage_detail::detail(&d)).unwrap_or_default();
    let layer = crate::image::unpack::measure(&usage::upper_dir(&record.layer_dir));
    let reading = Reading {
        sample: &sample,
        detail: &detail,
        processes: usage::sample_tasks(record.init_pid),
        layer: Some(layer),
        interfaces: &[],
    };
    model::ContainerMetrics { container_id: record.id.clone(), metrics: metrics_of(&labels, &reading) }
}

/// The values of the base labels (`BASE_LABELS`) of one pod or container.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub image: &'a str,
    pub container: &'a str,
    pub pod: &'a str,
    pub namespace: &'a str,
}

impl Labels<'_> {
    fn values(&self) -> [&str; BASE_LABELS.len()] {
        [self.id, self.name, self.image, self.container, self.pod, self.namespace]
    }
}

/// What one pod's or container's metrics are made from.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub sample: &'a CgroupSample,
    pub detail: &'a CgroupDetail,
    pub processes: Option<u64>,
    /// The writable layer's use (containers only).
    pub layer: Option<Usage>,
    /// Network interfaces (pods only: containers share their pod's namespace).
    pub interfaces: &'a [NetDevice],
}

const NS_PER_S: u64 = 1_000_000_000;

/// The metrics of one reading; a value the host did not give is left out, never sent as 0.
pub fn metrics_of(labels: &Labels, reading: &Reading) -> Vec<model::Metric> {
    let timestamp = reading.sample.timestamp;
    let base = labels.values();
    let mut out = Vec::new();
    let mut push = |name: &str, extra: &[&str], value: Option<u64>| {
        let (Some(family), Some(value)) = (family(name), value) else { return };
        debug_assert_eq!(family.extra_labels.len(), extra.len(), "{name}: labels do not match its descriptor");
        out.push(model::Metric {
            name: name.to_string(),
            timestamp,
            metric_type: family.kind as i32,
            label_values: base.iter().chain(extra).map(|v| v.to_string()).collect(),
            value: Some(model::UInt64Value { value }),
        });
    };
    let d = reading.detail;
    let seconds = |ns: Option<u64>| ns.map(|n| n / NS_PER_S);
    push("container_cpu_usage_seconds_total", &["total"], seconds(reading.sample.cpu_ns));
    push("container_cpu_user_seconds_total", &[], seconds(d.cpu_user_ns));
    push("container_cpu_system_seconds_total", &[], seconds(d.cpu_system_ns));
    push("container_cpu_cfs_periods_total", &[], d.cfs_periods);
    push("container_cpu_cfs_throttled_periods_total", &[], d.cfs_throttled_periods);
    push("container_cpu_cfs_throttled_seconds_total", &[], seconds(d.cfs_throttled_ns));
    if let Some(m) = &reading.sample.memory {
        push("container_memory_usage_bytes", &[], Some(m.usage));
        push("container_memory_working_set_bytes", &[], Some(m.working_set()));
        push("container_memory_rss", &[], Some(m.rss));
        push("container_memory_failures_total", &["pgfault", "hierarchy"], Some(m.page_faults));
        push("container_memory_failures_total", &["pgmajfault", "hierarchy"], Some(m.major_page_faults));
        push("container_spec_memory_limit_bytes", &[], Some(m.limit.unwrap_or(0)));
    }
    push("container_memory_cache", &[], d.cache);
    push("container_memory_mapped_file", &[], d.mapped_file);
    push("container_memory_swap", &[], d.swap);
    push("container_memory_max_usage_bytes", &[], d.max_usage);
    push("container_memory_failcnt", &[], d.failcnt);
    push("container_oom_events_total", &[], d.oom_kills);
    push("container_processes", &[], reading.processes);
    if let Some(layer) = reading.layer {
        push("container_fs_usage_bytes", &[], Some(layer.bytes));
        push("container_fs_inodes_usage", &[], Some(layer.inodes));
    }
    for i in reading.interfaces {
        let on = [i.name.as_str()];
        push("container_network_receive_bytes_total", &on, Some(i.rx_bytes));
        push("container_network_receive_packets_total", &on, Some(i.rx_packets));
        push("container_network_receive_packets_dropped_total", &on, Some(i.rx_dropped));
        push("container_network_receive_errors_total", &on, Some(i.rx_errors));
        push("container_network_transmit_bytes_total", &on, Some(i.tx_bytes));
        push("container_network_transmit_packets_total", &on, Some(i.tx_packets));
        push("container_network_transmit_packets_dropped_total", &on, Some(i.tx_dropped));
        push("container_network_transmit_errors_total", &on, Some(i.tx_errors));
    }
    push("container_last_seen", &[], u64::try_from(timestamp).ok().map(|t| t / NS_PER_S));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::metric_descriptors::list_metric_descriptors;
    use crate::container::usage::MemorySample;

    fn labels() -> Labels<'static> {
        Labels { id: "c1", name: "app", image: "busybox", container: "app", pod: "web", namespace: "default" }
    }

    fn value(metrics: &[model::Metric], name: &str, extra: &[&str]) -> Option<u64> {
        metrics
            .iter()
            .find(|m| m.name == name && m.label_values[BASE_LABELS.len()..] == *extra)
            .and_then(|m| m.value.as_ref())
            .map(|v| v.value)
    }

    fn full_reading<'a>(sample: &'a CgroupSample, detail: &'a CgroupDetail, net: &'a [NetDevice]) -> Reading<'a> {
        Reading { sample, detail, processes: Some(3), layer: Some(Usage { bytes: 4096, inodes: 2 }), interfaces: net }
    }

    #[test]
    fn every_metric_has_a_descriptor_and_as_many_label_values_as_its_keys() {
        let sample = CgroupSample {
            timestamp: 1_700_000_000_000_000_000,
            cpu_ns: Some(1),
            memory: Some(MemorySample::default()),
        };
        let detail = CgroupDetail {
            cpu_user_ns: Some(1),
            cpu_system_ns: Some(1),
            cfs_periods: Some(1),
            cfs_throttled_periods: Some(1),
            cfs_throttled_ns: Some(1),
            cache: Some(1),
            mapped_file: Some(1),
            swap: Some(1),
            failcnt: Some(1),
            max_usage: Some(1),
            oom_kills: Some(1),
        };
        let net = [NetDevice { name: "eth0".into(), ..Default::default() }];
        let metrics = metrics_of(&labels(), &full_reading(&sample, &detail, &net));
        let descriptors = list_metric_descriptors();
        for m in &metrics {
            let d = descriptors.iter().find(|d| d.name == m.name);
            assert!(d.is_some(), "{} has no descriptor: the kubelet would drop it", m.name);
            let keys = &d.unwrap().label_keys;
            assert_eq!(m.label_values.len(), keys.len(), "{}: {:?} against {keys:?}", m.name, m.label_values);
        }
        // Every descriptor is reported when the host gives everything.
        for d in &descriptors {
            assert!(metrics.iter().any(|m| m.name == d.name), "{} is described but never sent", d.name);
        }
    }

    #[test]
    fn values_are_the_readings_in_cadvisor_units() {
        let sample = CgroupSample {
            timestamp: 1_700_000_000_500_000_000,
            cpu_ns: Some(2_999_999_999),
            memory: Some(MemorySample {
                usage: 100 << 20,
                limit: None,
                inactive_file: 30 << 20,
                rss: 64 << 20,
                page_faults: 9,
                major_page_faults: 1,
            }),
        };
        let detail = CgroupDetail { oom_kills: Some(2), cfs_throttled_ns: Some(4_000_000_000), ..Default::default() };
        let net = [NetDevice { name: "eth0".into(), rx_bytes: 1000, tx_packets: 7, ..Default::default() }];
        let metrics = metrics_of(&labels(), &full_reading(&sample, &detail, &net));
        assert_eq!(value(&metrics, "container_cpu_usage_seconds_total", &["total"]), Some(2), "whole seconds");
        assert_eq!(value(&metrics, "container_memory_working_set_bytes", &[]), Some(70 << 20));
        assert_eq!(value(&metrics, "container_memory_usage_bytes", &[]), Some(100 << 20));
        assert_eq!(value(&metrics, "container_memory_rss", &[]), Some(64 << 20));
        assert_eq!(value(&metrics, "container_memory_failures_total", &["pgmajfault", "hierarchy"]), Some(1));
        assert_eq!(value(&metrics, "container_spec_memory_limit_bytes", &[]), Some(0), "no limit is 0");
        assert_eq!(value(&metrics, "container_oom_events_total", &[]), Some(2));
        assert_eq!(value(&metrics, "container_cpu_cfs_throttled_seconds_total", &[]), Some(4));
        assert_eq!(value(&metrics, "container_processes", &[]), Some(3));
        assert_eq!(value(&metrics, "container_fs_usage_bytes", &[]), Some(4096));
        assert_eq!(value(&metrics, "container_network_receive_bytes_total", &["eth0"]), Some(1000));
        assert_eq!(value(&metrics, "container_network_transmit_packets_total", &["eth0"]), Some(7));
        assert_eq!(value(&metrics, "container_last_seen", &[]), Some(1_700_000_000));
        let ws = metrics.iter().find(|m| m.name == "container_memory_working_set_bytes").unwrap();
        assert_eq!(ws.label_values, ["c1", "app", "busybox", "app", "web", "default"]);
        assert_eq!(ws.metric_type, model::MetricType::Gauge as i32);
        assert_eq!(ws.timestamp, sample.timestamp);
        // What the host did not say is left out, not sent as 0.
        assert_eq!(value(&metrics, "container_memory_swap", &[]), None);
        assert_eq!(value(&metrics, "container_cpu_user_seconds_total", &[]), None);
    }

    #[test]
    fn an_unreadable_container_sends_only_its_last_seen() {
        let sample = CgroupSample { timestamp: 5_000_000_000, ..Default::default() };
        let detail = CgroupDetail::default();
        let reading = Reading { sample: &sample, detail: &detail, processes: None, layer: None, interfaces: &[] };
        let names: Vec<String> = metrics_of(&labels(), &reading).into_iter().map(|m| m.name).collect();
        assert_eq!(names, ["container_last_seen"]);
    }
}
