//! Pod resources as the kubelet turns them into CRI fields: quantity parsing, QoS class,
//! CPU shares / quota, memory limit, hugepage limits, OOM score adjustment and the pod cgroup
//! parent.

use k8s_openapi::api::core::v1::{Container, Pod, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use lockstep_cri::model;

/// The kubelet's CFS period (100 ms), in microseconds.
pub const CPU_PERIOD_US: i64 = 100_000;
const MIN_SHARES: i64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

/// Parses a Kubernetes quantity into its value times `scale` (1000 for milli-units of CPU, 1 for bytes).
pub fn parse_quantity(q: &Quantity, scale: f64) -> Result<i64, String> {
    let text = q.0.trim();
    let split = text.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a quantity"))?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        other => return Err(format!("{text:?} has an unknown suffix {other:?}")),
    };
    Ok((value * factor * scale).ceil() as i64)
}

fn quantity(
    resources: Option<&ResourceRequirements>,
    which: &str,
    resource: &str,
    scale: f64,
) -> Result<Option<i64>, String> {
    let map = resources.and_then(|r| if which == "limits" { r.limits.as_ref() } else { r.requests.as_ref() });
    map.and_then(|m| m.get(resource)).map(|q| parse_quantity(q, scale)).transpose()
}

/// A container's requests, with the API server's default: a limit without a request requests the limit.
fn request(c: &Container, resource: &str, scale: f64) -> Result<Option<i64>, String> {
    let r = c.resources.as_ref();
    Ok(quantity(r, "requests", resource, scale)?.or(quantity(r, "limits", resource, scale)?))
}

pub fn qos(pod: &Pod) -> Result<Qos, String> {
    let spec = pod.spec.as_ref();
    let containers: Vec<&Container> =
        spec.map(|s| s.init_containers.iter().flatten().chain(&s.containers).collect()).unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        for resource in ["cpu", "memory"] {
            let scale = if resource == "cpu" { 1000.0 } else { 1.0 };
            let limit = quantity(c.resources.as_ref(), "limits", resource, scale)?;
            let req = request(c, resource, scale)?;
            any |= limit.is_some() || req.is_some();
            guaranteed &= limit.is_some() && limit == req;
        }
    }
    Ok(if !any {
        Qos::BestEffort
    } else if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    })
}

/// The pod's cgroup parent as the kubelet names it for each driver.
pub fn cgroup_parent(pod: &Pod, systemd: bool) -> Result<String, String> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let qos = qos(pod)?;
    Ok(if systemd {
        let uid = uid.replace('-', "_");
        match qos {
            Qos::Guaranteed => format!("kubepods-pod{uid}.slice"),
            Qos::Burstable => format!("kubepods-burstable-pod{uid}.slice"),
            Qos::BestEffort => format!("kubepods-besteffort-pod{uid}.slice"),
        }
    } else {
        match qos {
            Qos::Guaranteed => format!("/kubepods/pod{uid}"),
            Qos::Burstable => format!("/kubepods/burstable/pod{uid}"),
            Qos::BestEffort => format!("/kubepods/besteffort/pod{uid}"),
        }
    })
}

/// The container's LinuxContainerResources, as kuberuntime computes them.
pub fn linux_resources(
    pod: &Pod,
    c: &Container,
    memory_capacity: i64,
    hugepage_sizes: &[u64],
) -> Result<model::LinuxContainerResources, String> {
    let cpu_request = request(c, "cpu", 1000.0)?;
    let cpu_limit = quantity(c.resources.as_ref(), "limits", "cpu", 1000.0)?;
    let memory_request = request(c, "memory", 1.0)?;
    let memory_limit = quantity(c.resources.as_ref(), "limits", "memory", 1.0)?;
    let shares = cpu_request.map(|milli| (milli * 1024 / 1000).max(MIN_SHARES)).unwrap_or(MIN_SHARES);
    let oom_score_adj = match qos(pod)? {
        Qos::Guaranteed => -997,
        Qos::BestEffort => 1000,
        Qos::Burstable => {
            let request = memory_request.unwrap_or(0);
            let adj = 1000 - (1000 * request) / memory_capacity.max(1);
            adj.clamp(2, 999)
        }
    };
    Ok(model::LinuxContainerResources {
        cpu_period: if cpu_limit.is_some() { CPU_PERIOD_US } else { 0 },
        cpu_quota: cpu_limit.map(|milli| (milli * CPU_PERIOD_US / 1000).max(1000)).unwrap_or(0),
        cpu_shares: shares,
        memory_limit_in_bytes: memory_limit.unwrap_or(0),
        oom_score_adj,
        hugepage_limits: hugepage_limits(c, hugepage_sizes)?,
        ..Default::default()
    })
}

