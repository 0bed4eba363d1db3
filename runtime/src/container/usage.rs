//! Resource usage of a running container, read from its cgroups (found through the init's
//! /proc/<pid>/cgroup, so either cgroup driver and v1, hybrid or v2 hosts work) and from its
//! writable layer, as the CRI's ContainerStats: CPU time and rate, memory usage, working set,
//! RSS, page faults, available memory, and the layer's bytes and inodes. Reads only.

use std::path::{Path, PathBuf};

use lockstep_cri::model;

use crate::host::cgroups::{controller_dir, hierarchy_dir};

/// One reading of a container's cgroups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupSample {
    /// Unix nanoseconds of the reading.
    pub timestamp: i64,
    /// CPU time used since the container started, in nanoseconds.
    pub cpu_ns: Option<u64>,
    pub memory: Option<MemorySample>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemorySample {
    pub usage: u64,
    /// None: no limit.
    pub limit: Option<u64>,
    pub inactive_file: u64,
    pub rss: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
}

impl MemorySample {
    /// What the kubelet evicts by: usage less the inactive file cache.
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Reads the cgroups of the process `pid`; None when it is gone.
pub fn sample(pid: i32, timestamp: i64) -> Option<CgroupSample> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
    let cpu_ns = controller_dir(&cgroups, &mountinfo, "cpuacct").and_then(|(dir, v2)| cpu_ns(&dir, v2));
    let memory = controller_dir(&cgroups, &mountinfo, "memory").and_then(|(dir, v2)| memory(&dir, v2));
    Some(CgroupSample { timestamp, cpu_ns, memory })
}

/// Reads the cgroup at `path` (relative to each hierarchy's root: a pod's cgroup); None when
/// neither its CPU nor its memory can be read.
pub fn sample_cgroup(path: &Path, timestamp: i64) -> Option<CgroupSample> {
    let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
    let dir = |controller| hierarchy_dir(&mountinfo, controller, path);
    let cpu_ns = dir("cpuacct").and_then(|(dir, v2)| cpu_ns(&dir, v2));
    let memory = dir("memory").and_then(|(dir, v2)| memory(&dir, v2));
    (cpu_ns.is_some() || memory.is_some()).then_some(CgroupSample { timestamp, cpu_ns, memory })
}

/// How many processes the pids cgroup of process `pid` holds (a container's, through its init).
pub fn sample_tasks(pid: i32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
    let (dir, _) = controller_dir(&cgroups, &mountinfo, "pids")?;
    read_u64(&dir.join("pids.current"))
}

/// How many processes the cgroup at `path` holds (the pids controller's count).
pub fn process_count(path: &Path) -> Option<u64> {
    let mountinfo = crate::host::cgroups::cgroup_mountinfo()?;
    let (dir, _) = hierarchy_dir(&mountinfo, "pids", path)?;
    read_u64(&dir.join("pids.current"))
}

fn cpu_ns(dir: &Path, v2: bool) -> Option<u64> {
    if v2 {
        let text = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
        stat_value(&text, "usage_usec").map(|us| us * 1000)
    } else {
        read_u64(&dir.join("cpuacct.usage"))
    }
}

fn memory(dir: &Path, v2: bool) -> Option<MemorySample> {
    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
    // v1 limits without a limit are a huge number (PAGE_COUNTER_MAX pages); v2 says "max".
    let unlimited = |n: u64| n >= (1 << 62);
    if v2 {
        let limit = std::fs::read_to_string(dir.join("memory.max")).ok().and_then(|t| t.trim().parse().ok());
        Some(MemorySample {
            usage: read_u64(&dir.join("memory.current"))?,
            limit: limit.filter(|n| !unlimited(*n)),
            inactive_file: stat_value(&stat, "inactive_file").unwrap_or(0),
            rss: stat_value(&stat, "anon").unwrap_or(0),
            page_faults: stat_value(&stat, "pgfault").unwrap_or(0),
            major_page_faults: stat_value(&stat, "pgmajfault").unwrap_or(0),
        })
    } else {
        Some(MemorySample {
            usage: read_u64(&dir.join("memory.usage_in_bytes"))?,
            limit: read_u64(&dir.join("memory.limit_in_bytes")).filter(|n| !unlimited(*n)),
            inactive_file: stat_value(&stat, "total_inactive_file").unwrap_or(0),
            rss: stat_value(&stat, "total_rss").unwrap_or(0),
            page_faults: stat_value(&stat, "total_pgfault").unwrap_or(0),
            major_page_faults: stat_value(&stat, "total_pgmajfault").unwrap_or(0),
        })
    }
}