/// A limit for every page size the node has: zero unless the container's limits name it
/// (`hugepages-2Mi: 64Mi`), so that a container uses no hugepages it did not ask for.
fn hugepage_limits(c: &Container, sizes: &[u64]) -> Result<Vec<model::HugepageLimit>, String> {
    let mut limits: Vec<model::HugepageLimit> =
        sizes.iter().map(|&size| model::HugepageLimit { page_size: page_size_name(size), limit: 0 }).collect();
    let asked = c.resources.as_ref().and_then(|r| r.limits.as_ref()).into_iter().flatten();
    for (name, quantity) in asked {
        let Some(size) = name.strip_prefix("hugepages-") else { continue };
        let size = parse_quantity(&Quantity(size.to_string()), 1.0)?;
        let page_size = page_size_name(u64::try_from(size).map_err(|_| format!("{name}: negative page size"))?);
        let limit = u64::try_from(parse_quantity(quantity, 1.0)?).map_err(|_| format!("{name}: negative limit"))?;
        match limits.iter_mut().find(|l| l.page_size == page_size) {
            Some(entry) => entry.limit = limit,
            None => return Err(format!("{name}: the node has no {page_size} hugepages")),
        }
    }
    Ok(limits)
}

/// A page size as the kubelet names it for CRI: 2 MiB is "2MB", 1 GiB "1GB" (binary units).
fn page_size_name(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value}{}", units[unit])
}

/// The node's hugepage sizes in bytes, from /sys/kernel/mm/hugepages/hugepages-<n>kB.
pub fn node_hugepage_sizes() -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return Vec::new() };
    let mut sizes: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("hugepages-")?.strip_suffix("kB")?.parse::<u64>().ok().map(|kib| kib * 1024)
        })
        .collect();
    sizes.sort_unstable();
    sizes
}

/// The node's memory in bytes (MemTotal), for Burstable OOM scores.
pub fn node_memory_bytes() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(1 << 34)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml_resources: &str) -> Pod {
        let text = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p, uid: 11111111-2222-4333-8444-555555555555}}\nspec:\n  containers:\n  - name: c\n    image: i\n    resources: {yaml_resources}\n"
        );
        crate::kubelet::manifest::parse(&text, "p").unwrap()
    }

    #[test]
    fn quantities() {
        let q = |s: &str| Quantity(s.to_string());
        assert_eq!(parse_quantity(&q("250m"), 1000.0), Ok(250));
        assert_eq!(parse_quantity(&q("1.5"), 1000.0), Ok(1500));
        assert_eq!(parse_quantity(&q("64Mi"), 1.0), Ok(64 * 1024 * 1024));
        assert_eq!(parse_quantity(&q("1G"), 1.0), Ok(1_000_000_000));
        assert!(parse_quantity(&q("12Zz"), 1.0).is_err());
    }

    #[test]
    fn qos_classes_and_cgroup_parents() {
        let best = pod("{}");
        assert_eq!(qos(&best), Ok(Qos::BestEffort));
        assert_eq!(
            cgroup_parent(&best, false).unwrap(),
            "/kubepods/besteffort/pod11111111-2222-4333-8444-555555555555"
        );
        let guaranteed = pod("{limits: {cpu: 500m, memory: 64Mi}}");
        assert_eq!(qos(&guaranteed), Ok(Qos::Guaranteed));
        assert_eq!(cgroup_parent(&guaranteed, true).unwrap(), "kubepods-pod11111111_2222_4333_8444_555555555555.slice");
        let burstable = pod("{requests: {cpu: 100m}}");
        assert_eq!(qos(&burstable), Ok(Qos::Burstable));
    }

    #[test]
    fn cpu_and_memory_fields() {
        let p = pod("{requests: {cpu: 250m, memory: 32Mi}, limits: {cpu: 500m, memory: 64Mi}}");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&p, c, 1 << 30, &[]).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.cpu_period), (256, 50_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 64 * 1024 * 1024);
        assert_eq!(r.oom_score_adj, 1000 - 1000 * (32 << 20) / (1 << 30));
        let best = pod("{}");
        let r = linux_resources(&best, &best.spec.as_ref().unwrap().containers[0], 1 << 30, &[]).unwrap();
        assert_eq!((r.cpu_shares, r.cpu_quota, r.oom_score_adj), (2, 0, 1000));
    }

    #[test]
    fn every_node_page_size_gets_a_limit_zero_unless_asked() {
        let p = pod("{limits: {hugepages-2Mi: 64Mi, memory: 128Mi}}");
        let c = &p.spec.as_ref().unwrap().containers[0];
        let r = linux_resources(&p, c, 1 << 30, &[2 << 20, 1 << 30]).unwrap();
        let limits: Vec<(&str, u64)> = r.hugepage_limits.iter().map(|l| (l.page_size.as_str(), l.limit)).collect();
        assert_eq!(limits, vec![("2MB", 64 << 20), ("1GB", 0)]);
        let unknown = pod("{limits: {hugepages-16Gi: 16Gi}}");
        let c = &unknown.spec.as_ref().unwrap().containers[0];
        assert!(linux_resources(&unknown, c, 1 << 30, &[2 << 20]).unwrap_err().contains("no 16GB hugepages"));
    }
}