/// CPU cores used between two readings, in nano cores.
pub fn nano_cores(previous: &CgroupSample, now: &CgroupSample) -> Option<u64> {
    let (before, after) = (previous.cpu_ns?, now.cpu_ns?);
    let elapsed = now.timestamp.checked_sub(previous.timestamp).filter(|d| *d > 0)? as u128;
    Some((u128::from(after.saturating_sub(before)) * 1_000_000_000 / elapsed) as u64)
}

fn value(v: u64) -> Option<model::UInt64Value> {
    Some(model::UInt64Value { value: v })
}

/// The CRI CPU usage of a reading, with the rate from the previous one.
pub fn cpu_usage(now: &CgroupSample, previous: Option<&CgroupSample>) -> Option<model::CpuUsage> {
    now.cpu_ns.map(|used| model::CpuUsage {
        timestamp: now.timestamp,
        usage_core_nano_seconds: value(used),
        usage_nano_cores: previous.and_then(|p| nano_cores(p, now)).and_then(value),
        psi: None,
    })
}

/// The CRI memory usage of a reading.
pub fn memory_usage(now: &CgroupSample) -> Option<model::MemoryUsage> {
    now.memory.as_ref().map(|m| model::MemoryUsage {
        timestamp: now.timestamp,
        working_set_bytes: value(m.working_set()),
        available_bytes: m.limit.and_then(|l| value(l.saturating_sub(m.working_set()))),
        usage_bytes: value(m.usage),
        rss_bytes: value(m.rss),
        page_faults: value(m.page_faults),
        major_page_faults: value(m.major_page_faults),
        psi: None,
    })
}

/// The CRI stats of a reading, with the rate from the previous one and the writable layer's use.
pub fn to_cri(
    attributes: model::ContainerAttributes,
    now: &CgroupSample,
    previous: Option<&CgroupSample>,
    layer: &Path,
) -> model::ContainerStats {
    let cpu = cpu_usage(now, previous);
    let memory = memory_usage(now);
    let usage = crate::image::unpack::measure(layer);
    let writable_layer = Some(model::FilesystemUsage {
        timestamp: now.timestamp,
        fs_id: Some(model::FilesystemIdentifier { mountpoint: layer.display().to_string() }),
        used_bytes: value(usage.bytes),
        inodes_used: value(usage.inodes),
    });
    model::ContainerStats { attributes: Some(attributes), cpu, memory, writable_layer, ..Default::default() }
}

/// The writable layer's upper directory.
pub fn upper_dir(layer_dir: &Path) -> PathBuf {
    layer_dir.join("upper")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_cpu_and_memory_readings() {
        let now = sample(std::process::id() as i32, 1).unwrap();
        assert!(now.cpu_ns.is_some_and(|n| n > 0), "{now:?}");
        let memory = now.memory.unwrap();
        assert!(memory.usage > 0 && memory.working_set() <= memory.usage);
        assert_eq!(sample(i32::MAX, 1), None);
    }

    #[test]
    fn rates_come_from_two_readings() {
        let at = |t: i64, cpu: u64| CgroupSample { timestamp: t, cpu_ns: Some(cpu), memory: None };
        // Half a core: 0.5 s of CPU in 1 s.
        assert_eq!(nano_cores(&at(0, 0), &at(1_000_000_000, 500_000_000)), Some(500_000_000));
        assert_eq!(nano_cores(&at(5, 0), &at(5, 10)), None, "no time passed");
    }

    #[test]
    fn memory_stat_keys_are_matched_whole() {
        let text = "total_rss_huge 5\ntotal_rss 7\ninactive_file 3\n";
        assert_eq!(stat_value(text, "total_rss"), Some(7));
        assert_eq!(stat_value(text, "inactive_file"), Some(3));
        assert_eq!(stat_value(text, "anon"), None);
    }
}
